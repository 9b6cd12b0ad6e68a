//! Anthropic's Message Batches API (`/v1/messages/batches`: create, retrieve, cancel, list,
//! results) in the shapes the official `anthropic` client parses. Requests are sent inline; the
//! results are JSONL in no particular order, one line per request, fetched from the batch's
//! absolute `results_url` once it has ended.

use crate::batch::{page_limit, Batch, LineResult, LineState, NewBatch, Phase};
use crate::scenario::SimKind;
use crate::server::{batch_provider, finish, json, line_result, ProviderState, Refusal, SimState};
use crate::text::{fnv1a, SplitMix};
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// The message-batch routes of every Anthropic-kind provider.
pub(crate) fn routes() -> Router<Arc<SimState>> {
    Router::new()
        .route("/{provider}/v1/messages/batches", post(create).get(list))
        .route("/{provider}/v1/messages/batches/{id}", get(retrieve))
        .route("/{provider}/v1/messages/batches/{id}/cancel", post(cancel))
        .route("/{provider}/v1/messages/batches/{id}/results", get(results))
}

/// Runs `f` on the provider if its batch API answers, and adds the usual headers.
fn answer(
    st: &SimState,
    provider: &str,
    headers: &HeaderMap,
    f: impl FnOnce(&ProviderState) -> Result<Response, Refusal>,
) -> Response {
    let r = batch_provider(st, provider, SimKind::Anthropic, headers).and_then(|p| f(&p));
    finish(st, SimKind::Anthropic, r)
}

/// Where results are fetched from: `http://HOST/<provider>/v1/messages/batches/`.
fn base_url(headers: &HeaderMap, provider: &str) -> String {
    let host = headers
        .get("host")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("127.0.0.1");
    format!("http://{host}/{provider}/v1/messages/batches/")
}

async fn create(
    State(st): State<Arc<SimState>>,
    Path(provider): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let base = base_url(&headers, &provider);
    answer(&st, &provider, &headers, |p| {
        let bad = |m: String| Refusal::BadRequest(m);
        let v: Value = serde_json::from_slice(&body)
            .map_err(|_| bad("There was an error parsing the body of your request".into()))?;
        let requests = v
            .get("requests")
            .and_then(Value::as_array)
            .filter(|r| !r.is_empty())
            .ok_or_else(|| bad("requests: Field required (a non-empty list)".into()))?;
        let mut seen = HashSet::new();
        let mut lines = Vec::with_capacity(requests.len());
        for (i, r) in requests.iter().enumerate() {
            let id = r
                .get("custom_id")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let valid_id = (1..=64).contains(&id.len())
                && id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_-".contains(c));
            if !valid_id {
                return Err(bad(format!(
                    "requests.{i}.custom_id: String should match pattern '^[a-zA-Z0-9_-]{{1,64}}$'"
                )));
            }
            if !seen.insert(id) {
                return Err(bad(format!(
                    "requests.{i}.custom_id: Duplicate custom_id '{id}'; each custom_id must be unique within a batch."
                )));
            }
            let params = r
                .get("params")
                .filter(|p| p.is_object())
                .ok_or_else(|| bad(format!("requests.{i}.params: Field required")))?;
            lines.push((id.to_string(), line_result(&st, p, params)));
        }
        let new = NewBatch {
            id: st.new_id(),
            lines,
            invalid: Vec::new(),
            input_file_id: String::new(),
            endpoint: String::new(),
            completion_window: String::new(),
            metadata: Value::Null,
            error_500: crate::anthropic::error_body(&Refusal::Status(500)).1,
        };
        let spec = p.spec.batch.clone().unwrap_or_default();
        let now = p.now_s();
        let out = p.with_batches(|s| object(s.create(&spec, p.seed(), now, new), 0.0, &base));
        Ok(json(200, out))
    })
}

async fn retrieve(
    State(st): State<Arc<SimState>>,
    Path((provider, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let base = base_url(&headers, &provider);
    answer(&st, &provider, &headers, |p| {
        let now = p.now_s();
        p.with_batches(|s| {
            let (b, age) = s.at(suffix(&id), now).ok_or_else(|| no_batch(&id))?;
            Ok(json(200, object(b, age, &base)))
        })
    })
}

async fn cancel(
    State(st): State<Arc<SimState>>,
    Path((provider, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let base = base_url(&headers, &provider);
    answer(&st, &provider, &headers, |p| {
        let now = p.now_s();
        p.with_batches(|s| {
            let (b, age) = s.cancel(suffix(&id), now).ok_or_else(|| no_batch(&id))?;
            Ok(json(200, object(b, age, &base)))
        })
    })
}

async fn list(
    State(st): State<Arc<SimState>>,
    Path(provider): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let base = base_url(&headers, &provider);
    answer(&st, &provider, &headers, |p| {
        let limit = page_limit(q.get("limit").map(String::as_str), 20, 1000).ok_or_else(|| {
            Refusal::BadRequest(
                "limit: Input should be greater than or equal to 1 and at most 1000".into(),
            )
        })?;
        let after = q.get("after_id").map(|a| suffix(a).to_string());
        let before = q.get("before_id").map(|a| suffix(a).to_string());
        let now = p.now_s();
        let l = p.with_batches(|s| {
            let object = |b: &Batch, age| object(b, age, &base);
            s.list(after.as_deref(), before.as_deref(), limit, now, object)
        });
        Ok(json(
            200,
            json!({ "data": l.data, "has_more": l.has_more, "first_id": l.first_id, "last_id": l.last_id }),
        ))
    })
}

async fn results(
    State(st): State<Arc<SimState>>,
    Path((provider, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    answer(&st, &provider, &headers, |p| {
        let now = p.now_s();
        let text = p.with_batches(|s| {
            let (b, age) = s.at(suffix(&id), now).ok_or_else(|| no_batch(&id))?;
            if !b.phase(age).ended() {
                return Err(Refusal::NotFound(format!(
                    "Message Batch {id} has not yet ended; its results are not available."
                )));
            }
            Ok(results_jsonl(b, age))
        })?;
        Ok(([("content-type", "application/x-jsonl")], text).into_response())
    })
}

/// One result line per request, in an order shuffled by the batch's id (Anthropic promises no
/// order; a client that relies on one breaks here too).
fn results_jsonl(b: &Batch, age: f64) -> String {
    let mut lines: Vec<String> = b
        .lines
        .iter()
        .map(|l| {
            let result = match (b.line_state(l, age), &l.result) {
                (LineState::Succeeded, LineResult::Ok { body, .. }) => {
                    json!({ "type": "succeeded", "message": body })
                }
                (LineState::Errored, LineResult::Err { body, .. }) => {
                    json!({ "type": "errored", "error": body })
                }
                (LineState::Expired, _) => json!({ "type": "expired" }),
                _ => json!({ "type": "canceled" }),
            };
            json!({ "custom_id": l.custom_id, "result": result }).to_string()
        })
        .collect();
    let mut rng = SplitMix::new(fnv1a(&[b.id.as_bytes(), b"results"]));
    for i in (1..lines.len()).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        lines.swap(i, j);
    }
    let mut text = lines.join("\n");
    text.push('\n');
    text
}

/// The `message_batch` object at `age` seconds after creation. Until the batch ends every
/// request counts as `processing`, as Anthropic's do.
fn object(b: &Batch, age: f64, base: &str) -> Value {
    let phase = b.phase(age);
    let ended = phase.ended();
    let [_, succeeded, errored, canceled, expired] = b.counts(age);
    let counts = if ended {
        json!({ "processing": 0, "succeeded": succeeded, "errored": errored,
                "canceled": canceled, "expired": expired })
    } else {
        json!({ "processing": b.lines.len(), "succeeded": 0, "errored": 0,
                "canceled": 0, "expired": 0 })
    };
    let processing_status = match phase {
        _ if ended => "ended",
        Phase::Cancelling => "canceling",
        _ => "in_progress",
    };
    let at = |age: Option<f64>| age.map(|a| rfc3339(b.unix_at(a)));
    let ended_at = if ended { b.entered(phase, age) } else { None };
    let id = format!("msgbatch_{}", b.id);
    json!({
        "id": id,
        "type": "message_batch",
        "processing_status": processing_status,
        "request_counts": counts,
        "ended_at": at(ended_at),
        "created_at": rfc3339(b.created_unix),
        "expires_at": rfc3339(b.created_unix + b.window_s),
        "archived_at": null,
        "cancel_initiated_at": at(b.cancel_at.filter(|c| *c <= age)),
        "results_url": ended.then(|| format!("{base}{id}/results"))
    })
}

/// An RFC 3339 time (UTC, microseconds) of a fractional Unix time.
fn rfc3339(unix: f64) -> String {
    chrono::DateTime::from_timestamp_micros((unix * 1e6) as i64)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

fn no_batch(id: &str) -> Refusal {
    Refusal::NotFound(format!("No Message Batch found with id {id}"))
}

/// The store's id of a batch id (`msgbatch_…`).
fn suffix(id: &str) -> &str {
    id.strip_prefix("msgbatch_").unwrap_or(id)
}
