//! Runs no stranger can alter (issue #17). Messages published under a run's id by someone else —
//! a message of another schema, a foreign job id, an altered replay of a submitted job — must not
//! change what `status` and `results` say about the submitted jobs; and with a signing key,
//! workers dead-letter unsigned and altered messages before any provider call while the signed
//! jobs (deferred ones included) succeed, and `status` shows those dead letters by reason.

mod support;

use schemas::{Envelope, JobDefaults, JobParser, ResultStatus, RunId, SigningKey};
use std::collections::HashSet;
use std::time::{Duration, Instant};
use support::*;

const JOBS: usize = 5;
const KEY: &str = "the-fleet-signing-key-0123456789";

fn scenario(rate_limited_s: f64) -> String {
    format!(
        r#"
seed = 1
[[providers]]
name = "cheap"
kind = "openai"
models = ["m-cheap"]
latency_ms = 2
rate_limited = [{{ from_s = 0, to_s = {rate_limited_s} }}]
"#
    )
}

fn job_line(id: &str, model: &str) -> String {
    format!(
        r#"{{"id":"{id}","model":"{model}","prompt":"hello {id}","max_tokens":5,"priority":"deferrable"}}"#
    )
}

fn envelope(run: &str, line: &str) -> Envelope {
    let now = chrono::Utc::now();
    let job = JobParser::new(JobDefaults::new(now), None)
        .parse_line(1, line)
        .unwrap();
    Envelope::new(RunId::new(run).unwrap(), now, job)
}

fn submitted_ids() -> HashSet<String> {
    (0..JOBS).map(|i| format!("job-{i:05}")).collect()
}

/// Publishes raw messages under `run`, each with a de-duplication id of its own.
fn inject(fleet: &Fleet, run: &str, messages: Vec<(&str, Vec<u8>)>) {
    fleet.publish_raw(
        run,
        messages
            .into_iter()
            .map(|(name, body)| (format!("injected-{name}"), body))
            .collect(),
    );
}

fn status_json(o: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "status output is not JSON ({e}):\n{}\n{}",
            text(&o.stdout),
            text(&o.stderr)
        )
    })
}

/// Requests the simulator answered with a completion, per provider.
fn completions(fleet: &Fleet, provider: &str) -> u64 {
    let catalog = std::fs::read_to_string(&fleet.catalog).unwrap();
    let at = catalog.find("http://127.0.0.1:").unwrap() + "http://127.0.0.1:".len();
    let port: u16 = catalog[at..].split('/').next().unwrap().parse().unwrap();
    let (_, stats) = http_get(port, "/_sim/stats");
    let stats: serde_json::Value = serde_json::from_str(&stats).unwrap();
    stats[provider]["ok"].as_u64().unwrap_or(0)
}

/// A 5-job run plus a message of another schema version, a job of a foreign id (which
/// succeeds), one of a foreign id that fails, and an altered replay of a submitted job (which
/// fails): every injected message becomes a row, yet `status --wait` counts 5 submitted and 5
/// succeeded and exits 0, reports the 3 foreign rows apart, and `results` exports the 5 jobs only.
#[test]
fn nats_injected_messages_never_change_the_counts_of_the_submitted_jobs() {
    let fleet = Fleet::start(&nats_url(), &scenario(0.0), ONE_PROVIDER_CATALOG);
    let run = "guarded";
    let mut other_version = serde_json::to_value(envelope(run, &job_line("ghost", "m"))).unwrap();
    other_version["schema_version"] = 99.into();
    let replay = envelope(run, &job_line("job-00002", "no-such-model"));
    inject(
        &fleet,
        run,
        vec![
            ("version", other_version.to_string().into_bytes()),
            (
                "intruder",
                envelope(run, &job_line("intruder", "m")).to_bytes(),
            ),
            (
                "intruder-failing",
                envelope(run, &job_line("intruder-failing", "no-such-model")).to_bytes(),
            ),
            ("replay", replay.to_bytes()),
        ],
    );
    let jobs = fleet.path("jobs.jsonl");
    job_file(&jobs, JOBS, |i| job_line(&format!("job-{i:05}"), "m"));
    fleet.submit(&jobs, run);
    let mut w = fleet.worker("g0");

    // Every message, injected ones included, ends as a row before status is asked.
    let want_foreign = ["ghost", "intruder", "intruder-failing"];
    let start = Instant::now();
    loop {
        let rows = fleet.rows(run);
        let ids: HashSet<&str> = rows.iter().map(|r| r.job_id.as_str()).collect();
        let replayed = rows.iter().filter(|r| r.job_id == "job-00002").count();
        if want_foreign.iter().all(|f| ids.contains(f))
            && submitted_ids().iter().all(|s| ids.contains(s.as_str()))
            && replayed >= 2
        {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "rows {rows:?}\n{}",
            w.log_text()
        );
        std::thread::sleep(Duration::from_millis(300));
    }

    let o = fleet.wait_for(run, "60s");
    let s = status_json(&o);
    assert_eq!(o.status.code(), Some(0), "{s}\n{}", text(&o.stderr));
    assert_eq!(
        (&s["submitted"], &s["succeeded"], &s["failed"]),
        (&5.into(), &5.into(), &0.into()),
        "{s}"
    );
    assert_eq!(s["foreign_rows"], 3, "{s}");
    let o = fleet.run(&["status", run]);
    let table = text(&o.stdout);
    assert!(
        table.contains("5 submitted, 5 succeeded, 0 failed, 0 pending")
            && table.contains("3 rows ignored (job ids not in the run's job list)"),
        "{table}"
    );

    let o = fleet.run(&["results", run, "--format", "jsonl"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let exported: HashSet<String> = text(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["job_id"].to_string())
        .map(|id| id.trim_matches('"').to_string())
        .collect();
    assert_eq!(exported, submitted_ids());
    assert!(
        text(&o.stderr).contains("3 foreign rows ignored"),
        "{}",
        text(&o.stderr)
    );
    assert!(w
        .terminate(Duration::from_secs(60))
        .is_some_and(|s| s.success()));
}

/// With `OFFPEAK_SIGNING_KEY` on the producer and the worker: two unsigned messages (a foreign
/// id and a copy of a submitted job), a signed message altered afterwards, and one signed with
/// another key all reach the dead letters with their reason, without a provider call or a row;
/// the 5 signed jobs — deferred while their provider is rate-limited, so re-signed by the worker —
/// all succeed; `status` shows the dead letters.
fn signed_fleet_refuses_unsigned_and_altered_messages(broker: &str, per_run_dead_letters: bool) {
    let mut fleet = Fleet::start(broker, &scenario(6.0), ONE_PROVIDER_CATALOG);
    fleet
        .extra_env
        .push(("OFFPEAK_SIGNING_KEY".into(), KEY.into()));
    let run = "signed";
    let key = SigningKey::new(KEY).unwrap();
    let altered =
        String::from_utf8(key.sign(envelope(run, &job_line("job-00001", "m")).to_bytes()))
            .unwrap()
            .replace("hello job-00001", "something else");
    let attacker = SigningKey::new("not-the-fleet-key-but-long-enough").unwrap();
    inject(
        &fleet,
        run,
        vec![
            (
                "unsigned-foreign",
                envelope(run, &job_line("intruder", "m")).to_bytes(),
            ),
            (
                "unsigned-copy",
                envelope(run, &job_line("job-00003", "m")).to_bytes(),
            ),
            ("altered", altered.into_bytes()),
            (
                "other-key",
                attacker.sign(envelope(run, &job_line("job-00004", "m")).to_bytes()),
            ),
        ],
    );
    let jobs = fleet.path("jobs.jsonl");
    job_file(&jobs, JOBS, |i| job_line(&format!("job-{i:05}"), "m"));
    fleet.submit(&jobs, run);
    let mut w = fleet.worker("s0");

    let o = fleet.wait_for(run, "120s");
    let s = status_json(&o);
    assert_eq!(o.status.code(), Some(0), "{s}\n{}", w.log_text());
    assert_eq!(
        (&s["succeeded"], &s["failed"]),
        (&5.into(), &0.into()),
        "{s}"
    );
    let start = Instant::now();
    let dead = loop {
        let dead = fleet.dead_letters();
        if dead.len() >= 4 {
            break dead;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "{dead:?}");
        std::thread::sleep(Duration::from_millis(300));
    };
    let mut reasons: Vec<&str> = dead.iter().map(|d| d.reason.as_str()).collect();
    reasons.sort();
    assert_eq!(
        reasons,
        [
            "bad signature",
            "bad signature",
            "unsigned message",
            "unsigned message"
        ]
    );

    let rows = fleet.rows(run);
    let ids: HashSet<String> = rows.iter().map(|r| r.job_id.clone()).collect();
    assert_eq!(ids, submitted_ids(), "only the signed jobs have rows");
    assert!(rows.iter().all(|r| r.status == ResultStatus::Succeeded
        && r.output_text.as_deref().is_some_and(|t| !t.is_empty())));
    assert!(
        rows.iter().any(|r| r.deferrals > 0),
        "no job was deferred: the re-signing of deferred messages went untested"
    );
    assert_eq!(
        completions(&fleet, "cheap"),
        JOBS as u64,
        "the provider answered more than the signed jobs"
    );

    let o = fleet.run(&["status", run]);
    let table = text(&o.stdout);
    if per_run_dead_letters {
        assert!(
            table.contains("dead letters 4")
                && table.contains("2 × bad signature")
                && table.contains("2 × unsigned message"),
            "{table}"
        );
        let o = fleet.run(&["status", run, "--json"]);
        let s = status_json(&o);
        assert_eq!(s["dead_letters"]["scope"], "run", "{s}");
        assert_eq!(s["dead_letters"]["total"], 4, "{s}");
    } else {
        assert!(
            table.contains(&format!(
                "dead letters 4 in {}.dlq, all runs together",
                fleet.namespace
            )),
            "{table}"
        );
    }
    // Without a broker, status says nothing about dead letters.
    let o = fleet
        .cmd(&["status", run])
        .env_remove("OFFPEAK_BROKER")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        !text(&o.stdout).contains("dead letters"),
        "{}",
        text(&o.stdout)
    );
    assert!(w
        .terminate(Duration::from_secs(60))
        .is_some_and(|s| s.success()));
}

#[test]
fn nats_signed_fleet_refuses_unsigned_and_altered_messages() {
    signed_fleet_refuses_unsigned_and_altered_messages(&nats_url(), true);
}

#[test]
fn rabbitmq_signed_fleet_refuses_unsigned_and_altered_messages() {
    signed_fleet_refuses_unsigned_and_altered_messages(&amqp_url(), false);
}
