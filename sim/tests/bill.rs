//! The provider's bill over real HTTP: `GET /_sim/stats` charges every answered request and
//! every succeeded batch line at the scenario's prices, split into uncached input, cache reads,
//! cache writes and output — the same sum a client computes from the usages it was sent.

mod common;

use common::{post, Answer};
use serde_json::{json, Value};
use sim::{Scenario, SimHandle};
use std::time::Duration;

const SCENARIO: &str = r#"
seed = 3
[[providers]]
name = "o"
kind = "openai"
models = ["m", "free"]
latency_ms = 0
prices = { "m" = { input_per_mtok = 2.0, output_per_mtok = 8.0 } }
flex = { concurrency = 4, multiplier = 0.5 }

[[providers]]
name = "a"
kind = "anthropic"
models = ["claude"]
latency_ms = 0
prices = { "claude" = { input_per_mtok = 3.0, output_per_mtok = 15.0, cache_read_per_mtok = 0.3, cache_write_5m_per_mtok = 3.75, cache_write_1h_per_mtok = 6.0 } }
batch = { turnaround_s = 0.5, discount = 0.5 }
"#;

/// What the test expects of a provider's stats, summed from the usages it was sent.
#[derive(Debug, Default)]
struct Expected {
    requests: u64,
    input: u64,
    cached: u64,
    written: u64,
    output: u64,
    usd: f64,
}

impl Expected {
    /// Adds an OpenAI `usage` at input and output prices `(i, o)` (cached reads at half the
    /// input price, the OpenAI kind's default), times `factor`.
    fn openai(&mut self, usage: &Value, price: Option<(f64, f64)>, factor: f64) {
        let n = |v: &Value| v.as_u64().unwrap();
        let prompt = n(&usage["prompt_tokens"]);
        let cached = n(&usage["prompt_tokens_details"]["cached_tokens"]);
        let output = n(&usage["completion_tokens"]);
        self.requests += 1;
        self.input += prompt - cached;
        self.cached += cached;
        self.output += output;
        if let Some((i, o)) = price {
            let list = (prompt - cached) as f64 * i + cached as f64 * i * 0.5 + output as f64 * o;
            self.usd += factor * list / 1e6;
        }
    }

    /// Adds an Anthropic `usage` at the scenario's `claude` prices, times `factor`.
    fn anthropic(&mut self, usage: &Value, factor: f64) {
        let n = |v: &Value| v.as_u64().unwrap();
        let input = n(&usage["input_tokens"]);
        let read = n(&usage["cache_read_input_tokens"]);
        let w5 = n(&usage["cache_creation"]["ephemeral_5m_input_tokens"]);
        let w1 = n(&usage["cache_creation"]["ephemeral_1h_input_tokens"]);
        assert_eq!(w5 + w1, n(&usage["cache_creation_input_tokens"]));
        let output = n(&usage["output_tokens"]);
        self.requests += 1;
        self.input += input;
        self.cached += read;
        self.written += w5 + w1;
        self.output += output;
        let list = input as f64 * 3.0
            + read as f64 * 0.3
            + w5 as f64 * 3.75
            + w1 as f64 * 6.0
            + output as f64 * 15.0;
        self.usd += factor * list / 1e6;
    }

    fn check(&self, stats: &Value) {
        let n = |k: &str| stats[k].as_u64().unwrap();
        assert_eq!(n("billed_requests"), self.requests, "{stats}");
        assert_eq!(n("input_tokens"), self.input, "{stats}");
        assert_eq!(n("cached_tokens"), self.cached, "{stats}");
        assert_eq!(n("cache_write_tokens"), self.written, "{stats}");
        assert_eq!(n("output_tokens"), self.output, "{stats}");
        let bill = stats["bill_usd"].as_f64().unwrap();
        assert!(self.usd > 0.0);
        assert!(
            ((bill - self.usd) / self.usd).abs() < 1e-9,
            "billed {bill}, expected {}",
            self.usd
        );
    }
}

async fn chat(h: &SimHandle, model: &str, system: &str, user: &str, flex: bool) -> Answer {
    let mut body = json!({ "model": model, "messages": [
        { "role": "system", "content": system }, { "role": "user", "content": user }
    ] });
    if flex {
        body["service_tier"] = json!("flex");
    }
    post(&format!("{}/chat/completions", h.base_url("o")), &[], &body).await
}

/// An Anthropic request body with a system prompt cached for `ttl` (none: no breakpoint).
fn message_body(system: &str, ttl: Option<&str>, user: &str) -> Value {
    let mut block = json!({ "type": "text", "text": system });
    if let Some(ttl) = ttl {
        block["cache_control"] = json!({ "type": "ephemeral", "ttl": ttl });
    }
    json!({ "model": "claude", "max_tokens": 64, "system": [block],
            "messages": [{ "role": "user", "content": user }] })
}

const ANTHROPIC: [(&str, &str); 1] = [("anthropic-version", "2023-06-01")];

#[tokio::test]
async fn stats_bill_equals_the_usages_sent_priced_at_the_scenario_prices() {
    let scenario = Scenario::from_toml("bill.toml", SCENARIO).unwrap();
    let h = sim::start(scenario, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let long = "abcd".repeat(2000);
    let other = "wxyz".repeat(1500);

    let mut o = Expected::default();
    for (model, system, user, flex) in [
        ("m", long.as_str(), "first", false),
        ("m", long.as_str(), "second", false),
        ("m", "short", "third", false),
        ("m", long.as_str(), "on flex", true),
        ("free", long.as_str(), "unpriced", false),
    ] {
        let a = chat(&h, model, system, user, flex).await;
        assert_eq!(a.status, 200, "{}", a.body);
        let price = (model == "m").then_some((2.0, 8.0));
        o.openai(&a.body["usage"], price, if flex { 0.5 } else { 1.0 });
    }
    assert!(o.cached > 0, "the repeated prefix was read from the cache");
    assert_eq!(chat(&h, "nope", "x", "y", false).await.status, 404);

    let mut a = Expected::default();
    let url = format!("{}/messages", h.base_url("a"));
    for body in [
        message_body(&long, Some("5m"), "hi"),
        message_body(&long, Some("5m"), "hi again"),
        message_body(&other, Some("1h"), "hi"),
        message_body("no cache", None, "hi"),
    ] {
        let r = post(&url, &ANTHROPIC, &body).await;
        assert_eq!(r.status, 200, "{}", r.body);
        a.anthropic(&r.body["usage"], 1.0);
    }
    assert!(a.cached > 0 && a.written > 0);

    // Two batch lines on the cached system prompt, billed at half price once the batch ends.
    let requests = json!({ "requests": [
        { "custom_id": "b1", "params": message_body(&long, Some("5m"), "batch one") },
        { "custom_id": "b2", "params": message_body(&other, Some("1h"), "batch two") }
    ] });
    let b = post(&format!("{url}/batches"), &ANTHROPIC, &requests).await;
    assert_eq!(b.status, 200, "{}", b.body);
    let batch_url = format!("{url}/batches/{}", b.body["id"].as_str().unwrap());
    let ended = wait_until_ended(&batch_url).await;
    let results = reqwest::Client::new()
        .get(ended["results_url"].as_str().unwrap())
        .header("anthropic-version", "2023-06-01")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in results.lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["result"]["type"], "succeeded", "{v}");
        a.anthropic(&v["result"]["message"]["usage"], 0.5);
    }

    let stats: Value = reqwest::get(format!("http://{}/_sim/stats", h.addr()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    o.check(&stats["o"]);
    a.check(&stats["a"]);
    assert_eq!(stats["a"]["batch_lines_billed"], 2);
    assert_eq!(h.stats("o").bill_usd.value(), stats["o"]["bill_usd"]);
    h.shutdown().await;
}

/// Polls a message batch until it has ended (10 s at most); answers it.
async fn wait_until_ended(url: &str) -> Value {
    for _ in 0..200 {
        let b: Value = reqwest::get(url).await.unwrap().json().await.unwrap();
        if b["processing_status"] == "ended" {
            return b;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("batch at {url} never ended");
}
