//! The HTML rendering: one self-contained page (inline CSS, inline SVG charts, no
//! JavaScript, no external resource), every string from the data escaped.

use std::fmt::Write as _;

use crate::doc::{BarChart, Block, Cell, Table, Tone, build};
use crate::format::truncate;
use crate::model::Report;

/// `s` escaped for HTML text and attribute values (`&`, `<`, `>`, `"`, `'`).
pub(crate) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const CSS: &str = r#"
:root { color-scheme: light dark; --fg: #1d2430; --muted: #6b7380; --line: #d9dee5;
  --bg: #ffffff; --panel: #f6f8fa; --bar: #3b6fd8; --good: #1f8a4c; --bad: #c23b32; }
@media (prefers-color-scheme: dark) {
  :root { --fg: #e6e9ee; --muted: #9aa3ad; --line: #39414c; --bg: #14181d; --panel: #1c2128;
    --bar: #6b98f0; --good: #4cc07d; --bad: #f0736a; }
}
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--fg);
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", "PingFang SC", "Microsoft YaHei", sans-serif; }
main { max-width: 1100px; margin: 0 auto; padding: 24px 20px 48px; }
h1 { font-size: 24px; margin: 0 0 4px; }
h2 { font-size: 19px; margin: 36px 0 4px; padding-bottom: 4px; border-bottom: 2px solid var(--line); }
h3 { font-size: 15px; margin: 22px 0 8px; }
.sub, .src, .muted { color: var(--muted); }
.src { margin: 0 0 10px; font-size: 12px; }
code { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 12px; }
nav ol { display: flex; flex-wrap: wrap; gap: 4px 18px; padding: 0; margin: 14px 0 0; list-style: none; }
nav a { color: var(--bar); text-decoration: none; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; margin: 6px 0 10px; font-variant-numeric: tabular-nums; }
th, td { padding: 4px 10px; border-bottom: 1px solid var(--line); text-align: left; white-space: nowrap; }
th { background: var(--panel); font-weight: 600; }
td.num, th.num { text-align: right; }
.good { color: var(--good); font-weight: 600; }
.bad { color: var(--bad); font-weight: 600; }
p.note { margin: 6px 0; }
p.nodata { color: var(--muted); font-style: italic; margin: 6px 0; }
p.error { color: var(--bad); margin: 6px 0; }
svg.chart { display: block; width: 100%; max-width: 800px; height: auto; margin: 8px 0 16px; }
svg.chart text { fill: var(--fg); font-size: 12px; }
svg.chart text.title { font-weight: 600; font-size: 13px; }
svg.chart text.ref { fill: var(--muted); font-size: 11px; }
svg.chart rect.bar { fill: var(--bar); }
svg.chart rect.bar.good { fill: var(--good); }
svg.chart rect.bar.bad { fill: var(--bad); }
svg.chart rect.bar.muted { fill: var(--muted); }
svg.chart rect.track { fill: var(--panel); }
svg.chart line.ref { stroke: var(--fg); stroke-width: 1.5; stroke-dasharray: 4 3; }
footer { margin-top: 40px; color: var(--muted); font-size: 12px; }
"#;

fn tone_class(t: Tone) -> &'static str {
    match t {
        Tone::Plain => "",
        Tone::Good => "good",
        Tone::Bad => "bad",
        Tone::Muted => "muted",
    }
}

/// The report as one HTML page: the same sections and tables as [`crate::render_text`],
/// plus inline SVG bar charts (funnel steps, LTV/CAC per channel against its target,
/// conversion per experiment variant). No script, no external URL: it renders offline.
pub fn render_html(r: &Report) -> String {
    let doc = build(r);
    let mut h = String::with_capacity(32 * 1024);
    h.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    h.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
    let _ = writeln!(
        h,
        "<title>zhongtai KPI report: {}</title>",
        esc(&doc.subtitle)
    );
    let _ = writeln!(h, "<style>{CSS}</style>\n</head>\n<body>\n<main>");
    h.push_str("<header>\n<h1>zhongtai KPI report</h1>\n");
    let _ = writeln!(h, "<p class=\"sub\">{}</p>", esc(&doc.subtitle));
    h.push_str("<nav><ol>\n");
    for (i, s) in doc.sections.iter().enumerate() {
        let _ = writeln!(
            h,
            "<li><a href=\"#{}\">{}. {}</a></li>",
            s.id,
            i + 1,
            esc(s.title)
        );
    }
    h.push_str("</ol></nav>\n</header>\n");

    let mut chart_id = 0usize;
    for (i, s) in doc.sections.iter().enumerate() {
        let _ = writeln!(h, "<section id=\"{}\">", s.id);
        let _ = writeln!(h, "<h2>{}. {}</h2>", i + 1, esc(s.title));
        let sources: Vec<String> = s
            .sources
            .iter()
            .map(|v| format!("<code>{}</code>", esc(v)))
            .collect();
        let _ = writeln!(h, "<p class=\"src\">source: {}</p>", sources.join(", "));
        for b in &s.blocks {
            match b {
                Block::Heading(t) => {
                    let _ = writeln!(h, "<h3>{}</h3>", esc(t));
                }
                Block::Table(t) => table(&mut h, t),
                Block::Chart(c) => {
                    chart_id += 1;
                    chart(&mut h, c, chart_id);
                }
                Block::Note(n, tone) => {
                    let _ = writeln!(h, "<p class=\"note {}\">{}</p>", tone_class(*tone), esc(n));
                }
                Block::NoData => h.push_str("<p class=\"nodata\">no data</p>\n"),
                Block::Error(e) => {
                    let _ = writeln!(h, "<p class=\"error\">query failed: {}</p>", esc(e));
                }
            }
        }
        h.push_str("</section>\n");
    }
    h.push_str(
        "<footer>Generated by <code>zt report</code> from the ClickHouse <code>kpi_*</code> \
         views (docs/report.md). Money in major units (minor units / 100); <code>-</code> \
         means undefined (NULL).</footer>\n</main>\n</body>\n</html>\n",
    );
    h
}

fn cell_class(right: bool, c: &Cell) -> String {
    let mut classes = Vec::new();
    if right {
        classes.push("num");
    }
    let t = tone_class(c.tone);
    if !t.is_empty() {
        classes.push(t);
    }
    if classes.is_empty() {
        String::new()
    } else {
        format!(" class=\"{}\"", classes.join(" "))
    }
}

fn table(h: &mut String, t: &Table) {
    h.push_str("<div class=\"scroll\"><table>\n<thead><tr>");
    for c in &t.columns {
        let class = if c.right { " class=\"num\"" } else { "" };
        let _ = write!(h, "<th{class}>{}</th>", esc(&c.name));
    }
    h.push_str("</tr></thead>\n<tbody>\n");
    for r in &t.rows {
        h.push_str("<tr>");
        for (i, c) in r.iter().enumerate() {
            let right = t.columns.get(i).is_some_and(|c| c.right);
            let _ = write!(h, "<td{}>{}</td>", cell_class(right, c), esc(&c.text));
        }
        h.push_str("</tr>\n");
    }
    h.push_str("</tbody>\n</table></div>\n");
}

const CHART_W: f64 = 800.0;
const LABEL_X: f64 = 8.0;
const BAR_X: f64 = 230.0;
const BAR_W: f64 = 360.0;
const ROW_H: f64 = 28.0;
const BAR_H: f64 = 18.0;
/// Label width in terminal-ish columns (about 7 px each at 12 px).
const LABEL_COLS: usize = 30;

/// A horizontal bar chart: one row per bar (label, bar, value text), and an optional
/// dashed reference line (a target). Bars scale to the largest value or the reference.
fn chart(h: &mut String, c: &BarChart, id: usize) {
    let values = c
        .bars
        .iter()
        .filter_map(|b| b.value)
        .filter(|v| v.is_finite());
    let mut max = values.fold(0.0_f64, f64::max);
    if let Some((r, _)) = c.reference.as_ref().filter(|(r, _)| r.is_finite()) {
        max = max.max(*r * 1.1);
    }
    if max <= 0.0 {
        max = 1.0;
    }
    let top = 28.0 + if c.reference.is_some() { 16.0 } else { 0.0 };
    let height = top + ROW_H * c.bars.len() as f64 + 8.0;
    let _ = writeln!(
        h,
        "<svg class=\"chart\" viewBox=\"0 0 {CHART_W} {height}\" role=\"img\" aria-labelledby=\"chart{id}\">"
    );
    let _ = writeln!(h, "<title id=\"chart{id}\">{}</title>", esc(&c.title));
    let _ = writeln!(
        h,
        "<text class=\"title\" x=\"{LABEL_X}\" y=\"16\">{}</text>",
        esc(&truncate(&c.title, 100))
    );
    for (i, b) in c.bars.iter().enumerate() {
        let y = top + ROW_H * i as f64;
        let text_y = y + BAR_H / 2.0 + 4.0;
        let _ = writeln!(
            h,
            "<text x=\"{LABEL_X}\" y=\"{text_y}\">{}</text>",
            esc(&truncate(&b.label, LABEL_COLS))
        );
        let _ = writeln!(
            h,
            "<rect class=\"track\" x=\"{BAR_X}\" y=\"{y}\" width=\"{BAR_W}\" height=\"{BAR_H}\"/>"
        );
        let len = b
            .value
            .filter(|v| v.is_finite() && *v > 0.0)
            .map_or(0.0, |v| (v / max * BAR_W).clamp(1.0, BAR_W));
        if len > 0.0 {
            let _ = writeln!(
                h,
                "<rect class=\"bar {}\" x=\"{BAR_X}\" y=\"{y}\" width=\"{len:.1}\" height=\"{BAR_H}\"/>",
                tone_class(b.tone)
            );
        }
        let _ = writeln!(
            h,
            "<text x=\"{:.1}\" y=\"{text_y}\">{}</text>",
            BAR_X + BAR_W + 8.0,
            esc(&b.text)
        );
    }
    if let Some((r, lbl)) = c
        .reference
        .as_ref()
        .filter(|(r, _)| r.is_finite() && *r >= 0.0)
    {
        let x = BAR_X + (r / max * BAR_W).min(BAR_W);
        let _ = writeln!(
            h,
            "<line class=\"ref\" x1=\"{x:.1}\" y1=\"{:.1}\" x2=\"{x:.1}\" y2=\"{:.1}\"/>",
            top - 6.0,
            height - 4.0
        );
        let _ = writeln!(
            h,
            "<text class=\"ref\" x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            top - 10.0,
            esc(lbl)
        );
    }
    h.push_str("</svg>\n");
}
