//! Fault tests of `zt sink` with the real binary, broker and ClickHouse 18.16:
//!
//! - ClickHouse killed (`kill -9`) and restarted, then restarted again gracefully, while
//!   the sink loads: nothing lost, nothing duplicated, `/readyz` failing during the outage,
//!   retries bounded (no busy loop). It uses a ClickHouse server of its own, started from
//!   the local stack's config template on free ports, so restarting it cannot disturb the
//!   tests that share the stack's server;
//! - a poison row (ClickHouse refuses it) and an undecodable record: both dead-lettered
//!   with the error (the server's text for the row), read back from the broker, and the
//!   rest of the partition loaded and committed;
//! - the event's resolved `person_id` (set on `zt.events.resolved`) written to the
//!   `person_id` column of every table that has one, and '' where the event has none.

mod sink_support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use sink_support::*;
use zt_integration_tests::*;
use zt_kafka::{ConsumerOptions, build_consumer, build_producer};
use zt_model::{DeadLetter, Payload, Source};

/// A ClickHouse server private to one test.
struct PrivateClickHouse {
    dir: tempfile::TempDir,
    http_port: u16,
    child: Option<Child>,
}

impl PrivateClickHouse {
    fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        let template =
            std::fs::read_to_string(repo.join("deploy/local/clickhouse/config.xml.in")).unwrap();
        let http_port = free_port();
        let d = dir.path().display().to_string();
        for sub in ["data", "tmp", "user_files", "format_schemas", "log"] {
            std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        let config = template
            .replace("@CH_DIR@", &d)
            .replace("@CH_HTTP_PORT@", &http_port.to_string())
            .replace("@CH_TCP_PORT@", &free_port().to_string())
            .replace("@CH_INTERSERVER_PORT@", &free_port().to_string());
        std::fs::write(dir.path().join("config.xml"), config).unwrap();
        std::fs::copy(
            repo.join("deploy/local/clickhouse/users.xml"),
            dir.path().join("users.xml"),
        )
        .unwrap();
        let mut ch = PrivateClickHouse {
            dir,
            http_port,
            child: None,
        };
        ch.launch();
        ch
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    fn launch(&mut self) {
        let child = Command::new("clickhouse-server")
            .arg(format!(
                "--config-file={}",
                self.dir.path().join("config.xml").display()
            ))
            .current_dir(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("clickhouse-server on PATH (deploy/local/stack.sh install)");
        self.child = Some(child);
        let until = Instant::now() + Duration::from_secs(60);
        while Instant::now() < until {
            if http_get(self.http_port, "/ping").is_some_and(|(s, _)| s == 200) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("private ClickHouse did not start");
    }

    fn stop(&mut self, sig: &str) {
        if let Some(mut c) = self.child.take() {
            signal(&c, sig);
            if wait_exit(&mut c, Duration::from_secs(30)).is_none() {
                let _ = c.kill();
            }
        }
    }
}

impl Drop for PrivateClickHouse {
    fn drop(&mut self) {
        self.stop("KILL");
    }
}

async fn wait_for(what: &str, timeout: Duration, mut f: impl AsyncFnMut() -> bool) {
    let until = Instant::now() + timeout;
    while Instant::now() < until {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clickhouse_restarted_mid_stream_loses_and_duplicates_nothing() {
    let mut ch = PrivateClickHouse::start();
    let env = setup(
        "chrestart",
        &[(Source::Erp, 2), (Source::Tracking, 2)],
        &ch.url(),
    )
    .await;
    let mut produced = produce(&env, 0..600).await;
    let mut sink = env.spawn_sink(1, &[]);
    wait_for("first rows", Duration::from_secs(60), async || {
        events_count(&env).await > 0
    })
    .await;

    // kill -9 ClickHouse while the sink loads, and keep producing during the outage.
    ch.stop("KILL");
    produced.extend(produce(&env, 600..1_200).await);
    wait_for("/readyz to fail", Duration::from_secs(30), async || {
        env.admin("/readyz")
            .is_some_and(|(s, b)| s == 503 && b.contains("clickhouse"))
    })
    .await;
    assert_eq!(
        env.admin("/livez").map(|(s, _)| s),
        Some(200),
        "live while waiting"
    );
    let outage = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let metrics = env.admin("/metrics").map(|(_, b)| b).unwrap_or_default();
    let retries = metric(&metrics, "zt_sink_retries_total", "");
    ch.launch();
    let outage_secs = outage.elapsed().as_secs_f64() + 3.0;
    // Capped exponential backoff (50 ms doubling to 1 s): a handful of retries per
    // second at most, not a busy loop.
    assert!(
        retries >= 1.0 && retries < 10.0 * outage_secs,
        "retries {retries} over ~{outage_secs:.0} s"
    );

    // A graceful restart in the middle of the next stretch.
    produced.extend(produce(&env, 1_200..1_800).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    ch.stop("TERM");
    ch.launch();

    wait_for("every event", Duration::from_secs(120), async || {
        events_count(&env).await >= 1_800
    })
    .await;
    wait_for("/readyz to pass", Duration::from_secs(30), async || {
        env.admin("/readyz").is_some_and(|(s, _)| s == 200)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    signal(&sink, "TERM");
    let status = wait_exit(&mut sink, Duration::from_secs(30));
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}\n{}",
        env.log(1)
    );
    let problems = check_exactly_once(&env, &produced).await;
    assert_no_problems(&problems);
    ch.stop("TERM");
}

async fn send(p: &FutureProducer, topic: &str, bytes: &[u8]) -> (i32, i64) {
    let d = p
        .send(
            FutureRecord::<(), [u8]>::to(topic).payload(bytes),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(e, _)| e)
        .expect("delivery");
    (d.partition, d.offset)
}

fn committed(env: &Env, topic: &str) -> Option<i64> {
    committed_at(env, topic, 0)
}

fn committed_at(env: &Env, topic: &str, partition: i32) -> Option<i64> {
    let c = build_consumer(
        &kafka_config(),
        &ConsumerOptions {
            group_id: env.group.clone(),
            auto_commit: false,
        },
    )
    .ok()?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, partition);
    let got = c.committed_offsets(tpl, Duration::from_secs(10)).ok()?;
    match got.elements().first()?.offset() {
        Offset::Offset(o) => Some(o),
        _ => None,
    }
}

/// A server-side data rule, as an operator might add: orders must not be negative. The
/// model and the sink accept such an order; ClickHouse refuses the row.
async fn guard_orders(env: &Env) {
    env.client()
        .query("ALTER TABLE orders ADD COLUMN _guard UInt8 MATERIALIZED throwIf(total_minor < 0)")
        .execute()
        .await
        .unwrap();
}

/// The ERP events' indexes of the generator's first 1,000.
fn erp_events() -> Vec<u32> {
    (0..1_000)
        .filter(|i| event(*i).0.source == Source::Erp)
        .collect()
}

/// Produces the ERP order `i` with a negative total (refused by [`guard_orders`]) as
/// `event_id`, without a key.
async fn send_poison(env: &Env, i: u32, event_id: &str) -> Produced {
    let topic = env.topic(Source::Erp);
    let (mut bad, lines) = event(i);
    bad.event_id = event_id.into();
    let Payload::Order(o) = &mut bad.payload else {
        unreachable!()
    };
    o.total_minor = -1;
    let bytes = zt_model::encode(&bad).unwrap();
    let p = build_producer(&kafka_config()).unwrap();
    let (partition, offset) = send(&p, &topic, &bytes).await;
    Produced {
        topic,
        partition,
        offset,
        source: Source::Erp,
        event_id: bad.event_id,
        lines,
        bytes,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_row_is_dead_lettered_and_the_partition_goes_on() {
    let env = setup("poison", &[], &clickhouse_url()).await;
    guard_orders(&env).await;
    let topic = env.topic(Source::Erp);
    let erp = erp_events();
    let mut produced = produce(&env, erp[..150].iter().copied()).await;
    let p = build_producer(&kafka_config()).unwrap();
    let poison = send_poison(&env, erp[150], "evt-poison").await;
    let (pp, poison_off, poison_bytes) = (poison.partition, poison.offset, poison.bytes.clone());
    produced.push(poison);
    produced.extend(produce(&env, erp[151..250].iter().copied()).await);
    let garbage = b"\x00\x00\x00\x00\x07not avro".to_vec();
    let (_, garbage_off) = send(&p, &topic, &garbage).await;
    produced.extend(produce(&env, erp[250..].iter().copied()).await);
    let last = produced.iter().map(|p| p.offset).max().unwrap();

    let mut sink = env.spawn_sink(1, &[]);
    wait_for(
        "the whole partition committed",
        Duration::from_secs(90),
        async || committed(&env, &topic) == Some(last + 1),
    )
    .await;
    let metrics = env.admin("/metrics").map(|(_, b)| b).unwrap_or_default();
    signal(&sink, "TERM");
    assert!(wait_exit(&mut sink, Duration::from_secs(30)).is_some_and(|s| s.success()));

    // Everything but the poison's orders row is there exactly once; the poison's events
    // and order_lines rows are there (those tables accepted it).
    let poison_key = (topic.clone(), pp, poison_off);
    let problems = check_with(&env, &produced, &[(poison_key, "orders")]).await;
    assert_no_problems(&problems);

    // The dead letters, read back from the broker.
    let c: StreamConsumer = build_consumer(
        &kafka_config(),
        &ConsumerOptions {
            group_id: unique("zt-it-dlq-reader"),
            auto_commit: false,
        },
    )
    .unwrap();
    c.subscribe(&[env.dlq().as_str()]).unwrap();
    let mut letters = Vec::new();
    while letters.len() < 2 {
        let m = tokio::time::timeout(Duration::from_secs(30), c.recv())
            .await
            .expect("dead letters arrive")
            .unwrap();
        letters.push(zt_model::decode::<DeadLetter>(m.payload().unwrap()).unwrap());
    }
    assert!(
        tokio::time::timeout(Duration::from_secs(2), c.recv())
            .await
            .is_err(),
        "exactly two dead letters"
    );
    letters.sort_by_key(|d| d.origin_offset);
    let (rejected, undecodable) = (&letters[0], &letters[1]);
    assert_eq!(rejected.reason, "clickhouse_rejected");
    assert_eq!(rejected.stage, "sink");
    assert_eq!(rejected.source, "erp");
    assert_eq!(rejected.origin_topic.as_deref(), Some(topic.as_str()));
    assert_eq!(rejected.origin_offset, Some(poison_off));
    assert_eq!(rejected.original, poison_bytes);
    assert!(
        rejected.message.starts_with("table orders: Code: 395")
            && rejected.message.contains("throwIf"),
        "the server's error: {}",
        rejected.message
    );
    assert_eq!(undecodable.reason, "decode_failed");
    assert_eq!(undecodable.origin_offset, Some(garbage_off));
    assert_eq!(undecodable.original, garbage);
    assert_eq!(
        metric(
            &metrics,
            "zt_sink_dead_lettered_total",
            "clickhouse_rejected"
        ),
        1.0
    );
    assert_eq!(
        metric(&metrics, "zt_sink_dead_lettered_total", "decode_failed"),
        1.0
    );
    // The other metrics of the contract are exported.
    for name in [
        "zt_sink_rows_inserted_total{table=\"orders\"}",
        "zt_sink_bytes_inserted_total{table=\"events\"}",
        "zt_sink_insert_duration_seconds_bucket{table=\"order_lines\"",
        "zt_sink_batch_rows_bucket",
        "zt_sink_consumer_lag_records{partition=\"0\"",
        "zt_sink_records_received_total",
    ] {
        assert!(metrics.contains(name), "{name} missing:\n{metrics}");
    }
    // Rows counted as inserted match the table: every record's orders row but the poison.
    let erp_records = produced.len() as f64;
    assert_eq!(
        metric(&metrics, "zt_sink_rows_inserted_total", "table=\"orders\""),
        erp_records - 1.0
    );
    drop_database(&env).await;
}

/// A flush inserts the records of every partition with one INSERT per table. When
/// ClickHouse rejects such an INSERT, each partition re-reads which of its records the
/// table holds and loads the rest on its own: the poison is dead-lettered and every other
/// record of both partitions is stored once. (The oracle is the broker's offsets of what
/// was produced; the log line shows the shared INSERT was the one rejected.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_insert_of_several_partitions_is_loaded_partition_by_partition() {
    let env = setup("poison_shared", &[(Source::Erp, 2)], &clickhouse_url()).await;
    // One flush (by age) carries everything: both partitions in each INSERT.
    env.write_config(100_000);
    guard_orders(&env).await;
    let topic = env.topic(Source::Erp);
    let erp = erp_events();
    let mut produced = produce(&env, erp[..100].iter().copied()).await;
    let poison = send_poison(&env, erp[100], "evt-poison-shared").await;
    let (pp, poison_off) = (poison.partition, poison.offset);
    produced.push(poison);
    produced.extend(produce(&env, erp[101..200].iter().copied()).await);
    let ends: BTreeMap<i32, i64> = produced.iter().fold(BTreeMap::new(), |mut m, x| {
        let e = m.entry(x.partition).or_insert(0);
        *e = (*e).max(x.offset + 1);
        m
    });
    assert_eq!(ends.len(), 2, "records on both partitions: {ends:?}");

    let mut sink = env.spawn_sink(1, &[]);
    wait_for(
        "both partitions committed",
        Duration::from_secs(90),
        async || {
            ends.iter()
                .all(|(p, end)| committed_at(&env, &topic, *p) == Some(*end))
        },
    )
    .await;
    let metrics = env.admin("/metrics").map(|(_, b)| b).unwrap_or_default();
    signal(&sink, "TERM");
    assert!(wait_exit(&mut sink, Duration::from_secs(30)).is_some_and(|s| s.success()));
    let log = env.log(1);
    assert!(
        log.contains("insert rejected; loading its partitions one by one"),
        "the rejected INSERT carried both partitions:\n{log}"
    );
    let problems = check_with(
        &env,
        &produced,
        &[((topic.clone(), pp, poison_off), "orders")],
    )
    .await;
    assert_no_problems(&problems);
    assert_eq!(
        metric(
            &metrics,
            "zt_sink_dead_lettered_total",
            "clickhouse_rejected"
        ),
        1.0
    );
    drop_database(&env).await;
}

/// A sink that has read its partitions to the end flushes at once when it holds at least a
/// quarter of a batch, without waiting out `batch_max_age_ms` (an hour here); a trickle
/// below a quarter waits for the age (here: is still not stored a few seconds later), and
/// shutdown stores it. Oracle: the broker's offsets of what was produced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caught_up_with_a_quarter_batch_flushes_at_once_and_a_trickle_waits() {
    let env = setup("caughtup", &[], &clickhouse_url()).await;
    // 400 events make 400 `events` rows (about 1,100 in all): above a quarter of 1,200 in
    // one table, below a full batch in every table.
    env.write_config_aged(1_200, 3_600_000);
    let mut produced = produce(&env, 0..400).await;
    let mut sink = env.spawn_sink(1, &[]);
    wait_for(
        "the 400 events stored",
        Duration::from_secs(90),
        async || events_count(&env).await == 400,
    )
    .await;
    let metrics = env.admin("/metrics").map(|(_, b)| b).unwrap_or_default();
    assert!(
        metric(&metrics, "zt_sink_flushes_total", "caught_up") >= 1.0,
        "no caught-up flush counted:\n{metrics}"
    );
    assert_eq!(metric(&metrics, "zt_sink_flushes_total", "\"age\""), 0.0);
    assert_eq!(metric(&metrics, "zt_sink_flushes_total", "\"full\""), 0.0);

    // A trickle (five events, a few rows) is held: no quarter batch, and an hour's age.
    produced.extend(produce(&env, 400..405).await);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        events_count(&env).await,
        400,
        "a trickle was flushed at once"
    );
    signal(&sink, "TERM");
    assert!(wait_exit(&mut sink, Duration::from_secs(30)).is_some_and(|s| s.success()));
    let problems = check_exactly_once(&env, &produced).await;
    assert_no_problems(&problems);
    drop_database(&env).await;
}

#[derive(Debug, serde::Deserialize, clickhouse::Row)]
struct PersonIds {
    event_id: String,
    person_ids: Vec<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn person_id_lands_in_every_table_with_the_column() {
    let env = setup("person", &[], &clickhouse_url()).await;
    let p = build_producer(&kafka_config()).unwrap();
    // Every source, each table's events both with a person id (as on zt.events.resolved)
    // and without (as on the source topics).
    let mut produced = Vec::new();
    let mut want_person: BTreeMap<String, String> = BTreeMap::new();
    for i in 0..80u32 {
        let (mut ev, lines) = event(i);
        if i % 3 != 0 {
            ev.person_id = Some(format!("p_{i:04}_人"));
        }
        let bytes = zt_model::encode(&ev).unwrap();
        let topic = env.topic(ev.source);
        let (partition, offset) = send(&p, &topic, &bytes).await;
        want_person.insert(
            ev.event_id.clone(),
            ev.person_id.clone().unwrap_or_default(),
        );
        produced.push(Produced {
            topic,
            partition,
            offset,
            source: ev.source,
            event_id: ev.event_id,
            lines,
            bytes,
        });
    }
    let n = produced.len() as u64;

    let mut sink = env.spawn_sink(1, &[]);
    wait_for("every event", Duration::from_secs(90), async || {
        events_count(&env).await >= n
    })
    .await;
    signal(&sink, "TERM");
    assert!(wait_exit(&mut sink, Duration::from_secs(30)).is_some_and(|s| s.success()));
    let problems = check_exactly_once(&env, &produced).await;
    assert!(problems.is_empty(), "{problems:#?}");

    // Per table: each event's rows carry exactly the event's person id ('' for none).
    let feeds = |table: &str, s: Source| match table {
        "events" => true,
        "orders" | "order_lines" => s == Source::Erp,
        "shipments" => s == Source::Logistics,
        "tickets" => s == Source::Service,
        "customers" => s == Source::Crm,
        _ => unreachable!("{table}"),
    };
    for table in [
        "events",
        "orders",
        "order_lines",
        "shipments",
        "tickets",
        "customers",
    ] {
        let want: BTreeMap<String, Vec<String>> = produced
            .iter()
            .filter(|p| feeds(table, p.source))
            .map(|p| (p.event_id.clone(), vec![want_person[&p.event_id].clone()]))
            .collect();
        // The check can fail: the table has events with and without a person id.
        assert!(
            want.values().any(|v| v[0].is_empty()) && want.values().any(|v| !v[0].is_empty()),
            "{table}: {want:?}"
        );
        let got: BTreeMap<String, Vec<String>> = env
            .client()
            .query(&format!(
                "SELECT event_id, groupUniqArray(person_id) AS person_ids FROM {table} \
                 GROUP BY event_id"
            ))
            .fetch_all::<PersonIds>()
            .await
            .unwrap()
            .into_iter()
            .map(|r| (r.event_id, r.person_ids))
            .collect();
        assert_eq!(got, want, "{table}");
    }
    drop_database(&env).await;
}

/// Loads `events` and then `repeats` (the same records again at new offsets, as an
/// upstream replay writes them) with one sink run each, and returns (rows, distinct ids).
async fn load_with_repeats(env: &Env, envs: &[(&str, &str)]) -> (u64, u64) {
    let p = build_producer(&kafka_config()).unwrap();
    let mut last: BTreeMap<String, i64> = BTreeMap::new();
    let sends = |batch: Vec<u32>| {
        let p = p.clone();
        async move {
            let mut out = Vec::new();
            for i in batch {
                let (ev, _) = event(i);
                let topic = env.topic(ev.source);
                let (_, offset) = send(&p, &topic, &zt_model::encode(&ev).unwrap()).await;
                out.push((topic, offset));
            }
            out
        }
    };
    // Run 1: events 0..20, then 0..5 again inside the same run.
    let mut batches = vec![(0..20).chain(0..5).collect::<Vec<u32>>()];
    // Run 2 (a restarted sink, whose window starts from ClickHouse): 5..10 again and
    // new events 20..25.
    batches.push((5..10).chain(20..25).collect());
    for (run, batch) in batches.into_iter().enumerate() {
        for (t, o) in sends(batch).await {
            let e = last.entry(t).or_insert(o);
            *e = (*e).max(o);
        }
        let mut sink = env.spawn_sink(run + 1, envs);
        wait_for(
            "every record committed",
            Duration::from_secs(90),
            async || {
                last.iter()
                    .all(|(t, o)| committed(env, t).is_some_and(|c| c > *o))
            },
        )
        .await;
        signal(&sink, "TERM");
        assert!(wait_exit(&mut sink, Duration::from_secs(30)).is_some_and(|s| s.success()));
    }
    let rows = zt_report::query_rows(
        &env.client(),
        "SELECT count() AS n, uniqExact(event_id) AS u FROM events",
    )
    .await
    .unwrap();
    let num = |k: &str| -> u64 {
        match &rows[0][k] {
            serde_json::Value::String(s) => s.parse().unwrap(),
            v => v.as_u64().unwrap(),
        }
    };
    (num("n"), num("u"))
}

/// An event repeated upstream at a new offset of the same partition (the identity
/// processor re-sending after a crash, found by the fault matrix) is stored once: within
/// one sink run, and after a restart (the window is seeded from ClickHouse). Negative
/// control: with `dedup_window_records = 0` the repeats are stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_repeated_upstream_is_stored_once_also_across_a_restart() {
    let env = setup("dedup", &[], &clickhouse_url()).await;
    assert_eq!(load_with_repeats(&env, &[]).await, (25, 25));
    drop_database(&env).await;

    let control = setup("nodedup", &[], &clickhouse_url()).await;
    assert_eq!(
        load_with_repeats(&control, &[("ZT__SINK__DEDUP_WINDOW_RECORDS", "0")]).await,
        (35, 25),
        "without the window every repeat is stored"
    );
    drop_database(&control).await;
}
