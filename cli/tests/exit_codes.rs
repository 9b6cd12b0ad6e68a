//! What the `offpeak` binary tells scripts when something is wrong or stops it: refused
//! configuration, empty job files and unknown runs give the exit codes of the README's table
//! with a message naming the culprit once; ctrl-c exits 130; every subcommand's help has
//! examples. Only the interruption of `worker` needs a service (NATS on this machine).

mod support;

use std::io::Read;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use support::{http_get, nats_url, root, text, unique};

/// One provider `p` serving model `m` at `base_url`.
fn catalog(base_url: &str) -> String {
    format!(
        "[[providers]]\nname = \"p\"\nkind = \"openai\"\nbase_url = \"{base_url}\"\n\
         [[providers.models]]\nmodel = \"m\"\nid = \"m\"\ninput_per_mtok = 1\noutput_per_mtok = 2\n"
    )
}

/// A directory holding `catalog.toml` (served by the simulator) and `jobs.jsonl` (`n` jobs).
fn workspace(n: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("catalog.toml"), catalog("http://unused/v1")).unwrap();
    support::job_file(&dir.path().join("jobs.jsonl"), n, |i| {
        format!(r#"{{"id":"j{i}","model":"m","prompt":"hello {i}"}}"#)
    });
    dir
}

fn offpeak(args: &[&str], envs: &[(&str, &str)]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_offpeak"));
    c.current_dir(root())
        .args(args)
        .env_remove("OFFPEAK_CONFIG")
        .env_remove("OFFPEAK_OUTPUT")
        .env_remove("OFFPEAK_CATALOG")
        .env_remove("OFFPEAK_BROKER");
    for (k, v) in envs {
        c.env(k, v);
    }
    c
}

fn output(args: &[&str], envs: &[(&str, &str)]) -> Output {
    offpeak(args, envs).output().expect("run offpeak")
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Asserts the exit code and that stderr contains every needle; returns stderr.
fn expect(o: &Output, code: i32, needles: &[&str]) -> String {
    let err = text(&o.stderr);
    assert_eq!(
        o.status.code(),
        Some(code),
        "stdout:\n{}\nstderr:\n{err}",
        text(&o.stdout)
    );
    for n in needles {
        assert!(err.contains(n), "stderr lacks {n:?}:\n{err}");
    }
    err
}

/// `offpeak run` of the workspace's jobs on the simulator, with extra arguments.
fn run(dir: &Path, extra: &[&str], envs: &[(&str, &str)]) -> Output {
    let out = dir.join("out");
    let jobs = dir.join("jobs.jsonl");
    let cat = dir.join("catalog.toml");
    let mut args = vec![
        "run",
        p(&jobs),
        "--catalog",
        p(&cat),
        "--simulate",
        "--quiet",
        "--out",
        p(&out),
    ];
    args.extend_from_slice(extra);
    output(&args, envs)
}

#[test]
fn negative_timeouts_in_the_configuration_are_refused_naming_the_key() {
    let dir = workspace(2);
    let o = run(
        dir.path(),
        &[],
        &[("OFFPEAK_WORKER__REQUEST_TIMEOUT_S", "-1")],
    );
    expect(&o, 2, &["worker.request_timeout_s"]);

    let config = dir.path().join("offpeak.toml");
    std::fs::write(&config, "[worker]\nshutdown_grace_s = -5\n").unwrap();
    let o = run(dir.path(), &["--config", p(&config)], &[]);
    expect(&o, 2, &["worker.shutdown_grace_s"]);
}

#[test]
fn zero_concurrency_is_refused_by_run_and_worker() {
    let dir = workspace(2);
    let o = run(dir.path(), &["--concurrency", "0"], &[]);
    expect(&o, 2, &["worker.concurrency"]);

    // Refused before any broker is contacted (nothing listens on port 1).
    let o = output(
        &[
            "worker",
            "--broker",
            "nats://127.0.0.1:1",
            "--output",
            p(&dir.path().join("out")),
            "--catalog",
            p(&dir.path().join("catalog.toml")),
            "--metrics-addr",
            "127.0.0.1:0",
            "--concurrency",
            "0",
        ],
        &[],
    );
    expect(&o, 2, &["worker.concurrency"]);
}

#[test]
fn empty_and_blank_job_files_are_invalid_input_for_run_and_submit() {
    let dir = workspace(0);
    let out = dir.path().join("out");
    let cat = dir.path().join("catalog.toml");
    for (name, content) in [("empty.jsonl", ""), ("blank.jsonl", "\n   \n\t\n")] {
        let jobs = dir.path().join(name);
        std::fs::write(&jobs, content).unwrap();
        let o = output(
            &[
                "run",
                p(&jobs),
                "--catalog",
                p(&cat),
                "--simulate",
                "--out",
                p(&out),
            ],
            &[],
        );
        expect(&o, 2, &[name, "no jobs"]);
        let o = output(
            &[
                "submit",
                p(&jobs),
                "--catalog",
                p(&cat),
                "--broker",
                "nats://127.0.0.1:1",
                "--output",
                p(&out),
                "--quiet",
            ],
            &[],
        );
        expect(&o, 2, &[name, "no jobs"]);
    }
}

#[test]
fn results_of_an_unknown_run_or_a_missing_output_is_an_error_like_status() {
    let dir = workspace(2);
    let o = run(dir.path(), &["--run-id", "known"], &[]);
    expect(&o, 0, &[]);
    let out = dir.path().join("out");
    let missing = dir.path().join("no-such-dir");
    let export = dir.path().join("export.jsonl");
    for (run, place) in [("unknown", &out), ("known", &missing)] {
        let o = output(
            &["results", run, "--output", p(place), "-o", p(&export)],
            &[],
        );
        let no_run = format!("no run {run}");
        expect(&o, 1, &[&no_run]);
        assert!(!export.exists(), "an export was written for {run}");
        let o = output(&["status", run, "--output", p(place)], &[]);
        expect(&o, 1, &[&no_run]);
    }
    let o = output(
        &["results", "known", "--output", p(&out), "-o", p(&export)],
        &[],
    );
    expect(&o, 0, &[]);
    assert_eq!(std::fs::read_to_string(&export).unwrap().lines().count(), 2);
}

#[test]
fn status_wait_sees_a_finished_local_run_as_finished() {
    let dir = workspace(3);
    let o = run(dir.path(), &["--run-id", "local"], &[]);
    expect(&o, 0, &[]);
    let o = output(
        &[
            "status",
            "local",
            "--output",
            p(&dir.path().join("out")),
            "--wait",
            "--interval",
            "100ms",
            "--timeout",
            "5s",
        ],
        &[],
    );
    expect(&o, 0, &[]);
    assert!(
        text(&o.stdout).contains("3 succeeded"),
        "{}",
        text(&o.stdout)
    );
}

#[test]
fn a_missing_job_file_names_its_cause_once() {
    let dir = workspace(0);
    let missing = dir.path().join("missing.jsonl");
    let o = output(
        &[
            "run",
            p(&missing),
            "--catalog",
            p(&dir.path().join("catalog.toml")),
            "--simulate",
        ],
        &[],
    );
    let err = text(&o.stderr);
    assert_ne!(o.status.code(), Some(0), "{err}");
    assert!(err.contains("missing.jsonl"), "{err}");
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
}

#[test]
fn a_broken_catalog_prints_its_toml_error_once() {
    let dir = workspace(1);
    let cat = dir.path().join("catalog.toml");
    std::fs::write(&cat, "[[providers]]\nname = \n").unwrap();
    let o = output(
        &[
            "run",
            p(&dir.path().join("jobs.jsonl")),
            "--catalog",
            p(&cat),
            "--simulate",
        ],
        &[],
    );
    let err = expect(&o, 2, &["catalog.toml"]);
    assert_eq!(err.matches("TOML parse error").count(), 1, "{err}");
    assert_eq!(err.matches("name = ").count(), 1, "{err}");
}

/// Sends `signal` (`INT`, `TERM`) to the process and waits for its exit code.
fn signal_and_wait(child: &mut std::process::Child, signal: &str) -> Option<i32> {
    let pid = child.id().to_string();
    let sent = Command::new("kill")
        .args([&format!("-{signal}"), &pid])
        .status();
    assert!(sent.is_ok_and(|s| s.success()), "kill -{signal} {pid}");
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        if let Some(s) = child.try_wait().unwrap() {
            return s.code();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    panic!("no exit within 30 s of SIGINT/SIGTERM");
}

#[test]
fn ctrl_c_stops_a_local_run_with_exit_code_130() {
    // A provider that accepts the request and never answers: the job is in flight when ctrl-c
    // comes.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dir = workspace(1);
    let cat = dir.path().join("silent.toml");
    let url = format!("http://{}/v1", silent.local_addr().unwrap());
    std::fs::write(&cat, catalog(&url)).unwrap();
    let jobs = dir.path().join("jobs.jsonl");
    let out = dir.path().join("out");
    let mut child = offpeak(
        &[
            "run",
            p(&jobs),
            "--catalog",
            p(&cat),
            "--quiet",
            "--out",
            p(&out),
        ],
        &[("OFFPEAK_WORKER__SHUTDOWN_GRACE_S", "0.5")],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    silent.set_nonblocking(true).unwrap();
    let start = Instant::now();
    let _held = loop {
        match silent.accept() {
            Ok((conn, _)) => break conn,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if let Some(s) = child.try_wait().unwrap() {
                    panic!("offpeak run ended ({s}) before sending the request");
                }
                assert!(start.elapsed() < Duration::from_secs(30), "no request came");
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("accept: {e}"),
        }
    };
    // The request is out; the signal handler is installed as the run starts waiting for it.
    std::thread::sleep(Duration::from_millis(500));
    let code = signal_and_wait(&mut child, "INT");
    let mut err = String::new();
    let _ = child.stderr.take().unwrap().read_to_string(&mut err);
    assert_eq!(code, Some(130), "{err}");
    assert!(err.contains("interrupted"), "{err}");
}

/// A worker on the local NATS in a namespace of its own, its metrics on `port`.
fn nats_worker(dir: &Path, namespace: &str, port: u16) -> std::process::Child {
    offpeak(
        &[
            "worker",
            "--broker",
            &nats_url(),
            "--output",
            p(&dir.join("out")),
            "--catalog",
            p(&dir.join("catalog.toml")),
            "--metrics-addr",
            &format!("127.0.0.1:{port}"),
        ],
        &[("OFFPEAK_BROKER__NAMESPACE", namespace)],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap()
}

fn wait_ready(port: u16) {
    let start = Instant::now();
    loop {
        let ready = std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            && http_get(port, "/readyz").0 == 200;
        if ready {
            // The signal watcher starts right after readiness is set.
            std::thread::sleep(Duration::from_millis(300));
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "worker never ready"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn ctrl_c_stops_a_worker_with_130_and_sigterm_with_0() {
    let dir = workspace(0);
    let namespace = unique("exitcodes");
    for (signal, code) in [("INT", 130), ("TERM", 0)] {
        let port = support::free_port();
        let mut w = nats_worker(dir.path(), &namespace, port);
        wait_ready(port);
        assert_eq!(signal_and_wait(&mut w, signal), Some(code), "SIG{signal}");
    }
    support::rt().block_on(async {
        let opts = queue::BrokerOptions::with_namespace(&namespace);
        if let Ok(q) =
            queue::NatsQueue::connect(queue::NatsOptions::from_broker(&nats_url(), &opts)).await
        {
            let _ = q.delete_topology().await;
        }
    });
}

#[test]
fn every_subcommand_has_examples_in_its_long_help() {
    for sub in [
        "run", "submit", "worker", "status", "results", "bench", "sim",
    ] {
        let o = output(&[sub, "--help"], &[]);
        assert!(o.status.success(), "{sub} --help");
        let help = text(&o.stdout);
        assert!(
            help.contains("Examples:") && help.contains(&format!("offpeak {sub} ")),
            "{sub} --help has no example:\n{help}"
        );
    }
}

#[test]
fn run_help_states_the_run_id_rule_and_sim_help_describes_port_and_host() {
    // Whitespace collapsed: clap may wrap long lines.
    let words = |o: Output| {
        text(&o.stdout)
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    let help = words(output(&["run", "--help"], &[]));
    assert!(
        help.contains("1-128 ASCII letters, digits, `-` or `_`"),
        "{help}"
    );
    let help = words(output(&["sim", "--help"], &[]));
    for needle in [
        "--port <PORT> TCP port to listen on",
        "--host <HOST> Address to listen on",
    ] {
        assert!(
            help.contains(needle),
            "sim --help lacks {needle:?}:\n{help}"
        );
    }
}
