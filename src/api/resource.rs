//! Proto <-> record mapping, by field name, and the thin generic adapters
//! every handler calls: they turn proto messages into [`Draft`]s, call the
//! service's use case, and turn [`Record`]s back into messages.
//!
//! A resource's mapping is one [`proto_resource!`] line: the proto message,
//! its declaration and the list of its fields. The struct literal the macro
//! writes names every proto field, so a proto field missing from the list
//! does not compile; a declared field missing from the list, or a name that
//! is not declared, fails the generic round-trip test (`tests::mapping`).
//! How each field converts follows from its Rust type and declared kind
//! ([`ProtoField`]).

use futures_util::{StreamExt, stream::BoxStream};
use prost::Message;
use prost_types::{FieldMask, Struct, Timestamp};
use tonic::Status;

use super::convert::*;
use crate::{
    domain::{
        record::Record,
        schema::{Field, FieldKind, Resource},
        value::Value,
    },
    error::FieldViolation,
    service::{BatchItem, Draft, ListArgs, Scope, Service, UpdateArgs, View},
};

/// One proto field's conversion, chosen by its Rust type and the field's
/// declared kind.
pub trait ProtoField: Sized {
    fn to_value(&self, f: &Field, errs: &mut Vec<FieldViolation>) -> Value;
    fn from_value(v: &Value, f: &Field) -> Self;
}

impl ProtoField for String {
    fn to_value(&self, f: &Field, errs: &mut Vec<FieldViolation>) -> Value {
        match f.kind {
            FieldKind::Uuid => uuid_field(f.name, self, errs),
            _ => text(self),
        }
    }
    fn from_value(v: &Value, _: &Field) -> Self {
        text_out(v)
    }
}

/// Enums: the proto number of the declared `EnumDef`.
impl ProtoField for i32 {
    fn to_value(&self, f: &Field, errs: &mut Vec<FieldViolation>) -> Value {
        match f.kind {
            FieldKind::Enum(def) => enum_field(f.name, def, *self, errs),
            _ => Value::Int(i64::from(*self)),
        }
    }
    fn from_value(v: &Value, f: &Field) -> Self {
        match f.kind {
            FieldKind::Enum(def) => enum_out(def, v),
            _ => opt_int_out(v).and_then(|i| i32::try_from(i).ok()).unwrap_or(0),
        }
    }
}

impl ProtoField for bool {
    fn to_value(&self, _: &Field, _: &mut Vec<FieldViolation>) -> Value {
        Value::Bool(*self)
    }
    fn from_value(v: &Value, _: &Field) -> Self {
        bool_out(v)
    }
}

impl ProtoField for i64 {
    fn to_value(&self, _: &Field, _: &mut Vec<FieldViolation>) -> Value {
        Value::Int(*self)
    }
    fn from_value(v: &Value, _: &Field) -> Self {
        opt_int_out(v).unwrap_or(0)
    }
}

impl ProtoField for Option<i64> {
    fn to_value(&self, _: &Field, _: &mut Vec<FieldViolation>) -> Value {
        opt_int(*self)
    }
    fn from_value(v: &Value, _: &Field) -> Self {
        opt_int_out(v)
    }
}

impl ProtoField for f64 {
    fn to_value(&self, _: &Field, _: &mut Vec<FieldViolation>) -> Value {
        Value::Float(*self)
    }
    fn from_value(v: &Value, _: &Field) -> Self {
        float_out(v)
    }
}

impl ProtoField for Option<f64> {
    fn to_value(&self, _: &Field, _: &mut Vec<FieldViolation>) -> Value {
        self.map_or(Value::Null, Value::Float)
    }
    fn from_value(v: &Value, _: &Field) -> Self {
        if let Value::Float(f) = v { Some(*f) } else { None }
    }
}

impl ProtoField for Vec<String> {
    fn to_value(&self, _: &Field, _: &mut Vec<FieldViolation>) -> Value {
        strings(self)
    }
    fn from_value(v: &Value, _: &Field) -> Self {
        strings_out(v)
    }
}

impl ProtoField for Option<Timestamp> {
    fn to_value(&self, f: &Field, errs: &mut Vec<FieldViolation>) -> Value {
        time(f.name, self, errs)
    }
    fn from_value(v: &Value, _: &Field) -> Self {
        time_out(v)
    }
}

impl ProtoField for Option<Struct> {
    fn to_value(&self, _: &Field, _: &mut Vec<FieldViolation>) -> Value {
        structure(self)
    }
    fn from_value(v: &Value, _: &Field) -> Self {
        structure_out(v)
    }
}

/// What the edge knows of a resource: its message and how it maps.
pub trait ProtoResource: Message + Default + Clone + Sized + 'static {
    const RES: &'static Resource;
    /// Declared field names, in the order the mapping lists them.
    const NAMES: &'static [&'static str];
    /// The message as a draft, with the conversion's violations (the
    /// fields that did not convert are NULL in the draft).
    fn to_draft(&self) -> (Draft, Vec<FieldViolation>);
    fn from_record(rec: &Record) -> Self;
    /// Field-table index of each of `NAMES`, computed once.
    fn indexes() -> &'static [usize];
}

/// Implements [`ProtoResource`] by field name: `proto_resource!(pb::Job, JOB, [id, title, …])`,
/// plus `etag` when the message carries one.
#[macro_export]
macro_rules! proto_resource {
    (@impl $msg:ty, $res:expr, [$($f:ident),* $(,)?], $($etag:ident)?) => {
        impl $crate::api::resource::ProtoResource for $msg {
            const RES: &'static $crate::domain::schema::Resource = &$res;
            const NAMES: &'static [&'static str] = &[$(stringify!($f)),*];

            fn indexes() -> &'static [usize] {
                static IDX: std::sync::OnceLock<Vec<usize>> = std::sync::OnceLock::new();
                IDX.get_or_init(|| Self::NAMES.iter().map(|n| Self::RES.index(n)).collect())
            }

            fn to_draft(&self) -> ($crate::service::Draft, Vec<$crate::error::FieldViolation>) {
                use $crate::api::resource::ProtoField as _;
                let res: &'static $crate::domain::schema::Resource = &$res;
                let idx = <Self as $crate::api::resource::ProtoResource>::indexes();
                let mut errs = Vec::new();
                let mut values = vec![$crate::domain::value::Value::Null; res.fields.len()];
                let mut k = 0;
                $(
                    let f = &res.fields[idx[k]];
                    if f.mutable {
                        values[idx[k]] = self.$f.to_value(f, &mut errs);
                    }
                    k += 1;
                )*
                let _ = k;
                let set = $crate::api::convert::set_flags(&values);
                ($crate::service::Draft { values, set }, errs)
            }

            fn from_record(rec: &$crate::domain::record::Record) -> Self {
                let res: &'static $crate::domain::schema::Resource = &$res;
                let idx = <Self as $crate::api::resource::ProtoResource>::indexes();
                let mut k = 0;
                let mut next = || {
                    k += 1;
                    (&rec.values[idx[k - 1]], &res.fields[idx[k - 1]])
                };
                Self {
                    $($f: { let (v, f) = next(); $crate::api::resource::ProtoField::from_value(v, f) },)*
                    $($etag: rec.etag(),)?
                }
            }
        }
    };
    ($msg:ty, $res:expr, [$($f:ident),* $(,)?], etag) => {
        $crate::proto_resource!(@impl $msg, $res, [$($f),*], etag);
    };
    ($msg:ty, $res:expr, [$($f:ident),* $(,)?]) => {
        $crate::proto_resource!(@impl $msg, $res, [$($f),*],);
    };
}

fn draft<R: ProtoResource>(msg: Option<R>) -> Option<(Draft, Vec<FieldViolation>)> {
    msg.map(|m| m.to_draft())
}

fn mask_paths(mask: Option<FieldMask>) -> Vec<String> {
    mask.map(|m| m.paths).unwrap_or_default()
}

pub async fn create<R: ProtoResource>(
    svc: &Service,
    scope: &Scope,
    msg: Option<R>,
    request_id: &str,
) -> Result<R, Status> {
    Ok(R::from_record(&svc.create(scope, R::RES, draft(msg), request_id).await?))
}

pub async fn get<R: ProtoResource>(svc: &Service, scope: &Scope, id: &str) -> Result<R, Status> {
    Ok(R::from_record(&svc.get(scope, R::RES, id, View::Full).await?))
}

pub async fn batch_get<R: ProtoResource>(
    svc: &Service,
    scope: &Scope,
    ids: &[String],
) -> Result<Vec<R>, Status> {
    Ok(svc.batch_get(scope, R::RES, ids, View::Full).await?.iter().map(R::from_record).collect())
}

/// One creation of a batch, as the edge receives it.
pub fn batch_item<R: ProtoResource>(msg: Option<R>, request_id: String) -> BatchItem {
    BatchItem { draft: draft(msg), request_id }
}

pub async fn batch_create<R: ProtoResource>(
    svc: &Service,
    scope: &Scope,
    items: Vec<BatchItem>,
    request_id: &str,
) -> Result<Vec<R>, Status> {
    Ok(svc.batch_create(scope, R::RES, items, request_id).await?.iter().map(R::from_record).collect())
}

/// A page of messages: items, next token, total size.
pub struct Page<R> {
    pub items: Vec<R>,
    pub next_page_token: String,
    pub total_size: i64,
}

pub async fn list<R: ProtoResource>(
    svc: &Service,
    scope: &Scope,
    args: ListArgs<'_>,
) -> Result<Page<R>, Status> {
    let page = svc.list(scope, R::RES, args).await?;
    Ok(Page {
        items: page.items.iter().map(R::from_record).collect(),
        next_page_token: page.next_page_token,
        total_size: page.total_size,
    })
}

pub async fn update<R: ProtoResource>(
    svc: &Service,
    scope: &Scope,
    msg: Option<R>,
    mask: Option<FieldMask>,
    id: impl Fn(&R) -> &str,
    etag: impl Fn(&R) -> &str,
    request_id: &str,
) -> Result<R, Status> {
    let name = R::RES.name;
    let msg = msg.ok_or_else(|| crate::error::Error::invalid(name, format!("{name} is required")))?;
    let (draft, conversion) = msg.to_draft();
    let paths = mask_paths(mask);
    let args = UpdateArgs { id: id(&msg), draft, conversion, mask: &paths, etag: etag(&msg), request_id };
    Ok(R::from_record(&svc.update(scope, R::RES, args).await?))
}

/// Soft delete; `force` takes RESTRICT children along.
pub async fn delete<R: ProtoResource>(
    svc: &Service,
    scope: &Scope,
    id: &str,
    etag: &str,
    force: bool,
    request_id: &str,
) -> Result<R, Status> {
    Ok(R::from_record(&svc.set_deleted(scope, R::RES, id, etag, true, force, request_id).await?))
}

pub async fn undelete<R: ProtoResource>(
    svc: &Service,
    scope: &Scope,
    id: &str,
    request_id: &str,
) -> Result<R, Status> {
    Ok(R::from_record(&svc.set_deleted(scope, R::RES, id, "", false, false, request_id).await?))
}

/// The export stream of messages.
pub fn export<R: ProtoResource + Send>(
    svc: &Service,
    scope: Scope,
    filter: &str,
    order_by: &str,
    show_deleted: bool,
) -> Result<BoxStream<'static, Result<R, Status>>, Status> {
    let rx = svc.export(scope, R::RES, filter, order_by, show_deleted)?;
    Ok(tokio_stream::wrappers::ReceiverStream::new(rx)
        .map(|item| item.map(|rec| R::from_record(&rec)).map_err(Status::from))
        .boxed())
}

/// The list arguments of a request.
pub fn list_args<'a>(
    page_size: i32,
    page_token: &'a str,
    filter: &'a str,
    order_by: &'a str,
    show_deleted: bool,
    count: bool,
) -> ListArgs<'a> {
    ListArgs { page_size, page_token, filter, order_by, show_deleted, count, view: View::Full, subset: None }
}

#[cfg(test)]
pub(crate) mod tests {
    //! The one generic mapping test: for every resource, a record with a
    //! distinct, non-default value in every field survives
    //! record -> message -> draft (mutable fields) and every field reaches
    //! the message (changing it changes the message).

    use chrono::{TimeZone, Utc};

    use super::*;
    use crate::domain::schema::FieldKind;

    fn sample(f: &Field, i: usize) -> Value {
        match f.kind {
            FieldKind::Uuid => Value::Uuid(uuid::Uuid::from_u128(0x1000 + i as u128)),
            FieldKind::Text => Value::Text(format!("text {i}")),
            FieldKind::Int => Value::Int(100 + i as i64),
            FieldKind::Float => Value::Float(0.25 + i as f64),
            FieldKind::Bool => Value::Bool(true),
            FieldKind::Timestamp => {
                Value::Time(Utc.timestamp_opt(1_700_000_000 + i as i64 * 3600, 0).single().expect("time"))
            }
            FieldKind::Enum(def) => Value::Text(def.values[i % def.values.len()].to_owned()),
            FieldKind::TextArray => Value::TextArray(vec![format!("k{i}"), "x".into()]),
            FieldKind::Json => Value::Json(serde_json::json!({ "key": format!("v{i}") })),
        }
    }

    /// Overridable per resource: Json fields holding lists of messages.
    pub fn round_trip<R: ProtoResource + PartialEq + std::fmt::Debug>(
        sample_of: impl Fn(&Field, usize) -> Option<Value>,
    ) {
        let res = R::RES;
        for f in res.fields {
            assert!(R::NAMES.contains(&f.name), "{}: field {} is not mapped", res.name, f.name);
        }
        let values: Vec<Value> = res
            .fields
            .iter()
            .enumerate()
            .map(|(i, f)| sample_of(f, i).unwrap_or_else(|| sample(f, i)))
            .collect();
        let rec = Record { values: values.clone(), revision: 7 };
        let msg = R::from_record(&rec);
        let (draft, errs) = msg.to_draft();
        assert!(errs.is_empty(), "{}: {errs:?}", res.name);
        for (i, f) in res.fields.iter().enumerate() {
            if f.mutable {
                assert_eq!(draft.values[i], values[i], "{}.{} does not round-trip", res.name, f.name);
            }
            let mut other = rec.clone();
            other.values[i] = Value::Null;
            assert_ne!(R::from_record(&other), msg, "{}.{} does not reach the message", res.name, f.name);
        }
    }

    #[test]
    fn mapping() {
        use crate::pb;
        round_trip::<pb::Job>(|_, _| None);
        round_trip::<pb::Application>(|_, _| None);
        round_trip::<pb::EmployerResponse>(|_, _| None);
        round_trip::<pb::AuditEvent>(|_, _| None);
        round_trip::<pb::Company>(|f, i| {
            (f.name == "decision_makers").then(|| {
                Value::Json(serde_json::json!([{"name": format!("n{i}"), "title": "t", "email": "a@b.c", "linkedin_url": "u"}]))
            })
        });
        round_trip::<pb::Opportunity>(|_, _| None);
        round_trip::<pb::Campaign>(|_, _| None);
        round_trip::<pb::CampaignEvent>(|_, _| None);
        round_trip::<pb::Document>(|_, _| None);
        round_trip::<pb::Conversation>(|_, _| None);
        round_trip::<pb::Message>(|_, _| None);
        round_trip::<pb::IngestRun>(|f, i| {
            (f.name == "errors").then(|| {
                Value::Json(serde_json::json!([{"index": i, "reason": "bad", "job_url": "https://x"}]))
            })
        });
    }
}
