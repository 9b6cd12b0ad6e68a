//! Per-worker view of each provider's capacity: token buckets for the published rpm/tpm limits,
//! a concurrency gate, `Retry-After` blocks, and a circuit breaker. The clock is passed in, so the
//! same state machine runs on real or simulated time. Rate limits and circuits are per worker
//! (DESIGN §5): a worker stays correct without any fleet-wide view.

use crate::policy::{Availability, Busy};
use chrono::{DateTime, Duration, Utc};
use schemas::{Catalog, Limits};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

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
        }
    }

    /// Whether a request of `tokens` may go now, and if not, when it may.
    pub fn availability(&self, tokens: u64, now: DateTime<Utc>) -> Availability {
        if self.fault_until.is_some_and(|t| t > now) {
            return Availability::Excluded;
        }
        if let Some(t) = self.open_until.filter(|t| *t > now) {
            return Availability::At(t, Busy::Down);
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
        true
    }

    /// A request taken with [`try_acquire`](Self::try_acquire) has ended.
    pub fn release(&mut self) {
        self.in_flight = self.in_flight.saturating_sub(1);
    }

    pub fn on_success(&mut self) {
        self.failures = 0;
        self.opens = 0;
        self.rate_limit_streak = 0;
        self.open_until = None;
    }

    /// A 429: block until `retry_after`, or an exponential backoff when the answer gave none.
    pub fn on_rate_limited(
        &mut self,
        retry_after: Option<std::time::Duration>,
        now: DateTime<Utc>,
        cfg: &BreakerConfig,
    ) {
        self.rate_limit_streak += 1;
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
        self.fault_until = Some(now + Duration::milliseconds((cfg.fault_open_s * 1000.0) as i64));
    }
}

/// Every provider's state in one worker.
#[derive(Debug, Clone)]
pub struct Capacity {
    pub providers: HashMap<String, ProviderState>,
}

impl Capacity {
    pub fn new(catalog: &Catalog, now: DateTime<Utc>) -> Self {
        Capacity {
            providers: catalog
                .providers
                .iter()
                .map(|p| (p.name.clone(), ProviderState::new(&p.limits, now)))
                .collect(),
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
        s.on_provider_fault(later, &cfg);
        assert_eq!(
            s.availability(1, later + Duration::seconds(599)),
            Availability::Excluded
        );
    }
}
