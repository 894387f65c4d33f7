//! PostgreSQL goes away under load: a fast restart, a crash (SIGKILL), a
//! network cut; and a pool exhausted by long statements.

use std::{
    future::Future,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bi_data::pb::{ListIngestRunsRequest, ListJobsRequest};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

use super::*;

type Transitions = Arc<Mutex<Vec<(Instant, Option<ServingStatus>)>>>;

/// Health transitions seen by polling every 25 ms.
struct HealthLog {
    seen: Transitions,
    task: tokio::task::JoinHandle<()>,
}

impl HealthLog {
    fn start(channel: tonic::transport::Channel) -> HealthLog {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                let h = health(&channel).await;
                {
                    let mut s = s.lock().unwrap();
                    if s.last().is_none_or(|(_, last)| *last != h) {
                        s.push((Instant::now(), h));
                    }
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        });
        HealthLog { seen, task }
    }

    /// The first time at or after `from` the status was `want`.
    fn first(&self, want: ServingStatus, from: Instant) -> Option<Instant> {
        self.seen.lock().unwrap().iter().find(|(t, h)| *t >= from && *h == Some(want)).map(|(t, _)| *t)
    }
}

impl Drop for HealthLog {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What one outage scenario measured.
struct Outage {
    acked: usize,
    lost: usize,
    dup: usize,
    retried: usize,
    not_serving_after: Option<Duration>,
    serving_after: Option<Duration>,
    during: BTreeMap<&'static str, u64>,
    after: BTreeMap<&'static str, u64>,
    p99_during: Duration,
    late: u64,
    unexpected: Vec<(&'static str, u64)>,
}

/// Load against a server on `pg` (through `url`), `fault` in the middle
/// (it returns when PostgreSQL accepts again), load on for `settle` after;
/// then every failed write retried with its request id, and rows compared.
async fn outage<F: Future<Output = ()>>(
    name: &str,
    pg: &PrivatePg,
    url: &str,
    writes: u32,
    reads: u32,
    fault: F,
) -> Outage {
    let app = TestApp::spawn_on(url, &["--pool-wait-ms", "500", "--connect-timeout-ms", "500"]).await;
    let t = Tenant::new();
    let deadline = Duration::from_secs(1);
    let load = Load::start(app.channel.clone(), &t, writes, reads, deadline).await;
    let health = HealthLog::start(app.channel.clone());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let down = Instant::now();
    fault.await;
    let up = Instant::now();
    // Until the server is SERVING again and then 2 s of normal service.
    until_health(&app.channel, ServingStatus::Serving, Duration::from_secs(10)).await;
    let settled = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let end = Instant::now();
    let tally = load.stop().await;
    let retried = retry_failed(app.channel.clone(), &t, &tally.failed_writes).await;
    let mut expected = tally.acked.clone();
    expected.extend(retried.iter().cloned());
    let stored = stored_urls(pg, t.id).await;
    let (lost, dup) = compare(&expected, &stored);
    let o = Outage {
        acked: tally.acked.len(),
        lost,
        dup,
        retried: retried.len(),
        not_serving_after: health.first(ServingStatus::NotServing, down).map(|t| t - down),
        serving_after: health.first(ServingStatus::Serving, up).map(|t| t - up),
        during: tally.codes_between(down, settled),
        after: tally.codes_between(settled, end),
        p99_during: tally.p99_between(down, settled),
        late: tally.late,
        unexpected: tally.unexpected(&[Code::Unavailable]),
    };
    println!(
        "FAULT {name}: acked={} retried={} lost={} dup={} not_serving_after={:?} serving_after={:?} \
         during={:?} after={:?} p99_during={:?} late={} load_avg={}",
        o.acked,
        o.retried,
        o.lost,
        o.dup,
        o.not_serving_after,
        o.serving_after,
        o.during,
        o.after,
        o.p99_during,
        o.late,
        load_average()
    );
    app.stop().await;
    o
}

/// What every outage must show.
fn assert_outage(o: &Outage) {
    assert!(o.acked > 0, "no write was acknowledged");
    assert_eq!((o.lost, o.dup), (0, 0), "acknowledged writes lost / duplicated");
    assert!(o.unexpected.is_empty(), "codes other than OK and UNAVAILABLE: {:?}", o.unexpected);
    assert_eq!(o.late, 0, "calls answered after their deadline");
    let not_serving = o.not_serving_after.expect("health never went NOT_SERVING");
    assert!(not_serving <= Duration::from_secs(2), "NOT_SERVING {not_serving:?} after the outage");
    let serving = o.serving_after.expect("health never came back");
    assert!(serving <= Duration::from_secs(2), "SERVING {serving:?} after PostgreSQL accepted again");
    assert!(o.during.get("UNAVAILABLE").is_some_and(|n| *n > 0), "the outage was not seen: {:?}", o.during);
    // Recovered: no stale connection or prepared statement errors after.
    assert_eq!(o.after.keys().copied().collect::<Vec<_>>(), ["OK"], "after recovery: {:?}", o.after);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_fast_restart_under_load() {
    let pg = PrivatePg::start().await;
    let o = outage("pg-restart", &pg, &pg.url(), 50, 300, pg.restart_fast(Duration::from_secs(3))).await;
    assert_outage(&o);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_killed_under_load() {
    let pg = PrivatePg::start().await;
    let o = outage("pg-kill9", &pg, &pg.url(), 50, 300, pg.kill_and_start(Duration::from_secs(3))).await;
    assert_outage(&o);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_cut_under_load() {
    let pg = PrivatePg::start().await;
    let proxy = Proxy::start(([127, 0, 0, 1], pg.port).into()).await;
    let url = format!("postgres://bi_data_owner:bi_data@{}/bi_data", proxy.addr);
    let cut = async {
        proxy.set(false);
        tokio::time::sleep(Duration::from_secs(3)).await;
        proxy.set(true);
    };
    let o = outage("network-cut", &pg, &url, 50, 300, cut).await;
    assert_outage(&o);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long: scripts/fault-suite.sh --long"]
async fn postgres_restart_and_kill_at_full_load() {
    let pg = PrivatePg::start().await;
    let o =
        outage("pg-restart-full", &pg, &pg.url(), 100, 1000, pg.restart_fast(Duration::from_secs(5))).await;
    assert_outage(&o);
    let o =
        outage("pg-kill9-full", &pg, &pg.url(), 100, 1000, pg.kill_and_start(Duration::from_secs(5))).await;
    assert_outage(&o);
}

/// Long statements hold every pooled connection: a new call waits the
/// configured pool wait and is answered UNAVAILABLE, saying why; once the
/// statements end, calls are served again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_exhausted_by_long_statements() {
    let pg = PrivatePg::start().await;
    let app = TestApp::spawn_on(&pg.url(), &["--pool-size", "2", "--pool-wait-ms", "300"]).await;
    let t = Tenant::new();
    let db = pg.superuser().await;
    db.batch_execute("BEGIN; LOCK TABLE jobs IN ACCESS EXCLUSIVE MODE").await.unwrap();
    let mut long = Vec::new();
    for _ in 0..2 {
        let mut c = app.jobs();
        let mut req = authed(&t.reader, ListJobsRequest::default());
        req.set_timeout(Duration::from_secs(20));
        long.push(tokio::spawn(async move { c.list_jobs(req).await.map(|_| ()) }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut waits = Vec::new();
    for _ in 0..3 {
        let mut req = authed(&t.reader, ListIngestRunsRequest::default());
        req.set_timeout(Duration::from_secs(5));
        let started = Instant::now();
        let e = app.jobs().list_ingest_runs(req).await.unwrap_err();
        let waited = started.elapsed();
        assert_eq!(e.code(), Code::Unavailable, "{e:?}");
        assert!(e.message().contains("pool"), "the message says why: {}", e.message());
        assert!(
            waited >= Duration::from_millis(250) && waited < Duration::from_secs(1),
            "answered after {waited:?}"
        );
        waits.push(waited.as_millis());
    }
    db.batch_execute("ROLLBACK").await.unwrap();
    for l in long {
        l.await.unwrap().expect("the long statements complete once the lock is gone");
    }
    let started = Instant::now();
    app.jobs()
        .list_ingest_runs(authed(&t.reader, ListIngestRunsRequest::default()))
        .await
        .expect("served again");
    println!(
        "FAULT pool-exhausted: UNAVAILABLE after {waits:?} ms (pool wait 300); served again in {:?}; load_avg={}",
        started.elapsed(),
        load_average()
    );
    app.stop().await;
}
