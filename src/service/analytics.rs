//! AnalyticsService's use cases: requests checked against the declarations
//! (`domain::analytics`), computed by `store::analytics`, cached through
//! the read seam's query cache under the generations of every resource
//! they read (so a committed write of any of them is reflected at once).

use std::{
    collections::HashMap,
    sync::{Mutex, PoisonError},
};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use tokio::sync::mpsc;
use tracing::Instrument;

use super::{Service, read::parse_filter};
use crate::{
    domain::{
        analytics::{
            self, Bucket, CellRef, DEFAULT_GROUPS, DEFAULT_WINDOW, Format, MAX_BUCKETS, MAX_GROUPS,
            MAX_METRICS, MAX_SERIES, MAX_WINDOW, MetricSpec, Report,
        },
        company::OPPORTUNITY,
        outreach::{CAMPAIGN, CAMPAIGN_EVENT},
        schema::{Analytic, FieldKind, Resource},
    },
    error::Error,
    store::{
        Scope,
        analytics::{self as sql, Group, ReportCursor, TrendQuery},
        replica::for_shared_cache,
        stats::ShapeStats,
    },
};

/// Report rows per keyset batch, and the largest chunk sent.
pub const REPORT_BATCH: usize = 2000;
pub const REPORT_CHUNK: usize = 64 * 1024;

#[derive(Debug, Clone, Copy)]
pub struct AggregateArgs<'a> {
    pub entity: i32,
    pub filter: &'a str,
    pub group_by: &'a [String],
    /// (function number, field)
    pub metrics: &'a [(i32, String)],
    pub limit: i32,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Aggregate {
    pub rows: Vec<AggregateRow>,
    pub total_groups: i64,
    pub truncated: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AggregateRow {
    pub group_values: Vec<serde_json::Value>,
    pub values: Vec<Option<f64>>,
}

#[derive(Debug, Clone, Copy)]
pub struct TrendArgs<'a> {
    pub entity: i32,
    pub time_field: &'a str,
    pub bucket: i32,
    pub start: Option<DateTime<Utc>>,
    pub end: Option<DateTime<Utc>>,
    /// (function number, field); `None`: COUNT of rows.
    pub metric: Option<(i32, &'a str)>,
    pub filter: &'a str,
    pub group_by: &'a str,
    pub time_zone: &'a str,
    pub window: i32,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TrendPoint {
    /// Microseconds since the Unix epoch.
    pub bucket_start_us: i64,
    pub value: f64,
    pub change_ratio: Option<f64>,
    pub moving_average: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TrendSeries {
    pub group_value: serde_json::Value,
    pub points: Vec<TrendPoint>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Trend {
    /// Without group_by.
    pub points: Vec<TrendPoint>,
    /// With group_by, largest first.
    pub series: Vec<TrendSeries>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FunnelStage {
    /// SENT, OPENED, REPLIED, INTERESTED.
    pub stage: String,
    pub count: i64,
    pub conversion_from_previous: f64,
    pub conversion_from_sent: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PipelineStage {
    pub status: &'static str,
    pub count: i64,
    pub total_estimated_value: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct PipelineRow {
    status: String,
    count: i64,
    total: f64,
}

/// One piece of a report.
#[derive(Debug)]
pub struct ReportChunk {
    pub data: Vec<u8>,
    pub rows: i64,
}

pub struct QueryStatsOut {
    pub shapes: Vec<ShapeStats>,
    pub pg_stat_statements: Option<Vec<sql::PgStatement>>,
}

/// Time zone names looked up in PostgreSQL (lowercased) and what it calls
/// them (`None`: no such zone), so each name is looked up once (bounded:
/// past the bound a name is simply looked up again).
static KNOWN_ZONES: Mutex<Option<HashMap<String, Option<String>>>> = Mutex::new(None);
const MAX_KNOWN_ZONES: usize = 1024;

fn bad_range(msg: impl Into<String>) -> Error {
    Error::invalid("end_time", msg)
}

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, Error> {
    serde_json::to_vec(v).map_err(|e| Error::Internal(format!("analytics result encoding: {e}")))
}

fn decode<T: DeserializeOwned>(b: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(b).map_err(|_| Error::Internal("cached analytics result undecodable".into()))
}

impl Service {
    /// `compute` through the query cache (when there is one) under the
    /// generations of `deps`.
    async fn cached<T, F>(
        &self,
        scope: &Scope,
        deps: &[&'static Resource],
        key: String,
        compute: F,
    ) -> Result<T, Error>
    where
        T: Serialize + DeserializeOwned,
        F: std::future::Future<Output = Result<T, Error>> + Send,
    {
        match &self.cache {
            None => compute.await,
            Some(c) => {
                let key = format!("analytics\n{}\n{key}", scope.tenant);
                let compute = for_shared_cache(async { encode(&compute.await?) });
                let bytes = c.query(scope, deps, key, Box::pin(compute)).await?;
                decode(&bytes)
            }
        }
    }

    pub async fn aggregate_metrics(&self, scope: &Scope, a: AggregateArgs<'_>) -> Result<Aggregate, Error> {
        let res = analytics::entity(a.entity)?;
        let dims = analytics::dimensions(res, a.group_by)?;
        if a.metrics.is_empty() {
            return Err(Error::invalid("metrics", "at least one metric is required"));
        }
        if a.metrics.len() > MAX_METRICS {
            return Err(Error::invalid("metrics", format!("at most {MAX_METRICS} metrics")));
        }
        let metrics = a
            .metrics
            .iter()
            .enumerate()
            .map(|(i, (f, field))| analytics::metric(res, &format!("metrics[{i}]"), *f, field))
            .collect::<Result<Vec<_>, _>>()?;
        let limit = match a.limit {
            n if n < 0 => return Err(Error::invalid("limit", "limit must not be negative")),
            0 => DEFAULT_GROUPS,
            n => (n as usize).min(MAX_GROUPS),
        };
        let filter = parse_filter(res, a.filter)?;
        let key = format!(
            "aggregate\n{}\n{}\n{}\n{}\n{limit}",
            res.name,
            filter.as_ref().map_or("", |f| f.canonical.as_str()),
            dims.iter().map(|d| d.name).collect::<Vec<_>>().join(","),
            metrics.iter().map(MetricSpec::key).collect::<Vec<_>>().join(","),
        );
        let compute = async {
            let (groups, total) = sql::aggregate(
                &self.store,
                scope,
                res,
                filter.as_ref().map(|f| &f.checked),
                &dims,
                &metrics,
                limit,
            )
            .await?;
            let rows: Vec<AggregateRow> = groups
                .into_iter()
                .map(|Group { dims, values }| AggregateRow { group_values: dims, values })
                .collect();
            let total_groups = if rows.is_empty() { 0 } else { total };
            Ok(Aggregate { truncated: total_groups > rows.len() as i64, rows, total_groups })
        };
        self.cached(scope, &[res], key, compute).await
    }

    /// PostgreSQL's name of the caller's time zone, or INVALID_ARGUMENT.
    async fn time_zone(&self, scope: &Scope, tz: &str) -> Result<String, Error> {
        analytics::time_zone_shape(tz)?;
        let key = tz.to_ascii_lowercase();
        let cached = KNOWN_ZONES
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .and_then(|m| m.get(&key).cloned());
        let found = match cached {
            Some(found) => found,
            None => {
                let found = sql::time_zone(&self.store, scope, tz).await?;
                let mut zones = KNOWN_ZONES.lock().unwrap_or_else(PoisonError::into_inner);
                let map = zones.get_or_insert_with(HashMap::new);
                if map.len() < MAX_KNOWN_ZONES {
                    map.insert(key, found.clone());
                }
                found
            }
        };
        found.ok_or_else(|| Error::invalid("time_zone", format!("'{tz}' is no time zone PostgreSQL knows")))
    }

    pub async fn trend(&self, scope: &Scope, a: TrendArgs<'_>) -> Result<Trend, Error> {
        let res = analytics::entity(a.entity)?;
        let time = if a.time_field.is_empty() {
            analytics::field_as(res, Analytic::Time, "time_field", "create_time")?
        } else {
            analytics::field_as(res, Analytic::Time, "time_field", a.time_field)?
        };
        let bucket = Bucket::from_number(a.bucket)
            .ok_or_else(|| Error::invalid("bucket", "bucket is required (HOUR, DAY, WEEK or MONTH)"))?;
        let (Some(start), Some(end)) = (a.start, a.end) else {
            return Err(Error::invalid(
                if a.start.is_none() { "start_time" } else { "end_time" },
                "start_time and end_time are required",
            ));
        };
        if end <= start {
            return Err(bad_range("end_time must be after start_time"));
        }
        let span = (end - start).num_seconds();
        if span / bucket.max_seconds() > MAX_BUCKETS as i64 {
            return Err(bad_range(format!(
                "the range holds more than {MAX_BUCKETS} {} buckets; use a wider bucket or a shorter range",
                bucket.unit()
            )));
        }
        let metric = match a.metric {
            None => MetricSpec::ROWS,
            Some((f, field)) => analytics::metric(res, "metric", f, field)?,
        };
        let group = if a.group_by.is_empty() {
            None
        } else {
            Some(analytics::field_as(res, Analytic::Dimension, "group_by", a.group_by)?)
        };
        let window = match a.window {
            n if n < 0 => return Err(Error::invalid("moving_average_window", "must not be negative")),
            0 => DEFAULT_WINDOW,
            n if n as usize > MAX_WINDOW => {
                return Err(Error::invalid("moving_average_window", format!("at most {MAX_WINDOW}")));
            }
            n => n as usize,
        };
        let tz = if a.time_zone.is_empty() || a.time_zone == "UTC" {
            "UTC".to_owned()
        } else {
            self.time_zone(scope, a.time_zone).await?
        };
        let tz = tz.as_str();
        let filter = parse_filter(res, a.filter)?;
        let key = format!(
            "trend\n{}\n{}\n{:?}\n{}\n{}\n{}\n{}\n{}\n{tz}\n{window}",
            res.name,
            time.name,
            bucket,
            start.timestamp_micros(),
            end.timestamp_micros(),
            metric.key(),
            filter.as_ref().map_or("", |f| f.canonical.as_str()),
            group.map_or("", |g| g.name),
        );
        let compute = async {
            let q = TrendQuery {
                time,
                bucket,
                start,
                end,
                time_zone: tz,
                metric,
                filter: filter.as_ref().map(|f| &f.checked),
                group,
                max_buckets: MAX_BUCKETS,
                max_series: MAX_SERIES,
            };
            let (buckets, cells) = sql::trend(&self.store, scope, res, &q).await?;
            if buckets.len() > MAX_BUCKETS {
                return Err(bad_range(format!("the range holds more than {MAX_BUCKETS} buckets")));
            }
            let index: HashMap<DateTime<Utc>, usize> =
                buckets.iter().enumerate().map(|(i, b)| (*b, i)).collect();
            // (group, values, rank): SQL returns cells unordered, each with
            // its group's rank.
            let mut series: Vec<(serde_json::Value, Vec<f64>, i64)> = Vec::new();
            for (b, g, v, rank) in cells {
                let Some(&i) = index.get(&b) else { continue };
                let s = match series.iter().position(|(k, _, _)| *k == g) {
                    Some(p) => p,
                    None => {
                        series.push((g, vec![0.0; buckets.len()], rank));
                        series.len() - 1
                    }
                };
                series[s].1[i] = v;
            }
            let points = |values: &[f64]| -> Vec<TrendPoint> {
                let avg = analytics::moving_average(values, window);
                values
                    .iter()
                    .enumerate()
                    .map(|(i, v)| TrendPoint {
                        bucket_start_us: buckets[i].timestamp_micros(),
                        value: *v,
                        change_ratio: if i == 0 { None } else { analytics::change_ratio(values[i - 1], *v) },
                        moving_average: avg[i],
                    })
                    .collect()
            };
            if group.is_none() {
                let values = series.pop().map(|s| s.1).unwrap_or_else(|| vec![0.0; buckets.len()]);
                return Ok(Trend { points: points(&values), series: Vec::new() });
            }
            series.sort_by_key(|s| s.2);
            Ok(Trend {
                points: Vec::new(),
                series: series
                    .into_iter()
                    .map(|(g, values, _)| TrendSeries { group_value: g, points: points(&values) })
                    .collect(),
            })
        };
        self.cached(scope, &[res], key, compute).await
    }

    pub async fn outreach_funnel(
        &self,
        scope: &Scope,
        start: Option<DateTime<Utc>>,
        end: Option<DateTime<Utc>>,
        filter: &str,
    ) -> Result<Vec<FunnelStage>, Error> {
        if let (Some(s), Some(e)) = (start, end)
            && e <= s
        {
            return Err(bad_range("end_time must be after start_time"));
        }
        let filter = parse_filter(&CAMPAIGN, filter)?;
        let key = format!(
            "funnel\n{}\n{}\n{}",
            start.map_or(String::new(), |t| t.timestamp_micros().to_string()),
            end.map_or(String::new(), |t| t.timestamp_micros().to_string()),
            filter.as_ref().map_or("", |f| f.canonical.as_str()),
        );
        let compute = async {
            let counts =
                sql::funnel(&self.store, scope, &CAMPAIGN, start, end, filter.as_ref().map(|f| &f.checked))
                    .await?;
            let ratio = |n: i64, d: i64| if d == 0 { 0.0 } else { n as f64 / d as f64 };
            Ok(["SENT", "OPENED", "REPLIED", "INTERESTED"]
                .iter()
                .enumerate()
                .map(|(i, s)| FunnelStage {
                    stage: (*s).to_owned(),
                    count: counts[i],
                    conversion_from_previous: if i == 0 { 1.0 } else { ratio(counts[i], counts[i - 1]) },
                    conversion_from_sent: ratio(counts[i], counts[0]),
                })
                .collect::<Vec<_>>())
        };
        self.cached(scope, &[&CAMPAIGN, &CAMPAIGN_EVENT], key, compute).await
    }

    pub async fn opportunity_pipeline(
        &self,
        scope: &Scope,
        filter: &str,
    ) -> Result<Vec<PipelineStage>, Error> {
        let res = &OPPORTUNITY;
        let status = res.field("status").expect("opportunities have a status");
        let value = res.field("estimated_value").expect("opportunities have an estimated_value");
        let FieldKind::Enum(states) = status.kind else {
            return Err(Error::Internal("opportunity status is no enum".into()));
        };
        let filter = parse_filter(res, filter)?;
        let key = format!("pipeline\n{}", filter.as_ref().map_or("", |f| f.canonical.as_str()));
        let compute = async {
            let rows =
                sql::totals_by(&self.store, scope, res, status, value, filter.as_ref().map(|f| &f.checked))
                    .await?;
            Ok(rows
                .into_iter()
                .map(|(status, count, total)| PipelineRow { status, count, total })
                .collect::<Vec<_>>())
        };
        let rows: Vec<PipelineRow> = self.cached(scope, &[res], key, compute).await?;
        Ok(states
            .values
            .iter()
            .map(|s| {
                let r = rows.iter().find(|r| r.status == *s);
                PipelineStage {
                    status: s,
                    count: r.map_or(0, |r| r.count),
                    total_estimated_value: r.map_or(0.0, |r| r.total),
                }
            })
            .collect())
    }

    /// Streams a report in chunks of whole rows (at most
    /// [`REPORT_CHUNK`] bytes unless one row is larger). The server holds
    /// one batch of rows and one chunk at a time (the channel has room for
    /// two more); a dropped receiver stops the stream after the batch in
    /// flight, and the caller's deadline bounds it as a whole.
    pub fn report(
        &self,
        scope: Scope,
        report: i32,
        format: i32,
        params: &HashMap<String, String>,
    ) -> Result<mpsc::Receiver<Result<ReportChunk, Error>>, Error> {
        let report = Report::from_number(report).ok_or_else(|| {
            Error::invalid(
                "report",
                "report is required (JOBS_BY_COMPANY, OUTREACH_PERFORMANCE or INGEST_HISTORY)",
            )
        })?;
        let format = Format::from_number(format)
            .ok_or_else(|| Error::invalid("format", "format is required (CSV or JSONL)"))?;
        if let Some(k) = params.keys().find(|k| k.as_str() != "filter") {
            return Err(Error::invalid(format!("params[{k}]"), "unknown parameter; reports take `filter`"));
        }
        let filter = parse_filter(report.resource(), params.get("filter").map_or("", String::as_str))?
            .map(|f| f.checked);
        let store = self.store.clone();
        let (out, rx) = mpsc::channel(2);
        tokio::spawn(
            async move {
                let columns = report.columns();
                let work = async {
                    let mut buf = Vec::with_capacity(REPORT_CHUNK + 4096);
                    let mut rows_in_buf = 0i64;
                    if format == Format::Csv {
                        analytics::csv_row(&mut buf, columns.iter().map(|c| CellRef::Header(c)));
                    }
                    let mut cursor = ReportCursor::new(report, filter, REPORT_BATCH);
                    loop {
                        let batch = tokio::select! {
                            b = cursor.next(&store, &scope) => b?,
                            () = out.closed() => return Ok(()),
                        };
                        if batch.is_empty() {
                            break;
                        }
                        for row in &batch {
                            let before = buf.len();
                            match format {
                                Format::Csv => analytics::csv_row(&mut buf, row.iter().map(CellRef::Value)),
                                Format::Jsonl => analytics::json_row(&mut buf, columns, row),
                            }
                            if buf.len() > REPORT_CHUNK && before > 0 {
                                // The row that passed the limit opens the next chunk.
                                let rest = buf.split_off(before);
                                let data = std::mem::replace(&mut buf, rest);
                                if out.send(Ok(ReportChunk { data, rows: rows_in_buf })).await.is_err() {
                                    return Ok(());
                                }
                                rows_in_buf = 0;
                            }
                            rows_in_buf += 1;
                        }
                    }
                    if !buf.is_empty() {
                        let _ = out.send(Ok(ReportChunk { data: buf, rows: rows_in_buf })).await;
                    }
                    Ok::<_, Error>(())
                };
                if let Err(e) = super::within(scope.deadline, work).await {
                    let _ = out.send(Err(e)).await;
                }
            }
            .in_current_span(),
        );
        Ok(rx)
    }

    pub async fn query_stats(&self, scope: &Scope, limit: i32) -> Result<QueryStatsOut, Error> {
        let limit = match limit {
            n if n < 0 => return Err(Error::invalid("limit", "limit must not be negative")),
            0 => 20,
            n => (n as usize).min(200),
        };
        let shapes = self.store.query_stats().slowest(limit);
        let pg = sql::pg_stat_statements(&self.store, scope, limit).await?;
        Ok(QueryStatsOut { shapes, pg_stat_statements: pg })
    }
}
