//! Outreach campaigns, their status machine and their append-only events.

use chrono::{DateTime, Utc};

use super::{
    company::{COMPANY, OPPORTUNITY},
    record::{Fields, MAX_TEXT, max_len},
    schema::{EnumDef, Field, FieldKind as K, Parent, Resource, Sequence, Subset, Transitions},
    value::Value,
};
use crate::error::{Error, FieldViolation};

pub static CONTACT_METHOD: EnumDef =
    EnumDef { prefix: "CONTACT_METHOD_", values: &["EMAIL", "LINKEDIN", "PHONE"] };
pub static CAMPAIGN_STATUS: EnumDef = EnumDef {
    prefix: "CAMPAIGN_STATUS_",
    values: &["DRAFT", "SENT", "OPENED", "REPLIED", "INTERESTED", "REJECTED"],
};
pub static CAMPAIGN_EVENT_TYPE: EnumDef = EnumDef {
    prefix: "CAMPAIGN_EVENT_TYPE_",
    values: &["SENT", "OPENED", "REPLIED", "INTERESTED", "REJECTED"],
};

/// Campaigns a follow-up can be due for (the migration's partial index).
pub static DUE_FOLLOW_UPS: Subset =
    Subset { name: "due_follow_ups", field: "status", any_of: &["SENT", "OPENED", "REPLIED"] };

pub static CAMPAIGN: Resource = Resource {
    name: "campaign",
    table: "campaigns",
    fields: &[
        Field::new("id", K::Uuid).not_null().output_only(),
        Field::new("company_id", K::Uuid).not_null().dimension(),
        Field::new("opportunity_id", K::Uuid).dimension(),
        Field::new("contact_method", K::Enum(&CONTACT_METHOD)).dimension(),
        Field::new("contact_person", K::Text),
        Field::new("message_content", K::Text).unsortable(),
        // Moved by events only (RecordCampaignEvent).
        Field::new("status", K::Enum(&CAMPAIGN_STATUS)).not_null().output_only().dimension(),
        // Stamped by events only.
        Field::new("sent_time", K::Timestamp).output_only().timeline(),
        Field::new("response_time", K::Timestamp).output_only().timeline(),
        Field::new("follow_up_time", K::Timestamp).timeline(),
        Field::new("notes", K::Text).unsortable(),
        Field::new("create_time", K::Timestamp).not_null().output_only().timeline(),
        Field::new("update_time", K::Timestamp).not_null().output_only().timeline(),
        Field::new("delete_time", K::Timestamp).output_only(),
    ],
    soft_delete: true,
    default_order: "create_time desc",
    rules: normalize_campaign,
    parents: &[
        Parent::new("company_id", &COMPANY),
        Parent::new("opportunity_id", &OPPORTUNITY).agreeing("company_id", "company_id"),
    ],
    transitions: &[Transitions {
        field: "status",
        moves: &[
            ("DRAFT", &["SENT"]),
            ("SENT", &["OPENED", "REJECTED"]),
            ("OPENED", &["REPLIED", "REJECTED"]),
            ("REPLIED", &["INTERESTED", "REJECTED"]),
        ],
    }],
    subsets: &[&DUE_FOLLOW_UPS],
    ..Resource::BASE
};

pub fn normalize_campaign(v: &mut Fields<'_>) -> Result<(), Vec<FieldViolation>> {
    let mut errs = Vec::new();
    v.default("status", || Value::Text("DRAFT".into()));
    if v.get("company_id").is_null() {
        errs.push(FieldViolation::new("company_id", "company_id is required"));
    }
    max_len(v, "contact_person", 255, &mut errs);
    max_len(v, "message_content", MAX_TEXT, &mut errs);
    max_len(v, "notes", MAX_TEXT, &mut errs);
    if errs.is_empty() { Ok(()) } else { Err(errs) }
}

/// One event of a campaign: appended by RecordCampaignEvent, never changed.
pub static CAMPAIGN_EVENT: Resource = Resource {
    name: "campaign_event",
    table: "campaign_events",
    fields: &[
        Field::new("id", K::Uuid).not_null().output_only(),
        Field::new("campaign_id", K::Uuid).not_null(),
        Field::new("seq", K::Int).not_null().output_only(),
        Field::new("event", K::Enum(&CAMPAIGN_EVENT_TYPE)).not_null(),
        Field::new("event_time", K::Timestamp).not_null(),
        Field::new("create_time", K::Timestamp).not_null().output_only(),
    ],
    default_order: "seq",
    parents: &[Parent::new("campaign_id", &CAMPAIGN)],
    sequence: Some(&Sequence { parent: "campaign_id", field: "seq" }),
    ..Resource::BASE
};

/// How far ahead of the server's clock an event may be dated.
pub const MAX_EVENT_SKEW: chrono::Duration = chrono::Duration::hours(1);

/// The campaign after `event` at `at`, given its current values and its
/// latest recorded event (`None` before the first). `Ok(None)`: the same
/// event at the same time is already the latest one (an idempotent repeat).
pub fn apply_event(
    values: &[Value],
    event: &str,
    at: DateTime<Utc>,
    latest: Option<(&str, DateTime<Utc>)>,
) -> Result<Option<Vec<Value>>, Error> {
    if let Some((last, when)) = latest {
        if last == event && when == at {
            return Ok(None);
        }
        if at < when {
            return Err(Error::FailedPrecondition {
                reason: "OUT_OF_ORDER_EVENT",
                message: format!(
                    "{event} at {at} is older than the campaign's last event ({last} at {when})"
                ),
            });
        }
    }
    let res = &CAMPAIGN;
    let status = res.index("status");
    // A move to the state the campaign is in is no move: refused like any
    // other illegal one (only the identical latest event repeats).
    if let Value::Text(from) = &values[status]
        && from == event
    {
        return Err(Error::IllegalTransition {
            entity: res.name,
            field: "status",
            from: from.clone(),
            to: event.to_owned(),
            allowed: res.transitions[0].allowed(from),
        });
    }
    let mut next = values.to_vec();
    next[status] = Value::Text(event.to_owned());
    let stamp = |next: &mut Vec<Value>, field: &str, only_if_empty: bool| {
        let i = res.index(field);
        if !only_if_empty || next[i].is_null() {
            next[i] = Value::Time(at);
        }
    };
    match event {
        "SENT" => stamp(&mut next, "sent_time", false),
        "REPLIED" => stamp(&mut next, "response_time", false),
        "INTERESTED" | "REJECTED" => stamp(&mut next, "response_time", true),
        _ => {}
    }
    Ok(Some(next))
}
