//! The outcome of validating a job file: the valid jobs, and every rejected line with its
//! location, field and reason, renderable for a terminal or as a rejects file.

use crate::read::InputFormat;
use crate::ProducerError;
use std::fs::File;
use std::io::Write;
use std::path::Path;

/// One line (JSONL) or row (Parquet) that did not become a job.
#[derive(Debug, Clone, PartialEq)]
pub struct RejectedLine {
    /// Where and why: 1-based line or row number, the field at fault (`-` for the whole line),
    /// and the reason.
    pub error: schemas::JobError,
    /// The original line text (lossily decoded if it was not UTF-8), or the Parquet row as JSON.
    pub raw: String,
}

/// Everything learnt from reading one job file.
#[derive(Debug, Clone)]
pub struct ValidationReport {
    /// The file as the user named it, used to prefix error messages.
    pub file: String,
    /// Whether locations are lines (JSONL) or rows (Parquet).
    pub format: InputFormat,
    /// The valid jobs, in file order.
    pub jobs: Vec<schemas::Job>,
    /// The rejected lines or rows, in file order.
    pub errors: Vec<RejectedLine>,
    /// Lines or rows examined (valid plus rejected; blank JSONL lines are not counted).
    pub lines: usize,
}

impl ValidationReport {
    /// True when no line or row was rejected.
    pub fn is_clean(&self) -> bool {
        self.errors.is_empty()
    }

    /// One line per rejected line or row, at most `max` of them, then `… and N more errors` when
    /// there are more. JSONL errors read `jobs.jsonl:17: field `model`: unknown model …`, Parquet
    /// errors `jobs.parquet: row 17: field `model`: …`; the field part is left out when the whole
    /// line is at fault. Lines are separated by `\n`, with no trailing newline; empty when clean.
    pub fn render_errors(&self, max: usize) -> String {
        render_errors(&self.file, self.format, &self.errors, max)
    }
}

/// [`ValidationReport::render_errors`] for any list of rejected lines of `file`.
pub(crate) fn render_errors(
    file: &str,
    format: InputFormat,
    errors: &[RejectedLine],
    max: usize,
) -> String {
    let mut out: Vec<String> = errors
        .iter()
        .take(max)
        .map(|r| {
            let e = &r.error;
            let at = match format {
                InputFormat::Jsonl => format!("{file}:{}", e.line),
                InputFormat::Parquet => format!("{file}: row {}", e.line),
            };
            if e.field == "-" {
                format!("{at}: {}", e.reason)
            } else {
                format!("{at}: field `{}`: {}", e.field, e.reason)
            }
        })
        .collect();
    let more = errors.len().saturating_sub(max);
    if more > 0 {
        let noun = if more == 1 { "error" } else { "errors" };
        out.push(format!("… and {more} more {noun}"));
    }
    out.join("\n")
}

/// Writes the rejected lines of `report` to `path` as JSONL, one object per rejected line:
/// `{"line": N, "field": "...", "reason": "...", "raw": "<original text>"}` (`line` holds the row
/// number for Parquet input). The file is created or truncated, and written even when empty.
pub fn write_rejects(path: &Path, report: &ValidationReport) -> Result<(), ProducerError> {
    write_rejected_lines(path, &report.errors)
}

/// Writes `errors` to `path` in the format of [`write_rejects`].
pub fn write_rejected_lines(path: &Path, errors: &[RejectedLine]) -> Result<(), ProducerError> {
    let io = |e| ProducerError::io(path, e);
    let mut out = File::create(path).map_err(io)?;
    out.write_all(&crate::submission::rejects_jsonl(errors))
        .map_err(io)?;
    out.sync_all().map_err(io)
}
