//! Parquet job files: each row becomes the JSON object its JSONL line would have been, so
//! [`schemas::JobParser`] validates both formats alike.
//!
//! Columns are named like the JSONL fields; nested columns (`messages` as list<struct<role,
//! content>>, `metadata` or `body` as structs) map to JSON naturally, and the fields that hold
//! JSON objects or lists may also be string columns holding JSON text (`messages`, `metadata`,
//! OpenAI-batch `body`, …). Null cells are left out, as if the field were absent. Rows are read
//! batch by batch, never as one batch.

use crate::read::{RawRow, Visitor};
use crate::ProducerError;
use arrow::array::make_array;
use arrow::datatypes::{DataType, Schema};
use arrow::error::ArrowError;
use arrow::json::writer::{LineDelimited, WriterBuilder};
use arrow::record_batch::RecordBatch;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use schemas::JobError;
use serde_json::Value;
use std::borrow::Cow;
use std::fs::File;
use std::path::Path;
use std::sync::Arc;

/// Rows per batch: large enough to amortise decoding, small enough to keep memory flat.
const BATCH_ROWS: usize = 4096;

/// Fields that may come as a string column holding JSON. All of them must be objects or lists
/// in a job, so a string there can only mean encoded JSON. (`stop` and `tool_choice` are not
/// listed: plain strings are valid values for them.)
const JSON_TEXT_FIELDS: &[&str] = &[
    "messages",
    "metadata",
    "body",
    "tools",
    "response_format",
    "logit_bias",
];

/// Calls `visit` on every row of the Parquet file at `path`, one batch in memory at a time;
/// `name` is the file as errors name it.
pub(crate) fn visit_parquet(
    path: &Path,
    name: &Path,
    visit: &mut Visitor<'_>,
) -> Result<(), ProducerError> {
    let name = name.to_path_buf();
    let parquet_err = |reason: String| ProducerError::Parquet {
        file: name.clone(),
        reason,
    };
    let file = File::open(path).map_err(|e| ProducerError::io(&name, e))?;
    let mut reader = guarded(|| {
        ParquetRecordBatchReaderBuilder::try_new(file)?
            .with_batch_size(BATCH_ROWS)
            .build()
    })
    .map_err(|e| parquet_err(e.to_string()))?
    .map_err(|e| parquet_err(e.to_string()))?;
    let mut row = 0usize;
    while let Some(batch) =
        guarded(|| reader.next()).map_err(|e| parquet_err(format!("rows after {row}: {e}")))?
    {
        let batch = batch.map_err(|e| parquet_err(format!("rows after {row}: {e}")))?;
        let first = row + 1;
        let last = row + batch.num_rows();
        let text = batch_to_json_lines(&batch).map_err(|e| {
            parquet_err(format!("rows {first}-{last}: cannot convert to JSON: {e}"))
        })?;
        for raw in text.lines() {
            row += 1;
            let value = serde_json::from_str::<Value>(raw)
                .map_err(|e| whole_row_error(row, format!("row is not valid JSON: {e}")))
                .and_then(|v| decode_json_text_fields(row, v));
            let raw = RawRow {
                text: Cow::Borrowed(raw),
                value: Some(value),
            };
            if visit(row, raw)?.is_break() {
                return Ok(());
            }
        }
        if row != last {
            return Err(parquet_err(format!(
                "rows {first}-{last}: converted {} rows instead of {}",
                row + 1 - first,
                batch.num_rows()
            )));
        }
    }
    Ok(())
}

/// Runs a step of the Parquet decoder, turning a panic into an error: the decoder trusts
/// sizes written in the file, and a corrupted footer can make it panic (a capacity overflow in
/// the schema, found by `tests/fuzz_readers.rs`) instead of returning an error.
fn guarded<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|p| {
        let what = p
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown".into());
        format!("corrupted file (the decoder failed: {what})")
    })
}

/// One JSON object per row, one row per line (JSON escapes newlines inside strings, so splitting
/// on `\n` is safe). Timestamps become RFC 3339 strings in UTC; those without a time zone are
/// taken as UTC.
fn batch_to_json_lines(batch: &RecordBatch) -> Result<String, ArrowError> {
    let batch = drop_timezones(batch)?;
    let mut writer = WriterBuilder::new()
        .with_timestamp_format("%Y-%m-%dT%H:%M:%S%.fZ".to_string())
        .build::<_, LineDelimited>(Vec::new());
    writer.write(&batch)?;
    writer.finish()?;
    String::from_utf8(writer.into_inner())
        .map_err(|e| ArrowError::JsonError(format!("not UTF-8: {e}")))
}

/// Timestamp values are UTC instants whatever the column's time zone, which only affects
/// display; dropping it lets every zone name through (arrow-json would otherwise need the tz
/// database to format `"UTC"` or `"Europe/Paris"` columns, as pandas writes them). Top-level
/// columns only: a job's timestamps (`deadline`) are top-level fields.
fn drop_timezones(batch: &RecordBatch) -> Result<RecordBatch, ArrowError> {
    let zoned = |dt: &DataType| matches!(dt, DataType::Timestamp(_, Some(_)));
    if !batch.schema().fields().iter().any(|f| zoned(f.data_type())) {
        return Ok(batch.clone());
    }
    let mut fields = Vec::with_capacity(batch.num_columns());
    let mut columns = Vec::with_capacity(batch.num_columns());
    for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
        match field.data_type() {
            DataType::Timestamp(unit, Some(_)) => {
                let naive = DataType::Timestamp(*unit, None);
                let data = column
                    .to_data()
                    .into_builder()
                    .data_type(naive.clone())
                    .build()?;
                fields.push(field.as_ref().clone().with_data_type(naive));
                columns.push(make_array(data));
            }
            _ => {
                fields.push(field.as_ref().clone());
                columns.push(column.clone());
            }
        }
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
}

/// Replaces string cells of [`JSON_TEXT_FIELDS`] with the JSON they hold. Every cell that is
/// not valid JSON is reported, in one error naming all of them (`field` is their
/// comma-separated list), so a row is not fixed one field per attempt.
fn decode_json_text_fields(row: usize, mut value: Value) -> Result<Value, JobError> {
    let Value::Object(obj) = &mut value else {
        return Err(whole_row_error(row, "row did not convert to a JSON object"));
    };
    let mut bad: Vec<(&str, String)> = Vec::new();
    for field in JSON_TEXT_FIELDS {
        if let Some(Value::String(text)) = obj.get(*field) {
            match serde_json::from_str::<Value>(text) {
                Ok(decoded) => {
                    obj.insert((*field).to_string(), decoded);
                }
                Err(e) => bad.push((*field, e.to_string())),
            }
        }
    }
    const RULE: &str = "a string column here must hold JSON, and this is not valid JSON";
    match bad.as_slice() {
        [] => Ok(value),
        [(field, e)] => Err(JobError {
            line: row,
            field: (*field).to_string(),
            reason: format!("{RULE}: {e}"),
        }),
        _ => Err(JobError {
            line: row,
            field: bad.iter().map(|(f, _)| *f).collect::<Vec<_>>().join(", "),
            reason: format!(
                "{RULE}: {}",
                bad.iter()
                    .map(|(f, e)| format!("`{f}`: {e}"))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        }),
    }
}

fn whole_row_error(row: usize, reason: impl Into<String>) -> JobError {
    JobError {
        line: row,
        field: "-".into(),
        reason: reason.into(),
    }
}
