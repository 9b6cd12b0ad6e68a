//! The user documentation states what the code does: the figures and names below are read from
//! the code, so a change to one without the other fails here.

use std::path::Path;

fn doc(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../docs")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The table row of `doc` whose first cell is `cell`.
fn row<'a>(doc: &'a str, cell: &str) -> &'a str {
    doc.lines()
        .find(|l| l.starts_with(&format!("| {cell} ")))
        .unwrap_or_else(|| panic!("no row {cell}"))
}

#[test]
fn job_format_gives_the_max_tokens_the_estimate_and_anthropic_use_and_every_role() {
    let d = doc("job-format.md");
    let max_tokens = row(&d, "`max_tokens`");
    let estimate = schemas::job::DEFAULT_EXPECTED_OUTPUT_TOKENS.to_string();
    let anthropic = worker::provider::anthropic::DEFAULT_MAX_TOKENS.to_string();
    assert!(max_tokens.contains(&estimate), "{max_tokens}");
    assert!(max_tokens.contains(&anthropic), "{max_tokens}");
    assert!(!max_tokens.contains("1024"), "{max_tokens}");
    let messages = row(&d, "`messages` or `prompt`");
    for role in ["system", "user", "assistant", "tool", "developer"] {
        assert!(messages.contains(role), "{role}: {messages}");
    }
    let id = row(&d, "`id`");
    assert!(id.contains("512 bytes"), "{id}");
}

#[test]
fn results_give_millisecond_timestamps_and_the_whole_file_name() {
    let d = doc("results.md");
    let unit = match schemas::result::arrow_schema()
        .field_with_name("completed_at")
        .unwrap()
        .data_type()
    {
        arrow::datatypes::DataType::Timestamp(arrow::datatypes::TimeUnit::Millisecond, _) => "ms",
        other => panic!("update this test and docs/results.md: {other:?}"),
    };
    let times = row(&d, "`submitted_at`, `completed_at`");
    assert!(times.contains(&format!("UTC, {unit}")), "{times}");
    assert!(!d.contains("µs"), "results.md still says µs");
    assert!(
        d.contains("part-<worker>-<start>-<seq>.parquet"),
        "results.md lacks the file name with its start field"
    );
}

#[test]
fn routing_lists_429_as_a_rate_limit_not_a_transient_error() {
    assert_eq!(
        worker::provider::classify(429, ""),
        worker::provider::ErrorClass::RateLimited
    );
    let d = doc("routing.md");
    let transient = d
        .lines()
        .find(|l| l.contains("| transient |"))
        .expect("a transient row");
    assert!(!transient.contains("429"), "{transient}");
    assert!(d.contains("| 429 (without an out-of-credit body) | rate-limited |"));
}
