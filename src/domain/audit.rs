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
    default_order: "event_time desc",
    read_only: true,
    ..Resource::BASE
};

/// What a mutation did (stored as its name, the short name of [`AUDIT_ACTION`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Create,
    Update,
    Delete,
    Undelete,
    Merge,
    Import,
}

impl Action {
    /// The stored name: the enum's short name, in the same order.
    pub fn as_str(self) -> &'static str {
        AUDIT_ACTION.values[self as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_are_the_enum() {
        let all =
            [Action::Create, Action::Update, Action::Delete, Action::Undelete, Action::Merge, Action::Import];
        assert_eq!(all.map(Action::as_str).as_slice(), AUDIT_ACTION.values);
    }
}
