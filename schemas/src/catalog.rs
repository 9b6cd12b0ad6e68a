//! The provider catalog (DESIGN §4): which providers exist, how to reach them, their limits and
//! their prices, including price schedules (see [`crate::schedule`]), prompt-cache prices and
//! GPU-hour pricing for self-hosted models.

use chrono::{DateTime, Duration, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;

use crate::schedule::{de_dates, Calendar};
pub use crate::schedule::{parse_hhmm, CachePrices, Days, PriceChange, PriceWindow, Zone};

/// Errors found while reading a catalog file.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("{file}: {source}")]
    Toml {
        file: String,
        #[source]
        source: toml::de::Error,
    },
    #[error("{file}: {reason}")]
    Invalid { file: String, reason: String },
}

/// The whole catalog: every provider a worker may route to.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Catalog {
    pub providers: Vec<ProviderSpec>,
}

/// Which HTTP API a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// OpenAI chat completions (also vLLM, llama.cpp, Together, Groq, OpenRouter, DeepSeek…).
    Openai,
    /// Anthropic messages API.
    Anthropic,
    /// Google Gemini `generateContent`: not implemented, so a catalog naming it is refused (its
    /// OpenAI-compatible endpoint works as `openai`).
    Gemini,
}

/// One provider account.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderSpec {
    /// Unique name, used in results, metrics and `providers_allow` / `providers_deny`.
    pub name: String,
    pub kind: ProviderKind,
    /// API base URL including the version path, e.g. `https://api.openai.com/v1`.
    pub base_url: String,
    /// Name of the environment variable holding the API key (keys are never in the file).
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Path of a file holding the API key (alternative to `api_key_env`).
    #[serde(default)]
    pub api_key_file: Option<String>,
    #[serde(default)]
    pub limits: Limits,
    pub models: Vec<ModelOffer>,
}

/// The account's published limits; the worker enforces them per process.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Requests per minute.
    pub rpm: Option<u32>,
    /// Tokens (input + output) per minute.
    pub tpm: Option<u64>,
    /// Requests in flight at once.
    pub concurrency: Option<u32>,
}

/// One model as sold by one provider.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelOffer {
    /// The canonical model name jobs ask for.
    pub model: String,
    /// The provider's own model id, sent in requests.
    pub id: String,
    /// Dollars per million input tokens.
    #[serde(default)]
    pub input_per_mtok: Option<f64>,
    /// Dollars per million output tokens.
    #[serde(default)]
    pub output_per_mtok: Option<f64>,
    /// Self-hosted pricing: dollars per GPU-hour…
    #[serde(default)]
    pub gpu_per_hour: Option<f64>,
    /// …and the measured throughput in tokens per second, giving an effective $/Mtok.
    #[serde(default)]
    pub tokens_per_second: Option<f64>,
    /// Context window in tokens.
    #[serde(default)]
    pub context: Option<u32>,
    /// The clock of `schedule`, `holidays`, `working_days` and `changes`: an IANA time zone
    /// (`"Asia/Shanghai"`). Absent: UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<Zone>,
    /// Public holidays: not working days, so windows of `days = "working"` stay shut on them.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "de_dates"
    )]
    pub holidays: Vec<NaiveDate>,
    /// Make-up working days (a Saturday worked to bridge a holiday): working days whatever
    /// their weekday.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "de_dates"
    )]
    pub working_days: Vec<NaiveDate>,
    /// Prompt-cache prices (read, 5-minute and 1-hour writes); each left out takes the provider
    /// kind's default (see [`ModelOffer::cache_price_at`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<CachePrices>,
    /// Time-of-day price windows, on the clock of `time_zone`; the first open one applies.
    #[serde(default)]
    pub schedule: Vec<PriceWindow>,
    /// Dated price changes, oldest first: from its `effective_from` day on, each replaces the
    /// prices, cache prices or schedule it names; before its day the earlier ones hold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<PriceChange>,
    /// The provider's batch API for this model, if it has one: a cheaper route for work that
    /// can wait (DESIGN §5, Routes).
    #[serde(default)]
    pub batch: Option<BatchOffer>,
    /// A cheaper, best-effort synchronous tier (OpenAI `service_tier: "flex"`), if offered.
    #[serde(default)]
    pub flex: Option<FlexOffer>,
}

/// How a provider sells this model through its batch API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchOffer {
    /// Fraction off the list price (0.5: half price), on input and output alike.
    pub discount: f64,
    /// Completion window the provider promises (`"24h"`); a batch not done by then expires.
    #[serde(with = "duration_text")]
    pub window: std::time::Duration,
    /// Typical turnaround the provider publishes (Anthropic: most batches within an hour): the
    /// prior before any batch was observed. Absent: the window, the pessimistic prior.
    #[serde(default, with = "opt_duration_text")]
    pub turnaround: Option<std::time::Duration>,
    /// Most requests one batch may carry.
    #[serde(default)]
    pub max_requests: Option<u32>,
    /// Largest batch input the provider takes (`"200MB"`, `"256MB"`).
    #[serde(default, with = "opt_bytes_text")]
    pub max_bytes: Option<u64>,
    /// How long the provider keeps results (`"29d"`); informational.
    #[serde(default, with = "opt_duration_text")]
    pub results_kept: Option<std::time::Duration>,
}

impl BatchOffer {
    /// The turnaround assumed before any batch of this pair was seen.
    pub fn prior_turnaround(&self) -> std::time::Duration {
        self.turnaround.unwrap_or(self.window).min(self.window)
    }
}

/// The flex tier: the ordinary synchronous API at `multiplier` × the list price, answering
/// `429 Resource Unavailable` (not billed) when it has no capacity.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlexOffer {
    pub multiplier: f64,
}

/// How a (provider, model) pair is served (DESIGN §5, Routes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Route {
    Realtime,
    Flex,
    Batch,
}

impl Route {
    pub fn as_str(self) -> &'static str {
        match self {
            Route::Realtime => "realtime",
            Route::Flex => "flex",
            Route::Batch => "batch",
        }
    }

    /// Parses the text [`as_str`](Self::as_str) gives.
    pub fn parse(s: &str) -> Option<Route> {
        match s {
            "realtime" => Some(Route::Realtime),
            "flex" => Some(Route::Flex),
            "batch" => Some(Route::Batch),
            _ => None,
        }
    }
}

impl std::fmt::Display for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

mod duration_text {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(|e| {
            serde::de::Error::custom(format!(
                "expected a duration such as \"24h\", got {s:?}: {e}"
            ))
        })
    }

    pub fn serialize<S: Serializer>(v: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*v).to_string())
    }
}

mod opt_duration_text {
    use serde::{Deserializer, Serializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        super::duration_text::deserialize(d).map(Some)
    }

    pub fn serialize<S: Serializer>(v: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => super::duration_text::serialize(v, s),
            None => s.serialize_none(),
        }
    }
}

mod opt_bytes_text {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        let s = String::deserialize(d)?;
        super::parse_bytes(&s).map(Some).ok_or_else(|| {
            serde::de::Error::custom(format!("expected a size such as \"200MB\", got {s:?}"))
        })
    }

    pub fn serialize<S: Serializer>(v: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => s.serialize_str(&format!("{v}B")),
            None => s.serialize_none(),
        }
    }
}

/// Bytes in a size such as `"200MB"`, `"256 MiB"` or `"1024"` (KB/MB/GB decimal, KiB/MiB/GiB
/// binary).
pub fn parse_bytes(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().ok()?;
    let k: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    (n.is_finite() && n >= 0.0).then_some((n * k) as u64)
}

/// Dollars per million tokens, input and output, at one instant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Price {
    pub input_per_mtok: f64,
    pub output_per_mtok: f64,
}

impl Price {
    /// Cost of a request with these token counts.
    pub fn cost(&self, input_tokens: u64, output_tokens: u64) -> crate::Usd {
        crate::Usd::for_tokens(input_tokens, self.input_per_mtok)
            + crate::Usd::for_tokens(output_tokens, self.output_per_mtok)
    }

    /// What the provider bills for `usage`: the prompt's uncached tokens at the input price,
    /// its cache reads and writes at `cache`'s prices, the output at the output price. Without
    /// cache prices every prompt token is billed at the input price.
    pub fn bill(&self, usage: &TokenUsage, cache: Option<&CachePrice>) -> crate::Usd {
        let Some(c) = cache else {
            return self.cost(usage.input, usage.output);
        };
        let cached = usage.cache_read + usage.cache_write_5m + usage.cache_write_1h;
        crate::Usd::for_tokens(usage.input.saturating_sub(cached), self.input_per_mtok)
            + crate::Usd::for_tokens(usage.cache_read, c.read_per_mtok)
            + crate::Usd::for_tokens(usage.cache_write_5m, c.write_5m_per_mtok)
            + crate::Usd::for_tokens(usage.cache_write_1h, c.write_1h_per_mtok)
            + crate::Usd::for_tokens(usage.output, self.output_per_mtok)
    }
}

/// The tokens one answer was billed for, as the provider reported them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenUsage {
    /// Every prompt token, cached or not (OpenAI's `prompt_tokens`; Anthropic's `input_tokens`
    /// plus its cache reads and writes).
    pub input: u64,
    /// Of `input`, the tokens read from the provider's prompt cache (OpenAI's
    /// `prompt_tokens_details.cached_tokens`, Anthropic's `cache_read_input_tokens`).
    pub cache_read: u64,
    /// Of `input`, the tokens written to a 5-minute cache (Anthropic's
    /// `cache_creation.ephemeral_5m_input_tokens`).
    pub cache_write_5m: u64,
    /// Of `input`, the tokens written to a 1-hour cache.
    pub cache_write_1h: u64,
    pub output: u64,
}

/// Prompt-cache prices in dollars per million tokens at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CachePrice {
    /// A cached input token read back.
    pub read_per_mtok: f64,
    /// An input token written to a 5-minute cache.
    pub write_5m_per_mtok: f64,
    /// An input token written to a 1-hour cache.
    pub write_1h_per_mtok: f64,
}

impl CachePrice {
    fn scaled(self, k: f64) -> CachePrice {
        CachePrice {
            read_per_mtok: self.read_per_mtok * k,
            write_5m_per_mtok: self.write_5m_per_mtok * k,
            write_1h_per_mtok: self.write_1h_per_mtok * k,
        }
    }
}

/// The prices of an offer in force on one day: its own, with every change effective by then
/// applied.
struct Tariff<'a> {
    input_per_mtok: Option<f64>,
    output_per_mtok: Option<f64>,
    cache: CachePrices,
    schedule: &'a [PriceWindow],
}

/// Days past the last dated entry of a calendar after which a schedule only repeats weekly: a
/// price that has not changed by then never will.
const WEEK_AND_A_DAY: i64 = 8;

impl ModelOffer {
    /// List prices as written at the top of the offer, before any dated change and without any
    /// window; GPU-hour pricing turned into $/Mtok.
    pub fn base_price(&self) -> Price {
        self.list_price(self.input_per_mtok, self.output_per_mtok)
    }

    fn list_price(&self, input: Option<f64>, output: Option<f64>) -> Price {
        if let (Some(gpu), Some(tps)) = (self.gpu_per_hour, self.tokens_per_second) {
            let per_mtok = gpu / (tps * 3600.0) * 1_000_000.0;
            return Price {
                input_per_mtok: input.unwrap_or(per_mtok),
                output_per_mtok: output.unwrap_or(per_mtok),
            };
        }
        Price {
            input_per_mtok: input.unwrap_or(0.0),
            output_per_mtok: output.unwrap_or(0.0),
        }
    }

    /// The clock and working days the schedule is written in.
    pub fn calendar(&self) -> Calendar<'_> {
        Calendar {
            zone: self.time_zone.map_or(chrono_tz::Tz::UTC, |z| z.0),
            holidays: &self.holidays,
            working_days: &self.working_days,
        }
    }

    fn tariff_on(&self, date: NaiveDate) -> Tariff<'_> {
        let mut t = Tariff {
            input_per_mtok: self.input_per_mtok,
            output_per_mtok: self.output_per_mtok,
            cache: self.cache.unwrap_or_default(),
            schedule: &self.schedule,
        };
        for c in self.changes.iter().take_while(|c| c.effective_from <= date) {
            t.input_per_mtok = c.input_per_mtok.or(t.input_per_mtok);
            t.output_per_mtok = c.output_per_mtok.or(t.output_per_mtok);
            t.cache = c.cache.map_or(t.cache, |new| new.over(t.cache));
            if let Some(s) = &c.schedule {
                t.schedule = s;
            }
        }
        t
    }

    /// The tariff in force at `now` and its window multiplier.
    fn rate_at(&self, now: DateTime<Utc>) -> (Tariff<'_>, f64) {
        let cal = self.calendar();
        let (date, m) = cal.local(now);
        let t = self.tariff_on(date);
        let k = t
            .schedule
            .iter()
            .find(|w| w.open_at(date, m, &cal))
            .map_or(1.0, |w| w.multiplier);
        (t, k)
    }

    /// The window multiplier in force at `now`: the first window open then, else 1. Dated
    /// changes of the list price are not in it (see [`price_at`](Self::price_at)).
    pub fn multiplier_at(&self, now: DateTime<Utc>) -> f64 {
        self.rate_at(now).1
    }

    /// List prices in force at `now` (the dated changes applied, no window).
    pub fn list_price_at(&self, now: DateTime<Utc>) -> Price {
        let (t, _) = self.rate_at(now);
        self.list_price(t.input_per_mtok, t.output_per_mtok)
    }

    /// Prices in force at `now` on `route`: the realtime price times the flex multiplier or
    /// less the batch discount (`None` when the pair has no such route).
    pub fn route_price_at(&self, route: Route, now: DateTime<Utc>) -> Option<Price> {
        let p = self.price_at(now);
        let k = self.route_factor(route)?;
        Some(Price {
            input_per_mtok: p.input_per_mtok * k,
            output_per_mtok: p.output_per_mtok * k,
        })
    }

    fn route_factor(&self, route: Route) -> Option<f64> {
        Some(match route {
            Route::Realtime => 1.0,
            Route::Flex => self.flex?.multiplier,
            Route::Batch => 1.0 - self.batch.as_ref()?.discount,
        })
    }

    /// The routes this pair offers, realtime first.
    pub fn routes(&self) -> impl Iterator<Item = Route> + '_ {
        [Route::Realtime, Route::Flex, Route::Batch]
            .into_iter()
            .filter(|r| match r {
                Route::Realtime => true,
                Route::Flex => self.flex.is_some(),
                Route::Batch => self.batch.is_some(),
            })
    }

    /// Prices in force at `now`: the list price of the day times the window multiplier.
    pub fn price_at(&self, now: DateTime<Utc>) -> Price {
        let (t, k) = self.rate_at(now);
        let b = self.list_price(t.input_per_mtok, t.output_per_mtok);
        Price {
            input_per_mtok: b.input_per_mtok * k,
            output_per_mtok: b.output_per_mtok * k,
        }
    }

    /// Prompt-cache prices in force at `now` for a provider of `kind`, under the same window
    /// multiplier as the input price. A price the catalog leaves out takes the kind's default:
    /// for `anthropic`, its published multiples of the input price (read 0.1 ×, 5-minute write
    /// 1.25 ×, 1-hour write 2 ×); for OpenAI-compatible hosts, whose discounts differ by model
    /// and host, the input price itself (no discount assumed, no write surcharge — automatic
    /// caching has none).
    pub fn cache_price_at(&self, kind: ProviderKind, now: DateTime<Utc>) -> CachePrice {
        let (t, k) = self.rate_at(now);
        let input = self
            .list_price(t.input_per_mtok, t.output_per_mtok)
            .input_per_mtok;
        let (read, w5, w1) = match kind {
            ProviderKind::Anthropic => (0.1, 1.25, 2.0),
            ProviderKind::Openai | ProviderKind::Gemini => (1.0, 1.0, 1.0),
        };
        CachePrice {
            read_per_mtok: t.cache.read_per_mtok.unwrap_or(input * read),
            write_5m_per_mtok: t.cache.write_5m_per_mtok.unwrap_or(input * w5),
            write_1h_per_mtok: t.cache.write_1h_per_mtok.unwrap_or(input * w1),
        }
        .scaled(k)
    }

    /// [`cache_price_at`](Self::cache_price_at) on `route` (the batch discount and the flex
    /// multiplier apply to cached tokens too); `None` when the pair has no such route.
    pub fn route_cache_price_at(
        &self,
        kind: ProviderKind,
        route: Route,
        now: DateTime<Utc>,
    ) -> Option<CachePrice> {
        Some(
            self.cache_price_at(kind, now)
                .scaled(self.route_factor(route)?),
        )
    }

    /// Everything that prices a token at `now`, to tell whether the price changed.
    fn rate_key(&self, now: DateTime<Utc>) -> [f64; 6] {
        let (t, k) = self.rate_at(now);
        let opt = |v: Option<f64>| v.unwrap_or(-1.0);
        [
            opt(t.input_per_mtok),
            opt(t.output_per_mtok),
            opt(t.cache.read_per_mtok),
            opt(t.cache.write_5m_per_mtok),
            opt(t.cache.write_1h_per_mtok),
            k,
        ]
    }

    /// The next instant after `now` at which any price of the offer changes, if it ever does.
    ///
    /// Prices change only at a window's edge, at midnight (weekday, holiday or dated change)
    /// or when the zone changes its clocks, so those instants are tried day by day in order.
    /// Past the last dated entry (holiday, make-up day, change) the schedule repeats weekly,
    /// so the search ends a week and a day after it: a few days' edges in practice.
    pub fn next_price_change(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        if self.schedule.is_empty() && self.changes.is_empty() {
            return None;
        }
        let cal = self.calendar();
        let current = self.rate_key(now);
        let (mut day, _) = cal.local(now);
        let last_dated = self
            .holidays
            .iter()
            .chain(&self.working_days)
            .chain(self.changes.iter().map(|c| &c.effective_from))
            .max()
            .copied()
            .unwrap_or(day);
        let last = day.max(last_dated) + Duration::days(WEEK_AND_A_DAY);
        let mut instants = Vec::with_capacity(16);
        while day <= last {
            let next_day = day.succ_opt()?;
            instants.clear();
            let edges = self
                .tariff_on(day)
                .schedule
                .iter()
                .flat_map(|w| [w.from, w.to]);
            for m in std::iter::once(0).chain(edges) {
                instants.extend(cal.instants(day, m).filter(|t| *t > now));
            }
            let midnights = (
                cal.instants(day, 0).next(),
                cal.instants(next_day, 0).next(),
            );
            if let (Some(a), Some(b)) = midnights {
                instants.extend(cal.offset_change(a, b).filter(|t| *t > now));
            }
            instants.sort_unstable();
            if let Some(t) = instants.iter().find(|t| self.rate_key(**t) != current) {
                return Some(*t);
            }
            day = next_day;
        }
        None
    }

    /// Minutes of the UTC day at which this offer's price may change (a superset: every
    /// window edge and local midnight under each UTC offset the zone uses in the year from
    /// `around`). The capacity plan splits its pools there.
    pub fn utc_price_edges(&self, around: DateTime<Utc>) -> Vec<u32> {
        if self.schedule.is_empty() && self.changes.is_empty() {
            return Vec::new();
        }
        let cal = self.calendar();
        let mut offsets: Vec<i32> = (0..13)
            .map(|k| {
                let t = around + Duration::days(30 * k);
                use chrono::{Offset, TimeZone};
                cal.zone
                    .offset_from_utc_datetime(&t.naive_utc())
                    .fix()
                    .local_minus_utc()
            })
            .collect();
        offsets.sort_unstable();
        offsets.dedup();
        let local: Vec<u32> = std::iter::once(0)
            .chain(self.schedule.iter().flat_map(|w| [w.from, w.to]))
            .chain(
                self.changes
                    .iter()
                    .flat_map(|c| c.schedule.iter().flatten())
                    .flat_map(|w| [w.from, w.to]),
            )
            .collect();
        let mut out: Vec<u32> = offsets
            .iter()
            .flat_map(|o| {
                local
                    .iter()
                    .map(move |m| (i64::from(*m) - i64::from(*o) / 60).rem_euclid(1440) as u32)
            })
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }
}

impl Catalog {
    /// Parses and checks a catalog; `file` names it in errors.
    pub fn from_toml(file: &str, text: &str) -> Result<Catalog, CatalogError> {
        let cat: Catalog = toml::from_str(text).map_err(|source| CatalogError::Toml {
            file: file.to_string(),
            source,
        })?;
        cat.check().map_err(|reason| CatalogError::Invalid {
            file: file.to_string(),
            reason,
        })?;
        Ok(cat)
    }

    fn check(&self) -> Result<(), String> {
        if self.providers.is_empty() {
            return Err("the catalog lists no providers".into());
        }
        let mut names = HashSet::new();
        for p in &self.providers {
            if !names.insert(p.name.as_str()) {
                return Err(format!("provider {:?} is listed twice", p.name));
            }
            if p.models.is_empty() {
                return Err(format!("provider {:?} lists no models", p.name));
            }
            if p.kind == ProviderKind::Gemini {
                return Err(format!(
                    "provider {:?}: kind \"gemini\" is not implemented; use kind = \"openai\" with Gemini's OpenAI-compatible endpoint (https://generativelanguage.googleapis.com/v1beta/openai)",
                    p.name
                ));
            }
            let limits = [
                ("rpm", p.limits.rpm.map(u64::from)),
                ("tpm", p.limits.tpm),
                ("concurrency", p.limits.concurrency.map(u64::from)),
            ];
            for (field, v) in limits {
                if v == Some(0) {
                    return Err(format!(
                        "provider {:?}: limits.{field} must be at least 1 (leave it out for no limit)",
                        p.name
                    ));
                }
            }
            for m in &p.models {
                let at = |field: &str, rule: &str, v: f64| {
                    format!(
                        "provider {:?} model {:?}: {field} must be {rule}, got {v}",
                        p.name, m.model
                    )
                };
                let prices = [
                    ("input_per_mtok", m.input_per_mtok),
                    ("output_per_mtok", m.output_per_mtok),
                    ("gpu_per_hour", m.gpu_per_hour),
                ];
                for (field, v) in prices {
                    if let Some(v) = v.filter(|v| !(v.is_finite() && *v >= 0.0)) {
                        return Err(at(field, "a finite number 0 or more", v));
                    }
                }
                if let Some(t) = m.tokens_per_second.filter(|t| !(t.is_finite() && *t > 0.0)) {
                    return Err(at("tokens_per_second", "a finite number above 0", t));
                }
                if m.context == Some(0) {
                    return Err(at("context", "at least 1", 0.0));
                }
                let changes = m.changes.iter().enumerate();
                let schedules = std::iter::once((String::new(), Some(&m.schedule))).chain(
                    changes
                        .clone()
                        .map(|(i, c)| (format!("changes[{i}]."), c.schedule.as_ref())),
                );
                for (prefix, schedule) in schedules {
                    for (i, w) in schedule.into_iter().flatten().enumerate() {
                        if !(w.multiplier.is_finite() && w.multiplier > 0.0) {
                            let field = format!("{prefix}schedule[{i}].multiplier");
                            return Err(at(&field, "a finite number above 0", w.multiplier));
                        }
                    }
                }
                let caches = std::iter::once((String::new(), m.cache.as_ref())).chain(
                    changes
                        .clone()
                        .map(|(i, c)| (format!("changes[{i}]."), c.cache.as_ref())),
                );
                for (prefix, cache) in caches {
                    let Some(c) = cache else { continue };
                    let fields = [
                        ("read_per_mtok", c.read_per_mtok),
                        ("write_5m_per_mtok", c.write_5m_per_mtok),
                        ("write_1h_per_mtok", c.write_1h_per_mtok),
                    ];
                    for (field, v) in fields {
                        if let Some(v) = v.filter(|v| !(v.is_finite() && *v >= 0.0)) {
                            let field = format!("{prefix}cache.{field}");
                            return Err(at(&field, "a finite number 0 or more", v));
                        }
                    }
                }
                for (i, c) in changes {
                    let fields = [
                        ("input_per_mtok", c.input_per_mtok),
                        ("output_per_mtok", c.output_per_mtok),
                    ];
                    for (field, v) in fields {
                        if let Some(v) = v.filter(|v| !(v.is_finite() && *v >= 0.0)) {
                            let field = format!("changes[{i}].{field}");
                            return Err(at(&field, "a finite number 0 or more", v));
                        }
                    }
                    let prev = i.checked_sub(1).map(|j| m.changes[j].effective_from);
                    if prev.is_some_and(|p| p >= c.effective_from) {
                        return Err(format!(
                            "provider {:?} model {:?}: changes[{i}].effective_from {} must come after the change before it ({})",
                            p.name,
                            m.model,
                            c.effective_from,
                            prev.map_or(String::new(), |d| d.to_string())
                        ));
                    }
                }
                if let Some(b) = &m.batch {
                    if !(b.discount.is_finite() && (0.0..1.0).contains(&b.discount)) {
                        return Err(at("batch.discount", "a fraction in [0, 1)", b.discount));
                    }
                    if b.window.is_zero() {
                        return Err(at("batch.window", "longer than zero", 0.0));
                    }
                    if b.max_requests == Some(0) {
                        return Err(at("batch.max_requests", "at least 1", 0.0));
                    }
                }
                if let Some(f) = &m.flex {
                    if !(f.multiplier.is_finite() && f.multiplier > 0.0) {
                        return Err(at(
                            "flex.multiplier",
                            "a finite number above 0",
                            f.multiplier,
                        ));
                    }
                }
                let priced = m.input_per_mtok.is_some() && m.output_per_mtok.is_some()
                    || m.gpu_per_hour.is_some() && m.tokens_per_second.is_some();
                if !priced {
                    return Err(format!(
                        "provider {:?} model {:?}: give input_per_mtok and output_per_mtok, or gpu_per_hour and tokens_per_second",
                        p.name, m.model
                    ));
                }
            }
        }
        Ok(())
    }

    /// Every canonical model name some provider serves.
    pub fn model_names(&self) -> HashSet<String> {
        self.providers
            .iter()
            .flat_map(|p| p.models.iter().map(|m| m.model.clone()))
            .collect()
    }

    /// The lowest expected cost of `job` over every pair that serves one of its models and that
    /// the job allows, at the prices in force at `now`, ignoring capacity.
    pub fn cheapest_expected_cost(
        &self,
        job: &crate::Job,
        now: DateTime<Utc>,
    ) -> Option<crate::Usd> {
        let (tin, tout) = (job.estimated_input_tokens(), job.expected_output_tokens());
        self.providers
            .iter()
            .filter(|p| job.provider_allowed(&p.name))
            .flat_map(|p| p.models.iter())
            .filter(|m| job.models.contains(&m.model))
            .map(|m| m.price_at(now).cost(tin, tout))
            .min_by(|a, b| a.0.total_cmp(&b.0))
    }

    pub fn provider(&self, name: &str) -> Option<&ProviderSpec> {
        self.providers.iter().find(|p| p.name == name)
    }
}

#[cfg(test)]
mod schedule_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn offer(schedule: Vec<PriceWindow>) -> ModelOffer {
        ModelOffer {
            model: "m".into(),
            id: "m".into(),
            input_per_mtok: Some(1.0),
            output_per_mtok: Some(2.0),
            schedule,
            ..ModelOffer::default()
        }
    }

    #[test]
    fn a_bill_prices_cache_reads_and_writes_apart_from_the_uncached_prompt() {
        let price = Price {
            input_per_mtok: 3.0,
            output_per_mtok: 15.0,
        };
        let usage = TokenUsage {
            input: 3_000_000,
            cache_read: 1_000_000,
            cache_write_5m: 500_000,
            cache_write_1h: 250_000,
            output: 100_000,
        };
        let cache = CachePrice {
            read_per_mtok: 0.3,
            write_5m_per_mtok: 3.75,
            write_1h_per_mtok: 6.0,
        };
        // 1.25 M uncached at 3, 1 M read at 0.3, 0.5 M at 3.75, 0.25 M at 6, 0.1 M out at 15.
        let want = 3.75 + 0.3 + 1.875 + 1.5 + 1.5;
        assert!((price.bill(&usage, Some(&cache)).0 - want).abs() < 1e-9);
        // Without cache prices the whole prompt is billed at the input price.
        assert!((price.bill(&usage, None).0 - (9.0 + 1.5)).abs() < 1e-9);
        // Anthropic's defaults from the offer: read 0.1x, writes 1.25x and 2x of the input.
        let o = ModelOffer {
            input_per_mtok: Some(3.0),
            output_per_mtok: Some(15.0),
            ..offer(vec![])
        };
        let now = Utc.with_ymd_and_hms(2026, 12, 1, 12, 0, 0).unwrap();
        let c = o.cache_price_at(ProviderKind::Anthropic, now);
        assert!((price.bill(&usage, Some(&c)).0 - want).abs() < 1e-9);
    }

    #[test]
    fn price_window_wrapping_midnight_applies_on_both_sides() {
        let o = offer(vec![PriceWindow::daily(16 * 60 + 30, 30, 0.5)]);
        let at = |h, m| Utc.with_ymd_and_hms(2026, 1, 1, h, m, 0).unwrap();
        assert_eq!(o.price_at(at(17, 0)).input_per_mtok, 0.5);
        assert_eq!(o.price_at(at(0, 10)).output_per_mtok, 1.0);
        assert_eq!(o.price_at(at(12, 0)).input_per_mtok, 1.0);
        assert_eq!(o.next_price_change(at(12, 0)), Some(at(16, 30)));
        assert_eq!(
            o.next_price_change(at(23, 0)),
            Some(Utc.with_ymd_and_hms(2026, 1, 2, 0, 30, 0).unwrap())
        );
    }

    #[test]
    fn gpu_hour_pricing_becomes_per_mtok() {
        let mut o = offer(vec![]);
        o.input_per_mtok = None;
        o.output_per_mtok = None;
        o.gpu_per_hour = Some(3.6);
        o.tokens_per_second = Some(1000.0);
        // 3.6 $/h over 3.6M tokens/h = 1 $/Mtok
        assert!((o.base_price().input_per_mtok - 1.0).abs() < 1e-9);
    }

    #[test]
    fn catalog_rejects_duplicate_providers_and_unpriced_models() {
        let dup = r#"
[[providers]]
name = "a"
kind = "openai"
base_url = "http://x"
[[providers.models]]
model = "m"
id = "m"
input_per_mtok = 1
output_per_mtok = 1
[[providers]]
name = "a"
kind = "openai"
base_url = "http://x"
[[providers.models]]
model = "m"
id = "m"
input_per_mtok = 1
output_per_mtok = 1
"#;
        let e = Catalog::from_toml("c.toml", dup).unwrap_err().to_string();
        assert!(e.contains("listed twice"), "{e}");
        let unpriced = "[[providers]]\nname='a'\nkind='openai'\nbase_url='http://x'\n[[providers.models]]\nmodel='m'\nid='m'\n";
        let e = Catalog::from_toml("c.toml", unpriced)
            .unwrap_err()
            .to_string();
        assert!(e.contains("input_per_mtok"), "{e}");
    }

    /// One provider `p` with one model `m` priced by `model_fields`, plus `provider_fields`.
    fn one(provider_fields: &str, model_fields: &str) -> String {
        format!(
            "[[providers]]\nname='p'\nkind='openai'\nbase_url='http://x'\n{provider_fields}\n[[providers.models]]\nmodel='m'\nid='m'\n{model_fields}\n"
        )
    }

    fn refused(text: &str) -> String {
        Catalog::from_toml("c.toml", text).unwrap_err().to_string()
    }

    #[test]
    fn catalog_refuses_negative_or_non_finite_prices_naming_provider_model_and_field() {
        for (fields, field) in [
            ("input_per_mtok=-1.5\noutput_per_mtok=1", "input_per_mtok"),
            ("input_per_mtok=1\noutput_per_mtok=-0.01", "output_per_mtok"),
            ("input_per_mtok=nan\noutput_per_mtok=1", "input_per_mtok"),
            ("input_per_mtok=1\noutput_per_mtok=inf", "output_per_mtok"),
            ("gpu_per_hour=-2\ntokens_per_second=100", "gpu_per_hour"),
            ("gpu_per_hour=2\ntokens_per_second=0", "tokens_per_second"),
            ("gpu_per_hour=2\ntokens_per_second=nan", "tokens_per_second"),
        ] {
            let e = refused(&one("", fields));
            assert!(
                e.contains(r#"provider "p" model "m""#) && e.contains(field),
                "{fields}: {e}"
            );
        }
        let free = one("", "input_per_mtok=0\noutput_per_mtok=0");
        assert!(Catalog::from_toml("c.toml", &free).is_ok());
    }

    #[test]
    fn catalog_refuses_a_price_window_multiplier_that_is_not_positive() {
        for m in ["0", "-0.5", "nan"] {
            let text = one(
                "",
                &format!("input_per_mtok=1\noutput_per_mtok=1\nschedule=[{{from='01:00',to='02:00',multiplier={m}}}]"),
            );
            let e = refused(&text);
            assert!(
                e.contains(r#"provider "p" model "m""#) && e.contains("schedule[0].multiplier"),
                "{m}: {e}"
            );
        }
    }

    #[test]
    fn catalog_refuses_zero_limits_and_context() {
        for (limit, field) in [
            ("rpm=0", "limits.rpm"),
            ("tpm=0", "limits.tpm"),
            ("concurrency=0", "limits.concurrency"),
        ] {
            let e = refused(&one(
                &format!("limits={{{limit}}}"),
                "input_per_mtok=1\noutput_per_mtok=1",
            ));
            assert!(e.contains(r#"provider "p""#) && e.contains(field), "{e}");
        }
        let e = refused(&one("", "input_per_mtok=1\noutput_per_mtok=1\ncontext=0"));
        assert!(e.contains(r#"model "m""#) && e.contains("context"), "{e}");
    }

    #[test]
    fn catalog_refuses_gemini_which_no_worker_implements() {
        let text = one("", "input_per_mtok=1\noutput_per_mtok=1").replace("'openai'", "'gemini'");
        let e = refused(&text);
        assert!(
            e.contains(r#"provider "p""#) && e.contains("gemini") && e.contains("not implemented"),
            "{e}"
        );
    }
}
