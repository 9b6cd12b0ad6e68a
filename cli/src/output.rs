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
