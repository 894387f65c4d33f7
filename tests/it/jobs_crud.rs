//! Job CRUD through the real gRPC client: every field, masks, etags, soft
//! delete, idempotency, batches, unique job_url, audit events.

use bi_data::pb::{
    self, AuditAction, BatchCreateJobsRequest, BatchGetJobsRequest, CreateJobRequest, DeleteJobRequest,
    GetJobRequest, ListAuditEventsRequest, ListJobsRequest, UndeleteJobRequest, UpdateJobRequest,
};
use prost_types::{FieldMask, Struct, Timestamp};
use tonic::Code;

use crate::{common::*, helpers::*};

fn full_job() -> pb::Job {
    let mut attrs = Struct::default();
    attrs.fields.insert("visa".into(), bi_data::api::convert::json_to_value(&serde_json::json!(true)));
    attrs.fields.insert(
        "nested".into(),
        bi_data::api::convert::json_to_value(
            &serde_json::json!({"team": "data", "size": 7, "tags": ["a", "b"]}),
        ),
    );
    pb::Job {
        title: "Senior Rust Engineer".into(),
        company_name: "Acme Analytics".into(),
        location: "Berlin".into(),
        salary_min: Some(90_000),
        salary_max: Some(120_000),
        salary_currency: "EUR".into(),
        description: "Build a gRPC data service. Ünïcödé ✓".into(),
        requirements: "Rust, PostgreSQL".into(),
        benefits: "Learning budget".into(),
        job_url: format!("https://jobs.example.com/{}", uuid::Uuid::new_v4()),
        source_site: "linkedin".into(),
        posting_time: Some(Timestamp { seconds: 1_760_000_000, nanos: 123_456_000 }),
        application_deadline: Some(Timestamp { seconds: 1_770_000_000, nanos: 0 }),
        discovered_time: Some(Timestamp { seconds: 1_760_100_000, nanos: 0 }),
        remote: true,
        job_type: pb::JobType::Contract as i32,
        experience_level: pb::ExperienceLevel::Senior as i32,
        industry: "Software".into(),
        keywords: vec!["rust".into(), "grpc".into(), "postgresql".into()],
        status: pb::JobStatus::Saved as i32,
        attributes: Some(attrs),
        ..Default::default()
    }
}

/// Output-only fields cleared, for comparing what was sent with what came back.
fn inputs(mut j: pb::Job) -> pb::Job {
    j.id.clear();
    j.etag.clear();
    j.create_time = None;
    j.update_time = None;
    j.delete_time = None;
    j
}

#[tokio::test]
async fn crud_round_trip_of_every_field() {
    let app = TestApp::spawn().await;
    let t = Tenant::new();
    let mut c = app.jobs();
    let sent = full_job();
    let created = c
        .create_job(authed(
            &t.writer,
            CreateJobRequest { job: Some(sent.clone()), request_id: String::new() },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(uuid::Uuid::parse_str(&created.id).is_ok());
    assert!(created.create_time.is_some() && created.update_time.is_some() && created.delete_time.is_none());
    assert!(!created.etag.is_empty());
    assert_eq!(inputs(created.clone()), sent);

    let got =
        c.get_job(authed(&t.reader, GetJobRequest { id: created.id.clone() })).await.unwrap().into_inner();
    assert_eq!(got, created);

    let listed = c.list_jobs(authed(&t.reader, ListJobsRequest::default())).await.unwrap().into_inner();
    assert_eq!(listed.jobs, vec![created.clone()]);

    // Defaults: currency USD, status DISCOVERED, discovered_time set.
    let minimal = c
        .create_job(authed(
            &t.writer,
            CreateJobRequest { job: Some(job("Minimal")), request_id: String::new() },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(minimal.salary_currency, "USD");
    assert_eq!(minimal.status, pb::JobStatus::Discovered as i32);
    assert!(minimal.discovered_time.is_some());
    assert_eq!(minimal.salary_min, None);
    assert!(minimal.keywords.is_empty());
    app.stop().await;
}

#[tokio::test]
async fn create_validation_errors_name_fields() {
    let app = TestApp::spawn().await;
    let t = Tenant::new();
    let mut c = app.jobs();
    let cases: Vec<(pb::Job, &str)> = vec![
        (pb::Job { title: String::new(), ..job("x") }, "job.title"),
        (pb::Job { company_name: String::new(), ..job("x") }, "job.company_name"),
        (pb::Job { title: "t".repeat(256), ..job("x") }, "job.title"),
        (pb::Job { salary_min: Some(10), salary_max: Some(5), ..job("x") }, "job.salary_min"),
        (pb::Job { salary_currency: "dollars".into(), ..job("x") }, "job.salary_currency"),
        (pb::Job { job_type: 99, ..job("x") }, "job.job_type"),
        (pb::Job { company_id: "not-a-uuid".into(), ..job("x") }, "job.company_id"),
        (pb::Job { job_url: "u".repeat(501), ..job("x") }, "job.job_url"),
        (pb::Job { description: "nul\0byte".into(), ..job("x") }, "job.description"),
        (pb::Job { keywords: vec!["a\0".into()], ..job("x") }, "job.keywords"),
    ];
    for (j, field) in cases {
        let e = c
            .create_job(authed(&t.writer, CreateJobRequest { job: Some(j), request_id: String::new() }))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{field}: {e:?}");
        assert!(violations(&e).iter().any(|f| f == field), "{field} not in {:?}", violations(&e));
    }
    let e = c.create_job(authed(&t.writer, CreateJobRequest::default())).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    for id in ["", "nope", "123"] {
        let e = c.get_job(authed(&t.reader, GetJobRequest { id: id.into() })).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
    }
    let e = c
        .get_job(authed(&t.reader, GetJobRequest { id: uuid::Uuid::new_v4().to_string() }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    app.stop().await;
}

#[tokio::test]
async fn field_masks_and_etags() {
    let app = TestApp::spawn().await;
    let t = Tenant::new();
    let created = app.create::<pb::Job>(&t, full_job()).await;

    // Only masked fields change, even if others are sent.
    let patch = pb::Job {
        id: created.id.clone(),
        title: "Staff Rust Engineer".into(),
        location: "ignored".into(),
        etag: created.etag.clone(),
        ..Default::default()
    };
    let updated = app.update::<pb::Job>(&t, patch, &["title"]).await;
    assert_eq!(updated.title, "Staff Rust Engineer");
    assert_eq!(updated.location, "Berlin");
    assert_eq!(updated.keywords, created.keywords);
    assert_ne!(updated.etag, created.etag);
    let secs = |t: &Option<Timestamp>| t.map(|t| (t.seconds, t.nanos)).unwrap();
    assert!(secs(&updated.update_time) > secs(&created.update_time));

    // A masked field absent from the message is cleared.
    let id_only = || pb::Job { id: created.id.clone(), ..Default::default() };
    let cleared = app.update::<pb::Job>(&t, id_only(), &["location", "keywords"]).await;
    assert_eq!(cleared.location, "");
    assert!(cleared.keywords.is_empty());

    // Empty mask: every field the caller set.
    let by_set = app.update::<pb::Job>(&t, pb::Job { industry: "Energy".into(), ..id_only() }, &[]).await;
    assert_eq!(by_set.industry, "Energy");
    assert_eq!(by_set.title, "Staff Rust Engineer");

    // Stale etag -> ABORTED with ETAG_MISMATCH.
    let stale = pb::Job { title: "x".into(), etag: created.etag.clone(), ..id_only() };
    let e = app.try_update::<pb::Job>(&t, stale, &["title"]).await.unwrap_err();
    assert_eq!(e.code(), Code::Aborted);
    assert_eq!(reason(&e), "ETAG_MISMATCH");

    // Unknown and output-only paths -> INVALID_ARGUMENT.
    for path in ["nope", "create_time", "id"] {
        let e = app.try_update::<pb::Job>(&t, id_only(), &[path]).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{path}");
    }
    // Clearing a required field through the mask is refused.
    let e = app.try_update::<pb::Job>(&t, id_only(), &["title"]).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    app.stop().await;
}

#[tokio::test]
async fn soft_delete_and_undelete() {
    let app = TestApp::spawn().await;
    let t = Tenant::new();
    let j = app.create::<pb::Job>(&t, job("Doomed")).await;
    let e = app.try_delete::<pb::Job>(&t, &j.id, "W/\"999\"").await.unwrap_err();
    assert_eq!(e.code(), Code::Aborted);
    let d = app.delete::<pb::Job>(&t, &j.id, &j.etag).await;
    assert!(d.delete_time.is_some());
    // Hidden from List, visible with show_deleted, still returned by Get.
    let l = app.list::<pb::Job>(&t, ListOpts::default()).await;
    assert!(l.items.is_empty());
    let l = app.list::<pb::Job>(&t, ListOpts::default().show_deleted()).await;
    assert_eq!(l.items.len(), 1);
    let g = app.get::<pb::Job>(&t, &j.id).await;
    assert!(g.delete_time.is_some());
    // Deleting a deleted job -> NOT_FOUND; updating it -> FAILED_PRECONDITION.
    let e = app.try_delete::<pb::Job>(&t, &j.id, "").await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let patch = pb::Job { id: j.id.clone(), title: "x".into(), ..Default::default() };
    let e = app.try_update::<pb::Job>(&t, patch, &[]).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    let u = app.undelete::<pb::Job>(&t, &j.id).await;
    assert!(u.delete_time.is_none());
    let e = app.try_undelete::<pb::Job>(&t, &j.id).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    let l = app.list::<pb::Job>(&t, ListOpts::default()).await;
    assert_eq!(l.items.len(), 1);
    app.stop().await;
}

#[tokio::test]
async fn idempotent_create_with_request_id() {
    let app = TestApp::spawn().await;
    let t = Tenant::new();
    let mut c = app.jobs();
    let req = CreateJobRequest { job: Some(job("Once")), request_id: "req-1".into() };
    let a = c.create_job(authed(&t.writer, req.clone())).await.unwrap().into_inner();
    let b = c.create_job(authed(&t.writer, req.clone())).await.unwrap().into_inner();
    assert_eq!(a, b);
    // Concurrent repeats also create exactly one.
    let mut handles = Vec::new();
    for _ in 0..8 {
        let mut c = app.jobs();
        let req = CreateJobRequest { job: Some(job("Concurrent")), request_id: "req-2".into() };
        let tok = t.writer.clone();
        handles.push(tokio::spawn(
            async move { c.create_job(authed(&tok, req)).await.unwrap().into_inner().id },
        ));
    }
    let mut ids = Vec::new();
    for h in handles {
        ids.push(h.await.unwrap());
    }
    ids.dedup();
    assert_eq!(ids.len(), 1);
    let l = c
        .list_jobs(authed(&t.reader, ListJobsRequest { count: true, ..Default::default() }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(l.total_size, 2);
    // The same request id in another tenant is independent.
    let other = Tenant::new();
    let o = c.create_job(authed(&other.writer, req)).await.unwrap().into_inner();
    assert_ne!(o.id, a.id);
    let e = c
        .create_job(authed(&t.writer, CreateJobRequest { job: Some(job("x")), request_id: "r".repeat(37) }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    app.stop().await;
}

/// A batch's stored response names each created job by its CREATE event
/// (a few dozen bytes, not a second copy of the job): a repeat returns the
/// first response field for field, also after a job changed since.
#[tokio::test]
async fn a_repeated_batch_returns_its_first_response_from_the_audit_events() {
    let app = TestApp::spawn().await;
    let t = Tenant::new();
    let mut c = app.jobs();
    let batch = |n: usize| BatchCreateJobsRequest {
        requests: (0..n)
            .map(|i| CreateJobRequest { job: Some(job(&format!("R{i}"))), request_id: String::new() })
            .collect(),
        request_id: "batch-replay".into(),
    };
    let first = c.batch_create_jobs(authed(&t.writer, batch(20))).await.expect("batch").into_inner().jobs;
    let mut changed = first[3].clone();
    changed.title = "changed since".into();
    c.update_job(authed(
        &t.writer,
        UpdateJobRequest { job: Some(changed), update_mask: None, request_id: String::new() },
    ))
    .await
    .expect("update");
    // A different batch under the same request id: the first one answers.
    let again = c.batch_create_jobs(authed(&t.writer, batch(2))).await.expect("replay").into_inner().jobs;
    assert_eq!(again, first, "the replay is the first response, field for field");
    assert_eq!(app.list::<pb::Job>(&t, ListOpts::default().count()).await.total_size, 20);
    let db = raw_db().await;
    db.execute("SELECT set_config('app.tenant_id', $1, false)", &[&t.id.to_string()]).await.unwrap();
    let size: i32 = db
        .query_one(
            "SELECT octet_length(response) FROM idempotency_keys WHERE request_id = 'batch-replay'",
            &[],
        )
        .await
        .expect("stored")
        .get(0);
    assert!(size < 20 * 100, "20 jobs stored in {size} bytes: references, not copies");
    app.stop().await;
}

#[tokio::test]
async fn batches_limits_order_and_atomicity() {
    let app = TestApp::spawn().await;
    let t = Tenant::new();
    let mut c = app.jobs();
    let reqs: Vec<CreateJobRequest> = (0..5)
        .map(|i| CreateJobRequest { job: Some(job(&format!("B{i}"))), request_id: String::new() })
        .collect();
    let made = c
        .batch_create_jobs(authed(
            &t.writer,
            BatchCreateJobsRequest { requests: reqs, request_id: String::new() },
        ))
        .await
        .unwrap()
        .into_inner()
        .jobs;
    assert_eq!(made.iter().map(|j| j.title.as_str()).collect::<Vec<_>>(), ["B0", "B1", "B2", "B3", "B4"]);

    // Order kept, duplicates allowed.
    let ids = vec![made[3].id.clone(), made[0].id.clone(), made[3].id.clone()];
    let got = c
        .batch_get_jobs(authed(&t.reader, BatchGetJobsRequest { ids: ids.clone() }))
        .await
        .unwrap()
        .into_inner()
        .jobs;
    assert_eq!(got.iter().map(|j| j.id.clone()).collect::<Vec<_>>(), ids);
    // Missing id -> NOT_FOUND naming it.
    let missing = uuid::Uuid::new_v4().to_string();
    let e = c
        .batch_get_jobs(authed(
            &t.reader,
            BatchGetJobsRequest { ids: vec![made[0].id.clone(), missing.clone()] },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert!(e.message().contains(&missing));
    // Limits.
    let e = c
        .batch_get_jobs(authed(&t.reader, BatchGetJobsRequest { ids: vec![made[0].id.clone(); 1001] }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let too_many: Vec<CreateJobRequest> =
        (0..1001).map(|_| CreateJobRequest { job: Some(job("x")), request_id: String::new() }).collect();
    let e = c
        .batch_create_jobs(authed(
            &t.writer,
            BatchCreateJobsRequest { requests: too_many, request_id: String::new() },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);

    // All or nothing: a duplicate job_url in the batch rolls back every row.
    let url = "https://jobs.example.com/dup".to_string();
    let reqs = vec![
        CreateJobRequest {
            job: Some(pb::Job { job_url: "https://jobs.example.com/ok".into(), ..job("ok") }),
            request_id: String::new(),
        },
        CreateJobRequest {
            job: Some(pb::Job { job_url: url.clone(), ..job("a") }),
            request_id: String::new(),
        },
        CreateJobRequest {
            job: Some(pb::Job { job_url: url.clone(), ..job("b") }),
            request_id: String::new(),
        },
    ];
    let e = c
        .batch_create_jobs(authed(
            &t.writer,
            BatchCreateJobsRequest { requests: reqs, request_id: String::new() },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists);
    assert_eq!(reason(&e), "DUPLICATE_JOB_URL");
    // A validation error in one item names it and creates nothing.
    let reqs = vec![
        CreateJobRequest { job: Some(job("fine")), request_id: String::new() },
        CreateJobRequest {
            job: Some(pb::Job { title: String::new(), ..job("") }),
            request_id: String::new(),
        },
    ];
    let e = c
        .batch_create_jobs(authed(
            &t.writer,
            BatchCreateJobsRequest { requests: reqs, request_id: String::new() },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(violations(&e).contains(&"requests[1].job.title".to_string()), "{:?}", violations(&e));
    let l = c
        .list_jobs(authed(&t.reader, ListJobsRequest { count: true, ..Default::default() }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(l.total_size, 5);
    app.stop().await;
}

#[tokio::test]
async fn job_url_is_unique_among_live_jobs() {
    let app = TestApp::spawn().await;
    let t = Tenant::new();
    let mut c = app.jobs();
    let url = "https://jobs.example.com/unique-1";
    let mk = || CreateJobRequest {
        job: Some(pb::Job { job_url: url.into(), ..job("u") }),
        request_id: String::new(),
    };
    let first = c.create_job(authed(&t.writer, mk())).await.unwrap().into_inner();
    let e = c.create_job(authed(&t.writer, mk())).await.unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists);
    assert_eq!(reason(&e), "DUPLICATE_JOB_URL");
    assert!(!e.message().to_lowercase().contains("constraint"), "no schema names: {}", e.message());
    // Another tenant may use the same URL.
    let other = Tenant::new();
    c.create_job(authed(&other.writer, mk())).await.unwrap();
    // Once deleted, the URL is free; undeleting the first then conflicts.
    c.delete_job(authed(&t.writer, DeleteJobRequest { id: first.id.clone(), ..Default::default() }))
        .await
        .unwrap();
    c.create_job(authed(&t.writer, mk())).await.unwrap();
    let e = c
        .undelete_job(authed(&t.writer, UndeleteJobRequest { id: first.id.clone(), ..Default::default() }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists);
    app.stop().await;
}

#[tokio::test]
async fn every_mutation_is_audited_with_before_and_after() {
    let app = TestApp::spawn().await;
    let t = Tenant::new();
    let mut c = app.jobs();
    let mut create =
        authed(&t.writer, CreateJobRequest { job: Some(job("Audited")), request_id: "audit-req".into() });
    create
        .metadata_mut()
        .insert("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".parse().unwrap());
    let j = c.create_job(create).await.unwrap().into_inner();
    c.update_job(authed(
        &t.writer,
        UpdateJobRequest {
            job: Some(pb::Job { id: j.id.clone(), title: "Audited v2".into(), ..Default::default() }),
            update_mask: Some(FieldMask { paths: vec!["title".into()] }),
            request_id: String::new(),
        },
    ))
    .await
    .unwrap();
    c.delete_job(authed(&t.writer, DeleteJobRequest { id: j.id.clone(), ..Default::default() }))
        .await
        .unwrap();
    c.undelete_job(authed(&t.writer, UndeleteJobRequest { id: j.id.clone(), ..Default::default() }))
        .await
        .unwrap();

    let mut a = app.audit();
    // Writers may not read the audit trail.
    let e = a.list_audit_events(authed(&t.writer, ListAuditEventsRequest::default())).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    let events = a
        .list_audit_events(authed(
            &t.admin,
            ListAuditEventsRequest {
                filter: format!("entity_id = \"{}\"", j.id),
                order_by: "event_time".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .audit_events;
    let actions: Vec<i32> = events.iter().map(|e| e.action).collect();
    assert_eq!(
        actions,
        [AuditAction::Create, AuditAction::Update, AuditAction::Delete, AuditAction::Undelete]
            .map(|a| a as i32)
    );
    let title = |s: &Option<Struct>| match s
        .as_ref()
        .and_then(|s| s.fields.get("title"))
        .and_then(|v| v.kind.clone())
    {
        Some(prost_types::value::Kind::StringValue(t)) => t,
        _ => String::new(),
    };
    assert!(events[0].before.is_none());
    assert_eq!(title(&events[0].after), "Audited");
    assert_eq!(events[0].request_id, "audit-req");
    assert_eq!(events[0].trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(events[0].actor, "tester");
    assert_eq!(events[0].entity, "job");
    assert_eq!(title(&events[1].before), "Audited");
    assert_eq!(title(&events[1].after), "Audited v2");
    // Audit rows are append-only for the service role.
    let db = raw_db().await;
    db.batch_execute("SET ROLE bi_data_app").await.unwrap();
    let err = db.execute("UPDATE audit_events SET actor = 'x'", &[]).await.unwrap_err();
    assert_eq!(err.code(), Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE));
    let err = db.execute("DELETE FROM audit_events", &[]).await.unwrap_err();
    assert_eq!(err.code(), Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE));
    app.stop().await;
}

/// Sends `jobs` as concurrent CreateJob calls (request id, traceparent),
/// while `blockers` calls hold the server's lanes of the tenant: each waits
/// for an advisory lock this test holds on its request id, so the others
/// wait to be combined. Returns each call's result, in order, and the trace
/// id each sent.
async fn create_while_lanes_are_held(
    app: &TestApp,
    t: &Tenant,
    jobs: Vec<(pb::Job, String)>,
) -> (Vec<Result<pb::Job, tonic::Status>>, Vec<String>) {
    let db = raw_db().await;
    let blockers = ["lane-held-1", "lane-held-2"];
    let keys: Vec<String> = blockers.iter().map(|r| format!("{}/{r}", t.id)).collect();
    db.execute("SELECT pg_advisory_lock(hashtextextended(k, 0)) FROM unnest($1::text[]) k", &[&keys])
        .await
        .unwrap();
    let send = |j: pb::Job, rid: String| {
        let (mut c, tok) = (app.jobs(), t.writer.clone());
        let (trace, _, header) = crate::observability::parent();
        let call = tokio::spawn(async move {
            let req = CreateJobRequest { job: Some(j), request_id: rid };
            c.create_job(crate::observability::traced(&tok, &header, req)).await.map(|r| r.into_inner())
        });
        (call, trace)
    };
    let held: Vec<_> = blockers.iter().map(|r| send(job("blocker"), (*r).to_owned()).0).collect();
    // Both blockers hold a lane each, waiting for their lock.
    let mut waiting = 0;
    for _ in 0..200 {
        waiting = db
            .query_one(
                "SELECT count(*) FROM pg_locks l, unnest($1::text[]) k WHERE l.locktype = 'advisory' \
                 AND NOT l.granted AND ((l.classid::bigint << 32) | l.objid::bigint) = hashtextextended(k, 0)",
                &[&keys],
            )
            .await
            .unwrap()
            .get::<_, i64>(0);
        if waiting == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(waiting, 2, "both blockers wait for their request id's lock");
    let (calls, traces): (Vec<_>, Vec<_>) = jobs.into_iter().map(|(j, rid)| send(j, rid)).unzip();
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    db.execute("SELECT pg_advisory_unlock_all()", &[]).await.unwrap();
    for h in held {
        h.await.unwrap().expect("blocker");
    }
    let mut out = Vec::new();
    for c in calls {
        out.push(c.await.unwrap());
    }
    (out, traces)
}

/// Concurrent creations of one tenant share transactions (fewer statements
/// per row), and each call keeps its own answer, audit event (with its own
/// request and trace id), stored response and error.
#[tokio::test]
async fn concurrent_creates_are_combined_and_each_keeps_its_guarantees() {
    let app = TestApp::spawn().await;
    let t = Tenant::new();
    let mut c = app.jobs();
    let seen = c
        .create_job(authed(&t.writer, CreateJobRequest { job: Some(job("seen")), request_id: "seen".into() }))
        .await
        .unwrap()
        .into_inner();
    // 28 calls (the test server admits 32 at once): two repeating one
    // request id, one repeating an earlier call's.
    let rid = |i: usize| match i {
        0 | 1 => "shared".to_owned(),
        2 => "seen".to_owned(),
        i => format!("c-{i}"),
    };
    let jobs = (0..28).map(|i| (job(&format!("combined {i}")), rid(i))).collect();
    let (answers, traces) = create_while_lanes_are_held(&app, &t, jobs).await;
    let answers: Vec<pb::Job> = answers.into_iter().map(|a| a.expect("every call succeeds")).collect();
    assert_eq!(answers[0], answers[1], "a repeated request id answers as the first call");
    assert_eq!(answers[2], seen, "a request id used before answers as then");
    for (i, a) in answers.iter().enumerate().skip(3) {
        assert_eq!(a.title, format!("combined {i}"));
    }
    assert_eq!(app.list::<pb::Job>(&t, ListOpts::default().count()).await.total_size, 1 + 2 + 26);
    // Each created job's CREATE event names its own call, and most share a
    // transaction with others.
    let db = raw_db().await;
    db.execute("SELECT set_config('app.tenant_id', $1, false)", &[&t.id.to_string()]).await.unwrap();
    let created: Vec<uuid::Uuid> =
        answers[3..].iter().chain([&answers[0]]).map(|a| a.id.parse().unwrap()).collect();
    let rows = db
        .query(
            "SELECT entity_id, request_id, trace_id, xmin::text FROM audit_events \
             WHERE tenant_id = $1 AND action = 'CREATE' AND entity_id = ANY($2)",
            &[&t.id, &created],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 26, "one CREATE event per created job");
    let mut transactions = std::collections::HashSet::new();
    for r in &rows {
        let id: uuid::Uuid = r.get(0);
        let i = answers.iter().position(|a| a.id == id.to_string()).unwrap();
        assert_eq!(r.get::<_, Option<String>>(1).as_deref(), Some(rid(i).as_str()), "event of call {i}");
        assert_eq!(r.get::<_, Option<String>>(2).as_deref(), Some(traces[i].as_str()), "trace of call {i}");
        transactions.insert(r.get::<_, String>(3));
    }
    assert!(transactions.len() <= 4, "26 creations in {} transactions", transactions.len());
    // Repeats after the fact answer from the stored responses.
    for i in [0, 5, 27] {
        let again = c
            .create_job(authed(&t.writer, CreateJobRequest { job: Some(job("again")), request_id: rid(i) }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(again, answers[i], "the stored response of call {i}");
    }

    // A row that fails in the shared transaction fails only its own call.
    let url = "https://jobs.example.com/combined-duplicate";
    c.create_job(authed(
        &t.writer,
        CreateJobRequest {
            job: Some(pb::Job { job_url: url.into(), ..job("first") }),
            request_id: String::new(),
        },
    ))
    .await
    .unwrap();
    let jobs = (0..16)
        .map(|i| {
            let j =
                if i == 7 { pb::Job { job_url: url.into(), ..job("dup") } } else { job(&format!("ok {i}")) };
            (j, format!("d-{i}"))
        })
        .collect();
    let (answers, _) = create_while_lanes_are_held(&app, &t, jobs).await;
    for (i, a) in answers.iter().enumerate() {
        match a {
            Err(e) if i == 7 => {
                assert_eq!(e.code(), Code::AlreadyExists);
                assert_eq!(reason(e), "DUPLICATE_JOB_URL");
            }
            Ok(j) if i != 7 => assert_eq!(j.title, format!("ok {i}")),
            other => panic!("call {i}: {other:?}"),
        }
    }
    assert_eq!(
        app.list::<pb::Job>(&t, ListOpts::default().count()).await.total_size,
        29 + 1 + 15,
        "the blockers replay"
    );
    // The failed call stored no response: its request id creates now.
    let retried = c
        .create_job(authed(
            &t.writer,
            CreateJobRequest { job: Some(job("retried")), request_id: "d-7".into() },
        ))
        .await
        .expect("the request id of a failed call is free")
        .into_inner();
    assert_eq!(retried.title, "retried");
    app.stop().await;
}

/// A batch of a few rows is one statement of arrays, a larger one a COPY
/// into the staging table: both store every field (text arrays with
/// awkward elements, empty ones, objects, NULLs) and every default as a
/// single CreateJob does.
#[tokio::test]
async fn small_and_large_batches_store_every_field_alike() {
    let app = TestApp::spawn().await;
    let t = Tenant::new();
    let mut c = app.jobs();
    let odd = pb::Job {
        keywords: vec![
            "a,b".into(),
            "\"quoted\"".into(),
            "ü {x}".into(),
            "NULL".into(),
            "back\\slash".into(),
        ],
        job_url: String::new(),
        ..full_job()
    };
    let samples = [full_job(), odd, job("Minimal")];
    let batch = |n: usize| BatchCreateJobsRequest {
        requests: (0..n)
            .map(|i| {
                let mut j = samples[i % samples.len()].clone();
                if !j.job_url.is_empty() {
                    j.job_url = format!("https://jobs.example.com/{}", uuid::Uuid::new_v4());
                }
                CreateJobRequest { job: Some(j), request_id: String::new() }
            })
            .collect(),
        request_id: String::new(),
    };
    // A job as stored, less what differs between two inserts of `sent`: the
    // output-only fields, and `discovered_time` when it defaulted to now.
    let stored = |sent: &pb::Job, got: pb::Job| {
        let mut got = inputs(got);
        if sent.discovered_time.is_none() {
            assert!(got.discovered_time.take().is_some(), "discovered_time defaults to now");
        }
        got
    };
    // What a single CreateJob stores for each sample (its own INSERT).
    let mut alone = Vec::new();
    for j in &samples {
        let j = pb::Job { job_url: String::new(), ..j.clone() };
        let r = c.create_job(authed(
            &t.writer,
            CreateJobRequest { job: Some(j.clone()), request_id: String::new() },
        ));
        alone.push(stored(&j, r.await.expect("create").into_inner()));
    }
    assert_eq!(alone[0], pb::Job { job_url: String::new(), ..full_job() });
    for n in [3, 65] {
        let sent = batch(n);
        let got =
            c.batch_create_jobs(authed(&t.writer, sent.clone())).await.expect("batch").into_inner().jobs;
        assert_eq!(got.len(), n);
        for (i, (g, s)) in got.iter().zip(&sent.requests).enumerate() {
            let s = s.job.as_ref().unwrap();
            let expected = pb::Job { job_url: s.job_url.clone(), ..alone[i % samples.len()].clone() };
            assert_eq!(stored(s, g.clone()), expected, "batch of {n}, row {i}");
            let read = c.get_job(authed(&t.reader, GetJobRequest { id: g.id.clone() })).await.unwrap();
            assert_eq!(&read.into_inner(), g, "batch of {n}, row {i} as read back");
        }
    }
    app.stop().await;
}
