//! Per-worker view of each provider's capacity: token buckets for the published rpm/tpm limits,
//! a concurrency gate, `Retry-After` blocks, and a circuit breaker. The clock is passed in, so the
//! same state machine runs on real or simulated time. Rate limits and circuits are per worker
//! (DESIGN §5): a worker stays correct without any fleet-wide view.
//!
//! On top of the gates sits a **plan of the capacity ahead**, so deferral can be scheduled instead
//! of guessed. Every dispatch advances a per-resource virtual clock (requests, tokens, slot-time
//! for the concurrency limit) at the provider's rate; every deferred job may *reserve* capacity
//! before its latest start. Reservations are kept in earliest-deadline-first order per pool (a
//! stretch of time with one price per offer, never longer than a UTC day), so a job asking
//! "when could I start on this provider, given everything already promised?" gets the instant its
//! turn comes — or learns that the queue ahead would push it past its deadline, and escalates now
//! instead of missing it later. A job with an earlier deadline is admitted ahead of reserved jobs
//! that can afford to wait; those wake, see their turn moved, and defer again.

use crate::policy::{Availability, Busy, CapacityView};
use chrono::{DateTime, Duration, Utc};
use schemas::{Catalog, Limits};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// Circuit-breaker tunables.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerConfig {
    /// Consecutive transient failures that open the circuit.
    pub failure_threshold: u32,
    /// First open period after transient failures (seconds); doubles on each re-open.
    pub open_s: f64,
    /// Longest open period for transient failures (seconds).
    pub max_open_s: f64,
    /// Open period after an auth, credit or missing-model answer (seconds): minutes, not seconds.
    pub fault_open_s: f64,
    /// Wait after a 429 without `Retry-After` (seconds); doubles while 429s continue.
    pub rate_limit_backoff_s: f64,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failure_threshold: 5,
            open_s: 10.0,
            max_open_s: 300.0,
            fault_open_s: 600.0,
            rate_limit_backoff_s: 1.0,
        }
    }
}

/// A token bucket: `capacity` tokens, refilled at `per_s` a second.
#[derive(Debug, Clone)]
struct Bucket {
    capacity: f64,
    per_s: f64,
    level: f64,
    at: DateTime<Utc>,
}

impl Bucket {
    fn per_minute(n: f64, now: DateTime<Utc>) -> Bucket {
        Bucket {
            capacity: n,
            per_s: n / 60.0,
            level: n,
            at: now,
        }
    }

    fn refill(&mut self, now: DateTime<Utc>) {
        let dt = (now - self.at).num_milliseconds().max(0) as f64 / 1000.0;
        self.level = (self.level + dt * self.per_s).min(self.capacity);
        self.at = now.max(self.at);
    }

    /// When `n` tokens will be there (a request larger than the bucket waits for a full one).
    fn ready_at(&self, n: f64, now: DateTime<Utc>) -> DateTime<Utc> {
        let mut b = self.clone();
        b.refill(now);
        let n = n.min(b.capacity);
        if b.level >= n {
            now
        } else {
            now + Duration::milliseconds(((n - b.level) / b.per_s * 1000.0).ceil() as i64)
        }
    }

    fn take(&mut self, n: f64, now: DateTime<Utc>) {
        self.refill(now);
        self.level -= n.min(self.capacity);
    }
}

/// What one worker knows about one provider.
#[derive(Debug, Clone)]
pub struct ProviderState {
    rpm: Option<Bucket>,
    tpm: Option<Bucket>,
    concurrency: Option<u32>,
    in_flight: u32,
    blocked_until: Option<DateTime<Utc>>,
    rate_limit_streak: u32,
    failures: u32,
    opens: u32,
    open_until: Option<DateTime<Utc>>,
    fault_until: Option<DateTime<Utc>>,
    /// A request sent while half-open is out: the others wait for its answer.
    probing: bool,
    /// When the last transient failure came back.
    failed_at: Option<DateTime<Utc>>,
    plan: Plan,
}

impl ProviderState {
    pub fn new(limits: &Limits, now: DateTime<Utc>) -> Self {
        ProviderState {
            rpm: limits.rpm.map(|n| Bucket::per_minute(f64::from(n), now)),
            tpm: limits.tpm.map(|n| Bucket::per_minute(n as f64, now)),
            concurrency: limits.concurrency,
            in_flight: 0,
            blocked_until: None,
            rate_limit_streak: 0,
            failures: 0,
            opens: 0,
            open_until: None,
            fault_until: None,
            probing: false,
            failed_at: None,
            plan: Plan::new(limits, now),
        }
    }

    /// Splits the plan's pools at these minutes of the UTC day (where the provider's prices
    /// change), so a job reserved in a cheap window is served inside it.
    pub fn with_price_edges(mut self, edges: impl IntoIterator<Item = u32>) -> Self {
        let mut e: Vec<u32> = edges.into_iter().filter(|m| *m < 1440).collect();
        e.push(0);
        e.sort_unstable();
        e.dedup();
        self.plan.edges = e;
        self
    }

    /// Mean latency of this provider's requests as observed so far, or a default until then.
    pub fn latency_estimate(&self) -> Duration {
        secs(self.plan.latency_s.unwrap_or(DEFAULT_LATENCY_S))
    }

    /// Feeds the latency of a finished request to the estimate the plan uses for slot-time.
    pub fn observe_latency(&mut self, latency: Duration) {
        let s = latency.num_milliseconds().max(0) as f64 / 1000.0;
        self.plan.latency_s = Some(match self.plan.latency_s {
            Some(l) => l + LATENCY_EWMA * (s - l),
            None => s,
        });
    }

    fn demand(&self, tokens: u64) -> [f64; 3] {
        [
            1.0,
            tokens as f64,
            self.plan.latency_s.unwrap_or(DEFAULT_LATENCY_S) / 60.0,
        ]
    }

    /// The earliest instant in `[from, by]` at which a request of `tokens` may start here, given
    /// the gates now, the capacity already used and every reservation with an earlier or equal
    /// deadline; `None` when it cannot start by `by`. A window that ends within a second of
    /// `now` asks only the gates: such a job goes ahead of reservations that can still wait.
    pub fn earliest(
        &self,
        tokens: u64,
        from: DateTime<Utc>,
        by: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Option<(DateTime<Utc>, Option<Busy>)> {
        if self.fault_until.is_some_and(|t| t > now) || by < now {
            return None;
        }
        if by <= now + Duration::seconds(1) {
            return match self.availability(tokens, now) {
                Availability::Now => Some((now, None)),
                Availability::At(t, b) if t <= by => Some((t, Some(b))),
                _ => None,
            };
        }
        let d = self.demand(tokens);
        let (now_m, by_m) = (minutes(now), minutes(by));
        let gates = [
            (self.open_until.filter(|t| *t > now), Busy::Down),
            (self.blocked_until.filter(|t| *t > now), Busy::RateLimited),
        ];
        let mut t = minutes(from.max(now));
        // Pools are at most a day long; a handful covers any deferral the policy asks about.
        for _ in 0..64 {
            if t > by_m {
                break;
            }
            let (ps, pe) = self.plan.pool_bounds(t.floor() as i64);
            let hi = by_m.min(pe as f64 - 1e-4);
            if let Some(found) =
                self.earliest_in_pool(&d, tokens, t, hi, ps, pe, &gates, now, now_m)
            {
                return Some(found);
            }
            t = pe as f64;
        }
        None
    }

    /// For a job whose reserved turn has come (its demand is already in the plan, so only the
    /// gates and the capacity already used hold it back): now, or else the next free place in
    /// the line of jobs whose turn came while the provider was busy — one each, so they do not
    /// all wake at the same instant.
    fn head_of_queue(
        &self,
        tokens: u64,
        by: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Option<(DateTime<Utc>, Option<Busy>)> {
        let mut at = minutes(now);
        let mut busy = None;
        let urgent = minutes(by) - at <= BURST_HORIZON_MIN;
        for r in 0..3 {
            let tat = if urgent {
                self.plan.burst_start(r, at)
            } else {
                self.plan.tat[r]
            };
            if self.plan.rates[r].is_some() && tat > at {
                at = tat;
                busy = Some(if r == SLOT {
                    Busy::Concurrency
                } else {
                    Busy::RateLimited
                });
            }
        }
        let mut at = from_minutes(at);
        match self.availability(tokens, now) {
            Availability::Now => {}
            Availability::At(t, b) => {
                if t > at {
                    busy = Some(b);
                }
                at = at.max(t);
            }
            Availability::Excluded => return None,
        }
        if at > now + Duration::milliseconds(HEAD_SLACK_MS) {
            at = at.max(from_minutes(self.plan.line));
        }
        (at <= by).then_some((at.max(now), busy))
    }

    #[allow(clippy::too_many_arguments)]
    fn earliest_in_pool(
        &self,
        d: &[f64; 3],
        tokens: u64,
        t: f64,
        hi: f64,
        ps: i64,
        pe: i64,
        gates: &[(Option<DateTime<Utc>>, Busy); 2],
        now: DateTime<Utc>,
        now_m: f64,
    ) -> Option<(DateTime<Utc>, Option<Busy>)> {
        let mut at = t;
        let mut busy = None;
        for (until, why) in gates {
            if let Some(u) = until.map(minutes).filter(|u| *u > at) {
                at = u;
                busy = Some(*why);
            }
        }
        if at > hi {
            return None;
        }
        let len = (pe - ps) as usize;
        let pool = self.plan.pools.get(&ps);
        let urgent = hi - now_m <= BURST_HORIZON_MIN;
        let l_rel = hi - ps as f64;
        let idx = (l_rel.floor().max(0.0) as usize).min(len - 1);
        // Each resource serves the queue on its own from the same start; the job goes when the
        // slowest of them reaches it.
        let base = at;
        // Indexes rates, clocks, demand and trees alike.
        #[allow(clippy::needless_range_loop)]
        for r in 0..3 {
            let Some(rate) = self.plan.rates[r] else {
                continue;
            };
            // Jobs whose turn came while the provider was busy go first (a job that just failed
            // a half-open probe joins behind them, so the next probe is someone else's).
            // A job that must start soon may draw on the burst the bucket holds: from `base`
            // on, the capacity is the rate plus whatever the bucket has saved up.
            let s0 = if urgent {
                self.plan.burst_start(r, base)
            } else {
                base.max(self.plan.tat[r]).max(self.plan.line)
            };
            let s0_rel = s0 - ps as f64;
            let tree = pool.and_then(|p| p.trees[r].as_ref());
            let before = tree.map_or(0.0, |tr| rate * idx as f64 - tr.point(idx));
            let after = match tree {
                _ if idx + 1 >= len => f64::INFINITY,
                Some(tr) => tr.min_range(idx + 1, len - 1),
                None => rate * (idx + 1) as f64,
            };
            // Everything due by the job's deadline, itself included, must fit from s0 on; and
            // everything due later must still fit once the job has gone first.
            if rate * (l_rel - s0_rel) - before < d[r] - EPS || after < rate * s0_rel + d[r] - EPS {
                return None;
            }
            let turn = (s0 + before / rate).max(base);
            if turn > at + EPS {
                at = turn;
                busy = Some(if r == SLOT {
                    Busy::Concurrency
                } else {
                    Busy::RateLimited
                });
            }
        }
        if at <= now_m + EPS {
            match self.availability(tokens, now) {
                Availability::Now => at = now_m,
                Availability::At(u, b) => {
                    at = minutes(u);
                    busy = Some(b);
                }
                Availability::Excluded => return None,
            }
        }
        (at <= hi).then(|| (from_minutes(at), busy))
    }

    /// Whether a request of `tokens` may go now, and if not, when it may.
    pub fn availability(&self, tokens: u64, now: DateTime<Utc>) -> Availability {
        if self.fault_until.is_some_and(|t| t > now) {
            return Availability::Excluded;
        }
        if let Some(t) = self.open_until.filter(|t| *t > now) {
            return Availability::At(t, Busy::Down);
        }
        if self.probing {
            // Half-open: one trial request at a time, so an outage costs one job an attempt per
            // open period, not every job that was waiting for it.
            return Availability::At(now + Duration::seconds(1), Busy::Down);
        }
        if let Some(t) = self.blocked_until.filter(|t| *t > now) {
            return Availability::At(t, Busy::RateLimited);
        }
        if self.concurrency.is_some_and(|c| self.in_flight >= c) {
            // Unknown when a slot frees; re-checking shortly is cheap and waits inline, not on the broker.
            return Availability::At(now + Duration::milliseconds(200), Busy::Concurrency);
        }
        let ready = [
            self.rpm.as_ref().map(|b| b.ready_at(1.0, now)),
            self.tpm.as_ref().map(|b| b.ready_at(tokens as f64, now)),
        ]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or(now);
        if ready > now {
            Availability::At(ready, Busy::RateLimited)
        } else {
            Availability::Now
        }
    }

    /// Takes capacity for one request if it is available now.
    pub fn try_acquire(&mut self, tokens: u64, now: DateTime<Utc>) -> bool {
        if self.availability(tokens, now) != Availability::Now {
            return false;
        }
        if let Some(b) = &mut self.rpm {
            b.take(1.0, now);
        }
        if let Some(b) = &mut self.tpm {
            b.take(tokens as f64, now);
        }
        self.in_flight += 1;
        self.probing = self.open_until.is_some();
        let d = self.demand(tokens);
        self.plan.advance(&d, minutes(now));
        true
    }

    /// A request taken with [`try_acquire`](Self::try_acquire) has ended.
    pub fn release(&mut self) {
        self.in_flight = self.in_flight.saturating_sub(1);
        self.probing = false;
    }

    /// A success of a request sent at `started`. One sent before the latest failure says
    /// nothing about the provider now (an outage may have begun since), so it does not reset the
    /// failure streak or close the circuit.
    pub fn on_success_of(&mut self, started: DateTime<Utc>) {
        if self.failed_at.is_some_and(|f| started < f) {
            self.probing = false;
            return;
        }
        self.on_success();
    }

    pub fn on_success(&mut self) {
        self.failures = 0;
        self.opens = 0;
        self.rate_limit_streak = 0;
        self.open_until = None;
        self.probing = false;
    }

    /// A 429: block until `retry_after`, or an exponential backoff when the answer gave none.
    pub fn on_rate_limited(
        &mut self,
        retry_after: Option<std::time::Duration>,
        now: DateTime<Utc>,
        cfg: &BreakerConfig,
    ) {
        self.rate_limit_streak += 1;
        self.probing = false;
        let wait = match retry_after {
            Some(d) => Duration::from_std(d).unwrap_or(Duration::seconds(60)),
            None => {
                let k = 2f64.powi(self.rate_limit_streak.min(8) as i32 - 1);
                Duration::milliseconds((cfg.rate_limit_backoff_s * k * 1000.0) as i64)
            }
        };
        let until = now + wait;
        self.blocked_until = Some(self.blocked_until.map_or(until, |b| b.max(until)));
    }

    /// A 5xx, timeout or connection error: opens the circuit after a streak of them.
    pub fn on_transient(&mut self, now: DateTime<Utc>, cfg: &BreakerConfig) {
        self.failures += 1;
        self.failed_at = Some(now);
        self.probing = false;
        let half_open = self.open_until.is_some_and(|t| t <= now);
        if self.failures >= cfg.failure_threshold || half_open {
            let k = 2f64.powi(self.opens.min(16) as i32);
            let open = (cfg.open_s * k).min(cfg.max_open_s);
            self.open_until = Some(now + Duration::milliseconds((open * 1000.0) as i64));
            self.opens += 1;
            self.failures = 0;
        }
    }

    /// The account is unusable (401/403/402/out of credit/model missing): leave it for long.
    pub fn on_provider_fault(&mut self, now: DateTime<Utc>, cfg: &BreakerConfig) {
        self.probing = false;
        self.fault_until = Some(now + Duration::milliseconds((cfg.fault_open_s * 1000.0) as i64));
    }
}

/// Every provider's state in one worker, and the capacity reserved for deferred jobs.
#[derive(Debug, Clone)]
pub struct Capacity {
    pub providers: HashMap<String, ProviderState>,
    reservations: HashMap<String, Reservation>,
    pruned_at: DateTime<Utc>,
}

/// Capacity set aside for one deferred job (keyed by job id in [`Capacity`]).
#[derive(Debug, Clone)]
struct Reservation {
    provider: String,
    /// The job's turn, as promised when it was reserved.
    at: DateTime<Utc>,
    pool: i64,
    idx: usize,
    demand: [f64; 3],
    due: i64,
}

impl Capacity {
    pub fn new(catalog: &Catalog, now: DateTime<Utc>) -> Self {
        Capacity {
            providers: catalog
                .providers
                .iter()
                .map(|p| {
                    let edges = p
                        .models
                        .iter()
                        .flat_map(|m| m.schedule.iter().flat_map(|w| [w.from, w.to]));
                    let state = ProviderState::new(&p.limits, now).with_price_edges(edges);
                    (p.name.clone(), state)
                })
                .collect(),
            reservations: HashMap::new(),
            pruned_at: now,
        }
    }

    pub fn availability(&self, provider: &str, tokens: u64, now: DateTime<Utc>) -> Availability {
        self.providers
            .get(provider)
            .map_or(Availability::Excluded, |s| s.availability(tokens, now))
    }

    pub fn get_mut(&mut self, provider: &str) -> Option<&mut ProviderState> {
        self.providers.get_mut(provider)
    }

    /// What the policy may ask about job `job` of `tokens` (input + expected output) at `now`;
    /// give it to [`crate::policy::plan`]. A job holding a reservation keeps its turn: asked
    /// early, the view answers with the promised time; once the turn has come, the job goes
    /// ahead of the reservations still waiting. After the decision, call
    /// [`reserve`](Self::reserve) for a deferral with a hold, else
    /// [`cancel_reservation`](Self::cancel_reservation).
    pub fn view<'c>(&'c self, job: &'c str, tokens: u64, now: DateTime<Utc>) -> JobView<'c> {
        JobView {
            cap: self,
            own: self.reservations.get(job),
            tokens,
            now,
        }
    }

    /// Sets capacity aside on `provider` for `job`, deferred until `at` and due to start by `by`
    /// (the `hold` of a [`crate::policy::Plan`]). Replaces any earlier reservation of the job.
    pub fn reserve(
        &mut self,
        job: &str,
        provider: &str,
        tokens: u64,
        at: DateTime<Utc>,
        by: DateTime<Utc>,
        now: DateTime<Utc>,
    ) {
        let was_due = self
            .reservations
            .get(job)
            .is_some_and(|r| r.provider == provider && r.at <= now);
        self.cancel_reservation(job);
        if now - self.pruned_at >= Duration::minutes(1) {
            self.prune(now);
        }
        let Some(s) = self.providers.get_mut(provider) else {
            return;
        };
        let demand = s.demand(tokens);
        if was_due && at > now {
            s.plan.join_line(&demand, minutes(at));
        }
        let (pool, idx, due) = s.plan.reserve(&demand, minutes(at), minutes(by));
        self.reservations.insert(
            job.to_string(),
            Reservation {
                provider: provider.to_string(),
                at,
                pool,
                idx,
                demand,
                due,
            },
        );
    }

    /// Gives back the capacity reserved for `job`, if any (it is being routed again).
    pub fn cancel_reservation(&mut self, job: &str) {
        if let Some(r) = self.reservations.remove(job) {
            if let Some(s) = self.providers.get_mut(&r.provider) {
                s.plan.unreserve(r.pool, r.idx, &r.demand);
            }
        }
    }

    /// Reservations currently held.
    pub fn reservations(&self) -> usize {
        self.reservations.len()
    }

    /// Drops pools that have ended, and reservations a quarter of an hour past their deadline:
    /// their jobs went to another worker or were lost, and must not hold capacity for ever.
    fn prune(&mut self, now: DateTime<Utc>) {
        self.pruned_at = now;
        let stale = minutes(now).floor() as i64 - 15;
        let gone: Vec<String> = self
            .reservations
            .iter()
            .filter(|(_, r)| r.due < stale)
            .map(|(k, _)| k.clone())
            .collect();
        for k in gone {
            self.cancel_reservation(&k);
        }
        let m = minutes(now).floor() as i64;
        for s in self.providers.values_mut() {
            s.plan.pools.retain(|_, p| p.start + p.len as i64 > m);
        }
    }
}

/// One job's view of the capacity, for [`crate::policy::plan`].
#[derive(Debug, Clone, Copy)]
pub struct JobView<'c> {
    cap: &'c Capacity,
    own: Option<&'c Reservation>,
    tokens: u64,
    now: DateTime<Utc>,
}

impl CapacityView for JobView<'_> {
    fn excluded(&self, provider: &str) -> bool {
        self.cap
            .providers
            .get(provider)
            .is_none_or(|s| s.fault_until.is_some_and(|t| t > self.now))
    }

    fn earliest(
        &self,
        provider: &str,
        from: DateTime<Utc>,
        by: DateTime<Utc>,
    ) -> Option<(DateTime<Utc>, Option<Busy>)> {
        let s = self.cap.providers.get(provider)?;
        let fresh = s.earliest(self.tokens, from, by, self.now);
        let Some(own) = self.own.filter(|r| r.provider == provider) else {
            return fresh;
        };
        if own.at < from.max(self.now) - Duration::minutes(1) && own.at > self.now || own.at > by {
            return fresh;
        }
        let kept = if own.at > self.now {
            // Not its turn yet: keep the place (or take an earlier one that has come free).
            Some((own.at, Some(Busy::RateLimited)))
        } else {
            // Its turn has come: only the gates and capacity already used hold it back. Behind
            // a backlog it queues afresh, so waiting jobs do not all wake at the same instant.
            s.head_of_queue(self.tokens, by, self.now)
        };
        match (kept, fresh) {
            (Some(k), Some(f)) => Some(if f.0 < k.0 { f } else { k }),
            (k, f) => k.or(f),
        }
    }
}

/// Index of each planned resource: requests, tokens, slot-time (the concurrency limit).
const SLOT: usize = 2;
/// Latency assumed for slot-time before any request to the provider has finished (seconds):
/// optimistic, since admitting too much costs a short wait at the concurrency gate while
/// admitting too little sends jobs to dearer pairs; the estimate adapts within a few requests.
const DEFAULT_LATENCY_S: f64 = 2.0;
/// Weight of the newest observation in the latency estimate.
const LATENCY_EWMA: f64 = 0.1;
const EPS: f64 = 1e-9;
/// A job that must start within this many minutes may use the burst the token buckets hold
/// (paced work leaves it for such jobs); others are paced at the sustained rate.
const BURST_HORIZON_MIN: f64 = 5.0;
/// A job whose turn has come waits in place this long at most before joining the line.
const HEAD_SLACK_MS: i64 = 20;

fn secs(s: f64) -> Duration {
    Duration::milliseconds((s * 1000.0) as i64)
}

/// Minutes since the Unix epoch (the plan's time axis).
fn minutes(t: DateTime<Utc>) -> f64 {
    t.timestamp_millis() as f64 / 60_000.0
}

fn from_minutes(m: f64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis((m * 60_000.0).ceil() as i64)
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// The capacity ahead at one provider: per resource a rate (units a minute) and a virtual clock
/// (when everything dispatched so far would have drained at that rate), and the pools of
/// reservations.
#[derive(Debug, Clone)]
struct Plan {
    rates: [Option<f64>; 3],
    tat: [f64; 3],
    /// Where the line of jobs whose turn came while the provider was busy ends (minutes).
    line: f64,
    /// Minutes of the UTC day at which a pool ends and the next begins (always holds 0).
    edges: Vec<u32>,
    pools: BTreeMap<i64, Pool>,
    latency_s: Option<f64>,
}

impl Plan {
    fn new(limits: &Limits, now: DateTime<Utc>) -> Plan {
        let m = minutes(now);
        Plan {
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
    fn pool_bounds(&self, m: i64) -> (i64, i64) {
        let day = m.div_euclid(1440) * 1440;
        let mod_ = m.rem_euclid(1440) as u32;
        let i = self.edges.partition_point(|e| *e <= mod_);
        let from = self.edges[i - 1];
        let to = self.edges.get(i).copied().unwrap_or(1440);
        (day + i64::from(from), day + i64::from(to))
    }

    /// A dispatch of `d` at minute `now` pushes each virtual clock on.
    fn advance(&mut self, d: &[f64; 3], now: f64) {
        for ((tat, rate), d) in self.tat.iter_mut().zip(&self.rates).zip(d) {
            if let Some(rate) = rate {
                *tat = tat.max(now) + d / rate;
            }
        }
    }

    /// How far ahead of now the virtual clock of resource `r` may run for urgent work: the
    /// burst of its token bucket (a minute's worth for rpm and tpm; none for slot-time).
    fn burst_min(&self, r: usize) -> f64 {
        if r == SLOT || self.rates[r].is_none() {
            0.0
        } else {
            1.0
        }
    }

    /// Where the capacity of resource `r` for urgent work starts, seen from `base`: the virtual
    /// clock, less what the bucket holds (full when the clock is behind `base`, less by as much
    /// as the clock runs ahead of it).
    fn burst_start(&self, r: usize, base: f64) -> f64 {
        let lead = (self.tat[r] - base).max(0.0);
        base.max(self.tat[r]) - (self.burst_min(r) - lead).max(0.0)
    }

    /// A job whose turn came takes the place at `at` in the line; the next one queues after it.
    fn join_line(&mut self, d: &[f64; 3], at: f64) {
        let service = (0..3)
            .filter_map(|r| self.rates[r].map(|rate| d[r] / rate))
            .fold(0.0, f64::max);
        self.line = self.line.max(at) + service;
    }

    fn reserve(&mut self, d: &[f64; 3], at: f64, by: f64) -> (i64, usize, i64) {
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

    fn unreserve(&mut self, pool: i64, idx: usize, d: &[f64; 3]) {
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
struct Pool {
    start: i64,
    len: usize,
    trees: [Option<MinTree>; 3],
}

impl Pool {
    fn new(start: i64, len: usize, rates: &[Option<f64>; 3]) -> Pool {
        Pool {
            start,
            len,
            trees: rates.map(|r| r.map(|rate| MinTree::new(len, |i| rate * i as f64))),
        }
    }
}

/// A segment tree with range add and range minimum.
#[derive(Debug, Clone)]
struct MinTree {
    n: usize,
    min: Vec<f64>,
    add: Vec<f64>,
}

impl MinTree {
    fn new(n: usize, leaf: impl Fn(usize) -> f64) -> MinTree {
        let mut t = MinTree {
            n,
            min: vec![0.0; 4 * n],
            add: vec![0.0; 4 * n],
        };
        t.build(1, 0, n - 1, &leaf);
        t
    }

    fn build(&mut self, node: usize, lo: usize, hi: usize, leaf: &impl Fn(usize) -> f64) {
        if lo == hi {
            self.min[node] = leaf(lo);
            return;
        }
        let mid = (lo + hi) / 2;
        self.build(2 * node, lo, mid, leaf);
        self.build(2 * node + 1, mid + 1, hi, leaf);
        self.min[node] = self.min[2 * node].min(self.min[2 * node + 1]);
    }

    fn add_range(&mut self, l: usize, r: usize, x: f64) {
        self.add_rec(1, 0, self.n - 1, l, r, x);
    }

    fn add_rec(&mut self, node: usize, lo: usize, hi: usize, l: usize, r: usize, x: f64) {
        if r < lo || hi < l {
            return;
        }
        if l <= lo && hi <= r {
            self.min[node] += x;
            self.add[node] += x;
            return;
        }
        let mid = (lo + hi) / 2;
        self.add_rec(2 * node, lo, mid, l, r, x);
        self.add_rec(2 * node + 1, mid + 1, hi, l, r, x);
        self.min[node] = self.min[2 * node].min(self.min[2 * node + 1]) + self.add[node];
    }

    fn min_range(&self, l: usize, r: usize) -> f64 {
        self.min_rec(1, 0, self.n - 1, l, r)
    }

    fn min_rec(&self, node: usize, lo: usize, hi: usize, l: usize, r: usize) -> f64 {
        if r < lo || hi < l {
            return f64::INFINITY;
        }
        if l <= lo && hi <= r {
            return self.min[node];
        }
        let mid = (lo + hi) / 2;
        self.min_rec(2 * node, lo, mid, l, r)
            .min(self.min_rec(2 * node + 1, mid + 1, hi, l, r))
            + self.add[node]
    }

    fn point(&self, i: usize) -> f64 {
        self.min_range(i, i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()
    }

    #[test]
    fn rpm_bucket_runs_dry_then_refills() {
        let mut s = ProviderState::new(
            &Limits {
                rpm: Some(60),
                tpm: None,
                concurrency: None,
            },
            t0(),
        );
        for _ in 0..60 {
            assert!(s.try_acquire(10, t0()));
        }
        assert_eq!(
            s.availability(10, t0()),
            Availability::At(t0() + Duration::seconds(1), Busy::RateLimited)
        );
        assert!(s.try_acquire(10, t0() + Duration::seconds(1)));
    }

    #[test]
    fn concurrency_limit_blocks_until_release() {
        let mut s = ProviderState::new(
            &Limits {
                rpm: None,
                tpm: None,
                concurrency: Some(1),
            },
            t0(),
        );
        assert!(s.try_acquire(1, t0()));
        assert!(!s.try_acquire(1, t0()));
        s.release();
        assert!(s.try_acquire(1, t0()));
    }

    #[test]
    fn retry_after_blocks_and_transient_streak_opens_circuit_with_doubling() {
        let cfg = BreakerConfig::default();
        let mut s = ProviderState::new(&Limits::default(), t0());
        s.on_rate_limited(Some(std::time::Duration::from_secs(7)), t0(), &cfg);
        assert_eq!(
            s.availability(1, t0()),
            Availability::At(t0() + Duration::seconds(7), Busy::RateLimited)
        );
        let now = t0() + Duration::seconds(8);
        for _ in 0..cfg.failure_threshold {
            s.on_transient(now, &cfg);
        }
        assert_eq!(
            s.availability(1, now),
            Availability::At(now + Duration::seconds(10), Busy::Down)
        );
        // Half-open after the period: one more failure re-opens for twice as long.
        let later = now + Duration::seconds(11);
        assert_eq!(s.availability(1, later), Availability::Now);
        s.on_transient(later, &cfg);
        assert_eq!(
            s.availability(1, later),
            Availability::At(later + Duration::seconds(20), Busy::Down)
        );
        // Half-open admits one trial request; the rest wait for its answer.
        let half_open = later + Duration::seconds(21);
        assert!(s.try_acquire(1, half_open));
        assert_eq!(
            s.availability(1, half_open),
            Availability::At(half_open + Duration::seconds(1), Busy::Down)
        );
        s.release();
        s.on_success();
        assert_eq!(s.availability(1, half_open), Availability::Now);
        // A success of a request sent before the latest failure does not close the circuit.
        let t = half_open + Duration::seconds(1);
        for _ in 0..cfg.failure_threshold {
            s.on_transient(t, &cfg);
        }
        s.on_success_of(t - Duration::seconds(5));
        assert!(matches!(
            s.availability(1, t),
            Availability::At(_, Busy::Down)
        ));
        s.on_provider_fault(later, &cfg);
        assert_eq!(
            s.availability(1, later + Duration::seconds(599)),
            Availability::Excluded
        );
    }
}
