//! The Anthropic dialect: reads `POST /v1/messages` bodies and writes messages, model lists and
//! errors in the shapes the official `anthropic` client parses.

use crate::reply::{self, Answer, Body, Reply, ToolChoice};
use crate::scenario::SimProvider;
use crate::server::{json, Parsed, Refusal};
use crate::sse::Frame;
use crate::text::content_text;
use axum::http::HeaderMap;
use axum::response::Response;
use serde_json::{json, Map, Value};

/// Reads and checks a messages request (headers and body).
pub(crate) fn parse(headers: &HeaderMap, body: &[u8]) -> Result<Parsed, Refusal> {
    let bad = |m: &str| Refusal::BadRequest(m.to_string());
    if !headers.contains_key("anthropic-version") {
        return Err(bad("anthropic-version: header is required"));
    }
    let v: Value = serde_json::from_slice(body)
        .map_err(|_| bad("There was an error parsing the body of your request"))?;
    let obj = v
        .as_object()
        .ok_or_else(|| bad("The request body must be a JSON object"))?;
    let model = obj
        .get("model")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("model: Field required"))?;
    let max_tokens = match obj.get("max_tokens") {
        None | Some(Value::Null) => return Err(bad("max_tokens: Field required")),
        Some(v) => v.as_u64().filter(|n| *n >= 1).ok_or_else(|| {
            bad("max_tokens: Input should be a valid integer greater than or equal to 1")
        })?,
    };
    let messages = obj
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("messages: Field required"))?;
    if messages.is_empty() {
        return Err(bad("messages: at least one message is required"));
    }
    let mut texts = Vec::with_capacity(messages.len() + 1);
    match obj.get("system") {
        None | Some(Value::Null) => {}
        Some(s @ (Value::String(_) | Value::Array(_))) => texts.push(content_text(s)),
        Some(_) => {
            return Err(bad(
                "system: Input should be a valid string or list of text blocks",
            ))
        }
    }
    for (i, m) in messages.iter().enumerate() {
        match m.get("role").and_then(Value::as_str) {
            Some("user" | "assistant") => {}
            Some(other) => {
                return Err(Refusal::BadRequest(format!(
                    "messages.{i}.role: Unexpected role \"{other}\". The Messages API accepts a top-level `system` parameter, not \"system\" as an input message role."
                )))
            }
            None => return Err(Refusal::BadRequest(format!("messages.{i}.role: Field required"))),
        }
        texts.push(content_text(m.get("content").unwrap_or(&Value::Null)));
    }
    let after_tool_result = messages
        .last()
        .and_then(|m| m.get("content"))
        .and_then(Value::as_array)
        .is_some_and(|blocks| blocks.iter().any(|b| b["type"] == "tool_result"));
    let reply = reply_of(obj, after_tool_result)?;
    Ok(Parsed {
        model: model.to_string(),
        texts,
        max_tokens,
        reply,
        n: 1,
        stream: obj.get("stream").and_then(Value::as_bool) == Some(true),
        include_usage: false,
        flex: false,
    })
}

/// The answer's shape from `tools` and `tool_choice`.
fn reply_of(obj: &Map<String, Value>, after_tool_result: bool) -> Result<Reply, Refusal> {
    let bad = |m: String| Refusal::BadRequest(m);
    let tools = match obj.get("tools") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(ts)) => ts
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let name = t.get("name").and_then(Value::as_str);
                let name = name.ok_or_else(|| bad(format!("tools.{i}.name: Field required")))?;
                let schema = t
                    .get("input_schema")
                    .cloned()
                    .unwrap_or_else(|| json!({ "type": "object", "properties": {} }));
                Ok((name.to_string(), schema))
            })
            .collect::<Result<_, Refusal>>()?,
        Some(_) => return Err(bad("tools: Input should be a valid list".into())),
    };
    let choice = match obj.get("tool_choice") {
        None | Some(Value::Null) => ToolChoice::Auto,
        Some(c) => match (c.get("type").and_then(Value::as_str), c.get("name")) {
            (Some("none"), _) => ToolChoice::None,
            (Some("auto"), _) => ToolChoice::Auto,
            (Some("any"), _) => ToolChoice::Required,
            (Some("tool"), Some(Value::String(name))) => ToolChoice::Named(name.clone()),
            _ => return Err(bad("tool_choice: Input tag does not match any of the expected tags: 'auto', 'any', 'tool', 'none'".into())),
        },
    };
    reply::with_tools(tools, choice, after_tool_result, Reply::Text)
        .map_err(|name| bad(format!("tool_choice: tool {name:?} is not in tools")))
}

/// A `message` answer (the simulator gives Anthropic requests exactly one answer).
pub(crate) fn success(id: &str, req: &Parsed, answers: &[Answer], prompt_tokens: u64) -> Response {
    json(200, message(id, req, answers, prompt_tokens))
}

/// A `message` object (the simulator gives Anthropic requests exactly one answer).
pub(crate) fn message(id: &str, req: &Parsed, answers: &[Answer], prompt_tokens: u64) -> Value {
    let a = first(answers);
    let content = match &a.body {
        Body::Text(t) | Body::Json(t) => json!([{ "type": "text", "text": t }]),
        Body::Tool { name, input } => json!([{
            "type": "tool_use", "id": tool_use_id(id), "name": name, "input": input
        }]),
    };
    json!({
        "id": format!("msg_{id}"),
        "type": "message",
        "role": "assistant",
        "model": req.model,
        "content": content,
        "stop_reason": stop_reason(&a),
        "stop_sequence": null,
        "usage": {
            "input_tokens": prompt_tokens,
            "output_tokens": a.output_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0
        }
    })
}

/// The events of a streamed message: `message_start`, one content block (start, a `ping`, a
/// delta per token, stop), `message_delta` with the stop reason and output tokens,
/// `message_stop`.
pub(crate) fn stream(id: &str, req: &Parsed, answers: &[Answer], prompt_tokens: u64) -> Vec<Frame> {
    let a = first(answers);
    let event = |v: Value| {
        let name = v["type"].as_str().unwrap_or_default().to_string();
        Frame::event(&name, &v)
    };
    let mut frames = vec![event(json!({
        "type": "message_start",
        "message": {
            "id": format!("msg_{id}"),
            "type": "message",
            "role": "assistant",
            "model": req.model,
            "content": [],
            "stop_reason": null,
            "stop_sequence": null,
            "usage": {
                "input_tokens": prompt_tokens,
                "output_tokens": 1,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0
            }
        }
    }))];
    let block = match &a.body {
        Body::Text(_) | Body::Json(_) => json!({ "type": "text", "text": "" }),
        Body::Tool { name, .. } => {
            json!({ "type": "tool_use", "id": tool_use_id(id), "name": name, "input": {} })
        }
    };
    frames.push(event(
        json!({ "type": "content_block_start", "index": 0, "content_block": block }),
    ));
    frames.push(event(json!({ "type": "ping" })));
    for piece in a.deltas() {
        let delta = match &a.body {
            Body::Text(_) | Body::Json(_) => json!({ "type": "text_delta", "text": piece }),
            Body::Tool { .. } => json!({ "type": "input_json_delta", "partial_json": piece }),
        };
        frames.push(
            event(json!({ "type": "content_block_delta", "index": 0, "delta": delta })).tokens(1),
        );
    }
    frames.push(event(json!({ "type": "content_block_stop", "index": 0 })));
    frames.push(event(json!({
        "type": "message_delta",
        "delta": { "stop_reason": stop_reason(&a), "stop_sequence": null },
        "usage": { "output_tokens": a.output_tokens }
    })));
    frames.push(event(json!({ "type": "message_stop" })));
    frames
}

fn first(answers: &[Answer]) -> Answer {
    answers.first().cloned().unwrap_or(Answer {
        body: Body::Text(String::new()),
        output_tokens: 0,
        truncated: false,
    })
}

fn tool_use_id(id: &str) -> String {
    format!("toolu_{}", reply::tool_call_id(id, 0))
}

fn stop_reason(a: &Answer) -> &'static str {
    match a.body {
        Body::Tool { .. } => "tool_use",
        _ if a.truncated => "max_tokens",
        _ => "end_turn",
    }
}

/// The `GET /v1/models` list.
pub(crate) fn models(spec: &SimProvider) -> Response {
    let data: Vec<Value> = spec
        .models
        .iter()
        .map(|m| json!({ "type": "model", "id": m, "display_name": m, "created_at": "2025-01-01T00:00:00Z" }))
        .collect();
    json(
        200,
        json!({
            "data": data,
            "has_more": false,
            "first_id": spec.models.first(),
            "last_id": spec.models.last()
        }),
    )
}

/// An error in Anthropic's `{"type": "error", "error": {type, message}}` shape.
pub(crate) fn failure(f: &Refusal) -> Response {
    let (status, body) = error_body(f);
    json(status, body)
}

/// The status and body of an error in Anthropic's shape.
pub(crate) fn error_body(f: &Refusal) -> (u16, Value) {
    let (status, kind, message): (u16, &str, String) = match f {
        Refusal::Unauthorized => (401, "authentication_error", "invalid x-api-key".into()),
        Refusal::BadRequest(m) => (400, "invalid_request_error", m.clone()),
        Refusal::ModelNotFound(m) => (404, "not_found_error", format!("model: {m}")),
        Refusal::RateLimited { what, .. } => (
            429,
            "rate_limit_error",
            format!("This request would exceed the rate limit for your organization on {what}."),
        ),
        Refusal::NotFound(m) => (404, "not_found_error", m.clone()),
        // Flex is an OpenAI tier; never reached.
        Refusal::FlexUnavailable => (429, "rate_limit_error", "Resource Unavailable".into()),
        // Written raw by the server; never reaches the dialect.
        Refusal::Malformed | Refusal::Huge(_) => (500, "api_error", "malformed answer".into()),
        Refusal::Status(s) => {
            let (kind, message) = match s {
                400 => ("invalid_request_error", "The request was rejected."),
                401 => ("authentication_error", "invalid x-api-key"),
                402 => (
                    "billing_error",
                    "Your credit balance is too low to access the Anthropic API.",
                ),
                403 => (
                    "permission_error",
                    "Your API key does not have permission to use the specified resource.",
                ),
                404 => (
                    "not_found_error",
                    "The requested resource could not be found.",
                ),
                429 => (
                    "rate_limit_error",
                    "Number of requests has exceeded your rate limit.",
                ),
                503 | 529 => ("overloaded_error", "Overloaded"),
                s if *s >= 500 => ("api_error", "Internal server error"),
                _ => ("invalid_request_error", "The request was rejected."),
            };
            (*s, kind, message.into())
        }
    };
    (
        status,
        json!({ "type": "error", "error": { "type": kind, "message": message } }),
    )
}
