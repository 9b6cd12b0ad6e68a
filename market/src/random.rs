//! Random markets and traces built from a catalog — scenarios the policy was never tuned on:
//! random limits (some tight, some generous), extra time-of-day price windows, outages and 429
//! windows, latencies, error rates, and a mix of job classes with random arrival patterns,
//! priorities, deadlines and sizes. Every model in the trace keeps one generous provider
//! without outages, so every job can meet its deadline.

use crate::scenario::{
    Arrival, DeadlineIn, FleetSpec, Interval, JobClass, Offset, ProviderMarket, Range, ScenarioSpec,
};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use schemas::catalog::PriceWindow;
use schemas::{Catalog, Priority};
use std::collections::BTreeMap;

/// A random scenario of about `jobs` jobs over a day from `catalog`, and the catalog it runs on
/// (the input plus any price windows drawn).
///
/// Long (over 100 lines) on purpose: the draws are made in one fixed order — market, windows,
/// outages, job classes, arrivals — so a seed gives the same scenario on every version;
/// splitting it would thread the one random generator through every piece.
pub fn random_spec(catalog: &Catalog, seed: u64, jobs: usize) -> (ScenarioSpec, Catalog) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut cat = catalog.clone();
    let mut servers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for p in &cat.providers {
        for m in &p.models {
            servers
                .entry(m.model.clone())
                .or_default()
                .push(p.name.clone());
        }
    }
    let (mut multi, mut single): (Vec<String>, Vec<String>) =
        servers.keys().cloned().partition(|m| servers[m].len() > 1);
    multi.shuffle(&mut rng);
    single.shuffle(&mut rng);
    let want = rng.random_range(1..=3usize);
    let mut models = Vec::new();
    while models.len() < want && !(multi.is_empty() && single.is_empty()) {
        let from_multi = !multi.is_empty() && (single.is_empty() || rng.random_bool(0.8));
        let pick = if from_multi {
            multi.pop()
        } else {
            single.pop()
        };
        models.extend(pick);
    }
    let providers: Vec<String> = cat
        .providers
        .iter()
        .filter(|p| p.models.iter().any(|m| models.contains(&m.model)))
        .map(|p| p.name.clone())
        .collect();
    // One generous provider without outages per model: every job can always be served.
    let mut backstops = Vec::new();
    for m in &models {
        let s = &servers[m];
        backstops.push(s[rng.random_range(0..s.len())].clone());
    }
    for p in cat.providers.iter_mut() {
        if !providers.contains(&p.name) {
            continue;
        }
        for m in p.models.iter_mut() {
            if m.schedule.is_empty() && rng.random_bool(0.35) {
                let from = rng.random_range(0..48u32) * 30;
                let len = rng.random_range(4..=16u32) * 30;
                m.schedule.push(PriceWindow::daily(
                    from,
                    (from + len) % 1440,
                    (rng.random_range(0.4..0.85f64) * 100.0).round() / 100.0,
                ));
            }
        }
    }
    let hours = |rng: &mut StdRng, a: f64, b: f64| Offset::hours(rng.random_range(a..b));
    let market = providers
        .iter()
        .map(|name| {
            let mut m = ProviderMarket::plain(name);
            m.latency_ms = rng.random_range(200.0..1500.0);
            m.per_output_token_ms = rng.random_range(2.0..20.0);
            m.jitter = rng.random_range(0.1..0.3);
            if rng.random_bool(0.5) {
                m.error_rate = rng.random_range(0.0..0.01);
            }
            if backstops.contains(name) {
                m.rpm = Some(rng.random_range(2000..5000));
                m.tpm = Some(rng.random_range(2_000_000..4_000_000));
                m.concurrency = Some(rng.random_range(128..256));
                return m;
            }
            if rng.random_bool(0.6) {
                m.rpm = Some(rng.random_range(20..400));
                m.tpm = Some(rng.random_range(20_000..400_000));
                m.concurrency = Some(rng.random_range(8..64));
            } else {
                m.rpm = Some(rng.random_range(300..1500));
                m.tpm = Some(rng.random_range(200_000..1_500_000));
            }
            if rng.random_bool(0.35) {
                let from = hours(&mut rng, 0.0, 22.0);
                let to = Offset(from.ms() + Offset::hours(rng.random_range(0.25..3.0)).ms());
                m.outages.push(Interval { from, to });
            }
            if rng.random_bool(0.2) {
                let from = hours(&mut rng, 0.0, 22.0);
                let to = Offset(from.ms() + Offset::hours(rng.random_range(0.08..1.0)).ms());
                m.rate_limited.push(Interval { from, to });
            }
            m
        })
        .collect();
    let classes = rng.random_range(2..=4usize);
    let weights: Vec<f64> = (0..classes).map(|_| rng.random_range(0.2..1.0)).collect();
    let total: f64 = weights.iter().sum();
    let mut job_classes = Vec::new();
    for (i, w) in weights.iter().enumerate() {
        let count = ((jobs as f64 * w / total).round() as usize).max(1);
        let (model, alt) = if models.len() > 1 && rng.random_bool(0.2) {
            let mut two = models.clone();
            two.shuffle(&mut rng);
            two.truncate(2);
            (None, two)
        } else {
            (
                Some(models[rng.random_range(0..models.len())].clone()),
                vec![],
            )
        };
        let u = rng.random::<f64>();
        let (priority, lo, hi) = if u < 0.15 {
            (Priority::Critical, 0.17, 1.0)
        } else if u < 0.4 {
            (Priority::Standard, 1.0, 4.0)
        } else {
            (Priority::Deferrable, 4.0, 24.0)
        };
        let d_lo = rng.random_range(lo..hi);
        let d_hi = d_lo * rng.random_range(1.0..2.0);
        // Batches arrive at once; jobs that cannot wait come as a stream (a burst of them can
        // only be spread over dearer pairs, by contract, and says little about routing).
        let arrival = match rng.random_range(0..4) {
            0 if priority == Priority::Deferrable => Arrival::Burst,
            0 | 1 => Arrival::Uniform,
            2 => Arrival::Diurnal,
            _ => Arrival::Even,
        };
        let from = hours(&mut rng, 0.0, 20.0);
        let to = Offset(from.ms() + Offset::hours(rng.random_range(1.0..10.0)).ms());
        let in_lo = rng.random_range(100.0..2000.0f64).round();
        job_classes.push(JobClass {
            name: format!("c{i}"),
            count,
            model,
            models: alt,
            priority,
            arrival,
            from,
            to: Some(to),
            peak: Some(hours(&mut rng, 0.0, 24.0)),
            deadline_in: DeadlineIn::Two([Offset::hours(d_lo), Offset::hours(d_hi)]),
            input_tokens: Range::Two([in_lo, (in_lo * rng.random_range(1.0..4.0)).round()]),
            max_tokens: rng.random_range(64..=1024),
            output_fill: Range::Two([0.3, 1.0]),
        });
    }
    let spec = ScenarioSpec {
        name: Some(format!("random-{seed}")),
        seed,
        providers: Some(providers),
        fleet: FleetSpec::default(),
        market,
        jobs: job_classes,
        ..Default::default()
    };
    (spec, cat)
}
