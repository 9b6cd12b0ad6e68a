//! The OpenAI dialect: reads `POST /v1/chat/completions` bodies and writes chat completions,
//! model lists and errors in the shapes the official `openai` client parses.

use crate::cache::{PromptShape, PromptTokens};
use crate::reply::{self, Answer, Body, Reply, ToolChoice};
use crate::scenario::SimProvider;
use crate::server::{json, Parsed, Refusal};
use crate::sse::Frame;
use crate::text::{content_text, fnv1a, DEFAULT_MAX_TOKENS};
use axum::response::Response;
use serde_json::{json, Map, Value};

const ROLES: &[&str] = &[
    "system",
    "developer",
    "user",
    "assistant",
    "tool",
    "function",
];

/// Reads and checks a chat-completions request body.
pub(crate) fn parse(body: &[u8]) -> Result<Parsed, Refusal> {
    let bad = |m: &str| Refusal::BadRequest(m.to_string());
    let v: Value = serde_json::from_slice(body).map_err(|_| {
        bad("We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly.)")
    })?;
    let obj = v
        .as_object()
        .ok_or_else(|| bad("The request body must be a JSON object."))?;
    let model = obj
        .get("model")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("you must provide a model parameter"))?;
    let messages = obj
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("Missing required parameter: 'messages'."))?;
    if messages.is_empty() {
        return Err(bad("Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead."));
    }
    let mut texts = Vec::with_capacity(messages.len());
    let mut roles = Vec::with_capacity(messages.len());
    for (i, m) in messages.iter().enumerate() {
        let role = m.get("role").and_then(Value::as_str);
        let Some(role) = role.filter(|r| ROLES.contains(r)) else {
            return Err(Refusal::BadRequest(format!(
                "Invalid value for 'messages[{i}].role': expected one of {ROLES:?}."
            )));
        };
        roles.push(role.to_string());
        texts.push(content_text(m.get("content").unwrap_or(&Value::Null)));
    }
    let mut max_tokens = DEFAULT_MAX_TOKENS;
    for field in ["max_tokens", "max_completion_tokens"] {
        match obj.get(field) {
            None | Some(Value::Null) => {}
            Some(v) => match v.as_u64() {
                Some(n) if n >= 1 => max_tokens = n,
                _ => {
                    return Err(Refusal::BadRequest(format!(
                        "Invalid '{field}': expected an integer greater than or equal to 1."
                    )))
                }
            },
        }
    }
    let n = match obj.get("n") {
        None | Some(Value::Null) => 1,
        Some(v) => v
            .as_u64()
            .filter(|n| (1..=128).contains(n))
            .ok_or_else(|| bad("Invalid 'n': expected an integer between 1 and 128."))?,
    };
    let after_tool_result = messages
        .last()
        .and_then(|m| m.get("role"))
        .is_some_and(|r| r == "tool");
    let reply = reply_of(obj, &texts, after_tool_result)?;
    let stream = obj.get("stream").and_then(Value::as_bool) == Some(true);
    let include_usage = obj
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        == Some(true);
    let flex = match obj.get("service_tier") {
        None | Some(Value::Null) => false,
        Some(Value::String(t)) if t == "flex" => true,
        Some(Value::String(t)) if ["auto", "default", "priority", "scale"].contains(&t.as_str()) => {
            false
        }
        Some(_) => return Err(bad("Invalid value for 'service_tier': expected one of 'auto', 'default', 'flex', 'scale' or 'priority'.")),
    };
    // The tool definitions come first in the cached prefix, as OpenAI serializes them.
    let tools = obj.get("tools").map(Value::to_string).unwrap_or_default();
    let shape = PromptShape {
        head: fnv1a(&[model.as_bytes(), tools.as_bytes()]),
        roles,
        ..PromptShape::default()
    };
    Ok(Parsed {
        model: model.to_string(),
        texts,
        max_tokens,
        reply,
        n,
        stream,
        include_usage,
        flex,
        shape,
    })
}

/// The answer's shape from `response_format`, `tools` and `tool_choice`.
fn reply_of(
    obj: &Map<String, Value>,
    texts: &[String],
    after_tool_result: bool,
) -> Result<Reply, Refusal> {
    let bad = |m: String| Refusal::BadRequest(m);
    let otherwise = match obj.get("response_format") {
        None | Some(Value::Null) => Reply::Text,
        Some(rf) => match rf.get("type").and_then(Value::as_str) {
            Some("text") => Reply::Text,
            Some("json_object") => {
                // The real API insists, so that the model is told to write JSON.
                if !texts.iter().any(|t| t.to_lowercase().contains("json")) {
                    return Err(bad("'messages' must contain the word 'json' in some form, to use 'response_format' of type 'json_object'.".into()));
                }
                Reply::Json(None)
            }
            Some("json_schema") => {
                let js = rf.get("json_schema").ok_or_else(|| {
                    bad("Missing required parameter: 'response_format.json_schema'.".into())
                })?;
                if js.get("name").and_then(Value::as_str).is_none() {
                    return Err(bad(
                        "Missing required parameter: 'response_format.json_schema.name'.".into(),
                    ));
                }
                Reply::Json(js.get("schema").cloned())
            }
            _ => return Err(bad("Invalid value for 'response_format.type': expected one of 'text', 'json_object' or 'json_schema'.".into())),
        },
    };
    let tools = match obj.get("tools") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(ts)) => ts
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let f = t
                    .get("function")
                    .filter(|_| t.get("type").and_then(Value::as_str) == Some("function"));
                let name = f.and_then(|f| f.get("name")).and_then(Value::as_str);
                let name = name.ok_or_else(|| {
                    bad(format!(
                        "Missing required parameter: 'tools[{i}].function.name'."
                    ))
                })?;
                let params = f
                    .and_then(|f| f.get("parameters"))
                    .cloned()
                    .unwrap_or_else(|| json!({ "type": "object", "properties": {} }));
                Ok((name.to_string(), params))
            })
            .collect::<Result<_, Refusal>>()?,
        Some(_) => return Err(bad("Invalid type for 'tools': expected an array.".into())),
    };
    let choice = match obj.get("tool_choice") {
        None | Some(Value::Null) => ToolChoice::Auto,
        Some(_) if tools.is_empty() => {
            return Err(bad("Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are specified.".into()));
        }
        Some(Value::String(s)) if s == "none" => ToolChoice::None,
        Some(Value::String(s)) if s == "auto" => ToolChoice::Auto,
        Some(Value::String(s)) if s == "required" => ToolChoice::Required,
        Some(c) => match c.pointer("/function/name").and_then(Value::as_str) {
            Some(name) => ToolChoice::Named(name.to_string()),
            None => return Err(bad("Invalid value for 'tool_choice': expected 'none', 'auto', 'required' or a named function.".into())),
        },
    };
    reply::with_tools(tools, choice, after_tool_result, otherwise).map_err(|name| {
        bad(format!(
            "Invalid value for 'tool_choice': no function named '{name}' was specified in the 'tools' parameter."
        ))
    })
}

/// A `chat.completion` answer with one choice per answer.
pub(crate) fn success(
    id: &str,
    req: &Parsed,
    answers: &[Answer],
    prompt: &PromptTokens,
) -> Response {
    json(200, completion(id, req, answers, prompt))
}

/// The tier an answer says it was served on.
fn tier(req: &Parsed) -> &'static str {
    if req.flex {
        "flex"
    } else {
        "default"
    }
}

/// A `chat.completion` object with one choice per answer.
pub(crate) fn completion(
    id: &str,
    req: &Parsed,
    answers: &[Answer],
    prompt: &PromptTokens,
) -> Value {
    let choices: Vec<Value> = answers
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let message = match &a.body {
                Body::Text(t) | Body::Json(t) => json!({
                    "role": "assistant",
                    "content": t,
                    "refusal": null,
                    "annotations": []
                }),
                Body::Tool { name, input } => json!({
                    "role": "assistant",
                    "content": null,
                    "tool_calls": [{
                        "id": call_id(id, i),
                        "type": "function",
                        "function": { "name": name, "arguments": input.to_string() }
                    }],
                    "refusal": null,
                    "annotations": []
                }),
            };
            json!({
                "index": i,
                "message": message,
                "logprobs": null,
                "finish_reason": finish_reason(a)
            })
        })
        .collect();
    json!({
        "id": format!("chatcmpl-{id}"),
        "object": "chat.completion",
        "created": chrono::Utc::now().timestamp(),
        "model": req.model,
        "choices": choices,
        "usage": usage(prompt, answers),
        "service_tier": tier(req),
        "system_fingerprint": "fp_offpeak_sim"
    })
}

/// The `chat.completion.chunk` frames of a streamed answer: per choice, a first chunk with the
/// role, one chunk per token, a chunk with the finish reason; then, with `include_usage`, a
/// chunk without choices carrying the usage (every other chunk then has `"usage": null`); then
/// `[DONE]`.
pub(crate) fn stream(
    id: &str,
    req: &Parsed,
    answers: &[Answer],
    prompt: &PromptTokens,
) -> Vec<Frame> {
    let created = chrono::Utc::now().timestamp();
    let chunk = |choices: Value, usage: Option<Value>| {
        let mut v = json!({
            "id": format!("chatcmpl-{id}"),
            "object": "chat.completion.chunk",
            "created": created,
            "model": req.model,
            "service_tier": tier(req),
            "system_fingerprint": "fp_offpeak_sim",
            "choices": choices
        });
        if req.include_usage {
            v["usage"] = usage.unwrap_or(Value::Null);
        }
        Frame::data(&v)
    };
    let delta = |i: usize, delta: Value, finish: Option<&str>| json!([{ "index": i, "delta": delta, "logprobs": null, "finish_reason": finish }]);
    let mut frames = Vec::new();
    for (i, a) in answers.iter().enumerate() {
        let first = match &a.body {
            Body::Text(_) | Body::Json(_) => {
                json!({ "role": "assistant", "content": "", "refusal": null })
            }
            Body::Tool { name, .. } => json!({
                "role": "assistant",
                "content": null,
                "tool_calls": [{
                    "index": 0,
                    "id": call_id(id, i),
                    "type": "function",
                    "function": { "name": name, "arguments": "" }
                }],
                "refusal": null
            }),
        };
        frames.push(chunk(delta(i, first, None), None));
        for piece in a.deltas() {
            let d = match &a.body {
                Body::Text(_) | Body::Json(_) => json!({ "content": piece }),
                Body::Tool { .. } => {
                    json!({ "tool_calls": [{ "index": 0, "function": { "arguments": piece } }] })
                }
            };
            frames.push(chunk(delta(i, d, None), None).tokens(1));
        }
        frames.push(chunk(delta(i, json!({}), Some(finish_reason(a))), None));
    }
    if req.include_usage {
        frames.push(chunk(json!([]), Some(usage(prompt, answers))));
    }
    frames.push(Frame::done());
    frames
}

fn call_id(id: &str, choice: usize) -> String {
    format!("call_{}", reply::tool_call_id(id, choice))
}

fn finish_reason(a: &Answer) -> &'static str {
    match a.body {
        Body::Tool { .. } => "tool_calls",
        _ if a.truncated => "length",
        _ => "stop",
    }
}

/// The `usage` object: prompt tokens count the cached ones too; completion tokens count every
/// choice.
fn usage(prompt: &PromptTokens, answers: &[Answer]) -> Value {
    let completion: u64 = answers.iter().map(|a| a.output_tokens).sum();
    json!({
        "prompt_tokens": prompt.total,
        "completion_tokens": completion,
        "total_tokens": prompt.total + completion,
        "prompt_tokens_details": { "cached_tokens": prompt.read, "audio_tokens": 0 },
        "completion_tokens_details": { "reasoning_tokens": 0, "audio_tokens": 0 }
    })
}

/// The `GET /v1/models` list.
pub(crate) fn models(spec: &SimProvider) -> Response {
    let data: Vec<Value> = spec
        .models
        .iter()
        .map(|m| json!({ "id": m, "object": "model", "created": 1_700_000_000, "owned_by": spec.name }))
        .collect();
    json(200, json!({ "object": "list", "data": data }))
}

/// An error in OpenAI's `{"error": {message, type, param, code}}` shape.
pub(crate) fn failure(f: &Refusal) -> Response {
    let (status, body) = error_body(f);
    json(status, body)
}

/// The status and body of an error in OpenAI's shape.
pub(crate) fn error_body(f: &Refusal) -> (u16, Value) {
    let (status, message, kind, code): (u16, String, &str, Value) = match f {
        Refusal::Unauthorized => (
            401,
            "Incorrect API key provided. You can find your API key at https://platform.openai.com/account/api-keys.".into(),
            "invalid_request_error",
            json!("invalid_api_key"),
        ),
        Refusal::BadRequest(m) => (400, m.clone(), "invalid_request_error", Value::Null),
        Refusal::ModelNotFound(m) => (
            404,
            format!("The model `{m}` does not exist or you do not have access to it."),
            "invalid_request_error",
            json!("model_not_found"),
        ),
        Refusal::RateLimited { retry_after_s, what } => (
            429,
            format!("Rate limit reached on {what}. Please try again in {retry_after_s}s."),
            "requests",
            json!("rate_limit_exceeded"),
        ),
        Refusal::NotFound(m) => (404, m.clone(), "invalid_request_error", Value::Null),
        // Written raw by the server; never reaches the dialect.
        Refusal::Malformed | Refusal::Huge(_) => (
            500,
            "malformed answer".into(),
            "server_error",
            Value::Null,
        ),
        // The wording of OpenAI's flex guide: "429 Resource Unavailable", not billed.
        Refusal::FlexUnavailable => (
            429,
            "Resource Unavailable: flex processing has no capacity for this request right now. Retry later, or send it at the default service tier.".into(),
            "resource_unavailable",
            json!("resource_unavailable"),
        ),
        Refusal::Status(s) => {
            let (message, kind, code) = status_text(*s);
            (*s, message.into(), kind, code)
        }
    };
    (
        status,
        json!({ "error": { "message": message, "type": kind, "param": null, "code": code } }),
    )
}

fn status_text(status: u16) -> (&'static str, &'static str, Value) {
    match status {
        402 => (
            "Insufficient Balance",
            "insufficient_quota",
            json!("insufficient_quota"),
        ),
        429 => (
            "Rate limit reached. Please try again later.",
            "requests",
            json!("rate_limit_exceeded"),
        ),
        503 | 529 => (
            "The server is overloaded or not ready yet.",
            "server_error",
            Value::Null,
        ),
        s if s >= 500 => (
            "The server had an error while processing your request. Sorry about that!",
            "server_error",
            Value::Null,
        ),
        _ => (
            "The request was rejected.",
            "invalid_request_error",
            Value::Null,
        ),
    }
}
