//! A mutable, name-addressed view over a record's values, and the small
//! validation helpers every resource's rules are written with.

use super::{schema::Resource, value::Value};
use crate::error::FieldViolation;

/// Largest serialized Struct (attributes, metadata...) accepted in a field.
pub const MAX_JSON_BYTES: usize = 256 * 1024;

pub struct Fields<'a> {
    pub res: &'static Resource,
    pub values: &'a mut Vec<Value>,
}

impl<'a> Fields<'a> {
    pub fn new(res: &'static Resource, values: &'a mut Vec<Value>) -> Self {
        debug_assert_eq!(values.len(), res.fields.len());
        Fields { res, values }
    }

    fn index(&self, name: &str) -> usize {
        self.res.index_of(name).unwrap_or_else(|| panic!("{} has no field {name}", self.res.name))
    }

    pub fn get(&self, name: &str) -> &Value {
        &self.values[self.index(name)]
    }

    pub fn set(&mut self, name: &str, v: Value) {
        let i = self.index(name);
        self.values[i] = v;
    }

    /// Sets `name` when it is NULL.
    pub fn default(&mut self, name: &str, v: impl FnOnce() -> Value) {
        let i = self.index(name);
        if self.values[i].is_null() {
            self.values[i] = v();
        }
    }
}

/// A required text field of 1..=max characters.
pub fn require_text(v: &Fields<'_>, name: &str, max: usize, errs: &mut Vec<FieldViolation>) {
    match v.get(name) {
        Value::Text(s) if !s.trim().is_empty() => max_len(v, name, max, errs),
        _ => errs.push(FieldViolation::new(name, format!("{name} is required"))),
    }
}

/// An optional text field of at most `max` characters.
pub fn max_len(v: &Fields<'_>, name: &str, max: usize, errs: &mut Vec<FieldViolation>) {
    if let Value::Text(s) = v.get(name)
        && s.chars().count() > max
    {
        errs.push(FieldViolation::new(name, format!("{name} is longer than {max} characters")));
    }
}

/// Every Struct field under the size limit.
pub fn json_sizes(v: &Fields<'_>, errs: &mut Vec<FieldViolation>) {
    for (f, val) in v.res.fields.iter().zip(v.values.iter()) {
        if let Value::Json(j) = val
            && serde_json::to_vec(j).map_or(0, |b| b.len()) > MAX_JSON_BYTES
        {
            errs.push(FieldViolation::new(
                f.name,
                format!("{} is larger than {MAX_JSON_BYTES} bytes", f.name),
            ));
        }
    }
}

fn json_has_nul(j: &serde_json::Value) -> bool {
    match j {
        serde_json::Value::String(s) => s.contains('\0'),
        serde_json::Value::Array(a) => a.iter().any(json_has_nul),
        serde_json::Value::Object(m) => m.iter().any(|(k, v)| k.contains('\0') || json_has_nul(v)),
        _ => false,
    }
}

/// PostgreSQL text cannot hold NUL characters: reject them per field.
pub fn no_nul_characters(res: &Resource, values: &[Value]) -> Vec<FieldViolation> {
    res.fields
        .iter()
        .zip(values)
        .filter(|(_, v)| match v {
            Value::Text(s) => s.contains('\0'),
            Value::TextArray(a) => a.iter().any(|s| s.contains('\0')),
            Value::Json(j) => json_has_nul(j),
            _ => false,
        })
        .map(|(f, _)| FieldViolation::new(f.name, format!("{} contains a NUL character", f.name)))
        .collect()
}
