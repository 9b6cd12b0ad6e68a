//! The simulator's chaos answers over real HTTP: hung requests, malformed 200s and huge 200s
//! streamed without a length.

mod common;

use common::{openai, start};
use serde_json::json;
use std::time::{Duration, Instant};

async fn post_raw(
    url: &str,
    timeout: Duration,
) -> Result<(u16, Option<u64>, Vec<u8>), reqwest::Error> {
    let r = reqwest::Client::new()
        .post(url)
        .timeout(timeout)
        .json(&json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await?;
    let status = r.status().as_u16();
    let len = r.content_length();
    let body = r.bytes().await?.to_vec();
    Ok((status, len, body))
}

#[tokio::test]
async fn hung_requests_never_answer_before_the_client_gives_up() {
    let mut p = openai("p", "m");
    p.chaos.hang = 1.0;
    let h = start(1, vec![p]).await;
    let url = format!("{}/chat/completions", h.base_url("p"));
    let t = Instant::now();
    let e = post_raw(&url, Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(e.is_timeout(), "{e}");
    assert!(t.elapsed() >= Duration::from_millis(300));
    assert_eq!(h.stats("p").hung, 1);
    // The counters are served over HTTP too, for tests that run the simulator as a process.
    let stats: serde_json::Value = reqwest::get(format!("http://{}/_sim/stats", h.addr()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["p"]["hung"], 1);
    h.shutdown().await;
}

#[tokio::test]
async fn malformed_answers_are_200s_whose_body_is_not_json() {
    let mut p = openai("p", "m");
    p.chaos.malformed = 1.0;
    let h = start(1, vec![p]).await;
    let url = format!("{}/chat/completions", h.base_url("p"));
    let (status, _, body) = post_raw(&url, Duration::from_secs(5)).await.unwrap();
    assert_eq!(status, 200);
    assert!(serde_json::from_slice::<serde_json::Value>(&body).is_err());
    assert_eq!(h.stats("p").errors, 1);
    h.shutdown().await;
}

#[tokio::test]
async fn huge_answers_are_streamed_without_a_length_at_the_configured_size() {
    let mut p = openai("p", "m");
    p.chaos.huge = 1.0;
    p.chaos.huge_bytes = 3 << 20;
    let h = start(1, vec![p]).await;
    let url = format!("{}/chat/completions", h.base_url("p"));
    let (status, len, body) = post_raw(&url, Duration::from_secs(20)).await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(len, None, "a huge answer must not announce its length");
    assert_eq!(body.len(), 3 << 20);
    h.shutdown().await;
}

#[tokio::test]
async fn chaos_probabilities_are_rolled_per_request() {
    let mut p = openai("p", "m");
    p.chaos.malformed = 0.5;
    let h = start(9, vec![p]).await;
    let url = format!("{}/chat/completions", h.base_url("p"));
    let mut bad = 0;
    for _ in 0..200 {
        let (_, _, body) = post_raw(&url, Duration::from_secs(5)).await.unwrap();
        bad += usize::from(serde_json::from_slice::<serde_json::Value>(&body).is_err());
    }
    assert!((60..=140).contains(&bad), "{bad} of 200 malformed");
    h.shutdown().await;
}

#[test]
fn chaos_probabilities_count_towards_the_total_with_errors() {
    let text = "[[providers]]\nname='a'\nkind='openai'\nmodels=['m']\nerrors={'500'=0.7}\nchaos={hang=0.4}\n";
    let e = sim::Scenario::from_toml("s.toml", text)
        .unwrap_err()
        .to_string();
    assert!(e.contains("sum"), "{e}");
}
