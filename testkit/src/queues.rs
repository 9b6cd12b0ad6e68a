//! One harness over every queue backend: a fresh queue of the test's own, deleted afterwards
//! pass or fail; a second worker on the same queue; its dead letters; and the few steps every
//! queue test takes (publish, wait for a delivery, read the depth). The queue contract suite
//! (`queue/tests/contract.rs`) is written once against [`TestQueue`] and run on each backend.

use crate::services::{amqp_url, nats_url};
use crate::unique;
use async_trait::async_trait;
use bytes::Bytes;
use futures::FutureExt;
use queue::{
    BrokerOptions, ConsumeOptions, Consumer, DeadLetter, Delivery, MemoryQueue, NatsOptions,
    NatsQueue, Queue, RabbitOptions, RabbitQueue,
};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

/// A queue backend as the tests drive it.
#[async_trait]
pub trait TestQueue: Queue + Clone + Sized + 'static {
    /// An empty queue of the test's own (on a broker: a namespace nobody else uses).
    async fn fresh() -> Self;
    /// Another connection to the same queue: a second worker process.
    async fn second_worker(&self) -> Self;
    /// Every dead letter so far, read without removing them.
    async fn dead_letters(&self) -> Vec<DeadLetter>;
    /// Goes away as a worker process does when it exits: closes this connection, leaving the
    /// queue to the others.
    async fn disconnect(self);
    /// Deletes what [`TestQueue::fresh`] declared and lets go of the connection.
    async fn tear_down(&self);
}

#[async_trait]
impl TestQueue for NatsQueue {
    async fn fresh() -> Self {
        let opts = BrokerOptions::with_namespace(unique("t"));
        NatsQueue::connect(NatsOptions::from_broker(&nats_url(), &opts))
            .await
            .expect("NATS with JetStream must be running for these tests")
    }

    async fn second_worker(&self) -> Self {
        NatsQueue::connect(self.options().clone())
            .await
            .expect("second connection")
    }

    async fn dead_letters(&self) -> Vec<DeadLetter> {
        NatsQueue::dead_letters(self, 100_000)
            .await
            .expect("read dead letters")
    }

    /// The client closes its connection when its last handle is dropped.
    async fn disconnect(self) {}

    async fn tear_down(&self) {
        self.delete_topology().await.expect("deleting test streams");
    }
}

#[async_trait]
impl TestQueue for RabbitQueue {
    async fn fresh() -> Self {
        rabbit_with(BrokerOptions::with_namespace(unique("t"))).await
    }

    async fn second_worker(&self) -> Self {
        RabbitQueue::connect(self.options().clone())
            .await
            .expect("second connection")
    }

    async fn dead_letters(&self) -> Vec<DeadLetter> {
        RabbitQueue::dead_letters(self, 100_000)
            .await
            .expect("read dead letters")
    }

    /// The client closes its connection when its last handle is dropped.
    async fn disconnect(self) {}

    async fn tear_down(&self) {
        self.delete_topology().await.expect("deleting test queues");
        let _ = self.close().await;
    }
}

#[async_trait]
impl TestQueue for MemoryQueue {
    async fn fresh() -> Self {
        MemoryQueue::new()
    }

    /// Another handle on the same in-process queue (a worker task of the same process).
    async fn second_worker(&self) -> Self {
        self.clone()
    }

    async fn dead_letters(&self) -> Vec<DeadLetter> {
        MemoryQueue::dead_letters(self)
    }

    /// Dropping a handle leaves the queue to the others.
    async fn disconnect(self) {}

    async fn tear_down(&self) {
        self.close();
    }
}

/// A RabbitMQ queue on the local broker with `opts` (a namespace of the test's own, delay tiers
/// of its choice).
pub async fn rabbit_with(opts: BrokerOptions) -> RabbitQueue {
    RabbitQueue::connect(RabbitOptions::from_broker(&amqp_url(), &opts))
        .await
        .expect("RabbitMQ must be running for these tests")
}

/// Runs `body` on a fresh queue of backend `Q`, then tears it down whatever happened.
pub async fn with_queue<Q, F, Fut>(body: F)
where
    Q: TestQueue,
    F: FnOnce(Q) -> Fut,
    Fut: Future<Output = ()>,
{
    with(Q::fresh().await, body).await;
}

/// Runs `body` on `q`, then tears `q` down whatever happened (a panic is passed on after).
pub async fn with<Q, F, Fut>(q: Q, body: F)
where
    Q: TestQueue,
    F: FnOnce(Q) -> Fut,
    Fut: Future<Output = ()>,
{
    let outcome = AssertUnwindSafe(body(q.clone())).catch_unwind().await;
    q.tear_down().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// Consumer options with these limits.
pub fn consume_opts(max_in_flight: usize, ack_wait: Duration) -> ConsumeOptions {
    ConsumeOptions {
        max_in_flight,
        ack_wait,
    }
}

/// The next delivery, or `None` if none comes within `secs` seconds; panics on an error or the
/// end of the stream.
pub async fn next_within(c: &mut Box<dyn Consumer>, secs: u64) -> Option<Delivery> {
    match tokio::time::timeout(Duration::from_secs(secs), c.next()).await {
        Ok(got) => Some(got.expect("next").expect("stream ended")),
        Err(_) => None,
    }
}

/// The next delivery, which must come within 10 s.
pub async fn next(c: &mut Box<dyn Consumer>) -> Delivery {
    next_within(c, 10).await.expect("a delivery within 10 s")
}

/// Publishes `body` as job `id` of run `run1` (de-duplication id `run1/{id}`).
pub async fn publish(q: &impl Queue, id: &str, body: &str) {
    q.publish("run1", &format!("run1/{id}"), Bytes::from(body.to_string()))
        .await
        .expect("publish");
}

/// The queue's depth, which this backend must be able to count.
pub async fn depth(q: &impl Queue) -> u64 {
    q.depth()
        .await
        .expect("depth")
        .expect("the backend counts its messages")
}

/// The dead letters in `opts`' namespace on the broker at `url` (NATS or RabbitMQ).
pub async fn broker_dead_letters(url: &str, opts: &BrokerOptions) -> Vec<DeadLetter> {
    if is_nats(url) {
        let q = NatsQueue::connect(NatsOptions::from_broker(url, opts))
            .await
            .expect("connect to NATS");
        TestQueue::dead_letters(&q).await
    } else {
        let q = RabbitQueue::connect(RabbitOptions::from_broker(url, opts))
            .await
            .expect("connect to RabbitMQ");
        let d = TestQueue::dead_letters(&q).await;
        let _ = q.close().await;
        d
    }
}

/// Deletes `opts`' namespace (streams or queues) on the broker at `url`, best effort.
pub async fn delete_broker_namespace(url: &str, opts: &BrokerOptions) {
    if is_nats(url) {
        if let Ok(q) = NatsQueue::connect(NatsOptions::from_broker(url, opts)).await {
            let _ = q.delete_topology().await;
        }
    } else if let Ok(q) = RabbitQueue::connect(RabbitOptions::from_broker(url, opts)).await {
        let _ = q.delete_topology().await;
        let _ = q.close().await;
    }
}

fn is_nats(url: &str) -> bool {
    url.starts_with("nats") || url.starts_with("tls")
}
