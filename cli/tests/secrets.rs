//! Secrets (issue 4): a full pipeline — `submit`, a worker, `status` — with canary API keys (one
//! from an environment variable, one from a key file, one the provider rejects) and every
//! process logging at `trace` as JSON. No canary may appear in any log line at any level, any
//! Parquet cell, any error message, the metrics or the dead letters; and prompts and outputs
//! appear in no log line above debug. And TLS with a private CA (`SSL_CERT_FILE`) to each kind
//! of server a fleet talks to: NATS (`tls://`), RabbitMQ (`amqps://`), S3 (`https://`) and a
//! provider endpoint (`https://` base URL).

mod support;

use schemas::ResultStatus;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
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

/// A private CA and a certificate for `localhost` and 127.0.0.1 signed by it, in `dir`: ca.pem,
/// server.pem and server.key.
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
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName = DNS:localhost, IP:127.0.0.1\n",
    )
    .unwrap();
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

const TLS_SCENARIO: &str =
    "[[providers]]\nname='cheap'\nkind='openai'\nmodels=['m-cheap']\nlatency_ms=1\n";

/// Submits 20 jobs through `fleet`, one of whose connections (broker or store) is TLS to a
/// server with a certificate from a private CA, without trusting that CA: the submission must be
/// refused for the unknown issuer (so the connection really is verified TLS). Returns the job
/// file.
fn refused_without_the_ca(fleet: &Fleet, run: &str) -> PathBuf {
    let jobs = fleet.path("jobs.jsonl");
    job_file(&jobs, 20, |i| {
        format!(r#"{{"id":"t-{i}","model":"m","prompt":"hi {i}","max_tokens":4}}"#)
    });
    let refused = fleet.run(&["submit", jobs.to_str().unwrap(), "--run-id", run, "--quiet"]);
    assert!(
        !refused.status.success() && text(&refused.stderr).contains("UnknownIssuer"),
        "a certificate from an unknown CA was accepted: {}",
        text(&refused.stderr)
    );
    jobs
}

/// The same run with the CA in `tls` named by `SSL_CERT_FILE` (which rustls-native-certs reads
/// instead of the system store): submit, one worker and `status --wait` must all go through,
/// every job answered.
fn completes_trusting_the_ca(fleet: &mut Fleet, tls: &Path, run: &str, jobs: &Path) {
    fleet.extra_env.push((
        "SSL_CERT_FILE".into(),
        tls.join("ca.pem").display().to_string(),
    ));
    fleet.submit(jobs, run);
    let mut w = fleet.worker("t0");
    let o = fleet.wait_for(run, "120s");
    assert!(o.status.success(), "{}\n{}", text(&o.stderr), w.log_text());
    assert!(w
        .terminate(Duration::from_secs(60))
        .is_some_and(|s| s.success()));
    let rows = store::dedup(fleet.rows(run));
    assert_eq!(rows.len(), 20);
    assert!(rows.iter().all(|r| r.status == ResultStatus::Succeeded));
}

/// NATS over TLS (`tls://`): a private `nats-server` that requires TLS with a certificate from a
/// private CA.
#[test]
fn nats_over_tls_with_a_private_ca() {
    let tls = tempfile::tempdir().unwrap();
    certificates(tls.path());
    let nats = PrivateNats::start_tls(
        tls.path(),
        &tls.path().join("server.pem"),
        &tls.path().join("server.key"),
    );
    let mut fleet = Fleet::start(&nats.url(), TLS_SCENARIO, ONE_PROVIDER_CATALOG);
    let jobs = refused_without_the_ca(&fleet, "tls");
    completes_trusting_the_ca(&mut fleet, tls.path(), "tls", &jobs);
}

/// RabbitMQ over TLS (`amqps://`): a private RabbitMQ node with an AMQPS listener whose
/// certificate comes from a private CA, reached by host name (`amqps://…@localhost:PORT/%2f`).
#[test]
fn rabbitmq_over_amqps_with_a_private_ca() {
    let tls = tempfile::tempdir().unwrap();
    certificates(tls.path());
    let rabbit_dir = tempfile::tempdir().unwrap();
    let rabbit = PrivateRabbit::start_tls(
        rabbit_dir.path(),
        TlsFiles {
            ca: &tls.path().join("ca.pem"),
            cert: &tls.path().join("server.pem"),
            key: &tls.path().join("server.key"),
        },
    );
    let mut fleet = Fleet::start(&rabbit.tls_url(), TLS_SCENARIO, ONE_PROVIDER_CATALOG);
    let jobs = refused_without_the_ca(&fleet, "amqps");
    completes_trusting_the_ca(&mut fleet, tls.path(), "amqps", &jobs);
}

/// A TLS-terminating proxy on loopback: TLS with the test CA's certificate for `localhost` in
/// front of a plain TCP `upstream` (the test S3 store, the simulator), on a runtime of its own.
/// Counts the TCP connections accepted and the handshakes that completed, and keeps the errors
/// of the handshakes that did not (what the client's alert said).
struct TlsProxy {
    port: u16,
    connections: Arc<AtomicUsize>,
    handshakes: Arc<AtomicUsize>,
    refusals: Arc<std::sync::Mutex<Vec<String>>>,
    _rt: tokio::runtime::Runtime,
}

impl TlsProxy {
    fn start(tls: &Path, upstream: &str) -> TlsProxy {
        use tokio_rustls::rustls;
        use tokio_rustls::rustls::pki_types::pem::PemObject;
        use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let certs = CertificateDer::pem_file_iter(tls.join("server.pem"))
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(tls.join("server.key")).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let rt = rt();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = Arc::new(AtomicUsize::new(0));
        let handshakes = Arc::new(AtomicUsize::new(0));
        let refusals = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (accepted, count, refused) =
            (connections.clone(), handshakes.clone(), refusals.clone());
        let upstream = upstream.to_string();
        rt.spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                accepted.fetch_add(1, Ordering::SeqCst);
                let (acceptor, upstream, count, refused) = (
                    acceptor.clone(),
                    upstream.clone(),
                    count.clone(),
                    refused.clone(),
                );
                tokio::spawn(async move {
                    // A client that refuses the certificate ends the handshake here.
                    let mut tls = match acceptor.accept(tcp).await {
                        Ok(tls) => tls,
                        Err(e) => {
                            refused.lock().unwrap().push(e.to_string());
                            return;
                        }
                    };
                    count.fetch_add(1, Ordering::SeqCst);
                    if let Ok(mut plain) = tokio::net::TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                    }
                });
            }
        });
        TlsProxy {
            port,
            connections,
            handshakes,
            refusals,
            _rt: rt,
        }
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    fn handshakes(&self) -> usize {
        self.handshakes.load(Ordering::SeqCst)
    }

    /// The errors of the handshakes that failed, as the server saw them.
    fn refusals(&self) -> Vec<String> {
        self.refusals.lock().unwrap().clone()
    }
}

/// S3 over HTTPS: the results (and the run manifest) go to `s3://` through
/// `AWS_ENDPOINT_URL=https://localhost:PORT`, a TLS proxy with a certificate from a private CA in
/// front of the test store (s3s-fs serves plain HTTP only). The broker is the plain local NATS.
#[test]
fn s3_over_https_with_a_private_ca() {
    let tls = tempfile::tempdir().unwrap();
    certificates(tls.path());
    let endpoint = s3_endpoint();
    let upstream = endpoint
        .strip_prefix("http://")
        .unwrap_or_else(|| panic!("the test store {endpoint} is not plain HTTP"))
        .trim_end_matches('/');
    let proxy = TlsProxy::start(tls.path(), upstream);
    let mut fleet = Fleet::start(&nats_url(), TLS_SCENARIO, ONE_PROVIDER_CATALOG);
    fleet.extra_env.push((
        "AWS_ENDPOINT_URL".into(),
        format!("https://localhost:{}", proxy.port),
    ));
    let jobs = refused_without_the_ca(&fleet, "https");
    assert_eq!(
        proxy.handshakes(),
        0,
        "a handshake completed without the CA"
    );
    completes_trusting_the_ca(&mut fleet, tls.path(), "https", &jobs);
    // The run's manifest and results went through the proxy (the rows were read back directly).
    assert!(proxy.handshakes() > 0, "nothing went through the TLS proxy");
}

/// The provider client over HTTPS: `offpeak run` (local mode: embedded queue, results in a
/// local directory) against a catalog whose provider `base_url` is
/// `https://localhost:PORT/cheap/v1`, a TLS proxy with a certificate from a private CA in front
/// of the simulator (which serves plain HTTP only). Without trusting the CA, every job fails
/// (one attempt, so the test does not wait on retries) and no handshake completes; with
/// `SSL_CERT_FILE` naming the CA, every job succeeds through the proxy.
#[test]
fn provider_over_https_with_a_private_ca() {
    let tls = tempfile::tempdir().unwrap();
    certificates(tls.path());
    let dir = tls.path();
    std::fs::write(dir.join("scenario.toml"), TLS_SCENARIO).unwrap();
    let sim_port = free_port();
    let _sim = start_sim(&dir.join("scenario.toml"), sim_port, &dir.join("sim.log"));
    let proxy = TlsProxy::start(dir, &format!("127.0.0.1:{sim_port}"));
    std::fs::write(
        dir.join("catalog.toml"),
        format!(
            r#"
[[providers]]
name = "cheap"
kind = "openai"
base_url = "https://localhost:{}/cheap/v1"
api_key_env = "OFFPEAK_TEST_CANARY_ENV"
[[providers.models]]
model = "m"
id = "m-cheap"
input_per_mtok = 0.1
output_per_mtok = 0.2
"#,
            proxy.port
        ),
    )
    .unwrap();
    let jobs = dir.join("jobs.jsonl");
    job_file(&jobs, 20, |i| {
        format!(r#"{{"id":"p-{i}","model":"m","prompt":"hi {i}","max_tokens":4}}"#)
    });
    let out = dir.join("out");
    let run = |run_id: &str, ca: Option<&Path>| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_offpeak"));
        c.current_dir(root())
            .args(["run", jobs.to_str().unwrap(), "--catalog"])
            .arg(dir.join("catalog.toml"))
            .arg("--out")
            .arg(&out)
            .args(["--run-id", run_id, "--quiet"])
            .env_remove("OFFPEAK_CONFIG")
            .env_remove("SSL_CERT_FILE")
            .env_remove("SSL_CERT_DIR")
            .env("OFFPEAK_TEST_CANARY_ENV", ENV_KEY)
            .env("OFFPEAK_WORKER__MAX_ATTEMPTS", "1")
            .env("OFFPEAK_WORKER__REQUEST_TIMEOUT_S", "10")
            .env("OFFPEAK_WORKER__BREAKER__FAILURE_THRESHOLD", "1000")
            .env("OFFPEAK_WORKER__FLUSH__MAX_AGE_S", "1");
        if let Some(ca) = ca {
            c.env("SSL_CERT_FILE", ca);
        }
        let o = c.output().expect("run offpeak");
        let rows = store::dedup(local_rows(&out, run_id));
        (o, rows)
    };

    // Not trusting the CA: every job fails at its first (and only) attempt, refused during the
    // handshake, and the run exits 3 (finished, some jobs failed). Each row names the
    // certificate problem (reqwest's message with its causes), and so does the proxy's side.
    let (o, rows) = run("refused", None);
    let (stdout, stderr) = (text(&o.stdout), text(&o.stderr));
    assert_eq!(o.status.code(), Some(3), "{stdout}\n{stderr}");
    assert_eq!(rows.len(), 20, "{rows:?}");
    for r in &rows {
        let message = r.error_message.as_deref().unwrap_or_default();
        assert!(
            r.status == ResultStatus::Failed
                && r.error_kind.as_deref() == Some("transient")
                && message.contains("connection failed")
                && message.contains("invalid peer certificate: UnknownIssuer"),
            "{r:?}"
        );
        assert!(!message.contains(ENV_KEY), "{message}");
    }
    assert!(!stdout.contains(ENV_KEY) && !stderr.contains(ENV_KEY));
    // The client reached the proxy and ended every handshake with an `unknown_ca` alert.
    assert!(proxy.connections() > 0, "the provider was never reached");
    assert_eq!(
        proxy.handshakes(),
        0,
        "a handshake completed without the CA"
    );
    let refusals = proxy.refusals();
    assert!(
        !refusals.is_empty() && refusals.iter().all(|e| e.contains("UnknownCA")),
        "{refusals:?}"
    );

    // Trusting the CA through SSL_CERT_FILE: every job succeeds, through the proxy.
    let (o, rows) = run("trusted", Some(&dir.join("ca.pem")));
    assert!(
        o.status.success(),
        "{}\n{}",
        text(&o.stdout),
        text(&o.stderr)
    );
    assert_eq!(rows.len(), 20, "{rows:?}");
    assert!(
        rows.iter().all(|r| r.status == ResultStatus::Succeeded
            && r.provider.as_deref() == Some("cheap")
            && r.output_tokens > 0),
        "{rows:?}"
    );
    assert!(proxy.handshakes() > 0, "nothing went through the TLS proxy");
}

/// Every row stored under `<out>/run=<run_id>/`, duplicates included.
fn local_rows(out: &Path, run_id: &str) -> Vec<schemas::ResultRow> {
    let Ok(rd) = std::fs::read_dir(out.join(format!("run={run_id}"))) else {
        return vec![];
    };
    rd.map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "parquet"))
        .flat_map(|p| store::decode_parquet(std::fs::read(&p).unwrap()).unwrap())
        .collect()
}
