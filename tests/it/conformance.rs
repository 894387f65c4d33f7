//! The conformance suite: generic checks of the standard methods, run for
//! every resource by one `conformance!` line naming the checks it runs.
//!
//! Each check needs some operations ([`CHECKS`]); the generated
//! `checks_match_operations` test fails when a resource lists a check it
//! cannot run or leaves out one its operations allow, so the set each
//! resource runs is explicit and complete.

use std::collections::HashSet;

use bi_data::pb;
use tonic::Code;

use crate::{common::*, helpers::*};

/// Every check and the operations it needs.
pub const CHECKS: &[(&str, &[Op])] = &[
    ("create_round_trip", &[Op::Create, Op::List]),
    ("create_sparse", &[Op::Create, Op::List]),
    ("create_with_other_tenants_parent", &[Op::Create, Op::List, Op::Parents]),
    ("get_round_trip", &[Op::Create, Op::Get]),
    ("batch_get", &[Op::Create, Op::BatchGet]),
    ("update_changes_only_masked_fields", &[Op::Create, Op::Get, Op::Update]),
    ("filters", &[Op::Create, Op::List]),
    ("paging", &[Op::Create, Op::List]),
    ("order_by_every_sortable_field", &[Op::Create, Op::List]),
    ("page_token_bound_to_show_deleted", &[Op::Create, Op::List, Op::ShowDeleted]),
    ("mask_unknown_path", &[Op::Create, Op::Get, Op::Update]),
    ("mask_output_only_path", &[Op::Create, Op::Get, Op::Update]),
    ("update_stale_etag", &[Op::Create, Op::Get, Op::Update]),
    ("delete_stale_etag", &[Op::Create, Op::Get, Op::Update, Op::Delete]),
    ("soft_delete", &[Op::Create, Op::Get, Op::List, Op::Delete, Op::Undelete]),
    ("update_deleted", &[Op::Create, Op::Get, Op::Update, Op::Delete]),
    ("request_id_replay", &[Op::Create, Op::List, Op::RequestId]),
    ("request_id_concurrent", &[Op::Create, Op::List, Op::RequestId]),
    ("request_id_replay_update", &[Op::Create, Op::Get, Op::Update, Op::RequestId, Op::Audit]),
    ("request_id_replay_delete", &[Op::Create, Op::Get, Op::Delete, Op::RequestId]),
    ("request_id_other_method", &[Op::Create, Op::RequestId]),
    ("audit_create", &[Op::Create, Op::Audit]),
    ("audit_update", &[Op::Create, Op::Update, Op::Audit]),
    ("audit_delete_undelete", &[Op::Create, Op::Delete, Op::Undelete, Op::Audit]),
    ("other_tenant_list", &[Op::Create, Op::List]),
    ("other_tenant_get", &[Op::Create, Op::Get]),
    ("other_tenant_batch_get", &[Op::Create, Op::BatchGet]),
    ("other_tenant_update", &[Op::Create, Op::Get, Op::Update]),
    ("other_tenant_delete", &[Op::Create, Op::Get, Op::Delete, Op::Undelete]),
];

/// The checks `R`'s operations allow.
pub fn applicable<R: TestResource>() -> Vec<&'static str> {
    CHECKS.iter().filter(|(_, needs)| needs.iter().all(|op| R::OPS.contains(op))).map(|(c, _)| *c).collect()
}

pub fn assert_checks<R: TestResource>(listed: &[&str]) {
    let unknown: Vec<&&str> = listed.iter().filter(|c| !CHECKS.iter().any(|(k, _)| k == *c)).collect();
    assert!(unknown.is_empty(), "{}: unknown checks {unknown:?}", R::ENTITY);
    let want = applicable::<R>();
    let extra: Vec<&&str> = listed.iter().filter(|c| !want.contains(c)).collect();
    let missing: Vec<&&str> = want.iter().filter(|c| !listed.contains(c)).collect();
    assert!(
        extra.is_empty() && missing.is_empty(),
        "{} (ops {:?}): listed checks it cannot run {extra:?}; checks it should run {missing:?}",
        R::ENTITY,
        R::OPS
    );
}

/// A server (with the shared cache on: every check runs through it) and a
/// fresh tenant with its parents prepared.
struct Fixture<R: TestResource> {
    app: TestApp,
    t: Tenant,
    ctx: R::Ctx,
}

impl<R: TestResource> Fixture<R> {
    async fn new() -> Self {
        let app = TestApp::spawn_with(&["--redis-url", &redis_url()]).await;
        let t = Tenant::new();
        let ctx = app.prepare::<R>(&t).await;
        Fixture { app, t, ctx }
    }

    fn sample(&self, n: usize) -> R {
        R::sample(&self.ctx, n)
    }

    async fn created(&self, n: usize) -> R {
        self.app.create::<R>(&self.t, self.sample(n)).await
    }

    async fn ids(&self, o: ListOpts) -> Vec<String> {
        self.app.list_ids::<R>(&self.t, o).await
    }
}

fn by_id(id: &str) -> ListOpts {
    ListOpts::filter(format!("id = {}", quote(id)))
}

fn at(t: Option<prost_types::Timestamp>) -> (i64, i32) {
    t.map(|t| (t.seconds, t.nanos)).expect("timestamp set")
}

pub fn assert_status(e: &tonic::Status, code: Code, why: &str) {
    assert_eq!(e.code(), code, "{why}: {e:?}");
}

// ---------------------------------------------------------------- checks

/// Create returns what was sent plus server fields; List returns it as is.
pub async fn create_round_trip<R: TestResource>() {
    let f = Fixture::<R>::new().await;
    let sent = f.sample(0);
    let c = f.app.create::<R>(&f.t, sent.clone()).await;
    assert!(uuid::Uuid::parse_str(c.id()).is_ok(), "id {:?}", c.id());
    if R::HAS_ETAG {
        assert!(!c.etag().is_empty(), "no etag");
    }
    assert_eq!(c.clone().inputs(), sent, "created differs from what was sent");
    let listed = f.app.list::<R>(&f.t, by_id(c.id())).await.items;
    assert_eq!(listed, vec![c.clone()]);
    let all = f.app.list::<R>(&f.t, ListOpts::default()).await.items;
    assert_eq!(all, vec![c]);
    f.app.stop().await;
}

/// A resource with every optional field unset is valid and lists as
/// created.
pub async fn create_sparse<R: TestResource>() {
    let f = Fixture::<R>::new().await;
    let c = f.app.create::<R>(&f.t, R::sparse(&f.ctx, 0)).await;
    assert!(uuid::Uuid::parse_str(c.id()).is_ok(), "id {:?}", c.id());
    assert_eq!(f.app.list::<R>(&f.t, by_id(c.id())).await.items, vec![c]);
    f.app.stop().await;
}

/// Parents of another tenant do not exist for the caller: FAILED_PRECONDITION
/// (REFERENCE_NOT_FOUND), and nothing is created.
pub async fn create_with_other_tenants_parent<R: TestResource>() {
    let f = Fixture::<R>::new().await;
    let b = Tenant::new();
    let theirs = f.app.prepare::<R>(&b).await;
    for r in [R::sample(&theirs, 0), R::sparse(&theirs, 1)] {
        let e = f.app.try_create::<R>(&f.t, r).await.unwrap_err();
        assert_status(&e, Code::FailedPrecondition, "another tenant's parent");
        assert_eq!(reason(&e), "REFERENCE_NOT_FOUND");
    }
    assert_eq!(f.app.list::<R>(&f.t, ListOpts::default().count()).await.total_size, 0);
    assert_eq!(f.app.list::<R>(&b, ListOpts::default().count()).await.total_size, 0);
    // The same samples with the caller's own parents are fine.
    f.created(0).await;
    f.app.stop().await;
}

/// Get returns the created resource; unknown ids are NOT_FOUND, malformed
/// ones INVALID_ARGUMENT.
pub async fn get_round_trip<R: TestResource>() {
    let f = Fixture::<R>::new().await;
    let c = f.created(0).await;
    assert_eq!(f.app.get::<R>(&f.t, c.id()).await, c);
    let e = f.app.try_get::<R>(&f.t, &uuid::Uuid::new_v4().to_string()).await.unwrap_err();
    assert_status(&e, Code::NotFound, "unknown id");
    for bad in ["", "not-a-uuid"] {
        let e = f.app.try_get::<R>(&f.t, bad).await.unwrap_err();
        assert_status(&e, Code::InvalidArgument, bad);
    }
    f.app.stop().await;
}

/// BatchGet keeps the order asked (duplicates too); a missing id fails it.
pub async fn batch_get<R: TestResource>() {
    let f = Fixture::<R>::new().await;
    let made = [f.created(0).await, f.created(1).await, f.created(2).await];
    let got = f.app.batch_get::<R>(&f.t, &[made[2].id(), made[0].id(), made[2].id()]).await;
    assert_eq!(got, vec![made[2].clone(), made[0].clone(), made[2].clone()]);
    assert!(f.app.batch_get::<R>(&f.t, &[]).await.is_empty());
    let missing = uuid::Uuid::new_v4().to_string();
    let e = f.app.try_batch_get::<R>(&f.t, &[made[1].id(), &missing]).await.unwrap_err();
    assert_status(&e, Code::NotFound, "a missing id");
    let e = f.app.try_batch_get::<R>(&f.t, &[made[1].id(), "not-a-uuid"]).await.unwrap_err();
    assert_status(&e, Code::InvalidArgument, "a malformed id");
    assert_eq!(violations(&e), ["ids[1]"]);
    f.app.stop().await;
}

/// Only the masked field changes, though the patch sets others; the etag
/// changes and update_time advances; Get sees the update.
pub async fn update_changes_only_masked_fields<R: TestResource>() {
    let f = Fixture::<R>::new().await;
    let c = f.created(0).await;
    let m = R::mutation(&c);
    assert_ne!(m.expected, c, "the mutation must change something");
    let u = f.app.update::<R>(&f.t, m.patch, m.mask).await;
    assert_eq!(u.id(), c.id());
    assert_eq!(u.clone().inputs(), m.expected.clone().inputs(), "only {:?} may change", m.mask);
    assert_ne!(u.etag(), c.etag(), "etag must change");
    assert!(at(u.update_time()) > at(c.update_time()), "update_time must advance");
    assert_eq!(f.app.get::<R>(&f.t, c.id()).await, u);
    f.app.stop().await;
}

/// Every filterable field has a case; each matching filter finds the row
/// (and only it, when selective), each non-matching one does not. Over a
/// sparse row too (NULLs): `NOT (f)` lists exactly the rows `f` does not,
/// and the count equals the rows listed.
pub async fn filters<R: TestResource>() {
    let f = Fixture::<R>::new().await;
    // The other rows first: the target is the newest, and samples count
    // down in time, so `>=` on any timestamp selects the target alone.
    let other = f.created(1).await;
    let sparse = f.app.create::<R>(&f.t, R::sparse(&f.ctx, 1)).await;
    let target = f.created(0).await;
    let all: HashSet<String> = [&other, &sparse, &target].iter().map(|r| r.id().to_owned()).collect();
    let cases = R::filters(&target);
    let declared: HashSet<&str> = cases.iter().map(|c| c.field).collect();
    let filterable: HashSet<&str> =
        R::SCHEMA.fields.iter().filter(|f| f.filterable).map(|f| f.name).collect();
    let mut missing: Vec<_> = filterable.difference(&declared).collect();
    missing.sort();
    let mut unknown: Vec<_> = declared.difference(&filterable).collect();
    unknown.sort();
    assert!(
        missing.is_empty() && unknown.is_empty(),
        "{}: filterable fields without a case {missing:?}; cases for fields not filterable {unknown:?}",
        R::ENTITY
    );
    assert_eq!(declared.len(), cases.len(), "one case per field");
    let mut failures = Vec::new();
    for case in &cases {
        assert!(case.matching.starts_with(case.field) && case.non_matching.starts_with(case.field));
        let mut found = Vec::new();
        for filter in [&case.matching, &case.non_matching] {
            let page = f.app.list::<R>(&f.t, ListOpts::filter(filter).page_size(1000).count()).await;
            let hits: Vec<String> = page.items.iter().map(|r| r.id().to_owned()).collect();
            if page.total_size != hits.len() as i64 {
                failures.push(format!("{filter:?} counts {} but lists {hits:?}", page.total_size));
            }
            let negated: HashSet<String> =
                f.ids(ListOpts::filter(format!("NOT ({filter})"))).await.into_iter().collect();
            let rest: HashSet<String> = all.iter().filter(|id| !hits.contains(id)).cloned().collect();
            if negated != rest {
                failures.push(format!("NOT ({filter}) lists {negated:?}, not the other rows {rest:?}"));
            }
            found.push(hits);
        }
        let (hits, misses) = (&found[0], &found[1]);
        let ok = if case.selective { hits == &[target.id()] } else { hits.iter().any(|h| h == target.id()) };
        if !ok {
            failures.push(format!("{:?} matched {hits:?}", case.matching));
        }
        if misses.iter().any(|h| h == target.id()) {
            failures.push(format!("{:?} matched the row", case.non_matching));
        }
    }
    assert!(
        failures.is_empty(),
        "{} (target {}, other {}, sparse {}):\n{}",
        R::ENTITY,
        target.id(),
        other.id(),
        sparse.id(),
        failures.join("\n")
    );
    // Unknown and unfilterable fields are refused, naming `filter`.
    let unfilterable =
        R::SCHEMA.fields.iter().filter(|f| !f.filterable).map(|f| format!("{} = null", f.name));
    for bad in unfilterable.chain(["no_such_field = 1".to_string()]) {
        let e = f.app.try_list::<R>(&f.t, ListOpts::filter(&bad)).await.unwrap_err();
        assert_status(&e, Code::InvalidArgument, &bad);
        assert_eq!(violations(&e), ["filter"], "{bad}");
    }
    f.app.stop().await;
}

/// Keyset pages of 2 over 5 rows: every row once, in order, both
/// directions; the count is exact; a token is bound to its filter and order.
pub async fn paging<R: TestResource>() {
    let f = Fixture::<R>::new().await;
    let mut created = Vec::new();
    for n in 0..5 {
        created.push(f.created(n).await.id().to_owned());
    }
    let newest_first: Vec<String> = created.iter().rev().cloned().collect();
    let check = |pages: &[Page<R>], want: &[String], what: &str| {
        assert_eq!(pages.len(), 3, "{what}: 5 rows in pages of 2");
        assert!(pages[..2].iter().all(|p| p.items.len() == 2), "{what}: full pages first");
        let ids: Vec<String> = pages.iter().flat_map(|p| p.items.iter().map(|r| r.id().to_owned())).collect();
        assert_eq!(ids.iter().collect::<HashSet<_>>().len(), ids.len(), "{what}: duplicates in {ids:?}");
        assert_eq!(ids, want, "{what}: every row once, in order");
    };
    let pages = f.app.pages::<R>(&f.t, ListOpts::default().page_size(2)).await;
    check(&pages, &newest_first, "default order");
    let asc = f.app.pages::<R>(&f.t, ListOpts::default().order_by(R::CREATION_ORDER).page_size(2)).await;
    check(&asc, &created, R::CREATION_ORDER);
    let desc = format!("{} desc", R::CREATION_ORDER);
    let pages = f.app.pages::<R>(&f.t, ListOpts::default().order_by(&desc).page_size(2)).await;
    check(&pages, &newest_first, &desc);

    let first = f.app.list::<R>(&f.t, ListOpts::default().page_size(2).count()).await;
    assert_eq!(first.total_size, 5, "count");
    let token = first.next_page_token;
    let other_filter = format!("id != {}", quote(&uuid::Uuid::new_v4().to_string()));
    for (what, o) in [
        ("another filter", ListOpts::filter(&other_filter)),
        ("another order", ListOpts::default().order_by(R::CREATION_ORDER)),
    ] {
        let e = f.app.try_list::<R>(&f.t, o.page_size(2).page_token(&token)).await.unwrap_err();
        assert_status(&e, Code::InvalidArgument, what);
        assert_eq!(violations(&e), ["page_token"], "{what}");
    }
    // The same request continues where the first page ended.
    let second = f.app.list::<R>(&f.t, ListOpts::default().page_size(2).page_token(&token)).await;
    let ids: Vec<&str> = second.items.iter().map(|r| r.id()).collect();
    assert_eq!(ids, newest_first[2..4].iter().map(String::as_str).collect::<Vec<_>>());
    let e = f.app.try_list::<R>(&f.t, ListOpts::default().page_size(-1)).await.unwrap_err();
    assert_status(&e, Code::InvalidArgument, "negative page_size");
    assert_eq!(violations(&e), ["page_size"]);
    let e = f.app.try_list::<R>(&f.t, ListOpts::default().page_token("garbage!")).await.unwrap_err();
    assert_status(&e, Code::InvalidArgument, "malformed page_token");
    assert_eq!(violations(&e), ["page_token"]);
    f.app.stop().await;
}

/// Every sortable field orders the list both ways over full and sparse
/// rows (NULL keys): pages of 2 give the same sequence as one page, each row
/// once, and descending is the exact reverse of ascending (NULLs last
/// ascending, first descending; the id tiebreaker follows the direction).
/// Unsortable fields are refused on `order_by`.
pub async fn order_by_every_sortable_field<R: TestResource>() {
    let f = Fixture::<R>::new().await;
    for n in 0..3 {
        f.created(n).await;
        f.app.create::<R>(&f.t, R::sparse(&f.ctx, n)).await;
    }
    let mut failures = Vec::new();
    for field in R::SCHEMA.fields.iter().filter(|f| f.sortable) {
        let mut seen = Vec::new();
        for order in [field.name.to_string(), format!("{} desc", field.name)] {
            let whole = f.ids(ListOpts::default().order_by(&order).page_size(1000)).await;
            let paged = f.ids(ListOpts::default().order_by(&order).page_size(2)).await;
            if whole.len() != 6 || whole.iter().collect::<HashSet<_>>().len() != 6 {
                failures.push(format!("{order}: one page lists {whole:?}"));
            }
            if paged != whole {
                failures.push(format!("{order}: pages of 2 give {paged:?}, one page {whole:?}"));
            }
            seen.push(whole);
        }
        let asc_reversed: Vec<String> = seen[0].iter().rev().cloned().collect();
        if seen[1] != asc_reversed {
            failures.push(format!("{}: desc {:?} is not asc {:?} reversed", field.name, seen[1], seen[0]));
        }
    }
    assert!(failures.is_empty(), "{}:\n{}", R::ENTITY, failures.join("\n"));
    for field in R::SCHEMA.fields.iter().filter(|f| !f.sortable) {
        let e = f.app.try_list::<R>(&f.t, ListOpts::default().order_by(field.name)).await.unwrap_err();
        assert_status(&e, Code::InvalidArgument, field.name);
        assert_eq!(violations(&e), ["order_by"], "{}", field.name);
    }
    f.app.stop().await;
}

/// A page token is bound to show_deleted as well.
pub async fn page_token_bound_to_show_deleted<R: TestResource>() {
    let f = Fixture::<R>::new().await;
    for n in 0..3 {
        f.created(n).await;
    }
    let live = f.app.list::<R>(&f.t, ListOpts::default().page_size(2)).await;
    let shown = f.app.list::<R>(&f.t, ListOpts::default().page_size(2).show_deleted()).await;
    assert!(!live.next_page_token.is_empty() && !shown.next_page_token.is_empty());
    for (what, o) in [
        (
            "live token with show_deleted",
            ListOpts::default().show_deleted().page_token(&live.next_page_token),
        ),
        ("show_deleted token without it", ListOpts::default().page_token(&shown.next_page_token)),
    ] {
        let e = f.app.try_list::<R>(&f.t, o.page_size(2)).await.unwrap_err();
        assert_status(&e, Code::InvalidArgument, what);
        assert_eq!(violations(&e), ["page_token"], "{what}");
    }
    let rest = f
        .app
        .list::<R>(&f.t, ListOpts::default().show_deleted().page_size(2).page_token(&shown.next_page_token))
        .await;
    assert_eq!(rest.items.len(), 1);
    f.app.stop().await;
}

/// An unknown update-mask path is INVALID_ARGUMENT on `update_mask`; the
/// row is unchanged.
pub async fn mask_unknown_path<R: TestResource>() {
    let f = Fixture::<R>::new().await;
    let c = f.created(0).await;
    let m = R::mutation(&c);
    for paths in [&["no_such_field"][..], &[m.mask[0], "no_such_field"]] {
        let e = f.app.try_update::<R>(&f.t, m.patch.clone(), paths).await.unwrap_err();
        assert_status(&e, Code::InvalidArgument, &format!("{paths:?}"));
        assert!(violations(&e).iter().any(|v| v == "update_mask"), "{paths:?}: {:?}", violations(&e));
    }
    assert_eq!(f.app.get::<R>(&f.t, c.id()).await, c);
    f.app.stop().await;
}

/// Output-only paths are INVALID_ARGUMENT on `update_mask`; the row is
/// unchanged. The declared list covers the schema's output-only fields.
pub async fn mask_output_only_path<R: TestResource>() {
    let undeclared: Vec<&str> = R::SCHEMA
        .fields
        .iter()
        .filter(|f| !f.mutable && !R::OUTPUT_ONLY.contains(&f.name))
        .map(|f| f.name)
        .collect();
    assert!(undeclared.is_empty(), "{}: output-only fields not in OUTPUT_ONLY: {undeclared:?}", R::ENTITY);
    let f = Fixture::<R>::new().await;
    let c = f.created(0).await;
    let m = R::mutation(&c);
    for path in R::OUTPUT_ONLY {
        let e = f.app.try_update::<R>(&f.t, m.patch.clone(), &[path]).await.unwrap_err();
        assert_status(&e, Code::InvalidArgument, path);
        assert_eq!(violations(&e), ["update_mask"], "{path}");
    }
    assert_eq!(f.app.get::<R>(&f.t, c.id()).await, c);
    f.app.stop().await;
}

/// An update carrying an etag from before the last change is ABORTED
/// (ETAG_MISMATCH) and changes nothing.
pub async fn update_stale_etag<R: TestResource>() {
    let f = Fixture::<R>::new().await;
    let c = f.created(0).await;
    let m = R::mutation(&c);
    let u = f.app.update::<R>(&f.t, m.patch.clone(), m.mask).await;
    // The same patch again, still carrying c's etag.
    let e = f.app.try_update::<R>(&f.t, m.patch, m.mask).await.unwrap_err();
    assert_status(&e, Code::Aborted, "stale etag");
    assert_eq!(reason(&e), "ETAG_MISMATCH");
    assert_eq!(f.app.get::<R>(&f.t, c.id()).await, u);
    f.app.stop().await;
}

/// A delete carrying a stale etag is ABORTED (ETAG_MISMATCH) and deletes
/// nothing.
pub async fn delete_stale_etag<R: TestResource>() {
    let f = Fixture::<R>::new().await;
    let c = f.created(0).await;
    let m = R::mutation(&c);
    let u = f.app.update::<R>(&f.t, m.patch, m.mask).await;
    let e = f.app.try_delete::<R>(&f.t, c.id(), c.etag()).await.unwrap_err();
    assert_status(&e, Code::Aborted, "stale etag");
    assert_eq!(reason(&e), "ETAG_MISMATCH");
    assert_eq!(f.app.get::<R>(&f.t, c.id()).await, u);
    let d = f.app.delete::<R>(&f.t, c.id(), u.etag()).await;
    assert!(d.delete_time().is_some());
    f.app.stop().await;
}

/// Soft delete: hidden from List unless show_deleted, Get still returns it;
/// deleting again is NOT_FOUND; undelete restores; undeleting a live row is
/// FAILED_PRECONDITION (NOT_DELETED).
pub async fn soft_delete<R: TestResource>() {
    let f = Fixture::<R>::new().await;
    let keep = f.created(1).await;
    let c = f.created(0).await;
    let d = f.app.delete::<R>(&f.t, c.id(), c.etag()).await;
    assert_eq!(d.id(), c.id());
    assert!(d.delete_time().is_some(), "delete sets delete_time");
    assert_eq!(d.clone().inputs(), c.clone().inputs(), "delete changes no other field");
    assert_eq!(f.ids(ListOpts::default()).await, [keep.id()], "deleted rows are hidden");
    let page = f.app.list::<R>(&f.t, ListOpts::default().count()).await;
    assert_eq!(page.total_size, 1, "and not counted");
    assert_eq!(f.ids(by_id(c.id())).await, Vec::<String>::new());
    let shown = f.app.list::<R>(&f.t, by_id(c.id()).show_deleted()).await.items;
    assert_eq!(shown, vec![d.clone()], "show_deleted lists it");
    assert_eq!(f.ids(ListOpts::default().show_deleted()).await.len(), 2);
    assert_eq!(f.app.get::<R>(&f.t, c.id()).await, d, "Get returns deleted rows");
    let deleted = f.ids(ListOpts::filter("delete_time != null").show_deleted()).await;
    assert_eq!(deleted, [c.id()], "filter on delete_time with show_deleted");

    let e = f.app.try_delete::<R>(&f.t, c.id(), "").await.unwrap_err();
    assert_status(&e, Code::NotFound, "second delete");

    let u = f.app.undelete::<R>(&f.t, c.id()).await;
    assert!(u.delete_time().is_none(), "undelete clears delete_time");
    assert_eq!(u.clone().inputs(), c.clone().inputs());
    assert_eq!(f.app.get::<R>(&f.t, c.id()).await, u);
    assert_eq!(f.ids(by_id(c.id())).await, [c.id()], "listed again");
    let e = f.app.try_undelete::<R>(&f.t, c.id()).await.unwrap_err();
    assert_status(&e, Code::FailedPrecondition, "undelete of a live row");
    assert_eq!(reason(&e), "NOT_DELETED");
    f.app.stop().await;
}

/// Updating a deleted row is FAILED_PRECONDITION (RESOURCE_DELETED).
pub async fn update_deleted<R: TestResource>() {
    let f = Fixture::<R>::new().await;
    let c = f.created(0).await;
    let d = f.app.delete::<R>(&f.t, c.id(), "").await;
    let m = R::mutation(&d);
    let e = f.app.try_update::<R>(&f.t, m.patch, m.mask).await.unwrap_err();
    assert_status(&e, Code::FailedPrecondition, "update of a deleted row");
    assert_eq!(reason(&e), "RESOURCE_DELETED");
    assert_eq!(f.app.get::<R>(&f.t, c.id()).await, d, "unchanged");
    f.app.stop().await;
}

/// A repeated create with the same request_id returns the first result and
/// creates one row, even with another body.
pub async fn request_id_replay<R: TestResource>() {
    let f = Fixture::<R>::new().await;
    let rid = format!("replay-{}", uuid::Uuid::new_v4().simple()).chars().take(36).collect::<String>();
    let a = f.app.try_create_with_request_id::<R>(&f.t, f.sample(0), &rid).await.unwrap();
    let b = f.app.try_create_with_request_id::<R>(&f.t, f.sample(0), &rid).await.unwrap();
    assert_eq!(a, b, "the replay returns the identical resource");
    let c = f.app.try_create_with_request_id::<R>(&f.t, f.sample(1), &rid).await.unwrap();
    assert_eq!(c, a, "a repeated request_id returns the first result");
    let page = f.app.list::<R>(&f.t, ListOpts::default().count()).await;
    assert_eq!(page.total_size, 1, "one row");
    assert_eq!(page.items, vec![a]);
    f.app.stop().await;
}

/// Concurrent creates with one request_id: one row, every caller gets it.
pub async fn request_id_concurrent<R: TestResource>() {
    let f = Fixture::<R>::new().await;
    let calls = (0..8).map(|_| f.app.try_create_with_request_id::<R>(&f.t, f.sample(0), "concurrent"));
    let results = futures_util::future::join_all(calls).await;
    let first = results[0].clone().unwrap();
    for r in results {
        assert_eq!(r.unwrap(), first);
    }
    assert_eq!(f.app.list::<R>(&f.t, ListOpts::default().count()).await.total_size, 1);
    f.app.stop().await;
}

/// A repeated update with the same request_id returns the first result
/// (even with a now stale etag) and writes one UPDATE event.
pub async fn request_id_replay_update<R: TestResource>() {
    let f = Fixture::<R>::new().await;
    let c = f.created(0).await;
    let m = R::mutation(&c);
    let rid = "update-once";
    let a = f.app.try_update_with_request_id::<R>(&f.t, m.patch.clone(), m.mask, rid).await.unwrap();
    let b = f.app.try_update_with_request_id::<R>(&f.t, m.patch, m.mask, rid).await.unwrap();
    assert_eq!(a, b, "the replay returns the first result");
    assert_eq!(f.app.get::<R>(&f.t, c.id()).await, a);
    let actions: Vec<i32> = f.app.audit_trail(&f.t, c.id()).await.iter().map(|e| e.action).collect();
    assert_eq!(actions, [R::CREATE_ACTION as i32, pb::AuditAction::Update as i32]);
    f.app.stop().await;
}

/// A repeated delete with the same request_id returns the first result
/// instead of NOT_FOUND.
pub async fn request_id_replay_delete<R: TestResource>() {
    let f = Fixture::<R>::new().await;
    let c = f.created(0).await;
    let a = R::rpc_delete(&f.app, &f.t, c.id(), c.etag(), "delete-once").await.unwrap();
    let b = R::rpc_delete(&f.app, &f.t, c.id(), c.etag(), "delete-once").await.unwrap();
    assert_eq!(a, b);
    assert!(a.delete_time().is_some());
    assert_eq!(f.app.get::<R>(&f.t, c.id()).await, a);
    let e = f.app.try_delete::<R>(&f.t, c.id(), "").await.unwrap_err();
    assert_status(&e, Code::NotFound, "a new delete of the deleted row");
    f.app.stop().await;
}

/// A request_id already used for a create is INVALID_ARGUMENT on another
/// method (an update where there is one, else CreateJob).
pub async fn request_id_other_method<R: TestResource>() {
    let f = Fixture::<R>::new().await;
    let rid = format!("other-{}", uuid::Uuid::new_v4().simple()).chars().take(36).collect::<String>();
    let c = f.app.try_create_with_request_id::<R>(&f.t, f.sample(0), &rid).await.unwrap();
    let e = if R::OPS.contains(&Op::Update) {
        let m = R::mutation(&c);
        f.app.try_update_with_request_id::<R>(&f.t, m.patch, m.mask, &rid).await.unwrap_err()
    } else {
        f.app.try_create_with_request_id::<pb::Job>(&f.t, job("other method"), &rid).await.unwrap_err()
    };
    assert_status(&e, Code::InvalidArgument, "request_id reused by another method");
    assert_eq!(violations(&e), ["request_id"]);
    let e = f.app.try_create_with_request_id::<R>(&f.t, f.sample(1), &"r".repeat(37)).await.unwrap_err();
    assert_status(&e, Code::InvalidArgument, "request_id of 37 characters");
    assert_eq!(violations(&e), ["request_id"]);
    f.app.stop().await;
}

/// Creation writes one audit event, visible to the tenant's admin only.
pub async fn audit_create<R: TestResource>() {
    let f = Fixture::<R>::new().await;
    let c = f.created(0).await;
    let events = f.app.audit_trail(&f.t, c.id()).await;
    assert_eq!(events.len(), 1, "{events:?}");
    let e = &events[0];
    assert_eq!(e.action, R::CREATE_ACTION as i32, "{e:?}");
    assert_eq!((e.entity.as_str(), e.entity_id.as_str(), e.actor.as_str()), (R::ENTITY, c.id(), "tester"));
    assert!(e.before.is_none());
    assert_eq!(struct_str(&e.after, "id"), c.id(), "after holds the created row");
    assert!(f.app.audit_trail(&Tenant::new(), c.id()).await.is_empty(), "another tenant's admin sees none");
    f.app.stop().await;
}

/// An update writes an UPDATE event with the row before and after.
pub async fn audit_update<R: TestResource>() {
    let f = Fixture::<R>::new().await;
    let c = f.created(0).await;
    let m = R::mutation(&c);
    let u = f.app.update::<R>(&f.t, m.patch, m.mask).await;
    let events = f.app.audit_trail(&f.t, c.id()).await;
    let actions: Vec<i32> = events.iter().map(|e| e.action).collect();
    assert_eq!(actions, [R::CREATE_ACTION as i32, pb::AuditAction::Update as i32]);
    let e = &events[1];
    let field = m.mask[0];
    let (before, after) = (e.before.as_ref().expect("before"), e.after.as_ref().expect("after"));
    assert_ne!(before.fields.get(field), after.fields.get(field), "{field} changed in the event");
    assert_eq!(events[0].after, e.before, "before is the created row");
    assert_eq!(struct_str(&e.after, "id"), u.id());
    f.app.stop().await;
}

/// Delete and undelete write DELETE and UNDELETE events.
pub async fn audit_delete_undelete<R: TestResource>() {
    let f = Fixture::<R>::new().await;
    let c = f.created(0).await;
    f.app.delete::<R>(&f.t, c.id(), "").await;
    f.app.undelete::<R>(&f.t, c.id()).await;
    let events = f.app.audit_trail(&f.t, c.id()).await;
    let actions: Vec<i32> = events.iter().map(|e| e.action).collect();
    use pb::AuditAction::*;
    assert_eq!(actions, [R::CREATE_ACTION, Delete, Undelete].map(|a| a as i32));
    let deleted = |s: &Option<prost_types::Struct>| {
        s.as_ref().and_then(|s| s.fields.get("delete_time")).and_then(|v| v.kind.clone())
    };
    assert!(matches!(deleted(&events[1].before), Some(prost_types::value::Kind::NullValue(_))));
    assert!(matches!(deleted(&events[1].after), Some(prost_types::value::Kind::StringValue(_))));
    assert!(matches!(deleted(&events[2].after), Some(prost_types::value::Kind::NullValue(_))));
    f.app.stop().await;
}

/// Another tenant lists nothing, even filtering by the id.
pub async fn other_tenant_list<R: TestResource>() {
    let f = Fixture::<R>::new().await;
    let c = f.created(0).await;
    let b = Tenant::new();
    let page = f.app.list::<R>(&b, ListOpts::default().count()).await;
    assert!(page.items.is_empty() && page.total_size == 0, "{page:?}");
    assert!(f.app.list::<R>(&b, by_id(c.id())).await.items.is_empty());
    assert_eq!(f.ids(ListOpts::default()).await, [c.id()]);
    f.app.stop().await;
}

/// Another tenant's Get is NOT_FOUND.
pub async fn other_tenant_get<R: TestResource>() {
    let f = Fixture::<R>::new().await;
    let c = f.created(0).await;
    let e = f.app.try_get::<R>(&Tenant::new(), c.id()).await.unwrap_err();
    assert_status(&e, Code::NotFound, "another tenant's get");
    assert_eq!(f.app.get::<R>(&f.t, c.id()).await, c);
    f.app.stop().await;
}

/// Another tenant's BatchGet is NOT_FOUND.
pub async fn other_tenant_batch_get<R: TestResource>() {
    let f = Fixture::<R>::new().await;
    let c = f.created(0).await;
    let e = f.app.try_batch_get::<R>(&Tenant::new(), &[c.id()]).await.unwrap_err();
    assert_status(&e, Code::NotFound, "another tenant's batch get");
    f.app.stop().await;
}

/// Another tenant's Update is NOT_FOUND and changes nothing.
pub async fn other_tenant_update<R: TestResource>() {
    let f = Fixture::<R>::new().await;
    let c = f.created(0).await;
    let m = R::mutation(&c);
    let b = Tenant::new();
    let e = f.app.try_update::<R>(&b, m.patch.clone(), m.mask).await.unwrap_err();
    assert_status(&e, Code::NotFound, "another tenant's update");
    let e = f.app.try_update::<R>(&b, m.patch, &[]).await.unwrap_err();
    assert_status(&e, Code::NotFound, "another tenant's update without a mask");
    assert_eq!(f.app.get::<R>(&f.t, c.id()).await, c);
    f.app.stop().await;
}

/// Another tenant's Delete and Undelete are NOT_FOUND and change nothing.
pub async fn other_tenant_delete<R: TestResource>() {
    let f = Fixture::<R>::new().await;
    let c = f.created(0).await;
    let b = Tenant::new();
    let e = f.app.try_delete::<R>(&b, c.id(), "").await.unwrap_err();
    assert_status(&e, Code::NotFound, "another tenant's delete");
    assert_eq!(f.app.get::<R>(&f.t, c.id()).await, c);
    let d = f.app.delete::<R>(&f.t, c.id(), "").await;
    let e = f.app.try_undelete::<R>(&b, c.id()).await.unwrap_err();
    assert_status(&e, Code::NotFound, "another tenant's undelete");
    assert_eq!(f.app.get::<R>(&f.t, c.id()).await, d);
    f.app.stop().await;
}

// ---------------------------------------------------------------- resources

/// `conformance!(module, Resource, [check, #[ignore = "why"] check, ...]);`
/// generates `module::check` as a `#[tokio::test]` per check, plus
/// `module::checks_match_operations`.
macro_rules! conformance {
    ($module:ident, $res:ty, [$($(#[$attr:meta])* $check:ident),* $(,)?]) => {
        mod $module {
            $(
                #[tokio::test]
                $(#[$attr])*
                async fn $check() {
                    super::$check::<$res>().await
                }
            )*

            #[test]
            fn checks_match_operations() {
                super::assert_checks::<$res>(&[$(stringify!($check)),*]);
            }
        }
    };
}

conformance!(
    job,
    bi_data::pb::Job,
    [
        create_round_trip,
        create_sparse,
        get_round_trip,
        batch_get,
        update_changes_only_masked_fields,
        filters,
        paging,
        order_by_every_sortable_field,
        page_token_bound_to_show_deleted,
        mask_unknown_path,
        mask_output_only_path,
        update_stale_etag,
        delete_stale_etag,
        soft_delete,
        update_deleted,
        request_id_replay,
        request_id_concurrent,
        request_id_replay_update,
        request_id_replay_delete,
        request_id_other_method,
        audit_create,
        audit_update,
        audit_delete_undelete,
        other_tenant_list,
        other_tenant_get,
        other_tenant_batch_get,
        other_tenant_update,
        other_tenant_delete,
    ]
);
conformance!(
    application,
    bi_data::pb::Application,
    [
        create_round_trip,
        create_sparse,
        create_with_other_tenants_parent,
        get_round_trip,
        update_changes_only_masked_fields,
        filters,
        paging,
        order_by_every_sortable_field,
        page_token_bound_to_show_deleted,
        mask_unknown_path,
        mask_output_only_path,
        update_stale_etag,
        request_id_replay,
        request_id_concurrent,
        request_id_replay_update,
        request_id_other_method,
        audit_create,
        audit_update,
        other_tenant_list,
        other_tenant_get,
        other_tenant_update,
    ]
);
conformance!(
    employer_response,
    bi_data::pb::EmployerResponse,
    [
        create_round_trip,
        create_sparse,
        create_with_other_tenants_parent,
        filters,
        paging,
        order_by_every_sortable_field,
        request_id_replay,
        request_id_concurrent,
        request_id_other_method,
        audit_create,
        other_tenant_list,
    ]
);
conformance!(
    ingest_run,
    bi_data::pb::IngestRun,
    [
        create_round_trip,
        create_sparse,
        get_round_trip,
        filters,
        paging,
        order_by_every_sortable_field,
        audit_create,
        other_tenant_list,
        other_tenant_get
    ]
);
conformance!(
    audit_event,
    bi_data::pb::AuditEvent,
    [create_round_trip, create_sparse, filters, paging, order_by_every_sortable_field, other_tenant_list]
);
conformance!(
    company,
    bi_data::pb::Company,
    [
        create_round_trip,
        create_sparse,
        get_round_trip,
        batch_get,
        update_changes_only_masked_fields,
        filters,
        paging,
        order_by_every_sortable_field,
        page_token_bound_to_show_deleted,
        mask_unknown_path,
        mask_output_only_path,
        update_stale_etag,
        delete_stale_etag,
        soft_delete,
        update_deleted,
        request_id_replay,
        request_id_concurrent,
        request_id_replay_update,
        request_id_replay_delete,
        request_id_other_method,
        audit_create,
        audit_update,
        audit_delete_undelete,
        other_tenant_list,
        other_tenant_get,
        other_tenant_batch_get,
        other_tenant_update,
        other_tenant_delete,
    ]
);
conformance!(
    opportunity,
    bi_data::pb::Opportunity,
    [
        create_round_trip,
        create_sparse,
        create_with_other_tenants_parent,
        get_round_trip,
        update_changes_only_masked_fields,
        filters,
        paging,
        order_by_every_sortable_field,
        page_token_bound_to_show_deleted,
        mask_unknown_path,
        mask_output_only_path,
        update_stale_etag,
        delete_stale_etag,
        soft_delete,
        update_deleted,
        request_id_replay,
        request_id_concurrent,
        request_id_replay_update,
        request_id_replay_delete,
        request_id_other_method,
        audit_create,
        audit_update,
        audit_delete_undelete,
        other_tenant_list,
        other_tenant_get,
        other_tenant_update,
        other_tenant_delete,
    ]
);
conformance!(
    campaign,
    bi_data::pb::Campaign,
    [
        create_round_trip,
        create_sparse,
        create_with_other_tenants_parent,
        get_round_trip,
        update_changes_only_masked_fields,
        filters,
        paging,
        order_by_every_sortable_field,
        page_token_bound_to_show_deleted,
        mask_unknown_path,
        mask_output_only_path,
        update_stale_etag,
        delete_stale_etag,
        soft_delete,
        update_deleted,
        request_id_replay,
        request_id_concurrent,
        request_id_replay_update,
        request_id_replay_delete,
        request_id_other_method,
        audit_create,
        audit_update,
        audit_delete_undelete,
        other_tenant_list,
        other_tenant_get,
        other_tenant_update,
        other_tenant_delete,
    ]
);
conformance!(
    document,
    bi_data::pb::Document,
    [
        create_round_trip,
        create_sparse,
        get_round_trip,
        update_changes_only_masked_fields,
        filters,
        paging,
        order_by_every_sortable_field,
        page_token_bound_to_show_deleted,
        mask_unknown_path,
        mask_output_only_path,
        update_stale_etag,
        delete_stale_etag,
        soft_delete,
        update_deleted,
        request_id_replay,
        request_id_concurrent,
        request_id_replay_update,
        request_id_replay_delete,
        request_id_other_method,
        audit_create,
        audit_update,
        audit_delete_undelete,
        other_tenant_list,
        other_tenant_get,
        other_tenant_update,
        other_tenant_delete,
    ]
);
conformance!(
    conversation,
    bi_data::pb::Conversation,
    [
        create_round_trip,
        create_sparse,
        get_round_trip,
        filters,
        paging,
        order_by_every_sortable_field,
        request_id_replay,
        request_id_concurrent,
        request_id_other_method,
        audit_create,
        other_tenant_list,
        other_tenant_get,
    ]
);
