//! AnalyticsService against values computed here from the rows each test
//! inserted: aggregates and percentiles, trends (empty buckets, ratios,
//! moving averages, groups, time zones), the funnel and the pipeline
//! (including after events and transitions through the API), reports
//! parsed back with a CSV reader, cancellation, query statistics, and
//! analytics that reflect a write at once with the cache on.

use std::{collections::BTreeMap, time::Duration};

use bi_data::pb::{
    self, CampaignEventType as Ev, Entity, MetricFunction as F, OpportunityStatus as Os, ReportFormat,
    TrendBucket,
};
use futures_util::StreamExt;
use prost_types::{Timestamp, value::Kind};
use tonic::Code;

use crate::{common::*, helpers::ts};

const DAY: i64 = 86_400;
/// 2026-01-05T00:00:00Z, a Monday.
const T0: i64 = 1_767_571_200;

fn metric(function: F, field: &str) -> pb::Metric {
    pb::Metric { function: function as i32, field: field.into() }
}

fn num(v: &prost_types::Value) -> Option<f64> {
    match &v.kind {
        Some(Kind::NumberValue(n)) => Some(*n),
        _ => None,
    }
}

fn text(v: &prost_types::Value) -> String {
    match &v.kind {
        Some(Kind::StringValue(s)) => s.clone(),
        Some(Kind::BoolValue(b)) => b.to_string(),
        Some(Kind::NullValue(_)) | None => "null".into(),
        other => format!("{other:?}"),
    }
}

/// percentile_cont: linear interpolation between the closest ranks.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    let pos = p * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-6 * b.abs().max(1.0)
}

#[derive(Clone)]
struct Row {
    industry: &'static str,
    remote: bool,
    salary: Option<i64>,
    posting: i64,
}

/// 60 jobs over three industries, some without a salary, spread over the
/// first 10 days after T0 (none on day 3), plus one deleted job that must
/// never count.
async fn seed_jobs(app: &TestApp, t: &Tenant) -> Vec<Row> {
    let industries = ["fintech", "health", "retail"];
    let mut rows = Vec::new();
    let mut requests = Vec::new();
    for i in 0..60i64 {
        let day = [0, 1, 2, 4, 5, 6, 7, 8, 9][(i % 9) as usize];
        let r = Row {
            industry: industries[(i * 7 % 3) as usize],
            remote: i % 4 == 0,
            salary: (i % 10 != 3).then(|| 40_000 + (i * 7919) % 90_000),
            posting: T0 + day * DAY + (i % 5) * 3600,
        };
        requests.push(pb::CreateJobRequest {
            job: Some(pb::Job {
                title: format!("Job {i}"),
                company_name: "Acme".into(),
                industry: r.industry.into(),
                remote: r.remote,
                salary_max: r.salary,
                posting_time: ts(r.posting),
                ..Default::default()
            }),
            request_id: String::new(),
        });
        rows.push(r);
    }
    let mut jobs = app.jobs();
    jobs.batch_create_jobs(authed(
        &t.writer,
        pb::BatchCreateJobsRequest { requests, request_id: String::new() },
    ))
    .await
    .expect("batch create");
    let gone = jobs
        .create_job(authed(
            &t.writer,
            pb::CreateJobRequest {
                job: Some(pb::Job {
                    title: "Deleted".into(),
                    company_name: "Acme".into(),
                    industry: "fintech".into(),
                    salary_max: Some(10_000_000),
                    posting_time: ts(T0),
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await
        .expect("create")
        .into_inner();
    jobs.delete_job(authed(&t.writer, pb::DeleteJobRequest { id: gone.id, ..Default::default() }))
        .await
        .expect("delete");
    rows
}

async fn aggregate(
    app: &TestApp,
    t: &Tenant,
    entity: Entity,
    filter: &str,
    group_by: &[&str],
    metrics: Vec<pb::Metric>,
    limit: i32,
) -> Result<pb::AggregateMetricsResponse, tonic::Status> {
    let req = pb::AggregateMetricsRequest {
        entity: entity as i32,
        filter: filter.into(),
        group_by: group_by.iter().map(|s| (*s).to_owned()).collect(),
        metrics,
        limit,
    };
    app.analytics().aggregate_metrics(authed(&t.reader, req)).await.map(|r| r.into_inner())
}

fn all_metrics() -> Vec<pb::Metric> {
    vec![
        metric(F::Count, ""),
        metric(F::Count, "salary_max"),
        metric(F::Sum, "salary_max"),
        metric(F::Avg, "salary_max"),
        metric(F::Min, "salary_max"),
        metric(F::Max, "salary_max"),
        metric(F::P50, "salary_max"),
        metric(F::P90, "salary_max"),
        metric(F::P99, "salary_max"),
    ]
}

/// The values `all_metrics` must give over `rows`.
fn expected(rows: &[&Row]) -> Vec<f64> {
    let mut s: Vec<f64> = rows.iter().filter_map(|r| r.salary).map(|v| v as f64).collect();
    s.sort_by(f64::total_cmp);
    let sum: f64 = s.iter().sum();
    vec![
        rows.len() as f64,
        s.len() as f64,
        sum,
        sum / s.len() as f64,
        s[0],
        s[s.len() - 1],
        percentile(&s, 0.5),
        percentile(&s, 0.9),
        percentile(&s, 0.99),
    ]
}

fn assert_values(got: &pb::AggregateRow, want: &[f64], what: &str) {
    let got: Vec<f64> = got.values.iter().map(|v| num(v).expect("a number")).collect();
    assert_eq!(got.len(), want.len(), "{what}");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(close(*g, *w), "{what}: metric {i}: got {g}, want {w}");
    }
}

#[tokio::test]
async fn aggregates_and_percentiles_match_the_rows() {
    let app = TestApp::spawn().await;
    let t = Tenant::new();
    let rows = seed_jobs(&app, &t).await;

    // No group: one row over every live job.
    let all = aggregate(&app, &t, Entity::Jobs, "", &[], all_metrics(), 0).await.expect("aggregate");
    assert_eq!((all.rows.len(), all.total_groups, all.truncated), (1, 1, false));
    assert_values(&all.rows[0], &expected(&rows.iter().collect::<Vec<_>>()), "all jobs");

    // By industry.
    let by =
        aggregate(&app, &t, Entity::Jobs, "", &["industry"], all_metrics(), 0).await.expect("by industry");
    assert_eq!(by.total_groups, 3);
    for g in &by.rows {
        let ind = text(&g.group_values[0]);
        let mine: Vec<&Row> = rows.iter().filter(|r| r.industry == ind).collect();
        assert_values(g, &expected(&mine), &ind);
    }
    // Largest first by the first metric.
    let counts: Vec<f64> = by.rows.iter().map(|g| num(&g.values[0]).unwrap()).collect();
    assert!(counts.windows(2).all(|w| w[0] >= w[1]), "{counts:?}");

    // Two dimensions and a filter.
    let two =
        aggregate(&app, &t, Entity::Jobs, "salary_max >= 60000", &["industry", "remote"], all_metrics(), 0)
            .await
            .expect("two dimensions");
    let mut want: BTreeMap<(String, String), Vec<&Row>> = BTreeMap::new();
    for r in rows.iter().filter(|r| r.salary.is_some_and(|s| s >= 60_000)) {
        want.entry((r.industry.to_owned(), r.remote.to_string())).or_default().push(r);
    }
    assert_eq!(two.total_groups as usize, want.len());
    for g in &two.rows {
        let k = (text(&g.group_values[0]), text(&g.group_values[1]));
        assert!(matches!(g.group_values[1].kind, Some(Kind::BoolValue(_))), "remote is a bool");
        assert_values(g, &expected(&want[&k]), &format!("{k:?}"));
    }

    // The cap: the largest two groups, and the total says how many there were.
    let top =
        aggregate(&app, &t, Entity::Jobs, "", &["industry"], vec![metric(F::Count, "")], 2).await.unwrap();
    assert_eq!((top.rows.len(), top.total_groups, top.truncated), (2, 3, true));
    assert_eq!(text(&top.rows[0].group_values[0]), text(&by.rows[0].group_values[0]));

    // A group whose rows have no value of the field: null, not 0.
    let none =
        aggregate(&app, &t, Entity::Jobs, "salary_max = null", &[], vec![metric(F::Avg, "salary_max")], 0)
            .await
            .unwrap();
    assert!(matches!(none.rows[0].values[0].kind, Some(Kind::NullValue(_))), "{none:?}");

    // Another tenant sees nothing of it.
    let other = Tenant::new();
    let empty = aggregate(&app, &other, Entity::Jobs, "", &[], vec![metric(F::Count, "")], 0).await.unwrap();
    assert_eq!(num(&empty.rows[0].values[0]), Some(0.0));
}

#[tokio::test]
async fn undeclared_fields_and_bad_requests_are_refused_by_name() {
    let app = TestApp::spawn().await;
    let t = Tenant::new();
    // (entity, group_by, metrics, the field named, the message's words)
    type Case = (Entity, &'static [&'static str], Vec<pb::Metric>, &'static str, &'static str);
    let cases: Vec<Case> = vec![
        (
            Entity::Jobs,
            &[],
            vec![metric(F::Sum, "title")],
            "metrics[0].field",
            "'title' is no metric of jobs",
        ),
        (
            Entity::Jobs,
            &["description"],
            vec![metric(F::Count, "")],
            "group_by[0]",
            "'description' is no dimension",
        ),
        (Entity::Jobs, &["salary_max"], vec![metric(F::Count, "")], "group_by[0]", "is no dimension"),
        (Entity::Jobs, &[], vec![metric(F::Avg, "")], "metrics[0].field", "needs a field"),
        (Entity::Jobs, &[], vec![metric(F::Unspecified, "salary_max")], "metrics[0].function", "required"),
        (Entity::Jobs, &[], vec![], "metrics", "at least one"),
        (Entity::Unspecified, &[], vec![metric(F::Count, "")], "entity", "required"),
        (
            Entity::Companies,
            &[],
            vec![metric(F::Sum, "salary_max")],
            "metrics[0].field",
            "no metric of companies",
        ),
    ];
    for (entity, group_by, metrics, field, text) in cases {
        let e = aggregate(&app, &t, entity, "", group_by, metrics, 0).await.expect_err(field);
        assert_eq!(e.code(), Code::InvalidArgument, "{field}: {e:?}");
        assert_eq!(violations(&e), vec![field.to_owned()], "{e:?}");
        assert!(e.message().contains(text), "{field}: {}", e.message());
    }
    let e =
        aggregate(&app, &t, Entity::Jobs, "nope = 1", &[], vec![metric(F::Count, "")], 0).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = aggregate(&app, &t, Entity::Jobs, "", &[], vec![metric(F::Count, "")], -1).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    // Every entity answers with its own declared fields.
    for (entity, field, dim) in [
        (Entity::Companies, "confidence_score", "industry"),
        (Entity::Opportunities, "estimated_value", "status"),
        (Entity::Campaigns, "", "status"),
        (Entity::Applications, "integrity_score", "status"),
    ] {
        let f = if field.is_empty() { F::Count } else { F::P90 };
        aggregate(&app, &t, entity, "", &[dim], vec![metric(f, field)], 0).await.expect("declared fields");
    }
}

async fn trend(
    app: &TestApp,
    t: &Tenant,
    req: pb::GetTrendRequest,
) -> Result<pb::GetTrendResponse, tonic::Status> {
    app.analytics().get_trend(authed(&t.reader, req)).await.map(|r| r.into_inner())
}

fn day_trend(start: i64, days: i64) -> pb::GetTrendRequest {
    pb::GetTrendRequest {
        entity: Entity::Jobs as i32,
        time_field: "posting_time".into(),
        bucket: TrendBucket::Day as i32,
        start_time: ts(start),
        end_time: ts(start + days * DAY),
        ..Default::default()
    }
}

#[tokio::test]
async fn trends_have_every_bucket_ratios_averages_and_groups() {
    let app = TestApp::spawn().await;
    let t = Tenant::new();
    let rows = seed_jobs(&app, &t).await;
    // 12 days from T0 - 1 day: day -1 and day 3 and days 10.. are empty.
    let start = T0 - DAY;
    let got = trend(&app, &t, pb::GetTrendRequest { moving_average_window: 3, ..day_trend(start, 12) })
        .await
        .expect("trend");
    assert!(got.series.is_empty());
    assert_eq!(got.points.len(), 12);
    let want: Vec<f64> = (0..12)
        .map(|d| rows.iter().filter(|r| (r.posting - start).div_euclid(DAY) == d).count() as f64)
        .collect();
    let values: Vec<f64> = got.points.iter().map(|p| p.value).collect();
    assert_eq!(values, want);
    assert_eq!(values[0], 0.0);
    assert_eq!(values[4], 0.0, "day 3 is empty and present");
    for (i, p) in got.points.iter().enumerate() {
        assert_eq!(p.bucket_start.as_ref().unwrap().seconds, start + i as i64 * DAY);
        let lo = i.saturating_sub(2);
        let avg = want[lo..=i].iter().sum::<f64>() / (i - lo + 1) as f64;
        assert!(close(p.moving_average, avg), "bucket {i}: {} vs {avg}", p.moving_average);
        let ratio = match i {
            0 => None,
            _ if want[i - 1] == 0.0 && want[i] == 0.0 => Some(0.0),
            _ if want[i - 1] == 0.0 => None,
            _ => Some((want[i] - want[i - 1]) / want[i - 1]),
        };
        assert_eq!(p.change_ratio.is_some(), ratio.is_some(), "bucket {i}");
        if let (Some(g), Some(w)) = (p.change_ratio, ratio) {
            assert!(close(g, w), "bucket {i}: {g} vs {w}");
        }
    }

    // A metric, and one series per group.
    let sums = trend(
        &app,
        &t,
        pb::GetTrendRequest {
            metric: Some(metric(F::Sum, "salary_max")),
            group_by: "industry".into(),
            ..day_trend(T0, 10)
        },
    )
    .await
    .expect("grouped trend");
    assert_eq!(sums.series.len(), 3);
    for s in &sums.series {
        let ind = text(s.group_value.as_ref().unwrap());
        assert_eq!(s.points.len(), 10);
        for (d, p) in s.points.iter().enumerate() {
            let want: i64 = rows
                .iter()
                .filter(|r| r.industry == ind && (r.posting - T0).div_euclid(DAY) == d as i64)
                .filter_map(|r| r.salary)
                .sum();
            assert!(close(p.value, want as f64), "{ind} day {d}: {} vs {want}", p.value);
        }
    }
    let totals: Vec<f64> = sums.series.iter().map(|s| s.points.iter().map(|p| p.value).sum()).collect();
    assert!(totals.windows(2).all(|w| w[0] >= w[1]), "largest series first: {totals:?}");

    // Weeks start on Monday; months on the 1st.
    let weeks = trend(
        &app,
        &t,
        pb::GetTrendRequest { bucket: TrendBucket::Week as i32, ..day_trend(T0 + 3 * DAY, 14) },
    )
    .await
    .unwrap();
    assert_eq!(weeks.points[0].bucket_start.as_ref().unwrap().seconds, T0);
    assert_eq!(
        weeks.points.iter().map(|p| p.value).sum::<f64>(),
        60.0 - rows.iter().filter(|r| r.posting < T0 + 3 * DAY).count() as f64
    );
    let months = trend(
        &app,
        &t,
        pb::GetTrendRequest { bucket: TrendBucket::Month as i32, ..day_trend(T0 - 40 * DAY, 100) },
    )
    .await
    .unwrap();
    assert_eq!(months.points.len(), 5); // Nov, Dec, Jan, Feb, Mar
    assert_eq!(months.points[2].value, 60.0);
    assert_eq!(months.points[2].bucket_start.as_ref().unwrap().seconds, 1_767_225_600); // 2026-01-01

    // A caller's time zone: Berlin days start at 23:00 UTC in winter and
    // 22:00 UTC after the switch to summer time (2026-03-29).
    let berlin = trend(
        &app,
        &t,
        pb::GetTrendRequest { time_zone: "Europe/Berlin".into(), ..day_trend(1_774_742_400 - 2 * DAY, 3) },
    )
    .await
    .expect("time zone");
    let starts: Vec<i64> = berlin.points.iter().map(|p| p.bucket_start.as_ref().unwrap().seconds).collect();
    assert_eq!(starts.len(), 4);
    assert_eq!(starts[0] % DAY, 23 * 3600);
    assert_eq!(starts[1] - starts[0], DAY, "an ordinary day");
    assert_eq!(starts[2] - starts[1], DAY, "an ordinary day");
    assert_eq!(starts[3] - starts[2], DAY - 3600, "the spring-forward day has 23 hours");
    assert_eq!(starts[3] % DAY, 22 * 3600, "summer time: local midnight is 22:00 UTC");
    // Zone names match without regard to case, as AT TIME ZONE's do.
    let lower = trend(
        &app,
        &t,
        pb::GetTrendRequest { time_zone: "europe/berlin".into(), ..day_trend(1_774_742_400 - 2 * DAY, 3) },
    )
    .await
    .expect("a lowercase zone name");
    assert_eq!(lower.points, berlin.points);
}

#[tokio::test]
async fn trend_ranges_and_arguments_are_checked() {
    let app = TestApp::spawn().await;
    let t = Tenant::new();
    let bad = [
        (pb::GetTrendRequest { end_time: ts(T0), ..day_trend(T0, 1) }, "end_time"),
        (pb::GetTrendRequest { end_time: None, ..day_trend(T0, 1) }, "end_time"),
        (pb::GetTrendRequest { bucket: TrendBucket::Hour as i32, ..day_trend(T0, 3650) }, "end_time"),
        (pb::GetTrendRequest { bucket: 0, ..day_trend(T0, 1) }, "bucket"),
        (pb::GetTrendRequest { time_field: "title".into(), ..day_trend(T0, 1) }, "time_field"),
        (pb::GetTrendRequest { group_by: "salary_min".into(), ..day_trend(T0, 1) }, "group_by"),
        (pb::GetTrendRequest { time_zone: "Mars/Olympus".into(), ..day_trend(T0, 1) }, "time_zone"),
        (pb::GetTrendRequest { time_zone: "UTC'; --".into(), ..day_trend(T0, 1) }, "time_zone"),
        (pb::GetTrendRequest { moving_average_window: 101, ..day_trend(T0, 1) }, "moving_average_window"),
    ];
    for (req, field) in bad {
        let e = trend(&app, &t, req).await.expect_err(field);
        assert_eq!(e.code(), Code::InvalidArgument, "{field}: {e:?}");
        assert_eq!(violations(&e), vec![field.to_owned()], "{e:?}");
    }
    // 5000 hour buckets is the most a trend returns.
    let ok = trend(
        &app,
        &t,
        pb::GetTrendRequest {
            bucket: TrendBucket::Hour as i32,
            start_time: ts(T0),
            end_time: ts(T0 + 5000 * 3600),
            ..day_trend(T0, 1)
        },
    )
    .await
    .expect("5000 buckets");
    assert_eq!(ok.points.len(), 5000);
    assert!(ok.points.iter().all(|p| p.value == 0.0));
}

struct Outreach {
    company: String,
    campaigns: Vec<String>,
}

async fn seed_outreach(app: &TestApp, t: &Tenant) -> Outreach {
    let mut c = app.companies();
    let company = c
        .create_company(authed(
            &t.writer,
            pb::CreateCompanyRequest {
                company: Some(pb::Company { name: "Funnel Corp".into(), ..Default::default() }),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    // Opportunities: values per status.
    for (status, value) in
        [(Os::Identified, 100), (Os::Identified, 250), (Os::Researched, 1000), (Os::Pitched, 0)]
    {
        let o = c
            .create_opportunity(authed(
                &t.writer,
                pb::CreateOpportunityRequest {
                    opportunity: Some(pb::Opportunity {
                        company_id: company.id.clone(),
                        solution_approach: "Automate".into(),
                        estimated_value: Some(value),
                        ..Default::default()
                    }),
                    request_id: String::new(),
                },
            ))
            .await
            .unwrap()
            .into_inner();
        let path: &[Os] = match status {
            Os::Researched => &[Os::Researched],
            Os::Pitched => &[Os::Researched, Os::PocCreated, Os::Pitched],
            _ => &[],
        };
        for s in path {
            c.update_opportunity(authed(
                &t.writer,
                pb::UpdateOpportunityRequest {
                    opportunity: Some(pb::Opportunity {
                        id: o.id.clone(),
                        status: *s as i32,
                        ..Default::default()
                    }),
                    update_mask: Some(prost_types::FieldMask { paths: vec!["status".into()] }),
                    ..Default::default()
                },
            ))
            .await
            .expect("transition");
        }
    }
    // Campaigns: 5 sent, 4 opened, 2 replied, 1 interested (days 0..3).
    let mut o = app.outreach();
    let mut campaigns = Vec::new();
    let progress = [4usize, 3, 2, 2, 1];
    for (i, steps) in progress.iter().enumerate() {
        let camp = o
            .create_campaign(authed(
                &t.writer,
                pb::CreateCampaignRequest {
                    campaign: Some(pb::Campaign {
                        company_id: company.id.clone(),
                        message_content: format!("Hello {i}"),
                        ..Default::default()
                    }),
                    request_id: String::new(),
                },
            ))
            .await
            .unwrap()
            .into_inner();
        for (k, ev) in [Ev::Sent, Ev::Opened, Ev::Replied, Ev::Interested].iter().take(*steps).enumerate() {
            o.record_campaign_event(authed(
                &t.writer,
                pb::RecordCampaignEventRequest {
                    id: camp.id.clone(),
                    event: *ev as i32,
                    event_time: ts(T0 + k as i64 * DAY),
                    request_id: String::new(),
                },
            ))
            .await
            .expect("event");
        }
        campaigns.push(camp.id);
    }
    Outreach { company: company.id, campaigns }
}

async fn funnel(
    app: &TestApp,
    t: &Tenant,
    start: Option<Timestamp>,
    end: Option<Timestamp>,
    filter: &str,
) -> Vec<(i64, f64, f64)> {
    let req = pb::GetOutreachFunnelRequest { start_time: start, end_time: end, filter: filter.into() };
    let r = app.analytics().get_outreach_funnel(authed(&t.reader, req)).await.expect("funnel").into_inner();
    let stages: Vec<i32> = r.stages.iter().map(|s| s.stage).collect();
    assert_eq!(stages, vec![1, 2, 3, 4], "SENT, OPENED, REPLIED, INTERESTED");
    r.stages.iter().map(|s| (s.count, s.conversion_from_previous, s.conversion_from_sent)).collect()
}

async fn pipeline(app: &TestApp, t: &Tenant) -> Vec<(i32, i64, f64)> {
    let req = pb::GetOpportunityPipelineRequest { filter: String::new() };
    let r = app
        .analytics()
        .get_opportunity_pipeline(authed(&t.reader, req))
        .await
        .expect("pipeline")
        .into_inner();
    r.stages.iter().map(|s| (s.status, s.count, s.total_estimated_value)).collect()
}

#[tokio::test]
async fn funnel_and_pipeline_follow_events_and_transitions() {
    // With the cache on: every figure below is read again right after a write.
    let app = TestApp::spawn_with(&["--redis-url", &redis_url()]).await;
    let t = Tenant::new();
    let seeded = seed_outreach(&app, &t).await;

    let f = funnel(&app, &t, None, None, "").await;
    assert_eq!(f.iter().map(|s| s.0).collect::<Vec<_>>(), vec![5, 4, 2, 1]);
    assert_eq!((f[0].1, f[1].1, f[2].1, f[3].1), (1.0, 0.8, 0.5, 0.5));
    assert_eq!((f[1].2, f[2].2, f[3].2), (0.8, 0.4, 0.2));
    // Only events in the range: day 1 and day 2 hold the OPENED and REPLIED events.
    let mid = funnel(&app, &t, ts(T0 + DAY), ts(T0 + 3 * DAY), "").await;
    assert_eq!(mid.iter().map(|s| s.0).collect::<Vec<_>>(), vec![0, 4, 2, 0]);
    assert_eq!(mid[1].1, 0.0, "no SENT in range: conversion 0, not a division by zero");
    // A campaign filter.
    let one = funnel(&app, &t, None, None, &format!("id = \"{}\"", seeded.campaigns[0])).await;
    assert_eq!(one.iter().map(|s| s.0).collect::<Vec<_>>(), vec![1, 1, 1, 1]);

    // An event through the API is reflected at once (cached before).
    app.outreach()
        .record_campaign_event(authed(
            &t.writer,
            pb::RecordCampaignEventRequest {
                id: seeded.campaigns[4].clone(),
                event: Ev::Opened as i32,
                event_time: ts(T0 + 5 * DAY),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap();
    let f = funnel(&app, &t, None, None, "").await;
    assert_eq!(f.iter().map(|s| s.0).collect::<Vec<_>>(), vec![5, 5, 2, 1]);
    // A deleted campaign no longer counts.
    app.outreach()
        .delete_campaign(authed(
            &t.writer,
            pb::DeleteCampaignRequest { id: seeded.campaigns[0].clone(), ..Default::default() },
        ))
        .await
        .unwrap();
    let f = funnel(&app, &t, None, None, "").await;
    assert_eq!(f.iter().map(|s| s.0).collect::<Vec<_>>(), vec![4, 4, 1, 0]);

    // Pipeline: every status, in order, with counts and value sums.
    let p = pipeline(&app, &t).await;
    assert_eq!(
        p,
        vec![
            (Os::Identified as i32, 2, 350.0),
            (Os::Researched as i32, 1, 1000.0),
            (Os::PocCreated as i32, 0, 0.0),
            (Os::Pitched as i32, 1, 0.0),
            (Os::Accepted as i32, 0, 0.0),
            (Os::Rejected as i32, 0, 0.0),
        ]
    );
    // A transition through the API moves the totals at once.
    let list = app
        .companies()
        .list_opportunities(authed(
            &t.reader,
            pb::ListOpportunitiesRequest { filter: "status = RESEARCHED".into(), ..Default::default() },
        ))
        .await
        .unwrap()
        .into_inner();
    let o = &list.opportunities[0];
    app.companies()
        .update_opportunity(authed(
            &t.writer,
            pb::UpdateOpportunityRequest {
                opportunity: Some(pb::Opportunity {
                    id: o.id.clone(),
                    status: Os::Rejected as i32,
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask { paths: vec!["status".into()] }),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    let p = pipeline(&app, &t).await;
    assert_eq!(p[1], (Os::Researched as i32, 0, 0.0));
    assert_eq!(p[5], (Os::Rejected as i32, 1, 1000.0));
    // Another tenant's pipeline is empty; its funnel is zero.
    let other = Tenant::new();
    assert!(pipeline(&app, &other).await.iter().all(|s| s.1 == 0));
    assert!(funnel(&app, &other, None, None, "").await.iter().all(|s| s.0 == 0));
    let _ = seeded.company;
}

#[tokio::test]
async fn aggregates_reflect_a_write_at_once_with_the_cache_on() {
    let app = TestApp::spawn_with(&["--redis-url", &redis_url()]).await;
    let t = Tenant::new();
    let rows = seed_jobs(&app, &t).await;
    let count = || async {
        let r = aggregate(
            &app,
            &t,
            Entity::Jobs,
            "",
            &["industry"],
            vec![metric(F::Count, ""), metric(F::Max, "salary_max")],
            0,
        )
        .await
        .unwrap();
        r.rows
            .iter()
            .map(|g| (text(&g.group_values[0]), num(&g.values[0]).unwrap(), num(&g.values[1])))
            .collect::<Vec<_>>()
    };
    let hits = || async {
        let m = crate::observability::scrape(app.metrics_addr).await;
        let k = crate::observability::key("bi_data_cache_requests_total", &[("result", "hit")]);
        m.get(&k).copied().unwrap_or(0.0)
    };
    let before = count().await;
    let hits_before = hits().await;
    assert_eq!(before, count().await, "a second read (from the cache) agrees");
    assert!(hits().await > hits_before, "the second read was a cache hit");
    assert_eq!(before.iter().map(|g| g.1).sum::<f64>(), rows.len() as f64);
    let created = app
        .jobs()
        .create_job(authed(
            &t.writer,
            pb::CreateJobRequest {
                job: Some(pb::Job {
                    title: "New".into(),
                    company_name: "Acme".into(),
                    industry: "energy".into(),
                    salary_max: Some(999_999),
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let after = count().await;
    assert_eq!(after.len(), 4);
    assert!(after.contains(&("energy".into(), 1.0, Some(999_999.0))), "{after:?}");
    // An update and a delete likewise.
    app.jobs()
        .delete_job(authed(&t.writer, pb::DeleteJobRequest { id: created.id, ..Default::default() }))
        .await
        .unwrap();
    assert_eq!(count().await, before);
    // A trend too.
    let tr = || async {
        trend(&app, &t, day_trend(T0, 10)).await.unwrap().points.iter().map(|p| p.value).sum::<f64>()
    };
    assert_eq!(tr().await, 60.0);
    app.jobs()
        .create_job(authed(
            &t.writer,
            pb::CreateJobRequest {
                job: Some(pb::Job {
                    title: "Late".into(),
                    company_name: "Acme".into(),
                    posting_time: ts(T0 + DAY),
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap();
    assert_eq!(tr().await, 61.0);
}

async fn report(
    app: &TestApp,
    t: &Tenant,
    report: pb::Report,
    format: ReportFormat,
    filter: &str,
) -> (Vec<u8>, i64, usize) {
    let mut params = std::collections::HashMap::new();
    if !filter.is_empty() {
        params.insert("filter".to_owned(), filter.to_owned());
    }
    let req = pb::GenerateReportRequest { report: report as i32, format: format as i32, params };
    let mut s = app.analytics().generate_report(authed(&t.reader, req)).await.expect("report").into_inner();
    let (mut data, mut rows, mut chunks) = (Vec::new(), 0, 0);
    while let Some(c) = s.next().await {
        let c = c.expect("chunk");
        assert!(c.data.len() <= 64 * 1024 + 8192, "chunks stay small");
        data.extend_from_slice(&c.data);
        rows += c.rows;
        chunks += 1;
    }
    (data, rows, chunks)
}

#[tokio::test]
async fn reports_parse_back_as_csv_and_json_lines() {
    let app = TestApp::spawn().await;
    let t = Tenant::new();
    let tricky = ["plain", "comma, inside", "say \"hi\"", "two\nlines", "cr\r\nlf", "ünïcödé"];
    let mut requests = Vec::new();
    for (i, title) in tricky.iter().enumerate() {
        requests.push(pb::CreateJobRequest {
            job: Some(pb::Job {
                title: (*title).into(),
                company_name: format!("Company {}", i % 2),
                location: "Berlin, DE".into(),
                salary_min: Some(1000 * i as i64),
                remote: i % 2 == 0,
                job_url: format!("https://jobs.test/{}", uuid::Uuid::new_v4()),
                ..Default::default()
            }),
            request_id: String::new(),
        });
    }
    app.jobs()
        .batch_create_jobs(authed(
            &t.writer,
            pb::BatchCreateJobsRequest { requests, request_id: String::new() },
        ))
        .await
        .unwrap();
    let listed = app
        .jobs()
        .list_jobs(authed(
            &t.reader,
            pb::ListJobsRequest { order_by: "company_name, id".into(), ..Default::default() },
        ))
        .await
        .unwrap()
        .into_inner()
        .jobs;

    let (csv_bytes, rows, _) = report(&app, &t, pb::Report::JobsByCompany, ReportFormat::Csv, "").await;
    assert_eq!(rows, tricky.len() as i64);
    let mut rd = csv::ReaderBuilder::new().from_reader(&csv_bytes[..]);
    let header: Vec<String> = rd.headers().unwrap().iter().map(str::to_owned).collect();
    assert_eq!(&header[..4], ["company_name", "company_id", "job_id", "title"]);
    let records: Vec<csv::StringRecord> = rd.records().map(|r| r.expect("valid CSV")).collect();
    assert_eq!(records.len(), listed.len());
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    for (rec, job) in records.iter().zip(&listed) {
        assert_eq!(&rec[col("job_id")], job.id, "ordered by company, then id");
        assert_eq!(&rec[col("title")], job.title);
        assert_eq!(&rec[col("company_name")], job.company_name);
        assert_eq!(&rec[col("location")], "Berlin, DE");
        assert_eq!(&rec[col("salary_min")], job.salary_min.unwrap().to_string());
        assert_eq!(&rec[col("remote")], job.remote.to_string());
        assert_eq!(&rec[col("salary_max")], "", "NULL is an empty field");
    }
    assert!(csv_bytes.ends_with(b"\r\n"));

    let (jsonl, rows, _) =
        report(&app, &t, pb::Report::JobsByCompany, ReportFormat::Jsonl, "remote = true").await;
    let lines: Vec<serde_json::Value> = jsonl
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).expect("JSON"))
        .collect();
    let remote: Vec<&pb::Job> = listed.iter().filter(|j| j.remote).collect();
    assert_eq!((lines.len(), rows), (remote.len(), remote.len() as i64));
    for (l, job) in lines.iter().zip(remote) {
        assert_eq!(l["title"], job.title.as_str());
        assert_eq!(l["job_id"], job.id.as_str());
        assert_eq!(l["salary_min"], job.salary_min.unwrap());
        assert_eq!(l["salary_max"], serde_json::Value::Null);
        assert_eq!(l["remote"], true);
    }

    // The other reports.
    let seeded = seed_outreach(&app, &t).await;
    let (csv_bytes, rows, _) = report(&app, &t, pb::Report::OutreachPerformance, ReportFormat::Csv, "").await;
    assert_eq!(rows, 5);
    let mut rd = csv::Reader::from_reader(&csv_bytes[..]);
    let header: Vec<String> = rd.headers().unwrap().iter().map(str::to_owned).collect();
    let recs: Vec<csv::StringRecord> = rd.records().map(Result::unwrap).collect();
    let c = |n: &str| header.iter().position(|h| h == n).unwrap();
    assert_eq!(recs.iter().map(|r| r[c("campaign_id")].to_owned()).collect::<Vec<_>>(), seeded.campaigns);
    assert_eq!(&recs[0][c("company_name")], "Funnel Corp");
    assert_eq!(&recs[0][c("status")], "INTERESTED");
    assert_eq!(&recs[0][c("hours_to_response")], "48", "sent day 0, replied day 2");
    assert_eq!(
        recs.iter().map(|r| r[c("opened_events")].to_owned()).collect::<Vec<_>>(),
        ["1", "1", "1", "1", "0"]
    );
    let (_, rows, _) = report(&app, &t, pb::Report::IngestHistory, ReportFormat::Jsonl, "").await;
    assert_eq!(rows, 0);

    // Bad requests.
    let bad = |report: i32, format: i32, key: &str| pb::GenerateReportRequest {
        report,
        format,
        params: [(key.to_owned(), "x = 1".to_owned())].into_iter().collect(),
    };
    for (req, field) in [
        (bad(0, 1, "filter"), "report"),
        (bad(1, 0, "filter"), "format"),
        (bad(1, 1, "limit"), "params[limit]"),
        (bad(1, 1, "filter"), "filter"),
    ] {
        let e = app.analytics().generate_report(authed(&t.reader, req)).await.expect_err(field);
        assert_eq!(e.code(), Code::InvalidArgument, "{field}");
    }
}

#[tokio::test]
async fn a_cancelled_report_leaves_no_query_running() {
    let app = TestApp::spawn().await;
    let t = Tenant::new();
    // 30,000 jobs straight into the table (15 batches of the report).
    let db = raw_db().await;
    db.execute("SELECT set_config('app.tenant_id', $1, false)", &[&t.id.to_string()]).await.unwrap();
    db.execute(
        "INSERT INTO jobs (tenant_id, id, title, company_name) \
         SELECT $1, gen_random_uuid(), 'Job ' || g, 'Company ' || (g % 97) FROM generate_series(1, 30000) g",
        &[&t.id],
    )
    .await
    .unwrap();
    // A filter shape no other test uses, so its statement is recognisable
    // in pg_stat_activity among other tests' reports.
    let filter = "title != \"none\" AND source_site != \"none\"";
    let req = pb::GenerateReportRequest {
        report: pb::Report::JobsByCompany as i32,
        format: ReportFormat::Csv as i32,
        params: [("filter".to_owned(), filter.to_owned())].into_iter().collect(),
    };
    let mut s = app.analytics().generate_report(authed(&t.reader, req)).await.unwrap().into_inner();
    let first = s.next().await.expect("a chunk").expect("ok");
    assert!(first.rows > 0);
    drop(s);
    // The report's statement: the keyset batch over jobs by company.
    let batches = || {
        app.query_stats()
            .slowest(1000)
            .into_iter()
            .filter(|s| {
                s.sql.contains("source_site IS DISTINCT FROM") && s.sql.contains("ORDER BY company_name, id")
            })
            .map(|s| s.count)
            .sum::<u64>()
    };
    assert!(
        no_active_query(
            &db,
            "%source_site IS DISTINCT FROM%ORDER BY company_name, id%",
            Duration::from_secs(5)
        )
        .await,
        "a report query still runs 5 s after the cancel"
    );
    let after_cancel = batches();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(batches(), after_cancel, "no batch runs after the cancel");
    assert!(after_cancel < 15, "the report stopped early ({after_cancel} of 15 batches)");
    // The whole report, for comparison, has every row.
    let (_, rows, chunks) = report(&app, &t, pb::Report::JobsByCompany, ReportFormat::Csv, filter).await;
    assert_eq!(rows, 30_000);
    assert!(chunks > 10, "{chunks} chunks");
}

#[tokio::test]
async fn query_stats_are_for_admins_and_show_pg_stat_statements_when_loaded() {
    let app = TestApp::spawn().await;
    let t = Tenant::new();
    seed_jobs(&app, &t).await;
    let req = || pb::GetQueryStatsRequest { limit: 5 };
    let e = app.analytics().get_query_stats(authed(&t.reader, req())).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    let r = app.analytics().get_query_stats(authed(&t.admin, req())).await.unwrap().into_inner();
    assert!(!r.shapes.is_empty() && r.shapes.len() <= 5);
    assert!(r.shapes.iter().all(|s| s.count > 0 && s.max_ms >= s.mean_ms && !s.shape.is_empty()));
    assert!(r.shapes.windows(2).all(|w| w[0].p99_ms >= w[1].p99_ms), "slowest first");
    assert!(!r.shapes.iter().any(|s| s.shape.contains(&t.id.to_string())), "no values in shapes");
    // Loaded and installed exactly when the view answers (its own check:
    // shared_preload_libraries is readable by superusers only).
    let db = raw_db().await;
    let loaded = db.query_one("SELECT count(*) FROM pg_stat_statements", &[]).await.is_ok();
    assert_eq!(r.pg_stat_statements_available, loaded);
    if loaded {
        assert!(!r.pg_stat_statements.is_empty());
        assert!(r.pg_stat_statements.iter().all(|p| p.calls > 0 && !p.query.is_empty()));
    }
}

#[tokio::test]
async fn a_group_without_values_ranks_last_in_a_grouped_trend() {
    let app = TestApp::spawn().await;
    let t = Tenant::new();
    let mut requests = Vec::new();
    for (industry, salary) in
        [("a", Some(30)), ("a", Some(30)), ("b", None), ("b", None), ("b", None), ("c", Some(5))]
    {
        requests.push(pb::CreateJobRequest {
            job: Some(pb::Job {
                title: "t".into(),
                company_name: "Acme".into(),
                industry: industry.into(),
                salary_max: salary,
                posting_time: ts(T0 + 3600),
                ..Default::default()
            }),
            request_id: String::new(),
        });
    }
    app.jobs()
        .batch_create_jobs(authed(
            &t.writer,
            pb::BatchCreateJobsRequest { requests, request_id: String::new() },
        ))
        .await
        .unwrap();
    let got = trend(
        &app,
        &t,
        pb::GetTrendRequest {
            metric: Some(metric(F::Sum, "salary_max")),
            group_by: "industry".into(),
            ..day_trend(T0, 1)
        },
    )
    .await
    .unwrap();
    let order: Vec<String> = got.series.iter().map(|s| text(s.group_value.as_ref().unwrap())).collect();
    assert_eq!(order, ["a", "c", "b"], "by the metric's total; a group with none of it last");
    assert_eq!(got.series[0].points[0].value, 60.0);
    assert_eq!(got.series[2].points[0].value, 0.0);
}

/// The two reports not covered above by more than one batch: every row
/// once, in order, across the 2,000-row keyset batches.
#[tokio::test]
async fn outreach_and_ingest_reports_continue_across_batches() {
    let app = TestApp::spawn().await;
    let t = Tenant::new();
    let db = raw_db().await;
    db.execute("SELECT set_config('app.tenant_id', $1, false)", &[&t.id.to_string()]).await.unwrap();
    let company = uuid::Uuid::now_v7();
    db.execute("INSERT INTO companies (tenant_id, id, name) VALUES ($1, $2, 'Batch Co')", &[&t.id, &company])
        .await
        .unwrap();
    // uuid v7 ids in creation order, as the service makes them.
    let campaigns: Vec<uuid::Uuid> = (0..4500).map(|_| uuid::Uuid::now_v7()).collect();
    db.execute(
        "INSERT INTO campaigns (tenant_id, id, company_id, message_content) \
         SELECT $1, id, $2, 'Hi' FROM unnest($3::uuid[]) AS id",
        &[&t.id, &company, &campaigns],
    )
    .await
    .unwrap();
    let runs: Vec<uuid::Uuid> = (0..4100).map(|_| uuid::Uuid::now_v7()).collect();
    db.execute(
        "INSERT INTO ingest_runs (tenant_id, id, source_site) SELECT $1, id, 'batch' FROM unnest($2::uuid[]) AS id",
        &[&t.id, &runs],
    )
    .await
    .unwrap();
    let ids = |jsonl: &[u8], key: &str| -> Vec<uuid::Uuid> {
        jsonl
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| {
                serde_json::from_slice::<serde_json::Value>(l).unwrap()[key]
                    .as_str()
                    .unwrap()
                    .parse()
                    .unwrap()
            })
            .collect()
    };
    let (data, rows, _) = report(&app, &t, pb::Report::OutreachPerformance, ReportFormat::Jsonl, "").await;
    assert_eq!(rows, 4500);
    assert_eq!(ids(&data, "campaign_id"), campaigns, "every campaign once, in creation order");
    let (data, rows, _) = report(&app, &t, pb::Report::IngestHistory, ReportFormat::Jsonl, "").await;
    assert_eq!(rows, 4100);
    let mut newest_first = runs.clone();
    newest_first.reverse();
    assert_eq!(ids(&data, "ingest_run_id"), newest_first, "every run once, newest first");
}
