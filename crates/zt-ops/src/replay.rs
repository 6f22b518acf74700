//! `zt replay dlq list|run`: the dead letters on `<prefix>.dlq`, and their replay through
//! the current normalisers (docs/operations.md, "Replaying dead letters").
//!
//! **Reading.** Both commands read the whole dead-letter topic (every partition, from the
//! beginning to the high watermark at the start) and the markers topic
//! `<prefix>.dlq.replays`. A `dlq_id` kept more than once (a retried request's dead letters
//! carry the same id) counts once.
//!
//! **Selecting.** [`Filter`]: sources, reasons, stage (default `ingest`), a `failed_at`
//! window and ids. A run skips the dead letters whose marker says `published`, and those
//! whose marker says `failed` or `partial` unless `retry_failed`. Dead letters refused
//! before anything was read of them (`rate_limited`, which clients normally retry
//! themselves, and `bad_key`/`wrong_source_key`, which nobody authenticated) are replayed
//! only when the filter names their reason or their id.
//!
//! **Replaying.** Each selected dead letter goes through [`Replayer::replay`]. Events that
//! now normalise are published to `<prefix>.events.<source>` with ingest's own
//! [`Publisher`] (same key, same Confluent-framed Avro, idempotent `acks=all` producer);
//! an event id that an earlier replay (per the markers) or this run already published is
//! not published again. An item that still fails gets a new dead letter (stage `ingest`,
//! the same bytes) only when its reason or field differs from the original's, and not
//! when a dead letter with its id is on the topic already. Once the
//! broker acknowledged every record of a dead letter, its [`Marker`] is written, keyed by
//! `dlq_id`: `published` (every item is an event), `failed` (none is) or `partial`.
//!
//! **Guarantee.** A dead letter with an acknowledged `published` marker is never published
//! again. The window that remains: a crash (or a marker the broker did not acknowledge)
//! after the events' acknowledgement and before the marker's makes the next run publish
//! those events again, with the same event ids (so the duplicates are recognisable
//! downstream). Two runs at the same time may both publish; run one at a time.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use zt_ingest::IngestConfig;
use zt_ingest::error::Rejection;
use zt_ingest::metrics::IngestMetrics;
use zt_ingest::publish::{Outgoing, PublishError, Publisher};
use zt_ingest::replay::Replayer;
use zt_kafka::suppress::Suppressions;
use zt_kafka::{KafkaConfig, TopicsConfig};
use zt_model::DeadLetter;
use zt_model::pii::PiiHasher;

use crate::progress::Progress;
use crate::topic;

/// Reasons whose dead letters are replayed only when the filter names the reason (or the
/// dead letter's id): clients retry a 429 themselves, so replaying every `rate_limited`
/// body by default would publish what the client already re-sent; `bad_key` and
/// `wrong_source_key` bodies were never authenticated (anyone who reaches the port can
/// write them).
pub const EXPLICIT_REASONS: &[&str] = &["rate_limited", "bad_key", "wrong_source_key"];

/// Most dead letters replayed between two waits for acknowledgements.
const ROUND_LETTERS: usize = 500;
/// Most records sent between two waits for acknowledgements.
const ROUND_RECORDS: usize = 5_000;
/// Failures listed in a report.
const FIRST_FAILURES: usize = 10;
/// Distinct messages listed per reason.
const MESSAGES_PER_REASON: usize = 3;

/// What a replay needs: where the topics are, the `[ingest]` configuration to normalise
/// with (the fixed one) and the `[pii]` hasher ingest used.
#[derive(Debug, Clone)]
pub struct ReplayParams {
    /// `[kafka]`.
    pub kafka: KafkaConfig,
    /// `[topics]`.
    pub topics: TopicsConfig,
    /// `[ingest]`.
    pub ingest: IngestConfig,
    /// From `[pii]`.
    pub hasher: PiiHasher,
}

/// Which dead letters a command looks at. Empty lists select everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Sources (`erp`, `tracking`, ..., `unknown`).
    pub sources: Vec<String>,
    /// Reasons (`missing_field`, ...).
    pub reasons: Vec<String>,
    /// Stage; `None` is `ingest`, `"all"` every stage.
    pub stage: Option<String>,
    /// Earliest `failed_at` (ms, inclusive).
    pub since: Option<i64>,
    /// Latest `failed_at` (ms, exclusive).
    pub until: Option<i64>,
    /// `dlq_id`s.
    pub ids: Vec<String>,
}

impl Filter {
    /// Whether `dl` is selected.
    pub fn matches(&self, dl: &DeadLetter) -> bool {
        let stage = self.stage.as_deref().unwrap_or("ingest");
        (stage == "all" || dl.stage == stage)
            && (self.sources.is_empty() || self.sources.contains(&dl.source))
            && (self.reasons.is_empty() || self.reasons.contains(&dl.reason))
            && self.since.is_none_or(|t| dl.failed_at >= t)
            && self.until.is_none_or(|t| dl.failed_at < t)
            && (self.ids.is_empty() || self.ids.contains(&dl.dlq_id))
    }

    /// Whether the filter names `dl`'s reason or id (what [`EXPLICIT_REASONS`] need).
    pub fn names(&self, dl: &DeadLetter) -> bool {
        self.reasons.contains(&dl.reason) || self.ids.contains(&dl.dlq_id)
    }
}

/// A time for `--since`/`--until`: RFC 3339 (`2026-06-18T00:00:00+08:00`) or unix
/// milliseconds.
pub fn parse_time(s: &str) -> Result<i64, String> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s
            .parse()
            .map_err(|_| format!("{s:?} is too large for unix milliseconds"));
    }
    OffsetDateTime::parse(s, &Rfc3339)
        .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
        .map_err(|_| {
            format!(
                "{s:?} is neither an RFC 3339 time (2026-06-18T00:00:00+08:00) nor unix milliseconds"
            )
        })
}

/// The UTC day of a time in ms, `YYYY-MM-DD`.
fn day(ms: i64) -> String {
    let fmt = time::macros::format_description!("[year]-[month]-[day]");
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.date().format(&fmt).ok())
        .unwrap_or_else(|| "?".into())
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// How a replay of one dead letter ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Every item is an event on its source topic.
    Published,
    /// Some items are events, some still fail.
    Partial,
    /// Every item still fails.
    Failed,
}

impl Outcome {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Published => "published",
            Outcome::Partial => "partial",
            Outcome::Failed => "failed",
        }
    }
}

/// The value of a replay marker on `<prefix>.dlq.replays` (JSON, keyed by `dlq_id`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Marker {
    /// The replayed dead letter.
    pub dlq_id: String,
    /// Its source.
    pub source: String,
    /// How it ended.
    pub outcome: Outcome,
    /// Ids of its events that are on the source topic: published by this replay or found
    /// published by an earlier one.
    pub events: Vec<String>,
    /// The first reason an item still fails for (`partial`, `failed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Its field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Ids of the dead letters of its items that fail for another reason than it did
    /// (written by this replay, or kept already).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dead_letters: Vec<String>,
    /// When (UTC ms).
    pub replayed_at: i64,
}

/// The dead-letter topic as read.
#[derive(Debug, Default)]
struct Letters {
    /// Distinct by `dlq_id`, the first kept record of each, in partition and offset order.
    distinct: Vec<DeadLetter>,
    records: usize,
    undecodable: usize,
}

async fn read_letters(kafka: &KafkaConfig, topics: &TopicsConfig) -> anyhow::Result<Letters> {
    let (k, name) = (kafka.clone(), topics.dlq());
    let records = tokio::task::spawn_blocking(move || topic::read_all(&k, &name)).await??;
    let Some(records) = records else {
        anyhow::bail!(
            "the dead-letter topic {} does not exist (zt topics create)",
            topics.dlq()
        );
    };
    let mut out = Letters {
        records: records.len(),
        ..Letters::default()
    };
    let mut seen = HashSet::new();
    for r in records {
        match r.payload.as_deref().map(zt_model::decode::<DeadLetter>) {
            Some(Ok(dl)) => {
                if seen.insert(dl.dlq_id.clone()) {
                    out.distinct.push(dl);
                }
            }
            _ => {
                tracing::warn!(
                    partition = r.partition,
                    offset = r.offset,
                    "a record on the dead-letter topic is not a zt.DeadLetter; skipped"
                );
                out.undecodable += 1;
            }
        }
    }
    Ok(out)
}

/// The latest marker per `dlq_id`; `None` when the markers topic does not exist.
async fn read_markers(
    kafka: &KafkaConfig,
    topics: &TopicsConfig,
) -> anyhow::Result<Option<HashMap<String, Marker>>> {
    let (k, name) = (kafka.clone(), topics.dlq_replays());
    let Some(records) = tokio::task::spawn_blocking(move || topic::read_all(&k, &name)).await??
    else {
        return Ok(None);
    };
    let mut out = HashMap::new();
    for r in records {
        let Some(key) = r.key.as_deref().map(String::from_utf8_lossy) else {
            continue;
        };
        match r.payload.as_deref().map(serde_json::from_slice::<Marker>) {
            Some(Ok(m)) => {
                out.insert(key.into_owned(), m);
            }
            None => {
                out.remove(key.as_ref());
            }
            Some(Err(e)) => tracing::warn!(
                partition = r.partition,
                offset = r.offset,
                error = %e,
                "a record on the markers topic is not a replay marker; skipped"
            ),
        }
    }
    Ok(Some(out))
}

/// One line of `zt replay dlq list`: dead letters of a source, reason and UTC day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListRow {
    /// Source.
    pub source: String,
    /// Reason.
    pub reason: String,
    /// UTC day of `failed_at`, `YYYY-MM-DD`.
    pub day: String,
    /// Distinct dead letters.
    pub count: usize,
    /// Of those, how many have a marker `published`.
    pub published: usize,
    /// ... `partial` or `failed`.
    pub failed: usize,
}

/// The first distinct messages of one reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReasonMessages {
    /// Reason.
    pub reason: String,
    /// Distinct dead letters of the reason.
    pub count: usize,
    /// Up to three `(field, message, count)`, in the order first seen.
    pub messages: Vec<(Option<String>, String, usize)>,
}

/// What `zt replay dlq list` shows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListReport {
    /// The dead-letter topic.
    pub topic: String,
    /// Records read.
    pub records: usize,
    /// Records that are not dead letters.
    pub undecodable: usize,
    /// Distinct `dlq_id`s.
    pub distinct: usize,
    /// Distinct dead letters the filter selects.
    pub selected: usize,
    /// By source, reason and day.
    pub rows: Vec<ListRow>,
    /// The first messages per reason.
    pub messages: Vec<ReasonMessages>,
    /// Selected dead letters by marker outcome.
    pub markers: BTreeMap<Outcome, usize>,
    /// Selected, not yet replayed dead letters that `run` replays only when named.
    pub needs_naming: BTreeMap<String, usize>,
    /// Selected dead letters of stages other than ingest (not replayable), by stage.
    pub other_stages: BTreeMap<String, usize>,
    /// Whether the markers topic is missing (then nothing counts as replayed).
    pub markers_missing: bool,
}

/// Lists the dead letters `filter` selects.
pub async fn list(
    kafka: &KafkaConfig,
    topics: &TopicsConfig,
    filter: &Filter,
) -> anyhow::Result<ListReport> {
    let markers = read_markers(kafka, topics).await?;
    let letters = read_letters(kafka, topics).await?;
    let mut report = ListReport {
        topic: topics.dlq(),
        records: letters.records,
        undecodable: letters.undecodable,
        distinct: letters.distinct.len(),
        markers_missing: markers.is_none(),
        ..ListReport::default()
    };
    let markers = markers.unwrap_or_default();
    let mut rows: BTreeMap<(String, String, String), ListRow> = BTreeMap::new();
    let mut messages: BTreeMap<String, ReasonMessages> = BTreeMap::new();
    for dl in letters.distinct.iter().filter(|d| filter.matches(d)) {
        report.selected += 1;
        let marker = markers.get(&dl.dlq_id).map(|m| m.outcome);
        let row = rows
            .entry((dl.source.clone(), dl.reason.clone(), day(dl.failed_at)))
            .or_insert_with_key(|(s, r, d)| ListRow {
                source: s.clone(),
                reason: r.clone(),
                day: d.clone(),
                count: 0,
                published: 0,
                failed: 0,
            });
        row.count += 1;
        match marker {
            Some(Outcome::Published) => row.published += 1,
            Some(_) => row.failed += 1,
            None => {}
        }
        if let Some(o) = marker {
            *report.markers.entry(o).or_default() += 1;
        }
        if dl.stage != "ingest" {
            *report.other_stages.entry(dl.stage.clone()).or_default() += 1;
        } else if marker.is_none()
            && EXPLICIT_REASONS.contains(&dl.reason.as_str())
            && !filter.names(dl)
        {
            *report.needs_naming.entry(dl.reason.clone()).or_default() += 1;
        }
        let m = messages
            .entry(dl.reason.clone())
            .or_insert_with(|| ReasonMessages {
                reason: dl.reason.clone(),
                count: 0,
                messages: Vec::new(),
            });
        m.count += 1;
        if let Some(x) = m
            .messages
            .iter_mut()
            .find(|(f, msg, _)| *f == dl.field && *msg == dl.message)
        {
            x.2 += 1;
        } else if m.messages.len() < MESSAGES_PER_REASON {
            m.messages.push((dl.field.clone(), dl.message.clone(), 1));
        }
    }
    report.rows = rows.into_values().collect();
    report.messages = messages.into_values().collect();
    Ok(report)
}

/// How `zt replay dlq run` runs.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Which dead letters.
    pub filter: Filter,
    /// Normalise and report, produce nothing.
    pub dry_run: bool,
    /// Replay dead letters whose marker says `failed` or `partial` too.
    pub retry_failed: bool,
    /// Draw a progress bar on stderr.
    pub progress: bool,
    /// Tests only: read no markers, so everything selected is replayed again (the negative
    /// control of the idempotence test).
    #[doc(hidden)]
    pub ignore_markers: bool,
}

/// A dead letter that is still refused, for the report (no input values).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The replayed dead letter.
    pub dlq_id: String,
    /// Its source.
    pub source: String,
    /// The reason an item fails for now.
    pub reason: String,
    /// Its field.
    pub field: Option<String>,
    /// Ingest's message.
    pub message: String,
}

/// What `zt replay dlq run` did (or, with `dry_run`, would do).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunReport {
    /// Nothing was produced.
    pub dry_run: bool,
    /// Records read from the dead-letter topic.
    pub records: usize,
    /// Records that are not dead letters.
    pub undecodable: usize,
    /// Distinct dead letters the filter selects.
    pub selected: usize,
    /// Selected but skipped: replayed before (marker `published`; `failed`/`partial`
    /// without `retry_failed`).
    pub already_replayed: usize,
    /// Selected but skipped because the filter does not name their reason, by reason.
    pub needs_naming: BTreeMap<String, usize>,
    /// Refused by the replayer: `(dlq_id, why)`.
    pub not_replayable: Vec<(String, String)>,
    /// Dead letters replayed, by outcome.
    pub outcomes: BTreeMap<Outcome, usize>,
    /// Events published, by source.
    pub published: BTreeMap<String, usize>,
    /// Events not published because an earlier replay or this run already did.
    pub already_published: usize,
    /// Events not published because they belong to an erased person or identifier
    /// (`zt erase`; the suppression list).
    pub suppressed: usize,
    /// Items that still fail, by reason and field.
    pub still_failing: BTreeMap<(String, Option<String>), usize>,
    /// New dead letters written (reason or field changed).
    pub new_dead_letters: usize,
    /// The first items that still fail.
    pub first_failures: Vec<Failure>,
    /// Dead letters whose records the broker did not all acknowledge (no marker was
    /// written; the next run replays them): `(dlq_id, error)`.
    pub publish_errors: Vec<(String, String)>,
    /// Markers the broker did not acknowledge (their dead letters are replayed again next
    /// time, events included).
    pub marker_errors: usize,
}

impl RunReport {
    /// Dead letters replayed.
    pub fn replayed(&self) -> usize {
        self.outcomes.values().sum()
    }

    /// Whether everything that was sent was acknowledged.
    pub fn ok(&self) -> bool {
        self.publish_errors.is_empty() && self.marker_errors == 0
    }
}

/// One dead letter's replay, waiting for its acknowledgements.
#[derive(Debug)]
struct Plan {
    dlq_id: String,
    source: String,
    /// Indices of its records in the round.
    records: Vec<usize>,
    /// Sources of the events it publishes (parallel to the event records).
    event_sources: Vec<String>,
    /// Every event id of it on the source topic once acknowledged.
    events: Vec<String>,
    ok_items: usize,
    failed_items: usize,
    first_failure: Option<Rejection>,
    /// Ids of the dead letters its failing items have (new or already kept).
    dead_letters: Vec<String>,
    /// How many of those it writes.
    new_dead_letters: usize,
}

impl Plan {
    fn outcome(&self) -> Outcome {
        match (self.ok_items, self.failed_items) {
            (_, 0) => Outcome::Published,
            (0, _) => Outcome::Failed,
            _ => Outcome::Partial,
        }
    }

    fn marker(&self, replayed_at: i64) -> Marker {
        Marker {
            dlq_id: self.dlq_id.clone(),
            source: self.source.clone(),
            outcome: self.outcome(),
            events: self.events.clone(),
            reason: self
                .first_failure
                .as_ref()
                .map(|r| r.reason.as_str().to_owned()),
            field: self.first_failure.as_ref().and_then(|r| r.field.clone()),
            dead_letters: self.dead_letters.clone(),
            replayed_at,
        }
    }
}

/// The records of a few dead letters, sent together.
#[derive(Debug, Default)]
struct Round {
    plans: Vec<Plan>,
    records: Vec<Outgoing>,
}

/// Replays the dead letters `opts` selects (see the module documentation).
pub async fn run(params: &ReplayParams, opts: &RunOptions) -> anyhow::Result<RunReport> {
    let replayer = Replayer::new(&params.ingest, params.hasher.clone())
        .context("the [ingest] configuration to replay with")?;
    let markers = match read_markers(&params.kafka, &params.topics).await? {
        Some(m) => m,
        None if opts.dry_run => {
            tracing::warn!(
                topic = %params.topics.dlq_replays(),
                "the markers topic does not exist: nothing counts as replayed"
            );
            HashMap::new()
        }
        None => anyhow::bail!(
            "the markers topic {} does not exist; create it with `zt topics create`",
            params.topics.dlq_replays()
        ),
    };
    let markers = if opts.ignore_markers {
        HashMap::new()
    } else {
        markers
    };
    // Erased persons and identifiers (`zt erase`): their events are not published again.
    let suppressions = {
        let (kafka, topic) = (params.kafka.clone(), params.topics.suppressions());
        match tokio::task::spawn_blocking(move || {
            Suppressions::load(&kafka, &topic, Duration::from_secs(60))
        })
        .await
        .context("the suppression list task")?
        {
            Ok(s) => s,
            Err(e) if opts.dry_run => {
                tracing::warn!(error = %e, "cannot read the suppression list: nothing counts as erased");
                Suppressions::empty()
            }
            Err(e) => {
                return Err(e).with_context(|| {
                    format!(
                        "reading the suppression list {} (create it with `zt topics create`)",
                        params.topics.suppressions()
                    )
                });
            }
        }
    };
    let letters = read_letters(&params.kafka, &params.topics).await?;
    let mut report = RunReport {
        dry_run: opts.dry_run,
        records: letters.records,
        undecodable: letters.undecodable,
        ..RunReport::default()
    };
    // Event ids on the source topics by earlier replays, then also by this run.
    let mut published: HashSet<(String, String)> = markers
        .values()
        .flat_map(|m| m.events.iter().map(|e| (m.source.clone(), e.clone())))
        .collect();
    // Dead letters on the topic, then also those this run writes: a new dead letter with
    // an id already there (a retried replay failing the same way) is not written again.
    let mut kept: HashSet<String> = letters.distinct.iter().map(|d| d.dlq_id.clone()).collect();
    let mut candidates = Vec::new();
    for dl in letters.distinct.iter().filter(|d| opts.filter.matches(d)) {
        report.selected += 1;
        if let Some(m) = markers.get(&dl.dlq_id)
            && (m.outcome == Outcome::Published || !opts.retry_failed)
        {
            report.already_replayed += 1;
            continue;
        }
        if dl.stage == "ingest"
            && EXPLICIT_REASONS.contains(&dl.reason.as_str())
            && !opts.filter.names(dl)
        {
            *report.needs_naming.entry(dl.reason.clone()).or_default() += 1;
            continue;
        }
        candidates.push(dl);
    }

    let publisher = if opts.dry_run {
        None
    } else {
        let pc = zt_kafka::client::producer_config(&params.kafka)?;
        let metrics = zt_runtime::Metrics::new("replay");
        let m = IngestMetrics::new(metrics.registry())?;
        let timeout = Duration::from_millis(u64::from(params.kafka.producer.message_timeout_ms));
        Some(
            Publisher::new(pc, params.topics.clone(), timeout, m)
                .context("creating the Kafka producer")?,
        )
    };
    let mut progress = Progress::new(opts.progress, candidates.len() as u64, "dead letters");
    let mut round = Round::default();
    let mut pending = 0u64;
    for (i, dl) in candidates.iter().enumerate() {
        plan(
            &replayer,
            publisher.as_ref(),
            &suppressions,
            dl,
            &mut round,
            (&mut published, &mut kept),
            &mut report,
        );
        pending += 1;
        let last = i + 1 == candidates.len();
        if last || round.plans.len() >= ROUND_LETTERS || round.records.len() >= ROUND_RECORDS {
            finish_round(
                publisher.as_ref(),
                &params.topics,
                std::mem::take(&mut round),
                &mut report,
            )
            .await;
            progress.advance(std::mem::take(&mut pending));
        }
    }
    progress.finish();
    Ok(report)
}

/// Replays `dl` into `round`: its event records and new dead letters, and its plan. A
/// dry run (no publisher) only checks that they encode.
fn plan(
    replayer: &Replayer,
    publisher: Option<&Publisher>,
    suppressions: &Suppressions,
    dl: &DeadLetter,
    round: &mut Round,
    (published, kept): (&mut HashSet<(String, String)>, &mut HashSet<String>),
    report: &mut RunReport,
) {
    let items = match replayer.replay(dl) {
        Ok(items) => items,
        Err(why) => {
            report.not_replayable.push((dl.dlq_id.clone(), why.0));
            return;
        }
    };
    let failed_at = now_ms();
    let mut p = Plan {
        dlq_id: dl.dlq_id.clone(),
        source: dl.source.clone(),
        records: Vec::new(),
        event_sources: Vec::new(),
        events: Vec::new(),
        ok_items: 0,
        failed_items: 0,
        first_failure: None,
        dead_letters: Vec::new(),
        new_dead_letters: 0,
    };
    for item in &items {
        match &item.result {
            Ok(ev) if suppressions.suppresses_event(ev) => {
                // An erased person's event: counted, never published (docs/erasure.md).
                p.ok_items += 1;
                report.suppressed += 1;
            }
            Ok(ev) => {
                p.ok_items += 1;
                p.events.push(ev.event_id.clone());
                if !published.insert((dl.source.clone(), ev.event_id.clone())) {
                    report.already_published += 1;
                    continue;
                }
                let rec = match publisher {
                    Some(pb) => pb.event_record(ev).map(Some),
                    None => zt_model::encode(ev)
                        .map(|_| None)
                        .map_err(PublishError::from),
                };
                match rec {
                    Ok(rec) => {
                        p.event_sources.push(ev.source.as_str().to_owned());
                        if let Some(rec) = rec {
                            p.records.push(round.records.len());
                            round.records.push(rec);
                        }
                    }
                    Err(e) => {
                        report
                            .publish_errors
                            .push((dl.dlq_id.clone(), format!("cannot encode an event: {e}")));
                        return;
                    }
                }
            }
            Err(rej) => {
                p.failed_items += 1;
                *report
                    .still_failing
                    .entry((rej.reason.as_str().to_owned(), rej.field.clone()))
                    .or_default() += 1;
                if report.first_failures.len() < FIRST_FAILURES {
                    report.first_failures.push(Failure {
                        dlq_id: dl.dlq_id.clone(),
                        source: dl.source.clone(),
                        reason: rej.reason.as_str().to_owned(),
                        field: rej.field.clone(),
                        message: rej.message.clone(),
                    });
                }
                p.first_failure.get_or_insert_with(|| rej.clone());
                if let Some(new) = replayer.dead_letter_for(dl, item, failed_at) {
                    p.dead_letters.push(new.dlq_id.clone());
                    if !kept.insert(new.dlq_id.clone()) {
                        continue;
                    }
                    let rec = match publisher {
                        Some(pb) => pb.dead_letter_record(&new).map(Some),
                        None => zt_model::encode(&new)
                            .map(|_| None)
                            .map_err(PublishError::from),
                    };
                    match rec {
                        Ok(rec) => {
                            p.new_dead_letters += 1;
                            if let Some(rec) = rec {
                                p.records.push(round.records.len());
                                round.records.push(rec);
                            }
                        }
                        Err(e) => {
                            report.publish_errors.push((
                                dl.dlq_id.clone(),
                                format!("cannot encode a dead letter: {e}"),
                            ));
                            return;
                        }
                    }
                }
            }
        }
    }
    round.plans.push(p);
}

/// Sends a round's records, waits for their acknowledgements, then writes the markers of
/// the dead letters whose records were all acknowledged. A dry run only counts.
async fn finish_round(
    publisher: Option<&Publisher>,
    topics: &TopicsConfig,
    round: Round,
    report: &mut RunReport,
) {
    let Some(publisher) = publisher else {
        for p in &round.plans {
            count_done(p, report);
        }
        return;
    };
    let results = publisher.send_all(&round.records, "replay").await;
    let replayed_at = now_ms();
    let mut marked: Vec<&Plan> = Vec::new();
    let mut markers: Vec<Outgoing> = Vec::new();
    for p in &round.plans {
        if let Some(e) = p
            .records
            .iter()
            .find_map(|&i| results.get(i).and_then(|r| r.as_ref().err()))
        {
            report
                .publish_errors
                .push((p.dlq_id.clone(), e.to_string()));
            continue;
        }
        let value = match serde_json::to_vec(&p.marker(replayed_at)) {
            Ok(v) => v,
            Err(e) => {
                report
                    .publish_errors
                    .push((p.dlq_id.clone(), format!("cannot encode a marker: {e}")));
                continue;
            }
        };
        markers.push(Outgoing {
            topic: topics.dlq_replays().into(),
            key: p.dlq_id.clone(),
            value,
        });
        marked.push(p);
    }
    let acks = publisher.send_all(&markers, "replay_markers").await;
    for (p, ack) in marked.into_iter().zip(acks) {
        // The events are on their topics either way; without the marker the next run
        // publishes them again (the documented window).
        if let Err(e) = ack {
            tracing::warn!(dlq_id = %p.dlq_id, error = %e, "replay marker not acknowledged");
            report.marker_errors += 1;
        }
        count_done(p, report);
    }
    if !report.ok() {
        publisher.recover(Duration::ZERO);
    }
}

fn count_done(p: &Plan, report: &mut RunReport) {
    *report.outcomes.entry(p.outcome()).or_default() += 1;
    for s in &p.event_sources {
        *report.published.entry(s.clone()).or_default() += 1;
    }
    report.new_dead_letters += p.new_dead_letters;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dl(stage: &str, source: &str, reason: &str, failed_at: i64) -> DeadLetter {
        DeadLetter {
            dlq_id: format!("{stage}-{source}-{reason}-{failed_at}"),
            stage: stage.into(),
            source: source.into(),
            reason: reason.into(),
            field: None,
            message: "m".into(),
            original: b"{}".to_vec(),
            content_type: None,
            received_at: failed_at,
            failed_at,
            origin_topic: None,
            origin_partition: None,
            origin_offset: None,
        }
    }

    #[test]
    fn filters_select_by_every_dimension() {
        let a = dl("ingest", "erp", "missing_field", 1_000);
        let b = dl("sink", "erp", "clickhouse_rejected", 2_000);
        let c = dl("ingest", "tracking", "rate_limited", 3_000);
        let all = Filter::default();
        assert!(
            all.matches(&a) && !all.matches(&b) && all.matches(&c),
            "stage ingest by default"
        );
        let any = Filter {
            stage: Some("all".into()),
            ..Filter::default()
        };
        assert!(any.matches(&b));
        let f = Filter {
            sources: vec!["erp".into()],
            since: Some(1_000),
            until: Some(3_000),
            ..Filter::default()
        };
        assert!(f.matches(&a) && !f.matches(&c));
        let f = Filter {
            since: Some(1_001),
            ..Filter::default()
        };
        assert!(!f.matches(&a) && f.matches(&c));
        let f = Filter {
            reasons: vec!["rate_limited".into()],
            ..Filter::default()
        };
        assert!(f.matches(&c) && f.names(&c) && !all.names(&c));
        let f = Filter {
            ids: vec![a.dlq_id.clone()],
            ..Filter::default()
        };
        assert!(f.matches(&a) && f.names(&a) && !f.matches(&c));
    }

    #[test]
    fn times_are_rfc3339_or_unix_ms() {
        assert_eq!(parse_time("1767578400000"), Ok(1_767_578_400_000));
        assert_eq!(
            parse_time("2026-01-05T10:00:00+08:00"),
            Ok(1_767_578_400_000)
        );
        assert_eq!(parse_time("2026-01-05T02:00:00Z"), Ok(1_767_578_400_000));
        assert!(parse_time("yesterday").is_err());
        assert!(parse_time("2026-01-05").is_err());
        assert_eq!(day(1_767_578_400_000), "2026-01-05");
    }

    #[test]
    fn markers_are_json_with_the_documented_fields() {
        let m = Marker {
            dlq_id: "abc".into(),
            source: "erp".into(),
            outcome: Outcome::Partial,
            events: vec!["e1".into()],
            reason: Some("invalid_value".into()),
            field: Some("total".into()),
            dead_letters: vec![],
            replayed_at: 5,
        };
        let v: serde_json::Value = serde_json::to_value(&m).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"dlq_id": "abc", "source": "erp", "outcome": "partial",
                "events": ["e1"], "reason": "invalid_value", "field": "total", "replayed_at": 5})
        );
        let back: Marker = serde_json::from_value(v).unwrap();
        assert_eq!(back, m);
    }
}
