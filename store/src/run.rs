//! Reading a run back: every row stored for it, de-duplicated by `job_id` (delivery is
//! at-least-once), and its manifest — what `status`, `results` and the local runner's summary
//! read.

use crate::codec::decode_parquet;
use crate::manifest::{Manifest, MANIFEST_FILE};
use crate::{ResultSink, SinkError, StoreError};
use schemas::ResultRow;
use std::collections::HashMap;

/// Every result row stored for `run_id`, in file order, duplicates included.
pub async fn read_run(sink: &dyn ResultSink, run_id: &str) -> Result<Vec<ResultRow>, SinkError> {
    let mut rows = Vec::new();
    let mut names = sink.list(run_id).await?;
    names.sort();
    for name in names.iter().filter(|n| n.ends_with(".parquet")) {
        rows.extend(decode_parquet(sink.get(run_id, name).await?)?);
    }
    Ok(rows)
}

/// Keeps one row per `job_id`: a succeeded row over a failed one, else the first seen.
pub fn dedup(rows: Vec<ResultRow>) -> Vec<ResultRow> {
    let mut by_id: HashMap<String, usize> = HashMap::new();
    let mut out: Vec<ResultRow> = Vec::with_capacity(rows.len());
    for r in rows {
        match by_id.get(&r.job_id) {
            Some(&i) => {
                if out[i].status != schemas::ResultStatus::Succeeded
                    && r.status == schemas::ResultStatus::Succeeded
                {
                    out[i] = r;
                }
            }
            None => {
                by_id.insert(r.job_id.clone(), out.len());
                out.push(r);
            }
        }
    }
    out
}

/// Reads a run's result files, parsing each file once (they never change once written), for
/// callers that read the same run again and again (`status --watch`).
#[derive(Debug, Default)]
pub struct RunReader {
    files: HashMap<String, Vec<ResultRow>>,
}

impl RunReader {
    /// All rows stored so far, duplicates included.
    pub async fn rows(
        &mut self,
        sink: &dyn ResultSink,
        run_id: &str,
    ) -> Result<Vec<ResultRow>, SinkError> {
        let mut names: Vec<String> = sink
            .list(run_id)
            .await?
            .into_iter()
            .filter(|n| n.ends_with(".parquet"))
            .collect();
        names.sort();
        for n in &names {
            if !self.files.contains_key(n) {
                let rows = decode_parquet(sink.get(run_id, n).await?)?;
                self.files.insert(n.clone(), rows);
            }
        }
        Ok(names
            .iter()
            .flat_map(|n| self.files[n].iter().cloned())
            .collect())
    }
}

/// The run's manifest, if it has one.
pub async fn read_manifest(
    sink: &dyn ResultSink,
    run_id: &str,
) -> Result<Option<Manifest>, StoreError> {
    let names = sink.list(run_id).await?;
    if !names.iter().any(|n| n == MANIFEST_FILE) {
        return Ok(None);
    }
    let bytes = sink.get(run_id, MANIFEST_FILE).await?;
    let where_ = format!("{}/run={run_id}/{MANIFEST_FILE}", sink.location());
    Ok(Some(Manifest::from_json(
        std::path::Path::new(&where_),
        &bytes,
    )?))
}

/// Stores (or replaces) the run's manifest.
pub async fn write_manifest(sink: &dyn ResultSink, m: &Manifest) -> Result<(), StoreError> {
    sink.put(&m.run_id, MANIFEST_FILE, m.to_json()).await?;
    Ok(())
}
