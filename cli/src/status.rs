//! `offpeak status`: how far a run is — done, failed and pending against its manifest, cost,
//! savings and the per-provider split, from the stored results de-duplicated by job id.
//! `--watch` keeps a progress bar; `--wait` blocks until every job has an outcome and exits 3
//! if any failed, for nightly pipelines. Only rows of the run's own jobs count (its job list,
//! `_jobs`); rows of other job ids published under the run's id are reported apart. With a
//! broker, the run's dead letters are shown too, counted by reason.

use crate::config::Config;
use crate::run::progress_bar;
use crate::{output, Failure};
use queue::redact;
use report::{DeadLetterSummary, Summary};
use schemas::RunId;
use std::collections::HashSet;
use std::time::{Duration, Instant};
use store::{dedup, own_rows, RunReader};

/// Most dead letters read for their reasons (the total is counted without reading them).
const MAX_DEAD_LETTERS_READ: usize = 5_000;
/// How long connecting to the broker and reading the dead letters may take.
const DEAD_LETTERS_TIMEOUT: Duration = Duration::from_secs(15);

/// Arguments of `offpeak status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// The run id given to (or printed by) `offpeak submit`.
    pub run_id: RunId,
    /// Where the run's results are: `s3://bucket/prefix` or a directory.
    #[arg(long, env = "OFFPEAK_OUTPUT")]
    pub output: String,
    /// The broker the run was submitted to: with it, the run's dead letters are shown (read,
    /// not taken). Without it, nothing is said about dead letters.
    #[arg(long, env = "OFFPEAK_BROKER")]
    pub broker: Option<String>,
    /// Keep watching, with a progress bar, until every job has an outcome.
    #[arg(long)]
    pub watch: bool,
    /// Block until every job has an outcome; exit 0 if all succeeded, 3 if any failed.
    #[arg(long)]
    pub wait: bool,
    /// With --watch/--wait: give up after this long (exit 1), e.g. `2h`.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub timeout: Option<Duration>,
    /// With --watch/--wait: how often to look.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "2s")]
    pub interval: Duration,
    /// Print the summary as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub async fn status(args: StatusArgs, cfg: Config) -> Result<u8, Failure> {
    let sink = output::open(&args.output).await?;
    let run = args.run_id.as_str();
    let started = Instant::now();
    let mut reader = RunReader::default();
    let follow = args.watch || args.wait;
    let bar = if args.watch {
        Some(progress_bar(0, false))
    } else {
        None
    };
    // The run's job ids, read once: the producer writes them before the manifest, so a run with
    // a manifest and no list is an older one (read again each time, in case it is resumed).
    let mut ids: Option<HashSet<String>> = None;
    loop {
        let manifest = store::read_manifest(&*sink, run).await?;
        let rows = reader.rows(&*sink, run).await?;
        let Some(manifest) = manifest else {
            if follow && !timed_out(started, args.timeout) {
                tokio::time::sleep(args.interval).await;
                continue;
            }
            return Err(output::no_such_run(&*sink, run));
        };
        if ids.is_none() {
            ids = store::read_job_ids(&*sink, run).await?;
        }
        let (rows, foreign) = own_rows(dedup(rows), ids.as_ref());
        let mut summary =
            Summary::from_rows(&args.run_id, &rows, manifest.job_count, &sink.location());
        summary.foreign_rows = foreign;
        summary.in_provider_batches = Some(in_provider_batches(&*sink, run, &rows).await);
        let complete = manifest.published_at.is_some()
            && summary.succeeded + summary.failed >= manifest.job_count;
        if let Some(bar) = &bar {
            bar.set_length(manifest.job_count);
            bar.set_position(summary.succeeded + summary.failed);
            bar.set_message(format!(
                "failed {}  cost ${:.4}  savings {:.1}%",
                summary.failed, summary.cost_usd, summary.savings_pct
            ));
        }
        if !follow || complete || timed_out(started, args.timeout) {
            if let Some(bar) = &bar {
                bar.finish_and_clear();
            }
            if let Some(url) = &args.broker {
                summary.dead_letters = Some(dead_letters(url, &cfg, run).await);
            }
            if args.json {
                println!("{}", serde_json::to_string_pretty(&summary)?);
            } else {
                print!("{}", summary.render());
                if manifest.published_at.is_none() {
                    println!("  (the producer has not finished publishing this run)");
                }
            }
            if follow && !complete {
                eprintln!(
                    "timed out with {} jobs pending",
                    manifest
                        .job_count
                        .saturating_sub(summary.succeeded + summary.failed)
                );
                return Ok(1);
            }
            return Ok(if args.wait && summary.failed > 0 {
                3
            } else {
                0
            });
        }
        tokio::time::sleep(args.interval).await;
    }
}

/// Jobs carried by the run's provider batches that are still running: the jobs of every
/// `submitted` batch record without a row yet.
async fn in_provider_batches(
    sink: &dyn store::ResultSink,
    run: &str,
    rows: &[schemas::ResultRow],
) -> u64 {
    let Ok(names) = sink.list(run).await else {
        return 0;
    };
    let done: HashSet<&str> = rows.iter().map(|r| r.job_id.as_str()).collect();
    let mut waiting = HashSet::new();
    for name in names
        .iter()
        .filter(|n| n.starts_with(worker::batch::RECORD_PREFIX))
    {
        let Ok(bytes) = sink.get(run, name).await else {
            continue;
        };
        let Ok(rec) = serde_json::from_slice::<worker::batch::BatchRecord>(&bytes) else {
            continue;
        };
        if rec.state == worker::batch::RecordState::Submitted {
            for env in &rec.jobs {
                if !done.contains(env.job.id.0.as_str()) {
                    waiting.insert(env.job.id.0.clone());
                }
            }
        }
    }
    waiting.len() as u64
}

/// What the broker holds in dead letters for `run`; a broker that cannot be reached is said
/// so, not an error (the results are what `status` is for).
async fn dead_letters(url: &str, cfg: &Config, run: &str) -> DeadLetterSummary {
    let opts = cfg.broker_options();
    let namespace = opts.namespace.clone();
    let read = async {
        let q = queue::connect(url, opts).await?;
        q.run_dead_letters(run, MAX_DEAD_LETTERS_READ).await
    };
    match tokio::time::timeout(DEAD_LETTERS_TIMEOUT, read).await {
        Ok(Ok(Some(d))) => DeadLetterSummary::from_broker(&d, &namespace),
        Ok(Ok(None)) => DeadLetterSummary::Unavailable {
            error: format!("{} cannot list dead letters", redact(url)),
        },
        Ok(Err(e)) => DeadLetterSummary::Unavailable {
            error: e.to_string(),
        },
        Err(_) => DeadLetterSummary::Unavailable {
            error: format!(
                "{} did not answer within {}s",
                redact(url),
                DEAD_LETTERS_TIMEOUT.as_secs()
            ),
        },
    }
}

fn timed_out(started: Instant, timeout: Option<Duration>) -> bool {
    timeout.is_some_and(|t| started.elapsed() >= t)
}
