//! The chaos suite (issue 4): real `offpeak` processes under faults — workers SIGKILLed every
//! few seconds, the NATS server killed and restarted, the S3 store gone for 30 s, providers that
//! fail, hang, rate-limit, garble and bloat their answers. Every scenario ends with the same
//! invariant over the run's Parquet rows: each submitted job has exactly one outcome after
//! de-duplication (succeeded, or failed with a reason), none is missing, and the duplicate rows
//! are counted. The figures are printed and appended to `target/chaos-figures.md`.
//!
//! Broker and store restarts use private `nats-server` / `s3s-fs` processes on ports and data
//! directories of their own, so the machine's services (and the tests using them) are never
//! disturbed. The scenarios run one at a time: they are heavy and their timing matters.

mod support;

use schemas::{ResultRow, ResultStatus};
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};
use support::*;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// A provider slow enough (40 ms an answer) that a run lasts long enough to be hit by faults.
const STEADY: &str = r#"
seed = 11
[[providers]]
name = "cheap"
kind = "openai"
models = ["m-cheap"]
latency_ms = 40
jitter = 0.5
"#;

fn job_id(i: usize) -> String {
    format!("c-{i:05}")
}

/// Every tenth job critical, the rest standard.
fn mixed(i: usize) -> &'static str {
    if i.is_multiple_of(10) {
        "critical"
    } else {
        "standard"
    }
}

fn write_jobs(fleet: &Fleet, n: usize, priority: fn(usize) -> &'static str) -> PathBuf {
    let jobs = fleet.path("jobs.jsonl");
    job_file(&jobs, n, |i| {
        let priority = priority(i);
        format!(
            r#"{{"id":"{}","model":"m","prompt":"chaos question {i}","max_tokens":8,"priority":"{priority}"}}"#,
            job_id(i)
        )
    });
    jobs
}

/// What a scenario measured.
struct Figures {
    scenario: &'static str,
    jobs: usize,
    faults: String,
    rows: usize,
    duplicates: usize,
    failed: usize,
    secs: f64,
}

/// The invariant: every submitted job has a row, the rows name no other job, and after
/// de-duplication each job has one outcome — succeeded, or failed with a reason. Prints and
/// records the figures.
fn check_invariant(
    scenario: &'static str,
    rows: &[ResultRow],
    n: usize,
    faults: String,
    started: Instant,
) -> Figures {
    let mut per_job: HashMap<&str, Vec<&ResultRow>> = HashMap::new();
    for r in rows {
        per_job.entry(r.job_id.as_str()).or_default().push(r);
    }
    let lost: Vec<String> = (0..n)
        .map(job_id)
        .filter(|id| !per_job.contains_key(id.as_str()))
        .collect();
    let unexpected = per_job.len() + lost.len() - n;
    let deduped = store::dedup(rows.to_vec());
    let mut failed = 0;
    for r in &deduped {
        match r.status {
            ResultStatus::Succeeded => {}
            ResultStatus::Failed => {
                failed += 1;
                assert!(
                    r.error_message.as_deref().is_some_and(|m| !m.is_empty()),
                    "{scenario}: {} failed without a reason: {r:?}",
                    r.job_id
                );
            }
        }
    }
    let f = Figures {
        scenario,
        jobs: n,
        faults,
        rows: rows.len(),
        duplicates: rows.len() - per_job.len(),
        failed,
        secs: started.elapsed().as_secs_f64(),
    };
    let line = format!(
        "| {} | {} | {} | {} | {} | {} | {} | {:.0} s |",
        f.scenario,
        f.jobs,
        f.faults,
        lost.len(),
        f.duplicates,
        f.failed,
        f.rows,
        f.secs
    );
    eprintln!("CHAOS {line}");
    let record = root().join("target/chaos-figures.md");
    if let Ok(mut file) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(record)
    {
        use std::io::Write;
        let _ = writeln!(file, "{line}");
    }
    assert!(
        lost.is_empty(),
        "{scenario}: {} jobs lost: {lost:?}",
        lost.len()
    );
    assert_eq!(unexpected, 0, "{scenario}: rows for jobs never submitted");
    assert_eq!(deduped.len(), n, "{scenario}: one outcome per job");
    f
}

/// Waits for `status --wait` (exit 0, or 3 when `failures_ok`), with the workers' logs on error.
fn wait_done(fleet: &Fleet, run: &str, timeout: &str, workers: &[Proc], failures_ok: bool) {
    let o = fleet.wait_for(run, timeout);
    let ok = o.status.success() || (failures_ok && o.status.code() == Some(3));
    assert!(
        ok,
        "status --wait: {:?}\n{}\n{}\n{}",
        o.status,
        text(&o.stdout),
        text(&o.stderr),
        workers
            .iter()
            .map(|w| format!("--- {}\n{}", w.name, tail(&w.log_text(), 40)))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn stop_all(workers: &mut [Proc]) {
    for w in workers {
        let st = w.terminate(Duration::from_secs(60));
        assert!(
            st.is_some_and(|s| s.success()),
            "{} did not exit 0 on SIGTERM: {st:?}\n{}",
            w.name,
            tail(&w.log_text(), 40)
        );
    }
}

/// Polls `cond` every 200 ms until it holds, failing after `within`.
fn await_cond(what: &str, within: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < within, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A small xorshift generator: which worker dies next.
struct Dice(u64);

impl Dice {
    fn roll(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// 20,000 jobs, three workers, and every 2 s one of them (at random) is SIGKILLed and replaced
/// by a fresh process, until the queue is empty.
#[test]
fn sigkill_a_random_worker_every_two_seconds_loses_nothing() {
    let _g = serial();
    const N: usize = 20_000;
    let mut fleet = Fleet::start(&nats_url(), STEADY, ONE_PROVIDER_CATALOG);
    fleet.extra_env.extend([
        ("OFFPEAK_WORKER__CONCURRENCY".into(), "24".into()),
        // Redelivery of a killed worker's jobs after 5 + 2 s.
        ("OFFPEAK_WORKER__REQUEST_TIMEOUT_S".into(), "2".into()),
    ]);
    let jobs = write_jobs(&fleet, N, mixed);
    let run = "kill";
    let started = Instant::now();
    fleet.submit(&jobs, run);
    let mut workers: Vec<Proc> = (0..3).map(|i| fleet.worker(&format!("k{i}"))).collect();
    let mut dice = Dice(0x9e37_79b9_7f4a_7c15 ^ u64::from(std::process::id()));
    let mut kills = 0usize;
    let mut stored_at_kills = Vec::new();
    loop {
        std::thread::sleep(Duration::from_secs(2));
        if fleet.depth() == Some(0) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "no end in sight after {kills} kills"
        );
        let i = dice.roll(workers.len());
        let victim = std::mem::replace(&mut workers[i], fleet.worker(&format!("k{i}-r{kills}")));
        drop(victim); // SIGKILL, then a replacement is already starting
        kills += 1;
        if kills.is_multiple_of(4) {
            stored_at_kills.push(fleet.rows(run).len());
        }
    }
    wait_done(&fleet, run, "300s", &workers, false);
    stop_all(&mut workers);
    assert!(
        kills >= 5,
        "only {kills} kills: the run was too short to test anything"
    );
    let f = check_invariant(
        "SIGKILL a random worker every 2 s (NATS, 3 workers, restarted)",
        &fleet.rows(run),
        N,
        format!("{kills} SIGKILLs"),
        started,
    );
    assert_eq!(f.failed, 0);
    eprintln!("rows stored at every 4th kill: {stored_at_kills:?}");
}

/// 10,000 jobs on a private NATS server that is SIGKILLed twice — once while `submit` is
/// publishing, once while two workers process — and restarted 3 s later each time. The
/// producer and the workers reconnect and carry on.
#[test]
fn nats_server_killed_and_restarted_mid_run_loses_nothing() {
    let _g = serial();
    const N: usize = 10_000;
    let nats_dir = tempfile::tempdir().unwrap();
    let mut nats = PrivateNats::start(nats_dir.path());
    let mut fleet = Fleet::start(&nats.url(), STEADY, ONE_PROVIDER_CATALOG);
    fleet.extra_env.extend([
        ("OFFPEAK_WORKER__CONCURRENCY".into(), "24".into()),
        ("OFFPEAK_WORKER__REQUEST_TIMEOUT_S".into(), "2".into()),
    ]);
    let jobs = write_jobs(&fleet, N, mixed);
    let run = "natsrestart";
    let started = Instant::now();
    let mut workers: Vec<Proc> = (0..2).map(|i| fleet.worker(&format!("n{i}"))).collect();

    // Restart 1: while the producer publishes.
    let submit_log = fleet.path("submit.log");
    let mut submit = fleet
        .cmd(&["submit", jobs.to_str().unwrap(), "--run-id", run, "--quiet"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&submit_log).unwrap())
        .spawn()
        .unwrap();
    await_cond("the producer to publish", Duration::from_secs(60), || {
        fleet.depth().is_some_and(|d| d > 500) || submit.try_wait().unwrap().is_some()
    });
    let during_publish = submit.try_wait().unwrap().is_none();
    nats.kill();
    std::thread::sleep(Duration::from_secs(3));
    nats.up();
    let submitted = submit.wait().unwrap();
    // The producer rides the restart out: its publishes are retried with the same message ids.
    assert!(
        submitted.success(),
        "the producer gave up on the broker restart:\n{}",
        tail(
            &std::fs::read_to_string(&submit_log).unwrap_or_default(),
            10
        )
    );

    // Restart 2: while the workers process.
    await_cond("results to flow", Duration::from_secs(120), || {
        fleet.rows(run).len() >= N / 5
    });
    let processed_before = fleet.rows(run).len();
    nats.kill();
    std::thread::sleep(Duration::from_secs(3));
    nats.up();
    assert!(
        processed_before < N,
        "the run ended before the second restart"
    );

    wait_done(&fleet, run, "300s", &workers, false);
    stop_all(&mut workers);
    let f = check_invariant(
        "NATS server SIGKILLed + restarted twice (publishing; processing)",
        &fleet.rows(run),
        N,
        format!(
            "2 broker kills ({}); the producer rode it out",
            if during_publish {
                "1st during publish"
            } else {
                "publish had ended"
            }
        ),
        started,
    );
    assert_eq!(f.failed, 0);
    drop(fleet);
    nats.kill();
}

/// 6,000 jobs on a private RabbitMQ node that is SIGKILLed while two workers process and
/// restarted. Workers whose connection died store what they hold and connect again in place.
#[test]
fn rabbitmq_node_killed_and_restarted_mid_run_loses_nothing() {
    let _g = serial();
    const N: usize = 6_000;
    let rabbit_dir = tempfile::tempdir().unwrap();
    let mut rabbit = PrivateRabbit::start(rabbit_dir.path());
    let mut fleet = Fleet::start(&rabbit.url(), STEADY, ONE_PROVIDER_CATALOG);
    fleet.extra_env.extend([
        ("OFFPEAK_WORKER__CONCURRENCY".into(), "24".into()),
        ("OFFPEAK_WORKER__REQUEST_TIMEOUT_S".into(), "2".into()),
    ]);
    let jobs = write_jobs(&fleet, N, mixed);
    let run = "rabbitrestart";
    let started = Instant::now();
    fleet.submit(&jobs, run);
    let mut workers: Vec<Proc> = (0..2).map(|i| fleet.worker(&format!("r{i}"))).collect();
    await_cond("results to flow", Duration::from_secs(120), || {
        fleet.rows(run).len() >= N / 5
    });
    let processed_before = fleet.rows(run).len();
    rabbit.kill();
    std::thread::sleep(Duration::from_secs(2));
    rabbit.up();
    assert!(processed_before < N, "the run ended before the restart");
    // Workers reconnect in place: none of them exits, and each says it reconnected.
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let done = fleet.depth() == Some(0) && fleet.rows(run).len() >= N;
        if done {
            break;
        }
        assert!(Instant::now() < deadline, "no end in sight");
        for w in workers.iter_mut() {
            let st = w.child.try_wait().unwrap();
            assert!(
                st.is_none(),
                "{} exited: {st:?}\n{}",
                w.name,
                tail(&w.log_text(), 10)
            );
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    wait_done(&fleet, run, "300s", &workers, false);
    let reconnected = workers
        .iter()
        .filter(|w| w.log_text().contains("reconnected to the broker"))
        .count();
    assert!(reconnected >= 1, "no worker reconnected");
    for w in &mut workers {
        let st = w.terminate(Duration::from_secs(60));
        assert!(
            st.is_some_and(|s| s.success()),
            "{}: {st:?}\n{}",
            w.name,
            tail(&w.log_text(), 20)
        );
    }
    let f = check_invariant(
        "RabbitMQ node SIGKILLed + restarted (processing)",
        &fleet.rows(run),
        N,
        format!("1 broker kill, {reconnected} workers reconnected"),
        started,
    );
    assert_eq!(f.failed, 0);
    drop(fleet);
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// 6,000 jobs, two workers, and the (private) S3 store killed for 30 s once results flow: the
/// workers keep their rows, retry the upload, acknowledge nothing while the store is down, stay
/// within bounded memory, and store everything once it is back.
#[test]
fn s3_store_down_for_thirty_seconds_loses_nothing_and_acks_nothing_meanwhile() {
    let _g = serial();
    const N: usize = 6_000;
    const OUTAGE: Duration = Duration::from_secs(30);
    let s3_dir = tempfile::tempdir().unwrap();
    let mut s3 = PrivateS3::start(s3_dir.path());
    let mut fleet = Fleet::start(&nats_url(), STEADY, ONE_PROVIDER_CATALOG);
    let bucket = unique("chaos-s3");
    fleet.output = format!("s3://{bucket}/results");
    fleet.extra_env.extend([
        ("AWS_ENDPOINT_URL".into(), s3.endpoint()),
        ("OFFPEAK_S3_ENDPOINT".into(), s3.endpoint()),
        ("OFFPEAK_WORKER__CONCURRENCY".into(), "24".into()),
        ("OFFPEAK_WORKER__REQUEST_TIMEOUT_S".into(), "2".into()),
        ("OFFPEAK_WORKER__FLUSH__MAX_ROWS".into(), "500".into()),
    ]);
    create_bucket_in(&s3, &fleet.output);
    let jobs = write_jobs(&fleet, N, mixed);
    let run = "s3outage";
    let started = Instant::now();
    fleet.submit(&jobs, run);
    let ports = [free_port(), free_port()];
    let mut workers: Vec<Proc> = ports
        .iter()
        .enumerate()
        .map(|(i, p)| fleet.worker_on(&format!("s{i}"), *p))
        .collect();
    await_cond("results to flow", Duration::from_secs(120), || {
        rows_in(&s3, &fleet.output, run).len() >= N / 10
    });
    let stored_before = rows_in(&s3, &fleet.output, run).len();
    s3.kill();
    let down_at = Instant::now();
    let mut depths = Vec::new();
    let mut max_rss = 0;
    while down_at.elapsed() < OUTAGE {
        std::thread::sleep(Duration::from_secs(1));
        depths.extend(fleet.depth());
        for w in &workers {
            max_rss = max_rss.max(rss_kib(w.pid()));
        }
    }
    let flush_errors: f64 = ports
        .iter()
        .map(|p| metric(*p, "offpeak_flush_errors_total"))
        .sum();
    s3.up();
    assert!(stored_before < N, "the run ended before the outage");
    // Nothing is acknowledged while nothing can be stored: the stream keeps every message
    // (acked messages leave a work-queue stream).
    let first = depths[1.min(depths.len() - 1)];
    assert!(
        depths.iter().skip(1).all(|d| *d >= first),
        "messages were acknowledged during the outage: {depths:?}"
    );
    assert!(flush_errors > 0.0, "the workers never noticed the outage");
    assert!(
        max_rss < 512 * 1024,
        "a worker grew to {max_rss} KiB during the outage"
    );
    for w in &workers {
        assert!(
            w.log_text().contains("storing results failed; retrying"),
            "{}",
            tail(&w.log_text(), 20)
        );
    }

    wait_done(&fleet, run, "300s", &workers, false);
    stop_all(&mut workers);
    let f = check_invariant(
        "S3 store down for 30 s (NATS, 2 workers)",
        &rows_in(&s3, &fleet.output, run),
        N,
        format!(
            "30 s outage, {flush_errors} failed uploads; worker RSS max {} MiB; queue depth held at {first}..{}",
            max_rss / 1024,
            depths.iter().max().unwrap_or(&0)
        ),
        started,
    );
    assert_eq!(f.failed, 0);
    // Held messages are kept alive while the store is down, so the broker does not hand them
    // to the other worker (without that, a quarter of the run was stored twice).
    assert!(
        f.duplicates < N / 20,
        "{} duplicates: held messages were redelivered during the outage",
        f.duplicates
    );
}

const CHAOS_CATALOG: &str = r#"
[[providers]]
name = "garbled"
kind = "openai"
base_url = "{SIM}/garbled/v1"
[[providers.models]]
model = "m"
id = "m-garbled"
input_per_mtok = 0.01
output_per_mtok = 0.01

[[providers]]
name = "bloated"
kind = "anthropic"
base_url = "{SIM}/bloated/v1"
[[providers.models]]
model = "m"
id = "m-bloated"
input_per_mtok = 0.02
output_per_mtok = 0.02

[[providers]]
name = "flaky"
kind = "openai"
base_url = "{SIM}/flaky/v1"
[[providers.models]]
model = "m"
id = "m-flaky"
input_per_mtok = 0.05
output_per_mtok = 0.05

[[providers]]
name = "stormy"
kind = "openai"
base_url = "{SIM}/stormy/v1"
[[providers.models]]
model = "m"
id = "m-stormy"
input_per_mtok = 0.1
output_per_mtok = 0.1

[[providers]]
name = "steady"
kind = "anthropic"
base_url = "{SIM}/steady/v1"
[[providers.models]]
model = "m"
id = "m-steady"
input_per_mtok = 3.0
output_per_mtok = 15.0
"#;

/// Every kind of provider trouble at once: the cheapest answers malformed JSON, the next a
/// 50 MB body, then one with 30 % 5xx and 10 % hung requests, one in 429 storms, and a dear
/// steady one.
const CHAOS_SCENARIO: &str = r#"
seed = 21
[[providers]]
name = "garbled"
kind = "openai"
models = ["m-garbled"]
latency_ms = 5
chaos = { malformed = 1.0 }

[[providers]]
name = "bloated"
kind = "anthropic"
models = ["m-bloated"]
latency_ms = 5
chaos = { huge = 1.0, huge_bytes = 52428800 }

[[providers]]
name = "flaky"
kind = "openai"
models = ["m-flaky"]
latency_ms = 10
errors = { "500" = 0.15, "502" = 0.05, "503" = 0.1 }
chaos = { hang = 0.1 }

[[providers]]
name = "stormy"
kind = "openai"
models = ["m-stormy"]
latency_ms = 10
errors = { "429" = 0.2 }
rate_limited = [{ from_s = 0, to_s = 5 }, { from_s = 10, to_s = 15 }, { from_s = 20, to_s = 25 }]

[[providers]]
name = "steady"
kind = "anthropic"
models = ["m-steady"]
latency_ms = 10
"#;

/// 2,000 jobs through five misbehaving providers: each ends succeeded or failed with a reason,
/// none is lost, and the garbled and bloated answers never become results. The jobs are
/// critical: they never wait for a cheaper provider's circuit to close (standard jobs would,
/// correctly, and make the run as long as the breakers' open periods), only for retry backoff.
#[test]
fn provider_chaos_every_job_gets_one_outcome() {
    let _g = serial();
    const N: usize = 2_000;
    let mut fleet = Fleet::start(&nats_url(), CHAOS_SCENARIO, CHAOS_CATALOG);
    fleet.extra_env.extend([
        ("OFFPEAK_WORKER__CONCURRENCY".into(), "32".into()),
        ("OFFPEAK_WORKER__REQUEST_TIMEOUT_S".into(), "2".into()),
        (
            "OFFPEAK_WORKER__MAX_RESPONSE_BYTES".into(),
            "1048576".into(),
        ),
    ]);
    let jobs = write_jobs(&fleet, N, |_| "critical");
    let run = "providers";
    let started = Instant::now();
    fleet.submit(&jobs, run);
    let mut workers: Vec<Proc> = (0..2).map(|i| fleet.worker(&format!("p{i}"))).collect();
    wait_done(&fleet, run, "600s", &workers, true);
    stop_all(&mut workers);

    let sim_port: u16 = fleet.sim_port();
    let (_, stats) = http_get(sim_port, "/_sim/stats");
    let stats: serde_json::Value = serde_json::from_str(&stats).unwrap();
    let count = |p: &str, k: &str| stats[p][k].as_u64().unwrap_or(0);
    let rows = fleet.rows(run);
    for r in &rows {
        if r.status == ResultStatus::Succeeded {
            let p = r.provider.as_deref().unwrap_or_default();
            assert!(
                matches!(p, "flaky" | "stormy" | "steady"),
                "{} succeeded on {p}",
                r.job_id
            );
        }
    }
    let faults = format!(
        "{} malformed, {} × 50 MB bodies, {} 5xx + {} hung, {} 429s",
        count("garbled", "errors"),
        count("bloated", "errors"),
        count("flaky", "errors"),
        count("flaky", "hung"),
        count("stormy", "rate_limited")
    );
    assert!(count("garbled", "errors") > 0 && count("bloated", "errors") > 0);
    assert!(count("flaky", "errors") > 0 && count("flaky", "hung") > 0);
    assert!(count("stormy", "rate_limited") > 0);
    check_invariant(
        "provider chaos (malformed JSON, 50 MB body, 30 % 5xx, 10 % hung, 429 storms)",
        &rows,
        N,
        faults,
        started,
    );
}
