//! A stored record (values in field-table order plus its revision), a
//! mutable, name-addressed view over a record being written, and the small
//! validation helpers every resource's rules are written with.

use uuid::Uuid;

use super::{schema::Resource, value::Value};
use crate::error::FieldViolation;

/// One row of a resource: values in field-table order, plus its revision
/// (the etag source).
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    pub values: Vec<Value>,
    pub revision: i64,
}

impl Record {
    pub fn id(&self) -> Uuid {
        match self.values.first() {
            Some(Value::Uuid(u)) => *u,
            _ => Uuid::nil(),
        }
    }

    /// Opaque entity tag: changes on every update, delete and undelete.
    pub fn etag(&self) -> String {
        format!("W/\"{}\"", self.revision)
    }

    /// The value of field `name` (panics on a name the resource lacks).
    pub fn get(&self, res: &Resource, name: &str) -> &Value {
        &self.values[res.index(name)]
    }

    /// Soft-deleted (has a delete_time).
    pub fn is_deleted(&self, res: &Resource) -> bool {
        res.soft_delete && !self.get(res, "delete_time").is_null()
    }

    /// `{field: value}` for audit snapshots. Large fields are left out (a
    /// versioned resource keeps them in its versions; an event of a few
    /// megabytes per status move helps no one).
    pub fn to_json(&self, res: &Resource) -> serde_json::Value {
        let map = res
            .fields
            .iter()
            .zip(&self.values)
            .filter(|(f, _)| !f.large)
            .map(|(f, v)| (f.name.to_owned(), v.to_json()))
            .collect();
        serde_json::Value::Object(map)
    }

    /// The stored form of a record (idempotent replays): every field by
    /// name, large ones included, and its revision.
    pub fn to_stored(&self, res: &Resource) -> serde_json::Value {
        let fields: serde_json::Map<String, serde_json::Value> =
            res.fields.iter().zip(&self.values).map(|(f, v)| (f.name.to_owned(), v.to_json())).collect();
        serde_json::json!({"revision": self.revision, "fields": fields})
    }

    /// The record as the BASIC view reads it: large fields NULL.
    pub fn basic(mut self, res: &Resource) -> Record {
        for (f, v) in res.fields.iter().zip(self.values.iter_mut()) {
            if f.large {
                *v = Value::Null;
            }
        }
        self
    }

    /// Reads [`Record::to_stored`] back; `None` if it does not fit `res`.
    pub fn from_stored(res: &Resource, j: &serde_json::Value) -> Option<Record> {
        let revision = j.get("revision")?.as_i64()?;
        let fields = j.get("fields")?.as_object()?;
        let values = res
            .fields
            .iter()
            .map(|f| Value::from_json(fields.get(f.name).unwrap_or(&serde_json::Value::Null), f.kind))
            .collect::<Option<Vec<_>>>()?;
        Some(Record { values, revision })
    }
}

/// Largest serialized Struct (attributes, metadata...) accepted in a field.
pub const MAX_JSON_BYTES: usize = 256 * 1024;

/// The record about to be written, by field name, with the stored record
/// it replaces (`before`, on an update) for rules that compare the two.
pub struct Fields<'a> {
    pub res: &'static Resource,
    pub values: &'a mut Vec<Value>,
    pub before: Option<&'a [Value]>,
}

impl<'a> Fields<'a> {
    pub fn new(res: &'static Resource, values: &'a mut Vec<Value>) -> Self {
        debug_assert_eq!(values.len(), res.fields.len());
        Fields { res, values, before: None }
    }

    /// A view with the previous values of the record (an update).
    pub fn with_before(res: &'static Resource, values: &'a mut Vec<Value>, before: &'a [Value]) -> Self {
        debug_assert_eq!(values.len(), res.fields.len());
        Fields { res, values, before: Some(before) }
    }

    /// The previous value of `name`; `None` on a create.
    pub fn before(&self, name: &str) -> Option<&Value> {
        let i = self.index(name);
        self.before.map(|b| &b[i])
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
/// Largest free-text field (a description and the like).
pub const MAX_TEXT: usize = 1 << 20;

/// A float field, when set, lies in `lo..=hi`.
pub fn in_range(v: &Fields<'_>, name: &str, lo: f64, hi: f64, errs: &mut Vec<FieldViolation>) {
    if let Value::Float(x) = v.get(name)
        && !(lo..=hi).contains(x)
    {
        errs.push(FieldViolation::new(name, format!("{name} must be between {lo} and {hi}")));
    }
}

/// A text array holds at most `max` entries of 1 to `len` characters.
pub fn text_items(v: &Fields<'_>, name: &str, max: usize, len: usize, errs: &mut Vec<FieldViolation>) {
    if let Value::TextArray(items) = v.get(name) {
        if items.len() > max {
            errs.push(FieldViolation::new(name, format!("at most {max} entries")));
        }
        if items.iter().any(|s| s.is_empty() || s.chars().count() > len) {
            errs.push(FieldViolation::new(name, format!("each entry must have 1 to {len} characters")));
        }
    }
}

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
