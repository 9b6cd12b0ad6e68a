//! `offpeak bench report`: `offpeak report` on a large run. It writes a synthetic run of N jobs
//! (1M by default) into a local directory with the project's own result writer (the Parquet
//! codec the flusher uses, files of 10k rows, plus the manifest and the job list the producer
//! writes), then runs `offpeak report` on it as a child process and reports the wall time, the
//! child's peak RSS (`VmHWM`, sampled from `/proc`) and the HTML's size. Targets (issue #16):
//! under 60 s, under 500 MB, under 2 MB. Printed, not asserted.

use super::common::{mb, run_measured, SummaryLine, Table};
use crate::Failure;
use anyhow::{anyhow, Context};
use chrono::{DateTime, Duration, Utc};
use schemas::{Catalog, ResultRow, ResultStatus};
use std::path::PathBuf;
use store::{LocalDirSink, Manifest, ResultSink};

/// The catalog the synthetic run claims: the example one (its price windows get shaded).
const CATALOG: &str = include_str!("../../../examples/catalog.toml");
const RUN: &str = "bench-report";

/// Arguments of `offpeak bench report`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Jobs in the synthetic run.
    #[arg(long, default_value_t = 1_000_000)]
    pub jobs: usize,
    /// Rows per result file.
    #[arg(long, default_value_t = 10_000)]
    pub rows_per_file: usize,
    /// Keep the run and the report in this directory (a temporary one otherwise).
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

pub async fn run(args: Args) -> Result<u8, Failure> {
    let tmp = tempfile::tempdir()?;
    let dir = args.dir.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let catalog = Catalog::from_toml("examples/catalog.toml", CATALOG)?;
    let sink = LocalDirSink::new(&dir);
    let started = std::time::Instant::now();
    let stored = write_run(&sink, &catalog, args.jobs, args.rows_per_file.max(1)).await?;
    let wrote = started.elapsed();
    let out = dir.join("report.html");
    let mut cmd = tokio::process::Command::new(std::env::current_exe()?);
    cmd.args(["report", RUN, "--output"])
        .arg(&dir)
        .arg("-o")
        .arg(&out)
        .env_remove("OFFPEAK_CONFIG");
    let (took, peak, status) = run_measured(cmd).await?;
    if !status.success() {
        return Err(anyhow!("offpeak report exited with {status}").into());
    }
    let html = std::fs::metadata(&out)?.len();
    let mut t = Table::new(&[
        "jobs",
        "results (MB)",
        "report (s)",
        "peak RSS (MB)",
        "HTML (kB)",
    ]);
    t.row(vec![
        args.jobs.to_string(),
        format!("{:.0}", mb(stored)),
        format!("{:.1}", took.as_secs_f64()),
        format!("{:.0}", mb(peak)),
        format!("{:.0}", html as f64 / 1024.0),
    ]);
    println!(
        "run of {} jobs written in {:.1} s",
        args.jobs,
        wrote.as_secs_f64()
    );
    t.print();
    SummaryLine::new("report")
        .text("jobs", args.jobs)
        .num("report_s", took.as_secs_f64())
        .num("peak_rss_mb", mb(peak))
        .num("html_kb", html as f64 / 1024.0)
        .print();
    Ok(0)
}

/// Writes the synthetic run; returns the bytes of result files written.
async fn write_run(
    sink: &LocalDirSink,
    catalog: &Catalog,
    jobs: usize,
    per_file: usize,
) -> Result<u64, Failure> {
    let start = DateTime::from_timestamp(1_764_547_200, 0).unwrap_or_else(Utc::now);
    let offers: Vec<(String, String)> = catalog
        .providers
        .iter()
        .flat_map(|p| p.models.iter().map(|m| (p.name.clone(), m.model.clone())))
        .collect();
    let mut bytes = 0u64;
    let ids = store::jobs::encode_job_ids(
        (0..jobs)
            .map(job_id)
            .collect::<Vec<_>>()
            .iter()
            .map(String::as_str),
    );
    store::write_job_ids(sink, RUN, ids).await?;
    for (seq, first) in (0..jobs).step_by(per_file).enumerate() {
        let rows: Vec<ResultRow> = (first..(first + per_file).min(jobs))
            .map(|i| synthetic_row(i, jobs, start, &offers))
            .collect();
        let file = store::encode_parquet(&rows)?;
        bytes += file.len() as u64;
        sink.put(
            RUN,
            &format!("part-bench-{}-{seq:05}.parquet", start.timestamp()),
            file,
        )
        .await?;
    }
    let manifest = Manifest {
        run_id: RUN.into(),
        job_count: jobs as u64,
        input_file: "synthetic".into(),
        input_sha256: String::new(),
        submitted_at: start,
        catalog: serde_json::to_value(catalog)?,
        offpeak_version: store::OFFPEAK_VERSION.into(),
        published_at: Some(start),
    };
    store::write_manifest(sink, &manifest).await?;
    Ok(bytes)
}

fn job_id(i: usize) -> String {
    format!("job-{i:07}")
}

/// Job `i` of `n`: completions spread over 24 hours, one in 50 failed, a quarter deferred.
fn synthetic_row(
    i: usize,
    n: usize,
    start: DateTime<Utc>,
    offers: &[(String, String)],
) -> ResultRow {
    let (provider, model) = &offers[i % offers.len().max(1)];
    let failed = i % 50 == 7;
    let status = if failed {
        ResultStatus::Failed
    } else {
        ResultStatus::Succeeded
    };
    let done = start + Duration::milliseconds((86_400_000 * i as i64) / n.max(1) as i64);
    let mut r = ResultRow::blank(RUN.into(), job_id(i), status, done);
    r.model = model.clone();
    r.priority = "deferrable".into();
    r.submitted_at = start;
    r.deadline = start + Duration::hours(if i.is_multiple_of(97) { 6 } else { 30 });
    r.deferrals = u32::from(i.is_multiple_of(4));
    r.deferred_ms = if i.is_multiple_of(4) {
        (i as u64 * 7_919) % 20_000_000
    } else {
        0
    };
    r.attempts = 1;
    if failed {
        r.error_kind = Some(["terminal", "limit", "no_provider"][i % 3].into());
        r.error_message = Some(format!("{provider}: HTTP 400: invalid request (job {i})"));
    } else {
        r.provider = Some(provider.clone());
        r.provider_model = Some(format!("{model}-id"));
        r.route = Some(["realtime", "realtime", "flex", "batch"][i % 4].into());
        r.input_tokens = 200 + (i as u64 % 300);
        r.output_tokens = 50 + (i as u64 % 200);
        r.cost_usd = r.input_tokens as f64 * 0.3e-6 + r.output_tokens as f64 * 1.1e-6;
        r.baseline_cost_usd = r.cost_usd * 3.0;
        r.latency_ms = 150 + (i as u64 * 31) % 4_000;
        r.output_text = Some(format!("The answer to question {i} is {}.", i % 4));
        r.finish_reason = Some("stop".into());
        r.route_reason = Some("cheapest".into());
    }
    r
}
