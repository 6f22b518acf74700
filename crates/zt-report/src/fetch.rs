//! Reading the views: one plain `SELECT ... FROM <db>.<view> ... FORMAT JSONEachRow` per
//! section (ClickHouse 18.16 compatible: no window functions, no parameters), parsed
//! leniently: 64-bit integers may arrive quoted, NULL and missing columns read as `None`
//! (or 0 for counts), non-finite floats as `None`. Nothing the server sends can panic.

use std::collections::HashMap;

use anyhow::{Context, anyhow};
use serde_json::{Map, Value};
use zt_sink::ClickHouseConfig;

use crate::model::*;

/// Rows shown at most for the open-ended sections (campaigns, carriers, channels).
pub(crate) const MAX_ROWS: usize = 30;

/// The step names of the built-in `ecommerce` funnel (`config/defaults.toml`).
const ECOMMERCE_STEPS: [&str; 5] = [
    "product_viewed",
    "product_added",
    "checkout_started",
    "order_paid",
    "shipment_delivered",
];

/// One result row.
pub type Row = Map<String, Value>;

/// Reads every section from the `kpi_*` views of `ch.database`.
///
/// A query that fails leaves its section with the error (see [`Report::errors`]) and the
/// others are still read; `fetch` itself fails only when the configuration is invalid or
/// when every query failed (server unreachable, database missing), with the first error.
pub async fn fetch(ch: &ClickHouseConfig) -> anyhow::Result<Report> {
    ch.validate().map_err(|e| anyhow!("{e}"))?;
    let q = Querier {
        client: ch.client(),
        db: ch.database.clone(),
    };
    let now = time::OffsetDateTime::now_utc();
    let generated_at = now
        .replace_nanosecond(0)
        .unwrap_or(now)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();

    let scorecard = q
        .section("kpi_scorecard", SCORECARD_SQL, None, map_scorecard)
        .await;
    if scorecard.error.is_some() {
        // Do not wait for a dozen more failures when the server or the database is not
        // there at all.
        if let Err(ping) = q.rows("SELECT 1 AS ok FORMAT JSONEachRow").await {
            return Err(ping).with_context(|| {
                format!(
                    "cannot query database {} at {}; is ClickHouse up and migrated (zt migrate)?",
                    ch.database, ch.url
                )
            });
        }
    }
    let funnels = q
        .section("kpi_funnel_stream", FUNNEL_SQL, None, map_funnels)
        .await;
    let mut funnel_channels = q
        .section(
            "kpi_funnel_stream",
            FUNNEL_CHANNEL_SQL,
            None,
            map_channel_funnels,
        )
        .await;
    keep_top_channels(&mut funnel_channels);
    let ltv_cac = q
        .section("kpi_ltv_cac", LTV_CAC_SQL, None, map_ltv_cac)
        .await;
    let promotion_roi = q
        .section(
            "kpi_promotion_roi",
            PROMOTION_ROI_SQL,
            Some(MAX_ROWS),
            map_promotion_roi,
        )
        .await;
    let repurchase = q
        .section("kpi_repurchase_rate", REPURCHASE_SQL, None, map_repurchase)
        .await;
    let csat = q.section("kpi_csat", CSAT_SQL, None, map_csat).await;
    let first_response = q
        .section(
            "kpi_first_response",
            FIRST_RESPONSE_SQL,
            None,
            map_first_response,
        )
        .await;
    let complaints = q
        .section("kpi_complaint_rate", COMPLAINT_SQL, None, map_complaints)
        .await;
    let delivery = q
        .section("kpi_delivery", DELIVERY_SQL, Some(MAX_ROWS), map_delivery)
        .await;
    let mut experiments = q
        .section(
            "kpi_ab_test_stream",
            &ab_sql("kpi_ab_test_stream"),
            None,
            map_experiments,
        )
        .await;
    if experiments.error.is_some() || experiments.rows.is_empty() {
        // The funnels processor has not run (or the database predates its tables): the
        // batch view computes the same statistics from the raw events.
        let batch = q
            .section("kpi_ab_test", &ab_sql("kpi_ab_test"), None, map_experiments)
            .await;
        if batch.error.is_none() && !batch.rows.is_empty() {
            experiments = batch;
        }
    }
    let private_domain = q
        .section(
            "kpi_private_domain_share",
            PRIVATE_DOMAIN_SQL,
            None,
            map_private_domain,
        )
        .await;
    let rfm_segments = q
        .section("kpi_rfm_segments", RFM_SQL, None, map_rfm_segments)
        .await;

    let mut report = Report {
        database: ch.database.clone(),
        generated_at,
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
        rfm_segments,
    };
    report.name_funnel_steps("ecommerce", &ECOMMERCE_STEPS);

    let errors = report.errors();
    if errors.len() == QUERIES {
        let (view, e) = errors.into_iter().next().unwrap_or_default();
        return Err(anyhow!("{e}")).with_context(|| {
            format!(
                "no KPI view of database {} could be read (first failure: {view}); is ClickHouse at {} up and migrated (zt migrate)?",
                ch.database, ch.url
            )
        });
    }
    Ok(report)
}

/// Sections that run a query of their own (the A/B fallback aside).
const QUERIES: usize = 13;

struct Querier {
    client: clickhouse::Client,
    db: String,
}

impl Querier {
    /// Runs `sql` (with `{db}` replaced and `LIMIT limit + 1` appended when limited) and
    /// maps the rows; a failure becomes the section's error.
    async fn section<T>(
        &self,
        view: &str,
        sql: &str,
        limit: Option<usize>,
        map: fn(&[Row]) -> Vec<T>,
    ) -> Section<T> {
        let mut sql = sql.replace("{db}", &self.db);
        if let Some(n) = limit {
            sql.push_str(&format!(" LIMIT {}", n + 1));
        }
        sql.push_str(" FORMAT JSONEachRow");
        match self.rows(&sql).await {
            Ok(mut rows) => {
                let truncated = limit.is_some_and(|n| rows.len() > n);
                if let Some(n) = limit {
                    rows.truncate(n);
                }
                let mut s = Section::new(view, map(&rows));
                s.truncated = truncated;
                s
            }
            Err(e) => Section::failed(view, format!("{e:#}")),
        }
    }

    async fn rows(&self, sql: &str) -> anyhow::Result<Vec<Row>> {
        query_rows(&self.client, sql).await
    }
}

/// Runs `sql` and returns its rows as JSON objects (the body is read as JSONEachRow;
/// 64-bit integers arrive quoted). Shared with the demo's checks (`zt_demo::verify`).
pub async fn query_rows(client: &clickhouse::Client, sql: &str) -> anyhow::Result<Vec<Row>> {
    let bytes = client
        .query(sql)
        .fetch_bytes("JSONEachRow")
        .context("sending the query")?
        .collect()
        .await
        .context("reading the result")?;
    parse_json_each_row(&bytes)
}

/// Parses a JSONEachRow body: one JSON object per non-empty line.
pub(crate) fn parse_json_each_row(bytes: &[u8]) -> anyhow::Result<Vec<Row>> {
    let text = std::str::from_utf8(bytes).context("the result is not UTF-8")?;
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let row: Row = serde_json::from_str(line)
            .with_context(|| format!("result line {} is not a JSON object", i + 1))?;
        rows.push(row);
    }
    Ok(rows)
}

// --- lenient column readers -----------------------------------------------------------

fn text(r: &Row, k: &str) -> String {
    match r.get(k) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::Bool(b)) => b.to_string(),
        _ => String::new(),
    }
}

fn float(r: &Row, k: &str) -> Option<f64> {
    let x = match r.get(k)? {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        Value::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
        _ => None,
    }?;
    x.is_finite().then_some(x)
}

fn uint_opt(r: &Row, k: &str) -> Option<u64> {
    match r.get(k)? {
        Value::Number(n) => n.as_u64().or_else(|| {
            n.as_f64()
                .filter(|x| x.is_finite() && *x >= 0.0 && *x < 1.8e19)
                .map(|x| x as u64)
        }),
        Value::String(s) => s.trim().parse::<u64>().ok(),
        Value::Bool(b) => Some(u64::from(*b)),
        _ => None,
    }
}

fn uint(r: &Row, k: &str) -> u64 {
    uint_opt(r, k).unwrap_or(0)
}

fn int(r: &Row, k: &str) -> i64 {
    match r.get(k) {
        Some(Value::Number(n)) => n.as_i64().unwrap_or_else(|| {
            n.as_f64()
                .filter(|x| x.is_finite() && x.abs() < 9.2e18)
                .map_or(0, |x| x as i64)
        }),
        Some(Value::String(s)) => s.trim().parse::<i64>().unwrap_or(0),
        _ => 0,
    }
}

fn flag(r: &Row, k: &str) -> Option<bool> {
    uint_opt(r, k).map(|v| v != 0)
}

fn step_of(r: &Row) -> Option<u8> {
    uint_opt(r, "step").and_then(|s| u8::try_from(s).ok())
}

// --- the sections ---------------------------------------------------------------------

const SCORECARD_SQL: &str = "SELECT kpi, dimension, value, target, direction, meets_target \
     FROM {db}.kpi_scorecard ORDER BY kpi, dimension";

/// The view's order of the KPIs (then unknown ones by name).
const KPI_ORDER: [&str; 7] = [
    "ltv_cac_ratio",
    "repurchase_rate",
    "csat_avg",
    "promotion_spend_share",
    "private_domain_share",
    "first_response_sla_share",
    "complaint_rate",
];

fn map_scorecard(rows: &[Row]) -> Vec<ScorecardRow> {
    let mut out: Vec<ScorecardRow> = rows
        .iter()
        .map(|r| ScorecardRow {
            kpi: text(r, "kpi"),
            dimension: text(r, "dimension"),
            value: float(r, "value"),
            target: float(r, "target"),
            direction: text(r, "direction"),
            meets_target: flag(r, "meets_target"),
        })
        .collect();
    out.sort_by_key(|s| {
        KPI_ORDER
            .iter()
            .position(|k| *k == s.kpi)
            .unwrap_or(usize::MAX)
    });
    out
}

// `kpi_funnel_stream` aliases are global in ClickHouse: the sums get names of their own.
const FUNNEL_SQL: &str = "SELECT funnel_id, step, sum(persons) AS n_persons \
     FROM {db}.kpi_funnel_stream GROUP BY funnel_id, step ORDER BY funnel_id, step";

const FUNNEL_CHANNEL_SQL: &str = "SELECT funnel_id, channel, step, sum(persons) AS n_persons \
     FROM {db}.kpi_funnel_stream GROUP BY funnel_id, channel, step \
     ORDER BY funnel_id, channel, step";

/// Groups `(funnel_id, key, step, n_persons)` rows, in order of first appearance, into
/// persons per step (index = step - 1; steps never seen count 0).
fn group_steps(rows: &[Row], key: Option<&str>) -> Vec<(String, String, Vec<u64>)> {
    let mut out: Vec<(String, String, Vec<u64>)> = Vec::new();
    let mut index: HashMap<(String, String), usize> = HashMap::new();
    for r in rows {
        let Some(step) = step_of(r).filter(|s| *s >= 1) else {
            continue;
        };
        let fid = text(r, "funnel_id");
        let k = key.map(|k| text(r, k)).unwrap_or_default();
        let pos = *index.entry((fid.clone(), k.clone())).or_insert_with(|| {
            out.push((fid, k, Vec::new()));
            out.len() - 1
        });
        let Some((_, _, persons)) = out.get_mut(pos) else {
            continue;
        };
        let i = usize::from(step) - 1;
        if persons.len() <= i {
            persons.resize(i + 1, 0);
        }
        if let Some(p) = persons.get_mut(i) {
            *p = p.saturating_add(uint(r, "n_persons"));
        }
    }
    out
}

fn ratio(num: u64, den: u64) -> Option<f64> {
    (den > 0).then(|| num as f64 / den as f64)
}

fn map_funnels(rows: &[Row]) -> Vec<Funnel> {
    group_steps(rows, None)
        .into_iter()
        .map(|(funnel_id, _, persons)| {
            let first = persons.first().copied().unwrap_or(0);
            let steps = persons
                .iter()
                .enumerate()
                .map(|(i, &n)| FunnelStep {
                    step: u8::try_from(i + 1).unwrap_or(u8::MAX),
                    name: String::new(),
                    persons: n,
                    from_previous: i
                        .checked_sub(1)
                        .and_then(|j| persons.get(j))
                        .and_then(|&prev| ratio(n, prev)),
                    from_first: ratio(n, first),
                })
                .collect();
            Funnel { funnel_id, steps }
        })
        .collect()
}

fn map_channel_funnels(rows: &[Row]) -> Vec<ChannelFunnel> {
    let mut out: Vec<ChannelFunnel> = group_steps(rows, Some("channel"))
        .into_iter()
        .map(|(funnel_id, channel, persons)| ChannelFunnel {
            funnel_id,
            channel,
            persons,
            step_names: Vec::new(),
        })
        .collect();
    // Every channel of a funnel gets as many steps as the funnel's deepest channel.
    let mut depth: HashMap<String, usize> = HashMap::new();
    for c in &out {
        let d = depth.entry(c.funnel_id.clone()).or_insert(0);
        *d = (*d).max(c.persons.len());
    }
    for c in &mut out {
        c.persons
            .resize(depth.get(&c.funnel_id).copied().unwrap_or(0), 0);
    }
    out.sort_by(|a, b| {
        a.funnel_id.cmp(&b.funnel_id).then_with(|| {
            let (na, nb) = (
                a.persons.first().copied().unwrap_or(0),
                b.persons.first().copied().unwrap_or(0),
            );
            nb.cmp(&na).then_with(|| a.channel.cmp(&b.channel))
        })
    });
    out
}

/// Keeps the [`MAX_ROWS`] channels with the most entries of each funnel.
fn keep_top_channels(s: &mut Section<ChannelFunnel>) {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let before = s.rows.len();
    s.rows.retain(|c| {
        let n = seen.entry(c.funnel_id.clone()).or_insert(0);
        *n += 1;
        *n <= MAX_ROWS
    });
    s.truncated |= s.rows.len() < before;
}

const LTV_CAC_SQL: &str = "SELECT channel, currency, customers, net_ltv_minor, avg_ltv_minor, \
     spend_minor, cac_minor, ltv_cac_ratio, target, meets_target \
     FROM {db}.kpi_ltv_cac ORDER BY currency, customers DESC, channel";

fn map_ltv_cac(rows: &[Row]) -> Vec<LtvCacRow> {
    rows.iter()
        .map(|r| LtvCacRow {
            channel: text(r, "channel"),
            currency: text(r, "currency"),
            customers: uint(r, "customers"),
            net_ltv_minor: int(r, "net_ltv_minor"),
            avg_ltv_minor: float(r, "avg_ltv_minor"),
            spend_minor: int(r, "spend_minor"),
            cac_minor: float(r, "cac_minor"),
            ltv_cac_ratio: float(r, "ltv_cac_ratio"),
            target: float(r, "target"),
            meets_target: flag(r, "meets_target"),
        })
        .collect()
}

const PROMOTION_ROI_SQL: &str = "SELECT campaign, currency, channel, orders, \
     gross_revenue_minor, refunded_minor, net_revenue_minor, discount_minor, ad_spend_minor, \
     promotion_cost_minor, roi, revenue_per_cost \
     FROM {db}.kpi_promotion_roi ORDER BY currency, net_revenue_minor DESC, campaign";

fn map_promotion_roi(rows: &[Row]) -> Vec<PromotionRoiRow> {
    rows.iter()
        .map(|r| PromotionRoiRow {
            campaign: text(r, "campaign"),
            currency: text(r, "currency"),
            channel: text(r, "channel"),
            orders: uint(r, "orders"),
            gross_revenue_minor: int(r, "gross_revenue_minor"),
            refunded_minor: int(r, "refunded_minor"),
            net_revenue_minor: int(r, "net_revenue_minor"),
            discount_minor: int(r, "discount_minor"),
            ad_spend_minor: int(r, "ad_spend_minor"),
            promotion_cost_minor: int(r, "promotion_cost_minor"),
            roi: float(r, "roi"),
            revenue_per_cost: float(r, "revenue_per_cost"),
        })
        .collect()
}

const REPURCHASE_SQL: &str = "SELECT buyers, repeat_buyers, repurchase_rate, target, \
     meets_target FROM {db}.kpi_repurchase_rate";

fn map_repurchase(rows: &[Row]) -> Vec<RepurchaseRow> {
    rows.iter()
        .map(|r| RepurchaseRow {
            buyers: uint(r, "buyers"),
            repeat_buyers: uint(r, "repeat_buyers"),
            repurchase_rate: float(r, "repurchase_rate"),
            target: float(r, "target"),
            meets_target: flag(r, "meets_target"),
        })
        .collect()
}

const CSAT_SQL: &str = "SELECT rated_tickets, csat_avg, satisfied, satisfied_share, target, \
     meets_target FROM {db}.kpi_csat";

fn map_csat(rows: &[Row]) -> Vec<CsatRow> {
    rows.iter()
        .map(|r| CsatRow {
            rated_tickets: uint(r, "rated_tickets"),
            csat_avg: float(r, "csat_avg"),
            satisfied: uint(r, "satisfied"),
            satisfied_share: float(r, "satisfied_share"),
            target: float(r, "target"),
            meets_target: flag(r, "meets_target"),
        })
        .collect()
}

const FIRST_RESPONSE_SQL: &str = "SELECT tickets, responded, within_sla, overdue_unanswered, \
     sla_share, avg_response_minutes, median_response_minutes, sla_minutes \
     FROM {db}.kpi_first_response";

fn map_first_response(rows: &[Row]) -> Vec<FirstResponseRow> {
    rows.iter()
        .map(|r| FirstResponseRow {
            tickets: uint(r, "tickets"),
            responded: uint(r, "responded"),
            within_sla: uint(r, "within_sla"),
            overdue_unanswered: uint(r, "overdue_unanswered"),
            sla_share: float(r, "sla_share"),
            avg_response_minutes: float(r, "avg_response_minutes"),
            median_response_minutes: float(r, "median_response_minutes"),
            sla_minutes: float(r, "sla_minutes"),
        })
        .collect()
}

const COMPLAINT_SQL: &str =
    "SELECT complaints, paid_orders, complaint_rate FROM {db}.kpi_complaint_rate";

fn map_complaints(rows: &[Row]) -> Vec<ComplaintRow> {
    rows.iter()
        .map(|r| ComplaintRow {
            complaints: uint(r, "complaints"),
            paid_orders: uint(r, "paid_orders"),
            complaint_rate: float(r, "complaint_rate"),
        })
        .collect()
}

const DELIVERY_SQL: &str = "SELECT carrier, shipments, delivered, avg_delivery_hours, \
     with_exception, exception_rate, delivered_with_promise, on_time, on_time_share \
     FROM {db}.kpi_delivery ORDER BY shipments DESC, carrier";

fn map_delivery(rows: &[Row]) -> Vec<DeliveryRow> {
    rows.iter()
        .map(|r| DeliveryRow {
            carrier: text(r, "carrier"),
            shipments: uint(r, "shipments"),
            delivered: uint(r, "delivered"),
            avg_delivery_hours: float(r, "avg_delivery_hours"),
            with_exception: uint(r, "with_exception"),
            exception_rate: float(r, "exception_rate"),
            delivered_with_promise: uint(r, "delivered_with_promise"),
            on_time: uint(r, "on_time"),
            on_time_share: float(r, "on_time_share"),
        })
        .collect()
}

fn ab_sql(view: &str) -> String {
    format!(
        "SELECT experiment_id, variant, exposed, converted, conversion_rate, control_variant, \
         is_control, uplift_abs, uplift_rel, ci_low, ci_high, p_value, confidence, significant, \
         total_exposed, srm_p_value, srm_mismatch \
         FROM {{db}}.{view} ORDER BY experiment_id, is_control DESC, variant"
    )
}

fn map_experiments(rows: &[Row]) -> Vec<Experiment> {
    let mut grouped: Vec<(String, Vec<VariantRow>)> = Vec::new();
    for r in rows {
        let id = text(r, "experiment_id");
        let v = VariantRow {
            variant: text(r, "variant"),
            exposed: uint(r, "exposed"),
            converted: uint(r, "converted"),
            conversion_rate: float(r, "conversion_rate"),
            control_variant: text(r, "control_variant"),
            is_control: flag(r, "is_control").unwrap_or(false),
            uplift_abs: float(r, "uplift_abs"),
            uplift_rel: float(r, "uplift_rel"),
            ci_low: float(r, "ci_low"),
            ci_high: float(r, "ci_high"),
            p_value: float(r, "p_value"),
            confidence: float(r, "confidence"),
            significant: flag(r, "significant"),
            total_exposed: uint(r, "total_exposed"),
            srm_p_value: float(r, "srm_p_value"),
            srm_mismatch: flag(r, "srm_mismatch"),
        };
        match grouped.iter_mut().find(|(e, _)| *e == id) {
            Some((_, vs)) => vs.push(v),
            None => grouped.push((id, vec![v])),
        }
    }
    grouped
        .into_iter()
        .map(|(id, variants)| Experiment::new(id, variants))
        .collect()
}

const PRIVATE_DOMAIN_SQL: &str = "SELECT events, private_events, private_domain_share, \
     visitors, private_visitors, private_visitor_share, target, meets_target \
     FROM {db}.kpi_private_domain_share";

fn map_private_domain(rows: &[Row]) -> Vec<PrivateDomainRow> {
    rows.iter()
        .map(|r| PrivateDomainRow {
            events: uint(r, "events"),
            private_events: uint(r, "private_events"),
            private_domain_share: float(r, "private_domain_share"),
            visitors: uint(r, "visitors"),
            private_visitors: uint(r, "private_visitors"),
            private_visitor_share: float(r, "private_visitor_share"),
            target: float(r, "target"),
            meets_target: flag(r, "meets_target"),
        })
        .collect()
}

const RFM_SQL: &str = "SELECT segment, segment_zh, currency, customers, monetary_minor, \
     avg_recency_days, avg_frequency, avg_monetary_minor \
     FROM {db}.kpi_rfm_segments ORDER BY currency, segment";

/// The segments in the RFM model's order (most valuable first).
const SEGMENT_ORDER: [&str; 8] = [
    "important_value",
    "important_development",
    "important_retention",
    "important_winback",
    "general_value",
    "general_development",
    "general_retention",
    "general_winback",
];

fn map_rfm_segments(rows: &[Row]) -> Vec<RfmSegmentRow> {
    let mut out: Vec<RfmSegmentRow> = rows
        .iter()
        .map(|r| RfmSegmentRow {
            segment: text(r, "segment"),
            segment_zh: text(r, "segment_zh"),
            currency: text(r, "currency"),
            customers: uint(r, "customers"),
            monetary_minor: int(r, "monetary_minor"),
            avg_recency_days: float(r, "avg_recency_days"),
            avg_frequency: float(r, "avg_frequency"),
            avg_monetary_minor: float(r, "avg_monetary_minor"),
        })
        .collect();
    out.sort_by(|a, b| {
        let rank = |s: &str| {
            SEGMENT_ORDER
                .iter()
                .position(|k| *k == s)
                .unwrap_or(usize::MAX)
        };
        a.currency
            .cmp(&b.currency)
            .then_with(|| rank(&a.segment).cmp(&rank(&b.segment)))
            .then_with(|| a.segment.cmp(&b.segment))
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Vec<Row> {
        parse_json_each_row(s.as_bytes()).expect("valid JSONEachRow")
    }

    #[test]
    fn columns_are_read_leniently() {
        let rows = parse(
            r#"{"a":"18446744073709551615","b":"-12","c":null,"d":1.5,"e":"nan","f":"x"}

{"a":3,"b":-4.0,"d":"inf"}"#,
        );
        assert_eq!(rows.len(), 2);
        assert_eq!(uint(&rows[0], "a"), u64::MAX);
        assert_eq!(int(&rows[0], "b"), -12);
        assert_eq!(float(&rows[0], "c"), None);
        assert_eq!(float(&rows[0], "d"), Some(1.5));
        assert_eq!(float(&rows[0], "e"), None);
        assert_eq!(uint(&rows[0], "f"), 0);
        assert_eq!(uint(&rows[1], "missing"), 0);
        assert_eq!(int(&rows[1], "b"), -4);
        assert_eq!(float(&rows[1], "d"), None);
        assert_eq!(text(&rows[1], "a"), "3");
        assert!(parse_json_each_row(b"{\"a\":nan}").is_err());
        assert!(parse_json_each_row(b"[1]").is_err());
    }

    #[test]
    fn funnel_rows_become_steps_with_conversions() {
        let rows = parse(
            r#"{"funnel_id":"ecommerce","step":1,"n_persons":"1000"}
{"funnel_id":"ecommerce","step":2,"n_persons":"400"}
{"funnel_id":"ecommerce","step":3,"n_persons":"0"}
{"funnel_id":"ecommerce","step":4,"n_persons":"0"}
{"funnel_id":"other","step":2,"n_persons":"5"}
{"funnel_id":"bad","step":0,"n_persons":"5"}
{"funnel_id":"bad","step":300,"n_persons":"5"}"#,
        );
        let f = map_funnels(&rows);
        assert_eq!(f.len(), 2);
        let e = &f[0];
        assert_eq!(e.steps.len(), 4);
        assert_eq!(e.steps[1].from_previous, Some(0.4));
        assert_eq!(e.steps[1].from_first, Some(0.4));
        assert_eq!(e.steps[0].from_previous, None);
        assert_eq!(e.steps[3].from_previous, None, "0 / 0 is undefined");
        assert_eq!(e.steps[3].from_first, Some(0.0));
        // A funnel whose step 1 is missing: step 1 counts 0, ratios undefined.
        assert_eq!(f[1].steps[0].persons, 0);
        assert_eq!(f[1].steps[1].from_first, None);
    }

    #[test]
    fn channel_funnels_are_padded_and_sorted() {
        let rows = parse(
            r#"{"funnel_id":"ecommerce","channel":"a","step":1,"n_persons":"10"}
{"funnel_id":"ecommerce","channel":"b","step":1,"n_persons":"20"}
{"funnel_id":"ecommerce","channel":"b","step":2,"n_persons":"5"}
{"funnel_id":"ecommerce","channel":"b","step":3,"n_persons":"1"}"#,
        );
        let c = map_channel_funnels(&rows);
        assert_eq!(c[0].channel, "b");
        assert_eq!(c[1].persons, vec![10, 0, 0]);
        let many: Vec<ChannelFunnel> = (0..MAX_ROWS + 5)
            .map(|i| ChannelFunnel {
                funnel_id: "f".into(),
                channel: format!("c{i}"),
                ..ChannelFunnel::default()
            })
            .chain(c)
            .collect();
        let mut s = Section::new("kpi_funnel_stream", many);
        keep_top_channels(&mut s);
        assert!(s.truncated);
        assert_eq!(
            s.rows.len(),
            MAX_ROWS + 2,
            "the other funnel keeps its channels"
        );
    }

    #[test]
    fn experiments_group_and_get_a_verdict() {
        let rows = parse(
            r#"{"experiment_id":"exp","variant":"control","exposed":"1000","converted":"100","conversion_rate":0.1,"is_control":1,"significant":null,"srm_mismatch":0}
{"experiment_id":"exp","variant":"B","exposed":"1000","converted":"130","conversion_rate":0.13,"is_control":0,"uplift_abs":0.03,"p_value":0.03,"confidence":0.97,"significant":1,"srm_mismatch":0}"#,
        );
        let e = map_experiments(&rows);
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].variants.len(), 2);
        assert_eq!(e[0].verdict, "treatment B wins: +3.0 pp, 97.0 % confidence");
    }

    /// Whatever the server sends (wrong types, huge or negative numbers, missing columns),
    /// mapping and rendering do not panic.
    #[test]
    fn hostile_rows_never_panic() {
        let columns = [
            "kpi",
            "dimension",
            "value",
            "target",
            "direction",
            "meets_target",
            "funnel_id",
            "step",
            "n_persons",
            "channel",
            "currency",
            "customers",
            "net_ltv_minor",
            "avg_ltv_minor",
            "spend_minor",
            "cac_minor",
            "ltv_cac_ratio",
            "campaign",
            "orders",
            "roi",
            "buyers",
            "repurchase_rate",
            "rated_tickets",
            "csat_avg",
            "tickets",
            "sla_minutes",
            "complaints",
            "carrier",
            "shipments",
            "exception_rate",
            "experiment_id",
            "variant",
            "exposed",
            "converted",
            "conversion_rate",
            "is_control",
            "uplift_abs",
            "p_value",
            "confidence",
            "significant",
            "srm_mismatch",
            "srm_p_value",
            "events",
            "segment",
            "segment_zh",
            "monetary_minor",
        ];
        let values = [
            "null",
            "\"\"",
            "\"-1\"",
            "-1",
            "1e308",
            "-1e308",
            "18446744073709551616",
            "\"99999999999999999999999\"",
            "[1,2]",
            "{\"a\":1}",
            "true",
            "\"<script>\\u001b[2J\"",
            "255",
            "256",
            "0",
        ];
        let mut text = String::new();
        for (i, v) in values.iter().enumerate() {
            let row: Vec<String> = columns
                .iter()
                .enumerate()
                .map(|(j, c)| format!("\"{c}\":{}", values[(i + j) % values.len()]))
                .collect();
            text.push_str(&format!("{{{}}}\n", row.join(",")));
            text.push_str(&format!(
                "{{\"step\":{v},\"n_persons\":{v},\"funnel_id\":\"f\"}}\n"
            ));
        }
        let rows = parse(&text);
        let r = Report {
            scorecard: Section::new("v", map_scorecard(&rows)),
            funnels: Section::new("v", map_funnels(&rows)),
            funnel_channels: Section::new("v", map_channel_funnels(&rows)),
            ltv_cac: Section::new("v", map_ltv_cac(&rows)),
            promotion_roi: Section::new("v", map_promotion_roi(&rows)),
            repurchase: Section::new("v", map_repurchase(&rows)),
            csat: Section::new("v", map_csat(&rows)),
            first_response: Section::new("v", map_first_response(&rows)),
            complaints: Section::new("v", map_complaints(&rows)),
            delivery: Section::new("v", map_delivery(&rows)),
            experiments: Section::new("v", map_experiments(&rows)),
            private_domain: Section::new("v", map_private_domain(&rows)),
            rfm_segments: Section::new("v", map_rfm_segments(&rows)),
            ..Report::default()
        };
        let t = crate::render_text(&r);
        let h = crate::render_html(&r);
        assert!(!t.contains('\u{1b}') && !h.contains('\u{1b}'));
        assert!(!h.contains("<script>"));
    }

    #[test]
    fn scorecard_keeps_the_views_kpi_order() {
        let rows = parse(
            r#"{"kpi":"csat_avg","dimension":"","value":4.6,"target":4.5,"direction":">=","meets_target":1}
{"kpi":"zzz","dimension":"","value":null,"target":null,"direction":">=","meets_target":null}
{"kpi":"ltv_cac_ratio","dimension":"douyin","value":"3.5","target":3,"direction":">=","meets_target":"1"}"#,
        );
        let s = map_scorecard(&rows);
        let kpis: Vec<&str> = s.iter().map(|r| r.kpi.as_str()).collect();
        assert_eq!(kpis, ["ltv_cac_ratio", "csat_avg", "zzz"]);
        assert_eq!(s[0].meets_target, Some(true));
        assert_eq!(s[2].value, None);
    }
}
