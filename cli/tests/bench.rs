//! `offpeak bench …` with tiny sizes against the real broker, simulator and S3 store: each bench
//! runs to the end and its last line is the `key=value` summary with the documented keys and
//! sane values. Behaviour only; the figures themselves are for docs/benchmarks.md.

mod support;

use std::collections::HashMap;
use std::process::Command;
use support::*;

fn bench(args: &[&str]) -> HashMap<String, String> {
    let bucket = unique("bench");
    let out = Command::new(env!("CARGO_BIN_EXE_offpeak"))
        .current_dir(root())
        .arg("bench")
        .args(args)
        .args(["--output", &format!("s3://{bucket}/bench")])
        .env_remove("OFFPEAK_CONFIG")
        .env("AWS_ACCESS_KEY_ID", S3_KEY)
        .env("AWS_SECRET_ACCESS_KEY", S3_SECRET)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ENDPOINT_URL", s3_endpoint())
        .output()
        .expect("run offpeak bench");
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "bench {args:?} failed: {:?}\n{stdout}\n{}",
        out.status,
        text(&out.stderr)
    );
    let last = stdout.lines().last().unwrap_or_default();
    let pairs: HashMap<String, String> = last
        .split_whitespace()
        .map(|kv| {
            let (k, v) = kv
                .split_once('=')
                .unwrap_or_else(|| panic!("{kv:?} in the last line is not key=value:\n{stdout}"));
            (k.to_string(), v.to_string())
        })
        .collect();
    assert!(pairs.len() >= 3, "summary line too short:\n{stdout}");
    pairs
}

fn num(s: &HashMap<String, String>, key: &str) -> f64 {
    let v = s
        .get(key)
        .unwrap_or_else(|| panic!("no {key} in the summary {s:?}"));
    v.parse::<f64>()
        .unwrap_or_else(|_| panic!("{key}={v} is not a number"))
}

fn positive(s: &HashMap<String, String>, keys: &[&str]) {
    for k in keys {
        let v = num(s, k);
        assert!(v.is_finite() && v > 0.0, "{k}={v} in {s:?}");
    }
}

fn throughput_summary_has_every_stage_and_a_positive_ratio(broker: &str, name: &str) {
    let s = bench(&["throughput", "--broker", broker, "-n", "300"]);
    assert_eq!(s["bench"], "throughput");
    assert_eq!(s["broker"], name);
    assert_eq!(num(&s, "n"), 300.0);
    positive(
        &s,
        &[
            "broker_jobs_s",
            "http_jobs_s",
            "limit_jobs_s",
            "submit_jobs_s",
            "worker_jobs_s",
            "pipeline_jobs_s",
            "ratio",
        ],
    );
    assert!(num(&s, "limit_jobs_s") <= num(&s, "http_jobs_s"));
}

#[test]
fn throughput_bench_on_nats_ends_with_a_summary_line() {
    throughput_summary_has_every_stage_and_a_positive_ratio(&nats_url(), "nats");
}

#[test]
fn throughput_bench_on_rabbitmq_ends_with_a_summary_line() {
    throughput_summary_has_every_stage_and_a_positive_ratio(&amqp_url(), "rabbitmq");
}

#[test]
fn concurrency_bench_reports_each_level_against_littles_law_and_peak_rss() {
    let s = bench(&[
        "concurrency",
        "--broker",
        &nats_url(),
        "--levels",
        "10,40",
        "--waves",
        "2",
        "--latency",
        "200ms",
    ]);
    assert_eq!(s["bench"], "concurrency");
    assert_eq!(num(&s, "c"), 40.0);
    positive(
        &s,
        &[
            "c10_jobs_s",
            "c10_ratio",
            "c40_jobs_s",
            "c40_ratio",
            "ratio",
            "rss_mb",
        ],
    );
    // Nothing completes faster than Little's law allows.
    assert!(num(&s, "ratio") < 1.5, "{s:?}");
}

#[test]
fn submit_bench_reports_rates_and_peak_rss_for_both_formats_and_sizes() {
    let s = bench(&["submit", "--broker", &nats_url(), "--sizes", "200,2000"]);
    assert_eq!(s["bench"], "submit");
    assert_eq!(num(&s, "small_jobs"), 200.0);
    assert_eq!(num(&s, "large_jobs"), 2000.0);
    let mut keys = vec!["raw_publish_jobs_s", "ratio", "rss_growth", "max_rss_mb"];
    let names: Vec<String> = ["jsonl", "parquet"]
        .iter()
        .flat_map(|f| ["small", "large"].map(move |z| (f, z)))
        .flat_map(|(f, z)| ["validate", "submit"].map(move |m| format!("{f}_{z}_{m}")))
        .flat_map(|k| [format!("{k}_jobs_s"), format!("{k}_rss_mb")])
        .collect();
    keys.extend(names.iter().map(String::as_str));
    positive(&s, &keys);
}

#[test]
fn scale_bench_reports_jobs_per_second_and_speed_up_per_worker_count() {
    let s = bench(&[
        "scale",
        "--broker",
        &nats_url(),
        "--workers",
        "1,2",
        "--jobs-per-worker",
        "200",
        "--concurrency",
        "16",
        "--latency",
        "50ms",
    ]);
    assert_eq!(s["bench"], "scale");
    positive(
        &s,
        &[
            "w1_jobs_s",
            "w2_jobs_s",
            "speedup_1",
            "speedup_2",
            "efficiency",
        ],
    );
    assert_eq!(num(&s, "speedup_1"), 1.0);
}
