//! The report's figures of one run, accumulated one row at a time ([`RunAggregator`]) so a
//! million-job run is never held in memory: the [`Summary`] (the headline, the same computation
//! as `offpeak status`), splits by provider, route and model, completions over time in adaptive
//! buckets, deferral and deadline-slack histograms, latency percentiles per provider, and failures
//! by kind with a few example messages. Everything here is bounded by the number of providers,
//! routes, models and error kinds — not by the number of jobs — except one latency per succeeded
//! job (8 bytes each), which exact percentiles need.

use crate::summary::{missed_deadline, percentile, Summary, SummaryBuilder};
use schemas::{PriceWindow, ResultRow, ResultStatus, RunId};
use std::collections::{BTreeMap, HashMap};

/// Most example messages kept per failure kind.
pub const MAX_EXAMPLES: usize = 3;
/// Characters kept of an example message.
const EXAMPLE_CHARS: usize = 240;
/// Most distinct time buckets kept while reading; past it, buckets are merged pairwise.
const MAX_TIME_BUCKETS: usize = 2048;
/// Time bucket widths, milliseconds, finest first (a simulated run lasts seconds): each divides
/// the next, so buckets merge exactly, and each reads well on an axis ("jobs per 5 min").
/// Past the last, widths double.
pub const BUCKET_LADDER_MS: &[i64] = &[
    100, 200, 1_000, 2_000, 10_000, 30_000, 60_000, 300_000, 600_000, 1_800_000, 3_600_000,
    7_200_000, 21_600_000, 43_200_000, 86_400_000,
];

/// The next width of the ladder after `w`.
pub fn coarser(w: i64) -> i64 {
    BUCKET_LADDER_MS
        .iter()
        .copied()
        .find(|l| *l > w)
        .unwrap_or(w * 2)
}

/// Upper bounds (exclusive, milliseconds) of the deferral histogram's buckets, after the first
/// bucket (not deferred at all); the last bucket is open.
pub const DEFERRAL_BOUNDS_MS: &[(i64, &str)] = &[
    (1_000, "< 1 s"),
    (10_000, "1–10 s"),
    (60_000, "10 s–1 min"),
    (600_000, "1–10 min"),
    (3_600_000, "10–60 min"),
    (21_600_000, "1–6 h"),
];
/// Upper bounds (exclusive, milliseconds) of the slack histogram (deadline − completion), after
/// the first bucket (missed); the last bucket is open.
pub const SLACK_BOUNDS_MS: &[(i64, &str)] = &[
    (60_000, "< 1 min"),
    (600_000, "1–10 min"),
    (3_600_000, "10–60 min"),
    (21_600_000, "1–6 h"),
    (86_400_000, "6–24 h"),
];

/// Jobs, outcomes and money of one slice of a run (a provider, a route, a model).
#[derive(Debug, Default, Clone)]
pub struct Split {
    pub succeeded: u64,
    pub failed: u64,
    pub cost_usd: f64,
    pub baseline_cost_usd: f64,
}

/// One failure kind: how many jobs, and the first few messages.
#[derive(Debug, Default, Clone)]
pub struct FailureKind {
    pub count: u64,
    pub examples: Vec<String>,
}

/// Latency percentiles of one provider's succeeded jobs, milliseconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Latency {
    pub jobs: u64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub max: u64,
}

/// Completions (succeeded jobs) over time: `counts[bucket][provider]`, buckets of `width_ms`
/// starting at `start_ms` (Unix milliseconds).
#[derive(Debug, Clone, Default)]
pub struct Timeline {
    pub start_ms: i64,
    pub width_ms: i64,
    pub providers: Vec<String>,
    pub counts: Vec<Vec<u64>>,
}

/// What the run was submitted with (from its manifest).
#[derive(Debug, Clone, Default)]
pub struct RunMeta {
    pub run_id: String,
    pub location: String,
    pub job_count: u64,
    pub input_file: String,
    pub input_sha256: String,
    /// SHA-256 of the manifest's catalog snapshot as compact JSON.
    pub catalog_sha256: String,
    pub offpeak_version: String,
    pub submitted_at: String,
    pub published_at: Option<String>,
    /// Rows of job ids not in the run's job list, left out of every figure.
    pub foreign_rows: u64,
}

/// A daily UTC price window of the catalog, with the offers it applies to.
#[derive(Debug, Clone, PartialEq)]
pub struct Shade {
    pub window: PriceWindow,
    pub offers: Vec<String>,
}

/// Everything the report shows about one run.
#[derive(Debug)]
pub struct RunFigures {
    pub meta: RunMeta,
    pub summary: Summary,
    pub by_provider: BTreeMap<String, Split>,
    pub by_route: BTreeMap<String, Split>,
    pub by_model: BTreeMap<String, Split>,
    pub timeline: Timeline,
    /// Jobs not deferred, then one count per [`DEFERRAL_BOUNDS_MS`] bucket, then the open one.
    pub deferral_hist: Vec<u64>,
    /// Jobs that missed their deadline, one count per [`SLACK_BOUNDS_MS`] bucket, the open one.
    pub slack_hist: Vec<u64>,
    pub latency: BTreeMap<String, Latency>,
    pub failures: BTreeMap<String, FailureKind>,
    /// The catalog's price windows, for shading the timeline.
    pub shades: Vec<Shade>,
}

/// Accumulates a run's [`RunFigures`] one row at a time.
#[derive(Debug)]
pub struct RunAggregator {
    summary: SummaryBuilder,
    by_provider: BTreeMap<String, Split>,
    by_route: BTreeMap<String, Split>,
    by_model: BTreeMap<String, Split>,
    width_ms: i64,
    /// Completions keyed by (bucket index at `width_ms`, provider index).
    buckets: HashMap<(i64, usize), u64>,
    providers: Vec<String>,
    deferral_hist: Vec<u64>,
    slack_hist: Vec<u64>,
    latencies: BTreeMap<String, Vec<u64>>,
    failures: BTreeMap<String, FailureKind>,
}

impl Default for RunAggregator {
    fn default() -> Self {
        RunAggregator {
            summary: SummaryBuilder::default(),
            by_provider: BTreeMap::new(),
            by_route: BTreeMap::new(),
            by_model: BTreeMap::new(),
            width_ms: BUCKET_LADDER_MS[0],
            buckets: HashMap::new(),
            providers: Vec::new(),
            deferral_hist: vec![0; DEFERRAL_BOUNDS_MS.len() + 2],
            slack_hist: vec![0; SLACK_BOUNDS_MS.len() + 2],
            latencies: BTreeMap::new(),
            failures: BTreeMap::new(),
        }
    }
}

/// The bucket of `v` among `bounds` (exclusive upper bounds), after `offset` leading buckets.
fn bucket_of(v: i64, bounds: &[(i64, &str)], offset: usize) -> usize {
    offset
        + bounds
            .iter()
            .position(|(b, _)| v < *b)
            .unwrap_or(bounds.len())
}

fn add_split(map: &mut BTreeMap<String, Split>, key: &str, r: &ResultRow) {
    // Look up before allocating: nearly every row finds its key.
    if !map.contains_key(key) {
        map.insert(key.to_string(), Split::default());
    }
    let Some(s) = map.get_mut(key) else {
        return;
    };
    match r.status {
        ResultStatus::Succeeded => s.succeeded += 1,
        ResultStatus::Failed => s.failed += 1,
    }
    s.cost_usd += r.cost_usd;
    s.baseline_cost_usd += r.baseline_cost_usd;
}

impl RunAggregator {
    /// Counts one de-duplicated row of the run.
    pub fn add(&mut self, r: &ResultRow) {
        self.summary.add(r);
        let provider = r.provider.as_deref().unwrap_or("(none)");
        add_split(&mut self.by_provider, provider, r);
        add_split(
            &mut self.by_route,
            r.route.as_deref().unwrap_or("(none)"),
            r,
        );
        add_split(&mut self.by_model, &r.model, r);
        let deferral = if r.deferred_ms == 0 && r.deferrals == 0 {
            0
        } else {
            bucket_of(r.deferred_ms as i64, DEFERRAL_BOUNDS_MS, 1)
        };
        self.deferral_hist[deferral] += 1;
        let slack = (r.deadline - r.completed_at).num_milliseconds();
        let slack = if missed_deadline(r) {
            0
        } else {
            bucket_of(slack, SLACK_BOUNDS_MS, 1)
        };
        self.slack_hist[slack] += 1;
        match r.status {
            ResultStatus::Succeeded => {
                match self.latencies.get_mut(provider) {
                    Some(v) => v.push(r.latency_ms),
                    None => {
                        self.latencies
                            .insert(provider.to_string(), vec![r.latency_ms]);
                    }
                }
                let p = match self.providers.iter().position(|p| p == provider) {
                    Some(i) => i,
                    None => {
                        self.providers.push(provider.to_string());
                        self.providers.len() - 1
                    }
                };
                let t = r.completed_at.timestamp_millis().div_euclid(self.width_ms);
                *self.buckets.entry((t, p)).or_default() += 1;
                if self.buckets.len() > MAX_TIME_BUCKETS * self.providers.len().max(1) {
                    self.coarsen();
                }
            }
            ResultStatus::Failed => {
                let kind = r.error_kind.as_deref().unwrap_or("(unknown)");
                if !self.failures.contains_key(kind) {
                    self.failures
                        .insert(kind.to_string(), FailureKind::default());
                }
                let Some(f) = self.failures.get_mut(kind) else {
                    return;
                };
                f.count += 1;
                if f.examples.len() < MAX_EXAMPLES {
                    let msg: String = r
                        .error_message
                        .as_deref()
                        .unwrap_or("")
                        .chars()
                        .take(EXAMPLE_CHARS)
                        .collect();
                    if !f.examples.contains(&msg) {
                        f.examples.push(msg);
                    }
                }
            }
        }
    }

    /// Widens the time buckets (up the ladder) until few enough remain.
    fn coarsen(&mut self) {
        while self.buckets.len() > MAX_TIME_BUCKETS * self.providers.len().max(1) / 2 {
            let wider = coarser(self.width_ms);
            let k = wider / self.width_ms;
            self.width_ms = wider;
            let old = std::mem::take(&mut self.buckets);
            for ((t, p), n) in old {
                *self.buckets.entry((t.div_euclid(k), p)).or_default() += n;
            }
        }
    }

    /// The figures of the rows counted. `meta` comes from the manifest; `shades` from the
    /// catalog's price windows.
    pub fn finish(self, run_id: &RunId, meta: RunMeta, shades: Vec<Shade>) -> RunFigures {
        let mut summary = self.summary.finish(run_id, meta.job_count, &meta.location);
        summary.foreign_rows = meta.foreign_rows;
        let latency = self
            .latencies
            .into_iter()
            .map(|(p, mut v)| {
                v.sort_unstable();
                let l = Latency {
                    jobs: v.len() as u64,
                    p50: percentile(&v, 0.5),
                    p90: percentile(&v, 0.9),
                    p99: percentile(&v, 0.99),
                    max: v.last().copied().unwrap_or(0),
                };
                (p, l)
            })
            .collect();
        let timeline = timeline(self.width_ms, &self.buckets, self.providers);
        RunFigures {
            meta,
            summary,
            by_provider: self.by_provider,
            by_route: self.by_route,
            by_model: self.by_model,
            timeline,
            deferral_hist: self.deferral_hist,
            slack_hist: self.slack_hist,
            latency,
            failures: self.failures,
            shades,
        }
    }
}

/// The dense timeline of sparse buckets, providers in name order.
fn timeline(width_ms: i64, buckets: &HashMap<(i64, usize), u64>, names: Vec<String>) -> Timeline {
    let (Some(lo), Some(hi)) = (
        buckets.keys().map(|k| k.0).min(),
        buckets.keys().map(|k| k.0).max(),
    ) else {
        return Timeline {
            width_ms,
            ..Timeline::default()
        };
    };
    let mut order: Vec<usize> = (0..names.len()).collect();
    order.sort_by(|a, b| names[*a].cmp(&names[*b]));
    let rank: Vec<usize> = {
        let mut rank = vec![0; names.len()];
        for (r, i) in order.iter().enumerate() {
            rank[*i] = r;
        }
        rank
    };
    let mut counts = vec![vec![0u64; names.len()]; (hi - lo + 1) as usize];
    for ((t, p), n) in buckets {
        counts[(t - lo) as usize][rank[*p]] += n;
    }
    Timeline {
        start_ms: lo * width_ms,
        width_ms,
        providers: order.into_iter().map(|i| names[i].clone()).collect(),
        counts,
    }
}

/// The distinct price windows of `offers` (`provider/model`, its windows), each with the offers
/// it applies to (a window of multiplier 1 changes nothing and is left out).
pub fn shades_of<'a>(offers: impl IntoIterator<Item = (String, &'a [PriceWindow])>) -> Vec<Shade> {
    let mut out: Vec<Shade> = Vec::new();
    for (offer, windows) in offers {
        for w in windows.iter().filter(|w| w.multiplier != 1.0) {
            match out.iter_mut().find(|s| s.window == *w) {
                Some(s) => s.offers.push(offer.clone()),
                None => out.push(Shade {
                    window: *w,
                    offers: vec![offer.clone()],
                }),
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(i: i64, status: ResultStatus) -> ResultRow {
        let at = chrono::DateTime::from_timestamp(1_764_000_000, 0).unwrap_or_default();
        let mut r = ResultRow::blank("r".into(), format!("j{i}"), status, at);
        r.completed_at = at + chrono::Duration::seconds(i);
        r.deadline = at + chrono::Duration::seconds(100);
        r.provider = Some(if i % 2 == 0 { "a" } else { "b" }.into());
        r.cost_usd = 0.5;
        r.latency_ms = i as u64;
        r.error_message = Some(format!("boom {i}"));
        r
    }

    #[test]
    fn a_long_run_is_kept_in_few_time_buckets_and_every_completion_is_counted() {
        let mut a = RunAggregator::default();
        // Ten thousand seconds at one completion a second: 100 000 finest buckets.
        for i in 0..10_000 {
            a.add(&row(i, ResultStatus::Succeeded));
        }
        let f = a.finish(&RunId::new("r").unwrap(), RunMeta::default(), vec![]);
        let total: u64 = f.timeline.counts.iter().flatten().sum();
        assert_eq!(total, 10_000);
        assert!(
            f.timeline.counts.len() <= MAX_TIME_BUCKETS,
            "{}",
            f.timeline.counts.len()
        );
        assert_eq!(f.timeline.providers, ["a", "b"]);
        assert_eq!(f.summary.deadline_misses, 10_000 - 101);
        assert_eq!(f.slack_hist[0], 10_000 - 101);
        assert_eq!(f.latency["a"].jobs, 5_000);
        assert_eq!(f.latency["b"].max, 9_999);
    }

    #[test]
    fn failures_keep_a_few_distinct_examples_but_count_them_all() {
        let mut a = RunAggregator::default();
        for i in 0..50 {
            let mut r = row(i, ResultStatus::Failed);
            r.error_kind = Some("terminal".into());
            a.add(&r);
        }
        let f = a.finish(&RunId::new("r").unwrap(), RunMeta::default(), vec![]);
        assert_eq!(f.failures["terminal"].count, 50);
        assert_eq!(
            f.failures["terminal"].examples,
            ["boom 0", "boom 1", "boom 2"]
        );
        assert_eq!(f.summary.failed, 50);
    }
}
