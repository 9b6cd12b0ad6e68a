//! The queue contract, written once and run on every backend: NATS JetStream and RabbitMQ (the
//! local services, `OFFPEAK_TEST_NATS_URL` / `OFFPEAK_TEST_AMQP_URL`) and the in-process
//! `MemoryQueue` of local mode. Each behaviour is a function over [`TestQueue`]; `contract!`
//! makes one test of it per backend (`nats::…`, `rabbit::…`, `memory::…`), each on a queue of
//! its own that is deleted afterwards. What only one backend does is tested in its own file.

use bytes::Bytes;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use testkit::queues::{consume_opts, depth, next, next_within, publish, with_queue, TestQueue};

/// Long enough that no test here waits it out: anything redelivered came back for a reason.
const LONG_ACK_WAIT: Duration = Duration::from_secs(30);

async fn each_published_message_is_consumed_once_and_nothing_is_left<Q: TestQueue>(q: Q) {
    for i in 0..10 {
        publish(&q, &format!("j{i}"), &format!("m{i}")).await;
    }
    assert_eq!(depth(&q).await, 10);
    let mut c = q.consume(consume_opts(16, LONG_ACK_WAIT)).await.unwrap();
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
}

/// How the flusher settles a stored file: every ack but the last unconfirmed, the last one
/// confirmed. When that one returns, the broker has taken all of them.
async fn a_confirmed_ack_after_unconfirmed_ones_confirms_them_all<Q: TestQueue>(q: Q) {
    for i in 0..200 {
        publish(&q, &format!("j{i}"), &format!("m{i}")).await;
    }
    assert_eq!(depth(&q).await, 200);
    let mut c = q.consume(consume_opts(256, LONG_ACK_WAIT)).await.unwrap();
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
}

async fn deferred_message_returns_updated_after_its_delay_while_later_ones_flow<Q: TestQueue>(
    q: Q,
) {
    publish(&q, "a", "a1").await;
    // One slot: if the deferred message kept it, nothing else could be consumed.
    let mut c = q.consume(consume_opts(1, LONG_ACK_WAIT)).await.unwrap();
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
}

/// The deferred copy waits in the queue, not in the worker that deferred it: that worker sees
/// nothing early, and once it is gone the copy still reaches another one on time. (On RabbitMQ
/// the delay is crossed in hops through the 1 s tier, bounced on by whichever consumer gets them;
/// the first worker leaves between two hops.)
async fn deferred_message_waits_in_the_queue_and_reaches_another_worker<Q: TestQueue>(q: Q) {
    publish(&q, "a", "a1").await;
    let first = q.second_worker().await;
    let mut c1 = first.consume(consume_opts(1, LONG_ACK_WAIT)).await.unwrap();
    let a = next(&mut c1).await;
    let t0 = Instant::now();
    a.defer(Duration::from_millis(3500), Bytes::from_static(b"a2"))
        .await
        .unwrap();
    let early = tokio::time::timeout(Duration::from_millis(1500), c1.next()).await;
    assert!(early.is_err(), "the copy reached a worker early");
    drop(c1);
    first.disconnect().await;
    let mut c2 = q.consume(consume_opts(1, LONG_ACK_WAIT)).await.unwrap();
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
}

async fn deferrals_far_beyond_max_in_flight_do_not_stall_new_jobs<Q: TestQueue>(q: Q) {
    for i in 0..40 {
        publish(&q, &format!("d{i}"), "later").await;
    }
    let mut c = q.consume(consume_opts(5, LONG_ACK_WAIT)).await.unwrap();
    for _ in 0..40 {
        let d = next(&mut c).await;
        d.defer(Duration::from_secs(60), Bytes::from_static(b"later"))
            .await
            .unwrap();
    }
    // 40 deferred copies, 8 × max_in_flight: none of them may hold a slot.
    publish(&q, "fresh", "now").await;
    let d = next_within(&mut c, 5)
        .await
        .expect("a new job was stuck behind deferred ones");
    assert_eq!(&d.payload[..], b"now");
    d.ack().await.unwrap();
    assert_eq!(
        depth(&q).await,
        40,
        "deferred jobs must still be in the queue"
    );
}

async fn released_message_is_redelivered_with_a_higher_delivery_count<Q: TestQueue>(q: Q) {
    publish(&q, "a", "a1").await;
    let mut c = q.consume(consume_opts(4, LONG_ACK_WAIT)).await.unwrap();
    let d = next(&mut c).await;
    assert_eq!(d.delivered, 1);
    d.release().await.unwrap();
    let d = next_within(&mut c, 2).await.expect("released message back");
    assert_eq!(&d.payload[..], b"a1");
    assert!(d.delivered >= 2, "delivered = {}", d.delivered);
    d.ack().await.unwrap();
}

async fn dropped_delivery_is_given_back_at_once<Q: TestQueue>(q: Q) {
    publish(&q, "a", "a1").await;
    let mut c = q.consume(consume_opts(1, LONG_ACK_WAIT)).await.unwrap();
    drop(next(&mut c).await);
    let d = next_within(&mut c, 2).await.expect("dropped delivery back");
    assert_eq!(&d.payload[..], b"a1");
    assert!(d.delivered >= 2, "delivered = {}", d.delivered);
    d.ack().await.unwrap();
}

async fn dropped_consumer_gives_back_its_pulled_and_unsettled_messages_at_once<Q: TestQueue>(q: Q) {
    for i in 0..3 {
        publish(&q, &format!("j{i}"), &format!("m{i}")).await;
    }
    let first = q.second_worker().await;
    let mut c1 = first
        .consume(consume_opts(5, Duration::from_secs(60)))
        .await
        .unwrap();
    // One handed out (the other two pulled into the consumer's buffer), then the consumer is
    // dropped. Its connection stays up: on NATS, messages of a connection that is gone wait out
    // the ack wait (a RabbitMQ-only test covers a lost connection).
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
    assert_eq!(depth(&q).await, 0);
    drop(first);
}

async fn dead_lettered_message_is_kept_with_its_reason_and_not_redelivered<Q: TestQueue>(q: Q) {
    publish(&q, "bad", "poison").await;
    let mut c = q
        .consume(consume_opts(4, Duration::from_secs(2)))
        .await
        .unwrap();
    let d = next(&mut c).await;
    d.dead_letter("unparseable\nenvelope").await.unwrap();
    let dead = q.dead_letters().await;
    assert_eq!(dead.len(), 1);
    assert_eq!(&dead[0].payload[..], b"poison");
    assert_eq!(dead[0].reason, "unparseable envelope");
    // Reading them back leaves them in place.
    assert_eq!(q.dead_letters().await.len(), 1);
    // Longer than the ack wait: a dead-lettered message must not come back.
    assert!(next_within(&mut c, 3).await.is_none());
    assert_eq!(depth(&q).await, 0);
}

async fn consumer_hands_out_at_most_max_in_flight_unsettled_deliveries<Q: TestQueue>(q: Q) {
    for i in 0..20 {
        publish(&q, &format!("j{i}"), &format!("m{i}")).await;
    }
    let mut c = q.consume(consume_opts(5, LONG_ACK_WAIT)).await.unwrap();
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
}

/// `contract!(module: Backend)`: a module of one `#[tokio::test]` per behaviour, on `Backend`.
macro_rules! contract {
    ($($backend:ident: $queue:ty),* $(,)?) => {$(
        mod $backend {
            contract!(@each $queue;
                each_published_message_is_consumed_once_and_nothing_is_left,
                a_confirmed_ack_after_unconfirmed_ones_confirms_them_all,
                deferred_message_returns_updated_after_its_delay_while_later_ones_flow,
                deferred_message_waits_in_the_queue_and_reaches_another_worker,
                deferrals_far_beyond_max_in_flight_do_not_stall_new_jobs,
                released_message_is_redelivered_with_a_higher_delivery_count,
                dropped_delivery_is_given_back_at_once,
                dropped_consumer_gives_back_its_pulled_and_unsettled_messages_at_once,
                dead_lettered_message_is_kept_with_its_reason_and_not_redelivered,
                consumer_hands_out_at_most_max_in_flight_unsettled_deliveries,
            );
        }
    )*};
    (@each $queue:ty; $($behaviour:ident),* $(,)?) => {$(
        #[tokio::test]
        async fn $behaviour() {
            super::with_queue(super::$behaviour::<$queue>).await;
        }
    )*};
}

contract!(
    nats: queue::NatsQueue,
    rabbit: queue::RabbitQueue,
    memory: queue::MemoryQueue,
);
