//! Re-submitting after a crashed `offpeak submit` (issue #17): the producer is SIGKILLed half-way
//! through publishing 20,000 jobs and the same command is run again, with no worker running.
//! The publish checkpoint beside the manifest makes the second run skip what the broker already
//! confirmed, so on RabbitMQ (no broker de-duplication) at most 2 % of the jobs are on the queue
//! twice, and on NATS (de-duplication by message id) none; no job is missing on either.

mod support;

use queue::ConsumeOptions;
use schemas::Envelope;
use std::collections::HashSet;
use std::process::Stdio;
use std::time::{Duration, Instant};
use support::*;

const N: usize = 20_000;
/// 2 % of [`N`]: what the window after the last checkpoint may enqueue twice.
const MAX_RABBIT_DUPLICATES: u64 = 400;

/// Jobs on the queue before the kill, at least: more than twice [`MAX_RABBIT_DUPLICATES`], so a
/// re-submission that publishes them all again fails the RabbitMQ test.
const MIN_BEFORE_KILL: u64 = 1_000;

/// What a crashed and repeated submission left on the queue.
struct Outcome {
    /// Messages on the queue when the first `submit` had been killed.
    after_kill: u64,
    /// Messages on the queue after the second `submit`.
    total: u64,
    /// Distinct job ids among them.
    distinct: usize,
}

/// Submits N jobs, SIGKILLs the producer as soon as more than [`MIN_BEFORE_KILL`] are on the
/// queue (the acceptance says "at 0.5 s"; a release build publishes all 20,000 to NATS within
/// 0.5 s here, so the kill comes as early as publishing is under way), submits the same file
/// under the same run id again, and reads back every message on the queue.
fn crash_and_resubmit(broker: &str) -> Outcome {
    // One at a time: the duplicates measured depend on how fast the producer publishes.
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let fleet = Fleet::start(broker, ONE_FAST_PROVIDER, ONE_PROVIDER_CATALOG);
    let jobs = fleet.path("jobs.jsonl");
    job_file(&jobs, N, short_job);
    let run = "crashed";
    let rt = rt();
    let q = rt.block_on(async {
        queue::connect(
            broker,
            queue::BrokerOptions::with_namespace(&fleet.namespace),
        )
        .await
        .unwrap()
    });
    let depth = || rt.block_on(q.depth()).unwrap().unwrap_or(0);

    let log = fleet.path("submit-1.log");
    let mut first = fleet
        .cmd(&["submit", jobs.to_str().unwrap(), "--run-id", run, "--quiet"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let started = Instant::now();
    loop {
        assert!(
            first.try_wait().unwrap().is_none(),
            "the first submit ended before it could be killed:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "nothing was published within 60 s"
        );
        if depth() > MIN_BEFORE_KILL {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    first.kill().unwrap();
    first.wait().unwrap();
    // What the killed producer had sent may still be arriving: wait for the count to settle.
    let mut after_kill = depth();
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let now = depth();
        if now == after_kill {
            break;
        }
        after_kill = now;
    }
    assert!(
        after_kill > MIN_BEFORE_KILL && after_kill < N as u64,
        "the first submit was not interrupted half-way: {after_kill} of {N} enqueued"
    );

    let o = fleet.submit(&jobs, run);
    eprintln!("second submit: {}", text(&o.stdout).trim());
    let total = depth();

    // Read every message back (no worker runs): the distinct job ids must be all N.
    let distinct = rt.block_on(async {
        let mut c = q
            .consume(ConsumeOptions {
                max_in_flight: 1000,
                ack_wait: Duration::from_secs(60),
            })
            .await
            .unwrap();
        let mut ids = HashSet::new();
        let mut read = 0u64;
        while read < total {
            let d = tokio::time::timeout(Duration::from_secs(20), c.next())
                .await
                .expect("a message within 20 s")
                .unwrap()
                .expect("the stream goes on");
            ids.insert(Envelope::from_bytes(&d.payload).unwrap().job.id.0);
            d.ack_unconfirmed().await.unwrap();
            read += 1;
        }
        ids.len()
    });
    Outcome {
        after_kill,
        total,
        distinct,
    }
}

#[test]
fn rabbitmq_resubmission_after_a_sigkilled_submit_enqueues_at_most_two_percent_twice() {
    let o = crash_and_resubmit(&amqp_url());
    let duplicates = o.total - o.distinct as u64;
    eprintln!(
        "RabbitMQ: {} enqueued before the kill, {} after the re-submission, {duplicates} duplicates",
        o.after_kill, o.total
    );
    assert_eq!(o.distinct, N, "a job is missing from the queue");
    assert!(
        duplicates <= MAX_RABBIT_DUPLICATES,
        "{duplicates} jobs enqueued twice (at most {MAX_RABBIT_DUPLICATES})"
    );
}

#[test]
fn nats_resubmission_after_a_sigkilled_submit_enqueues_nothing_twice() {
    let o = crash_and_resubmit(&nats_url());
    let duplicates = o.total - o.distinct as u64;
    eprintln!(
        "NATS: {} enqueued before the kill, {} after the re-submission, {duplicates} duplicates",
        o.after_kill, o.total
    );
    assert_eq!(o.distinct, N, "a job is missing from the queue");
    assert_eq!(duplicates, 0, "jobs enqueued twice");
}
