//! `offpeak run`: local mode. Validates the whole job file, enqueues the jobs on the in-process
//! queue, runs N workers against real (or simulated) providers, writes Parquet results under
//! `<out>/run=<run_id>/`, and prints a summary computed from the files it wrote.

use crate::config::Config;
use crate::input::{load_catalog, rejects_jsonl, validate, Checked, JobArgs, Validation};
use crate::store;
use crate::summary::Summary;
use crate::{invalid, Failure};
use anyhow::{anyhow, Context};
use chrono::Utc;
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use producer::Manifest;
use queue::{MemoryQueue, Queue};
use schemas::{Catalog, RunId};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use worker::sink::{dedup, read_run};
use worker::{LocalDirSink, ResultSink, Worker};

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
    /// Independent workers in this process (each with its own rate limiters and breakers).
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
    raise_fd_limit();
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
    let Checked {
        input,
        scan,
        sha256,
        ..
    } = &checked;
    let sink = Arc::new(LocalDirSink::new(&args.out));
    if !scan.is_clean() {
        sink.put(
            run_id.as_str(),
            "_rejects.jsonl",
            rejects_jsonl(&scan.errors)?,
        )
        .await?;
        eprintln!(
            "invalid lines written to {}",
            args.out
                .join(format!("run={run_id}/_rejects.jsonl"))
                .display()
        );
    }

    // Resume: jobs that already have a result in this run are not enqueued again.
    let done: HashSet<String> = dedup(read_run(&*sink, run_id.as_str()).await?)
        .into_iter()
        .map(|r| r.job_id)
        .collect();
    let manifest = Manifest {
        run_id: run_id.to_string(),
        job_count: scan.valid as u64,
        input_file: input.name().to_string(),
        input_sha256: sha256.clone(),
        submitted_at: now,
        catalog: serde_json::to_value(&catalog)?,
        offpeak_version: producer::OFFPEAK_VERSION.to_string(),
        published_at: None,
    };
    let mut manifest = match store::read_manifest(&*sink, run_id.as_str()).await? {
        Some(m) if m.input_sha256 != manifest.input_sha256 => {
            return Err(invalid(anyhow!(
                "run {run_id} was submitted from a different file ({}); use another --run-id",
                m.input_file
            )))
        }
        Some(m) => m,
        None => {
            store::write_manifest(&*sink, &manifest).await?;
            manifest
        }
    };
    if !done.is_empty() {
        eprintln!(
            "resuming run {run_id}: {} jobs already have results, {} to go",
            done.len(),
            scan.valid.saturating_sub(done.len())
        );
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
    // Pass 2 of the streaming producer: the valid jobs read again from the file.
    let (jobs, reader) = checked.jobs(512);
    let todo = jobs.filter(|j| futures::future::ready(!done.contains(&j.id.0)));
    let published =
        producer::publish::publish_stream(&queue, &run_id, todo, now, &catalog, 256, &|_| {}).await;
    reader.await??;
    let total = published?;
    // Every job is on the queue: say so in the manifest, as `submit` does, or `status --wait`
    // never sees this run finish.
    if manifest.published_at.is_none() {
        manifest.published_at = Some(Utc::now());
        store::write_manifest(&*sink, &manifest).await?;
    }

    let shutdown = CancellationToken::new();
    let mut workers = Vec::new();
    let mut tasks = tokio::task::JoinSet::new();
    let http = reqwest_client(&cfg)?;
    for i in 0..args.workers.max(1) {
        let providers = build_providers(&catalog, &http, &cfg)?;
        let w = Arc::new(Worker::new(
            format!("local{i}-{}", std::process::id()),
            catalog.clone(),
            providers,
            cfg.worker.clone(),
        ));
        let consumer = queue.consume(w.consume_options()).await?;
        workers.push(w.clone());
        let sink: Arc<dyn ResultSink> = sink.clone();
        tasks.spawn(w.run(consumer, sink, shutdown.clone()));
    }

    let bar = progress_bar(total, args.quiet);
    let interrupted = tokio::select! {
        _ = queue.drained() => None,
        _ = tick(&bar, &workers) => None,
        s = shutdown_signal() => Some(s),
    };
    if interrupted.is_some() {
        eprintln!("interrupted: finishing jobs in flight and storing their results; re-run with --run-id {run_id} to resume");
        shutdown.cancel();
    }
    queue.close();
    while tasks.join_next().await.is_some() {}
    bar.finish_and_clear();
    if let Some(h) = sim {
        h.shutdown().await;
    }

    let rows = dedup(read_run(&*sink, run_id.as_str()).await?);
    let summary = Summary::from_rows(&run_id, &rows, manifest.job_count, &sink.location());
    print!("{}", summary.render());
    if let Some(p) = &args.summary_json {
        std::fs::write(p, serde_json::to_vec_pretty(&summary)?)
            .with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(if interrupted == Some(StopSignal::Interrupt) {
        EXIT_INTERRUPTED
    } else if interrupted.is_some() {
        1
    } else if summary.failed > 0 {
        3
    } else {
        0
    })
}

/// Raises this process's soft limit on open files to the hard limit: every job in flight may
/// hold a socket, and the common soft limit (1,024) is far below a worker at thousands of jobs
/// in flight. Child processes inherit the raised limit.
pub fn raise_fd_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => tracing::debug!(limit = n, "open-file limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
    }
}

pub fn reqwest_client(cfg: &Config) -> Result<reqwest::Client, Failure> {
    // Every job in flight may hold a connection; a smaller idle pool would close and reopen
    // connections at high concurrency (churn, and TIME_WAIT sockets piling up on the host).
    reqwest::Client::builder()
        .pool_max_idle_per_host(cfg.worker.concurrency.max(256))
        .build()
        .map_err(|e| Failure::from(anyhow!("HTTP client: {e}")))
}

/// One client per catalog provider.
pub fn build_providers(
    catalog: &Catalog,
    http: &reqwest::Client,
    cfg: &Config,
) -> Result<HashMap<String, Arc<dyn worker::provider::Provider>>, Failure> {
    let opts = worker::provider::ClientOptions {
        timeout: Duration::from_secs_f64(cfg.worker.request_timeout_s),
        max_response_bytes: cfg.worker.max_response_bytes,
    };
    catalog
        .providers
        .iter()
        .map(|p| {
            worker::provider::build_with(p, http.clone(), opts)
                .map(|c| (p.name.clone(), c))
                .map_err(|e| invalid(anyhow!("provider {}: {e}", p.name)))
        })
        .collect()
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

/// The signal that asked this process to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopSignal {
    /// Ctrl-C (SIGINT): the process exits 130, the shell convention (128 + 2).
    Interrupt,
    /// SIGTERM: an orchestrator stopping the process.
    Terminate,
}

/// Exit code after ctrl-c (SIGINT), as shells report a process the signal ended.
pub const EXIT_INTERRUPTED: u8 = 130;

/// Resolves on ctrl-c or SIGTERM, saying which.
pub async fn shutdown_signal() -> StopSignal {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => StopSignal::Interrupt,
            _ = term.recv() => StopSignal::Terminate,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        StopSignal::Interrupt
    }
}
