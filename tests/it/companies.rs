//! CompanyService and OutreachService behaviour beyond the conformance
//! suite: status machines, campaign events, merges (contents, refusals,
//! concurrency), fuzzy name search, job links, integrity and forced
//! deletes, due follow-ups.

use std::collections::HashSet;

use bi_data::pb::{self, CampaignEventType as Ev, OpportunityStatus as Os};
use prost_types::Timestamp;
use tonic::{Code, Status};

use crate::{common::*, conformance::assert_status, helpers::*};

fn company(name: &str) -> pb::Company {
    pb::Company { name: name.into(), ..Default::default() }
}

fn opportunity(company_id: &str) -> pb::Opportunity {
    pb::Opportunity {
        company_id: company_id.into(),
        solution_approach: "Automate it".into(),
        ..Default::default()
    }
}

fn campaign(company_id: &str, opportunity_id: &str) -> pb::Campaign {
    pb::Campaign {
        company_id: company_id.into(),
        opportunity_id: opportunity_id.into(),
        message_content: "Hello".into(),
        ..Default::default()
    }
}

fn job_at(company_id: &str, company_name: &str, n: usize) -> pb::Job {
    pb::Job {
        title: format!("Job {n}"),
        company_name: company_name.into(),
        company_id: company_id.into(),
        job_url: format!("https://jobs.test/{}", uuid::Uuid::new_v4()),
        ..Default::default()
    }
}

fn at(seconds: i64) -> Option<Timestamp> {
    Some(Timestamp { seconds, nanos: 0 })
}

fn metadata(s: &Status, key: &str) -> String {
    use tonic_types::StatusExt;
    s.get_details_error_info().and_then(|i| i.metadata.get(key).cloned()).unwrap_or_default()
}

async fn record(
    app: &TestApp,
    t: &Tenant,
    id: &str,
    event: Ev,
    when: Option<Timestamp>,
) -> Result<pb::Campaign, Status> {
    let req = pb::RecordCampaignEventRequest {
        id: id.into(),
        event: event as i32,
        event_time: when,
        request_id: String::new(),
    };
    app.outreach().record_campaign_event(authed(&t.writer, req)).await.map(|r| r.into_inner())
}

async fn events(app: &TestApp, t: &Tenant, campaign_id: &str) -> Vec<pb::CampaignEvent> {
    let req = pb::ListCampaignEventsRequest { campaign_id: campaign_id.into(), ..Default::default() };
    app.outreach().list_campaign_events(authed(&t.reader, req)).await.expect("events").into_inner().events
}

async fn set_status(
    app: &TestApp,
    t: &Tenant,
    o: &pb::Opportunity,
    s: Os,
) -> Result<pb::Opportunity, Status> {
    app.try_update::<pb::Opportunity>(t, pb::Opportunity { status: s as i32, ..o.clone() }, &["status"]).await
}

/// A fresh company, opportunity and (DRAFT) campaign.
async fn campaign_fixture(app: &TestApp, t: &Tenant) -> (pb::Company, pb::Opportunity, pb::Campaign) {
    let c = app.create::<pb::Company>(t, company("Campaign Target GmbH")).await;
    let o = app.create::<pb::Opportunity>(t, opportunity(&c.id)).await;
    let k = app.create::<pb::Campaign>(t, campaign(&c.id, &o.id)).await;
    (c, o, k)
}

#[tokio::test]
async fn opportunities_follow_their_status_machine() {
    use Os::*;
    let app = TestApp::spawn().await;
    let t = Tenant::new();
    let c = app.create::<pb::Company>(&t, company("Pipeline Inc")).await;
    // Every legal path, one opportunity per path.
    let paths: &[&[Os]] = &[
        &[Researched, PocCreated, Pitched, Accepted],
        &[Researched, PocCreated, Pitched, Rejected],
        &[Rejected],
        &[Researched, Rejected],
        &[Researched, PocCreated, Rejected],
    ];
    for path in paths {
        let mut o = app.create::<pb::Opportunity>(&t, opportunity(&c.id)).await;
        assert_eq!(o.status, Identified as i32, "a new opportunity is IDENTIFIED");
        for s in *path {
            o = set_status(&app, &t, &o, *s).await.unwrap_or_else(|e| panic!("{path:?} at {s:?}: {e:?}"));
            assert_eq!(o.status, *s as i32);
        }
    }
    // Illegal moves: (path to reach the state, refused next state, allowed next states).
    let illegal: &[(&[Os], Os, &str)] = &[
        (&[], Pitched, "RESEARCHED,REJECTED"),
        (&[], Accepted, "RESEARCHED,REJECTED"),
        (&[], PocCreated, "RESEARCHED,REJECTED"),
        (&[Researched], Identified, "POC_CREATED,REJECTED"),
        (&[Researched], Accepted, "POC_CREATED,REJECTED"),
        (&[Researched, PocCreated], Researched, "PITCHED,REJECTED"),
        (&[Researched, PocCreated, Pitched], PocCreated, "ACCEPTED,REJECTED"),
        (&[Researched, PocCreated, Pitched, Accepted], Rejected, ""),
        (&[Rejected], Identified, ""),
        (&[Rejected], Researched, ""),
    ];
    for (path, to, allowed) in illegal {
        let mut o = app.create::<pb::Opportunity>(&t, opportunity(&c.id)).await;
        for s in *path {
            o = set_status(&app, &t, &o, *s).await.expect("legal step");
        }
        let e = set_status(&app, &t, &o, *to).await.expect_err("illegal");
        assert_status(&e, Code::FailedPrecondition, &format!("{path:?} -> {to:?}"));
        assert_eq!(reason(&e), "ILLEGAL_TRANSITION", "{path:?} -> {to:?}");
        assert_eq!(metadata(&e, "allowed"), *allowed, "{path:?} -> {to:?}");
        assert_eq!(app.get::<pb::Opportunity>(&t, &o.id).await, o, "nothing changed");
    }
    // Filters by company, status, confidence and value.
    let hits = app
        .list::<pb::Opportunity>(
            &t,
            ListOpts::filter(format!("company_id = \"{}\" AND status = ACCEPTED", c.id)).count(),
        )
        .await;
    // One accepted by the legal paths, one reached on the way to an illegal move.
    assert_eq!(hits.total_size, 2);
    app.stop().await;
}

#[tokio::test]
async fn campaign_events_move_status_forward_stamp_times_and_are_kept() {
    use Ev::*;
    let app = TestApp::spawn().await;
    let t = Tenant::new();
    let (_, _, k) = campaign_fixture(&app, &t).await;
    assert_eq!(k.status, pb::CampaignStatus::Draft as i32);
    let sent = record(&app, &t, &k.id, Sent, at(1_760_000_000)).await.expect("SENT");
    assert_eq!(sent.status, pb::CampaignStatus::Sent as i32);
    assert_eq!(sent.sent_time, at(1_760_000_000), "SENT stamps sent_time with the event time");
    // The identical event again: the campaign as it is, no new event.
    let again = record(&app, &t, &k.id, Sent, at(1_760_000_000)).await.expect("repeat");
    assert_eq!(again, sent);
    // SENT again at another time: not a move.
    let e = record(&app, &t, &k.id, Sent, at(1_760_000_100)).await.expect_err("SENT twice");
    assert_eq!(reason(&e), "ILLEGAL_TRANSITION");
    record(&app, &t, &k.id, Opened, at(1_760_000_500)).await.expect("OPENED");
    // Older than the last event: out of order.
    let e = record(&app, &t, &k.id, Replied, at(1_760_000_400)).await.expect_err("out of order");
    assert_status(&e, Code::FailedPrecondition, "out of order");
    assert_eq!(reason(&e), "OUT_OF_ORDER_EVENT");
    let replied = record(&app, &t, &k.id, Replied, at(1_760_001_000)).await.expect("REPLIED");
    assert_eq!(replied.response_time, at(1_760_001_000), "REPLIED stamps response_time");
    let done = record(&app, &t, &k.id, Interested, at(1_760_002_000)).await.expect("INTERESTED");
    assert_eq!(done.status, pb::CampaignStatus::Interested as i32);
    assert_eq!(done.response_time, at(1_760_001_000), "the reply's stamp stays");
    let e = record(&app, &t, &k.id, Rejected, at(1_760_003_000)).await.expect_err("final");
    assert_eq!(metadata(&e, "allowed"), "");
    let log = events(&app, &t, &k.id).await;
    let kinds: Vec<(i64, i32)> = log.iter().map(|e| (e.seq, e.event)).collect();
    assert_eq!(
        kinds,
        vec![(1, Sent as i32), (2, Opened as i32), (3, Replied as i32), (4, Interested as i32)],
        "every accepted event, numbered, oldest first; nothing for refused or repeated ones"
    );
    // A retry without a time of the event the campaign last had: no change.
    let (_, _, k3) = campaign_fixture(&app, &t).await;
    let first = record(&app, &t, &k3.id, Sent, None).await.expect("SENT");
    assert_eq!(record(&app, &t, &k3.id, Sent, None).await.expect("retry"), first);
    assert_eq!(events(&app, &t, &k3.id).await.len(), 1);
    // UNSPECIFIED, a future time, another tenant's campaign.
    let e = record(&app, &t, &k.id, Unspecified, None).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let future = chrono::Utc::now().timestamp() + 7200;
    let (_, _, k2) = campaign_fixture(&app, &t).await;
    let e = record(&app, &t, &k2.id, Sent, at(future)).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = record(&app, &Tenant::new(), &k2.id, Sent, None).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    // Campaign status is output only.
    let e = app
        .try_update::<pb::Campaign>(&t, pb::Campaign { status: 3, ..k2.clone() }, &["status"])
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    app.stop().await;
}

#[tokio::test]
async fn illegal_campaign_events_are_refused_from_every_state() {
    use Ev::*;
    let app = TestApp::spawn().await;
    let t = Tenant::new();
    // (events to reach the state, refused event)
    let cases: &[(&[Ev], Ev)] = &[
        (&[], Opened),
        (&[], Replied),
        (&[], Interested),
        (&[], Rejected),
        (&[Sent], Replied),
        (&[Sent], Interested),
        (&[Sent, Opened], Sent),
        (&[Sent, Opened], Interested),
        (&[Sent, Opened, Replied], Opened),
        (&[Sent, Rejected], Opened),
        (&[Sent, Opened, Replied, Rejected], Interested),
    ];
    for (path, refused) in cases {
        let (_, _, k) = campaign_fixture(&app, &t).await;
        for (i, ev) in path.iter().enumerate() {
            record(&app, &t, &k.id, *ev, at(1_760_000_000 + i as i64)).await.expect("legal");
        }
        let e = record(&app, &t, &k.id, *refused, at(1_760_100_000)).await.expect_err("illegal");
        assert_eq!(reason(&e), "ILLEGAL_TRANSITION", "{path:?} then {refused:?}");
        assert_eq!(events(&app, &t, &k.id).await.len(), path.len());
    }
    // REJECTED from SENT, OPENED and REPLIED.
    for n in 1..=3 {
        let (_, _, k) = campaign_fixture(&app, &t).await;
        for (i, ev) in [Sent, Opened, Replied].iter().take(n).enumerate() {
            record(&app, &t, &k.id, *ev, at(1_760_000_000 + i as i64)).await.expect("legal");
        }
        let k = record(&app, &t, &k.id, Rejected, at(1_760_100_000)).await.expect("REJECTED");
        assert_eq!(k.status, pb::CampaignStatus::Rejected as i32);
        assert!(k.response_time.is_some());
    }
    app.stop().await;
}

#[tokio::test]
async fn due_follow_ups_are_open_campaigns_oldest_first_in_keyset_pages() {
    let app = TestApp::spawn().await;
    let t = Tenant::new();
    let c = app.create::<pb::Company>(&t, company("Follow Up Ltd")).await;
    let mut due = Vec::new();
    for i in 0..5 {
        let k = app
            .create::<pb::Campaign>(
                &t,
                pb::Campaign { follow_up_time: at(1_700_000_000 + i * 60), ..campaign(&c.id, "") },
            )
            .await;
        record(&app, &t, &k.id, Ev::Sent, at(1_690_000_000)).await.unwrap();
        due.push(k.id);
    }
    // Not due: a draft, a final one, a deleted one, one after `before`.
    let draft = pb::Campaign { follow_up_time: at(1_700_000_000), ..campaign(&c.id, "") };
    app.create::<pb::Campaign>(&t, draft.clone()).await;
    let fin = app.create::<pb::Campaign>(&t, draft.clone()).await;
    record(&app, &t, &fin.id, Ev::Sent, at(1_690_000_000)).await.unwrap();
    record(&app, &t, &fin.id, Ev::Rejected, at(1_690_000_001)).await.unwrap();
    let gone = app.create::<pb::Campaign>(&t, draft.clone()).await;
    record(&app, &t, &gone.id, Ev::Sent, at(1_690_000_000)).await.unwrap();
    let gone = app.get::<pb::Campaign>(&t, &gone.id).await;
    app.try_delete::<pb::Campaign>(&t, &gone.id, &gone.etag).await.unwrap();
    let late = app
        .create::<pb::Campaign>(&t, pb::Campaign { follow_up_time: at(1_800_000_000), ..campaign(&c.id, "") })
        .await;
    record(&app, &t, &late.id, Ev::Sent, at(1_690_000_000)).await.unwrap();
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let req = pb::ListDueFollowUpsRequest { before: at(1_750_000_000), page_size: 2, page_token: token };
        let r = app.outreach().list_due_follow_ups(authed(&t.reader, req)).await.unwrap().into_inner();
        seen.extend(r.campaigns.into_iter().map(|k| k.id));
        if r.next_page_token.is_empty() {
            break;
        }
        token = r.next_page_token;
    }
    assert_eq!(seen, due, "exactly the due open campaigns, oldest follow-up first");
    // Another tenant sees none of them.
    let req = pb::ListDueFollowUpsRequest { before: at(1_750_000_000), ..Default::default() };
    let r = app.outreach().list_due_follow_ups(authed(&Tenant::new().reader, req)).await.unwrap();
    assert!(r.into_inner().campaigns.is_empty());
    app.stop().await;
}

#[tokio::test]
async fn references_must_be_live_rows_of_the_tenant_and_agree() {
    let app = TestApp::spawn().await;
    let (t, other) = (Tenant::new(), Tenant::new());
    let (a, b) = (
        app.create::<pb::Company>(&t, company("Alpha")).await,
        app.create::<pb::Company>(&t, company("Beta")).await,
    );
    let theirs = app.create::<pb::Company>(&other, company("Theirs")).await;
    let oa = app.create::<pb::Opportunity>(&t, opportunity(&a.id)).await;
    let refused = |e: Status, what: &str| {
        assert_status(&e, Code::FailedPrecondition, what);
        assert_eq!(reason(&e), "REFERENCE_NOT_FOUND", "{what}");
    };
    // A job's company: unknown, another tenant's, deleted.
    refused(
        app.try_create::<pb::Job>(&t, job_at(&uuid::Uuid::new_v4().to_string(), "X", 0)).await.unwrap_err(),
        "unknown",
    );
    refused(app.try_create::<pb::Job>(&t, job_at(&theirs.id, "X", 0)).await.unwrap_err(), "other tenant");
    let j = app.create::<pb::Job>(&t, job_at(&a.id, "Alpha", 0)).await;
    assert_eq!(j.company_id, a.id);
    // Opportunities and campaigns of another tenant's company.
    refused(app.try_create::<pb::Opportunity>(&t, opportunity(&theirs.id)).await.unwrap_err(), "opportunity");
    refused(app.try_create::<pb::Campaign>(&t, campaign(&theirs.id, "")).await.unwrap_err(), "campaign");
    // A campaign's opportunity must belong to the campaign's company.
    let e = app.try_create::<pb::Campaign>(&t, campaign(&b.id, &oa.id)).await.unwrap_err();
    refused(e, "opportunity of another company");
    let k = app.create::<pb::Campaign>(&t, campaign(&a.id, &oa.id)).await;
    let e = app
        .try_update::<pb::Campaign>(
            &t,
            pb::Campaign { company_id: b.id.clone(), ..k.clone() },
            &["company_id"],
        )
        .await
        .unwrap_err();
    refused(e, "moving the campaign away from its opportunity's company");
    // Deleting a company with live opportunities/campaigns needs force.
    let e = app.try_delete::<pb::Company>(&t, &a.id, "").await.unwrap_err();
    assert_status(&e, Code::FailedPrecondition, "has children");
    assert_eq!(reason(&e), "HAS_CHILDREN");
    // An opportunity deleted before stays deleted after the undelete.
    let early = app.create::<pb::Opportunity>(&t, opportunity(&a.id)).await;
    app.try_delete::<pb::Opportunity>(&t, &early.id, "").await.unwrap();
    let req = pb::DeleteCompanyRequest { id: a.id.clone(), force: true, ..Default::default() };
    let deleted = app.companies().delete_company(authed(&t.writer, req)).await.expect("forced").into_inner();
    assert!(deleted.delete_time.is_some());
    assert!(app.get::<pb::Opportunity>(&t, &oa.id).await.delete_time.is_some());
    assert!(app.get::<pb::Campaign>(&t, &k.id).await.delete_time.is_some());
    assert!(app.get::<pb::Job>(&t, &j.id).await.delete_time.is_none(), "jobs keep their company");
    refused(app.try_create::<pb::Job>(&t, job_at(&a.id, "Alpha", 1)).await.unwrap_err(), "deleted company");
    let trail = app.audit_trail(&t, &oa.id).await;
    assert_eq!(
        trail.last().map(|e| e.action),
        Some(pb::AuditAction::Delete as i32),
        "the cascade is audited"
    );
    // A child the forced delete took cannot come back before its company.
    let e = app.try_undelete::<pb::Campaign>(&t, &k.id).await.unwrap_err();
    assert_status(&e, Code::FailedPrecondition, "parent deleted");
    assert_eq!(reason(&e), "PARENT_DELETED");
    app.try_undelete::<pb::Company>(&t, &a.id).await.expect("undelete");
    assert!(app.get::<pb::Opportunity>(&t, &oa.id).await.delete_time.is_none(), "restored with it");
    assert!(app.get::<pb::Campaign>(&t, &k.id).await.delete_time.is_none(), "restored with it");
    assert!(app.get::<pb::Opportunity>(&t, &early.id).await.delete_time.is_some(), "not restored");
    app.stop().await;
}

#[tokio::test]
async fn fuzzy_search_ignores_case_punctuation_and_legal_suffixes() {
    let app = TestApp::spawn().await;
    let (t, other) = (Tenant::new(), Tenant::new());
    let names =
        ["ACME Corporation", "acme corp.", "Acme, Inc.", "Acme Widgets GmbH", "Globex Ltd", "Initech"];
    let mut ids = Vec::new();
    for n in names {
        ids.push(app.create::<pb::Company>(&t, company(n)).await.id);
    }
    app.create::<pb::Company>(&other, company("Acme Corp")).await;
    let search = |q: &str, tenant: &Tenant| {
        let req = pb::SearchCompaniesRequest { query: q.into(), ..Default::default() };
        let mut client = app.companies();
        let token = tenant.reader.clone();
        async move { client.search_companies(authed(&token, req)).await.expect("search").into_inner() }
    };
    for q in ["Acme Corp", "acme", "ACME Inc", "Acme Co. Ltd", "Acmee Corp"] {
        let r = search(q, &t).await;
        let top: HashSet<&str> = r.companies.iter().take(3).map(|c| c.name.as_str()).collect();
        assert_eq!(
            top,
            HashSet::from(["ACME Corporation", "acme corp.", "Acme, Inc."]),
            "{q}: the three spellings of Acme come first ({:?})",
            r.companies.iter().map(|c| &c.name).collect::<Vec<_>>()
        );
        assert!(r.scores.windows(2).all(|w| w[0] >= w[1]), "{q}: best first");
        assert!(!r.companies.iter().any(|c| c.name == "Initech" || c.name == "Globex Ltd"), "{q}");
        assert!(r.companies.iter().all(|c| ids.contains(&c.id)), "{q}: never another tenant's");
    }
    let r = search("Globex Limited", &t).await;
    assert_eq!(r.companies.first().map(|c| c.name.as_str()), Some("Globex Ltd"));
    let r = search("Acme Corp", &other).await;
    assert_eq!(r.companies.len(), 1, "the other tenant finds only its own");
    // Deleted companies are not found; an empty query is refused.
    let g = app.get::<pb::Company>(&t, &ids[4]).await;
    app.try_delete::<pb::Company>(&t, &g.id, "").await.unwrap();
    assert!(search("Globex", &t).await.companies.is_empty());
    let req = pb::SearchCompaniesRequest { query: "  ".into(), ..Default::default() };
    let e = app.companies().search_companies(authed(&t.reader, req)).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    app.stop().await;
}

#[tokio::test]
async fn merge_moves_every_child_unions_arrays_and_audits_one_merge_event() {
    let app = TestApp::spawn().await;
    let t = Tenant::new();
    let target = app
        .create::<pb::Company>(
            &t,
            pb::Company {
                technology_stack: vec!["rust".into(), "postgres".into()],
                pain_points: vec!["manual reports".into()],
                enrichment: structure(serde_json::json!({"revenue": 10, "tier": "gold"})),
                decision_makers: vec![pb::Contact { name: "Ada".into(), ..Default::default() }],
                ..company("Acme Corporation")
            },
        )
        .await;
    let s1 = app
        .create::<pb::Company>(
            &t,
            pb::Company {
                technology_stack: vec!["postgres".into(), "kafka".into()],
                enrichment: structure(serde_json::json!({"revenue": 99, "employees": 50})),
                decision_makers: vec![pb::Contact { name: "Bob".into(), ..Default::default() }],
                ..company("ACME Corp.")
            },
        )
        .await;
    let s2 = app
        .create::<pb::Company>(
            &t,
            pb::Company { pain_points: vec!["slow onboarding".into()], ..company("acme corp") },
        )
        .await;
    let mut jobs = Vec::new();
    for (i, s) in [&s1, &s1, &s2].iter().enumerate() {
        jobs.push(app.create::<pb::Job>(&t, job_at(&s.id, &s.name, i)).await.id);
    }
    let o1 = app.create::<pb::Opportunity>(&t, opportunity(&s1.id)).await;
    let k1 = app.create::<pb::Campaign>(&t, campaign(&s1.id, &o1.id)).await;
    let k2 = app.create::<pb::Campaign>(&t, campaign(&s2.id, "")).await;
    let req = pb::MergeCompaniesRequest {
        target_id: target.id.clone(),
        source_ids: vec![s1.id.clone(), s2.id.clone()],
        request_id: "merge-acme".into(),
    };
    let merged =
        app.companies().merge_companies(authed(&t.writer, req.clone())).await.expect("merge").into_inner();
    assert_eq!(merged.technology_stack, ["rust", "postgres", "kafka"]);
    assert_eq!(merged.pain_points, ["manual reports", "slow onboarding"]);
    let names: Vec<&str> = merged.decision_makers.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["Ada", "Bob"]);
    assert_eq!(struct_str(&merged.enrichment, "tier"), "gold");
    let enrichment = bi_data::api::convert::structure(&merged.enrichment);
    let bi_data::domain::value::Value::Json(e) = enrichment else { panic!("json") };
    assert_eq!(e["revenue"], 10.0, "the target wins on conflicts");
    assert_eq!(e["employees"], 50.0, "the sources' other keys are merged in");
    for id in &jobs {
        assert_eq!(app.get::<pb::Job>(&t, id).await.company_id, target.id);
    }
    assert_eq!(app.get::<pb::Opportunity>(&t, &o1.id).await.company_id, target.id);
    assert_eq!(app.get::<pb::Campaign>(&t, &k1.id).await.company_id, target.id);
    assert_eq!(app.get::<pb::Campaign>(&t, &k2.id).await.company_id, target.id);
    for s in [&s1, &s2] {
        let gone = app.get::<pb::Company>(&t, &s.id).await;
        assert_eq!(gone.master_company_id, target.id, "GetCompany of a source names the survivor");
        assert!(gone.delete_time.is_some());
    }
    // One MERGE event on the target, listing the sources and every row moved.
    let merges: Vec<pb::AuditEvent> = app
        .audit_trail(&t, &target.id)
        .await
        .into_iter()
        .filter(|e| e.action == pb::AuditAction::Merge as i32)
        .collect();
    assert_eq!(merges.len(), 1);
    let bi_data::domain::value::Value::Json(after) = bi_data::api::convert::structure(&merges[0].after)
    else {
        panic!("after")
    };
    let listed = |k: &str| -> HashSet<String> {
        after["merge"]["moved"][k]
            .as_array()
            .map(|a| a.iter().map(|v| v.as_str().unwrap().to_owned()).collect())
            .unwrap_or_default()
    };
    assert_eq!(listed("job"), jobs.iter().cloned().collect());
    assert_eq!(listed("opportunity"), HashSet::from([o1.id.clone()]));
    assert_eq!(listed("campaign"), HashSet::from([k1.id.clone(), k2.id.clone()]));
    assert_eq!(after["merge"]["source_ids"], serde_json::json!([s1.id, s2.id]));
    // The same request id replays; without it, the sources are already merged.
    let again =
        app.companies().merge_companies(authed(&t.writer, req.clone())).await.expect("replay").into_inner();
    assert_eq!(again, merged);
    let e = app
        .companies()
        .merge_companies(authed(&t.writer, pb::MergeCompaniesRequest { request_id: String::new(), ..req }))
        .await
        .unwrap_err();
    assert_status(&e, Code::FailedPrecondition, "already merged");
    assert_eq!(reason(&e), "ALREADY_MERGED");
    let e = app.try_undelete::<pb::Company>(&t, &s1.id).await.unwrap_err();
    assert_eq!(reason(&e), "ALREADY_MERGED", "a merged company is not undeleted");
    app.stop().await;
}

#[tokio::test]
async fn merge_refusals_are_clear_and_change_nothing() {
    let app = TestApp::spawn().await;
    let (t, other) = (Tenant::new(), Tenant::new());
    let a = app.create::<pb::Company>(&t, company("A")).await;
    let b = app.create::<pb::Company>(&t, company("B")).await;
    let dead = app.create::<pb::Company>(&t, company("Dead")).await;
    app.try_delete::<pb::Company>(&t, &dead.id, "").await.unwrap();
    let theirs = app.create::<pb::Company>(&other, company("Theirs")).await;
    let merge = |target: &str, sources: &[&str]| {
        let req = pb::MergeCompaniesRequest {
            target_id: target.into(),
            source_ids: sources.iter().map(|s| s.to_string()).collect(),
            request_id: String::new(),
        };
        let mut client = app.companies();
        let token = t.writer.clone();
        async move { client.merge_companies(authed(&token, req)).await.unwrap_err() }
    };
    let unknown = uuid::Uuid::new_v4().to_string();
    let cases: Vec<(Status, Code, &str)> = vec![
        (merge(&a.id, &[&a.id]).await, Code::InvalidArgument, ""),
        (merge(&a.id, &[]).await, Code::InvalidArgument, ""),
        (merge(&a.id, &[&b.id, &b.id]).await, Code::InvalidArgument, ""),
        (merge(&a.id, &["not-a-uuid"]).await, Code::InvalidArgument, ""),
        (merge(&a.id, &[&unknown]).await, Code::NotFound, ""),
        (merge(&a.id, &[&theirs.id]).await, Code::NotFound, ""),
        (merge(&theirs.id, &[&a.id]).await, Code::NotFound, ""),
        (merge(&a.id, &[&dead.id]).await, Code::FailedPrecondition, "RESOURCE_DELETED"),
        (merge(&dead.id, &[&a.id]).await, Code::FailedPrecondition, "RESOURCE_DELETED"),
    ];
    for (i, (e, code, why)) in cases.iter().enumerate() {
        assert_eq!(e.code(), *code, "case {i}: {e:?}");
        if !why.is_empty() {
            assert_eq!(reason(e), *why, "case {i}");
        }
    }
    assert_eq!(app.get::<pb::Company>(&t, &a.id).await, a, "nothing changed");
    assert_eq!(app.get::<pb::Company>(&t, &b.id).await, b, "nothing changed");
    app.stop().await;
}

#[tokio::test]
async fn concurrent_overlapping_merges_never_lose_or_double_move_a_row() {
    let app = TestApp::spawn().await;
    let t = Tenant::new();
    for round in 0..4 {
        let mut cs = Vec::new();
        for i in 0..4 {
            cs.push(app.create::<pb::Company>(&t, company(&format!("Round {round} company {i}"))).await);
        }
        let mut jobs = Vec::new();
        for (i, c) in cs.iter().enumerate() {
            for n in 0..5 {
                jobs.push(app.create::<pb::Job>(&t, job_at(&c.id, &c.name, i * 10 + n)).await.id);
            }
        }
        // Two merges share source cs[2]: into cs[0] and into cs[1].
        let call = |target: &pb::Company, sources: Vec<String>| {
            let req = pb::MergeCompaniesRequest {
                target_id: target.id.clone(),
                source_ids: sources,
                request_id: String::new(),
            };
            let mut client = app.companies();
            let token = t.writer.clone();
            async move { client.merge_companies(authed(&token, req)).await }
        };
        let (x, y) = tokio::join!(
            call(&cs[0], vec![cs[2].id.clone(), cs[3].id.clone()]),
            call(&cs[1], vec![cs[2].id.clone()])
        );
        let ok = [&x, &y].iter().filter(|r| r.is_ok()).count();
        assert!(ok >= 1, "round {round}: one merge wins: {x:?} {y:?}");
        for r in [&x, &y] {
            if let Err(e) = r {
                assert!(
                    matches!(e.code(), Code::Aborted | Code::FailedPrecondition),
                    "round {round}: the loser is refused cleanly: {e:?}"
                );
            }
        }
        // Every job points at a live company, and the survivor of cs[2]'s jobs is a winner.
        let c2 = app.get::<pb::Company>(&t, &cs[2].id).await;
        assert!(c2.master_company_id == cs[0].id || c2.master_company_id == cs[1].id, "round {round}");
        for id in &jobs {
            let j = app.get::<pb::Job>(&t, id).await;
            let owner = app.get::<pb::Company>(&t, &j.company_id).await;
            assert!(owner.delete_time.is_none(), "round {round}: job {id} points at a merged company");
        }
        let moved = |target: &str| {
            let filter = format!("company_id = \"{target}\"");
            let app = &app;
            let t = &t;
            async move {
                app.list::<pb::Job>(t, ListOpts::filter(filter).page_size(1000).count()).await.total_size
            }
        };
        let mut listed = 0;
        for c in &cs {
            listed += moved(&c.id).await;
        }
        assert_eq!(listed, jobs.len() as i64, "round {round}: every job under exactly one company");
    }
    app.stop().await;
}

#[tokio::test]
async fn jobs_link_to_companies_by_name_key_in_bulk() {
    let app = TestApp::spawn().await;
    let t = Tenant::new();
    let acme = app.create::<pb::Company>(&t, company("ACME Corporation")).await;
    app.create::<pb::Company>(&t, company("Twin Ltd")).await;
    app.create::<pb::Company>(&t, company("Twin Inc")).await;
    let spellings = ["Acme Corp.", "acme", "ACME, Inc", "Twin", "Nobody Known"];
    let mut ids = Vec::new();
    for (i, n) in spellings.iter().enumerate() {
        ids.push(app.create::<pb::Job>(&t, job_at("", n, i)).await.id);
    }
    let link = |max_jobs: i32| {
        let mut client = app.companies();
        let token = t.writer.clone();
        async move {
            client
                .link_jobs_to_companies(authed(&token, pb::LinkJobsToCompaniesRequest { max_jobs }))
                .await
                .map(|r| r.into_inner())
        }
    };
    let first = link(2).await.expect("link");
    assert_eq!((first.linked, first.ambiguous, first.remaining), (2, 1, 1), "{first:?}");
    let second = link(0).await.expect("link");
    assert_eq!((second.linked, second.ambiguous, second.remaining), (1, 1, 0), "{second:?}");
    for id in &ids[..3] {
        assert_eq!(app.get::<pb::Job>(&t, id).await.company_id, acme.id);
    }
    assert_eq!(app.get::<pb::Job>(&t, &ids[3]).await.company_id, "", "ambiguous: left alone");
    assert_eq!(app.get::<pb::Job>(&t, &ids[4]).await.company_id, "");
    let trail = app.audit_trail(&t, &ids[0]).await;
    assert_eq!(trail.last().map(|e| e.action), Some(pb::AuditAction::Update as i32), "each link is audited");
    assert_eq!(link(-1).await.unwrap_err().code(), Code::InvalidArgument);
    app.stop().await;
}

/// V10 replaced the suffix regular expression of `bi_company_key` with a
/// loop over the last words; the keys must be exactly V3's (the index and
/// `companies.name_key` were built with them). Every combination of a
/// stem, a run of legal suffixes and separators, compared in PostgreSQL.
#[tokio::test]
async fn the_company_key_is_the_one_of_the_v3_expression() {
    let db = raw_db().await;
    let stems = ["", "Acme", "ACME Data", "  Société Générale ", "Inc", "co", "Big.Co", "x-y_z", "日本 株式"];
    let suffixes = [
        "",
        " Inc",
        " inc.",
        ", Inc",
        " Corp Ltd",
        " CO co",
        " GmbH & Co. KG",
        " L.L.C.",
        "Inc",
        " incx",
        " Company!!",
    ];
    let names: Vec<String> = stems
        .iter()
        .flat_map(|s| {
            suffixes.iter().flat_map(move |x| [format!("{s}{x}"), format!("{x}{s}"), format!("{s}{x}{x}")])
        })
        .collect();
    let row = db
        .query_one(
            "SELECT count(*), count(*) FILTER (WHERE bi_company_key(n) IS DISTINCT FROM v3), \
             (array_agg(n) FILTER (WHERE bi_company_key(n) IS DISTINCT FROM v3))[1] \
             FROM (SELECT n, coalesce(nullif(btrim(regexp_replace(k, '( (inc|incorporated|corp|corporation|co|company|ltd|limited|llc|llp|lp|plc|gmbh|mbh|ag|kg|kgaa|se|sa|sas|sarl|srl|spa|bv|nv|oy|oyj|ab|as|aps|pty|pte|pvt|kk))+$', '')), ''), k) AS v3 \
                   FROM (SELECT n, btrim(regexp_replace(lower(n), '[^[:alnum:]]+', ' ', 'g')) AS k FROM unnest($1::text[]) n) s) c",
            &[&names],
        )
        .await
        .expect("compare");
    let (total, differ, first): (i64, i64, Option<String>) = (row.get(0), row.get(1), row.get(2));
    assert_eq!(total, names.len() as i64);
    assert_eq!(differ, 0, "first name whose key changed: {first:?}");
    let key: String = db.query_one("SELECT bi_company_key('ACME, Inc. Ltd')", &[]).await.expect("key").get(0);
    assert_eq!(key, "acme");
}

#[tokio::test]
async fn an_import_rejects_rows_naming_a_company_that_does_not_exist() {
    let app = TestApp::spawn().await;
    let t = Tenant::new();
    let live = app.create::<pb::Company>(&t, company("Live")).await;
    let rows = vec![
        job_at(&live.id, "Live", 0),
        job_at(&uuid::Uuid::new_v4().to_string(), "Ghost", 1),
        job_at("", "None", 2),
    ];
    let stream = tokio_stream::iter(rows);
    let run = app.jobs().import_jobs(authed(&t.writer, stream)).await.expect("import").into_inner();
    let run = run.ingest_run.expect("run");
    assert_eq!((run.received, run.inserted, run.failed), (3, 2, 1), "{run:?}");
    assert_eq!(run.errors[0].index, 1);
    assert!(run.errors[0].reason.contains("company_id"), "{:?}", run.errors[0]);
    // A re-import without the company (scrapers send only its name) keeps the link.
    let url = format!("https://jobs.test/{}", uuid::Uuid::new_v4());
    let linked =
        app.create::<pb::Job>(&t, pb::Job { job_url: url.clone(), ..job_at(&live.id, "Live", 3) }).await;
    let again = pb::Job { job_url: url, title: "Job 3 (renamed)".into(), ..job_at("", "Live", 3) };
    let stream = tokio_stream::iter(vec![again]);
    let run = app.jobs().import_jobs(authed(&t.writer, stream)).await.expect("re-import").into_inner();
    assert_eq!(run.ingest_run.expect("run").updated, 1);
    let job = app.get::<pb::Job>(&t, &linked.id).await;
    assert_eq!((job.title.as_str(), job.company_id.as_str()), ("Job 3 (renamed)", live.id.as_str()));
    app.stop().await;
}

/// BatchCreateJobs is one statement for all rows: each company is checked
/// once however many jobs name it, a missing one names the first item that
/// references it and creates nothing, and every job gets its CREATE event.
#[tokio::test]
async fn batch_created_jobs_check_each_company_once_and_are_audited() {
    let app = TestApp::spawn().await;
    let t = Tenant::new();
    let acme = app.create(&t, company("Batch Acme")).await;
    let jobs = |company_ids: &[&str]| pb::BatchCreateJobsRequest {
        requests: company_ids
            .iter()
            .enumerate()
            .map(|(n, id)| pb::CreateJobRequest {
                job: Some(job_at(id, "Batch Acme", n)),
                request_id: String::new(),
            })
            .collect(),
        request_id: String::new(),
    };
    let missing = uuid::Uuid::new_v4().to_string();
    let e = app
        .jobs()
        .batch_create_jobs(authed(&t.writer, jobs(&[&acme.id, "", &missing, &acme.id, &missing])))
        .await
        .unwrap_err();
    assert_status(&e, Code::FailedPrecondition, "REFERENCE_NOT_FOUND");
    assert!(
        e.message().starts_with(&format!("requests[2].job.company_id: company '{missing}'")),
        "{}",
        e.message()
    );
    assert_eq!(app.list_all::<pb::Job>(&t, ListOpts::default()).await.len(), 0, "nothing created");

    let ids: Vec<&str> = (0..300).map(|n| if n % 3 == 0 { "" } else { acme.id.as_str() }).collect();
    let made = app.jobs().batch_create_jobs(authed(&t.writer, jobs(&ids))).await.unwrap().into_inner().jobs;
    assert_eq!(made.len(), 300);
    for (n, j) in made.iter().enumerate() {
        assert_eq!(j.title, format!("Job {n}"), "in request order");
        assert_eq!(j.company_id, ids[n]);
        assert_eq!(app.get::<pb::Job>(&t, &j.id).await, *j, "the answer is the stored job");
    }
    for j in [&made[0], &made[151], &made[299]] {
        let trail = app.audit_trail(&t, &j.id).await;
        assert_eq!(trail.len(), 1, "one event per created job");
        assert_eq!(trail[0].action(), pb::AuditAction::Create);
    }
    app.stop().await;
}
