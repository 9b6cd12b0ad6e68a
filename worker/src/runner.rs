//! The worker loop: pull a delivery, route it with the pure policy, call the chosen provider,
//! and hand the row plus the delivery to the flusher, which settles the message only after the
//! row is durable. Deferral puts the message back on the broker with a delay; nothing waits in
//! memory longer than a short inline pause.

use crate::capacity::{BreakerConfig, Capacity};
use crate::flush::{spawn_flusher, FlushConfig, Outcome, Settlement};
use crate::policy::{dearest_price, plan, Decision, History, PolicyConfig};
use crate::provider::{ChatRequest, ErrorClass, Provider};
use crate::sink::ResultSink;
use crate::stats::Stats;
use chrono::{DateTime, Utc};
use queue::{ConsumeOptions, Consumer, Delivery};
use schemas::{Catalog, Envelope, ResultRow, ResultStatus, SCHEMA_VERSION};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
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

/// One worker: its catalog, provider clients, capacity view and counters.
pub struct Worker {
    catalog: Arc<Catalog>,
    providers: HashMap<String, Arc<dyn Provider>>,
    capacity: Mutex<Capacity>,
    cfg: WorkerConfig,
    pub stats: Arc<Stats>,
    pub id: String,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker").field("id", &self.id).finish()
    }
}

/// A job's delivery, decoded.
struct Job {
    env: Envelope,
    delivery: Delivery,
}

impl Worker {
    /// Builds a worker with one client per catalog provider.
    pub fn new(
        id: String,
        catalog: Arc<Catalog>,
        providers: HashMap<String, Arc<dyn Provider>>,
        cfg: WorkerConfig,
    ) -> Self {
        let capacity = Mutex::new(Capacity::new(&catalog, Utc::now()));
        Worker {
            catalog,
            providers,
            capacity,
            cfg,
            stats: Arc::new(Stats::default()),
            id,
        }
    }

    /// Options to consume with: room for the jobs in progress plus two files' worth of rows
    /// waiting to be stored (their messages stay unacked until then): one file filling while
    /// the previous one uploads.
    pub fn consume_options(&self) -> ConsumeOptions {
        ConsumeOptions {
            max_in_flight: self.cfg.concurrency + 2 * self.cfg.flush.max_rows,
            // A message waits for its request (bounded by the timeout), then at most a flush
            // age in the buffer, then the upload (which sends in-progress acks while it retries).
            ack_wait: Duration::from_secs_f64(
                (self.cfg.flush.max_age_s * 3.0).max(5.0) + self.cfg.request_timeout_s,
            ),
        }
    }

    /// Runs until the consumer ends or `shutdown` fires; then stops pulling, lets in-flight jobs
    /// finish (up to the grace period), stores the last rows and settles their messages.
    pub async fn run(
        self: Arc<Self>,
        mut consumer: Box<dyn Consumer>,
        sink: Arc<dyn ResultSink>,
        shutdown: CancellationToken,
    ) {
        let (tx, flusher) = spawn_flusher(
            sink,
            self.id.clone(),
            self.cfg.flush.clone(),
            self.stats.clone(),
        );
        let slots = Arc::new(Semaphore::new(self.cfg.concurrency.max(1)));
        let mut tasks = JoinSet::new();
        loop {
            let permit = tokio::select! {
                _ = shutdown.cancelled() => break,
                p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            };
            let next = tokio::select! {
                _ = shutdown.cancelled() => break,
                n = consumer.next() => n,
            };
            match next {
                Ok(Some(delivery)) => {
                    let (me, tx) = (self.clone(), tx.clone());
                    tasks.spawn(async move {
                        me.stats.in_flight.inc();
                        me.handle(delivery, &tx).await;
                        me.stats.in_flight.dec();
                        drop(permit);
                    });
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(worker = %self.id, error = %e, "consume failed; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
            while tasks.try_join_next().is_some() {}
        }
        drop(consumer);
        let grace = Duration::from_secs_f64(self.cfg.shutdown_grace_s);
        if tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} })
            .await
            .is_err()
        {
            // Dropping the tasks drops their deliveries unsettled: the broker redelivers them.
            tracing::warn!(worker = %self.id, left = tasks.len(), "grace period over; releasing in-flight jobs");
            tasks.abort_all();
        }
        drop(tx);
        let _ = flusher.await;
    }

    async fn handle(&self, delivery: Delivery, tx: &mpsc::Sender<Outcome>) {
        let env = match Envelope::from_bytes(&delivery.payload) {
            Ok(env) if env.schema_version == SCHEMA_VERSION => env,
            Ok(env) => {
                let reason = unknown_version(env.schema_version);
                return self.poison(delivery, reason, tx).await;
            }
            Err(e) => {
                // A message of another version may not fit this version's shape at all: say
                // which version it is rather than which field is missing.
                let reason = match peek_version(&delivery.payload) {
                    Some(v) if v != SCHEMA_VERSION => unknown_version(v),
                    _ => format!("unreadable message: {e}"),
                };
                return self.poison(delivery, reason, tx).await;
            }
        };
        // A deferral hands the message back on purpose and carries its delivery count along;
        // only the deliveries that ended without any settlement (crashes, timeouts) count here.
        let unsettled = delivery.delivered.saturating_sub(env.deferrals);
        if unsettled > self.cfg.max_deliveries {
            let reason = format!(
                "delivered {unsettled} times without being settled (worker crashes or timeouts)"
            );
            let job = Job { env, delivery };
            return self.fail(job, "redelivered", reason, tx).await;
        }
        let prompt = prompt_bytes(&env.job.messages);
        if prompt > self.cfg.max_prompt_bytes {
            let reason = format!(
                "prompt is {prompt} bytes, over the limit of {} bytes (worker.max_prompt_bytes)",
                self.cfg.max_prompt_bytes
            );
            let job = Job { env, delivery };
            return self.fail(job, "limit", reason, tx).await;
        }
        let job = Job { env, delivery };
        self.process(job, tx).await;
    }

    /// A message no worker can process: a `failed` row where the job id is known, and the
    /// dead-letter queue in any case.
    async fn poison(&self, delivery: Delivery, reason: String, tx: &mpsc::Sender<Outcome>) {
        self.stats.dead_letters.inc();
        let v: serde_json::Value = serde_json::from_slice(&delivery.payload).unwrap_or_default();
        let field = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
        tracing::warn!(worker = %self.id, %reason, "poison message");
        if let (Some(run_id), Some(job_id)) = (field("run_id"), field("id")) {
            let now = Utc::now();
            self.stats.failed.inc();
            let row = ResultRow {
                run_id,
                job_id,
                status: ResultStatus::Failed,
                model: v
                    .get("models")
                    .and_then(|m| m.get(0))
                    .and_then(|m| m.as_str())
                    .unwrap_or_default()
                    .to_string(),
                provider: None,
                provider_model: None,
                output_text: None,
                finish_reason: None,
                input_tokens: 0,
                output_tokens: 0,
                cost_usd: 0.0,
                baseline_cost_usd: 0.0,
                cheapest_at_submit_usd: None,
                latency_ms: 0,
                attempts: delivery.delivered,
                deferred_ms: 0,
                deferrals: 0,
                route_reason: None,
                error_kind: Some("poison".into()),
                error_message: Some(reason.clone()),
                priority: field("priority").unwrap_or_default(),
                submitted_at: now,
                completed_at: now,
                deadline: now,
                metadata: "{}".into(),
                response_json: None,
            };
            hand_over(
                tx,
                Outcome {
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

    async fn process(&self, mut job: Job, tx: &mpsc::Sender<Outcome>) {
        if let Some(at) = job.env.deferred_at.take() {
            job.env.deferred_ms += (Utc::now() - at).num_milliseconds().max(0) as u64;
        }
        let tokens = job.env.job.estimated_input_tokens() + job.env.job.expected_output_tokens();
        let mut last_error: Option<(String, String)> = None;
        let mut progress_at = std::time::Instant::now();
        loop {
            // A job retried in place for a while tells the broker it is still being worked on.
            if progress_at.elapsed() >= Duration::from_secs(5) {
                let _ = job.delivery.in_progress().await;
                progress_at = std::time::Instant::now();
            }
            let now = Utc::now();
            let decision = {
                let mut cap = self.capacity.lock().unwrap_or_else(|p| p.into_inner());
                let history = History {
                    waited: chrono::Duration::milliseconds(job.env.deferred_ms as i64),
                    failures: job.env.attempt,
                };
                let id = job.env.dedup_id();
                let p = plan(
                    &job.env.job,
                    &history,
                    &self.catalog,
                    &cap.view(&id, tokens, now),
                    now,
                    &self.cfg.policy,
                );
                // A job deferred for a pair's capacity keeps its turn there; any other
                // decision gives its place up.
                match (&p.decision, p.hold) {
                    (Decision::Defer { .. }, Some(h)) => {
                        cap.reserve(&id, h.provider, tokens, h.at, h.by, now)
                    }
                    _ => cap.cancel_reservation(&id),
                }
                p.decision
            };
            match decision {
                Decision::Fail { kind, reason } => {
                    let (kind, reason) = match last_error.take() {
                        Some((k, m)) => (k, format!("{reason}; last error: {m}")),
                        None => (kind.to_string(), reason),
                    };
                    return self.fail(job, &kind, reason, tx).await;
                }
                Decision::Defer { until, reason } => {
                    let wait = (until - now).to_std().unwrap_or_default();
                    if wait.as_secs_f64() <= self.cfg.inline_wait_s {
                        tokio::time::sleep(wait.max(Duration::from_millis(5))).await;
                        continue;
                    }
                    return self.defer(job, wait, reason).await;
                }
                Decision::Dispatch {
                    to,
                    reason,
                    escalated,
                } => {
                    let pname = to.provider.name.clone();
                    let acquired = {
                        let mut cap = self.capacity.lock().unwrap_or_else(|p| p.into_inner());
                        cap.get_mut(&pname)
                            .is_some_and(|s| s.try_acquire(tokens, now))
                    };
                    if !acquired {
                        continue;
                    }
                    let Some(client) = self.providers.get(&pname).cloned() else {
                        return self
                            .fail(job, "config", format!("no client for provider {pname}"), tx)
                            .await;
                    };
                    let req = ChatRequest {
                        model_id: to.offer.id.clone(),
                        messages: job.env.job.messages.clone(),
                        max_tokens: job.env.job.max_tokens,
                        params: job.env.job.params.clone(),
                    };
                    let started = std::time::Instant::now();
                    let span = tracing::debug_span!("request", run_id = %job.env.run_id, job_id = %job.env.job.id, provider = %pname);
                    let result = tracing::Instrument::instrument(client.complete(&req), span).await;
                    let latency = started.elapsed();
                    let now = Utc::now();
                    let pstats = self.stats.provider(&pname);
                    pstats.latency.observe(latency.as_secs_f64());
                    self.record_outcome(&pname, result.as_ref().err(), now, latency);
                    match result {
                        Ok(c) => {
                            if escalated {
                                self.stats.escalations.inc();
                            }
                            let price = to.price;
                            let cost = price.cost(c.input_tokens, c.output_tokens);
                            let baseline = dearest_price(&job.env.job, &self.catalog, now)
                                .map_or(cost, |p| p.cost(c.input_tokens, c.output_tokens));
                            let route_reason = match &job.env.defer_reason {
                                Some(d) => {
                                    format!("{reason}; deferred {}x, last: {d}", job.env.deferrals)
                                }
                                None => reason,
                            };
                            let mut row = self.row(&job.env, ResultStatus::Succeeded, now);
                            row.model = to.offer.model.clone();
                            row.provider = Some(pname);
                            row.provider_model = Some(to.offer.id.clone());
                            row.output_text = Some(c.text);
                            row.finish_reason = c.finish_reason;
                            row.input_tokens = c.input_tokens;
                            row.output_tokens = c.output_tokens;
                            row.cost_usd = cost.0;
                            row.baseline_cost_usd = baseline.0;
                            row.latency_ms = latency.as_millis() as u64;
                            row.attempts = job.env.attempt + 1;
                            row.route_reason = Some(route_reason);
                            row.response_json = Some(c.response_json);
                            self.stats.succeeded.inc();
                            self.stats.cost_micro_usd.add((cost.0 * 1e6).round() as u64);
                            pstats.succeeded.inc();
                            pstats.cost_micro_usd.add((cost.0 * 1e6).round() as u64);
                            hand_over(
                                tx,
                                Outcome {
                                    row,
                                    delivery: job.delivery,
                                    settlement: Settlement::Ack,
                                },
                            )
                            .await;
                            return;
                        }
                        Err(e) => {
                            self.stats.provider_errors.inc();
                            pstats.errors.inc();
                            tracing::debug!(provider = %e.provider, status = ?e.status, class = e.class.as_str(), "provider error");
                            last_error = Some((e.class.as_str().to_string(), e.to_string()));
                            match e.class {
                                ErrorClass::RateLimited => {}
                                ErrorClass::Terminal => {
                                    job.env.attempt += 1;
                                    return self.fail(job, "terminal", e.to_string(), tx).await;
                                }
                                ErrorClass::Transient | ErrorClass::ProviderFault => {
                                    job.env.attempt += 1;
                                    if job.env.attempt >= self.cfg.max_attempts {
                                        let msg = format!(
                                            "gave up after {} attempts; last error: {e}",
                                            job.env.attempt
                                        );
                                        return self.fail(job, e.class.as_str(), msg, tx).await;
                                    }
                                    if e.class == ErrorClass::Transient {
                                        let wait = backoff(job.env.attempt, rand::random::<f64>());
                                        if wait.as_secs_f64() > self.cfg.inline_wait_s {
                                            return self
                                                .defer(job, wait, format!("retry after {e}"))
                                                .await;
                                        }
                                        tokio::time::sleep(wait).await;
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// Frees the capacity a request held and feeds its outcome to the provider's state.
    fn record_outcome(
        &self,
        provider: &str,
        err: Option<&crate::provider::ProviderError>,
        now: DateTime<Utc>,
        latency: Duration,
    ) {
        let mut cap = self.capacity.lock().unwrap_or_else(|p| p.into_inner());
        let Some(s) = cap.get_mut(provider) else {
            return;
        };
        s.release();
        let latency = chrono::Duration::from_std(latency).unwrap_or_default();
        match err.map(|e| (e.class, e.retry_after)) {
            None => {
                // A success of a request sent before the latest failure says nothing about now.
                s.on_success_of(now - latency);
                s.observe_latency(latency);
            }
            Some((ErrorClass::RateLimited, retry_after)) => {
                s.on_rate_limited(retry_after, now, &self.cfg.breaker)
            }
            Some((ErrorClass::Transient, _)) => s.on_transient(now, &self.cfg.breaker),
            Some((ErrorClass::ProviderFault, _)) => s.on_provider_fault(now, &self.cfg.breaker),
            Some((ErrorClass::Terminal, _)) => {}
        }
    }

    async fn defer(&self, mut job: Job, wait: Duration, reason: String) {
        self.stats.deferrals.inc();
        job.env.deferrals += 1;
        job.env.deferred_at = Some(Utc::now());
        tracing::debug!(run_id = %job.env.run_id, job_id = %job.env.job.id, wait_ms = wait.as_millis() as u64, %reason, "deferring");
        job.env.defer_reason = Some(reason);
        if let Err(e) = job.delivery.defer(wait, job.env.to_bytes().into()).await {
            tracing::warn!(error = %e, "deferring failed; the broker will redeliver the job");
        }
    }

    async fn fail(&self, job: Job, kind: &str, message: String, tx: &mpsc::Sender<Outcome>) {
        self.stats.failed.inc();
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
            Outcome {
                row,
                delivery: job.delivery,
                settlement,
            },
        )
        .await;
    }

    fn row(&self, env: &Envelope, status: ResultStatus, now: DateTime<Utc>) -> ResultRow {
        ResultRow {
            run_id: env.run_id.to_string(),
            job_id: env.job.id.to_string(),
            status,
            model: env.job.models.first().cloned().unwrap_or_default(),
            provider: None,
            provider_model: None,
            output_text: None,
            finish_reason: None,
            input_tokens: 0,
            output_tokens: 0,
            cost_usd: 0.0,
            baseline_cost_usd: 0.0,
            cheapest_at_submit_usd: env.cheapest_at_submit_usd,
            latency_ms: 0,
            attempts: env.attempt,
            deferred_ms: env.deferred_ms,
            deferrals: env.deferrals,
            route_reason: None,
            error_kind: None,
            error_message: None,
            priority: env.job.priority.as_str().to_string(),
            submitted_at: env.submitted_at,
            completed_at: now,
            deadline: env.job.deadline,
            metadata: serde_json::Value::Object(env.job.metadata.clone()).to_string(),
            response_json: None,
        }
    }
}

/// How often a finished job waiting for room in the flusher is reported in progress.
const HAND_OVER_KEEP_ALIVE: Duration = Duration::from_secs(2);

/// Hands a finished job to the flusher. While the flusher pushes back (the store is slow or
/// down), the message is reported in progress every few seconds, so the broker does not hand
/// it to another worker while this one holds its row.
async fn hand_over(tx: &mpsc::Sender<Outcome>, o: Outcome) {
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

/// The size of `messages` as JSON, counted without building the text.
pub fn prompt_bytes(messages: &[schemas::ChatMessage]) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0 += b.len();
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count(0);
    let _ = serde_json::to_writer(&mut c, messages);
    c.0
}

/// Exponential backoff with jitter for the `attempt`-th failure: 1 s, 2 s, 4 s… capped at
/// 5 minutes, scaled by a factor in [0.5, 1) drawn from `jitter01` ∈ [0, 1).
pub fn backoff(attempt: u32, jitter01: f64) -> Duration {
    let base = 2f64
        .powi(attempt.saturating_sub(1).min(16) as i32)
        .min(300.0);
    Duration::from_secs_f64(base * (0.5 + 0.5 * jitter01.clamp(0.0, 1.0)))
}
