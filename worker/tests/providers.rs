//! The OpenAI and Anthropic clients against the provider simulator over real HTTP: answers,
//! usage, and the classification of every kind of failure.

use schemas::{ChatMessage, Limits, ModelOffer, ProviderKind, ProviderSpec};
use serde_json::{json, Value};
use sim::{SimHandle, SimKind, SimProvider, Window};
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use worker::provider::{build, ChatRequest, ErrorClass, Provider, ProviderError};

const KEY: &str = "sk-sim-secret-key";

fn sim_provider(name: &str, kind: SimKind, model: &str) -> SimProvider {
    let mut p = SimProvider::new(name, kind, &[model]);
    p.latency_ms = 0.0;
    p.api_key = Some(KEY.into());
    p
}

async fn start(providers: Vec<SimProvider>) -> SimHandle {
    let scenario = sim::Scenario {
        seed: Some(5),
        providers,
    };
    sim::start(scenario, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

fn spec(
    name: &str,
    kind: ProviderKind,
    base_url: String,
    key_file: Option<&std::path::Path>,
) -> ProviderSpec {
    ProviderSpec {
        name: name.into(),
        kind,
        base_url,
        api_key_env: None,
        api_key_file: key_file.map(|p| p.display().to_string()),
        limits: Limits::default(),
        models: vec![ModelOffer {
            model: "m".into(),
            id: "m".into(),
            input_per_mtok: Some(1.0),
            output_per_mtok: Some(1.0),
            gpu_per_hour: None,
            tokens_per_second: None,
            context: None,
            ..ModelOffer::default()
        }],
    }
}

fn key_file(key: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    writeln!(f, "  {key}  ").unwrap();
    f
}

/// A client for simulated provider `name` authenticating with `key`.
fn client(h: &SimHandle, name: &str, kind: ProviderKind, key: &str) -> Arc<dyn Provider> {
    let f = key_file(key);
    let p = build(
        &spec(name, kind, h.base_url(name), Some(f.path())),
        reqwest::Client::new(),
        Duration::from_secs(5),
    );
    p.unwrap()
}

fn request(model: &str, messages: Value, max_tokens: Option<u32>) -> ChatRequest {
    let messages: Vec<ChatMessage> = serde_json::from_value(messages).unwrap();
    ChatRequest {
        model_id: model.into(),
        messages,
        max_tokens,
        params: Default::default(),
    }
}

fn hello(model: &str) -> ChatRequest {
    // 8 + 11 characters over 4, rounded up, plus 4 per message: 5 + 8 = 13 prompt tokens.
    let msgs = json!([{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there"}]);
    request(model, msgs, None)
}

async fn fail(p: &Arc<dyn Provider>, req: &ChatRequest) -> ProviderError {
    match p.complete(req).await {
        Ok(c) => panic!("expected an error, got {c:?}"),
        Err(e) => e,
    }
}

#[tokio::test]
async fn openai_client_gets_completion_with_usage() {
    let h = start(vec![sim_provider("oa", SimKind::Openai, "gpt-sim")]).await;
    let p = client(&h, "oa", ProviderKind::Openai, KEY);
    let c = p.complete(&hello("gpt-sim")).await.unwrap();
    assert!(!c.text.is_empty());
    assert_eq!(c.input_tokens, 13);
    assert_eq!(c.output_tokens, c.text.split(' ').count() as u64);
    assert_eq!(c.finish_reason.as_deref(), Some("stop"));
    assert!(c.request_id.is_some());
    let v: Value = serde_json::from_str(&c.response_json).unwrap();
    assert_eq!(v["object"], "chat.completion");

    let capped = p
        .complete(&request(
            "gpt-sim",
            json!([{"role": "user", "content": "x"}]),
            Some(3),
        ))
        .await
        .unwrap();
    assert_eq!(
        (capped.output_tokens, capped.finish_reason.as_deref()),
        (3, Some("length"))
    );
    h.shutdown().await;
}

#[tokio::test]
async fn anthropic_client_lifts_system_prompt_and_gets_completion_with_usage() {
    let h = start(vec![sim_provider("an", SimKind::Anthropic, "claude-sim")]).await;
    let p = client(&h, "an", ProviderKind::Anthropic, KEY);
    // The simulator rejects a "system" role inside messages, so success proves the lift.
    let c = p.complete(&hello("claude-sim")).await.unwrap();
    assert!(!c.text.is_empty());
    assert_eq!(c.input_tokens, 13);
    assert_eq!(c.finish_reason.as_deref(), Some("end_turn"));
    assert!(c.request_id.is_some());
    let capped = p
        .complete(&request(
            "claude-sim",
            json!([{"role": "user", "content": "x"}]),
            Some(2),
        ))
        .await
        .unwrap();
    assert_eq!(
        (capped.output_tokens, capped.finish_reason.as_deref()),
        (2, Some("max_tokens"))
    );
    h.shutdown().await;
}

#[tokio::test]
async fn rate_limited_answer_is_classified_rate_limited_with_retry_after() {
    let mut o = sim_provider("oa", SimKind::Openai, "gpt-sim");
    o.rate_limited = vec![Window {
        from_s: 0.0,
        to_s: 60.0,
    }];
    let mut a = sim_provider("an", SimKind::Anthropic, "claude-sim");
    a.rpm = Some(1);
    let h = start(vec![o, a]).await;
    let e = fail(
        &client(&h, "oa", ProviderKind::Openai, KEY),
        &hello("gpt-sim"),
    )
    .await;
    assert_eq!((e.class, e.status), (ErrorClass::RateLimited, Some(429)));
    let wait = e.retry_after.unwrap();
    assert!(
        wait > Duration::from_secs(50) && wait <= Duration::from_secs(60),
        "{wait:?}"
    );
    assert!(e.request_id.is_some());

    let an = client(&h, "an", ProviderKind::Anthropic, KEY);
    an.complete(&hello("claude-sim")).await.unwrap();
    let e = fail(&an, &hello("claude-sim")).await;
    assert_eq!(e.class, ErrorClass::RateLimited);
    assert!(e.retry_after.is_some_and(|w| w >= Duration::from_secs(1)));
    h.shutdown().await;
}

#[tokio::test]
async fn wrong_key_is_a_provider_fault_and_the_message_leaks_neither_key_nor_prompt() {
    let h = start(vec![
        sim_provider("oa", SimKind::Openai, "gpt-sim"),
        sim_provider("an", SimKind::Anthropic, "claude-sim"),
    ])
    .await;
    for (name, kind, model) in [
        ("oa", ProviderKind::Openai, "gpt-sim"),
        ("an", ProviderKind::Anthropic, "claude-sim"),
    ] {
        let e = fail(&client(&h, name, kind, "sk-wrong-key-123"), &hello(model)).await;
        assert_eq!(
            (e.class, e.status),
            (ErrorClass::ProviderFault, Some(401)),
            "{name}"
        );
        let shown = e.to_string();
        assert!(shown.contains("401"), "{shown}");
        assert!(
            !shown.contains("sk-wrong-key-123") && !shown.contains("hello there"),
            "{shown}"
        );
    }
    h.shutdown().await;
}

#[tokio::test]
async fn unknown_model_is_a_provider_fault() {
    let h = start(vec![
        sim_provider("oa", SimKind::Openai, "gpt-sim"),
        sim_provider("an", SimKind::Anthropic, "claude-sim"),
    ])
    .await;
    let e = fail(
        &client(&h, "oa", ProviderKind::Openai, KEY),
        &hello("gpt-nope"),
    )
    .await;
    assert_eq!((e.class, e.status), (ErrorClass::ProviderFault, Some(404)));
    assert!(e.message.contains("gpt-nope"), "{}", e.message);
    let e = fail(
        &client(&h, "an", ProviderKind::Anthropic, KEY),
        &hello("claude-nope"),
    )
    .await;
    assert_eq!((e.class, e.status), (ErrorClass::ProviderFault, Some(404)));
    h.shutdown().await;
}

#[tokio::test]
async fn bad_request_is_terminal() {
    let h = start(vec![
        sim_provider("oa", SimKind::Openai, "gpt-sim"),
        sim_provider("an", SimKind::Anthropic, "claude-sim"),
    ])
    .await;
    let empty = request("gpt-sim", json!([]), None);
    let e = fail(&client(&h, "oa", ProviderKind::Openai, KEY), &empty).await;
    assert_eq!((e.class, e.status), (ErrorClass::Terminal, Some(400)));
    // Only a system message: nothing is left in `messages` once it is lifted.
    let only_system = request(
        "claude-sim",
        json!([{"role": "system", "content": "x"}]),
        None,
    );
    let e = fail(
        &client(&h, "an", ProviderKind::Anthropic, KEY),
        &only_system,
    )
    .await;
    assert_eq!((e.class, e.status), (ErrorClass::Terminal, Some(400)));
    h.shutdown().await;
}

#[tokio::test]
async fn server_errors_and_overload_are_transient() {
    let mut o = sim_provider("oa", SimKind::Openai, "gpt-sim");
    o.errors.insert("503".into(), 1.0);
    let mut a = sim_provider("an", SimKind::Anthropic, "claude-sim");
    a.errors.insert("529".into(), 1.0);
    let h = start(vec![o, a]).await;
    let e = fail(
        &client(&h, "oa", ProviderKind::Openai, KEY),
        &hello("gpt-sim"),
    )
    .await;
    assert_eq!((e.class, e.status), (ErrorClass::Transient, Some(503)));
    let e = fail(
        &client(&h, "an", ProviderKind::Anthropic, KEY),
        &hello("claude-sim"),
    )
    .await;
    assert_eq!((e.class, e.status), (ErrorClass::Transient, Some(529)));
    assert!(e.message.contains("Overloaded"), "{}", e.message);
    h.shutdown().await;
}

#[tokio::test]
async fn timeouts_and_refused_connections_are_transient() {
    let mut slow = sim_provider("slow", SimKind::Openai, "gpt-sim");
    slow.latency_ms = 3000.0;
    let h = start(vec![slow]).await;
    let f = key_file(KEY);
    let s = spec(
        "slow",
        ProviderKind::Openai,
        h.base_url("slow"),
        Some(f.path()),
    );
    let p = build(&s, reqwest::Client::new(), Duration::from_millis(200)).unwrap();
    let e = fail(&p, &hello("gpt-sim")).await;
    assert_eq!((e.class, e.status), (ErrorClass::Transient, None));
    assert!(e.message.contains("timed out"), "{}", e.message);
    let gone = h.base_url("slow");
    h.shutdown().await;

    let s = spec("gone", ProviderKind::Anthropic, gone, Some(f.path()));
    let p = build(&s, reqwest::Client::new(), Duration::from_secs(2)).unwrap();
    let e = fail(&p, &hello("claude-sim")).await;
    assert_eq!((e.class, e.status), (ErrorClass::Transient, None));
}

/// Serves one raw HTTP answer: a 200 with `body` and no length, closing the connection.
async fn raw_server(body: Vec<u8>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        if let Ok((mut sock, _)) = listener.accept().await {
            let mut buf = vec![0u8; 64 * 1024];
            let _ = tokio::io::AsyncReadExt::read(&mut sock, &mut buf).await;
            let head =
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n";
            let _ = sock.write_all(head).await;
            let _ = sock.write_all(&body).await;
            let _ = sock.shutdown().await;
        }
    });
    format!("http://{addr}/v1")
}

#[tokio::test]
async fn oversized_and_malformed_success_bodies_are_transient() {
    let big = raw_server(vec![b' '; 9 * 1024 * 1024]).await;
    let p = build(
        &spec("big", ProviderKind::Openai, big, None),
        reqwest::Client::new(),
        Duration::from_secs(10),
    )
    .unwrap();
    let e = fail(&p, &hello("m")).await;
    assert_eq!(e.class, ErrorClass::Transient);
    assert!(e.message.contains("too large"), "{}", e.message);

    let junk = raw_server(b"{\"choices\": 42".to_vec()).await;
    let p = build(
        &spec("junk", ProviderKind::Openai, junk, None),
        reqwest::Client::new(),
        Duration::from_secs(5),
    )
    .unwrap();
    let e = fail(&p, &hello("m")).await;
    assert_eq!((e.class, e.status), (ErrorClass::Transient, Some(200)));
    assert!(e.message.contains("malformed"), "{}", e.message);
}

#[tokio::test]
async fn build_reads_keys_from_env_or_file_and_refuses_gemini() {
    let mut open = SimProvider::new("open", SimKind::Openai, &["gpt-sim"]);
    open.latency_ms = 0.0;
    let mut keyed = sim_provider("keyed", SimKind::Openai, "gpt-sim");
    keyed.latency_ms = 0.0;
    let h = start(vec![open, keyed]).await;
    let http = reqwest::Client::new();
    let t = Duration::from_secs(5);

    // An unset variable means no key: fine for self-hosted endpoints.
    let mut s = spec("open", ProviderKind::Openai, h.base_url("open"), None);
    s.api_key_env = Some("OFFPEAK_TEST_SURELY_UNSET_KEY".into());
    build(&s, http.clone(), t)
        .unwrap()
        .complete(&hello("gpt-sim"))
        .await
        .unwrap();

    let mut s = spec("keyed", ProviderKind::Openai, h.base_url("keyed"), None);
    s.api_key_env = Some("OFFPEAK_TEST_PROVIDERS_KEYED_KEY".into());
    std::env::set_var("OFFPEAK_TEST_PROVIDERS_KEYED_KEY", KEY);
    build(&s, http.clone(), t)
        .unwrap()
        .complete(&hello("gpt-sim"))
        .await
        .unwrap();

    let empty = key_file("");
    let s = spec(
        "keyed",
        ProviderKind::Openai,
        h.base_url("keyed"),
        Some(empty.path()),
    );
    assert!(build(&s, http.clone(), t).err().unwrap().contains("empty"));
    let s = spec("g", ProviderKind::Gemini, h.base_url("g"), None);
    assert_eq!(
        build(&s, http, t).err().unwrap(),
        "gemini is not supported yet"
    );
    h.shutdown().await;
}

fn with_params(mut req: ChatRequest, params: Value) -> ChatRequest {
    req.params = serde_json::from_value(params).unwrap();
    req
}

#[tokio::test]
async fn tool_call_answer_succeeds_with_the_calls_as_output_text_and_in_response_json() {
    let h = start(vec![
        sim_provider("oa", SimKind::Openai, "gpt-sim"),
        sim_provider("an", SimKind::Anthropic, "claude-sim"),
    ])
    .await;
    // The job's tools in OpenAI's shape; the Anthropic client translates them.
    let tools = json!({ "tools": [{ "type": "function", "function": {
        "name": "get_weather",
        "parameters": { "type": "object", "properties": { "city": { "type": "string" } },
                        "required": ["city"] }
    } }] });
    for (name, kind, model, finish) in [
        ("oa", ProviderKind::Openai, "gpt-sim", "tool_calls"),
        ("an", ProviderKind::Anthropic, "claude-sim", "tool_use"),
    ] {
        let p = client(&h, name, kind, KEY);
        let c = p
            .complete(&with_params(hello(model), tools.clone()))
            .await
            .unwrap();
        assert_eq!(c.finish_reason.as_deref(), Some(finish), "{name}");
        let calls: Value = serde_json::from_str(&c.text).unwrap();
        assert_eq!(calls[0]["name"], "get_weather", "{name}: {calls}");
        assert!(calls[0]["arguments"]["city"].is_string(), "{name}: {calls}");
        let v: Value = serde_json::from_str(&c.response_json).unwrap();
        let call_name = match kind {
            ProviderKind::Anthropic => &v["content"][0]["name"],
            _ => &v["choices"][0]["message"]["tool_calls"][0]["function"]["name"],
        };
        assert_eq!(call_name, "get_weather", "{name}: {v}");
        assert!(c.output_tokens > 0, "{name}");
    }
    h.shutdown().await;
}

#[tokio::test]
async fn json_mode_answer_passes_through_as_output_text_that_parses_as_json() {
    let h = start(vec![sim_provider("oa", SimKind::Openai, "gpt-sim")]).await;
    let p = client(&h, "oa", ProviderKind::Openai, KEY);
    let req = with_params(
        request(
            "gpt-sim",
            json!([{"role": "user", "content": "Reply in JSON."}]),
            None,
        ),
        json!({ "response_format": { "type": "json_object" } }),
    );
    let c = p.complete(&req).await.unwrap();
    let v: Value = serde_json::from_str(&c.text).unwrap();
    assert!(v.is_object(), "{v}");
    assert_eq!(c.finish_reason.as_deref(), Some("stop"));
    h.shutdown().await;
}
