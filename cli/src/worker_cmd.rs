//! `offpeak worker`: a stateless worker. Pulls jobs from the broker, routes them cost-first,
//! stores results as Parquet (S3 or a directory), and acknowledges each message only after the
//! file holding its result is stored. Serves Prometheus `/metrics`, `/healthz` and `/readyz`.
//! On SIGTERM it stops pulling, finishes (or releases) what it holds, flushes, and exits 0.

use crate::config::Config;
use crate::input::load_catalog;
use crate::run::build_providers;
use crate::{invalid, output, Failure};
use anyhow::Context;
use queue::redact;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use worker::lifecycle::{self, BrokerTarget, Readiness, Signal};
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
    /// Address of the metrics and health endpoints (`/metrics`, `/healthz`, `/readyz`); port 0
    /// picks a free one. Without it, 0.0.0.0:9464 — or, when another worker on this machine
    /// already has that port, a free port (printed at start).
    #[arg(long, env = "OFFPEAK_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,
    /// This worker's name, in result file names and the metrics' `worker` label; default the
    /// pod's name (`POD_NAME`) or the host's, stable across restarts.
    #[arg(long, env = "OFFPEAK_WORKER_ID")]
    pub id: Option<String>,
    /// Send every request to the provider simulator at this URL (`offpeak sim --catalog CATALOG`)
    /// instead of the real APIs: provider `p` is served at `<URL>/p/v1`, and no API key is
    /// needed. For trying a fleet out and for tests; never set it in production.
    #[arg(long, env = "OFFPEAK_SIMULATOR", value_name = "URL")]
    pub simulator: Option<String>,
    /// Exit (0) once no job has arrived for this long, e.g. `30s` (for batch-style deployments);
    /// by default the worker runs until SIGTERM.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub exit_when_idle: Option<Duration>,
}

/// Where metrics are served unless `--metrics-addr` says otherwise.
const DEFAULT_METRICS_ADDR: ([u8; 4], u16) = ([0, 0, 0, 0], 9464);

/// How long the check of the results location at start may take.
const STORE_PROBE_TIMEOUT: Duration = Duration::from_secs(8);

pub async fn worker(args: WorkerArgs, mut cfg: Config) -> Result<u8, Failure> {
    lifecycle::raise_fd_limit();
    if let Some(c) = args.concurrency {
        cfg.worker.concurrency = c;
    }
    cfg.validate().map_err(invalid)?;
    let signing_key = cfg.signing_key().map_err(invalid)?;
    let catalog = load_catalog(&args.catalog)?;
    let (catalog, missing) = match &args.simulator {
        Some(url) => {
            tracing::warn!(simulator = %url, "simulated market: every request goes to the simulator, none to a real API");
            eprintln!("worker: simulated market at {url}; no request goes to a real API");
            (sim::served_at(&catalog, url), vec![])
        }
        None => worker::provider::without_missing_keys(&catalog),
    };
    for (provider, var) in &missing {
        tracing::warn!(%provider, variable = %var, "API key variable unset or empty: provider left out");
        eprintln!("provider {provider}: its API key variable {var} is unset or empty; left out");
    }
    if catalog.providers.is_empty() {
        return Err(anyhow::anyhow!(
            "no provider is usable: every provider's API key variable is unset ({})",
            missing
                .iter()
                .map(|(_, v)| v.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )
        .into());
    }
    let catalog = Arc::new(catalog);
    let providers = build_providers(&catalog, &cfg)?;
    let id = args.id.clone().unwrap_or_else(lifecycle::default_id);
    let signed = signing_key.is_some();
    let w = Arc::new(
        Worker::new(id.clone(), catalog, providers, cfg.worker.clone())
            .with_signing_key(signing_key),
    );
    let ready = Arc::new(Readiness::default());
    let shutdown = CancellationToken::new();
    let serve = |addr: SocketAddr| {
        lifecycle::serve_health(addr, w.clone(), ready.clone(), shutdown.clone())
    };
    let served = match args.metrics_addr {
        Some(addr) => serve(addr)
            .await
            .with_context(|| format!("binding the metrics address {addr}"))?,
        None => match serve(DEFAULT_METRICS_ADDR.into()).await {
            Ok(served) => served,
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                let any = SocketAddr::from(([0, 0, 0, 0], 0));
                let served = serve(any).await.context("binding a free metrics port")?;
                tracing::warn!(taken = %SocketAddr::from(DEFAULT_METRICS_ADDR), metrics = %served.0, "the default metrics port is taken (another worker on this machine?); serving on a free one");
                served
            }
            Err(e) => {
                return Err(anyhow::Error::new(e)
                    .context(format!(
                        "binding the metrics address {}",
                        SocketAddr::from(DEFAULT_METRICS_ADDR)
                    ))
                    .into())
            }
        },
    };
    let (metrics_addr, server) = served;
    let sink = output::open(&args.output).await?;
    // A worker that cannot store results would pay providers for answers it then loses, and
    // keep the jobs from healthy workers: check the store before anything is pulled.
    let probed = tokio::time::timeout(STORE_PROBE_TIMEOUT, store::probe(&*sink)).await;
    if let Some(why) = match probed {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e.to_string()),
        Err(_) => Some(format!(
            "no answer within {}s",
            STORE_PROBE_TIMEOUT.as_secs()
        )),
    } {
        return Err(anyhow::anyhow!(
            "the results location {} is not usable (listing, writing, reading and deleting a probe object failed); no job was pulled: {why}",
            sink.location()
        )
        .into());
    }
    let broker = BrokerTarget {
        url: args.broker.clone(),
        options: cfg.broker_options(),
    };
    tracing::info!(worker = %id, broker = %redact(&args.broker), output = %sink.location(), metrics = %metrics_addr, signed, "worker starting");
    eprintln!(
        "worker {id}: {} → {}; metrics on http://{metrics_addr}/metrics{}",
        redact(&args.broker),
        sink.location(),
        if signed {
            "; only signed messages are processed"
        } else {
            ""
        }
    );
    let watcher = {
        let (w, stop, idle) = (w.clone(), shutdown.clone(), args.exit_when_idle);
        tokio::spawn(async move {
            let signal = tokio::select! {
                s = lifecycle::shutdown_signal() => Some(s),
                _ = lifecycle::idle_for(&w, idle) => None,
                _ = stop.cancelled() => None,
            };
            match signal {
                Some(_) => tracing::info!("shutting down: finishing in-flight jobs"),
                None if !stop.is_cancelled() => tracing::info!("idle: shutting down"),
                None => {}
            }
            stop.cancel();
            signal
        })
    };
    let ran = lifecycle::run_connected(w.clone(), &broker, sink, shutdown.clone(), ready).await;
    shutdown.cancel();
    let signal = watcher.await.ok().flatten();
    let _ = server.await;
    let reconnects = ran?;
    let s = &w.stats;
    eprintln!(
        "worker {id}: stopped; {} succeeded, {} failed, {} deferrals, {} rows stored, {reconnects} reconnects",
        s.succeeded.get(),
        s.failed.get(),
        s.deferrals.get(),
        s.flushed_rows.get()
    );
    Ok(if signal == Some(Signal::Interrupt) {
        130
    } else {
        0
    })
}
