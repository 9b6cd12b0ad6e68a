//! The run summary, computed from the result rows as stored (so it always agrees with the
//! Parquet files): outcomes, cost against the dearest-provider baseline, deferrals, escalations,
//! deadline misses, a per-provider split and latency percentiles. `offpeak status`, the local
//! run's summary and the headline of `offpeak report` are this one computation
//! ([`SummaryBuilder`]), fed the same de-duplicated rows.

use schemas::{ResultRow, ResultStatus, RunId};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write;

/// Per-provider totals.
#[derive(Debug, Default, Serialize)]
pub struct ProviderSplit {
    pub jobs: u64,
    pub cost_usd: f64,
    pub input_tokens: u64,
    pub output_tokens: u64,
}

/// Totals of one run.
#[derive(Debug, Serialize)]
pub struct Summary {
    pub run_id: String,
    pub location: String,
    pub submitted: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub cost_usd: f64,
    pub baseline_cost_usd: f64,
    pub savings_pct: f64,
    pub deferrals: u64,
    pub deferred_jobs: u64,
    pub escalations: u64,
    /// Jobs whose row was written after their deadline (succeeded late, or failed past it).
    pub deadline_misses: u64,
    pub latency_p50_ms: u64,
    pub latency_p95_ms: u64,
    pub providers: BTreeMap<String, ProviderSplit>,
    /// Succeeded jobs, cost and savings by route (`realtime`, `flex`, `batch`).
    pub routes: BTreeMap<String, RouteSplit>,
    /// Jobs carried by provider batches still running (`status` reads the batch records).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub in_provider_batches: Option<u64>,
    pub failures: BTreeMap<String, u64>,
    /// Rows whose `job_id` is not in the run's job list (`_jobs`): someone else published
    /// under the run's id. Left out of every figure above.
    pub foreign_rows: u64,
    /// The run's dead letters on the broker, when `status` was given one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dead_letters: Option<DeadLetterSummary>,
}

/// Dead letters of a run, as `status` shows them (counted apart from the rows: a dead letter of
/// a refused message has no row).
#[derive(Debug, Serialize)]
#[serde(tag = "scope", rename_all = "snake_case")]
pub enum DeadLetterSummary {
    /// The run's own dead letters: how many the broker holds, how many were read, and the
    /// read ones counted by reason (most frequent first).
    Run {
        total: u64,
        read: u64,
        by_reason: Vec<ReasonCount>,
    },
    /// Only the depth of the broker's dead-letter queue, every run together (RabbitMQ).
    AllRuns { depth: u64, queue: String },
    /// The broker could not be read.
    Unavailable { error: String },
}

/// One dead-letter reason and how many letters gave it.
#[derive(Debug, Serialize)]
pub struct ReasonCount {
    pub reason: String,
    pub count: u64,
}

/// One route's share of a run.
#[derive(Debug, Default, Serialize)]
pub struct RouteSplit {
    pub jobs: u64,
    pub cost_usd: f64,
    pub baseline_cost_usd: f64,
    pub savings_pct: f64,
}

/// Most reasons listed by [`Summary::render`]; the rest are summed on one line.
const MAX_REASONS_SHOWN: usize = 10;

/// The `p` quantile (0–1) of sorted values, by nearest rank; 0 for none.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

impl DeadLetterSummary {
    /// The summary of what a broker told about a run's dead letters.
    pub fn from_broker(d: &queue::RunDeadLetters, namespace: &str) -> DeadLetterSummary {
        match d {
            queue::RunDeadLetters::Run { letters, total } => DeadLetterSummary::Run {
                total: *total,
                read: letters.len() as u64,
                by_reason: d
                    .by_reason()
                    .into_iter()
                    .map(|(reason, count)| ReasonCount { reason, count })
                    .collect(),
            },
            queue::RunDeadLetters::AllRuns { depth } => DeadLetterSummary::AllRuns {
                depth: *depth,
                queue: format!("{namespace}.dlq"),
            },
        }
    }
}

/// Accumulates [`Summary`] figures one row at a time, so a run too large to hold in memory
/// (`offpeak report`) is summarised by the same code as `offpeak status`.
#[derive(Debug, Default)]
pub struct SummaryBuilder {
    s: Totals,
    latencies: Vec<u64>,
}

/// The additive part of a [`Summary`].
#[derive(Debug, Default)]
struct Totals {
    succeeded: u64,
    failed: u64,
    cost_usd: f64,
    baseline_cost_usd: f64,
    deferrals: u64,
    deferred_jobs: u64,
    escalations: u64,
    deadline_misses: u64,
    providers: BTreeMap<String, ProviderSplit>,
    routes: BTreeMap<String, RouteSplit>,
    failures: BTreeMap<String, u64>,
}

/// Whether a row was written after its job's deadline.
pub fn missed_deadline(r: &ResultRow) -> bool {
    r.completed_at > r.deadline
}

impl SummaryBuilder {
    /// Counts one de-duplicated row.
    pub fn add(&mut self, r: &ResultRow) {
        let s = &mut self.s;
        s.cost_usd += r.cost_usd;
        s.baseline_cost_usd += r.baseline_cost_usd;
        s.deferrals += u64::from(r.deferrals);
        s.deferred_jobs += u64::from(r.deferrals > 0);
        s.escalations += u64::from(r.escalated);
        s.deadline_misses += u64::from(missed_deadline(r));
        match r.status {
            ResultStatus::Succeeded => {
                s.succeeded += 1;
                self.latencies.push(r.latency_ms);
                let p = s
                    .providers
                    .entry(r.provider.clone().unwrap_or_default())
                    .or_default();
                p.jobs += 1;
                p.cost_usd += r.cost_usd;
                p.input_tokens += r.input_tokens;
                p.output_tokens += r.output_tokens;
                let route = r.route.clone().unwrap_or_else(|| "realtime".into());
                let rs = s.routes.entry(route).or_default();
                rs.jobs += 1;
                rs.cost_usd += r.cost_usd;
                rs.baseline_cost_usd += r.baseline_cost_usd;
            }
            ResultStatus::Failed => {
                s.failed += 1;
                *s.failures
                    .entry(r.error_kind.clone().unwrap_or_default())
                    .or_default() += 1;
            }
        }
    }

    /// The summary of the rows counted, for a run that had `submitted` jobs.
    pub fn finish(self, run_id: &RunId, submitted: u64, location: &str) -> Summary {
        let SummaryBuilder {
            s: t,
            mut latencies,
        } = self;
        latencies.sort_unstable();
        let mut s = Summary {
            run_id: run_id.to_string(),
            location: location.to_string(),
            submitted,
            succeeded: t.succeeded,
            failed: t.failed,
            cost_usd: t.cost_usd,
            baseline_cost_usd: t.baseline_cost_usd,
            savings_pct: 0.0,
            deferrals: t.deferrals,
            deferred_jobs: t.deferred_jobs,
            escalations: t.escalations,
            deadline_misses: t.deadline_misses,
            latency_p50_ms: percentile(&latencies, 0.5),
            latency_p95_ms: percentile(&latencies, 0.95),
            providers: t.providers,
            routes: t.routes,
            in_provider_batches: None,
            failures: t.failures,
            foreign_rows: 0,
            dead_letters: None,
        };
        if s.baseline_cost_usd > 0.0 {
            s.savings_pct = (1.0 - s.cost_usd / s.baseline_cost_usd) * 100.0;
        }
        for r in s.routes.values_mut() {
            if r.baseline_cost_usd > 0.0 {
                r.savings_pct = (1.0 - r.cost_usd / r.baseline_cost_usd) * 100.0;
            }
        }
        s
    }
}

impl Summary {
    /// Summarises de-duplicated rows of a run that had `submitted` jobs.
    pub fn from_rows(
        run_id: &RunId,
        rows: &[ResultRow],
        submitted: u64,
        location: &str,
    ) -> Summary {
        let mut b = SummaryBuilder::default();
        for r in rows {
            b.add(r);
        }
        b.finish(run_id, submitted, location)
    }

    /// A human-readable table.
    pub fn render(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(
            o,
            "run {}  →  {}/run={}/",
            self.run_id, self.location, self.run_id
        );
        let _ = writeln!(
            o,
            "  jobs        {} submitted, {} succeeded, {} failed, {} pending",
            self.submitted,
            self.succeeded,
            self.failed,
            self.submitted.saturating_sub(self.succeeded + self.failed)
        );
        let _ = writeln!(o, "  cost        ${:.6}", self.cost_usd);
        let _ = writeln!(
            o,
            "  baseline    ${:.6}  (every job at the dearest eligible provider)",
            self.baseline_cost_usd
        );
        let _ = writeln!(o, "  savings     {:.1}%", self.savings_pct);
        let _ = writeln!(
            o,
            "  deferrals   {} ({} jobs)   escalations {}",
            self.deferrals, self.deferred_jobs, self.escalations
        );
        if self.deadline_misses > 0 {
            let _ = writeln!(
                o,
                "  late        {} jobs finished after their deadline",
                self.deadline_misses
            );
        }
        let _ = writeln!(
            o,
            "  latency     p50 {} ms   p95 {} ms",
            self.latency_p50_ms, self.latency_p95_ms
        );
        if !self.providers.is_empty() {
            let _ = writeln!(
                o,
                "  {:<20} {:>8} {:>14} {:>12} {:>12}",
                "provider", "jobs", "cost", "in tokens", "out tokens"
            );
            for (name, p) in &self.providers {
                let _ = writeln!(
                    o,
                    "  {:<20} {:>8} {:>14} {:>12} {:>12}",
                    name,
                    p.jobs,
                    format!("${:.6}", p.cost_usd),
                    p.input_tokens,
                    p.output_tokens
                );
            }
        }
        if self.routes.len() > 1 || self.routes.keys().any(|r| r != "realtime") {
            let _ = writeln!(
                o,
                "  {:<20} {:>8} {:>14} {:>8}",
                "route", "jobs", "cost", "savings"
            );
            for (name, r) in &self.routes {
                let _ = writeln!(
                    o,
                    "  {:<20} {:>8} {:>14} {:>7.1}%",
                    name,
                    r.jobs,
                    format!("${:.6}", r.cost_usd),
                    r.savings_pct
                );
            }
        }
        if let Some(n) = self.in_provider_batches.filter(|n| *n > 0) {
            let _ = writeln!(
                o,
                "  waiting     {n} jobs in provider batches still running"
            );
        }
        for (kind, n) in &self.failures {
            let _ = writeln!(o, "  failed: {n} × {kind}");
        }
        if self.foreign_rows > 0 {
            let _ = writeln!(
                o,
                "  foreign     {} rows ignored (job ids not in the run's job list)",
                self.foreign_rows
            );
        }
        match &self.dead_letters {
            None => {}
            Some(DeadLetterSummary::Run {
                total,
                read,
                by_reason,
            }) => {
                let _ = write!(o, "  dead letters {total}");
                if read < total {
                    let _ = write!(o, " (reasons of the first {read})");
                }
                let _ = writeln!(o);
                for r in by_reason.iter().take(MAX_REASONS_SHOWN) {
                    let _ = writeln!(o, "    {} × {}", r.count, r.reason);
                }
                if by_reason.len() > MAX_REASONS_SHOWN {
                    let rest: u64 = by_reason[MAX_REASONS_SHOWN..].iter().map(|r| r.count).sum();
                    let _ = writeln!(
                        o,
                        "    {rest} more with {} other reasons",
                        by_reason.len() - MAX_REASONS_SHOWN
                    );
                }
            }
            Some(DeadLetterSummary::AllRuns { depth, queue }) => {
                let _ = writeln!(
                    o,
                    "  dead letters {depth} in {queue}, all runs together (this broker cannot list one run's)"
                );
            }
            Some(DeadLetterSummary::Unavailable { error }) => {
                let _ = writeln!(o, "  dead letters unknown: {error}");
            }
        }
        o
    }
}
