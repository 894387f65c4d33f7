//! Applications to jobs and employer responses to applications.

use super::{
    job::JOB,
    record::{Fields, in_range, json_sizes, max_len, require_text},
    schema::{EnumDef, Field, FieldKind as K, Parent, Resource},
    value::Value,
};
use crate::error::FieldViolation;

pub static APPLICATION_STATUS: EnumDef = EnumDef {
    prefix: "APPLICATION_STATUS_",
    values: &["SUBMITTED", "SCREENING", "INTERVIEWING", "OFFERED", "ACCEPTED", "REJECTED", "WITHDRAWN"],
};

pub static APPLICATION: Resource = Resource {
    name: "application",
    table: "applications",
    fields: &[
        Field::new("id", K::Uuid).not_null().output_only(),
        Field::new("job_id", K::Uuid).not_null().dimension(),
        Field::new("status", K::Enum(&APPLICATION_STATUS)).not_null().dimension(),
        Field::new("application_time", K::Timestamp).timeline(),
        Field::new("cover_letter_version", K::Text).dimension(),
        Field::new("resume_version", K::Text).dimension(),
        Field::new("interview_time", K::Timestamp).timeline(),
        Field::new("response_time", K::Timestamp).timeline(),
        Field::new("notes", K::Text).unsortable(),
        Field::new("credibility_rating", K::Float).measure(),
        Field::new("exaggeration_level", K::Float).measure(),
        Field::new("integrity_score", K::Float).measure(),
        Field::new("create_time", K::Timestamp).not_null().output_only().timeline(),
        Field::new("update_time", K::Timestamp).not_null().output_only().timeline(),
        Field::new("delete_time", K::Timestamp).output_only(),
    ],
    soft_delete: true,
    default_order: "create_time desc",
    rules: normalize_application,
    parents: &[Parent::new("job_id", &JOB)],
    ..Resource::BASE
};

pub static EMPLOYER_RESPONSE: Resource = Resource {
    name: "employer_response",
    table: "employer_responses",
    fields: &[
        Field::new("id", K::Uuid).not_null().output_only(),
        Field::new("application_id", K::Uuid).not_null(),
        Field::new("response_type", K::Text).not_null(),
        Field::new("response_time", K::Timestamp),
        Field::new("subject_line", K::Text),
        Field::new("email_content", K::Text).unsortable(),
        Field::new("sender_email", K::Text),
        Field::new("sentiment_score", K::Float),
        Field::new("requires_action", K::Bool).not_null(),
        Field::new("action_taken", K::Text),
        Field::new("follow_up_time", K::Timestamp),
        Field::new("create_time", K::Timestamp).not_null().output_only(),
        Field::new("update_time", K::Timestamp).not_null().output_only(),
    ],
    default_order: "create_time desc",
    rules: normalize_employer_response,
    parents: &[Parent::new("application_id", &APPLICATION)],
    ..Resource::BASE
};

pub fn normalize_application(v: &mut Fields<'_>) -> Result<(), Vec<FieldViolation>> {
    let mut errs = Vec::new();
    v.default("status", || Value::Text("SUBMITTED".into()));
    if v.get("job_id").is_null() {
        errs.push(FieldViolation::new("job_id", "job_id is required"));
    }
    for f in ["cover_letter_version", "resume_version"] {
        max_len(v, f, 100, &mut errs);
    }
    max_len(v, "notes", 100_000, &mut errs);
    in_range(v, "credibility_rating", 0.0, 10.0, &mut errs);
    in_range(v, "exaggeration_level", 0.0, 10.0, &mut errs);
    in_range(v, "integrity_score", 0.0, 100.0, &mut errs);
    json_sizes(v, &mut errs);
    if errs.is_empty() { Ok(()) } else { Err(errs) }
}

pub fn normalize_employer_response(v: &mut Fields<'_>) -> Result<(), Vec<FieldViolation>> {
    let mut errs = Vec::new();
    v.default("requires_action", || Value::Bool(false));
    if v.get("application_id").is_null() {
        errs.push(FieldViolation::new("application_id", "application_id is required"));
    }
    require_text(v, "response_type", 50, &mut errs);
    max_len(v, "subject_line", 1000, &mut errs);
    max_len(v, "email_content", 1 << 20, &mut errs);
    max_len(v, "sender_email", 320, &mut errs);
    max_len(v, "action_taken", 10_000, &mut errs);
    if let Value::Text(e) = v.get("sender_email")
        && !e.contains('@')
    {
        errs.push(FieldViolation::new("sender_email", "sender_email is not an email address"));
    }
    in_range(v, "sentiment_score", -1.0, 1.0, &mut errs);
    if errs.is_empty() { Ok(()) } else { Err(errs) }
}
