//! Helpers shared by the simulator's HTTP tests: start a scenario on a free loopback port and
//! post requests to it with reqwest.

#![allow(dead_code)]

use serde_json::{json, Value};
use sim::{Scenario, SimHandle, SimKind, SimProvider};

/// An OpenAI-kind provider `name` serving `model`, answering instantly.
pub fn openai(name: &str, model: &str) -> SimProvider {
    let mut p = SimProvider::new(name, SimKind::Openai, &[model]);
    p.latency_ms = 0.0;
    p
}

/// An Anthropic-kind provider `name` serving `model`, answering instantly.
pub fn anthropic(name: &str, model: &str) -> SimProvider {
    let mut p = SimProvider::new(name, SimKind::Anthropic, &[model]);
    p.latency_ms = 0.0;
    p
}

/// Starts a simulator with these providers and seed on 127.0.0.1:0.
pub async fn start(seed: u64, providers: Vec<SimProvider>) -> SimHandle {
    let scenario = Scenario {
        seed: Some(seed),
        providers,
    };
    sim::start(scenario, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

/// An answer: status, headers and JSON body.
pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }
}

/// Posts `body` to `url` with extra headers.
pub async fn post(url: &str, headers: &[(&str, &str)], body: &Value) -> Answer {
    let mut req = reqwest::Client::new().post(url).json(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.json().await.unwrap();
    Answer {
        status,
        headers,
        body,
    }
}

/// Posts a one-message chat completion for `model` to an OpenAI-kind provider.
pub async fn chat(h: &SimHandle, provider: &str, model: &str, prompt: &str) -> Answer {
    let body = json!({ "model": model, "messages": [{ "role": "user", "content": prompt }] });
    post(
        &format!("{}/chat/completions", h.base_url(provider)),
        &[],
        &body,
    )
    .await
}

/// Posts a one-message request to an Anthropic-kind provider with the version header.
pub async fn message(h: &SimHandle, provider: &str, model: &str, prompt: &str) -> Answer {
    let body = json!({ "model": model, "max_tokens": 1024, "messages": [{ "role": "user", "content": prompt }] });
    let headers = [("anthropic-version", "2023-06-01")];
    post(
        &format!("{}/messages", h.base_url(provider)),
        &headers,
        &body,
    )
    .await
}
