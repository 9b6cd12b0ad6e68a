//! The batch route on the real fleet (issue #13): `offpeak worker` processes on NATS and
//! RabbitMQ sending deferrable jobs through the simulator's batch endpoints (OpenAI Files +
//! Batches), storing rows in the S3 store; workers killed between the steps of a batch's life;
//! batches that expire half-done or run past their jobs' safe time.

mod support;

use schemas::{ResultRow, ResultStatus};
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};
use support::*;

/// `bat` sells `m` realtime at 1.0/2.0 and through its batch API at half that; `rt` sells it
/// realtime only at 0.8/1.6 — cheaper than `bat` realtime, dearer than `bat`'s batch.
const CATALOG: &str = r#"
[[providers]]
name = "bat"
kind = "openai"
base_url = "{SIM}/bat/v1"
[[providers.models]]
model = "m"
id = "m-bat"
input_per_mtok = 1.0
output_per_mtok = 2.0
batch = { discount = 0.5, window = "24h", turnaround = "10m", max_requests = 50000 }

[[providers]]
name = "rt"
kind = "openai"
base_url = "{SIM}/rt/v1"
[[providers.models]]
model = "m"
id = "m-rt"
input_per_mtok = 0.8
output_per_mtok = 1.6
"#;

/// The simulator: `bat` with a batch API (`batch` is the `[providers.batch]` table's body),
/// `rt` realtime only.
fn scenario(batch: &str) -> String {
    format!(
        r#"
[[providers]]
name = "bat"
kind = "openai"
models = ["m-bat"]
latency_ms = 1
[providers.batch]
{batch}

[[providers]]
name = "rt"
kind = "openai"
models = ["m-rt"]
latency_ms = 1
"#
    )
}

fn jobs(fleet: &Fleet, n: usize, deadline: &str) -> std::path::PathBuf {
    let path = fleet.path("jobs.jsonl");
    job_file(&path, n, |i| {
        format!(
            r#"{{"id":"job-{i:06}","model":"m","prompt":"question {i}","max_tokens":40,"priority":"deferrable","deadline_in":"{deadline}"}}"#
        )
    });
    path
}

/// Gathers of `max_jobs`, sent after 1 s, polled every second.
fn batch_env(fleet: &mut Fleet, max_jobs: usize) {
    gather_env(fleet, max_jobs, 1.0);
}

/// Gathers of `max_jobs`, sent after `max_age_s`, polled every second.
fn gather_env(fleet: &mut Fleet, max_jobs: usize, max_age_s: f64) {
    for (k, v) in [
        ("OFFPEAK_WORKER__BATCH__MAX_JOBS", max_jobs.to_string()),
        ("OFFPEAK_WORKER__BATCH__MAX_AGE_S", max_age_s.to_string()),
        ("OFFPEAK_WORKER__BATCH__POLL_S", "1".into()),
    ] {
        fleet.extra_env.push((k.into(), v));
    }
}

fn sim_stats(fleet: &Fleet, provider: &str) -> Value {
    let (_, body) = http_get(fleet.sim_port(), "/_sim/stats");
    let v: Value = serde_json::from_str(&body).unwrap();
    v[provider].clone()
}

fn by_job(rows: &[ResultRow]) -> HashMap<String, Vec<&ResultRow>> {
    let mut m: HashMap<String, Vec<&ResultRow>> = HashMap::new();
    for r in rows {
        m.entry(r.job_id.clone()).or_default().push(r);
    }
    m
}

/// Waits for `offpeak status RUN --wait` to say the run is done; panics with the logs if not.
fn wait_done(fleet: &Fleet, run: &str, workers: &[&Proc], timeout: &str) -> Value {
    let o = fleet.wait_for(run, timeout);
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
    serde_json::from_slice(&o.stdout).unwrap()
}

/// Every job has a succeeded row; returns one row per job (a batch row when there is one).
fn one_success_each(rows: &[ResultRow], n: usize) -> Vec<ResultRow> {
    let per_job = by_job(rows);
    let expected: HashSet<String> = (0..n).map(|i| format!("job-{i:06}")).collect();
    let got: HashSet<String> = per_job.keys().cloned().collect();
    assert_eq!(got, expected, "missing or unexpected job ids");
    per_job
        .values()
        .map(|rs| {
            let ok: Vec<&&ResultRow> = rs
                .iter()
                .filter(|r| r.status == ResultStatus::Succeeded)
                .collect();
            assert!(
                !ok.is_empty(),
                "no succeeded row for {}: {rs:?}",
                rs[0].job_id
            );
            (*ok[0]).clone()
        })
        .collect()
}

/// 5,000 deferrable jobs due in 24 h, two workers: every job is served through `bat`'s batch
/// API at half its list price (within 1 %), none realtime, and the simulator billed each line
/// once and created exactly the batches the rows name.
fn five_thousand_jobs_through_the_batch_api(broker: &str) {
    const N: usize = 5_000;
    let mut fleet = Fleet::start(broker, &scenario("turnaround_s = 2.0"), CATALOG);
    batch_env(&mut fleet, 1000);
    let file = jobs(&fleet, N, "24h");
    let run = "nightly";
    fleet.submit(&file, run);
    let w1 = fleet.worker("w1");
    let w2 = fleet.worker("w2");
    let s = wait_done(&fleet, run, &[&w1, &w2], "300s");
    assert_eq!(s["succeeded"], N as u64, "{s}");
    let rows = fleet.rows(run);
    let each = one_success_each(&rows, N);
    assert!(
        each.iter().all(|r| r.route.as_deref() == Some("batch")
            && r.provider.as_deref() == Some("bat")
            && r.batch_id.is_some()),
        "rows not served by bat's batch API: {:?}",
        each.iter()
            .find(|r| r.route.as_deref() != Some("batch"))
            .unwrap()
    );
    let list: f64 = each
        .iter()
        .map(|r| (r.input_tokens as f64 * 1.0 + r.output_tokens as f64 * 2.0) / 1e6)
        .sum();
    let cost: f64 = each.iter().map(|r| r.cost_usd).sum();
    assert!(list > 0.0);
    assert!(
        (cost / (list / 2.0) - 1.0).abs() <= 0.01,
        "cost {cost} is not half the list price {list}"
    );
    let batches: HashSet<&str> = each.iter().filter_map(|r| r.batch_id.as_deref()).collect();
    let bat = sim_stats(&fleet, "bat");
    assert_eq!(bat["batches_created"], batches.len() as u64, "{bat}");
    assert_eq!(bat["batch_lines_billed"], N as u64, "{bat}");
    assert_eq!(sim_stats(&fleet, "rt")["requests"], 0);
    eprintln!(
        "{broker}: {N} jobs in {} provider batches, cost {cost:.6} vs list {list:.6} ({:.4} of list)",
        batches.len(),
        cost / list
    );
}

#[test]
fn nats_five_thousand_jobs_through_the_batch_api() {
    five_thousand_jobs_through_the_batch_api(&nats_url());
}

#[test]
fn rabbitmq_five_thousand_jobs_through_the_batch_api() {
    five_thousand_jobs_through_the_batch_api(&amqp_url());
}

/// A worker dies (`OFFPEAK_FAILPOINT`, an abort: no cleanup, like SIGKILL) at `point` in its
/// first batch's life; a second worker finishes the run: every job has a succeeded row, and
/// the simulator created no batch the rows do not name and billed no line twice.
fn worker_killed_at(broker: &str, point: &str) {
    const N: usize = 300;
    let mut fleet = Fleet::start(broker, &scenario("turnaround_s = 1.0"), CATALOG);
    batch_env(&mut fleet, 100);
    let file = jobs(&fleet, N, "24h");
    let run = "crash";
    fleet.submit(&file, run);
    fleet
        .extra_env
        .push(("OFFPEAK_FAILPOINT".into(), point.into()));
    let mut victim = fleet.worker("victim");
    fleet.extra_env.pop();
    let start = Instant::now();
    let died = loop {
        if let Some(st) = victim.child.try_wait().unwrap() {
            break st;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the worker never reached {point}:\n{}",
            victim.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(!died.success(), "{point}: {died:?}");
    assert!(
        victim.log_text().contains(&format!("failpoint {point}")),
        "{}",
        victim.log_text()
    );
    let rescuer = fleet.worker("rescuer");
    let s = wait_done(&fleet, run, &[&victim, &rescuer], "300s");
    assert_eq!(s["succeeded"], N as u64, "{s}");
    let rows = fleet.rows(run);
    let each = one_success_each(&rows, N);
    let batches: HashSet<&str> = rows.iter().filter_map(|r| r.batch_id.as_deref()).collect();
    let bat = sim_stats(&fleet, "bat");
    assert_eq!(
        bat["batches_created"],
        batches.len() as u64,
        "{point}: a batch was created that no row names (paid twice?) {bat}\n{}",
        rescuer.log_text()
    );
    assert_eq!(bat["batch_lines_billed"], N as u64, "{point}: {bat}");
    assert!(each.iter().all(|r| r.route.as_deref() == Some("batch")));
    eprintln!(
        "{broker} killed at {point}: {N} jobs, {} rows, {} batches",
        rows.len(),
        batches.len()
    );
}

#[test]
fn nats_worker_killed_after_batch_created_before_recorded() {
    worker_killed_at(&nats_url(), "batch-created");
}

#[test]
fn rabbitmq_worker_killed_after_batch_created_before_recorded() {
    worker_killed_at(&amqp_url(), "batch-created");
}

#[test]
fn nats_worker_killed_after_batch_recorded_before_acks() {
    worker_killed_at(&nats_url(), "batch-recorded");
}

#[test]
fn rabbitmq_worker_killed_after_batch_recorded_before_acks() {
    worker_killed_at(&amqp_url(), "batch-recorded");
}

#[test]
fn nats_worker_killed_while_storing_a_batchs_results() {
    worker_killed_at(&nats_url(), "batch-rows-stored");
}

#[test]
fn rabbitmq_worker_killed_while_storing_a_batchs_results() {
    worker_killed_at(&amqp_url(), "batch-rows-stored");
}

/// The first batch expires with half its lines done: the other half comes back to the queue
/// and finishes realtime (at `rt`, the cheapest realtime pair), every job before its deadline.
fn expired_batch_rest_finishes_realtime(broker: &str) {
    const N: usize = 200;
    let mut fleet = Fleet::start(
        broker,
        &scenario("turnaround_s = 1.0\nexpire = [1]\nexpire_done = 0.5"),
        CATALOG,
    );
    // One batch of all 200, however slowly they arrive.
    gather_env(&mut fleet, N, 60.0);
    let file = jobs(&fleet, N, "24h");
    let run = "expire";
    fleet.submit(&file, run);
    let w = fleet.worker("w");
    let s = wait_done(&fleet, run, &[&w], "300s");
    assert_eq!(s["succeeded"], N as u64, "{s}");
    let each = one_success_each(&fleet.rows(run), N);
    let batch = each
        .iter()
        .filter(|r| r.route.as_deref() == Some("batch"))
        .count();
    let realtime: Vec<&ResultRow> = each
        .iter()
        .filter(|r| r.route.as_deref() == Some("realtime"))
        .collect();
    assert_eq!(batch + realtime.len(), N);
    assert!(
        (N / 2 - 20..=N / 2 + 20).contains(&batch),
        "{batch} of {N} lines done by the expired batch"
    );
    assert!(realtime.iter().all(|r| r.provider.as_deref() == Some("rt")));
    assert!(each.iter().all(|r| r.completed_at <= r.deadline));
    assert_eq!(sim_stats(&fleet, "bat")["batches_created"], 1);
}

#[test]
fn nats_expired_batch_rest_finishes_realtime() {
    expired_batch_rest_finishes_realtime(&nats_url());
}

#[test]
fn rabbitmq_expired_batch_rest_finishes_realtime() {
    expired_batch_rest_finishes_realtime(&amqp_url());
}

/// A batch that never finishes (turnaround far past the jobs' deadlines): at the jobs' safe
/// time the worker cancels it and the jobs finish realtime, none after its deadline.
#[test]
fn stuck_batch_is_cancelled_at_the_safe_time_and_jobs_finish_realtime() {
    const N: usize = 50;
    let mut fleet = Fleet::start(
        &nats_url(),
        &scenario("turnaround_s = 3600.0"),
        &CATALOG.replace("turnaround = \"10m\"", "turnaround = \"1s\""),
    );
    batch_env(&mut fleet, 100);
    for (k, v) in [
        ("OFFPEAK_WORKER__POLICY__SAFETY_MARGIN_S", "5"),
        ("OFFPEAK_WORKER__POLICY__BATCH_FALLBACK_S", "15"),
    ] {
        fleet.extra_env.push((k.into(), v.into()));
    }
    // Slack: 75 s - 5 s margin - ~6 s expected latency = 64 s: room for the 1 s turnaround
    // plus the 15 s fallback, so the jobs go to the batch; it is cancelled ~49 s later.
    let file = jobs(&fleet, N, "75s");
    let run = "stuck";
    fleet.submit(&file, run);
    let w = fleet.worker("w");
    let s = wait_done(&fleet, run, &[&w], "200s");
    assert_eq!(s["succeeded"], N as u64, "{s}");
    let each = one_success_each(&fleet.rows(run), N);
    let late: Vec<&ResultRow> = each
        .iter()
        .filter(|r| r.completed_at > r.deadline)
        .collect();
    assert!(
        late.is_empty(),
        "jobs finished after their deadline: {late:?}"
    );
    // The lines the batch finished before it was cancelled are kept (a 3,600 s turnaround
    // finishes about 1 % of them in the ~50 s it runs); the rest went realtime.
    let realtime = each
        .iter()
        .filter(|r| r.route.as_deref() == Some("realtime"))
        .count();
    assert!(realtime >= N * 9 / 10, "{realtime} of {N} realtime");
    assert_eq!(
        each.iter()
            .filter(|r| r.route.as_deref() == Some("batch"))
            .count(),
        N - realtime
    );
    // Jobs gathered within a second of each other share a batch; a slow submit may make two.
    let bat = sim_stats(&fleet, "bat");
    assert!(bat["batches_created"].as_u64().unwrap() >= 1, "{bat}");
    assert_eq!(bat["batches_cancelled"], bat["batches_created"], "{bat}");
    assert!(w.log_text().contains("cancelled"), "{}", w.log_text());
}

/// `bat` with no published turnaround: the 24 h window is the prior, too long for a job due in
/// 24 h. A first run whose jobs are due in 48 h goes through batches; a new worker, started
/// afterwards, reads the turnarounds the fleet stored and sends jobs due in 24 h to a batch too.
#[test]
fn a_new_worker_learns_the_batch_turnaround_the_fleet_has_seen() {
    let catalog = CATALOG.replace(", turnaround = \"10m\"", "");
    let mut fleet = Fleet::start(&nats_url(), &scenario("turnaround_s = 1.0"), &catalog);
    batch_env(&mut fleet, 100);
    let first = jobs(&fleet, 50, "48h");
    fleet.submit(&first, "first");
    let mut w = fleet.worker("w1");
    wait_done(&fleet, "first", &[&w], "120s");
    assert!(one_success_each(&fleet.rows("first"), 50)
        .iter()
        .all(|r| r.route.as_deref() == Some("batch")));
    assert!(w.terminate(Duration::from_secs(30)).is_some());
    let second = fleet.path("second.jsonl");
    job_file(&second, 50, |i| {
        format!(
            r#"{{"id":"job-{i:06}","model":"m","prompt":"again {i}","max_tokens":40,"priority":"deferrable","deadline_in":"24h"}}"#
        )
    });
    fleet.submit(&second, "second");
    let w2 = fleet.worker("w2");
    wait_done(&fleet, "second", &[&w2], "120s");
    let routes: Vec<Option<String>> = one_success_each(&fleet.rows("second"), 50)
        .into_iter()
        .map(|r| r.route)
        .collect();
    assert!(
        routes.iter().all(|r| r.as_deref() == Some("batch")),
        "{routes:?}\n{}",
        w2.log_text()
    );
}

/// A model with a flex tier at half price and a flex capacity of 4 requests at a time, a worker
/// sending 8 at a time: deferrable jobs all go flex (the flex 429s defer them instead of paying
/// realtime), at half the list price.
#[test]
fn deferrable_jobs_take_the_flex_tier_and_wait_out_its_429s() {
    const N: usize = 100;
    let catalog = r#"
[[providers]]
name = "fx"
kind = "openai"
base_url = "{SIM}/fx/v1"
[[providers.models]]
model = "m"
id = "m-fx"
input_per_mtok = 1.0
output_per_mtok = 2.0
flex = { multiplier = 0.5 }
"#;
    let scenario = r#"
[[providers]]
name = "fx"
kind = "openai"
models = ["m-fx"]
latency_ms = 1
[providers.flex]
concurrency = 4
latency_ms = 30
"#;
    let mut fleet = Fleet::start(&nats_url(), scenario, catalog);
    fleet
        .extra_env
        .push(("OFFPEAK_WORKER__CONCURRENCY".into(), "8".into()));
    let file = jobs(&fleet, N, "1h");
    fleet.submit(&file, "flex");
    let w = fleet.worker("w");
    wait_done(&fleet, "flex", &[&w], "180s");
    let each = one_success_each(&fleet.rows("flex"), N);
    assert!(each.iter().all(|r| r.route.as_deref() == Some("flex")));
    let list: f64 = each
        .iter()
        .map(|r| (r.input_tokens as f64 + 2.0 * r.output_tokens as f64) / 1e6)
        .sum();
    let cost: f64 = each.iter().map(|r| r.cost_usd).sum();
    assert!((cost / (list / 2.0) - 1.0).abs() < 1e-6, "{cost} vs {list}");
    let fx = sim_stats(&fleet, "fx");
    assert_eq!(fx["flex_requests"], N as u64, "{fx}");
    assert!(
        fx["flex_rejected"].as_u64().unwrap() > 0,
        "flex never ran out of capacity: {fx}"
    );
}

/// Anthropic's Message Batches keep no metadata: a batch created but not recorded is found by
/// its creation time and request count, and adopted (never created twice).
#[test]
fn anthropic_batch_created_but_not_recorded_is_found_again() {
    const N: usize = 120;
    let catalog = r#"
[[providers]]
name = "anth"
kind = "anthropic"
base_url = "{SIM}/anth/v1"
[[providers.models]]
model = "m"
id = "m-anth"
input_per_mtok = 1.0
output_per_mtok = 5.0
batch = { discount = 0.5, window = "24h", turnaround = "1h", max_requests = 100000 }
"#;
    let scenario = r#"
[[providers]]
name = "anth"
kind = "anthropic"
models = ["m-anth"]
latency_ms = 1
[providers.batch]
turnaround_s = 1.0
"#;
    let mut fleet = Fleet::start(&amqp_url(), scenario, catalog);
    batch_env(&mut fleet, 60);
    let file = jobs(&fleet, N, "24h");
    fleet.submit(&file, "anth");
    fleet
        .extra_env
        .push(("OFFPEAK_FAILPOINT".into(), "batch-created".into()));
    let mut victim = fleet.worker("victim");
    fleet.extra_env.pop();
    let start = Instant::now();
    while victim.child.try_wait().unwrap().is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "{}",
            victim.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let rescuer = fleet.worker("rescuer");
    wait_done(&fleet, "anth", &[&victim, &rescuer], "180s");
    let rows = fleet.rows("anth");
    let each = one_success_each(&rows, N);
    assert!(each.iter().all(|r| r.route.as_deref() == Some("batch")));
    let batches: HashSet<&str> = rows.iter().filter_map(|r| r.batch_id.as_deref()).collect();
    let st = sim_stats(&fleet, "anth");
    assert_eq!(
        st["batches_created"],
        batches.len() as u64,
        "{st}\n{}",
        rescuer.log_text()
    );
    assert_eq!(st["batch_lines_billed"], N as u64, "{st}");
    assert!(
        rescuer.log_text().contains("adopted"),
        "{}",
        rescuer.log_text()
    );
}
