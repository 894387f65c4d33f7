//! A versioned resource's content (a declared [`Versions`]): the chunk rows
//! of each version (`tenant_id, version_id, seq, data`), written as an
//! upload or a content change arrives and read back in short batches, and
//! the version rows found by their number. Tables and columns come from
//! the declaration; every value is a bound parameter.

use uuid::Uuid;

use super::{Scope, Store, Tx, db_error, records};
use crate::{
    domain::{record::Record, schema::Versions},
    error::Error,
};

/// Bytes per chunk row. Measured (ARCHITECTURE.md, "Document content"):
/// 64 KiB to 1 MiB rows store 64 MiB equally fast; this size keeps an
/// upload's buffer small and a download's batch at 1 MiB.
pub const CHUNK_BYTES: usize = 256 * 1024;
/// Chunk rows read per statement while streaming a version out.
pub const CHUNKS_PER_READ: i64 = 4;

/// Appends chunk `seq` of version `version_id` (checked against the version
/// row at commit: an upload writes its chunks before the row exists).
pub async fn put_chunk(
    tx: &Tx,
    tenant: Uuid,
    spec: &Versions,
    version_id: Uuid,
    seq: i32,
    data: &[u8],
) -> Result<(), Error> {
    let sql =
        format!("INSERT INTO {} (tenant_id, version_id, seq, data) VALUES ($1, $2, $3, $4)", spec.chunks);
    tx.query(&sql, &[&tenant, &version_id, &seq, &data]).await?;
    Ok(())
}

/// The version `number` (its field: `number_field`) of `parent` (the
/// latest when `None`), in a read-only transaction of its own.
pub async fn find_version(
    store: &Store,
    scope: &Scope,
    spec: &'static Versions,
    number_field: &str,
    parent: Uuid,
    number: Option<i64>,
) -> Result<Option<Record>, Error> {
    let res = spec.resource;
    let parent_col = res.fields[res.index(spec.parent)].column;
    let version = res.fields[res.index(number_field)].column;
    let select = records::select_list(res, records::View::Full);
    let rows = match number {
        Some(n) => {
            let sql = format!(
                "SELECT {select} FROM {} WHERE tenant_id = $1 AND {parent_col} = $2 AND {version} = $3",
                res.table
            );
            store.read(scope, &[(&sql, &[&scope.tenant, &parent, &n])]).await?
        }
        None => {
            let sql = format!(
                "SELECT {select} FROM {} WHERE tenant_id = $1 AND {parent_col} = $2 ORDER BY {version} DESC LIMIT 1",
                res.table
            );
            store.read(scope, &[(&sql, &[&scope.tenant, &parent])]).await?
        }
    };
    rows.into_iter().flatten().next().map(|r| records::decode_row(res, &r)).transpose()
}

/// Up to `CHUNKS_PER_READ` chunks of a version after `after` (`-1`: from
/// the start), in order, in a read-only transaction of their own.
pub async fn read_chunks(
    store: &Store,
    scope: &Scope,
    spec: &Versions,
    version_id: Uuid,
    after: i32,
) -> Result<Vec<(i32, Vec<u8>)>, Error> {
    let sql = format!(
        "SELECT seq, data FROM {} WHERE tenant_id = $1 AND version_id = $2 AND seq > $3 ORDER BY seq LIMIT $4",
        spec.chunks
    );
    let rows = store.read(scope, &[(&sql, &[&scope.tenant, &version_id, &after, &CHUNKS_PER_READ])]).await?;
    rows.into_iter()
        .flatten()
        .map(|r| Ok((r.try_get(0).map_err(db_error)?, r.try_get(1).map_err(db_error)?)))
        .collect()
}
