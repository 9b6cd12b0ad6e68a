//! Job files in S3, read against a real S3-compatible server (`s3s-fs`, started by
//! `deploy/local/s3.sh`; `OFFPEAK_TEST_S3_ENDPOINT`, default `http://127.0.0.1:9000`): they are
//! validated like local files, and every message names the `s3://` location, never the
//! temporary copy.

mod common;

use arrow::array::{ArrayRef, StringArray};
use arrow::record_batch::RecordBatch;
use common::{error_locations, ids, options, write_parquet};
use producer::{fetch_input, fetch_s3_input, InputFormat, ProducerError};
use std::sync::Arc;
use store::S3Url;
use testkit::TestBucket;

const JOBS: &str = concat!(
    r#"{"id":"a","model":"llama-3.1-70b","messages":[{"role":"user","content":"hi"}]}"#,
    "\n",
    r#"{"id":"b","model":"deepseek-v3","prompt":"two"}"#,
    "\n",
    r#"{"id":"c","model":"gpt-9","prompt":"which model?"}"#,
    "\n",
    r#"{"id":"d","model":"deepseek-v3","prompt":"four"}"#,
    "\n",
);

#[tokio::test]
async fn a_jsonl_job_file_in_s3_is_validated_and_its_errors_name_the_s3_location_and_line() {
    let bucket = TestBucket::new("jsonl").await;
    let url = bucket
        .upload("inputs/eval.jsonl", JOBS.as_bytes().to_vec())
        .await;
    let location = format!("s3://{}/inputs/eval.jsonl", bucket.name);

    let input = fetch_s3_input(&bucket.client, &url).await.unwrap();
    assert_eq!(input.name(), location);
    assert_eq!(std::fs::read(input.path()).unwrap(), JOBS.as_bytes());
    let report = input.read(options()).unwrap();

    assert_eq!(report.file, location);
    assert_eq!(ids(&report), ["a", "b", "d"]);
    assert_eq!(error_locations(&report), [(3, "model".to_string())]);
    let rendered = report.render_errors(10);
    assert!(
        rendered.starts_with(&format!("{location}:3: field `model`: unknown model")),
        "{rendered}"
    );
    assert!(!rendered.contains(&input.path().display().to_string()));

    let temp = input.path().to_path_buf();
    drop(input);
    assert!(
        !temp.exists(),
        "the temporary copy is deleted with the input"
    );
    bucket.remove().await;
}

#[tokio::test]
async fn a_parquet_job_file_in_s3_is_read_as_parquet_with_rows_named_by_location() {
    let bucket = TestBucket::new("parquet").await;
    let dir = tempfile::tempdir().unwrap();
    let column = |v: &[&str]| -> ArrayRef { Arc::new(StringArray::from(v.to_vec())) };
    let batch = RecordBatch::try_from_iter([
        ("id", column(&["p1", "p2"])),
        ("model", column(&["deepseek-v3", "gpt-9"])),
        ("prompt", column(&["one", "two"])),
    ])
    .unwrap();
    let local = write_parquet(dir.path(), "jobs.parquet", &[batch]);
    let url = bucket
        .upload("jobs.parquet", std::fs::read(local).unwrap())
        .await;

    let input = fetch_s3_input(&bucket.client, &url).await.unwrap();
    let report = input.read(options()).unwrap();

    assert_eq!(report.format, InputFormat::Parquet);
    assert_eq!(ids(&report), ["p1"]);
    let rendered = report.render_errors(10);
    let expected = format!("s3://{}/jobs.parquet: row 2: field `model`", bucket.name);
    assert!(rendered.starts_with(&expected), "{rendered}");
    bucket.remove().await;
}

#[tokio::test]
async fn a_missing_object_is_an_error_naming_the_location_and_the_store_code() {
    let bucket = TestBucket::new("missing").await;
    let url = S3Url::parse_object(&format!("s3://{}/nope.jsonl", bucket.name)).unwrap();

    let err = fetch_s3_input(&bucket.client, &url).await.unwrap_err();

    assert!(matches!(err, ProducerError::S3 { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.starts_with(&format!("s3://{}/nope.jsonl: ", bucket.name)),
        "{message}"
    );
    assert!(message.contains("NoSuchKey"), "{message}");
    bucket.remove().await;
}

#[tokio::test]
async fn a_malformed_s3_location_is_refused_before_any_request() {
    let err = fetch_input("s3://bucket-only/").await.unwrap_err();
    assert!(matches!(err, ProducerError::S3 { .. }), "{err:?}");
    assert!(err.to_string().contains("s3://bucket-only/"), "{err}");
    assert!(err.to_string().contains("key of one object"), "{err}");
}

#[tokio::test]
async fn a_local_path_is_used_in_place() {
    let input = fetch_input("data/jobs.jsonl").await.unwrap();
    assert_eq!(input.path(), std::path::Path::new("data/jobs.jsonl"));
    assert_eq!(input.name(), "data/jobs.jsonl");
}
