//! The batch and flex routes in `bench market`: offpeak hands deferrable jobs to a provider
//! batch and pays the batch price for what it finishes; what a batch gives back (expired,
//! failed, or cancelled when its jobs' safe time comes) finishes realtime by the deadline; the
//! gateway stays realtime and `diy-batch` batches by hand; the lower bound counts batch and
//! flex prices.

use market::{lower_bound, run, BoundOptions, MarketScenario, PlannerConfig, PolicyKind};
use market::{RunReport, ScenarioSpec};
use schemas::{Catalog, Route};
use serde_json::{json, Value};

fn catalog() -> Catalog {
    Catalog::from_toml(
        "examples/catalog.toml",
        include_str!("../../examples/catalog.toml"),
    )
    .unwrap()
}

fn scenario(spec: Value) -> MarketScenario {
    let spec: ScenarioSpec = serde_json::from_value(spec).unwrap();
    spec.build(&catalog(), "test").unwrap()
}

fn go(sc: &MarketScenario, kind: PolicyKind) -> RunReport {
    run(sc, kind, &PlannerConfig::default())
}

/// What the jobs cost at `model`'s list price on `provider`, times `factor`.
fn list_cost(sc: &MarketScenario, provider: &str, model: &str, factor: f64) -> f64 {
    let offer = sc
        .catalog
        .provider(provider)
        .unwrap()
        .models
        .iter()
        .find(|m| m.model == model)
        .unwrap();
    let p = offer.base_price();
    sc.jobs
        .iter()
        .map(|j| p.cost(j.input_tokens, j.output_tokens).0 * factor)
        .sum()
}

/// The lower bound of `sc` (batch and flex prices counted), checked to be no more than what
/// `run` paid.
fn bound_under(sc: &MarketScenario, run: &RunReport) -> f64 {
    let lb = lower_bound(sc, &BoundOptions::default()).usd.0;
    assert!(lb <= run.cost.0 + 1e-9, "bound {lb} over {}", run.cost.0);
    lb
}

/// 200 gpt-4o-mini jobs at 01:00, due in `deadline`; OpenAI's batches behave as `batch`.
fn openai_batch(batch: Value, deadline: &str) -> MarketScenario {
    scenario(json!({
        "seed": 4,
        "providers": ["openai"],
        "market": [{ "provider": "openai", "latency_ms": 500, "batch": batch }],
        "jobs": [{
            "name": "eval", "count": 200, "model": "gpt-4o-mini", "priority": "deferrable",
            "arrival": "burst", "from": "01:00", "deadline_in": deadline,
            "input_tokens": [500, 2000], "max_tokens": 256
        }]
    }))
}

#[test]
fn offpeak_sends_deferrable_jobs_through_the_batch_api_at_the_batch_price() {
    let sc = openai_batch(json!({ "turnaround": "30m", "jitter": 0 }), "24h");
    let offpeak = go(&sc, PolicyKind::Offpeak);
    assert_eq!(offpeak.misses(), 0, "{:?}", offpeak.missed);
    assert_eq!(offpeak.route(Route::Batch).jobs, 200, "{offpeak:?}");
    assert_eq!(offpeak.batches.submitted, 1, "{offpeak:?}");
    assert_eq!(offpeak.requests, 0, "no realtime request: {offpeak:?}");
    // Half the list price (OpenAI's batch discount), to the cent's fraction.
    let half = list_cost(&sc, "openai", "gpt-4o-mini", 0.5);
    assert!(
        (offpeak.cost.0 - half).abs() < 1e-6,
        "{} vs {half}",
        offpeak.cost.0
    );
    // The gathered jobs are done when the batch is: 01:00 + 5 min of gathering + 30 min.
    assert_eq!(offpeak.makespan.num_minutes(), 35, "{offpeak:?}");
    // The bound counts the batch price too, and stays below what offpeak paid.
    let lb = bound_under(&sc, &offpeak);
    assert!(
        lb >= 0.99 * half,
        "bound {lb} far below the batch price {half}"
    );
}

#[test]
fn an_expiring_batch_gives_its_remainder_back_to_finish_realtime_before_deadlines() {
    let sc = openai_batch(
        json!({ "turnaround": "40m", "jitter": 0, "expire": [1], "expire_done": 0.5 }),
        "3h",
    );
    let offpeak = go(&sc, PolicyKind::Offpeak);
    assert_eq!(offpeak.batches.expired, 1, "{offpeak:?}");
    assert_eq!(offpeak.batches.lines_back, 100, "{offpeak:?}");
    assert_eq!(offpeak.route(Route::Batch).jobs, 100, "{offpeak:?}");
    assert_eq!(offpeak.route(Route::Realtime).jobs, 100, "{offpeak:?}");
    assert_eq!(offpeak.misses(), 0, "{:?}", offpeak.missed);
    assert_eq!(offpeak.completed, 200);
    // Given back at 01:45, the remainder went realtime at once: done well before 04:00.
    assert!(offpeak.makespan.num_minutes() < 60, "{offpeak:?}");
}

#[test]
fn a_stuck_batch_is_cancelled_at_the_safe_time_and_its_jobs_finish_realtime() {
    // The workers expect 30 minutes; every batch takes 20 hours. Due in 4 h, the jobs' safe
    // time is 4 h − latency − the 5 min margin − the 30 min kept for the realtime fallback.
    let stuck = json!({ "turnaround": "30m", "jitter": 0, "tail": 1.0, "tail_turnaround": "20h" });
    let sc = openai_batch(stuck, "4h");
    let offpeak = go(&sc, PolicyKind::Offpeak);
    assert_eq!(offpeak.batches.submitted, 1, "{offpeak:?}");
    assert_eq!(offpeak.batches.cancelled, 1, "{offpeak:?}");
    assert_eq!(offpeak.misses(), 0, "{:?}", offpeak.missed);
    assert_eq!(offpeak.completed, 200);
    // What the batch had finished by the cancel (about 3 h 20 min of 20 h) is kept at the
    // batch price; the rest went realtime.
    let kept = offpeak.route(Route::Batch).jobs;
    assert!((25..=40).contains(&kept), "{offpeak:?}");
    assert_eq!(kept + offpeak.route(Route::Realtime).jobs, 200);
    // Nobody cancels a batch made by hand: it is waited for, and every job is late.
    let diy = go(&sc, PolicyKind::DiyBatch);
    assert_eq!(diy.batches.cancelled, 0, "{diy:?}");
    assert_eq!(diy.late, 200, "{diy:?}");
}

/// o4-mini on OpenAI has a batch route and a flex tier (8 requests at once): 150 deferrable jobs
/// due in 24 h and 150 standard ones due in 1 h.
fn o4_mini_routes() -> MarketScenario {
    scenario(json!({
        "seed": 8,
        "providers": ["openai"],
        "market": [{
            "provider": "openai", "latency_ms": 500, "per_output_token_ms": 5,
            "flex": { "concurrency": 8 }, "batch": { "turnaround": "40m" }
        }],
        "jobs": [
            { "name": "eval", "count": 150, "model": "o4-mini", "priority": "deferrable",
              "arrival": "burst", "from": "01:00", "deadline_in": "24h",
              "input_tokens": [500, 2000], "max_tokens": 256 },
            { "name": "review", "count": 150, "model": "o4-mini", "priority": "standard",
              "arrival": "uniform", "from": "08:00", "to": "10:00", "deadline_in": "1h",
              "input_tokens": [500, 2000], "max_tokens": 256 }
        ]
    }))
}

#[test]
fn gateway_stays_realtime_and_diy_batch_uses_no_flex_tier() {
    let sc = o4_mini_routes();
    let gateway = go(&sc, PolicyKind::Gateway);
    assert_eq!(gateway.route(Route::Realtime).jobs, 300, "{gateway:?}");
    assert_eq!(gateway.batches.submitted, 0, "{gateway:?}");
    let list = list_cost(&sc, "openai", "o4-mini", 1.0);
    assert!(
        (gateway.cost.0 - list).abs() < 1e-6,
        "{} vs {list}",
        gateway.cost.0
    );

    let diy = go(&sc, PolicyKind::DiyBatch);
    assert_eq!(diy.misses(), 0, "{:?}", diy.missed);
    assert_eq!(diy.route(Route::Flex).jobs, 0, "{diy:?}");
    assert_eq!(diy.route(Route::Batch).jobs, 150, "{diy:?}");
    assert_eq!(diy.route(Route::Realtime).jobs, 150, "{diy:?}");
}

#[test]
fn offpeak_sends_standard_jobs_to_the_flex_tier_within_its_capacity() {
    let sc = o4_mini_routes();
    let offpeak = go(&sc, PolicyKind::Offpeak);
    assert_eq!(offpeak.misses(), 0, "{:?}", offpeak.missed);
    // Flex and batch are both half price: the deferrable jobs take either, the standard ones
    // (no batch for them) the flex tier, none realtime.
    assert!(offpeak.route(Route::Batch).jobs >= 140, "{offpeak:?}");
    let flex = offpeak.route(Route::Flex);
    assert!(flex.jobs >= 150, "{offpeak:?}");
    assert_eq!(offpeak.route(Route::Realtime).jobs, 0, "{offpeak:?}");
    // At half price, as the batch route: the whole run costs half the list price.
    let half = list_cost(&sc, "openai", "o4-mini", 0.5);
    let realtime = offpeak.route(Route::Realtime).cost.0;
    assert!(
        offpeak.cost.0 <= half + realtime + 1e-6,
        "{offpeak:?} vs {half}"
    );
    let lb = bound_under(&sc, &offpeak);
    assert!(
        lb <= 0.55 * list_cost(&sc, "openai", "o4-mini", 1.0),
        "bound {lb}"
    );
}
