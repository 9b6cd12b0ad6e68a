//! The streaming producer: pass 1 validates the whole file keeping only errors and id hashes,
//! pass 2 reads the valid jobs again; both agree with the in-memory reader.

mod common;

use common::options;
use producer::stream::{for_each_job, scan};
use producer::{read_job_file, ProducerError};
use std::fmt::Write;
use std::ops::ControlFlow;
use testkit::write_file;

fn job(id: &str) -> String {
    format!(r#"{{"id":"{id}","model":"llama-3.1-70b","prompt":"question {id}"}}"#)
}

fn many_jobs(n: usize) -> String {
    let mut s = String::with_capacity(n * 64);
    for i in 0..n {
        writeln!(s, "{}", job(&format!("job-{i:06}"))).unwrap();
    }
    s
}

fn ids_of_pass_two(path: &std::path::Path, report: &producer::ScanReport) -> Vec<String> {
    let mut ids = Vec::new();
    let name = path.display().to_string();
    let n = for_each_job(path, &name, &options(), &report.selection(), |j| {
        ids.push(j.id.0);
        ControlFlow::Continue(())
    })
    .unwrap();
    assert_eq!(n, ids.len());
    ids
}

#[test]
fn a_file_whose_last_line_is_invalid_is_refused_and_nothing_is_handed_to_the_publisher() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = many_jobs(20_000);
    text.push_str(r#"{"id":"last","model":"no-such-model","prompt":"x"}"#);
    text.push('\n');
    let path = write_file(dir.path(), "jobs.jsonl", text.as_bytes());
    let name = path.display().to_string();

    let report = scan(&path, &name, &options()).unwrap();
    assert!(!report.is_clean());
    assert_eq!(report.valid, 20_000);
    assert_eq!(report.lines, 20_001);
    assert_eq!(report.errors.len(), 1);
    assert_eq!(report.errors[0].error.line, 20_001);
    assert_eq!(report.errors[0].error.field, "model");
    assert!(report
        .render_errors(5)
        .starts_with(&format!("{name}:20001: field `model`")));
    // Pass 2 only runs once pass 1 is clean (or --skip-invalid); with it, the bad line is left out.
    let ids = ids_of_pass_two(&path, &report);
    assert_eq!(ids.len(), 20_000);
    assert!(!ids.iter().any(|i| i == "last"));
}

#[test]
fn a_duplicate_id_far_from_its_first_use_is_found_and_names_that_line() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = many_jobs(100_000);
    // Line 100,001 repeats the id of line 3.
    text.push_str(&job("job-000002"));
    text.push('\n');
    text.push_str(&job("tail"));
    text.push('\n');
    let path = write_file(dir.path(), "jobs.jsonl", text.as_bytes());
    let name = path.display().to_string();

    let report = scan(&path, &name, &options()).unwrap();
    assert_eq!(report.valid, 100_001);
    assert_eq!(report.errors.len(), 1);
    let e = &report.errors[0].error;
    assert_eq!((e.line, e.field.as_str()), (100_001, "id"));
    assert!(
        e.reason.contains("duplicate id") && e.reason.contains("first used on line 3"),
        "{}",
        e.reason
    );
    let ids = ids_of_pass_two(&path, &report);
    assert_eq!(ids.len(), 100_001);
    assert_eq!(ids.iter().filter(|i| *i == "job-000002").count(), 1);
    assert_eq!(ids.last().map(String::as_str), Some("tail"));
}

#[test]
fn streaming_and_in_memory_readers_report_the_same_errors_and_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let text = [
        job("a"),
        "not json".into(),
        job("b"),
        String::new(),
        job("a"),
        r#"{"id":"c","model":"llama-3.1-70b"}"#.into(),
        job("d"),
        job("b"),
    ]
    .join("\n");
    let path = write_file(dir.path(), "mixed.jsonl", text.as_bytes());
    let name = path.display().to_string();
    let memory = read_job_file(&path, options()).unwrap();
    let streamed = scan(&path, &name, &options()).unwrap();
    assert_eq!(streamed.errors, memory.errors);
    assert_eq!(streamed.valid, memory.jobs.len());
    assert_eq!(streamed.lines, memory.lines);
    let ids: Vec<String> = memory.jobs.iter().map(|j| j.id.0.clone()).collect();
    assert_eq!(ids_of_pass_two(&path, &streamed), ids);
}

#[test]
fn max_jobs_counts_valid_jobs_without_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let text = [job("a"), job("a"), job("b")].join("\n");
    let path = write_file(dir.path(), "jobs.jsonl", text.as_bytes());
    let name = path.display().to_string();
    let mut opts = options();
    opts.max_jobs = Some(2);
    assert_eq!(scan(&path, &name, &opts).unwrap().valid, 2);
    opts.max_jobs = Some(1);
    assert!(matches!(
        scan(&path, &name, &opts),
        Err(ProducerError::TooManyJobs { limit: 1, .. })
    ));
}

#[test]
fn a_file_changed_between_the_passes_stops_pass_two() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_file(dir.path(), "jobs.jsonl", many_jobs(10).as_bytes());
    let name = path.display().to_string();
    let report = scan(&path, &name, &options()).unwrap();
    let mut changed = many_jobs(10);
    changed.push_str(&job("sneaked-in"));
    std::fs::write(&path, changed).unwrap();
    let r = for_each_job(&path, &name, &options(), &report.selection(), |_| {
        ControlFlow::Continue(())
    });
    assert!(matches!(r, Err(ProducerError::Changed { .. })), "{r:?}");
}
