//! `stream: true` over real HTTP: the event streams of both APIs, the same text as the plain
//! answer, errors before the stream as ordinary HTTP errors, and a stream holding its
//! concurrency slot while it is read.

mod common;

use common::{anthropic, chat, message, openai, start};
use serde_json::{json, Value};
use sim::Window;

/// Posts `body` and returns the status, content type and body text.
async fn post_raw(url: &str, anthropic: bool, body: &Value) -> (u16, String, String) {
    let mut req = reqwest::Client::new().post(url).json(body);
    if anthropic {
        req = req.header("anthropic-version", "2023-06-01");
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let ctype = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    (status, ctype, resp.text().await.unwrap())
}

/// The `data:` payloads of an event stream, in order.
fn data_lines(text: &str) -> Vec<&str> {
    text.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect()
}

#[tokio::test]
async fn openai_stream_sends_the_plain_answers_text_then_usage_then_done() {
    let h = start(4, vec![openai("p", "m")]).await;
    let plain = chat(&h, "p", "m", "stream me").await.body;
    let body = json!({
        "model": "m", "stream": true, "stream_options": { "include_usage": true },
        "messages": [{ "role": "user", "content": "stream me" }]
    });
    let url = format!("{}/chat/completions", h.base_url("p"));
    let (status, ctype, text) = post_raw(&url, false, &body).await;
    assert_eq!(status, 200);
    assert!(ctype.starts_with("text/event-stream"), "{ctype}");
    let lines = data_lines(&text);
    assert_eq!(lines.last(), Some(&"[DONE]"));
    let chunks: Vec<Value> = lines[..lines.len() - 1]
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(chunks
        .iter()
        .all(|c| c["object"] == "chat.completion.chunk"));
    let streamed: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(streamed, plain["choices"][0]["message"]["content"]);
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"], json!([]));
    assert_eq!(last["usage"], plain["usage"]);
    assert_eq!(
        chunks[chunks.len() - 2]["choices"][0]["finish_reason"],
        "stop"
    );
    assert!(chunks[..chunks.len() - 1]
        .iter()
        .all(|c| c["usage"].is_null()));
    h.shutdown().await;
}

#[tokio::test]
async fn anthropic_stream_sends_the_documented_events_with_the_plain_answers_text() {
    let h = start(4, vec![anthropic("a", "claude")]).await;
    let plain = message(&h, "a", "claude", "stream me").await.body;
    let body = json!({
        "model": "claude", "max_tokens": 1024, "stream": true,
        "messages": [{ "role": "user", "content": "stream me" }]
    });
    let (status, _, text) = post_raw(&format!("{}/messages", h.base_url("a")), true, &body).await;
    assert_eq!(status, 200);
    let events: Vec<Value> = data_lines(&text)
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    kinds.dedup();
    assert_eq!(
        kinds,
        [
            "message_start",
            "content_block_start",
            "ping",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    let streamed: String = events
        .iter()
        .filter_map(|e| e["delta"]["text"].as_str())
        .collect();
    assert_eq!(streamed, plain["content"][0]["text"]);
    let delta = events
        .iter()
        .find(|e| e["type"] == "message_delta")
        .unwrap();
    assert_eq!(delta["delta"]["stop_reason"], "end_turn");
    assert_eq!(
        delta["usage"]["output_tokens"],
        plain["usage"]["output_tokens"]
    );
    let names: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .collect();
    assert_eq!(names.len(), events.len(), "every event is named");
    h.shutdown().await;
}

#[tokio::test]
async fn stream_refused_before_it_starts_is_an_ordinary_json_error() {
    let mut p = openai("p", "m");
    p.rate_limited = vec![Window {
        from_s: 0.0,
        to_s: 60.0,
    }];
    let h = start(4, vec![p]).await;
    let body =
        json!({ "model": "m", "stream": true, "messages": [{ "role": "user", "content": "x" }] });
    let url = format!("{}/chat/completions", h.base_url("p"));
    let (status, ctype, text) = post_raw(&url, false, &body).await;
    assert_eq!(status, 429);
    assert!(ctype.starts_with("application/json"), "{ctype}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["error"]["code"], "rate_limit_exceeded");
    h.shutdown().await;
}

#[tokio::test]
async fn stream_holds_its_concurrency_slot_until_its_last_event() {
    let mut p = openai("p", "m");
    p.concurrency = Some(1);
    p.per_output_token_ms = 5.0;
    let h = start(4, vec![p]).await;
    let url = format!("{}/chat/completions", h.base_url("p"));
    let body =
        json!({ "model": "m", "stream": true, "messages": [{ "role": "user", "content": "x" }] });
    let client = reqwest::Client::new();
    let streaming = client.post(&url).json(&body).send().await.unwrap();
    assert_eq!(streaming.status().as_u16(), 200);
    let second = chat(&h, "p", "m", "y").await;
    assert_eq!(second.status, 429, "the stream still holds the only slot");
    let text = streaming.text().await.unwrap();
    assert!(text.ends_with("data: [DONE]\n\n"));
    assert_eq!(chat(&h, "p", "m", "y").await.status, 200);
    h.shutdown().await;
}
