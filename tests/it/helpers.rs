//! Typed test helpers: each resource is wired once to its client calls and
//! request messages ([`TestResource`]), and tests read as the behaviour they
//! check:
//!
//! ```ignore
//! let j = app.create::<pb::Job>(&t, job("x")).await;
//! let u = app.update::<pb::Job>(&t, pb::Job { title: "y".into(), ..j.clone() }, &["title"]).await;
//! let page = app.list::<pb::Job>(&t, ListOpts::filter("title = \"y\"").count()).await;
//! let e = app.try_delete::<pb::Job>(&t, &j.id, &j.etag).await.unwrap_err();
//! ```
//!
//! Mutations use the tenant's writer token, reads its reader token (audit
//! events its admin token). The `try_` variants return the status for
//! error-path tests; the others panic with the resource and the status.

use std::{fmt::Debug, future::Future};

use bi_data::{
    domain::schema::Resource,
    pb::{self, AuditAction},
};
use prost_types::{FieldMask, Struct, Timestamp};
use tonic::{Response, Status};
use uuid::Uuid;

use crate::common::*;

/// A method a resource's service offers (what the proto declares).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Create,
    Get,
    List,
    Update,
    Delete,
    Undelete,
    BatchGet,
    /// Mutations take an AIP-155 `request_id`.
    RequestId,
    /// Mutations write audit events (creation: `TestResource::CREATE_ACTION`).
    Audit,
    /// List takes `show_deleted`.
    ShowDeleted,
    /// Create references parents of the caller's tenant (made by `prepare`).
    Parents,
}

/// List arguments common to every List method.
#[derive(Clone, Debug, Default)]
pub struct ListOpts {
    pub filter: String,
    pub order_by: String,
    pub page_size: i32,
    pub page_token: String,
    pub show_deleted: bool,
    pub count: bool,
}

impl ListOpts {
    pub fn filter(filter: impl Into<String>) -> ListOpts {
        ListOpts { filter: filter.into(), ..Default::default() }
    }
    pub fn order_by(self, order_by: impl Into<String>) -> ListOpts {
        ListOpts { order_by: order_by.into(), ..self }
    }
    pub fn page_size(self, page_size: i32) -> ListOpts {
        ListOpts { page_size, ..self }
    }
    pub fn page_token(self, page_token: impl Into<String>) -> ListOpts {
        ListOpts { page_token: page_token.into(), ..self }
    }
    pub fn show_deleted(self) -> ListOpts {
        ListOpts { show_deleted: true, ..self }
    }
    pub fn count(self) -> ListOpts {
        ListOpts { count: true, ..self }
    }
}

/// One page of any List method.
#[derive(Clone, Debug)]
pub struct Page<R> {
    pub items: Vec<R>,
    pub next_page_token: String,
    pub total_size: i64,
}

/// A filter on one field: one that matches the row it was derived from and
/// one that does not. `selective`: the matching filter matches no other row
/// of the conformance data (the samples differ on this field).
#[derive(Clone, Debug)]
pub struct FilterCase {
    pub field: &'static str,
    pub matching: String,
    pub non_matching: String,
    pub selective: bool,
}

/// A filter string literal. A `*` inside is still a wildcard: sample values
/// hold none.
pub fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// RFC 3339 with every digit the timestamp has.
pub fn rfc3339(ts: &Timestamp) -> String {
    chrono::DateTime::from_timestamp(ts.seconds, ts.nanos as u32)
        .expect("timestamp in range")
        .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

/// A timestamp `seconds` after the Unix epoch.
pub fn ts(seconds: i64) -> Option<Timestamp> {
    Some(Timestamp { seconds, nanos: 0 })
}

/// A google.protobuf.Struct from JSON.
pub fn structure(v: serde_json::Value) -> Option<Struct> {
    bi_data::api::convert::structure_out(&bi_data::domain::value::Value::Json(v))
}

/// A string member of a Struct (empty when absent or not a string).
pub fn struct_str(s: &Option<Struct>, key: &str) -> String {
    match s.as_ref().and_then(|s| s.fields.get(key)).and_then(|v| v.kind.clone()) {
        Some(prost_types::value::Kind::StringValue(v)) => v,
        _ => String::new(),
    }
}

impl FilterCase {
    pub fn new(field: &'static str, matching: impl Into<String>, non_matching: impl Into<String>) -> Self {
        FilterCase { field, matching: matching.into(), non_matching: non_matching.into(), selective: true }
    }
    /// The matching filter may match other rows too (e.g. a value every
    /// sample shares).
    pub fn loose(self) -> Self {
        FilterCase { selective: false, ..self }
    }
    /// `field = "v"` / a value no row has.
    pub fn text(field: &'static str, v: &str) -> Self {
        Self::new(
            field,
            format!("{field} = {}", quote(v)),
            format!("{field} = {}", quote(&format!("{v} (not)"))),
        )
    }
    /// `field = "uuid"` / a fresh UUID.
    pub fn uuid(field: &'static str, v: &str) -> Self {
        Self::new(
            field,
            format!("{field} = {}", quote(v)),
            format!("{field} = {}", quote(&Uuid::new_v4().to_string())),
        )
    }
    pub fn int(field: &'static str, v: i64) -> Self {
        Self::new(field, format!("{field} = {v}"), format!("{field} = {}", v + 1))
    }
    pub fn float(field: &'static str, v: f64) -> Self {
        Self::new(field, format!("{field} = {v}"), format!("{field} = {}", v + 0.25))
    }
    pub fn boolean(field: &'static str, v: bool) -> Self {
        Self::new(field, format!("{field} = {v}"), format!("{field} = {}", !v))
    }
    /// `field >= "t"` / `field < "t"`: selective when the row holds the
    /// largest value of the data (samples count down in time, and the
    /// target row is created last).
    pub fn time(field: &'static str, v: &Option<Timestamp>) -> Self {
        let t = rfc3339(v.as_ref().unwrap_or_else(|| panic!("{field} is not set")));
        Self::new(field, format!("{field} >= {}", quote(&t)), format!("{field} < {}", quote(&t)))
    }
    /// `field = NAME` / `field = OTHER` (enum names, with or without prefix).
    pub fn enumeration(field: &'static str, name: &str, other: &str) -> Self {
        assert_ne!(name, other, "{field}: the non-matching value must differ");
        Self::new(field, format!("{field} = {name}"), format!("{field} = {other}"))
    }
    /// Text-array membership: `field:"v"` / a value no row holds.
    pub fn member(field: &'static str, v: &str) -> Self {
        Self::new(field, format!("{field}:{}", quote(v)), format!("{field}:{}", quote(&format!("{v} (not)"))))
    }
    /// Struct member: `field.key = "v"` / another value.
    pub fn json(field: &'static str, key: &str, v: &str) -> Self {
        Self::new(
            field,
            format!("{field}.{key} = {}", quote(v)),
            format!("{field}.{key} = {}", quote(&format!("{v} (not)"))),
        )
    }
    /// `field = null` / `field != null` for a field the row leaves unset.
    pub fn null(field: &'static str) -> Self {
        Self::new(field, format!("{field} = null"), format!("{field} != null")).loose()
    }
}

/// An update for the conformance suite: `patch` (with id and etag) sets the
/// masked field and at least one field outside the mask; `expected` is the
/// created resource with only the masked change.
pub struct Mutation<R> {
    pub patch: R,
    pub mask: &'static [&'static str],
    pub expected: R,
}

fn unsupported<R: TestResource, T>(op: Op) -> Result<T, Status> {
    panic!("{} does not offer {op:?} (see its TestResource::OPS)", R::ENTITY)
}

fn ok<T>(r: Result<Response<T>, Status>) -> Result<T, Status> {
    r.map(Response::into_inner)
}

fn mask(paths: &[&str]) -> Option<FieldMask> {
    (!paths.is_empty()).then(|| FieldMask { paths: paths.iter().map(|p| p.to_string()).collect() })
}

/// A resource as the tests see it: its client calls (`rpc_*`), what it
/// offers (`OPS`), a valid distinct instance per `n` (`sample`) and the data
/// the conformance suite needs (`filters`, `mutation`).
pub trait TestResource: Clone + PartialEq + Debug + Sized + 'static {
    /// Entity name in audit events, e.g. "job".
    const ENTITY: &'static str;
    /// The server's field table: declared filters must cover its
    /// filterable fields.
    const SCHEMA: &'static Resource;
    const OPS: &'static [Op];
    /// Update-mask paths that must be refused as output only.
    const OUTPUT_ONLY: &'static [&'static str] = &["id", "create_time", "update_time", "etag"];
    /// The audit action of a creation.
    const CREATE_ACTION: AuditAction = AuditAction::Create;
    /// Order by creation, ascending (the default order is its reverse).
    const CREATION_ORDER: &'static str = "create_time";
    /// Reads return an etag.
    const HAS_ETAG: bool = true;

    /// Whatever samples need to exist first (parents), per tenant.
    type Ctx;
    fn prepare(app: &TestApp, t: &Tenant) -> impl Future<Output = Self::Ctx>;
    /// A valid instance, distinct for each `n` on every filterable field;
    /// timestamps decrease as `n` grows.
    fn sample(ctx: &Self::Ctx, n: usize) -> Self;
    /// A valid instance with every optional field left unset (NULL).
    fn sparse(ctx: &Self::Ctx, n: usize) -> Self;

    fn id(&self) -> &str;
    fn etag(&self) -> &str;
    fn update_time(&self) -> Option<Timestamp>;
    fn delete_time(&self) -> Option<Timestamp> {
        None
    }
    /// The resource with server-assigned fields cleared: what a caller sent.
    fn inputs(self) -> Self;
    /// One case per filterable field, derived from a created row.
    fn filters(created: &Self) -> Vec<FilterCase>;
    fn mutation(_created: &Self) -> Mutation<Self> {
        panic!("{} declares no mutation", Self::ENTITY)
    }

    fn rpc_create(
        app: &TestApp,
        t: &Tenant,
        r: Self,
        request_id: &str,
    ) -> impl Future<Output = Result<Self, Status>>;
    fn rpc_list(app: &TestApp, t: &Tenant, o: ListOpts) -> impl Future<Output = Result<Page<Self>, Status>>;
    fn rpc_get(_app: &TestApp, _t: &Tenant, _id: &str) -> impl Future<Output = Result<Self, Status>> {
        async { unsupported::<Self, _>(Op::Get) }
    }
    fn rpc_update(
        _app: &TestApp,
        _t: &Tenant,
        _r: Self,
        _mask: Option<FieldMask>,
        _request_id: &str,
    ) -> impl Future<Output = Result<Self, Status>> {
        async { unsupported::<Self, _>(Op::Update) }
    }
    fn rpc_delete(
        _app: &TestApp,
        _t: &Tenant,
        _id: &str,
        _etag: &str,
        _request_id: &str,
    ) -> impl Future<Output = Result<Self, Status>> {
        async { unsupported::<Self, _>(Op::Delete) }
    }
    fn rpc_undelete(
        _app: &TestApp,
        _t: &Tenant,
        _id: &str,
        _request_id: &str,
    ) -> impl Future<Output = Result<Self, Status>> {
        async { unsupported::<Self, _>(Op::Undelete) }
    }
    fn rpc_batch_get(
        _app: &TestApp,
        _t: &Tenant,
        _ids: Vec<String>,
    ) -> impl Future<Output = Result<Vec<Self>, Status>> {
        async { unsupported::<Self, _>(Op::BatchGet) }
    }
}

fn expect<R: TestResource, T>(what: &str, r: Result<T, Status>) -> T {
    r.unwrap_or_else(|e| panic!("{what} {}: {e:?}", R::ENTITY))
}

/// The generic calls, once for every resource.
impl TestApp {
    pub async fn prepare<R: TestResource>(&self, t: &Tenant) -> R::Ctx {
        R::prepare(self, t).await
    }

    pub async fn create<R: TestResource>(&self, t: &Tenant, r: R) -> R {
        expect::<R, _>("create", self.try_create(t, r).await)
    }

    pub async fn try_create<R: TestResource>(&self, t: &Tenant, r: R) -> Result<R, Status> {
        R::rpc_create(self, t, r, "").await
    }

    pub async fn try_create_with_request_id<R: TestResource>(
        &self,
        t: &Tenant,
        r: R,
        request_id: &str,
    ) -> Result<R, Status> {
        R::rpc_create(self, t, r, request_id).await
    }

    pub async fn get<R: TestResource>(&self, t: &Tenant, id: &str) -> R {
        expect::<R, _>("get", self.try_get(t, id).await)
    }

    pub async fn try_get<R: TestResource>(&self, t: &Tenant, id: &str) -> Result<R, Status> {
        R::rpc_get(self, t, id).await
    }

    pub async fn list<R: TestResource>(&self, t: &Tenant, o: ListOpts) -> Page<R> {
        expect::<R, _>("list", self.try_list(t, o).await)
    }

    pub async fn try_list<R: TestResource>(&self, t: &Tenant, o: ListOpts) -> Result<Page<R>, Status> {
        R::rpc_list(self, t, o).await
    }

    /// Every page from `o`'s first, following next_page_token; each page
    /// holds at most `o.page_size` items (when set).
    pub async fn pages<R: TestResource>(&self, t: &Tenant, mut o: ListOpts) -> Vec<Page<R>> {
        let mut out = Vec::new();
        loop {
            let p = self.list::<R>(t, o.clone()).await;
            if o.page_size > 0 {
                assert!(p.items.len() <= o.page_size as usize, "page of {} > {}", p.items.len(), o.page_size);
            }
            assert!(out.len() < 1000, "pagination does not terminate");
            let next = p.next_page_token.clone();
            out.push(p);
            if next.is_empty() {
                return out;
            }
            o.page_token = next;
        }
    }

    /// Every item matching `o`, across pages.
    pub async fn list_all<R: TestResource>(&self, t: &Tenant, o: ListOpts) -> Vec<R> {
        self.pages::<R>(t, o).await.into_iter().flat_map(|p| p.items).collect()
    }

    /// Ids of every item matching `o`, in list order.
    pub async fn list_ids<R: TestResource>(&self, t: &Tenant, o: ListOpts) -> Vec<String> {
        self.list_all::<R>(t, o).await.iter().map(|r| r.id().to_owned()).collect()
    }

    /// Updates the fields in `mask` (every set field when empty).
    pub async fn update<R: TestResource>(&self, t: &Tenant, r: R, mask: &[&str]) -> R {
        expect::<R, _>("update", self.try_update(t, r, mask).await)
    }

    pub async fn try_update<R: TestResource>(&self, t: &Tenant, r: R, paths: &[&str]) -> Result<R, Status> {
        R::rpc_update(self, t, r, mask(paths), "").await
    }

    pub async fn try_update_with_request_id<R: TestResource>(
        &self,
        t: &Tenant,
        r: R,
        paths: &[&str],
        request_id: &str,
    ) -> Result<R, Status> {
        R::rpc_update(self, t, r, mask(paths), request_id).await
    }

    /// Soft-deletes; `etag` may be empty.
    pub async fn delete<R: TestResource>(&self, t: &Tenant, id: &str, etag: &str) -> R {
        expect::<R, _>("delete", self.try_delete(t, id, etag).await)
    }

    pub async fn try_delete<R: TestResource>(&self, t: &Tenant, id: &str, etag: &str) -> Result<R, Status> {
        R::rpc_delete(self, t, id, etag, "").await
    }

    pub async fn undelete<R: TestResource>(&self, t: &Tenant, id: &str) -> R {
        expect::<R, _>("undelete", self.try_undelete(t, id).await)
    }

    pub async fn try_undelete<R: TestResource>(&self, t: &Tenant, id: &str) -> Result<R, Status> {
        R::rpc_undelete(self, t, id, "").await
    }

    pub async fn batch_get<R: TestResource>(&self, t: &Tenant, ids: &[&str]) -> Vec<R> {
        expect::<R, _>("batch get", self.try_batch_get(t, ids).await)
    }

    pub async fn try_batch_get<R: TestResource>(&self, t: &Tenant, ids: &[&str]) -> Result<Vec<R>, Status> {
        R::rpc_batch_get(self, t, ids.iter().map(|s| s.to_string()).collect()).await
    }

    /// The audit trail of one entity, oldest first (admin token).
    pub async fn audit_trail(&self, t: &Tenant, entity_id: &str) -> Vec<pb::AuditEvent> {
        self.list_all::<pb::AuditEvent>(
            t,
            ListOpts::filter(format!("entity_id = {}", quote(entity_id))).order_by("event_time"),
        )
        .await
    }
}

// ---------------------------------------------------------------- resources

/// `id`, `etag`, `update_time` and `delete_time` of a message that has them.
macro_rules! soft_deletable_accessors {
    () => {
        fn id(&self) -> &str {
            &self.id
        }
        fn etag(&self) -> &str {
            &self.etag
        }
        fn update_time(&self) -> Option<Timestamp> {
            self.update_time
        }
        fn delete_time(&self) -> Option<Timestamp> {
            self.delete_time
        }
    };
}

use Op::*;

impl TestResource for pb::Job {
    const ENTITY: &'static str = "job";
    const SCHEMA: &'static Resource = &bi_data::domain::job::JOB;
    const OPS: &'static [Op] =
        &[Create, Get, List, Update, Delete, Undelete, BatchGet, RequestId, Audit, ShowDeleted];
    const OUTPUT_ONLY: &'static [&'static str] = &["id", "create_time", "update_time", "delete_time", "etag"];

    /// Two companies: samples alternate between them (a job's company is
    /// optional, so sparse jobs have none).
    type Ctx = [String; 2];
    async fn prepare(app: &TestApp, t: &Tenant) -> [String; 2] {
        let mut ids = [String::new(), String::new()];
        for (n, id) in ids.iter_mut().enumerate() {
            *id = app.create::<pb::Company>(t, pb::Company::sample(&(), n)).await.id;
        }
        ids
    }

    fn sample(companies: &[String; 2], n: usize) -> Self {
        let i = n as i64;
        let day = 86_400;
        pb::Job {
            title: format!("Sample job {n}"),
            company_name: format!("Company {n}"),
            company_id: companies[n % 2].clone(),
            location: format!("City {n}"),
            salary_min: Some(1000 * (i + 1)),
            salary_max: Some(2000 * (i + 1)),
            salary_currency: ["EUR", "GBP"][n % 2].into(),
            description: format!("Description {n}"),
            requirements: format!("Requirements {n}"),
            benefits: format!("Benefits {n}"),
            job_url: format!("https://jobs.test/{n}/{}", Uuid::new_v4()),
            source_site: format!("site-{n}"),
            posting_time: ts(1_760_000_000 - i * day),
            application_deadline: ts(1_770_000_000 - i * day),
            // After the server's default (now) on sparse jobs: `>=` selects the target.
            discovered_time: ts(4_100_000_000 - i * day),
            remote: n.is_multiple_of(2),
            job_type: [pb::JobType::Contract, pb::JobType::PartTime][n % 2] as i32,
            experience_level: [pb::ExperienceLevel::Senior, pb::ExperienceLevel::Entry][n % 2] as i32,
            industry: format!("Industry {n}"),
            keywords: vec![format!("kw-{n}"), "shared".into()],
            status: [pb::JobStatus::Saved, pb::JobStatus::Applied][n % 2] as i32,
            attributes: structure(serde_json::json!({"tag": format!("t{n}"), "n": n})),
            ..Default::default()
        }
    }

    fn sparse(_: &[String; 2], n: usize) -> Self {
        pb::Job { title: format!("Sparse job {n}"), company_name: "Sparse".into(), ..Default::default() }
    }

    soft_deletable_accessors!();
    fn inputs(self) -> Self {
        pb::Job {
            id: String::new(),
            etag: String::new(),
            create_time: None,
            update_time: None,
            delete_time: None,
            ..self
        }
    }

    fn filters(c: &Self) -> Vec<FilterCase> {
        let name = |n: i32| pb::JobType::try_from(n).unwrap().as_str_name();
        let level = |n: i32| pb::ExperienceLevel::try_from(n).unwrap().as_str_name();
        let status = |n: i32| pb::JobStatus::try_from(n).unwrap().as_str_name();
        vec![
            FilterCase::uuid("id", &c.id),
            FilterCase::text("title", &c.title),
            FilterCase::text("company_name", &c.company_name),
            FilterCase::uuid("company_id", &c.company_id),
            FilterCase::text("location", &c.location),
            FilterCase::int("salary_min", c.salary_min.unwrap()),
            FilterCase::int("salary_max", c.salary_max.unwrap()),
            FilterCase::text("salary_currency", &c.salary_currency),
            FilterCase::text("description", &c.description),
            FilterCase::text("requirements", &c.requirements),
            FilterCase::text("benefits", &c.benefits),
            FilterCase::text("job_url", &c.job_url),
            FilterCase::text("source_site", &c.source_site),
            FilterCase::time("posting_time", &c.posting_time),
            FilterCase::time("application_deadline", &c.application_deadline),
            FilterCase::time("discovered_time", &c.discovered_time),
            FilterCase::boolean("remote", c.remote),
            FilterCase::enumeration("job_type", name(c.job_type), "INTERNSHIP"),
            FilterCase::enumeration("experience_level", level(c.experience_level), "EXECUTIVE"),
            FilterCase::text("industry", &c.industry),
            FilterCase::member("keywords", &c.keywords[0]),
            FilterCase::enumeration("status", status(c.status), "CLOSED"),
            FilterCase::json("attributes", "tag", &struct_str(&c.attributes, "tag")),
            FilterCase::time("create_time", &c.create_time),
            FilterCase::time("update_time", &c.update_time),
            FilterCase::null("delete_time"),
        ]
    }

    fn mutation(c: &Self) -> Mutation<Self> {
        let title = format!("{} v2", c.title);
        Mutation {
            patch: pb::Job {
                id: c.id.clone(),
                etag: c.etag.clone(),
                title: title.clone(),
                location: "not in the mask".into(),
                ..Default::default()
            },
            mask: &["title"],
            expected: pb::Job { title, ..c.clone() },
        }
    }

    async fn rpc_create(app: &TestApp, t: &Tenant, r: Self, request_id: &str) -> Result<Self, Status> {
        let req = pb::CreateJobRequest { job: Some(r), request_id: request_id.into() };
        ok(app.jobs().create_job(authed(&t.writer, req)).await)
    }
    async fn rpc_get(app: &TestApp, t: &Tenant, id: &str) -> Result<Self, Status> {
        ok(app.jobs().get_job(authed(&t.reader, pb::GetJobRequest { id: id.into() })).await)
    }
    async fn rpc_list(app: &TestApp, t: &Tenant, o: ListOpts) -> Result<Page<Self>, Status> {
        let req = pb::ListJobsRequest {
            page_size: o.page_size,
            page_token: o.page_token,
            filter: o.filter,
            order_by: o.order_by,
            show_deleted: o.show_deleted,
            count: o.count,
        };
        let r = ok(app.jobs().list_jobs(authed(&t.reader, req)).await)?;
        Ok(Page { items: r.jobs, next_page_token: r.next_page_token, total_size: r.total_size })
    }
    async fn rpc_update(
        app: &TestApp,
        t: &Tenant,
        r: Self,
        update_mask: Option<FieldMask>,
        request_id: &str,
    ) -> Result<Self, Status> {
        let req = pb::UpdateJobRequest { job: Some(r), update_mask, request_id: request_id.into() };
        ok(app.jobs().update_job(authed(&t.writer, req)).await)
    }
    async fn rpc_delete(
        app: &TestApp,
        t: &Tenant,
        id: &str,
        etag: &str,
        request_id: &str,
    ) -> Result<Self, Status> {
        let req = pb::DeleteJobRequest { id: id.into(), etag: etag.into(), request_id: request_id.into() };
        ok(app.jobs().delete_job(authed(&t.writer, req)).await)
    }
    async fn rpc_undelete(app: &TestApp, t: &Tenant, id: &str, request_id: &str) -> Result<Self, Status> {
        let req = pb::UndeleteJobRequest { id: id.into(), request_id: request_id.into() };
        ok(app.jobs().undelete_job(authed(&t.writer, req)).await)
    }
    async fn rpc_batch_get(app: &TestApp, t: &Tenant, ids: Vec<String>) -> Result<Vec<Self>, Status> {
        let r = ok(app.jobs().batch_get_jobs(authed(&t.reader, pb::BatchGetJobsRequest { ids })).await)?;
        Ok(r.jobs)
    }
}

impl TestResource for pb::Application {
    const ENTITY: &'static str = "application";
    const SCHEMA: &'static Resource = &bi_data::domain::application::APPLICATION;
    // No Delete/Undelete/BatchGet methods: applications are soft-deleted
    // with their job.
    const OPS: &'static [Op] = &[Create, Get, List, Update, RequestId, Audit, ShowDeleted, Parents];
    const OUTPUT_ONLY: &'static [&'static str] = &["id", "create_time", "update_time", "delete_time", "etag"];

    /// Two parent jobs: samples alternate between them.
    type Ctx = [String; 2];
    async fn prepare(app: &TestApp, t: &Tenant) -> [String; 2] {
        let companies = app.prepare::<pb::Job>(t).await;
        let mut ids = [String::new(), String::new()];
        for (n, id) in ids.iter_mut().enumerate() {
            *id = app.create::<pb::Job>(t, pb::Job::sample(&companies, n)).await.id;
        }
        ids
    }

    fn sample(jobs: &[String; 2], n: usize) -> Self {
        let (i, day) = (n as i64, 86_400);
        let status = [pb::ApplicationStatus::Screening, pb::ApplicationStatus::Interviewing];
        pb::Application {
            job_id: jobs[n % 2].clone(),
            status: status[n % 2] as i32,
            application_time: ts(1_760_000_000 - i * day),
            cover_letter_version: format!("cl-{n}"),
            resume_version: format!("rv-{n}"),
            interview_time: ts(1_761_000_000 - i * day),
            response_time: ts(1_760_500_000 - i * day),
            notes: format!("Notes {n}"),
            credibility_rating: Some(8.5 - n as f64),
            exaggeration_level: Some(1.5 + n as f64),
            integrity_score: Some(90.0 - n as f64),
            ..Default::default()
        }
    }

    fn sparse(jobs: &[String; 2], n: usize) -> Self {
        pb::Application { job_id: jobs[n % 2].clone(), ..Default::default() }
    }

    soft_deletable_accessors!();
    fn inputs(self) -> Self {
        pb::Application {
            id: String::new(),
            etag: String::new(),
            create_time: None,
            update_time: None,
            delete_time: None,
            ..self
        }
    }

    fn filters(c: &Self) -> Vec<FilterCase> {
        let status = pb::ApplicationStatus::try_from(c.status).unwrap().as_str_name();
        vec![
            FilterCase::uuid("id", &c.id),
            FilterCase::uuid("job_id", &c.job_id),
            FilterCase::enumeration("status", status, "WITHDRAWN"),
            FilterCase::time("application_time", &c.application_time),
            FilterCase::text("cover_letter_version", &c.cover_letter_version),
            FilterCase::text("resume_version", &c.resume_version),
            FilterCase::time("interview_time", &c.interview_time),
            FilterCase::time("response_time", &c.response_time),
            FilterCase::text("notes", &c.notes),
            FilterCase::float("credibility_rating", c.credibility_rating.unwrap()),
            FilterCase::float("exaggeration_level", c.exaggeration_level.unwrap()),
            FilterCase::float("integrity_score", c.integrity_score.unwrap()),
            FilterCase::time("create_time", &c.create_time),
            FilterCase::time("update_time", &c.update_time),
            FilterCase::null("delete_time"),
        ]
    }

    fn mutation(c: &Self) -> Mutation<Self> {
        let status = pb::ApplicationStatus::Offered as i32;
        Mutation {
            patch: pb::Application {
                id: c.id.clone(),
                etag: c.etag.clone(),
                status,
                notes: "not in the mask".into(),
                ..Default::default()
            },
            mask: &["status"],
            expected: pb::Application { status, ..c.clone() },
        }
    }

    async fn rpc_create(app: &TestApp, t: &Tenant, r: Self, request_id: &str) -> Result<Self, Status> {
        let req = pb::CreateApplicationRequest { application: Some(r), request_id: request_id.into() };
        ok(app.jobs().create_application(authed(&t.writer, req)).await)
    }
    async fn rpc_get(app: &TestApp, t: &Tenant, id: &str) -> Result<Self, Status> {
        ok(app.jobs().get_application(authed(&t.reader, pb::GetApplicationRequest { id: id.into() })).await)
    }
    async fn rpc_list(app: &TestApp, t: &Tenant, o: ListOpts) -> Result<Page<Self>, Status> {
        let req = pb::ListApplicationsRequest {
            page_size: o.page_size,
            page_token: o.page_token,
            filter: o.filter,
            order_by: o.order_by,
            show_deleted: o.show_deleted,
            count: o.count,
        };
        let r = ok(app.jobs().list_applications(authed(&t.reader, req)).await)?;
        Ok(Page { items: r.applications, next_page_token: r.next_page_token, total_size: r.total_size })
    }
    async fn rpc_update(
        app: &TestApp,
        t: &Tenant,
        r: Self,
        update_mask: Option<FieldMask>,
        request_id: &str,
    ) -> Result<Self, Status> {
        let req =
            pb::UpdateApplicationRequest { application: Some(r), update_mask, request_id: request_id.into() };
        ok(app.jobs().update_application(authed(&t.writer, req)).await)
    }
}

impl TestResource for pb::EmployerResponse {
    const ENTITY: &'static str = "employer_response";
    const SCHEMA: &'static Resource = &bi_data::domain::application::EMPLOYER_RESPONSE;
    // Create and List only.
    const OPS: &'static [Op] = &[Create, List, RequestId, Audit, Parents];

    /// Two parent applications (of one job): samples alternate.
    type Ctx = [String; 2];
    async fn prepare(app: &TestApp, t: &Tenant) -> [String; 2] {
        let jobs = app.prepare::<pb::Application>(t).await;
        let mut ids = [String::new(), String::new()];
        for (n, id) in ids.iter_mut().enumerate() {
            *id = app.create::<pb::Application>(t, pb::Application::sample(&jobs, n)).await.id;
        }
        ids
    }

    fn sample(apps: &[String; 2], n: usize) -> Self {
        let (i, day) = (n as i64, 86_400);
        pb::EmployerResponse {
            application_id: apps[n % 2].clone(),
            response_type: format!("type_{n}"),
            response_time: ts(1_760_000_000 - i * day),
            subject_line: format!("Subject {n}"),
            email_content: format!("Email {n}"),
            sender_email: format!("hr{n}@acme.test"),
            sentiment_score: Some(0.75 - 0.25 * n as f64),
            requires_action: n.is_multiple_of(2),
            action_taken: format!("Action {n}"),
            follow_up_time: ts(1_761_000_000 - i * day),
            ..Default::default()
        }
    }

    fn sparse(apps: &[String; 2], n: usize) -> Self {
        pb::EmployerResponse {
            application_id: apps[n % 2].clone(),
            response_type: format!("sparse_{n}"),
            ..Default::default()
        }
    }

    fn id(&self) -> &str {
        &self.id
    }
    fn etag(&self) -> &str {
        &self.etag
    }
    fn update_time(&self) -> Option<Timestamp> {
        self.update_time
    }
    fn inputs(self) -> Self {
        pb::EmployerResponse {
            id: String::new(),
            etag: String::new(),
            create_time: None,
            update_time: None,
            ..self
        }
    }

    fn filters(c: &Self) -> Vec<FilterCase> {
        vec![
            FilterCase::uuid("id", &c.id),
            FilterCase::uuid("application_id", &c.application_id),
            FilterCase::text("response_type", &c.response_type),
            FilterCase::time("response_time", &c.response_time),
            FilterCase::text("subject_line", &c.subject_line),
            FilterCase::text("email_content", &c.email_content),
            FilterCase::text("sender_email", &c.sender_email),
            FilterCase::float("sentiment_score", c.sentiment_score.unwrap()),
            FilterCase::boolean("requires_action", c.requires_action),
            FilterCase::text("action_taken", &c.action_taken),
            FilterCase::time("follow_up_time", &c.follow_up_time),
            FilterCase::time("create_time", &c.create_time),
            FilterCase::time("update_time", &c.update_time),
        ]
    }

    async fn rpc_create(app: &TestApp, t: &Tenant, r: Self, request_id: &str) -> Result<Self, Status> {
        let req =
            pb::CreateEmployerResponseRequest { employer_response: Some(r), request_id: request_id.into() };
        ok(app.jobs().create_employer_response(authed(&t.writer, req)).await)
    }
    async fn rpc_list(app: &TestApp, t: &Tenant, o: ListOpts) -> Result<Page<Self>, Status> {
        assert!(!o.show_deleted, "ListEmployerResponses has no show_deleted");
        let req = pb::ListEmployerResponsesRequest {
            page_size: o.page_size,
            page_token: o.page_token,
            filter: o.filter,
            order_by: o.order_by,
            count: o.count,
        };
        let r = ok(app.jobs().list_employer_responses(authed(&t.reader, req)).await)?;
        Ok(Page { items: r.employer_responses, next_page_token: r.next_page_token, total_size: r.total_size })
    }
}

/// Ingest runs are written by ImportJobs: a sample is the run expected from
/// importing `n + 2` valid rows and `n + 1` invalid ones under source `site-n`;
/// `rpc_create` performs that import.
impl TestResource for pb::IngestRun {
    const ENTITY: &'static str = "ingest_run";
    const SCHEMA: &'static Resource = &bi_data::domain::ingest::INGEST_RUN;
    const OPS: &'static [Op] = &[Create, Get, List, Audit];
    const CREATE_ACTION: AuditAction = AuditAction::Import;
    const CREATION_ORDER: &'static str = "start_time";

    type Ctx = ();
    async fn prepare(_: &TestApp, _: &Tenant) {}

    fn sample(_: &(), n: usize) -> Self {
        let n = n as i64;
        pb::IngestRun {
            source_site: format!("site-{n}"),
            received: 2 * n + 3,
            inserted: n + 2,
            updated: 0,
            failed: n + 1,
            ..Default::default()
        }
    }

    /// One row and no source: the run's source_site stays NULL.
    fn sparse(_: &(), _: usize) -> Self {
        pb::IngestRun { received: 1, inserted: 1, ..Default::default() }
    }

    fn id(&self) -> &str {
        &self.id
    }
    fn etag(&self) -> &str {
        &self.etag
    }
    fn update_time(&self) -> Option<Timestamp> {
        self.update_time
    }
    fn inputs(self) -> Self {
        pb::IngestRun {
            id: String::new(),
            start_time: None,
            end_time: None,
            errors: Vec::new(),
            create_time: None,
            update_time: None,
            etag: String::new(),
            ..self
        }
    }

    fn filters(c: &Self) -> Vec<FilterCase> {
        vec![
            FilterCase::uuid("id", &c.id),
            FilterCase::text("source_site", &c.source_site),
            FilterCase::time("start_time", &c.start_time),
            FilterCase::time("end_time", &c.end_time),
            FilterCase::int("received", c.received),
            FilterCase::int("inserted", c.inserted),
            FilterCase::int("updated", c.updated).loose(),
            FilterCase::int("unchanged", c.unchanged).loose(),
            FilterCase::int("failed", c.failed),
            FilterCase::time("create_time", &c.create_time),
            FilterCase::time("update_time", &c.update_time),
        ]
    }

    async fn rpc_create(app: &TestApp, t: &Tenant, r: Self, request_id: &str) -> Result<Self, Status> {
        assert!(request_id.is_empty(), "ImportJobs takes no request_id");
        assert_eq!(r.updated, 0, "a sample run only inserts");
        let batch = Uuid::new_v4();
        let valid = (0..r.inserted)
            .map(|i| pb::Job { job_url: format!("https://ingest.test/{batch}/{i}"), ..job("Imported") });
        let invalid = (0..r.failed).map(|_| job(""));
        let rows: Vec<pb::Job> = valid.chain(invalid).collect();
        assert_eq!(rows.len() as i64, r.received, "received = inserted + failed");
        let mut req = authed(&t.writer, tokio_stream::iter(rows));
        if !r.source_site.is_empty() {
            req.metadata_mut().insert("x-source-site", r.source_site.parse().unwrap());
        }
        let resp = ok(app.jobs().import_jobs(req).await)?;
        Ok(resp.ingest_run.expect("ImportJobs returns its run"))
    }
    async fn rpc_get(app: &TestApp, t: &Tenant, id: &str) -> Result<Self, Status> {
        ok(app.jobs().get_ingest_run(authed(&t.reader, pb::GetIngestRunRequest { id: id.into() })).await)
    }
    async fn rpc_list(app: &TestApp, t: &Tenant, o: ListOpts) -> Result<Page<Self>, Status> {
        assert!(!o.show_deleted, "ListIngestRuns has no show_deleted");
        let req = pb::ListIngestRunsRequest {
            page_size: o.page_size,
            page_token: o.page_token,
            filter: o.filter,
            order_by: o.order_by,
            count: o.count,
        };
        let r = ok(app.jobs().list_ingest_runs(authed(&t.reader, req)).await)?;
        Ok(Page { items: r.ingest_runs, next_page_token: r.next_page_token, total_size: r.total_size })
    }
}

/// Audit events are written by mutations: a sample is the event expected
/// from creating a job with request id `audit-sample-n`; `rpc_create`
/// creates that job and returns its event. Read with the admin token.
impl TestResource for pb::AuditEvent {
    const ENTITY: &'static str = "audit_event";
    const SCHEMA: &'static Resource = &bi_data::domain::audit::AUDIT_EVENT;
    const OPS: &'static [Op] = &[Create, List];
    const CREATION_ORDER: &'static str = "event_time";
    const HAS_ETAG: bool = false;

    type Ctx = ();
    async fn prepare(_: &TestApp, _: &Tenant) {}

    fn sample(_: &(), n: usize) -> Self {
        pb::AuditEvent {
            actor: "tester".into(),
            entity: "job".into(),
            action: AuditAction::Create as i32,
            request_id: format!("audit-sample-{n}"),
            ..Default::default()
        }
    }

    /// The event of a job created without a request id.
    fn sparse(_: &(), _: usize) -> Self {
        pb::AuditEvent { request_id: String::new(), ..Self::sample(&(), 0) }
    }

    fn id(&self) -> &str {
        &self.id
    }
    fn etag(&self) -> &str {
        ""
    }
    fn update_time(&self) -> Option<Timestamp> {
        None
    }
    fn inputs(self) -> Self {
        pb::AuditEvent {
            id: String::new(),
            event_time: None,
            entity_id: String::new(),
            after: None,
            trace_id: String::new(),
            ..self
        }
    }

    fn filters(c: &Self) -> Vec<FilterCase> {
        let trace = if c.trace_id.is_empty() {
            FilterCase::null("trace_id")
        } else {
            FilterCase::text("trace_id", &c.trace_id)
        };
        vec![
            FilterCase::uuid("id", &c.id),
            FilterCase::time("event_time", &c.event_time),
            FilterCase::text("actor", &c.actor).loose(),
            FilterCase::text("entity", &c.entity).loose(),
            FilterCase::uuid("entity_id", &c.entity_id),
            FilterCase::enumeration("action", "CREATE", "DELETE").loose(),
            FilterCase::null("before"),
            FilterCase::json("after", "title", &struct_str(&c.after, "title")),
            FilterCase::text("request_id", &c.request_id),
            trace,
        ]
    }

    async fn rpc_create(app: &TestApp, t: &Tenant, r: Self, request_id: &str) -> Result<Self, Status> {
        assert!(request_id.is_empty(), "audit events take no request_id");
        assert_eq!((r.entity.as_str(), r.action), ("job", AuditAction::Create as i32), "samples create jobs");
        let title = format!("Audited {}", r.request_id);
        let j = pb::Job::rpc_create(app, t, job(&title), &r.request_id).await?;
        let mut events = app.audit_trail(t, &j.id).await;
        assert_eq!(events.len(), 1, "one event for a new job: {events:?}");
        Ok(events.remove(0))
    }
    async fn rpc_list(app: &TestApp, t: &Tenant, o: ListOpts) -> Result<Page<Self>, Status> {
        assert!(!o.show_deleted, "ListAuditEvents has no show_deleted");
        let req = pb::ListAuditEventsRequest {
            page_size: o.page_size,
            page_token: o.page_token,
            filter: o.filter,
            order_by: o.order_by,
            count: o.count,
        };
        let r = ok(app.audit().list_audit_events(authed(&t.admin, req)).await)?;
        Ok(Page { items: r.audit_events, next_page_token: r.next_page_token, total_size: r.total_size })
    }
}

impl TestResource for pb::Company {
    const ENTITY: &'static str = "company";
    const SCHEMA: &'static Resource = &bi_data::domain::company::COMPANY;
    const OPS: &'static [Op] =
        &[Create, Get, List, Update, Delete, Undelete, BatchGet, RequestId, Audit, ShowDeleted];
    const OUTPUT_ONLY: &'static [&'static str] =
        &["id", "master_company_id", "create_time", "update_time", "delete_time", "etag"];

    type Ctx = ();
    async fn prepare(_: &TestApp, _: &Tenant) {}

    fn sample(_: &(), n: usize) -> Self {
        let sizes = [pb::CompanySize::Large, pb::CompanySize::Small];
        pb::Company {
            name: format!("Sample Company {n}"),
            website: format!("https://company-{n}.test"),
            industry: format!("Industry {n}"),
            size: sizes[n % 2] as i32,
            location: format!("City {n}"),
            description: format!("Description {n}"),
            technology_stack: vec![format!("tech-{n}"), "postgres".into()],
            pain_points: vec![format!("pain-{n}")],
            decision_makers: vec![pb::Contact {
                name: format!("Person {n}"),
                title: "CTO".into(),
                email: format!("p{n}@company-{n}.test"),
                linkedin_url: format!("https://linkedin.test/p{n}"),
            }],
            enrichment: structure(serde_json::json!({"tier": format!("t{n}"), "employees": 100 + n})),
            confidence_score: Some(0.9 - n as f64 / 10.0),
            research_time: ts(1_760_000_000 - n as i64 * 86_400),
            ..Default::default()
        }
    }

    fn sparse(_: &(), n: usize) -> Self {
        pb::Company { name: format!("Sparse Company {n}"), ..Default::default() }
    }

    soft_deletable_accessors!();
    fn inputs(self) -> Self {
        pb::Company {
            id: String::new(),
            etag: String::new(),
            master_company_id: String::new(),
            create_time: None,
            update_time: None,
            delete_time: None,
            ..self
        }
    }

    fn filters(c: &Self) -> Vec<FilterCase> {
        let size = pb::CompanySize::try_from(c.size).unwrap().as_str_name();
        vec![
            FilterCase::uuid("id", &c.id),
            FilterCase::text("name", &c.name),
            FilterCase::text("website", &c.website),
            FilterCase::text("industry", &c.industry),
            FilterCase::enumeration("size", size, "ENTERPRISE"),
            FilterCase::text("location", &c.location),
            FilterCase::text("description", &c.description),
            FilterCase::member("technology_stack", &c.technology_stack[0]),
            FilterCase::member("pain_points", &c.pain_points[0]),
            FilterCase::json("enrichment", "tier", &struct_str(&c.enrichment, "tier")),
            FilterCase::float("confidence_score", c.confidence_score.unwrap()),
            FilterCase::time("research_time", &c.research_time),
            FilterCase::null("master_company_id"),
            FilterCase::time("create_time", &c.create_time),
            FilterCase::time("update_time", &c.update_time),
            FilterCase::null("delete_time"),
        ]
    }

    fn mutation(c: &Self) -> Mutation<Self> {
        let name = format!("{} v2", c.name);
        Mutation {
            patch: pb::Company {
                id: c.id.clone(),
                etag: c.etag.clone(),
                name: name.clone(),
                location: "not in the mask".into(),
                ..Default::default()
            },
            mask: &["name"],
            expected: pb::Company { name, ..c.clone() },
        }
    }

    async fn rpc_create(app: &TestApp, t: &Tenant, r: Self, request_id: &str) -> Result<Self, Status> {
        let req = pb::CreateCompanyRequest { company: Some(r), request_id: request_id.into() };
        ok(app.companies().create_company(authed(&t.writer, req)).await)
    }
    async fn rpc_get(app: &TestApp, t: &Tenant, id: &str) -> Result<Self, Status> {
        ok(app.companies().get_company(authed(&t.reader, pb::GetCompanyRequest { id: id.into() })).await)
    }
    async fn rpc_list(app: &TestApp, t: &Tenant, o: ListOpts) -> Result<Page<Self>, Status> {
        let req = pb::ListCompaniesRequest {
            page_size: o.page_size,
            page_token: o.page_token,
            filter: o.filter,
            order_by: o.order_by,
            show_deleted: o.show_deleted,
            count: o.count,
        };
        let r = ok(app.companies().list_companies(authed(&t.reader, req)).await)?;
        Ok(Page { items: r.companies, next_page_token: r.next_page_token, total_size: r.total_size })
    }
    async fn rpc_update(
        app: &TestApp,
        t: &Tenant,
        r: Self,
        update_mask: Option<FieldMask>,
        request_id: &str,
    ) -> Result<Self, Status> {
        let req = pb::UpdateCompanyRequest { company: Some(r), update_mask, request_id: request_id.into() };
        ok(app.companies().update_company(authed(&t.writer, req)).await)
    }
    async fn rpc_delete(
        app: &TestApp,
        t: &Tenant,
        id: &str,
        etag: &str,
        request_id: &str,
    ) -> Result<Self, Status> {
        let req = pb::DeleteCompanyRequest {
            id: id.into(),
            etag: etag.into(),
            request_id: request_id.into(),
            force: false,
        };
        ok(app.companies().delete_company(authed(&t.writer, req)).await)
    }
    async fn rpc_undelete(app: &TestApp, t: &Tenant, id: &str, request_id: &str) -> Result<Self, Status> {
        let req = pb::UndeleteCompanyRequest { id: id.into(), request_id: request_id.into() };
        ok(app.companies().undelete_company(authed(&t.writer, req)).await)
    }
    async fn rpc_batch_get(app: &TestApp, t: &Tenant, ids: Vec<String>) -> Result<Vec<Self>, Status> {
        let req = pb::BatchGetCompaniesRequest { ids };
        Ok(ok(app.companies().batch_get_companies(authed(&t.reader, req)).await)?.companies)
    }
}

impl TestResource for pb::Opportunity {
    const ENTITY: &'static str = "opportunity";
    const SCHEMA: &'static Resource = &bi_data::domain::company::OPPORTUNITY;
    const OPS: &'static [Op] =
        &[Create, Get, List, Update, Delete, Undelete, RequestId, Audit, ShowDeleted, Parents];
    const OUTPUT_ONLY: &'static [&'static str] = &["id", "create_time", "update_time", "delete_time", "etag"];

    /// Two companies: samples alternate between them.
    type Ctx = [String; 2];
    async fn prepare(app: &TestApp, t: &Tenant) -> [String; 2] {
        app.prepare::<pb::Job>(t).await
    }

    fn sample(companies: &[String; 2], n: usize) -> Self {
        let complexity = [pb::ImplementationComplexity::High, pb::ImplementationComplexity::Low];
        let status = [pb::OpportunityStatus::Researched, pb::OpportunityStatus::Pitched];
        pb::Opportunity {
            company_id: companies[n % 2].clone(),
            problem_description: format!("Problem {n}"),
            solution_approach: format!("Solution {n}"),
            estimated_value: Some(10_000 * (n as i64 + 1)),
            implementation_complexity: complexity[n % 2] as i32,
            confidence_score: Some(0.8 - n as f64 / 10.0),
            proof_of_concept_created: n.is_multiple_of(2),
            status: status[n % 2] as i32,
            ..Default::default()
        }
    }

    fn sparse(companies: &[String; 2], n: usize) -> Self {
        pb::Opportunity {
            company_id: companies[n % 2].clone(),
            solution_approach: format!("Sparse solution {n}"),
            ..Default::default()
        }
    }

    soft_deletable_accessors!();
    fn inputs(self) -> Self {
        pb::Opportunity {
            id: String::new(),
            etag: String::new(),
            create_time: None,
            update_time: None,
            delete_time: None,
            ..self
        }
    }

    fn filters(c: &Self) -> Vec<FilterCase> {
        let complexity =
            pb::ImplementationComplexity::try_from(c.implementation_complexity).unwrap().as_str_name();
        let status = pb::OpportunityStatus::try_from(c.status).unwrap().as_str_name();
        vec![
            FilterCase::uuid("id", &c.id),
            FilterCase::uuid("company_id", &c.company_id),
            FilterCase::text("problem_description", &c.problem_description),
            FilterCase::text("solution_approach", &c.solution_approach),
            FilterCase::int("estimated_value", c.estimated_value.unwrap()),
            FilterCase::enumeration("implementation_complexity", complexity, "MEDIUM"),
            FilterCase::float("confidence_score", c.confidence_score.unwrap()),
            FilterCase::boolean("proof_of_concept_created", c.proof_of_concept_created),
            FilterCase::enumeration("status", status, "ACCEPTED"),
            FilterCase::time("create_time", &c.create_time),
            FilterCase::time("update_time", &c.update_time),
            FilterCase::null("delete_time"),
        ]
    }

    fn mutation(c: &Self) -> Mutation<Self> {
        let solution_approach = format!("{} v2", c.solution_approach);
        Mutation {
            patch: pb::Opportunity {
                id: c.id.clone(),
                etag: c.etag.clone(),
                solution_approach: solution_approach.clone(),
                problem_description: "not in the mask".into(),
                ..Default::default()
            },
            mask: &["solution_approach"],
            expected: pb::Opportunity { solution_approach, ..c.clone() },
        }
    }

    async fn rpc_create(app: &TestApp, t: &Tenant, r: Self, request_id: &str) -> Result<Self, Status> {
        let req = pb::CreateOpportunityRequest { opportunity: Some(r), request_id: request_id.into() };
        ok(app.companies().create_opportunity(authed(&t.writer, req)).await)
    }
    async fn rpc_get(app: &TestApp, t: &Tenant, id: &str) -> Result<Self, Status> {
        let req = pb::GetOpportunityRequest { id: id.into() };
        ok(app.companies().get_opportunity(authed(&t.reader, req)).await)
    }
    async fn rpc_list(app: &TestApp, t: &Tenant, o: ListOpts) -> Result<Page<Self>, Status> {
        let req = pb::ListOpportunitiesRequest {
            page_size: o.page_size,
            page_token: o.page_token,
            filter: o.filter,
            order_by: o.order_by,
            show_deleted: o.show_deleted,
            count: o.count,
        };
        let r = ok(app.companies().list_opportunities(authed(&t.reader, req)).await)?;
        Ok(Page { items: r.opportunities, next_page_token: r.next_page_token, total_size: r.total_size })
    }
    async fn rpc_update(
        app: &TestApp,
        t: &Tenant,
        r: Self,
        update_mask: Option<FieldMask>,
        request_id: &str,
    ) -> Result<Self, Status> {
        let req =
            pb::UpdateOpportunityRequest { opportunity: Some(r), update_mask, request_id: request_id.into() };
        ok(app.companies().update_opportunity(authed(&t.writer, req)).await)
    }
    async fn rpc_delete(
        app: &TestApp,
        t: &Tenant,
        id: &str,
        etag: &str,
        request_id: &str,
    ) -> Result<Self, Status> {
        let req = pb::DeleteOpportunityRequest {
            id: id.into(),
            etag: etag.into(),
            request_id: request_id.into(),
            force: false,
        };
        ok(app.companies().delete_opportunity(authed(&t.writer, req)).await)
    }
    async fn rpc_undelete(app: &TestApp, t: &Tenant, id: &str, request_id: &str) -> Result<Self, Status> {
        let req = pb::UndeleteOpportunityRequest { id: id.into(), request_id: request_id.into() };
        ok(app.companies().undelete_opportunity(authed(&t.writer, req)).await)
    }
}

impl TestResource for pb::Campaign {
    const ENTITY: &'static str = "campaign";
    const SCHEMA: &'static Resource = &bi_data::domain::outreach::CAMPAIGN;
    const OPS: &'static [Op] =
        &[Create, Get, List, Update, Delete, Undelete, RequestId, Audit, ShowDeleted, Parents];
    const OUTPUT_ONLY: &'static [&'static str] =
        &["id", "status", "sent_time", "response_time", "create_time", "update_time", "delete_time", "etag"];

    /// Two (company, opportunity of that company) pairs: samples alternate.
    type Ctx = [(String, String); 2];
    async fn prepare(app: &TestApp, t: &Tenant) -> [(String, String); 2] {
        let companies = app.prepare::<pb::Opportunity>(t).await;
        let mut out = [(String::new(), String::new()), (String::new(), String::new())];
        for (n, pair) in out.iter_mut().enumerate() {
            let o = app.create::<pb::Opportunity>(t, pb::Opportunity::sample(&companies, n)).await;
            *pair = (o.company_id, o.id);
        }
        out
    }

    fn sample(ctx: &[(String, String); 2], n: usize) -> Self {
        let (i, day) = (n as i64, 86_400);
        let methods = [pb::ContactMethod::Linkedin, pb::ContactMethod::Phone];
        pb::Campaign {
            company_id: ctx[n % 2].0.clone(),
            opportunity_id: ctx[n % 2].1.clone(),
            contact_method: methods[n % 2] as i32,
            contact_person: format!("Person {n}"),
            message_content: format!("Message {n}"),
            follow_up_time: ts(1_761_000_000 - i * day),
            notes: format!("Notes {n}"),
            ..Default::default()
        }
    }

    fn sparse(ctx: &[(String, String); 2], n: usize) -> Self {
        pb::Campaign { company_id: ctx[n % 2].0.clone(), ..Default::default() }
    }

    soft_deletable_accessors!();
    fn inputs(self) -> Self {
        pb::Campaign {
            id: String::new(),
            etag: String::new(),
            status: 0,
            create_time: None,
            update_time: None,
            delete_time: None,
            ..self
        }
    }

    fn filters(c: &Self) -> Vec<FilterCase> {
        let method = pb::ContactMethod::try_from(c.contact_method).unwrap().as_str_name();
        vec![
            FilterCase::uuid("id", &c.id),
            FilterCase::uuid("company_id", &c.company_id),
            FilterCase::uuid("opportunity_id", &c.opportunity_id),
            FilterCase::enumeration("contact_method", method, "EMAIL"),
            FilterCase::text("contact_person", &c.contact_person),
            FilterCase::text("message_content", &c.message_content),
            // Every new campaign is a DRAFT.
            FilterCase::enumeration("status", "DRAFT", "INTERESTED").loose(),
            // Stamped by events only: none on a new campaign.
            FilterCase::null("sent_time"),
            FilterCase::null("response_time"),
            FilterCase::time("follow_up_time", &c.follow_up_time),
            FilterCase::text("notes", &c.notes),
            FilterCase::time("create_time", &c.create_time),
            FilterCase::time("update_time", &c.update_time),
            FilterCase::null("delete_time"),
        ]
    }

    fn mutation(c: &Self) -> Mutation<Self> {
        let notes = format!("{} v2", c.notes);
        Mutation {
            patch: pb::Campaign {
                id: c.id.clone(),
                etag: c.etag.clone(),
                notes: notes.clone(),
                contact_person: "not in the mask".into(),
                ..Default::default()
            },
            mask: &["notes"],
            expected: pb::Campaign { notes, ..c.clone() },
        }
    }

    async fn rpc_create(app: &TestApp, t: &Tenant, r: Self, request_id: &str) -> Result<Self, Status> {
        let req = pb::CreateCampaignRequest { campaign: Some(r), request_id: request_id.into() };
        ok(app.outreach().create_campaign(authed(&t.writer, req)).await)
    }
    async fn rpc_get(app: &TestApp, t: &Tenant, id: &str) -> Result<Self, Status> {
        ok(app.outreach().get_campaign(authed(&t.reader, pb::GetCampaignRequest { id: id.into() })).await)
    }
    async fn rpc_list(app: &TestApp, t: &Tenant, o: ListOpts) -> Result<Page<Self>, Status> {
        let req = pb::ListCampaignsRequest {
            page_size: o.page_size,
            page_token: o.page_token,
            filter: o.filter,
            order_by: o.order_by,
            show_deleted: o.show_deleted,
            count: o.count,
        };
        let r = ok(app.outreach().list_campaigns(authed(&t.reader, req)).await)?;
        Ok(Page { items: r.campaigns, next_page_token: r.next_page_token, total_size: r.total_size })
    }
    async fn rpc_update(
        app: &TestApp,
        t: &Tenant,
        r: Self,
        update_mask: Option<FieldMask>,
        request_id: &str,
    ) -> Result<Self, Status> {
        let req = pb::UpdateCampaignRequest { campaign: Some(r), update_mask, request_id: request_id.into() };
        ok(app.outreach().update_campaign(authed(&t.writer, req)).await)
    }
    async fn rpc_delete(
        app: &TestApp,
        t: &Tenant,
        id: &str,
        etag: &str,
        request_id: &str,
    ) -> Result<Self, Status> {
        let req =
            pb::DeleteCampaignRequest { id: id.into(), etag: etag.into(), request_id: request_id.into() };
        ok(app.outreach().delete_campaign(authed(&t.writer, req)).await)
    }
    async fn rpc_undelete(app: &TestApp, t: &Tenant, id: &str, request_id: &str) -> Result<Self, Status> {
        let req = pb::UndeleteCampaignRequest { id: id.into(), request_id: request_id.into() };
        ok(app.outreach().undelete_campaign(authed(&t.writer, req)).await)
    }
}

impl TestResource for pb::Document {
    const ENTITY: &'static str = "document";
    const SCHEMA: &'static Resource = &bi_data::domain::document::DOCUMENT;
    const OPS: &'static [Op] = &[Create, Get, List, Update, Delete, Undelete, RequestId, Audit, ShowDeleted];
    const OUTPUT_ONLY: &'static [&'static str] = &[
        "id",
        "version",
        "size_bytes",
        "sha256",
        "owner",
        "create_time",
        "update_time",
        "delete_time",
        "etag",
    ];

    type Ctx = ();
    async fn prepare(_: &TestApp, _: &Tenant) {}

    fn sample(_: &(), n: usize) -> Self {
        let kinds = [pb::DocumentKind::Srs, pb::DocumentKind::Diagram];
        let statuses = [pb::DocumentStatus::InReview, pb::DocumentStatus::Published];
        pb::Document {
            title: format!("Sample Document {n}"),
            kind: kinds[n % 2] as i32,
            content: format!("# Sample {n}\n\nThe system shall do thing {n}."),
            content_type: format!("text/markdown; v={n}"),
            metadata: structure(serde_json::json!({"project": format!("p{n}"), "pages": n})),
            status: statuses[n % 2] as i32,
            filename: format!("doc-{n}.md"),
            processing_status: pb::ProcessingStatus::Pending as i32,
            ..Default::default()
        }
    }

    fn sparse(_: &(), n: usize) -> Self {
        pb::Document { title: format!("Sparse Document {n}"), ..Default::default() }
    }

    soft_deletable_accessors!();
    fn inputs(self) -> Self {
        pb::Document {
            id: String::new(),
            etag: String::new(),
            version: 0,
            size_bytes: 0,
            sha256: String::new(),
            owner: String::new(),
            create_time: None,
            update_time: None,
            delete_time: None,
            ..self
        }
    }

    fn filters(d: &Self) -> Vec<FilterCase> {
        let kind = pb::DocumentKind::try_from(d.kind).unwrap().as_str_name();
        let status = pb::DocumentStatus::try_from(d.status).unwrap().as_str_name();
        vec![
            FilterCase::uuid("id", &d.id),
            FilterCase::text("title", &d.title),
            FilterCase::enumeration("kind", kind, "NOTE"),
            FilterCase::text("content_type", &d.content_type),
            FilterCase::json("metadata", "project", &struct_str(&d.metadata, "project")),
            FilterCase::enumeration("status", status, "ARCHIVED"),
            FilterCase::int("version", d.version).loose(),
            FilterCase::text("filename", &d.filename),
            FilterCase::int("size_bytes", d.size_bytes).loose(),
            FilterCase::text("sha256", &d.sha256),
            FilterCase::enumeration("processing_status", "PENDING", "READY").loose(),
            FilterCase::text("owner", &d.owner).loose(),
            FilterCase::time("create_time", &d.create_time),
            FilterCase::time("update_time", &d.update_time),
            FilterCase::null("delete_time"),
        ]
    }

    fn mutation(d: &Self) -> Mutation<Self> {
        let title = format!("{} v2", d.title);
        Mutation {
            patch: pb::Document {
                id: d.id.clone(),
                etag: d.etag.clone(),
                title: title.clone(),
                filename: "not in the mask".into(),
                ..Default::default()
            },
            mask: &["title"],
            expected: pb::Document { title, ..d.clone() },
        }
    }

    async fn rpc_create(app: &TestApp, t: &Tenant, r: Self, request_id: &str) -> Result<Self, Status> {
        let req = pb::CreateDocumentRequest { document: Some(r), request_id: request_id.into() };
        ok(app.documents().create_document(authed(&t.writer, req)).await)
    }
    async fn rpc_get(app: &TestApp, t: &Tenant, id: &str) -> Result<Self, Status> {
        let req = pb::GetDocumentRequest { id: id.into(), view: pb::DocumentView::Full as i32 };
        ok(app.documents().get_document(authed(&t.reader, req)).await)
    }
    async fn rpc_list(app: &TestApp, t: &Tenant, o: ListOpts) -> Result<Page<Self>, Status> {
        let req = pb::ListDocumentsRequest {
            page_size: o.page_size,
            page_token: o.page_token,
            filter: o.filter,
            order_by: o.order_by,
            show_deleted: o.show_deleted,
            count: o.count,
            view: pb::DocumentView::Full as i32,
        };
        let r = ok(app.documents().list_documents(authed(&t.reader, req)).await)?;
        Ok(Page { items: r.documents, next_page_token: r.next_page_token, total_size: r.total_size })
    }
    async fn rpc_update(
        app: &TestApp,
        t: &Tenant,
        r: Self,
        update_mask: Option<FieldMask>,
        request_id: &str,
    ) -> Result<Self, Status> {
        let req = pb::UpdateDocumentRequest { document: Some(r), update_mask, request_id: request_id.into() };
        ok(app.documents().update_document(authed(&t.writer, req)).await)
    }
    async fn rpc_delete(
        app: &TestApp,
        t: &Tenant,
        id: &str,
        etag: &str,
        request_id: &str,
    ) -> Result<Self, Status> {
        let req =
            pb::DeleteDocumentRequest { id: id.into(), etag: etag.into(), request_id: request_id.into() };
        ok(app.documents().delete_document(authed(&t.writer, req)).await)
    }
    async fn rpc_undelete(app: &TestApp, t: &Tenant, id: &str, request_id: &str) -> Result<Self, Status> {
        let req = pb::UndeleteDocumentRequest { id: id.into(), request_id: request_id.into() };
        ok(app.documents().undelete_document(authed(&t.writer, req)).await)
    }
}

impl TestResource for pb::Conversation {
    const ENTITY: &'static str = "conversation";
    const SCHEMA: &'static Resource = &bi_data::domain::document::CONVERSATION;
    const OPS: &'static [Op] = &[Create, Get, List, RequestId, Audit];
    const OUTPUT_ONLY: &'static [&'static str] =
        &["id", "owner", "message_count", "total_tokens", "create_time", "update_time", "etag"];

    type Ctx = ();
    async fn prepare(_: &TestApp, _: &Tenant) {}

    fn sample(_: &(), n: usize) -> Self {
        pb::Conversation {
            title: format!("Conversation {n}"),
            metadata: structure(serde_json::json!({"topic": format!("t{n}")})),
            ..Default::default()
        }
    }

    fn sparse(_: &(), n: usize) -> Self {
        pb::Conversation { title: format!("Sparse Conversation {n}"), ..Default::default() }
    }

    fn id(&self) -> &str {
        &self.id
    }
    fn etag(&self) -> &str {
        &self.etag
    }
    fn update_time(&self) -> Option<Timestamp> {
        self.update_time
    }
    fn inputs(self) -> Self {
        pb::Conversation {
            id: String::new(),
            etag: String::new(),
            owner: String::new(),
            message_count: 0,
            total_tokens: 0,
            create_time: None,
            update_time: None,
            ..self
        }
    }

    fn filters(c: &Self) -> Vec<FilterCase> {
        vec![
            FilterCase::uuid("id", &c.id),
            FilterCase::text("title", &c.title),
            FilterCase::json("metadata", "topic", &struct_str(&c.metadata, "topic")),
            FilterCase::text("owner", &c.owner).loose(),
            FilterCase::int("message_count", 0).loose(),
            FilterCase::int("total_tokens", 0).loose(),
            FilterCase::time("create_time", &c.create_time),
            FilterCase::time("update_time", &c.update_time),
        ]
    }

    async fn rpc_create(app: &TestApp, t: &Tenant, r: Self, request_id: &str) -> Result<Self, Status> {
        let req = pb::CreateConversationRequest { conversation: Some(r), request_id: request_id.into() };
        ok(app.documents().create_conversation(authed(&t.writer, req)).await)
    }
    async fn rpc_get(app: &TestApp, t: &Tenant, id: &str) -> Result<Self, Status> {
        ok(app
            .documents()
            .get_conversation(authed(&t.reader, pb::GetConversationRequest { id: id.into() }))
            .await)
    }
    async fn rpc_list(app: &TestApp, t: &Tenant, o: ListOpts) -> Result<Page<Self>, Status> {
        let req = pb::ListConversationsRequest {
            page_size: o.page_size,
            page_token: o.page_token,
            filter: o.filter,
            order_by: o.order_by,
            count: o.count,
        };
        let r = ok(app.documents().list_conversations(authed(&t.reader, req)).await)?;
        Ok(Page { items: r.conversations, next_page_token: r.next_page_token, total_size: r.total_size })
    }
}
