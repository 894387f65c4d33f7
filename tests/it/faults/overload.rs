//! Overload at 3x capacity: the server sheds what it cannot serve
//! (RESOURCE_EXHAUSTED with RetryInfo) instead of queueing without bound;
//! admitted calls keep a bounded latency, memory stays bounded, and service
//! is normal at once after the burst.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bi_data::pb::{self, CreateJobRequest, ListJobsRequest};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_types::StatusExt;

use super::*;

fn request(t: &Tenant) -> tonic::Request<ListJobsRequest> {
    let mut req = authed(
        &t.reader,
        // A substring match the indexes cannot serve: real work per call,
        // so the database, not the test's own client, is what saturates.
        ListJobsRequest {
            filter: "description:\"needle\" OR location:\"nowhere\"".into(),
            page_size: 50,
            count: true,
            ..Default::default()
        },
    );
    req.set_timeout(Duration::from_secs(2));
    req
}

/// `callers` closed-loop callers for `during`: (calls/s, p99, codes).
async fn closed_loop(
    channel: &tonic::transport::Channel,
    t: &Tenant,
    callers: usize,
    during: Duration,
) -> (f64, Duration, BTreeMap<&'static str, u64>) {
    let seen = Arc::new(Mutex::new((Vec::new(), BTreeMap::new())));
    let end = Instant::now() + during;
    let tasks: Vec<_> = (0..callers)
        .map(|_| {
            let (mut c, t, seen) = (
                bi_data::pb::job_service_client::JobServiceClient::new(channel.clone()),
                t.clone(),
                seen.clone(),
            );
            tokio::spawn(async move {
                while Instant::now() < end {
                    let started = Instant::now();
                    let code = c.list_jobs(request(&t)).await.err().map_or(Code::Ok, |e| e.code());
                    let mut s = seen.lock().unwrap();
                    if code == Code::Ok {
                        s.0.push(started.elapsed());
                    }
                    *s.1.entry(code_name(code)).or_insert(0u64) += 1;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let (mut ok, codes) = Arc::try_unwrap(seen).ok().unwrap().into_inner().unwrap();
    ok.sort_unstable();
    let p99 = ok.get(ok.len() * 99 / 100).copied().unwrap_or_default();
    (ok.len() as f64 / during.as_secs_f64(), p99, codes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_times_capacity_is_shed_not_queued() {
    let limit = 8;
    let server = Process::spawn(
        &database_url(),
        &["--pool-size", "4", "--max-concurrent-calls", &limit.to_string(), "--admission-wait-ms", "50"],
    );
    assert!(until_health(&server.channel, ServingStatus::Serving, Duration::from_secs(60)).await.is_some());
    let t = Tenant::new();
    let mut c = bi_data::pb::job_service_client::JobServiceClient::new(server.channel.clone());
    let batch = |n: usize| pb::BatchCreateJobsRequest {
        requests: (0..500)
            .map(|i| {
                let mut j = job(&format!("Overload {n}-{i}"));
                j.description = format!("{} needle {i}", "filler text ".repeat(40));
                CreateJobRequest { job: Some(j), request_id: String::new() }
            })
            .collect(),
        request_id: String::new(),
    };
    for n in 0..6 {
        c.batch_create_jobs(authed(&t.writer, batch(n))).await.unwrap();
    }
    let idle = rss_kib(server.child.id());

    // Capacity: as many closed-loop callers as the limit.
    let (capacity, p99_normal, codes) = closed_loop(&server.channel, &t, limit, Duration::from_secs(2)).await;
    assert_eq!(codes.keys().copied().collect::<Vec<_>>(), ["OK"], "at capacity: {codes:?}");

    // 3x capacity, open loop: a call every 1/(3 x capacity) s, whatever
    // the answers.
    let rate = 3.0 * capacity;
    let burst = Duration::from_secs(3);
    let peak = Arc::new(Mutex::new(idle));
    let pid = server.child.id();
    let sampler = {
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                let r = rss_kib(pid);
                {
                    let mut p = peak.lock().unwrap();
                    *p = (*p).max(r);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let seen = Arc::new(Mutex::new((Vec::new(), BTreeMap::new(), 0u64)));
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    let started = Instant::now();
    let mut calls = Vec::new();
    while started.elapsed() < burst {
        tick.tick().await;
        let (mut c, t, seen) = (c.clone(), t.clone(), seen.clone());
        calls.push(tokio::spawn(async move {
            let began = Instant::now();
            let r = c.list_jobs(request(&t)).await;
            let mut s = seen.lock().unwrap();
            match r {
                Ok(_) => s.0.push(began.elapsed()),
                Err(e) => {
                    if e.code() == Code::ResourceExhausted && e.get_details_retry_info().is_some() {
                        s.2 += 1;
                    }
                    *s.1.entry(code_name(e.code())).or_insert(0u64) += 1;
                }
            }
        }));
    }
    for call in calls {
        call.await.unwrap();
    }
    sampler.abort();
    let (mut admitted, shed, with_retry_info) = Arc::try_unwrap(seen).ok().unwrap().into_inner().unwrap();
    admitted.sort_unstable();
    let p99_admitted = admitted.get(admitted.len() * 99 / 100).copied().unwrap_or_default();
    let peak = *peak.lock().unwrap();

    // At once afterwards: normal service.
    let (after, p99_after, codes_after) =
        closed_loop(&server.channel, &t, limit, Duration::from_secs(1)).await;
    println!(
        "FAULT overload: capacity={capacity:.0}/s (p99 {p99_normal:?}) offered={rate:.0}/s for {burst:?}: \
         admitted={} (p99 {p99_admitted:?}) shed={shed:?} (with RetryInfo {with_retry_info}); \
         RSS idle {} MiB peak {} MiB; after: {after:.0}/s p99 {p99_after:?} {codes_after:?}; load_avg={}",
        admitted.len(),
        idle / 1024,
        peak / 1024,
        load_average()
    );
    let exhausted = shed.get("RESOURCE_EXHAUSTED").copied().unwrap_or(0);
    assert!(exhausted > 0, "nothing was shed at 3x capacity: {shed:?}");
    assert_eq!(with_retry_info, exhausted, "every shed call says when to retry");
    assert!(shed.keys().all(|c| *c == "RESOURCE_EXHAUSTED"), "other errors: {shed:?}");
    assert!(p99_admitted < Duration::from_secs(1), "admitted p99 {p99_admitted:?}");
    assert!(peak < idle + 100 * 1024, "RSS grew from {idle} KiB to {peak} KiB");
    assert_eq!(codes_after.keys().copied().collect::<Vec<_>>(), ["OK"], "after the burst: {codes_after:?}");
}
