//! The prompt cache over real HTTP: OpenAI's automatic prefix caching (`cached_tokens` in
//! 128-token steps beyond 1,024, a lifetime, a minimum length) and Anthropic's explicit
//! `cache_control` breakpoints (writes, reads, lifetimes, the lookback to earlier blocks).

mod common;

use common::{anthropic, openai, post, start, Answer};
use serde_json::{json, Value};
use sim::{SimCache, SimHandle};
use std::time::Duration;

/// A text of `tokens` simulated tokens' worth of characters (4 a token), all multiples of 4.
fn long_text(tokens: usize) -> String {
    "abcd".repeat(tokens)
}

/// Posts a chat request with a system message and a user message to OpenAI-kind `provider`.
async fn chat_with_system(h: &SimHandle, provider: &str, system: &str, user: &str) -> Answer {
    let body = json!({ "model": "m", "messages": [
        { "role": "system", "content": system },
        { "role": "user", "content": user }
    ] });
    let url = format!("{}/chat/completions", h.base_url(provider));
    let a = post(&url, &[], &body).await;
    assert_eq!(a.status, 200, "{}", a.body);
    a
}

fn cached(a: &Answer) -> u64 {
    a.body["usage"]["prompt_tokens_details"]["cached_tokens"]
        .as_u64()
        .unwrap()
}

fn prompt_tokens(a: &Answer) -> u64 {
    a.body["usage"]["prompt_tokens"].as_u64().unwrap()
}

#[tokio::test]
async fn openai_second_request_reads_the_shared_prefix_in_128_token_steps_beyond_1024() {
    let h = start(1, vec![openai("p", "m")]).await;
    // 2,000 tokens of text plus 4 for the message's role.
    let system = long_text(2000);
    let shared = 2004;
    let first = chat_with_system(&h, "p", &system, "What is the first answer?").await;
    assert_eq!(cached(&first), 0);
    let second = chat_with_system(&h, "p", &system, "Tell me something else").await;
    let c = cached(&second);
    assert!(c >= 1024 && c.is_multiple_of(128), "cached {c}");
    assert!(
        c <= shared && c + 128 > shared,
        "cached {c} of a {shared}-token prefix"
    );
    // The whole prompt: 2 messages' roles and (8,000 + 22) / 4 characters, rounded up.
    assert_eq!(prompt_tokens(&second), 8 + 2006);
    assert_eq!(
        second.body["usage"]["total_tokens"].as_u64().unwrap(),
        prompt_tokens(&second) + second.body["usage"]["completion_tokens"].as_u64().unwrap()
    );
    h.shutdown().await;
}

#[tokio::test]
async fn openai_streamed_usage_chunk_reports_cached_tokens() {
    let h = start(1, vec![openai("p", "m")]).await;
    let system = long_text(1500);
    chat_with_system(&h, "p", &system, "warm the cache").await;
    let body = json!({ "model": "m", "stream": true, "stream_options": { "include_usage": true },
                       "messages": [{ "role": "system", "content": system },
                                    { "role": "user", "content": "now stream" }] });
    let url = format!("{}/chat/completions", h.base_url("p"));
    let text = reqwest::Client::new()
        .post(&url)
        .json(&body)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let usage: Value = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str::<Value>(d).unwrap())
        .find(|c| c["usage"].is_object())
        .map(|c| c["usage"].clone())
        .unwrap();
    let c = usage["prompt_tokens_details"]["cached_tokens"]
        .as_u64()
        .unwrap();
    assert_eq!(c, 1024 + 3 * 128, "1,504 shared tokens: {usage}");
    h.shutdown().await;
}

#[tokio::test]
async fn openai_prefix_expires_after_its_ttl_unless_used() {
    let mut p = openai("p", "m");
    p.cache.ttl_s = 1.0;
    let h = start(1, vec![p]).await;
    let system = long_text(1200);
    assert_eq!(cached(&chat_with_system(&h, "p", &system, "a").await), 0);
    assert!(cached(&chat_with_system(&h, "p", &system, "b").await) >= 1024);
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(cached(&chat_with_system(&h, "p", &system, "c").await), 0);
    h.shutdown().await;
}

#[tokio::test]
async fn openai_prompts_under_1024_tokens_never_cache_and_a_disabled_cache_never_does() {
    let mut off = openai("off", "m");
    off.cache = SimCache {
        enabled: false,
        ..SimCache::default()
    };
    let h = start(1, vec![openai("p", "m"), off]).await;
    let short = long_text(500);
    for _ in 0..2 {
        let a = chat_with_system(&h, "p", &short, "same question").await;
        assert_eq!(cached(&a), 0, "a {}-token prompt", prompt_tokens(&a));
    }
    let long = long_text(1100);
    for provider in ["p", "off"] {
        chat_with_system(&h, provider, &long, "same question").await;
    }
    assert_eq!(
        cached(&chat_with_system(&h, "p", &long, "same question").await),
        1024
    );
    assert_eq!(
        cached(&chat_with_system(&h, "off", &long, "same question").await),
        0
    );
    h.shutdown().await;
}

/// Posts an Anthropic request whose system prompt is `system`, with a `cache_control`
/// breakpoint of `ttl` on it (none: no breakpoint).
async fn message_with_system(
    h: &SimHandle,
    provider: &str,
    system: &str,
    ttl: Option<&str>,
    user: &str,
) -> Answer {
    let mut block = json!({ "type": "text", "text": system });
    if let Some(ttl) = ttl {
        block["cache_control"] = json!({ "type": "ephemeral", "ttl": ttl });
    }
    let body = json!({ "model": "claude", "max_tokens": 64, "system": [block],
                       "messages": [{ "role": "user", "content": user }] });
    let url = format!("{}/messages", h.base_url(provider));
    let a = post(&url, &[("anthropic-version", "2023-06-01")], &body).await;
    assert_eq!(a.status, 200, "{}", a.body);
    a
}

/// (input_tokens, cache_read_input_tokens, cache_creation_input_tokens) of an answer.
fn anthropic_usage(a: &Answer) -> (u64, u64, u64) {
    let u = &a.body["usage"];
    let n = |k: &str| u[k].as_u64().unwrap();
    (
        n("input_tokens"),
        n("cache_read_input_tokens"),
        n("cache_creation_input_tokens"),
    )
}

#[tokio::test]
async fn anthropic_breakpoint_writes_the_system_prefix_then_reads_it() {
    let h = start(1, vec![anthropic("a", "claude")]).await;
    let system = long_text(2000);
    let whole = anthropic_usage(&message_with_system(&h, "a", &system, None, "hi").await);
    assert_eq!((whole.1, whole.2), (0, 0), "no cache_control, no caching");
    let first = message_with_system(&h, "a", &system, Some("5m"), "hi").await;
    let (input, read, creation) = anthropic_usage(&first);
    assert_eq!(read, 0);
    assert!(creation >= 1024, "creation {creation}");
    assert_eq!(input + read + creation, whole.0);
    let split = &first.body["usage"]["cache_creation"];
    assert_eq!(split["ephemeral_5m_input_tokens"], creation);
    assert_eq!(split["ephemeral_1h_input_tokens"], 0);
    let (input2, read2, creation2) =
        anthropic_usage(&message_with_system(&h, "a", &system, Some("5m"), "hi").await);
    assert_eq!((read2, creation2), (creation, 0));
    assert_eq!(input2 + read2, whole.0);
    h.shutdown().await;
}

#[tokio::test]
async fn anthropic_one_hour_breakpoint_outlives_the_five_minute_lifetime() {
    let mut p = anthropic("a", "claude");
    p.cache.ttl_s = 0.5;
    let h = start(1, vec![p]).await;
    let short_lived = long_text(1500);
    let long_lived = long_text(1600);
    let w5 = message_with_system(&h, "a", &short_lived, Some("5m"), "hi").await;
    let w1 = message_with_system(&h, "a", &long_lived, Some("1h"), "hi").await;
    assert!(w5.body["usage"]["cache_creation"]["ephemeral_5m_input_tokens"].as_u64() > Some(0));
    let written_1h = w1.body["usage"]["cache_creation"]["ephemeral_1h_input_tokens"].clone();
    assert!(written_1h.as_u64() > Some(0), "{}", w1.body);
    tokio::time::sleep(Duration::from_millis(700)).await;
    let again5 =
        anthropic_usage(&message_with_system(&h, "a", &short_lived, Some("5m"), "hi").await);
    let again1 =
        anthropic_usage(&message_with_system(&h, "a", &long_lived, Some("1h"), "hi").await);
    assert_eq!(again5.1, 0, "the 5m prefix expired and is written again");
    assert!(again5.2 > 0);
    assert_eq!(json!(again1.1), written_1h, "the 1h prefix is still read");
    h.shutdown().await;
}

#[tokio::test]
async fn anthropic_moving_breakpoint_reads_the_previous_turn_through_the_lookback() {
    let h = start(1, vec![anthropic("a", "claude")]).await;
    let url = format!("{}/messages", h.base_url("a"));
    let headers = [("anthropic-version", "2023-06-01")];
    let turn = |text: &str, mark: bool| {
        let mut block = json!({ "type": "text", "text": text });
        if mark {
            block["cache_control"] = json!({ "type": "ephemeral" });
        }
        block
    };
    let doc = long_text(1500);
    let first = json!({ "model": "claude", "max_tokens": 16, "messages": [
        { "role": "user", "content": [turn(&doc, false), turn("first question", true)] }
    ] });
    let a = post(&url, &headers, &first).await;
    let (_, read, written) = anthropic_usage(&a);
    assert_eq!(read, 0);
    let second = json!({ "model": "claude", "max_tokens": 16, "messages": [
        { "role": "user", "content": [turn(&doc, false), turn("first question", false)] },
        { "role": "assistant", "content": "an answer" },
        { "role": "user", "content": [turn("second question", true)] }
    ] });
    let b = post(&url, &headers, &second).await;
    let (input, read, creation) = anthropic_usage(&b);
    assert_eq!(read, written, "{}", b.body);
    assert!(creation > 0 && input == 0, "{}", b.body);
    h.shutdown().await;
}

#[tokio::test]
async fn anthropic_short_prefix_is_not_cached_and_bad_cache_control_is_refused() {
    let h = start(1, vec![anthropic("a", "claude")]).await;
    let system = long_text(2000);
    let short = anthropic_usage(&message_with_system(&h, "a", "be brief", Some("5m"), "hi").await);
    assert_eq!((short.1, short.2), (0, 0), "under 1,024 tokens");
    assert!(anthropic_usage(&message_with_system(&h, "a", &system, Some("5m"), "hi").await).2 > 0);
    let url = format!("{}/messages", h.base_url("a"));
    let headers = [("anthropic-version", "2023-06-01")];
    let bad_ttl = json!({ "model": "claude", "max_tokens": 8, "system": [
        { "type": "text", "text": "x", "cache_control": { "type": "ephemeral", "ttl": "2h" } }
    ], "messages": [{ "role": "user", "content": "hi" }] });
    let a = post(&url, &headers, &bad_ttl).await;
    assert_eq!(a.status, 400);
    assert_eq!(a.body["error"]["type"], "invalid_request_error");
    let marked = json!({ "type": "text", "text": "x", "cache_control": { "type": "ephemeral" } });
    let five = json!({ "model": "claude", "max_tokens": 8, "system": vec![marked.clone(); 3],
                       "messages": [{ "role": "user", "content": vec![marked; 2] }] });
    let a = post(&url, &headers, &five).await;
    assert_eq!(a.status, 400);
    assert!(a.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("maximum of 4"));
    h.shutdown().await;
}

#[tokio::test]
async fn anthropic_stream_reports_cache_reads_in_message_start() {
    let h = start(1, vec![anthropic("a", "claude")]).await;
    let system = long_text(1200);
    let written = anthropic_usage(&message_with_system(&h, "a", &system, Some("5m"), "hi").await).2;
    let mut block = json!({ "type": "text", "text": system });
    block["cache_control"] = json!({ "type": "ephemeral" });
    let body = json!({ "model": "claude", "max_tokens": 16, "stream": true, "system": [block],
                       "messages": [{ "role": "user", "content": "hi" }] });
    let text = reqwest::Client::new()
        .post(format!("{}/messages", h.base_url("a")))
        .header("anthropic-version", "2023-06-01")
        .json(&body)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let start: Value = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str::<Value>(d).unwrap())
        .find(|e| e["type"] == "message_start")
        .unwrap();
    let usage = &start["message"]["usage"];
    assert!(written > 0);
    assert_eq!(usage["cache_read_input_tokens"], written, "{usage}");
    assert_eq!(usage["cache_creation_input_tokens"], 0);
    h.shutdown().await;
}
