//! The RabbitMQ backend (DESIGN §3).
//!
//! Topology, declared idempotently on connect (same arguments every time, or RabbitMQ refuses):
//! a durable quorum queue of jobs (`offpeak.jobs`), a durable quorum queue of dead letters
//! (`offpeak.dlq`) that also catches anything the broker itself gives up on, and one delay queue
//! per tier (`offpeak.delay.1s`, …) whose messages expire after the tier's TTL and are
//! dead-lettered back into the jobs queue (at-least-once dead-lettering).
//!
//! Publishing is persistent (delivery mode 2), mandatory and waits for the publisher confirm.
//! Consumers use manual acks with a prefetch of `max_in_flight`.
//!
//! **Deferral.** RabbitMQ has no delayed NACK, so [`Settle::defer`] publishes the updated payload,
//! stamped `offpeak-not-before`, to the longest delay tier not above the delay (or the shortest),
//! waits for the confirm, then acks the original. A consumer receiving a message whose
//! not-before is still ahead sends it on to the next fitting tier the same way — so long delays
//! are reached by hops and no worker ever holds a waiting message.
//!
//! **De-duplication.** `message_id` is set to the de-duplication id, but RabbitMQ (quorum queues
//! included) does not drop duplicates: a re-submission is enqueued again, and the results'
//! `job_id` key de-duplicates downstream.

use crate::broker::{redact, BrokerOptions};
use crate::slot::{header_text, remaining, unix_ms_now, Slot};
use crate::{
    Broadcast, ConsumeOptions, Consumer, DeadLetter, Delivery, FleetChannel, Listener, Queue,
    QueueError, RunDeadLetters, Settle,
};
use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use lapin::message::Delivery as AmqpDelivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicGetOptions, BasicNackOptions,
    BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions, ExchangeDeclareOptions,
    QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{
    Acker, BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind,
};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

const BACKEND: &str = "rabbitmq";
/// Unix milliseconds before which a deferred message must not reach a worker.
const NOT_BEFORE: &str = "offpeak-not-before";
/// Deliveries of the message before it was deferred, so `delivered` keeps counting.
const PRIOR_DELIVERIES: &str = "offpeak-delivered";
/// The run the job belongs to (RabbitMQ routes by queue, not by run).
const RUN_ID: &str = "offpeak-run-id";
/// Why a message was dead-lettered.
const REASON: &str = "offpeak-reason";
/// Our headers all start so; only they travel to a deferred or dead-lettered copy.
const OWN_PREFIX: &str = "offpeak-";

/// Where and how [`RabbitQueue`] connects, and the names it declares.
#[derive(Debug, Clone)]
pub struct RabbitOptions {
    /// Broker URL: `amqp://user:pass@host:5672/vhost` or `amqps://…`.
    pub url: String,
    /// The quorum queue of jobs.
    pub jobs_queue: String,
    /// The quorum queue of dead letters.
    pub dlq_queue: String,
    /// Delay queues are named `<delay_queue_prefix>.<tier>`, e.g. `offpeak.delay.30s`.
    pub delay_queue_prefix: String,
    /// The delay tiers' TTLs (at least one); see [`BrokerOptions::delay_tiers`].
    pub delay_tiers: Vec<Duration>,
    /// The fanout exchange of the fleet's broadcast (see [`Queue::fleet`]).
    pub fleet_exchange: String,
}

impl Default for RabbitOptions {
    fn default() -> Self {
        RabbitOptions::from_broker("amqp://127.0.0.1:5672/%2f", &BrokerOptions::default())
    }
}

impl RabbitOptions {
    /// DESIGN §3's names under `opts.namespace`: `<namespace>.jobs`, `<namespace>.dlq`,
    /// `<namespace>.delay.<tier>`.
    pub fn from_broker(url: &str, opts: &BrokerOptions) -> Self {
        let ns = &opts.namespace;
        RabbitOptions {
            url: url.to_string(),
            jobs_queue: format!("{ns}.jobs"),
            dlq_queue: format!("{ns}.dlq"),
            delay_queue_prefix: format!("{ns}.delay"),
            delay_tiers: opts.delay_tiers.clone(),
            fleet_exchange: format!("{ns}.fleet"),
        }
    }
}

/// A job queue on RabbitMQ. Cloning gives another handle on the same connection.
#[derive(Clone)]
pub struct RabbitQueue {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for RabbitQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RabbitQueue")
            .field("jobs_queue", &self.shared.opts.jobs_queue)
            .finish()
    }
}

struct Shared {
    opts: RabbitOptions,
    conn: Connection,
    /// The confirm-mode channel every publish goes through; reopened if the broker closed it.
    publisher: tokio::sync::Mutex<Channel>,
    /// (TTL, queue name), shortest first.
    tiers: Vec<(Duration, String)>,
}

fn err(context: impl std::fmt::Display, e: impl std::fmt::Display) -> QueueError {
    QueueError::backend(BACKEND, format!("{context}: {e}"))
}

fn tier_name(d: Duration) -> String {
    let ms = d.as_millis();
    match ms {
        _ if ms.is_multiple_of(3_600_000) => format!("{}h", ms / 3_600_000),
        _ if ms.is_multiple_of(60_000) => format!("{}m", ms / 60_000),
        _ if ms.is_multiple_of(1_000) => format!("{}s", ms / 1_000),
        _ => format!("{ms}ms"),
    }
}

fn table(entries: impl IntoIterator<Item = (&'static str, AMQPValue)>) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in entries {
        t.insert(k.into(), v);
    }
    t
}

fn text(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}

/// A channel of `conn`, for declaring or inspecting queues.
async fn open_channel(conn: &Connection) -> Result<Channel, QueueError> {
    conn.create_channel()
        .await
        .map_err(|e| err("opening a channel", e))
}

async fn open_publisher(conn: &Connection) -> Result<Channel, QueueError> {
    let ch = conn
        .create_channel()
        .await
        .map_err(|e| err("opening the publishing channel", e))?;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(|e| err("enabling publisher confirms", e))?;
    Ok(ch)
}

impl RabbitQueue {
    /// Connects and declares the jobs, dead-letter and delay queues.
    pub async fn connect(opts: RabbitOptions) -> Result<Self, QueueError> {
        let mut tiers: Vec<Duration> = opts
            .delay_tiers
            .iter()
            .copied()
            .filter(|d| d.as_millis() > 0)
            .collect();
        tiers.sort();
        tiers.dedup();
        if tiers.is_empty() {
            return Err(QueueError::backend(
                BACKEND,
                "at least one non-zero delay tier is needed for deferrals",
            ));
        }
        let props = ConnectionProperties::default().with_connection_name("offpeak".into());
        let conn = Connection::connect(&opts.url, props).await.map_err(|e| {
            // The broker answered the handshake with a refusal (ACCESS_REFUSED for wrong
            // credentials, NOT_ALLOWED for a vhost without permission).
            let refused = matches!(e.kind(), lapin::ErrorKind::ProtocolError(_));
            err(format_args!("connecting to {}", redact(&opts.url)), e).refused_if(refused)
        })?;
        let ch = open_channel(&conn).await?;
        let quorum = || ("x-queue-type", text("quorum"));
        let declare = |name: String, args: FieldTable| {
            let ch = &ch;
            async move {
                ch.queue_declare(name.as_str().into(), QueueDeclareOptions::durable(), args)
                    .await
                    .map(|_| ())
                    .map_err(|e| err(format_args!("declaring queue {name}"), e))
            }
        };
        declare(
            opts.jobs_queue.clone(),
            table([
                quorum(),
                // What the broker itself gives up on (e.g. a delivery limit) lands with the dead
                // letters instead of vanishing.
                ("x-dead-letter-exchange", text("")),
                ("x-dead-letter-routing-key", text(&opts.dlq_queue)),
            ]),
        )
        .await?;
        declare(opts.dlq_queue.clone(), table([quorum()])).await?;
        let mut named = Vec::new();
        for ttl in tiers {
            let name = format!("{}.{}", opts.delay_queue_prefix, tier_name(ttl));
            let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
            declare(
                name.clone(),
                table([
                    quorum(),
                    ("x-message-ttl", AMQPValue::LongLongInt(ttl_ms)),
                    ("x-dead-letter-exchange", text("")),
                    ("x-dead-letter-routing-key", text(&opts.jobs_queue)),
                    ("x-dead-letter-strategy", text("at-least-once")),
                    ("x-overflow", text("reject-publish")),
                ]),
            )
            .await?;
            named.push((ttl, name));
        }
        drop(ch);
        let publisher = open_publisher(&conn).await?;
        Ok(RabbitQueue {
            shared: Arc::new(Shared {
                opts,
                conn,
                publisher: tokio::sync::Mutex::new(publisher),
                tiers: named,
            }),
        })
    }

    /// The options this queue was connected with.
    pub fn options(&self) -> &RabbitOptions {
        &self.shared.opts
    }

    /// Up to `max` dead letters, oldest first. They are fetched unacknowledged and returned to
    /// the queue when the reading channel closes, so nothing is removed (each read does count as
    /// a delivery of the quorum queue).
    pub async fn dead_letters(&self, max: usize) -> Result<Vec<DeadLetter>, QueueError> {
        let dlq = &self.shared.opts.dlq_queue;
        let ch = open_channel(&self.shared.conn).await?;
        let mut out = Vec::new();
        while out.len() < max {
            let got = ch
                .basic_get(dlq.as_str().into(), BasicGetOptions { no_ack: false })
                .await
                .map_err(|e| err(format_args!("reading dead letters from {dlq}"), e))?;
            let Some(msg) = got else { break };
            let d = msg.delivery;
            let reason = header_string(&d.properties, REASON)
                .or_else(|| header_string(&d.properties, "x-first-death-reason"))
                .unwrap_or_default();
            out.push(DeadLetter {
                payload: Bytes::from(d.data),
                reason,
            });
        }
        ch.close(200, "OK".into())
            .await
            .map_err(|e| err("closing the dead-letter reading channel", e))?;
        Ok(out)
    }

    /// Deletes the jobs, dead-letter and delay queues with everything in them (tests, teardown).
    pub async fn delete_topology(&self) -> Result<(), QueueError> {
        let ch = open_channel(&self.shared.conn).await?;
        let o = &self.shared.opts;
        let names = [&o.jobs_queue, &o.dlq_queue]
            .into_iter()
            .chain(self.shared.tiers.iter().map(|(_, n)| n));
        for name in names {
            ch.queue_delete(name.as_str().into(), QueueDeleteOptions::default())
                .await
                .map_err(|e| err(format_args!("deleting queue {name}"), e))?;
        }
        Ok(())
    }

    /// Closes the connection: the broker returns every unacknowledged delivery of it to its
    /// queue. Handles and consumers of this queue fail from then on.
    pub async fn close(&self) -> Result<(), QueueError> {
        self.shared
            .conn
            .close(200, "OK".into())
            .await
            .map_err(|e| err("closing the connection", e))
    }
}

#[async_trait]
impl Queue for RabbitQueue {
    /// A fanout exchange (not durable: heartbeats are worth nothing after a restart), and per
    /// listener an exclusive, auto-deleted queue bound to it, consumed without acks.
    async fn fleet(&self) -> Result<Option<FleetChannel>, QueueError> {
        let exchange = self.shared.opts.fleet_exchange.clone();
        let ch = open_channel(&self.shared.conn).await?;
        ch.exchange_declare(
            exchange.as_str().into(),
            ExchangeKind::Fanout,
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| err(format_args!("declaring exchange {exchange}"), e))?;
        let q = ch
            .queue_declare(
                "".into(),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(|e| err("declaring the fleet listener's queue", e))?;
        ch.queue_bind(
            q.name().clone(),
            exchange.as_str().into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| err(format_args!("binding to exchange {exchange}"), e))?;
        let consumer = ch
            .basic_consume(
                q.name().clone(),
                "".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..BasicConsumeOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(|e| err("listening to the fleet", e))?;
        Ok(Some(FleetChannel {
            sender: Arc::new(RabbitSender {
                ch: ch.clone(),
                exchange,
            }),
            listener: Box::new(RabbitListener { _ch: ch, consumer }),
        }))
    }

    async fn publish(
        &self,
        run_id: &str,
        dedup_id: &str,
        payload: Bytes,
    ) -> Result<(), QueueError> {
        let headers = table([(RUN_ID, text(run_id))]);
        let jobs = self.shared.opts.jobs_queue.clone();
        self.shared
            .publish(&jobs, dedup_id, headers, &payload)
            .await
            .map_err(|e| err(format_args!("publishing {dedup_id}"), e))
    }

    /// A consumer on its own channel with a prefetch of `max_in_flight`. `ack_wait` does not
    /// apply: RabbitMQ redelivers when the consumer's connection or channel goes away, and
    /// otherwise only after the broker-wide `consumer_timeout` (30 min by default), which
    /// [`Settle::in_progress`] cannot extend.
    async fn consume(&self, opts: ConsumeOptions) -> Result<Box<dyn Consumer>, QueueError> {
        static TAGS: AtomicU64 = AtomicU64::new(0);
        let max_in_flight = opts.max_in_flight.clamp(1, usize::from(u16::MAX));
        let jobs = &self.shared.opts.jobs_queue;
        let channel = self
            .shared
            .conn
            .create_channel()
            .await
            .map_err(|e| err("opening a consumer channel", e))?;
        channel
            .basic_qos(max_in_flight as u16, BasicQosOptions::default())
            .await
            .map_err(|e| err("setting the prefetch", e))?;
        let tag = format!(
            "offpeak-{}-{}",
            std::process::id(),
            TAGS.fetch_add(1, Ordering::Relaxed)
        );
        let consumer = channel
            .basic_consume(
                jobs.as_str().into(),
                tag.as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| err(format_args!("consuming from {jobs}"), e))?;
        Ok(Box::new(RabbitConsumer {
            shared: self.shared.clone(),
            channel,
            consumer: Some(consumer),
            permits: Arc::new(Semaphore::new(max_in_flight)),
        }))
    }

    /// Counts ready messages in the jobs queue and the delay queues: waiting and deferred.
    /// Deliveries held unacknowledged by consumers are not included (AMQP does not report them).
    async fn depth(&self) -> Result<Option<u64>, QueueError> {
        let ch = open_channel(&self.shared.conn).await?;
        let names = std::iter::once(&self.shared.opts.jobs_queue)
            .chain(self.shared.tiers.iter().map(|(_, n)| n));
        let mut total = 0u64;
        for name in names {
            total += message_count(&ch, name).await?;
        }
        Ok(Some(total))
    }

    /// The dead-letter queue's depth, all runs together: a quorum queue cannot be read without
    /// taking its messages (and every peek counts as a delivery against its delivery limit).
    async fn run_dead_letters(
        &self,
        _run_id: &str,
        _max: usize,
    ) -> Result<Option<RunDeadLetters>, QueueError> {
        let ch = open_channel(&self.shared.conn).await?;
        let depth = message_count(&ch, &self.shared.opts.dlq_queue).await;
        let _ = ch.close(200, "OK".into()).await;
        Ok(Some(RunDeadLetters::AllRuns { depth: depth? }))
    }
}

impl Shared {
    async fn publisher(&self) -> Result<Channel, QueueError> {
        let mut ch = self.publisher.lock().await;
        if !ch.status().connected() {
            *ch = open_publisher(&self.conn).await?;
        }
        Ok(ch.clone())
    }

    /// Publishes a persistent message to `queue` and waits for the broker's confirm.
    async fn publish(
        &self,
        queue: &str,
        message_id: &str,
        headers: FieldTable,
        payload: &[u8],
    ) -> Result<(), QueueError> {
        let props = BasicProperties::default()
            .with_delivery_mode(2)
            .with_message_id(message_id.into())
            .with_headers(headers);
        let confirm = self
            .publisher()
            .await?
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                payload,
                props,
            )
            .await
            .map_err(|e| err(format_args!("sending to {queue}"), e))?
            .await
            .map_err(|e| err(format_args!("awaiting the confirm from {queue}"), e))?;
        match confirm {
            Confirmation::Ack(None) => Ok(()),
            Confirmation::Ack(Some(_)) => Err(QueueError::backend(
                BACKEND,
                format!("message to {queue} was unroutable (queue missing?)"),
            )),
            Confirmation::Nack(_) => Err(QueueError::backend(
                BACKEND,
                format!("broker refused a message to {queue}"),
            )),
            Confirmation::NotRequested => Err(QueueError::backend(
                BACKEND,
                "publisher confirms are not enabled on the channel",
            )),
        }
    }

    /// The delay queue for a wait of `wait`: the longest tier not above it, else the shortest.
    fn tier_for(&self, wait: Duration) -> &str {
        self.tiers
            .iter()
            .rev()
            .find(|(ttl, _)| *ttl <= wait)
            .or(self.tiers.first())
            .map_or(self.opts.jobs_queue.as_str(), |(_, name)| name.as_str())
    }

    /// Sends `payload` on towards its not-before time through the delay queues, keeping our
    /// headers from `props` plus `extra`.
    async fn send_delayed(
        &self,
        props: &BasicProperties,
        wait: Duration,
        extra: impl IntoIterator<Item = (&'static str, AMQPValue)>,
        payload: &[u8],
    ) -> Result<(), QueueError> {
        let mut headers = own_headers(props);
        for (k, v) in extra {
            headers.insert(k.into(), v);
        }
        let queue = if wait.is_zero() {
            self.opts.jobs_queue.as_str()
        } else {
            self.tier_for(wait)
        };
        self.publish(queue, &message_id(props), headers, payload)
            .await
    }
}

fn message_id(props: &BasicProperties) -> String {
    props
        .message_id()
        .as_ref()
        .map(|m| m.as_str().to_string())
        .unwrap_or_default()
}

/// Our own headers of a message, without the broker's (`x-death`, `x-delivery-count`, …).
fn own_headers(props: &BasicProperties) -> FieldTable {
    let mut t = FieldTable::default();
    if let Some(h) = props.headers() {
        for (k, v) in h {
            if k.as_str().starts_with(OWN_PREFIX) {
                t.insert(k.clone(), v.clone());
            }
        }
    }
    t
}

fn header<'a>(props: &'a BasicProperties, name: &str) -> Option<&'a AMQPValue> {
    props.headers().as_ref().and_then(|h| h.inner().get(name))
}

fn header_string(props: &BasicProperties, name: &str) -> Option<String> {
    match header(props, name)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_string()),
        _ => None,
    }
}

fn header_u64(props: &BasicProperties, name: &str) -> Option<u64> {
    let v = header(props, name)?;
    let n: i64 = match v {
        AMQPValue::ShortShortInt(n) => (*n).into(),
        AMQPValue::ShortShortUInt(n) => (*n).into(),
        AMQPValue::ShortInt(n) => (*n).into(),
        AMQPValue::ShortUInt(n) => (*n).into(),
        AMQPValue::LongInt(n) => (*n).into(),
        AMQPValue::LongUInt(n) => (*n).into(),
        AMQPValue::LongLongInt(n) => *n,
        AMQPValue::Timestamp(n) => return Some(*n),
        AMQPValue::LongString(s) => return std::str::from_utf8(s.as_bytes()).ok()?.parse().ok(),
        _ => return None,
    };
    u64::try_from(n).ok()
}

fn ms_value(ms: u64) -> AMQPValue {
    AMQPValue::LongLongInt(i64::try_from(ms).unwrap_or(i64::MAX))
}

/// One worker's consumer on the jobs queue, on its own channel.
struct RabbitConsumer {
    shared: Arc<Shared>,
    channel: Channel,
    /// Always `Some` until dropped.
    consumer: Option<lapin::Consumer>,
    permits: Arc<Semaphore>,
}

#[async_trait]
impl Consumer for RabbitConsumer {
    async fn next(&mut self) -> Result<Option<Delivery>, QueueError> {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| QueueError::Closed)?;
        loop {
            let consumer = self.consumer.as_mut().ok_or(QueueError::Closed)?;
            let d = match consumer.next().await {
                None => return Ok(None),
                Some(Err(e)) => return Err(err("receiving from the jobs queue", e)),
                Some(Ok(d)) => d,
            };
            if let Some(wait) = header_u64(&d.properties, NOT_BEFORE).and_then(remaining) {
                // Too early: on to the next delay tier, then off this worker.
                if let Err(e) = self.hop(&d, wait).await {
                    let _ = d.acker.nack(requeue()).await;
                    return Err(e);
                }
                continue;
            }
            let prior = header_u64(&d.properties, PRIOR_DELIVERIES).unwrap_or(0);
            // Quorum queues count earlier deliveries in x-delivery-count; other queue types only
            // flag a redelivery.
            let earlier =
                header_u64(&d.properties, "x-delivery-count").unwrap_or(u64::from(d.redelivered));
            let delivered = u32::try_from(prior + earlier + 1).unwrap_or(u32::MAX);
            let AmqpDelivery {
                data,
                properties,
                acker,
                ..
            } = d;
            let settle = RabbitSettle {
                shared: self.shared.clone(),
                _channel: self.channel.clone(),
                acker,
                properties,
                delivered,
                slot: Slot::new(permit),
            };
            return Ok(Some(Delivery::new(
                Bytes::from(data),
                delivered,
                Box::new(settle),
            )));
        }
    }
}

impl RabbitConsumer {
    async fn hop(&self, d: &AmqpDelivery, wait: Duration) -> Result<(), QueueError> {
        self.shared
            .send_delayed(&d.properties, wait, [], &d.data)
            .await?;
        ack(&d.acker, "acking a message sent on to its delay tier").await
    }
}

fn requeue() -> BasicNackOptions {
    BasicNackOptions {
        multiple: false,
        requeue: true,
    }
}

async fn ack(acker: &Acker, what: &str) -> Result<(), QueueError> {
    match acker.ack(BasicAckOptions::default()).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(QueueError::backend(
            BACKEND,
            format!("{what}: the channel is gone; the broker redelivers the message"),
        )),
        Err(e) => Err(err(what, e)),
    }
}

impl Drop for RabbitConsumer {
    fn drop(&mut self) {
        let Some(mut consumer) = self.consumer.take() else {
            return;
        };
        let channel = self.channel.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = channel
                    .basic_cancel(consumer.tag(), BasicCancelOptions::default())
                    .await;
                // Prefetched deliveries never handed out go back now, not when the channel
                // closes after the last in-flight delivery is settled.
                while let Ok(Some(Ok(d))) =
                    tokio::time::timeout(Duration::from_millis(500), consumer.next()).await
                {
                    let _ = d.acker.nack(requeue()).await;
                }
            });
        }
    }
}

/// Settles one RabbitMQ delivery.
struct RabbitSettle {
    shared: Arc<Shared>,
    /// Keeps the consumer's channel — and so this delivery's ack — alive until settled.
    _channel: Channel,
    acker: Acker,
    properties: BasicProperties,
    delivered: u32,
    slot: Slot,
}

#[async_trait]
impl Settle for RabbitSettle {
    async fn ack(&self) -> Result<(), QueueError> {
        let _slot = self.slot.claim(BACKEND)?;
        ack(&self.acker, "acking").await
    }

    async fn defer(&self, delay: Duration, payload: Bytes) -> Result<(), QueueError> {
        let _slot = self.slot.claim(BACKEND)?;
        let not_before = unix_ms_now().saturating_add(delay.as_millis() as u64);
        let extra = [
            (NOT_BEFORE, ms_value(not_before)),
            (PRIOR_DELIVERIES, ms_value(self.delivered.into())),
        ];
        self.shared
            .send_delayed(&self.properties, delay, extra, &payload)
            .await?;
        ack(&self.acker, "acking the deferred original").await
    }

    async fn release(&self) -> Result<(), QueueError> {
        let _slot = self.slot.claim(BACKEND)?;
        match self.acker.nack(requeue()).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(QueueError::backend(
                BACKEND,
                "releasing: the channel is gone; the broker redelivers the message",
            )),
            Err(e) => Err(err("releasing", e)),
        }
    }

    async fn dead_letter(&self, payload: Bytes, reason: &str) -> Result<(), QueueError> {
        let _slot = self.slot.claim(BACKEND)?;
        let mut headers = own_headers(&self.properties);
        headers.insert(REASON.into(), text(&header_text(reason)));
        let dlq = &self.shared.opts.dlq_queue;
        let id = message_id(&self.properties);
        self.shared
            .publish(dlq, &id, headers, &payload)
            .await
            .map_err(|e| err(format_args!("dead-lettering {id}"), e))?;
        ack(&self.acker, "acking the dead-lettered original").await
    }
}

impl Drop for RabbitSettle {
    fn drop(&mut self) {
        let Some(permit) = self.slot.release_on_drop() else {
            return;
        };
        drop(permit);
        // Dropped unsettled: give it back now rather than when the channel closes.
        let acker = self.acker.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = acker.nack(requeue()).await;
            });
        }
    }
}

/// The messages ready in queue `name` (a passive declare: the queue is not created).
async fn message_count(ch: &lapin::Channel, name: &str) -> Result<u64, QueueError> {
    let q = ch
        .queue_declare(
            name.into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(|e| err(format_args!("inspecting queue {name}"), e))?;
    Ok(u64::from(q.message_count()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tier_names_read_like_durations() {
        assert_eq!(tier_name(Duration::from_secs(1)), "1s");
        assert_eq!(tier_name(Duration::from_secs(120)), "2m");
        assert_eq!(tier_name(Duration::from_secs(3600)), "1h");
        assert_eq!(tier_name(Duration::from_millis(250)), "250ms");
    }

    #[test]
    fn own_headers_leave_the_brokers_behind() {
        let headers = table([
            (RUN_ID, text("r1")),
            ("x-delivery-count", AMQPValue::LongInt(3)),
        ]);
        let props = BasicProperties::default().with_headers(headers);
        let own = own_headers(&props);
        assert!(own.contains_key(RUN_ID));
        assert!(!own.contains_key("x-delivery-count"));
        assert_eq!(header_u64(&props, "x-delivery-count"), Some(3));
    }
}

struct RabbitSender {
    ch: Channel,
    exchange: String,
}

#[async_trait]
impl Broadcast for RabbitSender {
    async fn send(&self, msg: Bytes) -> Result<(), QueueError> {
        self.ch
            .basic_publish(
                self.exchange.as_str().into(),
                "".into(),
                BasicPublishOptions::default(),
                &msg,
                BasicProperties::default(),
            )
            .await
            .map(|_| ())
            .map_err(|e| err(format_args!("publishing to {}", self.exchange), e))
    }
}

struct RabbitListener {
    _ch: Channel,
    consumer: lapin::Consumer,
}

#[async_trait]
impl Listener for RabbitListener {
    async fn next(&mut self) -> Result<Option<Bytes>, QueueError> {
        match self.consumer.next().await {
            Some(Ok(d)) => Ok(Some(Bytes::from(d.data))),
            Some(Err(e)) => Err(err("hearing the fleet", e)),
            None => Ok(None),
        }
    }
}
