//! `offpeak worker`: a stateless worker. Pulls jobs from the broker, routes them cost-first,
//! stores results as Parquet (S3 or a directory), and acknowledges each message only after the
//! file holding its result is stored. Serves Prometheus `/metrics`, `/healthz` and `/readyz`.
//! On SIGTERM it stops pulling, finishes (or releases) what it holds, flushes, and exits 0.

use crate::config::Config;
use crate::input::load_catalog;
use crate::run::{build_providers, reqwest_client, shutdown_signal, StopSignal, EXIT_INTERRUPTED};
use crate::submit::redact;
use crate::{invalid, store, Failure};
use anyhow::Context;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use queue::Queue;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use worker::Worker;

/// Arguments of `offpeak worker`.
#[derive(Debug, clap::Args)]
pub struct WorkerArgs {
    /// Broker URL: `nats://host:4222` (JetStream) or `amqp://user:pass@host:5672/%2f` (RabbitMQ).
    #[arg(long, env = "OFFPEAK_BROKER")]
    pub broker: String,
    /// Where results go: `s3://bucket/prefix` (endpoint from `AWS_ENDPOINT_URL` for
    /// S3-compatible stores) or a directory.
    #[arg(long, env = "OFFPEAK_OUTPUT")]
    pub output: String,
    /// Provider catalog (TOML); API keys come from the environment variables it names.
    #[arg(long, env = "OFFPEAK_CATALOG")]
    pub catalog: PathBuf,
    /// Jobs in flight (overrides the config's worker.concurrency).
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Address of the metrics and health endpoints (`/metrics`, `/healthz`, `/readyz`).
    #[arg(long, env = "OFFPEAK_METRICS_ADDR", default_value = "0.0.0.0:9464")]
    pub metrics_addr: SocketAddr,
    /// This worker's name, in result file names and metrics; default `<hostname>-<pid>`.
    #[arg(long, env = "OFFPEAK_WORKER_ID")]
    pub id: Option<String>,
    /// Exit (0) once no job has arrived for this long, e.g. `30s` (for batch-style deployments);
    /// by default the worker runs until SIGTERM.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub exit_when_idle: Option<Duration>,
}

#[derive(Clone)]
struct Shared {
    worker: Arc<Worker>,
    ready: Arc<AtomicBool>,
}

pub async fn worker(args: WorkerArgs, mut cfg: Config) -> Result<u8, Failure> {
    crate::run::raise_fd_limit();
    if let Some(c) = args.concurrency {
        cfg.worker.concurrency = c;
    }
    cfg.validate().map_err(invalid)?;
    let catalog = Arc::new(load_catalog(&args.catalog)?);
    let http = reqwest_client(&cfg)?;
    let providers = build_providers(&catalog, &http, &cfg)?;
    let id = args.id.clone().unwrap_or_else(default_id);
    let w = Arc::new(Worker::new(
        id.clone(),
        catalog,
        providers,
        cfg.worker.clone(),
    ));
    let ready = Arc::new(AtomicBool::new(false));
    let shared = Shared {
        worker: w.clone(),
        ready: ready.clone(),
    };
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(shared);
    let listener = tokio::net::TcpListener::bind(args.metrics_addr)
        .await
        .with_context(|| format!("binding the metrics address {}", args.metrics_addr))?;
    let metrics_addr = listener.local_addr()?;
    let shutdown = CancellationToken::new();
    let server = {
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await;
        })
    };

    let sink = store::open(&args.output).await?;
    let queue: Arc<dyn Queue> = queue::connect(&args.broker, cfg.broker_options()).await?;
    let consumer = queue.consume(w.consume_options()).await?;
    // The connection behind the consumer stays open while this is held.
    let mut _connection = queue;
    ready.store(true, Ordering::Relaxed);
    tracing::info!(worker = %id, broker = %redact(&args.broker), output = %sink.location(), metrics = %metrics_addr, "worker started");
    eprintln!(
        "worker {id}: {} → {}; metrics on http://{metrics_addr}/metrics",
        redact(&args.broker),
        sink.location()
    );

    let stop = shutdown.clone();
    // Resolves to the signal that stopped the worker, if one did.
    let watcher = {
        let w = w.clone();
        let idle = args.exit_when_idle;
        tokio::spawn(async move {
            let signal = tokio::select! {
                s = shutdown_signal() => {
                    tracing::info!(signal = ?s, "shutting down: finishing in-flight jobs");
                    Some(s)
                }
                _ = idle_for(&w, idle) => {
                    tracing::info!("idle: shutting down");
                    None
                }
                _ = stop.cancelled() => None,
            };
            stop.cancel();
            signal
        })
    };
    // The loop ends on its own only when the broker closed the consumer (a lost connection):
    // the rows it held are stored (their acks may fail: the broker redelivers those), and the
    // worker connects again, with backoff, until it succeeds or is told to stop.
    let mut consumer = Some(consumer);
    let mut reconnects = 0u32;
    while let Some(c) = consumer.take() {
        w.clone().run(c, sink.clone(), shutdown.clone()).await;
        if shutdown.is_cancelled() {
            break;
        }
        ready.store(false, Ordering::Relaxed);
        tracing::warn!(worker = %id, "the broker closed the consumer (connection lost); reconnecting");
        eprintln!("worker {id}: connection to the broker lost; reconnecting");
        let mut delay = Duration::from_millis(500);
        while !shutdown.is_cancelled() {
            let attempt = async {
                let q = queue::connect(&args.broker, cfg.broker_options()).await?;
                let c = q.consume(w.consume_options()).await?;
                Ok::<_, queue::QueueError>((q, c))
            };
            match attempt.await {
                Ok((q, c)) => {
                    reconnects += 1;
                    _connection = q;
                    consumer = Some(c);
                    ready.store(true, Ordering::Relaxed);
                    tracing::info!(worker = %id, reconnects, "reconnected to the broker");
                    eprintln!("worker {id}: reconnected to the broker");
                    break;
                }
                Err(e) => {
                    tracing::warn!(worker = %id, error = %e, "reconnecting failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = shutdown.cancelled() => {}
                    }
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
            }
        }
    }
    ready.store(false, Ordering::Relaxed);
    shutdown.cancel();
    let signal = watcher.await.ok().flatten();
    let _ = server.await;
    let s = &w.stats;
    eprintln!(
        "worker {id}: stopped; {} succeeded, {} failed, {} deferrals, {} rows stored",
        s.succeeded.get(),
        s.failed.get(),
        s.deferrals.get(),
        s.flushed_rows.get()
    );
    // SIGTERM is the orderly way to stop a worker (0); ctrl-c is an interruption (130).
    Ok(if signal == Some(StopSignal::Interrupt) {
        EXIT_INTERRUPTED
    } else {
        0
    })
}

/// Resolves once nothing has happened for `idle` (never when `None`).
async fn idle_for(w: &Worker, idle: Option<Duration>) {
    let Some(idle) = idle else {
        return std::future::pending().await;
    };
    let activity = |w: &Worker| {
        let s = &w.stats;
        s.finished() + s.deferrals.get() + s.flushed_rows.get() + s.in_flight.get()
    };
    let mut last = activity(w);
    let mut since = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = activity(w);
        if now != last || w.stats.in_flight.get() > 0 {
            last = now;
            since = tokio::time::Instant::now();
        } else if since.elapsed() >= idle {
            return;
        }
    }
}

fn default_id() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "worker".into());
    let clean: String = host
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    format!("{clean}-{}", std::process::id())
}

async fn metrics(State(s): State<Shared>) -> ([(&'static str, &'static str); 1], String) {
    (
        [("content-type", "text/plain; version=0.0.4")],
        s.worker.stats.render_prometheus(&s.worker.id),
    )
}

async fn readyz(State(s): State<Shared>) -> (StatusCode, &'static str) {
    if s.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}
