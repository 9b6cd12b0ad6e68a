//! The provider catalog (DESIGN §4): which providers exist, how to reach them, their limits and
//! their prices, including time-of-day price windows and GPU-hour pricing for self-hosted models.

use chrono::{DateTime, Timelike, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use std::collections::HashSet;

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
#[derive(Debug, Clone, Serialize, Deserialize)]
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
    /// Time-of-day price windows (UTC).
    #[serde(default)]
    pub schedule: Vec<PriceWindow>,
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

/// A daily UTC window in which prices are multiplied by `multiplier`. `to` before `from` wraps
/// past midnight.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceWindow {
    #[serde(deserialize_with = "de_hhmm", serialize_with = "ser_hhmm")]
    pub from: u32,
    #[serde(deserialize_with = "de_hhmm", serialize_with = "ser_hhmm")]
    pub to: u32,
    pub multiplier: f64,
}

fn de_hhmm<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let s = String::deserialize(d)?;
    parse_hhmm(&s).ok_or_else(|| serde::de::Error::custom(format!("expected HH:MM, got {s:?}")))
}

fn ser_hhmm<S: serde::Serializer>(m: &u32, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{:02}:{:02}", m / 60, m % 60))
}

/// Minutes after midnight of an `HH:MM` string.
pub fn parse_hhmm(s: &str) -> Option<u32> {
    let (h, m) = s.split_once(':')?;
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60).then_some(h * 60 + m)
}

impl PriceWindow {
    /// Whether minute-of-day `m` falls in the window.
    pub fn contains(&self, m: u32) -> bool {
        if self.from <= self.to {
            m >= self.from && m < self.to
        } else {
            m >= self.from || m < self.to
        }
    }
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
}

impl ModelOffer {
    /// Base prices without any time window; GPU-hour pricing turned into $/Mtok.
    pub fn base_price(&self) -> Price {
        if let (Some(gpu), Some(tps)) = (self.gpu_per_hour, self.tokens_per_second) {
            let per_mtok = gpu / (tps * 3600.0) * 1_000_000.0;
            return Price {
                input_per_mtok: self.input_per_mtok.unwrap_or(per_mtok),
                output_per_mtok: self.output_per_mtok.unwrap_or(per_mtok),
            };
        }
        Price {
            input_per_mtok: self.input_per_mtok.unwrap_or(0.0),
            output_per_mtok: self.output_per_mtok.unwrap_or(0.0),
        }
    }

    /// The multiplier in force at `now` (the first window that contains it, else 1).
    pub fn multiplier_at(&self, now: DateTime<Utc>) -> f64 {
        let m = now.hour() * 60 + now.minute();
        self.schedule
            .iter()
            .find(|w| w.contains(m))
            .map_or(1.0, |w| w.multiplier)
    }

    /// Prices in force at `now` on `route`: the realtime price times the flex multiplier or
    /// less the batch discount (`None` when the pair has no such route).
    pub fn route_price_at(&self, route: Route, now: DateTime<Utc>) -> Option<Price> {
        let p = self.price_at(now);
        let k = match route {
            Route::Realtime => 1.0,
            Route::Flex => self.flex?.multiplier,
            Route::Batch => 1.0 - self.batch.as_ref()?.discount,
        };
        Some(Price {
            input_per_mtok: p.input_per_mtok * k,
            output_per_mtok: p.output_per_mtok * k,
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

    /// Prices in force at `now`.
    pub fn price_at(&self, now: DateTime<Utc>) -> Price {
        let b = self.base_price();
        let k = self.multiplier_at(now);
        Price {
            input_per_mtok: b.input_per_mtok * k,
            output_per_mtok: b.output_per_mtok * k,
        }
    }

    /// The next instant after `now` at which the price multiplier changes, if it ever does.
    pub fn next_price_change(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        if self.schedule.is_empty() {
            return None;
        }
        let m = now.hour() * 60 + now.minute();
        let delta = self
            .schedule
            .iter()
            .flat_map(|w| [w.from, w.to])
            .map(|b| (b + 1440 - m - 1) % 1440 + 1)
            .min()?;
        let start_of_minute = now
            .with_second(0)
            .and_then(|t| t.with_nanosecond(0))
            .unwrap_or(now);
        Some(start_of_minute + chrono::Duration::minutes(i64::from(delta)))
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
                for (i, w) in m.schedule.iter().enumerate() {
                    if !(w.multiplier.is_finite() && w.multiplier > 0.0) {
                        let field = format!("schedule[{i}].multiplier");
                        return Err(at(&field, "a finite number above 0", w.multiplier));
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
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn offer(schedule: Vec<PriceWindow>) -> ModelOffer {
        ModelOffer {
            model: "m".into(),
            id: "m".into(),
            input_per_mtok: Some(1.0),
            output_per_mtok: Some(2.0),
            gpu_per_hour: None,
            tokens_per_second: None,
            context: None,
            schedule,
            batch: None,
            flex: None,
        }
    }

    #[test]
    fn price_window_wrapping_midnight_applies_on_both_sides() {
        let o = offer(vec![PriceWindow {
            from: 16 * 60 + 30,
            to: 30,
            multiplier: 0.5,
        }]);
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
