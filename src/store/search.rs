//! Ranked search over any resource that declares a [`SearchSpec`]:
//! full-text on its generated `tsvector` column (GIN), or a typo-tolerant
//! trigram match on its fuzzy columns. Pages are keyset by (score, id).
//! Column names come from the static declaration only.

use std::fmt::Write;

use uuid::Uuid;

use super::{
    Tx, filter_sql,
    records::{self, Record, View},
};
use crate::{
    domain::{
        filter_check::Checked,
        schema::{Resource, SNIPPET_SCAN, SearchSpec},
        value::Value,
    },
    error::Error,
};

/// Which ranking produced a page (bound into its page token).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    FullText,
    Fuzzy,
}

pub struct SearchQuery<'a> {
    pub text: &'a str,
    pub filter: Option<&'a Checked>,
    pub after: Option<(f64, Uuid)>,
    pub limit: usize,
    pub mode: Mode,
}

/// One hit: the record, its score and (when the resource declares a
/// snippet column and the mode is full text) a highlighted snippet.
pub struct Hit {
    pub record: Record,
    pub score: f64,
    pub snippet: Option<String>,
}

/// `FROM`, the match condition and the score expression of a mode.
fn ranking(spec: &SearchSpec, mode: Mode) -> Result<(String, String, String), Error> {
    Ok(match mode {
        Mode::FullText => {
            let vector =
                spec.vector.ok_or_else(|| Error::Internal("full-text search without a tsvector".into()))?;
            (
                format!("websearch_to_tsquery('{}', $2) AS q", spec.config),
                format!("{vector} @@ q"),
                format!("ts_rank_cd({vector}, q, 1)::float8"),
            )
        }
        // Trigram-only search matches the whole normalized key: one `%`
        // condition per column (one GIN bitmap scan), scored by similarity.
        Mode::Fuzzy if spec.vector.is_none() => {
            let matches: Vec<String> = spec.fuzzy.iter().map(|c| format!("{c} % $2")).collect();
            let scores: Vec<String> = spec.fuzzy.iter().map(|c| format!("similarity({c}, $2)")).collect();
            (
                String::new(),
                format!("({})", matches.join(" OR ")),
                format!("greatest({})::float8", scores.join(", ")),
            )
        }
        Mode::Fuzzy => {
            // Whole-string similarity (threshold 0.3) for short values, word
            // similarity (0.6) for a query that matches part of a long one.
            let matches: Vec<String> = spec
                .fuzzy
                .iter()
                .map(|c| format!("{c} % $2"))
                .chain(spec.fuzzy.iter().map(|c| format!("$2 <% {c}")))
                .collect();
            // Per column, the mean of both: a query that is a word of a
            // longer value ranks below a value it matches whole.
            let scores: Vec<String> = spec
                .fuzzy
                .iter()
                .map(|c| format!("(similarity({c}, $2) + word_similarity($2, {c})) / 2"))
                .collect();
            (
                String::new(),
                format!("({})", matches.join(" OR ")),
                format!("greatest({})::float8", scores.join(", ")),
            )
        }
    })
}

/// Up to `limit + 1` hits, best first.
pub async fn search(
    tx: &Tx,
    tenant: Uuid,
    res: &'static Resource,
    q: &SearchQuery<'_>,
) -> Result<Vec<Hit>, Error> {
    let spec = res.search.ok_or_else(|| Error::Internal(format!("{} declares no search", res.name)))?;
    // The query goes through the same normalization as the fuzzy columns
    // (one short statement: the match below then compares plain values).
    let text = match (spec.normalize, q.mode) {
        (Some(f), Mode::Fuzzy) => tx
            .query_one(&format!("SELECT {f}($1::text)"), &[&q.text])
            .await?
            .try_get::<_, String>(0)
            .map_err(super::db_error)?,
        _ => q.text.to_owned(),
    };
    if let (Some(t), Mode::Fuzzy) = (spec.threshold, q.mode) {
        // For this transaction only.
        tx.query(include_str!("sql/trigram_threshold.sql").trim_ascii_end(), &[&t.to_string()]).await?;
    }
    let mut params: Vec<Value> = vec![Value::Uuid(tenant), Value::Text(text)];
    let (extra_from, matches, score) = ranking(spec, q.mode)?;
    // Cut from the first SNIPPET_SCAN characters of the declared columns
    // (ts_headline parses all it is given).
    let snippet = match (spec.snippet, q.mode) {
        (cols, Mode::FullText) if !cols.is_empty() => format!(
            ", ts_headline('{}', left(concat_ws(' ', {}), {SNIPPET_SCAN}), q, \
             'MaxFragments=2, MaxWords=20, MinWords=5') AS snippet",
            spec.config,
            cols.join(", ")
        ),
        _ => ", NULL::text AS snippet".to_owned(),
    };
    // Hits carry no large fields (the BASIC view): a page of documents
    // must not ship their content.
    let mut sql = format!(
        "SELECT {}, {score} AS score{snippet} FROM {}{}{extra_from} WHERE tenant_id = $1{} AND {matches}",
        records::select_list(res, View::Basic),
        res.table,
        if extra_from.is_empty() { "" } else { ", " },
        if res.soft_delete { " AND delete_time IS NULL" } else { "" },
    );
    if let Some(checked) = q.filter {
        let cond = filter_sql::emit(checked, &mut params);
        let _ = write!(sql, " AND {cond}");
    }
    if let Some((s, id)) = q.after {
        params.push(Value::Float(s));
        params.push(Value::Uuid(id));
        let _ = write!(sql, " AND ({score}, id) < (${}, ${})", params.len() - 1, params.len());
    }
    params.push(Value::Int(q.limit as i64 + 1));
    let _ = write!(sql, " ORDER BY score DESC, id DESC LIMIT ${}", params.len());
    let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
        params.iter().map(|p| p as &(dyn tokio_postgres::types::ToSql + Sync)).collect();
    let rows = tx.query(&sql, &refs).await?;
    let n = res.fields.len();
    rows.iter()
        .map(|r| {
            Ok(Hit {
                record: records::decode_row(res, r)?,
                score: r.try_get(n + 1).map_err(super::db_error)?,
                snippet: r.try_get(n + 2).map_err(super::db_error)?,
            })
        })
        .collect()
}

/// Whether the operators search and JSON filters use (trigram match,
/// full-text match, jsonb containment and key test) may be index
/// conditions under row-level security (deploy/postgres/superuser.sql marks
/// them LEAKPROOF).
pub async fn search_operators_indexable(tx: &Tx) -> Result<bool, Error> {
    let row = tx.query_opt(include_str!("sql/search_operators_leakproof.sql").trim_ascii_end(), &[]).await?;
    Ok(row.is_some_and(|r| r.get::<_, Option<bool>>(0).unwrap_or(false)))
}
