//! The run's job list, `run=<run_id>/_jobs` (issue #17): the ids of the jobs the producer
//! submitted, written before anything is published. A run's results are the rows of these jobs;
//! a row with another `job_id` — a message someone else published under the run's id — is
//! foreign, and `status`, `results` and the local run's summary leave it out. A run without the
//! file (submitted by an older offpeak) counts every row, as before.
//!
//! Format: one job id per line, each a JSON string (`"mmlu-00017"`), so any id reads back exactly.

use crate::{ResultSink, SinkError, StoreError};
use schemas::ResultRow;
use std::collections::HashSet;

/// The job list's file name inside a run's directory.
pub const JOBS_FILE: &str = "_jobs";

/// The ids as stored in [`JOBS_FILE`].
pub fn encode_job_ids<'a>(ids: impl IntoIterator<Item = &'a str>) -> Vec<u8> {
    let mut out = Vec::new();
    for id in ids {
        // A string always serialises.
        out.extend_from_slice(serde_json::to_string(id).unwrap_or_default().as_bytes());
        out.push(b'\n');
    }
    out
}

/// Reads [`JOBS_FILE`]'s bytes back; `file` only names the source in the error.
pub fn decode_job_ids(file: &str, bytes: &[u8]) -> Result<HashSet<String>, StoreError> {
    let text = std::str::from_utf8(bytes).map_err(|e| StoreError::JobList {
        file: file.to_string(),
        reason: e.to_string(),
    })?;
    let mut ids = HashSet::new();
    for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.is_empty()) {
        let id: String = serde_json::from_str(line).map_err(|e| StoreError::JobList {
            file: file.to_string(),
            reason: format!("line {}: {e}", n + 1),
        })?;
        ids.insert(id);
    }
    Ok(ids)
}

/// Stores the run's job list (replacing any earlier one).
pub async fn write_job_ids(
    sink: &dyn ResultSink,
    run_id: &str,
    bytes: Vec<u8>,
) -> Result<(), SinkError> {
    sink.put(run_id, JOBS_FILE, bytes).await
}

/// The run's job ids, or `None` for a run without a job list.
pub async fn read_job_ids(
    sink: &dyn ResultSink,
    run_id: &str,
) -> Result<Option<HashSet<String>>, StoreError> {
    let names = sink.list(run_id).await?;
    if !names.iter().any(|n| n == JOBS_FILE) {
        return Ok(None);
    }
    let bytes = sink.get(run_id, JOBS_FILE).await?;
    let file = format!("{}/run={run_id}/{JOBS_FILE}", sink.location());
    Ok(Some(decode_job_ids(&file, &bytes)?))
}

/// Splits de-duplicated rows into the run's own (their `job_id` is in `ids`) and the number of
/// foreign ones, which are dropped. Without a job list every row is the run's own.
pub fn own_rows(rows: Vec<ResultRow>, ids: Option<&HashSet<String>>) -> (Vec<ResultRow>, u64) {
    let Some(ids) = ids else {
        return (rows, 0);
    };
    let before = rows.len();
    let own: Vec<ResultRow> = rows
        .into_iter()
        .filter(|r| ids.contains(&r.job_id))
        .collect();
    let foreign = (before - own.len()) as u64;
    (own, foreign)
}

/// Every stored row of `run_id`'s own jobs, de-duplicated, and how many foreign rows were left
/// out: what `results` exports and the local run summarises.
pub async fn read_own_rows(
    sink: &dyn ResultSink,
    run_id: &str,
) -> Result<(Vec<ResultRow>, u64), StoreError> {
    let ids = read_job_ids(sink, run_id).await?;
    let rows = crate::dedup(crate::read_run(sink, run_id).await?);
    Ok(own_rows(rows, ids.as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use schemas::ResultStatus;

    #[test]
    fn ids_read_back_exactly_whatever_they_hold() {
        let ids = ["plain", "with \"quotes\"", "ünïcödé", "17", "a\\b"];
        let bytes = encode_job_ids(ids);
        let back = decode_job_ids("f", &bytes).unwrap();
        assert_eq!(back, ids.iter().map(|s| s.to_string()).collect());
        assert!(decode_job_ids("f", b"not json\n").is_err());
    }

    #[test]
    fn rows_of_jobs_outside_the_list_are_foreign() {
        let row = |id: &str| {
            ResultRow::blank(
                "r".into(),
                id.into(),
                ResultStatus::Succeeded,
                chrono::Utc::now(),
            )
        };
        let rows = vec![row("a"), row("x"), row("b")];
        let ids: HashSet<String> = ["a".to_string(), "b".to_string()].into();
        let (own, foreign) = own_rows(rows.clone(), Some(&ids));
        assert_eq!(foreign, 1);
        assert_eq!(
            own.iter().map(|r| r.job_id.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
        let (all, foreign) = own_rows(rows, None);
        assert_eq!((all.len(), foreign), (3, 0));
    }
}
