//! `zt process profiles`: one live profile per person, from resolved events.
//!
//! **Inputs**, co-partitioned (same partition count, keyed by person id, range
//! assignment, so partition *n* of every input lands on the same member):
//! `zt.events.resolved` (events with `person_id`), `zt.identity.merges` (keyed by the
//! person that ends) and `zt.profiles.transfers` (state moved between persons, keyed by
//! the receiving person).
//!
//! **State** per assigned partition: a [`ProfileState`] per person, in memory, restored on
//! assignment from the compacted changelog `zt.profiles.state` (same partition number).
//!
//! **Per batch**: apply every record; a merge moves the ending person's whole state to the
//! person it continues as (a transfer) and leaves a redirect behind; an event or transfer
//! for a redirected person is forwarded the same way. Then (1) send the transfers and wait
//! for their acknowledgement, (2) send the snapshot of every changed person to
//! `zt.profiles` and wait, then its new state to `zt.profiles.state` and wait (a state on
//! the changelog means its snapshot was delivered, so a replay after a crash re-sends what
//! it must: [`runtime::send_outputs_then_state`]), (3) commit the input offsets.
//! Snapshots are coalesced per batch: one per changed person per batch.
//!
//! **Delivery guarantee: effectively once, without broker transactions.** The state is a
//! join-semilattice keyed by business ids ([`crate::profile`]): re-applying an event, a
//! transfer or a merge after a crash changes nothing, so the replay after the last commit
//! neither loses nor double counts. A redirect is only written after the transfer it
//! implies is acknowledged, so a replayed merge that finds the redirect knows the state
//! has moved. Every state record and snapshot carries a version from a per-partition
//! [`runtime::VersionClock`]: readers (the restore, the sink's ReplacingMergeTree) keep
//! the highest version per person, so a write of a crashed owner that reaches the log only
//! after the restore (no transactions to fence it) cannot win over newer state.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use prometheus::{IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::producer::FutureProducer;
use zt_kafka::{KafkaConfig, TopicsConfig};
use zt_model::Event;
use zt_runtime::health::Health;
use zt_runtime::shutdown::Shutdown;

use crate::config::ProfilesConfig;
use crate::error::{Error, Result};
use crate::profile::ProfileState;
use crate::records::{IdentityMerge, TransferRecord};
use crate::runtime::{self, Ctx, Out, RebalanceEvent};

/// Test-only switch: `1` skips restoring state from the changelog (negative control).
pub const DISABLE_RESTORE_ENV: &str = "ZT_PROFILES_DISABLE_RESTORE";

/// Test-only crash points (`zt_runtime::failpoint`): `before_state` and `state_first`
/// ([`runtime::send_outputs_then_state`]).
pub const FAILPOINT_ENV: &str = "ZT_PROFILES_FAILPOINT";

static FAIL: zt_runtime::failpoint::Failpoint =
    zt_runtime::failpoint::Failpoint::new(FAILPOINT_ENV);

/// The profiles processor's metrics. Labels never carry ids or personal data.
#[derive(Debug, Clone)]
pub struct ProfilesMetrics {
    /// Input records by kind and outcome.
    pub records: IntCounterVec,
    /// Profiles (and redirects) held, all assigned partitions.
    pub profiles: IntGauge,
    /// Snapshots sent.
    pub snapshots: prometheus::IntCounter,
    /// Transfers sent (merges and forwarded late records).
    pub transfers: prometheus::IntCounter,
    /// Seconds the last restore of assigned partitions took.
    pub restore_seconds: prometheus::Gauge,
    /// Consumer lag per input partition.
    pub lag: IntGaugeVec,
    /// Errors by kind.
    pub errors: IntCounterVec,
}

impl ProfilesMetrics {
    /// Creates and registers the metrics.
    pub fn new(r: &Registry) -> Self {
        ProfilesMetrics {
            records: runtime::register(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "zt_profiles_records_total",
                        "input records by kind (event, merge, transfer) and outcome",
                    ),
                    &["kind", "outcome"],
                )
                .expect("metric"),
            ),
            profiles: runtime::register(
                r,
                IntGauge::new("zt_profiles_state_profiles", "profiles held in state")
                    .expect("metric"),
            ),
            snapshots: runtime::register(
                r,
                prometheus::IntCounter::new("zt_profiles_snapshots_total", "snapshots sent")
                    .expect("metric"),
            ),
            transfers: runtime::register(
                r,
                prometheus::IntCounter::new(
                    "zt_profiles_transfers_total",
                    "profile state moved to another person (merges, forwarded records)",
                )
                .expect("metric"),
            ),
            restore_seconds: runtime::register(
                r,
                prometheus::Gauge::new(
                    "zt_profiles_restore_seconds",
                    "seconds the last restore of assigned partitions took",
                )
                .expect("metric"),
            ),
            lag: runtime::register(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "zt_profiles_consumer_lag",
                        "records behind the high watermark, per input partition",
                    ),
                    &["topic", "partition"],
                )
                .expect("metric"),
            ),
            errors: runtime::register(
                r,
                IntCounterVec::new(
                    Opts::new("zt_profiles_errors_total", "errors by kind"),
                    &["kind"],
                )
                .expect("metric"),
            ),
        }
    }
}

/// Everything `zt process profiles` needs.
#[derive(Debug, Clone)]
pub struct ProfilesParams {
    /// Broker.
    pub kafka: KafkaConfig,
    /// Topic names.
    pub topics: TopicsConfig,
    /// The processor's section.
    pub profiles: ProfilesConfig,
}

/// How long a member waits for an assignment after a revocation before re-joining.
const REJOIN_PATIENCE: Duration = Duration::from_secs(30);

/// How long start-up waits for a broker that does not answer.
const PATIENCE: Duration = Duration::from_secs(120);

struct Processor {
    /// Erased persons and identifiers (`zt erase`): their events are not applied.
    suppressions: zt_kafka::suppress::Suppressions,
    p: ProfilesParams,
    consumer: StreamConsumer<Ctx>,
    ctx: Ctx,
    reader: BaseConsumer,
    producer: FutureProducer,
    /// Profiles by partition number, then person.
    state: HashMap<i32, HashMap<String, ProfileState>>,
    /// Write versions per partition.
    clocks: HashMap<i32, runtime::VersionClock>,
    /// Assigned input partitions: records of others (received before a revocation) are
    /// dropped, never applied to state this member no longer owns.
    assigned: BTreeSet<(String, i32)>,
    metrics: ProfilesMetrics,
}

/// Runs the profiles processor until `shutdown`.
pub async fn run(
    params: ProfilesParams,
    registry: &Registry,
    health: &Health,
    shutdown: Shutdown,
) -> Result<()> {
    params.profiles.validate()?;
    params.kafka.validate()?;
    let metrics = ProfilesMetrics::new(registry);
    let ready = health.register("kafka");
    ready.set_not_ready("waiting for a partition assignment");
    let t = &params.topics;
    let inputs = inputs(t);
    let group = params.profiles.group(&params.topics);
    let reader = runtime::reader(&params.kafka, &group)?;
    // Co-partitioning is what puts a person's events, merges, transfers and state on one
    // member: refuse to start without it.
    let mut counts = BTreeMap::new();
    for topic in inputs.iter().chain([&t.profiles(), &t.profiles_state()]) {
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
            "the profiles processor needs the same partition count on {counts:?} \
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
        clocks: HashMap::new(),
        assigned: BTreeSet::new(),
        metrics,
    };
    tracing::info!(inputs = ?inputs, group = %group, "profiles processor started");
    ready.set_ready();
    let out = proc.run_loop(&shutdown).await;
    proc.consumer.unsubscribe();
    out
}

/// The topics `zt process profiles` consumes, co-partitioned: resolved events, merges and
/// its own transfers.
pub fn inputs(t: &TopicsConfig) -> Vec<String> {
    vec![
        t.events_resolved(),
        t.identity_merges(),
        t.profiles_transfers(),
    ]
}

impl Processor {
    async fn run_loop(&mut self, shutdown: &Shutdown) -> Result<()> {
        let age = Duration::from_millis(self.p.profiles.batch_max_age_ms);
        while !shutdown.is_triggered() {
            let (batch, events) = runtime::collect(
                &self.consumer,
                &self.ctx,
                self.p.profiles.batch_max_records,
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
            .profiles
            .set(self.state.values().map(|m| m.len() as i64).sum());
        Ok(())
    }

    fn restore(&mut self, partition: i32) -> Result<()> {
        let topic = self.p.topics.profiles_state();
        let mut map: HashMap<String, ProfileState> = HashMap::new();
        if std::env::var_os(DISABLE_RESTORE_ENV).is_some_and(|v| v == "1") {
            // Test only: the crash tests' negative control shows that without the
            // changelog a restart loses state and the oracle notices.
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
                    let s: ProfileState =
                        serde_json::from_slice(v).map_err(|e| Error::Corrupt {
                            topic: topic.clone(),
                            partition,
                            offset: m.offset(),
                            reason: format!("profile state unreadable: {e}"),
                        })?;
                    // The highest version wins, not the latest offset: a write of a crashed
                    // owner that landed late carries an older version.
                    if map.get(&key).is_none_or(|old| s.version >= old.version) {
                        map.insert(key, s);
                    }
                }
            }
            Ok(())
        })?;
        tracing::info!(partition, profiles = map.len(), "profiles restored");
        let max = map.values().map(|s| s.version).max().unwrap_or_default();
        self.clocks
            .insert(partition, runtime::VersionClock::after(max));
        self.state.insert(partition, map);
        Ok(())
    }

    async fn process(&mut self, batch: &[OwnedMessage]) -> Result<()> {
        let t = self.p.topics.clone();
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
                    Ok(mut ev) => {
                        if self.suppressions.suppresses_event(&ev) {
                            self.metrics
                                .records
                                .with_label_values(&[kind, "suppressed"])
                                .inc();
                            continue;
                        }
                        keep_own_identifiers(&mut ev, m);
                        let Some(person) = ev.person_id.clone() else {
                            self.metrics
                                .records
                                .with_label_values(&[kind, "no_person"])
                                .inc();
                            continue;
                        };
                        let s = state
                            .entry(person.clone())
                            .or_insert_with(|| ProfileState::new(&person));
                        if let Some(into) = s.merged_into.clone() {
                            let mut delta = ProfileState::new(&person);
                            delta.apply(&ev);
                            transfers.push(transfer(&t, &into, delta));
                            self.metrics
                                .records
                                .with_label_values(&[kind, "forwarded"])
                                .inc();
                        } else {
                            let before = s.clone();
                            s.apply(&ev);
                            if *s != before {
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
                            .or_insert_with(|| ProfileState::new(&merge.from));
                        if s.merged_into.is_some() {
                            self.metrics
                                .records
                                .with_label_values(&[kind, "repeated"])
                                .inc();
                            continue;
                        }
                        let moved = std::mem::replace(s, ProfileState::new(&merge.from));
                        s.merged_into = Some(merge.into.clone());
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
                _ => match serde_json::from_slice::<TransferRecord>(bytes) {
                    Ok(tr) => {
                        let s = state
                            .entry(tr.into.clone())
                            .or_insert_with(|| ProfileState::new(&tr.into));
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
        // 1. Transfers (and dead letters) first: a redirect is written only once the state
        //    it moved is safely on its way.
        transfers.append(&mut dead);
        runtime::send_all(&self.producer, &transfers).await?;
        self.metrics.transfers.inc_by(transfers.len() as u64);
        // 2. State and snapshots.
        let mut out = Vec::with_capacity(dirty.len() * 2);
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
                topic: t.profiles_state(),
                key: person.clone().into_bytes(),
                value: Some(serde_json::to_vec(s).expect("state serializes")),
                headers: vec![],
            });
            out.push(Out {
                topic: t.profiles(),
                key: person.clone().into_bytes(),
                value: Some(
                    serde_json::to_vec(&s.snapshot(&self.p.profiles.rfm))
                        .expect("snapshot serializes"),
                ),
                headers: vec![],
            });
        }
        runtime::send_outputs_then_state(&self.producer, out, &t.profiles_state(), &FAIL).await?;
        self.metrics.snapshots.inc_by(dirty.len() as u64);
        self.metrics
            .profiles
            .set(self.state.values().map(|m| m.len() as i64).sum());
        // 3. Commit (only what this member owns).
        let mut next = runtime::next_offsets(batch);
        next.retain(|k, _| self.assigned.contains(k));
        runtime::commit_after_send(&self.consumer, &next)
    }
}

/// Drops the identifiers the identity processor did not give to the event's person (the
/// `zt-person-ids` header), so that an identifier a guard refused does not show up in the
/// profile. Without the header every identifier is kept.
fn keep_own_identifiers(ev: &mut Event, m: &OwnedMessage) {
    use rdkafka::message::Headers;
    let Some(headers) = m.headers() else { return };
    let Some(own) = headers
        .iter()
        .find(|h| h.key == crate::identity::PERSON_IDS_HEADER)
        .and_then(|h| h.value)
        .and_then(|v| serde_json::from_slice::<Vec<String>>(v).ok())
    else {
        return;
    };
    let own: BTreeSet<String> = own.into_iter().collect();
    let i = &mut ev.identities;
    for (kind, slot) in [
        ("crm_customer_id", &mut i.crm_customer_id),
        ("user_id", &mut i.user_id),
        ("anonymous_id", &mut i.anonymous_id),
        ("phone_hash", &mut i.phone_hash),
        ("email_hash", &mut i.email_hash),
    ] {
        if slot
            .as_ref()
            .is_some_and(|v| !own.contains(&format!("{kind}:{v}")))
        {
            *slot = None;
        }
    }
}

fn transfer(t: &TopicsConfig, into: &str, state: ProfileState) -> Out {
    let rec = TransferRecord {
        into: into.to_owned(),
        state,
    };
    Out {
        topic: t.profiles_transfers(),
        key: into.as_bytes().to_vec(),
        value: Some(serde_json::to_vec(&rec).expect("transfer serializes")),
        headers: vec![],
    }
}

fn dead_letter(t: &TopicsConfig, m: &OwnedMessage, original: &[u8], reason: &str) -> Out {
    let origin = (m.topic(), m.partition(), m.offset());
    runtime::dead_letter(t, "profiles", origin, original, None, reason)
}
