//! A worker does not pay twice for a job whose row it stored itself (issue #17): the same
//! message coming back — a re-submission on RabbitMQ, which does not de-duplicate — is acked
//! without a provider call and without a second row.

use queue::{MemoryQueue, Queue};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use worker::provider::{ChatRequest, Completion, Provider, ProviderError};

/// A provider that answers every call and counts them.
#[derive(Default)]
struct Counting {
    calls: AtomicU32,
}

#[async_trait::async_trait]
impl Provider for Counting {
    fn name(&self) -> &str {
        "p"
    }

    async fn complete(&self, _req: &ChatRequest) -> Result<Completion, ProviderError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Ok(Completion {
            text: "ok".into(),
            finish_reason: Some("stop".into()),
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

fn envelope(id: &str) -> bytes::Bytes {
    let now = chrono::Utc::now();
    let job = schemas::JobParser::new(schemas::JobDefaults::new(now), None)
        .parse_line(
            1,
            &format!(
                r#"{{"id":"{id}","model":"m","prompt":"hi","max_tokens":4,"priority":"critical"}}"#
            ),
        )
        .unwrap();
    schemas::Envelope::new(schemas::RunId::new("r").unwrap(), now, job)
        .to_bytes()
        .into()
}

async fn drained(q: &MemoryQueue) {
    tokio::time::timeout(Duration::from_secs(20), q.drained())
        .await
        .expect("every message settled within 20 s");
}

#[tokio::test]
async fn a_job_this_worker_stored_is_acked_without_a_call_when_its_message_comes_back() {
    let catalog = schemas::Catalog::from_toml(
        "c.toml",
        "[[providers]]\nname='p'\nkind='openai'\nbase_url='http://127.0.0.1:9/v1'\n[[providers.models]]\nmodel='m'\nid='m-1'\ninput_per_mtok=1.0\noutput_per_mtok=1.0\n",
    )
    .unwrap();
    let provider = Arc::new(Counting::default());
    let mut providers: HashMap<String, Arc<dyn Provider>> = HashMap::new();
    providers.insert("p".into(), provider.clone());
    let mut cfg = worker::WorkerConfig::default();
    cfg.flush.max_age_s = 0.1;
    let w = Arc::new(worker::Worker::new(
        "w".into(),
        Arc::new(catalog),
        providers,
        cfg,
    ));
    let q = MemoryQueue::new();
    let dir = tempfile::tempdir().unwrap();
    let sink: Arc<dyn store::ResultSink> = Arc::new(store::LocalDirSink::new(dir.path()));
    let stop = tokio_util::sync::CancellationToken::new();
    let consumer = q.consume(w.consume_options()).await.unwrap();
    let run = tokio::spawn(w.clone().run(consumer, sink.clone(), stop.clone()));

    q.publish("r", "r/a", envelope("a")).await.unwrap();
    // Acked only once its row is stored.
    drained(&q).await;
    assert_eq!(provider.calls.load(Ordering::SeqCst), 1);

    // The same job again (a re-submission; a de-duplication id of its own, as RabbitMQ does
    // not de-duplicate and the in-process queue does), then another job.
    q.publish("r", "r/a again", envelope("a")).await.unwrap();
    q.publish("r", "r/b", envelope("b")).await.unwrap();
    drained(&q).await;
    assert_eq!(
        provider.calls.load(Ordering::SeqCst),
        2,
        "the repeated job was sent to the provider again (or b was not)"
    );
    stop.cancel();
    run.await.unwrap();
    let start = Instant::now();
    let rows = loop {
        let rows = store::read_run(&*sink, "r").await.unwrap();
        if rows.len() >= 2 || start.elapsed() > Duration::from_secs(5) {
            break rows;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut ids: Vec<_> = rows.iter().map(|r| r.job_id.as_str()).collect();
    ids.sort();
    assert_eq!(ids, ["a", "b"], "one row per job");
}
