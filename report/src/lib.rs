//! What a run's result rows say. [`summary`]: the totals `offpeak status` and the local run
//! print. [`figures`]: the report's figures, accumulated row by row from a run's stored files
//! (a million-job run is streamed, never held). [`chart`] and [`html`]: the self-contained page
//! of `offpeak report` (inline SVG, no script, nothing fetched).

pub mod chart;
pub mod figures;
pub mod html;
pub mod summary;

pub use figures::{RunAggregator, RunFigures, RunMeta};
pub use html::render;
pub use summary::{DeadLetterSummary, ReasonCount, Summary, SummaryBuilder};

use schemas::{Catalog, RunId};
use sha2::{Digest, Sha256};
use store::{ResultSink, StoreError};

/// Reads run `run_id` from `sink` — its manifest, its job list and every result file, one file
/// at a time — into the report's figures; `None` when the run has no manifest there. The price
/// windows shaded come from `catalog` when given, else from the manifest's catalog snapshot.
pub async fn load(
    sink: &dyn ResultSink,
    run_id: &RunId,
    catalog: Option<&Catalog>,
) -> Result<Option<RunFigures>, StoreError> {
    let run = run_id.as_str();
    let Some(manifest) = store::read_manifest(sink, run).await? else {
        return Ok(None);
    };
    let ids = store::read_job_ids(sink, run).await?;
    let mut agg = RunAggregator::default();
    let foreign = store::scan_own_rows(sink, run, ids.as_ref(), |r| agg.add(&r)).await?;
    drop(ids);
    let snapshot: Option<Catalog> = serde_json::from_value(manifest.catalog.clone()).ok();
    let shades = catalog
        .or(snapshot.as_ref())
        .map(figures::shades_of)
        .unwrap_or_default();
    let compact = serde_json::to_vec(&manifest.catalog).unwrap_or_default();
    let meta = RunMeta {
        run_id: run.to_string(),
        location: sink.location(),
        job_count: manifest.job_count,
        input_file: manifest.input_file,
        input_sha256: manifest.input_sha256,
        catalog_sha256: hex::encode(Sha256::digest(&compact)),
        offpeak_version: manifest.offpeak_version,
        submitted_at: manifest.submitted_at.to_rfc3339(),
        published_at: manifest.published_at.map(|t| t.to_rfc3339()),
        foreign_rows: foreign,
    };
    Ok(Some(agg.finish(run_id, meta, shades)))
}
