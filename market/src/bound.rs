//! A lower bound on what any policy must pay to serve the whole trace by its deadlines, given the
//! market's true capacity (docs/benchmarks.md, "bench market", explains why it is one).
//!
//! The relaxation, on a timeline of minutes from the scenario's start: job `j` may be served,
//! fractionally, by any pair that can serve it, starting in any minute that overlaps
//! `[arrival, latest]` (latest = deadline − the pair's fastest latency; with the priority
//! contract, no later than 30 s after arrival for `critical` jobs and `standard_max_defer_s`
//! plus 30 s for `standard` ones) and is not wholly inside an outage or 429 window of the
//! provider, at the price of that minute. Jobs whose window is longer than
//! `fine_window_minutes` are placed in the runs of 16 minutes wholly inside their window, at the
//! lowest price within the run, and minute by minute at either end. Per provider and resource
//! (requests, tokens, slot-time under the concurrency limit), the work started in a stretch of
//! minutes `W` is at most `rate·|W| + burst` (a token bucket is at most full when `W` starts;
//! requests started in `W` hold their slots inside `W` plus the longest latency): for every
//! dyadic run, and for every stretch the ascent finds overloaded ([`Span`]). A 16-minute
//! placement counts against the runs of 16 minutes and longer that hold it, and against the
//! stretches that wholly contain it. A provider's flex tier is one more provider with its own
//! limits, at the flex price; its batch API one with no limits and no outage, at the batch
//! price, for batches created no later than the deadline − the fastest turnaround the market
//! allows. Every real schedule that meets the contract satisfies all of this (for batches:
//! every schedule that lets a batch run its course or cancels it no earlier than that), so the
//! relaxation's optimum is a lower bound on its cost.
//!
//! It is solved through its Lagrangian dual: capacity constraints priced by multipliers λ ≥ 0,
//! each job then takes its cheapest priced option, and `L(λ) = Σ_j min_option − Σ λ·capacity`
//! is a lower bound for *every* λ (weak duality). Projected subgradient ascent with Polyak steps
//! (target: the best feasible greedy assignment found) raises it; the best value seen is
//! reported. The step's direction shares each job's usage between its nearly cheapest choices
//! and keeps part of the last direction (see `solve`); the value is always the exact minimum.
//! A "miss" option at ten times the job's dearest price keeps the dual bounded when capacity
//! cannot carry everything (adding an option only lowers the optimum — still a bound).

use crate::scenario::{MarketScenario, ServerSpec};
use chrono::{DateTime, Duration, Utc};
use router::policy::{candidates, Availability};
use schemas::{Priority, Route, Usd};

/// Tunables of the bound.
#[derive(Debug, Clone)]
pub struct BoundOptions {
    /// Honour the priority contract (DESIGN §2, §5): a `critical` job starts within 30 s of its
    /// arrival, a `standard` one within this many seconds (the policy's `standard_max_defer_s`)
    /// plus 30 s; `None`: every job may use its whole deadline.
    pub standard_wait_s: Option<f64>,
    /// Jobs whose window is at most this long are placed minute by minute; longer ones in runs
    /// of 16 minutes (looser, and much faster).
    pub fine_window_minutes: i64,
    /// Subgradient iterations at most.
    pub max_iterations: usize,
    /// Stop once the bound is within this fraction of the best feasible assignment.
    pub tolerance: f64,
}

impl Default for BoundOptions {
    fn default() -> Self {
        BoundOptions {
            standard_wait_s: Some(120.0),
            fine_window_minutes: 240,
            max_iterations: 400,
            tolerance: 0.001,
        }
    }
}

/// The bound and how it was reached.
#[derive(Debug, Clone)]
pub struct LowerBound {
    /// The best Lagrangian value: the lower bound.
    pub usd: Usd,
    /// Each job at its cheapest price within its window, capacity ignored (λ = 0).
    pub uncapacitated: Usd,
    /// The cheapest feasible assignment of the relaxation found (an upper bound on its optimum).
    pub greedy: Usd,
    pub iterations: usize,
    /// Jobs no pair can serve within their window at all (left out of every figure).
    pub unserved: usize,
}

/// A coarse run is a dyadic run of level `COARSE` (16 minutes).
const COARSE: usize = 4;

/// Stretches of a resource the ascent holds to its bucket at most (beyond the aligned runs).
const MAX_SPANS: usize = 512;

/// Temperature of the choices that share a job's usage in the ascent, as a fraction of the job's
/// dearest price (times the step scale `theta`, so it cools as the ascent settles).
const SOFTNESS: f64 = 0.01;

/// Steps over which the ascent must still gain to go on.
const STALL: usize = 80;

/// Overloaded stretches looked for per resource and iteration.
const SPANS_PER_ROUND: usize = 4;

/// A capacity constraint on one resource over the minutes `a..=e`, beside the aligned runs:
/// a stretch the priced choice overloaded during the ascent. An aligned run holds only one
/// burst, but a long overloaded stretch is tiled by several runs, each with its own burst; the
/// stretch itself holds one, as the provider's bucket does.
#[derive(Debug, Clone)]
struct Span {
    a: usize,
    e: usize,
    cap: f64,
    lam: f64,
    /// The last step's direction for `lam`.
    dir: f64,
}

impl Span {
    /// The coarse runs wholly inside the span: `c0..c1` (a coarse placement counts against the
    /// span only when it surely starts inside it).
    fn coarse(&self) -> (usize, usize) {
        (self.a.div_ceil(1 << COARSE), (self.e + 1) >> COARSE)
    }
}

/// One way to serve a job: a pair over a range of minutes (`fine`) or of 16-minute runs.
#[derive(Debug, Clone)]
struct Opt {
    provider: usize,
    offer: usize,
    fine: bool,
    b0: usize,
    b1: usize,
    /// Cost at the offer's base price (multiplier 1).
    c0: f64,
    /// Requests, tokens, slot-minutes.
    uses: [f64; 3],
    /// Cheapest price in the range, capacity ignored, and where.
    static_min: f64,
    static_b: usize,
}

/// Per grain (0: minutes, 1: coarse runs): the value at slot `b`.
type Grains<T> = [Vec<Vec<T>>; 2];

struct Model {
    /// Minutes on the timeline (a multiple of 16).
    nm: usize,
    levels: usize,
    /// Lowest multiplier per offer per slot, per grain.
    mult: Grains<f64>,
    /// Slots wholly in an outage or 429 window, per provider, per grain.
    unusable: Grains<bool>,
    /// Capacity-limited resources: (provider, cap[k][w] of the w-th run of 2^k minutes).
    res: Vec<(usize, Vec<Vec<f64>>)>,
    /// Per resource, its token bucket: (rate per minute, burst).
    bucket: Vec<(f64, f64)>,
    /// Resource index per (provider, kind).
    res_of: Vec<[Option<usize>; 3]>,
    jobs: Vec<(Vec<Opt>, f64)>,
    unserved: usize,
}

impl Model {
    fn first_level(fine: bool) -> usize {
        if fine {
            0
        } else {
            COARSE
        }
    }

    /// The run at level `k` holding slot `b` of a grain.
    fn run(fine: bool, b: usize, k: usize) -> usize {
        if fine {
            b >> k
        } else {
            b >> (k - COARSE)
        }
    }

    fn grain(fine: bool) -> usize {
        usize::from(!fine)
    }
}

/// Computes the bound for `sc`.
pub fn lower_bound(sc: &MarketScenario, o: &BoundOptions) -> LowerBound {
    let m = build(sc, o);
    solve(&m, o)
}

fn minutes_between(a: DateTime<Utc>, b: DateTime<Utc>) -> f64 {
    (b - a).num_milliseconds() as f64 / 60_000.0
}

/// The bound's model of the scenario: each job's choices (pair, minute, price) and each
/// resource's capacity per minute and per stretch.
///
/// Long (over 100 lines) on purpose: one pass over the providers and one over the jobs, in the
/// order the bound's validity argument (docs/benchmarks.md) states them; the steps share the
/// index tables they fill.
fn build(sc: &MarketScenario, o: &BoundOptions) -> Model {
    let end = sc.jobs.iter().map(|j| j.deadline).max().unwrap_or(sc.start);
    let nm = ((minutes_between(sc.start, end).ceil().max(0.0) as usize + 2).div_ceil(16)) * 16;
    let at = |minute: usize| sc.start + Duration::minutes(minute as i64);
    let minute_of =
        |t: DateTime<Utc>| (minutes_between(sc.start, t).floor().max(0.0) as usize).min(nm - 1);
    let mut offer_ids = Vec::new();
    let mut mult: Grains<f64> = [Vec::new(), Vec::new()];
    for (p, spec) in sc.catalog.providers.iter().enumerate() {
        for (mi, offer) in spec.models.iter().enumerate() {
            offer_ids.push((p, mi));
            let fine: Vec<f64> = (0..nm).map(|m| offer.multiplier_at(at(m))).collect();
            let coarse = fine
                .chunks(16)
                .map(|c| c.iter().copied().fold(f64::INFINITY, f64::min))
                .collect();
            mult[0].push(fine);
            mult[1].push(coarse);
        }
    }
    // Every provider's realtime server, then the flex tiers (capacity of their own), then each
    // provider's batch API (no capacity limit, no outage: the batch route uses no request
    // capacity).
    let n = sc.servers.len();
    let mut servers: Vec<ServerSpec> = sc.servers.clone();
    let mut flex_of = vec![None; n];
    let mut batch_of = vec![None; n];
    for (p, f) in sc.flex.iter().enumerate() {
        if let Some(f) = f {
            flex_of[p] = Some(servers.len());
            servers.push(f.clone());
        }
    }
    for (p, s) in sc.servers.iter().enumerate() {
        if s.batch.is_some() {
            batch_of[p] = Some(servers.len());
            servers.push(ServerSpec {
                limits: Default::default(),
                outages: vec![],
                rate_limited: vec![],
                ..s.clone()
            });
        }
    }
    let mut unusable: Grains<bool> = [Vec::new(), Vec::new()];
    for s in &servers {
        let mut spans: Vec<(DateTime<Utc>, DateTime<Utc>)> =
            s.outages.iter().chain(&s.rate_limited).copied().collect();
        spans.sort();
        let fine: Vec<bool> = (0..nm).map(|m| covered(&spans, at(m), at(m + 1))).collect();
        let coarse = fine.chunks(16).map(|c| c.iter().all(|x| *x)).collect();
        unusable[0].push(fine);
        unusable[1].push(coarse);
    }
    let mut longest = vec![0.0f64; servers.len()];
    let mut jobs = Vec::with_capacity(sc.jobs.len());
    let mut unserved = 0;
    for tj in &sc.jobs {
        let job = tj.job();
        let ranked = candidates(&job, &sc.catalog, &|_| Availability::Now, tj.arrival);
        let mut opts = Vec::new();
        let mut dearest = 0.0f64;
        for c in &ranked {
            let Some(p) = sc
                .catalog
                .providers
                .iter()
                .position(|x| x.name == c.provider.name)
            else {
                continue;
            };
            let models = &sc.catalog.providers[p].models;
            let Some(mi) = models.iter().position(|x| x.id == c.offer.id) else {
                continue;
            };
            let Some(oi) = offer_ids.iter().position(|x| *x == (p, mi)) else {
                continue;
            };
            // The route's server, its price factor, and the shortest time from start to answer:
            // a request's fastest latency, or a batch's fastest turnaround (a batch line is
            // credited only when its batch may run its course before the deadline).
            let (server, factor, fastest_ms) = match c.route {
                Route::Realtime | Route::Flex => {
                    let server = match c.route {
                        Route::Flex => flex_of[p].unwrap_or(p),
                        _ => p,
                    };
                    let factor = match (c.route, c.offer.flex) {
                        (Route::Flex, Some(f)) => f.multiplier,
                        _ => 1.0,
                    };
                    let s = &servers[server];
                    let fast = s.latency_ms(tj.output_tokens) * (1.0 - s.jitter);
                    longest[server] = longest[server]
                        .max(s.latency_ms(tj.output_tokens) * (1.0 + s.jitter) / 6e4);
                    (server, factor, fast)
                }
                // Under the priority contract only a deferrable job may wait for a batch.
                Route::Batch
                    if o.standard_wait_s.is_some() && tj.priority != Priority::Deferrable =>
                {
                    continue
                }
                Route::Batch => {
                    let (Some(server), Some(spec), Some(offer)) =
                        (batch_of[p], &sc.servers[p].batch, &c.offer.batch)
                    else {
                        continue;
                    };
                    let fast = spec.fastest().num_milliseconds() as f64;
                    (server, 1.0 - offer.discount, fast)
                }
            };
            let p = server;
            let s = &servers[p];
            let mut latest = tj.deadline - Duration::milliseconds(fastest_ms as i64);
            if let Some(w) = o.standard_wait_s {
                let wait = match tj.priority {
                    Priority::Critical => Some(30.0),
                    Priority::Standard => Some(w + 30.0),
                    Priority::Deferrable => None,
                };
                if let Some(w) = wait {
                    latest = latest.min(tj.arrival + Duration::milliseconds((w * 1000.0) as i64));
                }
            }
            if latest < tj.arrival {
                continue;
            }
            // The server takes at most a full bucket for one request, and holds its slot for
            // whole milliseconds.
            let tokens =
                s.limits
                    .tpm
                    .map_or(tj.limit_tokens(), |t| tj.limit_tokens().min(t)) as f64;
            let c0 = c
                .offer
                .base_price()
                .cost(tj.input_tokens, tj.output_tokens)
                .0
                * factor;
            let (m0, m1) = (minute_of(tj.arrival), minute_of(latest));
            let max_mult = (m0..=m1).map(|m| mult[0][oi][m]).fold(0.0, f64::max);
            dearest = dearest.max(c0 * max_mult);
            // Short windows minute by minute; long ones in the 16-minute runs wholly inside
            // them, and the minutes at either end outside such a run one by one.
            let run = 1usize << COARSE;
            let (r0, r1) = (m0.div_ceil(run), (m1 + 1) / run);
            let mut ranges = Vec::with_capacity(3);
            if (m1 - m0) as i64 <= o.fine_window_minutes || r0 >= r1 {
                ranges.push((true, m0, m1));
            } else {
                if m0 < r0 * run {
                    ranges.push((true, m0, r0 * run - 1));
                }
                ranges.push((false, r0, r1 - 1));
                if r1 * run <= m1 {
                    ranges.push((true, r1 * run, m1));
                }
            }
            for (fine, b0, b1) in ranges {
                if b1 < b0 {
                    continue;
                }
                let g = Model::grain(fine);
                let best = (b0..=b1)
                    .filter(|b| !unusable[g][p][*b])
                    .map(|b| (c0 * mult[g][oi][b], b))
                    .min_by(|a, b| a.0.total_cmp(&b.0));
                if let Some((static_min, static_b)) = best {
                    opts.push(Opt {
                        provider: p,
                        offer: oi,
                        fine,
                        b0,
                        b1,
                        c0,
                        uses: [1.0, tokens, fastest_ms.floor() / 60_000.0],
                        static_min,
                        static_b,
                    });
                }
            }
        }
        if opts.is_empty() {
            unserved += 1;
        }
        // Cheapest first: the ascent stops looking once an option cannot come near the best.
        opts.sort_by(|a, b| a.static_min.total_cmp(&b.static_min));
        jobs.push((opts, 10.0 * dearest + 1e-6));
    }
    let levels = (usize::BITS - (nm - 1).leading_zeros()) as usize + 1;
    let mut res = Vec::new();
    let mut bucket = Vec::new();
    let mut res_of = vec![[None; 3]; servers.len()];
    for (p, s) in servers.iter().enumerate() {
        let limits = [
            s.limits.rpm.map(|n| (f64::from(n), f64::from(n))),
            s.limits.tpm.map(|n| (n as f64, n as f64)),
            s.limits
                .concurrency
                .map(|c| (f64::from(c), f64::from(c) * longest[p])),
        ];
        for (kind, l) in limits.into_iter().enumerate() {
            let Some((rate, burst)) = l else {
                continue;
            };
            let cap = (0..levels)
                .map(|k| {
                    let w = 1usize << k;
                    (0..nm.div_ceil(w))
                        .map(|i| rate * (nm - i * w).min(w) as f64 + burst)
                        .collect()
                })
                .collect();
            res_of[p][kind] = Some(res.len());
            res.push((p, cap));
            bucket.push((rate, burst));
        }
    }
    Model {
        nm,
        levels,
        mult,
        unusable,
        res,
        bucket,
        res_of,
        jobs,
        unserved,
    }
}

/// Whether `[a, b)` lies inside the union of the sorted spans.
fn covered(spans: &[(DateTime<Utc>, DateTime<Utc>)], a: DateTime<Utc>, b: DateTime<Utc>) -> bool {
    let mut t = a;
    for (s, e) in spans {
        if *s > t {
            break;
        }
        t = t.max(*e);
        if t >= b {
            return true;
        }
    }
    t >= b
}

/// Per resource, per grain and slot, the price of one unit: Σ over the runs and spans holding
/// the slot.
fn unit_prices(m: &Model, lambda: &[Vec<Vec<f64>>], spans: &[Vec<Span>]) -> Vec<[Vec<f64>; 2]> {
    m.res
        .iter()
        .zip(lambda)
        .zip(spans)
        .map(|(((_, cap), lam), spans)| {
            let price = |fine: bool, b: usize| -> f64 {
                (Model::first_level(fine)..m.levels)
                    .map(|k| {
                        let w = Model::run(fine, b, k);
                        if lam[k][w] > 0.0 {
                            lam[k][w] / cap[k][w]
                        } else {
                            0.0
                        }
                    })
                    .sum()
            };
            let mut fine: Vec<f64> = (0..m.nm).map(|b| price(true, b)).collect();
            let mut coarse: Vec<f64> = (0..m.nm >> COARSE).map(|b| price(false, b)).collect();
            // Each span's price over its slots, through difference arrays.
            let mut diff = [vec![0.0; fine.len() + 1], vec![0.0; coarse.len() + 1]];
            for s in spans.iter().filter(|s| s.lam > 0.0) {
                let unit = s.lam / s.cap;
                diff[0][s.a] += unit;
                diff[0][s.e + 1] -= unit;
                let (c0, c1) = s.coarse();
                if c0 < c1 {
                    diff[1][c0] += unit;
                    diff[1][c1] -= unit;
                }
            }
            for (prices, d) in [&mut fine, &mut coarse].into_iter().zip(&diff) {
                let mut run = 0.0;
                for (x, dx) in prices.iter_mut().zip(d) {
                    run += dx;
                    *x += run.max(0.0);
                }
            }
            [fine, coarse]
        })
        .collect()
}

/// Up to `k` disjoint stretches of minutes whose starts exceed the bucket (`usage` over
/// `rate·len + burst`), most overloaded first.
fn overloaded(usage: &[f64], rate: f64, burst: f64, k: usize) -> Vec<(usize, usize)> {
    let mut taken = vec![false; usage.len()];
    let mut out = Vec::new();
    for _ in 0..k {
        let mut best = (burst * (1.0 + 1e-9), None);
        let (mut run, mut start) = (0.0, 0);
        for (b, u) in usage.iter().enumerate() {
            if taken[b] {
                run = 0.0;
                continue;
            }
            if run <= 0.0 {
                run = 0.0;
                start = b;
            }
            run += u - rate;
            if run > best.0 {
                best = (run, Some((start, b)));
            }
        }
        let Some((a, e)) = best.1 else {
            break;
        };
        taken[a..=e].fill(true);
        out.push((a, e));
    }
    out
}

/// Prefix sums: `p[i]` = Σ `x[..i]`.
fn prefix(x: &[f64]) -> Vec<f64> {
    std::iter::once(0.0)
        .chain(x.iter().scan(0.0, |acc, v| {
            *acc += v;
            Some(*acc)
        }))
        .collect()
}

/// The priced value of option `o` at slot `b`.
fn priced(m: &Model, o: &Opt, b: usize, up: &[[Vec<f64>; 2]]) -> f64 {
    let g = Model::grain(o.fine);
    let mut v = o.c0 * m.mult[g][o.offer][b];
    for (kind, r) in m.res_of[o.provider].iter().enumerate() {
        if let Some(r) = r {
            v += o.uses[kind] * up[*r][g][b];
        }
    }
    v
}

/// A job's choices at unit prices `up`: its cheapest value, and in `near` the (option, slot,
/// weight) of those within a few `tau` of it, weighted `exp(-excess / tau)`, so that choices
/// priced alike share the job's usage instead of all of it going to the first of them (`None`:
/// the miss option). Providers with no limits only offer their cheapest slot: they use nothing.
fn soft_choice(
    m: &Model,
    opts: &[Opt],
    miss: f64,
    up: &[[Vec<f64>; 2]],
    tau: f64,
    all: &mut Vec<(f64, Option<(usize, usize)>)>,
    near: &mut Vec<(Option<(usize, usize)>, f64)>,
) -> f64 {
    all.clear();
    near.clear();
    all.push((miss, None));
    // Prices only add to an option's base cost: what starts above `best + reach` stays there.
    let reach_of = |best: f64| (8.0 * tau).max(1e-12 * best.abs());
    let mut best = miss;
    for (i, o) in opts.iter().enumerate() {
        if o.static_min > best + reach_of(best) {
            break;
        }
        if m.res_of[o.provider].iter().all(Option::is_none) {
            all.push((o.static_min, Some((i, o.static_b))));
            best = best.min(o.static_min);
            continue;
        }
        let g = Model::grain(o.fine);
        for b in o.b0..=o.b1 {
            if m.unusable[g][o.provider][b] || o.c0 * m.mult[g][o.offer][b] > best + reach_of(best)
            {
                continue;
            }
            let v = priced(m, o, b, up);
            best = best.min(v);
            all.push((v, Some((i, b))));
        }
    }
    let reach = reach_of(best);
    let mut total = 0.0;
    for &(v, arg) in all.iter() {
        if v - best <= reach {
            let w = if tau > 0.0 {
                (-(v - best) / tau).exp()
            } else {
                1.0
            };
            total += w;
            near.push((arg, w));
        }
    }
    for x in near.iter_mut() {
        x.1 /= total;
    }
    best
}

/// The subgradient ascent on the Lagrangian dual of the model: price every constraint, let each
/// job take its cheapest priced choice, move the multipliers, repeat.
///
/// Long (over 100 lines) on purpose: one loop whose state (multipliers, deflected direction,
/// the cuts added as it goes, the best value and its greedy schedule) is shared by every step;
/// split into functions, each would take most of that state as arguments.
fn solve(m: &Model, o: &BoundOptions) -> LowerBound {
    let mut lambda: Vec<Vec<Vec<f64>>> = m
        .res
        .iter()
        .map(|(_, cap)| cap.iter().map(|c| vec![0.0; c.len()]).collect())
        .collect();
    let mut dir = lambda.clone();
    let mut spans: Vec<Vec<Span>> = vec![Vec::new(); m.res.len()];
    let mut seen = std::collections::HashSet::new();
    // Whether spans were added since `ub` was computed (it then bounds a looser relaxation).
    let mut ub_stale = false;
    let (mut all, mut near) = (Vec::new(), Vec::new());
    let mut history = Vec::with_capacity(o.max_iterations);
    let mut ub = greedy(m, None, &spans);
    let mut best = f64::NEG_INFINITY;
    let mut uncapacitated = 0.0;
    let mut theta = 1.0;
    let mut stale = 0;
    let mut iterations = 0;
    for it in 0..o.max_iterations.max(1) {
        iterations = it + 1;
        let up = unit_prices(m, &lambda, &spans);
        // Usage per resource, per grain and slot, of the priced choice.
        let mut usage: Vec<[Vec<f64>; 2]> = m
            .res
            .iter()
            .map(|_| [vec![0.0; m.nm], vec![0.0; m.nm >> COARSE]])
            .collect();
        let mut value = 0.0;
        for (opts, miss) in &m.jobs {
            if opts.is_empty() {
                continue;
            }
            let tau = SOFTNESS * theta * miss / 10.0;
            value += soft_choice(m, opts, *miss, &up, tau, &mut all, &mut near);
            for &(arg, w) in &near {
                let Some((i, b)) = arg else {
                    continue;
                };
                let op = &opts[i];
                for (kind, r) in m.res_of[op.provider].iter().enumerate() {
                    if let Some(r) = r {
                        usage[*r][Model::grain(op.fine)][b] += w * op.uses[kind];
                    }
                }
            }
        }
        let paid: f64 = lambda.iter().flatten().flatten().sum::<f64>()
            + spans.iter().flatten().map(|s| s.lam).sum::<f64>();
        let l = value - paid;
        if it == 0 {
            uncapacitated = l;
        }
        // Stop once the best has gained less than a hundredth of a percent in `STALL` steps.
        history.push(best.max(l));
        if it >= STALL && history[it] <= history[it - STALL] + 1e-4 * history[it].abs() {
            best = best.max(l);
            break;
        }
        if it == 0 || l > best + 1e-12 * best.abs().max(1.0) {
            best = l;
            stale = 0;
        } else {
            stale += 1;
            if stale >= 12 {
                theta /= 2.0;
                stale = 0;
            }
        }
        // The stretches this choice overloads become constraints of their own.
        let mut grew = false;
        for (ri, &(rate, burst)) in m.bucket.iter().enumerate() {
            // Coarse placements spread over their runs to find the stretches; a stretch they
            // load is also held rounded out to whole runs, which counts them.
            let [fine, coarse] = &usage[ri];
            let spread: Vec<f64> = fine
                .iter()
                .enumerate()
                .map(|(b, u)| u + coarse[b >> COARSE] / (1 << COARSE) as f64)
                .collect();
            let mut found = overloaded(&spread, rate, burst, SPANS_PER_ROUND);
            for (a, e) in found.clone() {
                if coarse[a >> COARSE..=e >> COARSE].iter().any(|u| *u > 0.0) {
                    found.push((
                        a >> COARSE << COARSE,
                        (e | ((1 << COARSE) - 1)).min(m.nm - 1),
                    ));
                }
            }
            for (a, e) in found {
                if spans[ri].len() < MAX_SPANS && seen.insert((ri, a, e)) {
                    let cap = rate * (e + 1 - a) as f64 + burst;
                    spans[ri].push(Span {
                        a,
                        e,
                        cap,
                        lam: 0.0,
                        dir: 0.0,
                    });
                    grew = true;
                }
            }
        }
        ub_stale |= grew;
        if it % 40 == 39 {
            let g = greedy(m, Some(&up), &spans).min(greedy(m, None, &spans));
            ub = if ub_stale { g } else { ub.min(g) };
            ub_stale = false;
        }
        if theta < 1e-4 || (!grew && !ub_stale && ub - best <= o.tolerance * ub.abs()) {
            break;
        }
        // Subgradient: each run's usage over its capacity, minus one.
        let mut grads = Vec::with_capacity(m.res.len());
        let mut norm = 0.0;
        for (ri, (_, cap)) in m.res.iter().enumerate() {
            let [fine, coarse] = &usage[ri];
            let mut g_levels = Vec::with_capacity(m.levels);
            for k in 0..m.levels {
                let w = 1usize << k;
                let g: Vec<f64> = cap[k]
                    .iter()
                    .enumerate()
                    .map(|(i, c)| {
                        let mut used: f64 = fine[i * w..((i + 1) * w).min(m.nm)].iter().sum();
                        if k >= COARSE {
                            let cw = w >> COARSE;
                            used += coarse[i * cw..((i + 1) * cw).min(coarse.len())]
                                .iter()
                                .sum::<f64>();
                        }
                        let g = used / c - 1.0;
                        if lambda[ri][k][i] <= 0.0 && g < 0.0 {
                            0.0
                        } else {
                            g
                        }
                    })
                    .collect();
                norm += g.iter().map(|x| x * x).sum::<f64>();
                g_levels.push(g);
            }
            grads.push(g_levels);
        }
        let mut span_grads = Vec::with_capacity(m.res.len());
        for (ri, ss) in spans.iter().enumerate() {
            let [fine, coarse] = &usage[ri];
            let (pf, pc) = (prefix(fine), prefix(coarse));
            let g: Vec<f64> = ss
                .iter()
                .map(|s| {
                    let (c0, c1) = s.coarse();
                    let mut used = pf[s.e + 1] - pf[s.a];
                    if c0 < c1 {
                        used += pc[c1] - pc[c0];
                    }
                    let g = used / s.cap - 1.0;
                    if s.lam <= 0.0 && g < 0.0 {
                        0.0
                    } else {
                        g
                    }
                })
                .collect();
            norm += g.iter().map(|x| x * x).sum::<f64>();
            span_grads.push(g);
        }
        if norm <= 1e-18 {
            // The priced choice is feasible and complementary: the dual is at its optimum.
            break;
        }
        // Deflected direction (Camerini, Fratta, Maffioli): when the subgradient turns back on
        // the last direction, keep part of that direction, which damps the zig-zag between
        // nested runs and spans.
        let mut dot = 0.0;
        let mut prev = 0.0;
        for (d, g) in dir
            .iter()
            .flatten()
            .flatten()
            .zip(grads.iter().flatten().flatten())
        {
            dot += d * g;
            prev += d * d;
        }
        for (s, g) in spans.iter().flatten().zip(span_grads.iter().flatten()) {
            dot += s.dir * g;
            prev += s.dir * s.dir;
        }
        let beta = if dot < 0.0 && prev > 0.0 {
            -1.5 * dot / prev
        } else {
            0.0
        };
        let mut dnorm = 0.0;
        for (dk, gk) in dir.iter_mut().flatten().zip(grads.iter().flatten()) {
            for (d, g) in dk.iter_mut().zip(gk) {
                *d = g + beta * *d;
                dnorm += *d * *d;
            }
        }
        for (ss, g) in spans.iter_mut().zip(&span_grads) {
            for (s, gx) in ss.iter_mut().zip(g) {
                s.dir = gx + beta * s.dir;
                dnorm += s.dir * s.dir;
            }
        }
        let step = theta * (ub - l).max(1e-9) / dnorm.max(1e-18);
        for (lam, d) in lambda.iter_mut().zip(&dir) {
            for (lk, dk) in lam.iter_mut().zip(d) {
                for (x, dx) in lk.iter_mut().zip(dk) {
                    *x = (*x + step * dx).max(0.0);
                }
            }
        }
        for s in spans.iter_mut().flatten() {
            s.lam = (s.lam + step * s.dir).max(0.0);
        }
    }
    LowerBound {
        usd: Usd(best.max(0.0)),
        uncapacitated: Usd(uncapacitated.max(0.0)),
        greedy: Usd(ub),
        iterations,
        unserved: m.unserved,
    }
}

/// A feasible assignment of the relaxation: jobs with most to lose first, each to its cheapest
/// (optionally priced) option with room left. Its cost bounds the relaxation's optimum above.
fn greedy(m: &Model, up: Option<&[[Vec<f64>; 2]]>, spans: &[Vec<Span>]) -> f64 {
    let mut left: Vec<Vec<Vec<f64>>> = m.res.iter().map(|(_, cap)| cap.clone()).collect();
    let mut span_left: Vec<Vec<f64>> = spans
        .iter()
        .map(|ss| ss.iter().map(|s| s.cap).collect())
        .collect();
    // Per resource, grain and slot: the spans holding the slot.
    let holding: Vec<[Vec<Vec<usize>>; 2]> = spans
        .iter()
        .map(|ss| {
            let (mut fine, mut coarse) = (vec![Vec::new(); m.nm], vec![Vec::new(); m.nm >> COARSE]);
            for (i, s) in ss.iter().enumerate() {
                let (c0, c1) = s.coarse();
                for held in fine[s.a..=s.e]
                    .iter_mut()
                    .chain(&mut coarse[c0..c1.max(c0)])
                {
                    held.push(i);
                }
            }
            [fine, coarse]
        })
        .collect();
    let mut order: Vec<(f64, usize)> = m
        .jobs
        .iter()
        .enumerate()
        .map(|(j, (opts, _))| {
            let mut mins: Vec<f64> = opts.iter().map(|o| o.static_min).collect();
            mins.sort_by(f64::total_cmp);
            let regret = match mins.as_slice() {
                [a, b, ..] => b - a,
                [a] => *a,
                [] => 0.0,
            };
            (regret, j)
        })
        .collect();
    order.sort_by(|a, b| b.0.total_cmp(&a.0));
    let mut total = 0.0;
    let mut choices: Vec<(f64, f64, usize, usize)> = Vec::new();
    for (_, j) in order {
        let (opts, miss) = &m.jobs[j];
        if opts.is_empty() {
            continue;
        }
        choices.clear();
        for (i, o) in opts.iter().enumerate() {
            let g = Model::grain(o.fine);
            for b in o.b0..=o.b1 {
                if m.unusable[g][o.provider][b] {
                    continue;
                }
                let cost = o.c0 * m.mult[g][o.offer][b];
                let key = up.map_or(cost, |up| priced(m, o, b, up));
                choices.push((key, cost, i, b));
            }
        }
        choices.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.3.cmp(&b.3)));
        let mut paid = *miss;
        for &(_, cost, i, b) in &choices {
            let o = &opts[i];
            let rs = m.res_of[o.provider];
            let levels = Model::first_level(o.fine)..m.levels;
            let g = Model::grain(o.fine);
            let fits = rs.iter().enumerate().all(|(kind, r)| {
                r.is_none_or(|r| {
                    levels
                        .clone()
                        .all(|k| left[r][k][Model::run(o.fine, b, k)] >= o.uses[kind])
                        && holding[r][g][b]
                            .iter()
                            .all(|i| span_left[r][*i] >= o.uses[kind])
                })
            });
            if fits {
                for (kind, r) in rs.iter().enumerate() {
                    if let Some(r) = r {
                        for k in levels.clone() {
                            left[*r][k][Model::run(o.fine, b, k)] -= o.uses[kind];
                        }
                        for i in &holding[*r][g][b] {
                            span_left[*r][*i] -= o.uses[kind];
                        }
                    }
                }
                paid = cost;
                break;
            }
        }
        total += paid;
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overloaded_finds_the_stretches_over_one_burst_most_overloaded_first() {
        // Rate 10: minutes 2..=4 start 20 each (30 over the rate), minute 12 starts 24 (14
        // over), minutes 20..=21 start 30 (40 over); the idle minutes between cost more than any
        // of them gains.
        let mut usage = vec![0.0; 30];
        usage[2..=4].fill(20.0);
        usage[12] = 24.0;
        usage[20..=21].fill(30.0);
        assert_eq!(overloaded(&usage, 10.0, 29.0, 4), vec![(20, 21), (2, 4)]);
        assert_eq!(
            overloaded(&usage, 10.0, 13.0, 4),
            vec![(20, 21), (2, 4), (12, 12)]
        );
        assert_eq!(overloaded(&usage, 10.0, 13.0, 1), vec![(20, 21)]);
        assert!(overloaded(&usage, 10.0, 40.0, 4).is_empty());
        // Closer together, one stretch overloads the bucket more than either part.
        usage[13..=19].fill(10.0);
        assert_eq!(overloaded(&usage, 10.0, 29.0, 1), vec![(12, 21)]);
    }
}
