//! The read use cases: get and batch get (through the cache seam), keyset
//! lists (optionally scoped to a parent, with page tokens bound to it) and
//! the export stream.

use std::collections::HashMap;

use tracing::Instrument;
use uuid::Uuid;

use super::{
    Cached, DEFAULT_PAGE_SIZE, MAX_BATCH, MAX_PAGE_SIZE, Service, Ticket, not_found, page, parse_id, query,
};
use crate::{
    domain::{
        filter,
        filter_check::{self, Filter},
        order::{self, OrderKey},
        record::Record,
        schema::{Resource, Subset},
        value::Value,
    },
    error::Error,
    store::{
        Scope,
        records::{self, ListQuery, View},
        replica::for_shared_cache,
    },
};

/// List arguments common to every List method.
#[derive(Clone, Copy, Debug, Default)]
pub struct ListArgs<'a> {
    pub page_size: i32,
    pub page_token: &'a str,
    pub filter: &'a str,
    pub order_by: &'a str,
    pub show_deleted: bool,
    pub count: bool,
    pub view: View,
    /// Only the rows of a declared subset (and the partial index it has).
    pub subset: Option<&'static Subset>,
}

#[derive(Debug)]
pub struct Page {
    pub items: Vec<Record>,
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

/// Parses a filter and type-checks it against the resource's fields
/// (unknown fields, wrong value types), before any database work. The
/// checked filter is what the store compiles: once per request.
pub fn parse_filter(res: &'static Resource, text: &str) -> Result<Option<Filter>, Error> {
    if let Some(at) = text.chars().position(|c| c == '\0') {
        return Err(Error::invalid("filter", format!("filter: NUL character at position {}", at + 1)));
    }
    let bad = |e: filter::FilterError| Error::invalid("filter", e.to_string());
    match filter::parse(text).map_err(bad)? {
        None => Ok(None),
        Some(expr) => filter_check::check_filter(res, &expr).map(Some).map_err(bad),
    }
}

pub fn parse_order(res: &'static Resource, text: &str) -> Result<Vec<OrderKey>, Error> {
    order::parse_order_by(res, text).map_err(|e| Error::invalid("order_by", e.to_string()))
}

/// Rows fetched per statement while exporting; the stream buffers at most
/// this many records, so memory is constant whatever the row count.
pub const EXPORT_BATCH: usize = 500;

impl Service {
    /// One record, deleted or not (AIP-131).
    pub async fn get(
        &self,
        scope: &Scope,
        res: &'static Resource,
        id: &str,
        view: View,
    ) -> Result<Record, Error> {
        let id = parse_id("id", id)?;
        let Some(c) = self.cache.as_ref().filter(|_| view == View::Full) else {
            return records::read_one(&self.store, scope, res, id, view)
                .await?
                .ok_or_else(|| not_found(res, id));
        };
        let ticket = match c.get(scope, res, &[id]).await.pop() {
            Some(Cached::Hit(rec)) => return Ok(rec),
            Some(Cached::Miss(t)) => t,
            None => Ticket::NONE,
        };
        let rec = for_shared_cache(records::read_one(&self.store, scope, res, id, view))
            .await?
            .ok_or_else(|| not_found(res, id))?;
        if ticket != Ticket::NONE {
            c.fill(scope, res, &[(ticket, &rec)]).await;
        }
        Ok(rec)
    }

    /// Records by id, in the order asked; all or NOT_FOUND (AIP-231).
    pub async fn batch_get(
        &self,
        scope: &Scope,
        res: &'static Resource,
        ids: &[String],
        view: View,
    ) -> Result<Vec<Record>, Error> {
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
        let cache = self.cache.as_ref().filter(|_| view == View::Full);
        let mut by_id: HashMap<Uuid, Record> = HashMap::with_capacity(parsed.len());
        let mut tickets: HashMap<Uuid, Ticket> = HashMap::new();
        if let Some(c) = cache {
            for (id, got) in parsed.iter().zip(c.get(scope, res, &parsed).await) {
                match got {
                    Cached::Hit(rec) => {
                        by_id.insert(*id, rec);
                    }
                    Cached::Miss(t) => {
                        tickets.insert(*id, t);
                    }
                }
            }
        }
        let mut missing: Vec<Uuid> = parsed.iter().copied().filter(|id| !by_id.contains_key(id)).collect();
        missing.dedup();
        if !missing.is_empty() {
            let read = match cache {
                Some(_) => {
                    for_shared_cache(records::read_many(&self.store, scope, res, &missing, view)).await?
                }
                None => records::read_many(&self.store, scope, res, &missing, view).await?,
            };
            if let Some(c) = cache {
                let fills: Vec<(Ticket, &Record)> = read
                    .iter()
                    .filter_map(|r| tickets.get(&r.id()).filter(|t| **t != Ticket::NONE).map(|t| (*t, r)))
                    .collect();
                if !fills.is_empty() {
                    c.fill(scope, res, &fills).await;
                }
            }
            by_id.extend(read.into_iter().map(|r| (r.id(), r)));
        }
        parsed.iter().map(|id| by_id.get(id).cloned().ok_or_else(|| not_found(res, id))).collect()
    }

    /// A keyset page (AIP-132, 158, 160).
    pub async fn list(
        &self,
        scope: &Scope,
        res: &'static Resource,
        args: ListArgs<'_>,
    ) -> Result<Page, Error> {
        self.list_in(scope, res, None, args).await
    }

    /// A keyset page of the children of one parent (`parent_field` = `parent_id`):
    /// its page tokens are bound to that parent.
    pub async fn list_children(
        &self,
        scope: &Scope,
        res: &'static Resource,
        parent_field: &'static str,
        parent_id: &str,
        args: ListArgs<'_>,
    ) -> Result<Page, Error> {
        let id = parse_id(parent_field, parent_id)?;
        self.list_in(scope, res, Some((parent_field, id)), args).await
    }

    async fn list_in(
        &self,
        scope: &Scope,
        res: &'static Resource,
        parent: Option<(&'static str, Uuid)>,
        args: ListArgs<'_>,
    ) -> Result<Page, Error> {
        let limit = page_size(args.page_size)?;
        let filter = parse_filter(res, args.filter)?;
        let order = parse_order(res, args.order_by)?;
        let keys = records::effective_order(res, &order);
        let tenant = scope.tenant.to_string();
        let order_text = order::canonical(&order);
        let parent_text = parent.map(|(f, id)| format!("{f}={id}"));
        let mut parts: Vec<&str> = vec![
            res.name,
            &tenant,
            filter.as_ref().map_or("", |f| &f.canonical),
            &order_text,
            if args.show_deleted { "deleted" } else { "live" },
        ];
        if let Some(p) = &parent_text {
            parts.push(p);
        }
        if let Some(sub) = args.subset {
            if !res.subsets.iter().any(|s| std::ptr::eq(*s, sub)) {
                return Err(Error::Internal(format!("{} declares no subset {}", res.name, sub.name)));
            }
            parts.push(sub.name);
        }
        let binding = page::binding(&parts);
        let after = if args.page_token.is_empty() {
            None
        } else {
            Some(page::decode(args.page_token, &binding, &records::key_kinds(&keys))?)
        };
        let q = ListQuery {
            filter: filter.as_ref().map(|f| &f.checked),
            order: &order,
            after,
            limit,
            show_deleted: args.show_deleted,
            count: args.count,
            parent: parent.map(|(f, id)| (res.fields[res.index(f)].column, Value::Uuid(id))),
            view: args.view,
            subset: args.subset,
        };
        let read = async {
            let (mut rows, total) = records::read_page(&self.store, scope, res, &q).await?;
            let next_page_token = if rows.len() > limit {
                rows.truncate(limit);
                let last = rows.last().expect("limit >= 1");
                page::encode(&binding, &records::key_values(res, &keys, last))
            } else {
                String::new()
            };
            Ok(Page { items: rows, next_page_token, total_size: total.unwrap_or(0) })
        };
        // Filtered or counted lists are the costly ones: cached as results
        // under the resource's generation. A plain keyset page is an index
        // range scan and is not worth a second copy.
        match self.cache.as_ref().filter(|_| filter.is_some() || args.count) {
            None => read.await,
            Some(c) => {
                let key =
                    format!("list\n{binding}\n{}\n{limit}\n{}\n{:?}", args.page_token, args.count, args.view);
                let compute =
                    Box::pin(for_shared_cache(async { read.await.map(|p: Page| query::encode_page(&p)) }));
                let bytes = c.query(scope, &[res], key, compute).await?;
                query::decode_page(res, &bytes)
            }
        }
    }

    /// Streams every record matching `filter`, in `order_by` order, in
    /// keyset batches (each its own short read transaction). The caller's
    /// deadline bounds the whole stream; a stream whose receiver is dropped
    /// stops after the statement in flight.
    pub fn export(
        &self,
        scope: Scope,
        res: &'static Resource,
        filter: &str,
        order_by: &str,
        show_deleted: bool,
    ) -> Result<tokio::sync::mpsc::Receiver<Result<Record, Error>>, Error> {
        let filter = parse_filter(res, filter)?;
        let order = parse_order(res, order_by)?;
        let store = self.store.clone();
        let (out, rx) = tokio::sync::mpsc::channel(EXPORT_BATCH);
        tokio::spawn(
            async move {
                let keys = records::effective_order(res, &order);
                let work = async {
                    let mut after = None;
                    loop {
                        let q = ListQuery {
                            filter: filter.as_ref().map(|f| &f.checked),
                            order: &order,
                            after: after.take(),
                            limit: EXPORT_BATCH,
                            show_deleted,
                            count: false,
                            parent: None,
                            view: View::Full,
                            subset: None,
                        };
                        let fetch = async {
                            let db = store.begin_read(&scope).await?;
                            let (rows, _) = records::list(&db, scope.tenant, res, &q).await?;
                            db.commit().await?;
                            Ok::<_, Error>(rows)
                        };
                        let rows = tokio::select! {
                            rows = fetch => rows?,
                            () = out.closed() => return Ok(()),
                        };
                        let more = rows.len() > EXPORT_BATCH;
                        let last = more.then(|| records::key_values(res, &keys, &rows[EXPORT_BATCH - 1]));
                        for rec in rows.into_iter().take(EXPORT_BATCH) {
                            if out.send(Ok(rec)).await.is_err() {
                                return Ok(()); // the caller went away
                            }
                        }
                        match last {
                            Some(k) => after = Some(k),
                            None => return Ok(()),
                        }
                    }
                };
                let result = super::within(scope.deadline, work).await;
                if let Err(e) = result {
                    let _ = out.send(Err(e)).await;
                }
            }
            .in_current_span(), // statements stay children of the call's span
        );
        Ok(rx)
    }
}
