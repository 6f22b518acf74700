//! The report laid out once, as titled sections of tables, notes and bar charts; the text
//! and HTML renderers only draw this layout. Every string here is already formatted and
//! cleaned of control characters, but NOT escaped: the HTML renderer escapes it.

use crate::format::{
    NULL, clean, confidence, count, label, money, money_f, num, p_eq, p_value_opt, pct, pp, yes_no,
};
use crate::model::*;

/// How a cell or a line should look (the text renderer ignores it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tone {
    Plain,
    Good,
    Bad,
    Muted,
}

#[derive(Debug, Clone)]
pub(crate) struct Cell {
    pub(crate) text: String,
    pub(crate) tone: Tone,
}

impl Cell {
    fn plain(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            tone: Tone::Plain,
        }
    }

    fn met(b: Option<bool>) -> Self {
        Self {
            text: yes_no(b),
            tone: match b {
                Some(true) => Tone::Good,
                Some(false) => Tone::Bad,
                None => Tone::Muted,
            },
        }
    }
}

impl From<String> for Cell {
    fn from(s: String) -> Self {
        Cell::plain(s)
    }
}

impl From<&str> for Cell {
    fn from(s: &str) -> Self {
        Cell::plain(s)
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Column {
    pub(crate) name: String,
    /// Right-aligned (numbers).
    pub(crate) right: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct Table {
    pub(crate) columns: Vec<Column>,
    pub(crate) rows: Vec<Vec<Cell>>,
}

impl Table {
    /// Columns from `(name, right-aligned)`.
    fn new(columns: &[(&str, bool)]) -> Self {
        Self {
            columns: columns
                .iter()
                .map(|(n, r)| Column {
                    name: (*n).to_owned(),
                    right: *r,
                })
                .collect(),
            rows: Vec::new(),
        }
    }

    fn with_names(columns: Vec<(String, bool)>) -> Self {
        Self {
            columns: columns
                .into_iter()
                .map(|(name, right)| Column { name, right })
                .collect(),
            rows: Vec::new(),
        }
    }

    fn row(&mut self, cells: Vec<Cell>) {
        self.rows.push(cells);
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Bar {
    pub(crate) label: String,
    /// Bar length in the chart's unit; `None` draws no bar.
    pub(crate) value: Option<f64>,
    /// Text after the bar.
    pub(crate) text: String,
    pub(crate) tone: Tone,
}

#[derive(Debug, Clone)]
pub(crate) struct BarChart {
    pub(crate) title: String,
    pub(crate) bars: Vec<Bar>,
    /// A vertical reference line (e.g. the target) and its label.
    pub(crate) reference: Option<(f64, String)>,
}

#[derive(Debug, Clone)]
pub(crate) enum Block {
    /// A sub-heading.
    Heading(String),
    Table(Table),
    Chart(BarChart),
    /// A line of text.
    Note(String, Tone),
    /// The view returned no row.
    NoData,
    /// The query failed.
    Error(String),
}

#[derive(Debug, Clone)]
pub(crate) struct DocSection {
    /// HTML anchor.
    pub(crate) id: &'static str,
    pub(crate) title: &'static str,
    /// Views read, for the "source" line.
    pub(crate) sources: Vec<String>,
    pub(crate) blocks: Vec<Block>,
}

pub(crate) struct Doc {
    pub(crate) subtitle: String,
    pub(crate) sections: Vec<DocSection>,
}

/// The error or "no data" block of a section, or `None` when it has rows.
fn status<T>(s: &Section<T>) -> Option<Block> {
    if let Some(e) = &s.error {
        Some(Block::Error(clean(e)))
    } else if s.rows.is_empty() {
        Some(Block::NoData)
    } else {
        None
    }
}

fn truncated_note<T>(s: &Section<T>, what: &str) -> Option<Block> {
    s.truncated.then(|| {
        Block::Note(
            format!(
                "showing the first {} {what}; query {} for all",
                crate::fetch::MAX_ROWS.min(s.rows.len()),
                clean(&s.view)
            ),
            Tone::Muted,
        )
    })
}

fn view_name<T>(s: &Section<T>, default: &str) -> String {
    if s.view.is_empty() {
        default.to_owned()
    } else {
        clean(&s.view)
    }
}

pub(crate) fn build(r: &Report) -> Doc {
    let mut subtitle = format!("database {}", label(&r.database));
    if !r.generated_at.is_empty() {
        subtitle.push_str(&format!(", generated {}", clean(&r.generated_at)));
    }
    Doc {
        subtitle,
        sections: vec![
            scorecard(r),
            funnel(r),
            acquisition(r),
            repurchase(r),
            service(r),
            delivery(r),
            experiments(r),
            private_domain(r),
        ],
    }
}

// --- 1. scorecard ---------------------------------------------------------------------

/// Display name and value kind of a scorecard KPI.
enum Kind {
    Share,
    Ratio,
    Other,
}

fn kpi_label(kpi: &str) -> (String, Kind) {
    let (name, kind) = match kpi {
        "ltv_cac_ratio" => ("LTV/CAC", Kind::Ratio),
        "repurchase_rate" => ("Repurchase rate", Kind::Share),
        "csat_avg" => ("CSAT average (1-5)", Kind::Ratio),
        "promotion_spend_share" => ("Promotion spend / revenue", Kind::Share),
        "private_domain_share" => ("Private-domain traffic share", Kind::Share),
        "first_response_sla_share" => ("First response within 2 h SLA", Kind::Share),
        "complaint_rate" => ("Complaint rate", Kind::Share),
        other => return (clean(other), Kind::Other),
    };
    (name.to_owned(), kind)
}

fn kpi_value(kind: &Kind, x: Option<f64>) -> String {
    match kind {
        Kind::Share => pct(x),
        Kind::Ratio => num(x, 2),
        Kind::Other => num(x, 4),
    }
}

fn scorecard(r: &Report) -> DocSection {
    let s = &r.scorecard;
    let mut blocks = Vec::new();
    if let Some(b) = status(s) {
        blocks.push(b);
    } else {
        let mut t = Table::new(&[
            ("KPI", false),
            ("dimension", false),
            ("value", true),
            ("target", true),
            ("met", false),
        ]);
        for row in &s.rows {
            let (name, kind) = kpi_label(&row.kpi);
            let target = match row.target {
                Some(x) => format!("{} {}", clean(&row.direction), kpi_value(&kind, Some(x))),
                None => NULL.to_owned(),
            };
            let dimension = if row.dimension.is_empty() {
                String::new()
            } else {
                clean(&row.dimension)
            };
            t.row(vec![
                name.into(),
                dimension.into(),
                kpi_value(&kind, row.value).into(),
                target.into(),
                Cell::met(row.meets_target),
            ]);
        }
        blocks.push(Block::Table(t));
    }
    DocSection {
        id: "scorecard",
        title: "Headline scorecard",
        sources: vec![view_name(s, "kpi_scorecard")],
        blocks,
    }
}

// --- 2. funnel ------------------------------------------------------------------------

fn step_label(step: u8, name: &str) -> String {
    if name.is_empty() {
        format!("step {step}")
    } else {
        format!("{step} {}", clean(name))
    }
}

fn funnel(r: &Report) -> DocSection {
    let mut blocks = Vec::new();
    let s = &r.funnels;
    if let Some(b) = status(s) {
        blocks.push(b);
    }
    for f in &s.rows {
        if s.rows.len() > 1 {
            blocks.push(Block::Heading(format!("funnel {}", label(&f.funnel_id))));
        }
        let mut t = Table::new(&[
            ("step", false),
            ("persons", true),
            ("from previous", true),
            ("from step 1", true),
        ]);
        let mut bars = Vec::new();
        for st in &f.steps {
            let lbl = step_label(st.step, &st.name);
            t.row(vec![
                lbl.clone().into(),
                count(st.persons).into(),
                pct(st.from_previous).into(),
                pct(st.from_first).into(),
            ]);
            bars.push(Bar {
                label: lbl,
                value: Some(st.persons as f64),
                text: format!("{} ({})", count(st.persons), pct(st.from_first)),
                tone: Tone::Plain,
            });
        }
        if f.steps.is_empty() {
            blocks.push(Block::NoData);
            continue;
        }
        blocks.push(Block::Table(t));
        if f.steps.iter().any(|s| s.persons > 0) {
            blocks.push(Block::Chart(BarChart {
                title: format!("Funnel {}: persons per step", label(&f.funnel_id)),
                bars,
                reference: None,
            }));
        }
    }

    // By entry channel.
    let c = &r.funnel_channels;
    blocks.push(Block::Heading("By entry channel (all days)".to_owned()));
    if let Some(b) = status(c) {
        blocks.push(b);
    }
    let mut funnel_ids: Vec<&str> = Vec::new();
    for row in &c.rows {
        if !funnel_ids.contains(&row.funnel_id.as_str()) {
            funnel_ids.push(&row.funnel_id);
        }
    }
    for fid in funnel_ids {
        let rows: Vec<&ChannelFunnel> = c.rows.iter().filter(|x| x.funnel_id == fid).collect();
        let steps = rows.iter().map(|x| x.persons.len()).max().unwrap_or(0);
        let names = rows
            .iter()
            .find(|x| !x.step_names.is_empty())
            .map(|x| x.step_names.clone())
            .unwrap_or_default();
        if funnel_ids_len(c) > 1 {
            blocks.push(Block::Note(format!("funnel {}", label(fid)), Tone::Plain));
        }
        let mut cols = vec![("channel".to_owned(), false)];
        for i in 0..steps {
            let n = names.get(i).map(|n| clean(n)).unwrap_or_default();
            cols.push((
                if n.is_empty() {
                    format!("step {}", i + 1)
                } else {
                    n
                },
                true,
            ));
        }
        cols.push(("first to last".to_owned(), true));
        let mut t = Table::with_names(cols);
        for x in rows {
            let mut cells: Vec<Cell> = vec![label(&x.channel).into()];
            cells.extend(x.persons.iter().map(|&n| Cell::from(count(n))));
            let first = x.persons.first().copied().unwrap_or(0);
            let last = x.persons.last().copied().unwrap_or(0);
            cells.push(pct((first > 0).then(|| last as f64 / first as f64)).into());
            t.row(cells);
        }
        blocks.push(Block::Table(t));
    }
    if let Some(b) = truncated_note(c, "channels by entries of each funnel") {
        blocks.push(b);
    }
    DocSection {
        id: "funnel",
        title: "Funnel (stream)",
        sources: vec![view_name(s, "kpi_funnel_stream")],
        blocks,
    }
}

fn funnel_ids_len(c: &Section<ChannelFunnel>) -> usize {
    let mut ids: Vec<&str> = c.rows.iter().map(|x| x.funnel_id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    ids.len()
}

// --- 3. acquisition -------------------------------------------------------------------

fn acquisition(r: &Report) -> DocSection {
    let mut blocks = Vec::new();
    let s = &r.ltv_cac;
    blocks.push(Block::Heading(
        "LTV / CAC by acquisition channel".to_owned(),
    ));
    if let Some(b) = status(s) {
        blocks.push(b);
    } else {
        let target = s.rows.iter().find_map(|x| x.target).unwrap_or(3.0);
        let mut currencies: Vec<&str> = s.rows.iter().map(|x| x.currency.as_str()).collect();
        currencies.sort_unstable();
        currencies.dedup();
        let mut t = Table::new(&[
            ("channel", false),
            ("customers", true),
            ("avg LTV", true),
            ("spend", true),
            ("CAC", true),
            ("LTV/CAC", true),
            (&format!("met (>= {})", num(Some(target), 0)), false),
        ]);
        let mut bars = Vec::new();
        for x in &s.rows {
            t.row(vec![
                label(&x.channel).into(),
                count(x.customers).into(),
                money_f(x.avg_ltv_minor, &x.currency).into(),
                money(x.spend_minor, &x.currency).into(),
                money_f(x.cac_minor, &x.currency).into(),
                num(x.ltv_cac_ratio, 2).into(),
                Cell::met(x.meets_target),
            ]);
            let mut lbl = label(&x.channel);
            if currencies.len() > 1 {
                lbl.push_str(&format!(" ({})", label(&x.currency)));
            }
            bars.push(Bar {
                label: lbl,
                value: x.ltv_cac_ratio,
                text: match x.ltv_cac_ratio {
                    Some(v) => format!("{v:.2}"),
                    None => format!("{NULL} (no spend or no customer)"),
                },
                tone: match x.meets_target {
                    Some(true) => Tone::Good,
                    Some(false) => Tone::Bad,
                    None => Tone::Muted,
                },
            });
        }
        blocks.push(Block::Table(t));
        blocks.push(Block::Chart(BarChart {
            title: "LTV/CAC by acquisition channel".to_owned(),
            bars,
            reference: Some((target, format!("target {}", num(Some(target), 0)))),
        }));
    }

    let p = &r.promotion_roi;
    blocks.push(Block::Heading("Promotion ROI by campaign".to_owned()));
    if let Some(b) = status(p) {
        blocks.push(b);
    } else {
        let mut t = Table::new(&[
            ("campaign", false),
            ("channel", false),
            ("orders", true),
            ("net revenue", true),
            ("promotion cost", true),
            ("ROI", true),
            ("revenue/cost", true),
        ]);
        for x in &p.rows {
            t.row(vec![
                label(&x.campaign).into(),
                label(&x.channel).into(),
                count(x.orders).into(),
                money(x.net_revenue_minor, &x.currency).into(),
                money(x.promotion_cost_minor, &x.currency).into(),
                num(x.roi, 2).into(),
                num(x.revenue_per_cost, 2).into(),
            ]);
        }
        blocks.push(Block::Table(t));
        if let Some(b) = truncated_note(p, "campaigns by net revenue") {
            blocks.push(b);
        }
    }
    DocSection {
        id: "acquisition",
        title: "CAC, LTV and ROI by channel",
        sources: vec![
            view_name(s, "kpi_ltv_cac"),
            view_name(p, "kpi_promotion_roi"),
        ],
        blocks,
    }
}

// --- 4. repurchase --------------------------------------------------------------------

fn repurchase(r: &Report) -> DocSection {
    let s = &r.repurchase;
    let mut blocks = Vec::new();
    if let Some(b) = status(s) {
        blocks.push(b);
    } else {
        let mut t = Table::new(&[
            ("buyers", true),
            ("repeat buyers", true),
            ("repurchase rate", true),
            ("target", true),
            ("met", false),
        ]);
        for x in &s.rows {
            t.row(vec![
                count(x.buyers).into(),
                count(x.repeat_buyers).into(),
                pct(x.repurchase_rate).into(),
                x.target
                    .map_or_else(|| NULL.to_owned(), |v| format!(">= {}", pct(Some(v))))
                    .into(),
                Cell::met(x.meets_target),
            ]);
        }
        blocks.push(Block::Table(t));
    }
    DocSection {
        id: "repurchase",
        title: "Repurchase",
        sources: vec![view_name(s, "kpi_repurchase_rate")],
        blocks,
    }
}

// --- 5. service -----------------------------------------------------------------------

fn service(r: &Report) -> DocSection {
    let mut blocks = Vec::new();

    let c = &r.csat;
    blocks.push(Block::Heading("CSAT".to_owned()));
    if let Some(b) = status(c) {
        blocks.push(b);
    } else {
        let mut t = Table::new(&[
            ("rated tickets", true),
            ("average (1-5)", true),
            ("share >= 4", true),
            ("target", true),
            ("met", false),
        ]);
        for x in &c.rows {
            t.row(vec![
                count(x.rated_tickets).into(),
                num(x.csat_avg, 2).into(),
                pct(x.satisfied_share).into(),
                x.target
                    .map_or_else(|| NULL.to_owned(), |v| format!(">= {v:.1}"))
                    .into(),
                Cell::met(x.meets_target),
            ]);
        }
        blocks.push(Block::Table(t));
    }

    let f = &r.first_response;
    blocks.push(Block::Heading("First response".to_owned()));
    if let Some(b) = status(f) {
        blocks.push(b);
    } else {
        let sla = f.rows.iter().find_map(|x| x.sla_minutes).unwrap_or(120.0);
        let mut t = Table::new(&[
            ("tickets", true),
            ("responded", true),
            ("median min", true),
            ("avg min", true),
            (&format!("within {} min", num(Some(sla), 0)), true),
            ("overdue unanswered", true),
            ("SLA share", true),
        ]);
        for x in &f.rows {
            t.row(vec![
                count(x.tickets).into(),
                count(x.responded).into(),
                num(x.median_response_minutes, 1).into(),
                num(x.avg_response_minutes, 1).into(),
                count(x.within_sla).into(),
                count(x.overdue_unanswered).into(),
                pct(x.sla_share).into(),
            ]);
        }
        blocks.push(Block::Table(t));
    }

    let k = &r.complaints;
    blocks.push(Block::Heading("Complaints".to_owned()));
    if let Some(b) = status(k) {
        blocks.push(b);
    } else {
        let mut t = Table::new(&[
            ("complaints", true),
            ("paid orders", true),
            ("complaint rate", true),
        ]);
        for x in &k.rows {
            t.row(vec![
                count(x.complaints).into(),
                count(x.paid_orders).into(),
                pct(x.complaint_rate).into(),
            ]);
        }
        blocks.push(Block::Table(t));
    }
    DocSection {
        id: "service",
        title: "Service",
        sources: vec![
            view_name(c, "kpi_csat"),
            view_name(f, "kpi_first_response"),
            view_name(k, "kpi_complaint_rate"),
        ],
        blocks,
    }
}

// --- 6. delivery ----------------------------------------------------------------------

fn delivery(r: &Report) -> DocSection {
    let s = &r.delivery;
    let mut blocks = Vec::new();
    if let Some(b) = status(s) {
        blocks.push(b);
    } else {
        let mut t = Table::new(&[
            ("carrier", false),
            ("shipments", true),
            ("delivered", true),
            ("avg hours", true),
            ("exceptions", true),
            ("exception rate", true),
            ("on time", true),
        ]);
        for x in &s.rows {
            t.row(vec![
                label(&x.carrier).into(),
                count(x.shipments).into(),
                count(x.delivered).into(),
                num(x.avg_delivery_hours, 1).into(),
                count(x.with_exception).into(),
                pct(x.exception_rate).into(),
                pct(x.on_time_share).into(),
            ]);
        }
        blocks.push(Block::Table(t));
        if let Some(b) = truncated_note(s, "carriers by shipments") {
            blocks.push(b);
        }
    }
    DocSection {
        id: "delivery",
        title: "Delivery",
        sources: vec![view_name(s, "kpi_delivery")],
        blocks,
    }
}

// --- 7. experiments -------------------------------------------------------------------

fn verdict_tone(v: &str) -> Tone {
    if v.starts_with("SRM") {
        Tone::Bad
    } else if v.starts_with("treatment ") && v.contains(" wins: ") {
        Tone::Good
    } else if v.starts_with("treatment ") && v.contains(" loses: ") {
        Tone::Bad
    } else {
        Tone::Plain
    }
}

fn experiments(r: &Report) -> DocSection {
    let s = &r.experiments;
    let mut blocks = Vec::new();
    if let Some(b) = status(s) {
        blocks.push(b);
    }
    for e in &s.rows {
        blocks.push(Block::Heading(format!(
            "experiment {}",
            label(&e.experiment_id)
        )));
        let v = clean(&e.verdict);
        blocks.push(Block::Note(format!("verdict: {v}"), verdict_tone(&v)));
        let mut t = Table::new(&[
            ("variant", false),
            ("exposed", true),
            ("converted", true),
            ("conv. rate", true),
            ("uplift", true),
            ("relative", true),
            ("95 % CI of uplift", true),
            ("p-value", true),
            ("confidence", true),
            ("significant", false),
        ]);
        let mut bars = Vec::new();
        for x in &e.variants {
            let mut name = label(&x.variant);
            if x.is_control && x.variant != "control" {
                name.push_str(" (control)");
            }
            let ci = match (x.ci_low, x.ci_high) {
                (Some(lo), Some(hi)) => {
                    let lo = pp(lo, 2);
                    format!("{} .. {}", lo.trim_end_matches(" pp"), pp(hi, 2))
                }
                _ => NULL.to_owned(),
            };
            t.row(vec![
                name.clone().into(),
                count(x.exposed).into(),
                count(x.converted).into(),
                pct(x.conversion_rate).into(),
                x.uplift_abs
                    .map_or_else(|| NULL.to_owned(), |u| pp(u, 2))
                    .into(),
                x.uplift_rel
                    .map_or_else(|| NULL.to_owned(), |u| format!("{:+.1} %", u * 100.0))
                    .into(),
                ci.into(),
                p_value_opt(x.p_value).into(),
                x.confidence
                    .map_or_else(|| NULL.to_owned(), confidence)
                    .into(),
                if x.is_control {
                    Cell {
                        text: NULL.to_owned(),
                        tone: Tone::Muted,
                    }
                } else {
                    Cell {
                        text: yes_no(x.significant),
                        tone: if x.significant == Some(true) {
                            Tone::Good
                        } else {
                            Tone::Plain
                        },
                    }
                },
            ]);
            bars.push(Bar {
                label: name,
                value: x.conversion_rate,
                text: format!("{} of {}", pct(x.conversion_rate), count(x.exposed)),
                tone: if x.is_control {
                    Tone::Muted
                } else {
                    Tone::Plain
                },
            });
        }
        blocks.push(Block::Table(t));
        let srm = e.variants.iter().find_map(|x| x.srm_p_value);
        let total = e
            .variants
            .iter()
            .map(|x| x.total_exposed)
            .max()
            .unwrap_or(0);
        let mismatch = e.variants.iter().any(|x| x.srm_mismatch == Some(true));
        blocks.push(Block::Note(
            format!(
                "sample ratio (equal split assumed): {} exposed, {}{}",
                count(total),
                srm.map_or_else(|| format!("p = {NULL}"), p_eq),
                if mismatch { ", MISMATCH" } else { "" }
            ),
            if mismatch { Tone::Bad } else { Tone::Muted },
        ));
        blocks.push(Block::Chart(BarChart {
            title: format!("Conversion per variant: {}", label(&e.experiment_id)),
            bars,
            reference: None,
        }));
    }
    DocSection {
        id: "experiments",
        title: "Experiments",
        sources: vec![view_name(s, "kpi_ab_test_stream")],
        blocks,
    }
}

// --- 8. private domain and RFM --------------------------------------------------------

fn private_domain(r: &Report) -> DocSection {
    let mut blocks = Vec::new();
    let p = &r.private_domain;
    blocks.push(Block::Heading("Private-domain traffic share".to_owned()));
    if let Some(b) = status(p) {
        blocks.push(b);
    } else {
        let mut t = Table::new(&[
            ("calls", true),
            ("private", true),
            ("share", true),
            ("visitors", true),
            ("private visitors", true),
            ("visitor share", true),
            ("target", true),
            ("met", false),
        ]);
        for x in &p.rows {
            t.row(vec![
                count(x.events).into(),
                count(x.private_events).into(),
                pct(x.private_domain_share).into(),
                count(x.visitors).into(),
                count(x.private_visitors).into(),
                pct(x.private_visitor_share).into(),
                x.target
                    .map_or_else(|| NULL.to_owned(), |v| format!(">= {}", pct(Some(v))))
                    .into(),
                Cell::met(x.meets_target),
            ]);
        }
        blocks.push(Block::Table(t));
    }

    let s = &r.rfm_segments;
    blocks.push(Block::Heading("RFM segments".to_owned()));
    if let Some(b) = status(s) {
        blocks.push(b);
    } else {
        let mut t = Table::new(&[
            ("segment", false),
            ("", false),
            ("customers", true),
            ("net value", true),
            ("avg recency days", true),
            ("avg orders", true),
            ("avg value", true),
        ]);
        for x in &s.rows {
            t.row(vec![
                label(&x.segment).into(),
                clean(&x.segment_zh).into(),
                count(x.customers).into(),
                money(x.monetary_minor, &x.currency).into(),
                num(x.avg_recency_days, 1).into(),
                num(x.avg_frequency, 2).into(),
                money_f(x.avg_monetary_minor, &x.currency).into(),
            ]);
        }
        blocks.push(Block::Table(t));
    }
    DocSection {
        id: "customers",
        title: "Private domain and RFM segments",
        sources: vec![
            view_name(p, "kpi_private_domain_share"),
            view_name(s, "kpi_rfm_segments"),
        ],
        blocks,
    }
}
