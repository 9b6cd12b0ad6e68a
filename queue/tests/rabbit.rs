//! The RabbitMQ backend against a real broker (`OFFPEAK_TEST_AMQP_URL`, default
//! `amqp://guest:guest@127.0.0.1:5672/%2f`). Every test declares its own queues under a random
//! namespace and deletes them at the end, pass or fail.

use bytes::Bytes;
use futures::FutureExt;
use queue::{BrokerOptions, ConsumeOptions, Consumer, Delivery, Queue, RabbitOptions, RabbitQueue};
use std::collections::BTreeSet;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

fn url() -> String {
    std::env::var("OFFPEAK_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// Runs `body` on fresh queues (delay tiers `tiers`), then deletes them whatever happened.
async fn with_tiers<F, Fut>(tiers: &[u64], body: F)
where
    F: FnOnce(RabbitQueue) -> Fut,
    Fut: Future<Output = ()>,
{
    let mut opts = BrokerOptions::with_namespace(format!("t-{:08x}", rand::random::<u32>()));
    opts.delay_tiers = tiers.iter().copied().map(Duration::from_secs).collect();
    let q = RabbitQueue::connect(RabbitOptions::from_broker(&url(), &opts))
        .await
        .expect("RabbitMQ must be running for these tests");
    let outcome = AssertUnwindSafe(body(q.clone())).catch_unwind().await;
    q.delete_topology().await.expect("deleting test queues");
    let _ = q.close().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

async fn with_queue<F, Fut>(body: F)
where
    F: FnOnce(RabbitQueue) -> Fut,
    Fut: Future<Output = ()>,
{
    with_tiers(&[1, 5, 30], body).await;
}

/// Another connection to the same queues: a second worker process.
async fn second_worker(q: &RabbitQueue) -> RabbitQueue {
    RabbitQueue::connect(q.options().clone())
        .await
        .expect("second connection")
}

fn consume_opts(max_in_flight: usize) -> ConsumeOptions {
    ConsumeOptions {
        max_in_flight,
        ack_wait: Duration::from_secs(30),
    }
}

async fn next_within(c: &mut Box<dyn Consumer>, secs: u64) -> Option<Delivery> {
    match tokio::time::timeout(Duration::from_secs(secs), c.next()).await {
        Ok(got) => Some(got.expect("next").expect("stream ended")),
        Err(_) => None,
    }
}

async fn next(c: &mut Box<dyn Consumer>) -> Delivery {
    next_within(c, 10).await.expect("a delivery within 10 s")
}

async fn publish(q: &RabbitQueue, id: &str, body: &str) {
    q.publish("run1", &format!("run1/{id}"), Bytes::from(body.to_string()))
        .await
        .expect("publish");
}

async fn depth(q: &RabbitQueue) -> u64 {
    q.depth().await.expect("depth").expect("rabbitmq counts")
}

#[tokio::test]
async fn each_published_message_is_consumed_once_and_nothing_is_left() {
    with_queue(|q| async move {
        for i in 0..10 {
            publish(&q, &format!("j{i}"), &format!("m{i}")).await;
        }
        assert_eq!(depth(&q).await, 10);
        let mut c = q.consume(consume_opts(16)).await.unwrap();
        let mut seen = BTreeSet::new();
        for _ in 0..10 {
            let d = next(&mut c).await;
            assert_eq!(d.delivered, 1);
            assert!(seen.insert(d.payload.clone()), "delivered twice");
            d.ack().await.unwrap();
        }
        let expected: BTreeSet<_> = (0..10).map(|i| Bytes::from(format!("m{i}"))).collect();
        assert_eq!(seen, expected);
        assert!(
            next_within(&mut c, 1).await.is_none(),
            "an acked message came back"
        );
        assert_eq!(depth(&q).await, 0);
    })
    .await;
}

/// A documented limit, not a feature: quorum queues keep `message_id` but drop no duplicates.
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
async fn deferred_message_returns_updated_after_its_delay_while_later_ones_flow() {
    with_queue(|q| async move {
        publish(&q, "a", "a1").await;
        // One slot: if the deferred message kept it, nothing else could be consumed.
        let mut c = q.consume(consume_opts(1)).await.unwrap();
        let a = next(&mut c).await;
        let t0 = Instant::now();
        a.defer(Duration::from_secs(2), Bytes::from_static(b"a2"))
            .await
            .unwrap();
        publish(&q, "b", "b1").await;
        publish(&q, "c", "c1").await;
        for want in [&b"b1"[..], b"c1"] {
            let d = next(&mut c).await;
            assert_eq!(&d.payload[..], want);
            d.ack().await.unwrap();
        }
        assert!(
            t0.elapsed() < Duration::from_millis(1500),
            "later messages waited behind the deferred one: {:?}",
            t0.elapsed()
        );
        let a = next(&mut c).await;
        assert_eq!(&a.payload[..], b"a2", "the deferral's payload was lost");
        assert!(
            t0.elapsed() >= Duration::from_millis(1950),
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
async fn long_deferral_hops_through_a_short_tier_and_reaches_another_worker() {
    with_tiers(&[1], |q| async move {
        publish(&q, "a", "a1").await;
        let first = second_worker(&q).await;
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
async fn deferrals_far_beyond_max_in_flight_do_not_stall_new_jobs() {
    with_queue(|q| async move {
        for i in 0..40 {
            publish(&q, &format!("d{i}"), "later").await;
        }
        let mut c = q.consume(consume_opts(5)).await.unwrap();
        for _ in 0..40 {
            let d = next(&mut c).await;
            d.defer(Duration::from_secs(60), Bytes::from_static(b"later"))
                .await
                .unwrap();
        }
        publish(&q, "fresh", "now").await;
        let d = next_within(&mut c, 5)
            .await
            .expect("a new job was stuck behind deferred ones");
        assert_eq!(&d.payload[..], b"now");
        d.ack().await.unwrap();
        assert_eq!(
            depth(&q).await,
            40,
            "deferred jobs must wait in the delay queues"
        );
    })
    .await;
}

#[tokio::test]
async fn released_message_is_redelivered_with_a_higher_delivery_count() {
    with_queue(|q| async move {
        publish(&q, "a", "a1").await;
        let mut c = q.consume(consume_opts(4)).await.unwrap();
        let d = next(&mut c).await;
        assert_eq!(d.delivered, 1);
        d.release().await.unwrap();
        let d = next_within(&mut c, 2).await.expect("released message back");
        assert_eq!(&d.payload[..], b"a1");
        assert!(d.delivered >= 2, "delivered = {}", d.delivered);
        d.ack().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn unacked_messages_of_a_lost_connection_go_to_another_worker() {
    with_queue(|q| async move {
        publish(&q, "a", "a1").await;
        publish(&q, "b", "b1").await;
        let lost = second_worker(&q).await;
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
async fn dropped_delivery_is_given_back_at_once() {
    with_queue(|q| async move {
        publish(&q, "a", "a1").await;
        let mut c = q.consume(consume_opts(1)).await.unwrap();
        drop(next(&mut c).await);
        let d = next_within(&mut c, 2).await.expect("dropped delivery back");
        assert_eq!(&d.payload[..], b"a1");
        assert!(d.delivered >= 2);
        d.ack().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn dead_lettered_message_is_kept_with_its_reason_and_not_redelivered() {
    with_queue(|q| async move {
        publish(&q, "bad", "poison").await;
        let mut c = q.consume(consume_opts(4)).await.unwrap();
        let d = next(&mut c).await;
        d.dead_letter("unparseable\nenvelope").await.unwrap();
        let dead = q.dead_letters(10).await.unwrap();
        assert_eq!(dead.len(), 1);
        assert_eq!(&dead[0].payload[..], b"poison");
        assert_eq!(dead[0].reason, "unparseable envelope");
        // Reading them back leaves them in place.
        assert_eq!(q.dead_letters(10).await.unwrap().len(), 1);
        assert!(next_within(&mut c, 1).await.is_none());
        assert_eq!(depth(&q).await, 0);
    })
    .await;
}

#[tokio::test]
async fn consumer_hands_out_at_most_max_in_flight_unsettled_deliveries() {
    with_queue(|q| async move {
        for i in 0..20 {
            publish(&q, &format!("j{i}"), &format!("m{i}")).await;
        }
        let mut c = q.consume(consume_opts(5)).await.unwrap();
        let mut held = Vec::new();
        for _ in 0..5 {
            held.push(next(&mut c).await);
        }
        assert!(
            next_within(&mut c, 1).await.is_none(),
            "a sixth delivery while five are unsettled"
        );
        let mut seen: BTreeSet<Bytes> = held.iter().map(|d| d.payload.clone()).collect();
        held.pop().unwrap().ack().await.unwrap();
        let sixth = next_within(&mut c, 2).await.expect("a slot was freed");
        seen.insert(sixth.payload.clone());
        sixth.ack().await.unwrap();
        for d in held {
            d.ack().await.unwrap();
        }
        while seen.len() < 20 {
            let d = next(&mut c).await;
            assert!(seen.insert(d.payload.clone()), "delivered twice");
            d.ack().await.unwrap();
        }
        assert_eq!(depth(&q).await, 0);
    })
    .await;
}

#[tokio::test]
async fn connect_picks_rabbitmq_for_an_amqp_url_with_default_tiers() {
    let ns = format!("t-{:08x}", rand::random::<u32>());
    let via_factory = queue::connect(&url(), BrokerOptions::with_namespace(ns.clone()))
        .await
        .unwrap();
    via_factory
        .publish("run1", "run1/x", Bytes::from_static(b"x"))
        .await
        .unwrap();
    let q = RabbitQueue::connect(RabbitOptions::from_broker(
        &url(),
        &BrokerOptions::with_namespace(ns),
    ))
    .await
    .unwrap();
    let seen = depth(&q).await;
    q.delete_topology().await.unwrap();
    let _ = q.close().await;
    assert_eq!(seen, 1, "the factory did not use the same queues");
}
