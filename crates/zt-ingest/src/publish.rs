//! Publishing to Kafka: canonical events to `<prefix>.events.<source>` and dead letters to
//! `<prefix>.dlq`, through one idempotent `acks=all` producer. A publish completes only
//! when the broker acknowledged every record of it, or fails as a whole.
//!
//! An event's record is keyed by [`event_key`]. Published by the HTTP endpoints, its
//! timestamp (Kafka's `CreateTime`) is the event's `received_at`, ingest's receive time of
//! its request, read once for all its records ([`Sending::at`]). A replayed event's record
//! and a dead letter's are stamped by librdkafka when they are sent: a replayed event's
//! `received_at` can be days old, and a `CreateTime` that old would meet the topic's
//! `retention.ms` (or a broker's `log.message.timestamp.before.max.ms`) at once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::client::ClientContext;
use rdkafka::config::FromClientConfigAndContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{
    BaseRecord, DeliveryResult, Producer, ProducerContext, PurgeConfig, ThreadedProducer,
};
use zt_kafka::TopicsConfig;
use zt_model::{DeadLetter, Event};

use crate::metrics::IngestMetrics;

/// How long a publish waits before trying again to enqueue into a full local queue.
const QUEUE_FULL_WAIT: Duration = Duration::from_millis(1);

/// Why a publish failed (the client gets 503 and retries).
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The broker did not acknowledge in time or refused.
    #[error("broker did not acknowledge: {0}")]
    Broker(String),
    /// A record could not be encoded (a bug, not bad input).
    #[error("encoding failed")]
    Encode(#[from] zt_model::Error),
}

/// One record to send.
#[derive(Debug)]
pub struct Outgoing {
    /// Topic (shared: every event of a source goes to the same one).
    pub topic: Arc<str>,
    /// Partitioning key.
    pub key: String,
    /// Framed Avro value.
    pub value: Vec<u8>,
}

/// The delivery reports of one publish, counted as librdkafka's polling thread delivers
/// them: how many records still await theirs, and which failed (by their index in the
/// publish). The publish waits once, for the count to reach zero, where a
/// `DeliveryFuture` per record cost a channel, its allocation and a wake-up check each
/// (about 0.2 µs an event of ingest's time under load).
#[derive(Debug, Default)]
pub struct Acks {
    awaiting: AtomicUsize,
    failures: Mutex<Vec<(usize, String)>>,
    all_in: tokio::sync::Notify,
}

impl Acks {
    /// One more record sent: counted before librdkafka can report it.
    fn expect(&self) {
        self.awaiting.fetch_add(1, Ordering::AcqRel);
    }

    /// A record's report (or its refusal): `failure` is why it was not acknowledged.
    fn report(&self, index: usize, failure: Option<String>) {
        if let Some(why) = failure {
            self.failures
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((index, why));
        }
        if self.awaiting.fetch_sub(1, Ordering::AcqRel) == 1 {
            // Stores a permit when nobody waits yet: the wait below returns at once.
            self.all_in.notify_one();
        }
    }

    /// Waits until every record sent has its report.
    async fn all_reported(&self) {
        while self.awaiting.load(Ordering::Acquire) > 0 {
            self.all_in.notified().await;
        }
    }
}

/// What librdkafka hands back with a record's delivery report: the publish it belongs to
/// and its index there.
#[derive(Debug)]
pub struct Ack {
    acks: Arc<Acks>,
    index: usize,
}

/// The producer's context: each delivery report is counted into its publish's [`Acks`].
#[derive(Debug, Default, Clone, Copy)]
pub struct AckContext;

impl ClientContext for AckContext {}

impl ProducerContext for AckContext {
    type DeliveryOpaque = Box<Ack>;

    fn delivery(&self, result: &DeliveryResult<'_>, ack: Box<Ack>) {
        let failure = result.as_ref().err().map(|(e, _)| e.to_string());
        ack.acks.report(ack.index, failure);
    }
}

/// The producer ingest publishes with: librdkafka's own polling thread delivers the
/// reports into each publish's [`Acks`].
pub type AckProducer = ThreadedProducer<AckContext>;

/// An [`AckProducer`] from `config`.
pub fn ack_producer(config: &ClientConfig) -> Result<AckProducer, KafkaError> {
    ThreadedProducer::from_config_and_context(config, AckContext)
}

/// A publish in progress ([`Publisher::begin`]). Each record is enqueued when it is sent
/// (librdkafka copies its key and value, so the caller's buffers can be reused at once);
/// [`Sending::finish`] then waits once for all their delivery reports ([`Acks`]). A full
/// local queue is waited out in steps of a millisecond, for at most the publish timeout.
pub struct Sending<'p> {
    publisher: &'p Publisher,
    /// The producer the records went to (kept alive, with its polling thread, until
    /// their reports are in).
    producer: Option<AckProducer>,
    acks: Arc<Acks>,
    sent: usize,
    /// When the first record was sent (the produce latency is measured from there).
    start: Option<Instant>,
    kind: &'p str,
    /// The records' timestamp (ms since the epoch), when set ([`Sending::at`]); else
    /// librdkafka stamps each record with its own clock reading.
    timestamp: Option<i64>,
}

impl std::fmt::Debug for Sending<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sending")
            .field("kind", &self.kind)
            .field("sent", &self.sent)
            .finish_non_exhaustive()
    }
}

impl Sending<'_> {
    /// Stamps every record of this publish with `timestamp_ms` (Kafka's `CreateTime`):
    /// ingest gives the records of a request its receive time, read once, where
    /// librdkafka would read the clock for each record.
    pub fn at(mut self, timestamp_ms: i64) -> Self {
        self.timestamp = Some(timestamp_ms);
        self
    }

    /// Enqueues one record; its outcome is the matching entry of [`Sending::finish`].
    pub async fn send(&mut self, topic: &str, key: &str, value: &[u8]) {
        let start = *self.start.get_or_insert_with(Instant::now);
        let producer = self
            .producer
            .get_or_insert_with(|| self.publisher.current());
        let index = self.sent;
        self.sent += 1;
        self.acks.expect();
        let ack = Box::new(Ack {
            acks: Arc::clone(&self.acks),
            index,
        });
        let mut record = BaseRecord::with_opaque_to(topic, ack)
            .key(key)
            .payload(value);
        if let Some(ts) = self.timestamp {
            record = record.timestamp(ts);
        }
        loop {
            match producer.send(record) {
                Ok(()) => return,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back))
                    if start.elapsed() < self.publisher.timeout =>
                {
                    record = back;
                    tokio::time::sleep(QUEUE_FULL_WAIT).await;
                }
                Err((e, _refused)) => {
                    // Refused before it was enqueued: no report will come for it.
                    self.acks.report(index, Some(e.to_string()));
                    return;
                }
            }
        }
    }

    /// Waits for every acknowledgement; one result per record sent, in order.
    pub async fn finish(self) -> Vec<Result<(), PublishError>> {
        self.acks.all_reported().await;
        let mut out: Vec<Result<(), PublishError>> = (0..self.sent).map(|_| Ok(())).collect();
        let failures =
            std::mem::take(&mut *self.acks.failures.lock().unwrap_or_else(|p| p.into_inner()));
        for (index, why) in failures {
            if let Some(slot) = out.get_mut(index) {
                *slot = Err(PublishError::Broker(why));
            }
        }
        if let Some(start) = self.start {
            self.publisher
                .metrics
                .produce_latency
                .with_label_values(&[self.kind])
                .observe(start.elapsed().as_secs_f64());
        }
        out
    }
}

/// The partitioning key of an event: its most stable identifier.
pub fn event_key(ev: &Event) -> &str {
    let ids = &ev.identities;
    ids.crm_customer_id
        .as_deref()
        .or(ids.user_id.as_deref())
        .or(ids.anonymous_id.as_deref())
        .or(ids.order_id.as_deref())
        .or(ids.waybill_no.as_deref())
        .or(ids.ticket_id.as_deref())
        .unwrap_or(&ev.event_id)
}

/// The producer and where things go.
///
/// The producer is replaced after failures while the broker is unreachable or refuses it
/// ([`Publisher::recover`]): an idempotent producer whose session the broker lost (a
/// restarted broker without durable producer state, as tansu here) otherwise keeps failing
/// after the broker is back. Replacing it first purges what the old one still holds, so a
/// record of a request that was answered 503 can never arrive later.
pub struct Publisher {
    producer: RwLock<AckProducer>,
    config: ClientConfig,
    last_recovery: Mutex<Option<Instant>>,
    topics: TopicsConfig,
    /// `<prefix>.events.<source>` of every source, named once.
    event_topics: HashMap<zt_model::Source, Arc<str>>,
    timeout: Duration,
    metrics: IngestMetrics,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("topics", &self.topics)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Publisher {
    /// A publisher whose producers are built from `config` (idempotent, `acks=all`).
    pub fn new(
        config: ClientConfig,
        topics: TopicsConfig,
        timeout: Duration,
        metrics: IngestMetrics,
    ) -> Result<Self, rdkafka::error::KafkaError> {
        Ok(Publisher {
            producer: RwLock::new(ack_producer(&config)?),
            config,
            last_recovery: Mutex::new(None),
            event_topics: zt_model::Source::ALL
                .into_iter()
                .map(|s| (s, Arc::from(topics.events(s))))
                .collect(),
            topics,
            timeout,
            metrics,
        })
    }

    fn current(&self) -> AckProducer {
        self.producer
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Replaces the producer, at most once per `min_interval`: purges the old one's queued
    /// and in-flight records (their sends fail, so their requests get 503) and starts a
    /// fresh idempotent session.
    pub fn recover(&self, min_interval: Duration) {
        {
            let mut last = self.last_recovery.lock().unwrap_or_else(|p| p.into_inner());
            if last.is_some_and(|t| t.elapsed() < min_interval) {
                return;
            }
            *last = Some(Instant::now());
        }
        match ack_producer(&self.config) {
            Ok(fresh) => {
                let old = std::mem::replace(
                    &mut *self.producer.write().unwrap_or_else(|p| p.into_inner()),
                    fresh,
                );
                old.purge(PurgeConfig::default().queue().inflight());
                self.metrics
                    .errors
                    .with_label_values(&["producer_recreated"])
                    .inc();
                tracing::warn!("kafka producer replaced after publish failures");
            }
            Err(e) => tracing::error!(error = %e, "cannot create a kafka producer"),
        }
    }

    /// The canonical record of an event: keyed by its most stable identifier ([`event_key`])
    /// so one customer's events share a partition where the source says who they are.
    pub fn event_record(&self, ev: &Event) -> Result<Outgoing, PublishError> {
        Ok(Outgoing {
            topic: self.event_topic(ev),
            key: event_key(ev).to_owned(),
            value: zt_model::encode(ev)?,
        })
    }

    /// [`Publisher::event_record`] without allocating: the event is encoded onto the end of
    /// `buf` (left as it was on an error); returns its topic and key.
    pub fn encode_event<'e>(
        &self,
        ev: &'e Event,
        buf: &mut Vec<u8>,
    ) -> Result<(std::borrow::Cow<'_, str>, &'e str), PublishError> {
        let start = buf.len();
        if let Err(e) = zt_model::encode_append(ev, buf) {
            buf.truncate(start);
            return Err(e.into());
        }
        let topic = match self.event_topics.get(&ev.source) {
            Some(t) => std::borrow::Cow::Borrowed(&**t),
            None => std::borrow::Cow::Owned(self.topics.events(ev.source)),
        };
        Ok((topic, event_key(ev)))
    }

    fn event_topic(&self, ev: &Event) -> Arc<str> {
        match self.event_topics.get(&ev.source) {
            Some(t) => Arc::clone(t),
            None => Arc::from(self.topics.events(ev.source)),
        }
    }

    /// The dead-letter record.
    pub fn dead_letter_record(&self, dl: &DeadLetter) -> Result<Outgoing, PublishError> {
        Ok(Outgoing {
            topic: Arc::from(self.topics.dlq()),
            key: dl.dlq_id.clone(),
            value: zt_model::encode(dl)?,
        })
    }

    /// Sends all records and waits for every acknowledgement. Returns one result per
    /// record, in order.
    pub async fn send_all(
        &self,
        records: &[Outgoing],
        kind: &str,
    ) -> Vec<Result<(), PublishError>> {
        let mut sending = self.begin(kind);
        for r in records {
            sending.send(&r.topic, &r.key, &r.value).await;
        }
        sending.finish().await
    }

    /// A publish of records sent one by one ([`Sending::send`]) and acknowledged together
    /// ([`Sending::finish`]); `kind` labels its produce latency.
    pub fn begin<'p>(&'p self, kind: &'p str) -> Sending<'p> {
        Sending {
            publisher: self,
            producer: None,
            acks: Arc::default(),
            sent: 0,
            start: None,
            kind,
            timestamp: None,
        }
    }

    /// Waits for queued records before shutdown.
    pub fn flush(&self, timeout: Duration) {
        if let Err(e) = self.current().flush(timeout) {
            tracing::warn!(error = %e, "producer flush before shutdown did not complete");
        }
    }

    /// Whether the broker answers a metadata request (readiness probe; blocking).
    pub fn probe(&self, timeout: Duration) -> bool {
        self.current()
            .client()
            .fetch_metadata(Some(&self.topics.dlq()), timeout)
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reports counted in any order, from another thread, some before the wait starts and
    /// some after: the wait ends when the last is in, and the failures keep their indices.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_publish_waits_for_every_report_and_keeps_which_failed() {
        let acks = Arc::new(Acks::default());
        for _ in 0..5 {
            acks.expect();
        }
        acks.report(3, None);
        acks.report(0, Some("timed out".into()));
        let reporter = {
            let acks = Arc::clone(&acks);
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(50));
                acks.report(4, None);
                acks.report(1, Some("purged".into()));
                acks.report(2, None);
            })
        };
        tokio::time::timeout(Duration::from_secs(10), acks.all_reported())
            .await
            .expect("the last report ends the wait");
        reporter.join().unwrap();
        let mut failures = acks.failures.lock().unwrap().clone();
        failures.sort();
        assert_eq!(
            failures,
            vec![(0, "timed out".to_string()), (1, "purged".to_string())]
        );
        // A count that went to zero with nobody waiting (a record acknowledged before the
        // next was sent) and up again waits again: the permit that zero left does not
        // end the wait.
        acks.expect();
        acks.report(5, None);
        acks.expect();
        let waiting = tokio::spawn({
            let acks = Arc::clone(&acks);
            async move { acks.all_reported().await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "one report is still out");
        acks.report(6, None);
        tokio::time::timeout(Duration::from_secs(10), waiting)
            .await
            .expect("the report ends the wait")
            .unwrap();
    }
}
