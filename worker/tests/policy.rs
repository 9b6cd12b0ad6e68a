//! The routing policy, branch by branch, on a fixed clock.

use chrono::{DateTime, Duration, TimeZone, Utc};
use schemas::{Catalog, Job, JobDefaults, JobParser};
use worker::policy::{route, Availability, Busy, Decision, PolicyConfig};

const CATALOG: &str = r#"
[[providers]]
name = "cheap"
kind = "openai"
base_url = "http://127.0.0.1:1/cheap/v1"
[[providers.models]]
model = "llama"
id = "llama-cheap"
input_per_mtok = 0.1
output_per_mtok = 0.2

[[providers]]
name = "mid"
kind = "openai"
base_url = "http://127.0.0.1:1/mid/v1"
[[providers.models]]
model = "llama"
id = "llama-mid"
input_per_mtok = 0.5
output_per_mtok = 1.0

[[providers]]
name = "dear"
kind = "anthropic"
base_url = "http://127.0.0.1:1/dear/v1"
[[providers.models]]
model = "llama"
id = "llama-dear"
input_per_mtok = 3.0
output_per_mtok = 15.0
context = 10
schedule = [{ from = "01:00", to = "02:00", multiplier = 0.01 }]
"#;

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 25, 12, 0, 0).unwrap()
}

fn catalog() -> Catalog {
    Catalog::from_toml("test.toml", CATALOG).unwrap()
}

fn job(extra: &str) -> Job {
    let line =
        format!(r#"{{"id":"j","model":"llama","prompt":"hello there","max_tokens":50{extra}}}"#);
    JobParser::new(JobDefaults::new(now()), None)
        .parse_line(1, &line)
        .unwrap()
}

fn cfg() -> PolicyConfig {
    PolicyConfig {
        safety_margin_s: 60.0,
        latency_base_s: 1.0,
        latency_per_output_token_s: 0.0,
        ..Default::default()
    }
}

fn cheap_busy_until(secs: i64) -> impl Fn(&str) -> Availability {
    move |p: &str| {
        if p == "cheap" {
            Availability::At(now() + Duration::seconds(secs), Busy::RateLimited)
        } else {
            Availability::Now
        }
    }
}

fn provider_of(d: &Decision<'_>) -> Option<(String, bool)> {
    match d {
        Decision::Dispatch { to, escalated, .. } => Some((to.provider.name.clone(), *escalated)),
        _ => None,
    }
}

#[test]
fn cheapest_available_pair_gets_the_job() {
    let c = catalog();
    let d = route(&job(""), &c, &|_| Availability::Now, now(), &cfg());
    assert_eq!(provider_of(&d), Some(("cheap".into(), false)));
}

#[test]
fn deferrable_job_waits_for_rate_limited_cheapest_instead_of_escalating() {
    let c = catalog();
    let d = route(
        &job(r#","priority":"deferrable""#),
        &c,
        &cheap_busy_until(600),
        now(),
        &cfg(),
    );
    match d {
        Decision::Defer { until, reason } => {
            assert_eq!(until, now() + Duration::seconds(600));
            assert!(reason.contains("cheap"), "{reason}");
        }
        other => panic!("expected a deferral, got {other:?}"),
    }
}

#[test]
fn critical_job_escalates_to_next_cheapest_with_capacity() {
    let c = catalog();
    let d = route(
        &job(r#","priority":"critical""#),
        &c,
        &cheap_busy_until(5),
        now(),
        &cfg(),
    );
    assert_eq!(provider_of(&d), Some(("mid".into(), true)));
}

#[test]
fn job_whose_deadline_cannot_absorb_the_wait_escalates() {
    let c = catalog();
    // Deadline in 2 minutes: slack = 120 - 1 (latency) - 60 (margin) = 59 s < 600 s wait.
    let d = route(
        &job(r#","deadline_in":"2m""#),
        &c,
        &cheap_busy_until(600),
        now(),
        &cfg(),
    );
    match d {
        Decision::Dispatch {
            to,
            escalated: true,
            reason,
        } => {
            assert_eq!(to.provider.name, "mid");
            assert!(reason.contains("miss the deadline"), "{reason}");
        }
        other => panic!("expected escalation, got {other:?}"),
    }
}

#[test]
fn standard_job_defers_briefly_but_escalates_past_its_limit() {
    let c = catalog();
    let j = job(r#","priority":"standard""#);
    assert!(matches!(
        route(&j, &c, &cheap_busy_until(30), now(), &cfg()),
        Decision::Defer { .. }
    ));
    assert_eq!(
        provider_of(&route(&j, &c, &cheap_busy_until(3600), now(), &cfg())),
        Some(("mid".into(), true))
    );
}

#[test]
fn excluded_and_denied_providers_are_never_chosen() {
    let c = catalog();
    let avail = |p: &str| {
        if p == "cheap" {
            Availability::Excluded
        } else {
            Availability::Now
        }
    };
    assert_eq!(
        provider_of(&route(&job(""), &c, &avail, now(), &cfg())),
        Some(("mid".into(), false))
    );
    let j = job(r#","providers_deny":["cheap","mid"]"#);
    // "dear" has a 10-token context; this job needs more, so nothing can serve it.
    assert!(matches!(
        route(&j, &c, &|_| Availability::Now, now(), &cfg()),
        Decision::Fail {
            kind: "no_provider",
            ..
        }
    ));
}

#[test]
fn job_over_its_budget_fails_instead_of_running() {
    let c = catalog();
    let j = job(r#","max_cost_usd":0.0000001"#);
    assert!(matches!(
        route(&j, &c, &|_| Availability::Now, now(), &cfg()),
        Decision::Fail {
            kind: "over_budget",
            ..
        }
    ));
}

#[test]
fn deferrable_job_waits_for_a_cheaper_price_window_within_its_slack() {
    let mut c = catalog();
    // Make the windowed provider fit the job and the window start at 13:00, an hour away.
    c.providers[2].models[0].context = None;
    c.providers[2].models[0].schedule[0].from = 13 * 60;
    c.providers[2].models[0].schedule[0].to = 14 * 60;
    match route(&job(""), &c, &|_| Availability::Now, now(), &cfg()) {
        Decision::Defer { until, reason } => {
            assert_eq!(until, now() + Duration::hours(1));
            assert!(reason.starts_with("cheaper_window"), "{reason}");
        }
        other => panic!("expected to wait for the window, got {other:?}"),
    }
    // A critical job does not wait for it.
    assert_eq!(
        provider_of(&route(
            &job(r#","priority":"critical""#),
            &c,
            &|_| Availability::Now,
            now(),
            &cfg()
        )),
        Some(("cheap".into(), false))
    );
}

#[test]
fn past_deadline_fails() {
    let c = catalog();
    let j = job(r#","deadline_in":"1m""#);
    let later = now() + Duration::minutes(2);
    assert!(matches!(
        route(&j, &c, &|_| Availability::Now, later, &cfg()),
        Decision::Fail {
            kind: "deadline_passed",
            ..
        }
    ));
}
