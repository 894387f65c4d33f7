//! `bi-data demo-data`: a new tenant with realistic jobs, loaded through the
//! same batch-create use case the API calls (so demo rows are validated and
//! audited too).

use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::{
    auth::{Role, TokenKeys},
    config::DemoArgs,
    domain::{
        job::{EXPERIENCE_LEVEL, JOB, JOB_STATUS, JOB_TYPE},
        record::Fields,
        value::Value,
    },
    error::Error,
    service::{BatchItem, Draft, MAX_BATCH, Scope, Service},
    store::{Store, migrate},
};

const SENIORITY: &[&str] = &["Junior", "", "", "Senior", "Staff", "Principal", "Lead"];
const TECH: &[&str] = &[
    "Rust",
    "Go",
    "Python",
    "Java",
    "TypeScript",
    "Data",
    "Machine Learning",
    "Cloud",
    "Security",
    "Platform",
    "Mobile",
    "Embedded",
    "Kotlin",
    "Scala",
    "Frontend",
    "Backend",
    "Database",
    "Analytics",
];
const ROLE: &[&str] =
    &["Engineer", "Developer", "Analyst", "Architect", "Consultant", "Scientist", "Manager", "Specialist"];
/// Words for descriptions, so full-text queries match realistic fractions.
const VOCAB: &[&str] = &[
    "pipeline",
    "dashboard",
    "warehouse",
    "customer",
    "revenue",
    "forecast",
    "automation",
    "workflow",
    "invoice",
    "logistics",
    "compliance",
    "onboarding",
    "latency",
    "throughput",
    "migration",
    "kubernetes",
    "terraform",
    "postgresql",
    "kafka",
    "spark",
    "airflow",
    "snowflake",
    "tableau",
    "grpc",
    "microservices",
    "monitoring",
    "observability",
    "incident",
    "security",
    "identity",
    "payments",
    "billing",
    "search",
    "recommendation",
    "experiment",
    "pricing",
    "marketing",
    "outreach",
    "campaign",
    "lead",
    "prospect",
    "enrichment",
    "scraping",
    "crawler",
    "ingestion",
    "streaming",
    "batch",
    "reporting",
    "budget",
    "stakeholder",
    "roadmap",
    "mentoring",
    "hiring",
    "remote",
    "hybrid",
    "startup",
    "enterprise",
    "healthcare",
    "fintech",
    "retail",
    "energy",
    "manufacturing",
    "insurance",
    "banking",
    "telecom",
    "gaming",
    "education",
    "research",
    "compiler",
    "runtime",
    "embedded",
    "firmware",
    "android",
    "ios",
    "react",
    "vue",
    "design",
    "accessibility",
    "testing",
    "quality",
    "reliability",
    "scalability",
    "performance",
    "caching",
    "indexing",
    "replication",
    "backup",
    "recovery",
    "audit",
    "governance",
    "privacy",
    "encryption",
    "network",
    "storage",
    "serverless",
    "containers",
    "linux",
    "windows",
    "excel",
    "python",
    "rust",
    "golang",
    "java",
    "typescript",
    "sql",
    "nosql",
    "graphql",
    "rest",
    "api",
    "sdk",
    "cli",
    "integration",
    "partner",
    "vendor",
    "contract",
    "negotiation",
    "sales",
    "support",
];
const COMPANIES: &[&str] = &[
    "Acme Analytics",
    "Globex",
    "Initech",
    "Umbrella Data",
    "Hooli",
    "Stark Industries",
    "Wayne Logistics",
    "Tyrell Systems",
    "Cyberdyne Robotics",
    "Soylent Foods",
];
const LOCATIONS: &[&str] =
    &["Berlin", "London", "New York, NY", "San Francisco, CA", "Remote", "Toronto", "Lisbon"];
const SOURCES: &[&str] = &["linkedin", "indeed", "glassdoor", "company_site", "hn_whoishiring"];
const KEYWORDS: &[&str] = &[
    "rust",
    "go",
    "python",
    "postgresql",
    "kubernetes",
    "grpc",
    "aws",
    "react",
    "sql",
    "airflow",
    "ml",
    "terraform",
];
const INDUSTRIES: &[&str] = &["Software", "Finance", "Healthcare", "Logistics", "Retail", "Energy"];

/// Small deterministic generator (no dependency needed for demo data).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[(self.next() as usize) % xs.len()]
    }
}

/// The `i`-th demo job of a seed, as field values in `JOB`'s order.
pub fn demo_job(i: usize, rng_seed: u64, now: i64) -> Vec<Value> {
    let mut r = Lcg(rng_seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let title = [r.pick(SENIORITY), r.pick(TECH), r.pick(ROLE)]
        .iter()
        .filter(|w| !w.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join(" ");
    let company = r.pick(COMPANIES);
    let min = 50_000 + (r.next() % 100) as i64 * 1000;
    let kw: Vec<String> = (0..3)
        .map(|_| r.pick(KEYWORDS).to_owned())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let words: Vec<&str> = (0..14).map(|_| r.pick(VOCAB)).collect();
    let posted = now - (r.next() % (60 * 86_400)) as i64;
    let attrs = serde_json::json!({
        "visa_sponsorship": r.next().is_multiple_of(3),
        "team_size": (3 + r.next() % 20) as f64,
    });
    let text = |s: String| Value::Text(s);
    let mut values = vec![Value::Null; JOB.fields.len()];
    let mut v = Fields::new(&JOB, &mut values);
    v.set("title", text(title.clone()));
    v.set("company_name", text(company.to_owned()));
    v.set("location", text(r.pick(LOCATIONS).to_owned()));
    v.set("salary_min", Value::Int(min));
    v.set("salary_max", Value::Int(min + 10_000 + (r.next() % 60) as i64 * 1000));
    v.set("salary_currency", text("USD".into()));
    v.set(
        "description",
        text(format!("{company} is hiring a {title}. You will work on {}.", words.join(" "))),
    );
    v.set("requirements", text(format!("Experience with {}.", kw.join(" and "))));
    v.set("benefits", text("Health insurance, learning budget, flexible hours.".into()));
    v.set(
        "job_url",
        text(format!("https://jobs.example.com/{}/{i}", company.to_lowercase().replace(' ', "-"))),
    );
    v.set("source_site", text(r.pick(SOURCES).to_owned()));
    v.set("posting_time", DateTime::<Utc>::from_timestamp(posted, 0).map_or(Value::Null, Value::Time));
    v.set("remote", Value::Bool(r.next().is_multiple_of(2)));
    v.set("job_type", text(JOB_TYPE.values[(r.next() % 5) as usize].to_owned()));
    v.set("experience_level", text(EXPERIENCE_LEVEL.values[(r.next() % 5) as usize].to_owned()));
    v.set("industry", text(r.pick(INDUSTRIES).to_owned()));
    v.set("keywords", Value::TextArray(kw));
    v.set("status", text(JOB_STATUS.values[(r.next() % 7) as usize].to_owned()));
    v.set("attributes", Value::Json(attrs));
    values
}

pub async fn run(args: DemoArgs) -> Result<(), Error> {
    migrate::run(&args.db.migration_url().0, Duration::from_millis(args.db.connect_timeout_ms)).await?;
    let store = Store::new(&args.db, Duration::from_secs(1))?;
    let svc = Service::new(store.clone());
    let tenant = Uuid::new_v4();
    let scope = Scope {
        tenant,
        actor: "demo-data".into(),
        request_id: None,
        trace_id: None,
        timeout: Duration::from_secs(60),
        deadline: None,
        rpc: None,
    };
    let now = chrono::Utc::now().timestamp();
    let seed = tenant.as_u128() as u64;
    let mut created = 0;
    while created < args.jobs {
        let n = (args.jobs - created).min(MAX_BATCH);
        let items = (created..created + n)
            .map(|i| {
                let values = demo_job(i, seed, now);
                let set = values.iter().map(|v| !v.is_null()).collect();
                BatchItem { draft: Some((Draft { values, set }, Vec::new())), request_id: String::new() }
            })
            .collect();
        svc.batch_create(&scope, &JOB, items, "").await?;
        created += n;
    }
    store.close();
    println!("tenant_id={tenant}");
    println!("jobs={created}");
    match &args.auth.jwt_secret {
        Some(secret) => {
            let token = TokenKeys::new(secret.expose()).mint(
                tenant,
                &[Role::Reader, Role::Writer, Role::Admin],
                "demo",
                Duration::from_secs(7 * 86_400),
            );
            if let Some(path) = &args.token_file {
                std::fs::write(path, &token)
                    .map_err(|e| Error::Internal(format!("cannot write token file: {e}")))?;
            }
            println!("token={token}");
        }
        None => eprintln!("no JWT secret given: no token printed (use `bi-data token --tenant {tenant}`)"),
    }
    Ok(())
}
