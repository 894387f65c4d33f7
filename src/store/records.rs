//! Generic record operations, driven by a resource's field table: insert,
//! fetch, masked update, soft delete, keyset-paginated list. Column names come
//! only from the static field table; every value is a bound parameter.

use std::{
    collections::HashMap,
    fmt::Write,
    sync::{LazyLock, RwLock},
};

use tokio_postgres::types::Type;
use uuid::Uuid;

use super::{Scope, Store, Tx, db_error, filter_sql, value_sql};
use crate::{
    domain::{
        filter_check::Checked,
        order::OrderKey,
        schema::{Field, FieldKind, Resource, Sequence, Subset},
        value::Value,
    },
    error::Error,
};

pub use crate::domain::record::Record;

/// Which columns a read returns: FULL reads every field, BASIC leaves the
/// large ones (`Field::large`) in the database (they decode as NULL).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum View {
    Basic,
    #[default]
    Full,
}

/// SQL text fixed per resource, built once.
struct ResourceSql {
    select: String,
    /// The BASIC view's select list: large columns as typed NULLs, so rows
    /// decode by position like FULL ones.
    select_basic: String,
    insert: String,
    /// Batch insert: the staging table, its COPY, the INSERT ... SELECT and
    /// the COPY types (id, then the writable fields).
    stage: String,
    stage_copy: String,
    insert_staged: String,
    stage_types: Vec<Type>,
    /// Batch insert of a few rows: one `INSERT ... SELECT FROM unnest` of a
    /// typed array per column (text arrays travel as `jsonb`, since arrays
    /// of arrays must be rectangular).
    insert_unnest: String,
    fetch: String,
    fetch_basic: String,
    fetch_for_update: String,
    fetch_many: String,
    fetch_many_basic: String,
}

impl ResourceSql {
    fn select(&self, view: View) -> &str {
        if view == View::Basic { &self.select_basic } else { &self.select }
    }
}

fn is_system(f: &Field) -> bool {
    f.is_system()
}

/// A field kind's binary COPY type and SQL type name.
pub(super) fn sql_type(kind: FieldKind) -> (Type, &'static str) {
    match kind {
        FieldKind::Uuid => (Type::UUID, "uuid"),
        FieldKind::Text | FieldKind::Enum(_) => (Type::TEXT, "text"),
        FieldKind::Int => (Type::INT8, "bigint"),
        FieldKind::Float => (Type::FLOAT8, "double precision"),
        FieldKind::Bool => (Type::BOOL, "boolean"),
        FieldKind::Timestamp => (Type::TIMESTAMPTZ, "timestamptz"),
        FieldKind::TextArray => (Type::TEXT_ARRAY, "text[]"),
        FieldKind::Json => (Type::JSONB, "jsonb"),
    }
}

fn sql_type_name(kind: FieldKind) -> &'static str {
    sql_type(kind).1
}

/// Caches are keyed by the declaration itself (two declarations of one
/// table may differ, e.g. in their large fields).
pub(super) fn key(res: &'static Resource) -> usize {
    std::ptr::from_ref(res) as usize
}

fn sql_for(res: &'static Resource) -> &'static ResourceSql {
    static CACHE: LazyLock<RwLock<HashMap<usize, &'static ResourceSql>>> = LazyLock::new(Default::default);
    if let Some(s) = CACHE.read().expect("sql cache lock").get(&key(res)) {
        return s;
    }
    let cols: Vec<&str> = res.fields.iter().map(|f| f.column).collect();
    let select = format!("{}, revision", cols.join(", "));
    let basic: Vec<String> = res
        .fields
        .iter()
        .map(|f| {
            if f.large {
                format!("NULL::{} AS {}", sql_type_name(f.kind), f.column)
            } else {
                f.column.to_owned()
            }
        })
        .collect();
    let select_basic = format!("{}, revision", basic.join(", "));
    let writable: Vec<&Field> = res.fields.iter().filter(|f| !is_system(f)).collect();
    let mut insert = format!("INSERT INTO {} (tenant_id, id", res.table);
    for f in &writable {
        let _ = write!(insert, ", {}", f.column);
    }
    insert.push_str(") VALUES ($1, $2");
    for i in 0..writable.len() {
        let _ = write!(insert, ", ${}", i + 3);
    }
    let _ = write!(insert, ") RETURNING {select}");
    let staging = format!("bi_batch_{}", res.table);
    let mut stage = format!("CREATE TEMP TABLE IF NOT EXISTS {staging} (id uuid");
    for f in &writable {
        let _ = write!(stage, ", {} {}", f.column, sql_type_name(f.kind));
    }
    stage.push_str(") ON COMMIT DELETE ROWS");
    let staged: Vec<&str> = std::iter::once("id").chain(writable.iter().map(|f| f.column)).collect();
    let staged = staged.join(", ");
    let stage_copy = format!("COPY {staging} ({staged}) FROM STDIN (FORMAT binary)");
    let insert_staged = format!(
        "INSERT INTO {} (tenant_id, {staged}) SELECT $1, {staged} FROM {staging} RETURNING {select}",
        res.table
    );
    let stage_types =
        std::iter::once(Type::UUID).chain(writable.iter().map(|f| sql_type(f.kind).0)).collect();
    let mut arrays = String::from("$2::uuid[]");
    let mut exprs = String::from("u.id");
    for (i, f) in writable.iter().enumerate() {
        let col = f.column;
        if f.kind == FieldKind::TextArray {
            let _ = write!(arrays, ", ${}::jsonb[]", i + 3);
            let _ = write!(
                exprs,
                ", CASE WHEN u.{col} IS NULL THEN NULL ELSE ARRAY(SELECT jsonb_array_elements_text(u.{col})) END"
            );
        } else {
            let _ = write!(arrays, ", ${}::{}[]", i + 3, sql_type_name(f.kind));
            let _ = write!(exprs, ", u.{col}");
        }
    }
    let insert_unnest = format!(
        "INSERT INTO {} (tenant_id, {staged}) SELECT $1, {exprs} FROM unnest({arrays}) AS u ({staged}) \
         RETURNING {select}",
        res.table
    );
    let by_id = |sel: &str| format!("SELECT {sel} FROM {} WHERE tenant_id = $1 AND id = $2", res.table);
    let by_ids = |sel: &str| format!("SELECT {sel} FROM {} WHERE tenant_id = $1 AND id = ANY($2)", res.table);
    let (fetch, fetch_basic) = (by_id(&select), by_id(&select_basic));
    let fetch_for_update = format!("{fetch} FOR UPDATE");
    let (fetch_many, fetch_many_basic) = (by_ids(&select), by_ids(&select_basic));
    let built: &'static ResourceSql = Box::leak(Box::new(ResourceSql {
        select,
        select_basic,
        insert,
        stage,
        stage_copy,
        insert_staged,
        stage_types,
        insert_unnest,
        fetch,
        fetch_basic,
        fetch_for_update,
        fetch_many,
        fetch_many_basic,
    }));
    CACHE.write().expect("sql cache lock").insert(key(res), built);
    built
}

pub(super) fn decode_row(res: &Resource, row: &tokio_postgres::Row) -> Result<Record, Error> {
    let values = res
        .fields
        .iter()
        .enumerate()
        .map(|(i, f)| value_sql::decode(row, i, f.kind))
        .collect::<Result<Vec<_>, _>>()
        .map_err(db_error)?;
    let revision = row.try_get(res.fields.len()).map_err(db_error)?;
    Ok(Record { values, revision })
}

fn decode_rows(res: &Resource, rows: &[tokio_postgres::Row]) -> Result<Vec<Record>, Error> {
    rows.iter().map(|r| decode_row(res, r)).collect()
}

/// The select list of a resource (its fields, then `revision`).
pub(super) fn select_list(res: &'static Resource, view: View) -> &'static str {
    sql_for(res).select(view)
}

/// Inserts a new row with `id`; `values` is in field-table order (system
/// fields ignored).
pub async fn insert(
    tx: &Tx,
    tenant: Uuid,
    res: &'static Resource,
    id: Uuid,
    values: &[Value],
) -> Result<Record, Error> {
    let sql = sql_for(res);
    let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![&tenant, &id];
    for (f, v) in res.fields.iter().zip(values) {
        if !is_system(f) {
            params.push(v);
        }
    }
    let row = tx.query_one(&sql.insert, &params).await?;
    decode_row(res, &row)
}

/// Rows up to which [`insert_many`] sends one statement of arrays rather
/// than a COPY into the staging table (three round trips, a table written
/// and truncated): what a combined unit of creations holds.
pub const UNNEST_MAX: usize = 64;

/// Inserts many rows in one statement (up to [`UNNEST_MAX`], one INSERT ...
/// SELECT FROM unnest; more, a binary COPY into a staging table, then one
/// INSERT ... SELECT): `ids[i]` for `rows[i]`. Returns the records in the
/// order of `rows`.
pub async fn insert_many(
    tx: &Tx,
    tenant: Uuid,
    res: &'static Resource,
    ids: &[Uuid],
    rows: &[Vec<Value>],
) -> Result<Vec<Record>, Error> {
    let sql = sql_for(res);
    let inserted = if rows.len() <= UNNEST_MAX {
        // One array per column of the rows' own values; text arrays go as
        // jsonb (arrays of arrays must be rectangular).
        let writable: Vec<(usize, &Field)> =
            res.fields.iter().enumerate().filter(|(_, f)| !is_system(f)).collect();
        let as_json: Vec<Vec<Value>> = writable
            .iter()
            .filter(|(_, f)| f.kind == FieldKind::TextArray)
            .map(|&(i, _)| {
                rows.iter()
                    .map(|r| match &r[i] {
                        Value::TextArray(v) => Value::Json(serde_json::json!(v)),
                        other => other.clone(),
                    })
                    .collect()
            })
            .collect();
        let mut json_columns = as_json.iter();
        let columns: Vec<Vec<&Value>> = writable
            .iter()
            .map(|&(i, f)| match f.kind {
                FieldKind::TextArray => json_columns.next().expect("one per text array").iter().collect(),
                _ => rows.iter().map(|r| &r[i]).collect(),
            })
            .collect();
        let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![&tenant, &ids];
        params.extend(columns.iter().map(|c| c as &(dyn tokio_postgres::types::ToSql + Sync)));
        tx.query(&sql.insert_unnest, &params).await?
    } else {
        let staged: Vec<Vec<Value>> = ids
            .iter()
            .zip(rows)
            .map(|(id, values)| {
                std::iter::once(Value::Uuid(*id))
                    .chain(
                        res.fields.iter().zip(values).filter(|(f, _)| !is_system(f)).map(|(_, v)| v.clone()),
                    )
                    .collect()
            })
            .collect();
        let refs: Vec<&[Value]> = staged.iter().map(Vec::as_slice).collect();
        tx.query(&sql.stage, &[]).await?;
        tx.copy_in(&sql.stage_copy, &sql.stage_types, &refs).await?;
        tx.query(&sql.insert_staged, &[&tenant]).await?
    };
    let mut by_id: HashMap<Uuid, Record> = HashMap::with_capacity(inserted.len());
    for row in &inserted {
        let rec = decode_row(res, row)?;
        by_id.insert(rec.id(), rec);
    }
    ids.iter()
        .map(|id| {
            by_id.remove(id).ok_or_else(|| Error::Internal(format!("batch insert returned no row {id}")))
        })
        .collect()
}

/// Fetches one row (deleted or not); `for_update` locks it.
pub async fn fetch(
    tx: &Tx,
    tenant: Uuid,
    res: &'static Resource,
    id: Uuid,
    for_update: bool,
) -> Result<Option<Record>, Error> {
    let sql = sql_for(res);
    let stmt = if for_update { &sql.fetch_for_update } else { &sql.fetch };
    tx.query_opt(stmt, &[&tenant, &id]).await?.map(|r| decode_row(res, &r)).transpose()
}

/// Fetches one row (deleted or not) in a read-only transaction of its own,
/// in one round trip.
pub async fn read_one(
    store: &Store,
    scope: &Scope,
    res: &'static Resource,
    id: Uuid,
    view: View,
) -> Result<Option<Record>, Error> {
    let sql = sql_for(res);
    let stmt = if view == View::Basic { &sql.fetch_basic } else { &sql.fetch };
    let rows = store.read(scope, &[(stmt, &[&scope.tenant, &id])]).await?;
    rows.into_iter().flatten().next().map(|r| decode_row(res, &r)).transpose()
}

/// Fetches rows by id, in no particular order, in a read-only transaction
/// of their own (one round trip).
pub async fn read_many(
    store: &Store,
    scope: &Scope,
    res: &'static Resource,
    ids: &[Uuid],
    view: View,
) -> Result<Vec<Record>, Error> {
    let sql = sql_for(res);
    let stmt = if view == View::Basic { &sql.fetch_many_basic } else { &sql.fetch_many };
    let rows = store.read(scope, &[(stmt, &[&scope.tenant, &ids])]).await?;
    decode_rows(res, &rows.into_iter().flatten().collect::<Vec<_>>())
}

/// Fetches rows by id, in no particular order.
pub async fn fetch_many(
    tx: &Tx,
    tenant: Uuid,
    res: &'static Resource,
    ids: &[Uuid],
    view: View,
) -> Result<Vec<Record>, Error> {
    let sql = sql_for(res);
    let stmt = if view == View::Basic { &sql.fetch_many_basic } else { &sql.fetch_many };
    let rows = tx.query(stmt, &[&tenant, &ids]).await?;
    decode_rows(res, &rows)
}

/// Which of `ids` name live rows of `res` in the tenant; `lock` locks them
/// against a concurrent delete until the transaction ends.
pub async fn live_ids(
    tx: &Tx,
    tenant: Uuid,
    res: &'static Resource,
    ids: &[Uuid],
    lock: bool,
) -> Result<Vec<Uuid>, Error> {
    let sql = format!(
        "SELECT id FROM {} WHERE tenant_id = $1 AND id = ANY($2){}{}",
        res.table,
        if res.soft_delete { " AND delete_time IS NULL" } else { "" },
        // Against a concurrent delete, as `exists` locks.
        if lock { " FOR KEY SHARE" } else { "" }
    );
    let rows = tx.query(&sql, &[&tenant, &ids]).await?;
    rows.iter().map(|r| r.try_get(0).map_err(db_error)).collect()
}

/// Whether `id` names a row of `res` in the tenant (a live one, for
/// soft-deletable resources). Locks it against concurrent deletion.
pub async fn exists(
    tx: &Tx,
    tenant: Uuid,
    res: &'static Resource,
    id: Uuid,
    agree: Option<(&str, &Value)>,
) -> Result<bool, Error> {
    let live = if res.soft_delete { " AND delete_time IS NULL" } else { "" };
    let rows = match agree {
        None => {
            let sql =
                format!("SELECT 1 FROM {} WHERE tenant_id = $1 AND id = $2{live} FOR KEY SHARE", res.table);
            tx.query_opt(&sql, &[&tenant, &id]).await?
        }
        Some((field, value)) => {
            let col = res.fields[res.index(field)].column;
            let sql = format!(
                "SELECT 1 FROM {} WHERE tenant_id = $1 AND id = $2 AND {col} = $3{live} FOR KEY SHARE",
                res.table
            );
            tx.query_opt(&sql, &[&tenant, &id, value]).await?
        }
    };
    Ok(rows.is_some())
}

/// How many live rows of `child` reference `id` through `column`.
pub async fn count_children(
    tx: &Tx,
    tenant: Uuid,
    child: &'static Resource,
    column: &str,
    id: Uuid,
) -> Result<i64, Error> {
    let sql = format!(
        "SELECT count(*) FROM {} WHERE tenant_id = $1 AND {column} = $2{}",
        child.table,
        if child.soft_delete { " AND delete_time IS NULL" } else { "" }
    );
    count_of(&tx.query(&sql, &[&tenant, &id]).await?)
}

/// Points every row of `child` that references `from` (through `column`)
/// at `to`. Returns each row's snapshot before and its record after.
pub async fn reassign(
    tx: &Tx,
    tenant: Uuid,
    child: &'static Resource,
    column: &str,
    from: Uuid,
    to: Uuid,
) -> Result<Vec<(serde_json::Value, Record)>, Error> {
    let sql = format!(
        "UPDATE {} SET {column} = $3, update_time = now(), revision = revision + 1 \
         WHERE tenant_id = $1 AND {column} = $2 RETURNING {}",
        child.table,
        sql_for(child).select
    );
    let rows = tx.query(&sql, &[&tenant, &from, &to]).await?;
    with_before(child, &rows, column, &Value::Uuid(from))
}

/// Each updated row's record and its audit snapshot before the statement,
/// which differed from it only in `field` (then `prior`).
fn with_before(
    child: &'static Resource,
    rows: &[tokio_postgres::Row],
    field: &str,
    prior: &Value,
) -> Result<Vec<(serde_json::Value, Record)>, Error> {
    let name = child.fields[child.index(field)].name;
    rows.iter()
        .map(|r| {
            let after = decode_row(child, r)?;
            let mut before = after.to_json(child);
            before[name] = prior.to_json();
            Ok((before, after))
        })
        .collect()
}

/// The next number of a sequence (`Sequence`) among the rows of `res`
/// whose parent column holds `parent`: appends to one parent are
/// serialized by a transaction-scoped advisory lock (one round trip: the
/// lookup runs once the lock is held and sees the holder's commit).
pub async fn next_in_sequence(
    tx: &Tx,
    tenant: Uuid,
    res: &'static Resource,
    seq: &Sequence,
    parent: &Value,
) -> Result<i64, Error> {
    let parent_col = res.fields[res.index(seq.parent)].column;
    let col = res.fields[res.index(seq.field)].column;
    let key = format!("{}/{}/{}", res.table, tenant, parent.to_json());
    let next = format!(
        "SELECT COALESCE(max({col}), 0) + 1 FROM {} WHERE tenant_id = $1 AND {parent_col} = $2",
        res.table
    );
    let rows =
        tx.query_pipelined(&[(super::ADVISORY_XACT_LOCK, &[&key]), (&next, &[&tenant, parent])]).await?;
    rows.last()
        .and_then(|r| r.first())
        .ok_or_else(|| Error::Internal("sequence returned no row".into()))?
        .try_get::<_, i64>(0)
        .map_err(db_error)
}

/// Soft-deletes (at `stamp`) the live rows of `child` that reference `id`,
/// or undeletes those deleted at `stamp`. Returns each row's snapshot before
/// and its record after.
pub async fn cascade_deleted(
    tx: &Tx,
    tenant: Uuid,
    child: &'static Resource,
    column: &str,
    id: Uuid,
    stamp: &Value,
    deleted: bool,
) -> Result<Vec<(serde_json::Value, Record)>, Error> {
    let (set, cond) = if deleted { ("$3", "IS NULL") } else { ("NULL", "= $3") };
    let sql = format!(
        "UPDATE {} SET delete_time = {set}, update_time = now(), revision = revision + 1 \
         WHERE tenant_id = $1 AND {column} = $2 AND delete_time {cond} RETURNING {}",
        child.table,
        sql_for(child).select
    );
    let rows = tx.query(&sql, &[&tenant, &id, stamp]).await?;
    let prior = if deleted { Value::Null } else { stamp.clone() };
    with_before(child, &rows, "delete_time", &prior)
}

/// Writes the fields at `changed` (indexes into the field table), bumps the
/// revision and update_time.
pub async fn update(
    tx: &Tx,
    tenant: Uuid,
    res: &'static Resource,
    id: Uuid,
    values: &[Value],
    changed: &[usize],
) -> Result<Record, Error> {
    let mut sql = format!("UPDATE {} SET update_time = now(), revision = revision + 1", res.table);
    let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![&tenant, &id];
    for &i in changed {
        let f = &res.fields[i];
        debug_assert!(!is_system(f));
        params.push(&values[i]);
        let _ = write!(sql, ", {} = ${}", f.column, params.len());
    }
    let _ = write!(sql, " WHERE tenant_id = $1 AND id = $2 RETURNING {}", sql_for(res).select);
    let row = tx.query_one(&sql, &params).await?;
    decode_row(res, &row)
}

/// Sets or clears delete_time.
pub async fn set_deleted(
    tx: &Tx,
    tenant: Uuid,
    res: &'static Resource,
    id: Uuid,
    deleted: bool,
) -> Result<Record, Error> {
    let sql = format!(
        "UPDATE {} SET delete_time = {}, update_time = now(), revision = revision + 1 \
         WHERE tenant_id = $1 AND id = $2 RETURNING {}",
        res.table,
        if deleted { "now()" } else { "NULL" },
        sql_for(res).select
    );
    let row = tx.query_one(&sql, &[&tenant, &id]).await?;
    decode_row(res, &row)
}

/// The condition of a declared subset, written as the migration's partial
/// index predicate is, so the planner can use that index: its values come
/// from the static declaration (enum names checked by `Resource::check`),
/// never from a caller.
fn subset_condition(res: &'static Resource, sub: &Subset) -> String {
    let col = res.fields[res.index(sub.field)].column;
    let values: Vec<String> = sub.any_of.iter().map(|v| format!("'{v}'")).collect();
    format!("{col} IN ({})", values.join(", "))
}

/// Locks up to `limit` live rows of a declared subset, oldest first,
/// skipping rows another transaction holds (`FOR UPDATE SKIP LOCKED`): two
/// workers never get the same row. BASIC view (large fields NULL).
pub async fn claim(
    tx: &Tx,
    tenant: Uuid,
    res: &'static Resource,
    sub: &Subset,
    limit: i64,
) -> Result<Vec<Record>, Error> {
    let sql = format!(
        "SELECT {} FROM {} WHERE tenant_id = $1{} AND {} ORDER BY create_time, id LIMIT $2 FOR UPDATE SKIP LOCKED",
        sql_for(res).select(View::Basic),
        res.table,
        if res.soft_delete { " AND delete_time IS NULL" } else { "" },
        subset_condition(res, sub)
    );
    decode_rows(res, &tx.query(&sql, &[&tenant, &limit]).await?)
}

/// A list request after validation.
pub struct ListQuery<'a> {
    pub filter: Option<&'a Checked>,
    /// Caller's order; the id tiebreaker is added here.
    pub order: &'a [OrderKey],
    /// Key values of the last row of the previous page (order keys + id).
    pub after: Option<Vec<Value>>,
    pub limit: usize,
    pub show_deleted: bool,
    pub count: bool,
    /// A parent scope, `column = value` (e.g. the messages of one conversation).
    pub parent: Option<(&'static str, Value)>,
    pub view: View,
    pub subset: Option<&'static Subset>,
}

/// The effective sort keys: the caller's, then `id` in the direction of the
/// last one (unless `id` was already named).
pub fn effective_order(res: &'static Resource, order: &[OrderKey]) -> Vec<(&'static Field, bool)> {
    let mut keys = Vec::with_capacity(order.len() + 1);
    for k in order {
        keys.push((k.field, k.desc));
        if k.field.name == "id" {
            return keys;
        }
    }
    let desc = order.last().is_some_and(|k| k.desc);
    keys.push((res.field("id").expect("every resource has an id"), desc));
    keys
}

/// The statements of one list request: the page and, when asked, the count.
struct ListSql {
    page: String,
    count: Option<String>,
    params: Vec<Value>,
    /// The count uses the first `count_params` parameters.
    count_params: usize,
}

/// `tenant_id = $1` (the tenant is `params[0]`), live rows only unless
/// `show_deleted`; the filter, when given, is appended by the caller.
pub(super) fn tenant_condition(res: &'static Resource, show_deleted: bool) -> String {
    let mut cond = String::from("tenant_id = $1");
    if res.soft_delete && !show_deleted {
        cond.push_str(" AND delete_time IS NULL");
    }
    cond
}

fn list_sql(tenant: Uuid, res: &'static Resource, q: &ListQuery<'_>) -> Result<ListSql, Error> {
    let mut params: Vec<Value> = vec![Value::Uuid(tenant)];
    let mut cond = tenant_condition(res, q.show_deleted);
    if let Some((column, value)) = &q.parent {
        params.push(value.clone());
        let _ = write!(cond, " AND {column} = ${}", params.len());
    }
    if let Some(sub) = q.subset {
        let _ = write!(cond, " AND {}", subset_condition(res, sub));
    }
    if let Some(checked) = q.filter {
        let sql = filter_sql::emit(checked, &mut params);
        let _ = write!(cond, " AND {sql}");
    }
    let count = q.count.then(|| format!("SELECT count(*) FROM {} WHERE {cond}", res.table));
    let count_params = params.len();
    let keys = effective_order(res, q.order);
    if let Some(after) = &q.after {
        if after.len() != keys.len() {
            return Err(Error::invalid("page_token", "page token does not match this request"));
        }
        let pred = keyset_predicate(&keys, after, &mut params);
        let _ = write!(cond, " AND {pred}");
    }
    let order_sql: Vec<String> =
        keys.iter().map(|(f, desc)| format!("{} {}", f.column, if *desc { "DESC" } else { "ASC" })).collect();
    params.push(Value::Int(q.limit as i64 + 1));
    let page = format!(
        "SELECT {} FROM {} WHERE {cond} ORDER BY {} LIMIT ${}",
        sql_for(res).select(q.view),
        res.table,
        order_sql.join(", "),
        params.len()
    );
    Ok(ListSql { page, count, params, count_params })
}

pub(super) fn param_refs(params: &[Value]) -> Vec<&(dyn tokio_postgres::types::ToSql + Sync)> {
    params.iter().map(|p| p as &(dyn tokio_postgres::types::ToSql + Sync)).collect()
}

fn count_of(rows: &[tokio_postgres::Row]) -> Result<i64, Error> {
    rows.first()
        .ok_or_else(|| Error::Internal("count returned no row".into()))?
        .try_get::<_, i64>(0)
        .map_err(db_error)
}

/// One page of rows (up to `limit + 1`, so the caller knows whether more
/// follow) and the exact count when asked.
pub async fn list(
    tx: &Tx,
    tenant: Uuid,
    res: &'static Resource,
    q: &ListQuery<'_>,
) -> Result<(Vec<Record>, Option<i64>), Error> {
    let sql = list_sql(tenant, res, q)?;
    let refs = param_refs(&sql.params);
    let total = match &sql.count {
        Some(count) => Some(count_of(&tx.query(count, &refs[..sql.count_params]).await?)?),
        None => None,
    };
    let rows = tx.query(&sql.page, &refs).await?;
    Ok((decode_rows(res, &rows)?, total))
}

/// [`list`] in a read-only transaction of its own, in one round trip (the
/// count, when asked, travels with the page).
pub async fn read_page(
    store: &Store,
    scope: &Scope,
    res: &'static Resource,
    q: &ListQuery<'_>,
) -> Result<(Vec<Record>, Option<i64>), Error> {
    let sql = list_sql(scope.tenant, res, q)?;
    let refs = param_refs(&sql.params);
    let mut statements: Vec<(&str, &super::Params<'_>)> = Vec::with_capacity(2);
    if let Some(count) = &sql.count {
        statements.push((count, &refs[..sql.count_params]));
    }
    statements.push((&sql.page, &refs));
    let mut results = store.read(scope, &statements).await?;
    let rows = results.pop().unwrap_or_default();
    let total = match results.pop() {
        Some(count) => Some(count_of(&count)?),
        None => None,
    };
    Ok((decode_rows(res, &rows)?, total))
}

/// Rows strictly after `after` in the order `keys` (ASC sorts NULLs last,
/// DESC first: PostgreSQL's defaults, which the indexes follow).
///
/// The predicate must let PostgreSQL start the index scan at the page's
/// position: otherwise page 1,000 reads the 999 pages before it again.
fn keyset_predicate(keys: &[(&Field, bool)], after: &[Value], params: &mut Vec<Value>) -> String {
    let all_same_dir = keys.iter().all(|(_, d)| *d == keys[0].1);
    let no_null_after = after.iter().all(|v| !v.is_null());
    let desc = keys[0].1;
    // A row comparison is exact when no NULL sorts after the position: the
    // position has no NULL, and the keys are either NOT NULL or all DESC
    // (NULLs first, so every NULL row is behind; the comparison yields NULL
    // for them and excludes them).
    if all_same_dir && no_null_after && (desc || keys.iter().all(|(f, _)| !f.nullable)) {
        // Row comparison: one index range scan.
        let cols: Vec<&str> = keys.iter().map(|(f, _)| f.column).collect();
        let mut ph = Vec::with_capacity(after.len());
        for v in after {
            params.push(v.clone());
            ph.push(format!("${}", params.len()));
        }
        let op = if desc { "<" } else { ">" };
        return format!("({}) {op} ({})", cols.join(", "), ph.join(", "));
    }
    let mut placeholders = Vec::with_capacity(after.len());
    for v in after {
        if v.is_null() {
            placeholders.push(String::new());
        } else {
            params.push(v.clone());
            placeholders.push(format!("${}", params.len()));
        }
    }
    let mut ors = Vec::new();
    for i in 0..keys.len() {
        let mut ands: Vec<String> = Vec::new();
        for j in 0..i {
            let col = keys[j].0.column;
            ands.push(if after[j].is_null() {
                format!("{col} IS NULL")
            } else {
                format!("{col} = {}", placeholders[j])
            });
        }
        let (f, desc) = keys[i];
        let col = f.column;
        let gt = match (desc, after[i].is_null()) {
            (false, false) if f.nullable => format!("({col} > {} OR {col} IS NULL)", placeholders[i]),
            (false, false) => format!("{col} > {}", placeholders[i]),
            (false, true) => continue, // nothing sorts after NULL ascending
            (true, false) => format!("{col} < {}", placeholders[i]),
            (true, true) => format!("{col} IS NOT NULL"),
        };
        ands.push(gt);
        ors.push(format!("({})", ands.join(" AND ")));
    }
    if ors.is_empty() {
        return "FALSE".to_owned();
    }
    let any = format!("({})", ors.join(" OR "));
    // The OR form is no index range by itself; a redundant bound on the
    // first key is, where one holds for every row after the position (DESC:
    // NULLs are all behind; ASC: only when the key is NOT NULL).
    let (f0, desc0) = keys[0];
    if !after[0].is_null() && (desc0 || !f0.nullable) {
        let op = if desc0 { "<=" } else { ">=" };
        return format!("{} {op} {} AND {any}", f0.column, placeholders[0]);
    }
    any
}

/// The values of the sort keys of `rec`, for the next page token.
pub fn key_values(res: &'static Resource, keys: &[(&'static Field, bool)], rec: &Record) -> Vec<Value> {
    keys.iter().map(|(f, _)| rec.values[res.index_of(f.name).expect("key is a field")].clone()).collect()
}

/// Kinds of the sort keys, for decoding page tokens.
pub fn key_kinds(keys: &[(&'static Field, bool)]) -> Vec<FieldKind> {
    keys.iter().map(|(f, _)| f.kind).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::job::JOB;

    fn keys(names: &[(&str, bool)]) -> Vec<(&'static Field, bool)> {
        names.iter().map(|(n, d)| (JOB.field(n).expect("field"), *d)).collect()
    }

    #[test]
    fn keyset_predicates_are_index_ranges() {
        let t = Value::Time(chrono::Utc::now());
        let id = Value::Uuid(Uuid::nil());
        let mut p = vec![Value::Null];
        // Nullable key, DESC, position not NULL: a row comparison.
        let sql = keyset_predicate(
            &keys(&[("posting_time", true), ("id", true)]),
            &[t.clone(), id.clone()],
            &mut p,
        );
        assert_eq!(sql, "(posting_time, id) < ($2, $3)");
        // Nullable key, ASC: NULLs follow, so the OR form (no bound).
        let mut p = vec![Value::Null];
        let sql = keyset_predicate(
            &keys(&[("posting_time", false), ("id", false)]),
            &[t.clone(), id.clone()],
            &mut p,
        );
        assert_eq!(sql, "(((posting_time > $2 OR posting_time IS NULL)) OR (posting_time = $2 AND id > $3))");
        // Mixed directions: the OR form with a bound on the first key.
        let mut p = vec![Value::Null];
        let title = Value::Text("x".into());
        let sql = keyset_predicate(
            &keys(&[("salary_max", true), ("title", false), ("id", false)]),
            &[Value::Int(5), title, id.clone()],
            &mut p,
        );
        assert!(sql.starts_with("salary_max <= $2 AND (("), "{sql}");
        // A NULL position: no bound.
        let mut p = vec![Value::Null];
        let sql =
            keyset_predicate(&keys(&[("posting_time", true), ("id", true)]), &[Value::Null, id], &mut p);
        assert_eq!(sql, "((posting_time IS NOT NULL) OR (posting_time IS NULL AND id < $2))");
    }
}
