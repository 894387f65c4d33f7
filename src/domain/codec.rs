//! A compact binary form of records for caches: a tag byte per value and
//! little-endian lengths, checked against the resource's field kinds on the
//! way back. Why not `Record::to_stored` (JSON): a cached read decodes one
//! record per call, and parsing field names, RFC 3339 times and UUID
//! strings costs several times what copying bytes does. JSON values
//! (`Struct` fields) stay JSON inside.
//!
//! [`Writer`] and [`Reader`] are also what the service encodes pages and
//! search hits with. Decoding never panics: any mismatch is `None`, which a
//! cache treats as a miss.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{record::Record, schema::FieldKind, schema::Resource, value::Value};

/// Bumped whenever the layout below changes (caches put it in their keys).
pub const VERSION: u8 = 1;

const NULL: u8 = 0;
const TEXT: u8 = 1;
const INT: u8 = 2;
const FLOAT: u8 = 3;
const BOOL: u8 = 4;
const TIME: u8 = 5;
const UUID: u8 = 6;
const TEXT_ARRAY: u8 = 7;
const JSON: u8 = 8;

/// Appends values to a byte buffer.
#[derive(Default)]
pub struct Writer {
    pub buf: Vec<u8>,
}

impl Writer {
    pub fn with_capacity(n: usize) -> Writer {
        Writer { buf: Vec::with_capacity(n) }
    }
    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    pub fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn i64(&mut self, v: i64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn f64(&mut self, v: f64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn bytes(&mut self, b: &[u8]) {
        self.u32(b.len() as u32);
        self.buf.extend_from_slice(b);
    }
    pub fn str(&mut self, s: &str) {
        self.bytes(s.as_bytes());
    }
    pub fn opt_str(&mut self, s: Option<&str>) {
        match s {
            None => self.u8(0),
            Some(s) => {
                self.u8(1);
                self.str(s);
            }
        }
    }

    fn value(&mut self, v: &Value) {
        match v {
            Value::Null => self.u8(NULL),
            Value::Text(s) => {
                self.u8(TEXT);
                self.str(s);
            }
            Value::Int(i) => {
                self.u8(INT);
                self.i64(*i);
            }
            Value::Float(f) => {
                self.u8(FLOAT);
                self.f64(*f);
            }
            Value::Bool(b) => {
                self.u8(BOOL);
                self.u8(u8::from(*b));
            }
            Value::Time(t) => {
                self.u8(TIME);
                self.i64(t.timestamp_micros());
            }
            Value::Uuid(u) => {
                self.u8(UUID);
                self.buf.extend_from_slice(u.as_bytes());
            }
            Value::TextArray(a) => {
                self.u8(TEXT_ARRAY);
                self.u32(a.len() as u32);
                for s in a {
                    self.str(s);
                }
            }
            Value::Json(j) => {
                self.u8(JSON);
                self.bytes(&serde_json::to_vec(j).expect("JSON serializes"));
            }
        }
    }

    /// A record: its revision, its field count, then each value.
    pub fn record(&mut self, rec: &Record) {
        self.i64(rec.revision);
        self.u32(rec.values.len() as u32);
        for v in &rec.values {
            self.value(v);
        }
    }
}

/// Reads what a [`Writer`] wrote; every method is `None` past the end.
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf }
    }
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.buf.len() < n {
            return None;
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Some(head)
    }
    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }
    pub fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    pub fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.array()?))
    }
    pub fn i64(&mut self) -> Option<i64> {
        Some(i64::from_le_bytes(self.array()?))
    }
    pub fn f64(&mut self) -> Option<f64> {
        Some(f64::from_le_bytes(self.array()?))
    }
    pub fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    pub fn str(&mut self) -> Option<&'a str> {
        std::str::from_utf8(self.bytes()?).ok()
    }
    pub fn opt_str(&mut self) -> Option<Option<&'a str>> {
        match self.u8()? {
            0 => Some(None),
            1 => Some(Some(self.str()?)),
            _ => None,
        }
    }

    fn value(&mut self, kind: FieldKind) -> Option<Value> {
        let tag = self.u8()?;
        Some(match (tag, kind) {
            (NULL, _) => Value::Null,
            (TEXT, FieldKind::Text | FieldKind::Enum(_)) => Value::Text(self.str()?.to_owned()),
            (INT, FieldKind::Int) => Value::Int(self.i64()?),
            (FLOAT, FieldKind::Float) => Value::Float(self.f64()?),
            (BOOL, FieldKind::Bool) => Value::Bool(self.u8()? != 0),
            (TIME, FieldKind::Timestamp) => Value::Time(DateTime::<Utc>::from_timestamp_micros(self.i64()?)?),
            (UUID, FieldKind::Uuid) => Value::Uuid(Uuid::from_bytes(self.array()?)),
            (TEXT_ARRAY, FieldKind::TextArray) => {
                let n = self.u32()? as usize;
                let mut out = Vec::with_capacity(n.min(self.buf.len()));
                for _ in 0..n {
                    out.push(self.str()?.to_owned());
                }
                Value::TextArray(out)
            }
            (JSON, FieldKind::Json) => Value::Json(serde_json::from_slice(self.bytes()?).ok()?),
            _ => return None,
        })
    }

    /// A record of `res`; `None` when it does not fit the declaration.
    pub fn record(&mut self, res: &Resource) -> Option<Record> {
        let revision = self.i64()?;
        if self.u32()? as usize != res.fields.len() {
            return None;
        }
        let values = res.fields.iter().map(|f| self.value(f.kind)).collect::<Option<Vec<_>>>()?;
        Some(Record { values, revision })
    }
}

/// One record in its cached form.
pub fn encode(rec: &Record) -> Vec<u8> {
    let mut w = Writer::with_capacity(1024);
    w.record(rec);
    w.buf
}

/// [`encode`] read back: `None` for anything else (trailing bytes included).
pub fn decode(res: &Resource, bytes: &[u8]) -> Option<Record> {
    let mut r = Reader::new(bytes);
    let rec = r.record(res)?;
    r.is_empty().then_some(rec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::RESOURCES;

    fn sample(kind: FieldKind, i: usize) -> Value {
        match kind {
            FieldKind::Uuid => Value::Uuid(Uuid::now_v7()),
            FieldKind::Text | FieldKind::Enum(_) => Value::Text(format!("ünïcode {i}")),
            FieldKind::Int => Value::Int(-(i as i64) * 1_000_000_007),
            FieldKind::Float => Value::Float(0.1 + i as f64),
            FieldKind::Bool => Value::Bool(i.is_multiple_of(2)),
            FieldKind::Timestamp => {
                Value::Time(DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap())
            }
            FieldKind::TextArray => Value::TextArray(vec!["a".into(), String::new(), "c".into()]),
            FieldKind::Json => Value::Json(serde_json::json!({"k": [1, 2.5, null, {"x": "y"}]})),
        }
    }

    #[test]
    fn every_field_of_every_resource_round_trips() {
        for res in RESOURCES {
            let full = Record {
                values: res.fields.iter().enumerate().map(|(i, f)| sample(f.kind, i)).collect(),
                revision: 7,
            };
            assert_eq!(decode(res, &encode(&full)).as_ref(), Some(&full), "{}", res.name);
            let nulls = Record { values: vec![Value::Null; res.fields.len()], revision: 1 };
            assert_eq!(decode(res, &encode(&nulls)).as_ref(), Some(&nulls), "{}", res.name);
        }
    }

    #[test]
    fn anything_else_is_none() {
        let res = RESOURCES[0];
        let rec = Record { values: res.fields.iter().map(|f| sample(f.kind, 1)).collect(), revision: 2 };
        let bytes = encode(&rec);
        for n in 0..bytes.len() {
            assert!(decode(res, &bytes[..n]).is_none(), "prefix of {n} bytes");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode(res, &longer).is_none());
        // Another resource's record (another field count).
        let others = RESOURCES.iter().filter(|o| o.fields.len() != res.fields.len());
        assert!(others.into_iter().all(|other| decode(other, &bytes).is_none()));
    }
}
