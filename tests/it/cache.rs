//! The shared cache against a real Redis: each test starts its own
//! `redis-server` on a free port (so it may inspect, kill, restart or
//! pause it) and servers with `--redis-url` pointing at it, over the real
//! test database. Values, codes and counters are asserted, never times
//! beyond a caller's deadline.

use std::{
    collections::BTreeMap,
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use bi_data::{
    cache::{RedisCache, State},
    domain::{company::COMPANY, job::JOB, record::Record, schema::Resource, value::Value},
    metrics::CacheMetrics,
    pb::{self, GetJobRequest, UpdateJobRequest},
    service::{Cached, ListArgs, ReadCache, Scope, Service, Ticket, View},
    store::Store,
};
use prost_types::FieldMask;
use tonic::{Code, transport::Channel};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use uuid::Uuid;

use crate::{
    common::*,
    helpers::*,
    observability::{CLIENT, SERVER, attr, delta, key, parent, scrape, traced},
    otlp,
    service::{draft, new_job, scope, text},
};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A redis-server of the test's own, on a free port, without persistence.
struct TestRedis {
    port: u16,
    child: Option<Child>,
}

impl TestRedis {
    async fn start() -> TestRedis {
        let mut r = TestRedis { port: free_port(), child: None };
        r.spawn().await;
        r
    }

    async fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(["--enable-debug-command", "yes", "--dir", &std::env::temp_dir().to_string_lossy()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (scripts/dev-env.sh installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(mut c) = self.try_client().await
                && redis::cmd("PING").query_async::<String>(&mut c).await.is_ok()
            {
                return;
            }
            assert!(Instant::now() < deadline, "redis-server did not answer on {}", self.port);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    async fn try_client(&self) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
        redis::Client::open(self.url())?.get_multiplexed_async_connection().await
    }

    async fn client(&self) -> redis::aio::MultiplexedConnection {
        self.try_client().await.expect("test redis answers")
    }

    /// SIGKILL: no goodbye to any client.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    async fn keys(&self) -> Vec<String> {
        let mut c = self.client().await;
        let mut keys: Vec<String> = redis::cmd("KEYS").arg("*").query_async(&mut c).await.unwrap();
        keys.sort();
        keys
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn cached_app(redis: &TestRedis, extra: &[&str]) -> TestApp {
    let url = redis.url();
    let mut args = vec!["--redis-url", url.as_str()];
    args.extend_from_slice(extra);
    TestApp::spawn_with(&args).await
}

fn cache_requests(m: &BTreeMap<String, f64>, result: &str) -> f64 {
    m.get(&key("bi_data_cache_requests_total", &[("result", result)])).copied().unwrap_or(0.0)
}

fn job_selects(m: &BTreeMap<String, f64>) -> f64 {
    let k = key(
        "bi_data_db_statement_duration_seconds_count",
        &[("operation", "SELECT"), ("collection", "jobs")],
    );
    m.get(&k).copied().unwrap_or(0.0)
}

async fn health(channel: &Channel, service: &str) -> Option<i32> {
    HealthClient::new(channel.clone())
        .check(HealthCheckRequest { service: service.into() })
        .await
        .ok()
        .map(|r| r.into_inner().status)
}

async fn wait_cache_state(app: &TestApp, want: ServingStatus, within: Duration) {
    let deadline = Instant::now() + within;
    while health(&app.channel, "cache").await != Some(want as i32) {
        assert!(Instant::now() < deadline, "cache health did not become {want:?} within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn titled(j: &pb::Job, title: &str) -> pb::Job {
    pb::Job { title: title.into(), ..j.clone() }
}

#[tokio::test]
async fn a_get_is_a_hit_after_a_miss_and_skips_the_database() {
    let redis = TestRedis::start().await;
    let app = cached_app(&redis, &[]).await;
    let t = Tenant::new();
    let created = app.create::<pb::Job>(&t, job("cached once")).await;
    let m0 = scrape(app.metrics_addr).await;
    let first = app.get::<pb::Job>(&t, &created.id).await;
    let m1 = scrape(app.metrics_addr).await;
    assert_eq!(delta(&m0, &m1, &key("bi_data_cache_requests_total", &[("result", "miss")])), 1.0);
    assert!(job_selects(&m1) > job_selects(&m0), "the miss read the database");
    let second = app.get::<pb::Job>(&t, &created.id).await;
    let m2 = scrape(app.metrics_addr).await;
    assert_eq!(delta(&m1, &m2, &key("bi_data_cache_requests_total", &[("result", "hit")])), 1.0);
    assert_eq!(job_selects(&m2), job_selects(&m1), "the hit did not touch the database");
    assert_eq!(first, created);
    assert_eq!(second, created, "the cached record is the record, etag included");
    // BatchGet: the cached one is a hit, the other a miss, order kept.
    let other = app.create::<pb::Job>(&t, job("other")).await;
    let both = app.batch_get::<pb::Job>(&t, &[&other.id, &created.id]).await;
    assert_eq!(both, vec![other.clone(), created.clone()]);
    let m3 = scrape(app.metrics_addr).await;
    assert_eq!(delta(&m2, &m3, &key("bi_data_cache_requests_total", &[("result", "hit")])), 1.0);
    assert_eq!(delta(&m2, &m3, &key("bi_data_cache_requests_total", &[("result", "miss")])), 1.0);
    let again = app.batch_get::<pb::Job>(&t, &[&other.id, &created.id]).await;
    assert_eq!(again, both);
    assert_eq!(job_selects(&scrape(app.metrics_addr).await), job_selects(&m3), "both now cached");
    // A miss for an id that does not exist stores nothing.
    let e = app.try_get::<pb::Job>(&t, &Uuid::new_v4().to_string()).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
}

/// Reads `id` twice (so it is cached), then checks the read after `write`
/// shows what `expect` says.
async fn cached_then(app: &TestApp, t: &Tenant, id: &str) -> pb::Job {
    let a = app.get::<pb::Job>(t, id).await;
    let b = app.get::<pb::Job>(t, id).await;
    assert_eq!(a, b);
    b
}

#[tokio::test]
async fn every_kind_of_write_invalidates_before_it_answers() {
    let redis = TestRedis::start().await;
    let app = cached_app(&redis, &[]).await;
    let t = Tenant::new();
    let j = app
        .create::<pb::Job>(&t, pb::Job { job_url: format!("https://x/{}", Uuid::new_v4()), ..job("v0") })
        .await;

    // Update.
    let cur = cached_then(&app, &t, &j.id).await;
    let updated = app.update::<pb::Job>(&t, titled(&cur, "v1"), &["title"]).await;
    assert_eq!(app.get::<pb::Job>(&t, &j.id).await, updated);
    assert_eq!(updated.title, "v1");

    // Delete, then undelete.
    let cur = cached_then(&app, &t, &j.id).await;
    let deleted = app.delete::<pb::Job>(&t, &j.id, &cur.etag).await;
    let got = app.get::<pb::Job>(&t, &j.id).await;
    assert!(got.delete_time.is_some(), "the read after a delete sees it");
    assert_eq!(got, deleted);
    cached_then(&app, &t, &j.id).await;
    let restored = app.undelete::<pb::Job>(&t, &j.id).await;
    assert_eq!(app.get::<pb::Job>(&t, &j.id).await, restored);
    assert!(restored.delete_time.is_none());

    // A cascade: deleting the job soft-deletes its application, whose cached copy goes too.
    let application = app
        .create::<pb::Application>(&t, pb::Application { job_id: j.id.clone(), ..Default::default() })
        .await;
    let a0 = app.get::<pb::Application>(&t, &application.id).await;
    assert_eq!(app.get::<pb::Application>(&t, &application.id).await, a0);
    let cur = cached_then(&app, &t, &j.id).await;
    app.delete::<pb::Job>(&t, &j.id, &cur.etag).await;
    let a1 = app.get::<pb::Application>(&t, &application.id).await;
    assert!(a1.delete_time.is_some(), "the cascaded child is not served from the cache: {a1:?}");
    app.undelete::<pb::Job>(&t, &j.id).await;
    assert!(app.get::<pb::Application>(&t, &application.id).await.delete_time.is_none());

    // Import (a bulk change: upsert by job_url changes the cached row).
    let cur = cached_then(&app, &t, &j.id).await;
    let run = app
        .jobs()
        .import_jobs(authed(
            &t.writer,
            tokio_stream::iter(vec![pb::Job { id: String::new(), ..titled(&cur, "imported") }]),
        ))
        .await
        .unwrap()
        .into_inner()
        .ingest_run
        .unwrap();
    assert_eq!(run.updated, 1, "{run:?}");
    let after = app.get::<pb::Job>(&t, &j.id).await;
    assert_eq!(after.title, "imported");
    assert_ne!(after.etag, cur.etag);
    // The run itself is read through the cache too: its final counters, not the started row.
    let got_run = app.get::<pb::IngestRun>(&t, &run.id).await;
    assert_eq!(got_run.updated, 1);
    assert!(got_run.end_time.is_some());

    // Batch create of a new row: nothing cached to drop, but the list generation moves.
    let filter = ListOpts::filter("company_name = \"Acme\"").count();
    let n0 = app.list::<pb::Job>(&t, filter.clone()).await.total_size;
    assert_eq!(app.list::<pb::Job>(&t, filter.clone()).await.total_size, n0);
    app.create::<pb::Job>(&t, job("one more")).await;
    assert_eq!(app.list::<pb::Job>(&t, filter).await.total_size, n0 + 1);
}

/// A service over the test database with a cache on `redis` (the server
/// is started first: it migrates).
async fn cached_service(redis: &TestRedis) -> (TestApp, Service, Arc<RedisCache>, Service) {
    let app = TestApp::spawn().await;
    let args = serve_args(&[]);
    let store = Store::new(&args.db, Duration::from_secs(1)).expect("store");
    let cache = RedisCache::new(&redis.url(), &args.cache, CacheMetrics::default()).expect("cache");
    (app, Service::new(store.clone()).with_cache(cache.clone()), cache, Service::new(store))
}

async fn retitle(svc: &Service, s: &Scope, id: Uuid, title: &str) -> Record {
    svc.mutate(s, &JOB, id, "", "", "Update", |cur| {
        let mut v = cur.values.clone();
        v[JOB.index("title")] = text(title);
        Ok(v)
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn a_miss_that_read_the_old_row_does_not_overwrite_a_newer_invalidation() {
    let redis = TestRedis::start().await;
    let (_app, svc, cache, plain) = cached_service(&redis).await;
    let s = scope();
    let job = new_job(&svc, &s, &JOB, "old").await;

    // The race, step by step: a reader misses (and takes the lease) and
    // reads the old row; a writer commits and invalidates; the reader fills.
    let ticket = match cache.get(&s, &JOB, &[job.id()]).await.pop() {
        Some(Cached::Miss(t)) if t != Ticket::NONE => t,
        other => panic!("expected a miss with a lease, got {other:?}"),
    };
    let old = plain.get(&s, &JOB, &job.id().to_string(), View::Full).await.unwrap();
    let new = retitle(&svc, &s, job.id(), "new").await;
    cache.fill(&s, &JOB, &[(ticket, &old)]).await;
    // Had the stale fill been stored, this read would be a hit on it.
    let read = svc.get(&s, &JOB, &job.id().to_string(), View::Full).await.unwrap();
    assert_eq!(read.get(&JOB, "title"), new.get(&JOB, "title"), "the read after the write sees the write");
    assert_eq!(read, new);
    match cache.get(&s, &JOB, &[job.id()]).await.pop() {
        Some(Cached::Hit(r)) => assert_eq!(r, new, "the read's own fill stored the new row"),
        other => panic!("{other:?}"),
    }
    // The same steps without a write in between do fill: the guard is what stopped it.
    let newer = retitle(&svc, &s, job.id(), "newer").await;
    let ticket = match cache.get(&s, &JOB, &[job.id()]).await.pop() {
        Some(Cached::Miss(t)) if t != Ticket::NONE => t,
        other => panic!("expected a miss with a lease, got {other:?}"),
    };
    let current = plain.get(&s, &JOB, &job.id().to_string(), View::Full).await.unwrap();
    assert_eq!(current, newer);
    cache.fill(&s, &JOB, &[(ticket, &current)]).await;
    assert!(matches!(cache.get(&s, &JOB, &[job.id()]).await.pop(), Some(Cached::Hit(r)) if r == current));

    // A query result computed while a write commits: the write moves the
    // generation, so the result is not reused by the next call.
    let args = ListArgs { filter: "title = \"raced\"", count: true, ..ListArgs::default() };
    let raced = new_job(&svc, &s, &JOB, "raced").await;
    let computed = Arc::new(AtomicU64::new(0));
    let key = "test-race".to_owned();
    let n = computed.clone();
    let bytes = cache
        .query(
            &s,
            &[&JOB],
            key.clone(),
            Box::pin(async {
                n.fetch_add(1, Ordering::SeqCst);
                let page = plain.list(&s, &JOB, args).await?;
                // The write lands after the read, before the fill.
                retitle(&svc, &s, raced.id(), "not raced").await;
                Ok(page.total_size.to_le_bytes().to_vec())
            }),
        )
        .await
        .unwrap();
    assert_eq!(bytes, 1i64.to_le_bytes());
    let n = computed.clone();
    let again = cache
        .query(
            &s,
            &[&JOB],
            key,
            Box::pin(async {
                n.fetch_add(1, Ordering::SeqCst);
                let page = plain.list(&s, &JOB, args).await?;
                Ok(page.total_size.to_le_bytes().to_vec())
            }),
        )
        .await
        .unwrap();
    assert_eq!(computed.load(Ordering::SeqCst), 2, "the raced result was not reused");
    assert_eq!(again, 0i64.to_le_bytes());
}

#[tokio::test]
async fn a_query_over_several_resources_is_dropped_by_a_write_to_any_of_them() {
    let redis = TestRedis::start().await;
    let (_app, svc, cache, _) = cached_service(&redis).await;
    let s = scope();
    let computed = Arc::new(AtomicU64::new(0));
    let run = |deps: &'static [&'static Resource]| {
        let (cache, s, n) = (cache.clone(), s.clone(), computed.clone());
        async move {
            cache
                .query(
                    &s,
                    deps,
                    "test-deps".to_owned(),
                    Box::pin(async move { Ok(n.fetch_add(1, Ordering::SeqCst).to_le_bytes().to_vec()) }),
                )
                .await
                .unwrap()
        }
    };
    static BOTH: [&Resource; 2] = [&JOB, &COMPANY];
    assert_eq!(run(&BOTH).await, 0u64.to_le_bytes());
    assert_eq!(run(&BOTH).await, 0u64.to_le_bytes(), "reused while nothing changed");
    // A write of the second resource only.
    svc.create(&s, &COMPANY, draft(&COMPANY, &[("name", text("dep"))]), "").await.unwrap();
    assert_eq!(run(&BOTH).await, 1u64.to_le_bytes(), "recomputed after a company write");
    assert_eq!(run(&BOTH).await, 1u64.to_le_bytes());
    new_job(&svc, &s, &JOB, "dep").await;
    assert_eq!(run(&BOTH).await, 2u64.to_le_bytes(), "recomputed after a job write");
    assert_eq!(computed.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_merge_invalidates_the_merged_record_the_survivor_and_the_moved_children() {
    let redis = TestRedis::start().await;
    let (_app, svc, _cache, _) = cached_service(&redis).await;
    let s = scope();
    let company = |name: &str| {
        let (svc, s, name) = (svc.clone(), s.clone(), name.to_owned());
        async move { svc.create(&s, &COMPANY, draft(&COMPANY, &[("name", text(&name))]), "").await.unwrap() }
    };
    let (into, from) = (company("into").await, company("from").await);
    let child = svc
        .create(
            &s,
            &JOB,
            draft(
                &JOB,
                &[
                    ("title", text("j")),
                    ("company_name", text("from")),
                    ("company_id", Value::Uuid(from.id())),
                ],
            ),
            "",
        )
        .await
        .unwrap();
    let get = |res: &'static Resource, id: Uuid| {
        let (svc, s) = (svc.clone(), s.clone());
        async move { svc.get(&s, res, &id.to_string(), View::Full).await.unwrap() }
    };
    for _ in 0..2 {
        get(&COMPANY, into.id()).await;
        get(&COMPANY, from.id()).await;
        get(&JOB, child.id()).await;
    }
    svc.merge(&s, &COMPANY, &into.id().to_string(), &[from.id().to_string()], "").await.unwrap();
    let merged = get(&COMPANY, from.id()).await;
    assert!(!merged.get(&COMPANY, "delete_time").is_null(), "the merged one is deleted");
    assert_eq!(merged.get(&COMPANY, "master_company_id"), &Value::Uuid(into.id()));
    assert!(get(&COMPANY, into.id()).await.revision > into.revision, "the survivor is read anew");
    assert_eq!(get(&JOB, child.id()).await.get(&JOB, "company_id"), &Value::Uuid(into.id()));
}

fn free_addr() -> String {
    format!("127.0.0.1:{}", free_port())
}

/// `bi-data serve` as a child process.
struct Replica {
    child: Child,
    channel: Channel,
}

impl Replica {
    async fn start(redis: &TestRedis, extra: &[&str]) -> Replica {
        let (addr, metrics) = (free_addr(), free_addr());
        let child = Command::new(env!("CARGO_BIN_EXE_bi-data"))
            .args(["serve", "--listen", &addr, "--metrics-listen", &metrics, "--redis-url", &redis.url()])
            .args(extra)
            .env("DATABASE_URL", database_url())
            .env_remove("MIGRATION_DATABASE_URL")
            .env("JWT_SECRET", SECRET)
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let channel = Channel::from_shared(format!("http://{addr}")).unwrap().connect_lazy();
        let deadline = Instant::now() + Duration::from_secs(60);
        while health(&channel, "").await != Some(ServingStatus::Serving as i32) {
            assert!(Instant::now() < deadline, "replica not SERVING");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Replica { child, channel }
    }

    fn jobs(&self) -> pb::job_service_client::JobServiceClient<Channel> {
        pb::job_service_client::JobServiceClient::new(self.channel.clone())
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn get_via(r: &Replica, t: &Tenant, id: &str) -> pb::Job {
    r.jobs().get_job(authed(&t.reader, GetJobRequest { id: id.into() })).await.unwrap().into_inner()
}

/// UpdateJob of the title alone.
fn title_update(id: &str, title: &str) -> UpdateJobRequest {
    UpdateJobRequest {
        job: Some(pb::Job { id: id.into(), title: title.into(), ..Default::default() }),
        update_mask: Some(FieldMask { paths: vec!["title".into()] }),
        request_id: String::new(),
    }
}

async fn set_title_via(r: &Replica, t: &Tenant, id: &str, title: &str) -> pb::Job {
    r.jobs().update_job(authed(&t.writer, title_update(id, title))).await.unwrap().into_inner()
}

#[tokio::test]
async fn a_read_through_another_replica_sees_the_write_just_acknowledged() {
    let redis = TestRedis::start().await;
    let (a, b) = tokio::join!(Replica::start(&redis, &[]), Replica::start(&redis, &[]));
    let t = Tenant::new();
    let created = a
        .jobs()
        .create_job(authed(
            &t.writer,
            pb::CreateJobRequest { job: Some(job("r0")), request_id: String::new() },
        ))
        .await
        .unwrap()
        .into_inner();
    for i in 1..=40 {
        // Both replicas have it cached now (the second read of each is a hit).
        for r in [&a, &b, &a, &b] {
            get_via(r, &t, &created.id).await;
        }
        let (writer, reader) = if i % 2 == 0 { (&a, &b) } else { (&b, &a) };
        let written = set_title_via(writer, &t, &created.id, &format!("r{i}")).await;
        assert_eq!(get_via(reader, &t, &created.id).await, written, "round {i}: the other replica");
        assert_eq!(get_via(writer, &t, &created.id).await, written, "round {i}: the writing replica");
    }
}

#[tokio::test]
async fn near_caches_are_invalidated_across_replicas_and_empty_on_a_lost_subscription() {
    let mut redis = TestRedis::start().await;
    let near = ["--cache-near", "--cache-near-ttl-ms", "60000"];
    let (a, b) = tokio::join!(Replica::start(&redis, &near), Replica::start(&redis, &near));
    let t = Tenant::new();
    let created = a
        .jobs()
        .create_job(authed(
            &t.writer,
            pb::CreateJobRequest { job: Some(job("n0")), request_id: String::new() },
        ))
        .await
        .unwrap()
        .into_inner();
    for round in 1..=10 {
        for _ in 0..3 {
            get_via(&b, &t, &created.id).await; // miss, Redis hit, then near hits
        }
        let written = set_title_via(&a, &t, &created.id, &format!("n{round}")).await;
        // Pub/sub is asynchronous: the other replica's near copy goes within
        // moments, long before its 60 s TTL.
        let deadline = Instant::now() + Duration::from_secs(3);
        while get_via(&b, &t, &created.id).await != written {
            assert!(Instant::now() < deadline, "round {round}: the near copy outlived the write");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    // In-process: a near hit is counted, and a lost subscription empties the map.
    let app = cached_app(&redis, &near).await;
    let cache = app.cache().expect("cache on");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !cache.near_live() {
        assert!(Instant::now() < deadline, "near cache never subscribed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for _ in 0..3 {
        app.get::<pb::Job>(&t, &created.id).await;
    }
    assert_eq!(cache.near_len(), 1);
    let m = scrape(app.metrics_addr).await;
    assert!(m[&key("bi_data_cache_near_requests_total", &[("result", "hit")])] >= 1.0);
    redis.kill();
    let deadline = Instant::now() + Duration::from_secs(5);
    while cache.near_live() || cache.near_len() > 0 {
        assert!(Instant::now() < deadline, "near cache kept entries after losing its subscription");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(app.get::<pb::Job>(&t, &created.id).await.id, created.id, "served from PostgreSQL");
}

#[tokio::test]
async fn list_and_search_results_are_reused_until_a_write_moves_the_generation() {
    let redis = TestRedis::start().await;
    let app = cached_app(&redis, &[]).await;
    let t = Tenant::new();
    let word = format!("zq{}", &Uuid::new_v4().simple().to_string()[..8]);
    let first =
        app.create::<pb::Job>(&t, pb::Job { description: format!("about {word}"), ..job("L1") }).await;
    let filter = ListOpts::filter("title = \"L*\"").count();
    let m0 = scrape(app.metrics_addr).await;
    let p1 = app.list::<pb::Job>(&t, filter.clone()).await;
    let m1 = scrape(app.metrics_addr).await;
    let p2 = app.list::<pb::Job>(&t, filter.clone()).await;
    let m2 = scrape(app.metrics_addr).await;
    assert_eq!((p1.total_size, p1.items.clone()), (1, vec![first.clone()]));
    assert_eq!((p2.total_size, p2.items), (p1.total_size, p1.items));
    assert!(job_selects(&m1) > job_selects(&m0));
    assert_eq!(job_selects(&m2), job_selects(&m1), "the second list was served from the cache");
    assert_eq!(cache_requests(&m2, "hit") - cache_requests(&m1, "hit"), 1.0);

    let search = |q: String| {
        let app = &app;
        let t = &t;
        async move {
            app.jobs()
                .search_jobs(authed(&t.reader, pb::SearchJobsRequest { query: q, ..Default::default() }))
                .await
                .unwrap()
                .into_inner()
        }
    };
    let s1 = search(word.clone()).await;
    let m3 = scrape(app.metrics_addr).await;
    let s2 = search(word.clone()).await;
    let m4 = scrape(app.metrics_addr).await;
    assert_eq!(s1.jobs.len(), 1);
    assert_eq!(s1, s2);
    assert_eq!(job_selects(&m4), job_selects(&m3), "the second search was served from the cache");

    // A write of the tenant's jobs moves the generation: both are recomputed.
    let second =
        app.create::<pb::Job>(&t, pb::Job { description: format!("more {word}"), ..job("L2") }).await;
    let p3 = app.list::<pb::Job>(&t, filter.clone()).await;
    assert_eq!(p3.total_size, 2);
    assert!(p3.items.contains(&second));
    assert_eq!(search(word.clone()).await.jobs.len(), 2);
    // An update that makes the first job match no longer.
    let cur = app.get::<pb::Job>(&t, &first.id).await;
    app.update::<pb::Job>(&t, titled(&cur, "M1"), &["title"]).await;
    assert_eq!(app.list::<pb::Job>(&t, filter.clone()).await.items, vec![second.clone()]);

    // Another tenant's write does not move this tenant's generation.
    let other = Tenant::new();
    app.create::<pb::Job>(&other, job("L other")).await;
    let m5 = scrape(app.metrics_addr).await;
    app.list::<pb::Job>(&t, filter.clone()).await;
    assert_eq!(cache_requests(&scrape(app.metrics_addr).await, "hit") - cache_requests(&m5, "hit"), 1.0);

    // Concurrent misses of one key: one computation, the others wait for it.
    app.create::<pb::Job>(&t, job("L3")).await;
    let f0 = scrape(app.metrics_addr).await;
    let calls = (0..16).map(|_| app.list::<pb::Job>(&t, filter.clone()));
    let pages = futures_util::future::join_all(calls).await;
    assert!(
        pages.iter().all(|p| p.total_size == 2),
        "{:?}",
        pages.iter().map(|p| p.total_size).collect::<Vec<_>>()
    );
    let f1 = scrape(app.metrics_addr).await;
    let leaders = delta(&f0, &f1, &key("bi_data_cache_query_flights_total", &[("role", "leader")]));
    let hits = cache_requests(&f1, "hit") - cache_requests(&f0, "hit");
    let waiters = f1
        .get(&key("bi_data_cache_query_flights_total", &[("role", "waiter")]))
        .copied()
        .unwrap_or(0.0)
        - f0.get(&key("bi_data_cache_query_flights_total", &[("role", "waiter")])).copied().unwrap_or(0.0);
    assert!(leaders <= 2.0, "{leaders} computations for one key");
    assert_eq!(leaders + waiters + hits, 16.0, "leaders {leaders}, waiters {waiters}, hits {hits}");
}

#[tokio::test]
async fn keys_are_namespaced_by_tenant_and_no_tenant_reads_anothers_entries() {
    let redis = TestRedis::start().await;
    let app = cached_app(&redis, &[]).await;
    let (a, b) = (Tenant::new(), Tenant::new());
    let ja = app.create::<pb::Job>(&a, job("tenant a")).await;
    let jb = app.create::<pb::Job>(&b, job("tenant b")).await;
    for _ in 0..2 {
        app.get::<pb::Job>(&a, &ja.id).await;
        app.get::<pb::Job>(&b, &jb.id).await;
        app.list::<pb::Job>(&a, ListOpts::filter("title = \"tenant*\"")).await;
        app.list::<pb::Job>(&b, ListOpts::filter("title = \"tenant*\"")).await;
    }
    // The other tenant's id is unknown, cached or not; its list shows its own job only.
    for _ in 0..2 {
        assert_eq!(app.try_get::<pb::Job>(&b, &ja.id).await.unwrap_err().code(), Code::NotFound);
        assert_eq!(app.try_batch_get::<pb::Job>(&b, &[&ja.id]).await.unwrap_err().code(), Code::NotFound);
    }
    assert_eq!(
        app.list::<pb::Job>(&b, ListOpts::filter("title = \"tenant*\"")).await.items,
        vec![jb.clone()]
    );
    let keys = redis.keys().await;
    let simple = |id: &str| Uuid::parse_str(id).unwrap().simple().to_string();
    // Each id's record lives under its own tenant only; B asking for A's id
    // left at most a lease (B's miss) under B's name, never A's record.
    let mut c = redis.client().await;
    for (owner, other, id) in [(&a, &b, &ja.id), (&b, &a, &jb.id)] {
        let mut stored_under = Vec::new();
        for k in keys.iter().filter(|k| k.ends_with(&format!(":r:{}", simple(id)))) {
            let v: Vec<u8> = redis::cmd("GET").arg(k).query_async(&mut c).await.unwrap();
            if v.first() == Some(&b'R') {
                stored_under.push(k.clone());
            }
        }
        assert_eq!(stored_under.len(), 1, "{id}: {stored_under:?} of {keys:#?}");
        assert!(stored_under[0].contains(&owner.id.to_string()));
        assert!(!stored_under[0].contains(&other.id.to_string()));
    }
    for k in &keys {
        if k.ends_with(":epoch") {
            continue;
        }
        let (ia, ib) = (k.contains(&a.id.to_string()), k.contains(&b.id.to_string()));
        assert!(ia != ib, "every data key names exactly one tenant: {k}");
    }
}

/// Calls in a loop until `stop`: updates and reads of a few jobs, each read
/// checked against the last acknowledged write. Returns (calls, failures).
async fn load(
    app: &TestApp,
    t: &Tenant,
    jobs: &[pb::Job],
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> (u64, Vec<String>) {
    let mut tasks = Vec::new();
    for (w, j) in jobs.iter().enumerate() {
        let (app_jobs, t, j, stop) = (app.jobs(), t.clone(), j.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut c = app_jobs;
            let (mut calls, mut failures, mut n) = (0u64, Vec::new(), 0u64);
            let mut last = j.title.clone();
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                let deadline = Duration::from_secs(2);
                if n % 4 == 0 {
                    let title = format!("w{w}-{n}");
                    let mut req = authed(&t.writer, title_update(&j.id, &title));
                    req.set_timeout(deadline);
                    match c.update_job(req).await {
                        Ok(_) => last = title,
                        Err(e) => failures.push(format!("update: {e:?}")),
                    }
                } else {
                    let mut req = authed(&t.reader, GetJobRequest { id: j.id.clone() });
                    req.set_timeout(deadline);
                    match c.get_job(req).await {
                        Ok(r) if r.get_ref().title == last => {}
                        Ok(r) => failures.push(format!("stale read: {} after {last}", r.get_ref().title)),
                        Err(e) => failures.push(format!("get: {e:?}")),
                    }
                }
                calls += 1;
            }
            (calls, failures)
        }));
    }
    let mut out = (0, Vec::new());
    for t in tasks {
        let (c, f) = t.await.unwrap();
        out.0 += c;
        out.1.extend(f);
    }
    out
}

#[tokio::test]
async fn redis_killed_and_restarted_mid_load_fails_no_call_and_caching_resumes() {
    let mut redis = TestRedis::start().await;
    let app = cached_app(&redis, &["--cache-breaker-probe-ms", "100"]).await;
    let t = Tenant::new();
    let mut jobs = Vec::new();
    for i in 0..4 {
        jobs.push(app.create::<pb::Job>(&t, job(&format!("k{i}"))).await);
    }
    wait_cache_state(&app, ServingStatus::Serving, Duration::from_secs(5)).await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let running = {
        let (app_ref, t, jobs, stop) = (&app, t.clone(), jobs.clone(), stop.clone());
        async move { load(app_ref, &t, &jobs, stop).await }
    };
    let chaos = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        redis.kill();
        wait_cache_state(&app, ServingStatus::NotServing, Duration::from_secs(5)).await;
        assert_eq!(
            health(&app.channel, "").await,
            Some(ServingStatus::Serving as i32),
            "the server stays SERVING"
        );
        tokio::time::sleep(Duration::from_millis(700)).await;
        redis.spawn().await;
        wait_cache_state(&app, ServingStatus::Serving, Duration::from_secs(10)).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        stop.store(true, Ordering::SeqCst);
    };
    let ((calls, failures), ()) = tokio::join!(running, chaos);
    assert!(calls > 20, "only {calls} calls");
    assert!(
        failures.is_empty(),
        "{} of {calls} calls failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    // Caching resumed: a read is a hit again.
    let id = &jobs[0].id;
    app.get::<pb::Job>(&t, id).await;
    let m0 = scrape(app.metrics_addr).await;
    app.get::<pb::Job>(&t, id).await;
    let m1 = scrape(app.metrics_addr).await;
    assert_eq!(cache_requests(&m1, "hit") - cache_requests(&m0, "hit"), 1.0);
    assert_eq!(m1[&key("bi_data_cache_breaker_open", &[])], 0.0);
    assert!(cache_requests(&m1, "error") > 0.0, "the outage was counted");
    assert_eq!(app.cache().unwrap().state(), State::Up);
}

#[tokio::test]
async fn redis_paused_with_debug_sleep_costs_no_call_its_deadline_and_nothing_stale_is_served() {
    let redis = TestRedis::start().await;
    let app = cached_app(&redis, &["--cache-breaker-probe-ms", "100", "--cache-timeout-ms", "100"]).await;
    let t = Tenant::new();
    let j = app.create::<pb::Job>(&t, job("before the pause")).await;
    let cached = cached_then(&app, &t, &j.id).await;
    // Block Redis for 3 s from its own connection.
    let mut admin = redis.client().await;
    let pause = tokio::spawn(async move {
        let _: redis::RedisResult<String> =
            redis::cmd("DEBUG").arg("SLEEP").arg(3).query_async(&mut admin).await;
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    let mut c = app.jobs();
    let mut written = cached.clone();
    for i in 0..20 {
        let t0 = Instant::now();
        if i == 10 {
            // A write while Redis cannot be told: it must not be hidden by the cached copy later.
            let mut req = authed(&t.writer, title_update(&j.id, "during the pause"));
            req.set_timeout(Duration::from_millis(1000));
            written = c.update_job(req).await.expect("a write answers within its deadline").into_inner();
        } else {
            let mut req = authed(&t.reader, GetJobRequest { id: j.id.clone() });
            req.set_timeout(Duration::from_millis(1000));
            let got = c.get_job(req).await.expect("a read answers within its deadline").into_inner();
            assert_eq!(got, written, "call {i}");
        }
        assert!(t0.elapsed() < Duration::from_millis(1000), "call {i} took {:?}", t0.elapsed());
    }
    assert!(started.elapsed() < Duration::from_secs(3), "the calls ran while Redis slept");
    wait_cache_state(&app, ServingStatus::NotServing, Duration::from_secs(2)).await;
    assert_eq!(
        health(&app.channel, "").await,
        Some(ServingStatus::Serving as i32),
        "the server stays SERVING"
    );
    pause.await.unwrap();
    wait_cache_state(&app, ServingStatus::Serving, Duration::from_secs(10)).await;
    // After the pause: the entry written before it is not trusted, the write is seen.
    for _ in 0..3 {
        assert_eq!(app.get::<pb::Job>(&t, &j.id).await, written);
    }
    let m = scrape(app.metrics_addr).await;
    assert!(cache_requests(&m, "error") >= 1.0);
}

#[tokio::test]
async fn each_redis_command_is_a_client_span_of_the_call() {
    let tel = otlp::global();
    let redis = TestRedis::start().await;
    let app = cached_app(&redis, &[]).await;
    let t = Tenant::new();
    let created = app.create::<pb::Job>(&t, job("traced")).await;
    let (trace_id, _, tp) = parent();
    app.jobs().get_job(traced(&t.reader, &tp, GetJobRequest { id: created.id.clone() })).await.unwrap();
    let spans = tel
        .wait_for(&trace_id, |s| {
            s.iter().any(|s| s.kind == SERVER)
                && s.iter()
                    .filter(|s| {
                        s.kind == CLIENT && s.attrs.get("db.system.name").is_some_and(|v| v == "redis")
                    })
                    .count()
                    >= 2
        })
        .await;
    let server = spans.iter().find(|s| s.kind == SERVER).unwrap();
    let redis_spans: Vec<_> =
        spans.iter().filter(|s| s.kind == CLIENT && attr(s, "db.system.name") == "redis").collect();
    let ops: Vec<&str> = redis_spans.iter().map(|s| attr(s, "db.stored_procedure.name")).collect();
    assert!(ops.contains(&"get_records") && ops.contains(&"fill_records"), "{ops:?}");
    for s in &redis_spans {
        assert_eq!(s.parent_span_id, server.span_id, "{s:#?}");
        assert_eq!(attr(s, "db.operation.name"), "EVALSHA");
        assert!(!s.dump.contains(&t.id.to_string()), "no tenant id on a redis span: {s:#?}");
    }
}
