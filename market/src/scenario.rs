//! What a market scenario is made of: the file's shape ([`ScenarioSpec`], read by the CLI from
//! TOML) and the resolved [`MarketScenario`] the engine runs — the catalog the workers see, each
//! provider's true server-side behaviour, and the job trace.

use chrono::{DateTime, Duration, TimeZone, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use schemas::job::ChatMessage;
use schemas::{Catalog, Job, JobId, Limits, Priority};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;

/// A scenario that cannot be built, with the part at fault.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("{0}")]
    Invalid(String),
}

fn invalid<T>(msg: impl Into<String>) -> Result<T, ScenarioError> {
    Err(ScenarioError::Invalid(msg.into()))
}

/// A scenario file (`examples/scenarios/market-*.toml`; format in docs/benchmarks.md).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioSpec {
    /// Name printed by the bench (default: the file's stem).
    #[serde(default)]
    pub name: Option<String>,
    /// Path of the provider catalog, relative to the scenario file (read by the CLI).
    #[serde(default)]
    pub catalog: Option<String>,
    /// When the simulated clock starts (default 2026-01-05T00:00:00Z). Offsets count from here.
    #[serde(default)]
    pub start: Option<DateTime<Utc>>,
    /// Seed of the trace generator and of the simulated providers' latency and errors.
    #[serde(default = "one")]
    pub seed: u64,
    /// The catalog providers that take part (default: all of them).
    #[serde(default)]
    pub providers: Option<Vec<String>>,
    #[serde(default)]
    pub fleet: FleetSpec,
    /// True server-side behaviour per provider; providers not listed keep the catalog's limits
    /// and default latency.
    #[serde(default)]
    pub market: Vec<ProviderMarket>,
    /// Generated job classes.
    #[serde(default)]
    pub jobs: Vec<JobClass>,
    /// Explicit jobs (also read from `trace_file`, JSON lines of the same fields).
    #[serde(default)]
    pub trace: Vec<TraceEntry>,
    /// Path of a JSON-lines trace, relative to the scenario file (read by the CLI).
    #[serde(default)]
    pub trace_file: Option<String>,
}

fn one() -> u64 {
    1
}

/// The simulated worker fleet, the same for every policy.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FleetSpec {
    /// Jobs processed at once across the fleet (one worker's `concurrency`).
    pub concurrency: usize,
    /// Whether the workers' catalog carries the true limits below (else the catalog file's, and
    /// the workers learn the truth from 429s), and, for a provider whose `batch` turnaround the
    /// scenario gives, that median as the batch offer's prior turnaround.
    pub worker_knows_limits: bool,
    /// Most jobs the fleet gathers into one provider batch (default: the offer's
    /// `max_requests`, else no limit).
    pub batch_max_requests: Option<usize>,
    /// How long the fleet gathers jobs for one (provider, model) before it submits them as a
    /// batch (default 5 minutes).
    pub batch_gather: Option<Offset>,
}

impl Default for FleetSpec {
    fn default() -> Self {
        FleetSpec {
            concurrency: 256,
            worker_knows_limits: true,
            batch_max_requests: None,
            batch_gather: None,
        }
    }
}

impl FleetSpec {
    /// How long jobs are gathered before their batch is submitted.
    pub fn gather(&self) -> Duration {
        self.batch_gather
            .map_or(Duration::minutes(5), Offset::duration)
            .max(Duration::seconds(1))
    }
}

/// How one provider behaves on the simulated server side.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderMarket {
    pub provider: String,
    /// True requests per minute (token bucket, full at the start); absent: the catalog's; 0: none.
    #[serde(default)]
    pub rpm: Option<u32>,
    /// True tokens (input + max_tokens) per minute; absent: the catalog's; 0: none.
    #[serde(default)]
    pub tpm: Option<u64>,
    /// True requests in flight at once; absent: the catalog's; 0: none.
    #[serde(default)]
    pub concurrency: Option<u32>,
    /// Latency of a request: base milliseconds…
    #[serde(default = "default_latency_ms")]
    pub latency_ms: f64,
    /// …plus milliseconds per output token…
    #[serde(default = "default_per_token_ms")]
    pub per_output_token_ms: f64,
    /// …times a factor drawn from [1 − jitter, 1 + jitter].
    #[serde(default = "default_jitter")]
    pub jitter: f64,
    /// Fraction of accepted requests that fail with a 500.
    #[serde(default)]
    pub error_rate: f64,
    /// Windows in which every request gets a 503.
    #[serde(default)]
    pub outages: Vec<Interval>,
    /// Windows in which every request gets a 429 (`Retry-After` up to `retry_after_s`).
    #[serde(default)]
    pub rate_limited: Vec<Interval>,
    #[serde(default = "default_retry_after")]
    pub retry_after_s: f64,
    /// How the provider's batch API behaves (absent: every batch takes the catalog's prior
    /// turnaround, and nothing fails).
    #[serde(default)]
    pub batch: Option<BatchMarket>,
    /// The true capacity of the provider's flex tier (absent: the realtime limits, a separate
    /// pool of the same size).
    #[serde(default)]
    pub flex: Option<FlexMarket>,
}

/// How a provider's batch API behaves in the scenario.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchMarket {
    /// Median turnaround, creation to end.
    pub turnaround: Offset,
    /// Each turnaround is the median (or the tail's) times a factor drawn from
    /// [1 − jitter, 1 + jitter] (default 0.25).
    #[serde(default = "default_batch_jitter")]
    pub jitter: f64,
    /// Fraction of batches that take `tail_turnaround` instead (default 0).
    #[serde(default)]
    pub tail: f64,
    /// Turnaround of a tail batch, and of every batch created inside a `slow` window.
    #[serde(default)]
    pub tail_turnaround: Option<Offset>,
    /// Windows in which every batch created takes `tail_turnaround` (a turnaround spike).
    #[serde(default)]
    pub slow: Vec<Interval>,
    /// Fraction of a batch's lines that come back as errors (default 0).
    #[serde(default)]
    pub line_errors: f64,
    /// Which of this provider's batches (1 = the first created) end `expired` part-done.
    #[serde(default)]
    pub expire: Vec<u32>,
    /// Fraction of an expiring batch's lines done when it expires (default 0.5).
    #[serde(default = "default_expire_done")]
    pub expire_done: f64,
}

fn default_batch_jitter() -> f64 {
    0.25
}
fn default_expire_done() -> f64 {
    0.5
}

/// The true capacity of a provider's flex tier; its 429s are never billed.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlexMarket {
    /// Requests in flight at once on the flex tier; absent: no limit.
    #[serde(default)]
    pub concurrency: Option<u32>,
    /// Requests per minute on the flex tier; absent: no limit.
    #[serde(default)]
    pub rpm: Option<u32>,
}

fn default_latency_ms() -> f64 {
    800.0
}
fn default_per_token_ms() -> f64 {
    10.0
}
fn default_jitter() -> f64 {
    0.2
}
fn default_retry_after() -> f64 {
    20.0
}

impl ProviderMarket {
    /// Defaults for a provider the scenario does not describe.
    pub fn plain(provider: &str) -> Self {
        ProviderMarket {
            provider: provider.to_string(),
            rpm: None,
            tpm: None,
            concurrency: None,
            latency_ms: default_latency_ms(),
            per_output_token_ms: default_per_token_ms(),
            jitter: default_jitter(),
            error_rate: 0.0,
            outages: vec![],
            rate_limited: vec![],
            retry_after_s: default_retry_after(),
            batch: None,
            flex: None,
        }
    }
}

/// A span of simulated time, as offsets from the start.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Interval {
    pub from: Offset,
    pub to: Offset,
}

/// A time offset from the scenario's start, or a duration: `"13:30"` (hours:minutes, may pass
/// 24:00), `"90m"`, `"6h"`, `"1h30m"`, `"45s"`, `"2d"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Offset(pub i64);

impl Offset {
    pub fn ms(self) -> i64 {
        self.0
    }

    pub fn duration(self) -> Duration {
        Duration::milliseconds(self.0)
    }

    pub fn hours(h: f64) -> Offset {
        Offset((h * 3_600_000.0).round() as i64)
    }
}

impl TryFrom<String> for Offset {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        parse_offset(&s).map(Offset)
    }
}

impl From<Offset> for String {
    fn from(o: Offset) -> String {
        let s = o.0 / 1000;
        if o.0 % 60_000 == 0 {
            return format!("{}:{:02}", s / 3600, s / 60 % 60);
        }
        let (h, m, s) = (s / 3600, s / 60 % 60, s % 60);
        let mut out = String::new();
        if h > 0 {
            out += &format!("{h}h");
        }
        if m > 0 {
            out += &format!("{m}m");
        }
        match o.0 % 1000 {
            0 => out + &format!("{s}s"),
            ms => out + &format!("{s}.{ms:03}s"),
        }
    }
}

/// Milliseconds of an offset string (see [`Offset`]).
pub fn parse_offset(s: &str) -> Result<i64, String> {
    let t = s.trim();
    let bad = || format!("expected an offset like \"13:30\", \"90m\" or \"1h30m\", got {s:?}");
    if let Some((h, m)) = t.split_once(':') {
        let (h, m): (i64, i64) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
        if h < 0 || !(0..60).contains(&m) {
            return Err(bad());
        }
        return Ok((h * 60 + m) * 60_000);
    }
    let mut total = 0i64;
    let mut num = String::new();
    let mut any = false;
    for c in t.chars() {
        if c.is_ascii_digit() || c == '.' {
            num.push(c);
            continue;
        }
        let n: f64 = num.parse().map_err(|_| bad())?;
        let unit = match c {
            'd' => 86_400_000.0,
            'h' => 3_600_000.0,
            'm' => 60_000.0,
            's' => 1000.0,
            _ => return Err(bad()),
        };
        total += (n * unit).round() as i64;
        num.clear();
        any = true;
    }
    if !num.is_empty() || !any {
        return Err(bad());
    }
    Ok(total)
}

/// How a class's jobs arrive between `from` and `to`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arrival {
    /// All at `from`.
    #[default]
    Burst,
    /// Independently uniform (a Poisson process given the count).
    Uniform,
    /// Evenly spaced.
    Even,
    /// Daily cycle: density ∝ 1 + cos(2π(t − peak)/24h).
    Diurnal,
}

/// A tokens range `[low, high]` (or one number).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Range {
    One(f64),
    Two([f64; 2]),
}

impl Range {
    fn bounds(self) -> (f64, f64) {
        match self {
            Range::One(x) => (x, x),
            Range::Two([a, b]) => (a.min(b), a.max(b)),
        }
    }

    fn draw(self, rng: &mut StdRng) -> f64 {
        let (a, b) = self.bounds();
        if b > a {
            rng.random_range(a..=b)
        } else {
            a
        }
    }
}

/// A class of generated jobs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobClass {
    pub name: String,
    pub count: usize,
    /// One model, or…
    #[serde(default)]
    pub model: Option<String>,
    /// …an ordered list of acceptable models.
    #[serde(default)]
    pub models: Vec<String>,
    #[serde(default)]
    pub priority: Priority,
    #[serde(default)]
    pub arrival: Arrival,
    /// First arrival (the burst's time).
    pub from: Offset,
    /// Last arrival (not for bursts).
    #[serde(default)]
    pub to: Option<Offset>,
    /// Peak of a diurnal pattern (default 14:00).
    #[serde(default)]
    pub peak: Option<Offset>,
    /// Deadline after arrival: one duration or a range `[low, high]`.
    pub deadline_in: DeadlineIn,
    /// Prompt tokens, drawn uniformly from the range.
    pub input_tokens: Range,
    /// `max_tokens` of each job (what cost estimates and token limits count).
    pub max_tokens: u32,
    /// Output tokens actually produced, as a fraction of `max_tokens` (default `[0.4, 1.0]`).
    #[serde(default = "default_fill")]
    pub output_fill: Range,
}

fn default_fill() -> Range {
    Range::Two([0.4, 1.0])
}

/// One deadline offset or a range of them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum DeadlineIn {
    One(Offset),
    Two([Offset; 2]),
}

/// One explicit job of a trace.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TraceEntry {
    #[serde(default)]
    pub id: Option<String>,
    /// Arrival offset.
    pub at: Offset,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub models: Vec<String>,
    #[serde(default)]
    pub priority: Priority,
    pub deadline_in: Offset,
    pub input_tokens: u64,
    pub max_tokens: u32,
    /// Output tokens produced (default `max_tokens`).
    #[serde(default)]
    pub output_tokens: Option<u64>,
}

/// One provider's true behaviour, resolved.
#[derive(Debug, Clone)]
pub struct ServerSpec {
    pub name: String,
    /// The limits the server enforces.
    pub limits: Limits,
    pub latency_ms: f64,
    pub per_output_token_ms: f64,
    pub jitter: f64,
    pub error_rate: f64,
    pub outages: Vec<(DateTime<Utc>, DateTime<Utc>)>,
    pub rate_limited: Vec<(DateTime<Utc>, DateTime<Utc>)>,
    pub retry_after_s: f64,
    /// Its batch API, if any of its offers has one.
    pub batch: Option<BatchSpec>,
}

/// A provider's batch API, resolved.
#[derive(Debug, Clone)]
pub struct BatchSpec {
    pub turnaround: Duration,
    pub jitter: f64,
    pub tail: f64,
    pub tail_turnaround: Duration,
    pub slow: Vec<(DateTime<Utc>, DateTime<Utc>)>,
    pub line_errors: f64,
    /// 1-based creation numbers of the batches that expire part-done.
    pub expire: Vec<u32>,
    pub expire_done: f64,
}

impl BatchSpec {
    /// Batches that take `turnaround` exactly and never fail.
    pub fn fixed(turnaround: Duration) -> Self {
        BatchSpec {
            turnaround,
            jitter: 0.0,
            tail: 0.0,
            tail_turnaround: turnaround,
            slow: vec![],
            line_errors: 0.0,
            expire: vec![],
            expire_done: 0.5,
        }
    }

    /// The shortest turnaround any batch may have.
    pub fn fastest(&self) -> Duration {
        let f = 1.0 - self.jitter;
        let ms = self.turnaround.min(self.tail_turnaround).num_milliseconds() as f64 * f;
        Duration::milliseconds(ms.max(0.0) as i64)
    }

    /// The turnaround of a batch created at `at`, before jitter: the tail's inside a slow window
    /// or when `tail_draw` (uniform in [0, 1)) falls under `tail`.
    pub fn base_turnaround(&self, at: DateTime<Utc>, tail_draw: f64) -> Duration {
        let slow = self.slow.iter().any(|(a, b)| *a <= at && at < *b);
        if slow || tail_draw < self.tail {
            self.tail_turnaround
        } else {
            self.turnaround
        }
    }
}

impl ServerSpec {
    /// Latency of a request producing `out` tokens, before jitter (milliseconds).
    pub fn latency_ms(&self, out: u64) -> f64 {
        self.latency_ms + self.per_output_token_ms * out as f64
    }

    pub fn down_at(&self, t: DateTime<Utc>) -> bool {
        self.outages.iter().any(|(a, b)| *a <= t && t < *b)
    }

    pub fn limited_at(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.rate_limited
            .iter()
            .find(|(a, b)| *a <= t && t < *b)
            .map(|(_, b)| *b)
    }
}

/// One job of the trace.
#[derive(Debug, Clone)]
pub struct TraceJob {
    pub id: String,
    pub class: String,
    pub arrival: DateTime<Utc>,
    pub models: Vec<String>,
    pub priority: Priority,
    pub deadline: DateTime<Utc>,
    /// Prompt tokens (the job's estimate and the bill agree).
    pub input_tokens: u64,
    pub max_tokens: u32,
    /// Output tokens produced and billed.
    pub output_tokens: u64,
}

impl TraceJob {
    /// The job as a worker receives it: a prompt whose estimated size is `input_tokens`. Built on
    /// demand (prompts are large and the trace long).
    pub fn job(&self) -> Job {
        // estimated_input_tokens = ceil((chars + 4) / 4) + 4 for one user message.
        let chars = 4 * self.input_tokens.saturating_sub(5) as usize;
        Job {
            id: JobId(self.id.clone()),
            models: self.models.clone(),
            messages: vec![ChatMessage {
                role: "user".into(),
                content: serde_json::Value::String("x".repeat(chars)),
                extra: Default::default(),
            }],
            max_tokens: Some(self.max_tokens),
            priority: self.priority,
            deadline: self.deadline,
            max_cost_usd: None,
            providers_allow: vec![],
            providers_deny: vec![],
            params: Default::default(),
            metadata: Default::default(),
        }
    }

    /// Tokens counted against a tpm limit: input plus `max_tokens`.
    pub fn limit_tokens(&self) -> u64 {
        self.input_tokens.max(5) + u64::from(self.max_tokens)
    }
}

/// A resolved scenario: what every policy runs against.
#[derive(Debug, Clone)]
pub struct MarketScenario {
    pub name: String,
    pub start: DateTime<Utc>,
    /// The catalog as the workers see it.
    pub catalog: Catalog,
    /// True behaviour, in the order of `catalog.providers`.
    pub servers: Vec<ServerSpec>,
    /// The true behaviour of each provider's flex tier, if it has one (same order).
    pub flex: Vec<Option<ServerSpec>>,
    /// Jobs by arrival.
    pub jobs: Vec<TraceJob>,
    pub fleet: FleetSpec,
    pub seed: u64,
}

/// The default start: a Monday, midnight UTC.
pub fn default_start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 5, 0, 0, 0)
        .single()
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

fn limit<T: Copy + PartialEq + Default>(truth: Option<T>, catalog: Option<T>) -> Option<T> {
    match truth {
        Some(v) if v == T::default() => None,
        Some(v) => Some(v),
        None => catalog,
    }
}

impl ScenarioSpec {
    /// Resolves the spec against `catalog` (the file named by `catalog`, already read).
    ///
    /// Long (over 100 lines) on purpose: it checks each section of the file in the order a
    /// reader writes it and says which entry is wrong; each check is a few lines.
    pub fn build(
        &self,
        catalog: &Catalog,
        default_name: &str,
    ) -> Result<MarketScenario, ScenarioError> {
        let start = self.start.unwrap_or_else(default_start);
        let mut cat = catalog.clone();
        if let Some(only) = &self.providers {
            for p in only {
                if cat.provider(p).is_none() {
                    return invalid(format!("providers: {p:?} is not in the catalog"));
                }
            }
            cat.providers.retain(|p| only.contains(&p.name));
        }
        let mut seen = HashSet::new();
        for m in &self.market {
            if !seen.insert(m.provider.as_str()) {
                return invalid(format!("market: provider {:?} listed twice", m.provider));
            }
            if cat.provider(&m.provider).is_none() {
                return invalid(format!(
                    "market: provider {:?} is not in the catalog (or not in `providers`)",
                    m.provider
                ));
            }
        }
        let at = |o: Offset| start + o.duration();
        let mut servers = Vec::new();
        let mut flex = Vec::new();
        for p in &mut cat.providers {
            let m = self
                .market
                .iter()
                .find(|m| m.provider == p.name)
                .cloned()
                .unwrap_or_else(|| ProviderMarket::plain(&p.name));
            for w in m.outages.iter().chain(&m.rate_limited) {
                if w.to <= w.from {
                    return invalid(format!("market {}: window ends before it starts", p.name));
                }
            }
            let truth = Limits {
                rpm: limit(m.rpm, p.limits.rpm),
                tpm: limit(m.tpm, p.limits.tpm),
                concurrency: limit(m.concurrency, p.limits.concurrency),
            };
            if self.fleet.worker_knows_limits {
                p.limits = truth.clone();
            }
            let batch = batch_spec(p, &m, self.fleet.worker_knows_limits, &at)?;
            let flex_limits = match (&m.flex, p.models.iter().any(|o| o.flex.is_some())) {
                (Some(_), false) => {
                    return invalid(format!(
                        "market {}: `flex` given but no offer of it has a flex tier",
                        p.name
                    ))
                }
                (Some(f), true) => Some(Limits {
                    rpm: f.rpm.filter(|n| *n > 0),
                    tpm: None,
                    concurrency: f.concurrency.filter(|n| *n > 0),
                }),
                (None, true) => Some(truth.clone()),
                (None, false) => None,
            };
            let server = ServerSpec {
                name: p.name.clone(),
                limits: truth,
                latency_ms: m.latency_ms.max(1.0),
                per_output_token_ms: m.per_output_token_ms.max(0.0),
                jitter: m.jitter.clamp(0.0, 0.9),
                error_rate: m.error_rate.clamp(0.0, 0.9),
                outages: m.outages.iter().map(|w| (at(w.from), at(w.to))).collect(),
                rate_limited: m
                    .rate_limited
                    .iter()
                    .map(|w| (at(w.from), at(w.to)))
                    .collect(),
                retry_after_s: m.retry_after_s.max(1.0),
                batch,
            };
            flex.push(flex_limits.map(|limits| ServerSpec {
                name: format!("{}/flex", p.name),
                limits,
                batch: None,
                ..server.clone()
            }));
            servers.push(server);
        }
        let served = cat.model_names();
        let models_of = |model: &Option<String>, models: &[String], what: &str| {
            let ms: Vec<String> = model
                .iter()
                .cloned()
                .chain(models.iter().cloned())
                .collect();
            if ms.is_empty() {
                return invalid(format!("{what}: give `model` or `models`"));
            }
            for m in &ms {
                if !served.contains(m) {
                    return invalid(format!("{what}: no provider in this market serves {m:?}"));
                }
            }
            Ok(ms)
        };
        let mut rng = StdRng::seed_from_u64(self.seed);
        let mut jobs = Vec::new();
        for c in &self.jobs {
            let what = format!("jobs {:?}", c.name);
            let models = models_of(&c.model, &c.models, &what)?;
            let to = c.to.unwrap_or(c.from).max(c.from);
            let times = arrivals(c, to, &mut rng);
            for (i, t) in times.into_iter().enumerate() {
                let deadline_in = match c.deadline_in {
                    DeadlineIn::One(d) => d.ms(),
                    DeadlineIn::Two([a, b]) if b > a => rng.random_range(a.ms()..=b.ms()),
                    DeadlineIn::Two([a, _]) => a.ms(),
                };
                if deadline_in <= 0 {
                    return invalid(format!("{what}: deadline_in must be positive"));
                }
                let input_tokens = c.input_tokens.draw(&mut rng).round().max(5.0) as u64;
                let fill = c.output_fill.draw(&mut rng).clamp(0.0, 1.0);
                jobs.push(TraceJob {
                    id: format!("{}-{i:05}", c.name),
                    class: c.name.clone(),
                    arrival: start + Duration::milliseconds(t),
                    models: models.clone(),
                    priority: c.priority,
                    deadline: start + Duration::milliseconds(t + deadline_in),
                    input_tokens,
                    max_tokens: c.max_tokens.max(1),
                    output_tokens: ((f64::from(c.max_tokens) * fill).round() as u64).max(1),
                });
            }
        }
        for (i, e) in self.trace.iter().enumerate() {
            let what = format!("trace entry {}", i + 1);
            let models = models_of(&e.model, &e.models, &what)?;
            if e.deadline_in.ms() <= 0 {
                return invalid(format!("{what}: deadline_in must be positive"));
            }
            jobs.push(TraceJob {
                id: e.id.clone().unwrap_or_else(|| format!("trace-{i:06}")),
                class: "trace".into(),
                arrival: at(e.at),
                models,
                priority: e.priority,
                deadline: at(e.at) + e.deadline_in.duration(),
                input_tokens: e.input_tokens.max(5),
                max_tokens: e.max_tokens.max(1),
                output_tokens: e.output_tokens.unwrap_or(u64::from(e.max_tokens)).max(1),
            });
        }
        if jobs.is_empty() {
            return invalid("the scenario has no jobs (give [[jobs]] or [[trace]])");
        }
        let mut ids = HashSet::new();
        for j in &jobs {
            if !ids.insert(j.id.as_str()) {
                return invalid(format!("job id {:?} appears twice", j.id));
            }
        }
        jobs.sort_by(|a, b| a.arrival.cmp(&b.arrival).then(a.id.cmp(&b.id)));
        Ok(MarketScenario {
            name: self
                .name
                .clone()
                .unwrap_or_else(|| default_name.to_string()),
            start,
            catalog: cat,
            servers,
            flex,
            jobs,
            fleet: self.fleet.clone(),
            seed: self.seed,
        })
    }
}

/// A provider's batch API as the scenario describes it (`None` when no offer of it has one).
/// With `told` (the workers know the market), the median turnaround becomes the workers'
/// prior for the provider's batch offers.
fn batch_spec(
    p: &mut schemas::ProviderSpec,
    m: &ProviderMarket,
    told: bool,
    at: &dyn Fn(Offset) -> DateTime<Utc>,
) -> Result<Option<BatchSpec>, ScenarioError> {
    let prior = p
        .models
        .iter()
        .filter_map(|o| o.batch.as_ref())
        .map(|b| b.prior_turnaround())
        .max();
    let (Some(_), Some(b)) = (prior, &m.batch) else {
        if m.batch.is_some() {
            return invalid(format!(
                "market {}: `batch` given but no offer of it has a batch API",
                p.name
            ));
        }
        let fixed = |d| BatchSpec::fixed(Duration::from_std(d).unwrap_or(Duration::days(1)));
        return Ok(prior.map(fixed));
    };
    if b.turnaround.ms() <= 0 || b.tail_turnaround.is_some_and(|t| t.ms() <= 0) {
        return invalid(format!(
            "market {}: batch turnarounds must be positive",
            p.name
        ));
    }
    for w in &b.slow {
        if w.to <= w.from {
            return invalid(format!(
                "market {}: batch slow window ends before it starts",
                p.name
            ));
        }
    }
    if told {
        let median = std::time::Duration::from_millis(b.turnaround.ms() as u64);
        for o in p.models.iter_mut().filter_map(|o| o.batch.as_mut()) {
            o.turnaround = Some(median);
        }
    }
    Ok(Some(BatchSpec {
        turnaround: b.turnaround.duration(),
        jitter: b.jitter.clamp(0.0, 0.9),
        tail: b.tail.clamp(0.0, 1.0),
        tail_turnaround: b.tail_turnaround.unwrap_or(b.turnaround).duration(),
        slow: b.slow.iter().map(|w| (at(w.from), at(w.to))).collect(),
        line_errors: b.line_errors.clamp(0.0, 1.0),
        expire: b.expire.clone(),
        expire_done: b.expire_done.clamp(0.0, 1.0),
    }))
}

/// Arrival offsets (ms) of a class's jobs.
fn arrivals(c: &JobClass, to: Offset, rng: &mut StdRng) -> Vec<i64> {
    let (a, b) = (c.from.ms(), to.ms());
    let n = c.count;
    let mut out: Vec<i64> = match c.arrival {
        Arrival::Burst => vec![a; n],
        Arrival::Even => (0..n)
            .map(|i| a + ((b - a) as f64 * i as f64 / n.max(1) as f64) as i64)
            .collect(),
        Arrival::Uniform => (0..n)
            .map(|_| if b > a { rng.random_range(a..=b) } else { a })
            .collect(),
        Arrival::Diurnal => {
            let peak = c.peak.unwrap_or(Offset::hours(14.0)).ms() as f64;
            let day = 86_400_000.0;
            (0..n)
                .map(|_| loop {
                    let t = if b > a { rng.random_range(a..=b) } else { a };
                    let w = 0.5 * (1.0 + (std::f64::consts::TAU * (t as f64 - peak) / day).cos());
                    if rng.random::<f64>() <= w.max(0.02) {
                        break t;
                    }
                })
                .collect()
        }
    };
    out.sort_unstable();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_parse_clock_times_and_durations() {
        assert_eq!(parse_offset("13:30"), Ok(13 * 3_600_000 + 30 * 60_000));
        assert_eq!(parse_offset("26:00"), Ok(26 * 3_600_000));
        assert_eq!(parse_offset("1h30m"), Ok(90 * 60_000));
        assert_eq!(parse_offset("45s"), Ok(45_000));
        assert_eq!(parse_offset("2d"), Ok(2 * 86_400_000));
        assert!(parse_offset("soon").is_err());
        assert!(parse_offset("12").is_err());
        assert!(parse_offset("10:75").is_err());
        for ms in [0, 90 * 60_000, 26 * 3_600_000, 15_339_000, 15_339_042] {
            assert_eq!(parse_offset(&String::from(Offset(ms))), Ok(ms));
        }
    }

    #[test]
    fn materialized_job_estimates_the_traced_prompt_size() {
        let t = TraceJob {
            id: "a".into(),
            class: "c".into(),
            arrival: default_start(),
            models: vec!["m".into()],
            priority: Priority::Deferrable,
            deadline: default_start() + Duration::hours(1),
            input_tokens: 1234,
            max_tokens: 100,
            output_tokens: 50,
        };
        let j = t.job();
        assert_eq!(j.estimated_input_tokens(), 1234);
        assert_eq!(j.expected_output_tokens(), 100);
        assert_eq!(t.limit_tokens(), 1334);
    }
}
