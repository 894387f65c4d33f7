//! A dynamically typed value: a bound SQL parameter, or one column of a row.
//! The store converts it to and from PostgreSQL; the API converts it to and
//! from proto fields.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::schema::FieldKind;

#[derive(Clone, Debug, Default, PartialEq)]
pub enum Value {
    #[default]
    Null,
    Text(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Time(DateTime<Utc>),
    Uuid(Uuid),
    TextArray(Vec<String>),
    Json(serde_json::Value),
}

impl Value {
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// Converts to JSON for audit snapshots and page tokens.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match self {
            Value::Null => J::Null,
            Value::Text(s) => J::String(s.clone()),
            Value::Int(i) => J::from(*i),
            Value::Float(f) => J::from(*f),
            Value::Bool(b) => J::Bool(*b),
            Value::Time(t) => J::String(t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)),
            Value::Uuid(u) => J::String(u.to_string()),
            Value::TextArray(v) => J::Array(v.iter().cloned().map(J::String).collect()),
            Value::Json(j) => j.clone(),
        }
    }

    /// Reads [`Value::to_json`] back for a field of `kind`; `None` when the
    /// JSON does not fit the kind.
    pub fn from_json(j: &serde_json::Value, kind: FieldKind) -> Option<Value> {
        use serde_json::Value as J;
        if j.is_null() {
            return Some(Value::Null);
        }
        Some(match (kind, j) {
            (FieldKind::Uuid, J::String(s)) => Value::Uuid(s.parse().ok()?),
            (FieldKind::Text | FieldKind::Enum(_), J::String(s)) => Value::Text(s.clone()),
            (FieldKind::Int, J::Number(n)) => Value::Int(n.as_i64()?),
            (FieldKind::Float, J::Number(n)) => Value::Float(n.as_f64()?),
            (FieldKind::Bool, J::Bool(b)) => Value::Bool(*b),
            (FieldKind::Timestamp, J::String(s)) => {
                Value::Time(DateTime::parse_from_rfc3339(s).ok()?.with_timezone(&Utc))
            }
            (FieldKind::TextArray, J::Array(a)) => {
                Value::TextArray(a.iter().map(|s| s.as_str().map(str::to_owned)).collect::<Option<_>>()?)
            }
            (FieldKind::Json, j) => Value::Json(j.clone()),
            _ => return None,
        })
    }
}

/// A UUID in its canonical, hyphenated form (`8-4-4-4-12` hex digits) only:
/// the braced, URN and unhyphenated spellings `Uuid::parse_str` also
/// accepts would make one id answer to several strings.
pub fn canonical_uuid(s: &str) -> Option<Uuid> {
    if s.len() != 36 {
        return None;
    }
    Uuid::try_parse(s).ok()
}

/// The span of a protobuf `Timestamp`: 0001-01-01T00:00:00Z to
/// 9999-12-31T23:59:59.999999999Z.
pub const TIMESTAMP_SECONDS: std::ops::RangeInclusive<i64> = -62_135_596_800..=253_402_300_799;
