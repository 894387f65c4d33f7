//! Jobs at scale: ImportJobs, SearchJobs, ExportJobs, applications and
//! employer responses.

use std::{collections::HashSet, time::Duration};

use bi_data::pb::{
    self, CreateApplicationRequest, CreateEmployerResponseRequest, CreateJobRequest, DeleteJobRequest,
    ExportJobsRequest, GetApplicationRequest, GetIngestRunRequest, GetJobRequest, ListApplicationsRequest,
    ListEmployerResponsesRequest, ListIngestRunsRequest, ListJobsRequest, SearchJobsRequest,
    UndeleteJobRequest, UpdateApplicationRequest,
};
use prost_types::{FieldMask, Timestamp};
use tokio_stream::StreamExt;
use tonic::Code;

use crate::common::*;

fn posting(i: usize, url_prefix: &str) -> pb::Job {
    pb::Job {
        title: format!("Engineer {i}"),
        company_name: format!("Company {}", i % 10),
        job_url: format!("{url_prefix}/{i}"),
        salary_min: Some(1000 * i as i64),
        source_site: "scraper".into(),
        keywords: vec![format!("k{}", i % 3)],
        ..Default::default()
    }
}

async fn import(app: &TestApp, token: &str, jobs: Vec<pb::Job>) -> pb::IngestRun {
    app.jobs()
        .import_jobs(authed(token, tokio_stream::iter(jobs)))
        .await
        .unwrap()
        .into_inner()
        .ingest_run
        .unwrap()
}

#[tokio::test]
async fn import_mixed_stream_counts_values_and_errors() {
    let app = TestApp::spawn().await;
    let t = Tenant::new();
    let mut c = app.jobs();
    // An existing job that the import will update.
    let existing = c
        .create_job(authed(
            &t.writer,
            CreateJobRequest {
                job: Some(pb::Job {
                    job_url: "https://x.test/0".into(),
                    status: pb::JobStatus::Applied as i32,
                    ..job("Old title")
                }),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let mut stream: Vec<pb::Job> = (0..5000).map(|i| posting(i, "https://x.test")).collect();
    // Bad rows at known positions.
    stream[7].title.clear(); // missing title
    stream[100].salary_max = Some(1); // salary_min 100000 > salary_max
    stream[2500].job_type = 42; // unknown enum
    stream[4999].title = "t".repeat(300); // oversize field
    // A job_url repeated within the stream: the later row wins.
    stream[3000].job_url = "https://x.test/1".into();
    stream[3000].title = "Engineer 1 (revised)".into();
    let run = import(&app, &t.writer, stream).await;
    assert_eq!(run.received, 5000);
    assert_eq!(run.failed, 4);
    assert_eq!(run.inserted, 5000 - 4 - 2); // row 0 updates `existing`, row 3000 supersedes row 1
    assert_eq!(run.updated, 2);
    assert_eq!(run.inserted + run.updated + run.failed, run.received);
    assert!(run.end_time.is_some() && run.start_time.is_some());
    assert_eq!(run.source_site, "scraper");
    let idx: Vec<i64> = run.errors.iter().map(|e| e.index).collect();
    assert_eq!(idx, [7, 100, 2500, 4999]);
    assert!(run.errors[0].reason.contains("title"), "{:?}", run.errors[0]);
    assert!(run.errors[1].reason.contains("salary"), "{:?}", run.errors[1]);
    assert!(run.errors[2].reason.contains("job_type"), "{:?}", run.errors[2]);
    assert_eq!(run.errors[3].job_url, "https://x.test/4999");

    // Stored values.
    let all = c
        .list_jobs(authed(&t.reader, ListJobsRequest { count: true, page_size: 1, ..Default::default() }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.total_size, 4995);
    let updated =
        c.get_job(authed(&t.reader, GetJobRequest { id: existing.id.clone() })).await.unwrap().into_inner();
    assert_eq!(updated.title, "Engineer 0");
    assert_eq!(updated.company_name, "Company 0");
    assert_eq!(updated.salary_min, Some(0));
    assert_eq!(updated.status, pb::JobStatus::Applied as i32, "import keeps the pipeline status");
    let one = c
        .list_jobs(authed(
            &t.reader,
            ListJobsRequest { filter: "job_url = \"https://x.test/1\"".into(), ..Default::default() },
        ))
        .await
        .unwrap()
        .into_inner()
        .jobs;
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].title, "Engineer 1 (revised)");
    let j42 = c
        .list_jobs(authed(
            &t.reader,
            ListJobsRequest { filter: "job_url = \"https://x.test/42\"".into(), ..Default::default() },
        ))
        .await
        .unwrap()
        .into_inner()
        .jobs;
    assert_eq!(j42[0].salary_min, Some(42_000));
    assert_eq!(j42[0].keywords, ["k0"]);
    assert_eq!(j42[0].status, pb::JobStatus::Discovered as i32);

    // The run is recorded and audited once.
    let got = c
        .get_ingest_run(authed(&t.reader, GetIngestRunRequest { id: run.id.clone() }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.received, 5000);
    assert_eq!(got.errors.len(), 4);
    let runs =
        c.list_ingest_runs(authed(&t.reader, ListIngestRunsRequest::default())).await.unwrap().into_inner();
    assert_eq!(runs.ingest_runs.len(), 1);
    let events = app
        .audit()
        .list_audit_events(authed(
            &t.admin,
            pb::ListAuditEventsRequest {
                filter: "action = IMPORT".into(),
                count: true,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(events.total_size, 1);
    assert_eq!(events.audit_events[0].entity_id, run.id);
    app.stop().await;
}

#[tokio::test]
async fn reimport_counts_unchanged_rows_and_tenants_stay_separate() {
    // Per job_url, the row's (update_time, revision), read directly.
    async fn revisions(t: &Tenant) -> Vec<(String, i64)> {
        let db = raw_db().await;
        db.query("SELECT set_config('app.tenant_id', $1, false)", &[&t.id.to_string()]).await.unwrap();
        db.query("SELECT job_url, revision FROM jobs ORDER BY job_url", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect()
    }
    let app = TestApp::spawn().await;
    let (a, b) = (Tenant::new(), Tenant::new());
    let rows: Vec<pb::Job> = (0..3000).map(|i| posting(i, "https://same.test")).collect();
    // Two tenants import the same job_urls at the same time.
    let (ra, rb) = tokio::join!(import(&app, &a.writer, rows.clone()), import(&app, &b.writer, rows.clone()));
    assert_eq!((ra.inserted, ra.updated, ra.failed), (3000, 0, 0));
    assert_eq!((rb.inserted, rb.updated, rb.failed), (3000, 0, 0));
    // Same stream again: all unchanged (nothing rewritten), no duplicates.
    let before = revisions(&a).await;
    let again = import(&app, &a.writer, rows.clone()).await;
    assert_eq!((again.inserted, again.updated, again.unchanged, again.failed), (0, 0, 3000, 0));
    assert_eq!(revisions(&a).await, before, "an identical row is not rewritten");
    for t in [&a, &b] {
        let n = app
            .jobs()
            .list_jobs(authed(&t.reader, ListJobsRequest { count: true, page_size: 1, ..Default::default() }))
            .await
            .unwrap()
            .into_inner()
            .total_size;
        assert_eq!(n, 3000);
    }
    // Changed rows are rewritten; b's copies are untouched.
    let mut changed = rows.clone();
    changed[5].title = "Changed".into();
    let r = import(&app, &a.writer, changed).await;
    assert_eq!((r.inserted, r.updated, r.unchanged), (0, 1, 2999));
    let find = |t: &Tenant| {
        let t = t.clone();
        let mut c = app.jobs();
        async move {
            c.list_jobs(authed(
                &t.reader,
                ListJobsRequest { filter: "job_url = \"https://same.test/5\"".into(), ..Default::default() },
            ))
            .await
            .unwrap()
            .into_inner()
            .jobs
            .remove(0)
        }
    };
    assert_eq!(find(&a).await.title, "Changed");
    assert_eq!(find(&b).await.title, "Engineer 5");
    app.stop().await;
}

#[tokio::test]
async fn search_ranks_filters_and_pages() {
    let app = TestApp::spawn().await;
    let t = Tenant::new();
    let mk = |title: &str, description: &str, remote: bool| pb::Job {
        title: title.into(),
        description: description.into(),
        remote,
        ..job("")
    };
    let mut rows = vec![
        mk("Rust Engineer", "Build services.", true),
        mk("Office Manager", "We also use Rust for tooling, engineer friendly.", true),
        mk("Senior Rust Engineer", "Lead the platform team.", false),
        mk("Python Developer", "Data pipelines.", true),
    ];
    for i in 0..60 {
        rows.push(mk(&format!("Backend engineer {i}"), "Rust and PostgreSQL.", i % 2 == 0));
    }
    for j in &rows {
        app.jobs()
            .create_job(authed(
                &t.writer,
                CreateJobRequest { job: Some(j.clone()), request_id: String::new() },
            ))
            .await
            .unwrap();
    }
    let search = |query: &str, filter: &str, page_size: i32, token: String| {
        let mut c = app.jobs();
        let req =
            SearchJobsRequest { query: query.into(), filter: filter.into(), page_size, page_token: token };
        let tok = t.reader.clone();
        async move { c.search_jobs(authed(&tok, req)).await }
    };
    let r = search("rust engineer", "", 100, String::new()).await.unwrap().into_inner();
    assert!(!r.fuzzy);
    let titles: Vec<&str> = r.jobs.iter().map(|j| j.title.as_str()).collect();
    let pos =
        |t: &str| titles.iter().position(|x| *x == t).unwrap_or_else(|| panic!("{t} not in {titles:?}"));
    assert!(
        pos("Rust Engineer") < pos("Office Manager"),
        "title match ranks above description-only: {titles:?}"
    );
    assert!(r.scores.windows(2).all(|w| w[0] >= w[1]), "best first");
    assert!(!titles.contains(&"Python Developer"));
    // Websearch syntax: exclusion.
    let r = search("rust engineer -senior", "", 100, String::new()).await.unwrap().into_inner();
    assert!(r.jobs.iter().all(|j| !j.title.contains("Senior")));
    // Combined with a filter.
    let r = search("rust", "remote = false", 100, String::new()).await.unwrap().into_inner();
    assert!(r.jobs.iter().all(|j| !j.remote));
    assert!(r.jobs.iter().any(|j| j.title == "Senior Rust Engineer"));
    // Pagination by rank: every hit once.
    let full: HashSet<String> = search("rust", "", 100, String::new())
        .await
        .unwrap()
        .into_inner()
        .jobs
        .into_iter()
        .map(|j| j.id)
        .collect();
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let r = search("rust", "", 7, token).await.unwrap().into_inner();
        seen.extend(r.jobs.into_iter().map(|j| j.id));
        if r.next_page_token.is_empty() {
            break;
        }
        token = r.next_page_token;
    }
    assert_eq!(seen.len(), full.len());
    assert_eq!(seen.into_iter().collect::<HashSet<_>>(), full);
    // A token is bound to its query.
    let r = search("rust", "", 7, String::new()).await.unwrap().into_inner();
    let e = search("python", "", 7, r.next_page_token).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    // Typo-tolerant fallback.
    let r = search("Pyhton Develper", "", 10, String::new()).await.unwrap().into_inner();
    assert!(r.fuzzy);
    assert_eq!(r.jobs.first().map(|j| j.title.as_str()), Some("Python Developer"));
    // Bad input.
    assert_eq!(search("", "", 10, String::new()).await.unwrap_err().code(), Code::InvalidArgument);
    assert_eq!(
        search("rust", "nope = 1", 10, String::new()).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    // Injection in the query is just text.
    let r = search("'; DROP TABLE jobs; --", "", 10, String::new()).await.unwrap().into_inner();
    assert!(r.jobs.is_empty() || r.fuzzy);
    app.stop().await;
}

#[tokio::test]
async fn export_streams_everything_in_order_and_stops_when_cancelled() {
    let app = TestApp::spawn().await;
    let t = Tenant::new();
    let rows: Vec<pb::Job> = (0..20_000)
        .map(|i| pb::Job {
            posting_time: Some(Timestamp { seconds: 1_700_000_000 + (i as i64 * 7919) % 100_000, nanos: 0 }),
            ..posting(i, "https://export.test")
        })
        .collect();
    let run = import(&app, &t.writer, rows).await;
    assert_eq!(run.inserted, 20_000);
    let mut stream = app
        .jobs()
        .export_jobs(authed(
            &t.reader,
            ExportJobsRequest { order_by: "posting_time, job_url".into(), ..Default::default() },
        ))
        .await
        .unwrap()
        .into_inner();
    let mut got = Vec::new();
    while let Some(j) = stream.next().await {
        got.push(j.unwrap());
    }
    assert_eq!(got.len(), 20_000);
    assert_eq!(got.iter().map(|j| j.id.clone()).collect::<HashSet<_>>().len(), 20_000);
    let key = |j: &pb::Job| (j.posting_time.map(|t| t.seconds), j.job_url.clone());
    assert!(got.windows(2).all(|w| key(&w[0]) <= key(&w[1])), "export keeps the order");
    // Filtered export.
    let n = app
        .jobs()
        .export_jobs(authed(
            &t.reader,
            ExportJobsRequest { filter: "keywords:\"k1\"".into(), ..Default::default() },
        ))
        .await
        .unwrap()
        .into_inner()
        .fold(0, |n, j| n + usize::from(j.unwrap().keywords == ["k1"]))
        .await;
    assert_eq!(n, 6667);
    // Cancel after a few rows: no query of ours keeps running.
    let mut stream =
        app.jobs().export_jobs(authed(&t.reader, ExportJobsRequest::default())).await.unwrap().into_inner();
    for _ in 0..10 {
        stream.next().await.unwrap().unwrap();
    }
    drop(stream);
    let db = raw_db().await;
    assert!(
        no_active_query(&db, "%FROM jobs%", Duration::from_secs(5)).await,
        "export query still running after cancel"
    );
    // Bad filters fail the call itself.
    let e = app
        .jobs()
        .export_jobs(authed(&t.reader, ExportJobsRequest { filter: "nope = 1".into(), ..Default::default() }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    app.stop().await;
}

#[tokio::test]
async fn applications_and_employer_responses() {
    let app = TestApp::spawn().await;
    let (t, other) = (Tenant::new(), Tenant::new());
    let mut c = app.jobs();
    let new_job = |tok: &str, title: &str| {
        let mut c = app.jobs();
        let req = CreateJobRequest { job: Some(job(title)), request_id: String::new() };
        let tok = tok.to_owned();
        async move { c.create_job(authed(&tok, req)).await.unwrap().into_inner() }
    };
    let j = new_job(&t.writer, "Applied job").await;
    let foreign = new_job(&other.writer, "Other tenant's job").await;
    let app_msg = |job_id: &str| pb::Application {
        job_id: job_id.into(),
        cover_letter_version: "v2".into(),
        resume_version: "r7".into(),
        application_time: Some(Timestamp { seconds: 1_760_000_000, nanos: 0 }),
        credibility_rating: Some(8.5),
        exaggeration_level: Some(0.0),
        integrity_score: Some(97.0),
        notes: "referral".into(),
        ..Default::default()
    };
    let a = c
        .create_application(authed(
            &t.writer,
            CreateApplicationRequest { application: Some(app_msg(&j.id)), request_id: String::new() },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(a.status, pb::ApplicationStatus::Submitted as i32);
    assert_eq!(a.exaggeration_level, Some(0.0));
    assert_eq!(a.integrity_score, Some(97.0));
    let got = c
        .get_application(authed(&t.reader, GetApplicationRequest { id: a.id.clone() }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got, a);
    // Another tenant's job, or a missing one: FAILED_PRECONDITION.
    for job_id in [foreign.id.clone(), uuid::Uuid::new_v4().to_string()] {
        let e = c
            .create_application(authed(
                &t.writer,
                CreateApplicationRequest { application: Some(app_msg(&job_id)), request_id: String::new() },
            ))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
        assert_eq!(reason(&e), "REFERENCE_NOT_FOUND");
    }
    let e = c
        .create_application(authed(
            &t.writer,
            CreateApplicationRequest {
                application: Some(pb::Application::default()),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    // Another tenant cannot read it.
    let e = c
        .get_application(authed(&other.reader, GetApplicationRequest { id: a.id.clone() }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    // Update with a mask.
    let u = c
        .update_application(authed(
            &t.writer,
            UpdateApplicationRequest {
                application: Some(pb::Application {
                    id: a.id.clone(),
                    status: pb::ApplicationStatus::Interviewing as i32,
                    interview_time: Some(Timestamp { seconds: 1_761_000_000, nanos: 0 }),
                    etag: a.etag.clone(),
                    ..Default::default()
                }),
                update_mask: Some(FieldMask { paths: vec!["status".into(), "interview_time".into()] }),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(u.status, pb::ApplicationStatus::Interviewing as i32);
    assert_eq!(u.resume_version, "r7");
    // Moving it to another tenant's job is refused.
    let e = c
        .update_application(authed(
            &t.writer,
            UpdateApplicationRequest {
                application: Some(pb::Application {
                    id: a.id.clone(),
                    job_id: foreign.id.clone(),
                    ..Default::default()
                }),
                update_mask: Some(FieldMask { paths: vec!["job_id".into()] }),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    // List by job and status.
    let l = c
        .list_applications(authed(
            &t.reader,
            ListApplicationsRequest {
                filter: format!("job_id = \"{}\" AND status = INTERVIEWING", j.id),
                count: true,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(l.total_size, 1);
    // Employer responses.
    let r = c
        .create_employer_response(authed(
            &t.writer,
            CreateEmployerResponseRequest {
                employer_response: Some(pb::EmployerResponse {
                    application_id: a.id.clone(),
                    response_type: "interview_invite".into(),
                    subject_line: "Next steps".into(),
                    sender_email: "hr@acme.test".into(),
                    sentiment_score: Some(0.8),
                    requires_action: true,
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(r.requires_action);
    let e = c
        .create_employer_response(authed(
            &other.writer,
            CreateEmployerResponseRequest {
                employer_response: Some(pb::EmployerResponse {
                    application_id: a.id.clone(),
                    response_type: "rejection".into(),
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    let e = c
        .create_employer_response(authed(
            &t.writer,
            CreateEmployerResponseRequest {
                employer_response: Some(pb::EmployerResponse {
                    application_id: a.id.clone(),
                    response_type: "x".into(),
                    sentiment_score: Some(3.0),
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let l = c
        .list_employer_responses(authed(
            &t.reader,
            ListEmployerResponsesRequest {
                filter: format!("application_id = \"{}\"", a.id),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(l.employer_responses, vec![r]);
    // Deleting the job soft-deletes its applications; undeleting restores them.
    c.delete_job(authed(&t.writer, DeleteJobRequest { id: j.id.clone(), ..Default::default() }))
        .await
        .unwrap();
    let g = c
        .get_application(authed(&t.reader, GetApplicationRequest { id: a.id.clone() }))
        .await
        .unwrap()
        .into_inner();
    assert!(g.delete_time.is_some());
    let l = c
        .list_applications(authed(&t.reader, ListApplicationsRequest { count: true, ..Default::default() }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(l.total_size, 0);
    c.undelete_job(authed(&t.writer, UndeleteJobRequest { id: j.id.clone(), ..Default::default() }))
        .await
        .unwrap();
    let g = c
        .get_application(authed(&t.reader, GetApplicationRequest { id: a.id.clone() }))
        .await
        .unwrap()
        .into_inner();
    assert!(g.delete_time.is_none());
    app.stop().await;
}

#[tokio::test]
async fn python_client_imports_a_file() {
    use std::process::Command;
    let app = TestApp::spawn().await;
    let t = Tenant::new();
    let dir = std::env::temp_dir().join(format!("bi-data-py-{}", t.id));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("jobs.jsonl");
    let mut lines = String::new();
    for i in 0..3000 {
        let row = if i == 10 {
            serde_json::json!({"companyName": "No Title Inc"}) // bad: no title
        } else {
            serde_json::json!({"title": format!("Py {i}"), "companyName": "Snake Co", "jobUrl": format!("https://py.test/{i}"),
                               "keywords": ["python"], "attributes": {"n": i}})
        };
        lines.push_str(&row.to_string());
        lines.push('\n');
    }
    std::fs::write(&file, lines).unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/python/import_jobs.py");
    let addr = app.addr.to_string();
    let token = t.writer.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(crate::python_client::client_python())
            .args([script, "--addr", &addr, "--token", &token, "--source-site", "python"])
            .arg(&file)
            .output()
            .expect("the client venv's python runs")
    })
    .await
    .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let run: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(run["received"], "3000");
    assert_eq!(run["inserted"], "2999");
    assert_eq!(run["failed"], "1");
    assert_eq!(run["sourceSite"], "python");
    assert_eq!(run["errors"][0]["index"], "10");
    let l = app
        .jobs()
        .list_jobs(authed(
            &t.reader,
            ListJobsRequest { filter: "attributes.n = 42".into(), ..Default::default() },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(l.jobs.len(), 1);
    assert_eq!(l.jobs[0].title, "Py 42");
    app.stop().await;
}

/// SearchJobs ranks by field class (title, then company and keywords, then
/// anywhere), newest first within a class, and pages through every hit
/// exactly once in that order, also when a class's rows lie outside the
/// newest rows the server reads first (4,000) and come from the index.
#[tokio::test]
async fn search_by_field_class_pages_exactly_beyond_the_first_rows_read() {
    let app = TestApp::spawn().await;
    let t = Tenant::new();
    // `n` jobs titled `title i`, with these keywords and description.
    let group = |n: usize, title: &str, keywords: &[&str], description: &str, slug: &str| {
        (0..n)
            .map(|i| pb::Job {
                title: format!("{title} {i}"),
                keywords: keywords.iter().map(|k| k.to_string()).collect(),
                description: description.into(),
                job_url: format!("https://z.example/{slug}/{i}"),
                ..job("")
            })
            .collect::<Vec<_>>()
    };
    // The oldest rows: 30 with both words in the title, 25 with them in the
    // keywords only, and 20 with one word in the title and one elsewhere.
    let old = [
        group(30, "Zebra Wrangler", &[], "Care for animals.", "t"),
        group(25, "Keeper", &["zebra", "wrangler"], "Care for animals.", "k"),
        group(20, "Zebra Keeper", &[], "A wrangler role.", "m"),
    ]
    .concat();
    assert_eq!(import(&app, &t.writer, old).await.inserted, 75);
    // Then 4,500 newer rows with the words in the description only, and
    // 200 that match nothing.
    let new = [
        group(4500, "Clerk", &[], "A zebra wrangler helps here.", "d"),
        group(200, "Cook", &[], "Kitchen work.", "n"),
    ]
    .concat();
    assert_eq!(import(&app, &t.writer, new).await.inserted, 4700);

    // The expected order, from the jobs themselves.
    let mut all = Vec::new();
    let mut token = String::new();
    loop {
        let r = app
            .jobs()
            .list_jobs(authed(
                &t.reader,
                ListJobsRequest { page_size: 1000, page_token: token, ..Default::default() },
            ))
            .await
            .unwrap()
            .into_inner();
        all.extend(r.jobs);
        if r.next_page_token.is_empty() {
            break;
        }
        token = r.next_page_token;
    }
    assert_eq!(all.len(), 4775);
    let class = |j: &pb::Job| {
        if j.title.starts_with("Zebra Wrangler") {
            Some(0)
        } else if j.title.starts_with("Keeper") || j.title.starts_with("Zebra Keeper") {
            // Both words among title, company and keywords? Only the keyword rows.
            if j.keywords.is_empty() { Some(2) } else { Some(1) }
        } else if j.title.starts_with("Clerk") {
            Some(2)
        } else {
            None
        }
    };
    let mut expected: Vec<(usize, String)> =
        all.iter().filter_map(|j| class(j).map(|c| (c, j.id.clone()))).collect();
    expected.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
    assert_eq!(expected.len(), 4575);

    let mut seen: Vec<String> = Vec::new();
    let mut scores: Vec<f64> = Vec::new();
    let mut token = String::new();
    for _ in 0..100 {
        let r = app
            .jobs()
            .search_jobs(authed(
                &t.reader,
                SearchJobsRequest {
                    query: "zebra wrangler".into(),
                    page_size: 100,
                    page_token: token,
                    ..Default::default()
                },
            ))
            .await
            .unwrap()
            .into_inner();
        assert!(!r.fuzzy);
        seen.extend(r.jobs.into_iter().map(|j| j.id));
        scores.extend(r.scores);
        if r.next_page_token.is_empty() {
            break;
        }
        token = r.next_page_token;
    }
    let want: Vec<String> = expected.iter().map(|(_, id)| id.clone()).collect();
    assert_eq!(seen.len(), want.len(), "every hit once");
    assert!(seen == want, "class order, newest first within a class");
    assert_eq!(scores[0], 1.0);
    assert_eq!(scores[30], 0.4);
    assert_eq!(scores[55], 0.2);
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "best first");

    // A filter applies within every class.
    let r = app
        .jobs()
        .search_jobs(authed(
            &t.reader,
            SearchJobsRequest {
                query: "zebra wrangler".into(),
                filter: r#"title = "Keeper 3" OR title = "Clerk 7""#.into(),
                page_size: 10,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let titles: Vec<&str> = r.jobs.iter().map(|j| j.title.as_str()).collect();
    assert_eq!(titles, ["Keeper 3", "Clerk 7"]);
}

/// Batches of one import are applied two at a time; a key that appears in
/// two batches still ends with its last row, counted as an update.
#[tokio::test]
async fn an_import_key_repeated_across_batches_keeps_its_last_row() {
    let app = TestApp::spawn().await;
    let t = Tenant::new();
    let mut rows: Vec<pb::Job> = (0..4100).map(|i| posting(i, "https://x.example/rep")).collect();
    rows[10].title = "first".into();
    rows[3000] = pb::Job { title: "last".into(), ..rows[10].clone() };
    let run = import(&app, &t.writer, rows).await;
    assert_eq!((run.received, run.inserted, run.updated, run.failed), (4100, 4099, 1, 0), "{run:?}");
    let r = app
        .jobs()
        .list_jobs(authed(
            &t.reader,
            ListJobsRequest {
                filter: r#"job_url = "https://x.example/rep/10""#.into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.jobs.iter().map(|j| j.title.as_str()).collect::<Vec<_>>(), ["last"]);
    let stored = app
        .jobs()
        .get_ingest_run(authed(&t.reader, GetIngestRunRequest { id: run.id.clone() }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((stored.received, stored.inserted, stored.updated), (4100, 4099, 1));
}

/// A run whose batches found no existing row stops probing for unchanged
/// rows before the merge; rows that then turn out identical are still
/// counted `unchanged` and not rewritten (the merge skips them), and a
/// changed one is still an update.
#[tokio::test]
async fn identical_rows_after_new_batches_are_unchanged_and_not_rewritten() {
    let app = TestApp::spawn().await;
    let t = Tenant::new();
    let old: Vec<pb::Job> = (0..2000).map(|i| posting(i, "https://x.example/old")).collect();
    let first = import(&app, &t.writer, old.clone()).await;
    assert_eq!(first.inserted, 2000, "{first:?}");
    let old_seven = || async {
        let filter = r#"job_url = "https://x.example/old/7""#.into();
        let req = authed(&t.reader, ListJobsRequest { filter, ..Default::default() });
        app.jobs().list_jobs(req).await.unwrap().into_inner().jobs
    };
    let before = old_seven().await;
    // Two batches of new rows, then the 2,000 old ones again, one of them changed.
    let mut again: Vec<pb::Job> = (0..4000).map(|i| posting(i, "https://x.example/new")).collect();
    again.extend(old.iter().cloned());
    again[4000 + 9].title = "changed".into();
    let run = import(&app, &t.writer, again).await;
    assert_eq!(
        (run.received, run.inserted, run.updated, run.unchanged, run.failed),
        (6000, 4000, 1, 1999, 0),
        "{run:?}"
    );
    assert_eq!(old_seven().await, before, "an identical row keeps its revision, etag and update_time");
}

/// V10 wrote `bi_prefixed` out inside `bi_job_vector`; the vectors must be
/// exactly V7's (the stored search vectors were computed with it). Titles,
/// companies, keywords and descriptions, empty and NULL ones included,
/// compared in PostgreSQL against the V7 expression.
#[tokio::test]
async fn the_job_vector_is_the_one_of_v7() {
    let db = raw_db().await;
    let titles = ["Senior Rust Engineer", "", "the a of", "C++ / Go: développeur", "Data  Data data"];
    let companies = ["Acme Corp.", "", "Über GmbH"];
    let keywords: [&[&str]; 3] = [&[], &["kubernetes", "SQL"], &["the", "rust-lang", "Rust"]];
    let long = "word ".repeat(600);
    let descriptions = ["", "Build pipelines; ship dashboards. Rust!", long.as_str()];
    let (mut t, mut c, mut k, mut d) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for ti in titles {
        for co in companies {
            for kw in keywords {
                for de in &descriptions {
                    t.push(Some(ti.to_owned()));
                    c.push((!co.is_empty()).then(|| co.to_owned()));
                    k.push(kw.join("\u{1}"));
                    d.push((!de.is_empty()).then(|| de.to_string()));
                }
            }
        }
    }
    t.push(None);
    c.push(None);
    k.push(String::new());
    d.push(None);
    let row = db
        .query_one(
            "WITH j AS (SELECT t, c, CASE WHEN k = '' THEN '{}'::text[] ELSE string_to_array(k, E'\\x01') END AS k, d \
             FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) AS u (t, c, k, d)), \
             v AS (SELECT j.*, bi_job_vector(t, c, k, d) AS now, \
               (SELECT h || setweight(to_tsvector('english', left(coalesce(d, ''), 2000)), 'C') \
                       || bi_prefixed(tv, 't:') || bi_prefixed(h, 'h:') \
                  FROM (SELECT tv, tv || setweight(to_tsvector('english', left(coalesce(c, ''), 1000)), 'B') \
                                  || setweight(to_tsvector('english', left(array_to_string(k, ' '), 10000)), 'B') AS h \
                          FROM (SELECT setweight(to_tsvector('english', left(coalesce(t, ''), 1000)), 'A') AS tv) a) b) AS v7 \
               FROM j) \
             SELECT count(*), count(*) FILTER (WHERE now IS DISTINCT FROM v7), \
                    (array_agg(t || ' / ' || coalesce(c, '-')) FILTER (WHERE now IS DISTINCT FROM v7))[1], \
                    count(*) FILTER (WHERE length(now) > 0) FROM v",
            &[&t, &c, &k, &d],
        )
        .await
        .expect("compare");
    let (total, differ, first, nonempty): (i64, i64, Option<String>, i64) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    assert_eq!(total, t.len() as i64);
    assert_eq!(differ, 0, "first job whose vector changed: {first:?}");
    assert!(nonempty > total / 2, "the corpus has words: {nonempty} of {total}");
}
