//! The publish checkpoint, `run=<run_id>/_published.<slot>` beside the manifest: how many of
//! the run's valid jobs, counted in file order from the first, the broker has confirmed (issue
//! #17). A
//! producer killed half-way leaves it behind, and re-submitting the same file under the same run
//! id to the same queue skips that prefix instead of enqueueing it again — RabbitMQ does not
//! de-duplicate, so without it every job published before the crash was paid for twice.
//!
//! Confirmations come back in any order while many publishes are in flight, so the checkpoint is
//! the length of the *confirmed prefix* ([`Tracker`]), never a count: a job past a gap may be
//! confirmed, the gap's job not. It is written by a task of its own beside the publishing
//! ([`PublishCheckpoint::keep_written`]) every 1 % of the run or quarter of the publishes in
//! flight, and at least every 250 ms while it advances; a publish never waits for the store.
//! Up to four writes overlap, each to its own slot file (a slot is written again only once its
//! last write returned, so each slot only grows); a re-submission takes the largest valid slot. What the broker took after the last write is
//! published again by a re-submission (the window the checkpoint leaves open).
//!
//! A checkpoint that belongs to another manifest, another file, another selection of valid jobs
//! or another queue, or that does not parse, is ignored with a warning: everything is published,
//! as without one.

use chrono::{DateTime, Utc};
use futures::stream::{FuturesUnordered, StreamExt};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use store::{Manifest, ResultSink};
use tokio::sync::watch;
use tokio::time::Instant;

/// The checkpoint's file name inside a run's directory; it is stored in [`SLOTS`] files,
/// `_published.0` to `_published.3`, and the largest valid one counts.
pub const CHECKPOINT_FILE: &str = "_published";

/// A checkpoint write not answered by then counts as failed.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Checkpoint writes in flight at once, each to its own file.
const SLOTS: usize = 4;

/// Longest time the checkpoint lags behind the confirmed prefix while it advances.
const WRITE_INTERVAL: Duration = Duration::from_millis(250);

/// What is stored: the prefix length and what it is a prefix *of*.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Record {
    /// The manifest's checksum of the job file.
    input_sha256: String,
    /// The manifest's submission time: a manifest written again (deleted, or a new run) is
    /// another submission, whose queue this checkpoint says nothing about.
    submitted_at: DateTime<Utc>,
    /// Valid jobs in the file as the submission counted them (the selection the prefix indexes).
    valid_jobs: u64,
    /// The queue the jobs went to (redacted broker URL and namespace).
    queue: String,
    /// Leading valid jobs, in file order, confirmed by the broker (or answered already).
    published: u64,
}

/// A run's publish checkpoint: where the previous submission stopped, and where this one
/// records its progress.
#[derive(Clone)]
pub struct PublishCheckpoint {
    sink: Arc<dyn ResultSink>,
    run_id: String,
    record: Record,
    /// Publishing is not held back behind the stored checkpoint (the broker drops repeats).
    unbounded: bool,
}

impl PublishCheckpoint {
    /// Reads the checkpoint of `manifest`'s run on `sink` for publishing `valid_jobs` jobs to
    /// `queue` (any stable name of the broker and namespace, without secrets). A missing one
    /// starts at 0; one that belongs to something else or does not parse starts at 0 with a
    /// warning. A run already marked published needs none (and starts at 0).
    pub async fn open(
        sink: Arc<dyn ResultSink>,
        manifest: &Manifest,
        valid_jobs: u64,
        queue: &str,
    ) -> PublishCheckpoint {
        let mut record = Record {
            input_sha256: manifest.input_sha256.clone(),
            submitted_at: manifest.submitted_at,
            valid_jobs,
            queue: queue.to_string(),
            published: 0,
        };
        if manifest.published_at.is_none() {
            match read(&*sink, &manifest.run_id).await {
                Ok(slots) => {
                    for (name, stored) in slots {
                        match stored {
                            Ok(stored)
                                if stored.published <= valid_jobs
                                    && stored
                                        == (Record {
                                            published: stored.published,
                                            ..record.clone()
                                        }) =>
                            {
                                record.published = record.published.max(stored.published)
                            }
                            Ok(_) => tracing::warn!(
                                run_id = %manifest.run_id,
                                "ignoring the publish checkpoint {name}: it belongs to another \
                                 submission (file, selection or queue)"
                            ),
                            Err(reason) => tracing::warn!(
                                run_id = %manifest.run_id,
                                "ignoring the publish checkpoint {name} ({reason})"
                            ),
                        }
                    }
                }
                Err(reason) => tracing::warn!(
                    run_id = %manifest.run_id,
                    "ignoring the publish checkpoint ({reason}); publishing every job"
                ),
            }
        }
        PublishCheckpoint {
            sink,
            run_id: manifest.run_id.clone(),
            record,
            unbounded: false,
        }
    }

    /// For a broker that drops a repeated message id by itself (NATS JetStream): publishing is
    /// not held back behind the stored checkpoint, which is still written and still skips what
    /// it recorded — a re-submission inside the broker's de-duplication window enqueues nothing
    /// twice, a later one at most what was published past the last checkpoint.
    pub fn broker_deduplicates(mut self, yes: bool) -> PublishCheckpoint {
        self.unbounded = yes;
        self
    }

    /// Leading valid jobs an earlier submission got confirmed: not published again.
    pub fn already_enqueued(&self) -> u64 {
        self.record.published
    }

    /// Writes the tracker's prefix whenever it advanced by 1 % of the run or by a quarter of
    /// `in_flight` (whichever is fewer jobs), or every [`WRITE_INTERVAL`] while it advances;
    /// returns after writing the last value once the tracker is closed. A failed write is
    /// logged and the next value written: the checkpoint only saves work, publishing goes on
    /// without it.
    ///
    /// What a crash leaves to be published twice is what the broker took past the stored
    /// checkpoint: the publishes in flight (up to `in_flight`; RabbitMQ confirms persistent
    /// messages in bursts, after its disk write) plus the checkpoint's lag. So the lag is kept
    /// to a fraction of `in_flight` and to one store round trip: up to [`SLOTS`] writes overlap,
    /// each to a file of its own, so a new value never waits for a slow earlier write.
    pub async fn keep_written(&self, tracker: &Tracker, in_flight: usize) {
        let step = step(self.record.valid_jobs, in_flight);
        let mut rx = tracker.state.subscribe();
        let mut started = self.record.published;
        let mut free: Vec<usize> = (0..SLOTS).rev().collect();
        let mut writes = FuturesUnordered::new();
        let mut last = Instant::now();
        loop {
            let State { prefix, closed } = *rx.borrow_and_update();
            if closed {
                while writes.next().await.is_some() {}
                if prefix > self.record.published {
                    self.write(tracker, 0, prefix).await;
                }
                return;
            }
            let due =
                prefix >= started + step || (prefix > started && last.elapsed() >= WRITE_INTERVAL);
            if due {
                if let Some(slot) = free.pop() {
                    writes.push(self.write(tracker, slot, prefix));
                    started = prefix;
                    last = Instant::now();
                    continue;
                }
            }
            let wait = if prefix > started {
                WRITE_INTERVAL.saturating_sub(last.elapsed())
            } else {
                Duration::from_secs(3600)
            };
            tokio::select! {
                changed = rx.changed() => if changed.is_err() { return },
                Some(slot) = writes.next(), if !writes.is_empty() => free.push(slot),
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Stores `published` in slot `slot` and tells `tracker`; returns the slot, free again.
    async fn write(&self, tracker: &Tracker, slot: usize, published: u64) -> usize {
        let record = Record {
            published,
            ..self.record.clone()
        };
        let bytes = serde_json::to_vec(&record).unwrap_or_default();
        let name = slot_name(slot);
        let put = self.sink.put(&self.run_id, &name, bytes);
        // A store that hangs must not hold publishing back through the window either.
        let put = match tokio::time::timeout(WRITE_TIMEOUT, put).await {
            Ok(put) => put.map_err(|e| e.to_string()),
            Err(_) => Err(format!("no answer within {WRITE_TIMEOUT:?}")),
        };
        match put {
            Ok(()) => tracker.stored(published),
            Err(e) => {
                tracing::warn!(
                    run_id = %self.run_id,
                    "could not store the publish checkpoint: {e}; publishing goes on without it"
                );
                tracker.stored(u64::MAX);
            }
        }
        slot
    }

    /// How far past the stored checkpoint publishing may run: 2 % of the run, but never fewer
    /// than the publishes in flight plus two checkpoint steps, so that a store answering in
    /// time never holds publishing back. This bounds what a crash can leave to be published
    /// twice, even while the store is slow.
    pub fn window(&self, in_flight: usize) -> u64 {
        if self.unbounded {
            return u64::MAX;
        }
        let step = step(self.record.valid_jobs, in_flight);
        (self.record.valid_jobs / 50).max(in_flight as u64 + 2 * step)
    }
}

/// Jobs the confirmed prefix advances by before it is written: 1 % of the run or a quarter of
/// the publishes in flight, whichever is fewer.
fn step(valid_jobs: u64, in_flight: usize) -> u64 {
    (valid_jobs / 100).min(in_flight as u64 / 4).max(1)
}

/// The file of write slot `slot`: `_published.<slot>`.
fn slot_name(slot: usize) -> String {
    format!("{CHECKPOINT_FILE}.{slot}")
}

/// Every slot's record (or why it could not be read), by file name.
async fn read(
    sink: &dyn ResultSink,
    run_id: &str,
) -> Result<Vec<(String, Result<Record, String>)>, String> {
    let names = sink.list(run_id).await.map_err(|e| e.to_string())?;
    let prefix = format!("{CHECKPOINT_FILE}.");
    let mut out = Vec::new();
    for name in names.into_iter().filter(|n| n.starts_with(&prefix)) {
        let record = match sink.get(run_id, &name).await {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| format!("unreadable: {e}")),
            Err(e) => Err(e.to_string()),
        };
        out.push((name, record));
    }
    Ok(out)
}

#[derive(Debug, Clone, Copy, Default)]
struct State {
    prefix: u64,
    closed: bool,
}

/// The confirmed prefix of a run's valid jobs: [`Tracker::complete`] marks a job done (confirmed
/// by the broker, answered already, or before the checkpoint) in any order; the prefix is how
/// many jobs from the first are all done. Only the jobs done past the first gap are kept, which
/// the publisher's in-flight bound keeps few.
pub struct Tracker {
    done: Mutex<(u64, BTreeSet<u64>)>,
    state: watch::Sender<State>,
    /// The largest prefix stored so far (`u64::MAX` once a write failed: no more holding back).
    stored: watch::Sender<u64>,
}

impl Tracker {
    /// A prefix of `start` jobs already done.
    pub fn new(start: u64) -> Tracker {
        Tracker {
            done: Mutex::new((start, BTreeSet::new())),
            state: watch::Sender::new(State {
                prefix: start,
                closed: false,
            }),
            stored: watch::Sender::new(start),
        }
    }

    /// Marks job `seq` (its place among the valid jobs, from 0) done.
    pub fn complete(&self, seq: u64) {
        let Ok(mut done) = self.done.lock() else {
            return;
        };
        let (prefix, ahead) = &mut *done;
        if seq < *prefix {
            return;
        }
        if seq != *prefix {
            ahead.insert(seq);
            return;
        }
        *prefix += 1;
        while ahead.first() == Some(prefix) {
            ahead.pop_first();
            *prefix += 1;
        }
        let prefix = *prefix;
        self.state.send_modify(|s| s.prefix = prefix);
    }

    /// Waits until job `seq` is fewer than `window` jobs past the stored checkpoint
    /// ([`PublishCheckpoint::window`]); at once without a checkpoint (`window` = `u64::MAX`).
    pub async fn admit(&self, seq: u64, window: u64) {
        let admitted = |stored: &u64| seq < stored.saturating_add(window);
        if admitted(&self.stored.borrow()) {
            return;
        }
        // The sender lives as long as `self`: waiting cannot fail.
        let _ = self.stored.subscribe().wait_for(admitted).await;
    }

    fn stored(&self, published: u64) {
        self.stored.send_if_modified(|s| {
            let newer = published > *s;
            if newer {
                *s = published;
            }
            newer
        });
    }

    /// The confirmed prefix so far.
    pub fn prefix(&self) -> u64 {
        self.state.borrow().prefix
    }

    /// No more jobs will complete: [`PublishCheckpoint::keep_written`] writes the last value
    /// and returns.
    pub fn close(&self) {
        self.state.send_modify(|s| s.closed = true);
    }

    /// A guard that closes the tracker when dropped, so the writer ends even if publishing is
    /// cancelled half-way.
    pub fn closing(&self) -> impl Drop + '_ {
        struct Closing<'t>(&'t Tracker);
        impl Drop for Closing<'_> {
            fn drop(&mut self) {
                self.0.close();
            }
        }
        Closing(self)
    }
}
