//! Telemetry: logs, traces and the trace ids they share.
//!
//! - Logs: `RUST_LOG`-style filter (default `info`), JSON lines on stderr when
//!   `LOG_FORMAT=json`, human-readable otherwise (colours on a terminal).
//!   Every line written inside a call carries its `trace_id` and `span_id`.
//! - Traces: `tracing` spans become OpenTelemetry spans
//!   (`tracing-opentelemetry`), exported over OTLP/gRPC by a batch processor,
//!   configured by the standard `OTEL_*` variables. With no endpoint set,
//!   nothing is exported, but spans still get W3C ids (taken from an incoming
//!   `traceparent`), so logs and audit events carry trace ids anyway.
//!
//! The tower layer that opens one SERVER span per call is
//! `api::middleware::rpc`: nothing here names tonic or prost (the exporter's
//! gRPC channel is opentelemetry-otlp's own).
//!
//! [`init`] installs the global subscriber and returns a [`Telemetry`] guard;
//! `main` shuts it down (bounded) after the server has stopped.

use std::{fmt, io::IsTerminal, time::Duration};

use opentelemetry::{
    KeyValue,
    trace::{SpanId, TraceContextExt, TraceId, TracerProvider as _},
};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::{
    Resource,
    trace::{BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider},
};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::{
    EnvFilter, Layer,
    filter::Targets,
    fmt::{
        self as tfmt, FmtContext, FormatEvent, FormatFields,
        format::{JsonFields, Writer},
    },
    layer::SubscriberExt,
    registry::LookupSpan,
    util::SubscriberInitExt,
};

/// Span queue of the batch processor unless `OTEL_BSP_MAX_QUEUE_SIZE` says
/// otherwise: the SDK's 2048 overflows within a second at a few thousand
/// calls per second (each call is several spans); full means dropped.
const DEFAULT_QUEUE: usize = 16_384;

/// The tracer (instrumentation scope) name of our spans.
const TRACER: &str = "bi-data";
/// Spans of this crate at INFO and above become OpenTelemetry spans;
/// dependencies' spans (h2, hyper, tokio-postgres) would only be noise.
const OTEL_TARGET: &str = "bi_data";

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text {
        ansi: bool,
    },
    Json,
    /// No log output (spans are still produced for export).
    Off,
}

impl LogFormat {
    /// `LOG_FORMAT=json` → JSON lines; otherwise text, coloured on a terminal.
    pub fn from_env() -> LogFormat {
        if std::env::var("LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json")) {
            LogFormat::Json
        } else {
            LogFormat::Text { ansi: std::io::stderr().is_terminal() }
        }
    }
}

/// The trace pipeline. Hold it for the life of the process and call
/// [`Telemetry::shutdown`] at the end to flush what is queued.
pub struct Telemetry {
    provider: SdkTracerProvider,
    exporting: bool,
}

/// Whether the standard environment asks for trace export.
fn export_requested() -> bool {
    let set = |k: &str| std::env::var(k).is_ok_and(|v| !v.trim().is_empty());
    let disabled = std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.trim().eq_ignore_ascii_case("true"))
        || std::env::var("OTEL_TRACES_EXPORTER").is_ok_and(|v| v.trim().eq_ignore_ascii_case("none"));
    !disabled && (set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") || set("OTEL_EXPORTER_OTLP_ENDPOINT"))
}

/// `service.name` from `OTEL_SERVICE_NAME` / `OTEL_RESOURCE_ATTRIBUTES`, else
/// `bi-data`; `service.version` from the build.
fn resource() -> Resource {
    let named = std::env::var("OTEL_SERVICE_NAME").is_ok_and(|v| !v.is_empty())
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|v| v.contains("service.name="));
    let builder =
        Resource::builder().with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")));
    if named { builder } else { builder.with_service_name("bi-data") }.build()
}

impl Telemetry {
    /// From the standard variables: `OTEL_EXPORTER_OTLP_ENDPOINT` (or
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`; export is off when neither is
    /// set, or with `OTEL_SDK_DISABLED=true` / `OTEL_TRACES_EXPORTER=none`),
    /// `OTEL_SERVICE_NAME`, `OTEL_TRACES_SAMPLER` / `_ARG`, `OTEL_BSP_*`,
    /// `OTEL_EXPORTER_OTLP_TIMEOUT` / `_HEADERS`.
    ///
    /// Call inside a Tokio runtime that outlives the guard: the exporter's
    /// gRPC channel runs on it.
    pub fn from_env() -> Result<Telemetry, String> {
        if !export_requested() {
            return Ok(Telemetry::local());
        }
        Self::exporting_to(None)
    }

    /// Exports to `endpoint` (e.g. `http://127.0.0.1:4317`) whatever the
    /// environment says. Same runtime requirement as [`Telemetry::from_env`].
    pub fn with_endpoint(endpoint: &str) -> Result<Telemetry, String> {
        Self::exporting_to(Some(endpoint))
    }

    fn exporting_to(endpoint: Option<&str>) -> Result<Telemetry, String> {
        let mut builder = opentelemetry_otlp::SpanExporter::builder().with_tonic();
        if let Some(e) = endpoint {
            builder = builder.with_endpoint(e);
        }
        let exporter = builder.build().map_err(|e| format!("OTLP exporter: {e}"))?;
        // The batch processor runs on its own thread (OTEL_BSP_* tune it) and
        // exports early whenever a full batch is queued; the sampler comes
        // from OTEL_TRACES_SAMPLER (default: parent-based, always on).
        let mut config = BatchConfigBuilder::default();
        if std::env::var_os("OTEL_BSP_MAX_QUEUE_SIZE").is_none() {
            config = config.with_max_queue_size(DEFAULT_QUEUE);
        }
        let processor = BatchSpanProcessor::builder(exporter).with_batch_config(config.build()).build();
        let provider =
            SdkTracerProvider::builder().with_span_processor(processor).with_resource(resource()).build();
        Ok(Telemetry { provider, exporting: true })
    }

    /// No export. Spans are not sampled (cheap) but still carry W3C trace and
    /// span ids, inherited from an incoming `traceparent`.
    pub fn local() -> Telemetry {
        let provider = SdkTracerProvider::builder().with_sampler(Sampler::AlwaysOff).build();
        Telemetry { provider, exporting: false }
    }

    pub fn is_exporting(&self) -> bool {
        self.exporting
    }

    /// The subscriber: logs (filtered by `RUST_LOG`) and OpenTelemetry spans
    /// (this crate's, INFO and above). Each has its own filter, so a quiet
    /// `RUST_LOG` never removes spans from traces.
    pub fn subscriber(&self, logs: LogFormat) -> impl Subscriber + Send + Sync + 'static {
        let otel = tracing_opentelemetry::layer()
            .with_tracer(self.provider.tracer(TRACER))
            .with_location(false)
            .with_threads(false)
            .with_target(false)
            .with_tracked_inactivity(false)
            .with_filter(Targets::new().with_target(OTEL_TARGET, Level::INFO));
        let filter = || EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
        let fmt_layer = match logs {
            LogFormat::Off => None,
            LogFormat::Json => Some(
                tfmt::layer()
                    .fmt_fields(JsonFields::new())
                    .event_format(WithTraceIds {
                        inner: tfmt::format().json().with_current_span(true).with_span_list(false),
                        json: true,
                    })
                    .with_writer(std::io::stderr)
                    .with_filter(filter())
                    .boxed(),
            ),
            LogFormat::Text { ansi } => Some(
                tfmt::layer()
                    .with_ansi(ansi)
                    .event_format(WithTraceIds { inner: tfmt::format().with_ansi(ansi), json: false })
                    .with_writer(std::io::stderr)
                    .with_filter(filter())
                    .boxed(),
            ),
        };
        tracing_subscriber::registry().with(otel).with(fmt_layer)
    }

    /// Installs [`Telemetry::subscriber`] as the global default; false when
    /// one is already installed (tests), which is then kept.
    pub fn install(&self, logs: LogFormat) -> bool {
        self.subscriber(logs).try_init().is_ok()
    }

    /// Exports what is queued now (blocking; at most the export timeout).
    /// Run it off the async threads (`spawn_blocking`).
    pub fn force_flush(&self) -> bool {
        self.provider.force_flush().is_ok()
    }

    /// Flushes and stops the exporter, never for longer than `within`.
    ///
    /// The SDK's shutdown blocks until its batch thread has exported, and
    /// that export runs on the gRPC channel, which needs this runtime: on a
    /// runtime with one worker, blocking the worker here would deadlock until
    /// the SDK's own timeout. So it runs on the blocking pool, bounded twice.
    pub async fn shutdown(self, within: Duration) {
        if !self.exporting {
            return;
        }
        let provider = self.provider;
        let flush = tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(within));
        match tokio::time::timeout(within + Duration::from_millis(100), flush).await {
            Ok(Ok(Ok(()))) => tracing::info!("traces flushed"),
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "traces not flushed"),
            Ok(Err(e)) => tracing::warn!(error = %e, "trace flush failed"),
            Err(_) => tracing::warn!(within_ms = within.as_millis() as u64, "trace flush timed out"),
        }
    }
}

/// Sets up logs and traces for the process. `export`: whether this command
/// exports traces at all (the server does; one-shot commands do not). Call
/// inside the Tokio runtime.
pub fn init(export: bool) -> Telemetry {
    let (telemetry, problem) = if export {
        match Telemetry::from_env() {
            Ok(t) => (t, None),
            Err(e) => (Telemetry::local(), Some(e)),
        }
    } else {
        (Telemetry::local(), None)
    };
    telemetry.install(LogFormat::from_env());
    match problem {
        Some(e) => tracing::error!(error = %e, "trace export is off: invalid OTLP configuration"),
        None if telemetry.exporting => tracing::info!("exporting traces over OTLP/gRPC"),
        None => {}
    }
    telemetry
}

/// Trace and span id of the current OpenTelemetry context (the innermost
/// entered span of ours), when valid.
pub fn current_ids() -> Option<(TraceId, SpanId)> {
    let cx = opentelemetry::Context::current();
    let span = cx.span();
    let sc = span.span_context();
    sc.is_valid().then(|| (sc.trace_id(), sc.span_id()))
}

/// The current trace id as 32 lowercase hex digits.
pub fn current_trace_id() -> Option<String> {
    current_ids().map(|(t, _)| t.to_string())
}

/// Adds `"trace_id"` and `"span_id"` to each line written inside a span:
/// as the first JSON members, or as `trace_id=… span_id=…` at the end of a
/// text line.
struct WithTraceIds<E> {
    inner: E,
    json: bool,
}

impl<S, N, E> FormatEvent<S, N> for WithTraceIds<E>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    E: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let Some((trace_id, span_id)) = current_ids() else {
            return self.inner.format_event(ctx, writer, event);
        };
        let mut line = String::with_capacity(256);
        self.inner.format_event(ctx, Writer::new(&mut line), event)?;
        if self.json
            && let Some(rest) = line.strip_prefix('{')
        {
            write!(writer, "{{\"trace_id\":\"{trace_id}\",\"span_id\":\"{span_id}\",{rest}")
        } else {
            let body = line.strip_suffix('\n').unwrap_or(&line);
            writeln!(writer, "{body} trace_id={trace_id} span_id={span_id}")
        }
    }
}
