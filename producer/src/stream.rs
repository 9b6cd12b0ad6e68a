//! Job files of any size in flat memory: two passes instead of one list of every job.
//!
//! **Pass 1, [`scan`]**, reads the whole file and validates every line or row, keeping only the
//! rejected lines and the 64-bit hashes of the ids seen: 512 KiB of them in memory, the rest in
//! sorted runs in temporary files, merged in order at the end (`spill`), so memory does not
//! grow with the file. Two ids with the same hash are either a real duplicate or a hash
//! collision; when any turn up, one more pass over the file compares those
//! ids exactly, so a collision never rejects a valid job and every duplicate names the line of
//! the first use, as the in-memory reader does. The contract of DESIGN §2 holds: the whole file
//! is checked before anything is published.
//!
//! **Pass 2, [`for_each_job`]**, reads the file again and hands over the valid jobs one at a
//! time, leaving out exactly the lines pass 1 rejected; [`spawn_job_reader`] runs it on a
//! blocking thread behind a bounded channel of chunks of jobs, so a slow broker slows the
//! reading instead of filling memory. A file that no longer reads as it did in pass 1 stops pass 2 with
//! [`ProducerError::Changed`].

use crate::read::{detect_format, visit_rows, InputFormat, ReadOptions};
use crate::report::{render_errors, RejectedLine};
use crate::spill::{SortedSpill, IN_MEMORY};
use crate::{InputFile, ProducerError};
use futures::{Stream, StreamExt};
use schemas::{Job, JobError, JobParser};
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::ops::ControlFlow;
use std::path::Path;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// What pass 1 learnt about a job file: how many jobs are valid and every rejected line.
#[derive(Debug, Clone)]
pub struct ScanReport {
    /// The file as the user named it, used to prefix error messages.
    pub file: String,
    /// Whether locations are lines (JSONL) or rows (Parquet).
    pub format: InputFormat,
    /// Valid jobs (duplicates excluded).
    pub valid: usize,
    /// The rejected lines or rows, in file order.
    pub errors: Vec<RejectedLine>,
    /// Lines or rows examined (valid plus rejected; blank JSONL lines are not counted).
    pub lines: usize,
}

impl ScanReport {
    /// True when no line or row was rejected.
    pub fn is_clean(&self) -> bool {
        self.errors.is_empty()
    }

    /// The errors rendered like [`crate::ValidationReport::render_errors`].
    pub fn render_errors(&self, max: usize) -> String {
        render_errors(&self.file, self.format, &self.errors, max)
    }

    /// What pass 2 needs: the lines to leave out and the number of jobs to expect.
    pub fn selection(&self) -> Selection {
        Selection {
            rejected: self.errors.iter().map(|r| r.error.line).collect(),
            expected: self.valid,
        }
    }
}

/// The valid part of a scanned file: every line but the rejected ones.
#[derive(Debug, Clone)]
pub struct Selection {
    /// Rejected line or row numbers, ascending.
    rejected: Vec<usize>,
    expected: usize,
}

impl Selection {
    /// Jobs pass 2 will hand over.
    pub fn expected(&self) -> usize {
        self.expected
    }
}

/// Passes a 64-bit hash through as its own hash (the set's keys are hashes already).
#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type HashSet64 = HashSet<u64, BuildHasherDefault<PassThrough>>;

/// A 64-bit hash of a job id (`DefaultHasher::new()` has fixed keys: the same id gives the same
/// hash in every pass of this process).
fn id_hash(id: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    id.hash(&mut h);
    h.finish()
}

fn parser(opts: &ReadOptions) -> JobParser {
    JobParser::new(opts.defaults.clone(), opts.known_models.clone()).without_duplicate_check()
}

/// Pass 1: validates the whole file at `path` (named `name` in errors) in flat memory.
///
/// The file's format is detected as in [`crate::read_job_file`], and errors are the same: each
/// invalid line or row, each duplicate id naming the first line that used it, and
/// [`ProducerError::TooManyJobs`] once more than [`ReadOptions::max_jobs`] jobs are valid. This
/// is blocking I/O.
pub fn scan(path: &Path, name: &str, opts: &ReadOptions) -> Result<ScanReport, ProducerError> {
    scan_with(path, name, opts, IN_MEMORY)
}

/// [`scan`], keeping at most `in_memory` id hashes in memory.
fn scan_with(
    path: &Path,
    name: &str,
    opts: &ReadOptions,
    in_memory: usize,
) -> Result<ScanReport, ProducerError> {
    let name_path = Path::new(name);
    let format = detect_format(path, name_path)?;
    let too_many = |limit| ProducerError::TooManyJobs {
        file: name_path.to_path_buf(),
        limit,
    };
    let mut report = ScanReport {
        file: name.to_string(),
        format,
        valid: 0,
        errors: Vec::new(),
        lines: 0,
    };
    let mut parser = parser(opts);
    // Every valid job's id hash (counted distinct now and then when `max_jobs` is set, so a file
    // far over it stops early).
    let mut ids = SortedSpill::new(in_memory);
    let spill_error = |source| ProducerError::Io {
        file: std::env::temp_dir(),
        source,
    };
    let mut next_check = opts.max_jobs.map_or(usize::MAX, |l| l.saturating_add(1));
    visit_rows(path, name_path, format, &mut |line, mut raw| {
        report.lines += 1;
        match raw.parse(&mut parser, line, opts.max_prompt_bytes) {
            Ok(job) => {
                ids.push(id_hash(&job.id.0)).map_err(spill_error)?;
                if ids.len() >= next_check {
                    if let Some(limit) = opts.max_jobs {
                        // Duplicates do not count: check the distinct hashes (never more than
                        // the distinct ids), and look again only once enough new ones came.
                        let distinct = ids.distinct().map_err(spill_error)?;
                        if distinct > limit {
                            return Err(too_many(limit));
                        }
                        // Not before the count grew by half: sorting stays O(n log n) overall
                        // however many duplicates there are (the final count is exact).
                        next_check = (ids.len() + (limit + 1 - distinct)).max(ids.len() * 3 / 2);
                    }
                }
            }
            Err(error) => report.errors.push(RejectedLine {
                error,
                raw: raw.text.into_owned(),
            }),
        }
        Ok(ControlFlow::Continue(()))
    })?;
    // Hashes met more than once: a duplicate id or (rarely) two ids with the same hash.
    let mut suspects = HashSet64::default();
    let mut last = None;
    ids.for_each_sorted(|h| {
        if last == Some(h) {
            suspects.insert(h);
        }
        last = Some(h);
    })
    .map_err(spill_error)?;
    report.valid = ids.len();
    drop(ids);
    if !suspects.is_empty() {
        let duplicates = exact_duplicates(path, name_path, format, opts, &suspects)?;
        report.valid -= duplicates.len();
        report.errors.extend(duplicates);
        report.errors.sort_by_key(|r| r.error.line);
    }
    if let Some(limit) = opts.max_jobs.filter(|l| report.valid > *l) {
        return Err(too_many(limit));
    }
    Ok(report)
}

/// The resolving pass: among the valid jobs whose id hash is in `suspects`, the ones whose id
/// was used on an earlier line, as rejected lines naming that line.
fn exact_duplicates(
    path: &Path,
    name: &Path,
    format: InputFormat,
    opts: &ReadOptions,
    suspects: &HashSet64,
) -> Result<Vec<RejectedLine>, ProducerError> {
    let mut parser = parser(opts);
    let mut first: HashMap<String, usize> = HashMap::new();
    let mut duplicates = Vec::new();
    visit_rows(path, name, format, &mut |line, mut raw| {
        let Ok(job) = raw.parse(&mut parser, line, opts.max_prompt_bytes) else {
            return Ok(ControlFlow::Continue(()));
        };
        if !suspects.contains(&id_hash(&job.id.0)) {
            return Ok(ControlFlow::Continue(()));
        }
        match first.get(&job.id.0) {
            Some(&at) => duplicates.push(RejectedLine {
                error: JobError {
                    line,
                    field: "id".into(),
                    reason: format!("duplicate id {:?} (first used on line {at})", job.id.0),
                },
                raw: raw.text.into_owned(),
            }),
            None => {
                first.insert(job.id.0, line);
            }
        }
        Ok(ControlFlow::Continue(()))
    })?;
    Ok(duplicates)
}

/// Pass 2: reads the file again and calls `f` with each valid job in file order, skipping the
/// lines of `selection` rejected in pass 1, until `f` says `Break`. `opts` must be the options
/// of pass 1 (the same defaults give the same deadlines). Returns the jobs handed over.
///
/// Errors: the file cannot be read, or it changed since pass 1 (a line valid then is invalid
/// now, or the count differs): [`ProducerError::Changed`].
pub fn for_each_job(
    path: &Path,
    name: &str,
    opts: &ReadOptions,
    selection: &Selection,
    mut f: impl FnMut(Job) -> ControlFlow<()>,
) -> Result<usize, ProducerError> {
    let name_path = Path::new(name);
    let format = detect_format(path, name_path)?;
    let changed = |reason: String| ProducerError::Changed {
        file: name_path.to_path_buf(),
        reason,
    };
    let mut parser = parser(opts);
    let mut rejected = selection.rejected.iter().copied().peekable();
    let mut handed = 0usize;
    let mut stopped = false;
    visit_rows(path, name_path, format, &mut |line, mut raw| {
        while rejected.next_if(|r| *r < line).is_some() {}
        if rejected.next_if_eq(&line).is_some() {
            return Ok(ControlFlow::Continue(()));
        }
        let job = raw
            .parse(&mut parser, line, opts.max_prompt_bytes)
            .map_err(|e| changed(format!("line {line} was valid and is not now: {e}")))?;
        handed += 1;
        if handed > selection.expected {
            return Err(changed(format!(
                "it holds more than the {} valid jobs counted before",
                selection.expected
            )));
        }
        let flow = f(job);
        stopped = flow.is_break();
        Ok(flow)
    })?;
    if !stopped && handed != selection.expected {
        return Err(changed(format!(
            "{handed} valid jobs read instead of the {} counted before",
            selection.expected
        )));
    }
    Ok(handed)
}

/// Jobs handed from the reading thread to the publisher in chunks of this many: one wake-up of
/// either side per chunk instead of per job (a thread wake-up costs about what parsing a small
/// job does).
const CHUNK: usize = 64;

/// Runs [`for_each_job`] over `input` on a blocking thread; the stream yields the jobs in file
/// order, at most about `capacity` of them read ahead. Dropping the stream stops the reading.
/// The handle returns the jobs read.
pub fn spawn_job_reader(
    input: Arc<InputFile>,
    opts: ReadOptions,
    selection: Selection,
    capacity: usize,
) -> (
    impl Stream<Item = Job> + Send + 'static,
    JoinHandle<Result<usize, ProducerError>>,
) {
    let chunk = capacity.clamp(1, CHUNK);
    let (tx, rx) = mpsc::channel::<Vec<Job>>((capacity / chunk).max(1));
    let task = tokio::task::spawn_blocking(move || {
        let mut batch = Vec::with_capacity(chunk);
        let read = for_each_job(input.path(), input.name(), &opts, &selection, |job| {
            batch.push(job);
            if batch.len() < chunk {
                return ControlFlow::Continue(());
            }
            let full = std::mem::replace(&mut batch, Vec::with_capacity(chunk));
            match tx.blocking_send(full) {
                Ok(()) => ControlFlow::Continue(()),
                Err(_) => ControlFlow::Break(()),
            }
        })?;
        // The partial last chunk (empty when the stream was dropped: a failed send emptied it).
        if !batch.is_empty() {
            let _ = tx.blocking_send(batch);
        }
        Ok(read)
    });
    let jobs = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|batch| (batch, rx))
    })
    .flat_map(futures::stream::iter);
    (jobs, task)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};
    use schemas::JobDefaults;
    use std::fmt::Write;

    /// Pass 1 with 100 id hashes in memory (5,000 jobs: 50 runs on disk, merged) finds every
    /// duplicate, naming its first line, as the in-memory reader does; `max_jobs` counts the
    /// distinct ids across the runs.
    #[test]
    fn duplicates_spread_over_spilled_runs_are_all_found() {
        let dir = tempfile::tempdir().unwrap();
        let mut text = String::new();
        for i in 0..5_000 {
            // Every 7th job from the 700th on (line i + 1) repeats the id of line i - 649.
            let id = if i >= 700 && i % 7 == 0 { i - 650 } else { i };
            writeln!(text, r#"{{"id":"j{id}","model":"m","prompt":"p{i}"}}"#).unwrap();
        }
        let path = dir.path().join("jobs.jsonl");
        std::fs::write(&path, &text).unwrap();
        let name = path.display().to_string();
        let mut opts = ReadOptions::new(JobDefaults::new(
            Utc.with_ymd_and_hms(2026, 11, 25, 0, 0, 0).unwrap(),
        ));
        let memory = crate::read_job_file(&path, opts.clone()).unwrap();
        let spilled = scan_with(&path, &name, &opts, 100).unwrap();
        let duplicates = (700..5_000).filter(|i| i % 7 == 0).count();
        assert_eq!(spilled.errors.len(), duplicates);
        assert_eq!(spilled.errors, memory.errors);
        assert_eq!(spilled.valid, 5_000 - duplicates);
        assert!(spilled.errors[0]
            .error
            .reason
            .contains("first used on line 51"));
        opts.max_jobs = Some(5_000 - duplicates);
        assert!(scan_with(&path, &name, &opts, 100).is_ok());
        opts.max_jobs = Some(5_000 - duplicates - 1);
        assert!(matches!(
            scan_with(&path, &name, &opts, 100),
            Err(ProducerError::TooManyJobs { .. })
        ));
    }

    /// The reader hands over every valid job in file order across chunk boundaries (ten full
    /// chunks and a partial one, with a rejected line in the first), and stops reading when the
    /// stream is dropped: with a one-chunk channel it reads at most three chunks (taken, queued,
    /// being filled) before a send fails.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_reader_hands_over_every_job_in_order_in_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let mut text = String::new();
        let jobs = 10 * CHUNK + 5;
        for i in 0..=jobs {
            if i == 10 {
                text.push_str("{\"id\":\"bad\"}\n");
            } else {
                writeln!(text, r#"{{"id":"j{i}","model":"m","prompt":"p{i}"}}"#).unwrap();
            }
        }
        let path = dir.path().join("jobs.jsonl");
        std::fs::write(&path, &text).unwrap();
        let opts = ReadOptions::new(JobDefaults::new(
            Utc.with_ymd_and_hms(2026, 11, 25, 0, 0, 0).unwrap(),
        ));
        let input = Arc::new(InputFile::local(&path));
        let selection = input.scan(&opts).unwrap().selection();
        assert_eq!(selection.expected(), jobs);

        let (stream, reader) =
            spawn_job_reader(input.clone(), opts.clone(), selection.clone(), 512);
        let ids: Vec<String> = stream.map(|j| j.id.0).collect().await;
        let want: Vec<String> = (0..=jobs)
            .filter(|i| *i != 10)
            .map(|i| format!("j{i}"))
            .collect();
        assert_eq!(ids, want);
        assert_eq!(reader.await.unwrap().unwrap(), jobs);

        // Taking one job and dropping the stream stops the reader within three chunks.
        let (stream, reader) = spawn_job_reader(input, opts, selection, CHUNK);
        let first: Vec<Job> = stream.take(1).collect().await;
        assert_eq!(first[0].id.0, "j0");
        let read = reader.await.unwrap().unwrap();
        assert!(
            read <= 3 * CHUNK,
            "read {read} of {jobs} after the stream was dropped"
        );
    }
}
