//! The read replica (issue 15, part 2; docs/replicas.md): a private primary
//! and a streaming replica of it (`pg_basebackup -R`), real servers with
//! `--replica-url`. Stale reads prove which server answered: with replay
//! paused on the replica, a row written since is missing there and present
//! on the primary.

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use bi_data::pb::{
    CreateJobRequest, GetJobRequest, ListJobsRequest, SearchJobsRequest, job_service_client::JobServiceClient,
};
use tonic::{Code, transport::Channel};
use tonic_health::pb::health_check_response::ServingStatus;

use crate::{
    common::*,
    faults::{PrivatePg, load_average},
    observability::{key, scrape},
};

const COMMIT_LSN: &str = "x-bi-commit-lsn";
const MIN_LSN: &str = "x-bi-min-lsn";

async fn replica_server(primary: &PrivatePg, replica: &PrivatePg, max_lag_ms: &str) -> TestApp {
    let app = TestApp::spawn_on(
        &primary.url(),
        &[
            "--replica-url",
            &replica.url(),
            "--replica-max-lag-ms",
            max_lag_ms,
            "--connect-timeout-ms",
            "1000",
        ],
    )
    .await;
    until_replica(&app, ServingStatus::Serving, Duration::from_secs(30)).await;
    app
}

/// Waits for the server's `replica` health to be `want`; how long it took.
async fn until_replica(app: &TestApp, want: ServingStatus, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        if app.health("replica").await == Some(want) {
            return started.elapsed();
        }
        assert!(started.elapsed() < within, "replica health did not become {want:?} within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn create(c: &mut JobServiceClient<Channel>, t: &Tenant, title: &str) -> (String, String) {
    let r = c
        .create_job(authed(&t.writer, CreateJobRequest { job: Some(job(title)), request_id: String::new() }))
        .await
        .expect("create");
    let lsn = r
        .metadata()
        .get(COMMIT_LSN)
        .expect("a write answers its commit position")
        .to_str()
        .unwrap()
        .to_owned();
    (r.into_inner().id, lsn)
}

async fn get(
    c: &mut JobServiceClient<Channel>,
    t: &Tenant,
    id: &str,
    min_lsn: Option<&str>,
) -> Result<(), Code> {
    let mut req = authed(&t.reader, GetJobRequest { id: id.to_owned() });
    if let Some(l) = min_lsn {
        req.metadata_mut().insert(MIN_LSN, l.parse().unwrap());
    }
    c.get_job(req).await.map(|_| ()).map_err(|s| s.code())
}

fn reads(m: &BTreeMap<String, f64>, pool: &str, reason: &str) -> f64 {
    m.get(&key("bi_data_db_reads_total", &[("pool", pool), ("reason", reason)])).copied().unwrap_or(0.0)
}

async fn replayed(replica: &tokio_postgres::Client, id: &str) -> bool {
    let id: uuid::Uuid = id.parse().unwrap();
    replica.query_one("SELECT count(*) FROM jobs WHERE id = $1", &[&id]).await.unwrap().get::<_, i64>(0) == 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_go_to_the_replica_callers_read_their_writes_and_lag_or_loss_send_them_to_the_primary() {
    let primary = PrivatePg::start().await;
    // Migrated before the replica is made: it starts with the schema.
    let a = TestApp::spawn_on(&primary.url(), &[]).await;
    a.stop().await;
    let replica = primary.replica().await;
    let s = replica_server(&primary, &replica, "60000").await;
    let s2 = replica_server(&primary, &replica, "60000").await;
    let tight = replica_server(&primary, &replica, "300").await;
    let (mut c, mut c2, mut ct) = (
        JobServiceClient::new(s.channel.clone()),
        JobServiceClient::new(s2.channel.clone()),
        JobServiceClient::new(tight.channel.clone()),
    );
    let standby = replica.superuser().await;

    // A write, then reads of the same tenant: the first ones wait for the
    // replica to replay it (primary), later ones go to the replica.
    let t1 = Tenant::new();
    let (j1, _) = create(&mut c, &t1, "routed").await;
    assert_eq!(get(&mut c, &t1, &j1, None).await, Ok(()), "the writer reads its write at once");
    let started = Instant::now();
    while !replayed(&standby, &j1).await {
        assert!(started.elapsed() < Duration::from_secs(10), "the replica never replayed the write");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await; // a watcher check after the replay
    let before = scrape(s.metrics_addr).await;
    for _ in 0..5 {
        assert_eq!(get(&mut c, &t1, &j1, None).await, Ok(()));
    }
    let after = scrape(s.metrics_addr).await;
    assert_eq!(reads(&after, "replica", "replica") - reads(&before, "replica", "replica"), 5.0, "{after:#?}");
    assert_eq!(after.get(&key("bi_data_db_replica_up", &[])), Some(&1.0));
    assert!(after.contains_key(&key("bi_data_db_pool_connections", &[("pool", "replica")])));

    // Replay paused: a write through s2 is on the primary only.
    standby.execute("SELECT pg_wal_replay_pause()", &[]).await.unwrap();
    let t2 = Tenant::new();
    let (j2, lsn2) = create(&mut c2, &t2, "paused").await;
    // s has not seen that write: its read goes to the replica, which lacks it.
    assert_eq!(get(&mut c, &t2, &j2, None).await, Err(Code::NotFound), "the stale replica answered");
    // The caller sends the commit position back: s sends the read to the primary.
    assert_eq!(get(&mut c, &t2, &j2, Some(&lsn2)).await, Ok(()), "x-bi-min-lsn honoured");
    // s2 tracked the write of that tenant itself.
    assert_eq!(
        get(&mut c2, &t2, &j2, None).await,
        Ok(()),
        "the writing server routes its tenant to the primary"
    );
    // A tenant that wrote nothing still reads from the (60 s-tolerant) replica.
    let listed = c
        .list_jobs(authed(&t1.reader, ListJobsRequest { page_size: 10, ..Default::default() }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.jobs.len(), 1);
    let bad = c
        .get_job({
            let mut r = authed(&t1.reader, GetJobRequest { id: j1.clone() });
            r.metadata_mut().insert(MIN_LSN, "not-a-position".parse().unwrap());
            r
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument, "{bad:?}");

    // The lag bound: the 300 ms server stops using the paused replica.
    let lagging = until_replica(&tight, ServingStatus::NotServing, Duration::from_secs(5)).await;
    assert_eq!(get(&mut ct, &t2, &j2, None).await, Ok(()), "beyond the lag bound reads go to the primary");
    let m = scrape(tight.metrics_addr).await;
    assert!(reads(&m, "primary", "replica_lagging") >= 1.0, "{m:#?}");
    assert_eq!(m.get(&key("bi_data_db_replica_usable", &[])), Some(&0.0));
    assert!(m[&key("bi_data_db_replica_lag_seconds", &[])] >= 0.3, "{m:#?}");
    assert_eq!(s.health("replica").await, Some(ServingStatus::Serving), "within s's 60 s bound");
    standby.execute("SELECT pg_wal_replay_resume()", &[]).await.unwrap();
    let caught_up = until_replica(&tight, ServingStatus::Serving, Duration::from_secs(5)).await;

    // The replica down: reads go on, from the primary; then it comes back.
    drop(standby);
    replica.stop_immediate().await;
    let stopped = Instant::now();
    assert_eq!(get(&mut c, &t1, &j1, None).await, Ok(()), "a read while the replica is gone");
    let first_read = stopped.elapsed();
    let down = until_replica(&s, ServingStatus::NotServing, Duration::from_secs(5)).await;
    assert_eq!(get(&mut c, &t1, &j1, None).await, Ok(()));
    let m = scrape(s.metrics_addr).await;
    assert_eq!(m.get(&key("bi_data_db_replica_up", &[])), Some(&0.0));
    replica.start_again().await;
    let restarted = Instant::now();
    until_replica(&s, ServingStatus::Serving, Duration::from_secs(15)).await;
    let back = restarted.elapsed();
    let before = scrape(s.metrics_addr).await;
    assert_eq!(get(&mut c, &t1, &j1, None).await, Ok(()));
    let after = scrape(s.metrics_addr).await;
    assert_eq!(reads(&after, "replica", "replica") - reads(&before, "replica", "replica"), 1.0);
    println!(
        "REPLICA routing: lag bound 300 ms left after {lagging:?}, usable again {caught_up:?} after resume; \
         replica stopped: first read answered in {first_read:?}, NOT_SERVING after {down:?}; \
         restarted: reads back on it after {back:?}; load {}",
        load_average()
    );
}

/// Callers writing and at once reading their rows (through the server that
/// wrote and through another one, with the commit position), while the
/// replica pauses replay (lags), resumes, is killed and comes back: no
/// caller ever misses its own write, and no call fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_load_with_a_lagging_then_dead_replica_every_caller_reads_its_writes() {
    let primary = PrivatePg::start().await;
    let a = TestApp::spawn_on(&primary.url(), &[]).await;
    a.stop().await;
    let replica = primary.replica().await;
    let s = replica_server(&primary, &replica, "500").await;
    let s2 = replica_server(&primary, &replica, "500").await;
    let before = (scrape(s.metrics_addr).await, scrape(s2.metrics_addr).await);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (writes, reads_done, misses, errors) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let mut callers = Vec::new();
    for i in 0..6 {
        let (own, other) = if i % 2 == 0 {
            (s.channel.clone(), s2.channel.clone())
        } else {
            (s2.channel.clone(), s.channel.clone())
        };
        let (stop, writes, reads_done, misses, errors) =
            (stop.clone(), writes.clone(), reads_done.clone(), misses.clone(), errors.clone());
        callers.push(tokio::spawn(async move {
            let t = Tenant::new();
            let (mut own, mut other) = (JobServiceClient::new(own), JobServiceClient::new(other));
            let mut mine = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let r = own
                    .create_job(authed(
                        &t.writer,
                        CreateJobRequest { job: Some(job("load")), request_id: String::new() },
                    ))
                    .await;
                let Ok(r) = r else {
                    errors.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                writes.fetch_add(1, Ordering::Relaxed);
                mine += 1;
                let lsn = r.metadata().get(COMMIT_LSN).unwrap().to_str().unwrap().to_owned();
                let id = r.into_inner().id;
                for (c, min) in [(&mut own, None), (&mut other, Some(lsn.as_str()))] {
                    match get(c, &t, &id, min).await {
                        Ok(()) => {}
                        Err(Code::NotFound) => {
                            misses.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(_) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    reads_done.fetch_add(1, Ordering::Relaxed);
                }
                // Newest first: the page is the write just made, the count all of them.
                let page = own
                    .list_jobs(authed(
                        &t.reader,
                        ListJobsRequest { page_size: 1, count: true, ..Default::default() },
                    ))
                    .await
                    .map(|p| p.into_inner());
                reads_done.fetch_add(1, Ordering::Relaxed);
                match page {
                    Ok(p) if p.total_size == mine as i64 && p.jobs.first().is_some_and(|j| j.id == id) => {}
                    Ok(_) => {
                        misses.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    let standby = replica.superuser().await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    standby.execute("SELECT pg_wal_replay_pause()", &[]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    standby.execute("SELECT pg_wal_replay_resume()", &[]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    drop(standby);
    replica.stop_immediate().await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    replica.start_again().await;
    until_replica(&s, ServingStatus::Serving, Duration::from_secs(15)).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    stop.store(true, Ordering::Relaxed);
    for c in callers {
        c.await.unwrap();
    }
    let after = (scrape(s.metrics_addr).await, scrape(s2.metrics_addr).await);
    let by = |pool: &str, reason: &str| {
        reads(&after.0, pool, reason) - reads(&before.0, pool, reason) + reads(&after.1, pool, reason)
            - reads(&before.1, pool, reason)
    };
    let on_replica = by("replica", "replica");
    let (behind, lagging, down, failed) = (
        by("primary", "replica_behind_caller"),
        by("primary", "replica_lagging"),
        by("primary", "replica_down"),
        by("primary", "replica_failed"),
    );
    let (w, r, miss, err) = (
        writes.load(Ordering::Relaxed),
        reads_done.load(Ordering::Relaxed),
        misses.load(Ordering::Relaxed),
        errors.load(Ordering::Relaxed),
    );
    println!(
        "REPLICA load: {w} writes, {r} reads by 6 callers; {miss} missed own writes, {err} failed calls; \
         reads served by the replica {on_replica}, by the primary: behind caller {behind}, lagging {lagging}, \
         replica down {down}, replica failed mid-read {failed}; load {}",
        load_average()
    );
    assert_eq!(miss, 0, "a caller did not read its own write");
    assert_eq!(err, 0, "calls failed");
    assert!(w >= 30, "too little load to tell: {w} writes");
    assert!(on_replica >= 10.0, "the replica served almost nothing: {on_replica}");
    assert!(lagging >= 1.0, "the paused replica was never judged lagging");
    assert!(down + failed >= 1.0, "the dead replica was never skipped");
}

/// A replica that hangs (SIGSTOP: it neither answers nor refuses) holds no
/// read beyond the connect timeout: the check that times out marks it down,
/// the read waiting on it gives up and runs on the primary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_replica_is_skipped_within_its_connect_timeout() {
    let primary = PrivatePg::start().await;
    let a = TestApp::spawn_on(&primary.url(), &[]).await;
    a.stop().await;
    let replica = primary.replica().await;
    let s = replica_server(&primary, &replica, "60000").await; // --connect-timeout-ms 1000
    let mut c = JobServiceClient::new(s.channel.clone());
    let t = Tenant::new();
    let (id, _) = create(&mut c, &t, "hung").await;
    let standby = replica.superuser().await;
    while !replayed(&standby, &id).await {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(standby);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = scrape(s.metrics_addr).await;
    assert_eq!(get(&mut c, &t, &id, None).await, Ok(()));
    let mid = scrape(s.metrics_addr).await;
    assert_eq!(
        reads(&mid, "replica", "replica") - reads(&before, "replica", "replica"),
        1.0,
        "read on the replica"
    );

    replica.freeze(true);
    let frozen = Instant::now();
    let mut req = authed(&t.reader, GetJobRequest { id: id.clone() });
    req.set_timeout(Duration::from_secs(20));
    // A search in flight on the replica at the same time (a transaction of
    // its own: begin_read, then statements).
    let mut search = authed(&t.reader, SearchJobsRequest { query: "hung".into(), ..Default::default() });
    search.set_timeout(Duration::from_secs(20));
    let mut cs = c.clone();
    let (r, searched) = tokio::join!(c.get_job(req), async {
        let r = cs.search_jobs(search).await;
        (r.map(|_| ()).map_err(|s| s.code()), frozen.elapsed())
    });
    let first = frozen.elapsed();
    let second_started = Instant::now();
    let r2 = get(&mut c, &t, &id, None).await;
    let second = second_started.elapsed();
    let health = tokio::time::timeout(
        Duration::from_secs(5),
        until_replica(&s, ServingStatus::NotServing, Duration::from_secs(5)),
    )
    .await;
    let after = scrape(s.metrics_addr).await;
    replica.freeze(false);
    assert!(r.is_ok(), "the read on the hung replica failed: {r:?}");
    assert_eq!(r2, Ok(()));
    // The check's bound (1 s), a tick, and room for a loaded machine; a read
    // left waiting on the replica would take the whole 20 s deadline.
    assert!(first < Duration::from_secs(6), "the read waited {first:?} on a hung replica");
    // A search either ran before the freeze or on the primary, or gave up
    // UNAVAILABLE (retryable) when the replica was found down: it does not
    // wait out its deadline.
    assert!(matches!(searched.0, Ok(()) | Err(Code::Unavailable)), "{searched:?}");
    assert!(searched.1 < Duration::from_secs(6), "the search waited {:?} on a hung replica", searched.1);
    assert!(health.is_ok(), "the hung replica was never reported NOT_SERVING");
    let moved = |reason: &str| reads(&after, "primary", reason) - reads(&mid, "primary", reason);
    assert!(moved("replica_failed") + moved("replica_down") >= 1.0, "{after:#?}");
    let back = until_replica(&s, ServingStatus::Serving, Duration::from_secs(15)).await;
    println!(
        "REPLICA hung: first read answered in {first:?} (connect timeout 1 s), the next in {second:?}; \
         a search in flight answered {:?} after {:?}; SERVING again {back:?} after SIGCONT; load {}",
        searched.0,
        searched.1,
        load_average()
    );
}
