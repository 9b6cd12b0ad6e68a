//! The discrete-event simulation: a job trace meets the simulated providers through a fleet of
//! worker slots, on a simulated clock. Each policy decides per job step; the engine does what the
//! worker loop does around it (take a job when a slot frees, send, wait, retry with backoff,
//! defer back to the broker) and keeps the books.
//!
//! `offpeak` is the production code: the worker's [`Router`] (`decide`, `record`, the retry
//! rule), fed with outcomes exactly as the worker feeds it. `gateway` and `dearest` are the
//! baselines.

use crate::scenario::MarketScenario;
use crate::server::{Answer, Reply, Server};
use chrono::{DateTime, Duration, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use router::policy::candidates;
use router::{
    Availability, CallOutcome, Decision, ErrorClass, GiveUp, History, Retry, Router, RouterConfig,
    Ticket,
};
use schemas::catalog::Price;
use schemas::Usd;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;

/// What the simulated fleet runs with: the worker's router settings and its inline wait.
#[derive(Debug, Clone)]
pub struct PlannerConfig {
    pub router: RouterConfig,
    /// Waits up to this long are taken in place, holding the slot (seconds); longer ones go
    /// back to the broker.
    pub inline_wait_s: f64,
}

impl Default for PlannerConfig {
    fn default() -> Self {
        PlannerConfig {
            router: RouterConfig::default(),
            inline_wait_s: 0.5,
        }
    }
}

/// The routing policies the bench compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PolicyKind {
    /// Every job to the dearest eligible pair; 429s retried there after `Retry-After`.
    Dearest,
    /// Cheapest pair first, next cheapest at once on any error or 429; never waits.
    Gateway,
    /// offpeak's cost-first deferral (the production policy and capacity plan).
    Offpeak,
}

impl PolicyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyKind::Dearest => "dearest",
            PolicyKind::Gateway => "gateway",
            PolicyKind::Offpeak => "offpeak",
        }
    }
}

/// One provider's share of a run.
#[derive(Debug, Clone, Default)]
pub struct ProviderTally {
    pub name: String,
    pub jobs: usize,
    pub cost: Usd,
    pub requests: u64,
    pub rate_limited: u64,
    pub errors: u64,
}

/// The outcome of one policy on one scenario.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub policy: PolicyKind,
    pub jobs: usize,
    pub cost: Usd,
    pub completed: usize,
    /// Jobs that ended failed (never served).
    pub failed: usize,
    /// Jobs served after their deadline.
    pub late: usize,
    /// Last completion − first arrival.
    pub makespan: Duration,
    pub requests: u64,
    pub rate_limited: u64,
    pub errors: u64,
    /// Jobs served by a pair other than the cheapest one when first sent.
    pub escalated: usize,
    pub deferrals: u64,
    pub events: u64,
    pub providers: Vec<ProviderTally>,
    /// The first few misses: job id and why.
    pub missed: Vec<(String, String)>,
}

impl RunReport {
    /// Deadline misses: served late or never.
    pub fn misses(&self) -> usize {
        self.failed + self.late
    }
}

/// Per-job bookkeeping.
#[derive(Debug, Clone, Default)]
pub(crate) struct JobState {
    attempt: u32,
    /// Time spent deferred so far, and since when the job is deferred now (as the worker's
    /// envelope carries `deferred_ms` and `deferred_at`).
    waited: Duration,
    deferred_at: Option<DateTime<Utc>>,
    /// Gateway: index of the next candidate to try, and how many there are.
    next: usize,
    count: usize,
    /// Dearest: the fixed pair (provider index, model index).
    pair: Option<(usize, usize)>,
    /// The request in flight: price and whether it escalated.
    price: Option<Price>,
    escalated: bool,
    done: bool,
}

/// What a policy does with a job now.
pub(crate) enum Step {
    Send {
        provider: usize,
        price: Price,
        escalated: bool,
    },
    Wait(DateTime<Utc>),
    Fail(String),
}

/// What follows a request that came back.
pub(crate) enum After {
    Done,
    /// Route again at once, in the same slot.
    Retry,
    /// Count an attempt and back off.
    Backoff,
    /// Wait this long, holding no attempt against the job.
    Pause(Duration),
}

pub(crate) trait SimPolicy {
    fn step(
        &mut self,
        sc: &MarketScenario,
        j: usize,
        st: &mut JobState,
        now: DateTime<Utc>,
    ) -> Step;

    /// The production router this policy paces by, if any.
    fn router(&self) -> Option<&Router>;

    /// What follows an answer. By default, as the worker does: the answer is recorded with the
    /// router and the worker's retry rule says what comes next.
    fn outcome(
        &mut self,
        sc: &MarketScenario,
        _j: usize,
        st: &mut JobState,
        provider: usize,
        answer: &Answer,
        now: DateTime<Utc>,
    ) -> After {
        let Some(router) = self.router() else {
            return After::Done;
        };
        let name = &sc.catalog.providers[provider].name;
        router.record(name, call_outcome(answer), now);
        after(router, answer, st.attempt)
    }
}

/// Runs one policy over the scenario. `cfg` supplies the policy, breaker, attempts and inline
/// wait of the production worker.
pub fn run(sc: &MarketScenario, kind: PolicyKind, cfg: &PlannerConfig) -> RunReport {
    match kind {
        PolicyKind::Offpeak => Sim::new(sc, kind, cfg, Offpeak::new(sc, cfg)).run(),
        PolicyKind::Gateway => Sim::new(sc, kind, cfg, Gateway).run(),
        PolicyKind::Dearest => Sim::new(sc, kind, cfg, Dearest::new(sc, cfg)).run(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Ev {
    Arrive(usize),
    /// Back from a deferral: to the broker's ready queue.
    Wake(usize),
    /// An inline wait is over; the job still holds its slot.
    Resume(usize),
    Done(usize, usize, bool),
}

struct Sim<'s, P> {
    sc: &'s MarketScenario,
    policy: P,
    servers: Vec<Server>,
    answers: HashMap<usize, Answer>,
    rng: StdRng,
    events: BinaryHeap<Reverse<(i64, u64, Ev)>>,
    seq: u64,
    ready: VecDeque<usize>,
    free: usize,
    states: Vec<JobState>,
    max_attempts: u32,
    inline_ms: i64,
    r: RunReport,
    first_arrival: Option<DateTime<Utc>>,
    last_done: Option<DateTime<Utc>>,
}

impl<'s, P: SimPolicy> Sim<'s, P> {
    fn new(sc: &'s MarketScenario, kind: PolicyKind, cfg: &PlannerConfig, policy: P) -> Self {
        let servers = sc
            .servers
            .iter()
            .enumerate()
            .map(|(i, s)| Server::new(s.clone(), sc.start, sc.seed ^ (0x9e37 * (i as u64 + 1))))
            .collect();
        Sim {
            sc,
            policy,
            servers,
            answers: HashMap::new(),
            rng: StdRng::seed_from_u64(sc.seed.wrapping_add(17)),
            events: BinaryHeap::new(),
            seq: 0,
            ready: VecDeque::new(),
            free: sc.fleet.concurrency.max(1),
            states: vec![JobState::default(); sc.jobs.len()],
            max_attempts: cfg.router.max_attempts.max(1),
            inline_ms: (cfg.inline_wait_s * 1000.0) as i64,
            r: RunReport {
                policy: kind,
                jobs: sc.jobs.len(),
                cost: Usd::ZERO,
                completed: 0,
                failed: 0,
                late: 0,
                makespan: Duration::zero(),
                requests: 0,
                rate_limited: 0,
                errors: 0,
                escalated: 0,
                deferrals: 0,
                events: 0,
                missed: vec![],
                providers: sc
                    .servers
                    .iter()
                    .map(|s| ProviderTally {
                        name: s.name.clone(),
                        ..Default::default()
                    })
                    .collect(),
            },
            first_arrival: None,
            last_done: None,
        }
    }

    fn ms(&self, t: DateTime<Utc>) -> i64 {
        (t - self.sc.start).num_milliseconds()
    }

    fn at(&self, ms: i64) -> DateTime<Utc> {
        self.sc.start + Duration::milliseconds(ms)
    }

    fn push(&mut self, t: DateTime<Utc>, ev: Ev) {
        self.seq += 1;
        let ms = self.ms(t);
        self.events.push(Reverse((ms, self.seq, ev)));
    }

    fn run(mut self) -> RunReport {
        for (i, j) in self.sc.jobs.iter().enumerate() {
            self.first_arrival = Some(self.first_arrival.map_or(j.arrival, |f| f.min(j.arrival)));
            self.push(j.arrival, Ev::Arrive(i));
        }
        while let Some(Reverse((ms, _, ev))) = self.events.pop() {
            self.r.events += 1;
            let now = self.at(ms);
            match ev {
                Ev::Arrive(j) | Ev::Wake(j) => self.ready.push_back(j),
                Ev::Resume(j) => self.task(j, now),
                Ev::Done(j, p, accepted) => self.done(j, p, accepted, now),
            }
            while self.free > 0 {
                let Some(j) = self.ready.pop_front() else {
                    break;
                };
                self.free -= 1;
                self.task(j, now);
            }
        }
        if let (Some(a), Some(b)) = (self.first_arrival, self.last_done) {
            self.r.makespan = b - a;
        }
        self.r
    }

    /// The job holds a slot: route it; it is sent, waits, or ends.
    fn task(&mut self, j: usize, now: DateTime<Utc>) {
        let st = &mut self.states[j];
        if let Some(at) = st.deferred_at.take() {
            st.waited += now - at;
        }
        match self.policy.step(self.sc, j, &mut self.states[j], now) {
            Step::Send {
                provider,
                price,
                escalated,
            } => {
                let tj = &self.sc.jobs[j];
                let answer =
                    self.servers[provider].request(now, tj.limit_tokens(), tj.output_tokens);
                let st = &mut self.states[j];
                st.price = Some(price);
                st.escalated = escalated;
                self.r.requests += 1;
                self.r.providers[provider].requests += 1;
                self.answers.insert(j, answer);
                self.push(now + answer.latency, Ev::Done(j, provider, answer.accepted));
            }
            Step::Wait(until) => {
                let wait = (until - now).num_milliseconds();
                if wait <= self.inline_ms {
                    // The runner sleeps short waits in place, holding its slot.
                    self.push(now + Duration::milliseconds(wait.max(5)), Ev::Resume(j));
                } else {
                    self.defer(j, until, now);
                }
            }
            Step::Fail(why) => self.end(j, now, false, why),
        }
    }

    fn done(&mut self, j: usize, p: usize, accepted: bool, now: DateTime<Utc>) {
        if accepted {
            self.servers[p].finish();
        }
        let Some(answer) = self.answers.remove(&j) else {
            return;
        };
        match answer.reply {
            Reply::Ok => {}
            Reply::RateLimited(_) => {
                self.r.rate_limited += 1;
                self.r.providers[p].rate_limited += 1;
            }
            Reply::Transient(_) => {
                self.r.errors += 1;
                self.r.providers[p].errors += 1;
            }
        }
        let after = self
            .policy
            .outcome(self.sc, j, &mut self.states[j], p, &answer, now);
        match after {
            After::Done => {
                let tj = &self.sc.jobs[j];
                let st = &mut self.states[j];
                let price = st.price.unwrap_or(Price {
                    input_per_mtok: 0.0,
                    output_per_mtok: 0.0,
                });
                let cost = price.cost(tj.input_tokens, tj.output_tokens);
                self.r.cost += cost;
                self.r.providers[p].cost += cost;
                self.r.providers[p].jobs += 1;
                if st.escalated {
                    self.r.escalated += 1;
                }
                self.end(j, now, true, String::new());
            }
            After::Retry => self.task(j, now),
            After::Backoff | After::Pause(_) => {
                let st = &mut self.states[j];
                let until = if let After::Pause(d) = after {
                    now + d
                } else {
                    // The worker's retry rule for a transient error.
                    st.attempt += 1;
                    let jitter = self.rng.random::<f64>();
                    match router::after_error(
                        ErrorClass::Transient,
                        st.attempt,
                        self.max_attempts,
                        jitter,
                    ) {
                        Retry::Backoff(wait) => {
                            now + Duration::milliseconds(wait.as_millis() as i64)
                        }
                        Retry::Reroute => now,
                        Retry::GiveUp(_) => {
                            let why = format!(
                                "gave up after {} attempts: {:?}",
                                st.attempt, answer.reply
                            );
                            self.end(j, now, false, why);
                            return;
                        }
                    }
                };
                if (until - now).num_milliseconds() <= self.inline_ms {
                    self.push(until, Ev::Resume(j));
                } else {
                    self.defer(j, until, now);
                }
            }
        }
    }

    /// Back to the broker until `until`: the slot frees, the wait counts as deferred.
    fn defer(&mut self, j: usize, until: DateTime<Utc>, now: DateTime<Utc>) {
        self.r.deferrals += 1;
        self.free += 1;
        self.states[j].deferred_at = Some(now);
        self.push(until, Ev::Wake(j));
    }

    fn end(&mut self, j: usize, now: DateTime<Utc>, served: bool, why: String) {
        self.free += 1;
        let st = &mut self.states[j];
        if st.done {
            return;
        }
        st.done = true;
        let tj = &self.sc.jobs[j];
        let mut miss = None;
        if served {
            self.r.completed += 1;
            if now > tj.deadline {
                self.r.late += 1;
                miss = Some(format!(
                    "served {}s late",
                    (now - tj.deadline).num_seconds()
                ));
            }
            self.last_done = Some(self.last_done.map_or(now, |t| t.max(now)));
        } else {
            self.r.failed += 1;
            miss = Some(why);
        }
        if let Some(why) = miss.filter(|_| self.r.missed.len() < 20) {
            self.r.missed.push((tj.id.clone(), why));
        }
    }
}

fn provider_index(sc: &MarketScenario) -> HashMap<String, usize> {
    sc.catalog
        .providers
        .iter()
        .enumerate()
        .map(|(i, p)| (p.name.clone(), i))
        .collect()
}

/// A simulated answer as the router's [`CallOutcome`], as the worker reports a real one.
fn call_outcome(answer: &Answer) -> CallOutcome {
    match answer.reply {
        Reply::Ok => CallOutcome::Answered {
            latency: answer.latency.to_std().unwrap_or_default(),
        },
        Reply::RateLimited(retry_after) => CallOutcome::Failed {
            class: ErrorClass::RateLimited,
            retry_after,
        },
        Reply::Transient(_) => CallOutcome::Failed {
            class: ErrorClass::Transient,
            retry_after: None,
        },
    }
}

/// What follows an answer, by the worker's retry rule: done, route again (a 429; the router
/// blocked the provider for its `Retry-After`), or back off (counted in [`Sim::done`]).
fn after(router: &Router, answer: &Answer, attempts: u32) -> After {
    let class = match call_outcome(answer) {
        CallOutcome::Failed { class, .. } => class,
        _ => return After::Done,
    };
    match router.after_error(class, attempts + u32::from(class.counts_as_attempt()), 0.0) {
        Retry::Reroute => After::Retry,
        Retry::Backoff(_) | Retry::GiveUp(GiveUp::Exhausted(_)) => After::Backoff,
        Retry::GiveUp(GiveUp::Terminal) => After::Backoff,
    }
}

/// offpeak: the production router.
struct Offpeak {
    router: Router,
    index: HashMap<String, usize>,
}

impl Offpeak {
    fn new(sc: &MarketScenario, cfg: &PlannerConfig) -> Self {
        Offpeak {
            router: Router::new(Arc::new(sc.catalog.clone()), cfg.router.clone(), sc.start),
            index: provider_index(sc),
        }
    }
}

impl SimPolicy for Offpeak {
    fn step(
        &mut self,
        sc: &MarketScenario,
        j: usize,
        st: &mut JobState,
        now: DateTime<Utc>,
    ) -> Step {
        let tj = &sc.jobs[j];
        let job = tj.job();
        let ticket = Ticket {
            job: &job,
            key: &tj.id,
            history: History {
                waited: st.waited,
                failures: st.attempt,
                batches: 0,
            },
        };
        match self.router.decide(&ticket, now) {
            // The simulated market has no batch route yet: realtime at the batch price would
            // flatter offpeak, so such a decision is sent realtime at the realtime price.
            Decision::Batch { to, reason } => {
                st.escalated = reason.is_escalation();
                let price = to.offer.price_at(now);
                Step::Send {
                    provider: self.index[to.provider.name.as_str()],
                    price,
                    escalated: st.escalated,
                }
            }
            Decision::Dispatch { to, reason } => {
                st.escalated = reason.is_escalation();
                Step::Send {
                    provider: self.index[to.provider.name.as_str()],
                    price: to.price,
                    escalated: st.escalated,
                }
            }
            Decision::Defer { until, .. } => Step::Wait(until),
            Decision::Fail { kind, reason } => Step::Fail(format!("{kind}: {reason}")),
        }
    }

    fn router(&self) -> Option<&Router> {
        Some(&self.router)
    }
}

/// The usual gateway: cheapest first, the next one at once on any error or 429, no waiting.
struct Gateway;

impl SimPolicy for Gateway {
    fn router(&self) -> Option<&Router> {
        None
    }

    fn step(
        &mut self,
        sc: &MarketScenario,
        j: usize,
        st: &mut JobState,
        now: DateTime<Utc>,
    ) -> Step {
        let tj = &sc.jobs[j];
        if now >= tj.deadline {
            return Step::Fail("deadline passed".into());
        }
        let job = tj.job();
        let ranked = candidates(&job, &sc.catalog, &|_| Availability::Now, now);
        if ranked.is_empty() {
            return Step::Fail("no provider".into());
        }
        if st.next >= ranked.len() {
            st.next = 0;
        }
        let c = &ranked[st.next];
        let provider = sc
            .catalog
            .providers
            .iter()
            .position(|p| p.name == c.provider.name)
            .unwrap_or(0);
        st.count = ranked.len();
        Step::Send {
            provider,
            price: c.price,
            escalated: st.next > 0,
        }
    }

    fn outcome(
        &mut self,
        _sc: &MarketScenario,
        _j: usize,
        st: &mut JobState,
        _provider: usize,
        answer: &Answer,
        _now: DateTime<Utc>,
    ) -> After {
        if answer.reply == Reply::Ok {
            return After::Done;
        }
        st.next += 1;
        if st.next < st.count {
            return After::Retry;
        }
        // Every pair refused: like a client of a gateway, try the round again after a backoff
        // (1 s, 2 s, 4 s… at most a minute), until the deadline.
        st.next = 0;
        st.attempt += 1;
        let s = 2f64.powi(st.attempt.min(6) as i32 - 1).min(60.0);
        After::Pause(Duration::milliseconds((s * 1000.0) as i64))
    }
}

/// Everything to the dearest eligible pair, paced by the worker's capacity state.
struct Dearest {
    router: Router,
}

impl Dearest {
    fn new(sc: &MarketScenario, cfg: &PlannerConfig) -> Self {
        Dearest {
            router: Router::new(Arc::new(sc.catalog.clone()), cfg.router.clone(), sc.start),
        }
    }
}

impl SimPolicy for Dearest {
    fn step(
        &mut self,
        sc: &MarketScenario,
        j: usize,
        st: &mut JobState,
        now: DateTime<Utc>,
    ) -> Step {
        let tj = &sc.jobs[j];
        if now >= tj.deadline {
            return Step::Fail("deadline passed".into());
        }
        let job = tj.job();
        if st.pair.is_none() {
            let ranked = candidates(&job, &sc.catalog, &|_| Availability::Now, now);
            let Some(c) = ranked.last() else {
                return Step::Fail("no provider".into());
            };
            let p = sc
                .catalog
                .providers
                .iter()
                .position(|p| p.name == c.provider.name)
                .unwrap_or(0);
            let m = sc.catalog.providers[p]
                .models
                .iter()
                .position(|m| m.id == c.offer.id)
                .unwrap_or(0);
            st.pair = Some((p, m));
        }
        let (p, m) = st.pair.unwrap_or((0, 0));
        let spec = &sc.catalog.providers[p];
        let tokens = tj.limit_tokens();
        match self.router.acquire(&spec.name, tokens, now) {
            Availability::Now => Step::Send {
                provider: p,
                price: spec.models[m].price_at(now),
                escalated: false,
            },
            Availability::At(t, _) => Step::Wait(t),
            Availability::Excluded => Step::Wait(now + Duration::seconds(60)),
        }
    }

    fn router(&self) -> Option<&Router> {
        Some(&self.router)
    }
}
