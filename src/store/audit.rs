//! Audit events, written in the same transaction as the mutation they record.

use uuid::Uuid;

use super::{Scope, Tx};
use crate::error::Error;

pub use crate::domain::audit::Action;

/// One audit event to write.
pub struct Event {
    pub entity: &'static str,
    pub entity_id: Uuid,
    pub action: Action,
    pub before: Option<serde_json::Value>,
    pub after: Option<serde_json::Value>,
}

/// Writes `events` in one round trip (pipelined, in order).
pub async fn record_many(tx: &Tx, scope: &Scope, events: &[Event]) -> Result<(), Error> {
    match events {
        [] => Ok(()),
        [e] => record(tx, scope, e.entity, e.entity_id, e.action, e.before.clone(), e.after.clone()).await,
        _ => {
            let ids: Vec<Uuid> = events.iter().map(|_| Uuid::now_v7()).collect();
            let actions: Vec<&str> = events.iter().map(|e| e.action.as_str()).collect();
            let params: Vec<[&(dyn tokio_postgres::types::ToSql + Sync); 10]> = events
                .iter()
                .zip(&ids)
                .zip(&actions)
                .map(|((e, id), action)| {
                    [
                        &scope.tenant as &(dyn tokio_postgres::types::ToSql + Sync),
                        id,
                        &scope.actor,
                        &e.entity,
                        &e.entity_id,
                        action,
                        &e.before,
                        &e.after,
                        &scope.request_id,
                        &scope.trace_id,
                    ]
                })
                .collect();
            let statements: Vec<(&str, &super::Params<'_>)> =
                params.iter().map(|p| (INSERT_EVENT, &p[..])).collect();
            tx.query_pipelined(&statements).await?;
            Ok(())
        }
    }
}

const INSERT_EVENT: &str = include_str!("sql/audit_insert.sql").trim_ascii_end();

pub async fn record(
    tx: &Tx,
    scope: &Scope,
    entity: &str,
    entity_id: Uuid,
    action: Action,
    before: Option<serde_json::Value>,
    after: Option<serde_json::Value>,
) -> Result<(), Error> {
    tx.query(
        INSERT_EVENT,
        &[
            &scope.tenant,
            &Uuid::now_v7(),
            &scope.actor,
            &entity,
            &entity_id,
            &action.as_str(),
            &before,
            &after,
            &scope.request_id,
            &scope.trace_id,
        ],
    )
    .await?;
    Ok(())
}
