//! A simulated provider, server side: it enforces its true limits whatever the client believes.
//! Requests over the rpm/tpm token buckets (full at the start, refilled continuously) or over the
//! concurrency limit get a 429 with `Retry-After`; during an outage every request gets a 503;
//! inside a 429 window every request gets a 429. Rejected requests use no capacity.

use crate::scenario::ServerSpec;
use chrono::{DateTime, Duration, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// What a request came back with.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Reply {
    Ok,
    /// 429, with the `Retry-After` the server sent.
    RateLimited(Option<std::time::Duration>),
    /// 5xx (the status).
    Transient(u16),
}

#[derive(Debug, Clone)]
struct Bucket {
    capacity: f64,
    per_ms: f64,
    level: f64,
    at: DateTime<Utc>,
}

impl Bucket {
    fn new(per_minute: f64, now: DateTime<Utc>) -> Bucket {
        Bucket {
            capacity: per_minute,
            per_ms: per_minute / 60_000.0,
            level: per_minute,
            at: now,
        }
    }

    fn refill(&mut self, now: DateTime<Utc>) {
        let dt = (now - self.at).num_milliseconds().max(0) as f64;
        self.level = (self.level + dt * self.per_ms).min(self.capacity);
        self.at = now.max(self.at);
    }

    /// Milliseconds until `n` units are there (0: now).
    fn wait_ms(&mut self, n: f64, now: DateTime<Utc>) -> f64 {
        self.refill(now);
        let n = n.min(self.capacity);
        ((n - self.level) / self.per_ms).max(0.0)
    }
}

/// One provider's server.
#[derive(Debug)]
pub struct Server {
    pub spec: ServerSpec,
    rpm: Option<Bucket>,
    tpm: Option<Bucket>,
    in_flight: u32,
    rng: StdRng,
}

/// A request's fate: the outcome, when it comes back, and whether it held a slot.
#[derive(Debug, Clone, Copy)]
pub struct Answer {
    pub reply: Reply,
    pub latency: Duration,
    pub accepted: bool,
}

impl Server {
    pub fn new(spec: ServerSpec, start: DateTime<Utc>, seed: u64) -> Server {
        Server {
            rpm: spec.limits.rpm.map(|n| Bucket::new(f64::from(n), start)),
            tpm: spec.limits.tpm.map(|n| Bucket::new(n as f64, start)),
            in_flight: 0,
            rng: StdRng::seed_from_u64(seed),
            spec,
        }
    }

    /// Answers a request counting `tokens` against tpm and producing `out` tokens.
    pub fn request(&mut self, now: DateTime<Utc>, tokens: u64, out: u64) -> Answer {
        let reject = |reply, ms| Answer {
            reply,
            latency: Duration::milliseconds(ms),
            accepted: false,
        };
        if self.spec.down_at(now) {
            return reject(Reply::Transient(503), 300);
        }
        if let Some(end) = self.spec.limited_at(now) {
            let s = ((end - now).num_milliseconds() as f64 / 1000.0)
                .clamp(1.0, self.spec.retry_after_s)
                .ceil();
            return reject(
                Reply::RateLimited(Some(std::time::Duration::from_secs_f64(s))),
                100,
            );
        }
        if self
            .spec
            .limits
            .concurrency
            .is_some_and(|c| self.in_flight >= c)
        {
            return reject(
                Reply::RateLimited(Some(std::time::Duration::from_secs(1))),
                50,
            );
        }
        let wait = [
            self.rpm.as_mut().map(|b| b.wait_ms(1.0, now)),
            self.tpm.as_mut().map(|b| b.wait_ms(tokens as f64, now)),
        ]
        .into_iter()
        .flatten()
        .fold(0.0, f64::max);
        if wait > 0.0 {
            // Headers give whole seconds, as x-ratelimit-reset and Retry-After do.
            let s = (wait / 1000.0).ceil().max(1.0);
            return reject(
                Reply::RateLimited(Some(std::time::Duration::from_secs_f64(s))),
                50,
            );
        }
        if let Some(b) = &mut self.rpm {
            b.level -= 1.0;
        }
        if let Some(b) = &mut self.tpm {
            b.level -= (tokens as f64).min(b.capacity);
        }
        self.in_flight += 1;
        let j = self.spec.jitter;
        let factor = if j > 0.0 {
            self.rng.random_range(1.0 - j..=1.0 + j)
        } else {
            1.0
        };
        let ms = (self.spec.latency_ms(out) * factor).max(1.0);
        if self.spec.error_rate > 0.0 && self.rng.random::<f64>() < self.spec.error_rate {
            return Answer {
                reply: Reply::Transient(500),
                latency: Duration::milliseconds((ms / 2.0) as i64),
                accepted: true,
            };
        }
        Answer {
            reply: Reply::Ok,
            latency: Duration::milliseconds(ms as i64),
            accepted: true,
        }
    }

    /// An accepted request has come back.
    pub fn finish(&mut self) {
        self.in_flight = self.in_flight.saturating_sub(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::default_start;
    use schemas::Limits;

    fn spec(limits: Limits) -> ServerSpec {
        ServerSpec {
            name: "p".into(),
            limits,
            latency_ms: 1000.0,
            per_output_token_ms: 0.0,
            jitter: 0.0,
            error_rate: 0.0,
            outages: vec![(
                default_start() + Duration::hours(1),
                default_start() + Duration::hours(2),
            )],
            rate_limited: vec![],
            retry_after_s: 20.0,
            batch: None,
        }
    }

    #[test]
    fn server_enforces_rpm_tpm_concurrency_and_outages() {
        let t0 = default_start();
        let mut s = Server::new(
            spec(Limits {
                rpm: Some(2),
                tpm: Some(1000),
                concurrency: Some(5),
            }),
            t0,
            1,
        );
        assert_eq!(s.request(t0, 400, 10).reply, Reply::Ok);
        assert_eq!(s.request(t0, 400, 10).reply, Reply::Ok);
        // rpm bucket empty: one request refills in 30 s.
        let a = s.request(t0, 10, 10);
        assert_eq!(
            a.reply,
            Reply::RateLimited(Some(std::time::Duration::from_secs(30)))
        );
        assert!(!a.accepted);
        // After 30 s a request fits the rpm bucket but not the token bucket (200 + 500/min).
        let t = t0 + Duration::seconds(30);
        assert!(matches!(s.request(t, 900, 10).reply, Reply::RateLimited(_)));
        assert_eq!(s.request(t, 300, 10).reply, Reply::Ok);
        let down = t0 + Duration::minutes(90);
        assert_eq!(s.request(down, 1, 1).reply, Reply::Transient(503));

        let mut c = Server::new(
            spec(Limits {
                rpm: None,
                tpm: None,
                concurrency: Some(1),
            }),
            t0,
            1,
        );
        assert!(c.request(t0, 1, 1).accepted);
        assert!(matches!(c.request(t0, 1, 1).reply, Reply::RateLimited(_)));
        c.finish();
        assert_eq!(c.request(t0, 1, 1).reply, Reply::Ok);
    }
}
