//! One SERVER span and one set of RPC metrics per gRPC call, as the
//! outermost tower layer of the server.
//!
//! The span is named after the method (`bi.data.v1.JobService/GetJob`),
//! carries the `rpc.*` attributes, the caller's `x-request-id` and, once
//! authentication has run ([`RecordCaller`]), `tenant.id`. Its parent is the
//! caller's W3C `traceparent`/`tracestate`. It ends, and the duration is
//! observed, when the response body ends (so a stream is one span), with the
//! `grpc-status` read from the headers (errors, trailers-only) or trailers.
//! The method's name also travels to handlers as an [`RpcName`] request
//! extension (`api::context` puts it in the store's `Scope`, for the
//! slow-query log).

use std::{
    collections::HashMap,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Instant,
};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use opentelemetry::{
    propagation::{Extractor, TextMapPropagator},
    trace::TraceContextExt,
};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use prometheus::{Histogram, IntGauge};
use prost::Message;
use tracing::{Instrument, Span, field::Empty};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::{
    api::context::COMMIT_LSN_HEADER, auth::AuthContext, metrics::RpcMetrics, store::replica::CallLsn,
};

/// A method's names, resolved once at start from the descriptor sets.
#[derive(Debug)]
struct MethodInfo {
    /// `bi.data.v1.JobService/GetJob`: span name and log field.
    full: Arc<str>,
    service: String,
    method: String,
    /// Health and reflection are measured but not traced (probe noise).
    traced: bool,
}

/// The methods the server exposes. Unknown paths are measured as
/// `unknown`/`unknown`, so callers cannot grow metric label sets.
#[derive(Debug)]
pub struct KnownMethods {
    by_path: HashMap<String, Arc<MethodInfo>>,
    unknown: Arc<MethodInfo>,
}

impl KnownMethods {
    /// From encoded `FileDescriptorSet`s (those reflection serves).
    pub fn from_descriptor_sets(sets: &[&[u8]]) -> KnownMethods {
        let mut by_path = HashMap::new();
        for set in sets {
            let Ok(set) = prost_types::FileDescriptorSet::decode(*set) else {
                continue;
            };
            for file in set.file {
                let package = file.package.unwrap_or_default();
                for svc in file.service {
                    let service = match (package.as_str(), svc.name.as_deref().unwrap_or("")) {
                        ("", name) => name.to_owned(),
                        (pkg, name) => format!("{pkg}.{name}"),
                    };
                    let traced =
                        !(service.starts_with("grpc.health.") || service.starts_with("grpc.reflection."));
                    for m in svc.method {
                        let method = m.name.unwrap_or_default();
                        let full: Arc<str> = format!("{service}/{method}").into();
                        by_path.insert(
                            format!("/{full}"),
                            Arc::new(MethodInfo { full, service: service.clone(), method, traced }),
                        );
                    }
                }
            }
        }
        let unknown = Arc::new(MethodInfo {
            full: "unknown".into(),
            service: "unknown".into(),
            method: "unknown".into(),
            traced: true,
        });
        KnownMethods { by_path, unknown }
    }

    fn lookup(&self, path: &str) -> Arc<MethodInfo> {
        self.by_path.get(path).unwrap_or(&self.unknown).clone()
    }

    pub fn contains(&self, path: &str) -> bool {
        self.by_path.contains_key(path)
    }
}

/// The full name (`bi.data.v1.JobService/GetJob`) of the call a request is
/// for, as [`RpcLayer`] resolved it (`unknown` for paths not served).
#[derive(Clone, Debug)]
pub struct RpcName(pub Arc<str>);

/// Reads W3C headers from an HTTP/2 request.
struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// The gRPC code names used as the `code` metric label.
pub fn code_name(code: i32) -> &'static str {
    const NAMES: [&str; 17] = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];
    usize::try_from(code).ok().and_then(|i| NAMES.get(i)).copied().unwrap_or("UNKNOWN")
}

/// Codes that mark a SERVER span as failed (OpenTelemetry gRPC conventions:
/// the server's fault, not the caller's).
fn is_server_error(code: i32) -> bool {
    matches!(code, 2 | 4 | 12 | 13 | 14 | 15)
}

fn grpc_status(headers: &http::HeaderMap) -> Option<i32> {
    headers.get("grpc-status")?.to_str().ok()?.trim().parse().ok()
}

const CANCELLED: i32 = 1;
const UNKNOWN: i32 = 2;

/// The outermost layer: span, duration histogram, in-flight gauge.
#[derive(Clone)]
pub struct RpcLayer {
    methods: Arc<KnownMethods>,
    metrics: RpcMetrics,
}

impl RpcLayer {
    pub fn new(methods: KnownMethods, metrics: RpcMetrics) -> Self {
        RpcLayer { methods: Arc::new(methods), metrics }
    }
}

impl<S> tower::Layer<S> for RpcLayer {
    type Service = RpcService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RpcService { inner, layer: self.clone() }
    }
}

#[derive(Clone)]
pub struct RpcService<S> {
    inner: S,
    layer: RpcLayer,
}

/// One call being measured; finished once, when the response ends or is
/// dropped (the caller went away).
struct Call {
    info: Arc<MethodInfo>,
    span: Span,
    started: Instant,
    code: Option<i32>,
    in_flight: IntGauge,
    metrics: RpcMetrics,
    done: bool,
}

impl Call {
    fn finish(&mut self, fallback: i32) {
        if self.done {
            return;
        }
        self.done = true;
        let code = self.code.unwrap_or(fallback);
        self.span.record("rpc.grpc.status_code", code);
        if is_server_error(code) {
            self.span.record("otel.status_code", "ERROR");
        }
        let histogram: Histogram = self.metrics.duration.with_label_values(&[
            &self.info.service,
            &self.info.method,
            code_name(code),
        ]);
        histogram.observe(self.started.elapsed().as_secs_f64());
        self.in_flight.dec();
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        self.finish(CANCELLED);
    }
}

fn call_span<B>(info: &MethodInfo, req: &http::Request<B>, propagator: &TraceContextPropagator) -> Span {
    if !info.traced {
        return Span::none();
    }
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|s| !s.is_empty() && s.len() <= 64);
    let span = tracing::info_span!(
        "grpc",
        otel.name = %info.full,
        otel.kind = "server",
        otel.status_code = Empty,
        rpc.system = "grpc",
        rpc.service = %info.service,
        rpc.method = %info.method,
        rpc.grpc.status_code = Empty,
        tenant.id = Empty,
        request.id = request_id,
    );
    let parent = propagator.extract(&HeaderExtractor(req.headers()));
    if parent.span().span_context().is_valid() {
        // Fails only without an OpenTelemetry layer; then there is no trace.
        let _ = span.set_parent(parent);
    }
    span
}

type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send>>;

impl<S, B> tower::Service<http::Request<B>> for RpcService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        static PROPAGATOR: std::sync::LazyLock<TraceContextPropagator> =
            std::sync::LazyLock::new(TraceContextPropagator::new);
        let info = self.layer.methods.lookup(req.uri().path());
        let span = call_span(&info, &req, &PROPAGATOR);
        let in_flight = self.layer.metrics.in_flight.with_label_values(&[&info.service, &info.method]);
        in_flight.inc();
        let mut call = Call {
            info: info.clone(),
            span: span.clone(),
            started: Instant::now(),
            code: None,
            in_flight,
            metrics: self.layer.metrics.clone(),
            done: false,
        };
        req.extensions_mut().insert(RpcName(info.full.clone()));
        // The call's WAL positions: the handler's writes record their commit
        // position here, answered in `x-bi-commit-lsn` (unary calls: the
        // handler is done when the response head is ready).
        let lsn = Arc::new(CallLsn::default());
        req.extensions_mut().insert(lsn.clone());
        // Inner layers (auth, RecordCaller) run inside the span.
        let fut = span.in_scope(|| self.inner.call(req));
        Box::pin(async move {
            match fut.instrument(span).await {
                Ok(res) => {
                    call.code = grpc_status(res.headers());
                    let (mut parts, body) = res.into_parts();
                    if let Some(commit) = lsn.commit()
                        && let Ok(v) = http::HeaderValue::from_str(&commit.to_string())
                    {
                        parts.headers.insert(COMMIT_LSN_HEADER, v);
                    }
                    let span = call.span.clone();
                    let body = tonic::body::Body::new(CallBody { inner: body, call, span });
                    Ok(http::Response::from_parts(parts, body))
                }
                Err(e) => {
                    call.finish(UNKNOWN);
                    Err(e)
                }
            }
        })
    }
}

/// The response body, finishing the call at its end. Polled inside the
/// call's span, so work done while streaming nests under it.
struct CallBody {
    inner: tonic::body::Body,
    call: Call,
    span: Span,
}

impl HttpBody for CallBody {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let _entered = this.span.enter();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(code) = frame.trailers_ref().and_then(grpc_status) {
                    this.call.code = Some(code);
                }
                if this.inner.is_end_stream() {
                    this.call.finish(UNKNOWN);
                }
            }
            Poll::Ready(Some(Err(_))) => this.call.finish(UNKNOWN),
            Poll::Ready(None) => this.call.finish(UNKNOWN),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Records the authenticated tenant on the call's span. Sits inside the
/// auth layer, which put the [`AuthContext`] in the request's extensions;
/// runs within the span [`RpcLayer`] entered.
#[derive(Clone, Default)]
pub struct RecordCaller;

impl<S> tower::Layer<S> for RecordCaller {
    type Service = RecordCallerService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RecordCallerService { inner }
    }
}

#[derive(Clone)]
pub struct RecordCallerService<S> {
    inner: S,
}

impl<S, B> tower::Service<http::Request<B>> for RecordCallerService<S>
where
    S: tower::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if let Some(auth) = req.extensions().get::<AuthContext>() {
            Span::current().record("tenant.id", tracing::field::display(auth.tenant_id));
        }
        self.inner.call(req)
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use http_body_util::BodyExt;
    use tokio::sync::mpsc;

    use super::*;

    /// A response body fed by the test, frame by frame.
    struct Fed(mpsc::Receiver<Frame<Bytes>>);

    impl HttpBody for Fed {
        type Data = Bytes;
        type Error = tonic::Status;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
            self.0.poll_recv(cx).map(|f| f.map(Ok))
        }
    }

    /// An inner service answering with the next prepared body.
    #[derive(Clone)]
    struct Answer(Arc<std::sync::Mutex<Option<mpsc::Receiver<Frame<Bytes>>>>>);

    impl tower::Service<http::Request<()>> for Answer {
        type Response = http::Response<tonic::body::Body>;
        type Error = Infallible;
        type Future = std::future::Ready<Result<Self::Response, Infallible>>;
        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }
        fn call(&mut self, _: http::Request<()>) -> Self::Future {
            let rx = self.0.lock().unwrap().take().unwrap();
            std::future::ready(Ok(http::Response::new(tonic::body::Body::new(Fed(rx)))))
        }
    }

    fn setup() -> (RpcService<Answer>, RpcMetrics, mpsc::Sender<Frame<Bytes>>) {
        let metrics = RpcMetrics::default();
        let (tx, rx) = mpsc::channel(4);
        let layer = RpcLayer::new(
            KnownMethods::from_descriptor_sets(&[crate::pb::FILE_DESCRIPTOR_SET]),
            metrics.clone(),
        );
        let svc = tower::Layer::layer(&layer, Answer(Arc::new(std::sync::Mutex::new(Some(rx)))));
        (svc, metrics, tx)
    }

    fn count(m: &RpcMetrics, code: &str) -> u64 {
        m.duration.with_label_values(&["bi.data.v1.JobService", "ListJobs", code]).get_sample_count()
    }

    fn in_flight(m: &RpcMetrics) -> i64 {
        m.in_flight.with_label_values(&["bi.data.v1.JobService", "ListJobs"]).get()
    }

    fn request() -> http::Request<()> {
        http::Request::builder().uri("/bi.data.v1.JobService/ListJobs").body(()).unwrap()
    }

    #[tokio::test]
    async fn a_stream_is_one_call_until_its_trailers() {
        use tower::Service;
        let (mut svc, m, tx) = setup();
        let res = svc.call(request()).await.unwrap();
        let mut body = res.into_body();
        assert_eq!((in_flight(&m), count(&m, "OK")), (1, 0), "headers sent, stream still open");
        tx.send(Frame::data(Bytes::from_static(b"row"))).await.unwrap();
        assert!(body.frame().await.unwrap().unwrap().is_data());
        assert_eq!((in_flight(&m), count(&m, "OK")), (1, 0));
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", "0".parse().unwrap());
        tx.send(Frame::trailers(trailers)).await.unwrap();
        drop(tx);
        assert!(body.frame().await.unwrap().unwrap().is_trailers());
        assert!(body.frame().await.is_none());
        assert_eq!((in_flight(&m), count(&m, "OK")), (0, 1), "ended with the trailers' status");
    }

    #[tokio::test]
    async fn a_caller_leaving_mid_stream_is_cancelled() {
        use tower::Service;
        let (mut svc, m, _tx) = setup();
        let res = svc.call(request()).await.unwrap();
        drop(res);
        assert_eq!((in_flight(&m), count(&m, "CANCELLED"), count(&m, "OK")), (0, 1, 0));
    }

    #[test]
    fn methods_from_descriptors() {
        let m = KnownMethods::from_descriptor_sets(&[
            crate::pb::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
        ]);
        let get = m.lookup("/bi.data.v1.JobService/GetJob");
        assert_eq!(&*get.full, "bi.data.v1.JobService/GetJob");
        assert_eq!(
            (get.service.as_str(), get.method.as_str(), get.traced),
            ("bi.data.v1.JobService", "GetJob", true)
        );
        assert!(!m.lookup("/grpc.health.v1.Health/Check").traced);
        assert_eq!(&*m.lookup("/x.Y/Z").full, "unknown");
    }

    #[test]
    fn code_names() {
        assert_eq!(code_name(0), "OK");
        assert_eq!(code_name(5), "NOT_FOUND");
        assert_eq!(code_name(16), "UNAUTHENTICATED");
        assert_eq!(code_name(99), "UNKNOWN");
        assert!(is_server_error(13) && !is_server_error(5));
    }
}
