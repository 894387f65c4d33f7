//! Wiring: pools, services, health, reflection, the tower stack (RPC
//! telemetry, status conventions, in-flight tracking, auth: the layers of
//! `api::middleware`),
//! /metrics, background tasks and graceful shutdown. `start` binds first and returns the bound addresses,
//! so tests run servers on port 0.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use tokio::{net::TcpListener, sync::Notify, task::JoinHandle};
use tokio_stream::{StreamExt, wrappers::TcpListenerStream};
use tonic::{
    server::NamedService,
    transport::{Certificate, Identity, Server, ServerTlsConfig},
};
use tonic_health::{ServingStatus, server::HealthReporter};

use crate::{
    api::{
        analytics::AnalyticsApi,
        audit::AuditApi,
        companies::CompanyApi,
        documents::DocumentApi,
        jobs::JobApi,
        middleware::{
            admission::Admission,
            auth::AuthLayer,
            conventions::Conventions,
            inflight::InFlight,
            rpc::{KnownMethods, RecordCaller, RpcLayer},
        },
        outreach::OutreachApi,
    },
    auth::{AuthMode, TokenKeys},
    cache::{RedisCache, State as CacheState},
    config::{ServeArgs, TlsArgs},
    error::Error,
    metrics::{self, Metrics},
    pb::{
        self, analytics_service_server::AnalyticsServiceServer, audit_service_server::AuditServiceServer,
        company_service_server::CompanyServiceServer, document_service_server::DocumentServiceServer,
        job_service_server::JobServiceServer, outreach_service_server::OutreachServiceServer,
    },
    service::Service,
    store::{Store, idempotency, migrate, partitions, stats::QueryStats},
};

/// Names whose health is reported (besides "" for the whole server).
pub const SERVICE_NAMES: &[&str] = &[
    <JobServiceServer<JobApi> as NamedService>::NAME,
    <CompanyServiceServer<CompanyApi> as NamedService>::NAME,
    <OutreachServiceServer<OutreachApi> as NamedService>::NAME,
    <DocumentServiceServer<DocumentApi> as NamedService>::NAME,
    <AnalyticsServiceServer<AnalyticsApi> as NamedService>::NAME,
    <AuditServiceServer<AuditApi> as NamedService>::NAME,
];

/// How often the database is probed for health.
const HEALTH_EVERY: Duration = Duration::from_secs(1);

/// After the drain, how long the server may take to write the last
/// responses and close its connections.
const FLUSH_WITHIN: Duration = Duration::from_millis(500);

/// A running server.
pub struct Running {
    pub addr: SocketAddr,
    /// Where `/metrics` is served.
    pub metrics_addr: SocketAddr,
    /// The plaintext health-only listener (--health-listen), if any.
    pub health_addr: Option<SocketAddr>,
    store: Store,
    cache: Option<Arc<RedisCache>>,
    shutdown: Arc<Notify>,
    task: JoinHandle<Result<(), Error>>,
}

impl Running {
    /// Per-shape statement timings of this server (GetQueryStats' data).
    pub fn query_stats(&self) -> Arc<QueryStats> {
        self.store.query_stats().clone()
    }

    /// The shared cache, when --redis-url is set.
    pub fn cache(&self) -> Option<Arc<RedisCache>> {
        self.cache.clone()
    }

    /// Starts graceful shutdown and waits for it (bounded by the drain timeout).
    pub async fn shutdown(self) -> Result<(), Error> {
        self.shutdown.notify_one();
        self.task.await.map_err(|e| Error::Internal(format!("server task: {e}")))?
    }
}

fn auth_mode(args: &ServeArgs) -> Result<AuthMode, Error> {
    if args.insecure_dev {
        if !args.listen.ip().is_loopback() {
            return Err(Error::Startup(format!(
                "--insecure-dev is only allowed on a loopback listen address, not {}: listen on 127.0.0.1 or use tokens",
                args.listen
            )));
        }
        tracing::warn!(
            "insecure-dev: x-tenant-id header accepted without a token; never use this in production"
        );
        return Ok(AuthMode::InsecureDev);
    }
    // An empty JWT_SECRET (a template left unfilled) is no secret at all.
    match args.auth.jwt_secret.as_ref().filter(|s| !s.expose().is_empty()) {
        Some(s) if s.expose().len() >= 8 => Ok(AuthMode::Jwt(Arc::new(TokenKeys::new(s.expose())))),
        Some(_) => Err(Error::Startup(
            "the JWT secret is shorter than 8 characters: pass a longer --jwt-secret / JWT_SECRET".into(),
        )),
        None => Err(Error::Startup(
            "no JWT secret: pass --jwt-secret or set JWT_SECRET (the secret tokens are signed with), \
             or --insecure-dev for a loopback-only development server"
                .into(),
        )),
    }
}

/// The listener's TLS (--tls-cert, --tls-key, --tls-client-ca), read once
/// at start; `None`: plaintext.
fn server_tls(args: &TlsArgs) -> Result<Option<ServerTlsConfig>, Error> {
    let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) else {
        return Ok(None);
    };
    let read = |path: &std::path::Path, flag: &str| {
        std::fs::read(path).map_err(|e| Error::Startup(format!("cannot read {flag} {}: {e}", path.display())))
    };
    // Parsed here too, so a wrong file is named at start, not at the first handshake.
    crate::store::tls::read_certs(cert, "--tls-cert")?;
    let mut config = ServerTlsConfig::new()
        .identity(Identity::from_pem(read(cert, "--tls-cert")?, read(key, "--tls-key")?))
        .timeout(Duration::from_secs(10));
    if let Some(ca) = &args.tls_client_ca {
        crate::store::tls::root_store(ca, "--tls-client-ca")?;
        config = config.client_ca_root(Certificate::from_pem(read(ca, "--tls-client-ca")?));
    }
    Ok(Some(config))
}

async fn set_health(reporter: &HealthReporter, status: ServingStatus) {
    reporter.set_service_status("", status).await;
    for name in SERVICE_NAMES {
        reporter.set_service_status(*name, status).await;
    }
}

/// Says once at start when searches and JSON filters cannot use their
/// indexes (their operators are not LEAKPROOF: deploy/postgres/superuser.sql).
async fn warn_if_search_operators_are_not_indexable(store: &Store) {
    let scope = crate::store::Scope {
        tenant: uuid::Uuid::nil(),
        actor: "startup".into(),
        admin: true,
        request_id: None,
        trace_id: None,
        timeout: Duration::from_secs(5),
        deadline: None,
        rpc: None,
        lsn: None,
    };
    let check = async {
        let tx = store.begin_read(&scope).await?;
        let ok = crate::store::search::search_operators_indexable(&tx).await?;
        tx.commit().await?;
        Ok::<_, Error>(ok)
    };
    match check.await {
        Ok(true) => {}
        Ok(false) => tracing::warn!(
            "similarity_op, ts_match_vq, jsonb_contains or jsonb_exists is not LEAKPROOF: under \
             row-level security searches and JSON filters cannot use their GIN indexes and scan every \
             row; run deploy/postgres/superuser.sql as a superuser"
        ),
        Err(e) => tracing::debug!(error = %e, "could not check the search operators"),
    }
}

/// Brings the schema up to date (or checks it is), retrying until the
/// database answers, then probes it forever, flipping health accordingly.
async fn health_loop(
    store: Store,
    args: ServeArgs,
    reporter: HealthReporter,
    schema_ready: tokio::sync::watch::Sender<bool>,
) {
    let latest = migrate::latest_version();
    loop {
        let ready = if args.no_migrate {
            matches!(migrate::applied_version(&store).await, Ok(v) if v >= latest)
        } else {
            let url = args.db.migration_url().0.clone();
            match migrate::run(&url, Duration::from_millis(args.db.connect_timeout_ms)).await {
                Ok(_) => true,
                Err(e) => {
                    tracing::warn!(error = %e, "migrations not applied yet; retrying");
                    false
                }
            }
        };
        if ready {
            break;
        }
        tokio::time::sleep(HEALTH_EVERY).await;
    }
    tracing::info!(schema_version = latest, "schema ready");
    schema_ready.send_replace(true);
    warn_if_search_operators_are_not_indexable(&store).await;
    let mut serving = None;
    loop {
        let up = store.ping(Duration::from_secs(2)).await;
        if serving != Some(up) {
            if up {
                tracing::info!("database reachable: SERVING");
            } else {
                tracing::warn!("database unreachable: NOT_SERVING");
            }
            set_health(&reporter, if up { ServingStatus::Serving } else { ServingStatus::NotServing }).await;
            serving = Some(up);
        }
        tokio::time::sleep(HEALTH_EVERY).await;
    }
}

/// Keeps the monthly partitions of the logs ahead and applies retention
/// (`store::partitions`), once the schema is ready and then every hour, as
/// the migration role (the service's role may not create tables). A failed
/// run is retried at the next one; inserts meanwhile land in the default
/// partition.
async fn partition_maintenance(args: ServeArgs, mut schema_ready: tokio::sync::watch::Receiver<bool>) {
    if schema_ready.wait_for(|ready| *ready).await.is_err() {
        return;
    }
    let policy = partitions::Policy {
        months_ahead: args.partitions.partition_months_ahead,
        audit_retention_months: args.partitions.audit_retention_months,
        campaign_event_retention_months: args.partitions.campaign_event_retention_months,
    };
    let url = args.db.migration_url().0.clone();
    let connect_timeout = Duration::from_millis(args.db.connect_timeout_ms);
    let mut every = tokio::time::interval(partitions::EVERY);
    loop {
        every.tick().await;
        match partitions::maintain(&url, connect_timeout, &policy).await {
            Ok(r) => {
                if !r.created.is_empty() {
                    tracing::info!(created = ?r.created, "partitions created");
                }
                for d in &r.dropped {
                    tracing::info!(
                        table = d.table,
                        partition = %d.partition,
                        rows = d.rows,
                        "partition dropped by retention (audited)"
                    );
                }
            }
            Err(e) => tracing::warn!(error = %e, "partition maintenance failed; retrying in an hour"),
        }
    }
}

/// The health name of the shared cache: SERVING while Redis is in use,
/// NOT_SERVING while its breaker is open (calls are served from PostgreSQL
/// then, so the server's own health does not change), SERVICE_UNKNOWN
/// without --redis-url.
pub const CACHE_HEALTH: &str = "cache";

async fn cache_health(cache: Option<Arc<RedisCache>>, reporter: HealthReporter) {
    let Some(cache) = cache else { return };
    let mut last = None;
    loop {
        let up = cache.state() == CacheState::Up;
        if last != Some(up) {
            let status = if up { ServingStatus::Serving } else { ServingStatus::NotServing };
            reporter.set_service_status(CACHE_HEALTH, status).await;
            last = Some(up);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The health name of the read replica: SERVING while reads may go there
/// (it answers its checks and lags by at most --replica-max-lag-ms),
/// NOT_SERVING otherwise (reads go to the primary then, so the server's own
/// health does not change), SERVICE_UNKNOWN without --replica-url.
pub const REPLICA_HEALTH: &str = "replica";

async fn replica_health(store: Store, reporter: HealthReporter) {
    let mut last = None;
    loop {
        let Some(status) = store.replica_status() else { return };
        if last != Some(status.usable) {
            if status.usable {
                tracing::info!(lag_ms = status.lag.as_millis() as u64, "read replica usable: SERVING");
            } else {
                tracing::warn!(
                    up = status.up,
                    lag_ms = status.lag.as_millis() as u64,
                    "read replica not usable (down or lagging): NOT_SERVING; reads go to the primary"
                );
            }
            let s = if status.usable { ServingStatus::Serving } else { ServingStatus::NotServing };
            reporter.set_service_status(REPLICA_HEALTH, s).await;
            last = Some(status.usable);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Binds, starts background tasks and serves until `shutdown`.
pub async fn start(args: ServeArgs) -> Result<Running, Error> {
    // Every TLS configuration (gRPC, PostgreSQL, Redis) uses ring.
    crate::store::tls::install_crypto_provider();
    let mode = auth_mode(&args)?;
    if !args.no_migrate {
        args.db.direct_migration_url().map_err(Error::Startup)?;
    }
    let tls = server_tls(&args.tls)?;
    let store = Store::new(&args.db, Duration::from_millis(args.slow_query_ms))?;
    let metrics = Arc::new(Metrics::new(&store)?);
    let cache = match args.redis_url.as_ref().filter(|u| !u.expose().is_empty()) {
        Some(url) => Some(RedisCache::new(url.expose(), &args.cache, metrics.cache.clone())?),
        None => None,
    };
    let svc = match &cache {
        Some(c) => Service::new(store.clone()).with_cache(c.clone()),
        None => Service::new(store.clone()),
    };
    let listener = TcpListener::bind(args.listen).await.map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::AddrInUse {
            "another process (another bi-data?) holds it: stop it or choose another --listen / LISTEN_ADDR"
        } else {
            "check --listen / LISTEN_ADDR"
        };
        Error::Startup(format!("cannot listen on {}: {e}; {hint}", args.listen))
    })?;
    let addr = listener.local_addr().map_err(|e| Error::Internal(e.to_string()))?;
    let (metrics_listener, metrics_addr) = metrics::bind(args.metrics_listen).await?;
    let metrics_task = tokio::spawn(metrics::serve(metrics_listener, metrics.clone()));

    let (reporter, health_service) = tonic_health::server::health_reporter();
    set_health(&reporter, ServingStatus::NotServing).await;
    // Tasks that need the schema (the idempotency purge) wait for it.
    let (schema_ready, mut schema_ready_rx) = tokio::sync::watch::channel(false);
    let health_task = tokio::spawn(health_loop(store.clone(), args.clone(), reporter.clone(), schema_ready));
    let cache_health_task = tokio::spawn(cache_health(cache.clone(), reporter.clone()));
    let replica_watch =
        store.watch_replica(Duration::from_millis(args.db.connect_timeout_ms)).map(tokio::spawn);
    let replica_health_task = tokio::spawn(replica_health(store.clone(), reporter.clone()));
    let partition_ready = schema_ready_rx.clone();
    let purge_store = store.clone();
    let purge_task = tokio::spawn(async move {
        if schema_ready_rx.wait_for(|ready| *ready).await.is_err() {
            return; // the health loop ended: the server is stopping
        }
        let mut every = tokio::time::interval(idempotency::PURGE_EVERY);
        loop {
            every.tick().await;
            match idempotency::purge_expired(&purge_store).await {
                Ok(n) if n > 0 => tracing::info!(purged = n, "expired idempotency keys removed"),
                Ok(_) => {}
                Err(e) => tracing::debug!(error = %e, "idempotency purge skipped"),
            }
        }
    });

    let partition_task = tokio::spawn(partition_maintenance(args.clone(), partition_ready));

    let reflection = || {
        // Advertise exactly: our services, health, and both reflection versions.
        tonic_reflection::server::Builder::configure()
            .include_reflection_service(false)
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection().build_v1().map_err(|e| Error::Internal(e.to_string()))?;
    let reflection_v1alpha = reflection().build_v1alpha().map_err(|e| Error::Internal(e.to_string()))?;
    let max = args.max_message_bytes;
    let jobs = JobServiceServer::new(JobApi::new(svc.clone()))
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
    let companies = CompanyServiceServer::new(CompanyApi::new(svc.clone()))
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
    let outreach = OutreachServiceServer::new(OutreachApi::new(svc.clone()))
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
    let documents = DocumentServiceServer::new(DocumentApi::new(svc.clone()))
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
    let analytics = AnalyticsServiceServer::new(AnalyticsApi::new(svc.clone()))
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
    let audit = AuditServiceServer::new(AuditApi::new(svc.clone()))
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);

    let in_flight = InFlight::default();
    let shutdown = Arc::new(Notify::new());
    let methods = KnownMethods::from_descriptor_sets(&[
        pb::FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
    ]);
    // Outermost first: the call's span and metrics cover auth and the
    // handler; RecordCaller sits after auth to put the tenant on the span.
    let mut builder = Server::builder();
    if let Some(tls) = tls {
        builder = builder
            .tls_config(tls)
            .map_err(|e| Error::Startup(format!("--tls-cert / --tls-key / --tls-client-ca: {e}")))?;
    }
    // Probes that cannot speak TLS (Kubernetes' gRPC probes) ask this one.
    let (health_addr, health_only_task) = match args.tls.health_listen {
        Some(listen) => {
            let l = TcpListener::bind(listen)
                .await
                .map_err(|e| Error::Startup(format!("cannot listen on {listen} (--health-listen): {e}")))?;
            let bound = l.local_addr().map_err(|e| Error::Internal(e.to_string()))?;
            let health = health_service.clone();
            let task = tokio::spawn(async move {
                let r = Server::builder()
                    .add_service(health)
                    .serve_with_incoming(TcpListenerStream::new(l))
                    .await;
                if let Err(e) = r {
                    tracing::error!(error = %e, "health listener stopped");
                }
            });
            (Some(bound), Some(task))
        }
        None => (None, None),
    };
    let router = builder
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        // Per connection: at most 256 streams at once (HTTP/2 makes the
        // client wait for more), and as many calls in progress.
        .max_concurrent_streams(Some(256))
        .concurrency_limit_per_connection(256)
        .layer(RpcLayer::new(methods, metrics.rpc.clone()))
        .layer(Conventions)
        .layer(Admission::new(args.max_concurrent_calls(), Duration::from_millis(args.admission_wait_ms)))
        .layer(in_flight.clone())
        .layer(AuthLayer::new(mode))
        .layer(RecordCaller)
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(jobs)
        .add_service(companies)
        .add_service(outreach)
        .add_service(documents)
        .add_service(analytics)
        .add_service(audit);

    let drain = args.drain_timeout();
    let grace = Duration::from_millis(args.shutdown_grace_ms);
    let signal = shutdown.clone();
    let stopping = Arc::new(Notify::new());
    let stopping_tx = stopping.clone();
    // TCP_NODELAY: tonic sets it only on listeners it binds itself. Without
    // it, a small response waits for the client's delayed ACK (~40 ms).
    let incoming = TcpListenerStream::new(listener).map(|conn| {
        let conn = conn?;
        conn.set_nodelay(true)?;
        Ok::<_, std::io::Error>(conn)
    });
    let task_store = store.clone();
    let health_abort = health_task.abort_handle();
    let task = tokio::spawn(async move {
        let store = task_store;
        let serve = router.serve_with_incoming_shutdown(incoming, async move {
            signal.notified().await;
            stopping_tx.notify_one();
            // NOT_SERVING already; new calls are still served meanwhile.
            tokio::time::sleep(grace).await;
        });
        tokio::pin!(serve);
        let result = tokio::select! {
            r = &mut serve => r.map_err(|e| Error::Internal(format!("server: {e}"))),
            () = async {
                stopping.notified().await;
                health_abort.abort();
                set_health(&reporter, ServingStatus::NotServing).await;
                tracing::info!(
                    grace_ms = grace.as_millis() as u64,
                    drain_ms = drain.as_millis() as u64,
                    "shutting down: NOT_SERVING; accepting calls for the grace period, then draining"
                );
                tokio::time::sleep(grace).await;
                if tokio::time::timeout(drain, in_flight.wait_idle()).await.is_err() {
                    tracing::warn!("drain timeout reached; closing with calls still in flight");
                }
            } => {
                // No call in flight: the graceful shutdown flushes the last
                // responses (a call counts as done when its handler answers,
                // before its body is written) and closes connections as
                // their streams end. Bounded: a health Watch never ends.
                match tokio::time::timeout(FLUSH_WITHIN, &mut serve).await {
                    Ok(r) => r.map_err(|e| Error::Internal(format!("server: {e}"))),
                    Err(_) => Ok(()),
                }
            }
        };
        // The serve branch may finish first: stop the background tasks either way.
        health_task.abort();
        cache_health_task.abort();
        replica_health_task.abort();
        if let Some(t) = &replica_watch {
            t.abort();
        }
        purge_task.abort();
        partition_task.abort();
        metrics_task.abort();
        if let Some(t) = health_only_task {
            t.abort();
        }
        store.close();
        tracing::info!("server stopped");
        result
    });
    tracing::info!(%addr, %metrics_addr, tls = args.tls.tls_cert.is_some(), mtls = args.tls.tls_client_ca.is_some(), health_listen = ?health_addr, "bi-data listening");
    Ok(Running { addr, metrics_addr, health_addr, store, cache, shutdown, task })
}
