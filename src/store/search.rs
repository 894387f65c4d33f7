//! Ranked full-text search over jobs (generated `search_vector`, GIN), with
//! a typo-tolerant trigram fallback on title and company name. Pages are
//! keyset by (score, id).

use std::fmt::Write;

use uuid::Uuid;

use super::{Tx, filter_sql, records};
use crate::{
    domain::{filter::Expr, job::JOB, value::Value},
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
    pub filter: Option<&'a Expr>,
    pub after: Option<(f64, Uuid)>,
    pub limit: usize,
    pub mode: Mode,
}

/// Up to `limit + 1` hits, best first, with their scores.
pub async fn search(
    tx: &Tx,
    tenant: Uuid,
    q: &SearchQuery<'_>,
) -> Result<Vec<(records::Record, f64)>, Error> {
    let mut params: Vec<Value> = vec![Value::Uuid(tenant), Value::Text(q.text.to_owned())];
    let (from, matches, score) = match q.mode {
        Mode::FullText => (
            "jobs, websearch_to_tsquery('english', $2) AS q",
            "search_vector @@ q",
            "ts_rank_cd(search_vector, q, 1)::float8",
        ),
        Mode::Fuzzy => (
            "jobs",
            // Whole-string similarity (threshold 0.3) for short titles, word
            // similarity (0.6) for a query that matches part of a long one.
            "(title % $2 OR company_name % $2 OR $2 <% title OR $2 <% company_name)",
            "greatest(similarity(title, $2), similarity(company_name, $2), \
             word_similarity($2, title), word_similarity($2, company_name))::float8",
        ),
    };
    let mut sql = format!(
        "SELECT {}, {score} AS score FROM {from} WHERE tenant_id = $1 AND delete_time IS NULL AND {matches}",
        records::select_list(&JOB)
    );
    if let Some(expr) = q.filter {
        let cond = filter_sql::compile(&JOB, expr, &mut params)
            .map_err(|e| Error::invalid("filter", e.to_string()))?;
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
    rows.iter()
        .map(|r| {
            let rec = records::decode_row(&JOB, r)?;
            let score: f64 = r.try_get(JOB.fields.len() + 1).map_err(super::db_error)?;
            Ok((rec, score))
        })
        .collect()
}
