//! An in-test OTLP receiver (the collector's `TraceService`, from
//! `opentelemetry-proto`) and the test process's global telemetry.
//!
//! The tracing subscriber is global and tests run in parallel in one
//! process, so it is installed once, exporting to one receiver that runs on
//! its own thread and runtime (the exporter's gRPC channel lives there too,
//! so it outlives every test's runtime). Tests find their own spans by the
//! trace id of the `traceparent` they sent.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, OnceLock},
    time::{Duration, Instant},
};

use bi_data::telemetry::{LogFormat, Telemetry};
use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
    common::v1::{AnyValue, KeyValue, any_value::Value},
};
use tonic::{Request, Response, Status};

/// A received span, flattened for assertions.
#[derive(Clone, Debug)]
pub struct RSpan {
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: String,
    pub trace_state: String,
    pub name: String,
    /// OTLP SpanKind: 2 server, 3 client.
    pub kind: i32,
    pub attrs: HashMap<String, String>,
    /// (name, attributes)
    pub events: Vec<(String, HashMap<String, String>)>,
    pub service_name: String,
    /// Everything as text, to search for values that must not be there.
    pub dump: String,
}

fn text(v: &Option<AnyValue>) -> String {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn attrs(kvs: &[KeyValue]) -> HashMap<String, String> {
    kvs.iter().map(|kv| (kv.key.clone(), text(&kv.value))).collect()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(Clone, Default)]
pub struct Receiver {
    spans: Arc<Mutex<Vec<RSpan>>>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        req: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let mut got = Vec::new();
        for rs in req.into_inner().resource_spans {
            let resource = rs.resource.map(|r| attrs(&r.attributes)).unwrap_or_default();
            let service_name = resource.get("service.name").cloned().unwrap_or_default();
            for ss in rs.scope_spans {
                for s in ss.spans {
                    got.push(RSpan {
                        trace_id: hex(&s.trace_id),
                        span_id: hex(&s.span_id),
                        parent_span_id: hex(&s.parent_span_id),
                        trace_state: s.trace_state.clone(),
                        name: s.name.clone(),
                        kind: s.kind,
                        attrs: attrs(&s.attributes),
                        events: s.events.iter().map(|e| (e.name.clone(), attrs(&e.attributes))).collect(),
                        service_name: service_name.clone(),
                        dump: format!("{s:?}"),
                    });
                }
            }
        }
        self.spans.lock().unwrap().extend(got);
        Ok(Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

impl Receiver {
    pub fn spans_of(&self, trace_id: &str) -> Vec<RSpan> {
        self.spans.lock().unwrap().iter().filter(|s| s.trace_id == trace_id).cloned().collect()
    }
}

pub struct TestTelemetry {
    pub receiver: Receiver,
    pub telemetry: Telemetry,
}

impl TestTelemetry {
    /// Flushes the batch processor until `done` holds for the spans of
    /// `trace_id` (spans end when responses end, slightly after the client
    /// has its answer).
    pub async fn wait_for(&'static self, trace_id: &str, done: impl Fn(&[RSpan]) -> bool) -> Vec<RSpan> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            tokio::task::spawn_blocking(|| self.telemetry.force_flush()).await.unwrap();
            let spans = self.receiver.spans_of(trace_id);
            if done(&spans) {
                return spans;
            }
            assert!(Instant::now() < deadline, "spans of {trace_id} incomplete: {spans:#?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Starts the receiver and installs the global subscriber, once per process.
/// Logs go to the test output only when RUST_LOG is set.
pub fn global() -> &'static TestTelemetry {
    static ONCE: OnceLock<TestTelemetry> = OnceLock::new();
    ONCE.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("otlp-receiver".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                    let addr = listener.local_addr().unwrap();
                    let receiver = Receiver::default();
                    let telemetry = Telemetry::with_endpoint(&format!("http://{addr}")).unwrap();
                    tx.send((receiver.clone(), telemetry)).unwrap();
                    tonic::transport::Server::builder()
                        .add_service(TraceServiceServer::new(receiver))
                        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                        .await
                        .unwrap();
                });
            })
            .unwrap();
        let (receiver, telemetry) = rx.recv().unwrap();
        let logs = if std::env::var_os("RUST_LOG").is_some() {
            LogFormat::Text { ansi: false }
        } else {
            LogFormat::Off
        };
        telemetry.install(logs);
        TestTelemetry { receiver, telemetry }
    })
}
