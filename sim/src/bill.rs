//! What a simulated provider charges: each request answered with a completion (and each
//! batch line that succeeded) is priced at its model's scenario prices, split as the real
//! invoices split it — uncached input, cache reads, cache writes, output — and summed per
//! provider, so tests can hold offpeak's own cost accounting against the provider's.

use crate::cache::PromptTokens;
use crate::scenario::{SimKind, SimPrice};
use schemas::Usd;

/// Sums over the billed requests of one provider.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Tally {
    /// Requests (or batch lines) billed.
    pub requests: u64,
    /// Prompt tokens neither read from nor written to the cache.
    pub input_tokens: u64,
    /// Prompt tokens read from the cache.
    pub cached_tokens: u64,
    /// Prompt tokens written to a 5-minute cache.
    pub cache_write_5m_tokens: u64,
    /// Prompt tokens written to a 1-hour cache.
    pub cache_write_1h_tokens: u64,
    /// Output tokens, every choice counted.
    pub output_tokens: u64,
    /// The charge.
    pub usd: Usd,
}

impl Tally {
    /// Adds one billed request.
    pub(crate) fn add(&mut self, prompt: &PromptTokens, output_tokens: u64, usd: Usd) {
        self.requests += 1;
        self.input_tokens += prompt.uncached();
        self.cached_tokens += prompt.read;
        self.cache_write_5m_tokens += prompt.write_5m;
        self.cache_write_1h_tokens += prompt.write_1h;
        self.output_tokens += output_tokens;
        self.usd += usd;
    }

    /// Every prompt token of the billed requests, cached or not.
    pub(crate) fn prompt_tokens(&self) -> u64 {
        self.input_tokens
            + self.cached_tokens
            + self.cache_write_5m_tokens
            + self.cache_write_1h_tokens
    }

    /// The sum of two tallies.
    pub(crate) fn plus(self, o: Tally) -> Tally {
        Tally {
            requests: self.requests + o.requests,
            input_tokens: self.input_tokens + o.input_tokens,
            cached_tokens: self.cached_tokens + o.cached_tokens,
            cache_write_5m_tokens: self.cache_write_5m_tokens + o.cache_write_5m_tokens,
            cache_write_1h_tokens: self.cache_write_1h_tokens + o.cache_write_1h_tokens,
            output_tokens: self.output_tokens + o.output_tokens,
            usd: self.usd + o.usd,
        }
    }
}

/// The charge for one request at `price` (none: not priced, free) on a provider of `kind`,
/// times `factor` (1 realtime, the flex multiplier, or 1 − the batch discount).
pub(crate) fn cost(
    price: Option<&SimPrice>,
    kind: SimKind,
    prompt: &PromptTokens,
    output_tokens: u64,
    factor: f64,
) -> Usd {
    let Some(p) = price else {
        return Usd::ZERO;
    };
    let list = Usd::for_tokens(prompt.uncached(), p.input_per_mtok)
        + Usd::for_tokens(prompt.read, p.cache_read(kind))
        + Usd::for_tokens(prompt.write_5m, p.cache_write_5m(kind))
        + Usd::for_tokens(prompt.write_1h, p.cache_write_1h(kind))
        + Usd::for_tokens(output_tokens, p.output_per_mtok);
    Usd(list.value() * factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_prices_default_to_the_kinds_multiples_of_the_input_price() {
        let p = SimPrice {
            input_per_mtok: 3.0,
            output_per_mtok: 15.0,
            cache_read_per_mtok: None,
            cache_write_5m_per_mtok: None,
            cache_write_1h_per_mtok: None,
        };
        let prompt = PromptTokens {
            total: 4_000_000,
            read: 1_000_000,
            write_5m: 1_000_000,
            write_1h: 1_000_000,
        };
        let anthropic = cost(Some(&p), SimKind::Anthropic, &prompt, 1_000_000, 1.0);
        assert!((anthropic.value() - (3.0 + 0.3 + 3.75 + 6.0 + 15.0)).abs() < 1e-9);
        let openai = cost(Some(&p), SimKind::Openai, &prompt, 1_000_000, 0.5);
        assert!((openai.value() - 0.5 * (3.0 + 1.5 + 3.0 + 3.0 + 15.0)).abs() < 1e-9);
        assert_eq!(cost(None, SimKind::Openai, &prompt, 1, 1.0), Usd::ZERO);
    }
}
