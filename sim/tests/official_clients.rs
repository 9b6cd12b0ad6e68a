//! The official `openai` and `anthropic` Python clients parse the simulator's answers
//! (`tests/clients/official_clients.py`; needs `pip install openai anthropic`, which
//! `deploy/local/python-deps.sh` does). Each test runs one or more of the script's checks
//! against a fresh simulator.

mod common;

use common::{anthropic, openai, start};
use sim::{SimBatch, SimFlex};

/// Runs the script's `checks` (none: its default plain-completion checks) and fails the test
/// with the script's output unless every check passes.
async fn run_checks(checks: &[&str]) {
    // Batches that finish in a second, and one slow flex slot, for the batch and flex checks.
    let batch = SimBatch {
        turnaround_s: 1.0,
        ..SimBatch::default()
    };
    let mut o = openai("openai", "gpt-sim");
    o.api_key = Some("sk-test".into());
    o.batch = Some(batch.clone());
    o.flex = Some(SimFlex {
        concurrency: 1,
        latency_ms: Some(600.0),
        ..SimFlex::default()
    });
    let mut a = anthropic("anthropic", "claude-sim");
    a.api_key = Some("sk-test".into());
    a.batch = Some(batch);
    let h = start(3, vec![o, a]).await;
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/clients/official_clients.py"
    );
    let mut cmd = std::process::Command::new("python3");
    cmd.arg(script).arg(format!("http://{}", h.addr()));
    for c in checks {
        cmd.arg("--check").arg(c);
    }
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "official clients failed:\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    h.shutdown().await;
}

#[tokio::test]
async fn official_python_clients_parse_completions_and_errors() {
    run_checks(&[]).await;
}

#[tokio::test]
async fn official_openai_client_streams_the_plain_text_with_usage_in_the_last_chunk() {
    run_checks(&["openai_stream"]).await;
}

#[tokio::test]
async fn official_anthropic_client_stream_gets_the_final_message_with_usage() {
    run_checks(&["anthropic_stream"]).await;
}

#[tokio::test]
async fn official_clients_parse_tool_calls() {
    run_checks(&["openai_tools"]).await;
}

#[tokio::test]
async fn official_openai_client_gets_n_choices() {
    run_checks(&["openai_n"]).await;
}

#[tokio::test]
async fn official_openai_client_json_mode_content_parses_as_json() {
    run_checks(&["openai_json"]).await;
}

#[tokio::test]
async fn official_openai_client_uploads_creates_polls_lists_and_cancels_batches() {
    run_checks(&["openai_batch"]).await;
}

#[tokio::test]
async fn official_anthropic_client_creates_polls_lists_cancels_and_reads_message_batch_results() {
    run_checks(&["anthropic_batch"]).await;
}

#[tokio::test]
async fn official_openai_client_gets_flex_answers_and_resource_unavailable_beyond_capacity() {
    run_checks(&["openai_flex"]).await;
}
