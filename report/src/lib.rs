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

use schemas::{Catalog, PriceWindow, RunId};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use store::{ResultSink, StoreError};

/// The part of a manifest's catalog snapshot the report reads: the price windows of each offer.
/// Read leniently (unknown fields ignored), so a snapshot written by another offpeak version
/// still shades its windows.
#[derive(Debug, Deserialize)]
struct Snapshot {
    providers: Vec<SnapshotProvider>,
}

#[derive(Debug, Deserialize)]
struct SnapshotProvider {
    name: String,
    models: Vec<SnapshotModel>,
}

#[derive(Debug, Deserialize)]
struct SnapshotModel {
    model: String,
    #[serde(default)]
    schedule: Vec<PriceWindow>,
}

/// The shades of a catalog given with `--catalog`.
fn catalog_shades(c: &Catalog) -> Vec<figures::Shade> {
    figures::shades_of(c.providers.iter().flat_map(|p| {
        p.models
            .iter()
            .map(move |m| (format!("{}/{}", p.name, m.model), m.schedule.as_slice()))
    }))
}

/// The shades of a manifest's catalog snapshot (none if it cannot be read).
fn snapshot_shades(v: &serde_json::Value) -> Vec<figures::Shade> {
    let Ok(s) = Snapshot::deserialize(v) else {
        return Vec::new();
    };
    figures::shades_of(s.providers.iter().flat_map(|p| {
        p.models
            .iter()
            .map(move |m| (format!("{}/{}", p.name, m.model), m.schedule.as_slice()))
    }))
}

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
    let shades = match catalog {
        Some(c) => catalog_shades(c),
        None => snapshot_shades(&manifest.catalog),
    };
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
