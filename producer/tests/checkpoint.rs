//! The publish checkpoint (issue #17) on a local results directory and the in-process queue:
//! the confirmed prefix, what a re-submission skips, and the checkpoints it must ignore. The
//! crash itself, on real brokers, is `cli/tests/resubmit.rs`.

mod common;

use common::{now, options};
use producer::checkpoint::Tracker;
use producer::{check_file, PublishCheckpoint, Submission, CHECKPOINT_FILE};
use queue::{MemoryQueue, Queue};
use schemas::{Catalog, RunId};
use std::fmt::Write;
use std::sync::Arc;
use store::{LocalDirSink, ResultSink};

const N: usize = 1_000;
const QUEUE: &str = "memory ns";

fn jobs_file(dir: &std::path::Path) -> std::path::PathBuf {
    let mut s = String::new();
    for i in 0..N {
        writeln!(
            s,
            r#"{{"id":"job-{i:06}","model":"llama-3.1-70b","prompt":"question {i}"}}"#
        )
        .unwrap();
    }
    testkit::write_file(dir, "jobs.jsonl", s.as_bytes())
}

fn catalog() -> Catalog {
    Catalog { providers: vec![] }
}

#[test]
fn the_prefix_is_the_length_of_the_confirmed_run_of_jobs_from_the_first() {
    let t = Tracker::new(0);
    t.complete(1);
    t.complete(2);
    assert_eq!(t.prefix(), 0, "job 0 is not confirmed yet");
    t.complete(0);
    assert_eq!(t.prefix(), 3);
    t.complete(5);
    t.complete(3);
    assert_eq!(t.prefix(), 4);
    t.complete(4);
    assert_eq!(t.prefix(), 6);
    let resumed = Tracker::new(10);
    resumed.complete(3);
    assert_eq!(
        resumed.prefix(),
        10,
        "jobs before the start are counted already"
    );
}

#[tokio::test]
async fn a_resubmission_skips_the_jobs_the_interrupted_one_got_confirmed() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Arc::new(LocalDirSink::new(dir.path().join("out")));
    let checked = check_file(jobs_file(dir.path()).to_str().unwrap(), options())
        .await
        .unwrap();
    let run = RunId::new("r1").unwrap();
    let s = Submission::begin(&*sink, &run, &checked, &catalog(), now())
        .await
        .unwrap();

    let first = MemoryQueue::new();
    let c = PublishCheckpoint::open(sink.clone(), &s.manifest, N as u64, QUEUE).await;
    assert_eq!(c.already_enqueued(), 0);
    let n = s
        .publish(&first, &checked, &catalog(), 16, Some(&c), &|_| {})
        .await
        .unwrap();
    assert_eq!(n, N as u64);
    // The last value is stored when publishing ends; the manifest is not marked published (as
    // when the producer dies before `finish`).
    let c = PublishCheckpoint::open(sink.clone(), &s.manifest, N as u64, QUEUE).await;
    assert_eq!(c.already_enqueued(), N as u64);

    // A checkpoint of 600 (the slot files a crash would leave): the first 600 jobs are skipped.
    for name in sink.list("r1").await.unwrap() {
        if name.starts_with(CHECKPOINT_FILE) {
            sink.delete("r1", &name).await.unwrap();
        }
    }
    let record = serde_json::json!({
        "input_sha256": s.manifest.input_sha256,
        "submitted_at": s.manifest.submitted_at,
        "valid_jobs": N,
        "queue": QUEUE,
        "published": 600,
    });
    sink.put("r1", "_published.3", record.to_string().into_bytes())
        .await
        .unwrap();
    let c = PublishCheckpoint::open(sink.clone(), &s.manifest, N as u64, QUEUE).await;
    assert_eq!(c.already_enqueued(), 600);
    let second = MemoryQueue::new();
    let n = s
        .publish(&second, &checked, &catalog(), 16, Some(&c), &|_| {})
        .await
        .unwrap();
    assert_eq!(n, 400);
    assert_eq!(second.depth().await.unwrap(), Some(400));
}

#[tokio::test]
async fn a_garbled_or_foreign_checkpoint_is_ignored_and_everything_is_published() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Arc::new(LocalDirSink::new(dir.path().join("out")));
    let checked = check_file(jobs_file(dir.path()).to_str().unwrap(), options())
        .await
        .unwrap();
    let run = RunId::new("r2").unwrap();
    let s = Submission::begin(&*sink, &run, &checked, &catalog(), now())
        .await
        .unwrap();
    let record = |queue: &str, valid: usize, published: usize| {
        serde_json::json!({
            "input_sha256": s.manifest.input_sha256,
            "submitted_at": s.manifest.submitted_at,
            "valid_jobs": valid,
            "queue": queue,
            "published": published,
        })
        .to_string()
        .into_bytes()
    };
    sink.put("r2", "_published.0", b"{not json".to_vec())
        .await
        .unwrap();
    sink.put("r2", "_published.1", record("another broker", N, 900))
        .await
        .unwrap();
    sink.put("r2", "_published.2", record(QUEUE, N + 5, 900))
        .await
        .unwrap();
    sink.put("r2", "_published.3", record(QUEUE, N, N + 1))
        .await
        .unwrap();
    let c = PublishCheckpoint::open(sink.clone(), &s.manifest, N as u64, QUEUE).await;
    assert_eq!(c.already_enqueued(), 0);

    let q = MemoryQueue::new();
    let n = s
        .publish(&q, &checked, &catalog(), 16, Some(&c), &|_| {})
        .await
        .unwrap();
    assert_eq!(n, N as u64);
}
