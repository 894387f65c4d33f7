//! The scenarios, each twice: through the service (tonic client), and as the
//! plain SQL a hand-written client would send for the same result (one
//! prepared statement per request, tokio-postgres, no transaction or session
//! set-up per request).

use std::{
    hint::black_box,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use bi_data::{
    api::convert::structure_out,
    domain::{
        job::{EXPERIENCE_LEVEL, JOB, JOB_STATUS, JOB_TYPE},
        schema::FieldKind,
        value::Value,
    },
    pb::{self, job_service_client::JobServiceClient},
};
use chrono::{DateTime, Utc};
use deadpool_postgres::{Hook, HookError, Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use prost_types::{FieldMask, Timestamp};
use tokio_postgres::{NoTls, Row, types::ToSql};
use tonic::{
    Request,
    metadata::{Ascii, MetadataValue},
    transport::Channel,
};
use uuid::Uuid;

use crate::{
    data::{GenJob, Rng, TENANT, gen_job, job_id},
    driver::Op,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Get,
    ListFirst,
    ListDeep,
    Create,
    Update,
    /// 70 % Get, 20 % ListFirst, 5 % Create, 5 % Update.
    Mixed,
    /// GetJob of a random id among the first `hot` jobs (what a cache can hold).
    GetHot,
    /// 90 % GetJob / 10 % UpdateJob over the hot set, every read checked
    /// against the last acknowledged write of its job ([`Truth`]).
    MixedHot,
}

impl Kind {
    pub fn label(self, list: &ListSpec) -> String {
        match self {
            Kind::Get => "GetJob (random id, cache off)".into(),
            Kind::ListFirst => format!("ListJobs page 1 ({} per page)", list.page_size),
            Kind::ListDeep => format!("ListJobs page {}", list.deep_page),
            Kind::Create => "CreateJob (audit + request_id)".into(),
            Kind::Update => "UpdateJob (mask salary_max)".into(),
            Kind::Mixed => "mixed 90 % read / 10 % write".into(),
            Kind::GetHot => "GetJob (random id of the hot set)".into(),
            Kind::MixedHot => "mixed 90 % GetJob / 10 % UpdateJob, hot set, reads checked".into(),
        }
    }
}

/// The list request of the list scenarios, and where page N starts.
#[derive(Clone)]
pub struct ListSpec {
    pub filter: String,
    pub order_by: String,
    pub page_size: i32,
    pub deep_page: usize,
    /// Service: the page token of page `deep_page` (walked through the API).
    pub deep_token: String,
    /// Baseline: the keyset of the last row before page `deep_page`.
    pub deep_key: (DateTime<Utc>, Uuid),
}

pub struct Service {
    clients: Vec<JobServiceClient<Channel>>,
    auth: MetadataValue<Ascii>,
}

fn status(s: tonic::Status) -> String {
    format!("{:?}: {}", s.code(), s.message())
}

impl Service {
    pub fn new(channels: &[Channel], token: &str) -> Service {
        Service {
            clients: channels
                .iter()
                .map(|c| JobServiceClient::new(c.clone()).max_decoding_message_size(64 << 20))
                .collect(),
            auth: format!("Bearer {token}").parse().expect("ascii token"),
        }
    }

    fn client(&self, n: usize) -> JobServiceClient<Channel> {
        self.clients[n % self.clients.len()].clone()
    }

    fn req<T>(&self, msg: T) -> Request<T> {
        let mut r = Request::new(msg);
        r.metadata_mut().insert("authorization", self.auth.clone());
        r
    }

    /// Reads jobs `from..to` with BatchGetJobs, 500 per call (warms a cache).
    pub async fn read_all(&self, from: u64, to: u64) -> Result<(), String> {
        let ids: Vec<String> = (from..to).map(|i| job_id(i).to_string()).collect();
        for chunk in ids.chunks(500) {
            let r = self.req(pb::BatchGetJobsRequest { ids: chunk.to_vec() });
            self.client(0).batch_get_jobs(r).await.map_err(status)?;
        }
        Ok(())
    }

    pub async fn list(
        &self,
        n: usize,
        list: &ListSpec,
        page_size: i32,
        token: &str,
    ) -> Result<pb::ListJobsResponse, String> {
        let req = self.req(pb::ListJobsRequest {
            page_size,
            page_token: token.to_owned(),
            filter: list.filter.clone(),
            order_by: list.order_by.clone(),
            ..Default::default()
        });
        self.client(n).list_jobs(req).await.map(|r| r.into_inner()).map_err(status)
    }
}

fn ts(t: Option<DateTime<Utc>>) -> Option<Timestamp> {
    t.map(|t| Timestamp { seconds: t.timestamp(), nanos: t.timestamp_subsec_nanos() as i32 })
}

pub fn to_proto(j: &GenJob) -> pb::Job {
    pb::Job {
        title: j.title.clone(),
        company_name: j.company_name.clone(),
        company_id: j.company_id.map(|u| u.to_string()).unwrap_or_default(),
        location: j.location.unwrap_or_default().to_owned(),
        salary_min: j.salary_min,
        salary_max: j.salary_max,
        salary_currency: j.salary_currency.to_owned(),
        description: j.description.clone(),
        requirements: j.requirements.clone(),
        benefits: j.benefits.unwrap_or_default().to_owned(),
        job_url: j.job_url.clone(),
        source_site: j.source_site.to_owned(),
        posting_time: ts(j.posting_time),
        application_deadline: ts(j.application_deadline),
        discovered_time: ts(Some(j.discovered_time)),
        remote: j.remote,
        job_type: j.job_type.map_or(0, |s| JOB_TYPE.number_of(s)),
        experience_level: j.experience_level.map_or(0, |s| EXPERIENCE_LEVEL.number_of(s)),
        industry: j.industry.unwrap_or_default().to_owned(),
        keywords: j.keywords.clone(),
        status: JOB_STATUS.number_of(j.status),
        attributes: structure_out(&Value::Json(j.attributes.clone())),
        ..Default::default()
    }
}

/// The same statements, straight to PostgreSQL.
pub struct Baseline {
    pub pool: Pool,
    get: String,
    list_first: String,
    list_deep: String,
    insert: String,
    update: String,
}

/// Columns a read returns: the service's (every field, then revision).
fn select_list() -> String {
    let cols: Vec<&str> = JOB.fields.iter().map(|f| f.column).collect();
    format!("{}, revision", cols.join(", "))
}

/// Writable columns in the order `insert_params` gives them.
const INSERT_COLUMNS: &[&str] = &[
    "title",
    "company_name",
    "company_id",
    "location",
    "salary_min",
    "salary_max",
    "salary_currency",
    "description",
    "requirements",
    "benefits",
    "job_url",
    "source_site",
    "posting_time",
    "application_deadline",
    "discovered_time",
    "remote",
    "job_type",
    "experience_level",
    "industry",
    "keywords",
    "status",
    "attributes",
];

impl Baseline {
    /// A pool as large as the server's. Each connection, once, at connect:
    /// the service's role (so RLS applies exactly as it does for the
    /// service) and the tenant at session level. Set-up per session is free
    /// for the baseline; the service pays for it per transaction, and that
    /// difference is part of what is measured.
    pub fn new(url: &str, pool_size: usize, list: &ListSpec) -> Result<Baseline, String> {
        let cfg: tokio_postgres::Config = url.parse().map_err(|e| format!("baseline url: {e}"))?;
        let mgr = Manager::from_config(cfg, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let setup = format!("SET ROLE bi_data_app; SELECT set_config('app.tenant_id', '{TENANT}', false)");
        let pool = Pool::builder(mgr)
            .max_size(pool_size)
            .runtime(Runtime::Tokio1)
            .post_create(Hook::async_fn(move |client, _| {
                let setup = setup.clone();
                Box::pin(async move {
                    client.batch_execute(&setup).await.map_err(|e| HookError::message(format!("setup: {e}")))
                })
            }))
            .build()
            .map_err(|e| format!("baseline pool: {e}"))?;
        let sel = select_list();
        let (order_col, desc) = parse_simple_order(&list.order_by);
        let dir = if desc { "DESC" } else { "ASC" };
        let cmp = if desc { "<" } else { ">" };
        let (first_filter, deep_filter) =
            (baseline_filter(&list.filter, 3), baseline_filter(&list.filter, 5));
        let placeholders: Vec<String> = (3..INSERT_COLUMNS.len() + 3).map(|i| format!("${i}")).collect();
        Ok(Baseline {
            pool,
            get: format!("SELECT {sel} FROM jobs WHERE tenant_id = $1 AND id = $2"),
            list_first: format!(
                "SELECT {sel} FROM jobs WHERE tenant_id = $1 AND delete_time IS NULL AND {first_filter} \
                 ORDER BY {order_col} {dir}, id {dir} LIMIT $2"
            ),
            list_deep: format!(
                "SELECT {sel} FROM jobs WHERE tenant_id = $1 AND delete_time IS NULL AND {deep_filter} \
                 AND ({order_col}, id) {cmp} ($3, $4) ORDER BY {order_col} {dir}, id {dir} LIMIT $2"
            ),
            insert: format!(
                "INSERT INTO jobs (tenant_id, id, {}) VALUES ($1, $2, {}) RETURNING {sel}",
                INSERT_COLUMNS.join(", "),
                placeholders.join(", ")
            ),
            update: format!(
                "UPDATE jobs SET salary_max = $3, update_time = now(), revision = revision + 1 \
                 WHERE tenant_id = $1 AND id = $2 RETURNING {sel}"
            ),
        })
    }

    async fn query(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>, String> {
        let c = self.pool.get().await.map_err(|e| format!("pool: {e}"))?;
        let st = c.prepare_cached(sql).await.map_err(|e| format!("prepare: {e}"))?;
        c.query(&st, params).await.map_err(|e| format!("query: {e}"))
    }

    /// First row id of the page after `key` (for checking the baseline
    /// reads what the service reads).
    pub async fn deep_first_id(&self, list: &ListSpec) -> Result<Option<Uuid>, String> {
        let limit = i64::from(list.page_size) + 1;
        let rows = self
            .query(&self.list_deep, &[&TENANT, &limit, &list.deep_key.0, &list.deep_key.1, &FILTER_VALUE])
            .await?;
        Ok(rows.first().map(|r| r.get::<_, Uuid>(0)))
    }
}

/// `posting_time desc` -> ("posting_time", true). The bench uses one key.
fn parse_simple_order(order_by: &str) -> (String, bool) {
    let mut w = order_by.split_whitespace();
    let col = w.next().unwrap_or("create_time").to_owned();
    (col, w.next().is_some_and(|d| d.eq_ignore_ascii_case("desc")))
}

/// The hand-written WHERE clause for the bench's filter, its value bound
/// as parameter `$n` (`FILTER_VALUE`) like the service binds it.
fn baseline_filter(filter: &str, n: usize) -> String {
    match filter {
        "remote = true" => format!("remote = ${n}"),
        other => panic!("no hand-written SQL for filter {other:?}; add it to baseline_filter"),
    }
}

/// The value of the bench's filter.
const FILTER_VALUE: bool = true;

/// Reads every column as a hand-written client would (typed values).
fn decode(rows: &[Row]) -> Result<usize, String> {
    let e = |e: tokio_postgres::Error| format!("decode: {e}");
    for row in rows {
        for (i, f) in JOB.fields.iter().enumerate() {
            match f.kind {
                FieldKind::Uuid => {
                    black_box(row.try_get::<_, Option<Uuid>>(i).map_err(e)?);
                }
                FieldKind::Text | FieldKind::Enum(_) => {
                    black_box(row.try_get::<_, Option<String>>(i).map_err(e)?);
                }
                FieldKind::Int => {
                    black_box(row.try_get::<_, Option<i64>>(i).map_err(e)?);
                }
                FieldKind::Float => {
                    black_box(row.try_get::<_, Option<f64>>(i).map_err(e)?);
                }
                FieldKind::Bool => {
                    black_box(row.try_get::<_, Option<bool>>(i).map_err(e)?);
                }
                FieldKind::Timestamp => {
                    black_box(row.try_get::<_, Option<DateTime<Utc>>>(i).map_err(e)?);
                }
                FieldKind::TextArray => {
                    black_box(row.try_get::<_, Option<Vec<String>>>(i).map_err(e)?);
                }
                FieldKind::Json => {
                    black_box(row.try_get::<_, Option<serde_json::Value>>(i).map_err(e)?);
                }
            }
        }
        black_box(row.try_get::<_, i64>(JOB.fields.len()).map_err(e)?);
    }
    Ok(rows.len())
}

fn one(n: usize) -> Result<(), String> {
    if n == 1 { Ok(()) } else { Err(format!("expected one row, got {n}")) }
}

fn nonempty(n: usize) -> Result<(), String> {
    if n > 0 { Ok(()) } else { Err("empty page".into()) }
}

/// Everything the operations need, shared by all tasks.
pub struct Ctx {
    pub svc: Service,
    pub base: Arc<Baseline>,
    pub list: ListSpec,
    pub jobs: u64,
    /// The hot set: jobs 0..hot.
    pub hot: u64,
    /// The checked mix's jobs: 0..mixed_hot (small, so most reads follow a write).
    pub mixed_hot: u64,
    /// Closed-loop tasks (MixedHot: task n writes only jobs n, n + tasks, ...).
    pub tasks: usize,
    pub truth: Truth,
}

/// What the generator knows of each hot job's `salary_max`: the value of
/// its last acknowledged update and the one in flight (each job has one
/// writing task, so at most one). A read must return one of the values
/// known when it was sent or when it was answered; anything else (an older
/// value) is a stale read.
#[derive(Default)]
pub struct Truth {
    slots: Vec<Mutex<(Option<i64>, Option<i64>)>>,
    next: AtomicU64,
    pub checked: AtomicU64,
    pub stale: AtomicU64,
}

impl Truth {
    pub fn new(hot: u64) -> Truth {
        Truth { slots: (0..hot).map(|_| Mutex::new((None, None))).collect(), ..Truth::default() }
    }

    fn snapshot(&self, i: u64) -> (Option<i64>, Option<i64>) {
        *self.slots[i as usize].lock().expect("truth")
    }

    /// A value no update used before (above every generated salary_min).
    fn fresh(&self) -> i64 {
        500_000 + self.next.fetch_add(1, Ordering::Relaxed) as i64
    }

    fn sending(&self, i: u64, v: i64) {
        self.slots[i as usize].lock().expect("truth").1 = Some(v);
    }

    fn acknowledged(&self, i: u64, v: i64) {
        *self.slots[i as usize].lock().expect("truth") = (Some(v), None);
    }

    fn check(&self, before: (Option<i64>, Option<i64>), after: (Option<i64>, Option<i64>), got: Option<i64>) {
        let Some(acked) = before.0 else { return }; // no write yet: the loaded value
        self.checked.fetch_add(1, Ordering::Relaxed);
        let ok = [Some(acked), before.1, after.0, after.1].contains(&got);
        if !ok {
            self.stale.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn reset(&self) {
        self.checked.store(0, Ordering::Relaxed);
        self.stale.store(0, Ordering::Relaxed);
    }
}

/// The request of one operation, drawn before it is sent.
enum Req {
    Get(u64),
    ListFirst,
    ListDeep,
    Create(u64),
    Update(u64, i64),
    GetChecked(u64),
    UpdateChecked(u64),
}

fn draw(kind: Kind, ctx: &Ctx, n: usize, rng: &mut Rng) -> Req {
    let jobs = ctx.jobs;
    let kind = match kind {
        Kind::GetHot => return Req::Get(rng.below(ctx.hot)),
        Kind::MixedHot => {
            let (hot, tasks) = (ctx.mixed_hot.max(1), ctx.tasks.max(1) as u64);
            let n = n as u64 % tasks;
            let owned = (hot.saturating_sub(n)).div_ceil(tasks).max(1);
            return if rng.below(10) == 0 {
                Req::UpdateChecked((n + tasks * rng.below(owned)).min(hot - 1))
            } else {
                Req::GetChecked(rng.below(hot))
            };
        }
        Kind::Mixed => match rng.below(100) {
            0..70 => Kind::Get,
            70..90 => Kind::ListFirst,
            90..95 => Kind::Create,
            _ => Kind::Update,
        },
        k => k,
    };
    match kind {
        Kind::Get => Req::Get(rng.below(jobs)),
        Kind::ListFirst => Req::ListFirst,
        Kind::ListDeep => Req::ListDeep,
        Kind::Create => Req::Create(rng.next()),
        // Above every generated salary_min, so the update is always valid.
        Kind::Update | Kind::Mixed | Kind::GetHot | Kind::MixedHot => {
            Req::Update(rng.below(jobs), 160_000 + rng.below(240) as i64 * 1000)
        }
    }
}

fn salary_update(id: Uuid, salary_max: i64) -> pb::UpdateJobRequest {
    pb::UpdateJobRequest {
        job: Some(pb::Job { id: id.to_string(), salary_max: Some(salary_max), ..Default::default() }),
        update_mask: Some(FieldMask { paths: vec!["salary_max".into()] }),
        request_id: String::new(),
    }
}

async fn service_call(ctx: &Ctx, n: usize, req: Req) -> Result<(), String> {
    let svc = &ctx.svc;
    match req {
        Req::Get(i) => {
            let r = svc.req(pb::GetJobRequest { id: job_id(i).to_string() });
            svc.client(n).get_job(r).await.map_err(status)?;
            Ok(())
        }
        Req::ListFirst => nonempty(svc.list(n, &ctx.list, ctx.list.page_size, "").await?.jobs.len()),
        Req::ListDeep => {
            nonempty(svc.list(n, &ctx.list, ctx.list.page_size, &ctx.list.deep_token).await?.jobs.len())
        }
        Req::Create(seed) => {
            let job = to_proto(&gen_job(seed % ctx.jobs, Some(Uuid::now_v7())));
            let r = svc.req(pb::CreateJobRequest { job: Some(job), request_id: Uuid::new_v4().to_string() });
            svc.client(n).create_job(r).await.map_err(status)?;
            Ok(())
        }
        Req::Update(i, salary_max) => {
            let r = svc.req(salary_update(job_id(i), salary_max));
            svc.client(n).update_job(r).await.map_err(status)?;
            Ok(())
        }
        Req::GetChecked(i) => {
            let before = ctx.truth.snapshot(i);
            let r = svc.req(pb::GetJobRequest { id: job_id(i).to_string() });
            let job = svc.client(n).get_job(r).await.map_err(status)?.into_inner();
            ctx.truth.check(before, ctx.truth.snapshot(i), job.salary_max);
            Ok(())
        }
        Req::UpdateChecked(i) => {
            let v = ctx.truth.fresh();
            ctx.truth.sending(i, v);
            let r = svc.req(salary_update(job_id(i), v));
            svc.client(n).update_job(r).await.map_err(status)?;
            ctx.truth.acknowledged(i, v);
            Ok(())
        }
    }
}

async fn baseline_call(ctx: &Ctx, req: Req) -> Result<(), String> {
    let b = &ctx.base;
    let limit = i64::from(ctx.list.page_size) + 1; // as the service: one more, to know if a page follows
    match req {
        Req::Get(i) => one(decode(&b.query(&b.get, &[&TENANT, &job_id(i)]).await?)?),
        Req::ListFirst => {
            nonempty(decode(&b.query(&b.list_first, &[&TENANT, &limit, &FILTER_VALUE]).await?)?)
        }
        Req::ListDeep => {
            let (t, id) = &ctx.list.deep_key;
            nonempty(decode(&b.query(&b.list_deep, &[&TENANT, &limit, t, id, &FILTER_VALUE]).await?)?)
        }
        Req::Create(seed) => {
            let j = gen_job(seed % ctx.jobs, Some(Uuid::now_v7()));
            let params = j.insert_params();
            one(decode(&b.query(&b.insert, &params).await?)?)
        }
        Req::Update(i, salary_max) => {
            one(decode(&b.query(&b.update, &[&TENANT, &job_id(i), &salary_max]).await?)?)
        }
        Req::GetChecked(i) => one(decode(&b.query(&b.get, &[&TENANT, &job_id(i)]).await?)?),
        Req::UpdateChecked(i) => {
            let v = ctx.truth.fresh();
            one(decode(&b.query(&b.update, &[&TENANT, &job_id(i), &v]).await?)?)
        }
    }
}

pub fn service_op(ctx: Arc<Ctx>, kind: Kind) -> Op {
    Arc::new(move |n, rng| {
        let req = draw(kind, &ctx, n, rng);
        let ctx = ctx.clone();
        Box::pin(async move { service_call(&ctx, n, req).await })
    })
}

pub fn baseline_op(ctx: Arc<Ctx>, kind: Kind) -> Op {
    Arc::new(move |n, rng| {
        let req = draw(kind, &ctx, n, rng);
        let ctx = ctx.clone();
        Box::pin(async move { baseline_call(&ctx, req).await })
    })
}
