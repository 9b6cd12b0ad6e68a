//! Property tests over the job-file readers (issue 4): whatever the bytes — random, JSON shaped
//! like jobs or OpenAI Batch requests, a corrupted Parquet file — reading never panics, every
//! line is either a job or a rejection naming its line, field and reason, and a file that cannot
//! be read at all is a clear error naming the file.

mod common;

use arrow::array::{ArrayRef, StringArray};
use arrow::record_batch::RecordBatch;
use common::{options, write_parquet};
use producer::{read_job_file, ProducerError};
use proptest::prelude::*;
use serde_json::{json, Value};
use std::sync::Arc;
use testkit::write_file;

/// Values for job fields: right and wrong types, odd strings, big and negative numbers.
fn field_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        ".{0,16}".prop_map(Value::from),
        Just(json!("llama-3.1-70b")),
        Just(json!("deepseek-v3")),
        Just(json!("critical")),
        Just(json!("2026-11-25T06:00:00Z")),
        Just(json!("6h")),
        Just(json!("user")),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("role".to_string()),
                    Just("content".to_string()),
                    Just("text".to_string()),
                    Just("type".to_string()),
                    "[a-z]{1,6}",
                ],
                inner,
                0..4
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A JSON object with some of the native and OpenAI Batch keys, each with any value.
fn job_like() -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        Just("id"),
        Just("model"),
        Just("models"),
        Just("messages"),
        Just("prompt"),
        Just("max_tokens"),
        Just("priority"),
        Just("deadline"),
        Just("deadline_in"),
        Just("max_cost_usd"),
        Just("providers_allow"),
        Just("metadata"),
        Just("temperature"),
        Just("custom_id"),
        Just("method"),
        Just("url"),
        Just("body"),
        Just("bogus"),
    ];
    prop::collection::btree_map(key, field_value(), 0..8)
        .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_string(), v)).collect()))
}

fn check_report(r: &producer::ValidationReport) -> Result<(), TestCaseError> {
    prop_assert_eq!(r.jobs.len() + r.errors.len(), r.lines);
    for e in &r.errors {
        prop_assert!(e.error.line >= 1);
        prop_assert!(!e.error.field.is_empty());
        prop_assert!(!e.error.reason.is_empty());
    }
    for j in &r.jobs {
        prop_assert!(!j.id.to_string().is_empty());
        prop_assert!(!j.models.is_empty());
        prop_assert!(!j.messages.is_empty());
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_bytes_read_as_jsonl_give_jobs_or_located_rejections(
        bytes in prop::collection::vec(any::<u8>(), 0..2048),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = write_file(dir.path(), "jobs.jsonl", &bytes);
        match read_job_file(&path, options()) {
            Ok(r) => check_report(&r)?,
            // Only a file that starts like Parquet can fail as a whole.
            Err(e) => {
                prop_assert!(bytes.starts_with(b"PAR1"), "{e}");
                prop_assert!(e.to_string().contains("jobs.jsonl"), "{e}");
            }
        }
    }

    #[test]
    fn job_shaped_lines_never_panic_and_every_rejection_names_a_field(
        lines in prop::collection::vec(job_like(), 1..12),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let text: String = lines.iter().map(|v| format!("{v}\n")).collect();
        let path = write_file(dir.path(), "jobs.jsonl", text.as_bytes());
        let r = read_job_file(&path, options()).unwrap();
        prop_assert_eq!(r.lines, lines.len());
        check_report(&r)?;
    }

    #[test]
    fn openai_batch_shaped_lines_never_panic(
        custom_id in field_value(),
        method in prop_oneof![Just(json!("POST")), field_value()],
        url in prop_oneof![Just(json!("/v1/chat/completions")), field_value()],
        body in prop_oneof![
            job_like(),
            Just(json!({"model": "deepseek-v3", "messages": [{"role": "user", "content": "x"}]})),
        ],
    ) {
        let line = json!({"custom_id": custom_id, "method": method, "url": url, "body": body});
        let dir = tempfile::tempdir().unwrap();
        let path = write_file(dir.path(), "batch.jsonl", format!("{line}\n").as_bytes());
        let r = read_job_file(&path, options()).unwrap();
        check_report(&r)?;
    }

    #[test]
    fn random_bytes_behind_the_parquet_magic_are_a_clear_error(
        bytes in prop::collection::vec(any::<u8>(), 0..4096),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut content = b"PAR1".to_vec();
        content.extend_from_slice(&bytes);
        let path = write_file(dir.path(), "jobs.parquet", &content);
        match read_job_file(&path, options()) {
            Ok(r) => check_report(&r)?,
            Err(e) => {
                let matches = matches!(e, ProducerError::Parquet { .. });
                prop_assert!(matches, "{e:?}");
                prop_assert!(e.to_string().contains("jobs.parquet: cannot read Parquet"), "{e}");
            }
        }
    }

    #[test]
    fn a_corrupted_parquet_file_never_panics(
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in proptest::option::of(any::<prop::sample::Index>()),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let ids: ArrayRef = Arc::new(StringArray::from(vec!["a", "b", "c"]));
        let models: ArrayRef = Arc::new(StringArray::from(vec!["deepseek-v3"; 3]));
        let prompts: ArrayRef = Arc::new(StringArray::from(vec!["x", "y", "z"]));
        let batch = RecordBatch::try_from_iter([("id", ids), ("model", models), ("prompt", prompts)]).unwrap();
        let path = write_parquet(dir.path(), "jobs.parquet", &[batch]);
        let mut bytes = std::fs::read(&path).unwrap();
        for (at, b) in flips {
            let i = at.index(bytes.len());
            bytes[i] ^= b | 1;
        }
        if let Some(c) = cut {
            bytes.truncate(c.index(bytes.len()).max(4));
        }
        std::fs::write(&path, &bytes).unwrap();
        match read_job_file(&path, options()) {
            Ok(r) => check_report(&r)?,
            Err(e) => prop_assert!(e.to_string().contains("jobs.parquet"), "{e}"),
        }
    }
}
