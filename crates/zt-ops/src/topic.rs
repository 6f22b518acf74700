//! Reading a whole topic: every partition from its low to its high watermark as they were
//! when the read started (records written meanwhile are not read). Blocking; call it from
//! `spawn_blocking`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use zt_kafka::KafkaConfig;

/// One record.
#[derive(Debug, Clone)]
pub(crate) struct Record {
    pub(crate) partition: i32,
    pub(crate) offset: i64,
    pub(crate) key: Option<Vec<u8>>,
    pub(crate) payload: Option<Vec<u8>>,
}

/// How long a read may make no progress before it fails.
const STALL: Duration = Duration::from_secs(60);

/// Every record of `topic`, ordered by partition and offset; `None` when the topic does
/// not exist.
pub(crate) fn read_all(kafka: &KafkaConfig, topic: &str) -> anyhow::Result<Option<Vec<Record>>> {
    let consumer: BaseConsumer = zt_kafka::client::base_config(kafka)?
        .set("group.id", "zt-ops-replay-reader")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        .set("allow.auto.create.topics", "false")
        .create()
        .context("creating a Kafka reader")?;
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .with_context(|| format!("metadata of {topic}"))?;
    let Some(t) = md.topics().iter().find(|t| t.name() == topic) else {
        return Ok(None);
    };
    if t.error().is_some() || t.partitions().is_empty() {
        return Ok(None);
    }
    let mut ends: BTreeMap<i32, i64> = BTreeMap::new();
    let mut tpl = TopicPartitionList::new();
    for p in t.partitions() {
        let (lo, hi) = consumer
            .fetch_watermarks(topic, p.id(), Duration::from_secs(10))
            .with_context(|| format!("watermarks of {topic}/{}", p.id()))?;
        if hi > lo {
            ends.insert(p.id(), hi);
            tpl.add_partition_offset(topic, p.id(), Offset::Offset(lo))?;
        }
    }
    let mut out = Vec::new();
    if ends.is_empty() {
        return Ok(Some(out));
    }
    consumer.assign(&tpl)?;
    let mut last_progress = Instant::now();
    while !ends.is_empty() {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                last_progress = Instant::now();
                let (p, o) = (m.partition(), m.offset());
                if ends.get(&p).is_some_and(|&hi| o < hi) {
                    out.push(Record {
                        partition: p,
                        offset: o,
                        key: m.key().map(<[u8]>::to_vec),
                        payload: m.payload().map(<[u8]>::to_vec),
                    });
                }
                if ends.get(&p).is_some_and(|&hi| o + 1 >= hi) {
                    ends.remove(&p);
                }
            }
            Some(Err(e)) => {
                // Transport errors are retried by librdkafka; only lack of progress ends
                // the read.
                tracing::warn!(topic, error = %e, "error while reading; retrying");
                std::thread::sleep(Duration::from_millis(200));
            }
            None => {
                // A partition whose last offsets hold no record (compacted away, or
                // control records) is done once the reader's position reached its end.
                if let Ok(pos) = consumer.position() {
                    for e in pos.elements() {
                        if let Offset::Offset(o) = e.offset()
                            && ends.get(&e.partition()).is_some_and(|&hi| o >= hi)
                        {
                            ends.remove(&e.partition());
                        }
                    }
                }
            }
        }
        if last_progress.elapsed() > STALL {
            anyhow::bail!(
                "reading {topic}: no progress for {} s (partitions left: {:?})",
                STALL.as_secs(),
                ends.keys().collect::<Vec<_>>()
            );
        }
    }
    consumer.unassign()?;
    out.sort_by_key(|r| (r.partition, r.offset));
    Ok(Some(out))
}
