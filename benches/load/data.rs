//! The benchmark data set: one tenant with N realistic jobs in a dedicated
//! database, loaded once with binary COPY and reused by later runs.
//!
//! Ids and contents are a pure function of the row number, so the load
//! generator knows every id without reading them back, and a run can tell
//! whether the data in place is the data it expects (the `bench_dataset`
//! marker row).

use std::{pin::pin, time::Instant};

use chrono::{DateTime, TimeZone, Utc};
use tokio_postgres::{
    Client, NoTls,
    binary_copy::BinaryCopyInWriter,
    types::{ToSql, Type},
};
use uuid::Uuid;

/// The benchmark's tenant (a constant, so data survives between runs).
pub const TENANT: Uuid = Uuid::from_u128(0xb1da7a00_be0c_4000_8000_000000000001);

/// Bumped whenever the generator changes: the data set is then reloaded.
const GENERATOR_VERSION: i32 = 1;

/// Rows written by the write scenarios carry this source_site, so each run
/// starts from the loaded data set again.
pub const WRITE_MARKER: &str = "bench-write";

/// Request ids kept in the idempotency table between runs (see `ensure`).
const STANDING_REQUEST_IDS: i32 = 100_000;

/// 2025-06-01T00:00:00Z: create_time of row 0; row i is 15 s later.
const T0_MS: i64 = 1_748_736_000_000;

/// splitmix64: a tiny deterministic generator; row i's values derive from it.
#[derive(Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    pub fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.below(xs.len() as u64) as usize]
    }
}

/// The id of loaded row `i`: a UUIDv7 whose time is the row's create_time,
/// like the ids the service assigns.
pub fn job_id(i: u64) -> Uuid {
    let mut r = Rng::new(i ^ 0x5eed_0000_0000_0001);
    let mut bytes = [0u8; 10];
    bytes[..8].copy_from_slice(&r.next().to_le_bytes());
    bytes[8..].copy_from_slice(&r.next().to_le_bytes()[..2]);
    uuid::Builder::from_unix_timestamp_millis((T0_MS + i as i64 * 15_000) as u64, &bytes).into_uuid()
}

const SENIORITY: &[&str] = &["", "Junior ", "Senior ", "Staff ", "Principal ", "Lead ", "Senior ", ""];
const ROLES: &[&str] = &[
    "Rust Engineer",
    "Backend Engineer",
    "Data Engineer",
    "Machine Learning Engineer",
    "Site Reliability Engineer",
    "Frontend Developer",
    "Platform Engineer",
    "Product Manager",
    "Business Intelligence Analyst",
    "Data Scientist",
    "Security Engineer",
    "DevOps Engineer",
    "Mobile Developer",
    "QA Automation Engineer",
    "Solutions Architect",
    "Analytics Engineer",
];
const SPECIALTIES: &[&str] =
    &["", "", "", " (Payments)", " (Search)", " (Infrastructure)", " (Growth)", " (Data Platform)", " (ML)"];
const SYLLABLES: &[&str] = &[
    "ac", "me", "glo", "bex", "ini", "tech", "um", "brel", "la", "hoo", "li", "stark", "way", "ne", "ty",
    "rell", "cy", "ber", "dyne", "soy", "lent", "vo", "lta", "nex", "ora", "quan", "tum", "zen", "ith",
];
const COMPANY_SUFFIXES: &[&str] =
    &["", " Labs", " Systems", " Analytics", " GmbH", " Inc.", " Data", " Group"];
const LOCATIONS: &[&str] = &[
    "Berlin",
    "London",
    "New York, NY",
    "San Francisco, CA",
    "Remote",
    "Toronto",
    "Lisbon",
    "Amsterdam",
    "Austin, TX",
    "Singapore",
    "Paris",
    "Munich",
    "Seattle, WA",
    "Warsaw",
];
const SOURCES: &[&str] = &["linkedin", "indeed", "glassdoor", "company_site", "hn_whoishiring", "wellfound"];
const KEYWORDS: &[&str] = &[
    "rust",
    "go",
    "python",
    "java",
    "typescript",
    "postgresql",
    "kafka",
    "kubernetes",
    "grpc",
    "aws",
    "gcp",
    "azure",
    "react",
    "sql",
    "airflow",
    "spark",
    "ml",
    "llm",
    "terraform",
    "docker",
    "redis",
    "graphql",
    "dbt",
    "snowflake",
    "linux",
    "security",
    "observability",
    "etl",
];
const INDUSTRIES: &[&str] =
    &["Software", "Finance", "Healthcare", "Logistics", "Retail", "Energy", "Media", "Education"];
const JOB_TYPES: &[&str] =
    &["FULL_TIME", "FULL_TIME", "FULL_TIME", "PART_TIME", "CONTRACT", "INTERNSHIP", "TEMPORARY"];
const LEVELS: &[&str] = &["ENTRY", "MID", "MID", "SENIOR", "SENIOR", "LEAD", "EXECUTIVE"];
const STATUSES: &[&str] =
    &["DISCOVERED", "DISCOVERED", "SAVED", "APPLIED", "INTERVIEWING", "OFFERED", "REJECTED", "CLOSED"];
const CURRENCIES: &[&str] = &["USD", "USD", "USD", "EUR", "EUR", "GBP", "CAD"];

/// One generated job, in column types.
pub struct GenJob {
    pub id: Uuid,
    pub title: String,
    pub company_name: String,
    pub company_id: Option<Uuid>,
    pub location: Option<&'static str>,
    pub salary_min: Option<i64>,
    pub salary_max: Option<i64>,
    pub salary_currency: &'static str,
    pub description: String,
    pub requirements: String,
    pub benefits: Option<&'static str>,
    pub job_url: String,
    pub source_site: &'static str,
    pub posting_time: Option<DateTime<Utc>>,
    pub application_deadline: Option<DateTime<Utc>>,
    pub discovered_time: DateTime<Utc>,
    pub remote: bool,
    pub job_type: Option<&'static str>,
    pub experience_level: Option<&'static str>,
    pub industry: Option<&'static str>,
    pub keywords: Vec<String>,
    pub status: &'static str,
    pub attributes: serde_json::Value,
    pub create_time: DateTime<Utc>,
}

impl GenJob {
    /// The tenant and the job's columns, in the order of the baseline's
    /// INSERT and of the first columns of the bulk load.
    pub fn insert_params(&self) -> Vec<&(dyn ToSql + Sync)> {
        vec![
            &TENANT,
            &self.id,
            &self.title,
            &self.company_name,
            &self.company_id,
            &self.location,
            &self.salary_min,
            &self.salary_max,
            &self.salary_currency,
            &self.description,
            &self.requirements,
            &self.benefits,
            &self.job_url,
            &self.source_site,
            &self.posting_time,
            &self.application_deadline,
            &self.discovered_time,
            &self.remote,
            &self.job_type,
            &self.experience_level,
            &self.industry,
            &self.keywords,
            &self.status,
            &self.attributes,
        ]
    }
}

fn company(n: u64) -> String {
    let mut r = Rng::new(n.wrapping_mul(0xC0FF_EE00_1234_5678));
    let parts = 2 + r.below(2);
    let mut name = String::new();
    for _ in 0..parts {
        name.push_str(r.pick(SYLLABLES));
    }
    let mut c = name.chars();
    let first = c.next().map(|f| f.to_ascii_uppercase()).unwrap_or('X');
    format!("{first}{}{}", c.as_str(), r.pick(COMPANY_SUFFIXES))
}

fn ms(t: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(t).single().expect("valid time")
}

/// Loaded row `i` (`source_site` from the usual job boards). With `write`,
/// a new job for the write scenarios: fresh id and URL, marked as such.
pub fn gen_job(i: u64, write: Option<Uuid>) -> GenJob {
    let mut r = Rng::new(i.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ 0xdead_beef);
    let create_ms = T0_MS + i as i64 * 15_000;
    let title = format!("{}{}{}", r.pick(SENIORITY), r.pick(ROLES), r.pick(SPECIALTIES));
    // ~5,000 companies, a few of them large (skewed).
    let company_no = if r.chance(20) { r.below(50) } else { r.below(5000) };
    let company_name = company(company_no);
    // A job's company_id must name a live company; the bench has none, so
    // the draw is kept (the rest of the data stays as it was) but unused.
    let _ = r.chance(30);
    let company_id: Option<Uuid> = None;
    let (salary_min, salary_max) = match r.below(10) {
        0 => (None, None),
        1 => (Some(40_000 + r.below(120) as i64 * 1000), None),
        _ => {
            let lo = 40_000 + r.below(120) as i64 * 1000;
            (Some(lo), Some(lo + 5_000 + r.below(80) as i64 * 1000))
        }
    };
    let n_kw = 2 + r.below(4) as usize;
    let mut keywords: Vec<String> = Vec::with_capacity(n_kw);
    while keywords.len() < n_kw {
        let k = r.pick(KEYWORDS);
        if !keywords.iter().any(|x| x == k) {
            keywords.push(k.to_owned());
        }
    }
    let posting = (!r.chance(4)).then(|| create_ms - r.below(3 * 86_400_000) as i64);
    let deadline = match posting {
        Some(p) if r.chance(50) => Some(p + (30 + r.below(30) as i64) * 86_400_000),
        _ => None,
    };
    let remote = r.chance(50);
    let slug: String =
        company_name.chars().filter(|c| c.is_ascii_alphanumeric()).collect::<String>().to_lowercase();
    let description = format!(
        "{company_name} is hiring a {title} to build data products with {}. You will own services \
         end to end, work with product and analytics, and improve reliability and cost. Team of {} \
         engineers; {} on-call rotation.",
        keywords.join(", "),
        3 + r.below(30),
        if r.chance(40) { "light" } else { "shared" }
    );
    let requirements = format!(
        "{}+ years of experience; strong {}; familiarity with {}.",
        1 + r.below(10),
        keywords[0],
        keywords[1..].join(" and ")
    );
    let mut attributes = serde_json::json!({
        "visa_sponsorship": r.chance(30),
        "team_size": 3 + r.below(40),
        "equity": r.chance(45),
    });
    if r.chance(25) {
        attributes["interview_rounds"] = serde_json::json!(2 + r.below(4));
    }
    let (id, job_url, source_site, create_time) = match write {
        None => (job_id(i), format!("https://jobs.example.com/{slug}/{i}"), r.pick(SOURCES), ms(create_ms)),
        Some(id) => (id, format!("https://bench.example.com/w/{id}"), WRITE_MARKER, Utc::now()),
    };
    GenJob {
        id,
        title,
        company_name,
        company_id,
        location: (!r.chance(5)).then(|| r.pick(LOCATIONS)),
        salary_min,
        salary_max,
        salary_currency: r.pick(CURRENCIES),
        description,
        requirements,
        benefits: (!r.chance(30)).then_some("Health insurance, learning budget, flexible hours."),
        job_url,
        source_site,
        posting_time: posting.map(ms),
        application_deadline: deadline.map(ms),
        discovered_time: create_time,
        remote,
        job_type: (!r.chance(10)).then(|| r.pick(JOB_TYPES)),
        experience_level: (!r.chance(10)).then(|| r.pick(LEVELS)),
        industry: (!r.chance(15)).then(|| r.pick(INDUSTRIES)),
        keywords,
        status: r.pick(STATUSES),
        attributes,
        create_time,
    }
}

/// Columns of `jobs` the loader writes (revision and delete_time keep their
/// defaults), in COPY order, with their types.
const COPY_COLUMNS: &[(&str, Type)] = &[
    ("tenant_id", Type::UUID),
    ("id", Type::UUID),
    ("title", Type::TEXT),
    ("company_name", Type::TEXT),
    ("company_id", Type::UUID),
    ("location", Type::TEXT),
    ("salary_min", Type::INT8),
    ("salary_max", Type::INT8),
    ("salary_currency", Type::TEXT),
    ("description", Type::TEXT),
    ("requirements", Type::TEXT),
    ("benefits", Type::TEXT),
    ("job_url", Type::TEXT),
    ("source_site", Type::TEXT),
    ("posting_time", Type::TIMESTAMPTZ),
    ("application_deadline", Type::TIMESTAMPTZ),
    ("discovered_time", Type::TIMESTAMPTZ),
    ("remote", Type::BOOL),
    ("job_type", Type::TEXT),
    ("experience_level", Type::TEXT),
    ("industry", Type::TEXT),
    ("keywords", Type::TEXT_ARRAY),
    ("status", Type::TEXT),
    ("attributes", Type::JSONB),
    ("create_time", Type::TIMESTAMPTZ),
    ("update_time", Type::TIMESTAMPTZ),
];

pub async fn connect(url: &str) -> Result<Client, String> {
    let (client, conn) = tokio_postgres::connect(url, NoTls).await.map_err(|e| format!("connect: {e}"))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            eprintln!("bench: database connection: {e}");
        }
    });
    Ok(client)
}

/// Makes sure the bench tenant holds exactly the generated `n` jobs and
/// nothing written by an earlier run; loads them when it does not.
/// Runs as the owner role: RLS is FORCEd for it too, so every statement runs
/// in a transaction that sets `app.tenant_id`.
pub async fn ensure(url: &str, n: u64) -> Result<(), String> {
    let mut db = connect(url).await?;
    let e = |what: &'static str| move |err: tokio_postgres::Error| format!("{what}: {err}");
    db.batch_execute(
        "CREATE TABLE IF NOT EXISTS bench_dataset (
             tenant_id uuid PRIMARY KEY, jobs bigint NOT NULL, generator int NOT NULL,
             loaded_at timestamptz NOT NULL DEFAULT now())",
    )
    .await
    .map_err(e("bench_dataset"))?;
    let tenant = TENANT.to_string();
    let marker = db
        .query_opt("SELECT jobs, generator FROM bench_dataset WHERE tenant_id = $1", &[&TENANT])
        .await
        .map_err(e("marker"))?
        .map(|r| (r.get::<_, i64>(0), r.get::<_, i32>(1)));

    // Undo the previous run's writes: created jobs, audit events, request ids.
    let t = Instant::now();
    let tx = db.transaction().await.map_err(e("begin"))?;
    tx.execute("SELECT set_config('app.tenant_id', $1, true)", &[&tenant]).await.map_err(e("tenant"))?;
    let mut removed = 0;
    for sql in [
        "DELETE FROM jobs WHERE tenant_id = $1 AND source_site = 'bench-write'",
        "DELETE FROM audit_events WHERE tenant_id = $1",
        "DELETE FROM idempotency_keys WHERE tenant_id = $1 AND request_id NOT LIKE 'bench-standing-%'",
    ] {
        removed += tx.execute(sql, &[&TENANT]).await.map_err(e("cleanup"))?;
    }
    // A serving tenant's table of request ids is never empty (24 hours of
    // them). An empty one, just analyzed, gives every pooled connection a
    // cached sequential-scan plan for the request-id lookup, which stays
    // until autovacuum analyzes the grown table (within a minute): an 8 s
    // run would measure only that (docs/performance.md). So a standing set
    // of keys stays from run to run, refreshed before the purge's 24 hours.
    let standing = tx
        .execute(
            "INSERT INTO idempotency_keys (tenant_id, request_id, method, response) \
             SELECT $1, 'bench-standing-' || i, 'Create/job', '\\x'::bytea FROM generate_series(1, $2::int) i \
             ON CONFLICT (tenant_id, request_id) DO UPDATE SET create_time = now() \
             WHERE idempotency_keys.create_time < now() - interval '12 hours'",
            &[&TENANT, &STANDING_REQUEST_IDS],
        )
        .await
        .map_err(e("standing request ids"))?;
    let count: i64 = tx
        .query_one("SELECT count(*) FROM jobs WHERE tenant_id = $1", &[&TENANT])
        .await
        .map_err(e("count"))?
        .get(0);
    tx.commit().await.map_err(e("commit"))?;
    if removed > 0 || standing > 0 {
        eprintln!(
            "bench: removed {removed} rows of the previous run's writes, (re)wrote {standing} standing request ids ({:.1?})",
            t.elapsed()
        );
    }

    if marker == Some((n as i64, GENERATOR_VERSION)) && count == n as i64 {
        eprintln!("bench: data set in place: {n} jobs for tenant {TENANT}");
        if removed > 0 || standing > 0 {
            let t = Instant::now();
            db.batch_execute("VACUUM (ANALYZE) jobs, audit_events, idempotency_keys")
                .await
                .map_err(e("vacuum"))?;
            eprintln!("bench: vacuumed after cleanup ({:.1?})", t.elapsed());
        }
        return Ok(());
    }
    eprintln!(
        "bench: loading {n} jobs for tenant {TENANT} (found {count}, marker {marker:?}); this takes a while once"
    );
    load(&mut db, n).await?;
    Ok(())
}

async fn load(db: &mut Client, n: u64) -> Result<(), String> {
    let e = |what: &'static str| move |err: tokio_postgres::Error| format!("{what}: {err}");
    let started = Instant::now();
    let tx = db.transaction().await.map_err(e("begin"))?;
    tx.execute("SELECT set_config('app.tenant_id', $1, true)", &[&TENANT.to_string()])
        .await
        .map_err(e("tenant"))?;
    tx.batch_execute("SET LOCAL maintenance_work_mem = '256MB'").await.map_err(e("settings"))?;
    tx.execute("DELETE FROM jobs WHERE tenant_id = $1", &[&TENANT]).await.map_err(e("delete"))?;
    tx.execute("DELETE FROM bench_dataset WHERE tenant_id = $1", &[&TENANT]).await.map_err(e("marker"))?;

    // Building the secondary indexes once after the insert is several times
    // faster than maintaining 19 of them (4 GIN) row by row. DDL is
    // transactional: a failed load leaves the schema as it was.
    let indexes: Vec<(String, String)> = tx
        .query(
            "SELECT indexname, indexdef FROM pg_indexes \
             WHERE schemaname = current_schema() AND tablename = 'jobs' AND indexname <> 'jobs_pkey'",
            &[],
        )
        .await
        .map_err(e("indexes"))?
        .into_iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    for (name, _) in &indexes {
        tx.batch_execute(&format!("DROP INDEX {name}")).await.map_err(e("drop index"))?;
    }

    // COPY FROM refuses tables with row-level security (FORCEd here even for
    // the owner), so rows are copied into a temporary table first and moved
    // with INSERT ... SELECT, which RLS checks against app.tenant_id.
    tx.batch_execute("CREATE TEMP TABLE jobs_load (LIKE jobs INCLUDING DEFAULTS) ON COMMIT DROP")
        .await
        .map_err(e("temp table"))?;
    let cols: Vec<&str> = COPY_COLUMNS.iter().map(|(c, _)| *c).collect();
    let types: Vec<Type> = COPY_COLUMNS.iter().map(|(_, t)| t.clone()).collect();
    let sink = tx
        .copy_in(&format!("COPY jobs_load ({}) FROM STDIN BINARY", cols.join(", ")))
        .await
        .map_err(e("copy"))?;
    let mut writer = pin!(BinaryCopyInWriter::new(sink, &types));
    for i in 0..n {
        let j = gen_job(i, None);
        let mut row = j.insert_params();
        row.extend_from_slice(&[&j.create_time, &j.create_time]);
        writer.as_mut().write(&row).await.map_err(e("copy row"))?;
        if (i + 1) % 200_000 == 0 {
            eprintln!("bench:   {} rows copied ({:.0?})", i + 1, started.elapsed());
        }
    }
    writer.as_mut().finish().await.map_err(e("copy finish"))?;
    let moved = tx
        .execute(&format!("INSERT INTO jobs ({c}) SELECT {c} FROM jobs_load", c = cols.join(", ")), &[])
        .await
        .map_err(e("insert select"))?;
    eprintln!(
        "bench:   {moved} rows inserted ({:.0?}); building {} indexes",
        started.elapsed(),
        indexes.len()
    );
    for (_, def) in &indexes {
        tx.batch_execute(def).await.map_err(e("create index"))?;
    }
    tx.execute(
        "INSERT INTO bench_dataset (tenant_id, jobs, generator) VALUES ($1, $2, $3)",
        &[&TENANT, &(n as i64), &GENERATOR_VERSION],
    )
    .await
    .map_err(e("marker"))?;
    tx.commit().await.map_err(e("commit"))?;
    eprintln!("bench:   committed ({:.0?}); vacuum analyze", started.elapsed());
    db.batch_execute("VACUUM (ANALYZE) jobs, idempotency_keys").await.map_err(e("vacuum"))?;
    eprintln!("bench: loaded {n} jobs in {:.0?}", started.elapsed());
    Ok(())
}
