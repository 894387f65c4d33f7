//! `bi-data demo-data`: a new tenant with realistic jobs, loaded through the
//! same batch-create use case the API calls (so demo rows are validated and
//! audited too).

use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::{StreamExt, TryStreamExt};
use uuid::Uuid;

use crate::{
    auth::{Role, TokenKeys},
    config::DemoArgs,
    domain::{
        company::{COMPANY, COMPANY_SIZE, COMPLEXITY, OPPORTUNITY, OPPORTUNITY_STATUS},
        document::{CONVERSATION, DOCUMENT, DOCUMENT_KIND, MESSAGE},
        job::{EXPERIENCE_LEVEL, JOB, JOB_STATUS, JOB_TYPE},
        outreach::{CAMPAIGN, CAMPAIGN_STATUS, DUE_FOLLOW_UPS},
        record::{Fields, Record},
        schema::Resource,
        value::Value,
    },
    error::Error,
    service::{BatchItem, Draft, Linked, MAX_BATCH, Scope, Service},
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
    demo_job_at(i, rng_seed, now, None)
}

/// A demo job posted by `company` (else one of [`COMPANIES`]); the rest of
/// the job is the same either way.
fn demo_job_at(i: usize, rng_seed: u64, now: i64, company: Option<&str>) -> Vec<Value> {
    let mut r = Lcg(rng_seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let title = [r.pick(SENIORITY), r.pick(TECH), r.pick(ROLE)]
        .iter()
        .filter(|w| !w.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join(" ");
    // Always drawn, so a job is the same whichever company posts it.
    let picked = r.pick(COMPANIES);
    let company = company.unwrap_or(picked);
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
    v.set("job_url", text(format!("https://jobs.example.com/{}/{i}", slug(company))));
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

/// Near-duplicate spellings of one company, worth merging: the first is the
/// best researched (the one to keep), the others are what scrapers and
/// imports sent. Within a group most names share a matching key (so
/// LinkJobsToCompanies calls their jobs ambiguous until they are merged);
/// the typos only fuzzy search finds.
pub const DUPLICATES: &[&[&str]] = &[
    &["Acme Corporation", "ACME Corp.", "acme corp"],
    &["Globex Inc.", "GLOBEX", "Globex, Inc"],
    &["Initech LLC", "Initech", "INITECH L.L.C."],
    &["Umbrella Data GmbH", "Umbrella Data", "Umbrela Data"],
    &["Stark Industries", "Stark Industries Inc", "STARK INDUSTRIES, INC."],
    &["Wayne Logistics Ltd", "Wayne Logistics Limited", "wayne logistics"],
    &["Tyrell Systems", "Tyrell Systems Corp", "Tyrel Systems"],
    &["Hooli", "Hooli Inc.", "HOOLI"],
];
const NAME_HEAD: &[&str] = &[
    "Northwind",
    "Blue Harbor",
    "Vertex",
    "Silverline",
    "Brightpath",
    "Ironclad",
    "Redwood",
    "Quantum",
    "Summit",
    "Evergreen",
    "Cobalt",
    "Pioneer",
    "Atlas",
    "Nimbus",
    "Horizon",
    "Granite",
    "Lumen",
    "Polar",
    "Crescent",
    "Meridian",
    "Aurora",
    "Beacon",
    "Cedar",
    "Falcon",
    "Harborview",
    "Juniper",
    "Keystone",
    "Lighthouse",
    "Maple",
    "Orion",
    "Pinnacle",
    "Riverbend",
    "Sapphire",
    "Trident",
    "Unity",
    "Vanguard",
    "Willow",
    "Zenith",
    "Amber",
    "Bluebird",
];
const NAME_TAIL: &[&str] = &[
    "Analytics",
    "Logistics",
    "Systems",
    "Labs",
    "Robotics",
    "Health",
    "Energy",
    "Foods",
    "Freight",
    "Software",
    "Capital",
    "Insurance",
    "Retail",
    "Manufacturing",
    "Media",
    "Networks",
    "Biotech",
    "Pharma",
    "Dynamics",
    "Solutions",
    "Consulting",
    "Telecom",
    "Security",
    "Payments",
    "Mobility",
    "Materials",
    "Aerospace",
    "Marine",
    "Textiles",
    "Learning",
];
const LEGAL: &[&str] = &["", "", "", "", "Inc", "Ltd", "GmbH", "LLC", "Corp", "AG", "S.A."];
const PAINS: &[&str] = &[
    "manual invoice processing",
    "slow weekly reporting",
    "lead enrichment by hand",
    "spreadsheet forecasting",
    "onboarding backlog",
    "data quality issues",
    "legacy ETL jobs",
    "support ticket triage",
    "copying job postings between boards",
    "compliance evidence by email",
];
const FIRST: &[&str] = &[
    "Ada",
    "Grace",
    "Linus",
    "Margaret",
    "Ken",
    "Barbara",
    "Dennis",
    "Frances",
    "Alan",
    "Radia",
    "Tim",
    "Sophie",
    "Yukihiro",
    "Anita",
    "Guido",
    "Katherine",
];
const LAST: &[&str] = &[
    "Lovelace",
    "Hopper",
    "Torvalds",
    "Hamilton",
    "Thompson",
    "Liskov",
    "Ritchie",
    "Allen",
    "Kay",
    "Perlman",
    "Berners",
    "Wilson",
    "Matsumoto",
    "Borg",
    "Rossum",
    "Johnson",
];
const CONTACT_TITLES: &[&str] =
    &["CTO", "VP Engineering", "Head of Data", "COO", "Director of Operations", "CEO", "Head of Sales"];
const FUNDING: &[&str] = &["seed", "series_a", "series_b", "series_c", "public", "bootstrapped"];
/// Problems seen in companies and the automation that would solve them.
const OPPORTUNITIES: &[(&str, &str)] = &[
    ("Invoices are keyed in by hand from PDFs", "Document extraction pipeline feeding the ERP"),
    (
        "Sales leads are enriched manually in spreadsheets",
        "Automated enrichment from public sources with a review queue",
    ),
    ("Weekly reports take two analysts a full day", "Scheduled dashboards on the warehouse"),
    ("Support tickets are triaged by reading each one", "Classifier routing tickets to the right queue"),
    ("Job postings are copied between boards by hand", "Scraper and sync job for the posting boards"),
    ("Inventory forecasts live in Excel", "Demand forecasting service with alerts"),
    ("Customer onboarding needs five manual approvals", "Workflow engine with automatic checks"),
    ("Compliance evidence is collected by email", "Evidence collection bot with an audit trail"),
];
/// Target pipeline status of a demo opportunity, by weight: most stay early
/// in the pipeline, few are accepted.
const OPPORTUNITY_MIX: &[(&str, u64)] = &[
    ("IDENTIFIED", 35),
    ("RESEARCHED", 25),
    ("POC_CREATED", 12),
    ("PITCHED", 12),
    ("ACCEPTED", 5),
    ("REJECTED", 11),
];
/// Final status of a cold campaign (one not tied to an opportunity).
const CAMPAIGN_MIX: &[(&str, u64)] =
    &[("DRAFT", 20), ("SENT", 35), ("OPENED", 25), ("REPLIED", 5), ("INTERESTED", 3), ("REJECTED", 12)];
const CONTACT_MIX: &[(&str, u64)] = &[("EMAIL", 60), ("LINKEDIN", 30), ("PHONE", 10)];
/// Status writes running at once (below the pool's 8 connections).
const CONCURRENCY: usize = 6;

impl Lcg {
    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() % 1_000_000) as f64 / 1_000_000.0
    }
    /// Uniform in lo..hi (hi > lo).
    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next() % (hi - lo) as u64) as i64
    }
    fn weighted(&mut self, xs: &[(&'static str, u64)]) -> &'static str {
        let total: u64 = xs.iter().map(|x| x.1).sum();
        let mut n = self.next() % total;
        for &(x, w) in xs {
            if n < w {
                return x;
            }
            n -= w;
        }
        xs[xs.len() - 1].0
    }
}

/// `Acme Corp.` -> `acme-corp`.
fn slug(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_end_matches('-').to_owned()
}

/// Companies for `jobs` demo jobs: a few hundred by default (one per five
/// jobs, 30 to 1,200).
pub fn company_count(jobs: usize) -> usize {
    (jobs / 5).clamp(30, NAME_HEAD.len() * NAME_TAIL.len())
}

/// One demo company: its name and, for a near-duplicate, its group and
/// whether it is the group's best-researched spelling.
struct DemoCompany {
    name: String,
    /// Web domain (the same for every spelling of a company).
    domain: String,
    group: Option<usize>,
    canonical: bool,
}

/// `n` company names: the near-duplicate groups first (one group per 25
/// companies, 3 to 8 groups), then generated names with distinct matching
/// keys.
fn demo_companies(n: usize, r: &mut Lcg) -> Vec<DemoCompany> {
    let groups = (n / 25).clamp(3, DUPLICATES.len());
    let mut out = Vec::with_capacity(n);
    for (g, names) in DUPLICATES.iter().take(groups).enumerate() {
        for (k, name) in names.iter().enumerate() {
            let domain = format!("{}.example", slug(names[0]));
            out.push(DemoCompany { name: (*name).to_owned(), domain, group: Some(g), canonical: k == 0 });
        }
    }
    let combos = NAME_HEAD.len() * NAME_TAIL.len();
    let mut i = 0;
    while out.len() < n {
        // 7919 is prime to `combos`: a permutation, each (head, tail) once.
        let c = (i * 7919) % combos;
        i += 1;
        let (head, tail) = (NAME_HEAD[c % NAME_HEAD.len()], NAME_TAIL[c / NAME_HEAD.len()]);
        let legal = r.pick(LEGAL);
        let name = if legal.is_empty() { format!("{head} {tail}") } else { format!("{head} {tail} {legal}") };
        let domain = format!("{}.example", slug(&format!("{head} {tail}")));
        out.push(DemoCompany { name, domain, group: None, canonical: false });
    }
    out
}

fn demo_company(c: &DemoCompany, r: &mut Lcg, now: i64) -> Vec<Value> {
    let text = |s: String| Value::Text(s);
    let domain = &c.domain;
    let researched = c.group.is_none() || c.canonical;
    let mut values = vec![Value::Null; COMPANY.fields.len()];
    let mut v = Fields::new(&COMPANY, &mut values);
    v.set("name", text(c.name.clone()));
    if researched || r.next().is_multiple_of(2) {
        v.set("website", text(format!("https://www.{domain}")));
    }
    let industry = r.pick(INDUSTRIES);
    v.set("industry", text(industry.to_owned()));
    v.set("size", text(COMPANY_SIZE.values[(r.next() % 4) as usize].to_owned()));
    v.set("location", text(r.pick(LOCATIONS).to_owned()));
    let words: Vec<&str> = (0..8).map(|_| r.pick(VOCAB)).collect();
    v.set(
        "description",
        text(format!("{} serves {} customers. Notes: {}.", c.name, industry.to_lowercase(), words.join(" "))),
    );
    let set = |r: &mut Lcg, xs: &[&str], n: usize| -> Vec<String> {
        (0..n).map(|_| r.pick(xs).to_owned()).collect::<std::collections::BTreeSet<_>>().into_iter().collect()
    };
    let n_tech = 2 + (r.next() % 4) as usize;
    v.set("technology_stack", Value::TextArray(set(r, KEYWORDS, n_tech)));
    let n_pain = 1 + (r.next() % 3) as usize;
    v.set("pain_points", Value::TextArray(set(r, PAINS, n_pain)));
    let people: Vec<serde_json::Value> = (0..1 + r.next() % 3)
        .map(|_| {
            let (first, last) = (r.pick(FIRST), r.pick(LAST));
            serde_json::json!({
                "name": format!("{first} {last}"),
                "title": r.pick(CONTACT_TITLES),
                "email": format!("{}.{}@{domain}", first.to_lowercase(), last.to_lowercase()),
                "linkedin_url": format!("https://www.linkedin.com/in/{}-{}", slug(first), slug(last)),
            })
        })
        .collect();
    v.set("decision_makers", Value::Json(serde_json::Value::Array(people)));
    // Each spelling knows something else: a merge combines them.
    let mut enrichment = serde_json::Map::new();
    if researched || r.next().is_multiple_of(2) {
        enrichment.insert("employees".into(), serde_json::json!(r.range(5, 20_000) as f64));
    }
    if r.next().is_multiple_of(2) {
        enrichment.insert("funding_stage".into(), serde_json::json!(r.pick(FUNDING)));
    }
    if researched {
        enrichment.insert("founded".into(), serde_json::json!(r.range(1950, 2024) as f64));
        enrichment.insert("revenue_musd".into(), serde_json::json!(r.range(1, 5_000) as f64 / 10.0));
    }
    enrichment.insert("source".into(), serde_json::json!(if researched { "research" } else { "scraper" }));
    v.set("enrichment", Value::Json(serde_json::Value::Object(enrichment)));
    let confidence = if researched { 0.6 + r.unit() * 0.35 } else { 0.2 + r.unit() * 0.3 };
    v.set("confidence_score", Value::Float((confidence * 100.0).round() / 100.0));
    let research = now - r.range(0, 90 * 86_400);
    v.set("research_time", DateTime::<Utc>::from_timestamp(research, 0).map_or(Value::Null, Value::Time));
    values
}

/// The moves from IDENTIFIED to `target` (REJECTED after a random number of
/// steps of the pipeline).
fn opportunity_path(target: &'static str, r: &mut Lcg) -> Vec<&'static str> {
    const PIPELINE: [&str; 4] = ["RESEARCHED", "POC_CREATED", "PITCHED", "ACCEPTED"];
    match target {
        "IDENTIFIED" => Vec::new(),
        "REJECTED" => {
            let mut p = PIPELINE[..(r.next() % 4) as usize].to_vec();
            p.push("REJECTED");
            p
        }
        t => {
            let n = PIPELINE.iter().position(|s| *s == t).expect("a pipeline status") + 1;
            PIPELINE[..n].to_vec()
        }
    }
}

/// The events that bring a campaign from DRAFT to `target`.
fn campaign_path(target: &'static str, r: &mut Lcg) -> Vec<&'static str> {
    const FUNNEL: [&str; 4] = ["SENT", "OPENED", "REPLIED", "INTERESTED"];
    match target {
        "DRAFT" => Vec::new(),
        "REJECTED" => {
            let mut p = FUNNEL[..1 + (r.next() % 3) as usize].to_vec();
            p.push("REJECTED");
            p
        }
        t => {
            let n = FUNNEL.iter().position(|s| *s == t).expect("a campaign status") + 1;
            FUNNEL[..n].to_vec()
        }
    }
}

/// A campaign to create, and the events to record on it.
struct CampaignPlan {
    values: Vec<Value>,
    events: Vec<(&'static str, DateTime<Utc>)>,
}

fn plan_campaign(
    company: &Record,
    opportunity: Option<Uuid>,
    target: &'static str,
    r: &mut Lcg,
    now: i64,
) -> CampaignPlan {
    let text = |s: String| Value::Text(s);
    let time = |t: i64| DateTime::<Utc>::from_timestamp(t, 0).expect("a demo time");
    let mut values = vec![Value::Null; CAMPAIGN.fields.len()];
    let mut v = Fields::new(&CAMPAIGN, &mut values);
    v.set("company_id", Value::Uuid(company.id()));
    if let Some(o) = opportunity {
        v.set("opportunity_id", Value::Uuid(o));
    }
    v.set("contact_method", text(r.weighted(CONTACT_MIX).to_owned()));
    let name = match company.get(&COMPANY, "name") {
        Value::Text(n) => n.clone(),
        _ => String::new(),
    };
    let person = match company.get(&COMPANY, "decision_makers") {
        Value::Json(serde_json::Value::Array(p)) => {
            p.first().and_then(|p| p["name"].as_str()).map(str::to_owned)
        }
        _ => None,
    };
    if let Some(p) = &person {
        v.set("contact_person", text(p.clone()));
    }
    let (problem, solution) = OPPORTUNITIES[(r.next() as usize) % OPPORTUNITIES.len()];
    v.set(
        "message_content",
        text(format!(
            "Hi {}, we noticed at {name}: {problem}. {solution} solved it for teams like yours. Worth a 20-minute call?",
            person.as_deref().and_then(|p| p.split(' ').next()).unwrap_or("there"),
        )),
    );
    // Sent between 2 and 45 days ago; each later event within 4 days, never
    // in the future.
    let path = campaign_path(target, r);
    let mut t = now - r.range(2 * 86_400, 45 * 86_400);
    let mut events = Vec::with_capacity(path.len());
    for (k, e) in path.into_iter().enumerate() {
        if k > 0 {
            t = (t + r.range(3600, 4 * 86_400)).min(now - 60);
        }
        events.push((e, time(t)));
    }
    if matches!(target, "SENT" | "OPENED" | "REPLIED") {
        // A week after the last touch: due for many, ahead for some.
        v.set("follow_up_time", Value::Time(time(t + r.range(3 * 86_400, 10 * 86_400))));
    } else if target == "DRAFT" {
        v.set("notes", text("Draft: waiting for review before sending.".into()));
    }
    CampaignPlan { values, events }
}

fn item(values: Vec<Value>) -> BatchItem {
    let set = values.iter().map(|v| !v.is_null()).collect();
    BatchItem { draft: Some((Draft { values, set }, Vec::new())), request_id: String::new() }
}

/// Creates every record in batches of at most [`MAX_BATCH`], in order.
async fn create_all(
    svc: &Service,
    scope: &Scope,
    res: &'static Resource,
    rows: Vec<Vec<Value>>,
) -> Result<Vec<Record>, Error> {
    let mut out = Vec::with_capacity(rows.len());
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        let items: Vec<BatchItem> = rows.by_ref().take(MAX_BATCH).map(item).collect();
        out.extend(svc.batch_create(scope, res, items, "").await?);
    }
    Ok(out)
}

/// Business-analysis documents: each kind, each edited into a few
/// versions (through `update`, so versions are written as the API writes
/// them), and a conversation that produced the SRS.
const DEMO_DOCUMENTS: &[(&str, &str, &str, &[&str])] = &[
    (
        "SRS",
        "Customer portal SRS",
        "text/markdown",
        &[
            "# Customer portal\n\n## Scope\nCustomers see their invoices online.",
            "# Customer portal\n\n## Scope\nCustomers see and pay their invoices online.\n\n## Requirements\n- FR-1 Login with single sign-on.",
            "# Customer portal\n\n## Scope\nCustomers see and pay their invoices online.\n\n## Requirements\n- FR-1 Login with single sign-on.\n- FR-2 Download invoices as PDF.\n- NFR-1 Pages load within 2 s.",
        ],
    ),
    (
        "SRS",
        "Warehouse scanning SRS",
        "text/markdown",
        &[
            "# Warehouse scanning\nPickers scan every parcel.",
            "# Warehouse scanning\nPickers scan every parcel; scans sync when the network returns.",
        ],
    ),
    (
        "WIREFRAME",
        "Invoice list wireframe",
        "text/html",
        &[
            "<main><h1>Invoices</h1><table></table></main>",
            "<main><h1>Invoices</h1><input placeholder=\"Search invoices\"><table></table></main>",
        ],
    ),
    (
        "DIAGRAM",
        "Payment sequence diagram",
        "text/vnd.mermaid",
        &[
            "sequenceDiagram\n  Customer->>Portal: Pay invoice\n  Portal->>PSP: Charge",
            "sequenceDiagram\n  Customer->>Portal: Pay invoice\n  Portal->>PSP: Charge\n  PSP-->>Portal: Receipt",
        ],
    ),
    (
        "NOTE",
        "Stakeholder interview notes",
        "text/plain",
        &[
            "Finance wants invoice payment online; support asks for fewer calls about invoices.",
            "Finance wants invoice payment online; support asks for fewer calls about invoices. Legal: keep invoices 10 years.",
        ],
    ),
];

const DEMO_CONVERSATION: &[(&str, &str)] = &[
    ("SYSTEM", "You are a business analyst assistant. Write requirements as numbered, testable statements."),
    ("USER", "Draft the requirements for a customer portal where customers pay invoices."),
    ("ASSISTANT", "FR-1 Customers log in with single sign-on. FR-2 Customers see their open invoices."),
    ("USER", "Add PDF downloads and a performance requirement."),
    ("ASSISTANT", "FR-3 Customers download invoices as PDF. NFR-1 Every page loads within 2 seconds."),
    ("USER", "Thanks, save it as the portal SRS."),
];

struct DemoDocuments {
    documents: Vec<(&'static str, usize)>,
    document_versions: usize,
    conversations: usize,
    messages: usize,
}

async fn demo_documents(svc: &Service, scope: &Scope) -> Result<DemoDocuments, Error> {
    let mut versions = 0;
    for (kind, title, content_type, contents) in DEMO_DOCUMENTS {
        let mut values = vec![Value::Null; DOCUMENT.fields.len()];
        let mut v = Fields::new(&DOCUMENT, &mut values);
        v.set("title", Value::Text((*title).to_owned()));
        v.set("kind", Value::Text((*kind).to_owned()));
        v.set("content", Value::Text(contents[0].to_owned()));
        v.set("content_type", Value::Text((*content_type).to_owned()));
        v.set("filename", Value::Text(format!("{}.txt", title.to_lowercase().replace(' ', "-"))));
        v.set(
            "metadata",
            Value::Json(serde_json::json!({
                "project": if title.starts_with("Warehouse") { "warehouse" } else { "portal" }
            })),
        );
        let set = values.iter().map(|v| !v.is_null()).collect();
        let doc = svc.create(scope, &DOCUMENT, Some((Draft { values, set }, Vec::new())), "").await?;
        let content = DOCUMENT.index("content");
        for text in &contents[1..] {
            svc.mutate(scope, &DOCUMENT, doc.id(), "", "", "Update", |cur| {
                let mut next = cur.values.clone();
                next[content] = Value::Text((*text).to_owned());
                Ok(next)
            })
            .await?;
        }
        versions += contents.len();
    }
    let mut values = vec![Value::Null; CONVERSATION.fields.len()];
    Fields::new(&CONVERSATION, &mut values).set("title", Value::Text("Customer portal requirements".into()));
    let set = values.iter().map(|v| !v.is_null()).collect();
    let conv = svc.create(scope, &CONVERSATION, Some((Draft { values, set }, Vec::new())), "").await?;
    let messages = DEMO_CONVERSATION
        .iter()
        .map(|(role, text)| {
            let mut values = vec![Value::Null; MESSAGE.fields.len()];
            let mut v = Fields::new(&MESSAGE, &mut values);
            v.set("role", Value::Text((*role).to_owned()));
            v.set("content", Value::Text((*text).to_owned()));
            v.set("token_count", Value::Int(text.split_whitespace().count() as i64 * 4 / 3));
            let set = values.iter().map(|v| !v.is_null()).collect();
            (Draft { values, set }, Vec::new())
        })
        .collect();
    let (_, appended) = svc.append(scope, &CONVERSATION, &conv.id().to_string(), messages, "").await?;
    let documents = DOCUMENT_KIND
        .values
        .iter()
        .map(|k| (*k, DEMO_DOCUMENTS.iter().filter(|d| d.0 == *k).count()))
        .collect();
    Ok(DemoDocuments { documents, document_versions: versions, conversations: 1, messages: appended.len() })
}

/// What [`load`] created.
#[derive(Debug, Clone)]
pub struct Summary {
    pub jobs: usize,
    pub companies: usize,
    /// Companies in near-duplicate groups, and the number of groups.
    pub near_duplicates: usize,
    pub duplicate_groups: usize,
    pub jobs_linked_by_name: usize,
    pub jobs_linked_at_creation: usize,
    /// Jobs left unlinked: their name matches several companies.
    pub jobs_ambiguous: usize,
    /// Count per status, in the enum's order.
    pub opportunities: Vec<(&'static str, usize)>,
    pub campaigns: Vec<(&'static str, usize)>,
    pub campaign_events: usize,
    /// Open campaigns whose follow-up time had passed when loading ended.
    pub due_follow_ups: usize,
    /// Documents per kind, in the enum's order; versions of all of them.
    pub documents: Vec<(&'static str, usize)>,
    pub document_versions: usize,
    pub conversations: usize,
    pub messages: usize,
}

pub async fn run(args: DemoArgs) -> Result<(), Error> {
    let started = std::time::Instant::now();
    let url = args.db.direct_migration_url().map_err(Error::Startup)?;
    migrate::run(&url.0, Duration::from_millis(args.db.connect_timeout_ms)).await?;
    let store = Store::new(&args.db, Duration::from_secs(1))?;
    let svc = Service::new(store.clone());
    let tenant = Uuid::new_v4();
    let scope = Scope {
        tenant,
        actor: "demo-data".into(),
        admin: true,
        request_id: None,
        trace_id: None,
        timeout: Duration::from_secs(60),
        deadline: None,
        rpc: None,
        lsn: None,
    };
    let s = load(&svc, &scope, args.jobs).await;
    store.close();
    let s = s?;
    let tally =
        |xs: &[(&str, usize)]| xs.iter().map(|(k, n)| format!("{k}={n}")).collect::<Vec<_>>().join(" ");
    let total = |xs: &[(&str, usize)]| xs.iter().map(|x| x.1).sum::<usize>();
    println!("tenant_id={tenant}");
    println!("jobs={}", s.jobs);
    println!(
        "companies={} near_duplicates={} (in {} groups, e.g. {:?})",
        s.companies, s.near_duplicates, s.duplicate_groups, DUPLICATES[0]
    );
    println!(
        "jobs_linked={} (by name {}, at creation {}) jobs_unlinked={} (ambiguous: their company name matches several companies; merge them, then LinkJobsToCompanies)",
        s.jobs_linked_by_name + s.jobs_linked_at_creation,
        s.jobs_linked_by_name,
        s.jobs_linked_at_creation,
        s.jobs_ambiguous
    );
    println!("opportunities={} {}", total(&s.opportunities), tally(&s.opportunities));
    println!("campaigns={} {}", total(&s.campaigns), tally(&s.campaigns));
    println!("campaign_events={} due_follow_ups={}", s.campaign_events, s.due_follow_ups);
    println!(
        "documents={} {} document_versions={} conversations={} messages={}",
        total(&s.documents),
        tally(&s.documents),
        s.document_versions,
        s.conversations,
        s.messages
    );
    println!("elapsed_ms={}", started.elapsed().as_millis());
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

/// Loads the demo data set for `jobs` jobs into `scope`'s tenant (which
/// should be empty) through the use cases the API calls: jobs, companies
/// (near-duplicates included), jobs linked to them, opportunities walked
/// along their pipeline, campaigns moved by their events. Every status of
/// both machines occurs at least once.
/// The random seed of all demo content.
const DEMO_SEED: u64 = 0x0B1D_A7A0_2026_1203;

/// Jobs between two progress lines of a large load.
const PROGRESS_EVERY: usize = 10_000;

pub async fn load(svc: &Service, scope: &Scope, jobs: usize) -> Result<Summary, Error> {
    let started = std::time::Instant::now();
    let now = chrono::Utc::now().timestamp();
    // One seed for every demo tenant: the same content each time (only ids
    // and times differ), so the README's example outputs are reproducible
    // (tests/it/readme.rs runs them).
    let seed = DEMO_SEED;
    let mut r = Lcg(seed ^ 0xC0FF_EE00_D15C_0001);

    // Companies, near-duplicates included.
    let plan = demo_companies(company_count(jobs), &mut r);
    let rows = plan.iter().map(|c| demo_company(c, &mut r, now)).collect();
    let companies = create_all(svc, scope, &COMPANY, rows).await?;
    let duplicates = plan.iter().filter(|c| c.group.is_some()).count();
    let groups = plan.iter().filter(|c| c.canonical).count();

    // Jobs, posted by those companies under the names the companies have:
    // 15 % by a near-duplicate spelling (half of those already linked to
    // that spelling's record, as a scraper that researched it would: a merge
    // moves them), the rest skewed towards the first companies (a few hire
    // a lot) and linked by name below.
    let unique = duplicates..plan.len();
    let job = |i: usize| -> Vec<Value> {
        let mut r = Lcg(seed ^ 0x10B5 ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let dup = duplicates > 0 && (r.next() % 100 < 15 || unique.is_empty());
        let k = if dup {
            (r.next() as usize) % duplicates
        } else {
            let u = r.unit();
            unique.start + ((u * u * unique.len() as f64) as usize).min(unique.len() - 1)
        };
        let mut values = demo_job_at(i, seed, now, Some(&plan[k].name));
        if dup && r.next().is_multiple_of(2) {
            values[JOB.index("company_id")] = Value::Uuid(companies[k].id());
        }
        values
    };
    let (mut created, mut direct) = (0, 0);
    let company_i = JOB.index("company_id");
    while created < jobs {
        let n = (jobs - created).min(MAX_BATCH);
        let rows: Vec<Vec<Value>> = (created..created + n).map(job).collect();
        direct += rows.iter().filter(|v| !v[company_i].is_null()).count();
        let items = rows.into_iter().map(item).collect();
        svc.batch_create(scope, &JOB, items, "").await?;
        created += n;
        // Progress for large loads, on stderr (stdout is the summary scripts read).
        if jobs >= PROGRESS_EVERY && (created % PROGRESS_EVERY == 0 || created == jobs) {
            eprintln!("demo-data: {created}/{jobs} jobs ({:.0} s)", started.elapsed().as_secs_f64());
        }
    }
    let mut linked = Linked { linked: 0, ambiguous: 0, remaining: 0 };
    loop {
        let l = svc.link_jobs_to_companies(scope, 0).await?;
        linked.linked += l.linked;
        linked.ambiguous = l.ambiguous;
        linked.remaining = l.remaining;
        if l.remaining == 0 || l.linked == 0 {
            break;
        }
    }

    // Opportunities: created IDENTIFIED, then moved along the pipeline
    // through the update use case (so every move is checked and audited).
    let mut opp_rows = Vec::new();
    let mut opp_paths = Vec::new();
    for (c, rec) in plan.iter().zip(&companies) {
        let mut n = [0, 0, 0, 1, 1, 1, 2, 3][(r.next() % 8) as usize];
        if c.group.is_some() && !c.canonical {
            n = n.max(1); // something for a merge to move
        }
        for _ in 0..n {
            let (problem, solution) = OPPORTUNITIES[(r.next() as usize) % OPPORTUNITIES.len()];
            let mut values = vec![Value::Null; OPPORTUNITY.fields.len()];
            let mut v = Fields::new(&OPPORTUNITY, &mut values);
            v.set("company_id", Value::Uuid(rec.id()));
            v.set("problem_description", Value::Text(problem.to_owned()));
            v.set("solution_approach", Value::Text(solution.to_owned()));
            v.set("estimated_value", Value::Int(r.range(5, 250) * 1000));
            v.set(
                "implementation_complexity",
                Value::Text(COMPLEXITY.values[(r.next() % 3) as usize].to_owned()),
            );
            v.set("confidence_score", Value::Float((30.0 + r.unit() * 65.0).round() / 100.0));
            opp_rows.push(values);
            // The first ones cover every status, the rest follow the mix.
            let target = match OPPORTUNITY_MIX.get(opp_paths.len()) {
                Some(&(status, _)) => status,
                None => r.weighted(OPPORTUNITY_MIX),
            };
            opp_paths.push(opportunity_path(target, &mut r));
        }
    }
    let opportunities = create_all(svc, scope, &OPPORTUNITY, opp_rows).await?;
    let status_i = OPPORTUNITY.index("status");
    let poc_i = OPPORTUNITY.index("proof_of_concept_created");
    let walks = opportunities.iter().zip(&opp_paths).map(|(o, path)| async move {
        for &to in path {
            svc.mutate(scope, &OPPORTUNITY, o.id(), "", "", "Update", |cur| {
                let mut next = cur.values.clone();
                next[status_i] = Value::Text(to.to_owned());
                if to == "POC_CREATED" {
                    next[poc_i] = Value::Bool(true);
                }
                Ok(next)
            })
            .await?;
        }
        Ok::<_, Error>(())
    });
    futures_util::stream::iter(walks).buffer_unordered(CONCURRENCY).try_collect::<Vec<_>>().await?;
    let opp_status: Vec<&str> = opp_paths.iter().map(|p| p.last().copied().unwrap_or("IDENTIFIED")).collect();

    // Campaigns: one per opportunity that got past research (in step with
    // it), plus cold outreach to a quarter of the companies and to every
    // near-duplicate; statuses reached through RecordCampaignEvent.
    let company_of: std::collections::HashMap<Uuid, &Record> =
        companies.iter().map(|c| (c.id(), c)).collect();
    let mut campaigns = Vec::new();
    for (o, path) in opportunities.iter().zip(&opp_paths) {
        let status = path.last().copied().unwrap_or("IDENTIFIED");
        let pitched = path.contains(&"PITCHED");
        let target = match status {
            "POC_CREATED" if r.next().is_multiple_of(2) => "DRAFT",
            "PITCHED" => r.weighted(&[("SENT", 40), ("OPENED", 35), ("REPLIED", 25)]),
            "ACCEPTED" => "INTERESTED",
            "REJECTED" if pitched => "REJECTED",
            _ => continue,
        };
        let Value::Uuid(company) = o.get(&OPPORTUNITY, "company_id") else { continue };
        campaigns.push(plan_campaign(company_of[company], Some(o.id()), target, &mut r, now));
    }
    for (k, (c, rec)) in plan.iter().zip(&companies).enumerate() {
        if c.group.is_some() || r.next().is_multiple_of(4) {
            // The near-duplicates come first: they cover every status.
            let target = match CAMPAIGN_MIX.get(k) {
                Some(&(status, _)) => status,
                None => r.weighted(CAMPAIGN_MIX),
            };
            campaigns.push(plan_campaign(rec, None, target, &mut r, now));
        }
    }
    let (rows, events): (Vec<_>, Vec<_>) = campaigns.into_iter().map(|p| (p.values, p.events)).unzip();
    let created_campaigns = create_all(svc, scope, &CAMPAIGN, rows).await?;
    let recording = created_campaigns.iter().zip(&events).map(|(c, events)| async move {
        let mut rec = c.clone();
        for &(event, at) in events {
            rec = svc.record_campaign_event(scope, &c.id().to_string(), event, Some(at), "").await?;
        }
        Ok::<_, Error>(rec)
    });
    let finished: Vec<Record> =
        futures_util::stream::iter(recording).buffered(CONCURRENCY).try_collect().await?;
    let camp_status: Vec<&str> = finished
        .iter()
        .map(|c| match c.get(&CAMPAIGN, "status") {
            Value::Text(s) => CAMPAIGN_STATUS.parse(s).unwrap_or("?"),
            _ => "?",
        })
        .collect();
    let due = finished
        .iter()
        .filter(|c| {
            matches!(c.get(&CAMPAIGN, "status"), Value::Text(s) if DUE_FOLLOW_UPS.any_of.contains(&s.as_str()))
                && matches!(c.get(&CAMPAIGN, "follow_up_time"), Value::Time(t) if t.timestamp() <= now)
        })
        .count();
    let n_events: usize = events.iter().map(Vec::len).sum();
    let count = |values: &[&'static str], seen: &[&str]| -> Vec<(&'static str, usize)> {
        values.iter().map(|v| (*v, seen.iter().filter(|s| *s == v).count())).collect()
    };
    let docs = demo_documents(svc, scope).await?;
    Ok(Summary {
        documents: docs.documents,
        document_versions: docs.document_versions,
        conversations: docs.conversations,
        messages: docs.messages,
        jobs: created,
        companies: companies.len(),
        near_duplicates: duplicates,
        duplicate_groups: groups,
        jobs_linked_by_name: linked.linked as usize,
        jobs_linked_at_creation: direct,
        jobs_ambiguous: linked.ambiguous as usize,
        opportunities: count(OPPORTUNITY_STATUS.values, &opp_status),
        campaigns: count(CAMPAIGN_STATUS.values, &camp_status),
        campaign_events: n_events,
        due_follow_ups: due,
    })
}
