//! The circuit breaker of one provider: a streak of transient failures opens the circuit for a
//! while (doubling on each re-open, one trial request when half-open); an answer that says the
//! account is unusable (auth, credit, model missing) leaves the provider out for minutes.

use crate::fleet::UP_NEWS;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

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

/// The breaker's state for one provider.
#[derive(Debug, Clone, Default)]
pub(crate) struct Breaker {
    failures: u32,
    opens: u32,
    open_until: Option<DateTime<Utc>>,
    fault_until: Option<DateTime<Utc>>,
    /// A request sent while half-open is out: the others wait for its answer.
    pub(crate) probing: bool,
    /// When the last transient failure came back.
    failed_at: Option<DateTime<Utc>>,
    /// When the circuit last closed after being open (a trial request succeeded).
    pub(crate) closed_at: Option<DateTime<Utc>>,
}

impl Breaker {
    /// Whether the provider is left out at `now` (auth, credit, model missing).
    pub(crate) fn excluded(&self, now: DateTime<Utc>) -> bool {
        self.fault_until.is_some_and(|t| t > now)
    }

    /// Until when the provider is left out, if it is at `now`.
    pub(crate) fn excluded_until(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.fault_until.filter(|t| *t > now)
    }

    /// Leaves the provider out until `until` (another planner found it unusable).
    pub(crate) fn exclude_until(&mut self, until: DateTime<Utc>) {
        self.fault_until = Some(self.fault_until.map_or(until, |t| t.max(until)));
    }

    /// Opens the circuit until `until` (another planner's circuit opened: the provider is
    /// failing), unless it is open longer already; when it half-opens, one trial request goes,
    /// as after a streak of its own.
    /// A circuit closed by a success moments ago (here or at another planner) stays closed:
    /// the news of the open circuit is older than that of the success.
    pub(crate) fn open_until_peer(&mut self, until: DateTime<Utc>, now: DateTime<Utc>) {
        let just_closed = self.closed_at.is_some_and(|c| now - c < UP_NEWS);
        if !just_closed && self.open_until.is_none_or(|t| t < until) {
            self.open_until = Some(until);
        }
    }

    /// Until when the circuit is open, if it is at `now`.
    pub(crate) fn open_until(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.open_until.filter(|t| *t > now)
    }

    /// Whether the circuit has opened since the last success (open or half-open now).
    pub(crate) fn is_open_or_half_open(&self) -> bool {
        self.open_until.is_some()
    }

    /// A success of a request sent at `started`. One sent before the latest failure says
    /// nothing about the provider now (an outage may have begun since), so it does not reset the
    /// failure streak or close the circuit. Returns whether it counted as a success.
    pub(crate) fn on_success_of(&mut self, started: DateTime<Utc>) -> bool {
        if self.failed_at.is_some_and(|f| started < f) {
            self.probing = false;
            return false;
        }
        if self.open_until.is_some() {
            self.closed_at = Some(started);
        }
        self.on_success();
        true
    }

    /// Another planner's trial request, sent at `at`, succeeded: the provider answers again.
    /// Closes this circuit unless a failure came back here after that request was sent.
    pub(crate) fn close_from_peer(&mut self, at: DateTime<Utc>) {
        if self.open_until.is_some() && self.failed_at.is_none_or(|f| f <= at) {
            self.closed_at = Some(at);
            self.on_success();
        }
    }

    pub(crate) fn on_success(&mut self) {
        self.failures = 0;
        self.opens = 0;
        self.open_until = None;
        self.probing = false;
    }

    /// A 5xx, timeout or connection error: opens the circuit after a streak of them.
    pub(crate) fn on_transient(&mut self, now: DateTime<Utc>, cfg: &BreakerConfig) {
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

    /// The account is unusable: leave it for `fault_open_s`.
    pub(crate) fn on_provider_fault(&mut self, now: DateTime<Utc>, cfg: &BreakerConfig) {
        self.probing = false;
        self.fault_until = Some(now + Duration::milliseconds((cfg.fault_open_s * 1000.0) as i64));
    }
}
