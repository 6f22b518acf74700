//! `zt process funnels`: funnels and A/B experiments maintained in the stream.
//!
//! **Inputs**, co-partitioned like the profiles processor's: `zt.events.resolved`,
//! `zt.identity.merges` and `zt.funnels.transfers`. **State** per person ([`FunnelState`]:
//! step events by event id, first exposures, conversions), in memory, restored on assignment
//! from the compacted changelog `zt.funnels.state`.
//!
//! **Per batch**: apply every record (merges move a person's state to the person it
//! continues as, through `zt.funnels.transfers`, and leave a redirect); send the transfers
//! and wait; send every changed person's rows and wait, then its state and wait (a state on
//! the changelog means its rows were delivered: [`runtime::send_outputs_then_state`]);
//! commit. The rows go to `zt.funnels` as JSON, keyed `funnel:<id>:<person>` or `experiment:<id>:<person>`:
//! [`crate::funnel::FunnelRow`] (level reached, entry breakdown) and
//! [`crate::funnel::ExperimentRow`] (first exposure,
//! conversion). A person's row is replaced whenever a late or out-of-order event changes
//! it, with a larger `version`; ClickHouse's `ReplacingMergeTree(version)` read with
//! `FINAL` therefore converges to the batch answer (`kpi_funnel_stream`,
//! `kpi_ab_test_stream`).
//!
//! **Event time and lateness**: each partition's watermark is the largest event time seen
//! minus `funnels.allowed_lateness_ms` (`zt_funnels_watermark_timestamp_seconds`). Events older than the
//! watermark are counted as late (`zt_funnels_late_events_total`) and still applied: the
//! state keeps every step event of a person, so a late event corrects the rows exactly.
//!
//! **Delivery guarantee**: effectively once without broker transactions, as for profiles:
//! the state is a join-semilattice, re-applying after a crash changes nothing, and a
//! redirect is written only after its transfer is acknowledged.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use prometheus::{IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::producer::FutureProducer;
use serde::{Deserialize, Serialize};
use zt_kafka::{KafkaConfig, TopicsConfig};
use zt_model::Event;
use zt_runtime::health::Health;
use zt_runtime::shutdown::Shutdown;

use crate::config::FunnelsConfig;
use crate::error::{Error, Result};
use crate::funnel::FunnelState;
use crate::records::IdentityMerge;
use crate::runtime::{self, Ctx, Out, RebalanceEvent};

/// Test-only switch: `1` skips restoring state from the changelog (negative control).
pub const DISABLE_RESTORE_ENV: &str = "ZT_FUNNELS_DISABLE_RESTORE";

/// Test-only crash points (`zt_runtime::failpoint`): `before_state` and `state_first`
/// ([`runtime::send_outputs_then_state`]).
pub const FAILPOINT_ENV: &str = "ZT_FUNNELS_FAILPOINT";

static FAIL: zt_runtime::failpoint::Failpoint =
    zt_runtime::failpoint::Failpoint::new(FAILPOINT_ENV);

/// State moved between persons.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunnelTransfer {
    /// Receiving person.
    pub into: String,
    /// State to join.
    pub state: FunnelState,
}

/// The funnels processor's metrics.
#[derive(Debug, Clone)]
pub struct FunnelsMetrics {
    /// Input records by kind and outcome.
    pub records: IntCounterVec,
    /// Persons held in state.
    pub persons: IntGauge,
    /// Rows sent (funnel and experiment).
    pub rows: IntCounterVec,
    /// Events older than their partition's watermark (applied anyway).
    pub late: prometheus::IntCounter,
    /// Watermark per input partition (event time, UTC ms).
    pub watermark: IntGaugeVec,
    /// Seconds the last restore took.
    pub restore_seconds: prometheus::Gauge,
    /// Consumer lag.
    pub lag: IntGaugeVec,
    /// Errors by kind.
    pub errors: IntCounterVec,
}

impl FunnelsMetrics {
    /// Creates and registers the metrics.
    pub fn new(r: &Registry) -> Self {
        let cv = |n: &str, h: &str, l: &[&str]| {
            runtime::register(r, IntCounterVec::new(Opts::new(n, h), l).expect("metric"))
        };
        FunnelsMetrics {
            records: cv(
                "zt_funnels_records_total",
                "input records by kind (event, merge, transfer) and outcome",
                &["kind", "outcome"],
            ),
            persons: runtime::register(
                r,
                IntGauge::new("zt_funnels_state_persons", "persons held in state").expect("metric"),
            ),
            rows: cv("zt_funnels_rows_total", "rows sent to zt.funnels", &["kind"]),
            late: runtime::register(
                r,
                prometheus::IntCounter::new(
                    "zt_funnels_late_events_total",
                    "events older than their partition's watermark (applied anyway)",
                )
                .expect("metric"),
            ),
            watermark: runtime::register(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "zt_funnels_watermark_timestamp_seconds",
                        "event-time watermark per partition (UTC seconds): largest event time minus the allowed lateness",
                    ),
                    &["partition"],
                )
                .expect("metric"),
            ),
            restore_seconds: runtime::register(
                r,
                prometheus::Gauge::new(
                    "zt_funnels_restore_seconds",
                    "seconds the last restore of assigned partitions took",
                )
                .expect("metric"),
            ),
            lag: runtime::register(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "zt_funnels_consumer_lag",
                        "records behind the high watermark, per input partition",
                    ),
                    &["topic", "partition"],
                )
                .expect("metric"),
            ),
            errors: cv("zt_funnels_errors_total", "errors by kind", &["kind"]),
        }
    }
}

/// Everything `zt process funnels` needs.
#[derive(Debug, Clone)]
pub struct FunnelsParams {
    /// Broker.
    pub kafka: KafkaConfig,
    /// Topic names.
    pub topics: TopicsConfig,
    /// The processor's section.
    pub funnels: FunnelsConfig,
}

/// How long a member waits for an assignment after a revocation before re-joining.
const REJOIN_PATIENCE: Duration = Duration::from_secs(30);

/// How long start-up waits for a broker that does not answer.
const PATIENCE: Duration = Duration::from_secs(120);

struct Processor {
    /// Erased persons and identifiers (`zt erase`): their events are not applied.
    suppressions: zt_kafka::suppress::Suppressions,
    p: FunnelsParams,
    consumer: StreamConsumer<Ctx>,
    ctx: Ctx,
    reader: BaseConsumer,
    producer: FutureProducer,
    state: HashMap<i32, HashMap<String, FunnelState>>,
    max_event_time: HashMap<i32, i64>,
    clocks: HashMap<i32, runtime::VersionClock>,
    assigned: BTreeSet<(String, i32)>,
    metrics: FunnelsMetrics,
}

/// Runs the funnels processor until `shutdown`.
pub async fn run(
    params: FunnelsParams,
    registry: &Registry,
    health: &Health,
    shutdown: Shutdown,
) -> Result<()> {
    params.funnels.validate()?;
    params.kafka.validate()?;
    let metrics = FunnelsMetrics::new(registry);
    let ready = health.register("kafka");
    ready.set_not_ready("waiting for a partition assignment");
    let t = &params.topics;
    let inputs = inputs(t);
    let group = params.funnels.group(&params.topics);
    let reader = runtime::reader(&params.kafka, &group)?;
    let mut counts = BTreeMap::new();
    for topic in inputs.iter().chain([&t.funnels_state()]) {
        let n = runtime::partitions_when_ready(
            &reader,
            std::slice::from_ref(topic),
            PATIENCE,
            &shutdown,
        )
        .await?
        .len();
        counts.insert(topic.clone(), n);
    }
    if counts.values().collect::<BTreeSet<_>>().len() != 1 {
        return Err(Error::Topics(format!(
            "the funnels processor needs the same partition count on {counts:?} \
             (set topics.partition_overrides alike)"
        )));
    }
    let ctx = Ctx::new(metrics.lag.clone(), metrics.errors.clone(), ready.clone())
        .with_nudge(&params.kafka, &group);
    let consumer = runtime::group_consumer(&params.kafka, &group, &inputs, ctx.clone(), 5_000)?;
    let producer = zt_kafka::build_producer(&params.kafka)?;
    let suppressions = runtime::follow_suppressions(&params.kafka, &params.topics).await?;
    let mut proc = Processor {
        suppressions,
        p: params,
        consumer,
        ctx,
        reader,
        producer,
        state: HashMap::new(),
        max_event_time: HashMap::new(),
        clocks: HashMap::new(),
        assigned: BTreeSet::new(),
        metrics,
    };
    tracing::info!(inputs = ?inputs, group = %group,
        funnels = proc.p.funnels.definitions.len(), "funnels processor started");
    ready.set_ready();
    let out = proc.run_loop(&shutdown).await;
    proc.consumer.unsubscribe();
    out
}

/// The topics `zt process funnels` consumes, co-partitioned: resolved events, merges and
/// its own transfers.
pub fn inputs(t: &TopicsConfig) -> Vec<String> {
    vec![
        t.events_resolved(),
        t.identity_merges(),
        t.funnels_transfers(),
    ]
}

impl Processor {
    async fn run_loop(&mut self, shutdown: &Shutdown) -> Result<()> {
        let age = Duration::from_millis(self.p.funnels.batch_max_age_ms);
        while !shutdown.is_triggered() {
            let (batch, events) = runtime::collect(
                &self.consumer,
                &self.ctx,
                self.p.funnels.batch_max_records,
                age,
                shutdown,
            )
            .await?;
            self.apply_rebalance(events)?;
            runtime::rejoin_if_stuck(
                &self.consumer,
                &self.ctx,
                &inputs(&self.p.topics),
                REJOIN_PATIENCE,
            )?;
            if !batch.is_empty() {
                self.process(&batch).await?;
            }
        }
        Ok(())
    }

    fn apply_rebalance(&mut self, events: Vec<RebalanceEvent>) -> Result<()> {
        for e in events {
            match e {
                RebalanceEvent::Revoked(keys) => {
                    for k in keys {
                        self.state.remove(&k.1);
                        self.max_event_time.remove(&k.1);
                        self.clocks.remove(&k.1);
                        self.assigned.remove(&k);
                    }
                }
                RebalanceEvent::Assigned(keys) => {
                    let started = Instant::now();
                    self.assigned.extend(keys.iter().cloned());
                    let parts: BTreeSet<i32> = keys.iter().map(|k| k.1).collect();
                    for p in parts {
                        self.restore(p)?;
                    }
                    self.metrics
                        .restore_seconds
                        .set(started.elapsed().as_secs_f64());
                }
            }
        }
        self.metrics
            .persons
            .set(self.state.values().map(|m| m.len() as i64).sum());
        Ok(())
    }

    fn restore(&mut self, partition: i32) -> Result<()> {
        let topic = self.p.topics.funnels_state();
        let mut map: HashMap<String, FunnelState> = HashMap::new();
        if std::env::var_os(DISABLE_RESTORE_ENV).is_some_and(|v| v == "1") {
            // Test only: the negative control of the crash tests.
            tracing::warn!("{DISABLE_RESTORE_ENV}=1: state NOT restored (test only)");
            self.clocks
                .insert(partition, runtime::VersionClock::after(0));
            self.state.insert(partition, map);
            return Ok(());
        }
        runtime::read_to_end(&self.reader, &topic, partition, 0, |m| {
            let Some(key) = m.key().map(|k| String::from_utf8_lossy(k).into_owned()) else {
                return Ok(());
            };
            match m.payload() {
                None => {
                    map.remove(&key);
                }
                Some(v) => {
                    let s: FunnelState = serde_json::from_slice(v).map_err(|e| Error::Corrupt {
                        topic: topic.clone(),
                        partition,
                        offset: m.offset(),
                        reason: format!("funnel state unreadable: {e}"),
                    })?;
                    if map.get(&key).is_none_or(|old| s.version >= old.version) {
                        map.insert(key, s);
                    }
                }
            }
            Ok(())
        })?;
        let max_t = map
            .values()
            .flat_map(|s| s.steps.values().flat_map(|m| m.values().map(|e| e.t)))
            .max();
        if let Some(t) = max_t {
            self.max_event_time.insert(partition, t);
        }
        tracing::info!(partition, persons = map.len(), "funnel state restored");
        let max = map.values().map(|s| s.version).max().unwrap_or_default();
        self.clocks
            .insert(partition, runtime::VersionClock::after(max));
        self.state.insert(partition, map);
        Ok(())
    }

    async fn process(&mut self, batch: &[OwnedMessage]) -> Result<()> {
        let t = self.p.topics.clone();
        let defs = self.p.funnels.definitions.clone();
        let conversion = self.p.funnels.conversion_event_type.clone();
        let lateness = self.p.funnels.allowed_lateness_ms;
        let mut transfers: Vec<Out> = Vec::new();
        let mut dead: Vec<Out> = Vec::new();
        let mut dirty: BTreeSet<(i32, String)> = BTreeSet::new();
        for m in batch {
            let part = m.partition();
            let topic = m.topic();
            if !self.assigned.contains(&(topic.to_owned(), part)) {
                self.metrics
                    .records
                    .with_label_values(&["any", "not_assigned"])
                    .inc();
                continue;
            }
            let kind = if topic == t.events_resolved() {
                "event"
            } else if topic == t.identity_merges() {
                "merge"
            } else {
                "transfer"
            };
            let Some(bytes) = m.payload() else {
                self.metrics
                    .records
                    .with_label_values(&[kind, "empty"])
                    .inc();
                continue;
            };
            let state = self.state.entry(part).or_default();
            match kind {
                "event" => match zt_model::decode::<Event>(bytes) {
                    Ok(ev) => {
                        if self.suppressions.suppresses_event(&ev) {
                            self.metrics
                                .records
                                .with_label_values(&[kind, "suppressed"])
                                .inc();
                            continue;
                        }
                        let Some(person) = ev.person_id.clone() else {
                            self.metrics
                                .records
                                .with_label_values(&[kind, "no_person"])
                                .inc();
                            continue;
                        };
                        let max_t = self.max_event_time.entry(part).or_insert(i64::MIN);
                        if *max_t != i64::MIN && ev.event_time < max_t.saturating_sub(lateness) {
                            self.metrics.late.inc();
                        }
                        *max_t = (*max_t).max(ev.event_time);
                        self.metrics
                            .watermark
                            .with_label_values(&[&part.to_string()])
                            .set(max_t.saturating_sub(lateness).div_euclid(1_000));
                        let s = state
                            .entry(person.clone())
                            .or_insert_with(|| FunnelState::new(&person));
                        if let Some(into) = s.merged_into.clone() {
                            let mut delta = FunnelState::new(&person);
                            if delta.apply(&ev, &defs, &conversion) {
                                transfers.push(transfer(&t, &into, delta));
                            }
                            self.metrics
                                .records
                                .with_label_values(&[kind, "forwarded"])
                                .inc();
                        } else {
                            if s.apply(&ev, &defs, &conversion) {
                                dirty.insert((part, person));
                            }
                            self.metrics
                                .records
                                .with_label_values(&[kind, "applied"])
                                .inc();
                        }
                    }
                    Err(e) => {
                        self.metrics
                            .records
                            .with_label_values(&[kind, "dead_letter"])
                            .inc();
                        dead.push(dead_letter(&t, m, bytes, &e.to_string()));
                    }
                },
                "merge" => match serde_json::from_slice::<IdentityMerge>(bytes) {
                    Ok(merge) if merge.from != merge.into => {
                        let s = state
                            .entry(merge.from.clone())
                            .or_insert_with(|| FunnelState::new(&merge.from));
                        if s.merged_into.is_some() {
                            self.metrics
                                .records
                                .with_label_values(&[kind, "repeated"])
                                .inc();
                            continue;
                        }
                        let moved = std::mem::replace(s, FunnelState::new(&merge.from));
                        s.merged_into = Some(merge.into.clone());
                        // The redirect keeps the funnels and experiments it had rows for,
                        // so that their rows are deleted.
                        for f in moved.steps.keys() {
                            s.steps.entry(f.clone()).or_default();
                        }
                        for (x, first) in &moved.exposures {
                            s.exposures.insert(x.clone(), first.clone());
                        }
                        transfers.push(transfer(&t, &merge.into, moved));
                        dirty.insert((part, merge.from));
                        self.metrics
                            .records
                            .with_label_values(&[kind, "applied"])
                            .inc();
                    }
                    Ok(_) => {
                        self.metrics
                            .records
                            .with_label_values(&[kind, "ignored"])
                            .inc();
                    }
                    Err(e) => {
                        self.metrics
                            .records
                            .with_label_values(&[kind, "dead_letter"])
                            .inc();
                        dead.push(dead_letter(&t, m, bytes, &format!("merge unreadable: {e}")));
                    }
                },
                _ => match serde_json::from_slice::<FunnelTransfer>(bytes) {
                    Ok(tr) => {
                        let s = state
                            .entry(tr.into.clone())
                            .or_insert_with(|| FunnelState::new(&tr.into));
                        if let Some(next) = s.merged_into.clone() {
                            transfers.push(transfer(&t, &next, tr.state));
                            self.metrics
                                .records
                                .with_label_values(&[kind, "forwarded"])
                                .inc();
                        } else {
                            let before = s.clone();
                            s.absorb(&tr.state);
                            if *s != before {
                                dirty.insert((part, tr.into));
                            }
                            self.metrics
                                .records
                                .with_label_values(&[kind, "applied"])
                                .inc();
                        }
                    }
                    Err(e) => {
                        self.metrics
                            .records
                            .with_label_values(&[kind, "dead_letter"])
                            .inc();
                        dead.push(dead_letter(
                            &t,
                            m,
                            bytes,
                            &format!("transfer unreadable: {e}"),
                        ));
                    }
                },
            }
        }
        transfers.append(&mut dead);
        runtime::send_all(&self.producer, &transfers).await?;
        let mut out = Vec::with_capacity(dirty.len() * 3);
        for (part, person) in &dirty {
            let clock = self
                .clocks
                .entry(*part)
                .or_insert_with(|| runtime::VersionClock::after(0));
            let Some(s) = self.state.get_mut(part).and_then(|m| m.get_mut(person)) else {
                continue;
            };
            s.version = clock.tick();
            out.push(Out {
                topic: t.funnels_state(),
                key: person.clone().into_bytes(),
                value: Some(serde_json::to_vec(s).expect("state serializes")),
                headers: vec![],
            });
            let (frows, xrows) = s.rows(&defs);
            for r in frows {
                out.push(row_out(
                    &t,
                    format!("funnel:{}:{}", r.funnel_id, r.person_id),
                    &r,
                ));
                self.metrics.rows.with_label_values(&["funnel"]).inc();
            }
            for r in xrows {
                out.push(row_out(
                    &t,
                    format!("experiment:{}:{}", r.experiment_id, r.person_id),
                    &r,
                ));
                self.metrics.rows.with_label_values(&["experiment"]).inc();
            }
        }
        runtime::send_outputs_then_state(&self.producer, out, &t.funnels_state(), &FAIL).await?;
        self.metrics
            .persons
            .set(self.state.values().map(|m| m.len() as i64).sum());
        let mut next = runtime::next_offsets(batch);
        next.retain(|k, _| self.assigned.contains(k));
        runtime::commit_after_send(&self.consumer, &next)
    }
}

fn row_out<T: Serialize>(t: &TopicsConfig, key: String, row: &T) -> Out {
    Out {
        topic: t.funnels(),
        key: key.into_bytes(),
        value: Some(serde_json::to_vec(row).expect("row serializes")),
        headers: vec![],
    }
}

fn transfer(t: &TopicsConfig, into: &str, state: FunnelState) -> Out {
    let rec = FunnelTransfer {
        into: into.to_owned(),
        state,
    };
    Out {
        topic: t.funnels_transfers(),
        key: into.as_bytes().to_vec(),
        value: Some(serde_json::to_vec(&rec).expect("transfer serializes")),
        headers: vec![],
    }
}

fn dead_letter(t: &TopicsConfig, m: &OwnedMessage, original: &[u8], reason: &str) -> Out {
    let origin = (m.topic(), m.partition(), m.offset());
    runtime::dead_letter(t, "funnels", origin, original, None, reason)
}
