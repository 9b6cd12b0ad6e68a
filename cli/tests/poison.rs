//! Poison messages (issue 4): payloads no worker can process — not JSON, an unknown schema
//! version, missing fields, an oversized prompt — are published straight to the broker. A real
//! `offpeak worker` dead-letters each with its reason, writes a `failed` row wherever the job
//! id is known, and keeps serving the good job published behind them. On both brokers.

mod support;

use schemas::{Envelope, JobDefaults, JobParser, ResultStatus, RunId};
use std::time::{Duration, Instant};
use support::*;

const SCENARIO: &str = r#"
seed = 1
[[providers]]
name = "cheap"
kind = "openai"
models = ["m-cheap"]
latency_ms = 2
"#;

fn envelope(run: &str, line: &str) -> Envelope {
    let now = chrono::Utc::now();
    let job = JobParser::new(JobDefaults::new(now), None)
        .parse_line(1, line)
        .unwrap();
    Envelope::new(RunId::new(run).unwrap(), now, job)
}

fn poison_messages_are_dead_lettered_with_a_failed_row_and_the_worker_goes_on(
    broker: &str,
    prompt_bytes: usize,
    max_prompt_bytes: Option<usize>,
) {
    let mut fleet = Fleet::start(broker, SCENARIO, ONE_PROVIDER_CATALOG);
    if let Some(max) = max_prompt_bytes {
        fleet
            .extra_env
            .push(("OFFPEAK_WORKER__MAX_PROMPT_BYTES".into(), max.to_string()));
    }
    let run = "poison";
    let now = chrono::Utc::now().to_rfc3339();
    let mut bad_version = serde_json::to_value(envelope(
        run,
        r#"{"id":"bad-version","model":"m","prompt":"x"}"#,
    ))
    .unwrap();
    bad_version["schema_version"] = 99.into();
    // A version-99 message may look nothing like version 1: no messages at all.
    let mut bad_version_shape = bad_version.clone();
    bad_version_shape["id"] = "bad-version-shape".into();
    bad_version_shape
        .as_object_mut()
        .unwrap()
        .remove("messages");
    let missing = serde_json::json!({
        "schema_version": 1, "run_id": run, "id": "missing-fields", "submitted_at": now,
        "priority": "standard"
    });
    let big = envelope(
        run,
        &serde_json::json!({"id": "huge-prompt", "model": "m", "prompt": "x".repeat(prompt_bytes)})
            .to_string(),
    );
    let good = envelope(
        run,
        r#"{"id":"good","model":"m","prompt":"hello","max_tokens":5}"#,
    );
    let payloads: Vec<(String, Vec<u8>)> = vec![
        ("not-json".into(), b"\x00\xffnot json {".to_vec()),
        ("bad-version".into(), bad_version.to_string().into_bytes()),
        (
            "bad-version-shape".into(),
            bad_version_shape.to_string().into_bytes(),
        ),
        ("missing-fields".into(), missing.to_string().into_bytes()),
        ("huge-prompt".into(), big.to_bytes()),
        ("good".into(), good.to_bytes()),
    ];
    fleet.publish_raw(run, payloads);

    let mut w = fleet.worker("p0");
    let start = Instant::now();
    let (rows, dead) = loop {
        let rows = store::dedup(fleet.rows(run));
        let dead = fleet.dead_letters();
        if rows.len() >= 5 && dead.len() >= 5 {
            break (rows, dead);
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "rows {rows:?}\ndead letters {dead:?}\n{}",
            w.log_text()
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    assert!(
        w.child.try_wait().unwrap().is_none(),
        "the worker died:\n{}",
        w.log_text()
    );

    let row = |id: &str| {
        rows.iter()
            .find(|r| r.job_id == id)
            .unwrap_or_else(|| panic!("no row for {id}: {rows:?}"))
    };
    assert_eq!(rows.len(), 5, "{rows:?}");
    assert_eq!(row("good").status, ResultStatus::Succeeded);
    for (id, kind, says) in [
        ("bad-version", "poison", "unknown schema_version 99"),
        ("bad-version-shape", "poison", "unknown schema_version 99"),
        ("missing-fields", "poison", "missing field"),
        ("huge-prompt", "limit", "max_prompt_bytes"),
    ] {
        let r = row(id);
        assert_eq!(r.status, ResultStatus::Failed, "{r:?}");
        assert_eq!(r.error_kind.as_deref(), Some(kind), "{r:?}");
        let m = r.error_message.as_deref().unwrap_or_default();
        assert!(m.contains(says), "{id}: {m}");
    }

    assert_eq!(dead.len(), 5, "{dead:?}");
    let reason_of = |needle: &[u8]| {
        dead.iter()
            .find(|d| d.payload.windows(needle.len()).any(|w| w == needle))
            .map(|d| d.reason.clone())
            .unwrap_or_else(|| panic!("no dead letter with {:?}", text(needle)))
    };
    assert!(reason_of(b"not json").contains("unreadable message"));
    assert!(reason_of(b"\"bad-version\"").contains("unknown schema_version 99"));
    assert!(reason_of(b"\"bad-version-shape\"").contains("unknown schema_version 99"));
    assert!(reason_of(b"\"missing-fields\"").contains("missing field"));
    assert!(reason_of(b"\"huge-prompt\"").contains("max_prompt_bytes"));

    assert!(w
        .terminate(Duration::from_secs(60))
        .is_some_and(|s| s.success()));
    // A job failing before any provider call is said at WARN, with its kind and reason.
    let log = w.log_text();
    assert!(
        log.lines().any(|l| l.contains("WARN")
            && l.contains("job failed")
            && l.contains("limit")
            && l.contains("max_prompt_bytes")),
        "{log}"
    );
}

/// NATS refuses messages over its `max_payload` (1 MB by default), so the oversized prompt is
/// 600 kB against a 500 kB limit here.
#[test]
fn nats_poison_messages_are_dead_lettered_with_a_failed_row_and_the_worker_goes_on() {
    poison_messages_are_dead_lettered_with_a_failed_row_and_the_worker_goes_on(
        &nats_url(),
        600_000,
        Some(500_000),
    );
}

/// RabbitMQ carries a real 10 MB prompt, over the default 4 MiB limit.
#[test]
fn rabbitmq_poison_messages_are_dead_lettered_with_a_failed_row_and_the_worker_goes_on() {
    poison_messages_are_dead_lettered_with_a_failed_row_and_the_worker_goes_on(
        &amqp_url(),
        10_000_000,
        None,
    );
}

/// The limits at submission: a prompt over `worker.max_prompt_bytes` is an invalid line (line,
/// field, size and limit named), and a file with more jobs than `OFFPEAK_MAX_JOBS` is refused;
/// both exit 2 and enqueue nothing.
#[test]
fn submit_refuses_oversized_prompts_and_too_many_jobs_with_clear_errors() {
    let mut fleet = Fleet::start(&nats_url(), SCENARIO, ONE_PROVIDER_CATALOG);
    let jobs = fleet.path("jobs.jsonl");
    job_file(&jobs, 3, |i| {
        let prompt = if i == 1 { "x".repeat(500) } else { "hi".into() };
        format!(r#"{{"id":"l-{i}","model":"m","prompt":"{prompt}"}}"#)
    });
    let file = jobs.to_str().unwrap();
    fleet
        .extra_env
        .push(("OFFPEAK_WORKER__MAX_PROMPT_BYTES".into(), "300".into()));
    let o = fleet.run(&["submit", file, "--run-id", "limits", "--quiet"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    let e = text(&o.stderr);
    assert!(
        e.contains("jobs.jsonl:2: field `messages`")
            && e.contains("over the limit of 300 bytes (worker.max_prompt_bytes)"),
        "{e}"
    );
    fleet.extra_env.clear();
    fleet
        .extra_env
        .push(("OFFPEAK_MAX_JOBS".into(), "2".into()));
    let o = fleet.run(&["submit", file, "--run-id", "limits", "--quiet"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("more than 2 jobs"),
        "{}",
        text(&o.stderr)
    );
    assert_eq!(fleet.depth(), Some(0), "nothing may be enqueued");
}
