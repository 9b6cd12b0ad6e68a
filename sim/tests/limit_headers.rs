//! The rate-limit headers of every completion answer: the account's buckets as the real APIs
//! report them (OpenAI's `x-ratelimit-*`, Anthropic's `anthropic-ratelimit-*`), shared by every
//! caller, readable by the planner's own parser, and absent for limits the provider lacks.

mod common;

use chrono::Utc;
use common::{anthropic, openai, start, Answer};
use router::{LimitReport, LimitWindow};
use serde_json::{json, Value};
use sim::SimFlex;

/// Posts `body` with a client of its own (each worker has its own connection pool).
async fn post_with(
    client: &reqwest::Client,
    url: &str,
    headers: &[(&str, &str)],
    body: &Value,
) -> Answer {
    let mut req = client.post(url).json(body);
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

/// What the planner reads of an answer's headers.
fn report(a: &Answer) -> Option<LimitReport> {
    LimitReport::from_headers(
        |name| a.headers.get(name).and_then(|v| v.to_str().ok()),
        Utc::now(),
    )
}

fn chat_body(prompt: &str) -> Value {
    json!({ "model": "m", "max_tokens": 2000, "messages": [{ "role": "user", "content": prompt }] })
}

#[tokio::test]
async fn openai_answers_report_the_account_buckets_to_every_caller_until_the_429() {
    let mut p = openai("p", "m");
    p.rpm = Some(4);
    p.tpm = Some(100_000);
    let h = start(1, vec![p]).await;
    let url = format!("{}/chat/completions", h.base_url("p"));
    let workers = [reqwest::Client::new(), reqwest::Client::new()];
    let mut tokens_left = Vec::new();
    for i in 0..4 {
        // The two workers take turns: each sees what the other used.
        let a = post_with(&workers[i % 2], &url, &[], &chat_body("hi")).await;
        assert_eq!(a.status, 200);
        assert_eq!(a.header("x-ratelimit-limit-requests").as_deref(), Some("4"));
        let left: u64 = a
            .header("x-ratelimit-remaining-requests")
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(left, 3 - i as u64, "request {i}");
        assert_eq!(
            a.header("x-ratelimit-limit-tokens").as_deref(),
            Some("100000")
        );
        tokens_left.push(
            a.header("x-ratelimit-remaining-tokens")
                .unwrap()
                .parse::<u64>()
                .unwrap(),
        );
        let r = report(&a).expect("the planner reads the headers");
        let req = r.requests.unwrap();
        assert_eq!((req.limit, req.remaining), (4.0, (3 - i) as f64));
        // 4 a minute refill one every 15 s: full again after 15 s per request used, less the
        // time since the server started (seconds at most on a loaded machine).
        let want = 15_000 * (i as i64 + 1);
        let got = req.reset.num_milliseconds();
        assert!(
            (want - 5_000..=want + 1).contains(&got),
            "reset {got} ms, want about {want}"
        );
        assert_eq!(r.tokens.unwrap().limit, 100_000.0);
    }
    assert!(
        tokens_left.windows(2).all(|w| w[1] < w[0]) && tokens_left[0] < 100_000,
        "token budget falls with each request: {tokens_left:?}"
    );
    // The bucket is empty: the 429 says so too, and the planner would wait about 15 s.
    let a = post_with(&workers[0], &url, &[], &chat_body("hi")).await;
    assert_eq!(a.status, 429);
    assert_eq!(
        a.header("x-ratelimit-remaining-requests").as_deref(),
        Some("0")
    );
    let reset = a.header("x-ratelimit-reset-requests").unwrap();
    // Full again in a minute, less the few seconds since the server started.
    let full_in = router::fleet::parse_go_duration(&reset).unwrap();
    assert!(
        (55_000..=60_000).contains(&full_in.num_milliseconds()),
        "reset {reset}"
    );
    let wait = report(&a).unwrap().requests.unwrap().wait_for(1.0);
    assert!(
        (13_750..=15_001).contains(&wait.num_milliseconds()),
        "wait {wait}"
    );
    h.shutdown().await;
}

#[tokio::test]
async fn anthropic_answers_report_full_again_instants_in_rfc_3339() {
    let mut p = anthropic("a", "claude");
    p.rpm = Some(3);
    p.tpm = Some(50_000);
    let h = start(1, vec![p]).await;
    let url = format!("{}/messages", h.base_url("a"));
    let workers = [reqwest::Client::new(), reqwest::Client::new()];
    let version = [("anthropic-version", "2023-06-01")];
    let body = json!({ "model": "claude", "max_tokens": 1000, "messages": [{ "role": "user", "content": "hi" }] });
    let mut last_tokens = u64::MAX;
    for i in 0..3 {
        let a = post_with(&workers[i % 2], &url, &version, &body).await;
        assert_eq!(a.status, 200);
        assert_eq!(
            a.header("anthropic-ratelimit-requests-limit").as_deref(),
            Some("3")
        );
        let left: u64 = a
            .header("anthropic-ratelimit-requests-remaining")
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(left, 2 - i as u64);
        let reset = a.header("anthropic-ratelimit-requests-reset").unwrap();
        let at = chrono::DateTime::parse_from_rfc3339(&reset).expect("RFC 3339");
        // 3 a minute refill one every 20 s; the instant is rounded up to the second.
        let ahead = (at.with_timezone(&Utc) - Utc::now()).num_milliseconds();
        let want = 20_000 * (i as i64 + 1);
        assert!(
            (want - 5_000..=want + 1_000).contains(&ahead),
            "reset in {ahead} ms"
        );
        let tokens: u64 = a
            .header("anthropic-ratelimit-tokens-remaining")
            .unwrap()
            .parse()
            .unwrap();
        assert!(tokens < last_tokens, "tokens {tokens} after {last_tokens}");
        last_tokens = tokens;
        let LimitReport { requests, tokens } = report(&a).unwrap();
        assert_eq!(requests.map(|w| w.remaining), Some((2 - i) as f64));
        assert_eq!(tokens.map(|w: LimitWindow| w.limit), Some(50_000.0));
    }
    let a = post_with(&workers[1], &url, &version, &body).await;
    assert_eq!(a.status, 429);
    assert_eq!(
        a.header("anthropic-ratelimit-requests-remaining")
            .as_deref(),
        Some("0")
    );
    assert!(a.header("retry-after").is_some());
    h.shutdown().await;
}

#[tokio::test]
async fn only_the_limits_a_provider_has_are_reported() {
    let mut rpm_only = openai("r", "m");
    rpm_only.rpm = Some(100);
    let unlimited = anthropic("u", "claude");
    let h = start(1, vec![rpm_only, unlimited]).await;
    let client = reqwest::Client::new();
    let a = post_with(
        &client,
        &format!("{}/chat/completions", h.base_url("r")),
        &[],
        &chat_body("hi"),
    )
    .await;
    assert_eq!(a.status, 200);
    assert_eq!(
        a.header("x-ratelimit-remaining-requests").as_deref(),
        Some("99")
    );
    for name in [
        "x-ratelimit-limit-tokens",
        "x-ratelimit-remaining-tokens",
        "x-ratelimit-reset-tokens",
    ] {
        assert!(a.header(name).is_none(), "{name} without a tpm");
    }
    let body = json!({ "model": "claude", "max_tokens": 10, "messages": [{ "role": "user", "content": "hi" }] });
    let a = post_with(
        &client,
        &format!("{}/messages", h.base_url("u")),
        &[("anthropic-version", "2023-06-01")],
        &body,
    )
    .await;
    assert_eq!(a.status, 200);
    assert!(
        a.headers.keys().all(|k| !k.as_str().contains("ratelimit")),
        "no limits, no headers: {:?}",
        a.headers
    );
    assert!(report(&a).is_none());
    h.shutdown().await;
}

#[tokio::test]
async fn flex_answers_report_the_flex_tiers_own_bucket() {
    let mut p = openai("p", "m");
    p.rpm = Some(600);
    p.flex = Some(SimFlex {
        rpm: Some(2),
        ..SimFlex::default()
    });
    let h = start(1, vec![p]).await;
    let url = format!("{}/chat/completions", h.base_url("p"));
    let client = reqwest::Client::new();
    let mut flex = chat_body("hi");
    flex["service_tier"] = json!("flex");
    let a = post_with(&client, &url, &[], &flex).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.header("x-ratelimit-limit-requests").as_deref(), Some("2"));
    assert_eq!(
        a.header("x-ratelimit-remaining-requests").as_deref(),
        Some("1")
    );
    // The realtime tier's bucket is untouched by the flex request.
    let a = post_with(&client, &url, &[], &chat_body("hi")).await;
    assert_eq!(
        a.header("x-ratelimit-limit-requests").as_deref(),
        Some("600")
    );
    assert_eq!(
        a.header("x-ratelimit-remaining-requests").as_deref(),
        Some("599")
    );
    post_with(&client, &url, &[], &flex).await;
    let a = post_with(&client, &url, &[], &flex).await;
    assert_eq!(a.status, 429);
    assert_eq!(
        a.header("x-ratelimit-remaining-requests").as_deref(),
        Some("0")
    );
    h.shutdown().await;
}
