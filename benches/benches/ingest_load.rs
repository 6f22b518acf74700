//! HTTP ingest load run: batched native ERP records (or Segment calls) posted over
//! keep-alive connections to an in-process `zt ingest`, next to the raw producer rate of
//! the same encoded events to the same broker, measured in the same run. Prints events/s,
//! request latency p50/p99 and the ratio to the raw rate (target: at least 0.5) for each
//! of `ZT_BENCH_ROUNDS` (5) rounds of a raw run then an HTTP run, and the medians: on this
//! shared machine one run of either can be a third slower than the next.
//!
//! `cargo bench -p zt-benches --bench ingest_load`. By default it starts its own tansu on a
//! free port with the memory storage engine (INFRA.md: use memory for throughput figures);
//! `ZT_BENCH_BROKER=host:port` uses an existing broker instead. `ZT_BENCH_EVENTS` (default
//! 400000), `ZT_BENCH_BATCH` (200) and `ZT_BENCH_CONNECTIONS` (64) size the run. The
//! HTTP run needs enough events in flight to be bound by CPU, not by request latency: a
//! request waits about 9 ms for its acknowledgements (`linger.ms` and the broker), so 32
//! connections of 200 events cap it near 700k events/s, which ingest reached on 2026-11-28
//! (at 8 or 16 it was capped earlier still). The raw run publishes through ingest's own
//! `Publisher` (the same producer settings, delivery counting and record timestamps,
//! without HTTP, parsing or normalising), in publishes of `ZT_BENCH_BATCH` records, and
//! keeps as many records awaiting acknowledgement as the HTTP run can (connections ×
//! batch, 12,800; `ZT_BENCH_RAW_WINDOW` sets another); `ZT_BENCH_LINGER_MS` (5) is both
//! producers' `linger.ms`. `ZT_BENCH_SOURCE=tracking`
//! posts Segment `track` calls to `/v1/batch` instead (`{"batch": [...]}` bodies, an
//! e-mail in `context.traits` and product properties per call, as a web tracker sends).

// The allocator the `zt` binary ships with (crates/zt-cli/src/main.rs).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use zt_ingest::normalize::{Envelope, normalize};
use zt_ingest::publish::Publisher;
use zt_integration_tests::ingest::{SALT, basic, fresh_topics, ingest_config, key_of, start_with};
use zt_integration_tests::kafka_config;
use zt_model::Source;

/// The time now, in ms since the epoch (a record timestamp).
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A minimal keep-alive HTTP/1.1 client.
struct Conn {
    io: BufReader<TcpStream>,
}

impl Conn {
    async fn connect(addr: SocketAddr) -> Conn {
        let s = TcpStream::connect(addr).await.unwrap();
        // No Nagle: a request is written at once, not held for the previous ACK.
        s.set_nodelay(true).unwrap();
        Conn {
            io: BufReader::new(s),
        }
    }

    async fn post(&mut self, path: &str, auth: &str, body: &[u8]) -> u16 {
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: {auth}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        // The head, then the body as it is: copying each body (some 73 KB of a tracking
        // batch, built before the run and read cold) into one buffer with its head was
        // a twentieth of the machine's time in the HTTP run, spent by the client, which
        // shares the machine with ingest.
        let io = self.io.get_mut();
        io.write_all(head.as_bytes()).await.unwrap();
        io.write_all(body).await.unwrap();
        let mut line = String::new();
        self.io.read_line(&mut line).await.unwrap();
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|x| x.parse().ok())
            .unwrap_or(0);
        let mut len = 0usize;
        loop {
            line.clear();
            self.io.read_line(&mut line).await.unwrap();
            if line == "\r\n" || line.is_empty() {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().unwrap_or(0);
            }
        }
        let mut buf = vec![0u8; len];
        self.io.read_exact(&mut buf).await.unwrap();
        status
    }
}

/// What the bench posts: native ERP orders, or Segment `track` calls.
#[derive(Clone, Copy, PartialEq)]
enum Workload {
    Erp,
    Tracking,
}

impl Workload {
    fn from_env() -> Workload {
        match std::env::var("ZT_BENCH_SOURCE").as_deref() {
            Ok("tracking") => Workload::Tracking,
            Ok("erp") | Err(_) => Workload::Erp,
            Ok(other) => panic!("ZT_BENCH_SOURCE={other}: erp or tracking"),
        }
    }

    fn source(self) -> Source {
        match self {
            Workload::Erp => Source::Erp,
            Workload::Tracking => Source::Tracking,
        }
    }

    fn path(self) -> &'static str {
        match self {
            Workload::Erp => "/v1/sources/erp/events",
            Workload::Tracking => "/v1/batch",
        }
    }

    /// Record `i` as posted.
    fn record(self, i: usize) -> serde_json::Value {
        match self {
            Workload::Erp => native_record(i),
            Workload::Tracking => zt_benches::track_call(i),
        }
    }

    /// The request body of records `ids`.
    fn body(self, ids: &[usize]) -> Vec<u8> {
        match self {
            Workload::Erp => {
                let records: Vec<serde_json::Value> =
                    ids.iter().map(|&i| native_record(i)).collect();
                serde_json::to_vec(&records).unwrap()
            }
            Workload::Tracking => zt_benches::track_body(ids.iter().copied()),
        }
    }
}

fn native_record(i: usize) -> serde_json::Value {
    serde_json::json!({
        "event_id": format!("bench-{i}"), "type": "order.paid",
        "occurred_at": "2026-01-05T10:00:00+08:00", "order_id": format!("SO{i}"),
        "customer_id": format!("C{}", i % 5000), "mobile": "13812345678", "channel": "tmall",
        "currency": "CNY", "total": 19300, "discount": 500,
        "lines": [{"sku": "SKU-1", "product_name": "保温杯", "quantity": 2, "unit_price": 9900}]
    })
}

/// CPU seconds so far: this process, the broker (when the bench started it), the machine
/// (busy jiffies of all cores, /proc/stat).
#[derive(Clone, Copy)]
struct Cpu {
    process: f64,
    broker: f64,
    machine: f64,
    cores: usize,
}

impl Cpu {
    fn since(self, before: Cpu) -> Cpu {
        Cpu {
            process: self.process - before.process,
            broker: self.broker - before.broker,
            machine: self.machine - before.machine,
            cores: self.cores,
        }
    }
}

fn cpu_now(broker: Option<u32>) -> Cpu {
    let cpu = |pid: Option<u32>| {
        pid.and_then(zt_benches::proc_cpu)
            .map(|(c, _)| c)
            .unwrap_or(0.0)
    };
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let mut cores = 0;
    let mut machine = 0.0;
    for line in stat.lines() {
        let mut f = line.split_whitespace();
        match f.next() {
            Some("cpu") => {
                let v: Vec<f64> = f.filter_map(|x| x.parse().ok()).collect();
                let idle = v.get(3).copied().unwrap_or(0.0) + v.get(4).copied().unwrap_or(0.0);
                machine = (v.iter().sum::<f64>() - idle) / 100.0;
            }
            Some(c) if c.starts_with("cpu") => cores += 1,
            _ => {}
        }
    }
    Cpu {
        process: cpu(Some(std::process::id())),
        broker: cpu(broker),
        machine,
        cores,
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// One round's measures.
struct Round {
    raw_rate: f64,
    http_rate: f64,
    raw_cpu: Cpu,
    http_cpu: Cpu,
    p50: Duration,
    p99: Duration,
}

/// The canonical events the HTTP run of records `ids` will publish (the same records
/// normalised outside the clock), with the same keys: what the raw run sends.
fn raw_events(work: Workload, ids: std::ops::Range<usize>) -> Vec<(String, Vec<u8>)> {
    let setup = zt_benches::NormaliseSetup::new(SALT.as_bytes());
    let ctx = setup.ctx();
    let private: Vec<String> = Vec::new();
    ids.map(|i| {
        let raw = serde_json::to_vec(&work.record(i)).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&raw).unwrap();
        let env = Envelope {
            received_at: 1_767_578_400_000,
            raw: &raw,
            private_channels: &private,
        };
        let ev = normalize(work.source(), v, None, &ctx, env).unwrap();
        (
            zt_ingest::publish::event_key(&ev).to_owned(),
            zt_model::encode(&ev).unwrap(),
        )
    })
    .collect()
}

/// The raw limit: `encoded` through a producer with ingest's settings, to the same broker,
/// every delivery awaited, by ingest's own publishing code ([`Publisher`]: its producer,
/// its delivery counting, its record timestamps) without the HTTP, the parsing and the
/// normalising.
///
/// The records go in publishes of `batch` (one per request in the HTTP run), each stamped
/// with a time read once; at most `window` records await their acknowledgements, oldest
/// publish first. When the local queue is full, a publish waits a millisecond at a time
/// (the producer is saturated then, which is what this run measures).
async fn raw_run(
    publisher: &Publisher,
    topic: &str,
    encoded: &[(String, Vec<u8>)],
    window: usize,
    batch: usize,
) {
    let batch = batch.max(1);
    let most = (window / batch).max(1);
    let mut in_flight = std::collections::VecDeque::with_capacity(most);
    let acknowledged = |acks: Vec<Result<(), zt_ingest::publish::PublishError>>| {
        for a in acks {
            a.expect("raw produce acknowledged");
        }
    };
    for chunk in encoded.chunks(batch) {
        if in_flight.len() == most
            && let Some(oldest) = in_flight.pop_front()
        {
            acknowledged(oldest.await);
        }
        let mut sending = publisher.begin("raw").at(now_ms());
        for (k, v) in chunk {
            sending.send(topic, k, v).await;
        }
        in_flight.push_back(sending.finish());
    }
    for publish in in_flight {
        acknowledged(publish.await);
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run());
}

async fn run() {
    let events = env_or("ZT_BENCH_EVENTS", 400_000);
    let rounds = env_or("ZT_BENCH_ROUNDS", 5).max(1);
    let batch = env_or("ZT_BENCH_BATCH", 200);
    let conns = env_or("ZT_BENCH_CONNECTIONS", 64);
    // The raw run keeps as many records awaiting acknowledgement as the HTTP run can
    // (connections × batch). A deeper window is slower, not faster: on 2026-11-28 the
    // tracking raw run reached 1.08–1.15M events/s with 16,384 records in flight and
    // 0.81–1.02M with 65,536 (the former default) in alternating runs, its records' copies
    // in librdkafka then being ~20 MB that the producer's threads reach cold; with 4,096
    // it waits on `linger.ms` (0.47M).
    let raw_window = env_or("ZT_BENCH_RAW_WINDOW", conns * batch).max(1);
    let mut kafka = kafka_config();
    let (mut broker, bootstrap, storage) = zt_benches::bench_broker();
    kafka.bootstrap_servers = bootstrap;
    kafka.producer.linger_ms = env_or("ZT_BENCH_LINGER_MS", 5) as u32;
    let topics = fresh_topics(&kafka, 4).await;
    let work = Workload::from_env();
    let topic = topics.events(work.source());
    // The raw run writes to a topic of its own, so each run's records can be counted.
    let raw_topic = fresh_topics(&kafka, 4).await.events(work.source());
    // The raw run publishes through a publisher of its own, built as ingest builds its
    // (`zt_ingest::build_state`).
    let publisher = Publisher::new(
        zt_kafka::client::producer_config(&kafka).unwrap(),
        topics.clone(),
        Duration::from_secs(30),
        zt_ingest::metrics::IngestMetrics::new(&prometheus::Registry::new()).unwrap(),
    )
    .unwrap();
    let broker_pid = broker.as_ref().map(|b| b.id());
    // One ingest for every round, with the default dedup window (a million ids), which
    // the rounds fill: from the third round of 400,000 on, every id remembered forgets
    // the oldest, as in a busy ingest.
    let mut cfg = ingest_config();
    cfg.dedup_max_entries = 1_000_000; // config/defaults.toml
    let ing = start_with(cfg, kafka.clone(), topics.clone()).await;
    let auth = basic(&key_of(work.source()));

    // Warm up ingest outside the clock, as the raw producer is: one request on each
    // connection's worth, with ids after every round's.
    let warm_up = conns * batch;
    let warm_ids: Vec<usize> = (rounds * events..rounds * events + warm_up).collect();
    let mut warming = Vec::new();
    for ids in warm_ids.chunks(batch) {
        let body = work.body(ids);
        let (addr, auth) = (ing.addr, auth.clone());
        warming.push(tokio::spawn(async move {
            let status = Conn::connect(addr)
                .await
                .post(work.path(), &auth, &body)
                .await;
            assert_eq!(status, 200, "warm-up request");
        }));
    }
    for w in warming {
        w.await.unwrap();
    }

    let mut runs: Vec<Round> = Vec::new();
    for round in 0..rounds {
        let ids = round * events..(round + 1) * events;
        let encoded = raw_events(work, ids.clone());
        if round == 0 {
            // Warm up (connections, metadata, producer id) outside the clock, as ingest's
            // producer is warm by the time its run starts.
            for (k, v) in encoded.iter().take(100) {
                let mut sending = publisher.begin("raw");
                sending.send(&raw_topic, k, v).await;
                for ack in sending.finish().await {
                    ack.expect("warm-up produce acknowledged");
                }
            }
        }
        eprintln!("round {}: the raw run starts", round + 1);
        let cpu0 = cpu_now(broker_pid);
        let t = Instant::now();
        raw_run(&publisher, &raw_topic, &encoded, raw_window, batch).await;
        let raw_secs = t.elapsed().as_secs_f64();
        let raw_cpu = cpu_now(broker_pid).since(cpu0);
        drop(encoded);

        // HTTP ingest: batches over keep-alive connections.
        let bodies: Vec<Vec<u8>> = ids
            .collect::<Vec<_>>()
            .chunks(batch)
            .map(|c| work.body(c))
            .collect();
        let mut per_conn: Vec<Vec<Vec<u8>>> = (0..conns).map(|_| Vec::new()).collect();
        for (i, body) in bodies.into_iter().enumerate() {
            per_conn[i % conns].push(body);
        }
        eprintln!(
            "round {}: raw run {:.0} events/s; the HTTP run starts",
            round + 1,
            events as f64 / raw_secs
        );
        let cpu0 = cpu_now(broker_pid);
        let t = Instant::now();
        let mut tasks = Vec::new();
        for bodies in per_conn {
            let addr = ing.addr;
            let auth = auth.clone();
            tasks.push(tokio::spawn(async move {
                let mut conn = Conn::connect(addr).await;
                let mut lat = Vec::with_capacity(bodies.len());
                for body in bodies {
                    let s = Instant::now();
                    let status = conn.post(work.path(), &auth, &body).await;
                    assert_eq!(status, 200);
                    lat.push(s.elapsed());
                }
                lat
            }));
        }
        let mut lat: Vec<Duration> = Vec::new();
        for t in tasks {
            lat.extend(t.await.unwrap());
        }
        let http_secs = t.elapsed().as_secs_f64();
        let http_cpu = cpu_now(broker_pid).since(cpu0);
        lat.sort();
        runs.push(Round {
            raw_rate: events as f64 / raw_secs,
            http_rate: events as f64 / http_secs,
            raw_cpu,
            http_cpu,
            p50: percentile(&lat, 0.5),
            p99: percentile(&lat, 0.99),
        });
    }
    // Every run's records are really on the broker: read them back (by count: tansu's
    // memory engine reports high watermarks below what its partitions hold), and check that
    // each partition's offsets are dense (max offset + 1 = records read).
    let on_broker = |t: String, expected: usize| {
        let k = kafka.clone();
        tokio::task::spawn_blocking(move || {
            let records = zt_integration_tests::ingest::read_by_count(&k, &t, expected);
            let mut ends: std::collections::BTreeMap<i32, (i64, i64)> = Default::default();
            for (_, _, p, o, _) in &records {
                let e = ends.entry(*p).or_default();
                e.0 += 1;
                e.1 = e.1.max(o + 1);
            }
            let dense = ends.values().all(|(n, end)| n == end);
            (records.len(), dense)
        })
    };
    let (raw_on_topic, raw_dense) = on_broker(raw_topic.clone(), rounds * events + 100)
        .await
        .unwrap();
    let (http_on_topic, http_dense) = on_broker(topic.clone(), rounds * events + warm_up)
        .await
        .unwrap();
    ing.shutdown.trigger();

    println!(
        "ingest load run: {rounds} rounds of {events} events (a raw run, then an HTTP run), {}, batches of {batch}, {conns} connections, broker: {storage}",
        match work {
            Workload::Erp => "native ERP orders",
            Workload::Tracking => "Segment track calls to /v1/batch",
        }
    );
    let per_event = |secs: f64| secs * 1e6 / events as f64;
    println!(
        "| round | raw producer (same encoded events, same broker), events/s | HTTP ingest (parse, normalise, hash, encode, produce, ack), events/s | ratio HTTP / raw | request latency p50 / p99 ({batch} events) | CPU per event, raw run: producer process / broker / machine (of {} cores) | CPU per event, HTTP run: ingest + load generator process / broker / machine |",
        runs[0].raw_cpu.cores
    );
    println!("|---|---|---|---|---|---|---|");
    for (i, r) in runs.iter().enumerate() {
        println!(
            "| {} | {:.0} | {:.0} | {:.2} | {:.1} ms / {:.1} ms | {:.2} / {:.2} / {:.2} µs | {:.2} / {:.2} / {:.2} µs |",
            i + 1,
            r.raw_rate,
            r.http_rate,
            r.http_rate / r.raw_rate,
            r.p50.as_secs_f64() * 1e3,
            r.p99.as_secs_f64() * 1e3,
            per_event(r.raw_cpu.process),
            per_event(r.raw_cpu.broker),
            per_event(r.raw_cpu.machine),
            per_event(r.http_cpu.process),
            per_event(r.http_cpu.broker),
            per_event(r.http_cpu.machine),
        );
    }
    let median = |f: &dyn Fn(&Round) -> f64| {
        let mut v: Vec<f64> = runs.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        (v[v.len() / 2], v[0], v[v.len() - 1])
    };
    let (raw, raw_lo, raw_hi) = median(&|r| r.raw_rate);
    let (http, http_lo, http_hi) = median(&|r| r.http_rate);
    let (ratio, ratio_lo, ratio_hi) = median(&|r| r.http_rate / r.raw_rate);
    println!();
    println!("| median of {rounds} rounds (range) | value |");
    println!("|---|---|");
    println!(
        "| raw producer (same encoded events, same broker) | {raw:.0} events/s ({raw_lo:.0}–{raw_hi:.0}) |"
    );
    println!(
        "| HTTP ingest (parse, normalise, hash, encode, produce, ack) | {http:.0} events/s ({http_lo:.0}–{http_hi:.0}) |"
    );
    println!(
        "| ratio HTTP / raw, per round (target: at least 0.5) | {ratio:.2} ({ratio_lo:.2}–{ratio_hi:.2}) |"
    );
    println!(
        "| records read back from the broker: raw runs and warm-up (expected {}) / HTTP runs and warm-up (expected {}); all there with dense offsets | {raw_on_topic} / {http_on_topic}; {} |",
        rounds * events + 100,
        rounds * events + warm_up,
        if raw_dense
            && http_dense
            && raw_on_topic == rounds * events + 100
            && http_on_topic == rounds * events + warm_up
        {
            "yes"
        } else {
            "NO"
        }
    );
    if let Some(b) = broker.as_mut() {
        let _ = b.kill();
        let _ = b.wait();
    }
}
