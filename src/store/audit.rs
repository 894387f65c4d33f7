//! Audit events, written in the same transaction as the mutation they record.

use tokio_postgres::types::ToSql;
use uuid::Uuid;

use super::{Scope, Tx};
use crate::error::Error;

pub use crate::domain::audit::Action;

/// One audit event to write. Its id is chosen when it is queued (UUIDv7,
/// so queued events keep their order), so a stored response can name it.
pub struct Event {
    pub id: Uuid,
    pub entity: &'static str,
    pub entity_id: Uuid,
    pub action: Action,
    pub before: Option<serde_json::Value>,
    pub after: Option<serde_json::Value>,
    /// The call the event is for, when it is not the transaction's own
    /// (creations of several calls combined into one transaction).
    pub origin: Option<Origin>,
}

/// The request and trace ids of the call an event is for.
#[derive(Clone, Debug, Default)]
pub struct Origin {
    pub request_id: Option<String>,
    pub trace_id: Option<String>,
}

impl Origin {
    pub fn of(scope: &Scope) -> Origin {
        Origin { request_id: scope.request_id.clone(), trace_id: scope.trace_id.clone() }
    }
}

impl Event {
    fn request_id<'a>(&'a self, scope: &'a Scope) -> Option<&'a str> {
        self.origin.as_ref().map_or(&scope.request_id, |o| &o.request_id).as_deref()
    }

    fn trace_id<'a>(&'a self, scope: &'a Scope) -> Option<&'a str> {
        self.origin.as_ref().map_or(&scope.trace_id, |o| &o.trace_id).as_deref()
    }
}

/// An owned statement parameter.
pub type Param<'a> = Box<dyn ToSql + Sync + Send + 'a>;

/// The statement writing `events` (each for its origin's call, else the
/// scope's) and its parameters, to send in a
/// pipeline (`Tx::commit_with`): one row, or all of them with one
/// INSERT ... SELECT FROM unnest (a batch of 1,000 creations writes its
/// 1,000 events with one statement). `None` when there is nothing to write.
pub fn statement<'a>(scope: &'a Scope, events: &'a [Event]) -> Option<(&'static str, Vec<Param<'a>>)> {
    match events {
        [] => None,
        [e] => Some((
            INSERT_EVENT,
            vec![
                Box::new(scope.tenant),
                Box::new(e.id),
                Box::new(&scope.actor),
                Box::new(e.entity),
                Box::new(e.entity_id),
                Box::new(e.action.as_str()),
                Box::new(e.before.as_ref()),
                Box::new(e.after.as_ref()),
                Box::new(e.request_id(scope)),
                Box::new(e.trace_id(scope)),
            ],
        )),
        _ => Some((
            INSERT_EVENTS,
            vec![
                Box::new(scope.tenant),
                Box::new(&scope.actor),
                Box::new(events.iter().map(|e| e.id).collect::<Vec<Uuid>>()),
                Box::new(events.iter().map(|e| e.entity).collect::<Vec<&str>>()),
                Box::new(events.iter().map(|e| e.entity_id).collect::<Vec<Uuid>>()),
                Box::new(events.iter().map(|e| e.action.as_str()).collect::<Vec<&str>>()),
                Box::new(events.iter().map(|e| e.before.as_ref()).collect::<Vec<_>>()),
                Box::new(events.iter().map(|e| e.after.as_ref()).collect::<Vec<_>>()),
                Box::new(events.iter().map(|e| e.request_id(scope)).collect::<Vec<_>>()),
                Box::new(events.iter().map(|e| e.trace_id(scope)).collect::<Vec<_>>()),
            ],
        )),
    }
}

const INSERT_EVENTS: &str = include_str!("sql/audit_insert_many.sql").trim_ascii_end();
pub(super) const INSERT_EVENT: &str = include_str!("sql/audit_insert.sql").trim_ascii_end();
/// The `after` snapshots of events of the tenant, by id; only the recent
/// partitions are read (a stored response that names events lives 24
/// hours, and was written in their transaction).
const AFTERS: &str = include_str!("sql/audit_afters.sql").trim_ascii_end();

/// The `after` snapshots of `ids` (events of the last day), by id.
pub async fn afters(tx: &Tx, scope: &Scope, ids: &[Uuid]) -> Result<Vec<(Uuid, serde_json::Value)>, Error> {
    let rows = tx.query(AFTERS, &[&scope.tenant, &ids]).await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Writes one event now (outside a `Unit`: the close of an ingest run).
pub async fn record(tx: &Tx, scope: &Scope, event: Event) -> Result<(), Error> {
    let events = [event];
    if let Some((sql, params)) = statement(scope, &events) {
        tx.query(sql, &refs(&params)).await?;
    }
    Ok(())
}

/// Owned parameters as the statement parameters `Tx` takes.
pub fn refs<'p>(params: &'p [Param<'_>]) -> Vec<&'p (dyn ToSql + Sync)> {
    params.iter().map(|b| b.as_ref() as &(dyn ToSql + Sync)).collect()
}
