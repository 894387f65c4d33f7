//! Schema migrations (refinery, SQL files in `migrations/`), applied under a
//! PostgreSQL advisory lock so replicas starting together apply them once.

use std::time::Duration;

use tokio_postgres::NoTls;

use crate::error::Error;

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// Arbitrary constant: the advisory lock key of migrations.
const LOCK_KEY: i64 = 0x6269_6461_7461; // "bidata"

/// Session-level advisory lock (and its release) on [`LOCK_KEY`].
const LOCK: &str = include_str!("sql/migrate_lock.sql").trim_ascii_end();
const UNLOCK: &str = include_str!("sql/migrate_unlock.sql").trim_ascii_end();
/// The newest version in refinery's history table.
const APPLIED_VERSION: &str = include_str!("sql/migrate_applied_version.sql").trim_ascii_end();

/// The newest migration version built into this binary.
pub fn latest_version() -> i64 {
    embedded::migrations::runner().get_migrations().iter().map(|m| i64::from(m.version())).max().unwrap_or(0)
}

/// Applies pending migrations; returns how many were applied.
pub async fn run(url: &str, connect_timeout: Duration) -> Result<usize, Error> {
    let mut cfg: tokio_postgres::Config =
        url.parse().map_err(|e| Error::Internal(format!("invalid migration URL: {e}")))?;
    cfg.connect_timeout(connect_timeout);
    cfg.application_name("bi-data migrate");
    let (mut client, conn) = cfg.connect(NoTls).await.map_err(|e| {
        tracing::error!(error = %e, "cannot connect to apply migrations");
        Error::Unavailable(format!("cannot connect to the database to migrate: {e}"))
    })?;
    let conn_task = tokio::spawn(conn);
    client.execute(LOCK, &[&LOCK_KEY]).await.map_err(super::db_error)?;
    let result = embedded::migrations::runner().set_abort_divergent(true).run_async(&mut client).await;
    let _ = client.execute(UNLOCK, &[&LOCK_KEY]).await;
    drop(client);
    conn_task.abort();
    let report = result.map_err(|e| {
        tracing::error!(error = %e, "migration failed");
        Error::Internal(format!("migration failed: {e}"))
    })?;
    for m in report.applied_migrations() {
        tracing::info!(version = m.version(), name = m.name(), "applied migration");
    }
    Ok(report.applied_migrations().len())
}

/// The newest applied version, read through the service's pool (unnamed:
/// one request, as a transaction-mode pooler needs).
pub async fn applied_version(store: &super::Store) -> Result<i64, Error> {
    let client = store.primary().get().await.map_err(super::pool_error)?;
    let row = client.query_typed_one(APPLIED_VERSION, &[]).await.map_err(super::db_error)?;
    Ok(row.get(0))
}
