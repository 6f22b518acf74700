//! ClickHouse sink throughput, as a ratio against the raw limit measured in the same run.
//!
//! Proves: `zt sink` (consume from Kafka, decode Avro, map to rows, batch per partition,
//! RowBinary INSERT per table, commit) loads rows at >= 0.6 of what a bare `clickhouse`
//! crate INSERT of the very same rows achieves on the same machine and server.
//!
//! 1. raw: every event decoded and mapped up front; the rows inserted into a fresh
//!    database with one INSERT per table (chunks of `batch_max_rows`), timed;
//! 2. sink: the same events produced to a 4-partition topic, then `zt_sink::sink::run`
//!    in-process into another fresh database, timed from the first row stored until all
//!    seven tables hold all their rows (so the window includes the last flush, started
//!    once the sink is caught up, and any small table's rows that waited for it).
//!
//! Needs the local ClickHouse (`ZT_BENCH_CLICKHOUSE_URL`, default http://127.0.0.1:8123)
//! and a broker: by default a tansu broker with the **memory** storage engine started on a
//! free port for the run (INFRA.md: SQLite is the durable local stack, memory is for
//! throughput); `ZT_BENCH_KAFKA=host:port` uses an existing broker instead.
//! `ZT_BENCH_EVENTS` sets the event count (default 200000), `ZT_BENCH_BATCH_AGE_MS` the
//! sink's `batch_max_age_ms` (default 1000, the shipped default), `ZT_BENCH_BATCH_ROWS` its
//! `batch_max_rows` (default 100000, the shipped default; the raw side inserts chunks of
//! the same size), `ZT_BENCH_BATCH_BYTES` its `batch_max_bytes` (default 67108864, the
//! shipped default).
//!
//! Run with `cargo bench -p zt-benches --bench sink`.

// The allocator the `zt` binary ships with (crates/zt-cli/src/main.rs).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clickhouse::Client;
use rdkafka::producer::{FutureProducer, FutureRecord};
use zt_kafka::config::{ConsumerConfig, ProducerConfig};
use zt_kafka::topics::TopicSpec;
use zt_kafka::{KafkaConfig, TopicsConfig};
use zt_model::{Event, Source};
use zt_runtime::{Health, Metrics, Secret, Shutdown};
use zt_sink::rows::{Origin, Rows, SinkRow, map_event};
use zt_sink::{ClickHouseConfig, SinkConfig, SinkParams};

const PARTITIONS: i32 = 4;

fn events(n: u32) -> Vec<Event> {
    // A realistic mix: tracking dominates, orders carry three lines.
    let mix = [
        Source::Tracking,
        Source::Tracking,
        Source::Tracking,
        Source::Tracking,
        Source::Erp,
        Source::Erp,
        Source::Logistics,
        Source::Service,
        Source::Crm,
        Source::Marketing,
    ];
    (0..n)
        .map(|i| {
            let mut e = zt_benches::sample_event(mix[(i % 10) as usize]);
            e.event_id = format!("bench-{i:08}");
            e.event_time += i64::from(i);
            e
        })
        .collect()
}

/// A counter of the sink's registry, by its one label: "label value, ...".
fn counter_by(registry: &prometheus::Registry, name: &str, label: &str, scale: f64) -> String {
    let mut out = Vec::new();
    for family in registry.gather() {
        if family.name() != name {
            continue;
        }
        for m in family.get_metric() {
            let value = m
                .get_label()
                .iter()
                .find(|l| l.name() == label)
                .map_or("?", |l| l.value());
            out.push(format!(
                "{value} {:.0}",
                m.get_counter().get_value() / scale
            ));
        }
    }
    out.sort();
    out.join(", ")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

struct Broker {
    addr: String,
    child: Option<Child>,
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn broker() -> Broker {
    if let Ok(addr) = std::env::var("ZT_BENCH_KAFKA") {
        return Broker { addr, child: None };
    }
    let port = free_port();
    let url = format!("tcp://127.0.0.1:{port}");
    let child = Command::new("tansu")
        .args(["broker", "--cluster-id", "zt-bench", "--listener-url", &url])
        .args(["--advertised-listener-url", &url])
        .args(["--storage-engine", "memory://tansu/"])
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("tansu on PATH (deploy/local/stack.sh install)");
    let addr = format!("127.0.0.1:{port}");
    for _ in 0..100 {
        if std::net::TcpStream::connect(&addr).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Broker {
        addr,
        child: Some(child),
    }
}

fn kafka(addr: &str) -> KafkaConfig {
    KafkaConfig {
        bootstrap_servers: addr.into(),
        client_id: "zt-bench".into(),
        producer: ProducerConfig {
            linger_ms: 50,
            compression: "lz4".into(),
            message_timeout_ms: 60_000,
            batch_size_bytes: 1_000_000,
        },
        consumer: ConsumerConfig {
            session_timeout_ms: 6_000,
            max_poll_interval_ms: 60_000,
            auto_offset_reset: "earliest".into(),
            auto_commit_interval_ms: 1_000,
        },
        options: std::env::var("ZT_BENCH_KAFKA_OPTIONS")
            .unwrap_or_default()
            .split(',')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
    }
}

fn ch_config(db: &str) -> ClickHouseConfig {
    ClickHouseConfig {
        url: std::env::var("ZT_BENCH_CLICKHOUSE_URL")
            .unwrap_or_else(|_| "http://127.0.0.1:8123".into()),
        database: db.into(),
        user: "default".into(),
        password: Secret::default(),
        cluster: String::new(),
    }
}

async fn migrate(cfg: &ClickHouseConfig) {
    let plan = zt_sink::migrate::plan(cfg, &Default::default())
        .await
        .expect("plan");
    zt_sink::migrate::apply(cfg, &plan).await.expect("migrate");
}

async fn insert_all<R: SinkRow>(client: &Client, rows: &[R], chunk: usize) {
    for part in rows.chunks(chunk) {
        let mut ins = client.insert::<R>(R::TABLE).await.expect("insert");
        for r in part {
            ins.write(r).await.expect("write");
        }
        ins.end().await.expect("end");
    }
}

/// Rows stored in the seven tables the bench's events feed (their active parts' row
/// counts: metadata only, cheap enough to poll every 20 ms; plain MergeTree tables, so
/// merges keep the sum).
async fn count(client: &Client, db: &str) -> u64 {
    client
        .query(
            "SELECT toUInt64(sum(rows)) FROM system.parts WHERE database = ? AND active \
             AND table IN ('events', 'orders', 'order_lines', 'shipments', 'tickets', \
             'ad_spend', 'customers')",
        )
        .bind(db)
        .fetch_one::<u64>()
        .await
        .unwrap_or(0)
}

/// Parts written per table of `db` (ClickHouse numbers the blocks it writes per table;
/// merges keep the highest), in one line: "events 12, orders 5, ...".
async fn parts_written(client: &Client, db: &str) -> String {
    let rows = client
        .query(
            "SELECT table, toUInt64(max(max_block_number)) FROM system.parts \
             WHERE database = ? GROUP BY table ORDER BY table",
        )
        .bind(db)
        .fetch_all::<(String, u64)>()
        .await
        .unwrap_or_default();
    let list: Vec<String> = rows.iter().map(|(t, n)| format!("{t} {n}")).collect();
    list.join(", ")
}

/// Waits (up to 60 s) until ClickHouse runs no merge, so that neither side of the bench
/// pays for merging the other's parts (or an earlier run's) inside its window.
async fn merges_settled(client: &Client) {
    let until = Instant::now() + Duration::from_secs(60);
    while Instant::now() < until {
        let running = client
            .query("SELECT toUInt64(count()) FROM system.merges")
            .fetch_one::<u64>()
            .await
            .unwrap_or(0);
        if running == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: u32 = std::env::var("ZT_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let stamp = std::process::id();
    let broker = broker();
    let kcfg = kafka(&broker.addr);
    let evs = events(n);
    let sink_cfg = SinkConfig {
        group_id: format!("zt-bench-{stamp}"),
        topics: vec![],
        batch_max_rows: std::env::var("ZT_BENCH_BATCH_ROWS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(100_000),
        batch_max_bytes: std::env::var("ZT_BENCH_BATCH_BYTES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(64 * 1024 * 1024),
        batch_max_age_ms: std::env::var("ZT_BENCH_BATCH_AGE_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1_000),
        retry_initial_backoff_ms: 100,
        retry_max_backoff_ms: 5_000,
        insert_timeout_ms: 60_000,
        lag_interval_ms: 0,
        dedup_window_records: 10_000,
    };

    // Raw: the same rows the sink would write, inserted directly.
    let topic = format!("zt-bench-{stamp}.events");
    let mut rows = Rows::default();
    for (i, e) in evs.iter().enumerate() {
        let o = Origin {
            topic: topic.clone(),
            partition: (i % PARTITIONS as usize) as i32,
            offset: (i / PARTITIONS as usize) as i64,
        };
        rows.append(map_event(e, &o).expect("map"));
    }
    let total_rows = rows.len();
    let raw_db = format!("zt_bench_raw_{stamp}");
    let raw_cfg = ch_config(&raw_db);
    migrate(&raw_cfg).await;
    let client = raw_cfg.client();
    let chunk = sink_cfg.batch_max_rows as usize;
    merges_settled(&client).await;
    let t = Instant::now();
    insert_all(&client, &rows.events, chunk).await;
    insert_all(&client, &rows.orders, chunk).await;
    insert_all(&client, &rows.order_lines, chunk).await;
    insert_all(&client, &rows.shipments, chunk).await;
    insert_all(&client, &rows.tickets, chunk).await;
    insert_all(&client, &rows.ad_spend, chunk).await;
    insert_all(&client, &rows.customers, chunk).await;
    let raw_secs = t.elapsed().as_secs_f64();
    drop(rows);

    // Sink: produce, then load through the real sink.
    zt_kafka::create_topics(
        &kcfg,
        &[
            TopicSpec {
                name: topic.clone(),
                partitions: PARTITIONS,
                replication_factor: 1,
                compacted: false,
                keep_forever: false,
                purpose: "bench",
            },
            // The suppression list the sink reads at start (`zt erase`; empty here).
            TopicSpec {
                name: format!("zt-bench-{stamp}.suppressions"),
                partitions: 1,
                replication_factor: 1,
                compacted: true,
                keep_forever: false,
                purpose: "bench",
            },
        ],
    )
    .await
    .expect("create topic");
    let producer: FutureProducer = zt_kafka::build_producer(&kcfg).expect("producer");
    let encoded: Vec<Vec<u8>> = evs
        .iter()
        .map(|e| zt_model::encode(e).expect("encode"))
        .collect();
    // The sink's own CPU floor: decode (zt_model::decode), map and RowBinary-encode (what
    // its decode thread does per record), one core.
    let t = Instant::now();
    let origin = Origin {
        topic: topic.clone(),
        partition: 0,
        offset: 0,
    };
    let mut decoded_rows = 0usize;
    for b in &encoded {
        let ev: Event = zt_model::decode(b).expect("decode");
        decoded_rows += map_event(&ev, &origin)
            .expect("map")
            .encode()
            .expect("encode")
            .rows();
    }
    let decode_secs = t.elapsed().as_secs_f64();
    assert_eq!(decoded_rows, total_rows);
    let t = Instant::now();
    let mut acks = Vec::with_capacity(evs.len());
    for (e, bytes) in evs.iter().zip(&encoded) {
        loop {
            let rec = FutureRecord::to(&topic).key(&e.event_id).payload(bytes);
            match producer.send_result(rec).map_err(|(err, _)| err) {
                Ok(f) => {
                    acks.push(f);
                    break;
                }
                // The local queue is full: let deliveries catch up.
                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
    }
    for a in acks {
        a.await.expect("delivered").expect("acked");
    }
    let produce_secs = t.elapsed().as_secs_f64();

    let sink_db = format!("zt_bench_sink_{stamp}");
    let sink_ch = ch_config(&sink_db);
    migrate(&sink_ch).await;
    let mut topics_cfg = TopicsConfig {
        prefix: format!("zt-bench-{stamp}"),
        partitions: PARTITIONS,
        replication_factor: 1,
        partition_overrides: BTreeMap::new(),
        profiles_version: 1,
        funnels_version: 1,
    };
    topics_cfg.partitions = PARTITIONS;
    let mut sc = sink_cfg.clone();
    sc.topics = vec![topic.clone()];
    let params = SinkParams::new(kcfg.clone(), &topics_cfg, sink_ch.clone(), sc);
    merges_settled(&client).await;
    let shutdown = Shutdown::new();
    let metrics = Metrics::new("sink");
    let registry = metrics.registry().clone();
    let health = Health::new();
    let sd = shutdown.clone();
    let task =
        tokio::spawn(
            async move { zt_sink::sink::run(params, metrics.registry(), &health, sd).await },
        );
    let sink_client = sink_ch.client();
    let t_sink = Instant::now();
    let mut first: Option<(Instant, u64)> = None;
    let deadline = Instant::now() + Duration::from_secs(600);
    let end = loop {
        let c = count(&sink_client, &sink_db).await;
        if first.is_none() && c > 0 {
            first = Some((Instant::now(), c));
        }
        if std::env::var_os("ZT_BENCH_TRACE").is_some() {
            eprintln!("{:>8.3} s {c}", t_sink.elapsed().as_secs_f64());
        }
        if c >= total_rows as u64 || Instant::now() > deadline {
            break Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    shutdown.trigger();
    let _ = task.await;
    let (t0, c0) = first.expect("the sink loaded rows");
    let loaded = count(&sink_client, &sink_db).await;
    assert_eq!(
        loaded, total_rows as u64,
        "every row loaded, in every table"
    );
    // The rows stored after the first poll that saw any, until every table held all.
    let sink_secs = end.duration_since(t0).as_secs_f64();
    let sink_rows = (total_rows as u64 - c0) as f64;
    let raw_rate = total_rows as f64 / raw_secs;
    let sink_rate = sink_rows / sink_secs;
    println!("ClickHouse sink benchmark");
    println!("  events                 {n} ({total_rows} rows over 7 tables)");
    println!(
        "  broker                 {}",
        if broker.child.is_some() {
            "tansu 0.6 memory engine (started for this run)"
        } else {
            "existing broker (ZT_BENCH_KAFKA)"
        }
    );
    println!(
        "  produce                {:.0} events/s",
        f64::from(n) / produce_secs
    );
    println!(
        "  decode + map + encode  {:.0} events/s, {:.0} rows/s on one core ({decode_secs:.2} s)",
        f64::from(n) / decode_secs,
        total_rows as f64 / decode_secs
    );
    println!("  raw clickhouse insert  {raw_rate:.0} rows/s ({raw_secs:.2} s)");
    println!("  zt sink                {sink_rate:.0} rows/s ({sink_secs:.2} s)");
    println!("  ratio sink / raw       {:.2}", sink_rate / raw_rate);
    println!(
        "  parts written          raw: {}; sink: {}",
        parts_written(&sink_client, &raw_db).await,
        parts_written(&sink_client, &sink_db).await
    );
    println!(
        "  sink flushes           {}",
        counter_by(&registry, "zt_sink_flushes_total", "reason", 1.0)
    );
    println!(
        "  RowBinary MiB          {}",
        counter_by(
            &registry,
            "zt_sink_bytes_inserted_total",
            "table",
            1048576.0
        )
    );
    for db in [&raw_db, &sink_db] {
        let _ = raw_cfg
            .server_client()
            .query(&format!("DROP DATABASE IF EXISTS {db}"))
            .execute()
            .await;
    }
}
