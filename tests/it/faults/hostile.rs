//! Hostile input: a property campaign over the filter parser, type check
//! and SQL compiler and the page-token decoder (never a panic, errors are
//! the caller's, values only as parameters), and a battery of hostile
//! requests against the real binary: each answered INVALID_ARGUMENT,
//! RESOURCE_EXHAUSTED or NOT_FOUND within 2 s, never INTERNAL, a hang or a
//! crash, and the server's memory afterwards within 2x its idle size.

use std::time::{Duration, Instant};

use bi_data::{
    domain::{filter, job::JOB, schema::FieldKind},
    pb::{BatchGetJobsRequest, CreateJobRequest, GetJobRequest, ListJobsRequest, SearchJobsRequest},
    service::page,
    store::filter_sql,
};
use proptest::{prelude::*, test_runner::TestRunner};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

use super::*;

/// Filter text: mostly near the grammar (fields, operators, literals,
/// parentheses, quotes, escapes), some arbitrary.
fn filter_text() -> impl Strategy<Value = String> {
    let atom = prop_oneof![
        Just("title".to_owned()),
        Just("salary_min".to_owned()),
        Just("posting_time".to_owned()),
        Just("company_id".to_owned()),
        Just("attributes.k".to_owned()),
        Just("keywords".to_owned()),
        Just(" = ".to_owned()),
        Just(" != ".to_owned()),
        Just(" >= ".to_owned()),
        Just(":".to_owned()),
        Just(" AND ".to_owned()),
        Just(" OR ".to_owned()),
        Just("NOT ".to_owned()),
        Just("-".to_owned()),
        Just("(".to_owned()),
        Just(")".to_owned()),
        Just("\"".to_owned()),
        Just("\\".to_owned()),
        Just("*".to_owned()),
        Just("'; DROP TABLE jobs; --".to_owned()),
        Just("1e308".to_owned()),
        Just("-9223372036854775809".to_owned()),
        Just("2024-01-02T03:04:05Z".to_owned()),
        Just("null".to_owned()),
        "\\PC{0,6}",
        any::<u32>().prop_map(|n| n.to_string()),
    ];
    // Well-formed restrictions with hostile values, combined.
    let field = proptest::sample::select(vec![
        "title",
        "company_name",
        "salary_min",
        "salary_max",
        "posting_time",
        "company_id",
        "status",
        "keywords",
        "attributes.k",
        "location",
        "is_remote",
        "no_such_field",
    ]);
    let op = proptest::sample::select(vec![" = ", " != ", " < ", " >= ", ":"]);
    let value = prop_oneof![
        "\\PC{0,12}".prop_map(|v| format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""))),
        Just("\"'; DROP TABLE jobs; --\"".to_owned()),
        Just("\"%_*\\\\\"".to_owned()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|f| format!("{f:e}")),
        Just("2024-01-02T03:04:05Z".to_owned()),
        Just("123e4567-e89b-12d3-a456-426614174000".to_owned()),
        Just("true".to_owned()),
        Just("null".to_owned()),
        Just("*".to_owned()),
    ];
    let restriction = (field, op, value).prop_map(|(f, o, v)| format!("{f}{o}{v}"));
    let combined = proptest::collection::vec(
        (restriction, proptest::sample::select(vec![" AND ", " OR ", " AND NOT ", " "]), any::<bool>()),
        1..6,
    )
    .prop_map(|parts| {
        parts
            .into_iter()
            .enumerate()
            .map(|(i, (r, join, paren))| {
                let r = if paren { format!("({r})") } else { r };
                if i == 0 { r } else { format!("{join}{r}") }
            })
            .collect::<String>()
    });
    prop_oneof![
        5 => combined,
        4 => proptest::collection::vec(atom, 0..24).prop_map(|v| v.concat()),
        1 => any::<String>(),
    ]
}

/// Runs the campaign for `cases`: parse, check and compile never panic;
/// accepted filters compile to SQL whose values are all parameters.
fn campaign(cases: u32) -> u32 {
    let mut runner = TestRunner::new(proptest::test_runner::Config {
        cases,
        failure_persistence: None,
        ..Default::default()
    });
    let accepted = std::cell::Cell::new(0u32);
    runner
        .run(&filter_text(), |text| {
            if let Ok(Some(expr)) = filter::parse(&text) {
                let mut params = Vec::new();
                if let Ok(sql) = filter_sql::compile(&JOB, &expr, &mut params) {
                    accepted.set(accepted.get() + 1);
                    prop_assert!(!sql.contains("DROP"), "a value reached the SQL text: {sql}");
                    prop_assert!(!sql.contains(';'), "{sql}");
                }
            }
            // Tokens: arbitrary text never panics the decoder.
            let _ = page::decode(&text, "binding", &[FieldKind::Timestamp, FieldKind::Uuid]);
            Ok(())
        })
        .unwrap();
    accepted.get()
}

#[test]
fn filter_and_token_campaign() {
    let started = Instant::now();
    let accepted = campaign(3_000);
    println!("FAULT fuzz: 3000 cases ({accepted} accepted filters) in {:?}", started.elapsed());
}

#[test]
#[ignore = "long: scripts/fault-suite.sh --long"]
fn filter_and_token_campaign_long() {
    let started = Instant::now();
    let mut cases = 0u64;
    while started.elapsed() < Duration::from_secs(120) {
        campaign(10_000);
        cases += 10_000;
    }
    println!("FAULT fuzz-long: {cases} cases in {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_are_refused_quickly() {
    let server = Process::spawn(&database_url(), &[]);
    assert!(until_health(&server.channel, ServingStatus::Serving, Duration::from_secs(60)).await.is_some());
    let t = Tenant::new();
    let mut jobs = bi_data::pb::job_service_client::JobServiceClient::new(server.channel.clone())
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20);
    // One real job, then the idle size.
    let made = jobs
        .create_job(authed(
            &t.writer,
            CreateJobRequest { job: Some(job("hostile")), request_id: String::new() },
        ))
        .await
        .unwrap()
        .into_inner();
    let idle = rss_kib(server.child.id());

    let list = |filter: String| ListJobsRequest { filter, ..Default::default() };
    let nested_struct = {
        let mut v = prost_types::Value { kind: Some(prost_types::value::Kind::NumberValue(1.0)) };
        for _ in 0..1000 {
            v = prost_types::Value {
                kind: Some(prost_types::value::Kind::StructValue(prost_types::Struct {
                    fields: [("a".to_owned(), v)].into_iter().collect(),
                })),
            };
        }
        prost_types::Struct { fields: [("deep".to_owned(), v)].into_iter().collect() }
    };
    let other = Tenant::new();
    let foreign_token = {
        let mut c = jobs.clone();
        for i in 0..2 {
            c.create_job(authed(
                &other.writer,
                CreateJobRequest { job: Some(job(&format!("o{i}"))), request_id: String::new() },
            ))
            .await
            .unwrap();
        }
        c.list_jobs(authed(&other.reader, ListJobsRequest { page_size: 1, ..Default::default() }))
            .await
            .unwrap()
            .into_inner()
            .next_page_token
    };
    let sql = "'; DROP TABLE jobs; --";
    type Case = (
        &'static str,
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), tonic::Status>> + Send>>,
    );
    let mut cases: Vec<Case> = Vec::new();
    macro_rules! case {
        ($name:expr, |$c:ident, $r:ident, $w:ident| $body:expr) => {{
            let mut $c = jobs.clone();
            let ($r, $w) = (t.reader.clone(), t.writer.clone());
            cases.push((
                $name,
                Box::pin(async move {
                    let _ = (&$r, &$w);
                    $body.await.map(|_| ())
                }),
            ));
        }};
    }
    case!("100 KB filter", |c, r, w| c
        .list_jobs(authed(&r, list(format!("title = \"{}\"", "x".repeat(100_000))))));
    case!("10,000 nested parentheses", |c, r, w| c
        .list_jobs(authed(&r, list(format!("{}title = \"x\"{}", "(".repeat(10_000), ")".repeat(10_000))))));
    case!("10,000 OR clauses", |c, r, w| c.list_jobs(authed(
        &r,
        list((0..10_000).map(|i| format!("salary_min = {i}")).collect::<Vec<_>>().join(" OR "))
    )));
    case!("forged page token", |c, r, w| c.list_jobs(authed(
        &r,
        ListJobsRequest { page_token: "eyJiIjoiZm9vIiwidiI6W119".into(), ..Default::default() }
    )));
    case!("truncated page token", |c, r, w| c
        .list_jobs(authed(&r, ListJobsRequest { page_token: "eyJiIjoi".into(), ..Default::default() })));
    case!("another tenant's page token", |c, r, w| c.list_jobs(authed(
        &r,
        ListJobsRequest { page_size: 1, page_token: foreign_token.clone(), ..Default::default() }
    )));
    case!("page_size -1", |c, r, w| c
        .list_jobs(authed(&r, ListJobsRequest { page_size: -1, ..Default::default() })));
    case!("page_size 10^9", |c, r, w| c
        .list_jobs(authed(&r, ListJobsRequest { page_size: 1_000_000_000, ..Default::default() })));
    case!("Struct nested 1,000 deep", |c, r, w| {
        let mut j = job("deep");
        j.attributes = Some(nested_struct.clone());
        c.create_job(authed(&w, CreateJobRequest { job: Some(j), request_id: String::new() }))
    });
    case!("100,000 ids", |c, r, w| c.batch_get_jobs(authed(
        &r,
        BatchGetJobsRequest { ids: (0..100_000).map(|_| uuid::Uuid::new_v4().to_string()).collect() }
    )));
    case!("20 MB message", |c, r, w| c.create_job(authed(
        &w,
        CreateJobRequest { job: Some(job(&"x".repeat(20 << 20))), request_id: String::new() }
    )));
    case!("non-UUID id", |c, r, w| c.get_job(authed(&r, GetJobRequest { id: "not-a-uuid".into() })));
    case!("SQL in the id", |c, r, w| c.get_job(authed(&r, GetJobRequest { id: sql.into() })));
    case!("SQL in a filter value", |c, r, w| c
        .list_jobs(authed(&r, list(format!("title = \"{sql}\" AND company_name:\"{sql}\"")))));
    case!("SQL as a field name", |c, r, w| c.list_jobs(authed(&r, list(format!("{sql} = 1")))));
    case!("SQL in order_by", |c, r, w| c
        .list_jobs(authed(&r, ListJobsRequest { order_by: sql.into(), ..Default::default() })));
    case!("SQL in a search", |c, r, w| c
        .search_jobs(authed(&r, SearchJobsRequest { query: sql.into(), ..Default::default() })));
    case!("an unknown enum number", |c, r, w| {
        let mut j = job("enum");
        j.status = 999;
        c.create_job(authed(&w, CreateJobRequest { job: Some(j), request_id: String::new() }))
    });
    case!("a timestamp past year 9999", |c, r, w| {
        let mut j = job("far");
        j.posting_time = Some(prost_types::Timestamp { seconds: i64::MAX / 2, nanos: 0 });
        c.create_job(authed(&w, CreateJobRequest { job: Some(j), request_id: String::new() }))
    });
    case!("negative nanos", |c, r, w| {
        let mut j = job("nanos");
        j.posting_time = Some(prost_types::Timestamp { seconds: 0, nanos: -1 });
        c.create_job(authed(&w, CreateJobRequest { job: Some(j), request_id: String::new() }))
    });

    let mut report = Vec::new();
    for (name, call) in cases {
        let started = Instant::now();
        let r = tokio::time::timeout(Duration::from_secs(2), call).await;
        let took = started.elapsed();
        let code = match &r {
            Err(_) => panic!("{name}: no answer within 2 s"),
            Ok(Ok(())) => Code::Ok,
            Ok(Err(e)) => e.code(),
        };
        // SQL in a field that is text is stored as text: OK is fine there.
        // Stored as text or searched for, SQL is just text: OK is fine
        // there; a page size above the maximum is served at the maximum
        // (the contract).
        let fine = matches!(code, Code::InvalidArgument | Code::ResourceExhausted | Code::NotFound)
            || (code == Code::Ok && (name.starts_with("SQL in a") || name == "page_size 10^9"));
        assert!(fine, "{name}: {code:?} {r:?}");
        report.push(format!("{name}: {} in {} ms", code_name(code), took.as_millis()));
    }
    // Metadata: NUL and invalid UTF-8 cannot be sent by a well-behaved
    // client; over raw HTTP/2, bytes 0x80-0xFF in a header value are legal.
    let raw = raw_with_header(&server, "x-request-id", b"\xff\xfe bad \xc3\x28").await;
    assert!(matches!(raw, 0 | 3 | 16), "invalid UTF-8 in metadata answered {raw}");
    report.push(format!("invalid UTF-8 in metadata: code {raw}"));
    let raw = raw_with_header(&server, "authorization", b"Bearer \xff\xff\xff").await;
    assert_eq!(raw, 16, "a token of invalid UTF-8 is UNAUTHENTICATED");

    // The stored job is untouched and the server still serves.
    assert_eq!(
        jobs.get_job(authed(&t.reader, GetJobRequest { id: made.id.clone() })).await.unwrap().into_inner(),
        made
    );
    let after = rss_kib(server.child.id());
    println!(
        "FAULT hostile: {} cases; RSS idle {} MiB, after {} MiB; {}",
        report.len(),
        idle / 1024,
        after / 1024,
        report.join("; ")
    );
    assert!(after <= 2 * idle, "RSS {after} KiB after the battery, idle {idle} KiB");
}

/// ListJobs over raw HTTP/2 with one header of arbitrary bytes: the
/// grpc-status answered.
async fn raw_with_header(server: &Process, name: &'static str, value: &[u8]) -> i32 {
    use http_body_util::BodyExt;
    let addr = server.addr.clone();
    let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let t = Tenant::new();
    let mut req = http::Request::post(format!("http://{addr}/bi.data.v1.JobService/ListJobs"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(http_body_util::Full::new(bytes::Bytes::from_static(&[0, 0, 0, 0, 0])))
        .unwrap();
    if name != "authorization" {
        req.headers_mut().insert("authorization", format!("Bearer {}", t.reader).parse().unwrap());
    }
    req.headers_mut().insert(name, http::HeaderValue::from_bytes(value).unwrap());
    let response = sender.send_request(req).await.unwrap();
    let code = |h: &http::HeaderMap| h.get("grpc-status").and_then(|v| v.to_str().ok()?.parse().ok());
    if let Some(c) = code(response.headers()) {
        return c;
    }
    let body = response.into_body().collect().await.unwrap();
    body.trailers().and_then(code).unwrap_or(0)
}
