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

/// Whether the worker is connected to its broker; `/readyz` answers 200 only while it is and
/// its results store works ([`Worker::store_fault`]).
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
    let ready = h.ready.get() && h.worker.store_fault.get().is_none();
    let mut text = h.worker.stats.render_prometheus(&h.worker.id);
    text.push_str(&crate::stats::render_state_gauges(
        &h.worker.id,
        ready,
        &h.worker.router.circuits(chrono::Utc::now()),
    ));
    ([("content-type", "text/plain; version=0.0.4")], text)
}

async fn readyz(State(h): State<Health>) -> (StatusCode, String) {
    match (h.ready.get(), h.worker.store_fault.get()) {
        (_, Some(why)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: the results store refuses writes: {why}\n"),
        ),
        (false, None) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: not connected to the broker\n".into(),
        ),
        (true, None) => (StatusCode::OK, "ready\n".into()),
    }
}

/// Where the worker pulls from.
#[derive(Debug, Clone)]
pub struct BrokerTarget {
    pub url: String,
    pub options: BrokerOptions,
}

/// Connects to the broker, then runs the worker until `shutdown` fires. The worker is ready
/// only while it is connected and its results store works:
/// - at start, and whenever the broker closes the consumer (a lost connection), it connects
///   (again), backing off from 0.5 s to 10 s, until it succeeds or is told to stop; the rows it
///   held are stored first (their acks may fail: the broker redelivers those);
/// - when the store refuses a write for good (a revoked secret, a deleted bucket), the worker
///   has stopped pulling and released what it held; the connection is dropped (so the broker
///   hands every unsettled message to other workers at once) and the store is checked every
///   [`STORE_RECHECK`] until it works again.
///
/// Returns how often it reconnected.
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
    let mut reconnects = 0u32;
    let mut first = true;
    while !shutdown.is_cancelled() {
        // The connection behind a consumer stays open while its queue is held.
        let Some((connection, consumer)) = with_backoff(&shutdown, first, &w.id, connect).await?
        else {
            break;
        };
        if !first {
            reconnects += 1;
            tracing::info!(worker = %w.id, reconnects, "reconnected to the broker");
        }
        first = false;
        ready.set(true);
        let sampler = tokio::spawn(sample_depth(w.clone(), connection.clone()));
        w.clone()
            .run_with_queue(
                consumer,
                sink.clone(),
                shutdown.clone(),
                Some(connection.clone()),
            )
            .await;
        ready.set(false);
        sampler.abort();
        drop(connection);
        if shutdown.is_cancelled() {
            break;
        }
        if let Some(why) = w.store_fault.get() {
            eprintln!("worker {}: the results store refuses writes ({why}); stopped pulling, released the jobs held, not ready; checking the store every {}s", w.id, STORE_RECHECK.as_secs());
            wait_for_store(&w, &*sink, &shutdown).await;
            if w.store_fault.get().is_none() {
                tracing::info!(worker = %w.id, "the results store works again; pulling again");
            }
        } else {
            tracing::warn!(worker = %w.id, "the broker closed the consumer (connection lost); reconnecting");
        }
    }
    ready.set(false);
    Ok(reconnects)
}

/// How often the queue's depth is read for `offpeak_queue_depth`.
pub const DEPTH_SAMPLE: Duration = Duration::from_secs(15);

/// Reads the queue's depth into the worker's gauge every [`DEPTH_SAMPLE`] while connected (a
/// backend that cannot count leaves it alone; a failed read is retried at the next sample).
async fn sample_depth(w: Arc<Worker>, q: Arc<dyn queue::Queue>) {
    loop {
        if let Ok(Some(d)) = q.depth().await {
            w.stats.queue_depth.set(d);
        }
        tokio::time::sleep(DEPTH_SAMPLE).await;
    }
}

/// How often a worker whose store refused writes checks it again.
pub const STORE_RECHECK: Duration = Duration::from_secs(5);

/// Checks the store every [`STORE_RECHECK`] (the same probe as at start) until it works, then
/// clears the worker's store fault; returns early on shutdown.
async fn wait_for_store(w: &Worker, sink: &dyn ResultSink, shutdown: &CancellationToken) {
    while !shutdown.is_cancelled() {
        tokio::select! {
            _ = tokio::time::sleep(STORE_RECHECK) => {}
            _ = shutdown.cancelled() => return,
        }
        match tokio::time::timeout(STORE_RECHECK, store::probe(sink)).await {
            Ok(Ok(())) => {
                w.store_fault.clear();
                return;
            }
            Ok(Err(e)) => {
                tracing::warn!(worker = %w.id, error = %e, "the results store still fails; not pulling")
            }
            Err(_) => {
                tracing::warn!(worker = %w.id, "the results store does not answer; not pulling")
            }
        }
    }
}

/// Calls `connect` until it succeeds, backing off from 0.5 s to 10 s; `None` once `shutdown`
/// fires. A worker started before its broker waits for it (saying so) rather than exiting; one
/// the broker refuses at start (credentials, permissions) gets the error at once, having pulled
/// nothing.
async fn with_backoff<T, F, Fut>(
    shutdown: &CancellationToken,
    first: bool,
    worker: &str,
    connect: F,
) -> Result<Option<T>, queue::QueueError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, queue::QueueError>>,
{
    let mut delay = Duration::from_millis(500);
    let mut said = false;
    loop {
        let attempt = tokio::select! {
            r = connect() => r,
            _ = shutdown.cancelled() => return Ok(None),
        };
        match attempt {
            Ok(t) => return Ok(Some(t)),
            Err(e) if first && e.is_refused() => return Err(e),
            Err(e) => {
                if first && !said {
                    eprintln!("worker {worker}: cannot reach the broker yet ({e}); waiting for it, not ready");
                    said = true;
                }
                tracing::warn!(%worker, error = %e, "connecting to the broker failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.cancelled() => return Ok(None),
                }
                delay = (delay * 2).min(Duration::from_secs(10));
            }
        }
    }
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

/// A worker name for this process: the pod's or host's name (`POD_NAME`, else `/etc/hostname`),
/// cut to letters, digits and `-`. It is stable across restarts, so the metrics' `worker` label
/// does not start new series each time; result file names add the start time and process id.
pub fn default_id() -> String {
    let host = std::env::var("POD_NAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "worker".into());
    host.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
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
