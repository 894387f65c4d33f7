//! Deadlines and cancellation while a table is locked (a migration's
//! `ACCESS EXCLUSIVE`, `VACUUM FULL`, `REINDEX`): every call ends at its
//! deadline or the statement timeout with DEADLINE_EXCEEDED, never later and
//! never CANCELLED; a call the caller abandons stops its statement at once;
//! no connection stays wedged behind the lock.
//!
//! These tests lock `jobs` in a database of their own (the test database's
//! name with `_locks`: bi_data_test_locks, made by scripts/dev-env.sh) so they cannot stall the other tests, and
//! run one after another (`LOCKS`).

use std::time::{Duration, Instant};

use bi_data::pb::{ListIngestRunsRequest, ListJobsRequest};
use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::sync::Mutex;
use tonic::Code;
use uuid::Uuid;

use crate::common::*;

/// One locking test at a time: each holds `jobs` locked.
static LOCKS: Mutex<()> = Mutex::const_new(());

/// The test database's name with `_locks` (bi_data_test_locks).
fn locks_database_url() -> String {
    format!("{}_locks", database_url())
}

async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.expect("db connect");
    tokio::spawn(conn);
    client
}

/// A server of its own name on the locks database.
async fn server(extra: &[&str]) -> (TestApp, String) {
    server_on(&locks_database_url(), extra).await
}

async fn server_on(url: &str, extra: &[&str]) -> (TestApp, String) {
    let name = format!("bi-data-t-{}", &Uuid::new_v4().simple().to_string()[..12]);
    let mut args = vec!["--application-name", name.as_str()];
    args.extend_from_slice(extra);
    (TestApp::spawn_on(url, &args).await, name)
}

/// Statements of the server named `name` still running (or waiting).
async fn active(db: &tokio_postgres::Client, name: &str) -> i64 {
    db.query_one(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND state = 'active'",
        &[&name],
    )
    .await
    .unwrap()
    .get(0)
}

/// Waits until the server named `name` runs no statement; the time it took.
async fn quiet_within(db: &tokio_postgres::Client, name: &str, within: Duration) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < within {
        if active(db, name).await == 0 {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

fn list(t: &Tenant, filter: String, deadline: Duration) -> tonic::Request<ListJobsRequest> {
    let mut req = authed(&t.reader, ListJobsRequest { filter, ..Default::default() });
    req.set_timeout(deadline);
    req
}

/// One unary call over raw HTTP/2 with a `grpc-timeout` header and no timer
/// of the caller's own (a tonic client enforces the deadline itself and says
/// CANCELLED when its timer wins): the code the server answered.
async fn raw_h2_code(
    app: &TestApp,
    path: &str,
    token: &str,
    msg: &impl prost::Message,
    grpc_timeout: &str,
) -> i32 {
    let tcp = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp)).await.unwrap();
    tokio::spawn(conn);
    let body = msg.encode_to_vec();
    let mut frame = vec![0u8];
    frame.extend((body.len() as u32).to_be_bytes());
    frame.extend(body);
    let req = http::Request::post(format!("http://{}{path}", app.addr))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("grpc-timeout", grpc_timeout)
        .header("authorization", format!("Bearer {token}"))
        .body(http_body_util::Full::new(Bytes::from(frame)))
        .unwrap();
    let response = sender.send_request(req).await.unwrap();
    let code = |h: &http::HeaderMap| h.get("grpc-status").and_then(|v| v.to_str().ok()?.parse().ok());
    if let Some(c) = code(response.headers()) {
        return c;
    }
    let body = response.into_body().collect().await.unwrap();
    body.trailers().and_then(code).expect("a grpc-status")
}

/// Holds `jobs` locked until dropped (the transaction rolls back).
async fn lock_jobs(url: &str) -> tokio_postgres::Client {
    let locker = connect(url).await;
    locker.batch_execute("BEGIN; LOCK TABLE jobs IN ACCESS EXCLUSIVE MODE").await.unwrap();
    locker
}

#[tokio::test]
async fn a_statement_not_yet_prepared_is_bounded_by_the_statement_timeout() {
    let _one = LOCKS.lock().await;
    let url = locks_database_url();
    let (app, name) = server(&["--pool-size", "2", "--statement-timeout-ms", "1500"]).await;
    let t = Tenant::new();
    let db = connect(&url).await;
    let locker = lock_jobs(&url).await;
    // Shapes this server has never prepared: their Parse waits on the lock.
    // Two of them, as many as the pool's connections.
    let run = Uuid::new_v4().simple().to_string();
    let mut ended = Vec::new();
    for i in 0..2 {
        let filter = format!("industry = \"s{i}-{run}\" AND salary_min > {}", i + 1);
        let started = Instant::now();
        let e = app.jobs().list_jobs(list(&t, filter, Duration::from_secs(4))).await.unwrap_err();
        let took = started.elapsed();
        assert_eq!(e.code(), Code::DeadlineExceeded, "{e:?}");
        assert!(
            took >= Duration::from_millis(1400) && took < Duration::from_millis(2500),
            "ended after {took:?}; the statement timeout is 1.5 s"
        );
        ended.push(took.as_millis());
    }
    // Neither connection is left waiting on the lock ...
    let quiet = quiet_within(&db, &name, Duration::from_secs(1)).await;
    assert!(quiet.is_some(), "a statement of the server still waits on the lock");
    // ... so a call on another table is served at once, lock or not.
    let mut served = Vec::new();
    for _ in 0..4 {
        let mut req = authed(&t.reader, ListIngestRunsRequest::default());
        req.set_timeout(Duration::from_secs(1));
        let started = Instant::now();
        app.jobs().list_ingest_runs(req).await.expect("ListIngestRuns while jobs is locked");
        served.push(started.elapsed().as_millis());
    }
    println!(
        "FAULT unprepared-under-lock: DEADLINE_EXCEEDED after {ended:?} ms (statement timeout 1500, \
         caller 4000); server idle {quiet:?} later; other-table calls OK in {served:?} ms"
    );
    drop(locker);
    app.stop().await;
}

#[tokio::test]
async fn an_expired_deadline_is_deadline_exceeded_and_its_statement_ends() {
    let _one = LOCKS.lock().await;
    let url = locks_database_url();
    let (app, name) = server(&[]).await;
    let t = Tenant::new();
    let db = connect(&url).await;
    // Prepared before the lock: the statement timeout (the caller's 100 ms)
    // and the server's own timer race for the same instant.
    let filter = || "industry = \"deadline\"".to_owned();
    app.jobs().list_jobs(list(&t, filter(), Duration::from_secs(5))).await.unwrap();
    let locker = lock_jobs(&url).await;
    let mut codes = Vec::new();
    let mut answered = Vec::new();
    for _ in 0..20 {
        let started = Instant::now();
        let msg = ListJobsRequest { filter: filter(), ..Default::default() };
        codes.push(raw_h2_code(&app, "/bi.data.v1.JobService/ListJobs", &t.reader, &msg, "100m").await);
        assert!(started.elapsed() < Duration::from_millis(600), "answered after {:?}", started.elapsed());
        answered.push(started.elapsed().as_millis());
    }
    assert!(codes.iter().all(|c| *c == Code::DeadlineExceeded as i32), "codes: {codes:?}");
    let quiet = quiet_within(&db, &name, Duration::from_secs(1)).await;
    assert!(quiet.is_some(), "a statement outlived its caller's deadline by more than 1 s");
    answered.sort_unstable();
    println!(
        "FAULT deadline-100ms: {} of 20 DEADLINE_EXCEEDED, answered in {}..{} ms; server idle {quiet:?} later",
        codes.iter().filter(|c| **c == Code::DeadlineExceeded as i32).count(),
        answered[0],
        answered[19]
    );
    drop(locker);
    app.stop().await;
}

#[tokio::test]
async fn a_call_the_caller_abandons_stops_its_statement() {
    let _one = LOCKS.lock().await;
    let url = locks_database_url();
    // No deadline and a long statement timeout: only the cancellation can
    // end the statement while the lock is held.
    let (app, name) = server(&["--statement-timeout-ms", "60000"]).await;
    let t = Tenant::new();
    let db = connect(&url).await;
    let filter = || "industry = \"abandoned\"".to_owned();
    app.jobs().list_jobs(list(&t, filter(), Duration::from_secs(5))).await.unwrap();
    let locker = lock_jobs(&url).await;
    for _ in 0..3 {
        let mut client = app.jobs();
        let mut req = authed(&t.reader, ListJobsRequest { filter: filter(), ..Default::default() });
        req.set_timeout(Duration::from_secs(120));
        let call = tokio::spawn(async move { client.list_jobs(req).await });
        // The statement is waiting on the lock ...
        let started = Instant::now();
        while active(&db, &name).await == 0 {
            assert!(started.elapsed() < Duration::from_secs(5), "the call never reached the database");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // ... when the caller goes away (its stream is reset).
        call.abort();
        let quiet = quiet_within(&db, &name, Duration::from_secs(1)).await;
        assert!(quiet.is_some(), "the abandoned statement still runs 1 s after the caller left");
        println!(
            "FAULT caller-gone: the statement waiting on the lock ended {quiet:?} after the caller left"
        );
    }
    drop(locker);
    app.stop().await;
}

/// An import whose caller goes away mid-stream: the server applies at most
/// the batches it had queued, then stops; what it committed stays, and the
/// run is left cut off (no end time) with counters that stop moving.
#[tokio::test]
async fn an_import_whose_caller_leaves_stops() {
    let (app, name) = server_on(&database_url(), &[]).await;
    let t = Tenant::new();
    let db = raw_db().await;
    let rows = futures_util::stream::iter(0..20_000).map(|i| {
        let mut j = job(&format!("left {i}"));
        j.job_url = format!("https://example.com/left/{i}");
        j
    });
    let stream = rows.chain(futures_util::stream::pending());
    let mut client = app.jobs();
    let w = t.writer.clone();
    let call = tokio::spawn(async move { client.import_jobs(authed(&w, stream)).await });
    let runs = || async {
        app.jobs()
            .list_ingest_runs(authed(&t.reader, ListIngestRunsRequest::default()))
            .await
            .unwrap()
            .into_inner()
            .ingest_runs
    };
    // The caller leaves once the server committed a first batch.
    let started = Instant::now();
    while runs().await.first().is_none_or(|r| r.received == 0) {
        assert!(started.elapsed() < Duration::from_secs(20), "no batch committed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    call.abort();
    let _ = call.await;
    assert!(quiet_within(&db, &name, Duration::from_secs(5)).await.is_some(), "import work goes on");
    let before = runs().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = runs().await;
    assert_eq!(after.len(), 1, "one run");
    assert!(after[0].end_time.is_none(), "a cut-off run has no end time");
    assert_eq!(after[0].received, before[0].received, "its counters stopped moving");
    assert!(after[0].received < 20_000, "the run stopped before the end");
    db.query("SELECT set_config('app.tenant_id', $1, false)", &[&t.id.to_string()]).await.unwrap();
    let stored: i64 = db.query_one("SELECT count(*) FROM jobs", &[]).await.unwrap().get(0);
    assert_eq!(stored, after[0].inserted, "the run counts exactly what was committed");
    app.stop().await;
}
