//! The use cases, written once for every declared resource: standard
//! methods (create, batch create, get, batch get, list, update, delete,
//! undelete, export), `mutate` (load FOR UPDATE, compute the next record
//! from the previous one, write, audit), merges that reassign children,
//! ordered appends, child lists scoped to a parent, search and bulk import.
//!
//! Knows neither tonic nor prost nor SQL text: it speaks [`Record`]s and
//! [`Draft`]s and calls `store` for every statement. The edge (`api/`) maps
//! proto messages to drafts and records back, and errors to statuses.
//!
//! Versioned content (`content.rs`: uploads, downloads, versions) and
//! batches appended under a parent's lock or claimed from a queue
//! (`append.rs`) are use cases on the same unit.
//!
//! Two seams: [`ReadCache`] sits in front of `get`/`batch_get` (records)
//! and of filtered lists and searches (encoded query results, `query.rs`),
//! and is told, after each commit, which rows and resources changed
//! ([`Changes`]); [`AfterWrite`] hooks run inside a write transaction (e.g.
//! a document's version rows). The Redis implementation is `crate::cache`.

pub mod analytics;
mod append;
mod combine;
mod content;
mod events;
mod import;
pub mod page;
mod query;
mod read;
mod search;
mod write;

use std::{collections::HashMap, sync::Arc};

use futures_util::future::BoxFuture;
use uuid::Uuid;

pub use self::{
    append::MAX_CLAIM,
    content::{DOWNLOAD_PIECE, UploadHead},
    events::{LINK_DEFAULT, LINK_MAX, Linked},
    import::{ImportItem, Importer},
    read::{ListArgs, Page},
    search::{SearchArgs, SearchPage},
    write::{BatchItem, Unit, UpdateArgs},
};
pub use crate::store::{Scope, records::View, search::Hit};
use crate::{
    domain::{
        record::{self, Fields, Record},
        schema::Resource,
        value::{Value, canonical_uuid},
    },
    error::{Error, FieldViolation},
    store::Store,
};

pub const DEFAULT_PAGE_SIZE: usize = 50;
pub const MAX_PAGE_SIZE: usize = 1000;
pub const MAX_BATCH: usize = 1000;

/// A record as a caller sent it: values in field-table order (system fields
/// may be anything) and, per field, whether the caller set it (used by an
/// update with an empty mask).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Draft {
    pub values: Vec<Value>,
    pub set: Vec<bool>,
}

/// Rows a committed write changed, for caches: `(resource, id)` pairs
/// (cascaded and reassigned children included) and so the resources whose
/// query results are stale.
#[derive(Clone, Debug, Default)]
pub struct Changes {
    pub rows: Vec<(&'static Resource, Uuid)>,
    /// Resources any of whose rows may have changed (a bulk import batch):
    /// every cached record of them is stale too.
    pub bulk: Vec<&'static Resource>,
    /// Resources that got new rows no cache holds yet (audit events and
    /// ingest runs, written by the store's own code): only their query
    /// results are stale.
    pub queries: Vec<&'static Resource>,
}

impl Changes {
    /// Every row of `res` may have changed.
    pub fn bulk(res: &'static Resource) -> Changes {
        Changes { bulk: vec![res], ..Changes::default() }
    }

    pub fn push(&mut self, res: &'static Resource, id: Uuid) {
        self.rows.push((res, id));
    }

    /// Nothing changed.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty() && self.bulk.is_empty() && self.queries.is_empty()
    }

    /// The resources touched, each once: those whose query results are stale.
    pub fn resources(&self) -> Vec<&'static Resource> {
        let mut out: Vec<&'static Resource> = Vec::new();
        for r in self.rows.iter().map(|(r, _)| r).chain(&self.bulk).chain(&self.queries) {
            if !out.iter().any(|o| o.name == r.name) {
                out.push(r);
            }
        }
        out
    }
}

/// What a cache answered for one record: the record, or a miss with the
/// ticket its fill must present (a lease: an invalidation between the miss
/// and the fill voids it, so a fill never overwrites a newer write).
#[derive(Debug)]
pub enum Cached {
    Hit(Record),
    Miss(Ticket),
}

/// Opaque to the service: handed from [`ReadCache::get`] to [`ReadCache::fill`].
/// `Ticket::NONE`: do not fill (someone else holds the lease, or the cache
/// is off).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ticket(pub u64);

impl Ticket {
    pub const NONE: Ticket = Ticket(0);
}

/// A query result computation handed to [`ReadCache::query`]: the encoded result.
pub type Compute<'a> = BoxFuture<'a, Result<Vec<u8>, Error>>;

/// Where a read-through cache plugs in. `get`/`batch_get` ask it first and
/// fill it on a miss; filtered lists and searches go through `query`;
/// every committed write reports its [`Changes`] before the call answers.
/// Without one (`Service::new`), reads go to the store. A cache never fails
/// a call: its own errors are misses.
pub trait ReadCache: Send + Sync + 'static {
    /// Records of `res` by id, in order.
    fn get<'a>(
        &'a self,
        scope: &'a Scope,
        res: &'static Resource,
        ids: &'a [Uuid],
    ) -> BoxFuture<'a, Vec<Cached>>;
    /// Stores records read after a miss, each with the ticket of its miss.
    fn fill<'a>(
        &'a self,
        scope: &'a Scope,
        res: &'static Resource,
        recs: &'a [(Ticket, &'a Record)],
    ) -> BoxFuture<'a, ()>;
    /// The result of the query `key` (any text naming it completely) over
    /// the resources `deps` (at least one): cached while no write of the
    /// tenant's `deps` committed since, else `compute`d (once at a time per
    /// key) and stored.
    fn query<'a>(
        &'a self,
        scope: &'a Scope,
        deps: &'a [&'static Resource],
        key: String,
        compute: Compute<'a>,
    ) -> BoxFuture<'a, Result<Vec<u8>, Error>>;
    fn invalidate<'a>(&'a self, scope: &'a Scope, changes: &'a Changes) -> BoxFuture<'a, ()>;
}

/// Work a resource does inside each of its write transactions, after the
/// row is written (`before` is `None` on a create): e.g. a document's
/// version row. An error rolls the whole write back.
pub trait AfterWrite: Send + Sync + 'static {
    fn after_write<'a>(
        &'a self,
        unit: &'a Unit<'_>,
        before: Option<&'a Record>,
        after: &'a Record,
    ) -> BoxFuture<'a, Result<(), Error>>;
}

/// The use cases over one store. Cheap to clone.
#[derive(Clone)]
pub struct Service {
    store: Store,
    /// `None`: no cache, and no call into the seam at all.
    cache: Option<Arc<dyn ReadCache>>,
    hooks: Arc<HashMap<&'static str, Arc<dyn AfterWrite>>>,
    /// Uploads in progress hold a connection each for their whole stream:
    /// at most half the pool's, so they cannot starve every other call.
    uploads: Arc<tokio::sync::Semaphore>,
    /// Concurrent creations waiting to share a unit (`combine`).
    combiner: Arc<combine::Combiner>,
}

impl Service {
    pub fn new(store: Store) -> Service {
        let uploads = Arc::new(tokio::sync::Semaphore::new((store.pool_size() / 2).max(1)));
        Service { store, cache: None, hooks: Arc::default(), uploads, combiner: Arc::default() }
    }

    /// Puts `cache` in the read seam.
    pub fn with_cache(mut self, cache: Arc<dyn ReadCache>) -> Service {
        self.cache = Some(cache);
        self
    }

    /// Runs `hook` in every write transaction of `res`.
    pub fn with_hook(mut self, res: &'static Resource, hook: Arc<dyn AfterWrite>) -> Service {
        Arc::make_mut(&mut self.hooks).insert(res.name, hook);
        self
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    fn hook(&self, res: &'static Resource) -> Option<&Arc<dyn AfterWrite>> {
        self.hooks.get(res.name)
    }
}

/// `work`, cut off at the caller's deadline (DEADLINE_EXCEEDED) when it set
/// one: streams are bounded as a whole, not only per statement.
pub(crate) async fn within<T>(
    deadline: Option<tokio::time::Instant>,
    work: impl std::future::Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    match deadline {
        Some(d) => tokio::time::timeout_at(d, work).await.unwrap_or(Err(Error::DeadlineExceeded)),
        None => work.await,
    }
}

/// A resource id from a request: required and well-formed.
pub fn parse_id(field: &str, s: &str) -> Result<Uuid, Error> {
    if s.is_empty() {
        return Err(Error::invalid(field, format!("{field} is required")));
    }
    canonical_uuid(s).ok_or_else(|| Error::invalid(field, format!("{field} is not a valid UUID")))
}

fn not_found(res: &Resource, id: impl ToString) -> Error {
    Error::NotFound { entity: res.name, id: id.to_string() }
}

/// Violations of a field of the request, under `prefix` (`job.title`).
pub fn prefixed(prefix: &str, errs: Vec<FieldViolation>) -> Error {
    Error::InvalidArgument(
        errs.into_iter()
            .map(|v| FieldViolation::new(format!("{prefix}.{}", v.field), v.description))
            .collect(),
    )
}

/// The resource's rules plus the ones every resource shares, on the
/// complete record about to be written (`before`: the stored one, on an update).
pub fn normalize(
    res: &'static Resource,
    values: &mut Vec<Value>,
    before: Option<&[Value]>,
) -> Result<(), Vec<FieldViolation>> {
    let nul = record::no_nul_characters(res, values);
    if !nul.is_empty() {
        return Err(nul);
    }
    let mut fields = match before {
        Some(b) => Fields::with_before(res, values, b),
        None => Fields::new(res, values),
    };
    (res.rules)(&mut fields)
}

/// Values of a new record, validated (violations name the resource's own
/// fields). Conversion violations found by the edge come first.
pub fn validate_new(
    res: &'static Resource,
    mut draft: Draft,
    conversion: Vec<FieldViolation>,
) -> Result<Vec<Value>, Vec<FieldViolation>> {
    if !conversion.is_empty() {
        return Err(conversion);
    }
    normalize(res, &mut draft.values, None)?;
    Ok(draft.values)
}

/// Names a store-level unique violation with the resource's declared reason.
fn named(res: &'static Resource, e: Error) -> Error {
    match e {
        Error::Unique { constraint } => {
            let (reason, message) = res.unique_violation(&constraint);
            Error::AlreadyExists { reason, message: message.to_owned() }
        }
        e => e,
    }
}
