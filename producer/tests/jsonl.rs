//! Reading JSONL job files: native and OpenAI Batch lines, and how bad lines are reported.

mod common;

use common::{error_locations, ids, options};
use producer::{read_job_file, write_rejects, ProducerError};
use serde_json::Value;
use testkit::write_file;

const MIXED: &str = concat!(
    r#"{"id":"a","model":"llama-3.1-70b","messages":[{"role":"user","content":"hi"}],"max_tokens":16}"#,
    "\n",
    r#"{"id":"b","model":"llama-3.1-70b","messages":[{"role":"user""#,
    "\n",
    "   \n",
    r#"{"id":"c","messages":[{"role":"user","content":"no model"}]}"#,
    "\n",
    r#"{"custom_id":"r1","method":"POST","url":"/v1/chat/completions","body":{"model":"deepseek-v3","messages":[{"role":"user","content":"x"}]}}"#,
    "\n",
    r#"{"id":"a","model":"deepseek-v3","prompt":"again"}"#,
    "\n",
    r#"{"id":"d","model":"gpt-9","prompt":"which model?"}"#,
    "\r\n",
    r#"{"id":"e","model":"deepseek-v3","prompt":"last, no newline"}"#,
);

#[test]
fn each_bad_line_is_reported_with_its_line_and_field_and_only_valid_jobs_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_file(dir.path(), "jobs.jsonl", MIXED.as_bytes());
    let report = read_job_file(&path, options()).unwrap();

    assert_eq!(
        error_locations(&report),
        vec![
            (2, "-".into()),
            (4, "model".into()),
            (6, "id".into()),
            (7, "model".into())
        ]
    );
    assert!(report.errors[0].error.reason.contains("not valid JSON"));
    assert!(report.errors[2].error.reason.contains("duplicate id"));
    assert!(report.errors[3]
        .error
        .reason
        .contains("unknown model \"gpt-9\""));
    assert_eq!(ids(&report), ["a", "r1", "e"]);
    assert_eq!(report.lines, 7, "the blank line is not counted");
    assert!(!report.is_clean());
}

#[test]
fn rendered_errors_read_file_line_field_reason_and_count_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_file(dir.path(), "jobs.jsonl", MIXED.as_bytes());
    let report = read_job_file(&path, options()).unwrap();
    let file = path.display();

    let all = report.render_errors(10);
    let lines: Vec<&str> = all.lines().collect();
    assert_eq!(lines.len(), 4);
    assert!(
        lines[0].starts_with(&format!("{file}:2: not valid JSON")),
        "{}",
        lines[0]
    );
    assert_eq!(
        lines[1],
        format!("{file}:4: field `model`: missing (give `model` or `models`)")
    );
    assert!(
        lines[3].starts_with(&format!("{file}:7: field `model`: unknown model \"gpt-9\"")),
        "{}",
        lines[3]
    );

    let some = report.render_errors(1);
    assert_eq!(some.lines().count(), 2);
    assert!(some.ends_with("… and 3 more errors"), "{some}");
}

#[test]
fn clean_file_renders_no_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_file(
        dir.path(),
        "ok.jsonl",
        br#"{"id":"a","model":"deepseek-v3","prompt":"x"}"#,
    );
    let report = read_job_file(&path, options()).unwrap();
    assert!(report.is_clean());
    assert_eq!(report.render_errors(5), "");
}

#[test]
fn openai_batch_file_reads_custom_id_model_and_body_fields() {
    let dir = tempfile::tempdir().unwrap();
    let text = concat!(
        r#"{"custom_id":"req-1","method":"POST","url":"/v1/chat/completions","body":{"model":"deepseek-v3","messages":[{"role":"system","content":"be brief"},{"role":"user","content":"2+2?"}],"max_tokens":8,"temperature":0.5}}"#,
        "\n",
        r#"{"custom_id":"req-2","method":"POST","url":"/v1/chat/completions","body":{"model":"llama-3.1-70b","messages":[{"role":"user","content":"hi"}],"metadata":{"suite":"smoke"}}}"#,
        "\n",
    );
    let path = write_file(dir.path(), "batch.jsonl", text.as_bytes());
    let report = read_job_file(&path, options()).unwrap();

    assert!(report.is_clean(), "{}", report.render_errors(5));
    assert_eq!(ids(&report), ["req-1", "req-2"]);
    let first = &report.jobs[0];
    assert_eq!(first.models, ["deepseek-v3"]);
    assert_eq!(first.messages.len(), 2);
    assert_eq!(first.max_tokens, Some(8));
    assert_eq!(first.params.get("temperature"), Some(&Value::from(0.5)));
    assert_eq!(
        report.jobs[1].metadata.get("suite"),
        Some(&Value::from("smoke"))
    );
}

#[test]
fn invalid_utf8_line_is_rejected_by_line_and_the_rest_still_reads() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = br#"{"id":"a","model":"deepseek-v3","prompt":"ok"}"#.to_vec();
    bytes.extend_from_slice(b"\n{\"id\":\"b\",\"prompt\":\"\xff\xfe\"}\n");
    bytes.extend_from_slice(br#"{"id":"c","model":"deepseek-v3","prompt":"ok"}"#);
    let path = write_file(dir.path(), "jobs.jsonl", &bytes);
    let report = read_job_file(&path, options()).unwrap();

    assert_eq!(error_locations(&report), vec![(2, "-".into())]);
    assert!(report.errors[0].error.reason.contains("UTF-8"));
    assert_eq!(ids(&report), ["a", "c"]);
}

#[test]
fn leading_byte_order_mark_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let text = "\u{feff}{\"id\":\"a\",\"model\":\"deepseek-v3\",\"prompt\":\"x\"}\n";
    let path = write_file(dir.path(), "bom.jsonl", text.as_bytes());
    let report = read_job_file(&path, options()).unwrap();
    assert!(report.is_clean(), "{}", report.render_errors(5));
}

#[test]
fn more_valid_jobs_than_max_jobs_refuses_the_file_naming_it_and_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let text: String = (0..3)
        .map(|i| format!("{{\"id\":\"j{i}\",\"model\":\"deepseek-v3\",\"prompt\":\"x\"}}\n"))
        .collect();
    let path = write_file(dir.path(), "big.jsonl", text.as_bytes());

    let mut opts = options();
    opts.max_jobs = Some(2);
    match read_job_file(&path, opts) {
        Err(e @ ProducerError::TooManyJobs { limit: 2, .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("big.jsonl") && msg.contains('2'), "{msg}");
        }
        other => panic!("expected TooManyJobs, got {other:?}"),
    }

    let mut opts = options();
    opts.max_jobs = Some(3);
    assert_eq!(read_job_file(&path, opts).unwrap().jobs.len(), 3);
}

#[test]
fn missing_file_is_an_io_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent.jsonl");
    let e = read_job_file(&path, options()).unwrap_err();
    assert!(matches!(e, ProducerError::Io { .. }), "{e:?}");
    assert!(e.to_string().contains("absent.jsonl"), "{e}");
}

#[test]
fn rejects_file_holds_one_object_per_rejected_line_with_the_original_text() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_file(dir.path(), "jobs.jsonl", MIXED.as_bytes());
    let report = read_job_file(&path, options()).unwrap();
    let rejects = dir.path().join("rejects.jsonl");
    write_rejects(&rejects, &report).unwrap();

    let written = std::fs::read_to_string(&rejects).unwrap();
    let rows: Vec<Value> = written
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let source: Vec<&str> = MIXED.lines().collect();
    assert_eq!(rows.len(), 4);
    for (row, rejected) in rows.iter().zip(&report.errors) {
        let line = rejected.error.line;
        assert_eq!(row["line"], Value::from(line));
        assert_eq!(row["field"], Value::from(rejected.error.field.as_str()));
        assert_eq!(row["reason"], Value::from(rejected.error.reason.as_str()));
        assert_eq!(
            row["raw"],
            Value::from(source[line - 1]),
            "raw text of line {line}"
        );
    }
}
