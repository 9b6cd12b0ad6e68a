//! The scenario: which providers the simulator hosts and how each one behaves (latency, limits,
//! injected errors, rate-limited and outage windows). Read from TOML or derived from a catalog.

use crate::SimError;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};

/// Everything the simulator serves.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Seed for every random choice (latency jitter, injected errors, completion text).
    /// Absent means 0: runs are deterministic unless a seed says otherwise.
    #[serde(default)]
    pub seed: Option<u64>,
    /// The simulated providers; each is served under `/<name>/v1/…`.
    #[serde(default)]
    pub providers: Vec<SimProvider>,
}

/// Which HTTP API a simulated provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SimKind {
    /// OpenAI chat completions (`POST /v1/chat/completions`, `GET /v1/models`).
    Openai,
    /// Anthropic messages (`POST /v1/messages`, `GET /v1/models`).
    Anthropic,
}

/// One simulated provider account.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimProvider {
    /// Path prefix and catalog name: served at `http://HOST:PORT/<name>/v1`.
    pub name: String,
    /// The API dialect.
    pub kind: SimKind,
    /// When set, requests must carry this key (`Authorization: Bearer` for OpenAI; `x-api-key`,
    /// or the bearer token recent official clients send, for Anthropic) or get a 401 with the
    /// provider's real error body.
    #[serde(default)]
    pub api_key: Option<String>,
    /// Model ids served; any other id gets a 404 in the provider's real error shape.
    pub models: Vec<String>,
    /// Base latency of a successful answer, in milliseconds.
    #[serde(default = "default_latency_ms")]
    pub latency_ms: f64,
    /// Extra latency per generated token, in milliseconds.
    #[serde(default)]
    pub per_output_token_ms: f64,
    /// Uniform jitter as a fraction of `latency_ms` (0.1 = ±10 %).
    #[serde(default)]
    pub jitter: f64,
    /// Requests per minute: a token bucket of capacity `rpm` refilled at `rpm/60` per second.
    /// Exceeding it answers 429 with `Retry-After`.
    #[serde(default)]
    pub rpm: Option<u32>,
    /// Tokens per minute, counting prompt tokens plus `max_tokens`; same bucket rules as `rpm`.
    #[serde(default)]
    pub tpm: Option<u64>,
    /// Requests in flight at once; one more gets a 429.
    #[serde(default)]
    pub concurrency: Option<u32>,
    /// Probability per request of answering with the given status (keys are status codes such
    /// as `"500"`, `"503"`, `"529"`); the probabilities must sum to at most 1.
    #[serde(default)]
    pub errors: BTreeMap<String, f64>,
    /// Windows (seconds since server start) in which every request gets a 429 whose
    /// `Retry-After` is the time left in the window.
    #[serde(default)]
    pub rate_limited: Vec<Window>,
    /// Windows (seconds since server start) in which every request gets a 503.
    #[serde(default)]
    pub outages: Vec<Window>,
    /// Misbehaviour beyond error statuses: hung requests, malformed and oversized answers.
    #[serde(default)]
    pub chaos: Chaos,
    /// Informational price in dollars per million input tokens (the bill uses `prices`).
    #[serde(default)]
    pub input_per_mtok: Option<f64>,
    /// Informational price in dollars per million output tokens (the bill uses `prices`).
    #[serde(default)]
    pub output_per_mtok: Option<f64>,
    /// Prices per model id, for the provider's bill (`GET /_sim/stats`, `bill_usd`). A model
    /// left out is served free.
    #[serde(default)]
    pub prices: BTreeMap<String, SimPrice>,
    /// The prompt cache: automatic prefix caching for the OpenAI kind, `cache_control`
    /// breakpoints for the Anthropic kind.
    #[serde(default)]
    pub cache: SimCache,
    /// The provider's batch API (OpenAI files + batches, Anthropic message batches). Absent: the
    /// batch and file endpoints answer 404, like a provider without them.
    #[serde(default)]
    pub batch: Option<SimBatch>,
    /// OpenAI's flex tier (`service_tier: "flex"`). Absent: such a request gets a 400.
    #[serde(default)]
    pub flex: Option<SimFlex>,
}

/// How a provider's batch API behaves. Times are seconds; a batch's lines finish spread over its
/// turnaround and its status follows from the time alone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimBatch {
    /// Time from creation to `completed` / `ended`.
    pub turnaround_s: f64,
    /// Probability that a batch takes `tail_s` instead (a turnaround spike).
    pub tail: f64,
    /// The turnaround of a tail batch.
    pub tail_s: f64,
    /// Probability that a line fails (a 500 in OpenAI's error file, `errored` in Anthropic's
    /// results).
    pub line_errors: f64,
    /// Completion window: a batch not done this long after creation expires, its finished
    /// lines kept.
    pub window_s: f64,
    /// 1-based creation numbers of batches that expire at their turnaround with only
    /// `expire_done` of their lines done.
    pub expire: Vec<u64>,
    /// Fraction of the lines done in a batch listed in `expire`.
    pub expire_done: f64,
    /// Windows (seconds since server start) in which the batch and file endpoints answer 503.
    pub outages: Vec<Window>,
    /// Fraction off the list price for batch lines (0.5: half price), cache tokens included;
    /// the bill charges batch lines at `1 - discount` times their model's prices.
    pub discount: f64,
}

impl Default for SimBatch {
    fn default() -> Self {
        SimBatch {
            turnaround_s: 2.0,
            tail: 0.0,
            tail_s: 60.0,
            line_errors: 0.0,
            window_s: 86_400.0,
            expire: Vec::new(),
            expire_done: 0.5,
            outages: Vec::new(),
            discount: 0.5,
        }
    }
}

/// OpenAI's flex tier: its own small capacity, apart from the realtime limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimFlex {
    /// Flex requests in flight at once; one more gets a 429 "Resource Unavailable" (not billed).
    pub concurrency: u32,
    /// Flex requests per minute (a token bucket like `rpm`); none: unlimited.
    pub rpm: Option<u32>,
    /// Models served on flex; empty: all the provider's models. Others get a 400.
    pub models: Vec<String>,
    /// Base latency of a flex answer in milliseconds (flex is slower); none: `latency_ms`.
    pub latency_ms: Option<f64>,
    /// Price multiplier of flex answers (0.5: half the list price), cache tokens included;
    /// the bill charges flex answers at `multiplier` times their model's prices.
    pub multiplier: f64,
}

impl Default for SimFlex {
    fn default() -> Self {
        SimFlex {
            concurrency: 4,
            rpm: None,
            models: Vec::new(),
            latency_ms: None,
            multiplier: 0.5,
        }
    }
}

/// A model's prices in dollars per million tokens. A cache price left out takes the kind's
/// default, as the real providers charge: `anthropic` reads at 0.1 ×, 5-minute writes at
/// 1.25 × and 1-hour writes at 2 × the input price; `openai` (automatic caching, no write
/// surcharge) reads at 0.5 × and writes at 1 × the input price.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimPrice {
    /// An uncached input token.
    pub input_per_mtok: f64,
    /// An output token.
    pub output_per_mtok: f64,
    /// An input token read from the cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_read_per_mtok: Option<f64>,
    /// An input token written to a 5-minute cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write_5m_per_mtok: Option<f64>,
    /// An input token written to a 1-hour cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write_1h_per_mtok: Option<f64>,
}

impl SimPrice {
    /// The price of a cache read on a provider of `kind`.
    pub fn cache_read(&self, kind: SimKind) -> f64 {
        let k = match kind {
            SimKind::Anthropic => 0.1,
            SimKind::Openai => 0.5,
        };
        self.cache_read_per_mtok.unwrap_or(self.input_per_mtok * k)
    }

    /// The price of a 5-minute cache write on a provider of `kind`.
    pub fn cache_write_5m(&self, kind: SimKind) -> f64 {
        let k = match kind {
            SimKind::Anthropic => 1.25,
            SimKind::Openai => 1.0,
        };
        self.cache_write_5m_per_mtok
            .unwrap_or(self.input_per_mtok * k)
    }

    /// The price of a 1-hour cache write on a provider of `kind`.
    pub fn cache_write_1h(&self, kind: SimKind) -> f64 {
        let k = match kind {
            SimKind::Anthropic => 2.0,
            SimKind::Openai => 1.0,
        };
        self.cache_write_1h_per_mtok
            .unwrap_or(self.input_per_mtok * k)
    }
}

/// How a provider caches prompts. OpenAI kind: every answered request of at least
/// `min_tokens` prompt tokens stores its prefixes, and a later request reports its longest
/// stored prefix still alive as `prompt_tokens_details.cached_tokens`, in steps of
/// `block_tokens` beyond `min_tokens`. Anthropic kind: only `cache_control` breakpoints cache,
/// a prefix of at least `min_tokens` tokens, reported as `cache_creation_input_tokens` when
/// written and `cache_read_input_tokens` when read. A prefix lives `ttl_s` (Anthropic `"1h"`
/// breakpoints: `ttl_1h_s`) from its last use.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimCache {
    /// `false`: nothing is ever cached (Anthropic's `cache_control` is still accepted).
    pub enabled: bool,
    /// The shortest prefix cached, in tokens (OpenAI and Claude Sonnet/Opus: 1024).
    pub min_tokens: u64,
    /// OpenAI kind: cache hits grow in steps of this many tokens beyond `min_tokens` (128).
    pub block_tokens: u64,
    /// Seconds a prefix lives after its last use: OpenAI-kind prefixes and Anthropic's default
    /// (`"5m"`) breakpoints (300).
    pub ttl_s: f64,
    /// Seconds an Anthropic `"ttl": "1h"` breakpoint's prefix lives after its last use (3600).
    pub ttl_1h_s: f64,
}

impl Default for SimCache {
    fn default() -> Self {
        SimCache {
            enabled: true,
            min_tokens: 1024,
            block_tokens: 128,
            ttl_s: 300.0,
            ttl_1h_s: 3600.0,
        }
    }
}

fn default_latency_ms() -> f64 {
    20.0
}

/// Answers a real provider sometimes gives that are not error statuses: a request that never
/// answers, a 200 whose body is not JSON, a 200 with a gigantic body. Each is a probability per
/// request, rolled after the injected `errors` (their sum with `errors` must stay at most 1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Chaos {
    /// Probability that a request hangs: no answer for `hang_s` seconds (the client times out).
    pub hang: f64,
    /// How long a hung request stays silent before it gets a 504 (seconds).
    pub hang_s: f64,
    /// Probability of a 200 whose body is cut-off, unparseable JSON.
    pub malformed: f64,
    /// Probability of a 200 with a body of `huge_bytes` bytes, streamed without a
    /// `Content-Length` so the client only finds out while reading it.
    pub huge: f64,
    /// Size of a huge answer (default 50 MiB).
    pub huge_bytes: u64,
}

impl Default for Chaos {
    fn default() -> Self {
        Chaos {
            hang: 0.0,
            hang_s: 3600.0,
            malformed: 0.0,
            huge: 0.0,
            huge_bytes: 50 << 20,
        }
    }
}

/// A span of time in seconds since the server started: `from_s <= t < to_s`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Window {
    /// Start, seconds since server start (inclusive).
    pub from_s: f64,
    /// End, seconds since server start (exclusive).
    pub to_s: f64,
}

impl Window {
    /// Whether `t` (seconds since start) falls in the window.
    pub fn contains(&self, t: f64) -> bool {
        t >= self.from_s && t < self.to_s
    }
}

impl SimProvider {
    /// A provider with the given name, kind and models and otherwise default behaviour
    /// (20 ms latency, no limits, no errors).
    pub fn new(name: &str, kind: SimKind, models: &[&str]) -> SimProvider {
        SimProvider {
            name: name.to_string(),
            kind,
            api_key: None,
            models: models.iter().map(|m| m.to_string()).collect(),
            latency_ms: default_latency_ms(),
            per_output_token_ms: 0.0,
            jitter: 0.0,
            rpm: None,
            tpm: None,
            concurrency: None,
            errors: BTreeMap::new(),
            rate_limited: Vec::new(),
            outages: Vec::new(),
            chaos: Chaos::default(),
            input_per_mtok: None,
            output_per_mtok: None,
            prices: BTreeMap::new(),
            cache: SimCache::default(),
            batch: None,
            flex: None,
        }
    }

    /// The injected error statuses with their probabilities, parsed from `errors`.
    pub(crate) fn error_table(&self) -> Vec<(u16, f64)> {
        self.errors
            .iter()
            .filter_map(|(k, p)| k.parse::<u16>().ok().map(|s| (s, *p)))
            .collect()
    }
}

impl Scenario {
    /// Parses and checks a scenario; `file_name` names it in errors.
    pub fn from_toml(file_name: &str, text: &str) -> Result<Scenario, SimError> {
        let scenario: Scenario = toml::from_str(text).map_err(|source| SimError::Toml {
            file: file_name.to_string(),
            source: Box::new(source),
        })?;
        scenario.check().map_err(|reason| SimError::Invalid {
            file: file_name.to_string(),
            reason,
        })?;
        Ok(scenario)
    }

    /// One simulated provider per catalog provider: same name and kind (Gemini is simulated as
    /// OpenAI), the catalog's model ids, prices and limits, 20 ms latency, no errors or outages.
    pub fn from_catalog(catalog: &schemas::Catalog) -> Scenario {
        let providers = catalog
            .providers
            .iter()
            .map(|p| {
                let kind = match p.kind {
                    schemas::ProviderKind::Anthropic => SimKind::Anthropic,
                    schemas::ProviderKind::Openai | schemas::ProviderKind::Gemini => {
                        SimKind::Openai
                    }
                };
                let ids: Vec<&str> = p.models.iter().map(|m| m.id.as_str()).collect();
                let mut sp = SimProvider::new(&p.name, kind, &ids);
                sp.rpm = p.limits.rpm;
                sp.tpm = p.limits.tpm;
                sp.concurrency = p.limits.concurrency;
                let price = p.models.first().map(|m| m.base_price());
                sp.input_per_mtok = price.map(|p| p.input_per_mtok);
                sp.output_per_mtok = price.map(|p| p.output_per_mtok);
                sp.prices = catalog_prices(p);
                sp.batch = catalog_batch(p);
                sp.flex = catalog_flex(p);
                sp
            })
            .collect();
        Scenario {
            seed: None,
            providers,
        }
    }

    /// Checks what serde cannot: unique URL-safe names, sane numbers, known error statuses.
    pub fn check(&self) -> Result<(), String> {
        let mut names = HashSet::new();
        for p in &self.providers {
            let n = &p.name;
            if n.is_empty()
                || !n
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                return Err(format!(
                    "provider name {n:?} must be non-empty [A-Za-z0-9._-]"
                ));
            }
            if !names.insert(n.as_str()) {
                return Err(format!("provider {n:?} is listed twice"));
            }
            if p.models.is_empty() {
                return Err(format!("provider {n:?} lists no models"));
            }
            let finite_nonneg = |v: f64| v.is_finite() && v >= 0.0;
            if !finite_nonneg(p.latency_ms) || !finite_nonneg(p.per_output_token_ms) {
                return Err(format!("provider {n:?}: latencies must be >= 0"));
            }
            if !(0.0..=1.0).contains(&p.jitter) {
                return Err(format!("provider {n:?}: jitter must be within 0..=1"));
            }
            if p.rpm == Some(0) || p.tpm == Some(0) || p.concurrency == Some(0) {
                return Err(format!(
                    "provider {n:?}: rpm, tpm and concurrency must be > 0"
                ));
            }
            let mut total = 0.0;
            for (status, prob) in &p.errors {
                match status.parse::<u16>() {
                    Ok(s) if (400..600).contains(&s) => {}
                    _ => {
                        return Err(format!(
                            "provider {n:?}: errors key {status:?} is not a 4xx/5xx status"
                        ))
                    }
                }
                if !(0.0..=1.0).contains(prob) {
                    return Err(format!(
                        "provider {n:?}: errors[{status}] must be within 0..=1"
                    ));
                }
                total += prob;
            }
            let c = &p.chaos;
            for (what, prob) in [
                ("hang", c.hang),
                ("malformed", c.malformed),
                ("huge", c.huge),
            ] {
                if !(0.0..=1.0).contains(&prob) {
                    return Err(format!("provider {n:?}: chaos.{what} must be within 0..=1"));
                }
                total += prob;
            }
            if !finite_nonneg(c.hang_s) {
                return Err(format!("provider {n:?}: chaos.hang_s must be >= 0"));
            }
            if total > 1.0 + 1e-9 {
                return Err(format!(
                    "provider {n:?}: error and chaos probabilities sum to {total} > 1"
                ));
            }
            for w in p.rate_limited.iter().chain(&p.outages) {
                if !(w.from_s.is_finite() && w.to_s.is_finite() && w.from_s <= w.to_s) {
                    return Err(format!(
                        "provider {n:?}: window {w:?} must have from_s <= to_s"
                    ));
                }
            }
            check_batch_and_flex(p)?;
            check_prices_and_cache(p)?;
        }
        Ok(())
    }
}

/// The simulated turnaround of a catalog batch route: short, so a local run sees its batches
/// finish (the catalog's real turnarounds are hours).
const CATALOG_BATCH_TURNAROUND_S: f64 = 2.0;

/// The batch API of catalog provider `p`, when one of its models has a batch offer: a 2 s
/// turnaround, the catalog's window capped at 24 h, its discount.
fn catalog_batch(p: &schemas::ProviderSpec) -> Option<SimBatch> {
    let offer = p.models.iter().find_map(|m| m.batch.as_ref())?;
    Some(SimBatch {
        turnaround_s: CATALOG_BATCH_TURNAROUND_S,
        window_s: offer
            .window
            .as_secs_f64()
            .clamp(CATALOG_BATCH_TURNAROUND_S * 2.0, 86_400.0),
        discount: offer.discount,
        ..SimBatch::default()
    })
}

/// The flex tier of catalog provider `p`, for its models with a flex offer.
fn catalog_flex(p: &schemas::ProviderSpec) -> Option<SimFlex> {
    let models: Vec<String> = p
        .models
        .iter()
        .filter(|m| m.flex.is_some())
        .map(|m| m.id.clone())
        .collect();
    let multiplier = p.models.iter().find_map(|m| m.flex)?.multiplier;
    Some(SimFlex {
        models,
        multiplier,
        ..SimFlex::default()
    })
}

/// The prices of catalog provider `p`'s models whose price never changes (no time-of-day
/// windows, no dated changes): list and cache prices, the catalog's cache defaults applied.
/// The scenario's prices are flat, so a model priced by the clock is left out (served free).
fn catalog_prices(p: &schemas::ProviderSpec) -> BTreeMap<String, SimPrice> {
    p.models
        .iter()
        .filter(|m| m.schedule.is_empty() && m.changes.is_empty())
        .map(|m| {
            let list = m.base_price();
            let cache = m.cache_price_at(p.kind, chrono::DateTime::UNIX_EPOCH);
            let price = SimPrice {
                input_per_mtok: list.input_per_mtok,
                output_per_mtok: list.output_per_mtok,
                cache_read_per_mtok: Some(cache.read_per_mtok),
                cache_write_5m_per_mtok: Some(cache.write_5m_per_mtok),
                cache_write_1h_per_mtok: Some(cache.write_1h_per_mtok),
            };
            (m.id.clone(), price)
        })
        .collect()
}

/// Checks a provider's `prices` and `cache`.
fn check_prices_and_cache(p: &SimProvider) -> Result<(), String> {
    let n = &p.name;
    let price_ok = |v: f64| v.is_finite() && v >= 0.0;
    for (model, price) in &p.prices {
        if !p.models.contains(model) {
            return Err(format!(
                "provider {n:?}: prices name model {model:?}, which is not in models"
            ));
        }
        let all = [
            Some(price.input_per_mtok),
            Some(price.output_per_mtok),
            price.cache_read_per_mtok,
            price.cache_write_5m_per_mtok,
            price.cache_write_1h_per_mtok,
        ];
        if !all.into_iter().flatten().all(price_ok) {
            return Err(format!(
                "provider {n:?}: prices of {model:?} must be finite and >= 0"
            ));
        }
    }
    let c = &p.cache;
    if c.min_tokens == 0 || c.block_tokens == 0 {
        return Err(format!(
            "provider {n:?}: cache.min_tokens and cache.block_tokens must be > 0"
        ));
    }
    if !(c.ttl_s.is_finite() && c.ttl_s > 0.0 && c.ttl_1h_s.is_finite() && c.ttl_1h_s > 0.0) {
        return Err(format!(
            "provider {n:?}: cache.ttl_s and cache.ttl_1h_s must be > 0"
        ));
    }
    Ok(())
}

/// Checks a provider's `batch` and `flex` sections.
fn check_batch_and_flex(p: &SimProvider) -> Result<(), String> {
    let n = &p.name;
    let pos = |v: f64| v.is_finite() && v > 0.0;
    let prob = |v: f64| (0.0..=1.0).contains(&v);
    if let Some(b) = &p.batch {
        if !pos(b.turnaround_s) || !pos(b.tail_s) || !pos(b.window_s) {
            return Err(format!(
                "provider {n:?}: batch turnaround_s, tail_s and window_s must be > 0"
            ));
        }
        for (what, v) in [
            ("tail", b.tail),
            ("line_errors", b.line_errors),
            ("expire_done", b.expire_done),
            ("discount", b.discount),
        ] {
            if !prob(v) {
                return Err(format!("provider {n:?}: batch.{what} must be within 0..=1"));
            }
        }
        if b.expire.contains(&0) {
            return Err(format!(
                "provider {n:?}: batch.expire numbers batches from 1"
            ));
        }
        for w in &b.outages {
            if !(w.from_s.is_finite() && w.to_s.is_finite() && w.from_s <= w.to_s) {
                return Err(format!(
                    "provider {n:?}: batch window {w:?} must have from_s <= to_s"
                ));
            }
        }
    }
    if let Some(f) = &p.flex {
        if p.kind != SimKind::Openai {
            return Err(format!("provider {n:?}: flex is an OpenAI tier"));
        }
        if f.concurrency == 0 || f.rpm == Some(0) {
            return Err(format!(
                "provider {n:?}: flex concurrency and rpm must be > 0"
            ));
        }
        if let Some(m) = f.models.iter().find(|m| !p.models.contains(m)) {
            return Err(format!("provider {n:?}: flex model {m:?} is not in models"));
        }
        if f.latency_ms.is_some_and(|l| !(l.is_finite() && l >= 0.0)) {
            return Err(format!("provider {n:?}: flex.latency_ms must be >= 0"));
        }
        if !(f.multiplier.is_finite() && f.multiplier > 0.0) {
            return Err(format!("provider {n:?}: flex.multiplier must be > 0"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenario_parses_every_documented_field() {
        let text = r#"
seed = 42
[[providers]]
name = "deepseek"
kind = "openai"
api_key = "sk-test"
models = ["deepseek-chat"]
latency_ms = 50
per_output_token_ms = 0.0
jitter = 0.1
rpm = 600
tpm = 1000000
concurrency = 64
errors = { "500" = 0.02, "503" = 0.01, "529" = 0.0 }
rate_limited = [{ from_s = 0, to_s = 20 }]
outages = [{ from_s = 30, to_s = 60 }]
chaos = { hang = 0.1, hang_s = 30, malformed = 0.05, huge = 0.01, huge_bytes = 1000 }
input_per_mtok = 0.27
output_per_mtok = 1.10
prices = { "deepseek-chat" = { input_per_mtok = 0.27, output_per_mtok = 1.10, cache_read_per_mtok = 0.07, cache_write_5m_per_mtok = 0.27, cache_write_1h_per_mtok = 0.27 } }
cache = { enabled = true, min_tokens = 64, block_tokens = 64, ttl_s = 600, ttl_1h_s = 7200 }
[providers.batch]
turnaround_s = 3.0
tail = 0.1
tail_s = 90.0
line_errors = 0.02
window_s = 600.0
expire = [2, 5]
expire_done = 0.25
outages = [{ from_s = 10, to_s = 20 }]
discount = 0.5
[providers.flex]
concurrency = 8
rpm = 600
models = ["deepseek-chat"]
latency_ms = 500
multiplier = 0.5
"#;
        let s = Scenario::from_toml("s.toml", text).unwrap();
        assert_eq!(s.seed, Some(42));
        assert_eq!(s.providers[0].rpm, Some(600));
        assert_eq!(s.providers[0].error_table().len(), 3);
        assert_eq!(s.providers[0].chaos.hang, 0.1);
        assert_eq!(s.providers[0].chaos.huge_bytes, 1000);
        let b = s.providers[0].batch.as_ref().unwrap();
        assert_eq!((b.turnaround_s, b.tail_s, b.window_s), (3.0, 90.0, 600.0));
        assert_eq!((b.expire.clone(), b.expire_done), (vec![2, 5], 0.25));
        assert_eq!(b.outages.len(), 1);
        let f = s.providers[0].flex.as_ref().unwrap();
        assert_eq!((f.concurrency, f.rpm, f.multiplier), (8, Some(600), 0.5));
        let price = &s.providers[0].prices["deepseek-chat"];
        assert_eq!(price.cache_read(SimKind::Openai), 0.07);
        let c = &s.providers[0].cache;
        assert_eq!(
            (c.min_tokens, c.block_tokens, c.ttl_s, c.ttl_1h_s),
            (64, 64, 600.0, 7200.0)
        );
        assert_eq!(
            s.providers[0].outages[0],
            Window {
                from_s: 30.0,
                to_s: 60.0
            }
        );
    }

    #[test]
    fn catalog_scenario_serves_batch_and_flex_where_the_example_catalog_offers_them() {
        let text = include_str!("../../examples/catalog.toml");
        let catalog = schemas::Catalog::from_toml("catalog.toml", text).unwrap();
        let s = Scenario::from_catalog(&catalog);
        s.check().unwrap();
        let get = |n: &str| s.providers.iter().find(|p| p.name == n).unwrap();
        let openai = get("openai");
        let b = openai.batch.as_ref().unwrap();
        assert_eq!(
            (b.turnaround_s, b.window_s, b.discount),
            (2.0, 86_400.0, 0.5)
        );
        let f = openai.flex.as_ref().unwrap();
        assert!(!f.models.is_empty() && f.models.len() < openai.models.len());
        assert!(get("anthropic").batch.is_some());
        assert!(get("anthropic").flex.is_none());
        assert!(get("vllm-local").batch.is_none());
    }

    #[test]
    fn catalog_scenario_prices_the_flat_priced_models_with_the_catalogs_cache_prices() {
        let text = include_str!("../../examples/catalog.toml");
        let catalog = schemas::Catalog::from_toml("catalog.toml", text).unwrap();
        let s = Scenario::from_catalog(&catalog);
        for (p, spec) in s.providers.iter().zip(&catalog.providers) {
            for m in &spec.models {
                let flat = m.schedule.is_empty() && m.changes.is_empty();
                assert_eq!(p.prices.contains_key(&m.id), flat, "{} {}", p.name, m.id);
                if let Some(price) = p.prices.get(&m.id) {
                    let at = chrono::DateTime::UNIX_EPOCH;
                    assert_eq!(price.input_per_mtok, m.price_at(at).input_per_mtok);
                    let cache = m.cache_price_at(spec.kind, at);
                    assert_eq!(price.cache_read(p.kind), cache.read_per_mtok);
                    assert_eq!(price.cache_write_1h(p.kind), cache.write_1h_per_mtok);
                }
            }
        }
        assert!(s.providers.iter().any(|p| !p.prices.is_empty()));
    }

    #[test]
    fn cache_is_on_by_default_and_prices_must_name_served_models() {
        let on = "[[providers]]\nname='a'\nkind='openai'\nmodels=['m']\n";
        let s = Scenario::from_toml("s.toml", on).unwrap();
        assert_eq!(s.providers[0].cache, SimCache::default());
        assert!(s.providers[0].cache.enabled);
        let off = format!("{on}cache = {{ enabled = false }}\n");
        let s = Scenario::from_toml("s.toml", &off).unwrap();
        assert!(!s.providers[0].cache.enabled);
        assert_eq!(s.providers[0].cache.min_tokens, 1024);
        let stray =
            format!("{on}prices = {{ 'x' = {{ input_per_mtok = 1.0, output_per_mtok = 2.0 }} }}\n");
        let e = Scenario::from_toml("s.toml", &stray)
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"x\""), "{e}");
        let zero = format!("{on}cache = {{ block_tokens = 0 }}\n");
        assert!(Scenario::from_toml("s.toml", &zero).is_err());
    }

    #[test]
    fn scenario_rejects_unknown_fields_and_bad_error_tables() {
        let unknown = "[[providers]]\nname='a'\nkind='openai'\nmodels=['m']\nbogus=1\n";
        let e = Scenario::from_toml("s.toml", unknown)
            .unwrap_err()
            .to_string();
        assert!(e.contains("s.toml") && e.contains("bogus"), "{e}");
        let bad =
            "[[providers]]\nname='a'\nkind='openai'\nmodels=['m']\nerrors={'500'=0.7,'503'=0.6}\n";
        let e = Scenario::from_toml("s.toml", bad).unwrap_err().to_string();
        assert!(e.contains("sum"), "{e}");
    }
}
