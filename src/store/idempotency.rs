//! AIP-155 request ids: the first response of a (tenant, request_id) is kept
//! for 24 hours and returned to repeats instead of doing the work again.

use std::time::Duration;

use super::{Scope, Store, Tx};
use crate::error::Error;

pub const MAX_REQUEST_ID_LEN: usize = 36;

/// Transaction-scoped advisory lock on `tenant/request_id`.
const LOCK: &str = super::ADVISORY_XACT_LOCK;
/// The stored (unexpired) response of a key, with its method.
const LOOKUP: &str = include_str!("sql/idempotency_lookup.sql").trim_ascii_end();
/// Stores a response, replacing an expired entry with the same key.
const STORE: &str = include_str!("sql/idempotency_store.sql").trim_ascii_end();
/// Deletes every tenant's expired keys.
const PURGE: &str = include_str!("sql/idempotency_purge.sql").trim_ascii_end();

/// Serializes concurrent calls with the same key (transaction-scoped
/// advisory lock), then returns the stored response if there is one.
pub async fn begin(tx: &Tx, scope: &Scope, request_id: &str, method: &str) -> Result<Option<Vec<u8>>, Error> {
    if request_id.chars().count() > MAX_REQUEST_ID_LEN {
        return Err(Error::invalid("request_id", "request_id is longer than 36 characters"));
    }
    let key = format!("{}/{request_id}", scope.tenant);
    // One round trip: the lookup runs once the lock is held, with a
    // snapshot taken then (READ COMMITTED), so it sees the holder's commit.
    let row = tx
        .query_pipelined(&[(LOCK, &[&key]), (LOOKUP, &[&scope.tenant, &request_id])])
        .await?
        .pop()
        .and_then(|rows| rows.into_iter().next());
    match row {
        None => Ok(None),
        Some(row) => {
            let stored: String = row.get(0);
            if stored != method {
                return Err(Error::invalid(
                    "request_id",
                    format!("request_id was already used for {stored}"),
                ));
            }
            Ok(Some(row.get(1)))
        }
    }
}

/// Remembers the response (replacing an expired entry with the same key).
pub async fn finish(
    tx: &Tx,
    scope: &Scope,
    request_id: &str,
    method: &str,
    response: &[u8],
) -> Result<(), Error> {
    tx.query(STORE, &[&scope.tenant, &request_id, &method, &response]).await?;
    Ok(())
}

/// Deletes expired keys of every tenant (policy `purge_expired`); run by a
/// background task.
pub async fn purge_expired(store: &Store) -> Result<u64, Error> {
    store.execute_unscoped(PURGE).await
}

/// How often the sweeper runs.
pub const PURGE_EVERY: Duration = Duration::from_secs(3600);
