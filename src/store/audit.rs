//! Audit events, written in the same transaction as the mutation they record.

use uuid::Uuid;

use super::{Scope, Tx};
use crate::error::Error;

const INSERT: &str = include_str!("sql/audit_insert.sql").trim_ascii_end();

/// What a mutation did (stored as its name).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Create,
    Update,
    Delete,
    Undelete,
    Merge,
    Import,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Create => "CREATE",
            Action::Update => "UPDATE",
            Action::Delete => "DELETE",
            Action::Undelete => "UNDELETE",
            Action::Merge => "MERGE",
            Action::Import => "IMPORT",
        }
    }
}

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
        INSERT,
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
