//! Provider answers no parser should trip on: property tests over the response parsers and
//! error helpers (any bytes, any status, any header — no panic, every rejection a classified
//! error with a clear message), and the clients against the simulator's chaos answers (hung
//! requests, malformed JSON, a 50 MB body cut off at `max_response_bytes`); and a worker whose
//! job is deferred again and again, which must not take it for poison.

use proptest::prelude::*;
use schemas::{Limits, ModelOffer, ProviderKind, ProviderSpec};
use serde_json::json;
use sim::{SimKind, SimProvider};
use std::time::{Duration, Instant};
use worker::provider::{
    build_with, classify, error_message, parse_answer, parse_retry_after, ChatRequest,
    ClientOptions, ErrorClass, Provider,
};

fn kinds() -> impl Strategy<Value = ProviderKind> {
    prop_oneof![Just(ProviderKind::Openai), Just(ProviderKind::Anthropic)]
}

/// JSON values shaped a little like provider answers, so the parsers get past the first field.
fn answer_like() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        ".{0,20}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("choices".to_string()),
                    Just("message".to_string()),
                    Just("content".to_string()),
                    Just("text".to_string()),
                    Just("type".to_string()),
                    Just("usage".to_string()),
                    Just("input_tokens".to_string()),
                    Just("output_tokens".to_string()),
                    Just("prompt_tokens".to_string()),
                    "[a-z_]{1,8}",
                ],
                inner,
                0..5
            )
            .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_bytes_with_any_status_give_a_completion_or_a_classified_error(
        kind in kinds(),
        status in 100u16..600,
        body in prop::collection::vec(any::<u8>(), 0..512),
    ) {
        match parse_answer(kind, "p", status, &[], &body) {
            Ok(c) => prop_assert!((200..300).contains(&status), "{c:?}"),
            Err(e) => {
                prop_assert_eq!(e.status, Some(status));
                prop_assert_eq!(&e.provider, "p");
                prop_assert!(!e.message.is_empty());
                if (200..300).contains(&status) {
                    prop_assert_eq!(e.class, ErrorClass::Transient);
                    prop_assert!(e.message.contains("malformed response"), "{}", e.message);
                }
            }
        }
    }

    #[test]
    fn json_shaped_success_bodies_never_panic_and_rejections_say_why(
        kind in kinds(),
        v in answer_like(),
    ) {
        let body = serde_json::to_vec(&v).unwrap();
        if let Err(e) = parse_answer(kind, "p", 200, &[], &body) {
            prop_assert_eq!(e.class, ErrorClass::Transient);
            prop_assert!(e.message.starts_with("200: malformed response: "), "{}", e.message);
            prop_assert!(e.message.chars().count() < 400);
        }
    }

    #[test]
    fn error_answers_are_classified_with_a_bounded_message_and_retry_after(
        kind in kinds(),
        status in 300u16..600,
        body in ".{0,2000}",
        retry in prop_oneof![Just(None), "[0-9.]{0,6}".prop_map(Some), ".{0,30}".prop_map(Some)],
    ) {
        let headers: Vec<(&str, &str)> = retry.as_deref().map(|r| ("retry-after", r)).into_iter().collect();
        let e = parse_answer(kind, "p", status, &headers, body.as_bytes()).unwrap_err();
        prop_assert_eq!(e.class, classify(status, &body));
        prop_assert!(e.message.starts_with(&status.to_string()));
        // "NNN Reason: " plus at most 300 characters and an ellipsis.
        prop_assert!(e.message.chars().count() <= 340, "{}", e.message.len());
    }

    #[test]
    fn error_message_never_contains_a_secret(
        prefix in ".{0,50}",
        secret in "[A-Za-z0-9-]{8,40}",
        suffix in ".{0,50}",
        wrap in any::<bool>(),
    ) {
        let text = format!("{prefix}{secret}{suffix}");
        let body = if wrap { json!({"error": {"message": text}}).to_string() } else { text };
        let m = error_message(&body, &[&secret]);
        prop_assert!(!m.contains(&secret), "{m}");
        prop_assert!(m.chars().count() <= 301);
    }

    #[test]
    fn retry_after_parsing_never_panics_and_is_never_negative(
        a in proptest::option::of(".{0,40}"),
        ms in proptest::option::of(".{0,20}"),
        secs in proptest::option::of(-1e12f64..1e12),
    ) {
        let a = secs.map(|s| s.to_string()).or(a);
        let now = chrono::Utc::now();
        if let Some(d) = parse_retry_after(a.as_deref(), ms.as_deref(), now) {
            prop_assert!(d.as_secs_f64() >= 0.0);
        }
    }
}

fn spec(base_url: String, kind: ProviderKind) -> ProviderSpec {
    ProviderSpec {
        name: "chaotic".into(),
        kind,
        base_url,
        api_key_env: None,
        api_key_file: None,
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

async fn chaotic(
    chaos: sim::Chaos,
    kind: SimKind,
    opts: ClientOptions,
) -> (sim::SimHandle, std::sync::Arc<dyn Provider>) {
    let mut p = SimProvider::new("chaotic", kind, &["m"]);
    p.latency_ms = 0.0;
    p.chaos = chaos;
    let h = sim::start(
        sim::Scenario {
            seed: Some(1),
            providers: vec![p],
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let pk = match kind {
        SimKind::Openai => ProviderKind::Openai,
        SimKind::Anthropic => ProviderKind::Anthropic,
    };
    let client = build_with(
        &spec(h.base_url("chaotic"), pk),
        reqwest::Client::new(),
        opts,
    )
    .unwrap();
    (h, client)
}

fn hello() -> ChatRequest {
    ChatRequest {
        model_id: "m".into(),
        messages: vec![serde_json::from_value(json!({"role": "user", "content": "hi"})).unwrap()],
        max_tokens: Some(8),
        params: Default::default(),
    }
}

#[tokio::test]
async fn a_fifty_megabyte_answer_is_cut_off_at_max_response_bytes() {
    for kind in [SimKind::Openai, SimKind::Anthropic] {
        let chaos = sim::Chaos {
            huge: 1.0,
            ..Default::default()
        };
        let opts = ClientOptions {
            timeout: Duration::from_secs(30),
            max_response_bytes: 1 << 20,
        };
        let (h, client) = chaotic(chaos, kind, opts).await;
        let t = Instant::now();
        let e = client.complete(&hello()).await.unwrap_err();
        assert_eq!(e.class, ErrorClass::Transient);
        assert!(
            e.message.contains("response too large")
                && e.message.contains("1048576")
                && e.message.contains("max_response_bytes"),
            "{e}"
        );
        // Cut off after about 1 MiB, not after reading (or buffering) all 50 MiB.
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        h.shutdown().await;
    }
}

#[tokio::test]
async fn the_same_answer_within_the_limit_is_read_in_full() {
    let chaos = sim::Chaos {
        huge: 1.0,
        huge_bytes: 1 << 20,
        ..Default::default()
    };
    let opts = ClientOptions {
        timeout: Duration::from_secs(30),
        max_response_bytes: 2 << 20,
    };
    let (h, client) = chaotic(chaos, SimKind::Openai, opts).await;
    let e = client.complete(&hello()).await.unwrap_err();
    // Read whole (1 MiB is under the limit), then refused as JSON that never ends.
    assert!(e.message.contains("malformed response"), "{e}");
    h.shutdown().await;
}

#[tokio::test]
async fn malformed_json_and_hung_requests_are_transient_errors() {
    let opts = ClientOptions {
        timeout: Duration::from_millis(500),
        max_response_bytes: 1 << 20,
    };
    for kind in [SimKind::Openai, SimKind::Anthropic] {
        let (h, client) = chaotic(
            sim::Chaos {
                malformed: 1.0,
                ..Default::default()
            },
            kind,
            opts,
        )
        .await;
        let e = client.complete(&hello()).await.unwrap_err();
        assert_eq!(e.class, ErrorClass::Transient);
        assert!(e.message.contains("malformed response"), "{e}");
        h.shutdown().await;

        let (h, client) = chaotic(
            sim::Chaos {
                hang: 1.0,
                ..Default::default()
            },
            kind,
            opts,
        )
        .await;
        let e = client.complete(&hello()).await.unwrap_err();
        assert_eq!(e.class, ErrorClass::Transient);
        assert!(e.message.contains("timed out"), "{e}");
        drop(h);
    }
}

/// A job deferred again and again (its only provider answers 429 for a while) is not mistaken
/// for poison: deferrals carry the delivery count along, but only deliveries that ended
/// unsettled count against `max_deliveries`.
#[tokio::test]
async fn deferrals_do_not_count_as_unsettled_deliveries() {
    use queue::Queue;
    use std::collections::HashMap;
    use std::sync::Arc;

    let mut p = SimProvider::new("p", SimKind::Openai, &["m-1"]);
    p.latency_ms = 0.0;
    p.rate_limited = vec![sim::Window {
        from_s: 0.0,
        to_s: 2.5,
    }];
    let h = sim::start(
        sim::Scenario {
            seed: Some(1),
            providers: vec![p],
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let catalog = schemas::Catalog::from_toml(
        "c.toml",
        &format!(
            "[[providers]]\nname='p'\nkind='openai'\nbase_url='{}'\n[[providers.models]]\nmodel='m'\nid='m-1'\ninput_per_mtok=1.0\noutput_per_mtok=1.0\n",
            h.base_url("p")
        ),
    )
    .unwrap();
    let catalog = Arc::new(catalog);
    let mut providers: HashMap<String, Arc<dyn Provider>> = HashMap::new();
    providers.insert(
        "p".into(),
        worker::provider::build(
            &catalog.providers[0],
            reqwest::Client::new(),
            Duration::from_secs(5),
        )
        .unwrap(),
    );
    let cfg = worker::WorkerConfig {
        max_deliveries: 1,
        inline_wait_s: 0.0,
        ..Default::default()
    };
    let w = Arc::new(worker::Worker::new("w".into(), catalog, providers, cfg));
    let q = queue::MemoryQueue::new();
    let now = chrono::Utc::now();
    let job = schemas::JobParser::new(schemas::JobDefaults::new(now), None)
        .parse_line(1, r#"{"id":"j","model":"m","prompt":"hi","max_tokens":4}"#)
        .unwrap();
    let env = schemas::Envelope::new(schemas::RunId::new("r").unwrap(), now, job);
    q.publish("r", "r/j", env.to_bytes().into()).await.unwrap();
    let rows = first_rows(&w, &q, Duration::from_secs(30), "no result").await;
    let r = &rows[0];
    assert!(r.deferrals >= 1, "the job was never deferred: {r:?}");
    assert_eq!(r.status, schemas::ResultStatus::Succeeded, "{r:?}");
    h.shutdown().await;
}

/// A provider client with a bug: its first call panics, later calls answer.
struct PanicsOnce {
    calls: std::sync::atomic::AtomicU32,
}

#[async_trait::async_trait]
impl Provider for PanicsOnce {
    fn name(&self) -> &str {
        "p"
    }

    async fn complete(
        &self,
        _req: &ChatRequest,
    ) -> Result<worker::provider::Completion, worker::provider::ProviderError> {
        if self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
            panic!("a bug in a provider client");
        }
        Ok(worker::provider::Completion {
            text: "ok".into(),
            finish_reason: Some("end_turn".into()),
            input_tokens: 1,
            output_tokens: 1,
            cache_read_tokens: 0,
            cache_write_5m_tokens: 0,
            cache_write_1h_tokens: 0,
            response_json: "{}".into(),
            request_id: None,
            limits: None,
        })
    }
}

#[tokio::test]
async fn a_panicking_provider_call_gives_its_concurrency_slot_and_gauge_back() {
    use queue::Queue;
    use std::collections::HashMap;
    use std::sync::Arc;

    // One request at a time: had the panicking call kept its slot, no other job could go.
    let catalog = schemas::Catalog::from_toml(
        "c.toml",
        "[[providers]]\nname='p'\nkind='openai'\nbase_url='http://127.0.0.1:9/v1'\nlimits={concurrency=1}\n[[providers.models]]\nmodel='m'\nid='m-1'\ninput_per_mtok=1.0\noutput_per_mtok=1.0\n",
    )
    .unwrap();
    let mut providers: HashMap<String, Arc<dyn Provider>> = HashMap::new();
    providers.insert(
        "p".into(),
        Arc::new(PanicsOnce {
            calls: Default::default(),
        }),
    );
    let cfg = worker::WorkerConfig {
        concurrency: 1,
        ..Default::default()
    };
    let w = Arc::new(worker::Worker::new(
        "w".into(),
        Arc::new(catalog),
        providers,
        cfg,
    ));
    let q = queue::MemoryQueue::new();
    let now = chrono::Utc::now();
    for id in ["a", "b"] {
        let job = schemas::JobParser::new(schemas::JobDefaults::new(now), None)
            .parse_line(
                1,
                &format!(r#"{{"id":"{id}","model":"m","prompt":"hi","max_tokens":4,"priority":"critical"}}"#),
            )
            .unwrap();
        let env = schemas::Envelope::new(schemas::RunId::new("r").unwrap(), now, job);
        q.publish("r", &format!("r/{id}"), env.to_bytes().into())
            .await
            .unwrap();
    }
    let rows = first_rows(
        &w,
        &q,
        Duration::from_secs(20),
        "no job went after the panic: the slot leaked",
    )
    .await;
    assert_eq!(rows[0].status, schemas::ResultStatus::Succeeded, "{rows:?}");
    assert_eq!(rows[0].finish_reason.as_deref(), Some("stop"));
    assert_eq!(rows[0].provider_finish_reason.as_deref(), Some("end_turn"));
    let gauge_fell = async {
        while w.stats.in_flight.get() != 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), gauge_fell)
        .await
        .expect("the in-flight gauge never fell back to 0 after the panic");
}

/// Runs `w` on `q` with results in a temporary directory until run `r` has a stored row
/// (failing with `why` after `within`), then stops the worker and returns the rows.
async fn first_rows(
    w: &std::sync::Arc<worker::Worker>,
    q: &queue::MemoryQueue,
    within: Duration,
    why: &str,
) -> Vec<schemas::ResultRow> {
    use queue::Queue;
    use std::sync::Arc;
    let consumer = q.consume(w.consume_options()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sink: Arc<dyn store::ResultSink> = Arc::new(store::LocalDirSink::new(dir.path()));
    let stop = tokio_util::sync::CancellationToken::new();
    let run = tokio::spawn(w.clone().run(consumer, sink.clone(), stop.clone()));
    let start = Instant::now();
    let rows = loop {
        let rows = store::read_run(&*sink, "r").await.unwrap_or_default();
        if !rows.is_empty() {
            break rows;
        }
        assert!(start.elapsed() < within, "{why}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    stop.cancel();
    run.await.unwrap();
    rows
}
