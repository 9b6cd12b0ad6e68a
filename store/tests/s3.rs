//! The S3 results sink against a real S3-compatible server (`s3s-fs`, started by
//! `deploy/local/s3.sh`; `OFFPEAK_TEST_S3_ENDPOINT`, default `http://127.0.0.1:9000`). Each test
//! works in a bucket of its own and deletes it at the end.

use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use schemas::{ResultRow, ResultStatus};
use std::net::TcpListener;
use std::time::{Duration, Instant};
use store::S3Sink;
use store::{decode_parquet, encode_parquet, open_sink, read_run, ResultSink};
use store::{S3Config, S3Url};
use testkit::TestBucket;

use testkit::{s3_endpoint as endpoint, S3_KEY as ACCESS_KEY, S3_SECRET as SECRET_KEY};
const MIB: usize = 1024 * 1024;

/// A sink writing to `s3://<bucket>/<prefix>` of a test bucket.
fn sink(bucket: &TestBucket, prefix: &str) -> S3Sink {
    let url = S3Url::parse(&format!("s3://{}/{prefix}", bucket.name)).unwrap();
    S3Sink::new(bucket.client.clone(), &url)
}

fn row(run_id: &str, n: usize) -> ResultRow {
    let at: DateTime<Utc> = DateTime::from_timestamp_millis(1_764_000_000_000 + n as i64).unwrap();
    ResultRow {
        run_id: run_id.into(),
        job_id: format!("job-{n:05}"),
        status: if n.is_multiple_of(3) {
            ResultStatus::Failed
        } else {
            ResultStatus::Succeeded
        },
        model: "llama-3.1-70b".into(),
        provider: Some("sim".into()),
        provider_model: Some("llama-70b".into()),
        output_text: Some(format!("answer number {n}")),
        finish_reason: Some("stop".into()),
        input_tokens: 10 + n as u64,
        output_tokens: n as u64,
        cost_usd: n as f64 * 0.001,
        baseline_cost_usd: n as f64 * 0.002,
        cheapest_at_submit_usd: None,
        latency_ms: 100,
        attempts: 1,
        deferred_ms: 0,
        deferrals: 0,
        route_reason: Some("cheapest".into()),
        error_kind: None,
        error_message: None,
        priority: "deferrable".into(),
        submitted_at: at,
        completed_at: at,
        deadline: at,
        metadata: "{}".into(),
        response_json: None,
        provider_finish_reason: None,
        escalated: false,
        route: None,
        batch_id: None,
        cached_input_tokens: 0,
        cache_write_tokens: 0,
    }
}

/// Deterministic bytes that do not compress or repeat at part boundaries.
fn noise(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A loopback port nothing listens on.
fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn parquet_results_round_trip_through_put_list_and_get_under_the_run_prefix() {
    let bucket = TestBucket::new("roundtrip").await;
    let sink = sink(&bucket, "results/nightly");
    let rows: Vec<ResultRow> = (0..50).map(|n| row("run-a", n)).collect();
    let file = encode_parquet(&rows).unwrap();

    sink.put("run-a", "part-w1-00001.parquet", file.clone())
        .await
        .unwrap();
    sink.put("run-a", "_manifest.json", b"{}".to_vec())
        .await
        .unwrap();
    sink.put(
        "run-b",
        "part-w1-00001.parquet",
        encode_parquet(&rows[..1]).unwrap(),
    )
    .await
    .unwrap();

    assert_eq!(
        sink.location(),
        format!("s3://{}/results/nightly", bucket.name)
    );
    let mut keys = bucket.keys().await;
    keys.sort();
    assert_eq!(
        keys,
        [
            "results/nightly/run=run-a/_manifest.json",
            "results/nightly/run=run-a/part-w1-00001.parquet",
            "results/nightly/run=run-b/part-w1-00001.parquet",
        ]
    );
    let mut names = sink.list("run-a").await.unwrap();
    names.sort();
    assert_eq!(names, ["_manifest.json", "part-w1-00001.parquet"]);
    assert_eq!(
        sink.get("run-a", "part-w1-00001.parquet").await.unwrap(),
        file
    );
    assert_eq!(read_run(&sink, "run-a").await.unwrap(), rows);
    assert_eq!(
        decode_parquet(sink.get("run-b", "part-w1-00001.parquet").await.unwrap()).unwrap(),
        rows[..1]
    );
    assert!(sink.list("run-c").await.unwrap().is_empty());
    bucket.remove().await;
}

#[tokio::test]
async fn bodies_over_the_threshold_go_up_as_multipart_and_round_trip_byte_exact() {
    let bucket = TestBucket::new("multipart").await;
    let sink = sink(&bucket, "out").with_multipart(6 * MIB, 5 * MIB);
    let big = noise(12 * MIB + 123);
    let small = noise(6 * MIB);

    sink.put("run-m", "big.parquet", big.clone()).await.unwrap();
    sink.put("run-m", "small.parquet", small.clone())
        .await
        .unwrap();

    assert_eq!(sink.get("run-m", "big.parquet").await.unwrap(), big);
    assert_eq!(sink.get("run-m", "small.parquet").await.unwrap(), small);
    // A multipart object's ETag is `<md5 of part md5s>-<parts>`; a single PUT's is a plain MD5.
    let etag = |key: &'static str| {
        let client = bucket.client.clone();
        let name = bucket.name.clone();
        async move {
            let head = client
                .head_object()
                .bucket(name)
                .key(key)
                .send()
                .await
                .unwrap();
            head.e_tag().unwrap().trim_matches('"').to_string()
        }
    };
    assert!(etag("out/run=run-m/big.parquet").await.ends_with("-3"));
    assert!(!etag("out/run=run-m/small.parquet").await.contains('-'));
    bucket.remove().await;
}

#[tokio::test]
async fn list_follows_continuation_pages_and_stays_inside_the_run() {
    let bucket = TestBucket::new("pages").await;
    let sink = sink(&bucket, "p").with_list_page_size(7);
    let mut expected: Vec<String> = (0..30).map(|n| format!("part-{n:03}.parquet")).collect();
    for name in &expected {
        sink.put("r1", name, name.as_bytes().to_vec())
            .await
            .unwrap();
    }
    // `run=r10/` shares the string prefix `run=r1` and must not leak into r1's listing.
    sink.put("r10", "part-999.parquet", vec![1]).await.unwrap();

    let mut names = sink.list("r1").await.unwrap();
    names.sort();
    expected.sort();
    assert_eq!(names, expected);
    bucket.remove().await;
}

#[tokio::test]
async fn delete_run_removes_that_run_and_nothing_else() {
    let bucket = TestBucket::new("delrun").await;
    let sink = sink(&bucket, "d").with_list_page_size(4);
    for n in 0..9 {
        sink.put("r1", &format!("part-{n}.parquet"), vec![n])
            .await
            .unwrap();
    }
    // `run=r10/` shares the string prefix `run=r1`: it must survive.
    sink.put("r10", "part-0.parquet", vec![1]).await.unwrap();

    assert_eq!(sink.delete_run("r1").await.unwrap(), 9);
    assert!(sink.list("r1").await.unwrap().is_empty());
    assert_eq!(sink.list("r10").await.unwrap(), ["part-0.parquet"]);
    bucket.remove().await;
}

#[tokio::test]
async fn list_returns_more_than_the_thousand_keys_of_one_default_page() {
    let bucket = TestBucket::new("thousand").await;
    let sink = sink(&bucket, "");
    let names: Vec<String> = (0..1005).map(|n| format!("part-{n:04}.parquet")).collect();
    futures::stream::iter(&names)
        .map(|n| sink.put("big-run", n, vec![0]))
        .buffer_unordered(32)
        .try_collect::<Vec<()>>()
        .await
        .unwrap();

    let mut listed = sink.list("big-run").await.unwrap();
    listed.sort();
    assert_eq!(listed.len(), 1005);
    assert_eq!(listed, names);
    bucket.remove().await;
}

#[tokio::test]
async fn a_missing_file_is_an_error_naming_the_key_and_the_store_code() {
    let bucket = TestBucket::new("missing").await;
    let err = sink(&bucket, "x")
        .get("run-z", "part-1.parquet")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!("s3://{}/x/run=run-z/part-1.parquet", bucket.name)),
        "{err}"
    );
    assert!(err.contains("GetObject"), "{err}");
    assert!(err.contains("NoSuchKey"), "{err}");
    bucket.remove().await;
}

#[tokio::test]
async fn a_wrong_secret_is_refused_with_the_store_code_and_the_secret_is_not_shown() {
    let bucket = TestBucket::new("auth").await;
    let wrong_secret = "not-the-secret-4711";
    let client = S3Config::local(&endpoint(), ACCESS_KEY, wrong_secret)
        .client()
        .await;
    let sink = S3Sink::new(
        client,
        &S3Url::parse(&format!("s3://{}/out", bucket.name)).unwrap(),
    );
    let err = sink
        .put("run-1", "part-1.parquet", vec![1, 2, 3])
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("PutObject"), "{err}");
    assert!(err.contains("SignatureDoesNotMatch"), "{err}");
    assert!(!err.contains(wrong_secret), "{err}");
    assert!(bucket.keys().await.is_empty());
    bucket.remove().await;
}

#[tokio::test]
async fn a_put_to_a_stopped_store_fails_after_its_retries_instead_of_hanging() {
    let endpoint = format!("http://127.0.0.1:{}", closed_port());
    let client = S3Config::local(&endpoint, ACCESS_KEY, SECRET_KEY)
        .client()
        .await;
    let sink = S3Sink::new(client, &S3Url::parse("s3://offpeak-down/out").unwrap());
    let started = Instant::now();
    let err = tokio::time::timeout(
        Duration::from_secs(30),
        sink.put("run-1", "part-1.parquet", vec![1, 2, 3]),
    )
    .await
    .expect("the put must give up on its own")
    .unwrap_err()
    .to_string();
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    assert!(
        err.contains("s3://offpeak-down/out/run=run-1/part-1.parquet"),
        "{err}"
    );
    assert!(err.contains("PutObject failed"), "{err}");
    assert!(!err.contains(SECRET_KEY), "{err}");
}

#[tokio::test]
async fn a_store_that_accepts_but_never_answers_times_out() {
    // Connections are accepted by the kernel backlog and never answered.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let config = S3Config {
        max_attempts: 2,
        read_timeout: Duration::from_secs(1),
        ..S3Config::local(
            &format!("http://{}", silent.local_addr().unwrap()),
            ACCESS_KEY,
            SECRET_KEY,
        )
    };
    let sink = S3Sink::new(
        config.client().await,
        &S3Url::parse("s3://offpeak-silent").unwrap(),
    );
    let err = tokio::time::timeout(
        Duration::from_secs(30),
        sink.put("run-1", "part-1.parquet", vec![1, 2, 3]),
    )
    .await
    .expect("the put must time out on its own")
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("s3://offpeak-silent/run=run-1/part-1.parquet"),
        "{err}"
    );
    assert!(err.to_lowercase().contains("timeout"), "{err}");
    drop(silent);
}

#[tokio::test]
async fn open_sink_picks_s3_for_s3_locations_and_a_directory_otherwise() {
    let s3 = open_sink("s3://offpeak-results/nightly/").await.unwrap();
    assert_eq!(s3.location(), "s3://offpeak-results/nightly");
    let dir = tempfile::tempdir().unwrap();
    let local = open_sink(dir.path().to_str().unwrap()).await.unwrap();
    assert_eq!(local.location(), dir.path().display().to_string());
    let err = open_sink("s3://Bad_Bucket/x")
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("s3://Bad_Bucket/x"), "{err}");
}

#[tokio::test]
async fn file_names_and_run_ids_cannot_escape_the_run_prefix() {
    let sink = S3Sink::new(
        S3Config::local(&endpoint(), ACCESS_KEY, SECRET_KEY)
            .client()
            .await,
        &S3Url::parse("s3://offpeak-never-created/out").unwrap(),
    );
    for (run, name) in [("r", "a/b.parquet"), ("r", ".."), ("r", ""), ("../r", "x")] {
        assert!(sink.put(run, name, vec![]).await.is_err(), "{run} {name}");
    }
}
