//! Erasure (`zt erase`, docs/erasure.md) on the whole pipeline, and that nothing brings
//! the erased person back.
//!
//! The real components run as child processes (`zt_demo::demo::Pipeline`) on fresh topics
//! and a fresh database; a small seeded world goes in over HTTP. One customer is erased
//! by the phone number their CRM registration carried (raw, as an operator would type
//! it, on `zt erase --stdin`). The oracle is ClickHouse before the erasure: the rows that name the customer's
//! person, customer id or identifiers (must be there before, none after) and every other
//! row (unchanged). Then:
//!
//! - the audit record and the suppression list hold none of the person's values;
//! - the profile topic's latest record for the person is a tombstone;
//! - a client re-sends the customer's records: acknowledged, not published (ingest's
//!   `zt_ingest_events_suppressed_total`), nothing comes back after the pipeline drains;
//! - a dead letter holding the customer's registration is replayed (`zt replay dlq run`):
//!   not published, while a control dead letter of another customer is;
//! - ClickHouse is rebuilt from the topics (a new sink group into a new database): every
//!   other row comes back, the erased person's do not (the control: the first load, by
//!   the same sink, had them).

mod sink_support;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use clickhouse::Client;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};
use serde_json::Value;
use sink_support::{run_zt as zt, run_zt_with_stdin as zt_with_stdin, start_pipeline, zt_binary};
use zt_demo::demo::stages;
use zt_demo::drain::{Stage, wait_drained};
use zt_demo::scenario::{Params, generate};
use zt_demo::send::{SendOptions, send};
use zt_integration_tests::kafka_config;
use zt_kafka::KafkaConfig;
use zt_model::{DeadLetter, Source};
use zt_sink::config::ClickHouseConfig;

/// The person tables and how a row names the erased customer.
const TABLES: [(&str, &str); 9] = [
    (
        "events",
        "person_id IN ({p}) OR crm_customer_id = '{c}' OR phone_hash = '{h}'",
    ),
    (
        "orders",
        "person_id IN ({p}) OR crm_customer_id = '{c}' OR phone_hash = '{h}'",
    ),
    (
        "order_lines",
        "person_id IN ({p}) OR crm_customer_id = '{c}'",
    ),
    ("shipments", "person_id IN ({p}) OR crm_customer_id = '{c}'"),
    ("tickets", "person_id IN ({p}) OR crm_customer_id = '{c}'"),
    (
        "customers",
        "person_id IN ({p}) OR customer_id = '{c}' OR phone_hash = '{h}'",
    ),
    (
        "identity_links",
        "person_id IN ({p}) OR id_value IN ('{c}', '{h}')",
    ),
    (
        "profiles",
        "person_id IN ({p}) OR crm_customer_id = '{c}' OR phone_hash = '{h}'",
    ),
    ("funnel_progress", "person_id IN ({p})"),
];

async fn count(ch: &Client, sql: &str) -> u64 {
    let rows = zt_report::query_rows(ch, sql).await.expect(sql);
    rows.first()
        .and_then(|r| r.get("n"))
        .and_then(|v| match v {
            Value::String(s) => s.parse().ok(),
            v => v.as_u64(),
        })
        .unwrap_or(0)
}

/// Per table: (the victim's rows, every other row).
async fn census(
    ch: &Client,
    persons: &str,
    customer: &str,
    phone_hash: &str,
) -> BTreeMap<String, (u64, u64)> {
    let mut out = BTreeMap::new();
    for (t, cond) in TABLES {
        let cond = cond
            .replace("{p}", persons)
            .replace("{c}", customer)
            .replace("{h}", phone_hash);
        let victim = count(ch, &format!("SELECT count() AS n FROM {t} WHERE {cond}")).await;
        let others = count(
            ch,
            &format!("SELECT count() AS n FROM {t} WHERE NOT ({cond})"),
        )
        .await;
        out.insert(t.to_owned(), (victim, others));
    }
    out
}

/// Every (key, value) on `topic`, from the beginning to the high watermark.
fn read_all(kafka: &KafkaConfig, topic: &str) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
    let c: BaseConsumer = zt_kafka::client::base_config(kafka)
        .unwrap()
        .set("group.id", "zt-it-erasure-reader")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let md = c
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let n = md.topics()[0].partitions().len() as i32;
    let mut tpl = TopicPartitionList::new();
    let mut left = 0i64;
    for p in 0..n {
        let (lo, hi) = c
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .unwrap();
        left += hi - lo;
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    c.assign(&tpl).unwrap();
    let mut out = Vec::new();
    while left > 0 {
        let m = c
            .poll(Duration::from_secs(10))
            .expect("a record before the high watermark")
            .unwrap();
        out.push((
            m.key().unwrap_or_default().to_vec(),
            m.payload().map(<[u8]>::to_vec),
        ));
        left -= 1;
    }
    out
}

fn high(kafka: &KafkaConfig, topic: &str) -> i64 {
    zt_demo::drain::watermarks(kafka, topic)
        .unwrap()
        .values()
        .map(|(_, h)| h)
        .sum()
}

fn dead_letter(id: &str, record: &Value) -> DeadLetter {
    let now = zt_demo::now_ms();
    DeadLetter {
        dlq_id: id.into(),
        stage: "ingest".into(),
        source: "crm".into(),
        reason: "rate_limited".into(),
        field: None,
        message: "rate limit exceeded".into(),
        original: serde_json::to_vec(record).unwrap(),
        content_type: Some("application/json".into()),
        received_at: now,
        failed_at: now,
        origin_topic: None,
        origin_partition: None,
        origin_offset: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erased_person_does_not_come_back_through_replays_or_a_reload() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kafka = kafka_config();
    let (mut pipeline, config) = start_pipeline(dir.path(), "zt_erase_it").await;
    let ch_cfg = pipeline.clickhouse.clone();
    let db = ch_cfg.database.clone();
    let t = pipeline.topics.clone();
    let world = generate(Params::new(31, 40, 14, pipeline.started_ms));
    let opts = SendOptions {
        url: pipeline.ingest_url.clone(),
        keys: pipeline.keys.clone(),
        batch: 100,
        rate: Some(800.0),
        progress: false,
        record_acks: false,
        progress_counter: None,
    };
    let sent = send(&world.records, &opts).await.expect("send");
    assert_eq!(sent.rejected, 0, "{:?}", sent.first_rejections);
    let drain = |kafka: KafkaConfig, stages: Vec<Stage>| async move {
        wait_drained(
            &kafka,
            &stages,
            Duration::from_secs(240),
            Duration::from_secs(1),
            |_| {},
        )
        .await
        .expect("the pipeline drains");
    };
    drain(kafka.clone(), stages(&t)).await;

    // The victim: a customer whose CRM registration carried a phone number, with orders.
    let ch = pipeline.clickhouse.client();
    let registration = world
        .records
        .iter()
        .filter(|r| r.source == Source::Crm)
        .map(|r| &r.body)
        .find(|b| {
            b["mobile"].is_string()
                && world
                    .records
                    .iter()
                    .any(|o| o.source == Source::Erp && o.body["customer_id"] == b["customer_id"])
        })
        .expect("a registered customer with orders")
        .clone();
    let customer = registration["customer_id"].as_str().unwrap().to_owned();
    let phone = registration["mobile"].as_str().unwrap().to_owned();
    let hash_rows = zt_report::query_rows(
        &ch,
        &format!("SELECT phone_hash, person_id FROM customers WHERE customer_id = '{customer}' AND phone_hash != '' LIMIT 1"),
    )
    .await
    .unwrap();
    let phone_hash = hash_rows[0]["phone_hash"].as_str().unwrap().to_owned();
    let persons: Vec<String> = zt_report::query_rows(
        &ch,
        &format!(
            "SELECT DISTINCT person_id FROM identity_links FINAL WHERE id_value IN ('{customer}', '{phone_hash}')"
        ),
    )
    .await
    .unwrap()
    .iter()
    .filter_map(|r| r["person_id"].as_str().map(str::to_owned))
    .collect();
    assert!(!persons.is_empty() && !phone_hash.is_empty());
    // Persons merged into the victim's live ones keep their own ids on older events.
    let mut persons = persons;
    loop {
        let list = persons
            .iter()
            .map(|p| format!("'{p}'"))
            .collect::<Vec<_>>()
            .join(",");
        let more: Vec<String> = zt_report::query_rows(
            &ch,
            &format!(
                "SELECT from_person AS p FROM identity_merges FINAL WHERE into_person IN ({list})"
            ),
        )
        .await
        .unwrap()
        .iter()
        .filter_map(|r| r["p"].as_str().map(str::to_owned))
        .filter(|p| !persons.contains(p))
        .collect();
        if more.is_empty() {
            break;
        }
        persons.extend(more);
    }
    let plist = persons
        .iter()
        .map(|p| format!("'{p}'"))
        .collect::<Vec<_>>()
        .join(",");
    let before = census(&ch, &plist, &customer, &phone_hash).await;
    for t in [
        "events",
        "orders",
        "customers",
        "identity_links",
        "profiles",
    ] {
        assert!(
            before[t].0 > 0,
            "control: the victim has {t} rows before: {before:?}"
        );
    }

    // Erase by the raw phone number.
    // The phone goes in on standard input, off the command line.
    let out = zt_with_stdin(
        &config,
        &["erase", "--stdin", "--yes"],
        &format!("# erasure request\nphone {phone}\n"),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "zt erase failed\n{stdout}\n{stderr}");
    for secret in [&phone, &phone_hash, &customer] {
        assert!(
            !stdout.contains(secret.as_str()) && !stderr.contains(secret.as_str()),
            "zt erase printed a personal value"
        );
    }
    let after = census(&ch, &plist, &customer, &phone_hash).await;
    for (t, (victim, others)) in &after {
        assert_eq!(*victim, 0, "{t}: the victim's rows are gone");
        assert_eq!(*others, before[t].1, "{t}: every other row stays");
    }

    // Audit and suppression records: no personal value; the profile is a tombstone.
    let audit = read_all(&kafka, &t.erasures());
    assert_eq!(audit.len(), 1, "one audit record");
    let suppressions = read_all(&kafka, &t.suppressions());
    assert!(
        suppressions.len() >= 3,
        "persons and identifiers suppressed"
    );
    for (k, v) in audit.iter().chain(&suppressions) {
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(k),
            String::from_utf8_lossy(v.as_deref().unwrap_or_default())
        );
        for secret in persons.iter().chain([&phone, &phone_hash, &customer]) {
            assert!(
                !text.contains(secret.as_str()),
                "a personal value on the wire: {text}"
            );
        }
    }
    let profiles = read_all(&kafka, &t.profiles());
    for p in &persons {
        let last = profiles.iter().rev().find(|(k, _)| k == p.as_bytes());
        if let Some((_, v)) = last {
            assert!(
                v.is_none(),
                "the latest profile record of an erased person is a tombstone"
            );
        }
    }

    // A client re-sends the customer's records.
    let theirs: Vec<_> = world
        .records
        .iter()
        .filter(|r| r.body["customer_id"].as_str() == Some(customer.as_str()))
        .cloned()
        .collect();
    assert!(!theirs.is_empty());
    let resent = send(&theirs, &opts).await.expect("send again");
    assert_eq!(resent.accepted, theirs.len() as u64, "acknowledged");
    let ingest_port = pipeline
        .admin_ports
        .iter()
        .find(|(n, _)| n == "ingest")
        .unwrap()
        .1;
    let metrics = http_get_body(ingest_port, "/metrics");
    let suppressed: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("zt_ingest_events_suppressed_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(
        suppressed >= 1.0,
        "ingest counted suppressed events:\n{metrics}"
    );

    // Dead letters: the victim's registration, and a control of a new customer.
    let mut control = registration.clone();
    control["customer_id"] = Value::String(format!("{customer}-control"));
    control["mobile"] = Value::String("13900000000".into());
    if control.get("email").is_some() {
        control["email"] = Value::String("control@example.cn".into());
    }
    if let Some(id) = control.get("event_id").and_then(Value::as_str) {
        control["event_id"] = Value::String(format!("{id}-control"));
    }
    let producer: FutureProducer = zt_kafka::build_producer(&kafka).unwrap();
    for dl in [
        dead_letter("it-erase-victim", &registration),
        dead_letter("it-erase-control", &control),
    ] {
        let bytes = zt_model::encode(&dl).unwrap();
        producer
            .send(
                FutureRecord::to(&t.dlq()).key(&dl.dlq_id).payload(&bytes),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }
    let crm_before = high(&kafka, &t.events(Source::Crm));
    let out = zt(
        &config,
        &[
            "replay",
            "dlq",
            "run",
            "--reason",
            "rate_limited",
            "--quiet",
        ],
        &[],
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "zt replay dlq run failed\n{text}");
    assert!(text.contains("of erased persons, never: 1"), "{text}");
    assert_eq!(
        high(&kafka, &t.events(Source::Crm)) - crm_before,
        1,
        "the control dead letter is published, the victim's is not"
    );
    drain(kafka.clone(), stages(&t)).await;
    let replayed = census(&ch, &plist, &customer, &phone_hash).await;
    for (t, (victim, _)) in &replayed {
        assert_eq!(*victim, 0, "{t}: nothing came back after the replays");
    }

    // Rebuild ClickHouse from the topics: a new sink group into a new database.
    let db2 = format!("{db}_reload");
    let env2 = [
        ("ZT__CLICKHOUSE__DATABASE", db2.as_str()),
        ("ZT__SINK__GROUP_ID", "it-erase-reload"),
    ];
    let out = zt(&config, &["migrate"], &env2);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The reload sink, restarted (as an orchestrator would) when it has not drained after
    // 90 s: on the loaded local tansu a new group's member was seen holding part of its
    // partitions for minutes (docs/reliability.md). The restart is a new client, which
    // re-reads nothing it stored: the sink's resume is exact.
    let sink_stage = stages(&t).into_iter().find(|s| s.name == "sink").unwrap();
    let reload_stage = vec![Stage {
        name: "reload".into(),
        group: "it-erase-reload".into(),
        topics: sink_stage.topics,
    }];
    let mut drained = false;
    for _attempt in 0..3 {
        let port = zt_demo::demo::free_port().unwrap();
        let mut reload = Command::new(zt_binary())
            .arg("--config")
            .arg(&config)
            .arg("sink")
            .envs(env2)
            .env("ZT__ADMIN__LISTEN", format!("127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        drained = wait_drained(
            &kafka,
            &reload_stage,
            Duration::from_secs(90),
            Duration::from_secs(1),
            |_| {},
        )
        .await
        .is_ok();
        let _ = reload.kill();
        let _ = reload.wait();
        if drained {
            break;
        }
    }
    assert!(drained, "the reload sink drained");
    let ch2 = ClickHouseConfig {
        database: db2.clone(),
        ..ch_cfg.clone()
    }
    .client();
    let reloaded = census(&ch2, &plist, &customer, &phone_hash).await;
    assert_eq!(
        reloaded["events"].0, 0,
        "the reload brought no event of the erased person back"
    );
    for (t, (victim, others)) in &reloaded {
        assert_eq!(*victim, 0, "{t}: the reload brought the erased person back");
        assert!(
            *others > 0 || before[t].1 == 0,
            "{t}: the reload loaded the others"
        );
    }
    assert_eq!(
        reloaded["events"].1,
        after["events"].1 + 1,
        "every other event reloaded (and the control dead letter's)"
    );

    pipeline.stop();
    for d in [&db, &db2] {
        let _ = ch
            .query(&format!("DROP DATABASE IF EXISTS {d}"))
            .execute()
            .await;
    }
}

/// A plain HTTP/1.0 GET on 127.0.0.1; the body.
fn http_get_body(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).unwrap();
    buf.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or(buf)
}
