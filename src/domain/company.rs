//! Companies (master data, merged into survivors) and the automation
//! opportunities found in them.

use super::{
    job::JOB,
    outreach::CAMPAIGN,
    record::{Fields, MAX_TEXT, in_range, json_sizes, max_len, require_text, text_items},
    schema::{
        Child, EnumDef, Field, FieldKind as K, MergeSpec, OnDelete, Parent, Ranking, Resource, SearchSpec,
        Transitions,
    },
    value::Value,
};
use crate::error::FieldViolation;

pub static COMPANY_SIZE: EnumDef =
    EnumDef { prefix: "COMPANY_SIZE_", values: &["SMALL", "MEDIUM", "LARGE", "ENTERPRISE"] };

/// Most contacts a company holds.
pub const MAX_DECISION_MAKERS: usize = 100;

pub static COMPANY: Resource = Resource {
    name: "company",
    table: "companies",
    fields: &[
        Field::new("id", K::Uuid).not_null().output_only(),
        Field::new("name", K::Text).not_null(),
        Field::new("website", K::Text),
        Field::new("industry", K::Text).dimension(),
        Field::new("size", K::Enum(&COMPANY_SIZE)).dimension(),
        Field::new("location", K::Text).dimension(),
        Field::new("description", K::Text).unsortable(),
        Field::new("technology_stack", K::TextArray).not_null().unsortable(),
        Field::new("pain_points", K::TextArray).not_null().unsortable(),
        // A JSON list of Contact objects.
        Field::new("decision_makers", K::Json).not_null().unsortable().unfilterable(),
        Field::new("enrichment", K::Json).not_null().unsortable(),
        Field::new("confidence_score", K::Float).measure(),
        Field::new("research_time", K::Timestamp).timeline(),
        Field::new("master_company_id", K::Uuid).output_only(),
        Field::new("create_time", K::Timestamp).not_null().output_only().timeline(),
        Field::new("update_time", K::Timestamp).not_null().output_only().timeline(),
        Field::new("delete_time", K::Timestamp).output_only(),
    ],
    soft_delete: true,
    default_order: "create_time desc",
    rules: normalize_company,
    children: &[
        // Jobs keep their company when it is deleted; a merge moves them.
        Child { resource: &JOB, column: "company_id", on_delete: OnDelete::Keep },
        Child { resource: &OPPORTUNITY, column: "company_id", on_delete: OnDelete::Restrict },
        Child { resource: &CAMPAIGN, column: "company_id", on_delete: OnDelete::Restrict },
    ],
    // Trigram match on the generated matching key (`bi_company_key(name)`).
    search: Some(&SearchSpec {
        vector: None,
        config: "simple",
        fuzzy: &["name_key"],
        snippet: &[],
        normalize: Some("bi_company_key"),
        threshold: Some(0.5),
        ranking: Ranking::CoverDensity,
    }),
    merge: Some(&MergeSpec {
        master: "master_company_id",
        union: &["technology_stack", "pain_points", "decision_makers"],
        combine: &["enrichment"],
    }),
    ..Resource::BASE
};

pub fn normalize_company(v: &mut Fields<'_>) -> Result<(), Vec<FieldViolation>> {
    let mut errs = Vec::new();
    v.default("technology_stack", || Value::TextArray(Vec::new()));
    v.default("pain_points", || Value::TextArray(Vec::new()));
    v.default("decision_makers", || Value::Json(serde_json::json!([])));
    v.default("enrichment", || Value::Json(serde_json::json!({})));
    require_text(v, "name", 255, &mut errs);
    max_len(v, "website", 500, &mut errs);
    for f in ["industry", "location"] {
        max_len(v, f, 255, &mut errs);
    }
    max_len(v, "description", MAX_TEXT, &mut errs);
    text_items(v, "technology_stack", 200, 100, &mut errs);
    text_items(v, "pain_points", 200, 1000, &mut errs);
    in_range(v, "confidence_score", 0.0, 1.0, &mut errs);
    if let Value::Json(serde_json::Value::Array(people)) = v.get("decision_makers") {
        if people.len() > MAX_DECISION_MAKERS {
            errs.push(FieldViolation::new(
                "decision_makers",
                format!("at most {MAX_DECISION_MAKERS} decision makers"),
            ));
        }
        for (i, p) in people.iter().enumerate() {
            let name = p["name"].as_str().unwrap_or_default();
            if name.is_empty() || name.chars().count() > 255 {
                errs.push(FieldViolation::new(
                    format!("decision_makers[{i}].name"),
                    "a decision maker needs a name of 1 to 255 characters",
                ));
            }
            if let Some(email) = p["email"].as_str()
                && !email.is_empty()
                && (!email.contains('@') || email.len() > 320)
            {
                errs.push(FieldViolation::new(format!("decision_makers[{i}].email"), "not an email address"));
            }
        }
    }
    json_sizes(v, &mut errs);
    if errs.is_empty() { Ok(()) } else { Err(errs) }
}

pub static COMPLEXITY: EnumDef =
    EnumDef { prefix: "IMPLEMENTATION_COMPLEXITY_", values: &["LOW", "MEDIUM", "HIGH"] };
pub static OPPORTUNITY_STATUS: EnumDef = EnumDef {
    prefix: "OPPORTUNITY_STATUS_",
    values: &["IDENTIFIED", "RESEARCHED", "POC_CREATED", "PITCHED", "ACCEPTED", "REJECTED"],
};

pub static OPPORTUNITY: Resource = Resource {
    name: "opportunity",
    table: "opportunities",
    fields: &[
        Field::new("id", K::Uuid).not_null().output_only(),
        Field::new("company_id", K::Uuid).not_null().dimension(),
        Field::new("problem_description", K::Text).unsortable(),
        Field::new("solution_approach", K::Text).not_null().unsortable(),
        Field::new("estimated_value", K::Int).measure(),
        Field::new("implementation_complexity", K::Enum(&COMPLEXITY)).dimension(),
        Field::new("confidence_score", K::Float).measure(),
        Field::new("proof_of_concept_created", K::Bool).not_null().dimension(),
        Field::new("status", K::Enum(&OPPORTUNITY_STATUS)).not_null().dimension(),
        Field::new("create_time", K::Timestamp).not_null().output_only().timeline(),
        Field::new("update_time", K::Timestamp).not_null().output_only().timeline(),
        Field::new("delete_time", K::Timestamp).output_only(),
    ],
    soft_delete: true,
    default_order: "create_time desc",
    rules: normalize_opportunity,
    parents: &[Parent::new("company_id", &COMPANY)],
    children: &[Child { resource: &CAMPAIGN, column: "opportunity_id", on_delete: OnDelete::Restrict }],
    transitions: &[Transitions {
        field: "status",
        moves: &[
            ("IDENTIFIED", &["RESEARCHED", "REJECTED"]),
            ("RESEARCHED", &["POC_CREATED", "REJECTED"]),
            ("POC_CREATED", &["PITCHED", "REJECTED"]),
            ("PITCHED", &["ACCEPTED", "REJECTED"]),
        ],
    }],
    ..Resource::BASE
};

pub fn normalize_opportunity(v: &mut Fields<'_>) -> Result<(), Vec<FieldViolation>> {
    let mut errs = Vec::new();
    v.default("status", || Value::Text("IDENTIFIED".into()));
    v.default("proof_of_concept_created", || Value::Bool(false));
    if v.get("company_id").is_null() {
        errs.push(FieldViolation::new("company_id", "company_id is required"));
    }
    require_text(v, "solution_approach", MAX_TEXT, &mut errs);
    max_len(v, "problem_description", MAX_TEXT, &mut errs);
    in_range(v, "confidence_score", 0.0, 1.0, &mut errs);
    if let Value::Int(n) = v.get("estimated_value")
        && *n < 0
    {
        errs.push(FieldViolation::new("estimated_value", "must not be negative"));
    }
    if errs.is_empty() { Ok(()) } else { Err(errs) }
}
