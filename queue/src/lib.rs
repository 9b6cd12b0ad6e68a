//! One interface over brokers (DESIGN §3): publish with confirmation and a de-duplication id,
//! consume with bounded in-flight, and settle each delivery exactly once — ack, defer (redeliver
//! after a delay without holding the message in worker memory), release, or dead-letter.
//!
//! Backends implement [`Queue`], [`Consumer`] and [`Settle`]; nothing else in offpeak matches on
//! backend names. [`memory::MemoryQueue`] is the in-process backend of local mode,
//! [`nats::NatsQueue`] speaks NATS JetStream and [`rabbit::RabbitQueue`] RabbitMQ; [`connect`]
//! picks one of the brokers from a URL.

pub mod broker;
pub mod memory;
pub mod nats;
pub mod rabbit;
mod slot;

use async_trait::async_trait;
use bytes::Bytes;
use std::time::Duration;

pub use broker::{connect, deduplicates, redact, BrokerOptions};
pub use memory::MemoryQueue;
pub use nats::{NatsOptions, NatsQueue};
pub use rabbit::{RabbitOptions, RabbitQueue};

/// A broker operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The queue was closed; no more deliveries will come.
    #[error("queue closed")]
    Closed,
    /// The broker refused or failed an operation.
    #[error("{backend}: {message}")]
    Backend {
        /// Which backend failed (`nats`, `rabbitmq`, `memory`, `broker`).
        backend: &'static str,
        /// What was being done and what the broker or client said.
        message: String,
    },
    /// The broker was reached and refused this client for good: wrong credentials, no
    /// permission. Trying again does not help.
    #[error("{backend}: {message}")]
    Refused {
        backend: &'static str,
        message: String,
    },
}

impl QueueError {
    /// Whether the broker refused this client for good (see [`QueueError::Refused`]), as
    /// opposed to a failure that may pass (not reachable yet, restarting).
    pub fn is_refused(&self) -> bool {
        matches!(self, QueueError::Refused { .. })
    }

    /// This error as a refusal for good when `refused` (same text).
    pub fn refused_if(self, refused: bool) -> QueueError {
        match self {
            QueueError::Backend { backend, message } if refused => {
                QueueError::Refused { backend, message }
            }
            other => other,
        }
    }

    /// A [`QueueError::Backend`] with `message` as its context.
    pub fn backend(backend: &'static str, message: impl Into<String>) -> Self {
        QueueError::Backend {
            backend,
            message: message.into(),
        }
    }
}

/// A dead-lettered message and why.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// The message body as it was dead-lettered.
    pub payload: Bytes,
    /// Why it was given up on, as passed to [`Delivery::dead_letter`] but on one line (control
    /// characters become spaces) of at most 1 KiB: brokers carry it in a header.
    pub reason: String,
}

/// The dead letters of one run, as far as a backend can tell them apart, read without removing
/// them (for `offpeak status`).
#[derive(Debug, Clone)]
pub enum RunDeadLetters {
    /// The run's own dead letters: the first `letters` (bounded by the caller), and how many the
    /// broker holds for the run in all.
    Run {
        letters: Vec<DeadLetter>,
        total: u64,
    },
    /// The broker keeps one dead-letter queue for every run and cannot be read without taking
    /// the messages: only its depth, all runs together.
    AllRuns { depth: u64 },
}

impl RunDeadLetters {
    /// Counts by reason, most frequent first (ties by reason), of the letters read.
    pub fn by_reason(&self) -> Vec<(String, u64)> {
        let RunDeadLetters::Run { letters, .. } = self else {
            return Vec::new();
        };
        let mut counts: std::collections::HashMap<&str, u64> = std::collections::HashMap::new();
        for l in letters {
            *counts.entry(l.reason.as_str()).or_default() += 1;
        }
        let mut out: Vec<(String, u64)> = counts
            .into_iter()
            .map(|(r, n)| (r.to_string(), n))
            .collect();
        out.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        out
    }
}

/// How a consumer wants its deliveries.
#[derive(Debug, Clone)]
pub struct ConsumeOptions {
    /// Deliveries handed out and not yet settled, at most. Deferred messages are settled (they
    /// are back on the broker) and do not count.
    pub max_in_flight: usize,
    /// How long the broker waits for a settlement before redelivering to someone else.
    pub ack_wait: Duration,
}

impl Default for ConsumeOptions {
    fn default() -> Self {
        ConsumeOptions {
            max_in_flight: 256,
            ack_wait: Duration::from_secs(60),
        }
    }
}

/// A message source and sink for jobs.
#[async_trait]
pub trait Queue: Send + Sync {
    /// Publishes one job message for `run_id`, returning once the broker has confirmed it.
    /// A second publish with the same `dedup_id` inside the broker's window is dropped.
    async fn publish(&self, run_id: &str, dedup_id: &str, payload: Bytes)
        -> Result<(), QueueError>;

    /// Starts consuming; each call is one independent consumer sharing the same job queue.
    async fn consume(&self, opts: ConsumeOptions) -> Result<Box<dyn Consumer>, QueueError>;

    /// Messages of the job queue not yet settled for good, as far as the broker tells (for
    /// `offpeak status` and autoscaling); `None` when the backend cannot count them. Each backend
    /// documents what its count includes (waiting, deferred, in flight).
    async fn depth(&self) -> Result<Option<u64>, QueueError> {
        Ok(None)
    }

    /// Joins the fleet's broadcast: every worker on this queue hears what any of them sends
    /// (its own messages included), best effort, nothing kept for a listener that was not there.
    /// Workers announce themselves on it to share providers' capacity. `None` when the backend
    /// has no such channel.
    async fn fleet(&self) -> Result<Option<FleetChannel>, QueueError> {
        Ok(None)
    }

    /// The dead letters of `run_id`, at most `max` of them read, none removed; `None` when the
    /// backend cannot tell.
    async fn run_dead_letters(
        &self,
        _run_id: &str,
        _max: usize,
    ) -> Result<Option<RunDeadLetters>, QueueError> {
        Ok(None)
    }
}

/// Sends on the fleet's broadcast (see [`Queue::fleet`]).
#[async_trait]
pub trait Broadcast: Send + Sync {
    /// Sends one message to every listener; fire and forget.
    async fn send(&self, msg: Bytes) -> Result<(), QueueError>;
}

/// Hears the fleet's broadcast (see [`Queue::fleet`]).
#[async_trait]
pub trait Listener: Send {
    /// The next message; `Ok(None)` when the channel has ended (join again).
    async fn next(&mut self) -> Result<Option<Bytes>, QueueError>;
}

/// One worker's end of the fleet's broadcast.
pub struct FleetChannel {
    pub sender: std::sync::Arc<dyn Broadcast>,
    pub listener: Box<dyn Listener>,
}

/// A stream of deliveries.
#[async_trait]
pub trait Consumer: Send {
    /// The next delivery; `Ok(None)` when the queue is closed and drained.
    async fn next(&mut self) -> Result<Option<Delivery>, QueueError>;
}

/// How a backend settles one delivery. Called at most once per delivery, through [`Delivery`].
#[async_trait]
pub trait Settle: Send + Sync {
    /// Done: remove the message for good.
    async fn ack(&self) -> Result<(), QueueError>;
    /// Done, without waiting for the broker to confirm it: see [`Delivery::ack_unconfirmed`].
    async fn ack_unconfirmed(&self) -> Result<(), QueueError> {
        self.ack().await
    }
    /// Redeliver after `delay`, carrying `payload` (the updated envelope) where the backend can.
    async fn defer(&self, delay: Duration, payload: Bytes) -> Result<(), QueueError>;
    /// Give the message back for immediate redelivery (shutdown, or work not started).
    async fn release(&self) -> Result<(), QueueError>;
    /// Move the message to the dead-letter subject/queue with `reason`, then remove it.
    async fn dead_letter(&self, payload: Bytes, reason: &str) -> Result<(), QueueError>;
    /// Tell the broker the message is still being worked on (extends its ack deadline).
    async fn in_progress(&self) -> Result<(), QueueError> {
        Ok(())
    }
}

/// One message handed to a consumer, to be settled exactly once.
pub struct Delivery {
    /// The message body as published (or as last deferred).
    pub payload: Bytes,
    /// How many times the broker has delivered this message, this delivery included (≥ 1).
    pub delivered: u32,
    settle: Box<dyn Settle>,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("bytes", &self.payload.len())
            .field("delivered", &self.delivered)
            .finish()
    }
}

impl Delivery {
    /// Wraps a backend's settlement handle.
    pub fn new(payload: Bytes, delivered: u32, settle: Box<dyn Settle>) -> Self {
        Delivery {
            payload,
            delivered,
            settle,
        }
    }

    /// Done: the message is removed for good.
    pub async fn ack(self) -> Result<(), QueueError> {
        self.settle.ack().await
    }

    /// Done, without waiting for the broker's confirmation: the ack is on its way when this
    /// returns. A confirmed [`Delivery::ack`] of another delivery of the same consumer, sent
    /// afterwards, confirms this one too (the broker takes a connection's acks in order). For a
    /// batch: ack all but one this way, then the last with `ack` — one round trip, not one each.
    /// (RabbitMQ acks are never confirmed; there both are the same.)
    pub async fn ack_unconfirmed(self) -> Result<(), QueueError> {
        self.settle.ack_unconfirmed().await
    }

    /// Hands the message back to the broker to be redelivered, carrying `payload`, no sooner
    /// than `delay` from now; the worker holds nothing meanwhile.
    pub async fn defer(self, delay: Duration, payload: Bytes) -> Result<(), QueueError> {
        self.settle.defer(delay, payload).await
    }

    /// Gives the message back for immediate redelivery, unchanged.
    pub async fn release(self) -> Result<(), QueueError> {
        self.settle.release().await
    }

    /// Moves the message to the dead letters with `reason`, then removes it from the jobs.
    pub async fn dead_letter(self, reason: &str) -> Result<(), QueueError> {
        let payload = self.payload.clone();
        self.settle.dead_letter(payload, reason).await
    }

    /// Tells the broker the message is still being worked on (extends its ack deadline where the
    /// broker has one).
    pub async fn in_progress(&self) -> Result<(), QueueError> {
        self.settle.in_progress().await
    }
}
