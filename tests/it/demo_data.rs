//! `bi-data demo-data`: what it loads is what the README's examples rely
//! on, and its statuses agree with the event log and the audit trail.

use std::{collections::HashMap, time::Duration};

use bi_data::{
    demo,
    pb::{
        CampaignStatus, ListCampaignEventsRequest, ListCampaignsRequest, ListCompaniesRequest,
        ListDueFollowUpsRequest, ListJobsRequest, ListOpportunitiesRequest, SearchCompaniesRequest,
    },
    service::{Scope, Service},
    store::Store,
};

use crate::common::*;

#[tokio::test]
async fn demo_data_is_consistent_and_has_what_the_readme_uses() {
    let app = TestApp::spawn().await;
    let store = Store::new(&serve_args(&[]).db, Duration::from_secs(1)).expect("store");
    let svc = Service::new(store.clone());
    let t = Tenant::new();
    let scope = Scope {
        tenant: t.id,
        actor: "demo-test".into(),
        admin: true,
        request_id: None,
        trace_id: None,
        timeout: Duration::from_secs(60),
        deadline: None,
        rpc: None,
        lsn: None,
    };
    let jobs = 300;
    let s = demo::load(&svc, &scope, jobs).await.expect("demo data loads");
    store.close();
    assert_eq!(s.jobs, jobs);
    assert_eq!(s.companies, demo::company_count(jobs));
    assert!(s.near_duplicates >= 9, "{s:?}");
    assert!(s.opportunities.iter().all(|(_, n)| *n > 0), "every opportunity status occurs: {s:?}");
    assert!(s.campaigns.iter().all(|(_, n)| *n > 0), "every campaign status occurs: {s:?}");
    assert!(s.due_follow_ups > 0, "{s:?}");
    assert!(s.jobs_ambiguous > 0 && s.jobs_linked_at_creation > 0, "{s:?}");

    let (mut companies, mut outreach, mut job_client) = (app.companies(), app.outreach(), app.jobs());
    let count = |n: i64| usize::try_from(n).unwrap();
    let live = companies
        .list_companies(authed(&t.reader, ListCompaniesRequest { count: true, ..Default::default() }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(count(live.total_size), s.companies);
    let unlinked = job_client
        .list_jobs(authed(
            &t.reader,
            ListJobsRequest { filter: "company_id = null".into(), count: true, ..Default::default() },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(count(unlinked.total_size), s.jobs_ambiguous);

    // The README's fuzzy search finds the three Acme spellings.
    let hits = companies
        .search_companies(authed(
            &t.reader,
            SearchCompaniesRequest { query: "Acmee Corp".into(), page_size: 5, ..Default::default() },
        ))
        .await
        .unwrap()
        .into_inner();
    let mut names: Vec<&str> = hits.companies.iter().map(|c| c.name.as_str()).collect();
    names.sort();
    assert_eq!(names, ["ACME Corp.", "Acme Corporation", "acme corp"]);

    // Opportunity counts per status as summarized.
    let opportunities = companies
        .list_opportunities(authed(
            &t.reader,
            ListOpportunitiesRequest { page_size: 1000, count: true, ..Default::default() },
        ))
        .await
        .unwrap()
        .into_inner();
    let total: usize = s.opportunities.iter().map(|x| x.1).sum();
    assert_eq!(count(opportunities.total_size), total);
    assert!(total <= 1000, "one page holds them all");

    // Every campaign's status is where its events led it, with its stamps.
    let campaigns = outreach
        .list_campaigns(authed(&t.reader, ListCampaignsRequest { page_size: 1000, ..Default::default() }))
        .await
        .unwrap()
        .into_inner()
        .campaigns;
    assert_eq!(campaigns.len(), s.campaigns.iter().map(|x| x.1).sum::<usize>());
    let mut events_seen = 0;
    let mut by_status: HashMap<i32, usize> = HashMap::new();
    for c in &campaigns {
        *by_status.entry(c.status).or_default() += 1;
        let events = outreach
            .list_campaign_events(authed(
                &t.reader,
                ListCampaignEventsRequest { campaign_id: c.id.clone(), ..Default::default() },
            ))
            .await
            .unwrap()
            .into_inner()
            .events;
        events_seen += events.len();
        let seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, (1..=events.len() as i64).collect::<Vec<_>>(), "campaign {}", c.id);
        // CampaignEventType SENT=1..REJECTED=5 are CampaignStatus SENT=2..REJECTED=6.
        let last = events.last().map_or(CampaignStatus::Draft as i32, |e| e.event + 1);
        assert_eq!(c.status, last, "campaign {} status vs its last event", c.id);
        match events.first() {
            Some(first) => assert_eq!(c.sent_time, first.event_time, "campaign {}", c.id),
            None => assert!(c.sent_time.is_none()),
        }
        let times: Vec<_> = events.iter().map(|e| e.event_time.unwrap().seconds).collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]), "campaign {} events in order", c.id);
    }
    assert_eq!(events_seen, s.campaign_events);
    for (status, n) in &s.campaigns {
        let number = CampaignStatus::from_str_name(&format!("CAMPAIGN_STATUS_{status}")).unwrap() as i32;
        assert_eq!(by_status.get(&number).copied().unwrap_or(0), *n, "{status}");
    }

    // The README's ListDueFollowUps has something to show.
    let due = outreach
        .list_due_follow_ups(authed(
            &t.reader,
            ListDueFollowUpsRequest { page_size: 1000, ..Default::default() },
        ))
        .await
        .unwrap()
        .into_inner()
        .campaigns;
    assert_eq!(due.len(), s.due_follow_ups);

    // Documents of every kind with their versions, and the conversation.
    let docs = app.documents();
    let listed = docs
        .clone()
        .list_documents(authed(
            &t.reader,
            bi_data::pb::ListDocumentsRequest { page_size: 1000, ..Default::default() },
        ))
        .await
        .unwrap()
        .into_inner()
        .documents;
    for (kind, n) in &s.documents {
        let number =
            bi_data::pb::DocumentKind::from_str_name(&format!("DOCUMENT_KIND_{kind}")).unwrap() as i32;
        assert!(*n > 0, "{kind}");
        assert_eq!(listed.iter().filter(|d| d.kind == number).count(), *n, "{kind}");
    }
    assert!(listed.iter().any(|d| d.version >= 3), "a document with a few versions");
    assert_eq!(listed.iter().map(|d| d.version as usize).sum::<usize>(), s.document_versions);
    let convs = docs
        .clone()
        .list_conversations(authed(&t.reader, bi_data::pb::ListConversationsRequest::default()))
        .await
        .unwrap()
        .into_inner()
        .conversations;
    assert_eq!(convs.len(), s.conversations);
    assert_eq!(convs[0].message_count as usize, s.messages);
    app.stop().await;
}
