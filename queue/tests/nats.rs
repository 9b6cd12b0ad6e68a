//! What only the NATS JetStream backend does, against a real server (`OFFPEAK_TEST_NATS_URL`,
//! default `nats://127.0.0.1:4222`, JetStream on): de-duplication, the ack wait and progress
//! reports, subject tokens. What every backend does is in `contract.rs`. Every test declares its
//! own streams and consumer under a unique namespace and deletes them at the end, pass or fail.

use bytes::Bytes;
use queue::{BrokerOptions, NatsQueue, Queue, QueueError};
use std::time::{Duration, Instant};
use testkit::nats_url;
use testkit::queues::{consume_opts, depth, next, next_within, publish, TestQueue};

/// Runs `body` on a fresh namespace, then deletes its streams whatever happened.
async fn with_queue<F, Fut>(body: F)
where
    F: FnOnce(NatsQueue) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    testkit::queues::with_queue(body).await;
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
async fn unsettled_message_of_a_silent_worker_goes_to_another_after_the_ack_wait() {
    with_queue(|q| async move {
        publish(&q, "a", "a1").await;
        let hung = q.second_worker().await;
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
        let via_factory = queue::connect(&nats_url(), BrokerOptions::with_namespace(ns))
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
        let other = q.second_worker().await;
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
