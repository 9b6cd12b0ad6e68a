//! The Anthropic dialect: reads `POST /v1/messages` bodies and writes messages, model lists and
//! errors in the shapes the official `anthropic` client parses.

use crate::cache::{Breakpoint, Mark, PromptShape, PromptTokens, Ttl};
use crate::reply::{self, Answer, Body, Reply, ToolChoice};
use crate::scenario::SimProvider;
use crate::server::{json, Parsed, Refusal};
use crate::sse::Frame;
use crate::text::{content_text, fnv1a};
use axum::http::HeaderMap;
use axum::response::Response;
use serde_json::{json, Map, Value};

/// Most `cache_control` breakpoints a request may carry.
const MAX_BREAKPOINTS: usize = 4;

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
    let mut shape = PromptShape::default();
    match obj.get("system") {
        None | Some(Value::Null) => {}
        Some(s @ (Value::String(_) | Value::Array(_))) => {
            texts.push(content_text(s));
            shape.roles.push("system".into());
            blocks(&texts, s, "system", &mut shape)?;
        }
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
        let content = m.get("content").unwrap_or(&Value::Null);
        texts.push(content_text(content));
        shape
            .roles
            .push(m["role"].as_str().unwrap_or_default().to_string());
        blocks(
            &texts,
            content,
            &format!("messages.{i}.content"),
            &mut shape,
        )?;
    }
    let (tools, tool_breakpoints) = tools_key(obj)?;
    let found = shape.breakpoints.len() + tool_breakpoints;
    if found > MAX_BREAKPOINTS {
        return Err(Refusal::BadRequest(format!(
            "A maximum of {MAX_BREAKPOINTS} blocks with cache_control may be provided. Found {found}."
        )));
    }
    shape.head = fnv1a(&[model.as_bytes(), tools.as_bytes()]);
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
        shape,
    })
}

/// Records the content blocks of the last of `texts`, whose content is `content` (a string or
/// a list of blocks; `at` names it in errors): where each block ends in the text, and which
/// carry a `cache_control` breakpoint.
fn blocks(
    texts: &[String],
    content: &Value,
    at: &str,
    shape: &mut PromptShape,
) -> Result<(), Refusal> {
    let index = texts.len() - 1;
    let Value::Array(parts) = content else {
        let t = &texts[index];
        shape.block_ends.push(Mark {
            text: index,
            bytes: t.len(),
            chars: t.chars().count(),
        });
        return Ok(());
    };
    // Offsets in the text `content_text` made of the blocks: their texts joined by newlines.
    let (mut bytes, mut chars, mut any) = (0, 0, false);
    for (j, part) in parts.iter().enumerate() {
        if let Some(t) = part.get("text").and_then(Value::as_str) {
            if any {
                bytes += 1;
                chars += 1;
            }
            bytes += t.len();
            chars += t.chars().count();
            any = true;
        }
        shape.block_ends.push(Mark {
            text: index,
            bytes,
            chars,
        });
        if let Some(ttl) = cache_control(part, &format!("{at}.{j}"))? {
            shape.breakpoints.push(Breakpoint {
                block: shape.block_ends.len() - 1,
                ttl,
            });
        }
    }
    Ok(())
}

/// The breakpoint a block's `cache_control` asks for, if any (`at` names the block in errors).
fn cache_control(block: &Value, at: &str) -> Result<Option<Ttl>, Refusal> {
    let cc = match block.get("cache_control") {
        None | Some(Value::Null) => return Ok(None),
        Some(cc) => cc,
    };
    if cc.get("type").and_then(Value::as_str) != Some("ephemeral") {
        return Err(Refusal::BadRequest(format!(
            "{at}.cache_control.type: Input should be 'ephemeral'"
        )));
    }
    match cc.get("ttl") {
        None | Some(Value::Null) => Ok(Some(Ttl::FiveMinutes)),
        Some(Value::String(t)) if t == "5m" => Ok(Some(Ttl::FiveMinutes)),
        Some(Value::String(t)) if t == "1h" => Ok(Some(Ttl::OneHour)),
        Some(_) => Err(Refusal::BadRequest(format!(
            "{at}.cache_control.ttl: Input should be '5m' or '1h'"
        ))),
    }
}

/// The tool definitions as the cache keys them (without their `cache_control` marks), and how
/// many breakpoints they carry. Tools come first in the cached prefix but cost no simulated
/// tokens, so a breakpoint on a tool alone never reaches the minimum length.
fn tools_key(obj: &Map<String, Value>) -> Result<(String, usize), Refusal> {
    let Some(Value::Array(tools)) = obj.get("tools") else {
        return Ok((String::new(), 0));
    };
    let mut marks = 0;
    let mut key = Vec::with_capacity(tools.len());
    for (i, t) in tools.iter().enumerate() {
        if cache_control(t, &format!("tools.{i}"))?.is_some() {
            marks += 1;
        }
        let mut t = t.clone();
        if let Some(o) = t.as_object_mut() {
            o.remove("cache_control");
        }
        key.push(t);
    }
    Ok((Value::Array(key).to_string(), marks))
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
pub(crate) fn success(
    id: &str,
    req: &Parsed,
    answers: &[Answer],
    prompt: &PromptTokens,
) -> Response {
    json(200, message(id, req, answers, prompt))
}

/// A `message` object (the simulator gives Anthropic requests exactly one answer).
pub(crate) fn message(id: &str, req: &Parsed, answers: &[Answer], prompt: &PromptTokens) -> Value {
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
        "usage": usage(prompt, a.output_tokens)
    })
}

/// The events of a streamed message: `message_start`, one content block (start, a `ping`, a
/// delta per token, stop), `message_delta` with the stop reason and output tokens,
/// `message_stop`.
pub(crate) fn stream(
    id: &str,
    req: &Parsed,
    answers: &[Answer],
    prompt: &PromptTokens,
) -> Vec<Frame> {
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
            "usage": usage(prompt, 1)
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

/// The `usage` object: `input_tokens` are the prompt tokens after the last cache breakpoint,
/// so with the cache reads and writes they make the whole prompt.
fn usage(prompt: &PromptTokens, output_tokens: u64) -> Value {
    json!({
        "input_tokens": prompt.uncached(),
        "output_tokens": output_tokens,
        "cache_creation_input_tokens": prompt.written(),
        "cache_read_input_tokens": prompt.read,
        "cache_creation": {
            "ephemeral_5m_input_tokens": prompt.write_5m,
            "ephemeral_1h_input_tokens": prompt.write_1h
        }
    })
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
