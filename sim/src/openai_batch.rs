//! OpenAI's batch API: `files` (multipart upload, retrieve, content, delete) and `batches`
//! (create, retrieve, cancel, list) in the shapes the official `openai` client parses. An input
//! file is checked when its batch is created, as OpenAI does: a bad file gives a `failed` batch
//! with `errors.data`. A batch's output and error files are written when it ends.

use crate::batch::{page_limit, Batch, File, LineResult, LineState, NewBatch, Phase};
use crate::scenario::SimKind;
use crate::server::{batch_provider, finish, json, line_result, ProviderState, Refusal, SimState};
use crate::text::{fnv1a, hex_id, SplitMix};
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Map, Value};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// The one endpoint the simulator batches.
const ENDPOINT: &str = "/v1/chat/completions";

/// The batch and file routes of every OpenAI-kind provider.
pub(crate) fn routes() -> Router<Arc<SimState>> {
    Router::new()
        .route("/{provider}/v1/files", post(upload))
        .route("/{provider}/v1/files/{id}", get(file).delete(delete))
        .route("/{provider}/v1/files/{id}/content", get(content))
        .route("/{provider}/v1/batches", post(create).get(list))
        .route("/{provider}/v1/batches/{id}", get(retrieve))
        .route("/{provider}/v1/batches/{id}/cancel", post(cancel))
}

/// Runs `f` on the provider if its batch API answers, and adds the usual headers.
fn answer(
    st: &SimState,
    provider: &str,
    headers: &HeaderMap,
    f: impl FnOnce(&ProviderState) -> Result<Response, Refusal>,
) -> Response {
    let r = batch_provider(st, provider, SimKind::Openai, headers).and_then(|p| f(&p));
    finish(st, SimKind::Openai, r)
}

async fn upload(
    State(st): State<Arc<SimState>>,
    Path(provider): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    answer(&st, &provider, &headers, |p| {
        let bad = |m: &str| Refusal::BadRequest(m.to_string());
        let ctype = headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let parts =
            multipart(ctype, &body).ok_or_else(|| bad("Invalid multipart/form-data body."))?;
        let purpose = parts
            .iter()
            .find(|p| p.name == "purpose")
            .map(|p| String::from_utf8_lossy(&p.data).trim().to_string())
            .ok_or_else(|| bad("Missing required parameter: 'purpose'."))?;
        let upload = parts
            .into_iter()
            .find(|p| p.name == "file")
            .ok_or_else(|| bad("Missing required parameter: 'file'."))?;
        let f = File {
            id: format!("file-{}", st.new_id()),
            filename: upload.filename.unwrap_or_else(|| "upload.jsonl".into()),
            purpose,
            created_at: chrono::Utc::now().timestamp(),
            bytes: upload.data,
        };
        let out = file_object(&f);
        p.with_batches(|s| s.files.insert(f.id.clone(), f));
        Ok(json(200, out))
    })
}

async fn file(
    State(st): State<Arc<SimState>>,
    Path((provider, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    answer(&st, &provider, &headers, |p| {
        p.with_batches(|s| s.files.get(&id).map(file_object))
            .map(|f| json(200, f))
            .ok_or_else(|| no_file(&id))
    })
}

async fn content(
    State(st): State<Arc<SimState>>,
    Path((provider, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    answer(&st, &provider, &headers, |p| {
        let bytes = p
            .with_batches(|s| s.files.get(&id).map(|f| f.bytes.clone()))
            .ok_or_else(|| no_file(&id))?;
        Ok(([("content-type", "application/octet-stream")], bytes).into_response())
    })
}

async fn delete(
    State(st): State<Arc<SimState>>,
    Path((provider, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    answer(&st, &provider, &headers, |p| {
        p.with_batches(|s| s.files.remove(&id))
            .ok_or_else(|| no_file(&id))?;
        Ok(json(
            200,
            json!({ "id": id, "object": "file", "deleted": true }),
        ))
    })
}

async fn create(
    State(st): State<Arc<SimState>>,
    Path(provider): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    answer(&st, &provider, &headers, |p| {
        let bad = |m: &str| Refusal::BadRequest(m.to_string());
        let v: Value = serde_json::from_slice(&body)
            .map_err(|_| bad("We could not parse the JSON body of your request."))?;
        let input_file_id = v
            .get("input_file_id")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("Missing required parameter: 'input_file_id'."))?
            .to_string();
        let endpoint = v
            .get("endpoint")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if endpoint != ENDPOINT {
            return Err(bad(
                "Invalid value for 'endpoint': the simulator batches '/v1/chat/completions' only.",
            ));
        }
        let window = v
            .get("completion_window")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if window != "24h" {
            return Err(bad(
                "Invalid value for 'completion_window': supported values are: '24h'.",
            ));
        }
        let metadata = match v.get("metadata") {
            None | Some(Value::Null) => Value::Null,
            Some(Value::Object(m)) if m.len() <= 16 && m.values().all(Value::is_string) => {
                Value::Object(m.clone())
            }
            Some(_) => {
                return Err(bad(
                    "Invalid 'metadata': expected an object of at most 16 string values.",
                ))
            }
        };
        let file = p
            .with_batches(|s| s.files.get(&input_file_id).cloned())
            .ok_or_else(|| no_file(&input_file_id))?;
        if file.purpose != "batch" {
            return Err(bad("The input file must be uploaded with purpose 'batch'."));
        }
        let (requests, invalid) = validate(&file.bytes);
        let lines = requests
            .into_iter()
            .map(|(custom_id, body)| (custom_id, line_result(&st, p, &body)))
            .collect();
        let new = NewBatch {
            id: st.new_id(),
            lines,
            invalid,
            input_file_id,
            endpoint: ENDPOINT.into(),
            completion_window: window.into(),
            metadata,
            error_500: crate::openai::error_body(&Refusal::Status(500)).1,
        };
        let spec = p.spec.batch.clone().unwrap_or_default();
        let now = p.now_s();
        let out = p.with_batches(|s| object(s.create(&spec, p.seed(), now, new), 0.0));
        Ok(json(200, out))
    })
}

async fn retrieve(
    State(st): State<Arc<SimState>>,
    Path((provider, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    answer(&st, &provider, &headers, |p| {
        let now = p.now_s();
        p.with_batches(|s| {
            let (b, age) = s.at(suffix(&id), now).ok_or_else(|| no_batch(&id))?;
            Ok(json(200, object(b, age)))
        })
    })
}

async fn cancel(
    State(st): State<Arc<SimState>>,
    Path((provider, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    answer(&st, &provider, &headers, |p| {
        let now = p.now_s();
        p.with_batches(|s| {
            let (b, age) = s.cancel(suffix(&id), now).ok_or_else(|| no_batch(&id))?;
            Ok(json(200, object(b, age)))
        })
    })
}

async fn list(
    State(st): State<Arc<SimState>>,
    Path(provider): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    answer(&st, &provider, &headers, |p| {
        let limit = page_limit(q.get("limit").map(String::as_str), 20, 100).ok_or_else(|| {
            Refusal::BadRequest("Invalid 'limit': expected an integer between 1 and 100.".into())
        })?;
        let after = q.get("after").map(|a| suffix(a).to_string());
        let now = p.now_s();
        let l = p.with_batches(|s| s.list(after.as_deref(), None, limit, now, object));
        Ok(json(
            200,
            json!({ "object": "list", "data": l.data, "first_id": l.first_id, "last_id": l.last_id, "has_more": l.has_more }),
        ))
    })
}

/// The batch object at `age` seconds after creation.
fn object(b: &Batch, age: f64) -> Value {
    let phase = b.phase(age);
    let at = |p: Phase| b.entered(p, age).map(|t| b.unix_at(t) as i64);
    let [_, ok, failed, _, _] = b.counts(age);
    let total = if phase == Phase::Validating || phase == Phase::Failed {
        0
    } else {
        b.lines.len()
    };
    let errors = if b.invalid.is_empty() {
        Value::Null
    } else {
        json!({ "object": "list", "data": b.invalid })
    };
    json!({
        "id": format!("batch_{}", b.id),
        "object": "batch",
        "endpoint": b.endpoint,
        "errors": errors,
        "input_file_id": b.input_file_id,
        "completion_window": b.completion_window,
        "status": status(phase),
        "output_file_id": b.output_file_id,
        "error_file_id": b.error_file_id,
        "created_at": b.created_unix as i64,
        "in_progress_at": at(Phase::InProgress),
        "expires_at": (b.created_unix + b.window_s) as i64,
        "finalizing_at": at(Phase::Finalizing),
        "completed_at": at(Phase::Completed),
        "failed_at": at(Phase::Failed),
        "expired_at": at(Phase::Expired),
        "cancelling_at": at(Phase::Cancelling),
        "cancelled_at": at(Phase::Cancelled),
        "request_counts": { "total": total, "completed": ok, "failed": failed },
        "metadata": b.metadata
    })
}

fn status(p: Phase) -> &'static str {
    match p {
        Phase::Validating => "validating",
        Phase::Failed => "failed",
        Phase::InProgress => "in_progress",
        Phase::Finalizing => "finalizing",
        Phase::Completed => "completed",
        Phase::Cancelling => "cancelling",
        Phase::Cancelled => "cancelled",
        Phase::Expired => "expired",
    }
}

/// Writes the output file (succeeded lines) and the error file (failed, cancelled and expired
/// lines) of a batch that has ended, `age` seconds after its creation; an empty one is not
/// written, as OpenAI leaves its id null.
pub(crate) fn write_files(b: &mut Batch, files: &mut HashMap<String, File>, age: f64) {
    if !b.invalid.is_empty() {
        return;
    }
    let (mut out, mut err) = (String::new(), String::new());
    for (i, l) in b.lines.iter().enumerate() {
        let id = derived_id(&b.id, &format!("line{i}"));
        let request_id = format!("req_{}", derived_id(&b.id, &format!("request{i}")));
        let (line, to) = match (b.line_state(l, age), &l.result) {
            (LineState::Succeeded, LineResult::Ok { body, .. }) => (
                json!({ "id": format!("batch_req_{id}"), "custom_id": l.custom_id,
                        "response": { "status_code": 200, "request_id": request_id, "body": body },
                        "error": null }),
                &mut out,
            ),
            (LineState::Errored, LineResult::Err { status, body }) => (
                json!({ "id": format!("batch_req_{id}"), "custom_id": l.custom_id,
                        "response": { "status_code": status, "request_id": request_id, "body": body },
                        "error": null }),
                &mut err,
            ),
            (state, _) => {
                let (code, message) = match state {
                    LineState::Expired => (
                        "batch_expired",
                        "This request could not be executed before the completion window expired.",
                    ),
                    _ => (
                        "batch_cancelled",
                        "This request could not be executed before the batch was cancelled.",
                    ),
                };
                (
                    json!({ "id": format!("batch_req_{id}"), "custom_id": l.custom_id,
                            "response": null, "error": { "code": code, "message": message } }),
                    &mut err,
                )
            }
        };
        to.push_str(&line.to_string());
        to.push('\n');
    }
    let created_at = b.unix_at(age) as i64;
    for (text, kind, slot) in [
        (out, "output", &mut b.output_file_id),
        (err, "error", &mut b.error_file_id),
    ] {
        if text.is_empty() {
            continue;
        }
        let id = format!("file-{}", derived_id(&b.id, kind));
        files.insert(
            id.clone(),
            File {
                id: id.clone(),
                filename: format!("batch_{}_{kind}.jsonl", b.id),
                purpose: "batch_output".into(),
                created_at,
                bytes: Bytes::from(text),
            },
        );
        *slot = Some(id);
    }
}

/// Checks a batch input file: a JSON object a line with a unique `custom_id`, `method` POST,
/// `url` the batch endpoint and a `body` naming the same `model` as every other line. Answers
/// the requests, or the errors (OpenAI's `errors.data` entries) if any line is bad.
fn validate(bytes: &[u8]) -> (Vec<(String, Value)>, Vec<Value>) {
    let mut requests = Vec::new();
    let mut errors = Vec::new();
    let mut seen = HashSet::new();
    let mut model: Option<String> = None;
    let mut any = false;
    let text = String::from_utf8_lossy(bytes);
    let mut error = |code: &str, message: String, param: Option<&str>, line: usize| {
        errors.push(json!({ "code": code, "message": message, "param": param, "line": line }));
    };
    for (i, raw) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let n = i + 1;
        any = true;
        let Ok(Value::Object(obj)) = serde_json::from_str::<Value>(raw) else {
            error(
                "invalid_json_line",
                format!("Line {n} is not a valid JSON object."),
                None,
                n,
            );
            continue;
        };
        let field = |k: &str| obj.get(k).and_then(Value::as_str);
        let Some(custom_id) = field("custom_id") else {
            error(
                "missing_required_parameter",
                "Missing required parameter: 'custom_id'.".into(),
                Some("custom_id"),
                n,
            );
            continue;
        };
        if !seen.insert(custom_id.to_string()) {
            error("duplicate_custom_id", format!("The custom_id '{custom_id}' is used more than once; each custom_id must be unique."), Some("custom_id"), n);
        }
        if field("method") != Some("POST") {
            error(
                "invalid_method",
                "Invalid value for 'method': only 'POST' is supported.".into(),
                Some("method"),
                n,
            );
        }
        if field("url") != Some(ENDPOINT) {
            error(
                "invalid_url",
                format!(
                    "Invalid value for 'url': it must match the batch's endpoint '{ENDPOINT}'."
                ),
                Some("url"),
                n,
            );
        }
        let body = obj
            .get("body")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_else(Map::new);
        match (body.get("model").and_then(Value::as_str), &model) {
            (None, _) => error("missing_required_parameter", "Missing required parameter: 'body.model'.".into(), Some("body.model"), n),
            (Some(m), Some(first)) if m != first => error("mismatched_model", format!("The model '{m}' differs from '{first}' used in earlier lines; a batch takes one model."), Some("body.model"), n),
            (Some(m), _) => model = Some(m.to_string()),
        }
        requests.push((custom_id.to_string(), Value::Object(body)));
    }
    if !any {
        error(
            "empty_file",
            "The input file has no requests.".into(),
            None,
            0,
        );
    }
    if !errors.is_empty() {
        requests.clear();
    }
    (requests, errors)
}

/// The file object of `f`.
fn file_object(f: &File) -> Value {
    json!({
        "id": f.id,
        "object": "file",
        "bytes": f.bytes.len(),
        "created_at": f.created_at,
        "filename": f.filename,
        "purpose": f.purpose,
        "status": "processed",
        "expires_at": null,
        "status_details": null
    })
}

fn no_file(id: &str) -> Refusal {
    Refusal::NotFound(format!("No such File object: {id}"))
}

fn no_batch(id: &str) -> Refusal {
    Refusal::NotFound(format!("No batch found with id '{id}'."))
}

/// The store's id of a batch id (`batch_…`).
fn suffix(id: &str) -> &str {
    id.strip_prefix("batch_").unwrap_or(id)
}

/// An id made from a batch's id and a label, the same on every call.
fn derived_id(batch: &str, label: &str) -> String {
    hex_id(&mut SplitMix::new(fnv1a(&[
        batch.as_bytes(),
        label.as_bytes(),
    ])))
}

/// One part of a `multipart/form-data` body.
struct Part {
    name: String,
    filename: Option<String>,
    data: Bytes,
}

/// The parts of a `multipart/form-data` body with the boundary of `content_type`.
fn multipart(content_type: &str, body: &Bytes) -> Option<Vec<Part>> {
    let boundary = content_type
        .split(';')
        .find_map(|p| p.trim().strip_prefix("boundary="))?
        .trim_matches('"');
    let delim = format!("--{boundary}").into_bytes();
    let mut parts = Vec::new();
    let mut pos = find(body, &delim, 0)? + delim.len();
    loop {
        if body.get(pos..pos + 2) == Some(b"--") {
            return Some(parts);
        }
        let head_start = pos + 2; // the CRLF after the delimiter
        let head_end = find(body, b"\r\n\r\n", head_start)?;
        let next = find(body, &delim, head_end)?;
        let head = String::from_utf8_lossy(&body[head_start..head_end]);
        let data = body.slice(head_end + 4..next.saturating_sub(2).max(head_end + 4));
        let disposition = head
            .lines()
            .find(|l| l.to_ascii_lowercase().starts_with("content-disposition"))?;
        let param = |key: &str| {
            disposition.split(';').find_map(|p| {
                p.trim()
                    .strip_prefix(key)
                    .and_then(|v| v.strip_prefix('='))
                    .map(|v| v.trim_matches('"').to_string())
            })
        };
        parts.push(Part {
            name: param("name")?,
            filename: param("filename"),
            data,
        });
        pos = next + delim.len();
    }
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    hay.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|i| i + from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multipart_body_gives_its_fields_and_file() {
        let body = Bytes::from_static(
            b"--XyZ\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"in.jsonl\"\r\nContent-Type: application/octet-stream\r\n\r\n{\"a\":1}\n\r\n--XyZ--\r\n",
        );
        let parts = multipart("multipart/form-data; boundary=XyZ", &body).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(
            (parts[0].name.as_str(), &parts[0].data[..]),
            ("purpose", &b"batch"[..])
        );
        assert_eq!(parts[1].filename.as_deref(), Some("in.jsonl"));
        assert_eq!(&parts[1].data[..], b"{\"a\":1}\n");
    }

    #[test]
    fn input_file_with_two_models_or_a_repeated_custom_id_is_refused_with_line_numbers() {
        let line = |id: &str, m: &str| {
            json!({ "custom_id": id, "method": "POST", "url": ENDPOINT,
                    "body": { "model": m, "messages": [] } })
            .to_string()
        };
        let text = [line("a", "m"), line("a", "m"), line("b", "other")].join("\n");
        let (requests, errors) = validate(text.as_bytes());
        assert!(requests.is_empty());
        let codes: Vec<(&str, u64)> = errors
            .iter()
            .map(|e| (e["code"].as_str().unwrap(), e["line"].as_u64().unwrap()))
            .collect();
        assert_eq!(codes, [("duplicate_custom_id", 2), ("mismatched_model", 3)]);
        let (requests, errors) = validate([line("a", "m"), line("b", "m")].join("\n").as_bytes());
        assert_eq!((requests.len(), errors.len()), (2, 0));
    }
}
