//! What the processors share: the consumer context (rebalances, lag, client errors),
//! batches, sending a batch of records and waiting for every acknowledgement, committing,
//! and reading a partition to its end.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use zt_kafka::group::IdleMemberWatch;

use prometheus::{IntCounterVec, IntGaugeVec};
use rdkafka::client::ClientContext;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::util::Timeout;
use zt_kafka::{ConsumerOptions, KafkaConfig};
use zt_runtime::health::ReadyHandle;
use zt_runtime::shutdown::Shutdown;

use crate::error::{Error, Result};

/// A topic and partition.
pub type PartKey = (String, i32);

/// A rebalance, as seen by the processing loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RebalanceEvent {
    /// Partitions assigned.
    Assigned(Vec<PartKey>),
    /// Partitions revoked.
    Revoked(Vec<PartKey>),
}

/// Consumer context: queues rebalances for the loop, exports lag, counts client errors.
#[derive(Clone)]
pub struct Ctx {
    events: Arc<Mutex<Vec<RebalanceEvent>>>,
    /// When the last revocation happened, while no assignment followed it yet.
    revoked_at: Arc<Mutex<Option<std::time::Instant>>>,
    /// A member left without partitions while its group is stuck (zt_kafka::group).
    idle: Arc<Mutex<IdleMemberWatch>>,
    lag: IntGaugeVec,
    errors: IntCounterVec,
    ready: ReadyHandle,
}

impl std::fmt::Debug for Ctx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx").finish_non_exhaustive()
    }
}

fn keys(tpl: &TopicPartitionList) -> Vec<PartKey> {
    tpl.elements()
        .iter()
        .map(|e| (e.topic().to_owned(), e.partition()))
        .collect()
}

impl Ctx {
    /// A context exporting lag to `lag` (labels topic, partition) and errors to `errors`
    /// (label kind).
    pub fn new(lag: IntGaugeVec, errors: IntCounterVec, ready: ReadyHandle) -> Self {
        Ctx {
            events: Arc::default(),
            revoked_at: Arc::default(),
            idle: Arc::new(Mutex::new(IdleMemberWatch::new(IDLE_PATIENCE))),
            lag,
            errors,
            ready,
        }
    }

    /// Nudges `group`'s coordinator whenever this member re-joins because its group is
    /// stuck ([`zt_kafka::group::nudge_coordinator`]: a tansu coordinator wedged on a
    /// leader that is gone).
    pub fn with_nudge(self, kafka: &zt_kafka::KafkaConfig, group: &str) -> Self {
        let watch = IdleMemberWatch::new(IDLE_PATIENCE)
            .with_nudge(zt_kafka::group::Nudge::new(kafka, group));
        *self.idle.lock().unwrap_or_else(|p| p.into_inner()) = watch;
        self
    }

    fn nudge(&self) {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).nudge();
    }

    /// Rebalances since the last call, in order.
    pub fn take_events(&self) -> Vec<RebalanceEvent> {
        std::mem::take(&mut *self.events.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// True when this member was revoked longer than `patience` ago and no assignment
    /// followed (a group coordinator that never completes the rebalance; seen on tansu).
    pub fn stuck_in_rebalance(&self, patience: Duration) -> bool {
        self.revoked_at
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some_and(|t| t.elapsed() > patience)
    }

    fn push(&self, e: RebalanceEvent) {
        *self.revoked_at.lock().unwrap_or_else(|p| p.into_inner()) = match e {
            RebalanceEvent::Revoked(_) => Some(std::time::Instant::now()),
            RebalanceEvent::Assigned(_) => None,
        };
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(e);
    }
}

impl ClientContext for Ctx {
    fn stats(&self, stats: Statistics) {
        for (topic, t) in &stats.topics {
            for (p, part) in &t.partitions {
                if *p >= 0 && part.consumer_lag >= 0 {
                    self.lag
                        .with_label_values(&[topic.as_str(), &p.to_string()])
                        .set(part.consumer_lag);
                }
            }
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.errors.with_label_values(&["kafka"]).inc();
        tracing::warn!(error = %error, reason, "kafka client error");
        if matches!(
            error.rdkafka_error_code(),
            Some(rdkafka::types::RDKafkaErrorCode::AllBrokersDown)
        ) {
            self.ready.set_not_ready("all brokers down");
        }
    }
}

impl ConsumerContext for Ctx {
    fn pre_rebalance(&self, _c: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(tpl) => {
                tracing::info!(partitions = tpl.count(), "partitions revoked");
                self.push(RebalanceEvent::Revoked(keys(tpl)));
            }
            Rebalance::Assign(_) => {}
            Rebalance::Error(e) => {
                self.errors.with_label_values(&["rebalance"]).inc();
                tracing::warn!(error = %e, "rebalance error");
            }
        }
    }

    fn post_rebalance(&self, _c: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            tracing::info!(partitions = tpl.count(), "partitions assigned");
            self.push(RebalanceEvent::Assigned(keys(tpl)));
        }
    }
}

/// A group member that commits only when told (after its outputs are acknowledged).
pub fn group_consumer(
    kafka: &KafkaConfig,
    group: &str,
    topics: &[String],
    ctx: Ctx,
    lag_interval_ms: u64,
) -> Result<StreamConsumer<Ctx>> {
    let mut cc = zt_kafka::client::consumer_config(
        kafka,
        &ConsumerOptions {
            group_id: group.to_owned(),
            auto_commit: false,
        },
    )?;
    // Range assignment keeps co-partitioned topics together (partition n of every input
    // topic goes to the same member), which the profiles processor relies on.
    cc.set("partition.assignment.strategy", "range");
    if lag_interval_ms > 0 {
        cc.set("statistics.interval.ms", lag_interval_ms.to_string());
    }
    let c: StreamConsumer<Ctx> = cc.create_with_context(ctx)?;
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    c.subscribe(&names)?;
    Ok(c)
}

/// A consumer outside any group, for reading partitions by offset (restores, logs).
pub fn reader(kafka: &KafkaConfig, name: &str) -> Result<BaseConsumer> {
    let mut cc = zt_kafka::client::consumer_config(
        kafka,
        &ConsumerOptions {
            group_id: format!("{name}.reader"),
            auto_commit: false,
        },
    )?;
    cc.set("enable.partition.eof", "false");
    Ok(cc.create()?)
}

/// The suppression list of erased persons and identifiers (`zt erase`): read to its end
/// (every erasure so far), then followed on a thread of its own.
pub async fn follow_suppressions(
    kafka: &KafkaConfig,
    topics: &zt_kafka::TopicsConfig,
) -> Result<zt_kafka::suppress::Suppressions> {
    let list = zt_kafka::suppress::Suppressions::empty();
    let (s, k, topic) = (list.clone(), kafka.clone(), topics.suppressions());
    tokio::task::spawn_blocking(move || s.follow(&k, &topic, Duration::from_secs(60)))
        .await
        .map_err(|e| Error::Topics(format!("the suppression list task: {e}")))??;
    Ok(list)
}

/// How long a member without partitions waits for its stuck group before re-joining
/// ([`IdleMemberWatch`]).
pub const IDLE_PATIENCE: Duration = Duration::from_secs(20);

/// Re-joins the group (unsubscribe and subscribe again, which sends a fresh JoinGroup)
/// when a rebalance has not completed for this member within `patience` after its
/// partitions were revoked, or when it has held no partition for [`IDLE_PATIENCE`] while
/// its group's committed offsets stood still with records left to read. Workarounds for
/// a coordinator that leaves a member waiting or hands a restarted member nothing (both
/// seen on tansu; docs/reliability.md); harmless on a broker that behaves.
pub fn rejoin_if_stuck(
    consumer: &StreamConsumer<Ctx>,
    ctx: &Ctx,
    topics: &[String],
    patience: Duration,
) -> Result<()> {
    let idle_stuck = ctx
        .idle
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .should_rejoin(consumer, topics);
    if idle_stuck {
        tracing::warn!(
            seconds = IDLE_PATIENCE.as_secs(),
            "partitions this member does not hold make no progress; re-joining the group"
        );
        ctx.errors.with_label_values(&["idle_member_stuck"]).inc();
        consumer.unsubscribe();
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer.subscribe(&names)?;
        ctx.nudge();
        return Ok(());
    }
    if ctx.stuck_in_rebalance(patience) {
        tracing::warn!(
            seconds = patience.as_secs(),
            "no assignment since the last revocation; re-joining the group"
        );
        ctx.errors.with_label_values(&["rebalance_stuck"]).inc();
        *ctx.revoked_at.lock().unwrap_or_else(|p| p.into_inner()) = Some(std::time::Instant::now());
        consumer.unsubscribe();
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer.subscribe(&names)?;
        ctx.nudge();
    }
    Ok(())
}

/// Collects up to `max` records, waiting at most `age` for the first batch to fill.
/// Returns early (possibly empty) on shutdown or when a rebalance happened, so the caller
/// can apply it before processing anything.
pub async fn collect(
    consumer: &StreamConsumer<Ctx>,
    ctx: &Ctx,
    max: usize,
    age: Duration,
    shutdown: &Shutdown,
) -> Result<(Vec<OwnedMessage>, Vec<RebalanceEvent>)> {
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + age;
    while out.len() < max {
        let r = tokio::select! {
            _ = shutdown.wait() => break,
            _ = tokio::time::sleep_until(deadline) => break,
            r = consumer.recv() => r,
        };
        let events = ctx.take_events();
        if !events.is_empty() {
            // Whatever was collected before belongs to the assignment before this
            // rebalance: drop it, the new assignment starts again from the committed
            // offsets. The record this very call returned was fetched for the new
            // assignment (the callbacks ran inside it, before it returned): keep it, or it
            // would be skipped.
            out.clear();
            if let Ok(m) = r {
                out.push(m.detach());
            }
            return Ok((out, events));
        }
        match r {
            Ok(m) => out.push(m.detach()),
            Err(e) => {
                tracing::warn!(error = %e, "consumer error");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    Ok((out, ctx.take_events()))
}

/// Registers a metric on `r` and returns it. A second registration of the same name (two
/// processors in one process, tests) keeps the first; the metric still works.
pub fn register<T: prometheus::core::Collector + Clone + 'static>(
    r: &prometheus::Registry,
    m: T,
) -> T {
    let _ = r.register(Box::new(m.clone()));
    m
}

/// The dead letter of an input record a processor cannot read: reason `undecodable`, id
/// `<stage>:<topic>/<partition>/<offset>` (the same record rejected again gives the same
/// id), the source taken from a `<prefix>.events.<source>` topic name, else `unknown`.
pub fn dead_letter(
    t: &zt_kafka::TopicsConfig,
    stage: &str,
    (topic, partition, offset): (&str, i32, i64),
    original: &[u8],
    content_type: Option<&str>,
    reason: &str,
) -> Out {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default();
    let dl = zt_model::DeadLetter {
        dlq_id: format!("{stage}:{topic}/{partition}/{offset}"),
        stage: stage.into(),
        source: topic
            .rsplit('.')
            .next()
            .filter(|s| s.parse::<zt_model::Source>().is_ok())
            .unwrap_or("unknown")
            .to_owned(),
        reason: "undecodable".into(),
        field: None,
        message: reason.to_owned(),
        original: original.to_vec(),
        content_type: content_type.map(str::to_owned),
        received_at: now,
        failed_at: now,
        origin_topic: Some(topic.to_owned()),
        origin_partition: Some(partition),
        origin_offset: Some(offset),
    };
    Out {
        topic: t.dlq(),
        key: dl.dlq_id.clone().into_bytes(),
        value: Some(zt_model::encode(&dl).expect("dead letter encodes")),
        headers: vec![],
    }
}

/// A record to send.
#[derive(Debug, Clone)]
pub struct Out {
    /// Topic.
    pub topic: String,
    /// Key.
    pub key: Vec<u8>,
    /// Value; None is a tombstone.
    pub value: Option<Vec<u8>>,
    /// Headers (name, value).
    pub headers: Vec<(&'static str, String)>,
}

/// Sends every record and waits for every acknowledgement; the offsets, in order.
pub async fn send_all(producer: &FutureProducer, records: &[Out]) -> Result<Vec<(i32, i64)>> {
    let futures = records.iter().map(|r| {
        let mut rec: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&r.topic).key(&r.key[..]);
        if let Some(v) = &r.value {
            rec = rec.payload(&v[..]);
        }
        if !r.headers.is_empty() {
            let mut h = OwnedHeaders::new();
            for (k, v) in &r.headers {
                h = h.insert(Header {
                    key: k,
                    value: Some(v.as_bytes()),
                });
            }
            rec = rec.headers(h);
        }
        producer.send(rec, Timeout::Never)
    });
    let mut out = Vec::with_capacity(records.len());
    for r in futures::future::join_all(futures).await {
        match r {
            Ok(d) => out.push((d.partition, d.offset)),
            Err((e, _)) => return Err(Error::Kafka(e)),
        }
    }
    Ok(out)
}

/// Sends a batch's outputs (rows, snapshots) and, once every one of them is acknowledged,
/// its state records (those of `records` on `state_topic`, the changelog the processor
/// restores from). A state record on the changelog thus says its outputs were delivered:
/// after a crash between the two sends, the restore finds the older state, the replay
/// changes it again and the outputs go out again (with a higher version). Sent together, a
/// crash could persist the new state and lose its outputs, and the replay, finding nothing
/// changed, would never send them: found by the fault matrix (`kill -9 funnels at 90 %`,
/// a merged person's rows missing in ClickHouse; docs/reliability.md).
///
/// Crash points (test only, armed through `fail`): [`BEFORE_STATE`] aborts between the two
/// sends; [`STATE_FIRST`] sends the state first and aborts before the outputs, the order
/// before this fix, for the negative control.
pub async fn send_outputs_then_state(
    producer: &FutureProducer,
    records: Vec<Out>,
    state_topic: &str,
    fail: &zt_runtime::failpoint::Failpoint,
) -> Result<()> {
    let (state, outputs): (Vec<Out>, Vec<Out>) =
        records.into_iter().partition(|r| r.topic == state_topic);
    if fail.is_armed(STATE_FIRST) {
        send_all(producer, &state).await?;
        if !state.is_empty() {
            fail.hit(STATE_FIRST);
        }
        send_all(producer, &outputs).await?;
        return Ok(());
    }
    send_all(producer, &outputs).await?;
    if !state.is_empty() {
        fail.hit(BEFORE_STATE);
    }
    send_all(producer, &state).await?;
    Ok(())
}

/// Crash point of [`send_outputs_then_state`]: outputs acknowledged, state not sent.
pub const BEFORE_STATE: &str = "before_state";
/// Test-only order of [`send_outputs_then_state`]: state first, then abort before the
/// outputs (the negative control).
pub const STATE_FIRST: &str = "state_first";

/// Commits `next` offsets (the offset of the next record to read) synchronously.
pub fn commit<C: ConsumerContext>(
    consumer: &StreamConsumer<C>,
    next: &BTreeMap<PartKey, i64>,
) -> Result<()> {
    if next.is_empty() {
        return Ok(());
    }
    let mut tpl = TopicPartitionList::new();
    for ((t, p), o) in next {
        tpl.add_partition_offset(t, *p, Offset::Offset(*o))?;
    }
    consumer.commit(&tpl, CommitMode::Sync)?;
    Ok(())
}

/// Commits `next` after the batch's outputs were acknowledged; a commit the broker
/// refuses or does not answer (no coordinator, a rebalance under way, a timeout) is
/// counted (`errors{kind="commit"}`), logged and left to the next batch's commit, which
/// covers these offsets too. Not exiting is safe: the outputs are already acknowledged,
/// so committing past them later is correct, and if the partitions moved meanwhile their
/// new owner replays from the last commit, the same path as a crash between send and
/// commit (exactly-once by the processors' replay handling, docs/reliability.md).
pub fn commit_after_send(
    consumer: &StreamConsumer<Ctx>,
    next: &BTreeMap<PartKey, i64>,
) -> Result<()> {
    match commit(consumer, next) {
        Err(Error::Kafka(e)) => {
            consumer
                .context()
                .errors
                .with_label_values(&["commit"])
                .inc();
            tracing::warn!(error = %e, "offset commit failed; the next batch's commit covers it");
            Ok(())
        }
        other => other,
    }
}

/// The next offset of every partition in `batch` (last offset + 1).
pub fn next_offsets(batch: &[OwnedMessage]) -> BTreeMap<PartKey, i64> {
    let mut next: BTreeMap<PartKey, i64> = BTreeMap::new();
    for m in batch {
        let e = next
            .entry((m.topic().to_owned(), m.partition()))
            .or_insert(0);
        *e = (*e).max(m.offset() + 1);
    }
    next
}

/// The group's committed offsets for `parts` (partitions without one are absent).
pub fn committed<C: ConsumerContext>(
    consumer: &StreamConsumer<C>,
    parts: &[PartKey],
) -> Result<HashMap<PartKey, i64>> {
    let mut tpl = TopicPartitionList::new();
    for (t, p) in parts {
        tpl.add_partition(t, *p);
    }
    let got = consumer.committed_offsets(tpl, Duration::from_secs(10))?;
    Ok(got
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some(((e.topic().to_owned(), e.partition()), o)),
            _ => None,
        })
        .collect())
}

/// [`partitions_of`], retried while the broker does not answer (a processor that starts
/// before the broker, or while it is overloaded, waits instead of exiting), for at most
/// `patience`. A topic that does not exist is an error at once.
pub async fn partitions_when_ready<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topics: &[String],
    patience: Duration,
    shutdown: &Shutdown,
) -> Result<Vec<PartKey>> {
    let until = tokio::time::Instant::now() + patience;
    loop {
        match partitions_of(consumer, topics) {
            Ok(p) => return Ok(p),
            Err(e @ Error::Topics(_)) => return Err(e),
            Err(e) if tokio::time::Instant::now() < until && !shutdown.is_triggered() => {
                tracing::warn!(error = %e, "broker not answering yet; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// The partitions of `topics`.
pub fn partitions_of<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topics: &[String],
) -> Result<Vec<PartKey>> {
    let mut out = Vec::new();
    for t in topics {
        let md = consumer.fetch_metadata(Some(t), Duration::from_secs(10))?;
        let n = md
            .topics()
            .iter()
            .find(|m| m.name() == t)
            .map(|m| m.partitions().len())
            .unwrap_or(0);
        if n == 0 {
            return Err(Error::Topics(format!(
                "topic {t} does not exist (run `zt topics create`)"
            )));
        }
        out.extend((0..n as i32).map(|p| (t.clone(), p)));
    }
    Ok(out)
}

/// Reads `topic`/`partition` from `from` up to its high watermark at the time of the
/// call, handing every record to `f`. Returns the next offset.
pub fn read_to_end(
    reader: &BaseConsumer,
    topic: &str,
    partition: i32,
    from: i64,
    mut f: impl FnMut(&rdkafka::message::BorrowedMessage<'_>) -> Result<()>,
) -> Result<i64> {
    let (low, high) = reader.fetch_watermarks(topic, partition, Duration::from_secs(10))?;
    let start = from.max(low);
    if start >= high {
        return Ok(start.max(from));
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(start))?;
    reader.assign(&tpl)?;
    let mut next = start;
    let mut idle = 0u32;
    while next < high {
        match reader.poll(Duration::from_millis(500)) {
            Some(Ok(m)) => {
                idle = 0;
                next = m.offset() + 1;
                f(&m)?;
            }
            Some(Err(e)) => {
                // Transport errors (a broker of the bootstrap list down, a timed-out fetch)
                // are retried by librdkafka; only lack of progress ends the restore.
                idle += 1;
                tracing::warn!(topic, partition, error = %e, "error while reading; retrying");
                std::thread::sleep(Duration::from_millis(200));
            }
            None => {
                idle += 1;
                if idle > 120 {
                    return Err(Error::Topics(format!(
                        "{topic} partition {partition}: no progress at offset {next} of {high} for 60 s"
                    )));
                }
            }
        }
    }
    reader.unassign()?;
    Ok(next)
}

/// Bits of a write version that count writes within one epoch.
const SEQ_BITS: u32 = 20;

/// Versions of the records a stateful processor writes for one partition (state changelog,
/// snapshots, rows): `epoch << 20 | sequence`, growing with every write.
///
/// The epoch is taken when the partition is assigned: the wall clock in milliseconds, but
/// at least one more than the largest epoch in the restored changelog. So every record a
/// new owner writes outranks everything the previous owner wrote that the new owner saw,
/// and, as long as clocks agree to within a consumer session timeout, also the writes of a
/// crashed owner that were still in flight when it died and reach the log only after the
/// restore (the broker cannot fence them without transactions). Readers keep the highest
/// version per key: the restore, the sink (ReplacingMergeTree(version)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VersionClock {
    epoch: u64,
    seq: u64,
}

impl VersionClock {
    /// A clock for a partition whose restored records reached `max_restored` (0 if none).
    pub fn after(max_restored: u64) -> Self {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or_default();
        VersionClock {
            epoch: now.max((max_restored >> SEQ_BITS) + 1),
            seq: 0,
        }
    }

    /// The next version.
    pub fn tick(&mut self) -> u64 {
        if self.seq >= (1 << SEQ_BITS) {
            self.epoch += 1;
            self.seq = 0;
        }
        let v = (self.epoch << SEQ_BITS) | self.seq;
        self.seq += 1;
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_revocation_without_assignment_counts_as_stuck() {
        let lag =
            IntGaugeVec::new(prometheus::Opts::new("l", "l"), &["topic", "partition"]).unwrap();
        let errs = IntCounterVec::new(prometheus::Opts::new("e", "e"), &["kind"]).unwrap();
        let ctx = Ctx::new(
            lag,
            errs,
            zt_runtime::health::Health::new().register("kafka"),
        );
        assert!(!ctx.stuck_in_rebalance(Duration::ZERO));
        ctx.push(RebalanceEvent::Revoked(vec![("t".into(), 0)]));
        std::thread::sleep(Duration::from_millis(2));
        assert!(ctx.stuck_in_rebalance(Duration::ZERO));
        assert!(!ctx.stuck_in_rebalance(Duration::from_secs(60)));
        ctx.push(RebalanceEvent::Assigned(vec![]));
        assert!(!ctx.stuck_in_rebalance(Duration::ZERO));
    }

    #[test]
    fn versions_grow_and_outrank_the_restored_ones() {
        let mut a = VersionClock::after(0);
        let v1 = a.tick();
        let v2 = a.tick();
        assert!(v2 > v1);
        // A later owner whose wall clock is behind still outranks what it restored.
        let far_future = (u64::MAX >> 4) & !((1 << SEQ_BITS) - 1);
        let mut b = VersionClock::after(far_future);
        assert!(b.tick() > far_future);
        // Rolling over the sequence moves to the next epoch.
        let mut c = VersionClock {
            epoch: 5,
            seq: (1 << SEQ_BITS) - 1,
        };
        let x = c.tick();
        let y = c.tick();
        assert!(y > x && y >> SEQ_BITS == 6);
    }
}
