//! What AnalyticsService may compute, read from the declarations: the
//! entities, each field's [`Analytic`] flag, the functions and bucket
//! widths, the limits, and the named reports. A request is checked here
//! into a plan that names only declared fields; `store::analytics` turns a
//! plan into SQL.

use super::{
    application::APPLICATION,
    company::{COMPANY, OPPORTUNITY},
    job::JOB,
    outreach::CAMPAIGN,
    schema::{Analytic, Field, Resource},
    value::Value,
};
use crate::error::Error;

/// The entities, in proto order (`Entity` 1..=5).
pub static ENTITIES: [&Resource; 5] = [&JOB, &COMPANY, &OPPORTUNITY, &CAMPAIGN, &APPLICATION];

/// Groups an aggregate returns at most, and by default.
pub const MAX_GROUPS: usize = 1000;
pub const DEFAULT_GROUPS: usize = 100;
/// Dimensions and metrics of one aggregate.
pub const MAX_GROUP_BY: usize = 4;
pub const MAX_METRICS: usize = 16;
/// Buckets of one trend, series of a grouped trend, moving-average window.
pub const MAX_BUCKETS: usize = 5000;
pub const MAX_SERIES: usize = 20;
pub const DEFAULT_WINDOW: usize = 3;
pub const MAX_WINDOW: usize = 100;

/// An aggregate function (proto `MetricFunction` 1..=8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Func {
    Count,
    Sum,
    Avg,
    Min,
    Max,
    P50,
    P90,
    P99,
}

impl Func {
    pub fn from_number(n: i32) -> Option<Func> {
        use Func::*;
        [Count, Sum, Avg, Min, Max, P50, P90, P99].get(usize::try_from(n).ok()?.checked_sub(1)?).copied()
    }
    /// The fraction of a percentile.
    pub fn fraction(self) -> Option<f64> {
        match self {
            Func::P50 => Some(0.5),
            Func::P90 => Some(0.9),
            Func::P99 => Some(0.99),
            _ => None,
        }
    }
    /// Summing the buckets of a series ranks it by this metric itself.
    pub fn additive(self) -> bool {
        matches!(self, Func::Count | Func::Sum)
    }
}

/// A checked metric: a function and, except for COUNT of rows, a measure.
#[derive(Clone, Copy, Debug)]
pub struct MetricSpec {
    pub func: Func,
    pub field: Option<&'static Field>,
}

impl MetricSpec {
    pub const ROWS: MetricSpec = MetricSpec { func: Func::Count, field: None };

    /// Stable text for cache keys.
    pub fn key(&self) -> String {
        format!("{:?}({})", self.func, self.field.map_or("", |f| f.name))
    }
}

/// A trend's bucket width (proto `TrendBucket` 1..=4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bucket {
    Hour,
    Day,
    Week,
    Month,
}

impl Bucket {
    pub fn from_number(n: i32) -> Option<Bucket> {
        use Bucket::*;
        [Hour, Day, Week, Month].get(usize::try_from(n).ok()?.checked_sub(1)?).copied()
    }
    /// The `date_trunc` unit.
    pub fn unit(self) -> &'static str {
        match self {
            Bucket::Hour => "hour",
            Bucket::Day => "day",
            Bucket::Week => "week",
            Bucket::Month => "month",
        }
    }
    /// The longest bucket in seconds (a DST day has 25 hours, a month 31
    /// days): a range longer than `MAX_BUCKETS` of these surely holds too
    /// many buckets; the exact count comes from the database.
    pub fn max_seconds(self) -> i64 {
        match self {
            Bucket::Hour => 3600,
            Bucket::Day => 25 * 3600,
            Bucket::Week => 7 * 24 * 3600 + 3600,
            Bucket::Month => 31 * 24 * 3600 + 3600,
        }
    }
}

/// The entity of proto number `n`.
pub fn entity(n: i32) -> Result<&'static Resource, Error> {
    usize::try_from(n).ok().and_then(|i| i.checked_sub(1)).and_then(|i| ENTITIES.get(i).copied()).ok_or_else(
        || {
            Error::invalid(
                "entity",
                "entity is required (JOBS, COMPANIES, OPPORTUNITIES, CAMPAIGNS or APPLICATIONS)",
            )
        },
    )
}

fn names(res: &'static Resource, role: Analytic) -> String {
    res.fields.iter().filter(|f| f.analytic == role).map(|f| f.name).collect::<Vec<_>>().join(", ")
}

/// A field of `res` flagged `role`, or INVALID_ARGUMENT naming it (and
/// listing the fields that would do).
pub fn field_as(
    res: &'static Resource,
    role: Analytic,
    at: &str,
    name: &str,
) -> Result<&'static Field, Error> {
    let what = match role {
        Analytic::Measure => "metric",
        Analytic::Dimension => "dimension",
        Analytic::Time => "time field",
        Analytic::None => "field",
    };
    match res.field(name) {
        Some(f) if f.analytic == role => Ok(f),
        _ => Err(Error::invalid(
            at,
            format!("'{name}' is no {what} of {}; {what}s: {}", res.table, names(res, role)),
        )),
    }
}

/// A metric of a request: `function` (proto number) over `field`.
pub fn metric(res: &'static Resource, at: &str, function: i32, field: &str) -> Result<MetricSpec, Error> {
    let func = Func::from_number(function).ok_or_else(|| {
        Error::invalid(
            format!("{at}.function"),
            "function is required (COUNT, SUM, AVG, MIN, MAX, P50, P90 or P99)",
        )
    })?;
    if field.is_empty() {
        return if func == Func::Count {
            Ok(MetricSpec::ROWS)
        } else {
            Err(Error::invalid(
                format!("{at}.field"),
                format!(
                    "{func:?} needs a field; metrics of {}: {}",
                    res.table,
                    names(res, Analytic::Measure)
                ),
            ))
        };
    }
    Ok(MetricSpec { func, field: Some(field_as(res, Analytic::Measure, &format!("{at}.field"), field)?) })
}

/// The dimensions of a request, each declared and named once.
pub fn dimensions(res: &'static Resource, names: &[String]) -> Result<Vec<&'static Field>, Error> {
    if names.len() > MAX_GROUP_BY {
        return Err(Error::invalid("group_by", format!("at most {MAX_GROUP_BY} dimensions")));
    }
    let mut out: Vec<&'static Field> = Vec::with_capacity(names.len());
    for (i, n) in names.iter().enumerate() {
        let f = field_as(res, Analytic::Dimension, &format!("group_by[{i}]"), n)?;
        if out.iter().any(|g| g.name == f.name) {
            return Err(Error::invalid(format!("group_by[{i}]"), format!("'{n}' is named twice")));
        }
        out.push(f);
    }
    Ok(out)
}

/// A caller's IANA time zone name, shape only (the database knows which
/// zones exist): letters, digits and `/_+-`, at most 64 characters.
pub fn time_zone_shape(tz: &str) -> Result<(), Error> {
    let ok = !tz.is_empty()
        && tz.len() <= 64
        && tz.bytes().all(|b| b.is_ascii_alphanumeric() || b"/_+-".contains(&b))
        && tz.as_bytes()[0].is_ascii_alphabetic();
    if ok { Ok(()) } else { Err(Error::invalid("time_zone", format!("'{tz}' is no IANA time zone name"))) }
}

/// A named report (proto `Report` 1..=3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Report {
    JobsByCompany,
    OutreachPerformance,
    IngestHistory,
}

impl Report {
    pub fn from_number(n: i32) -> Option<Report> {
        use Report::*;
        [JobsByCompany, OutreachPerformance, IngestHistory]
            .get(usize::try_from(n).ok()?.checked_sub(1)?)
            .copied()
    }
    /// The resource whose rows the report lists (its `filter` param is over it).
    pub fn resource(self) -> &'static Resource {
        match self {
            Report::JobsByCompany => &JOB,
            Report::OutreachPerformance => &CAMPAIGN,
            Report::IngestHistory => &super::ingest::INGEST_RUN,
        }
    }
    /// Column names, as the CSV header and the JSON keys give them.
    pub fn columns(self) -> &'static [&'static str] {
        match self {
            Report::JobsByCompany => &[
                "company_name",
                "company_id",
                "job_id",
                "title",
                "location",
                "industry",
                "status",
                "salary_min",
                "salary_max",
                "salary_currency",
                "remote",
                "posting_time",
                "job_url",
            ],
            Report::OutreachPerformance => &[
                "campaign_id",
                "company_id",
                "company_name",
                "opportunity_id",
                "contact_method",
                "status",
                "sent_time",
                "response_time",
                "hours_to_response",
                "opened_events",
                "replied_events",
                "interested_events",
                "rejected_events",
            ],
            Report::IngestHistory => &[
                "ingest_run_id",
                "source_site",
                "start_time",
                "end_time",
                "duration_seconds",
                "received",
                "inserted",
                "updated",
                "failed",
            ],
        }
    }
}

/// Report formats (proto `ReportFormat` 1..=2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Csv,
    Jsonl,
}

impl Format {
    pub fn from_number(n: i32) -> Option<Format> {
        match n {
            1 => Some(Format::Csv),
            2 => Some(Format::Jsonl),
            _ => None,
        }
    }
}

/// A report cell as text: times RFC 3339 in UTC (as precise as they are),
/// uuids hyphenated; `None` for NULL. Numbers and booleans are written by
/// the callers themselves.
fn cell_text(v: &Value) -> Option<std::borrow::Cow<'_, str>> {
    use std::borrow::Cow;
    Some(match v {
        Value::Null => return None,
        Value::Text(s) => Cow::Borrowed(s.as_str()),
        Value::Time(t) => Cow::Owned(t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)),
        Value::Uuid(u) => Cow::Owned(u.to_string()),
        other => Cow::Owned(other.to_json().to_string()),
    })
}

/// Appends one CSV record (RFC 4180: quoted when it holds a comma, a quote,
/// CR or LF; quotes doubled; CRLF at the end).
pub fn csv_row<'a>(out: &mut Vec<u8>, cells: impl IntoIterator<Item = CellRef<'a>>) {
    use std::io::Write as _;
    for (i, c) in cells.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        // Writes into a Vec cannot fail.
        match c {
            CellRef::Header(s) => csv_text(out, s),
            CellRef::Value(Value::Int(n)) => {
                let _ = write!(out, "{n}");
            }
            CellRef::Value(Value::Float(x)) => {
                let _ = write!(out, "{x}");
            }
            CellRef::Value(Value::Bool(b)) => {
                let _ = write!(out, "{b}");
            }
            CellRef::Value(v) => {
                if let Some(t) = cell_text(v) {
                    csv_text(out, &t);
                }
            }
        }
    }
    out.extend_from_slice(b"\r\n");
}

fn csv_text(out: &mut Vec<u8>, s: &str) {
    if s.bytes().any(|b| matches!(b, b',' | b'"' | b'\r' | b'\n')) {
        out.push(b'"');
        for b in s.bytes() {
            if b == b'"' {
                out.push(b'"');
            }
            out.push(b);
        }
        out.push(b'"');
    } else {
        out.extend_from_slice(s.as_bytes());
    }
}

/// A cell or a header name, for [`csv_row`].
#[derive(Clone, Copy)]
pub enum CellRef<'a> {
    Value(&'a Value),
    Header(&'a str),
}

/// Appends one JSON line, `{"column": value, ...}\n`, keys in column order;
/// written directly (no map, no copies of the row's strings).
pub fn json_row(out: &mut Vec<u8>, columns: &[&str], cells: &[Value]) {
    out.push(b'{');
    for (i, (c, v)) in columns.iter().zip(cells).enumerate() {
        if i > 0 {
            out.push(b',');
        }
        // Strings and numbers always serialize into a Vec.
        let _ = serde_json::to_writer(&mut *out, c);
        out.push(b':');
        let _ = match v {
            Value::Null => serde_json::to_writer(&mut *out, &()),
            Value::Int(n) => serde_json::to_writer(&mut *out, n),
            Value::Float(x) if x.is_finite() => serde_json::to_writer(&mut *out, x),
            Value::Float(_) => serde_json::to_writer(&mut *out, &()),
            Value::Bool(b) => serde_json::to_writer(&mut *out, b),
            Value::Json(j) => serde_json::to_writer(&mut *out, j),
            other => serde_json::to_writer(&mut *out, &cell_text(other).unwrap_or_default()),
        };
    }
    out.extend_from_slice(b"}\n");
}

/// `change_ratio` of a bucket after `prev`: `None` when there is no finite
/// ratio (previous 0, this one not), 0 when both are 0.
pub fn change_ratio(prev: f64, value: f64) -> Option<f64> {
    if prev == 0.0 { (value == 0.0).then_some(0.0) } else { Some((value - prev) / prev) }
}

/// Trailing means over `window` values (fewer at the start).
pub fn moving_average(values: &[f64], window: usize) -> Vec<f64> {
    let mut out = Vec::with_capacity(values.len());
    let mut sum = 0.0;
    for (i, v) in values.iter().enumerate() {
        sum += v;
        if i >= window {
            sum -= values[i - window];
        }
        out.push(sum / (i + 1).min(window) as f64);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_what_rfc_4180_requires() {
        let mut out = Vec::new();
        let cells = [
            Value::Text("plain".into()),
            Value::Text("a,b".into()),
            Value::Text("say \"hi\"".into()),
            Value::Text("two\nlines".into()),
            Value::Null,
            Value::Int(-3),
            Value::Bool(true),
        ];
        csv_row(&mut out, cells.iter().map(CellRef::Value));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "plain,\"a,b\",\"say \"\"hi\"\"\",\"two\nlines\",,-3,true\r\n"
        );
    }

    #[test]
    fn ratios_and_moving_averages() {
        assert_eq!(change_ratio(0.0, 0.0), Some(0.0));
        assert_eq!(change_ratio(0.0, 5.0), None);
        assert_eq!(change_ratio(4.0, 5.0), Some(0.25));
        assert_eq!(moving_average(&[3.0, 6.0, 9.0, 0.0], 3), vec![3.0, 4.5, 6.0, 5.0]);
        assert_eq!(moving_average(&[2.0, 4.0], 1), vec![2.0, 4.0]);
    }

    #[test]
    fn undeclared_fields_are_refused_by_name() {
        let e = metric(&JOB, "metrics[0]", 7, "title").unwrap_err().to_string();
        assert!(e.contains("'title' is no metric of jobs") && e.contains("salary_max"), "{e}");
        let e = dimensions(&JOB, &["description".into()]).unwrap_err().to_string();
        assert!(e.contains("'description' is no dimension"), "{e}");
        assert!(metric(&JOB, "m", 2, "").is_err());
        assert!(metric(&JOB, "m", 9, "salary_max").is_err());
        assert_eq!(metric(&JOB, "m", 1, "").unwrap().func, Func::Count);
        assert!(time_zone_shape("Europe/Berlin").is_ok());
        assert!(time_zone_shape("'; DROP").is_err());
    }
}
