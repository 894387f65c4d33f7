//! Links jobs to companies by the matching key of the company name (the
//! migration's `bi_company_key`, the same key SearchCompanies ranks by).

use uuid::Uuid;

use super::Tx;
use crate::error::Error;

/// Points up to `max` unlinked live jobs at the one live company whose name
/// key equals that of their `company_name`; returns the jobs' ids. Jobs
/// locked by another transaction are skipped (the next call takes them).
pub async fn link_jobs(tx: &Tx, tenant: Uuid, max: i64) -> Result<Vec<Uuid>, Error> {
    let rows = tx.query(include_str!("sql/link_jobs.sql").trim_ascii_end(), &[&tenant, &max]).await?;
    rows.iter().map(|r| r.try_get(0).map_err(super::db_error)).collect()
}

/// Unlinked live jobs whose key matches several companies, and those with
/// a unique match (still to link).
pub async fn unlinked(tx: &Tx, tenant: Uuid) -> Result<(i64, i64), Error> {
    let row = tx.query_one(include_str!("sql/link_jobs_left.sql").trim_ascii_end(), &[&tenant]).await?;
    Ok((row.try_get(0).map_err(super::db_error)?, row.try_get(1).map_err(super::db_error)?))
}
