//! Where a run's files live (`--output`: a local directory or `s3://bucket/prefix`), and the
//! run manifest stored there.

use crate::Failure;
use anyhow::Context;
use producer::{Manifest, MANIFEST_FILE};
use std::sync::Arc;
use worker::ResultSink;

/// Opens the results location.
pub async fn open(output: &str) -> Result<Arc<dyn ResultSink>, Failure> {
    Ok(worker::sink::open_sink(output)
        .await
        .with_context(|| format!("opening results location {output}"))?)
}

/// The run's manifest, if it has one.
pub async fn read_manifest(
    sink: &dyn ResultSink,
    run_id: &str,
) -> Result<Option<Manifest>, Failure> {
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

/// The error for a run that has no manifest at `sink`: never submitted there, or a wrong
/// `--output` (exit code 1, as for any store that does not hold what was asked).
pub fn no_such_run(sink: &dyn ResultSink, run_id: &str) -> Failure {
    anyhow::anyhow!(
        "no run {run_id} at {} (no run={run_id}/_manifest.json); was it submitted with this --output?",
        sink.location()
    )
    .into()
}

/// Stores (or replaces) the run's manifest.
pub async fn write_manifest(sink: &dyn ResultSink, m: &Manifest) -> Result<(), Failure> {
    sink.put(&m.run_id, MANIFEST_FILE, m.to_json()).await?;
    Ok(())
}
