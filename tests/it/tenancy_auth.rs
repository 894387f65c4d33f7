//! Tenant isolation (through the API and under it, in PostgreSQL's RLS) and
//! authentication / authorization codes.

use std::time::Duration;

use bi_data::{
    auth::{Role, TokenKeys},
    pb::{
        self, BatchGetJobsRequest, CreateJobRequest, DeleteJobRequest, GetJobRequest, ListJobsRequest,
        UpdateJobRequest,
    },
};
use prost_types::FieldMask;
use tonic::{Code, Request};

use crate::common::*;

#[tokio::test]
async fn tenants_are_isolated_on_a_single_connection() {
    // One pooled connection: both tenants' transactions interleave on it, so
    // a tenant setting leaking between transactions would show.
    let app = TestApp::spawn_with(&["--pool-size", "1"]).await;
    let (a, b) = (Tenant::new(), Tenant::new());
    let mut c = app.jobs();
    let mut a_ids = Vec::new();
    for i in 0..5 {
        for (t, ids) in [(&a, Some(&mut a_ids)), (&b, None)] {
            let j = c
                .create_job(authed(
                    &t.writer,
                    CreateJobRequest { job: Some(job(&format!("job {i}"))), request_id: String::new() },
                ))
                .await
                .unwrap()
                .into_inner();
            if let Some(ids) = ids {
                ids.push(j.id);
            }
        }
    }
    // b sees only its own five, counts five, and gets NOT_FOUND for a's ids.
    let l = c
        .list_jobs(authed(&b.reader, ListJobsRequest { count: true, ..Default::default() }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(l.total_size, 5);
    assert_eq!(l.jobs.len(), 5);
    assert!(l.jobs.iter().all(|j| !a_ids.contains(&j.id)));
    let victim = a_ids[0].clone();
    let e = c.get_job(authed(&b.reader, GetJobRequest { id: victim.clone() })).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let e = c
        .batch_get_jobs(authed(&b.reader, BatchGetJobsRequest { ids: vec![victim.clone()] }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let e = c
        .update_job(authed(
            &b.writer,
            UpdateJobRequest {
                job: Some(pb::Job { id: victim.clone(), title: "pwned".into(), ..Default::default() }),
                update_mask: Some(FieldMask { paths: vec!["title".into()] }),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let e = c
        .delete_job(authed(&b.writer, DeleteJobRequest { id: victim.clone(), ..Default::default() }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    // A filter naming a's id finds nothing for b.
    let l = c
        .list_jobs(authed(
            &b.reader,
            ListJobsRequest { filter: format!("id = \"{victim}\""), count: true, ..Default::default() },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(l.total_size, 0);
    // a's job is untouched.
    let j = c.get_job(authed(&a.reader, GetJobRequest { id: victim.clone() })).await.unwrap().into_inner();
    assert_eq!(j.title, "job 0");
    assert!(j.delete_time.is_none());
    app.stop().await;
}

#[tokio::test]
async fn row_level_security_blocks_what_where_clauses_would_not() {
    let app = TestApp::spawn().await;
    let (a, b) = (Tenant::new(), Tenant::new());
    let mut c = app.jobs();
    let ja = c
        .create_job(authed(
            &a.writer,
            CreateJobRequest { job: Some(job("secret")), request_id: String::new() },
        ))
        .await
        .unwrap()
        .into_inner();
    let ja_id: uuid::Uuid = ja.id.parse().unwrap();
    let db = raw_db().await;
    db.batch_execute("SET ROLE bi_data_app").await.unwrap();
    // No tenant set: nothing visible, nothing writable (fail closed).
    let n: i64 = db.query_one("SELECT count(*) FROM jobs", &[]).await.unwrap().get(0);
    assert_eq!(n, 0);
    let err = db
        .execute(
            "INSERT INTO jobs (tenant_id, id, title, company_name) VALUES ($1, gen_random_uuid(), 'x', 'y')",
            &[&a.id],
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE));
    // Tenant b set: a query with no WHERE clause at all still sees none of a's rows,
    // and cannot update or insert them.
    db.batch_execute("BEGIN").await.unwrap();
    db.execute("SELECT set_config('app.tenant_id', $1, true)", &[&b.id.to_string()]).await.unwrap();
    let n: i64 = db.query_one("SELECT count(*) FROM jobs WHERE id = $1", &[&ja_id]).await.unwrap().get(0);
    assert_eq!(n, 0);
    let updated = db.execute("UPDATE jobs SET title = 'pwned' WHERE id = $1", &[&ja_id]).await.unwrap();
    assert_eq!(updated, 0);
    let err = db
        .execute(
            "INSERT INTO jobs (tenant_id, id, title, company_name) VALUES ($1, gen_random_uuid(), 'x', 'y')",
            &[&a.id],
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE));
    db.batch_execute("ROLLBACK").await.unwrap();
    // The setting is transaction-local: gone after the transaction.
    let n: i64 = db.query_one("SELECT count(*) FROM jobs", &[]).await.unwrap().get(0);
    assert_eq!(n, 0);
    // A reference to another tenant's job is impossible: foreign keys include tenant_id.
    db.batch_execute("BEGIN").await.unwrap();
    db.execute("SELECT set_config('app.tenant_id', $1, true)", &[&b.id.to_string()]).await.unwrap();
    let err = db
        .execute(
            "INSERT INTO applications (tenant_id, id, job_id) VALUES ($1, gen_random_uuid(), $2)",
            &[&b.id, &ja_id],
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(&tokio_postgres::error::SqlState::FOREIGN_KEY_VIOLATION));
    db.batch_execute("ROLLBACK").await.unwrap();
    // The service role owns nothing and cannot bypass RLS; every tenant table forces it.
    let row = db
        .query_one("SELECT rolbypassrls, rolsuper FROM pg_roles WHERE rolname = 'bi_data_app'", &[])
        .await
        .unwrap();
    assert!(!row.get::<_, bool>(0) && !row.get::<_, bool>(1));
    let owned: i64 = db
        // Session-private TEMP staging tables of concurrent imports are the
        // role's own by design; no permanent table may be.
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE tableowner = 'bi_data_app' AND schemaname NOT LIKE 'pg_temp%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(owned, 0);
    let unforced: Vec<String> = db
        .query(
            "SELECT c.relname::text FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id' \
             WHERE c.relkind = 'r' AND c.relnamespace = 'public'::regnamespace AND NOT (c.relrowsecurity AND c.relforcerowsecurity)",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(unforced.is_empty(), "tables without FORCE RLS: {unforced:?}");
    app.stop().await;
}

#[tokio::test]
async fn authentication_and_roles() {
    let app = TestApp::spawn().await;
    let t = Tenant::new();
    let mut c = app.jobs();
    let list = || ListJobsRequest::default();
    // No token.
    let e = c.list_jobs(Request::new(list())).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    // Not a bearer token, garbage, wrong signature, expired.
    let e = c.list_jobs(authed("not-a-jwt", list())).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    let forged =
        TokenKeys::new("another-secret-entirely").mint(t.id, &[Role::Admin], "x", Duration::from_secs(60));
    let e = c.list_jobs(authed(&forged, list())).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    let expired = expired_token(t.id);
    let e = c.list_jobs(authed(&expired, list())).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    assert!(e.message().contains("expired"), "{}", e.message());
    let mut r = Request::new(list());
    r.metadata_mut().insert("authorization", format!("Basic {}", t.reader).parse().unwrap());
    assert_eq!(c.list_jobs(r).await.unwrap_err().code(), Code::Unauthenticated);
    // Roles: reader cannot write; writer can read and write; admin can do all.
    let e = c
        .create_job(authed(&t.reader, CreateJobRequest { job: Some(job("x")), request_id: String::new() }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    c.list_jobs(authed(&t.writer, list())).await.unwrap();
    c.create_job(authed(&t.admin, CreateJobRequest { job: Some(job("x")), request_id: String::new() }))
        .await
        .unwrap();
    // A token with no known role can do nothing.
    let none = TokenKeys::new(SECRET).mint(t.id, &[], "x", Duration::from_secs(60));
    assert_eq!(c.list_jobs(authed(&none, list())).await.unwrap_err().code(), Code::PermissionDenied);
    // Health and reflection need no token.
    assert!(app.health("").await.is_some());
    app.stop().await;
}

/// A correctly signed token whose `exp` is in the past.
fn expired_token(tenant: uuid::Uuid) -> String {
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
    use sha2::Digest;
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let claims = URL_SAFE_NO_PAD.encode(
        serde_json::json!({"sub": "x", "tenant_id": tenant.to_string(), "roles": ["admin"], "exp": 1_000_000_000u64, "iat": 999_999_000u64})
            .to_string(),
    );
    let msg = format!("{header}.{claims}");
    // HMAC-SHA256 by hand (RFC 2104) to avoid a test-only dependency.
    let mut key = SECRET.as_bytes().to_vec();
    key.resize(64, 0);
    let ipad: Vec<u8> = key.iter().map(|b| b ^ 0x36).collect();
    let opad: Vec<u8> = key.iter().map(|b| b ^ 0x5c).collect();
    let inner = sha2::Sha256::new().chain_update(&ipad).chain_update(msg.as_bytes()).finalize();
    let mac = sha2::Sha256::new().chain_update(&opad).chain_update(inner).finalize();
    format!("{msg}.{}", URL_SAFE_NO_PAD.encode(mac))
}

#[tokio::test]
async fn insecure_dev_only_on_loopback() {
    // Refused on a non-loopback address.
    let args = serve_args(&["--insecure-dev", "--listen", "0.0.0.0:0"]);
    let err = bi_data::app::start(args).await.err().expect("must refuse");
    assert!(err.to_string().contains("loopback"), "{err}");
    // Accepted on loopback: x-tenant-id instead of a token.
    let app = TestApp::spawn_with(&["--insecure-dev"]).await;
    let tenant = uuid::Uuid::new_v4().to_string();
    let mut r = Request::new(CreateJobRequest { job: Some(job("dev")), request_id: String::new() });
    r.metadata_mut().insert("x-tenant-id", tenant.parse().unwrap());
    app.jobs().create_job(r).await.unwrap();
    let e = app.jobs().list_jobs(Request::new(ListJobsRequest::default())).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    app.stop().await;
}
