//! Monthly partitions of audit_events and campaign_events (migration V9,
//! store::partitions, docs/partitions.md): existing rows migrated in place,
//! partitions made ahead once under concurrency, retention that drops old
//! partitions and audits the drop, time ranges that prune, and tenant
//! isolation through the partitioned parent. Each test that changes the
//! partitions runs on a private cluster (the shared test database keeps
//! the partitions every other test's server makes).

use std::{collections::BTreeSet, time::Duration};

use bi_data::{
    pb,
    store::{migrate, partitions},
};
use chrono::{DateTime, Datelike, Months, TimeZone, Utc};
use tokio_postgres::NoTls;
use uuid::Uuid;

use crate::{common::*, faults::PrivatePg};

mod embedded {
    refinery::embed_migrations!("migrations");
}

const CONNECT: Duration = Duration::from_secs(10);

/// The first instant of the UTC month `offset` months from now.
fn month_start(offset: i32) -> DateTime<Utc> {
    let now = Utc::now();
    let first = Utc.with_ymd_and_hms(now.year(), now.month(), 1, 0, 0, 0).unwrap();
    if offset >= 0 {
        first.checked_add_months(Months::new(offset as u32)).unwrap()
    } else {
        first.checked_sub_months(Months::new(offset.unsigned_abs())).unwrap()
    }
}

fn partition_name(table: &str, month: DateTime<Utc>) -> String {
    format!("{table}_p{}", month.format("%Y_%m"))
}

/// The partitions of `table` (names, sorted), default included.
async fn partitions_of(db: &tokio_postgres::Client, table: &str) -> Vec<String> {
    db.query(
        "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
         WHERE i.inhparent = $1::text::regclass ORDER BY 1",
        &[&table],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

/// Every row of `table` as text, in key order (a superuser sees all tenants).
async fn rows_of(db: &tokio_postgres::Client, table: &str) -> Vec<String> {
    db.query(&format!("SELECT t::text FROM {table} AS t ORDER BY tenant_id, id"), &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// Rows of `table` not in the partition named after their month.
async fn misplaced(db: &tokio_postgres::Client, table: &str) -> i64 {
    db.query_one(
        &format!(
            "SELECT count(*) FROM {table} WHERE tableoid::regclass::text <> \
             '{table}_p' || to_char(event_time AT TIME ZONE 'UTC', 'YYYY_MM')"
        ),
        &[],
    )
    .await
    .unwrap()
    .get(0)
}

async fn migrate_to_latest(pg: &PrivatePg) {
    migrate::run(&pg.url(), CONNECT).await.expect("migrations apply");
}

fn policy(months_ahead: u32) -> partitions::Policy {
    partitions::Policy { months_ahead, ..Default::default() }
}

#[tokio::test]
async fn partitions_migration_moves_existing_rows_in_place() {
    let pg = PrivatePg::start().await;
    // The schema as it was before partitioning (V8), through refinery as the
    // server applies it, then rows spanning seventeen months.
    let (mut owner, conn) = tokio_postgres::connect(&pg.url(), NoTls).await.unwrap();
    tokio::spawn(conn);
    embedded::migrations::runner()
        .set_target(refinery::Target::Version(8))
        .run_async(&mut owner)
        .await
        .expect("V1..V8 apply");
    let db = pg.superuser().await;
    assert_eq!(
        db.query_one("SELECT relkind::text FROM pg_class WHERE relname = 'audit_events'", &[])
            .await
            .unwrap()
            .get::<_, String>(0),
        "r",
        "V8: a plain table"
    );
    let (a, b) = (Tenant::new(), Tenant::new());
    let k = Uuid::new_v4();
    db.batch_execute(&format!(
        "INSERT INTO audit_events (tenant_id, id, event_time, actor, entity, entity_id, action, before, after, request_id)
         SELECT CASE WHEN g % 3 = 0 THEN '{b}'::uuid ELSE '{a}'::uuid END, gen_random_uuid(),
                now() - make_interval(days => g * 17, secs => g), 'migrator', 'job', gen_random_uuid(),
                CASE WHEN g % 2 = 0 THEN 'CREATE' ELSE 'UPDATE' END,
                CASE WHEN g % 2 = 1 THEN jsonb_build_object('n', g) END, jsonb_build_object('n', g + 1),
                CASE WHEN g % 4 = 0 THEN 'req-' || g END
           FROM generate_series(0, 29) AS g;
         INSERT INTO companies (tenant_id, id, name) VALUES ('{a}', '{c}', 'Partitioned Co');
         INSERT INTO campaigns (tenant_id, id, company_id, status) VALUES ('{a}', '{k}', '{c}', 'OPENED');
         INSERT INTO campaign_events (tenant_id, id, campaign_id, seq, event, event_time, create_time)
         VALUES ('{a}', gen_random_uuid(), '{k}', 1, 'SENT', now() - interval '95 days', now() - interval '95 days'),
                ('{a}', gen_random_uuid(), '{k}', 2, 'OPENED', now() - interval '40 days', now() - interval '3 days');",
        a = a.id,
        b = b.id,
        c = Uuid::new_v4(),
    ))
    .await
    .unwrap();
    let audit_before = rows_of(&db, "audit_events").await;
    let events_before = rows_of(&db, "campaign_events").await;
    assert_eq!(audit_before.len(), 30);

    migrate_to_latest(&pg).await;

    for (table, before) in [("audit_events", &audit_before), ("campaign_events", &events_before)] {
        let kind: String = db
            .query_one("SELECT relkind::text FROM pg_class WHERE relname = $1", &[&table])
            .await
            .unwrap()
            .get(0);
        assert_eq!(kind, "p", "{table} is partitioned after V9");
        assert_eq!(&rows_of(&db, table).await, before, "{table}: the same rows, column for column");
        assert_eq!(misplaced(&db, table).await, 0, "{table}: every row in its month's partition");
        let parts = partitions_of(&db, table).await;
        for m in 0..=3 {
            assert!(
                parts.contains(&partition_name(table, month_start(m))),
                "{table}: month +{m} in {parts:?}"
            );
        }
        assert!(parts.contains(&format!("{table}_default")), "{parts:?}");
    }
    let oldest = month_start(0).checked_sub_months(Months::new(16)).unwrap();
    assert!(partitions_of(&db, "audit_events").await.contains(&partition_name("audit_events", oldest)));

    // The server on the migrated database: each tenant reads its own rows
    // (through the parent, across the partitions) and none of the other's.
    let app = TestApp::spawn_on(&pg.url(), &[]).await;
    let listed = |t: &Tenant| {
        let req = pb::ListAuditEventsRequest { page_size: 1000, ..Default::default() };
        let mut c = app.audit();
        let token = t.admin.clone();
        async move { c.list_audit_events(authed(&token, req)).await.expect("list").into_inner().audit_events }
    };
    let (seen_a, seen_b) = (listed(&a).await, listed(&b).await);
    assert_eq!((seen_a.len(), seen_b.len()), (20, 10), "tenant a has 20 rows, b 10");
    let ids_a: BTreeSet<_> = seen_a.iter().map(|e| e.id.clone()).collect();
    assert!(seen_b.iter().all(|e| !ids_a.contains(&e.id)));
    let events = app
        .outreach()
        .list_campaign_events(authed(
            &a.reader,
            pb::ListCampaignEventsRequest { campaign_id: k.to_string(), ..Default::default() },
        ))
        .await
        .expect("events")
        .into_inner()
        .events;
    assert_eq!(
        events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![1, 2],
        "the campaign's events, in order"
    );
    app.stop().await;
}

#[tokio::test]
async fn partitions_maintenance_creates_ahead_once_when_run_twice_at_once() {
    let pg = PrivatePg::start().await;
    migrate_to_latest(&pg).await;
    let db = pg.superuser().await;
    let had = partitions_of(&db, "audit_events").await;
    assert!(!had.contains(&partition_name("audit_events", month_start(4))));

    // Two replicas at once, eight months ahead: each new partition made once.
    let url = pg.url();
    let eight = policy(8);
    let (r1, r2) = tokio::join!(
        partitions::maintain(&url, CONNECT, &eight),
        partitions::maintain(&url, CONNECT, &eight)
    );
    let (r1, r2) = (r1.expect("run 1"), r2.expect("run 2"));
    let mut created: Vec<String> = r1.created.iter().chain(&r2.created).cloned().collect();
    created.sort();
    let mut want: Vec<String> = partitions::TABLES
        .iter()
        .flat_map(|t| (4..=8).map(move |m| partition_name(t, month_start(m))))
        .collect();
    want.sort();
    assert_eq!(created, want, "months +4..+8 of both tables, each once (run 1 {r1:?}, run 2 {r2:?})");
    assert!(r1.created.is_empty() || r2.created.is_empty(), "one run made them all, the other found them");
    for t in partitions::TABLES {
        let parts = partitions_of(&db, t).await;
        for m in 0..=8 {
            assert!(parts.contains(&partition_name(t, month_start(m))), "{t} +{m}: {parts:?}");
        }
    }
    // Again: nothing to do.
    let again = partitions::maintain(&url, CONNECT, &policy(8)).await.unwrap();
    assert!(again.created.is_empty() && again.dropped.is_empty(), "{again:?}");

    // New partitions are closed to the service's role like the others and
    // carry the parent's indexes; a row of a month without a partition goes
    // to the default one and moves out when its month's partition is made.
    let p = partition_name("audit_events", month_start(8));
    let (rls, forced, acl): (bool, bool, Option<String>) = {
        let r = db
            .query_one(
                "SELECT relrowsecurity, relforcerowsecurity, relacl::text FROM pg_class WHERE relname = $1",
                &[&p],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1), r.get(2))
    };
    assert!(rls && forced && acl.is_none(), "{p}: RLS on and forced, no grants ({acl:?})");
    let indexes: i64 =
        db.query_one("SELECT count(*) FROM pg_indexes WHERE tablename = $1", &[&p]).await.unwrap().get(0);
    assert_eq!(indexes, 3, "{p}: primary key and both indexes");
    let far = month_start(20);
    let tenant = Uuid::new_v4();
    db.execute(
        "INSERT INTO audit_events (tenant_id, id, event_time, actor, entity, entity_id, action) \
         VALUES ($1, $2, $3, 'x', 'job', $2, 'CREATE')",
        &[&tenant, &Uuid::new_v4(), &far],
    )
    .await
    .expect("an insert with no partition for its month lands in the default partition");
    async fn placed(db: &tokio_postgres::Client, tenant: Uuid) -> String {
        db.query_one("SELECT tableoid::regclass::text FROM audit_events WHERE tenant_id = $1", &[&tenant])
            .await
            .unwrap()
            .get(0)
    }
    assert_eq!(placed(&db, tenant).await, "audit_events_default");
    let r = partitions::maintain(&url, CONNECT, &policy(3)).await.unwrap();
    assert_eq!(r.created, vec![partition_name("audit_events", far)], "the default row's month is made");
    assert_eq!(placed(&db, tenant).await, partition_name("audit_events", far), "and the row moved into it");
}

#[tokio::test]
async fn partitions_retention_drops_old_months_and_audits_the_drop() {
    let pg = PrivatePg::start().await;
    migrate_to_latest(&pg).await;
    let db = pg.superuser().await;
    let tenant = Uuid::new_v4();
    let old = month_start(-14) + chrono::Duration::days(3);
    let kept = month_start(-2) + chrono::Duration::days(3);
    for (at, n) in [(old, 3), (kept, 2)] {
        for _ in 0..n {
            db.execute(
                "INSERT INTO audit_events (tenant_id, id, event_time, actor, entity, entity_id, action) \
                 VALUES ($1, $2, $3, 'x', 'job', $2, 'CREATE')",
                &[&tenant, &Uuid::new_v4(), &at],
            )
            .await
            .unwrap();
        }
    }
    // Months -14 and -2 get their partitions (their rows were in the default
    // one); retention of 12 months drops -14 only, campaign events untouched.
    let r = partitions::maintain(
        &pg.url(),
        CONNECT,
        &partitions::Policy { months_ahead: 3, audit_retention_months: Some(12), ..Default::default() },
    )
    .await
    .expect("maintenance");
    let gone = partition_name("audit_events", month_start(-14));
    assert_eq!(r.dropped.len(), 1, "{r:?}");
    assert_eq!((r.dropped[0].partition.as_str(), r.dropped[0].rows), (gone.as_str(), 3));
    assert_eq!(r.dropped[0].from, month_start(-14));
    assert_eq!(r.dropped[0].to, month_start(-13));
    let parts = partitions_of(&db, "audit_events").await;
    assert!(!parts.contains(&gone), "{parts:?}");
    assert!(parts.contains(&partition_name("audit_events", month_start(-2))), "{parts:?}");
    let left: Vec<DateTime<Utc>> = db
        .query("SELECT event_time FROM audit_events WHERE tenant_id = $1", &[&tenant])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(left, vec![kept, kept], "the old rows went with their partition, the others stay");

    // The record of the drop: the system tenant, in the current partition.
    let audit = db
        .query(
            "SELECT actor, entity, action, before, tableoid::regclass::text FROM audit_events \
             WHERE tenant_id = $1",
            &[&partitions::SYSTEM_TENANT],
        )
        .await
        .unwrap();
    assert_eq!(audit.len(), 1);
    let before: serde_json::Value = audit[0].get(3);
    assert_eq!(audit[0].get::<_, String>(0), partitions::RETENTION_ACTOR);
    assert_eq!(
        (audit[0].get::<_, String>(1), audit[0].get::<_, String>(2)),
        ("partition".into(), "DELETE".into())
    );
    assert_eq!(before["partition"], gone.as_str());
    assert_eq!(before["table"], "audit_events");
    assert_eq!(before["rows"], 3);
    assert_eq!(audit[0].get::<_, String>(4), partition_name("audit_events", month_start(0)));

    // Nothing more to drop; a retention so short that the audit partition
    // itself would go is refused by the flag's range (>= 1 month), and one
    // month keeps the current and previous months.
    let again = partitions::maintain(
        &pg.url(),
        CONNECT,
        &partitions::Policy { months_ahead: 3, audit_retention_months: Some(12), ..Default::default() },
    )
    .await
    .unwrap();
    assert!(again.dropped.is_empty(), "{again:?}");
    let events_parts = partitions_of(&db, "campaign_events").await;
    assert!(events_parts.contains(&partition_name("campaign_events", month_start(0))));
}

/// auto_explain in the private cluster: every statement the server issues
/// is logged with its plan (the real statement with its real parameters).
async fn explain_everything(pg: &PrivatePg) {
    let db = pg.superuser().await;
    db.batch_execute(
        "ALTER DATABASE bi_data SET session_preload_libraries = 'auto_explain';
         ALTER DATABASE bi_data SET auto_explain.log_min_duration = 0;
         ALTER DATABASE bi_data SET auto_explain.log_analyze = on;
         ALTER DATABASE bi_data SET auto_explain.log_timing = off;",
    )
    .await
    .unwrap();
}

/// The plans logged for statements whose text contains every one of `has`.
fn plans(log: &str, has: &[&str]) -> Vec<String> {
    let mut entries: Vec<String> = Vec::new();
    for line in log.lines() {
        if line.starts_with(char::is_whitespace) {
            if let Some(last) = entries.last_mut() {
                last.push('\n');
                last.push_str(line);
            }
        } else {
            entries.push(line.to_owned());
        }
    }
    entries.into_iter().filter(|e| e.contains("plan:") && has.iter().all(|h| e.contains(h))).collect()
}

#[tokio::test]
async fn partitions_time_ranges_prune_the_audit_listing_and_the_funnel() {
    let pg = PrivatePg::start().await;
    migrate_to_latest(&pg).await;
    explain_everything(&pg).await;
    let app = TestApp::spawn_on(&pg.url(), &[]).await;
    let t = Tenant::new();
    let job = app
        .jobs()
        .create_job(authed(
            &t.writer,
            pb::CreateJobRequest { job: Some(job("Pruned")), ..Default::default() },
        ))
        .await
        .expect("create")
        .into_inner();
    let (from, to) = (month_start(0), month_start(1));
    let filter = format!(
        "event_time >= \"{}\" AND event_time < \"{}\"",
        from.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        to.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );
    let listed = app
        .audit()
        .list_audit_events(authed(
            &t.admin,
            pb::ListAuditEventsRequest { filter: filter.clone(), ..Default::default() },
        ))
        .await
        .expect("list")
        .into_inner()
        .audit_events;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].entity_id, job.id);
    // Unbounded, for contrast: every partition is in the plan.
    app.audit()
        .list_audit_events(authed(&t.admin, pb::ListAuditEventsRequest::default()))
        .await
        .expect("list");
    let ts = |d: DateTime<Utc>| prost_types::Timestamp { seconds: d.timestamp(), nanos: 0 };
    app.analytics()
        .get_outreach_funnel(authed(
            &t.reader,
            pb::GetOutreachFunnelRequest {
                start_time: Some(ts(from)),
                end_time: Some(ts(to)),
                filter: String::new(),
            },
        ))
        .await
        .expect("funnel");
    app.stop().await;

    let log = pg.log();
    let current = partition_name("audit_events", from);
    let others: Vec<String> = (1..=3)
        .map(|m| partition_name("audit_events", month_start(m)))
        .chain(["audit_events_default".into()])
        .collect();
    let ranged = plans(&log, &["FROM audit_events", "event_time >="]);
    assert!(!ranged.is_empty(), "the ranged listing's plan is logged:\n{log}");
    for p in &ranged {
        assert!(p.contains(&current), "the current month is read:\n{p}");
        for o in &others {
            assert!(!p.contains(o.as_str()), "{o} is pruned:\n{p}");
        }
    }
    let unbounded: Vec<String> = plans(&log, &["FROM audit_events"])
        .into_iter()
        .filter(|p| !p.contains("event_time >=") && p.contains("SELECT"))
        .collect();
    assert!(
        unbounded.iter().any(|p| others.iter().all(|o| p.contains(o.as_str()))),
        "without a range every partition is read (the check can fail):\n{unbounded:?}"
    );
    let funnel = plans(&log, &["FROM campaign_events", "e.event_time"]);
    assert!(!funnel.is_empty(), "the funnel's plan is logged");
    let current = partition_name("campaign_events", from);
    for p in &funnel {
        assert!(p.contains(&current), "{p}");
        for m in 1..=3 {
            let o = partition_name("campaign_events", month_start(m));
            assert!(!p.contains(&o), "{o} is pruned:\n{p}");
        }
        assert!(!p.contains("campaign_events_default"), "{p}");
    }

    // Generic plans (what a prepared statement may switch to after five
    // runs) prune when execution starts: the same listing, on a server whose
    // sessions always plan generically.
    let superuser = pg.superuser().await;
    superuser.batch_execute("ALTER DATABASE bi_data SET plan_cache_mode = force_generic_plan").await.unwrap();
    let seen = log.len();
    let app = TestApp::spawn_on(&pg.url(), &[]).await;
    let listed = app
        .audit()
        .list_audit_events(authed(&t.admin, pb::ListAuditEventsRequest { filter, ..Default::default() }))
        .await
        .expect("list")
        .into_inner()
        .audit_events;
    assert_eq!(listed.len(), 1);
    app.stop().await;
    let log = pg.log();
    let generic = plans(&log[seen..], &["FROM audit_events", "event_time >="]);
    assert!(!generic.is_empty(), "the generic plan is logged");
    for p in &generic {
        assert!(p.contains("Subplans Removed"), "pruned at execution start:\n{p}");
        assert!(p.contains(&partition_name("audit_events", from)), "{p}");
        for o in &others {
            assert!(!p.contains(o.as_str()), "{o} is pruned:\n{p}");
        }
    }
}

#[tokio::test]
async fn partitions_keep_tenants_apart_through_the_parent() {
    let app = TestApp::spawn().await;
    let (a, b) = (Tenant::new(), Tenant::new());
    // Tenant a's rows in three months: the two past ones written directly as
    // the owner role under a's scope (as the service would have then), this
    // month's by a call.
    let db = raw_db().await;
    for m in [-1, -2] {
        let at = month_start(m) + chrono::Duration::hours(1);
        db.batch_execute("BEGIN").await.unwrap();
        db.execute("SELECT set_config('app.tenant_id', $1, true)", &[&a.id.to_string()]).await.unwrap();
        db.execute(
            "INSERT INTO audit_events (tenant_id, id, event_time, actor, entity, entity_id, action) \
             VALUES ($1, $2, $3, 'x', 'job', $2, 'CREATE')",
            &[&a.id, &Uuid::now_v7(), &at],
        )
        .await
        .unwrap();
        db.batch_execute("COMMIT").await.unwrap();
    }
    app.jobs()
        .create_job(authed(
            &a.writer,
            pb::CreateJobRequest { job: Some(job("Tenant a")), ..Default::default() },
        ))
        .await
        .expect("create");
    let list = |t: &Tenant| {
        let mut c = app.audit();
        let token = t.admin.clone();
        let from = month_start(-2).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        async move {
            c.list_audit_events(authed(
                &token,
                pb::ListAuditEventsRequest {
                    filter: format!("event_time >= \"{from}\""),
                    ..Default::default()
                },
            ))
            .await
            .expect("list")
            .into_inner()
            .audit_events
        }
    };
    assert_eq!(list(&a).await.len(), 3, "a reads its rows of three months");
    assert!(list(&b).await.is_empty(), "b reads none of them");

    // The service's role cannot name a partition (no grants), only the parent.
    db.batch_execute("SET ROLE bi_data_app").await.unwrap();
    for p in [partition_name("audit_events", month_start(0)), "audit_events_default".into()] {
        let e = db.query(&format!("SELECT count(*) FROM {p}"), &[]).await.unwrap_err();
        assert_eq!(e.code(), Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE), "{p}: {e}");
    }
    let e = db.query("SELECT count(*) FROM campaign_events_default", &[]).await.unwrap_err();
    assert_eq!(e.code(), Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE));
    // Through the parent, with no tenant set: nothing (the policy fails closed).
    let n: i64 = db.query_one("SELECT count(*) FROM audit_events", &[]).await.unwrap().get(0);
    assert_eq!(n, 0);
    db.batch_execute("RESET ROLE").await.unwrap();
    app.stop().await;
}
