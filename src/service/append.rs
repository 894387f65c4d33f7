//! Batches appended to a parent and work claimed from a queue, both on
//! [`Unit`]:
//!
//! - `append`: children (a conversation's messages) inserted all or nothing
//!   under the parent's row lock, numbered by their declared sequence, and
//!   the parent's declared [`Tally`](crate::domain::schema::Tally) (count,
//!   sums) moved in the same transaction, so it stays exact.
//! - `claim`: rows of a declared subset (pending documents) locked with
//!   `FOR UPDATE SKIP LOCKED` and moved to a state through the declared
//!   transitions; concurrent claimers never get the same row.

use super::{
    Draft, MAX_BATCH, Service, named, parse_id, validate_new,
    write::{Unit, refuse_deleted, stored_many},
};
use crate::{
    domain::{
        audit::Action,
        record::Record,
        schema::{Resource, Subset},
        value::Value,
    },
    error::{Error, FieldViolation},
    store::{Scope, records},
};

/// Most rows one claim takes.
pub const MAX_CLAIM: i32 = 100;

impl Service {
    /// Appends `items` (children of `parent`'s declared tally) to record
    /// `parent_id`, in order, and returns the parent after and the children.
    pub async fn append(
        &self,
        scope: &Scope,
        parent: &'static Resource,
        parent_id: &str,
        items: Vec<(Draft, Vec<FieldViolation>)>,
        request_id: &str,
    ) -> Result<(Record, Vec<Record>), Error> {
        let tally =
            parent.tally.ok_or_else(|| Error::Internal(format!("{} declares no tally", parent.name)))?;
        let child = tally.child;
        let link = child
            .parents
            .iter()
            .find(|p| std::ptr::eq(p.resource, parent))
            .ok_or_else(|| Error::Internal(format!("{} is no parent of {}", parent.name, child.name)))?
            .field;
        let id = parse_id(&format!("{}_id", parent.name), parent_id)?;
        let plural = format!("{}s", child.name);
        if items.is_empty() {
            return Err(Error::invalid(&plural, format!("at least one {} is needed", child.name)));
        }
        if items.len() > MAX_BATCH {
            return Err(Error::invalid(&plural, format!("at most {MAX_BATCH} per call")));
        }
        let mut violations = Vec::new();
        let mut prepared = Vec::with_capacity(items.len());
        for (i, (mut draft, conversion)) in items.into_iter().enumerate() {
            draft.values[child.index(link)] = Value::Uuid(id);
            match validate_new(child, draft, conversion) {
                Ok(v) => prepared.push(v),
                Err(errs) => violations.extend(
                    errs.into_iter()
                        .map(|v| FieldViolation::new(format!("{plural}[{i}].{}", v.field), v.description)),
                ),
            }
        }
        if !violations.is_empty() {
            return Err(Error::InvalidArgument(violations));
        }
        let run = async {
            let mut u = Unit::begin(self, scope, request_id, format!("Append/{}", child.name)).await?;
            let method = format!("Append/{}", child.name);
            if let Some(prev) = u.replayed(request_id, &method).await? {
                let children = stored_many(child, &prev)?;
                let current = u.lock(parent, id).await?;
                return Ok((current, children));
            }
            // Appends to one parent are serialized here: numbers and
            // totals follow commit order.
            let current = u.lock(parent, id).await?;
            refuse_deleted(parent, &current)?;
            let mut out = Vec::with_capacity(prepared.len());
            for values in prepared {
                out.push(u.insert(child, values).await?);
            }
            let mut next = current.values.clone();
            let add = |next: &mut Vec<Value>, own: &str, by: i64| {
                let i = parent.index(own);
                let n = if let Value::Int(n) = next[i] { n } else { 0 };
                next[i] = Value::Int(n + by);
            };
            add(&mut next, tally.count, out.len() as i64);
            for (own, theirs) in tally.sums {
                let sum =
                    out.iter().map(|r| if let Value::Int(n) = r.get(child, theirs) { *n } else { 0 }).sum();
                add(&mut next, own, sum);
            }
            let after = u.write(parent, &current, next, Action::Update).await?;
            u.finish(|u| u.stored_list(child, &out)).await?;
            Ok((after, out))
        };
        run.await.map_err(|e| named(child, e))
    }

    /// Claims up to `limit` rows of `subset` (oldest first), moving each
    /// `field` to `to` through the declared transitions, in one
    /// transaction. Rows another claimer holds are skipped. The records
    /// come back in the BASIC view.
    #[allow(clippy::too_many_arguments)]
    pub async fn claim(
        &self,
        scope: &Scope,
        res: &'static Resource,
        subset: &'static Subset,
        field: &'static str,
        to: &'static str,
        limit: i32,
        request_id: &str,
    ) -> Result<Vec<Record>, Error> {
        if !res.subsets.iter().any(|s| std::ptr::eq(*s, subset)) {
            return Err(Error::Internal(format!("{} declares no subset {}", res.name, subset.name)));
        }
        let limit = match limit {
            n if n < 0 => return Err(Error::invalid("limit", "limit must not be negative")),
            0 => 1,
            n => n.min(MAX_CLAIM),
        };
        let run = async {
            let method = format!("Claim/{}", res.name);
            let mut u = Unit::begin(self, scope, request_id, method.clone()).await?;
            if let Some(prev) = u.replayed(request_id, &method).await? {
                return stored_many(res, &prev);
            }
            let rows = records::claim(u.tx(), scope.tenant, res, subset, i64::from(limit)).await?;
            let mut out = Vec::with_capacity(rows.len());
            for rec in rows {
                let mut next = rec.values.clone();
                next[res.index(field)] = Value::Text(to.to_owned());
                out.push(u.write(res, &rec, next, Action::Update).await?.basic(res));
            }
            let stored: Vec<serde_json::Value> = out.iter().map(|r| r.to_stored(res)).collect();
            u.finish(|_| serde_json::to_vec(&stored).expect("JSON serializes")).await?;
            Ok(out)
        };
        run.await.map_err(|e| named(res, e))
    }
}
