//! OpenAI chat completions (`POST {base_url}/chat/completions`), which also covers vLLM,
//! llama.cpp, Together, Groq, OpenRouter, DeepSeek and the other compatible servers.

use super::http::{self, Answer};
use super::{ChatRequest, Completion, Provider, ProviderError};
use async_trait::async_trait;
use schemas::ChatMessage;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::time::Duration;

/// Fields never passed through: the client reads whole JSON answers, not event streams.
const DROPPED: &[&str] = &["stream", "stream_options"];

/// A client for one OpenAI-compatible provider account.
pub struct OpenAiProvider {
    name: String,
    url: String,
    api_key: Option<String>,
    http: reqwest::Client,
    timeout: Duration,
    max_response_bytes: usize,
    batches: super::BatchApi,
}

impl OpenAiProvider {
    /// A client for the provider `name` at `base_url` (including the version path, e.g.
    /// `https://api.openai.com/v1`); without a key no `Authorization` header is sent.
    pub fn new(
        name: &str,
        base_url: &str,
        api_key: Option<String>,
        http: reqwest::Client,
        timeout: Duration,
    ) -> Self {
        OpenAiProvider {
            name: name.to_string(),
            url: format!("{}/chat/completions", base_url.trim_end_matches('/')),
            batches: super::BatchApi::new(
                name,
                base_url,
                api_key.clone(),
                http.clone(),
                timeout,
                false,
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

/// Fields the worker owns: a param of the same name is dropped, so it can never replace the
/// model or the messages.
const OWNED: &[&str] = &["model", "messages", "max_tokens"];

/// The request body: the job's params (but the dropped and the owned ones), then the fields the
/// worker owns. Serialised straight from the request, without building a JSON tree first.
#[derive(Serialize)]
pub(crate) struct RequestBody<'a> {
    #[serde(flatten, serialize_with = "passed_params")]
    params: &'a Map<String, Value>,
    model: &'a str,
    messages: &'a [ChatMessage],
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
}

fn passed_params<S: serde::Serializer>(
    params: &&Map<String, Value>,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_map(
        params
            .iter()
            .filter(|(k, _)| !DROPPED.contains(&k.as_str()) && !OWNED.contains(&k.as_str())),
    )
}

pub(crate) fn request_body(req: &ChatRequest) -> RequestBody<'_> {
    RequestBody {
        params: &req.params,
        model: &req.model_id,
        messages: &req.messages,
        max_tokens: req.max_tokens,
    }
}

#[derive(Deserialize)]
struct Response {
    choices: Vec<Choice>,
    #[serde(default)]
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct Choice {
    message: Message,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct Message {
    #[serde(default)]
    content: Option<Value>,
    #[serde(default)]
    tool_calls: Option<Vec<ToolCall>>,
}

#[derive(Deserialize)]
struct ToolCall {
    function: Function,
}

#[derive(Deserialize)]
struct Function {
    name: String,
    /// A JSON text, as a string.
    #[serde(default)]
    arguments: String,
}

#[derive(Deserialize, Default)]
struct Usage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
    /// OpenAI's (and most compatible hosts') cached part of `prompt_tokens`.
    #[serde(default)]
    prompt_tokens_details: Option<PromptDetails>,
    /// DeepSeek's name for the same.
    #[serde(default)]
    prompt_cache_hit_tokens: Option<u64>,
}

#[derive(Deserialize, Default)]
struct PromptDetails {
    #[serde(default)]
    cached_tokens: Option<u64>,
}

/// Reads a 2xx answer into a [`Completion`]: the first choice's text or, when it calls tools,
/// the calls (see `tool_calls_text`).
pub(crate) fn parse(provider: &str, answer: &Answer) -> Result<Completion, ProviderError> {
    let resp: Response = serde_json::from_slice(&answer.body)
        .map_err(|e| answer.malformed(provider, &e.to_string()))?;
    let choice = resp
        .choices
        .into_iter()
        .next()
        .ok_or_else(|| answer.malformed(provider, "no choices"))?;
    let calls = choice.message.tool_calls.unwrap_or_default();
    let text = match choice.message.content {
        _ if !calls.is_empty() => super::tool_calls_text(calls.into_iter().map(|c| {
            let args = serde_json::from_str(&c.function.arguments)
                .unwrap_or(Value::String(c.function.arguments));
            (c.function.name, args)
        })),
        Some(Value::String(s)) => s,
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(""),
        _ => String::new(),
    };
    let usage = resp.usage.unwrap_or_else(|| {
        tracing::warn!(provider, "response has no usage; counting zero tokens");
        Usage::default()
    });
    let cached = usage
        .prompt_tokens_details
        .and_then(|d| d.cached_tokens)
        .or(usage.prompt_cache_hit_tokens)
        .unwrap_or(0)
        .min(usage.prompt_tokens);
    Ok(Completion {
        text,
        finish_reason: choice.finish_reason,
        input_tokens: usage.prompt_tokens,
        output_tokens: usage.completion_tokens,
        cache_read_tokens: cached,
        cache_write_5m_tokens: 0,
        cache_write_1h_tokens: 0,
        response_json: String::from_utf8_lossy(&answer.body).into_owned(),
        request_id: answer.request_id.clone(),
        limits: answer.limits(),
    })
}

#[async_trait]
impl Provider for OpenAiProvider {
    fn name(&self) -> &str {
        &self.name
    }

    fn batches(&self) -> Option<&super::BatchApi> {
        Some(&self.batches)
    }

    async fn complete(&self, req: &ChatRequest) -> Result<Completion, ProviderError> {
        let mut builder = self.http.post(&self.url).json(&request_body(req));
        if let Some(key) = &self.api_key {
            builder = builder.bearer_auth(key);
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

    fn answered(body: Value) -> Completion {
        let answer = Answer {
            status: 200,
            headers: Default::default(),
            body: serde_json::to_vec(&body).unwrap(),
            request_id: None,
        };
        parse("p", &answer).unwrap()
    }

    #[test]
    fn cached_prompt_tokens_are_read_from_openai_and_deepseek_usage() {
        let choice = json!([{"message": {"content": "A"}, "finish_reason": "stop"}]);
        let openai = answered(json!({"choices": choice, "usage": {"prompt_tokens": 2100,
            "completion_tokens": 5, "prompt_tokens_details": {"cached_tokens": 1920}}}));
        assert_eq!(
            (openai.input_tokens, openai.cache_read_tokens),
            (2100, 1920)
        );
        let deepseek = answered(json!({"choices": choice, "usage": {"prompt_tokens": 2100,
            "completion_tokens": 5, "prompt_cache_hit_tokens": 2048, "prompt_cache_miss_tokens": 52}}));
        assert_eq!(deepseek.cache_read_tokens, 2048);
        let plain = answered(
            json!({"choices": choice, "usage": {"prompt_tokens": 30, "completion_tokens": 5}}),
        );
        assert_eq!(
            (plain.cache_read_tokens, plain.cache_write_5m_tokens),
            (0, 0)
        );
    }

    #[test]
    fn params_are_merged_at_top_level_but_cannot_replace_model_or_messages() {
        let req = ChatRequest {
            model_id: "m".into(),
            messages: vec![serde_json::from_value(
                json!({"role": "user", "content": "hi", "name": "x"}),
            )
            .unwrap()],
            max_tokens: Some(7),
            params: serde_json::from_value(
                json!({"temperature": 0, "model": "evil", "stream": true}),
            )
            .unwrap(),
        };
        let text = serde_json::to_string(&request_body(&req)).unwrap();
        // Written once each: a repeated key would leave the choice to the server's parser.
        assert_eq!(text.matches("\"model\"").count(), 1, "{text}");
        assert_eq!(text.matches("\"stream\"").count(), 0, "{text}");
        let body: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            body,
            json!({"model": "m", "messages": [{"role": "user", "content": "hi", "name": "x"}], "max_tokens": 7, "temperature": 0})
        );
    }
}
