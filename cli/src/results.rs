//! `offpeak results`: one file with a run's de-duplicated results — Parquet, JSONL (one object
//! per row, the Parquet columns), or the OpenAI Batch API output format, so evaluation tooling
//! written for OpenAI batches reads it unchanged. Only the rows of the run's own jobs (its job
//! list, `_jobs`) are exported.

use crate::{output, Failure};
use anyhow::Context;
use schemas::{ResultRow, ResultStatus, RunId};
use serde_json::{json, Value};
use std::io::Write;
use std::path::PathBuf;
use store::encode_parquet;

/// Output formats of `offpeak results`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Parquet,
    Jsonl,
    OpenaiBatch,
}

/// Arguments of `offpeak results`.
#[derive(Debug, clap::Args)]
pub struct ResultsArgs {
    /// The run id.
    pub run_id: RunId,
    /// Where the run's results are: `s3://bucket/prefix` or a directory.
    #[arg(long, env = "OFFPEAK_OUTPUT")]
    pub output: String,
    /// `parquet` (the result columns), `jsonl` (the same as JSON lines), or `openai-batch` (the
    /// OpenAI Batch API output file: `custom_id`, `response.body` as a chat completion, `error`).
    #[arg(long, value_enum, default_value = "jsonl")]
    pub format: Format,
    /// File to write, or an object (`s3://bucket/key`); standard output when absent (not for
    /// parquet).
    #[arg(long, short = 'o')]
    pub out: Option<PathBuf>,
}

pub async fn results(args: ResultsArgs) -> Result<u8, Failure> {
    let sink = output::open(&args.output).await?;
    // As `status` does: a run without a manifest here is an error, not an empty export.
    if store::read_manifest(&*sink, args.run_id.as_str())
        .await?
        .is_none()
    {
        return Err(output::no_such_run(&*sink, args.run_id.as_str()));
    }
    let (mut rows, foreign) = store::read_own_rows(&*sink, args.run_id.as_str()).await?;
    if foreign > 0 {
        tracing::warn!(run_id = %args.run_id, foreign, "rows of job ids not in the run's job list left out");
        eprintln!("warning: {foreign} foreign rows ignored (job ids not in the run's job list)");
    }
    rows.sort_by(|a, b| a.job_id.cmp(&b.job_id));
    let bytes = match args.format {
        Format::Parquet => {
            if args.out.is_none() {
                return Err(crate::invalid(anyhow::anyhow!(
                    "--format parquet needs --out FILE"
                )));
            }
            encode_parquet(&rows)?
        }
        Format::Jsonl => lines(
            rows.iter()
                .map(|r| serde_json::to_value(r).unwrap_or_default()),
        ),
        Format::OpenaiBatch => lines(rows.iter().map(openai_batch_line)),
    };
    match &args.out {
        Some(p) => {
            write_out(p, bytes).await?;
            eprintln!(
                "{} results of run {} written to {}",
                rows.len(),
                args.run_id,
                p.display()
            );
        }
        None => std::io::stdout().lock().write_all(&bytes)?,
    }
    Ok(0)
}

/// Writes the export to a file, or to the object `s3://bucket/key` (credentials and endpoint
/// as for `--output`).
pub async fn write_out(out: &std::path::Path, bytes: Vec<u8>) -> Result<(), Failure> {
    let location = out.to_string_lossy();
    if !store::is_s3_location(&location) {
        std::fs::write(out, &bytes).with_context(|| format!("writing {}", out.display()))?;
        return Ok(());
    }
    let url = store::S3Url::parse_object(&location).map_err(crate::invalid)?;
    let sink = store::S3Sink::new(store::S3Config::from_env().client().await, &url);
    sink.put_object(&url.key, bytes)
        .await
        .with_context(|| format!("writing {location}"))?;
    Ok(())
}

fn lines(values: impl Iterator<Item = Value>) -> Vec<u8> {
    let mut out = Vec::new();
    for v in values {
        out.extend_from_slice(v.to_string().as_bytes());
        out.push(b'\n');
    }
    out
}

/// One line of an OpenAI Batch output file for `r`.
pub fn openai_batch_line(r: &ResultRow) -> Value {
    let id = format!(
        "batch_req_{}",
        short_hash(&format!("{}/{}", r.run_id, r.job_id))
    );
    match r.status {
        ResultStatus::Succeeded => json!({
            "id": id,
            "custom_id": r.job_id,
            "response": {
                "status_code": 200,
                "request_id": format!("req_{}", short_hash(&r.job_id)),
                "body": chat_completion(r),
            },
            "error": null,
        }),
        ResultStatus::Failed => json!({
            "id": id,
            "custom_id": r.job_id,
            "response": null,
            "error": {
                "code": r.error_kind.clone().unwrap_or_else(|| "failed".into()),
                "message": r.error_message.clone().unwrap_or_default(),
            },
        }),
    }
}

/// The provider's own body when it is an OpenAI chat completion; otherwise (Anthropic, say) one
/// built from the row, in the chat-completion shape.
fn chat_completion(r: &ResultRow) -> Value {
    if let Some(v) = r
        .response_json
        .as_deref()
        .and_then(|s| serde_json::from_str::<Value>(s).ok())
        .filter(|v| v.get("object").and_then(Value::as_str) == Some("chat.completion"))
    {
        return v;
    }
    let finish = match r.finish_reason.as_deref() {
        Some("end_turn") | Some("stop_sequence") | None => "stop",
        Some("max_tokens") => "length",
        Some("tool_use") => "tool_calls",
        Some(other) => other,
    };
    json!({
        "id": format!("chatcmpl-{}", short_hash(&r.job_id)),
        "object": "chat.completion",
        "created": r.completed_at.timestamp(),
        "model": r.provider_model.clone().unwrap_or_else(|| r.model.clone()),
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": r.output_text.clone().unwrap_or_default(), "refusal": null},
            "logprobs": null,
            "finish_reason": finish,
        }],
        "usage": {
            "prompt_tokens": r.input_tokens,
            "completion_tokens": r.output_tokens,
            "total_tokens": r.input_tokens + r.output_tokens,
        },
    })
}

fn short_hash(s: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(&Sha256::digest(s.as_bytes())[..12])
}
