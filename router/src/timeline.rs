//! The plan of the capacity ahead at one provider. Every dispatch advances a per-resource
//! virtual clock (requests, tokens, slot-time for the concurrency limit) at the provider's rate;
//! every deferred job may *reserve* capacity before its latest start. Reservations are kept in
//! earliest-deadline-first order per pool (a stretch of time with one price per offer, never
//! longer than a UTC day), so a job asking "when could I start here, given everything already
//! promised?" gets the instant its turn comes — or learns that the queue ahead would push it past
//! its deadline, and escalates now instead of missing it later.

use crate::min_tree::MinTree;
use chrono::{DateTime, Duration, Utc};
use schemas::Limits;
use std::collections::BTreeMap;

/// Index of each planned resource: requests, tokens, slot-time (the concurrency limit).
pub(crate) const SLOT: usize = 2;
/// Latency assumed for slot-time before any request to the provider has finished (seconds):
/// optimistic, since admitting too much costs a short wait at the concurrency gate while
/// admitting too little sends jobs to dearer pairs; the estimate adapts within a few requests.
pub(crate) const DEFAULT_LATENCY_S: f64 = 2.0;
/// Weight of the newest observation in the latency estimate.
pub(crate) const LATENCY_EWMA: f64 = 0.1;
pub(crate) const EPS: f64 = 1e-9;
/// A job that must start within this many minutes may use the burst the token buckets hold
/// (paced work leaves it for such jobs); others are paced at the sustained rate.
pub(crate) const BURST_HORIZON_MIN: f64 = 5.0;
/// A job whose turn has come waits in place this long at most before joining the line.
pub(crate) const HEAD_SLACK_MS: i64 = 20;

pub(crate) fn secs(s: f64) -> Duration {
    Duration::milliseconds((s * 1000.0) as i64)
}

/// Minutes since the Unix epoch (the plan's time axis).
pub(crate) fn minutes(t: DateTime<Utc>) -> f64 {
    t.timestamp_millis() as f64 / 60_000.0
}

pub(crate) fn from_minutes(m: f64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis((m * 60_000.0).ceil() as i64)
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// The capacity ahead at one provider: per resource a rate (units a minute) and a virtual clock
/// (when everything dispatched so far would have drained at that rate), and the pools of
/// reservations.
#[derive(Debug, Clone)]
pub(crate) struct Timeline {
    pub(crate) rates: [Option<f64>; 3],
    pub(crate) tat: [f64; 3],
    /// Where the line of jobs whose turn came while the provider was busy ends (minutes).
    pub(crate) line: f64,
    /// Minutes of the UTC day at which a pool ends and the next begins (always holds 0).
    pub(crate) edges: Vec<u32>,
    pub(crate) pools: BTreeMap<i64, Pool>,
    pub(crate) latency_s: Option<f64>,
}

impl Timeline {
    pub(crate) fn new(limits: &Limits, now: DateTime<Utc>) -> Timeline {
        let m = minutes(now);
        Timeline {
            rates: [
                limits.rpm.map(f64::from),
                limits.tpm.map(|n| n as f64),
                limits.concurrency.map(f64::from),
            ],
            tat: [m; 3],
            line: m,
            edges: vec![0],
            pools: BTreeMap::new(),
            latency_s: None,
        }
    }

    /// The pool holding minute `m`: `[start, end)` in minutes since the epoch.
    pub(crate) fn pool_bounds(&self, m: i64) -> (i64, i64) {
        let day = m.div_euclid(1440) * 1440;
        let mod_ = m.rem_euclid(1440) as u32;
        let i = self.edges.partition_point(|e| *e <= mod_);
        let from = self.edges[i - 1];
        let to = self.edges.get(i).copied().unwrap_or(1440);
        (day + i64::from(from), day + i64::from(to))
    }

    /// A dispatch of `d` at minute `now` pushes each virtual clock on.
    pub(crate) fn advance(&mut self, d: &[f64; 3], now: f64) {
        for ((tat, rate), d) in self.tat.iter_mut().zip(&self.rates).zip(d) {
            if let Some(rate) = rate {
                *tat = tat.max(now) + d / rate;
            }
        }
    }

    /// How far ahead of now the virtual clock of resource `r` may run for urgent work: the
    /// burst of its token bucket (a minute's worth for rpm and tpm; none for slot-time).
    pub(crate) fn burst_min(&self, r: usize) -> f64 {
        if r == SLOT || self.rates[r].is_none() {
            0.0
        } else {
            1.0
        }
    }

    /// Where the capacity of resource `r` for urgent work starts, seen from `base`: the virtual
    /// clock, less what the bucket holds (full when the clock is behind `base`, less by as much
    /// as the clock runs ahead of it).
    pub(crate) fn burst_start(&self, r: usize, base: f64) -> f64 {
        let lead = (self.tat[r] - base).max(0.0);
        base.max(self.tat[r]) - (self.burst_min(r) - lead).max(0.0)
    }

    /// A job whose turn came takes the place at `at` in the line; the next one queues after it.
    pub(crate) fn join_line(&mut self, d: &[f64; 3], at: f64) {
        let service = (0..3)
            .filter_map(|r| self.rates[r].map(|rate| d[r] / rate))
            .fold(0.0, f64::max);
        self.line = self.line.max(at) + service;
    }

    pub(crate) fn reserve(&mut self, d: &[f64; 3], at: f64, by: f64) -> (i64, usize, i64) {
        let (ps, pe) = self.pool_bounds(at.floor() as i64);
        let len = (pe - ps) as usize;
        let hi = by.min(pe as f64 - 1e-4);
        let idx = ((hi - ps as f64).floor().max(0.0) as usize).min(len - 1);
        let rates = self.rates;
        let pool = self
            .pools
            .entry(ps)
            .or_insert_with(|| Pool::new(ps, len, &rates));
        for (r, tree) in pool.trees.iter_mut().enumerate() {
            if let Some(tree) = tree {
                tree.add_range(idx, len - 1, -d[r]);
            }
        }
        (ps, idx, ps + idx as i64)
    }

    pub(crate) fn unreserve(&mut self, pool: i64, idx: usize, d: &[f64; 3]) {
        if let Some(p) = self.pools.get_mut(&pool) {
            let len = p.len;
            for (r, tree) in p.trees.iter_mut().enumerate() {
                if let Some(tree) = tree {
                    tree.add_range(idx, len - 1, d[r]);
                }
            }
        }
    }
}

/// Reservations in one pool. Per resource, leaf `i` holds `rate·i − reserved(due ≤ start + i)`:
/// the capacity from the pool's start to minute `i` left after every reservation due by then.
#[derive(Debug, Clone)]
pub(crate) struct Pool {
    pub(crate) start: i64,
    pub(crate) len: usize,
    pub(crate) trees: [Option<MinTree>; 3],
}

impl Pool {
    pub(crate) fn new(start: i64, len: usize, rates: &[Option<f64>; 3]) -> Pool {
        Pool {
            start,
            len,
            trees: rates.map(|r| r.map(|rate| MinTree::new(len, |i| rate * i as f64))),
        }
    }
}
