//! `zt replay backfill run|finish`: rebuilds the output of the profiles or the funnels
//! processor from its inputs as a new output version, then switches the readers over
//! (docs/operations.md, "Backfill").
//!
//! An output version is a set of topics and a consumer group
//! ([`zt_kafka::config::versioned`]): version 1 is `<prefix>.profiles`,
//! `<prefix>.profiles.state`, `<prefix>.profiles.transfers` under the group
//! `[profiles] group_id`; version N > 1 appends `.v<N>` to each of them. The configuration
//! names the live version (`[topics] profiles_version`, `funnels_version`): the processor
//! writes it and the sink loads it.
//!
//! 1. [`run`] (the live version keeps running meanwhile): creates the new version's topics
//!    with the partition count of `<prefix>.events.resolved` (co-partitioning), commits the
//!    new group's start offsets on the processor's inputs (`--from beginning`: the first
//!    retained record; `--from TIME`: the first record at or after TIME, Kafka's
//!    offsets-for-times; the new transfers topic from its start), and runs the processor
//!    in this process under the new version until its group has no lag twice in a row. The
//!    new state starts empty, so everything it holds comes from the replayed inputs, with
//!    the configuration of this run (e.g. changed funnel definitions or RFM cut points).
//!    Erased persons stay out: the processor honours `<prefix>.suppressions` as always.
//!    Interrupted, it continues from the new group's committed offsets when run again.
//! 2. The operator switches: `[topics] <processor>_version = N` for the processor and the
//!    sink, and restarts both. The processor continues the new group where the backfill
//!    stopped; the sink starts loading the new output topic from its beginning into the
//!    same ClickHouse tables (rows carry `_topic`).
//! 3. [`finish`]: waits until the sink's group has loaded the new output topic to its end,
//!    then deletes the rows of every other version from the processor's tables
//!    (`ALTER TABLE ... DELETE WHERE _topic != '<new topic>'`, waited for through
//!    `system.mutations`). From then on the tables hold exactly the new version. The old
//!    version's topics and group are left for the operator to delete.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use zt_kafka::{KafkaConfig, TopicsConfig};
use zt_process::{FunnelsConfig, ProfilesConfig};
use zt_runtime::{Health, Metrics, Shutdown};
use zt_sink::config::ClickHouseConfig;

use crate::erase::{MUTATION_TIMEOUT, count, delete, quote, wait_for_mutations};
use crate::progress::Progress;

/// Broker calls wait at most this long.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// How often the groups' lag is checked.
const POLL: Duration = Duration::from_secs(1);

/// A processor whose output can be rebuilt. (The identity processor cannot: its output
/// defines the person ids every other output is keyed by.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// `zt process profiles`: `<prefix>.profiles`, loaded into `profiles`.
    Profiles,
    /// `zt process funnels`: `<prefix>.funnels`, loaded into `funnel_progress` and
    /// `experiment_progress`.
    Funnels,
}

impl std::str::FromStr for Output {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "profiles" => Ok(Output::Profiles),
            "funnels" => Ok(Output::Funnels),
            "identity" => Err(
                "the identity processor cannot be backfilled: its output defines \
                               the person ids every other output is keyed by; backfill \
                               profiles or funnels"
                    .into(),
            ),
            _ => Err(format!("{s:?} is not a processor: profiles or funnels")),
        }
    }
}

impl Output {
    /// `profiles` or `funnels`.
    pub fn name(self) -> &'static str {
        match self {
            Output::Profiles => "profiles",
            Output::Funnels => "funnels",
        }
    }

    /// The configured (live) version.
    pub fn version(self, t: &TopicsConfig) -> u32 {
        match self {
            Output::Profiles => t.profiles_version,
            Output::Funnels => t.funnels_version,
        }
    }

    /// `t` with this output at `version`.
    pub fn at_version(self, t: &TopicsConfig, version: u32) -> TopicsConfig {
        let mut t = t.clone();
        match self {
            Output::Profiles => t.profiles_version = version,
            Output::Funnels => t.funnels_version = version,
        }
        t
    }

    /// The topics one version consists of: what the sink loads first.
    pub fn topics(self, t: &TopicsConfig) -> Vec<String> {
        match self {
            Output::Profiles => vec![t.profiles(), t.profiles_state(), t.profiles_transfers()],
            Output::Funnels => vec![t.funnels(), t.funnels_state(), t.funnels_transfers()],
        }
    }

    /// The ClickHouse tables the sink loads from this output.
    pub fn tables(self) -> &'static [&'static str] {
        match self {
            Output::Profiles => &["profiles"],
            Output::Funnels => &["funnel_progress", "experiment_progress"],
        }
    }

    /// The processor's inputs under `t`.
    pub fn inputs(self, t: &TopicsConfig) -> Vec<String> {
        match self {
            Output::Profiles => zt_process::profiles::inputs(t),
            Output::Funnels => zt_process::funnels::inputs(t),
        }
    }
}

/// What a backfill needs: the settings of `zt process <processor>` and of the sink.
#[derive(Debug, Clone)]
pub struct BackfillParams {
    /// Broker.
    pub kafka: KafkaConfig,
    /// Topic names, with the live versions.
    pub topics: TopicsConfig,
    /// `[profiles]`, as the new version is to be computed.
    pub profiles: ProfilesConfig,
    /// `[funnels]`, as the new version is to be computed.
    pub funnels: FunnelsConfig,
    /// ClickHouse (for `finish`).
    pub clickhouse: ClickHouseConfig,
    /// The sink's consumer group (for `finish`).
    pub sink_group: String,
}

impl BackfillParams {
    fn group(&self, output: Output, t: &TopicsConfig) -> String {
        match output {
            Output::Profiles => self.profiles.group(t),
            Output::Funnels => self.funnels.group(t),
        }
    }
}

/// Where the new version starts reading its inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// The first retained record of each partition.
    Beginning,
    /// The first record at or after this time (UTC ms, the records' timestamps).
    Time(i64),
}

/// What [`run`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct RunReport {
    /// The output and its new version.
    pub output: Output,
    /// The new version.
    pub version: u32,
    /// Its consumer group.
    pub group: String,
    /// Topics created (those that existed already are not listed).
    pub created: Vec<String>,
    /// False when the group had committed offsets already: an interrupted backfill went on.
    pub fresh: bool,
    /// Input records the run had to process when it started.
    pub records: u64,
    /// How long the processor ran.
    pub seconds: f64,
}

/// Builds version `version` of `output` (see the module documentation, step 1); returns
/// once the new group has caught up with its inputs. `shutdown` interrupts it (the next run
/// continues).
pub async fn run(
    p: &BackfillParams,
    output: Output,
    version: u32,
    start: Start,
    progress: bool,
    shutdown: &Shutdown,
) -> anyhow::Result<RunReport> {
    let live = output.version(&p.topics);
    if version <= live {
        bail!(
            "--version {version}: must be above the live version, topics.{}_version = {live} \
             (a backfill builds a new version next to the live one)",
            output.name()
        );
    }
    let t = output.at_version(&p.topics, version);
    let group = p.group(output, &t);

    // The new version's topics, co-partitioned with the resolved events.
    let partitions = {
        let kafka = p.kafka.clone();
        let resolved = t.events_resolved();
        tokio::task::spawn_blocking(move || zt_kafka::topics::list_topics(&kafka, CALL_TIMEOUT))
            .await?
            .context("listing the broker's topics")?
            .into_iter()
            .find(|(name, _)| *name == resolved)
            .map(|(_, n)| n)
            .with_context(|| format!("{} does not exist (zt topics create)", t.events_resolved()))?
    };
    let names = output.topics(&t);
    let specs: Vec<_> = zt_kafka::platform_topics(&t)
        .into_iter()
        .filter(|s| names.contains(&s.name))
        .map(|mut s| {
            s.partitions = partitions as i32;
            s
        })
        .collect();
    let created = zt_kafka::create_topics(&p.kafka, &specs)
        .await
        .context("creating the new version's topics")?
        .into_iter()
        .filter(|(_, o)| *o == zt_kafka::topics::CreateOutcome::Created)
        .map(|(name, _)| name)
        .collect();

    // Start offsets, unless an earlier run committed some already.
    let inputs = output.inputs(&t);
    let fresh = {
        let (kafka, group, inputs, own) = (
            p.kafka.clone(),
            group.clone(),
            inputs.clone(),
            output.topics(&t),
        );
        tokio::task::spawn_blocking(move || set_start(&kafka, &group, &inputs, &own, start))
            .await??
    };

    // The processor, in this process, until its group has caught up.
    let first = lag(&p.kafka, &group, &inputs).await?;
    let stop = Shutdown::new();
    let task = {
        let (kafka, topics, stop) = (p.kafka.clone(), t.clone(), stop.clone());
        let (profiles, funnels) = (p.profiles.clone(), p.funnels.clone());
        tokio::spawn(async move {
            let metrics = Metrics::new("backfill");
            let registry = metrics.registry();
            let health = Health::new();
            match output {
                Output::Profiles => {
                    let params = zt_process::ProfilesParams {
                        kafka,
                        topics,
                        profiles,
                    };
                    zt_process::profiles::run(params, registry, &health, stop).await
                }
                Output::Funnels => {
                    let params = zt_process::FunnelsParams {
                        kafka,
                        topics,
                        funnels,
                    };
                    zt_process::funnels::run(params, registry, &health, stop).await
                }
            }
        })
    };
    let started = Instant::now();
    let mut bar = Progress::new(progress, first, "input records");
    let mut done = 0u64;
    let mut streak = 0;
    let outcome = loop {
        if shutdown.is_triggered() {
            break Err(anyhow::anyhow!(
                "interrupted; run the same command again to continue where it stopped"
            ));
        }
        if task.is_finished() {
            break Err(anyhow::anyhow!("the processor stopped"));
        }
        tokio::time::sleep(POLL).await;
        let now = match lag(&p.kafka, &group, &inputs).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "lag check failed; retrying");
                continue;
            }
        };
        let d = first.saturating_sub(now);
        if d > done {
            bar.advance(d - done);
            done = d;
        }
        streak = if now == 0 { streak + 1 } else { 0 };
        if streak >= 2 {
            break Ok(());
        }
    };
    stop.trigger();
    let ran = task.await.context("the processor task")?;
    bar.finish();
    match (outcome, ran) {
        (Ok(()), Ok(())) => {}
        (Ok(()), Err(e)) => return Err(e).context("the processor failed while stopping"),
        (Err(e), Ok(())) => return Err(e),
        (Err(e), Err(pe)) => return Err(pe).context(e.to_string()),
    }
    Ok(RunReport {
        output,
        version,
        group,
        created,
        fresh,
        records: first,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Records on `topics` that `group` has not committed. Blocking calls on a worker thread.
async fn lag(kafka: &KafkaConfig, group: &str, topics: &[String]) -> anyhow::Result<u64> {
    let (kafka, group, topics) = (kafka.clone(), group.to_owned(), topics.to_vec());
    Ok(
        tokio::task::spawn_blocking(move || zt_kafka::group::group_lag(&kafka, &group, &topics))
            .await??,
    )
}

fn checker(kafka: &KafkaConfig, group: &str) -> anyhow::Result<BaseConsumer> {
    zt_kafka::client::base_config(kafka)?
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .context("a consumer for the group's offsets")
}

/// Commits `group`'s start offsets on `inputs` unless it has committed offsets already;
/// true when it set them. The new version's own topics (`own`) start at their beginning.
fn set_start(
    kafka: &KafkaConfig,
    group: &str,
    inputs: &[String],
    own: &[String],
    start: Start,
) -> anyhow::Result<bool> {
    let c = checker(kafka, group)?;
    let mut all = TopicPartitionList::new();
    let mut marks = BTreeMap::new();
    for topic in inputs {
        let n = zt_kafka::client::partition_count(&c, topic, CALL_TIMEOUT)?;
        if n == 0 {
            bail!("{topic} does not exist (zt topics create)");
        }
        for p in 0..n {
            all.add_partition(topic, p);
            marks.insert(
                (topic.clone(), p),
                c.fetch_watermarks(topic, p, CALL_TIMEOUT)?,
            );
        }
    }
    let committed = c.committed_offsets(all.clone(), CALL_TIMEOUT)?;
    if committed
        .elements()
        .iter()
        .any(|e| matches!(e.offset(), Offset::Offset(_)))
    {
        return Ok(false);
    }
    let mut at = TopicPartitionList::new();
    let mut by_time = TopicPartitionList::new();
    for ((topic, p), (low, _)) in &marks {
        match start {
            Start::Time(ms) if !own.contains(topic) => {
                by_time.add_partition_offset(topic, *p, Offset::Offset(ms))?;
            }
            _ => {
                at.add_partition_offset(topic, *p, Offset::Offset(*low))?;
            }
        }
    }
    if by_time.count() > 0 {
        let found = c
            .offsets_for_times(by_time, CALL_TIMEOUT)
            .context("looking up offsets by time")?;
        for e in found.elements() {
            let (_, high) = marks[&(e.topic().to_owned(), e.partition())];
            // No record at or after the time: start at the end.
            let o = match e.offset() {
                Offset::Offset(o) if o >= 0 => o,
                _ => high,
            };
            at.add_partition_offset(e.topic(), e.partition(), Offset::Offset(o))?;
        }
    }
    c.commit(&at, CommitMode::Sync)
        .with_context(|| format!("committing the start offsets of group {group}"))?;
    Ok(true)
}

/// What [`finish`] did, per table: rows of other versions deleted, rows kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinishReport {
    /// The output.
    pub output: Output,
    /// The version the tables now hold.
    pub version: u32,
    /// The topic the tables are loaded from.
    pub topic: String,
    /// (table, rows deleted, rows kept).
    pub tables: Vec<(String, u64, u64)>,
    /// The topics of older versions, for the operator to delete.
    pub old_topics: Vec<String>,
}

/// Step 3 of the module documentation: once the sink has loaded the (now live) version
/// `version` to the end, deletes every other version's rows from the output's tables.
/// Waits at most `patience` for the sink.
pub async fn finish(
    p: &BackfillParams,
    output: Output,
    version: u32,
    patience: Duration,
) -> anyhow::Result<FinishReport> {
    let live = output.version(&p.topics);
    if version != live {
        bail!(
            "--version {version}: the configuration's topics.{}_version is {live}; switch the \
             processor and the sink to version {version} first (docs/operations.md, \
             \"Backfill\", step 2)",
            output.name()
        );
    }
    let t = &p.topics;
    let topic = output.topics(t).remove(0);
    let until = Instant::now() + patience;
    let mut streak = 0;
    loop {
        let l = lag(&p.kafka, &p.sink_group, std::slice::from_ref(&topic)).await?;
        streak = if l == 0 { streak + 1 } else { 0 };
        if streak >= 2 {
            break;
        }
        if Instant::now() > until {
            bail!(
                "the sink (group {}) has {l} records of {topic} left to load after {} s; is it \
                 running with topics.{}_version = {version}? Run the same command again",
                p.sink_group,
                patience.as_secs(),
                output.name()
            );
        }
        tokio::time::sleep(POLL).await;
    }
    let ch = &p.clickhouse;
    let client = ch.server_client();
    let cond = format!("_topic != {}", quote(&topic));
    let mut tables = Vec::new();
    for table in output.tables() {
        let old = count(&client, &ch.database, table, &cond).await?;
        if old > 0 {
            delete(&client, ch, table, &cond).await?;
            wait_for_mutations(
                &client,
                ch,
                table,
                Instant::now() + MUTATION_TIMEOUT,
                "run the same command again",
            )
            .await?;
        }
        let left = count(&client, &ch.database, table, &cond).await?;
        if left > 0 {
            bail!(
                "{left} rows of other versions are still in {}.{table}; run the same command again",
                ch.database
            );
        }
        let kept = count(&client, &ch.database, table, "1").await?;
        tables.push(((*table).to_owned(), old, kept));
    }
    let old_topics = (1..version)
        .flat_map(|v| output.topics(&output.at_version(t, v)))
        .collect();
    Ok(FinishReport {
        output,
        version,
        topic,
        tables,
        old_topics,
    })
}
