//! Pure error handling shared by every provider client: which [`ErrorClass`] an HTTP answer
//! falls in, how long the provider asks us to wait, and a short message safe to log (no key,
//! no prompt).

use super::ErrorClass;
use chrono::{DateTime, Utc};
use std::time::Duration;

/// Longest provider message kept in a [`super::ProviderError`], in characters.
const MAX_MESSAGE_CHARS: usize = 300;

/// Phrases with which providers say the account is out of money or quota, as opposed to
/// "slow down": a 429 or 400 carrying one of these is the account's fault, not the request's.
const OUT_OF_CREDIT: &[&str] = &[
    "insufficient_quota",
    "exceeded your current quota",
    "credit balance is too low",
    "usage limit",
    "insufficient balance",
    "insufficient_balance",
    "billing_error",
    "out of credits",
    "payment required",
];

/// Whose fault a non-success HTTP answer is, from its status and body (DESIGN §5):
/// 429 is a rate limit unless the body says the quota or credit is exhausted; 401, 402, 403,
/// 404 (model not served here) and out-of-credit 400s are the provider account's fault; 408,
/// 5xx and 529 are transient; any other 4xx is the job's fault.
pub fn classify(status: u16, body: &str) -> ErrorClass {
    let lower = body.to_lowercase();
    let out_of_credit = OUT_OF_CREDIT.iter().any(|p| lower.contains(p));
    match status {
        429 if out_of_credit => ErrorClass::ProviderFault,
        429 => ErrorClass::RateLimited,
        400 if out_of_credit => ErrorClass::ProviderFault,
        401..=404 => ErrorClass::ProviderFault,
        // A request timeout says nothing about the request itself.
        408 => ErrorClass::Transient,
        400..=499 => ErrorClass::Terminal,
        _ => ErrorClass::Transient,
    }
}

/// The wait a provider asks for: `retry-after-ms` (milliseconds) if present, else
/// `retry-after` as seconds or as an HTTP date (relative to `now`). Dates in the past give zero.
pub fn parse_retry_after(
    retry_after: Option<&str>,
    retry_after_ms: Option<&str>,
    now: DateTime<Utc>,
) -> Option<Duration> {
    if let Some(ms) = retry_after_ms.and_then(|v| v.trim().parse::<f64>().ok()) {
        if let Some(d) = seconds(ms / 1000.0) {
            return Some(d);
        }
    }
    let v = retry_after?.trim();
    if let Ok(secs) = v.parse::<f64>() {
        return seconds(secs);
    }
    let at = DateTime::parse_from_rfc2822(v).ok()?.with_timezone(&Utc);
    Some((at - now).to_std().unwrap_or(Duration::ZERO))
}

/// A non-negative number of seconds as a wait, at most [`router::MAX_RETRY_AFTER`] (a provider
/// asking for `1e20` seconds must not overflow a clock).
fn seconds(s: f64) -> Option<Duration> {
    (s.is_finite() && s >= 0.0).then(|| {
        Duration::try_from_secs_f64(s)
            .unwrap_or(router::MAX_RETRY_AFTER)
            .min(router::MAX_RETRY_AFTER)
    })
}

/// The provider's own error text from a body: `error.message` (OpenAI and Anthropic), a string
/// `error`, or a top-level `message`; for a non-JSON body, the body itself. Occurrences of each
/// of `secrets` (the API key, the prompt's texts) are replaced, and the result is cut to 300
/// characters.
pub fn error_message(body: &str, secrets: &[&str]) -> String {
    let json: Option<serde_json::Value> = serde_json::from_str(body).ok();
    let found = json.as_ref().and_then(|v| {
        v.pointer("/error/message")
            .or_else(|| v.get("error").filter(|e| e.is_string()))
            .or_else(|| v.get("message"))
            .or_else(|| v.get("detail"))
            .and_then(|m| m.as_str())
            .map(str::to_string)
    });
    let mut text = found.unwrap_or_else(|| body.trim().to_string());
    for s in secrets.iter().filter(|s| s.len() >= 8) {
        if text.contains(*s) {
            text = text.replace(*s, "[redacted]");
        }
    }
    truncate(&text, MAX_MESSAGE_CHARS)
}

/// `s` cut to at most `max` characters, marked with `…` when cut.
pub(crate) fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn plain_429_is_a_rate_limit() {
        let body = r#"{"error":{"message":"Rate limit reached for requests","type":"requests","code":"rate_limit_exceeded"}}"#;
        assert_eq!(classify(429, body), ErrorClass::RateLimited);
        assert_eq!(classify(429, ""), ErrorClass::RateLimited);
    }

    #[test]
    fn out_of_quota_429_is_the_providers_fault() {
        let openai = r#"{"error":{"message":"You exceeded your current quota, please check your plan and billing details.","type":"insufficient_quota","code":"insufficient_quota"}}"#;
        assert_eq!(classify(429, openai), ErrorClass::ProviderFault);
        let anthropic = r#"{"type":"error","error":{"type":"invalid_request_error","message":"You have reached your specified API usage limits."}}"#;
        assert_eq!(classify(429, anthropic), ErrorClass::ProviderFault);
    }

    #[test]
    fn out_of_credit_400_is_the_providers_fault_but_other_400s_are_terminal() {
        let credit = r#"{"type":"error","error":{"type":"invalid_request_error","message":"Your credit balance is too low to access the Anthropic API."}}"#;
        assert_eq!(classify(400, credit), ErrorClass::ProviderFault);
        let bad = r#"{"error":{"message":"Invalid 'messages': empty array.","type":"invalid_request_error"}}"#;
        assert_eq!(classify(400, bad), ErrorClass::Terminal);
        assert_eq!(classify(422, "unprocessable"), ErrorClass::Terminal);
        assert_eq!(classify(413, "too large"), ErrorClass::Terminal);
    }

    #[test]
    fn auth_payment_and_missing_model_are_the_providers_fault() {
        for s in [401, 402, 403, 404] {
            assert_eq!(classify(s, "{}"), ErrorClass::ProviderFault, "{s}");
        }
    }

    #[test]
    fn server_errors_overload_and_timeouts_are_transient() {
        for s in [500, 502, 503, 504, 529, 408] {
            assert_eq!(
                classify(s, "<html>oops</html>"),
                ErrorClass::Transient,
                "{s}"
            );
        }
    }

    #[test]
    fn retry_after_reads_seconds_dates_and_milliseconds() {
        let now = Utc.with_ymd_and_hms(2015, 10, 21, 7, 27, 0).unwrap();
        assert_eq!(
            parse_retry_after(Some("7"), None, now),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            parse_retry_after(Some("1.5"), None, now),
            Some(Duration::from_millis(1500))
        );
        let date = Some("Wed, 21 Oct 2015 07:28:00 GMT");
        assert_eq!(
            parse_retry_after(date, None, now),
            Some(Duration::from_secs(60))
        );
        let past = Some("Wed, 21 Oct 2015 07:00:00 GMT");
        assert_eq!(parse_retry_after(past, None, now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after(Some("7"), Some("250"), now),
            Some(Duration::from_millis(250))
        );
        assert_eq!(parse_retry_after(Some("soon"), None, now), None);
        // Absurd waits are taken as the longest one honoured, not a panic or an overflow.
        assert_eq!(
            parse_retry_after(Some("1e20"), None, now),
            Some(router::MAX_RETRY_AFTER)
        );
        assert_eq!(
            parse_retry_after(None, Some("1e300"), now),
            Some(router::MAX_RETRY_AFTER)
        );
        assert_eq!(parse_retry_after(None, None, now), None);
    }

    #[test]
    fn error_message_takes_the_providers_text_redacts_secrets_and_truncates() {
        let body = r#"{"error":{"message":"Incorrect API key provided: sk-secret-123456.","type":"invalid_request_error"}}"#;
        let m = error_message(body, &["sk-secret-123456"]);
        assert_eq!(m, "Incorrect API key provided: [redacted].");
        let anthropic =
            r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
        assert_eq!(error_message(anthropic, &[]), "Overloaded");
        let long = "x".repeat(1000);
        assert_eq!(error_message(&long, &[]).chars().count(), 301);
    }
}
