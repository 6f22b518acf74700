//! `zt process identity`: resolves every canonical event to a person.
//!
//! **The graph is a log.** The identity graph ([`zt_identity::IdentityGraph`]) is the fold
//! of `zt.identity.edges`, a single-partition topic: one [`EdgeRecord`] per input event
//! that could change the graph (it carries an identifier the graph does not know, or two
//! that are not yet one person). Every instance folds the whole log, in log order, so every
//! instance holds the same graph at the same log position, whichever instance appended an
//! edge; a restart rebuilds the graph by folding the log again (`zt_identity_restore_seconds`).
//! The graph is global, like a Kafka Streams global table: instances in one consumer group
//! split the *input* partitions, and a rebalance moves no graph state at all.
//!
//! **Per batch** of input records: append the edges the batch needs and, after them, the
//! batch's [`ResolvedMark`] (its input offsets per partition), and wait for their
//! acknowledgement; fold the log up to the mark; look up each event's person as the graph
//! stands at the mark; send the resolved events (`zt.events.resolved`, Avro `zt.Event` with `person_id`, keyed by
//! person id), the links and merges the batch's edges caused (`zt.identity.links`, keyed
//! `kind:value`; `zt.identity.merges`, keyed by the old person id), and dead letters; wait
//! for every acknowledgement; then commit the input offsets.
//!
//! **Delivery guarantee: effectively once, without broker transactions.** A crash replays
//! the input after the last commit. Folding an edge twice changes nothing (a union of two
//! identifiers already together), so the graph is the same. The links and merges an edge
//! caused are remembered by the input position that appended it the *first* time; when the
//! replayed event is processed they are sent again, with the same content and `version`
//! (the edge's log offset), so nothing the first run failed to send is lost and the
//! repeated records are identical to the first ones (compacted / ReplacingMergeTree
//! readers keep one). This holds also when the crash came between appending an edge and
//! sending its effects: the replayed record either finds its edge already folded (and its
//! effects kept under its input position) or appends it again and folds the first copy on
//! the way. Resolved events are sent again with their `event_id`, **under the same person
//! and so to the same partition**: a replayed position is resolved as the graph stood at
//! the first mark that named it ([`zt_identity::IdentityGraph::person_at`]), not as it
//! stands now (a merge since then would send the copy to the new person's partition, past
//! the sink's per-partition deduplication). The new owner of a partition folds the log to
//! its end before its first batch, so it knows the marks its previous owner appended.
//! Downstream state is idempotent per event id (profiles) or deduplicated by it (the sink,
//! per partition). Left open: a member expelled for exceeding `max.poll.interval.ms` that
//! appends its mark after the new owner folded the log.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::producer::FutureProducer;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use zt_identity::{Identifier, IdentityGraph, Resolution};
use zt_kafka::suppress::Suppressions;
use zt_kafka::{KafkaConfig, TopicsConfig};
use zt_model::{Event, Source};
use zt_runtime::failpoint::Failpoint;
use zt_runtime::health::Health;
use zt_runtime::shutdown::Shutdown;

use crate::config::IdentityConfig;
use crate::error::{Error, Result};
use crate::records::{EdgeRecord, IdentityLink, IdentityMerge, LogEntry, ResolvedMark, Span};
use crate::runtime::{self, Ctx, Out, PartKey, RebalanceEvent};

/// Header of a resolved event: a JSON array of the event's identifiers (`kind:value`)
/// that belong to its person. An identifier a guard refused is not in it.
pub const PERSON_IDS_HEADER: &str = "zt-person-ids";

/// Test-only crash points (`zt_runtime::failpoint`): `ZT_IDENTITY_FAILPOINT=after_send:<n>`
/// aborts after the n-th batch's outputs were acknowledged, before its input offsets are
/// committed (the crash that makes a replay re-send them).
pub const FAILPOINT_ENV: &str = "ZT_IDENTITY_FAILPOINT";

static FAIL: Failpoint = Failpoint::new(FAILPOINT_ENV);

/// Test-only negative control: `ZT_IDENTITY_DISABLE_AS_OF=1` resolves every event with the
/// graph as it is now instead of as it stood at the batch's first [`ResolvedMark`], so a
/// replay after a merge sends an event again under another person (and partition). Never
/// set it in production.
pub const DISABLE_AS_OF_ENV: &str = "ZT_IDENTITY_DISABLE_AS_OF";

/// The identity processor's metrics. Labels never carry ids or personal data.
#[derive(Debug, Clone)]
pub struct IdentityMetrics {
    /// Input records by outcome: resolved, anonymous (no identifier), dead_letter,
    /// suppressed (an erased person or identifier, `zt erase`).
    pub events: IntCounterVec,
    /// Edges appended to the graph log by this instance.
    pub edges_appended: IntCounter,
    /// Edges folded into the graph (all instances' edges).
    pub edges_folded: IntCounter,
    /// Merges sent.
    pub merges: IntCounter,
    /// Guard refusals sent, by reason (exclusive_conflict, limit:<kind>).
    pub refusals: IntCounterVec,
    /// Identifiers in the graph.
    pub identifiers: IntGauge,
    /// Persons in the graph.
    pub persons: IntGauge,
    /// Seconds the last restore (fold of the whole log) took.
    pub restore_seconds: prometheus::Gauge,
    /// Consumer lag per input partition.
    pub lag: IntGaugeVec,
    /// Errors by kind.
    pub errors: IntCounterVec,
}

impl IdentityMetrics {
    /// Creates and registers the metrics.
    pub fn new(r: &Registry) -> Self {
        let cv = |n: &str, h: &str, l: &[&str]| {
            runtime::register(r, IntCounterVec::new(Opts::new(n, h), l).expect("metric"))
        };
        let c = |n: &str, h: &str| runtime::register(r, IntCounter::new(n, h).expect("metric"));
        let g = |n: &str, h: &str| runtime::register(r, IntGauge::new(n, h).expect("metric"));
        IdentityMetrics {
            events: cv(
                "zt_identity_events_total",
                "input events by outcome (resolved, anonymous, dead_letter, suppressed)",
                &["outcome"],
            ),
            edges_appended: c(
                "zt_identity_edges_appended_total",
                "edges this instance appended to the graph log",
            ),
            edges_folded: c(
                "zt_identity_edges_folded_total",
                "edges folded into the graph, from every instance",
            ),
            merges: c("zt_identity_merges_total", "person merges sent"),
            refusals: cv(
                "zt_identity_guard_refusals_total",
                "links the graph's guards refused, by reason",
                &["reason"],
            ),
            identifiers: g("zt_identity_graph_identifiers", "identifiers in the graph"),
            persons: g("zt_identity_graph_persons", "persons in the graph"),
            restore_seconds: runtime::register(
                r,
                prometheus::Gauge::new(
                    "zt_identity_restore_seconds",
                    "seconds the last restore of the graph from its log took",
                )
                .expect("metric"),
            ),
            lag: runtime::register(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "zt_identity_consumer_lag",
                        "records behind the high watermark, per input partition",
                    ),
                    &["topic", "partition"],
                )
                .expect("metric"),
            ),
            errors: cv("zt_identity_errors_total", "errors by kind", &["kind"]),
        }
    }
}

/// An input position.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Pos {
    topic: Arc<str>,
    partition: i32,
    offset: i64,
}

impl Pos {
    fn of(m: &OwnedMessage) -> Pos {
        Pos {
            topic: m.topic().into(),
            partition: m.partition(),
            offset: m.offset(),
        }
    }

    fn key(&self) -> String {
        format!("{}/{}/{}", self.topic, self.partition, self.offset)
    }

    fn parse(s: &str) -> Option<Pos> {
        let mut it = s.rsplitn(3, '/');
        let offset = it.next()?.parse().ok()?;
        let partition = it.next()?.parse().ok()?;
        let topic = it.next()?;
        Some(Pos {
            topic: topic.into(),
            partition,
            offset,
        })
    }
}

/// An input record decoded with its identifiers, or why it could not be.
type Decoded = std::result::Result<(Event, Vec<Identifier>), String>;

/// What folding one edge did, kept until the input record that appended it is done.
#[derive(Debug, Clone)]
struct Effects {
    resolution: Resolution,
    version: u64,
    at: i64,
}

/// Marked spans of one input partition: `from -> (to, mark offset)`.
type Spans = BTreeMap<i64, (i64, i64)>;

/// The graph and the position of its log.
struct GraphLog {
    graph: IdentityGraph,
    /// Next offset of the log to fold.
    next: i64,
    /// Effects by the input position of the edge's first append, per input partition.
    effects: HashMap<(Arc<str>, i32), BTreeMap<i64, Effects>>,
    /// Effects below these positions are never needed again (committed).
    floor: HashMap<(Arc<str>, i32), i64>,
    /// Per input partition, the log offset of the first [`ResolvedMark`] that named each
    /// input offset: `from -> (to, mark offset)`, spans in offset order, none overlapping.
    marks: HashMap<(Arc<str>, i32), Spans>,
}

impl GraphLog {
    fn fold(&mut self, offset: i64, value: Option<&[u8]>, metrics: &IdentityMetrics) -> Result<()> {
        self.next = offset + 1;
        let Some(bytes) = value else { return Ok(()) };
        let edge: EdgeRecord = match serde_json::from_slice(bytes) {
            Ok(LogEntry::Edge(e)) => e,
            Ok(LogEntry::Mark(m)) => {
                self.mark(offset, &m);
                return Ok(());
            }
            Err(e) => {
                // Not written by a resolver; nothing can be folded from it.
                metrics.errors.with_label_values(&["bad_edge"]).inc();
                tracing::warn!(offset, error = %e, "unreadable edge in the graph log skipped");
                return Ok(());
            }
        };
        metrics.edges_folded.inc();
        let res = self.graph.resolve_at(&edge.ids, offset as u64);
        if res.links.is_empty() && res.merges.is_empty() && res.refusals.is_empty() {
            return Ok(());
        }
        let Some(pos) = Pos::parse(&edge.src) else {
            return Ok(());
        };
        let part = (pos.topic.clone(), pos.partition);
        if self.floor.get(&part).is_some_and(|f| pos.offset < *f) {
            return Ok(());
        }
        self.effects
            .entry(part)
            .or_default()
            .entry(pos.offset)
            .or_insert(Effects {
                resolution: res,
                version: offset as u64,
                at: edge.at,
            });
        Ok(())
    }

    /// Remembers the mark at log `offset` for the input offsets no earlier mark named:
    /// an input offset keeps the first mark that named it (the one its first copy was
    /// resolved at).
    fn mark(&mut self, offset: i64, mark: &ResolvedMark) {
        for s in &mark.resolved {
            let part: (Arc<str>, i32) = (s.topic.as_str().into(), s.partition);
            let floor = self.floor.get(&part).copied().unwrap_or(i64::MIN);
            let spans = self.marks.entry(part).or_default();
            let covered = spans.last_key_value().map_or(i64::MIN, |(_, (to, _))| *to);
            let from = s.from.max(covered).max(floor);
            if from < s.to {
                spans.insert(from, (s.to, offset));
            }
        }
    }

    /// The log offset of the first mark that named input position `pos`.
    fn mark_of(&self, pos: &Pos) -> Option<i64> {
        let spans = self.marks.get(&(pos.topic.clone(), pos.partition))?;
        let (_, (to, at)) = spans.range(..=pos.offset).next_back()?;
        (pos.offset < *to).then_some(*at)
    }

    fn prune(&mut self, committed: &HashMap<PartKey, i64>) {
        for ((t, p), o) in committed {
            let key: (Arc<str>, i32) = (t.as_str().into(), *p);
            if let Some(m) = self.effects.get_mut(&key) {
                *m = m.split_off(o);
            }
            if let Some(m) = self.marks.get_mut(&key) {
                m.retain(|_, (to, _)| *to > *o);
            }
            let f = self.floor.entry(key).or_insert(*o);
            *f = (*f).max(*o);
        }
    }
}

/// Everything `zt process identity` needs.
#[derive(Debug, Clone)]
pub struct IdentityParams {
    /// Broker.
    pub kafka: KafkaConfig,
    /// Topic names.
    pub topics: TopicsConfig,
    /// The processor's section.
    pub identity: IdentityConfig,
}

impl IdentityParams {
    fn inputs(&self) -> Vec<String> {
        inputs(&self.topics, &self.identity)
    }
}

/// The topics `zt process identity` consumes: `identity.topics`, or every source topic.
pub fn inputs(t: &TopicsConfig, identity: &IdentityConfig) -> Vec<String> {
    if identity.topics.is_empty() {
        Source::ALL.into_iter().map(|s| t.events(s)).collect()
    } else {
        identity.topics.clone()
    }
}

/// How long a member waits for an assignment after a revocation before re-joining.
const REJOIN_PATIENCE: Duration = Duration::from_secs(30);

/// How long start-up waits for a broker that does not answer.
const PATIENCE: Duration = Duration::from_secs(120);

struct Processor {
    /// Erased persons and identifiers (`zt erase`).
    suppressions: Suppressions,
    p: IdentityParams,
    inputs: Vec<String>,
    consumer: StreamConsumer<Ctx>,
    ctx: Ctx,
    log_reader: BaseConsumer,
    producer: FutureProducer,
    log: GraphLog,
    metrics: IdentityMetrics,
    edges_topic: String,
    last_prune: Instant,
    /// Assigned input partitions; records of others (received before a revocation) are
    /// left to their new owner.
    assigned: std::collections::BTreeSet<PartKey>,
    /// Partitions were assigned: fold the log to its end before the next batch, so that
    /// the marks of their previous owner are known when their records are replayed.
    refold: bool,
    /// [`DISABLE_AS_OF_ENV`] (test only).
    as_of_disabled: bool,
}

/// Runs the identity processor until `shutdown`.
pub async fn run(
    params: IdentityParams,
    registry: &Registry,
    health: &Health,
    shutdown: Shutdown,
) -> Result<()> {
    params.identity.validate()?;
    params.kafka.validate()?;
    let metrics = IdentityMetrics::new(registry);
    let ready = health.register("kafka");
    ready.set_not_ready("restoring the identity graph");
    let inputs = params.inputs();
    let ctx = Ctx::new(metrics.lag.clone(), metrics.errors.clone(), ready.clone())
        .with_nudge(&params.kafka, &params.identity.group_id);
    let consumer = runtime::group_consumer(
        &params.kafka,
        &params.identity.group_id,
        &inputs,
        ctx.clone(),
        5_000,
    )?;
    let log_reader = runtime::reader(&params.kafka, &params.identity.group_id)?;
    let producer = zt_kafka::build_producer(&params.kafka)?;
    let edges_topic = params.topics.identity_edges();
    let parts = runtime::partitions_when_ready(&log_reader, &inputs, PATIENCE, &shutdown).await?;
    let edge_parts = runtime::partitions_when_ready(
        &log_reader,
        std::slice::from_ref(&edges_topic),
        PATIENCE,
        &shutdown,
    )
    .await?;
    if edge_parts.len() != 1 {
        return Err(Error::Topics(format!(
            "{edges_topic} must have exactly 1 partition (the graph's log is totally ordered), has {}",
            edge_parts.len()
        )));
    }
    // Erased persons and identifiers (`zt erase`): every erasure so far, then followed.
    let suppressions = runtime::follow_suppressions(&params.kafka, &params.topics).await?;
    let mut proc = Processor {
        inputs,
        suppressions,
        consumer,
        ctx,
        log_reader,
        producer,
        log: GraphLog {
            graph: IdentityGraph::new(params.identity.graph()),
            next: 0,
            effects: HashMap::new(),
            floor: HashMap::new(),
            marks: HashMap::new(),
        },
        metrics,
        edges_topic,
        last_prune: Instant::now(),
        assigned: Default::default(),
        refold: false,
        as_of_disabled: std::env::var_os(DISABLE_AS_OF_ENV).is_some_and(|v| v == "1"),
        p: params,
    };
    // Effects of edges whose input is committed are never needed: skip them while folding.
    let mut attempt = 0;
    let committed = loop {
        match runtime::committed(&proc.consumer, &parts) {
            Ok(c) => break c,
            Err(e) if attempt < 12 && !shutdown.is_triggered() => {
                attempt += 1;
                tracing::warn!(error = %e, "committed offsets not readable yet; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => return Err(e),
        }
    };
    proc.log.prune(&committed);
    let started = Instant::now();
    proc.catch_up(None)?;
    let secs = started.elapsed().as_secs_f64();
    proc.metrics.restore_seconds.set(secs);
    tracing::info!(
        seconds = secs,
        identifiers = proc.log.graph.len(),
        persons = proc.log.graph.persons(),
        log_offset = proc.log.next,
        "identity graph restored"
    );
    // Tail the log from here on.
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&proc.edges_topic, 0, Offset::Offset(proc.log.next))?;
    proc.log_reader.assign(&tpl)?;
    ready.set_ready();
    if proc.as_of_disabled {
        tracing::warn!("{DISABLE_AS_OF_ENV}=1: replays resolve with today's graph (test only)");
    }
    tracing::info!(inputs = ?proc.inputs, group = %proc.p.identity.group_id, "identity processor started");
    let out = proc.run_loop(&shutdown).await;
    proc.consumer.unsubscribe();
    out
}

impl Processor {
    /// Folds the log up to its high watermark (`None`) or past `until`.
    fn catch_up(&mut self, until: Option<i64>) -> Result<()> {
        match until {
            None => {
                let topic = self.edges_topic.clone();
                let metrics = self.metrics.clone();
                let log = &mut self.log;
                let from = log.next;
                let next = runtime::read_to_end(&self.log_reader, &topic, 0, from, |m| {
                    log.fold(m.offset(), m.payload(), &metrics)
                })?;
                self.log.next = next;
            }
            Some(target) => {
                let mut idle = 0;
                while self.log.next <= target {
                    match self.log_reader.poll(Duration::from_millis(200)) {
                        Some(Ok(m)) => {
                            idle = 0;
                            self.log.fold(m.offset(), m.payload(), &self.metrics)?;
                        }
                        Some(Err(e)) => {
                            // Transient (a broker down, a timed-out fetch): librdkafka
                            // retries; only lack of progress is fatal.
                            idle += 1;
                            self.metrics.errors.with_label_values(&["log_read"]).inc();
                            tracing::warn!(error = %e, "error reading the graph log; retrying");
                        }
                        None => {
                            idle += 1;
                            if idle > 300 {
                                return Err(Error::Topics(format!(
                                    "{}: offset {target} acknowledged but not readable after 60 s",
                                    self.edges_topic
                                )));
                            }
                        }
                    }
                }
            }
        }
        self.metrics.identifiers.set(self.log.graph.len() as i64);
        self.metrics.persons.set(self.log.graph.persons() as i64);
        Ok(())
    }

    /// Folds whatever other instances appended, without waiting.
    fn drain_log(&mut self) -> Result<()> {
        while let Some(r) = self.log_reader.poll(Duration::ZERO) {
            match r {
                Ok(m) => self.log.fold(m.offset(), m.payload(), &self.metrics)?,
                Err(e) => {
                    self.metrics.errors.with_label_values(&["log_read"]).inc();
                    tracing::warn!(error = %e, "error reading the graph log; retrying");
                    break;
                }
            }
        }
        self.metrics.identifiers.set(self.log.graph.len() as i64);
        self.metrics.persons.set(self.log.graph.persons() as i64);
        Ok(())
    }

    async fn run_loop(&mut self, shutdown: &Shutdown) -> Result<()> {
        let age = Duration::from_millis(self.p.identity.batch_max_age_ms);
        while !shutdown.is_triggered() {
            let (batch, events) = runtime::collect(
                &self.consumer,
                &self.ctx,
                self.p.identity.batch_max_records,
                age,
                shutdown,
            )
            .await?;
            self.apply_rebalance(events);
            runtime::rejoin_if_stuck(&self.consumer, &self.ctx, &self.inputs, REJOIN_PATIENCE)?;
            let batch: Vec<OwnedMessage> = batch
                .into_iter()
                .filter(|m| {
                    self.assigned
                        .contains(&(m.topic().to_owned(), m.partition()))
                })
                .collect();
            if batch.is_empty() {
                self.drain_log()?;
                continue;
            }
            if self.refold {
                self.refold_to_end()?;
            }
            self.process(&batch).await?;
            if self.last_prune.elapsed() > Duration::from_secs(30) {
                // Pruning only frees memory: a broker that does not answer now is asked
                // again next time.
                let committed = runtime::partitions_of(&self.log_reader, &self.inputs)
                    .and_then(|parts| runtime::committed(&self.consumer, &parts));
                match committed {
                    Ok(committed) => self.log.prune(&committed),
                    Err(e) => {
                        self.metrics.errors.with_label_values(&["prune"]).inc();
                        tracing::warn!(error = %e, "committed offsets not readable; pruning later");
                    }
                }
                self.last_prune = Instant::now();
            }
        }
        Ok(())
    }

    /// Folds the log up to its high watermark now, waiting for it (after an assignment).
    fn refold_to_end(&mut self) -> Result<()> {
        let (_, high) =
            self.log_reader
                .fetch_watermarks(&self.edges_topic, 0, Duration::from_secs(10))?;
        if high > self.log.next {
            self.catch_up(Some(high - 1))?;
        }
        self.refold = false;
        Ok(())
    }

    fn apply_rebalance(&mut self, events: Vec<RebalanceEvent>) {
        // The graph is global: nothing moves. A replayed record finds the effects of the
        // edge its previous owner appended and the mark it resolved at (kept by input
        // position until committed), once the log is folded to its end.
        for e in events {
            match e {
                RebalanceEvent::Assigned(keys) => {
                    self.refold = true;
                    self.assigned.extend(keys);
                }
                RebalanceEvent::Revoked(keys) => {
                    for k in keys {
                        self.assigned.remove(&k);
                    }
                }
            }
        }
    }

    async fn process(&mut self, batch: &[OwnedMessage]) -> Result<()> {
        let t = &self.p.topics.clone();
        // Fold what other instances appended, so the batch sees the freshest graph.
        self.drain_log()?;
        // 1. Decode, find the edges the batch needs, append them.
        let mut items: Vec<(Pos, Decoded)> = Vec::with_capacity(batch.len());
        let mut edges = Vec::new();
        for m in batch {
            let pos = Pos::of(m);
            let decoded = match m.payload() {
                None => Err("record has no value".to_owned()),
                Some(b) => zt_model::decode::<Event>(b).map_err(|e| e.to_string()),
            };
            if let Ok(ev) = &decoded
                && self.suppressions.suppresses_event(ev)
            {
                // An erased person's identifier (`zt erase`): no edge, no output.
                self.metrics.events.with_label_values(&["suppressed"]).inc();
                continue;
            }
            let item = decoded.map(|ev| {
                let ids = Identifier::from_identities(&ev.identities);
                if !ids.is_empty() && !self.log.graph.is_settled(&ids) {
                    let edge = EdgeRecord {
                        src: pos.key(),
                        ids: ids.clone(),
                        at: ev.event_time,
                    };
                    edges.push(Out {
                        topic: self.edges_topic.clone(),
                        key: edge.src.clone().into_bytes(),
                        value: Some(serde_json::to_vec(&edge).expect("edge serializes")),
                        headers: vec![],
                    });
                }
                (ev, ids)
            });
            items.push((pos, item));
        }
        // The mark follows the edges: the batch is resolved as the graph stands at it.
        let n_edges = edges.len();
        edges.push(self.mark_record(batch));
        let acks = runtime::send_all(&self.producer, &edges).await?;
        self.metrics.edges_appended.inc_by(n_edges as u64);
        let at = acks.last().map_or(-1, |a| a.1);
        if acks.iter().any(|a| a.1 > at) {
            // The idempotent producer keeps a partition's records in send order, so this
            // cannot happen; if it did, the mark would name a graph without some of the
            // batch's edges. Stop before anything of the batch is sent.
            self.metrics.errors.with_label_values(&["log_order"]).inc();
            return Err(Error::Topics(format!(
                "{}: the batch's mark landed before one of its edges (offset {at})",
                self.edges_topic
            )));
        }
        self.catch_up(Some(at))?;
        // 2. Resolve and send.
        let mut out = Vec::with_capacity(batch.len() * 2);
        let mut merges = 0u64;
        for (pos, item) in items {
            match item {
                Err(reason) => {
                    self.metrics
                        .events
                        .with_label_values(&["dead_letter"])
                        .inc();
                    let m = batch
                        .iter()
                        .find(|m| {
                            m.offset() == pos.offset
                                && m.partition() == pos.partition
                                && *m.topic() == *pos.topic
                        })
                        .expect("position from the batch");
                    out.push(dead_letter(
                        t,
                        &pos,
                        m.payload().unwrap_or_default(),
                        &reason,
                    ));
                }
                Ok((mut ev, ids)) => {
                    // As the graph stood at the first mark that named this position: the
                    // batch's own mark, or (a replay) the one its first copy was sent at.
                    let at = self.log.mark_of(&pos).unwrap_or(at) as u64;
                    let graph = &mut self.log.graph;
                    let person = if self.as_of_disabled {
                        graph.person_for(&ids)
                    } else {
                        graph.person_for_at(&ids, at)
                    };
                    let fx = self
                        .log
                        .effects
                        .get_mut(&(pos.topic.clone(), pos.partition))
                        .and_then(|m| m.remove(&pos.offset));
                    if person
                        .as_deref()
                        .is_some_and(|p| self.suppressions.contains("person_id", p))
                    {
                        // Resolved to an erased person: nothing about them goes out.
                        self.metrics.events.with_label_values(&["suppressed"]).inc();
                        continue;
                    }
                    if let Some(fx) = fx {
                        merges += fx.resolution.merges.len() as u64;
                        effects_out(t, &fx, &self.metrics, &mut out);
                    }
                    // The identifiers that are this person's (a guard may have kept one
                    // of the event's identifiers with another person).
                    let own: Vec<String> = match &person {
                        Some(p) => ids
                            .iter()
                            .filter(|i| {
                                let g = &mut self.log.graph;
                                let of = if self.as_of_disabled {
                                    g.person_of(i)
                                } else {
                                    g.person_at(i, at)
                                };
                                of.as_ref() == Some(p)
                            })
                            .map(ToString::to_string)
                            .collect(),
                        None => vec![],
                    };
                    let key = person.clone().unwrap_or_else(|| ev.event_id.clone());
                    self.metrics
                        .events
                        .with_label_values(&[if person.is_some() {
                            "resolved"
                        } else {
                            "anonymous"
                        }])
                        .inc();
                    ev.person_id = person;
                    match zt_model::encode(&ev) {
                        Ok(bytes) => out.push(Out {
                            topic: t.events_resolved(),
                            key: key.into_bytes(),
                            value: Some(bytes),
                            headers: vec![
                                ("zt-src", pos.key()),
                                (
                                    PERSON_IDS_HEADER,
                                    serde_json::to_string(&own).expect("strings serialize"),
                                ),
                            ],
                        }),
                        Err(e) => {
                            self.metrics.errors.with_label_values(&["encode"]).inc();
                            return Err(Error::Corrupt {
                                topic: pos.topic.to_string(),
                                partition: pos.partition,
                                offset: pos.offset,
                                reason: format!("re-encoding the event failed: {e}"),
                            });
                        }
                    }
                }
            }
        }
        runtime::send_all(&self.producer, &out).await?;
        self.metrics.merges.inc_by(merges);
        FAIL.hit("after_send");
        // 3. Commit.
        runtime::commit_after_send(&self.consumer, &runtime::next_offsets(batch))
    }

    /// The [`ResolvedMark`] of a batch: each partition's offsets, first to last.
    fn mark_record(&self, batch: &[OwnedMessage]) -> Out {
        let mut spans: BTreeMap<(&str, i32), (i64, i64)> = BTreeMap::new();
        for m in batch {
            let s = spans
                .entry((m.topic(), m.partition()))
                .or_insert((m.offset(), m.offset() + 1));
            s.0 = s.0.min(m.offset());
            s.1 = s.1.max(m.offset() + 1);
        }
        let mark = ResolvedMark {
            resolved: spans
                .into_iter()
                .map(|((topic, partition), (from, to))| Span {
                    topic: topic.to_owned(),
                    partition,
                    from,
                    to,
                })
                .collect(),
        };
        let key = mark.resolved.first().map_or_else(String::new, |s| {
            format!("mark:{}/{}/{}", s.topic, s.partition, s.from)
        });
        Out {
            topic: self.edges_topic.clone(),
            key: key.into_bytes(),
            value: Some(serde_json::to_vec(&mark).expect("mark serializes")),
            headers: vec![],
        }
    }
}

fn effects_out(t: &TopicsConfig, fx: &Effects, metrics: &IdentityMetrics, out: &mut Vec<Out>) {
    for (id, person) in &fx.resolution.links {
        let link = IdentityLink {
            id_type: id.kind.as_str().to_owned(),
            id_value: id.value.clone(),
            person_id: person.clone(),
            version: fx.version,
            linked_at_ms: fx.at,
        };
        out.push(Out {
            topic: t.identity_links(),
            key: id.to_string().into_bytes(),
            value: Some(serde_json::to_vec(&link).expect("link serializes")),
            headers: vec![],
        });
    }
    for m in &fx.resolution.merges {
        let merge = IdentityMerge {
            from: m.from.clone(),
            into: m.into.clone(),
            version: fx.version,
            merged_at_ms: fx.at,
        };
        out.push(Out {
            topic: t.identity_merges(),
            key: m.from.clone().into_bytes(),
            value: Some(serde_json::to_vec(&merge).expect("merge serializes")),
            headers: vec![],
        });
    }
    for r in &fx.resolution.refusals {
        metrics
            .refusals
            .with_label_values(&[r.reason.as_str()])
            .inc();
    }
}

fn dead_letter(t: &TopicsConfig, pos: &Pos, original: &[u8], reason: &str) -> Out {
    let origin = (&*pos.topic, pos.partition, pos.offset);
    let avro = Some("application/vnd.zt.event+avro");
    runtime::dead_letter(t, "identity", origin, original, avro, reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(p: i32, o: i64) -> Pos {
        Pos {
            topic: "in".into(),
            partition: p,
            offset: o,
        }
    }

    fn span(p: i32, from: i64, to: i64) -> Span {
        Span {
            topic: "in".into(),
            partition: p,
            from,
            to,
        }
    }

    fn log() -> GraphLog {
        GraphLog {
            graph: IdentityGraph::default(),
            next: 0,
            effects: HashMap::new(),
            floor: HashMap::new(),
            marks: HashMap::new(),
        }
    }

    #[test]
    fn a_position_keeps_the_first_mark_that_named_it() {
        let mut l = log();
        l.mark(
            10,
            &ResolvedMark {
                resolved: vec![span(0, 100, 200), span(1, 5, 6)],
            },
        );
        // A replay of a shorter batch, then one reaching further.
        l.mark(
            20,
            &ResolvedMark {
                resolved: vec![span(0, 100, 150)],
            },
        );
        l.mark(
            30,
            &ResolvedMark {
                resolved: vec![span(0, 150, 300)],
            },
        );
        assert_eq!(l.mark_of(&pos(0, 99)), None);
        assert_eq!(l.mark_of(&pos(0, 100)), Some(10));
        assert_eq!(l.mark_of(&pos(0, 199)), Some(10));
        assert_eq!(l.mark_of(&pos(0, 200)), Some(30));
        assert_eq!(l.mark_of(&pos(0, 299)), Some(30));
        assert_eq!(l.mark_of(&pos(0, 300)), None);
        assert_eq!(l.mark_of(&pos(1, 5)), Some(10));
        assert_eq!(l.mark_of(&pos(2, 5)), None);
        // Committed positions are forgotten, and marks below the commit not kept.
        l.prune(&HashMap::from([(("in".to_owned(), 0), 250)]));
        assert_eq!(l.mark_of(&pos(0, 199)), None);
        assert_eq!(l.mark_of(&pos(0, 260)), Some(30));
        l.mark(
            40,
            &ResolvedMark {
                resolved: vec![span(0, 0, 400)],
            },
        );
        assert_eq!(l.mark_of(&pos(0, 100)), None);
        assert_eq!(l.mark_of(&pos(0, 350)), Some(40));
    }

    #[test]
    fn log_entries_are_told_apart_by_their_fields() {
        let edge = r#"{"src":"in/0/1","ids":[{"kind":"user_id","value":"u"}],"at":5}"#;
        let mark = r#"{"resolved":[{"topic":"in","partition":0,"from":1,"to":2}]}"#;
        assert!(matches!(serde_json::from_str(edge), Ok(LogEntry::Edge(_))));
        assert!(matches!(
            serde_json::from_str::<LogEntry>(mark),
            Ok(LogEntry::Mark(m)) if m.resolved == vec![span(0, 1, 2)]
        ));
        assert!(serde_json::from_str::<LogEntry>(r#"{"x":1}"#).is_err());
    }

    #[test]
    fn positions_round_trip() {
        let p = Pos {
            topic: "zt.events.erp".into(),
            partition: 3,
            offset: 42,
        };
        assert_eq!(Pos::parse(&p.key()), Some(p));
        assert_eq!(Pos::parse("x"), None);
    }
}
