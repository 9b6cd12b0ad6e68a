//! The `Provider` seam: one module per HTTP API (OpenAI chat completions, Anthropic messages),
//! each turning a job into a request and the answer into a [`Completion`] or a classified
//! [`ProviderError`]. Nothing outside this module matches on provider kinds.

pub mod anthropic;
pub mod batch;
mod errors;
mod http;
pub mod openai;

pub use anthropic::AnthropicProvider;
pub use batch::{BatchApi, BatchState, LineOutcome};
pub use errors::{classify, error_message, parse_retry_after};
pub use http::DEFAULT_MAX_RESPONSE_BYTES;
pub use openai::OpenAiProvider;

use async_trait::async_trait;
use router::LimitReport;
use schemas::{ChatMessage, ProviderKind, ProviderSpec};
use serde_json::{Map, Value};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// What a worker asks a provider for.
#[derive(Debug, Clone)]
pub struct ChatRequest {
    /// The provider's own model id.
    pub model_id: String,
    /// The conversation, as the job gave it.
    pub messages: Vec<ChatMessage>,
    /// Output token cap, when the job sets one.
    pub max_tokens: Option<u32>,
    /// Sampling fields passed through unchanged.
    pub params: Map<String, Value>,
}

/// A provider's answer.
#[derive(Debug, Clone)]
pub struct Completion {
    /// The answer's text.
    pub text: String,
    /// Why generation stopped, in the provider's words (`stop`, `length`, `end_turn`, …).
    pub finish_reason: Option<String>,
    /// Prompt tokens billed.
    pub input_tokens: u64,
    /// Output tokens billed.
    pub output_tokens: u64,
    /// Of `input_tokens`, those read from the provider's prompt cache.
    pub cache_read_tokens: u64,
    /// Of `input_tokens`, those written to a 5-minute (Anthropic's default) prompt cache.
    pub cache_write_5m_tokens: u64,
    /// Of `input_tokens`, those written to a 1-hour prompt cache.
    pub cache_write_1h_tokens: u64,
    /// The full response body, for the `response_json` column.
    pub response_json: String,
    /// The provider's request id (`x-request-id` / `request-id`), for support tickets.
    pub request_id: Option<String>,
    /// What the answer's rate-limit headers said of the account, if it sent them.
    pub limits: Option<LimitReport>,
}

impl Completion {
    /// The tokens billed, as one figure set.
    pub fn usage(&self) -> schemas::TokenUsage {
        schemas::TokenUsage {
            input: self.input_tokens,
            cache_read: self.cache_read_tokens,
            cache_write_5m: self.cache_write_5m_tokens,
            cache_write_1h: self.cache_write_1h_tokens,
            output: self.output_tokens,
        }
    }
}

/// Whose fault an error is, which decides what the worker does next (DESIGN §5); the rule
/// itself is the router's ([`router::after_error`]).
pub use router::ErrorClass;

/// A failed provider call, with what a user needs to find it in the provider's logs.
#[derive(Debug, Clone)]
pub struct ProviderError {
    /// What the worker should do about it.
    pub class: ErrorClass,
    /// The catalog name of the provider.
    pub provider: String,
    /// The HTTP status, when there was an answer.
    pub status: Option<u16>,
    /// The wait the provider asked for (`retry-after-ms` or `retry-after`).
    pub retry_after: Option<Duration>,
    /// The provider's request id, when it sent one.
    pub request_id: Option<String>,
    /// A short description; never contains the API key or the prompt.
    pub message: String,
    /// What the answer's rate-limit headers said of the account (a 429 carries them too).
    pub limits: Option<Box<LimitReport>>,
}

impl fmt::Display for ProviderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}", self.provider, self.class.as_str())?;
        if let Some(s) = self.status {
            write!(f, ", HTTP {s}")?;
        }
        if let Some(r) = &self.request_id {
            write!(f, ", request {r}")?;
        }
        write!(f, "): {}", self.message)
    }
}

impl std::error::Error for ProviderError {}

/// One provider account able to answer chat requests.
#[async_trait]
pub trait Provider: Send + Sync {
    /// The catalog name of this provider.
    fn name(&self) -> &str;
    /// Sends one request and waits for the whole answer.
    async fn complete(&self, req: &ChatRequest) -> Result<Completion, ProviderError>;
    /// The account's batch API, if the client speaks one.
    fn batches(&self) -> Option<&BatchApi> {
        None
    }
}

/// How a provider client talks HTTP.
#[derive(Debug, Clone, Copy)]
pub struct ClientOptions {
    /// Gives up on a request after this long (a transient error).
    pub timeout: Duration,
    /// Refuses answers bigger than this many bytes (a transient error), cutting the body off
    /// while reading it.
    pub max_response_bytes: usize,
}

/// The client for `spec`'s API, sending requests with `http` and giving up after `timeout`.
/// The key comes from the environment variable `api_key_env` or, failing that, the trimmed
/// contents of `api_key_file`; a missing variable means no key is sent (self-hosted
/// endpoints), while an unreadable or empty key file is an error.
pub fn build(
    spec: &ProviderSpec,
    http: reqwest::Client,
    timeout: Duration,
) -> Result<Arc<dyn Provider>, String> {
    build_with(
        spec,
        http,
        ClientOptions {
            timeout,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
        },
    )
}

/// The catalog without its providers whose key is missing: `api_key_env` names a variable that
/// is unset or empty, and no `api_key_file` is given. Such a provider would answer every request
/// 401 (or, on a real API, fail in a way that looks like the network); the worker leaves it out
/// and says so at start. Returns the kept catalog and the `(provider, variable)` pairs left out.
pub fn without_missing_keys(
    catalog: &schemas::Catalog,
) -> (schemas::Catalog, Vec<(String, String)>) {
    let mut kept = catalog.clone();
    let mut missing = Vec::new();
    kept.providers.retain(|p| {
        let Some(var) = p.api_key_env.as_deref() else {
            return true;
        };
        let set = std::env::var(var).is_ok_and(|k| !k.trim().is_empty());
        if set || p.api_key_file.is_some() {
            return true;
        }
        missing.push((p.name.clone(), var.to_string()));
        false
    });
    (kept, missing)
}

/// One client per catalog provider, sharing `http`; the error names the provider whose client
/// could not be built (its key variable unset, say).
pub fn build_all(
    catalog: &schemas::Catalog,
    http: &reqwest::Client,
    opts: ClientOptions,
) -> Result<std::collections::HashMap<String, Arc<dyn Provider>>, String> {
    catalog
        .providers
        .iter()
        .map(|p| {
            build_with(p, http.clone(), opts)
                .map(|c| (p.name.clone(), c))
                .map_err(|e| format!("provider {}: {e}", p.name))
        })
        .collect()
}

/// The HTTP client the provider clients share. Every job in flight may hold a connection; a
/// smaller idle pool than `concurrency` would close and reopen connections at high concurrency
/// (churn, and TIME_WAIT sockets piling up on the host).
pub fn http_client(concurrency: usize) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency.max(256))
        .build()
}

/// Like [`build`], with every client option given.
pub fn build_with(
    spec: &ProviderSpec,
    http: reqwest::Client,
    opts: ClientOptions,
) -> Result<Arc<dyn Provider>, String> {
    let key = api_key(spec)?;
    let (timeout, max) = (opts.timeout, opts.max_response_bytes);
    match spec.kind {
        ProviderKind::Openai => Ok(Arc::new(
            OpenAiProvider::new(&spec.name, &spec.base_url, key, http, timeout)
                .with_max_response_bytes(max),
        )),
        ProviderKind::Anthropic => Ok(Arc::new(
            AnthropicProvider::new(&spec.name, &spec.base_url, key, http, timeout)
                .with_max_response_bytes(max),
        )),
        ProviderKind::Gemini => Err("gemini is not supported yet".into()),
    }
}

/// Reads one HTTP answer of a `kind` provider named `provider` the way its client does: a 2xx
/// body into a [`Completion`], anything else (or a 2xx body that is not what the API promises)
/// into a classified [`ProviderError`]. Pure; for tests and fuzzing of the response parsers.
pub fn parse_answer(
    kind: ProviderKind,
    provider: &str,
    status: u16,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Completion, ProviderError> {
    let mut map = reqwest::header::HeaderMap::new();
    for (k, v) in headers {
        if let (Ok(k), Ok(v)) = (
            reqwest::header::HeaderName::from_bytes(k.as_bytes()),
            reqwest::header::HeaderValue::from_str(v),
        ) {
            map.append(k, v);
        }
    }
    let answer = http::Answer {
        status,
        request_id: None,
        headers: map,
        body: body.to_vec(),
    };
    if !answer.is_success() {
        return Err(answer.error(provider, &[]));
    }
    match kind {
        ProviderKind::Anthropic => anthropic::parse(provider, &answer),
        ProviderKind::Openai | ProviderKind::Gemini => openai::parse(provider, &answer),
    }
}

fn api_key(spec: &ProviderSpec) -> Result<Option<String>, String> {
    let from_env = spec
        .api_key_env
        .as_deref()
        .and_then(|var| std::env::var(var).ok())
        .map(|k| k.trim().to_string())
        .filter(|k| !k.is_empty());
    if from_env.is_some() {
        return Ok(from_env);
    }
    let Some(path) = &spec.api_key_file else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(path).map_err(|e| {
        format!(
            "provider {:?}: cannot read api_key_file {path:?}: {e}",
            spec.name
        )
    })?;
    let key = text.trim();
    if key.is_empty() {
        return Err(format!(
            "provider {:?}: api_key_file {path:?} is empty",
            spec.name
        ));
    }
    Ok(Some(key.to_string()))
}

/// The `output_text` of an answer that calls tools: the calls as a JSON array of
/// `{"name": NAME, "arguments": ARGS}`, in order and the same for every API, so a tool used for
/// structured output reads back with one `json.loads` whoever served it. `ARGS` is the
/// arguments' JSON value, or the provider's string when that is not JSON.
fn tool_calls_text(calls: impl Iterator<Item = (String, Value)>) -> String {
    let calls: Vec<Value> = calls
        .map(|(name, arguments)| serde_json::json!({ "name": name, "arguments": arguments }))
        .collect();
    Value::Array(calls).to_string()
}

/// What must never appear in an error message: the key and the prompt's texts.
fn secrets<'a>(key: Option<&'a str>, texts: &'a [String]) -> Vec<&'a str> {
    key.into_iter()
        .chain(texts.iter().map(String::as_str))
        .collect()
}
