//! The write use cases and the unit they are built from. A [`Unit`] is one
//! tenant-scoped transaction of a use case: it checks and replays
//! `request_id`s, loads rows FOR UPDATE, inserts and writes records with
//! the resource's rules, transitions, parents, counters, sequences and
//! after-write hook, collects the audit events and the changed rows, and on
//! `commit` writes the events and the stored response together (one round
//! trip), commits, then tells the cache what changed. Custom use cases
//! (state machines, merges, appends) are a closure over a unit, not a copy
//! of `update`.

use std::collections::{HashMap, HashSet};

use tokio_postgres::types::ToSql;
use uuid::Uuid;

use super::{
    Changes, Draft, MAX_BATCH, Service, combine, named, normalize, not_found, parse_id, prefixed,
    validate_new,
};
use crate::{
    domain::{
        audit::{AUDIT_EVENT, Action},
        record::Record,
        schema::{Child, OnDelete, Resource},
        value::Value,
    },
    error::{Error, FieldViolation},
    store::{
        Scope, Tx,
        audit::{self, Event, Origin},
        content, idempotency, records,
    },
};

/// One write transaction of a use case.
pub struct Unit<'a> {
    svc: &'a Service,
    tx: Tx,
    scope: &'a Scope,
    request_id: &'a str,
    method: String,
    events: Vec<Event>,
    /// `(request_id, method, response)` to remember at commit.
    responses: Vec<(String, String, Vec<u8>)>,
    /// What the request ids locked when the unit began found (their lock
    /// and lookup go with BEGIN): `(method, stored response)`, by request id.
    found: HashMap<String, Option<(String, Vec<u8>)>>,
    changes: Changes,
    /// Id of the next version row, whose chunks an upload already wrote.
    staged: Option<Uuid>,
}

impl<'a> Unit<'a> {
    /// Opens the transaction of a call whose idempotency key is
    /// `(request_id, method)`; an empty `request_id` means none.
    pub async fn begin(
        svc: &'a Service,
        scope: &'a Scope,
        request_id: &'a str,
        method: String,
    ) -> Result<Unit<'a>, Error> {
        let own = [request_id];
        let rids: &[&str] = if request_id.is_empty() { &[] } else { &own };
        Unit::begin_locking(svc, scope, request_id, method, rids).await
    }

    /// [`Unit::begin`] that also locks and looks up `rids` (the request ids
    /// of the calls a combined unit serves), in the round trip of BEGIN:
    /// concurrent repeats of any of them wait here for the first to end.
    pub(super) async fn begin_locking(
        svc: &'a Service,
        scope: &'a Scope,
        request_id: &'a str,
        method: String,
        rids: &[&str],
    ) -> Result<Unit<'a>, Error> {
        let mut found = HashMap::with_capacity(rids.len());
        let tx = match rids {
            [] => svc.store.begin(scope).await?,
            [rid] => {
                let key = idempotency::lock_key(scope, rid)?;
                let (tx, rows) = svc
                    .store
                    .begin_with(
                        scope,
                        &[(idempotency::LOCK, &[&key]), (idempotency::LOOKUP, &[&scope.tenant, rid])],
                    )
                    .await?;
                found.insert((*rid).to_owned(), idempotency::found(rows.last()));
                tx
            }
            many => {
                // Sorted: units locking overlapping keys take them in one order.
                let mut keys =
                    many.iter().map(|r| idempotency::lock_key(scope, r)).collect::<Result<Vec<_>, _>>()?;
                keys.sort_unstable();
                keys.dedup();
                let (tx, rows) = svc
                    .store
                    .begin_with(
                        scope,
                        &[
                            (idempotency::LOCK_MANY, &[&keys]),
                            (idempotency::LOOKUP_MANY, &[&scope.tenant, &many]),
                        ],
                    )
                    .await?;
                found.extend(many.iter().map(|r| ((*r).to_owned(), None)));
                for row in rows.last().into_iter().flatten() {
                    found.insert(row.get(0), Some((row.get(1), row.get(2))));
                }
                tx
            }
        };
        Ok(Unit {
            svc,
            tx,
            scope,
            request_id,
            method,
            events: Vec::new(),
            responses: Vec::new(),
            found,
            changes: Changes::default(),
            staged: None,
        })
    }

    /// The transaction, for store calls of a hook or a custom use case.
    pub fn tx(&self) -> &Tx {
        &self.tx
    }

    pub fn scope(&self) -> &Scope {
        self.scope
    }

    /// The stored response of an earlier call with this key, if any (the key
    /// is locked until this transaction ends, so repeats wait for the first).
    /// Records it names by their audit event are read back from the event.
    pub async fn replayed(&self, request_id: &str, method: &str) -> Result<Option<serde_json::Value>, Error> {
        if request_id.is_empty() {
            return Ok(None);
        }
        // Remembered earlier in this transaction (a batch repeating an
        // item's request id): not in the table until commit.
        if let Some((_, used, bytes)) = self.responses.iter().find(|(r, _, _)| r == request_id) {
            if used != method {
                return Err(Error::invalid("request_id", format!("request_id was already used for {used}")));
            }
            return self.resolve(decode(bytes)?).await.map(Some);
        }
        let stored = match self.found.get(request_id) {
            Some(found) => idempotency::answer(found.clone(), method)?,
            None => idempotency::begin(&self.tx, self.scope, request_id, method).await?,
        };
        match stored {
            None => Ok(None),
            Some(bytes) => self.resolve(decode(&bytes)?).await.map(Some),
        }
    }

    /// A stored response with the fields of every record it names by its
    /// audit event (`{"revision", "event"}`, see [`Unit::stored_value`])
    /// filled in from the event's `after`: queued in this unit, or written.
    async fn resolve(&self, mut stored: serde_json::Value) -> Result<serde_json::Value, Error> {
        let items: Vec<&serde_json::Value> = match &stored {
            serde_json::Value::Array(list) => list.iter().collect(),
            one => vec![one],
        };
        let mut ids = Vec::new();
        for r in items {
            ids.extend(event_id(r)?);
        }
        if ids.is_empty() {
            return Ok(stored);
        }
        // A batch repeating an item's request id names one event twice.
        ids.sort_unstable();
        ids.dedup();
        let mut afters: HashMap<Uuid, serde_json::Value> = self
            .events
            .iter()
            .filter(|e| ids.binary_search(&e.id).is_ok())
            .filter_map(|e| e.after.clone().map(|a| (e.id, a)))
            .collect();
        if afters.len() < ids.len() {
            afters.extend(audit::afters(&self.tx, self.scope, &ids).await?);
        }
        let fill = |r: &mut serde_json::Value| -> Result<(), Error> {
            let Some(id) = event_id(r)? else { return Ok(()) };
            let after = afters.get(&id).cloned().ok_or_else(|| {
                Error::Internal(format!("the audit event {id} of a stored response is gone"))
            })?;
            if let serde_json::Value::Object(o) = r {
                o.remove("event");
                o.insert("fields".into(), after);
            }
            Ok(())
        };
        match &mut stored {
            serde_json::Value::Array(list) => list.iter_mut().try_for_each(fill)?,
            one => fill(one)?,
        }
        Ok(stored)
    }

    /// The call's own stored response, as one record of `res`.
    pub async fn replay_one(&self, res: &'static Resource) -> Result<Option<Record>, Error> {
        let (rid, method) = (self.request_id, self.method.clone());
        self.replay_as(res, rid, &method).await
    }

    async fn replay_as(
        &self,
        res: &'static Resource,
        rid: &str,
        method: &str,
    ) -> Result<Option<Record>, Error> {
        match self.replayed(rid, method).await? {
            None => Ok(None),
            Some(j) => Record::from_stored(res, &j)
                .map(Some)
                .ok_or_else(|| Error::Internal(format!("stored response is no {}", res.name))),
        }
    }

    /// Remembers the response `stored` builds for `(request_id, method)`
    /// at commit (built only when there is a request id).
    fn remember(&mut self, request_id: &str, method: &str, stored: impl FnOnce(&Self) -> Vec<u8>) {
        if !request_id.is_empty() {
            let bytes = stored(self);
            self.responses.push((request_id.to_owned(), method.to_owned(), bytes));
        }
    }

    /// `rec` in its stored form, serialized.
    fn stored(&self, res: &'static Resource, rec: &Record) -> Vec<u8> {
        let event = self.events.iter().rev().find(|e| e.entity == res.name && e.entity_id == rec.id());
        serde_json::to_vec(&self.stored_value(res, rec, event)).expect("JSON serializes")
    }

    /// Records in their stored form, as one list, serialized.
    pub(super) fn stored_list(&self, res: &'static Resource, recs: &[Record]) -> Vec<u8> {
        let last: HashMap<Uuid, &Event> =
            self.events.iter().filter(|e| e.entity == res.name).map(|e| (e.entity_id, e)).collect();
        let list: Vec<serde_json::Value> =
            recs.iter().map(|r| self.stored_value(res, r, last.get(&r.id()).copied())).collect();
        serde_json::to_vec(&list).expect("JSON serializes")
    }

    /// The stored form of `rec`, written by `event` of this unit if any:
    /// its revision and the event's id, whose `after` holds its fields
    /// (written in the same transaction, read back on a replay): the stored
    /// response is then ~60 bytes, not a second copy of the snapshot.
    /// Records with large fields (left out of snapshots), and those no
    /// event of this unit wrote, are stored whole (`Record::to_stored`).
    fn stored_value(&self, res: &'static Resource, rec: &Record, event: Option<&Event>) -> serde_json::Value {
        let whole = res.fields.iter().any(|f| f.large);
        match event {
            Some(e) if !whole && e.after.is_some() => {
                serde_json::json!({"revision": rec.revision, "event": e.id.to_string()})
            }
            _ => rec.to_stored(res),
        }
    }

    /// Loads a row FOR UPDATE (deleted or not); NOT_FOUND when absent.
    /// Resources declared `read_only` are written by their own code in the
    /// store (audit events, ingest runs), never through a unit.
    pub async fn lock(&self, res: &'static Resource, id: Uuid) -> Result<Record, Error> {
        writable(res)?;
        records::fetch(&self.tx, self.scope.tenant, res, id, true).await?.ok_or_else(|| not_found(res, id))
    }

    /// Queues an audit event and notes the changed row.
    pub fn audit(
        &mut self,
        res: &'static Resource,
        action: Action,
        before: Option<serde_json::Value>,
        after: &Record,
    ) {
        self.events.push(Event {
            id: Uuid::now_v7(),
            entity: res.name,
            entity_id: after.id(),
            action,
            before,
            after: Some(after.to_json(res)),
            origin: None,
        });
        self.changes.push(res, after.id());
    }

    /// Every parent named by `values` exists and is live in the tenant (and
    /// agrees with the record where declared): all of them, or those whose
    /// reference or agreement field is among `only` (the changed fields).
    async fn check_parents(
        &self,
        res: &'static Resource,
        values: &[Value],
        only: Option<&[usize]>,
    ) -> Result<(), Error> {
        for p in res.parents {
            let i = res.index(p.field);
            let agree = p.agrees.map(|(own, theirs)| (theirs, &values[res.index(own)]));
            let touched = |j: usize| only.is_none_or(|o| o.contains(&j));
            if !touched(i) && !p.agrees.is_some_and(|(own, _)| touched(res.index(own))) {
                continue;
            }
            if let Value::Uuid(id) = values[i]
                && !records::exists(&self.tx, self.scope.tenant, p.resource, id, agree).await?
            {
                let message = match p.agrees {
                    Some((own, theirs))
                        if records::exists(&self.tx, self.scope.tenant, p.resource, id, None).await? =>
                    {
                        format!(
                            "{}: {} '{id}' has another {theirs} than this {}'s {own}",
                            p.field, p.resource.name, res.name
                        )
                    }
                    _ => format!("{}: {} '{id}' does not exist", p.field, p.resource.name),
                };
                return Err(Error::FailedPrecondition { reason: "REFERENCE_NOT_FOUND", message });
            }
        }
        Ok(())
    }

    /// An undelete needs the parents that delete with it (CASCADE or
    /// RESTRICT relations; not KEEP) to be live.
    async fn refuse_deleted_parents(&self, res: &'static Resource, rec: &Record) -> Result<(), Error> {
        for p in res.parents {
            let follows = p.resource.children.iter().any(|c| {
                std::ptr::eq(c.resource, res)
                    && c.column == res.fields[res.index(p.field)].column
                    && c.on_delete != OnDelete::Keep
            });
            if let Value::Uuid(id) = rec.values[res.index(p.field)]
                && follows
                && !records::exists(&self.tx, self.scope.tenant, p.resource, id, None).await?
            {
                return Err(Error::FailedPrecondition {
                    reason: "PARENT_DELETED",
                    message: format!("{}: {} '{id}' is deleted; undelete it first", p.field, p.resource.name),
                });
            }
        }
        Ok(())
    }

    async fn after_write(
        &self,
        res: &'static Resource,
        before: Option<&Record>,
        after: &Record,
    ) -> Result<(), Error> {
        match self.svc.hook(res) {
            Some(h) => h.after_write(self, before, after).await,
            None => Ok(()),
        }
    }

    /// Inserts a validated new record: parents live, counter at 1, the next
    /// number of its sequence, the hook, a CREATE event.
    pub async fn insert(&mut self, res: &'static Resource, mut values: Vec<Value>) -> Result<Record, Error> {
        writable(res)?;
        self.check_parents(res, &values, None).await?;
        if let Some(c) = res.counter {
            values[res.index(c.field)] = Value::Int(1);
        }
        if let Some(o) = res.owner {
            values[res.index(o)] = Value::Text(self.scope.actor.clone());
        }
        if let Some(seq) = res.sequence {
            let parent = values[res.index(seq.parent)].clone();
            let n = records::next_in_sequence(&self.tx, self.scope.tenant, res, seq, &parent).await?;
            values[res.index(seq.field)] = Value::Int(n);
        }
        let rec = records::insert(&self.tx, self.scope.tenant, res, Uuid::now_v7(), &values).await?;
        self.record_version(res, &rec).await?;
        self.after_write(res, None, &rec).await?;
        self.audit(res, Action::Create, None, &rec);
        Ok(rec)
    }

    /// Inserts validated new records set-based: the parents checked (and
    /// locked) with one statement per declared parent, the rows with one
    /// COPY and one INSERT ... SELECT, one CREATE event each (written with
    /// the others at commit). Resources whose insert needs per-row work (a
    /// sequence number, a version row, a hook, a parent that must agree)
    /// go row by row through [`Unit::insert`]. `field(i)` names row `i` in
    /// errors (`requests[3].job`). Returns the records in order.
    pub async fn insert_many(
        &mut self,
        res: &'static Resource,
        mut rows: Vec<Vec<Value>>,
        field: impl Fn(usize) -> String,
    ) -> Result<Vec<Record>, Error> {
        writable(res)?;
        if per_row(self.svc, res) {
            let mut out = Vec::with_capacity(rows.len());
            for values in rows {
                out.push(self.insert(res, values).await?);
            }
            return Ok(out);
        }
        for values in &mut rows {
            if let Some(c) = res.counter {
                values[res.index(c.field)] = Value::Int(1);
            }
            if let Some(o) = res.owner {
                values[res.index(o)] = Value::Text(self.scope.actor.clone());
            }
        }
        for p in res.parents {
            let i = res.index(p.field);
            let mut ids: Vec<Uuid> = rows
                .iter()
                .filter_map(|v| if let Value::Uuid(id) = v[i] { Some(id) } else { None })
                .collect();
            ids.sort_unstable();
            ids.dedup();
            if ids.is_empty() {
                continue;
            }
            let live: HashSet<Uuid> = records::live_ids(&self.tx, self.scope.tenant, p.resource, &ids, true)
                .await?
                .into_iter()
                .collect();
            if let Some((n, id)) = rows.iter().enumerate().find_map(|(n, v)| match v[i] {
                Value::Uuid(id) if !live.contains(&id) => Some((n, id)),
                _ => None,
            }) {
                return Err(Error::FailedPrecondition {
                    reason: "REFERENCE_NOT_FOUND",
                    message: format!("{}.{}: {} '{id}' does not exist", field(n), p.field, p.resource.name),
                });
            }
        }
        let ids: Vec<Uuid> = rows.iter().map(|_| Uuid::now_v7()).collect();
        let recs = records::insert_many(&self.tx, self.scope.tenant, res, &ids, &rows).await?;
        for rec in &recs {
            self.audit(res, Action::Create, None, rec);
        }
        Ok(recs)
    }

    /// Creates `items` (validated values and each item's own request id;
    /// `origins[i]`, when given, the call whose events item `i`'s are): an
    /// item whose request id was used before answers as then, one repeating
    /// the request id of an earlier item answers as that item, the others
    /// are inserted together ([`Unit::insert_many`]) and their responses
    /// remembered. `field(i)` names item `i` in errors. Returns a record per
    /// item, in order.
    pub(super) async fn create_items(
        &mut self,
        res: &'static Resource,
        items: Vec<(Vec<Value>, String)>,
        origins: Option<Vec<Origin>>,
        field: impl Fn(usize) -> String,
    ) -> Result<Vec<Record>, Error> {
        let item_method = format!("Create/{}", res.name);
        let mut out: Vec<Option<Record>> = Vec::with_capacity(items.len());
        let (mut rows, mut slots, mut rids) = (Vec::new(), Vec::new(), Vec::new());
        let mut row_of_rid: HashMap<String, usize> = HashMap::new();
        let mut repeats = Vec::new();
        for (i, (values, rid)) in items.into_iter().enumerate() {
            out.push(None);
            if !rid.is_empty() {
                if let Some(&row) = row_of_rid.get(&rid) {
                    repeats.push((i, row));
                    continue;
                }
                if let Some(prev) = self.replay_as(res, &rid, &item_method).await? {
                    out[i] = Some(prev);
                    continue;
                }
                row_of_rid.insert(rid.clone(), rows.len());
            }
            rows.push(values);
            slots.push(i);
            rids.push(rid);
        }
        let first = self.events.len();
        let inserted = self.insert_many(res, rows, |n| field(slots[n])).await?;
        if let Some(origins) = &origins {
            let slot_of: HashMap<Uuid, usize> =
                inserted.iter().zip(&slots).map(|(r, &i)| (r.id(), i)).collect();
            for e in &mut self.events[first..] {
                if let Some(&i) = slot_of.get(&e.entity_id) {
                    e.origin = Some(origins[i].clone());
                }
            }
        }
        for (n, rec) in inserted.iter().enumerate() {
            self.remember(&rids[n], &item_method, |u| u.stored(res, rec));
            out[slots[n]] = Some(rec.clone());
        }
        for (i, row) in repeats {
            out[i] = Some(inserted[row].clone());
        }
        Ok(out.into_iter().map(|r| r.expect("every item answered")).collect())
    }

    /// The next version row of a versioned resource will be `id`, whose
    /// chunks the caller wrote in this transaction (an upload).
    pub fn stage_version(&mut self, id: Uuid) {
        self.staged = Some(id);
    }

    /// Whether the staged version was written (the write moved the counter).
    pub fn version_written(&self) -> bool {
        self.staged.is_none()
    }

    /// Appends the version row of `rec`'s current content (its counter's
    /// number, type, size, digest; the caller as author) and, unless an
    /// upload staged them, its chunks from the inline text.
    async fn record_version(&mut self, res: &'static Resource, rec: &Record) -> Result<(), Error> {
        let (Some(v), Some(counter)) = (res.versions, res.counter) else {
            return Ok(());
        };
        let vres = v.resource;
        let staged = self.staged.take();
        let version_id = staged.unwrap_or_else(Uuid::now_v7);
        let mut values = vec![Value::Null; vres.fields.len()];
        values[vres.index(v.parent)] = Value::Uuid(rec.id());
        for f in [counter.field, v.content_type, v.size, v.sha256] {
            values[vres.index(f)] = rec.get(res, f).clone();
        }
        values[vres.index(v.author)] = Value::Text(self.scope.actor.clone());
        records::insert(&self.tx, self.scope.tenant, vres, version_id, &values).await?;
        if staged.is_none()
            && let Value::Text(text) = rec.get(res, v.content)
        {
            for (seq, chunk) in text.as_bytes().chunks(content::CHUNK_BYTES).enumerate() {
                content::put_chunk(&self.tx, self.scope.tenant, v, version_id, seq as i32, chunk).await?;
            }
        }
        self.changes.queries.push(vres);
        Ok(())
    }

    /// Writes `next` over `before` (a row locked by [`Unit::lock`]): rules
    /// (seeing both), declared transitions, the counter, parents of changed
    /// references, the hook, an event. Nothing changed: nothing is written
    /// and `before` is returned.
    pub async fn write(
        &mut self,
        res: &'static Resource,
        before: &Record,
        mut next: Vec<Value>,
        action: Action,
    ) -> Result<Record, Error> {
        normalize(res, &mut next, Some(&before.values)).map_err(|e| prefixed(res.name, e))?;
        check_transitions(res, &before.values, &next)?;
        let mut bumped = false;
        if let Some(c) = res.counter {
            let i = res.index(c.field);
            bumped = c.bumps_on.iter().any(|f| {
                let j = res.index(f);
                next[j] != before.values[j]
            });
            let n = match before.values[i] {
                Value::Int(n) => n,
                _ => 0,
            };
            next[i] = Value::Int(if bumped { n + 1 } else { n });
        }
        let changed: Vec<usize> = (0..next.len()).filter(|&i| next[i] != before.values[i]).collect();
        if changed.is_empty() {
            return Ok(before.clone());
        }
        self.check_parents(res, &next, Some(&changed)).await?;
        let rec = records::update(&self.tx, self.scope.tenant, res, before.id(), &next, &changed).await?;
        if bumped {
            self.record_version(res, &rec).await?;
        }
        self.after_write(res, Some(before), &rec).await?;
        self.audit(res, action, Some(before.to_json(res)), &rec);
        Ok(rec)
    }

    /// Soft-deletes or restores a locked row and follows its relations:
    /// RESTRICT children refuse a delete unless it is `force`d, CASCADE
    /// (and forced RESTRICT) children go with it at the same delete_time,
    /// and come back with it; KEEP children stay as they are.
    pub async fn set_deleted(
        &mut self,
        res: &'static Resource,
        current: &Record,
        deleted: bool,
        force: bool,
    ) -> Result<Record, Error> {
        let id = current.id();
        if deleted && !force {
            for c in res.children.iter().filter(|c| c.on_delete == OnDelete::Restrict) {
                let n =
                    records::count_children(&self.tx, self.scope.tenant, c.resource, c.column, id).await?;
                if n > 0 {
                    return Err(Error::FailedPrecondition {
                        reason: "HAS_CHILDREN",
                        message: format!(
                            "{} '{id}' has {n} live {}(s); delete or move them first, or delete with force",
                            res.name, c.resource.name
                        ),
                    });
                }
            }
        }
        let rec = records::set_deleted(&self.tx, self.scope.tenant, res, id, deleted).await?;
        let action = if deleted { Action::Delete } else { Action::Undelete };
        let delete_time = res.index("delete_time");
        let stamp = if deleted { &rec.values[delete_time] } else { &current.values[delete_time] };
        // Restoring follows RESTRICT children too: only rows a forced delete
        // took (those deleted at the parent's very delete_time) come back.
        let follows = |c: &&Child| {
            c.on_delete == OnDelete::Cascade || (c.on_delete == OnDelete::Restrict && (force || !deleted))
        };
        for c in res.children.iter().filter(follows) {
            for (before, after) in records::cascade_deleted(
                &self.tx,
                self.scope.tenant,
                c.resource,
                c.column,
                id,
                stamp,
                deleted,
            )
            .await?
            {
                self.audit(c.resource, action, Some(before), &after);
            }
        }
        self.after_write(res, Some(current), &rec).await?;
        self.audit(res, action, Some(current.to_json(res)), &rec);
        Ok(rec)
    }

    /// Points every child of `from` (each declared child relation) at
    /// `into`; returns the ids moved per child resource.
    pub async fn reassign_children(
        &mut self,
        res: &'static Resource,
        from: Uuid,
        into: Uuid,
    ) -> Result<Vec<(&'static Resource, Vec<Uuid>)>, Error> {
        let mut moved = Vec::new();
        for c in res.children {
            let mut ids = Vec::new();
            for (before, after) in
                records::reassign(&self.tx, self.scope.tenant, c.resource, c.column, from, into).await?
            {
                ids.push(after.id());
                self.audit(c.resource, Action::Update, Some(before), &after);
            }
            moved.push((c.resource, ids));
        }
        Ok(moved)
    }

    /// Adds `key: details` to the `after` of the last queued event of
    /// `(res, id)` (e.g. what a merge moved).
    pub fn annotate_last(&mut self, res: &'static Resource, id: Uuid, key: &str, details: serde_json::Value) {
        if let Some(serde_json::Value::Object(after)) = self
            .events
            .iter_mut()
            .rev()
            .find(|e| e.entity == res.name && e.entity_id == id)
            .and_then(|e| e.after.as_mut())
        {
            after.insert(key.to_owned(), details);
        }
    }

    /// Writes the events and the stored responses and commits, in one
    /// round trip; then reports the changes to the cache.
    pub(super) async fn finish(mut self, response: impl FnOnce(&Self) -> Vec<u8>) -> Result<(), Error> {
        let (rid, method) = (self.request_id, std::mem::take(&mut self.method));
        self.remember(rid, &method, response);
        let Unit { tx, scope, events, mut responses, mut changes, svc, .. } = self;
        if responses.len() > 1 {
            // One statement for all: a request id remembered twice (a batch's
            // own and an item's) keeps its last response, as in order.
            let mut seen = HashSet::with_capacity(responses.len());
            responses.reverse();
            responses.retain(|(rid, _, _)| seen.insert(rid.clone()));
            responses.reverse();
        }
        let mut owned = Vec::with_capacity(2);
        owned.extend(audit::statement(scope, &events));
        match responses.as_slice() {
            [] => {}
            [(rid, method, bytes)] => owned.push(idempotency::store(scope, rid, method, bytes)),
            many => owned.push(idempotency::store_many(scope, many)),
        }
        let params: Vec<Vec<&(dyn ToSql + Sync)>> = owned.iter().map(|(_, p)| audit::refs(p)).collect();
        let statements: Vec<(&str, &[&(dyn ToSql + Sync)])> =
            owned.iter().zip(&params).map(|((sql, _), p)| (*sql, p.as_slice())).collect();
        tx.commit_with(&statements).await?;
        if let Some(c) = &svc.cache {
            if !events.is_empty() {
                // Audit events are new rows of their own resource: lists of them are stale.
                changes.queries.push(&AUDIT_EVENT);
            }
            if !changes.is_empty() {
                c.invalidate(scope, &changes).await;
            }
        }
        Ok(())
    }

    /// Commits a unit that remembers no response (no request id).
    pub async fn commit_none(self) -> Result<(), Error> {
        self.finish(|_| Vec::new()).await
    }

    /// Commits with `rec` as the call's stored response.
    pub async fn commit_one(self, res: &'static Resource, rec: &Record) -> Result<(), Error> {
        self.finish(|u| u.stored(res, rec)).await
    }
}

/// Whether inserting `res` needs per-row work (a sequence number, a version
/// row, a hook, a parent that must agree), so many rows go one by one.
fn per_row(svc: &Service, res: &'static Resource) -> bool {
    res.sequence.is_some()
        || res.versions.is_some()
        || svc.hook(res).is_some()
        || res.parents.iter().any(|p| p.agrees.is_some())
}

fn writable(res: &'static Resource) -> Result<(), Error> {
    if res.read_only {
        return Err(Error::Internal(format!("{} is written by the service only", res.name)));
    }
    Ok(())
}

/// Checks every declared transition of `res` between two versions.
fn check_transitions(res: &'static Resource, before: &[Value], after: &[Value]) -> Result<(), Error> {
    for t in res.transitions {
        let i = res.index(t.field);
        if let (Value::Text(from), Value::Text(to)) = (&before[i], &after[i])
            && from != to
        {
            let allowed = t.allowed(from);
            if !allowed.contains(&to.as_str()) {
                return Err(Error::IllegalTransition {
                    entity: res.name,
                    field: t.field,
                    from: from.clone(),
                    to: to.clone(),
                    allowed,
                });
            }
        }
    }
    Ok(())
}

pub(super) fn refuse_deleted(res: &'static Resource, rec: &Record) -> Result<(), Error> {
    if rec.is_deleted(res) {
        return Err(Error::FailedPrecondition {
            reason: "RESOURCE_DELETED",
            message: format!("{} '{}' is deleted; undelete it first", res.name, rec.id()),
        });
    }
    Ok(())
}

/// Only the owner of an owned record (or an admin) may delete or restore it.
fn refuse_not_owner(res: &'static Resource, scope: &Scope, rec: &Record) -> Result<(), Error> {
    if let Some(o) = res.owner
        && !scope.admin
        && !matches!(rec.get(res, o), Value::Text(owner) if *owner == scope.actor)
    {
        return Err(Error::PermissionDenied {
            reason: "NOT_OWNER",
            message: format!("only the owner of this {} or an admin may do this", res.name),
        });
    }
    Ok(())
}

pub(super) fn check_etag(res: &'static Resource, given: &str, current: &Record) -> Result<(), Error> {
    if !given.is_empty() && given != current.etag() {
        return Err(Error::Aborted {
            reason: "ETAG_MISMATCH",
            message: format!("the {} was modified since it was read (etag {given} is stale)", res.name),
        });
    }
    Ok(())
}

/// Field-table indexes to write: the mask's paths, or every field the
/// caller set when the mask is empty.
fn mask_indexes(res: &'static Resource, paths: &[String], set: &[bool]) -> Result<Vec<usize>, Error> {
    if paths.is_empty() {
        return Ok((0..res.fields.len())
            .filter(|&i| set.get(i) == Some(&true) && res.fields[i].mutable)
            .collect());
    }
    let mut out = Vec::with_capacity(paths.len());
    let mut errs = Vec::new();
    for p in paths {
        match res.index_of(p) {
            Some(i) if res.fields[i].mutable => {
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

/// One creation of a batch: the record and its own optional request id.
pub struct BatchItem {
    pub draft: Option<(Draft, Vec<FieldViolation>)>,
    pub request_id: String,
}

/// The write-side arguments of an update.
pub struct UpdateArgs<'a> {
    pub id: &'a str,
    pub draft: Draft,
    /// Violations found while converting the caller's message.
    pub conversion: Vec<FieldViolation>,
    pub mask: &'a [String],
    pub etag: &'a str,
    pub request_id: &'a str,
}

impl Service {
    /// Creates one record (AIP-133).
    pub async fn create(
        &self,
        scope: &Scope,
        res: &'static Resource,
        draft: Option<(Draft, Vec<FieldViolation>)>,
        request_id: &str,
    ) -> Result<Record, Error> {
        let (draft, conversion) =
            draft.ok_or_else(|| Error::invalid(res.name, format!("{} is required", res.name)))?;
        let values = validate_new(res, draft, conversion).map_err(|e| prefixed(res.name, e))?;
        if self.combinable(res) {
            return combine::create(self, scope, res, values, request_id).await;
        }
        self.create_one(scope, res, values, request_id).await
    }

    /// Creates one validated record in a unit of its own.
    pub(super) async fn create_one(
        &self,
        scope: &Scope,
        res: &'static Resource,
        values: Vec<Value>,
        request_id: &str,
    ) -> Result<Record, Error> {
        let run = async {
            let mut u = Unit::begin(self, scope, request_id, format!("Create/{}", res.name)).await?;
            if let Some(prev) = u.replay_one(res).await? {
                return Ok(prev);
            }
            let rec = u.insert(res, values).await?;
            u.commit_one(res, &rec).await?;
            Ok(rec)
        };
        run.await.map_err(|e| named(res, e))
    }

    /// Creates the validated records of several concurrent calls of one
    /// tenant and actor (`calls[i]`: values, request id, the call's event
    /// origin) in one unit: their request ids locked and looked up with
    /// BEGIN, the rows inserted set-based, every event naming its own call.
    /// All or nothing; the combiner runs each call alone when this fails.
    pub(super) async fn create_combined(
        &self,
        scope: &Scope,
        res: &'static Resource,
        calls: Vec<(Vec<Value>, String, Origin)>,
    ) -> Result<Vec<Record>, Error> {
        let rids: Vec<&str> = calls.iter().map(|c| c.1.as_str()).filter(|r| !r.is_empty()).collect();
        let mut u = Unit::begin_locking(self, scope, "", format!("Create/{}", res.name), &rids).await?;
        let (items, origins) = calls.into_iter().map(|(v, rid, o)| ((v, rid), o)).unzip();
        let recs = u.create_items(res, items, Some(origins), |_| res.name.to_owned()).await?;
        u.commit_none().await?;
        Ok(recs)
    }

    /// Whether concurrent creations of `res` may share a unit: its rows are
    /// inserted set-based (no per-row sequence, version, hook or agreeing
    /// parent; [`Unit::insert_many`]).
    fn combinable(&self, res: &'static Resource) -> bool {
        !res.read_only && !per_row(self, res)
    }

    /// Creates all or nothing, in one transaction (AIP-233); each item may
    /// carry its own request id.
    pub async fn batch_create(
        &self,
        scope: &Scope,
        res: &'static Resource,
        items: Vec<BatchItem>,
        request_id: &str,
    ) -> Result<Vec<Record>, Error> {
        if items.is_empty() {
            return Err(Error::invalid("requests", "at least one request is needed"));
        }
        if items.len() > MAX_BATCH {
            return Err(Error::invalid("requests", format!("at most {MAX_BATCH} requests per batch")));
        }
        let mut violations = Vec::new();
        let mut prepared = Vec::with_capacity(items.len());
        for (i, item) in items.into_iter().enumerate() {
            let field = format!("requests[{i}].{}", res.name);
            match item.draft {
                None => violations.push(FieldViolation::new(&field, format!("{} is required", res.name))),
                Some((draft, conversion)) => match validate_new(res, draft, conversion) {
                    Ok(v) => prepared.push((v, item.request_id)),
                    Err(errs) => violations.extend(
                        errs.into_iter()
                            .map(|v| FieldViolation::new(format!("{field}.{}", v.field), v.description)),
                    ),
                },
            }
        }
        if !violations.is_empty() {
            return Err(Error::InvalidArgument(violations));
        }
        // The batch's own request id and every item's, locked in one sorted
        // order with BEGIN (as a combined unit takes them: no deadlock).
        let rids: Vec<String> = std::iter::once(request_id)
            .chain(prepared.iter().map(|(_, rid)| rid.as_str()))
            .filter(|r| !r.is_empty())
            .map(str::to_owned)
            .collect();
        let run = async {
            let method = format!("BatchCreate/{}", res.name);
            let rids: Vec<&str> = rids.iter().map(String::as_str).collect();
            let mut u = Unit::begin_locking(self, scope, request_id, method, &rids).await?;
            if let Some(prev) = u.replayed(request_id, &u.method.clone()).await? {
                return stored_many(res, &prev);
            }
            let out = u.create_items(res, prepared, None, |i| format!("requests[{i}].{}", res.name)).await?;
            u.finish(|u| u.stored_list(res, &out)).await?;
            Ok(out)
        };
        run.await.map_err(|e| named(res, e))
    }

    /// Updates the masked fields (AIP-134), with an optional etag (AIP-154).
    pub async fn update(
        &self,
        scope: &Scope,
        res: &'static Resource,
        args: UpdateArgs<'_>,
    ) -> Result<Record, Error> {
        let id = parse_id(&format!("{}.id", res.name), args.id)?;
        if !args.conversion.is_empty() {
            return Err(prefixed(res.name, args.conversion));
        }
        let indexes = mask_indexes(res, args.mask, &args.draft.set)?;
        let incoming = args.draft.values;
        self.mutate(scope, res, id, args.etag, args.request_id, "Update", move |current| {
            let mut next = current.values.clone();
            for &i in &indexes {
                next[i] = incoming[i].clone();
            }
            Ok(next)
        })
        .await
    }

    /// Loads the live record FOR UPDATE, checks the etag, lets `next`
    /// compute the record to write from it, and writes it (rules and
    /// transitions see both), audited, idempotent by `request_id`, in one
    /// transaction. `verb` names the method (`Update`, `Approve`…).
    #[allow(clippy::too_many_arguments)]
    pub async fn mutate(
        &self,
        scope: &Scope,
        res: &'static Resource,
        id: Uuid,
        etag: &str,
        request_id: &str,
        verb: &str,
        next: impl FnOnce(&Record) -> Result<Vec<Value>, Error>,
    ) -> Result<Record, Error> {
        let run = async {
            let mut u = Unit::begin(self, scope, request_id, format!("{verb}/{}", res.name)).await?;
            if let Some(prev) = u.replay_one(res).await? {
                return Ok(prev);
            }
            let current = u.lock(res, id).await?;
            refuse_merged(res, &current)?;
            refuse_deleted(res, &current)?;
            check_etag(res, etag, &current)?;
            let values = next(&current)?;
            let rec = u.write(res, &current, values, Action::Update).await?;
            u.commit_one(res, &rec).await?;
            Ok(rec)
        };
        run.await.map_err(|e| named(res, e))
    }

    /// Soft delete (`deleted = true`, with an optional etag; `force` takes
    /// RESTRICT children along) or undelete (AIP-164).
    #[allow(clippy::too_many_arguments)]
    pub async fn set_deleted(
        &self,
        scope: &Scope,
        res: &'static Resource,
        id: &str,
        etag: &str,
        deleted: bool,
        force: bool,
        request_id: &str,
    ) -> Result<Record, Error> {
        let id = parse_id("id", id)?;
        let verb = if deleted { "Delete" } else { "Undelete" };
        let run = async {
            let mut u = Unit::begin(self, scope, request_id, format!("{verb}/{}", res.name)).await?;
            if let Some(prev) = u.replay_one(res).await? {
                return Ok(prev);
            }
            let current = u.lock(res, id).await?;
            refuse_not_owner(res, scope, &current)?;
            let is_deleted = current.is_deleted(res);
            if deleted && is_deleted {
                return Err(not_found(res, id));
            }
            if !deleted && !is_deleted {
                return Err(Error::FailedPrecondition {
                    reason: "NOT_DELETED",
                    message: format!("{} '{id}' is not deleted", res.name),
                });
            }
            if !deleted {
                refuse_merged(res, &current)?;
                u.refuse_deleted_parents(res, &current).await?;
            }
            check_etag(res, etag, &current)?;
            let rec = u.set_deleted(res, &current, deleted, force).await?;
            u.commit_one(res, &rec).await?;
            Ok(rec)
        };
        run.await.map_err(|e| named(res, e))
    }

    /// Merges `sources` into `target` (live records of a resource that
    /// declares a [`MergeSpec`](crate::domain::schema::MergeSpec)), in one
    /// transaction: every child of a source is reassigned to the target,
    /// the sources name the target as their master and are soft-deleted,
    /// the target's declared arrays are unioned and its JSON objects merged
    /// (the target's keys win). One MERGE event, on the target, lists the
    /// sources and every row moved.
    ///
    /// Rows are read, then locked in id order (two merges cannot deadlock);
    /// a row that changed in between (a concurrent merge or update) makes
    /// the call ABORTED, to be retried.
    pub async fn merge(
        &self,
        scope: &Scope,
        res: &'static Resource,
        target: &str,
        sources: &[String],
        request_id: &str,
    ) -> Result<Record, Error> {
        let spec = res.merge.ok_or_else(|| Error::Internal(format!("{} cannot be merged", res.name)))?;
        let into = parse_id("target_id", target)?;
        if sources.is_empty() {
            return Err(Error::invalid("source_ids", "at least one source is needed"));
        }
        if sources.len() > MAX_MERGE {
            return Err(Error::invalid("source_ids", format!("at most {MAX_MERGE} sources per merge")));
        }
        let mut from = Vec::with_capacity(sources.len());
        for (i, s) in sources.iter().enumerate() {
            let id = parse_id(&format!("source_ids[{i}]"), s)?;
            if id == into {
                return Err(Error::invalid(
                    format!("source_ids[{i}]"),
                    "a record cannot be merged into itself",
                ));
            }
            if from.contains(&id) {
                return Err(Error::invalid(format!("source_ids[{i}]"), "source named twice"));
            }
            from.push(id);
        }
        let run = async {
            let mut u = Unit::begin(self, scope, request_id, format!("Merge/{}", res.name)).await?;
            if let Some(prev) = u.replay_one(res).await? {
                return Ok(prev);
            }
            let mut ids: Vec<Uuid> = from.iter().copied().chain([into]).collect();
            let seen = records::fetch_many(&u.tx, scope.tenant, res, &ids, records::View::Full).await?;
            ids.sort();
            let mut locked = Vec::with_capacity(ids.len());
            for id in &ids {
                let rec = u.lock(res, *id).await?;
                if seen.iter().find(|r| r.id() == *id).is_some_and(|r| r.revision != rec.revision) {
                    return Err(Error::Aborted {
                        reason: "CONCURRENCY_CONFLICT",
                        message: format!("{} '{id}' changed during the merge; retry", res.name),
                    });
                }
                locked.push(rec);
            }
            let take = |id: Uuid| locked.iter().find(|r| r.id() == id).cloned().expect("locked");
            let survivor = take(into);
            refuse_merged(res, &survivor)?;
            refuse_deleted(res, &survivor)?;
            let merged: Vec<Record> = from.iter().map(|id| take(*id)).collect();
            for m in &merged {
                refuse_merged(res, m)?;
                refuse_deleted(res, m)?;
            }
            let mut moved = serde_json::Map::new();
            for m in &merged {
                for (child, ids) in u.reassign_children(res, m.id(), into).await? {
                    let list = moved.entry(child.name).or_insert_with(|| serde_json::json!([]));
                    list.as_array_mut()
                        .expect("list")
                        .extend(ids.iter().map(|id| serde_json::json!(id.to_string())));
                }
                // Deleted first: a record naming a master is a deleted one.
                let mut gone = records::set_deleted(&u.tx, scope.tenant, res, m.id(), true).await?;
                let master = res.index(spec.master);
                gone.values[master] = Value::Uuid(into);
                let rec = records::update(&u.tx, scope.tenant, res, m.id(), &gone.values, &[master]).await?;
                u.audit(res, Action::Delete, Some(m.to_json(res)), &rec);
            }
            let next = combine(res, spec, &survivor, &merged);
            let mut rec = u.write(res, &survivor, next, Action::Merge).await?;
            if rec.revision == survivor.revision {
                // Nothing of the target changed: the merge still gets its event.
                rec = records::update(&u.tx, scope.tenant, res, into, &survivor.values, &[]).await?;
                u.audit(res, Action::Merge, Some(survivor.to_json(res)), &rec);
            }
            let details = serde_json::json!({
                "source_ids": from.iter().map(|id| id.to_string()).collect::<Vec<_>>(),
                "moved": moved,
            });
            u.annotate_last(res, into, "merge", details);
            u.commit_one(res, &rec).await?;
            Ok(rec)
        };
        run.await.map_err(|e| named(res, e))
    }
}

/// Most sources of one merge.
pub const MAX_MERGE: usize = 100;

/// The survivor's values after a merge: declared arrays unioned (its own
/// entries first, then each source's new ones, in order), declared objects
/// merged with its own keys winning.
fn combine(
    res: &'static Resource,
    spec: &crate::domain::schema::MergeSpec,
    survivor: &Record,
    merged: &[Record],
) -> Vec<Value> {
    let mut next = survivor.values.clone();
    for f in spec.union {
        let i = res.index(f);
        for m in merged {
            match (&mut next[i], &m.values[i]) {
                (Value::TextArray(mine), Value::TextArray(theirs)) => {
                    for t in theirs {
                        if !mine.contains(t) {
                            mine.push(t.clone());
                        }
                    }
                }
                (
                    Value::Json(serde_json::Value::Array(mine)),
                    Value::Json(serde_json::Value::Array(theirs)),
                ) => {
                    for t in theirs {
                        if !mine.contains(t) {
                            mine.push(t.clone());
                        }
                    }
                }
                (mine @ Value::Null, theirs) => *mine = theirs.clone(),
                _ => {}
            }
        }
    }
    for f in spec.combine {
        let i = res.index(f);
        for m in merged {
            match (&mut next[i], &m.values[i]) {
                (
                    Value::Json(serde_json::Value::Object(mine)),
                    Value::Json(serde_json::Value::Object(theirs)),
                ) => {
                    for (k, v) in theirs {
                        mine.entry(k.clone()).or_insert_with(|| v.clone());
                    }
                }
                (mine @ Value::Null, theirs) => *mine = theirs.clone(),
                _ => {}
            }
        }
    }
    next
}

/// A record merged into another is gone for good: it cannot take part in a
/// merge again, nor be undeleted.
fn refuse_merged(res: &'static Resource, rec: &Record) -> Result<(), Error> {
    if let Some(spec) = res.merge
        && let Value::Uuid(master) = rec.get(res, spec.master)
    {
        return Err(Error::FailedPrecondition {
            reason: "ALREADY_MERGED",
            message: format!("{} '{}' was merged into '{master}'", res.name, rec.id()),
        });
    }
    Ok(())
}

/// The audit event a stored record names (`{"revision", "event"}`), if any.
fn event_id(r: &serde_json::Value) -> Result<Option<Uuid>, Error> {
    match r.get("event").and_then(|e| e.as_str()) {
        None => Ok(None),
        Some(e) => {
            e.parse().map(Some).map_err(|_| Error::Internal(format!("stored response names event {e:?}")))
        }
    }
}

/// A stored response's bytes.
fn decode(bytes: &[u8]) -> Result<serde_json::Value, Error> {
    serde_json::from_slice(bytes).map_err(|e| Error::Internal(format!("stored response undecodable: {e}")))
}

/// A stored batch response: the records, in order.
pub(super) fn stored_many(res: &'static Resource, j: &serde_json::Value) -> Result<Vec<Record>, Error> {
    j.as_array()
        .and_then(|a| a.iter().map(|r| Record::from_stored(res, r)).collect::<Option<Vec<_>>>())
        .ok_or_else(|| Error::Internal(format!("stored response is no list of {}", res.name)))
}
