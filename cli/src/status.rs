//! `offpeak status`: how far a run is — done, failed and pending against its manifest, cost,
//! savings and the per-provider split, from the stored results de-duplicated by job id.
//! `--watch` keeps a progress bar; `--wait` blocks until every job has an outcome and exits 3
//! if any failed, for nightly pipelines.

use crate::run::progress_bar;
use crate::summary::Summary;
use crate::{output, Failure};
use schemas::RunId;
use std::time::{Duration, Instant};
use store::{dedup, RunReader};

/// Arguments of `offpeak status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// The run id given to (or printed by) `offpeak submit`.
    pub run_id: RunId,
    /// Where the run's results are: `s3://bucket/prefix` or a directory.
    #[arg(long, env = "OFFPEAK_OUTPUT")]
    pub output: String,
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

pub async fn status(args: StatusArgs) -> Result<u8, Failure> {
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
        let rows = dedup(rows);
        let summary = Summary::from_rows(&args.run_id, &rows, manifest.job_count, &sink.location());
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

fn timed_out(started: Instant, timeout: Option<Duration>) -> bool {
    timeout.is_some_and(|t| started.elapsed() >= t)
}
