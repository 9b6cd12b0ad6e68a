//! `bench market --workers N`: a fleet of independent planners against one market whose limits
//! are account-wide. Each worker's router plans with its share of the limits, so together they
//! keep within them; given the whole limits each, they promise the capacity N times over and
//! meet the 429s. Findings (a provider rate-limited until then) travel between the workers with
//! the heartbeat, so one worker's 429 spares the others theirs.

use market::{run, MarketScenario, PlannerConfig, PolicyKind, RunReport, ScenarioSpec};
use schemas::Catalog;
use serde_json::json;

fn catalog() -> Catalog {
    Catalog::from_toml(
        "examples/catalog.toml",
        include_str!("../../examples/catalog.toml"),
    )
    .unwrap()
}

fn scenario(spec: serde_json::Value) -> MarketScenario {
    let spec: ScenarioSpec = serde_json::from_value(spec).unwrap();
    spec.build(&catalog(), "fleet-test").unwrap()
}

/// 400 Llama jobs in two bursts, due in 4 h; groq (the cheapest host) takes 20 requests a
/// minute and 8 at once, account-wide, and the workers' catalog says so.
fn cheap_account_shared_by_the_fleet() -> MarketScenario {
    scenario(json!({
        "seed": 9,
        "providers": ["groq", "together", "fireworks"],
        "fleet": { "concurrency": 64 },
        "market": [
            { "provider": "groq", "rpm": 20, "tpm": 200000, "concurrency": 8, "latency_ms": 400 },
            { "provider": "together", "latency_ms": 600 },
            { "provider": "fireworks", "latency_ms": 600 }
        ],
        "jobs": [
            {
                "name": "first", "count": 200, "model": "llama-3.3-70b-instruct",
                "priority": "deferrable", "arrival": "burst", "from": "01:00",
                "deadline_in": "4h", "input_tokens": [500, 1500], "max_tokens": 256
            },
            {
                "name": "second", "count": 200, "model": "llama-3.3-70b-instruct",
                "priority": "deferrable", "arrival": "burst", "from": "02:30",
                "deadline_in": "4h", "input_tokens": [500, 1500], "max_tokens": 256
            }
        ]
    }))
}

fn fleet(workers: usize, share_limits: bool) -> PlannerConfig {
    PlannerConfig {
        workers,
        share_limits,
        ..PlannerConfig::default()
    }
}

fn offpeak(sc: &MarketScenario, cfg: &PlannerConfig) -> RunReport {
    run(sc, PolicyKind::Offpeak, cfg)
}

#[test]
fn four_workers_sharing_the_limits_keep_within_the_account_and_meet_every_deadline() {
    let sc = cheap_account_shared_by_the_fleet();
    let shared = offpeak(&sc, &fleet(4, true));
    assert_eq!(shared.workers, 4);
    assert_eq!(shared.completed, sc.jobs.len());
    assert_eq!(shared.misses(), 0, "{:?}", shared.missed);
    assert!(
        shared.rate_limited_share() <= 0.02,
        "{} 429s of {} requests",
        shared.rate_limited,
        shared.requests
    );
    // Each worker with the whole limits: four times the account's burst is promised, and the
    // account answers 429.
    let whole = offpeak(&sc, &fleet(4, false));
    assert!(
        whole.rate_limited_share() >= 0.05
            && whole.rate_limited_share() >= 4.0 * shared.rate_limited_share(),
        "without the share: {} 429s of {} requests; with it: {} of {}",
        whole.rate_limited,
        whole.requests,
        shared.rate_limited,
        shared.requests
    );
}

#[test]
fn one_worker_is_the_fleet_of_one_planner() {
    let sc = cheap_account_shared_by_the_fleet();
    let one = offpeak(&sc, &fleet(1, true));
    let default = offpeak(&sc, &PlannerConfig::default());
    assert_eq!(one.workers, 1);
    assert_eq!(
        (
            one.cost,
            one.requests,
            one.rate_limited,
            one.deferrals,
            one.makespan
        ),
        (
            default.cost,
            default.requests,
            default.rate_limited,
            default.deferrals,
            default.makespan
        )
    );
    // With one worker the share is the whole: switching it off changes nothing.
    let unshared = offpeak(&sc, &fleet(1, false));
    assert_eq!((unshared.cost, unshared.requests), (one.cost, one.requests));
}

#[test]
fn a_rate_limit_one_worker_meets_reaches_the_others_with_the_heartbeat() {
    // groq answers 429 (Retry-After 5 min) from 01:00 to 01:30, which no catalog tells.
    let sc = scenario(json!({
        "seed": 4,
        "providers": ["groq", "together"],
        "fleet": { "concurrency": 64 },
        "market": [{
            "provider": "groq", "latency_ms": 300,
            "rate_limited": [{ "from": "01:00", "to": "01:30" }], "retry_after_s": 300
        }],
        "jobs": [{
            "name": "trickle", "count": 400, "model": "llama-3.3-70b-instruct",
            "priority": "deferrable", "arrival": "uniform", "from": "01:00", "to": "02:00",
            "deadline_in": "6h", "input_tokens": 400, "max_tokens": 64
        }]
    }));
    let heard = offpeak(&sc, &fleet(8, true));
    let deaf = offpeak(
        &sc,
        &PlannerConfig {
            heartbeat_s: 1e7,
            ..fleet(8, true)
        },
    );
    assert_eq!(heard.misses(), 0, "{:?}", heard.missed);
    assert!(
        heard.rate_limited < deaf.rate_limited,
        "with heartbeats {} 429s, without {}",
        heard.rate_limited,
        deaf.rate_limited
    );
}
