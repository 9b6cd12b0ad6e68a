//! Reading a run back: every row stored for it, de-duplicated by `job_id` (delivery is
//! at-least-once), and its manifest — what `status`, `results` and the local runner's summary
//! read.

use crate::codec::decode_parquet;
use crate::manifest::{Manifest, MANIFEST_FILE};
use crate::{ResultSink, SinkError, StoreError};
use schemas::{ResultRow, ResultStatus};
use std::collections::{HashMap, HashSet};

/// Whether a file of a run's directory holds result rows: Parquet, and not one of offpeak's own
/// files (their names start with `_`, which keeps Hive-style readers off them too).
pub fn is_result_file(name: &str) -> bool {
    name.ends_with(".parquet") && !name.starts_with('_')
}

/// Every result row stored for `run_id`, in file order, duplicates included.
pub async fn read_run(sink: &dyn ResultSink, run_id: &str) -> Result<Vec<ResultRow>, SinkError> {
    let mut rows = Vec::new();
    let mut names = sink.list(run_id).await?;
    names.sort();
    for name in names.iter().filter(|n| is_result_file(n)) {
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

/// Reads a run's result files one at a time and hands `each` the rows that
/// `own_rows(dedup(read_run(..)), ids)` would keep, without holding the run in memory: for runs
/// too large for `read_run` (`offpeak report` on a million jobs). Succeeded rows are handed over
/// as they are read (the first one of a job id); failed rows wait until every file is read, since
/// a later succeeded row of the same job replaces them, and are handed over last (the first
/// failed row of a job id, as [`dedup`] keeps). Returns how many distinct foreign job ids (not in
/// `ids`) had rows.
pub async fn scan_own_rows(
    sink: &dyn ResultSink,
    run_id: &str,
    ids: Option<&HashSet<String>>,
    mut each: impl FnMut(ResultRow),
) -> Result<u64, SinkError> {
    let mut names: Vec<String> = sink
        .list(run_id)
        .await?
        .into_iter()
        .filter(|n| is_result_file(n))
        .collect();
    names.sort();
    let mut succeeded: HashSet<String> = HashSet::new();
    let mut failed: HashMap<String, ResultRow> = HashMap::new();
    let mut foreign: HashSet<String> = HashSet::new();
    for name in &names {
        for r in decode_parquet(sink.get(run_id, name).await?)? {
            if ids.is_some_and(|ids| !ids.contains(&r.job_id)) {
                foreign.insert(r.job_id);
                continue;
            }
            match r.status {
                ResultStatus::Succeeded => {
                    if !succeeded.contains(&r.job_id) {
                        failed.remove(&r.job_id);
                        succeeded.insert(r.job_id.clone());
                        each(r);
                    }
                }
                ResultStatus::Failed => {
                    if !succeeded.contains(&r.job_id) && !failed.contains_key(&r.job_id) {
                        failed.insert(r.job_id.clone(), r);
                    }
                }
            }
        }
    }
    drop(succeeded);
    for r in failed.into_values() {
        each(r);
    }
    Ok(foreign.len() as u64)
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
            .filter(|n| is_result_file(n))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{encode_parquet, own_rows, LocalDirSink};

    fn row(job: &str, status: ResultStatus, cost: f64) -> ResultRow {
        let at = chrono::DateTime::from_timestamp(1_764_000_000, 0).unwrap_or_default();
        let mut r = ResultRow::blank("r".into(), job.into(), status, at);
        r.cost_usd = cost;
        r
    }

    #[tokio::test]
    async fn scanning_a_run_keeps_the_rows_dedup_and_own_rows_keep() {
        let dir = tempfile::tempdir().unwrap();
        let sink = LocalDirSink::new(dir.path());
        let (s, f) = (ResultStatus::Succeeded, ResultStatus::Failed);
        let files = [
            vec![row("a", f, 0.0), row("b", s, 1.0), row("x", s, 9.0)],
            vec![row("a", s, 2.0), row("b", s, 3.0), row("c", f, 0.5)],
            vec![row("c", f, 0.7), row("d", f, 0.1)],
        ];
        for (i, rows) in files.iter().enumerate() {
            let bytes = encode_parquet(rows).unwrap();
            sink.put("r", &format!("part-{i}.parquet"), bytes)
                .await
                .unwrap();
        }
        // Not a result file: offpeak's own files start with `_`.
        let bytes = encode_parquet(&[row("e", s, 5.0)]).unwrap();
        sink.put("r", "_other.parquet", bytes).await.unwrap();
        let ids: HashSet<String> = ["a", "b", "c", "d", "e"].map(String::from).into();
        let (mut want, want_foreign) =
            own_rows(dedup(read_run(&sink, "r").await.unwrap()), Some(&ids));
        let mut got = Vec::new();
        let foreign = scan_own_rows(&sink, "r", Some(&ids), |r| got.push(r))
            .await
            .unwrap();
        want.sort_by(|a, b| a.job_id.cmp(&b.job_id));
        got.sort_by(|a, b| a.job_id.cmp(&b.job_id));
        assert_eq!(got, want);
        assert_eq!(foreign, want_foreign);
        assert_eq!(foreign, 1);
        let costs: Vec<f64> = got.iter().map(|r| r.cost_usd).collect();
        assert_eq!(costs, [2.0, 1.0, 0.5, 0.1]);
    }
}
