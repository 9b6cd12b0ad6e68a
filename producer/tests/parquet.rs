//! Reading Parquet job files: the column layouts DESIGN §2 accepts all give the same jobs, and
//! bad rows are reported by row number.

mod common;

use arrow::array::{
    ArrayRef, Int32Array, Int64Array, ListArray, StringArray, StructArray,
    TimestampMicrosecondArray,
};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{DataType, Field, Fields};
use arrow::record_batch::RecordBatch;
use common::{error_locations, ids, options, write_parquet};
use producer::{read_job_file, InputFormat};
use schemas::Job;
use serde_json::Value;
use std::sync::Arc;
use testkit::write_file;

const IDS: [&str; 3] = ["q1", "q2", "q3"];
const PROMPTS: [&str; 3] = ["What is 2+2?", "Name a prime.", "Say \"hi\"\nin two lines."];
/// 2026-11-25T06:00:00Z in microseconds.
const DEADLINE_US: i64 = 1_795_586_400_000_000;
const DEADLINE: &str = "2026-11-25T06:00:00Z";

fn strings(v: &[&str]) -> ArrayRef {
    Arc::new(StringArray::from(v.to_vec()))
}

fn batch(columns: Vec<(&str, ArrayRef)>) -> RecordBatch {
    RecordBatch::try_from_iter(columns).unwrap()
}

/// `messages` as list<struct<role, content>>, one user message per row.
fn messages_list() -> ArrayRef {
    let fields = Fields::from(vec![
        Field::new("role", DataType::Utf8, true),
        Field::new("content", DataType::Utf8, true),
    ]);
    let structs = StructArray::new(
        fields.clone(),
        vec![strings(&["user"; 3]), strings(&PROMPTS)],
        None,
    );
    let item = Arc::new(Field::new("item", DataType::Struct(fields), true));
    Arc::new(ListArray::new(
        item,
        OffsetBuffer::from_lengths([1, 1, 1]),
        Arc::new(structs),
        None,
    ))
}

fn metadata_struct() -> ArrayRef {
    let fields = Fields::from(vec![Field::new("suite", DataType::Utf8, true)]);
    Arc::new(StructArray::new(fields, vec![strings(&["mmlu"; 3])], None))
}

/// `max_tokens` with a null in the last row: a null cell means "not set".
fn max_tokens() -> ArrayRef {
    Arc::new(Int64Array::from(vec![Some(16), Some(32), None]))
}

fn expected_jobs() -> Vec<Job> {
    let dir = tempfile::tempdir().unwrap();
    let text: String = IDS
        .iter()
        .zip(PROMPTS)
        .zip([Some(16), Some(32), None])
        .map(|((id, prompt), max)| {
            let mut line = serde_json::json!({
                "id": id, "model": "deepseek-v3", "prompt": prompt,
                "deadline": DEADLINE, "metadata": {"suite": "mmlu"},
            });
            if let Some(m) = max {
                line["max_tokens"] = Value::from(m);
            }
            format!("{line}\n")
        })
        .collect();
    let path = write_file(dir.path(), "expected.jsonl", text.as_bytes());
    let report = read_job_file(&path, options()).unwrap();
    assert!(report.is_clean(), "{}", report.render_errors(5));
    report.jobs
}

#[test]
fn list_of_struct_messages_json_string_messages_and_prompt_column_read_to_the_same_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let model = || strings(&["deepseek-v3"; 3]);

    let nested = batch(vec![
        ("id", strings(&IDS)),
        ("model", model()),
        ("messages", messages_list()),
        ("max_tokens", max_tokens()),
        ("metadata", metadata_struct()),
        (
            "deadline",
            Arc::new(TimestampMicrosecondArray::from(vec![DEADLINE_US; 3]).with_timezone("UTC")),
        ),
    ]);
    let json_messages: Vec<String> = PROMPTS
        .iter()
        .map(|p| serde_json::json!([{"role": "user", "content": p}]).to_string())
        .collect();
    let json_text = batch(vec![
        ("id", strings(&IDS)),
        ("model", model()),
        ("messages", Arc::new(StringArray::from(json_messages))),
        (
            "max_tokens",
            Arc::new(Int32Array::from(vec![Some(16), Some(32), None])),
        ),
        ("metadata", strings(&[r#"{"suite":"mmlu"}"#; 3])),
        ("deadline", strings(&[DEADLINE; 3])),
    ]);
    let prompt = batch(vec![
        ("id", strings(&IDS)),
        ("model", model()),
        ("prompt", strings(&PROMPTS)),
        ("max_tokens", max_tokens()),
        ("metadata", strings(&[r#"{"suite":"mmlu"}"#; 3])),
        // A timestamp without a time zone is taken as UTC.
        (
            "deadline",
            Arc::new(TimestampMicrosecondArray::from(vec![DEADLINE_US; 3])),
        ),
    ]);

    let expected = expected_jobs();
    for (name, b) in [
        ("nested", nested),
        ("json_text", json_text),
        ("prompt", prompt),
    ] {
        let path = write_parquet(dir.path(), &format!("{name}.parquet"), &[b]);
        let report = read_job_file(&path, options()).unwrap();
        assert!(report.is_clean(), "{name}: {}", report.render_errors(5));
        assert_eq!(report.format, InputFormat::Parquet);
        assert_eq!(report.lines, 3);
        assert_eq!(report.jobs, expected, "{name}");
    }
}

#[test]
fn openai_batch_shaped_parquet_reads_custom_id_and_json_body() {
    let dir = tempfile::tempdir().unwrap();
    let bodies: Vec<String> = PROMPTS
        .iter()
        .map(|p| {
            serde_json::json!({"model": "llama-3.1-70b", "messages": [{"role": "user", "content": p}], "seed": 7})
                .to_string()
        })
        .collect();
    let b = batch(vec![
        ("custom_id", strings(&IDS)),
        ("method", strings(&["POST"; 3])),
        ("url", strings(&["/v1/chat/completions"; 3])),
        ("body", Arc::new(StringArray::from(bodies))),
    ]);
    let path = write_parquet(dir.path(), "batch.parquet", &[b]);
    let report = read_job_file(&path, options()).unwrap();

    assert!(report.is_clean(), "{}", report.render_errors(5));
    assert_eq!(ids(&report), IDS);
    assert_eq!(report.jobs[2].messages[0].text(), PROMPTS[2]);
    assert_eq!(report.jobs[0].params.get("seed"), Some(&Value::from(7)));
}

#[test]
fn bad_parquet_rows_are_reported_by_row_number_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let b = batch(vec![
        ("id", strings(&["ok-1", "bad-model", "bad-json", "ok-2"])),
        (
            "model",
            strings(&["deepseek-v3", "gpt-9", "deepseek-v3", "deepseek-v3"]),
        ),
        (
            "messages",
            strings(&[
                r#"[{"role":"user","content":"a"}]"#,
                r#"[{"role":"user","content":"b"}]"#,
                "[{oops",
                r#"[{"role":"user","content":"d"}]"#,
            ]),
        ),
    ]);
    let path = write_parquet(dir.path(), "rows.parquet", &[b]);
    let report = read_job_file(&path, options()).unwrap();

    assert_eq!(
        error_locations(&report),
        vec![(2, "model".into()), (3, "messages".into())]
    );
    assert_eq!(ids(&report), ["ok-1", "ok-2"]);
    let rendered = report.render_errors(10);
    let first = rendered.lines().next().unwrap();
    assert!(
        first.starts_with(&format!(
            "{}: row 2: field `model`: unknown model \"gpt-9\"",
            path.display()
        )),
        "{first}"
    );
    let raw: Value = serde_json::from_str(&report.errors[0].raw).unwrap();
    assert_eq!(
        raw["id"],
        Value::from("bad-model"),
        "raw holds the row as JSON"
    );
}

#[test]
fn a_parquet_row_with_several_bad_json_text_fields_reports_every_one_of_them() {
    let dir = tempfile::tempdir().unwrap();
    let b = batch(vec![
        ("id", strings(&["two-bad"])),
        ("model", strings(&["deepseek-v3"])),
        ("messages", strings(&["[{oops"])),
        ("metadata", strings(&["{not json"])),
        ("tools", strings(&["nope"])),
    ]);
    let path = write_parquet(dir.path(), "rows.parquet", &[b]);
    let report = read_job_file(&path, options()).unwrap();

    assert_eq!(
        error_locations(&report),
        vec![(1, "messages, metadata, tools".into())]
    );
    let reason = &report.errors[0].error.reason;
    for field in ["`messages`", "`metadata`", "`tools`"] {
        assert!(reason.contains(field), "{field} missing from: {reason}");
    }
}

#[test]
fn a_parquet_row_with_several_bad_fields_reports_every_one_of_them() {
    let dir = tempfile::tempdir().unwrap();
    let b = batch(vec![
        ("id", strings(&["ok", "bad"])),
        ("model", strings(&["deepseek-v3", "gpt-9"])),
        ("prompt", strings(&["x", "y"])),
        ("priority", strings(&["critical", "urgent"])),
        ("deadline", strings(&["2099-01-01T00:00:00Z", "tomorrow"])),
    ]);
    let path = write_parquet(dir.path(), "rows.parquet", &[b]);
    let report = read_job_file(&path, options()).unwrap();

    assert_eq!(ids(&report), vec!["ok".to_string()]);
    assert_eq!(
        error_locations(&report),
        vec![(2, "model, priority, deadline".into())]
    );
}

#[test]
fn row_numbers_continue_across_record_batches() {
    let dir = tempfile::tempdir().unwrap();
    let rows = 10_000;
    let bad_row = 9_001; // well past the reader's first batch
    let ids: Vec<String> = (1..=rows).map(|i| format!("job-{i}")).collect();
    let models: Vec<&str> = (1..=rows)
        .map(|i| if i == bad_row { "gpt-9" } else { "deepseek-v3" })
        .collect();
    // Written as several row groups, read back batch by batch.
    let b = batch(vec![
        ("id", Arc::new(StringArray::from(ids)) as ArrayRef),
        ("model", strings(&models)),
        ("prompt", strings(&vec!["x"; rows])),
    ]);
    let parts: Vec<RecordBatch> = (0..rows)
        .step_by(3000)
        .map(|o| b.slice(o, 3000.min(rows - o)))
        .collect();
    let path = write_parquet(dir.path(), "many.parquet", &parts);
    let report = read_job_file(&path, options()).unwrap();

    assert_eq!(report.lines, rows);
    assert_eq!(report.jobs.len(), rows - 1);
    assert_eq!(error_locations(&report), vec![(bad_row, "model".into())]);
    assert_eq!(
        report.jobs[bad_row - 1].id.0,
        format!("job-{}", bad_row + 1)
    );
}

#[test]
fn parquet_is_detected_by_magic_bytes_whatever_the_extension() {
    let dir = tempfile::tempdir().unwrap();
    let b = batch(vec![
        ("id", strings(&IDS)),
        ("model", strings(&["deepseek-v3"; 3])),
        ("prompt", strings(&PROMPTS)),
    ]);
    let path = write_parquet(dir.path(), "jobs.bin", &[b]);
    let report = read_job_file(&path, options()).unwrap();
    assert_eq!(report.format, InputFormat::Parquet);
    assert_eq!(ids(&report), IDS);
}

#[test]
fn max_jobs_applies_to_parquet_rows() {
    let dir = tempfile::tempdir().unwrap();
    let b = batch(vec![
        ("id", strings(&IDS)),
        ("model", strings(&["deepseek-v3"; 3])),
        ("prompt", strings(&PROMPTS)),
    ]);
    let path = write_parquet(dir.path(), "jobs.parquet", &[b]);
    let mut opts = options();
    opts.max_jobs = Some(2);
    let e = read_job_file(&path, opts).unwrap_err();
    assert!(
        matches!(e, producer::ProducerError::TooManyJobs { limit: 2, .. }),
        "{e:?}"
    );
}

#[test]
fn file_named_parquet_that_is_not_parquet_is_a_parquet_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_file(dir.path(), "fake.parquet", b"{\"id\":\"a\"}\n");
    let e = read_job_file(&path, options()).unwrap_err();
    assert!(
        matches!(e, producer::ProducerError::Parquet { .. }),
        "{e:?}"
    );
    assert!(e.to_string().contains("fake.parquet"), "{e}");
}
