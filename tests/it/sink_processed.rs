//! `zt sink` loading the processors' JSON topics (`<prefix>.identity.links`,
//! `<prefix>.profiles`, `<prefix>.identity.merges`) into `identity_links`, `profiles` and
//! `identity_merges`, with the real binary, broker and ClickHouse 18.16 (the tables made by
//! `zt migrate`, including `0010_processed.sql`):
//!
//! - hand-written records become exactly the hand-written rows; of two snapshots of one
//!   person the later one wins under `FINAL` (its version is its offset), and so does the
//!   later link of one identifier (its `version`);
//! - a tombstone is skipped (no row, no dead letter, counted in `rows_skipped`); a record
//!   that does not map is dead-lettered with the field named, and is in no table;
//! - a second sink run under a new consumer group re-reads every record and adds no row
//!   (the per-table resume from the offsets ClickHouse holds).

mod sink_support;

use std::time::{Duration, Instant};

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::json;
use sink_support::*;
use zt_integration_tests::*;
use zt_kafka::topics::TopicSpec;
use zt_kafka::{ConsumerOptions, build_consumer, build_producer, create_topics};
use zt_model::DeadLetter;

async fn wait_for(what: &str, timeout: Duration, mut f: impl AsyncFnMut() -> bool) {
    let until = Instant::now() + timeout;
    while Instant::now() < until {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("timed out waiting for {what}");
}

fn committed(group: &str, topic: &str) -> Option<i64> {
    let c = build_consumer(
        &kafka_config(),
        &ConsumerOptions {
            group_id: group.to_owned(),
            auto_commit: false,
        },
    )
    .ok()?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, 0);
    let got = c.committed_offsets(tpl, Duration::from_secs(10)).ok()?;
    match got.elements().first()?.offset() {
        Offset::Offset(o) => Some(o),
        _ => None,
    }
}

/// Sends one record (`None`: a tombstone); its offset.
async fn send(p: &FutureProducer, topic: &str, key: &str, value: Option<Vec<u8>>) -> i64 {
    let mut r = FutureRecord::<str, Vec<u8>>::to(topic).key(key);
    if let Some(v) = &value {
        r = r.payload(v);
    }
    let d = p
        .send(r, Duration::from_secs(30))
        .await
        .map_err(|(e, _)| e)
        .expect("delivery");
    assert_eq!(d.partition, 0);
    d.offset
}

fn link(id_type: &str, id_value: &str, person: &str, version: u64) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "id_type": id_type, "id_value": id_value, "person_id": person,
        "version": version, "linked_at_ms": 1_767_225_600_000_i64 + version as i64,
    }))
    .unwrap()
}

/// A `ProfileSnapshot` (crates/zt-process/src/records.rs) with `paid_orders` orders of
/// 100 fen each.
fn snapshot(person: &str, paid_orders: u32) -> serde_json::Value {
    let total = i64::from(paid_orders) * 100;
    let mut v = json!({
        "person_id": person, "merged_into": "", "updated_at_ms": 1_000 + i64::from(paid_orders),
        "crm_customer_id": format!("C-{person}"), "user_ids": [format!("u-{person}")],
        "anonymous_ids": ["a1", "a2"], "phone_hash": "ph", "email_hash": "",
        "first_seen_at_ms": 10, "last_seen_at_ms": 20,
        "acquisition_channel": "douyin", "acquisition_campaign": "spring",
        "first_order_at_ms": 11, "last_order_at_ms": null,
        "paid_orders": paid_orders, "paid_total_minor": total, "refunded_minor": 0,
    });
    let more = json!({
        "net_ltv_minor": total, "aov_minor": 100, "currency": "CNY",
        "repurchase": paid_orders >= 2, "avg_days_between_orders": 2.5,
        "last_order_id": format!("O{paid_orders}"), "last_order_status": "paid",
        "last_shipment_status": "delivered", "tickets": 1, "complaints": 0,
        "csat_ratings": 1, "csat_avg": 4.0, "tier": "gold", "points_balance": 30,
    });
    let rest = json!({
        "consents_granted": ["sms"], "consents_denied": ["email"], "province": "浙江",
        "city": "杭州", "private_domain": true, "rfm_r": 5, "rfm_f": 4, "rfm_m": 3,
        "rfm_segment": "important_value", "high_value": true,
    });
    for part in [more, rest] {
        if let (Some(o), serde_json::Value::Object(m)) = (v.as_object_mut(), part) {
            o.extend(m);
        }
    }
    v
}

#[derive(Debug, PartialEq, serde::Deserialize, clickhouse::Row)]
struct LinkRow {
    id_type: String,
    id_value: String,
    person_id: String,
    version: u64,
    linked_at_ms: i64,
    deleted: u8,
    _offset: i64,
}

#[derive(Debug, PartialEq, serde::Deserialize, clickhouse::Row)]
struct MergeRow {
    from_person: String,
    into_person: String,
    version: u64,
    merged_at_ms: i64,
    _offset: i64,
}

#[derive(Debug, PartialEq, serde::Deserialize, clickhouse::Row)]
struct ProfileRow {
    person_id: String,
    version: u64,
    paid_orders: u32,
    paid_total_minor: i64,
    net_ltv_minor: i64,
    repurchase: u8,
    avg_days_between_orders: Option<f64>,
    last_order_id: String,
    last_order_at_ms: Option<i64>,
    csat_avg: Option<f64>,
    consents_granted: Vec<String>,
    consents_denied: Vec<String>,
    anonymous_ids: Vec<String>,
    city: String,
    private_domain: u8,
    rfm_segment: String,
    high_value: u8,
    traits_json: String,
    merged_into: String,
    _offset: i64,
}

async fn count(env: &Env, table: &str) -> u64 {
    env.client()
        .query(&format!("SELECT count() FROM {table}"))
        .fetch_one::<u64>()
        .await
        .expect("count")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processed_topics_load_once_and_the_latest_version_wins() {
    let env = setup("processed", &[], &clickhouse_url()).await;
    let links = format!("{}.identity.links", env.prefix);
    let profiles = format!("{}.profiles", env.prefix);
    let merges = format!("{}.identity.merges", env.prefix);
    let specs: Vec<TopicSpec> = [(&links, true), (&profiles, true), (&merges, false)]
        .into_iter()
        .map(|(t, compacted)| TopicSpec {
            name: t.clone(),
            partitions: 1,
            replication_factor: 1,
            compacted,
            keep_forever: false,
            purpose: "test",
        })
        .collect();
    create_topics(&kafka_config(), &specs)
        .await
        .expect("create topics");

    let p = build_producer(&kafka_config()).unwrap();
    let l0 = send(
        &p,
        &links,
        "user_id:u1",
        Some(link("user_id", "u1", "p1", 3)),
    )
    .await;
    let l1 = send(
        &p,
        &links,
        "phone_hash:h1",
        Some(link("phone_hash", "h1", "p1", 5)),
    )
    .await;
    let l2 = send(
        &p,
        &links,
        "user_id:u1",
        Some(link("user_id", "u1", "p2", 9)),
    )
    .await;
    let l3 = send(&p, &links, "user_id:u9", None).await;
    let merge = json!({"from": "p3", "into": "p1", "version": 4, "merged_at_ms": 777});
    let m0 = send(&p, &merges, "p3", Some(serde_json::to_vec(&merge).unwrap())).await;
    let bytes = |v: serde_json::Value| Some(serde_json::to_vec(&v).unwrap());
    let p0 = send(&p, &profiles, "p1", bytes(snapshot("p1", 1))).await;
    let p1 = send(&p, &profiles, "p2", bytes(snapshot("p2", 0))).await;
    let p2 = send(&p, &profiles, "p1", bytes(snapshot("p1", 3))).await;
    let p3 = send(&p, &profiles, "p3", None).await;
    let mut bad = snapshot("p9", 1);
    bad["paid_orders"] = json!("many");
    let garbage = serde_json::to_vec(&bad).unwrap();
    let p4 = send(&p, &profiles, "p9", Some(garbage.clone())).await;

    // The processed topics, listed explicitly, next to a source topic; earliest offsets.
    let listed = format!(
        "topics = [\"{}\", \"{links}\", \"{merges}\", \"{profiles}\"]\n",
        env.topic(zt_model::Source::Erp)
    );
    let write_config = |group: &str| {
        env.write_config(120);
        let text = std::fs::read_to_string(&env.config).unwrap();
        let text = text
            .replace(
                "[kafka.consumer]\n",
                "[kafka.consumer]\nauto_offset_reset = \"earliest\"\n",
            )
            .replace(
                &format!("group_id = \"{}\"", env.group),
                &format!("group_id = \"{group}\""),
            );
        std::fs::write(&env.config, format!("{text}{listed}")).unwrap();
    };
    let ends = [(&links, l3 + 1), (&merges, m0 + 1), (&profiles, p4 + 1)];
    let mut runs = 0;
    for group in [env.group.clone(), format!("{}-again", env.group)] {
        runs += 1;
        write_config(&group);
        let mut sink = env.spawn_sink(runs, &[]);
        wait_for(
            "every processed topic committed",
            Duration::from_secs(90),
            async || {
                ends.iter()
                    .all(|(t, end)| committed(&group, t) == Some(*end))
            },
        )
        .await;
        let metrics = env.admin("/metrics").map(|(_, b)| b).unwrap_or_default();
        signal(&sink, "TERM");
        assert!(
            wait_exit(&mut sink, Duration::from_secs(30)).is_some_and(|s| s.success()),
            "sink run {runs} did not stop cleanly:\n{}",
            env.log(runs)
        );
        // Two tombstones skipped (one per compacted topic); on the second run, under a new
        // group, every row is skipped as well: ClickHouse already holds it.
        let skipped = |t: &str| metric(&metrics, "zt_sink_rows_skipped_total", t);
        let again = if runs == 2 { 1.0 } else { 0.0 };
        assert_eq!(skipped("identity_links"), 1.0 + 3.0 * again, "{metrics}");
        assert_eq!(skipped("profiles"), 1.0 + 3.0 * again, "{metrics}");
        assert_eq!(skipped("identity_merges"), again, "{metrics}");
        if runs == 1 {
            assert_eq!(
                metric(&metrics, "zt_sink_dead_lettered_total", "unmappable"),
                1.0
            );
        }
        // Without FINAL: one row per record with a value, nothing twice.
        assert_eq!(count(&env, "identity_links").await, 3, "run {runs}");
        assert_eq!(count(&env, "identity_merges").await, 1, "run {runs}");
        assert_eq!(count(&env, "profiles").await, 3, "run {runs}");
    }

    // The tables under FINAL equal the hand-written expectation.
    let got: Vec<LinkRow> = env
        .client()
        .query(
            "SELECT id_type, id_value, person_id, version, linked_at_ms, deleted, _offset \
             FROM identity_links FINAL ORDER BY id_type, id_value",
        )
        .fetch_all()
        .await
        .unwrap();
    let want_link = |t: &str, v: &str, person: &str, version: u64, off: i64| LinkRow {
        id_type: t.into(),
        id_value: v.into(),
        person_id: person.into(),
        version,
        linked_at_ms: 1_767_225_600_000 + version as i64,
        deleted: 0,
        _offset: off,
    };
    assert_eq!(
        got,
        vec![
            want_link("phone_hash", "h1", "p1", 5, l1),
            want_link("user_id", "u1", "p2", 9, l2),
        ]
    );
    assert!(l0 < l2);
    let got: Vec<MergeRow> = env
        .client()
        .query(
            "SELECT from_person, into_person, version, merged_at_ms, _offset \
             FROM identity_merges FINAL",
        )
        .fetch_all()
        .await
        .unwrap();
    assert_eq!(
        got,
        vec![MergeRow {
            from_person: "p3".into(),
            into_person: "p1".into(),
            version: 4,
            merged_at_ms: 777,
            _offset: m0,
        }]
    );
    let got: Vec<ProfileRow> = env
        .client()
        .query(
            "SELECT person_id, version, paid_orders, paid_total_minor, net_ltv_minor, \
             repurchase, avg_days_between_orders, last_order_id, last_order_at_ms, csat_avg, \
             consents_granted, consents_denied, anonymous_ids, city, private_domain, \
             rfm_segment, high_value, traits_json, merged_into, _offset \
             FROM profiles FINAL ORDER BY person_id",
        )
        .fetch_all()
        .await
        .unwrap();
    let want_profile = |person: &str, paid: u32, off: i64| ProfileRow {
        person_id: person.into(),
        version: off as u64,
        paid_orders: paid,
        paid_total_minor: i64::from(paid) * 100,
        net_ltv_minor: i64::from(paid) * 100,
        repurchase: u8::from(paid >= 2),
        avg_days_between_orders: Some(2.5),
        last_order_id: format!("O{paid}"),
        last_order_at_ms: None,
        csat_avg: Some(4.0),
        consents_granted: vec!["sms".into()],
        consents_denied: vec!["email".into()],
        anonymous_ids: vec!["a1".into(), "a2".into()],
        city: "杭州".into(),
        private_domain: 1,
        rfm_segment: "important_value".into(),
        high_value: 1,
        traits_json: "{}".into(),
        merged_into: String::new(),
        _offset: off,
    };
    assert_eq!(
        got,
        vec![want_profile("p1", 3, p2), want_profile("p2", 0, p1)]
    );
    // Negative control: the earlier snapshot of p1 is in the table (unmerged rows) and
    // differs, so the check above would fail had it won.
    let earlier: Vec<u32> = env
        .client()
        .query("SELECT paid_orders FROM profiles WHERE person_id = 'p1' AND _offset = ?")
        .bind(p0)
        .fetch_all()
        .await
        .unwrap();
    assert_eq!(earlier, vec![1]);
    assert_ne!(earlier[0], got[0].paid_orders);
    // Neither the tombstone nor the dead-lettered record is in a table.
    let stray: u64 = env
        .client()
        .query("SELECT count() FROM profiles WHERE _offset IN (?, ?) OR person_id IN ('p3', 'p9')")
        .bind(p3)
        .bind(p4)
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(stray, 0);

    // The dead letter, read back from the broker: the first run's one (the second run,
    // under its new group, sent it again).
    let c: StreamConsumer = build_consumer(
        &kafka_config(),
        &ConsumerOptions {
            group_id: unique("zt-it-dlq-reader"),
            auto_commit: false,
        },
    )
    .unwrap();
    c.subscribe(&[env.dlq().as_str()]).unwrap();
    let m = tokio::time::timeout(Duration::from_secs(30), c.recv())
        .await
        .expect("a dead letter arrives")
        .unwrap();
    let dl = zt_model::decode::<DeadLetter>(m.payload().unwrap()).unwrap();
    assert_eq!(dl.reason, "unmappable");
    assert_eq!(dl.stage, "sink");
    assert_eq!(dl.origin_topic.as_deref(), Some(profiles.as_str()));
    assert_eq!(dl.origin_offset, Some(p4));
    assert_eq!(dl.original, garbage);
    assert!(
        dl.message.starts_with("paid_orders:"),
        "names the field: {}",
        dl.message
    );
    drop_database(&env).await;
}
