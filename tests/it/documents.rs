//! DocumentService beyond the conformance suite: versions under concurrent
//! edits, content streams (round trip, broken, wrong digest, oversize),
//! the BASIC view, search with snippets and metadata filters, claims,
//! ownership, ordered concurrent appends and tenant isolation.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use bi_data::{
    auth::{Role, TokenKeys},
    pb::{self, upload_document_content_request::Part},
};
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use tonic::Code;

use crate::{common::*, conformance::assert_status, helpers::structure};

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn doc(title: &str, content: &str) -> pb::Document {
    pb::Document { title: title.into(), content: content.into(), ..Default::default() }
}

async fn create(app: &TestApp, t: &Tenant, d: pb::Document) -> pb::Document {
    let req = pb::CreateDocumentRequest { document: Some(d), request_id: String::new() };
    app.documents().create_document(authed(&t.writer, req)).await.expect("create").into_inner()
}

async fn get(
    app: &TestApp,
    t: &Tenant,
    id: &str,
    view: pb::DocumentView,
) -> Result<pb::Document, tonic::Status> {
    let req = pb::GetDocumentRequest { id: id.into(), view: view as i32 };
    app.documents().get_document(authed(&t.reader, req)).await.map(|r| r.into_inner())
}

async fn update(
    app: &TestApp,
    t: &Tenant,
    d: pb::Document,
    mask: &[&str],
) -> Result<pb::Document, tonic::Status> {
    let update_mask = Some(prost_types::FieldMask { paths: mask.iter().map(|s| s.to_string()).collect() });
    let req = pb::UpdateDocumentRequest { document: Some(d), update_mask, request_id: String::new() };
    app.documents().update_document(authed(&t.writer, req)).await.map(|r| r.into_inner())
}

async fn versions(app: &TestApp, t: &Tenant, id: &str) -> Result<Vec<pb::DocumentVersion>, tonic::Status> {
    let mut out = Vec::new();
    let mut page_token = String::new();
    loop {
        let req = pb::ListDocumentVersionsRequest { document_id: id.into(), page_size: 7, page_token };
        let r = app.documents().list_document_versions(authed(&t.reader, req)).await?.into_inner();
        out.extend(r.versions);
        if r.next_page_token.is_empty() {
            return Ok(out);
        }
        page_token = r.next_page_token;
    }
}

async fn version(app: &TestApp, t: &Tenant, id: &str, n: i64) -> Result<pb::DocumentVersion, tonic::Status> {
    let req = pb::GetDocumentVersionRequest { document_id: id.into(), version: n };
    app.documents().get_document_version(authed(&t.reader, req)).await.map(|r| r.into_inner())
}

fn header(id: &str, content_type: &str, sha256: &str) -> pb::UploadDocumentContentRequest {
    pb::UploadDocumentContentRequest {
        part: Some(Part::Header(pb::UploadHeader {
            document_id: id.into(),
            content_type: content_type.into(),
            sha256: sha256.into(),
            filename: "upload.bin".into(),
            ..Default::default()
        })),
    }
}

fn data(b: Vec<u8>) -> pb::UploadDocumentContentRequest {
    pb::UploadDocumentContentRequest { part: Some(Part::Data(b.into())) }
}

/// Deterministic, incompressible-looking bytes.
fn content(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

async fn upload(
    app: &TestApp,
    t: &Tenant,
    id: &str,
    bytes: &[u8],
    sha256: &str,
) -> Result<pb::Document, tonic::Status> {
    let mut msgs = vec![header(id, "application/octet-stream", sha256)];
    msgs.extend(bytes.chunks(1 << 20).map(|c| data(c.to_vec())));
    app.documents()
        .upload_document_content(authed(&t.writer, futures_util::stream::iter(msgs)))
        .await
        .map(|r| r.into_inner())
}

async fn download(app: &TestApp, t: &Tenant, id: &str, n: i64) -> (pb::DocumentVersion, Vec<u8>, usize) {
    let req = pb::DownloadDocumentContentRequest { document_id: id.into(), version: n };
    let mut s = app
        .documents()
        .download_document_content(authed(&t.reader, req))
        .await
        .expect("download")
        .into_inner();
    let (mut v, mut out, mut biggest) = (None, Vec::new(), 0);
    while let Some(m) = s.message().await.expect("chunk") {
        if let Some(head) = m.version {
            v = Some(head);
        }
        biggest = biggest.max(m.data.len());
        out.extend_from_slice(&m.data);
    }
    (v.expect("the first message names the version"), out, biggest)
}

/// Chunk rows of the tenant, read under its row-level security.
async fn chunk_rows(t: &Tenant) -> i64 {
    let db = raw_db().await;
    let tx_sql = "SELECT set_config('app.tenant_id', $1, false)";
    db.query(tx_sql, &[&t.id.to_string()]).await.expect("scope");
    db.query_one("SELECT count(*) FROM document_chunks", &[]).await.expect("count").get(0)
}

#[tokio::test]
async fn concurrent_content_updates_number_versions_without_gaps() {
    let app = TestApp::spawn().await;
    let t = Tenant::new();
    let d = create(&app, &t, doc("Concurrent SRS", "initial")).await;
    assert_eq!((d.version, d.size_bytes), (1, 7));
    let writers = (0..20).map(|i| {
        let (app, t, id) = (&app, &t, d.id.clone());
        async move {
            let patch =
                pb::Document { id, content: format!("content from writer {i}"), ..Default::default() };
            update(app, t, patch, &["content"]).await.expect("update")
        }
    });
    let done = futures_util::future::join_all(writers).await;
    let mut numbers: Vec<i64> = done.iter().map(|d| d.version).collect();
    numbers.sort();
    assert_eq!(numbers, (2..=21).collect::<Vec<_>>(), "each update got its own next number");
    let listed = versions(&app, &t, &d.id).await.unwrap();
    assert_eq!(listed.iter().map(|v| v.version).collect::<Vec<_>>(), (1..=21).rev().collect::<Vec<_>>());
    for updated in &done {
        let v = version(&app, &t, &d.id, updated.version).await.unwrap();
        assert_eq!(v.content, updated.content, "version {} holds what was sent", updated.version);
        assert_eq!(v.sha256, hex(&Sha256::digest(updated.content.as_bytes())));
        assert_eq!(v.author, "tester");
    }
    // Metadata only: no version. A stale etag: ABORTED.
    let cur = get(&app, &t, &d.id, pb::DocumentView::Basic).await.unwrap();
    let meta = pb::Document {
        id: d.id.clone(),
        metadata: structure(serde_json::json!({"reviewed": true})),
        ..Default::default()
    };
    let after = update(&app, &t, meta, &["metadata"]).await.unwrap();
    assert_eq!(after.version, 21);
    assert_eq!(versions(&app, &t, &d.id).await.unwrap().len(), 21);
    let stale =
        pb::Document { id: d.id.clone(), etag: cur.etag, content: "late".into(), ..Default::default() };
    assert_status(&update(&app, &t, stale, &["content"]).await.unwrap_err(), Code::Aborted, "stale etag");
    assert_eq!(version(&app, &t, &d.id, 0).await.unwrap().version, 21);
    app.stop().await;
}

#[tokio::test]
async fn a_20_mib_upload_downloads_byte_identical() {
    let app = TestApp::spawn().await;
    let t = Tenant::new();
    let d = create(&app, &t, doc("Wireframe", "<html/>")).await;
    let bytes = content(20 << 20, 7);
    let sha = hex(&Sha256::digest(&bytes));
    let up = upload(&app, &t, &d.id, &bytes, &sha).await.expect("upload");
    assert_eq!((up.version, up.size_bytes, up.sha256.as_str()), (2, bytes.len() as i64, sha.as_str()));
    assert_eq!(up.content, "", "binary content is not inline");
    let (v, back, biggest) = download(&app, &t, &d.id, 0).await;
    assert_eq!((v.version, v.size_bytes), (2, bytes.len() as i64));
    assert_eq!(hex(&Sha256::digest(&back)), sha, "byte-identical");
    assert!(biggest <= 64 * 1024, "64 KiB pieces, not {biggest}");
    // Version 1 is still there as it was.
    let (v1, first, _) = download(&app, &t, &d.id, 1).await;
    assert_eq!((v1.version, first.as_slice()), (1, b"<html/>".as_slice()));
    // Unary reads refuse content they cannot carry.
    assert_status(&version(&app, &t, &d.id, 2).await.unwrap_err(), Code::FailedPrecondition, "large version");
    // The same bytes again: no new version.
    assert_eq!(upload(&app, &t, &d.id, &bytes, "").await.unwrap().version, 2);
    // Small text uploads become the inline content, and are searchable.
    let text = "Uploaded requirements: the gateway shall authenticate.";
    let mut msgs = vec![header(&d.id, "text/markdown", "")];
    msgs.push(data(text.as_bytes().to_vec()));
    let r =
        app.documents().upload_document_content(authed(&t.writer, futures_util::stream::iter(msgs))).await;
    let up = r.unwrap().into_inner();
    assert_eq!(up.version, 3);
    assert_eq!(get(&app, &t, &d.id, pb::DocumentView::Full).await.unwrap().content, text);
    app.stop().await;
}

#[tokio::test]
async fn broken_wrong_and_oversize_uploads_store_nothing() {
    let app = TestApp::spawn().await;
    let t = Tenant::new();
    let d = create(&app, &t, doc("Diagram", "graph TD; A-->B")).await;
    let rows_before = chunk_rows(&t).await;

    // Broken in the middle: the client goes away after 3 MiB.
    let sent = Arc::new(AtomicUsize::new(0));
    let counter = sent.clone();
    let head = futures_util::stream::iter(vec![header(&d.id, "", "")]);
    let body = futures_util::stream::iter(0..3).map(move |i| {
        counter.fetch_add(1, Ordering::SeqCst);
        data(content(1 << 20, i))
    });
    let stream = head.chain(body).chain(futures_util::stream::pending());
    let mut client = app.documents();
    let w = t.writer.clone();
    let call = tokio::spawn(async move { client.upload_document_content(authed(&w, stream)).await });
    while sent.load(Ordering::SeqCst) < 3 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    call.abort();
    let _ = call.await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(versions(&app, &t, &d.id).await.unwrap().len(), 1, "a broken stream makes no version");
    assert_eq!(chunk_rows(&t).await, rows_before, "and leaves no chunk behind");

    // A wrong SHA-256.
    let wrong = hex(&Sha256::digest(b"something else"));
    let e = upload(&app, &t, &d.id, &content(3 << 20, 1), &wrong).await.unwrap_err();
    assert_status(&e, Code::InvalidArgument, "wrong sha256");
    assert_eq!(versions(&app, &t, &d.id).await.unwrap().len(), 1);

    // Oversize: refused while the client is still sending (the stream is
    // endless, so only an early refusal ends the call).
    let pulled = Arc::new(AtomicUsize::new(0));
    let p = pulled.clone();
    let endless = futures_util::stream::iter(vec![header(&d.id, "", "")]).chain(
        futures_util::stream::repeat_with(move || {
            p.fetch_add(1, Ordering::SeqCst);
            data(vec![7u8; 1 << 20])
        }),
    );
    let e = tokio::time::timeout(
        Duration::from_secs(60),
        app.documents().upload_document_content(authed(&t.writer, endless)),
    )
    .await
    .expect("refused early")
    .unwrap_err();
    assert_status(&e, Code::ResourceExhausted, "65 MiB");
    let n = pulled.load(Ordering::SeqCst);
    assert!((65..80).contains(&n), "refused soon after 64 MiB (pulled {n} MiB)");
    assert_eq!(versions(&app, &t, &d.id).await.unwrap().len(), 1);
    assert_eq!(chunk_rows(&t).await, rows_before);

    // A stream that starts with data and one naming no document.
    let msgs = vec![data(vec![1, 2, 3])];
    let e =
        app.documents().upload_document_content(authed(&t.writer, futures_util::stream::iter(msgs))).await;
    assert_status(&e.unwrap_err(), Code::InvalidArgument, "no header");
    let e = upload(&app, &t, &uuid::Uuid::new_v4().to_string(), b"x", "").await.unwrap_err();
    assert_status(&e, Code::NotFound, "unknown document");
    app.stop().await;
}

#[tokio::test]
async fn the_basic_view_does_not_read_content() {
    let app = TestApp::spawn().await;
    let t = Tenant::new();
    let d = create(&app, &t, doc("Notes", "large body text")).await;
    let before: std::collections::HashMap<String, u64> =
        app.query_stats().slowest(10_000).into_iter().map(|s| (s.sql, s.count)).collect();
    let basic = get(&app, &t, &d.id, pb::DocumentView::Basic).await.unwrap();
    assert_eq!((basic.content.as_str(), basic.size_bytes), ("", 15));
    let sent: Vec<String> = app
        .query_stats()
        .slowest(10_000)
        .into_iter()
        .filter(|s| s.collection == "documents" && before.get(&s.sql) != Some(&s.count))
        .map(|s| s.sql)
        .collect();
    assert!(!sent.is_empty(), "GetDocument read the documents table");
    for sql in &sent {
        assert!(sql.contains("NULL::text AS content") && !sql.contains("kind, content,"), "{sql}");
    }
    assert_eq!(get(&app, &t, &d.id, pb::DocumentView::Full).await.unwrap().content, "large body text");
    // ListDocuments is BASIC by default.
    let req = pb::ListDocumentsRequest::default();
    let listed = app.documents().list_documents(authed(&t.reader, req)).await.unwrap().into_inner();
    assert_eq!(listed.documents.len(), 1);
    assert_eq!(listed.documents[0].content, "");
    // Unary content has a limit, with a clear error.
    let big = "x".repeat((4 << 20) + 1);
    let req = pb::CreateDocumentRequest { document: Some(doc("Too big", &big)), request_id: String::new() };
    let e = app.documents().create_document(authed(&t.writer, req)).await.unwrap_err();
    assert_status(&e, Code::InvalidArgument, "content over 4 MiB in a unary call");
    assert!(e.message().contains("UploadDocumentContent"), "{}", e.message());
    app.stop().await;
}

async fn search(app: &TestApp, t: &Tenant, query: &str, filter: &str) -> pb::SearchDocumentsResponse {
    let req = pb::SearchDocumentsRequest { query: query.into(), filter: filter.into(), ..Default::default() };
    app.documents().search_documents(authed(&t.reader, req)).await.expect("search").into_inner()
}

#[tokio::test]
async fn search_ranks_title_hits_first_with_snippets_and_filters() {
    let app = TestApp::spawn_with(&["--redis-url", &redis_url()]).await;
    let t = Tenant::new();
    let body = "This note lists the stakeholders. The onboarding flow must support single sign-on for \
                every partner, and audit logging for each step.";
    let in_body = create(
        &app,
        &t,
        pb::Document {
            metadata: structure(serde_json::json!({"project": "atlas", "team": "core"})),
            kind: pb::DocumentKind::Note as i32,
            ..doc("Meeting notes", body)
        },
    )
    .await;
    let in_title = create(
        &app,
        &t,
        pb::Document {
            metadata: structure(serde_json::json!({"project": "zephyr"})),
            kind: pb::DocumentKind::Srs as i32,
            ..doc("Onboarding requirements", "Functional requirements for new customers.")
        },
    )
    .await;
    create(&app, &t, doc("Unrelated", "Quarterly budget figures.")).await;
    let r = search(&app, &t, "onboarding", "").await;
    let ids: Vec<&str> = r.hits.iter().map(|h| h.document.as_ref().unwrap().id.as_str()).collect();
    assert_eq!(ids, vec![in_title.id.as_str(), in_body.id.as_str()], "title above body");
    assert!(r.hits[0].score > r.hits[1].score);
    assert!(r.hits[1].snippet.contains("<b>onboarding</b>"), "{}", r.hits[1].snippet);
    assert!(r.hits[0].snippet.contains("<b>Onboarding</b>"), "{}", r.hits[0].snippet);
    assert!(r.hits.iter().all(|h| h.document.as_ref().unwrap().content.is_empty()), "hits are BASIC");
    // Filters: kind, metadata member, metadata key, owner.
    let only = |r: pb::SearchDocumentsResponse| -> Vec<String> {
        r.hits.into_iter().map(|h| h.document.unwrap().id).collect()
    };
    assert_eq!(only(search(&app, &t, "onboarding", "kind = NOTE").await), vec![in_body.id.clone()]);
    assert_eq!(
        only(search(&app, &t, "onboarding", "metadata.project = \"zephyr\"").await),
        vec![in_title.id.clone()]
    );
    assert_eq!(only(search(&app, &t, "onboarding", "metadata:team").await), vec![in_body.id.clone()]);
    assert_eq!(search(&app, &t, "onboarding", "owner = \"someone else\"").await.hits.len(), 0);
    // ListDocuments takes the same metadata filters.
    let req =
        pb::ListDocumentsRequest { filter: "metadata.project = \"atlas\"".into(), ..Default::default() };
    let listed = app.documents().list_documents(authed(&t.reader, req)).await.unwrap().into_inner();
    assert_eq!(listed.documents.iter().map(|d| d.id.clone()).collect::<Vec<_>>(), vec![in_body.id.clone()]);
    // A write is seen by the next search (cached results are per generation).
    let patch =
        pb::Document { id: in_body.id.clone(), title: "Onboarding meeting".into(), ..Default::default() };
    update(&app, &t, patch, &["title"]).await.unwrap();
    let r = search(&app, &t, "onboarding", "kind = NOTE").await;
    assert_eq!(r.hits[0].document.as_ref().unwrap().title, "Onboarding meeting");
    // And a content change by the next FULL read through the cache.
    get(&app, &t, &in_body.id, pb::DocumentView::Full).await.unwrap();
    let patch = pb::Document { id: in_body.id.clone(), content: "rewritten".into(), ..Default::default() };
    update(&app, &t, patch, &["content"]).await.unwrap();
    assert_eq!(get(&app, &t, &in_body.id, pb::DocumentView::Full).await.unwrap().content, "rewritten");
    app.stop().await;
}

#[tokio::test]
async fn claims_never_hand_one_document_to_two_workers() {
    let app = TestApp::spawn().await;
    let t = Tenant::new();
    for i in 0..6 {
        create(&app, &t, doc(&format!("Pending {i}"), "x")).await;
    }
    let claim = |limit| {
        let (app, t) = (&app, &t);
        async move {
            let req = pb::ClaimDocumentsRequest { limit, request_id: String::new() };
            app.documents()
                .claim_documents(authed(&t.writer, req))
                .await
                .expect("claim")
                .into_inner()
                .documents
        }
    };
    let (a, b) = tokio::join!(claim(4), claim(4));
    let mut ids: Vec<String> = a.iter().chain(&b).map(|d| d.id.clone()).collect();
    assert_eq!(ids.len(), 6, "every pending document claimed once");
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 6, "no document claimed twice");
    assert!(a.iter().chain(&b).all(|d| d.processing_status == pb::ProcessingStatus::Processing as i32));
    assert!(claim(4).await.is_empty());
    // The declared moves: PROCESSING -> READY; READY -> PENDING is illegal.
    let set = |id: &str, s: pb::ProcessingStatus| pb::Document {
        id: id.into(),
        processing_status: s as i32,
        ..Default::default()
    };
    let ready =
        update(&app, &t, set(&a[0].id, pb::ProcessingStatus::Ready), &["processing_status"]).await.unwrap();
    assert_eq!(ready.processing_status, pb::ProcessingStatus::Ready as i32);
    let e = update(&app, &t, set(&a[0].id, pb::ProcessingStatus::Pending), &["processing_status"])
        .await
        .unwrap_err();
    assert_status(&e, Code::FailedPrecondition, "READY -> PENDING");
    let failed = set(&a[1].id, pb::ProcessingStatus::Failed);
    update(&app, &t, failed, &["processing_status"]).await.unwrap();
    let retry = set(&a[1].id, pb::ProcessingStatus::Pending);
    update(&app, &t, retry, &["processing_status"]).await.expect("FAILED -> PENDING: a retry");
    assert_eq!(claim(4).await.iter().map(|d| d.id.clone()).collect::<Vec<_>>(), vec![a[1].id.clone()]);
    app.stop().await;
}

#[tokio::test]
async fn only_the_owner_or_an_admin_deletes() {
    let app = TestApp::spawn().await;
    let t = Tenant::new();
    let d = create(&app, &t, doc("Owned", "mine")).await;
    assert_eq!(d.owner, "tester");
    let other = TokenKeys::new(SECRET).mint(t.id, &[Role::Writer], "someone-else", Duration::from_secs(600));
    let del = |token: String, id: String| {
        let app = &app;
        async move {
            let req = pb::DeleteDocumentRequest { id, ..Default::default() };
            app.documents().delete_document(authed(&token, req)).await.map(|r| r.into_inner())
        }
    };
    // Any reader of the tenant reads it.
    let reader = TokenKeys::new(SECRET).mint(t.id, &[Role::Reader], "a-reader", Duration::from_secs(600));
    let req = pb::GetDocumentRequest { id: d.id.clone(), view: 0 };
    app.documents().get_document(authed(&reader, req)).await.expect("readable by any reader");
    assert_status(
        &del(other.clone(), d.id.clone()).await.unwrap_err(),
        Code::PermissionDenied,
        "not the owner",
    );
    del(t.writer.clone(), d.id.clone()).await.expect("the owner deletes");
    let req = pb::UndeleteDocumentRequest { id: d.id.clone(), request_id: String::new() };
    let e = app.documents().undelete_document(authed(&other, req.clone())).await.unwrap_err();
    assert_status(&e, Code::PermissionDenied, "not the owner");
    app.documents().undelete_document(authed(&t.admin, req)).await.expect("an admin restores");
    let d2 = create(&app, &t, doc("Owned too", "mine")).await;
    del(t.admin.clone(), d2.id).await.expect("an admin deletes another's");
    app.stop().await;
}

#[tokio::test]
async fn concurrent_appends_keep_one_strict_order() {
    let app = TestApp::spawn().await;
    let t = Tenant::new();
    let req = pb::CreateConversationRequest {
        conversation: Some(pb::Conversation { title: "Requirements chat".into(), ..Default::default() }),
        request_id: String::new(),
    };
    let c = app.documents().create_conversation(authed(&t.writer, req)).await.unwrap().into_inner();
    let writers = (0..10).map(|w| {
        let (app, t, id) = (&app, &t, c.id.clone());
        async move {
            for batch in 0..5 {
                let messages = (0..2)
                    .map(|i| pb::Message {
                        role: pb::MessageRole::User as i32,
                        content: format!("w{w} b{batch} m{i}"),
                        token_count: 3,
                        ..Default::default()
                    })
                    .collect();
                let req = pb::AppendMessagesRequest {
                    conversation_id: id.clone(),
                    messages,
                    request_id: String::new(),
                };
                app.documents().append_messages(authed(&t.writer, req)).await.expect("append");
            }
        }
    });
    futures_util::future::join_all(writers).await;
    let mut all = Vec::new();
    let mut page_token = String::new();
    loop {
        let req = pb::ListMessagesRequest { conversation_id: c.id.clone(), page_size: 30, page_token };
        let r = app.documents().list_messages(authed(&t.reader, req)).await.unwrap().into_inner();
        all.extend(r.messages);
        if r.next_page_token.is_empty() {
            break;
        }
        page_token = r.next_page_token;
    }
    assert_eq!(
        all.iter().map(|m| m.seq).collect::<Vec<_>>(),
        (1..=100).collect::<Vec<_>>(),
        "no gap, none lost"
    );
    for w in 0..10 {
        let mine: Vec<&str> =
            all.iter().map(|m| m.content.as_str()).filter(|s| s.starts_with(&format!("w{w} "))).collect();
        let want: Vec<String> = (0..5).flat_map(|b| (0..2).map(move |i| format!("w{w} b{b} m{i}"))).collect();
        assert_eq!(mine, want, "a writer's messages stay in its order, each batch together");
    }
    for pair in all.chunks(2) {
        assert_eq!(
            pair[0].content[..pair[0].content.len() - 1],
            pair[1].content[..pair[1].content.len() - 1]
        );
    }
    let req = pb::GetConversationRequest { id: c.id.clone() };
    let c = app.documents().get_conversation(authed(&t.reader, req)).await.unwrap().into_inner();
    assert_eq!((c.message_count, c.total_tokens), (100, 300));
    // A batch with a bad message appends nothing.
    let messages = vec![
        pb::Message { role: pb::MessageRole::User as i32, content: "ok".into(), ..Default::default() },
        pb::Message { content: "no role".into(), ..Default::default() },
    ];
    let req =
        pb::AppendMessagesRequest { conversation_id: c.id.clone(), messages, request_id: String::new() };
    let e = app.documents().append_messages(authed(&t.writer, req)).await.unwrap_err();
    assert_status(&e, Code::InvalidArgument, "role required");
    let req = pb::GetConversationRequest { id: c.id };
    assert_eq!(
        app.documents().get_conversation(authed(&t.reader, req)).await.unwrap().into_inner().message_count,
        100
    );
    app.stop().await;
}

#[tokio::test]
async fn other_tenants_documents_versions_streams_and_conversations_do_not_exist() {
    let app = TestApp::spawn().await;
    let (t, other) = (Tenant::new(), Tenant::new());
    let d = create(&app, &t, doc("Secret SRS", "secret")).await;
    let req = pb::CreateConversationRequest {
        conversation: Some(pb::Conversation { title: "Secret chat".into(), ..Default::default() }),
        request_id: String::new(),
    };
    let c = app.documents().create_conversation(authed(&t.writer, req)).await.unwrap().into_inner();
    let nf = |r: Result<(), tonic::Status>, what: &str| assert_status(&r.unwrap_err(), Code::NotFound, what);
    nf(get(&app, &other, &d.id, pb::DocumentView::Full).await.map(drop), "GetDocument");
    nf(versions(&app, &other, &d.id).await.map(drop), "ListDocumentVersions");
    nf(version(&app, &other, &d.id, 1).await.map(drop), "GetDocumentVersion");
    let req = pb::DownloadDocumentContentRequest { document_id: d.id.clone(), version: 1 };
    nf(app.documents().download_document_content(authed(&other.reader, req)).await.map(drop), "Download");
    nf(upload(&app, &other, &d.id, b"overwrite", "").await.map(drop), "Upload");
    let patch = pb::Document { id: d.id.clone(), content: "x".into(), ..Default::default() };
    nf(update(&app, &other, patch, &["content"]).await.map(drop), "UpdateDocument");
    let req = pb::GetConversationRequest { id: c.id.clone() };
    nf(app.documents().get_conversation(authed(&other.reader, req)).await.map(drop), "GetConversation");
    let messages = vec![pb::Message { role: 1, content: "hi".into(), ..Default::default() }];
    let req =
        pb::AppendMessagesRequest { conversation_id: c.id.clone(), messages, request_id: String::new() };
    nf(app.documents().append_messages(authed(&other.writer, req)).await.map(drop), "AppendMessages");
    let req = pb::ListMessagesRequest { conversation_id: c.id.clone(), ..Default::default() };
    nf(app.documents().list_messages(authed(&other.reader, req)).await.map(drop), "ListMessages");
    let s = search(&app, &other, "secret", "").await;
    assert!(s.hits.is_empty());
    // Nothing of the owner's changed.
    assert_eq!(versions(&app, &t, &d.id).await.unwrap().len(), 1);
    app.stop().await;
}

#[tokio::test]
async fn uploads_leave_connections_for_other_calls() {
    // A pool of 2: one upload at a time; the other connection serves reads.
    let app = TestApp::spawn_with(&["--pool-size", "2"]).await;
    let t = Tenant::new();
    let d = create(&app, &t, doc("Slots", "x")).await;
    let stalled = futures_util::stream::iter(vec![header(&d.id, "", ""), data(vec![1; 1024])])
        .chain(futures_util::stream::pending());
    let mut client = app.documents();
    let w = t.writer.clone();
    let first = tokio::spawn(async move { client.upload_document_content(authed(&w, stalled)).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = std::time::Instant::now();
    let e = upload(&app, &t, &d.id, b"second", "").await.unwrap_err();
    assert_status(&e, Code::Unavailable, "no upload slot");
    assert!(started.elapsed() >= Duration::from_secs(4), "waited for a slot first");
    get(&app, &t, &d.id, pb::DocumentView::Basic).await.expect("reads still served");
    first.abort();
    let _ = first.await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(upload(&app, &t, &d.id, b"third", "").await.expect("a free slot again").version, 2);
    app.stop().await;
}
