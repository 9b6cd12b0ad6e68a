//! The HTTP exchange shared by the provider clients: send with a timeout, read the body with a
//! size cap, and turn failures into classified [`ProviderError`]s that never carry the key or
//! the prompt.

use super::errors::{classify, error_message, parse_retry_after, truncate};
use super::{ErrorClass, ProviderError};
use reqwest::header::HeaderMap;
use reqwest::RequestBuilder;
use router::LimitReport;
use std::time::Duration;

/// Largest response body read by default (`worker.max_response_bytes`); anything bigger is
/// refused as a transient error.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 8 * 1024 * 1024;

/// A provider's HTTP answer, read in full.
pub(crate) struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    pub request_id: Option<String>,
}

/// Sends `req` with `timeout` and reads the whole answer, chunk by chunk, up to `max_body`
/// bytes: a bigger body is cut off as soon as it passes the limit (or refused up front when its
/// `Content-Length` says so), so a runaway answer never sits in memory whole.
/// Timeouts, connection errors and oversized or unreadable bodies are transient errors.
pub(crate) async fn send(
    provider: &str,
    req: RequestBuilder,
    timeout: Duration,
    max_body: usize,
) -> Result<Answer, ProviderError> {
    let transient =
        |message: String, status: Option<u16>, request_id: Option<String>| ProviderError {
            class: ErrorClass::Transient,
            provider: provider.to_string(),
            status,
            retry_after: None,
            request_id,
            message,
            limits: None,
        };
    let mut resp = req.timeout(timeout).send().await.map_err(|e| {
        let what = if e.is_timeout() {
            format!("timed out after {:.1}s", timeout.as_secs_f64())
        } else if e.is_connect() {
            "connection failed".to_string()
        } else {
            "request failed".to_string()
        };
        transient(
            format!("{what}: {}", schemas::error_chain(&e.without_url())),
            None,
            None,
        )
    })?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let request_id = ["x-request-id", "request-id"]
        .iter()
        .find_map(|h| headers.get(*h).and_then(|v| v.to_str().ok()))
        .map(str::to_string);
    let too_large = || {
        format!("HTTP {status}: response too large (over the limit of {max_body} bytes, worker.max_response_bytes)")
    };
    if resp.content_length().is_some_and(|n| n > max_body as u64) {
        return Err(transient(too_large(), Some(status), request_id));
    }
    let mut body = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > max_body {
                    return Err(transient(too_large(), Some(status), request_id));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => break,
            Err(e) => {
                let m = format!(
                    "HTTP {status}: reading the response failed: {}",
                    e.without_url()
                );
                return Err(transient(m, Some(status), request_id));
            }
        }
    }
    Ok(Answer {
        status,
        headers,
        body,
        request_id,
    })
}

impl Answer {
    /// Whether the status is 2xx.
    pub(crate) fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The classified error for a non-success answer; `secrets` (key, prompt texts) are
    /// redacted from the provider's message.
    pub(crate) fn error(&self, provider: &str, secrets: &[&str]) -> ProviderError {
        let body = String::from_utf8_lossy(&self.body);
        let header = |name: &str| self.headers.get(name).and_then(|v| v.to_str().ok());
        let reason = reqwest::StatusCode::from_u16(self.status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("");
        ProviderError {
            class: classify(self.status, &body),
            provider: provider.to_string(),
            status: Some(self.status),
            retry_after: parse_retry_after(
                header("retry-after"),
                header("retry-after-ms"),
                chrono::Utc::now(),
            ),
            request_id: self.request_id.clone(),
            message: format!(
                "{} {reason}: {}",
                self.status,
                error_message(&body, secrets)
            ),
            limits: self.limits(),
        }
    }

    /// A transient error for a 2xx answer whose body is not what the API promises.
    pub(crate) fn malformed(&self, provider: &str, why: &str) -> ProviderError {
        ProviderError {
            class: ErrorClass::Transient,
            provider: provider.to_string(),
            status: Some(self.status),
            retry_after: None,
            request_id: self.request_id.clone(),
            message: format!(
                "{}: malformed response: {}",
                self.status,
                truncate(why, 300)
            ),
            limits: self.limits(),
        }
    }

    /// What the answer's rate-limit headers say of the account (either family), if anything.
    pub(crate) fn limits(&self) -> Option<LimitReport> {
        LimitReport::from_headers(
            |name| self.headers.get(name).and_then(|v| v.to_str().ok()),
            chrono::Utc::now(),
        )
    }
}
