//! The generic standard methods (AIP-131..135, 154, 155, 158, 160, 164),
//! written once for every resource that implements [`ApiResource`]: a
//! resource supplies its field table, its proto <-> values mapping and its
//! rules; everything else (validation flow, tenancy, etags, masks, soft
//! delete, idempotency, audit, pagination) lives here.

use std::collections::HashMap;

use prost::Message;
use prost_types::FieldMask;
use tracing::Instrument;
use uuid::Uuid;

use super::convert::parse_id;
use crate::{
    domain::{
        filter,
        order::{self, OrderKey},
        record::{self, Fields},
        schema::Resource,
        value::Value,
    },
    error::{Error, FieldViolation},
    store::{
        Scope, Store, Tx,
        audit::{self, Action},
        idempotency, page,
        records::{self, ListQuery, Record},
    },
};

pub const DEFAULT_PAGE_SIZE: usize = 50;
pub const MAX_PAGE_SIZE: usize = 1000;
pub const MAX_BATCH: usize = 1000;

/// What a resource supplies to get the standard methods.
pub trait ApiResource: Message + Default + Clone + Sized + 'static {
    const RES: &'static Resource;
    /// Proto field name of the resource in requests (`job`).
    const FIELD: &'static str;

    /// Values in field-table order (system fields may be anything) and, for
    /// each field, whether the caller set it.
    fn to_values(&self) -> Result<(Vec<Value>, Vec<bool>), Vec<FieldViolation>>;
    fn from_record(rec: &Record) -> Self;
    /// Defaults and rules, on the complete record about to be written.
    fn normalize(fields: &mut Fields<'_>) -> Result<(), Vec<FieldViolation>>;
    fn id(&self) -> &str;
    fn etag(&self) -> &str;

    /// Reference fields that must name a live row of the same tenant:
    /// `(field, parent resource)`. Checked on create and when updated.
    const PARENTS: &'static [(&'static str, &'static Resource)] = &[];
    /// Children soft-deleted with this resource (and restored with it):
    /// `(child resource, its reference column)`.
    const CASCADES: &'static [(&'static Resource, &'static str)] = &[];
}

/// Every parent named by `values` (at the given field indexes, or all when
/// `only` is None) exists and is live in the caller's tenant.
async fn check_parents<R: ApiResource>(
    tx: &Tx,
    scope: &Scope,
    values: &[Value],
    only: Option<&[usize]>,
) -> Result<(), Error> {
    for (field, parent) in R::PARENTS {
        let i = R::RES.index_of(field).expect("parent field is declared");
        if only.is_some_and(|o| !o.contains(&i)) {
            continue;
        }
        if let Value::Uuid(id) = values[i]
            && !records::exists(tx, scope.tenant, parent, id).await?
        {
            return Err(Error::FailedPrecondition {
                reason: "REFERENCE_NOT_FOUND",
                message: format!("{field}: {} '{id}' does not exist", parent.name),
            });
        }
    }
    Ok(())
}

fn prefixed(field: &str, errs: Vec<FieldViolation>) -> Error {
    Error::InvalidArgument(
        errs.into_iter()
            .map(|v| FieldViolation::new(format!("{field}.{}", v.field), v.description))
            .collect(),
    )
}

fn not_found<R: ApiResource>(id: impl ToString) -> Error {
    Error::NotFound { entity: R::RES.name, id: id.to_string() }
}

/// Values of a new resource, validated (violations name the resource's
/// own fields).
pub fn validate_new<R: ApiResource>(msg: &R) -> Result<Vec<Value>, Vec<FieldViolation>> {
    let (mut values, _) = msg.to_values()?;
    normalize::<R>(&mut values)?;
    Ok(values)
}

/// The resource's rules plus the ones every resource shares.
fn normalize<R: ApiResource>(values: &mut Vec<Value>) -> Result<(), Vec<FieldViolation>> {
    let nul = record::no_nul_characters(R::RES, values);
    if !nul.is_empty() {
        return Err(nul);
    }
    R::normalize(&mut Fields::new(R::RES, values))
}

fn new_values<R: ApiResource>(msg: &R) -> Result<Vec<Value>, Error> {
    validate_new(msg).map_err(|e| prefixed(R::FIELD, e))
}

/// Looks up a stored response for `request_id`; `None` means do the work.
async fn replay<M: Message + Default>(
    tx: &Tx,
    scope: &Scope,
    request_id: &str,
    method: &str,
) -> Result<Option<M>, Error> {
    if request_id.is_empty() {
        return Ok(None);
    }
    match idempotency::begin(tx, scope, request_id, method).await? {
        None => Ok(None),
        Some(bytes) => M::decode(bytes.as_slice())
            .map(Some)
            .map_err(|e| Error::Internal(format!("stored response undecodable: {e}"))),
    }
}

async fn remember<M: Message>(
    tx: &Tx,
    scope: &Scope,
    request_id: &str,
    method: &str,
    resp: &M,
) -> Result<(), Error> {
    if request_id.is_empty() {
        return Ok(());
    }
    idempotency::finish(tx, scope, request_id, method, &resp.encode_to_vec()).await
}

/// Inserts, then writes the audit event and remembers the response (for a
/// non-empty `request_id`). Those two do not depend on each other: they
/// travel together, one round trip.
async fn insert_one<R: ApiResource>(
    tx: &Tx,
    scope: &Scope,
    values: &[Value],
    request_id: &str,
    method: &str,
) -> Result<R, Error> {
    check_parents::<R>(tx, scope, values, None).await?;
    let rec = records::insert(tx, scope.tenant, R::RES, Uuid::now_v7(), values).await?;
    audited::<R>(tx, scope, Action::Create, None, &rec, request_id, method).await
}

/// Writes a mutation's audit event and remembers its response (for a
/// non-empty `request_id`). The two do not depend on each other: they travel
/// together, one round trip. Returns the resource as the caller sees it.
async fn audited<R: ApiResource>(
    tx: &Tx,
    scope: &Scope,
    action: Action,
    before: Option<&Record>,
    after: &Record,
    request_id: &str,
    method: &str,
) -> Result<R, Error> {
    let result = R::from_record(after);
    tokio::try_join!(
        audit::record(
            tx,
            scope,
            R::RES.name,
            after.id(),
            action,
            before.map(|b| b.to_json(R::RES)),
            Some(after.to_json(R::RES)),
        ),
        remember(tx, scope, request_id, method, &result),
    )?;
    Ok(result)
}

pub async fn create<R: ApiResource>(
    store: &Store,
    scope: &Scope,
    msg: Option<R>,
    request_id: &str,
) -> Result<R, Error> {
    let msg = msg.ok_or_else(|| Error::invalid(R::FIELD, format!("{} is required", R::FIELD)))?;
    let values = new_values(&msg)?;
    let method = format!("Create/{}", R::RES.name);
    let tx = store.begin(scope).await?;
    if let Some(prev) = replay::<R>(&tx, scope, request_id, &method).await? {
        return Ok(prev);
    }
    let created = insert_one::<R>(&tx, scope, &values, request_id, &method).await?;
    tx.commit().await?;
    Ok(created)
}

/// One creation of a batch: the resource and its own optional request id.
pub struct BatchItem<R> {
    pub resource: Option<R>,
    pub request_id: String,
}

/// Creates all or nothing, in one transaction.
pub async fn batch_create<R: ApiResource>(
    store: &Store,
    scope: &Scope,
    items: Vec<BatchItem<R>>,
    request_id: &str,
) -> Result<Vec<R>, Error> {
    if items.is_empty() {
        return Err(Error::invalid("requests", "at least one request is needed"));
    }
    if items.len() > MAX_BATCH {
        return Err(Error::invalid("requests", format!("at most {MAX_BATCH} requests per batch")));
    }
    let mut violations = Vec::new();
    let mut prepared = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let field = format!("requests[{i}].{}", R::FIELD);
        match &item.resource {
            None => violations.push(FieldViolation::new(&field, format!("{} is required", R::FIELD))),
            Some(m) => match new_values(m) {
                Ok(v) => prepared.push((v, item.request_id)),
                Err(Error::InvalidArgument(errs)) => violations.extend(
                    errs.into_iter()
                        .map(|v| FieldViolation::new(format!("requests[{i}].{}", v.field), v.description)),
                ),
                Err(e) => return Err(e),
            },
        }
    }
    if !violations.is_empty() {
        return Err(Error::InvalidArgument(violations));
    }
    let method = format!("BatchCreate/{}", R::RES.name);
    let item_method = format!("Create/{}", R::RES.name);
    let tx = store.begin(scope).await?;
    if !request_id.is_empty()
        && let Some(bytes) = idempotency::begin(&tx, scope, request_id, &method).await?
    {
        return decode_items(&bytes);
    }
    let mut out = Vec::with_capacity(prepared.len());
    for (values, item_request_id) in &prepared {
        if let Some(prev) = replay::<R>(&tx, scope, item_request_id, &item_method).await? {
            out.push(prev);
            continue;
        }
        out.push(insert_one::<R>(&tx, scope, values, item_request_id, &item_method).await?);
    }
    if !request_id.is_empty() {
        idempotency::finish(&tx, scope, request_id, &method, &encode_items(&out)).await?;
    }
    tx.commit().await?;
    Ok(out)
}

/// Stored form of a batch response: the items, length-delimited.
fn encode_items<R: ApiResource>(items: &[R]) -> Vec<u8> {
    let mut buf = Vec::new();
    for item in items {
        item.encode_length_delimited(&mut buf).expect("Vec grows");
    }
    buf
}

fn decode_items<R: ApiResource>(mut bytes: &[u8]) -> Result<Vec<R>, Error> {
    let mut items = Vec::new();
    while !bytes.is_empty() {
        items.push(
            R::decode_length_delimited(&mut bytes)
                .map_err(|e| Error::Internal(format!("stored response undecodable: {e}")))?,
        );
    }
    Ok(items)
}

pub async fn get<R: ApiResource>(store: &Store, scope: &Scope, id: &str) -> Result<R, Error> {
    let id = parse_id("id", id)?;
    let rec = records::read_one(store, scope, R::RES, id).await?.ok_or_else(|| not_found::<R>(id))?;
    Ok(R::from_record(&rec))
}

pub async fn batch_get<R: ApiResource>(
    store: &Store,
    scope: &Scope,
    ids: &[String],
) -> Result<Vec<R>, Error> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    if ids.len() > MAX_BATCH {
        return Err(Error::invalid("ids", format!("at most {MAX_BATCH} ids per call")));
    }
    let parsed = ids
        .iter()
        .enumerate()
        .map(|(i, s)| parse_id(&format!("ids[{i}]"), s))
        .collect::<Result<Vec<_>, _>>()?;
    let rows = records::read_many(store, scope, R::RES, &parsed).await?;
    let by_id: HashMap<Uuid, Record> = rows.into_iter().map(|r| (r.id(), r)).collect();
    parsed.iter().map(|id| by_id.get(id).map(R::from_record).ok_or_else(|| not_found::<R>(id))).collect()
}

/// List arguments common to every List method.
pub struct ListArgs<'a> {
    pub page_size: i32,
    pub page_token: &'a str,
    pub filter: &'a str,
    pub order_by: &'a str,
    pub show_deleted: bool,
    pub count: bool,
}

pub struct Page<R> {
    pub items: Vec<R>,
    pub next_page_token: String,
    pub total_size: i64,
}

pub fn page_size(n: i32) -> Result<usize, Error> {
    match n {
        n if n < 0 => Err(Error::invalid("page_size", "page_size must not be negative")),
        0 => Ok(DEFAULT_PAGE_SIZE),
        n => Ok((n as usize).min(MAX_PAGE_SIZE)),
    }
}

/// Parses a filter and checks it against the resource's fields (unknown
/// fields, wrong value types), before any database work.
pub fn parse_filter(res: &'static Resource, text: &str) -> Result<Option<filter::Expr>, Error> {
    if let Some(at) = text.chars().position(|c| c == '\0') {
        return Err(Error::invalid("filter", format!("filter: NUL character at position {}", at + 1)));
    }
    let expr = filter::parse(text).map_err(|e| Error::invalid("filter", e.to_string()))?;
    if let Some(e) = &expr {
        crate::store::filter_sql::compile(res, e, &mut Vec::new())
            .map_err(|e| Error::invalid("filter", e.to_string()))?;
    }
    Ok(expr)
}

pub fn parse_order(res: &'static Resource, text: &str) -> Result<Vec<OrderKey>, Error> {
    order::parse_order_by(res, text).map_err(|e| Error::invalid("order_by", e.to_string()))
}

pub async fn list<R: ApiResource>(
    store: &Store,
    scope: &Scope,
    args: ListArgs<'_>,
) -> Result<Page<R>, Error> {
    let limit = page_size(args.page_size)?;
    let filter = parse_filter(R::RES, args.filter)?;
    let order = parse_order(R::RES, args.order_by)?;
    let keys = records::effective_order(R::RES, &order);
    let filter_text = filter.as_ref().map(|f| f.to_string()).unwrap_or_default();
    let binding = page::binding(&[
        R::RES.name,
        &scope.tenant.to_string(),
        &filter_text,
        &order::canonical(&order),
        if args.show_deleted { "deleted" } else { "live" },
    ]);
    let after = if args.page_token.is_empty() {
        None
    } else {
        Some(page::decode(args.page_token, &binding, &records::key_kinds(&keys))?)
    };
    let q = ListQuery {
        filter: filter.as_ref(),
        order: &order,
        after,
        limit,
        show_deleted: args.show_deleted,
        count: args.count,
        extra: None,
    };
    let (mut rows, total) = records::read_page(store, scope, R::RES, &q).await?;
    let next_page_token = if rows.len() > limit {
        rows.truncate(limit);
        let last = rows.last().expect("limit >= 1");
        page::encode(&binding, &records::key_values(R::RES, &keys, last))
    } else {
        String::new()
    };
    Ok(Page {
        items: rows.iter().map(R::from_record).collect(),
        next_page_token,
        total_size: total.unwrap_or(0),
    })
}

fn check_etag<R: ApiResource>(given: &str, current: &Record) -> Result<(), Error> {
    if !given.is_empty() && given != current.etag() {
        return Err(Error::Aborted {
            reason: "ETAG_MISMATCH",
            message: format!("the {} was modified since it was read (etag {given} is stale)", R::RES.name),
        });
    }
    Ok(())
}

/// Field-table indexes to write: the mask's paths, or every field the
/// caller set when the mask is empty.
fn mask_indexes<R: ApiResource>(mask: Option<&FieldMask>, set: &[bool]) -> Result<Vec<usize>, Error> {
    let paths: Vec<&str> = mask.map(|m| m.paths.iter().map(String::as_str).collect()).unwrap_or_default();
    if paths.is_empty() {
        return Ok((0..R::RES.fields.len()).filter(|&i| set[i] && R::RES.fields[i].mutable).collect());
    }
    let mut out = Vec::with_capacity(paths.len());
    let mut errs = Vec::new();
    for p in paths {
        match R::RES.index_of(p) {
            Some(i) if R::RES.fields[i].mutable => {
                if !out.contains(&i) {
                    out.push(i)
                }
            }
            Some(_) => errs.push(FieldViolation::new("update_mask", format!("field '{p}' is output only"))),
            None => errs.push(FieldViolation::new("update_mask", format!("unknown field '{p}'"))),
        }
    }
    if errs.is_empty() { Ok(out) } else { Err(Error::InvalidArgument(errs)) }
}

pub async fn update<R: ApiResource>(
    store: &Store,
    scope: &Scope,
    msg: Option<R>,
    mask: Option<FieldMask>,
    request_id: &str,
) -> Result<R, Error> {
    let msg = msg.ok_or_else(|| Error::invalid(R::FIELD, format!("{} is required", R::FIELD)))?;
    let id = parse_id(&format!("{}.id", R::FIELD), msg.id())?;
    let (incoming, set) = msg.to_values().map_err(|e| prefixed(R::FIELD, e))?;
    let indexes = mask_indexes::<R>(mask.as_ref(), &set)?;
    let method = format!("Update/{}", R::RES.name);
    let tx = store.begin(scope).await?;
    if let Some(prev) = replay::<R>(&tx, scope, request_id, &method).await? {
        return Ok(prev);
    }
    let current =
        records::fetch(&tx, scope.tenant, R::RES, id, true).await?.ok_or_else(|| not_found::<R>(id))?;
    if R::RES.soft_delete && !current.values[R::RES.index_of("delete_time").expect("soft delete")].is_null() {
        return Err(Error::FailedPrecondition {
            reason: "RESOURCE_DELETED",
            message: format!("{} '{id}' is deleted; undelete it first", R::RES.name),
        });
    }
    check_etag::<R>(msg.etag(), &current)?;
    let mut merged = current.values.clone();
    for &i in &indexes {
        merged[i] = incoming[i].clone();
    }
    normalize::<R>(&mut merged).map_err(|e| prefixed(R::FIELD, e))?;
    let changed: Vec<usize> = (0..merged.len()).filter(|&i| merged[i] != current.values[i]).collect();
    let result = if changed.is_empty() {
        let result = R::from_record(&current);
        remember(&tx, scope, request_id, &method, &result).await?;
        result
    } else {
        check_parents::<R>(&tx, scope, &merged, Some(&changed)).await?;
        let rec = records::update(&tx, scope.tenant, R::RES, id, &merged, &changed).await?;
        audited::<R>(&tx, scope, Action::Update, Some(&current), &rec, request_id, &method).await?
    };
    tx.commit().await?;
    Ok(result)
}

/// Soft delete (`deleted = true`, with an optional etag) or undelete.
pub async fn set_deleted<R: ApiResource>(
    store: &Store,
    scope: &Scope,
    id: &str,
    etag: &str,
    deleted: bool,
    request_id: &str,
) -> Result<R, Error> {
    let id = parse_id("id", id)?;
    let method = format!("{}/{}", if deleted { "Delete" } else { "Undelete" }, R::RES.name);
    let tx = store.begin(scope).await?;
    if let Some(prev) = replay::<R>(&tx, scope, request_id, &method).await? {
        return Ok(prev);
    }
    let current =
        records::fetch(&tx, scope.tenant, R::RES, id, true).await?.ok_or_else(|| not_found::<R>(id))?;
    let is_deleted = !current.values[R::RES.index_of("delete_time").expect("soft delete")].is_null();
    if deleted && is_deleted {
        return Err(not_found::<R>(id));
    }
    if !deleted && !is_deleted {
        return Err(Error::FailedPrecondition {
            reason: "NOT_DELETED",
            message: format!("{} '{id}' is not deleted", R::RES.name),
        });
    }
    check_etag::<R>(etag, &current)?;
    let rec = records::set_deleted(&tx, scope.tenant, R::RES, id, deleted).await?;
    let action = if deleted { Action::Delete } else { Action::Undelete };
    // Children follow: deleted at the parent's delete_time, and on undelete
    // exactly those (same delete_time) come back.
    let delete_time = R::RES.index_of("delete_time").expect("soft delete");
    let stamp = if deleted { &rec.values[delete_time] } else { &current.values[delete_time] };
    for (child, column) in R::CASCADES {
        for (before, after) in
            records::cascade_deleted(&tx, scope.tenant, child, column, id, stamp, deleted).await?
        {
            audit::record(
                &tx,
                scope,
                child.name,
                after.id(),
                action,
                Some(before),
                Some(after.to_json(child)),
            )
            .await?;
        }
    }
    let result = audited::<R>(&tx, scope, action, Some(&current), &rec, request_id, &method).await?;
    tx.commit().await?;
    Ok(result)
}

/// Rows fetched per statement while exporting; the stream buffers at most
/// this many messages, so memory is constant whatever the row count.
pub const EXPORT_BATCH: usize = 500;

/// Streams every row matching `filter`, in `order_by` order, in keyset
/// batches (each its own short read transaction). The caller's deadline
/// bounds the whole stream; a cancelled stream stops after the statement in
/// flight.
pub fn export<R: ApiResource + Send>(
    store: Store,
    scope: Scope,
    filter: &str,
    order_by: &str,
    show_deleted: bool,
) -> Result<tokio::sync::mpsc::Receiver<Result<R, tonic::Status>>, Error> {
    let filter = parse_filter(R::RES, filter)?;
    let order = parse_order(R::RES, order_by)?;
    let (out, rx) = tokio::sync::mpsc::channel(EXPORT_BATCH);
    tokio::spawn(
        async move {
            let keys = records::effective_order(R::RES, &order);
            let work = async {
                let mut after = None;
                loop {
                    let q = ListQuery {
                        filter: filter.as_ref(),
                        order: &order,
                        after: after.take(),
                        limit: EXPORT_BATCH,
                        show_deleted,
                        count: false,
                        extra: None,
                    };
                    let fetch = async {
                        let db = store.begin_read(&scope).await?;
                        let (rows, _) = records::list(&db, scope.tenant, R::RES, &q).await?;
                        db.commit().await?;
                        Ok::<_, Error>(rows)
                    };
                    let rows = tokio::select! {
                        rows = fetch => rows?,
                        () = out.closed() => return Ok(()),
                    };
                    let more = rows.len() > EXPORT_BATCH;
                    for rec in rows.iter().take(EXPORT_BATCH) {
                        if out.send(Ok(R::from_record(rec))).await.is_err() {
                            return Ok(()); // the caller went away
                        }
                    }
                    if !more {
                        return Ok(());
                    }
                    after = Some(records::key_values(R::RES, &keys, &rows[EXPORT_BATCH - 1]));
                }
            };
            let result = match scope.deadline {
                Some(d) => tokio::time::timeout_at(d, work).await.unwrap_or(Err(Error::DeadlineExceeded)),
                None => work.await,
            };
            if let Err(e) = result {
                let _ = out.send(Err(super::status::to_status(e))).await;
            }
        }
        .in_current_span(), // statements stay children of the call's span
    );
    Ok(rx)
}
