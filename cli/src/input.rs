//! What `offpeak run` and `offpeak submit` share: the job-file arguments, reading the catalog,
//! and validating the whole file before anything is enqueued (DESIGN §2).

use crate::{invalid, Failure};
use anyhow::{anyhow, Context};
use chrono::{DateTime, Utc};
use producer::{CheckedFile, ProducerError, ReadOptions};
use schemas::{Catalog, JobDefaults};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The job file and how to read it.
#[derive(Debug, clap::Args)]
pub struct JobArgs {
    /// Job file: JSONL (offpeak's format or OpenAI Batch) or Parquet; a local path or
    /// `s3://bucket/key`.
    pub jobs: String,
    /// Provider catalog (TOML): providers, models, prices, limits.
    #[arg(long, env = "OFFPEAK_CATALOG")]
    pub catalog: PathBuf,
    /// Deadline for jobs that set none, e.g. `6h`, `30m`.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "24h")]
    pub deadline: Duration,
    /// Validate only: report errors and exit without enqueueing anything.
    #[arg(long)]
    pub dry_run: bool,
    /// Enqueue the valid jobs and store invalid lines as `run=<id>/_rejects.jsonl` beside the
    /// results, instead of refusing the whole file.
    #[arg(long)]
    pub skip_invalid: bool,
    /// Refuse job files with more jobs than this (also `OFFPEAK_MAX_JOBS`).
    #[arg(long, env = "OFFPEAK_MAX_JOBS")]
    pub max_jobs: Option<usize>,
}

/// Reads and checks a catalog file.
pub fn load_catalog(path: &Path) -> Result<Catalog, Failure> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading catalog {}", path.display()))
        .map_err(invalid)?;
    Catalog::from_toml(&path.display().to_string(), &text).map_err(invalid)
}

/// What validation decided.
#[derive(Debug)]
// One value per command: the size of the variants does not matter.
#[allow(clippy::large_enum_variant)]
pub enum Validation {
    /// Go on with these jobs (invalid lines, if any, are in `scan.errors`: `--skip-invalid`).
    Proceed(CheckedFile),
    /// `--dry-run`: the report is printed; exit with this code.
    Stop(u8),
}

/// Validates the whole job file (in memory that does not grow with it), prints its errors, and
/// refuses it (exit code 2) when any line is invalid and `--skip-invalid` was not given. The
/// file's checksum is computed at the same time.
pub async fn validate(
    args: &JobArgs,
    catalog: &Catalog,
    now: DateTime<Utc>,
    max_prompt_bytes: usize,
) -> Result<Validation, Failure> {
    let deadline_in = chrono::Duration::from_std(args.deadline)
        .map_err(|_| invalid(anyhow!("--deadline is too long")))?;
    let opts = ReadOptions {
        defaults: JobDefaults {
            deadline_in,
            ..JobDefaults::new(now)
        },
        known_models: Some(catalog.model_names()),
        max_jobs: args.max_jobs,
        max_prompt_bytes: Some(max_prompt_bytes),
    };
    let checked = producer::check_file(&args.jobs, opts).await.map_err(|e| {
        // A missing object or an unreadable file is the user's input being wrong; a store
        // that is down is not.
        match e {
            ProducerError::S3 { .. } => Failure {
                code: 1,
                error: e.into(),
            },
            e => invalid(e),
        }
    })?;
    let scan = &checked.scan;
    if scan.lines == 0 {
        return Err(invalid(anyhow!(
            "{}: no jobs (the file is empty or holds only blank lines); nothing was enqueued",
            scan.file
        )));
    }
    if !scan.is_clean() {
        eprintln!("{}", scan.render_errors(20));
        eprintln!(
            "{}: {} of {} lines invalid",
            scan.file,
            scan.errors.len(),
            scan.lines
        );
        if !args.skip_invalid && !args.dry_run {
            return Err(invalid(anyhow!(
                "nothing was enqueued; fix the file or pass --skip-invalid"
            )));
        }
    }
    if args.dry_run {
        println!(
            "{}: {} valid jobs, {} invalid",
            scan.file,
            scan.valid,
            scan.errors.len()
        );
        return Ok(Validation::Stop(if scan.is_clean() { 0 } else { 2 }));
    }
    Ok(Validation::Proceed(checked))
}

/// A submission's failure as an exit code: a run id taken by another file is the user's input
/// (2); a store or broker failing is not (1).
pub fn submission_failure(e: producer::SubmissionError) -> Failure {
    match e {
        producer::SubmissionError::DifferentFile { .. } => invalid(e),
        e => e.into(),
    }
}
