//! Prometheus metrics at `--metrics-listen` `/metrics`.
//!
//! Why the `prometheus` crate (default features off: no protobuf, no
//! process/push features) rather than OpenTelemetry metrics or `metrics` +
//! `metrics-exporter-prometheus`: each server gets its own [`Registry`], so
//! servers started in one process (the integration tests) never share counts,
//! with no global recorder to install; it renders the text format itself, has
//! few dependencies, and pool gauges can be sampled at scrape time by a
//! [`Collector`]. The HTTP side is a few lines of hyper 1, already in the build
//! through tonic.
//!
//! Metric names (all prefixed `bi_data_`) are listed in the README.

use std::{convert::Infallible, net::SocketAddr, sync::Arc, time::Duration};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode, body::Incoming, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus::{
    Encoder, Gauge, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
    core::{Collector, Desc},
    proto::MetricFamily,
};
use tokio::net::TcpListener;

use crate::{error::Error, store::Store};

/// Seconds buckets for RPC durations (1 ms … 60 s).
const RPC_BUCKETS: &[f64] =
    &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

/// Instruments of the RPC layer (`api::middleware::rpc`).
#[derive(Clone)]
pub struct RpcMetrics {
    /// Whole call, until the last byte of the response (streams included).
    pub duration: HistogramVec,
    pub in_flight: IntGaugeVec,
}

impl Default for RpcMetrics {
    fn default() -> Self {
        RpcMetrics {
            duration: HistogramVec::new(
                HistogramOpts::new(
                    "bi_data_rpc_server_duration_seconds",
                    "Duration of gRPC calls until the end of the response, by service, method and status code.",
                )
                .buckets(RPC_BUCKETS.to_vec()),
                &["service", "method", "code"],
            )
            .expect("valid metric"),
            in_flight: IntGaugeVec::new(
                Opts::new("bi_data_rpc_server_in_flight", "gRPC calls in progress, by service and method."),
                &["service", "method"],
            )
            .expect("valid metric"),
        }
    }
}

/// Seconds buckets for cache commands (50 µs … 1 s).
const CACHE_BUCKETS: &[f64] =
    &[0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0];

/// Instruments of the shared cache (`crate::cache`).
#[derive(Clone)]
pub struct CacheMetrics {
    /// Look-ups of records and query results in Redis by result: `hit`,
    /// `miss`, `error` (a failed command, a timeout, or the breaker open).
    pub requests: IntCounterVec,
    /// Each Redis command, by operation.
    pub duration: HistogramVec,
    /// Near-cache look-ups by result (`hit`, `miss`).
    pub near: IntCounterVec,
    /// Entries in the near cache.
    pub near_entries: IntGauge,
    /// 1 while the circuit breaker is open (Redis not used), else 0.
    pub breaker_open: IntGauge,
    /// Computations of a query result, and callers that waited for one
    /// running in this process instead (single flight).
    pub flights: IntCounterVec,
}

impl Default for CacheMetrics {
    fn default() -> Self {
        CacheMetrics {
            requests: IntCounterVec::new(
                Opts::new(
                    "bi_data_cache_requests_total",
                    "Shared-cache look-ups by result (hit, miss, error).",
                ),
                &["result"],
            )
            .expect("valid metric"),
            duration: HistogramVec::new(
                HistogramOpts::new(
                    "bi_data_cache_command_duration_seconds",
                    "Duration of Redis commands (errors and timeouts included), by operation.",
                )
                .buckets(CACHE_BUCKETS.to_vec()),
                &["op"],
            )
            .expect("valid metric"),
            near: IntCounterVec::new(
                Opts::new("bi_data_cache_near_requests_total", "Near-cache look-ups by result (hit, miss)."),
                &["result"],
            )
            .expect("valid metric"),
            near_entries: IntGauge::new("bi_data_cache_near_entries", "Records held by the near cache.")
                .expect("valid metric"),
            breaker_open: IntGauge::new(
                "bi_data_cache_breaker_open",
                "1 while the cache's circuit breaker is open (Redis not used), else 0.",
            )
            .expect("valid metric"),
            flights: IntCounterVec::new(
                Opts::new(
                    "bi_data_cache_query_flights_total",
                    "Query results computed after a miss (role=leader) and callers that waited for that \
                     computation instead of running their own (role=waiter).",
                ),
                &["role"],
            )
            .expect("valid metric"),
        }
    }
}

impl CacheMetrics {
    fn collectors(&self) -> Vec<Box<dyn Collector>> {
        vec![
            Box::new(self.requests.clone()),
            Box::new(self.duration.clone()),
            Box::new(self.near.clone()),
            Box::new(self.near_entries.clone()),
            Box::new(self.breaker_open.clone()),
            Box::new(self.flights.clone()),
        ]
    }
}

/// Pool gauges read from deadpool when scraped, so they are never stale.
struct PoolCollector {
    store: Store,
    size: IntGaugeVec,
    max: IntGaugeVec,
    available: IntGaugeVec,
    waiting: IntGaugeVec,
    replica_up: IntGauge,
    replica_usable: IntGauge,
    replica_lag: Gauge,
}

impl PoolCollector {
    fn new(store: Store) -> PoolCollector {
        let gauge = |name: &str, help: &str| {
            IntGaugeVec::new(Opts::new(name, help), &["pool"]).expect("valid metric")
        };
        PoolCollector {
            store,
            size: gauge("bi_data_db_pool_connections", "Open connections in the pool."),
            max: gauge("bi_data_db_pool_max_connections", "Largest allowed pool size."),
            available: gauge("bi_data_db_pool_available", "Idle connections ready for use."),
            waiting: gauge("bi_data_db_pool_waiting", "Calls waiting for a connection."),
            replica_up: IntGauge::new(
                "bi_data_db_replica_up",
                "1 while the read replica answers its checks (absent without --replica-url).",
            )
            .expect("valid metric"),
            replica_usable: IntGauge::new(
                "bi_data_db_replica_usable",
                "1 while reads may go to the replica: up and within --replica-max-lag-ms.",
            )
            .expect("valid metric"),
            replica_lag: Gauge::new(
                "bi_data_db_replica_lag_seconds",
                "Replication lag at the last check (time since the primary passed the replay position).",
            )
            .expect("valid metric"),
        }
    }
}

impl Collector for PoolCollector {
    fn desc(&self) -> Vec<&Desc> {
        let mut all: Vec<&Desc> = [&self.size, &self.max, &self.available, &self.waiting]
            .into_iter()
            .flat_map(|g| g.desc())
            .collect();
        all.extend(self.replica_up.desc());
        all.extend(self.replica_usable.desc());
        all.extend(self.replica_lag.desc());
        all
    }

    fn collect(&self) -> Vec<MetricFamily> {
        for (pool, s) in self.store.pool_status() {
            let as_i64 = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
            self.size.with_label_values(&[pool]).set(as_i64(s.size));
            self.max.with_label_values(&[pool]).set(as_i64(s.max_size));
            self.available.with_label_values(&[pool]).set(as_i64(s.available));
            self.waiting.with_label_values(&[pool]).set(as_i64(s.waiting));
        }
        let mut all: Vec<MetricFamily> = [&self.size, &self.max, &self.available, &self.waiting]
            .into_iter()
            .flat_map(|g| g.collect())
            .collect();
        if let Some(r) = self.store.replica_status() {
            self.replica_up.set(i64::from(r.up));
            self.replica_usable.set(i64::from(r.usable));
            self.replica_lag.set(r.lag.as_secs_f64());
            all.extend(self.replica_up.collect());
            all.extend(self.replica_usable.collect());
            all.extend(self.replica_lag.collect());
        }
        all
    }
}

/// One server's metrics: its registry and the instruments others update.
pub struct Metrics {
    registry: Registry,
    pub rpc: RpcMetrics,
    pub cache: CacheMetrics,
}

impl Metrics {
    /// Registers everything: RPC, store (statements, pool wait), pool
    /// gauges, cache and build info.
    pub fn new(store: &Store) -> Result<Metrics, Error> {
        let registry = Registry::new();
        let rpc = RpcMetrics::default();
        let cache = CacheMetrics::default();
        let build = IntGauge::with_opts(
            Opts::new("bi_data_build_info", "Build of the running server (always 1).")
                .const_label("version", env!("CARGO_PKG_VERSION")),
        )
        .expect("valid metric");
        build.set(1);
        let mut collectors: Vec<Box<dyn Collector>> = vec![
            Box::new(rpc.duration.clone()),
            Box::new(rpc.in_flight.clone()),
            Box::new(build),
            Box::new(PoolCollector::new(store.clone())),
        ];
        collectors.extend(cache.collectors());
        collectors.extend(store.metrics().collectors());
        for c in collectors {
            registry.register(c).map_err(|e| Error::Internal(format!("metrics: {e}")))?;
        }
        Ok(Metrics { registry, rpc, cache })
    }

    /// The Prometheus text exposition of everything registered.
    pub fn render(&self) -> String {
        let mut out = Vec::with_capacity(16 * 1024);
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::warn!(error = %e, "metrics encoding failed");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

fn respond(metrics: &Metrics, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, content_type: &'static str, body: Bytes| {
        let mut r = Response::new(Full::new(body));
        *r.status_mut() = status;
        r.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static(content_type));
        r
    };
    match (req.method(), req.uri().path()) {
        (&Method::GET | &Method::HEAD, "/metrics") => {
            reply(StatusCode::OK, prometheus::TEXT_FORMAT, Bytes::from(metrics.render()))
        }
        (_, "/metrics") => {
            reply(StatusCode::METHOD_NOT_ALLOWED, "text/plain", Bytes::from_static(b"GET only\n"))
        }
        _ => reply(StatusCode::NOT_FOUND, "text/plain", Bytes::from_static(b"see /metrics\n")),
    }
}

/// Binds the metrics listener (port 0 allowed) before the server starts.
pub async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), Error> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| {
            Error::Startup(format!(
                "cannot listen for metrics on {addr}: {e}; choose another --metrics-listen / METRICS_ADDR (port 0: any)"
            ))
        })?;
    let bound = listener.local_addr().map_err(|e| Error::Internal(e.to_string()))?;
    Ok((listener, bound))
}

/// Serves `/metrics` over HTTP/1.1 until the task is aborted.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::debug!(error = %e, "metrics accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                let res = respond(&metrics, &req);
                async move { Ok::<_, Infallible>(res) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), svc);
            // Scrapers keep connections alive; bound an idle one.
            let _ = tokio::time::timeout(Duration::from_secs(300), conn).await;
        });
    }
}
