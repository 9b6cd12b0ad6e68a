//! What `offpeak run` and `offpeak submit` share: the job-file arguments, reading the catalog,
//! and validating the whole file before anything is enqueued (DESIGN §2).

use crate::{invalid, Failure};
use anyhow::{anyhow, Context};
use chrono::{DateTime, Utc};
use producer::{InputFile, ReadOptions, ValidationReport};
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
    /// Refuse job files with more jobs than this.
    #[arg(long)]
    pub max_jobs: Option<usize>,
}

/// Reads and checks a catalog file.
pub fn load_catalog(path: &Path) -> Result<Catalog, Failure> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading catalog {}", path.display()))
        .map_err(invalid)?;
    Catalog::from_toml(&path.display().to_string(), &text).map_err(invalid)
}

/// A validated job file.
#[derive(Debug)]
pub struct Checked {
    pub input: InputFile,
    pub report: ValidationReport,
    pub sha256: String,
}

/// What validation decided.
#[derive(Debug)]
pub enum Validation {
    /// Go on with these jobs (invalid lines, if any, are in `report.errors`: `--skip-invalid`).
    Proceed(Checked),
    /// `--dry-run`: the report is printed; exit with this code.
    Stop(u8),
}

/// Reads the whole job file, prints its errors, and refuses it (exit code 2) when any line is
/// invalid and `--skip-invalid` was not given.
pub async fn validate(
    args: &JobArgs,
    catalog: &Catalog,
    now: DateTime<Utc>,
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
    };
    let input = producer::fetch_input(&args.jobs).await.map_err(|e| {
        // A missing object is the user's input being wrong; a store that is down is not.
        Failure {
            code: 1,
            error: e.into(),
        }
    })?;
    let (input, report) = tokio::task::spawn_blocking(move || {
        let r = input.read(opts);
        (input, r)
    })
    .await?;
    let report = report.map_err(invalid)?;
    if !report.is_clean() {
        eprintln!("{}", report.render_errors(20));
        eprintln!(
            "{}: {} of {} lines invalid",
            report.file,
            report.errors.len(),
            report.lines
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
            report.file,
            report.jobs.len(),
            report.errors.len()
        );
        return Ok(Validation::Stop(if report.is_clean() { 0 } else { 2 }));
    }
    let path = input.path().to_path_buf();
    let sha256 = tokio::task::spawn_blocking(move || producer::sha256_file(&path)).await??;
    Ok(Validation::Proceed(Checked {
        input,
        report,
        sha256,
    }))
}

/// The rejected lines as the JSONL stored in `_rejects.jsonl`.
pub fn rejects_jsonl(report: &ValidationReport) -> Result<Vec<u8>, Failure> {
    let tmp = tempfile::NamedTempFile::new()?;
    producer::write_rejects(tmp.path(), report)?;
    Ok(std::fs::read(tmp.path())?)
}
