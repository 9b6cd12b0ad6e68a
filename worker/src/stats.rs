//! Counters a worker keeps about itself, read by the progress bar, the run summary and the
//! Prometheus endpoint.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// A monotonically increasing count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down.
#[derive(Debug, Default)]
pub struct Gauge(AtomicU64);

impl Gauge {
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    pub fn dec(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Fixed-bucket histogram of seconds.
#[derive(Debug)]
pub struct Histogram {
    inner: Mutex<(Vec<u64>, f64, u64)>,
}

/// Upper bounds of the histogram buckets, seconds.
pub const BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            inner: Mutex::new((vec![0; BUCKETS.len()], 0.0, 0)),
        }
    }
}

impl Histogram {
    pub fn observe(&self, s: f64) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        for (i, b) in BUCKETS.iter().enumerate() {
            if s <= *b {
                g.0[i] += 1;
            }
        }
        g.1 += s;
        g.2 += 1;
    }

    /// Cumulative bucket counts, sum and count.
    pub fn snapshot(&self) -> (Vec<u64>, f64, u64) {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// A worker's counters.
#[derive(Debug, Default)]
pub struct Stats {
    pub succeeded: Counter,
    pub failed: Counter,
    pub deferrals: Counter,
    pub escalations: Counter,
    pub provider_errors: Counter,
    pub dead_letters: Counter,
    pub in_flight: Gauge,
    pub flushed_rows: Counter,
    pub flush_errors: Counter,
    pub flush_seconds: Histogram,
    /// Cost of succeeded jobs, micro-dollars.
    pub cost_micro_usd: Counter,
}

impl Stats {
    /// Jobs finished (succeeded or failed), whether stored yet or not.
    pub fn finished(&self) -> u64 {
        self.succeeded.get() + self.failed.get()
    }
}
