//! Redis killed, back, and paused (`DEBUG SLEEP`) under load: callers see no
//! error, latency stays within the Redis timeout plus the database's time,
//! and caching resumes by itself.

use std::time::{Duration, Instant};

use bi_data::app::CACHE_HEALTH;
use tonic_health::pb::health_check_response::ServingStatus;

use super::*;

const CACHE_TIMEOUT_MS: u64 = 100;

async fn cache_serving_within(app: &TestApp, within: Duration) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < within {
        if app.health(CACHE_HEALTH).await == Some(ServingStatus::Serving) {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_paused_and_back_under_load() {
    let pg = PrivatePg::start().await;
    let redis = PrivateRedis::start().await;
    let timeout = CACHE_TIMEOUT_MS.to_string();
    let app = TestApp::spawn_on(
        &pg.url(),
        &["--redis-url", &redis.url(), "--cache-timeout-ms", &timeout, "--cache-breaker-probe-ms", "200"],
    )
    .await;
    assert!(cache_serving_within(&app, Duration::from_secs(5)).await.is_some(), "the cache is in use");
    let t = Tenant::new();
    let load = Load::start(app.channel.clone(), &t, 20, 300, Duration::from_secs(2)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    let killed = Instant::now();
    let port = redis.kill();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let restarted = Instant::now();
    let redis = PrivateRedis::start_on(port).await;
    let resumed_after_restart = cache_serving_within(&app, Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    let paused = Instant::now();
    let sleeper = redis.pause(2.0);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let slept = tokio::task::spawn_blocking(move || sleeper.join().expect("DEBUG SLEEP")).await.unwrap();
    assert!(slept >= Duration::from_millis(1900), "Redis was not paused ({slept:?})");
    let woke = Instant::now();
    let resumed_after_pause = cache_serving_within(&app, Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let end = Instant::now();
    let tally = load.stop().await;

    let p99_killed = tally.p99_between(killed, restarted);
    let p99_paused = tally.p99_between(paused, woke);
    let p99_normal = tally.p99_between(woke + Duration::from_millis(500), end);
    println!(
        "FAULT redis: codes={:?} p99 killed={p99_killed:?} paused={p99_paused:?} after={p99_normal:?} \
         cache back {resumed_after_restart:?} after restart, {resumed_after_pause:?} after the pause; \
         cache timeout {CACHE_TIMEOUT_MS} ms; load_avg={}",
        tally.codes,
        load_average()
    );
    assert_eq!(tally.codes.keys().copied().collect::<Vec<_>>(), ["OK"], "caller errors: {:?}", tally.codes);
    // Within the Redis timeout plus the database's time (generous on a
    // shared 2-core machine).
    let bound = Duration::from_millis(CACHE_TIMEOUT_MS + 400);
    assert!(p99_killed <= bound && p99_paused <= bound, "p99 {p99_killed:?} / {p99_paused:?} > {bound:?}");
    assert!(resumed_after_restart.is_some(), "caching did not resume after Redis came back");
    assert!(resumed_after_pause.is_some(), "caching did not resume after the pause");
    app.stop().await;
}
