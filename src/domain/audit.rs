//! The audit event resource (read-only through the API).

use super::schema::{EnumDef, Field, FieldKind as K, Resource};

pub static AUDIT_ACTION: EnumDef = EnumDef {
    prefix: "AUDIT_ACTION_",
    values: &["CREATE", "UPDATE", "DELETE", "UNDELETE", "MERGE", "IMPORT"],
};

pub static AUDIT_EVENT: Resource = Resource {
    name: "audit_event",
    table: "audit_events",
    fields: &[
        Field::new("id", K::Uuid).not_null().output_only(),
        Field::new("event_time", K::Timestamp).not_null().output_only(),
        Field::new("actor", K::Text).not_null().output_only(),
        Field::new("entity", K::Text).not_null().output_only(),
        Field::new("entity_id", K::Uuid).not_null().output_only(),
        Field::new("action", K::Enum(&AUDIT_ACTION)).not_null().output_only(),
        Field::new("before", K::Json).unsortable().output_only(),
        Field::new("after", K::Json).unsortable().output_only(),
        Field::new("request_id", K::Text).output_only(),
        Field::new("trace_id", K::Text).output_only(),
    ],
    soft_delete: false,
    default_order: "event_time desc",
};
