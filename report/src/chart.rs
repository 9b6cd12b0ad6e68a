//! Inline SVG charts for the report: horizontal bars and stacked columns with shaded bands.
//! Plain strings, no scripts, no fonts fetched: the page must open offline. Every chart draws one
//! element per bar (bounded by providers × buckets), never one per job.

use std::fmt::Write;

/// Series colours, in order (colour-blind-friendly Tableau 10).
pub const PALETTE: [&str; 10] = [
    "#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7",
    "#9c755f", "#bab0ac",
];

/// The colour of series `i`.
pub fn colour(i: usize) -> &'static str {
    PALETTE[i % PALETTE.len()]
}

/// The colour of what is not a series (jobs that reached no provider).
pub const GREY: &str = "#c7c7c7";

/// Escapes text for HTML and SVG content and attribute values.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            _ => o.push(c),
        }
    }
    o
}

/// One bar of a horizontal bar chart.
#[derive(Debug, Clone)]
pub struct Bar {
    pub label: String,
    pub value: f64,
    /// The value as printed next to the bar.
    pub text: String,
    /// Its colour ([`colour`] of the series it stands for).
    pub colour: &'static str,
}

/// Horizontal bars, one per row, longest = full width.
pub fn hbars(bars: &[Bar]) -> String {
    const W: f64 = 640.0;
    const LABEL: f64 = 150.0;
    const ROW: f64 = 22.0;
    let h = ROW * bars.len().max(1) as f64 + 8.0;
    let max = bars.iter().map(|b| b.value).fold(0.0, f64::max);
    let mut o = String::new();
    let _ = write!(
        o,
        r#"<svg class="chart" viewBox="0 0 {W} {h}" width="{W}" height="{h}" role="img">"#
    );
    if bars.is_empty() {
        let _ = write!(o, r#"<text x="4" y="18" class="muted">no data</text>"#);
    }
    for (i, b) in bars.iter().enumerate() {
        let y = 4.0 + ROW * i as f64;
        let len = if max > 0.0 {
            (W - LABEL - 200.0) * b.value / max
        } else {
            0.0
        };
        let _ = write!(
            o,
            r#"<text x="{x}" y="{ty}" text-anchor="end">{label}</text><rect x="{LABEL}" y="{y}" width="{len:.1}" height="{bh}" fill="{c}"><title>{label}: {text}</title></rect><text x="{tx:.1}" y="{ty}">{text}</text>"#,
            x = LABEL - 6.0,
            ty = y + 14.0,
            label = esc(&b.label),
            bh = ROW - 6.0,
            c = b.colour,
            text = esc(&b.text),
            tx = LABEL + len + 6.0,
        );
    }
    o.push_str("</svg>");
    o
}

/// A named series of values, one per column.
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub values: Vec<f64>,
}

/// A shaded span behind the columns, in column units (column `i` spans `i..i+1`).
#[derive(Debug, Clone)]
pub struct Band {
    pub from: f64,
    pub to: f64,
    pub fill: &'static str,
    pub title: String,
}

/// Stacked columns: `labels[i]` under column `i` (at most ~8 are printed), `series` stacked in
/// order, `bands` shaded behind. `unit` names the y axis.
pub fn columns(labels: &[String], series: &[Series], bands: &[Band], unit: &str) -> String {
    const W: f64 = 640.0;
    const H: f64 = 240.0;
    const LEFT: f64 = 56.0;
    const RIGHT: f64 = 8.0;
    const TOP: f64 = 24.0;
    const BOTTOM: f64 = 30.0;
    let n = labels.len().max(1);
    let pw = W - LEFT - RIGHT;
    let ph = H - TOP - BOTTOM;
    let cw = pw / n as f64;
    let totals: Vec<f64> = (0..n)
        .map(|i| {
            series
                .iter()
                .map(|s| s.values.get(i).copied().unwrap_or(0.0))
                .sum()
        })
        .collect();
    let max = nice_max(totals.iter().copied().fold(0.0, f64::max));
    let mut o = String::new();
    let _ = write!(
        o,
        r#"<svg class="chart" viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img">"#
    );
    for b in bands {
        let x0 = LEFT + cw * b.from.clamp(0.0, n as f64);
        let x1 = LEFT + cw * b.to.clamp(0.0, n as f64);
        if x1 > x0 {
            let _ = write!(
                o,
                r#"<rect x="{x0:.1}" y="{TOP}" width="{w:.1}" height="{ph}" fill="{f}"><title>{t}</title></rect>"#,
                w = x1 - x0,
                f = b.fill,
                t = esc(&b.title),
            );
        }
    }
    // Grid lines and y labels at 0, ½ and the top.
    for k in 0..=2 {
        let v = max * f64::from(k) / 2.0;
        let y = TOP + ph - ph * f64::from(k) / 2.0;
        let _ = write!(
            o,
            r##"<line x1="{LEFT}" x2="{x2}" y1="{y:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{lx}" y="{ty:.1}" text-anchor="end">{v}</text>"##,
            x2 = W - RIGHT,
            lx = LEFT - 4.0,
            ty = y + 4.0,
            v = esc(&short_number(v)),
        );
    }
    let _ = write!(
        o,
        r#"<text x="4" y="{y}" class="muted">{u}</text>"#,
        y = 12.0,
        u = esc(unit)
    );
    let gap = if cw > 4.0 { 1.0 } else { 0.0 };
    for i in 0..n {
        let mut base = 0.0;
        for (si, s) in series.iter().enumerate() {
            let v = s.values.get(i).copied().unwrap_or(0.0);
            if v <= 0.0 || max <= 0.0 {
                continue;
            }
            let h = ph * v / max;
            let y = TOP + ph - ph * base / max - h;
            base += v;
            let _ = write!(
                o,
                r#"<rect x="{x:.1}" y="{y:.1}" width="{w:.1}" height="{h:.1}" fill="{c}"><title>{name}, {label}: {v}</title></rect>"#,
                x = LEFT + cw * i as f64 + gap / 2.0,
                w = (cw - gap).max(0.5),
                c = colour(si),
                name = esc(&s.name),
                label = esc(labels.get(i).map_or("", String::as_str)),
                v = esc(&short_number(v)),
            );
        }
    }
    let step = n.div_ceil(8).max(1);
    for (i, l) in labels.iter().enumerate().step_by(step) {
        let _ = write!(
            o,
            r#"<text x="{x:.1}" y="{y}" text-anchor="middle">{l}</text>"#,
            x = LEFT + cw * (i as f64 + 0.5),
            y = H - BOTTOM + 16.0,
            l = esc(l),
        );
    }
    let _ = write!(
        o,
        r##"<line x1="{LEFT}" x2="{x2}" y1="{y}" y2="{y}" stroke="#888"/></svg>"##,
        x2 = W - RIGHT,
        y = TOP + ph
    );
    o
}

/// A round number at or above `v` for the top of an axis.
fn nice_max(v: f64) -> f64 {
    if v <= 0.0 {
        return 1.0;
    }
    let mag = 10f64.powf(v.log10().floor());
    for k in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if k * mag >= v {
            return k * mag;
        }
    }
    10.0 * mag
}

/// `1234567` → `1.23M`; small values keep up to 3 decimals.
pub fn short_number(v: f64) -> String {
    let a = v.abs();
    if a >= 1e9 {
        format!("{:.2}G", v / 1e9)
    } else if a >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.1}k", v / 1e3)
    } else if a == a.trunc() {
        format!("{v:.0}")
    } else {
        format!("{v:.3}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_draw_one_rect_per_non_empty_bar_and_escape_labels() {
        let s = vec![
            Series {
                name: "a<b".into(),
                values: vec![1.0, 0.0, 3.0],
            },
            Series {
                name: "c".into(),
                values: vec![2.0, 0.0, 0.0],
            },
        ];
        let svg = columns(&["x".into(), "y".into(), "z".into()], &s, &[], "jobs");
        assert_eq!(svg.matches("<rect").count(), 3);
        assert!(svg.contains("a&lt;b"));
        assert!(!svg.contains("a<b"));
    }

    #[test]
    fn axis_tops_are_round() {
        assert_eq!(nice_max(7.0), 10.0);
        assert_eq!(nice_max(130.0), 200.0);
        assert_eq!(nice_max(0.0), 1.0);
    }
}
