//! A provider's rate gates: token buckets for its published rpm and tpm limits.

use chrono::{DateTime, Duration, Utc};

/// A token bucket: `capacity` tokens, refilled at `per_s` a second.
#[derive(Debug, Clone)]
pub(crate) struct Bucket {
    capacity: f64,
    per_s: f64,
    level: f64,
    at: DateTime<Utc>,
}

impl Bucket {
    pub(crate) fn per_minute(n: f64, now: DateTime<Utc>) -> Bucket {
        Bucket {
            capacity: n,
            per_s: n / 60.0,
            level: n,
            at: now,
        }
    }

    pub(crate) fn refill(&mut self, now: DateTime<Utc>) {
        let dt = (now - self.at).num_milliseconds().max(0) as f64 / 1000.0;
        self.level = (self.level + dt * self.per_s).min(self.capacity);
        self.at = now.max(self.at);
    }

    /// When `n` tokens will be there (a request larger than the bucket waits for a full one).
    pub(crate) fn ready_at(&self, n: f64, now: DateTime<Utc>) -> DateTime<Utc> {
        let mut b = self.clone();
        b.refill(now);
        let n = n.min(b.capacity);
        if b.level >= n {
            now
        } else {
            now + Duration::milliseconds(((n - b.level) / b.per_s * 1000.0).ceil() as i64)
        }
    }

    /// Empties the bucket at `now`: it fills from here at its rate.
    pub(crate) fn empty(&mut self, now: DateTime<Utc>) {
        self.level = 0.0;
        self.at = now;
    }

    pub(crate) fn take(&mut self, n: f64, now: DateTime<Utc>) {
        self.refill(now);
        self.level -= n.min(self.capacity);
    }
}
