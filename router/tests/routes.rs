//! Batch and flex routes (DESIGN §5, Routes): when a job goes to a provider's batch API or flex
//! tier, and when it stays realtime.

use chrono::{DateTime, Duration, TimeZone, Utc};
use router::{
    CallOutcome, Decision, ErrorClass, History, PolicyConfig, Router, RouterConfig, Ticket,
};
use schemas::{Catalog, Job, JobDefaults, JobParser, Route};
use std::sync::Arc;

/// `rt` sells realtime only; `bat` is dearer realtime but has a batch API at half price (prior
/// turnaround as given) and a flex tier at 0.6 ×.
fn catalog(turnaround: &str) -> Catalog {
    let text = format!(
        r#"
[[providers]]
name = "rt"
kind = "openai"
base_url = "http://127.0.0.1:1/rt/v1"
[[providers.models]]
model = "m"
id = "m-rt"
input_per_mtok = 1.0
output_per_mtok = 2.0

[[providers]]
name = "bat"
kind = "openai"
base_url = "http://127.0.0.1:1/bat/v1"
[[providers.models]]
model = "m"
id = "m-bat"
input_per_mtok = 1.2
output_per_mtok = 2.4
batch = {{ discount = 0.5, window = "24h"{turnaround} }}
flex = {{ multiplier = 0.6 }}
"#
    );
    Catalog::from_toml("routes.toml", &text).unwrap()
}

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 25, 12, 0, 0).unwrap()
}

fn job(id: &str, priority: &str, deadline_h: i64) -> Job {
    let deadline = (now() + Duration::hours(deadline_h)).to_rfc3339();
    let line = format!(
        r#"{{"id":"{id}","model":"m","prompt":"hello there","max_tokens":50,"priority":"{priority}","deadline":"{deadline}"}}"#
    );
    JobParser::new(JobDefaults::new(now()), None)
        .parse_line(1, &line)
        .unwrap()
}

fn router(turnaround: &str) -> Router {
    let cfg = RouterConfig {
        policy: PolicyConfig {
            safety_margin_s: 60.0,
            batch_fallback_s: 1800.0,
            ..PolicyConfig::default()
        },
        ..RouterConfig::default()
    };
    Router::new(Arc::new(catalog(turnaround)), cfg, now())
}

/// (route, provider, price of one input Mtok) of a dispatch or batch decision.
fn routed(d: &Decision<'_>) -> Option<(Route, String, f64)> {
    match d {
        Decision::Dispatch { to, .. } | Decision::Batch { to, .. } => {
            Some((to.route, to.provider.name.clone(), to.price.input_per_mtok))
        }
        _ => None,
    }
}

fn decide<'r>(r: &'r Router, j: &Job, history: History) -> Decision<'r> {
    let t = Ticket {
        job: j,
        key: &j.id.0,
        history,

        turn: None,
    };
    r.decide(&t, now())
}

#[test]
fn deferrable_job_with_slack_for_the_turnaround_goes_to_the_batch_at_half_price() {
    let r = router(r#", turnaround = "1h""#);
    let j = job("a", "deferrable", 24);
    let d = decide(&r, &j, History::default());
    assert_eq!(routed(&d), Some((Route::Batch, "bat".into(), 0.6)));
    assert!(!d.escalated(), "{d:?}");
    // A batch holds no request capacity: the realtime bucket is untouched.
    assert_eq!(r.in_flight("bat"), 0);
}

#[test]
fn batch_needs_slack_for_turnaround_plus_the_realtime_fallback() {
    let r = router(r#", turnaround = "1h""#);
    // 1 h turnaround + 30 min fallback + margins do not fit in 80 minutes: flex, the next
    // cheapest, takes it (and it is not an escalation: the batch was never an option).
    let j = job("b", "deferrable", 1);
    let d = decide(&r, &j, History::default());
    assert_eq!(routed(&d), Some((Route::Flex, "bat".into(), 0.72)));
    assert!(!d.escalated(), "{d:?}");
    let j = job("c", "deferrable", 2);
    assert_eq!(
        routed(&decide(&r, &j, History::default())).unwrap().0,
        Route::Batch
    );
}

#[test]
fn only_deferrable_jobs_no_batch_gave_back_go_to_a_batch() {
    let r = router(r#", turnaround = "1h""#);
    for p in ["standard", "critical"] {
        let j = job(p, p, 24);
        assert_eq!(
            routed(&decide(&r, &j, History::default())).unwrap().0,
            Route::Flex,
            "{p}"
        );
    }
    let j = job("back", "deferrable", 24);
    let back = History {
        batches: 1,
        ..History::default()
    };
    assert_eq!(routed(&decide(&r, &j, back)).unwrap().0, Route::Flex);
}

#[test]
fn without_a_published_turnaround_the_window_holds_until_a_batch_is_seen() {
    let r = router("");
    let j = job("d", "deferrable", 24);
    // The 24 h window leaves no room for the fallback within a 24 h deadline.
    assert_eq!(
        routed(&decide(&r, &j, History::default())).unwrap().0,
        Route::Flex
    );
    r.observe_turnaround("bat", "m", Duration::minutes(20));
    assert_eq!(
        r.expected_turnaround("bat", "m"),
        Some(Duration::minutes(20))
    );
    let j = job("e", "deferrable", 24);
    assert_eq!(
        routed(&decide(&r, &j, History::default())).unwrap().0,
        Route::Batch
    );
    // The expectation is the slowest of the batches seen lately.
    r.observe_turnaround("bat", "m", Duration::minutes(23 * 60 + 45));
    r.observe_turnaround("bat", "m", Duration::minutes(5));
    assert_eq!(
        r.expected_turnaround("bat", "m"),
        Some(Duration::minutes(23 * 60 + 45))
    );
    let j = job("f", "deferrable", 24);
    assert_eq!(
        routed(&decide(&r, &j, History::default())).unwrap().0,
        Route::Flex
    );
}

#[test]
fn flex_capacity_is_its_own_and_its_429_sends_urgent_work_realtime() {
    let r = router(r#", turnaround = "1h""#);
    let j = job("g", "critical", 1);
    let d = decide(&r, &j, History::default());
    assert_eq!(routed(&d), Some((Route::Flex, "bat".into(), 0.72)));
    assert_eq!(r.in_flight("bat/flex"), 1);
    assert_eq!(r.in_flight("bat"), 0);
    drop(d);
    r.record(
        "bat/flex",
        CallOutcome::Failed {
            class: ErrorClass::RateLimited,
            retry_after: Some(std::time::Duration::from_secs(600)),
        },
        now(),
    );
    // A critical job does not wait for flex: realtime at `rt`, the cheapest with capacity.
    let j = job("h", "critical", 1);
    let d = decide(&r, &j, History::default());
    assert_eq!(routed(&d), Some((Route::Realtime, "rt".into(), 1.0)));
    assert!(d.escalated(), "{d:?}");
    // A deferrable job with slack waits for flex instead of paying realtime.
    let j = job("i", "deferrable", 1);
    match decide(&r, &j, History::default()) {
        Decision::Defer { reason, .. } => {
            assert!(reason.to_string().contains("bat/flex"), "{reason}")
        }
        other => panic!("expected a deferral for flex, got {other:?}"),
    }
}
