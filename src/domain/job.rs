//! The Job resource: its fields, enums, defaults and validation rules.

use chrono::Utc;

use super::{
    application::APPLICATION,
    company::COMPANY,
    record::{Fields, MAX_TEXT, json_sizes, max_len, require_text},
    schema::{
        Child, EnumDef, Field, FieldKind as K, ImportSpec, OnDelete, Parent, Ranking, Resource, SearchSpec,
        Unique,
    },
    value::Value,
};
use crate::error::FieldViolation;

pub static JOB_TYPE: EnumDef = EnumDef {
    prefix: "JOB_TYPE_",
    values: &["FULL_TIME", "PART_TIME", "CONTRACT", "INTERNSHIP", "TEMPORARY"],
};
pub static EXPERIENCE_LEVEL: EnumDef =
    EnumDef { prefix: "EXPERIENCE_LEVEL_", values: &["ENTRY", "MID", "SENIOR", "LEAD", "EXECUTIVE"] };
pub static JOB_STATUS: EnumDef = EnumDef {
    prefix: "JOB_STATUS_",
    values: &["DISCOVERED", "SAVED", "APPLIED", "INTERVIEWING", "OFFERED", "REJECTED", "CLOSED"],
};

pub static JOB: Resource = Resource {
    name: "job",
    table: "jobs",
    fields: &[
        Field::new("id", K::Uuid).not_null().output_only(),
        Field::new("title", K::Text).not_null(),
        Field::new("company_name", K::Text).not_null().dimension(),
        Field::new("company_id", K::Uuid).dimension(),
        Field::new("location", K::Text).dimension(),
        Field::new("salary_min", K::Int).measure(),
        Field::new("salary_max", K::Int).measure(),
        Field::new("salary_currency", K::Text).not_null().dimension(),
        Field::new("description", K::Text).unsortable(),
        Field::new("requirements", K::Text).unsortable(),
        Field::new("benefits", K::Text).unsortable(),
        Field::new("job_url", K::Text),
        Field::new("source_site", K::Text).dimension(),
        Field::new("posting_time", K::Timestamp).timeline(),
        Field::new("application_deadline", K::Timestamp).timeline(),
        Field::new("discovered_time", K::Timestamp).not_null().timeline(),
        Field::new("remote", K::Bool).not_null().dimension(),
        Field::new("job_type", K::Enum(&JOB_TYPE)).dimension(),
        Field::new("experience_level", K::Enum(&EXPERIENCE_LEVEL)).dimension(),
        Field::new("industry", K::Text).dimension(),
        Field::new("keywords", K::TextArray).not_null().unsortable(),
        Field::new("status", K::Enum(&JOB_STATUS)).not_null().dimension(),
        Field::new("attributes", K::Json).not_null().unsortable(),
        Field::new("create_time", K::Timestamp).not_null().output_only().timeline(),
        Field::new("update_time", K::Timestamp).not_null().output_only().timeline(),
        Field::new("delete_time", K::Timestamp).output_only(),
    ],
    soft_delete: true,
    default_order: "create_time desc",
    rules: normalize,
    // Deleting a job soft-deletes its live applications (audited);
    // undeleting it restores them. Applications are never orphaned silently.
    children: &[Child { resource: &APPLICATION, column: "job_id", on_delete: OnDelete::Cascade }],
    // A job's company, when set, is a live company of its tenant.
    parents: &[Parent::new("company_id", &COMPANY)],
    unique: &[Unique {
        constraint: "jobs_live_job_url_key",
        reason: "DUPLICATE_JOB_URL",
        message: "a live job with this job_url already exists",
    }],
    // search_vector: title (A), company_name and keywords (B), description (C).
    search: Some(&SearchSpec {
        vector: Some("search_vector"),
        config: "english",
        fuzzy: &["title", "company_name"],
        snippet: &[],
        normalize: None,
        threshold: None,
        ranking: Ranking::FieldClass,
    }),
    // An import keeps the caller's own pipeline state of an existing job.
    import: Some(&ImportSpec { key: "job_url", keep_on_update: &["status", "discovered_time"] }),
    ..Resource::BASE
};

/// Applies defaults and checks every rule; all violations at once.
pub fn normalize(v: &mut Fields<'_>) -> Result<(), Vec<FieldViolation>> {
    let mut errs = Vec::new();
    v.default("salary_currency", || Value::Text("USD".into()));
    v.default("status", || Value::Text("DISCOVERED".into()));
    v.default("discovered_time", || Value::Time(Utc::now()));
    v.default("remote", || Value::Bool(false));
    v.default("keywords", || Value::TextArray(Vec::new()));
    v.default("attributes", || Value::Json(serde_json::json!({})));
    require_text(v, "title", 255, &mut errs);
    require_text(v, "company_name", 255, &mut errs);
    max_len(v, "job_url", 500, &mut errs);
    for f in ["location", "source_site", "industry"] {
        max_len(v, f, 255, &mut errs);
    }
    for f in ["description", "requirements", "benefits"] {
        max_len(v, f, MAX_TEXT, &mut errs);
    }
    if let Value::Text(c) = v.get("salary_currency")
        && !(c.len() == 3 && c.bytes().all(|b| b.is_ascii_uppercase()))
    {
        errs.push(FieldViolation::new("salary_currency", "must be an ISO 4217 code such as USD"));
    }
    if let (Value::Int(lo), Value::Int(hi)) = (v.get("salary_min"), v.get("salary_max"))
        && lo > hi
    {
        errs.push(FieldViolation::new("salary_min", "salary_min must not exceed salary_max"));
    }
    for f in ["salary_min", "salary_max"] {
        if let Value::Int(n) = v.get(f)
            && *n < 0
        {
            errs.push(FieldViolation::new(f, "must not be negative"));
        }
    }
    if let Value::TextArray(k) = v.get("keywords") {
        if k.len() > 100 {
            errs.push(FieldViolation::new("keywords", "at most 100 keywords"));
        }
        if k.iter().any(|s| s.is_empty() || s.chars().count() > 100) {
            errs.push(FieldViolation::new("keywords", "each keyword must have 1 to 100 characters"));
        }
    }
    json_sizes(v, &mut errs);
    if errs.is_empty() { Ok(()) } else { Err(errs) }
}
