//! The NATS JetStream backend against a real server (`OFFPEAK_TEST_NATS_URL`, default
//! `nats://127.0.0.1:4222`, JetStream on). Every test declares its own streams and consumer under
//! a random namespace and deletes them at the end, pass or fail.

use bytes::Bytes;
use futures::FutureExt;
use queue::{
    BrokerOptions, ConsumeOptions, Consumer, Delivery, NatsOptions, NatsQueue, Queue, QueueError,
};
use std::collections::BTreeSet;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

fn url() -> String {
    std::env::var("OFFPEAK_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

fn options(namespace: &str) -> NatsOptions {
    NatsOptions::from_broker(&url(), &BrokerOptions::with_namespace(namespace))
}

/// Runs `body` on a fresh namespace, then deletes its streams whatever happened.
async fn with_queue<F, Fut>(body: F)
where
    F: FnOnce(NatsQueue) -> Fut,
    Fut: Future<Output = ()>,
{
    let ns = format!("t-{:08x}", rand::random::<u32>());
    let q = NatsQueue::connect(options(&ns))
        .await
        .expect("NATS with JetStream must be running for these tests");
    let outcome = AssertUnwindSafe(body(q.clone())).catch_unwind().await;
    q.delete_topology().await.expect("deleting test streams");
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// Another connection to the same streams: a second worker process.
async fn second_worker(q: &NatsQueue) -> NatsQueue {
    NatsQueue::connect(q.options().clone())
        .await
        .expect("second connection")
}

fn consume_opts(max_in_flight: usize, ack_wait: Duration) -> ConsumeOptions {
    ConsumeOptions {
        max_in_flight,
        ack_wait,
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

async fn publish(q: &NatsQueue, id: &str, body: &str) {
    q.publish("run1", &format!("run1/{id}"), Bytes::from(body.to_string()))
        .await
        .expect("publish");
}

async fn depth(q: &NatsQueue) -> u64 {
    q.depth().await.expect("depth").expect("nats counts")
}

#[tokio::test]
async fn each_published_message_is_consumed_once_and_nothing_is_left() {
    with_queue(|q| async move {
        for i in 0..10 {
            publish(&q, &format!("j{i}"), &format!("m{i}")).await;
        }
        let mut c = q
            .consume(consume_opts(16, Duration::from_secs(30)))
            .await
            .unwrap();
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

/// How the flusher settles a stored file: every ack but the last unconfirmed, the last one
/// confirmed. When that one returns, the broker has taken all of them.
#[tokio::test]
async fn a_confirmed_ack_after_unconfirmed_ones_confirms_them_all() {
    with_queue(|q| async move {
        for i in 0..200 {
            publish(&q, &format!("j{i}"), &format!("m{i}")).await;
        }
        assert_eq!(depth(&q).await, 200);
        let mut c = q
            .consume(consume_opts(256, Duration::from_secs(30)))
            .await
            .unwrap();
        let mut got = Vec::new();
        for _ in 0..200 {
            got.push(next(&mut c).await);
        }
        let last = got.pop().unwrap();
        futures::future::try_join_all(got.into_iter().map(|d| d.ack_unconfirmed()))
            .await
            .unwrap();
        last.ack().await.unwrap();
        assert_eq!(
            depth(&q).await,
            0,
            "every ack taken once the last is confirmed"
        );
        assert!(
            next_within(&mut c, 1).await.is_none(),
            "an acked message came back"
        );
    })
    .await;
}

#[tokio::test]
async fn the_same_dedup_id_inside_the_window_is_enqueued_once() {
    with_queue(|q| async move {
        publish(&q, "j1", "first").await;
        publish(&q, "j1", "second").await;
        assert_eq!(depth(&q).await, 1);
        let mut c = q
            .consume(consume_opts(4, Duration::from_secs(30)))
            .await
            .unwrap();
        let d = next(&mut c).await;
        assert_eq!(&d.payload[..], b"first");
        d.ack().await.unwrap();
        assert!(next_within(&mut c, 1).await.is_none());
    })
    .await;
}

#[tokio::test]
async fn deferred_message_returns_updated_after_its_delay_while_later_ones_flow() {
    with_queue(|q| async move {
        publish(&q, "a", "a1").await;
        // One slot: if the deferred message kept it, nothing else could be consumed.
        let mut c = q
            .consume(consume_opts(1, Duration::from_secs(30)))
            .await
            .unwrap();
        let a = next(&mut c).await;
        assert_eq!(&a.payload[..], b"a1");
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
async fn deferred_copy_waits_on_the_broker_and_reaches_another_worker() {
    with_queue(|q| async move {
        publish(&q, "a", "a1").await;
        let first = second_worker(&q).await;
        let mut c1 = first
            .consume(consume_opts(1, Duration::from_secs(30)))
            .await
            .unwrap();
        let a = next(&mut c1).await;
        let t0 = Instant::now();
        a.defer(Duration::from_secs(3), Bytes::from_static(b"a2"))
            .await
            .unwrap();
        // The first worker sees the copy too early, hands it back, and then goes away.
        assert!(next_within(&mut c1, 1).await.is_none());
        drop(c1);
        drop(first);
        let mut c2 = q
            .consume(consume_opts(1, Duration::from_secs(30)))
            .await
            .unwrap();
        let a = next(&mut c2).await;
        assert_eq!(&a.payload[..], b"a2");
        assert!(
            t0.elapsed() >= Duration::from_millis(2950),
            "{:?}",
            t0.elapsed()
        );
        a.ack().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn deferrals_far_beyond_max_in_flight_do_not_stall_new_jobs() {
    with_queue(|q| async move {
        for i in 0..40 {
            publish(&q, &format!("d{i}"), "later").await;
        }
        let mut c = q
            .consume(consume_opts(5, Duration::from_secs(30)))
            .await
            .unwrap();
        for _ in 0..40 {
            let d = next(&mut c).await;
            d.defer(Duration::from_secs(60), Bytes::from_static(b"later"))
                .await
                .unwrap();
        }
        // 40 deferred copies now sit in the consumer's ack-pending set, 8 × max_in_flight.
        publish(&q, "fresh", "now").await;
        let d = next_within(&mut c, 5)
            .await
            .expect("a new job was stuck behind deferred ones (MaxAckPending too small?)");
        assert_eq!(&d.payload[..], b"now");
        d.ack().await.unwrap();
        assert_eq!(
            depth(&q).await,
            40,
            "deferred jobs must still be on the broker"
        );
    })
    .await;
}

#[tokio::test]
async fn released_message_is_redelivered_with_a_higher_delivery_count() {
    with_queue(|q| async move {
        publish(&q, "a", "a1").await;
        let mut c = q
            .consume(consume_opts(4, Duration::from_secs(30)))
            .await
            .unwrap();
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
async fn unsettled_message_of_a_silent_worker_goes_to_another_after_the_ack_wait() {
    with_queue(|q| async move {
        publish(&q, "a", "a1").await;
        let hung = second_worker(&q).await;
        let mut c1 = hung
            .consume(consume_opts(4, Duration::from_secs(2)))
            .await
            .unwrap();
        // Received and then never settled: a worker stuck mid-job.
        let held = next(&mut c1).await;
        let t0 = Instant::now();
        let mut c2 = q
            .consume(consume_opts(4, Duration::from_secs(2)))
            .await
            .unwrap();
        let d = next(&mut c2).await;
        assert_eq!(&d.payload[..], b"a1");
        assert!(d.delivered >= 2);
        assert!(
            t0.elapsed() >= Duration::from_millis(1500),
            "{:?}",
            t0.elapsed()
        );
        d.ack().await.unwrap();
        drop(held);
    })
    .await;
}

#[tokio::test]
async fn dropped_consumer_gives_back_its_pulled_and_unsettled_messages_at_once() {
    with_queue(|q| async move {
        for i in 0..3 {
            publish(&q, &format!("j{i}"), &format!("m{i}")).await;
        }
        let first = second_worker(&q).await;
        let mut c1 = first
            .consume(consume_opts(5, Duration::from_secs(60)))
            .await
            .unwrap();
        // One handed out (the other two pulled into the consumer's buffer), then the worker dies.
        let d = next(&mut c1).await;
        drop(d);
        drop(c1);
        let t0 = Instant::now();
        let mut c2 = q
            .consume(consume_opts(5, Duration::from_secs(60)))
            .await
            .unwrap();
        let mut seen = BTreeSet::new();
        for _ in 0..3 {
            let d = next(&mut c2).await;
            seen.insert(d.payload.clone());
            d.ack().await.unwrap();
        }
        assert_eq!(seen.len(), 3);
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "messages waited out the 60 s ack wait"
        );
    })
    .await;
}

#[tokio::test]
async fn dead_lettered_message_is_kept_with_its_reason_and_not_redelivered() {
    with_queue(|q| async move {
        publish(&q, "bad", "poison").await;
        let mut c = q
            .consume(consume_opts(4, Duration::from_secs(2)))
            .await
            .unwrap();
        let d = next(&mut c).await;
        d.dead_letter("unparseable\nenvelope").await.unwrap();
        let dead = q.dead_letters(10).await.unwrap();
        assert_eq!(dead.len(), 1);
        assert_eq!(&dead[0].payload[..], b"poison");
        assert_eq!(dead[0].reason, "unparseable envelope");
        // Longer than the ack wait: a dead-lettered message must not come back.
        assert!(next_within(&mut c, 3).await.is_none());
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
        let mut c = q
            .consume(consume_opts(5, Duration::from_secs(30)))
            .await
            .unwrap();
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
async fn run_ids_that_are_not_a_subject_token_are_refused() {
    with_queue(|q| async move {
        let e = q.publish("a.b", "x", Bytes::new()).await;
        assert!(matches!(e, Err(QueueError::Backend { .. })));
        assert_eq!(depth(&q).await, 0);
    })
    .await;
}

#[tokio::test]
async fn connect_picks_nats_for_a_nats_url() {
    with_queue(|q| async move {
        let ns = q.options().subject_prefix.clone();
        let via_factory = queue::connect(&url(), BrokerOptions::with_namespace(ns))
            .await
            .unwrap();
        via_factory
            .publish("run1", "run1/x", Bytes::from_static(b"x"))
            .await
            .unwrap();
        assert_eq!(
            depth(&q).await,
            1,
            "the factory did not use the same stream"
        );
        assert_eq!(via_factory.depth().await.unwrap(), Some(1));
    })
    .await;
}

#[tokio::test]
async fn in_progress_keeps_a_long_job_from_going_to_another_worker() {
    with_queue(|q| async move {
        publish(&q, "slow", "s1").await;
        let mut c1 = q
            .consume(consume_opts(1, Duration::from_secs(2)))
            .await
            .unwrap();
        let d = next(&mut c1).await;
        let other = second_worker(&q).await;
        let mut c2 = other
            .consume(consume_opts(1, Duration::from_secs(2)))
            .await
            .unwrap();
        // Twice the ack wait, reporting progress every second: nobody else may get the job.
        let watcher = tokio::spawn(async move { next_within(&mut c2, 4).await.map(|d| d.payload) });
        for _ in 0..4 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            d.in_progress().await.unwrap();
        }
        assert_eq!(
            watcher.await.unwrap(),
            None,
            "the job was redelivered mid-work"
        );
        d.ack().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn a_worker_starting_with_another_ack_wait_joins_the_same_consumer() {
    with_queue(|q| async move {
        publish(&q, "a", "a1").await;
        let _first = q
            .consume(consume_opts(1, Duration::from_secs(30)))
            .await
            .unwrap();
        let mut second = q
            .consume(consume_opts(2, Duration::from_secs(2)))
            .await
            .expect("a changed ack wait must update the durable consumer, not fail");
        let held = next(&mut second).await;
        let t0 = Instant::now();
        // The new ack wait is in force: the unsettled delivery comes back after ~2 s, not 30 s.
        let again = next_within(&mut second, 6)
            .await
            .expect("redelivered after the updated ack wait");
        assert_eq!(again.payload, held.payload);
        assert!(
            t0.elapsed() >= Duration::from_millis(1500),
            "{:?}",
            t0.elapsed()
        );
        again.ack().await.unwrap();
        drop(held);
    })
    .await;
}
