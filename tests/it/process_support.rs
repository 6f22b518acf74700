//! Shared parts of the processor tests (`process_*.rs`): a private topic prefix and
//! consumer groups per test, the real `zt process identity|profiles` binaries as child
//! processes, canonical events, reading topics to their end, and waiting until both
//! consumer groups have committed everything.

#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use sha2::{Digest, Sha256};
use zt_integration_tests::*;
use zt_kafka::{TopicsConfig, build_producer, create_topics, platform_topics};
use zt_model::*;

#[path = "sink_support.rs"]
mod sink_support;
pub use sink_support::{signal, wait_exit, zt_binary};

/// The person id of an anchor, by the documented formula (docs/identity.md): `p_` and
/// the first 16 bytes of SHA-256 over `kind:value`, in hex.
pub fn pid(kind: &str, value: &str) -> String {
    let d = Sha256::digest(format!("{kind}:{value}").as_bytes());
    format!("p_{}", hex::encode(&d[..16]))
}

/// Held by each processor test for its whole run: under `cargo test` the tests of one
/// binary run in parallel, and several pipelines of `zt` processes at once overload the one
/// local broker (nextest runs these binaries one test at a time anyway, see
/// .config/nextest.toml).
pub static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// One test's private topics, groups and config file.
pub struct Env {
    pub topics: TopicsConfig,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub identity_group: String,
    pub profiles_group: String,
    pub funnels_group: String,
    /// `drained` waits for the profiles group (default true) and the funnels group
    /// (default false).
    pub with_profiles: bool,
    pub with_funnels: bool,
}

pub async fn setup(test: &str, partitions: i32, batch: usize) -> Env {
    setup_with(test, partitions, batch, "").await
}

/// [`setup`] with extra TOML appended to the config file.
pub async fn setup_with(test: &str, partitions: i32, batch: usize, extra: &str) -> Env {
    let prefix = unique(&format!("zt-it-{test}"));
    let topics = TopicsConfig {
        prefix: prefix.clone(),
        partitions,
        replication_factor: 1,
        partition_overrides: BTreeMap::new(),
        profiles_version: 1,
        funnels_version: 1,
    };
    create_topics(&kafka_config(), &platform_topics(&topics))
        .await
        .expect("create topics");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("zt.toml");
    let env = Env {
        identity_group: format!("{prefix}-identity"),
        profiles_group: format!("{prefix}-profiles"),
        funnels_group: format!("{prefix}-funnels"),
        with_profiles: true,
        with_funnels: false,
        topics,
        dir,
        config,
    };
    let text = format!(
        r#"
[log]
level = "info,rdkafka=warn"
[admin]
listen = "127.0.0.1:0"
[kafka]
bootstrap_servers = "{kafka}"
client_id = "zt-it-process"
[kafka.producer]
linger_ms = 5
message_timeout_ms = 120000
[kafka.consumer]
session_timeout_ms = 6000
max_poll_interval_ms = 10000
auto_offset_reset = "earliest"
[topics]
prefix = "{prefix}"
partitions = {partitions}
[identity]
group_id = "{ig}"
batch_max_records = {batch}
batch_max_age_ms = 50
[profiles]
group_id = "{pg}"
batch_max_records = {batch}
batch_max_age_ms = 50
[funnels]
group_id = "{fg}"
batch_max_records = {batch}
batch_max_age_ms = 50
{extra}
"#,
        kafka = kafka_bootstrap(),
        ig = env.identity_group,
        pg = env.profiles_group,
        fg = env.funnels_group,
    );
    std::fs::write(&env.config, text).expect("write config");
    env
}

impl Env {
    /// Starts `zt process <which>`; its log goes to `<which>-<run>.log`.
    pub fn spawn(&self, which: &str, run: usize, envs: &[(&str, &str)]) -> Child {
        self.spawn_cmd(which, run, &["process", which], envs)
    }

    /// Starts `zt <args>`; its log goes to `<name>-<run>.log`.
    pub fn spawn_cmd(&self, name: &str, run: usize, args: &[&str], envs: &[(&str, &str)]) -> Child {
        let log = std::fs::File::create(self.dir.path().join(format!("{name}-{run}.log")))
            .expect("log file");
        let mut cmd = Command::new(zt_binary());
        cmd.arg("--config")
            .arg(&self.config)
            .args(args)
            .env("NO_COLOR", "1")
            .env_remove("ZT_PROFILES_DISABLE_RESTORE")
            .env_remove("ZT_FUNNELS_DISABLE_RESTORE")
            .stdout(Stdio::null())
            .stderr(log);
        for (k, v) in envs {
            cmd.env(k, v);
        }
        cmd.spawn().expect("spawn zt process")
    }

    pub fn log(&self, which: &str, run: usize) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{which}-{run}.log")))
            .unwrap_or_default()
    }

    /// Every log of this test, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        if let Ok(rd) = std::fs::read_dir(self.dir.path()) {
            let mut names: Vec<_> = rd.flatten().map(|e| e.path()).collect();
            names.sort();
            for p in names
                .into_iter()
                .filter(|p| p.extension().is_some_and(|e| e == "log"))
            {
                let text = std::fs::read_to_string(&p).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(60).collect();
                out.push_str(&format!("--- {}\n", p.display()));
                for l in tail.into_iter().rev() {
                    out.push_str(l);
                    out.push('\n');
                }
            }
        }
        out
    }

    /// Fails with the first differences and every log unless `diffs` is empty.
    pub fn assert_no_differences(&self, diffs: &[String]) {
        assert!(
            diffs.is_empty(),
            "{} differences: {:#?}\n{}",
            diffs.len(),
            &diffs[..diffs.len().min(20)],
            self.logs()
        );
    }

    /// Produces events to their source topics, keyed by event id; waits for every ack.
    pub async fn produce(&self, producer: &FutureProducer, events: &[Event]) {
        for e in events {
            let topic = self.topics.events(e.source);
            let value = encode(e).expect("encode");
            producer
                .send(
                    FutureRecord::to(&topic).key(&e.event_id).payload(&value),
                    Duration::from_secs(60),
                )
                .await
                .map_err(|(e, _)| e)
                .expect("delivered");
        }
    }

    /// True once identity and the processors under test (profiles, funnels) have committed
    /// up to the end of every input partition.
    pub fn drained(&self) -> bool {
        let t = &self.topics;
        let identity_inputs: Vec<String> = Source::ALL.into_iter().map(|s| t.events(s)).collect();
        let profile_inputs = vec![
            t.events_resolved(),
            t.identity_merges(),
            t.profiles_transfers(),
        ];
        let funnels_inputs = vec![
            t.events_resolved(),
            t.identity_merges(),
            t.funnels_transfers(),
        ];
        group_done(&self.identity_group, &identity_inputs)
            && (!self.with_profiles || group_done(&self.profiles_group, &profile_inputs))
            && (!self.with_funnels || group_done(&self.funnels_group, &funnels_inputs))
    }

    /// Waits until [`Env::drained`] holds twice in a row 1 s apart (transfers may start a
    /// second wave), or `timeout`.
    pub fn wait_drained(&self, timeout: Duration) -> bool {
        let until = Instant::now() + timeout;
        let mut streak = 0;
        while Instant::now() < until {
            if self.drained() {
                streak += 1;
                if streak >= 2 {
                    return true;
                }
            } else {
                streak = 0;
            }
            std::thread::sleep(Duration::from_millis(1_000));
        }
        false
    }
}

fn plain_consumer(group: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", kafka_bootstrap())
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()
        .expect("consumer")
}

fn partitions(c: &BaseConsumer, topic: &str) -> i32 {
    let md = c
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    md.topics()
        .iter()
        .find(|t| t.name() == topic)
        .map(|t| t.partitions().len() as i32)
        .unwrap_or(0)
}

/// Waits until `group` has committed everything of `topics`, or `timeout`.
pub fn wait_group(group: &str, topics: &[String], timeout: Duration) -> bool {
    let until = Instant::now() + timeout;
    while Instant::now() < until {
        if group_done(group, topics) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    false
}

/// True when `group` has committed the high watermark of every partition of `topics`.
/// A broker that does not answer in time counts as "not yet" (the caller polls again).
pub fn group_done(group: &str, topics: &[String]) -> bool {
    let c = plain_consumer(group);
    let mut tpl = TopicPartitionList::new();
    let mut highs = BTreeMap::new();
    for t in topics {
        let Ok(md) = c.fetch_metadata(Some(t), Duration::from_secs(10)) else {
            return false;
        };
        let n = md
            .topics()
            .iter()
            .find(|m| m.name() == t)
            .map(|m| m.partitions().len() as i32)
            .unwrap_or(0);
        for p in 0..n {
            let Ok((_, high)) = c.fetch_watermarks(t, p, Duration::from_secs(10)) else {
                return false;
            };
            highs.insert((t.clone(), p), high);
            tpl.add_partition(t, p);
        }
    }
    let Ok(got) = c.committed_offsets(tpl, Duration::from_secs(10)) else {
        return false;
    };
    got.elements().iter().all(|e| {
        let high = highs[&(e.topic().to_owned(), e.partition())];
        match e.offset() {
            Offset::Offset(o) => o >= high,
            _ => high == 0,
        }
    })
}

/// Every record of `topic` up to the high watermarks: (partition, offset, key, value).
pub fn read_all(topic: &str) -> Vec<(i32, i64, String, Option<Vec<u8>>)> {
    let c = plain_consumer(&unique("zt-it-reader"));
    let mut out = Vec::new();
    for p in 0..partitions(&c, topic) {
        let (low, high) = c
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .expect("watermarks");
        if high <= low {
            continue;
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, p, Offset::Offset(low))
            .expect("offset");
        c.assign(&tpl).expect("assign");
        let until = Instant::now() + Duration::from_secs(30);
        let mut next = low;
        while next < high && Instant::now() < until {
            if let Some(Ok(m)) = c.poll(Duration::from_millis(200)) {
                next = m.offset() + 1;
                out.push((
                    p,
                    m.offset(),
                    m.key()
                        .map(|k| String::from_utf8_lossy(k).into_owned())
                        .unwrap_or_default(),
                    m.payload().map(<[u8]>::to_vec),
                ));
            }
        }
        assert!(next >= high, "{topic}/{p}: read to {next} of {high}");
    }
    out
}

/// The current value per key of a JSON topic, as a reader of the processors' outputs keeps
/// it: the highest `version` when the records carry one (a late write of a crashed owner
/// has a lower one), else the latest offset (the compacted view). Tombstones delete.
pub fn latest_json<T: serde::de::DeserializeOwned>(topic: &str) -> BTreeMap<String, T> {
    let mut best: BTreeMap<String, (u64, serde_json::Value)> = BTreeMap::new();
    for (_, _, k, v) in read_all(topic) {
        match v {
            Some(v) => {
                let v: serde_json::Value = serde_json::from_slice(&v).expect("JSON record");
                let version = v
                    .get("version")
                    .and_then(serde_json::Value::as_u64)
                    .unwrap_or(0);
                if best.get(&k).is_none_or(|(old, _)| version >= *old) {
                    best.insert(k, (version, v));
                }
            }
            None => {
                best.remove(&k);
            }
        }
    }
    best.into_iter()
        .map(|(k, (_, v))| (k, serde_json::from_value(v).expect("record shape")))
        .collect()
}

pub fn producer() -> FutureProducer {
    let mut k = kafka_config();
    // A busy shared broker (the whole suite at once) may take a while to acknowledge.
    k.producer.message_timeout_ms = 120_000;
    build_producer(&k).expect("producer")
}

/// A canonical event with the given identities and payload.
pub fn ev(id: &str, ty: &str, t: i64, ids: Identities, payload: Payload) -> Event {
    Event {
        event_id: id.into(),
        event_type: ty.into(),
        source: payload.source(),
        source_event_id: None,
        occurred_at: t,
        sent_at: None,
        received_at: t,
        event_time: t,
        identities: ids,
        context: Context::default(),
        payload,
        person_id: None,
    }
}
