//! Observability: spans reach a real OTLP receiver with the caller's parent
//! and the conventional attributes (and no parameter values); slow
//! statements are marked, logged and counted; /metrics parses and moves by
//! the calls made; shutdown with an unreachable collector stays within the
//! drain timeout, also on a runtime with one worker.

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader},
    net::SocketAddr,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bi_data::{
    pb::{CreateJobRequest, GetJobRequest, Job, ListJobsRequest},
    telemetry::{LogFormat, Telemetry},
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::{Code, Request, transport::Channel};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use uuid::Uuid;

use crate::{
    common::*,
    otlp::{self, RSpan},
};

pub(crate) const SERVER: i32 = 2;
pub(crate) const CLIENT: i32 = 3;

/// A fresh W3C parent: (trace id, parent span id, traceparent).
pub(crate) fn parent() -> (String, String, String) {
    let trace = Uuid::new_v4().simple().to_string();
    let span = Uuid::new_v4().simple().to_string()[..16].to_owned();
    let header = format!("00-{trace}-{span}-01");
    (trace, span, header)
}

pub(crate) fn traced<T>(token: &str, traceparent: &str, msg: T) -> Request<T> {
    let mut r = authed(token, msg);
    let md = r.metadata_mut();
    md.insert("traceparent", traceparent.parse().unwrap());
    md.insert("tracestate", "bidata=test".parse().unwrap());
    md.insert("x-request-id", "req-observability".parse().unwrap());
    r
}

pub(crate) fn attr<'a>(s: &'a RSpan, k: &str) -> &'a str {
    s.attrs.get(k).map(String::as_str).unwrap_or_else(|| panic!("{k} missing on {s:#?}"))
}

#[tokio::test]
async fn spans_reach_an_otlp_receiver_under_the_callers_trace() {
    let tel = otlp::global();
    let app = TestApp::spawn().await;
    let t = Tenant::new();
    let (trace_id, parent_id, tp) = parent();
    // Values that must appear in no span: a title, a URL, a filter value.
    let secret = format!("needle{}", Uuid::new_v4().simple());
    let url = format!("https://jobs.example.com/{secret}");
    let new_job = || Job { title: secret.clone(), job_url: url.clone(), ..job("x") };
    let mut c = app.jobs();

    let created = c
        .create_job(traced(
            &t.writer,
            &tp,
            CreateJobRequest { job: Some(new_job()), request_id: String::new() },
        ))
        .await
        .unwrap()
        .into_inner();
    c.get_job(traced(&t.reader, &tp, GetJobRequest { id: created.id.clone() })).await.unwrap();
    let list = ListJobsRequest { filter: format!("title = \"{secret}\""), ..Default::default() };
    assert_eq!(c.list_jobs(traced(&t.reader, &tp, list)).await.unwrap().into_inner().jobs.len(), 1);
    // An error answered in headers only, and a statement failing with a SQLSTATE.
    let missing = Uuid::new_v4().to_string();
    let e = c.get_job(traced(&t.reader, &tp, GetJobRequest { id: missing.clone() })).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let e = c
        .create_job(traced(
            &t.writer,
            &tp,
            CreateJobRequest { job: Some(new_job()), request_id: String::new() },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists, "{e:?}");

    let spans = tel.wait_for(&trace_id, |s| s.iter().filter(|s| s.kind == SERVER).count() >= 5).await;
    let servers: Vec<&RSpan> = spans.iter().filter(|s| s.kind == SERVER).collect();
    assert_eq!(servers.len(), 5, "{servers:#?}");
    let mut codes = Vec::new();
    for s in &servers {
        assert_eq!(s.parent_span_id, parent_id, "RPC span's parent is the caller's span");
        assert_eq!(s.trace_state, "bidata=test", "the caller's tracestate is kept");
        assert_eq!(s.service_name, "bi-data");
        assert_eq!(attr(s, "rpc.system"), "grpc");
        assert_eq!(attr(s, "rpc.service"), "bi.data.v1.JobService");
        assert_eq!(s.name, format!("bi.data.v1.JobService/{}", attr(s, "rpc.method")));
        assert_eq!(attr(s, "tenant.id"), t.id.to_string());
        assert_eq!(attr(s, "request.id"), "req-observability");
        codes.push((attr(s, "rpc.method").to_owned(), attr(s, "rpc.grpc.status_code").to_owned()));
    }
    codes.sort();
    assert_eq!(
        codes,
        [("CreateJob", "0"), ("CreateJob", "6"), ("GetJob", "0"), ("GetJob", "5"), ("ListJobs", "0")]
            .map(|(m, c)| (m.to_owned(), c.to_owned()))
    );

    let db_name = database_url().parse::<tokio_postgres::Config>().unwrap().get_dbname().unwrap().to_owned();
    let server_ids: Vec<&str> = servers.iter().map(|s| s.span_id.as_str()).collect();
    let statements: Vec<&RSpan> = spans.iter().filter(|s| s.kind == CLIENT).collect();
    // The calls' own statements: 2 inserts + audit for the creates, 3 selects.
    // (Transaction control — BEGIN, the tenant scope, COMMIT — travels
    // pipelined with them and is not a span of its own.)
    assert!(statements.len() >= 6, "{statements:#?}");
    for s in &statements {
        assert!(
            server_ids.contains(&s.parent_span_id.as_str()),
            "statement span is a child of an RPC span: {s:#?}"
        );
        assert_eq!(attr(s, "db.system.name"), "postgresql");
        assert_eq!(attr(s, "db.namespace"), db_name);
        assert!(!attr(s, "server.address").is_empty());
        assert!(!attr(s, "db.operation.name").is_empty());
        assert!(s.attrs.contains_key("db.collection.name"));
        assert!(!attr(s, "db.query.text").is_empty());
    }
    let get = servers
        .iter()
        .find(|s| s.name.ends_with("/GetJob") && attr(s, "rpc.grpc.status_code") == "0")
        .unwrap();
    assert!(
        statements.iter().any(|s| s.parent_span_id == get.span_id
            && attr(s, "db.collection.name") == "jobs"
            && attr(s, "db.query.text").contains("$")),
        "GetJob has a parameterized statement on jobs"
    );
    let failed: Vec<&&RSpan> =
        statements.iter().filter(|s| s.attrs.contains_key("db.response.status_code")).collect();
    assert_eq!(failed.len(), 1, "{failed:#?}");
    assert_eq!(attr(failed[0], "db.response.status_code"), "23505");
    assert_eq!(attr(failed[0], "db.operation.name"), "INSERT");
    assert!(
        spans.iter().any(|s| s.name == "db.pool.wait" && server_ids.contains(&s.parent_span_id.as_str()))
    );

    for s in &spans {
        for value in [&secret, &created.id, &missing] {
            assert!(!s.dump.contains(value.as_str()), "a parameter value leaked into a span: {s:#?}");
        }
    }
    app.stop().await;
}

/// Prometheus text parsed strictly: `name{sorted labels}` → value.
fn parse_prometheus(text: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    let name_ok = |n: &str| {
        !n.is_empty()
            && n.chars().enumerate().all(|(i, c)| {
                c == '_' || c == ':' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit())
            })
    };
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (kind, name, tail) =
                (parts.next().unwrap(), parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            assert!(name_ok(name), "bad metric name in {line:?}");
            match kind {
                "HELP" => {}
                "TYPE" => assert!(
                    ["counter", "gauge", "histogram", "summary", "untyped"].contains(&tail),
                    "bad TYPE line {line:?}"
                ),
                _ => panic!("unknown comment {line:?}"),
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("no value: {line:?}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        let (name, labels) = match series.split_once('{') {
            None => (series, Vec::new()),
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').unwrap_or_else(|| panic!("unclosed labels: {line:?}"));
                let mut labels = Vec::new();
                let mut chars = body.chars().peekable();
                while chars.peek().is_some() {
                    let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
                    assert!(name_ok(&key), "bad label name in {line:?}");
                    assert_eq!(chars.next(), Some('"'), "label value not quoted: {line:?}");
                    let mut val = String::new();
                    loop {
                        match chars.next() {
                            Some('\\') => val.push(chars.next().expect("escape")),
                            Some('"') => break,
                            Some(c) => val.push(c),
                            None => panic!("unterminated label value: {line:?}"),
                        }
                    }
                    labels.push((key, val));
                    match chars.next() {
                        Some(',') | None => {}
                        Some(c) => panic!("unexpected {c:?} in {line:?}"),
                    }
                }
                (name, labels)
            }
        };
        assert!(name_ok(name), "bad sample name in {line:?}");
        out.insert(
            key(name, &labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect::<Vec<_>>()),
            value,
        );
    }
    out
}

pub(crate) fn key(name: &str, labels: &[(&str, &str)]) -> String {
    let mut l = labels.to_vec();
    l.sort();
    let l: Vec<String> = l.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{name}{{{}}}", l.join(","))
}

pub(crate) async fn scrape(addr: SocketAddr) -> BTreeMap<String, f64> {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: test\r\n\r\n").await.unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).await.unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("HTTP response");
    assert!(head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.to_ascii_lowercase().contains("content-type: text/plain; version=0.0.4"), "{head}");
    parse_prometheus(body)
}

pub(crate) fn delta(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>, k: &str) -> f64 {
    after.get(k).copied().unwrap_or_else(|| panic!("{k} not in /metrics: {after:#?}"))
        - before.get(k).copied().unwrap_or(0.0)
}

#[tokio::test]
async fn metrics_parse_and_move_by_the_calls_made() {
    let app = TestApp::spawn().await;
    let t = Tenant::new();
    let mut c = app.jobs();
    let before = scrape(app.metrics_addr).await;
    let created = c
        .create_job(authed(
            &t.writer,
            CreateJobRequest { job: Some(job("metered")), request_id: String::new() },
        ))
        .await
        .unwrap()
        .into_inner();
    for _ in 0..3 {
        c.get_job(authed(&t.reader, GetJobRequest { id: created.id.clone() })).await.unwrap();
    }
    let e = c.get_job(authed(&t.reader, GetJobRequest { id: Uuid::new_v4().to_string() })).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let e = c.get_job(Request::new(GetJobRequest { id: created.id.clone() })).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    // The RPC ends with its response body, just after the client has it.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = scrape(app.metrics_addr).await;

    let rpc = |method: &str, code: &str| {
        key(
            "bi_data_rpc_server_duration_seconds_count",
            &[("service", "bi.data.v1.JobService"), ("method", method), ("code", code)],
        )
    };
    assert_eq!(delta(&before, &after, &rpc("GetJob", "OK")), 3.0);
    assert_eq!(delta(&before, &after, &rpc("GetJob", "NOT_FOUND")), 1.0);
    assert_eq!(delta(&before, &after, &rpc("GetJob", "UNAUTHENTICATED")), 1.0);
    assert_eq!(delta(&before, &after, &rpc("CreateJob", "OK")), 1.0);
    let in_flight =
        key("bi_data_rpc_server_in_flight", &[("service", "bi.data.v1.JobService"), ("method", "GetJob")]);
    assert_eq!(after[&in_flight], 0.0);
    let jobs_selects = key(
        "bi_data_db_statement_duration_seconds_count",
        &[("operation", "SELECT"), ("collection", "jobs")],
    );
    assert!(delta(&before, &after, &jobs_selects) >= 4.0, "{after:#?}");
    // Every authenticated call that reached the store waited for a connection once.
    let waits = key("bi_data_db_pool_wait_seconds_count", &[("pool", "primary")]);
    assert!(delta(&before, &after, &waits) >= 5.0);
    assert!(after[&key("bi_data_db_pool_connections", &[("pool", "primary")])] >= 1.0);
    assert!(after[&key("bi_data_db_pool_max_connections", &[("pool", "primary")])] >= 1.0);
    assert!(after.contains_key(&key("bi_data_db_pool_available", &[("pool", "primary")])));
    assert_eq!(after[&key("bi_data_db_pool_waiting", &[("pool", "primary")])], 0.0);
    assert_eq!(after[&key("bi_data_build_info", &[("version", env!("CARGO_PKG_VERSION"))])], 1.0);
    // No statement was slow at the default threshold of 100 ms... normally;
    // the counter is exercised in the slow-query test.
    app.stop().await;
}

#[tokio::test]
async fn slow_statements_are_marked_and_counted() {
    let tel = otlp::global();
    let app = TestApp::spawn_with(&["--slow-query-ms", "0"]).await;
    let t = Tenant::new();
    let (trace_id, _, tp) = parent();
    let before = scrape(app.metrics_addr).await;
    let list = ListJobsRequest { filter: "title = \"slow*\"".into(), ..Default::default() };
    app.jobs().list_jobs(traced(&t.reader, &tp, list)).await.unwrap();

    let spans = tel
        .wait_for(&trace_id, |s| {
            s.iter().any(|s| s.kind == SERVER)
                && s.iter().any(|s| s.events.iter().any(|(n, _)| n == "slow_query"))
        })
        .await;
    let slow = spans
        .iter()
        .filter(|s| s.kind == CLIENT)
        .flat_map(|s| s.events.iter().map(move |e| (s, e)))
        .find(|(s, (name, _))| name == "slow_query" && attr(s, "db.collection.name") == "jobs")
        .expect("a slow_query event on the jobs statement");
    let (span, (_, ev)) = slow;
    assert_eq!(ev["threshold_ms"], "0");
    assert!(ev["duration_ms"].parse::<f64>().unwrap() >= 0.0);
    assert_eq!(ev["rpc"], "bi.data.v1.JobService/ListJobs");
    let sql = attr(span, "db.query.text").to_owned();

    let stats = app.query_stats().get(&sql).expect("the shape is in the query stats");
    assert!(stats.count >= 1 && stats.slow_count >= 1, "{stats:?}");
    assert!(stats.max_ms >= stats.mean_ms && stats.p99_ms > 0.0, "{stats:?}");
    assert!(app.query_stats().slowest(500).iter().any(|s| s.sql == sql));

    let after = scrape(app.metrics_addr).await;
    let counter = key("bi_data_db_slow_statements_total", &[("operation", "SELECT"), ("collection", "jobs")]);
    assert!(delta(&before, &after, &counter) >= 1.0);
    app.stop().await;
}

// ---- the real binary -------------------------------------------------------

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

struct Binary {
    child: Child,
    addr: String,
    lines: Arc<Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Binary {
    /// Starts `bi-data serve` with stderr captured; waits until SERVING.
    async fn start(args: &[&str], env: &[(&str, &str)]) -> Binary {
        let addr = format!("127.0.0.1:{}", free_port());
        let metrics = format!("127.0.0.1:{}", free_port());
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_bi-data"));
        cmd.args(["serve", "--listen", &addr, "--metrics-listen", &metrics])
            .args(args)
            .env("DATABASE_URL", database_url())
            .env("JWT_SECRET", SECRET)
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let bin = Binary { child, addr, lines, reader: Some(reader) };
        let channel = bin.channel();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let r =
                HealthClient::new(channel.clone()).check(HealthCheckRequest { service: String::new() }).await;
            if r.is_ok_and(|r| r.into_inner().status == ServingStatus::Serving as i32) {
                break;
            }
            assert!(Instant::now() < deadline, "binary not SERVING: {:?}", bin.lines.lock().unwrap());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bin
    }

    fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr)).unwrap().connect_lazy()
    }

    /// SIGTERM; returns how long the process took to exit, and its log.
    async fn terminate(mut self) -> (Duration, Vec<String>) {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        let started = Instant::now();
        let mut child = self.child;
        let status = tokio::task::spawn_blocking(move || {
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                if let Some(s) = child.try_wait().unwrap() {
                    return Some(s);
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    return None;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
        .await
        .unwrap();
        let took = started.elapsed();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        let lines = self.lines.lock().unwrap().clone();
        let status = status.unwrap_or_else(|| panic!("no exit after SIGTERM: {lines:#?}"));
        assert!(status.success(), "exit {status:?}: {lines:#?}");
        (took, lines)
    }
}

#[tokio::test]
async fn slow_query_warn_line_is_json_with_the_rpc_and_trace_id() {
    let bin = Binary::start(&["--slow-query-ms", "0"], &[("LOG_FORMAT", "json")]).await;
    let t = Tenant::new();
    let (trace_id, _, tp) = parent();
    let secret = format!("needle{}", Uuid::new_v4().simple());
    let list = ListJobsRequest { filter: format!("title = \"{secret}\""), ..Default::default() };
    let mut c = bi_data::pb::job_service_client::JobServiceClient::new(bin.channel());
    c.list_jobs(traced(&t.reader, &tp, list)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (_, lines) = bin.terminate().await;

    let events: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect();
    let ours: Vec<&serde_json::Value> =
        events.iter().filter(|e| e["trace_id"] == trace_id.as_str()).collect();
    assert!(!ours.is_empty(), "no line carries the caller's trace id: {lines:#?}");
    for e in &ours {
        let span_id = e["span_id"].as_str().unwrap_or_default();
        assert!(span_id.len() == 16 && span_id.bytes().all(|b| b.is_ascii_hexdigit()), "{e}");
    }
    let warn = ours
        .iter()
        .find(|e| {
            e["level"] == "WARN"
                && e["fields"]["message"] == "slow_query"
                && e["fields"]["db.collection.name"] == "jobs"
        })
        .unwrap_or_else(|| panic!("no slow_query WARN line for the call: {lines:#?}"));
    assert_eq!(warn["fields"]["rpc"], "bi.data.v1.JobService/ListJobs");
    assert_eq!(warn["fields"]["threshold_ms"], 0);
    assert!(warn["fields"]["duration_ms"].as_f64().is_some());
    assert!(warn["fields"]["db.query.text"].as_str().unwrap().contains('$'), "{warn}");
    assert!(lines.iter().all(|l| !l.contains(&secret)), "a parameter value reached the log");
}

/// The known deadlock: the SDK's shutdown blocks while its export needs the
/// runtime. With one worker and a collector that refuses connections, the
/// process must still exit within the drain timeout.
#[tokio::test]
async fn binary_with_one_worker_and_unreachable_collector_exits_within_the_drain() {
    let drain_ms = 3000;
    let bin = Binary::start(
        &["--drain-timeout-ms", &drain_ms.to_string()],
        &[
            ("TOKIO_WORKER_THREADS", "1"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9"),
            ("OTEL_BSP_SCHEDULE_DELAY", "60000"),
        ],
    )
    .await;
    let t = Tenant::new();
    let mut c = bi_data::pb::job_service_client::JobServiceClient::new(bin.channel());
    for _ in 0..3 {
        let (_, _, tp) = parent();
        c.list_jobs(traced(&t.reader, &tp, ListJobsRequest::default())).await.unwrap();
    }
    let (took, lines) = bin.terminate().await;
    assert!(took < Duration::from_millis(drain_ms), "exit took {took:?}: {lines:#?}");
    assert!(lines.iter().any(|l| l.contains("exporting traces over OTLP/gRPC")), "{lines:#?}");
}

/// Same in process, on a current-thread runtime: the server's shutdown and
/// the trace flush together stay within the drain timeout.
#[tokio::test(flavor = "current_thread")]
async fn shutdown_on_a_current_thread_runtime_with_unreachable_collector_is_bounded() {
    let drain = Duration::from_millis(3000);
    let telemetry = Telemetry::with_endpoint("http://127.0.0.1:9").unwrap();
    let app = TestApp::spawn().await;
    let _local = tracing::subscriber::set_default(telemetry.subscriber(LogFormat::Off));
    let t = Tenant::new();
    let mut c = app.jobs();
    for _ in 0..3 {
        let (_, _, tp) = parent();
        c.list_jobs(traced(&t.reader, &tp, ListJobsRequest::default())).await.unwrap();
    }
    let started = Instant::now();
    app.stop().await;
    telemetry.shutdown(drain.saturating_sub(started.elapsed())).await;
    assert!(started.elapsed() < drain, "took {:?}", started.elapsed());
}

#[test]
fn prometheus_parser_rejects_garbage() {
    let ok = parse_prometheus("# HELP a_b x\n# TYPE a_b counter\na_b{x=\"1\",y=\"q\\\"\"} 2\nc 1e3\n");
    assert_eq!(ok[&key("a_b", &[("y", "q\""), ("x", "1")])], 2.0);
    assert_eq!(ok[&key("c", &[])], 1000.0);
    assert!(std::panic::catch_unwind(|| parse_prometheus("a_b{x=1} 2\n")).is_err());
}
