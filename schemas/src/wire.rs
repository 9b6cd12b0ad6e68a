//! The message on the broker (DESIGN §3): the job plus its delivery bookkeeping.

use crate::{Job, RunId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Version of the envelope's JSON shape; workers dead-letter messages of a version they do not know.
pub const SCHEMA_VERSION: u32 = 1;

/// One job on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub schema_version: u32,
    pub run_id: RunId,
    pub submitted_at: DateTime<Utc>,
    /// Provider attempts that failed so far (rate limits and deferrals do not count).
    #[serde(default)]
    pub attempt: u32,
    /// Milliseconds spent deferred so far.
    #[serde(default)]
    pub deferred_ms: u64,
    /// Times the job has been deferred so far.
    #[serde(default)]
    pub deferrals: u32,
    /// Why it was last deferred.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub defer_reason: Option<String>,
    /// When it was last put back to wait (to measure `deferred_ms`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deferred_at: Option<DateTime<Utc>>,
    /// The cheapest expected cost of the job at submission, for the result row.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cheapest_at_submit_usd: Option<f64>,
    #[serde(flatten)]
    pub job: Job,
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
