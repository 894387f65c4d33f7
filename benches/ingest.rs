//! Bulk-ingest benchmark (issue: jobs at scale). Not a test: it prints
//! figures. Run it through `scripts/bench-ingest.sh`, which builds in release
//! mode, starts a server on a benchmark database and passes the flags.
//!
//! In one run, against the running server:
//!   1. ImportJobs of N synthetic jobs into a new tenant (inserts),
//!   2. the same N rows again (all updates),
//!   3. the same N rows through one raw binary COPY into `jobs` on a direct
//!      connection (a third tenant): the ceiling,
//!
//! then prints rows/s and the ratios. Optional: `--memory-rows M` streams M
//! rows (generated on the fly) while sampling the server's RSS, and
//! `--search-queries Q` measures SearchJobs latency over what was loaded.

use std::{
    env,
    time::{Duration, Instant},
};

use bi_data::{
    api::resource::ProtoResource,
    auth::{Role, TokenKeys},
    domain::{job::JOB, record::Record, value::Value},
    pb::{self, job_service_client::JobServiceClient},
    service::{Draft, validate_new},
    store::import::copy_columns,
};

/// The `i`-th demo job as the message a client sends.
fn demo_job(i: usize, seed: u64, now: i64) -> pb::Job {
    pb::Job::from_record(&Record { values: bi_data::demo::demo_job(i, seed, now), revision: 0 })
}
use tokio_postgres::{NoTls, binary_copy::BinaryCopyInWriter, types::ToSql};
use tonic::{Request, transport::Channel};
use uuid::Uuid;

struct Args {
    addr: String,
    database_url: String,
    secret: String,
    rows: usize,
    memory_rows: usize,
    search_queries: usize,
    server_pid: Option<u32>,
}

fn parse_args() -> Args {
    let mut a = Args {
        addr: "http://127.0.0.1:50061".into(),
        database_url: env::var("BENCH_DATABASE_URL").unwrap_or_default(),
        secret: env::var("JWT_SECRET").unwrap_or_default(),
        rows: 200_000,
        memory_rows: 0,
        search_queries: 0,
        server_pid: None,
    };
    let argv: Vec<String> = env::args().skip(1).filter(|s| s != "--bench").collect();
    let mut it = argv.iter();
    while let Some(flag) = it.next() {
        let mut val = || it.next().cloned().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--addr" => a.addr = val(),
            "--database-url" => a.database_url = val(),
            "--rows" => a.rows = val().parse().expect("--rows N"),
            "--memory-rows" => a.memory_rows = val().parse().expect("--memory-rows N"),
            "--search-queries" => a.search_queries = val().parse().expect("--search-queries N"),
            "--server-pid" => a.server_pid = Some(val().parse().expect("--server-pid PID")),
            other => panic!("unknown flag {other}"),
        }
    }
    assert!(!a.secret.is_empty(), "JWT_SECRET must be set (the server's secret)");
    assert!(
        !a.database_url.is_empty(),
        "--database-url (or BENCH_DATABASE_URL) is needed for the COPY baseline"
    );
    a
}

fn authed<T>(token: &str, msg: T) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    r.metadata_mut().insert("x-source-site", "bench".parse().unwrap());
    r
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()
}

async fn import(
    client: &mut JobServiceClient<Channel>,
    token: &str,
    jobs: impl tokio_stream::Stream<Item = pb::Job> + Send + 'static,
) -> (pb::IngestRun, Duration) {
    let start = Instant::now();
    let run = client
        .import_jobs(authed(token, jobs))
        .await
        .expect("ImportJobs")
        .into_inner()
        .ingest_run
        .expect("ingest run");
    (run, start.elapsed())
}

fn rate(rows: usize, d: Duration) -> f64 {
    rows as f64 / d.as_secs_f64()
}

/// One binary COPY of all rows on a direct connection: what a hand-written
/// loader would do. PostgreSQL refuses COPY FROM into a table with row-level
/// security, so the baseline loads a copy of `jobs` with the same columns,
/// generated search vector, constraints and indexes (`LIKE jobs INCLUDING
/// ALL`) and no RLS: tenant enforcement is part of what the service's figure
/// pays for, never the baseline's.
async fn raw_copy(url: &str, tenant: Uuid, jobs: &[pb::Job]) -> Duration {
    let (mut client, conn) =
        tokio_postgres::connect(url, NoTls).await.expect("connect for the COPY baseline");
    tokio::spawn(conn);
    client
        .batch_execute(
            "DROP TABLE IF EXISTS bench_copy_jobs; CREATE TABLE bench_copy_jobs (LIKE jobs INCLUDING ALL)",
        )
        .await
        .expect("baseline table");
    let (columns, types) = copy_columns(&JOB);
    let mut all_types = vec![tokio_postgres::types::Type::UUID];
    all_types.extend_from_slice(types);
    let sql = format!("COPY bench_copy_jobs (tenant_id, {}) FROM STDIN (FORMAT binary)", columns.join(", "));
    let field_index: Vec<usize> =
        columns.iter().map(|c| bi_data::domain::job::JOB.index_of(c).expect("column is a field")).collect();
    // Conversion to column values is part of any loader: inside the timing.
    let start = Instant::now();
    let tx = client.transaction().await.unwrap();
    let sink = tx.copy_in(&sql).await.unwrap();
    let writer = BinaryCopyInWriter::new(sink, &all_types);
    futures_util::pin_mut!(writer);
    let tenant_v = Value::Uuid(tenant);
    for job in jobs {
        let (draft, conversion): (Draft, _) = job.to_draft();
        let values = validate_new(&JOB, draft, conversion).expect("bench rows are valid");
        let id = Value::Uuid(Uuid::now_v7());
        let mut row: Vec<&(dyn ToSql + Sync)> = Vec::with_capacity(all_types.len());
        row.push(&tenant_v);
        for &i in &field_index {
            row.push(if i == 0 { &id } else { &values[i] });
        }
        writer.as_mut().write(&row).await.unwrap();
    }
    writer.finish().await.unwrap();
    tx.commit().await.unwrap();
    start.elapsed()
}

#[tokio::main]
async fn main() {
    let args = parse_args();
    let keys = TokenKeys::new(&args.secret);
    let token_for = |t: Uuid| keys.mint(t, &[Role::Reader, Role::Writer], "bench", Duration::from_secs(3600));
    let channel = Channel::from_shared(args.addr.clone()).unwrap().connect().await.expect("server reachable");
    let mut client = JobServiceClient::new(channel).max_decoding_message_size(64 << 20);
    let now = chrono::Utc::now().timestamp();
    let seed = 42;
    println!("generating {} synthetic jobs ...", args.rows);
    let jobs: Vec<pb::Job> = (0..args.rows).map(|i| demo_job(i, seed, now)).collect();
    let rss = |label: &str| {
        if let Some(pid) = args.server_pid {
            println!("  server RSS {label}: {} MiB", rss_kib(pid).unwrap_or(0) / 1024);
        }
    };
    rss("before");

    let tenant = Uuid::new_v4();
    let token = token_for(tenant);
    let (run, took) = import(&mut client, &token, tokio_stream::iter(jobs.clone())).await;
    assert_eq!(run.inserted as usize + run.failed as usize, args.rows, "{run:?}");
    let insert_rate = rate(args.rows, took);
    println!(
        "ImportJobs (new rows):    {:>9} rows in {:>6.2}s = {:>9.0} rows/s  (inserted {}, failed {})",
        args.rows,
        took.as_secs_f64(),
        insert_rate,
        run.inserted,
        run.failed
    );
    rss("after insert import");

    let (run, took) = import(&mut client, &token, tokio_stream::iter(jobs.clone())).await;
    let update_rate = rate(args.rows, took);
    println!(
        "ImportJobs (re-import):   {:>9} rows in {:>6.2}s = {:>9.0} rows/s  (unchanged {}, updated {}, inserted {})",
        args.rows,
        took.as_secs_f64(),
        update_rate,
        run.unchanged,
        run.updated,
        run.inserted
    );

    let took = raw_copy(&args.database_url, Uuid::new_v4(), &jobs).await;
    let copy_rate = rate(args.rows, took);
    println!(
        "raw COPY (baseline):      {:>9} rows in {:>6.2}s = {:>9.0} rows/s",
        args.rows,
        took.as_secs_f64(),
        copy_rate
    );
    println!(
        "ratio ImportJobs / raw COPY: {:.2}  (target >= 0.70); new rows target 25000 rows/s, re-import target 60000 rows/s (issue 13)",
        insert_rate / copy_rate
    );
    drop(jobs);

    if args.memory_rows > 0 {
        let tenant = Uuid::new_v4();
        let token = token_for(tenant);
        let n = args.memory_rows;
        println!("memory: streaming {n} generated rows through ImportJobs ...");
        let sampler = args.server_pid.map(|pid| {
            tokio::spawn(async move {
                let mut samples = Vec::new();
                loop {
                    if let Some(kib) = rss_kib(pid) {
                        samples.push(kib);
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    if samples.len() > 100_000 {
                        break samples;
                    }
                }
            })
        });
        let start_rss = args.server_pid.and_then(rss_kib).unwrap_or(0);
        let stream = tokio_stream::iter((0..n).map(move |i| demo_job(i + 10_000_000, seed + 1, now)));
        let (run, took) = import(&mut client, &token, stream).await;
        println!(
            "ImportJobs (memory run):  {:>9} rows in {:>6.2}s = {:>9.0} rows/s  (inserted {})",
            n,
            took.as_secs_f64(),
            rate(n, took),
            run.inserted
        );
        if let Some(s) = sampler {
            s.abort();
            let end_rss = args.server_pid.and_then(rss_kib).unwrap_or(0);
            println!(
                "  server RSS: start {} MiB, end {} MiB (sampled every 250 ms; see scripts/bench-ingest.sh for the peak)",
                start_rss / 1024,
                end_rss / 1024
            );
        }
        if args.search_queries > 0 {
            search_latency(&mut client, &token, args.search_queries).await;
        }
    }
}

/// Two-word SearchJobs latency, sequential, over the memory run's tenant.
async fn search_latency(client: &mut JobServiceClient<Channel>, token: &str, queries: usize) {
    const WORDS: &[&str] = &[
        "rust",
        "engineer",
        "data",
        "platform",
        "python",
        "analyst",
        "senior",
        "backend",
        "kubernetes",
        "sql",
    ];
    let mut lat = Vec::with_capacity(queries);
    let mut hits = 0usize;
    for i in 0..queries {
        let q = format!("{} {}", WORDS[i % WORDS.len()], WORDS[(i * 7 + 3) % WORDS.len()]);
        let start = Instant::now();
        let r = client
            .search_jobs(authed(
                token,
                pb::SearchJobsRequest { query: q, page_size: 20, ..Default::default() },
            ))
            .await
            .expect("SearchJobs")
            .into_inner();
        lat.push(start.elapsed());
        hits += r.jobs.len();
    }
    lat.sort();
    let pct =
        |p: f64| lat[((lat.len() as f64 * p).ceil() as usize).clamp(1, lat.len()) - 1].as_secs_f64() * 1000.0;
    println!(
        "SearchJobs two-word queries: n={queries} p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (avg hits/page {:.1}; target p99 < 50 ms)",
        pct(0.50),
        pct(0.99),
        pct(1.0),
        hits as f64 / queries as f64
    );
}
