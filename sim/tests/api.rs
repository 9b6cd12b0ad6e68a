//! The simulator's API surface over real HTTP: keys, models, request validation, response
//! shapes, determinism, and the catalog helpers.

mod common;

use common::{anthropic, chat, message, openai, post, start};
use serde_json::json;

#[tokio::test]
async fn openai_answer_has_chat_completion_shape_and_usage() {
    let h = start(1, vec![openai("p", "m")]).await;
    let a = chat(&h, "p", "m", "abcdefgh").await;
    assert_eq!(a.status, 200);
    let b = &a.body;
    assert!(b["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(b["object"], "chat.completion");
    assert_eq!(b["model"], "m");
    assert_eq!(b["choices"][0]["message"]["role"], "assistant");
    assert_eq!(b["choices"][0]["finish_reason"], "stop");
    let words = b["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .split(' ')
        .count() as u64;
    // 8 chars / 4 + 4 for the one message.
    assert_eq!(b["usage"]["prompt_tokens"], 6);
    assert_eq!(b["usage"]["completion_tokens"], words);
    assert_eq!(b["usage"]["total_tokens"], 6 + words);
    assert!(a.header("x-request-id").unwrap().starts_with("req_"));
    h.shutdown().await;
}

#[tokio::test]
async fn anthropic_answer_has_message_shape_and_counts_the_system_prompt() {
    let h = start(1, vec![anthropic("a", "claude")]).await;
    let body = json!({
        "model": "claude", "max_tokens": 2, "system": "abcd",
        "messages": [{ "role": "user", "content": [{ "type": "text", "text": "abcdefgh" }] }]
    });
    let url = format!("{}/messages", h.base_url("a"));
    let a = post(&url, &[("anthropic-version", "2023-06-01")], &body).await;
    assert_eq!(a.status, 200);
    assert!(a.body["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(a.body["type"], "message");
    assert_eq!(a.body["content"][0]["type"], "text");
    assert_eq!(a.body["stop_reason"], "max_tokens");
    assert_eq!(a.body["usage"]["output_tokens"], 2);
    assert_eq!(a.body["usage"]["input_tokens"], 3 + 8);
    h.shutdown().await;
}

#[tokio::test]
async fn max_tokens_caps_output_with_finish_reason_length() {
    let h = start(1, vec![openai("p", "m")]).await;
    let body = json!({ "model": "m", "max_completion_tokens": 5, "messages": [{ "role": "user", "content": "hi" }] });
    let a = post(&format!("{}/chat/completions", h.base_url("p")), &[], &body).await;
    assert_eq!(a.body["choices"][0]["finish_reason"], "length");
    assert_eq!(a.body["usage"]["completion_tokens"], 5);
    h.shutdown().await;
}

#[tokio::test]
async fn same_prompt_gives_same_text_and_usage_across_servers_with_the_same_seed() {
    let h1 = start(9, vec![openai("p", "m")]).await;
    let h2 = start(9, vec![openai("p", "m")]).await;
    let a = chat(&h1, "p", "m", "tell me a story").await.body;
    let b = chat(&h1, "p", "m", "tell me a story").await.body;
    let c = chat(&h2, "p", "m", "tell me a story").await.body;
    let d = chat(&h1, "p", "m", "tell me another story").await.body;
    for other in [&b, &c] {
        assert_eq!(a["choices"][0]["message"], other["choices"][0]["message"]);
        assert_eq!(a["usage"], other["usage"]);
    }
    assert_ne!(
        a["choices"][0]["message"]["content"],
        d["choices"][0]["message"]["content"]
    );
    h1.shutdown().await;
    h2.shutdown().await;
}

#[tokio::test]
async fn missing_or_wrong_key_answers_401_with_each_providers_error_body() {
    let mut o = openai("o", "m");
    o.api_key = Some("sk-right".into());
    let mut a = anthropic("a", "claude");
    a.api_key = Some("sk-ant-right".into());
    let h = start(1, vec![o, a]).await;
    let body = json!({ "model": "m", "messages": [{ "role": "user", "content": "hi" }] });
    let url = format!("{}/chat/completions", h.base_url("o"));
    let r = post(&url, &[], &body).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.body["error"]["code"], "invalid_api_key");
    let r = post(&url, &[("authorization", "Bearer sk-wrong")], &body).await;
    assert_eq!(r.status, 401);
    assert_eq!(
        post(&url, &[("authorization", "Bearer sk-right")], &body)
            .await
            .status,
        200
    );

    let r = message(&h, "a", "claude", "hi").await;
    assert_eq!(r.status, 401);
    assert_eq!(r.body["error"]["type"], "authentication_error");
    h.shutdown().await;
}

#[tokio::test]
async fn unknown_model_answers_404_model_not_found() {
    let h = start(1, vec![openai("o", "m"), anthropic("a", "claude")]).await;
    let r = chat(&h, "o", "gpt-99", "hi").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.body["error"]["code"], "model_not_found");
    let r = message(&h, "a", "claude-99", "hi").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.body["error"]["type"], "not_found_error");
    assert_eq!(h.stats("o").errors, 1);
    h.shutdown().await;
}

#[tokio::test]
async fn invalid_requests_answer_400_invalid_request_error() {
    let h = start(1, vec![openai("o", "m"), anthropic("a", "claude")]).await;
    let chat_url = format!("{}/chat/completions", h.base_url("o"));
    let empty = json!({ "model": "m", "messages": [] });
    assert_eq!(post(&chat_url, &[], &empty).await.status, 400);
    let no_choices =
        json!({ "model": "m", "n": 0, "messages": [{ "role": "user", "content": "x" }] });
    assert_eq!(post(&chat_url, &[], &no_choices).await.status, 400);
    let choice_without_tools = json!({ "model": "m", "tool_choice": "required", "messages": [{ "role": "user", "content": "x" }] });
    let r = post(&chat_url, &[], &choice_without_tools).await;
    assert_eq!(r.status, 400);
    assert!(r.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("only allowed when 'tools' are specified"));

    let msg_url = format!("{}/messages", h.base_url("a"));
    let v = [("anthropic-version", "2023-06-01")];
    let no_max = json!({ "model": "claude", "messages": [{ "role": "user", "content": "x" }] });
    let r = post(&msg_url, &v, &no_max).await;
    assert_eq!(
        (r.status, r.body["error"]["type"].as_str()),
        (400, Some("invalid_request_error"))
    );
    let ok = json!({ "model": "claude", "max_tokens": 9, "messages": [{ "role": "user", "content": "x" }] });
    assert_eq!(
        post(&msg_url, &[], &ok).await.status,
        400,
        "anthropic-version is required"
    );
    let system_role = json!({ "model": "claude", "max_tokens": 9, "messages": [{ "role": "system", "content": "x" }] });
    assert_eq!(post(&msg_url, &v, &system_role).await.status, 400);
    h.shutdown().await;
}

#[tokio::test]
async fn models_endpoint_lists_the_providers_model_ids() {
    let h = start(1, vec![openai("o", "m")]).await;
    let r = reqwest::get(format!("{}/models", h.base_url("o")))
        .await
        .unwrap();
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"][0]["id"], "m");
    h.shutdown().await;
}

#[tokio::test]
async fn catalog_scenario_serves_every_catalog_provider_at_the_rewritten_base_urls() {
    let text = r#"
[[providers]]
name = "cheap"
kind = "openai"
base_url = "https://api.example.com/v1"
api_key_env = "CHEAP_KEY"
limits = { rpm = 100 }
[[providers.models]]
model = "llama"
id = "llama-3.1-70b"
input_per_mtok = 0.5
output_per_mtok = 0.8
[[providers]]
name = "claude"
kind = "anthropic"
base_url = "https://api.anthropic.com/v1"
[[providers.models]]
model = "sonnet"
id = "claude-sonnet"
input_per_mtok = 3
output_per_mtok = 15
"#;
    let catalog = schemas::Catalog::from_toml("c.toml", text).unwrap();
    let scenario = sim::Scenario::from_catalog(&catalog);
    assert_eq!(scenario.providers[0].rpm, Some(100));
    assert_eq!(scenario.providers[0].input_per_mtok, Some(0.5));
    let h = sim::start(scenario, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let rewritten = sim::rewrite_catalog(&catalog, &h);
    assert_eq!(
        rewritten.providers[0].base_url,
        format!("http://{}/cheap/v1", h.addr())
    );
    assert_eq!(
        rewritten.providers[0].api_key_env.as_deref(),
        Some("CHEAP_KEY")
    );
    assert_eq!(chat(&h, "cheap", "llama-3.1-70b", "hi").await.status, 200);
    assert_eq!(
        message(&h, "claude", "claude-sonnet", "hi").await.status,
        200
    );
    h.shutdown().await;
}
