//! The rate-limit headers real providers send with every completion answer, success or 429,
//! written from the simulator's own buckets: OpenAI's `x-ratelimit-{limit,remaining,reset}-
//! {requests,tokens}` (the reset a Go duration such as `1.5s`, `6m0s` or `20ms`: the time until
//! the bucket is full again) and Anthropic's `anthropic-ratelimit-{requests,tokens}-
//! {limit,remaining,reset}` (the reset an RFC 3339 instant: when the bucket is full again).
//! Because one server serves every worker, the figures are the account's, not the caller's.

use crate::limiter::{Snapshot, Window};
use crate::scenario::SimKind;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use chrono::{DateTime, SecondsFormat, Utc};
use std::time::Duration;

/// Adds the headers of `snap` in `kind`'s dialect; `now` is the wall clock the Anthropic reset
/// instants count from.
pub(crate) fn insert(headers: &mut HeaderMap, kind: SimKind, snap: &Snapshot, now: DateTime<Utc>) {
    for (what, w) in [("requests", snap.requests), ("tokens", snap.tokens)] {
        let Some(w) = w else { continue };
        let fields = match kind {
            SimKind::Openai => [
                (format!("x-ratelimit-limit-{what}"), w.limit.to_string()),
                (
                    format!("x-ratelimit-remaining-{what}"),
                    w.remaining.to_string(),
                ),
                (format!("x-ratelimit-reset-{what}"), go_duration(w.full_in)),
            ],
            SimKind::Anthropic => [
                (
                    format!("anthropic-ratelimit-{what}-limit"),
                    w.limit.to_string(),
                ),
                (
                    format!("anthropic-ratelimit-{what}-remaining"),
                    w.remaining.to_string(),
                ),
                (
                    format!("anthropic-ratelimit-{what}-reset"),
                    full_at(&w, now),
                ),
            ],
        };
        for (name, value) in fields {
            if let (Ok(n), Ok(v)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(&value),
            ) {
                headers.insert(n, v);
            }
        }
    }
}

/// When the bucket is full again, as Anthropic writes it: whole seconds in UTC, rounded up so
/// a client never counts on capacity before it is there.
fn full_at(w: &Window, now: DateTime<Utc>) -> String {
    let at = now + chrono::Duration::milliseconds(w.full_in.as_millis() as i64);
    let whole = at.timestamp() + i64::from(at.timestamp_subsec_millis() > 0);
    DateTime::<Utc>::from_timestamp(whole, 0)
        .unwrap_or(at)
        .to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// A duration as Go's `time.Duration.String` writes it, to the millisecond (rounded up):
/// `0s`, `20ms`, `1.5s`, `6m0s`, `1h2m3.5s`.
pub(crate) fn go_duration(d: Duration) -> String {
    let ms = d.as_micros().div_ceil(1000) as u64;
    if ms == 0 {
        return "0s".into();
    }
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let (h, m, s_ms) = (ms / 3_600_000, ms / 60_000 % 60, ms % 60_000);
    let secs = if s_ms % 1000 == 0 {
        format!("{}s", s_ms / 1000)
    } else {
        let frac = format!("{:03}", s_ms % 1000);
        format!("{}.{}s", s_ms / 1000, frac.trim_end_matches('0'))
    };
    match (h, m) {
        (0, 0) => secs,
        (0, m) => format!("{m}m{secs}"),
        (h, m) => format!("{h}h{m}m{secs}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn durations_are_written_as_go_writes_them() {
        let ms = Duration::from_millis;
        assert_eq!(go_duration(Duration::ZERO), "0s");
        assert_eq!(go_duration(Duration::from_micros(300)), "1ms");
        assert_eq!(go_duration(ms(20)), "20ms");
        assert_eq!(go_duration(ms(1500)), "1.5s");
        assert_eq!(go_duration(ms(60_000)), "1m0s");
        assert_eq!(go_duration(ms(360_000)), "6m0s");
        assert_eq!(go_duration(ms(3_723_500)), "1h2m3.5s");
        assert_eq!(go_duration(ms(3_600_000)), "1h0m0s");
    }

    #[test]
    fn anthropic_resets_are_whole_seconds_rounded_up() {
        let now = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let w = |ms| Window {
            limit: 50,
            remaining: 10,
            full_in: Duration::from_millis(ms),
        };
        assert_eq!(full_at(&w(29_200), now), "2026-01-01T00:00:30Z");
        assert_eq!(full_at(&w(0), now), "2026-01-01T00:00:00Z");
    }
}
