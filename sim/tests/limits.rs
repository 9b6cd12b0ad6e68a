//! The simulator's scripted trouble over real HTTP: token buckets, concurrency caps,
//! rate-limited and outage windows, injected error rates.

mod common;

use common::{anthropic, chat, message, openai, start};
use sim::Window;

#[tokio::test]
async fn rpm_bucket_answers_429_with_retry_after_once_exhausted() {
    let mut p = openai("p", "m");
    p.rpm = Some(3);
    let h = start(1, vec![p]).await;
    for _ in 0..3 {
        assert_eq!(chat(&h, "p", "m", "hi").await.status, 200);
    }
    let a = chat(&h, "p", "m", "hi").await;
    assert_eq!(a.status, 429);
    let retry: u64 = a.header("retry-after").unwrap().parse().unwrap();
    // 3 a minute refill one every 20 s.
    assert!((1..=20).contains(&retry), "retry-after {retry}");
    assert_eq!(a.body["error"]["code"], "rate_limit_exceeded");
    let s = h.stats("p");
    assert_eq!((s.requests, s.ok, s.rate_limited, s.errors), (4, 3, 1, 0));
    h.shutdown().await;
}

#[tokio::test]
async fn tpm_bucket_counts_prompt_plus_max_tokens() {
    let mut p = openai("p", "m");
    // The default max_tokens (256) plus a short prompt fits once in 400 tokens, not twice.
    p.tpm = Some(400);
    let h = start(1, vec![p]).await;
    assert_eq!(chat(&h, "p", "m", "hi").await.status, 200);
    let a = chat(&h, "p", "m", "hi").await;
    assert_eq!(a.status, 429);
    assert!(a.header("retry-after").is_some());
    h.shutdown().await;
}

#[tokio::test]
async fn rate_limited_window_answers_429_with_retry_after_until_window_end() {
    let mut p = anthropic("a", "claude");
    p.rate_limited = vec![Window {
        from_s: 0.0,
        to_s: 30.0,
    }];
    let h = start(1, vec![p]).await;
    let a = message(&h, "a", "claude", "hi").await;
    assert_eq!(a.status, 429);
    let retry: u64 = a.header("retry-after").unwrap().parse().unwrap();
    assert!((29..=30).contains(&retry), "retry-after {retry}");
    assert_eq!(a.body["type"], "error");
    assert_eq!(a.body["error"]["type"], "rate_limit_error");
    assert!(a.header("request-id").is_some());
    h.shutdown().await;
}

#[tokio::test]
async fn outage_window_answers_503_then_service_resumes_after_it() {
    let mut p = openai("p", "m");
    p.outages = vec![Window {
        from_s: 0.0,
        to_s: 0.3,
    }];
    let h = start(1, vec![p]).await;
    let a = chat(&h, "p", "m", "hi").await;
    assert_eq!(a.status, 503);
    assert_eq!(a.body["error"]["type"], "server_error");
    tokio::time::sleep(std::time::Duration::from_millis(350)).await;
    assert_eq!(chat(&h, "p", "m", "hi").await.status, 200);
    assert_eq!(h.stats("p").errors, 1);
    h.shutdown().await;
}

#[tokio::test]
async fn requests_beyond_the_concurrency_cap_answer_429() {
    let mut p = openai("p", "m");
    p.concurrency = Some(1);
    p.latency_ms = 400.0;
    let h = start(1, vec![p]).await;
    let (a, b) = tokio::join!(chat(&h, "p", "m", "one"), async {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        chat(&h, "p", "m", "two").await
    });
    assert_eq!(a.status, 200);
    assert_eq!(b.status, 429);
    assert!(b.header("retry-after").is_some());
    h.shutdown().await;
}

#[tokio::test]
async fn injected_error_rates_are_roughly_honoured_over_400_requests() {
    let mut p = openai("p", "m");
    p.errors.insert("500".into(), 0.10);
    p.errors.insert("529".into(), 0.05);
    let h = start(7, vec![p]).await;
    let (mut e500, mut e529, mut ok) = (0, 0, 0);
    for i in 0..400 {
        match chat(&h, "p", "m", &format!("q{i}")).await.status {
            200 => ok += 1,
            500 => e500 += 1,
            529 => e529 += 1,
            s => panic!("unexpected status {s}"),
        }
    }
    // Expected 40 and 20; the bounds are about three standard deviations.
    assert!((22..=58).contains(&e500), "500s: {e500}");
    assert!((7..=33).contains(&e529), "529s: {e529}");
    let s = h.stats("p");
    assert_eq!((s.requests, s.ok, s.errors), (400, ok, e500 + e529));
    h.shutdown().await;
}

#[tokio::test]
async fn injected_error_bodies_use_each_providers_real_shape() {
    let mut o = openai("o", "m");
    o.errors.insert("500".into(), 1.0);
    let mut a = anthropic("a", "claude");
    a.errors.insert("529".into(), 1.0);
    let h = start(1, vec![o, a]).await;
    let r = chat(&h, "o", "m", "hi").await;
    assert_eq!(r.status, 500);
    assert_eq!(r.body["error"]["type"], "server_error");
    assert!(r.body["error"]["message"].is_string());
    let r = message(&h, "a", "claude", "hi").await;
    assert_eq!(r.status, 529);
    assert_eq!(r.body["error"]["type"], "overloaded_error");
    h.shutdown().await;
}
