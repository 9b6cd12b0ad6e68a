//! The routing and deferral policy (DESIGN §5), pure: a function of the job, the catalog, what the
//! caller knows of each provider's capacity, and the time passed in. No I/O and no clock of its
//! own, so it can be driven on a simulated clock and tested branch by branch.

use chrono::{DateTime, Duration, Utc};
use schemas::catalog::Price;
use schemas::{Catalog, Job, ModelOffer, Priority, ProviderSpec, Route, Turn, Usd};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::fmt;

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
    /// Longest a `standard` job waits for a cheaper pair, all deferrals together (seconds).
    pub standard_max_defer_s: f64,
    /// Longest single deferral of any job; a longer wait is split into several (seconds).
    pub max_defer_s: f64,
    /// A later price window is worth waiting for only if it saves at least this fraction.
    pub min_window_saving: f64,
    /// After this many failed attempts a job stops waiting for a provider that is down (its
    /// circuit open): it would be the one probing it again and again.
    pub avoid_down_after_failures: u32,
    /// Time kept to finish a job realtime should its provider batch fail, expire or be
    /// cancelled (seconds): a batch route needs slack for the turnaround plus this.
    pub batch_fallback_s: f64,
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
            avoid_down_after_failures: 3,
            batch_fallback_s: 1800.0,
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

/// One (provider, model, route) able to serve a job, with its expected cost now.
#[derive(Debug, Clone)]
pub struct Candidate<'a> {
    pub provider: &'a ProviderSpec,
    pub offer: &'a ModelOffer,
    pub route: Route,
    pub expected_cost: Usd,
    pub price: Price,
}

impl<'a> Candidate<'a> {
    /// The name its capacity is planned under (see [`capacity_key`]).
    pub fn key(&self) -> Cow<'a, str> {
        capacity_key(&self.provider.name, self.route)
    }

    /// Its prompt-cache prices on its route at `now`, to bill cached tokens with.
    pub fn cache_price(&self, now: DateTime<Utc>) -> Option<schemas::CachePrice> {
        self.offer
            .route_cache_price_at(self.provider.kind, self.route, now)
    }
}

/// The name a provider's capacity on `route` is planned under: the provider's name for
/// realtime (and batch, which uses no request capacity), `<provider>/flex` for its flex tier,
/// whose capacity is its own.
pub fn capacity_key(provider: &str, route: Route) -> Cow<'_, str> {
    match route {
        Route::Flex => Cow::Owned(format!("{provider}/flex")),
        Route::Realtime | Route::Batch => Cow::Borrowed(provider),
    }
}

/// What to do with a job now.
#[derive(Debug, Clone)]
pub enum Decision<'a> {
    /// Send it to this pair, for this reason (the cheapest, or why it escalated).
    Dispatch {
        to: Candidate<'a>,
        reason: RouteReason,
    },
    /// Put it back on the broker until `until`; `turn`, when the deferral holds capacity, is
    /// the turn it holds (the envelope carries it, so whichever worker takes the job sends it
    /// on that capacity: see [`crate::Capacity::view`]).
    Defer {
        until: DateTime<Utc>,
        reason: DeferReason,
        turn: Option<Turn>,
        /// The job is on a turn that has come (promised by another planner of the fleet, or
        /// paid for here) and waits only for this planner's pacing: the runner waits up to
        /// [`crate::DUE_INLINE_WAIT_S`] in place rather than sending it round the broker again.
        due: bool,
    },
    /// Hand it to this pair's batch API: gather it with others into a provider batch.
    Batch {
        to: Candidate<'a>,
        reason: RouteReason,
    },
    /// No pair can ever serve it (model, context, budget, deadline): fail it.
    Fail { kind: &'static str, reason: String },
}

impl Decision<'_> {
    /// Whether the job is sent to a dearer pair than the cheapest.
    pub fn escalated(&self) -> bool {
        matches!(self, Decision::Dispatch { reason, .. } | Decision::Batch { reason, .. } if reason.is_escalation())
    }

    /// The turn a deferral holds, for the envelope (`None` for any other decision: a job
    /// sent, batched or failed gives its turn up).
    pub fn turn(&self) -> Option<&Turn> {
        match self {
            Decision::Defer { turn, .. } => turn.as_ref(),
            _ => None,
        }
    }
}

/// Why a job was sent where it was; its text (`Display`) is what result rows record.
#[derive(Debug, Clone, PartialEq)]
pub enum RouteReason {
    /// The cheapest pair could take it now.
    Cheapest,
    /// A dearer pair took it because the cheapest (`cheapest`, `busy`) could not in time.
    Escalated {
        cheapest: String,
        busy: Busy,
        why: Escalation,
    },
}

impl RouteReason {
    /// Whether the job went to a dearer pair than the cheapest.
    pub fn is_escalation(&self) -> bool {
        matches!(self, RouteReason::Escalated { .. })
    }
}

/// Why waiting for the cheapest pair was not an option.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Escalation {
    /// `critical` jobs never wait.
    CriticalNeverWaits,
    /// The wait (seconds) is longer than the job's slack (seconds).
    WouldMissDeadline { wait_s: i64, slack_s: i64 },
    /// A `standard` job may wait this many seconds in all.
    StandardWaitLimit { max_s: f64 },
    /// Waiting this long would save less than the minimum saving (a fraction).
    SavesTooLittle { wait_s: i64, min_saving: f64 },
    /// The cheapest pair has no capacity within a day.
    NoCapacityWithinADay,
}

impl fmt::Display for RouteReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RouteReason::Cheapest => f.write_str("cheapest"),
            RouteReason::Escalated {
                cheapest,
                busy,
                why,
            } => write!(f, "escalated: cheapest {cheapest} {}; {why}", busy.as_str()),
        }
    }
}

impl fmt::Display for Escalation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Escalation::CriticalNeverWaits => f.write_str("critical job never waits"),
            Escalation::WouldMissDeadline { wait_s, slack_s } => write!(
                f,
                "waiting {wait_s}s would miss the deadline (slack {slack_s}s)"
            ),
            Escalation::StandardWaitLimit { max_s } => {
                write!(f, "standard job may wait at most {max_s}s")
            }
            Escalation::SavesTooLittle { wait_s, min_saving } => write!(
                f,
                "waiting {wait_s}s saves less than {:.0}%",
                min_saving * 100.0
            ),
            Escalation::NoCapacityWithinADay => f.write_str("no capacity within a day"),
        }
    }
}

/// Why a job is put back on the broker; its text is carried in the envelope and the row.
#[derive(Debug, Clone, PartialEq)]
pub enum DeferReason {
    /// A later price window is cheaper: `expected` there (from `at`) against `now` here.
    CheaperWindow {
        expected: Usd,
        at: DateTime<Utc>,
        now: Usd,
    },
    /// Waiting for `provider` (the cheapest, or the next cheapest) until `until`.
    Waiting {
        provider: String,
        next_cheapest: bool,
        busy: Busy,
        until: DateTime<Utc>,
    },
    /// No eligible pair can start in time; waiting for the first to free up.
    AllBusy,
    /// Another job took the capacity between the plan and the dispatch.
    Contended { provider: String },
    /// Backing off after a transient error (its text).
    Backoff { error: String },
}

impl fmt::Display for DeferReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeferReason::CheaperWindow { expected, at, now } => write!(
                f,
                "cheaper_window: {expected} expected at {} vs {now} now",
                at.to_rfc3339()
            ),
            DeferReason::Waiting {
                provider,
                next_cheapest,
                busy,
                until,
            } => write!(
                f,
                "{} {provider} {} until {}",
                if *next_cheapest {
                    "next cheapest"
                } else {
                    "cheapest"
                },
                busy.as_str(),
                until.to_rfc3339()
            ),
            DeferReason::AllBusy => f.write_str("every eligible provider is busy"),
            DeferReason::Contended { provider } => {
                write!(f, "capacity at {provider} taken by another job")
            }
            DeferReason::Backoff { error } => write!(f, "retry after {error}"),
        }
    }
}

/// All pairs that could serve `job` (model offered, provider allowed, context fits, not
/// excluded), ranked by expected cost at `now`, cheapest first.
pub fn candidates<'a>(
    job: &Job,
    catalog: &'a Catalog,
    avail: &dyn Fn(&str) -> Availability,
    now: DateTime<Utc>,
) -> Vec<Candidate<'a>> {
    candidates_where(job, catalog, &|p| avail(p) == Availability::Excluded, now)
}

/// The realtime pairs among [`candidates`]: what a router without batch or flex routes sees.
pub fn realtime_candidates<'a>(
    job: &Job,
    catalog: &'a Catalog,
    avail: &dyn Fn(&str) -> Availability,
    now: DateTime<Utc>,
) -> Vec<Candidate<'a>> {
    let mut c = candidates(job, catalog, avail, now);
    c.retain(|c| c.route == Route::Realtime);
    c
}

fn candidates_where<'a>(
    job: &Job,
    catalog: &'a Catalog,
    excluded: &dyn Fn(&str) -> bool,
    now: DateTime<Utc>,
) -> Vec<Candidate<'a>> {
    let (tin, tout) = (job.estimated_input_tokens(), job.expected_output_tokens());
    let mut out: Vec<Candidate<'a>> = catalog
        .providers
        .iter()
        .filter(|p| job.provider_allowed(&p.name) && !excluded(&p.name))
        .flat_map(|p| p.models.iter().map(move |m| (p, m)))
        .filter(|(_, m)| job.models.contains(&m.model))
        .filter(|(_, m)| m.context.is_none_or(|c| tin + tout <= u64::from(c)))
        .flat_map(|(provider, offer)| offer.routes().map(move |route| (provider, offer, route)))
        .filter(|(p, _, route)| *route != Route::Flex || !excluded(&capacity_key(&p.name, *route)))
        .filter_map(|(provider, offer, route)| {
            let price = offer.route_price_at(route, now)?;
            Some(Candidate {
                provider,
                offer,
                route,
                expected_cost: price.cost(tin, tout),
                price,
            })
        })
        .collect();
    out.sort_by(|a, b| a.expected_cost.0.total_cmp(&b.expected_cost.0));
    out
}

/// The expected cost of the dearest pair that could serve the job, ignoring capacity: the
/// "no routing" baseline each result is compared against.
pub fn dearest_price(job: &Job, catalog: &Catalog, now: DateTime<Utc>) -> Option<Price> {
    realtime_candidates(job, catalog, &|_| Availability::Now, now)
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

    /// The latest instant a provider batch carrying `job` may still be running: after it, what
    /// the batch has not finished must go realtime (the batch is cancelled).
    pub fn batch_safe_time(&self, job: &Job) -> DateTime<Utc> {
        self.latest_start(job) - secs(self.batch_fallback_s)
    }
}

fn secs(s: f64) -> Duration {
    Duration::milliseconds((s * 1000.0) as i64)
}

/// What the policy may ask about the capacity a job could get. [`Availability`] answers through
/// [`AvailabilityView`]; the worker's [`crate::Capacity`] answers with its plan of the
/// capacity ahead (reservations, virtual clocks), so deferrals land when the job's turn comes.
pub trait CapacityView {
    /// Whether `provider` is unusable for a long while (credentials, credit): leave it out.
    fn excluded(&self, provider: &str) -> bool;
    /// The earliest instant in `[from, by]` at which the job could start on `provider`, and why
    /// not at `from` (`None` when it could); `None` when it cannot start by `by`.
    fn earliest(
        &self,
        provider: &str,
        from: DateTime<Utc>,
        by: DateTime<Utc>,
    ) -> Option<(DateTime<Utc>, Option<Busy>)>;
    /// The turnaround expected of a batch of `model` at `provider`, learned from batches seen;
    /// `None` before any was: the catalog's prior holds.
    fn turnaround(&self, _provider: &str, _model: &str) -> Option<Duration> {
        None
    }
}

/// A [`CapacityView`] from one availability per provider: free from its time on, for good.
pub struct AvailabilityView<'f>(pub &'f dyn Fn(&str) -> Availability);

impl CapacityView for AvailabilityView<'_> {
    fn excluded(&self, provider: &str) -> bool {
        (self.0)(provider) == Availability::Excluded
    }

    fn earliest(
        &self,
        provider: &str,
        from: DateTime<Utc>,
        by: DateTime<Utc>,
    ) -> Option<(DateTime<Utc>, Option<Busy>)> {
        match (self.0)(provider) {
            Availability::Now => (from <= by).then_some((from, None)),
            Availability::At(t, busy) if t.max(from) <= by => {
                Some((t.max(from), (t > from).then_some(busy)))
            }
            _ => None,
        }
    }
}

/// What the worker knows of a job beyond the job itself (from its envelope).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct History {
    /// Time spent deferred so far (`deferred_ms`).
    pub waited: Duration,
    /// Failed provider attempts so far (`attempt`).
    pub failures: u32,
    /// Provider batches that carried the job and gave it back (`batches`): it goes realtime.
    pub batches: u32,
}

impl Default for History {
    fn default() -> Self {
        History {
            waited: Duration::zero(),
            failures: 0,
            batches: 0,
        }
    }
}

/// A decision plus, for a deferral, the capacity the job should have kept for it.
#[derive(Debug, Clone)]
pub struct RoutePlan<'a> {
    pub decision: Decision<'a>,
    /// For a [`Decision::Defer`] that waits for a pair's capacity: reserve it (see
    /// [`crate::Capacity::reserve`]) so later jobs queue behind this one.
    pub hold: Option<Hold<'a>>,
}

/// Capacity a deferred job counts on: `provider` (its capacity key), from `at`, starting no
/// later than `by`.
#[derive(Debug, Clone)]
pub struct Hold<'a> {
    pub provider: Cow<'a, str>,
    pub at: DateTime<Utc>,
    pub by: DateTime<Utc>,
}

/// Decides what to do with `job` at `now` (DESIGN §5), from one availability per provider.
pub fn route<'a>(
    job: &Job,
    catalog: &'a Catalog,
    avail: &dyn Fn(&str) -> Availability,
    now: DateTime<Utc>,
    cfg: &PolicyConfig,
) -> Decision<'a> {
    plan(
        job,
        &History::default(),
        catalog,
        &AvailabilityView(avail),
        now,
        cfg,
    )
    .decision
}

/// One way to serve the job: a pair, from when, at what cost, within which price window.
#[derive(Debug, Clone, Copy)]
struct Opt {
    rank: usize,
    at: DateTime<Utc>,
    cost: Usd,
    window_from: DateTime<Utc>,
    by: DateTime<Utc>,
    busy: Option<Busy>,
}

/// Decides what to do with `job` at `now` (DESIGN §5) and, for a deferral, what to hold.
///
/// `history` says how long the job has been deferred already (a `standard` job waits
/// `standard_max_defer_s` in all) and how often it failed (after `avoid_down_after_failures`
/// it no longer waits for a provider that is down).
///
/// Every pair is looked at in each of its price windows up to the job's horizon (now for
/// `critical`; the slack, capped for `standard`): the earliest start the capacity allows in that
/// window, and the cost there. Walking these options from the earliest, a later one is taken
/// only when it saves at least `min_window_saving` over the one in hand. The winner is
/// dispatched if it can start now, else the job is deferred until it can (and holds that
/// capacity). A cheap pair whose queue would push the job past its latest start is therefore
/// passed over now, not after the wait.
pub fn plan<'a>(
    job: &Job,
    history: &History,
    catalog: &'a Catalog,
    view: &dyn CapacityView,
    now: DateTime<Utc>,
    cfg: &PolicyConfig,
) -> RoutePlan<'a> {
    let decide = |decision| RoutePlan {
        decision,
        hold: None,
    };
    if now >= job.deadline {
        return decide(Decision::Fail {
            kind: "deadline_passed",
            reason: format!("deadline {} has passed", job.deadline.to_rfc3339()),
        });
    }
    let mut ranked = candidates_where(job, catalog, &|p| view.excluded(p), now);
    if ranked.is_empty() {
        return decide(Decision::Fail {
            kind: "no_provider",
            reason: format!(
                "no available provider serves {} within the context length and provider filters",
                job.models.join("|")
            ),
        });
    }
    let slack = cfg.slack(job, now);
    ranked.retain(|c| c.route != Route::Batch || batch_fits(job, history, c, view, slack, cfg));
    if let Some(budget) = job.max_cost_usd {
        ranked.retain(|c| c.expected_cost <= budget);
        if ranked.is_empty() {
            return decide(Decision::Fail {
                kind: "over_budget",
                reason: format!("every provider's expected cost exceeds max_cost_usd {budget}"),
            });
        }
    }
    let horizon = match job.priority {
        Priority::Critical => now,
        Priority::Standard => {
            let waited = history.waited.max(Duration::zero());
            now + slack.min(secs(cfg.standard_max_defer_s) - waited)
        }
        Priority::Deferrable => now + slack,
    }
    .max(now);
    let mut options = options(job, &ranked, view, now, horizon);
    if history.failures >= cfg.avoid_down_after_failures {
        options.retain(|o| o.at <= now || o.busy != Some(Busy::Down));
    }
    options.sort_by(|a, b| a.at.cmp(&b.at).then(a.cost.0.total_cmp(&b.cost.0)));
    let Some(mut best) = options.first().copied() else {
        // Nothing can start in time: wait for whichever pair frees up first.
        let first = ranked
            .iter()
            .filter_map(|c| view.earliest(&c.key(), now, now + Duration::days(1)))
            .map(|(t, _)| t)
            .min()
            .unwrap_or(now + secs(cfg.max_defer_s));
        return decide(defer(now, first, cfg, DeferReason::AllBusy));
    };
    for o in &options[1..] {
        if o.cost.0 < best.cost.0 * (1.0 - cfg.min_window_saving) {
            best = *o;
        }
    }
    let chosen = &ranked[best.rank];
    let cheapest = &ranked[0];
    if best.at <= now {
        let reason = if best.rank == 0 {
            RouteReason::Cheapest
        } else {
            escalation(job, cheapest, view, slack, now, cfg)
        };
        let to = chosen.clone();
        return decide(match to.route {
            Route::Batch => Decision::Batch { to, reason },
            Route::Realtime | Route::Flex => Decision::Dispatch { to, reason },
        });
    }
    let reason = wait_reason(&best, chosen, cheapest, now);
    RoutePlan {
        decision: defer(now, best.at, cfg, reason),
        hold: Some(Hold {
            provider: chosen.key(),
            at: best.at,
            by: best.by,
        }),
    }
}

/// Whether a batch route may carry `job`: a `deferrable` job no batch has given back yet, whose
/// slack covers the batch's expected turnaround (learned, else the catalog's prior) plus the
/// time to finish realtime should the batch fail.
fn batch_fits(
    job: &Job,
    history: &History,
    c: &Candidate<'_>,
    view: &dyn CapacityView,
    slack: Duration,
    cfg: &PolicyConfig,
) -> bool {
    let Some(offer) = &c.offer.batch else {
        return false;
    };
    if job.priority != Priority::Deferrable || history.batches > 0 {
        return false;
    }
    let prior = Duration::from_std(offer.prior_turnaround()).unwrap_or(Duration::days(1));
    let turnaround = view
        .turnaround(&c.provider.name, &c.offer.model)
        .unwrap_or(prior);
    slack >= turnaround + secs(cfg.batch_fallback_s)
}

/// What a deferred job waits for: a cheaper price window, or its turn at a busy pair.
fn wait_reason(
    best: &Opt,
    chosen: &Candidate<'_>,
    cheapest: &Candidate<'_>,
    now: DateTime<Utc>,
) -> DeferReason {
    if best.window_from > now {
        DeferReason::CheaperWindow {
            expected: best.cost,
            at: best.at,
            now: cheapest.expected_cost,
        }
    } else {
        DeferReason::Waiting {
            provider: chosen.key().into_owned(),
            next_cheapest: best.rank != 0,
            busy: best.busy.unwrap_or(Busy::RateLimited),
            until: best.at,
        }
    }
}

/// Why a job goes to a dearer pair now rather than wait for the cheapest one.
fn escalation(
    job: &Job,
    cheapest: &Candidate<'_>,
    view: &dyn CapacityView,
    slack: Duration,
    now: DateTime<Utc>,
    cfg: &PolicyConfig,
) -> RouteReason {
    let (wait, busy) = match view.earliest(&cheapest.key(), now, now + Duration::days(1)) {
        Some((t, b)) => (Some(t - now), b.unwrap_or(Busy::RateLimited)),
        None => (None, Busy::RateLimited),
    };
    let why = match (job.priority, wait) {
        (Priority::Critical, _) => Escalation::CriticalNeverWaits,
        (_, Some(w)) if w > slack => Escalation::WouldMissDeadline {
            wait_s: w.num_seconds(),
            slack_s: slack.num_seconds(),
        },
        (Priority::Standard, Some(w)) if w > secs(cfg.standard_max_defer_s) => {
            Escalation::StandardWaitLimit {
                max_s: cfg.standard_max_defer_s,
            }
        }
        (_, Some(w)) => Escalation::SavesTooLittle {
            wait_s: w.num_seconds(),
            min_saving: cfg.min_window_saving,
        },
        (_, None) => Escalation::NoCapacityWithinADay,
    };
    RouteReason::Escalated {
        cheapest: cheapest.provider.name.clone(),
        busy,
        why,
    }
}

/// Each pair's earliest start in each of its price windows up to `horizon`.
fn options(
    job: &Job,
    ranked: &[Candidate<'_>],
    view: &dyn CapacityView,
    now: DateTime<Utc>,
    horizon: DateTime<Utc>,
) -> Vec<Opt> {
    let (tin, tout) = (job.estimated_input_tokens(), job.expected_output_tokens());
    let mut out = Vec::new();
    for (rank, c) in ranked.iter().enumerate() {
        if c.route == Route::Batch {
            // Gathered now, whatever the request capacity (batch_fits checked the time).
            out.push(Opt {
                rank,
                at: now,
                cost: c.expected_cost,
                window_from: now,
                by: now,
                busy: None,
            });
            continue;
        }
        let key = c.key();
        let mut from = now;
        // A day holds few window edges; 8 windows cover any sensible schedule and deadline.
        for _ in 0..8 {
            let next = c.offer.next_price_change(from);
            let by = next.map_or(horizon, |n| (n - Duration::milliseconds(1)).min(horizon));
            let price = c.offer.route_price_at(c.route, from).unwrap_or(c.price);
            let cost = price.cost(tin, tout);
            if let Some((at, busy)) = view.earliest(&key, from, by) {
                out.push(Opt {
                    rank,
                    at,
                    cost,
                    window_from: from,
                    by,
                    busy,
                });
            }
            match next {
                Some(n) if n <= horizon => from = n,
                _ => break,
            }
        }
    }
    out
}

fn defer<'a>(
    now: DateTime<Utc>,
    until: DateTime<Utc>,
    cfg: &PolicyConfig,
    reason: DeferReason,
) -> Decision<'a> {
    let until = until.min(now + secs(cfg.max_defer_s)).max(now);
    Decision::Defer {
        until,
        reason,
        turn: None,
        due: false,
    }
}
