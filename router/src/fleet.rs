//! What one planner knows of the rest of the fleet: its share of every provider's account-wide
//! limits ([`FleetShare`]), the account's own view of them sent with every answer
//! ([`LimitReport`], from the `x-ratelimit-*` and `anthropic-ratelimit-*` headers), and the
//! provider faults other planners found ([`SharedFault`]). How the members find each other is
//! the worker's business (heartbeats over the broker); this module is the arithmetic.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

/// This planner's place in the fleet: one of `members` live planners sharing every provider
/// account, `rank` its position among them (0-based, by a stable order every member agrees on).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetShare {
    pub members: u32,
    pub rank: u32,
}

impl Default for FleetShare {
    /// Alone: the whole limits.
    fn default() -> Self {
        FleetShare {
            members: 1,
            rank: 0,
        }
    }
}

impl FleetShare {
    /// `members` planners (at least one), this one at `rank` (wrapped into range).
    pub fn new(members: u32, rank: u32) -> Self {
        let members = members.max(1);
        FleetShare {
            members,
            rank: rank % members,
        }
    }

    /// The part of a rate limit (requests or tokens per minute) that is this planner's.
    pub fn fraction(&self) -> f64 {
        1.0 / f64::from(self.members.max(1))
    }

    /// This planner's requests in flight out of an account-wide `limit`: an even split, the
    /// remainder to the lowest ranks, so the members' gates add up to the limit exactly. A
    /// planner whose split is zero (more members than slots) keeps one: the slot-time plan
    /// still paces it at its fraction, so the overlap is brief.
    pub fn slots(&self, limit: u32) -> u32 {
        let (n, r) = (limit / self.members, limit % self.members);
        (n + u32::from(self.rank < r)).max(1)
    }
}

/// One window of a provider's rate limit as the provider reported it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LimitWindow {
    /// The account's limit for the window (requests or tokens per minute).
    pub limit: f64,
    /// What is left of it now.
    pub remaining: f64,
    /// How long until the window is full again.
    pub reset: Duration,
}

impl LimitWindow {
    /// How long until `need` units are there, at the rate the window refills.
    pub fn wait_for(&self, need: f64) -> Duration {
        if self.remaining >= need {
            return Duration::zero();
        }
        let missing = (self.limit - self.remaining).max(1.0);
        let per_unit_ms = self.reset.num_milliseconds().max(0) as f64 / missing;
        Duration::milliseconds(((need - self.remaining) * per_unit_ms).ceil() as i64)
    }
}

/// What an answer's rate-limit headers say of the account: requests and tokens per minute.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LimitReport {
    pub requests: Option<LimitWindow>,
    pub tokens: Option<LimitWindow>,
}

impl LimitReport {
    /// Reads both families of headers: OpenAI's (and compatible hosts')
    /// `x-ratelimit-{limit,remaining,reset}-{requests,tokens}`, resets as durations like `1s`,
    /// `6m0s` or `20ms`; and Anthropic's `anthropic-ratelimit-{requests,tokens}-{limit,
    /// remaining,reset}`, resets as RFC 3339 instants (input and output token windows are
    /// taken as the tighter of the two when the combined one is absent). `header` looks a
    /// header up by its lower-case name. `None` when the answer carried none of them.
    pub fn from_headers<'h>(
        header: impl Fn(&str) -> Option<&'h str>,
        now: DateTime<Utc>,
    ) -> Option<LimitReport> {
        let openai = |what: &str| {
            window(
                header(&format!("x-ratelimit-limit-{what}")),
                header(&format!("x-ratelimit-remaining-{what}")),
                header(&format!("x-ratelimit-reset-{what}")).and_then(parse_go_duration),
            )
        };
        let anthropic = |what: &str| {
            window(
                header(&format!("anthropic-ratelimit-{what}-limit")),
                header(&format!("anthropic-ratelimit-{what}-remaining")),
                header(&format!("anthropic-ratelimit-{what}-reset"))
                    .and_then(|v| DateTime::parse_from_rfc3339(v.trim()).ok())
                    .map(|t| (t.with_timezone(&Utc) - now).max(Duration::zero())),
            )
        };
        let tighter = |a: Option<LimitWindow>, b: Option<LimitWindow>| match (a, b) {
            (Some(a), Some(b)) => Some(
                if a.remaining / a.limit.max(1.0) <= b.remaining / b.limit.max(1.0) {
                    a
                } else {
                    b
                },
            ),
            (a, b) => a.or(b),
        };
        let r = LimitReport {
            requests: openai("requests").or_else(|| anthropic("requests")),
            tokens: openai("tokens")
                .or_else(|| anthropic("tokens"))
                .or_else(|| tighter(anthropic("input-tokens"), anthropic("output-tokens"))),
        };
        (r.requests.is_some() || r.tokens.is_some()).then_some(r)
    }
}

fn window(
    limit: Option<&str>,
    remaining: Option<&str>,
    reset: Option<Duration>,
) -> Option<LimitWindow> {
    let limit: f64 = limit?.trim().parse().ok()?;
    let remaining: f64 = remaining?.trim().parse().ok()?;
    (limit > 0.0 && remaining >= 0.0).then(|| LimitWindow {
        limit,
        remaining: remaining.min(limit),
        reset: reset.unwrap_or_else(|| Duration::seconds(60)),
    })
}

/// A Go-style duration as OpenAI sends it: `1s`, `6m0s`, `20ms`, `1h2m3.5s`; a bare number is
/// seconds.
pub fn parse_go_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<f64>() {
        return (secs >= 0.0).then(|| Duration::milliseconds((secs * 1000.0) as i64));
    }
    let mut ms = 0.0;
    let mut rest = s;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .filter(|i| *i > 0)?;
        let n: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_end] {
            "h" => 3_600_000.0,
            "m" => 60_000.0,
            "s" => 1000.0,
            "ms" => 1.0,
            "us" | "µs" => 0.001,
            "ns" => 0.000_001,
            _ => return None,
        };
        ms += n * unit;
        rest = &rest[unit_end..];
    }
    Some(Duration::milliseconds(ms.round() as i64))
}

/// What one planner found out about a provider that spares the others from finding it again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedFault {
    /// The capacity key (provider name, or `<name>/flex`).
    pub key: String,
    pub kind: FaultKind,
    /// Until when it holds.
    pub until: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// The account is unusable (auth, credit, model missing): left out.
    Fault,
    /// The account is rate-limited until then (a 429's `Retry-After`, or no budget left).
    Blocked,
    /// The provider is failing (a streak of 5xx, timeouts): its circuit is open until then.
    Down,
    /// The provider answers again: a trial request sent [`UP_NEWS`] before `until` succeeded
    /// and closed the circuit.
    Up,
}

/// How long a closed circuit is news for the fleet (more than two heartbeats).
pub const UP_NEWS: Duration = Duration::seconds(5);

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use std::collections::HashMap;

    #[test]
    fn slots_split_the_limit_exactly_among_members() {
        for (limit, members) in [(8, 3), (10, 4), (16, 16), (5, 5), (64, 6)] {
            let total: u32 = (0..members)
                .map(|r| FleetShare::new(members, r).slots(limit))
                .sum();
            assert_eq!(total, limit, "{limit} slots among {members}");
        }
        // More members than slots: each keeps one.
        assert_eq!(FleetShare::new(16, 15).slots(8), 1);
        assert_eq!(FleetShare::new(4, 0).fraction(), 0.25);
    }

    #[test]
    fn go_durations_parse() {
        let ms = |s| parse_go_duration(s).map(|d| d.num_milliseconds());
        assert_eq!(ms("1s"), Some(1000));
        assert_eq!(ms("6m0s"), Some(360_000));
        assert_eq!(ms("20ms"), Some(20));
        assert_eq!(ms("1h2m3.5s"), Some(3_723_500));
        assert_eq!(ms("0.5"), Some(500));
        assert_eq!(ms("soon"), None);
    }

    #[test]
    fn both_header_families_are_read() {
        let now = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let h: HashMap<&str, &str> = [
            ("x-ratelimit-limit-requests", "300"),
            ("x-ratelimit-remaining-requests", "299"),
            ("x-ratelimit-reset-requests", "200ms"),
            ("x-ratelimit-limit-tokens", "100000"),
            ("x-ratelimit-remaining-tokens", "0"),
            ("x-ratelimit-reset-tokens", "6s"),
        ]
        .into();
        let r = LimitReport::from_headers(|n| h.get(n).copied(), now).unwrap();
        let req = r.requests.unwrap();
        assert_eq!((req.limit, req.remaining), (300.0, 299.0));
        assert_eq!(req.reset, Duration::milliseconds(200));
        // 100,000 tokens refill in 6 s: 1,000 of them in 60 ms.
        assert_eq!(
            r.tokens.unwrap().wait_for(1000.0),
            Duration::milliseconds(60)
        );

        let a: HashMap<&str, &str> = [
            ("anthropic-ratelimit-requests-limit", "50"),
            ("anthropic-ratelimit-requests-remaining", "0"),
            ("anthropic-ratelimit-requests-reset", "2026-01-01T00:00:30Z"),
            ("anthropic-ratelimit-input-tokens-limit", "40000"),
            ("anthropic-ratelimit-input-tokens-remaining", "40000"),
            (
                "anthropic-ratelimit-input-tokens-reset",
                "2026-01-01T00:00:00Z",
            ),
            ("anthropic-ratelimit-output-tokens-limit", "8000"),
            ("anthropic-ratelimit-output-tokens-remaining", "100"),
            (
                "anthropic-ratelimit-output-tokens-reset",
                "2026-01-01T00:00:59Z",
            ),
        ]
        .into();
        let r = LimitReport::from_headers(|n| a.get(n).copied(), now).unwrap();
        let req = r.requests.unwrap();
        assert_eq!(req.reset, Duration::seconds(30));
        // 50 requests refill in 30 s: the next one in 600 ms.
        assert_eq!(req.wait_for(1.0), Duration::milliseconds(600));
        assert_eq!(r.tokens.unwrap().limit, 8000.0, "the tighter token window");
        assert!(LimitReport::from_headers(|_| None, now).is_none());
    }
}
