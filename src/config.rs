//! Command line and environment configuration. Every flag has an environment
//! variable; the flag wins. Secrets are wrapped so they never print.

use std::{fmt, net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};

/// A string that never appears in Debug or Display output.
#[derive(Clone, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Secret(s.to_owned()))
    }
}

/// A database URL: printed without its password.
#[derive(Clone)]
pub struct DbUrl(pub String);

impl fmt::Debug for DbUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact_url(&self.0))
    }
}

// Checked where it is used, so a subcommand that needs no database does not
// fail on a bad DATABASE_URL in the environment.
impl std::str::FromStr for DbUrl {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(DbUrl(s.to_owned()))
    }
}

/// Replaces the password of `scheme://user:password@host/...` with `***`.
pub fn redact_url(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://")
        && let Some((userinfo, host)) = rest.split_once('@')
        && let Some((user, _)) = userinfo.split_once(':')
    {
        return format!("{scheme}://{user}:***@{host}");
    }
    url.to_owned()
}

/// Environment read besides the flags' own variables (shown in --help).
pub const TELEMETRY_ENV_HELP: &str = "\
Telemetry environment:
  RUST_LOG                            log filter (default: info)
  LOG_FORMAT=json                     JSON lines on stderr (default: text)
  OTEL_EXPORTER_OTLP_ENDPOINT         OTLP/gRPC collector, e.g. http://otel-collector:4317;
                                      trace export is off when unset
  OTEL_EXPORTER_OTLP_TRACES_ENDPOINT  the same, for traces only (wins)
  OTEL_SERVICE_NAME                   service.name (default: bi-data)
  OTEL_TRACES_SAMPLER, _ARG           e.g. parentbased_traceidratio and 0.1
                                      (default: parentbased_always_on)
  OTEL_SDK_DISABLED=true              no trace export
  OTEL_BSP_*, OTEL_EXPORTER_OTLP_TIMEOUT, OTEL_EXPORTER_OTLP_HEADERS: as in the OpenTelemetry spec";

#[derive(Parser, Debug)]
#[command(
    name = "bi-data",
    version,
    about = "bi-data: gRPC data-access service over PostgreSQL",
    long_about = "bi-data: gRPC data-access service over PostgreSQL.\n\n\
        Without a command it serves. `bi-data <command> --help` says what each command needs; \
        on a fresh Debian machine `scripts/run-demo.sh` sets up PostgreSQL, Redis, roles and \
        databases and serves demo data.",
    args_override_self = true,
    after_help = TELEMETRY_ENV_HELP
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub serve: ServeArgs,
}

// Parsed once per process: the size of `Serve` costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the gRPC server (the default).
    ///
    /// Needs: PostgreSQL at --database-url whose login role is a member of
    /// `bi_data_app` (scripts/dev-env.sh sets that up; deploy/postgres/
    /// superuser.sql is the one-time superuser step), a role that may create
    /// tables for the migrations (--migration-database-url, default the same
    /// URL), and --jwt-secret (or --insecure-dev on loopback). Optional:
    /// Redis (--redis-url), a read replica (--replica-url), an OTLP collector
    /// (OTEL_EXPORTER_OTLP_ENDPOINT). A database it cannot use at start makes
    /// it exit within --startup-timeout-ms, saying why.
    #[command(after_help = TELEMETRY_ENV_HELP)]
    Serve(ServeArgs),
    /// Apply pending migrations (or migrate to --to N, back or forward) and exit.
    ///
    /// Needs: --migration-database-url (or --database-url) of a role that
    /// may create tables in the database (its owner). Safe to run from
    /// several processes at once: an advisory lock applies them once.
    /// docs/migrations.md: down steps, --to, --dry-run.
    Migrate(MigrateArgs),
    /// Print a signed bearer token.
    ///
    /// Needs: the server's --jwt-secret / JWT_SECRET and --tenant (a UUID);
    /// --roles reader,writer,admin as the calls need (reads: reader; writes:
    /// writer; audit and query statistics: admin). No database.
    Token(TokenArgs),
    /// Load demo data for a new tenant; print its id and a token.
    ///
    /// Needs: the database (as for migrate: it migrates first) and, for the
    /// token it prints, --jwt-secret. Prints progress to stderr every 10,000
    /// jobs; the summary (tenant_id=, token=, counts) goes to stdout.
    DemoData(DemoArgs),
}

#[derive(Args, Debug, Clone)]
pub struct MigrateArgs {
    #[command(flatten)]
    pub db: DbArgs,
    /// Migrate to version N: forward (refinery, up to and including N) or
    /// back (the down steps of every applied version above N, newest
    /// first, each in its own transaction). 0 reverts every migration.
    /// Default: the newest version built in.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(i32).range(0..))]
    pub to: Option<i32>,
    /// Print the SQL that would run, in order, each step under a header
    /// line naming its version and direction; apply nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Args, Debug, Clone)]
pub struct DbArgs {
    /// PostgreSQL URL of the primary. The service switches to the role
    /// `bi_data_app` on every connection (the login role must be a member).
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://localhost/bi_data",
        hide_env_values = true
    )]
    pub database_url: DbUrl,
    /// URL used to apply migrations (a role that may create tables); defaults
    /// to --database-url.
    #[arg(long, env = "MIGRATION_DATABASE_URL", hide_env_values = true)]
    pub migration_database_url: Option<DbUrl>,
    /// Read replica URL (a streaming replica of the primary). Reads (Get,
    /// List, Search, Export, analytics) go there while it answers, lags by
    /// at most --replica-max-lag-ms and has replayed the caller's own
    /// writes; everything else goes to the primary. Reads go to the primary
    /// when unset.
    #[arg(long, env = "DATABASE_REPLICA_URL", hide_env_values = true)]
    pub replica_url: Option<DbUrl>,
    /// Replication lag beyond which reads leave the replica for the
    /// primary (measured on WAL positions every 100 ms).
    #[arg(long, env = "DATABASE_REPLICA_MAX_LAG_MS", default_value_t = 1000)]
    pub replica_max_lag_ms: u64,
    /// Connections per pool; default 2 x cores + 1, at least 8.
    #[arg(long, env = "DATABASE_POOL_SIZE")]
    pub pool_size: Option<usize>,
    /// How long a call may wait for a pooled connection.
    #[arg(long, env = "DATABASE_POOL_WAIT_MS", default_value_t = 2000)]
    pub pool_wait_ms: u64,
    /// Connect timeout for new connections.
    #[arg(long, env = "DATABASE_CONNECT_TIMEOUT_MS", default_value_t = 3000)]
    pub connect_timeout_ms: u64,
    /// Upper bound of any statement when the caller sets no shorter deadline.
    #[arg(long, env = "STATEMENT_TIMEOUT_MS", default_value_t = 30_000)]
    pub statement_timeout_ms: u64,
    /// The server's name in `pg_stat_activity` (`application_name`); default
    /// `bi-data-<HOSTNAME>-<pid>` (`bi-data-<pid>` without HOSTNAME), so
    /// every server's statements can be told apart.
    #[arg(long, env = "DATABASE_APPLICATION_NAME")]
    pub application_name: Option<String>,
    /// --database-url (and --replica-url) lead to a pooler in transaction
    /// mode (PgBouncer `pool_mode = transaction`): consecutive transactions
    /// may run on different server connections. The service then keeps no
    /// session state: the role is set per transaction (`SET LOCAL ROLE`),
    /// statements are unnamed (parsed each time, nothing prepared outlives
    /// a transaction), and migrations need --migration-database-url leading
    /// to PostgreSQL directly (they hold a session advisory lock).
    /// docs/connections.md.
    #[arg(long, env = "DATABASE_TRANSACTION_POOLING")]
    pub transaction_pooling: bool,
}

impl DbArgs {
    pub fn pool_size(&self) -> usize {
        self.pool_size.unwrap_or_else(|| {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            (2 * cores + 1).max(8)
        })
    }
    /// `--application-name`, or this process's default; at most 63 bytes
    /// (PostgreSQL's limit), cut at a character boundary.
    pub fn application_name(&self) -> String {
        let mut name = self.application_name.clone().unwrap_or_else(|| {
            let pid = std::process::id();
            match std::env::var("HOSTNAME") {
                Ok(host) if !host.is_empty() => format!("bi-data-{host}-{pid}"),
                _ => format!("bi-data-{pid}"),
            }
        });
        let mut end = name.len().min(63);
        while !name.is_char_boundary(end) {
            end -= 1;
        }
        name.truncate(end);
        name
    }
    pub fn migration_url(&self) -> &DbUrl {
        self.migration_database_url.as_ref().unwrap_or(&self.database_url)
    }
    /// The URL migrations may use: behind a transaction-mode pooler
    /// (--transaction-pooling) only an explicit --migration-database-url,
    /// since the migration lock is a session advisory lock, which a pooler
    /// would hand to whatever server connection runs the next statement.
    pub fn direct_migration_url(&self) -> Result<&DbUrl, String> {
        match &self.migration_database_url {
            Some(url) => Ok(url),
            None if self.transaction_pooling => Err(
                "--transaction-pooling needs --migration-database-url / MIGRATION_DATABASE_URL leading to \
                 PostgreSQL directly, not through the pooler: migrations hold a session advisory lock \
                 (or pass --no-migrate and migrate elsewhere)"
                    .into(),
            ),
            None => Ok(&self.database_url),
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct AuthArgs {
    /// HS256 secret that signs and verifies bearer tokens.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<Secret>,
}

#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// gRPC listen address.
    #[arg(long = "listen", env = "LISTEN_ADDR", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub db: DbArgs,
    #[command(flatten)]
    pub auth: AuthArgs,
    /// Redis URL for the shared cache; caching is off when unset or empty.
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<Secret>,
    #[command(flatten)]
    pub cache: CacheArgs,
    // Boxed: keeps `Command::Serve` within clippy's enum variant size bound.
    #[command(flatten)]
    pub partitions: Box<PartitionArgs>,
    /// Accept an `x-tenant-id` header instead of a token (loopback only).
    #[arg(long, env = "INSECURE_DEV")]
    pub insecure_dev: bool,
    /// Statements taking at least this long are slow: a WARN line with the
    /// RPC and trace id, a `slow_query` event on their span, counted in
    /// /metrics and the query stats (0: every statement).
    #[arg(long, env = "SLOW_QUERY_MS", default_value_t = 100)]
    pub slow_query_ms: u64,
    /// Prometheus metrics listen address (`/metrics`).
    #[arg(long = "metrics-listen", env = "METRICS_ADDR", default_value = "127.0.0.1:9464")]
    pub metrics_listen: SocketAddr,
    /// Do not apply migrations at start.
    #[arg(long, env = "NO_MIGRATE")]
    pub no_migrate: bool,
    /// How long shutdown waits for in-flight calls.
    #[arg(long, env = "DRAIN_TIMEOUT_MS", default_value_t = 10_000)]
    pub drain_timeout_ms: u64,
    /// Calls served at once (health and reflection not counted); default 4
    /// per pooled connection, at least 16. Past it a call waits at most
    /// --admission-wait-ms, then is answered RESOURCE_EXHAUSTED (OVERLOADED,
    /// with RetryInfo).
    #[arg(long, env = "MAX_CONCURRENT_CALLS")]
    pub max_concurrent_calls: Option<usize>,
    /// How long a call may wait for one of the --max-concurrent-calls.
    #[arg(long, env = "ADMISSION_WAIT_MS", default_value_t = 100)]
    pub admission_wait_ms: u64,
    /// On SIGTERM, health turns NOT_SERVING at once; for this long the
    /// server still accepts new calls (while load balancers and probes see
    /// NOT_SERVING and move traffic away), then stops accepting and drains.
    #[arg(long, env = "SHUTDOWN_GRACE_MS", default_value_t = 0)]
    pub shutdown_grace_ms: u64,
    /// How long `serve` waits at start for the database (reachable, the
    /// login accepted, `SET ROLE bi_data_app` allowed) before it exits with
    /// the reason; 0 waits forever. Once it has started, an outage never
    /// stops the server (health says NOT_SERVING until it is back).
    #[arg(long, env = "STARTUP_TIMEOUT_MS", default_value_t = 60_000)]
    pub startup_timeout_ms: u64,
    /// Largest gRPC message accepted or sent, in bytes.
    #[arg(long, env = "MAX_MESSAGE_BYTES", default_value_t = 8 * 1024 * 1024)]
    pub max_message_bytes: usize,
    #[command(flatten)]
    pub tls: TlsArgs,
}

/// TLS of the gRPC listener (docs/tls.md). Without --tls-cert/--tls-key it
/// serves plaintext.
#[derive(Args, Debug, Clone, Default)]
pub struct TlsArgs {
    /// PEM certificate chain of the gRPC server (leaf first); with
    /// --tls-key the listener speaks only TLS. Read at start: a new
    /// certificate takes a restart.
    #[arg(long, env = "TLS_CERT_FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "TLS_KEY_FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificate(s): clients must present a certificate signed by
    /// one of them (mutual TLS); without it any client may connect (and is
    /// then authenticated by its token).
    #[arg(long, env = "TLS_CLIENT_CA_FILE", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// A second, plaintext gRPC listener serving only grpc.health.v1 (for
    /// probes that cannot speak TLS, e.g. Kubernetes' gRPC probes); off
    /// when unset.
    #[arg(long = "health-listen", env = "HEALTH_LISTEN_ADDR")]
    pub health_listen: Option<SocketAddr>,
}

impl ServeArgs {
    pub fn max_concurrent_calls(&self) -> usize {
        self.max_concurrent_calls.unwrap_or_else(|| (4 * self.db.pool_size()).max(16))
    }
    pub fn drain_timeout(&self) -> Duration {
        Duration::from_millis(self.drain_timeout_ms)
    }
}

/// Monthly partitions of the append-only logs (docs/partitions.md): made
/// ahead at start and hourly, as the migration role under an advisory lock.
#[derive(Args, Debug, Clone)]
pub struct PartitionArgs {
    /// Partitions of audit_events and campaign_events are kept for the
    /// current UTC month and this many months after it.
    #[arg(long, env = "PARTITION_MONTHS_AHEAD", default_value_t = 3)]
    pub partition_months_ahead: u32,
    /// Keep this many whole months of audit events before the current one:
    /// older monthly partitions are detached and dropped (each drop
    /// audited). Unset: audit events are kept forever.
    #[arg(long, env = "AUDIT_RETENTION_MONTHS", value_parser = clap::value_parser!(u32).range(1..))]
    pub audit_retention_months: Option<u32>,
    /// The same for campaign events (they number each campaign's history and
    /// feed the funnel: see docs/partitions.md before setting it).
    #[arg(long, env = "CAMPAIGN_EVENT_RETENTION_MONTHS", value_parser = clap::value_parser!(u32).range(1..))]
    pub campaign_event_retention_months: Option<u32>,
}

/// The shared cache (used only with --redis-url).
#[derive(Args, Debug, Clone)]
pub struct CacheArgs {
    /// Longest life of a cached record; bounds staleness should an
    /// invalidation ever be lost.
    #[arg(long, env = "CACHE_TTL_SECS", default_value_t = 300)]
    pub cache_ttl_secs: u64,
    /// Longest life of a cached list or search result (they are also
    /// dropped by the next write of the tenant's resource).
    #[arg(long, env = "CACHE_QUERY_TTL_SECS", default_value_t = 60)]
    pub cache_query_ttl_secs: u64,
    /// Longest wait for one Redis command; past it the read goes to
    /// PostgreSQL (also capped by half the caller's remaining deadline).
    #[arg(long, env = "CACHE_TIMEOUT_MS", default_value_t = 100)]
    pub cache_timeout_ms: u64,
    /// Connect timeout of a new Redis connection.
    #[arg(long, env = "CACHE_CONNECT_TIMEOUT_MS", default_value_t = 500)]
    pub cache_connect_timeout_ms: u64,
    /// Consecutive Redis failures that open the circuit breaker (a failed
    /// invalidation opens it at once).
    #[arg(long, env = "CACHE_BREAKER_FAILURES", default_value_t = 5)]
    pub cache_breaker_failures: u32,
    /// While the breaker is open, Redis is probed this often; the cache is
    /// used again after a probe answers.
    #[arg(long, env = "CACHE_BREAKER_PROBE_MS", default_value_t = 500)]
    pub cache_breaker_probe_ms: u64,
    /// An in-process near cache of records in front of Redis, invalidated
    /// across replicas through Redis pub/sub.
    #[arg(long, env = "CACHE_NEAR")]
    pub cache_near: bool,
    /// PEM CA certificate(s) that a `rediss://` --redis-url's server
    /// certificate must chain to (and name the URL's host); without it the
    /// machine's trust store is used. Not used with `redis://`.
    #[arg(long, env = "REDIS_CA_FILE")]
    pub redis_ca: Option<PathBuf>,
    /// Records the near cache holds at most.
    #[arg(long, env = "CACHE_NEAR_CAPACITY", default_value_t = 10_000)]
    pub cache_near_capacity: usize,
    /// Longest life of a near-cache entry.
    #[arg(long, env = "CACHE_NEAR_TTL_MS", default_value_t = 5_000)]
    pub cache_near_ttl_ms: u64,
}

impl CacheArgs {
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.cache_timeout_ms.max(1))
    }
}

#[derive(Args, Debug)]
pub struct TokenArgs {
    /// Tenant UUID the token grants access to.
    #[arg(long)]
    pub tenant: uuid::Uuid,
    /// Comma-separated roles: reader, writer, admin.
    #[arg(long, value_delimiter = ',', default_value = "reader")]
    pub roles: Vec<String>,
    /// Subject (actor recorded in audit events).
    #[arg(long, default_value = "cli")]
    pub subject: String,
    /// Lifetime, e.g. 30m, 1h, 7d.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub ttl: Duration,
    #[command(flatten)]
    pub auth: AuthArgs,
}

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Number of demo jobs.
    #[arg(long, default_value_t = 1000)]
    pub jobs: usize,
    #[command(flatten)]
    pub db: DbArgs,
    #[command(flatten)]
    pub auth: AuthArgs,
    /// Optional file to write the token to.
    #[arg(long)]
    pub token_file: Option<PathBuf>,
}

/// Parses `90s`, `30m`, `1h`, `7d` or a plain number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num.parse().map_err(|_| format!("invalid duration '{s}' (e.g. 30m, 1h, 7d)"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => return Err(format!("invalid duration unit in '{s}' (use s, m, h or d)")),
    };
    if secs == 0 {
        return Err("duration must be positive".into());
    }
    Ok(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords() {
        assert_eq!(redact_url("postgres://u:pw@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact_url("postgres://h/db"), "postgres://h/db");
        assert_eq!(format!("{:?}", Secret::new("abc")), "[redacted]");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert!(parse_duration("1y").is_err());
        assert!(parse_duration("0s").is_err());
    }
}
