//! The README is executed: `scripts/readme_check.py` runs every example of
//! its walkthroughs (from "Trying it with grpcurl" to "Filters") with the
//! installed grpcurl against a server holding a fresh demo tenant, and fails
//! on an error or on an output that no longer matches what the README shows.

use std::{process::Command, time::Duration};

use bi_data::{
    auth::{Role, TokenKeys},
    demo,
    service::{Scope, Service},
    store::Store,
};

use crate::common::*;

#[tokio::test]
async fn every_readme_walkthrough_example_runs_and_matches_its_output() {
    let app = TestApp::spawn().await;
    // A demo tenant, as `scripts/run-demo.sh` makes one (default size).
    let t = Tenant::new();
    let store = Store::new(&serve_args(&[]).db, Duration::from_secs(1)).expect("store");
    let scope = Scope {
        tenant: t.id,
        actor: "readme".into(),
        admin: true,
        request_id: None,
        trace_id: None,
        timeout: Duration::from_secs(120),
        deadline: None,
        rpc: None,
        lsn: None,
    };
    demo::load(&Service::new(store.clone()), &scope, 1000).await.expect("demo data loads");
    store.close();
    // The demo token: every role, as run-demo.sh writes it.
    let token = TokenKeys::new(SECRET).mint(
        t.id,
        &[Role::Reader, Role::Writer, Role::Admin],
        "readme",
        Duration::from_secs(3600),
    );
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let addr = app.addr.to_string();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .args([
                concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/readme_check.py"),
                "--addr",
                &addr,
                "--token",
                &token,
                "--secret",
                SECRET,
                "--bin",
                env!("CARGO_BIN_EXE_bi-data"),
            ])
            // The README's commands find grpcurl, buf and the venv's Python
            // through scripts/env.sh, which its first block sources.
            .env("PYTHON", python)
            .output()
            .expect("python3 runs")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "README examples failed:\n{stdout}\n{stderr}");
    let summary = stdout.lines().last().unwrap_or_default();
    let (ok, all) = summary.split_once(" of ").expect("a summary line");
    assert_eq!(ok, all.split(' ').next().unwrap(), "{summary}");
    assert!(ok.parse::<usize>().unwrap() >= 30, "the walkthroughs hold at least 30 blocks: {summary}");
}
