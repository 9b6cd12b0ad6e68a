//! `offpeak report` on a real run (issue #16): the local pipeline with the simulator writes the
//! results, the report is built from them, and headless Chromium opens it with every network
//! request failing — no console error, no CSP violation, charts drawn — while its headline
//! equals `offpeak status --json` and a DuckDB query over the same Parquet files.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use testkit::{text, workspace_root as root};

fn offpeak(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_offpeak"))
        .current_dir(root())
        .args(args)
        .env_remove("OFFPEAK_CONFIG")
        .env_remove("OFFPEAK_OUTPUT")
        .output()
        .expect("run offpeak")
}

/// Jobs that cannot be served within their cost cap: they end as failed rows.
const OVER_BUDGET: usize = 4;

/// Runs the example jobs plus [`OVER_BUDGET`] capped ones through `offpeak run --simulate`
/// into `out` as run `run`.
fn simulated_run(dir: &Path, out: &Path, run: &str) {
    let mut jobs = std::fs::read_to_string(root().join("examples/jobs.jsonl")).unwrap();
    for i in 0..OVER_BUDGET {
        jobs.push_str(&format!(
            r#"{{"id":"capped-{i}","model":"gpt-4o","prompt":"too dear {i}","max_tokens":64,"max_cost_usd":0.0000000001}}"#
        ));
        jobs.push('\n');
    }
    let file = dir.join(format!("{run}.jsonl"));
    std::fs::write(&file, jobs).unwrap();
    let o = offpeak(&[
        "run",
        file.to_str().unwrap(),
        "--catalog",
        "examples/catalog.toml",
        "--simulate",
        "--out",
        out.to_str().unwrap(),
        "--run-id",
        run,
    ]);
    // 3: the run finished with failed jobs (the capped ones).
    assert!(
        matches!(o.status.code(), Some(0 | 3)),
        "{}\n{}",
        text(&o.stdout),
        text(&o.stderr)
    );
}

/// The headline cells' raw values of `run`: `data-metric` → `data-value`.
fn headline(html: &str, run: &str) -> HashMap<String, f64> {
    let mut m = HashMap::new();
    let marker = format!(r#"data-run="{run}" data-metric=""#);
    for part in html.split(&marker).skip(1) {
        let (key, rest) = part.split_once('"').unwrap();
        let value = rest
            .split_once(r#"data-value=""#)
            .and_then(|(_, v)| v.split_once('"'))
            .map(|(v, _)| v.parse::<f64>().unwrap())
            .unwrap();
        m.insert(key.to_string(), value);
    }
    m
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

/// Opens `html` in headless Chromium with every host name unresolvable, saving a screenshot to
/// `png`; returns Chromium's log (console messages and CSP violations are logged there).
fn chromium(html: &Path, png: &Path) -> String {
    let profile = tempfile::tempdir().unwrap();
    let o = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--hide-scrollbars",
            "--host-resolver-rules=MAP * ~NOTFOUND",
            "--enable-logging=stderr",
            "--v=0",
            "--window-size=1300,4200",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("file://{}", html.display()))
        .output()
        .expect("chromium (Debian's package, installed by deploy/local/services.sh)");
    assert!(png.exists(), "no screenshot:\n{}", text(&o.stderr));
    text(&o.stderr)
}

/// Lines of Chromium's log that speak of the page: console output, blocked or failed loads.
fn page_complaints(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| {
            l.contains("CONSOLE")
                || l.contains("Uncaught")
                || l.contains("Refused to")
                || l.contains("net::ERR_")
        })
        .collect()
}

/// Pixels of the screenshot painted in the charts' series colours.
fn chart_pixels(png: &Path) -> usize {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(png).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    let channels = info.color_type.samples();
    let palette: Vec<[u8; 3]> = report::chart::PALETTE
        .iter()
        .map(|h| {
            let v = u32::from_str_radix(&h[1..], 16).unwrap();
            [(v >> 16) as u8, (v >> 8) as u8, v as u8]
        })
        .collect();
    buf[..info.buffer_size()]
        .chunks(channels)
        .filter(|px| {
            palette
                .iter()
                .any(|c| (0..3).all(|k| (i16::from(px[k]) - i16::from(c[k])).abs() <= 6))
        })
        .count()
}

fn duckdb_figures(out: &Path, run: &str) -> serde_json::Value {
    let o = Command::new("python3")
        .arg(root().join("tests/readers/report_figures.py"))
        .arg(out)
        .arg(run)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn report_of_a_simulated_run_has_the_status_figures_and_opens_offline_with_charts_drawn() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    simulated_run(tmp.path(), &out, "rep");
    let html_path = tmp.path().join("report.html");
    let o = offpeak(&[
        "report",
        "rep",
        "--output",
        out.to_str().unwrap(),
        "-o",
        html_path.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let html = std::fs::read_to_string(&html_path).unwrap();

    // The headline is `offpeak status`'s and DuckDB's.
    let got = headline(&html, "rep");
    let o = offpeak(&["status", "rep", "--output", out.to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let status: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    for key in [
        "submitted",
        "succeeded",
        "failed",
        "cost_usd",
        "baseline_cost_usd",
        "savings_pct",
        "deadline_misses",
        "deferrals",
        "escalations",
        "latency_p50_ms",
        "latency_p95_ms",
    ] {
        let want = status[key]
            .as_f64()
            .unwrap_or_else(|| panic!("status lacks {key}"));
        assert!(
            close(got[key], want),
            "{key}: report {} status {want}",
            got[key]
        );
    }
    let duck = duckdb_figures(&out, "rep");
    for key in [
        "succeeded",
        "failed",
        "cost_usd",
        "baseline_cost_usd",
        "deadline_misses",
        "deferrals",
    ] {
        let want = duck[key].as_f64().unwrap();
        assert!(
            close(got[key], want),
            "{key}: report {} duckdb {want}",
            got[key]
        );
    }
    assert_eq!(got["succeeded"] + got["failed"], got["submitted"]);
    assert_eq!(got["failed"], OVER_BUDGET as f64);
    assert!(got["cost_usd"] > 0.0 && got["baseline_cost_usd"] > got["cost_usd"]);

    // What the sections show: providers, the failures with a message, the run's metadata.
    for provider in status["providers"].as_object().unwrap().keys() {
        assert!(
            html.contains(&format!("<td>{provider}</td>")),
            "{provider} not in the report"
        );
    }
    for kind in status["failures"].as_object().unwrap().keys() {
        assert!(
            html.contains(&format!(r#"<td class="bad">{kind}</td>"#)),
            "{kind}"
        );
    }
    assert!(html.contains("rep.jsonl"), "the job file is named");
    assert!(html.contains(store::OFFPEAK_VERSION));
    // The catalog's price windows (deepseek's ×2 peaks) are listed for the timeline's shading.
    assert!(html.contains("×2 09:00–12:00"), "price windows not shown");

    // Self-contained: nothing to fetch, a policy that forbids fetching, no script.
    assert!(
        html.contains(r#"<meta http-equiv="Content-Security-Policy" content="default-src 'none'"#)
    );
    for attr in ["src=", "href="] {
        for scheme in ["\"http://", "\"https://", "'http://", "'https://", "\"//"] {
            assert!(
                !html.contains(&format!("{attr}{scheme}")),
                "{attr}{scheme} in the report"
            );
        }
    }
    assert!(!html.contains("<script"));
    assert!(!html.contains("url("), "no CSS url() either");

    let png = tmp.path().join("report.png");
    let log = chromium(&html_path, &png);
    assert!(
        page_complaints(&log).is_empty(),
        "{:?}",
        page_complaints(&log)
    );
    // The bars (hundreds of jobs, several providers) cover far more than the legend's swatches.
    let painted = chart_pixels(&png);
    assert!(painted > 20_000, "only {painted} chart pixels");
}

#[test]
fn the_offline_check_catches_a_page_that_fetches_or_runs_script() {
    // The checks above must be able to fail: a page under the same policy that loads an image
    // from the network and runs a script is caught by Chromium's log, and has no chart pixels.
    let tmp = tempfile::tempdir().unwrap();
    let bad: PathBuf = tmp.path().join("bad.html");
    std::fs::write(
        &bad,
        format!(
            r#"<!DOCTYPE html><html><head><meta http-equiv="Content-Security-Policy" content="{}"></head><body><img src="https://example.com/x.png"><script>console.error("boom")</script></body></html>"#,
            report::html::CSP
        ),
    )
    .unwrap();
    let png = tmp.path().join("bad.png");
    let log = chromium(&bad, &png);
    assert!(!page_complaints(&log).is_empty(), "{log}");
    assert!(chart_pixels(&png) < 1_000);
}

#[test]
fn compare_puts_two_runs_side_by_side() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    simulated_run(tmp.path(), &out, "first");
    simulated_run(tmp.path(), &out, "second");
    let html_path = tmp.path().join("compare.html");
    let o = offpeak(&[
        "report",
        "second",
        "--compare",
        "first",
        "--output",
        out.to_str().unwrap(),
        "-o",
        html_path.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let html = std::fs::read_to_string(&html_path).unwrap();
    for run in ["first", "second"] {
        let h = headline(&html, run);
        let o = offpeak(&["status", run, "--output", out.to_str().unwrap(), "--json"]);
        let status: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert!(
            close(h["cost_usd"], status["cost_usd"].as_f64().unwrap()),
            "{run}"
        );
        assert!(
            html.contains(&format!("<h3>run {run}</h3>")),
            "{run}'s column"
        );
    }
    assert!(html.contains("<th>change</th>"));
    // A run that is not there is an error, not an empty column.
    let o = offpeak(&[
        "report",
        "second",
        "--compare",
        "nope",
        "--output",
        out.to_str().unwrap(),
        "-o",
        html_path.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("no run nope"),
        "{}",
        text(&o.stderr)
    );
}
