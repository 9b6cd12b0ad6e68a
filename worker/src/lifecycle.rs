//! A worker process's lifecycle around [`Worker::run`]: the health and metrics endpoints
//! (`/metrics`, `/healthz`, `/readyz`), staying connected to the broker (a lost connection is
//! reconnected in place, with backoff, instead of ending the process), the signals that stop it,
//! and the idle timer of batch-style deployments. `offpeak worker` wires these together;
//! `offpeak run` uses the signals.

use crate::Worker;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use queue::BrokerOptions;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use store::ResultSink;
use tokio_util::sync::CancellationToken;

/// Whether the worker is ready for work (connected to its broker): what `/readyz` answers.
#[derive(Debug, Default)]
pub struct Readiness(AtomicBool);

impl Readiness {
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Relaxed);
    }

    pub fn get(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Clone)]
struct Health {
    worker: Arc<Worker>,
    ready: Arc<Readiness>,
}

/// Binds `addr` and serves `/metrics` (Prometheus text), `/healthz` and `/readyz` until `stop`
/// fires. Returns the bound address (for port 0) and the server's task.
pub async fn serve_health(
    addr: SocketAddr,
    worker: Arc<Worker>,
    ready: Arc<Readiness>,
    stop: CancellationToken,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let app = axum::Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(Health { worker, ready });
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
    });
    Ok((bound, server))
}

async fn metrics(State(h): State<Health>) -> ([(&'static str, &'static str); 1], String) {
    (
        [("content-type", "text/plain; version=0.0.4")],
        h.worker.stats.render_prometheus(&h.worker.id),
    )
}

async fn readyz(State(h): State<Health>) -> (StatusCode, &'static str) {
    if h.ready.get() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

/// Where the worker pulls from.
#[derive(Debug, Clone)]
pub struct BrokerTarget {
    pub url: String,
    pub options: BrokerOptions,
}

/// Connects to the broker, then runs the worker until `shutdown` fires. When the broker closes
/// the consumer (a lost connection), the rows the worker held are stored (their acks may fail:
/// the broker redelivers those) and it connects again, backing off from 0.5 s to 10 s, until it
/// succeeds or is told to stop; it is not ready meanwhile. Returns how often it reconnected.
pub async fn run_connected(
    w: Arc<Worker>,
    broker: &BrokerTarget,
    sink: Arc<dyn ResultSink>,
    shutdown: CancellationToken,
    ready: Arc<Readiness>,
) -> Result<u32, queue::QueueError> {
    let connect = || async {
        let q = queue::connect(&broker.url, broker.options.clone()).await?;
        let c = q.consume(w.consume_options()).await?;
        Ok::<_, queue::QueueError>((q, c))
    };
    // The connection behind a consumer stays open while its queue is held.
    let (mut _connection, first) = connect().await?;
    let mut consumer = Some(first);
    let mut reconnects = 0u32;
    ready.set(true);
    while let Some(c) = consumer.take() {
        w.clone().run(c, sink.clone(), shutdown.clone()).await;
        if shutdown.is_cancelled() {
            break;
        }
        ready.set(false);
        tracing::warn!(worker = %w.id, "the broker closed the consumer (connection lost); reconnecting");
        let mut delay = Duration::from_millis(500);
        while !shutdown.is_cancelled() {
            match connect().await {
                Ok((q, c)) => {
                    reconnects += 1;
                    _connection = q;
                    consumer = Some(c);
                    ready.set(true);
                    tracing::info!(worker = %w.id, reconnects, "reconnected to the broker");
                    break;
                }
                Err(e) => {
                    tracing::warn!(worker = %w.id, error = %e, "reconnecting failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = shutdown.cancelled() => {}
                    }
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
            }
        }
    }
    ready.set(false);
    Ok(reconnects)
}

/// A signal that stops the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGINT (ctrl-c): exit 130 once stopped, the shell's convention.
    Interrupt,
    /// SIGTERM: an orderly stop (a deployment scaling down); exit 0 once stopped.
    Terminate,
}

/// Resolves on ctrl-c or SIGTERM, saying which.
pub async fn shutdown_signal() -> Signal {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut term) = signal(SignalKind::terminate()) else {
            let _ = tokio::signal::ctrl_c().await;
            return Signal::Interrupt;
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => Signal::Interrupt,
            _ = term.recv() => Signal::Terminate,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        Signal::Interrupt
    }
}

/// Resolves once nothing has happened for `idle` (never when `None`): no job finished,
/// deferred, stored or in flight.
pub async fn idle_for(w: &Worker, idle: Option<Duration>) {
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

/// A worker name for this process: `<hostname>-<pid>`, the host name cut to letters, digits
/// and `-`.
pub fn default_id() -> String {
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

/// Raises this process's soft limit on open files to the hard limit: every job in flight may
/// hold a socket, and the common soft limit (1,024) is far below a worker at thousands of jobs
/// in flight. Child processes inherit the raised limit.
pub fn raise_fd_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => tracing::debug!(limit = n, "open-file limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
    }
}
