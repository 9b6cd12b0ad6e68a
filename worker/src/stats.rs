//! Counters a worker keeps about itself, read by the progress bar, the run summary and the
//! Prometheus endpoint.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

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
    pub fn set(&self, v: u64) {
        self.0.store(v, Ordering::Relaxed);
    }
    /// Counts one up now and down again when the guard is dropped, whichever way the holder
    /// ends (a panicking task included).
    pub fn track(&self) -> GaugeGuard<'_> {
        self.inc();
        GaugeGuard(self)
    }
}

/// One unit of a [`Gauge`], given back on drop.
#[derive(Debug)]
pub struct GaugeGuard<'g>(&'g Gauge);

impl Drop for GaugeGuard<'_> {
    fn drop(&mut self) {
        self.0.dec();
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
    /// Workers this one plans as sharing the providers' limits with, itself included.
    pub fleet_members: Gauge,
    pub flushed_rows: Counter,
    pub flush_errors: Counter,
    pub flush_seconds: Histogram,
    /// Cost of succeeded jobs, micro-dollars.
    pub cost_micro_usd: Counter,
    /// Provider batches this worker created.
    pub batches_created: Counter,
    /// Batch lines stored as succeeded rows, and lines sent back to the queue (failed, expired,
    /// cancelled), by the batches this worker settled.
    pub batch_lines_done: Counter,
    pub batch_lines_returned: Counter,
    /// Rows stored that were written after their job's deadline.
    pub deadline_misses: Counter,
    /// When a results file was last stored, Unix seconds (0: never).
    pub last_stored_unix_s: Gauge,
    /// Messages waiting on the broker for the fleet, as last sampled (0 until sampled).
    pub queue_depth: Gauge,
    providers: Mutex<BTreeMap<String, Arc<ProviderStats>>>,
}

/// Counters kept per provider.
#[derive(Debug, Default)]
pub struct ProviderStats {
    pub succeeded: Counter,
    pub errors: Counter,
    /// Answers that were 429s (or the flex tier's capacity refusals).
    pub rate_limited: Counter,
    pub cost_micro_usd: Counter,
    /// Latency of every request (successful or not), seconds.
    pub latency: Histogram,
}

impl Stats {
    /// Jobs finished (succeeded or failed), whether stored yet or not.
    pub fn finished(&self) -> u64 {
        self.succeeded.get() + self.failed.get()
    }

    /// The counters of one provider, created on first use.
    pub fn provider(&self, name: &str) -> Arc<ProviderStats> {
        let mut m = self.providers.lock().unwrap_or_else(|p| p.into_inner());
        m.entry(name.to_string()).or_default().clone()
    }

    /// The counters in the Prometheus text exposition format (version 0.0.4).
    ///
    /// Long (over 100 lines) on purpose: one block per exported metric, in the order of the
    /// exposition, so the list of metrics reads in one place.
    pub fn render_prometheus(&self, worker: &str) -> String {
        let mut o = String::new();
        let w = escape(worker);
        let counter = |o: &mut String, name: &str, help: &str, kind: &str, v: String| {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
            let _ = writeln!(o, "{name}{{worker=\"{w}\"}} {v}");
        };
        counter(
            &mut o,
            "offpeak_jobs_succeeded_total",
            "Jobs answered.",
            "counter",
            self.succeeded.get().to_string(),
        );
        counter(
            &mut o,
            "offpeak_jobs_failed_total",
            "Jobs that ended as failed rows.",
            "counter",
            self.failed.get().to_string(),
        );
        counter(
            &mut o,
            "offpeak_deferrals_total",
            "Jobs put back on the broker to wait.",
            "counter",
            self.deferrals.get().to_string(),
        );
        counter(
            &mut o,
            "offpeak_escalations_total",
            "Jobs sent to a dearer provider than the cheapest.",
            "counter",
            self.escalations.get().to_string(),
        );
        counter(
            &mut o,
            "offpeak_dead_letters_total",
            "Messages dead-lettered.",
            "counter",
            self.dead_letters.get().to_string(),
        );
        counter(
            &mut o,
            "offpeak_batches_created_total",
            "Provider batches created.",
            "counter",
            self.batches_created.get().to_string(),
        );
        counter(
            &mut o,
            "offpeak_batch_lines_done_total",
            "Provider batch lines stored as succeeded results.",
            "counter",
            self.batch_lines_done.get().to_string(),
        );
        counter(
            &mut o,
            "offpeak_batch_lines_returned_total",
            "Provider batch lines sent back to the queue (failed, expired, cancelled).",
            "counter",
            self.batch_lines_returned.get().to_string(),
        );
        counter(
            &mut o,
            "offpeak_jobs_in_flight",
            "Jobs being processed now.",
            "gauge",
            self.in_flight.get().to_string(),
        );
        counter(
            &mut o,
            "offpeak_fleet_members",
            "Workers sharing the providers' limits, as this one counts them (itself included).",
            "gauge",
            self.fleet_members.get().to_string(),
        );
        counter(
            &mut o,
            "offpeak_rows_stored_total",
            "Result rows durably stored.",
            "counter",
            self.flushed_rows.get().to_string(),
        );
        counter(
            &mut o,
            "offpeak_flush_errors_total",
            "Failed attempts to store a results file.",
            "counter",
            self.flush_errors.get().to_string(),
        );
        counter(
            &mut o,
            "offpeak_cost_usd_total",
            "Cost of answered jobs, USD.",
            "counter",
            format!("{}", self.cost_micro_usd.get() as f64 / 1e6),
        );
        counter(
            &mut o,
            "offpeak_deadline_misses_total",
            "Result rows stored that were written after their job's deadline.",
            "counter",
            self.deadline_misses.get().to_string(),
        );
        counter(
            &mut o,
            "offpeak_last_store_timestamp_seconds",
            "When a results file was last stored (Unix seconds; 0 before the first).",
            "gauge",
            self.last_stored_unix_s.get().to_string(),
        );
        counter(
            &mut o,
            "offpeak_queue_depth",
            "Messages waiting on the broker, as last sampled by this worker.",
            "gauge",
            self.queue_depth.get().to_string(),
        );
        histogram(
            &mut o,
            "offpeak_flush_seconds",
            "Time to store one results file.",
            &[("worker", &w)],
            &self.flush_seconds,
            true,
        );
        let providers: Vec<(String, Arc<ProviderStats>)> = self
            .providers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (i, (name, kind, help)) in [
            (
                "offpeak_provider_jobs_succeeded_total",
                "counter",
                "Jobs answered, by provider.",
            ),
            (
                "offpeak_provider_errors_total",
                "counter",
                "Failed requests, by provider.",
            ),
            (
                "offpeak_provider_cost_usd_total",
                "counter",
                "Cost of answered jobs by provider, USD.",
            ),
            (
                "offpeak_provider_rate_limited_total",
                "counter",
                "Requests answered 429 (rate limited), by provider.",
            ),
        ]
        .into_iter()
        .enumerate()
        {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (p, st) in &providers {
                let v = match i {
                    0 => st.succeeded.get().to_string(),
                    1 => st.errors.get().to_string(),
                    2 => format!("{}", st.cost_micro_usd.get() as f64 / 1e6),
                    _ => st.rate_limited.get().to_string(),
                };
                let _ = writeln!(o, "{name}{{worker=\"{w}\",provider=\"{}\"}} {v}", escape(p));
            }
        }
        for (j, (p, st)) in providers.iter().enumerate() {
            let p = escape(p);
            histogram(
                &mut o,
                "offpeak_provider_request_seconds",
                "Provider request latency.",
                &[("worker", &w), ("provider", &p)],
                &st.latency,
                j == 0,
            );
        }
        o
    }
}

/// The gauges that need more than the counters: whether the worker is ready (`/readyz`), and
/// whether each provider's circuit is open (`circuits`: capacity key, open).
pub fn render_state_gauges(worker: &str, ready: bool, circuits: &[(String, bool)]) -> String {
    let w = escape(worker);
    let mut o = String::new();
    let _ = writeln!(
        o,
        "# HELP offpeak_worker_ready Whether the worker is ready (connected to its broker, its store accepting writes).\n# TYPE offpeak_worker_ready gauge\noffpeak_worker_ready{{worker=\"{w}\"}} {}",
        u8::from(ready)
    );
    let _ = writeln!(
        o,
        "# HELP offpeak_provider_circuit_open Whether the provider's circuit breaker is open (1) or closed (0).\n# TYPE offpeak_provider_circuit_open gauge"
    );
    for (p, open) in circuits {
        let _ = writeln!(
            o,
            "offpeak_provider_circuit_open{{worker=\"{w}\",provider=\"{}\"}} {}",
            escape(p),
            u8::from(*open)
        );
    }
    o
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn histogram(
    o: &mut String,
    name: &str,
    help: &str,
    labels: &[(&str, &str)],
    h: &Histogram,
    header: bool,
) {
    if header {
        let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} histogram");
    }
    let l: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    let l = l.join(",");
    let (buckets, sum, count) = h.snapshot();
    for (b, n) in BUCKETS.iter().zip(&buckets) {
        let _ = writeln!(o, "{name}_bucket{{{l},le=\"{b}\"}} {n}");
    }
    let _ = writeln!(o, "{name}_bucket{{{l},le=\"+Inf\"}} {count}");
    let _ = writeln!(o, "{name}_sum{{{l}}} {sum}");
    let _ = writeln!(o, "{name}_count{{{l}}} {count}");
}
