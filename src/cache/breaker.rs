//! The circuit breaker in front of Redis. Three states:
//!
//! - `Closed`: reads and invalidations go to Redis.
//! - `Open`: nothing goes to Redis (a dead Redis costs no time per call);
//!   entered after `threshold` consecutive failures, or at once when an
//!   invalidation failed (an entry may now be stale).
//! - `Recovering`: a probe answered; invalidations go to Redis again, reads
//!   not yet, until the epoch has been moved (so every write committed while
//!   the breaker was open is older than the new epoch's first entry).
//!
//! Lock-free: each call reads one atomic.

use std::sync::atomic::{AtomicU8, AtomicU32, Ordering};

const CLOSED: u8 = 0;
const OPEN: u8 = 1;
const RECOVERING: u8 = 2;

pub struct Breaker {
    state: AtomicU8,
    failures: AtomicU32,
    threshold: u32,
}

impl Breaker {
    pub fn new(threshold: u32) -> Breaker {
        Breaker { state: AtomicU8::new(CLOSED), failures: AtomicU32::new(0), threshold: threshold.max(1) }
    }

    /// Reads may use Redis.
    pub fn reads(&self) -> bool {
        self.state.load(Ordering::SeqCst) == CLOSED
    }

    /// Invalidations may use Redis.
    pub fn writes(&self) -> bool {
        self.state.load(Ordering::SeqCst) != OPEN
    }

    pub fn is_open(&self) -> bool {
        self.state.load(Ordering::SeqCst) == OPEN
    }

    pub fn success(&self) {
        self.failures.store(0, Ordering::Relaxed);
    }

    /// Counts a failure; true when this one opened the breaker.
    pub fn failure(&self) -> bool {
        if self.failures.fetch_add(1, Ordering::Relaxed) + 1 >= self.threshold { self.trip() } else { false }
    }

    /// Opens the breaker; true when it was not open already.
    pub fn trip(&self) -> bool {
        self.state.swap(OPEN, Ordering::SeqCst) != OPEN
    }

    /// A probe answered: invalidations resume, reads wait for [`Breaker::close`].
    /// False when a failure opened it again meanwhile... or it was not open.
    pub fn recovering(&self) -> bool {
        self.state.compare_exchange(OPEN, RECOVERING, Ordering::SeqCst, Ordering::SeqCst).is_ok()
    }

    /// The epoch moved: back to normal. False when a failure reopened it meanwhile.
    pub fn close(&self) -> bool {
        self.failures.store(0, Ordering::Relaxed);
        self.state.compare_exchange(RECOVERING, CLOSED, Ordering::SeqCst, Ordering::SeqCst).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_the_threshold_and_recovers_in_two_steps() {
        let b = Breaker::new(3);
        assert!(b.reads() && b.writes());
        assert!(!b.failure() && !b.failure());
        b.success();
        assert!(!b.failure() && !b.failure());
        assert!(b.failure(), "the third consecutive failure opens it");
        assert!(!b.failure(), "already open");
        assert!(!b.reads() && !b.writes() && b.is_open());
        assert!(b.recovering());
        assert!(!b.reads() && b.writes(), "invalidations first");
        assert!(b.close());
        assert!(b.reads() && b.writes());
        // A failure while recovering reopens it; close then refuses.
        assert!(b.trip());
        assert!(b.recovering());
        assert!(b.trip());
        assert!(!b.close());
        assert!(b.is_open());
    }
}
