//! Ingest runs: the record of one bulk import.

use super::schema::{Field, FieldKind as K, Resource};

pub static INGEST_RUN: Resource = Resource {
    name: "ingest_run",
    table: "ingest_runs",
    fields: &[
        Field::new("id", K::Uuid).not_null().output_only(),
        Field::new("source_site", K::Text).output_only(),
        Field::new("start_time", K::Timestamp).not_null().output_only(),
        Field::new("end_time", K::Timestamp).output_only(),
        Field::new("received", K::Int).not_null().output_only(),
        Field::new("inserted", K::Int).not_null().output_only(),
        Field::new("updated", K::Int).not_null().output_only(),
        Field::new("unchanged", K::Int).not_null().output_only(),
        Field::new("failed", K::Int).not_null().output_only(),
        Field::new("errors", K::Json).not_null().unsortable().unfilterable().output_only(),
        Field::new("create_time", K::Timestamp).not_null().output_only(),
        Field::new("update_time", K::Timestamp).not_null().output_only(),
    ],
    default_order: "start_time desc",
    read_only: true,
    ..Resource::BASE
};

/// How many rejected rows a run keeps (all are counted).
pub const MAX_REPORTED_ERRORS: usize = 100;
