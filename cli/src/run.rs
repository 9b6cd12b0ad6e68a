//! `offpeak run`: local mode. Validates the whole job file, enqueues the jobs on the in-process
//! queue, runs N workers against real (or simulated) providers, writes Parquet results under
//! `<out>/run=<run_id>/`, and prints a summary computed from the files it wrote.

use crate::config::Config;
use crate::input::{load_catalog, submission_failure, validate, JobArgs, Validation};
use crate::{invalid, Failure};
use anyhow::{anyhow, Context};
use chrono::Utc;
use indicatif::{ProgressBar, ProgressStyle};
use producer::{Submission, REJECTS_FILE};
use queue::{MemoryQueue, Queue};
use report::Summary;
use schemas::{Catalog, RunId};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use store::{LocalDirSink, ResultSink};
use tokio_util::sync::CancellationToken;
use worker::lifecycle::{self, Signal};
use worker::Worker;

/// Arguments of `offpeak run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub input: JobArgs,
    /// Output directory; results go to `<out>/run=<run_id>/part-*.parquet`.
    #[arg(long, default_value = "out")]
    pub out: PathBuf,
    /// Serve every provider from the built-in simulator instead of the real APIs (no keys, no cost).
    #[arg(long)]
    pub simulate: bool,
    /// With --simulate: a scenario file (latencies, errors, rate limits, outages) instead of the
    /// catalog-derived default.
    #[arg(long, requires = "simulate")]
    pub scenario: Option<PathBuf>,
    /// Workers in this process: each with its own breakers and capacity plan, sharing every
    /// provider's limits as a fleet does (docs/routing.md, "The fleet's share").
    #[arg(long, default_value_t = 1)]
    pub workers: usize,
    /// Jobs in flight per worker (overrides the config's worker.concurrency).
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Run id: 1-128 ASCII letters, digits, `-` or `_`; generated when absent. Re-running with
    /// the same id skips jobs that already have results (resume).
    #[arg(long)]
    pub run_id: Option<RunId>,
    /// Also write the summary as JSON to this file.
    #[arg(long)]
    pub summary_json: Option<PathBuf>,
    /// No progress bar (it is also hidden when stderr is not a terminal).
    #[arg(long)]
    pub quiet: bool,
}

/// Reads and checks a simulator scenario file.
pub fn load_scenario(path: &Path) -> Result<sim::Scenario, Failure> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading scenario {}", path.display()))
        .map_err(invalid)?;
    sim::Scenario::from_toml(&path.display().to_string(), &text).map_err(invalid)
}

pub async fn run(args: RunArgs, mut cfg: Config) -> Result<u8, Failure> {
    lifecycle::raise_fd_limit();
    if let Some(c) = args.concurrency {
        cfg.worker.concurrency = c;
    }
    cfg.validate().map_err(invalid)?;
    let mut catalog = load_catalog(&args.input.catalog)?;
    let now = Utc::now();
    let run_id = args.run_id.clone().unwrap_or_else(|| RunId::generate(now));
    let checked = match validate(&args.input, &catalog, now, cfg.worker.max_prompt_bytes).await? {
        Validation::Proceed(c) => c,
        Validation::Stop(code) => return Ok(code),
    };
    let sink = Arc::new(LocalDirSink::new(&args.out));
    let mut submission = Submission::begin(&*sink, &run_id, &checked, &catalog, now)
        .await
        .map_err(submission_failure)?;
    if !checked.scan.is_clean() {
        let rejects = args.out.join(format!("run={run_id}/{REJECTS_FILE}"));
        eprintln!("invalid lines written to {}", rejects.display());
    }
    // Resume: jobs that already have a result in this run are not enqueued again.
    if !submission.answered.is_empty() {
        eprintln!(
            "resuming run {run_id}: {} jobs already have results, {} to go",
            submission.answered.len(),
            submission.to_publish(&checked)
        );
    }
    if args.simulate {
        // The simulator's batches take seconds, not hours: gather and poll at that pace.
        let b = &mut cfg.worker.batch;
        b.max_age_s = b.max_age_s.min(1.0);
        b.poll_s = b.poll_s.min(1.0);
    }
    let sim = if args.simulate {
        let scenario = match &args.scenario {
            Some(p) => load_scenario(p)?,
            None => sim::Scenario::from_catalog(&catalog),
        };
        let handle = sim::start(scenario, "127.0.0.1:0".parse()?).await?;
        catalog = sim::rewrite_catalog(&catalog, &handle);
        Some(handle)
    } else {
        None
    };
    let catalog = Arc::new(catalog);
    let queue = MemoryQueue::new();
    // No publish checkpoint: this queue dies with the process, so a resumed run must publish
    // again every job without a result.
    let total = submission
        .publish(&queue, &checked, &catalog, 256, None, &|_| {})
        .await
        .map_err(submission_failure)?;
    submission
        .finish(&*sink)
        .await
        .map_err(submission_failure)?;

    let shutdown = CancellationToken::new();
    let mut workers = Vec::new();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..args.workers.max(1) {
        let providers = build_providers(&catalog, &cfg)?;
        let w = Arc::new(Worker::new(
            format!("local{i}-{}", std::process::id()),
            catalog.clone(),
            providers,
            cfg.worker.clone(),
        ));
        let consumer = queue.consume(w.consume_options()).await?;
        workers.push(w.clone());
        let sink: Arc<dyn ResultSink> = sink.clone();
        let requeue: Arc<dyn queue::Queue> = Arc::new(queue.clone());
        tasks.spawn(w.run_with_queue(consumer, sink, shutdown.clone(), Some(requeue)));
    }

    let bar = progress_bar(total, args.quiet);
    let signal = tokio::select! {
        _ = queue.drained() => None,
        _ = tick(&bar, &workers) => None,
        s = lifecycle::shutdown_signal() => Some(s),
        _ = store_refused(&workers) => None,
    };
    if signal.is_some() {
        eprintln!("interrupted: finishing jobs in flight and storing their results; re-run with --run-id {run_id} to resume");
        shutdown.cancel();
    }
    queue.close();
    while tasks.join_next().await.is_some() {}
    bar.finish_and_clear();
    if let Some(h) = sim {
        h.shutdown().await;
    }

    if let Some(why) = workers.iter().find_map(|w| w.store_fault.get()) {
        return Err(anyhow::anyhow!(
            "the results location {} refuses writes; stopped (re-run with --run-id {run_id} to resume once it works): {why}",
            sink.location()
        )
        .into());
    }
    let (rows, foreign) = store::read_own_rows(&*sink, run_id.as_str()).await?;
    let job_count = submission.manifest.job_count;
    let mut summary = Summary::from_rows(&run_id, &rows, job_count, &sink.location());
    summary.foreign_rows = foreign;
    print!("{}", summary.render());
    if let Some(p) = &args.summary_json {
        std::fs::write(p, serde_json::to_vec_pretty(&summary)?)
            .with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(match signal {
        Some(Signal::Interrupt) => 130,
        Some(Signal::Terminate) => 143,
        None if summary.failed > 0 => 3,
        None => 0,
    })
}

/// Resolves once a worker's store refused a write for good (the workers then stop pulling).
async fn store_refused(workers: &[Arc<Worker>]) {
    while workers.iter().all(|w| w.store_fault.get().is_none()) {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// One client per catalog provider, sharing one HTTP client sized for the worker's concurrency.
pub fn build_providers(
    catalog: &Catalog,
    cfg: &Config,
) -> Result<HashMap<String, Arc<dyn worker::provider::Provider>>, Failure> {
    let http = worker::provider::http_client(cfg.worker.concurrency)
        .map_err(|e| Failure::from(anyhow!("HTTP client: {e}")))?;
    worker::provider::build_all(catalog, &http, cfg.worker.client_options())
        .map_err(|e| invalid(anyhow!(e)))
}

pub fn progress_bar(total: u64, quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} jobs  {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

/// Updates the bar forever (the caller races it against completion).
async fn tick(bar: &ProgressBar, workers: &[Arc<Worker>]) {
    loop {
        let (mut done, mut failed, mut deferrals, mut cost) = (0, 0, 0, 0);
        for w in workers {
            done += w.stats.flushed_rows.get();
            failed += w.stats.failed.get();
            deferrals += w.stats.deferrals.get();
            cost += w.stats.cost_micro_usd.get();
        }
        bar.set_position(done);
        bar.set_message(format!(
            "failed {failed}  deferrals {deferrals}  cost ${:.4}",
            cost as f64 / 1e6
        ));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
