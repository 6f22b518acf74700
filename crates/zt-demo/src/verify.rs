//! Checks of a run's ClickHouse database against independent oracles.
//!
//! - [`against_truth`]: every KPI the generator's ground truth knows (events per source,
//!   orders and money, channels, live profiles, service, delivery, the stream funnel, the
//!   experiment, clock-skew correction), computed from the world the generator made and
//!   not from anything the platform computed;
//! - [`exactly_once`]: the sink's table of events against the broker's offsets of
//!   `zt.events.resolved` (every record once, no gaps, no repeats) and against the ids
//!   ingest acknowledged (every acknowledged event once, nothing else);
//! - [`profiles_match_orders`]: every live profile's paid orders and total against a
//!   recomputation from the order events in ClickHouse, following the identity merges.
//!
//! Each returns the differences as readable lines: empty means the check passed.

use std::collections::{BTreeMap, HashMap, HashSet};

use anyhow::Context;
use clickhouse::Client;
use serde_json::Value;
use zt_kafka::KafkaConfig;

use crate::scenario::Truth;

async fn rows(ch: &Client, sql: &str) -> anyhow::Result<Vec<Value>> {
    Ok(zt_report::query_rows(ch, sql)
        .await
        .with_context(|| format!("querying ClickHouse: {sql}"))?
        .into_iter()
        .map(Value::Object)
        .collect())
}

/// The first row of `sql` (an empty object when there is none: every column then reads 0).
async fn one(ch: &Client, sql: &str) -> anyhow::Result<Value> {
    Ok(rows(ch, sql)
        .await?
        .into_iter()
        .next()
        .unwrap_or_else(|| Value::Object(Default::default())))
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
    let n = num(v);
    if n.is_finite() { n as i64 } else { 0 }
}

fn check(bad: &mut Vec<String>, what: &str, got: i64, want: i64) {
    if got != want {
        bad.push(format!("{what}: ClickHouse {got}, truth {want}"));
    }
}

/// Every difference between the KPI views of `ch`'s database and the truth `t`.
pub async fn against_truth(ch: &Client, t: &Truth) -> anyhow::Result<Vec<String>> {
    let mut bad = Vec::new();

    // Every record exactly once, per source.
    let by_source = rows(
        ch,
        "SELECT source, count() AS n, uniqExact(event_id) AS u FROM events GROUP BY source",
    )
    .await?;
    let mut seen = BTreeMap::new();
    for r in &by_source {
        let s = r["source"].as_str().unwrap_or_default().to_owned();
        let (n, u) = (int(&r["n"]), int(&r["u"]));
        if n != u {
            bad.push(format!(
                "events of {s}: {n} rows in ClickHouse but {u} distinct event ids"
            ));
        }
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
    let o = &one(
        ch,
        "SELECT count() AS n, sum(total_minor) AS gross, sum(refunded_minor) AS refunded FROM kpi_order_facts",
    ).await?;
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
    let r = &one(ch, "SELECT buyers, repeat_buyers FROM kpi_repurchase_rate").await?;
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
    .await?;
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
    let p = &one(
        ch,
        "SELECT count() AS n, sum(paid_orders) AS orders, sum(paid_total_minor) AS paid FROM profiles FINAL WHERE merged_into = ''",
    ).await?;
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
    let c = &one(
        ch,
        "SELECT rated_tickets, score_sum, satisfied FROM kpi_csat",
    )
    .await?;
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
    let f = &one(
        ch,
        "SELECT tickets, responded, within_sla FROM kpi_first_response",
    )
    .await?;
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
    let k = &one(ch, "SELECT complaints FROM kpi_complaint_rate").await?;
    check(
        &mut bad,
        "complaints",
        int(&k["complaints"]),
        t.complaints as i64,
    );

    // Delivery.
    let d = &one(
        ch,
        "SELECT sum(shipments) AS s, sum(delivered) AS d, sum(with_exception) AS e FROM kpi_delivery",
    ).await?;
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
    .await?;
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
    .await?;
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
    let sk = &one(
        ch,
        "SELECT countIf(abs(occurred_at_ms - event_time_ms) >= 30000) AS n FROM events WHERE source = 'tracking'",
    ).await?;
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
        .await?;
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
    Ok(bad)
}

/// The sink's `events` table against the broker and against ingest's acknowledgements:
///
/// - per partition of `resolved_topic`, read from the broker (every record, its offset
///   and its `event_id`): the rows that came from it hold exactly the offset of the first
///   record of each event id in that partition, each once. A later record repeating an
///   id (an upstream replay) is the sink's to skip (`sink.dedup_window_records`); every
///   other offset must be there, none twice;
/// - every event id in `acked` (the ids ingest answered 2xx for) is in the table exactly
///   once, and the table holds no other event.
///
/// Blocking calls to the broker run on the blocking pool.
pub async fn exactly_once(
    kafka: &KafkaConfig,
    ch: &Client,
    resolved_topic: &str,
    acked: &HashSet<String>,
) -> anyhow::Result<Vec<String>> {
    let mut bad = Vec::new();
    let (k, t) = (kafka.clone(), resolved_topic.to_owned());
    let on_topic = tokio::task::spawn_blocking(move || read_event_ids(&k, &t))
        .await
        .context("the topic reader task")??;
    let topic = resolved_topic.replace('\'', "");
    let stored_rows = rows(
        ch,
        &format!("SELECT _partition AS p, _offset AS o FROM events WHERE _topic = '{topic}'"),
    )
    .await?;
    let mut stored: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    for r in &stored_rows {
        stored.entry(int(&r["p"])).or_default().push(int(&r["o"]));
    }
    for (p, records) in &on_topic {
        let mut first_of: HashSet<&str> = HashSet::new();
        let want: HashSet<i64> = records
            .iter()
            .filter(|(_, id)| first_of.insert(id.as_str()))
            .map(|(o, _)| *o)
            .collect();
        let mut got = stored.remove(&i64::from(*p)).unwrap_or_default();
        got.sort_unstable();
        let n = got.len();
        got.dedup();
        if n != got.len() {
            bad.push(format!(
                "{topic}[{p}]: {} records stored more than once ({n} rows, {} offsets)",
                n - got.len(),
                got.len()
            ));
        }
        let got: HashSet<i64> = got.into_iter().collect();
        let missing = want.difference(&got).count();
        let extra = got.difference(&want).count();
        if missing > 0 || extra > 0 {
            bad.push(format!(
                "{topic}[{p}]: {missing} first occurrences missing, {extra} offsets stored that should not be ({} records on the broker, {} distinct events)",
                records.len(),
                want.len()
            ));
        }
    }
    for (p, got) in stored {
        bad.push(format!(
            "{topic}[{p}]: {} rows from a partition the broker does not have",
            got.len()
        ));
    }

    let ids = rows(
        ch,
        "SELECT event_id, count() AS n FROM events GROUP BY event_id",
    )
    .await?;
    let mut repeated = 0usize;
    let mut stored_ids = HashSet::with_capacity(ids.len());
    for r in &ids {
        let id = r["event_id"].as_str().unwrap_or_default().to_owned();
        let n = int(&r["n"]);
        if n != 1 {
            repeated += 1;
            if repeated <= 5 {
                bad.push(format!("event {id} stored {n} times"));
            }
        }
        stored_ids.insert(id);
    }
    if repeated > 5 {
        bad.push(format!(
            "... {repeated} events stored more than once in all"
        ));
    }
    let missing: Vec<&String> = acked
        .iter()
        .filter(|id| !stored_ids.contains(*id))
        .collect();
    if !missing.is_empty() {
        bad.push(format!(
            "{} acknowledged events missing, e.g. {:?}",
            missing.len(),
            &missing[..missing.len().min(5)]
        ));
    }
    let extra: Vec<&String> = stored_ids
        .iter()
        .filter(|id| !acked.contains(*id))
        .collect();
    if !extra.is_empty() {
        bad.push(format!(
            "{} stored events ingest never acknowledged, e.g. {:?}",
            extra.len(),
            &extra[..extra.len().min(5)]
        ));
    }
    Ok(bad)
}

/// Every record of `topic` (all partitions, from the low to the high watermark): per
/// partition, (offset, event id) in offset order. Blocking.
pub fn read_event_ids(
    kafka: &KafkaConfig,
    topic: &str,
) -> anyhow::Result<BTreeMap<i32, Vec<(i64, String)>>> {
    use rdkafka::Message;
    let marks = crate::drain::watermarks(kafka, topic)?;
    let c = zt_kafka::client::range_reader(kafka, "zt-verify-reader", 50)
        .context("a consumer to read the topic back")?;
    let mut out: BTreeMap<i32, Vec<(i64, String)>> = BTreeMap::new();
    let ranges: Vec<zt_kafka::client::Range> = marks
        .iter()
        .map(|(p, (low, high))| {
            out.insert(*p, Vec::new());
            (topic.to_owned(), *p, *low, *high)
        })
        .collect();
    zt_kafka::client::read_ranges(&c, &ranges, std::time::Duration::from_secs(120), |m| {
        let id = m
            .payload()
            .and_then(|b| zt_model::decode::<zt_model::Event>(b).ok())
            .map(|e| e.event_id)
            .unwrap_or_default();
        out.entry(m.partition()).or_default().push((m.offset(), id));
    })
    .with_context(|| format!("reading {topic} back to its high watermarks"))?;
    Ok(out)
}

/// Every live profile (`profiles FINAL`, not merged away) against a recomputation from
/// the paid orders in ClickHouse (`kpi_order_facts`, one row per paid order with the
/// person it was resolved to), each order's person followed through `identity_merges`
/// to the person it continues as: paid orders and their total must be equal per person,
/// and no order may belong to a person without a live profile.
pub async fn profiles_match_orders(ch: &Client) -> anyhow::Result<Vec<String>> {
    let mut bad = Vec::new();
    let merges: HashMap<String, String> = rows(
        ch,
        "SELECT from_person, into_person FROM identity_merges FINAL",
    )
    .await?
    .iter()
    .map(|r| {
        (
            r["from_person"].as_str().unwrap_or_default().to_owned(),
            r["into_person"].as_str().unwrap_or_default().to_owned(),
        )
    })
    .collect();
    let live = |mut p: String| {
        // A chain of merges ends at a live person; a cycle (a bug) stops after 64 steps.
        for _ in 0..64 {
            match merges.get(&p) {
                Some(next) if *next != p => p = next.clone(),
                _ => break,
            }
        }
        p
    };
    let mut want: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for r in rows(
        ch,
        "SELECT person_key, count() AS n, sum(total_minor) AS total FROM kpi_order_facts GROUP BY person_key",
    )
    .await?
    {
        let e = want
            .entry(live(r["person_key"].as_str().unwrap_or_default().to_owned()))
            .or_default();
        e.0 += int(&r["n"]);
        e.1 += int(&r["total"]);
    }
    let mut got: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for r in rows(
        ch,
        "SELECT person_id, paid_orders, paid_total_minor FROM profiles FINAL WHERE merged_into = ''",
    )
    .await?
    {
        got.insert(
            r["person_id"].as_str().unwrap_or_default().to_owned(),
            (int(&r["paid_orders"]), int(&r["paid_total_minor"])),
        );
    }
    let mut differ = 0usize;
    for (person, w) in &want {
        let g = got.get(person).copied();
        if g != Some(*w) {
            differ += 1;
            if differ <= 10 {
                bad.push(format!(
                    "person {person}: profile has (orders, total) {g:?}, the orders say {w:?}"
                ));
            }
        }
    }
    for (person, g) in &got {
        if !want.contains_key(person) && *g != (0, 0) {
            differ += 1;
            if differ <= 10 {
                bad.push(format!(
                    "person {person}: profile has (orders, total) {g:?}, no paid order"
                ));
            }
        }
    }
    if differ > 10 {
        bad.push(format!("... {differ} persons differ in all"));
    }
    Ok(bad)
}
