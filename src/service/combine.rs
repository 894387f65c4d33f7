//! Concurrent creations combined into one transaction.
//!
//! A creation costs PostgreSQL eight statements (BEGIN, the scope, the
//! request id's lock and lookup, the INSERT, the audit event, the stored
//! response, COMMIT) around one row. When calls of one tenant and actor
//! create records of one resource faster than they commit, the ones that
//! arrive while [`LANES`] units of that key are running wait, and the next
//! free lane takes all that wait (at most [`MAX_GROUP`]) into one unit
//! ([`Service::create_combined`]): every request id locked (in sorted
//! order) and looked up with BEGIN, the rows inserted set-based, one
//! statement for all audit events (each naming its own call's request and
//! trace ids), one for all stored responses, one COMMIT. A call that finds
//! a lane free runs alone, as before, so an unloaded server adds no wait.
//!
//! Every call keeps its guarantees: its row, its audit event and its stored
//! response commit together (with the others'), a repeated request id
//! answers as the first call, and when the combined unit fails (a unique
//! violation of one row, a request id used for another method...) each
//! call is run alone, so a bad row fails only its own call, with its own
//! error. An UNAVAILABLE failure (the connection lost, the commit perhaps
//! in doubt; or no pooled connection in time) is answered to every call, as
//! it would be to each alone. A combined unit runs in a task of its own: a
//! caller that goes away does not cancel the others' (a caller gone before
//! its unit starts is left out; one gone after it started may still have
//! its row committed, as a call alone whose caller leaves during its
//! COMMIT: a retry with the same request id answers it); a call run alone
//! is cancelled when its caller goes, as always. Every unit's statement
//! timeout is cut to what its calls' deadlines have left after waiting (a
//! combined unit's to the shortest; when it passes, each call runs alone
//! under its own); a call whose deadline passed while waiting is answered
//! DEADLINE_EXCEEDED without running. Batches take their request ids'
//! locks in the same sorted order, so they never deadlock with a unit.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use futures_util::StreamExt;
use tokio::sync::oneshot;
use tracing::Instrument;
use uuid::Uuid;

use super::Service;
use crate::{
    domain::{record::Record, schema::Resource, value::Value},
    error::Error,
    store::{Scope, audit::Origin, replica::CallLsn},
};

/// Units of one key that may run at once before calls wait to be combined.
/// On the 2-core bench (CreateJob, 32 streams, one tenant), back to back:
/// 2 lanes 2,869/s twice, 3 lanes 2,943 and 2,868/s for ~10 % more CPU per
/// call; 1 lane was half as fast (each unit waits for the one before) and 4
/// no faster (smaller units), in earlier runs; docs/performance.md.
pub const LANES: usize = 2;
/// The most calls one combined unit takes.
pub const MAX_GROUP: usize = 64;

/// Calls are combined only with calls of the same tenant, actor (the audit
/// events' actor, owners) and role, for the same resource.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct Key {
    tenant: Uuid,
    actor: String,
    admin: bool,
    resource: &'static str,
}

/// A waiting call.
struct Call {
    scope: Scope,
    values: Vec<Value>,
    request_id: String,
    span: tracing::Span,
    answer: oneshot::Sender<Result<Record, Error>>,
}

#[derive(Default)]
struct Lane {
    running: usize,
    waiting: Vec<Call>,
}

/// The lanes of every key with a unit running.
#[derive(Default)]
pub struct Combiner {
    lanes: Mutex<HashMap<Key, Lane>>,
}

impl Combiner {
    fn lanes(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Lane>> {
        // A panic while the map is held leaves it whole (every change is one step).
        self.lanes.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Creates one validated record: alone when a lane of its key is free,
/// else combined with the calls waiting with it.
pub(super) async fn create(
    svc: &Service,
    scope: &Scope,
    res: &'static Resource,
    values: Vec<Value>,
    request_id: &str,
) -> Result<Record, Error> {
    let key =
        Key { tenant: scope.tenant, actor: scope.actor.clone(), admin: scope.admin, resource: res.name };
    let mut values = Some(values);
    let waiting = {
        let mut lanes = svc.combiner.lanes();
        let lane = lanes.entry(key.clone()).or_default();
        if lane.running < LANES {
            lane.running += 1;
            None
        } else {
            let (answer, rx) = oneshot::channel();
            lane.waiting.push(Call {
                scope: scope.clone(),
                values: values.take().expect("values are here until queued"),
                request_id: request_id.to_owned(),
                span: tracing::Span::current(),
                answer,
            });
            Some(rx)
        }
    };
    if let Some(rx) = waiting {
        return rx
            .await
            .unwrap_or_else(|_| Err(Error::Internal("a combined creation ended without an answer".into())));
    }
    let _lane = Held { svc: svc.clone(), res, key };
    svc.create_one(scope, res, values.take().expect("not queued"), request_id).await
}

/// A running unit's hold on a lane of its key. When the unit ends (or its
/// caller goes away), the calls waiting meanwhile get the lane, in a task
/// of their own; with none waiting the lane is free.
struct Held {
    svc: Service,
    res: &'static Resource,
    key: Key,
}

impl Drop for Held {
    fn drop(&mut self) {
        let calls: Vec<Call> = {
            let mut lanes = self.svc.combiner.lanes();
            let Some(lane) = lanes.get_mut(&self.key) else { return };
            // Calls whose caller is gone hold no place in the next unit.
            lane.waiting.retain(|c| !c.answer.is_closed());
            if lane.waiting.is_empty() {
                lane.running -= 1;
                if lane.running == 0 {
                    lanes.remove(&self.key);
                }
                return;
            }
            let n = lane.waiting.len().min(MAX_GROUP);
            lane.waiting.drain(..n).collect()
        };
        // The lane passes to the task (also when the task never runs: the
        // runtime shutting down drops it, and with it the lane, in turn).
        let lane = Held { svc: self.svc.clone(), res: self.res, key: self.key.clone() };
        let next = async move {
            run(&lane.svc, lane.res, calls).await;
            drop(lane);
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => drop(rt.spawn(next)),
            // No runtime (the process is ending): the calls' answers are
            // dropped with them, and they end with an internal error.
            Err(_) => drop(next),
        }
    }
}

/// Runs waiting calls: combined, or each alone when the combined unit
/// failed with the commit not in doubt.
async fn run(svc: &Service, res: &'static Resource, calls: Vec<Call>) {
    let mut due = Vec::with_capacity(calls.len());
    for mut c in calls {
        match still_due(svc, &c.scope) {
            _ if c.answer.is_closed() => {}
            Some(scope) => {
                c.scope = scope;
                due.push(c);
            }
            None => {
                let _ = c.answer.send(Err(Error::DeadlineExceeded));
            }
        }
    }
    let mut calls = due;
    if calls.len() <= 1 {
        if let Some(c) = calls.pop() {
            alone(svc, res, c).await;
        }
        return;
    }
    let span = tracing::info_span!("combined create", entity = res.name, calls = calls.len());
    for c in &calls {
        span.follows_from(&c.span);
    }
    let scope = shared_scope(&calls);
    let items =
        calls.iter().map(|c| (c.values.clone(), c.request_id.clone(), Origin::of(&c.scope))).collect();
    match svc.create_combined(&scope, res, items).instrument(span).await {
        Ok(recs) => {
            let commit = scope.lsn.as_ref().and_then(|l| l.commit());
            for (c, rec) in calls.into_iter().zip(recs) {
                if let (Some(lsn), Some(own)) = (commit, &c.scope.lsn) {
                    own.committed(lsn);
                }
                let _ = c.answer.send(Ok(rec));
            }
        }
        Err(Error::Unavailable(m)) => {
            for c in calls {
                let _ = c.answer.send(Err(Error::Unavailable(m.clone())));
            }
        }
        Err(e) => {
            tracing::debug!(error = %e, calls = calls.len(), "a combined creation failed; each call runs alone");
            // At most a lane's worth at once, so a failed unit of 64 does
            // not ask the pool for 64 connections together.
            futures_util::stream::iter(calls).for_each_concurrent(LANES, |c| alone(svc, res, c)).await;
        }
    }
}

/// One call in a unit of its own, inside the call's span (none when its
/// caller is gone).
async fn alone(svc: &Service, res: &'static Resource, mut c: Call) {
    let Some(scope) = still_due(svc, &c.scope) else {
        let _ = c.answer.send(Err(Error::DeadlineExceeded));
        return;
    };
    // As a call alone would be: cancelled (rolled back) when its caller goes.
    let work = svc.create_one(&scope, res, c.values, &c.request_id).instrument(c.span);
    tokio::select! {
        r = work => {
            let _ = c.answer.send(r);
        }
        () = c.answer.closed() => {}
    }
}

/// `scope` with its statement timeout cut to what is left of its caller's
/// deadline after waiting; `None` when nothing is left.
fn still_due(svc: &Service, scope: &Scope) -> Option<Scope> {
    let Some(deadline) = scope.deadline else { return Some(scope.clone()) };
    let left = deadline.checked_duration_since(tokio::time::Instant::now()).filter(|d| !d.is_zero())?;
    let mut s = scope.clone();
    s.timeout = s.timeout.min(svc.store().timeout_for(Some(left)));
    Some(s)
}

/// The scope of a combined unit: the first call's tenant and actor, no
/// request or trace id of its own (each event carries its call's), the
/// shortest statement timeout of the calls (cut to their deadlines), the
/// latest deadline (none if a call has none: it bounds only the cache's
/// invalidation after the commit, which every call's rows need), and a
/// commit position of its own, passed to every call's.
fn shared_scope(calls: &[Call]) -> Scope {
    let mut s = calls[0].scope.clone();
    s.request_id = None;
    s.trace_id = None;
    s.timeout = calls.iter().map(|c| c.scope.timeout).min().unwrap_or(s.timeout);
    s.deadline =
        calls.iter().map(|c| c.scope.deadline).collect::<Option<Vec<_>>>().and_then(|d| d.into_iter().max());
    s.lsn = calls.iter().any(|c| c.scope.lsn.is_some()).then(|| Arc::new(CallLsn::default()));
    s
}
