//! Plain Rust: resource declarations (fields, enums, rules, transitions,
//! relations, search and import specs), validation, the filter language and
//! its type check. Knows nothing of tonic, prost, SQL or the database.
pub mod analytics;
pub mod application;
pub mod audit;
pub mod codec;
pub mod company;
pub mod document;
pub mod filter;
pub mod filter_check;
pub mod ingest;
pub mod job;
pub mod order;
pub mod outreach;
pub mod record;
pub mod schema;
pub mod value;

use schema::Resource;

/// Every declared resource (the conformance tests and declaration checks
/// run over this list).
pub static RESOURCES: &[&Resource] = &[
    &job::JOB,
    &application::APPLICATION,
    &application::EMPLOYER_RESPONSE,
    &ingest::INGEST_RUN,
    &company::COMPANY,
    &company::OPPORTUNITY,
    &outreach::CAMPAIGN,
    &outreach::CAMPAIGN_EVENT,
    &document::DOCUMENT,
    &document::DOCUMENT_VERSION,
    &document::CONVERSATION,
    &document::MESSAGE,
    &audit::AUDIT_EVENT,
];

#[cfg(test)]
mod tests {
    #[test]
    fn declarations_are_consistent() {
        for r in super::RESOURCES {
            r.check().unwrap_or_else(|e| panic!("{e}"));
        }
    }
}
