//! Concurrency correctness at the counts of docs/reliability.md: one etag,
//! fifty writers; one request id, twenty creates; overlapping imports.

use bi_data::pb::{self, CreateJobRequest, UpdateJobRequest};
use prost_types::FieldMask;
use tonic::Code;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_updates_with_one_etag_one_wins() {
    let app = TestApp::spawn().await;
    let t = Tenant::new();
    let j = app
        .jobs()
        .create_job(authed(&t.writer, CreateJobRequest { job: Some(job("etag")), request_id: String::new() }))
        .await
        .unwrap()
        .into_inner();
    let calls = (0..50).map(|i| {
        let (mut c, token, id, etag) = (app.jobs(), t.writer.clone(), j.id.clone(), j.etag.clone());
        async move {
            c.update_job(authed(
                &token,
                UpdateJobRequest {
                    job: Some(pb::Job { id, etag, title: format!("writer {i}"), ..Default::default() }),
                    update_mask: Some(FieldMask { paths: vec!["title".into()] }),
                    request_id: String::new(),
                },
            ))
            .await
        }
    });
    let results = futures_util::future::join_all(calls).await;
    let won: Vec<&pb::Job> = results.iter().filter_map(|r| r.as_ref().ok()).map(|r| r.get_ref()).collect();
    let codes: Vec<Code> = results.iter().filter_map(|r| r.as_ref().err()).map(|e| e.code()).collect();
    println!(
        "FAULT etag-race: {} OK, {} ABORTED of 50",
        won.len(),
        codes.iter().filter(|c| **c == Code::Aborted).count()
    );
    assert_eq!(won.len(), 1, "exactly one writer wins");
    assert!(codes.iter().all(|c| *c == Code::Aborted), "{codes:?}");
    // No lost update: the stored job is the winner's, one revision on.
    let stored = app.get::<pb::Job>(&t, &j.id).await;
    assert_eq!(stored.title, won[0].title);
    assert_eq!(stored.etag, won[0].etag);
    assert_eq!(app.audit_trail(&t, &j.id).await.len(), 2, "CREATE and one UPDATE");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_creates_with_one_request_id_make_one_row() {
    let app = TestApp::spawn().await;
    let t = Tenant::new();
    let calls = (0..20).map(|_| {
        let (mut c, token) = (app.jobs(), t.writer.clone());
        async move {
            c.create_job(authed(
                &token,
                CreateJobRequest { job: Some(job("once")), request_id: "one-rid".into() },
            ))
            .await
            .map(|r| r.into_inner())
        }
    });
    let results: Vec<pb::Job> = futures_util::future::join_all(calls)
        .await
        .into_iter()
        .map(|r| r.expect("every call answered OK"))
        .collect();
    assert!(results.iter().all(|r| *r == results[0]), "20 identical answers");
    let all = app.list_all::<pb::Job>(&t, crate::helpers::ListOpts::default()).await;
    println!("FAULT request-id-race: 20 calls, {} row(s), identical answers", all.len());
    assert_eq!(all.len(), 1, "one row");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_imports_leave_no_duplicate_live_job() {
    let app = TestApp::spawn().await;
    let t = Tenant::new();
    // Four streams over the same 3,000 URLs in different orders and halves.
    let rows = |from: usize, to: usize, rev: bool| {
        let mut v: Vec<pb::Job> = (from..to)
            .map(|i| pb::Job {
                title: format!("Overlap {i}"),
                company_name: "Acme".into(),
                job_url: format!("https://overlap.test/{i}"),
                ..Default::default()
            })
            .collect();
        if rev {
            v.reverse();
        }
        v
    };
    let streams = [rows(0, 3000, false), rows(0, 3000, true), rows(1000, 3000, false), rows(0, 2000, true)];
    let calls = streams.into_iter().map(|s| {
        let (mut c, token) = (app.jobs(), t.writer.clone());
        async move { c.import_jobs(authed(&token, tokio_stream::iter(s))).await.map(|r| r.into_inner()) }
    });
    let runs = futures_util::future::join_all(calls).await;
    let failed: Vec<String> =
        runs.iter().filter_map(|r| r.as_ref().err()).map(|e| format!("{e:?}")).collect();
    assert!(failed.is_empty(), "{failed:?}");
    let db = raw_db().await;
    db.query("SELECT set_config('app.tenant_id', $1, false)", &[&t.id.to_string()]).await.unwrap();
    let (live, distinct): (i64, i64) = {
        let r = db
            .query_one("SELECT count(*), count(DISTINCT job_url) FROM jobs WHERE delete_time IS NULL", &[])
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    println!("FAULT import-overlap: 4 streams, {live} live jobs, {distinct} distinct URLs");
    assert_eq!((live, distinct), (3000, 3000), "no duplicate live job");
    app.stop().await;
}
