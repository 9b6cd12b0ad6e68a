//! The report page: one self-contained HTML file (inline CSS, inline SVG, no script, a Content
//! Security Policy that forbids fetching anything) for one run, or two side by side.
//! The headline cells carry their raw values (`data-metric`, `data-value`) for tools and tests.

use crate::chart::{colour, columns, esc, hbars, Band, Bar, Series, GREY};
use crate::figures::{coarser, RunFigures, Split, Timeline, DEFERRAL_BOUNDS_MS, SLACK_BOUNDS_MS};
use std::collections::BTreeMap;
use std::fmt::Write;

/// Most columns of the completions chart (buckets are merged to fit).
const MAX_COLUMNS: usize = 120;
/// Most rows of a split table (by model, say); the rest are summed on one line.
const MAX_SPLIT_ROWS: usize = 25;

/// The Content Security Policy of the page: nothing may be fetched, inline style only.
pub const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; img-src data:";

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;max-width:1400px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd}
h3{font-size:14px;margin:12px 0 4px}table{border-collapse:collapse;margin:4px 0 8px}
td,th{padding:3px 10px;border-bottom:1px solid #eee;text-align:right}th{background:#f6f6f6}
td:first-child,th:first-child{text-align:left}.muted{color:#777;fill:#777}
.runs{display:grid;grid-template-columns:minmax(0,1fr);gap:24px}.runs.two{grid-template-columns:minmax(0,1fr) minmax(0,1fr)}
svg.chart{max-width:100%;height:auto;font-size:11px;fill:#333}
.legend span{display:inline-block;margin-right:12px}.legend i{display:inline-block;width:10px;height:10px;margin-right:4px}
.big td{font-size:16px}.good{color:#2a7a2a}.bad{color:#b02a2a}code{font-size:12px}
.pair{display:flex;flex-wrap:wrap;gap:4px 32px;align-items:flex-start}
.ex{max-width:520px;text-align:left;font-size:12px;color:#555;word-break:break-word}";

/// The report of `runs` (one run, or two compared side by side), as one HTML page.
pub fn render(runs: &[RunFigures]) -> String {
    let mut o = String::with_capacity(64 * 1024);
    let ids: Vec<String> = runs.iter().map(|r| esc(&r.meta.run_id)).collect();
    let title = format!("offpeak report: {}", ids.join(" vs "));
    let _ = write!(
        o,
        r#"<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><meta http-equiv="Content-Security-Policy" content="{CSP}"><meta name="viewport" content="width=device-width,initial-scale=1"><title>{title}</title><style>{STYLE}</style></head><body><h1>{title}</h1>"#
    );
    let _ = write!(
        o,
        r#"<p class="muted">Where the money went: outcomes, cost against what the dearest eligible provider would have charged, and how the router spent its time. Figures are those of <code>offpeak status</code> (the same computation over the same de-duplicated rows).</p>"#
    );
    if runs.len() == 1 {
        // One run: the headline and the timeline side by side, the page's first screen.
        o.push_str(r#"<div class="pair"><div>"#);
        headline(&mut o, runs);
        o.push_str("</div><div>");
        section(&mut o, "Completions over time", runs, completions);
        o.push_str("</div></div>");
        section(&mut o, "Where the money went", runs, money);
    } else {
        headline(&mut o, runs);
        section(&mut o, "Where the money went", runs, money);
        section(&mut o, "Completions over time", runs, completions);
    }
    section(&mut o, "Waiting and deadlines", runs, waiting);
    section(&mut o, "Latency by provider", runs, latency);
    section(&mut o, "Failures", runs, failures);
    section(&mut o, "Run", runs, metadata);
    o.push_str("</body></html>\n");
    o
}

/// A section whose body is drawn once per run, side by side.
fn section(o: &mut String, title: &str, runs: &[RunFigures], body: fn(&mut String, &RunFigures)) {
    let class = if runs.len() > 1 { "runs two" } else { "runs" };
    let _ = write!(o, r#"<h2>{}</h2><div class="{class}">"#, esc(title));
    for r in runs {
        o.push_str("<div>");
        if runs.len() > 1 {
            let _ = write!(o, "<h3>run {}</h3>", esc(&r.meta.run_id));
        }
        body(o, r);
        o.push_str("</div>");
    }
    o.push_str("</div>");
}

fn usd(v: f64) -> String {
    if v.abs() >= 100.0 {
        format!("${v:.2}")
    } else {
        format!("${v:.6}")
    }
}

/// One headline row: metric key, label, and per run the raw value and its text.
type HeadlineRow = (&'static str, &'static str, Vec<(f64, String)>);

/// The headline: one row per figure, one column per run (and the change, comparing two).
fn headline(o: &mut String, runs: &[RunFigures]) {
    let mut rows: Vec<HeadlineRow> = Vec::new();
    let mut add =
        |key: &'static str, label: &'static str, f: &dyn Fn(&RunFigures) -> (f64, String)| {
            rows.push((key, label, runs.iter().map(f).collect()));
        };
    let int = |v: u64| (v as f64, v.to_string());
    add("submitted", "jobs submitted", &|r| int(r.summary.submitted));
    add("succeeded", "succeeded", &|r| int(r.summary.succeeded));
    add("failed", "failed", &|r| int(r.summary.failed));
    add("pending", "pending", &|r| {
        int(r
            .summary
            .submitted
            .saturating_sub(r.summary.succeeded + r.summary.failed))
    });
    add("cost_usd", "cost", &|r| {
        (r.summary.cost_usd, usd(r.summary.cost_usd))
    });
    add(
        "baseline_cost_usd",
        "at the dearest eligible provider",
        &|r| {
            (
                r.summary.baseline_cost_usd,
                usd(r.summary.baseline_cost_usd),
            )
        },
    );
    add("saved_usd", "saved", &|r| {
        let v = r.summary.baseline_cost_usd - r.summary.cost_usd;
        (v, usd(v))
    });
    add("savings_pct", "savings", &|r| {
        (
            r.summary.savings_pct,
            format!("{:.1}%", r.summary.savings_pct),
        )
    });
    add("deadline_misses", "deadline misses", &|r| {
        int(r.summary.deadline_misses)
    });
    add("deferrals", "deferrals", &|r| int(r.summary.deferrals));
    add("deferred_jobs", "jobs deferred", &|r| {
        int(r.summary.deferred_jobs)
    });
    add("escalations", "escalations", &|r| {
        int(r.summary.escalations)
    });
    add("latency_p50_ms", "latency p50 (ms)", &|r| {
        int(r.summary.latency_p50_ms)
    });
    add("latency_p95_ms", "latency p95 (ms)", &|r| {
        int(r.summary.latency_p95_ms)
    });
    o.push_str(r#"<h2>Headline</h2><table id="headline" class="big"><tr><th></th>"#);
    for r in runs {
        let _ = write!(o, "<th>run {}</th>", esc(&r.meta.run_id));
    }
    if runs.len() == 2 {
        o.push_str("<th>change</th>");
    }
    o.push_str("</tr>");
    for (key, label, cells) in rows {
        let _ = write!(o, "<tr><td>{}</td>", esc(label));
        for (r, (v, text)) in runs.iter().zip(&cells) {
            let _ = write!(
                o,
                r#"<td data-run="{}" data-metric="{key}" data-value="{v}">{}</td>"#,
                esc(&r.meta.run_id),
                esc(text)
            );
        }
        if let [(a, _), (b, _)] = cells.as_slice() {
            let d = b - a;
            let text = if key.ends_with("usd") {
                usd(d)
            } else if key.ends_with("pct") {
                format!("{d:+.1} pts")
            } else {
                format!("{d:+}")
            };
            let _ = write!(o, "<td>{}</td>", esc(&text));
        }
        o.push_str("</tr>");
    }
    o.push_str("</table>");
}

fn money(o: &mut String, r: &RunFigures) {
    for (name, split) in [
        ("provider", &r.by_provider),
        ("route", &r.by_route),
        ("model", &r.by_model),
    ] {
        let _ = write!(o, "<h3>Cost by {name}</h3>");
        let mut bars: Vec<Bar> = split
            .iter()
            .enumerate()
            .map(|(i, (k, s))| Bar {
                label: k.clone(),
                value: s.cost_usd,
                text: format!("{} · {} jobs", usd(s.cost_usd), s.succeeded + s.failed),
                colour: if name == "provider" {
                    provider_colour(r, k)
                } else {
                    colour(i)
                },
            })
            .collect();
        bars.sort_by(|a, b| b.value.total_cmp(&a.value));
        bars.truncate(MAX_SPLIT_ROWS);
        o.push_str(r#"<div class="pair">"#);
        o.push_str(&hbars(&bars));
        split_table(o, name, split);
        o.push_str("</div>");
    }
}

/// A provider's colour: the same in every chart (its series in the timeline).
fn provider_colour(r: &RunFigures, provider: &str) -> &'static str {
    r.timeline
        .providers
        .iter()
        .position(|p| p == provider)
        .map_or(GREY, colour)
}

fn split_table(o: &mut String, name: &str, split: &BTreeMap<String, Split>) {
    let _ = write!(
        o,
        "<table><tr><th>{name}</th><th>succeeded</th><th>failed</th><th>cost</th><th>dearest</th><th>savings</th></tr>"
    );
    let mut rows: Vec<(&String, &Split)> = split.iter().collect();
    rows.sort_by(|a, b| b.1.cost_usd.total_cmp(&a.1.cost_usd));
    let mut rest = Split::default();
    for (i, (k, s)) in rows.iter().enumerate() {
        if i >= MAX_SPLIT_ROWS {
            rest.succeeded += s.succeeded;
            rest.failed += s.failed;
            rest.cost_usd += s.cost_usd;
            rest.baseline_cost_usd += s.baseline_cost_usd;
            continue;
        }
        split_row(o, k, s);
    }
    if rows.len() > MAX_SPLIT_ROWS {
        split_row(o, &format!("{} more", rows.len() - MAX_SPLIT_ROWS), &rest);
    }
    o.push_str("</table>");
}

fn split_row(o: &mut String, k: &str, s: &Split) {
    let savings = if s.baseline_cost_usd > 0.0 {
        format!("{:.1}%", (1.0 - s.cost_usd / s.baseline_cost_usd) * 100.0)
    } else {
        "–".into()
    };
    let _ = write!(
        o,
        "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{savings}</td></tr>",
        esc(k),
        s.succeeded,
        s.failed,
        usd(s.cost_usd),
        usd(s.baseline_cost_usd)
    );
}

fn legend(o: &mut String, names: &[String]) {
    o.push_str(r#"<div class="legend">"#);
    for (i, n) in names.iter().enumerate() {
        let _ = write!(
            o,
            r#"<span><i style="background:{}"></i>{}</span>"#,
            colour(i),
            esc(n)
        );
    }
    o.push_str("</div>");
}

/// A UTC time label fit for a bucket width.
fn time_label(ms: i64, width_ms: i64, span_ms: i64) -> String {
    let Some(t) = chrono::DateTime::from_timestamp_millis(ms) else {
        return String::new();
    };
    let f = if span_ms > 86_400_000 {
        "%m-%d %H:%M"
    } else if width_ms >= 60_000 {
        "%H:%M"
    } else {
        "%H:%M:%S"
    };
    t.format(f).to_string()
}

/// The timeline merged into at most [`MAX_COLUMNS`] columns of a width from the bucket ladder:
/// (start, width, counts).
fn merged(t: &Timeline) -> (i64, i64, Vec<Vec<u64>>) {
    let mut width = t.width_ms.max(1);
    let end = t.start_ms + t.width_ms * t.counts.len() as i64;
    while (end - 1).div_euclid(width) - t.start_ms.div_euclid(width) + 1 > MAX_COLUMNS as i64 {
        width = coarser(width);
    }
    let first = t.start_ms.div_euclid(width);
    let n = ((end - 1).div_euclid(width) - first + 1).max(0) as usize;
    let mut cols = vec![vec![0u64; t.providers.len()]; n];
    for (i, c) in t.counts.iter().enumerate() {
        let at = (t.start_ms + t.width_ms * i as i64).div_euclid(width) - first;
        for (p, v) in c.iter().enumerate() {
            cols[at as usize][p] += v;
        }
    }
    (first * width, width, cols)
}

fn completions(o: &mut String, r: &RunFigures) {
    let t = &r.timeline;
    if t.counts.is_empty() {
        o.push_str(r#"<p class="muted">No job has succeeded yet.</p>"#);
        return;
    }
    let (start, width, cols) = merged(t);
    let span = width * cols.len() as i64;
    let labels: Vec<String> = (0..cols.len())
        .map(|i| time_label(start + width * i as i64, width, span))
        .collect();
    let series: Vec<Series> = t
        .providers
        .iter()
        .enumerate()
        .map(|(p, name)| Series {
            name: name.clone(),
            values: cols.iter().map(|c| c[p] as f64).collect(),
        })
        .collect();
    let mut bands = Vec::new();
    let day = 86_400_000i64;
    let end = start + span;
    for s in &r.shades {
        let w = s.window;
        let spans: Vec<(i64, i64)> = if w.from <= w.to {
            vec![(i64::from(w.from), i64::from(w.to))]
        } else {
            vec![(i64::from(w.from), 1440), (0, i64::from(w.to))]
        };
        let mut d = start.div_euclid(day) * day;
        while d < end {
            for (a, b) in &spans {
                let (a, b) = (d + a * 60_000, d + b * 60_000);
                let (a, b) = (a.max(start), b.min(end));
                if b > a {
                    bands.push(Band {
                        from: (a - start) as f64 / width as f64,
                        to: (b - start) as f64 / width as f64,
                        fill: if w.multiplier > 1.0 {
                            "#fbe3e0"
                        } else {
                            "#dff3e3"
                        },
                        title: format!(
                            "price ×{} {:02}:{:02}–{:02}:{:02} UTC: {}",
                            w.multiplier,
                            w.from / 60,
                            w.from % 60,
                            w.to / 60,
                            w.to % 60,
                            s.offers.join(", ")
                        ),
                    });
                }
            }
            d += day;
        }
    }
    let unit = format!("jobs per {}", duration_text(width));
    o.push_str(&columns(&labels, &series, &bands, &unit));
    legend(o, &t.providers);
    if r.shades.is_empty() {
        o.push_str(r#"<p class="muted">The catalog has no time-of-day price windows.</p>"#);
    } else {
        o.push_str(r#"<p class="muted">Shaded: the catalog's price windows (red dearer, green cheaper), UTC:</p><ul class="muted">"#);
        for s in &r.shades {
            let w = s.window;
            let _ = write!(
                o,
                "<li>×{} {:02}:{:02}–{:02}:{:02}: {}</li>",
                w.multiplier,
                w.from / 60,
                w.from % 60,
                w.to / 60,
                w.to % 60,
                esc(&s.offers.join(", "))
            );
        }
        o.push_str("</ul>");
    }
}

fn duration_text(ms: i64) -> String {
    if ms % 3_600_000 == 0 {
        format!("{} h", ms / 3_600_000)
    } else if ms % 60_000 == 0 {
        format!("{} min", ms / 60_000)
    } else if ms >= 1000 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else {
        format!("{ms} ms")
    }
}

fn hist(
    o: &mut String,
    first: &str,
    bounds: &[(i64, &str)],
    last: &str,
    counts: &[u64],
    what: &str,
) {
    let mut labels = vec![first.to_string()];
    labels.extend(bounds.iter().map(|(_, l)| l.to_string()));
    labels.push(last.to_string());
    let series = [Series {
        name: what.to_string(),
        values: counts.iter().map(|c| *c as f64).collect(),
    }];
    o.push_str(&columns(&labels, &series, &[], "jobs"));
}

fn waiting(o: &mut String, r: &RunFigures) {
    o.push_str(r#"<div class="pair"><div><h3>How long jobs waited (time deferred)</h3>"#);
    let d = &r.deferral_hist;
    hist(o, "not deferred", DEFERRAL_BOUNDS_MS, "≥ 6 h", d, "jobs");
    o.push_str("</div><div><h3>How close to their deadline jobs finished</h3>");
    hist(
        o,
        "missed",
        SLACK_BOUNDS_MS,
        "≥ 24 h",
        &r.slack_hist,
        "jobs",
    );
    o.push_str("</div></div>");
}

fn latency(o: &mut String, r: &RunFigures) {
    if r.latency.is_empty() {
        o.push_str(r#"<p class="muted">No job has succeeded yet.</p>"#);
        return;
    }
    let bars: Vec<Bar> = r
        .latency
        .iter()
        .map(|(p, l)| Bar {
            label: p.clone(),
            value: l.p50 as f64,
            text: format!("p50 {} ms", l.p50),
            colour: provider_colour(r, p),
        })
        .collect();
    o.push_str(&hbars(&bars));
    o.push_str("<table><tr><th>provider</th><th>jobs</th><th>p50 ms</th><th>p90 ms</th><th>p99 ms</th><th>max ms</th></tr>");
    for (p, l) in &r.latency {
        let _ = write!(
            o,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(p),
            l.jobs,
            l.p50,
            l.p90,
            l.p99,
            l.max
        );
    }
    o.push_str("</table>");
}

fn failures(o: &mut String, r: &RunFigures) {
    if r.failures.is_empty() {
        o.push_str(r#"<p class="good">No job failed.</p>"#);
        return;
    }
    o.push_str("<table><tr><th>kind</th><th>jobs</th><th>example messages</th></tr>");
    let mut kinds: Vec<_> = r.failures.iter().collect();
    kinds.sort_by_key(|k| std::cmp::Reverse(k.1.count));
    for (k, f) in kinds {
        let _ = write!(
            o,
            r#"<tr><td class="bad">{}</td><td>{}</td><td class="ex">"#,
            esc(k),
            f.count
        );
        for e in &f.examples {
            let _ = write!(o, "<div>{}</div>", esc(e));
        }
        o.push_str("</td></tr>");
    }
    o.push_str("</table>");
}

fn metadata(o: &mut String, r: &RunFigures) {
    let m = &r.meta;
    let mut rows = vec![
        ("run", m.run_id.clone()),
        ("results", format!("{}/run={}/", m.location, m.run_id)),
        ("job file", m.input_file.clone()),
        ("job file sha256", m.input_sha256.clone()),
        ("catalog sha256", m.catalog_sha256.clone()),
        ("offpeak version", m.offpeak_version.clone()),
        ("submitted at", m.submitted_at.clone()),
        (
            "published at",
            m.published_at
                .clone()
                .unwrap_or_else(|| "(still publishing)".into()),
        ),
    ];
    if m.foreign_rows > 0 {
        rows.push((
            "foreign rows",
            format!(
                "{} left out (job ids not in the run's job list)",
                m.foreign_rows
            ),
        ));
    }
    o.push_str(r#"<table id="meta">"#);
    for (k, v) in rows {
        let _ = write!(
            o,
            "<tr><td>{}</td><td><code>{}</code></td></tr>",
            esc(k),
            esc(&v)
        );
    }
    o.push_str("</table>");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::figures::BUCKET_LADDER_MS;

    #[test]
    fn the_timeline_is_merged_into_few_columns_of_a_ladder_width_keeping_every_job() {
        let t = Timeline {
            start_ms: 1_764_000_000_050,
            width_ms: 100,
            providers: vec!["a".into(), "b".into()],
            counts: (0..10_000).map(|i| vec![1, i % 3]).collect(),
        };
        let (start, width, cols) = merged(&t);
        assert!(cols.len() <= MAX_COLUMNS, "{}", cols.len());
        assert!(BUCKET_LADDER_MS.contains(&width), "{width}");
        assert_eq!(start % width, 0);
        let before: u64 = t.counts.iter().flatten().sum();
        let after: u64 = cols.iter().flatten().sum();
        assert_eq!(before, after);
    }
}
