//! Shared parts of the sink tests (`sink_*.rs`): a private topic prefix, database and
//! consumer group per test, the real `zt` binary run as a child process, events of every
//! source, and the oracle.
//!
//! The oracle is built from the broker's delivery reports (topic, partition, offset of
//! every produced record) and from what the test itself generated (how many order lines an
//! event has); it does not use the sink's mapping code.

#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use clickhouse::Client;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::Deserialize;
use zt_integration_tests::*;
use zt_kafka::topics::TopicSpec;
use zt_kafka::{build_producer, create_topics};
use zt_model::*;

/// The whole pipeline (`zt_demo::demo::Pipeline`: ingest, the processors, the sink as
/// child processes of the real binary) on fresh topics of 2 partitions and a fresh
/// database named after `db_prefix`, its files in `dir`; and its configuration file.
pub async fn start_pipeline(dir: &Path, db_prefix: &str) -> (zt_demo::demo::Pipeline, PathBuf) {
    let db = unique(db_prefix).replace(['-', '.'], "_");
    let topics = zt_kafka::TopicsConfig {
        prefix: "unused".into(),
        partitions: 2,
        replication_factor: 1,
        partition_overrides: BTreeMap::new(),
        profiles_version: 1,
        funnels_version: 1,
    };
    let ch_cfg = zt_sink::config::ClickHouseConfig {
        url: clickhouse_url(),
        database: db.clone(),
        user: "default".into(),
        password: Default::default(),
        cluster: String::new(),
    };
    let pipeline = zt_demo::demo::Pipeline::start(
        &kafka_config(),
        &topics,
        &ch_cfg,
        &zt_demo::demo::PipelineOptions {
            zt_exe: zt_binary(),
            work_dir: dir.to_path_buf(),
            database: db,
            extra_config: None,
            env: Vec::new(),
        },
    )
    .await
    .expect("the pipeline starts");
    (pipeline, dir.join("zt-demo.toml"))
}

/// Runs `zt --config <config> <args>` to its end, with `env` added; `NO_COLOR` set.
pub fn run_zt(config: &Path, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = Command::new(zt_binary());
    cmd.arg("--config")
        .arg(config)
        .args(args)
        .env("NO_COLOR", "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run zt")
}

/// [`run_zt`] with `input` on its standard input.
pub fn run_zt_with_stdin(config: &Path, args: &[&str], input: &str) -> std::process::Output {
    use std::io::Write as _;
    let mut child = Command::new(zt_binary())
        .arg("--config")
        .arg(config)
        .args(args)
        .env("NO_COLOR", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run zt");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("zt output")
}

/// The `zt` binary, built once per test process.
pub fn zt_binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        // target/<profile>/deps/<test> -> target/<profile>/zt
        let exe = std::env::current_exe().expect("test executable path");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("target/<profile>/deps")
            .to_path_buf();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "-q", "-p", "zt-cli", "--bin", "zt"]);
        if profile_dir.file_name().and_then(|n| n.to_str()) == Some("release") {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("run cargo build for the zt binary");
        assert!(status.success(), "building zt failed");
        let bin = profile_dir.join("zt");
        assert!(bin.exists(), "{} missing", bin.display());
        bin
    })
    .clone()
}

/// A free local TCP port (for a child's admin server).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// One test's private names and config file.
pub struct Env {
    pub prefix: String,
    pub database: String,
    pub group: String,
    pub ch_url: String,
    pub admin_port: u16,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    /// Partitions per source topic.
    pub partitions: BTreeMap<Source, i32>,
}

impl Env {
    pub fn topic(&self, s: Source) -> String {
        format!("{}.events.{}", self.prefix, s.as_str())
    }
    pub fn dlq(&self) -> String {
        format!("{}.dlq", self.prefix)
    }

    pub fn client(&self) -> Client {
        Client::default()
            .with_url(&self.ch_url)
            .with_validation(false)
            .with_database(&self.database)
    }

    /// Writes the sink's config file (over the built-in defaults), batches aged out
    /// after 200 ms.
    pub fn write_config(&self, batch_max_rows: u32) {
        self.write_config_aged(batch_max_rows, 200);
    }

    /// [`Env::write_config`] with another `batch_max_age_ms`.
    pub fn write_config_aged(&self, batch_max_rows: u32, batch_max_age_ms: u64) {
        let text = format!(
            r#"
[log]
level = "info,zt_sink=info,rdkafka=warn"
[admin]
listen = "127.0.0.1:{port}"
[kafka]
bootstrap_servers = "{kafka}"
client_id = "zt-it-sink"
[kafka.consumer]
session_timeout_ms = 6000
max_poll_interval_ms = 10000
[topics]
prefix = "{prefix}"
[clickhouse]
url = "{url}"
database = "{db}"
[sink]
group_id = "{group}"
batch_max_rows = {batch_max_rows}
batch_max_age_ms = {batch_max_age_ms}
retry_initial_backoff_ms = 50
retry_max_backoff_ms = 1000
insert_timeout_ms = 10000
lag_interval_ms = 1000
"#,
            port = self.admin_port,
            kafka = kafka_bootstrap(),
            prefix = self.prefix,
            url = self.ch_url,
            db = self.database,
            group = self.group,
        );
        std::fs::write(&self.config, text).expect("write config");
    }

    /// `zt <args>` with this test's config, waiting for it.
    pub fn zt(&self, args: &[&str]) -> std::process::Output {
        Command::new(zt_binary())
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .env_remove("ZT_SINK_FAILPOINT")
            .env_remove("ZT_SINK_DISABLE_RESUME")
            .output()
            .expect("run zt")
    }

    /// Starts `zt sink` with extra environment variables; logs go to `sink-<n>.log`.
    pub fn spawn_sink(&self, run: usize, envs: &[(&str, &str)]) -> Child {
        let log = std::fs::File::create(self.dir.path().join(format!("sink-{run}.log")))
            .expect("log file");
        let mut cmd = Command::new(zt_binary());
        cmd.arg("--config")
            .arg(&self.config)
            .arg("sink")
            .env_remove("ZT_SINK_FAILPOINT")
            .env_remove("ZT_SINK_DISABLE_RESUME")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(log);
        for (k, v) in envs {
            cmd.env(k, v);
        }
        cmd.spawn().expect("spawn zt sink")
    }

    pub fn log(&self, run: usize) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("sink-{run}.log"))).unwrap_or_default()
    }

    pub fn admin(&self, path: &str) -> Option<(u16, String)> {
        http_get(self.admin_port, path)
    }
}

/// A plain HTTP/1.0 GET on localhost: (status, body).
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let status = buf.split_whitespace().nth(1)?.parse().ok()?;
    let body = buf.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
    Some((status, body))
}

/// The value of a metric sample (summed over label sets matching `filter`).
pub fn metric(text: &str, name: &str, filter: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.split(['{', ' ']).next() == Some(name) && (filter.is_empty() || l.contains(filter))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Creates the six source topics and the dead-letter topic under a new prefix, a
/// database name, a group, and applies the migrations with `zt migrate`.
pub async fn setup(test: &str, partitions: &[(Source, i32)], ch_url: &str) -> Env {
    let prefix = unique(&format!("zt-it-{test}")).replace('_', "-");
    let dir = tempfile::tempdir().expect("tempdir");
    let env = Env {
        database: unique(&format!("zt_it_{test}")),
        group: format!("{prefix}-sink"),
        ch_url: ch_url.to_owned(),
        admin_port: free_port(),
        config: dir.path().join("zt.toml"),
        dir,
        partitions: Source::ALL
            .into_iter()
            .map(|s| {
                let n = partitions
                    .iter()
                    .find(|(x, _)| *x == s)
                    .map_or(1, |(_, n)| *n);
                (s, n)
            })
            .collect(),
        prefix,
    };
    let mut specs: Vec<TopicSpec> = Source::ALL
        .into_iter()
        .map(|s| TopicSpec {
            name: env.topic(s),
            partitions: env.partitions[&s],
            replication_factor: 1,
            compacted: false,
            keep_forever: false,
            purpose: "test",
        })
        .collect();
    specs.push(TopicSpec {
        name: env.dlq(),
        partitions: 1,
        replication_factor: 1,
        compacted: false,
        keep_forever: false,
        purpose: "test",
    });
    // The suppression list every component reads at start (`zt erase`; empty here).
    specs.push(TopicSpec {
        name: format!("{}.suppressions", env.prefix),
        partitions: 1,
        replication_factor: 1,
        compacted: true,
        keep_forever: false,
        purpose: "test",
    });
    create_topics(&kafka_config(), &specs)
        .await
        .expect("create topics");
    env.write_config(120);
    let out = env.zt(&["migrate"]);
    assert!(
        out.status.success(),
        "zt migrate failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    env
}

/// Event `i`: a deterministic mix of every source. Returns the event and, for erp, its
/// number of order lines.
pub fn event(i: u32) -> (Event, usize) {
    let source = match i % 10 {
        0..=3 => Source::Erp,
        4..=6 => Source::Tracking,
        7 => Source::Logistics,
        8 => [Source::Service, Source::Crm][(i / 10 % 2) as usize],
        _ => Source::Marketing,
    };
    let t = 1_767_225_600_000 + i64::from(i) * 60_000;
    let mut ev = order_event(i);
    ev.event_id = format!("evt-{i:06}");
    ev.source = source;
    ev.occurred_at = t;
    ev.sent_at = Some(t + 20);
    ev.received_at = t + 50;
    ev.event_time = t + 30;
    ev.context.experiments = vec![ExperimentAssignment {
        experiment_id: "checkout-v2".into(),
        variant: ["control", "treatment"][(i % 2) as usize].into(),
    }];
    let mut lines = 0;
    ev.payload = match source {
        Source::Erp => {
            let Payload::Order(mut o) = ev.payload else {
                unreachable!("order_event makes orders")
            };
            o.lines = (1..=(1 + i % 3) as i32)
                .map(|n| OrderLine {
                    line_no: n,
                    sku: format!("SKU-{n}"),
                    // Long enough that a batch's INSERT is sent in several HTTP chunks
                    // (the client sends every 256 KiB), so `mid_insert` aborts with part
                    // of the rows already at the server.
                    product_name: Some("保温杯 500ml ".repeat(40)),
                    quantity: n,
                    unit_price_minor: 1_000,
                    ..Default::default()
                })
                .collect();
            lines = o.lines.len();
            Payload::Order(o)
        }
        Source::Tracking => {
            ev.event_type = "track".into();
            Payload::Tracking(TrackingPayload {
                name: Some("Product Viewed".into()),
                properties_json: format!(r#"{{"i":{i}}}"#),
                price_minor: Some(990),
                quantity: Some(1),
                currency: Some("CNY".into()),
                ..Default::default()
            })
        }
        Source::Logistics => {
            ev.event_type = "shipment.delivered".into();
            Payload::Shipment(ShipmentPayload {
                waybill_no: format!("WB{i}"),
                order_id: Some(format!("O{i}")),
                carrier: "sf".into(),
                status: "delivered".into(),
                ..Default::default()
            })
        }
        Source::Service => {
            ev.event_type = "ticket.rated".into();
            Payload::Ticket(TicketPayload {
                ticket_id: format!("T{i}"),
                status: "rated".into(),
                csat_score: Some(1 + (i % 5) as i32),
                ..Default::default()
            })
        }
        Source::Crm => {
            ev.event_type = "customer.registered".into();
            Payload::Customer(CustomerPayload {
                customer_id: format!("C{i}"),
                registered_at: Some(t),
                registration_channel: Some("douyin".into()),
                consents: vec![Consent {
                    purpose: "marketing_sms".into(),
                    granted: true,
                }],
                ..Default::default()
            })
        }
        Source::Marketing => {
            ev.event_type = "ad_spend.reported".into();
            Payload::AdSpend(AdSpendPayload {
                channel: "douyin".into(),
                campaign_id: format!("CMP{}", i % 4),
                day: 20_454 + (i % 30) as i32,
                spend_minor: 10_000,
                currency: "CNY".into(),
                impressions: 1_000,
                clicks: 10,
                ..Default::default()
            })
        }
    };
    (ev, lines)
}

/// One produced record as the broker acknowledged it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Produced {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub source: Source,
    pub event_id: String,
    pub lines: usize,
    pub bytes: Vec<u8>,
}

/// Produces events `which` to their source topics; the broker's acknowledgements.
pub async fn produce(env: &Env, which: impl IntoIterator<Item = u32>) -> Vec<Produced> {
    let producer: FutureProducer = build_producer(&kafka_config()).expect("producer");
    let mut pending = Vec::new();
    for i in which {
        let (ev, lines) = event(i);
        let bytes = zt_model::encode(&ev).expect("encode");
        let topic = env.topic(ev.source);
        let (p, t, b, id) = (
            producer.clone(),
            topic.clone(),
            bytes.clone(),
            ev.event_id.clone(),
        );
        let handle = tokio::spawn(async move {
            let d = p
                .send(
                    FutureRecord::to(&t).key(&id).payload(&b),
                    Duration::from_secs(30),
                )
                .await
                .map_err(|(e, _)| e)
                .expect("delivery");
            (d.partition, d.offset)
        });
        pending.push((handle, topic, ev.source, ev.event_id, lines, bytes));
    }
    let mut out = Vec::with_capacity(pending.len());
    for (h, topic, source, event_id, lines, bytes) in pending {
        let (partition, offset) = h.await.expect("join");
        out.push(Produced {
            topic,
            partition,
            offset,
            source,
            event_id,
            lines,
            bytes,
        });
    }
    out
}

/// Produces events `which` one after another (their offsets in that order), every one to
/// `topic` whatever its source (as on `zt.events.resolved`, which mixes them).
pub async fn produce_to(topic: &str, which: impl IntoIterator<Item = u32>) -> Vec<Produced> {
    let producer: FutureProducer = build_producer(&kafka_config()).expect("producer");
    let mut out = Vec::new();
    for i in which {
        let (ev, lines) = event(i);
        let bytes = zt_model::encode(&ev).expect("encode");
        let d = producer
            .send(
                FutureRecord::to(topic).key(&ev.event_id).payload(&bytes),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(e, _)| e)
            .expect("delivery");
        out.push(Produced {
            topic: topic.to_owned(),
            partition: d.partition,
            offset: d.offset,
            source: ev.source,
            event_id: ev.event_id,
            lines,
            bytes,
        });
    }
    out
}

/// Waits until the child exits or `timeout` passes (then kills it); its exit status.
pub fn wait_exit(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let until = Instant::now() + timeout;
    while Instant::now() < until {
        if let Ok(Some(s)) = child.try_wait() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// Sends SIGKILL or SIGTERM to a child by pid.
pub fn signal(child: &Child, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(child.id().to_string())
        .status();
}

#[derive(Debug, Deserialize, clickhouse::Row)]
struct Coord {
    topic: String,
    partition: i32,
    offset: i64,
    n: u64,
    event_id: String,
}

/// (topic, partition, offset) -> (row count, one event_id) of a table.
pub async fn coords(env: &Env, table: &str) -> BTreeMap<(String, i32, i64), (u64, String)> {
    let rows = env
        .client()
        .query(&format!(
            "SELECT _topic AS topic, _partition AS partition, _offset AS offset, count() AS n, \
             any(event_id) AS event_id FROM {table} GROUP BY _topic, _partition, _offset"
        ))
        .fetch_all::<Coord>()
        .await
        .expect("read coordinates");
    rows.into_iter()
        .map(|c| ((c.topic, c.partition, c.offset), (c.n, c.event_id)))
        .collect()
}

/// The oracle: for every sink table, each produced record's rows are there exactly as
/// often as the generator made them (1, or the number of order lines), carry the produced
/// event id, and nothing else is there. Returns the list of differences.
pub async fn check_exactly_once(env: &Env, produced: &[Produced]) -> Vec<String> {
    check_with(env, produced, &[]).await
}

/// Fails with the number of differences and the first ten when `problems` (from
/// [`check_exactly_once`] or [`check_with`]) is not empty.
#[track_caller]
pub fn assert_no_problems(problems: &[String]) {
    assert!(
        problems.is_empty(),
        "{} differences, first: {:#?}",
        problems.len(),
        &problems[..problems.len().min(10)]
    );
}

/// [`check_exactly_once`], except that records at `skip` (topic, partition, offset) are
/// expected to be absent from the tables named with them.
pub async fn check_with(
    env: &Env,
    produced: &[Produced],
    absent: &[((String, i32, i64), &str)],
) -> Vec<String> {
    let mut problems = Vec::new();
    for table in [
        "events",
        "orders",
        "order_lines",
        "shipments",
        "tickets",
        "ad_spend",
        "customers",
    ] {
        let mut want: BTreeMap<(String, i32, i64), (u64, String)> = BTreeMap::new();
        for p in produced {
            let n = match (table, p.source) {
                ("events", _) => 1,
                ("orders", Source::Erp) => 1,
                ("order_lines", Source::Erp) => p.lines as u64,
                ("shipments", Source::Logistics) => 1,
                ("tickets", Source::Service) => 1,
                ("ad_spend", Source::Marketing) => 1,
                ("customers", Source::Crm) => 1,
                _ => 0,
            };
            let key = (p.topic.clone(), p.partition, p.offset);
            if n > 0 && !absent.iter().any(|(k, t)| *k == key && *t == table) {
                want.insert(key, (n, p.event_id.clone()));
            }
        }
        let got = coords(env, table).await;
        for (k, w) in &want {
            match got.get(k) {
                None => problems.push(format!("{table}: missing {k:?}")),
                Some(g) if g != w => {
                    problems.push(format!("{table}: {k:?} has {g:?}, expected {w:?}"))
                }
                _ => {}
            }
        }
        for (k, g) in &got {
            if !want.contains_key(k) {
                problems.push(format!("{table}: unexpected {k:?} {g:?}"));
            }
        }
    }
    problems
}

/// Total rows of `events` in the test database.
pub async fn events_count(env: &Env) -> u64 {
    env.client()
        .query("SELECT count() FROM events")
        .fetch_one::<u64>()
        .await
        .unwrap_or(0)
}

/// Drops the test database.
pub async fn drop_database(env: &Env) {
    let _ = Client::default()
        .with_url(&env.ch_url)
        .with_validation(false)
        .query(&format!("DROP DATABASE IF EXISTS {}", env.database))
        .execute()
        .await;
}
