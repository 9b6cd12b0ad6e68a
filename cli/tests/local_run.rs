//! `offpeak run` end to end, as a user runs it: the real binary, the in-process simulator
//! speaking real HTTP, Parquet files read back by pyarrow and DuckDB.

use schemas::{ResultRow, ResultStatus};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use testkit::{text, workspace_root as root};

fn offpeak(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_offpeak"));
    c.current_dir(root())
        .args(args)
        .env_remove("OFFPEAK_CONFIG");
    for (k, v) in envs {
        c.env(k, v);
    }
    c.output().expect("run offpeak")
}

fn rows(out: &Path, run: &str) -> Vec<ResultRow> {
    let dir = out.join(format!("run={run}"));
    let mut rows = Vec::new();
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "parquet") {
            rows.extend(store::decode_parquet(std::fs::read(&p).unwrap()).unwrap());
        }
    }
    rows
}

fn parquet_files(out: &Path, run: &str) -> Vec<PathBuf> {
    let dir = out.join(format!("run={run}"));
    let Ok(rd) = std::fs::read_dir(&dir) else {
        return vec![];
    };
    rd.map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "parquet"))
        .collect()
}

#[test]
fn example_run_writes_one_row_per_job_that_pyarrow_and_duckdb_read_and_the_summary_matches() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let summary = tmp.path().join("summary.json");
    let o = offpeak(
        &[
            "run",
            "examples/jobs.jsonl",
            "--catalog",
            "examples/catalog.toml",
            "--simulate",
            "--out",
            out.to_str().unwrap(),
            "--run-id",
            "example",
            "--summary-json",
            summary.to_str().unwrap(),
        ],
        &[],
    );
    assert!(
        o.status.success(),
        "stdout:\n{}\nstderr:\n{}",
        text(&o.stdout),
        text(&o.stderr)
    );
    let stdout = text(&o.stdout);
    for needle in ["300 succeeded", "savings", "deferrals", "p95", "provider"] {
        assert!(
            stdout.contains(needle),
            "summary lacks {needle:?}:\n{stdout}"
        );
    }
    let rows = rows(&out, "example");
    assert_eq!(rows.len(), 300);
    assert!(rows
        .iter()
        .all(|r| r.status == ResultStatus::Succeeded && r.cost_usd > 0.0 && r.output_tokens > 0));
    // Cost-first: the cheapest 70B host serves those jobs unless the row says why not (a
    // critical job finding it at its concurrency limit escalates, and records that).
    let llama: Vec<_> = rows
        .iter()
        .filter(|r| r.model == "llama-3.3-70b-instruct")
        .collect();
    assert!(!llama.is_empty());
    for r in &llama {
        let reason = r.route_reason.as_deref().unwrap_or_default();
        if r.provider.as_deref() != Some("vllm-local") {
            assert!(
                reason.starts_with("escalated"),
                "{} on {:?}: {reason}",
                r.job_id,
                r.provider
            );
        }
    }
    assert!(
        llama
            .iter()
            .filter(|r| r.provider.as_deref() == Some("vllm-local"))
            .count()
            * 10
            >= llama.len() * 9
    );
    assert!(
        rows.iter().map(|r| r.baseline_cost_usd).sum::<f64>()
            > rows.iter().map(|r| r.cost_usd).sum::<f64>()
    );
    let check = Command::new("python3")
        .arg(root().join("tests/readers/check_results.py"))
        .args([
            out.to_str().unwrap(),
            "example",
            summary.to_str().unwrap(),
            "300",
        ])
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}\n{}",
        text(&check.stdout),
        text(&check.stderr)
    );
}

#[test]
fn malformed_job_file_is_refused_naming_line_and_field_and_nothing_is_processed() {
    let tmp = tempfile::tempdir().unwrap();
    let jobs = tmp.path().join("bad.jsonl");
    std::fs::write(
        &jobs,
        [
            r#"{"id":"a","model":"gpt-4o-mini","prompt":"fine"}"#,
            r#"{"id":"b","model":"gpt-4o-mini","prompt":"broken"#,
            r#"{"id":"c","prompt":"no model"}"#,
            r#"{"id":"a","model":"gpt-4o-mini","prompt":"dup"}"#,
            r#"{"id":"d","model":"gpt-9","prompt":"unknown"}"#,
        ]
        .join("\n"),
    )
    .unwrap();
    let out = tmp.path().join("out");
    let o = offpeak(
        &[
            "run",
            jobs.to_str().unwrap(),
            "--catalog",
            "examples/catalog.toml",
            "--simulate",
            "--out",
            out.to_str().unwrap(),
            "--run-id",
            "bad",
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    let err = text(&o.stderr);
    for needle in [
        "bad.jsonl:2: not valid JSON",
        "bad.jsonl:3: field `model`: missing",
        "bad.jsonl:4: field `id`: duplicate id \"a\"",
        "bad.jsonl:5: field `model`: unknown model \"gpt-9\"",
        "nothing was enqueued",
    ] {
        assert!(err.contains(needle), "stderr lacks {needle:?}:\n{err}");
    }
    assert!(parquet_files(&out, "bad").is_empty(), "a job was processed");

    // With --skip-invalid the valid line runs and the others land in the rejects file.
    let o = offpeak(
        &[
            "run",
            jobs.to_str().unwrap(),
            "--catalog",
            "examples/catalog.toml",
            "--simulate",
            "--out",
            out.to_str().unwrap(),
            "--run-id",
            "bad",
            "--skip-invalid",
        ],
        &[],
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    let rows = rows(&out, "bad");
    assert_eq!(
        rows.iter().map(|r| r.job_id.as_str()).collect::<Vec<_>>(),
        vec!["a"]
    );
    let rejects = std::fs::read_to_string(out.join("run=bad/_rejects.jsonl")).unwrap();
    assert_eq!(rejects.lines().count(), 4);
}

#[test]
fn rerun_with_the_same_run_id_processes_only_jobs_without_results() {
    let tmp = tempfile::tempdir().unwrap();
    let jobs = tmp.path().join("jobs.jsonl");
    let lines: Vec<String> = (0..20)
        .map(|i| format!(r#"{{"id":"j{i}","model":"gpt-4o-mini","prompt":"question {i}"}}"#))
        .collect();
    std::fs::write(&jobs, lines.join("\n")).unwrap();
    let out = tmp.path().join("out");
    let args = [
        "run",
        jobs.to_str().unwrap(),
        "--catalog",
        "examples/catalog.toml",
        "--simulate",
        "--out",
        out.to_str().unwrap(),
        "--run-id",
        "resume",
    ];
    // Five rows a file, so losing some files loses some results — as a crash before upload would.
    let env = [("OFFPEAK_WORKER__FLUSH__MAX_ROWS", "5")];
    let o = offpeak(&args, &env);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let files = parquet_files(&out, "resume");
    assert_eq!(files.len(), 4);
    let lost: Vec<String> = files[..2]
        .iter()
        .flat_map(|f| store::decode_parquet(std::fs::read(f).unwrap()).unwrap())
        .map(|r| r.job_id)
        .collect();
    for f in &files[..2] {
        std::fs::remove_file(f).unwrap();
    }
    let o = offpeak(&args, &env);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("10 jobs already have results, 10 to go"),
        "{}",
        text(&o.stderr)
    );
    let after = rows(&out, "resume");
    assert_eq!(after.len(), 20, "each job exactly once");
    let mut redone: Vec<String> = parquet_files(&out, "resume")
        .iter()
        .filter(|f| !files.contains(f))
        .flat_map(|f| store::decode_parquet(std::fs::read(f).unwrap()).unwrap())
        .map(|r| r.job_id)
        .collect();
    redone.sort();
    let mut lost = lost;
    lost.sort();
    assert_eq!(
        redone, lost,
        "only the jobs whose results were lost ran again"
    );
}

#[test]
fn openai_batch_file_runs_and_keeps_custom_ids() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let o = offpeak(
        &[
            "run",
            "examples/openai-batch.jsonl",
            "--catalog",
            "examples/catalog.toml",
            "--simulate",
            "--out",
            out.to_str().unwrap(),
            "--run-id",
            "batch",
        ],
        &[],
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    let mut ids: Vec<String> = rows(&out, "batch").into_iter().map(|r| r.job_id).collect();
    ids.sort();
    let mut want: Vec<String> = (0..20).map(|i| format!("req-{i}")).collect();
    want.sort();
    assert_eq!(ids, want);
}

/// What an operator must act on is said at the default log level (warn), once per kind every
/// 10 s: a provider that cannot be reached at all (a closed port) and the jobs that fail for it.
#[test]
fn unreachable_providers_and_failed_jobs_are_warned_once_per_kind() {
    let tmp = tempfile::tempdir().unwrap();
    let catalog = tmp.path().join("catalog.toml");
    std::fs::write(
        &catalog,
        format!(
            "[[providers]]\nname = \"gone\"\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:{}/v1\"\n\
             [[providers.models]]\nmodel = \"m\"\nid = \"m\"\ninput_per_mtok = 0.1\noutput_per_mtok = 0.2\n",
            testkit::free_port()
        ),
    )
    .unwrap();
    let jobs = tmp.path().join("jobs.jsonl");
    testkit::job_file(&jobs, 6, |i| {
        format!(
            r#"{{"id":"j{i}","model":"m","prompt":"secret-prompt-{i}","max_tokens":4,"priority":"critical"}}"#
        )
    });
    let out = tmp.path().join("out");
    let o = offpeak(
        &[
            "run",
            jobs.to_str().unwrap(),
            "--catalog",
            catalog.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--run-id",
            "warned",
            "--quiet",
        ],
        &[("OFFPEAK_WORKER__MAX_ATTEMPTS", "1")],
    );
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{err}");
    let warned = |needle: &str| {
        err.lines()
            .filter(|l| l.contains("WARN") && l.contains(needle))
            .count()
    };
    assert_eq!(warned("provider unreachable"), 1, "{err}");
    assert_eq!(warned("job failed"), 1, "six failed jobs: one line\n{err}");
    assert!(!err.contains("secret-prompt"), "a prompt was logged");
}
