//! The service layer's generic operations, through the real store against
//! the real PostgreSQL: the ones the next resources need (transitions,
//! restrict, merge, ordered appends, counters, views, parent-bound page
//! tokens, after-write hooks, the cache seam). Where no resource declares
//! the behaviour yet, the test declares a variant of an existing one over
//! the same table.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use bi_data::{
    domain::{
        application::APPLICATION,
        audit::Action,
        company::COMPANY,
        job::JOB,
        record::Record,
        schema::{Child, Counter, Field, OnDelete, Resource, Sequence, Transitions},
        value::Value,
    },
    error::Error,
    service::{
        AfterWrite, Cached, Changes, Compute, Draft, ListArgs, ReadCache, Scope, Service, Ticket, Unit, View,
    },
    store::Store,
};
use futures_util::future::BoxFuture;
use uuid::Uuid;

use crate::common::{TestApp, serve_args};

/// A service over the test database (the server is started first: it migrates).
async fn service() -> (TestApp, Service) {
    let app = TestApp::spawn().await;
    let store = Store::new(&serve_args(&[]).db, Duration::from_secs(1)).expect("store");
    (app, Service::new(store))
}

pub(crate) fn scope() -> Scope {
    Scope {
        tenant: Uuid::new_v4(),
        actor: "service-test".into(),
        admin: true,
        request_id: None,
        trace_id: None,
        timeout: Duration::from_secs(10),
        deadline: None,
        rpc: None,
        lsn: None,
    }
}

/// A draft of `res` with the given fields set.
pub(crate) fn draft(
    res: &'static Resource,
    set: &[(&str, Value)],
) -> Option<(Draft, Vec<bi_data::error::FieldViolation>)> {
    let mut values = vec![Value::Null; res.fields.len()];
    let mut flags = vec![false; res.fields.len()];
    for (name, v) in set {
        let i = res.index(name);
        values[i] = v.clone();
        flags[i] = true;
    }
    Some((Draft { values, set: flags }, Vec::new()))
}

pub(crate) fn text(s: &str) -> Value {
    Value::Text(s.into())
}

pub(crate) async fn new_job(svc: &Service, scope: &Scope, res: &'static Resource, title: &str) -> Record {
    svc.create(scope, res, draft(res, &[("title", text(title)), ("company_name", text("Acme"))]), "")
        .await
        .expect("job created")
}

/// A copy of a declaration with some parts replaced, for the life of the test binary.
fn variant(f: impl FnOnce(&mut Resource)) -> &'static Resource {
    let mut r = JOB;
    f(&mut r);
    Box::leak(Box::new(r))
}

/// Sets one field from the previous record's values.
fn with(res: &'static Resource, rec: &Record, name: &str, v: Value) -> Vec<Value> {
    let mut next = rec.values.clone();
    next[res.index(name)] = v;
    next
}

#[tokio::test]
async fn declared_transitions_refuse_illegal_moves_and_name_the_allowed_ones() {
    static FLOW: [Transitions; 1] = [Transitions {
        field: "status",
        moves: &[("DISCOVERED", &["SAVED", "CLOSED"]), ("SAVED", &["APPLIED", "CLOSED"])],
    }];
    let res = variant(|r| r.transitions = &FLOW);
    let (_app, svc) = service().await;
    let s = scope();
    let job = new_job(&svc, &s, res, "Flow").await;
    assert_eq!(job.get(res, "status"), &text("DISCOVERED"));
    let err = svc
        .mutate(&s, res, job.id(), "", "", "Advance", |cur| Ok(with(res, cur, "status", text("APPLIED"))))
        .await
        .expect_err("DISCOVERED -> APPLIED is not declared");
    match err {
        Error::IllegalTransition { from, to, allowed, .. } => {
            assert_eq!((from.as_str(), to.as_str()), ("DISCOVERED", "APPLIED"));
            assert_eq!(allowed, &["SAVED", "CLOSED"]);
        }
        e => panic!("expected an illegal transition, got {e:?}"),
    }
    let saved = svc
        .mutate(&s, res, job.id(), &job.etag(), "", "Advance", |cur| {
            Ok(with(res, cur, "status", text("SAVED")))
        })
        .await
        .expect("DISCOVERED -> SAVED is declared");
    assert_eq!(saved.get(res, "status"), &text("SAVED"));
    assert_eq!(saved.revision, job.revision + 1);
    // A stale etag is refused before the closure runs.
    let stale = svc.mutate(&s, res, job.id(), &job.etag(), "", "Advance", |_| panic!("not called")).await;
    assert!(matches!(stale, Err(Error::Aborted { reason: "ETAG_MISMATCH", .. })), "{stale:?}");
}

#[tokio::test]
async fn restrict_refuses_a_delete_that_would_orphan_live_children() {
    static KEEP: [Child; 1] =
        [Child { resource: &APPLICATION, column: "job_id", on_delete: OnDelete::Restrict }];
    let res = variant(|r| r.children = &KEEP);
    let (_app, svc) = service().await;
    let s = scope();
    let job = new_job(&svc, &s, res, "Parent").await;
    let app = svc
        .create(&s, &APPLICATION, draft(&APPLICATION, &[("job_id", Value::Uuid(job.id()))]), "")
        .await
        .expect("application");
    let err =
        svc.set_deleted(&s, res, &job.id().to_string(), "", true, false, "").await.expect_err("refused");
    assert!(matches!(err, Error::FailedPrecondition { reason: "HAS_CHILDREN", .. }), "{err:?}");
    assert!(
        svc.get(&s, res, &job.id().to_string(), View::Full).await.unwrap().get(res, "delete_time").is_null()
    );
    // Forced, the delete takes the child along; the undelete brings it back.
    svc.set_deleted(&s, res, &job.id().to_string(), "", true, true, "").await.expect("forced delete");
    let child = svc.get(&s, &APPLICATION, &app.id().to_string(), View::Full).await.unwrap();
    assert!(!child.get(&APPLICATION, "delete_time").is_null(), "the forced delete took the child");
    svc.set_deleted(&s, res, &job.id().to_string(), "", false, false, "").await.expect("undelete");
    let child = svc.get(&s, &APPLICATION, &app.id().to_string(), View::Full).await.unwrap();
    assert!(child.get(&APPLICATION, "delete_time").is_null(), "the undelete restored it");
}

async fn new_company(svc: &Service, s: &Scope, name: &str) -> Record {
    svc.create(s, &COMPANY, draft(&COMPANY, &[("name", text(name))]), "").await.expect("company")
}

#[tokio::test]
async fn merge_reassigns_children_deletes_the_merged_record_and_audits_it() {
    let (_app, svc) = service().await;
    let s = scope();
    let (into, from) = (new_company(&svc, &s, "Survivor").await, new_company(&svc, &s, "Merged").await);
    for i in 0..2 {
        let d = draft(
            &JOB,
            &[
                ("title", text(&format!("j{i}"))),
                ("company_name", text("Merged")),
                ("company_id", Value::Uuid(from.id())),
            ],
        );
        svc.create(&s, &JOB, d, "").await.expect("job");
    }
    let merged = svc
        .merge(&s, &COMPANY, &into.id().to_string(), &[from.id().to_string()], "merge-1")
        .await
        .expect("merge");
    let filter = format!("company_id = \"{}\"", into.id());
    let jobs = svc.list(&s, &JOB, ListArgs { filter: &filter, ..ListArgs::default() }).await.unwrap();
    assert_eq!(jobs.items.len(), 2, "both jobs follow the survivor");
    let gone = svc.get(&s, &COMPANY, &from.id().to_string(), View::Full).await.unwrap();
    assert!(!gone.get(&COMPANY, "delete_time").is_null(), "the merged company is soft-deleted");
    assert_eq!(gone.get(&COMPANY, "master_company_id"), &Value::Uuid(into.id()));
    let events = svc
        .list(
            &s,
            &bi_data::domain::audit::AUDIT_EVENT,
            ListArgs { filter: &format!("entity_id = \"{}\"", into.id()), ..ListArgs::default() },
        )
        .await
        .unwrap();
    let actions: Vec<&Value> =
        events.items.iter().map(|e| e.get(&bi_data::domain::audit::AUDIT_EVENT, "action")).collect();
    assert!(actions.contains(&&text(Action::Merge.as_str())), "{actions:?}");
    // The same request id replays the first answer.
    let again =
        svc.merge(&s, &COMPANY, &into.id().to_string(), &[from.id().to_string()], "merge-1").await.unwrap();
    assert_eq!(again, merged);
    assert!(matches!(
        svc.merge(&s, &COMPANY, &into.id().to_string(), &[into.id().to_string()], "").await,
        Err(Error::InvalidArgument(_))
    ));
}

#[tokio::test]
async fn ordered_appends_number_children_without_gaps_under_concurrency() {
    static SEQ: Sequence = Sequence { parent: "company_id", field: "salary_min" };
    let res = variant(|r| r.sequence = Some(&SEQ));
    let (_app, svc) = service().await;
    let s = scope();
    let parent = Value::Uuid(new_company(&svc, &s, "Parent").await.id());
    let appends = (0..16).map(|i| {
        let (svc, s, parent) = (svc.clone(), s.clone(), parent.clone());
        tokio::spawn(async move {
            let d = draft(
                res,
                &[("title", text(&format!("m{i}"))), ("company_name", text("c")), ("company_id", parent)],
            );
            svc.create(&s, res, d, "").await.expect("append")
        })
    });
    let mut numbers: Vec<i64> = Vec::new();
    for h in appends {
        if let Value::Int(n) = h.await.unwrap().get(res, "salary_min") {
            numbers.push(*n);
        }
    }
    numbers.sort_unstable();
    assert_eq!(numbers, (1..=16).collect::<Vec<_>>(), "one number each, no gap, no duplicate");
    // Another parent starts at 1.
    let second = Value::Uuid(new_company(&svc, &s, "Second").await.id());
    let other = draft(res, &[("title", text("x")), ("company_name", text("c")), ("company_id", second)]);
    assert_eq!(svc.create(&s, res, other, "").await.unwrap().get(res, "salary_min"), &Value::Int(1));
}

#[tokio::test]
async fn a_counter_moves_by_exactly_one_per_change_of_its_fields() {
    static VERSION: Counter = Counter { field: "salary_max", bumps_on: &["description"] };
    let res = variant(|r| r.counter = Some(&VERSION));
    let (_app, svc) = service().await;
    let s = scope();
    let job = new_job(&svc, &s, res, "Versioned").await;
    assert_eq!(job.get(res, "salary_max"), &Value::Int(1));
    let renamed = svc
        .mutate(&s, res, job.id(), "", "", "Update", |c| Ok(with(res, c, "title", text("Renamed"))))
        .await
        .unwrap();
    assert_eq!(renamed.get(res, "salary_max"), &Value::Int(1), "no change of a counted field");
    let id = job.id();
    let writers = (0..10).map(|i| {
        let (svc, s) = (svc.clone(), s.clone());
        tokio::spawn(async move {
            svc.mutate(&s, res, id, "", "", "Update", move |c| {
                Ok(with(res, c, "description", text(&format!("v{i}"))))
            })
            .await
            .expect("update")
        })
    });
    let mut seen: Vec<i64> = Vec::new();
    for w in writers {
        if let Value::Int(n) = w.await.unwrap().get(res, "salary_max") {
            seen.push(*n);
        }
    }
    seen.sort_unstable();
    assert_eq!(seen, (2..=11).collect::<Vec<_>>(), "each concurrent change got its own number");
}

#[tokio::test]
async fn the_basic_view_leaves_large_fields_in_the_database() {
    let fields: Vec<Field> = JOB
        .fields
        .iter()
        .map(|f| Field { large: f.name == "description", ..Field::new(f.name, f.kind) })
        .map(|f| {
            let src = JOB.field(f.name).unwrap();
            Field {
                nullable: src.nullable,
                mutable: src.mutable,
                sortable: src.sortable && !f.large,
                filterable: src.filterable && !f.large,
                ..f
            }
        })
        .collect();
    let fields: &'static [Field] = Box::leak(fields.into_boxed_slice());
    let res = variant(|r| r.fields = fields);
    let (_app, svc) = service().await;
    let s = scope();
    let d = draft(
        res,
        &[("title", text("Big")), ("company_name", text("Acme")), ("description", text("a long text"))],
    );
    let job = svc.create(&s, res, d, "").await.unwrap();
    let id = job.id().to_string();
    let basic = svc.get(&s, res, &id, View::Basic).await.unwrap();
    assert!(basic.get(res, "description").is_null(), "BASIC does not read the large column");
    assert_eq!(basic.get(res, "title"), &text("Big"));
    let full = svc.get(&s, res, &id, View::Full).await.unwrap();
    assert_eq!(full.get(res, "description"), &text("a long text"));
    let page = svc.list(&s, res, ListArgs { view: View::Basic, ..ListArgs::default() }).await.unwrap();
    assert!(page.items.iter().all(|r| r.get(res, "description").is_null()));
}

#[tokio::test]
async fn child_page_tokens_are_bound_to_their_parent() {
    let (_app, svc) = service().await;
    let s = scope();
    let (a, b) = (new_job(&svc, &s, &JOB, "A").await, new_job(&svc, &s, &JOB, "B").await);
    for job in [&a, &a, &a, &b] {
        svc.create(&s, &APPLICATION, draft(&APPLICATION, &[("job_id", Value::Uuid(job.id()))]), "")
            .await
            .unwrap();
    }
    let first = ListArgs { page_size: 2, ..ListArgs::default() };
    let page = svc.list_children(&s, &APPLICATION, "job_id", &a.id().to_string(), first).await.unwrap();
    assert_eq!(page.items.len(), 2);
    assert!(!page.next_page_token.is_empty());
    let next = ListArgs { page_token: &page.next_page_token, ..first };
    let err = svc
        .list_children(&s, &APPLICATION, "job_id", &b.id().to_string(), next)
        .await
        .expect_err("other parent");
    assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
    let rest = svc.list_children(&s, &APPLICATION, "job_id", &a.id().to_string(), next).await.unwrap();
    assert_eq!(rest.items.len(), 1);
    assert!(rest.items.iter().all(|r| r.get(&APPLICATION, "job_id") == &Value::Uuid(a.id())));
}

/// Records what it saw; fails when told to.
struct Hook {
    seen: Mutex<Vec<(bool, Uuid)>>,
    fail: bool,
}

impl AfterWrite for Hook {
    fn after_write<'a>(
        &'a self,
        unit: &'a Unit<'_>,
        before: Option<&'a Record>,
        after: &'a Record,
    ) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            assert!(unit.scope().actor == "service-test");
            self.seen.lock().unwrap().push((before.is_some(), after.id()));
            if self.fail { Err(Error::invalid("content", "refused by the hook")) } else { Ok(()) }
        })
    }
}

#[tokio::test]
async fn after_write_hooks_run_inside_the_write_and_can_undo_it() {
    let (_app, svc) = service().await;
    let s = scope();
    let hook = Arc::new(Hook { seen: Mutex::default(), fail: false });
    let hooked = svc.clone().with_hook(&JOB, hook.clone());
    let job = new_job(&hooked, &s, &JOB, "Hooked").await;
    hooked
        .mutate(&s, &JOB, job.id(), "", "", "Update", |c| Ok(with(&JOB, c, "title", text("T2"))))
        .await
        .unwrap();
    assert_eq!(*hook.seen.lock().unwrap(), vec![(false, job.id()), (true, job.id())]);
    let failing = svc.clone().with_hook(&JOB, Arc::new(Hook { seen: Mutex::default(), fail: true }));
    let err = failing
        .create(&s, &JOB, draft(&JOB, &[("title", text("Never")), ("company_name", text("Acme"))]), "")
        .await
        .expect_err("the hook refuses");
    assert!(matches!(err, Error::InvalidArgument(_)));
    let page = svc
        .list(&s, &JOB, ListArgs { filter: "title = \"Never\"", count: true, ..ListArgs::default() })
        .await
        .unwrap();
    assert_eq!(page.total_size, 0, "nothing of the refused write remains");
}

/// A cache that keeps records in memory and logs what the seam tells it.
#[derive(Default)]
struct Recorder {
    filled: Mutex<Vec<Uuid>>,
    invalidated: Mutex<Vec<(String, Uuid)>>,
}

impl ReadCache for Recorder {
    fn get<'a>(&'a self, _: &'a Scope, _: &'static Resource, ids: &'a [Uuid]) -> BoxFuture<'a, Vec<Cached>> {
        Box::pin(async { ids.iter().map(|_| Cached::Miss(Ticket(1))).collect() })
    }
    fn fill<'a>(
        &'a self,
        _: &'a Scope,
        _: &'static Resource,
        recs: &'a [(Ticket, &'a Record)],
    ) -> BoxFuture<'a, ()> {
        Box::pin(async move { self.filled.lock().unwrap().extend(recs.iter().map(|(_, r)| r.id())) })
    }
    fn query<'a>(
        &'a self,
        _: &'a Scope,
        _: &'a [&'static Resource],
        _: String,
        compute: Compute<'a>,
    ) -> BoxFuture<'a, Result<Vec<u8>, Error>> {
        compute
    }
    fn invalidate<'a>(&'a self, _: &'a Scope, changes: &'a Changes) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            self.invalidated
                .lock()
                .unwrap()
                .extend(changes.rows.iter().map(|(r, id)| (r.name.to_owned(), *id)))
        })
    }
}

#[tokio::test]
async fn the_cache_seam_is_filled_on_reads_and_told_every_changed_row_after_commit() {
    let (_app, svc) = service().await;
    let cache = Arc::new(Recorder::default());
    let svc = svc.with_cache(cache.clone());
    let s = scope();
    let job = new_job(&svc, &s, &JOB, "Cached").await;
    let app = svc
        .create(&s, &APPLICATION, draft(&APPLICATION, &[("job_id", Value::Uuid(job.id()))]), "")
        .await
        .unwrap();
    svc.get(&s, &JOB, &job.id().to_string(), View::Full).await.unwrap();
    assert_eq!(*cache.filled.lock().unwrap(), vec![job.id()]);
    cache.invalidated.lock().unwrap().clear();
    svc.set_deleted(&s, &JOB, &job.id().to_string(), "", true, false, "").await.unwrap();
    let told = cache.invalidated.lock().unwrap().clone();
    assert!(told.contains(&("job".into(), job.id())), "{told:?}");
    assert!(told.contains(&("application".into(), app.id())), "the cascaded child too: {told:?}");
}

#[tokio::test]
async fn search_is_declared_per_resource_with_snippets_where_declared() {
    use bi_data::{domain::schema::SearchSpec, service::SearchArgs};
    static SPEC: SearchSpec = SearchSpec {
        vector: Some("search_vector"),
        config: "english",
        fuzzy: &["title"],
        snippet: &["description"],
        normalize: None,
        threshold: None,
        ranking: bi_data::domain::schema::Ranking::CoverDensity,
    };
    let res = variant(|r| r.search = Some(&SPEC));
    let (_app, svc) = service().await;
    let s = scope();
    let d = draft(
        res,
        &[
            ("title", text("Pipeline engineer")),
            ("company_name", text("Acme")),
            ("description", text("You will build the ingestion pipeline for our warehouse team.")),
        ],
    );
    let job = svc.create(&s, res, d, "").await.unwrap();
    let page = svc.search(&s, res, SearchArgs { query: "warehouse", ..SearchArgs::default() }).await.unwrap();
    assert_eq!(page.hits.iter().map(|h| h.record.id()).collect::<Vec<_>>(), vec![job.id()]);
    assert!(!page.fuzzy);
    let snippet = page.hits[0].snippet.as_deref().unwrap_or_default();
    assert!(snippet.contains("<b>warehouse</b>"), "{snippet}");
    // The trigram fallback on the declared fuzzy column, without snippets.
    let fuzzy = svc
        .search(&s, res, SearchArgs { query: "Pipeleine enginear", ..SearchArgs::default() })
        .await
        .unwrap();
    assert!(fuzzy.fuzzy);
    assert_eq!(fuzzy.hits.first().map(|h| h.record.id()), Some(job.id()));
    assert!(fuzzy.hits[0].snippet.is_none());
}

#[tokio::test]
async fn read_only_resources_are_not_written_through_the_generic_operations() {
    use bi_data::domain::ingest::INGEST_RUN;
    let (_app, svc) = service().await;
    let s = scope();
    let err = svc.create(&s, &INGEST_RUN, draft(&INGEST_RUN, &[("source_site", text("x"))]), "").await;
    assert!(matches!(err, Err(Error::Internal(_))), "{err:?}");
    let page = svc.list(&s, &INGEST_RUN, ListArgs { count: true, ..ListArgs::default() }).await.unwrap();
    assert_eq!(page.total_size, 0);
}

#[tokio::test]
async fn a_batch_repeating_an_item_request_id_creates_it_once() {
    use bi_data::service::BatchItem;
    let (_app, svc) = service().await;
    let s = scope();
    let item = |title: &str| BatchItem {
        draft: draft(
            &JOB,
            &[("title", text(title)), ("company_name", text("Acme")), ("job_url", text("https://x/dup"))],
        ),
        request_id: "item-dup".into(),
    };
    let out = svc.batch_create(&s, &JOB, vec![item("first"), item("second")], "").await.expect("batch");
    assert_eq!(out.len(), 2);
    assert_eq!(out[0], out[1], "the repeat replays the first item");
    let page = svc.list(&s, &JOB, ListArgs { count: true, ..ListArgs::default() }).await.unwrap();
    assert_eq!(page.total_size, 1);
}

/// `Tx::commit_with` sends its statements and COMMIT together; a statement
/// that fails before it is sent (here a parameter of the wrong type, which
/// does not encode) must not let the COMMIT behind it keep the
/// transaction's earlier writes. Nor may one that fails in the server.
#[tokio::test]
async fn commit_with_keeps_nothing_when_a_statement_fails_before_or_after_it_is_sent() {
    let (_app, _svc) = service().await;
    let store = Store::new(&serve_args(&[]).db, Duration::from_secs(1)).expect("store");
    let s = scope();
    let insert = "INSERT INTO idempotency_keys (tenant_id, request_id, method, response) VALUES ($1, $2, 'M', '\\x00')";
    let count = |rid: &'static str| {
        let store = &store;
        let s = &s;
        async move {
            let rows = store
                .read(s, &[("SELECT count(*) FROM idempotency_keys WHERE request_id = $1", &[&rid])])
                .await;
            rows.expect("count")[0][0].get::<_, i64>(0)
        }
    };
    // Fails before it is sent: `$2` is text, an integer does not encode.
    let tx = store.begin(&s).await.expect("begin");
    tx.query(insert, &[&s.tenant, &"unsent-1"]).await.expect("first write");
    tx.commit_with(&[(insert, &[&s.tenant, &7_i32]), (insert, &[&s.tenant, &"unsent-2"])])
        .await
        .expect_err("a parameter that does not encode");
    assert_eq!(count("unsent-1").await, 0, "the earlier write was not committed");
    assert_eq!(count("unsent-2").await, 0);
    // Fails in the server: the second row repeats the first's key.
    let tx = store.begin(&s).await.expect("begin");
    tx.query(insert, &[&s.tenant, &"sent-1"]).await.expect("first write");
    tx.commit_with(&[(insert, &[&s.tenant, &"sent-2"]), (insert, &[&s.tenant, &"sent-2"])])
        .await
        .expect_err("a duplicate key");
    assert_eq!(count("sent-1").await, 0, "rolled back behind the failed statement");
    assert_eq!(count("sent-2").await, 0);
    // And when every statement succeeds, all of it is kept.
    let tx = store.begin(&s).await.expect("begin");
    tx.query(insert, &[&s.tenant, &"ok-1"]).await.expect("first write");
    tx.commit_with(&[(insert, &[&s.tenant, &"ok-2"])]).await.expect("commit");
    assert_eq!((count("ok-1").await, count("ok-2").await), (1, 1));
}
