//! The report as plain data: one [`Section`] per query, rows with the views' columns.
//!
//! Counts and money sums are plain integers (the views declare them non-nullable; a value
//! the server leaves out reads as 0). Every ratio, average and statistic is an `Option`:
//! `None` is SQL `NULL` (undefined, e.g. no denominator) and renders as `-`.

use serde::Serialize;

/// Everything `zt report` shows, as fetched from the `kpi_*` views.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// ClickHouse database the views were read from.
    pub database: String,
    /// When the report was fetched (RFC 3339, UTC); empty when unknown.
    pub generated_at: String,
    /// 1. Headline scorecard (`kpi_scorecard`).
    pub scorecard: Section<ScorecardRow>,
    /// 2. Funnels from the stream (`kpi_funnel_stream`, summed over every breakdown).
    pub funnels: Section<Funnel>,
    /// 2b. The same funnels by entry channel (`kpi_funnel_stream`, summed over days).
    pub funnel_channels: Section<ChannelFunnel>,
    /// 3. LTV, CAC and LTV/CAC per acquisition channel (`kpi_ltv_cac`).
    pub ltv_cac: Section<LtvCacRow>,
    /// 3b. Promotion ROI per campaign (`kpi_promotion_roi`), largest net revenue first.
    pub promotion_roi: Section<PromotionRoiRow>,
    /// 4. Repurchase rate (`kpi_repurchase_rate`), at most one row.
    pub repurchase: Section<RepurchaseRow>,
    /// 5. CSAT (`kpi_csat`), at most one row.
    pub csat: Section<CsatRow>,
    /// 5b. First response time and the 2-hour SLA (`kpi_first_response`), at most one row.
    pub first_response: Section<FirstResponseRow>,
    /// 5c. Complaint rate (`kpi_complaint_rate`), at most one row.
    pub complaints: Section<ComplaintRow>,
    /// 6. Delivery time and exception rate per carrier (`kpi_delivery`).
    pub delivery: Section<DeliveryRow>,
    /// 7. A/B experiments (`kpi_ab_test_stream`, else `kpi_ab_test` when the stream view
    ///    is empty or unreadable), one entry per experiment with its variants and verdict.
    pub experiments: Section<Experiment>,
    /// 8. Private-domain traffic share (`kpi_private_domain_share`), at most one row.
    pub private_domain: Section<PrivateDomainRow>,
    /// 8b. RFM segment counts (`kpi_rfm_segments`).
    pub rfm_segments: Section<RfmSegmentRow>,
}

impl Report {
    /// The sections whose query failed, as `(view, error)`; empty when every query ran.
    pub fn errors(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        macro_rules! collect {
            ($($s:ident),*) => {$(
                if let Some(e) = &self.$s.error {
                    out.push((self.$s.view.clone(), e.clone()));
                }
            )*};
        }
        collect!(
            scorecard,
            funnels,
            funnel_channels,
            ltv_cac,
            promotion_roi,
            repurchase,
            csat,
            first_response,
            complaints,
            delivery,
            experiments,
            private_domain,
            rfm_segments
        );
        out
    }

    /// Names the steps of a funnel (e.g. from the `[funnels]` configuration), in step
    /// order; steps beyond `names` keep their current name. The built-in `ecommerce`
    /// funnel is named by [`crate::fetch`] already.
    pub fn name_funnel_steps<S: AsRef<str>>(&mut self, funnel_id: &str, names: &[S]) {
        for f in self
            .funnels
            .rows
            .iter_mut()
            .filter(|f| f.funnel_id == funnel_id)
        {
            for s in &mut f.steps {
                let i = usize::from(s.step).wrapping_sub(1);
                if let Some(n) = names.get(i) {
                    s.name = n.as_ref().to_owned();
                }
            }
        }
        for c in self
            .funnel_channels
            .rows
            .iter_mut()
            .filter(|c| c.funnel_id == funnel_id)
        {
            if c.step_names.len() < names.len() {
                c.step_names.resize(names.len(), String::new());
            }
            for (slot, n) in c.step_names.iter_mut().zip(names) {
                *slot = n.as_ref().to_owned();
            }
        }
    }
}

/// The result of one query: its rows, or why it failed. A failed query does not fail the
/// whole report; [`Report::errors`] lists them.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Section<T> {
    /// The view read (without the database).
    pub view: String,
    /// Its rows (possibly grouped), in display order. Empty means "no data".
    pub rows: Vec<T>,
    /// True when the view had more rows than the report shows (see each section's limit).
    pub truncated: bool,
    /// The error when the query failed.
    pub error: Option<String>,
}

impl<T> Section<T> {
    /// A section with rows.
    pub fn new(view: impl Into<String>, rows: Vec<T>) -> Self {
        Self {
            view: view.into(),
            rows,
            truncated: false,
            error: None,
        }
    }

    /// A section whose query failed.
    pub fn failed(view: impl Into<String>, error: impl Into<String>) -> Self {
        Self {
            view: view.into(),
            rows: Vec::new(),
            truncated: false,
            error: Some(error.into()),
        }
    }
}

/// One row of `kpi_scorecard`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ScorecardRow {
    /// KPI id (`ltv_cac_ratio`, `repurchase_rate`, `csat_avg`, ...).
    pub kpi: String,
    /// Channel, currency or `''`.
    pub dimension: String,
    pub value: Option<f64>,
    pub target: Option<f64>,
    /// `>=` or `<=`.
    pub direction: String,
    pub meets_target: Option<bool>,
}

/// One funnel of `kpi_funnel_stream`, over every day and breakdown.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Funnel {
    pub funnel_id: String,
    /// Steps 1 .. the deepest level reached, in order.
    pub steps: Vec<FunnelStep>,
}

/// One funnel step.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct FunnelStep {
    /// 1-based.
    pub step: u8,
    /// Step name, `''` when unknown.
    pub name: String,
    /// Persons who reached at least this step.
    pub persons: u64,
    /// `persons` / persons of the previous step (`None` on step 1 or after 0).
    pub from_previous: Option<f64>,
    /// `persons` / persons of step 1.
    pub from_first: Option<f64>,
}

/// One funnel by entry channel: persons per step.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ChannelFunnel {
    pub funnel_id: String,
    pub channel: String,
    /// Persons who reached at least step `i + 1`, for every step of the funnel.
    pub persons: Vec<u64>,
    /// Step names (may be shorter than `persons` or empty).
    pub step_names: Vec<String>,
}

/// One row of `kpi_ltv_cac`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LtvCacRow {
    pub channel: String,
    pub currency: String,
    pub customers: u64,
    pub net_ltv_minor: i64,
    pub avg_ltv_minor: Option<f64>,
    pub spend_minor: i64,
    pub cac_minor: Option<f64>,
    pub ltv_cac_ratio: Option<f64>,
    pub target: Option<f64>,
    pub meets_target: Option<bool>,
}

/// One row of `kpi_promotion_roi`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PromotionRoiRow {
    pub campaign: String,
    pub currency: String,
    pub channel: String,
    pub orders: u64,
    pub gross_revenue_minor: i64,
    pub refunded_minor: i64,
    pub net_revenue_minor: i64,
    pub discount_minor: i64,
    pub ad_spend_minor: i64,
    pub promotion_cost_minor: i64,
    pub roi: Option<f64>,
    pub revenue_per_cost: Option<f64>,
}

/// The row of `kpi_repurchase_rate`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RepurchaseRow {
    pub buyers: u64,
    pub repeat_buyers: u64,
    pub repurchase_rate: Option<f64>,
    pub target: Option<f64>,
    pub meets_target: Option<bool>,
}

/// The row of `kpi_csat`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CsatRow {
    pub rated_tickets: u64,
    pub csat_avg: Option<f64>,
    pub satisfied: u64,
    pub satisfied_share: Option<f64>,
    pub target: Option<f64>,
    pub meets_target: Option<bool>,
}

/// The row of `kpi_first_response`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct FirstResponseRow {
    pub tickets: u64,
    pub responded: u64,
    pub within_sla: u64,
    pub overdue_unanswered: u64,
    pub sla_share: Option<f64>,
    pub avg_response_minutes: Option<f64>,
    pub median_response_minutes: Option<f64>,
    pub sla_minutes: Option<f64>,
}

/// The row of `kpi_complaint_rate`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ComplaintRow {
    pub complaints: u64,
    pub paid_orders: u64,
    pub complaint_rate: Option<f64>,
}

/// One row (carrier) of `kpi_delivery`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DeliveryRow {
    pub carrier: String,
    pub shipments: u64,
    pub delivered: u64,
    pub avg_delivery_hours: Option<f64>,
    pub with_exception: u64,
    pub exception_rate: Option<f64>,
    pub delivered_with_promise: u64,
    pub on_time: u64,
    pub on_time_share: Option<f64>,
}

/// One experiment of `kpi_ab_test_stream` / `kpi_ab_test`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Experiment {
    pub experiment_id: String,
    /// The control first, then the other variants by name.
    pub variants: Vec<VariantRow>,
    /// One line, from the view's flags: SRM, significance and the sign of the uplift.
    pub verdict: String,
}

impl Experiment {
    /// An experiment with its verdict ([`verdict`]).
    pub fn new(experiment_id: impl Into<String>, variants: Vec<VariantRow>) -> Self {
        let verdict = verdict(&variants);
        Self {
            experiment_id: experiment_id.into(),
            variants,
            verdict,
        }
    }
}

/// One variant row of the A/B views; the statistics are the view's, unchanged.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct VariantRow {
    pub variant: String,
    pub exposed: u64,
    pub converted: u64,
    pub conversion_rate: Option<f64>,
    pub control_variant: String,
    pub is_control: bool,
    pub uplift_abs: Option<f64>,
    pub uplift_rel: Option<f64>,
    pub ci_low: Option<f64>,
    pub ci_high: Option<f64>,
    pub p_value: Option<f64>,
    pub confidence: Option<f64>,
    pub significant: Option<bool>,
    pub total_exposed: u64,
    pub srm_p_value: Option<f64>,
    pub srm_mismatch: Option<bool>,
}

/// The row of `kpi_private_domain_share`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PrivateDomainRow {
    pub events: u64,
    pub private_events: u64,
    pub private_domain_share: Option<f64>,
    pub visitors: u64,
    pub private_visitors: u64,
    pub private_visitor_share: Option<f64>,
    pub target: Option<f64>,
    pub meets_target: Option<bool>,
}

/// One row of `kpi_rfm_segments`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RfmSegmentRow {
    pub segment: String,
    pub segment_zh: String,
    pub currency: String,
    pub customers: u64,
    pub monetary_minor: i64,
    pub avg_recency_days: Option<f64>,
    pub avg_frequency: Option<f64>,
    pub avg_monetary_minor: Option<f64>,
}

/// The one-line verdict of an experiment, from the view's columns only:
///
/// - any row with `srm_mismatch = 1`: "SRM detected: do not trust" (with the SRM p-value);
/// - else the significant (`significant = 1`) non-control variant with the largest
///   `|uplift_abs|`: "treatment X wins: +u pp, c confidence" or "... loses: ..." (just
///   "X wins" when the variant's name starts with "treatment");
/// - else "no significant difference" (with the best confidence reached);
/// - without a non-control variant: "only one variant exposed".
pub fn verdict(variants: &[VariantRow]) -> String {
    use crate::format::{confidence, pp};
    if let Some(v) = variants.iter().find(|v| v.srm_mismatch == Some(true)) {
        let p = match v.srm_p_value {
            Some(p) => format!(" (sample-ratio {})", crate::format::p_eq(p)),
            None => String::new(),
        };
        return format!("SRM detected{p}: do not trust");
    }
    let treatments: Vec<&VariantRow> = variants.iter().filter(|v| !v.is_control).collect();
    if treatments.is_empty() {
        return if variants.is_empty() {
            "no data".to_owned()
        } else {
            "only one variant exposed: nothing to compare".to_owned()
        };
    }
    let best = treatments
        .iter()
        .filter(|v| v.significant == Some(true))
        .filter_map(|v| v.uplift_abs.map(|u| (*v, u)))
        .max_by(|a, b| a.1.abs().total_cmp(&b.1.abs()));
    if let Some((v, u)) = best {
        let word = if u >= 0.0 { "wins" } else { "loses" };
        let conf = v
            .confidence
            .map(|c| format!(", {} confidence", confidence(c)))
            .unwrap_or_default();
        let name = crate::format::clean(&v.variant);
        let name = if name.to_ascii_lowercase().starts_with("treatment") {
            name
        } else {
            format!("treatment {name}")
        };
        return format!("{name} {word}: {}{conf}", pp(u, 1));
    }
    let best_conf = treatments
        .iter()
        .filter_map(|v| v.confidence)
        .max_by(f64::total_cmp);
    match best_conf {
        Some(c) => format!(
            "no significant difference (best confidence {})",
            confidence(c)
        ),
        None => "no significant difference".to_owned(),
    }
}
