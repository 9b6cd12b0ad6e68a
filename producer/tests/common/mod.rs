//! The producer's fixtures: a fixed clock, a two-model catalog, a Parquet writer and compact
//! views of a validation report. Generic file helpers are in `testkit`.
#![allow(dead_code)]

use arrow::record_batch::RecordBatch;
use chrono::{DateTime, TimeZone, Utc};
use parquet::arrow::ArrowWriter;
use producer::ReadOptions;
use schemas::JobDefaults;
use std::path::{Path, PathBuf};

pub fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 25, 0, 0, 0).unwrap()
}

pub fn options() -> ReadOptions {
    ReadOptions {
        defaults: JobDefaults::new(now()),
        known_models: Some(["llama-3.1-70b".to_string(), "deepseek-v3".to_string()].into()),
        max_jobs: None,
        max_prompt_bytes: None,
    }
}

pub fn write_parquet(dir: &Path, name: &str, batches: &[RecordBatch]) -> PathBuf {
    let path = dir.join(name);
    let file = std::fs::File::create(&path).unwrap();
    let mut writer = ArrowWriter::try_new(file, batches[0].schema(), None).unwrap();
    for b in batches {
        writer.write(b).unwrap();
    }
    writer.close().unwrap();
    path
}

/// (line, field) of each rejected line, for compact assertions.
pub fn error_locations(report: &producer::ValidationReport) -> Vec<(usize, String)> {
    report
        .errors
        .iter()
        .map(|r| (r.error.line, r.error.field.clone()))
        .collect()
}

pub fn ids(report: &producer::ValidationReport) -> Vec<String> {
    report.jobs.iter().map(|j| j.id.0.clone()).collect()
}
