//! SQL of AnalyticsService, generated from checked plans
//! (`domain::analytics`): only declared columns, `$n` for every value.
//! Each call is one statement (plus a `work_mem` setting) in a read-only
//! transaction of its own, one round trip; reports read keyset batches.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use tokio_postgres::{Row, types::Type};

use super::{
    Params, Scope, Store, db_error, filter_sql,
    records::{self, param_refs},
    value_sql,
};
use crate::{
    domain::{
        analytics::{Bucket, Func, MetricSpec, Report},
        filter_check::Checked,
        schema::{Field, FieldKind, Resource},
        value::Value,
    },
    error::Error,
};

/// Sort memory of one analytics statement (percentiles sort their group's
/// values; 1,000,000 bigints need about 50 MB before PostgreSQL spills).
const WORK_MEM: &str = include_str!("sql/analytics_work_mem.sql").trim_ascii_end();
/// The bucket starts of a trend (`{start}`, `{end}`, `{tz}`, `{unit}`
/// become parameters).
const BUCKETS_HOUR: &str = include_str!("sql/trend_buckets_hour.sql").trim_ascii_end();
const BUCKETS_CALENDAR: &str = include_str!("sql/trend_buckets_calendar.sql").trim_ascii_end();
const FUNNEL: &str = include_str!("sql/funnel.sql").trim_ascii_end();
const PG_STAT_STATEMENTS: &str = include_str!("sql/pg_stat_statements.sql").trim_ascii_end();
const PG_STAT_STATEMENTS_LOADED: &str = include_str!("sql/pg_stat_statements_loaded.sql").trim_ascii_end();
const TIME_ZONE_EXISTS: &str = include_str!("sql/time_zone_exists.sql").trim_ascii_end();

/// Live rows of the tenant (`params[0]`) and the filter (its values
/// appended to `params`).
fn base_where(res: &'static Resource, filter: Option<&Checked>, params: &mut Vec<Value>) -> String {
    let mut cond = records::tenant_condition(res, false);
    if let Some(f) = filter {
        let sql = filter_sql::emit(f, params);
        let _ = write!(cond, " AND ({sql})");
    }
    cond
}

/// A metric as a `float8` expression.
fn metric_sql(m: &MetricSpec) -> String {
    let Some(f) = m.field else { return "count(*)::float8".to_owned() };
    let c = f.column;
    match m.func {
        Func::Count => format!("count({c})::float8"),
        Func::Sum => format!("sum({c})::float8"),
        Func::Avg => format!("avg({c})::float8"),
        Func::Min => format!("min({c})::float8"),
        Func::Max => format!("max({c})::float8"),
        p => format!(
            "percentile_cont({}) WITHIN GROUP (ORDER BY {c})::float8",
            p.fraction().expect("the remaining functions are percentiles")
        ),
    }
}

/// Runs `sql` after the work_mem setting, in one read round trip.
async fn read_one(store: &Store, scope: &Scope, sql: &str, params: &[Value]) -> Result<Vec<Row>, Error> {
    let r = param_refs(params);
    let none: [&(dyn tokio_postgres::types::ToSql + Sync); 0] = [];
    let statements: [(&str, &Params<'_>); 2] = [(WORK_MEM, &none), (sql, &r)];
    Ok(store.read(scope, &statements).await?.pop().unwrap_or_default())
}

/// One group of an aggregate: dimension values (JSON: null, string, bool)
/// and metric values (None where the group has none).
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    pub dims: Vec<serde_json::Value>,
    pub values: Vec<Option<f64>>,
}

/// Groups, largest first by the first metric, at most `limit`; and the
/// number of groups in all.
pub async fn aggregate(
    store: &Store,
    scope: &Scope,
    res: &'static Resource,
    filter: Option<&Checked>,
    dims: &[&'static Field],
    metrics: &[MetricSpec],
    limit: usize,
) -> Result<(Vec<Group>, i64), Error> {
    let mut params = vec![Value::Uuid(scope.tenant)];
    let cond = base_where(res, filter, &mut params);
    let mut select: Vec<String> = dims.iter().map(|d| format!("to_jsonb({})", d.column)).collect();
    select.extend(metrics.iter().map(metric_sql));
    params.push(Value::Int(limit as i64));
    let mut sql = format!("SELECT {}, count(*) OVER () FROM {} WHERE {cond}", select.join(", "), res.table);
    if !dims.is_empty() {
        let cols: Vec<&str> = dims.iter().map(|d| d.column).collect();
        let _ = write!(
            sql,
            " GROUP BY {} ORDER BY {} DESC NULLS LAST, {}",
            cols.join(", "),
            dims.len() + 1,
            cols.join(", ")
        );
    }
    let _ = write!(sql, " LIMIT ${}", params.len());
    let rows = read_one(store, scope, &sql, &params).await?;
    let mut total = 0;
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        let mut g = Group { dims: Vec::with_capacity(dims.len()), values: Vec::with_capacity(metrics.len()) };
        for i in 0..dims.len() {
            g.dims
                .push(row.try_get::<_, Option<serde_json::Value>>(i).map_err(db_error)?.unwrap_or_default());
        }
        for i in 0..metrics.len() {
            g.values.push(row.try_get::<_, Option<f64>>(dims.len() + i).map_err(db_error)?);
        }
        total = row.try_get::<_, i64>(dims.len() + metrics.len()).map_err(db_error)?;
        out.push(g);
    }
    Ok((out, total))
}

/// A trend's request after checking.
pub struct TrendQuery<'a> {
    pub time: &'static Field,
    pub bucket: Bucket,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub time_zone: &'a str,
    pub metric: MetricSpec,
    pub filter: Option<&'a Checked>,
    pub group: Option<&'static Field>,
    pub max_buckets: usize,
    pub max_series: usize,
}

/// One computed bucket value: bucket start, group value (null without
/// group_by), metric, the group's rank (1 = largest).
pub type TrendCell = (DateTime<Utc>, serde_json::Value, f64, i64);

/// The bucket starts (at most `max_buckets + 1`, so the caller can refuse
/// a range with too many) and the non-empty buckets' values.
///
/// Rows are put in buckets by `width_bucket` over the sorted bucket starts
/// (a binary search), not by `date_trunc` with a time zone per row, which
/// costs more than the scan: the bucket starts alone carry the time zone
/// and DST. With a declared index carrying the time field and
/// `delete_time`, an unfiltered COUNT trend is one index-only scan.
pub async fn trend(
    store: &Store,
    scope: &Scope,
    res: &'static Resource,
    q: &TrendQuery<'_>,
) -> Result<(Vec<DateTime<Utc>>, Vec<TrendCell>), Error> {
    let template = if q.bucket == Bucket::Hour { BUCKETS_HOUR } else { BUCKETS_CALENDAR };
    let buckets_with = |params: &mut Vec<Value>| {
        let mut bind = |v: Value| {
            params.push(v);
            format!("${}", params.len())
        };
        let (start, end) = (bind(Value::Time(q.start)), bind(Value::Time(q.end)));
        let tz = bind(Value::Text(q.time_zone.to_owned()));
        let sql = template.replace("{start}", &start).replace("{end}", &end).replace("{tz}", &tz);
        // Hours need no unit (an unused parameter would have no type).
        if sql.contains("{unit}") {
            sql.replace("{unit}", &bind(Value::Text(q.bucket.unit().into())))
        } else {
            sql
        }
    };
    let mut bucket_params = Vec::with_capacity(5);
    let mut buckets_sql = buckets_with(&mut bucket_params);
    bucket_params.push(Value::Int(q.max_buckets as i64 + 1));
    let _ = write!(buckets_sql, " LIMIT ${}", bucket_params.len());

    let mut params = vec![Value::Uuid(scope.tenant)];
    let mut cond = base_where(res, q.filter, &mut params);
    let col = q.time.column;
    let first = params.len() + 1; // buckets_with binds start, then end
    let starts = buckets_with(&mut params);
    let _ = write!(cond, " AND {col} >= ${first} AND {col} < ${}", first + 1);
    let bucket = format!("width_bucket({col}, (SELECT array_agg(b ORDER BY b) FROM ({starts}) AS bs))");
    let metric = metric_sql(&q.metric);
    let sql = match q.group {
        None => format!(
            "SELECT {bucket}, NULL::jsonb, {metric}, 1::bigint FROM {} WHERE {cond} GROUP BY 1",
            res.table
        ),
        Some(g) => {
            // One scan: per (bucket, group), then the groups ranked by
            // their total over the range; the largest `max_series` kept.
            let rank = if q.metric.func.additive() { "v" } else { "n" };
            params.push(Value::Int(q.max_series as i64));
            format!(
                "SELECT b, g, v, r FROM (SELECT b, g, v, dense_rank() OVER (ORDER BY tot DESC NULLS LAST, g) AS r FROM \
                 (SELECT b, g, v, sum({rank}) OVER (PARTITION BY g) AS tot FROM \
                 (SELECT {bucket} AS b, to_jsonb({gc}) AS g, {metric} AS v, count(*) AS n \
                 FROM {t} WHERE {cond} GROUP BY 1, 2) AS x) AS y) AS z WHERE r <= ${n}",
                gc = g.column,
                t = res.table,
                n = params.len()
            )
        }
    };
    let (br, dr) = (param_refs(&bucket_params), param_refs(&params));
    let none: [&(dyn tokio_postgres::types::ToSql + Sync); 0] = [];
    let statements: [(&str, &Params<'_>); 3] = [(WORK_MEM, &none), (&buckets_sql, &br), (&sql, &dr)];
    let mut results = store.read(scope, &statements).await?;
    let data = results.pop().unwrap_or_default();
    let buckets = results.pop().unwrap_or_default();
    let buckets = buckets
        .iter()
        .map(|r| r.try_get::<_, DateTime<Utc>>(0).map_err(db_error))
        .collect::<Result<Vec<_>, _>>()?;
    let mut cells = Vec::with_capacity(data.len());
    for r in &data {
        // width_bucket numbers the buckets from 1.
        let i = r.try_get::<_, i32>(0).map_err(db_error)?;
        let Some(start) = usize::try_from(i - 1).ok().and_then(|i| buckets.get(i)) else { continue };
        cells.push((
            *start,
            r.try_get::<_, Option<serde_json::Value>>(1).map_err(db_error)?.unwrap_or_default(),
            r.try_get::<_, Option<f64>>(2).map_err(db_error)?.unwrap_or(0.0),
            r.try_get::<_, i64>(3).map_err(db_error)?,
        ));
    }
    Ok((buckets, cells))
}

/// PostgreSQL's name of the time zone `name` (matched case-insensitively,
/// as `AT TIME ZONE` does), or `None` when it knows no such zone.
pub async fn time_zone(store: &Store, scope: &Scope, name: &str) -> Result<Option<String>, Error> {
    let p = [Value::Text(name.to_owned())];
    let r = param_refs(&p);
    let rows = store.read(scope, &[(TIME_ZONE_EXISTS, &r)]).await?.pop().unwrap_or_default();
    rows.first().map(|r| r.try_get::<_, String>(0).map_err(db_error)).transpose()
}

/// Events SENT, OPENED, REPLIED, INTERESTED in the range of live campaigns
/// (a campaign has at most one of each: its status machine never revisits
/// a state, so without a range these are campaigns reaching each stage).
pub async fn funnel(
    store: &Store,
    scope: &Scope,
    campaigns: &'static Resource,
    start: Option<DateTime<Utc>>,
    end: Option<DateTime<Utc>>,
    filter: Option<&Checked>,
) -> Result<[i64; 4], Error> {
    let mut params = vec![Value::Uuid(scope.tenant)];
    // Only the bounds given: an open bound as ±infinity costs a filter per row.
    let mut range = String::new();
    for (t, op) in [(start, ">="), (end, "<")] {
        if let Some(t) = t {
            params.push(Value::Time(t));
            let _ = write!(range, " AND e.event_time {op} ${}", params.len());
        }
    }
    let cond = base_where(campaigns, filter, &mut params);
    let sql = FUNNEL.replace("{range}", range.trim_start()).replace("{campaigns}", &cond);
    let rows = read_one(store, scope, &sql, &params).await?;
    let row = rows.first().ok_or_else(|| Error::Internal("funnel returned no row".into()))?;
    let mut out = [0; 4];
    for (i, slot) in out.iter_mut().enumerate() {
        *slot = row.try_get::<_, i64>(i).map_err(db_error)?;
    }
    Ok(out)
}

/// Per value of `status`: live rows and the sum of `value` (0 when none).
pub async fn totals_by(
    store: &Store,
    scope: &Scope,
    res: &'static Resource,
    status: &'static Field,
    value: &'static Field,
    filter: Option<&Checked>,
) -> Result<Vec<(String, i64, f64)>, Error> {
    let mut params = vec![Value::Uuid(scope.tenant)];
    let cond = base_where(res, filter, &mut params);
    let sql = format!(
        "SELECT {s}, count(*), coalesce(sum({v}), 0)::float8 FROM {t} WHERE {cond} GROUP BY {s}",
        s = status.column,
        v = value.column,
        t = res.table
    );
    let rows = read_one(store, scope, &sql, &params).await?;
    rows.iter()
        .map(|r| {
            Ok((
                r.try_get::<_, Option<String>>(0).map_err(db_error)?.unwrap_or_default(),
                r.try_get::<_, i64>(1).map_err(db_error)?,
                r.try_get::<_, f64>(2).map_err(db_error)?,
            ))
        })
        .collect()
}

/// A report's statement and how its keyset continues after a batch.
struct ReportSql {
    template: &'static str,
    /// Continuation predicate; `{k0}`, `{k1}` are the key parameters.
    after: &'static str,
    /// Cells of the last row that are the keys.
    keys: &'static [usize],
}

fn report_sql(r: Report) -> ReportSql {
    match r {
        Report::JobsByCompany => ReportSql {
            template: include_str!("sql/report_jobs_by_company.sql"),
            after: "(company_name, id) > ({k0}::text, {k1}::uuid)",
            keys: &[0, 2],
        },
        Report::OutreachPerformance => ReportSql {
            template: include_str!("sql/report_outreach_performance.sql"),
            after: "id > {k0}::uuid",
            keys: &[0],
        },
        Report::IngestHistory => ReportSql {
            template: include_str!("sql/report_ingest_history.sql"),
            after: "id < {k0}::uuid",
            keys: &[0],
        },
    }
}

/// A report read in keyset batches, each its own short read transaction:
/// nothing runs between batches, so a caller that goes away leaves no
/// query behind once the batch in flight ends.
pub struct ReportCursor {
    report: Report,
    filter: Option<Checked>,
    after: Option<Vec<Value>>,
    batch: usize,
    done: bool,
}

impl ReportCursor {
    pub fn new(report: Report, filter: Option<Checked>, batch: usize) -> ReportCursor {
        ReportCursor { report, filter, after: None, batch, done: false }
    }

    /// The next batch of rows; empty when the report is complete.
    pub async fn next(&mut self, store: &Store, scope: &Scope) -> Result<Vec<Vec<Value>>, Error> {
        if self.done {
            return Ok(Vec::new());
        }
        let spec = report_sql(self.report);
        let mut params = vec![Value::Uuid(scope.tenant)];
        let mut cond = base_where(self.report.resource(), self.filter.as_ref(), &mut params);
        if let Some(keys) = &self.after {
            let mut pred = spec.after.to_owned();
            for (i, k) in keys.iter().enumerate() {
                params.push(k.clone());
                pred = pred.replace(&format!("{{k{i}}}"), &format!("${}", params.len()));
            }
            let _ = write!(cond, " AND {pred}");
        }
        params.push(Value::Int(self.batch as i64));
        let sql = spec
            .template
            .trim_ascii_end()
            .replace("{where}", &cond)
            .replace("{limit}", &format!("${}", params.len()));
        let r = param_refs(&params);
        let rows = store.read(scope, &[(&sql, &r)]).await?.pop().unwrap_or_default();
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            out.push(cells(row)?);
        }
        if out.len() < self.batch {
            self.done = true;
        } else if let Some(last) = out.last() {
            let keys = spec.keys.iter().map(|&i| last[i].clone()).collect();
            self.after = Some(keys);
        }
        Ok(out)
    }
}

/// A row's columns as values, each decoded by the field kind of its SQL
/// type (the report statements select only these types and text).
fn cells(row: &Row) -> Result<Vec<Value>, Error> {
    row.columns()
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let t = c.type_();
            let kind = if *t == Type::UUID {
                FieldKind::Uuid
            } else if *t == Type::TIMESTAMPTZ {
                FieldKind::Timestamp
            } else if *t == Type::INT8 {
                FieldKind::Int
            } else if *t == Type::FLOAT8 {
                FieldKind::Float
            } else if *t == Type::BOOL {
                FieldKind::Bool
            } else {
                FieldKind::Text
            };
            value_sql::decode(row, i, kind).map_err(db_error)
        })
        .collect()
}

/// A pg_stat_statements row.
#[derive(Debug, Clone)]
pub struct PgStatement {
    pub query: String,
    pub calls: i64,
    pub mean_ms: f64,
    pub max_ms: f64,
    pub total_ms: f64,
    pub rows: i64,
}

/// The service role's most expensive statements in this database by total
/// time (other roles' rows would show as `<insufficient privilege>`);
/// `Ok(None)` when pg_stat_statements is not installed or not preloaded
/// (its settings exist only when the library is loaded; the view would
/// error). Other failures are errors like any read's.
pub async fn pg_stat_statements(
    store: &Store,
    scope: &Scope,
    limit: usize,
) -> Result<Option<Vec<PgStatement>>, Error> {
    let none: [&(dyn tokio_postgres::types::ToSql + Sync); 0] = [];
    let loaded = store.read(scope, &[(PG_STAT_STATEMENTS_LOADED, &none)]).await?;
    if !loaded.first().and_then(|r| r.first()).is_some_and(|r| r.get::<_, bool>(0)) {
        return Ok(None);
    }
    let p = [Value::Int(limit as i64)];
    let r = param_refs(&p);
    let rows = store.read(scope, &[(PG_STAT_STATEMENTS, &r)]).await?.pop().unwrap_or_default();
    let get = |row: &Row| -> Result<PgStatement, tokio_postgres::Error> {
        Ok(PgStatement {
            query: row.try_get::<_, Option<String>>(0)?.unwrap_or_default(),
            calls: row.try_get(1)?,
            mean_ms: row.try_get(2)?,
            max_ms: row.try_get(3)?,
            total_ms: row.try_get(4)?,
            rows: row.try_get(5)?,
        })
    };
    rows.iter().map(|r| get(r).map_err(db_error)).collect::<Result<Vec<_>, _>>().map(Some)
}
