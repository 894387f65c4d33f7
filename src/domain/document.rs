//! Business-analysis documents (SRS, wireframes, diagrams, notes) with their
//! immutable version history and processing status, and the assistant
//! conversations that produce them, with their ordered messages.

use sha2::{Digest, Sha256};

use super::{
    record::{Fields, MAX_TEXT, json_sizes, max_len, require_text},
    schema::{
        Counter, EnumDef, Field, FieldKind as K, Parent, Ranking, Resource, SearchSpec, Sequence, Subset,
        Tally, Transitions, Versions,
    },
    value::Value,
};
use crate::error::FieldViolation;

pub static DOCUMENT_KIND: EnumDef =
    EnumDef { prefix: "DOCUMENT_KIND_", values: &["SRS", "WIREFRAME", "DIAGRAM", "NOTE"] };
pub static DOCUMENT_STATUS: EnumDef =
    EnumDef { prefix: "DOCUMENT_STATUS_", values: &["DRAFT", "IN_REVIEW", "PUBLISHED", "ARCHIVED"] };
pub static PROCESSING_STATUS: EnumDef =
    EnumDef { prefix: "PROCESSING_STATUS_", values: &["PENDING", "PROCESSING", "READY", "FAILED"] };
pub static MESSAGE_ROLE: EnumDef =
    EnumDef { prefix: "MESSAGE_ROLE_", values: &["USER", "ASSISTANT", "SYSTEM"] };

/// Most bytes of text kept in a document's own `content` (and sent in
/// unary messages): larger content goes through the streams only.
pub const INLINE_CONTENT_MAX: usize = 4 << 20;
/// Most bytes of one document version (the upload stream's limit).
pub const MAX_CONTENT_BYTES: u64 = 64 << 20;

/// Documents a worker may claim (the migration's partial index).
pub static PENDING_DOCUMENTS: Subset =
    Subset { name: "pending_documents", field: "processing_status", any_of: &["PENDING"] };

pub static DOCUMENT: Resource = Resource {
    name: "document",
    table: "documents",
    fields: &[
        Field::new("id", K::Uuid).not_null().output_only(),
        Field::new("title", K::Text).not_null(),
        Field::new("kind", K::Enum(&DOCUMENT_KIND)),
        Field::new("content", K::Text).large(),
        Field::new("content_type", K::Text),
        Field::new("metadata", K::Json).not_null().unsortable(),
        Field::new("status", K::Enum(&DOCUMENT_STATUS)).not_null(),
        // +1 on every content change (the counter).
        Field::new("version", K::Int).not_null().output_only(),
        Field::new("filename", K::Text),
        Field::new("size_bytes", K::Int).not_null().output_only(),
        Field::new("sha256", K::Text).output_only(),
        Field::new("processing_status", K::Enum(&PROCESSING_STATUS)).not_null(),
        Field::new("owner", K::Text).not_null().output_only(),
        Field::new("create_time", K::Timestamp).not_null().output_only(),
        Field::new("update_time", K::Timestamp).not_null().output_only(),
        Field::new("delete_time", K::Timestamp).output_only(),
    ],
    soft_delete: true,
    default_order: "create_time desc",
    rules: normalize_document,
    transitions: &[Transitions {
        field: "processing_status",
        moves: &[
            ("PENDING", &["PROCESSING"]),
            ("PROCESSING", &["READY", "FAILED"]),
            ("FAILED", &["PENDING"]),
        ],
    }],
    // Weights (title A, body B) live in the migration's generated column.
    search: Some(&SearchSpec {
        vector: Some("search_vector"),
        config: "english",
        fuzzy: &["title"],
        normalize: None,
        threshold: None,
        ranking: Ranking::CoverDensity,
        snippet: &["title", "content"],
    }),
    // A new version when the bytes change (the digest: binary uploads leave
    // `content` NULL). The version records the content type of its time.
    counter: Some(&Counter { field: "version", bumps_on: &["content", "sha256"] }),
    versions: Some(&Versions {
        resource: &DOCUMENT_VERSION,
        parent: "document_id",
        chunks: "document_chunks",
        content: "content",
        content_type: "content_type",
        size: "size_bytes",
        sha256: "sha256",
        author: "author",
        inline_max: INLINE_CONTENT_MAX,
    }),
    subsets: &[&PENDING_DOCUMENTS],
    owner: Some("owner"),
    ..Resource::BASE
};

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

pub fn normalize_document(v: &mut Fields<'_>) -> Result<(), Vec<FieldViolation>> {
    let mut errs = Vec::new();
    v.default("metadata", || Value::Json(serde_json::json!({})));
    v.default("status", || Value::Text("DRAFT".into()));
    v.default("processing_status", || Value::Text("PENDING".into()));
    require_text(v, "title", 500, &mut errs);
    max_len(v, "filename", 500, &mut errs);
    max_len(v, "content_type", 255, &mut errs);
    if let Value::Text(c) = v.get("content")
        && c.len() > INLINE_CONTENT_MAX
    {
        errs.push(FieldViolation::new(
            "content",
            format!(
                "content is larger than {} MiB; send it with UploadDocumentContent",
                INLINE_CONTENT_MAX >> 20
            ),
        ));
    }
    // Content written through this record (not an upload, which sets its
    // own size and digest): size and digest follow from the text.
    let changed = v.before("content").is_none_or(|b| b != v.get("content"));
    let digest_kept = v.before("sha256").is_none_or(|b| b == v.get("sha256"));
    if changed && digest_kept && errs.is_empty() {
        let text = match v.get("content") {
            Value::Text(s) => s.clone(),
            _ => String::new(),
        };
        v.set("size_bytes", Value::Int(text.len() as i64));
        v.set("sha256", Value::Text(sha256_hex(text.as_bytes())));
        if !text.is_empty() {
            v.default("content_type", || Value::Text("text/plain".into()));
        }
    }
    json_sizes(v, &mut errs);
    if errs.is_empty() { Ok(()) } else { Err(errs) }
}

/// One version of a document's content: written by the service with each
/// content change, never changed. Its bytes are `document_chunks` rows.
pub static DOCUMENT_VERSION: Resource = Resource {
    name: "document_version",
    table: "document_versions",
    fields: &[
        Field::new("id", K::Uuid).not_null().output_only(),
        Field::new("document_id", K::Uuid).not_null().output_only(),
        Field::new("version", K::Int).not_null().output_only(),
        Field::new("content_type", K::Text).output_only(),
        Field::new("size_bytes", K::Int).not_null().output_only(),
        Field::new("sha256", K::Text).not_null().output_only(),
        Field::new("author", K::Text).not_null().output_only(),
        Field::new("create_time", K::Timestamp).not_null().output_only(),
    ],
    default_order: "version desc",
    parents: &[Parent::new("document_id", &DOCUMENT)],
    read_only: true,
    ..Resource::BASE
};

pub static CONVERSATION: Resource = Resource {
    name: "conversation",
    table: "conversations",
    fields: &[
        Field::new("id", K::Uuid).not_null().output_only(),
        Field::new("title", K::Text).not_null(),
        Field::new("metadata", K::Json).not_null().unsortable(),
        Field::new("owner", K::Text).not_null().output_only(),
        // Kept by AppendMessages (the tally).
        Field::new("message_count", K::Int).not_null().output_only(),
        Field::new("total_tokens", K::Int).not_null().output_only(),
        Field::new("create_time", K::Timestamp).not_null().output_only(),
        Field::new("update_time", K::Timestamp).not_null().output_only(),
    ],
    default_order: "create_time desc",
    rules: normalize_conversation,
    owner: Some("owner"),
    tally: Some(&Tally { child: &MESSAGE, count: "message_count", sums: &[("total_tokens", "token_count")] }),
    ..Resource::BASE
};

pub fn normalize_conversation(v: &mut Fields<'_>) -> Result<(), Vec<FieldViolation>> {
    let mut errs = Vec::new();
    v.default("metadata", || Value::Json(serde_json::json!({})));
    v.default("message_count", || Value::Int(0));
    v.default("total_tokens", || Value::Int(0));
    require_text(v, "title", 500, &mut errs);
    json_sizes(v, &mut errs);
    if errs.is_empty() { Ok(()) } else { Err(errs) }
}

/// One message of a conversation, appended by AppendMessages, never changed.
pub static MESSAGE: Resource = Resource {
    name: "message",
    table: "messages",
    fields: &[
        Field::new("id", K::Uuid).not_null().output_only(),
        Field::new("conversation_id", K::Uuid).not_null(),
        Field::new("seq", K::Int).not_null().output_only(),
        Field::new("role", K::Enum(&MESSAGE_ROLE)).not_null(),
        Field::new("content", K::Text).not_null().unsortable(),
        Field::new("token_count", K::Int).not_null(),
        Field::new("metadata", K::Json).not_null().unsortable(),
        Field::new("create_time", K::Timestamp).not_null().output_only(),
    ],
    default_order: "seq",
    rules: normalize_message,
    parents: &[Parent::new("conversation_id", &CONVERSATION)],
    sequence: Some(&Sequence { parent: "conversation_id", field: "seq" }),
    ..Resource::BASE
};

pub fn normalize_message(v: &mut Fields<'_>) -> Result<(), Vec<FieldViolation>> {
    let mut errs = Vec::new();
    v.default("metadata", || Value::Json(serde_json::json!({})));
    v.default("token_count", || Value::Int(0));
    v.default("content", || Value::Text(String::new()));
    if v.get("role").is_null() {
        errs.push(FieldViolation::new("role", "role is required (USER, ASSISTANT or SYSTEM)"));
    }
    max_len(v, "content", MAX_TEXT, &mut errs);
    if let Value::Int(n) = v.get("token_count")
        && *n < 0
    {
        errs.push(FieldViolation::new("token_count", "must not be negative"));
    }
    json_sizes(v, &mut errs);
    if errs.is_empty() { Ok(()) } else { Err(errs) }
}

#[cfg(test)]
mod tests {
    #[test]
    fn digests_are_lower_hex() {
        assert_eq!(
            super::sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
