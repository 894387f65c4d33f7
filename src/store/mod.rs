//! PostgreSQL access: pools, tenant-scoped transactions, the one traced
//! statement path, SQLSTATE mapping, migrations and the generic record
//! operations every resource uses. Knows nothing of gRPC or prost.

pub mod analytics;
pub mod audit;
pub mod content;
pub mod filter_sql;
pub mod idempotency;
pub mod import;
pub mod link;
pub mod migrate;
pub mod partitions;
pub mod records;
pub mod replica;
pub mod search;
pub mod stats;
pub mod tls;
mod value_sql;

use std::{
    collections::HashMap,
    future::Future,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    task::Poll,
    time::{Duration, Instant},
};

use deadpool_postgres::{
    Hook, HookError, Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod, Runtime,
};
use tokio_postgres::{
    Row, Statement,
    binary_copy::BinaryCopyInWriter,
    types::{ToSql, Type},
};
use tracing::{Instrument, field::Empty};
use uuid::Uuid;

use self::{
    replica::{CallLsn, Lsn, Replica, ReplicaStatus, reason},
    stats::{QueryStats, StoreMetrics},
    tls::PgTls,
};
use crate::{config::DbArgs, domain::value::Value, error::Error};

pub type Params<'a> = [&'a (dyn ToSql + Sync)];

/// A statement ready to be sent without awaiting anything first: prepared
/// on the connection, or (transaction pooling) with its parameter types.
enum Ready {
    Statement(Statement),
    Types(Arc<[Type]>),
}

/// Takes a transaction-scoped advisory lock on the hash of `$1` (a text key).
pub(crate) const ADVISORY_XACT_LOCK: &str = include_str!("sql/advisory_xact_lock.sql").trim_ascii_end();

/// Prepared statements kept per connection before the cache is reset.
pub const MAX_CACHED_STATEMENTS: usize = 256;

/// The role every pooled connection switches to: owns no table, has no
/// BYPASSRLS, so row-level security always applies.
pub const APP_ROLE: &str = "bi_data_app";

/// How long the cancel request of an abandoned statement may take (it opens
/// a connection of its own).
const CANCEL_WITHIN: Duration = Duration::from_secs(2);

/// Scopes a transaction: its tenant (what RLS compares rows with) and its
/// statement timeout, both local to the transaction.
const SET_SCOPE: &str = include_str!("sql/set_scope.sql").trim_ascii_end();

/// BEGIN behind a transaction-mode pooler (`--transaction-pooling`): the
/// role and the connection check hold for this transaction only (`SET
/// LOCAL`), as the next one may run on another server connection. Names
/// the role of [`APP_ROLE`].
const BEGIN_POOLED: &str = include_str!("sql/begin_pooled.sql").trim_ascii_end();
const BEGIN_READ_ONLY_POOLED: &str = include_str!("sql/begin_read_only_pooled.sql").trim_ascii_end();

/// Whether the login may switch to [`APP_ROLE`], checked without leaving
/// session state behind (a pooler would hand it to other clients).
const CHECK_APP_ROLE: &str = include_str!("sql/check_app_role.sql").trim_ascii_end();

/// Statement shapes whose parameter types are remembered (transaction
/// pooling) before the memory is reset.
const MAX_KNOWN_SHAPES: usize = 4096;

fn begin_sql(read_only: bool, pooled: bool) -> &'static str {
    match (read_only, pooled) {
        (false, false) => "BEGIN",
        (true, false) => "BEGIN READ ONLY",
        (false, true) => BEGIN_POOLED,
        (true, true) => BEGIN_READ_ONLY_POOLED,
    }
}

fn scope_values(scope: &Scope) -> (String, String) {
    (scope.tenant.to_string(), format!("{}ms", scope.timeout.as_millis()))
}

/// `work` on the replica, given up (as UNAVAILABLE, so it runs again on the
/// primary) when the replica is found down meanwhile: a replica that hangs
/// does not answer, and would hold the read until its deadline.
async fn until_down<T>(replica: &Replica, work: impl Future<Output = Result<T, Error>>) -> Result<T, Error> {
    tokio::select! {
        biased;
        r = work => r,
        () = replica.went_down() => Err(Error::Unavailable("the read replica went down mid-read".into())),
    }
}

/// Awaits futures together, polling them in the order given. tokio-postgres
/// sends a request when its future is first polled, so requests leave in
/// this order, in one write, and their answers come back in it.
async fn in_order<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<Option<Pin<Box<F>>>> = futures.into_iter().map(|f| Some(Box::pin(f))).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (slot, out) in futures.iter_mut().zip(outputs.iter_mut()) {
            if let Some(f) = slot {
                match f.as_mut().poll(cx) {
                    Poll::Ready(v) => {
                        *out = Some(v);
                        *slot = None;
                    }
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending { Poll::Pending } else { Poll::Ready(()) }
    })
    .await;
    outputs.into_iter().map(|o| o.expect("every future completed")).collect()
}

/// Who a transaction runs for and how long its statements may take.
#[derive(Clone, Debug)]
pub struct Scope {
    pub tenant: Uuid,
    pub actor: String,
    /// The caller holds the admin role (may delete others' owned records).
    pub admin: bool,
    pub request_id: Option<String>,
    pub trace_id: Option<String>,
    /// Statement timeout for this transaction (the caller's deadline, capped).
    pub timeout: Duration,
    /// The caller's deadline, if it set one (bounds streams as a whole).
    pub deadline: Option<tokio::time::Instant>,
    /// The call this work is for (`bi.data.v1.JobService/GetJob`), named in
    /// slow-query log lines; `None` outside a call (CLI, tests).
    pub rpc: Option<Arc<str>>,
    /// The call's WAL positions: the one its reads must see
    /// (`x-bi-min-lsn`) and the one its writes committed at
    /// (`x-bi-commit-lsn`); `None` outside a call.
    pub lsn: Option<Arc<CallLsn>>,
}

#[derive(Debug)]
struct Settings {
    slow_query: Duration,
    max_statement_timeout: Duration,
    db_name: String,
    server_address: String,
    /// Every statement's duration, per shape (for GetQueryStats).
    stats: Arc<QueryStats>,
    metrics: StoreMetrics,
    /// The TLS of cancel requests (a connection of their own), per pool.
    cancel_tls: PgTls,
    replica_cancel_tls: Option<PgTls>,
    /// `--transaction-pooling`: no session state, no statement prepared
    /// beyond its transaction (statements are sent unnamed, typed with
    /// `param_types`).
    transaction_pooling: bool,
    /// Parameter types per statement text, learned once per process (a
    /// statement prepared and closed again inside a transaction): what an
    /// unnamed statement needs to be sent in one round trip.
    param_types: Mutex<HashMap<Box<str>, Arc<[Type]>>>,
}

/// Connection pools and per-statement settings. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    primary: Pool,
    replica: Option<Arc<Replica>>,
    settings: Arc<Settings>,
}

/// The pool of `url`, its database name and host (for spans) and its TLS
/// (for the cancel requests of its connections).
fn build_pool(url: &str, args: &DbArgs) -> Result<(Pool, String, String, PgTls), Error> {
    // sslmode / sslrootcert of the URL: the connector encrypts and verifies.
    let (mut cfg, tls) = tls::connector_for(url)?;
    cfg.connect_timeout(Duration::from_millis(args.connect_timeout_ms));
    cfg.keepalives(true);
    cfg.keepalives_idle(Duration::from_secs(30));
    // This server's own name in pg_stat_activity: its statements can be
    // found (and told apart from another replica's) exactly.
    cfg.application_name(args.application_name());
    let db_name = cfg.get_dbname().unwrap_or("postgres").to_owned();
    let server_address = match cfg.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        _ => "localhost".to_owned(),
    };
    let mgr =
        Manager::from_config(cfg, tls.clone(), ManagerConfig { recycling_method: RecyclingMethod::Fast });
    let wait = Duration::from_millis(args.pool_wait_ms);
    let pool = Pool::builder(mgr)
        .max_size(args.pool_size())
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(wait))
        .create_timeout(Some(Duration::from_millis(args.connect_timeout_ms)))
        .recycle_timeout(Some(Duration::from_secs(2)));
    // Behind a transaction-mode pooler a session setting would stay on
    // whichever server connection ran it: `Tx::start` sets both per
    // transaction instead.
    if args.transaction_pooling {
        let pool = pool.build().map_err(|e| Error::Internal(format!("pool: {e}")))?;
        return Ok((pool, db_name, server_address, tls));
    }
    let pool = pool
        .post_create(Hook::async_fn(|client, _| {
            Box::pin(async move {
                // The backend checks every second that the client is still
                // there, so a statement whose connection was dropped (its
                // caller went away mid-statement, see `Tx`) ends within a
                // second instead of running to its end.
                client
                    .batch_execute(&format!(
                        "SET ROLE {APP_ROLE}; SET client_connection_check_interval = 1000"
                    ))
                    .await
                    .map_err(|e| HookError::message(format!("cannot SET ROLE {APP_ROLE}: {e}")))
            })
        }))
        .build()
        .map_err(|e| Error::Internal(format!("pool: {e}")))?;
    Ok((pool, db_name, server_address, tls))
}

impl Store {
    /// Builds the pools; connections are opened lazily.
    pub fn new(args: &DbArgs, slow_query: Duration) -> Result<Store, Error> {
        let (primary, db_name, server_address, cancel_tls) = build_pool(&args.database_url.0, args)?;
        let (replica, replica_cancel_tls) = match &args.replica_url {
            Some(url) => {
                let (pool, _, _, tls) = build_pool(&url.0, args)?;
                let lag = Duration::from_millis(args.replica_max_lag_ms);
                (Some(Arc::new(Replica::new(pool, lag))), Some(tls))
            }
            None => (None, None),
        };
        Ok(Store {
            primary,
            replica,
            settings: Arc::new(Settings {
                slow_query,
                max_statement_timeout: Duration::from_millis(args.statement_timeout_ms),
                db_name,
                server_address,
                stats: Arc::new(QueryStats::default()),
                metrics: StoreMetrics::default(),
                cancel_tls,
                replica_cancel_tls,
                transaction_pooling: args.transaction_pooling,
                param_types: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// Per-shape statement timings of this server (the slowest shapes).
    pub fn query_stats(&self) -> &Arc<QueryStats> {
        &self.settings.stats
    }

    /// The instruments the statement path updates, to register for /metrics.
    pub fn metrics(&self) -> &StoreMetrics {
        &self.settings.metrics
    }

    /// Pool sizes, sampled when /metrics is scraped: `(pool, status)`.
    pub fn pool_status(&self) -> Vec<(&'static str, deadpool_postgres::Status)> {
        let mut all = vec![("primary", self.primary.status())];
        if let Some(r) = &self.replica {
            all.push(("replica", r.pool.status()));
        }
        all
    }

    /// What the replica watcher last saw; `None` without --replica-url.
    pub fn replica_status(&self) -> Option<ReplicaStatus> {
        self.replica.as_ref().map(|r| r.status())
    }

    /// The replica watcher (see [`replica`]), to spawn once per server;
    /// `None` without a replica. Ends when the store closes.
    pub fn watch_replica(&self, within: Duration) -> Option<impl Future<Output = ()> + Send + 'static> {
        let r = self.replica.clone()?;
        Some(replica::watch(r, self.primary.clone(), within))
    }

    /// Where a read of `scope` goes: the replica when it may serve it, else
    /// the primary; counted by reason.
    fn read_pool(&self, scope: &Scope) -> (&Pool, Option<&Replica>) {
        let (pool, replica, why) = match &self.replica {
            None => (&self.primary, None, reason::NO_REPLICA),
            Some(r) => {
                let min = scope.lsn.as_ref().map_or(Lsn(0), |c| c.min());
                match r.route(scope.tenant, min) {
                    Ok(()) => (&r.pool, Some(&**r), reason::REPLICA),
                    Err(why) => (&self.primary, None, why),
                }
            }
        };
        let name = if replica.is_some() { "replica" } else { "primary" };
        self.settings.metrics.reads.with_label_values(&[name, why]).inc();
        (pool, replica)
    }

    /// A read on the replica failed for want of it: mark it down, count the
    /// retry on the primary.
    fn replica_failed(&self, replica: &Replica) {
        replica.mark_down();
        self.settings.metrics.reads.with_label_values(&["primary", reason::FAILED]).inc();
    }

    /// The statement timeout for a call with this remaining deadline.
    pub fn timeout_for(&self, deadline: Option<Duration>) -> Duration {
        let max = self.settings.max_statement_timeout;
        deadline.map_or(max, |d| d.min(max)).max(Duration::from_millis(1))
    }

    pub fn primary(&self) -> &Pool {
        &self.primary
    }

    /// Runs one statement without parameters outside any tenant scope, as
    /// [`APP_ROLE`] (the idempotency purge); returns the rows it touched.
    /// Behind a transaction-mode pooler in a transaction of its own, with
    /// the role set for it alone.
    pub async fn execute_unscoped(&self, sql: &str) -> Result<u64, Error> {
        let client = self.primary.get().await.map_err(pool_error)?;
        if !self.settings.transaction_pooling {
            return client.execute(sql, &[]).await.map_err(db_error);
        }
        let run = async {
            client.batch_execute(BEGIN_POOLED).await?;
            // Prepared, run and closed inside the transaction.
            let n = client.execute(sql, &[]).await?;
            client.batch_execute("COMMIT").await?;
            Ok::<_, tokio_postgres::Error>(n)
        };
        match run.await {
            Ok(n) => Ok(n),
            Err(e) => {
                // Possibly inside a failed transaction: not reused.
                let _ = Object::take(client);
                Err(db_error(e))
            }
        }
    }

    /// Connections the primary's pool holds at most.
    pub fn pool_size(&self) -> usize {
        self.primary.status().max_size
    }

    /// Opens a transaction on the primary for a tenant.
    /// With a replica, its commit records the WAL position the tenant's
    /// (and the call's) later reads must see.
    pub async fn begin(&self, scope: &Scope) -> Result<Tx, Error> {
        Ok(self.begin_with(scope, &[]).await?.0)
    }

    /// [`Store::begin`] and `statements` in **one round trip**: BEGIN, the
    /// scope and the statements are sent together (a write's idempotency
    /// lock and lookup), their rows returned in order. A failed statement
    /// fails the call; the transaction is rolled back on drop.
    pub async fn begin_with(
        &self,
        scope: &Scope,
        statements: &[(&str, &Params<'_>)],
    ) -> Result<(Tx, Vec<Vec<Row>>), Error> {
        let mut tx = self.checkout(&self.primary).await?;
        let rows = tx.start_with(scope, false, statements).await?;
        if let Some(r) = &self.replica {
            tx.wrote = Some(WriteNote { replica: r.clone(), tenant: scope.tenant, call: scope.lsn.clone() });
        }
        Ok((tx, rows))
    }

    /// Opens a read-only transaction, on the replica when it may serve the
    /// scope's reads (see [`replica`]), else on the primary. A replica that
    /// cannot give a connection is marked down and the primary used.
    pub async fn begin_read(&self, scope: &Scope) -> Result<Tx, Error> {
        match self.read_pool(scope) {
            (pool, Some(replica)) => match until_down(replica, self.begin_on(pool, scope, true)).await {
                Err(Error::Unavailable(_)) => {
                    self.replica_failed(replica);
                    self.begin_on(&self.primary, scope, true).await
                }
                Ok(mut tx) => {
                    // Its statements stop waiting if the replica is found down.
                    tx.on_replica = self.replica.clone();
                    Ok(tx)
                }
                other => other,
            },
            (pool, None) => self.begin_on(pool, scope, true).await,
        }
    }

    async fn checkout(&self, pool: &Pool) -> Result<Tx, Error> {
        let client = {
            let span = tracing::info_span!("db.pool.wait", db.system.name = "postgresql");
            let waited = Instant::now();
            let client = pool.get().instrument(span).await;
            let name = if std::ptr::eq(pool, &self.primary) { "primary" } else { "replica" };
            self.settings
                .metrics
                .pool_wait
                .with_label_values(&[name])
                .observe(waited.elapsed().as_secs_f64());
            client.map_err(pool_error)?
        };
        // Filters make SQL shapes open-ended: bound the per-connection cache
        // (and the server-side prepared statements behind it). Here, before
        // a transaction's first statement, never between a pipeline's
        // preparation and its execution.
        if client.statement_cache.size() >= MAX_CACHED_STATEMENTS {
            client.statement_cache.clear();
        }
        let cancel_tls = match (&self.settings.replica_cancel_tls, std::ptr::eq(pool, &self.primary)) {
            (Some(t), false) => t.clone(),
            _ => self.settings.cancel_tls.clone(),
        };
        Ok(Tx {
            client: Some(client),
            cancel_tls,
            settings: self.settings.clone(),
            open: false,
            abandoned: AtomicBool::new(false),
            rpc: None,
            wrote: None,
            on_replica: None,
        })
    }

    async fn begin_on(&self, pool: &Pool, scope: &Scope, read_only: bool) -> Result<Tx, Error> {
        let mut tx = self.checkout(pool).await?;
        tx.start(scope, read_only).await?;
        Ok(tx)
    }

    /// Runs `statements` in a read-only transaction of their own (on the
    /// replica when there is one) in **one round trip**: BEGIN, the scope,
    /// the statements and COMMIT are sent together and the answers read
    /// together. Returns each statement's rows, in order; on any failure
    /// nothing is kept (a failed transaction's COMMIT rolls back).
    ///
    /// On the replica when it may serve the scope (see [`replica`]); a
    /// replica gone mid-read is marked down and the read run again on the
    /// primary (it changed nothing).
    pub async fn read(
        &self,
        scope: &Scope,
        statements: &[(&str, &Params<'_>)],
    ) -> Result<Vec<Vec<Row>>, Error> {
        match self.read_pool(scope) {
            (pool, Some(replica)) => match until_down(replica, self.read_on(pool, scope, statements)).await {
                Err(Error::Unavailable(_)) => {
                    self.replica_failed(replica);
                    self.read_on(&self.primary, scope, statements).await
                }
                other => other,
            },
            (pool, None) => self.read_on(pool, scope, statements).await,
        }
    }

    async fn read_on(
        &self,
        pool: &Pool,
        scope: &Scope,
        statements: &[(&str, &Params<'_>)],
    ) -> Result<Vec<Vec<Row>>, Error> {
        let mut tx = self.checkout(pool).await?;
        tx.rpc = scope.rpc.clone();
        // The scope statement touches no table: preparing it outside the
        // transaction cannot wait on a lock. (Behind a transaction-mode
        // pooler nothing is prepared: it is sent unnamed.)
        let set_scope = tx.prepare_scope().await?;
        let (tenant, timeout) = scope_values(scope);
        let begin = begin_sql(true, self.settings.transaction_pooling);
        tx.open = true;
        // Requests leave in the order their futures are first polled
        // (`biased`): BEGIN, the scope, then the statements' preparation,
        // the statements and COMMIT. A statement not yet prepared on this
        // connection is parsed after the scope set the statement timeout, so
        // a Parse that waits on a lock (a migration's, `VACUUM FULL`'s) is
        // bounded like the statement itself; its execution and COMMIT wait
        // for the Parse. When every statement is prepared already (the usual
        // case) nothing is awaited in between: one round trip.
        let (begun, scoped, body) = tokio::join!(
            biased;
            tx.client().batch_execute(begin),
            tx.set_scope(set_scope.as_ref(), &tenant, &timeout),
            async {
                let ready = tx.prepare_all(statements).await?;
                Ok::<_, Error>(tokio::join!(
                    biased;
                    tx.send_all(statements, &ready),
                    tx.client().batch_execute("COMMIT"),
                ))
            },
        );
        begun.map_err(db_error)?;
        scoped.map_err(db_error)?;
        // A statement that did not prepare: the transaction failed, nothing
        // was committed; dropping `tx` rolls it back.
        let (results, committed) = body?;
        // COMMIT answered: the transaction is over (committed, or rolled
        // back if a statement failed).
        tx.open = committed.is_err();
        let rows = results.into_iter().collect::<Result<Vec<_>, _>>()?;
        committed.map_err(db_error)?;
        Ok(rows)
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
            r.pool.close();
        }
    }
}

impl Settings {
    /// Counts one statement into the per-shape stats and the metrics.
    fn observe(&self, sql: &str, op: &'static str, table: &str, elapsed: Duration, slow: bool) {
        self.stats.record(sql, op, table, elapsed, slow);
        let labels = [op, table];
        self.metrics.statement_duration.with_label_values(&labels).observe(elapsed.as_secs_f64());
        if slow {
            self.metrics.slow_statements.with_label_values(&labels).inc();
        }
    }
}

/// A tenant-scoped transaction. Dropped without `commit`, it rolls back
/// before its connection returns to the pool; dropped while a statement was
/// in flight (the caller went away, its deadline passed), the statement is
/// cancelled (a cancel request) and the connection closed instead of
/// running the statement to its end with a ROLLBACK queued behind it;
/// `client_connection_check_interval` is the backstop should the cancel
/// request not get through.
pub struct Tx {
    client: Option<Object>,
    /// How a cancel request reaches this connection's server.
    cancel_tls: PgTls,
    settings: Arc<Settings>,
    open: bool,
    /// A statement future was dropped before its answer.
    abandoned: AtomicBool,
    /// The scope's call name, for slow-query log lines.
    rpc: Option<Arc<str>>,
    /// A write transaction with a replica: whom its commit position is for.
    wrote: Option<WriteNote>,
    /// A read transaction on the replica (see [`until_down`]).
    on_replica: Option<Arc<Replica>>,
}

/// Whose reads must wait for a write transaction's commit.
struct WriteNote {
    replica: Arc<Replica>,
    tenant: Uuid,
    call: Option<Arc<CallLsn>>,
}

impl Tx {
    fn client(&self) -> &Object {
        self.client.as_ref().expect("client is present until drop")
    }

    /// BEGIN and the scope (tenant, statement timeout) in one round trip:
    /// both requests are sent before either answer is awaited. From the
    /// first request on, dropping the transaction rolls it back.
    async fn start(&mut self, scope: &Scope, read_only: bool) -> Result<(), Error> {
        self.start_with(scope, read_only, &[]).await.map(drop)
    }

    /// [`Tx::start`] followed by `statements`, all sent before any answer
    /// is awaited. As in [`Store::read`], a statement not yet prepared on
    /// this connection is parsed after the scope set the statement timeout.
    async fn start_with(
        &mut self,
        scope: &Scope,
        read_only: bool,
        statements: &[(&str, &Params<'_>)],
    ) -> Result<Vec<Vec<Row>>, Error> {
        self.rpc = scope.rpc.clone();
        let set_scope = self.prepare_scope().await?;
        let (tenant, timeout) = scope_values(scope);
        self.open = true;
        let this = &*self;
        let (begun, scoped, body) = tokio::join!(
            biased;
            this.client().batch_execute(begin_sql(read_only, this.settings.transaction_pooling)),
            this.set_scope(set_scope.as_ref(), &tenant, &timeout),
            async {
                if statements.is_empty() {
                    return Ok(Vec::new());
                }
                let ready = this.prepare_all(statements).await?;
                this.send_all(statements, &ready).await.into_iter().collect::<Result<Vec<_>, Error>>()
            },
        );
        begun.map_err(db_error)?;
        scoped.map_err(db_error)?;
        body
    }

    /// The scope statement, prepared once per connection; none behind a
    /// transaction-mode pooler (`set_scope` sends it unnamed). Like BEGIN
    /// and COMMIT it is transaction control, sent directly rather than
    /// through `query`.
    async fn prepare_scope(&self) -> Result<Option<Statement>, Error> {
        if self.settings.transaction_pooling {
            return Ok(None);
        }
        self.client().prepare_cached(SET_SCOPE).await.map(Some).map_err(db_error)
    }

    /// Sends the scope statement (prepared, or unnamed with its two text
    /// parameters); the request leaves on the first poll.
    async fn set_scope(
        &self,
        prepared: Option<&Statement>,
        tenant: &String,
        timeout: &String,
    ) -> Result<Vec<Row>, tokio_postgres::Error> {
        match prepared {
            Some(stmt) => self.client().query(stmt, &[tenant, timeout]).await,
            None => {
                self.client().query_typed(SET_SCOPE, &[(tenant, Type::TEXT), (timeout, Type::TEXT)]).await
            }
        }
    }

    /// The parameter types of `sql` (transaction pooling), learned the
    /// first time inside this transaction: prepared under a name of its own
    /// and closed again at once, so the Close reaches the server connection
    /// before COMMIT and nothing outlives the transaction there. Answers
    /// without awaiting anything when known (pipelining relies on it).
    async fn param_types(&self, sql: &str) -> Result<Arc<[Type]>, tokio_postgres::Error> {
        if let Some(types) = self.settings.param_types.lock().expect("not poisoned").get(sql) {
            return Ok(types.clone());
        }
        let stmt = self.client().prepare(sql).await?;
        let types: Arc<[Type]> = stmt.params().into();
        drop(stmt);
        let mut known = self.settings.param_types.lock().expect("not poisoned");
        if known.len() >= MAX_KNOWN_SHAPES {
            known.clear();
        }
        known.insert(sql.into(), types.clone());
        Ok(types)
    }

    /// Prepares (or finds cached) every statement, inside the transaction
    /// (under its statement timeout); the first failure is reported like a
    /// failed statement (span, stats).
    async fn prepare_all(&self, statements: &[(&str, &Params<'_>)]) -> Result<Vec<Ready>, Error> {
        let mut ready = Vec::with_capacity(statements.len());
        for (sql, _) in statements {
            let start = Instant::now();
            let in_flight = InFlight(&self.abandoned);
            let prepared = if self.settings.transaction_pooling {
                self.param_types(sql).await.map(Ready::Types)
            } else {
                self.client().prepare_cached(sql).await.map(Ready::Statement)
            };
            in_flight.done();
            match prepared {
                Ok(r) => ready.push(r),
                Err(e) => {
                    let (span, _) = self.statement_span(sql, None);
                    return self.finish_statement(&span, sql, start, Err(e));
                }
            }
        }
        Ok(ready)
    }

    /// Runs statements in one round trip, in order, inside this
    /// transaction; returns each one's rows. A later statement runs after
    /// the earlier ones completed (each starts with a fresh snapshot in READ
    /// COMMITTED), but without waiting for their answers: use it for
    /// statements that do not depend on each other's results.
    pub async fn query_pipelined(&self, statements: &[(&str, &Params<'_>)]) -> Result<Vec<Vec<Row>>, Error> {
        let ready = self.prepare_all(statements).await?;
        self.send_all(statements, &ready).await.into_iter().collect()
    }

    /// Runs one statement: prepared and cached per connection, inside a
    /// CLIENT span with OpenTelemetry database attributes, recorded in the
    /// query stats and metrics, a `slow_query` event past the threshold.
    /// Every statement of the service goes here (or through `copy_in`).
    ///
    /// Pipelining (`Store::read`, `query_pipelined`) relies on this: when
    /// the statement is already prepared on the connection, the request is
    /// sent on the future's first poll (nothing awaited before it).
    pub async fn query(&self, sql: &str, params: &Params<'_>) -> Result<Vec<Row>, Error> {
        self.run(sql, params, None).await
    }

    /// [`Tx::query`]; with `ready` (from [`Tx::prepare_all`]) the request
    /// is sent on the first poll whatever happened meanwhile (another task
    /// may have cleared the learned parameter types).
    async fn run(&self, sql: &str, params: &Params<'_>, ready: Option<&Ready>) -> Result<Vec<Row>, Error> {
        let (span, start) = self.statement_span(sql, None);
        let client = self.client();
        let in_flight = InFlight(&self.abandoned);
        // Unnamed (transaction pooling): Parse, Bind, Execute in one
        // request, so nothing prepared is left for the next transaction,
        // which may run on another server connection.
        let typed = |types: &[Type]| -> Vec<(&(dyn ToSql + Sync), Type)> {
            params.iter().copied().zip(types.iter().cloned()).collect()
        };
        let result = async {
            match ready {
                Some(Ready::Statement(stmt)) => client.query(stmt, params).await,
                Some(Ready::Types(types)) => client.query_typed(sql, &typed(types)).await,
                None if self.settings.transaction_pooling => {
                    let types = self.param_types(sql).await?;
                    client.query_typed(sql, &typed(&types)).await
                }
                None => {
                    let stmt = client.prepare_cached(sql).await?;
                    client.query(&stmt, params).await
                }
            }
        }
        .instrument(span.clone());
        let result = match &self.on_replica {
            None => result.await,
            Some(replica) => {
                let down = replica.went_down();
                tokio::select! {
                    biased;
                    r = result => r,
                    // `in_flight` is dropped unfinished: the transaction is
                    // abandoned (its statement cancelled, its connection not
                    // reused).
                    () = down => return Err(Error::Unavailable("the read replica went down mid-read".into())),
                }
            }
        };
        in_flight.done();
        self.finish_statement(&span, sql, start, result)
    }

    /// Sends `statements` in order, each on the first poll (all prepared
    /// by [`Tx::prepare_all`]); their results in order.
    fn send_all<'s>(
        &'s self,
        statements: &'s [(&str, &Params<'_>)],
        ready: &'s [Ready],
    ) -> impl Future<Output = Vec<Result<Vec<Row>, Error>>> + 's {
        in_order(
            statements.iter().zip(ready).map(|((sql, params), r)| self.run(sql, params, Some(r))).collect(),
        )
    }

    /// Binary `COPY ... FROM STDIN` of `rows` (each in `types` order), with
    /// the same span, stats, slow-statement event and error mapping as `query`.
    pub async fn copy_in(&self, sql: &str, types: &[Type], rows: &[&[Value]]) -> Result<u64, Error> {
        let (span, start) = self.statement_span(sql, Some(rows.len()));
        let client = self.client();
        let in_flight = InFlight(&self.abandoned);
        let result = async {
            let sink = client.copy_in(sql).await?;
            let writer = BinaryCopyInWriter::new(sink, types);
            futures_util::pin_mut!(writer);
            let mut refs: Vec<&(dyn ToSql + Sync)> = Vec::with_capacity(types.len());
            for row in rows {
                refs.clear();
                refs.extend(row.iter().map(|v| v as &(dyn ToSql + Sync)));
                writer.as_mut().write(&refs).await?;
            }
            writer.finish().await
        }
        .instrument(span.clone())
        .await;
        in_flight.done();
        self.finish_statement(&span, sql, start, result)
    }

    fn statement_span(&self, sql: &str, rows: Option<usize>) -> (tracing::Span, Instant) {
        let (op, table) = shape(sql);
        let span = tracing::info_span!(
            "db.query",
            otel.kind = "client",
            otel.name = %format_args!("{op}{}{table}", if table.is_empty() { "" } else { " " }),
            db.system.name = "postgresql",
            db.namespace = %self.settings.db_name,
            db.operation.name = op,
            db.collection.name = table,
            db.query.text = sql,
            server.address = %self.settings.server_address,
            db.response.status_code = Empty,
            db.duration_ms = Empty,
            db.rows = rows,
        );
        (span, Instant::now())
    }

    fn finish_statement<T>(
        &self,
        span: &tracing::Span,
        sql: &str,
        start: Instant,
        result: Result<T, tokio_postgres::Error>,
    ) -> Result<T, Error> {
        let (op, table) = shape(sql);
        let elapsed = start.elapsed();
        span.record("db.duration_ms", elapsed.as_secs_f64() * 1000.0);
        let slow = elapsed >= self.settings.slow_query;
        self.settings.observe(sql, op, table, elapsed, slow);
        if slow {
            // One event, inside the statement's span: a `slow_query` span
            // event for traces and one WARN line (with the trace id) for logs.
            let _g = span.enter();
            tracing::warn!(
                duration_ms = elapsed.as_secs_f64() * 1000.0,
                threshold_ms = self.settings.slow_query.as_millis() as u64,
                rpc = self.rpc.as_deref().unwrap_or("-"),
                db.operation.name = op,
                db.collection.name = table,
                db.query.text = sql,
                "slow_query"
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
        let note = self.wrote.take();
        let lsn = self.send_commit(note.is_some()).await.map_err(db_error)?;
        self.open = false;
        if let Some(note) = note {
            note.committed(lsn);
        }
        Ok(())
    }

    /// Runs `statements`, then commits, in **one round trip**: the
    /// statements and COMMIT are sent together (a write's audit events and
    /// stored response). Statements are prepared first, so none can be
    /// sent after the COMMIT. If one fails in the server, the transaction
    /// is aborted and the COMMIT behind it rolls back; if one fails before
    /// it is sent (a parameter that does not encode), no COMMIT is sent and
    /// dropping the transaction rolls it back. Either way nothing is kept
    /// and the first failure is returned.
    pub async fn commit_with(mut self, statements: &[(&str, &Params<'_>)]) -> Result<(), Error> {
        if statements.is_empty() {
            return self.commit().await;
        }
        let ready = self.prepare_all(statements).await?;
        let note = self.wrote.take();
        let this = &self;
        let failed_unsent = AtomicBool::new(false);
        let (results, committed) = {
            let mut sent = std::pin::pin!(in_order(
                statements
                    .iter()
                    .zip(&ready)
                    .map(|((sql, params), r)| {
                        let failed_unsent = &failed_unsent;
                        async move {
                            let mut run = std::pin::pin!(this.run(sql, params, Some(r)));
                            // The first poll sends the request; an error then
                            // was found before anything left.
                            let first = std::future::poll_fn(|cx| Poll::Ready(run.as_mut().poll(cx))).await;
                            match first {
                                Poll::Ready(Err(e)) => {
                                    failed_unsent.store(true, Ordering::Relaxed);
                                    Err(e)
                                }
                                Poll::Ready(ok) => ok,
                                Poll::Pending => run.await,
                            }
                        }
                    })
                    .collect(),
            ));
            let first = std::future::poll_fn(|cx| Poll::Ready(sent.as_mut().poll(cx))).await;
            if failed_unsent.load(Ordering::Relaxed) {
                let results = match first {
                    Poll::Ready(results) => results,
                    Poll::Pending => sent.await,
                };
                return Err(results.into_iter().find_map(Result::err).expect("a statement failed"));
            }
            tokio::join!(
                biased;
                async {
                    match first {
                        Poll::Ready(results) => results,
                        Poll::Pending => sent.await,
                    }
                },
                this.send_commit(note.is_some()),
            )
        };
        // COMMIT answered: the transaction is over (committed, or rolled
        // back behind a failed statement).
        self.open = committed.is_err();
        for r in results {
            r?;
        }
        let lsn = committed.map_err(db_error)?;
        if let Some(note) = note {
            note.committed(lsn);
        }
        Ok(())
    }

    /// Sends COMMIT; with `lsn`, together with the WAL position after its
    /// commit record (one round trip), which it returns.
    async fn send_commit(&self, lsn: bool) -> Result<Option<u64>, tokio_postgres::Error> {
        if !lsn {
            return self.client().batch_execute("COMMIT").await.map(|()| None);
        }
        let answers = self.client().simple_query(replica::COMMIT_AND_LSN).await?;
        Ok(answers.iter().find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).and_then(|v| v.parse::<u64>().ok()),
            _ => None,
        }))
    }
}

impl WriteNote {
    /// The transaction committed at `lsn`: the tenant's and the call's later
    /// reads wait for a replica that replayed it.
    fn committed(self, lsn: Option<u64>) {
        match lsn {
            Some(lsn) => {
                self.replica.wrote(self.tenant, Lsn(lsn));
                if let Some(call) = &self.call {
                    call.committed(Lsn(lsn));
                }
            }
            None => {
                tracing::warn!("no WAL position after COMMIT; the caller's reads may see an older replica")
            }
        }
    }
}

/// Marks its transaction abandoned unless the statement answered.
struct InFlight<'a>(&'a AtomicBool);

impl InFlight<'_> {
    fn done(self) {
        std::mem::forget(self);
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

impl Drop for Tx {
    fn drop(&mut self) {
        if self.abandoned.load(Ordering::Relaxed)
            && let Some(client) = self.client.take()
        {
            // Cancelled, then closed, not returned: the backend stops the
            // statement at once (a cancel request on a connection of its
            // own), and the connection, with an answer still owed to it, is
            // not reused. Closing alone would not stop the statement: the
            // connection task stays open until the answers it waits for
            // arrive.
            let token = client.cancel_token();
            let client = Object::take(client);
            let tls = self.cancel_tls.clone();
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(async move {
                    let _ = tokio::time::timeout(CANCEL_WITHIN, token.cancel_query(tls)).await;
                    drop(client);
                });
            }
            return;
        }
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
    let mut prev = "";
    for w in sql.split_whitespace() {
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

/// Connects once as the service would (the login, then `SET LOCAL ROLE
/// bi_data_app` in a transaction rolled back: no session state is left,
/// which behind a pooler would stay on a server connection), so `serve` can
/// say at start what keeps it from working.
/// The error is one line naming the cause and what to do.
pub async fn check_connection(url: &str, connect_timeout: Duration) -> Result<(), Error> {
    let (mut cfg, tls) = tls::connector_for(url)
        .map_err(|e| Error::Startup(format!("--database-url is no usable PostgreSQL URL: {e}")))?;
    cfg.connect_timeout(connect_timeout);
    let user = cfg.get_user().unwrap_or("(default user)").to_owned();
    let db = cfg.get_dbname().unwrap_or("(default database)").to_owned();
    let hosts: Vec<String> = cfg
        .get_hosts()
        .iter()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(h) => h.clone(),
            #[cfg(unix)]
            tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
        })
        .collect();
    let port = cfg.get_ports().first().copied().unwrap_or(5432);
    let explain = |e: &tokio_postgres::Error| -> Error {
        use tokio_postgres::error::SqlState;
        let msg = match e.code() {
            // pg_hba.conf has only `hostssl` lines for this client.
            Some(c)
                if *c == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
                    && e.as_db_error().is_some_and(|d| d.message().ends_with("no encryption")) =>
            {
                "PostgreSQL accepts only encrypted connections from this client (pg_hba.conf hostssl): set sslmode=verify-full (with sslrootcert) or require in --database-url".to_owned()
            }
            Some(c)
                if *c == SqlState::INVALID_PASSWORD
                    || *c == SqlState::INVALID_AUTHORIZATION_SPECIFICATION =>
            {
                format!(
                    "PostgreSQL refused the login of user '{user}': check the user and password in --database-url / DATABASE_URL"
                )
            }
            Some(c) if *c == SqlState::INVALID_CATALOG_NAME => format!(
                "database '{db}' does not exist: create it (scripts/dev-env.sh does for bi_data) or fix --database-url"
            ),
            Some(c) if *c == SqlState::INSUFFICIENT_PRIVILEGE || *c == SqlState::UNDEFINED_OBJECT => format!(
                "user '{user}' may not switch to the role {APP_ROLE}: as a superuser, CREATE ROLE {APP_ROLE} NOLOGIN and GRANT {APP_ROLE} TO {user} (scripts/dev-env.sh does)"
            ),
            _ => match tls::tls_failure(e) {
                Some(why) => format!("cannot connect to PostgreSQL at {}:{port}: {why}", hosts.join(",")),
                None => format!(
                    "cannot reach PostgreSQL at {}:{port} ({e}): is it running and accepting TCP connections? (scripts/dev-env.sh starts it) check --database-url",
                    hosts.join(",")
                ),
            },
        };
        Error::Startup(msg)
    };
    let (client, conn) = cfg.connect(tls).await.map_err(|e| explain(&e))?;
    let task = tokio::spawn(conn);
    let result = client.batch_execute(CHECK_APP_ROLE).await.map_err(|e| explain(&e));
    drop(client);
    task.abort();
    result
}

/// A connection of its own to `url` (the owner's: migrations, partition
/// maintenance), with the same TLS (sslmode, sslrootcert) as the pools;
/// its task runs until aborted. `purpose` completes "cannot connect to the
/// database to …".
pub(crate) async fn connect_owner(
    url: &str,
    connect_timeout: Duration,
    application_name: &str,
    purpose: &str,
) -> Result<(tokio_postgres::Client, tokio::task::JoinHandle<()>), Error> {
    let (mut cfg, tls) =
        tls::connector_for(url).map_err(|e| Error::Internal(format!("invalid migration URL: {e}")))?;
    cfg.connect_timeout(connect_timeout);
    cfg.application_name(application_name);
    let (client, conn) = cfg.connect(tls).await.map_err(|e| {
        let why = tls::tls_failure(&e).unwrap_or_else(|| e.to_string());
        Error::Unavailable(format!("cannot connect to the database to {purpose}: {why}"))
    })?;
    let conn_task = tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok((client, conn_task))
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
        SqlState::UNIQUE_VIOLATION => Error::Unique { constraint: constraint.to_owned() },
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
        // Class 22, data exception: a value the caller sent that PostgreSQL
        // cannot store (a NUL character, an out-of-range number...).
        _ if code.code().starts_with("22") => {
            tracing::info!(sqlstate = code.code(), "database rejected a value");
            Error::invalid("request", "a value cannot be stored (invalid characters or out of range)")
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
            let db = e.as_db_error();
            tracing::error!(
                sqlstate = code.code(),
                message = db.map(|d| d.message()),
                detail = db.and_then(|d| d.detail()),
                "database error"
            );
            Error::Internal(format!("database error {}", code.code()))
        }
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
