//! The OpenAI dialect: reads `POST /v1/chat/completions` bodies and writes chat completions,
//! model lists and errors in the shapes the official `openai` client parses.

use crate::scenario::SimProvider;
use crate::server::{json, Failure, Parsed};
use crate::text::{content_text, Generated, DEFAULT_MAX_TOKENS};
use axum::response::Response;
use serde_json::{json, Value};

const ROLES: &[&str] = &[
    "system",
    "developer",
    "user",
    "assistant",
    "tool",
    "function",
];

/// Reads and checks a chat-completions request body.
pub(crate) fn parse(body: &[u8]) -> Result<Parsed, Failure> {
    let bad = |m: &str| Failure::BadRequest(m.to_string());
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
    for (i, m) in messages.iter().enumerate() {
        let role = m.get("role").and_then(Value::as_str);
        if !role.is_some_and(|r| ROLES.contains(&r)) {
            return Err(Failure::BadRequest(format!(
                "Invalid value for 'messages[{i}].role': expected one of {ROLES:?}."
            )));
        }
        texts.push(content_text(m.get("content").unwrap_or(&Value::Null)));
    }
    if obj.get("stream").and_then(Value::as_bool) == Some(true) {
        return Err(bad("stream is not supported by the simulator"));
    }
    let mut max_tokens = DEFAULT_MAX_TOKENS;
    for field in ["max_tokens", "max_completion_tokens"] {
        match obj.get(field) {
            None | Some(Value::Null) => {}
            Some(v) => match v.as_u64() {
                Some(n) if n >= 1 => max_tokens = n,
                _ => {
                    return Err(Failure::BadRequest(format!(
                        "Invalid '{field}': expected an integer greater than or equal to 1."
                    )))
                }
            },
        }
    }
    Ok(Parsed {
        model: model.to_string(),
        texts,
        max_tokens,
    })
}

/// A `chat.completion` object.
pub(crate) fn success(id: &str, req: &Parsed, gen: &Generated, prompt_tokens: u64) -> Response {
    json(
        200,
        json!({
            "id": format!("chatcmpl-{id}"),
            "object": "chat.completion",
            "created": chrono::Utc::now().timestamp(),
            "model": req.model,
            "choices": [{
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": gen.text,
                    "refusal": null,
                    "annotations": []
                },
                "logprobs": null,
                "finish_reason": if gen.truncated { "length" } else { "stop" }
            }],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": gen.output_tokens,
                "total_tokens": prompt_tokens + gen.output_tokens,
                "prompt_tokens_details": { "cached_tokens": 0, "audio_tokens": 0 },
                "completion_tokens_details": { "reasoning_tokens": 0, "audio_tokens": 0 }
            },
            "service_tier": "default",
            "system_fingerprint": "fp_offpeak_sim"
        }),
    )
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
pub(crate) fn failure(f: &Failure) -> Response {
    let (status, message, kind, code): (u16, String, &str, Value) = match f {
        Failure::Unauthorized => (
            401,
            "Incorrect API key provided. You can find your API key at https://platform.openai.com/account/api-keys.".into(),
            "invalid_request_error",
            json!("invalid_api_key"),
        ),
        Failure::BadRequest(m) => (400, m.clone(), "invalid_request_error", Value::Null),
        Failure::ModelNotFound(m) => (
            404,
            format!("The model `{m}` does not exist or you do not have access to it."),
            "invalid_request_error",
            json!("model_not_found"),
        ),
        Failure::RateLimited { retry_after_s, what } => (
            429,
            format!("Rate limit reached on {what}. Please try again in {retry_after_s}s."),
            "requests",
            json!("rate_limit_exceeded"),
        ),
        Failure::NotFound(m) => (404, m.clone(), "invalid_request_error", Value::Null),
        // Written raw by the server; never reaches the dialect.
        Failure::Malformed | Failure::Huge(_) => (
            500,
            "malformed answer".into(),
            "server_error",
            Value::Null,
        ),
        Failure::Status(s) => {
            let (message, kind, code) = status_text(*s);
            (*s, message.into(), kind, code)
        }
    };
    json(
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
