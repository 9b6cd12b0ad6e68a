//! JSON mode, tool calls and `n` over real HTTP: answers of the shape the request asks for,
//! built from the same deterministic text a plain request gets.

mod common;

use common::{anthropic, chat, message, openai, post, start};
use serde_json::{json, Value};

fn chat_body(extra: Value) -> Value {
    let mut body = json!({ "model": "m", "messages": [{ "role": "user", "content": "Answer in JSON, please." }] });
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    body
}

fn weather_tool(name: &str) -> Value {
    json!({ "type": "function", "function": { "name": name, "parameters": {
        "type": "object",
        "properties": { "city": { "type": "string" }, "days": { "type": "integer" } },
        "required": ["city", "days"]
    } } })
}

#[tokio::test]
async fn json_schema_answer_has_the_required_properties_with_their_types() {
    let h = start(2, vec![openai("p", "m")]).await;
    let url = format!("{}/chat/completions", h.base_url("p"));
    let format = json!({ "type": "json_schema", "json_schema": { "name": "r", "strict": true, "schema": {
        "type": "object",
        "properties": {
            "title": { "type": "string" }, "score": { "type": "number" },
            "ok": { "type": "boolean" }, "tags": { "type": "array", "items": { "type": "string" } }
        },
        "required": ["title", "score", "ok", "tags"], "additionalProperties": false
    } } });
    let a = post(&url, &[], &chat_body(json!({ "response_format": format }))).await;
    assert_eq!(a.status, 200);
    let content = a.body["choices"][0]["message"]["content"].as_str().unwrap();
    let v: Value = serde_json::from_str(content).unwrap();
    assert!(v["title"].is_string() && v["score"].is_number() && v["ok"].is_boolean());
    assert!(v["tags"]
        .as_array()
        .is_some_and(|t| t.iter().all(Value::is_string)));
    assert_eq!(a.body["choices"][0]["finish_reason"], "stop");
    let again = post(&url, &[], &chat_body(json!({ "response_format": format }))).await;
    assert_eq!(again.body["choices"][0]["message"]["content"], content);
    h.shutdown().await;
}

#[tokio::test]
async fn json_object_answer_parses_and_needs_the_word_json_in_the_prompt() {
    let h = start(2, vec![openai("p", "m")]).await;
    let url = format!("{}/chat/completions", h.base_url("p"));
    let format = json!({ "response_format": { "type": "json_object" } });
    let a = post(&url, &[], &chat_body(format.clone())).await;
    let content = a.body["choices"][0]["message"]["content"].as_str().unwrap();
    let v: Value = serde_json::from_str(content).unwrap();
    assert!(v["answer"].is_string());
    assert_eq!(
        a.body["usage"]["completion_tokens"],
        (content.chars().count() as u64).div_ceil(4)
    );
    let mut no_json = chat_body(format);
    no_json["messages"][0]["content"] = json!("Answer, please.");
    assert_eq!(post(&url, &[], &no_json).await.status, 400);
    h.shutdown().await;
}

#[tokio::test]
async fn openai_tools_answer_with_a_call_to_the_named_or_first_tool() {
    let h = start(2, vec![openai("p", "m")]).await;
    let url = format!("{}/chat/completions", h.base_url("p"));
    let tools = json!([weather_tool("weather"), weather_tool("forecast")]);
    let a = post(&url, &[], &chat_body(json!({ "tools": tools }))).await;
    let choice = &a.body["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert!(choice["message"]["content"].is_null());
    let call = &choice["message"]["tool_calls"][0];
    assert!(call["id"].as_str().unwrap().starts_with("call_"));
    assert_eq!(
        (&call["type"], &call["function"]["name"]),
        (&json!("function"), &json!("weather"))
    );
    let args: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert!(args["city"].is_string() && args["days"].is_i64());

    let named = json!({ "tools": tools, "tool_choice": { "type": "function", "function": { "name": "forecast" } } });
    let a = post(&url, &[], &chat_body(named)).await;
    assert_eq!(
        a.body["choices"][0]["message"]["tool_calls"][0]["function"]["name"],
        "forecast"
    );
    let unknown = json!({ "tools": tools, "tool_choice": { "type": "function", "function": { "name": "nope" } } });
    assert_eq!(post(&url, &[], &chat_body(unknown)).await.status, 400);
    h.shutdown().await;
}

#[tokio::test]
async fn tool_choice_none_and_a_tool_result_under_auto_get_the_plain_text_answer() {
    let h = start(2, vec![openai("p", "m")]).await;
    let url = format!("{}/chat/completions", h.base_url("p"));
    let plain = chat(&h, "p", "m", "Answer in JSON, please.").await.body;
    let none = json!({ "tools": [weather_tool("w")], "tool_choice": "none" });
    let a = post(&url, &[], &chat_body(none)).await;
    assert_eq!(
        a.body["choices"][0]["message"],
        plain["choices"][0]["message"]
    );

    let after_result = json!({ "model": "m", "tools": [weather_tool("w")], "messages": [
        { "role": "user", "content": "weather?" },
        { "role": "assistant", "content": null, "tool_calls": [{ "id": "call_1", "type": "function", "function": { "name": "w", "arguments": "{}" } }] },
        { "role": "tool", "tool_call_id": "call_1", "content": "sunny" }
    ] });
    let a = post(&url, &[], &after_result).await;
    assert_eq!(a.body["choices"][0]["finish_reason"], "stop");
    assert!(a.body["choices"][0]["message"]["content"].is_string());
    h.shutdown().await;
}

#[tokio::test]
async fn anthropic_tools_answer_with_a_tool_use_block() {
    let h = start(2, vec![anthropic("a", "claude")]).await;
    let url = format!("{}/messages", h.base_url("a"));
    let v = [("anthropic-version", "2023-06-01")];
    let tool = |name: &str| {
        json!({ "name": name, "input_schema": {
            "type": "object", "properties": { "city": { "type": "string" } }, "required": ["city"]
        } })
    };
    let mut body = json!({
        "model": "claude", "max_tokens": 1024, "tools": [tool("a"), tool("b")],
        "tool_choice": { "type": "tool", "name": "b" },
        "messages": [{ "role": "user", "content": "weather?" }]
    });
    let a = post(&url, &v, &body).await;
    assert_eq!(a.body["stop_reason"], "tool_use");
    let block = &a.body["content"][0];
    assert_eq!(
        (&block["type"], &block["name"]),
        (&json!("tool_use"), &json!("b"))
    );
    assert!(block["id"].as_str().unwrap().starts_with("toolu_"));
    assert!(block["input"]["city"].is_string());

    body["tool_choice"] = json!({ "type": "none" });
    let a = post(&url, &v, &body).await;
    let plain = message(&h, "a", "claude", "weather?").await.body;
    assert_eq!(a.body["content"], plain["content"]);
    h.shutdown().await;
}

#[tokio::test]
async fn n_gives_distinct_choices_the_first_being_the_plain_answer_and_usage_counts_all() {
    let h = start(2, vec![openai("p", "m")]).await;
    let url = format!("{}/chat/completions", h.base_url("p"));
    let plain = chat(&h, "p", "m", "Answer in JSON, please.").await.body;
    let a = post(&url, &[], &chat_body(json!({ "n": 3 }))).await;
    let choices = a.body["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 3);
    let words: u64 = choices
        .iter()
        .enumerate()
        .map(|(i, c)| {
            assert_eq!(c["index"], i);
            c["message"]["content"].as_str().unwrap().split(' ').count() as u64
        })
        .sum();
    assert_eq!(choices[0]["message"], plain["choices"][0]["message"]);
    assert_ne!(choices[1]["message"], choices[2]["message"]);
    assert_eq!(a.body["usage"]["completion_tokens"], words);
    h.shutdown().await;
}
