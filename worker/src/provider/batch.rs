//! The providers' batch APIs (DESIGN §5, Routes): OpenAI Files + Batches (which Groq, Together
//! and the other compatible servers copy) and Anthropic Message Batches, behind one shape —
//! create a batch of requests tagged by the worker, look at it, cancel it, read its results
//! line by line, and find a batch created but never recorded.
//!
//! Lines are named `l0`, `l1`, … in the order given (both APIs accept that as `custom_id`); the
//! tag is the worker's gather id (OpenAI keeps it as `metadata.offpeak_gather`; Anthropic keeps
//! no metadata, so a lost Anthropic batch is found by its creation time and request count).

use super::http::{self, Answer};
use super::{ChatRequest, Completion, ProviderError};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use std::time::Duration;

/// A provider batch, as last seen.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchState {
    pub id: String,
    /// Completed, expired, cancelled or failed: its results are final.
    pub ended: bool,
    /// The provider's own word for where it is (`in_progress`, `ended`, …).
    pub status: String,
    /// Requests in it, and how many have finished (successfully or not).
    pub total: u64,
    pub finished: u64,
}

/// How one line of a batch ended.
#[derive(Debug, Clone)]
pub enum LineOutcome {
    Done(Completion),
    /// Failed, expired or cancelled: why, in the provider's words.
    Failed(String),
}

/// The custom id of line `i` of the batch tagged `tag`: `l<i>-<hash of the tag>` (both APIs
/// take up to 64 letters, digits, `-` and `_`), so the results say whose lines they are.
pub fn line_id(i: usize, tag: &str) -> String {
    format!("l{i}-{}", tag_hash(tag))
}

/// The line index of a custom id [`line_id`] wrote for `tag`; `None` for another batch's.
pub fn line_index(custom_id: &str, tag: &str) -> Option<usize> {
    let (i, hash) = custom_id.strip_prefix('l')?.split_once('-')?;
    (hash == tag_hash(tag)).then(|| i.parse().ok()).flatten()
}

fn tag_hash(tag: &str) -> String {
    // FNV-1a, 64 bits: stable across processes and versions.
    let h = tag.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("{h:016x}")
}

/// The batch endpoints of one provider account.
#[derive(Clone)]
pub struct BatchApi {
    name: String,
    base: String,
    api_key: Option<String>,
    http: reqwest::Client,
    timeout: Duration,
    anthropic: bool,
}

impl std::fmt::Debug for BatchApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchApi")
            .field("name", &self.name)
            .finish()
    }
}

/// Batch results and input files are big: read up to this much.
const MAX_BATCH_BODY: usize = 512 << 20;

impl BatchApi {
    pub(crate) fn new(
        name: &str,
        base: &str,
        api_key: Option<String>,
        http: reqwest::Client,
        timeout: Duration,
        anthropic: bool,
    ) -> Self {
        BatchApi {
            name: name.to_string(),
            base: base.trim_end_matches('/').to_string(),
            api_key,
            http,
            timeout,
            anthropic,
        }
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let url = if path.starts_with("http") {
            path.to_string()
        } else {
            format!("{}/{}", self.base.trim_end_matches('/'), path)
        };
        let mut b = self.http.request(method, url);
        if self.anthropic {
            b = b.header("anthropic-version", super::anthropic::ANTHROPIC_VERSION);
            if let Some(k) = &self.api_key {
                b = b.header("x-api-key", k);
            }
        } else if let Some(k) = &self.api_key {
            b = b.bearer_auth(k);
        }
        b
    }

    async fn send(&self, b: reqwest::RequestBuilder) -> Result<Answer, ProviderError> {
        let a = http::send(&self.name, b, self.timeout, MAX_BATCH_BODY).await?;
        if !a.is_success() {
            return Err(a.error(&self.name, &super::secrets(self.api_key.as_deref(), &[])));
        }
        Ok(a)
    }

    async fn json(&self, b: reqwest::RequestBuilder) -> Result<Value, ProviderError> {
        let a = self.send(b).await?;
        serde_json::from_slice(&a.body).map_err(|e| a.malformed(&self.name, &e.to_string()))
    }

    /// Creates a batch of `lines` (line `i` is named [`line_id`]`(i)`), tagged `tag`.
    pub async fn create(&self, tag: &str, lines: &[ChatRequest]) -> Result<String, ProviderError> {
        let v = if self.anthropic {
            let requests: Vec<Value> = lines
                .iter()
                .enumerate()
                .map(|(i, r)| json!({"custom_id": line_id(i, tag), "params": super::anthropic::request_body(r)}))
                .collect();
            let b = self
                .request(reqwest::Method::POST, "messages/batches")
                .json(&json!({ "requests": requests }));
            self.json(b).await?
        } else {
            let mut file = Vec::new();
            for (i, r) in lines.iter().enumerate() {
                let line = json!({
                    "custom_id": line_id(i, tag),
                    "method": "POST",
                    "url": "/v1/chat/completions",
                    "body": super::openai::request_body(r),
                });
                serde_json::to_writer(&mut file, &line).unwrap_or_default();
                file.push(b'\n');
            }
            let boundary = format!("offpeak-{tag}-boundary");
            let mut body = Vec::with_capacity(file.len() + 512);
            body.extend_from_slice(
                format!("--{boundary}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"offpeak-{tag}.jsonl\"\r\nContent-Type: application/jsonl\r\n\r\n").as_bytes(),
            );
            body.extend_from_slice(&file);
            body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
            let b = self
                .request(reqwest::Method::POST, "files")
                .header(
                    "content-type",
                    format!("multipart/form-data; boundary={boundary}"),
                )
                .body(body);
            let f = self.json(b).await?;
            let file_id = str_of(&f, "id").ok_or_else(|| self.bad("file upload without an id"))?;
            let b = self.request(reqwest::Method::POST, "batches").json(&json!({
                "input_file_id": file_id,
                "endpoint": "/v1/chat/completions",
                "completion_window": "24h",
                "metadata": { "offpeak_gather": tag },
            }));
            self.json(b).await?
        };
        str_of(&v, "id").ok_or_else(|| self.bad("batch created without an id"))
    }

    /// Where batch `id` is.
    pub async fn state(&self, id: &str) -> Result<BatchState, ProviderError> {
        let path = if self.anthropic {
            format!("messages/batches/{id}")
        } else {
            format!("batches/{id}")
        };
        let v = self.json(self.request(reqwest::Method::GET, &path)).await?;
        Ok(self.state_of(&v))
    }

    fn state_of(&self, v: &Value) -> BatchState {
        let n = |o: &Value, k: &str| o.get(k).and_then(Value::as_u64).unwrap_or(0);
        let id = str_of(v, "id").unwrap_or_default();
        if self.anthropic {
            let status = str_of(v, "processing_status").unwrap_or_default();
            let c = v.get("request_counts").cloned().unwrap_or_default();
            let finished = ["succeeded", "errored", "canceled", "expired"]
                .iter()
                .map(|k| n(&c, k))
                .sum::<u64>();
            BatchState {
                id,
                ended: status == "ended",
                total: finished + n(&c, "processing"),
                finished,
                status,
            }
        } else {
            let status = str_of(v, "status").unwrap_or_default();
            let c = v.get("request_counts").cloned().unwrap_or_default();
            BatchState {
                id,
                ended: matches!(
                    status.as_str(),
                    "completed" | "expired" | "cancelled" | "failed"
                ),
                total: n(&c, "total"),
                finished: n(&c, "completed") + n(&c, "failed"),
                status,
            }
        }
    }

    /// Asks the provider to cancel batch `id` (what finished is kept).
    pub async fn cancel(&self, id: &str) -> Result<(), ProviderError> {
        let path = if self.anthropic {
            format!("messages/batches/{id}/cancel")
        } else {
            format!("batches/{id}/cancel")
        };
        self.json(self.request(reqwest::Method::POST, &path))
            .await
            .map(|_| ())
    }

    /// The outcome of every line of ended batch `id` (created tagged `tag`), by line index; a
    /// line the results do not mention is missing from the map. Results that are another
    /// batch's (a wrong adoption) are an error: their answers belong to other jobs.
    pub async fn results(
        &self,
        id: &str,
        tag: &str,
    ) -> Result<std::collections::HashMap<usize, LineOutcome>, ProviderError> {
        let mut foreign = 0usize;
        let index_of = |line: &Value| {
            line.get("custom_id")
                .and_then(Value::as_str)
                .and_then(|c| line_index(c, tag))
        };
        let mut out = std::collections::HashMap::new();
        if self.anthropic {
            let v = self
                .json(self.request(reqwest::Method::GET, &format!("messages/batches/{id}")))
                .await?;
            let url = str_of(&v, "results_url")
                .unwrap_or_else(|| format!("messages/batches/{id}/results"));
            let a = self.send(self.request(reqwest::Method::GET, &url)).await?;
            for line in jsonl(&a.body) {
                let Some(i) = index_of(&line) else {
                    foreign += 1;
                    continue;
                };
                let r = line.get("result").cloned().unwrap_or_default();
                let kind = str_of(&r, "type").unwrap_or_default();
                let outcome = match (kind.as_str(), r.get("message")) {
                    ("succeeded", Some(m)) => self.completion(&a, m, true),
                    _ => LineOutcome::Failed(format!(
                        "{kind}: {}",
                        r.get("error").map(Value::to_string).unwrap_or_default()
                    )),
                };
                out.insert(i, outcome);
            }
        } else {
            let v = self
                .json(self.request(reqwest::Method::GET, &format!("batches/{id}")))
                .await?;
            for (key, ok) in [("output_file_id", true), ("error_file_id", false)] {
                let Some(file) = str_of(&v, key) else {
                    continue;
                };
                let path = format!("files/{file}/content");
                let a = self.send(self.request(reqwest::Method::GET, &path)).await?;
                for line in jsonl(&a.body) {
                    let Some(i) = index_of(&line) else {
                        foreign += 1;
                        continue;
                    };
                    let resp = line.get("response").filter(|r| !r.is_null());
                    let status = resp
                        .and_then(|r| r.get("status_code"))
                        .and_then(Value::as_u64);
                    let outcome = match (ok, status, resp.and_then(|r| r.get("body"))) {
                        (true, Some(200), Some(body)) => self.completion(&a, body, false),
                        (_, status, body) => LineOutcome::Failed(match line.get("error") {
                            Some(e) if !e.is_null() => e.to_string(),
                            _ => format!(
                                "HTTP {}: {}",
                                status.unwrap_or(0),
                                body.map(Value::to_string).unwrap_or_default()
                            ),
                        }),
                    };
                    out.insert(i, outcome);
                }
            }
        }
        if foreign > 0 && out.is_empty() {
            return Err(ProviderError {
                class: router::ErrorClass::Terminal,
                ..self.bad(&format!(
                    "batch {id} holds {foreign} lines of another gather than {tag}"
                ))
            });
        }
        Ok(out)
    }

    fn completion(&self, a: &Answer, body: &Value, anthropic: bool) -> LineOutcome {
        let answer = Answer {
            status: 200,
            headers: a.headers.clone(),
            body: body.to_string().into_bytes(),
            request_id: a.request_id.clone(),
        };
        let parsed = if anthropic {
            super::anthropic::parse(&self.name, &answer)
        } else {
            super::openai::parse(&self.name, &answer)
        };
        match parsed {
            Ok(c) => LineOutcome::Done(c),
            Err(e) => LineOutcome::Failed(e.to_string()),
        }
    }

    /// A batch tagged `tag` (OpenAI), or the first created at `since` or later with `lines`
    /// requests (Anthropic, which keeps no metadata), among the account's latest batches; none
    /// of `claimed`.
    pub async fn find(
        &self,
        tag: &str,
        since: DateTime<Utc>,
        lines: u64,
        claimed: &std::collections::HashSet<String>,
    ) -> Result<Option<String>, ProviderError> {
        let path = if self.anthropic {
            "messages/batches?limit=100"
        } else {
            "batches?limit=100"
        };
        let v = self.json(self.request(reqwest::Method::GET, path)).await?;
        let data = v
            .get("data")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let unclaimed = |b: &Value| str_of(b, "id").is_some_and(|id| !claimed.contains(&id));
        if !self.anthropic {
            return Ok(data
                .iter()
                .filter(|b| unclaimed(b))
                .find(|b| {
                    b.get("metadata")
                        .and_then(|m| m.get("offpeak_gather"))
                        .and_then(Value::as_str)
                        == Some(tag)
                })
                .and_then(|b| str_of(b, "id")));
        }
        // The earliest batch of the right size created after the record (a second of clock
        // skew allowed); the results' custom ids confirm it when it ends.
        let created = |b: &Value| {
            str_of(b, "created_at")
                .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
                .map(|t| t.with_timezone(&Utc))
        };
        Ok(data
            .iter()
            .filter(|b| unclaimed(b) && self.state_of(b).total == lines)
            .filter_map(|b| Some((created(b)?, b)))
            .filter(|(c, _)| *c >= since - chrono::Duration::seconds(1))
            .min_by_key(|(c, _)| *c)
            .and_then(|(_, b)| str_of(b, "id")))
    }

    fn bad(&self, why: &str) -> ProviderError {
        ProviderError {
            class: router::ErrorClass::Transient,
            provider: self.name.clone(),
            status: None,
            retry_after: None,
            request_id: None,
            message: why.to_string(),
            limits: None,
        }
    }
}

fn str_of(v: &Value, k: &str) -> Option<String> {
    v.get(k).and_then(Value::as_str).map(str::to_string)
}

fn jsonl(body: &[u8]) -> impl Iterator<Item = Value> + '_ {
    body.split(|b| *b == b'\n')
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
        .filter_map(|l| serde_json::from_slice(l).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_ids_name_their_batch_and_read_back_only_for_it() {
        let id = line_id(42, "w1-1764000000000-3");
        assert!(id.len() <= 64 && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
        assert_eq!(line_index(&id, "w1-1764000000000-3"), Some(42));
        assert_eq!(line_index(&id, "w1-1764000000000-4"), None);
        assert_eq!(line_index("l42", "w1-1764000000000-3"), None);
    }
}
