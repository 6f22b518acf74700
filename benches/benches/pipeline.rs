//! End to end: the whole pipeline (HTTP ingest → broker → identity → profiles and funnels →
//! ClickHouse sink) as separate `zt` processes, fed the demo's generated world over HTTP.
//! Reports the throughput of each stage and of the whole pipeline, and freshness (ingest's
//! acknowledgement of a record to its row being visible in ClickHouse, p50/p99/max), next
//! to the raw broker (produce and consume) and raw ClickHouse (RowBinary INSERT) limits
//! measured in the same run, on the same broker and server, with the same records.
//!
//! `cargo bench -p zt-benches --bench pipeline`. By default it starts its own tansu on a
//! free port with the memory storage engine (INFRA.md: memory for throughput figures);
//! `ZT_BENCH_BROKER=host:port` uses an existing broker instead (`ZT_BENCH_BROKER_PID`
//! adds its CPU time to the report; the run's `ztdemo-*` topics stay there: deleting
//! topics on tansu's SQLite engine stalls it for minutes). ClickHouse: `ZT_BENCH_CLICKHOUSE_URL` (default
//! http://127.0.0.1:8123); the run's database is `zt_bench_pipeline` (dropped at the end).
//! `ZT_BENCH_PERSONS` (default 3000) sizes the world (28 days of history),
//! `ZT_BENCH_SEED` (default 7) seeds it, `ZT_BENCH_RATE` (records/s) paces the send
//! (default: as fast as ingest answers), to see freshness without a backlog, and
//! `ZT_BENCH_EXTRA_CONFIG` is TOML appended to the components' configuration (e.g.
//! `[kafka.options]` librdkafka settings). The `zt` binary is built with
//! `cargo build --release -p zt-cli --bin zt` unless `ZT_BENCH_ZT` names one.
//! `ZT_BENCH_WORK_DIR` keeps the components' configuration, logs and final metrics there
//! (default: a temporary directory, removed).
//!
//! How it is measured:
//! - the components start (`zt_demo::demo::Pipeline::start`) and the run waits until every
//!   consumer group logged its assignment (a first group join on tansu can take about the
//!   session timeout); that wait is reported and not counted;
//! - the clock starts with the first request of `zt_demo::send::send` (batches of 200, the
//!   six sources concurrently);
//! - while sending and until drained, one thread sweeps the stages of
//!   `zt_demo::demo::stages` about every 200 ms: each component's processed-records counter
//!   on its `/metrics` (identity's events, profiles' and funnels' input records, the sink's
//!   records of committed batches). A stage has drained its input at the first sweep where
//!   its counter has its final value; its rate is the records it processed over (that time
//!   − first request), and "while active" over (that time − its first progress). The stages
//!   run concurrently (pipelined), so a stage's rate is bounded by its upstream's. The run
//!   ends when every accepted record has its `events` row, no counter moved for 1.5 s and
//!   every group has committed all its input (`zt_demo::drain::group_lag`, asked only then:
//!   the broker is not polled during the run, and tansu's memory engine reports high
//!   watermarks below what its partitions hold, which the run prints);
//! - a task polls ClickHouse about every 200 ms for the `events` rows not seen yet (by
//!   `_partition`/`_offset`) and stamps each new `event_id` with the poll's start time;
//!   freshness = that stamp − the wall time of the HTTP acknowledgement of the request that
//!   carried the record (rounded up by up to one poll interval). The Kafka timestamps of
//!   `zt.events.resolved` split it into ack → identity published, published → row visible;
//! - after the drain the components are stopped, and the raw limits are measured with the
//!   very records of `zt.events.resolved` (the canonical events the sink loaded): produced
//!   by an idempotent `acks=all` producer (the components' producer settings) to a scratch
//!   topic of the same partition count and consumed back; and mapped by the sink's own
//!   `map_event` into `events` rows, inserted RowBinary with the `clickhouse` crate into a
//!   scratch table of the same schema (`raw_events`), after the run's merges settled;
//! - CPU seconds per process (this one, the `zt` children, the broker when known, the
//!   ClickHouse server) and for the whole machine come from /proc.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::FutureRecord;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use zt_benches::proc_cpu;
use zt_demo::demo::{Pipeline, PipelineOptions, stages};
use zt_demo::drain::{Stage, group_lag};
use zt_demo::scenario::{Params, generate};
use zt_demo::send::{SendOptions, send};
use zt_kafka::topics::TopicSpec;
use zt_kafka::{KafkaConfig, TopicsConfig};
use zt_model::Event;
use zt_sink::ClickHouseConfig;
use zt_sink::rows::{EventRow, Origin, map_event};

const DATABASE: &str = "zt_bench_pipeline";
const POLL: Duration = Duration::from_millis(200);

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Kafka, topics and ClickHouse settings: the shipped defaults, addresses overridden.
fn defaults() -> (KafkaConfig, TopicsConfig, ClickHouseConfig) {
    let d: toml::Value =
        toml::from_str(include_str!("../../config/defaults.toml")).expect("defaults.toml");
    let kafka: KafkaConfig = d["kafka"].clone().try_into().expect("[kafka]");
    let topics: TopicsConfig = d["topics"].clone().try_into().expect("[topics]");
    let mut ch: ClickHouseConfig = d["clickhouse"].clone().try_into().expect("[clickhouse]");
    ch.url =
        std::env::var("ZT_BENCH_CLICKHOUSE_URL").unwrap_or_else(|_| "http://127.0.0.1:8123".into());
    (kafka, topics, ch)
}

/// The tansu started for the run; killed when dropped.
struct OwnBroker(Option<Child>);

impl Drop for OwnBroker {
    fn drop(&mut self) {
        if let Some(c) = &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The `zt` binary, built in release (benches run in release: target/release).
fn zt_exe() -> PathBuf {
    if let Ok(p) = std::env::var("ZT_BENCH_ZT") {
        return p.into();
    }
    // target/release/deps/pipeline-<hash> -> target/release/zt
    let exe = std::env::current_exe().expect("bench executable path");
    let target = exe
        .parent()
        .and_then(Path::parent)
        .and_then(Path::parent)
        .expect("target/<profile>/deps")
        .to_path_buf();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "-q", "--release", "-p", "zt-cli", "--bin", "zt"])
        .status()
        .expect("run cargo build for the zt binary");
    assert!(status.success(), "building zt failed");
    let bin = target.join("release").join("zt");
    assert!(bin.exists(), "{} missing", bin.display());
    bin
}

/// Waits until every consumer group of the pipeline logged its assignment.
fn wait_assigned(work_dir: &Path, names: &[&str], patience: Duration) -> Duration {
    let t = Instant::now();
    loop {
        let missing: Vec<&str> = names
            .iter()
            .copied()
            .filter(|n| {
                !std::fs::read_to_string(work_dir.join(format!("{n}.log")))
                    .unwrap_or_default()
                    .contains("partitions assigned")
            })
            .collect();
        if missing.is_empty() {
            return t.elapsed();
        }
        assert!(
            t.elapsed() < patience,
            "no partition assignment within {patience:?} for {missing:?} (logs in {})",
            work_dir.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

// ---------------------------------------------------------------------------------------
// CPU accounting from /proc (Linux), to see where the time goes.

/// CPU seconds so far of: this process, its `zt` children (by command), the tansu it
/// started, and the ClickHouse server; plus the machine's busy and total jiffies.
fn cpu_snapshot(tansu: Option<u32>) -> (BTreeMap<String, f64>, (f64, f64)) {
    let me = std::process::id();
    let mut out = BTreeMap::new();
    if let Some((c, _)) = proc_cpu(me) {
        out.insert("bench process (sender, pollers)".to_owned(), c);
    }
    if let Some(pid) = tansu
        && let Some((c, _)) = proc_cpu(pid)
    {
        out.insert("broker (tansu)".to_owned(), c);
    }
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Some((c, ppid)) = proc_cpu(pid) else {
            continue;
        };
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if ppid == me && comm.trim() == "zt" {
            let cmd = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let name = cmd.split('\0').rfind(|s| !s.is_empty()).unwrap_or("?");
            out.insert(format!("zt {name}"), c);
        } else if comm.trim() == "clickhouse-serv" {
            *out.entry("clickhouse-server (shared)".to_owned())
                .or_default() += c;
        }
    }
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let cpu: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let total: f64 = cpu.iter().sum();
    let idle = cpu.get(3).copied().unwrap_or(0.0) + cpu.get(4).copied().unwrap_or(0.0);
    (out, (total - idle, total))
}

// ---------------------------------------------------------------------------------------
// Stage progress.

/// What a stage has done so far: the records its component counted as processed.
#[derive(Clone, Copy)]
struct Probe {
    at: Instant,
    done: f64,
}

/// One sweep over the stages, in pipeline order, and the sink's `events` rows so far.
struct Sweep {
    at: Instant,
    stages: Vec<Probe>,
    sink_events: f64,
}

/// The counter of a stage's processed input records (on its component's `/metrics`).
fn done_metric(stage: &str) -> &'static str {
    match stage {
        "identity" => "zt_identity_events_total",
        "profiles" => "zt_profiles_records_total",
        "funnels" => "zt_funnels_records_total",
        // Counted per committed batch, after its INSERTs.
        _ => "zt_sink_records_received_total",
    }
}

/// Sweeps the components' counters about every [`POLL`] until, after the send ended, every
/// accepted record has its `events` row, no counter moved for 1.5 s and then every group
/// has committed all its input (`zt_demo::drain::group_lag`, asked only then: the broker
/// is not polled during the run). Returns the sweeps and the lags of that last check; stops
/// early on `stop`, fails after 10 minutes. `send_end` holds the end of the send and the
/// records accepted.
fn stage_poller(
    kafka: &KafkaConfig,
    stages: &[Stage],
    ports: &BTreeMap<String, u16>,
    send_end: &Mutex<Option<(Instant, u64)>>,
    stop: &AtomicBool,
) -> (Vec<Sweep>, Vec<(String, u64)>) {
    let until = Instant::now() + Duration::from_secs(600);
    let mut sweeps: Vec<Sweep> = Vec::new();
    let mut stable_since: Option<Instant> = None;
    loop {
        let at = Instant::now();
        let mut sink_events = 0.0;
        let probes: Vec<Probe> = stages
            .iter()
            .map(|s| {
                let text = ports.get(&s.name).map(|p| scrape(*p)).unwrap_or_default();
                if s.name == "sink" {
                    sink_events = metric_sum(&text, "zt_sink_rows_inserted_total{table=\"events\"");
                }
                Probe {
                    at: Instant::now(),
                    done: metric_sum(&text, done_metric(&s.name)),
                }
            })
            .collect();
        let sweep = Sweep {
            at,
            stages: probes,
            sink_events,
        };
        let ended = *send_end.lock().expect("lock");
        let unchanged = sweeps.last().is_some_and(|prev| {
            prev.stages
                .iter()
                .zip(&sweep.stages)
                .all(|(a, b)| a.done == b.done)
        });
        let quiet = unchanged
            && ended.is_some_and(|(e, accepted)| at > e && sweep.sink_events >= accepted as f64);
        stable_since = if quiet {
            stable_since.or(Some(at))
        } else {
            None
        };
        sweeps.push(sweep);
        if stop.load(Ordering::Relaxed) {
            return (sweeps, Vec::new());
        }
        if stable_since.is_some_and(|t| at.duration_since(t) >= Duration::from_millis(1500)) {
            let lags: Vec<(String, u64)> = stages
                .iter()
                .map(|s| {
                    let l = group_lag(kafka, &s.group, &s.topics).unwrap_or(u64::MAX);
                    (s.name.clone(), l)
                })
                .collect();
            if lags.iter().all(|(_, l)| *l == 0) {
                return (sweeps, lags);
            }
            stable_since = None;
        }
        assert!(
            Instant::now() < until,
            "the pipeline did not drain in 10 min"
        );
        std::thread::sleep(POLL.saturating_sub(at.elapsed()));
    }
}

// ---------------------------------------------------------------------------------------
// Freshness.

struct Visible {
    /// event_id -> wall time (ms) of the first poll that saw its row.
    at: HashMap<String, i64>,
    polls: u32,
    poll_time: Duration,
}

async fn freshness_poller(ch: clickhouse::Client, stop: Arc<AtomicBool>) -> Visible {
    // Per partition: every offset below the first is seen, and the offsets seen above it.
    // (Rows of one INSERT become visible part by part, one part per month of event time,
    // so a higher offset can show before a lower one: no "above the highest seen".)
    let mut seen: BTreeMap<i32, (i64, BTreeSet<i64>)> = BTreeMap::new();
    let mut v = Visible {
        at: HashMap::new(),
        polls: 0,
        poll_time: Duration::ZERO,
    };
    loop {
        // The last poll runs after the stop (the pipeline drained: every row is visible).
        let last = stop.load(Ordering::Relaxed);
        let t = Instant::now();
        let t_ms = now_ms();
        let mut cond: Vec<String> = seen
            .iter()
            .map(|(p, (floor, _))| format!("(_partition = {p} AND _offset >= {floor})"))
            .collect();
        let known: Vec<String> = seen.keys().map(ToString::to_string).collect();
        cond.push(if known.is_empty() {
            "1".to_owned()
        } else {
            format!("_partition NOT IN ({})", known.join(", "))
        });
        let sql = format!(
            "SELECT event_id, _partition, _offset FROM events WHERE {}",
            cond.join(" OR ")
        );
        let res = match ch.query(&sql).fetch_bytes("TabSeparated") {
            Ok(mut c) => c.collect().await,
            Err(e) => Err(e),
        };
        match res {
            Ok(bytes) => {
                for line in String::from_utf8_lossy(&bytes).lines() {
                    let mut f = line.split('\t');
                    let (Some(id), Some(p), Some(o)) = (f.next(), f.next(), f.next()) else {
                        continue;
                    };
                    let (Ok(p), Ok(o)) = (p.parse::<i32>(), o.parse::<i64>()) else {
                        continue;
                    };
                    let (floor, above) = seen.entry(p).or_default();
                    if o >= *floor && above.insert(o) {
                        v.at.entry(id.to_owned()).or_insert(t_ms);
                    }
                }
                for (floor, above) in seen.values_mut() {
                    while above.remove(floor) {
                        *floor += 1;
                    }
                }
            }
            Err(e) => eprintln!("freshness poll failed: {e}"),
        }
        v.polls += 1;
        v.poll_time += t.elapsed();
        if last {
            return v;
        }
        tokio::time::sleep(POLL.saturating_sub(t.elapsed())).await;
    }
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

// ---------------------------------------------------------------------------------------
// Metrics and raw limits.

/// `GET /metrics` of a component (plain HTTP/1.0 on 127.0.0.1).
fn scrape(port: u16) -> String {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = s.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default()
}

/// Sum of a metric's samples whose name and labels start with `prefix` (e.g.
/// `zt_sink_rows_inserted_total{table="events"`).
fn metric_sum(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Produces `records` (after 100 of them as a warm-up, outside the clock) to `topic` with
/// the components' producer settings, then consumes the topic back from the beginning.
/// Returns (produced/s, consumed/s, records read back, records expected).
async fn raw_broker(
    kafka: &KafkaConfig,
    topic: &str,
    partitions: i32,
    records: &[(Vec<u8>, Vec<u8>)],
) -> (f64, f64, usize, usize) {
    zt_kafka::create_topics(
        kafka,
        &[TopicSpec {
            name: topic.to_owned(),
            partitions,
            replication_factor: 1,
            compacted: false,
            keep_forever: false,
            purpose: "bench scratch",
        }],
    )
    .await
    .expect("create the scratch topic");
    let producer = zt_kafka::build_producer(kafka).expect("producer");
    for (k, v) in records.iter().take(100) {
        producer
            .send(
                FutureRecord::to(topic).key(k).payload(v),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(e, _)| e)
            .expect("warm-up produce acknowledged");
    }
    let t = Instant::now();
    let mut acks = Vec::with_capacity(records.len());
    for (k, v) in records {
        loop {
            match producer.send_result(FutureRecord::to(topic).key(k).payload(v)) {
                Ok(f) => {
                    acks.push(f);
                    break;
                }
                // The local queue is full: let deliveries catch up.
                Err(_) => tokio::time::sleep(Duration::from_millis(2)).await,
            }
        }
    }
    for a in acks {
        a.await
            .expect("delivery reported")
            .map_err(|(e, _)| e)
            .expect("raw produce acknowledged");
    }
    let produce = records.len() as f64 / t.elapsed().as_secs_f64();
    let expected = records.len() + records.len().min(100);

    let k = kafka.clone();
    let topic = topic.to_owned();
    let (consume, read) = tokio::task::spawn_blocking(move || {
        let c: BaseConsumer = zt_kafka::client::base_config(&k)
            .expect("config")
            .set("group.id", format!("{topic}-reader"))
            .set("enable.auto.commit", "false")
            .create()
            .expect("consumer");
        let timeout = Duration::from_secs(10);
        let mut ends = BTreeMap::new();
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            let (lo, hi) = c.fetch_watermarks(&topic, p, timeout).expect("watermarks");
            if hi > lo {
                ends.insert(p, hi);
                tpl.add_partition_offset(&topic, p, Offset::Offset(lo))
                    .expect("tpl");
            }
        }
        let t = Instant::now();
        c.assign(&tpl).expect("assign");
        let mut read = 0usize;
        let deadline = Instant::now() + Duration::from_secs(120);
        while !ends.is_empty() && Instant::now() < deadline {
            if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
                read += 1;
                if ends
                    .get(&m.partition())
                    .is_some_and(|&h| m.offset() + 1 >= h)
                {
                    ends.remove(&m.partition());
                }
            }
        }
        (read as f64 / t.elapsed().as_secs_f64(), read)
    })
    .await
    .expect("consumer thread");
    (produce, consume, read, expected)
}

/// Inserts `rows` into `<db>.raw_events` (created like `<db>.events`) in INSERTs of
/// 100,000 rows (the sink's `batch_max_rows`). Returns rows/s.
async fn raw_clickhouse(ch: &ClickHouseConfig, rows: &[EventRow]) -> f64 {
    let client = ch.client();
    client
        .query("CREATE TABLE raw_events AS events")
        .execute()
        .await
        .expect("scratch table");
    let t = Instant::now();
    for part in rows.chunks(100_000) {
        let mut ins = client
            .insert::<EventRow>("raw_events")
            .await
            .expect("insert");
        for r in part {
            ins.write(r).await.expect("write");
        }
        ins.end().await.expect("end");
    }
    rows.len() as f64 / t.elapsed().as_secs_f64()
}

/// The rows of `sql` as tab-separated fields.
async fn tsv(client: &clickhouse::Client, sql: &str) -> Vec<Vec<String>> {
    let bytes = match client.query(sql).fetch_bytes("TabSeparated") {
        Ok(mut c) => c.collect().await.expect("query"),
        Err(e) => panic!("{sql}: {e}"),
    };
    String::from_utf8_lossy(&bytes)
        .lines()
        .map(|l| l.split('\t').map(str::to_owned).collect())
        .collect()
}

// ---------------------------------------------------------------------------------------

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run());
}

async fn run() {
    let persons: u32 = env_or("ZT_BENCH_PERSONS", 3000);
    let seed: u64 = env_or("ZT_BENCH_SEED", 7);
    let extra_config = std::env::var("ZT_BENCH_EXTRA_CONFIG").ok();
    let rate: Option<f64> = std::env::var("ZT_BENCH_RATE")
        .ok()
        .and_then(|v| v.parse().ok());
    let (mut kafka, topics, ch) = defaults();
    let (broker, storage) = match std::env::var("ZT_BENCH_BROKER") {
        Ok(b) => {
            kafka.bootstrap_servers = b.clone();
            (OwnBroker(None), format!("existing broker {b}"))
        }
        Err(_) => {
            let (child, port) = zt_benches::start_tansu_memory();
            kafka.bootstrap_servers = format!("127.0.0.1:{port}");
            (
                OwnBroker(Some(child)),
                "tansu memory engine (started for this run)".to_owned(),
            )
        }
    };
    // The broker's CPU is shown when the run started it, or when ZT_BENCH_BROKER_PID names it.
    let tansu_pid = broker
        .0
        .as_ref()
        .map(Child::id)
        .or_else(|| Some(env_or("ZT_BENCH_BROKER_PID", 0u32)).filter(|p| *p > 0));
    let exe = zt_exe();
    let tmp = tempfile::tempdir().expect("tempdir");
    let work_dir = std::env::var("ZT_BENCH_WORK_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| tmp.path().to_path_buf());

    let mut pipeline = Pipeline::start(
        &kafka,
        &topics,
        &ch,
        &PipelineOptions {
            zt_exe: exe,
            work_dir: work_dir.clone(),
            database: DATABASE.into(),
            extra_config: extra_config.clone(),
            env: Vec::new(),
        },
    )
    .await
    .expect("the pipeline starts");
    let join_wait = wait_assigned(
        &work_dir,
        &["identity", "profiles", "funnels", "sink"],
        Duration::from_secs(120),
    );

    let world = generate(Params::new(seed, persons, 28, pipeline.started_ms));
    let records = world.records;
    let n_records = records.len();
    eprintln!(
        "pipeline bench: {n_records} records for {persons} persons over 28 days; groups joined after {:.1} s",
        join_wait.as_secs_f64()
    );

    // The run: send, and watch the stages and ClickHouse meanwhile.
    let stage_list = stages(&pipeline.topics);
    let send_end: Arc<Mutex<Option<(Instant, u64)>>> = Arc::default();
    let ports: BTreeMap<String, u16> = pipeline.admin_ports.iter().cloned().collect();
    let stop_stages = Arc::new(AtomicBool::new(false));
    let stop_fresh = Arc::new(AtomicBool::new(false));
    let (cpu0, machine0) = cpu_snapshot(tansu_pid);
    let t0 = Instant::now();
    let t0_ms = now_ms();
    let stage_task = {
        let (k, s, p, e, st) = (
            kafka.clone(),
            stage_list.clone(),
            ports.clone(),
            send_end.clone(),
            stop_stages.clone(),
        );
        tokio::task::spawn_blocking(move || stage_poller(&k, &s, &p, &e, &st))
    };
    let fresh_task = tokio::spawn(freshness_poller(
        pipeline.clickhouse.client(),
        stop_fresh.clone(),
    ));
    let sent = send(
        &records,
        &SendOptions {
            url: pipeline.ingest_url.clone(),
            keys: pipeline.keys.clone(),
            batch: 200,
            rate,
            progress: false,
            record_acks: true,
            progress_counter: None,
        },
    )
    .await;
    let send_secs = t0.elapsed().as_secs_f64();
    let sent = match sent {
        Ok(s) => {
            *send_end.lock().expect("lock") = Some((Instant::now(), s.accepted));
            s
        }
        Err(e) => {
            stop_stages.store(true, Ordering::Relaxed);
            stop_fresh.store(true, Ordering::Relaxed);
            let dead = pipeline.dead();
            pipeline.stop();
            let _ = pipeline
                .clickhouse
                .server_client()
                .query(&format!("DROP DATABASE IF EXISTS {DATABASE}"))
                .execute()
                .await;
            panic!(
                "sending failed: {e:#}; components exited: {dead:?} (logs in {})",
                work_dir.display()
            );
        }
    };
    let (sweeps, final_lags) = stage_task.await.expect("stage poller");
    let (cpu1, machine1) = cpu_snapshot(tansu_pid);
    let cpu_window = t0.elapsed().as_secs_f64();
    stop_fresh.store(true, Ordering::Relaxed);
    let visible = fresh_task.await.expect("freshness poller");
    let dead = pipeline.dead();
    assert!(dead.is_empty(), "components exited: {dead:?}");
    // Metrics of every component, before stopping them.
    let mut metrics = BTreeMap::new();
    for (name, port) in &pipeline.admin_ports {
        let text = scrape(*port);
        let _ = std::fs::write(work_dir.join(format!("{name}.metrics")), &text);
        metrics.insert(name.clone(), text);
    }
    pipeline.stop();

    // Stage figures.
    let last = sweeps.last().expect("a sweep");
    let sweep_secs = if sweeps.len() > 1 {
        last.at.duration_since(sweeps[0].at).as_secs_f64() / (sweeps.len() - 1) as f64
    } else {
        0.0
    };
    let secs = |t: Instant| t.duration_since(t0).as_secs_f64();
    struct StageFig {
        name: String,
        consumed: f64,
        first: Option<f64>,
        done: Option<f64>,
    }
    let figs: Vec<StageFig> = stage_list
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let total = last.stages[i].done;
            let first = sweeps
                .iter()
                .find(|w| w.stages[i].done > 0.0)
                .map(|w| secs(w.stages[i].at));
            let done = sweeps
                .iter()
                .find(|w| w.stages[i].done >= total)
                .map(|w| secs(w.stages[i].at));
            StageFig {
                name: s.name.clone(),
                consumed: total,
                first,
                done,
            }
        })
        .collect();
    let sink_done = figs
        .iter()
        .find(|f| f.name == "sink")
        .and_then(|f| f.done)
        .expect("the sink drained");
    let last_visible = visible
        .at
        .values()
        .max()
        .map_or(0.0, |v| (v - t0_ms) as f64 / 1e3);

    // Freshness.
    let mut fresh: Vec<i64> = sent
        .acks
        .iter()
        .filter_map(|(id, ack)| visible.at.get(id).map(|v| v - ack))
        .collect();
    fresh.sort_unstable();
    let unseen = sent.acks.len() - fresh.len();

    // Raw limits, with the records the sink loaded (zt.events.resolved).
    let resolved = pipeline.topics.events_resolved();
    let k = kafka.clone();
    let r = resolved.clone();
    let want = sent.accepted as usize;
    let resolved_records = tokio::task::spawn_blocking(move || {
        zt_integration_tests::ingest::read_by_count(&k, &r, want)
    })
    .await
    .expect("read the resolved topic");
    let partitions = resolved_records
        .iter()
        .map(|r| r.2 + 1)
        .max()
        .unwrap_or(pipeline.topics.partitions);
    // What the broker reports for the topic against what the sink loaded from it.
    let k = kafka.clone();
    let r = resolved.clone();
    let resolved_highs: i64 = tokio::task::spawn_blocking(move || {
        let c: BaseConsumer = zt_kafka::client::base_config(&k)
            .expect("config")
            .create()
            .expect("client");
        (0..partitions)
            .map(|p| {
                c.fetch_watermarks(&r, p, Duration::from_secs(10))
                    .map_or(0, |(_, h)| h)
            })
            .sum()
    })
    .await
    .expect("watermarks");
    let loaded = tsv(
        &pipeline.clickhouse.client(),
        "SELECT count(), uniqExact(event_id), _partition, max(_offset) + 1 FROM events GROUP BY _partition",
    )
    .await;
    let num = |v: &str| v.parse::<i64>().unwrap_or(0);
    let ch_rows: i64 = loaded.iter().map(|r| num(&r[0])).sum();
    let ch_ids: i64 = loaded.iter().map(|r| num(&r[1])).sum();
    let ch_ends: i64 = loaded.iter().map(|r| num(&r[3])).sum();
    let avg_bytes = resolved_records.iter().map(|r| r.1.len()).sum::<usize>() as f64
        / resolved_records.len().max(1) as f64;
    let mut rows: Vec<EventRow> = Vec::with_capacity(resolved_records.len());
    // Where freshness goes: ack -> identity published the resolved record (its Kafka
    // timestamp) -> row visible.
    let acks: HashMap<&str, i64> = sent.acks.iter().map(|(id, t)| (id.as_str(), *t)).collect();
    let mut to_identity: Vec<i64> = Vec::new();
    let mut to_visible: Vec<i64> = Vec::new();
    for (_, v, p, o, ts) in &resolved_records {
        let ev: Event = zt_model::decode(v).expect("a canonical event");
        if let Some(ack) = acks.get(ev.event_id.as_str()) {
            to_identity.push(ts - ack);
        }
        if let Some(vis) = visible.at.get(&ev.event_id) {
            to_visible.push(vis - ts);
        }
        let origin = Origin {
            topic: resolved.clone(),
            partition: *p,
            offset: *o,
        };
        rows.extend(map_event(&ev, &origin).expect("map").events);
    }
    let kv: Vec<(Vec<u8>, Vec<u8>)> = resolved_records
        .into_iter()
        .map(|(k, v, _, _, _)| (k, v))
        .collect();
    let scratch = format!("{}.bench-raw", pipeline.prefix);
    let (raw_produce, raw_consume, raw_read, raw_expected) =
        raw_broker(&kafka, &scratch, partitions, &kv).await;
    // Let the run's merges finish so that they do not slow the raw insert down.
    let admin = pipeline.clickhouse.server_client();
    let merge_wait = Instant::now();
    while merge_wait.elapsed() < Duration::from_secs(30) {
        let m = admin
            .query(&format!(
                "SELECT count() FROM system.merges WHERE database = '{DATABASE}'"
            ))
            .fetch_one::<u64>()
            .await
            .unwrap_or(0);
        if m == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let raw_ch = raw_clickhouse(&pipeline.clickhouse, &rows).await;

    to_identity.sort_unstable();
    to_visible.sort_unstable();

    // Report.
    let pipeline_rate = sent.accepted as f64 / sink_done;
    let sink = &metrics["sink"];
    let sink_events = metric_sum(sink, "zt_sink_rows_inserted_total{table=\"events\"");
    let sink_rows = metric_sum(sink, "zt_sink_rows_inserted_total");
    let sink_inserts = metric_sum(sink, "zt_sink_insert_duration_seconds_count");
    let sink_insert_secs = metric_sum(sink, "zt_sink_insert_duration_seconds_sum");
    let sink_event_rate = sink_events / sink_done;
    let ms = |v: i64| v as f64 / 1e3;
    println!();
    println!("End-to-end pipeline benchmark");
    println!(
        "  broker: {storage}; ClickHouse {} (database {DATABASE}); {} partitions per topic",
        ch.url, pipeline.topics.partitions
    );
    println!(
        "  world: seed {seed}, {persons} persons, 28 days = {n_records} records ({} accepted, {} rejected, {} retries)",
        sent.accepted, sent.rejected, sent.retries
    );
    println!(
        "  sending: batches of 200, {}",
        rate.map_or("as fast as ingest answers".to_owned(), |r| format!(
            "paced at {r:.0} records/s (ZT_BENCH_RATE)"
        ))
    );
    if let Some(extra) = &extra_config {
        println!(
            "  components' extra configuration (ZT_BENCH_EXTRA_CONFIG): {}",
            extra.replace('\n', "; ")
        );
    }
    println!(
        "  consumer groups had their partitions {:.1} s after the components were ready (not counted)",
        join_wait.as_secs_f64()
    );
    println!(
        "  t = 0 is the first request. The stages run concurrently (pipelined): a stage's rate is bounded by its upstream's."
    );
    println!(
        "  records/s = records processed / input drained; while active = records processed / (drained - first progress)."
    );
    println!();
    println!(
        "| stage | records processed | first progress (s) | input drained (s) | records/s | records/s while active |"
    );
    println!("|---|---|---|---|---|---|");
    println!(
        "| ingest (HTTP, acknowledged) | {} | 0 | {send_secs:.2} | {:.0} | {:.0} |",
        sent.accepted,
        sent.accepted as f64 / send_secs,
        sent.accepted as f64 / send_secs
    );
    let fmt = |v: Option<f64>| v.map_or("–".to_owned(), |v| format!("{v:.2}"));
    for f in &figs {
        let rate = f
            .done
            .map_or("–".to_owned(), |d| format!("{:.0}", f.consumed / d));
        let active = match (f.first, f.done) {
            (Some(a), Some(d)) if d > a => format!("{:.0}", f.consumed / (d - a)),
            _ => "–".to_owned(),
        };
        println!(
            "| {} | {:.0} | {} | {} | {rate} | {active} |",
            f.name,
            f.consumed,
            fmt(f.first),
            fmt(f.done),
        );
    }
    println!(
        "| **whole pipeline** (accepted records / sink drained) | {} | | {sink_done:.2} | **{pipeline_rate:.0}** | |",
        sent.accepted
    );
    println!();
    println!("| measure | value |");
    println!("|---|---|");
    println!(
        "| freshness p50 / p99 / max (ingest ack → `events` row visible) | {:.2} / {:.2} / {:.2} s |",
        ms(percentile(&fresh, 0.5)),
        ms(percentile(&fresh, 0.99)),
        ms(fresh.last().copied().unwrap_or(0))
    );
    println!(
        "| of which: ack → identity published it on zt.events.resolved, p50 / p99 | {:.2} / {:.2} s |",
        ms(percentile(&to_identity, 0.5)),
        ms(percentile(&to_identity, 0.99))
    );
    println!(
        "| of which: published on zt.events.resolved → `events` row visible, p50 / p99 | {:.2} / {:.2} s |",
        ms(percentile(&to_visible, 0.5)),
        ms(percentile(&to_visible, 0.99))
    );
    println!(
        "| freshness resolution: poll interval (mean poll duration) | {} ms ({:.0} ms) |",
        POLL.as_millis(),
        visible.poll_time.as_secs_f64() * 1e3 / f64::from(visible.polls.max(1))
    );
    println!(
        "| records stamped / acknowledged | {} / {} ({unseen} never seen) |",
        fresh.len(),
        sent.acks.len()
    );
    println!("| last `events` row visible | {last_visible:.2} s |");
    println!("| stage sweep period (mean) | {:.0} ms |", sweep_secs * 1e3);
    println!(
        "| committed lag at the end (zt_demo::drain::group_lag) | {} |",
        final_lags
            .iter()
            .map(|(n, l)| format!("{n} {l}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "| sink rows inserted: `events` / all tables | {sink_events:.0} / {sink_rows:.0} ({sink_inserts:.0} INSERTs, {sink_insert_secs:.1} s summed over INSERTs) |"
    );
    println!(
        "| sink `events` rows/s (all tables) over the pipeline window | {sink_event_rate:.0} ({:.0}) |",
        sink_rows / sink_done
    );
    println!(
        "| zt.events.resolved: `events` rows (distinct ids) / sum of max(_offset)+1 / broker high watermarks / read back | {ch_rows} ({ch_ids}) / {ch_ends} / {resolved_highs} / {} |",
        kv.len()
    );
    println!(
        "| raw broker produce ({} records read back from zt.events.resolved, avg {avg_bytes:.0} B, idempotent acks=all) | {raw_produce:.0} records/s |",
        kv.len()
    );
    println!(
        "| raw broker consume (read back {raw_read} of {raw_expected} to the high watermarks) | {raw_consume:.0} records/s |"
    );
    println!(
        "| raw ClickHouse INSERT (those {} `events` rows, sink's map_event, RowBinary) | {raw_ch:.0} rows/s |",
        rows.len()
    );
    let ratio = |a: f64, b: f64| {
        if b > 0.0 {
            format!("{:.3}", a / b)
        } else {
            "– (no raw figure)".to_owned()
        }
    };
    println!(
        "| **ratio pipeline / raw broker produce** | **{}** |",
        ratio(pipeline_rate, raw_produce)
    );
    println!(
        "| ratio pipeline / raw broker consume | {} |",
        ratio(pipeline_rate, raw_consume)
    );
    println!(
        "| **ratio sink `events` rows/s / raw ClickHouse** | **{}** |",
        ratio(sink_event_rate, raw_ch)
    );
    println!();
    let window = cpu_window;
    println!(
        "CPU from the first request to the drain confirmed ({window:.1} s; machine busy {:.0} % of all cores' time, other users included):",
        100.0 * (machine1.0 - machine0.0) / (machine1.1 - machine0.1).max(1.0)
    );
    let mut listed = 0.0;
    for (name, c1) in &cpu1 {
        let c0 = cpu0.get(name).copied().unwrap_or(0.0);
        listed += c1 - c0;
        println!(
            "  {name:<36} {:>6.1} s CPU ({:>3.0} % of one core)",
            c1 - c0,
            100.0 * (c1 - c0) / window
        );
    }
    // Per-process and machine counters are sampled a few ms apart: ± a few tenths of a second.
    let busy = ((machine1.0 - machine0.0) / 100.0).max(listed);
    println!(
        "  {:<36} {:>6.1} s CPU ({:>3.0} % of one core)",
        "everything else on the machine",
        busy - listed,
        100.0 * (busy - listed) / window
    );

    // Clean up: the database (and scratch table). Topics on an existing broker stay.
    let _ = admin
        .query(&format!("DROP DATABASE IF EXISTS {DATABASE}"))
        .execute()
        .await;
    drop(broker);
}
