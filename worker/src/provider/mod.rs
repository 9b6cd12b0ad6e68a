//! The `Provider` seam: one module per HTTP API (OpenAI chat completions, Anthropic messages),
//! each turning a job into a request and the answer into a [`Completion`] or a classified
//! [`ProviderError`]. Nothing outside this module matches on provider kinds.

use async_trait::async_trait;
use schemas::ChatMessage;
use serde_json::{Map, Value};
use std::fmt;
use std::time::Duration;

/// What a worker asks a provider for.
#[derive(Debug, Clone)]
pub struct ChatRequest {
    /// The provider's own model id.
    pub model_id: String,
    pub messages: Vec<ChatMessage>,
    pub max_tokens: Option<u32>,
    /// Sampling fields passed through unchanged.
    pub params: Map<String, Value>,
}

/// A provider's answer.
#[derive(Debug, Clone)]
pub struct Completion {
    pub text: String,
    pub finish_reason: Option<String>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// The full response body, for the `response_json` column.
    pub response_json: String,
    pub request_id: Option<String>,
}

/// Whose fault an error is, which decides what the worker does next (DESIGN §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// 429: the provider wants us to slow down; retry or defer, honouring `retry_after`.
    RateLimited,
    /// 5xx, 529, timeouts, connection errors, unreadable bodies: retry with backoff.
    Transient,
    /// 400-class request errors: the job itself is bad; fail it.
    Terminal,
    /// 401/403/404-model, 402 and out-of-credit answers: the provider account is unusable;
    /// open its circuit for minutes and route elsewhere.
    ProviderFault,
}

impl ErrorClass {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::RateLimited => "rate_limited",
            ErrorClass::Transient => "transient",
            ErrorClass::Terminal => "terminal",
            ErrorClass::ProviderFault => "provider_fault",
        }
    }
}

/// A failed provider call, with what a user needs to find it in the provider's logs.
#[derive(Debug, Clone)]
pub struct ProviderError {
    pub class: ErrorClass,
    pub provider: String,
    pub status: Option<u16>,
    pub retry_after: Option<Duration>,
    pub request_id: Option<String>,
    /// A short description; never contains the API key or the prompt.
    pub message: String,
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
}
