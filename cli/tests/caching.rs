//! Prompt caching billed as the providers bill it (issue #15): an evaluation trace whose jobs
//! share a 2,000-token system prompt, answers under 100 tokens, sent by an `offpeak worker` on
//! NATS to the simulator, which caches prefixes as OpenAI (automatic) and Anthropic (at a
//! `cache_control` breakpoint) do and keeps its own bill. The rows' cost must equal that bill,
//! and the cached trace must cost at most 0.4 x the same trace at a host that does not cache.

mod support;

use schemas::{ResultRow, ResultStatus};
use support::*;

const JOBS: usize = 60;

const SCENARIO: &str = r#"
seed = 5
[[providers]]
name = "cached"
kind = "openai"
models = ["m-c"]
latency_ms = 400
prices = { "m-c" = { input_per_mtok = 1.0, output_per_mtok = 4.0, cache_read_per_mtok = 0.1 } }

[[providers]]
name = "plain"
kind = "openai"
models = ["m-p"]
latency_ms = 400
cache = { enabled = false }
prices = { "m-p" = { input_per_mtok = 1.0, output_per_mtok = 4.0, cache_read_per_mtok = 0.1 } }

[[providers]]
name = "claude"
kind = "anthropic"
models = ["claude-c"]
latency_ms = 400
prices = { "claude-c" = { input_per_mtok = 3.0, output_per_mtok = 15.0 } }
"#;

/// The catalog's prices equal the simulator's; Anthropic's cache prices are the kind's defaults
/// (0.1 x input to read, 1.25 x to write for 5 minutes) on both sides.
const CATALOG: &str = r#"
[[providers]]
name = "cached"
kind = "openai"
base_url = "{SIM}/cached/v1"
[[providers.models]]
model = "m"
id = "m-c"
input_per_mtok = 1.0
output_per_mtok = 4.0
cache = { read_per_mtok = 0.1 }

[[providers]]
name = "plain"
kind = "openai"
base_url = "{SIM}/plain/v1"
[[providers.models]]
model = "m2"
id = "m-p"
input_per_mtok = 1.0
output_per_mtok = 4.0
cache = { read_per_mtok = 0.1 }

[[providers]]
name = "claude"
kind = "anthropic"
base_url = "{SIM}/claude/v1"
[[providers.models]]
model = "m3"
id = "claude-c"
input_per_mtok = 3.0
output_per_mtok = 15.0
"#;

/// A few-shot system prompt of about 2,000 tokens (8,000 characters), the same for every job.
fn system_prompt() -> String {
    (0..200)
        .map(|k| format!("Example {k:03}: question about topic {k:03} -> answer B. "))
        .collect::<String>()
        .chars()
        .take(8000)
        .collect()
}

/// Job `i` of `model`; with `breakpoint` the system prompt is a text block marked for caching
/// (Anthropic's explicit caching).
fn job(i: usize, model: &str, breakpoint: bool) -> String {
    let system = if breakpoint {
        serde_json::json!([{"type": "text", "text": system_prompt(), "cache_control": {"type": "ephemeral"}}])
    } else {
        serde_json::Value::String(system_prompt())
    };
    serde_json::json!({
        "id": format!("job-{i:04}"),
        "model": model,
        "messages": [
            {"role": "system", "content": system},
            {"role": "user", "content": format!("Question {i}: which option is right?")}
        ],
        "max_tokens": 60,
        "priority": "standard"
    })
    .to_string()
}

fn run(fleet: &Fleet, name: &str, model: &str, breakpoint: bool) -> Vec<ResultRow> {
    let path = fleet.path(&format!("{name}.jsonl"));
    job_file(&path, JOBS, |i| job(i, model, breakpoint));
    let o = fleet.submit(&path, name);
    assert!(o.status.success(), "submit: {}", text(&o.stderr));
    let o = fleet.wait_for(name, "120s");
    assert!(
        o.status.success(),
        "status --wait: {}\n{}",
        text(&o.stdout),
        text(&o.stderr)
    );
    let rows = fleet.rows(name);
    assert_eq!(rows.len(), JOBS, "one row per job");
    assert!(
        rows.iter().all(|r| r.status == ResultStatus::Succeeded),
        "{:?}",
        rows.iter().find(|r| r.status != ResultStatus::Succeeded)
    );
    rows
}

fn bill(fleet: &Fleet, provider: &str) -> (f64, u64) {
    let (_, body) = http_get(fleet.sim_port(), "/_sim/stats");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let p = &v[provider];
    (
        p["bill_usd"].as_f64().expect("the simulator's bill"),
        p["cached_tokens"].as_u64().unwrap_or(0),
    )
}

fn cost(rows: &[ResultRow]) -> f64 {
    rows.iter().map(|r| r.cost_usd).sum()
}

fn assert_close(rows_usd: f64, bill_usd: f64, what: &str) {
    assert!(
        bill_usd > 0.0 && ((rows_usd - bill_usd) / bill_usd).abs() <= 0.001,
        "{what}: the rows cost {rows_usd:.8} but the provider billed {bill_usd:.8}"
    );
}

#[test]
fn cached_prefixes_cost_what_the_provider_bills_and_far_less_than_uncached() {
    let fleet = Fleet::start(&nats_url(), SCENARIO, CATALOG);
    let _w = fleet.worker("c0");

    let cached = run(&fleet, "cached", "m", false);
    let plain = run(&fleet, "plain", "m2", false);
    let claude = run(&fleet, "claude", "m3", true);

    // What the rows say equals what each provider billed.
    let (cached_bill, cached_tokens) = bill(&fleet, "cached");
    let (plain_bill, _) = bill(&fleet, "plain");
    let (claude_bill, claude_read) = bill(&fleet, "claude");
    assert_close(cost(&cached), cached_bill, "openai-kind, cached");
    assert_close(cost(&plain), plain_bill, "openai-kind, no cache");
    assert_close(cost(&claude), claude_bill, "anthropic, breakpoint");

    // The rows carry the cached tokens the provider reported.
    let row_cached: u64 = cached.iter().map(|r| r.cached_input_tokens).sum();
    assert_eq!(row_cached, cached_tokens);
    let row_read: u64 = claude.iter().map(|r| r.cached_input_tokens).sum();
    assert_eq!(row_read, claude_read);
    assert!(claude.iter().any(|r| r.cache_write_tokens > 0));
    // The first job of the prefix goes alone, so all but a few of the others read the cache.
    let hits = cached.iter().filter(|r| r.cached_input_tokens > 0).count();
    assert!(hits >= JOBS - 2, "{hits} of {JOBS} jobs read the cache");
    assert!(plain.iter().all(|r| r.cached_input_tokens == 0));

    let ratio = cost(&cached) / cost(&plain);
    eprintln!(
        "cached trace ${:.6} ({hits} of {JOBS} read the cache), uncached ${:.6}: {ratio:.3}; anthropic ${:.6}, billed ${claude_bill:.6}",
        cost(&cached),
        cost(&plain),
        cost(&claude)
    );
    assert!(
        ratio <= 0.4,
        "cached trace {:.6} vs uncached {:.6}: {ratio:.3}",
        cost(&cached),
        cost(&plain)
    );
    // Answers under 100 tokens, as the trace is meant.
    assert!(cached.iter().all(|r| r.output_tokens < 100));
}
