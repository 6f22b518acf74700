//! `zt replay dlq` against the real local broker: dead letters written by a real ingest
//! with a configuration that lacks a rename, replayed with the fixed configuration.
//! Oracles: the broker's offsets and records, events a correctly configured ingest
//! publishes for the same input, and hand-computed event times.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use serde_json::{Value, json};
use zt_ingest::config::{IngestConfig, Mapping};
use zt_integration_tests::ingest::*;
use zt_integration_tests::unique;
use zt_kafka::KafkaConfig;
use zt_model::pii::PiiHasher;
use zt_model::*;
use zt_ops::{Filter, Marker, Outcome, ReplayParams, RunOptions, RunReport};

fn fixture(rel: &str) -> Vec<u8> {
    let path = format!("{}/fixtures/{rel}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// The ERP variant's mapping (docs/sources/erp.md); without `order_no → order_id` when
/// `fixed` is false, so every variant record is refused with `missing_field order_id`.
fn variant_mapping(fixed: bool) -> Mapping {
    zt_integration_tests::ingest::erp_variant_mapping(fixed)
}

fn erp_config(fixed: bool) -> IngestConfig {
    let mut cfg = ingest_config();
    cfg.sources.get_mut("erp").unwrap().mapping = variant_mapping(fixed);
    cfg
}

fn params(ing: &TestIngest, ingest: IngestConfig) -> ReplayParams {
    ReplayParams {
        kafka: ing.kafka.clone(),
        topics: ing.topics.clone(),
        ingest,
        hasher: PiiHasher::new(SALT.as_bytes(), "86").unwrap(),
    }
}

async fn replay(p: &ReplayParams, opts: RunOptions) -> RunReport {
    let r = zt_ops::run(p, &opts).await.unwrap();
    assert!(r.ok(), "{r:?}");
    r
}

/// Records on `topic` by the broker's offsets: the sum of the partitions' high watermarks
/// (the test topics are never truncated, so low watermarks are 0).
fn end_offsets(kafka: &KafkaConfig, topic: &str) -> i64 {
    let c: BaseConsumer = zt_kafka::client::base_config(kafka)
        .unwrap()
        .set("group.id", unique("zt-it-offsets"))
        .create()
        .unwrap();
    let md = c
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    md.topics()[0]
        .partitions()
        .iter()
        .map(|p| {
            let (lo, hi) = c
                .fetch_watermarks(topic, p.id(), Duration::from_secs(10))
                .unwrap();
            assert_eq!(lo, 0);
            hi
        })
        .sum()
}

/// The once-check: every event id on a topic appears once. `Err` lists the repeated ids.
fn once(events: &[Event]) -> Result<(), Vec<String>> {
    let mut n: BTreeMap<&str, usize> = BTreeMap::new();
    for e in events {
        *n.entry(e.event_id.as_str()).or_default() += 1;
    }
    let repeated: Vec<String> = n
        .into_iter()
        .filter(|(_, c)| *c > 1)
        .map(|(id, _)| id.to_owned())
        .collect();
    if repeated.is_empty() {
        Ok(())
    } else {
        Err(repeated)
    }
}

/// Events with the receive-time dependent fields zeroed, by id.
fn by_id(events: Vec<Event>) -> BTreeMap<String, Event> {
    events
        .into_iter()
        .map(|mut e| {
            e.received_at = 0;
            e.event_time = 0;
            (e.event_id.clone(), e)
        })
        .collect()
}

fn markers(ing: &TestIngest) -> HashMap<String, Marker> {
    ing.records(&ing.topics.dlq_replays())
        .into_iter()
        .map(|(k, v, _, _)| {
            (
                String::from_utf8(k).unwrap(),
                serde_json::from_slice::<Marker>(&v).unwrap(),
            )
        })
        .collect()
}

fn count(r: &RunReport, o: Outcome) -> usize {
    r.outcomes.get(&o).copied().unwrap_or(0)
}

/// The main scenario: a mapping without a rename dead-letters a variant's records; the
/// fixed mapping replays them. Dry run first (nothing produced), then a run that publishes
/// each event once with the content a correctly configured ingest gives, keeps what still
/// fails (a new dead letter only where the reason changed), a second run and a
/// `--retry-failed` run that publish nothing; finally the negative control: with the
/// markers ignored the events are published twice and the once-check catches it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_after_a_mapping_fix_publishes_each_event_once() {
    let key = key_of(Source::Erp);
    let path = "/v1/sources/erp/events";
    let bad = start(erp_config(false)).await;
    let good = start(erp_config(true)).await;

    let mut records: Vec<Value> =
        serde_json::from_slice(&fixture("sources/erp_variant.json")).unwrap();
    assert_eq!(records.len(), 4);
    // Still refused for the same reason after the fix: it has no order number at all.
    records.push(json!({"msg_id": "erp-0618-0005", "type": "order.paid",
        "biz_time": "2026-06-18 10:00:00", "cust_no": "C1", "pay_amount": "10.00"}));
    // Refused for another reason after the fix: its amount is not an amount.
    records.push(json!({"msg_id": "erp-0618-0006", "type": "order.paid",
        "biz_time": "2026-06-18 10:00:00", "order_no": "JD-6", "cust_no": "C1", "pay_amount": "abc"}));
    let r = bad
        .post(
            path,
            Some(&key),
            Value::Array(records.clone()).to_string().as_bytes(),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["accepted"], 0, "{}", r.body);
    let dls = bad.dead_letters();
    assert_eq!(dls.len(), 6);
    assert!(
        dls.iter()
            .all(|d| (d.reason.as_str(), d.field.as_deref()) == ("missing_field", Some("order_id"))),
        "{dls:?}"
    );
    let dl_of = |msg_id: &str| -> DeadLetter {
        dls.iter()
            .find(|d| serde_json::from_slice::<Value>(&d.original).unwrap()["msg_id"] == msg_id)
            .unwrap()
            .clone()
    };
    assert!(
        !String::from_utf8_lossy(&dl_of("erp-0618-0001").original).contains("1234-5678"),
        "the renamed phone field is hashed in the dead letter"
    );

    // What a correctly configured ingest publishes for the same four records.
    let r = good
        .post(
            path,
            Some(&key),
            Value::Array(records[..4].to_vec()).to_string().as_bytes(),
        )
        .await;
    assert_eq!(r.json()["accepted"], 4, "{}", r.body);
    let reference = by_id(good.events(Source::Erp));
    assert_eq!(reference.len(), 4);

    let events_topic = bad.topics.events(Source::Erp);
    let dlq = bad.topics.dlq();
    let marks = bad.topics.dlq_replays();
    let fixed = params(&bad, erp_config(true));

    // Dry run: the same report, nothing produced.
    let dry = replay(
        &fixed,
        RunOptions {
            dry_run: true,
            ..RunOptions::default()
        },
    )
    .await;
    assert_eq!(
        (
            count(&dry, Outcome::Published),
            count(&dry, Outcome::Failed)
        ),
        (4, 2)
    );
    assert_eq!(dry.published.get("erp"), Some(&4));
    assert_eq!(dry.new_dead_letters, 1);
    assert_eq!(
        (
            end_offsets(&bad.kafka, &events_topic),
            end_offsets(&bad.kafka, &dlq),
            end_offsets(&bad.kafka, &marks)
        ),
        (0, 6, 0),
        "a dry run produces nothing"
    );

    // The replay.
    let before = now_ms();
    let first = replay(&fixed, RunOptions::default()).await;
    assert_eq!(first.selected, 6);
    assert_eq!(
        (
            count(&first, Outcome::Published),
            count(&first, Outcome::Partial),
            count(&first, Outcome::Failed)
        ),
        (4, 0, 2)
    );
    assert_eq!(first.published.get("erp"), Some(&4));
    assert_eq!(first.new_dead_letters, 1);
    assert_eq!(
        first.still_failing,
        BTreeMap::from([
            (("invalid_value".to_owned(), Some("total".to_owned())), 1),
            (("missing_field".to_owned(), Some("order_id".to_owned())), 1),
        ])
    );
    assert_eq!(end_offsets(&bad.kafka, &events_topic), 4);
    let events = bad.events(Source::Erp);
    once(&events).unwrap();
    // Exactly the events the correctly configured ingest published ...
    assert_eq!(by_id(events.clone()), reference);
    // ... received when ingest first received them, skew-corrected against that time.
    for e in &events {
        let d = dl_of(&e.event_id);
        assert_eq!(e.received_at, d.received_at, "{}", e.event_id);
        assert!(e.received_at < before);
        assert_eq!(
            e.event_time,
            corrected_event_time(e.occurred_at, e.sent_at, d.received_at),
            "{}",
            e.event_id
        );
    }
    assert!(
        events.iter().any(|e| e.sent_at.is_some()),
        "the skew correction is exercised"
    );
    // The record whose reason changed has a new dead letter; the other one has none.
    let after = bad.dead_letters();
    assert_eq!(after.len(), 7);
    let new = after
        .iter()
        .find(|d| d.reason == "invalid_value")
        .expect("a new dead letter with the new reason");
    let old = dl_of("erp-0618-0006");
    assert_eq!(
        (
            new.stage.as_str(),
            new.source.as_str(),
            new.field.as_deref()
        ),
        ("ingest", "erp", Some("total"))
    );
    assert_eq!(new.original, old.original, "the same bytes");
    assert_eq!(new.received_at, old.received_at);
    assert_ne!(new.dlq_id, old.dlq_id);
    // One marker per replayed dead letter, after the events.
    let m = markers(&bad);
    assert_eq!(m.len(), 6);
    for id in [
        "erp-0618-0001",
        "erp-0618-0002",
        "erp-0618-0003",
        "erp-0618-0004",
    ] {
        let mk = &m[&dl_of(id).dlq_id];
        assert_eq!(
            (mk.outcome, mk.events.clone()),
            (Outcome::Published, vec![id.to_owned()])
        );
    }
    let m6 = &m[&old.dlq_id];
    assert_eq!(
        (m6.outcome, m6.reason.as_deref(), m6.dead_letters.clone()),
        (
            Outcome::Failed,
            Some("invalid_value"),
            vec![new.dlq_id.clone()]
        )
    );
    assert_eq!(m[&dl_of("erp-0618-0005").dlq_id].outcome, Outcome::Failed);
    // The list shows them.
    let list = zt_ops::list(&bad.kafka, &bad.topics, &Filter::default())
        .await
        .unwrap();
    assert_eq!((list.records, list.distinct, list.selected), (7, 7, 7));
    assert_eq!(
        list.markers,
        BTreeMap::from([(Outcome::Published, 4), (Outcome::Failed, 2)])
    );

    // Again: nothing new is published; the new dead letter is replayed and fails as it
    // did, so it gets no dead letter of its own.
    let second = replay(&fixed, RunOptions::default()).await;
    assert_eq!(second.already_replayed, 6);
    assert_eq!(
        (
            count(&second, Outcome::Published),
            count(&second, Outcome::Failed)
        ),
        (0, 1)
    );
    assert_eq!((second.new_dead_letters, second.published.len()), (0, 0));
    // And with --retry-failed: the failures are tried again, still fail, and the new
    // dead letter is not written a second time.
    let retry = replay(
        &fixed,
        RunOptions {
            retry_failed: true,
            ..RunOptions::default()
        },
    )
    .await;
    assert_eq!(count(&retry, Outcome::Failed), 3);
    assert_eq!((retry.new_dead_letters, retry.published.len()), (0, 0));
    assert_eq!(
        (
            end_offsets(&bad.kafka, &events_topic),
            end_offsets(&bad.kafka, &dlq)
        ),
        (4, 7),
        "published once, by the broker's offsets"
    );
    once(&bad.events(Source::Erp)).unwrap();

    // Negative control: without the markers the same dead letters are published again,
    // and the once-check sees it.
    let twice = replay(
        &fixed,
        RunOptions {
            ignore_markers: true,
            ..RunOptions::default()
        },
    )
    .await;
    assert_eq!(twice.published.get("erp"), Some(&4));
    assert_eq!(end_offsets(&bad.kafka, &events_topic), 8);
    let repeated = once(&bad.events(Source::Erp)).unwrap_err();
    assert_eq!(repeated.len(), 4, "{repeated:?}");

    bad.shutdown.trigger();
    good.shutdown.trigger();
}

/// A single Segment call posted to `/v1/track` (its body names no type) with `sentAt`,
/// refused because the tracker's user field is not mapped yet, replayed later: the event
/// keeps the original receive time, so the skew correction is not shifted by the delay,
/// and it is the event a correctly configured ingest publishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_segment_call_keeps_its_original_event_time() {
    let fixed_cfg = || {
        let mut cfg = ingest_config();
        cfg.sources.get_mut("tracking").unwrap().mapping.renames =
            BTreeMap::from([("uid".to_owned(), "userId".to_owned())]);
        cfg
    };
    let bad = start(ingest_config()).await;
    let good = start(fixed_cfg()).await;
    let key = key_of(Source::Tracking);
    let call = json!({
        "event": "Order Completed", "uid": "u-77", "messageId": "m-skew-1",
        "timestamp": "2026-06-18T00:15:00+08:00", "sentAt": "2026-06-18T00:15:20+08:00",
        "properties": {"order_id": "JD-1", "revenue": 12.5, "currency": "CNY"},
        "context": {"channel": "wechat_mini", "traits": {"email": "Wang.Fang@Example.cn"}}
    })
    .to_string();
    let r = bad.post("/v1/track", Some(&key), call.as_bytes()).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["rejected"][0]["field"], "userId", "{}", r.body);
    let dls = bad.dead_letters();
    assert_eq!(dls.len(), 1);
    let dl = &dls[0];
    assert_eq!(
        dl.content_type.as_deref(),
        Some("application/json; zt-call=track"),
        "the endpoint's call type is kept"
    );
    assert!(!String::from_utf8_lossy(&dl.original).contains("Example.cn"));

    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let replayed_at = now_ms();
    let report = replay(&params(&bad, fixed_cfg()), RunOptions::default()).await;
    assert_eq!(report.published.get("tracking"), Some(&1), "{report:?}");
    let events = bad.events(Source::Tracking);
    assert_eq!(events.len(), 1);
    let ev = &events[0];
    let occurred = 1_781_712_900_000; // 2026-06-17T16:15:00Z
    let sent = 1_781_712_920_000; // 20 s later by the sender's clock
    assert_eq!((ev.occurred_at, ev.sent_at), (occurred, Some(sent)));
    assert_eq!(ev.received_at, dl.received_at);
    assert_eq!(
        ev.event_time,
        occurred + (dl.received_at - sent),
        "corrected against the original receive time"
    );
    assert!(
        (occurred + (replayed_at - sent)) - ev.event_time >= 1_500,
        "the replay's own clock would have shifted it by the delay"
    );
    // The event a correctly configured ingest publishes for the same call.
    let r = good.post("/v1/track", Some(&key), call.as_bytes()).await;
    assert_eq!(r.json()["accepted"], 1, "{}", r.body);
    assert_eq!(by_id(events), by_id(good.events(Source::Tracking)));
    bad.shutdown.trigger();
    good.shutdown.trigger();
}

/// An NDJSON request refused with 429 is one dead letter holding the body; `run` replays it
/// only when its reason is named, and then publishes every line's event once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limited_request_replays_every_item() {
    let limited = |rate: u32| {
        let mut cfg = ingest_config();
        let erp = cfg.sources.get_mut("erp").unwrap();
        erp.rate_limit_per_sec = rate;
        erp.rate_limit_burst = rate;
        cfg
    };
    let ing = start(limited(1)).await;
    let reference = start(ingest_config()).await;
    let order = |id: &str, total: i64| {
        json!({"event_id": id, "type": "order.paid", "occurred_at": "2026-01-05T10:00:00+08:00",
               "order_id": format!("SO-{id}"), "customer_id": "C1001", "mobile": "139 8765 4321",
               "channel": "tmall", "currency": "CNY", "total": total,
               "lines": [{"sku": "SKU-1", "quantity": 1, "unit_price": total}]})
    };
    let key = key_of(Source::Erp);
    let path = "/v1/sources/erp/events";
    let r = ing
        .post(path, Some(&key), order("first", 100).to_string().as_bytes())
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let ndjson = format!(
        "{}\n{}\n\n{}\n",
        order("r-1", 100),
        order("r-2", 200),
        order("r-3", 300)
    );
    let auth = basic(&key);
    let headers = [
        ("Content-Type", "application/x-ndjson"),
        ("Authorization", auth.as_str()),
    ];
    let r = request(ing.addr, "POST", path, &headers, ndjson.as_bytes()).await;
    assert_eq!(r.status, 429, "{}", r.body);
    let dls = ing.dead_letters();
    assert_eq!(dls.len(), 1);
    let dl = &dls[0];
    assert_eq!(dl.reason, "rate_limited");
    assert_eq!(dl.content_type.as_deref(), Some("application/x-ndjson"));
    let kept = String::from_utf8(dl.original.clone()).unwrap();
    assert_eq!(kept.lines().filter(|l| !l.is_empty()).count(), 3, "{kept}");
    assert!(
        !kept.contains("8765") && kept.contains("zt-hashed:"),
        "{kept}"
    );

    let p = params(&ing, ingest_config());
    let events_topic = ing.topics.events(Source::Erp);
    // Not named: clients retry 429s themselves, so it is left alone.
    let unnamed = replay(&p, RunOptions::default()).await;
    assert_eq!(
        unnamed.needs_naming,
        BTreeMap::from([("rate_limited".to_owned(), 1)])
    );
    assert_eq!(unnamed.replayed(), 0);
    assert_eq!(end_offsets(&ing.kafka, &events_topic), 1);
    // Named: every item.
    let named = RunOptions {
        filter: Filter {
            reasons: vec!["rate_limited".into()],
            ..Filter::default()
        },
        ..RunOptions::default()
    };
    let report = replay(&p, named.clone()).await;
    assert_eq!(count(&report, Outcome::Published), 1);
    assert_eq!(report.published.get("erp"), Some(&3));
    assert_eq!(end_offsets(&ing.kafka, &events_topic), 4);
    let replayed: Vec<Event> = ing
        .events(Source::Erp)
        .into_iter()
        .filter(|e| e.event_id.starts_with("r-"))
        .collect();
    assert!(replayed.iter().all(|e| e.received_at == dl.received_at));
    // The events ingest publishes for the same body when it is not rate limited.
    let r = request(reference.addr, "POST", path, &headers, ndjson.as_bytes()).await;
    assert_eq!(r.json()["accepted"], 3, "{}", r.body);
    assert_eq!(by_id(replayed), by_id(reference.events(Source::Erp)));
    // Once.
    let again = replay(&p, named).await;
    assert_eq!((again.already_replayed, again.replayed()), (1, 0));
    assert_eq!(end_offsets(&ing.kafka, &events_topic), 4);
    once(&ing.events(Source::Erp)).unwrap();
    ing.shutdown.trigger();
    reference.shutdown.trigger();
}
