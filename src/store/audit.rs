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

/// Writes `events` with one statement (set-based: a batch of 1,000
/// creations writes its 1,000 events as one INSERT ... SELECT FROM unnest),
/// in order (their ids are UUIDv7, increasing).
pub async fn record_many(tx: &Tx, scope: &Scope, events: &[Event]) -> Result<(), Error> {
    match events {
        [] => Ok(()),
        [e] => record(tx, scope, e.entity, e.entity_id, e.action, e.before.clone(), e.after.clone()).await,
        _ => {
            let ids: Vec<Uuid> = events.iter().map(|_| Uuid::now_v7()).collect();
            let entities: Vec<&str> = events.iter().map(|e| e.entity).collect();
            let entity_ids: Vec<Uuid> = events.iter().map(|e| e.entity_id).collect();
            let actions: Vec<&str> = events.iter().map(|e| e.action.as_str()).collect();
            let befores: Vec<Option<&serde_json::Value>> = events.iter().map(|e| e.before.as_ref()).collect();
            let afters: Vec<Option<&serde_json::Value>> = events.iter().map(|e| e.after.as_ref()).collect();
            tx.query(
                INSERT_EVENTS,
                &[
                    &scope.tenant,
                    &scope.actor,
                    &ids,
                    &entities,
                    &entity_ids,
                    &actions,
                    &befores,
                    &afters,
                    &scope.request_id,
                    &scope.trace_id,
                ],
            )
            .await?;
            Ok(())
        }
    }
}

const INSERT_EVENTS: &str = include_str!("sql/audit_insert_many.sql").trim_ascii_end();
pub(super) const INSERT_EVENT: &str = include_str!("sql/audit_insert.sql").trim_ascii_end();

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
