//! `offpeak submit`: validates a whole job file, writes the run manifest beside the results, and
//! publishes one message per job with back-pressure. Re-submitting the same file under the same
//! run id enqueues nothing new.

use crate::config::Config;
use crate::input::{load_catalog, rejects_jsonl, validate, Checked, JobArgs, Validation};
use crate::run::progress_bar;
use crate::{invalid, store, Failure};
use anyhow::anyhow;
use chrono::Utc;
use futures::StreamExt;
use producer::Manifest;
use schemas::RunId;
use std::collections::HashSet;
use worker::sink::{dedup, read_run};

/// Arguments of `offpeak submit`.
#[derive(Debug, clap::Args)]
pub struct SubmitArgs {
    #[command(flatten)]
    pub input: JobArgs,
    /// Broker URL: `nats://host:4222` (JetStream) or `amqp://user:pass@host:5672/%2f` (RabbitMQ).
    #[arg(long, env = "OFFPEAK_BROKER")]
    pub broker: String,
    /// Where results go (`s3://bucket/prefix` or a directory): the run manifest is written there.
    #[arg(long, env = "OFFPEAK_OUTPUT")]
    pub output: String,
    /// Run id (1-128 ASCII letters, digits, `-` or `_`); generated when absent. Submitting the same file again
    /// under the same id enqueues nothing new.
    #[arg(long)]
    pub run_id: Option<RunId>,
    /// Publishes awaiting the broker's confirmation at once (back-pressure bound).
    #[arg(long, default_value_t = 256)]
    pub in_flight: usize,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

pub async fn submit(args: SubmitArgs, cfg: Config) -> Result<u8, Failure> {
    cfg.validate().map_err(invalid)?;
    let catalog = load_catalog(&args.input.catalog)?;
    let now = Utc::now();
    let run_id = args.run_id.clone().unwrap_or_else(|| RunId::generate(now));
    // Opening the store contacts nothing yet; it is set up while the file is validated.
    let (validation, sink) = tokio::join!(
        validate(&args.input, &catalog, now, cfg.worker.max_prompt_bytes),
        store::open(&args.output)
    );
    let checked = match validation? {
        Validation::Proceed(c) => c,
        Validation::Stop(code) => return Ok(code),
    };
    let Checked {
        input,
        scan,
        sha256,
        ..
    } = &checked;
    let sink = sink?;
    let mut manifest = match store::read_manifest(&*sink, run_id.as_str()).await? {
        Some(m) if m.input_sha256 != *sha256 => {
            return Err(invalid(anyhow!(
                "run {run_id} was submitted from a different file ({}); use another --run-id",
                m.input_file
            )))
        }
        Some(m) if m.published_at.is_some() => {
            println!(
                "run {run_id}: these {} jobs were already submitted; nothing new enqueued",
                m.job_count
            );
            return Ok(0);
        }
        Some(m) => m,
        None => Manifest {
            run_id: run_id.to_string(),
            job_count: scan.valid as u64,
            input_file: input.name().to_string(),
            input_sha256: sha256.clone(),
            submitted_at: now,
            catalog: serde_json::to_value(&catalog)?,
            offpeak_version: producer::OFFPEAK_VERSION.to_string(),
            published_at: None,
        },
    };
    if !scan.is_clean() {
        sink.put(
            run_id.as_str(),
            "_rejects.jsonl",
            rejects_jsonl(&scan.errors)?,
        )
        .await?;
        eprintln!(
            "invalid lines stored as {}/run={run_id}/_rejects.jsonl",
            sink.location()
        );
    }
    // The manifest goes first: a worker may store results before the last publish returns.
    // Meanwhile: the results of an earlier submission that died half-way (jobs already
    // answered are not sent again; the rest may be, and the broker's de-duplication or the
    // readers' drop any repeat), and the broker connection.
    let (written, answered, queue) = tokio::join!(
        store::write_manifest(&*sink, &manifest),
        read_run(&*sink, run_id.as_str()),
        queue::connect(&args.broker, cfg.broker_options()),
    );
    written?;
    let done: HashSet<String> = dedup(answered?).into_iter().map(|r| r.job_id).collect();
    let queue = queue?;
    let bar = progress_bar(scan.valid.saturating_sub(done.len()) as u64, args.quiet);
    bar.set_message(format!("publishing to {}", redact(&args.broker)));
    // Pass 2: the file is read again as fast as the broker confirms, never all at once.
    let (jobs, reader) = checked.jobs(args.in_flight.max(1) * 2);
    let todo = jobs.filter(|j| futures::future::ready(!done.contains(&j.id.0)));
    let published = producer::publish::publish_stream(
        &*queue,
        &run_id,
        todo,
        manifest.submitted_at,
        &catalog,
        args.in_flight,
        &|n| bar.set_position(n),
    )
    .await;
    // A failed publish drops the channel, which stops the reader; a failed read ends the stream
    // early, which the publish count would hide: the reader's error comes first.
    reader.await??;
    let n = published?;
    bar.finish_and_clear();
    manifest.published_at = Some(Utc::now());
    store::write_manifest(&*sink, &manifest).await?;
    println!(
        "run {run_id}: {n} jobs enqueued on {} ({} already answered); results in {}/run={run_id}/",
        redact(&args.broker),
        done.len(),
        sink.location()
    );
    Ok(0)
}

/// A broker URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            let user = creds.split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..s + 3], &url[at..])
        }
        _ => url.to_string(),
    }
}
