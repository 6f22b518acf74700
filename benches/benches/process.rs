//! Stream processor run: events/s through `zt process identity`, `zt process profiles` and
//! `zt process funnels`, each next to a raw consume → produce passthrough (same consumer and producer
//! settings, same batching, no processing) over the same broker, in the same run.
//!
//! `cargo bench -p zt-benches --bench process`. By default it starts its own tansu on a
//! free port with the memory storage engine (INFRA.md: memory for throughput figures);
//! `ZT_BENCH_BROKER=host:port` uses an existing broker. `ZT_BENCH_EVENTS` (default 40000)
//! sizes the run. The traffic: persons with a CRM id, a user id, two devices and orders
//! placed by phone, arriving shuffled over the tracking, CRM and ERP topics.

// The allocator the `zt` binary ships with (crates/zt-cli/src/main.rs).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::FutureRecord;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use zt_integration_tests::ingest::fresh_topics;
use zt_integration_tests::kafka_config;
use zt_kafka::{KafkaConfig, TopicsConfig};
use zt_model::*;
use zt_process::runtime::{self, Ctx, Out};
use zt_runtime::health::Health;
use zt_runtime::shutdown::Shutdown;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn event(i: usize) -> Event {
    let k = i / 8;
    let t = 1_767_225_600_000 + i as i64 * 1_000;
    let s = |v: String| Some(v);
    let (ty, ids, payload) = match i % 8 {
        0 => (
            "customer.updated",
            Identities {
                crm_customer_id: s(format!("C{k}")),
                user_id: s(format!("U{k}")),
                phone_hash: s(format!("PH{k}")),
                ..Default::default()
            },
            Payload::Customer(CustomerPayload {
                customer_id: format!("C{k}"),
                ..Default::default()
            }),
        ),
        1 | 2 => (
            "identify",
            Identities {
                user_id: s(format!("U{k}")),
                anonymous_id: s(format!("A{k}-{}", i % 2)),
                ..Default::default()
            },
            Payload::Tracking(TrackingPayload {
                kind: "identify".into(),
                ..Default::default()
            }),
        ),
        3..=5 => (
            "track",
            Identities {
                anonymous_id: s(format!("A{k}-{}", i % 2)),
                ..Default::default()
            },
            Payload::Tracking(TrackingPayload {
                name: s("Product Viewed".into()),
                ..Default::default()
            }),
        ),
        _ => (
            "order.paid",
            Identities {
                phone_hash: s(format!("PH{k}")),
                order_id: s(format!("O{i}")),
                ..Default::default()
            },
            Payload::Order(OrderPayload {
                order_id: format!("O{i}"),
                status: "paid".into(),
                currency: "CNY".into(),
                total_minor: 10_000 + i as i64,
                ..Default::default()
            }),
        ),
    };
    Event {
        event_id: format!("e{i}"),
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

fn committed_all(kafka: &KafkaConfig, group: &str, topics: &[String]) -> bool {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &kafka.bootstrap_servers)
        .set("group.id", group)
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    let mut highs = BTreeMap::new();
    for t in topics {
        let md = c.fetch_metadata(Some(t), Duration::from_secs(10)).unwrap();
        let n = md.topics()[0].partitions().len() as i32;
        for p in 0..n {
            let (_, h) = c.fetch_watermarks(t, p, Duration::from_secs(10)).unwrap();
            highs.insert((t.clone(), p), h);
            tpl.add_partition(t, p);
        }
    }
    let Ok(got) = c.committed_offsets(tpl, Duration::from_secs(10)) else {
        return false;
    };
    got.elements().iter().all(|e| {
        let h = highs[&(e.topic().to_owned(), e.partition())];
        matches!(e.offset(), Offset::Offset(o) if o >= h) || h == 0
    })
}

fn counter_sum(reg: &prometheus::Registry, name: &str) -> f64 {
    reg.gather()
        .iter()
        .filter(|f| f.name() == name)
        .flat_map(|f| f.get_metric().iter().map(|m| m.get_counter().get_value()))
        .sum()
}

/// Events/s of a processor: from the moment its first batch shows in `metric` until its
/// group has committed every input, not counting the first batch.
async fn measure(
    kafka: &KafkaConfig,
    reg: &prometheus::Registry,
    metric: &str,
    group: &str,
    inputs: &[String],
    n: usize,
) -> f64 {
    let (t0, first) = loop {
        let c = counter_sum(reg, metric);
        if c > 0.0 {
            break (Instant::now(), c as usize);
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    wait_committed(kafka, group, inputs).await;
    (n - first.min(n)) as f64 / t0.elapsed().as_secs_f64()
}

async fn wait_committed(kafka: &KafkaConfig, group: &str, topics: &[String]) {
    while !committed_all(kafka, group, topics) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Raw limit: the same group consumer, batches and acknowledged producing, no processing.
async fn passthrough(kafka: &KafkaConfig, inputs: &[String], out: &str, n: usize) -> f64 {
    let lag =
        prometheus::IntGaugeVec::new(prometheus::Opts::new("l", "l"), &["topic", "partition"])
            .unwrap();
    let errs = prometheus::IntCounterVec::new(prometheus::Opts::new("e", "e"), &["kind"]).unwrap();
    let ctx = Ctx::new(lag, errs, Health::new().register("kafka"));
    let group = format!("pass-{}", zt_integration_tests::unique("g"));
    let consumer = runtime::group_consumer(kafka, &group, inputs, ctx.clone(), 0).unwrap();
    let producer = zt_kafka::build_producer(kafka).unwrap();
    let shutdown = Shutdown::new();
    let mut done = 0;
    // The clock starts once the first batch is through (group joined, connections warm),
    // as for the processors; the first batch is not counted.
    let mut start: Option<(Instant, usize)> = None;
    while done < n {
        let (batch, _) = runtime::collect(
            &consumer,
            &ctx,
            5_000,
            Duration::from_millis(100),
            &shutdown,
        )
        .await
        .unwrap();
        if batch.is_empty() {
            continue;
        }
        let outs: Vec<Out> = batch
            .iter()
            .map(|m| {
                use rdkafka::Message;
                Out {
                    topic: out.to_owned(),
                    key: m.key().unwrap_or_default().to_vec(),
                    value: m.payload().map(<[u8]>::to_vec),
                    headers: vec![],
                }
            })
            .collect();
        runtime::send_all(&producer, &outs).await.unwrap();
        runtime::commit(&consumer, &runtime::next_offsets(&batch)).unwrap();
        done += batch.len();
        start.get_or_insert((Instant::now(), done));
    }
    let (t0, first) = start.unwrap();
    (n - first) as f64 / t0.elapsed().as_secs_f64()
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run());
}

async fn run() {
    let n = env_or("ZT_BENCH_EVENTS", 40_000);
    let mut kafka = kafka_config();
    let (mut broker, bootstrap, storage) = zt_benches::bench_broker();
    kafka.bootstrap_servers = bootstrap;
    kafka.producer.linger_ms = 5;
    let topics: TopicsConfig = fresh_topics(&kafka, 4).await;
    let producer = zt_kafka::build_producer(&kafka).unwrap();
    let encoded: Vec<(String, String, Vec<u8>)> = (0..n)
        .map(|i| {
            let e = event((i * 7919) % n);
            (
                topics.events(e.source),
                e.event_id.clone(),
                encode(&e).unwrap(),
            )
        })
        .collect();
    let mut futs = Vec::with_capacity(n);
    for (t, k, v) in &encoded {
        futs.push(producer.send(
            FutureRecord::to(t).key(k).payload(v),
            Duration::from_secs(60),
        ));
    }
    for f in futs {
        f.await.map_err(|(e, _)| e).unwrap();
    }
    let inputs: Vec<String> = Source::ALL.into_iter().map(|s| topics.events(s)).collect();

    let raw_identity = passthrough(&kafka, &inputs, &topics.funnels(), n).await;

    let shutdown = Shutdown::new();
    let ic = zt_process::IdentityConfig {
        group_id: format!("{}-identity", topics.prefix),
        ..Default::default()
    };
    let params = zt_process::IdentityParams {
        kafka: kafka.clone(),
        topics: topics.clone(),
        identity: ic.clone(),
    };
    let reg = prometheus::Registry::new();
    let health = Health::new();
    let sd = shutdown.clone();
    let r2 = reg.clone();
    let task =
        tokio::spawn(async move { zt_process::identity::run(params, &r2, &health, sd).await });
    let identity = measure(
        &kafka,
        &reg,
        "zt_identity_events_total",
        &ic.group_id,
        &inputs,
        n,
    )
    .await;
    shutdown.trigger();
    task.await.unwrap().unwrap();

    let resolved = vec![topics.events_resolved()];
    let raw_profiles = passthrough(&kafka, &resolved, &topics.funnels(), n).await;
    let shutdown = Shutdown::new();
    let pc = zt_process::ProfilesConfig {
        group_id: format!("{}-profiles", topics.prefix),
        ..Default::default()
    };
    let params = zt_process::ProfilesParams {
        kafka: kafka.clone(),
        topics: topics.clone(),
        profiles: pc.clone(),
    };
    let reg = prometheus::Registry::new();
    let health = Health::new();
    let sd = shutdown.clone();
    let r2 = reg.clone();
    let task =
        tokio::spawn(async move { zt_process::profiles::run(params, &r2, &health, sd).await });
    let p_inputs = vec![
        topics.events_resolved(),
        topics.identity_merges(),
        topics.profiles_transfers(),
    ];
    let profiles = measure(
        &kafka,
        &reg,
        "zt_profiles_records_total",
        &pc.group_id,
        &p_inputs,
        n,
    )
    .await;
    shutdown.trigger();
    task.await.unwrap().unwrap();

    // Funnels read the same input as profiles: the same passthrough is their raw limit.
    let shutdown = Shutdown::new();
    let fc = zt_process::FunnelsConfig {
        group_id: format!("{}-funnels", topics.prefix),
        ..Default::default()
    };
    let params = zt_process::FunnelsParams {
        kafka: kafka.clone(),
        topics: topics.clone(),
        funnels: fc.clone(),
    };
    let reg = prometheus::Registry::new();
    let health = Health::new();
    let sd = shutdown.clone();
    let r2 = reg.clone();
    let task =
        tokio::spawn(async move { zt_process::funnels::run(params, &r2, &health, sd).await });
    let f_inputs = vec![
        topics.events_resolved(),
        topics.identity_merges(),
        topics.funnels_transfers(),
    ];
    let funnels = measure(
        &kafka,
        &reg,
        "zt_funnels_records_total",
        &fc.group_id,
        &f_inputs,
        n,
    )
    .await;
    shutdown.trigger();
    task.await.unwrap().unwrap();

    println!("broker: {storage}; {n} events, 4 partitions per topic");
    println!("passthrough (sources -> topic)   {raw_identity:>10.0} events/s");
    println!(
        "identity                         {identity:>10.0} events/s   ratio {:.2}",
        identity / raw_identity
    );
    println!("passthrough (resolved -> topic)  {raw_profiles:>10.0} events/s");
    println!(
        "profiles                         {profiles:>10.0} events/s   ratio {:.2}",
        profiles / raw_profiles
    );
    println!(
        "funnels                          {funnels:>10.0} events/s   ratio {:.2}",
        funnels / raw_profiles
    );
    println!("(each clock starts after the stage's first batch, which is not counted)");
    if let Some(b) = broker.as_mut() {
        let _ = b.kill();
        let _ = b.wait();
    }
}
