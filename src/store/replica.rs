//! Reads on a streaming replica, with read-your-writes and a lag bound.
//!
//! A watcher samples, every [`CHECK_EVERY`], the primary's WAL position and
//! the replica's replayed position (`pg_last_wal_replay_lsn()`). A read may
//! go to the replica when the replica answered the last check, lags by at
//! most `--replica-max-lag-ms`, and has replayed everything the caller must
//! see: the commit position of the tenant's last write through this server
//! (each write transaction on the primary reads it right after COMMIT, in
//! the same round trip) and the position the caller sent back in
//! `x-bi-min-lsn` (the `x-bi-commit-lsn` a write answered with, from this
//! server or another). Otherwise the read goes to the primary. Positions
//! only grow, so a replay position read up to one check ago can only send a
//! read to the primary that the replica could already have served, never
//! the other way round.
//!
//! The lag is measured on positions, not clocks: the time since the primary
//! first stood beyond the replica's replay position (from the watcher's own
//! samples), so an idle primary does not look like a lagging replica and no
//! clock of another host is read.

use std::{
    collections::{HashMap, VecDeque},
    fmt,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use deadpool_postgres::Pool;
use uuid::Uuid;

/// How often the watcher samples both positions.
pub const CHECK_EVERY: Duration = Duration::from_millis(100);

/// The primary's WAL write position, in bytes.
const PRIMARY_LSN: &str = include_str!("sql/replica_primary_lsn.sql").trim_ascii_end();
/// The replica's replayed position in bytes (NULL when it is not in recovery).
const REPLAY_LSN: &str = include_str!("sql/replica_replay_lsn.sql").trim_ascii_end();
/// Ends a write transaction and reads the WAL insert position after its
/// commit record, in one round trip (simple protocol, two statements).
pub(crate) const COMMIT_AND_LSN: &str = include_str!("sql/commit_and_lsn.sql").trim_ascii_end();

/// A WAL position (`pg_lsn`), as bytes from the start of the WAL.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Lsn(pub u64);

impl Lsn {
    /// Parses PostgreSQL's text form, `16/B374D848` (hexadecimal halves).
    pub fn parse(s: &str) -> Option<Lsn> {
        let (hi, lo) = s.trim().split_once('/')?;
        if hi.is_empty() || lo.is_empty() || hi.len() > 8 || lo.len() > 8 {
            return None;
        }
        let hi = u32::from_str_radix(hi, 16).ok()?;
        let lo = u32::from_str_radix(lo, 16).ok()?;
        Some(Lsn((u64::from(hi) << 32) | u64::from(lo)))
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

/// A call's positions: the one its caller must see (sent in
/// `x-bi-min-lsn`) and the commit position of its own last write (answered
/// in `x-bi-commit-lsn`).
#[derive(Debug, Default)]
pub struct CallLsn {
    min: AtomicU64,
    commit: AtomicU64,
}

impl CallLsn {
    /// The position the caller's reads must see (0: none).
    pub fn min(&self) -> Lsn {
        Lsn(self.min.load(Ordering::Relaxed))
    }

    pub fn require(&self, lsn: Lsn) {
        self.min.fetch_max(lsn.0, Ordering::Relaxed);
    }

    /// The commit position of the call's newest write, if it wrote.
    pub fn commit(&self) -> Option<Lsn> {
        Some(Lsn(self.commit.load(Ordering::Relaxed))).filter(|l| l.0 > 0)
    }

    pub(crate) fn committed(&self, lsn: Lsn) {
        self.commit.fetch_max(lsn.0, Ordering::Relaxed);
    }
}

tokio::task_local! {
    /// Set (to the reason) while a read must see the primary.
    static ON_PRIMARY: &'static str;
}

/// Runs `read` on the primary whatever the replica's state: its result
/// goes into the shared cache, where every caller (of every server) will
/// find it. A fill from a replica could store a row older than a write
/// whose invalidation already happened (the write commits and invalidates
/// on the primary; a replica that has not replayed it yet still answers
/// the old row), and the cache would then serve that old row to the writer
/// itself. The cache absorbs repeated reads; the replica serves the reads
/// the cache does not keep (plain pages, exports, basic views) and every
/// read when no cache is configured.
pub async fn for_shared_cache<F: std::future::Future>(read: F) -> F::Output {
    ON_PRIMARY.scope(reason::CACHE_FILL, read).await
}

/// Runs `read` on the primary: a check a write makes before its own
/// transaction (the record it is about to change must be there), which must
/// see what any server wrote, not what the replica has replayed.
pub async fn before_write<F: std::future::Future>(read: F) -> F::Output {
    ON_PRIMARY.scope(reason::BEFORE_WRITE, read).await
}

/// Why a read went where it went (the `reason` label of
/// `bi_data_db_reads_total`).
pub mod reason {
    pub const NO_REPLICA: &str = "no_replica";
    pub const REPLICA: &str = "replica";
    pub const DOWN: &str = "replica_down";
    pub const LAGGING: &str = "replica_lagging";
    pub const BEHIND_CALLER: &str = "replica_behind_caller";
    pub const FAILED: &str = "replica_failed";
    pub const CACHE_FILL: &str = "cache_fill";
    pub const BEFORE_WRITE: &str = "before_write";
}

/// What health details and metrics show of the replica.
#[derive(Clone, Copy, Debug)]
pub struct ReplicaStatus {
    /// Answered its last check as a replica.
    pub up: bool,
    /// Lag at the last check.
    pub lag: Duration,
    /// Up and within the lag bound: reads may go there.
    pub usable: bool,
    pub replay: Lsn,
}

/// The replica's pool and what the watcher last saw of it.
pub struct Replica {
    pub(crate) pool: Pool,
    max_lag: Duration,
    up: AtomicBool,
    replay: AtomicU64,
    lag_ms: AtomicU64,
    /// Tenant → commit position of its newest write through this server
    /// not yet known to be replayed (pruned at every check, so it holds
    /// only the tenants written to within the replica's lag).
    writes: Mutex<HashMap<Uuid, u64>>,
    /// The primary's position over the last `max_lag` (plus a margin):
    /// `(when sampled, position)`, oldest first.
    samples: Mutex<VecDeque<(Instant, u64)>>,
    /// The last check failed and said so in the log (said once per outage).
    warned: AtomicBool,
    /// Moves every time the replica is found down: reads in flight on it
    /// stop waiting (a replica that hangs rather than refuses would
    /// otherwise hold them until their deadline) and go to the primary.
    downs: tokio::sync::watch::Sender<u64>,
}

impl Replica {
    pub fn new(pool: Pool, max_lag: Duration) -> Replica {
        Replica {
            pool,
            max_lag,
            up: AtomicBool::new(false),
            replay: AtomicU64::new(0),
            lag_ms: AtomicU64::new(u64::MAX),
            writes: Mutex::new(HashMap::new()),
            samples: Mutex::new(VecDeque::new()),
            warned: AtomicBool::new(false),
            downs: tokio::sync::watch::Sender::new(0),
        }
    }

    pub fn status(&self) -> ReplicaStatus {
        let up = self.up.load(Ordering::Relaxed);
        let lag = Duration::from_millis(self.lag_ms.load(Ordering::Relaxed).min(u64::MAX / 2));
        ReplicaStatus {
            up,
            lag,
            usable: up && lag <= self.max_lag,
            replay: Lsn(self.replay.load(Ordering::Relaxed)),
        }
    }

    /// `Ok` when a read of `tenant` that must see `min` may go to the
    /// replica, else the reason it goes to the primary.
    pub fn route(&self, tenant: Uuid, min: Lsn) -> Result<(), &'static str> {
        if let Ok(why) = ON_PRIMARY.try_with(|why| *why) {
            return Err(why);
        }
        if !self.up.load(Ordering::Relaxed) {
            return Err(reason::DOWN);
        }
        if self.lag_ms.load(Ordering::Relaxed) > self.max_lag.as_millis() as u64 {
            return Err(reason::LAGGING);
        }
        let wrote = self.writes.lock().expect("not poisoned").get(&tenant).copied().unwrap_or(0);
        if wrote.max(min.0) > self.replay.load(Ordering::Relaxed) {
            return Err(reason::BEHIND_CALLER);
        }
        Ok(())
    }

    /// A write of `tenant` committed at `lsn`: its reads wait for it.
    pub fn wrote(&self, tenant: Uuid, lsn: Lsn) {
        if lsn.0 > self.replay.load(Ordering::Relaxed) {
            let mut w = self.writes.lock().expect("not poisoned");
            let e = w.entry(tenant).or_insert(0);
            *e = (*e).max(lsn.0);
        }
    }

    /// A read on the replica failed as if it were gone: no reads go there
    /// until the next check succeeds.
    /// Reads in flight on it are left to finish (it may only be busy: a
    /// pool wait timed out); the watcher's next check decides.
    pub fn mark_down(&self) {
        if self.up.swap(false, Ordering::Relaxed) {
            tracing::warn!("read replica failed a read; reads go to the primary until it answers a check");
        }
    }

    /// Resolves when the replica is next found down (after this call).
    pub fn went_down(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.downs.subscribe();
        async move {
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    /// One check: the primary's position, then the replica's, each bounded
    /// by `within`.
    pub async fn check(&self, primary: &Pool, within: Duration) {
        let now = Instant::now();
        // The primary first: a replica position read after it can only be
        // newer, so the lag is never under-estimated.
        // Without the primary's position the lag cannot be bounded: the last
        // samples stay (the primary's own health is watched elsewhere; its
        // reads fail anyway).
        if let Ok(Ok(Some(p))) = tokio::time::timeout(within, position(primary, PRIMARY_LSN)).await {
            let mut s = self.samples.lock().expect("not poisoned");
            if s.back().is_none_or(|&(_, last)| p > last) {
                s.push_back((now, p));
            }
            let keep = self.max_lag + Duration::from_secs(1);
            while s.len() > 1 && s.front().is_some_and(|&(t, _)| now.duration_since(t) > keep) {
                s.pop_front();
            }
        }
        let replay = match tokio::time::timeout(within, position(&self.pool, REPLAY_LSN)).await {
            Ok(Ok(Some(r))) => r,
            Ok(Ok(None)) => {
                self.down("the replica URL names a server that is not in recovery (not a replica)", None);
                return;
            }
            Ok(Err(e)) => {
                self.down("read replica unreachable", Some(e));
                return;
            }
            Err(_) => {
                self.down("read replica did not answer its check in time", None);
                return;
            }
        };
        // Behind what it already said it had replayed (another server behind
        // the same name, or restarted at an older point): writes known to be
        // replayed may be missing there. Not used until it is back there.
        if replay < self.replay.load(Ordering::Relaxed) {
            self.down("the read replica's replay position went backwards", None);
            return;
        }
        self.replay.store(replay, Ordering::Relaxed);
        let lag = {
            let s = self.samples.lock().expect("not poisoned");
            // The first time the primary stood beyond the replay position.
            match s.iter().find(|&&(_, p)| p > replay) {
                None => Duration::ZERO,
                Some(&(t, _)) => now.duration_since(t),
            }
        };
        self.lag_ms.store(lag.as_millis() as u64, Ordering::Relaxed);
        self.writes.lock().expect("not poisoned").retain(|_, l| *l > replay);
        if !self.up.swap(true, Ordering::Relaxed) {
            tracing::info!(lag_ms = lag.as_millis() as u64, "read replica answering: reads may go there");
        }
        self.warned.store(false, Ordering::Relaxed);
    }

    fn down(&self, why: &'static str, error: Option<crate::error::Error>) {
        self.up.store(false, Ordering::Relaxed);
        self.downs.send_modify(|n| *n += 1);
        if !self.warned.swap(true, Ordering::Relaxed) {
            match error {
                Some(e) => tracing::warn!(error = %e, "{why}; reads go to the primary"),
                None => tracing::warn!("{why}; reads go to the primary"),
            }
        }
    }
}

/// One position, over the simple protocol: no prepared statement, so it
/// works behind a transaction-mode pooler too.
async fn position(pool: &Pool, sql: &str) -> Result<Option<u64>, crate::error::Error> {
    let client = pool.get().await.map_err(super::pool_error)?;
    let answers = client.simple_query(sql).await.map_err(super::db_error)?;
    Ok(answers.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).and_then(|v| v.parse::<u64>().ok()),
        _ => None,
    }))
}

/// Watches the replica until the store closes.
pub(crate) async fn watch(replica: Arc<Replica>, primary: Pool, within: Duration) {
    let mut tick = tokio::time::interval(CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if primary.is_closed() {
            return;
        }
        replica.check(&primary, within).await;
    }
}

#[cfg(test)]
mod tests {
    use super::Lsn;

    #[test]
    fn lsn_text_round_trips() {
        let l = Lsn::parse("16/B374D848").unwrap();
        assert_eq!(l.0, (0x16 << 32) | 0xB374_D848);
        assert_eq!(l.to_string(), "16/B374D848");
        assert_eq!(Lsn::parse("0/0"), Some(Lsn(0)));
        for bad in ["", "/", "1/", "/1", "x/1", "123456789/0", "1-2", "1/2/3"] {
            assert_eq!(Lsn::parse(bad), None, "{bad}");
        }
    }
}
