//! ListJobs: AIP-160 filters end to end, ordering, and keyset pagination
//! through 10,000 rows.

use std::collections::HashSet;

use bi_data::pb::{self, BatchCreateJobsRequest, CreateJobRequest, ListJobsRequest};
use prost_types::{Struct, Timestamp};
use tonic::Code;

use crate::common::*;

fn attrs(v: serde_json::Value) -> Option<Struct> {
    bi_data::api::convert::structure_out(&bi_data::domain::value::Value::Json(v))
}

async fn create_all(app: &TestApp, t: &Tenant, jobs: Vec<pb::Job>) -> Vec<pb::Job> {
    let mut out = Vec::new();
    for chunk in jobs.chunks(1000) {
        let requests = chunk
            .iter()
            .map(|j| CreateJobRequest { job: Some(j.clone()), request_id: String::new() })
            .collect();
        out.extend(
            app.jobs()
                .batch_create_jobs(authed(
                    &t.writer,
                    BatchCreateJobsRequest { requests, request_id: String::new() },
                ))
                .await
                .unwrap()
                .into_inner()
                .jobs,
        );
    }
    out
}

async fn titles(app: &TestApp, t: &Tenant, filter: &str) -> Vec<String> {
    let r = app
        .jobs()
        .list_jobs(authed(
            &t.reader,
            ListJobsRequest {
                filter: filter.into(),
                order_by: "title".into(),
                page_size: 1000,
                ..Default::default()
            },
        ))
        .await
        .unwrap_or_else(|e| panic!("filter {filter:?}: {e:?}"))
        .into_inner();
    r.jobs.into_iter().map(|j| j.title).collect()
}

const INJECTION: &str = "Robert'); DROP TABLE jobs;--";

#[tokio::test]
async fn filters_every_operator() {
    let app = TestApp::spawn().await;
    let t = Tenant::new();
    let ts = |s: i64| Some(Timestamp { seconds: s, nanos: 0 });
    create_all(
        &app,
        &t,
        vec![
            pb::Job {
                title: "Rust Engineer".into(),
                salary_min: Some(120_000),
                remote: true,
                job_type: pb::JobType::Contract as i32,
                posting_time: ts(1_767_225_600), // 2026-01-01
                keywords: vec!["rust".into(), "grpc".into()],
                attributes: attrs(serde_json::json!({"visa": true, "level": "senior", "team_size": 8})),
                ..job("")
            },
            pb::Job {
                title: "Data Engineer".into(),
                salary_min: Some(90_000),
                job_type: pb::JobType::FullTime as i32,
                posting_time: ts(1_735_689_600), // 2025-01-01
                keywords: vec!["python".into()],
                attributes: attrs(serde_json::json!({"level": "mid", "team_size": 3})),
                ..job("")
            },
            pb::Job { title: "Product Manager".into(), remote: true, ..job("") },
            pb::Job { title: INJECTION.into(), company_name: "x\" OR 1=1 --".into(), ..job("") },
        ],
    )
    .await;
    let cases: &[(&str, &[&str])] = &[
        (r#"title = "Rust Engineer""#, &["Rust Engineer"]),
        (r#"title = "*engineer*""#, &["Data Engineer", "Rust Engineer"]),
        (r#"title = "Rust*""#, &["Rust Engineer"]),
        (r#"title != "Rust Engineer" AND title != "Product Manager""#, &["Data Engineer", INJECTION]),
        ("salary_min > 90000", &["Rust Engineer"]),
        ("salary_min >= 90000", &["Data Engineer", "Rust Engineer"]),
        ("salary_min < 120000", &["Data Engineer"]),
        ("salary_min <= 120000", &["Data Engineer", "Rust Engineer"]),
        ("salary_min = null", &["Product Manager", INJECTION]),
        ("remote = true", &["Product Manager", "Rust Engineer"]),
        ("NOT remote = true", &["Data Engineer", INJECTION]),
        ("-remote = true", &["Data Engineer", INJECTION]),
        ("job_type = CONTRACT", &["Rust Engineer"]),
        ("job_type = JOB_TYPE_FULL_TIME", &["Data Engineer"]),
        (r#"posting_time > "2025-06-01T00:00:00Z""#, &["Rust Engineer"]),
        (r#"posting_time <= "2025-01-01T00:00:00Z""#, &["Data Engineer"]),
        (r#"keywords:"rust""#, &["Rust Engineer"]),
        ("keywords:python", &["Data Engineer"]),
        ("attributes:visa", &["Rust Engineer"]),
        (r#"attributes.level = "mid""#, &["Data Engineer"]),
        ("attributes.team_size > 5", &["Rust Engineer"]),
        ("remote = true AND salary_min > 0", &["Rust Engineer"]),
        ("job_type = CONTRACT OR job_type = FULL_TIME", &["Data Engineer", "Rust Engineer"]),
        ("(remote = true OR salary_min > 100000) AND NOT title = \"Product*\"", &["Rust Engineer"]),
        (
            "status = DISCOVERED AND salary_currency = \"USD\"",
            &["Data Engineer", "Product Manager", "Rust Engineer", INJECTION],
        ),
        // Injection strings are values: stored and matched literally.
        (r#"title = "Robert'); DROP TABLE jobs;--""#, &[INJECTION]),
        (r#"company_name = "x\" OR 1=1 --""#, &[INJECTION]),
        (r#"title = "' OR '1'='1""#, &[]),
    ];
    for (filter, want) in cases {
        let mut want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
        want.sort();
        let mut got = titles(&app, &t, filter).await;
        got.sort();
        assert_eq!(got, want, "filter {filter}");
    }
    // The table is still there, with every row.
    assert_eq!(titles(&app, &t, "").await.len(), 4);

    // Bad input: INVALID_ARGUMENT naming the position or the field.
    let bad: &[(&str, &str)] = &[
        ("title = ", "position"),
        ("title == \"x\"", "position"),
        ("(remote = true", "position"),
        ("title = \"unterminated", "position"),
        ("nope = 1", "nope"),
        ("salary_min = \"abc\"", "salary_min"),
        ("job_type = PERMANENT", "job_type"),
        ("posting_time > \"yesterday\"", "posting_time"),
        ("keywords = \"rust\"", "keywords"),
        ("title = \"x\"; DROP TABLE jobs", "position"),
        ("title = \"nul\0\"", "filter"),
    ];
    for (filter, needle) in bad {
        let e = app
            .jobs()
            .list_jobs(authed(
                &t.reader,
                ListJobsRequest { filter: filter.to_string(), ..Default::default() },
            ))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{filter}");
        assert!(e.message().contains(needle), "{filter}: {}", e.message());
        assert_eq!(violations(&e), ["filter"], "{filter}");
    }
    for order in ["nope", "title sideways", "description", "title, title"] {
        let e = app
            .jobs()
            .list_jobs(authed(&t.reader, ListJobsRequest { order_by: order.into(), ..Default::default() }))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{order}");
    }
    app.stop().await;
}

fn synthetic(i: usize) -> pb::Job {
    pb::Job {
        title: format!("P{i:05}"),
        salary_min: Some(0),
        // Many ties and some NULLs, to exercise the id tiebreaker and NULL ordering.
        salary_max: (!i.is_multiple_of(7)).then_some(((i * 37) % 50) as i64 * 100),
        remote: i.is_multiple_of(3),
        posting_time: (!i.is_multiple_of(5))
            .then_some(Timestamp { seconds: 1_700_000_000 + (i % 97) as i64 * 3600, nanos: 0 }),
        ..job("")
    }
}

async fn page_through(
    app: &TestApp,
    t: &Tenant,
    filter: &str,
    order_by: &str,
    page_size: i32,
) -> Vec<pb::Job> {
    let mut c = app.jobs();
    let mut out = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let r = c
            .list_jobs(authed(
                &t.reader,
                ListJobsRequest {
                    filter: filter.into(),
                    order_by: order_by.into(),
                    page_size,
                    page_token: token.clone(),
                    ..Default::default()
                },
            ))
            .await
            .unwrap()
            .into_inner();
        assert!(r.jobs.len() <= page_size as usize);
        out.extend(r.jobs);
        pages += 1;
        assert!(pages < 1000, "pagination does not terminate");
        if r.next_page_token.is_empty() {
            return out;
        }
        token = r.next_page_token;
    }
}

#[tokio::test]
async fn pages_through_ten_thousand_rows_exactly_once() {
    let app = TestApp::spawn().await;
    let t = Tenant::new();
    let n = 10_000;
    let created = create_all(&app, &t, (0..n).map(synthetic).collect()).await;
    assert_eq!(created.len(), n);

    let filter = "remote = true OR salary_max >= 2500";
    let expected: HashSet<String> = created
        .iter()
        .filter(|j| j.remote || j.salary_max.is_some_and(|s| s >= 2500))
        .map(|j| j.id.clone())
        .collect();
    assert!(expected.len() > 4000 && expected.len() < n);

    // Nullable key, descending (NULLs first), then title.
    let rows = page_through(&app, &t, filter, "salary_max desc, title", 333).await;
    let ids: Vec<String> = rows.iter().map(|j| j.id.clone()).collect();
    assert_eq!(ids.len(), expected.len(), "every row once");
    assert_eq!(ids.iter().cloned().collect::<HashSet<_>>(), expected);
    let key = |j: &pb::Job| (std::cmp::Reverse(j.salary_max.map_or(i64::MAX, |s| s)), j.title.clone());
    assert!(rows.windows(2).all(|w| key(&w[0]) <= key(&w[1])), "order salary_max desc, title");

    // Nullable key ascending (NULLs last), ties broken by id.
    let rows = page_through(&app, &t, filter, "posting_time", 500).await;
    assert_eq!(rows.iter().map(|j| j.id.clone()).collect::<HashSet<_>>(), expected);
    assert_eq!(rows.len(), expected.len());
    let pt = |j: &pb::Job| j.posting_time.map_or(i64::MAX, |t| t.seconds);
    assert!(rows.windows(2).all(|w| pt(&w[0]) <= pt(&w[1])));

    // Nullable key descending (NULLs first): pages continue by row comparison.
    let rows = page_through(&app, &t, filter, "posting_time desc", 400).await;
    assert_eq!(rows.iter().map(|j| j.id.clone()).collect::<HashSet<_>>(), expected);
    assert_eq!(rows.len(), expected.len());
    let pt_desc = |j: &pb::Job| std::cmp::Reverse(j.posting_time.map_or(i64::MAX, |t| t.seconds));
    assert!(rows.windows(2).all(|w| pt_desc(&w[0]) <= pt_desc(&w[1])));

    // Default order (create_time desc), no filter, max page size.
    let all = page_through(&app, &t, "", "", 1000).await;
    assert_eq!(all.len(), n);
    assert_eq!(all.iter().map(|j| j.id.clone()).collect::<HashSet<_>>().len(), n);

    // Count is exact.
    let r = app
        .jobs()
        .list_jobs(authed(
            &t.reader,
            ListJobsRequest { filter: filter.into(), count: true, page_size: 1, ..Default::default() },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.total_size as usize, expected.len());

    // A token is bound to its filter and order.
    let token = r.next_page_token;
    for (f, o) in [("remote = false", ""), (filter, "title")] {
        let e = app
            .jobs()
            .list_jobs(authed(
                &t.reader,
                ListJobsRequest {
                    filter: f.into(),
                    order_by: o.into(),
                    page_token: token.clone(),
                    ..Default::default()
                },
            ))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{f} / {o}");
    }
    // Same filter written differently is the same filter.
    app.jobs()
        .list_jobs(authed(
            &t.reader,
            ListJobsRequest {
                filter: "remote=true   OR salary_max>=2500".into(),
                page_token: token.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    // Tampered tokens and bad page sizes.
    let e = app
        .jobs()
        .list_jobs(authed(&t.reader, ListJobsRequest { page_token: "garbage!".into(), ..Default::default() }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = app
        .jobs()
        .list_jobs(authed(&t.reader, ListJobsRequest { page_size: -1, ..Default::default() }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let r = app.jobs().list_jobs(authed(&t.reader, ListJobsRequest::default())).await.unwrap().into_inner();
    assert_eq!(r.jobs.len(), 50);
    let r = app
        .jobs()
        .list_jobs(authed(&t.reader, ListJobsRequest { page_size: 5000, ..Default::default() }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.jobs.len(), 1000);
    app.stop().await;
}
