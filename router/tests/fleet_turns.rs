//! A deferred job's turn travels with it (docs/routing.md, "The fleet's share of each
//! provider"): the planner that deferred it set the capacity aside and pays for it, and
//! whichever planner of the fleet takes the job at its turn sends it on that capacity, without
//! spending its own share on it.

use chrono::{DateTime, Duration, TimeZone, Utc};
use router::{
    CallOutcome, Decision, FleetShare, History, PolicyConfig, Router, RouterConfig, Ticket,
};
use schemas::{Catalog, Job, JobDefaults, JobParser, Turn};
use std::sync::Arc;

/// `cheap` allows 2 requests a minute to the account; `dear` costs ten times as much, unlimited.
fn catalog() -> Catalog {
    let text = r#"
[[providers]]
name = "cheap"
kind = "openai"
base_url = "http://127.0.0.1:1/cheap/v1"
limits = { rpm = 2 }
[[providers.models]]
model = "m"
id = "m"
input_per_mtok = 1.0
output_per_mtok = 1.0

[[providers]]
name = "dear"
kind = "openai"
base_url = "http://127.0.0.1:1/dear/v1"
[[providers.models]]
model = "m"
id = "m"
input_per_mtok = 10.0
output_per_mtok = 10.0
"#;
    Catalog::from_toml("fleet.toml", text).unwrap()
}

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 25, 12, 0, 0).unwrap()
}

fn job(id: &str) -> Job {
    job_of(id, "deferrable")
}

fn job_of(id: &str, priority: &str) -> Job {
    let deadline = (t0() + Duration::hours(2)).to_rfc3339();
    let line = format!(
        r#"{{"id":"{id}","model":"m","prompt":"hi","max_tokens":10,"priority":"{priority}","deadline":"{deadline}"}}"#
    );
    JobParser::new(JobDefaults::new(t0()), None)
        .parse_line(1, &line)
        .unwrap()
}

/// One of two planners sharing the accounts: 1 request a minute of `cheap` each.
fn planner(rank: u32) -> Router {
    let cfg = RouterConfig {
        policy: PolicyConfig {
            safety_margin_s: 60.0,
            ..PolicyConfig::default()
        },
        ..RouterConfig::default()
    };
    let r = Router::new(Arc::new(catalog()), cfg, t0());
    r.set_fleet(FleetShare::new(2, rank));
    r
}

fn decide<'r>(
    r: &'r Router,
    j: &Job,
    waited: Duration,
    turn: Option<&Turn>,
    at: DateTime<Utc>,
) -> Decision<'r> {
    let t = Ticket {
        job: j,
        key: &j.id.0,
        history: History {
            waited,
            ..History::default()
        },
        turn,
    };
    r.decide(&t, at)
}

/// The provider a dispatch went to, else `None`.
fn sent_to(d: &Decision<'_>) -> Option<String> {
    match d {
        Decision::Dispatch { to, .. } => Some(to.provider.name.clone()),
        _ => None,
    }
}

fn answered_in() -> CallOutcome {
    let latency = std::time::Duration::from_millis(100);
    CallOutcome::Answered { latency }
}

fn answered(r: &Router, provider: &str, at: DateTime<Utc>) {
    r.record(provider, answered_in(), at);
}

#[test]
fn a_job_deferred_by_one_planner_goes_at_its_turn_from_another_on_the_first_ones_capacity() {
    let (a, b) = (planner(0), planner(1));
    // Planner A spends its minute's request, and defers the next job for its next one.
    let w = job("w");
    assert_eq!(
        sent_to(&decide(&a, &w, Duration::zero(), None, t0())).as_deref(),
        Some("cheap")
    );
    answered(&a, "cheap", t0());
    let x = job("x");
    let turn = match decide(&a, &x, Duration::zero(), None, t0()) {
        Decision::Defer { turn, until, .. } => {
            let turn = turn.expect("a deferral for capacity carries its turn");
            assert_eq!(turn.provider, "cheap");
            assert_eq!(turn.at, until, "deferred until its turn");
            assert!(turn.at >= t0() + Duration::seconds(59), "{turn:?}");
            turn
        }
        other => panic!("x should wait for cheap capacity: {other:?}"),
    };
    assert_eq!(a.reservations(), 1);

    // At its turn, x comes back at planner B, which goes on A's promise: cheap, not dear,
    // and without a reservation of its own.
    let at = turn.at;
    let d = decide(&b, &x, at - t0(), Some(&turn), at);
    assert_eq!(sent_to(&d).as_deref(), Some("cheap"), "{d:?}");
    assert_eq!(b.reservations(), 0);
    answered(&b, "cheap", at);
    // B's own share is untouched: its own minute's request still goes at once.
    let y = job("y");
    assert_eq!(
        sent_to(&decide(&b, &y, Duration::zero(), None, at)).as_deref(),
        Some("cheap"),
        "B paid for A's promise out of its own share"
    );

    // A, seeing x not come back, counts the turn as used: its next request is a minute later,
    // not at once (which would put the fleet over the account's 2 a minute).
    let later = at + Duration::seconds(31);
    let z = job("z");
    match decide(&a, &z, Duration::zero(), None, later) {
        Decision::Defer { until, .. } => {
            assert!(until >= at + Duration::seconds(59), "{until} vs turn {at}")
        }
        other => panic!("A's capacity at x's turn was used; z must wait: {other:?}"),
    }
    assert_eq!(a.reservations(), 1, "x's reservation is gone, z's is held");
}

#[test]
fn a_turn_woken_early_elsewhere_is_carried_on_not_reserved_twice() {
    let (a, b) = (planner(0), planner(1));
    let w = job("w");
    decide(&a, &w, Duration::zero(), None, t0());
    answered(&a, "cheap", t0());
    let x = job("x");
    let Decision::Defer {
        turn: Some(turn), ..
    } = decide(&a, &x, Duration::zero(), None, t0())
    else {
        panic!("x should wait for cheap capacity");
    };
    // B has used its own share for the next two minutes.
    let (y1, y2) = (job("y1"), job("y2"));
    assert!(sent_to(&decide(&b, &y1, Duration::zero(), None, t0())).is_some());
    answered(&b, "cheap", t0());
    assert!(matches!(
        decide(&b, &y2, Duration::zero(), None, t0()),
        Decision::Defer { .. }
    ));
    assert_eq!(b.reservations(), 1);
    // x wakes at B half-way to its turn: B sends it back until the same turn, holding nothing.
    let early = t0() + (turn.at - t0()) / 2;
    match decide(&b, &x, early - t0(), Some(&turn), early) {
        Decision::Defer {
            until, turn: kept, ..
        } => {
            assert_eq!(until, turn.at);
            assert_eq!(kept.as_ref(), Some(&turn));
        }
        other => panic!("x keeps its turn: {other:?}"),
    }
    assert_eq!(b.reservations(), 1, "y2's only");
}

#[test]
fn an_open_circuit_and_its_closing_are_news_for_the_fleet() {
    let (a, b) = (planner(0), planner(1));
    let x = job("x");
    let mut now = t0();
    // A sends to cheap and sees it fail until its circuit opens.
    for i in 0..5 {
        if i > 0 {
            now += Duration::seconds(70);
        }
        let d = decide(&a, &x, Duration::zero(), None, now);
        assert_eq!(sent_to(&d).as_deref(), Some("cheap"), "{d:?}");
        let failed = CallOutcome::Failed {
            class: router::ErrorClass::Transient,
            retry_after: None,
        };
        a.record("cheap", failed, now);
    }
    let found = a.findings(now);
    let down = found
        .iter()
        .find(|f| f.key == "cheap" && f.kind == router::FaultKind::Down)
        .expect("an open circuit is a finding");
    // B takes it in: a job that cannot wait goes to dear instead of probing cheap.
    let y = job_of("y", "critical");
    b.apply_findings(&found, now);
    let d = decide(&b, &y, Duration::zero(), None, now);
    assert_eq!(sent_to(&d).as_deref(), Some("dear"), "{d:?}");
    b.record("dear", answered_in(), now);

    // A's trial request after the open period succeeds; B hears it and sends to cheap again.
    let later = down.until + Duration::seconds(61);
    let d = decide(&a, &x, Duration::zero(), None, later);
    assert_eq!(sent_to(&d).as_deref(), Some("cheap"), "{d:?}");
    answered(&a, "cheap", later);
    let found = a.findings(later);
    assert!(
        found
            .iter()
            .any(|f| f.key == "cheap" && f.kind == router::FaultKind::Up),
        "{found:?}"
    );
    // Before B's own circuit would half-open (it opened until the same instant: move that on).
    b.apply_findings(
        &[router::SharedFault {
            key: "cheap".into(),
            kind: router::FaultKind::Down,
            until: later + Duration::minutes(5),
        }],
        later - Duration::seconds(10),
    );
    b.apply_findings(&found, later);
    let z = job_of("z", "critical");
    let d = decide(&b, &z, Duration::zero(), None, later);
    assert_eq!(sent_to(&d).as_deref(), Some("cheap"), "{d:?}");
}
