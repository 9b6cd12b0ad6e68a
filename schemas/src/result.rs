//! The result row (DESIGN §6) and its Arrow schema: one row per job outcome.

use arrow::array::{
    Array, ArrayRef, BooleanArray, Float64Array, Float64Builder, RecordBatch, StringArray,
    StringBuilder, TimestampMillisecondArray, TimestampMillisecondBuilder, UInt32Array,
    UInt32Builder, UInt64Array, UInt64Builder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::error::ArrowError;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::sync::{Arc, OnceLock};

/// How a job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResultStatus {
    Succeeded,
    Failed,
}

impl ResultStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ResultStatus::Succeeded => "succeeded",
            ResultStatus::Failed => "failed",
        }
    }
}

/// One job outcome, as written to Parquet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultRow {
    pub run_id: String,
    pub job_id: String,
    pub status: ResultStatus,
    /// The canonical model served (or first asked for, on failure).
    pub model: String,
    pub provider: Option<String>,
    pub provider_model: Option<String>,
    pub output_text: Option<String>,
    pub finish_reason: Option<String>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// What the job cost.
    pub cost_usd: f64,
    /// What it would have cost at the most expensive eligible pair.
    pub baseline_cost_usd: f64,
    /// The cheapest expected cost available when the job was submitted.
    pub cheapest_at_submit_usd: Option<f64>,
    pub latency_ms: u64,
    pub attempts: u32,
    pub deferred_ms: u64,
    pub deferrals: u32,
    /// `cheapest`, or why the job escalated.
    pub route_reason: Option<String>,
    pub error_kind: Option<String>,
    pub error_message: Option<String>,
    pub priority: String,
    pub submitted_at: DateTime<Utc>,
    pub completed_at: DateTime<Utc>,
    pub deadline: DateTime<Utc>,
    /// The job's metadata as a JSON string.
    pub metadata: String,
    /// The provider's full response body as JSON, for succeeded jobs.
    pub response_json: Option<String>,
    /// Why generation stopped in the provider's own words (`end_turn`, `max_tokens`, …);
    /// `finish_reason` holds the same in one vocabulary (see [`normalize_finish_reason`]).
    pub provider_finish_reason: Option<String>,
    /// Whether the job went to a dearer pair than the cheapest (the route reason says why).
    pub escalated: bool,
    /// How the provider served it: `realtime`, `flex` or `batch` (none for a job that reached
    /// no provider).
    pub route: Option<String>,
    /// The provider's batch id, for a job served through its batch API.
    pub batch_id: Option<String>,
    /// Of `input_tokens`, those the provider read from its prompt cache (billed at its cache
    /// read price).
    pub cached_input_tokens: u64,
    /// Of `input_tokens`, those the provider wrote to its prompt cache (billed at its cache
    /// write price; Anthropic only).
    pub cache_write_tokens: u64,
}

/// One vocabulary for why generation stopped, whichever API answered: `stop` (a natural end or
/// a stop sequence), `length` (the token cap), `tool_calls`, `content_filter`, or `other`.
pub fn normalize_finish_reason(provider_value: &str) -> &'static str {
    match provider_value {
        "stop" | "end_turn" | "stop_sequence" | "STOP" => "stop",
        "length" | "max_tokens" | "model_context_window_exceeded" | "MAX_TOKENS" => "length",
        "tool_calls" | "function_call" | "tool_use" => "tool_calls",
        "content_filter" | "refusal" | "SAFETY" | "RECITATION" => "content_filter",
        _ => "other",
    }
}

fn ts() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
}

impl ResultRow {
    /// A row of `run_id`/`job_id` that went nowhere yet: no provider, no usage, no cost, every
    /// time `at`, no metadata. Callers fill in what they know.
    pub fn blank(run_id: String, job_id: String, status: ResultStatus, at: DateTime<Utc>) -> Self {
        ResultRow {
            run_id,
            job_id,
            status,
            model: String::new(),
            provider: None,
            provider_model: None,
            output_text: None,
            finish_reason: None,
            input_tokens: 0,
            output_tokens: 0,
            cost_usd: 0.0,
            baseline_cost_usd: 0.0,
            cheapest_at_submit_usd: None,
            latency_ms: 0,
            attempts: 0,
            deferred_ms: 0,
            deferrals: 0,
            route_reason: None,
            error_kind: None,
            error_message: None,
            priority: String::new(),
            submitted_at: at,
            completed_at: at,
            deadline: at,
            metadata: "{}".into(),
            response_json: None,
            provider_finish_reason: None,
            escalated: false,
            route: None,
            batch_id: None,
            cached_input_tokens: 0,
            cache_write_tokens: 0,
        }
    }

    /// Roughly the bytes this row holds: its long text columns plus a fixed allowance for the
    /// rest (for sizing buffers and files).
    pub fn approx_text_bytes(&self) -> usize {
        256 + self.output_text.as_ref().map_or(0, String::len)
            + self.response_json.as_ref().map_or(0, String::len)
            + self.metadata.len()
            + self.error_message.as_ref().map_or(0, String::len)
    }
}

/// The Arrow schema of result files. Column order is part of the contract.
pub fn arrow_schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            let s = |n: &str, null| Field::new(n, DataType::Utf8, null);
            let u64f = |n: &str| Field::new(n, DataType::UInt64, false);
            Arc::new(Schema::new(vec![
                s("run_id", false),
                s("job_id", false),
                s("status", false),
                s("model", false),
                s("provider", true),
                s("provider_model", true),
                s("output_text", true),
                s("finish_reason", true),
                u64f("input_tokens"),
                u64f("output_tokens"),
                Field::new("cost_usd", DataType::Float64, false),
                Field::new("baseline_cost_usd", DataType::Float64, false),
                Field::new("cheapest_at_submit_usd", DataType::Float64, true),
                u64f("latency_ms"),
                Field::new("attempts", DataType::UInt32, false),
                u64f("deferred_ms"),
                Field::new("deferrals", DataType::UInt32, false),
                s("route_reason", true),
                s("error_kind", true),
                s("error_message", true),
                s("priority", false),
                Field::new("submitted_at", ts(), false),
                Field::new("completed_at", ts(), false),
                Field::new("deadline", ts(), false),
                s("metadata", false),
                s("response_json", true),
                s("provider_finish_reason", true),
                Field::new("escalated", DataType::Boolean, false),
                s("route", true),
                s("batch_id", true),
                u64f("cached_input_tokens"),
                u64f("cache_write_tokens"),
            ]))
        })
        .clone()
}

/// Builds one Arrow batch from rows.
pub fn to_record_batch(rows: &[ResultRow]) -> Result<RecordBatch, ArrowError> {
    fn strs<'a>(rows: &'a [ResultRow], f: impl Fn(&'a ResultRow) -> Option<&'a str>) -> ArrayRef {
        let bytes = rows.iter().map(|r| f(r).map_or(0, str::len)).sum();
        let mut b = StringBuilder::with_capacity(rows.len(), bytes);
        for r in rows {
            b.append_option(f(r));
        }
        Arc::new(b.finish())
    }
    fn u64s(rows: &[ResultRow], f: impl Fn(&ResultRow) -> u64) -> ArrayRef {
        let mut b = UInt64Builder::with_capacity(rows.len());
        rows.iter().for_each(|r| b.append_value(f(r)));
        Arc::new(b.finish())
    }
    fn u32s(rows: &[ResultRow], f: impl Fn(&ResultRow) -> u32) -> ArrayRef {
        let mut b = UInt32Builder::with_capacity(rows.len());
        rows.iter().for_each(|r| b.append_value(f(r)));
        Arc::new(b.finish())
    }
    fn f64s(rows: &[ResultRow], f: impl Fn(&ResultRow) -> Option<f64>) -> ArrayRef {
        let mut b = Float64Builder::with_capacity(rows.len());
        rows.iter().for_each(|r| b.append_option(f(r)));
        Arc::new(b.finish())
    }
    fn times(rows: &[ResultRow], f: impl Fn(&ResultRow) -> DateTime<Utc>) -> ArrayRef {
        let mut b = TimestampMillisecondBuilder::with_capacity(rows.len()).with_timezone("UTC");
        rows.iter()
            .for_each(|r| b.append_value(f(r).timestamp_millis()));
        Arc::new(b.finish())
    }
    let cols: Vec<ArrayRef> = vec![
        strs(rows, |r| Some(&r.run_id)),
        strs(rows, |r| Some(&r.job_id)),
        strs(rows, |r| Some(r.status.as_str())),
        strs(rows, |r| Some(&r.model)),
        strs(rows, |r| r.provider.as_deref()),
        strs(rows, |r| r.provider_model.as_deref()),
        strs(rows, |r| r.output_text.as_deref()),
        strs(rows, |r| r.finish_reason.as_deref()),
        u64s(rows, |r| r.input_tokens),
        u64s(rows, |r| r.output_tokens),
        f64s(rows, |r| Some(r.cost_usd)),
        f64s(rows, |r| Some(r.baseline_cost_usd)),
        f64s(rows, |r| r.cheapest_at_submit_usd),
        u64s(rows, |r| r.latency_ms),
        u32s(rows, |r| r.attempts),
        u64s(rows, |r| r.deferred_ms),
        u32s(rows, |r| r.deferrals),
        strs(rows, |r| r.route_reason.as_deref()),
        strs(rows, |r| r.error_kind.as_deref()),
        strs(rows, |r| r.error_message.as_deref()),
        strs(rows, |r| Some(&r.priority)),
        times(rows, |r| r.submitted_at),
        times(rows, |r| r.completed_at),
        times(rows, |r| r.deadline),
        strs(rows, |r| Some(&r.metadata)),
        strs(rows, |r| r.response_json.as_deref()),
        strs(rows, |r| r.provider_finish_reason.as_deref()),
        Arc::new(BooleanArray::from_iter(
            rows.iter().map(|r| Some(r.escalated)),
        )),
        strs(rows, |r| r.route.as_deref()),
        strs(rows, |r| r.batch_id.as_deref()),
        u64s(rows, |r| r.cached_input_tokens),
        u64s(rows, |r| r.cache_write_tokens),
    ];
    RecordBatch::try_new(arrow_schema(), cols)
}

/// Reads rows back from a batch written with [`arrow_schema`] (columns looked up by name, so
/// files with extra columns still read).
pub fn from_record_batch(batch: &RecordBatch) -> Result<Vec<ResultRow>, ArrowError> {
    fn col<'a, T: 'static>(b: &'a RecordBatch, name: &str) -> Result<&'a T, ArrowError> {
        b.column_by_name(name)
            .and_then(|c| c.as_any().downcast_ref::<T>())
            .ok_or_else(|| {
                ArrowError::SchemaError(format!(
                    "result column {name:?} missing or of the wrong type"
                ))
            })
    }
    let s = |n| col::<StringArray>(batch, n);
    let (run_id, job_id, status, model) = (s("run_id")?, s("job_id")?, s("status")?, s("model")?);
    let (provider, provider_model, output_text, finish_reason) = (
        s("provider")?,
        s("provider_model")?,
        s("output_text")?,
        s("finish_reason")?,
    );
    let (route_reason, error_kind, error_message, priority, metadata, response_json) = (
        s("route_reason")?,
        s("error_kind")?,
        s("error_message")?,
        s("priority")?,
        s("metadata")?,
        s("response_json")?,
    );
    let u = |n| col::<UInt64Array>(batch, n);
    let (input_tokens, output_tokens, latency_ms, deferred_ms) = (
        u("input_tokens")?,
        u("output_tokens")?,
        u("latency_ms")?,
        u("deferred_ms")?,
    );
    let attempts = col::<UInt32Array>(batch, "attempts")?;
    let deferrals = col::<UInt32Array>(batch, "deferrals")?;
    let f = |n| col::<Float64Array>(batch, n);
    let (cost, baseline, cheapest) = (
        f("cost_usd")?,
        f("baseline_cost_usd")?,
        f("cheapest_at_submit_usd")?,
    );
    let t = |n| col::<TimestampMillisecondArray>(batch, n);
    let (submitted_at, completed_at, deadline) =
        (t("submitted_at")?, t("completed_at")?, t("deadline")?);
    // Files written before these columns existed read as "not known" and "not escalated".
    let provider_finish_reason = s("provider_finish_reason").ok();
    let escalated = col::<BooleanArray>(batch, "escalated").ok();
    let (route, batch_id) = (s("route").ok(), s("batch_id").ok());
    let (cache_read, cache_write) = (u("cached_input_tokens").ok(), u("cache_write_tokens").ok());
    let opt = |a: &StringArray, i| (!a.is_null(i)).then(|| a.value(i).to_string());
    let time = |a: &TimestampMillisecondArray, i| {
        DateTime::from_timestamp_millis(a.value(i)).unwrap_or_default()
    };
    (0..batch.num_rows())
        .map(|i| {
            let status = match status.value(i) {
                "succeeded" => ResultStatus::Succeeded,
                "failed" => ResultStatus::Failed,
                other => return Err(ArrowError::ParseError(format!("unknown status {other:?}"))),
            };
            Ok(ResultRow {
                run_id: run_id.value(i).to_string(),
                job_id: job_id.value(i).to_string(),
                status,
                model: model.value(i).to_string(),
                provider: opt(provider, i),
                provider_model: opt(provider_model, i),
                output_text: opt(output_text, i),
                finish_reason: opt(finish_reason, i),
                input_tokens: input_tokens.value(i),
                output_tokens: output_tokens.value(i),
                cost_usd: cost.value(i),
                baseline_cost_usd: baseline.value(i),
                cheapest_at_submit_usd: (!cheapest.is_null(i)).then(|| cheapest.value(i)),
                latency_ms: latency_ms.value(i),
                attempts: attempts.value(i),
                deferred_ms: deferred_ms.value(i),
                deferrals: deferrals.value(i),
                route_reason: opt(route_reason, i),
                error_kind: opt(error_kind, i),
                error_message: opt(error_message, i),
                priority: priority.value(i).to_string(),
                submitted_at: time(submitted_at, i),
                completed_at: time(completed_at, i),
                deadline: time(deadline, i),
                metadata: metadata.value(i).to_string(),
                response_json: opt(response_json, i),
                provider_finish_reason: provider_finish_reason.and_then(|a| opt(a, i)),
                escalated: escalated.is_some_and(|a| a.value(i)),
                route: route.and_then(|a| opt(a, i)),
                batch_id: batch_id.and_then(|a| opt(a, i)),
                cached_input_tokens: cache_read.map_or(0, |a| a.value(i)),
                cache_write_tokens: cache_write.map_or(0, |a| a.value(i)),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_round_trip_through_arrow() {
        let now = DateTime::from_timestamp_millis(1_764_000_000_123).unwrap();
        let row = ResultRow {
            run_id: "r".into(),
            job_id: "j".into(),
            status: ResultStatus::Failed,
            model: "m".into(),
            provider: None,
            provider_model: Some("pm".into()),
            output_text: None,
            finish_reason: None,
            input_tokens: 3,
            output_tokens: 4,
            cost_usd: 0.5,
            baseline_cost_usd: 1.5,
            cheapest_at_submit_usd: None,
            latency_ms: 9,
            attempts: 2,
            deferred_ms: 100,
            deferrals: 1,
            route_reason: Some("cheapest".into()),
            error_kind: Some("terminal".into()),
            error_message: Some("bad".into()),
            priority: "critical".into(),
            submitted_at: now,
            completed_at: now,
            deadline: now,
            metadata: "{}".into(),
            response_json: None,
            provider_finish_reason: Some("max_tokens".into()),
            escalated: true,
            route: Some("batch".into()),
            batch_id: Some("batch_1".into()),
            cached_input_tokens: 2,
            cache_write_tokens: 1,
        };
        let b = to_record_batch(std::slice::from_ref(&row)).unwrap();
        assert_eq!(b.num_columns(), arrow_schema().fields().len());
        assert_eq!(from_record_batch(&b).unwrap(), vec![row]);
    }

    #[test]
    fn both_apis_finish_reasons_share_one_vocabulary() {
        for (openai, anthropic) in [
            ("stop", "end_turn"),
            ("length", "max_tokens"),
            ("tool_calls", "tool_use"),
            ("content_filter", "refusal"),
        ] {
            assert_eq!(
                normalize_finish_reason(openai),
                normalize_finish_reason(anthropic)
            );
            assert_eq!(normalize_finish_reason(openai), openai);
        }
        assert_eq!(normalize_finish_reason("stop_sequence"), "stop");
        assert_eq!(normalize_finish_reason("pause_turn"), "other");
    }
}
