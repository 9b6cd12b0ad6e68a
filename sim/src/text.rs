//! Deterministic completions: the answer is a pure function of (model id, the prompt's text,
//! seed), so tests can compare runs, and token counts follow simple, documented rules.

use serde_json::Value;

/// Output tokens when the request sets no `max_tokens`.
pub(crate) const DEFAULT_MAX_TOKENS: u64 = 256;

const WORDS: &[&str] = &[
    "the", "model", "answers", "with", "a", "short", "and", "careful", "reply", "about", "cost",
    "latency", "queue", "batch", "provider", "token", "price", "window", "deadline", "job",
    "result", "worker", "route", "cheap", "fast", "simple", "result", "data", "value", "system",
    "network", "request", "response", "text", "output", "input", "number", "of", "in", "on", "for",
    "to", "is", "are", "this", "that", "it", "we", "can", "will", "should", "may", "each", "every",
    "some", "many", "first", "then", "finally", "because", "while", "after", "before", "during",
];

/// A generated answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Generated {
    pub text: String,
    pub output_tokens: u64,
    /// True when `max_tokens` cut the answer short.
    pub truncated: bool,
}

/// FNV-1a, 64 bit: stable across Rust versions and platforms, unlike `DefaultHasher`.
pub(crate) fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.iter().chain(&[0x1f]) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// SplitMix64: a tiny PRNG whose output never changes with a dependency upgrade.
pub(crate) struct SplitMix(u64);

impl SplitMix {
    pub(crate) fn new(seed: u64) -> SplitMix {
        SplitMix(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// The answer of `model` to a prompt made of `texts`: between 16 and 200 words (one word =
/// one token), cut at `max_tokens`. `choice` numbers the alternative answers of one request
/// (OpenAI's `n`); choice 0 is the answer every request without `n` gets.
pub(crate) fn generate(
    model: &str,
    texts: &[String],
    seed: u64,
    max_tokens: u64,
    choice: u64,
) -> Generated {
    let mut parts: Vec<&[u8]> = vec![model.as_bytes()];
    parts.extend(texts.iter().map(|t| t.as_bytes()));
    let seed_bytes = seed.to_le_bytes();
    parts.push(&seed_bytes);
    let choice_bytes = choice.to_le_bytes();
    if choice > 0 {
        parts.push(&choice_bytes);
    }
    let mut rng = SplitMix::new(fnv1a(&parts));
    let natural = 16 + rng.next_u64() % 185;
    let n = natural.min(max_tokens);
    let words: Vec<&str> = (0..n)
        .map(|_| WORDS[(rng.next_u64() % WORDS.len() as u64) as usize])
        .collect();
    Generated {
        text: words.join(" "),
        output_tokens: n,
        truncated: n < natural,
    }
}

/// The text of a message's `content`: a string, or the `text` of each part of an array.
pub(crate) fn content_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// Prompt tokens: a quarter of the characters (rounded up) plus 4 per message.
pub(crate) fn prompt_tokens(texts: &[String]) -> u64 {
    let chars: usize = texts.iter().map(|t| t.chars().count()).sum();
    (chars as u64).div_ceil(4) + 4 * texts.len() as u64
}

/// A random-looking id suffix (hex) for response and request ids.
pub(crate) fn hex_id(rng: &mut SplitMix) -> String {
    format!("{:016x}{:08x}", rng.next_u64(), rng.next_u64() as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_prompt_gives_same_answer_and_other_prompts_differ() {
        let a = generate("m", &["hello".into()], 1, 1000, 0);
        assert_eq!(a, generate("m", &["hello".into()], 1, 1000, 0));
        assert_ne!(a.text, generate("m", &["hello!".into()], 1, 1000, 0).text);
        assert_ne!(a.text, generate("m2", &["hello".into()], 1, 1000, 0).text);
        assert!((16..=200).contains(&a.output_tokens));
        assert_eq!(a.text.split(' ').count() as u64, a.output_tokens);
        assert!(!a.truncated);
        assert_ne!(a.text, generate("m", &["hello".into()], 1, 1000, 1).text);
    }

    #[test]
    fn max_tokens_truncates_and_says_so() {
        let g = generate("m", &["hello".into()], 1, 3, 0);
        assert_eq!(g.output_tokens, 3);
        assert!(g.truncated);
    }

    #[test]
    fn prompt_tokens_count_chars_over_four_plus_four_per_message() {
        assert_eq!(prompt_tokens(&["abcde".into(), "xyz".into()]), 2 + 8);
    }
}
