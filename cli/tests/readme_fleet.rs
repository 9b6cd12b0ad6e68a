//! The README's fleet walkthrough, run as written: its `sh` block is executed by bash on this
//! machine — the simulator, NATS, three workers on one host, `submit`, `status --wait`,
//! `results` — with nothing changed but a broker namespace of the test's own (an environment
//! variable the walkthrough leaves alone) and the `offpeak` under test first on `PATH`.

mod support;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::*;

/// The first `sh` block after the README's fleet heading.
fn fleet_block() -> String {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let section = &readme[readme
        .find("### The fleet")
        .expect("README has a fleet section")..];
    let start = section.find("```sh\n").expect("a sh block") + "```sh\n".len();
    let len = section[start..].find("```").unwrap();
    section[start..start + len].to_string()
}

#[test]
fn the_readmes_fleet_walkthrough_runs_as_written_with_three_workers() {
    let block = fleet_block();
    assert_eq!(
        block
            .lines()
            .filter(|l| l.starts_with("offpeak worker"))
            .count(),
        3,
        "the walkthrough should start three workers:\n{block}"
    );
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(root().join("examples"), dir.path().join("examples")).unwrap();
    let bin_dir = offpeak_bin().parent().unwrap().to_path_buf();
    let namespace = unique("readme");
    let script = format!("set -euo pipefail\n{block}\nwait\n");
    let mut child = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(dir.path())
        .env(
            "PATH",
            format!(
                "{}:{}",
                bin_dir.display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .env("OFFPEAK_BROKER__NAMESPACE", &namespace)
        .env_remove("OFFPEAK_CONFIG")
        .env_remove("OFFPEAK_METRICS_ADDR")
        .env_remove("OFFPEAK_S3_ENDPOINT")
        .env_remove("AWS_ENDPOINT_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (mut out, mut err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let stdout = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let stderr = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if started.elapsed() > Duration::from_secs(600) {
            let _ = child.kill();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let (stdout, stderr) = (stdout.join().unwrap(), stderr.join().unwrap());
    rt().block_on(testkit::queues::delete_broker_namespace(
        &nats_url(),
        &queue::BrokerOptions::with_namespace(&namespace),
    ));
    assert!(
        status.is_some_and(|s| s.success()),
        "the walkthrough failed ({status:?}):\n{stdout}\n{stderr}"
    );
    // Three workers ran side by side (no metrics port clash) and each stopped cleanly.
    let stopped = stderr.matches(": stopped; ").count();
    assert_eq!(stopped, 3, "{stderr}");
    let mut metrics: Vec<&str> = stderr
        .lines()
        .filter_map(|l| l.split("metrics on ").nth(1))
        .collect();
    metrics.sort();
    metrics.dedup();
    assert_eq!(metrics.len(), 3, "{stderr}");

    let jobs = std::fs::read_to_string(root().join("examples/jobs.jsonl")).unwrap();
    let n = jobs.lines().filter(|l| !l.trim().is_empty()).count();
    let rows = rt().block_on(async {
        let sink = store::LocalDirSink::new(dir.path().join("out/fleet"));
        store::dedup(store::read_run(&sink, "nightly-1").await.unwrap())
    });
    assert_eq!(rows.len(), n);
    assert!(rows
        .iter()
        .all(|r| r.status == schemas::ResultStatus::Succeeded));
    let exported = std::fs::read_to_string(dir.path().join("out/nightly-1.jsonl")).unwrap();
    assert_eq!(exported.lines().count(), n);
}
