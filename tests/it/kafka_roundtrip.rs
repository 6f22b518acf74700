//! Produce → consume through the real local broker with a consumer group and committed
//! offsets. The oracle is the broker itself: the (partition, offset) of every delivery
//! report, against which the consumed records and the group's committed offsets are
//! checked.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use zt_integration_tests::*;
use zt_kafka::topics::{CreateOutcome, TopicSpec};
use zt_kafka::{ConsumerOptions, build_consumer, build_producer, create_topics};
use zt_model::Event;

const PARTITIONS: i32 = 3;

async fn make_topic() -> String {
    let name = unique("zt.it.roundtrip").replace('_', "-");
    let spec = TopicSpec {
        name: name.clone(),
        partitions: PARTITIONS,
        replication_factor: 1,
        compacted: false,
        keep_forever: false,
        purpose: "test",
    };
    let out = create_topics(&kafka_config(), std::slice::from_ref(&spec))
        .await
        .unwrap();
    assert_eq!(out, vec![(name.clone(), CreateOutcome::Created)]);
    // Creating again is idempotent.
    let again = create_topics(&kafka_config(), &[spec]).await.unwrap();
    assert_eq!(again, vec![(name.clone(), CreateOutcome::AlreadyExists)]);
    name
}

/// Produces events `range`, returning event id → (partition, offset) from the broker's
/// acknowledgements.
async fn produce(
    producer: &FutureProducer,
    topic: &str,
    range: std::ops::Range<u32>,
) -> HashMap<String, (i32, i64)> {
    let mut acks = HashMap::new();
    for i in range {
        let ev = order_event(i);
        let bytes = zt_model::encode(&ev).unwrap();
        let delivery = producer
            .send(
                FutureRecord::to(topic).key(&ev.event_id).payload(&bytes),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(e, _)| e)
            .unwrap();
        acks.insert(ev.event_id.clone(), (delivery.partition, delivery.offset));
    }
    acks
}

/// Consumes exactly `n` records (or fails after a deadline), storing each offset after
/// "processing" it when `store` is true.
async fn consume(consumer: &StreamConsumer, n: usize, store: bool) -> Vec<(Event, i32, i64)> {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while got.len() < n {
        let msg = tokio::time::timeout_at(deadline, consumer.recv())
            .await
            .expect("records arrive before the deadline")
            .unwrap();
        let ev: Event = zt_model::decode(msg.payload().unwrap()).unwrap();
        assert_eq!(msg.key(), Some(ev.event_id.as_bytes()));
        got.push((ev, msg.partition(), msg.offset()));
        if store {
            consumer.store_offset_from_message(&msg).unwrap();
        }
    }
    got
}

/// Committed offset per partition of `group` on `topic`, read by a fresh client.
fn committed(group: &str, topic: &str) -> BTreeMap<i32, Offset> {
    let c = build_consumer(
        &kafka_config(),
        &ConsumerOptions {
            group_id: group.into(),
            auto_commit: false,
        },
    )
    .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition(topic, p);
    }
    c.committed_offsets(tpl, Duration::from_secs(10))
        .unwrap()
        .elements()
        .iter()
        .map(|e| (e.partition(), e.offset()))
        .collect()
}

/// Next offset to read per partition according to the broker's acknowledgements.
fn expected_next(acks: &HashMap<String, (i32, i64)>) -> BTreeMap<i32, Offset> {
    let mut next: BTreeMap<i32, Offset> = (0..PARTITIONS).map(|p| (p, Offset::Invalid)).collect();
    for &(p, o) in acks.values() {
        let cur = match next[&p] {
            Offset::Offset(x) => x,
            _ => -1,
        };
        if o + 1 > cur {
            next.insert(p, Offset::Offset(o + 1));
        }
    }
    next
}

fn group_consumer(group: &str, topic: &str) -> StreamConsumer {
    let c = build_consumer(
        &kafka_config(),
        &ConsumerOptions {
            group_id: group.into(),
            auto_commit: false,
        },
    )
    .unwrap();
    c.subscribe(&[topic]).unwrap();
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_consume_commit_and_resume() {
    let topic = make_topic().await;
    let producer = build_producer(&kafka_config()).unwrap();
    let first = produce(&producer, &topic, 0..60).await;
    assert_eq!(first.len(), 60);

    let group = unique("zt-it-group");
    {
        let c = group_consumer(&group, &topic);
        let got = consume(&c, 60, true).await;
        for (ev, p, o) in &got {
            assert_eq!(
                first[&ev.event_id],
                (*p, *o),
                "consumed where the broker acked"
            );
            let i: u32 = ev.event_id[4..].parse().unwrap();
            assert_eq!(ev, &order_event(i), "decoded event equals the produced one");
        }
        c.commit_consumer_state(CommitMode::Sync).unwrap();
    }
    assert_eq!(committed(&group, &topic), expected_next(&first));

    // A new member of the same group resumes after the committed offsets: it sees only
    // what was produced since.
    let second = produce(&producer, &topic, 60..70).await;
    let c = group_consumer(&group, &topic);
    let got = consume(&c, 10, true).await;
    let mut ids: Vec<&str> = got.iter().map(|(e, _, _)| e.event_id.as_str()).collect();
    ids.sort();
    let mut want: Vec<&str> = second.keys().map(String::as_str).collect();
    want.sort();
    assert_eq!(ids, want);
    assert!(
        tokio::time::timeout(Duration::from_secs(3), c.recv())
            .await
            .is_err(),
        "nothing beyond the new records is delivered"
    );
    c.commit_consumer_state(CommitMode::Sync).unwrap();
    let mut all = first;
    all.extend(second);
    assert_eq!(committed(&group, &topic), expected_next(&all));
}

/// Negative control: a consumer that never stores offsets commits nothing, so the same
/// check as above fails and a restarted member reads everything again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_not_stored_are_not_committed() {
    let topic = make_topic().await;
    let producer = build_producer(&kafka_config()).unwrap();
    let acks = produce(&producer, &topic, 0..20).await;

    let group = unique("zt-it-nostore");
    {
        let c = group_consumer(&group, &topic);
        consume(&c, 20, false).await;
        // Nothing stored: the commit has nothing to commit (librdkafka says so) and the
        // group's offsets stay unset.
        let _ = c.commit_consumer_state(CommitMode::Sync);
    }
    let got = committed(&group, &topic);
    assert_ne!(
        got,
        expected_next(&acks),
        "the oracle check catches missing commits"
    );
    assert!(got.values().all(|o| *o == Offset::Invalid), "{got:?}");

    let c = group_consumer(&group, &topic);
    let again = consume(&c, 20, false).await;
    assert_eq!(again.len(), 20, "everything is read again");
}
