//! `offpeak bench concurrency`: one worker process against a slow simulator (2 s a request by
//! default) at in-flight limits C. By Little's law a worker that keeps C requests in flight
//! completes C/latency jobs a second; the bench measures how close it gets, and the worker's
//! peak RSS (`VmHWM` from `/proc/<pid>/status`) while it does.
//!
//! Each level submits `waves × C` jobs first (not timed), then starts the worker and times it
//! from ready to the last answered job, and — Little's law being about the steady state —
//! counts the jobs answered from the middle of the second wave to the middle of the last (cold
//! start and final drain left out); the ratio uses that steady rate. The simulator runs in this
//! process.

use super::common::{
    counter_sum, ensure_output, fmt_rate, mb, peak_rss, rate, spawn_worker, start_sim, submit_file,
    wait_counter, wait_ready, write_catalog, write_jobs, SummaryLine, Table, Target,
};
use super::throughput::scheme;
use crate::config::Config;
use crate::Failure;
use anyhow::anyhow;
use std::time::{Duration, Instant};

/// Arguments of `offpeak bench concurrency`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Broker URL: `nats://host:4222` or `amqp://user:pass@host:5672/%2f`.
    #[arg(long, env = "OFFPEAK_BROKER", default_value = "nats://127.0.0.1:4222")]
    pub broker: String,
    /// Where results go (`s3://bucket/prefix` or a directory); the bucket is created if
    /// missing.
    #[arg(
        long,
        env = "OFFPEAK_OUTPUT",
        default_value = "s3://offpeak-bench/concurrency"
    )]
    pub output: String,
    /// The simulator's latency per request.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "2s")]
    pub latency: Duration,
    /// In-flight limits to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "100,1000,5000")]
    pub levels: Vec<usize>,
    /// Jobs per level, in multiples of C: each level lasts about `waves × latency`.
    #[arg(long, default_value_t = 5)]
    pub waves: usize,
}

struct Level {
    c: usize,
    jobs: usize,
    took: Duration,
    /// Jobs/s between the first and the last wave, when measured.
    steady: Option<f64>,
    rss: u64,
}

impl Level {
    /// The steady-state rate, or the whole run's.
    fn rate(&self) -> f64 {
        self.steady.unwrap_or_else(|| rate(self.jobs, self.took))
    }
}

const SUCCEEDED: &str = "offpeak_jobs_succeeded_total";

pub async fn run(args: Args, cfg: Config) -> Result<u8, Failure> {
    ensure_output(&args.output).await?;
    let sim = start_sim(args.latency).await?;
    let dir = tempfile::tempdir()?;
    let catalog = write_catalog(dir.path(), &sim)?;
    let http = reqwest::Client::new();
    let mut levels = Vec::new();
    for &c in &args.levels {
        let c = c.max(1);
        let target = Target::new(&args.broker, &args.output, &format!("c{c}"));
        let r = level(
            &target,
            &cfg,
            &catalog,
            dir.path(),
            &http,
            c,
            args.waves.max(1),
            args.latency,
        )
        .await;
        target.cleanup().await;
        levels.push(r?);
    }
    sim.shutdown().await;

    let latency = args.latency.as_secs_f64();
    let mut t = Table::new(&[
        "in-flight C",
        "jobs",
        "seconds",
        "jobs/s (whole run)",
        "jobs/s (steady)",
        "C/latency",
        "ratio",
        "peak RSS MB",
    ]);
    let mut s = SummaryLine::new("concurrency");
    s.text("broker", scheme(&args.broker))
        .num("latency_ms", latency * 1000.0);
    for l in &levels {
        let got = l.rate();
        let ideal = l.c as f64 / latency;
        t.row(vec![
            l.c.to_string(),
            l.jobs.to_string(),
            format!("{:.2}", l.took.as_secs_f64()),
            fmt_rate(rate(l.jobs, l.took)),
            l.steady.map_or("-".into(), fmt_rate),
            fmt_rate(ideal),
            format!("{:.2}", got / ideal),
            format!("{:.0}", mb(l.rss)),
        ]);
        s.num(&format!("c{}_jobs_s", l.c), got)
            .num(
                &format!("c{}_whole_run_ratio", l.c),
                rate(l.jobs, l.took) / ideal,
            )
            .num(&format!("c{}_ratio", l.c), got / ideal)
            .num(&format!("c{}_rss_mb", l.c), mb(l.rss));
    }
    t.print();
    // The headline figures are the largest level's.
    if let Some(top) = levels.iter().max_by_key(|l| l.c) {
        let ratio = top.rate() / (top.c as f64 / latency);
        println!(
            "at C = {}: {:.0}% of C/latency (target >= 90% at C = 5000), peak RSS {:.0} MB (target < 300 MB)",
            top.c,
            ratio * 100.0,
            mb(top.rss)
        );
        s.text("c", top.c)
            .num("ratio", ratio)
            .num("rss_mb", mb(top.rss));
    }
    s.print();
    Ok(0)
}

#[allow(clippy::too_many_arguments)]
async fn level(
    target: &Target,
    cfg: &Config,
    catalog: &std::path::Path,
    dir: &std::path::Path,
    http: &reqwest::Client,
    c: usize,
    waves: usize,
    latency: Duration,
) -> Result<Level, Failure> {
    let jobs = c * waves;
    eprintln!("C = {c}: submitting {jobs} jobs");
    let file = dir.join(format!("jobs-{c}.jsonl"));
    write_jobs(&file, jobs)?;
    submit_file(target, cfg, catalog, &file, &target.namespace).await?;

    let log = dir.join(format!("worker-{c}.log"));
    let mut workers = vec![spawn_worker(
        target,
        catalog,
        c,
        &format!("bench-c{c}"),
        &log,
    )?];
    wait_ready(http, &mut workers, Duration::from_secs(30)).await?;
    let start = Instant::now();
    // Little's law is about the steady state: besides the whole run (cold start and the last
    // wave's drain included), count what completes from the middle of the second wave to the
    // middle of the last, while C requests should be in flight all along.
    let steady = if waves >= 3 {
        // Half a latency off the wave boundaries, so sharp waves (small C) are counted whole.
        tokio::time::sleep_until((start + latency.mul_f64(1.5)).into()).await;
        let a = (Instant::now(), counter_sum(http, &workers, SUCCEEDED).await);
        tokio::time::sleep_until((start + latency.mul_f64(waves as f64 - 0.5)).into()).await;
        let b = (Instant::now(), counter_sum(http, &workers, SUCCEEDED).await);
        // All done already: the worker outran the window; fall back to the whole run.
        (b.1 < jobs as f64).then(|| (b.1 - a.1) / (b.0 - a.0).as_secs_f64())
    } else {
        None
    };
    let timeout = Duration::from_secs_f64(60.0 + 10.0 * waves as f64 * 2.0);
    let done = wait_counter(http, &mut workers, SUCCEEDED, jobs as u64, timeout)
        .await
        .map_err(|e| log_tail(&log, e))?;
    let took = done - start;
    wait_counter(
        http,
        &mut workers,
        "offpeak_rows_stored_total",
        jobs as u64,
        Duration::from_secs(60),
    )
    .await
    .map_err(|e| log_tail(&log, e))?;
    let rss = peak_rss(workers[0].pid()?).unwrap_or(0);
    workers[0].terminate(Duration::from_secs(30)).await?;
    eprintln!(
        "C = {c}: {:.0} jobs/s over the run, {} in the steady state, peak RSS {:.0} MB",
        rate(jobs, took),
        steady.map_or("-".into(), |r| format!("{r:.0}")),
        mb(rss)
    );
    Ok(Level {
        c,
        jobs,
        took,
        steady,
        rss,
    })
}

/// An error with the end of the worker's log appended.
pub fn log_tail(log: &std::path::Path, e: Failure) -> Failure {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let tail: Vec<&str> = text.lines().rev().take(10).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    anyhow!(
        "{:#}\nworker log ({}):\n{}",
        e.error,
        log.display(),
        tail.join("\n")
    )
    .into()
}
