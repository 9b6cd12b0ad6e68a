//! The NATS JetStream backend (DESIGN §3).
//!
//! Topology, declared idempotently on connect: a work-queue stream (`OFFPEAK_JOBS`) on
//! `<prefix>.jobs.>`, where an acked message is gone for good; a limits stream (`OFFPEAK_DLQ`)
//! on `<prefix>.dlq.>` that keeps dead letters for inspection; and, on [`Queue::consume`], one
//! durable pull consumer shared by every worker (explicit acks, unlimited deliveries: offpeak
//! counts attempts itself).
//!
//! **Deferral.** JetStream's NAK-with-delay redelivers the *original* payload, but a deferral
//! carries an updated envelope (attempt and deferred-time counters). So [`Settle::defer`]
//! publishes the updated payload as a new message stamped `Offpeak-Not-Before`, waits for the
//! stream's ack, and only then acks the original. A consumer that receives a message before its
//! not-before NAKs it with the remaining delay: the broker holds it, not the worker, and other
//! traffic flows past. While they wait, deferred messages count against the consumer's
//! MaxAckPending — which is why that is sized far above any worker's in-flight bound.
//!
//! **Bounded in-flight.** A consumer pulls only as many messages as it has free slots, and a
//! delivery holds its slot until it is settled or dropped (a dropped delivery is NAKed, so it
//! comes back at once rather than after the ack wait).

use crate::broker::{redact, BrokerOptions};
use crate::slot::{header_text, remaining, unix_ms_now, Slot};
use crate::{
    Broadcast, ConsumeOptions, Consumer, DeadLetter, Delivery, FleetChannel, Listener, Queue,
    QueueError, RunDeadLetters, Settle,
};
use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy, PullConsumer};
use async_nats::jetstream::stream::{self, RetentionPolicy, StorageType};
use async_nats::jetstream::{self, AckKind};
use async_nats::HeaderMap;
use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

const BACKEND: &str = "nats";
/// JetStream's de-duplication header.
const MSG_ID: &str = "Nats-Msg-Id";
/// The job's de-duplication id, kept on deferred copies (whose `Nats-Msg-Id` differs).
const DEDUP_ID: &str = "Offpeak-Dedup-Id";
/// Unix milliseconds before which a deferred copy must not reach a worker.
const NOT_BEFORE: &str = "Offpeak-Not-Before";
/// Deliveries of the message before it was deferred, so `delivered` keeps counting.
const PRIOR_DELIVERIES: &str = "Offpeak-Delivered";
/// Why a message was dead-lettered.
const REASON: &str = "Offpeak-Reason";
/// How long a job publish is retried (server restarts, reconnects) before it fails.
const PUBLISH_RETRY_FOR: Duration = Duration::from_secs(30);
/// Longest one pull request waits for a message before the consumer asks again.
const IDLE_PULL: Duration = Duration::from_secs(5);
/// Most messages taken in one pull.
const MAX_BATCH: usize = 256;

/// Where and how [`NatsQueue`] connects, and the names it declares.
#[derive(Debug, Clone)]
pub struct NatsOptions {
    /// Server URL: `nats://host:4222`, or `tls://host:4222` for TLS; credentials in the URL are
    /// used.
    pub url: String,
    /// The work-queue stream of jobs.
    pub stream: String,
    /// The stream that keeps dead letters.
    pub dlq_stream: String,
    /// First subject token: jobs are published to `<prefix>.jobs.<run_id>`, dead letters to
    /// `<prefix>.dlq.<run_id>`.
    pub subject_prefix: String,
    /// The durable pull consumer shared by all workers.
    pub consumer: String,
    /// How long the streams remember a `Nats-Msg-Id` (JetStream's duplicate window). Applied
    /// when a stream is created; an existing stream keeps its own.
    pub dup_window: Duration,
    /// See [`BrokerOptions::max_ack_pending`].
    pub max_ack_pending: i64,
}

impl Default for NatsOptions {
    fn default() -> Self {
        NatsOptions::from_broker("nats://127.0.0.1:4222", &BrokerOptions::default())
    }
}

impl NatsOptions {
    /// DESIGN §3's names under `opts.namespace`: stream `<NAMESPACE>_JOBS` on
    /// `<namespace>.jobs.>`, dead letters in `<NAMESPACE>_DLQ` on `<namespace>.dlq.>`, durable
    /// consumer `<namespace>-workers`.
    pub fn from_broker(url: &str, opts: &BrokerOptions) -> Self {
        let ns = &opts.namespace;
        let upper = ns.to_ascii_uppercase();
        NatsOptions {
            url: url.to_string(),
            stream: format!("{upper}_JOBS"),
            dlq_stream: format!("{upper}_DLQ"),
            subject_prefix: ns.clone(),
            consumer: format!("{ns}-workers"),
            dup_window: opts.dedup_window,
            max_ack_pending: opts.max_ack_pending,
        }
    }

    /// The core-NATS subject of the fleet's broadcast: outside both streams, so nothing of it
    /// is stored.
    pub fn fleet_subject(&self) -> String {
        format!("{}.fleet", self.subject_prefix)
    }

    fn jobs_filter(&self) -> String {
        format!("{}.jobs.>", self.subject_prefix)
    }
}

/// A job queue on NATS JetStream. Cloning gives another handle on the same connection.
#[derive(Clone)]
pub struct NatsQueue {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for NatsQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsQueue")
            .field("stream", &self.shared.opts.stream)
            .field("consumer", &self.shared.opts.consumer)
            .finish()
    }
}

struct Shared {
    opts: NatsOptions,
    js: jetstream::Context,
    jobs: stream::Stream,
    dlq: stream::Stream,
}

fn err(context: impl std::fmt::Display, e: impl std::fmt::Display) -> QueueError {
    QueueError::backend(BACKEND, format!("{context}: {e}"))
}

impl NatsQueue {
    /// Connects and declares the job and dead-letter streams (creating them if missing).
    pub async fn connect(opts: NatsOptions) -> Result<Self, QueueError> {
        let client = async_nats::ConnectOptions::new()
            .name("offpeak")
            .connect(opts.url.as_str())
            .await
            .map_err(|e| {
                use async_nats::ConnectErrorKind as Kind;
                // An untrusted server certificate surfaces as an I/O error here, not as
                // `Tls` (which is about the client's own TLS setup): it is not told apart.
                let refused = matches!(
                    e.kind(),
                    Kind::Authentication | Kind::AuthorizationViolation | Kind::Tls
                );
                err(format_args!("connecting to {}", redact(&opts.url)), e).refused_if(refused)
            })?;
        let js = jetstream::new(client);
        let jobs = js
            .get_or_create_stream(stream::Config {
                name: opts.stream.clone(),
                subjects: vec![opts.jobs_filter()],
                retention: RetentionPolicy::WorkQueue,
                storage: StorageType::File,
                duplicate_window: opts.dup_window,
                ..Default::default()
            })
            .await
            .map_err(|e| err(format_args!("declaring stream {}", opts.stream), e))?;
        let dlq = js
            .get_or_create_stream(stream::Config {
                name: opts.dlq_stream.clone(),
                subjects: vec![format!("{}.dlq.>", opts.subject_prefix)],
                retention: RetentionPolicy::Limits,
                storage: StorageType::File,
                duplicate_window: opts.dup_window,
                ..Default::default()
            })
            .await
            .map_err(|e| err(format_args!("declaring stream {}", opts.dlq_stream), e))?;
        Ok(NatsQueue {
            shared: Arc::new(Shared {
                opts,
                js,
                jobs,
                dlq,
            }),
        })
    }

    /// The options this queue was connected with.
    pub fn options(&self) -> &NatsOptions {
        &self.shared.opts
    }

    /// Up to `max` dead letters, oldest first, read without removing them.
    pub async fn dead_letters(&self, max: usize) -> Result<Vec<DeadLetter>, QueueError> {
        let context = || format!("reading dead letters from {}", self.shared.opts.dlq_stream);
        let info = self
            .shared
            .dlq
            .get_info()
            .await
            .map_err(|e| err(context(), e))?;
        let mut out = Vec::new();
        if info.state.messages == 0 {
            return Ok(out);
        }
        for seq in info.state.first_sequence..=info.state.last_sequence {
            if out.len() >= max {
                break;
            }
            // Sequences in the range can be gaps left by deleted messages; skip those.
            let Ok(msg) = self.shared.dlq.get_raw_message(seq).await else {
                continue;
            };
            let reason = msg
                .headers
                .get(REASON)
                .map(|v| v.as_str().to_string())
                .unwrap_or_default();
            out.push(DeadLetter {
                payload: msg.payload,
                reason,
            });
        }
        Ok(out)
    }

    /// Deletes the consumer and both streams with everything in them (tests, teardown).
    pub async fn delete_topology(&self) -> Result<(), QueueError> {
        let o = &self.shared.opts;
        for name in [&o.stream, &o.dlq_stream] {
            match self.shared.js.delete_stream(name).await {
                Ok(_) => {}
                Err(e) if e.to_string().contains("not found") => {}
                Err(e) => return Err(err(format_args!("deleting stream {name}"), e)),
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Queue for NatsQueue {
    async fn fleet(&self) -> Result<Option<FleetChannel>, QueueError> {
        let client = self.shared.js.client();
        let subject = self.shared.opts.fleet_subject();
        let sub = client
            .subscribe(subject.clone())
            .await
            .map_err(|e| err(format_args!("subscribing to {subject}"), e))?;
        Ok(Some(FleetChannel {
            sender: Arc::new(NatsSender { client, subject }),
            listener: Box::new(NatsListener(sub)),
        }))
    }

    async fn publish(
        &self,
        run_id: &str,
        dedup_id: &str,
        payload: Bytes,
    ) -> Result<(), QueueError> {
        let ok = !run_id.is_empty()
            && !run_id
                .chars()
                .any(|c| c == '.' || c == '*' || c == '>' || c.is_whitespace() || c.is_control());
        if !ok {
            return Err(QueueError::backend(
                BACKEND,
                format!("run id {run_id:?} is not a single subject token"),
            ));
        }
        let subject = format!("{}.jobs.{run_id}", self.shared.opts.subject_prefix);
        // An original's `Nats-Msg-Id` is its de-duplication id: no `Offpeak-Dedup-Id` needed.
        let mut headers = HeaderMap::new();
        headers.insert(MSG_ID, dedup_id);
        // A server restart or a failover makes publishes time out until the client has
        // reconnected; the message id makes a retry safe (the stream drops a second copy).
        let give_up = tokio::time::Instant::now() + PUBLISH_RETRY_FOR;
        let mut pause = Duration::from_millis(250);
        loop {
            match self
                .shared
                .publish(subject.clone(), headers.clone(), payload.clone())
                .await
            {
                Ok(()) => return Ok(()),
                Err(e) if tokio::time::Instant::now() + pause < give_up => {
                    tracing::debug!(error = %e, dedup_id, "publish failed; retrying");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
                Err(e) => return Err(err(format_args!("publishing {dedup_id}"), e)),
            }
        }
    }

    async fn consume(&self, opts: ConsumeOptions) -> Result<Box<dyn Consumer>, QueueError> {
        let o = &self.shared.opts;
        let max_in_flight = opts.max_in_flight.max(1);
        let max_ack_pending = if o.max_ack_pending < 0 {
            -1
        } else {
            o.max_ack_pending
                .max(i64::try_from(max_in_flight).map_or(i64::MAX, |n| n.saturating_mul(4)))
        };
        // Create-or-update: the last worker to start sets the shared consumer's ack wait.
        let consumer: PullConsumer = self
            .shared
            .jobs
            .create_consumer(pull::Config {
                durable_name: Some(o.consumer.clone()),
                ack_policy: AckPolicy::Explicit,
                ack_wait: opts.ack_wait,
                max_deliver: -1,
                max_ack_pending,
                deliver_policy: DeliverPolicy::All,
                filter_subject: o.jobs_filter(),
                ..Default::default()
            })
            .await
            .map_err(|e| err(format_args!("declaring consumer {}", o.consumer), e))?;
        Ok(Box::new(NatsConsumer {
            shared: self.shared.clone(),
            consumer,
            permits: Arc::new(Semaphore::new(max_in_flight)),
            buffer: VecDeque::new(),
        }))
    }

    /// Counts the job stream's messages: waiting, deferred and in flight (acked and
    /// dead-lettered messages leave a work-queue stream).
    async fn depth(&self) -> Result<Option<u64>, QueueError> {
        let info = self.shared.jobs.get_info().await.map_err(|e| {
            err(
                format_args!("reading stream {}", self.shared.opts.stream),
                e,
            )
        })?;
        Ok(Some(info.state.messages))
    }

    /// Reads the run's dead-letter subject, `<prefix>.dlq.<run_id>`, message by message
    /// (a direct get of the next message on the subject from a sequence on), so nothing is
    /// consumed and no consumer is created; the total comes from the stream's per-subject count.
    async fn run_dead_letters(
        &self,
        run_id: &str,
        max: usize,
    ) -> Result<Option<RunDeadLetters>, QueueError> {
        let dlq = &self.shared.dlq;
        let subject = format!("{}.dlq.{run_id}", self.shared.opts.subject_prefix);
        let context = || format!("reading dead letters on {subject}");
        let mut counts = dlq
            .info_with_subjects(&subject)
            .await
            .map_err(|e| err(context(), e))?;
        let mut total = 0u64;
        while let Some(entry) = counts.next().await {
            let (_, n) = entry.map_err(|e| err(context(), e))?;
            total += n as u64;
        }
        let mut letters = Vec::new();
        let mut seq = 1;
        while letters.len() < max && (letters.len() as u64) < total {
            let got = dlq
                .raw_message_builder()
                .sequence(seq)
                .next_by_subject(subject.clone())
                .send()
                .await;
            let msg = match got {
                Ok(m) => m,
                Err(e) if e.kind() == stream::RawMessageErrorKind::NoMessageFound => break,
                Err(e) => return Err(err(context(), e)),
            };
            seq = msg.sequence + 1;
            let reason = msg
                .headers
                .get(REASON)
                .map(|v| v.as_str().to_string())
                .unwrap_or_default();
            letters.push(DeadLetter {
                payload: msg.payload,
                reason,
            });
        }
        Ok(Some(RunDeadLetters::Run { letters, total }))
    }
}

impl Shared {
    /// Publishes and waits for the stream's ack (a duplicate's ack counts: it is stored).
    async fn publish(
        &self,
        subject: String,
        headers: HeaderMap,
        payload: Bytes,
    ) -> Result<(), async_nats::Error> {
        self.js
            .publish_with_headers(subject, headers, payload)
            .await?
            .await?;
        Ok(())
    }
}

/// One worker's view of the shared durable consumer.
struct NatsConsumer {
    shared: Arc<Shared>,
    consumer: PullConsumer,
    permits: Arc<Semaphore>,
    /// Pulled and not yet handed out; never more than the free slots at the time of the pull.
    buffer: VecDeque<jetstream::Message>,
}

#[async_trait]
impl Consumer for NatsConsumer {
    async fn next(&mut self) -> Result<Option<Delivery>, QueueError> {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| QueueError::Closed)?;
        loop {
            let Some(msg) = self.buffer.pop_front() else {
                self.pull().await?;
                continue;
            };
            let headers = msg.headers.as_ref();
            let header_u64 = |name: &str| {
                headers
                    .and_then(|h| h.get(name))
                    .and_then(|v| v.as_str().trim().parse::<u64>().ok())
            };
            let not_before = header_u64(NOT_BEFORE);
            if let Some(wait) = not_before.and_then(remaining) {
                // Too early: the broker keeps it for the rest of the wait, not this worker.
                if let Err(e) = msg.ack_with(AckKind::Nak(Some(wait))).await {
                    tracing::warn!(error = %e, "handing an early deferred message back failed; it returns after the ack wait");
                }
                continue;
            }
            let info = msg
                .info()
                .map_err(|e| err("reading delivery metadata", e))?;
            let n = u32::try_from(info.delivered.max(1)).unwrap_or(u32::MAX);
            let stream_seq = info.stream_sequence;
            // A deferred copy is normally delivered once too early and handed straight back;
            // that round trip is the broker's, not a delivery to a worker.
            let early = u32::from(not_before.is_some() && n > 1);
            let prior = header_u64(PRIOR_DELIVERIES).map_or(0, |p| p.min(u32::MAX as u64) as u32);
            let delivered = prior.saturating_add(n - early);
            let payload = msg.payload.clone();
            let settle = NatsSettle {
                shared: self.shared.clone(),
                msg: Some(msg),
                stream_seq,
                delivered,
                slot: Slot::new(permit),
            };
            return Ok(Some(Delivery::new(payload, delivered, Box::new(settle))));
        }
    }
}

impl NatsConsumer {
    /// Fills the buffer: whatever is ready right now, up to the free slots; if nothing is, one
    /// message as soon as it arrives (or nothing after [`IDLE_PULL`]).
    async fn pull(&mut self) -> Result<(), QueueError> {
        let want = (self.permits.available_permits() + 1).min(MAX_BATCH);
        let ready = self
            .consumer
            .fetch()
            .max_messages(want)
            .messages()
            .await
            .map_err(|e| err("pulling messages", e))?;
        self.take(ready).await?;
        if self.buffer.is_empty() {
            let waited = self
                .consumer
                .batch()
                .max_messages(1)
                .expires(IDLE_PULL)
                .messages()
                .await
                .map_err(|e| err("pulling messages", e))?;
            self.take(waited).await?;
        }
        Ok(())
    }

    async fn take(&mut self, mut batch: pull::Batch) -> Result<(), QueueError> {
        while let Some(msg) = batch.next().await {
            self.buffer
                .push_back(msg.map_err(|e| err("receiving a message", e))?);
        }
        Ok(())
    }
}

impl Drop for NatsConsumer {
    fn drop(&mut self) {
        // Messages pulled but never handed out go straight back instead of waiting out the ack
        // wait.
        let buffered: Vec<_> = self.buffer.drain(..).collect();
        if buffered.is_empty() {
            return;
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                for msg in buffered {
                    let _ = msg.ack_with(AckKind::Nak(None)).await;
                }
            });
        }
    }
}

/// Settles one JetStream delivery.
struct NatsSettle {
    shared: Arc<Shared>,
    /// Always `Some` until dropped.
    msg: Option<jetstream::Message>,
    stream_seq: u64,
    delivered: u32,
    slot: Slot,
}

impl NatsSettle {
    fn msg(&self) -> Result<&jetstream::Message, QueueError> {
        self.msg
            .as_ref()
            .ok_or_else(|| QueueError::backend(BACKEND, "delivery already settled"))
    }

    /// Sends `kind` for this delivery and waits for the server to confirm it.
    async fn confirm(&self, kind: AckKind, what: &str) -> Result<(), QueueError> {
        let msg = self.msg()?;
        let reply = msg
            .reply
            .clone()
            .ok_or_else(|| QueueError::backend(BACKEND, "delivery has no reply subject"))?;
        self.shared
            .js
            .client()
            .request(reply, kind.into())
            .await
            .map(|_| ())
            .map_err(|e| {
                err(
                    format_args!("{what} stream sequence {}", self.stream_seq),
                    e,
                )
            })
    }

    /// The job's de-duplication id (kept across deferrals), or the stream sequence.
    fn dedup_id(&self) -> String {
        let headers = self.msg.as_ref().and_then(|m| m.headers.as_ref());
        headers
            .and_then(|h| h.get(DEDUP_ID).or_else(|| h.get(MSG_ID)))
            .map(|v| v.as_str().to_string())
            .unwrap_or_else(|| format!("seq{}", self.stream_seq))
    }

    /// The run id: the last token of the jobs subject.
    fn run_id(&self) -> Result<String, QueueError> {
        let msg = self.msg()?;
        let prefix = format!("{}.jobs.", self.shared.opts.subject_prefix);
        msg.subject
            .as_str()
            .strip_prefix(&prefix)
            .map(str::to_string)
            .ok_or_else(|| {
                QueueError::backend(
                    BACKEND,
                    format!("subject {} is not under {prefix}", msg.subject),
                )
            })
    }
}

#[async_trait]
impl Settle for NatsSettle {
    async fn ack(&self) -> Result<(), QueueError> {
        let _slot = self.slot.claim(BACKEND)?;
        self.confirm(AckKind::Ack, "acking").await
    }

    /// The ack without its `AckAck` round trip. The consumer takes its acks in the order a
    /// connection sent them, so a confirmed ack sent after these confirms them too.
    async fn ack_unconfirmed(&self) -> Result<(), QueueError> {
        let _slot = self.slot.claim(BACKEND)?;
        self.msg()?.ack().await.map_err(|e| {
            err(
                format_args!("acking stream sequence {}", self.stream_seq),
                e,
            )
        })
    }

    async fn defer(&self, delay: Duration, payload: Bytes) -> Result<(), QueueError> {
        let _slot = self.slot.claim(BACKEND)?;
        let msg = self.msg()?;
        let dedup = self.dedup_id();
        let not_before = unix_ms_now().saturating_add(delay.as_millis() as u64);
        let mut headers = HeaderMap::new();
        // Unique per original message: a retried deferral of the same delivery is dropped as a
        // duplicate instead of enqueuing two copies.
        headers.insert(MSG_ID, format!("{dedup}/d{}", self.stream_seq).as_str());
        headers.insert(DEDUP_ID, dedup.as_str());
        headers.insert(NOT_BEFORE, not_before.to_string().as_str());
        headers.insert(PRIOR_DELIVERIES, self.delivered.to_string().as_str());
        self.shared
            .publish(msg.subject.to_string(), headers, payload)
            .await
            .map_err(|e| err(format_args!("publishing the deferred copy of {dedup}"), e))?;
        self.confirm(AckKind::Ack, "acking the deferred original at")
            .await
    }

    async fn release(&self) -> Result<(), QueueError> {
        let _slot = self.slot.claim(BACKEND)?;
        self.confirm(AckKind::Nak(None), "releasing").await
    }

    async fn dead_letter(&self, payload: Bytes, reason: &str) -> Result<(), QueueError> {
        let _slot = self.slot.claim(BACKEND)?;
        let dedup = self.dedup_id();
        let subject = format!("{}.dlq.{}", self.shared.opts.subject_prefix, self.run_id()?);
        let mut headers = HeaderMap::new();
        headers.insert(MSG_ID, format!("{dedup}/x{}", self.stream_seq).as_str());
        headers.insert(DEDUP_ID, dedup.as_str());
        headers.insert(REASON, header_text(reason).as_str());
        self.shared
            .publish(subject, headers, payload)
            .await
            .map_err(|e| err(format_args!("dead-lettering {dedup}"), e))?;
        self.confirm(AckKind::Term, "terminating dead-lettered")
            .await
    }

    async fn in_progress(&self) -> Result<(), QueueError> {
        self.msg()?.ack_with(AckKind::Progress).await.map_err(|e| {
            err(
                format_args!("extending stream sequence {}", self.stream_seq),
                e,
            )
        })
    }
}

impl Drop for NatsSettle {
    fn drop(&mut self) {
        let unsettled: Option<OwnedSemaphorePermit> = self.slot.release_on_drop();
        let (Some(permit), Some(msg)) = (unsettled, self.msg.take()) else {
            return;
        };
        // Dropped unsettled (a panicked task, a cancelled future): give it back now rather than
        // after the ack wait. The slot frees with the permit either way.
        drop(permit);
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = msg.ack_with(AckKind::Nak(None)).await;
            });
        }
    }
}

struct NatsSender {
    client: async_nats::Client,
    subject: String,
}

#[async_trait]
impl Broadcast for NatsSender {
    async fn send(&self, msg: Bytes) -> Result<(), QueueError> {
        self.client
            .publish(self.subject.clone(), msg)
            .await
            .map_err(|e| err(format_args!("publishing to {}", self.subject), e))
    }
}

struct NatsListener(async_nats::Subscriber);

#[async_trait]
impl Listener for NatsListener {
    async fn next(&mut self) -> Result<Option<Bytes>, QueueError> {
        Ok(self.0.next().await.map(|m| m.payload))
    }
}
