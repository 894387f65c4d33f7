//! Conversions between proto field types and [`Value`]s.

use chrono::{DateTime, Utc};
use prost_types::{Struct, Timestamp, value::Kind};

use crate::{
    domain::{
        schema::EnumDef,
        value::{TIMESTAMP_SECONDS, Value, canonical_uuid},
    },
    error::FieldViolation,
};

/// Which values a caller "set", for an update with an empty mask:
/// everything but NULL, `false` and empty lists.
pub fn set_flags(values: &[Value]) -> Vec<bool> {
    values
        .iter()
        .map(|v| match v {
            Value::Null | Value::Bool(false) => false,
            Value::TextArray(a) => !a.is_empty(),
            _ => true,
        })
        .collect()
}

/// The result of a resource's `to_values`: the values with their "set"
/// flags, or the conversion errors collected on the way.
pub fn values_or_errors(
    values: Vec<Value>,
    errs: Vec<FieldViolation>,
) -> Result<(Vec<Value>, Vec<bool>), Vec<FieldViolation>> {
    if !errs.is_empty() {
        return Err(errs);
    }
    let set = set_flags(&values);
    Ok((values, set))
}

pub fn text(s: &str) -> Value {
    if s.is_empty() { Value::Null } else { Value::Text(s.to_owned()) }
}

pub fn text_out(v: &Value) -> String {
    match v {
        Value::Text(s) => s.clone(),
        Value::Uuid(u) => u.to_string(),
        _ => String::new(),
    }
}

pub fn opt_int(v: Option<i64>) -> Value {
    v.map_or(Value::Null, Value::Int)
}

pub fn opt_int_out(v: &Value) -> Option<i64> {
    if let Value::Int(i) = v { Some(*i) } else { None }
}

pub fn float_out(v: &Value) -> f64 {
    if let Value::Float(f) = v { *f } else { 0.0 }
}

pub fn bool_out(v: &Value) -> bool {
    matches!(v, Value::Bool(true))
}

pub fn strings(v: &[String]) -> Value {
    Value::TextArray(v.to_vec())
}

pub fn strings_out(v: &Value) -> Vec<String> {
    if let Value::TextArray(a) = v { a.clone() } else { Vec::new() }
}

/// An optional UUID field given as a string.
pub fn uuid_field(field: &str, s: &str, errs: &mut Vec<FieldViolation>) -> Value {
    if s.is_empty() {
        return Value::Null;
    }
    match canonical_uuid(s) {
        Some(u) => Value::Uuid(u),
        None => {
            errs.push(FieldViolation::new(field, format!("{field} is not a valid UUID")));
            Value::Null
        }
    }
}

pub fn enum_field(field: &str, def: &EnumDef, n: i32, errs: &mut Vec<FieldViolation>) -> Value {
    if n == 0 {
        return Value::Null;
    }
    match def.name_of(n) {
        Some(name) => Value::Text(name.to_owned()),
        None => {
            errs.push(FieldViolation::new(field, format!("{field} has an unknown enum value {n}")));
            Value::Null
        }
    }
}

pub fn enum_out(def: &EnumDef, v: &Value) -> i32 {
    if let Value::Text(s) = v { def.number_of(s) } else { 0 }
}

pub fn time(field: &str, t: &Option<Timestamp>, errs: &mut Vec<FieldViolation>) -> Value {
    match t {
        None => Value::Null,
        Some(ts) => match DateTime::<Utc>::from_timestamp(ts.seconds, ts.nanos.max(0) as u32) {
            Some(dt) if (0..1_000_000_000).contains(&ts.nanos) && TIMESTAMP_SECONDS.contains(&ts.seconds) => {
                Value::Time(dt)
            }
            _ => {
                errs.push(FieldViolation::new(field, format!("{field} is not a valid timestamp")));
                Value::Null
            }
        },
    }
}

pub fn time_out(v: &Value) -> Option<Timestamp> {
    if let Value::Time(t) = v {
        Some(Timestamp { seconds: t.timestamp(), nanos: t.timestamp_subsec_nanos() as i32 })
    } else {
        None
    }
}

pub fn now_ts() -> Timestamp {
    time_out(&Value::Time(Utc::now())).expect("time value")
}

/// A Struct field; absent stays NULL (the resource's default applies).
pub fn structure(s: &Option<Struct>) -> Value {
    s.as_ref().map_or(Value::Null, |s| Value::Json(struct_to_json(s)))
}

pub fn structure_out(v: &Value) -> Option<Struct> {
    match v {
        Value::Json(serde_json::Value::Object(m)) => {
            Some(Struct { fields: m.iter().map(|(k, v)| (k.clone(), json_to_value(v))).collect() })
        }
        _ => None,
    }
}

pub fn struct_to_json(s: &Struct) -> serde_json::Value {
    serde_json::Value::Object(s.fields.iter().map(|(k, v)| (k.clone(), value_to_json(v))).collect())
}

fn value_to_json(v: &prost_types::Value) -> serde_json::Value {
    use serde_json::Value as J;
    match &v.kind {
        None | Some(Kind::NullValue(_)) => J::Null,
        Some(Kind::NumberValue(n)) => serde_json::Number::from_f64(*n).map_or(J::Null, J::Number),
        Some(Kind::StringValue(s)) => J::String(s.clone()),
        Some(Kind::BoolValue(b)) => J::Bool(*b),
        Some(Kind::StructValue(s)) => struct_to_json(s),
        Some(Kind::ListValue(l)) => J::Array(l.values.iter().map(value_to_json).collect()),
    }
}

pub fn json_to_value(j: &serde_json::Value) -> prost_types::Value {
    use serde_json::Value as J;
    let kind = match j {
        J::Null => Kind::NullValue(0),
        J::Bool(b) => Kind::BoolValue(*b),
        J::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(0.0)),
        J::String(s) => Kind::StringValue(s.clone()),
        J::Array(a) => {
            Kind::ListValue(prost_types::ListValue { values: a.iter().map(json_to_value).collect() })
        }
        J::Object(m) => Kind::StructValue(Struct {
            fields: m.iter().map(|(k, v)| (k.clone(), json_to_value(v))).collect(),
        }),
    };
    prost_types::Value { kind: Some(kind) }
}

/// `Some(json)` as a Struct, for audit snapshots.
pub fn json_struct(j: &Option<serde_json::Value>) -> Option<Struct> {
    j.as_ref().and_then(|j| structure_out(&Value::Json(j.clone())))
}
