//! bi-data load generator and baseline comparison (`cargo bench --bench
//! load`, usually through `scripts/bench.sh`).
//!
//! Sets up its own tenant and data in a dedicated database, starts the
//! release server as a child process (or uses `--addr`), then for each
//! scenario runs the service and the hand-written-SQL baseline at the same
//! concurrency, and prints one table: requests/s, p50/p99/p99.9, errors,
//! the service/baseline ratio, server CPU per 1,000 requests and the RSS
//! figures, plus `pgbench -S` as the machine's ceiling. It prints figures;
//! it asserts no times.

mod data;
mod driver;
mod scenarios;
mod sys;

use std::{collections::HashMap, fmt::Write as _, path::PathBuf, sync::Arc, time::Duration};

use bi_data::auth::{Role, TokenKeys};
use clap::Parser;
use tokio::time::{Instant, sleep_until};
use tonic::transport::{Channel, Endpoint};

use crate::{
    driver::{Load, Op, Stats},
    scenarios::{Baseline, Ctx, Kind, ListSpec, Service, Truth},
};

#[derive(Parser, Debug)]
#[command(
    name = "load",
    about = "bi-data load generator: service vs. direct SQL, same data, same concurrency",
    args_override_self = true
)]
struct Args {
    /// Benchmark database, as its owner role (data is loaded with COPY).
    #[arg(
        long,
        env = "BENCH_DATABASE_URL",
        default_value = "postgres://bi_data_owner:bi_data@127.0.0.1:5432/bi_data_bench"
    )]
    database_url: String,
    /// Release server binary to start as a child process.
    #[arg(long, env = "BENCH_SERVER_BIN")]
    server_bin: Option<PathBuf>,
    /// Use a running server instead (e.g. http://127.0.0.1:50051); it must
    /// serve the same database with the same --jwt-secret.
    #[arg(long, conflicts_with = "server_bin")]
    addr: Option<String>,
    /// With --addr: the server's pid, for RSS and CPU figures.
    #[arg(long)]
    server_pid: Option<u32>,
    /// HS256 secret shared with the server (a local, throw-away value).
    #[arg(long, env = "BENCH_JWT_SECRET", default_value = "bench-only-secret-0123456789")]
    jwt_secret: String,
    /// Jobs in the data set.
    #[arg(long, default_value_t = 1_000_000)]
    jobs: u64,
    /// Seconds measured per scenario (and per baseline).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of warm-up before each measurement.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Service and baseline alternate this many times per scenario, each
    /// time for duration / rounds.
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// Concurrent streams (closed loop) or most in flight (open loop).
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// HTTP/2 connections the streams share.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Server pool size (--pool-size) and the baseline's pool size.
    #[arg(long, default_value_t = 20)]
    pool_size: usize,
    /// Open loop for every scenario: this many requests per second,
    /// scheduled, latency from the intended send time. Default: closed loop.
    #[arg(long)]
    rate: Option<f64>,
    /// Concurrent streams held in the streams scenario.
    #[arg(long, default_value_t = 1000)]
    streams: usize,
    /// Open-loop GetJob at this rate too (default: half the closed-loop
    /// GetJob throughput just measured).
    #[arg(long)]
    open_rate: Option<f64>,
    /// Scenarios to run, comma-separated: get, list-first, list-deep,
    /// create, update, mixed, streams, open, pgbench, cached (GetJob over the
    /// hot set: cache off, Redis, Redis + near cache), mixed-cached (90/10
    /// over the hot set, each read checked, the same three servers).
    /// Default: all.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Page size of the list scenarios.
    #[arg(long, default_value_t = 50)]
    page_size: i32,
    /// The deep page of the list scenario.
    #[arg(long, default_value_t = 1000)]
    deep_page: usize,
    /// pgbench binary for the machine's ceiling (`pgbench -S`).
    #[arg(long, default_value = "/usr/bin/pgbench")]
    pgbench: PathBuf,
    /// Database initialised with `pgbench -i` (skipped when unset).
    #[arg(long, env = "BENCH_PGBENCH_URL")]
    pgbench_url: Option<String>,
    /// Extra environment of the started server, KEY=VALUE (repeatable),
    /// e.g. --server-env TOKIO_WORKER_THREADS=1.
    #[arg(long)]
    server_env: Vec<String>,
    /// Extra flags of the started server (repeatable), e.g.
    /// --server-arg=--slow-query-ms=1000.
    #[arg(long, allow_hyphen_values = true)]
    server_arg: Vec<String>,
    /// How many cold starts to time (process start to SERVING).
    #[arg(long, default_value_t = 3)]
    starts: usize,
    /// Smoke run: 2 s per scenario, 0.5 s warm-up, one timed start.
    #[arg(long)]
    quick: bool,
    /// Also write the report (markdown) here; default target/bench/report.md.
    #[arg(long)]
    out: Option<PathBuf>,
    /// A note printed with the report (e.g. "contended: other builds running").
    #[arg(long, env = "BENCH_NOTE", default_value = "")]
    note: String,
    /// Jobs the cache scenarios draw ids from (jobs 0..N): what a cache can hold.
    #[arg(long, default_value_t = 10_000)]
    hot_set: u64,
    /// Jobs the checked 90/10 mix reads and writes (jobs 0..N; small, so
    /// that most reads are of a job written during the run).
    #[arg(long, default_value_t = 1_000)]
    mixed_hot_set: u64,
    /// redis-server binary: the cache scenarios start one of their own.
    #[arg(long, default_value = "redis-server")]
    redis_server: PathBuf,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

impl Args {
    fn wants(&self, s: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|o| o == s)
    }
    fn load(&self, concurrency: usize, rate: Option<f64>) -> Load {
        Load {
            warmup: Duration::from_secs_f64(self.warmup),
            duration: Duration::from_secs_f64(self.duration),
            concurrency,
            rate,
        }
    }
}

/// One measured run (or several merged) and what the machine did meanwhile.
#[derive(Clone, Default)]
struct Run {
    stats: Stats,
    /// Server CPU (user + system) over the window, in clock ticks.
    server_ticks: Option<u64>,
    /// CPU of the bench database's client backends, in clock ticks.
    pg_ticks: u64,
    /// CPU of the load generator itself, in clock ticks.
    client_ticks: Option<u64>,
    /// CPU of the bench's redis-server, in clock ticks (cache scenarios).
    redis_ticks: Option<u64>,
    rss_peak_kib: Option<u64>,
    /// Label of the load (e.g. "32 streams", "open 2000/s").
    load: String,
}

impl Run {
    fn merge(&mut self, other: Run) {
        self.stats.merge(other.stats);
        self.server_ticks = match (self.server_ticks, other.server_ticks) {
            (Some(a), Some(b)) => Some(a + b),
            (a, b) => a.or(b),
        };
        self.pg_ticks += other.pg_ticks;
        self.client_ticks = match (self.client_ticks, other.client_ticks) {
            (Some(a), Some(b)) => Some(a + b),
            (a, b) => a.or(b),
        };
        self.redis_ticks = match (self.redis_ticks, other.redis_ticks) {
            (Some(a), Some(b)) => Some(a + b),
            (a, b) => a.or(b),
        };
        self.rss_peak_kib = self.rss_peak_kib.max(other.rss_peak_kib);
        if self.load.is_empty() {
            self.load = other.load;
        }
    }

    /// CPU milliseconds per 1,000 answered requests.
    fn per_1k(&self, ticks: Option<u64>, tck: f64) -> Option<f64> {
        let n = self.stats.answered.max(1) as f64;
        ticks.map(|t| t as f64 / tck * 1000.0 / n * 1000.0)
    }
}

struct Row {
    name: String,
    service: Option<Run>,
    baseline: Option<Run>,
}

struct Bench {
    args: Args,
    server_pid: Option<u32>,
    tck: f64,
    admin: tokio_postgres::Client,
}

impl Bench {
    /// CPU ticks of the client backends of the bench database, by pid.
    async fn pg_ticks(&self) -> HashMap<u32, u64> {
        let rows = self
            .admin
            .query(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() \
                 AND backend_type = 'client backend' AND pid <> pg_backend_pid()",
                &[],
            )
            .await
            .unwrap_or_default();
        rows.iter()
            .filter_map(|r| {
                let pid = r.get::<_, i32>(0) as u32;
                sys::cpu_ticks(pid).map(|t| (pid, t))
            })
            .collect()
    }

    /// Runs `op` and samples server RSS, server, PostgreSQL and client CPU
    /// over the measurement window.
    async fn measure(&self, op: Op, load: Load, label: String) -> Run {
        self.measure_on(self.server_pid, None, op, load, label).await
    }

    /// [`Bench::measure`] against the server `server_pid` (and a redis-server).
    async fn measure_on(
        &self,
        server_pid: Option<u32>,
        redis_pid: Option<u32>,
        op: Op,
        load: Load,
        label: String,
    ) -> Run {
        let start = Instant::now() + Duration::from_millis(50);
        let (from, to) = driver::window(&load, start);
        let task = tokio::spawn(driver::run(op, load, start, 0x5eed ^ start.elapsed().as_nanos() as u64));
        sleep_until(from).await;
        let me = std::process::id();
        let redis0 = redis_pid.and_then(sys::cpu_ticks);
        let srv0 = server_pid.and_then(sys::cpu_ticks);
        let me0 = sys::cpu_ticks(me);
        let pg0 = self.pg_ticks().await;
        let rss = server_pid.map(sys::RssSampler::start);
        sleep_until(to).await;
        let srv1 = server_pid.and_then(sys::cpu_ticks);
        let redis1 = redis_pid.and_then(sys::cpu_ticks);
        let me1 = sys::cpu_ticks(me);
        let pg1 = self.pg_ticks().await;
        let rss_peak_kib = match rss {
            Some(s) => Some(s.finish().await),
            None => None,
        };
        let stats = task.await.unwrap_or_default();
        let pg: u64 = pg1.iter().filter_map(|(pid, t1)| pg0.get(pid).map(|t0| t1.saturating_sub(*t0))).sum();
        Run {
            server_ticks: srv0.zip(srv1).map(|(a, b)| b.saturating_sub(a)),
            pg_ticks: pg,
            client_ticks: me0.zip(me1).map(|(a, b)| b.saturating_sub(a)),
            redis_ticks: redis0.zip(redis1).map(|(a, b)| b.saturating_sub(a)),
            rss_peak_kib,
            stats,
            load: label,
        }
    }

    /// Service and baseline in `rounds` alternating halves (S B, B S, ...):
    /// drift on a shared machine, and what one run leaves behind for the
    /// next (dirty buffers, dead tuples), fall on both sides alike.
    async fn compare(&self, service: Op, baseline: Op, load: Load) -> (Run, Run) {
        self.compare_on(self.server_pid, None, service, baseline, load).await
    }

    async fn compare_on(
        &self,
        pid: Option<u32>,
        redis: Option<u32>,
        service: Op,
        baseline: Op,
        load: Load,
    ) -> (Run, Run) {
        let rounds = self.args.rounds.max(1);
        let part = Load { duration: load.duration / rounds as u32, ..load };
        let (mut s, mut b) = (Run::default(), Run::default());
        for r in 0..rounds {
            let label = load_label(&load);
            if r % 2 == 0 {
                s.merge(self.measure_on(pid, redis, service.clone(), part, label.clone()).await);
                b.merge(self.measure_on(pid, None, baseline.clone(), part, label).await);
            } else {
                b.merge(self.measure_on(pid, None, baseline.clone(), part, label.clone()).await);
                s.merge(self.measure_on(pid, redis, service.clone(), part, label).await);
            }
        }
        (s, b)
    }
}

fn load_label(load: &Load) -> String {
    match load.rate {
        Some(r) => format!("open {r:.0}/s"),
        None => format!("{} streams", load.concurrency),
    }
}

async fn connect_channels(addr: &str, n: usize) -> Result<Vec<Channel>, String> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n.max(1) {
        let ch = Endpoint::from_shared(addr.to_owned())
            .map_err(|e| format!("bad address {addr}: {e}"))?
            .tcp_nodelay(true)
            .connect()
            .await
            .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
        out.push(ch);
    }
    Ok(out)
}

/// Walks the API to page `deep_page` (large pages, then the bench's page
/// size, so page boundaries match) and returns that page's token.
async fn deep_token(svc: &Service, list: &ListSpec) -> Result<String, String> {
    let target_rows = (list.deep_page - 1) * list.page_size as usize;
    let mut done = 0usize;
    let mut token = String::new();
    while done < target_rows {
        let left = target_rows - done;
        let size = if left >= 1000 { 1000 } else { list.page_size as usize };
        let r = svc.list(0, list, size as i32, &token).await?;
        done += r.jobs.len();
        if r.next_page_token.is_empty() {
            return Err(format!(
                "only {done} rows match {:?}; page {} does not exist",
                list.filter, list.deep_page
            ));
        }
        token = r.next_page_token;
    }
    Ok(token)
}

/// The keyset (order key, id) of the last row before page `deep_page`,
/// found once with OFFSET (a client that walked the pages has it).
async fn deep_key(
    db: &tokio_postgres::Client,
    list: &ListSpec,
) -> Result<(chrono::DateTime<chrono::Utc>, uuid::Uuid), String> {
    assert_eq!(list.order_by, "posting_time desc", "deep_key knows the bench's order only");
    let offset = ((list.deep_page - 1) * list.page_size as usize - 1) as i64;
    let e = |e: tokio_postgres::Error| format!("deep key: {e}");
    db.batch_execute(&format!("BEGIN READ ONLY; SET LOCAL app.tenant_id = '{}'", data::TENANT))
        .await
        .map_err(e)?;
    let row = db
        .query_one(
            "SELECT posting_time, id FROM jobs WHERE tenant_id = $1 AND delete_time IS NULL AND remote = true \
             ORDER BY posting_time DESC, id DESC OFFSET $2 LIMIT 1",
            &[&data::TENANT, &offset],
        )
        .await;
    db.batch_execute("COMMIT").await.map_err(e)?;
    let row = row.map_err(e)?;
    Ok((row.get(0), row.get(1)))
}

fn fmt_ms(v: f64) -> String {
    if v.is_nan() {
        "-".into()
    } else if v < 10.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.1}")
    }
}

fn fmt_opt(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| if v < 10.0 { format!("{v:.2}") } else { format!("{v:.0}") })
}

fn mib(kib: u64) -> String {
    format!("{:.0} MiB", kib as f64 / 1024.0)
}

#[tokio::main]
async fn main() {
    let mut args = Args::parse();
    if args.quick {
        args.duration = args.duration.min(2.0);
        args.warmup = args.warmup.min(0.5);
        args.starts = 1;
        args.rounds = 1;
    }
    if let Err(e) = run(args).await {
        eprintln!("bench: error: {e}");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> Result<(), String> {
    let out_dir = sys::out_dir();
    std::fs::create_dir_all(&out_dir).map_err(|e| format!("{}: {e}", out_dir.display()))?;
    let started = Instant::now();

    data::ensure(&args.database_url, args.jobs).await?;
    let admin = data::connect(&args.database_url).await?;

    // The server, and how long a start takes with migrations in place.
    let mut start_times = Vec::new();
    let server_log = out_dir.join("server.log");
    let _ = std::fs::remove_file(&server_log);
    let extra = args.server_arg.clone();
    let env: Vec<(String, String)> = args
        .server_env
        .iter()
        .filter_map(|kv| kv.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
        .collect();
    let (server, addr, server_pid) = match (&args.server_bin, &args.addr) {
        (Some(bin), _) => {
            let sa = server_args(&args, bin, &env, &server_log, &extra);
            let mut last = None;
            for i in 0..args.starts.max(1) {
                let (mut s, took) = sys::Server::start(&sa).await?;
                start_times.push(took);
                if i + 1 < args.starts.max(1) {
                    s.stop();
                } else {
                    last = Some(s);
                }
            }
            let s = last.expect("one server");
            let (addr, pid) = (s.addr.clone(), s.pid());
            (Some(s), addr, Some(pid))
        }
        (None, Some(addr)) => (None, addr.clone(), args.server_pid),
        (None, None) => {
            return Err("give --server-bin (start the server) or --addr (use a running one)".into());
        }
    };
    if !start_times.is_empty() {
        let ms: Vec<String> =
            start_times.iter().map(|d| format!("{:.0}", d.as_secs_f64() * 1000.0)).collect();
        eprintln!("bench: process start to SERVING: {} ms", ms.join(", "));
    }

    let token = TokenKeys::new(&args.jwt_secret).mint(
        data::TENANT,
        &[Role::Reader, Role::Writer],
        "bench",
        Duration::from_secs(24 * 3600),
    );
    let channels = connect_channels(&addr, args.connections).await?;
    let svc = Service::new(&channels, &token);
    let mut list = ListSpec {
        filter: "remote = true".into(),
        order_by: "posting_time desc".into(),
        page_size: args.page_size,
        deep_page: args.deep_page,
        deep_token: String::new(),
        deep_key: (chrono::Utc::now(), uuid::Uuid::nil()),
    };
    let bench = Bench { server_pid, tck: sys::clk_tck(), admin, args };
    let args = &bench.args;

    // Idle RSS: the started server, no calls yet but the set-up above.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_idle = server_pid.and_then(sys::rss_kib);

    let t = Instant::now();
    if args.wants("list-deep") || args.wants("mixed") {
        list.deep_token = deep_token(&svc, &list).await?;
        list.deep_key = deep_key(&bench.admin, &list).await?;
    }
    let base = Baseline::new(&args.database_url, args.pool_size, &list)?;
    let hot = args.hot_set.clamp(1, args.jobs);
    let ctx = Arc::new(Ctx {
        svc,
        base: Arc::new(base),
        list,
        jobs: args.jobs,
        hot,
        mixed_hot: args.mixed_hot_set.clamp(1, hot),
        tasks: args.concurrency,
        truth: Truth::new(hot),
    });
    if !ctx.list.deep_token.is_empty() {
        // Both sides must read the same page.
        let svc_first = ctx.svc.list(0, &ctx.list, ctx.list.page_size, &ctx.list.deep_token).await?.jobs;
        let base_first = ctx.base.deep_first_id(&ctx.list).await?;
        let svc_first = svc_first.first().map(|j| j.id.clone());
        if svc_first != base_first.map(|u| u.to_string()) {
            return Err(format!(
                "page {}: service starts at {svc_first:?}, baseline at {base_first:?}",
                ctx.list.deep_page
            ));
        }
        eprintln!(
            "bench: page {} located ({:.1?}); service and baseline agree on its first row",
            ctx.list.deep_page,
            t.elapsed()
        );
    }

    let mut rows: Vec<Row> = Vec::new();
    let load = args.load(args.concurrency, args.rate);
    let scenarios = [
        ("get", Kind::Get),
        ("list-first", Kind::ListFirst),
        ("list-deep", Kind::ListDeep),
        ("create", Kind::Create),
        ("update", Kind::Update),
        ("mixed", Kind::Mixed),
    ];
    let mut rss_load_peak = 0u64;
    for (key, kind) in scenarios {
        if !args.wants(key) {
            continue;
        }
        let name = kind.label(&ctx.list);
        eprintln!("bench: {name}: service and baseline ({})", load_label(&load));
        let (s, b) = bench
            .compare(
                scenarios::service_op(ctx.clone(), kind),
                scenarios::baseline_op(ctx.clone(), kind),
                load,
            )
            .await;
        rss_load_peak = rss_load_peak.max(s.rss_peak_kib.unwrap_or(0));
        report_errors(&name, "service", &s.stats);
        report_errors(&name, "baseline", &b.stats);
        rows.push(Row { name, service: Some(s), baseline: Some(b) });
    }

    // Open loop GetJob at a fixed, sustainable rate: latency without
    // saturation (service and baseline at the same schedule).
    if args.rate.is_none() && args.wants("open") {
        let closed_get = rows.iter().find(|r| r.name.starts_with("GetJob")).and_then(|r| r.service.as_ref());
        let rate =
            args.open_rate.or_else(|| closed_get.map(|r| (r.stats.rps() * 0.5).max(100.0))).unwrap_or(1000.0);
        let open = args.load(args.concurrency.max(1000), Some(rate));
        let name = format!("GetJob open loop {rate:.0}/s");
        eprintln!("bench: {name}");
        let (s, b) = bench
            .compare(
                scenarios::service_op(ctx.clone(), Kind::Get),
                scenarios::baseline_op(ctx.clone(), Kind::Get),
                open,
            )
            .await;
        report_errors(&name, "service", &s.stats);
        report_errors(&name, "baseline", &b.stats);
        rows.push(Row { name, service: Some(s), baseline: Some(b) });
    }

    // Many streams held open at once against a pool of --pool-size.
    let mut rss_streams = None;
    if args.wants("streams") {
        let held = args.load(args.streams, None);
        let name = format!("GetJob, {} concurrent streams", args.streams);
        eprintln!("bench: {name} (pool {})", args.pool_size);
        let s = bench.measure(scenarios::service_op(ctx.clone(), Kind::Get), held, load_label(&held)).await;
        report_errors(&name, "service", &s.stats);
        rss_streams = s.rss_peak_kib;
        rows.push(Row { name, service: Some(s), baseline: None });
    }

    // The cache: GetJob over the hot set and the checked 90/10 mix, each on
    // a fresh server (cache off, Redis, Redis + near cache) over one
    // redis-server of the bench's own.
    let mut notes: Vec<String> = Vec::new();
    if (args.wants("cached") || args.wants("mixed-cached"))
        && let Some(bin) = &args.server_bin
    {
        let redis = sys::Redis::start(&args.redis_server).await?;
        let near_capacity = (2 * hot).to_string();
        let configs: [(&str, Vec<&str>); 3] = [
            ("cache off", vec![]),
            ("Redis cache", vec!["--redis-url", &redis.url]),
            (
                "Redis + near cache",
                vec!["--redis-url", &redis.url, "--cache-near", "--cache-near-capacity", &near_capacity],
            ),
        ];
        for (label, cache_args) in configs {
            let mut extra = extra.clone();
            extra.extend(cache_args.iter().map(|a| a.to_string()));
            let (srv, _) = sys::Server::start(&server_args(args, bin, &env, &server_log, &extra)).await?;
            let channels = connect_channels(&srv.addr, args.connections).await?;
            let c = Arc::new(Ctx {
                svc: Service::new(&channels, &token),
                base: ctx.base.clone(),
                list: ctx.list.clone(),
                jobs: args.jobs,
                hot,
                mixed_hot: args.mixed_hot_set.clamp(1, hot),
                tasks: args.concurrency,
                truth: Truth::new(hot),
            });
            if !cache_args.is_empty() {
                // Warm: once into Redis, once more into the near cache (it
                // is filled from Redis hits only).
                let t0 = Instant::now();
                c.svc.read_all(0, hot).await?;
                c.svc.read_all(0, hot).await?;
                eprintln!("bench: {label}: hot set read twice to warm it ({:.1?})", t0.elapsed());
            }
            let pid = Some(srv.pid());
            let redis_pid = (!cache_args.is_empty()).then(|| redis.pid());
            if args.wants("cached") {
                let name = format!("GetJob, hot set of {hot}, {label}");
                eprintln!("bench: {name}: service and baseline ({})", load_label(&load));
                let m0 = sys::scrape(&srv.metrics);
                let (s, b) = bench
                    .compare_on(
                        pid,
                        redis_pid,
                        scenarios::service_op(c.clone(), Kind::GetHot),
                        scenarios::baseline_op(c.clone(), Kind::GetHot),
                        load,
                    )
                    .await;
                let m1 = sys::scrape(&srv.metrics);
                notes.push(cache_note(&name, &m0, &m1, &s, bench.tck, None));
                report_errors(&name, "service", &s.stats);
                report_errors(&name, "baseline", &b.stats);
                rows.push(Row { name, service: Some(s), baseline: Some(b) });
            }
            if args.wants("mixed-cached") {
                let name = format!("mixed 90/10 GetJob/UpdateJob, {} jobs, {label}", c.mixed_hot);
                eprintln!("bench: {name} ({})", load_label(&load));
                c.truth.reset();
                let m0 = sys::scrape(&srv.metrics);
                let op = scenarios::service_op(c.clone(), Kind::MixedHot);
                let s = bench.measure_on(pid, redis_pid, op, load, load_label(&load)).await;
                let m1 = sys::scrape(&srv.metrics);
                let checked = (
                    c.truth.checked.load(std::sync::atomic::Ordering::Relaxed),
                    c.truth.stale.load(std::sync::atomic::Ordering::Relaxed),
                );
                notes.push(cache_note(&name, &m0, &m1, &s, bench.tck, Some(checked)));
                report_errors(&name, "service", &s.stats);
                rows.push(Row { name, service: Some(s), baseline: None });
            }
            drop(srv);
        }
    }

    let mut pgbench = None;
    if args.wants("pgbench")
        && let Some(url) = &args.pgbench_url
    {
        eprintln!("bench: pgbench -S, {} clients", args.concurrency);
        let secs = args.duration.ceil().max(1.0) as u64;
        match sys::pgbench(&args.pgbench, url, args.concurrency, secs, &out_dir) {
            Ok(p) => pgbench = Some(p),
            Err(e) => eprintln!("bench: pgbench skipped: {e}"),
        }
    }

    let rss_after = server_pid.and_then(sys::rss_kib);
    drop(server);

    let report = render(&ReportIn {
        args,
        tck: bench.tck,
        rows: &rows,
        pgbench: pgbench.as_ref(),
        start_times: &start_times,
        rss_idle,
        rss_load_peak: (rss_load_peak > 0).then_some(rss_load_peak),
        rss_streams,
        rss_after,
        notes: &notes,
        total: started.elapsed(),
    });
    println!("{report}");
    let out = args.out.clone().unwrap_or_else(|| out_dir.join("report.md"));
    std::fs::write(&out, &report).map_err(|e| format!("{}: {e}", out.display()))?;
    eprintln!("bench: report written to {}", out.display());
    Ok(())
}

/// Hit ratio (near hits count as hits; warm-up included), Redis CPU and,
/// for a checked mix, the reads checked and the stale ones.
fn cache_note(
    name: &str,
    m0: &HashMap<String, f64>,
    m1: &HashMap<String, f64>,
    run: &Run,
    tck: f64,
    checked: Option<(u64, u64)>,
) -> String {
    let d = |k: &str| m1.get(k).copied().unwrap_or(0.0) - m0.get(k).copied().unwrap_or(0.0);
    let (hit, miss, error) = (
        d("bi_data_cache_requests_total{result=\"hit\"}"),
        d("bi_data_cache_requests_total{result=\"miss\"}"),
        d("bi_data_cache_requests_total{result=\"error\"}"),
    );
    let near = d("bi_data_cache_near_requests_total{result=\"hit\"}");
    let total = near + hit + miss + error;
    let mut out = format!("- {name}: ");
    if total > 0.0 {
        let _ = write!(
            out,
            "hit ratio {:.1} % ({near:.0} near + {hit:.0} Redis hits of {total:.0} look-ups; {miss:.0} misses, {error:.0} errors)",
            100.0 * (near + hit) / total
        );
        if let Some(ms) = run.per_1k(run.redis_ticks, tck) {
            let _ = write!(out, "; redis-server CPU {} ms/1k req", fmt_opt(Some(ms)));
        }
    } else {
        out.push_str("no cache");
    }
    if let Some((n, stale)) = checked {
        let _ = write!(out, "; {n} reads checked against the last acknowledged write, {stale} stale");
    }
    out
}

/// How a server is started: the bench's flags plus `extra`.
fn server_args<'a>(
    args: &'a Args,
    bin: &'a std::path::Path,
    env: &'a [(String, String)],
    log: &'a std::path::Path,
    extra: &'a [String],
) -> sys::ServerArgs<'a> {
    sys::ServerArgs {
        env,
        bin,
        database_url: &args.database_url,
        jwt_secret: &args.jwt_secret,
        pool_size: args.pool_size,
        log,
        extra,
    }
}

fn report_errors(name: &str, side: &str, s: &Stats) {
    if s.errors > 0 {
        eprintln!(
            "bench: {name} ({side}): {} errors ({} ok); first: {}",
            s.errors,
            s.ok,
            s.first_error.as_deref().unwrap_or("?")
        );
    }
}

struct ReportIn<'a> {
    args: &'a Args,
    tck: f64,
    rows: &'a [Row],
    pgbench: Option<&'a sys::Pgbench>,
    start_times: &'a [Duration],
    rss_idle: Option<u64>,
    rss_load_peak: Option<u64>,
    rss_streams: Option<u64>,
    rss_after: Option<u64>,
    /// Lines about the cache scenarios.
    notes: &'a [String],
    total: Duration,
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("model name").map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
            })
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("MemTotal:").map(|v| v.trim().to_owned())))
        .and_then(|v| v.trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or("?".into(), |k| format!("{:.0} GiB", k as f64 / 1024.0 / 1024.0));
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    format!("{cores} cores ({cpu}), {mem} RAM; load average at the end {}", load.join(" "))
}

fn render(r: &ReportIn<'_>) -> String {
    let a = r.args;
    let mut o = String::new();
    let _ = writeln!(o, "## bi-data load test\n");
    let _ = writeln!(
        o,
        "{} jobs, one tenant; {} s per side and scenario ({} alternating rounds, each after {} s warm-up); {} streams over {} HTTP/2 connections; \
         server and baseline pool {} connections; client, server and PostgreSQL on one machine: {}.",
        a.jobs,
        a.duration,
        a.rounds,
        a.warmup,
        a.concurrency,
        a.connections,
        a.pool_size,
        machine()
    );
    if !a.note.is_empty() {
        let _ = writeln!(o, "\n**Note:** {}", a.note);
    }
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "| scenario | load | service req/s | p50 ms | p99 ms | p99.9 ms | errors | baseline req/s | p50 ms | p99 ms | p99.9 ms | ratio | server CPU ms/1k req | PG CPU ms/1k svc / base |"
    );
    let _ = writeln!(o, "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
    for row in r.rows {
        let s = row.service.as_ref();
        let b = row.baseline.as_ref();
        let cols = |run: Option<&Run>| match run {
            Some(x) => (
                format!("{:.0}", x.stats.rps()),
                fmt_ms(x.stats.ms(0.5)),
                fmt_ms(x.stats.ms(0.99)),
                fmt_ms(x.stats.ms(0.999)),
                x.stats.errors.to_string(),
            ),
            None => ("-".into(), "-".into(), "-".into(), "-".into(), "-".into()),
        };
        let (sr, s50, s99, s999, se) = cols(s);
        let (br, b50, b99, b999, _) = cols(b);
        let ratio = match (s, b) {
            (Some(s), Some(b)) if b.stats.rps() > 0.0 => {
                format!("{:.0} %", 100.0 * s.stats.rps() / b.stats.rps())
            }
            _ => "-".into(),
        };
        let load = s.or(b).map_or(String::new(), |x| x.load.clone());
        let tck = r.tck;
        let pg = format!(
            "{} / {}",
            fmt_opt(s.and_then(|x| x.per_1k(Some(x.pg_ticks), tck))),
            fmt_opt(b.and_then(|x| x.per_1k(Some(x.pg_ticks), tck)))
        );
        let _ = writeln!(
            o,
            "| {} | {load} | {sr} | {s50} | {s99} | {s999} | {se} | {br} | {b50} | {b99} | {b999} | {ratio} | {} | {pg} |",
            row.name,
            fmt_opt(s.and_then(|x| x.per_1k(x.server_ticks, tck))),
        );
    }
    if let Some(p) = r.pgbench {
        let st = &p.stats;
        let _ = writeln!(
            o,
            "| pgbench -S -M prepared (ceiling) | {} clients | - | - | - | - | {} | {:.0} | {} | {} | {} | - | - | - |",
            p.connections,
            st.errors,
            st.rps(),
            fmt_ms(st.ms(0.5)),
            fmt_ms(st.ms(0.99)),
            fmt_ms(st.ms(0.999)),
        );
    }
    let _ = writeln!(o);
    for n in r.notes {
        let _ = writeln!(o, "{n}");
    }
    if !r.start_times.is_empty() {
        let ms: Vec<String> =
            r.start_times.iter().map(|d| format!("{:.0}", d.as_secs_f64() * 1000.0)).collect();
        let _ = writeln!(o, "- Process start to SERVING (migrations already applied): {} ms", ms.join(", "));
    }
    let rss = |v: Option<u64>| v.map_or("-".into(), mib);
    let _ = writeln!(
        o,
        "- Server RSS: idle {}, peak under load ({} streams) {}, peak holding {} streams {}, after the run {}",
        rss(r.rss_idle),
        a.concurrency,
        rss(r.rss_load_peak),
        a.streams,
        rss(r.rss_streams),
        rss(r.rss_after)
    );
    let client: Vec<String> = r
        .rows
        .iter()
        .filter_map(|row| {
            let svc = row.service.as_ref()?;
            let s = svc.per_1k(svc.client_ticks, r.tck)?;
            let b = row.baseline.as_ref().and_then(|b| b.per_1k(b.client_ticks, r.tck));
            Some(format!("{} {} / {}", row.name, fmt_opt(Some(s)), fmt_opt(b)))
        })
        .collect();
    let _ =
        writeln!(o, "- Load generator CPU, ms per 1k requests (service / baseline): {}", client.join("; "));
    let _ = writeln!(
        o,
        "- Ratio = service req/s ÷ baseline req/s. Baseline: the same rows through one prepared statement per request \
         (tokio-postgres, pool of {} as the service's role with the tenant set once per session). CPU: user + system \
         from /proc, over the measured window only.",
        a.pool_size
    );
    let _ = writeln!(
        o,
        "- Whole run: {:.0} s. Reproduce: `scripts/bench.sh` (see docs/performance.md).",
        r.total.as_secs_f64()
    );
    o
}
