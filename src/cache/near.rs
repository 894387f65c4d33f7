//! The near cache: decoded records in this process, in front of Redis, for
//! the hottest reads. Entries come only from Redis hits and live at most
//! `ttl`. Invalidations come from this process's own writes (at once,
//! before the call answers) and from other replicas through Redis pub/sub
//! (`subscribe`). It is used only while subscribed: a lost subscription
//! empties it, since invalidations may have been missed.
//!
//! The fill race: a reader takes a record from Redis while an invalidation
//! of it arrives; inserted after the invalidation, the old record would
//! stay. Every invalidation bumps the shard's sequence number, and a reader
//! inserts only if the sequence it saw before asking Redis is unchanged.
//!
//! Hand-rolled (a sharded map with random eviction) rather than a caching
//! crate: the sequence guard and the prefix drop of a bulk change are the
//! whole point, and the map around them is small.

use std::{
    collections::HashMap,
    sync::{
        Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use crate::domain::record::Record;

const SHARDS: usize = 16;

struct Shard {
    map: Mutex<HashMap<String, (Record, Instant)>>,
    seq: AtomicU64,
}

pub struct Near {
    shards: Vec<Shard>,
    per_shard: usize,
    ttl: Duration,
    /// Subscribed to invalidations: entries may be served and stored.
    live: AtomicBool,
}

fn shard_of(key: &str) -> usize {
    // FNV-1a: cheap, and keys are server-made.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.as_bytes() {
        h = (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
    }
    (h % SHARDS as u64) as usize
}

impl Near {
    pub fn new(capacity: usize, ttl: Duration) -> Near {
        Near {
            shards: (0..SHARDS).map(|_| Shard { map: Mutex::default(), seq: AtomicU64::new(0) }).collect(),
            per_shard: capacity.div_ceil(SHARDS).max(1),
            ttl,
            live: AtomicBool::new(false),
        }
    }

    pub fn is_live(&self) -> bool {
        self.live.load(Ordering::SeqCst)
    }

    /// Subscribed: entries may be used from now on.
    pub fn go_live(&self) {
        self.live.store(true, Ordering::SeqCst);
    }

    /// The subscription is gone (or Redis is): stop using entries, drop them all.
    pub fn go_dark(&self) {
        self.live.store(false, Ordering::SeqCst);
        self.clear();
    }

    pub fn get(&self, key: &str) -> Option<Record> {
        if !self.is_live() {
            return None;
        }
        let shard = &self.shards[shard_of(key)];
        let mut map = shard.map.lock().expect("near lock");
        match map.get(key) {
            Some((rec, at)) if at.elapsed() < self.ttl => Some(rec.clone()),
            Some(_) => {
                map.remove(key);
                None
            }
            None => None,
        }
    }

    /// The shard's sequence, read before asking Redis for `key`.
    pub fn seq(&self, key: &str) -> u64 {
        self.shards[shard_of(key)].seq.load(Ordering::SeqCst)
    }

    /// Stores `rec` unless an invalidation reached its shard since `seq`.
    pub fn put(&self, key: String, rec: Record, seq: u64) {
        if !self.is_live() {
            return;
        }
        let shard = &self.shards[shard_of(&key)];
        let mut map = shard.map.lock().expect("near lock");
        // Checked under the lock invalidations take too.
        if shard.seq.load(Ordering::SeqCst) != seq {
            return;
        }
        if map.len() >= self.per_shard && !map.contains_key(&key) {
            let victim = map.keys().next().cloned();
            if let Some(v) = victim {
                map.remove(&v);
            }
        }
        map.insert(key, (rec, Instant::now()));
    }

    /// Drops `key`, or every key starting with `prefix*` when it ends in `*`
    /// (a bulk change), or everything for `*`.
    pub fn invalidate(&self, key: &str) {
        if key == "*" {
            self.clear();
            return;
        }
        if let Some(prefix) = key.strip_suffix('*') {
            for shard in &self.shards {
                let mut map = shard.map.lock().expect("near lock");
                shard.seq.fetch_add(1, Ordering::SeqCst);
                map.retain(|k, _| !k.starts_with(prefix));
            }
            return;
        }
        let shard = &self.shards[shard_of(key)];
        let mut map = shard.map.lock().expect("near lock");
        shard.seq.fetch_add(1, Ordering::SeqCst);
        map.remove(key);
    }

    pub fn clear(&self) {
        for shard in &self.shards {
            let mut map = shard.map.lock().expect("near lock");
            shard.seq.fetch_add(1, Ordering::SeqCst);
            map.clear();
        }
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.map.lock().expect("near lock").len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(rev: i64) -> Record {
        Record { values: Vec::new(), revision: rev }
    }

    #[test]
    fn serves_only_while_live_and_refuses_fills_that_raced_an_invalidation() {
        let n = Near::new(64, Duration::from_secs(60));
        let s = n.seq("t:job:a");
        n.put("t:job:a".into(), rec(1), s);
        assert!(n.get("t:job:a").is_none(), "not live: nothing stored or served");
        n.go_live();
        n.put("t:job:a".into(), rec(1), n.seq("t:job:a"));
        assert_eq!(n.get("t:job:a").map(|r| r.revision), Some(1));
        // A reader saw seq, an invalidation came, then the reader's (old) record.
        let seen = n.seq("t:job:a");
        n.invalidate("t:job:a");
        n.put("t:job:a".into(), rec(1), seen);
        assert!(n.get("t:job:a").is_none(), "the racing fill is refused");
        n.put("t:job:a".into(), rec(2), n.seq("t:job:a"));
        n.put("t:job:b".into(), rec(3), n.seq("t:job:b"));
        n.put("t:app:c".into(), rec(4), n.seq("t:app:c"));
        n.invalidate("t:job:*");
        assert!(n.get("t:job:a").is_none() && n.get("t:job:b").is_none());
        assert_eq!(n.get("t:app:c").map(|r| r.revision), Some(4));
        n.go_dark();
        assert_eq!(n.len(), 0);
        assert!(n.get("t:app:c").is_none());
    }

    #[test]
    fn bounded_and_expiring() {
        let n = Near::new(32, Duration::from_millis(30));
        n.go_live();
        for i in 0..1000 {
            let k = format!("t:job:{i}");
            n.put(k.clone(), rec(i), n.seq(&k));
        }
        assert!(n.len() <= 32, "{}", n.len());
        n.put("t:job:x".into(), rec(1), n.seq("t:job:x"));
        std::thread::sleep(Duration::from_millis(40));
        assert!(n.get("t:job:x").is_none(), "expired");
    }
}
