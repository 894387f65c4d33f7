//! Operations: health follows the database, a dead database answers
//! UNAVAILABLE quickly, reflection works with grpcurl against the real
//! binary, and SIGTERM drains and exits 0 even with a health Watch open.

use std::{
    net::SocketAddr,
    process::{Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use bi_data::pb::{CreateJobRequest, ListJobsRequest};
use tokio::{net::TcpListener, sync::watch};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::common::*;

/// A TCP proxy to PostgreSQL that the test can cut and restore, standing in
/// for a database that goes away and comes back.
struct Proxy {
    addr: SocketAddr,
    up: Arc<watch::Sender<bool>>,
}

impl Proxy {
    async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, _) = watch::channel(true);
        let up = Arc::new(tx);
        let up2 = up.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                let mut rx = up2.subscribe();
                if !*rx.borrow() {
                    continue; // refused: dropped at once
                }
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = rx.wait_for(|up| !*up) => {}
                    }
                });
            }
        });
        Proxy { addr, up }
    }

    fn set(&self, up: bool) {
        self.up.send_replace(up);
    }
}

fn db_target() -> (SocketAddr, String) {
    let cfg: tokio_postgres::Config = database_url().parse().unwrap();
    let host = match &cfg.get_hosts()[0] {
        tokio_postgres::config::Host::Tcp(h) => h.clone(),
        #[allow(unreachable_patterns)]
        _ => "127.0.0.1".into(),
    };
    let port = cfg.get_ports().first().copied().unwrap_or(5432);
    let addr = format!("{}:{port}", if host == "localhost" { "127.0.0.1" } else { &host }).parse().unwrap();
    (addr, database_url())
}

fn via(url: &str, proxy: SocketAddr) -> String {
    let mut cfg: tokio_postgres::Config = url.parse().unwrap();
    let user = cfg.get_user().unwrap_or("postgres").to_owned();
    let pw = cfg.get_password().map(|p| String::from_utf8_lossy(p).into_owned());
    let db = cfg.get_dbname().unwrap_or("postgres").to_owned();
    cfg.host("127.0.0.1");
    match pw {
        Some(pw) => format!("postgres://{user}:{pw}@{proxy}/{db}"),
        None => format!("postgres://{user}@{proxy}/{db}"),
    }
}

#[tokio::test]
async fn health_follows_the_database() {
    let (target, url) = db_target();
    let proxy = Proxy::start(target).await;
    let proxied = via(&url, proxy.addr);
    let app = TestApp::start(serve_args(&[
        "--database-url",
        &proxied,
        "--pool-wait-ms",
        "500",
        "--connect-timeout-ms",
        "500",
    ]))
    .await;
    app.wait_for(ServingStatus::Serving, Duration::from_secs(30)).await;
    for name in ["bi.data.v1.JobService", "bi.data.v1.AuditService"] {
        assert_eq!(app.health(name).await, Some(ServingStatus::Serving), "{name}");
    }
    let t = Tenant::new();
    let mut c = app.jobs();
    c.list_jobs(authed(&t.reader, ListJobsRequest::default())).await.unwrap();

    proxy.set(false);
    app.wait_for(ServingStatus::NotServing, Duration::from_secs(10)).await;
    assert_eq!(app.health("bi.data.v1.JobService").await, Some(ServingStatus::NotServing));
    let started = Instant::now();
    let e = c.list_jobs(authed(&t.reader, ListJobsRequest::default())).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());

    proxy.set(true);
    app.wait_for(ServingStatus::Serving, Duration::from_secs(10)).await;
    c.create_job(authed(&t.writer, CreateJobRequest { job: Some(job("back")), request_id: String::new() }))
        .await
        .unwrap();
    app.stop().await;
}

#[tokio::test]
async fn dead_database_means_unavailable_not_a_hang() {
    // Nothing listens on port 1.
    let args = serve_args(&[
        "--database-url",
        "postgres://bi_data_owner:bi_data@127.0.0.1:1/bi_data_test",
        "--pool-wait-ms",
        "500",
        "--connect-timeout-ms",
        "500",
    ]);
    let app = TestApp::start(args).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(app.health("").await, Some(ServingStatus::NotServing));
    let t = Tenant::new();
    let started = Instant::now();
    let e = app.jobs().list_jobs(authed(&t.reader, ListJobsRequest::default())).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);
    assert!(!e.message().contains("127.0.0.1"), "no internals: {}", e.message());
    assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());
    app.stop().await;
}

fn grpcurl() -> String {
    std::env::var("GRPCURL").unwrap_or_else(|_| "grpcurl".into())
}

fn run_grpcurl(args: &[&str]) -> (bool, String) {
    let out = Command::new(grpcurl()).args(args).output().unwrap_or_else(|e| {
        panic!("grpcurl not runnable ({e}); scripts/test.sh installs it and sets GRPCURL")
    });
    (
        out.status.success(),
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
    )
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test]
async fn grpcurl_smoke_and_sigterm_with_open_watch() {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let metrics = format!("127.0.0.1:{}", free_port());
    let mut server = Command::new(env!("CARGO_BIN_EXE_bi-data"))
        .args(["serve", "--listen", &addr, "--metrics-listen", &metrics, "--drain-timeout-ms", "5000"])
        .env("DATABASE_URL", database_url())
        .env_remove("MIGRATION_DATABASE_URL")
        .env("JWT_SECRET", SECRET)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let up = tokio::task::spawn_blocking({
        let addr = addr.clone();
        move || {
            let deadline = Instant::now() + Duration::from_secs(60);
            while Instant::now() < deadline {
                let (ok, out) = run_grpcurl(&["-plaintext", &addr, "grpc.health.v1.Health/Check"]);
                if ok && out.contains("SERVING") && !out.contains("NOT_SERVING") {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            false
        }
    })
    .await
    .unwrap();
    assert!(up, "server did not become SERVING");

    let t = Tenant::new();
    let auth = format!("authorization: Bearer {}", t.writer);
    let (ok, out) = run_grpcurl(&["-plaintext", &addr, "list"]);
    assert!(ok, "{out}");
    for s in [
        "bi.data.v1.JobService",
        "bi.data.v1.AuditService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
    ] {
        assert!(out.contains(s), "{s} missing from: {out}");
    }
    let (ok, out) = run_grpcurl(&["-plaintext", &addr, "describe", "bi.data.v1.JobService"]);
    assert!(ok && out.contains("rpc CreateJob") && out.contains("rpc ListJobs"), "{out}");
    let (ok, out) = run_grpcurl(&["-plaintext", &addr, "describe", "bi.data.v1.Job"]);
    assert!(ok && out.contains("job_url"), "{out}");
    let (ok, out) = run_grpcurl(&[
        "-plaintext",
        "-H",
        &auth,
        "-d",
        r#"{"job": {"title": "grpcurl engineer", "company_name": "Curl Co", "keywords": ["cli"]}}"#,
        &addr,
        "bi.data.v1.JobService/CreateJob",
    ]);
    assert!(ok && out.contains("\"id\"") && out.contains("grpcurl engineer"), "{out}");
    let (ok, out) = run_grpcurl(&[
        "-plaintext",
        "-H",
        &auth,
        "-d",
        r#"{"filter": "keywords:\"cli\"", "count": true}"#,
        &addr,
        "bi.data.v1.JobService/ListJobs",
    ]);
    assert!(ok && out.contains("grpcurl engineer") && out.contains("\"totalSize\": \"1\""), "{out}");
    let (ok, out) = run_grpcurl(&["-plaintext", "-d", "{}", &addr, "bi.data.v1.JobService/ListJobs"]);
    assert!(!ok && out.contains("Unauthenticated"), "{out}");

    // An open Watch stream must not hold the process past the drain.
    let mut watch = Command::new(grpcurl())
        .args(["-plaintext", "-d", "{}", &addr, "grpc.health.v1.Health/Watch"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pid = server.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let started = Instant::now();
    let status = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(s) = server.try_wait().unwrap() {
                return Some(s);
            }
            if Instant::now() > deadline {
                let _ = server.kill();
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    })
    .await
    .unwrap();
    let _ = watch.kill();
    let _ = watch.wait();
    let status = status.expect("server did not exit after SIGTERM");
    assert!(status.success(), "exit status {status:?}");
    assert!(started.elapsed() < Duration::from_secs(6), "shutdown took {:?}", started.elapsed());
}

/// The JSON forms the README documents, as the grpcurl the project
/// installs (1.8.6, through reflection) takes them: a FieldMask only as an
/// object (the proto3 JSON string form fails), Timestamps as RFC 3339
/// strings, Structs as JSON objects, enums by name or number.
#[tokio::test]
async fn grpcurl_json_forms_are_the_ones_the_readme_shows() {
    let app = TestApp::spawn().await;
    let addr = app.addr.to_string();
    let t = Tenant::new();
    let auth = format!("authorization: Bearer {}", t.writer);
    let call = move |body: String, method: &'static str| {
        let (addr, auth) = (addr.clone(), auth.clone());
        async move {
            tokio::task::spawn_blocking(move || {
                run_grpcurl(&[
                    "-plaintext",
                    "-H",
                    &auth,
                    "-d",
                    &body,
                    &addr,
                    &format!("bi.data.v1.JobService/{method}"),
                ])
            })
            .await
            .unwrap()
        }
    };
    let (ok, out) = call(
        r#"{"job": {"title": "JSON forms", "company_name": "Curl Co", "job_type": "JOB_TYPE_CONTRACT",
            "posting_time": "2026-01-05T09:30:00Z", "attributes": {"visa": true, "team": {"size": 4}}}}"#
            .into(),
        "CreateJob",
    )
    .await;
    assert!(ok, "{out}");
    let job: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(job["jobType"], "JOB_TYPE_CONTRACT");
    assert_eq!(job["postingTime"], "2026-01-05T09:30:00Z");
    assert_eq!(job["attributes"]["team"]["size"], 4.0);
    let id = job["id"].as_str().unwrap().to_owned();

    // FieldMask as an object: accepted.
    let (ok, out) = call(
        format!(r#"{{"job": {{"id": "{id}", "title": "Masked", "job_type": 4}}, "update_mask": {{"paths": ["title", "job_type"]}}}}"#),
        "UpdateJob",
    )
    .await;
    assert!(ok, "{out}");
    let job: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(job["title"], "Masked");
    assert_eq!(job["jobType"], "JOB_TYPE_INTERNSHIP", "an enum by number");
    // FieldMask as the proto3 JSON string: refused by this grpcurl.
    let (ok, out) = call(
        format!(r#"{{"job": {{"id": "{id}", "title": "String"}}, "update_mask": "title"}}"#),
        "UpdateJob",
    )
    .await;
    assert!(!ok, "{out}");
    assert!(out.contains("expecting start of JSON object"), "{out}");
}

/// What keeps `serve` from starting is one line on stderr naming the cause
/// and what to do, and a non-zero exit, never a panic or a retry forever.
#[tokio::test]
async fn startup_errors_are_one_clear_line_and_a_non_zero_exit() {
    let db = |url: &str| vec!["--database-url".to_owned(), url.to_owned()];
    let base = database_url();
    let wrong_db = base.rsplit_once('/').map(|(b, _)| format!("{b}/bi_data_no_such_db")).unwrap();
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_addr = busy.local_addr().unwrap().to_string();
    // (serve's arguments, environment, what the last line must say)
    type Case = (Vec<String>, &'static [(&'static str, &'static str)], &'static str);
    let cases: Vec<Case> = vec![
        (db(&base), &[("JWT_SECRET", "")], "no JWT secret: pass --jwt-secret or set JWT_SECRET"),
        (
            db("postgres://bi_data_owner:bi_data@127.0.0.1:1/bi_data"),
            &[],
            "cannot reach PostgreSQL at 127.0.0.1:1",
        ),
        (db(&wrong_db), &[], "database 'bi_data_no_such_db' does not exist"),
        (
            db("postgres://bi_data_no_such_role@127.0.0.1:5432/bi_data"),
            &[],
            "refused the login of user 'bi_data_no_such_role'",
        ),
        (
            [db(&base), vec!["--listen".into(), busy_addr.clone()]].concat(),
            &[],
            "holds it: stop it or choose another --listen",
        ),
    ];
    for (args, env, want) in cases {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_bi-data"));
        // Port 0 unless the case names its own (the later flag wins): the
        // default 50051 may be a demo server's.
        cmd.arg("serve")
            .args(["--listen", "127.0.0.1:0"])
            .args(&args)
            .args(["--metrics-listen", "127.0.0.1:0", "--startup-timeout-ms", "1000", "--no-migrate"])
            .env("JWT_SECRET", SECRET)
            .env_remove("MIGRATION_DATABASE_URL");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = tokio::task::spawn_blocking(move || cmd.output().unwrap()).await.unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let last = stderr.lines().last().unwrap_or_default();
        assert!(!out.status.success(), "{want}: exited 0");
        assert!(
            last.starts_with("error: ") && last.contains(want),
            "{want}: last line was {last:?}\n{stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    drop(busy);
}

/// A statement whose caller goes away mid-flight (the call cancelled, its
/// deadline passed, a report's reader gone) does not run to its end: the
/// transaction cancels it and closes its connection (tests/it/deadlines.rs
/// has the same through gRPC, behind a lock).
#[tokio::test]
async fn a_statement_abandoned_mid_flight_stops_on_the_server() {
    let store = bi_data::store::Store::new(&serve_args(&[]).db, Duration::from_secs(1)).expect("store");
    let scope = bi_data::store::Scope {
        tenant: uuid::Uuid::new_v4(),
        actor: "abandon".into(),
        admin: false,
        request_id: None,
        trace_id: None,
        timeout: Duration::from_secs(60),
        deadline: None,
        rpc: None,
        lsn: None,
    };
    let tx = store.begin_read(&scope).await.expect("begin");
    // A statement text no other test runs.
    let slow = tokio::time::timeout(Duration::from_millis(300), tx.query("SELECT pg_sleep(29.5)", &[])).await;
    assert!(slow.is_err(), "the statement was still running when its caller left");
    drop(tx);
    let db = raw_db().await;
    let stopped = async {
        loop {
            let n: i64 = db
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(29.5)' AND state = 'active'",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            if n == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(3), stopped)
        .await
        .expect("the backend stopped the abandoned statement");
    // The pool is still usable afterwards.
    let tx = store.begin_read(&scope).await.expect("begin again");
    assert_eq!(tx.query("SELECT 1", &[]).await.unwrap().len(), 1);
    store.close();
}
