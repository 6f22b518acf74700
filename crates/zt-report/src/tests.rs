//! Rendering tests on hand-built reports.

use crate::*;

fn variant(name: &str, control: bool, exposed: u64, converted: u64) -> VariantRow {
    VariantRow {
        variant: name.into(),
        exposed,
        converted,
        conversion_rate: Some(converted as f64 / exposed as f64),
        control_variant: "control".into(),
        is_control: control,
        total_exposed: 0,
        srm_mismatch: Some(false),
        srm_p_value: Some(0.62),
        ..VariantRow::default()
    }
}

fn treatment(
    name: &str,
    exposed: u64,
    converted: u64,
    uplift: f64,
    p: f64,
    significant: bool,
) -> VariantRow {
    VariantRow {
        uplift_abs: Some(uplift),
        uplift_rel: Some(uplift / 0.1),
        ci_low: Some(uplift - 0.012),
        ci_high: Some(uplift + 0.012),
        p_value: Some(p),
        confidence: Some(1.0 - p),
        significant: Some(significant),
        ..variant(name, false, exposed, converted)
    }
}

/// A realistic report (the numbers of a small demo run), used for docs/report.md too.
pub(crate) fn sample() -> Report {
    let step = |step: u8, name: &str, persons: u64, prev: Option<u64>, first: u64| FunnelStep {
        step,
        name: name.into(),
        persons,
        from_previous: prev.map(|p| persons as f64 / p as f64),
        from_first: Some(persons as f64 / first as f64),
    };
    let mut exp_checkout = vec![
        variant("control", true, 2_013, 201),
        treatment("B", 1_987, 246, 0.0240, 0.027, true),
    ];
    for v in &mut exp_checkout {
        v.total_exposed = 4_000;
    }
    let mut exp_banner = vec![
        variant("control", true, 1_400, 98),
        treatment("hero_video", 600, 45, 0.005, 0.68, false),
    ];
    for v in &mut exp_banner {
        v.total_exposed = 2_000;
        v.srm_mismatch = Some(true);
        v.srm_p_value = Some(1.2e-73);
    }
    let mut exp_price = vec![
        variant("a", true, 1_000, 100),
        treatment("b", 1_010, 104, 0.003, 0.83, false),
    ];
    for v in &mut exp_price {
        v.total_exposed = 2_010;
    }
    let ltv = |channel: &str, customers: u64, net: i64, spend: i64| {
        let ratio = (spend > 0 && customers > 0).then(|| net as f64 / spend as f64);
        LtvCacRow {
            channel: channel.into(),
            currency: "CNY".into(),
            customers,
            net_ltv_minor: net,
            avg_ltv_minor: (customers > 0).then(|| net as f64 / customers as f64),
            spend_minor: spend,
            cac_minor: (spend > 0 && customers > 0).then(|| spend as f64 / customers as f64),
            ltv_cac_ratio: ratio,
            target: Some(3.0),
            meets_target: ratio.map(|r| r >= 3.0),
        }
    };
    let sc =
        |kpi: &str, dim: &str, value: Option<f64>, target: Option<f64>, dir: &str| ScorecardRow {
            kpi: kpi.into(),
            dimension: dim.into(),
            value,
            target,
            direction: dir.into(),
            meets_target: match (value, target) {
                (Some(v), Some(t)) => Some(if dir == "<=" { v <= t } else { v >= t }),
                _ => None,
            },
        };
    let rfm = |segment: &str, zh: &str, customers: u64, monetary: i64, rec: f64, freq: f64| {
        RfmSegmentRow {
            segment: segment.into(),
            segment_zh: zh.into(),
            currency: "CNY".into(),
            customers,
            monetary_minor: monetary,
            avg_recency_days: Some(rec),
            avg_frequency: Some(freq),
            avg_monetary_minor: Some(monetary as f64 / customers as f64),
        }
    };
    let steps: Vec<String> = [
        "product_viewed",
        "product_added",
        "checkout_started",
        "order_paid",
        "shipment_delivered",
    ]
    .map(String::from)
    .to_vec();
    Report {
        database: "zhongtai".into(),
        generated_at: "2026-11-26T18:00:00Z".into(),
        scorecard: Section::new(
            "kpi_scorecard",
            vec![
                sc("ltv_cac_ratio", "douyin", Some(3.42), Some(3.0), ">="),
                sc("ltv_cac_ratio", "baidu_sem", Some(1.87), Some(3.0), ">="),
                sc("ltv_cac_ratio", "organic", None, Some(3.0), ">="),
                sc(
                    "repurchase_rate",
                    "",
                    Some(793.0 / 1_922.0),
                    Some(0.45),
                    ">=",
                ),
                sc("csat_avg", "", Some(4.58), Some(4.5), ">="),
                sc(
                    "promotion_spend_share",
                    "CNY",
                    Some(0.132),
                    Some(0.15),
                    "<=",
                ),
                sc("private_domain_share", "", Some(0.774), Some(0.8), ">="),
                sc(
                    "first_response_sla_share",
                    "",
                    Some(462.0 / 507.0),
                    None,
                    ">=",
                ),
                sc("complaint_rate", "", Some(0.0061), None, "<="),
            ],
        ),
        funnels: Section::new(
            "kpi_funnel_stream",
            vec![Funnel {
                funnel_id: "ecommerce".into(),
                steps: vec![
                    step(1, "product_viewed", 12_480, None, 12_480),
                    step(2, "product_added", 4_993, Some(12_480), 12_480),
                    step(3, "checkout_started", 2_746, Some(4_993), 12_480),
                    step(4, "order_paid", 1_922, Some(2_746), 12_480),
                    step(5, "shipment_delivered", 1_801, Some(1_922), 12_480),
                ],
            }],
        ),
        funnel_channels: Section::new(
            "kpi_funnel_stream",
            vec![
                ChannelFunnel {
                    funnel_id: "ecommerce".into(),
                    channel: "douyin".into(),
                    persons: vec![6_210, 2_608, 1_480, 1_061, 998],
                    step_names: steps.clone(),
                },
                ChannelFunnel {
                    funnel_id: "ecommerce".into(),
                    channel: "wechat_mini".into(),
                    persons: vec![4_020, 1_729, 961, 673, 630],
                    step_names: steps.clone(),
                },
                ChannelFunnel {
                    funnel_id: "ecommerce".into(),
                    channel: "baidu_sem".into(),
                    persons: vec![2_250, 656, 305, 188, 173],
                    step_names: steps.clone(),
                },
            ],
        ),
        ltv_cac: Section::new(
            "kpi_ltv_cac",
            vec![
                ltv("douyin", 812, 29_470_310, 8_617_000),
                ltv("wechat_mini", 604, 23_921_880, 4_950_000),
                ltv("baidu_sem", 331, 9_105_400, 4_870_000),
                ltv("organic", 175, 6_012_750, 0),
            ],
        ),
        promotion_roi: Section::new(
            "kpi_promotion_roi",
            vec![
                PromotionRoiRow {
                    campaign: "double11_2026".into(),
                    currency: "CNY".into(),
                    channel: "douyin".into(),
                    orders: 1_204,
                    gross_revenue_minor: 41_920_000,
                    refunded_minor: 1_830_500,
                    net_revenue_minor: 40_089_500,
                    discount_minor: 3_120_000,
                    ad_spend_minor: 5_400_000,
                    promotion_cost_minor: 8_520_000,
                    roi: Some(3.705),
                    revenue_per_cost: Some(4.705),
                },
                PromotionRoiRow {
                    campaign: "spring_launch".into(),
                    currency: "CNY".into(),
                    channel: "baidu_sem".into(),
                    orders: 0,
                    gross_revenue_minor: 0,
                    refunded_minor: 0,
                    net_revenue_minor: 0,
                    discount_minor: 0,
                    ad_spend_minor: 0,
                    promotion_cost_minor: 0,
                    roi: None,
                    revenue_per_cost: None,
                },
            ],
        ),
        repurchase: Section::new(
            "kpi_repurchase_rate",
            vec![RepurchaseRow {
                buyers: 1_922,
                repeat_buyers: 793,
                repurchase_rate: Some(793.0 / 1_922.0),
                target: Some(0.45),
                meets_target: Some(false),
            }],
        ),
        csat: Section::new(
            "kpi_csat",
            vec![CsatRow {
                rated_tickets: 388,
                csat_avg: Some(4.58),
                satisfied: 351,
                satisfied_share: Some(351.0 / 388.0),
                target: Some(4.5),
                meets_target: Some(true),
            }],
        ),
        first_response: Section::new(
            "kpi_first_response",
            vec![FirstResponseRow {
                tickets: 512,
                responded: 497,
                within_sla: 462,
                overdue_unanswered: 10,
                sla_share: Some(462.0 / 507.0),
                avg_response_minutes: Some(41.7),
                median_response_minutes: Some(18.0),
                sla_minutes: Some(120.0),
            }],
        ),
        complaints: Section::new(
            "kpi_complaint_rate",
            vec![ComplaintRow {
                complaints: 14,
                paid_orders: 2_291,
                complaint_rate: Some(14.0 / 2_291.0),
            }],
        ),
        delivery: Section::new(
            "kpi_delivery",
            vec![
                DeliveryRow {
                    carrier: "SF".into(),
                    shipments: 1_320,
                    delivered: 1_281,
                    avg_delivery_hours: Some(30.4),
                    with_exception: 19,
                    exception_rate: Some(19.0 / 1_320.0),
                    delivered_with_promise: 1_281,
                    on_time: 1_230,
                    on_time_share: Some(1_230.0 / 1_281.0),
                },
                DeliveryRow {
                    carrier: "ZTO".into(),
                    shipments: 971,
                    delivered: 920,
                    avg_delivery_hours: Some(52.9),
                    with_exception: 33,
                    exception_rate: Some(33.0 / 971.0),
                    delivered_with_promise: 0,
                    on_time: 0,
                    on_time_share: None,
                },
            ],
        ),
        experiments: Section::new(
            "kpi_ab_test_stream",
            vec![
                Experiment::new("exp_checkout", exp_checkout),
                Experiment::new("exp_banner", exp_banner),
                Experiment::new("exp_price", exp_price),
            ],
        ),
        private_domain: Section::new(
            "kpi_private_domain_share",
            vec![PrivateDomainRow {
                events: 96_310,
                private_events: 74_544,
                private_domain_share: Some(0.774),
                visitors: 12_480,
                private_visitors: 8_860,
                private_visitor_share: Some(0.71),
                target: Some(0.8),
                meets_target: Some(false),
            }],
        ),
        rfm_segments: Section::new(
            "kpi_rfm_segments",
            vec![
                rfm("important_value", "重要价值客户", 288, 21_640_120, 9.5, 3.4),
                rfm(
                    "important_development",
                    "重要发展客户",
                    241,
                    12_160_220,
                    12.1,
                    1.0,
                ),
                rfm(
                    "important_retention",
                    "重要保持客户",
                    130,
                    8_330_500,
                    48.0,
                    2.9,
                ),
                rfm("general_winback", "一般挽留客户", 560, 7_020_400, 61.3, 1.0),
            ],
        ),
    }
}

fn empty() -> Report {
    fn e<T>(view: &str) -> Section<T> {
        Section::new(view, Vec::new())
    }
    Report {
        database: "zt_empty".into(),
        generated_at: String::new(),
        scorecard: e("kpi_scorecard"),
        funnels: e("kpi_funnel_stream"),
        funnel_channels: e("kpi_funnel_stream"),
        ltv_cac: e("kpi_ltv_cac"),
        promotion_roi: e("kpi_promotion_roi"),
        repurchase: e("kpi_repurchase_rate"),
        csat: e("kpi_csat"),
        first_response: e("kpi_first_response"),
        complaints: e("kpi_complaint_rate"),
        delivery: e("kpi_delivery"),
        experiments: e("kpi_ab_test_stream"),
        private_domain: e("kpi_private_domain_share"),
        rfm_segments: e("kpi_rfm_segments"),
    }
}

#[test]
fn sample_renders_every_section_as_text() {
    let t = render_text(&sample());
    for needle in [
        "1. Headline scorecard  [kpi_scorecard]",
        "2. Funnel (stream)  [kpi_funnel_stream]",
        "3. CAC, LTV and ROI by channel  [kpi_ltv_cac, kpi_promotion_roi]",
        "4. Repurchase  [kpi_repurchase_rate]",
        "5. Service  [kpi_csat, kpi_first_response, kpi_complaint_rate]",
        "6. Delivery  [kpi_delivery]",
        "7. Experiments  [kpi_ab_test_stream]",
        "8. Private domain and RFM segments  [kpi_private_domain_share, kpi_rfm_segments]",
        "verdict: treatment B wins: +2.4 pp, 97.3 % confidence",
        "verdict: SRM detected (sample-ratio p < 0.0001): do not trust",
        "verdict: no significant difference (best confidence 17.0 %)",
        "362.93 CNY",     // douyin avg LTV: 29,470,310 fen / 812
        "86,170.00 CNY",  // douyin spend
        "400,895.00 CNY", // campaign net revenue
        "41.3 %",         // repurchase
        "-",              // organic LTV/CAC is NULL
        "重要价值客户",
    ] {
        assert!(t.contains(needle), "missing {needle:?} in\n{t}");
    }
    assert!(!t.contains('\u{1b}'), "no escape sequences");
    assert!(!t.contains("no data"));
    if let Ok(dir) = std::env::var("ZT_REPORT_SAMPLE_DIR") {
        let dir = std::path::Path::new(&dir);
        std::fs::write(dir.join("report.txt"), &t).expect("write sample text");
        std::fs::write(dir.join("report.html"), render_html(&sample())).expect("write html");
    }
}

#[test]
fn text_columns_align_with_wide_characters() {
    let t = render_text(&sample());
    let lines: Vec<&str> = t.lines().filter(|l| l.contains("客户")).collect();
    assert_eq!(lines.len(), 4);
    let col = |l: &str| {
        let i = l.find("CNY").expect("money column");
        crate::format::width(&l[..i])
    };
    let first = col(lines[0]);
    assert!(lines.iter().all(|l| col(l) == first), "{lines:#?}");
}

#[test]
fn empty_views_render_as_no_data() {
    let r = empty();
    let t = render_text(&r);
    // scorecard, funnel, by channel, LTV/CAC, ROI, repurchase, CSAT, first response,
    // complaints, delivery, experiments, private domain, RFM
    assert_eq!(t.matches("no data").count(), 13, "{t}");
    assert!(r.errors().is_empty());
    let h = render_html(&r);
    assert_eq!(h.matches("<p class=\"nodata\">no data</p>").count(), 13);
    assert!(!h.contains("<svg"), "no chart without data");
    assert!(h.ends_with("</html>\n"));
}

#[test]
fn default_report_renders() {
    let r = Report::default();
    assert!(render_text(&r).contains("no data"));
    assert!(render_html(&r).contains("no data"));
}

#[test]
fn nulls_render_as_dashes_and_never_panic() {
    let mut r = empty();
    r.scorecard.rows.push(ScorecardRow {
        kpi: "repurchase_rate".into(),
        dimension: String::new(),
        value: None,
        target: None,
        direction: String::new(),
        meets_target: None,
    });
    r.ltv_cac.rows.push(LtvCacRow {
        channel: String::new(),
        currency: String::new(),
        ..LtvCacRow::default()
    });
    r.repurchase.rows.push(RepurchaseRow::default());
    r.csat.rows.push(CsatRow::default());
    r.first_response.rows.push(FirstResponseRow::default());
    r.complaints.rows.push(ComplaintRow::default());
    r.delivery.rows.push(DeliveryRow {
        avg_delivery_hours: Some(f64::NAN),
        exception_rate: Some(f64::INFINITY),
        ..DeliveryRow::default()
    });
    r.experiments.rows.push(Experiment::new(
        "exp",
        vec![VariantRow {
            variant: "only".into(),
            is_control: true,
            ..VariantRow::default()
        }],
    ));
    r.experiments
        .rows
        .push(Experiment::new("exp2", vec![VariantRow::default()]));
    r.private_domain.rows.push(PrivateDomainRow::default());
    r.rfm_segments.rows.push(RfmSegmentRow::default());
    r.funnels.rows.push(Funnel {
        funnel_id: "f".into(),
        steps: vec![],
    });
    r.funnel_channels.rows.push(ChannelFunnel::default());
    let t = render_text(&r);
    assert!(!t.contains("NaN") && !t.contains("inf"), "{t}");
    assert!(t.contains("verdict: only one variant exposed: nothing to compare"));
    assert!(t.contains("verdict: no significant difference"));
    let scorecard_line = t
        .lines()
        .find(|l| l.contains("Repurchase rate"))
        .expect("scorecard row");
    assert_eq!(
        scorecard_line.split_whitespace().collect::<Vec<_>>(),
        ["Repurchase", "rate", "-", "-", "-"]
    );
    let h = render_html(&r);
    assert!(!h.contains("NaN"));
}

#[test]
fn html_is_self_contained_and_escapes_user_data() {
    let mut r = sample();
    let evil = "<script>alert('x')</script>";
    r.ltv_cac.rows[0].channel = evil.into();
    r.funnel_channels.rows[0].channel = evil.into();
    r.promotion_roi.rows[0].campaign = "a&b\"c".into();
    r.experiments.rows[0].experiment_id = "<img src=x onerror=alert(1)>".into();
    r.delivery.rows[0].carrier = "\u{1b}[31mred".into();
    r.database = "<db>".into();
    let h = render_html(&r);
    assert!(!h.contains("<script"), "unescaped script tag");
    assert!(!h.contains("<img"), "unescaped img tag");
    assert!(h.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"));
    assert!(h.contains("a&amp;b&quot;c"));
    assert!(h.contains("&lt;db&gt;"));
    assert!(!h.contains('\u{1b}'));
    // Offline: no URL, no external resource, no script at all.
    for bad in [
        "http://",
        "https://",
        "src=\"",
        "href=\"http",
        "<link",
        "@import",
        "url(",
    ] {
        assert!(!h.contains(bad), "found {bad:?}");
    }
    assert!(h.starts_with("<!DOCTYPE html>"));
    // Three kinds of chart: funnel, LTV/CAC with its target line, one per experiment.
    assert_eq!(h.matches("<svg class=\"chart\"").count(), 1 + 1 + 3);
    assert!(h.contains("class=\"ref\""));
    assert!(h.contains("target 3"));
    // The terminal rendering shows the channel verbatim but without control characters.
    let t = render_text(&r);
    assert!(t.contains("<script>alert('x')</script>"));
    assert!(!t.contains('\u{1b}'));
    assert!(t.contains("\u{FFFD}[31mred"));
}

#[test]
fn failed_queries_render_as_errors() {
    let mut r = empty();
    r.ltv_cac = Section::failed(
        "kpi_ltv_cac",
        "Code: 60, Table zt.kpi_ltv_cac doesn't exist <x>",
    );
    let t = render_text(&r);
    assert!(t.contains("error: Code: 60, Table zt.kpi_ltv_cac doesn't exist <x>"));
    let h = render_html(&r);
    assert!(h.contains("query failed: Code: 60, Table zt.kpi_ltv_cac doesn&#39;t exist &lt;x&gt;"));
    assert_eq!(
        r.errors(),
        vec![(
            "kpi_ltv_cac".to_owned(),
            "Code: 60, Table zt.kpi_ltv_cac doesn't exist <x>".to_owned()
        )]
    );
}

#[test]
fn truncated_sections_say_so() {
    let mut r = sample();
    r.delivery.truncated = true;
    assert!(
        render_text(&r)
            .contains("showing the first 2 carriers by shipments; query kpi_delivery for all")
    );
}

#[test]
fn verdicts() {
    let c = variant("control", true, 1000, 100);
    let lose = treatment("B", 1000, 70, -0.03, 0.001_5, true);
    assert_eq!(
        verdict(&[c.clone(), lose]),
        "treatment B loses: -3.0 pp, 99.8 % confidence"
    );
    // The largest significant difference wins among several treatments.
    let b = treatment("B", 1000, 120, 0.02, 0.04, true);
    let d = treatment("D", 1000, 140, 0.04, 0.000_01, true);
    let e = treatment("E", 1000, 160, 0.06, 0.2, false);
    assert_eq!(
        verdict(&[c.clone(), b, d, e]),
        "treatment D wins: +4.0 pp, > 99.9 % confidence"
    );
    assert_eq!(verdict(&[]), "no data");
    let t = treatment("treatment", 1000, 120, 0.02, 0.04, true);
    assert_eq!(
        verdict(&[c.clone(), t]),
        "treatment wins: +2.0 pp, 96.0 % confidence"
    );
    let mut srm = c.clone();
    srm.srm_mismatch = Some(true);
    srm.srm_p_value = None;
    assert_eq!(verdict(&[srm]), "SRM detected: do not trust");
}

#[test]
fn funnel_steps_can_be_renamed() {
    let mut r = sample();
    r.name_funnel_steps("ecommerce", &["view", "cart"]);
    let t = render_text(&r);
    assert!(t.contains("1 view"));
    assert!(t.contains("2 cart"));
    assert!(t.contains("3 checkout_started"));
    let header = t
        .lines()
        .find(|l| l.trim_start().starts_with("channel") && l.contains("view"))
        .expect("channel header");
    assert!(
        header.contains("cart") && header.contains("checkout_started"),
        "{header}"
    );
    let mut r = sample();
    for c in &mut r.funnel_channels.rows {
        c.step_names.clear();
    }
    assert!(render_text(&r).contains("step 1  step 2"));
}

#[test]
fn report_serializes() {
    let j = serde_json::to_value(sample()).expect("serialize");
    assert_eq!(j["experiments"]["rows"][0]["experiment_id"], "exp_checkout");
    assert!(j["scorecard"]["rows"][2]["value"].is_null());
}
