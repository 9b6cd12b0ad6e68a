//! What one planner knows about one provider: its rate gates, its circuit breaker and the plan
//! of its capacity ahead, combined into "may a request go now, and if not, when?". The clock is
//! passed in, so the same state machine runs on real or simulated time.

use crate::breaker::{Breaker, BreakerConfig};
use crate::fleet::{FaultKind, FleetShare, LimitReport, UP_NEWS};
use crate::gates::Bucket;
use crate::policy::{Availability, Busy};
use crate::timeline::{
    from_minutes, minutes, secs, Timeline, BURST_HORIZON_MIN, DEFAULT_LATENCY_S, EPS,
    HEAD_SLACK_MS, LATENCY_EWMA, SLOT,
};
use chrono::{DateTime, Duration, Utc};
use schemas::Limits;

/// Longest `Retry-After` honoured: a provider asking for more is retried after a day.
pub const MAX_RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(86_400);

/// What one worker knows about one provider.
#[derive(Debug, Clone)]
pub struct ProviderState {
    rpm: Option<Bucket>,
    tpm: Option<Bucket>,
    /// This planner's gate on requests in flight: its share of the account's concurrency.
    concurrency: Option<u32>,
    /// The account's limits the buckets and the plan count in (rpm, tpm, concurrency): the
    /// catalog's, or the first the provider reported where the catalog has none.
    base: [Option<f64>; 3],
    /// The account's rpm and tpm as the provider last reported them.
    learned: [Option<f64>; 2],
    fleet: FleetShare,
    /// What one unit of this planner's use costs in the base units, per resource: the inverse
    /// of its share of the fleet, corrected by the limits the provider reported.
    k: [f64; 3],
    in_flight: u32,
    blocked_until: Option<DateTime<Utc>>,
    rate_limit_streak: u32,
    breaker: Breaker,
    pub(crate) plan: Timeline,
    /// The virtual clocks (minutes, per resource) of the jobs sent here on turns other
    /// planners promised: paced at this planner's share, apart from its own plan.
    promised_tat: [f64; 3],
}

impl ProviderState {
    pub fn new(limits: &Limits, now: DateTime<Utc>) -> Self {
        ProviderState {
            rpm: limits.rpm.map(|n| Bucket::per_minute(f64::from(n), now)),
            tpm: limits.tpm.map(|n| Bucket::per_minute(n as f64, now)),
            concurrency: limits.concurrency,
            base: [
                limits.rpm.map(f64::from),
                limits.tpm.map(|n| n as f64),
                limits.concurrency.map(f64::from),
            ],
            learned: [None; 2],
            fleet: FleetShare::default(),
            k: [1.0; 3],
            in_flight: 0,
            blocked_until: None,
            rate_limit_streak: 0,
            breaker: Breaker::default(),
            plan: Timeline::new(limits, now),
            promised_tat: [minutes(now); 3],
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

    /// Plans with this planner's share of the account's limits from now on (what is already
    /// reserved keeps the demand it was reserved with).
    pub fn set_fleet(&mut self, fleet: FleetShare) {
        if fleet != self.fleet {
            self.fleet = fleet;
            self.rescale();
        }
    }

    /// Starts with empty buckets: a worker joining a fleet cannot know how much of the
    /// account's burst the others have used, so it paces from now at its share's rate.
    pub fn start_empty(&mut self, now: DateTime<Utc>) {
        for b in [&mut self.rpm, &mut self.tpm].into_iter().flatten() {
            b.empty(now);
        }
    }

    /// Learns from an answer's rate-limit headers: the account's real limits replace the
    /// catalog's in the plan, and an account with less left than a request of `tokens` needs
    /// (other planners' use included) is waited for until it refills.
    pub fn observe_limits(&mut self, report: &LimitReport, tokens: u64, now: DateTime<Utc>) {
        let windows = [(report.requests, 1.0), (report.tokens, tokens as f64)];
        let mut changed = false;
        for (r, (w, need)) in windows.into_iter().enumerate() {
            let Some(w) = w else { continue };
            let known = self.learned[r].unwrap_or(f64::NAN);
            if (known - w.limit).abs() > 0.5 || known.is_nan() {
                self.learned[r] = Some(w.limit);
                changed = true;
                if self.base[r].is_none() {
                    // The catalog had no such limit: the provider's becomes the base.
                    self.base[r] = Some(w.limit);
                    self.plan.rates[r] = Some(w.limit);
                    let b = Some(Bucket::per_minute(w.limit, now));
                    if r == 0 {
                        self.rpm = b;
                    } else {
                        self.tpm = b;
                    }
                }
            }
            let wait = w.wait_for(need.min(w.limit));
            if wait > Duration::zero() {
                let until = now + wait;
                self.blocked_until = Some(self.blocked_until.map_or(until, |b| b.max(until)));
            }
        }
        if changed {
            self.rescale();
        }
    }

    /// The account's limits as the plan counts them now: rpm, tpm (learned, else catalog),
    /// and this planner's gate on requests in flight.
    pub fn limits(&self) -> (Option<f64>, Option<f64>, Option<u32>) {
        let eff = |r: usize| self.learned[r].or(self.base[r]);
        (eff(0), eff(1), self.concurrency)
    }

    /// Recomputes the demand multipliers and the concurrency gate from the base, the learned
    /// limits and the fleet share.
    fn rescale(&mut self) {
        let f = self.fleet.fraction();
        for r in 0..2 {
            self.k[r] = match (self.base[r], self.learned[r]) {
                (Some(b), Some(l)) if l > 0.0 => b / (l * f),
                _ => 1.0 / f,
            };
        }
        self.k[SLOT] = 1.0 / f;
        self.concurrency = self.base[SLOT].map(|c| self.fleet.slots(c as u32));
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

    pub(crate) fn demand(&self, tokens: u64) -> [f64; 3] {
        [
            self.k[0],
            self.k[1] * tokens as f64,
            self.k[SLOT] * self.plan.latency_s.unwrap_or(DEFAULT_LATENCY_S) / 60.0,
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
        if self.breaker.excluded(now) || by < now {
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
            (self.breaker.open_until(now), Busy::Down),
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
    pub(crate) fn head_of_queue(
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

    /// For a job sent on a turn another planner promised (that planner's plan and buckets
    /// count it): when the gates allow, behind the other promised jobs sent here (paced at this
    /// planner's share, since turns promised for the same instant wake together); `None` if
    /// not by `by`.
    pub(crate) fn promised_gates(
        &self,
        tokens: u64,
        by: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Option<(DateTime<Utc>, Option<Busy>)> {
        let d = self.demand(tokens);
        let mut at = now;
        let mut busy = None;
        for r in 0..3 {
            if self.plan.rates[r].is_some() {
                // The clock may run one request ahead of now: a turn's own request goes at once.
                let t = from_minutes(self.promised_tat[r] - self.promise_lead(&d, r));
                if t > at {
                    at = t;
                    busy = Some(if r == SLOT {
                        Busy::Concurrency
                    } else {
                        Busy::RateLimited
                    });
                }
            }
        }
        match self.gates(now) {
            Availability::Now => {}
            Availability::At(t, b) => {
                if t > at {
                    (at, busy) = (t, Some(b));
                }
            }
            Availability::Excluded => return None,
        }
        (at <= by).then_some((at, busy))
    }

    /// How far ahead of now the promised clock of resource `r` may run.
    fn promise_lead(&self, d: &[f64; 3], r: usize) -> f64 {
        self.plan.rates[r].map_or(0.0, |rate| d[r] / rate)
    }

    /// Takes a slot for a request of `tokens` sent on another planner's promised turn (see
    /// [`promised_gates`](Self::promised_gates)): the gates and the promised clocks only, no
    /// bucket or plan capacity.
    pub fn try_acquire_promised(&mut self, tokens: u64, now: DateTime<Utc>) -> bool {
        if self
            .promised_gates(tokens, now, now)
            .is_none_or(|(t, _)| t > now)
        {
            return false;
        }
        let d = self.demand(tokens);
        let m = minutes(now);
        for ((tat, rate), need) in self.promised_tat.iter_mut().zip(self.plan.rates).zip(d) {
            if let Some(rate) = rate {
                *tat = tat.max(m) + need / rate;
            }
        }
        self.in_flight += 1;
        self.breaker.probing = self.breaker.is_open_or_half_open();
        true
    }

    /// Counts capacity reserved for a turn at `at` as used, at `now`: what
    /// [`try_acquire`](Self::try_acquire) takes from the buckets and the plan, without a slot.
    pub(crate) fn charge(&mut self, d: &[f64; 3], at: DateTime<Utc>, now: DateTime<Utc>) {
        if let Some(b) = &mut self.rpm {
            b.take(d[0], now);
        }
        if let Some(b) = &mut self.tpm {
            b.take(d[1], now);
        }
        self.plan.advance(d, minutes(at));
    }

    /// Whether the provider is refusing work at `now`: left out, its circuit open, or blocked
    /// by a rate limit.
    pub(crate) fn refusing(&self, now: DateTime<Utc>) -> bool {
        self.breaker.excluded(now)
            || self.breaker.open_until(now).is_some()
            || self.blocked_until.is_some_and(|t| t > now)
    }

    /// The gates other than the token buckets: circuit, blocks, requests in flight.
    fn gates(&self, now: DateTime<Utc>) -> Availability {
        if self.breaker.excluded(now) {
            return Availability::Excluded;
        }
        if let Some(t) = self.breaker.open_until(now) {
            return Availability::At(t, Busy::Down);
        }
        if self.breaker.probing {
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
        Availability::Now
    }

    /// Whether a request of `tokens` may go now, and if not, when it may.
    pub fn availability(&self, tokens: u64, now: DateTime<Utc>) -> Availability {
        let gates = self.gates(now);
        if gates != Availability::Now {
            return gates;
        }
        let ready = [
            self.rpm.as_ref().map(|b| b.ready_at(self.k[0], now)),
            self.tpm
                .as_ref()
                .map(|b| b.ready_at(self.k[1] * tokens as f64, now)),
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
            b.take(self.k[0], now);
        }
        if let Some(b) = &mut self.tpm {
            b.take(self.k[1] * tokens as f64, now);
        }
        self.in_flight += 1;
        self.breaker.probing = self.breaker.is_open_or_half_open();
        let d = self.demand(tokens);
        self.plan.advance(&d, minutes(now));
        true
    }

    /// Requests taken with [`try_acquire`](Self::try_acquire) and not yet released.
    pub fn in_flight(&self) -> u32 {
        self.in_flight
    }

    /// A request taken with [`try_acquire`](Self::try_acquire) has ended.
    pub fn release(&mut self) {
        self.in_flight = self.in_flight.saturating_sub(1);
        self.breaker.probing = false;
    }

    /// A success of a request sent at `started` (see [`Breaker::on_success_of`]).
    pub fn on_success_of(&mut self, started: DateTime<Utc>) {
        if self.breaker.on_success_of(started) {
            self.rate_limit_streak = 0;
        }
    }

    /// A success: the provider answers, the failure streaks end.
    pub fn on_success(&mut self) {
        self.rate_limit_streak = 0;
        self.breaker.on_success();
    }

    /// A 429: block until `retry_after`, or an exponential backoff when the answer gave none.
    pub fn on_rate_limited(
        &mut self,
        retry_after: Option<std::time::Duration>,
        now: DateTime<Utc>,
        cfg: &BreakerConfig,
    ) {
        self.rate_limit_streak += 1;
        self.breaker.probing = false;
        let wait = match retry_after {
            // A provider may ask for any wait; one past a day is taken as a day (adding years
            // to a clock overflows it).
            Some(d) => Duration::from_std(d.min(MAX_RETRY_AFTER)).unwrap_or(Duration::days(1)),
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
        self.breaker.on_transient(now, cfg);
    }

    /// The account is unusable (401/403/402/out of credit/model missing): leave it for long.
    pub fn on_provider_fault(&mut self, now: DateTime<Utc>, cfg: &BreakerConfig) {
        self.breaker.on_provider_fault(now, cfg);
    }

    /// Whether the provider is left out for long (credentials, credit, model missing).
    pub fn excluded(&self, now: DateTime<Utc>) -> bool {
        self.breaker.excluded(now)
    }

    /// Whether its circuit is open at `now` (errors or a provider fault): no request is sent.
    pub fn circuit_open(&self, now: DateTime<Utc>) -> bool {
        self.breaker.excluded(now) || self.breaker.open_until(now).is_some()
    }

    /// What this planner found that the fleet should know: until when the provider is left
    /// out, until when it is rate-limited (only waits of a second or more are news), and until
    /// when its circuit is open.
    pub fn findings(&self, now: DateTime<Utc>) -> Vec<(FaultKind, DateTime<Utc>)> {
        [
            (FaultKind::Fault, self.breaker.excluded_until(now)),
            (
                FaultKind::Blocked,
                self.blocked_until
                    .filter(|t| *t >= now + Duration::seconds(1)),
            ),
            (FaultKind::Down, self.breaker.open_until(now)),
            (
                FaultKind::Up,
                self.breaker
                    .closed_at
                    .map(|t| t + UP_NEWS)
                    .filter(|t| *t > now && !self.breaker.is_open_or_half_open()),
            ),
        ]
        .into_iter()
        .filter_map(|(k, t)| t.map(|t| (k, t)))
        .collect()
    }

    /// Another planner found the provider unusable until `until`.
    pub fn exclude_until(&mut self, until: DateTime<Utc>) {
        self.breaker.exclude_until(until);
    }

    /// Another planner's circuit for the provider is open until `until`.
    pub fn open_until(&mut self, until: DateTime<Utc>, now: DateTime<Utc>) {
        self.breaker.open_until_peer(until, now);
    }

    /// Another planner's trial request sent at `at` succeeded: the provider answers again.
    pub fn close_circuit(&mut self, at: DateTime<Utc>) {
        self.breaker.close_from_peer(at);
    }

    /// Another planner found the account rate-limited until `until`.
    pub fn block_until(&mut self, until: DateTime<Utc>) {
        self.blocked_until = Some(self.blocked_until.map_or(until, |b| b.max(until)));
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

    fn count_burst(s: &mut ProviderState, now: DateTime<Utc>) -> usize {
        (0..10_000).take_while(|_| s.try_acquire(10, now)).count()
    }

    #[test]
    fn a_fleet_share_splits_the_account_limits() {
        let limits = Limits {
            rpm: Some(60),
            tpm: None,
            concurrency: Some(5),
        };
        let mut taken = 0;
        let mut gates = 0;
        for rank in 0..3 {
            let mut s = ProviderState::new(&limits, t0());
            s.set_fleet(FleetShare::new(3, rank));
            gates += s.limits().2.unwrap();
            // Each request is released at once: only the rpm bucket holds them back.
            let mut n = 0;
            while s.try_acquire(10, t0()) {
                s.release();
                n += 1;
            }
            assert_eq!(n, 20, "a third of 60 rpm");
            taken += n;
            // It refills at a third of the rate: one more after 3 s, not 1 s.
            assert!(!s.try_acquire(10, t0() + Duration::seconds(2)));
            assert!(s.try_acquire(10, t0() + Duration::seconds(3)));
        }
        assert_eq!(taken, 60);
        assert_eq!(gates, 5, "the concurrency gates add up to the account's");
    }

    #[test]
    fn reported_limits_replace_the_catalogs_and_an_empty_account_is_waited_for() {
        use crate::fleet::LimitWindow;
        let mut s = ProviderState::new(
            &Limits {
                rpm: Some(600),
                tpm: None,
                concurrency: None,
            },
            t0(),
        );
        let report = |limit: f64, remaining: f64| LimitReport {
            requests: Some(LimitWindow {
                limit,
                remaining,
                reset: Duration::seconds(60),
            }),
            tokens: None,
        };
        // The account really allows 60 a minute: a tenth of the catalog's burst is left.
        s.observe_limits(&report(60.0, 60.0), 10, t0());
        assert_eq!(s.limits().0, Some(60.0));
        assert_eq!(count_burst(&mut s, t0()), 60);
        // Nothing left account-wide (other workers used it): wait for one request's refill.
        let mut fresh = ProviderState::new(&Limits::default(), t0());
        fresh.observe_limits(&report(60.0, 0.0), 10, t0());
        assert_eq!(
            fresh.availability(10, t0()),
            Availability::At(t0() + Duration::seconds(1), Busy::RateLimited)
        );
        // A limit the catalog lacked is planned with once reported.
        let later = t0() + Duration::seconds(5);
        assert_eq!(count_burst(&mut fresh, later), 60);
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
