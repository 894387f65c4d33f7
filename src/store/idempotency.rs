//! AIP-155 request ids: the first response of a (tenant, request_id) is kept
//! for 24 hours and returned to repeats instead of doing the work again.

use std::time::Duration;

use tokio_postgres::Row;

use super::{Scope, Store, Tx, audit::Param};
use crate::error::Error;

pub const MAX_REQUEST_ID_LEN: usize = 36;

/// Transaction-scoped advisory lock on `tenant/request_id`.
pub const LOCK: &str = super::ADVISORY_XACT_LOCK;
/// The stored (unexpired) response of a key, with its method.
pub const LOOKUP: &str = include_str!("sql/idempotency_lookup.sql").trim_ascii_end();
/// Stores a response, replacing an expired entry with the same key.
const STORE: &str = include_str!("sql/idempotency_store.sql").trim_ascii_end();
/// [`LOCK`] on many keys, taken in the order given (sorted: two
/// transactions locking overlapping keys take them in the same order).
pub const LOCK_MANY: &str = include_str!("sql/advisory_xact_lock_many.sql").trim_ascii_end();
/// [`LOOKUP`] of many request ids: `(request_id, method, response)` rows.
pub const LOOKUP_MANY: &str = include_str!("sql/idempotency_lookup_many.sql").trim_ascii_end();
/// [`STORE`] of many responses with one statement (distinct request ids).
const STORE_MANY: &str = include_str!("sql/idempotency_store_many.sql").trim_ascii_end();
/// Deletes every tenant's expired keys.
const PURGE: &str = include_str!("sql/idempotency_purge.sql").trim_ascii_end();

/// The key [`LOCK`] takes for `request_id`, once its length is checked.
pub fn lock_key(scope: &Scope, request_id: &str) -> Result<String, Error> {
    if request_id.chars().count() > MAX_REQUEST_ID_LEN {
        return Err(Error::invalid("request_id", "request_id is longer than 36 characters"));
    }
    Ok(format!("{}/{request_id}", scope.tenant))
}

/// The method and response [`LOOKUP`] found, if any.
pub fn found(rows: Option<&Vec<Row>>) -> Option<(String, Vec<u8>)> {
    rows.and_then(|r| r.first()).map(|row| (row.get(0), row.get(1)))
}

/// The stored response when it was stored for `method`; a request id used
/// for another method is refused.
pub fn answer(found: Option<(String, Vec<u8>)>, method: &str) -> Result<Option<Vec<u8>>, Error> {
    match found {
        None => Ok(None),
        Some((stored, _)) if stored != method => {
            Err(Error::invalid("request_id", format!("request_id was already used for {stored}")))
        }
        Some((_, response)) => Ok(Some(response)),
    }
}

/// Serializes concurrent calls with the same key (transaction-scoped
/// advisory lock), then returns the stored response if there is one.
pub async fn begin(tx: &Tx, scope: &Scope, request_id: &str, method: &str) -> Result<Option<Vec<u8>>, Error> {
    let key = lock_key(scope, request_id)?;
    // One round trip: the lookup runs once the lock is held, with a
    // snapshot taken then (READ COMMITTED), so it sees the holder's commit.
    let rows = tx.query_pipelined(&[(LOCK, &[&key]), (LOOKUP, &[&scope.tenant, &request_id])]).await?;
    answer(found(rows.last()), method)
}

/// The statement remembering a response (replacing an expired entry with
/// the same key), to send with the commit.
pub fn store<'a>(
    scope: &'a Scope,
    request_id: &'a str,
    method: &'a str,
    response: &'a [u8],
) -> (&'static str, Vec<Param<'a>>) {
    (STORE, vec![Box::new(scope.tenant), Box::new(request_id), Box::new(method), Box::new(response)])
}

/// The statement remembering several responses with distinct request ids
/// (`(request_id, method, response)`), to send with the commit.
pub fn store_many<'a>(
    scope: &'a Scope,
    responses: &'a [(String, String, Vec<u8>)],
) -> (&'static str, Vec<Param<'a>>) {
    (
        STORE_MANY,
        vec![
            Box::new(scope.tenant),
            Box::new(responses.iter().map(|r| r.0.as_str()).collect::<Vec<&str>>()),
            Box::new(responses.iter().map(|r| r.1.as_str()).collect::<Vec<&str>>()),
            Box::new(responses.iter().map(|r| r.2.as_slice()).collect::<Vec<&[u8]>>()),
        ],
    )
}

/// Deletes expired keys of every tenant (policy `purge_expired`); run by a
/// background task.
pub async fn purge_expired(store: &Store) -> Result<u64, Error> {
    store.execute_unscoped(PURGE).await
}

/// How often the sweeper runs.
pub const PURGE_EVERY: Duration = Duration::from_secs(3600);
