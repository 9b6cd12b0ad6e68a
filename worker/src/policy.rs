//! The routing and deferral policy (DESIGN §5), pure: a function of the job, the catalog, what the
//! caller knows of each provider's capacity, and the time passed in. No I/O and no clock of its
//! own, so it can be driven on a simulated clock and tested branch by branch.

use chrono::{DateTime, Duration, Utc};
use schemas::catalog::Price;
use schemas::{Catalog, Job, ModelOffer, Priority, ProviderSpec, Usd};
use serde::{Deserialize, Serialize};

/// Tunables of the policy. Defaults suit production; tests shrink the margins.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyConfig {
    /// Time kept in hand before a deadline, beyond the expected latency (seconds).
    pub safety_margin_s: f64,
    /// Expected latency of one request: base seconds…
    pub latency_base_s: f64,
    /// …plus seconds per expected output token.
    pub latency_per_output_token_s: f64,
    /// Longest single deferral of a `standard` job (seconds).
    pub standard_max_defer_s: f64,
    /// Longest single deferral of any job; a longer wait is split into several (seconds).
    pub max_defer_s: f64,
    /// A later price window is worth waiting for only if it saves at least this fraction.
    pub min_window_saving: f64,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            safety_margin_s: 300.0,
            latency_base_s: 5.0,
            latency_per_output_token_s: 0.02,
            standard_max_defer_s: 120.0,
            max_defer_s: 3600.0,
            min_window_saving: 0.05,
        }
    }
}

/// What the caller knows of a provider's capacity for this job at `now`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Availability {
    /// A request may go now.
    Now,
    /// Rate-limited, at its concurrency limit or briefly down: capacity expected at this time.
    At(DateTime<Utc>, Busy),
    /// Unusable for a long while (credentials, credit, model missing): leave it out.
    Excluded,
}

/// Why a provider has no capacity now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Busy {
    RateLimited,
    Concurrency,
    Down,
}

impl Busy {
    pub fn as_str(self) -> &'static str {
        match self {
            Busy::RateLimited => "rate_limited",
            Busy::Concurrency => "at_concurrency_limit",
            Busy::Down => "down",
        }
    }
}

/// One (provider, model) pair able to serve a job, with its expected cost now.
#[derive(Debug, Clone)]
pub struct Candidate<'a> {
    pub provider: &'a ProviderSpec,
    pub offer: &'a ModelOffer,
    pub expected_cost: Usd,
    pub price: Price,
}

/// What to do with a job now.
#[derive(Debug, Clone)]
pub enum Decision<'a> {
    /// Send it to this pair; `reason` is `cheapest` or why it escalated.
    Dispatch {
        to: Candidate<'a>,
        reason: String,
        escalated: bool,
    },
    /// Put it back on the broker until `until`.
    Defer {
        until: DateTime<Utc>,
        reason: String,
    },
    /// No pair can ever serve it (model, context, budget, deadline): fail it.
    Fail { kind: &'static str, reason: String },
}

/// All pairs that could serve `job` (model offered, provider allowed, context fits, not
/// excluded), ranked by expected cost at `now`, cheapest first.
pub fn candidates<'a>(
    job: &Job,
    catalog: &'a Catalog,
    avail: &dyn Fn(&str) -> Availability,
    now: DateTime<Utc>,
) -> Vec<Candidate<'a>> {
    let (tin, tout) = (job.estimated_input_tokens(), job.expected_output_tokens());
    let mut out: Vec<Candidate<'a>> = catalog
        .providers
        .iter()
        .filter(|p| job.provider_allowed(&p.name) && avail(&p.name) != Availability::Excluded)
        .flat_map(|p| p.models.iter().map(move |m| (p, m)))
        .filter(|(_, m)| job.models.contains(&m.model))
        .filter(|(_, m)| m.context.is_none_or(|c| tin + tout <= u64::from(c)))
        .map(|(provider, offer)| {
            let price = offer.price_at(now);
            Candidate {
                provider,
                offer,
                expected_cost: price.cost(tin, tout),
                price,
            }
        })
        .collect();
    out.sort_by(|a, b| a.expected_cost.0.total_cmp(&b.expected_cost.0));
    out
}

/// The expected cost of the dearest pair that could serve the job, ignoring capacity: the
/// "no routing" baseline each result is compared against.
pub fn dearest_price(job: &Job, catalog: &Catalog, now: DateTime<Utc>) -> Option<Price> {
    candidates(job, catalog, &|_| Availability::Now, now)
        .last()
        .map(|c| c.price)
}

impl PolicyConfig {
    /// Seconds a request to serve `job` is expected to take.
    pub fn expected_latency(&self, job: &Job) -> Duration {
        let s = self.latency_base_s
            + self.latency_per_output_token_s * job.expected_output_tokens() as f64;
        secs(s)
    }

    /// The latest instant a request for `job` can start and still meet its deadline.
    pub fn latest_start(&self, job: &Job) -> DateTime<Utc> {
        job.deadline - self.expected_latency(job) - secs(self.safety_margin_s)
    }

    /// How long `job` may still wait at `now` (zero or negative: it must go now).
    pub fn slack(&self, job: &Job, now: DateTime<Utc>) -> Duration {
        self.latest_start(job) - now
    }
}

fn secs(s: f64) -> Duration {
    Duration::milliseconds((s * 1000.0) as i64)
}

/// Decides what to do with `job` at `now` (DESIGN §5).
pub fn route<'a>(
    job: &Job,
    catalog: &'a Catalog,
    avail: &dyn Fn(&str) -> Availability,
    now: DateTime<Utc>,
    cfg: &PolicyConfig,
) -> Decision<'a> {
    if now >= job.deadline {
        return Decision::Fail {
            kind: "deadline_passed",
            reason: format!("deadline {} has passed", job.deadline.to_rfc3339()),
        };
    }
    let mut ranked = candidates(job, catalog, avail, now);
    if ranked.is_empty() {
        return Decision::Fail {
            kind: "no_provider",
            reason: format!(
                "no available provider serves {} within the context length and provider filters",
                job.models.join("|")
            ),
        };
    }
    if let Some(budget) = job.max_cost_usd {
        ranked.retain(|c| c.expected_cost <= budget);
        if ranked.is_empty() {
            return Decision::Fail {
                kind: "over_budget",
                reason: format!("every provider's expected cost exceeds max_cost_usd {budget}"),
            };
        }
    }
    let slack = cfg.slack(job, now);
    let may_wait = |wait: Duration| -> bool {
        match job.priority {
            Priority::Critical => false,
            Priority::Standard => wait <= slack && wait <= secs(cfg.standard_max_defer_s),
            Priority::Deferrable => wait <= slack,
        }
    };
    let cheapest = &ranked[0];

    // A cheaper price window before the job must start is worth waiting for.
    if job.priority != Priority::Critical {
        if let Some((at, cost)) = cheaper_window(job, &ranked, now, now + slack, cfg) {
            if may_wait(at - now) {
                return defer(
                    now,
                    at,
                    cfg,
                    format!(
                        "cheaper_window: {cost} expected at {} vs {} now",
                        at.to_rfc3339(),
                        cheapest.expected_cost
                    ),
                );
            }
        }
    }

    match avail(&cheapest.provider.name) {
        Availability::Now => Decision::Dispatch {
            to: cheapest.clone(),
            reason: "cheapest".into(),
            escalated: false,
        },
        Availability::At(ready, busy) => {
            let wait = ready - now;
            if may_wait(wait) {
                return defer(
                    now,
                    ready,
                    cfg,
                    format!(
                        "cheapest {} {} until {}",
                        cheapest.provider.name,
                        busy.as_str(),
                        ready.to_rfc3339()
                    ),
                );
            }
            let why = match job.priority {
                Priority::Critical => "critical job never waits".to_string(),
                Priority::Standard if wait <= slack => format!(
                    "standard job may wait at most {}s",
                    cfg.standard_max_defer_s
                ),
                _ => format!(
                    "waiting {}s would miss the deadline (slack {}s)",
                    wait.num_seconds(),
                    slack.num_seconds()
                ),
            };
            match ranked
                .iter()
                .find(|c| avail(&c.provider.name) == Availability::Now)
            {
                Some(c) => Decision::Dispatch {
                    to: c.clone(),
                    reason: format!(
                        "escalated: cheapest {} {}; {why}",
                        cheapest.provider.name,
                        busy.as_str()
                    ),
                    escalated: true,
                },
                None => {
                    // Nothing has capacity now: wait for whichever frees up first.
                    let first = ranked
                        .iter()
                        .filter_map(|c| match avail(&c.provider.name) {
                            Availability::At(t, _) => Some(t),
                            _ => None,
                        })
                        .min()
                        .unwrap_or(ready);
                    defer(now, first, cfg, "every eligible provider is busy".into())
                }
            }
        }
        Availability::Excluded => Decision::Fail {
            kind: "no_provider",
            reason: "cheapest provider excluded".into(),
        },
    }
}

fn defer<'a>(
    now: DateTime<Utc>,
    until: DateTime<Utc>,
    cfg: &PolicyConfig,
    reason: String,
) -> Decision<'a> {
    let until = until.min(now + secs(cfg.max_defer_s)).max(now);
    Decision::Defer { until, reason }
}

/// The earliest price-window change before `latest` at which some candidate becomes cheaper than
/// the cheapest now by at least `min_window_saving`, with that cost.
fn cheaper_window(
    job: &Job,
    ranked: &[Candidate<'_>],
    now: DateTime<Utc>,
    latest: DateTime<Utc>,
    cfg: &PolicyConfig,
) -> Option<(DateTime<Utc>, Usd)> {
    let best_now = ranked.first()?.expected_cost;
    let (tin, tout) = (job.estimated_input_tokens(), job.expected_output_tokens());
    let mut best: Option<(DateTime<Utc>, Usd)> = None;
    for c in ranked {
        let mut t = now;
        // A day holds few window edges; 8 steps cover any sensible schedule.
        for _ in 0..8 {
            let Some(next) = c.offer.next_price_change(t) else {
                break;
            };
            if next > latest {
                break;
            }
            let cost = c.offer.price_at(next).cost(tin, tout);
            if cost.0 < best_now.0 * (1.0 - cfg.min_window_saving)
                && best.is_none_or(|(_, b)| cost.0 < b.0)
            {
                best = Some((next, cost));
            }
            t = next;
        }
    }
    best
}
