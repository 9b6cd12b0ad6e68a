//! Prompt-prefix warm-up (issue #15). Providers cache a long prompt prefix only once a request
//! carrying it has been answered (OpenAI and compatible hosts automatically from 1,024 tokens,
//! Anthropic at a `cache_control` breakpoint); requests sent while the first is still in flight
//! all pay the full input price. An evaluation suite sends hundreds of jobs that share a long
//! system prompt or few-shot prefix at once, so without care most of them miss.
//!
//! So the first job of a long prefix goes alone to a (provider, model): the others that share
//! it wait for its answer — at most [`WAIT_AT_MOST`] — and then go, reading the cache. Once
//! answered, the prefix counts as warm at that pair for [`WARM_FOR`] (the providers' shortest
//! cache lifetime; each use renews it). A failed first request lets the next waiter try.
//!
//! The prefix is every message but the last (the system prompt and few-shot turns an
//! evaluation suite repeats); prompts whose prefix is shorter than [`MIN_PREFIX_CHARS`] are not
//! gated, since no provider caches them.

use schemas::ChatMessage;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// About 1,000 tokens at 4 characters a token: near the shortest prefix the providers cache
/// (1,024 tokens), on the side of gating a prefix that will not be cached.
pub const MIN_PREFIX_CHARS: usize = 4000;

/// How long an answered prefix is taken to stay cached (OpenAI: 5–10 minutes of inactivity;
/// Anthropic's default breakpoint: 5 minutes).
pub const WARM_FOR: Duration = Duration::from_secs(300);

/// The longest a job waits for the first request of its prefix before going anyway.
pub const WAIT_AT_MOST: Duration = Duration::from_secs(10);

/// Entries kept before expired ones are swept.
const SWEEP_AT: usize = 10_000;

enum Entry {
    /// A first request is in flight; waiters are woken when it ends.
    Warming(Arc<Notify>),
    /// Answered; taken to be cached until then.
    Warm(Instant),
}

/// The prefixes this worker has sent to each (provider, model), and which are in flight.
#[derive(Default)]
pub struct PrefixGate {
    entries: Mutex<HashMap<u64, Entry>>,
}

/// The key of `messages`' prefix at `provider`/`model_id`, when the provider will cache it: long
/// enough, and — where caching is explicit (`automatic` false: Anthropic) — marked with a
/// `cache_control` breakpoint.
pub fn key(
    provider: &str,
    model_id: &str,
    messages: &[ChatMessage],
    automatic: bool,
) -> Option<u64> {
    let (_, prefix) = messages.split_last()?;
    let chars: usize = prefix.iter().map(|m| m.text().len()).sum();
    if chars < MIN_PREFIX_CHARS {
        return None;
    }
    let marked = || {
        prefix.iter().any(|m| {
            m.content
                .as_array()
                .is_some_and(|parts| parts.iter().any(|p| p.get("cache_control").is_some()))
        })
    };
    if !automatic && !marked() {
        return None;
    }
    let mut h = std::collections::hash_map::DefaultHasher::new();
    provider.hash(&mut h);
    model_id.hash(&mut h);
    for m in prefix {
        m.role.hash(&mut h);
        m.content.to_string().hash(&mut h);
    }
    Some(h.finish())
}

/// The first request of a prefix: dropped without [`answered`](First::answered), it lets the
/// next waiter go first.
pub struct First<'g> {
    gate: &'g PrefixGate,
    key: u64,
    answered: bool,
}

impl First<'_> {
    /// The request was answered: the prefix is warm.
    pub fn answered(mut self) {
        self.answered = true;
    }
}

impl Drop for First<'_> {
    fn drop(&mut self) {
        let mut entries = self.gate.lock();
        let was = if self.answered {
            entries.insert(self.key, Entry::Warm(Instant::now() + WARM_FOR))
        } else {
            entries.remove(&self.key)
        };
        if let Some(Entry::Warming(n)) = was {
            n.notify_waiters();
        }
    }
}

impl PrefixGate {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until a request with prefix `key` may go: at once when the prefix is warm (its
    /// lifetime renewed) or nobody sent it yet (this request goes first: `Some`), else when the
    /// first one ends or after [`WAIT_AT_MOST`].
    pub async fn enter(&self, key: u64) -> Option<First<'_>> {
        let deadline = tokio::time::Instant::now() + WAIT_AT_MOST;
        loop {
            let n: Arc<Notify>;
            let woken;
            {
                let mut entries = self.lock();
                let now = Instant::now();
                if entries.len() >= SWEEP_AT {
                    entries.retain(|_, e| !matches!(e, Entry::Warm(t) if *t <= now));
                }
                match entries.get_mut(&key) {
                    Some(Entry::Warm(until)) if *until > now => {
                        *until = now + WARM_FOR;
                        return None;
                    }
                    Some(Entry::Warming(w)) => {
                        n = w.clone();
                        // Made under the lock: the first request's end cannot slip by unseen
                        // (a `Notified` hears `notify_waiters` from the moment it exists).
                        woken = n.notified();
                    }
                    _ => {
                        entries.insert(key, Entry::Warming(Arc::new(Notify::new())));
                        return Some(First {
                            gate: self,
                            key,
                            answered: false,
                        });
                    }
                }
            }
            if tokio::time::timeout_at(deadline, woken).await.is_err() {
                return None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msgs(system: &str, user: &str) -> Vec<ChatMessage> {
        serde_json::from_value(serde_json::json!([
            {"role": "system", "content": system},
            {"role": "user", "content": user}
        ]))
        .unwrap()
    }

    #[test]
    fn only_long_prefixes_have_a_key_and_the_last_message_is_not_part_of_it() {
        let long = "x".repeat(MIN_PREFIX_CHARS);
        assert_eq!(key("p", "m", &msgs("short", "q1"), true), None);
        let a = key("p", "m", &msgs(&long, "q1"), true).unwrap();
        assert_eq!(Some(a), key("p", "m", &msgs(&long, "q2"), true));
        assert_ne!(Some(a), key("q", "m", &msgs(&long, "q1"), true));
        assert_ne!(
            Some(a),
            key("p", "m", &msgs(&format!("{long}y"), "q1"), true)
        );
        // Explicit caching (Anthropic) only at a breakpoint.
        assert_eq!(key("p", "m", &msgs(&long, "q1"), false), None);
        let marked: Vec<ChatMessage> = serde_json::from_value(serde_json::json!([
            {"role": "system", "content": [{"type": "text", "text": long, "cache_control": {"type": "ephemeral"}}]},
            {"role": "user", "content": "q"}
        ]))
        .unwrap();
        assert!(key("p", "m", &marked, false).is_some());
    }

    #[tokio::test]
    async fn followers_wait_for_the_first_answer_and_then_go_warm() {
        let gate = PrefixGate::default();
        let first = gate.enter(1).await.expect("nobody sent it yet");
        let started = Instant::now();
        let (follower, ()) = tokio::join!(gate.enter(1), async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            first.answered();
        });
        assert!(
            follower.is_none(),
            "the prefix is warm: nobody goes first again"
        );
        assert!(started.elapsed() >= Duration::from_millis(200));
        assert!(gate.enter(1).await.is_none());
        // Another prefix goes first at once.
        assert!(gate.enter(2).await.is_some());
    }

    #[tokio::test]
    async fn a_failed_first_request_lets_a_waiter_go_first() {
        let gate = PrefixGate::default();
        let first = gate.enter(7).await.unwrap();
        let (next, ()) = tokio::join!(gate.enter(7), async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            drop(first);
        });
        assert!(next.is_some(), "the waiter goes first after a failure");
    }
}
