//! The worker loop: pull a delivery, route it with the pure policy, call the chosen provider,
//! and hand the row plus the delivery to the flusher, which settles the message only after the
//! row is durable. Deferral puts the message back on the broker with a delay; nothing waits in
//! memory longer than a short inline pause.

use crate::batch::{BatchConfig, Batcher, Poll};
use crate::fleet::FleetConfig;
use crate::flush::{spawn_flusher, Finished, FlushConfig, FlushControl, Settlement, StoreFault};
use crate::provider::{ChatRequest, Completion, Provider, ProviderError};
use crate::recent::RecentlyStored;
use crate::stats::Stats;
use crate::throttle::Throttle;
use chrono::{DateTime, Utc};
use queue::{ConsumeOptions, Consumer, Delivery, Queue};
use router::{
    BreakerConfig, CallOutcome, Decision, DeferReason, ErrorClass, GiveUp, History, PolicyConfig,
    Retry, RouteReason, Router, RouterConfig, Ticket,
};
use schemas::catalog::{CachePrice, Price};
use schemas::{
    Catalog, Envelope, ProviderKind, ResultRow, ResultStatus, Route, SigningKey, SCHEMA_VERSION,
};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use store::ResultSink;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Default of [`WorkerConfig::max_prompt_bytes`]: 4 MiB, about a million tokens.
pub const DEFAULT_MAX_PROMPT_BYTES: usize = 4 << 20;

/// A worker's settings (the `[worker]` table of the config file).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerConfig {
    /// Jobs processed at once.
    pub concurrency: usize,
    /// Failed provider attempts after which a job ends as `failed`.
    pub max_attempts: u32,
    /// Deliveries of one message that ended without any settlement (workers crash on it or time
    /// out) after which it is treated as poison and dead-lettered. Deferrals do not count.
    pub max_deliveries: u32,
    /// Timeout of one provider request (seconds).
    pub request_timeout_s: f64,
    /// Waits shorter than this are taken inline instead of deferring through the broker (seconds).
    pub inline_wait_s: f64,
    /// How long shutdown waits for in-flight jobs before releasing them (seconds).
    pub shutdown_grace_s: f64,
    /// Largest prompt accepted, in bytes of the job's `messages` as JSON. A bigger job ends as a
    /// `failed` row (`error_kind = "limit"`) and a dead letter without reaching any provider.
    pub max_prompt_bytes: usize,
    /// Largest provider answer read, in bytes; the body is cut off as soon as it passes this
    /// (a transient error, retried and eventually a `failed` row).
    pub max_response_bytes: usize,
    pub policy: PolicyConfig,
    pub breaker: BreakerConfig,
    pub flush: FlushConfig,
    /// How jobs routed to a provider's batch API are gathered and watched.
    pub batch: BatchConfig,
    /// How the workers sharing the providers' accounts find each other.
    pub fleet: FleetConfig,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            concurrency: 64,
            max_attempts: 8,
            max_deliveries: 20,
            request_timeout_s: 120.0,
            inline_wait_s: 0.5,
            shutdown_grace_s: 30.0,
            max_prompt_bytes: DEFAULT_MAX_PROMPT_BYTES,
            max_response_bytes: crate::provider::DEFAULT_MAX_RESPONSE_BYTES,
            policy: PolicyConfig::default(),
            breaker: BreakerConfig::default(),
            flush: FlushConfig::default(),
            batch: BatchConfig::default(),
            fleet: FleetConfig::default(),
        }
    }
}

impl WorkerConfig {
    /// How the provider clients talk HTTP.
    pub fn client_options(&self) -> crate::provider::ClientOptions {
        crate::provider::ClientOptions {
            timeout: Duration::from_secs_f64(self.request_timeout_s),
            max_response_bytes: self.max_response_bytes,
        }
    }

    /// The router's part of the settings.
    pub fn router(&self) -> RouterConfig {
        RouterConfig {
            policy: self.policy.clone(),
            breaker: self.breaker.clone(),
            max_attempts: self.max_attempts,
        }
    }
}

/// A configuration value out of its range; `field` is its path in the config file
/// (`worker.request_timeout_s`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: {field} {reason}")]
pub struct InvalidConfig {
    /// The key at fault, as written in the config file.
    pub field: String,
    /// What it must be, and what it was.
    pub reason: String,
}

impl InvalidConfig {
    fn new(field: &str, reason: String) -> Self {
        InvalidConfig {
            field: field.to_string(),
            reason,
        }
    }
}

/// Checks that `v` (seconds) is a finite number, above zero when `positive`, else at least zero.
fn seconds(field: &str, v: f64, positive: bool) -> Result<(), InvalidConfig> {
    let ok = v.is_finite() && if positive { v > 0.0 } else { v >= 0.0 };
    if ok {
        return Ok(());
    }
    let what = if positive { "above 0" } else { "0 or more" };
    Err(InvalidConfig::new(
        field,
        format!("must be a finite number {what}, got {v}"),
    ))
}

/// Checks that a count is at least 1.
fn at_least_one(field: &str, v: u64) -> Result<(), InvalidConfig> {
    if v >= 1 {
        Ok(())
    } else {
        Err(InvalidConfig::new(
            field,
            format!("must be at least 1, got {v}"),
        ))
    }
}

impl WorkerConfig {
    /// Checks every value against its range (counts at least 1, times finite and not negative),
    /// so a bad file or override is refused up front, naming the key, instead of panicking or
    /// stalling later.
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        at_least_one("worker.concurrency", self.concurrency as u64)?;
        at_least_one("worker.max_attempts", u64::from(self.max_attempts))?;
        at_least_one("worker.max_deliveries", u64::from(self.max_deliveries))?;
        seconds("worker.request_timeout_s", self.request_timeout_s, true)?;
        seconds("worker.inline_wait_s", self.inline_wait_s, false)?;
        seconds("worker.shutdown_grace_s", self.shutdown_grace_s, false)?;
        at_least_one("worker.max_prompt_bytes", self.max_prompt_bytes as u64)?;
        at_least_one("worker.max_response_bytes", self.max_response_bytes as u64)?;
        let p = &self.policy;
        seconds("worker.policy.safety_margin_s", p.safety_margin_s, false)?;
        seconds("worker.policy.latency_base_s", p.latency_base_s, false)?;
        seconds(
            "worker.policy.latency_per_output_token_s",
            p.latency_per_output_token_s,
            false,
        )?;
        seconds(
            "worker.policy.standard_max_defer_s",
            p.standard_max_defer_s,
            false,
        )?;
        seconds("worker.policy.max_defer_s", p.max_defer_s, true)?;
        seconds("worker.policy.batch_fallback_s", p.batch_fallback_s, false)?;
        at_least_one("worker.batch.max_jobs", self.batch.max_jobs as u64)?;
        seconds("worker.batch.max_age_s", self.batch.max_age_s, true)?;
        seconds("worker.batch.poll_s", self.batch.poll_s, true)?;
        if !(0.0..=1.0).contains(&p.min_window_saving) {
            return Err(InvalidConfig::new(
                "worker.policy.min_window_saving",
                format!(
                    "must be a fraction from 0 to 1, got {}",
                    p.min_window_saving
                ),
            ));
        }
        let b = &self.breaker;
        at_least_one(
            "worker.breaker.failure_threshold",
            u64::from(b.failure_threshold),
        )?;
        seconds("worker.breaker.open_s", b.open_s, false)?;
        seconds("worker.breaker.max_open_s", b.max_open_s, false)?;
        seconds("worker.breaker.fault_open_s", b.fault_open_s, false)?;
        seconds(
            "worker.breaker.rate_limit_backoff_s",
            b.rate_limit_backoff_s,
            false,
        )?;
        let f = &self.flush;
        at_least_one("worker.flush.max_rows", f.max_rows as u64)?;
        at_least_one("worker.flush.max_bytes", f.max_bytes as u64)?;
        seconds("worker.flush.max_age_s", f.max_age_s, true)?;
        Ok(())
    }
}

/// One worker: its router (catalog, policy, capacity plan), provider clients and counters.
pub struct Worker {
    pub(crate) router: Router,
    pub(crate) providers: HashMap<String, Arc<dyn Provider>>,
    pub(crate) cfg: WorkerConfig,
    /// The fleet's signing key: with one, only messages signed with it are processed.
    pub(crate) signing_key: Option<SigningKey>,
    pub stats: Arc<Stats>,
    pub id: String,
    /// Set while the results store refuses writes for good: the worker is not ready then.
    pub store_fault: Arc<StoreFault>,
    /// Keeps per-job WARN lines (failures, unreachable providers) to one per kind every 10 s.
    quiet: Throttle,
    /// Jobs this worker stored a row for: a message that comes back for one is acked unpaid.
    recent: Arc<RecentlyStored>,
    /// Long prompt prefixes sent per (provider, model): the first goes alone (see `prefix`).
    prefixes: crate::prefix::PrefixGate,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker").field("id", &self.id).finish()
    }
}

/// A job taken from the queue: its delivery, decoded.
pub(crate) struct Taken {
    pub env: Envelope,
    pub delivery: Delivery,
}

/// Where a dispatched job goes: the pair and route the router chose, owned (the call outlives
/// the router's lock), and why.
struct Call {
    served: Served,
    /// The capacity key the call holds (`<provider>/flex` on the flex tier).
    key: String,
    reason: RouteReason,
}

/// Who served a job, how, at what price and why: what its row records.
#[derive(Debug, Clone)]
pub(crate) struct Served {
    pub provider: String,
    pub model: String,
    pub model_id: String,
    pub price: Price,
    /// The prompt-cache prices cached tokens are billed at (none: at the input price).
    pub cache: Option<CachePrice>,
    pub reason: String,
    pub escalated: bool,
    pub route: Route,
    pub batch_id: Option<String>,
}

/// How one provider call left the job: finished (its row handed over, or deferred), or to be
/// routed again, with the error that sent it back.
enum CallEnd {
    Settled,
    Again(Box<(Taken, ProviderError)>),
}

/// The capacity one dispatched call holds at the router. Dropped without
/// [`record`](Self::record) — the call panicked or was cancelled — it gives the capacity back,
/// so no path leaks a concurrency slot.
struct Slot<'r> {
    router: &'r Router,
    provider: &'r str,
    recorded: bool,
}

impl Slot<'_> {
    fn record(mut self, outcome: CallOutcome) {
        self.recorded = true;
        self.router.record(self.provider, outcome, Utc::now());
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        if !self.recorded {
            self.router
                .record(self.provider, CallOutcome::Abandoned, Utc::now());
        }
    }
}

impl Worker {
    /// Builds a worker with one client per catalog provider.
    pub fn new(
        id: String,
        catalog: Arc<Catalog>,
        providers: HashMap<String, Arc<dyn Provider>>,
        cfg: WorkerConfig,
    ) -> Self {
        let router = Router::new(catalog, cfg.router(), Utc::now());
        Worker {
            router,
            providers,
            cfg,
            signing_key: None,
            stats: Arc::new(Stats::default()),
            id,
            store_fault: Arc::default(),
            quiet: Throttle::new(Duration::from_secs(10)),
            recent: Arc::new(RecentlyStored::default()),
            prefixes: Default::default(),
        }
    }

    /// With a key, the worker dead-letters every message not signed with it (`unsigned
    /// message`, `bad signature`) before reading it — no provider call, no result row — and signs
    /// the messages it puts back (deferrals) with it. Without one, messages are not checked.
    pub fn with_signing_key(mut self, key: Option<SigningKey>) -> Self {
        self.signing_key = key;
        self
    }

    /// Options to consume with: room for the jobs in progress plus two files' worth of rows
    /// waiting to be stored (their messages stay unacked until then): one file filling while
    /// the previous one uploads.
    pub fn consume_options(&self) -> ConsumeOptions {
        ConsumeOptions {
            // Jobs gathered for a provider batch stay unacked until the batch is recorded; they
            // share this window (widening it by a batch's size left a stalled store's messages
            // unpinged past the ack timeout).
            max_in_flight: self.cfg.concurrency + 2 * self.cfg.flush.max_rows,
            // A message waits for its request (bounded by the timeout), then at most a flush
            // age in the buffer, then the upload (which sends in-progress acks while it retries).
            // One gathered for a provider batch is reported in progress meanwhile.
            ack_wait: Duration::from_secs_f64(
                (self.cfg.flush.max_age_s * 3.0).max(5.0) + self.cfg.request_timeout_s,
            ),
        }
    }

    /// Runs until the consumer ends, `shutdown` fires, or the store refuses for good (then
    /// [`Worker::store_fault`] says why); then stops pulling, lets in-flight jobs finish, stores
    /// the last rows and settles their messages — all within `shutdown_grace_s`: in-flight jobs
    /// get two thirds of it, the last flush the rest, and whatever is still unsettled then is
    /// left to the broker to redeliver.
    pub async fn run(
        self: Arc<Self>,
        consumer: Box<dyn Consumer>,
        sink: Arc<dyn ResultSink>,
        shutdown: CancellationToken,
    ) {
        self.run_with_queue(consumer, sink, shutdown, None).await
    }

    /// [`run`](Self::run), with the queue to send jobs back on: a worker without one never
    /// routes to a provider's batch API (a batch's failed lines must go back to the queue).
    pub async fn run_with_queue(
        self: Arc<Self>,
        mut consumer: Box<dyn Consumer>,
        sink: Arc<dyn ResultSink>,
        shutdown: CancellationToken,
        queue: Option<Arc<dyn Queue>>,
    ) {
        // The fleet's share of the providers' limits is kept until the last call has ended.
        let fleet_stop = CancellationToken::new();
        let joined = Arc::new(tokio::sync::Notify::new());
        let fleet = queue.clone().map(|q| {
            tokio::spawn(crate::fleet::keep_in_step(
                self.clone(),
                q,
                fleet_stop.clone(),
                joined.clone(),
            ))
        });
        if fleet.is_some() {
            // The first jobs are routed with the fleet's share, not the fallback's.
            let _ = tokio::time::timeout(Duration::from_secs(2), joined.notified()).await;
        }
        let batcher = Batcher::new(self.clone(), sink.clone(), queue);
        if batcher.enabled() {
            let learn = batcher.learn_from_store();
            let _ = tokio::time::timeout(Duration::from_secs(10), learn).await;
        }
        let control = FlushControl {
            stopping: CancellationToken::new(),
            halt: CancellationToken::new(),
            fault: self.store_fault.clone(),
            recent: self.recent.clone(),
        };
        let (tx, mut flusher) = spawn_flusher(
            sink,
            self.id.clone(),
            self.cfg.flush.clone(),
            self.stats.clone(),
            control.clone(),
        );
        let slots = Arc::new(Semaphore::new(self.cfg.concurrency.max(1)));
        let mut tasks = JoinSet::new();
        // Gathered batches are sent by age from a task of their own: the consumer's `next` is
        // never cancelled for it (a cancelled fetch could leave messages to the ack timeout).
        let ticker = {
            let (b, stop) = (batcher.clone(), control.stopping.clone());
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(250));
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tick.tick() => b.send_due(false),
                    }
                }
            })
        };
        loop {
            let permit = tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = control.halt.cancelled() => break,
                p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            };
            let next = tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = control.halt.cancelled() => break,
                n = consumer.next() => n,
            };
            match next {
                Ok(Some(delivery)) => {
                    let (me, tx, b) = (self.clone(), tx.clone(), batcher.clone());
                    tasks.spawn(async move {
                        let _gauge = me.stats.in_flight.track();
                        me.handle(delivery, &tx, &b).await;
                        drop(permit);
                    });
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(worker = %self.id, error = %e, "consume failed; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
            while let Some(joined) = tasks.try_join_next() {
                self.report_join(joined);
            }
        }
        control.stopping.cancel();
        let _ = ticker.await;
        // What is gathered goes out as batches: the records and polls need no more than the
        // store and the broker, and the alternative (giving the jobs back) repeats the wait.
        batcher.send_due(true);
        drop(consumer);
        let grace = Duration::from_secs_f64(self.cfg.shutdown_grace_s);
        let deadline = tokio::time::Instant::now() + grace;
        let drain = async {
            while let Some(joined) = tasks.join_next().await {
                self.report_join(joined);
            }
        };
        if tokio::time::timeout(grace.mul_f64(2.0 / 3.0), drain)
            .await
            .is_err()
        {
            // Dropping the tasks drops their deliveries unsettled: the broker redelivers them.
            tracing::warn!(worker = %self.id, left = tasks.len(), "grace period over; releasing in-flight jobs");
            tasks.abort_all();
        }
        drop(tx);
        if tokio::time::timeout_at(deadline, &mut flusher)
            .await
            .is_err()
        {
            tracing::error!(worker = %self.id, "the last results could not be stored within the grace period; their messages are left for redelivery");
            flusher.abort();
        }
        fleet_stop.cancel();
        if let Some(f) = fleet {
            let _ = tokio::time::timeout(Duration::from_secs(2), f).await;
        }
    }

    /// A job task that panicked is logged (its delivery was dropped unsettled: the broker
    /// hands it out again, and after `max_deliveries` it is dead-lettered).
    fn report_join(&self, joined: Result<(), tokio::task::JoinError>) {
        if let Err(e) = joined {
            if e.is_panic() {
                tracing::error!(worker = %self.id, error = %e, "a job task panicked; its message will be redelivered");
            }
        }
    }

    async fn handle(&self, delivery: Delivery, tx: &mpsc::Sender<Finished>, b: &Arc<Batcher>) {
        if let Some(key) = &self.signing_key {
            if let Err(e) = key.verify(&delivery.payload) {
                // Not the fleet's message: nothing in it is trusted, not even its job id, so it
                // gets no row (a row could count for a run) and reaches no provider.
                self.stats.dead_letters.inc();
                tracing::warn!(worker = %self.id, reason = %e, "refused a message");
                if let Err(e) = delivery.dead_letter(&e.to_string()).await {
                    tracing::error!(error = %e, "dead-lettering a refused message failed; it will be redelivered");
                }
                return;
            }
        }
        let env = match Envelope::from_bytes(&delivery.payload) {
            Ok(env) if env.schema_version == SCHEMA_VERSION => env,
            Ok(env) => {
                let reason = unknown_version(env.schema_version);
                return self.poison(delivery, reason, tx).await;
            }
            Err(e) => {
                if let Some(poll) = Poll::parse(&delivery.payload) {
                    return b.poll(delivery, poll).await;
                }
                // A message of another version may not fit this version's shape at all: say
                // which version it is rather than which field is missing.
                let reason = match peek_version(&delivery.payload) {
                    Some(v) if v != SCHEMA_VERSION => unknown_version(v),
                    _ => format!("unreadable message: {e}"),
                };
                return self.poison(delivery, reason, tx).await;
            }
        };
        if self.recent.contains(env.run_id.as_str(), &env.job.id.0) {
            // This worker stored the job's row already: a repeat of the message (re-submitted
            // to a broker without de-duplication, or redelivered after the store) costs nothing.
            tracing::debug!(worker = %self.id, run_id = %env.run_id, job_id = %env.job.id.0, "already stored; acknowledged without a call");
            if let Err(e) = delivery.ack().await {
                tracing::warn!(worker = %self.id, error = %e, "acknowledging a repeated job failed; it will be redelivered");
            }
            return;
        }
        // A deferral hands the message back on purpose and carries its delivery count along;
        // only the deliveries that ended without any settlement (crashes, timeouts) count here.
        let unsettled = delivery.delivered.saturating_sub(env.deferrals);
        if unsettled > self.cfg.max_deliveries {
            let reason = format!(
                "delivered {unsettled} times without being settled (worker crashes or timeouts)"
            );
            let job = Taken { env, delivery };
            return self.fail(job, "redelivered", reason, tx).await;
        }
        let prompt = schemas::json_size(&env.job.messages);
        if prompt > self.cfg.max_prompt_bytes {
            let reason = format!(
                "prompt is {prompt} bytes, over the limit of {} bytes (worker.max_prompt_bytes)",
                self.cfg.max_prompt_bytes
            );
            let job = Taken { env, delivery };
            return self.fail(job, "limit", reason, tx).await;
        }
        let mut job = Taken { env, delivery };
        if unsettled > 1
            && job.env.batches == 0
            && job.env.job.priority == schemas::Priority::Deferrable
        {
            // Back after a crash or timeout: a provider batch may carry it already.
            match b.carried(job).await {
                Some(j) => job = j,
                None => return,
            }
        }
        self.process(job, tx, b).await;
    }

    /// A message no worker can process: a `failed` row where the job id is known, and the
    /// dead-letter queue in any case.
    async fn poison(&self, delivery: Delivery, reason: String, tx: &mpsc::Sender<Finished>) {
        self.stats.dead_letters.inc();
        let v: serde_json::Value = serde_json::from_slice(&delivery.payload).unwrap_or_default();
        let field = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
        tracing::warn!(worker = %self.id, %reason, "poison message");
        if let (Some(run_id), Some(job_id)) = (field("run_id"), field("id")) {
            self.stats.failed.inc();
            let mut row = ResultRow::blank(run_id, job_id, ResultStatus::Failed, Utc::now());
            row.model = v
                .get("models")
                .and_then(|m| m.get(0))
                .and_then(|m| m.as_str())
                .unwrap_or_default()
                .to_string();
            row.attempts = delivery.delivered;
            row.error_kind = Some("poison".into());
            row.error_message = Some(reason.clone());
            row.priority = field("priority").unwrap_or_default();
            hand_over(
                tx,
                Finished {
                    row,
                    delivery,
                    settlement: Settlement::DeadLetter(reason),
                },
            )
            .await;
        } else if let Err(e) = delivery.dead_letter(&reason).await {
            tracing::error!(error = %e, "dead-lettering a poison message failed; it will be redelivered");
        }
    }

    /// Routes the job until it is settled: sent and answered, deferred, or failed.
    async fn process(&self, mut job: Taken, tx: &mpsc::Sender<Finished>, b: &Arc<Batcher>) {
        if let Some(at) = job.env.deferred_at.take() {
            job.env.deferred_ms += (Utc::now() - at).num_milliseconds().max(0) as u64;
        }
        let mut last_error: Option<ProviderError> = None;
        let mut progress_at = std::time::Instant::now();
        loop {
            // A job retried in place for a while tells the broker it is still being worked on.
            if progress_at.elapsed() >= Duration::from_secs(5) {
                let _ = job.delivery.in_progress().await;
                progress_at = std::time::Instant::now();
            }
            let now = Utc::now();
            let key = job.env.dedup_id();
            let ticket = Ticket {
                job: &job.env.job,
                key: &key,
                history: History {
                    waited: chrono::Duration::milliseconds(job.env.deferred_ms as i64),
                    failures: job.env.attempt,
                    // Without a queue to send failed lines back on, no batch route.
                    batches: if b.enabled() {
                        job.env.batches
                    } else {
                        u32::MAX
                    },
                },
                turn: job.env.turn.as_ref(),
            };
            let decision = self.router.decide(&ticket, now);
            // The turn goes back with a deferral through the broker; a job sent, batched or
            // failed has none (a wait in place keeps the one it came with).
            if !matches!(decision, Decision::Defer { .. }) {
                job.env.turn = None;
            }
            let call = match decision {
                Decision::Fail { kind, reason } => {
                    let (kind, reason) = match last_error.take() {
                        Some(e) => (e.class.as_str(), format!("{reason}; last error: {e}")),
                        None => (kind, reason),
                    };
                    return self.fail(job, kind, reason, tx).await;
                }
                Decision::Defer {
                    until,
                    reason,
                    turn,
                    due,
                } => {
                    let wait = (until - now).to_std().unwrap_or_default();
                    if wait.as_secs_f64() <= router::in_place_wait_s(due, self.cfg.inline_wait_s) {
                        tokio::time::sleep(wait.max(Duration::from_millis(5))).await;
                        continue;
                    }
                    job.env.turn = turn;
                    return self.defer(job, wait, reason.to_string()).await;
                }
                Decision::Batch { to, reason } => {
                    b.add(job, &to, &reason);
                    return;
                }
                Decision::Dispatch { to, reason } => Call {
                    served: Served {
                        provider: to.provider.name.clone(),
                        model: to.offer.model.clone(),
                        model_id: to.offer.id.clone(),
                        price: to.price,
                        cache: to.cache_price(now),
                        reason: String::new(),
                        escalated: reason.is_escalation(),
                        route: to.route,
                        batch_id: None,
                    },
                    key: to.key().into_owned(),
                    reason,
                },
            };
            match self.call(job, call, tx).await {
                CallEnd::Settled => return,
                CallEnd::Again(again) => {
                    let (j, e) = *again;
                    job = j;
                    last_error = Some(e);
                }
            }
        }
    }

    /// Sends the job to the pair the router chose (its capacity already taken), reports the
    /// outcome to the router, and applies the retry rule to an error.
    async fn call(&self, mut job: Taken, call: Call, tx: &mpsc::Sender<Finished>) -> CallEnd {
        let slot = Slot {
            router: &self.router,
            provider: &call.key,
            recorded: false,
        };
        let provider = call.served.provider.clone();
        let Some(client) = self.providers.get(&provider).cloned() else {
            let reason = format!("no client for provider {provider}");
            self.fail(job, "config", reason, tx).await;
            return CallEnd::Settled;
        };
        let mut req = ChatRequest {
            model_id: call.served.model_id.clone(),
            messages: job.env.job.messages.clone(),
            max_tokens: job.env.job.max_tokens,
            params: job.env.job.params.clone(),
        };
        if call.served.route == Route::Flex {
            req.params
                .insert("service_tier".into(), serde_json::Value::from("flex"));
        }
        let automatic = self
            .router
            .catalog()
            .provider(&provider)
            .is_some_and(|p| p.kind != ProviderKind::Anthropic);
        let first = match crate::prefix::key(&provider, &req.model_id, &req.messages, automatic) {
            Some(k) => self.prefixes.enter(k).await,
            None => None,
        };
        let started = std::time::Instant::now();
        let span = tracing::debug_span!("request", run_id = %job.env.run_id, job_id = %job.env.job.id, provider = %provider);
        let result = tracing::Instrument::instrument(client.complete(&req), span).await;
        let latency = started.elapsed();
        if let (Some(first), Ok(_)) = (first, &result) {
            first.answered();
        }
        let limits = match &result {
            Ok(c) => c.limits,
            Err(e) => e.limits.as_deref().copied(),
        };
        if let Some(report) = limits {
            let tokens =
                job.env.job.estimated_input_tokens() + job.env.job.expected_output_tokens();
            self.router
                .observe_limits(&call.key, &report, tokens, Utc::now());
        }
        slot.record(match &result {
            Ok(_) => CallOutcome::Answered { latency },
            Err(e) => CallOutcome::Failed {
                class: e.class,
                retry_after: e.retry_after,
            },
        });
        let pstats = self.stats.provider(&provider);
        pstats.latency.observe(latency.as_secs_f64());
        let e = match result {
            Ok(c) => {
                self.succeed(job, call, c, latency, tx).await;
                return CallEnd::Settled;
            }
            Err(e) => e,
        };
        self.stats.provider_errors.inc();
        pstats.errors.inc();
        if e.class == ErrorClass::RateLimited {
            pstats.rate_limited.inc();
        }
        tracing::debug!(provider = %e.provider, status = ?e.status, class = e.class.as_str(), "provider error");
        if e.status.is_none() {
            // No answer at all (refused, DNS, TLS, timeout): the operator must hear of it.
            if let Some(left_out) = self.quiet.allow(&format!("unreachable/{}", e.provider)) {
                tracing::warn!(provider = %e.provider, error = %e.message, similar_left_out = left_out, "provider unreachable");
            }
        }
        let attempts = job.env.attempt + u32::from(e.class.counts_as_attempt());
        job.env.attempt = attempts;
        match self
            .router
            .after_error(e.class, attempts, rand::random::<f64>())
        {
            Retry::Reroute => CallEnd::Again(Box::new((job, e))),
            Retry::Backoff(wait) if wait.as_secs_f64() > self.cfg.inline_wait_s => {
                let reason = DeferReason::Backoff {
                    error: e.to_string(),
                };
                self.defer(job, wait, reason.to_string()).await;
                CallEnd::Settled
            }
            Retry::Backoff(wait) => {
                tokio::time::sleep(wait).await;
                CallEnd::Again(Box::new((job, e)))
            }
            Retry::GiveUp(GiveUp::Terminal) => {
                self.fail(job, "terminal", e.to_string(), tx).await;
                CallEnd::Settled
            }
            Retry::GiveUp(GiveUp::Exhausted(class)) => {
                let msg = format!("gave up after {attempts} attempts; last error: {e}");
                self.fail(job, class.as_str(), msg, tx).await;
                CallEnd::Settled
            }
        }
    }

    /// A succeeded call: its row (priced at the pair's price, against the dearest pair's) goes
    /// to the flusher, which acks the message once the row is stored.
    async fn succeed(
        &self,
        job: Taken,
        call: Call,
        c: Completion,
        latency: Duration,
        tx: &mpsc::Sender<Finished>,
    ) {
        if call.reason.is_escalation() {
            self.stats.escalations.inc();
        }
        let mut served = call.served;
        served.reason = match &job.env.defer_reason {
            Some(d) => format!(
                "{}; deferred {}x, last: {d}",
                call.reason, job.env.deferrals
            ),
            None => call.reason.to_string(),
        };
        let row = self.answered_row(&job.env, &served, c, latency);
        self.count_success(&served.provider, row.cost_usd);
        let finished = Finished {
            row,
            delivery: job.delivery,
            settlement: Settlement::Ack,
        };
        hand_over(tx, finished).await;
    }

    /// The row of a job `served` answered with `c`, `latency` after it was sent: priced at the
    /// price it was served at, against the dearest pair's.
    pub(crate) fn answered_row(
        &self,
        env: &Envelope,
        served: &Served,
        c: Completion,
        latency: Duration,
    ) -> ResultRow {
        let now = Utc::now();
        let cost = served.price.bill(&c.usage(), served.cache.as_ref());
        let baseline = self
            .router
            .baseline_price(&env.job, now)
            .map_or(cost, |p| p.cost(c.input_tokens, c.output_tokens));
        let mut row = self.row(env, ResultStatus::Succeeded, now);
        row.model = served.model.clone();
        row.provider = Some(served.provider.clone());
        row.provider_model = Some(served.model_id.clone());
        row.output_text = Some(c.text);
        row.finish_reason = c
            .finish_reason
            .as_deref()
            .map(|f| schemas::result::normalize_finish_reason(f).to_string());
        row.provider_finish_reason = c.finish_reason;
        row.input_tokens = c.input_tokens;
        row.output_tokens = c.output_tokens;
        row.cached_input_tokens = c.cache_read_tokens;
        row.cache_write_tokens = c.cache_write_5m_tokens + c.cache_write_1h_tokens;
        row.cost_usd = cost.0;
        row.baseline_cost_usd = baseline.0;
        row.latency_ms = latency.as_millis() as u64;
        row.attempts = env.attempt + 1;
        row.route_reason = Some(served.reason.clone());
        row.escalated = served.escalated;
        row.response_json = Some(c.response_json);
        row.route = Some(served.route.as_str().to_string());
        row.batch_id = served.batch_id.clone();
        row
    }

    /// Counts a succeeded job of `cost_usd` at `provider`.
    pub(crate) fn count_success(&self, provider: &str, cost_usd: f64) {
        let micro_usd = (cost_usd * 1e6).round() as u64;
        self.stats.succeeded.inc();
        self.stats.cost_micro_usd.add(micro_usd);
        let pstats = self.stats.provider(provider);
        pstats.succeeded.inc();
        pstats.cost_micro_usd.add(micro_usd);
    }

    pub(crate) async fn defer(&self, mut job: Taken, wait: Duration, reason: String) {
        self.stats.deferrals.inc();
        job.env.deferrals += 1;
        job.env.deferred_at = Some(Utc::now());
        tracing::debug!(run_id = %job.env.run_id, job_id = %job.env.job.id, wait_ms = wait.as_millis() as u64, %reason, "deferring");
        job.env.defer_reason = Some(reason);
        let payload = SigningKey::sign_with(self.signing_key.as_ref(), job.env.to_bytes());
        if let Err(e) = job.delivery.defer(wait, payload.into()).await {
            tracing::warn!(error = %e, "deferring failed; the broker will redeliver the job");
        }
    }

    async fn fail(&self, job: Taken, kind: &str, message: String, tx: &mpsc::Sender<Finished>) {
        self.stats.failed.inc();
        if let Some(left_out) = self.quiet.allow(&format!("failed/{kind}")) {
            tracing::warn!(run_id = %job.env.run_id, job_id = %job.env.job.id, kind, reason = %message, similar_left_out = left_out, "job failed");
        }
        self.stats.dead_letters.inc();
        let mut row = self.row(&job.env, ResultStatus::Failed, Utc::now());
        row.attempts = job.env.attempt;
        row.error_kind = Some(kind.to_string());
        row.error_message = Some(message.clone());
        row.route_reason = job
            .env
            .defer_reason
            .clone()
            .map(|d| format!("deferred {}x, last: {d}", job.env.deferrals));
        let settlement = Settlement::DeadLetter(format!("{kind}: {message}"));
        hand_over(
            tx,
            Finished {
                row,
                delivery: job.delivery,
                settlement,
            },
        )
        .await;
    }

    fn row(&self, env: &Envelope, status: ResultStatus, now: DateTime<Utc>) -> ResultRow {
        let mut row = ResultRow::blank(env.run_id.to_string(), env.job.id.to_string(), status, now);
        row.model = env.job.models.first().cloned().unwrap_or_default();
        row.cheapest_at_submit_usd = env.cheapest_at_submit_usd;
        row.attempts = env.attempt;
        row.deferred_ms = env.deferred_ms;
        row.deferrals = env.deferrals;
        row.priority = env.job.priority.as_str().to_string();
        row.submitted_at = env.submitted_at;
        row.deadline = env.job.deadline;
        row.metadata = serde_json::Value::Object(env.job.metadata.clone()).to_string();
        row
    }
}

/// How often a finished job waiting for room in the flusher is reported in progress.
const HAND_OVER_KEEP_ALIVE: Duration = Duration::from_secs(2);

/// Hands a finished job to the flusher. While the flusher pushes back (the store is slow or
/// down), the message is reported in progress every few seconds, so the broker does not hand
/// it to another worker while this one holds its row.
async fn hand_over(tx: &mpsc::Sender<Finished>, o: Finished) {
    let start = tokio::time::Instant::now() + HAND_OVER_KEEP_ALIVE;
    let mut tick = tokio::time::interval_at(start, HAND_OVER_KEEP_ALIVE);
    loop {
        tokio::select! {
            permit = tx.reserve() => {
                if let Ok(p) = permit {
                    p.send(o);
                }
                return;
            }
            _ = tick.tick() => {
                let _ = o.delivery.in_progress().await;
            }
        }
    }
}

fn unknown_version(v: u32) -> String {
    format!("unknown schema_version {v} (this worker reads {SCHEMA_VERSION})")
}

/// The `schema_version` of a message that does not parse as an [`Envelope`], if it has one.
fn peek_version(payload: &[u8]) -> Option<u32> {
    #[derive(Deserialize)]
    struct Version {
        schema_version: u32,
    }
    serde_json::from_slice::<Version>(payload)
        .ok()
        .map(|v| v.schema_version)
}
