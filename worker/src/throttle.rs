//! Log lines that would otherwise repeat for every job — a provider that cannot be reached, jobs
//! failing before any provider call — at most once per interval and key, each saying how many
//! like it were left out since the last one.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// At most one line per key and interval.
#[derive(Debug)]
pub struct Throttle {
    every: Duration,
    seen: Mutex<HashMap<String, (Instant, u64)>>,
}

impl Throttle {
    pub fn new(every: Duration) -> Throttle {
        Throttle {
            every,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// Whether a line for `key` may be written now: `Some(n)` with the `n` lines left out since
    /// the last one written, `None` (counted) within the interval.
    pub fn allow(&self, key: &str) -> Option<u64> {
        self.allow_at(key, Instant::now())
    }

    fn allow_at(&self, key: &str, now: Instant) -> Option<u64> {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        match seen.get_mut(key) {
            Some((last, left_out)) if now.duration_since(*last) < self.every => {
                *left_out += 1;
                None
            }
            Some((last, left_out)) => {
                *last = now;
                Some(std::mem::take(left_out))
            }
            None => {
                seen.insert(key.to_string(), (now, 0));
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_key_and_interval_then_the_count_of_those_left_out() {
        let t = Throttle::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(t.allow_at("a", t0), Some(0));
        assert_eq!(t.allow_at("a", t0 + Duration::from_secs(1)), None);
        assert_eq!(t.allow_at("a", t0 + Duration::from_secs(2)), None);
        assert_eq!(t.allow_at("b", t0 + Duration::from_secs(2)), Some(0));
        assert_eq!(t.allow_at("a", t0 + Duration::from_secs(11)), Some(2));
        assert_eq!(t.allow_at("a", t0 + Duration::from_secs(12)), None);
    }
}
