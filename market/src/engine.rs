//! The discrete-event simulation: a job trace meets the simulated providers through a fleet of
//! worker slots, on a simulated clock. Each policy decides per job step; the engine does what the
//! worker loop does around it (take a job when a slot frees, send, wait, retry with backoff,
//! defer back to the broker) and keeps the books.
//!
//! `offpeak` is the production code: the worker's [`Router`] (`decide`, `record`, the retry
//! rule), fed with outcomes exactly as the worker feeds it. `gateway`, `diy-batch` and
//! `dearest` are the baselines.
//!
//! A fleet of several workers (`PlannerConfig::workers`) runs one planner per worker, as
//! production does: each with its own router planning with its share of every provider's
//! account-wide limits ([`FleetShare`]), the fleet's slots divided among them, a job taken by a
//! slot decided by that slot's worker, a deferred job back on the shared queue for whichever
//! worker takes it next, and the routers' findings (faults, rate-limit blocks) shared every
//! heartbeat. The simulated providers stay one shared market: their limits are account-wide.
//!
//! Routes: a flex dispatch goes to the provider's flex tier (a server of its own); a batch
//! decision frees the job's slot and hands the job to the fleet's gatherer for its (provider,
//! model) ([`crate::batch`]); when the batch ends, its done lines are served at the batch price
//! and the rest go back to the queue to finish realtime.

use crate::batch::{self, Fate, Gather, SimBatch};
use crate::scenario::MarketScenario;
use crate::server::{Answer, Reply, Server};
use chrono::{DateTime, Duration, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use router::policy::{candidates, capacity_key, realtime_candidates};
use router::{
    Availability, CallOutcome, Decision, ErrorClass, FleetShare, GiveUp, History, PolicyConfig,
    Retry, Router, RouterConfig, SharedFault, Ticket,
};
use schemas::catalog::Price;
use schemas::{Priority, Route, Turn, Usd};
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
    /// Workers the fleet's slots are divided among, each with a planner of its own (a policy
    /// that holds state holds it per worker). 1: one planner for the whole fleet.
    pub workers: usize,
    /// Whether each worker's router plans with its share of the account-wide limits
    /// ([`FleetShare`], as production does). `false` gives every worker the whole limits, as
    /// before the fleet shared them: the comparison that shows what the share is worth.
    pub share_limits: bool,
    /// How often the workers share their findings (faults, rate-limit blocks), in simulated
    /// seconds: the production heartbeat.
    pub heartbeat_s: f64,
}

impl Default for PlannerConfig {
    fn default() -> Self {
        PlannerConfig {
            router: RouterConfig::default(),
            inline_wait_s: 0.5,
            workers: 1,
            share_limits: true,
            heartbeat_s: 2.0,
        }
    }
}

impl PlannerConfig {
    /// Worker `rank`'s place in the fleet, as its router is told it.
    fn share(&self, rank: usize) -> FleetShare {
        if self.share_limits {
            FleetShare::new(self.workers.max(1) as u32, rank as u32)
        } else {
            FleetShare::default()
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
    /// Do-it-yourself batching: every deferrable job through the cheapest batch API that
    /// promises its turnaround in time, what comes back resubmitted as the gateway does.
    DiyBatch,
}

impl PolicyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyKind::Dearest => "dearest",
            PolicyKind::Gateway => "gateway",
            PolicyKind::Offpeak => "offpeak",
            PolicyKind::DiyBatch => "diy-batch",
        }
    }
}

/// Jobs served and their cost on one route.
#[derive(Debug, Clone, Copy)]
pub struct RouteTally {
    pub route: Route,
    pub jobs: usize,
    pub cost: Usd,
}

/// The provider batches of a run.
#[derive(Debug, Clone, Copy, Default)]
pub struct BatchTally {
    /// Batches submitted.
    pub submitted: u64,
    /// Batches that ended expired (part-done).
    pub expired: u64,
    /// Batches cancelled because their jobs' safe time came.
    pub cancelled: u64,
    /// Lines given back to the queue (errors, expired, cancelled): they went realtime.
    pub lines_back: u64,
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
    /// Workers (planners) the fleet ran with.
    pub workers: usize,
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
    /// Served jobs and cost per route: realtime, flex, batch.
    pub routes: [RouteTally; 3],
    pub batches: BatchTally,
    /// The first few misses: job id and why.
    pub missed: Vec<(String, String)>,
}

impl RunReport {
    /// Deadline misses: served late or never.
    pub fn misses(&self) -> usize {
        self.failed + self.late
    }

    /// Jobs served and their cost on `route`.
    pub fn route(&self, route: Route) -> RouteTally {
        self.routes[route_index(route)]
    }

    /// The part of the requests sent that came back 429 (0 when none was sent).
    pub fn rate_limited_share(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.rate_limited as f64 / self.requests as f64
        }
    }
}

fn route_index(route: Route) -> usize {
    match route {
        Route::Realtime => 0,
        Route::Flex => 1,
        Route::Batch => 2,
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
    /// The request in flight: price, route (realtime when `None`) and whether it escalated.
    price: Option<Price>,
    route: Option<Route>,
    escalated: bool,
    /// Provider batches that carried the job and gave it back.
    batches: u32,
    /// The turn the job was promised when it was last deferred through the queue (the
    /// envelope's `turn`), and the one the latest decision holds (carried if it goes back).
    turn: Option<Turn>,
    next_turn: Option<Turn>,
    done: bool,
    /// The worker whose slot holds the job (meaningful while it holds one).
    worker: usize,
}

/// What a policy does with a job now.
pub(crate) enum Step {
    Send {
        provider: usize,
        price: Price,
        escalated: bool,
        route: Route,
    },
    /// Gather into a batch of the provider's offer (index into its `models`).
    Batch {
        provider: usize,
        offer: usize,
    },
    /// Wait until then; `true` when the job's turn has come and it waits only for the
    /// planner's pacing (waited in place up to [`router::DUE_INLINE_WAIT_S`]).
    Wait(DateTime<Utc>, bool),
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

    /// Whether a batch still running at its jobs' earliest safe time is cancelled (offpeak's
    /// poller does; someone batching by hand waits for the batch to end).
    fn cancels_late_batches(&self) -> bool {
        self.router().is_some()
    }

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
        let key = capacity_key(name, st.route.unwrap_or(Route::Realtime));
        router.record(&key, call_outcome(answer), now);
        after(router, answer, st.attempt)
    }
}

/// Runs one policy over the scenario. `cfg` supplies the policy, breaker, attempts and inline
/// wait of the production worker, and how many workers the fleet has.
pub fn run(sc: &MarketScenario, kind: PolicyKind, cfg: &PlannerConfig) -> RunReport {
    let workers = 0..cfg.workers.max(1);
    match kind {
        PolicyKind::Offpeak => {
            let each = workers.map(|w| Offpeak::new(sc, cfg, cfg.share(w)));
            Sim::new(sc, kind, cfg, each.collect()).run()
        }
        PolicyKind::Gateway => Sim::new(sc, kind, cfg, workers.map(|_| Gateway).collect()).run(),
        PolicyKind::Dearest => {
            let each = workers.map(|w| Dearest::new(sc, cfg, cfg.share(w)));
            Sim::new(sc, kind, cfg, each.collect()).run()
        }
        PolicyKind::DiyBatch => {
            Sim::new(sc, kind, cfg, workers.map(|_| DiyBatch(Gateway)).collect()).run()
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Ev {
    Arrive(usize),
    /// Back from a deferral: to the broker's ready queue.
    Wake(usize),
    /// An inline wait is over; the job still holds its slot.
    Resume(usize),
    /// A request is back: job, server, whether the server accepted it.
    Done(usize, usize, bool),
    /// A gathering is old enough to submit: gather key, generation.
    Gathered(usize, u64),
    /// A batch ends by itself.
    BatchEnd(usize),
    /// Its jobs' earliest safe time: cancel the batch if it still runs.
    BatchSafe(usize),
    /// The workers share what their routers found (only with more than one worker).
    Heartbeat,
}

struct Sim<'s, P> {
    sc: &'s MarketScenario,
    /// One policy per worker; `free[w]` is worker `w`'s free slots.
    policies: Vec<P>,
    policy_cfg: PolicyConfig,
    /// Realtime servers (one per provider) then flex tiers; `flex_of[p]` indexes provider
    /// `p`'s flex server, `provider_of[s]` the provider of server `s`.
    servers: Vec<Server>,
    flex_of: Vec<Option<usize>>,
    provider_of: Vec<usize>,
    gathers: Vec<Gather>,
    gather_of: HashMap<(usize, usize), usize>,
    gather_keys: Vec<(usize, usize)>,
    batches: Vec<SimBatch>,
    /// Batches created so far per provider.
    batch_numbers: Vec<u32>,
    batch_rng: StdRng,
    answers: HashMap<usize, Answer>,
    rng: StdRng,
    events: BinaryHeap<Reverse<(i64, u64, Ev)>>,
    seq: u64,
    ready: VecDeque<usize>,
    free: Vec<usize>,
    /// The worker offered the next job first: the workers take turns at the queue.
    turn: usize,
    heartbeat: Duration,
    states: Vec<JobState>,
    max_attempts: u32,
    inline_ms: i64,
    r: RunReport,
    first_arrival: Option<DateTime<Utc>>,
    last_done: Option<DateTime<Utc>>,
}

impl<'s, P: SimPolicy> Sim<'s, P> {
    fn new(
        sc: &'s MarketScenario,
        kind: PolicyKind,
        cfg: &PlannerConfig,
        policies: Vec<P>,
    ) -> Self {
        let mut servers: Vec<Server> = sc
            .servers
            .iter()
            .enumerate()
            .map(|(i, s)| Server::new(s.clone(), sc.start, sc.seed ^ (0x9e37 * (i as u64 + 1))))
            .collect();
        let mut provider_of: Vec<usize> = (0..servers.len()).collect();
        let mut flex_of = vec![None; sc.servers.len()];
        for (p, f) in sc.flex.iter().enumerate() {
            if let Some(f) = f {
                flex_of[p] = Some(servers.len());
                provider_of.push(p);
                let seed = sc.seed ^ (0x7f4a_7c15 * (p as u64 + 1));
                servers.push(Server::new(f.clone(), sc.start, seed));
            }
        }
        // The fleet's slots dealt out to the workers: slot `s` is worker `s % n`'s.
        let (slots, n) = (sc.fleet.concurrency.max(1), policies.len().max(1));
        let free = (0..n)
            .map(|w| slots / n + usize::from(w < slots % n))
            .collect();
        Sim {
            sc,
            policies,
            policy_cfg: cfg.router.policy.clone(),
            servers,
            flex_of,
            provider_of,
            gathers: Vec::new(),
            gather_of: HashMap::new(),
            gather_keys: Vec::new(),
            batches: Vec::new(),
            batch_numbers: vec![0; sc.servers.len()],
            batch_rng: StdRng::seed_from_u64(sc.seed.wrapping_add(0xba7c)),
            answers: HashMap::new(),
            rng: StdRng::seed_from_u64(sc.seed.wrapping_add(17)),
            events: BinaryHeap::new(),
            seq: 0,
            ready: VecDeque::new(),
            free,
            turn: 0,
            heartbeat: Duration::milliseconds((cfg.heartbeat_s.max(0.001) * 1000.0) as i64),
            states: vec![JobState::default(); sc.jobs.len()],
            max_attempts: cfg.router.max_attempts.max(1),
            inline_ms: (cfg.inline_wait_s * 1000.0) as i64,
            r: RunReport {
                policy: kind,
                workers: n,
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
                routes: [Route::Realtime, Route::Flex, Route::Batch].map(|route| RouteTally {
                    route,
                    jobs: 0,
                    cost: Usd::ZERO,
                }),
                batches: BatchTally::default(),
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
        if self.policies.len() > 1 {
            let first = self.first_arrival.unwrap_or(self.sc.start);
            self.push(first + self.heartbeat, Ev::Heartbeat);
        }
        while let Some(Reverse((ms, _, ev))) = self.events.pop() {
            self.r.events += 1;
            let now = self.at(ms);
            match ev {
                Ev::Arrive(j) | Ev::Wake(j) => self.ready.push_back(j),
                Ev::Resume(j) => self.task(j, now),
                Ev::Done(j, s, accepted) => self.done(j, s, accepted, now),
                Ev::Gathered(g, generation) => {
                    if self.gathers[g].generation == generation {
                        self.submit(g, now);
                    }
                }
                Ev::BatchEnd(b) => self.batch_over(b, now, false),
                Ev::BatchSafe(b) => self.batch_over(b, now, true),
                Ev::Heartbeat => self.share_findings(now),
            }
            while !self.ready.is_empty() {
                let Some(w) = self.worker_with_a_free_slot() else {
                    break;
                };
                let Some(j) = self.ready.pop_front() else {
                    break;
                };
                self.free[w] -= 1;
                self.states[j].worker = w;
                self.task(j, now);
            }
        }
        if let (Some(a), Some(b)) = (self.first_arrival, self.last_done) {
            self.r.makespan = b - a;
        }
        self.r
    }

    /// The next worker, in turn, that has a slot free to take a job from the queue.
    fn worker_with_a_free_slot(&mut self) -> Option<usize> {
        let n = self.free.len();
        let w = (0..n)
            .map(|k| (self.turn + k) % n)
            .find(|&w| self.free[w] > 0)?;
        self.turn = (w + 1) % n;
        Some(w)
    }

    /// Job `j` gives its worker's slot back.
    fn release(&mut self, j: usize) {
        self.free[self.states[j].worker] += 1;
    }

    /// The heartbeat: every router's findings go to every router, as the workers' heartbeats
    /// carry them over the broker; the next one follows while anything else is still to happen.
    fn share_findings(&mut self, now: DateTime<Utc>) {
        let routers: Vec<&Router> = self.policies.iter().filter_map(|p| p.router()).collect();
        let found: Vec<SharedFault> = routers.iter().flat_map(|r| r.findings(now)).collect();
        if !found.is_empty() {
            for r in &routers {
                r.apply_findings(&found, now);
            }
        }
        if !self.events.is_empty() {
            self.push(now + self.heartbeat, Ev::Heartbeat);
        }
    }

    /// The job holds a slot: route it; it is sent, waits, or ends.
    fn task(&mut self, j: usize, now: DateTime<Utc>) {
        let st = &mut self.states[j];
        if let Some(at) = st.deferred_at.take() {
            st.waited += now - at;
        }
        let w = st.worker;
        match self.policies[w].step(self.sc, j, &mut self.states[j], now) {
            Step::Send {
                provider,
                price,
                escalated,
                route,
            } => {
                let tj = &self.sc.jobs[j];
                let server = match route {
                    Route::Flex => self.flex_of[provider].unwrap_or(provider),
                    _ => provider,
                };
                let answer = self.servers[server].request(now, tj.limit_tokens(), tj.output_tokens);
                let st = &mut self.states[j];
                st.price = Some(price);
                st.route = Some(route);
                st.escalated = escalated;
                self.r.requests += 1;
                self.r.providers[provider].requests += 1;
                self.answers.insert(j, answer);
                self.push(now + answer.latency, Ev::Done(j, server, answer.accepted));
            }
            Step::Batch { provider, offer } => {
                // The job is recorded with the gathering and acknowledged: its slot frees.
                self.release(j);
                self.gather(j, provider, offer, now);
            }
            Step::Wait(until, due) => {
                let wait = (until - now).num_milliseconds();
                let in_place_s = router::in_place_wait_s(due, self.inline_ms as f64 / 1000.0);
                if wait as f64 <= in_place_s * 1000.0 {
                    // The runner sleeps short waits in place, holding its slot.
                    self.push(now + Duration::milliseconds(wait.max(5)), Ev::Resume(j));
                } else {
                    self.defer(j, until, now);
                }
            }
            Step::Fail(why) => {
                self.release(j);
                self.end(j, now, false, why);
            }
        }
    }

    fn done(&mut self, j: usize, server: usize, accepted: bool, now: DateTime<Utc>) {
        if accepted {
            self.servers[server].finish();
        }
        let p = self.provider_of[server];
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
        let w = self.states[j].worker;
        let after = self.policies[w].outcome(self.sc, j, &mut self.states[j], p, &answer, now);
        match after {
            After::Done => {
                let tj = &self.sc.jobs[j];
                let st = &mut self.states[j];
                let price = st.price.unwrap_or(Price {
                    input_per_mtok: 0.0,
                    output_per_mtok: 0.0,
                });
                let cost = price.cost(tj.input_tokens, tj.output_tokens);
                let route = st.route.unwrap_or(Route::Realtime);
                if st.escalated {
                    self.r.escalated += 1;
                }
                self.bill(p, route, cost);
                self.release(j);
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
                            self.release(j);
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
        self.release(j);
        let st = &mut self.states[j];
        st.deferred_at = Some(now);
        st.turn = st.next_turn.take();
        self.push(until, Ev::Wake(j));
    }

    fn bill(&mut self, p: usize, route: Route, cost: Usd) {
        self.r.cost += cost;
        self.r.providers[p].cost += cost;
        self.r.providers[p].jobs += 1;
        let t = &mut self.r.routes[route_index(route)];
        t.cost += cost;
        t.jobs += 1;
    }

    /// Adds the job to its (provider, offer)'s gathering; a full gathering is submitted at
    /// once, a new one is submitted when it is `fleet.batch_gather` old.
    fn gather(&mut self, j: usize, provider: usize, offer: usize, now: DateTime<Utc>) {
        let g = match self.gather_of.get(&(provider, offer)) {
            Some(g) => *g,
            None => {
                self.gathers.push(Gather::default());
                self.gather_keys.push((provider, offer));
                self.gather_of
                    .insert((provider, offer), self.gathers.len() - 1);
                self.gathers.len() - 1
            }
        };
        if self.gathers[g].jobs.is_empty() {
            let generation = self.gathers[g].generation;
            self.push(now + self.sc.fleet.gather(), Ev::Gathered(g, generation));
        }
        self.gathers[g].jobs.push(j);
        let spec = &self.sc.catalog.providers[provider].models[offer];
        let cap = self
            .sc
            .fleet
            .batch_max_requests
            .or(spec
                .batch
                .as_ref()
                .and_then(|b| b.max_requests.map(|n| n as usize)))
            .unwrap_or(usize::MAX)
            .max(1);
        if self.gathers[g].jobs.len() >= cap {
            self.submit(g, now);
        }
    }

    /// Submits gathering `g` as one provider batch and draws its fate.
    fn submit(&mut self, g: usize, now: DateTime<Utc>) {
        let gather = &mut self.gathers[g];
        gather.generation += 1;
        let jobs = std::mem::take(&mut gather.jobs);
        if jobs.is_empty() {
            return;
        }
        let (provider, offer) = self.gather_keys[g];
        let spec = &self.sc.catalog.providers[provider].models[offer];
        let window = spec.batch.as_ref().map_or(Duration::days(1), |b| {
            Duration::from_std(b.window).unwrap_or(Duration::days(1))
        });
        let price = spec
            .route_price_at(Route::Batch, now)
            .unwrap_or_else(|| spec.price_at(now));
        self.batch_numbers[provider] += 1;
        let number = self.batch_numbers[provider];
        let market = self.sc.servers[provider]
            .batch
            .clone()
            .unwrap_or_else(|| crate::scenario::BatchSpec::fixed(window));
        let (turnaround, ends, fate) =
            batch::draw(&market, window, number, now, &mut self.batch_rng);
        let safe = jobs
            .iter()
            .map(|&j| self.policy_cfg.batch_safe_time(&self.sc.jobs[j].job()))
            .min()
            .unwrap_or(ends);
        let b = self.batches.len();
        self.batches.push(SimBatch {
            provider,
            offer,
            jobs,
            created: now,
            price,
            turnaround,
            fate,
            ended: false,
        });
        self.r.batches.submitted += 1;
        self.push(ends, Ev::BatchEnd(b));
        if self.policies[0].cancels_late_batches() && safe < ends {
            self.push(safe.max(now), Ev::BatchSafe(b));
        }
    }

    /// Batch `b` ends (by itself, or cancelled at its jobs' safe time): its done lines are
    /// served at the batch price, the rest go back to the queue, flagged so they go realtime.
    fn batch_over(&mut self, b: usize, now: DateTime<Utc>, cancel: bool) {
        let batch = &mut self.batches[b];
        if batch.ended {
            return;
        }
        batch.ended = true;
        let batch = batch.clone();
        let done = if cancel {
            self.r.batches.cancelled += 1;
            batch.done_by(now)
        } else {
            match batch.fate {
                Fate::Completed => 1.0,
                Fate::Expired(done) => {
                    self.r.batches.expired += 1;
                    done
                }
            }
        };
        let spec = &self.sc.catalog.providers[batch.provider];
        // The fleet gathers batches as one here: every worker's router learns the turnaround.
        let model = &spec.models[batch.offer].model;
        for router in self.policies.iter().filter_map(|p| p.router()) {
            router.observe_turnaround(&spec.name, model, now - batch.created);
        }
        let line_errors = self.sc.servers[batch.provider]
            .batch
            .as_ref()
            .map_or(0.0, |s| s.line_errors);
        let finished = (done * batch.jobs.len() as f64).floor() as usize;
        for (i, &j) in batch.jobs.iter().enumerate() {
            let failed = line_errors > 0.0 && self.batch_rng.random::<f64>() < line_errors;
            if i < finished && !failed {
                let tj = &self.sc.jobs[j];
                let cost = batch.price.cost(tj.input_tokens, tj.output_tokens);
                self.bill(batch.provider, Route::Batch, cost);
                self.end(j, now, true, String::new());
            } else {
                self.r.batches.lines_back += 1;
                self.states[j].batches += 1;
                self.push(now, Ev::Wake(j));
            }
        }
    }

    fn end(&mut self, j: usize, now: DateTime<Utc>, served: bool, why: String) {
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
    /// A worker's planner, with its share of the fleet.
    fn new(sc: &MarketScenario, cfg: &PlannerConfig, share: FleetShare) -> Self {
        let router = Router::new(Arc::new(sc.catalog.clone()), cfg.router.clone(), sc.start);
        router.set_fleet(share);
        Offpeak {
            router,
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
                batches: st.batches,
            },
            turn: st.turn.as_ref(),
        };
        let decision = self.router.decide(&ticket, now);
        st.next_turn = decision.turn().cloned();
        if !matches!(decision, Decision::Defer { .. }) {
            st.turn = None;
        }
        match decision {
            Decision::Batch { to, reason } => {
                st.escalated = reason.is_escalation();
                let provider = self.index[to.provider.name.as_str()];
                Step::Batch {
                    provider,
                    offer: offer_index(sc, provider, to.offer),
                }
            }
            Decision::Dispatch { to, reason } => {
                st.escalated = reason.is_escalation();
                Step::Send {
                    provider: self.index[to.provider.name.as_str()],
                    price: to.price,
                    escalated: st.escalated,
                    route: to.route,
                }
            }
            Decision::Defer { until, due, .. } => Step::Wait(until, due),
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
        // Gateways route realtime only: they know neither batch APIs nor flex tiers.
        let ranked = realtime_candidates(&job, &sc.catalog, &|_| Availability::Now, now);
        if ranked.is_empty() {
            return Step::Fail("no provider".into());
        }
        if st.next >= ranked.len() {
            st.next = 0;
        }
        let c = &ranked[st.next];
        let provider = provider_position(sc, &c.provider.name);
        st.count = ranked.len();
        Step::Send {
            provider,
            price: c.price,
            escalated: st.next > 0,
            route: c.route,
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
    /// A worker's pacing, with its share of the fleet.
    fn new(sc: &MarketScenario, cfg: &PlannerConfig, share: FleetShare) -> Self {
        let router = Router::new(Arc::new(sc.catalog.clone()), cfg.router.clone(), sc.start);
        router.set_fleet(share);
        Dearest { router }
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
            let ranked = realtime_candidates(&job, &sc.catalog, &|_| Availability::Now, now);
            let Some(c) = ranked.last() else {
                return Step::Fail("no provider".into());
            };
            let p = provider_position(sc, &c.provider.name);
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
                route: Route::Realtime,
            },
            Availability::At(t, _) => Step::Wait(t, false),
            Availability::Excluded => Step::Wait(now + Duration::seconds(60), false),
        }
    }

    fn router(&self) -> Option<&Router> {
        Some(&self.router)
    }
}

/// The index of provider `name` in the scenario's catalog (the first if it is not there).
fn provider_position(sc: &MarketScenario, name: &str) -> usize {
    sc.catalog
        .providers
        .iter()
        .position(|p| p.name == name)
        .unwrap_or(0)
}

/// The index of `offer` among `provider`'s models (the first if it is not there).
fn offer_index(sc: &MarketScenario, provider: usize, offer: &schemas::ModelOffer) -> usize {
    sc.catalog.providers[provider]
        .models
        .iter()
        .position(|m| m.id == offer.id && m.model == offer.model)
        .unwrap_or(0)
}

/// Batching by hand: each deferrable job to the cheapest batch offer whose published
/// turnaround (the catalog's prior) fits before its deadline, gathered as the fleet gathers;
/// everything else, and every line a batch gives back, through the gateway. Nobody watches the
/// batches: a slow one is waited for, not cancelled.
struct DiyBatch(Gateway);

impl SimPolicy for DiyBatch {
    fn router(&self) -> Option<&Router> {
        None
    }

    fn cancels_late_batches(&self) -> bool {
        false
    }

    fn step(
        &mut self,
        sc: &MarketScenario,
        j: usize,
        st: &mut JobState,
        now: DateTime<Utc>,
    ) -> Step {
        let tj = &sc.jobs[j];
        if st.batches == 0 && tj.priority == Priority::Deferrable && now < tj.deadline {
            let job = tj.job();
            let ranked = candidates(&job, &sc.catalog, &|_| Availability::Now, now);
            let batch = ranked.iter().find(|c| {
                c.route == Route::Batch
                    && c.offer.batch.as_ref().is_some_and(|b| {
                        Duration::from_std(b.prior_turnaround())
                            .is_ok_and(|t| now + t <= tj.deadline)
                    })
            });
            if let Some(c) = batch {
                let provider = provider_position(sc, &c.provider.name);
                return Step::Batch {
                    provider,
                    offer: offer_index(sc, provider, c.offer),
                };
            }
        }
        self.0.step(sc, j, st, now)
    }

    fn outcome(
        &mut self,
        sc: &MarketScenario,
        j: usize,
        st: &mut JobState,
        provider: usize,
        answer: &Answer,
        now: DateTime<Utc>,
    ) -> After {
        self.0.outcome(sc, j, st, provider, answer, now)
    }
}
