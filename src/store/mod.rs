//! PostgreSQL access: pools, tenant-scoped transactions, the one traced
//! statement path, SQLSTATE mapping, migrations and the generic record
//! operations every resource uses. Knows nothing of gRPC or prost.

pub mod audit;
pub mod filter_sql;
pub mod idempotency;
pub mod migrate;
pub mod page;
pub mod records;
mod value_sql;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use deadpool_postgres::{
    Hook, HookError, Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod, Runtime,
};
use tokio_postgres::{NoTls, Row, types::ToSql};
use tracing::{Instrument, field::Empty};
use uuid::Uuid;

use crate::{config::DbArgs, error::Error};

pub type Params<'a> = [&'a (dyn ToSql + Sync)];

/// The role every pooled connection switches to: owns no table, has no
/// BYPASSRLS, so row-level security always applies.
pub const APP_ROLE: &str = "bi_data_app";

/// Who a transaction runs for and how long its statements may take.
#[derive(Clone, Debug)]
pub struct Scope {
    pub tenant: Uuid,
    pub actor: String,
    pub request_id: Option<String>,
    pub trace_id: Option<String>,
    /// Statement timeout for this transaction (the caller's deadline, capped).
    pub timeout: Duration,
}

#[derive(Debug)]
struct Settings {
    slow_query: Duration,
    max_statement_timeout: Duration,
    db_name: String,
    server_address: String,
}

/// Connection pools and per-statement settings. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    primary: Pool,
    replica: Option<Pool>,
    settings: Arc<Settings>,
}

fn build_pool(url: &str, args: &DbArgs) -> Result<(Pool, String, String), Error> {
    let mut cfg: tokio_postgres::Config =
        url.parse().map_err(|e| Error::Internal(format!("invalid database URL: {e}")))?;
    cfg.connect_timeout(Duration::from_millis(args.connect_timeout_ms));
    cfg.keepalives(true);
    cfg.keepalives_idle(Duration::from_secs(30));
    cfg.application_name("bi-data");
    let db_name = cfg.get_dbname().unwrap_or("postgres").to_owned();
    let server_address = match cfg.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        _ => "localhost".to_owned(),
    };
    let mgr = Manager::from_config(cfg, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
    let wait = Duration::from_millis(args.pool_wait_ms);
    let pool = Pool::builder(mgr)
        .max_size(args.pool_size())
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(wait))
        .create_timeout(Some(Duration::from_millis(args.connect_timeout_ms)))
        .recycle_timeout(Some(Duration::from_secs(2)))
        .post_create(Hook::async_fn(|client, _| {
            Box::pin(async move {
                client
                    .batch_execute(&format!("SET ROLE {APP_ROLE}"))
                    .await
                    .map_err(|e| HookError::message(format!("cannot SET ROLE {APP_ROLE}: {e}")))
            })
        }))
        .build()
        .map_err(|e| Error::Internal(format!("pool: {e}")))?;
    Ok((pool, db_name, server_address))
}

impl Store {
    /// Builds the pools; connections are opened lazily.
    pub fn new(args: &DbArgs, slow_query: Duration) -> Result<Store, Error> {
        let (primary, db_name, server_address) = build_pool(&args.database_url.0, args)?;
        let replica = match &args.replica_url {
            Some(url) => Some(build_pool(&url.0, args)?.0),
            None => None,
        };
        Ok(Store {
            primary,
            replica,
            settings: Arc::new(Settings {
                slow_query,
                max_statement_timeout: Duration::from_millis(args.statement_timeout_ms),
                db_name,
                server_address,
            }),
        })
    }

    /// The statement timeout for a call with this remaining deadline.
    pub fn timeout_for(&self, deadline: Option<Duration>) -> Duration {
        let max = self.settings.max_statement_timeout;
        deadline.map_or(max, |d| d.min(max)).max(Duration::from_millis(1))
    }

    pub fn primary(&self) -> &Pool {
        &self.primary
    }

    /// Opens a transaction on the primary for a tenant.
    pub async fn begin(&self, scope: &Scope) -> Result<Tx, Error> {
        self.begin_on(&self.primary, scope, false).await
    }

    /// Opens a read-only transaction, on the replica when one is configured.
    pub async fn begin_read(&self, scope: &Scope) -> Result<Tx, Error> {
        self.begin_on(self.replica.as_ref().unwrap_or(&self.primary), scope, true).await
    }

    async fn begin_on(&self, pool: &Pool, scope: &Scope, read_only: bool) -> Result<Tx, Error> {
        let client = {
            let span = tracing::info_span!("db.pool.wait", db.system.name = "postgresql");
            pool.get().instrument(span).await.map_err(pool_error)?
        };
        let mut tx = Tx { client: Some(client), settings: self.settings.clone(), open: false };
        tx.client()
            .batch_execute(if read_only { "BEGIN READ ONLY" } else { "BEGIN" })
            .await
            .map_err(db_error)?;
        tx.open = true;
        let timeout = format!("{}ms", scope.timeout.as_millis());
        let tenant = scope.tenant.to_string();
        tx.query(
            "SELECT set_config('app.tenant_id', $1, true), set_config('statement_timeout', $2, true)",
            &[&tenant, &timeout],
        )
        .await?;
        Ok(tx)
    }

    /// `SELECT 1` through the pool, bounded: the health probe.
    pub async fn ping(&self, within: Duration) -> bool {
        let probe = async {
            let client = self.primary.get().await.ok()?;
            client.simple_query("SELECT 1").await.ok()
        };
        matches!(tokio::time::timeout(within, probe).await, Ok(Some(_)))
    }

    pub fn close(&self) {
        self.primary.close();
        if let Some(r) = &self.replica {
            r.close();
        }
    }
}

/// A tenant-scoped transaction. Dropped without `commit`, it rolls back
/// before its connection returns to the pool.
pub struct Tx {
    client: Option<Object>,
    settings: Arc<Settings>,
    open: bool,
}

impl Tx {
    fn client(&self) -> &Object {
        self.client.as_ref().expect("client is present until drop")
    }

    /// Runs one statement: prepared and cached per connection, inside a
    /// CLIENT span with OpenTelemetry database attributes, a WARN when
    /// slower than the threshold. Every statement of the service goes here.
    pub async fn query(&self, sql: &str, params: &Params<'_>) -> Result<Vec<Row>, Error> {
        let (op, table) = shape(sql);
        let span = tracing::info_span!(
            "db.query",
            otel.kind = "client",
            otel.name = %format_args!("{op} {table}"),
            db.system.name = "postgresql",
            db.namespace = %self.settings.db_name,
            db.operation.name = op,
            db.collection.name = table,
            db.query.text = sql,
            server.address = %self.settings.server_address,
            db.response.status_code = Empty,
            db.duration_ms = Empty,
        );
        let start = Instant::now();
        let client = self.client();
        let result = async {
            let stmt = client.prepare_cached(sql).await?;
            client.query(&stmt, params).await
        }
        .instrument(span.clone())
        .await;
        let elapsed = start.elapsed();
        span.record("db.duration_ms", elapsed.as_secs_f64() * 1000.0);
        if elapsed >= self.settings.slow_query {
            let _g = span.enter();
            tracing::warn!(
                duration_ms = elapsed.as_millis() as u64,
                threshold_ms = self.settings.slow_query.as_millis() as u64,
                db.operation.name = op,
                db.collection.name = table,
                db.query.text = sql,
                "slow query"
            );
        }
        result.map_err(|e| {
            if let Some(code) = e.code() {
                span.record("db.response.status_code", code.code());
            }
            db_error(e)
        })
    }

    pub async fn query_opt(&self, sql: &str, params: &Params<'_>) -> Result<Option<Row>, Error> {
        Ok(self.query(sql, params).await?.into_iter().next())
    }

    pub async fn query_one(&self, sql: &str, params: &Params<'_>) -> Result<Row, Error> {
        self.query_opt(sql, params).await?.ok_or_else(|| Error::Internal(format!("no row from: {sql}")))
    }

    pub async fn commit(mut self) -> Result<(), Error> {
        self.client().batch_execute("COMMIT").await.map_err(db_error)?;
        self.open = false;
        Ok(())
    }
}

impl Drop for Tx {
    fn drop(&mut self) {
        if self.open
            && let Some(client) = self.client.take()
        {
            if client.is_closed() {
                return;
            }
            // Cancelled or failed before COMMIT: roll back, then let the
            // connection return to the pool. Without a runtime (process exit)
            // the connection is simply dropped.
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(async move {
                    if client.batch_execute("ROLLBACK").await.is_err() {
                        let _ = Object::take(client);
                    }
                });
            } else {
                let _ = Object::take(client);
            }
        }
    }
}

/// `SELECT`, `jobs` for a statement, for span names and slow-query logs.
pub fn shape(sql: &str) -> (&'static str, &str) {
    let mut words = sql.split_whitespace();
    let first = words.next().unwrap_or("");
    let op = ["SELECT", "INSERT", "UPDATE", "DELETE", "WITH", "COPY", "MERGE"]
        .into_iter()
        .find(|k| first.eq_ignore_ascii_case(k))
        .unwrap_or("OTHER");
    let mut table = "";
    let mut prev = first;
    for w in sql.split_whitespace().skip(1) {
        if prev.eq_ignore_ascii_case("FROM")
            || prev.eq_ignore_ascii_case("INTO")
            || prev.eq_ignore_ascii_case("UPDATE")
        {
            table = w.trim_matches(|c: char| !(c.is_ascii_alphanumeric() || c == '_'));
            if !table.is_empty() {
                break;
            }
        }
        prev = w;
    }
    (op, table)
}

/// Maps a driver error by SQLSTATE; details go to the log, not the caller.
pub fn db_error(e: tokio_postgres::Error) -> Error {
    use tokio_postgres::error::SqlState;
    let Some(code) = e.code() else {
        tracing::warn!(error = %e, "database connection error");
        return Error::Unavailable("database unavailable".into());
    };
    let constraint = e.as_db_error().and_then(|d| d.constraint()).unwrap_or("");
    match *code {
        SqlState::UNIQUE_VIOLATION => Error::AlreadyExists {
            reason: unique_reason(constraint),
            message: unique_message(constraint).into(),
        },
        SqlState::FOREIGN_KEY_VIOLATION => Error::FailedPrecondition {
            reason: "REFERENCE_NOT_FOUND",
            message: "a referenced resource does not exist".into(),
        },
        SqlState::T_R_SERIALIZATION_FAILURE | SqlState::T_R_DEADLOCK_DETECTED => Error::Aborted {
            reason: "CONCURRENCY_CONFLICT",
            message: "concurrent update conflict; retry".into(),
        },
        SqlState::QUERY_CANCELED => Error::DeadlineExceeded,
        SqlState::CHECK_VIOLATION
        | SqlState::NOT_NULL_VIOLATION
        | SqlState::STRING_DATA_RIGHT_TRUNCATION
        | SqlState::NUMERIC_VALUE_OUT_OF_RANGE => {
            tracing::info!(error = %e, "constraint rejected a value");
            Error::invalid("request", "a value is out of the allowed range")
        }
        _ if code.code().starts_with("08")
            || *code == SqlState::ADMIN_SHUTDOWN
            || *code == SqlState::CRASH_SHUTDOWN
            || *code == SqlState::CANNOT_CONNECT_NOW
            || *code == SqlState::TOO_MANY_CONNECTIONS =>
        {
            tracing::warn!(error = %e, "database unavailable");
            Error::Unavailable("database unavailable".into())
        }
        _ => {
            tracing::error!(error = %e, sqlstate = code.code(), "database error");
            Error::Internal(format!("database error {}", code.code()))
        }
    }
}

fn unique_reason(constraint: &str) -> &'static str {
    match constraint {
        "jobs_live_job_url_key" => "DUPLICATE_JOB_URL",
        _ => "ALREADY_EXISTS",
    }
}

fn unique_message(constraint: &str) -> &'static str {
    match constraint {
        "jobs_live_job_url_key" => "a live job with this job_url already exists",
        _ => "the resource already exists",
    }
}

pub fn pool_error(e: PoolError) -> Error {
    match e {
        PoolError::Timeout(t) => {
            tracing::warn!(kind = ?t, "database pool timeout");
            Error::Unavailable("database unavailable (no connection within the pool wait)".into())
        }
        PoolError::Backend(e) => db_error(e),
        PoolError::PostCreateHook(e) => {
            tracing::error!(error = %e, "new connection setup failed");
            Error::Unavailable("database unavailable".into())
        }
        PoolError::Closed | PoolError::NoRuntimeSpecified => {
            Error::Unavailable("database unavailable".into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::shape;

    #[test]
    fn statement_shapes() {
        assert_eq!(shape("SELECT a FROM jobs WHERE x"), ("SELECT", "jobs"));
        assert_eq!(shape("INSERT INTO audit_events (a) VALUES ($1)"), ("INSERT", "audit_events"));
        assert_eq!(shape("UPDATE jobs SET a = 1"), ("UPDATE", "jobs"));
        assert_eq!(shape("SELECT set_config('a', $1, true)"), ("SELECT", ""));
    }
}
