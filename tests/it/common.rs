//! Test harness: a real server on port 0 against the real PostgreSQL test
//! database, typed gRPC clients, and fresh tenants so tests own their data.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use bi_data::{
    app::{self, Running},
    auth::{Role, TokenKeys},
    config::{Cli, Command, ServeArgs},
    pb::{
        analytics_service_client::AnalyticsServiceClient, audit_service_client::AuditServiceClient,
        company_service_client::CompanyServiceClient, document_service_client::DocumentServiceClient,
        job_service_client::JobServiceClient, outreach_service_client::OutreachServiceClient,
    },
};
use clap::Parser;
use tonic::{Request, transport::Channel};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use uuid::Uuid;

pub const SECRET: &str = "integration-test-secret";

pub fn database_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://bi_data_owner:bi_data@127.0.0.1:5432/bi_data_test".into())
}

/// The process's tracing subscriber: spans to the in-test OTLP receiver,
/// logs to stderr when RUST_LOG is set.
fn init_logs() {
    crate::otlp::global();
}

/// Parses serve flags exactly as the binary does.
pub fn serve_args(extra: &[&str]) -> ServeArgs {
    serve_args_on(&database_url(), extra)
}

/// `serve_args` against another database (same roles and password).
pub fn serve_args_on(url: &str, extra: &[&str]) -> ServeArgs {
    let mut argv = vec![
        "bi-data",
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--database-url",
        url,
        "--migration-database-url",
        url,
        "--jwt-secret",
        SECRET,
        "--drain-timeout-ms",
        "3000",
        "--metrics-listen",
        "127.0.0.1:0",
        // No shared cache unless a test asks for one (REDIS_URL is in the
        // environment of scripts/env.sh): tests that count statements
        // describe the uncached server.
        "--redis-url",
        "",
    ];
    argv.extend_from_slice(extra);
    match Cli::try_parse_from(argv).expect("valid test flags").command {
        Some(Command::Serve(a)) => a,
        _ => unreachable!(),
    }
}

pub struct TestApp {
    pub addr: std::net::SocketAddr,
    pub channel: Channel,
    pub metrics_addr: SocketAddr,
    running: Option<Running>,
}

impl TestApp {
    pub async fn spawn() -> TestApp {
        Self::spawn_with(&[]).await
    }

    /// Starts a server with extra flags and waits until it is SERVING.
    pub async fn spawn_with(extra: &[&str]) -> TestApp {
        let app = Self::start(serve_args(extra)).await;
        app.wait_for(ServingStatus::Serving, Duration::from_secs(60)).await;
        app
    }

    /// `spawn_with` against another database.
    pub async fn spawn_on(url: &str, extra: &[&str]) -> TestApp {
        let app = Self::start(serve_args_on(url, extra)).await;
        app.wait_for(ServingStatus::Serving, Duration::from_secs(60)).await;
        app
    }

    /// Starts a server without waiting for health.
    pub async fn start(args: ServeArgs) -> TestApp {
        init_logs();
        let running = app::start(args).await.expect("server starts");
        let addr = running.addr;
        let metrics_addr = running.metrics_addr;
        let channel = Channel::from_shared(format!("http://{addr}")).unwrap().connect_lazy();
        TestApp { addr, channel, metrics_addr, running: Some(running) }
    }

    /// The server's shared cache (with --redis-url).
    pub fn cache(&self) -> Option<Arc<bi_data::cache::RedisCache>> {
        self.running.as_ref().expect("running").cache()
    }

    pub fn query_stats(&self) -> Arc<bi_data::store::stats::QueryStats> {
        self.running.as_ref().expect("running").query_stats()
    }

    pub async fn health(&self, service: &str) -> Option<ServingStatus> {
        let mut c = HealthClient::new(self.channel.clone());
        let r = c.check(HealthCheckRequest { service: service.into() }).await.ok()?;
        ServingStatus::try_from(r.into_inner().status).ok()
    }

    pub async fn wait_for(&self, want: ServingStatus, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if self.health("").await == Some(want) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "server did not become {want:?} within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn jobs(&self) -> JobServiceClient<Channel> {
        JobServiceClient::new(self.channel.clone())
    }

    pub fn companies(&self) -> CompanyServiceClient<Channel> {
        CompanyServiceClient::new(self.channel.clone())
    }

    pub fn outreach(&self) -> OutreachServiceClient<Channel> {
        OutreachServiceClient::new(self.channel.clone())
    }

    pub fn documents(&self) -> DocumentServiceClient<Channel> {
        // Content travels in messages up to the server's limit.
        DocumentServiceClient::new(self.channel.clone())
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20)
    }

    pub fn analytics(&self) -> AnalyticsServiceClient<Channel> {
        AnalyticsServiceClient::new(self.channel.clone())
    }

    pub fn audit(&self) -> AuditServiceClient<Channel> {
        AuditServiceClient::new(self.channel.clone())
    }

    pub async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await.expect("clean shutdown");
        }
    }
}

/// The shared Redis of the development environment (scripts/dev-env.sh).
pub fn redis_url() -> String {
    std::env::var("REDIS_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "redis://127.0.0.1:6379".into())
}

/// A fresh tenant with tokens for each role.
#[derive(Clone)]
pub struct Tenant {
    pub id: Uuid,
    pub reader: String,
    pub writer: String,
    pub admin: String,
}

impl Tenant {
    pub fn new() -> Tenant {
        let id = Uuid::new_v4();
        let keys = TokenKeys::new(SECRET);
        let mint = |roles: &[Role]| keys.mint(id, roles, "tester", Duration::from_secs(3600));
        Tenant {
            id,
            reader: mint(&[Role::Reader]),
            writer: mint(&[Role::Writer]),
            admin: mint(&[Role::Admin]),
        }
    }
}

/// Wraps a message with a bearer token.
pub fn authed<T>(token: &str, msg: T) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    r
}

/// A direct connection as the owner role (for checks under the API).
pub async fn raw_db() -> tokio_postgres::Client {
    let (client, conn) =
        tokio_postgres::connect(&database_url(), tokio_postgres::NoTls).await.expect("db connect");
    tokio::spawn(conn);
    client
}

/// Waits until no statement of a bi-data server whose text matches `like`
/// (SQL ILIKE) is active in the test database, at most `within`; false if
/// one still is then.
pub async fn no_active_query(db: &tokio_postgres::Client, like: &str, within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let running: i64 = db
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'bi-data%' AND state = 'active' \
                 AND query ILIKE $1 AND datname = current_database() AND pid <> pg_backend_pid()",
                &[&like],
            )
            .await
            .unwrap()
            .get(0);
        if running == 0 {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A minimal valid job.
pub fn job(title: &str) -> bi_data::pb::Job {
    bi_data::pb::Job { title: title.into(), company_name: "Acme".into(), ..Default::default() }
}

/// The reason in a status's google.rpc.ErrorInfo.
pub fn reason(s: &tonic::Status) -> String {
    use tonic_types::StatusExt;
    s.get_details_error_info().map(|i| i.reason).unwrap_or_default()
}

/// Field names in a status's google.rpc.BadRequest.
pub fn violations(s: &tonic::Status) -> Vec<String> {
    use tonic_types::StatusExt;
    s.get_details_bad_request()
        .map(|b| b.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default()
}
