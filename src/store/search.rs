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
        schema::{Ranking, Resource, SNIPPET_SCAN, SearchSpec},
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
    if (spec.ranking, q.mode) == (Ranking::FieldClass, Mode::FullText) {
        return by_field_class(tx, tenant, res, spec, q).await;
    }
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

/// Field classes of [`Ranking::FieldClass`], best first: the score a hit
/// of the class gets (the weights of the vector's A, B and C fields) and
/// the prefix of the lexemes its fields carry (`None`: anywhere).
const CLASSES: [(f64, Option<&str>); 3] = [(1.0, Some("t:")), (0.4, Some("h:")), (0.2, None)];

/// Rows read newest first before a class is looked up through the index
/// instead: a class holding a page within the newest WINDOW rows is served
/// from them; a rarer one has few rows, which the GIN index finds (each
/// costs a heap fetch, so the index path is for the few).
const WINDOW: i64 = 4000;

/// The class a score of [`CLASSES`] belongs to.
fn class_of(score: f64) -> usize {
    CLASSES.iter().position(|(s, _)| score >= *s - 1e-9).unwrap_or(CLASSES.len() - 1)
}

/// The matching rows among the newest WINDOW below a bound, newest first,
/// with their class; `full`: WINDOW rows were read, older ones may exist.
struct Window {
    below: Option<Uuid>,
    rows: Vec<(Uuid, usize)>,
    full: bool,
}

/// A page's bound (`id < $n`) and the caller's filter, as SQL conditions,
/// and the parameters of both after the tenant and the query text.
struct Conditions {
    bound: String,
    filter: String,
    params: Vec<Value>,
}

fn sql_params(params: &[Value]) -> Vec<&(dyn tokio_postgres::types::ToSql + Sync)> {
    params.iter().map(|p| p as &(dyn tokio_postgres::types::ToSql + Sync)).collect()
}

/// Full-text hits by field class, then newest first. A page reads at most
/// a window of rows per bound, one index lookup per class that is rare in
/// it, and its own rows: never every match.
async fn by_field_class(
    tx: &Tx,
    tenant: Uuid,
    res: &'static Resource,
    spec: &SearchSpec,
    q: &SearchQuery<'_>,
) -> Result<Vec<Hit>, Error> {
    let vector = spec.vector.ok_or_else(|| Error::Internal("full-text search without a tsvector".into()))?;
    let query = format!("websearch_to_tsquery('{}', $2)", spec.config);
    // The query with every lexeme renamed into a class's namespace (its
    // text form quotes each lexeme, doubling an embedded quote).
    let within = |prefix: &str| {
        format!("regexp_replace({query}::text, '''((?:[^'']|'''')*)''', '''{prefix}\\1''', 'g')::tsquery")
    };
    let live = if res.soft_delete { " AND delete_time IS NULL" } else { "" };
    let base = [Value::Uuid(tenant), Value::Text(q.text.to_owned())];
    // The bound and the filter as conditions, their parameters after the
    // base ones.
    let conditions = |below: Option<Uuid>| {
        let mut c = Conditions { bound: String::new(), filter: String::new(), params: base.to_vec() };
        if let Some(id) = below {
            c.params.push(Value::Uuid(id));
            c.bound = format!(" AND id < ${}", c.params.len());
        }
        if let Some(f) = q.filter {
            let cond = filter_sql::emit(f, &mut c.params);
            c.filter = format!(" AND {cond}");
        }
        c
    };
    let want = q.limit + 1;
    let (first, mut below) = match q.after {
        Some((score, id)) => (class_of(score), Some(id)),
        None => (0, None),
    };
    let mut windows: Vec<Window> = Vec::new();
    let mut picked: Vec<(Uuid, usize)> = Vec::with_capacity(want);
    for (k, (_, prefix)) in CLASSES.iter().enumerate().skip(first) {
        let need = want - picked.len();
        if need == 0 {
            break;
        }
        if !windows.iter().any(|w| w.below == below) {
            windows.push(read_window(tx, res, vector, &query, &within, live, conditions(below)).await?);
            windows.last_mut().expect("pushed").below = below;
        }
        let w = windows.iter().find(|w| w.below == below).expect("read above");
        let seen: Vec<Uuid> = w.rows.iter().filter(|(_, c)| *c == k).map(|(id, _)| *id).take(need).collect();
        if seen.len() == need || !w.full {
            picked.extend(seen.into_iter().map(|id| (id, k)));
        } else {
            // Rare among the newest rows: its few rows, through the index.
            let positive = match prefix {
                Some(p) => format!("{vector} @@ ({query} && {})", within(p)),
                None => format!("{vector} @@ {query}"),
            };
            let exclude = match k.checked_sub(1).and_then(|j| CLASSES[j].1) {
                Some(better) => format!(" AND NOT {vector} @@ {}", within(better)),
                None => String::new(),
            };
            let c = conditions(below);
            let sql = format!(
                "WITH c AS MATERIALIZED (SELECT id FROM {} WHERE tenant_id = $1{live}{} AND {positive}{exclude}{}) \
                 SELECT id FROM c ORDER BY id DESC LIMIT {need}",
                res.table, c.bound, c.filter
            );
            for r in tx.query(&sql, &sql_params(&c.params)).await? {
                picked.push((r.try_get(0).map_err(super::db_error)?, k));
            }
        }
        // A lower class starts from the newest row again.
        below = None;
    }
    if picked.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<Uuid> = picked.iter().map(|(id, _)| *id).collect();
    let mut by_id: std::collections::HashMap<Uuid, Record> =
        records::fetch_many(tx, tenant, res, &ids, View::Basic)
            .await?
            .into_iter()
            .map(|rec| (rec.id(), rec))
            .collect();
    Ok(picked
        .into_iter()
        .filter_map(|(id, k)| {
            by_id.remove(&id).map(|record| Hit { record, score: CLASSES[k].0, snippet: None })
        })
        .collect())
}

/// The newest WINDOW rows below the bound (live or not, so the window is a
/// range of the primary key), the matching ones with their class.
async fn read_window(
    tx: &Tx,
    res: &'static Resource,
    vector: &str,
    query: &str,
    within: &(dyn Fn(&str) -> String + Sync),
    live: &str,
    c: Conditions,
) -> Result<Window, Error> {
    let mut class = String::new();
    for (k, (_, prefix)) in CLASSES.iter().enumerate() {
        match prefix {
            Some(p) => {
                let _ = write!(class, " WHEN {vector} @@ {} THEN {k}", within(p));
            }
            None => {
                let _ = write!(class, " ELSE {k}");
            }
        }
    }
    let sql = format!(
        "WITH w AS MATERIALIZED (SELECT id, CASE WHEN {vector} @@ {query}{live}{filter} THEN CASE{class} END END \
         AS class FROM {table} WHERE tenant_id = $1{bound} ORDER BY id DESC LIMIT {WINDOW}) \
         SELECT id, class, NULL::bigint FROM w WHERE class IS NOT NULL \
         UNION ALL SELECT NULL, NULL, count(*) FROM w",
        table = res.table,
        filter = c.filter,
        bound = c.bound,
    );
    let rows = tx.query(&sql, &sql_params(&c.params)).await?;
    let mut w = Window { below: None, rows: Vec::new(), full: false };
    for r in &rows {
        let id: Option<Uuid> = r.try_get(0).map_err(super::db_error)?;
        let class: Option<i32> = r.try_get(1).map_err(super::db_error)?;
        match (id, class) {
            (Some(id), Some(c)) => w.rows.push((id, c as usize)),
            _ => w.full = r.try_get::<_, Option<i64>>(2).map_err(super::db_error)? == Some(WINDOW),
        }
    }
    w.rows.sort_unstable_by_key(|r| std::cmp::Reverse(r.0));
    Ok(w)
}

/// Whether the operators search and JSON filters use (trigram match,
/// full-text match, jsonb containment and key test) may be index
/// conditions under row-level security (deploy/postgres/superuser.sql marks
/// them LEAKPROOF).
pub async fn search_operators_indexable(tx: &Tx) -> Result<bool, Error> {
    let row = tx.query_opt(include_str!("sql/search_operators_leakproof.sql").trim_ascii_end(), &[]).await?;
    Ok(row.is_some_and(|r| r.get::<_, Option<bool>>(0).unwrap_or(false)))
}
