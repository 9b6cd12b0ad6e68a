//! The Anthropic dialect: reads `POST /v1/messages` bodies and writes messages, model lists and
//! errors in the shapes the official `anthropic` client parses.

use crate::scenario::SimProvider;
use crate::server::{json, Failure, Parsed};
use crate::text::{content_text, Generated};
use axum::http::HeaderMap;
use axum::response::Response;
use serde_json::{json, Value};

/// Reads and checks a messages request (headers and body).
pub(crate) fn parse(headers: &HeaderMap, body: &[u8]) -> Result<Parsed, Failure> {
    let bad = |m: &str| Failure::BadRequest(m.to_string());
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
                return Err(Failure::BadRequest(format!(
                    "messages.{i}.role: Unexpected role \"{other}\". The Messages API accepts a top-level `system` parameter, not \"system\" as an input message role."
                )))
            }
            None => return Err(Failure::BadRequest(format!("messages.{i}.role: Field required"))),
        }
        texts.push(content_text(m.get("content").unwrap_or(&Value::Null)));
    }
    if obj.get("stream").and_then(Value::as_bool) == Some(true) {
        return Err(bad("stream is not supported by the simulator"));
    }
    Ok(Parsed {
        model: model.to_string(),
        texts,
        max_tokens,
    })
}

/// A `message` object.
pub(crate) fn success(id: &str, req: &Parsed, gen: &Generated, prompt_tokens: u64) -> Response {
    json(
        200,
        json!({
            "id": format!("msg_{id}"),
            "type": "message",
            "role": "assistant",
            "model": req.model,
            "content": [{ "type": "text", "text": gen.text }],
            "stop_reason": if gen.truncated { "max_tokens" } else { "end_turn" },
            "stop_sequence": null,
            "usage": {
                "input_tokens": prompt_tokens,
                "output_tokens": gen.output_tokens,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0
            }
        }),
    )
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
pub(crate) fn failure(f: &Failure) -> Response {
    let (status, kind, message): (u16, &str, String) = match f {
        Failure::Unauthorized => (401, "authentication_error", "invalid x-api-key".into()),
        Failure::BadRequest(m) => (400, "invalid_request_error", m.clone()),
        Failure::ModelNotFound(m) => (404, "not_found_error", format!("model: {m}")),
        Failure::RateLimited { what, .. } => (
            429,
            "rate_limit_error",
            format!("This request would exceed the rate limit for your organization on {what}."),
        ),
        Failure::NotFound(m) => (404, "not_found_error", m.clone()),
        // Written raw by the server; never reaches the dialect.
        Failure::Malformed | Failure::Huge(_) => (500, "api_error", "malformed answer".into()),
        Failure::Status(s) => {
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
    json(
        status,
        json!({ "type": "error", "error": { "type": kind, "message": message } }),
    )
}
