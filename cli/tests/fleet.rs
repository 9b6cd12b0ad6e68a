//! The fleet on real infrastructure (issue 3): `offpeak submit` to NATS JetStream or RabbitMQ,
//! several `offpeak worker` processes, Parquet results in a real S3-compatible store,
//! `offpeak status --wait`. Each scenario runs on both brokers.

mod support;

use schemas::{ResultRow, ResultStatus};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};
use support::*;

/// The shared `cheap` provider, then a `broken` one and a dear one.
fn catalog() -> String {
    format!("{ONE_PROVIDER_CATALOG}{MORE_PROVIDERS}")
}

const MORE_PROVIDERS: &str = r#"
[[providers]]
name = "broken"
kind = "openai"
base_url = "{SIM}/broken/v1"
[[providers.models]]
model = "broken-model"
id = "always-500"
input_per_mtok = 0.01
output_per_mtok = 0.01

[[providers]]
name = "dear"
kind = "anthropic"
base_url = "{SIM}/dear/v1"
[[providers.models]]
model = "m"
id = "m-dear"
input_per_mtok = 3.0
output_per_mtok = 15.0
[[providers.models]]
model = "other"
id = "o-dear"
input_per_mtok = 1.0
output_per_mtok = 2.0
"#;

fn scenario(cheap_rate_limited_s: f64) -> String {
    format!(
        r#"
seed = 3
[[providers]]
name = "cheap"
kind = "openai"
models = ["m-cheap"]
latency_ms = 2
rate_limited = [{{ from_s = 0, to_s = {cheap_rate_limited_s} }}]

[[providers]]
name = "dear"
kind = "anthropic"
models = ["m-dear", "o-dear"]
latency_ms = 2

[[providers]]
name = "broken"
kind = "openai"
models = ["always-500"]
latency_ms = 2
errors = {{ "500" = 1.0 }}
"#
    )
}

fn job(i: usize, model: &str, priority: &str) -> String {
    format!(
        r#"{{"id":"job-{i:05}","model":"{model}","prompt":"question {i}","max_tokens":12,"priority":"{priority}","metadata":{{"i":{i}}}}}"#
    )
}

fn by_job(rows: &[ResultRow]) -> HashMap<String, Vec<&ResultRow>> {
    let mut m: HashMap<String, Vec<&ResultRow>> = HashMap::new();
    for r in rows {
        m.entry(r.job_id.clone()).or_default().push(r);
    }
    m
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

/// 10,000 jobs, 3 workers, one of them SIGKILLed mid-run: every job has exactly one outcome
/// after de-duplication, the manifest counts them all, `status --wait` exits 0, and the others
/// exit 0 on SIGTERM.
fn ten_thousand_jobs_three_workers_one_killed(broker: &str) {
    const N: usize = 10_000;
    let fleet = Fleet::start(broker, &scenario(0.0), &catalog());
    let jobs = fleet.path("jobs.jsonl");
    job_file(&jobs, N, |i| {
        job(
            i,
            "m",
            if i % 10 == 0 {
                "critical"
            } else {
                "deferrable"
            },
        )
    });
    let run = "big";
    fleet.submit(&jobs, run);

    let mut workers: Vec<Proc> = (0..3).map(|i| fleet.worker(&format!("w{i}"))).collect();
    // Kill one once results are flowing, so it certainly holds unacknowledged jobs.
    let start = Instant::now();
    loop {
        let stored = fleet.rows(run).len();
        if stored >= N / 10 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no progress: {stored} rows"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let victim = workers.remove(0);
    let rows_at_kill = fleet.rows(run).len();
    drop(victim); // SIGKILL
    assert!(
        rows_at_kill < N,
        "the run finished before the kill; nothing was tested"
    );

    let o = fleet.wait_for(run, "300s");
    assert!(
        o.status.success(),
        "status --wait: {:?}\n{}\n{}\n{}",
        o.status,
        text(&o.stdout),
        text(&o.stderr),
        workers
            .iter()
            .map(|w| w.log_text())
            .collect::<Vec<_>>()
            .join("\n")
    );
    let s = status_json(&o);
    assert_eq!(s["submitted"], N as u64);
    assert_eq!(s["succeeded"], N as u64);
    assert_eq!(s["failed"], 0);

    for w in &mut workers {
        let st = w.terminate(Duration::from_secs(60));
        assert!(
            st.is_some_and(|s| s.success()),
            "{} did not exit 0 on SIGTERM: {st:?}\n{}",
            w.name,
            w.log_text()
        );
    }
    let rows = fleet.rows(run);
    let per_job = by_job(&rows);
    let expected: HashSet<String> = (0..N).map(|i| format!("job-{i:05}")).collect();
    let got: HashSet<String> = per_job.keys().cloned().collect();
    assert_eq!(got, expected, "missing or unexpected job ids");
    assert!(per_job
        .values()
        .all(|rs| rs.iter().any(|r| r.status == ResultStatus::Succeeded)));
    eprintln!(
        "{broker}: {N} jobs, {} rows stored, {} duplicates after a SIGKILL",
        rows.len(),
        rows.len() - N
    );
}

#[test]
fn nats_ten_thousand_jobs_three_workers_one_killed() {
    ten_thousand_jobs_three_workers_one_killed(&nats_url());
}

#[test]
fn rabbitmq_ten_thousand_jobs_three_workers_one_killed() {
    ten_thousand_jobs_three_workers_one_killed(&amqp_url());
}

/// 5,000 deferrable jobs for a model whose cheapest provider is rate-limited for the first
/// seconds, queued ahead of 300 jobs for another model: the 300 are answered while the window
/// is still on (deferral does not stall them), and every deferred job ends on the cheapest
/// provider, deferred rather than escalated.
fn deferral_does_not_stall_and_ends_on_the_cheapest(broker: &str) {
    const DEFERRED: usize = 5_000;
    const OTHER: usize = 300;
    const WINDOW_S: f64 = 25.0;
    let fleet = Fleet::start(broker, &scenario(WINDOW_S), &catalog());
    let window_end = fleet.sim_started + chrono::Duration::milliseconds((WINDOW_S * 1000.0) as i64);
    let jobs = fleet.path("jobs.jsonl");
    job_file(&jobs, DEFERRED + OTHER, |i| {
        if i < DEFERRED {
            job(i, "m", "deferrable")
        } else {
            job(i, "other", "standard")
        }
    });
    let run = "defer";
    fleet.submit(&jobs, run);
    let mut workers: Vec<Proc> = (0..2).map(|i| fleet.worker(&format!("d{i}"))).collect();
    let o = fleet.wait_for(run, "300s");
    assert!(
        o.status.success(),
        "{}\n{}\n{}",
        text(&o.stdout),
        text(&o.stderr),
        workers[0].log_text()
    );
    for w in &mut workers {
        assert!(w
            .terminate(Duration::from_secs(60))
            .is_some_and(|s| s.success()));
    }
    let rows = store::dedup(fleet.rows(run));
    assert_eq!(rows.len(), DEFERRED + OTHER);
    let (deferred, other): (Vec<_>, Vec<_>) = rows.iter().partition(|r| r.model == "m");
    assert_eq!(deferred.len(), DEFERRED);
    for r in &deferred {
        assert_eq!(r.status, ResultStatus::Succeeded, "{r:?}");
        assert_eq!(
            r.provider.as_deref(),
            Some("cheap"),
            "{}: {:?}",
            r.job_id,
            r.route_reason
        );
        assert!(r.deferrals >= 1, "{} was never deferred", r.job_id);
        assert!(r.completed_at >= window_end - chrono::Duration::seconds(1));
    }
    let last_other = other.iter().map(|r| r.completed_at).max().unwrap();
    assert!(
        last_other < window_end,
        "jobs behind the deferred ones finished at {last_other}, after the window ended at {window_end}"
    );
    eprintln!(
        "{broker}: {DEFERRED} deferred jobs ({} deferrals), last undeferred job done {:.1}s before the window ended",
        deferred.iter().map(|r| u64::from(r.deferrals)).sum::<u64>(),
        (window_end - last_other).num_milliseconds() as f64 / 1000.0
    );
}

#[test]
fn nats_deferral_does_not_stall_and_ends_on_the_cheapest() {
    deferral_does_not_stall_and_ends_on_the_cheapest(&nats_url());
}

#[test]
fn rabbitmq_deferral_does_not_stall_and_ends_on_the_cheapest() {
    deferral_does_not_stall_and_ends_on_the_cheapest(&amqp_url());
}

/// A job whose only provider always answers 500 ends as a `failed` row with its error and a
/// dead-letter message after the configured attempts; the rest of the run is unaffected and
/// `status --wait` exits 3.
fn always_failing_job_is_a_failed_row_and_a_dead_letter(broker: &str) {
    let mut fleet = Fleet::start(broker, &scenario(0.0), &catalog());
    fleet
        .extra_env
        .push(("OFFPEAK_WORKER__MAX_ATTEMPTS".into(), "3".into()));
    let jobs = fleet.path("jobs.jsonl");
    job_file(&jobs, 20, |i| {
        if i == 7 {
            job(i, "broken-model", "deferrable")
        } else {
            job(i, "m", "standard")
        }
    });
    let run = "poison";
    fleet.submit(&jobs, run);
    let mut w = fleet.worker("f0");
    let o = fleet.wait_for(run, "120s");
    assert_eq!(
        o.status.code(),
        Some(3),
        "status --wait must exit 3 when a job failed\n{}\n{}\n{}",
        text(&o.stdout),
        text(&o.stderr),
        w.log_text()
    );
    assert!(w
        .terminate(Duration::from_secs(60))
        .is_some_and(|s| s.success()));
    let rows = store::dedup(fleet.rows(run));
    assert_eq!(rows.len(), 20);
    let failed: Vec<_> = rows
        .iter()
        .filter(|r| r.status == ResultStatus::Failed)
        .collect();
    assert_eq!(failed.len(), 1);
    let f = failed[0];
    assert_eq!(f.job_id, "job-00007");
    assert_eq!(f.attempts, 3, "{f:?}");
    assert!(
        f.error_message
            .as_deref()
            .unwrap_or_default()
            .contains("500"),
        "{:?}",
        f.error_message
    );
    let dl = fleet.dead_letters();
    assert_eq!(dl.len(), 1, "{dl:?}");
    let env: serde_json::Value = serde_json::from_slice(&dl[0].payload).unwrap();
    assert_eq!(env["id"], "job-00007");
    assert!(
        dl[0].reason.contains("500") || dl[0].reason.contains("attempts"),
        "{}",
        dl[0].reason
    );
}

#[test]
fn nats_always_failing_job_is_a_failed_row_and_a_dead_letter() {
    always_failing_job_is_a_failed_row_and_a_dead_letter(&nats_url());
}

#[test]
fn rabbitmq_always_failing_job_is_a_failed_row_and_a_dead_letter() {
    always_failing_job_is_a_failed_row_and_a_dead_letter(&amqp_url());
}

/// Submitting the same file twice under one run id enqueues nothing new; on NATS even a
/// producer that has lost its manifest (another `--output`) is stopped by the broker's
/// de-duplication window. The results show each job once.
#[test]
fn nats_duplicate_submission_enqueues_nothing_new() {
    const N: usize = 200;
    let fleet = Fleet::start(&nats_url(), &scenario(0.0), &catalog());
    let jobs = fleet.path("jobs.jsonl");
    job_file(&jobs, N, |i| job(i, "m", "standard"));
    let run = "dup";
    fleet.submit(&jobs, run);
    assert_eq!(fleet.depth(), Some(N as u64));
    let again = fleet.submit(&jobs, run);
    assert!(
        text(&again.stdout).contains("nothing new"),
        "{}",
        text(&again.stdout)
    );
    assert_eq!(fleet.depth(), Some(N as u64));
    // Same run, same jobs, but no manifest to stop the producer: the broker drops them.
    let o = fleet
        .cmd(&["submit", jobs.to_str().unwrap(), "--run-id", run, "--quiet"])
        .env("OFFPEAK_OUTPUT", fleet.path("elsewhere"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(
        fleet.depth(),
        Some(N as u64),
        "the broker enqueued duplicates"
    );

    let mut w = fleet.worker("u0");
    let o = fleet.wait_for(run, "120s");
    assert!(
        o.status.success(),
        "{}\n{}",
        text(&o.stdout),
        text(&o.stderr)
    );
    assert!(w
        .terminate(Duration::from_secs(60))
        .is_some_and(|s| s.success()));
    let rows = fleet.rows(run);
    assert_eq!(rows.len(), N, "each job once, no duplicate rows");
    let ids: HashSet<_> = rows.iter().map(|r| r.job_id.clone()).collect();
    assert_eq!(ids.len(), N);
}

/// A worker whose results location is broken (wrong secret, missing bucket, unreachable
/// endpoint) says so and exits 1 within seconds, before it pulls a job: it would otherwise pay
/// providers for answers it cannot store and keep the jobs from healthy workers.
#[test]
fn a_worker_with_a_broken_store_exits_1_before_pulling_any_job() {
    const N: usize = 20;
    let fleet = Fleet::start(&nats_url(), &scenario(0.0), &catalog());
    let jobs = fleet.path("jobs.jsonl");
    job_file(&jobs, N, |i| job(i, "m", "standard"));
    fleet.submit(&jobs, "broken-store");
    let missing_bucket = format!("s3://{}/results", unique("offpeak-missing"));
    let closed = format!("http://127.0.0.1:{}", free_port());
    for (what, key, value) in [
        ("a wrong secret", "AWS_SECRET_ACCESS_KEY", "not-the-secret"),
        (
            "a missing bucket",
            "OFFPEAK_OUTPUT",
            missing_bucket.as_str(),
        ),
        (
            "an unreachable endpoint",
            "AWS_ENDPOINT_URL",
            closed.as_str(),
        ),
    ] {
        let started = Instant::now();
        let mut child = fleet
            .cmd(&["worker", "--metrics-addr", "127.0.0.1:0"])
            .env(key, value)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        while child.try_wait().unwrap().is_none() {
            if started.elapsed() > Duration::from_secs(15) {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{what}: the worker still runs after 15 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let o = child.wait_with_output().unwrap();
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{what}: {err}");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{what}: took {:?}",
            started.elapsed()
        );
        assert!(
            err.contains("is not usable") && err.contains("no job was pulled"),
            "{what}: {err}"
        );
        assert!(!err.contains("not-the-secret"), "{what}: the secret leaked");
    }
    assert_eq!(fleet.depth(), Some(N as u64), "a job was pulled");
    // With the store as configured, a worker goes on and leaves nothing of its probe behind.
    let mut w = fleet.worker("ok");
    let o = fleet.wait_for("broken-store", "120s");
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(w
        .terminate(Duration::from_secs(60))
        .is_some_and(|s| s.success()));
    assert_eq!(fleet.rows("broken-store").len(), N);
    let probe_left = rt().block_on(async {
        use store::ResultSink;
        let client = store::S3Config::local(&s3_endpoint(), S3_KEY, S3_SECRET)
            .client()
            .await;
        let url = store::S3Url::parse(&fleet.output).unwrap();
        store::S3Sink::new(client, &url)
            .list(store::PROBE_RUN)
            .await
            .unwrap()
    });
    assert!(probe_left.is_empty(), "{probe_left:?}");
}

/// A provider whose API key variable is unset is named at start and left out (here it is the
/// cheapest, so a worker that kept it would send it jobs first); with no provider left, the
/// worker exits 1.
#[test]
fn a_provider_without_its_api_key_is_named_and_left_out() {
    const N: usize = 20;
    let var = format!(
        "OFFPEAK_TEST_UNSET_{}",
        unique("k").replace('-', "_").to_uppercase()
    );
    let keyless = format!(
        r#"
[[providers]]
name = "keyless"
kind = "openai"
base_url = "{{SIM}}/keyless/v1"
api_key_env = "{var}"
[[providers.models]]
model = "m"
id = "m-keyless"
input_per_mtok = 0.01
output_per_mtok = 0.02
"#
    );
    let fleet = Fleet::start(
        &nats_url(),
        &scenario(0.0),
        &format!("{ONE_PROVIDER_CATALOG}{keyless}"),
    );
    let jobs = fleet.path("jobs.jsonl");
    job_file(&jobs, N, |i| job(i, "m", "critical"));
    fleet.submit(&jobs, "keyless");
    let mut w = fleet.worker("k0");
    let o = fleet.wait_for("keyless", "120s");
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(w
        .terminate(Duration::from_secs(60))
        .is_some_and(|s| s.success()));
    let log = w.log_text();
    assert!(
        log.contains("provider keyless") && log.contains(&var),
        "the worker did not name the provider and its variable:\n{log}"
    );
    let rows = store::dedup(fleet.rows("keyless"));
    assert_eq!(rows.len(), N);
    for r in &rows {
        assert_eq!(r.provider.as_deref(), Some("cheap"), "{r:?}");
        assert_eq!(
            r.attempts, 1,
            "a request went to the keyless provider: {r:?}"
        );
    }
    // Only keyless providers: nothing to work with.
    let only = fleet.path("only-keyless.toml");
    std::fs::write(&only, keyless.replace("{SIM}", "http://127.0.0.1:9")).unwrap();
    let o = fleet
        .cmd(&["worker", "--metrics-addr", "127.0.0.1:0"])
        .env("OFFPEAK_CATALOG", &only)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains(&var), "{}", text(&o.stderr));
}

/// `offpeak results --format openai-batch` writes the OpenAI Batch output format: one line per
/// job with `custom_id`, `response.status_code`/`body` (a chat completion, validated by the
/// official `openai` package's types) and `error`.
#[test]
fn results_export_matches_the_openai_batch_output_format() {
    let fleet = Fleet::start(&nats_url(), &scenario(0.0), &catalog());
    let jobs = fleet.path("jobs.jsonl");
    // Half go to the Anthropic-kind provider (critical jobs to "other"), half to OpenAI-kind.
    job_file(&jobs, 40, |i| {
        if i % 2 == 0 {
            job(i, "m", "standard")
        } else {
            job(i, "other", "critical")
        }
    });
    fleet.submit(&jobs, "export");
    let port = free_port();
    let mut w = fleet.worker_on("e0", port);
    let o = fleet.wait_for("export", "120s");
    assert!(o.status.success(), "{}", text(&o.stderr));
    // The worker's Prometheus endpoint counts what it did, per provider too.
    wait_port(port);
    assert_eq!(http_get(port, "/healthz").0, 200);
    assert_eq!(http_get(port, "/readyz").0, 200);
    let (code, metrics) = http_get(port, "/metrics");
    assert_eq!(code, 200);
    assert!(
        metrics.contains("offpeak_jobs_succeeded_total{worker=\"e0\"} 40"),
        "{metrics}"
    );
    assert!(metrics
        .contains("offpeak_provider_jobs_succeeded_total{worker=\"e0\",provider=\"dear\"} 20"));
    assert!(metrics
        .contains("offpeak_provider_request_seconds_count{worker=\"e0\",provider=\"cheap\"} 20"));
    assert!(w
        .terminate(Duration::from_secs(60))
        .is_some_and(|s| s.success()));
    let out = fleet.path("batch_output.jsonl");
    let o = fleet.run(&[
        "results",
        "export",
        "--format",
        "openai-batch",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let check = std::process::Command::new("python3")
        .arg(root().join("tests/readers/check_openai_batch.py"))
        .arg(&out)
        .arg("40")
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}\n{}",
        text(&check.stdout),
        text(&check.stderr)
    );
    // And the Parquet export is one file with one row per job.
    let pq = fleet.path("export.parquet");
    let o = fleet.run(&[
        "results",
        "export",
        "--format",
        "parquet",
        "--out",
        pq.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let rows = store::decode_parquet(std::fs::read(&pq).unwrap()).unwrap();
    assert_eq!(rows.len(), 40);
}

/// A store that breaks under a running worker (restarted with other keys: every write is refused
/// with 403): the worker stops pulling within 10 s, pays for at most the jobs it had in flight
/// then, answers `/readyz` 503 saying why, releases what it held, and stops on SIGTERM within
/// its grace period; a worker with the new keys then finishes every job.
#[test]
fn a_store_that_refuses_writes_mid_run_stops_the_worker_from_pulling() {
    const N: usize = 300;
    const CONCURRENCY: u64 = 8;
    const GRACE_S: u64 = 6;
    let s3_dir = tempfile::tempdir().unwrap();
    let mut s3 = PrivateS3::start(s3_dir.path());
    let slow = "[[providers]]\nname='cheap'\nkind='openai'\nmodels=['m-cheap']\nlatency_ms=150\n";
    let mut fleet = Fleet::start(&nats_url(), slow, ONE_PROVIDER_CATALOG);
    fleet.output = format!("s3://{}/results", unique("refused"));
    fleet.extra_env.extend([
        ("AWS_ENDPOINT_URL".into(), s3.endpoint()),
        ("OFFPEAK_S3_ENDPOINT".into(), s3.endpoint()),
        (
            "OFFPEAK_WORKER__CONCURRENCY".into(),
            CONCURRENCY.to_string(),
        ),
        ("OFFPEAK_WORKER__REQUEST_TIMEOUT_S".into(), "5".into()),
        ("OFFPEAK_WORKER__FLUSH__MAX_AGE_S".into(), "1".into()),
        (
            "OFFPEAK_WORKER__SHUTDOWN_GRACE_S".into(),
            GRACE_S.to_string(),
        ),
    ]);
    create_bucket_in(&s3, &fleet.output);
    let jobs = fleet.path("jobs.jsonl");
    job_file(&jobs, N, |i| job(i, "m", "standard"));
    let run = "refused";
    fleet.submit(&jobs, run);
    let port = free_port();
    let mut w = fleet.worker_on("r0", port);
    let flowing = Instant::now();
    while rows_in(&s3, &fleet.output, run).len() < 20 {
        assert!(
            flowing.elapsed() < Duration::from_secs(60),
            "no results: {}",
            w.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(http_get(port, "/readyz").0, 200);

    s3.restart_with_keys("rotated", "rotated-secret");
    let broke = Instant::now();
    let (code, why) = loop {
        let (code, body) = http_get(port, "/readyz");
        if code == 503 || broke.elapsed() > Duration::from_secs(10) {
            break (code, body);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let paid_when_stopped = fleet.provider_requests();
    assert_eq!(
        code,
        503,
        "still ready 10 s after the store refused writes: {}",
        w.log_text()
    );
    assert!(why.contains("results store"), "{why}");
    // Nothing more is pulled: only the jobs in flight then may still reach the provider.
    std::thread::sleep(Duration::from_secs(5));
    let paid_after = fleet.provider_requests();
    assert!(
        paid_after <= paid_when_stopped + CONCURRENCY,
        "{} provider calls after the worker stopped pulling",
        paid_after - paid_when_stopped
    );
    assert!(
        paid_after < N as u64,
        "the worker went through the whole queue"
    );
    assert_eq!(http_get(port, "/readyz").0, 503);
    let log = w.log_text();
    assert!(log.contains("refuses writes"), "{log}");
    assert!(!log.contains("rotated-secret") && !log.contains(S3_SECRET));

    let term = Instant::now();
    let status = w.terminate(Duration::from_secs(GRACE_S + 10));
    assert!(
        status.is_some_and(|s| s.success()) && term.elapsed() < Duration::from_secs(GRACE_S + 2),
        "SIGTERM took {:?} ({status:?})",
        term.elapsed()
    );

    fleet.extra_env.extend([
        ("AWS_ACCESS_KEY_ID".into(), "rotated".into()),
        ("AWS_SECRET_ACCESS_KEY".into(), "rotated-secret".into()),
    ]);
    let mut healthy = fleet.worker("r1");
    let o = fleet.wait_for(run, "180s");
    assert!(
        o.status.success(),
        "{}\n{}",
        text(&o.stdout),
        healthy.log_text()
    );
    assert!(healthy
        .terminate(Duration::from_secs(60))
        .is_some_and(|s| s.success()));
    let rows = store::dedup(rows_in(&s3, &fleet.output, run));
    assert_eq!(rows.len(), N);
    assert!(rows.iter().all(|r| r.status == ResultStatus::Succeeded));
}

/// A worker started while its broker is down waits for it — serving `/readyz` 503 meanwhile —
/// instead of exiting, and works through the run once the broker is up.
#[test]
fn a_worker_started_before_its_broker_waits_for_it() {
    const N: usize = 20;
    let nats_dir = tempfile::tempdir().unwrap();
    let mut nats = PrivateNats::start(nats_dir.path());
    nats.kill();
    let fleet = Fleet::start(&nats.url(), &scenario(0.0), &catalog());
    let port = free_port();
    let mut w = fleet.worker_on("early", port);
    wait_port(port);
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        w.child.try_wait().unwrap().is_none(),
        "the worker exited while its broker was down:\n{}",
        w.log_text()
    );
    assert_eq!(http_get(port, "/readyz").0, 503);
    assert!(w.log_text().contains("waiting for it"), "{}", w.log_text());

    nats.up();
    let jobs = fleet.path("jobs.jsonl");
    job_file(&jobs, N, |i| job(i, "m", "standard"));
    fleet.submit(&jobs, "early");
    let o = fleet.wait_for("early", "120s");
    assert!(o.status.success(), "{}\n{}", text(&o.stdout), w.log_text());
    assert_eq!(http_get(port, "/readyz").0, 200);
    assert!(w
        .terminate(Duration::from_secs(60))
        .is_some_and(|s| s.success()));
    assert_eq!(store::dedup(fleet.rows("early")).len(), N);
}

/// A worker the broker refuses at start — a wrong RabbitMQ password — exits 1 at once, naming
/// the refusal, instead of waiting for a broker that will never let it in.
#[test]
fn a_worker_the_broker_refuses_exits_1_at_once() {
    let fleet = Fleet::start(&amqp_url(), &scenario(0.0), &catalog());
    let wrong = amqp_url().replacen("guest:guest@", "guest:not-the-password@", 1);
    assert_ne!(
        wrong,
        amqp_url(),
        "the test broker URL has no guest:guest credentials"
    );
    let started = Instant::now();
    let o = fleet
        .cmd(&["worker", "--metrics-addr", "127.0.0.1:0"])
        .env("OFFPEAK_BROKER", &wrong)
        .output()
        .unwrap();
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10), "{err}");
    assert!(err.contains("ACCESS_REFUSED"), "{err}");
    assert!(
        !err.contains("not-the-password"),
        "the password leaked: {err}"
    );
    assert_eq!(fleet.provider_requests(), 0);
}

/// One account allowing 600 requests a minute, shared by a fleet of four workers.
const TIGHT_RPM_SCENARIO: &str = r#"
seed = 14
[[providers]]
name = "cheap"
kind = "openai"
models = ["m-cheap"]
latency_ms = 30
rpm = 600

[[providers]]
name = "dear"
kind = "anthropic"
models = ["m-dear", "o-dear"]
latency_ms = 2
"#;

const TIGHT_RPM_CATALOG: &str = r#"
[[providers]]
name = "cheap"
kind = "openai"
base_url = "{SIM}/cheap/v1"
limits = { rpm = 600 }
[[providers.models]]
model = "m"
id = "m-cheap"
input_per_mtok = 0.1
output_per_mtok = 0.2

[[providers]]
name = "dear"
kind = "anthropic"
base_url = "{SIM}/dear/v1"
[[providers.models]]
model = "m"
id = "m-dear"
input_per_mtok = 3.0
output_per_mtok = 15.0
"#;

/// Waits until every worker on `ports` counts `n` members in the fleet; the seconds it took.
fn members_become(ports: &[u16], n: f64, within: Duration) -> f64 {
    let start = Instant::now();
    loop {
        let seen: Vec<f64> = ports
            .iter()
            .map(|p| metric(*p, "offpeak_fleet_members"))
            .collect();
        if seen.iter().all(|m| *m == n) {
            return start.elapsed().as_secs_f64();
        }
        assert!(
            start.elapsed() < within,
            "workers count {seen:?} members, not {n}, after {within:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Issue 14: four `offpeak worker` processes share one account's 600 requests a minute. They
/// find each other over the broker and each plans with a quarter of it, so the provider
/// answers (almost) no 429s; one SIGKILLed mid-run is forgotten within seconds and one joining
/// is counted at once; every job has one row, on the cheap provider, before its deadline.
fn four_workers_share_a_tight_rpm(broker: &str) {
    const N: usize = 360;
    let fleet = Fleet::start(broker, TIGHT_RPM_SCENARIO, TIGHT_RPM_CATALOG);
    let ports: Vec<u16> = (0..5).map(|_| free_port()).collect();
    let mut workers: Vec<Proc> = (0..4)
        .map(|i| fleet.worker_on(&format!("t{i}"), ports[i]))
        .collect();
    for p in &ports[..4] {
        wait_port(*p);
    }
    let joined = members_become(&ports[..4], 4.0, Duration::from_secs(15));
    let jobs = fleet.path("jobs.jsonl");
    job_file(&jobs, N, |i| {
        format!(
            r#"{{"id":"job-{i:05}","model":"m","prompt":"question {i}","max_tokens":12,"priority":"deferrable","deadline_in":"10m"}}"#
        )
    });
    let run = "tight";
    fleet.submit(&jobs, run);

    // Once results flow, one worker is killed: the others count three within seconds.
    let start = Instant::now();
    while fleet.rows(run).len() < N / 4 {
        assert!(start.elapsed() < Duration::from_secs(120), "no progress");
        std::thread::sleep(Duration::from_millis(300));
    }
    drop(workers.remove(0)); // SIGKILL
    let forgotten = members_become(&ports[1..4], 3.0, Duration::from_secs(15));
    workers.push(fleet.worker_on("t4", ports[4]));
    wait_port(ports[4]);
    let counted = members_become(&ports[1..5], 4.0, Duration::from_secs(10));
    assert!(
        fleet.rows(run).len() < N,
        "the run ended before the fleet changed; nothing was tested"
    );

    let o = fleet.wait_for(run, "300s");
    assert!(
        o.status.success(),
        "{}\n{}\n{}",
        text(&o.stdout),
        text(&o.stderr),
        workers[0].log_text()
    );
    for w in &mut workers {
        assert!(w
            .terminate(Duration::from_secs(60))
            .is_some_and(|s| s.success()));
    }
    let rows = store::dedup(fleet.rows(run));
    assert_eq!(rows.len(), N, "one row per job");
    for r in &rows {
        assert_eq!(r.status, ResultStatus::Succeeded, "{r:?}");
        assert_eq!(r.provider.as_deref(), Some("cheap"), "{r:?}");
        assert!(
            r.completed_at <= r.deadline,
            "{} missed its deadline",
            r.job_id
        );
    }
    let (_, stats) = http_get(fleet.sim_port(), "/_sim/stats");
    let stats: serde_json::Value = serde_json::from_str(&stats).unwrap();
    let requests = stats["cheap"]["requests"].as_u64().unwrap();
    let refused = stats["cheap"]["rate_limited"].as_u64().unwrap();
    eprintln!(
        "{broker}: {N} jobs, {requests} requests to the cheap host, {refused} answered 429; \
         4 members counted after {joined:.1}s, a SIGKILLed one forgotten after {forgotten:.1}s, \
         a new one counted after {counted:.1}s"
    );
    assert!(
        refused as f64 <= 0.02 * requests as f64,
        "{refused} of {requests} requests answered 429"
    );
}

#[test]
fn nats_four_workers_share_a_tight_rpm() {
    four_workers_share_a_tight_rpm(&nats_url());
}

#[test]
fn rabbitmq_four_workers_share_a_tight_rpm() {
    four_workers_share_a_tight_rpm(&amqp_url());
}
