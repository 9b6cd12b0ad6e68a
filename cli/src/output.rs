//! Where a run's files live (`--output`: a local directory or `s3://bucket/prefix`), opened
//! with the location named in any error.

use crate::Failure;
use anyhow::Context;
use std::sync::Arc;
use store::ResultSink;

/// Opens the results location.
pub async fn open(output: &str) -> Result<Arc<dyn ResultSink>, Failure> {
    Ok(store::open_sink(output)
        .await
        .with_context(|| format!("opening results location {output}"))?)
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
