//! The message on the broker (DESIGN §3): the job plus its delivery bookkeeping.

use crate::{ChatMessage, Job, JobId, Priority, RunId, Usd};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

/// Version of the envelope's JSON shape; workers dead-letter messages of a version they do not know.
pub const SCHEMA_VERSION: u32 = 1;

/// One job on the wire: the job's fields and the bookkeeping's side by side in one JSON object.
/// (Read through [`WireIn`] and written through [`WireOut`]: `#[serde(flatten)]` would buffer
/// every job field before reading it, which made parsing an envelope the worker's costliest step
/// after the HTTP request.)
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    pub schema_version: u32,
    pub run_id: RunId,
    pub submitted_at: DateTime<Utc>,
    /// Provider attempts that failed so far (rate limits and deferrals do not count).
    pub attempt: u32,
    /// Milliseconds spent deferred so far.
    pub deferred_ms: u64,
    /// Times the job has been deferred so far.
    pub deferrals: u32,
    /// Why it was last deferred.
    pub defer_reason: Option<String>,
    /// When it was last put back to wait (to measure `deferred_ms`).
    pub deferred_at: Option<DateTime<Utc>>,
    /// The cheapest expected cost of the job at submission, for the result row.
    pub cheapest_at_submit_usd: Option<f64>,
    /// Provider batches that carried the job and gave it back (failed, expired or cancelled
    /// lines): such a job finishes realtime.
    pub batches: u32,
    /// The turn a planner of the fleet promised the job when it deferred it: the capacity it
    /// set aside for the job at that provider (a capacity key) from that instant. Whichever
    /// worker takes the job at its turn sends it there on the promising planner's capacity.
    pub turn: Option<Turn>,
    pub job: Job,
}

/// A deferred job's promised turn (see [`Envelope::turn`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Turn {
    /// The capacity key: the provider's name, or `<name>/flex` for its flex tier.
    pub provider: String,
    pub at: DateTime<Utc>,
}

impl Envelope {
    pub fn new(run_id: RunId, submitted_at: DateTime<Utc>, job: Job) -> Self {
        Envelope {
            schema_version: SCHEMA_VERSION,
            run_id,
            submitted_at,
            attempt: 0,
            deferred_ms: 0,
            deferrals: 0,
            defer_reason: None,
            deferred_at: None,
            cheapest_at_submit_usd: None,
            batches: 0,
            turn: None,
            job,
        }
    }

    /// The broker-level de-duplication key, `<run_id>/<job_id>`.
    pub fn dedup_id(&self) -> String {
        format!("{}/{}", self.run_id, self.job.id)
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        // Serialising plain data with string keys cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn from_bytes(b: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(b)
    }
}

/// What an envelope reads as: the fields of [`Envelope`] and of [`Job`] in one flat struct, with
/// the same names, defaults and optionality, so the JSON is the one `Envelope` writes. Unknown
/// fields are ignored, as they were with the flattened job.
#[derive(Deserialize)]
struct WireIn {
    schema_version: u32,
    run_id: RunId,
    submitted_at: DateTime<Utc>,
    #[serde(default)]
    attempt: u32,
    #[serde(default)]
    deferred_ms: u64,
    #[serde(default)]
    deferrals: u32,
    #[serde(default)]
    defer_reason: Option<String>,
    #[serde(default)]
    deferred_at: Option<DateTime<Utc>>,
    #[serde(default)]
    cheapest_at_submit_usd: Option<f64>,
    #[serde(default)]
    batches: u32,
    #[serde(default)]
    turn: Option<Turn>,
    id: JobId,
    models: Vec<String>,
    messages: Vec<ChatMessage>,
    #[serde(default)]
    max_tokens: Option<u32>,
    priority: Priority,
    deadline: DateTime<Utc>,
    #[serde(default)]
    max_cost_usd: Option<Usd>,
    #[serde(default)]
    providers_allow: Vec<String>,
    #[serde(default)]
    providers_deny: Vec<String>,
    #[serde(default)]
    params: Map<String, Value>,
    #[serde(default)]
    metadata: Map<String, Value>,
}

/// What an envelope writes: the same fields, borrowed, in the same order.
#[derive(Serialize)]
struct WireOut<'a> {
    schema_version: u32,
    run_id: &'a RunId,
    submitted_at: &'a DateTime<Utc>,
    attempt: u32,
    deferred_ms: u64,
    deferrals: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    defer_reason: &'a Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    deferred_at: &'a Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cheapest_at_submit_usd: Option<f64>,
    #[serde(skip_serializing_if = "is_zero")]
    batches: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    turn: &'a Option<Turn>,
    id: &'a JobId,
    models: &'a [String],
    messages: &'a [ChatMessage],
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
    priority: Priority,
    deadline: &'a DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_cost_usd: Option<Usd>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    providers_allow: &'a [String],
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    providers_deny: &'a [String],
    #[serde(skip_serializing_if = "Map::is_empty")]
    params: &'a Map<String, Value>,
    #[serde(skip_serializing_if = "Map::is_empty")]
    metadata: &'a Map<String, Value>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Serialize for Envelope {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let j = &self.job;
        WireOut {
            schema_version: self.schema_version,
            run_id: &self.run_id,
            submitted_at: &self.submitted_at,
            attempt: self.attempt,
            deferred_ms: self.deferred_ms,
            deferrals: self.deferrals,
            defer_reason: &self.defer_reason,
            deferred_at: &self.deferred_at,
            cheapest_at_submit_usd: self.cheapest_at_submit_usd,
            batches: self.batches,
            turn: &self.turn,
            id: &j.id,
            models: &j.models,
            messages: &j.messages,
            max_tokens: j.max_tokens,
            priority: j.priority,
            deadline: &j.deadline,
            max_cost_usd: j.max_cost_usd,
            providers_allow: &j.providers_allow,
            providers_deny: &j.providers_deny,
            params: &j.params,
            metadata: &j.metadata,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Envelope {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let w = WireIn::deserialize(d)?;
        Ok(Envelope {
            schema_version: w.schema_version,
            run_id: w.run_id,
            submitted_at: w.submitted_at,
            attempt: w.attempt,
            deferred_ms: w.deferred_ms,
            deferrals: w.deferrals,
            defer_reason: w.defer_reason,
            deferred_at: w.deferred_at,
            cheapest_at_submit_usd: w.cheapest_at_submit_usd,
            batches: w.batches,
            turn: w.turn,
            job: Job {
                id: w.id,
                models: w.models,
                messages: w.messages,
                max_tokens: w.max_tokens,
                priority: w.priority,
                deadline: w.deadline,
                max_cost_usd: w.max_cost_usd,
                providers_allow: w.providers_allow,
                providers_deny: w.providers_deny,
                params: w.params,
                metadata: w.metadata,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The JSON an envelope is written as, field by field (DESIGN §3).
    fn full() -> Value {
        json!({
            "schema_version": 1,
            "run_id": "r1",
            "submitted_at": "2026-01-05T00:00:00Z",
            "attempt": 2,
            "deferred_ms": 1500,
            "deferrals": 3,
            "defer_reason": "groq rate-limited",
            "deferred_at": "2026-01-05T00:10:00Z",
            "cheapest_at_submit_usd": 0.0125,
            "batches": 1,
            "id": "job-1",
            "models": ["m1", "m2"],
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "hi"}], "name": "ann"}
            ],
            "max_tokens": 64,
            "priority": "standard",
            "deadline": "2026-01-05T06:00:00Z",
            "max_cost_usd": 0.5,
            "providers_allow": ["groq"],
            "providers_deny": ["openai"],
            "params": {"temperature": 0.2, "seed": 7},
            "metadata": {"suite": "nightly"}
        })
    }

    #[test]
    fn every_field_is_read_and_written_back_as_it_was() {
        let env: Envelope = serde_json::from_value(full()).unwrap();
        assert_eq!(env.attempt, 2);
        assert_eq!(env.deferred_ms, 1500);
        assert_eq!(env.deferrals, 3);
        assert_eq!(env.defer_reason.as_deref(), Some("groq rate-limited"));
        assert_eq!(env.cheapest_at_submit_usd, Some(0.0125));
        assert_eq!(env.batches, 1);
        assert_eq!(env.job.id.0, "job-1");
        assert_eq!(env.job.models, ["m1", "m2"]);
        assert_eq!(env.job.messages[1].extra["name"], "ann");
        assert_eq!(env.job.max_tokens, Some(64));
        assert_eq!(env.job.priority, Priority::Standard);
        assert_eq!(env.job.max_cost_usd, Some(Usd(0.5)));
        assert_eq!(env.job.providers_allow, ["groq"]);
        assert_eq!(env.job.providers_deny, ["openai"]);
        assert_eq!(env.job.params["seed"], 7);
        assert_eq!(env.job.metadata["suite"], "nightly");
        let back: Value = serde_json::from_slice(&env.to_bytes()).unwrap();
        assert_eq!(back, full());
        assert_eq!(Envelope::from_bytes(&env.to_bytes()).unwrap(), env);
    }

    #[test]
    fn optional_fields_default_and_unknown_fields_are_ignored() {
        let mut v = full();
        let o = v.as_object_mut().unwrap();
        for k in [
            "attempt",
            "deferred_ms",
            "deferrals",
            "defer_reason",
            "deferred_at",
            "cheapest_at_submit_usd",
            "batches",
            "max_tokens",
            "max_cost_usd",
            "providers_allow",
            "providers_deny",
            "params",
            "metadata",
        ] {
            o.remove(k);
        }
        o.insert("added_by_a_newer_producer".into(), json!({"x": 1}));
        let env: Envelope = serde_json::from_value(v).unwrap();
        assert_eq!((env.attempt, env.deferred_ms, env.deferrals), (0, 0, 0));
        assert!(env.defer_reason.is_none() && env.deferred_at.is_none());
        assert!(env.job.max_tokens.is_none() && env.job.params.is_empty());
        let back: Value = serde_json::from_slice(&env.to_bytes()).unwrap();
        assert!(back.get("added_by_a_newer_producer").is_none());
        assert!(back.get("params").is_none() && back.get("attempt").is_some());
    }

    #[test]
    fn a_missing_job_field_is_named() {
        let mut v = full();
        v.as_object_mut().unwrap().remove("deadline");
        let e = serde_json::from_value::<Envelope>(v)
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing field `deadline`"), "{e}");
    }
}
