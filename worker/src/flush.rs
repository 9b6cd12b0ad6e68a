//! The flusher: one task per worker that buffers finished rows per run, writes a Parquet file when
//! a buffer is big or old enough (or at shutdown), and settles the messages behind a file only
//! after the file is durable. While the store is down it keeps the rows and retries; the bounded
//! channel in front of it then pushes back on the job tasks instead of growing memory. A store
//! that refuses for good (a wrong secret, a missing bucket) is not retried: the flusher records
//! why in [`StoreFault`], tells the worker to stop pulling, and releases the messages it holds
//! so that healthy workers take them.

use crate::recent::RecentlyStored;
use crate::stats::Stats;
use futures::StreamExt;
use queue::Delivery;
use schemas::ResultRow;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use store::{encode_parquet, ResultSink};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Why the results store refused writes for good, if it did. The worker is not ready while it
/// is set, and pulls nothing until the store works again.
#[derive(Debug, Default)]
pub struct StoreFault(Mutex<Option<String>>);

impl StoreFault {
    /// Records the store's refusal (the first one is kept).
    pub fn set(&self, why: String) {
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        g.get_or_insert(why);
    }

    /// The store works again.
    pub fn clear(&self) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// Why the store is unusable, if it is.
    pub fn get(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// How the flusher hears that the worker is stopping, and tells it that the store refused.
#[derive(Debug, Clone)]
pub struct FlushControl {
    /// Fires when the worker stops (a signal, the idle timer, a lost broker): a failing store is
    /// then tried a few more times, not forever.
    pub stopping: CancellationToken,
    /// Fired by the flusher when the store refused for good: the worker stops pulling.
    pub halt: CancellationToken,
    pub fault: Arc<StoreFault>,
    /// The jobs this worker stored, told of every file once it is durable.
    pub recent: Arc<RecentlyStored>,
}

impl FlushControl {
    fn refused(&self, why: String) {
        self.fault.set(why);
        self.halt.cancel();
    }

    fn giving_up(&self) -> bool {
        self.stopping.is_cancelled() || self.halt.is_cancelled()
    }
}

/// When to write a results file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FlushConfig {
    /// Rows per file at most.
    pub max_rows: usize,
    /// Approximate bytes of row data per file at most.
    pub max_bytes: usize,
    /// Age of the oldest buffered row that forces a flush (seconds). Must stay below the
    /// broker's redelivery timeout.
    pub max_age_s: f64,
}

impl Default for FlushConfig {
    fn default() -> Self {
        FlushConfig {
            max_rows: 1000,
            max_bytes: 32 << 20,
            max_age_s: 5.0,
        }
    }
}

/// What to do with a message once its row is durable.
#[derive(Debug, Clone)]
pub enum Settlement {
    Ack,
    /// The job failed: also put the message on the dead-letter subject/queue.
    DeadLetter(String),
}

/// A finished job: its row and the delivery to settle after the row is stored.
#[derive(Debug)]
pub struct Finished {
    pub row: ResultRow,
    pub delivery: Delivery,
    pub settlement: Settlement,
}

struct Buffer {
    rows: Vec<ResultRow>,
    pending: Vec<(Delivery, Settlement)>,
    bytes: usize,
    since: Instant,
}

/// Starts the flusher; it ends once every sender is dropped and the last rows are stored.
pub fn spawn_flusher(
    sink: Arc<dyn ResultSink>,
    worker_id: String,
    cfg: FlushConfig,
    stats: Arc<Stats>,
    control: FlushControl,
) -> (mpsc::Sender<Finished>, tokio::task::JoinHandle<()>) {
    let (tx, mut rx) = mpsc::channel::<Finished>(cfg.max_rows.max(16));
    // File names must never collide, not even for workers sharing a name (the default is the
    // host's, stable across restarts) on one host, or a worker restarted under the same name:
    // the start time (ms) and the process id go into every name.
    let worker_id = format!(
        "{worker_id}-{}-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis()),
        std::process::id()
    );
    let task = tokio::spawn(async move {
        let mut buffers: HashMap<String, Buffer> = HashMap::new();
        let mut seq = 0u64;
        let mut flushing = Flushing {
            tasks: JoinSet::new(),
            sink,
            worker_id,
            stats,
            control,
        };
        let max_age = Duration::from_secs_f64(cfg.max_age_s.max(0.05));
        loop {
            let oldest = buffers.values().map(|b| b.since).min();
            let deadline = oldest.map(|t| t + max_age);
            let msg = tokio::select! {
                m = rx.recv() => m,
                _ = sleep_opt(deadline) => {
                    let now = Instant::now();
                    let due: Vec<String> = buffers.iter().filter(|(_, b)| b.since + max_age <= now).map(|(k, _)| k.clone()).collect();
                    for run in due {
                        if let Some(b) = buffers.remove(&run) {
                            flushing.start(&mut seq, run, b).await;
                        }
                    }
                    continue;
                }
            };
            let Some(o) = msg else { break };
            let run = o.row.run_id.clone();
            let b = buffers.entry(run.clone()).or_insert_with(|| Buffer {
                rows: vec![],
                pending: vec![],
                bytes: 0,
                since: Instant::now(),
            });
            b.bytes += o.row.approx_text_bytes();
            b.rows.push(o.row);
            b.pending.push((o.delivery, o.settlement));
            if b.rows.len() >= cfg.max_rows || b.bytes >= cfg.max_bytes {
                if let Some(b) = buffers.remove(&run) {
                    flushing.start(&mut seq, run, b).await;
                }
            }
        }
        for (run, b) in buffers.drain() {
            flushing.start(&mut seq, run, b).await;
        }
        while flushing.tasks.join_next().await.is_some() {}
    });
    (tx, task)
}

/// Files stored at once: one uploads (and has its messages settled) while the next fills, so a
/// worker never stalls on a flush; more would only let rows and unsettled messages pile up
/// behind a slow store.
const MAX_FLUSHES: usize = 2;

/// The flushes in progress, in tasks of their own.
struct Flushing {
    tasks: JoinSet<()>,
    sink: Arc<dyn ResultSink>,
    worker_id: String,
    stats: Arc<Stats>,
    control: FlushControl,
}

impl Flushing {
    /// Starts storing `b` as the next file once fewer than [`MAX_FLUSHES`] are in progress.
    async fn start(&mut self, seq: &mut u64, run: String, b: Buffer) {
        while self.tasks.len() >= MAX_FLUSHES {
            // Both slots busy (the store is slow or down): keep this file's messages alive
            // while it waits its turn.
            tokio::select! {
                _ = self.tasks.join_next() => {}
                _ = tokio::time::sleep(KEEP_ALIVE) => keep_alive(&b.pending).await,
            }
        }
        *seq += 1;
        let (sink, stats, worker, seq, control) = (
            self.sink.clone(),
            self.stats.clone(),
            self.worker_id.clone(),
            *seq,
            self.control.clone(),
        );
        self.tasks.spawn(async move {
            flush(&*sink, &worker, seq, &run, b, &stats, &control).await;
        });
    }
}

async fn sleep_opt(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// Writes one buffer and settles its messages. Retries a failing store with backoff until it
/// works; once the worker stops it gives up after a few tries. A store that refuses for good is
/// not retried: the worker is told to stop pulling. Giving up releases the messages, so the
/// broker hands them to another worker at once.
async fn flush(
    sink: &dyn ResultSink,
    worker: &str,
    seq: u64,
    run: &str,
    b: Buffer,
    stats: &Stats,
    control: &FlushControl,
) {
    let started = Instant::now();
    let rows = b.rows.len();
    let late = b
        .rows
        .iter()
        .filter(|r| r.completed_at > r.deadline)
        .count() as u64;
    let jobs: Vec<(String, String)> = b
        .rows
        .iter()
        .map(|r| (r.run_id.clone(), r.job_id.clone()))
        .collect();
    // Encoding takes milliseconds of CPU: off the runtime's threads, which serve the jobs.
    let encoded = tokio::task::spawn_blocking(move || encode_parquet(&b.rows))
        .await
        .unwrap_or_else(|e| Err(store::SinkError::Parquet(format!("encoder panicked: {e}"))));
    let bytes = match encoded {
        Ok(bytes) => bytes,
        Err(e) => {
            tracing::error!(run_id = run, error = %e, "cannot encode results; messages left for redelivery");
            return;
        }
    };
    let name = format!("part-{worker}-{seq:06}.parquet");
    let mut delay = Duration::from_millis(200);
    let mut tries = 0;
    loop {
        // Ask for more time on every message while the store is slow or down.
        if tries > 0 {
            keep_alive(&b.pending).await;
        }
        match sink.put(run, &name, bytes.clone()).await {
            Ok(()) => break,
            Err(e) if e.is_permanent() => {
                stats.flush_errors.inc();
                tracing::error!(run_id = run, file = %name, error = %e, rows, "the results store refused the file; it is not retried: this worker stops pulling and releases its jobs");
                control.refused(e.to_string());
                release(run, b.pending).await;
                return;
            }
            Err(e) => {
                tries += 1;
                stats.flush_errors.inc();
                tracing::warn!(run_id = run, file = %name, error = %e, tries, "storing results failed; retrying");
                if control.giving_up() && tries >= 5 {
                    tracing::error!(
                        run_id = run,
                        rows,
                        "giving up while stopping; the messages are released for redelivery"
                    );
                    release(run, b.pending).await;
                    return;
                }
                tokio::select! {
                    _ = wait_keeping_alive(&b.pending, delay) => {}
                    _ = control.stopping.cancelled(), if !control.giving_up() => {}
                    _ = control.halt.cancelled(), if !control.giving_up() => {}
                }
                delay = (delay * 2).min(Duration::from_secs(10));
            }
        }
    }
    for (run_id, job_id) in &jobs {
        control.recent.insert(run_id, job_id);
    }
    stats.flushed_rows.add(rows as u64);
    stats.deadline_misses.add(late);
    stats
        .last_stored_unix_s
        .set(chrono::Utc::now().timestamp().max(0) as u64);
    stats.flush_seconds.observe(started.elapsed().as_secs_f64());
    tracing::debug!(run_id = run, file = %name, rows, "results stored");
    settle(run, b.pending).await;
}

/// Hands a file's messages back to the broker unsettled: their rows were not stored.
async fn release(run: &str, pending: Vec<(Delivery, Settlement)>) {
    futures::stream::iter(pending)
        .for_each_concurrent(SETTLE_CONCURRENCY, |(d, _)| async move {
            if let Err(e) = d.release().await {
                tracing::debug!(run_id = run, error = %e, "releasing a message failed; the broker redelivers it after its ack wait");
            }
        })
        .await;
}

/// Settles a stored file's messages. Acks go out unconfirmed but for the last one, sent after
/// all the others and confirmed: its confirmation covers the whole file (the broker takes a
/// connection's acks in order), so a file of a thousand rows costs one ack round trip, not a
/// thousand. Dead letters are confirmed one by one (they are rare).
async fn settle(run: &str, pending: Vec<(Delivery, Settlement)>) {
    let (mut acks, dead): (Vec<_>, Vec<_>) = pending
        .into_iter()
        .partition(|(_, s)| matches!(s, Settlement::Ack));
    let warn = |e: queue::QueueError| {
        tracing::warn!(run_id = run, error = %e, "settling a stored result failed; it may be redelivered and appear twice");
    };
    let last = acks.pop();
    futures::stream::iter(acks)
        .for_each_concurrent(SETTLE_CONCURRENCY, |(d, _)| async move {
            if let Err(e) = d.ack_unconfirmed().await {
                warn(e);
            }
        })
        .await;
    if let Some((d, _)) = last {
        if let Err(e) = d.ack().await {
            warn(e);
        }
    }
    futures::stream::iter(dead)
        .for_each_concurrent(SETTLE_CONCURRENCY, |(d, s)| async move {
            if let Settlement::DeadLetter(reason) = s {
                if let Err(e) = d.dead_letter(&reason).await {
                    warn(e);
                }
            }
        })
        .await;
}

/// Settlements of one stored file in progress at once.
const SETTLE_CONCURRENCY: usize = 256;

/// How often messages whose rows wait for the store are reported in progress: well inside the
/// shortest ack wait (5 s plus the request timeout), so the broker never hands them to another
/// worker while this one still holds their rows.
const KEEP_ALIVE: Duration = Duration::from_secs(2);

/// Tells the broker every message of `pending` is still being worked on.
async fn keep_alive(pending: &[(Delivery, Settlement)]) {
    futures::stream::iter(pending)
        .for_each_concurrent(SETTLE_CONCURRENCY, |(d, _)| async move {
            let _ = d.in_progress().await;
        })
        .await;
}

/// Sleeps `total` between two upload attempts, keeping `pending` alive every [`KEEP_ALIVE`].
async fn wait_keeping_alive(pending: &[(Delivery, Settlement)], total: Duration) {
    let until = Instant::now() + total;
    loop {
        let next = Instant::now() + KEEP_ALIVE;
        if next >= until {
            tokio::time::sleep_until(until).await;
            return;
        }
        tokio::time::sleep_until(next).await;
        keep_alive(pending).await;
    }
}
