//! Harness for the ingest tests: an in-process `zt ingest` on a loopback port with its own
//! topic prefix on the local broker, write keys for every source, a minimal HTTP client,
//! and readers that fetch exactly what a topic holds (from the beginning to the high
//! watermark, so the broker's offsets are the oracle).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use zt_ingest::config::{IngestConfig, SourceConfig, WriteKey};
use zt_ingest::{IngestDeps, auth::hash_key};
use zt_kafka::{KafkaConfig, TopicsConfig, create_topics, platform_topics};
use zt_model::pii::PiiHasher;
use zt_model::{DeadLetter, Event, Source};
use zt_runtime::{Health, Metrics, Shutdown};

use crate::{kafka_config, unique};

/// The salt the test services hash with.
pub const SALT: &str = "test-salt";

/// The write key of `source` in test services.
pub fn key_of(source: Source) -> String {
    format!("{source}-test-key")
}

/// Ingest settings with a key per source and the defaults of `config/defaults.toml`.
pub fn ingest_config() -> IngestConfig {
    let sources = Source::ALL
        .into_iter()
        .map(|s| {
            (
                s.as_str().to_owned(),
                SourceConfig {
                    write_keys: vec![WriteKey {
                        id: format!("{s}-test"),
                        sha256: hash_key(&key_of(s)),
                    }],
                    ..Default::default()
                },
            )
        })
        .collect();
    IngestConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        max_event_bytes: 32 * 1024,
        max_batch_bytes: 512_000,
        max_batch_events: 2500,
        dedup_window_secs: 86_400,
        dedup_max_entries: 100_000,
        dedup_restore_secs: 3_600,
        publish_timeout_ms: 5_000,
        private_domain_channels: vec!["wechat_group".into(), "wecom".into()],
        sources,
    }
}

/// A running test ingest.
#[derive(Debug)]
pub struct TestIngest {
    /// Public address.
    pub addr: SocketAddr,
    /// Its topics.
    pub topics: TopicsConfig,
    /// Its Kafka settings.
    pub kafka: KafkaConfig,
    /// Its metrics registry.
    pub metrics: Metrics,
    /// Its health (readiness of the broker check).
    pub health: Health,
    /// Stops it.
    pub shutdown: Shutdown,
}

/// Topics named with a fresh prefix, created on the broker of `kafka`.
pub async fn fresh_topics(kafka: &KafkaConfig, partitions: i32) -> TopicsConfig {
    let topics = TopicsConfig {
        prefix: unique("zt-it").replace('_', "-"),
        partitions,
        replication_factor: 1,
        partition_overrides: BTreeMap::new(),
        profiles_version: 1,
        funnels_version: 1,
    };
    create_topics(kafka, &platform_topics(&topics))
        .await
        .unwrap();
    topics
}

/// Starts ingest against the local broker with fresh topics.
pub async fn start(cfg: IngestConfig) -> TestIngest {
    let kafka = kafka_config();
    let topics = fresh_topics(&kafka, 2).await;
    start_with(cfg, kafka, topics).await
}

/// Starts ingest with the given Kafka settings and topics.
pub async fn start_with(cfg: IngestConfig, kafka: KafkaConfig, topics: TopicsConfig) -> TestIngest {
    let metrics = Metrics::new("ingest");
    let shutdown = Shutdown::new();
    let deps = IngestDeps {
        ingest: cfg,
        kafka: kafka.clone(),
        topics: topics.clone(),
        hasher: PiiHasher::new(SALT.as_bytes(), "86").unwrap(),
    };
    let health = Health::new();
    let running = zt_ingest::start(deps, &metrics, &health, shutdown.clone())
        .await
        .unwrap();
    TestIngest {
        addr: running.addr,
        topics,
        kafka,
        metrics,
        health,
        shutdown,
    }
}

/// An HTTP response.
#[derive(Debug)]
pub struct Resp {
    /// Status code.
    pub status: u16,
    /// Header lines, lower-cased names.
    pub headers: Vec<(String, String)>,
    /// Body text.
    pub body: String,
}

impl Resp {
    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// HTTP/1.1 request over a fresh connection.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Resp {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Resp {
        status,
        headers,
        body,
    }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((len, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(len.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// `Authorization: Basic base64(key:)` as Segment SDKs send it.
pub fn basic(key: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{key}:"))
    )
}

impl TestIngest {
    /// POSTs JSON with `source`'s key.
    pub async fn post(&self, path: &str, key: Option<&str>, body: &[u8]) -> Resp {
        let auth = key.map(basic);
        let mut headers = vec![("Content-Type", "application/json")];
        if let Some(a) = &auth {
            headers.push(("Authorization", a.as_str()));
        }
        request(self.addr, "POST", path, &headers, body).await
    }

    /// Every record on `topic` (key, raw value, partition, offset).
    pub fn records(&self, topic: &str) -> Vec<(Vec<u8>, Vec<u8>, i32, i64)> {
        read_topic(&self.kafka, topic)
    }

    /// Every canonical event on the events topic of `source`. No record may be stamped
    /// before its event was received.
    pub fn events(&self, source: Source) -> Vec<Event> {
        self.stamped_events(source)
            .into_iter()
            .map(|(ev, timestamp)| {
                assert!(
                    timestamp.is_some_and(|t| t >= ev.received_at),
                    "event {} received at {} has the record timestamp {timestamp:?}",
                    ev.event_id,
                    ev.received_at
                );
                ev
            })
            .collect()
    }

    /// Every canonical event on the events topic of `source`, with its record's timestamp
    /// (ms since the epoch).
    pub fn stamped_events(&self, source: Source) -> Vec<(Event, Option<i64>)> {
        read_topic_stamped(&self.kafka, &self.topics.events(source))
            .into_iter()
            .map(|((_, v, _, _), timestamp)| (zt_model::decode::<Event>(&v).unwrap(), timestamp))
            .collect()
    }

    /// Every dead letter.
    pub fn dead_letters(&self) -> Vec<DeadLetter> {
        self.records(&self.topics.dlq())
            .into_iter()
            .map(|(_, v, _, _)| zt_model::decode::<DeadLetter>(&v).unwrap())
            .collect()
    }
}

/// Reads a topic from the beginning to the high watermark of each partition.
pub fn read_topic(kafka: &KafkaConfig, topic: &str) -> Vec<(Vec<u8>, Vec<u8>, i32, i64)> {
    read_topic_stamped(kafka, topic)
        .into_iter()
        .map(|(record, _)| record)
        .collect()
}

/// A record read back: key, value, partition, offset.
type ReadRecord = (Vec<u8>, Vec<u8>, i32, i64);

/// [`read_topic`] with each record's timestamp (ms since the epoch, when it has one).
pub fn read_topic_stamped(kafka: &KafkaConfig, topic: &str) -> Vec<(ReadRecord, Option<i64>)> {
    let consumer: BaseConsumer = zt_kafka::client::base_config(kafka)
        .unwrap()
        .set("group.id", unique("zt-it-reader"))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let partitions: Vec<i32> = md.topics()[0].partitions().iter().map(|p| p.id()).collect();
    let mut ends = BTreeMap::new();
    let mut tpl = TopicPartitionList::new();
    for &p in &partitions {
        let (lo, hi) = consumer
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .unwrap();
        if hi > lo {
            ends.insert(p, hi);
            tpl.add_partition_offset(topic, p, Offset::Offset(lo))
                .unwrap();
        }
    }
    let mut out = Vec::new();
    if ends.is_empty() {
        return out;
    }
    consumer.assign(&tpl).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !ends.is_empty() && std::time::Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            out.push((
                (
                    m.key().unwrap_or_default().to_vec(),
                    m.payload().unwrap_or_default().to_vec(),
                    m.partition(),
                    m.offset(),
                ),
                m.timestamp().to_millis(),
            ));
            if ends
                .get(&m.partition())
                .is_some_and(|&hi| m.offset() + 1 >= hi)
            {
                ends.remove(&m.partition());
            }
        }
    }
    assert!(
        ends.is_empty(),
        "read {topic} to its high watermarks in time"
    );
    out.sort_by_key(|(r, _)| (r.2, r.3));
    out
}

/// The mapping of the ERP variant (docs/sources/erp.md), optionally without the
/// `order_no → order_id` rename (every variant record is then refused with
/// `missing_field order_id`).
pub fn erp_variant_mapping(with_order_no: bool) -> zt_ingest::config::Mapping {
    zt_ingest::config::Mapping::erp_variant_example(with_order_no)
}

/// A record read back: key, value, partition, offset, timestamp (ms).
pub type Record = (Vec<u8>, Vec<u8>, i32, i64, i64);

/// A topic's records from the beginning: (key, value, partition, offset, timestamp ms), until
/// `expected` were read or none came for 10 s (60 s for the first). For the benchmarks on
/// tansu's memory engine, where [`read_topic`] ("to the high watermarks") stops short: that
/// engine answers ListOffsets(latest) with the base offset + 1 of the batch written last
/// (by modification time, the first of equals), not the end of the partition
/// (tansu-storage 0.6.0, `dynostore.rs`, `list_offsets`), so its high watermarks lag by a
/// batch or more.
pub fn read_by_count(kafka: &KafkaConfig, topic: &str, expected: usize) -> Vec<Record> {
    let c: BaseConsumer = zt_kafka::client::base_config(kafka)
        .expect("config")
        .set("group.id", format!("{topic}-bench-reader"))
        .set("enable.auto.commit", "false")
        // tansu holds every fetch for the whole wait, even one that found records.
        .set("fetch.wait.max.ms", "50")
        .create()
        .expect("consumer");
    let n = c
        .fetch_metadata(Some(topic), Duration::from_secs(60))
        .expect("metadata")
        .topics()
        .iter()
        .find(|m| m.name() == topic)
        .map_or(0, |m| m.partitions().len() as i32);
    // From each partition's low watermark: with `Offset::Beginning` the SQLite engine
    // served one partition only.
    let mut tpl = TopicPartitionList::new();
    for p in 0..n {
        let (lo, _) = c
            .fetch_watermarks(topic, p, Duration::from_secs(60))
            .expect("watermarks");
        tpl.add_partition_offset(topic, p, Offset::Offset(lo))
            .expect("tpl");
    }
    c.assign(&tpl).expect("assign");
    let mut out = Vec::with_capacity(expected);
    let mut last = Instant::now();
    while out.len() < expected
        && last.elapsed() < Duration::from_secs(if out.is_empty() { 60 } else { 10 })
    {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
            last = Instant::now();
            out.push((
                m.key().unwrap_or_default().to_vec(),
                m.payload().unwrap_or_default().to_vec(),
                m.partition(),
                m.offset(),
                m.timestamp().to_millis().unwrap_or(0),
            ));
        }
    }
    out
}
