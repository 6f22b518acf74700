//! Producer and consumer construction.
//!
//! Producers are idempotent with `acks=all`: a delivery future resolves only when every
//! in-sync replica has the record, and librdkafka's retries cannot duplicate or reorder
//! records within a partition.
//!
//! Consumers never store offsets on their own (`enable.auto.offset.store=false`): the
//! caller stores an offset with `store_offset` once the record's work is done, and the
//! stored offsets are committed in the background (`auto_commit`) or explicitly with
//! `commit` (`auto_commit = false`). Either way a committed offset never runs ahead of the
//! work, so a crash replays at most the records after the last commit (at-least-once; the
//! sink and processors make the replay idempotent).

use rdkafka::ClientConfig;
use rdkafka::consumer::StreamConsumer;
use rdkafka::producer::FutureProducer;

use crate::config::KafkaConfig;
use crate::error::{Error, Result};

/// The settings every client shares: bootstrap list, client id, passthrough options.
pub fn base_config(cfg: &KafkaConfig) -> Result<ClientConfig> {
    cfg.validate()?;
    let mut c = ClientConfig::new();
    for (k, v) in &cfg.options {
        c.set(crate::config::librdkafka_key(k), v);
    }
    c.set("bootstrap.servers", &cfg.bootstrap_servers)
        .set("client.id", &cfg.client_id);
    Ok(c)
}

/// The full producer configuration (exposed for callers that need a custom context).
pub fn producer_config(cfg: &KafkaConfig) -> Result<ClientConfig> {
    let mut c = base_config(cfg)?;
    let p = &cfg.producer;
    c.set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", p.linger_ms.to_string())
        .set("compression.type", &p.compression)
        .set("message.timeout.ms", p.message_timeout_ms.to_string())
        .set("batch.size", p.batch_size_bytes.to_string());
    Ok(c)
}

/// An idempotent, `acks=all` producer.
pub fn build_producer(cfg: &KafkaConfig) -> Result<FutureProducer> {
    producer_config(cfg)?.create().map_err(Error::Client)
}

/// How a consumer joins its group and commits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerOptions {
    /// The consumer group.
    pub group_id: String,
    /// Commit stored offsets in the background every `auto_commit_interval_ms` (true), or
    /// only when the caller commits (false).
    pub auto_commit: bool,
}

/// The full consumer configuration (exposed for callers that need a custom context, such
/// as rebalance callbacks).
pub fn consumer_config(cfg: &KafkaConfig, opts: &ConsumerOptions) -> Result<ClientConfig> {
    if opts.group_id.trim().is_empty() {
        return Err(Error::Config {
            key: "group_id".into(),
            reason: "must not be empty".into(),
        });
    }
    let mut c = base_config(cfg)?;
    let k = &cfg.consumer;
    c.set("group.id", &opts.group_id)
        .set("enable.auto.offset.store", "false")
        .set("enable.auto.commit", opts.auto_commit.to_string())
        .set(
            "auto.commit.interval.ms",
            k.auto_commit_interval_ms.to_string(),
        )
        .set("auto.offset.reset", &k.auto_offset_reset)
        .set("session.timeout.ms", k.session_timeout_ms.to_string())
        .set("max.poll.interval.ms", k.max_poll_interval_ms.to_string())
        .set("enable.partition.eof", "false");
    Ok(c)
}

/// A consumer that stores offsets only when told.
pub fn build_consumer(cfg: &KafkaConfig, opts: &ConsumerOptions) -> Result<StreamConsumer> {
    consumer_config(cfg, opts)?.create().map_err(Error::Client)
}

/// A consumer for [`read_ranges`]: outside any group's work (`group` only names it), no
/// automatic commits, and empty fetches held at most `fetch_wait_ms` (a broker may hold
/// one for the whole wait per partition already read to its end; tansu does).
pub fn range_reader(
    cfg: &KafkaConfig,
    group: &str,
    fetch_wait_ms: u32,
) -> Result<rdkafka::consumer::BaseConsumer> {
    Ok(base_config(cfg)?
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .set("fetch.wait.max.ms", fetch_wait_ms.to_string())
        .create()?)
}

/// One partition to read: topic, partition, first offset, end offset (exclusive).
pub type Range = (String, i32, i64, i64);

/// Assigns `ranges` to `consumer` (no group: plain assignment) and reads each partition
/// from its first offset up to its end, calling `f` for every record in range. A
/// partition read to its end is paused; before returning every partition is resumed, so
/// the consumer can go on following (the suppression list does). Fails with a timeout
/// after `patience`. Blocking.
pub fn read_ranges<C: rdkafka::consumer::ConsumerContext>(
    consumer: &rdkafka::consumer::BaseConsumer<C>,
    ranges: &[Range],
    patience: std::time::Duration,
    mut f: impl FnMut(&rdkafka::message::BorrowedMessage<'_>),
) -> Result<()> {
    use rdkafka::consumer::Consumer;
    use rdkafka::{Message, Offset, TopicPartitionList};
    let deadline = std::time::Instant::now() + patience;
    let mut tpl = TopicPartitionList::new();
    let mut left = std::collections::HashMap::new();
    for (topic, p, start, end) in ranges {
        tpl.add_partition_offset(topic, *p, Offset::Offset(*start))?;
        if end > start {
            left.insert((topic.clone(), *p), *end);
        }
    }
    consumer.assign(&tpl)?;
    let mut paused = TopicPartitionList::new();
    while !left.is_empty() {
        let wait = deadline.saturating_duration_since(std::time::Instant::now());
        if wait.is_zero() {
            return Err(Error::Client(
                rdkafka::error::KafkaError::MessageConsumption(
                    rdkafka::types::RDKafkaErrorCode::OperationTimedOut,
                ),
            ));
        }
        let Some(m) = consumer.poll(wait.min(std::time::Duration::from_millis(500))) else {
            continue;
        };
        let m = m?;
        let key = (m.topic().to_owned(), m.partition());
        let Some(end) = left.get(&key).copied() else {
            continue;
        };
        if m.offset() < end {
            f(&m);
        }
        if m.offset() + 1 >= end {
            left.remove(&key);
            let mut done = TopicPartitionList::new();
            done.add_partition(&key.0, key.1);
            if consumer.pause(&done).is_ok() {
                paused.add_partition(&key.0, key.1);
            }
        }
    }
    if paused.count() > 0 {
        consumer.resume(&paused)?;
    }
    Ok(())
}

/// Partitions of `topic` per the broker's metadata; 0 when it does not exist.
pub fn partition_count<C, K>(consumer: &K, topic: &str, timeout: std::time::Duration) -> Result<i32>
where
    C: rdkafka::consumer::ConsumerContext,
    K: rdkafka::consumer::Consumer<C>,
{
    let md = consumer.fetch_metadata(Some(topic), timeout)?;
    Ok(md
        .topics()
        .iter()
        .find(|m| m.name() == topic)
        .map_or(0, |m| m.partitions().len() as i32))
}
