//! `offpeak bench market`: the cost of routing policies on one job trace and provider market,
//! on a simulated clock (the engine is the `market` crate; the format and the lower bound are
//! described in docs/benchmarks.md). Runs `dearest`, `gateway`, `diy-batch` and `offpeak` and
//! computes the lower bound, prints a table and the split of cost by route, and ends with one
//! `key=value` summary line.

use crate::config::Config;
use crate::{invalid, Failure};
use anyhow::Context;
use market::{
    lower_bound, random_spec, run as simulate_policy, BoundOptions, LowerBound, MarketScenario,
    PlannerConfig, PolicyKind, RunReport, ScenarioSpec, TraceEntry,
};
use schemas::{Catalog, Route};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Arguments of `offpeak bench market`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// MarketScenario file (TOML): catalog, per-provider true limits, latency, outages, job trace.
    #[arg(long, required_unless_present_any = ["random_seed", "random"])]
    scenario: Option<PathBuf>,
    /// Instead of a file: a random market and trace built from `--catalog` with this seed.
    #[arg(long, conflicts_with = "scenario")]
    random_seed: Option<u64>,
    /// Instead of one market: N random markets (seeds 1..=N, or from `--random-seed` on), one
    /// line each and a summary of offpeak against the bound and the gateway (median, worst).
    #[arg(long, conflicts_with = "scenario", value_parser = clap::value_parser!(u64).range(1..))]
    random: Option<u64>,
    /// Catalog for `--random-seed` and `--random`.
    #[arg(long, default_value = "examples/catalog.toml")]
    catalog: PathBuf,
    /// Jobs in a random scenario.
    #[arg(long, default_value_t = 4000)]
    jobs: usize,
    /// Scale the scenario's generated job counts (quick looks: 0.1).
    #[arg(long, default_value_t = 1.0)]
    scale: f64,
    /// With `--random-seed`: also write the scenario to this file (and its catalog beside it,
    /// as `<stem>.catalog.toml`), to replay or edit it with `--scenario`.
    #[arg(long, requires = "random_seed")]
    save: Option<PathBuf>,
    /// Workers the fleet's slots are divided among, each with a planner of its own that plans
    /// with its share of every provider's account-wide limits, sharing findings every 2 s; the
    /// simulated providers stay one market.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    workers: u32,
}

pub async fn run(args: Args, cfg: Config) -> Result<u8, Failure> {
    let (planner, opts) = setup(&args, &cfg);
    if let Some(n) = args.random {
        let catalog = read_catalog(&args.catalog)?;
        let first = args.random_seed.unwrap_or(1);
        tokio::task::block_in_place(|| {
            sweep(&catalog, first, n, args.jobs.max(1), &planner, &opts)
        });
        return Ok(0);
    }
    let sc = load(&args)?;
    let started = Instant::now();
    let (runs, bounds) = tokio::task::block_in_place(|| simulate(&sc, &planner, &opts));
    print(&sc, &runs, &bounds, started.elapsed().as_secs_f64());
    Ok(0)
}

/// The planner's configuration and the bound's options, from the worker's configuration.
fn setup(args: &Args, cfg: &Config) -> (PlannerConfig, BoundOptions) {
    let planner = PlannerConfig {
        router: cfg.worker.router(),
        inline_wait_s: cfg.worker.inline_wait_s,
        workers: args.workers as usize,
        ..PlannerConfig::default()
    };
    let opts = BoundOptions {
        standard_wait_s: Some(planner.router.policy.standard_max_defer_s),
        ..Default::default()
    };
    (planner, opts)
}

/// One random market's figures, for the sweep's summary.
struct Swept {
    seed: u64,
    over_lb: f64,
    over_gateway: f64,
    misses: usize,
    /// Policies whose cost came out under the bound while failing no more jobs than it leaves out.
    under_bound: Vec<&'static str>,
    unserved: usize,
}

/// `--random N`: N random markets, one line each, then the summary of offpeak against the bound
/// and the gateway, and a `key=value` line.
fn sweep(
    catalog: &Catalog,
    first: u64,
    n: u64,
    jobs: usize,
    planner: &PlannerConfig,
    opts: &BoundOptions,
) {
    let started = Instant::now();
    println!(
        "bench market: {n} random markets from {} providers' catalog, {jobs} jobs each, seeds {first}..={}",
        catalog.providers.len(),
        first + n - 1
    );
    println!(
        "{:>6} {:>5} {:>10} {:>10} {:>10} {:>7} {:>7} {:>6} {:>8}  notes",
        "seed", "jobs", "offpeak", "gateway", "bound", "vs_lb", "vs_gw", "misses", "unserved"
    );
    let mut all = Vec::new();
    for seed in first..first + n {
        let (spec, cat) = random_spec(catalog, seed, jobs);
        let sc = match spec.build(&cat, &format!("random-{seed}")) {
            Ok(sc) => sc,
            Err(e) => {
                println!("{seed:>6} skipped: {e:#}");
                continue;
            }
        };
        let (runs, bounds) = simulate(&sc, planner, opts);
        let lb = &bounds.contract;
        let get = |k: PolicyKind| runs.iter().map(|(r, _)| r).find(|r| r.policy == k);
        let (Some(o), Some(g)) = (get(PolicyKind::Offpeak), get(PolicyKind::Gateway)) else {
            continue;
        };
        let under_bound: Vec<&'static str> = runs
            .iter()
            .map(|(r, _)| r)
            .filter(|r| r.failed <= lb.unserved && r.cost.0 < lb.usd.0 * (1.0 - 1e-9))
            .map(|r| r.policy.as_str())
            .collect();
        let s = Swept {
            seed,
            over_lb: ratio(o.cost.0, lb.usd.0),
            over_gateway: ratio(o.cost.0, g.cost.0),
            misses: o.misses(),
            under_bound,
            unserved: lb.unserved,
        };
        let mut notes = Vec::new();
        if !s.under_bound.is_empty() {
            notes.push(format!("under the bound: {}", s.under_bound.join(", ")));
        }
        if s.over_gateway > 1.01 {
            notes.push("dearer than the gateway".to_string());
        }
        println!(
            "{:>6} {:>5} {:>10.4} {:>10.4} {:>10.4} {:>7.3} {:>7.3} {:>6} {:>8}  {}",
            seed,
            sc.jobs.len(),
            o.cost.0,
            g.cost.0,
            lb.usd.0,
            s.over_lb,
            s.over_gateway,
            s.misses,
            s.unserved,
            notes.join("; ")
        );
        all.push(s);
    }
    summarise(&all, started.elapsed().as_secs_f64());
}

/// The sweep's summary: median and worst offpeak/bound (over markets every job of which some
/// schedule can serve; the others are counted apart), misses, the gateway and the bound's checks.
fn summarise(all: &[Swept], wall: f64) {
    let comparable: Vec<&Swept> = all
        .iter()
        .filter(|s| s.unserved == 0 && s.over_lb.is_finite())
        .collect();
    let mut r: Vec<f64> = comparable.iter().map(|s| s.over_lb).collect();
    let median = median(&mut r);
    let worst = comparable
        .iter()
        .max_by(|a, b| a.over_lb.total_cmp(&b.over_lb));
    let worst_gw = all
        .iter()
        .filter(|s| s.over_gateway.is_finite())
        .max_by(|a, b| a.over_gateway.total_cmp(&b.over_gateway));
    let within = r.iter().filter(|x| **x <= 1.05).count();
    let missed: Vec<u64> = all
        .iter()
        .filter(|s| s.misses > 0)
        .map(|s| s.seed)
        .collect();
    let over_gw: Vec<u64> = all
        .iter()
        .filter(|s| s.over_gateway > 1.01)
        .map(|s| s.seed)
        .collect();
    let under: Vec<u64> = all
        .iter()
        .filter(|s| !s.under_bound.is_empty())
        .map(|s| s.seed)
        .collect();
    let unservable = all.len() - comparable.len();
    println!();
    println!(
        "offpeak/bound over {} markets every job of which can be served: median {:.3}, worst {:.3}{}; {} within 1.05",
        comparable.len(),
        median,
        worst.map_or(f64::NAN, |s| s.over_lb),
        worst.map_or(String::new(), |s| format!(" (seed {})", s.seed)),
        within
    );
    if unservable > 0 {
        println!("{unservable} markets hold jobs no schedule can serve in time; their ratios are left out above");
    }
    println!("offpeak misses: {} markets{}", missed.len(), seeds(&missed));
    println!(
        "offpeak/gateway: worst {:.3}{}; more than 1 % above the gateway on {} markets{}",
        worst_gw.map_or(f64::NAN, |s| s.over_gateway),
        worst_gw.map_or(String::new(), |s| format!(" (seed {})", s.seed)),
        over_gw.len(),
        seeds(&over_gw)
    );
    println!(
        "a policy under the bound: {} markets{}",
        under.len(),
        seeds(&under)
    );
    println!();
    println!(
        "bench=market-random markets={} comparable={} median_over_lb={:.4} worst_over_lb={:.4} worst_seed={} within_1_05={} markets_with_misses={} worst_vs_gateway={:.4} over_gateway_1pct={} bound_above_a_policy={} unservable_markets={} wall_s={:.1}",
        all.len(),
        comparable.len(),
        median,
        worst.map_or(f64::NAN, |s| s.over_lb),
        worst.map_or(0, |s| s.seed),
        within,
        missed.len(),
        worst_gw.map_or(f64::NAN, |s| s.over_gateway),
        over_gw.len(),
        under.len(),
        unservable,
        wall
    );
}

/// The median of `r` (sorted in place); NaN when empty.
fn median(r: &mut [f64]) -> f64 {
    r.sort_by(f64::total_cmp);
    match r.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => r[n / 2],
        n => (r[n / 2 - 1] + r[n / 2]) / 2.0,
    }
}

/// ` (seeds 3, 17, …)` for a list of markets, the first ten.
fn seeds(list: &[u64]) -> String {
    if list.is_empty() {
        return String::new();
    }
    let mut shown: Vec<String> = list.iter().take(10).map(u64::to_string).collect();
    if list.len() > 10 {
        shown.push("…".into());
    }
    format!(" (seeds {})", shown.join(", "))
}

/// The bound's two readings: honouring the priority contract (the headline), and deadlines only.
struct Bounds {
    contract: LowerBound,
    deadlines: LowerBound,
    wall: f64,
}

/// The policies, each with its wall time, and the bounds; two threads.
fn simulate(
    sc: &MarketScenario,
    cfg: &PlannerConfig,
    opts: &BoundOptions,
) -> (Vec<(RunReport, f64)>, Bounds) {
    let timed = |kind: PolicyKind| {
        let t = Instant::now();
        let r = simulate_policy(sc, kind, cfg);
        (r, t.elapsed().as_secs_f64())
    };
    std::thread::scope(|s| {
        let bound = s.spawn(|| {
            let t = Instant::now();
            let deadlines = s.spawn(|| {
                lower_bound(
                    sc,
                    &BoundOptions {
                        standard_wait_s: None,
                        ..opts.clone()
                    },
                )
            });
            let mut contract = lower_bound(sc, opts);
            let deadlines = deadlines
                .join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p));
            // A schedule that keeps the contract meets the deadlines too: the deadlines bound
            // bounds it as well, and its ascent may have got further.
            if deadlines.usd.0 > contract.usd.0 {
                contract.usd = deadlines.usd;
            }
            Bounds {
                contract,
                deadlines,
                wall: t.elapsed().as_secs_f64(),
            }
        });
        let runs = [
            PolicyKind::Dearest,
            PolicyKind::Gateway,
            PolicyKind::DiyBatch,
            PolicyKind::Offpeak,
        ]
        .into_iter()
        .map(timed)
        .collect();
        let bound = bound
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
        (runs, bound)
    })
}

fn load(args: &Args) -> Result<MarketScenario, Failure> {
    if let Some(seed) = args.random_seed {
        let catalog = read_catalog(&args.catalog)?;
        let (mut spec, catalog) = random_spec(&catalog, seed, args.jobs.max(1));
        if let Some(path) = &args.save {
            save(path, &mut spec, &catalog)?;
        }
        return spec
            .build(&catalog, &format!("random-{seed}"))
            .map_err(invalid);
    }
    let path = args
        .scenario
        .as_deref()
        .ok_or_else(|| invalid(anyhow::anyhow!("give --scenario FILE or --random-seed N")))?;
    load_scenario(path, args.scale)
}

/// Reads a scenario file and what it names (catalog, trace file), relative to it; generated job
/// counts are multiplied by `scale`.
pub fn load_scenario(path: &Path, scale: f64) -> Result<MarketScenario, Failure> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading scenario {}", path.display()))
        .map_err(invalid)?;
    let mut spec: ScenarioSpec = toml::from_str(&text)
        .with_context(|| format!("scenario {}", path.display()))
        .map_err(invalid)?;
    for c in &mut spec.jobs {
        c.count = ((c.count as f64 * scale).round() as usize).max(1);
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    let catalog_path = spec
        .catalog
        .as_deref()
        .map(|c| dir.join(c))
        .ok_or_else(|| {
            invalid(anyhow::anyhow!(
                "{}: give `catalog = \"path/to/catalog.toml\"`",
                path.display()
            ))
        })?;
    let catalog = read_catalog(&catalog_path)?;
    if let Some(t) = spec.trace_file.take() {
        let tp = dir.join(&t);
        let text = std::fs::read_to_string(&tp)
            .with_context(|| format!("reading trace {}", tp.display()))
            .map_err(invalid)?;
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let e: TraceEntry = serde_json::from_str(line)
                .with_context(|| format!("{} line {}", tp.display(), i + 1))
                .map_err(invalid)?;
            spec.trace.push(e);
        }
    }
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "scenario".into());
    spec.build(&catalog, &stem)
        .with_context(|| format!("scenario {}", path.display()))
        .map_err(invalid)
}

/// Writes a scenario and its catalog as files `--scenario` reads.
fn save(path: &Path, spec: &mut ScenarioSpec, catalog: &Catalog) -> Result<(), Failure> {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "scenario".into());
    let cat_name = format!("{stem}.catalog.toml");
    spec.catalog = Some(cat_name.clone());
    let cat_path = path.with_file_name(&cat_name);
    let write = |p: &Path, text: String| {
        std::fs::write(p, text).with_context(|| format!("writing {}", p.display()))
    };
    write(
        &cat_path,
        toml::to_string(catalog).context("catalog as TOML")?,
    )?;
    write(path, toml::to_string(spec).context("scenario as TOML")?)?;
    eprintln!("wrote {} and {}", path.display(), cat_path.display());
    Ok(())
}

fn read_catalog(path: &Path) -> Result<Catalog, Failure> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading catalog {}", path.display()))
        .map_err(invalid)?;
    Catalog::from_toml(&path.display().to_string(), &text).map_err(invalid)
}

fn hours(d: chrono::Duration) -> f64 {
    d.num_milliseconds() as f64 / 3_600_000.0
}

fn print(sc: &MarketScenario, runs: &[(RunReport, f64)], bounds: &Bounds, wall: f64) {
    let lb = &bounds.contract;
    let end = sc.jobs.iter().map(|j| j.deadline).max().unwrap_or(sc.start);
    println!(
        "bench market: scenario {} — {} jobs, {} providers ({}), simulated {} → {}",
        sc.name,
        sc.jobs.len(),
        sc.servers.len(),
        sc.servers
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        sc.start.format("%Y-%m-%d %H:%M"),
        end.format("%Y-%m-%d %H:%M")
    );
    let workers = runs.first().map_or(1, |(r, _)| r.workers);
    if workers > 1 {
        println!(
            "fleet: {workers} workers, each planning with 1/{workers} of every provider's limits, findings shared every 2 s"
        );
    }
    println!();
    println!(
        "{:<12} {:>12} {:>7} {:>7} {:>7} {:>6} {:>9} {:>9} {:>9} {:>7} {:>6} {:>6} {:>9} {:>7}",
        "policy",
        "cost_usd",
        "vs_lb",
        "misses",
        "failed",
        "late",
        "makespan",
        "escalated",
        "deferrals",
        "429s",
        "429%",
        "5xx",
        "requests",
        "wall_s"
    );
    for (r, w) in runs {
        println!(
            "{:<12} {:>12.4} {:>7.3} {:>7} {:>7} {:>6} {:>8.2}h {:>9} {:>9} {:>7} {:>6.2} {:>6} {:>9} {:>7.2}",
            r.policy.as_str(),
            r.cost.0,
            ratio(r.cost.0, lb.usd.0),
            r.misses(),
            r.failed,
            r.late,
            hours(r.makespan),
            r.escalated,
            r.deferrals,
            r.rate_limited,
            100.0 * r.rate_limited_share(),
            r.errors,
            r.requests,
            w
        );
    }
    println!(
        "{:<12} {:>12.4} {:>7.3}   (priority contract kept; feasible greedy {:.4}, capacity ignored {:.4}; {} iterations; {:.2}s)",
        "lower_bound",
        lb.usd.0,
        1.0,
        lb.greedy.0,
        lb.uncapacitated.0,
        lb.iterations,
        bounds.wall
    );
    let dl = &bounds.deadlines;
    println!(
        "{:<12} {:>12.4} {:>7.3}   (every job may wait until its deadline, whatever its priority)",
        "  deadlines",
        dl.usd.0,
        ratio(dl.usd.0, lb.usd.0),
    );
    if lb.unserved > 0 {
        println!(
            "note: {} jobs cannot be served within their deadline by any pair; the bound leaves them out",
            lb.unserved
        );
    }
    println!();
    println!("jobs (cost_usd) per provider:");
    for (r, _) in runs {
        let split: Vec<String> = r
            .providers
            .iter()
            .filter(|p| p.jobs > 0 || p.requests > 0)
            .map(|p| format!("{} {} ({:.2})", p.name, p.jobs, p.cost.0))
            .collect();
        println!("  {:<10} {}", r.policy.as_str(), split.join(", "));
    }
    println!();
    println!("jobs (cost_usd) per route, and provider batches:");
    for (r, _) in runs {
        let split: Vec<String> = [Route::Realtime, Route::Flex, Route::Batch]
            .into_iter()
            .map(|route| {
                let t = r.route(route);
                format!("{route} {} ({:.2})", t.jobs, t.cost.0)
            })
            .collect();
        let b = &r.batches;
        println!(
            "  {:<10} {}; batches {} (expired {}, cancelled {}, lines back {})",
            r.policy.as_str(),
            split.join(", "),
            b.submitted,
            b.expired,
            b.cancelled,
            b.lines_back
        );
    }
    for (r, _) in runs {
        for (id, why) in r.missed.iter().take(5) {
            println!("  {} missed {id}: {why}", r.policy.as_str());
        }
    }
    print_summary_line(sc, runs, bounds, wall);
}

/// The last line: every figure as `key=value`, for scripts.
fn print_summary_line(sc: &MarketScenario, runs: &[(RunReport, f64)], bounds: &Bounds, wall: f64) {
    let lb = &bounds.contract;
    let get = |k: PolicyKind| runs.iter().map(|(r, _)| r).find(|r| r.policy == k);
    let (Some(d), Some(g), Some(y), Some(o)) = (
        get(PolicyKind::Dearest),
        get(PolicyKind::Gateway),
        get(PolicyKind::DiyBatch),
        get(PolicyKind::Offpeak),
    ) else {
        return;
    };
    println!();
    println!(
        "bench=market scenario={} jobs={} dearest_usd={:.4} gateway_usd={:.4} diy_batch_usd={:.4} offpeak_usd={:.4} offpeak_realtime_usd={:.4} offpeak_flex_usd={:.4} offpeak_batch_usd={:.4} offpeak_batches={} offpeak_batch_lines_back={} lower_bound_usd={:.4} lower_bound_deadlines_usd={:.4} offpeak_over_lb={:.3} offpeak_vs_gateway={:.3} offpeak_vs_diy_batch={:.3} offpeak_vs_dearest={:.3} misses={} gateway_misses={} diy_batch_misses={} dearest_misses={} offpeak_makespan_h={:.2} gateway_makespan_h={:.2} diy_batch_makespan_h={:.2} dearest_makespan_h={:.2} workers={} offpeak_requests={} offpeak_429s={} offpeak_429_share={:.4} offpeak_deferrals={} wall_s={:.1}",
        sc.name,
        sc.jobs.len(),
        d.cost.0,
        g.cost.0,
        y.cost.0,
        o.cost.0,
        o.route(Route::Realtime).cost.0,
        o.route(Route::Flex).cost.0,
        o.route(Route::Batch).cost.0,
        o.batches.submitted,
        o.batches.lines_back,
        lb.usd.0,
        bounds.deadlines.usd.0,
        ratio(o.cost.0, lb.usd.0),
        ratio(o.cost.0, g.cost.0),
        ratio(o.cost.0, y.cost.0),
        ratio(o.cost.0, d.cost.0),
        o.misses(),
        g.misses(),
        y.misses(),
        d.misses(),
        hours(o.makespan),
        hours(g.makespan),
        hours(y.makespan),
        hours(d.makespan),
        o.workers,
        o.requests,
        o.rate_limited,
        o.rate_limited_share(),
        o.deferrals,
        wall
    );
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        a / b
    } else {
        f64::NAN
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../examples/scenarios")
            .join(name)
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert!(median(&mut []).is_nan());
        assert_eq!(median(&mut [1.3, 1.0, 1.1]), 1.1);
        assert_eq!(median(&mut [1.4, 1.0, 1.2, 1.1]), 1.15);
    }

    #[test]
    fn shipped_market_scenarios_load_against_the_example_catalog() {
        for name in [
            "market-cheap-rate-limited.toml",
            "market-offpeak-window-outage.toml",
            "market-cheap-saturated.toml",
            "market-nightly-eval.toml",
        ] {
            let sc = load_scenario(&example(name), 1.0)
                .unwrap_or_else(|e| panic!("{name}: {}", e.error));
            assert!(sc.jobs.len() >= 1000, "{name}: {} jobs", sc.jobs.len());
            assert!(sc.servers.len() >= 2, "{name}");
        }
    }

    #[test]
    fn saved_random_scenario_loads_back_with_the_same_trace() {
        let dir = tempfile::tempdir().unwrap();
        let catalog =
            read_catalog(&example("../catalog.toml")).unwrap_or_else(|e| panic!("{}", e.error));
        let (mut spec, cat) = random_spec(&catalog, 3, 200);
        let built = spec.build(&cat, "r3").unwrap();
        let path = dir.path().join("r3.toml");
        save(&path, &mut spec, &cat).unwrap_or_else(|e| panic!("{}", e.error));
        assert!(dir.path().join("r3.catalog.toml").exists());
        let loaded = load_scenario(&path, 1.0).unwrap_or_else(|e| panic!("{}", e.error));
        assert_eq!(loaded.jobs.len(), built.jobs.len());
        for (a, b) in loaded.jobs.iter().zip(&built.jobs) {
            assert_eq!(
                (&a.id, a.arrival, a.deadline),
                (&b.id, b.arrival, b.deadline)
            );
        }
        assert_eq!(loaded.servers.len(), built.servers.len());
    }
}
