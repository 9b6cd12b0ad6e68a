//! The official `openai` and `anthropic` Python clients parse the simulator's answers
//! (`tests/clients/official_clients.py`; needs `pip install openai anthropic`).

mod common;

use common::{anthropic, openai, start};

#[tokio::test]
async fn official_python_clients_parse_completions_and_errors() {
    let mut o = openai("openai", "gpt-sim");
    o.api_key = Some("sk-test".into());
    let mut a = anthropic("anthropic", "claude-sim");
    a.api_key = Some("sk-test".into());
    let h = start(3, vec![o, a]).await;
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/clients/official_clients.py"
    );
    let url = format!("http://{}", h.addr());
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .arg(script)
            .arg(url)
            .output()
    })
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
