//! Single flight: concurrent misses of one query key in this process run
//! one computation; the others wait for its result. The key names the
//! epoch and generation the miss saw, so a caller that arrives after a
//! write (a newer generation) never joins a computation that began before
//! it. A leader that fails or is cancelled lets its waiters compute their
//! own (an error is the leader's, e.g. its deadline, not theirs).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use tokio::sync::watch;

type Slot = Option<Arc<Vec<u8>>>;

#[derive(Default)]
pub struct Flights {
    running: Mutex<HashMap<String, watch::Receiver<Slot>>>,
}

pub enum Join<'a> {
    Lead(Leader<'a>),
    Wait(watch::Receiver<Slot>),
}

/// The computation of one key; dropping it ends the flight.
pub struct Leader<'a> {
    flights: &'a Flights,
    key: String,
    tx: watch::Sender<Slot>,
}

impl Flights {
    pub fn join(&self, key: String) -> Join<'_> {
        let mut running = self.running.lock().expect("flights lock");
        if let Some(rx) = running.get(&key) {
            return Join::Wait(rx.clone());
        }
        let (tx, rx) = watch::channel(None);
        running.insert(key.clone(), rx);
        Join::Lead(Leader { flights: self, key, tx })
    }

    /// How many keys are being computed.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.running.lock().expect("flights lock").len()
    }
}

impl Leader<'_> {
    /// Hands the result to the waiters (call after it is stored in Redis, so
    /// a caller arriving after the flight ends finds it there).
    pub fn finish(self, bytes: Arc<Vec<u8>>) {
        let _ = self.tx.send(Some(bytes));
    }
}

impl Drop for Leader<'_> {
    fn drop(&mut self) {
        self.flights.running.lock().expect("flights lock").remove(&self.key);
    }
}

/// The leader's result; `None` when it ended without one.
pub async fn wait(mut rx: watch::Receiver<Slot>) -> Option<Arc<Vec<u8>>> {
    match rx.wait_for(Option::is_some).await {
        Ok(v) => v.clone(),
        Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waiters_get_the_leaders_result_or_nothing() {
        let f = Flights::default();
        let Join::Lead(lead) = f.join("k".into()) else { panic!("first is the leader") };
        let Join::Wait(w1) = f.join("k".into()) else { panic!("second waits") };
        let Join::Lead(other) = f.join("other".into()) else { panic!("another key leads") };
        let waiting = tokio::spawn(wait(w1));
        lead.finish(Arc::new(b"result".to_vec()));
        assert_eq!(waiting.await.unwrap().as_deref().map(Vec::as_slice), Some(&b"result"[..]));
        assert_eq!(f.len(), 1, "a finished flight is gone");
        let Join::Wait(w2) = f.join("other".into()) else { panic!("waits") };
        drop(other);
        assert!(wait(w2).await.is_none(), "a leader that ends without a result frees its waiters");
        assert_eq!(f.len(), 0);
    }
}
