//! Deferral against escalation, end to end: the cheapest provider answers 429 for its first few
//! seconds; deferrable jobs wait for it, critical jobs and jobs whose deadline cannot absorb the
//! wait go to the next cheapest provider.

use schemas::ResultStatus;
use std::path::Path;
use std::process::Command;

const CATALOG: &str = r#"
[[providers]]
name = "cheap"
kind = "openai"
base_url = "http://unused/v1"
[[providers.models]]
model = "m"
id = "m-cheap"
input_per_mtok = 0.1
output_per_mtok = 0.2

[[providers]]
name = "dear"
kind = "anthropic"
base_url = "http://unused/v1"
[[providers.models]]
model = "m"
id = "m-dear"
input_per_mtok = 3.0
output_per_mtok = 15.0
"#;

const SCENARIO: &str = r#"
seed = 1
[[providers]]
name = "cheap"
kind = "openai"
models = ["m-cheap"]
latency_ms = 5
rate_limited = [{ from_s = 0, to_s = 4 }]

[[providers]]
name = "dear"
kind = "anthropic"
models = ["m-dear"]
latency_ms = 5
"#;

const CONFIG: &str = r#"
[worker.policy]
safety_margin_s = 1.0
latency_base_s = 0.5
latency_per_output_token_s = 0.0
"#;

#[test]
fn deferrable_jobs_wait_for_the_rate_limited_cheapest_while_critical_and_tight_deadline_jobs_escalate(
) {
    let tmp = tempfile::tempdir().unwrap();
    let p = |n: &str| tmp.path().join(n);
    std::fs::write(p("catalog.toml"), CATALOG).unwrap();
    std::fs::write(p("scenario.toml"), SCENARIO).unwrap();
    std::fs::write(p("config.toml"), CONFIG).unwrap();
    let mut lines = Vec::new();
    for i in 0..12 {
        lines.push(format!(r#"{{"id":"defer-{i}","model":"m","prompt":"p{i}","max_tokens":20,"priority":"deferrable"}}"#));
    }
    for i in 0..4 {
        lines.push(format!(r#"{{"id":"crit-{i}","model":"m","prompt":"c{i}","max_tokens":20,"priority":"critical"}}"#));
    }
    // 2.5 s to the deadline, minus 1.5 s of latency and margin, leaves 1 s: too little for a 4 s wait.
    lines.push(r#"{"id":"tight","model":"m","prompt":"t","max_tokens":20,"priority":"deferrable","deadline_in":"2500ms"}"#.to_string());
    std::fs::write(p("jobs.jsonl"), lines.join("\n")).unwrap();
    let out = p("out");
    let o = Command::new(env!("CARGO_BIN_EXE_offpeak"))
        .args([
            "--config",
            p("config.toml").to_str().unwrap(),
            "run",
            p("jobs.jsonl").to_str().unwrap(),
        ])
        .args([
            "--catalog",
            p("catalog.toml").to_str().unwrap(),
            "--simulate",
            "--scenario",
            p("scenario.toml").to_str().unwrap(),
        ])
        .args([
            "--out",
            out.to_str().unwrap(),
            "--run-id",
            "defer",
            "--concurrency",
            "4",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.success(),
        "stdout:\n{}\nstderr:\n{stderr}",
        String::from_utf8_lossy(&o.stdout)
    );

    let mut rows = Vec::new();
    for e in std::fs::read_dir(Path::new(&out).join("run=defer")).unwrap() {
        let f = e.unwrap().path();
        if f.extension().is_some_and(|x| x == "parquet") {
            rows.extend(store::decode_parquet(std::fs::read(f).unwrap()).unwrap());
        }
    }
    assert_eq!(rows.len(), 17);
    assert!(rows.iter().all(|r| r.status == ResultStatus::Succeeded));
    let deferred: Vec<_> = rows
        .iter()
        .filter(|r| r.job_id.starts_with("defer-"))
        .collect();
    for r in &deferred {
        assert_eq!(
            r.provider.as_deref(),
            Some("cheap"),
            "{} escalated: {:?}",
            r.job_id,
            r.route_reason
        );
        assert!(
            !r.route_reason
                .as_deref()
                .unwrap_or("")
                .starts_with("escalated"),
            "{:?}",
            r.route_reason
        );
    }
    // Every deferrable job that reached the broker during the 429 window was deferred, not retried
    // in a loop against the limit, and its wait is recorded.
    assert!(
        deferred
            .iter()
            .any(|r| r.deferrals >= 1 && r.deferred_ms >= 1000),
        "no job recorded a deferral: {deferred:#?}"
    );
    for r in rows.iter().filter(|r| r.job_id.starts_with("crit-")) {
        assert_eq!(
            r.provider.as_deref(),
            Some("dear"),
            "critical {} did not escalate",
            r.job_id
        );
        assert!(
            r.route_reason
                .as_deref()
                .unwrap_or("")
                .starts_with("escalated"),
            "{:?}",
            r.route_reason
        );
        assert_eq!(r.deferrals, 0);
    }
    let tight = rows.iter().find(|r| r.job_id == "tight").unwrap();
    assert_eq!(tight.provider.as_deref(), Some("dear"));
    assert!(
        tight
            .route_reason
            .as_deref()
            .unwrap_or("")
            .contains("miss the deadline"),
        "{:?}",
        tight.route_reason
    );
}
