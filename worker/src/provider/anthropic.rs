//! Anthropic messages (`POST {base_url}/messages`): system messages become the top-level
//! `system` prompt, `max_tokens` is always sent, OpenAI-only fields are dropped, `stop`
//! becomes `stop_sequences` and OpenAI-shaped `tools` and `tool_choice` take Anthropic's shape.

use super::http::{self, Answer};
use super::{ChatRequest, Completion, Provider, ProviderError};
use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{Map, Value};
use std::time::Duration;

/// The API version sent in `anthropic-version`.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

/// `max_tokens` when neither the job nor its params give one (the API requires it).
pub const DEFAULT_MAX_TOKENS: u32 = 4096;

/// OpenAI request fields the messages API rejects.
const DROPPED: &[&str] = &[
    "seed",
    "response_format",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
    "logprobs",
    "top_logprobs",
    "n",
    "user",
    "parallel_tool_calls",
    "max_completion_tokens",
    "reasoning_effort",
    "stop",
    "stream",
    "stream_options",
];

/// A client for one Anthropic account.
pub struct AnthropicProvider {
    name: String,
    url: String,
    api_key: Option<String>,
    http: reqwest::Client,
    timeout: Duration,
    max_response_bytes: usize,
    batches: super::BatchApi,
}

impl AnthropicProvider {
    /// A client for the provider `name` at `base_url` (e.g. `https://api.anthropic.com/v1`);
    /// without a key no `x-api-key` header is sent.
    pub fn new(
        name: &str,
        base_url: &str,
        api_key: Option<String>,
        http: reqwest::Client,
        timeout: Duration,
    ) -> Self {
        AnthropicProvider {
            name: name.to_string(),
            url: format!("{}/messages", base_url.trim_end_matches('/')),
            batches: super::BatchApi::new(
                name,
                base_url,
                api_key.clone(),
                http.clone(),
                timeout,
                true,
            ),
            api_key,
            http,
            timeout,
            max_response_bytes: http::DEFAULT_MAX_RESPONSE_BYTES,
        }
    }

    /// Refuses answers bigger than `bytes` (default 8 MiB) with a transient error.
    pub fn with_max_response_bytes(mut self, bytes: usize) -> Self {
        self.max_response_bytes = bytes;
        self
    }
}

/// The request body for `req`.
pub(crate) fn request_body(req: &ChatRequest) -> Map<String, Value> {
    let mut body: Map<String, Value> = req
        .params
        .iter()
        .filter(|(k, _)| !DROPPED.contains(&k.as_str()) && k.as_str() != "system")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    // OpenAI's `stop` is a string or a list; Anthropic wants a list.
    match req.params.get("stop") {
        Some(Value::String(s)) => {
            body.insert(
                "stop_sequences".into(),
                Value::Array(vec![Value::String(s.clone())]),
            );
        }
        Some(list @ Value::Array(_)) => {
            body.insert("stop_sequences".into(), list.clone());
        }
        _ => {}
    }
    if let Some(Value::Array(tools)) = req.params.get("tools") {
        let tools = tools.iter().map(anthropic_tool).collect();
        body.insert("tools".into(), Value::Array(tools));
    }
    if let Some(choice) = req.params.get("tool_choice") {
        body.insert("tool_choice".into(), anthropic_tool_choice(choice));
    }
    let mut system: Vec<String> = req
        .params
        .get("system")
        .and_then(Value::as_str)
        .map(str::to_string)
        .into_iter()
        .collect();
    // Text blocks of the system prompt, for when one of them marks a cache breakpoint.
    let mut blocks: Vec<Value> = system
        .iter()
        .map(|t| serde_json::json!({"type": "text", "text": t}))
        .collect();
    let mut cached = false;
    let mut messages = Vec::with_capacity(req.messages.len());
    for m in &req.messages {
        if m.role == "system" || m.role == "developer" {
            system.push(m.text());
            match &m.content {
                Value::Array(parts) => {
                    for p in parts.iter().filter(|p| p.get("text").is_some()) {
                        cached |= p.get("cache_control").is_some();
                        blocks.push(p.clone());
                    }
                }
                _ => blocks.push(serde_json::json!({"type": "text", "text": m.text()})),
            }
        } else {
            messages.push(serde_json::to_value(m).unwrap_or(Value::Null));
        }
    }
    if cached {
        // A `cache_control` breakpoint in the system prompt is kept: Anthropic caches the
        // prompt up to it, and bills later reads of it at a tenth of the input price.
        body.insert("system".into(), Value::Array(blocks));
    } else if !system.is_empty() {
        body.insert("system".into(), Value::String(system.join("\n\n")));
    }
    let max_tokens = req
        .max_tokens
        .or_else(|| {
            let n = req
                .params
                .get("max_completion_tokens")
                .and_then(Value::as_u64)?;
            u32::try_from(n).ok()
        })
        .unwrap_or(DEFAULT_MAX_TOKENS);
    body.insert("model".into(), Value::String(req.model_id.clone()));
    body.insert("messages".into(), Value::Array(messages));
    body.insert("max_tokens".into(), Value::from(max_tokens));
    body
}

/// An OpenAI `{"type": "function", "function": {name, description, parameters}}` tool as
/// Anthropic's `{name, description, input_schema}`; anything else is passed as it is.
fn anthropic_tool(t: &Value) -> Value {
    let Some(f) = t.get("function").filter(|_| t["type"] == "function") else {
        return t.clone();
    };
    let mut out = Map::new();
    out.insert("name".into(), f.get("name").cloned().unwrap_or(Value::Null));
    if let Some(d) = f.get("description") {
        out.insert("description".into(), d.clone());
    }
    let schema = f.get("parameters").cloned();
    let schema = schema.unwrap_or_else(|| serde_json::json!({"type": "object", "properties": {}}));
    out.insert("input_schema".into(), schema);
    Value::Object(out)
}

/// OpenAI's `tool_choice` (`"auto"`, `"required"`, `"none"`, a named function) in Anthropic's
/// terms; anything else is passed as it is.
fn anthropic_tool_choice(c: &Value) -> Value {
    let kind = |k: &str| serde_json::json!({ "type": k });
    match c {
        Value::String(s) if s == "auto" => kind("auto"),
        Value::String(s) if s == "required" => kind("any"),
        Value::String(s) if s == "none" => kind("none"),
        _ => match c.pointer("/function/name") {
            Some(name) => serde_json::json!({ "type": "tool", "name": name }),
            None => c.clone(),
        },
    }
}

#[derive(Deserialize)]
struct Response {
    content: Vec<Block>,
    #[serde(default)]
    stop_reason: Option<String>,
    usage: Usage,
}

#[derive(Deserialize)]
struct Block {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
    /// `tool_use` blocks: the tool's name and arguments.
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    input: Option<Value>,
}

#[derive(Deserialize)]
struct Usage {
    input_tokens: u64,
    output_tokens: u64,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
    /// The cache writes by lifetime (sent since the 1-hour cache); without it every write is
    /// taken as a 5-minute one.
    #[serde(default)]
    cache_creation: Option<CacheCreation>,
}

#[derive(Deserialize)]
struct CacheCreation {
    #[serde(default)]
    ephemeral_1h_input_tokens: u64,
}

/// Reads a 2xx answer into a [`Completion`]: the text blocks or, when the answer calls tools,
/// the calls (see `tool_calls_text`). Input tokens include cache writes and reads, so they
/// count the whole prompt.
pub(crate) fn parse(provider: &str, answer: &Answer) -> Result<Completion, ProviderError> {
    let resp: Response = serde_json::from_slice(&answer.body)
        .map_err(|e| answer.malformed(provider, &e.to_string()))?;
    let mut calls = resp
        .content
        .iter()
        .filter(|b| b.kind == "tool_use")
        .peekable();
    let text = if calls.peek().is_some() {
        super::tool_calls_text(calls.map(|b| {
            let name = b.name.clone().unwrap_or_default();
            (name, b.input.clone().unwrap_or(Value::Null))
        }))
    } else {
        resp.content
            .iter()
            .filter(|b| b.kind == "text")
            .filter_map(|b| b.text.as_deref())
            .collect::<Vec<_>>()
            .join("")
    };
    let u = &resp.usage;
    let (read, written) = (
        u.cache_read_input_tokens.unwrap_or(0),
        u.cache_creation_input_tokens.unwrap_or(0),
    );
    let write_1h = u
        .cache_creation
        .as_ref()
        .map_or(0, |c| c.ephemeral_1h_input_tokens)
        .min(written);
    Ok(Completion {
        text,
        finish_reason: resp.stop_reason,
        input_tokens: u.input_tokens + written + read,
        output_tokens: u.output_tokens,
        cache_read_tokens: read,
        cache_write_5m_tokens: written - write_1h,
        cache_write_1h_tokens: write_1h,
        response_json: String::from_utf8_lossy(&answer.body).into_owned(),
        request_id: answer.request_id.clone(),
        limits: answer.limits(),
    })
}

#[async_trait]
impl Provider for AnthropicProvider {
    fn name(&self) -> &str {
        &self.name
    }

    fn batches(&self) -> Option<&super::BatchApi> {
        Some(&self.batches)
    }

    async fn complete(&self, req: &ChatRequest) -> Result<Completion, ProviderError> {
        let mut builder = self
            .http
            .post(&self.url)
            .header("anthropic-version", ANTHROPIC_VERSION)
            .json(&request_body(req));
        if let Some(key) = &self.api_key {
            builder = builder.header("x-api-key", key);
        }
        let answer = http::send(&self.name, builder, self.timeout, self.max_response_bytes).await?;
        if !answer.is_success() {
            let texts: Vec<String> = req.messages.iter().map(|m| m.text()).collect();
            return Err(answer.error(&self.name, &super::secrets(self.api_key.as_deref(), &texts)));
        }
        parse(&self.name, &answer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn req(messages: Value, max_tokens: Option<u32>, params: Value) -> ChatRequest {
        ChatRequest {
            model_id: "claude".into(),
            messages: serde_json::from_value(messages).unwrap(),
            max_tokens,
            params: serde_json::from_value(params).unwrap(),
        }
    }

    #[test]
    fn system_messages_are_lifted_and_openai_only_params_dropped() {
        let r = req(
            json!([{"role": "system", "content": "be terse"}, {"role": "user", "content": "hi"},
                   {"role": "system", "content": [{"type": "text", "text": "and kind"}]}]),
            None,
            json!({"temperature": 0.2, "seed": 1, "response_format": {"type": "json_object"}, "stop": "END", "top_k": 5}),
        );
        let body = Value::Object(request_body(&r));
        assert_eq!(
            body,
            json!({
                "model": "claude", "max_tokens": DEFAULT_MAX_TOKENS, "system": "be terse\n\nand kind",
                "messages": [{"role": "user", "content": "hi"}],
                "temperature": 0.2, "top_k": 5, "stop_sequences": ["END"]
            })
        );
    }

    #[test]
    fn a_cache_breakpoint_in_the_system_prompt_is_kept_as_blocks() {
        let long = json!([{"type": "text", "text": "the shared few-shot prefix", "cache_control": {"type": "ephemeral"}}]);
        let r = req(
            json!([{"role": "system", "content": "be terse"},
                   {"role": "system", "content": long},
                   {"role": "user", "content": "q"}]),
            None,
            json!({}),
        );
        let body = Value::Object(request_body(&r));
        assert_eq!(
            body["system"],
            json!([{"type": "text", "text": "be terse"},
                   {"type": "text", "text": "the shared few-shot prefix", "cache_control": {"type": "ephemeral"}}])
        );
    }

    #[test]
    fn cache_reads_and_writes_count_in_the_prompt_and_apart() {
        let body = json!({
            "content": [{"type": "text", "text": "A"}], "stop_reason": "end_turn",
            "usage": {"input_tokens": 50, "output_tokens": 7, "cache_read_input_tokens": 2000,
                      "cache_creation_input_tokens": 300,
                      "cache_creation": {"ephemeral_5m_input_tokens": 200, "ephemeral_1h_input_tokens": 100}}
        });
        let answer = Answer {
            status: 200,
            headers: Default::default(),
            body: serde_json::to_vec(&body).unwrap(),
            request_id: None,
        };
        let c = parse("anthropic", &answer).unwrap();
        assert_eq!(
            (
                c.input_tokens,
                c.cache_read_tokens,
                c.cache_write_5m_tokens,
                c.cache_write_1h_tokens,
                c.output_tokens
            ),
            (2350, 2000, 200, 100, 7)
        );
    }

    #[test]
    fn openai_shaped_tools_and_tool_choice_take_anthropics_shape() {
        let params = json!({
            "tools": [
                {"type": "function", "function": {"name": "f", "description": "d", "parameters": {"type": "object"}}},
                {"name": "g", "input_schema": {"type": "object"}}
            ],
            "tool_choice": {"type": "function", "function": {"name": "f"}}
        });
        let b = request_body(&req(
            json!([{"role": "user", "content": "hi"}]),
            None,
            params,
        ));
        assert_eq!(
            b["tools"],
            json!([{"name": "f", "description": "d", "input_schema": {"type": "object"}},
                   {"name": "g", "input_schema": {"type": "object"}}])
        );
        assert_eq!(b["tool_choice"], json!({"type": "tool", "name": "f"}));
        assert_eq!(
            anthropic_tool_choice(&json!("required")),
            json!({"type": "any"})
        );
    }

    #[test]
    fn max_tokens_comes_from_the_job_then_max_completion_tokens() {
        let msgs = json!([{"role": "user", "content": "hi"}]);
        let b = request_body(&req(
            msgs.clone(),
            Some(10),
            json!({"max_completion_tokens": 20}),
        ));
        assert_eq!(b["max_tokens"], 10);
        let b = request_body(&req(msgs, None, json!({"max_completion_tokens": 20})));
        assert_eq!(b["max_tokens"], 20);
        assert!(!b.contains_key("max_completion_tokens"));
    }
}
