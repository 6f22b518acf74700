//! `zt report`: zhongtai's KPIs, read from ClickHouse and rendered for a terminal
//! ([`render_text`]) or as one self-contained HTML page with inline SVG charts
//! ([`render_html`]). See `docs/report.md`.
//!
//! [`fetch`] runs one read-only `SELECT … FORMAT JSONEachRow` per section against the
//! views `zt migrate` creates in `[clickhouse] database` (docs/bi.md), and nothing else:
//!
//! | section | view(s) |
//! |---|---|
//! | headline scorecard | `kpi_scorecard` |
//! | funnel, and funnel by entry channel | `kpi_funnel_stream` (summed over days and breakdowns) |
//! | CAC, LTV, LTV/CAC per channel; promotion ROI | `kpi_ltv_cac`; `kpi_promotion_roi` (top 30 campaigns) |
//! | repurchase rate | `kpi_repurchase_rate` |
//! | service | `kpi_csat`, `kpi_first_response`, `kpi_complaint_rate` |
//! | delivery per carrier | `kpi_delivery` (top 30 carriers) |
//! | experiments | `kpi_ab_test_stream`, or `kpi_ab_test` when the stream view is empty or unreadable |
//! | private domain, RFM | `kpi_private_domain_share`, `kpi_rfm_segments` |
//!
//! The queries only select, sort, sum the additive funnel columns and limit: every
//! statistic (rates, uplift, confidence intervals, p-values, sample-ratio mismatch) is the
//! view's own. The report computes step-to-step funnel conversions from the summed
//! person counts and a one-line verdict per experiment from the view's `significant`,
//! `srm_mismatch`, `uplift_abs` and `confidence` columns.
//!
//! The queries run on ClickHouse 18.16 and current releases. An empty view renders as
//! `no data`, a NULL as `-`, a failed query as its error (the rest of the report still
//! renders; [`Report::errors`] lists failures). Money is integer minor units in the views
//! and renders as major units with two decimals and the currency (`1,234.56 CNY`).

mod doc;
mod fetch;
mod format;
mod html;
mod model;
mod text;

pub use fetch::{Row, fetch, query_rows};
pub use html::render_html;
pub use model::{
    ChannelFunnel, ComplaintRow, CsatRow, DeliveryRow, Experiment, FirstResponseRow, Funnel,
    FunnelStep, LtvCacRow, PrivateDomainRow, PromotionRoiRow, Report, RepurchaseRow, RfmSegmentRow,
    ScorecardRow, Section, VariantRow, verdict,
};
pub use text::render_text;

#[cfg(test)]
mod tests;
