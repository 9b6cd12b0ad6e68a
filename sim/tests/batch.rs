//! The batch APIs (OpenAI files + batches, Anthropic message batches) and OpenAI's flex tier
//! over real HTTP: lifecycles on the simulated clock, cancel, expiry, line errors, outages,
//! listing, flex capacity, and the stats that bill each batch once.

mod common;

use common::{anthropic, chat, openai, post, start, Answer};
use serde_json::{json, Value};
use sim::{SimBatch, SimFlex, SimHandle, Window};
use std::time::Duration;

/// A batch section with the given turnaround and otherwise the defaults.
fn batch(turnaround_s: f64) -> SimBatch {
    SimBatch {
        turnaround_s,
        ..SimBatch::default()
    }
}

/// GETs `url`: status and JSON body (`Null` if the body is not JSON).
async fn get(url: &str) -> (u16, Value) {
    let resp = reqwest::get(url).await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// GETs `url` with the Anthropic version header: status and body text.
async fn get_text(url: &str) -> (u16, String) {
    let resp = reqwest::Client::new()
        .get(url)
        .header("anthropic-version", "2023-06-01")
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

/// Uploads `lines` as a batch input file to OpenAI-kind `provider`; answers its file object.
async fn upload(h: &SimHandle, provider: &str, lines: &[Value]) -> (u16, Value) {
    let mut content = String::new();
    for l in lines {
        content.push_str(&l.to_string());
        content.push('\n');
    }
    let body = format!(
        "--b0undary\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n--b0undary\r\nContent-Disposition: form-data; name=\"file\"; filename=\"in.jsonl\"\r\nContent-Type: application/jsonl\r\n\r\n{content}\r\n--b0undary--\r\n"
    );
    let resp = reqwest::Client::new()
        .post(format!("{}/files", h.base_url(provider)))
        .header("content-type", "multipart/form-data; boundary=b0undary")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// A batch input line asking `model` about `prompt`.
fn line(custom_id: &str, model: &str, prompt: &str) -> Value {
    json!({ "custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
            "body": { "model": model, "messages": [{ "role": "user", "content": prompt }] } })
}

/// Uploads `n` lines for `model` and creates a batch of them; answers the batch object.
async fn openai_batch(h: &SimHandle, provider: &str, model: &str, n: usize) -> Value {
    let lines: Vec<Value> = (0..n)
        .map(|i| line(&format!("r{i}"), model, &format!("question {i}")))
        .collect();
    let (status, file) = upload(h, provider, &lines).await;
    assert_eq!(status, 200, "{file}");
    let body = json!({ "input_file_id": file["id"], "endpoint": "/v1/chat/completions",
                       "completion_window": "24h", "metadata": { "run": "r1" } });
    let a = post(&format!("{}/batches", h.base_url(provider)), &[], &body).await;
    assert_eq!(a.status, 200, "{}", a.body);
    a.body
}

/// Polls the batch at `url` until `done` holds of it (10 s at most).
async fn wait_for(url: &str, done: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..200 {
        let (status, b) = get(url).await;
        assert_eq!(status, 200, "{b}");
        if done(&b) {
            return b;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("batch at {url} never got there");
}

/// The URL of OpenAI batch object `b` on `provider`.
fn batch_url(h: &SimHandle, provider: &str, b: &Value) -> String {
    format!(
        "{}/batches/{}",
        h.base_url(provider),
        b["id"].as_str().unwrap()
    )
}

/// The JSON values of JSONL `text`, one a line.
fn jsonl(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The JSON lines of OpenAI file `id` (none for a null id).
async fn file_lines(h: &SimHandle, provider: &str, id: &Value) -> Vec<Value> {
    let Some(id) = id.as_str() else {
        return Vec::new();
    };
    let url = format!("{}/files/{id}/content", h.base_url(provider));
    jsonl(&reqwest::get(url).await.unwrap().text().await.unwrap())
}

/// An Anthropic batch request `custom_id` asking `model` about `prompt`.
fn message_request(custom_id: &str, model: &str, prompt: &str) -> Value {
    json!({ "custom_id": custom_id, "params": { "model": model, "max_tokens": 64,
            "messages": [{ "role": "user", "content": prompt }] } })
}

/// Creates a message batch of `requests` on Anthropic-kind `provider`; answers the reply.
async fn anthropic_batch(h: &SimHandle, provider: &str, requests: &[Value]) -> Answer {
    post(
        &format!("{}/messages/batches", h.base_url(provider)),
        &[("anthropic-version", "2023-06-01")],
        &json!({ "requests": requests }),
    )
    .await
}

#[tokio::test]
async fn openai_batch_completes_with_output_and_error_files_and_exact_counts() {
    let mut p = openai("o", "m");
    p.batch = Some(SimBatch {
        line_errors: 0.3,
        ..batch(0.6)
    });
    let h = start(5, vec![p]).await;
    let b = openai_batch(&h, "o", "m", 30).await;
    assert!(b["id"].as_str().unwrap().starts_with("batch_"));
    assert_eq!(b["status"], "validating");
    assert_eq!(b["metadata"]["run"], "r1");
    let url = batch_url(&h, "o", &b);
    let done = wait_for(&url, |b| b["status"] == "completed").await;
    let counts = &done["request_counts"];
    let (ok, failed) = (
        counts["completed"].as_u64().unwrap(),
        counts["failed"].as_u64().unwrap(),
    );
    assert_eq!((counts["total"].as_u64().unwrap(), ok + failed), (30, 30));
    assert!(failed > 0 && ok > 0, "{counts}");
    for field in [
        "in_progress_at",
        "finalizing_at",
        "completed_at",
        "expires_at",
    ] {
        assert!(done[field].is_i64(), "{field}: {done}");
    }
    let out = file_lines(&h, "o", &done["output_file_id"]).await;
    let err = file_lines(&h, "o", &done["error_file_id"]).await;
    assert_eq!((out.len() as u64, err.len() as u64), (ok, failed));
    assert!(err.iter().all(|e| e["response"]["status_code"] == 500));
    // A line answers exactly what the realtime endpoint answers for the same body.
    let first = &out[0];
    assert!(first["id"].as_str().unwrap().starts_with("batch_req_"));
    assert_eq!(first["response"]["status_code"], 200);
    let i: usize = first["custom_id"].as_str().unwrap()[1..].parse().unwrap();
    let realtime = chat(&h, "o", "m", &format!("question {i}")).await.body;
    let body = &first["response"]["body"];
    assert_eq!(
        body["choices"][0]["message"]["content"],
        realtime["choices"][0]["message"]["content"]
    );
    assert_eq!(body["usage"], realtime["usage"]);
    let s = h.stats("o");
    let input: u64 = out
        .iter()
        .map(|l| {
            l["response"]["body"]["usage"]["prompt_tokens"]
                .as_u64()
                .unwrap()
        })
        .sum();
    assert_eq!(
        (
            s.batches_created,
            s.batch_lines_billed,
            s.batch_input_tokens
        ),
        (1, ok, input)
    );
    // Polling again bills nothing more.
    wait_for(&url, |b| b["status"] == "completed").await;
    assert_eq!(h.stats("o").batch_lines_billed, ok);
    h.shutdown().await;
}

#[tokio::test]
async fn cancelled_openai_batch_keeps_its_finished_lines_and_cancels_the_rest() {
    let mut p = openai("o", "m");
    p.batch = Some(batch(3.0));
    let h = start(5, vec![p]).await;
    let b = openai_batch(&h, "o", "m", 40).await;
    let id = b["id"].as_str().unwrap();
    let url = format!("{}/batches/{id}", h.base_url("o"));
    wait_for(&url, |b| {
        b["request_counts"]["completed"].as_u64() > Some(5)
    })
    .await;
    let c = post(&format!("{url}/cancel"), &[], &json!({})).await;
    assert_eq!(c.body["status"], "cancelling");
    assert!(c.body["cancelling_at"].is_i64());
    let done = wait_for(&url, |b| b["status"] == "cancelled").await;
    let ok = done["request_counts"]["completed"].as_u64().unwrap();
    assert!((6..40).contains(&ok), "{done}");
    let out = file_lines(&h, "o", &done["output_file_id"]).await;
    let err = file_lines(&h, "o", &done["error_file_id"]).await;
    assert_eq!((out.len() as u64, err.len() as u64), (ok, 40 - ok));
    assert!(err
        .iter()
        .all(|e| e["error"]["code"] == "batch_cancelled" && e["response"].is_null()));
    // Cancelling again changes nothing and counts nothing.
    let again = post(&format!("{url}/cancel"), &[], &json!({})).await;
    assert_eq!(again.body["status"], "cancelled");
    let s = h.stats("o");
    assert_eq!((s.batches_cancelled, s.batch_lines_billed), (1, ok));
    h.shutdown().await;
}

#[tokio::test]
async fn batch_listed_in_expire_ends_expired_with_the_asked_fraction_done() {
    let mut p = openai("o", "m");
    p.batch = Some(SimBatch {
        expire: vec![2],
        expire_done: 0.5,
        ..batch(0.4)
    });
    let h = start(5, vec![p]).await;
    let first = openai_batch(&h, "o", "m", 10).await;
    let second = openai_batch(&h, "o", "m", 10).await;
    wait_for(&batch_url(&h, "o", &first), |b| b["status"] == "completed").await;
    let done = wait_for(&batch_url(&h, "o", &second), |b| b["status"] == "expired").await;
    assert!(done["expired_at"].is_i64());
    assert_eq!(done["request_counts"]["completed"], 5);
    let err = file_lines(&h, "o", &done["error_file_id"]).await;
    assert_eq!(err.len(), 5);
    assert!(err.iter().all(|e| e["error"]["code"] == "batch_expired"));
    assert_eq!(h.stats("o").batch_lines_billed, 15);
    h.shutdown().await;
}

#[tokio::test]
async fn batch_of_a_model_not_served_fails_every_line_with_the_realtime_404() {
    let mut p = openai("o", "m");
    p.batch = Some(batch(0.3));
    let h = start(5, vec![p]).await;
    let b = openai_batch(&h, "o", "nope", 3).await;
    let url = batch_url(&h, "o", &b);
    let done = wait_for(&url, |b| b["status"] == "completed").await;
    assert_eq!(done["request_counts"]["failed"], 3);
    assert!(done["output_file_id"].is_null());
    let err = file_lines(&h, "o", &done["error_file_id"]).await;
    assert_eq!(err[0]["response"]["status_code"], 404);
    assert_eq!(
        err[0]["response"]["body"]["error"]["code"],
        "model_not_found"
    );
    assert_eq!(h.stats("o").batch_lines_billed, 0);
    h.shutdown().await;
}

#[tokio::test]
async fn bad_input_file_gives_a_failed_batch_with_errors_data() {
    let mut p = openai("o", "m");
    p.batch = Some(batch(0.3));
    let h = start(5, vec![p]).await;
    let lines = [line("a", "m", "x"), line("a", "m", "y")];
    let (_, file) = upload(&h, "o", &lines).await;
    let body = json!({ "input_file_id": file["id"], "endpoint": "/v1/chat/completions",
                       "completion_window": "24h" });
    let b = post(&format!("{}/batches", h.base_url("o")), &[], &body).await;
    let url = batch_url(&h, "o", &b.body);
    let done = wait_for(&url, |b| b["status"] == "failed").await;
    assert_eq!(done["errors"]["data"][0]["code"], "duplicate_custom_id");
    assert_eq!(done["errors"]["data"][0]["line"], 2);
    assert!(done["failed_at"].is_i64() && done["in_progress_at"].is_null());
    h.shutdown().await;
}

#[tokio::test]
async fn batch_outage_answers_503_on_files_and_batches_then_ends() {
    let mut p = openai("o", "m");
    p.batch = Some(SimBatch {
        outages: vec![Window {
            from_s: 0.0,
            to_s: 0.4,
        }],
        ..batch(0.3)
    });
    let h = start(5, vec![p]).await;
    let (status, body) = upload(&h, "o", &[line("a", "m", "x")]).await;
    assert_eq!(status, 503);
    assert_eq!(body["error"]["type"], "server_error");
    assert_eq!(get(&format!("{}/batches", h.base_url("o"))).await.0, 503);
    // The realtime endpoint is not in the batch outage.
    assert_eq!(chat(&h, "o", "m", "hi").await.status, 200);
    tokio::time::sleep(Duration::from_millis(450)).await;
    openai_batch(&h, "o", "m", 1).await;
    h.shutdown().await;
}

#[tokio::test]
async fn provider_without_a_batch_section_answers_404_on_batch_routes() {
    let h = start(5, vec![openai("o", "m"), anthropic("a", "c")]).await;
    assert_eq!(get(&format!("{}/batches", h.base_url("o"))).await.0, 404);
    assert_eq!(upload(&h, "o", &[line("a", "m", "x")]).await.0, 404);
    let (status, _) = get_text(&format!("{}/messages/batches", h.base_url("a"))).await;
    assert_eq!(status, 404);
    h.shutdown().await;
}

#[tokio::test]
async fn batch_list_runs_newest_first_with_an_after_cursor_and_keeps_metadata() {
    let mut p = openai("o", "m");
    p.batch = Some(batch(0.3));
    let h = start(5, vec![p]).await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(openai_batch(&h, "o", "m", 1).await["id"].clone());
    }
    ids.reverse();
    let base = h.base_url("o");
    let (_, page) = get(&format!("{base}/batches?limit=2")).await;
    assert_eq!(page["object"], "list");
    assert_eq!(page["data"].as_array().unwrap().len(), 2);
    assert_eq!((&page["first_id"], &page["last_id"]), (&ids[0], &ids[1]));
    assert_eq!(page["has_more"], true);
    assert_eq!(page["data"][0]["metadata"]["run"], "r1");
    let after = ids[3].as_str().unwrap();
    let (_, page) = get(&format!("{base}/batches?limit=2&after={after}")).await;
    assert_eq!(page["data"][0]["id"], ids[4]);
    assert_eq!(page["has_more"], false);
    h.shutdown().await;
}

#[tokio::test]
async fn batch_lines_do_not_consume_the_realtime_rpm() {
    let mut p = openai("o", "m");
    p.rpm = Some(2);
    p.batch = Some(batch(0.3));
    let h = start(5, vec![p]).await;
    let b = openai_batch(&h, "o", "m", 10).await;
    let url = batch_url(&h, "o", &b);
    let done = wait_for(&url, |b| b["status"] == "completed").await;
    assert_eq!(done["request_counts"]["completed"], 10);
    assert_eq!(chat(&h, "o", "m", "a").await.status, 200);
    assert_eq!(chat(&h, "o", "m", "b").await.status, 200);
    assert_eq!(chat(&h, "o", "m", "c").await.status, 429);
    let s = h.stats("o");
    assert_eq!((s.requests, s.batch_lines_billed), (3, 10));
    h.shutdown().await;
}

#[tokio::test]
async fn flex_beyond_its_capacity_answers_429_resource_unavailable_then_answers_when_a_slot_frees()
{
    let mut p = openai("o", "m");
    p.latency_ms = 300.0;
    p.concurrency = Some(1);
    p.flex = Some(SimFlex {
        concurrency: 1,
        ..SimFlex::default()
    });
    let h = start(5, vec![p]).await;
    let url = format!("{}/chat/completions", h.base_url("o"));
    let flex = json!({ "model": "m", "service_tier": "flex",
                       "messages": [{ "role": "user", "content": "hi" }] });
    let (a, b, c) = tokio::join!(
        post(&url, &[], &flex),
        async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            post(&url, &[], &flex).await
        },
        async {
            // The realtime slot is its own: a flex request in flight does not take it.
            tokio::time::sleep(Duration::from_millis(100)).await;
            chat(&h, "o", "m", "realtime").await
        }
    );
    assert_eq!(
        (a.status, a.body["service_tier"].as_str()),
        (200, Some("flex"))
    );
    assert_eq!(b.status, 429);
    assert_eq!(b.body["error"]["code"], "resource_unavailable");
    assert!(b.body["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("Resource Unavailable"));
    assert_eq!(
        (c.status, c.body["service_tier"].as_str()),
        (200, Some("default"))
    );
    let again = post(&url, &[], &flex).await;
    assert_eq!(again.status, 200);
    let s = h.stats("o");
    assert_eq!((s.flex_requests, s.flex_rejected), (2, 1));
    h.shutdown().await;
}

#[tokio::test]
async fn flex_request_to_a_provider_without_flex_answers_400() {
    let h = start(5, vec![openai("o", "m")]).await;
    let flex = json!({ "model": "m", "service_tier": "flex",
                       "messages": [{ "role": "user", "content": "hi" }] });
    let a = post(&format!("{}/chat/completions", h.base_url("o")), &[], &flex).await;
    assert_eq!(a.status, 400);
    assert_eq!(a.body["error"]["type"], "invalid_request_error");
    assert_eq!(h.stats("o").flex_requests, 0);
    h.shutdown().await;
}

#[tokio::test]
async fn anthropic_batch_counts_processing_until_it_ends_then_gives_unordered_results() {
    let mut p = anthropic("a", "claude");
    p.batch = Some(batch(0.8));
    let h = start(5, vec![p]).await;
    let base = h.base_url("a");
    let mut requests: Vec<Value> = (0..20)
        .map(|i| message_request(&format!("r{i}"), "claude", &format!("q{i}")))
        .collect();
    requests.push(message_request("bad", "nope", "q0"));
    let b = anthropic_batch(&h, "a", &requests).await;
    assert_eq!(b.status, 200, "{}", b.body);
    assert_eq!(b.body["type"], "message_batch");
    assert_eq!(b.body["processing_status"], "in_progress");
    assert_eq!(b.body["request_counts"]["processing"], 21);
    assert!(b.body["results_url"].is_null());
    let id = b.body["id"].as_str().unwrap();
    assert!(id.starts_with("msgbatch_"));
    let url = format!("{base}/messages/batches/{id}");
    let done = wait_for(&url, |b| b["processing_status"] == "ended").await;
    let c = &done["request_counts"];
    assert_eq!(
        (&c["processing"], &c["succeeded"], &c["errored"]),
        (&json!(0), &json!(20), &json!(1))
    );
    let results_url = done["results_url"].as_str().unwrap();
    assert_eq!(results_url, format!("{url}/results"));
    let (status, text) = get_text(results_url).await;
    assert_eq!(status, 200);
    let lines = jsonl(&text);
    assert_eq!(lines.len(), 21);
    let order: Vec<&str> = lines
        .iter()
        .map(|l| l["custom_id"].as_str().unwrap())
        .collect();
    let mut sorted = order.clone();
    sorted.sort_by_key(|c| c[1..].parse::<usize>().unwrap_or(usize::MAX));
    assert_ne!(order, sorted, "results came back in request order");
    let bad = lines.iter().find(|l| l["custom_id"] == "bad").unwrap();
    assert_eq!(bad["result"]["type"], "errored");
    assert_eq!(bad["result"]["error"]["error"]["type"], "not_found_error");
    let ok = lines.iter().find(|l| l["custom_id"] == "r3").unwrap();
    assert_eq!(ok["result"]["type"], "succeeded");
    let realtime = common::message(&h, "a", "claude", "q3").await.body;
    assert_eq!(ok["result"]["message"]["content"], realtime["content"]);
    assert_eq!(h.stats("a").batch_lines_billed, 20);
    h.shutdown().await;
}

#[tokio::test]
async fn canceled_anthropic_batch_ends_with_canceled_results_for_unfinished_requests() {
    let mut p = anthropic("a", "claude");
    p.batch = Some(batch(3.0));
    let h = start(5, vec![p]).await;
    let base = h.base_url("a");
    let requests: Vec<Value> = (0..30)
        .map(|i| message_request(&format!("r{i}"), "claude", &format!("q{i}")))
        .collect();
    let b = anthropic_batch(&h, "a", &requests).await;
    let url = format!("{base}/messages/batches/{}", b.body["id"].as_str().unwrap());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let version = [("anthropic-version", "2023-06-01")];
    let c = post(&format!("{url}/cancel"), &version, &json!({})).await;
    assert_eq!(c.body["processing_status"], "canceling");
    assert!(c.body["cancel_initiated_at"].is_string());
    let done = wait_for(&url, |b| b["processing_status"] == "ended").await;
    let (ok, canceled) = (
        done["request_counts"]["succeeded"].as_u64().unwrap(),
        done["request_counts"]["canceled"].as_u64().unwrap(),
    );
    assert!(ok > 0 && canceled > 0 && ok + canceled == 30, "{done}");
    let (_, text) = get_text(done["results_url"].as_str().unwrap()).await;
    let kinds: Vec<Value> = jsonl(&text)
        .iter()
        .map(|l| l["result"]["type"].clone())
        .collect();
    assert_eq!(
        kinds.iter().filter(|k| *k == "canceled").count() as u64,
        canceled
    );
    let s = h.stats("a");
    assert_eq!((s.batches_cancelled, s.batch_lines_billed), (1, ok));
    h.shutdown().await;
}
