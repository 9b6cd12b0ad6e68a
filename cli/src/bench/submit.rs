//! `offpeak bench submit`: the producer on large job files. For a small and a large generated
//! file (100k and 1M jobs by default), in JSONL and in Parquet, it runs `offpeak submit` as a
//! child process twice — `--dry-run` (validation only) and a real submission — and reports the
//! rate and the child's peak RSS (`VmHWM`, sampled from `/proc`). The producer streams (pass 1
//! validates, pass 2 publishes), so peak RSS must stay flat as the file grows: `rss_growth`
//! is the large file's peak over the small one's. The baseline is the broker's raw publish
//! rate (client crate, confirms, the same in-flight bound) measured in the same run.

use super::common::{
    ensure_output, fmt_rate, job_line, mb, rate, run_measured, start_sim, write_catalog,
    write_jobs, SummaryLine, Table, Target, MAX_TOKENS, MODEL,
};
use super::throughput::{raw_broker, scheme};
use crate::config::Config;
use crate::Failure;
use anyhow::{anyhow, Context};
use arrow::array::{ArrayRef, Int64Array, StringArray};
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Arguments of `offpeak bench submit`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Broker URL: `nats://host:4222` or `amqp://user:pass@host:5672/%2f`.
    #[arg(long, env = "OFFPEAK_BROKER", default_value = "nats://127.0.0.1:4222")]
    pub broker: String,
    /// Where the manifests go (`s3://bucket/prefix` or a directory).
    #[arg(
        long,
        env = "OFFPEAK_OUTPUT",
        default_value = "s3://offpeak-bench/submit"
    )]
    pub output: String,
    /// The small and the large file's job counts.
    #[arg(long, value_delimiter = ',', default_value = "100000,1000000")]
    pub sizes: Vec<usize>,
    /// Publishes awaiting confirmation at once (`offpeak submit --in-flight`).
    #[arg(long, default_value_t = 256)]
    pub in_flight: usize,
    /// Where to write the generated files (default: a temporary directory, removed after).
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

/// One measurement: a file, a mode, how long, how much memory.
struct Measured {
    format: &'static str,
    size: &'static str,
    jobs: usize,
    mode: &'static str,
    took: Duration,
    rss: u64,
}

pub async fn run(args: Args, cfg: Config) -> Result<u8, Failure> {
    let (small, large) = match args.sizes.as_slice() {
        [s, l] => (*s.min(l), *s.max(l)),
        _ => return Err(anyhow!("--sizes takes two counts: SMALL,LARGE").into()),
    };
    ensure_output(&args.output).await?;
    let tmp = tempfile::tempdir()?;
    let dir = args.dir.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    std::fs::create_dir_all(&dir)?;
    let sim = start_sim(Duration::ZERO).await?;
    let catalog = write_catalog(&dir, &sim)?;

    let baseline_target = Target::new(&args.broker, &args.output, "sub-raw");
    eprintln!("baseline: raw publish of {small} messages");
    let payload = bytes::Bytes::from(vec![b'x'; job_line(12345).len() + 220]);
    let consume = cfg.worker.concurrency + cfg.worker.flush.max_rows;
    let raw = raw_broker(&baseline_target, small, &payload, args.in_flight, consume).await;
    baseline_target.cleanup().await;
    let raw_publish = rate(small, raw?.publish);

    let mut measured = Vec::new();
    for (size, jobs) in [("small", small), ("large", large)] {
        let jsonl = dir.join(format!("jobs-{jobs}.jsonl"));
        let parquet = dir.join(format!("jobs-{jobs}.parquet"));
        eprintln!("generating {jobs} jobs as JSONL and Parquet");
        write_jobs(&jsonl, jobs)?;
        write_parquet(&parquet, jobs)?;
        for (format, file) in [("jsonl", &jsonl), ("parquet", &parquet)] {
            for mode in ["validate", "submit"] {
                let target = Target::new(&args.broker, &args.output, "sub");
                eprintln!("{format} {jobs}: {mode}");
                let r = submit_child(&target, &catalog, file, mode, args.in_flight).await;
                target.cleanup().await;
                let (took, rss) = r?;
                measured.push(Measured {
                    format,
                    size,
                    jobs,
                    mode,
                    took,
                    rss,
                });
            }
        }
        let _ = std::fs::remove_file(&jsonl);
        let _ = std::fs::remove_file(&parquet);
    }
    sim.shutdown().await;

    let mut t = Table::new(&["file", "jobs", "mode", "seconds", "jobs/s", "peak RSS MB"]);
    let mut s = SummaryLine::new("submit");
    s.text("broker", scheme(&args.broker))
        .text("small_jobs", small)
        .text("large_jobs", large)
        .num("raw_publish_jobs_s", raw_publish);
    for m in &measured {
        let r = rate(m.jobs, m.took);
        t.row(vec![
            m.format.into(),
            m.jobs.to_string(),
            m.mode.into(),
            format!("{:.2}", m.took.as_secs_f64()),
            fmt_rate(r),
            format!("{:.0}", mb(m.rss)),
        ]);
        let key = format!("{}_{}_{}", m.format, m.size, m.mode);
        s.num(&format!("{key}_jobs_s"), r)
            .num(&format!("{key}_rss_mb"), mb(m.rss));
    }
    t.print();
    let find = |format: &str, size: &str, mode: &str| {
        measured
            .iter()
            .find(|m| m.format == format && m.size == size && m.mode == mode)
    };
    let (Some(jl), Some(js)) = (
        find("jsonl", "large", "submit"),
        find("jsonl", "small", "submit"),
    ) else {
        return Err(anyhow!("missing measurements").into());
    };
    let ratio = rate(jl.jobs, jl.took) / raw_publish;
    let growth = jl.rss as f64 / js.rss.max(1) as f64;
    let max_rss = measured.iter().map(|m| m.rss).max().unwrap_or(0);
    println!(
        "raw publish {} msg/s; submit of {large} JSONL jobs at {:.2} of it; peak RSS {:.0} MB at {small} jobs, {:.0} MB at {large} (growth x{growth:.2})",
        fmt_rate(raw_publish),
        ratio,
        mb(js.rss),
        mb(jl.rss)
    );
    s.num("ratio", ratio)
        .num("rss_growth", growth)
        .num("max_rss_mb", mb(max_rss));
    s.print();
    Ok(0)
}

/// Runs `offpeak submit FILE` (`--dry-run` for `validate`) as a child: wall time and peak RSS.
async fn submit_child(
    target: &Target,
    catalog: &Path,
    file: &Path,
    mode: &str,
    in_flight: usize,
) -> Result<(Duration, u64), Failure> {
    let mut cmd = tokio::process::Command::new(std::env::current_exe()?);
    cmd.arg("submit")
        .arg(file)
        .args(["--broker", &target.broker, "--output", &target.output])
        .arg("--catalog")
        .arg(catalog)
        .args(["--run-id", &target.namespace, "--quiet"])
        .args(["--in-flight", &in_flight.to_string()])
        .env("OFFPEAK_BROKER__NAMESPACE", &target.namespace)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit());
    if mode == "validate" {
        cmd.arg("--dry-run");
    }
    let (took, rss, status) = run_measured(cmd).await?;
    if !status.success() {
        return Err(anyhow!(
            "offpeak submit {} ({mode}) exited with {status}",
            file.display()
        )
        .into());
    }
    Ok((took, rss))
}

/// Writes `n` generated jobs as Parquet (`id`, `model`, `prompt`, `max_tokens`, `priority`),
/// 64k rows per row group.
fn write_parquet(path: &Path, n: usize) -> Result<(), Failure> {
    const CHUNK: usize = 65_536;
    let file =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let props = WriterProperties::builder()
        .set_max_row_group_size(CHUNK)
        .build();
    let mut writer: Option<ArrowWriter<std::fs::File>> = None;
    let mut file = Some(file);
    let mut start = 0;
    while start < n {
        let end = (start + CHUNK).min(n);
        let ids: ArrayRef = Arc::new(StringArray::from_iter_values(
            (start..end).map(|i| format!("job-{i:08}")),
        ));
        let models: ArrayRef = Arc::new(StringArray::from_iter_values((start..end).map(|_| MODEL)));
        let prompts: ArrayRef = Arc::new(StringArray::from_iter_values(
            (start..end).map(|i| format!("question {i}: what is {i} times 7?")),
        ));
        let max_tokens: ArrayRef = Arc::new(Int64Array::from_iter_values(
            (start..end).map(|_| i64::from(MAX_TOKENS)),
        ));
        let priority: ArrayRef = Arc::new(StringArray::from_iter_values(
            (start..end).map(|_| "critical"),
        ));
        let batch = RecordBatch::try_from_iter([
            ("id", ids),
            ("model", models),
            ("prompt", prompts),
            ("max_tokens", max_tokens),
            ("priority", priority),
        ])?;
        if writer.is_none() {
            let f = file.take().ok_or_else(|| anyhow!("parquet writer"))?;
            writer = Some(ArrowWriter::try_new(
                f,
                batch.schema(),
                Some(props.clone()),
            )?);
        }
        if let Some(w) = writer.as_mut() {
            w.write(&batch)?;
        }
        start = end;
    }
    if let Some(w) = writer {
        w.close()?;
    }
    Ok(())
}
