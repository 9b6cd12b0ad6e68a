//! The batch route in the worker (DESIGN §5, Routes): jobs the router sends to a provider's
//! batch API are gathered per (run, provider, model) and sent as one provider batch; the fleet
//! stays stateless because everything a batch needs lives in the store and on the queue.
//!
//! The steps, and what a crash at each leaves:
//! 1. a record of the batch-to-be (`run=<run>/_batch-<gather>.json`, state `creating`, the
//!    jobs' envelopes) is stored — a crash here leaves the jobs' messages unacked: redelivered;
//! 2. the provider batch is created, tagged with the gather id — a crash here leaves a batch
//!    nobody recorded: the jobs come back (redelivered), find the record, and the batch is
//!    found again through the provider's list endpoint and adopted, never created twice;
//! 3. the record gets the batch id (state `submitted`);
//! 4. one job's message is turned into the batch's poll message (deferred with the poll as its
//!    payload), the others are acked — a crash before that: the jobs come back, find the
//!    record `submitted`, and one of them becomes the poll;
//! 5. any worker taking the poll message looks at the batch: still running, it puts the poll
//!    back for later (and cancels the batch once its jobs' safe time has come); ended, it stores
//!    the finished lines as result rows (priced at the batch price, route `batch`, the batch id),
//!    sends the failed, expired or cancelled lines back to the queue (they finish realtime),
//!    marks the record `done` and acks the poll — each step idempotent, so a crash just means
//!    the next worker does it again.

use crate::provider::{ChatRequest, LineOutcome};
use crate::runner::{Served, Taken, Worker};
use chrono::{DateTime, Utc};
use queue::{Delivery, Queue};
use router::{Candidate, RouteReason};
use schemas::catalog::{CachePrice, Price};
use schemas::{Envelope, Route, SigningKey, SCHEMA_VERSION};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use store::ResultSink;

/// How jobs are gathered into provider batches (the `[worker.batch]` table).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BatchConfig {
    /// Most jobs one provider batch carries (also capped by the catalog's `max_requests`). The
    /// jobs gathered stay unacked until their batch is recorded, so this also sizes the
    /// consumer's window.
    pub max_jobs: usize,
    /// Longest a job waits to be gathered before its batch is sent anyway (seconds).
    pub max_age_s: f64,
    /// How often a running batch is looked at (seconds).
    pub poll_s: f64,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            max_jobs: 1000,
            max_age_s: 60.0,
            poll_s: 60.0,
        }
    }
}

/// Where a batch is in its life (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordState {
    Creating,
    Submitted,
    /// Never created: the jobs went on without it.
    Void,
    Done,
}

/// The durable record of one provider batch and the jobs it carries.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BatchRecord {
    pub gather_id: String,
    pub run_id: String,
    pub provider: String,
    pub model: String,
    pub model_id: String,
    /// The batch price the lines are charged at.
    pub input_per_mtok: f64,
    pub output_per_mtok: f64,
    /// The batch prices of cached input (none in records written before they were kept:
    /// cached tokens are then billed at the input price).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<CachePrice>,
    pub route_reason: String,
    pub escalated: bool,
    pub created_at: DateTime<Utc>,
    /// After this the batch is cancelled and what it has not finished goes realtime.
    pub safe_until: DateTime<Utc>,
    pub batch_id: Option<String>,
    pub state: RecordState,
    #[serde(default)]
    pub ended_at: Option<DateTime<Utc>>,
    /// The jobs, line `i` being `jobs[i]`.
    pub jobs: Vec<Envelope>,
}

/// The store name of a batch record.
pub fn record_name(gather_id: &str) -> String {
    format!("{RECORD_PREFIX}{gather_id}.json")
}

/// Names of batch records start with this.
pub const RECORD_PREFIX: &str = "_batch-";

/// Where the fleet keeps what outlives a run: `run=_offpeak/` under the results location.
pub const FLEET_RUN: &str = "_offpeak";

/// The batch turnarounds seen lately, per (provider, model): `{"<provider>\t<model>": [s, …]}`.
/// Its name starts with `_`, as every non-result file does, so that Parquet readers of the
/// results location (pyarrow datasets, Spark, Athena) skip it.
const TURNAROUNDS: &str = "_batch-turnarounds.json";

/// Turnarounds kept per pair in the store.
const TURNAROUNDS_KEPT: usize = 16;

/// The message that lets any worker look at a batch later.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Poll {
    pub schema_version: u32,
    pub kind: String,
    pub run_id: String,
    pub gather_id: String,
}

const POLL_KIND: &str = "batch_poll";

impl Poll {
    /// The poll message in `payload`, if it is one.
    pub fn parse(payload: &[u8]) -> Option<Poll> {
        serde_json::from_slice::<Poll>(payload)
            .ok()
            .filter(|p| p.kind == POLL_KIND && p.schema_version == SCHEMA_VERSION)
    }
}

/// Jobs gathered for one provider batch.
struct Group {
    jobs: Vec<Taken>,
    bytes: usize,
    since: Instant,
    /// When the broker was last told the gathered messages are being worked on.
    pinged: Instant,
    served: Served,
    max_jobs: usize,
    max_bytes: usize,
}

/// What a worker knows of one run's batch records (for messages that come back).
#[derive(Default)]
struct RunIndex {
    read_at: Option<Instant>,
    records: HashMap<String, BatchRecord>,
    by_job: HashMap<String, Vec<String>>,
}

/// The batch route of one worker run: the gatherer, the poll handler and the check of jobs
/// that come back.
pub(crate) struct Batcher {
    worker: Arc<Worker>,
    sink: Arc<dyn ResultSink>,
    queue: Option<Arc<dyn Queue>>,
    groups: Mutex<HashMap<(String, String, String), Group>>,
    seq: AtomicU64,
    runs: tokio::sync::Mutex<HashMap<String, RunIndex>>,
    /// Held from a batch's record to its creation: one worker's batches are created one after
    /// another, so a batch found again by its creation time (Anthropic) is not taken for the
    /// next one's.
    creating: tokio::sync::Mutex<()>,
    /// Batches this worker made a poll message for since it started.
    polled: Mutex<HashSet<String>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Batcher {
    pub(crate) fn new(
        worker: Arc<Worker>,
        sink: Arc<dyn ResultSink>,
        queue: Option<Arc<dyn Queue>>,
    ) -> Arc<Self> {
        Arc::new(Batcher {
            worker,
            sink,
            queue,
            groups: Mutex::default(),
            seq: AtomicU64::new(0),
            runs: tokio::sync::Mutex::default(),
            creating: tokio::sync::Mutex::default(),
            polled: Mutex::default(),
        })
    }

    /// Whether this worker may route jobs to batches: it needs the queue to send lines that
    /// fail back.
    pub(crate) fn enabled(&self) -> bool {
        self.queue.is_some()
    }

    fn cfg(&self) -> &BatchConfig {
        &self.worker.cfg.batch
    }

    /// Gathers `job` for a batch at `to`; a full group is sent at once.
    pub(crate) fn add(self: &Arc<Self>, job: Taken, to: &Candidate<'_>, reason: &RouteReason) {
        let key = (
            job.env.run_id.to_string(),
            to.provider.name.clone(),
            to.offer.model.clone(),
        );
        let offer = to.offer.batch.as_ref();
        let max_jobs = offer
            .and_then(|b| b.max_requests)
            .map_or(self.cfg().max_jobs, |m| {
                (m as usize).min(self.cfg().max_jobs)
            })
            .max(1);
        // A tenth kept in hand for the file's own framing.
        let max_bytes = offer
            .and_then(|b| b.max_bytes)
            .map_or(usize::MAX, |b| (b as usize) / 10 * 9);
        let bytes = job.delivery.payload.len();
        let full = {
            let mut groups = lock(&self.groups);
            let g = groups.entry(key.clone()).or_insert_with(|| Group {
                jobs: Vec::new(),
                bytes: 0,
                since: Instant::now(),
                pinged: Instant::now(),
                served: Served {
                    provider: to.provider.name.clone(),
                    model: to.offer.model.clone(),
                    model_id: to.offer.id.clone(),
                    price: to.price,
                    cache: to.cache_price(Utc::now()),
                    reason: reason.to_string(),
                    escalated: reason.is_escalation(),
                    route: Route::Batch,
                    batch_id: None,
                },
                max_jobs,
                max_bytes,
            });
            g.jobs.push(job);
            g.bytes += bytes;
            if g.jobs.len() >= g.max_jobs || g.bytes >= g.max_bytes {
                groups.remove(&key)
            } else {
                None
            }
        };
        if let Some(g) = full {
            tokio::spawn(self.clone().submit(g));
        }
    }

    /// Sends every group gathered for `max_age_s` or longer (all of them when `all`).
    /// Gathered messages are reported in progress every `PING` meanwhile, so the broker's ack
    /// timeout need not cover the gathering.
    pub(crate) fn send_due(self: &Arc<Self>, all: bool) {
        let age = Duration::from_secs_f64(self.cfg().max_age_s);
        let (due, stale) = {
            let mut groups = lock(&self.groups);
            let due_keys: Vec<_> = groups
                .iter()
                .filter(|(_, g)| all || g.since.elapsed() >= age)
                .map(|(k, _)| k.clone())
                .collect();
            let due: Vec<Group> = due_keys.iter().filter_map(|k| groups.remove(k)).collect();
            let stale_keys: Vec<_> = groups
                .iter()
                .filter(|(_, g)| g.pinged.elapsed() >= PING)
                .map(|(k, _)| k.clone())
                .collect();
            let stale: Vec<_> = stale_keys
                .into_iter()
                .filter_map(|k| groups.remove(&k).map(|g| (k, g)))
                .collect();
            (due, stale)
        };
        for g in due {
            tokio::spawn(self.clone().submit(g));
        }
        for (key, mut g) in stale {
            let me = self.clone();
            tokio::spawn(async move {
                ping(&g.jobs).await;
                g.pinged = Instant::now();
                me.put_back(key, g);
            });
        }
    }

    /// Puts a group taken out to be pinged back, with the jobs gathered for its key meanwhile.
    fn put_back(self: &Arc<Self>, key: (String, String, String), mut g: Group) {
        let full = {
            let mut groups = lock(&self.groups);
            if let Some(mut newer) = groups.remove(&key) {
                g.jobs.append(&mut newer.jobs);
                g.bytes += newer.bytes;
            }
            if g.jobs.len() >= g.max_jobs || g.bytes >= g.max_bytes {
                Some(g)
            } else {
                groups.insert(key, g);
                None
            }
        };
        if let Some(g) = full {
            tokio::spawn(self.clone().submit(g));
        }
    }

    /// Steps 1–4 of the module docs for one group.
    async fn submit(self: Arc<Self>, g: Group) {
        let w = &self.worker;
        let Some(first) = g.jobs.first() else { return };
        let creating = self.creating.lock().await;
        // Creating a batch takes an upload and a call or two: the broker keeps the messages.
        ping(&g.jobs).await;
        let run_id = first.env.run_id.to_string();
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let gather_id = format!(
            "{}-{}-{seq}",
            w.id.replace(|c: char| !c.is_ascii_alphanumeric() && c != '-', "_"),
            Utc::now().timestamp_millis()
        );
        let policy = &w.cfg.policy;
        let safe_until = g
            .jobs
            .iter()
            .map(|t| policy.batch_safe_time(&t.env.job))
            .min()
            .unwrap_or_else(Utc::now);
        let mut record = BatchRecord {
            gather_id: gather_id.clone(),
            run_id: run_id.clone(),
            provider: g.served.provider.clone(),
            model: g.served.model.clone(),
            model_id: g.served.model_id.clone(),
            input_per_mtok: g.served.price.input_per_mtok,
            output_per_mtok: g.served.price.output_per_mtok,
            cache: g.served.cache,
            route_reason: g.served.reason.clone(),
            escalated: g.served.escalated,
            created_at: Utc::now(),
            safe_until,
            batch_id: None,
            state: RecordState::Creating,
            ended_at: None,
            jobs: g.jobs.iter().map(|t| t.env.clone()).collect(),
        };
        if let Err(e) = self.put_record(&record).await {
            tracing::warn!(worker = %w.id, error = %e, "storing a batch record failed; its jobs go back to the queue");
            return release(g.jobs).await;
        }
        let Some(api) = w.providers.get(&record.provider).and_then(|p| p.batches()) else {
            return self
                .realtime(g.jobs, "provider has no batch API client")
                .await;
        };
        let lines: Vec<ChatRequest> = g
            .jobs
            .iter()
            .map(|t| ChatRequest {
                model_id: record.model_id.clone(),
                messages: t.env.job.messages.clone(),
                max_tokens: t.env.job.max_tokens,
                params: t.env.job.params.clone(),
            })
            .collect();
        let id = match api.create(&gather_id, &lines).await {
            Ok(id) => id,
            Err(e) => {
                tracing::warn!(worker = %w.id, provider = %record.provider, error = %e, "creating a provider batch failed; its jobs go realtime");
                record.state = RecordState::Void;
                let _ = self.put_record(&record).await;
                return self
                    .realtime(g.jobs, &format!("batch not created: {e}"))
                    .await;
            }
        };
        w.stats.batches_created.inc();
        failpoint("batch-created");
        tracing::info!(worker = %w.id, provider = %record.provider, batch = %id, jobs = g.jobs.len(), "provider batch created");
        drop(creating);
        record.batch_id = Some(id);
        record.state = RecordState::Submitted;
        if let Err(e) = self.put_record(&record).await {
            // Created but not recorded: the jobs come back and find the batch (step 2).
            tracing::warn!(worker = %w.id, error = %e, "recording a provider batch failed; its jobs will find it when they come back");
            return release(g.jobs).await;
        }
        failpoint("batch-recorded");
        self.carry(g.jobs, &record).await;
    }

    /// Step 4: the first job's message becomes the poll, the others are acked.
    async fn carry(&self, jobs: Vec<Taken>, record: &BatchRecord) {
        let mut jobs = jobs.into_iter();
        let Some(carrier) = jobs.next() else { return };
        if self.make_poll(carrier.delivery, record).await {
            for t in jobs {
                if let Err(e) = t.delivery.ack().await {
                    tracing::debug!(error = %e, "acking a job carried by a batch failed; it will come back and find its batch");
                }
            }
        } else {
            release(jobs.collect()).await;
        }
    }

    /// Turns `delivery` into the poll message of `record`'s batch, due in a poll interval.
    async fn make_poll(&self, delivery: Delivery, record: &BatchRecord) -> bool {
        let poll = Poll {
            schema_version: SCHEMA_VERSION,
            kind: POLL_KIND.into(),
            run_id: record.run_id.clone(),
            gather_id: record.gather_id.clone(),
        };
        let bytes = serde_json::to_vec(&poll).unwrap_or_default();
        let payload = SigningKey::sign_with(self.worker.signing_key.as_ref(), bytes);
        let wait = self.poll_wait(record, Utc::now());
        match delivery.defer(wait, payload.into()).await {
            Ok(()) => {
                lock(&self.polled).insert(record.gather_id.clone());
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "putting a batch's poll message on the queue failed; its jobs will come back and retry");
                false
            }
        }
    }

    fn poll_wait(&self, record: &BatchRecord, now: DateTime<Utc>) -> Duration {
        let poll = Duration::from_secs_f64(self.cfg().poll_s);
        let to_safe = (record.safe_until - now).to_std().unwrap_or_default();
        poll.min(to_safe).max(Duration::from_millis(200))
    }

    /// Jobs whose batch could not be made: each goes back to the queue at once, marked as
    /// given back by a batch, so it finishes realtime.
    async fn realtime(&self, jobs: Vec<Taken>, why: &str) {
        for mut t in jobs {
            t.env.batches += 1;
            self.worker
                .defer(t, Duration::ZERO, format!("batch route: {why}"))
                .await;
        }
    }

    /// Seeds the router with the batch turnarounds the fleet has seen (kept in the store, so a
    /// new worker does not start from the pessimistic prior).
    pub(crate) async fn learn_from_store(&self) {
        let Ok(bytes) = self.sink.get(FLEET_RUN, TURNAROUNDS).await else {
            return;
        };
        let seen: HashMap<String, Vec<f64>> = serde_json::from_slice(&bytes).unwrap_or_default();
        for (pair, secs) in seen {
            let Some((provider, model)) = pair.split_once('\t') else {
                continue;
            };
            for s in secs {
                let took = chrono::Duration::milliseconds((s * 1000.0) as i64);
                self.worker.router.observe_turnaround(provider, model, took);
            }
        }
    }

    /// Adds a turnaround to the fleet's store of them (best effort: a lost update only costs an
    /// observation).
    async fn remember_turnaround(&self, provider: &str, model: &str, took: Duration) {
        let mut seen: HashMap<String, Vec<f64>> = match self.sink.get(FLEET_RUN, TURNAROUNDS).await
        {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_default(),
            Err(_) => HashMap::new(),
        };
        let list = seen.entry(format!("{provider}\t{model}")).or_default();
        list.push(took.as_secs_f64());
        let keep = list.len().saturating_sub(TURNAROUNDS_KEPT);
        list.drain(..keep);
        let bytes = serde_json::to_vec(&seen).unwrap_or_default();
        if let Err(e) = self.sink.put(FLEET_RUN, TURNAROUNDS, bytes).await {
            tracing::debug!(error = %e, "storing a batch turnaround failed");
        }
    }

    async fn put_record(&self, r: &BatchRecord) -> Result<(), store::SinkError> {
        let bytes = serde_json::to_vec(r).unwrap_or_default();
        self.sink
            .put(&r.run_id, &record_name(&r.gather_id), bytes)
            .await
    }

    async fn get_record(&self, run: &str, gather: &str) -> Result<BatchRecord, String> {
        let bytes = self
            .sink
            .get(run, &record_name(gather))
            .await
            .map_err(|e| e.to_string())?;
        serde_json::from_slice(&bytes).map_err(|e| format!("batch record {gather}: {e}"))
    }

    /// Step 5: a poll message.
    pub(crate) async fn poll(self: &Arc<Self>, delivery: Delivery, poll: Poll) {
        let w = &self.worker;
        let later = |delivery: Delivery, wait: Duration, payload: bytes::Bytes| async move {
            if let Err(e) = delivery.defer(wait, payload).await {
                tracing::warn!(error = %e, "putting a poll message back failed; the broker will redeliver it");
            }
        };
        let payload = delivery.payload.clone();
        let retry = Duration::from_secs_f64(self.cfg().poll_s.min(10.0));
        let mut record = match self.get_record(&poll.run_id, &poll.gather_id).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(worker = %w.id, gather = %poll.gather_id, error = %e, "reading a batch record failed; polling again later");
                return later(delivery, retry, payload).await;
            }
        };
        let Some(id) = record.batch_id.clone() else {
            // Only a submitted batch has a poll; nothing to look at.
            let _ = delivery.ack().await;
            return;
        };
        if matches!(record.state, RecordState::Done | RecordState::Void) {
            let _ = delivery.ack().await;
            return;
        }
        let Some(api) = w.providers.get(&record.provider).and_then(|p| p.batches()) else {
            return later(delivery, retry, payload).await;
        };
        let now = Utc::now();
        let state = match api.state(&id).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(worker = %w.id, batch = %id, error = %e, "looking at a provider batch failed; polling again later");
                return later(delivery, retry, payload).await;
            }
        };
        if !state.ended {
            if now >= record.safe_until {
                if let Err(e) = api.cancel(&id).await {
                    tracing::warn!(worker = %w.id, batch = %id, error = %e, "cancelling a late provider batch failed; trying again");
                } else {
                    tracing::info!(worker = %w.id, batch = %id, "provider batch still running at its jobs' safe time: cancelled, the rest goes realtime");
                }
                return later(delivery, Duration::from_millis(500), payload).await;
            }
            return later(delivery, self.poll_wait(&record, now), payload).await;
        }
        let results = match api.results(&id, &record.gather_id).await {
            Ok(r) => r,
            Err(e) if e.class == router::ErrorClass::Terminal => {
                // Adopted by mistake (another gather's batch): none of its answers are these
                // jobs'; they all go back to the queue, and the operator hears of it.
                tracing::warn!(worker = %w.id, batch = %id, gather = %record.gather_id, error = %e, "a batch adopted after a crash was another's; its jobs go realtime");
                HashMap::new()
            }
            Err(e) => {
                tracing::warn!(worker = %w.id, batch = %id, error = %e, "reading a batch's results failed; polling again later");
                return later(delivery, retry, payload).await;
            }
        };
        let served = Served {
            provider: record.provider.clone(),
            model: record.model.clone(),
            model_id: record.model_id.clone(),
            price: Price {
                input_per_mtok: record.input_per_mtok,
                output_per_mtok: record.output_per_mtok,
            },
            cache: record.cache,
            reason: record.route_reason.clone(),
            escalated: record.escalated,
            route: Route::Batch,
            batch_id: Some(id.clone()),
        };
        let took = (now - record.created_at).to_std().unwrap_or_default();
        let mut rows = Vec::new();
        let mut back = Vec::new();
        for (i, env) in record.jobs.iter().enumerate() {
            match results.get(&i) {
                Some(LineOutcome::Done(c)) => {
                    rows.push(w.answered_row(env, &served, c.clone(), took));
                }
                Some(LineOutcome::Failed(why)) => back.push((env.clone(), why.clone())),
                None => back.push((
                    env.clone(),
                    format!("not in the results ({})", state.status),
                )),
            }
        }
        if !rows.is_empty() {
            let stored = match store::encode_parquet(&rows) {
                Ok(bytes) => {
                    let name = format!("part-batch-{}.parquet", record.gather_id);
                    self.sink.put(&record.run_id, &name, bytes).await
                }
                Err(e) => Err(e),
            };
            if let Err(e) = stored {
                tracing::warn!(worker = %w.id, batch = %id, error = %e, "storing a batch's rows failed; polling again later");
                return later(delivery, retry, payload).await;
            }
        }
        failpoint("batch-rows-stored");
        let Some(queue) = &self.queue else {
            return later(delivery, retry, payload).await;
        };
        for (mut env, why) in back.clone() {
            let dedup = format!("{}/b{}", env.dedup_id(), record.gather_id);
            env.batches += 1;
            env.defer_reason = Some(format!("batch {id} gave it back: {why}"));
            let bytes = SigningKey::sign_with(w.signing_key.as_ref(), env.to_bytes());
            if let Err(e) = queue.publish(&record.run_id, &dedup, bytes.into()).await {
                tracing::warn!(worker = %w.id, batch = %id, error = %e, "sending a batch's unfinished job back failed; polling again later");
                return later(delivery, retry, payload).await;
            }
        }
        record.state = RecordState::Done;
        record.ended_at = Some(now);
        if let Err(e) = self.put_record(&record).await {
            tracing::warn!(worker = %w.id, batch = %id, error = %e, "marking a batch done failed; polling again later");
            return later(delivery, retry, payload).await;
        }
        w.router.observe_turnaround(
            &record.provider,
            &record.model,
            chrono::Duration::from_std(took).unwrap_or_default(),
        );
        self.remember_turnaround(&record.provider, &record.model, took)
            .await;
        w.stats.batch_lines_done.add(rows.len() as u64);
        w.stats.batch_lines_returned.add(back.len() as u64);
        for r in &rows {
            w.count_success(&r.provider.clone().unwrap_or_default(), r.cost_usd);
        }
        tracing::info!(worker = %w.id, batch = %id, status = %state.status, done = rows.len(), returned = back.len(), "provider batch settled");
        if let Err(e) = delivery.ack().await {
            tracing::debug!(error = %e, "acking a settled poll failed; the next worker finds the batch done");
        }
    }

    /// A job whose message came back after a crash or timeout (and that no batch gave back: such
    /// a job is never batched again): if a batch carries it, settles
    /// the message (as that batch's poll message when this worker has made none for it) and
    /// returns `None`; otherwise gives the job back to be routed.
    pub(crate) async fn carried(self: &Arc<Self>, job: Taken) -> Option<Taken> {
        let run = job.env.run_id.to_string();
        let jid = job.env.job.id.0.clone();
        let mut runs = self.runs.lock().await;
        let idx = runs.entry(run.clone()).or_default();
        let stale = idx
            .read_at
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(2));
        if stale && !idx.by_job.contains_key(&jid) {
            self.refresh(&run, idx).await;
        }
        let gathers = idx.by_job.get(&jid).cloned().unwrap_or_default();
        for g in gathers {
            let Some(rec) = idx.records.get(&g).cloned() else {
                continue;
            };
            match rec.state {
                RecordState::Void => continue,
                RecordState::Done => {
                    drop(runs);
                    let _ = job.delivery.ack().await;
                    return None;
                }
                RecordState::Submitted => {
                    let first = !lock(&self.polled).contains(&g);
                    drop(runs);
                    if first {
                        self.make_poll(job.delivery, &rec).await;
                    } else {
                        let _ = job.delivery.ack().await;
                    }
                    return None;
                }
                RecordState::Creating => {
                    // Step 2's crash: was the batch created?
                    let claimed: HashSet<String> = runs
                        .get(&run)
                        .map(|i| {
                            i.records
                                .values()
                                .filter_map(|r| r.batch_id.clone())
                                .collect()
                        })
                        .unwrap_or_default();
                    let adopted = self.adopt(rec, &claimed).await;
                    let entry = runs.get_mut(&run).map(|i| &mut i.records);
                    if let Some(records) = entry {
                        records.insert(g.clone(), adopted.clone());
                    }
                    if adopted.state == RecordState::Submitted {
                        drop(runs);
                        self.make_poll(job.delivery, &adopted).await;
                        return None;
                    }
                    // Void (or unknown for now): route the job.
                    return Some(job);
                }
            }
        }
        Some(job)
    }

    /// Looks for the batch of a record left `creating`: found, the record is completed
    /// (`submitted`); not found, it is void (its jobs go on without it).
    async fn adopt(&self, mut rec: BatchRecord, claimed: &HashSet<String>) -> BatchRecord {
        let Some(api) = self
            .worker
            .providers
            .get(&rec.provider)
            .and_then(|p| p.batches())
        else {
            return rec;
        };
        match api
            .find(
                &rec.gather_id,
                rec.created_at,
                rec.jobs.len() as u64,
                claimed,
            )
            .await
        {
            Ok(Some(id)) => {
                tracing::info!(worker = %self.worker.id, batch = %id, "found a provider batch created but not recorded; adopted");
                rec.batch_id = Some(id);
                rec.state = RecordState::Submitted;
            }
            Ok(None) => rec.state = RecordState::Void,
            Err(e) => {
                tracing::warn!(error = %e, "listing provider batches failed; the job is routed anew");
                return rec;
            }
        }
        if self.put_record(&rec).await.is_err() {
            // Unrecorded, the finding would be lost: leave the record as it was.
            rec.state = RecordState::Creating;
        }
        rec
    }

    async fn refresh(&self, run: &str, idx: &mut RunIndex) {
        idx.read_at = Some(Instant::now());
        let Ok(names) = self.sink.list(run).await else {
            return;
        };
        for name in names {
            let Some(g) = name
                .strip_prefix(RECORD_PREFIX)
                .and_then(|n| n.strip_suffix(".json"))
            else {
                continue;
            };
            if idx
                .records
                .get(g)
                .is_some_and(|r| matches!(r.state, RecordState::Done | RecordState::Void))
            {
                continue;
            }
            let Ok(rec) = self.get_record(run, g).await else {
                continue;
            };
            for env in &rec.jobs {
                let gathers = idx.by_job.entry(env.job.id.0.clone()).or_default();
                if !gathers.iter().any(|x| x == g) {
                    gathers.push(g.to_string());
                }
            }
            idx.records.insert(g.to_string(), rec);
        }
    }
}

/// Crash-test hook: the process dies on the spot (as if SIGKILLed) when the environment
/// variable `OFFPEAK_FAILPOINT` names this point. The fleet tests kill a worker between the
/// steps of the module docs this way; unset, it costs one lookup per batch step.
fn failpoint(name: &str) {
    if std::env::var("OFFPEAK_FAILPOINT").is_ok_and(|v| v == name) {
        eprintln!("failpoint {name}: aborting");
        std::process::abort();
    }
}

/// How often gathered messages are reported in progress.
const PING: Duration = Duration::from_secs(10);

/// Reports every job's message in progress (resets the broker's ack timer).
async fn ping(jobs: &[Taken]) {
    for t in jobs {
        let _ = t.delivery.in_progress().await;
    }
}

/// Gives each job back to the broker for redelivery.
async fn release(jobs: Vec<Taken>) {
    for t in jobs {
        let _ = t.delivery.release().await;
    }
}
