//! What only the RabbitMQ backend does, against a real broker (`OFFPEAK_TEST_AMQP_URL`, default
//! `amqp://guest:guest@127.0.0.1:5672/%2f`): delay tiers, no de-duplication, a lost connection.
//! What every backend does is in `contract.rs`. Every test declares its own queues under a
//! unique namespace and deletes them at the end, pass or fail.

use bytes::Bytes;
use queue::{BrokerOptions, ConsumeOptions, Queue, RabbitOptions, RabbitQueue};
use std::collections::BTreeSet;
use std::future::Future;
use std::time::{Duration, Instant};
use testkit::queues::{depth, next, publish, rabbit_with, with, TestQueue};
use testkit::{amqp_url, unique};

/// Runs `body` on fresh queues (delay tiers `tiers`), then deletes them whatever happened.
async fn with_tiers<F, Fut>(tiers: &[u64], body: F)
where
    F: FnOnce(RabbitQueue) -> Fut,
    Fut: Future<Output = ()>,
{
    let mut opts = BrokerOptions::with_namespace(unique("t"));
    opts.delay_tiers = tiers.iter().copied().map(Duration::from_secs).collect();
    with(rabbit_with(opts).await, body).await;
}

async fn with_queue<F, Fut>(body: F)
where
    F: FnOnce(RabbitQueue) -> Fut,
    Fut: Future<Output = ()>,
{
    with_tiers(&[1, 5, 30], body).await;
}

fn consume_opts(max_in_flight: usize) -> ConsumeOptions {
    testkit::queues::consume_opts(max_in_flight, Duration::from_secs(30))
}

#[tokio::test]
async fn rabbitmq_does_not_deduplicate_a_republished_job() {
    with_queue(|q| async move {
        publish(&q, "j1", "first").await;
        publish(&q, "j1", "second").await;
        assert_eq!(depth(&q).await, 2);
    })
    .await;
}

#[tokio::test]
async fn long_deferral_hops_through_a_short_tier_and_reaches_another_worker() {
    with_tiers(&[1], |q| async move {
        publish(&q, "a", "a1").await;
        let first = q.second_worker().await;
        let mut c1 = first.consume(consume_opts(1)).await.unwrap();
        let a = next(&mut c1).await;
        let t0 = Instant::now();
        a.defer(Duration::from_millis(3500), Bytes::from_static(b"a2"))
            .await
            .unwrap();
        // The first worker bounces the copy on through the 1 s tier, then goes away (between
        // two hops, so no hop is cut in half).
        let bounced = tokio::time::timeout(Duration::from_millis(1500), c1.next()).await;
        assert!(bounced.is_err(), "the copy reached a worker early");
        drop(c1);
        first.close().await.unwrap();
        let mut c2 = q.consume(consume_opts(1)).await.unwrap();
        let a = next(&mut c2).await;
        assert_eq!(&a.payload[..], b"a2");
        assert!(
            t0.elapsed() >= Duration::from_millis(3450),
            "{:?}",
            t0.elapsed()
        );
        assert_eq!(a.delivered, 2);
        a.ack().await.unwrap();
        assert_eq!(depth(&q).await, 0);
    })
    .await;
}

#[tokio::test]
async fn unacked_messages_of_a_lost_connection_go_to_another_worker() {
    with_queue(|q| async move {
        publish(&q, "a", "a1").await;
        publish(&q, "b", "b1").await;
        let lost = q.second_worker().await;
        let mut c1 = lost.consume(consume_opts(4)).await.unwrap();
        let held = next(&mut c1).await;
        lost.close().await.unwrap();
        let mut c2 = q.consume(consume_opts(4)).await.unwrap();
        let mut seen = BTreeSet::new();
        let mut redelivered = 0;
        for _ in 0..2 {
            let d = next(&mut c2).await;
            if d.payload == held.payload {
                redelivered = d.delivered;
            }
            seen.insert(d.payload.clone());
            d.ack().await.unwrap();
        }
        assert_eq!(seen.len(), 2);
        assert!(redelivered >= 2, "delivered = {redelivered}");
        assert!(
            held.ack().await.is_err(),
            "an ack on a closed connection succeeded"
        );
        assert_eq!(depth(&q).await, 0);
    })
    .await;
}

#[tokio::test]
async fn connect_picks_rabbitmq_for_an_amqp_url_with_default_tiers() {
    let ns = unique("t");
    let via_factory = queue::connect(&amqp_url(), BrokerOptions::with_namespace(ns.clone()))
        .await
        .unwrap();
    via_factory
        .publish("run1", "run1/x", Bytes::from_static(b"x"))
        .await
        .unwrap();
    let q = RabbitQueue::connect(RabbitOptions::from_broker(
        &amqp_url(),
        &BrokerOptions::with_namespace(ns),
    ))
    .await
    .unwrap();
    let seen = depth(&q).await;
    q.delete_topology().await.unwrap();
    let _ = q.close().await;
    assert_eq!(seen, 1, "the factory did not use the same queues");
}
