//! A Python program using the client package (`examples/python/lifecycle.py`
//! on `bi_data_client`, installed by `python_client::client_python`) walks company -> opportunity -> campaign
//! -> events -> due follow-ups against a live server; the script checks
//! every answer itself and this test checks what it left behind.

use std::process::Command;

use bi_data::pb::{
    CampaignEventType, CampaignStatus, GetCampaignRequest, GetOpportunityRequest, ListCampaignEventsRequest,
    OpportunityStatus,
};

use crate::common::*;
use crate::python_client::client_python;

#[tokio::test]
async fn python_client_walks_the_outreach_lifecycle() {
    let app = TestApp::spawn().await;
    let t = Tenant::new();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/python/lifecycle.py");
    let addr = app.addr.to_string();
    let token = t.writer.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(client_python())
            .args([script, "--addr", &addr, "--token", &token])
            .output()
            .expect("the client venv's python runs")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "lifecycle.py failed ({}):\n{stdout}\n{stderr}", out.status);
    let summary = stdout.trim_end().strip_suffix("lifecycle ok").expect("the script's last line");
    let summary: serde_json::Value = serde_json::from_str(summary).expect("a JSON summary");
    assert_eq!(summary["events"], 3);
    assert_eq!(summary["due_follow_ups"], 1);
    assert_eq!(summary["campaign_status"], "CAMPAIGN_STATUS_REPLIED");
    assert!(
        summary["opportunity_illegal_move"].as_str().unwrap().contains("allowed: ACCEPTED, REJECTED"),
        "{summary}"
    );

    // What the Python client wrote is what a Rust client of the same tenant reads.
    let id = |k: &str| summary[k].as_str().unwrap().to_owned();
    let campaign = app
        .outreach()
        .get_campaign(authed(&t.reader, GetCampaignRequest { id: id("campaign_id") }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(campaign.status, CampaignStatus::Replied as i32);
    assert_eq!(campaign.company_id, id("company_id"));
    assert_eq!(campaign.opportunity_id, id("opportunity_id"));
    assert!(campaign.sent_time.is_some() && campaign.response_time.is_some());
    let events = app
        .outreach()
        .list_campaign_events(authed(
            &t.reader,
            ListCampaignEventsRequest { campaign_id: id("campaign_id"), ..Default::default() },
        ))
        .await
        .unwrap()
        .into_inner()
        .events;
    let seen: Vec<(i64, i32)> = events.iter().map(|e| (e.seq, e.event)).collect();
    assert_eq!(
        seen,
        [
            (1, CampaignEventType::Sent as i32),
            (2, CampaignEventType::Opened as i32),
            (3, CampaignEventType::Replied as i32)
        ]
    );
    let opportunity = app
        .companies()
        .get_opportunity(authed(&t.reader, GetOpportunityRequest { id: id("opportunity_id") }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(opportunity.status, OpportunityStatus::Accepted as i32);
    assert!(opportunity.proof_of_concept_created);
    app.stop().await;
}
