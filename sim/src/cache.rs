//! The prompt cache of one simulated provider, as the real APIs bill it.
//!
//! The simulator counts a prompt as a stream of tokens: per text (message, or Anthropic's
//! system prompt) 4 tokens for its role, and one token per 4 characters of the texts (the last
//! piece may be shorter). That is exactly [`text::prompt_tokens`], and the tokens of a prefix are
//! `prompt_tokens` of the prefix's texts, so a cached part is always a part of the prompt the
//! usage already reports. A prefix is known by a hash of the model id,
//! the tool definitions (which cost no simulated tokens but key the cache, as they come first in
//! the real APIs' serialization), and the roles and text it covers.
//!
//! - OpenAI kind (automatic caching): prefixes of `min_tokens`, `min_tokens + block_tokens`, …
//!   tokens are stored by every answered request; a request's cached tokens are its longest
//!   such prefix still alive.
//! - Anthropic kind (explicit caching): a `cache_control` breakpoint stores the prefix up to the
//!   end of its block when that prefix has at least `min_tokens` tokens. A request reads the
//!   longest prefix alive at one of the 20 block ends up to each breakpoint (Anthropic's
//!   lookback) and writes what lies between that and its last breakpoint.
//!
//! Entries are a hash → expiry map (seconds since server start), refreshed on every use and
//! pruned now and then, so a lookup costs a hash of the prompt and a few map probes.

use crate::scenario::SimCache;
use crate::text;
use std::collections::HashMap;

/// Block ends before a breakpoint at which Anthropic looks for a cache hit.
const LOOKBACK: usize = 20;

/// Seconds between two sweeps of expired entries.
const PRUNE_EVERY_S: f64 = 10.0;

/// How a request's prompt tokens split between the cache and plain input.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct PromptTokens {
    /// Every prompt token ([`text::prompt_tokens`]).
    pub total: u64,
    /// Read from the cache.
    pub read: u64,
    /// Written to the cache with a 5-minute lifetime (Anthropic).
    pub write_5m: u64,
    /// Written to the cache with a 1-hour lifetime (Anthropic).
    pub write_1h: u64,
}

impl PromptTokens {
    /// A prompt of `total` tokens that met no cache.
    pub(crate) fn plain(total: u64) -> PromptTokens {
        PromptTokens {
            total,
            ..PromptTokens::default()
        }
    }

    /// Tokens neither read from nor written to the cache.
    pub(crate) fn uncached(&self) -> u64 {
        self.total - self.read - self.write_5m - self.write_1h
    }

    /// Tokens written to the cache, whatever their lifetime.
    pub(crate) fn written(&self) -> u64 {
        self.write_5m + self.write_1h
    }
}

/// A point inside a request's prompt: `bytes` bytes (`chars` characters) into text `text`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Mark {
    pub text: usize,
    pub bytes: usize,
    pub chars: usize,
}

/// The lifetime an Anthropic breakpoint asks for (`cache_control.ttl`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ttl {
    /// `"5m"`, the default.
    FiveMinutes,
    /// `"1h"`.
    OneHour,
}

/// An Anthropic `cache_control` breakpoint: the end of block `block` (an index into
/// [`PromptShape::block_ends`]) and the lifetime asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Breakpoint {
    pub block: usize,
    pub ttl: Ttl,
}

/// What the cache needs to know of a request beyond its texts.
#[derive(Debug, Clone, Default)]
pub(crate) struct PromptShape {
    /// Hash of what precedes the texts: the model id and the tool definitions.
    pub head: u64,
    /// The role of each text (`system`, `user`, …), in the order of the texts.
    pub roles: Vec<String>,
    /// Anthropic: where each content block ends, in prompt order.
    pub block_ends: Vec<Mark>,
    /// Anthropic: the `cache_control` breakpoints, in prompt order.
    pub breakpoints: Vec<Breakpoint>,
}

/// One provider's cached prefixes: hash → (readable from, expiry), seconds since server start.
/// A prefix is readable only once the request that wrote it has been processed up to its first
/// token (as at the real providers, a request sent while the first is still in prefill misses).
#[derive(Debug, Default)]
pub(crate) struct PromptCache {
    entries: HashMap<u64, (f64, f64)>,
    next_prune: f64,
}

impl PromptCache {
    /// Looks an OpenAI-kind prompt up at server time `now` and stores its prefixes: the tokens
    /// of the longest alive prefix of `min_tokens + k * block_tokens` tokens count as read.
    pub(crate) fn automatic(
        &mut self,
        cfg: &SimCache,
        texts: &[String],
        shape: &PromptShape,
        now: f64,
        ready_in: f64,
    ) -> PromptTokens {
        let total = text::prompt_tokens(texts);
        if !cfg.enabled || total < cfg.min_tokens {
            return PromptTokens::plain(total);
        }
        self.prune(now);
        let prefixes = token_prefixes(texts, shape, cfg.min_tokens, cfg.block_tokens.max(1));
        let mut read = 0;
        for (tokens, hash) in &prefixes {
            if self.alive(*hash, now) {
                read = read.max(*tokens);
            }
            self.keep(*hash, now + ready_in, now + cfg.ttl_s);
        }
        PromptTokens {
            total,
            read,
            ..PromptTokens::default()
        }
    }

    /// Looks an Anthropic-kind prompt up at server time `now` by its `cache_control`
    /// breakpoints and stores the prefixes they mark.
    pub(crate) fn explicit(
        &mut self,
        cfg: &SimCache,
        texts: &[String],
        shape: &PromptShape,
        now: f64,
        ready_in: f64,
    ) -> PromptTokens {
        let total = text::prompt_tokens(texts);
        if !cfg.enabled || shape.breakpoints.is_empty() {
            return PromptTokens::plain(total);
        }
        let ends = mark_prefixes(texts, shape);
        let cacheable: Vec<&Breakpoint> = shape
            .breakpoints
            .iter()
            .filter(|b| ends.get(b.block).is_some_and(|e| e.0 >= cfg.min_tokens))
            .collect();
        if cacheable.is_empty() {
            return PromptTokens::plain(total);
        }
        self.prune(now);
        let life = |ttl: Ttl| match ttl {
            Ttl::FiveMinutes => cfg.ttl_s,
            Ttl::OneHour => cfg.ttl_1h_s,
        };
        // The longest alive prefix at a block end at most LOOKBACK blocks before a breakpoint.
        let mut read: Option<(u64, u64, Ttl)> = None;
        for b in &cacheable {
            let hit = ends[..=b.block]
                .iter()
                .rev()
                .take(LOOKBACK + 1)
                .find(|(tokens, hash)| *tokens >= cfg.min_tokens && self.alive(*hash, now));
            if let Some(&(tokens, hash)) = hit {
                if read.is_none_or(|r| tokens > r.0) {
                    read = Some((tokens, hash, b.ttl));
                }
            }
        }
        let read_tokens = read.map_or(0, |r| r.0);
        if let Some((_, hash, ttl)) = read {
            self.keep(hash, now, now + life(ttl));
        }
        let mut out = PromptTokens {
            total,
            read: read_tokens,
            ..PromptTokens::default()
        };
        // Each stretch beyond the read prefix is written with the lifetime of the breakpoint
        // that ends it.
        let mut covered = read_tokens;
        for b in cacheable {
            let (tokens, hash) = ends[b.block];
            self.keep(hash, now + ready_in, now + life(b.ttl));
            if tokens > covered {
                match b.ttl {
                    Ttl::FiveMinutes => out.write_5m += tokens - covered,
                    Ttl::OneHour => out.write_1h += tokens - covered,
                }
                covered = tokens;
            }
        }
        out
    }

    fn alive(&self, hash: u64, now: f64) -> bool {
        self.entries
            .get(&hash)
            .is_some_and(|(from, until)| *from <= now && *until > now)
    }

    /// Stores `hash`, readable from `from` (or earlier, if it already is) until `until` (or
    /// longer, if it already lives longer).
    fn keep(&mut self, hash: u64, from: f64, until: f64) {
        let e = self.entries.entry(hash).or_insert((from, until));
        e.0 = if e.1 > from { e.0.min(from) } else { from };
        e.1 = e.1.max(until);
    }

    fn prune(&mut self, now: f64) {
        if now >= self.next_prune {
            self.entries.retain(|_, e| e.1 > now);
            self.next_prune = now + PRUNE_EVERY_S;
        }
    }
}

/// FNV-1a over a stream of bytes (the same function as [`text::fnv1a`], fed piecewise).
#[derive(Clone, Copy)]
struct Fnv(u64);

impl Fnv {
    fn new(head: u64) -> Fnv {
        let mut h = Fnv(0xcbf2_9ce4_8422_2325);
        h.feed(&head.to_le_bytes());
        h
    }

    fn feed(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// Role tokens of a text, as in [`text::prompt_tokens`].
const ROLE_TOKENS: u64 = 4;

fn role(shape: &PromptShape, i: usize) -> &[u8] {
    shape.roles.get(i).map_or(&[], |r| r.as_bytes())
}

/// (tokens, hash) of the prefixes of `min`, `min + block`, … tokens of the prompt's token
/// stream, up to its whole length. The stream is the one [`text::prompt_tokens`] counts: per
/// text its role tokens, then a token each time 4 more characters of the texts (counted across
/// text boundaries) have gone by, and one for what is left at the end.
fn token_prefixes(texts: &[String], shape: &PromptShape, min: u64, block: u64) -> Vec<(u64, u64)> {
    let mut h = Fnv::new(shape.head);
    let mut n = 0u64;
    let mut next = min;
    let mut out = Vec::new();
    let mut token = |h: &Fnv| {
        n += 1;
        if n == next {
            out.push((n, h.0));
            next += block;
        }
    };
    let mut pending = 0; // characters since the last text token
    for (i, t) in texts.iter().enumerate() {
        h.feed(role(shape, i));
        for _ in 0..ROLE_TOKENS {
            h.feed(&[0x1e]);
            token(&h);
        }
        let mut buf = [0u8; 4];
        for c in t.chars() {
            h.feed(c.encode_utf8(&mut buf).as_bytes());
            pending += 1;
            if pending == 4 {
                pending = 0;
                token(&h);
            }
        }
        h.feed(&[0x1f]);
    }
    if pending > 0 {
        token(&h);
    }
    out
}

/// (tokens, hash) of the prefix ending at each of the shape's block ends: the tokens are
/// [`text::prompt_tokens`] of the prefix's texts (the texts before the mark's, and the mark's
/// own text cut at the mark).
fn mark_prefixes(texts: &[String], shape: &PromptShape) -> Vec<(u64, u64)> {
    let mut h = Fnv::new(shape.head);
    let mut chars_before = 0u64; // characters of the texts wholly hashed
    let mut text = 0usize; // the text being hashed
    let mut fed = 0usize; // bytes of it hashed so far
    let mut opened = false;
    let mut out = Vec::with_capacity(shape.block_ends.len());
    for m in &shape.block_ends {
        let t = |i: usize| texts.get(i).map_or("", String::as_str);
        while !opened || text < m.text {
            if opened {
                let whole = t(text);
                h.feed(&whole.as_bytes()[fed.min(whole.len())..]);
                h.feed(&[0x1f]);
                chars_before += whole.chars().count() as u64;
                (text, fed) = (text + 1, 0);
            }
            opened = true;
            h.feed(role(shape, text));
            h.feed(&[0x1e]);
        }
        let own = t(m.text);
        let upto = m.bytes.min(own.len());
        if upto > fed {
            h.feed(&own.as_bytes()[fed..upto]);
            fed = upto;
        }
        let tokens =
            ROLE_TOKENS * (m.text as u64 + 1) + (chars_before + m.chars as u64).div_ceil(4);
        out.push((tokens, h.0));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> SimCache {
        SimCache {
            min_tokens: 16,
            block_tokens: 4,
            ..SimCache::default()
        }
    }

    fn shape(n: usize) -> PromptShape {
        PromptShape {
            head: 7,
            roles: vec!["user".into(); n],
            ..PromptShape::default()
        }
    }

    #[test]
    fn token_stream_has_as_many_tokens_as_the_prompt() {
        let texts = vec!["héllo wörld, this is".to_string(), "abc".into()];
        let all = token_prefixes(&texts, &shape(2), 1, 1);
        assert_eq!(all.len() as u64, text::prompt_tokens(&texts));
    }

    #[test]
    fn a_marks_tokens_are_the_prompt_tokens_of_the_texts_it_cuts() {
        let texts = vec!["ünïcödé system".to_string(), "abc".into(), "défg".into()];
        let mut s = shape(3);
        let cut = |text: usize, chars: usize| {
            let t: &str = &texts[text];
            let bytes = t.char_indices().nth(chars).map_or(t.len(), |(b, _)| b);
            Mark { text, bytes, chars }
        };
        s.block_ends = vec![cut(0, 3), cut(0, 14), cut(1, 2), cut(2, 4)];
        let got: Vec<u64> = mark_prefixes(&texts, &s).iter().map(|m| m.0).collect();
        let want: Vec<u64> = s
            .block_ends
            .iter()
            .map(|m| {
                let mut prefix = texts[..m.text].to_vec();
                prefix.push(texts[m.text].chars().take(m.chars).collect());
                text::prompt_tokens(&prefix)
            })
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn automatic_cache_reads_the_longest_shared_prefix_in_blocks_and_forgets_it_after_the_ttl() {
        let mut c = PromptCache::default();
        let long = "x".repeat(60); // 4 + 15 tokens
        let a = vec![long.clone(), "first question".into()];
        let b = vec![long, "second one".into()];
        assert_eq!(c.automatic(&cfg(), &a, &shape(2), 0.0, 0.0).read, 0);
        // 4 + 15 tokens of the shared text and the next message's 4 role tokens are shared.
        assert_eq!(c.automatic(&cfg(), &b, &shape(2), 1.0, 0.0).read, 20);
        let late = 1.0 + cfg().ttl_s + 1.0;
        assert_eq!(c.automatic(&cfg(), &b, &shape(2), late, 0.0).read, 0);
        let other_head = PromptShape {
            head: 8,
            ..shape(2)
        };
        assert_eq!(c.automatic(&cfg(), &b, &other_head, late, 0.0).read, 0);
    }

    #[test]
    fn a_prefix_is_read_only_once_the_request_that_wrote_it_was_processed() {
        let mut c = PromptCache::default();
        let long = "x".repeat(60);
        let a = vec![long.clone(), "first question".into()];
        let b = vec![long, "second one".into()];
        // The first request's prompt is processed 0.5 s after it arrives.
        assert_eq!(c.automatic(&cfg(), &a, &shape(2), 0.0, 0.5).read, 0);
        assert_eq!(
            c.automatic(&cfg(), &b, &shape(2), 0.2, 0.5).read,
            0,
            "still in prefill"
        );
        assert_eq!(c.automatic(&cfg(), &b, &shape(2), 0.6, 0.5).read, 20);
    }

    #[test]
    fn explicit_cache_writes_at_breakpoints_then_reads_through_the_lookback() {
        let mut c = PromptCache::default();
        let sys = "s".repeat(80); // 4 + 20 tokens
        let mut s = shape(2);
        s.roles[0] = "system".into();
        s.block_ends = vec![
            Mark {
                text: 0,
                bytes: 80,
                chars: 80,
            },
            Mark {
                text: 1,
                bytes: 2,
                chars: 2,
            },
        ];
        s.breakpoints = vec![Breakpoint {
            block: 0,
            ttl: Ttl::OneHour,
        }];
        let texts = vec![sys.clone(), "hi".into()];
        let first = c.explicit(&cfg(), &texts, &s, 0.0, 0.0);
        assert_eq!((first.read, first.write_1h, first.uncached()), (0, 24, 5));
        let second = c.explicit(&cfg(), &texts, &s, 1.0, 0.0);
        assert_eq!((second.read, second.written()), (24, 0));
        // A later breakpoint on the user message finds the system prefix by the lookback.
        s.breakpoints = vec![Breakpoint {
            block: 1,
            ttl: Ttl::FiveMinutes,
        }];
        let third = c.explicit(&cfg(), &texts, &s, 2.0, 0.0);
        assert_eq!((third.read, third.write_5m, third.uncached()), (24, 5, 0));
    }
}
