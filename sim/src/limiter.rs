//! Rate limiting as real providers do it: token buckets for requests and tokens per minute, and a
//! cap on requests in flight. Time is passed in so the buckets are testable without sleeping.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A token bucket holding up to `capacity`, refilled continuously at `capacity / 60` per second.
#[derive(Debug)]
pub(crate) struct TokenBucket {
    capacity: f64,
    per_s: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket allowing `per_minute` a minute.
    pub(crate) fn per_minute(per_minute: f64, now: Instant) -> TokenBucket {
        TokenBucket {
            capacity: per_minute,
            per_s: per_minute / 60.0,
            tokens: per_minute,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + dt * self.per_s).min(self.capacity);
        self.last = now;
    }

    /// How long until `n` tokens are available (zero if they are now). A request larger than
    /// the capacity waits a full minute, like a real provider's "request too large" answer.
    pub(crate) fn wait_for(&mut self, n: f64, now: Instant) -> Duration {
        self.refill(now);
        if n <= self.tokens {
            Duration::ZERO
        } else if n > self.capacity || self.per_s <= 0.0 {
            Duration::from_secs(60)
        } else {
            Duration::from_secs_f64((n - self.tokens) / self.per_s)
        }
    }

    /// Takes `n` tokens; call only after [`TokenBucket::wait_for`] returned zero.
    pub(crate) fn take(&mut self, n: f64) {
        self.tokens -= n;
    }

    /// The bucket as the rate-limit headers report it at `now`.
    fn window(&mut self, now: Instant) -> Window {
        self.refill(now);
        let missing = (self.capacity - self.tokens).max(0.0);
        Window {
            limit: self.capacity.round() as u64,
            remaining: self.tokens.max(0.0).floor() as u64,
            full_in: if self.per_s > 0.0 {
                Duration::from_secs_f64(missing / self.per_s)
            } else {
                Duration::ZERO
            },
        }
    }
}

/// One bucket as an answer's rate-limit headers report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Window {
    /// The limit per minute.
    pub limit: u64,
    /// What is left of it now (whole units, rounded down).
    pub remaining: u64,
    /// How long until the bucket is full again if nothing more is taken.
    pub full_in: Duration,
}

/// The state of a provider's buckets right after a request was admitted or refused: what the
/// answer's `x-ratelimit-*` or `anthropic-ratelimit-*` headers say (a limit the provider does
/// not have is not reported).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Snapshot {
    pub requests: Option<Window>,
    pub tokens: Option<Window>,
}

/// The request and token buckets of one provider, checked and taken together so a request
/// refused by one bucket does not consume the other.
#[derive(Debug)]
pub(crate) struct Limits {
    requests: Option<TokenBucket>,
    tokens: Option<TokenBucket>,
}

impl Limits {
    /// Buckets for the given per-minute limits (none means unlimited).
    pub(crate) fn new(rpm: Option<u32>, tpm: Option<u64>, now: Instant) -> Limits {
        Limits {
            requests: rpm.map(|r| TokenBucket::per_minute(f64::from(r), now)),
            tokens: tpm.map(|t| TokenBucket::per_minute(t as f64, now)),
        }
    }

    /// The buckets as they stand at `now`, for the answer's headers.
    pub(crate) fn snapshot(&mut self, now: Instant) -> Snapshot {
        Snapshot {
            requests: self.requests.as_mut().map(|b| b.window(now)),
            tokens: self.tokens.as_mut().map(|b| b.window(now)),
        }
    }

    /// Admits one request of `tokens` tokens, or says how long to wait and which limit refused.
    pub(crate) fn admit(
        &mut self,
        tokens: u64,
        now: Instant,
    ) -> Result<(), (Duration, &'static str)> {
        let wait_r = self
            .requests
            .as_mut()
            .map_or(Duration::ZERO, |b| b.wait_for(1.0, now));
        if !wait_r.is_zero() {
            return Err((wait_r, "requests per min (RPM)"));
        }
        let wait_t = self
            .tokens
            .as_mut()
            .map_or(Duration::ZERO, |b| b.wait_for(tokens as f64, now));
        if !wait_t.is_zero() {
            return Err((wait_t, "tokens per min (TPM)"));
        }
        if let Some(b) = self.requests.as_mut() {
            b.take(1.0);
        }
        if let Some(b) = self.tokens.as_mut() {
            b.take(tokens as f64);
        }
        Ok(())
    }
}

/// Requests in flight; a [`Slot`] holds one until dropped.
#[derive(Debug, Default)]
pub(crate) struct InFlight(AtomicU32);

/// One admitted in-flight request; releases its place when dropped.
#[derive(Debug)]
pub(crate) struct Slot(Arc<InFlight>);

impl InFlight {
    /// Takes a place if fewer than `max` are taken (`None` = unlimited).
    pub(crate) fn acquire(this: &Arc<InFlight>, max: Option<u32>) -> Option<Slot> {
        let prev = this.0.fetch_add(1, Ordering::SeqCst);
        if max.is_some_and(|m| prev >= m) {
            this.0.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        Some(Slot(Arc::clone(this)))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0 .0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Whole seconds for a `Retry-After` header: rounded up, at least 1.
pub(crate) fn retry_after_secs(wait: Duration) -> u64 {
    (wait.as_secs_f64().ceil() as u64).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_refuses_after_capacity_and_refills_at_capacity_per_minute() {
        let t0 = Instant::now();
        let mut l = Limits::new(Some(60), None, t0);
        for _ in 0..60 {
            assert!(l.admit(10, t0).is_ok());
        }
        let (wait, which) = l.admit(10, t0).unwrap_err();
        assert!(which.contains("RPM"));
        assert_eq!(retry_after_secs(wait), 1);
        assert!(l.admit(10, t0 + Duration::from_secs(1)).is_ok());
    }

    #[test]
    fn refused_token_request_does_not_consume_a_request_slot() {
        let t0 = Instant::now();
        let mut l = Limits::new(Some(2), Some(100), t0);
        assert!(l.admit(500, t0).is_err());
        assert!(l.admit(50, t0).is_ok());
        assert!(l.admit(50, t0).is_ok());
        assert!(l.admit(1, t0).is_err());
    }

    #[test]
    fn in_flight_slots_are_released_on_drop() {
        let f = Arc::new(InFlight::default());
        let a = InFlight::acquire(&f, Some(1));
        assert!(a.is_some());
        assert!(InFlight::acquire(&f, Some(1)).is_none());
        drop(a);
        assert!(InFlight::acquire(&f, Some(1)).is_some());
    }
}
