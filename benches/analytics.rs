//! AnalyticsService benchmark (issue 12). Not a test: it prints figures.
//! Run it through `scripts/bench-analytics.sh`, which builds in release
//! mode, starts two servers on one database (cache off, cache on) and
//! passes the flags.
//!
//! 1. Loads one tenant with 1,000,000 jobs (posting and create times over
//!    two years, 12 industries, salaries), 10,000 companies, 20,000
//!    opportunities and 100,000 campaigns with their events (INSERT ...
//!    SELECT as the owner under the tenant's `app.tenant_id`), then VACUUM
//!    ANALYZE.
//! 2. Per call (a monthly job trend over two years, an industry group-by
//!    with P90 salary, the outreach funnel, the opportunity pipeline):
//!    p50/p99 of sequential calls on the uncached server, the same SQL on a
//!    direct connection (baseline), and p50/p99 on the cached server after
//!    its first call.
//! 3. GenerateReport JOBS_BY_COMPANY as CSV over 100,000 and 1,000,000
//!    rows: time, bytes, rows/s and the uncached server's RSS sampled
//!    every 50 ms while it streams (peak and the RSS before the call).

use std::{
    env,
    time::{Duration, Instant},
};

use bi_data::{
    auth::{Role, TokenKeys},
    pb::{self, analytics_service_client::AnalyticsServiceClient},
};
use futures_util::StreamExt;
use tokio_postgres::NoTls;
use tonic::{Request, transport::Channel};
use uuid::Uuid;

struct Args {
    uncached: String,
    cached: String,
    database_url: String,
    secret: String,
    server_pid: u32,
    jobs: usize,
    calls: usize,
}

fn parse_args() -> Args {
    let mut a = Args {
        uncached: "http://127.0.0.1:50063".into(),
        cached: "http://127.0.0.1:50064".into(),
        database_url: String::new(),
        secret: env::var("JWT_SECRET").unwrap_or_default(),
        server_pid: 0,
        jobs: 1_000_000,
        calls: 30,
    };
    let argv: Vec<String> = env::args().skip(1).filter(|s| s != "--bench").collect();
    let mut it = argv.iter();
    while let Some(flag) = it.next() {
        let mut val = || it.next().cloned().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--uncached" => a.uncached = val(),
            "--cached" => a.cached = val(),
            "--database-url" => a.database_url = val(),
            "--server-pid" => a.server_pid = val().parse().expect("--server-pid PID"),
            "--jobs" => a.jobs = val().parse().expect("--jobs N"),
            "--calls" => a.calls = val().parse().expect("--calls N"),
            other => panic!("unknown flag {other}"),
        }
    }
    assert!(!a.secret.is_empty(), "JWT_SECRET must be set (the servers' secret)");
    assert!(!a.database_url.is_empty(), "--database-url is needed");
    a
}

fn authed<T>(token: &str, msg: T) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    r
}

async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, NoTls).await.expect("connect");
    tokio::spawn(conn);
    client
}

async fn as_tenant(db: &tokio_postgres::Client, tenant: Uuid, sql: &str) {
    db.batch_execute(&format!("BEGIN; SELECT set_config('app.tenant_id', '{tenant}', true); {sql}; COMMIT"))
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split(' ')
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:")).map(str::to_owned))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|kb| kb.parse::<f64>().ok()))
        .map_or(0.0, |kb| kb / 1024.0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn summary(mut lat: Vec<Duration>) -> String {
    lat.sort();
    format!("p50 {:7.2} ms  p99 {:7.2} ms", ms(percentile(&lat, 0.5)), ms(percentile(&lat, 0.99)))
}

const INDUSTRIES: &str = "ARRAY['fintech','health','retail','energy','media','logistics','security','education',\
                          'travel','gaming','insurance','manufacturing']";

async fn seed(db: &tokio_postgres::Client, tenant: Uuid, jobs: usize) {
    let t0 = Instant::now();
    // Jobs in batches of 100,000 (one transaction each).
    for start in (0..jobs).step_by(100_000) {
        let end = (start + 100_000).min(jobs);
        as_tenant(
            db,
            tenant,
            &format!(
                "INSERT INTO jobs (tenant_id, id, title, company_name, location, salary_min, salary_max, industry, \
                 job_type, experience_level, remote, status, keywords, posting_time, create_time, update_time, \
                 source_site, job_url) \
                 SELECT '{tenant}', gen_random_uuid(), 'Engineer ' || g, 'Company ' || (g % 5000), \
                 (ARRAY['Berlin','London','Paris','New York','Remote'])[1 + g % 5], \
                 30000 + (g::bigint * 7919) % 60000, 60000 + (g::bigint * 7919) % 120000, \
                 ({INDUSTRIES})[1 + (g * 31) % 12], \
                 (ARRAY['FULL_TIME','PART_TIME','CONTRACT'])[1 + g % 3], \
                 (ARRAY['ENTRY','MID','SENIOR','LEAD'])[1 + g % 4], g % 3 = 0, 'DISCOVERED', \
                 ARRAY['rust','sql'], t, t, t, 'bench', 'https://bench.test/' || g \
                 FROM (SELECT g, timestamptz '2025-01-01' + ((g * 2654435761) % 63072000) * interval '1 second' AS t \
                       FROM generate_series({s}, {e}) g) AS x",
                s = start + 1,
                e = end
            ),
        )
        .await;
        println!("  jobs {end}/{jobs} ({:.0} s)", t0.elapsed().as_secs_f64());
    }
    as_tenant(
        db,
        tenant,
        "INSERT INTO companies (tenant_id, id, name, industry) \
         SELECT app_tenant(), gen_random_uuid(), 'Bench Company ' || g, 'fintech' FROM generate_series(1, 10000) g",
    )
    .await;
    as_tenant(
        db,
        tenant,
        "INSERT INTO opportunities (tenant_id, id, company_id, solution_approach, estimated_value, status) \
         SELECT app_tenant(), gen_random_uuid(), c.id, 'Automate', 1000 * (1 + c.n % 50), \
                (ARRAY['IDENTIFIED','RESEARCHED','POC_CREATED','PITCHED','ACCEPTED','REJECTED'])[1 + (c.n + k) % 6] \
         FROM (SELECT id, row_number() OVER () AS n FROM companies WHERE tenant_id = app_tenant()) c, \
              generate_series(0, 1) k",
    )
    .await;
    // Campaigns: 100,000 over the companies; progress by number: 90 % sent,
    // 50 % opened, 20 % replied, 8 % interested.
    as_tenant(
        db,
        tenant,
        "CREATE TEMP TABLE bench_campaigns ON COMMIT DROP AS \
         SELECT gen_random_uuid() AS id, c.id AS company_id, g, \
                timestamptz '2025-01-01' + ((g * 2654435761) % 62000000) * interval '1 second' AS t \
         FROM generate_series(1, 100000) g \
         JOIN (SELECT id, row_number() OVER () - 1 AS n FROM companies WHERE tenant_id = app_tenant()) c \
           ON c.n = g % 10000; \
         INSERT INTO campaigns (tenant_id, id, company_id, message_content, status, sent_time, response_time, create_time) \
         SELECT app_tenant(), id, company_id, 'Hello', \
                CASE WHEN g % 100 < 8 THEN 'INTERESTED' WHEN g % 100 < 20 THEN 'REPLIED' \
                     WHEN g % 100 < 50 THEN 'OPENED' WHEN g % 100 < 90 THEN 'SENT' ELSE 'DRAFT' END, \
                CASE WHEN g % 100 < 90 THEN t END, CASE WHEN g % 100 < 20 THEN t + interval '2 days' END, t \
         FROM bench_campaigns; \
         INSERT INTO campaign_events (tenant_id, id, campaign_id, seq, event, event_time) \
         SELECT app_tenant(), gen_random_uuid(), id, s.seq, s.ev, t + (s.seq - 1) * interval '1 day' \
         FROM bench_campaigns, \
              LATERAL (VALUES (1, 'SENT', 90), (2, 'OPENED', 50), (3, 'REPLIED', 20), (4, 'INTERESTED', 8)) \
                      AS s(seq, ev, upto) \
         WHERE g % 100 < s.upto",
    )
    .await;
    // One statement each: VACUUM cannot run in the implicit transaction of a batch.
    for t in ["jobs", "companies", "opportunities", "campaigns", "campaign_events"] {
        db.batch_execute(&format!("VACUUM ANALYZE {t}")).await.unwrap();
    }
    println!(
        "loaded {jobs} jobs, 10,000 companies, 20,000 opportunities, 100,000 campaigns in {:.0} s",
        t0.elapsed().as_secs_f64()
    );
}

fn ts(s: &str) -> Option<prost_types::Timestamp> {
    let t = chrono::DateTime::parse_from_rfc3339(s).expect("time");
    Some(prost_types::Timestamp { seconds: t.timestamp(), nanos: 0 })
}

#[derive(Clone, Copy, Debug)]
enum Call {
    Trend,
    GroupBy,
    Funnel,
    Pipeline,
}

async fn call(client: &mut AnalyticsServiceClient<Channel>, token: &str, c: Call) -> usize {
    match c {
        Call::Trend => {
            let req = pb::GetTrendRequest {
                entity: pb::Entity::Jobs as i32,
                time_field: "posting_time".into(),
                bucket: pb::TrendBucket::Month as i32,
                start_time: ts("2025-01-01T00:00:00Z"),
                end_time: ts("2027-01-01T00:00:00Z"),
                ..Default::default()
            };
            client.get_trend(authed(token, req)).await.expect("GetTrend").into_inner().points.len()
        }
        Call::GroupBy => {
            let req = pb::AggregateMetricsRequest {
                entity: pb::Entity::Jobs as i32,
                group_by: vec!["industry".into()],
                metrics: vec![
                    pb::Metric { function: pb::MetricFunction::P90 as i32, field: "salary_max".into() },
                    pb::Metric { function: pb::MetricFunction::Count as i32, field: String::new() },
                ],
                ..Default::default()
            };
            client
                .aggregate_metrics(authed(token, req))
                .await
                .expect("AggregateMetrics")
                .into_inner()
                .rows
                .len()
        }
        Call::Funnel => {
            let req = pb::GetOutreachFunnelRequest::default();
            client.get_outreach_funnel(authed(token, req)).await.expect("funnel").into_inner().stages.len()
        }
        Call::Pipeline => {
            let req = pb::GetOpportunityPipelineRequest::default();
            client
                .get_opportunity_pipeline(authed(token, req))
                .await
                .expect("pipeline")
                .into_inner()
                .stages
                .len()
        }
    }
}

/// The statement each call runs, as plain SQL on the owner's connection.
fn baseline_sql(c: Call) -> &'static str {
    match c {
        Call::Trend => {
            "SELECT date_trunc('month', posting_time, 'UTC'), count(*) FROM jobs WHERE tenant_id = $1 \
             AND delete_time IS NULL AND posting_time >= '2025-01-01' AND posting_time < '2027-01-01' GROUP BY 1"
        }
        Call::GroupBy => {
            "SELECT industry, percentile_cont(0.9) WITHIN GROUP (ORDER BY salary_max), count(*) FROM jobs \
             WHERE tenant_id = $1 AND delete_time IS NULL GROUP BY industry"
        }
        Call::Funnel => {
            "SELECT count(*) FILTER (WHERE event = 'SENT'), count(*) FILTER (WHERE event = 'OPENED'), \
             count(*) FILTER (WHERE event = 'REPLIED'), count(*) FILTER (WHERE event = 'INTERESTED') \
             FROM campaign_events WHERE tenant_id = $1 AND campaign_id IN \
             (SELECT id FROM campaigns WHERE tenant_id = $1 AND delete_time IS NULL)"
        }
        Call::Pipeline => {
            "SELECT status, count(*), sum(estimated_value) FROM opportunities WHERE tenant_id = $1 \
             AND delete_time IS NULL GROUP BY status"
        }
    }
}

async fn report(
    client: &mut AnalyticsServiceClient<Channel>,
    token: &str,
    filter: &str,
    pid: u32,
) -> (Duration, u64, i64, f64, f64) {
    let before = rss_mib(pid);
    let req = pb::GenerateReportRequest {
        report: pb::Report::JobsByCompany as i32,
        format: pb::ReportFormat::Csv as i32,
        params: if filter.is_empty() {
            Default::default()
        } else {
            [("filter".to_owned(), filter.to_owned())].into_iter().collect()
        },
    };
    let start = Instant::now();
    let mut s = client.generate_report(authed(token, req)).await.expect("report").into_inner();
    let (mut bytes, mut rows, mut peak) = (0u64, 0i64, before);
    let mut last = Instant::now();
    while let Some(c) = s.next().await {
        let c = c.expect("chunk");
        bytes += c.data.len() as u64;
        rows += c.rows;
        if last.elapsed() >= Duration::from_millis(50) {
            peak = peak.max(rss_mib(pid));
            last = Instant::now();
        }
    }
    (start.elapsed(), bytes, rows, before, peak.max(rss_mib(pid)))
}

#[tokio::main]
async fn main() {
    let a = parse_args();
    let keys = TokenKeys::new(&a.secret);
    let tenant = Uuid::new_v4();
    let token = keys.mint(tenant, &[Role::Reader, Role::Writer], "bench", Duration::from_secs(7200));
    let db = connect(&a.database_url).await;
    println!("load average at start: {}", load());
    seed(&db, tenant, a.jobs).await;
    println!("load average after loading: {}", load());

    let channel = |addr: &str| Channel::from_shared(addr.to_owned()).unwrap().connect_lazy();
    let mut uncached = AnalyticsServiceClient::new(channel(&a.uncached)).max_decoding_message_size(64 << 20);
    let mut cached = AnalyticsServiceClient::new(channel(&a.cached)).max_decoding_message_size(64 << 20);
    db.batch_execute(&format!("SELECT set_config('app.tenant_id', '{tenant}', false)")).await.unwrap();

    println!(
        "\ncall                       uncached (service)            direct SQL                    cached (service)"
    );
    for c in [Call::Trend, Call::GroupBy, Call::Funnel, Call::Pipeline] {
        // One warm-up call each (plans, buffers).
        call(&mut uncached, &token, c).await;
        let mut lat = Vec::with_capacity(a.calls);
        for _ in 0..a.calls {
            let s = Instant::now();
            call(&mut uncached, &token, c).await;
            lat.push(s.elapsed());
        }
        let stmt = db.prepare(baseline_sql(c)).await.unwrap();
        db.query(&stmt, &[&tenant]).await.unwrap();
        let mut base = Vec::with_capacity(a.calls);
        for _ in 0..a.calls {
            let s = Instant::now();
            db.query(&stmt, &[&tenant]).await.unwrap();
            base.push(s.elapsed());
        }
        call(&mut cached, &token, c).await; // fills
        let mut hot = Vec::with_capacity(a.calls * 10);
        for _ in 0..a.calls * 10 {
            let s = Instant::now();
            call(&mut cached, &token, c).await;
            hot.push(s.elapsed());
        }
        println!("{:<26} {}   {}   {}", format!("{c:?}"), summary(lat), summary(base), summary(hot));
    }
    println!("load average after the calls: {}", load());

    // Reports: about 100,000 rows (salary_min is uniform over 30,000..90,000)
    // and every row.
    for (what, filter) in [("~100,000 rows", "salary_min < 36000"), ("all rows", "")] {
        let (took, bytes, rows, before, peak) = report(&mut uncached, &token, filter, a.server_pid).await;
        println!(
            "GenerateReport JOBS_BY_COMPANY CSV, {what}: {rows} rows, {:.1} MiB in {:.2} s ({:.0} rows/s); server RSS {before:.1} MiB before, peak {peak:.1} MiB while streaming",
            bytes as f64 / 1048576.0,
            took.as_secs_f64(),
            rows as f64 / took.as_secs_f64()
        );
    }
    println!("load average at the end: {}", load());
}
