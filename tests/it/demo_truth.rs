//! `zt demo` end to end, checked against the generator's ground truth.
//!
//! The real `zt` binary runs a short demo on the local stack (tansu, ClickHouse 18.16):
//! it starts ingest, the three processors and the sink as child processes, posts a seeded
//! world over HTTP, waits for the pipeline to drain and prints the report. The test then
//! reads the KPI views of the run's database and compares them with the truth the
//! generator computed from the world it made (what every person did, which orders were
//! paid and refunded, which tickets were answered in time, who was exposed to which
//! variant and converted), not from anything the platform computed.
//!
//! Negative control: the same comparison against the truth of another seed must find
//! differences, so the comparison can fail.

mod sink_support;

use std::collections::BTreeMap;
use std::process::Command;

use clickhouse::Client;
use serde_json::Value;
use sink_support::zt_binary;
use zt_demo::scenario::{Params, Truth, generate};
use zt_integration_tests::{clickhouse_url, kafka_bootstrap, unique};

async fn rows(ch: &Client, sql: &str) -> Vec<Value> {
    let bytes = ch
        .query(sql)
        .fetch_bytes("JSONEachRow")
        .expect("query")
        .collect()
        .await
        .expect("rows");
    String::from_utf8_lossy(&bytes)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("a JSON row"))
        .collect()
}

/// A number from a JSONEachRow cell (ClickHouse quotes 64-bit integers).
fn num(v: &Value) -> f64 {
    match v {
        Value::Number(n) => n.as_f64().unwrap_or(f64::NAN),
        Value::String(s) => s.parse().unwrap_or(f64::NAN),
        _ => f64::NAN,
    }
}

fn int(v: &Value) -> i64 {
    num(v) as i64
}

fn check(bad: &mut Vec<String>, what: &str, got: i64, want: i64) {
    if got != want {
        bad.push(format!("{what}: ClickHouse {got}, truth {want}"));
    }
}

/// Every difference between the KPI views and `t`, as readable lines.
async fn compare(ch: &Client, t: &Truth) -> Vec<String> {
    let mut bad = Vec::new();

    // Every record exactly once, per source.
    let by_source = rows(
        ch,
        "SELECT source, count() AS n, uniqExact(event_id) AS u FROM events GROUP BY source",
    )
    .await;
    let mut seen = BTreeMap::new();
    for r in &by_source {
        let s = r["source"].as_str().unwrap_or_default().to_owned();
        check(
            &mut bad,
            &format!("events of {s} (distinct ids)"),
            int(&r["u"]),
            int(&r["n"]),
        );
        seen.insert(s, int(&r["n"]));
    }
    for (s, n) in &t.events_by_source {
        check(
            &mut bad,
            &format!("events of {s}"),
            seen.get(s).copied().unwrap_or(0),
            *n as i64,
        );
    }

    // Orders and money.
    let o = &rows(
        ch,
        "SELECT count() AS n, sum(total_minor) AS gross, sum(refunded_minor) AS refunded FROM kpi_order_facts",
    )
    .await[0];
    check(&mut bad, "paid orders", int(&o["n"]), t.paid_orders as i64);
    check(
        &mut bad,
        "gross revenue (fen)",
        int(&o["gross"]),
        t.gross_minor,
    );
    check(
        &mut bad,
        "refunds (fen)",
        int(&o["refunded"]),
        t.refunded_minor,
    );
    let r = &rows(ch, "SELECT buyers, repeat_buyers FROM kpi_repurchase_rate").await[0];
    check(&mut bad, "buyers", int(&r["buyers"]), t.buyers as i64);
    check(
        &mut bad,
        "repeat buyers",
        int(&r["repeat_buyers"]),
        t.repeat_buyers as i64,
    );

    // Per acquisition channel: new customers, their net LTV, the spend (restatements).
    let ltv = rows(
        ch,
        "SELECT channel, customers, net_ltv_minor, spend_minor FROM kpi_ltv_cac",
    )
    .await;
    for (name, c) in &t.channels {
        let row = ltv.iter().find(|r| r["channel"].as_str() == Some(name));
        let get = |k: &str| row.map_or(0, |r| int(&r[k]));
        check(
            &mut bad,
            &format!("{name}: new customers"),
            get("customers"),
            c.new_customers as i64,
        );
        check(
            &mut bad,
            &format!("{name}: net LTV (fen)"),
            get("net_ltv_minor"),
            c.net_ltv_minor,
        );
        check(
            &mut bad,
            &format!("{name}: ad spend (fen)"),
            get("spend_minor"),
            c.spend_minor,
        );
    }

    // Live profiles: one per person, holding every paid order.
    let p = &rows(
        ch,
        "SELECT count() AS n, sum(paid_orders) AS orders, sum(paid_total_minor) AS paid FROM profiles FINAL WHERE merged_into = ''",
    )
    .await[0];
    check(&mut bad, "live profiles", int(&p["n"]), t.persons as i64);
    check(
        &mut bad,
        "paid orders in profiles",
        int(&p["orders"]),
        t.paid_orders as i64,
    );
    check(
        &mut bad,
        "paid totals in profiles (fen)",
        int(&p["paid"]),
        t.gross_minor,
    );

    // Service.
    let c = &rows(
        ch,
        "SELECT rated_tickets, score_sum, satisfied FROM kpi_csat",
    )
    .await[0];
    check(
        &mut bad,
        "rated tickets",
        int(&c["rated_tickets"]),
        t.rated as i64,
    );
    check(
        &mut bad,
        "sum of ratings",
        int(&c["score_sum"]),
        t.csat_sum as i64,
    );
    check(
        &mut bad,
        "ratings of 4 or 5",
        int(&c["satisfied"]),
        t.csat_ge4 as i64,
    );
    let f = &rows(
        ch,
        "SELECT tickets, responded, within_sla FROM kpi_first_response",
    )
    .await[0];
    check(&mut bad, "tickets", int(&f["tickets"]), t.tickets as i64);
    check(
        &mut bad,
        "tickets answered",
        int(&f["responded"]),
        t.responded as i64,
    );
    check(
        &mut bad,
        "answered within 2 h",
        int(&f["within_sla"]),
        t.within_sla as i64,
    );
    let k = &rows(ch, "SELECT complaints FROM kpi_complaint_rate").await[0];
    check(
        &mut bad,
        "complaints",
        int(&k["complaints"]),
        t.complaints as i64,
    );

    // Delivery.
    let d = &rows(
        ch,
        "SELECT sum(shipments) AS s, sum(delivered) AS d, sum(with_exception) AS e FROM kpi_delivery",
    )
    .await[0];
    check(&mut bad, "shipments", int(&d["s"]), t.shipments as i64);
    check(&mut bad, "delivered", int(&d["d"]), t.delivered as i64);
    check(
        &mut bad,
        "shipments with an exception",
        int(&d["e"]),
        t.shipments_with_exception as i64,
    );

    // The funnel maintained in the stream, per step (skewed and late calls included).
    let steps = rows(
        ch,
        "SELECT step, sum(persons) AS n FROM kpi_funnel_stream WHERE funnel_id = 'ecommerce' GROUP BY step ORDER BY step",
    )
    .await;
    for (i, want) in t.funnel.iter().enumerate() {
        let got = steps
            .iter()
            .find(|r| int(&r["step"]) == i as i64 + 1)
            .map_or(0, |r| int(&r["n"]));
        check(
            &mut bad,
            &format!("funnel step {}", i + 1),
            got,
            *want as i64,
        );
    }

    // The experiment: exposures and conversions per variant, and the uplift's direction.
    let ab = rows(
        ch,
        "SELECT variant, exposed, converted, uplift_abs FROM kpi_ab_test_stream WHERE experiment_id = 'checkout-v2'",
    )
    .await;
    let e = &t.experiment;
    for (variant, n) in &e.exposed {
        let row = ab.iter().find(|r| r["variant"].as_str() == Some(variant));
        let get = |k: &str| row.map_or(0, |r| int(&r[k]));
        check(
            &mut bad,
            &format!("{variant}: exposed"),
            get("exposed"),
            *n as i64,
        );
        let conv = e.converted.get(variant).copied().unwrap_or(0);
        check(
            &mut bad,
            &format!("{variant}: converted"),
            get("converted"),
            conv as i64,
        );
    }
    let rate = |v: &str| {
        e.converted.get(v).copied().unwrap_or(0) as f64
            / e.exposed.get(v).copied().unwrap_or(1).max(1) as f64
    };
    let realized = rate("treatment") - rate("control");
    let true_uplift = e.true_rate["treatment"] - e.true_rate["control"];
    let reported = ab
        .iter()
        .find(|r| r["variant"].as_str() == Some("treatment"))
        .map_or(f64::NAN, |r| num(&r["uplift_abs"]));
    if !(reported * true_uplift > 0.0 && reported * realized > 0.0) {
        bad.push(format!(
            "uplift direction: reported {reported:+.4}, realized {realized:+.4}, true {true_uplift:+.4}"
        ));
    }
    if (reported - realized).abs() > 1e-9 {
        bad.push(format!(
            "uplift: reported {reported:.6}, realized {realized:.6}"
        ));
    }

    // Clock skew: exactly the skewed devices' calls carry a device time a minute or more
    // off, and ingest's correction put their event time back within seconds of the truth.
    let sk = &rows(
        ch,
        "SELECT countIf(abs(occurred_at_ms - event_time_ms) >= 30000) AS n FROM events WHERE source = 'tracking'",
    )
    .await[0];
    check(
        &mut bad,
        "calls with a skewed device time",
        int(&sk["n"]),
        t.skewed_calls as i64,
    );
    let ids: Vec<String> = t.skew_sample.keys().map(|k| format!("'{k}'")).collect();
    if !ids.is_empty() {
        let got = rows(
            ch,
            &format!(
                "SELECT event_id, event_time_ms FROM events WHERE event_id IN ({})",
                ids.join(",")
            ),
        )
        .await;
        check(
            &mut bad,
            "skew sample found",
            got.len() as i64,
            ids.len() as i64,
        );
        for r in &got {
            let id = r["event_id"].as_str().unwrap_or_default();
            let want = t.skew_sample.get(id).copied().unwrap_or(0);
            if (int(&r["event_time_ms"]) - want).abs() > 10_000 {
                bad.push(format!(
                    "{id}: corrected event time {} is not within 10 s of the true {want}",
                    int(&r["event_time_ms"])
                ));
            }
        }
    }
    bad
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_kpis_match_the_generators_ground_truth() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = unique("zt_demo_it").replace(['-', '.'], "_");
    let truth_path = dir.path().join("truth.json");
    let html = dir.path().join("report.html");
    let out = Command::new(zt_binary())
        .args(["demo", "--no-stack", "--quiet", "--seed", "4242"])
        .args(["--persons", "300", "--days", "21", "--drain-timeout", "300"])
        // Paced: this test checks correctness, not speed, and shares two cores and the
        // SQLite broker with the rest of the suite. An overloaded broker that acknowledges
        // after `publish_timeout_ms` makes ingest answer 503 for records it may still have
        // written; the retry then publishes them again (docs/ingest.md, delivery).
        .args(["--rate", "1000"])
        .arg("--database")
        .arg(&db)
        .arg("--truth")
        .arg(&truth_path)
        .arg("--html")
        .arg(&html)
        .arg("--work-dir")
        .arg(dir.path())
        .env("ZT__KAFKA__BOOTSTRAP_SERVERS", kafka_bootstrap())
        .env("ZT__CLICKHOUSE__URL", clickhouse_url())
        .env("NO_COLOR", "1")
        .output()
        .expect("run zt demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "zt demo failed\n{stdout}\n{stderr}");
    for section in [
        "Funnel",
        "LTV/CAC",
        "Repurchase",
        "CSAT",
        "Experiments",
        "verdict",
    ] {
        assert!(
            stdout.contains(section),
            "the report lacks {section}:\n{stdout}"
        );
    }
    assert!(stderr.contains("0 rejected"), "{stderr}");
    let page = std::fs::read_to_string(&html).expect("the HTML report");
    assert!(
        page.contains("<svg") && !page.contains("<script src"),
        "self-contained HTML"
    );

    let doc: Value = serde_json::from_slice(&std::fs::read(&truth_path).expect("truth file"))
        .expect("truth JSON");
    let truth: Truth = serde_json::from_value(doc["truth"].clone()).expect("truth");
    let params: Params = serde_json::from_value(doc["params"].clone()).expect("params");
    assert!(truth.skewed_calls > 0 && truth.late_calls > 0 && truth.refunded_minor > 0);

    let ch = Client::default()
        .with_url(clickhouse_url())
        .with_database(&db)
        .with_validation(false);
    let diffs = compare(&ch, &truth).await;
    assert!(
        diffs.is_empty(),
        "the KPIs differ from the ground truth:\n{}",
        diffs.join("\n")
    );

    // Negative control: another seed's world over the same period differs.
    let other = generate(Params {
        seed: params.seed + 1,
        ..params
    })
    .truth;
    let diffs = compare(&ch, &other).await;
    assert!(
        diffs.len() >= 5,
        "the comparison did not notice another seed's truth: {diffs:?}"
    );

    let _ = ch
        .query(&format!("DROP DATABASE IF EXISTS {db}"))
        .execute()
        .await;
}
