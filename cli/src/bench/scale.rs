//! `offpeak bench scale`: 1, 2 and 4 worker processes sharing one queue, against a simulator
//! with 200 ms of latency. Each worker count gets the same work per worker (so every
//! measurement lasts about as long), and the speed-up is jobs/s against one worker's jobs/s,
//! measured in the same run. Near-linear is the target while the broker is not the bottleneck.

use super::common::{
    counter_sum, ensure_output, fmt_rate, rate, spawn_worker, start_sim, submit_file, wait_counter,
    wait_ready, write_catalog, write_jobs, SummaryLine, Table, Target,
};
use super::concurrency::log_tail;
use super::throughput::scheme;
use crate::config::Config;
use crate::Failure;
use std::time::{Duration, Instant};

/// Arguments of `offpeak bench scale`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Broker URL: `nats://host:4222` (or `amqp://…`).
    #[arg(long, env = "OFFPEAK_BROKER", default_value = "nats://127.0.0.1:4222")]
    pub broker: String,
    /// Where results go (`s3://bucket/prefix` or a directory); the bucket is created if
    /// missing.
    #[arg(
        long,
        env = "OFFPEAK_OUTPUT",
        default_value = "s3://offpeak-bench/scale"
    )]
    pub output: String,
    /// The simulator's latency per request.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "200ms")]
    pub latency: Duration,
    /// Worker process counts to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
    pub workers: Vec<usize>,
    /// Jobs in flight per worker.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Jobs per worker process.
    #[arg(long, default_value_t = 4000)]
    pub jobs_per_worker: usize,
}

pub async fn run(args: Args, cfg: Config) -> Result<u8, Failure> {
    ensure_output(&args.output).await?;
    let sim = start_sim(args.latency).await?;
    let dir = tempfile::tempdir()?;
    let catalog = write_catalog(dir.path(), &sim)?;
    let http = reqwest::Client::new();
    let mut results: Vec<(usize, usize, Duration)> = Vec::new();
    for &w in &args.workers {
        let w = w.max(1);
        let target = Target::new(&args.broker, &args.output, &format!("w{w}"));
        let jobs = w * args.jobs_per_worker.max(1);
        let r = measure(
            &target,
            &cfg,
            &catalog,
            dir.path(),
            &http,
            w,
            args.concurrency,
            jobs,
        )
        .await;
        target.cleanup().await;
        let (counted, took) = r?;
        results.push((w, counted, took));
    }
    sim.shutdown().await;

    let base = results
        .iter()
        .find(|(w, ..)| *w == 1)
        .or(results.first())
        .map(|(w, jobs, took)| rate(*jobs, *took) / *w as f64)
        .unwrap_or(1.0);
    let ideal_per_worker = args.concurrency as f64 / args.latency.as_secs_f64();
    let mut t = Table::new(&[
        "workers",
        "jobs",
        "seconds",
        "jobs/s",
        "speed-up",
        "efficiency",
        "C/latency x workers",
    ]);
    let mut s = SummaryLine::new("scale");
    s.text("broker", scheme(&args.broker))
        .num("latency_ms", args.latency.as_secs_f64() * 1000.0)
        .text("concurrency", args.concurrency);
    for (w, jobs, took) in &results {
        let r = rate(*jobs, *took);
        let speedup = r / base;
        t.row(vec![
            w.to_string(),
            jobs.to_string(),
            format!("{:.2}", took.as_secs_f64()),
            fmt_rate(r),
            format!("{speedup:.2}"),
            format!("{:.2}", speedup / *w as f64),
            fmt_rate(ideal_per_worker * *w as f64),
        ]);
        s.num(&format!("w{w}_jobs_s"), r)
            .num(&format!("speedup_{w}"), speedup);
    }
    t.print();
    if let Some((w, jobs, took)) = results.iter().max_by_key(|(w, ..)| *w) {
        let eff = rate(*jobs, *took) / base / *w as f64;
        println!("at {w} workers: efficiency {eff:.2} (1.00 = linear)");
        s.num("efficiency", eff);
    }
    s.print();
    Ok(0)
}

#[allow(clippy::too_many_arguments)]
async fn measure(
    target: &Target,
    cfg: &Config,
    catalog: &std::path::Path,
    dir: &std::path::Path,
    http: &reqwest::Client,
    workers: usize,
    concurrency: usize,
    jobs: usize,
) -> Result<(usize, Duration), Failure> {
    eprintln!("{workers} workers: submitting {jobs} jobs");
    let file = dir.join(format!("jobs-w{workers}.jsonl"));
    write_jobs(&file, jobs)?;
    submit_file(target, cfg, catalog, &file, &target.namespace).await?;
    let mut procs = Vec::new();
    let mut logs = Vec::new();
    for i in 0..workers {
        let log = dir.join(format!("worker-w{workers}-{i}.log"));
        procs.push(spawn_worker(
            target,
            catalog,
            concurrency,
            &format!("bench-w{workers}-{i}"),
            &log,
        )?);
        logs.push(log);
    }
    // The clock starts once every worker is connected, so start-up skew does not count.
    wait_ready(http, &mut procs, Duration::from_secs(30)).await?;
    let start = Instant::now();
    // Jobs the first workers finished while the last were still starting are not counted.
    let early = counter_sum(http, &procs, "offpeak_jobs_succeeded_total").await as usize;
    let done = wait_counter(
        http,
        &mut procs,
        "offpeak_jobs_succeeded_total",
        jobs as u64,
        Duration::from_secs(600),
    )
    .await
    .map_err(|e| log_tail(&logs[0], e))?;
    let took = done - start;
    wait_counter(
        http,
        &mut procs,
        "offpeak_rows_stored_total",
        jobs as u64,
        Duration::from_secs(60),
    )
    .await
    .map_err(|e| log_tail(&logs[0], e))?;
    for p in &mut procs {
        p.terminate(Duration::from_secs(30)).await?;
    }
    let counted = jobs.saturating_sub(early);
    eprintln!("{workers} workers: {:.0} jobs/s", rate(counted, took));
    Ok((counted, took))
}
