//! `offpeak bench throughput`: what the whole pipeline achieves against what its two external
//! parts achieve on their own, all measured in one run on the same machine.
//!
//! - **broker**: publish N small messages with confirms, then consume and ack them, with the
//!   client crate the queue crate uses (async-nats / lapin), at the in-flight bounds offpeak uses
//!   (`submit --in-flight`, the worker's consumer bound);
//! - **http**: N chat requests to the simulator (in this process, zero latency) from a bare
//!   reqwest loop at the worker's concurrency;
//! - **pipeline**: `offpeak submit`'s code on a JSONL file of N jobs, then one worker
//!   (`Worker::run`, in this process) until all N rows are stored as Parquet in the results
//!   store.
//!
//! A job costs one broker round (publish, deliver, ack) plus one HTTP request, so the best the
//! pipeline can do is `limit = 1/(1/broker + 1/http)`; `ratio = pipeline / limit` is what
//! offpeak's own work (validation, envelopes, routing, Parquet, uploads) leaves of it.

use super::common::{
    ensure_output, fmt_rate, rate, start_sim, submit_file, write_catalog, write_jobs, SummaryLine,
    Table, Target, MAX_TOKENS, MODEL_ID, PROVIDER,
};
use crate::config::Config;
use crate::input::load_catalog;
use crate::run::build_providers;
use crate::{output, Failure};
use anyhow::{anyhow, Context};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use worker::Worker;

/// Arguments of `offpeak bench throughput`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Broker URL: `nats://host:4222` or `amqp://user:pass@host:5672/%2f`.
    #[arg(long, env = "OFFPEAK_BROKER")]
    pub broker: String,
    /// Where the pipeline's results go (`s3://bucket/prefix` or a directory); the bucket is
    /// created if missing.
    #[arg(
        long,
        env = "OFFPEAK_OUTPUT",
        default_value = "s3://offpeak-bench/throughput"
    )]
    pub output: String,
    /// Jobs (and messages, and requests) per measurement.
    #[arg(short = 'n', long, default_value_t = 20_000)]
    pub jobs: usize,
    /// Rounds of the three measurements; figures are medians over them.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
}

/// Broker figures: publish with confirms, then consume with acks.
pub(super) struct BrokerRun {
    pub publish: Duration,
    pub consume: Duration,
}

/// One round's durations, all for `n` jobs.
#[derive(Debug, Clone, Copy)]
struct Round {
    publish: Duration,
    consume: Duration,
    http: Duration,
    submit: Duration,
    work: Duration,
}

/// Runs the rounds and prints the table and the summary line.
///
/// Long (over 100 lines) on purpose: one measurement's script — set up, interleaved rounds,
/// medians, table — whose figures feed each other; each step is a few lines.
pub async fn run(args: Args, cfg: Config) -> Result<u8, Failure> {
    let n = args.jobs.max(1);
    let rounds = args.rounds.max(1);
    ensure_output(&args.output).await?;
    let publish_in_flight = 256;
    let consume_in_flight = cfg.worker.concurrency + cfg.worker.flush.max_rows;
    let payload = sample_payload();
    let sim = start_sim(Duration::ZERO).await?;
    let dir = tempfile::tempdir()?;
    let catalog_path = write_catalog(dir.path(), &sim)?;
    let jobs = dir.path().join("jobs.jsonl");
    write_jobs(&jobs, n)?;

    // Rounds interleave the three measurements, so a neighbour's load drifting over the run
    // weighs on baselines and pipeline alike; each figure is the median over the rounds.
    let mut all = Vec::new();
    let (mut files, mut flush_s) = (0u64, 0.0f64);
    for r in 1..=rounds {
        eprintln!(
            "round {r}/{rounds}: broker ({n} messages of {} bytes), http ({n} requests at concurrency {}), pipeline ({n} jobs)",
            payload.len(),
            cfg.worker.concurrency
        );
        let target = Target::new(&args.broker, &args.output, "tp");
        let raw = raw_broker(&target, n, &payload, publish_in_flight, consume_in_flight).await;
        target.cleanup().await;
        let raw = raw?;
        let http = raw_http(&cfg, &sim, n).await?;
        let target = Target::new(&args.broker, &args.output, "tp");
        let pipeline = pipeline(&target, &cfg, &catalog_path, &jobs, n).await;
        target.cleanup().await;
        let (submit, work, (f, fs)) = pipeline?;
        files += f;
        flush_s += fs;
        all.push(Round {
            publish: raw.publish,
            consume: raw.consume,
            http,
            submit,
            work,
        });
    }
    sim.shutdown().await;

    let med = |f: &dyn Fn(&Round) -> Duration| median(all.iter().map(f).collect());
    let publish = med(&|r| r.publish);
    let consume = med(&|r| r.consume);
    let broker = med(&|r| r.publish + r.consume);
    let http = med(&|r| r.http);
    let submit = med(&|r| r.submit);
    let work = med(&|r| r.work);
    let pipeline = med(&|r| r.submit + r.work);
    let broker_rate = rate(n, broker);
    let http_rate = rate(n, http);
    let limit = 1.0 / (1.0 / broker_rate + 1.0 / http_rate);
    let pipeline_rate = rate(n, pipeline);
    // Each round's ratio compares figures taken minutes apart at most; the headline is their
    // median (a ratio of medians would mix rounds with different neighbours' load).
    let mut round_ratios: Vec<f64> = all
        .iter()
        .map(|r| {
            let lim = 1.0 / (1.0 / rate(n, r.publish + r.consume) + 1.0 / rate(n, r.http));
            rate(n, r.submit + r.work) / lim
        })
        .collect();
    let shown: Vec<String> = round_ratios.iter().map(|r| format!("{r:.2}")).collect();
    round_ratios.sort_by(f64::total_cmp);
    let ratio = match round_ratios.len() {
        0 => 0.0,
        k if k % 2 == 1 => round_ratios[k / 2],
        k => (round_ratios[k / 2 - 1] + round_ratios[k / 2]) / 2.0,
    };

    let mut t = Table::new(&["stage (median of rounds)", "jobs", "seconds", "jobs/s"]);
    let mut row = |name: &str, took: Duration| {
        t.row(vec![
            name.into(),
            n.to_string(),
            format!("{:.3}", took.as_secs_f64()),
            fmt_rate(rate(n, took)),
        ])
    };
    row("broker: publish with confirms", publish);
    row("broker: consume with acks", consume);
    row("broker (publish + consume)", broker);
    row("http: bare reqwest loop", http);
    row("offpeak submit", submit);
    row("offpeak worker (to stored rows)", work);
    row("pipeline (submit + worker)", pipeline);
    t.print();
    println!(
        "worker: {files} results files, {:.1} ms each to encode and store on average",
        flush_s * 1000.0 / files.max(1) as f64
    );
    println!(
        "limit = 1/(1/broker + 1/http) = {} jobs/s (medians); ratio = pipeline / limit per round: {}; median {ratio:.2} (target >= 0.7)",
        fmt_rate(limit),
        shown.join(" ")
    );
    SummaryLine::new("throughput")
        .text("broker", scheme(&args.broker))
        .text("n", n)
        .text("rounds", rounds)
        .num("broker_jobs_s", broker_rate)
        .num("http_jobs_s", http_rate)
        .num("limit_jobs_s", limit)
        .num("submit_jobs_s", rate(n, submit))
        .num("worker_jobs_s", rate(n, work))
        .num("pipeline_jobs_s", pipeline_rate)
        .num("ratio", ratio)
        .print();
    Ok(0)
}

/// The median of some durations (the mean of the middle two for an even count).
fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    match v.len() {
        0 => Duration::ZERO,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2,
    }
}

/// `nats` or `amqp`, for the summary.
pub fn scheme(url: &str) -> &str {
    if url.starts_with("amqp") {
        "rabbitmq"
    } else {
        "nats"
    }
}

/// A message the size of a generated job's envelope.
fn sample_payload() -> Bytes {
    let line = super::common::job_line(12345);
    let size = line.len() + 220; // the envelope adds the run, times, counters and defaults
    Bytes::from(vec![b'x'; size])
}

pub(super) async fn raw_broker(
    target: &Target,
    n: usize,
    payload: &Bytes,
    publish_in_flight: usize,
    consume_in_flight: usize,
) -> Result<BrokerRun, Failure> {
    if target.broker.starts_with("amqp") {
        raw_rabbit(target, n, payload, publish_in_flight, consume_in_flight).await
    } else {
        raw_nats(target, n, payload, publish_in_flight, consume_in_flight).await
    }
}

/// Publishes `n` messages to a work-queue stream awaiting each ack (`publish_in_flight`
/// outstanding), then drains them with a pull consumer and explicit acks.
pub async fn raw_nats_publish(
    js: &async_nats::jetstream::Context,
    subject: &str,
    n: usize,
    payload: &Bytes,
    in_flight: usize,
) -> Result<Duration, Failure> {
    let start = Instant::now();
    futures::stream::iter(0..n)
        .map(Ok::<_, anyhow::Error>)
        .try_for_each_concurrent(in_flight, |i| async move {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Msg-Id", format!("raw/{i}").as_str());
            js.publish_with_headers(subject.to_string(), headers, payload.clone())
                .await?
                .await?;
            Ok(())
        })
        .await?;
    Ok(start.elapsed())
}

async fn raw_nats(
    target: &Target,
    n: usize,
    payload: &Bytes,
    publish_in_flight: usize,
    consume_in_flight: usize,
) -> Result<BrokerRun, Failure> {
    use async_nats::jetstream::{self, consumer::pull, stream};
    // The stream lives in the bench's namespace, so `Target::cleanup` cannot miss it.
    let js = jetstream::new(async_nats::connect(target.broker.as_str()).await?);
    let name = format!("{}_RAW", target.namespace.to_ascii_uppercase());
    let subject = format!("{}.raw", target.namespace);
    let s = js
        .get_or_create_stream(stream::Config {
            name: name.clone(),
            subjects: vec![subject.clone()],
            retention: stream::RetentionPolicy::WorkQueue,
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await?;
    let result = async {
        let publish = raw_nats_publish(&js, &subject, n, payload, publish_in_flight).await?;
        let consumer = s
            .create_consumer(pull::Config {
                durable_name: Some("raw".into()),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                max_ack_pending: consume_in_flight as i64,
                ..Default::default()
            })
            .await?;
        let start = Instant::now();
        let messages = consumer
            .stream()
            .max_messages_per_batch(256)
            .messages()
            .await?;
        messages
            .take(n)
            .map_err(|e| anyhow!("receiving: {e}"))
            .try_for_each_concurrent(consume_in_flight, |m| async move {
                m.ack().await.map_err(|e| anyhow!("acking: {e}"))
            })
            .await?;
        Ok::<_, Failure>(BrokerRun {
            publish,
            consume: start.elapsed(),
        })
    }
    .await;
    let _ = js.delete_stream(&name).await;
    result
}

async fn raw_rabbit(
    target: &Target,
    n: usize,
    payload: &Bytes,
    publish_in_flight: usize,
    consume_in_flight: usize,
) -> Result<BrokerRun, Failure> {
    use lapin::options::{
        BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
        ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
    };
    use lapin::types::{AMQPValue, FieldTable, LongString};
    use lapin::{BasicProperties, Connection, ConnectionProperties};
    let conn = Connection::connect(&target.broker, ConnectionProperties::default()).await?;
    let queue = format!("{}.raw", target.namespace);
    let ch = conn.create_channel().await?;
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString(LongString::from("quorum")),
    );
    ch.queue_declare(queue.as_str().into(), QueueDeclareOptions::durable(), args)
        .await?;
    let result = async {
        let publisher = conn.create_channel().await?;
        publisher
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        let start = Instant::now();
        futures::stream::iter(0..n)
            .map(Ok::<_, anyhow::Error>)
            .try_for_each_concurrent(publish_in_flight, |i| {
                let (publisher, queue) = (&publisher, &queue);
                async move {
                    let props = BasicProperties::default()
                        .with_delivery_mode(2)
                        .with_message_id(format!("raw/{i}").as_str().into());
                    let confirm = publisher
                        .basic_publish(
                            "".into(),
                            queue.as_str().into(),
                            BasicPublishOptions {
                                mandatory: true,
                                ..Default::default()
                            },
                            payload,
                            props,
                        )
                        .await?
                        .await?;
                    if !confirm.is_ack() {
                        return Err(anyhow!("publish not confirmed"));
                    }
                    Ok(())
                }
            })
            .await?;
        let publish = start.elapsed();

        let consumer_ch = conn.create_channel().await?;
        consumer_ch
            .basic_qos(
                consume_in_flight.min(u16::MAX as usize) as u16,
                BasicQosOptions::default(),
            )
            .await?;
        let consumer = consumer_ch
            .basic_consume(
                queue.as_str().into(),
                "raw".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let start = Instant::now();
        consumer
            .take(n)
            .map_err(|e| anyhow!("receiving: {e}"))
            .try_for_each_concurrent(consume_in_flight, |d| async move {
                d.ack(BasicAckOptions::default())
                    .await
                    .map(|_| ())
                    .map_err(|e| anyhow!("acking: {e}"))
            })
            .await?;
        let consume = start.elapsed();
        // Closed before the queue is deleted under them (the broker would cancel the consumer
        // while the client is winding it down).
        let _ = consumer_ch.close(200, "OK".into()).await;
        let _ = publisher.close(200, "OK".into()).await;
        Ok::<_, Failure>(BrokerRun { publish, consume })
    }
    .await;
    let _ = ch
        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await;
    let _ = ch.close(200, "OK".into()).await;
    let _ = conn.close(200, "OK".into()).await;
    result
}

/// `n` chat requests to the simulator, `cfg.worker.concurrency` at once, with the worker's own
/// HTTP client settings.
async fn raw_http(cfg: &Config, sim: &sim::SimHandle, n: usize) -> Result<Duration, Failure> {
    let http = worker::provider::http_client(cfg.worker.concurrency)
        .map_err(|e| Failure::from(anyhow!("HTTP client: {e}")))?;
    let url = format!("{}/chat/completions", sim.base_url(PROVIDER));
    let start = Instant::now();
    futures::stream::iter(0..n)
        .map(Ok::<_, anyhow::Error>)
        .try_for_each_concurrent(cfg.worker.concurrency.max(1), |i| {
            let (http, url) = (&http, &url);
            async move {
                let body = serde_json::json!({
                    "model": MODEL_ID,
                    "messages": [{"role": "user", "content": format!("question {i}: what is {i} times 7?")}],
                    "max_tokens": MAX_TOKENS,
                });
                let resp = http.post(url.as_str()).json(&body).send().await?;
                let status = resp.status();
                let bytes = resp.bytes().await?;
                if !status.is_success() {
                    return Err(anyhow!("simulator answered {status}"));
                }
                let _: serde_json::Value = serde_json::from_slice(&bytes)?;
                Ok(())
            }
        })
        .await?;
    Ok(start.elapsed())
}

/// Submits the file with `offpeak submit`'s code, then runs one worker (the code of
/// `offpeak worker`) until all `n` rows are stored. Returns both durations, and the worker's
/// results files with the seconds spent encoding and storing them.
async fn pipeline(
    target: &Target,
    cfg: &Config,
    catalog_path: &std::path::Path,
    jobs: &std::path::Path,
    n: usize,
) -> Result<(Duration, Duration, (u64, f64)), Failure> {
    let cfg = target.config(cfg);
    let start = Instant::now();
    submit_file(target, &cfg, catalog_path, jobs, &target.namespace).await?;
    let submit = start.elapsed();

    let catalog = Arc::new(load_catalog(catalog_path)?);
    let providers = build_providers(&catalog, &cfg)?;
    let mut wcfg = cfg.worker.clone();
    // The last, partial file waits for its age; keep that tail short.
    wcfg.flush.max_age_s = wcfg.flush.max_age_s.min(1.0);
    let w = Arc::new(Worker::new("bench-tp".into(), catalog, providers, wcfg));
    let sink = output::open(&target.output).await?;
    let queue = queue::connect(&target.broker, cfg.broker_options()).await?;
    let consumer = queue.consume(w.consume_options()).await?;
    let shutdown = CancellationToken::new();
    // Timed from here, like the raw consumer: connections made, consumer declared.
    let start = Instant::now();
    let task = tokio::spawn(w.clone().run(consumer, sink, shutdown.clone()));
    let deadline = Instant::now() + Duration::from_secs(600);
    while w.stats.flushed_rows.get() < n as u64 {
        if Instant::now() > deadline || task.is_finished() {
            shutdown.cancel();
            return Err(anyhow!(
                "the worker stored {} of {n} rows",
                w.stats.flushed_rows.get()
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let work = start.elapsed();
    shutdown.cancel();
    task.await.context("worker task")?;
    if w.stats.failed.get() > 0 {
        return Err(anyhow!("{} jobs failed", w.stats.failed.get()).into());
    }
    let (_, flush_s, files) = w.stats.flush_seconds.snapshot();
    Ok((submit, work, (files, flush_s)))
}
