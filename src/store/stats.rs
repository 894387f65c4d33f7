//! What the statement path measures: a per-shape timing aggregate (the data
//! behind `AnalyticsService.GetQueryStats`) and the Prometheus instruments the
//! store updates (statement durations, slow statements, pool wait).
//!
//! A *shape* is the parameterized SQL text: values are bound parameters and
//! never part of it. Every statement is recorded, not only slow ones, so the
//! slowest shapes can be ranked by their own distribution.

use std::{
    collections::HashMap,
    sync::{Mutex, PoisonError},
    time::Duration,
};

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, core::Collector};

/// How many shapes are kept; past that the one with the least total time is
/// dropped (it matters least both for "what is slow" and "what costs most").
pub const MAX_SHAPES: usize = 500;

/// Log-scale buckets: bucket `i` holds durations up to `2^(i/4)` µs (about
/// ±9% resolution), from 1 µs to about 17 minutes. Good enough for a p99.
const BUCKETS: usize = 120;
const STEPS_PER_DOUBLING: f64 = 4.0;

fn bucket_of(d: Duration) -> usize {
    let us = d.as_secs_f64() * 1e6;
    if us <= 1.0 {
        return 0;
    }
    ((us.log2() * STEPS_PER_DOUBLING).ceil() as usize).min(BUCKETS - 1)
}

fn bucket_upper_ms(i: usize) -> f64 {
    (i as f64 / STEPS_PER_DOUBLING).exp2() / 1000.0
}

struct Shape {
    operation: &'static str,
    collection: String,
    count: u64,
    slow: u64,
    total: Duration,
    max: Duration,
    buckets: Box<[u32; BUCKETS]>,
}

impl Shape {
    fn percentile_ms(&self, q: f64) -> f64 {
        let rank = ((self.count as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0u64;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += u64::from(*n);
            if seen >= rank {
                // The bucket's upper bound, but never above the largest seen.
                return bucket_upper_ms(i).min(ms(self.max));
            }
        }
        ms(self.max)
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// One statement shape's figures, as `GetQueryStats` reports them.
#[derive(Clone, Debug, PartialEq)]
pub struct ShapeStats {
    /// The parameterized SQL text.
    pub sql: String,
    pub operation: &'static str,
    pub collection: String,
    pub count: u64,
    /// Executions at or above the slow-query threshold.
    pub slow_count: u64,
    pub mean_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub total_ms: f64,
}

/// Per-shape aggregate, bounded to [`MAX_SHAPES`]. One short lock per
/// statement, never held across an await.
pub struct QueryStats {
    shapes: Mutex<HashMap<Box<str>, Shape>>,
    capacity: usize,
}

impl std::fmt::Debug for QueryStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryStats").field("shapes", &self.len()).finish()
    }
}

impl Default for QueryStats {
    fn default() -> Self {
        QueryStats::with_capacity(MAX_SHAPES)
    }
}

impl QueryStats {
    pub fn with_capacity(capacity: usize) -> Self {
        QueryStats { shapes: Mutex::new(HashMap::new()), capacity: capacity.max(1) }
    }

    /// Records one execution of `sql`.
    pub fn record(
        &self,
        sql: &str,
        operation: &'static str,
        collection: &str,
        elapsed: Duration,
        slow: bool,
    ) {
        let bucket = bucket_of(elapsed);
        let mut shapes = self.shapes.lock().unwrap_or_else(PoisonError::into_inner);
        let shape = match shapes.get_mut(sql) {
            Some(s) => s,
            None => {
                if shapes.len() >= self.capacity {
                    let victim = shapes.iter().min_by_key(|(_, s)| s.total).map(|(k, _)| k.clone());
                    if let Some(k) = victim {
                        shapes.remove(&k);
                    }
                }
                shapes.entry(sql.into()).or_insert_with(|| Shape {
                    operation,
                    collection: collection.to_owned(),
                    count: 0,
                    slow: 0,
                    total: Duration::ZERO,
                    max: Duration::ZERO,
                    buckets: Box::new([0; BUCKETS]),
                })
            }
        };
        shape.count += 1;
        shape.slow += u64::from(slow);
        shape.total += elapsed;
        shape.max = shape.max.max(elapsed);
        shape.buckets[bucket] = shape.buckets[bucket].saturating_add(1);
    }

    fn snapshot(sql: &str, s: &Shape) -> ShapeStats {
        ShapeStats {
            sql: sql.to_owned(),
            operation: s.operation,
            collection: s.collection.clone(),
            count: s.count,
            slow_count: s.slow,
            mean_ms: ms(s.total) / s.count.max(1) as f64,
            p99_ms: s.percentile_ms(0.99),
            max_ms: ms(s.max),
            total_ms: ms(s.total),
        }
    }

    /// The `limit` slowest shapes, by p99 then max, slowest first.
    pub fn slowest(&self, limit: usize) -> Vec<ShapeStats> {
        let mut all: Vec<ShapeStats> = {
            let shapes = self.shapes.lock().unwrap_or_else(PoisonError::into_inner);
            shapes.iter().map(|(sql, s)| Self::snapshot(sql, s)).collect()
        };
        all.sort_by(|a, b| b.p99_ms.total_cmp(&a.p99_ms).then(b.max_ms.total_cmp(&a.max_ms)));
        all.truncate(limit);
        all
    }

    /// The figures of one shape, if it is kept.
    pub fn get(&self, sql: &str) -> Option<ShapeStats> {
        let shapes = self.shapes.lock().unwrap_or_else(PoisonError::into_inner);
        shapes.get(sql).map(|s| Self::snapshot(sql, s))
    }

    pub fn len(&self) -> usize {
        self.shapes.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Seconds buckets for statement durations (0.5 ms … 30 s).
const STATEMENT_BUCKETS: &[f64] =
    &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
/// Seconds buckets for waiting on a pooled connection (0.1 ms … 5 s).
const POOL_WAIT_BUCKETS: &[f64] =
    &[0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];

/// The Prometheus instruments the store updates. Created unregistered with
/// the store; the server registers them in its registry (`metrics.rs`).
/// Labels are bounded: operations and tables come from static field tables.
#[derive(Clone, Debug)]
pub struct StoreMetrics {
    pub statement_duration: HistogramVec,
    pub slow_statements: IntCounterVec,
    pub pool_wait: HistogramVec,
    /// Reads by the pool that served them and why (`store::replica::reason`).
    pub reads: IntCounterVec,
}

impl Default for StoreMetrics {
    fn default() -> Self {
        let statement_duration = HistogramVec::new(
            HistogramOpts::new(
                "bi_data_db_statement_duration_seconds",
                "Duration of SQL statements (prepare + execute), by operation and table.",
            )
            .buckets(STATEMENT_BUCKETS.to_vec()),
            &["operation", "collection"],
        )
        .expect("valid metric");
        let slow_statements = IntCounterVec::new(
            Opts::new(
                "bi_data_db_slow_statements_total",
                "Statements at or above --slow-query-ms, by operation and table.",
            ),
            &["operation", "collection"],
        )
        .expect("valid metric");
        let pool_wait = HistogramVec::new(
            HistogramOpts::new(
                "bi_data_db_pool_wait_seconds",
                "Time spent waiting for a pooled database connection, by pool.",
            )
            .buckets(POOL_WAIT_BUCKETS.to_vec()),
            &["pool"],
        )
        .expect("valid metric");
        let reads = IntCounterVec::new(
            Opts::new(
                "bi_data_db_reads_total",
                "Read transactions by the pool that served them (primary, replica) and why.",
            ),
            &["pool", "reason"],
        )
        .expect("valid metric");
        StoreMetrics { statement_duration, slow_statements, pool_wait, reads }
    }
}

impl StoreMetrics {
    pub fn collectors(&self) -> Vec<Box<dyn Collector>> {
        vec![
            Box::new(self.statement_duration.clone()),
            Box::new(self.slow_statements.clone()),
            Box::new(self.pool_wait.clone()),
            Box::new(self.reads.clone()),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregates_per_shape() {
        let s = QueryStats::default();
        for i in 1..=100u64 {
            s.record("SELECT a FROM t WHERE x = $1", "SELECT", "t", Duration::from_millis(i), i >= 50);
        }
        s.record("SELECT b FROM u", "SELECT", "u", Duration::from_micros(300), false);
        let top = s.slowest(10);
        assert_eq!(top.len(), 2);
        let a = &top[0];
        assert_eq!((a.sql.as_str(), a.count, a.slow_count), ("SELECT a FROM t WHERE x = $1", 100, 51));
        assert!((a.mean_ms - 50.5).abs() < 0.01, "{a:?}");
        assert_eq!(a.max_ms, 100.0);
        assert!(a.p99_ms >= 99.0 * 0.9 && a.p99_ms <= 100.0, "{a:?}");
        assert_eq!(s.slowest(1).len(), 1);
        assert_eq!(s.get("SELECT b FROM u").unwrap().count, 1);
    }

    #[test]
    fn bounded_evicting_the_least_total_time() {
        let s = QueryStats::with_capacity(3);
        s.record("heavy", "SELECT", "", Duration::from_secs(1), true);
        s.record("light", "SELECT", "", Duration::from_micros(5), false);
        s.record("mid", "SELECT", "", Duration::from_millis(5), false);
        s.record("new", "SELECT", "", Duration::from_millis(1), false);
        assert_eq!(s.len(), 3);
        assert!(s.get("light").is_none());
        assert!(s.get("heavy").is_some() && s.get("new").is_some());
    }

    #[test]
    fn buckets_are_monotonic() {
        assert_eq!(bucket_of(Duration::ZERO), 0);
        assert!(bucket_of(Duration::from_millis(1)) < bucket_of(Duration::from_millis(2)));
        assert_eq!(bucket_of(Duration::from_secs(100_000)), BUCKETS - 1);
        let i = bucket_of(Duration::from_millis(10));
        assert!(bucket_upper_ms(i) >= 10.0 && bucket_upper_ms(i) < 10.0 * 1.19);
    }
}
