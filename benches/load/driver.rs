//! Runs one operation from many concurrent tasks for a fixed time and
//! records every latency.
//!
//! * Closed loop (max throughput): `concurrency` tasks, each sends its next
//!   request as soon as the previous one answered.
//! * Open loop (`rate`): requests are scheduled at fixed intended times
//!   whatever the answers do, and latency is measured from the *intended*
//!   send time, so queueing in the generator counts (no coordinated
//!   omission).
//!
//! Latencies are kept exactly (a `u32` of microseconds per request) and
//! sorted once at the end: at the rates a 2-core machine reaches that is a
//! few megabytes, and percentiles are exact rather than bucketed.

use std::{
    future::Future,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::{
    sync::Semaphore,
    time::{Instant, sleep_until},
};

use crate::data::Rng;

pub type OpFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;
/// One request: `(task or sequence number, generator) -> future`.
pub type Op = Arc<dyn Fn(usize, &mut Rng) -> OpFuture + Send + Sync>;

#[derive(Clone, Copy, Debug)]
pub struct Load {
    pub warmup: Duration,
    pub duration: Duration,
    /// Closed loop: concurrent tasks. Open loop: most requests in flight.
    pub concurrency: usize,
    /// Open loop when set: intended requests per second.
    pub rate: Option<f64>,
}

#[derive(Default)]
struct Recorder {
    ok: u64,
    errors: u64,
    first_error: Option<String>,
    lat_us: Vec<u32>,
}

impl Recorder {
    fn record(&mut self, lat: Duration, r: Result<(), String>) {
        self.lat_us.push(lat.as_micros().min(u32::MAX as u128) as u32);
        match r {
            Ok(()) => self.ok += 1,
            Err(e) => {
                self.errors += 1;
                if self.first_error.is_none() {
                    self.first_error = Some(e);
                }
            }
        }
    }

    fn merge(&mut self, other: Recorder) {
        self.ok += other.ok;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        self.lat_us.extend(other.lat_us);
    }
}

/// What a run measured, over the measurement window only.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub ok: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub window: Duration,
    /// Requests answered within the window (the throughput's numerator).
    pub answered: u64,
    /// Sorted.
    lat_us: Vec<u32>,
}

impl Stats {
    pub fn rps(&self) -> f64 {
        if self.window.is_zero() { 0.0 } else { self.answered as f64 / self.window.as_secs_f64() }
    }

    /// Latency at quantile `q` (0..1), in milliseconds.
    pub fn ms(&self, q: f64) -> f64 {
        if self.lat_us.is_empty() {
            return f64::NAN;
        }
        let i = ((self.lat_us.len() as f64 * q).ceil() as usize).clamp(1, self.lat_us.len()) - 1;
        self.lat_us[i] as f64 / 1000.0
    }

    /// Adds another run of the same operation (windows add up).
    pub fn merge(&mut self, other: Stats) {
        self.ok += other.ok;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        self.window += other.window;
        self.answered += other.answered;
        self.lat_us.extend(other.lat_us);
        self.lat_us.sort_unstable();
    }

    pub fn from_parts(ok: u64, errors: u64, window: Duration, mut lat_us: Vec<u32>) -> Stats {
        lat_us.sort_unstable();
        Stats { ok, errors, first_error: None, window, answered: ok + errors, lat_us }
    }
}

/// The measurement window of a run that starts now: `(from, to)`.
pub fn window(load: &Load, start: Instant) -> (Instant, Instant) {
    let from = start + load.warmup;
    (from, from + load.duration)
}

/// Runs `op` under `load` from `start`; returns after the window closed
/// and every request sent in it answered (or 30 s passed).
pub async fn run(op: Op, load: Load, start: Instant, seed: u64) -> Stats {
    let (from, to) = window(&load, start);
    let (rec, answered) = match load.rate {
        None => {
            let rec = closed(op, load, from, to, seed).await;
            let n = rec.ok + rec.errors;
            (rec, n)
        }
        Some(rate) => open(op, load, rate, start, from, to, seed).await,
    };
    Stats {
        ok: rec.ok,
        errors: rec.errors,
        first_error: rec.first_error,
        window: load.duration,
        answered,
        lat_us: {
            let mut v = rec.lat_us;
            v.sort_unstable();
            v
        },
    }
}

async fn closed(op: Op, load: Load, from: Instant, to: Instant, seed: u64) -> Recorder {
    let mut tasks = Vec::with_capacity(load.concurrency);
    for w in 0..load.concurrency {
        let op = op.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng::new(seed ^ (w as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let mut rec = Recorder::default();
            loop {
                let t0 = Instant::now();
                if t0 >= to {
                    break;
                }
                let r = op(w, &mut rng).await;
                let t1 = Instant::now();
                if t1 >= from && t1 < to {
                    rec.record(t1 - t0, r);
                }
            }
            rec
        }));
    }
    let mut all = Recorder::default();
    for t in tasks {
        if let Ok(rec) = t.await {
            all.merge(rec);
        }
    }
    all
}

/// Open loop: latencies of the requests *scheduled* in the window (however
/// late they answer), throughput from the answers that arrived in it.
async fn open(
    op: Op,
    load: Load,
    rate: f64,
    start: Instant,
    from: Instant,
    to: Instant,
    seed: u64,
) -> (Recorder, u64) {
    let rec = Arc::new(Mutex::new(Recorder::default()));
    let answered = Arc::new(AtomicU64::new(0));
    let in_flight = Arc::new(Semaphore::new(load.concurrency));
    let interval = Duration::from_secs_f64(1.0 / rate.max(0.001));
    let mut rng = Rng::new(seed);
    let mut k: u64 = 0;
    loop {
        let intended = start + interval.mul_f64(k as f64);
        if intended >= to {
            break;
        }
        if intended > Instant::now() {
            sleep_until(intended).await;
        }
        // Waiting here for a slot is queueing: it shows in the latency,
        // which runs from `intended`.
        let permit = in_flight.clone().acquire_owned().await.expect("semaphore open");
        let fut = op(k as usize, &mut rng);
        let rec = rec.clone();
        let answered = answered.clone();
        tokio::spawn(async move {
            let r = fut.await;
            let done = Instant::now();
            drop(permit);
            if done >= from && done < to {
                answered.fetch_add(1, Ordering::Relaxed);
            }
            if intended >= from {
                rec.lock().expect("recorder").record(done - intended, r);
            }
        });
        k += 1;
    }
    // Let the requests of the window finish.
    let _ =
        tokio::time::timeout(Duration::from_secs(30), in_flight.acquire_many(load.concurrency as u32)).await;
    let rec = std::mem::take(&mut *rec.lock().expect("recorder"));
    (rec, answered.load(Ordering::Relaxed))
}
