//! The job: one chat request a user wants answered before a deadline, at the lowest price.
//!
//! Job files come in two JSONL dialects (DESIGN §2): offpeak's native one and the OpenAI Batch API
//! input format. [`JobParser`] turns a line of either into a [`Job`] or a [`JobError`] naming the
//! field at fault; a `Job` that exists is valid.

use crate::{JobId, Usd};
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::{HashMap, HashSet};
use std::fmt;

/// How long a job may wait for cheap capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    /// Never deferred; any provider.
    Critical,
    /// Short deferrals only.
    Standard,
    /// Cheapest price; may wait until close to its deadline.
    #[default]
    Deferrable,
}

impl Priority {
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Critical => "critical",
            Priority::Standard => "standard",
            Priority::Deferrable => "deferrable",
        }
    }
}

/// One chat message, kept as the user wrote it so provider-specific parts (images, tool calls)
/// pass through untouched.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    #[serde(default)]
    pub content: Value,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ChatMessage {
    /// The message's text: a string content, or the `text` parts of an array content.
    pub fn text(&self) -> String {
        match &self.content {
            Value::String(s) => s.clone(),
            Value::Array(parts) => parts
                .iter()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join("\n"),
            _ => String::new(),
        }
    }
}

/// A valid job, as it travels on the wire and as workers see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub id: JobId,
    /// Acceptable canonical model names, in order of preference (all are served at their price).
    pub models: Vec<String>,
    pub messages: Vec<ChatMessage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    pub priority: Priority,
    pub deadline: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_cost_usd: Option<Usd>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub providers_allow: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub providers_deny: Vec<String>,
    /// Sampling and request fields passed through to the provider (`temperature`, `top_p`,
    /// `stop`, `seed`, `response_format`, `tools`, …).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub params: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub metadata: Map<String, Value>,
}

/// Output tokens assumed for cost estimates when a job sets no `max_tokens`.
pub const DEFAULT_EXPECTED_OUTPUT_TOKENS: u32 = 512;

impl Job {
    /// A cheap estimate of the prompt's tokens (about four characters a token, plus framing),
    /// good enough to rank providers; the bill uses the provider's own count.
    pub fn estimated_input_tokens(&self) -> u64 {
        let chars: usize = self
            .messages
            .iter()
            .map(|m| m.text().len() + m.role.len())
            .sum();
        (chars as u64).div_ceil(4) + 4 * self.messages.len() as u64
    }

    /// Output tokens to budget for: `max_tokens`, else [`DEFAULT_EXPECTED_OUTPUT_TOKENS`].
    pub fn expected_output_tokens(&self) -> u64 {
        u64::from(self.max_tokens.unwrap_or(DEFAULT_EXPECTED_OUTPUT_TOKENS))
    }

    pub fn provider_allowed(&self, provider: &str) -> bool {
        (self.providers_allow.is_empty() || self.providers_allow.iter().any(|p| p == provider))
            && !self.providers_deny.iter().any(|p| p == provider)
    }
}

/// A job line that cannot be accepted, with the field at fault and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobError {
    /// 1-based line (JSONL) or row (Parquet) number.
    pub line: usize,
    /// The field at fault (`-` when the line as a whole is unreadable).
    pub field: String,
    pub reason: String,
}

impl fmt::Display for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "line {}: field `{}`: {}",
            self.line, self.field, self.reason
        )
    }
}

impl std::error::Error for JobError {}

/// Values a job takes when its line does not say.
#[derive(Debug, Clone)]
pub struct JobDefaults {
    /// Deadline for jobs without `deadline`/`deadline_in`, counted from `now`.
    pub deadline_in: Duration,
    pub priority: Priority,
    /// The submission time: `deadline_in` counts from here.
    pub now: DateTime<Utc>,
}

impl JobDefaults {
    pub fn new(now: DateTime<Utc>) -> Self {
        JobDefaults {
            deadline_in: Duration::hours(24),
            priority: Priority::Deferrable,
            now,
        }
    }
}

/// Request fields passed to the provider unchanged.
const PASSTHROUGH: &[&str] = &[
    "temperature",
    "top_p",
    "top_k",
    "stop",
    "seed",
    "response_format",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
    "logprobs",
    "top_logprobs",
    "n",
    "user",
    "reasoning_effort",
    "max_completion_tokens",
];

/// offpeak's own fields in the native format.
const NATIVE: &[&str] = &[
    "id",
    "model",
    "models",
    "messages",
    "prompt",
    "max_tokens",
    "priority",
    "deadline",
    "deadline_in",
    "max_cost_usd",
    "providers_allow",
    "providers_deny",
    "metadata",
];

/// Parses job lines of one file, tracking ids to reject duplicates.
#[derive(Debug)]
pub struct JobParser {
    defaults: JobDefaults,
    known_models: Option<HashSet<String>>,
    seen: HashMap<JobId, usize>,
    check_duplicates: bool,
}

fn err(line: usize, field: &str, reason: impl Into<String>) -> JobError {
    JobError {
        line,
        field: field.to_string(),
        reason: reason.into(),
    }
}

impl JobParser {
    /// `known_models`: the catalog's canonical model names; `None` accepts any model.
    pub fn new(defaults: JobDefaults, known_models: Option<HashSet<String>>) -> Self {
        JobParser {
            defaults,
            known_models,
            seen: HashMap::new(),
            check_duplicates: true,
        }
    }

    /// Leaves duplicate ids to the caller: the parser then keeps no per-id state, so its memory
    /// stays flat however long the file is (the streaming producer tracks ids compactly itself).
    pub fn without_duplicate_check(mut self) -> Self {
        self.check_duplicates = false;
        self.seen = HashMap::new();
        self
    }

    /// Parses one JSONL line (native or OpenAI Batch, detected by `custom_id`).
    pub fn parse_line(&mut self, line_no: usize, text: &str) -> Result<Job, JobError> {
        let value: Value = serde_json::from_str(text)
            .map_err(|e| err(line_no, "-", format!("not valid JSON: {e}")))?;
        self.parse_value(line_no, value)
    }

    /// Parses one job given as a JSON value (a JSONL line, or a Parquet row turned into JSON).
    pub fn parse_value(&mut self, line: usize, value: Value) -> Result<Job, JobError> {
        let Value::Object(obj) = value else {
            return Err(err(line, "-", "expected a JSON object"));
        };
        let job = if obj.contains_key("custom_id") {
            self.parse_openai_batch(line, obj)?
        } else {
            self.parse_native(line, obj)?
        };
        if !self.check_duplicates {
            return Ok(job);
        }
        if let Some(first) = self.seen.get(&job.id) {
            return Err(err(
                line,
                "id",
                format!("duplicate id {:?} (first used on line {first})", job.id.0),
            ));
        }
        self.seen.insert(job.id.clone(), line);
        Ok(job)
    }

    fn parse_openai_batch(
        &self,
        line: usize,
        mut obj: Map<String, Value>,
    ) -> Result<Job, JobError> {
        for k in obj.keys() {
            if !["custom_id", "method", "url", "body"].contains(&k.as_str()) {
                return Err(err(
                    line,
                    k,
                    "unknown field in an OpenAI Batch line (expected custom_id, method, url, body)",
                ));
            }
        }
        let id = take_id(line, &mut obj, "custom_id")?;
        if let Some(m) = obj.get("method") {
            if m.as_str() != Some("POST") {
                return Err(err(line, "method", "must be \"POST\""));
            }
        }
        if let Some(u) = obj.get("url") {
            let u = u.as_str().unwrap_or_default();
            if u != "/v1/chat/completions" {
                return Err(err(
                    line,
                    "url",
                    format!("only /v1/chat/completions is supported, got {u:?}"),
                ));
            }
        }
        let Some(Value::Object(mut body)) = obj.remove("body") else {
            return Err(err(line, "body", "missing or not an object"));
        };
        let model = match body.remove("model") {
            Some(Value::String(m)) => vec![m],
            Some(_) => return Err(err(line, "body.model", "must be a string")),
            None => return Err(err(line, "body.model", "missing")),
        };
        let models = self.check_models(line, "body.model", model)?;
        let messages = parse_messages(line, "body.messages", body.remove("messages"))?;
        let max_tokens = match body.remove("max_tokens") {
            Some(v) => Some(parse_u32(line, "body.max_tokens", &v)?),
            None => None,
        };
        let metadata = match body.remove("metadata") {
            Some(Value::Object(m)) => m,
            Some(Value::Null) | None => Map::new(),
            Some(_) => return Err(err(line, "body.metadata", "must be an object")),
        };
        if body.get("stream").and_then(Value::as_bool) == Some(true) {
            return Err(err(
                line,
                "body.stream",
                "streaming is not supported in batch jobs",
            ));
        }
        body.remove("stream");
        Ok(Job {
            id,
            models,
            messages,
            max_tokens,
            priority: self.defaults.priority,
            deadline: self.defaults.now + self.defaults.deadline_in,
            max_cost_usd: None,
            providers_allow: vec![],
            providers_deny: vec![],
            params: body,
            metadata,
        })
    }

    /// Parses offpeak's own line format. Every field is checked, and every bad one is reported
    /// (in one error, see [`combine`]), so a line is not fixed one field per attempt.
    fn parse_native(&self, line: usize, mut obj: Map<String, Value>) -> Result<Job, JobError> {
        let mut bad: Vec<JobError> = obj
            .keys()
            .filter(|k| !PASSTHROUGH.contains(&k.as_str()) && !NATIVE.contains(&k.as_str()))
            .map(|k| {
                err(
                    line,
                    k,
                    "unknown field (see docs/job-format.md for the accepted fields)",
                )
            })
            .collect();
        let mut params = Map::new();
        for k in PASSTHROUGH {
            if let Some(v) = obj.remove(*k) {
                params.insert((*k).to_string(), v);
            }
        }
        let id = keep(&mut bad, take_id(line, &mut obj, "id"));
        let models = keep(
            &mut bad,
            take_models(line, &mut obj).and_then(|models| {
                let field = if models.len() == 1 { "model" } else { "models" };
                self.check_models(line, field, models)
            }),
        );
        let messages = keep(&mut bad, take_messages(line, &mut obj));
        let max_tokens = keep(
            &mut bad,
            match obj.remove("max_tokens") {
                Some(Value::Null) | None => Ok(None),
                Some(v) => parse_u32(line, "max_tokens", &v).map(Some),
            },
        );
        let priority = keep(
            &mut bad,
            match obj.remove("priority") {
                None | Some(Value::Null) => Ok(self.defaults.priority),
                Some(v) => serde_json::from_value(v).map_err(|_| {
                    err(
                        line,
                        "priority",
                        "must be one of \"critical\", \"standard\", \"deferrable\"",
                    )
                }),
            },
        );
        let deadline = keep(
            &mut bad,
            self.take_deadline(line, &mut obj).and_then(|d| {
                if d <= self.defaults.now {
                    Err(err(
                        line,
                        "deadline",
                        format!("{} is already past", d.to_rfc3339()),
                    ))
                } else {
                    Ok(d)
                }
            }),
        );
        let max_cost_usd = keep(
            &mut bad,
            match obj.remove("max_cost_usd") {
                None | Some(Value::Null) => Ok(None),
                Some(v) => match v.as_f64() {
                    Some(x) if x > 0.0 && x.is_finite() => Ok(Some(Usd(x))),
                    _ => Err(err(line, "max_cost_usd", "must be a positive number")),
                },
            },
        );
        let providers_allow = keep(
            &mut bad,
            string_list(line, "providers_allow", obj.remove("providers_allow")),
        );
        let providers_deny = keep(
            &mut bad,
            string_list(line, "providers_deny", obj.remove("providers_deny")),
        );
        let metadata = keep(
            &mut bad,
            match obj.remove("metadata") {
                None | Some(Value::Null) => Ok(Map::new()),
                Some(Value::Object(m)) => Ok(m),
                Some(_) => Err(err(line, "metadata", "must be an object")),
            },
        );
        let (
            Some(id),
            Some(models),
            Some(messages),
            Some(max_tokens),
            Some(priority),
            Some(deadline),
            Some(max_cost_usd),
            Some(providers_allow),
            Some(providers_deny),
            Some(metadata),
            true,
        ) = (
            id,
            models,
            messages,
            max_tokens,
            priority,
            deadline,
            max_cost_usd,
            providers_allow,
            providers_deny,
            metadata,
            bad.is_empty(),
        )
        else {
            return Err(combine(line, bad));
        };
        Ok(Job {
            id,
            models,
            messages,
            max_tokens,
            priority,
            deadline,
            max_cost_usd,
            providers_allow,
            providers_deny,
            params,
            metadata,
        })
    }

    /// The job's `deadline` (RFC 3339) or `deadline_in` (a duration from now), else the
    /// run's default.
    fn take_deadline(
        &self,
        line: usize,
        obj: &mut Map<String, Value>,
    ) -> Result<DateTime<Utc>, JobError> {
        let deadline = match (obj.remove("deadline"), obj.remove("deadline_in")) {
            (Some(_), Some(_)) => {
                return Err(err(
                    line,
                    "deadline_in",
                    "give `deadline` or `deadline_in`, not both",
                ))
            }
            (Some(Value::String(s)), None) => DateTime::parse_from_rfc3339(&s)
                .map_err(|e| {
                    err(
                        line,
                        "deadline",
                        format!("not an RFC 3339 time ({e}): {s:?}"),
                    )
                })?
                .with_timezone(&Utc),
            (Some(_), None) => return Err(err(line, "deadline", "must be an RFC 3339 string")),
            (None, Some(Value::String(s))) => {
                let d = humantime::parse_duration(&s).map_err(|e| {
                    err(
                        line,
                        "deadline_in",
                        format!("not a duration like \"6h\" ({e})"),
                    )
                })?;
                let d = Duration::from_std(d).map_err(|_| err(line, "deadline_in", "too long"))?;
                self.defaults.now + d
            }
            (None, Some(_)) => {
                return Err(err(line, "deadline_in", "must be a string like \"6h\""))
            }
            (None, None) => self.defaults.now + self.defaults.deadline_in,
        };
        Ok(deadline)
    }

    fn check_models(
        &self,
        line: usize,
        field: &str,
        models: Vec<String>,
    ) -> Result<Vec<String>, JobError> {
        if let Some(known) = &self.known_models {
            for m in &models {
                if !known.contains(m) {
                    let mut k: Vec<_> = known.iter().map(String::as_str).collect();
                    k.sort_unstable();
                    return Err(err(
                        line,
                        field,
                        format!("unknown model {m:?}: the catalog serves {}", k.join(", ")),
                    ));
                }
            }
        }
        Ok(models)
    }
}

/// The job's `model` or `models`, as a non-empty list of names.
/// The value of a field's check, or `None` with its error kept in `bad`.
fn keep<T>(bad: &mut Vec<JobError>, r: Result<T, JobError>) -> Option<T> {
    r.map_err(|e| bad.push(e)).ok()
}

/// One error for every bad field of a line: the error itself when there is one; else `field`
/// lists them (`priority, deadline`) and `reason` gives each its own (`` `priority`: …; ``).
fn combine(line: usize, mut bad: Vec<JobError>) -> JobError {
    if bad.len() == 1 {
        return bad.remove(0);
    }
    JobError {
        line,
        field: bad
            .iter()
            .map(|e| e.field.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        reason: bad
            .iter()
            .map(|e| format!("`{}`: {}", e.field, e.reason))
            .collect::<Vec<_>>()
            .join("; "),
    }
}

/// The job's `messages`, or its `prompt` as one user message.
fn take_messages(line: usize, obj: &mut Map<String, Value>) -> Result<Vec<ChatMessage>, JobError> {
    match (obj.remove("messages"), obj.remove("prompt")) {
        (Some(_), Some(_)) => Err(err(line, "prompt", "give `messages` or `prompt`, not both")),
        (None, Some(Value::String(p))) => Ok(vec![ChatMessage {
            role: "user".into(),
            content: Value::String(p),
            extra: Map::new(),
        }]),
        (None, Some(_)) => Err(err(line, "prompt", "must be a string")),
        (m, None) => parse_messages(line, "messages", m),
    }
}

fn take_models(line: usize, obj: &mut Map<String, Value>) -> Result<Vec<String>, JobError> {
    let models = match (obj.remove("model"), obj.remove("models")) {
        (Some(_), Some(_)) => {
            return Err(err(line, "models", "give `model` or `models`, not both"))
        }
        (Some(Value::String(m)), None) => vec![m],
        (Some(_), None) => return Err(err(line, "model", "must be a string")),
        (None, Some(Value::Array(a))) => {
            let mut out = Vec::with_capacity(a.len());
            for v in a {
                match v {
                    Value::String(s) => out.push(s),
                    _ => return Err(err(line, "models", "must be a list of strings")),
                }
            }
            if out.is_empty() {
                return Err(err(line, "models", "must not be empty"));
            }
            out
        }
        (None, Some(_)) => return Err(err(line, "models", "must be a list of strings")),
        (None, None) => return Err(err(line, "model", "missing (give `model` or `models`)")),
    };
    Ok(models)
}

fn take_id(line: usize, obj: &mut Map<String, Value>, field: &str) -> Result<JobId, JobError> {
    match obj.remove(field) {
        Some(Value::String(s)) if !s.trim().is_empty() => {
            if s.len() > 512 {
                Err(err(line, field, "longer than 512 bytes"))
            } else if s.chars().any(char::is_control) {
                Err(err(line, field, "contains control characters"))
            } else {
                Ok(JobId(s))
            }
        }
        Some(Value::Number(n)) => Ok(JobId(n.to_string())),
        Some(Value::String(_)) => Err(err(line, field, "must not be empty")),
        Some(_) => Err(err(line, field, "must be a string")),
        None => Err(err(line, field, "missing")),
    }
}

fn parse_u32(line: usize, field: &str, v: &Value) -> Result<u32, JobError> {
    v.as_u64()
        .filter(|n| *n > 0)
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| err(line, field, format!("must be a positive integer, got {v}")))
}

fn string_list(line: usize, field: &str, v: Option<Value>) -> Result<Vec<String>, JobError> {
    match v {
        None | Some(Value::Null) => Ok(vec![]),
        Some(Value::Array(a)) => a
            .into_iter()
            .map(|x| match x {
                Value::String(s) => Ok(s),
                _ => Err(err(line, field, "must be a list of strings")),
            })
            .collect(),
        Some(_) => Err(err(line, field, "must be a list of strings")),
    }
}

fn parse_messages(
    line: usize,
    field: &str,
    v: Option<Value>,
) -> Result<Vec<ChatMessage>, JobError> {
    let a = match v {
        Some(Value::Array(a)) if !a.is_empty() => a,
        Some(Value::Array(_)) => return Err(err(line, field, "must not be empty")),
        Some(_) => {
            return Err(err(
                line,
                field,
                "must be a list of {role, content} objects",
            ))
        }
        None => return Err(err(line, field, "missing")),
    };
    a.into_iter()
        .enumerate()
        .map(|(i, m)| {
            let f = format!("{field}[{i}]");
            let Value::Object(o) = m else {
                return Err(err(line, &f, "must be an object with `role` and `content`"));
            };
            match o.get("role").and_then(Value::as_str) {
                Some("system" | "user" | "assistant" | "tool" | "developer") => {}
                Some(r) => {
                    return Err(err(
                        line,
                        &format!("{f}.role"),
                        format!("unknown role {r:?}"),
                    ))
                }
                None => return Err(err(line, &format!("{f}.role"), "missing")),
            }
            match o.get("content") {
                Some(Value::String(_) | Value::Array(_)) => {}
                Some(Value::Null) | None if o.contains_key("tool_calls") => {}
                None => return Err(err(line, &format!("{f}.content"), "missing")),
                Some(_) => {
                    return Err(err(
                        line,
                        &format!("{f}.content"),
                        "must be a string or a list of parts",
                    ))
                }
            }
            serde_json::from_value(Value::Object(o)).map_err(|e| err(line, &f, e.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn parser() -> JobParser {
        let now = Utc.with_ymd_and_hms(2026, 11, 25, 0, 0, 0).unwrap();
        JobParser::new(
            JobDefaults::new(now),
            Some(["m1".to_string(), "m2".to_string()].into()),
        )
    }

    #[test]
    fn native_line_parses_with_defaults_and_passthrough() {
        let j = parser()
            .parse_line(1, r#"{"id":"a","model":"m1","messages":[{"role":"user","content":"hi"}],"temperature":0,"deadline_in":"6h","metadata":{"s":1}}"#)
            .unwrap();
        assert_eq!(j.priority, Priority::Deferrable);
        assert_eq!(
            j.deadline,
            Utc.with_ymd_and_hms(2026, 11, 25, 6, 0, 0).unwrap()
        );
        assert_eq!(j.params.get("temperature"), Some(&Value::from(0)));
        assert_eq!(j.metadata.get("s"), Some(&Value::from(1)));
    }

    #[test]
    fn openai_batch_line_maps_custom_id_and_body() {
        let j = parser()
            .parse_line(3, r#"{"custom_id":"r1","method":"POST","url":"/v1/chat/completions","body":{"model":"m2","messages":[{"role":"user","content":"x"}],"max_tokens":9,"seed":4}}"#)
            .unwrap();
        assert_eq!(j.id.0, "r1");
        assert_eq!(j.models, vec!["m2"]);
        assert_eq!(j.max_tokens, Some(9));
        assert_eq!(j.params.get("seed"), Some(&Value::from(4)));
    }

    #[test]
    fn every_bad_field_of_a_line_is_reported_at_once() {
        let e = parser()
            .parse_line(
                4,
                r#"{"id":"a","model":"m9","prompt":"x","priority":"urgent","max_tokens":-1,"deadline":"soon","colour":"red"}"#,
            )
            .unwrap_err();
        assert_eq!(e.line, 4);
        assert_eq!(e.field, "colour, model, max_tokens, priority, deadline");
        for field in ["colour", "model", "max_tokens", "priority", "deadline"] {
            assert!(e.reason.contains(&format!("`{field}`: ")), "{field}: {e}");
        }
        // One bad field reads as before: that field and its reason alone.
        let e = parser()
            .parse_line(
                5,
                r#"{"id":"a","model":"m1","prompt":"x","priority":"urgent"}"#,
            )
            .unwrap_err();
        assert_eq!(e.field, "priority");
        assert!(e.reason.starts_with("must be one of"), "{e}");
    }

    #[test]
    fn errors_name_line_and_field() {
        let mut p = parser();
        let e = p.parse_line(7, "{not json").unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (7, "-"));
        let e = p
            .parse_line(
                8,
                r#"{"id":"a","messages":[{"role":"user","content":"x"}]}"#,
            )
            .unwrap_err();
        assert_eq!(e.field, "model");
        let e = p
            .parse_line(
                9,
                r#"{"id":"a","model":"gpt-9","messages":[{"role":"user","content":"x"}]}"#,
            )
            .unwrap_err();
        assert!(e.reason.contains("unknown model \"gpt-9\""), "{e}");
        let e = p
            .parse_line(
                10,
                r#"{"id":"a","model":"m1","messages":[{"role":"robot","content":"x"}]}"#,
            )
            .unwrap_err();
        assert_eq!(e.field, "messages[0].role");
        let e = p
            .parse_line(
                11,
                r#"{"id":"a","model":"m1","messages":[],"priority":"urgent"}"#,
            )
            .unwrap_err();
        assert_eq!(e.field, "messages, priority");
        let e = p
            .parse_line(
                12,
                r#"{"id":"a","model":"m1","prompt":"x","tempreature":1}"#,
            )
            .unwrap_err();
        assert_eq!(e.field, "tempreature");
    }

    #[test]
    fn duplicate_id_names_the_first_line() {
        let mut p = parser();
        p.parse_line(1, r#"{"id":"a","model":"m1","prompt":"x"}"#)
            .unwrap();
        let e = p
            .parse_line(5, r#"{"id":"a","model":"m1","prompt":"y"}"#)
            .unwrap_err();
        assert_eq!(e.field, "id");
        assert!(e.reason.contains("line 1"), "{e}");
    }

    #[test]
    fn past_deadline_is_rejected() {
        let e = parser()
            .parse_line(
                2,
                r#"{"id":"a","model":"m1","prompt":"x","deadline":"2020-01-01T00:00:00Z"}"#,
            )
            .unwrap_err();
        assert_eq!(e.field, "deadline");
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_lines_never_panic(s in ".{0,200}") {
            let _ = parser().parse_line(1, &s);
        }
    }
}
