//! `offpeak submit`: validates a whole job file, writes the run manifest beside the results, and
//! publishes one message per job with back-pressure. Re-submitting the same file under the same
//! run id enqueues nothing new.

use crate::config::Config;
use crate::input::{load_catalog, submission_failure, validate, JobArgs, Validation};
use crate::run::progress_bar;
use crate::{invalid, output, Failure};
use chrono::Utc;
use producer::{PublishCheckpoint, Submission, REJECTS_FILE};
use queue::redact;
use schemas::RunId;

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
    let signing_key = cfg.signing_key().map_err(invalid)?;
    let catalog = load_catalog(&args.input.catalog)?;
    let now = Utc::now();
    let run_id = args.run_id.clone().unwrap_or_else(|| RunId::generate(now));
    // Opening the store contacts nothing yet; it is set up while the file is validated.
    let (validation, sink) = tokio::join!(
        validate(&args.input, &catalog, now, cfg.worker.max_prompt_bytes),
        output::open(&args.output)
    );
    let checked = match validation? {
        Validation::Proceed(c) => c,
        Validation::Stop(code) => return Ok(code),
    };
    let sink = sink?;
    // The manifest is written before anything is published (a worker may store results before
    // the last publish returns). Meanwhile, the broker connection.
    let (begun, queue) = tokio::join!(
        Submission::begin(&*sink, &run_id, &checked, &catalog, now),
        queue::connect(&args.broker, cfg.broker_options()),
    );
    let mut submission = begun.map_err(submission_failure)?;
    submission.signing_key = signing_key;
    if !checked.scan.is_clean() {
        eprintln!(
            "invalid lines stored as {}/run={run_id}/{REJECTS_FILE}",
            sink.location()
        );
    }
    if submission.already_published() {
        println!(
            "run {run_id}: these {} jobs were already submitted; nothing new enqueued",
            submission.manifest.job_count
        );
        return Ok(0);
    }
    // Jobs answered by an earlier submission that died half-way are not sent again, nor those
    // its publish checkpoint says the broker confirmed (to this same queue); the few it
    // published after its last checkpoint are sent again, and the broker's de-duplication or
    // the readers' drop the repeats.
    let queue = queue?;
    let target = format!("{} {}", redact(&args.broker), cfg.broker.namespace);
    let checkpoint = PublishCheckpoint::open(
        sink.clone(),
        &submission.manifest,
        checked.scan.valid as u64,
        &target,
    )
    .await
    .broker_deduplicates(queue::deduplicates(&args.broker));
    let enqueued_before = checkpoint.already_enqueued();
    let remaining = (checked.scan.valid as u64)
        .saturating_sub(enqueued_before.max(submission.answered.len() as u64));
    let bar = progress_bar(remaining, args.quiet);
    bar.set_message(format!("publishing to {}", redact(&args.broker)));
    let n = submission
        .publish(
            &*queue,
            &checked,
            &catalog,
            args.in_flight,
            Some(&checkpoint),
            &|n| bar.set_position(n),
        )
        .await
        .map_err(submission_failure)?;
    bar.finish_and_clear();
    submission
        .finish(&*sink)
        .await
        .map_err(submission_failure)?;
    println!(
        "run {run_id}: {n} jobs enqueued on {} ({} already answered, the first {enqueued_before} \
         enqueued by an earlier submission); results in {}/run={run_id}/",
        redact(&args.broker),
        submission.answered.len(),
        sink.location()
    );
    Ok(0)
}
