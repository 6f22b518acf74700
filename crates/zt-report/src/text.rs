//! The terminal rendering: fixed-width tables, plain text, no ANSI sequences.

use crate::doc::{Block, Table, build};
use crate::format::{truncate, width};
use crate::model::Report;

/// Widest cell, in terminal columns; longer values are cut with `…`.
const MAX_CELL: usize = 40;
const INDENT: &str = "  ";

/// The report as plain text: one numbered section per KPI group, each with its source
/// views, tables with aligned columns (numbers right-aligned), `no data` for empty views,
/// `-` for NULL. No colours or other escape sequences; user data is cleaned of control
/// characters.
pub fn render_text(r: &Report) -> String {
    let doc = build(r);
    let mut out = String::new();
    out.push_str("zhongtai KPI report\n");
    out.push_str(&doc.subtitle);
    out.push('\n');
    for (i, s) in doc.sections.iter().enumerate() {
        let title = format!("{}. {}  [{}]", i + 1, s.title, s.sources.join(", "));
        out.push('\n');
        out.push_str(&title);
        out.push('\n');
        out.push_str(&"=".repeat(width(&title)));
        out.push('\n');
        let mut first = true;
        for b in &s.blocks {
            match b {
                Block::Heading(h) => {
                    if !first {
                        out.push('\n');
                    }
                    out.push_str(h);
                    out.push('\n');
                }
                Block::Table(t) => table(&mut out, t),
                Block::Chart(_) => continue,
                Block::Note(n, _) => {
                    out.push_str(INDENT);
                    out.push_str(n);
                    out.push('\n');
                }
                Block::NoData => {
                    out.push_str(INDENT);
                    out.push_str("no data\n");
                }
                Block::Error(e) => {
                    out.push_str(INDENT);
                    out.push_str("error: ");
                    out.push_str(&e.replace('\n', " "));
                    out.push('\n');
                }
            }
            first = false;
        }
    }
    out
}

fn pad(out: &mut String, s: &str, w: usize, right: bool) {
    let fill = " ".repeat(w.saturating_sub(width(s)));
    if right {
        out.push_str(&fill);
        out.push_str(s);
    } else {
        out.push_str(s);
        out.push_str(&fill);
    }
}

fn table(out: &mut String, t: &Table) {
    let header: Vec<String> = t
        .columns
        .iter()
        .map(|c| truncate(&c.name, MAX_CELL))
        .collect();
    let rows: Vec<Vec<String>> = t
        .rows
        .iter()
        .map(|r| r.iter().map(|c| truncate(&c.text, MAX_CELL)).collect())
        .collect();
    let n = t.columns.len();
    let mut widths: Vec<usize> = header.iter().map(|h| width(h)).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate().take(n) {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(width(c));
            }
        }
    }
    let line = |out: &mut String, cells: &[String]| {
        out.push_str(INDENT);
        let mut row = String::new();
        for (i, col) in t.columns.iter().enumerate() {
            if i > 0 {
                row.push_str("  ");
            }
            let cell = cells.get(i).map_or("", String::as_str);
            pad(
                &mut row,
                cell,
                widths.get(i).copied().unwrap_or(0),
                col.right,
            );
        }
        out.push_str(row.trim_end());
        out.push('\n');
    };
    line(out, &header);
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    line(out, &rule);
    for r in &rows {
        line(out, r);
    }
}
