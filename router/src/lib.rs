//! The routing decision as one synchronous type (DESIGN §5): [`Router`] owns the pure policy
//! ([`policy`]), the capacity plan ([`Capacity`]: rate gates, circuit breakers, reservations for
//! deferred jobs) and the retry rule ([`retry`]), and is the only glue between them. The worker's
//! job loop, the market bench and the tests all call [`Router::decide`] and
//! [`Router::record`]; nothing else plans, reserves or acquires.
//!
//! - [`policy`]: ranks the pairs that can serve a job and decides dispatch, defer or fail.
//! - [`Capacity`]: every provider's [`ProviderState`] and the reservations of deferred jobs.
//! - `provider_state`, `gates`, `breaker`, `timeline`, `min_tree`: the parts of one provider's
//!   state — token buckets, the circuit breaker, the plan of the capacity ahead and its ledger.
//! - [`retry`]: what a failed call means for the job.

mod breaker;
mod capacity;
pub mod fleet;
mod gates;
mod min_tree;
pub mod policy;
mod provider_state;
pub mod retry;
mod timeline;

pub use breaker::BreakerConfig;
pub use capacity::{Capacity, JobView};
pub use fleet::{FaultKind, FleetShare, LimitReport, LimitWindow, SharedFault};
pub use policy::{
    capacity_key, Availability, Busy, Candidate, Decision, DeferReason, Escalation, History,
    PolicyConfig, RouteReason,
};
pub use provider_state::{ProviderState, MAX_RETRY_AFTER};
pub use retry::{after_error, backoff, ErrorClass, GiveUp, Retry};

use chrono::{DateTime, Duration, Utc};
use schemas::catalog::Price;
use schemas::{Catalog, Job, Turn};
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex, MutexGuard};

/// The router's tunables: the policy's, the breaker's, and how many failed attempts a job gets.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RouterConfig {
    pub policy: PolicyConfig,
    pub breaker: BreakerConfig,
    /// Failed provider attempts after which a job ends as `failed`.
    pub max_attempts: u32,
}

impl Default for RouterConfig {
    fn default() -> Self {
        RouterConfig {
            policy: PolicyConfig::default(),
            breaker: BreakerConfig::default(),
            max_attempts: 8,
        }
    }
}

/// A job as the router sees it: the job, the key its reservation is held under (unique per job
/// in the run), and what happened to it so far.
#[derive(Debug, Clone, Copy)]
pub struct Ticket<'j> {
    pub job: &'j Job,
    pub key: &'j str,
    pub history: History,
    /// The turn the job was promised when it was last deferred (the envelope's `turn`), by
    /// this planner or another of the fleet.
    pub turn: Option<&'j Turn>,
}

impl Ticket<'_> {
    /// Tokens the job is planned for: its estimated input plus its expected output.
    pub fn tokens(&self) -> u64 {
        self.job.estimated_input_tokens() + self.job.expected_output_tokens()
    }
}

/// How a provider call that held capacity ended.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CallOutcome {
    /// The provider answered, after `latency`.
    Answered { latency: std::time::Duration },
    /// The call failed this way (`retry_after`: the wait the provider asked for, if any).
    Failed {
        class: ErrorClass,
        retry_after: Option<std::time::Duration>,
    },
    /// The call ended without an answer to learn from (cancelled, or it panicked).
    Abandoned,
}

/// The routing decision for a fleet member or a simulated planner. Thread-safe; every method
/// takes its lock once and holds it for the whole step.
#[derive(Debug)]
pub struct Router {
    catalog: Arc<Catalog>,
    capacity: Mutex<Capacity>,
    cfg: RouterConfig,
}

impl Router {
    /// A router over `catalog` with fresh capacity (full buckets, closed circuits) at `now`.
    pub fn new(catalog: Arc<Catalog>, cfg: RouterConfig, now: DateTime<Utc>) -> Self {
        let capacity = Mutex::new(Capacity::new(&catalog, now));
        Router {
            catalog,
            capacity,
            cfg,
        }
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    pub fn config(&self) -> &RouterConfig {
        &self.cfg
    }

    fn capacity(&self) -> MutexGuard<'_, Capacity> {
        self.capacity.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Decides what to do with the job at `now`, under one lock: plans with the capacity ahead,
    /// reserves the capacity a deferral waits for (or gives up the job's earlier reservation),
    /// and for a dispatch takes the capacity of one request. A [`Decision::Dispatch`] therefore
    /// holds a slot: report how the call ended with [`record`](Self::record), on every path.
    pub fn decide(&self, t: &Ticket<'_>, now: DateTime<Utc>) -> Decision<'_> {
        let tokens = t.tokens();
        let mut cap = self.capacity();
        cap.sweep_orphans(now);
        let view = cap.view_woken(
            t.key,
            tokens,
            now,
            t.history.waited > Duration::zero(),
            t.turn,
        );
        let promised = view.promised().cloned();
        let mut p = policy::plan(
            t.job,
            &t.history,
            &self.catalog,
            &view,
            now,
            &self.cfg.policy,
        );
        // A job deferred for a pair's capacity keeps its turn there; any other decision gives
        // its place up. A turn another planner promised stays that planner's: kept, it is
        // carried on, not reserved twice.
        let mut held = None;
        match (&p.decision, p.hold) {
            (Decision::Defer { .. }, Some(h)) => {
                let turn = Turn {
                    provider: h.provider.into_owned(),
                    at: h.at,
                };
                // Held at another planner's turn, or at the gates here once it has come.
                let kept = promised.as_ref().is_some_and(|pr| {
                    let late = pr.at + Duration::seconds(capacity::TURN_LATE_S);
                    pr.provider == turn.provider
                        && (pr.at == turn.at || (pr.at <= now && turn.at <= late))
                });
                if kept {
                    held = promised.clone();
                } else {
                    cap.reserve(t.key, &turn.provider, tokens, h.at, h.by, now);
                    held = Some(turn);
                }
            }
            _ => cap.cancel_reservation(t.key),
        }
        if let Decision::Defer { turn, due, .. } = &mut p.decision {
            *due = held
                .as_ref()
                .is_some_and(|h| h.at <= now && promised.as_ref() == Some(h));
            *turn = held;
        }
        if let Decision::Dispatch { to, .. } = &p.decision {
            let key = to.key();
            // Sent on a turn another planner promised (and pays for): only the gates hold it.
            let on_promise = promised
                .as_ref()
                .is_some_and(|turn| turn.provider == key && turn.at <= now);
            let acquired = cap.get_mut(&key).is_some_and(|s| {
                if on_promise {
                    s.try_acquire_promised(tokens, now)
                } else {
                    s.try_acquire(tokens, now)
                }
            });
            if !acquired {
                return Decision::Defer {
                    until: now + Duration::milliseconds(CONTENDED_WAIT_MS),
                    reason: DeferReason::Contended {
                        provider: key.into_owned(),
                    },
                    turn: None,
                    due: false,
                };
            }
        }
        p.decision
    }

    /// Learns that a batch of `model` at `provider` took `took` from creation to its end: the
    /// batch route's expected turnaround for the jobs routed next.
    pub fn observe_turnaround(&self, provider: &str, model: &str, took: Duration) {
        self.capacity().observe_turnaround(provider, model, took);
    }

    /// The turnaround expected of a batch of `model` at `provider`: learned, else the
    /// catalog's prior (`None` when the pair has no batch route).
    pub fn expected_turnaround(&self, provider: &str, model: &str) -> Option<Duration> {
        let offer = self
            .catalog
            .provider(provider)?
            .models
            .iter()
            .find(|m| m.model == model)?
            .batch
            .as_ref()?;
        let prior = Duration::from_std(offer.prior_turnaround()).unwrap_or(Duration::days(1));
        Some(self.capacity().turnaround(provider, model).unwrap_or(prior))
    }

    /// Frees the capacity a dispatched call held (`provider` is the dispatch's capacity key,
    /// [`Candidate::key`]) and feeds its outcome to the provider's state:
    /// a success closes the circuit and teaches the latency; a 429 blocks the provider for its
    /// `Retry-After` (or a growing backoff); transient errors count towards opening the circuit;
    /// a provider fault leaves the provider out for minutes.
    pub fn record(&self, provider: &str, outcome: CallOutcome, now: DateTime<Utc>) {
        let mut cap = self.capacity();
        let Some(s) = cap.get_mut(provider) else {
            return;
        };
        s.release();
        let b = &self.cfg.breaker;
        match outcome {
            CallOutcome::Answered { latency } => {
                let latency = Duration::from_std(latency).unwrap_or_default();
                // A success of a request sent before the latest failure says nothing about now.
                s.on_success_of(now - latency);
                s.observe_latency(latency);
            }
            CallOutcome::Failed { class, retry_after } => match class {
                ErrorClass::RateLimited => s.on_rate_limited(retry_after, now, b),
                ErrorClass::Transient => s.on_transient(now, b),
                ErrorClass::ProviderFault => s.on_provider_fault(now, b),
                ErrorClass::Terminal => {}
            },
            CallOutcome::Abandoned => {}
        }
    }

    /// Plans with this planner's share of every provider's limits from now on: one of
    /// `fleet.members` planners sharing the accounts (see [`FleetShare`]).
    pub fn set_fleet(&self, fleet: FleetShare) {
        let mut cap = self.capacity();
        cap.set_shared(fleet.members > 1);
        for s in cap.providers.values_mut() {
            s.set_fleet(fleet);
        }
    }

    /// Empties every provider's buckets at `now` (see [`ProviderState::start_empty`]): for a
    /// planner joining a fleet whose members may have used the accounts' burst.
    pub fn start_empty(&self, now: DateTime<Utc>) {
        for s in self.capacity().providers.values_mut() {
            s.start_empty(now);
        }
    }

    /// Learns from the rate-limit headers of an answer from `provider` (a capacity key) to a
    /// request of `tokens`: the account's real limits, and whether it has budget left.
    pub fn observe_limits(
        &self,
        provider: &str,
        report: &LimitReport,
        tokens: u64,
        now: DateTime<Utc>,
    ) {
        if let Some(s) = self.capacity().get_mut(provider) {
            s.observe_limits(report, tokens, now);
        }
    }

    /// The account's limits as `provider` (a capacity key) is planned now: rpm, tpm, and this
    /// planner's gate on requests in flight.
    pub fn limits(&self, provider: &str) -> Option<(Option<f64>, Option<f64>, Option<u32>)> {
        self.capacity()
            .providers
            .get(provider)
            .map(ProviderState::limits)
    }

    /// What this planner found about providers that the rest of the fleet should know (see
    /// [`Router::apply_findings`]).
    pub fn findings(&self, now: DateTime<Utc>) -> Vec<SharedFault> {
        let cap = self.capacity();
        let mut out = Vec::new();
        for (key, s) in &cap.providers {
            for (kind, until) in s.findings(now) {
                out.push(SharedFault {
                    key: key.clone(),
                    kind,
                    until,
                });
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out
    }

    /// Takes in what other planners found: a provider left out, or rate-limited, until then
    /// (past findings and unknown providers are ignored).
    pub fn apply_findings(&self, findings: &[SharedFault], now: DateTime<Utc>) {
        let mut cap = self.capacity();
        for f in findings.iter().filter(|f| f.until > now) {
            if let Some(s) = cap.get_mut(&f.key) {
                match f.kind {
                    FaultKind::Fault => s.exclude_until(f.until),
                    FaultKind::Blocked => s.block_until(f.until),
                    FaultKind::Down => s.open_until(f.until, now),
                    FaultKind::Up => s.close_circuit(f.until - fleet::UP_NEWS),
                }
            }
        }
    }

    /// Takes the capacity of one request at `provider` if it is free now (a baseline that
    /// chooses its pair by itself still paces by the plan); else says when it may be.
    pub fn acquire(&self, provider: &str, tokens: u64, now: DateTime<Utc>) -> Availability {
        let mut cap = self.capacity();
        let Some(s) = cap.get_mut(provider) else {
            return Availability::Excluded;
        };
        if s.try_acquire(tokens, now) {
            return Availability::Now;
        }
        match s.availability(tokens, now) {
            // Free by the gates but refused: another request took it; look again shortly.
            Availability::Now => Availability::At(
                now + Duration::milliseconds(CONTENDED_WAIT_MS),
                Busy::Concurrency,
            ),
            other => other,
        }
    }

    /// The retry rule with this router's `max_attempts` (see [`retry::after_error`]).
    pub fn after_error(&self, class: ErrorClass, attempts: u32, jitter01: f64) -> Retry {
        retry::after_error(class, attempts, self.cfg.max_attempts, jitter01)
    }

    /// The price of the dearest pair that could serve the job at `now`: the "no routing"
    /// baseline each result is compared against.
    pub fn baseline_price(&self, job: &Job, now: DateTime<Utc>) -> Option<Price> {
        policy::dearest_price(job, &self.catalog, now)
    }

    /// Requests in flight at `provider`, as the capacity plan counts them.
    pub fn in_flight(&self, provider: &str) -> u32 {
        self.capacity()
            .providers
            .get(provider)
            .map_or(0, ProviderState::in_flight)
    }

    /// Each capacity key (a provider, or `provider/flex`) and whether its circuit is open at
    /// `now`, in name order (the worker's breaker gauge).
    pub fn circuits(&self, now: DateTime<Utc>) -> Vec<(String, bool)> {
        let cap = self.capacity();
        let mut v: Vec<(String, bool)> = cap
            .providers
            .iter()
            .map(|(k, s)| (k.clone(), s.circuit_open(now)))
            .collect();
        v.sort();
        v
    }

    /// Reservations held for deferred jobs.
    pub fn reservations(&self) -> usize {
        self.capacity().reservations()
    }
}

/// How long a job waits after another took the capacity it was planned for, before it is
/// routed again.
const CONTENDED_WAIT_MS: i64 = 50;

/// How long a runner waits in place for a job whose turn has come and that waits only for the
/// planner's pacing ([`Decision::Defer`]'s `due`): sent round the broker instead, it would land
/// at any worker and meet that one's pacing again (a 6-worker local run deferred such jobs up
/// to 20 times, 1.2 s each).
pub const DUE_INLINE_WAIT_S: f64 = 5.0;

/// The longest wait a runner takes in place rather than through the broker: its configured
/// `inline_wait_s`, or [`DUE_INLINE_WAIT_S`] for a job that is `due` (the worker's runner and
/// the market bench's engine both ask here).
pub fn in_place_wait_s(due: bool, inline_wait_s: f64) -> f64 {
    if due {
        inline_wait_s.max(DUE_INLINE_WAIT_S)
    } else {
        inline_wait_s
    }
}
