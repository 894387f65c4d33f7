//! `Value` <-> PostgreSQL. Parameters delegate to the driver's own
//! conversions (with their type checks); columns decode by field kind.

use bytes::BytesMut;
use chrono::{DateTime, Utc};
use tokio_postgres::{
    Row,
    types::{IsNull, ToSql, Type, to_sql_checked},
};
use uuid::Uuid;

use crate::domain::{schema::FieldKind, value::Value};

type BoxError = Box<dyn std::error::Error + Sync + Send>;

impl ToSql for Value {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        match self {
            Value::Null => Ok(IsNull::Yes),
            Value::Text(s) => s.to_sql_checked(ty, out),
            Value::Int(i) => i.to_sql_checked(ty, out),
            Value::Float(f) => f.to_sql_checked(ty, out),
            Value::Bool(b) => b.to_sql_checked(ty, out),
            Value::Time(t) => t.to_sql_checked(ty, out),
            Value::Uuid(u) => u.to_sql_checked(ty, out),
            Value::TextArray(v) => v.to_sql_checked(ty, out),
            Value::Json(j) => j.to_sql_checked(ty, out),
        }
    }

    // The variant's own conversion checks the type in `to_sql`.
    fn accepts(_ty: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

/// Decodes column `i` of `row` as a value of `kind`.
pub fn decode(row: &Row, i: usize, kind: FieldKind) -> Result<Value, tokio_postgres::Error> {
    Ok(match kind {
        FieldKind::Uuid => row.try_get::<_, Option<Uuid>>(i)?.map_or(Value::Null, Value::Uuid),
        FieldKind::Text | FieldKind::Enum(_) => {
            row.try_get::<_, Option<String>>(i)?.map_or(Value::Null, Value::Text)
        }
        FieldKind::Int => row.try_get::<_, Option<i64>>(i)?.map_or(Value::Null, Value::Int),
        FieldKind::Float => row.try_get::<_, Option<f64>>(i)?.map_or(Value::Null, Value::Float),
        FieldKind::Bool => row.try_get::<_, Option<bool>>(i)?.map_or(Value::Null, Value::Bool),
        FieldKind::Timestamp => row.try_get::<_, Option<DateTime<Utc>>>(i)?.map_or(Value::Null, Value::Time),
        FieldKind::TextArray => {
            row.try_get::<_, Option<Vec<String>>>(i)?.map_or(Value::Null, Value::TextArray)
        }
        FieldKind::Json => row.try_get::<_, Option<serde_json::Value>>(i)?.map_or(Value::Null, Value::Json),
    })
}
