//! `zt sink`: canonical events from Kafka into ClickHouse, effectively once.
//!
//! **Input.** The configured topics (by default the six `<prefix>.events.<source>`),
//! consumed as the consumer group `sink.group_id`. Every value is a `zt.Event` in the
//! Confluent wire format, decoded with [`zt_model::decode`], except on the processors'
//! JSON topics `<prefix>.identity.links`, `<prefix>.profiles`, `<prefix>.identity.merges`
//! and `<prefix>.funnels` (when listed), whose records become one row of `identity_links`,
//! `profiles`, `identity_merges`, or `funnel_progress` / `experiment_progress` by the
//! record's `kind` ([`crate::processed`]); their tombstones (no value) are skipped.
//!
//! **On the wire to ClickHouse.** Each event becomes one `events` row plus the rows of its
//! domain table (`orders` and `order_lines`, `shipments`, `tickets`, `ad_spend`,
//! `customers`; see [`crate::rows`]). Every row carries `_topic`, `_partition`, `_offset` of
//! its record. Rows are batched per partition; when one table's rows, every partition
//! together, reach `batch_max_rows`, or all the rows pending reach `batch_max_bytes`, or the
//! oldest record `batch_max_age_ms`, they are inserted with one `INSERT ... FORMAT
//! RowBinary` per table over HTTP (the `clickhouse` crate), the tables' INSERTs running
//! concurrently, and every partition's next offset is committed in one request. A table
//! with few rows (under a quarter of either bound) waits for a later flush, up to
//! `batch_max_age_ms`, and the commit does not pass its oldest waiting record
//! (`due_tables`, `is_full`). Records are
//! decoded, mapped and RowBinary-encoded on a thread of their own (`decode.rs`), and one
//! flush's INSERTs run in a task while the sink takes the next decoded records into new
//! batches, so that decoding and batching overlap the INSERTs; batches hold the encoded
//! bytes. At most one flush is in flight: the next starts after it committed.
//!
//! **Delivery guarantee: effectively once per table.** After a crash at any point every
//! record's rows are in each of its tables exactly once, without
//! `insert_deduplication_token` (ClickHouse 18.16 lacks it):
//!
//! 1. offsets are committed (explicitly, synchronously) only after every table's insert
//!    for them ended, so nothing is skipped;
//! 2. whatever was inserted but not committed is found again: when the sink starts reading
//!    a partition at offset `c` (the committed offset), it reads, for every table, which
//!    offsets `>= c` of that partition the table already holds, and skips those records
//!    *for that table only*. One record feeds several tables and a crash can fall between
//!    two tables' inserts, so the resume is per table. It is exact per record, not a
//!    high-water mark, so an insert ClickHouse stored only partly (one part per month
//!    partition) is completed, not skipped;
//! 3. a failed insert is retried only after re-reading which of its records the table
//!    holds (a timeout may hide an insert that succeeded), and only once every INSERT
//!    that outlived `insert_timeout_ms` (kept running in its task, not dropped) has ended.
//!
//! This rests on one record's rows for one table being stored atomically: they share a
//! month partition and an INSERT stays below `max_insert_block_size` (at most 1,000,000
//! rows of one table, every partition together).
//!
//! **Failures.** ClickHouse or the broker down: retried with capped exponential backoff
//! (`retry_initial_backoff_ms` to `retry_max_backoff_ms`), no loss, no busy loop, `/readyz`
//! failing meanwhile; while it waits, the sink pauses its partitions and keeps polling so
//! it stays in its group and sees revocations. Records that do not decode or map, and rows
//! ClickHouse rejects as bad data (a failed batch is bisected down to the record), go to
//! the dead-letter topic (see [`dlq`]) and the partition goes on.
//!
//! **Rebalances.** Rebalance callbacks run inside this task's `recv()`, which is never
//! polled while a flush's INSERTs run (the sink then only takes records already received),
//! so a revocation completes with no insert of the partition in flight; buffered
//! records of revoked partitions are abandoned (their offsets were not committed; the next
//! owner reads them again) and an assigned partition's resume state is read afresh.

pub(crate) mod context;
pub(crate) mod decode;
pub mod dlq;
pub mod offsets;
pub(crate) mod writer;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::FutureProducer;
use rdkafka::{Offset, TopicPartitionList};
use zt_kafka::group::IdleMemberWatch;
use zt_kafka::suppress::Suppressions;
use zt_kafka::{ConsumerOptions, KafkaConfig, TopicsConfig};
use zt_model::Source;
use zt_runtime::health::ReadyHandle;
use zt_runtime::{Health, Shutdown};

use crate::config::{ClickHouseConfig, SinkConfig};
use crate::error::{Error, Result};
use crate::failpoint::{self, Point};
use crate::metrics::SinkMetrics;
use crate::processed::TopicKind;
use crate::rows::EncodedRows;
use context::{PartKey, RebalanceEvent, SinkContext};
use decode::{Decoded, Decoder, Raw};
use dlq::{Reason, Rejected};
use offsets::OffsetSet;
use writer::{TableBuf, Writer};

/// The tables the sink writes, in insert order. Indexes are used in the resume state.
pub const TABLES: [&str; 12] = [
    "events",
    "orders",
    "order_lines",
    "shipments",
    "tickets",
    "ad_spend",
    "customers",
    "identity_links",
    "profiles",
    "identity_merges",
    "funnel_progress",
    "experiment_progress",
];

/// Everything the sink needs to run.
#[derive(Debug, Clone)]
pub struct SinkParams {
    /// `[kafka]`
    pub kafka: KafkaConfig,
    /// `[clickhouse]`
    pub clickhouse: ClickHouseConfig,
    /// `[sink]`
    pub sink: SinkConfig,
    /// The topics to consume (resolved: never empty).
    pub topics: Vec<String>,
    /// The dead-letter topic.
    pub dlq_topic: String,
    /// The suppression list (`zt erase`): records of erased persons are not loaded.
    pub suppressions_topic: String,
    /// The consumed topics that carry the processors' JSON records (by their configured
    /// names); every other topic carries events.
    pub kinds: HashMap<String, TopicKind>,
    /// `[topics]`, for the output versions.
    pub topic_names: TopicsConfig,
}

impl SinkParams {
    /// Resolves the topic list (`sink.topics`, or the six source topics when empty) and
    /// the dead-letter topic from `[topics]`.
    pub fn new(
        kafka: KafkaConfig,
        topics: &TopicsConfig,
        clickhouse: ClickHouseConfig,
        sink: SinkConfig,
    ) -> Self {
        let list = if sink.topics.is_empty() {
            Source::ALL.into_iter().map(|s| topics.events(s)).collect()
        } else {
            sink.topics.clone()
        };
        let kinds = list
            .iter()
            .map(|t| (t.clone(), TopicKind::of(t, topics)))
            .filter(|(_, k)| *k != TopicKind::Events)
            .collect();
        SinkParams {
            kafka,
            clickhouse,
            sink,
            topics: list,
            dlq_topic: topics.dlq(),
            suppressions_topic: topics.suppressions(),
            kinds,
            topic_names: topics.clone(),
        }
    }

    /// Checks every part.
    pub fn validate(&self) -> Result<()> {
        self.kafka.validate()?;
        self.clickhouse.validate()?;
        self.sink.validate()?;
        if self.topics.is_empty() {
            return Err(Error::Config {
                key: "sink.topics".into(),
                reason: "no topic to consume".into(),
            });
        }
        self.sink.check_output_versions(&self.topic_names)?;
        Ok(())
    }
}

/// Runs the sink until `shutdown` fires (then flushes what it can, commits and returns) or
/// a non-retryable error occurs. Registers its metrics on `registry` and the readiness
/// checks `clickhouse` and `kafka` on `health`.
pub async fn run(
    params: SinkParams,
    registry: &prometheus::Registry,
    health: &Health,
    shutdown: Shutdown,
) -> Result<()> {
    params.validate()?;
    let metrics = SinkMetrics::new(registry);
    let ch_ready = health.register("clickhouse");
    let kafka_ready = health.register("kafka");
    kafka_ready.set_not_ready("waiting for a partition assignment");
    let writer = Writer::new(
        &params.clickhouse,
        Duration::from_millis(params.sink.insert_timeout_ms),
        metrics.clone(),
    );
    let mut backoff = Backoff::new(&params.sink);
    loop {
        match writer.ping().await {
            Ok(()) => break,
            Err(e) => {
                ch_ready.set_not_ready("unreachable");
                metrics.errors.with_label_values(&["clickhouse"]).inc();
                tracing::warn!(error = %e, "clickhouse not reachable yet");
                tokio::select! {
                    _ = shutdown.wait() => return Ok(()),
                    _ = tokio::time::sleep(backoff.next()) => {}
                }
            }
        }
    }
    ch_ready.set_ready();
    let ctx = SinkContext::new(metrics.clone(), kafka_ready.clone());
    let mut cc = zt_kafka::client::consumer_config(
        &params.kafka,
        &ConsumerOptions {
            group_id: params.sink.group_id.clone(),
            auto_commit: false,
        },
    )?;
    for (key, value) in [
        ("fetch.wait.max.ms", FETCH_WAIT_MS),
        ("fetch.queue.backoff.ms", FETCH_QUEUE_BACKOFF_MS),
    ] {
        if cc.get(key).is_none() {
            cc.set(key, value.to_string());
        }
    }
    if params.sink.lag_interval_ms > 0 {
        cc.set(
            "statistics.interval.ms",
            params.sink.lag_interval_ms.to_string(),
        );
    }
    let consumer: StreamConsumer<SinkContext> =
        cc.create_with_context(ctx.clone())
            .map_err(|source| Error::Kafka {
                operation: "create consumer",
                source,
            })?;
    let topics: Vec<&str> = params.topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topics).map_err(|source| Error::Kafka {
        operation: "subscribe",
        source,
    })?;
    let producer = zt_kafka::build_producer(&params.kafka)?;
    tracing::info!(topics = ?params.topics, group = %params.sink.group_id, "sink started");
    let resume = !failpoint::resume_disabled();
    if !resume {
        tracing::warn!("ZT_SINK_DISABLE_RESUME=1: effectively-once resume is OFF (test only)");
    }
    // Erased persons and identifiers (`zt erase`): every erasure so far, then followed.
    let suppressions = Suppressions::empty();
    {
        let (s, k, topic) = (
            suppressions.clone(),
            params.kafka.clone(),
            params.suppressions_topic.clone(),
        );
        tokio::task::spawn_blocking(move || s.follow(&k, &topic, Duration::from_secs(60)))
            .await
            .map_err(|e| Error::Config {
                key: "topics.prefix".into(),
                reason: format!("the suppression list task: {e}"),
            })??;
    }
    let decoder = Decoder::start(&params.sink, params.kinds.clone(), suppressions)?;
    let nudge = zt_kafka::group::Nudge::new(&params.kafka, &params.sink.group_id);
    let mut sink = Sink {
        p: params,
        consumer: Arc::new(consumer),
        ctx,
        producer,
        writer,
        metrics,
        ch_ready,
        kafka_ready,
        shutdown,
        parts: HashMap::new(),
        assigned: HashMap::new(),
        next_epoch: 0,
        stash: VecDeque::new(),
        spares: Default::default(),
        decoder,
        paused: false,
        resume,
        pending: [(0, 0); 12],
        idle: IdleMemberWatch::new(IDLE_PATIENCE).with_nudge(nudge),
        inflight: None,
    };
    let out = sink.run_loop().await;
    sink.consumer.unsubscribe();
    out
}

/// How long the sink, holding no partition, waits for its stuck group before re-joining.
const IDLE_PATIENCE: Duration = Duration::from_secs(20);

/// The consumer's `fetch.wait.max.ms` unless `kafka.options` sets it: how long the broker
/// may hold a fetch that found too little. With librdkafka's default (500 ms) the sink's
/// consumer ran dry for 200 ms and more every few flushes in the middle of a backlog on
/// tansu (the benchmark's sink rate rose by about a tenth at 10 or 100 ms;
/// docs/benchmarks.md); 100 ms costs an idle sink ten empty fetches a second.
const FETCH_WAIT_MS: u32 = 100;

/// The consumer's `fetch.queue.backoff.ms` unless `kafka.options` sets it: how long
/// librdkafka postpones fetching a partition whose prefetched records reached its queue
/// thresholds (`queued.min.messages`, `queued.max.messages.kbytes`). The sink does not poll
/// while a flush's INSERTs run, so the thresholds are reached every flush in a backlog, and
/// librdkafka's default (1,000 ms) then left the consumer empty: in the benchmark the sink
/// ran dry for 300 to 550 ms about once a second, found "caught up" five times per million
/// events, and loaded 316k to 348k rows/s. At 50 ms: 390k to 486k rows/s, none of those
/// pauses (docs/benchmarks.md). Lower values cost librdkafka more wake-ups while the
/// queue is full.
const FETCH_QUEUE_BACKOFF_MS: u32 = 50;

/// Records taken from the consumer, or from the decoder, per turn of the sink loop.
const DRAIN: usize = 256;

/// Why a flush started (`zt_sink_flushes_total{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FlushReason {
    /// The pending rows or bytes reached `batch_max_rows` / `batch_max_bytes`.
    Full,
    /// The oldest pending record reached `batch_max_age_ms`.
    Age,
    /// Caught up with at least a quarter of a batch ([`CAUGHT_UP_IDLE`]).
    CaughtUp,
}

impl FlushReason {
    fn label(self) -> &'static str {
        match self {
            FlushReason::Full => "full",
            FlushReason::Age => "age",
            FlushReason::CaughtUp => "caught_up",
        }
    }
}

/// How long the consumer must have had nothing to give before the sink counts itself
/// caught up ([`Sink::quarter_full`]; `zt_sink_flushes_total{reason="caught_up"}`).
const CAUGHT_UP_IDLE: Duration = Duration::from_millis(50);

/// Polls `f` once; its output if it was ready. Used on `StreamConsumer::recv`, which is
/// cancel-safe.
fn poll_now<F: std::future::Future>(f: F) -> Option<F::Output> {
    let mut f = std::pin::pin!(f);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match f.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(v) => Some(v),
        std::task::Poll::Pending => None,
    }
}

/// Capped exponential backoff with a little jitter.
#[derive(Debug)]
struct Backoff {
    max: Duration,
    next: Duration,
}

impl Backoff {
    fn new(cfg: &SinkConfig) -> Self {
        let initial = Duration::from_millis(cfg.retry_initial_backoff_ms);
        Backoff {
            max: Duration::from_millis(cfg.retry_max_backoff_ms),
            next: initial,
        }
    }

    fn next(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        // Up to 20 % jitter so that many sinks do not retry in step.
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|t| t.subsec_nanos())
            .unwrap_or(0);
        let jitter = d.mul_f64(f64::from(nanos % 200) / 1000.0);
        d.saturating_sub(jitter).max(Duration::from_millis(1))
    }
}

/// A record kept with its batch, for dead-lettering it if ClickHouse rejects its rows.
#[derive(Debug, Clone)]
struct Original {
    offset: i64,
    timestamp_ms: Option<i64>,
    value: Vec<u8>,
}

/// The records of one partition not yet committed: per table, the rows no flush has taken
/// yet (a table may wait for later flushes, [`Sink::start_flush`]), and every record's
/// original bytes.
#[derive(Debug, Default)]
struct Batch {
    /// Per table (in [`TABLES`] order), the RowBinary rows not yet taken by a flush.
    tables: [TableBuf; 12],
    /// The records not yet committed, in offset order: for dead letters, and counted
    /// (`records_received`) when committed.
    originals: Vec<Original>,
    /// When the oldest record taken since the last flush began was taken.
    first_at: Option<Instant>,
    /// The last record taken.
    last_offset: Option<i64>,
}

/// One assigned partition: its batch and which offsets each table already holds.
#[derive(Debug)]
struct PartState {
    batch: Batch,
    present: Vec<OffsetSet>,
    /// Event ids stored from this partition lately (`sink.dedup_window_records`).
    recent: RecentIds,
    /// The offset committed last (or resumed from): commits only move forward.
    committed: i64,
}

/// One partition in a flush: the tables' rows it takes out of its [`PartState`], with the
/// resume state, which is given back (updated) once committed.
#[derive(Debug)]
struct Flushing {
    key: PartKey,
    /// The assignment it was taken under.
    epoch: Option<u64>,
    /// Per table, the rows taken (empty for a table left for a later flush).
    tables: [TableBuf; 12],
    present: Vec<OffsetSet>,
    /// Per table, the records still to insert (the table does not hold them yet).
    runs: Vec<Pending>,
    /// The offset to commit once the flush stored its rows: past every record taken,
    /// but not past a record whose rows wait in a table left for a later flush.
    commit_to: i64,
}

/// Per table: the first INSERT of a flush (none when it had no rows), how many
/// partitions it carried and how it went.
type FirstAttempt = [Option<(usize, Result<()>)>; 12];

/// A flush whose first attempt runs in a task of its own.
type InFlight = tokio::task::JoinHandle<(Vec<Flushing>, FirstAttempt)>;

/// The first attempt of a flush: one INSERT per table carrying every partition's records,
/// the tables' INSERTs at once. Each INSERT has a fixed cost on the server (a new part per
/// table: files created, written, renamed) that dominated the smaller tables' INSERTs when
/// they ran one after another.
async fn first_attempt(w: &Writer, group: &[Flushing]) -> FirstAttempt {
    // Per table, the buffers and runs of the partitions it has records of.
    let mut per_table: Vec<Vec<Runs<'_>>> = Vec::with_capacity(TABLES.len());
    for t in 0..TABLES.len() {
        let mut parts = Vec::new();
        for f in group {
            if !f.runs[t].0.is_empty() {
                parts.push((&f.tables[t], &f.runs[t].0[..]));
            }
        }
        per_table.push(parts);
    }
    let p = &per_table;
    let (r0, r1, r2, r3, r4, r5, r6, r7, r8, r9, r10, r11) = tokio::join!(
        insert_table(w, 0, &p[0]),
        insert_table(w, 1, &p[1]),
        insert_table(w, 2, &p[2]),
        insert_table(w, 3, &p[3]),
        insert_table(w, 4, &p[4]),
        insert_table(w, 5, &p[5]),
        insert_table(w, 6, &p[6]),
        insert_table(w, 7, &p[7]),
        insert_table(w, 8, &p[8]),
        insert_table(w, 9, &p[9]),
        insert_table(w, 10, &p[10]),
        insert_table(w, 11, &p[11])
    );
    [r0, r1, r2, r3, r4, r5, r6, r7, r8, r9, r10, r11]
}

/// One table's rows not yet taken by a flush, across partitions.
#[derive(Debug, Default, Clone, Copy)]
struct TableLoad {
    rows: usize,
    bytes: usize,
    /// When its oldest record was taken.
    oldest: Option<Instant>,
}

/// A table whose rows not yet flushed, across partitions, stay below both a quarter of
/// `batch_max_rows` and of `batch_max_bytes` is small: it waits for a later flush.
fn small(max_rows: usize, max_bytes: u64) -> (usize, u64) {
    (max_rows.div_ceil(4).max(1), max_bytes.div_ceil(4).max(1))
}

/// Do `pending` (rows and bytes per table, every partition together) reach `rows` in one
/// table, or `bytes` in all of them together?
fn reaches(pending: &[(usize, usize); 12], rows: usize, bytes: u64) -> bool {
    let total: u64 = pending.iter().map(|&(_, b)| b as u64).sum();
    pending.iter().any(|&(r, _)| r >= rows) || total >= bytes
}

/// Do the rows not yet taken by a flush (`pending`: rows and bytes per table, every
/// partition together) fill a batch: one table's rows reach `batch_max_rows` (the size of
/// that table's INSERT, as ClickHouse wants them: large and few), or all of them reach
/// `batch_max_bytes` (the bound on the memory they take)?
fn is_full(pending: &[(usize, usize); 12], cfg: &SinkConfig) -> bool {
    reaches(pending, cfg.batch_max_rows as usize, cfg.batch_max_bytes)
}

/// Is a quarter of a batch pending: one table at a quarter of `batch_max_rows`, or all of
/// them at a quarter of `batch_max_bytes` (enough for a flush as soon as the sink is
/// caught up, [`CAUGHT_UP_IDLE`])?
fn quarter_full(pending: &[(usize, usize); 12], cfg: &SinkConfig) -> bool {
    let (rows, bytes) = small(cfg.batch_max_rows as usize, cfg.batch_max_bytes);
    reaches(pending, rows, bytes)
}

/// The tables a flush takes. A table's rows wait for a later flush while they are few, so
/// that a small table does not get a part of a few rows in every flush (each part is a
/// new directory of files for ClickHouse to write and merge): a table is taken once its
/// rows, across partitions, reach a quarter of `batch_max_rows` or of `batch_max_bytes`, or
/// its oldest record is `batch_max_age_ms` old. `all` (shutdown, or caught up) takes every
/// table with rows; so does a flush of `full` batches (all tables together at
/// `batch_max_bytes`) in which no table qualifies.
fn due_tables(
    load: &[TableLoad; 12],
    cfg: &SinkConfig,
    all: bool,
    full: bool,
    now: Instant,
) -> [bool; 12] {
    let (min_rows, min_bytes) = small(cfg.batch_max_rows as usize, cfg.batch_max_bytes);
    let age = Duration::from_millis(cfg.batch_max_age_ms);
    let mut due = [false; 12];
    for (d, l) in due.iter_mut().zip(load) {
        *d = l.rows > 0
            && (all
                || l.rows >= min_rows
                || l.bytes as u64 >= min_bytes
                || l.oldest.is_some_and(|o| o + age <= now));
    }
    if full && !due.iter().any(|d| *d) {
        for (d, l) in due.iter_mut().zip(load) {
            *d = l.rows > 0;
        }
    }
    due
}

/// Per table, the buffers of committed flushes, cleared and kept: a partition's next rows of
/// a table go into the largest one instead of growing fresh memory (fresh pages are zeroed
/// by the kernel, a few percent of the machine when every flush grew its buffers anew).
#[derive(Debug, Default)]
struct Spares([Vec<TableBuf>; 12]);

impl Spares {
    /// Keeps `buf` (cleared) for table `t`, at most `cap` per table, the largest ones.
    fn keep(&mut self, t: usize, mut buf: TableBuf, cap: usize) {
        buf.clear();
        if buf.capacity() == 0 {
            return;
        }
        let pool = &mut self.0[t];
        if pool.len() < cap {
            pool.push(buf);
        } else if let Some(least) = pool.iter_mut().min_by_key(|b| b.capacity())
            && least.capacity() < buf.capacity()
        {
            *least = buf;
        }
    }

    /// Puts the largest buffer kept for table `t`, if any, in place of the empty `buf`.
    fn give(&mut self, t: usize, buf: &mut TableBuf) {
        let pool = &mut self.0[t];
        if let Some(i) = (0..pool.len()).max_by_key(|&i| pool[i].capacity()) {
            *buf = pool.swap_remove(i);
        }
    }
}

/// The flush task died (a bug): its batches are lost to this process, none committed.
fn flush_task_failed(e: tokio::task::JoinError) -> Error {
    Error::Io {
        path: "sink flush task".into(),
        source: std::io::Error::other(e.to_string()),
    }
}

/// The flush in flight's outcome, when there is one (else never).
async fn inflight_done(
    task: &mut Option<InFlight>,
) -> std::result::Result<(Vec<Flushing>, FirstAttempt), tokio::task::JoinError> {
    match task {
        Some(t) => t.await,
        None => std::future::pending().await,
    }
}

/// The last `cap` event ids of a partition (their [`decode::id_key`]s), oldest forgotten
/// first.
#[derive(Debug, Default)]
struct RecentIds {
    cap: usize,
    set: HashSet<u128, zt_runtime::digest::BuildDigestHasher>,
    order: VecDeque<u128>,
}

impl RecentIds {
    fn new(cap: usize) -> Self {
        RecentIds {
            cap,
            ..RecentIds::default()
        }
    }

    /// False when `key` is already there (a repeat); else remembers it.
    fn insert(&mut self, key: u128) -> bool {
        if self.cap == 0 {
            return true;
        }
        if !self.set.insert(key) {
            return false;
        }
        self.order.push_back(key);
        while self.order.len() > self.cap {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        true
    }
}

/// The records of a table's buffer still to insert (ranges of record indexes), and how
/// many it skipped (the table holds them).
type Pending = (Vec<(usize, usize)>, usize);

/// A table's buffer of one partition and the ranges of its records to insert.
type Runs<'a> = (&'a TableBuf, &'a [(usize, usize)]);

/// What is known before [`Sink::load_table`] inserts a table's rows of one partition.
#[derive(Debug)]
enum Before {
    /// The first attempt, for this partition alone, failed so.
    Failed(Error),
    /// An INSERT with other partitions' records failed: some may be stored; re-read first.
    SharedFailed,
}

/// One INSERT into table `t` of `parts` (none when empty): how many partitions it carried
/// and how it went.
async fn insert_table(w: &Writer, t: usize, parts: &[Runs<'_>]) -> Option<(usize, Result<()>)> {
    if parts.is_empty() {
        return None;
    }
    Some((parts.len(), w.insert_many(t, parts).await))
}

/// Did an operation finish, or was its partition given up (revoked, shutting down)?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Done,
    Abandoned,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    Go,
    Revoked,
    Shutdown,
}

struct Sink {
    p: SinkParams,
    consumer: Arc<StreamConsumer<SinkContext>>,
    ctx: SinkContext,
    producer: FutureProducer,
    writer: Writer,
    metrics: SinkMetrics,
    ch_ready: ReadyHandle,
    kafka_ready: ReadyHandle,
    shutdown: Shutdown,
    parts: HashMap<PartKey, PartState>,
    /// Assigned partitions, each with the epoch of its assignment: records received under
    /// an earlier assignment of the partition (still in the decode pipeline when it was
    /// revoked) are dropped, never mixed into the new assignment's batches.
    assigned: HashMap<PartKey, u64>,
    next_epoch: u64,
    /// Buffers of committed flushes, cleared and kept for the next rows.
    spares: Spares,
    /// Records received while waiting out a retry; fed to the decoder, in order, before
    /// polling again.
    stash: VecDeque<Raw>,
    /// Decodes and maps received records on its own thread, so that decoding the next
    /// records overlaps the INSERTs of a flush (the consumer is not polled meanwhile).
    decoder: Decoder,
    paused: bool,
    resume: bool,
    /// Per table, the rows and bytes of row data not yet taken by a flush, across
    /// partitions ([`is_full`]).
    pending: [(usize, usize); 12],
    /// Re-joins when left without partitions in a stuck group.
    idle: IdleMemberWatch,
    /// The flush whose INSERTs are running, while the next batches fill.
    inflight: Option<InFlight>,
}

fn error_text(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// The server's own text of a ClickHouse error, for dead letters.
fn server_text(e: &Error) -> String {
    match e {
        Error::ClickHouse {
            source: clickhouse::error::Error::BadResponse(text),
            ..
        } => text.trim().to_owned(),
        other => error_text(other),
    }
}

impl Sink {
    async fn run_loop(&mut self) -> Result<()> {
        let mut idle_tick = tokio::time::interval(IDLE_PATIENCE / 4);
        idle_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if let Some(r) = self.stash.pop_front() {
                self.decoder.submit(r);
                continue;
            }
            // A retry wait (in a flush, a resume read or a dead-letter send) pauses the
            // partitions; normal polling resumes them.
            if self.paused {
                self.set_paused(false);
            }
            let deadline = self.next_deadline();
            let consumer = self.consumer.clone();
            let shutdown = self.shutdown.clone();
            let room = self.decoder.has_room();
            let pending = self.decoder.pending() > 0;
            let busy = self.inflight.is_some();
            // Caught up: polled with room and nothing in the decoder, the consumer gives
            // nothing for CAUGHT_UP_IDLE (a backlog or burst has been read to its end).
            // With at least a quarter of a batch pending, flush now instead of waiting
            // out `batch_max_age_ms`; below that the age decides, so a trickle of records
            // does not become a trickle of small parts.
            let may_catch_up =
                room && !busy && !pending && self.stash.is_empty() && self.quarter_full();
            // Keep the decoder fed first (receiving is cheap, decoding is not), so that it
            // has records to decode while a flush's INSERTs run.
            tokio::select! {
                biased;
                _ = shutdown.wait() => break,
                r = inflight_done(&mut self.inflight), if busy => {
                    self.inflight = None;
                    let (group, first) = r.map_err(flush_task_failed)?;
                    self.finish_flush(group, first).await?;
                }
                _ = tokio::time::sleep_until(deadline) => self.flush_due().await?,
                _ = idle_tick.tick(), if !busy => self.rejoin_if_idle_and_stuck()?,
                _ = tokio::time::sleep(CAUGHT_UP_IDLE), if may_catch_up => {
                    self.flush_next(FlushReason::CaughtUp).await?;
                }
                // Never while a flush's INSERTs run: rebalance callbacks run in `recv`.
                r = consumer.recv(), if room && !busy => match r {
                    Ok(m) => {
                        self.receive(&m);
                        // Take what the consumer already holds without another round
                        // through this select (a timer and two futures per record).
                        self.fill_decoder(DRAIN).await;
                    }
                    Err(e) => self.on_kafka_error(e).await,
                },
                d = self.decoder.next(), if pending => {
                    self.on_decoded(d?).await?;
                    for _ in 0..DRAIN {
                        match self.decoder.try_next() {
                            Some(d) => self.on_decoded(d).await?,
                            None => break,
                        }
                    }
                }
            }
        }
        tracing::info!("shutting down: flushing buffered records");
        self.flush_all().await?;
        // An INSERT that outlived its timeout may still store its rows; a successor's
        // resume read must not run beside it, so wait for it (once, up to
        // `insert_timeout_ms` each) before leaving the group.
        if let Err(e) = self.writer.settle_failed_inserts().await {
            tracing::warn!(error = %e, "an earlier insert had not ended at shutdown");
        }
        Ok(())
    }

    /// Re-joins the group when this member has held no partition for [`IDLE_PATIENCE`]
    /// while the group's committed offsets stood still with records left (a restarted
    /// member handed nothing by tansu; `zt_kafka::group`, docs/reliability.md).
    fn rejoin_if_idle_and_stuck(&mut self) -> Result<()> {
        if !self.idle.should_rejoin(&*self.consumer, &self.p.topics) {
            return Ok(());
        }
        tracing::warn!(
            seconds = IDLE_PATIENCE.as_secs(),
            "partitions this member does not hold make no progress; re-joining the group"
        );
        self.metrics
            .errors
            .with_label_values(&["idle_member_stuck"])
            .inc();
        self.consumer.unsubscribe();
        let topics: Vec<&str> = self.p.topics.iter().map(String::as_str).collect();
        self.consumer
            .subscribe(&topics)
            .map_err(|source| Error::Kafka {
                operation: "subscribe",
                source,
            })?;
        self.idle.nudge();
        Ok(())
    }

    /// Tags a received record with its partition's assignment epoch and hands it to the
    /// decoder. Records of partitions not (or no longer) assigned are dropped.
    fn receive<M: Message>(&mut self, m: &M) {
        self.apply_rebalance_events();
        if let Some(r) = self.raw(m) {
            self.decoder.submit(r);
        }
    }

    fn raw<M: Message>(&self, m: &M) -> Option<Raw> {
        let key: PartKey = (m.topic().to_owned(), m.partition());
        let epoch = *self.assigned.get(&key)?;
        Some(Raw {
            key,
            epoch,
            offset: m.offset(),
            timestamp_ms: m.timestamp().to_millis(),
            value: m.payload().unwrap_or(&[]).to_vec(),
            null: m.payload().is_none(),
        })
    }

    /// At least a quarter of a batch is pending ([`quarter_full`]).
    fn quarter_full(&self) -> bool {
        quarter_full(&self.pending, &self.p.sink)
    }

    fn next_deadline(&self) -> tokio::time::Instant {
        let age = Duration::from_millis(self.p.sink.batch_max_age_ms);
        let far = Instant::now() + Duration::from_secs(3600);
        let at = self
            .parts
            .values()
            .flat_map(|s| {
                let tables = s.batch.tables.iter().filter_map(TableBuf::first_at);
                s.batch.first_at.into_iter().chain(tables)
            })
            .map(|t| t + age)
            .min()
            .unwrap_or(far);
        tokio::time::Instant::from_std(at)
    }

    async fn on_kafka_error(&mut self, e: rdkafka::error::KafkaError) {
        self.metrics.errors.with_label_values(&["kafka"]).inc();
        self.kafka_ready.set_not_ready("consumer error");
        tracing::warn!(error = %e, "kafka consumer error");
        // Errors can repeat quickly while the broker is away: do not spin.
        tokio::time::sleep(Duration::from_millis(
            self.p.sink.retry_initial_backoff_ms.max(100),
        ))
        .await;
    }

    /// Applies rebalance events; returns the keys revoked.
    fn apply_rebalance_events(&mut self) -> Vec<PartKey> {
        let mut revoked = Vec::new();
        for ev in self.ctx.take_events() {
            match ev {
                RebalanceEvent::Revoked(keys) => {
                    for k in keys {
                        if let Some(st) = self.parts.remove(&k)
                            && !st.batch.originals.is_empty()
                        {
                            tracing::info!(topic = %k.0, partition = k.1, records = st.batch.originals.len(),
                                "revoked: abandoning buffered records (not committed; re-read by the next owner)");
                        }
                        self.assigned.remove(&k);
                        self.metrics
                            .consumer_lag
                            .with_label_values(&[k.0.as_str(), &k.1.to_string()])
                            .set(0);
                        revoked.push(k);
                    }
                }
                RebalanceEvent::Assigned(keys) => {
                    for k in keys {
                        // Resume state is read afresh when the first record arrives.
                        self.parts.remove(&k);
                        self.next_epoch += 1;
                        self.assigned.insert(k, self.next_epoch);
                    }
                }
            }
        }
        revoked
    }

    fn state_mut(&mut self, topic: &str, partition: i32) -> Option<&mut PartState> {
        self.parts
            .iter_mut()
            .find(|((t, p), _)| *p == partition && t == topic)
            .map(|(_, s)| s)
    }

    async fn on_decoded(&mut self, d: Decoded) -> Result<()> {
        self.apply_rebalance_events();
        let Decoded {
            raw,
            rows: mapped,
            mut tombstone,
            event_id,
        } = d;
        let Raw {
            key,
            epoch,
            offset,
            timestamp_ms,
            value,
            null: _,
        } = raw;
        if !self.is_current(&key, Some(epoch)) {
            // Received under an assignment that was revoked since: the partition's next
            // owner (or this member's new assignment) reads it again.
            return Ok(());
        }
        let (topic, partition) = (key.0.as_str(), key.1);
        if self.state_mut(topic, partition).is_none() {
            // Reading the resume state may wait out retries, polling the consumer: never
            // with a flush in flight.
            self.complete_inflight().await?;
            if !self.is_current(&key, Some(epoch)) {
                return Ok(());
            }
            self.kafka_ready.set_ready();
            match self.init_partition(&key, offset).await? {
                Some(st) => {
                    self.parts.insert(key.clone(), st);
                }
                None => return Ok(()),
            }
        }
        // An event stored from this partition shortly before (an upstream replay): no
        // rows, like a tombstone; its offset is still committed with the batch.
        let repeat = match (&event_id, self.state_mut(topic, partition)) {
            (Some(id), Some(st)) => {
                st.batch.last_offset.is_none_or(|last| offset > last) && !st.recent.insert(*id)
            }
            _ => false,
        };
        let mapped = if repeat {
            self.metrics
                .events_deduplicated
                .with_label_values(&[topic])
                .inc();
            tombstone = None;
            Ok(EncodedRows::default())
        } else {
            mapped
        };
        let rows = match mapped {
            Ok(r) => Some(r),
            Err((reason, message)) => {
                // Sending may wait out retries, polling the consumer: never with a flush
                // in flight.
                self.complete_inflight().await?;
                if !self.is_current(&key, Some(epoch)) {
                    return Ok(());
                }
                let rej = Rejected {
                    topic,
                    partition,
                    offset,
                    timestamp_ms,
                    value: &value,
                    reason,
                    table: None,
                    message,
                };
                if self.dead_letter(&key, &rej).await? == Flow::Abandoned {
                    return Ok(());
                }
                None
            }
        };
        let skipped = tombstone.map(|t| self.metrics.rows_skipped.with_label_values(&[TABLES[t]]));
        let Some(st) = self.parts.get_mut(&key) else {
            return Ok(()); // revoked while dead-lettering
        };
        let b = &mut st.batch;
        if b.last_offset.is_some_and(|last| offset <= last) {
            return Ok(()); // delivered twice; already in this batch or flushed
        }
        b.last_offset = Some(offset);
        if let Some(c) = skipped {
            c.inc();
        }
        b.first_at.get_or_insert_with(Instant::now);
        b.originals.push(Original {
            offset,
            timestamp_ms,
            value,
        });
        let mut added = [(0usize, 0usize); 12];
        if let Some(enc) = rows {
            for (t, buf) in b.tables.iter_mut().enumerate() {
                let n = enc.tables[t].0;
                if n > 0 {
                    let bytes = enc.table(t);
                    if buf.is_unallocated() {
                        // The first rows since a flush took this table's buffer.
                        self.spares.give(t, buf);
                    }
                    buf.push(offset, bytes, n);
                    added[t] = (n as usize, bytes.len());
                }
            }
        }
        for (p, a) in self.pending.iter_mut().zip(added) {
            p.0 += a.0;
            p.1 += a.1;
        }
        if self.is_full() {
            self.flush_next(FlushReason::Full).await?;
        }
        Ok(())
    }

    /// The state of a newly started partition whose first record is at `first`: which
    /// offsets `>= first` each table already holds. `None` when the partition was revoked
    /// (or shutdown began) while ClickHouse could not be read.
    async fn init_partition(&mut self, key: &PartKey, first: i64) -> Result<Option<PartState>> {
        let kind = self
            .p
            .kinds
            .get(&key.0)
            .copied()
            .unwrap_or(TopicKind::Events);
        let window = if kind == TopicKind::Events {
            self.p.sink.dedup_window_records as usize
        } else {
            0
        };
        let mut st = PartState {
            batch: Batch::default(),
            present: vec![OffsetSet::default(); TABLES.len()],
            recent: RecentIds::new(window),
            committed: first,
        };
        if !self.resume {
            // The test-only negative control: nothing already in ClickHouse counts, the
            // event ids before `first` included.
            return Ok(Some(st));
        }
        // Only the tables this topic's records feed (the others may not even exist).
        let all: &[usize] = kind.tables();
        let mut backoff = Backoff::new(&self.p.sink);
        loop {
            for s in &mut st.present {
                *s = OffsetSet::default();
            }
            let present = &mut st.present;
            let mut r = self
                .writer
                .present(&key.0, key.1, (first, i64::MAX), all, |t, o| {
                    present[t].insert(o)
                })
                .await;
            if r.is_ok() && window > 0 {
                // Seed the dedup window with the events stored before `first` (committed,
                // so complete in every table); records from `first` on go through it as
                // they are read again.
                let from = first.saturating_sub(window as i64);
                match self
                    .writer
                    .stored_event_ids(&key.0, key.1, (from, first))
                    .await
                {
                    Ok(ids) => {
                        st.recent = RecentIds::new(window);
                        for id in ids {
                            st.recent.insert(decode::id_key(&id));
                        }
                    }
                    Err(e) => r = Err(e),
                }
            }
            match r {
                Ok(()) => {
                    self.ch_ready.set_ready();
                    let held: usize = st.present.iter().map(OffsetSet::runs).sum();
                    tracing::info!(topic = %key.0, partition = key.1, from_offset = first, runs = held,
                        "partition started; resume state read");
                    return Ok(Some(st));
                }
                Err(e) if e.is_retryable() => {
                    self.note_ch_error(&e, "resume");
                    if self.wait_backoff(&mut backoff, key).await != Wait::Go {
                        return Ok(None);
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn note_ch_error(&self, e: &Error, operation: &str) {
        self.metrics.errors.with_label_values(&["clickhouse"]).inc();
        self.metrics.retries.with_label_values(&[operation]).inc();
        self.ch_ready
            .set_not_ready("clickhouse unavailable; retrying");
        tracing::warn!(error = %e, operation, "clickhouse failed; retrying with backoff");
    }

    /// When the oldest pending record of any partition is `batch_max_age_ms` old, every
    /// partition's pending records are flushed with it.
    async fn flush_due(&mut self) -> Result<()> {
        if self.next_deadline() <= tokio::time::Instant::now() {
            self.flush_next(FlushReason::Age).await?;
        }
        Ok(())
    }

    /// Flushes everything and waits for it (at shutdown): the flush in flight, then the
    /// pending records of every partition.
    async fn flush_all(&mut self) -> Result<()> {
        self.complete_inflight().await?;
        self.start_flush(true);
        self.complete_inflight().await
    }

    /// A flush is due (`reason`, counted in `zt_sink_flushes_total`): waits for the flush
    /// in flight (its INSERTs, then its commit), takes what the consumer already holds into
    /// the decoder while nothing is being inserted, and starts the next flush without
    /// waiting for it.
    async fn flush_next(&mut self, reason: FlushReason) -> Result<()> {
        self.metrics
            .flushes
            .with_label_values(&[reason.label()])
            .inc();
        self.complete_inflight().await?;
        self.fill_decoder(usize::MAX).await;
        // Caught up: the small tables' rows go too rather than wait out their age.
        self.start_flush(reason == FlushReason::CaughtUp);
        Ok(())
    }

    /// Feeds the decoder the records received during a retry wait, then up to `limit` of
    /// the records the consumer already holds, within the decoder's room. Only called with
    /// no INSERT in flight: rebalance callbacks may run here.
    async fn fill_decoder(&mut self, limit: usize) {
        while let Some(r) = self.stash.pop_front() {
            self.decoder.submit(r);
        }
        let consumer = self.consumer.clone();
        for _ in 0..limit {
            if !self.decoder.has_room() {
                break;
            }
            match poll_now(consumer.recv()) {
                Some(Ok(m)) => self.receive(&m),
                Some(Err(e)) => {
                    self.on_kafka_error(e).await;
                    break;
                }
                None => break,
            }
        }
    }

    /// The tables a flush takes ([`due_tables`]; `all`: every one with rows).
    fn tables_due(&self, all: bool) -> [bool; 12] {
        let mut load = [TableLoad::default(); 12];
        for st in self.parts.values() {
            for (l, buf) in load.iter_mut().zip(&st.batch.tables) {
                l.rows += buf.row_total();
                l.bytes += buf.byte_total();
                if let Some(at) = buf.first_at() {
                    l.oldest = Some(l.oldest.map_or(at, |o| o.min(at)));
                }
            }
        }
        due_tables(&load, &self.p.sink, all, self.is_full(), Instant::now())
    }

    /// Are the batches full ([`is_full`])?
    fn is_full(&self) -> bool {
        is_full(&self.pending, &self.p.sink)
    }

    /// Recounts [`Sink::pending`] from the partitions' batches.
    fn recount_pending(&mut self) {
        self.pending = [(0, 0); 12];
        for st in self.parts.values() {
            for (p, buf) in self.pending.iter_mut().zip(&st.batch.tables) {
                p.0 += buf.row_total();
                p.1 += buf.byte_total();
            }
        }
    }

    /// Takes the rows of the tables due ([`due_tables`]) out of every partition and
    /// starts inserting them in a task: one INSERT per table for every partition's records
    /// (fewer and larger INSERTs, so fewer parts for ClickHouse to write and merge), the
    /// tables' INSERTs at once. A partition's commit then goes past every record taken,
    /// but not past a record whose rows wait in a table left for later. The sink goes on
    /// taking decoded records into its batches meanwhile, but does not poll the consumer
    /// until [`Sink::complete_inflight`] has ended the flush and committed it.
    fn start_flush(&mut self, all: bool) {
        let resume = self.resume;
        let due = self.tables_due(all);
        let mut group = Vec::new();
        for (key, st) in &mut self.parts {
            let Some(last) = st.batch.last_offset else {
                continue;
            };
            let taking = (0..TABLES.len()).any(|t| due[t] && st.batch.tables[t].records() > 0);
            // Nothing to insert and no record taken since the last flush: nothing to do.
            if !taking && st.batch.first_at.is_none() {
                continue;
            }
            st.batch.first_at = None;
            let mut tables: [TableBuf; 12] = Default::default();
            let mut commit_to = last + 1;
            for t in 0..TABLES.len() {
                if due[t] {
                    tables[t] = std::mem::take(&mut st.batch.tables[t]);
                    tables[t].freeze();
                } else if let Some(o) = st.batch.tables[t].first_offset() {
                    commit_to = commit_to.min(o);
                }
            }
            let present = std::mem::take(&mut st.present);
            // runs[t]: the records taken that table t does not hold yet.
            let runs = tables
                .iter()
                .zip(present.iter())
                .map(|(buf, present)| {
                    buf.pending_runs(0, buf.records(), |o| resume && present.contains(o))
                })
                .collect();
            group.push(Flushing {
                key: key.clone(),
                epoch: self.assigned.get(key).copied(),
                tables,
                present,
                runs,
                commit_to,
            });
        }
        self.recount_pending();
        if group.is_empty() {
            return;
        }
        let writer = self.writer.clone();
        self.inflight = Some(tokio::spawn(async move {
            let first = first_attempt(&writer, &group).await;
            (group, first)
        }));
    }

    /// Waits for the flush in flight, if any, and ends it ([`Sink::finish_flush`]).
    async fn complete_inflight(&mut self) -> Result<()> {
        let Some(task) = self.inflight.take() else {
            return Ok(());
        };
        let (group, first) = task.await.map_err(flush_task_failed)?;
        self.finish_flush(group, first).await
    }

    /// Ends a flush whose first attempt ran: whatever failed goes the careful way, then
    /// every partition's next offset is committed in one request, and the partitions get
    /// their resume state back.
    async fn finish_flush(&mut self, mut group: Vec<Flushing>, first: FirstAttempt) -> Result<()> {
        let mut flows = vec![Flow::Done; group.len()];
        // Table by table and partition by partition, whatever failed goes the careful
        // way: re-read what the table holds, retry with backoff, bisect a rejected INSERT
        // down to the record.
        for (t, res) in first.into_iter().enumerate() {
            let mut err = match res {
                Some((n, Err(e))) if n > 1 => {
                    if e.is_retryable() {
                        self.note_ch_error(&e, "insert");
                    } else {
                        tracing::info!(
                            table = TABLES[t],
                            partitions = n,
                            "insert rejected; loading its partitions one by one"
                        );
                    }
                    None
                }
                Some((_, Err(e))) => Some(e),
                done => {
                    let ok = done.is_some();
                    for f in &mut group {
                        let (pending, skipped) = std::mem::take(&mut f.runs[t]);
                        if ok {
                            for &(a, z) in &pending {
                                for i in a..z {
                                    f.present[t].insert(f.tables[t].offset(i));
                                }
                            }
                        }
                        if skipped > 0 {
                            self.metrics
                                .rows_skipped
                                .with_label_values(&[TABLES[t]])
                                .inc_by(skipped as u64);
                        }
                    }
                    if ok {
                        self.ch_ready.set_ready();
                    }
                    continue;
                }
            };
            for g in 0..group.len() {
                if flows[g] == Flow::Abandoned || group[g].runs[t].0.is_empty() {
                    continue;
                }
                // A failed INSERT of several partitions' records may have stored some of
                // them (a part per month): each partition re-reads what it holds first.
                let before = match err.take() {
                    Some(e) => Before::Failed(e),
                    // Shared: every partition of it re-reads (a lone one got the error).
                    None => Before::SharedFailed,
                };
                let f = &mut group[g];
                let flow = self
                    .load_table(&f.key, t, &f.tables[t], &mut f.present[t], before)
                    .await?;
                if flow == Flow::Abandoned {
                    flows[g] = Flow::Abandoned;
                }
            }
        }
        // A partition revoked meanwhile is its next owner's to commit.
        self.apply_rebalance_events();
        let mut next: Vec<(PartKey, i64)> = Vec::with_capacity(group.len());
        for (f, flow) in group.iter().zip(flows.iter_mut()) {
            if *flow == Flow::Done && !self.is_current(&f.key, f.epoch) {
                *flow = Flow::Abandoned;
            }
            let ahead = self
                .parts
                .get(&f.key)
                .is_some_and(|st| f.commit_to > st.committed);
            if *flow == Flow::Done && ahead {
                failpoint::hit_on(Point::BeforeCommit, Some(&f.key.0));
                next.push((f.key.clone(), f.commit_to));
            }
        }
        let committed = self.commit_all(&next).await?;
        for (g, f) in group.iter_mut().enumerate() {
            let rows: usize = f.tables.iter().map(TableBuf::row_total).sum();
            self.metrics.batch_rows.observe(rows as f64);
            let Some(&(_, next)) = next.iter().find(|(k, _)| *k == f.key) else {
                continue;
            };
            if !committed.contains(&f.key) {
                flows[g] = Flow::Abandoned;
                continue;
            }
            failpoint::hit(Point::AfterCommit);
            let Some(st) = self.parts.get_mut(&f.key) else {
                continue;
            };
            st.committed = next;
            // The records committed leave the batch, counted (one label lookup per
            // partition and flush, not per record).
            let done = st.batch.originals.partition_point(|o| o.offset < next);
            let bytes: usize = st.batch.originals[..done]
                .iter()
                .map(|o| o.value.len())
                .sum();
            st.batch.originals.drain(..done);
            self.metrics.batch_records.observe(done as f64);
            self.metrics
                .records_received
                .with_label_values(&[f.key.0.as_str()])
                .inc_by(done as u64);
            self.metrics
                .bytes_received
                .with_label_values(&[f.key.0.as_str()])
                .inc_by(bytes as u64);
            for s in &mut f.present {
                s.prune_below(next);
            }
        }
        if !committed.is_empty() {
            self.kafka_ready.set_ready();
        }
        for (f, flow) in group.into_iter().zip(flows) {
            let current = self.is_current(&f.key, f.epoch);
            match flow {
                Flow::Done => {
                    if current && let Some(st) = self.parts.get_mut(&f.key) {
                        st.present = f.present;
                    }
                    for (t, buf) in f.tables.into_iter().enumerate() {
                        self.spares.keep(t, buf, self.parts.len());
                    }
                }
                Flow::Abandoned => {
                    let rows: usize = f.tables.iter().map(TableBuf::row_total).sum();
                    tracing::info!(topic = %f.key.0, partition = f.key.1, rows,
                        "flush abandoned (partition revoked or shutting down); not committed");
                    if current {
                        // Shutting down: nothing after this flush of the partition may be
                        // loaded or committed by this member any more.
                        self.parts.remove(&f.key);
                        self.assigned.remove(&f.key);
                    }
                }
            }
        }
        // Whatever is left (a partition abandoned, revoked or assigned meanwhile).
        self.recount_pending();
        Ok(())
    }

    /// Is `key` still assigned under the assignment `epoch`?
    fn is_current(&self, key: &PartKey, epoch: Option<u64>) -> bool {
        epoch.is_some() && self.assigned.get(key).copied() == epoch
    }

    /// Inserts the rows of one table of a batch, skipping records the table already
    /// holds, retrying transient failures and bisecting rejected inserts down to the
    /// record, which is dead-lettered. `before` says what a first attempt (made for the
    /// whole flush) already found.
    async fn load_table(
        &mut self,
        key: &PartKey,
        tidx: usize,
        buf: &TableBuf,
        present: &mut OffsetSet,
        before: Before,
    ) -> Result<Flow> {
        let n = buf.records();
        if n == 0 {
            return Ok(Flow::Done);
        }
        let table = TABLES[tidx];
        // Ranges of record indexes still to load; a rejected range is split in halves.
        let mut work = vec![(0usize, n)];
        let mut backoff = Backoff::new(&self.p.sink);
        let mut refresh = matches!(before, Before::SharedFailed);
        let mut first = match before {
            Before::Failed(e) => Some(e),
            Before::SharedFailed => None,
        };
        while let Some(&(a, b)) = work.last() {
            if refresh && self.resume {
                let range = (buf.offset(a), buf.offset(b - 1));
                let r = match self.writer.settle_failed_inserts().await {
                    Ok(()) => {
                        self.writer
                            .present(&key.0, key.1, range, &[tidx], |_, o| present.insert(o))
                            .await
                    }
                    Err(e) => Err(e),
                };
                match r {
                    Ok(()) => refresh = false,
                    Err(e) if e.is_retryable() => {
                        self.note_ch_error(&e, "resume");
                        if self.wait_backoff(&mut backoff, key).await != Wait::Go {
                            return Ok(Flow::Abandoned);
                        }
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            }
            let resume = self.resume;
            let (runs, skipped) = buf.pending_runs(a, b, |o| resume && present.contains(o));
            if skipped > 0 {
                self.metrics
                    .rows_skipped
                    .with_label_values(&[table])
                    .inc_by(skipped as u64);
            }
            if runs.is_empty() {
                work.pop();
                continue;
            }
            // The first attempt's outcome may be given (it ran concurrently with the other
            // tables' INSERTs, over the same records).
            let result = match first.take() {
                Some(e) => Err(e),
                None => self.writer.insert(tidx, buf, &runs).await,
            };
            match result {
                Ok(()) => {
                    for &(s, e) in &runs {
                        for i in s..e {
                            present.insert(buf.offset(i));
                        }
                    }
                    self.ch_ready.set_ready();
                    work.pop();
                }
                Err(e) if e.is_rejection() => {
                    work.pop();
                    if b - a == 1 {
                        let first = buf.offset(a);
                        // Its original is kept in its partition's batch until committed.
                        let Some(orig) = self.parts.get(key).and_then(|st| {
                            let o = &st.batch.originals;
                            let i = o.binary_search_by_key(&first, |o| o.offset).ok()?;
                            Some(o[i].clone())
                        }) else {
                            // Revoked meanwhile: the next owner loads (and rejects) it.
                            return Ok(Flow::Abandoned);
                        };
                        let rej = Rejected {
                            topic: &key.0,
                            partition: key.1,
                            offset: first,
                            timestamp_ms: orig.timestamp_ms,
                            value: &orig.value,
                            reason: Reason::ClickHouseRejected,
                            table: Some(table),
                            message: server_text(&e),
                        };
                        if self.dead_letter(key, &rej).await? == Flow::Abandoned {
                            return Ok(Flow::Abandoned);
                        }
                    } else {
                        // Halves on record boundaries: a record's rows stay together.
                        let mid = a + (b - a) / 2;
                        tracing::info!(table, rows = buf.rows(a, b), "insert rejected; bisecting");
                        work.push((mid, b));
                        work.push((a, mid));
                    }
                }
                Err(e) if e.is_retryable() => {
                    self.note_ch_error(&e, "insert");
                    refresh = true;
                    if self.wait_backoff(&mut backoff, key).await != Wait::Go {
                        return Ok(Flow::Abandoned);
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(Flow::Done)
    }

    async fn dead_letter(&mut self, key: &PartKey, rej: &Rejected<'_>) -> Result<Flow> {
        let dl = dlq::dead_letter(rej);
        let mut backoff = Backoff::new(&self.p.sink);
        loop {
            match dlq::send(&self.producer, &self.p.dlq_topic, &dl).await {
                Ok(()) => {
                    self.metrics
                        .dead_lettered
                        .with_label_values(&[rej.reason.as_str()])
                        .inc();
                    tracing::warn!(topic = rej.topic, partition = rej.partition, offset = rej.offset,
                        reason = rej.reason.as_str(), table = rej.table.unwrap_or(""), error = %dl.message,
                        "record dead-lettered");
                    return Ok(Flow::Done);
                }
                Err(e) if e.is_retryable() => {
                    self.metrics.errors.with_label_values(&["dlq"]).inc();
                    self.metrics.retries.with_label_values(&["dlq"]).inc();
                    tracing::warn!(error = %error_text(&e), "dead letter not sent; retrying");
                    if self.wait_backoff(&mut backoff, key).await != Wait::Go {
                        return Ok(Flow::Abandoned);
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Commits every partition's next offset in one request; when that fails, each
    /// partition on its own, with retries. The partitions committed (not revoked meanwhile).
    async fn commit_all(&mut self, next: &[(PartKey, i64)]) -> Result<Vec<PartKey>> {
        if next.is_empty() {
            return Ok(vec![]);
        }
        let consumer = self.consumer.clone();
        let offsets = next.to_vec();
        let r = tokio::task::spawn_blocking(move || {
            let mut tpl = TopicPartitionList::new();
            for ((topic, partition), o) in &offsets {
                tpl.add_partition_offset(topic, *partition, Offset::Offset(*o))?;
            }
            consumer.commit(&tpl, CommitMode::Sync)
        })
        .await;
        match r {
            Ok(Ok(())) => {
                self.metrics.commits.with_label_values(&["ok"]).inc();
                return Ok(next.iter().map(|(k, _)| k.clone()).collect());
            }
            Ok(Err(e)) => {
                self.metrics.commits.with_label_values(&["error"]).inc();
                self.metrics.errors.with_label_values(&["commit"]).inc();
                tracing::warn!(partitions = next.len(), error = %e, "failed to commit offsets; retrying partition by partition");
            }
            Err(e) => {
                tracing::warn!(error = %e, "commit task failed; retrying partition by partition")
            }
        }
        let mut done = Vec::with_capacity(next.len());
        for (key, o) in next {
            if self.commit(key, *o).await? == Flow::Done {
                done.push(key.clone());
            }
        }
        Ok(done)
    }

    async fn commit(&mut self, key: &PartKey, next: i64) -> Result<Flow> {
        let mut backoff = Backoff::new(&self.p.sink);
        loop {
            let consumer = self.consumer.clone();
            let (topic, partition) = key.clone();
            let r = tokio::task::spawn_blocking(move || {
                let mut tpl = TopicPartitionList::new();
                tpl.add_partition_offset(&topic, partition, Offset::Offset(next))?;
                consumer.commit(&tpl, CommitMode::Sync)
            })
            .await;
            match r {
                Ok(Ok(())) => {
                    self.metrics.commits.with_label_values(&["ok"]).inc();
                    return Ok(Flow::Done);
                }
                Ok(Err(e)) => {
                    self.metrics.commits.with_label_values(&["error"]).inc();
                    self.metrics.errors.with_label_values(&["commit"]).inc();
                    self.metrics.retries.with_label_values(&["commit"]).inc();
                    tracing::warn!(topic = %key.0, partition = key.1, error = %e, "failed to commit offsets; retrying");
                }
                Err(e) => {
                    tracing::warn!(error = %e, "commit task failed; retrying");
                }
            }
            if self.wait_backoff(&mut backoff, key).await != Wait::Go {
                return Ok(Flow::Abandoned);
            }
        }
    }

    fn set_paused(&mut self, paused: bool) {
        let Ok(tpl) = self.consumer.assignment() else {
            return;
        };
        let r = if paused {
            self.consumer.pause(&tpl)
        } else {
            self.consumer.resume(&tpl)
        };
        if let Err(e) = r {
            tracing::warn!(error = %e, paused, "cannot pause/resume partitions");
        }
        self.paused = paused;
    }

    /// Waits out one backoff step while polling the consumer (partitions paused), so the
    /// member stays in its group and sees a revocation of `key` at once.
    async fn wait_backoff(&mut self, backoff: &mut Backoff, key: &PartKey) -> Wait {
        let until = tokio::time::Instant::now() + backoff.next();
        self.set_paused(true);
        loop {
            let consumer = self.consumer.clone();
            let shutdown = self.shutdown.clone();
            let next = tokio::select! {
                biased;
                _ = shutdown.wait() => return Wait::Shutdown,
                _ = tokio::time::sleep_until(until) => None,
                r = consumer.recv() => Some(r),
            };
            let mut revoked = Vec::new();
            match next {
                None => return Wait::Go,
                Some(Ok(m)) => {
                    // Tag the record with the assignment it was received under.
                    revoked = self.apply_rebalance_events();
                    if let Some(r) = self.raw(&m) {
                        self.stash.push_back(r);
                    }
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "kafka consumer error while waiting to retry");
                    tokio::time::sleep(
                        Duration::from_millis(100)
                            .min(until.saturating_duration_since(tokio::time::Instant::now())),
                    )
                    .await;
                }
            }
            revoked.extend(self.apply_rebalance_events());
            if revoked.contains(key) {
                return Wait::Revoked;
            }
            // New assignments arrive unpaused.
            self.set_paused(true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_buffers_keep_records_together() {
        let mut t = TableBuf::default();
        t.push(1, b"aaa", 3);
        t.push(2, b"bb", 2);
        t.push(4, b"c", 1);
        t.push(5, b"dd", 1);
        assert_eq!((t.records(), t.rows(0, 4), t.rows(1, 3)), (4, 7, 3));
        assert_eq!(t.offset(2), 4);
        let (runs, skipped) = t.pending_runs(0, 4, |o| o == 2);
        assert_eq!(runs, vec![(0, 1), (2, 4)]);
        assert_eq!(skipped, 2);
        let (runs, skipped) = t.pending_runs(1, 4, |_| false);
        assert_eq!((runs, skipped), (vec![(1, 4)], 0));
        let (runs, skipped) = t.pending_runs(0, 4, |_| true);
        assert_eq!((runs.len(), skipped), (0, 7));
        t.clear();
        assert_eq!(t.records(), 0);
    }

    #[test]
    fn the_window_remembers_the_last_ids_only() {
        let k = |s: &str| decode::id_key(s);
        assert_eq!(k("evt-1"), k("evt-1"));
        assert_ne!(k("evt-1"), k("evt-2"));
        let mut w = RecentIds::new(3);
        for id in ["a", "b", "c"] {
            assert!(w.insert(k(id)), "{id} is new");
        }
        assert!(!w.insert(k("a")), "a repeat inside the window");
        assert!(w.insert(k("d")), "d is new and pushes a out");
        assert!(w.insert(k("a")), "a is forgotten");
        assert!(!w.insert(k("d")));
        let mut off = RecentIds::new(0);
        assert!(
            off.insert(k("a")) && off.insert(k("a")),
            "a window of 0 remembers nothing"
        );
    }

    fn cfg() -> SinkConfig {
        SinkConfig {
            group_id: "g".into(),
            topics: vec![],
            batch_max_rows: 1_000,
            batch_max_bytes: 1 << 20,
            batch_max_age_ms: 1_000,
            retry_initial_backoff_ms: 100,
            retry_max_backoff_ms: 1_000,
            insert_timeout_ms: 10,
            lag_interval_ms: 0,
            dedup_window_records: 10_000,
        }
    }

    #[test]
    fn a_small_table_waits_for_a_later_flush_until_it_has_rows_or_age() {
        let now = Instant::now();
        let fresh = Some(now);
        let old = Some(now - Duration::from_millis(1_500));
        let l = |rows, bytes, oldest| TableLoad {
            rows,
            bytes,
            oldest,
        };
        let mut load = [TableLoad::default(); 12];
        load[0] = l(900, 400_000, fresh); // events: over half of the rows
        load[1] = l(100, 60_000, fresh); // orders: few rows, young
        load[3] = l(10, 600_000, fresh); // shipments: few rows but half of the bytes
        load[4] = l(5, 1_000, old); // tickets: few rows, but old
        let due = due_tables(&load, &cfg(), false, true, now);
        assert_eq!(&due[..6], &[true, false, false, true, true, false]);
        assert!(due[6..].iter().all(|d| !d), "empty tables are never taken");
        // At shutdown every table with rows goes.
        let due = due_tables(&load, &cfg(), true, false, now);
        assert_eq!(&due[..6], &[true, true, false, true, true, false]);
        // Full batches in which no table qualifies: all of them go.
        let mut few = [TableLoad::default(); 12];
        for t in [0, 1, 2, 5, 6] {
            few[t] = l(200, 1_000, fresh);
        }
        let due = due_tables(&few, &cfg(), false, true, now);
        assert_eq!(&due[..7], &[true, true, true, false, false, true, true]);
        // Not full: they wait.
        assert!(
            due_tables(&few, &cfg(), false, false, now)
                .iter()
                .all(|d| !d)
        );
    }

    #[test]
    fn a_batch_is_full_at_one_tables_rows_or_every_tables_bytes() {
        // batch_max_rows 1,000, batch_max_bytes 1 MiB.
        let mut p = [(0usize, 0usize); 12];
        p[0] = (999, 1_000);
        p[1] = (900, 1_000);
        p[2] = (900, 1_000);
        assert!(!is_full(&p, &cfg()), "2,799 rows, but no table at 1,000");
        assert!(quarter_full(&p, &cfg()));
        p[1] = (1_000, 1_000);
        assert!(is_full(&p, &cfg()), "orders at 1,000 rows");
        let mut p = [(0usize, 0usize); 12];
        for r in p.iter_mut() {
            *r = (10, (1 << 20) / 12);
        }
        assert!(!is_full(&p, &cfg()), "just under 1 MiB");
        p[0].1 += 12;
        assert!(is_full(&p, &cfg()), "1 MiB, every table together");
        // A quarter: one table at 250 rows, or every table at 256 KiB together.
        let mut p = [(0usize, 0usize); 12];
        p[0] = (249, 1_000);
        p[1] = (249, 1_000);
        assert!(!quarter_full(&p, &cfg()), "498 rows, no table at 250");
        p[5] = (250, 1_000);
        assert!(quarter_full(&p, &cfg()));
        let mut p = [(0usize, 0usize); 12];
        p[0] = (1, 1 << 17);
        p[1] = (1, 1 << 17);
        assert!(quarter_full(&p, &cfg()), "256 KiB");
    }

    #[test]
    fn backoff_grows_to_the_cap() {
        let cfg = cfg();
        let mut b = Backoff::new(&cfg);
        let waits: Vec<Duration> = (0..8).map(|_| b.next()).collect();
        assert!(waits[0] <= Duration::from_millis(100) && waits[0] >= Duration::from_millis(80));
        assert!(waits[7] <= Duration::from_millis(1_000) && waits[7] >= Duration::from_millis(800));
    }
}
