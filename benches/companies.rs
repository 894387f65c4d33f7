//! Companies and outreach benchmark (issue 9). Not a test: it prints
//! figures. Run it through `scripts/bench-companies.sh`, which builds in
//! release mode, starts a server on its own database and passes the flags.
//!
//! Against the running server:
//!   1. SearchCompanies over N companies (one tenant): sequential latency of
//!      misspelled / re-suffixed / re-cased names, p50/p99/max, and the same
//!      trigram query as plain SQL on a direct connection (the baseline);
//!   2. MergeCompanies of 10 sources with 1,000 jobs each: time, rows moved;
//!   3. RecordCampaignEvent at 32 concurrent callers (each walks its own
//!      campaigns SENT -> OPENED -> REPLIED -> INTERESTED): calls/s, and the
//!      same transaction shape as plain SQL at the same concurrency.
//!
//! Rows are written with INSERT ... SELECT as the owner under the tenant's
//! `app.tenant_id` (COPY FROM is refused on tables with row-level security).

use std::{
    env,
    time::{Duration, Instant},
};

use bi_data::{
    auth::{Role, TokenKeys},
    pb::{
        self, company_service_client::CompanyServiceClient, outreach_service_client::OutreachServiceClient,
    },
};
use tokio_postgres::NoTls;
use tonic::{Request, transport::Channel};
use uuid::Uuid;

struct Args {
    addr: String,
    database_url: String,
    secret: String,
    companies: usize,
    queries: usize,
    campaigns_per_caller: usize,
}

fn parse_args() -> Args {
    let mut a = Args {
        addr: "http://127.0.0.1:50062".into(),
        database_url: env::var("BENCH_DATABASE_URL").unwrap_or_default(),
        secret: env::var("JWT_SECRET").unwrap_or_default(),
        companies: 100_000,
        queries: 500,
        campaigns_per_caller: 50,
    };
    let argv: Vec<String> = env::args().skip(1).filter(|s| s != "--bench").collect();
    let mut it = argv.iter();
    while let Some(flag) = it.next() {
        let mut val = || it.next().cloned().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--addr" => a.addr = val(),
            "--database-url" => a.database_url = val(),
            "--companies" => a.companies = val().parse().expect("--companies N"),
            "--queries" => a.queries = val().parse().expect("--queries N"),
            "--campaigns-per-caller" => a.campaigns_per_caller = val().parse().expect("N"),
            other => panic!("unknown flag {other}"),
        }
    }
    assert!(!a.secret.is_empty(), "JWT_SECRET must be set (the server's secret)");
    assert!(!a.database_url.is_empty(), "--database-url (or BENCH_DATABASE_URL) is needed");
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

/// Runs `sql` as the owner within `tenant`.
async fn as_tenant(db: &tokio_postgres::Client, tenant: Uuid, sql: &str) {
    db.batch_execute(&format!("BEGIN; SELECT set_config('app.tenant_id', '{tenant}', true); {sql}; COMMIT"))
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
}

/// Syllables of brand words: 40^3 = 64,000 distinct three-syllable words.
const SYLLABLES: &[&str] = &[
    "ba", "ve", "tri", "qua", "lo", "nex", "zor", "mi", "ran", "cel", "dor", "fi", "gal", "hy", "ko", "lum",
    "mar", "no", "pex", "ros", "sil", "tan", "ul", "vor", "wen", "xa", "yel", "zen", "ar", "bel", "cor",
    "dra", "el", "fon", "gri", "har", "is", "jo", "kel", "ly",
];
/// Common descriptors (each shared by thousands of names, as in real registries).
const DESCRIPTORS: &[&str] = &[
    "Analytics",
    "Robotics",
    "Software",
    "Logistics",
    "Foods",
    "Energy",
    "Health",
    "Media",
    "Finance",
    "Consulting",
    "Security",
    "Retail",
    "Mobility",
    "Materials",
    "Textiles",
    "Partners",
    "Ventures",
    "Digital",
    "Dynamics",
    "Industries",
    "Solutions",
    "Services",
    "Technologies",
    "Holdings",
    "Interactive",
    "Pharma",
    "Motors",
    "Designs",
    "Capital",
    "Labs",
];
const SUFFIXES: &[&str] = &["Inc", "Ltd", "GmbH", "Corp", "LLC", "", "", "AG", "SA", "Co."];

/// Name `i`: a brand word (distinct for the first 64,000; then a second
/// word), a descriptor, a legal suffix: "Quadorfi Logistics GmbH".
fn company_name(i: usize) -> String {
    let n = SYLLABLES.len();
    let word = |k: usize| {
        let w = format!("{}{}{}", SYLLABLES[k % n], SYLLABLES[(k / n) % n], SYLLABLES[(k / (n * n)) % n]);
        let mut c = w.chars();
        c.next().map(|f| f.to_uppercase().collect::<String>() + c.as_str()).unwrap_or_default()
    };
    let brand = if i < n * n * n { word(i) } else { format!("{} {}", word(i), word(i / 7)) };
    let d = DESCRIPTORS[(i * 7) % DESCRIPTORS.len()];
    let s = SUFFIXES[(i * 13) % SUFFIXES.len()];
    if s.is_empty() { format!("{brand} {d}") } else { format!("{brand} {d} {s}") }
}

/// What a caller would type for name `i`: other case, no or another
/// suffix, sometimes a typo.
fn query_for(i: usize, k: usize) -> String {
    let base = company_name(i);
    let words: Vec<&str> = base.split(' ').take(2).collect();
    let mut q = words.join(" ");
    match k % 4 {
        0 => q = q.to_uppercase(),
        1 => q.push_str(", Inc."),
        2 => {
            // A dropped letter in the brand word.
            let mut w: Vec<String> = words.iter().map(|s| s.to_string()).collect();
            if w[0].len() > 4 {
                w[0].remove(3);
            }
            q = w.join(" ");
        }
        _ => q = format!("{} corp", q.to_lowercase()),
    }
    q
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split(' ')
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

#[tokio::main]
async fn main() {
    let a = parse_args();
    let keys = TokenKeys::new(&a.secret);
    let token_for = |t: Uuid| keys.mint(t, &[Role::Reader, Role::Writer], "bench", Duration::from_secs(3600));
    let channel = Channel::from_shared(a.addr.clone()).unwrap().connect().await.expect("server reachable");
    let mut companies = CompanyServiceClient::new(channel.clone()).max_decoding_message_size(64 << 20);
    let db = connect(&a.database_url).await;
    println!("load average at start: {}", load());

    // 1. SearchCompanies.
    let tenant = Uuid::new_v4();
    let token = token_for(tenant);
    let names: Vec<String> = (0..a.companies).map(company_name).collect();
    let t0 = Instant::now();
    for chunk in names.chunks(20_000) {
        let values: Vec<String> = chunk.iter().map(|n| format!("('{}')", n.replace('\'', "''"))).collect();
        as_tenant(
            &db,
            tenant,
            &format!(
                "INSERT INTO companies (tenant_id, id, name) SELECT '{tenant}', gen_random_uuid(), n FROM (VALUES {}) v(n)",
                values.join(",")
            ),
        )
        .await;
    }
    // Merges the GIN pending list, as autovacuum would after a bulk load.
    db.batch_execute("VACUUM ANALYZE companies").await.unwrap();
    println!("loaded {} companies in {:.1}s", a.companies, t0.elapsed().as_secs_f64());
    let mut lat = Vec::with_capacity(a.queries);
    let mut found = 0;
    for k in 0..a.queries {
        let i = (k * 7919) % a.companies;
        let q = query_for(i, k);
        let start = Instant::now();
        let r = companies
            .search_companies(authed(&token, pb::SearchCompaniesRequest { query: q, ..Default::default() }))
            .await
            .expect("SearchCompanies")
            .into_inner();
        lat.push(start.elapsed());
        if r.companies.iter().take(5).any(|c| c.name == names[i]) {
            found += 1;
        }
    }
    lat.sort();
    println!(
        "SearchCompanies over {} companies, {} queries: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; intended company in the top 5: {}/{}",
        a.companies,
        a.queries,
        ms(percentile(&lat, 0.5)),
        ms(percentile(&lat, 0.99)),
        ms(*lat.last().unwrap()),
        found,
        a.queries
    );
    // The same trigram query on a direct connection (no gRPC, no auth, no RLS role switch).
    let stmt = db
        .prepare(
            "SELECT id, name, similarity(name_key, $2) AS score \
             FROM companies WHERE tenant_id = $1 AND delete_time IS NULL AND name_key % $2 \
             ORDER BY score DESC, id DESC LIMIT 21",
        )
        .await
        .unwrap();
    db.batch_execute(&format!(
        "SELECT set_config('app.tenant_id', '{tenant}', false); SET pg_trgm.similarity_threshold = 0.5"
    ))
    .await
    .unwrap();
    let mut base = Vec::with_capacity(a.queries);
    let mut base_hits = 0;
    for k in 0..a.queries {
        let i = (k * 7919) % a.companies;
        let start = Instant::now();
        let key: String =
            db.query_one("SELECT bi_company_key($1)", &[&query_for(i, k)]).await.unwrap().get(0);
        base_hits += db.query(&stmt, &[&tenant, &key]).await.unwrap().len();
        base.push(start.elapsed());
    }
    base.sort();
    assert!(base_hits > 0, "the baseline query finds the companies");
    println!(
        "  direct SQL baseline (same match, owner connection): p50 {:.2} ms, p99 {:.2} ms, {base_hits} hits; ratio of p50 (service / SQL) {:.2}",
        ms(percentile(&base, 0.5)),
        ms(percentile(&base, 0.99)),
        ms(percentile(&lat, 0.5)) / ms(percentile(&base, 0.5))
    );
    println!("load average after search: {}", load());

    // 2. MergeCompanies: 10 sources with 1,000 jobs each.
    let tenant = Uuid::new_v4();
    let token = token_for(tenant);
    let ids: Vec<Uuid> = (0..11).map(|_| Uuid::now_v7()).collect();
    let rows: Vec<String> =
        ids.iter().enumerate().map(|(i, id)| format!("('{id}', 'Merge Co {i}')")).collect();
    as_tenant(
        &db,
        tenant,
        &format!("INSERT INTO companies (tenant_id, id, name) SELECT '{tenant}', id::uuid, n FROM (VALUES {}) v(id, n)", rows.join(",")),
    )
    .await;
    for (i, id) in ids.iter().enumerate().skip(1) {
        as_tenant(
            &db,
            tenant,
            &format!(
                "INSERT INTO jobs (tenant_id, id, title, company_name, company_id, job_url) \
                 SELECT '{tenant}', gen_random_uuid(), 'Job ' || g, 'Merge Co {i}', '{id}', 'https://merge.test/{i}/' || g \
                 FROM generate_series(1, 1000) g"
            ),
        )
        .await;
    }
    db.batch_execute("ANALYZE jobs").await.unwrap();
    let start = Instant::now();
    let req = pb::MergeCompaniesRequest {
        target_id: ids[0].to_string(),
        source_ids: ids[1..].iter().map(Uuid::to_string).collect(),
        request_id: String::new(),
    };
    companies.merge_companies(authed(&token, req)).await.expect("MergeCompanies");
    let took = start.elapsed();
    db.batch_execute(&format!("SELECT set_config('app.tenant_id', '{tenant}', false)")).await.unwrap();
    let moved: i64 = db
        .query_one("SELECT count(*) FROM jobs WHERE tenant_id = $1 AND company_id = $2", &[&tenant, &ids[0]])
        .await
        .unwrap()
        .get(0);
    let events: i64 = db
        .query_one("SELECT count(*) FROM audit_events WHERE tenant_id = $1", &[&tenant])
        .await
        .unwrap()
        .get(0);
    println!(
        "MergeCompanies of 10 sources x 1,000 jobs: {:.0} ms, {moved} jobs now at the target, {events} audit events written",
        ms(took)
    );
    println!("load average after merge: {}", load());

    // 3. RecordCampaignEvent at 32 concurrent callers.
    let callers = 32;
    let per = a.campaigns_per_caller;
    let run_events = |tenant: Uuid| {
        let channel = channel.clone();
        let token = token_for(tenant);
        async move {
            let start = Instant::now();
            let tasks: Vec<_> = (0..callers)
                .map(|c| {
                    let mut client = OutreachServiceClient::new(channel.clone());
                    let token = token.clone();
                    tokio::spawn(async move {
                        let mut ids = Vec::with_capacity(per);
                        let mut lat = Vec::new();
                        for n in 0..per {
                            let req = pb::CreateCampaignRequest {
                                campaign: Some(pb::Campaign {
                                    company_id: COMPANY.to_string(),
                                    message_content: format!("caller {c} campaign {n}"),
                                    ..Default::default()
                                }),
                                request_id: String::new(),
                            };
                            ids.push(
                                client
                                    .create_campaign(authed(&token, req))
                                    .await
                                    .expect("create")
                                    .into_inner()
                                    .id,
                            );
                        }
                        let t = Instant::now();
                        for ev in [
                            pb::CampaignEventType::Sent,
                            pb::CampaignEventType::Opened,
                            pb::CampaignEventType::Replied,
                            pb::CampaignEventType::Interested,
                        ] {
                            for id in &ids {
                                let req = pb::RecordCampaignEventRequest {
                                    id: id.clone(),
                                    event: ev as i32,
                                    ..Default::default()
                                };
                                let s = Instant::now();
                                client.record_campaign_event(authed(&token, req)).await.expect("event");
                                lat.push(s.elapsed());
                            }
                        }
                        (t.elapsed(), lat)
                    })
                })
                .collect();
            let mut all = Vec::new();
            for t in tasks {
                all.extend(t.await.unwrap().1);
            }
            (start.elapsed(), all)
        }
    };
    let tenant = Uuid::new_v4();
    as_tenant(
        &db,
        tenant,
        &format!(
            "INSERT INTO companies (tenant_id, id, name) VALUES ('{tenant}', '{COMPANY}', 'Outreach Target')"
        ),
    )
    .await;
    let t_events = Instant::now();
    let (_, mut lat) = run_events(tenant).await;
    // Creation is inside the wall time; count only the event calls' own time span.
    let wall = t_events.elapsed();
    lat.sort();
    let calls = lat.len();
    let busy: Duration = lat.iter().sum::<Duration>() / callers as u32;
    println!(
        "RecordCampaignEvent, {callers} callers, {calls} calls: {:.0} calls/s (event calls only), p50 {:.2} ms, p99 {:.2} ms (wall incl. {} creates: {:.1}s)",
        calls as f64 / busy.as_secs_f64(),
        ms(percentile(&lat, 0.5)),
        ms(percentile(&lat, 0.99)),
        callers * per,
        wall.as_secs_f64()
    );
    // Baseline: the same transaction as plain SQL, 32 connections.
    let tenant = Uuid::new_v4();
    as_tenant(
        &db,
        tenant,
        &format!("INSERT INTO companies (tenant_id, id, name) VALUES ('{tenant}', '{COMPANY}', 'Baseline')"),
    )
    .await;
    as_tenant(
        &db,
        tenant,
        &format!(
            "INSERT INTO campaigns (tenant_id, id, company_id, message_content) \
             SELECT '{tenant}', gen_random_uuid(), '{COMPANY}', 'baseline ' || g FROM generate_series(1, {}) g",
            callers * per
        ),
    )
    .await;
    db.batch_execute(&format!("SELECT set_config('app.tenant_id', '{tenant}', false)")).await.unwrap();
    let all: Vec<Uuid> = db
        .query("SELECT id FROM campaigns WHERE tenant_id = $1 ORDER BY id", &[&tenant])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let start = Instant::now();
    let tasks: Vec<_> = all
        .chunks(per)
        .map(|ids| {
            let (url, ids) = (a.database_url.clone(), ids.to_vec());
            tokio::spawn(async move {
                let db = connect(&url).await;
                let tx_sql = [
                    "SELECT status FROM campaigns WHERE tenant_id = $1 AND id = $2 FOR UPDATE",
                    "SELECT event, event_time FROM campaign_events WHERE tenant_id = $1 AND campaign_id = $2 ORDER BY seq DESC LIMIT 1",
                ];
                let lock = db.prepare(tx_sql[0]).await.unwrap();
                let last = db.prepare(tx_sql[1]).await.unwrap();
                let upd = db.prepare("UPDATE campaigns SET status = $3, update_time = now(), revision = revision + 1 WHERE tenant_id = $1 AND id = $2 RETURNING *").await.unwrap();
                let ins = db.prepare("INSERT INTO campaign_events (tenant_id, id, campaign_id, seq, event, event_time) SELECT $1, gen_random_uuid(), $2, coalesce(max(seq), 0) + 1, $3, now() FROM campaign_events WHERE tenant_id = $1 AND campaign_id = $2").await.unwrap();
                let audit = db.prepare("INSERT INTO audit_events (tenant_id, id, actor, entity, entity_id, action, after) VALUES ($1, gen_random_uuid(), 'bench', 'campaign', $2, 'UPDATE', '{}'::jsonb)").await.unwrap();
                let t = Instant::now();
                for ev in ["SENT", "OPENED", "REPLIED", "INTERESTED"] {
                    for id in &ids {
                        db.batch_execute(&format!("BEGIN; SELECT set_config('app.tenant_id', '{tenant}', true)")).await.unwrap();
                        db.query(&lock, &[&tenant, id]).await.unwrap();
                        db.query(&last, &[&tenant, id]).await.unwrap();
                        db.query(&upd, &[&tenant, id, &ev]).await.unwrap();
                        db.execute(&ins, &[&tenant, id, &ev]).await.unwrap();
                        db.execute(&audit, &[&tenant, id]).await.unwrap();
                        db.batch_execute("COMMIT").await.unwrap();
                    }
                }
                t.elapsed()
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let base_rate = (all.len() * 4) as f64 / start.elapsed().as_secs_f64();
    let svc_rate = calls as f64 / busy.as_secs_f64();
    println!(
        "  direct SQL baseline (same statements, 32 connections): {base_rate:.0} transitions/s; ratio service / SQL {:.2}",
        svc_rate / base_rate
    );
    println!("load average at end: {}", load());
}

/// The company every outreach campaign of the benchmark belongs to.
const COMPANY: Uuid = Uuid::from_u128(0x0c0a_4a11_0000_0000_0000_0000_0000_0001);
