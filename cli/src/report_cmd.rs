//! `offpeak report`: one self-contained HTML page (inline SVG charts, nothing fetched) of where
//! a run's money and time went, from its stored results and manifest — or of two runs side by
//! side (`--compare`). The flow lives in the `report` crate; this parses arguments and writes.

use crate::{input, output, results, Failure};
use schemas::RunId;
use std::path::PathBuf;

/// Arguments of `offpeak report`.
#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// The run id.
    pub run_id: RunId,
    /// Where the run's results are: `s3://bucket/prefix` or a directory.
    #[arg(long, env = "OFFPEAK_OUTPUT")]
    pub output: String,
    /// The HTML file to write, or an object (`s3://bucket/key`).
    #[arg(long, short = 'o')]
    pub out: PathBuf,
    /// A second run (at the same `--output`) shown side by side.
    #[arg(long)]
    pub compare: Option<RunId>,
    /// The catalog whose time-of-day price windows are shaded; by default the catalog snapshot
    /// stored in the run's manifest.
    #[arg(long)]
    pub catalog: Option<PathBuf>,
}

pub async fn report(args: ReportArgs) -> Result<u8, Failure> {
    let sink = output::open(&args.output).await?;
    let catalog = match &args.catalog {
        Some(p) => Some(input::load_catalog(p)?),
        None => None,
    };
    let mut runs = Vec::new();
    for run in std::iter::once(&args.run_id).chain(args.compare.as_ref()) {
        let figures = report::load(&*sink, run, catalog.as_ref())
            .await?
            .ok_or_else(|| output::no_such_run(&*sink, run.as_str()))?;
        runs.push(figures);
    }
    let html = report::render(&runs);
    let bytes = html.len();
    results::write_out(&args.out, html.into_bytes()).await?;
    eprintln!(
        "report of run {} written to {} ({} kB)",
        runs.iter()
            .map(|r| r.meta.run_id.as_str())
            .collect::<Vec<_>>()
            .join(" vs "),
        args.out.display(),
        bytes.div_ceil(1024)
    );
    Ok(0)
}
