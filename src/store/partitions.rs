//! Maintenance of the monthly partitions of the append-only logs
//! (`audit_events`, `campaign_events`; migration V9, docs/partitions.md):
//! partitions created ahead and, when a retention is set, old ones detached
//! and dropped with an audit record of each drop, all in one transaction
//! under an advisory lock, so replicas running it together do it once.
//!
//! It runs on a connection of its own as the migration role (the owner of
//! the tables, `--migration-database-url`): the service's role may not
//! create or drop tables. The work itself is done by the schema's functions
//! `bi_ensure_partitions` and `bi_drop_partitions_before`, the same ones
//! the migration uses.

use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::db_error;
use crate::{domain::audit::Action, error::Error};

/// The partitioned tables, each with its retention's name in [`Policy`].
pub const TABLES: [&str; 2] = ["audit_events", "campaign_events"];

/// How often the service runs [`maintain`] after its first run at start.
pub const EVERY: Duration = Duration::from_secs(3600);

/// Audit records of retention drops belong to this tenant (the nil UUID: no
/// caller's tenant), with this actor.
pub const SYSTEM_TENANT: Uuid = Uuid::nil();
pub const RETENTION_ACTOR: &str = "system:partition-retention";

/// The advisory lock (text key, hashed like every advisory lock of the store).
const LOCK_KEY: &str = "bi-data/partitions";

/// How long a maintenance run waits for a table lock (a detach needs an
/// exclusive one; waiting longer would queue the service's statements
/// behind it). Past it the run fails and the next one retries.
const LOCK_TIMEOUT: &str = "2s";
const STATEMENT_TIMEOUT: &str = "60s";

const SETTINGS: &str = include_str!("sql/partitions_settings.sql").trim_ascii_end();
const ENSURE: &str = include_str!("sql/partitions_ensure.sql").trim_ascii_end();
const DROP_BEFORE: &str = include_str!("sql/partitions_drop_before.sql").trim_ascii_end();

/// What a run does.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    /// Partitions made for the current UTC month and this many after it.
    pub months_ahead: u32,
    /// Keep this many whole months of `audit_events` before the current
    /// one; older partitions are dropped. `None`: keep everything.
    pub audit_retention_months: Option<u32>,
    /// The same for `campaign_events`.
    pub campaign_event_retention_months: Option<u32>,
}

impl Policy {
    fn retention(&self, table: &str) -> Option<u32> {
        match table {
            "audit_events" => self.audit_retention_months,
            "campaign_events" => self.campaign_event_retention_months,
            _ => None,
        }
    }
}

/// One dropped partition.
#[derive(Clone, Debug, PartialEq)]
pub struct Dropped {
    pub table: &'static str,
    pub partition: String,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub rows: i64,
}

/// What a run did.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Partitions created (`audit_events_p2027_01`, ...).
    pub created: Vec<String>,
    pub dropped: Vec<Dropped>,
}

/// One maintenance run against the database at `url` (the owner's).
pub async fn maintain(url: &str, connect_timeout: Duration, policy: &Policy) -> Result<Report, Error> {
    let (mut client, conn_task) =
        super::connect_owner(url, connect_timeout, "bi-data partitions", "maintain partitions").await?;
    let result = run(&mut client, policy).await;
    drop(client);
    conn_task.abort();
    result
}

async fn run(client: &mut tokio_postgres::Client, policy: &Policy) -> Result<Report, Error> {
    let tx = client.transaction().await.map_err(db_error)?;
    let tenant = SYSTEM_TENANT.to_string();
    tx.query(SETTINGS, &[&LOCK_TIMEOUT, &STATEMENT_TIMEOUT, &tenant]).await.map_err(db_error)?;
    tx.query(super::ADVISORY_XACT_LOCK, &[&LOCK_KEY]).await.map_err(db_error)?;
    let ahead = i32::try_from(policy.months_ahead).unwrap_or(i32::MAX);
    let mut report = Report::default();
    for table in TABLES {
        for row in tx.query(ENSURE, &[&table, &ahead]).await.map_err(db_error)? {
            report.created.push(row.try_get(0).map_err(db_error)?);
        }
    }
    for table in TABLES {
        let Some(keep) = policy.retention(table) else { continue };
        let keep = i32::try_from(keep).unwrap_or(i32::MAX);
        for row in tx.query(DROP_BEFORE, &[&table, &keep]).await.map_err(db_error)? {
            let d = Dropped {
                table,
                partition: row.try_get(0).map_err(db_error)?,
                from: row.try_get(1).map_err(db_error)?,
                to: row.try_get(2).map_err(db_error)?,
                rows: row.try_get(3).map_err(db_error)?,
            };
            // Written now: the current month's partition holds it, so the
            // record of the drop outlives what it describes.
            let before = serde_json::json!({
                "table": d.table,
                "partition": d.partition,
                "range_from": d.from.to_rfc3339(),
                "range_to": d.to.to_rfc3339(),
                "rows": d.rows,
                "retention_months": keep,
            });
            tx.query(
                super::audit::INSERT_EVENT,
                &[
                    &SYSTEM_TENANT,
                    &Uuid::now_v7(),
                    &RETENTION_ACTOR,
                    &"partition",
                    &Uuid::now_v7(),
                    &Action::Delete.as_str(),
                    &Some(before),
                    &None::<serde_json::Value>,
                    &None::<String>,
                    &None::<String>,
                ],
            )
            .await
            .map_err(db_error)?;
            report.dropped.push(d);
        }
    }
    tx.commit().await.map_err(db_error)?;
    Ok(report)
}
