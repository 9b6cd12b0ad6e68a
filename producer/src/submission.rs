//! The submission flow, once, for `offpeak run` (the in-process queue) and `offpeak submit` (a
//! broker): check the whole job file ([`check_file`]), then [`Submission::begin`] — store the
//! rejected lines, write the run's job list (`_jobs`, the ids its results are counted against)
//! and its manifest (or find the ones an earlier submission of the same file left), learn which
//! jobs already have results — then [`Submission::publish`] the rest and
//! [`Submission::finish`], which marks the manifest published so `status --wait` knows every job
//! has been enqueued. Printing is the caller's.

use crate::checkpoint::{PublishCheckpoint, Tracker};
use crate::input::{fetch_input, sha256_file, InputFile};
use crate::read::ReadOptions;
use crate::report::RejectedLine;
use crate::stream::ScanReport;
use crate::ProducerError;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use queue::Queue;
use schemas::{Catalog, Job, RunId, SigningKey};
use std::collections::HashSet;
use std::sync::Arc;
use store::{Manifest, ResultSink, StoreError, OFFPEAK_VERSION};

/// Name of the file the rejected lines of a run are stored as, beside its results.
pub const REJECTS_FILE: &str = "_rejects.jsonl";

/// Why a submission could not go on.
#[derive(Debug, thiserror::Error)]
pub enum SubmissionError {
    /// The run exists and was submitted from another file (its checksum differs).
    #[error(
        "run {run_id} was submitted from a different file ({input_file}); use another --run-id"
    )]
    DifferentFile { run_id: String, input_file: String },
    /// The job file could not be read.
    #[error(transparent)]
    Input(#[from] ProducerError),
    /// The results location failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The broker failed.
    #[error(transparent)]
    Queue(#[from] queue::QueueError),
}

impl From<store::SinkError> for SubmissionError {
    fn from(e: store::SinkError) -> Self {
        SubmissionError::Store(e.into())
    }
}

/// A job file validated as a whole (pass 1 of the streaming producer), with its checksum;
/// [`CheckedFile::jobs`] runs pass 2.
#[derive(Debug)]
pub struct CheckedFile {
    pub input: Arc<InputFile>,
    pub scan: ScanReport,
    /// The options pass 1 ran with (pass 2 uses the same).
    pub opts: ReadOptions,
    pub sha256: String,
}

/// Fetches the job file (`s3://` objects are downloaded first), validates every line in memory
/// that does not grow with the file, and computes its checksum at the same time.
pub async fn check_file(location: &str, opts: ReadOptions) -> Result<CheckedFile, ProducerError> {
    let input = Arc::new(fetch_input(location).await?);
    let scanning = {
        let (input, opts) = (input.clone(), opts.clone());
        tokio::task::spawn_blocking(move || input.scan(&opts))
    };
    let hashing = {
        let path = input.path().to_path_buf();
        tokio::task::spawn_blocking(move || sha256_file(&path))
    };
    let scan = scanning.await.map_err(|e| join_error(&input, e))??;
    let sha256 = hashing.await.map_err(|e| join_error(&input, e))??;
    Ok(CheckedFile {
        input,
        scan,
        opts,
        sha256,
    })
}

fn join_error(input: &InputFile, e: tokio::task::JoinError) -> ProducerError {
    ProducerError::io(input.path(), std::io::Error::other(e.to_string()))
}

impl CheckedFile {
    /// The valid jobs, read again from the file in order on a blocking thread, at most
    /// `buffer` of them read ahead; the handle returns how many were read (or why reading
    /// failed).
    pub fn jobs(
        &self,
        buffer: usize,
    ) -> (
        impl futures::Stream<Item = Job> + Send + 'static,
        tokio::task::JoinHandle<Result<usize, ProducerError>>,
    ) {
        crate::stream::spawn_job_reader(
            self.input.clone(),
            self.opts.clone(),
            self.scan.selection(),
            buffer,
        )
    }
}

/// A run being submitted: its manifest and the jobs that already have results.
#[derive(Debug)]
pub struct Submission {
    pub run_id: RunId,
    pub manifest: Manifest,
    /// Ids of the jobs with a stored result (from an earlier submission or run that stopped
    /// half-way): not enqueued again.
    pub answered: HashSet<String>,
    /// The fleet's signing key: every message is signed with it when set (see
    /// [`schemas::signing`]).
    pub signing_key: Option<SigningKey>,
}

impl Submission {
    /// Starts (or resumes) submitting `checked` as run `run_id`: stores its rejected lines as
    /// [`REJECTS_FILE`], refuses a run id submitted from another file, writes the job list
    /// ([`store::JOBS_FILE`]: the file is read once more for its ids) and then the manifest
    /// before anything is published (a worker may store results before the last publish
    /// returns), and reads which jobs already have results. A resumed run keeps its job list;
    /// one begun by an older offpeak gets one.
    pub async fn begin(
        sink: &dyn ResultSink,
        run_id: &RunId,
        checked: &CheckedFile,
        catalog: &Catalog,
        now: DateTime<Utc>,
    ) -> Result<Submission, SubmissionError> {
        if !checked.scan.is_clean() {
            let bytes = rejects_jsonl(&checked.scan.errors);
            sink.put(run_id.as_str(), REJECTS_FILE, bytes).await?;
        }
        let existing = store::read_manifest(sink, run_id.as_str()).await?;
        if let Some(m) = existing
            .as_ref()
            .filter(|m| m.input_sha256 != checked.sha256)
        {
            return Err(SubmissionError::DifferentFile {
                run_id: run_id.to_string(),
                input_file: m.input_file.clone(),
            });
        }
        let listed = sink.list(run_id.as_str()).await?;
        if existing.is_none() || !listed.iter().any(|n| n == store::JOBS_FILE) {
            let ids = job_list(checked).await?;
            store::write_job_ids(sink, run_id.as_str(), ids).await?;
        }
        let manifest = match existing {
            Some(m) => m,
            None => {
                let m = Manifest {
                    run_id: run_id.to_string(),
                    job_count: checked.scan.valid as u64,
                    input_file: checked.input.name().to_string(),
                    input_sha256: checked.sha256.clone(),
                    submitted_at: now,
                    catalog: serde_json::to_value(catalog).unwrap_or_default(),
                    offpeak_version: OFFPEAK_VERSION.to_string(),
                    published_at: None,
                };
                store::write_manifest(sink, &m).await?;
                m
            }
        };
        let answered = store::dedup(store::read_run(sink, run_id.as_str()).await?)
            .into_iter()
            .map(|r| r.job_id)
            .collect();
        Ok(Submission {
            run_id: run_id.clone(),
            manifest,
            answered,
            signing_key: None,
        })
    }

    /// Whether every job of the run was enqueued already (the manifest says so).
    pub fn already_published(&self) -> bool {
        self.manifest.published_at.is_some()
    }

    /// Jobs still to enqueue: the valid ones without a stored result.
    pub fn to_publish(&self, checked: &CheckedFile) -> usize {
        checked.scan.valid.saturating_sub(self.answered.len())
    }

    /// Publishes every valid job without a result, `in_flight` publishes awaiting the broker's
    /// confirmation at once; the file is read again as fast as the broker confirms, never all
    /// at once. Returns how many were published.
    ///
    /// With a `checkpoint` (a queue that outlives this process), the jobs an earlier submission
    /// got confirmed are skipped too, and the confirmed prefix is recorded as publishing goes
    /// (see [`crate::checkpoint`]). Without one (the in-process queue of `offpeak run`, which
    /// dies with the process) every job without a result is published.
    pub async fn publish(
        &self,
        queue: &dyn Queue,
        checked: &CheckedFile,
        catalog: &Catalog,
        in_flight: usize,
        checkpoint: Option<&PublishCheckpoint>,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<u64, SubmissionError> {
        let (jobs, reader) = checked.jobs(in_flight.max(1) * 2);
        let skip = checkpoint.map_or(0, PublishCheckpoint::already_enqueued);
        let window = checkpoint.map_or(u64::MAX, |c| c.window(in_flight));
        let tracker = Arc::new(Tracker::new(skip));
        // The checkpoint is written by a task of its own: a store round trip never waits for
        // the publishing loop, nor the other way round.
        let recording = checkpoint.map(|c| {
            let (c, t) = (c.clone(), tracker.clone());
            tokio::spawn(async move { c.keep_written(&t, in_flight).await })
        });
        let published = {
            let _closing = tracker.closing();
            let (answered, tracker) = (&self.answered, &*tracker);
            let todo = jobs
                .zip(futures::stream::iter(0u64..))
                .filter_map(|(job, seq)| {
                    let send = seq >= skip && !answered.contains(&job.id.0);
                    if !send {
                        // Answered, or enqueued by the earlier submission: part of the prefix.
                        tracker.complete(seq);
                    }
                    futures::future::ready(send.then_some((seq, job)))
                })
                // Publishing runs at most a window ahead of the stored checkpoint.
                .then(|(seq, job)| async move {
                    tracker.admit(seq, window).await;
                    (seq, job)
                });
            crate::publish::publish_numbered(
                queue,
                &self.run_id,
                todo,
                self.manifest.submitted_at,
                catalog,
                in_flight,
                self.signing_key.as_ref(),
                &|seq, n| {
                    tracker.complete(seq);
                    progress(n)
                },
            )
            .await
        };
        if let Some(recording) = recording {
            // The last value is stored before the manifest is marked published (or the error
            // is reported); a panicked writer only loses the checkpoint.
            let _ = recording.await;
        }
        // A failed publish drops the channel, which stops the reader; a failed read ends the
        // stream early, which the publish count would hide: the reader's error comes first.
        reader.await.map_err(|e| join_error(&checked.input, e))??;
        Ok(published?)
    }

    /// Marks the run published in its manifest: every job is on the queue (or answered), so a
    /// run whose results are all stored is finished.
    pub async fn finish(&mut self, sink: &dyn ResultSink) -> Result<(), SubmissionError> {
        self.manifest.published_at = Some(Utc::now());
        store::write_manifest(sink, &self.manifest).await?;
        Ok(())
    }
}

/// The valid jobs' ids as [`store::JOBS_FILE`] holds them, read from the file again (pass 2;
/// pass 1 keeps only hashes of the ids).
async fn job_list(checked: &CheckedFile) -> Result<Vec<u8>, SubmissionError> {
    let (jobs, reader) = checked.jobs(1024);
    let mut ids = Vec::with_capacity(checked.scan.valid * 16);
    let mut jobs = std::pin::pin!(jobs);
    while let Some(job) = jobs.next().await {
        ids.extend(store::jobs::encode_job_ids([job.id.0.as_str()]));
    }
    reader.await.map_err(|e| join_error(&checked.input, e))??;
    Ok(ids)
}

/// The rejected lines as the JSONL stored in [`REJECTS_FILE`]: one object per line with its
/// `line`, `field`, `reason` and the `raw` text.
pub fn rejects_jsonl(errors: &[RejectedLine]) -> Vec<u8> {
    let mut out = Vec::new();
    for r in errors {
        let obj = serde_json::json!({
            "line": r.error.line,
            "field": r.error.field,
            "reason": r.error.reason,
            "raw": r.raw,
        });
        out.extend_from_slice(obj.to_string().as_bytes());
        out.push(b'\n');
    }
    out
}
