//! Identifier newtypes, so a job id is never confused with a run id or a model name.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The user's id of one job, unique within a run (`id` in native JSONL, `custom_id` in OpenAI
/// Batch JSONL). It is the de-duplication key of the results.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(pub String);

/// One submission of a job file. Results live under `run=<run_id>/`, so a run id must be a safe
/// path and subject token.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RunId(String);

impl RunId {
    /// Accepts ASCII letters, digits, `-` and `_` (1–128 characters): safe as a directory name,
    /// a NATS subject token and part of a RabbitMQ message id.
    pub fn new(s: impl Into<String>) -> Result<Self, String> {
        let s = s.into();
        let ok = !s.is_empty()
            && s.len() <= 128
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if ok {
            Ok(RunId(s))
        } else {
            Err(format!(
                "invalid run id {s:?}: use 1-128 ASCII letters, digits, '-' or '_'"
            ))
        }
    }

    /// A fresh run id from the current time, e.g. `run-20261125-061502`.
    pub fn generate(now: chrono::DateTime<chrono::Utc>) -> Self {
        RunId(now.format("run-%Y%m%d-%H%M%S").to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for RunId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RunId::new(s)
    }
}
