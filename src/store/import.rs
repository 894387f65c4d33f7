//! Bulk upsert of any resource that declares an [`ImportSpec`]: each batch
//! is `COPY`ed (binary) into a temporary staging table and merged into the
//! resource's table by one `INSERT ... ON CONFLICT` statement on its natural
//! key, in one transaction together with the run's counters (`ingest_runs`).
//! A batch is applied whole or not at all; a batch that fails for a
//! transient reason is retried, otherwise its rows are reported as failed.

use std::{
    collections::HashMap,
    fmt::Write,
    sync::{LazyLock, RwLock},
    time::Duration,
};

use serde_json::json;
use tokio_postgres::types::Type;
use uuid::Uuid;

use super::{Scope, Store, Tx, audit, records::sql_type};
use crate::{
    domain::{
        audit::Action,
        ingest::{INGEST_RUN, MAX_REPORTED_ERRORS},
        schema::{Field, Resource},
        value::Value,
    },
    error::Error,
};

/// One valid row and its position in the stream.
pub struct Row {
    pub index: i64,
    /// Values in field-table order.
    pub values: Vec<Value>,
}

/// A rejected row.
pub struct Rejected {
    pub index: i64,
    pub reason: String,
    /// Its natural key, when it has one (reported with the reason).
    pub key: Option<String>,
}

/// What the reader hands the writer: valid rows and the rows it rejected.
#[derive(Default)]
pub struct Batch {
    pub rows: Vec<Row>,
    pub rejected: Vec<Rejected>,
}

/// Running totals of an ingest run.
#[derive(Clone, Debug)]
pub struct Run {
    pub id: Uuid,
    /// The imported resource (its natural key names the errors' key).
    pub res: &'static Resource,
    pub received: i64,
    pub inserted: i64,
    /// Matched a live row by the natural key and rewrote it.
    pub updated: i64,
    /// Matched a live row identical to it: nothing written.
    pub unchanged: i64,
    pub failed: i64,
    pub errors: Vec<serde_json::Value>,
}

impl Run {
    /// A run with nothing counted yet.
    fn new(id: Uuid, res: &'static Resource) -> Run {
        Run { id, res, received: 0, inserted: 0, updated: 0, unchanged: 0, failed: 0, errors: Vec::new() }
    }

    /// The same run with nothing counted: what one batch adds.
    pub fn empty(&self) -> Run {
        Run::new(self.id, self.res)
    }

    /// Adds what a committed batch counted.
    pub fn absorb(&mut self, delta: Run) {
        self.received += delta.received;
        self.inserted += delta.inserted;
        self.updated += delta.updated;
        self.unchanged += delta.unchanged;
        self.failed += delta.failed;
        // Batches commit out of stream order: keep the first errors by
        // stream position.
        self.errors.extend(delta.errors);
        self.errors.sort_by_key(|e| e["index"].as_i64());
        self.errors.truncate(MAX_REPORTED_ERRORS);
    }

    fn reject(&mut self, r: &Rejected) {
        self.failed += 1;
        if self.errors.len() < MAX_REPORTED_ERRORS {
            let key = self.res.import.map_or("key", |i| i.key);
            self.errors.push(json!({"index": r.index, "reason": r.reason, key: r.key}));
        }
    }
}

/// Columns the import writes, the staging table and the merge statement,
/// built once from the field table.
struct Plan {
    columns: Vec<&'static Field>,
    /// Index of the natural key in the field table.
    key_index: usize,
    /// For each column, its index in the field table (computed once, not per row).
    field_index: Vec<usize>,
    types: Vec<Type>,
    create_staging: String,
    copy: String,
    /// Deletes the staged rows identical to the live row they match (their
    /// count): they are not rewritten, so the insert below never computes
    /// their generated columns (the search vector) nor touches an index.
    unchanged: String,
    merge: String,
}

fn build_plan(res: &'static Resource) -> Plan {
    let spec = res.import.expect("import plans exist for resources that declare an import");
    let key = res.fields[res.index(spec.key)].column;
    let columns: Vec<&'static Field> = res
        .fields
        .iter()
        .filter(|f| !matches!(f.name, "create_time" | "update_time" | "delete_time"))
        .collect();
    let staging = format!("bi_import_{}", res.table);
    let mut create = format!("CREATE TEMP TABLE IF NOT EXISTS {staging} (");
    for (i, f) in columns.iter().enumerate() {
        let _ = write!(create, "{}{} {}", if i > 0 { ", " } else { "" }, f.column, sql_type(f.kind).1);
    }
    create.push_str(") ON COMMIT DELETE ROWS");
    let names: Vec<&str> = columns.iter().map(|f| f.column).collect();
    let list = names.join(", ");
    let updated: Vec<&str> = columns
        .iter()
        .filter(|f| f.name != "id" && !spec.keep_on_update.contains(&f.name))
        .map(|f| f.column)
        .collect();
    // An import never clears a reference (a scraper sends company_name,
    // not the company_id a link or a merge set): an empty one keeps it.
    let reference = |c: &str| res.parents.iter().any(|p| res.fields[res.index(p.field)].column == c);
    let incoming = |c: &str| {
        if reference(c) { format!("COALESCE(EXCLUDED.{c}, t.{c})") } else { format!("EXCLUDED.{c}") }
    };
    let set: Vec<String> = updated.iter().map(|c| format!("{c} = {}", incoming(c))).collect();
    let old: Vec<String> = updated.iter().map(|c| format!("t.{c}")).collect();
    let new: Vec<String> = updated.iter().map(|c| incoming(c)).collect();
    let staged: Vec<String> = updated
        .iter()
        .map(|c| if reference(c) { format!("COALESCE(s.{c}, t.{c})") } else { format!("s.{c}") })
        .collect();
    // One probe of the key index per staged row, whatever the planner
    // believes: the LATERAL subquery can only run per staged row. (As a
    // join, with the statistics of a table growing under a large import a
    // tenant of 200,000 rows was estimated at 11, and the plan read every
    // live row of the tenant per batch: 0.4 s and growing.)
    let unchanged = format!(
        "WITH u AS (DELETE FROM {staging} d WHERE d.ctid = ANY (ARRAY(\
         SELECT s.ctid FROM {staging} s CROSS JOIN LATERAL (SELECT 1 FROM {table} t \
         WHERE t.tenant_id = $1 AND t.{key} = s.{key} AND t.delete_time IS NULL \
         AND ({old}) IS NOT DISTINCT FROM ({staged}) LIMIT 1) m)) RETURNING 1) \
         SELECT count(*) FROM u",
        table = res.table,
        old = old.join(", "),
        staged = staged.join(", "),
    );
    // The WHERE of DO UPDATE still skips a row that became identical after
    // `unchanged` ran (a concurrent writer): the merge's RETURNING counts
    // only what it wrote.
    let merge = format!(
        "WITH m AS (INSERT INTO {table} AS t (tenant_id, {list}) \
         SELECT $1, {list} FROM {staging} ORDER BY {key} \
         ON CONFLICT (tenant_id, {key}) WHERE delete_time IS NULL AND {key} IS NOT NULL \
         DO UPDATE SET {set}, update_time = now(), revision = t.revision + 1 \
         WHERE ({old}) IS DISTINCT FROM ({new}) \
         RETURNING (xmax = 0) AS inserted) \
         SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) FROM m",
        table = res.table,
        set = set.join(", "),
        old = old.join(", "),
        new = new.join(", "),
    );
    Plan {
        key_index: res.index(spec.key),
        field_index: columns.iter().map(|f| res.index_of(f.name).expect("column is a field")).collect(),
        types: columns.iter().map(|f| sql_type(f.kind).0).collect(),
        copy: format!("COPY {staging} ({list}) FROM STDIN (FORMAT binary)"),
        create_staging: create,
        unchanged,
        merge,
        columns,
    }
}

/// The plan of a resource, built once.
fn plan(res: &'static Resource) -> &'static Plan {
    static PLANS: LazyLock<RwLock<HashMap<usize, &'static Plan>>> = LazyLock::new(Default::default);
    if let Some(p) = PLANS.read().expect("plan lock").get(&super::records::key(res)) {
        return p;
    }
    let built: &'static Plan = Box::leak(Box::new(build_plan(res)));
    PLANS.write().expect("plan lock").insert(super::records::key(res), built);
    built
}

/// The columns an import of `res` writes and their COPY types, for tools
/// that COPY the same rows directly (the ingest benchmark).
pub fn copy_columns(res: &'static Resource) -> (Vec<&'static str>, &'static [Type]) {
    let p = plan(res);
    (p.columns.iter().map(|f| f.column).collect(), &p.types)
}

/// Records the start of a run (committed at once, so a cut-off run is
/// still visible).
pub async fn start(
    store: &Store,
    scope: &Scope,
    res: &'static Resource,
    source_site: Option<&str>,
) -> Result<Run, Error> {
    let id = Uuid::now_v7();
    let tx = store.begin(scope).await?;
    tx.query(include_str!("sql/ingest_run_start.sql").trim_ascii_end(), &[&scope.tenant, &id, &source_site])
        .await?;
    tx.commit().await?;
    Ok(Run::new(id, res))
}

/// Adds a batch's counts to the run's row (increments: batches of one run
/// commit concurrently); the reported errors stay the first
/// MAX_REPORTED_ERRORS by stream position.
async fn add_counters(tx: &Tx, scope: &Scope, delta: &Run) -> Result<(), Error> {
    tx.query(
        include_str!("sql/ingest_run_add.sql").trim_ascii_end(),
        &[
            &scope.tenant,
            &delta.id,
            &delta.received,
            &delta.inserted,
            &delta.updated,
            &delta.unchanged,
            &delta.failed,
            &json!(delta.errors),
            &(MAX_REPORTED_ERRORS as i64),
        ],
    )
    .await?;
    Ok(())
}

/// The natural keys of a batch's rows: batches with none in common may be
/// applied at the same time (the last row of a key must win).
pub fn batch_keys(res: &'static Resource, batch: &Batch) -> std::collections::HashSet<String> {
    let key_index = plan(res).key_index;
    batch.rows.iter().filter_map(|r| key_of(&r.values, key_index).map(str::to_owned)).collect()
}

fn key_of(values: &[Value], key_index: usize) -> Option<&str> {
    match &values[key_index] {
        Value::Text(s) => Some(s),
        _ => None,
    }
}

/// Whether a run's next batch looks for its unchanged rows before the
/// merge (shared by the batches of one run).
///
/// That probe (one key-index lookup per staged row) is what makes a
/// re-import cheap: an identical row is dropped before the merge computes
/// its search vector. For rows that are all new it is pure cost (~5 % of a
/// new row). The merge alone counts and skips identical rows as well (its
/// `DO UPDATE ... WHERE` writes nothing for them), so skipping the probe
/// changes no result, only the cost: a run probes its first batch, and the
/// next one only when the last batch to commit met existing rows.
pub struct Probe(std::sync::atomic::AtomicBool);

impl Default for Probe {
    fn default() -> Self {
        Probe(std::sync::atomic::AtomicBool::new(true))
    }
}

/// Applies one batch of `run.res` and returns what it counted (once it
/// committed, its counts added to the run's row).
pub async fn apply(
    store: &Store,
    scope: &Scope,
    run: &Run,
    mut batch: Batch,
    probe: &Probe,
) -> Result<Run, Error> {
    use std::sync::atomic::Ordering;
    let plan = plan(run.res);
    reject_missing_parents(store, scope, run.res, &mut batch).await?;
    let key_index = plan.key_index;
    // Within a batch the last row of a key wins; the ones it supersedes
    // count as updates (as if the rows had been applied one by one).
    let mut last: HashMap<&str, usize> = HashMap::with_capacity(batch.rows.len());
    for (i, r) in batch.rows.iter().enumerate() {
        if let Some(k) = key_of(&r.values, key_index) {
            last.insert(k, i);
        }
    }
    // Kept for reporting if the whole batch is rejected.
    let all: Vec<(i64, Option<String>)> =
        batch.rows.iter().map(|r| (r.index, key_of(&r.values, key_index).map(str::to_owned))).collect();
    let keep: Vec<bool> = batch
        .rows
        .iter()
        .enumerate()
        .map(|(i, r)| key_of(&r.values, key_index).is_none_or(|k| last[k] == i))
        .collect();
    drop(last);
    let received = (batch.rows.len() + batch.rejected.len()) as i64;
    // The kept rows' values move into COPY order: no clone per value.
    let rows: Vec<Vec<Value>> = batch
        .rows
        .into_iter()
        .zip(&keep)
        .filter(|(_, k)| **k)
        .map(|(mut r, _)| {
            plan.field_index
                .iter()
                // Field 0 is `id` in every field table (as `Record::id` assumes).
                .map(|&i| if i == 0 { Value::Uuid(Uuid::now_v7()) } else { std::mem::take(&mut r.values[i]) })
                .collect()
        })
        .collect();
    let kept = rows.len();
    let superseded = all.len() as i64 - kept as i64;
    let row_refs: Vec<&[Value]> = rows.iter().map(Vec::as_slice).collect();

    let mut next = run.empty();
    next.received += received;
    for r in &batch.rejected {
        next.reject(r);
    }
    let mut attempt = 0;
    loop {
        attempt += 1;
        let result = async {
            let tx = store.begin(scope).await?;
            let (mut inserted, mut updated, mut unchanged) = (0, 0, 0);
            if !row_refs.is_empty() {
                tx.query(&plan.create_staging, &[]).await?;
                tx.copy_in(&plan.copy, &plan.types, &row_refs).await?;
                if probe.0.load(Ordering::Relaxed) {
                    unchanged = tx.query_one(&plan.unchanged, &[&scope.tenant]).await?.get::<_, i64>(0);
                }
                let merged = tx.query_one(&plan.merge, &[&scope.tenant]).await?;
                (inserted, updated) = (merged.get::<_, i64>(0), merged.get::<_, i64>(1));
                // Matched rows the merge found identical (without the probe,
                // or changed back meanwhile).
                unchanged += kept as i64 - unchanged - inserted - updated;
                probe.0.store(inserted < kept as i64, Ordering::Relaxed);
            }
            let mut after = next.clone();
            after.inserted += inserted;
            // A row superseded by a later one of the same key in the batch
            // counts as an update (as if the rows had been applied in turn).
            after.updated += updated + superseded;
            after.unchanged += unchanged;
            add_counters(&tx, scope, &after).await?;
            tx.commit().await?;
            Ok::<_, Error>(after)
        }
        .await;
        match result {
            Ok(after) => return Ok(after),
            Err(e @ (Error::Aborted { .. } | Error::Unavailable(_) | Error::DeadlineExceeded))
                if attempt < 3 =>
            {
                tracing::warn!(error = %e, attempt, run = %run.id, "import batch failed; retrying");
                tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
            }
            Err(e @ (Error::Unavailable(_) | Error::DeadlineExceeded)) => return Err(e),
            Err(e) => {
                // Not transient: nothing of the batch was applied; report its rows.
                tracing::warn!(error = %e, run = %run.id, rows = all.len(), "import batch rejected");
                let reason = format!("batch rejected: {e}");
                for (index, key) in all {
                    next.reject(&Rejected { index, reason: reason.clone(), key });
                }
                let tx = store.begin(scope).await?;
                add_counters(&tx, scope, &next).await?;
                tx.commit().await?;
                return Ok(next);
            }
        }
    }
}

/// Moves rows that reference a parent which is not a live row of the
/// tenant (e.g. a job's unknown company_id) to the rejected ones. One
/// statement per declared parent and batch.
async fn reject_missing_parents(
    store: &Store,
    scope: &Scope,
    res: &'static Resource,
    batch: &mut Batch,
) -> Result<(), Error> {
    if res.parents.is_empty() || batch.rows.is_empty() {
        return Ok(());
    }
    // On the primary: a replica may not have the parent a caller just made.
    // Opened only when a row names a parent (scraped rows seldom do).
    let mut tx = None;
    for p in res.parents {
        let i = res.index(p.field);
        let mut ids: Vec<Uuid> = batch
            .rows
            .iter()
            .filter_map(|r| if let Value::Uuid(id) = r.values[i] { Some(id) } else { None })
            .collect();
        if ids.is_empty() {
            continue;
        }
        ids.sort_unstable();
        ids.dedup();
        if tx.is_none() {
            tx = Some(store.begin(scope).await?);
        }
        let tx = tx.as_ref().expect("opened above");
        let live: std::collections::HashSet<Uuid> =
            super::records::live_ids(tx, scope.tenant, p.resource, &ids, false).await?.into_iter().collect();
        let key_index = res.import.map(|spec| res.index(spec.key));
        let (keep, gone): (Vec<Row>, Vec<Row>) = std::mem::take(&mut batch.rows)
            .into_iter()
            .partition(|r| !matches!(r.values[i], Value::Uuid(id) if !live.contains(&id)));
        batch.rows = keep;
        for r in gone {
            let id = match r.values[i] {
                Value::Uuid(id) => id.to_string(),
                _ => String::new(),
            };
            batch.rejected.push(Rejected {
                index: r.index,
                reason: format!("{}: {} '{id}' does not exist", p.field, p.resource.name),
                key: key_index.and_then(|k| key_of(&r.values, k).map(str::to_owned)),
            });
        }
    }
    if let Some(tx) = tx {
        tx.commit().await?;
    }
    Ok(())
}

/// Closes the run: its end time and one IMPORT audit event.
/// `source_site` fills the run's source when the stream did not name one.
pub async fn finish(
    store: &Store,
    scope: &Scope,
    run: &Run,
    source_site: Option<&str>,
) -> Result<super::records::Record, Error> {
    // The counters are the row's already: every batch added its own.
    let tx = store.begin(scope).await?;
    tx.query(
        include_str!("sql/ingest_run_finish.sql").trim_ascii_end(),
        &[&scope.tenant, &run.id, &source_site],
    )
    .await?;
    let rec = super::records::fetch(&tx, scope.tenant, &INGEST_RUN, run.id, false)
        .await?
        .ok_or_else(|| Error::Internal("ingest run vanished".into()))?;
    let event = audit::Event {
        id: Uuid::now_v7(),
        entity: INGEST_RUN.name,
        entity_id: run.id,
        action: Action::Import,
        before: None,
        after: Some(rec.to_json(&INGEST_RUN)),
        origin: None,
    };
    audit::record(&tx, scope, event).await?;
    tx.commit().await?;
    Ok(rec)
}
