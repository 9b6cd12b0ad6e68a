//! Secrets (issue 4): a full pipeline — `submit`, a worker, `status` — with canary API keys (one
//! from an environment variable, one from a key file, one the provider rejects) and every
//! process logging at `trace` as JSON. No canary may appear in any log line at any level, any
//! Parquet cell, any error message, the metrics or the dead letters; and prompts and outputs
//! appear in no log line above debug.

mod support;

use schemas::ResultStatus;
use std::process::Stdio;
use std::time::Duration;
use support::*;

const ENV_KEY: &str = "sk-canary-env-5b7c1e9d2a4f6083";
const FILE_KEY: &str = "sk-ant-canary-file-93e1d07c5a2b";
const WRONG_KEY: &str = "sk-canary-wrong-0c6f2a8e4d1b7395";
const PROMPT_MARK: &str = "PROMPTCANARY";

fn catalog(key_file: &std::path::Path) -> String {
    format!(
        r#"
[[providers]]
name = "envkey"
kind = "openai"
base_url = "{{SIM}}/envkey/v1"
api_key_env = "OFFPEAK_TEST_CANARY_ENV"
[[providers.models]]
model = "a"
id = "a-1"
input_per_mtok = 0.1
output_per_mtok = 0.2

[[providers]]
name = "filekey"
kind = "anthropic"
base_url = "{{SIM}}/filekey/v1"
api_key_file = "{}"
[[providers.models]]
model = "b"
id = "b-1"
input_per_mtok = 0.1
output_per_mtok = 0.2

[[providers]]
name = "wrongkey"
kind = "openai"
base_url = "{{SIM}}/wrongkey/v1"
api_key_env = "OFFPEAK_TEST_CANARY_WRONG"
[[providers.models]]
model = "w"
id = "w-1"
input_per_mtok = 0.1
output_per_mtok = 0.2
"#,
        key_file.display()
    )
}

fn scenario() -> String {
    format!(
        r#"
seed = 4
[[providers]]
name = "envkey"
kind = "openai"
models = ["a-1"]
api_key = "{ENV_KEY}"
latency_ms = 1

[[providers]]
name = "filekey"
kind = "anthropic"
models = ["b-1"]
api_key = "{FILE_KEY}"
latency_ms = 1

[[providers]]
name = "wrongkey"
kind = "openai"
models = ["w-1"]
api_key = "sk-the-key-the-provider-expects"
latency_ms = 1
"#
    )
}

/// Log lines (JSON) above debug.
fn loud_lines(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v["level"].as_str().map(str::to_string))
                .is_none_or(|lvl| !matches!(lvl.as_str(), "DEBUG" | "TRACE"))
        })
        .collect()
}

#[test]
fn canary_keys_appear_in_no_log_cell_error_metric_or_dead_letter() {
    let key_dir = tempfile::tempdir().unwrap();
    let key_file = key_dir.path().join("anthropic.key");
    std::fs::write(&key_file, format!("{FILE_KEY}\n")).unwrap();
    let mut fleet = Fleet::start(&nats_url(), &scenario(), &catalog(&key_file));
    fleet
        .extra_env
        .push(("OFFPEAK_TEST_CANARY_ENV".into(), ENV_KEY.into()));
    fleet
        .extra_env
        .push(("OFFPEAK_TEST_CANARY_WRONG".into(), WRONG_KEY.into()));
    fleet
        .extra_env
        .push(("OFFPEAK_WORKER__MAX_ATTEMPTS".into(), "2".into()));
    let jobs = fleet.path("jobs.jsonl");
    job_file(&jobs, 42, |i| {
        let model = match i {
            0 | 1 => "w",
            i if i % 2 == 0 => "a",
            _ => "b",
        };
        format!(
            r#"{{"id":"s-{i}","model":"{model}","prompt":"{PROMPT_MARK} question {i}","max_tokens":20,"priority":"critical"}}"#
        )
    });
    let run = "secrets";
    let trace = ["--log", "trace", "--log-json"];

    let mut logs: Vec<(String, String)> = Vec::new();
    let mut args = vec!["submit", jobs.to_str().unwrap(), "--run-id", run, "--quiet"];
    args.extend(trace);
    let o = fleet.run(&args);
    assert!(o.status.success(), "{}", text(&o.stderr));
    logs.push(("submit".into(), text(&o.stderr) + &text(&o.stdout)));

    let port = free_port();
    let wlog = fleet.path("worker.log");
    let addr = format!("127.0.0.1:{port}");
    let mut wargs = vec!["worker", "--metrics-addr", &addr, "--id", "s0"];
    wargs.extend(trace);
    let child = fleet
        .cmd(&wargs)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&wlog).unwrap())
        .spawn()
        .unwrap();
    let mut w = Proc {
        child,
        name: "s0".into(),
        log: wlog,
    };

    let mut sargs = vec![
        "status",
        run,
        "--wait",
        "--json",
        "--interval",
        "500ms",
        "--timeout",
        "120s",
    ];
    sargs.extend(trace);
    let o = fleet.run(&sargs);
    assert_eq!(
        o.status.code(),
        Some(3),
        "the wrong-key jobs must fail\n{}\n{}",
        text(&o.stdout),
        w.log_text()
    );
    logs.push(("status".into(), text(&o.stderr) + &text(&o.stdout)));
    let (code, metrics) = http_get(port, "/metrics");
    assert_eq!(code, 200);
    logs.push(("metrics".into(), metrics));
    assert!(w
        .terminate(Duration::from_secs(60))
        .is_some_and(|s| s.success()));
    let worker_log = w.log_text();
    assert!(
        worker_log.contains("\"TRACE\"") && worker_log.contains(PROMPT_MARK),
        "the worker did not log at trace: nothing was tested"
    );
    logs.push(("worker".into(), worker_log.clone()));
    let o = fleet.run(&["results", run, "--format", "openai-batch"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    logs.push(("results".into(), text(&o.stdout) + &text(&o.stderr)));

    let rows = fleet.rows(run);
    let ok = |p: &str| {
        rows.iter()
            .filter(|r| r.status == ResultStatus::Succeeded && r.provider.as_deref() == Some(p))
            .count()
    };
    // Both keys were really sent: the simulator answers only requests that carry them.
    assert_eq!((ok("envkey"), ok("filekey")), (20, 20), "{rows:?}");
    let failed: Vec<_> = rows
        .iter()
        .filter(|r| r.status == ResultStatus::Failed)
        .collect();
    assert_eq!(failed.len(), 2);
    for r in &rows {
        logs.push((format!("row {}", r.job_id), format!("{r:?}")));
    }
    for d in fleet.dead_letters() {
        logs.push(("dead letter".into(), text(&d.payload) + &d.reason));
    }

    for (what, text) in &logs {
        for key in [ENV_KEY, FILE_KEY, WRONG_KEY] {
            assert!(!text.contains(key), "{what} leaks the key {key}:\n{text}");
        }
    }
    let outputs: Vec<&str> = rows
        .iter()
        .filter_map(|r| r.output_text.as_deref())
        .filter(|t| t.len() >= 24)
        .collect();
    assert!(!outputs.is_empty());
    for (what, log) in [("worker", worker_log.as_str()), ("submit", &logs[0].1)] {
        for line in loud_lines(log) {
            assert!(
                !line.contains(PROMPT_MARK),
                "{what} logs a prompt above debug: {line}"
            );
            for out in &outputs {
                assert!(
                    !line.contains(out),
                    "{what} logs an output above debug: {line}"
                );
            }
        }
    }
}

fn openssl(dir: &std::path::Path, args: &[&str]) {
    let o = std::process::Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl");
    assert!(o.status.success(), "openssl {args:?}: {}", text(&o.stderr));
}

/// A private CA and a certificate for 127.0.0.1 signed by it: (ca.pem, server.pem, server.key).
fn certificates(dir: &std::path::Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=offpeak test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ],
    );
    std::fs::write(dir.join("san.ext"), "subjectAltName = IP:127.0.0.1\n").unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "san.ext",
            "-out",
            "server.pem",
        ],
    );
}

/// NATS over TLS (`tls://`): a private `nats-server` that requires TLS with a certificate from a
/// private CA. With the CA named by `SSL_CERT_FILE` a run goes through; without it the
/// certificate is refused (so the connection really is verified TLS).
#[test]
fn nats_over_tls_with_a_private_ca() {
    let tls = tempfile::tempdir().unwrap();
    certificates(tls.path());
    let port = free_port();
    let child = std::process::Command::new("/usr/sbin/nats-server")
        .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
        .arg(tls.path().join("store"))
        .arg("--tls")
        .arg("--tlscert")
        .arg(tls.path().join("server.pem"))
        .arg("--tlskey")
        .arg(tls.path().join("server.key"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(tls.path().join("nats.log")).unwrap())
        .spawn()
        .expect("start nats-server");
    let _nats = Proc {
        child,
        name: "nats-tls".into(),
        log: tls.path().join("nats.log"),
    };
    wait_port(port);
    let scenario = "[[providers]]\nname='p'\nkind='openai'\nmodels=['m-1']\nlatency_ms=1\n";
    let catalog = "[[providers]]\nname='p'\nkind='openai'\nbase_url='{SIM}/p/v1'\n[[providers.models]]\nmodel='m'\nid='m-1'\ninput_per_mtok=1.0\noutput_per_mtok=1.0\n";
    let mut fleet = Fleet::start(&format!("tls://127.0.0.1:{port}"), scenario, catalog);
    let jobs = fleet.path("jobs.jsonl");
    job_file(&jobs, 20, |i| {
        format!(r#"{{"id":"t-{i}","model":"m","prompt":"hi {i}","max_tokens":4}}"#)
    });

    let refused = fleet.run(&[
        "submit",
        jobs.to_str().unwrap(),
        "--run-id",
        "tls",
        "--quiet",
    ]);
    assert!(
        !refused.status.success() && text(&refused.stderr).contains("UnknownIssuer"),
        "a certificate from an unknown CA was accepted: {}",
        text(&refused.stderr)
    );

    fleet.extra_env.push((
        "SSL_CERT_FILE".into(),
        tls.path().join("ca.pem").display().to_string(),
    ));
    fleet.submit(&jobs, "tls");
    let mut w = fleet.worker("t0");
    let o = fleet.wait_for("tls", "120s");
    assert!(o.status.success(), "{}\n{}", text(&o.stderr), w.log_text());
    assert!(w
        .terminate(Duration::from_secs(60))
        .is_some_and(|s| s.success()));
    assert_eq!(worker::sink::dedup(fleet.rows("tls")).len(), 20);
}
