//! Two replicas of the real binary on one fresh database: they start
//! together and migrate once, and one stops (SIGTERM) under load while the
//! other goes on serving.

use std::time::{Duration, Instant};

use tonic_health::pb::health_check_response::ServingStatus;

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_migrate_once_and_one_drains_on_sigterm() {
    let pg = PrivatePg::start().await;
    let url = pg.url();
    let drain = ["--drain-timeout-ms", "5000", "--shutdown-grace-ms", "1000"];
    let mut a = Process::spawn(&url, &drain);
    let b = Process::spawn(&url, &drain);
    for p in [&a, &b] {
        let up = until_health(&p.channel, ServingStatus::Serving, Duration::from_secs(60)).await;
        assert!(up.is_some(), "a replica never became SERVING: {}", p.logs());
    }
    // Every migration applied exactly once, and neither replica logged an
    // error on the way (e.g. a background task before the schema existed).
    let db = pg.superuser().await;
    let applied: Vec<(i32, i64)> = db
        .query("SELECT version, count(*) FROM refinery_schema_history GROUP BY version ORDER BY version", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert!(!applied.is_empty() && applied.iter().all(|(_, n)| *n == 1), "{applied:?}");
    for p in [&a, &b] {
        let logs = p.logs();
        assert!(!logs.contains("ERROR"), "errors at start: {logs}");
    }
    // Nor did PostgreSQL see a failed statement (e.g. 42P01 from a
    // background task that ran before the schema existed).
    let pg_log = pg.log();
    assert!(!pg_log.contains("ERROR"), "PostgreSQL logged errors while the replicas started: {pg_log}");

    // Load on A, then SIGTERM: NOT_SERVING at once, calls still served for
    // the grace period (1 s), then the calls in flight complete and the
    // process exits 0 within the drain timeout.
    let t = Tenant::new();
    let started_load = Instant::now();
    let load = Load::start(a.channel.clone(), &t, 50, 300, Duration::from_secs(2)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let signalled = Instant::now();
    a.signal("-TERM");
    let not_serving = until_health(&a.channel, ServingStatus::NotServing, Duration::from_secs(2)).await;
    let exit = a.exit_within(Duration::from_secs(7)).await;
    let exited_after = signalled.elapsed();
    let tally = load.stop().await;
    let in_grace = tally.codes_between(signalled, signalled + Duration::from_millis(900));
    // Everything before the signal and during the grace was served (the
    // calls in flight when the server stopped accepting among them). After
    // it, calls are refused: UNAVAILABLE (connection refused), or, for a
    // request the tonic client had queued on the closing connection and
    // never sent, CANCELLED "operation was canceled"; the caller moves on
    // to B.
    let before = tally.codes_between(started_load, signalled + Duration::from_millis(900));
    let unexpected: Vec<_> =
        tally.codes.iter().filter(|(c, _)| !matches!(**c, "OK" | "UNAVAILABLE" | "CANCELLED")).collect();
    let cancelled_unsent = tally
        .samples
        .iter()
        .filter(|s| s.starts_with("CANCELLED"))
        .all(|s| s == "CANCELLED: operation was canceled");

    // B takes the load.
    let load = Load::start(b.channel.clone(), &t, 50, 300, Duration::from_secs(2)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let on_b = load.stop().await;
    let stored = stored_urls(&pg, t.id).await;
    let mut acked = tally.acked.clone();
    acked.extend(on_b.acked.iter().cloned());
    let (lost, dup) = compare(&acked, &stored);
    println!(
        "FAULT sigterm: not_serving_after={not_serving:?} exit={exit:?} after {exited_after:?} (drain 5 s); \
         A codes={:?} (during the 1 s grace {in_grace:?}); B codes={:?}; acked={} lost={lost} dup={dup}; migrations once: {}; load_avg={}",
        tally.codes,
        on_b.codes,
        acked.len(),
        applied.len(),
        load_average()
    );
    assert!(
        not_serving.is_some_and(|d| d < Duration::from_millis(500)),
        "NOT_SERVING after {not_serving:?}: {}",
        a.logs()
    );
    assert_eq!(exit, Some(0), "exit code within the drain timeout: {}", a.logs());
    assert_eq!(in_grace.keys().copied().collect::<Vec<_>>(), ["OK"], "during the grace period: {in_grace:?}");
    assert_eq!(before.keys().copied().collect::<Vec<_>>(), ["OK"], "before the grace ended: {before:?}");
    assert!(unexpected.is_empty() && cancelled_unsent, "calls failed: {unexpected:?} {:?}", tally.samples);
    assert_eq!(on_b.codes.keys().copied().collect::<Vec<_>>(), ["OK"], "B: {:?}", on_b.codes);
    assert_eq!((lost, dup), (0, 0));
}
