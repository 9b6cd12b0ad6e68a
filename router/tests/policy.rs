//! The routing policy, branch by branch, on a fixed clock.

use chrono::{DateTime, Duration, TimeZone, Utc};
use router::policy::{route, Availability, Busy, Decision, PolicyConfig};
use router::{DeferReason, Escalation, RouteReason};
use schemas::{Catalog, Job, JobDefaults, JobParser};

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
        Decision::Dispatch { to, reason } => {
            Some((to.provider.name.clone(), reason.is_escalation()))
        }
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
        Decision::Defer { until, reason, .. } => {
            assert_eq!(until, now() + Duration::seconds(600));
            assert!(reason.to_string().contains("cheap"), "{reason}");
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
            reason:
                RouteReason::Escalated {
                    why: Escalation::WouldMissDeadline { .. },
                    ..
                },
        } => {
            assert_eq!(to.provider.name, "mid");
            assert!(
                RouteReason::Escalated {
                    cheapest: "cheap".into(),
                    busy: Busy::RateLimited,
                    why: Escalation::WouldMissDeadline {
                        wait_s: 600,
                        slack_s: 0
                    }
                }
                .to_string()
                .starts_with("escalated: cheapest cheap rate_limited; waiting 600s would miss"),
                "the reason's text is the row's"
            );
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
        Decision::Defer { until, reason, .. } => {
            assert_eq!(until, now() + Duration::hours(1));
            assert!(
                matches!(reason, DeferReason::CheaperWindow { .. }),
                "{reason}"
            );
            assert!(reason.to_string().starts_with("cheaper_window"), "{reason}");
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

// The plan against the worker's capacity: reservations, queue-aware escalation, history.

use router::policy::{plan, AvailabilityView, History};
use router::{Router, RouterConfig, Ticket};
use std::sync::Arc;

fn deferred_until(d: &Decision<'_>) -> Option<DateTime<Utc>> {
    match d {
        Decision::Defer { until, .. } => Some(*until),
        _ => None,
    }
}

/// A router over the test catalog with `cheap` limited to 60 requests a minute, its bucket
/// drained at `now` by 60 dispatches through the router itself.
fn drained_cheap() -> Router {
    let mut c = catalog();
    c.providers[0].limits.rpm = Some(60);
    let cfg = RouterConfig {
        policy: cfg(),
        ..RouterConfig::default()
    };
    let r = Router::new(Arc::new(c), cfg, now());
    for i in 0..60 {
        // Critical jobs take the bucket's burst; deferrable ones would be paced.
        let d = decide(&r, &format!("drain{i}"), r#","priority":"critical""#, now());
        assert_eq!(provider_of(&d), Some(("cheap".into(), false)), "drain {i}");
    }
    assert_eq!(r.in_flight("cheap"), 60);
    r
}

fn decide<'r>(r: &'r Router, id: &str, extra: &str, at: DateTime<Utc>) -> Decision<'r> {
    let line =
        format!(r#"{{"id":"{id}","model":"llama","prompt":"hello there","max_tokens":50{extra}}}"#);
    let j = JobParser::new(JobDefaults::new(now()), None)
        .parse_line(1, &line)
        .unwrap();
    let t = Ticket {
        job: &j,
        key: id,
        history: History::default(),

        turn: None,
    };
    r.decide(&t, at)
}

#[test]
fn deferred_jobs_queue_for_a_rate_limited_provider_one_turn_each() {
    let r = drained_cheap();
    // 60 requests went now: at one a second, the next turn is a minute away, then one each.
    for i in 0..10 {
        let d = decide(&r, &format!("j{i}"), "", now());
        let until = deferred_until(&d).unwrap_or_else(|| panic!("job {i}: {d:?}"));
        let expect = now() + Duration::seconds(60 + i);
        assert!(
            (until - expect).num_milliseconds().abs() <= 5,
            "job {i}: deferred until {until}, expected {expect}"
        );
    }
    assert_eq!(r.reservations(), 10);
}

#[test]
fn job_escalates_now_when_the_queue_ahead_outlasts_its_slack() {
    let r = drained_cheap();
    // Slack = 120 s − 1 s latency − 60 s margin = 59 s, but cheap's next turn is 60 s away.
    let d = decide(&r, "late", r#","deadline_in":"2m""#, now());
    assert_eq!(provider_of(&d), Some(("mid".into(), true)));
    // With a deadline it can afford, the same job waits for its turn instead.
    let d = decide(&r, "early", r#","deadline_in":"10m""#, now());
    assert!(deferred_until(&d).is_some(), "{d:?}");
}

#[test]
fn job_keeps_its_turn_when_it_wakes_early_and_goes_when_it_comes() {
    let r = drained_cheap();
    let first = deferred_until(&decide(&r, "a", "", now())).unwrap();
    for i in 0..5 {
        decide(&r, &format!("b{i}"), "", now());
    }
    // Woken early (say by a cap on one deferral), it keeps its place ahead of the others.
    let later = now() + Duration::seconds(10);
    let again = deferred_until(&decide(&r, "a", "", later)).unwrap();
    assert_eq!(again, first);
    assert_eq!(
        provider_of(&decide(&r, "a", "", first)),
        Some(("cheap".into(), false))
    );
}

#[test]
fn standard_job_waits_at_most_its_allowance_in_all() {
    let c = catalog();
    let j = job(r#","priority":"standard""#);
    let busy = cheap_busy_until(60);
    let view = AvailabilityView(&busy);
    let fresh = plan(&j, &History::default(), &c, &view, now(), &cfg()).decision;
    assert!(deferred_until(&fresh).is_some(), "{fresh:?}");
    // Already deferred 100 s of its 120: a 60 s wait is too long now.
    let waited = History {
        waited: Duration::seconds(100),
        ..History::default()
    };
    let d = plan(&j, &waited, &c, &view, now(), &cfg()).decision;
    assert_eq!(provider_of(&d), Some(("mid".into(), true)));
}

#[test]
fn job_that_failed_repeatedly_stops_waiting_for_a_provider_that_is_down() {
    let c = catalog();
    let j = job("");
    let down = |p: &str| {
        if p == "cheap" {
            Availability::At(now() + Duration::seconds(30), Busy::Down)
        } else {
            Availability::Now
        }
    };
    let view = AvailabilityView(&down);
    let d = plan(&j, &History::default(), &c, &view, now(), &cfg()).decision;
    assert!(deferred_until(&d).is_some(), "{d:?}");
    let worn = History {
        failures: cfg().avoid_down_after_failures,
        ..History::default()
    };
    let d = plan(&j, &worn, &c, &view, now(), &cfg()).decision;
    assert_eq!(provider_of(&d), Some(("mid".into(), true)));
}
