//! `zt sink` loading `<prefix>.funnels` (the `zt process funnels` output,
//! crates/zt-process/src/funnel.rs) into `funnel_progress` and `experiment_progress`, with
//! the real binary, broker and ClickHouse 18.16 (tables and views made by `zt migrate`,
//! `0011_funnels_stream.sql`):
//!
//! - hand-written `FunnelRow` / `ExperimentRow` records become exactly the hand-written rows
//!   under `FINAL`: a later, higher version of a person's row wins, a stale lower version
//!   sent after it loses (the version is the record's `version`, not its offset), a
//!   merged-away person's row (deleted = 1, version 2^62) wins and drops out of the views;
//! - a tombstone is skipped; a record of unknown `kind` is dead-lettered naming `kind`;
//! - a second run under a new consumer group adds no row (exact-offset resume over both
//!   tables of the topic);
//! - `kpi_funnel_stream` and `kpi_ab_test_stream` equal numbers worked out by hand, the A/B
//!   statistics recomputed here with the textbook formulas (normal CDF by numerical
//!   integration, not erf);
//! - negative control: merges are stopped on both tables, so the superseded rows stay in
//!   the parts; the same views built without `FINAL` give different numbers, so the
//!   assertions above can fail.

mod sink_support;

use std::time::{Duration, Instant};

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::json;
use sink_support::*;
use zt_integration_tests::*;
use zt_kafka::topics::TopicSpec;
use zt_kafka::{ConsumerOptions, build_consumer, build_producer, create_topics};
use zt_model::DeadLetter;
use zt_process::funnel::{DELETED_VERSION, ExperimentRow, FunnelRow};

/// 2024-01-05 10:00 UTC.
const ENTRY_MS: i64 = 1_704_448_800_000;
const EXP: &str = "exp_checkout";

async fn wait_for(what: &str, timeout: Duration, mut f: impl AsyncFnMut() -> bool) {
    let until = Instant::now() + timeout;
    while Instant::now() < until {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("timed out waiting for {what}");
}

fn committed(group: &str, topic: &str) -> Option<i64> {
    let c = build_consumer(
        &kafka_config(),
        &ConsumerOptions {
            group_id: group.to_owned(),
            auto_commit: false,
        },
    )
    .ok()?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, 0);
    let got = c.committed_offsets(tpl, Duration::from_secs(10)).ok()?;
    match got.elements().first()?.offset() {
        Offset::Offset(o) => Some(o),
        _ => None,
    }
}

/// Sends one record (`None`: a tombstone); its offset.
async fn send(p: &FutureProducer, topic: &str, key: &str, value: Option<Vec<u8>>) -> i64 {
    let mut r = FutureRecord::<str, Vec<u8>>::to(topic).key(key);
    if let Some(v) = &value {
        r = r.payload(v);
    }
    let d = p
        .send(r, Duration::from_secs(30))
        .await
        .map_err(|(e, _)| e)
        .expect("delivery");
    assert_eq!(d.partition, 0);
    d.offset
}

fn funnel(person: &str, level: u8, device: &str, version: u64, deleted: u8) -> FunnelRow {
    FunnelRow {
        kind: "funnel".into(),
        funnel_id: "ecommerce".into(),
        person_id: person.into(),
        level,
        entry_at_ms: if level == 0 { 0 } else { ENTRY_MS },
        channel: "douyin".into(),
        campaign: "cny".into(),
        device: device.into(),
        experiment_id: String::new(),
        variant: String::new(),
        version,
        deleted,
    }
}

fn exposure(person: &str, variant: &str, converted: bool, version: u64) -> ExperimentRow {
    ExperimentRow {
        kind: "experiment".into(),
        experiment_id: EXP.into(),
        person_id: person.into(),
        variant: variant.into(),
        exposed_at_ms: ENTRY_MS,
        converted: u8::from(converted),
        converted_at_ms: if converted { ENTRY_MS + 60_000 } else { 0 },
        version,
        deleted: 0,
    }
}

#[derive(Debug, PartialEq, serde::Deserialize, clickhouse::Row)]
struct FunnelOut {
    person_id: String,
    level: u8,
    entry_at_ms: i64,
    device: String,
    version: u64,
    deleted: u8,
}

#[derive(Debug, PartialEq, serde::Deserialize, clickhouse::Row)]
struct StepOut {
    day: String,
    device: String,
    step: u8,
    persons: u64,
    entered: u64,
    conversion_from_step1: f64,
}

#[derive(Debug, serde::Deserialize, clickhouse::Row)]
struct AbOut {
    variant: String,
    exposed: u64,
    converted: u64,
    control_variant: String,
    is_control: u8,
    uplift_abs: Option<f64>,
    uplift_rel: Option<f64>,
    ci_low: Option<f64>,
    ci_high: Option<f64>,
    z_score: Option<f64>,
    p_value: Option<f64>,
    significant: Option<u8>,
    total_exposed: u64,
    srm_chi2: f64,
    srm_p_value: Option<f64>,
    srm_mismatch: Option<u8>,
}

const AB_COLUMNS: &str = "variant, exposed, converted, control_variant, is_control, \
    uplift_abs, uplift_rel, ci_low, ci_high, z_score, p_value, significant, total_exposed, \
    srm_chi2, srm_p_value, srm_mismatch";

/// Standard normal CDF by Simpson's rule on the density (no erf): Φ(z) for z >= 0.
fn normal_cdf(z: f64) -> f64 {
    let n = 20_000;
    let h = z / f64::from(n);
    let phi = |t: f64| (-t * t / 2.0).exp() / (2.0 * std::f64::consts::PI).sqrt();
    let mut s = phi(0.0) + phi(z);
    for i in 1..n {
        let w = if i % 2 == 1 { 4.0 } else { 2.0 };
        s += w * phi(f64::from(i) * h);
    }
    0.5 + s * h / 3.0
}

/// The textbook two-proportion comparison of treatment (x1 of n1) against control (x0 of
/// n0): (uplift_abs, uplift_rel, ci_low, ci_high, z, two-sided p).
fn two_proportions(x0: f64, n0: f64, x1: f64, n1: f64) -> (f64, f64, f64, f64, f64, f64) {
    let (p0, p1) = (x0 / n0, x1 / n1);
    let d = p1 - p0;
    let se = (p1 * (1.0 - p1) / n1 + p0 * (1.0 - p0) / n0).sqrt();
    let pooled = (x0 + x1) / (n0 + n1);
    let z = d / (pooled * (1.0 - pooled) * (1.0 / n0 + 1.0 / n1)).sqrt();
    let p = 2.0 * (1.0 - normal_cdf(z.abs()));
    (d, d / p0, d - 1.959964 * se, d + 1.959964 * se, z, p)
}

fn close(got: Option<f64>, want: f64, what: &str) {
    let g = got.unwrap_or_else(|| panic!("{what} is NULL"));
    assert!((g - want).abs() < 1e-6, "{what}: got {g}, want {want}");
}

async fn count(env: &Env, sql: &str) -> u64 {
    env.client()
        .query(sql)
        .fetch_one::<u64>()
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// `CREATE VIEW` statement `name` of 0011, as a view `<name>_nofinal` reading without FINAL.
fn without_final(name: &str, db: &str) -> String {
    let ddl = include_str!("../../schemas/clickhouse/0011_funnels_stream.sql");
    let head = format!("CREATE VIEW IF NOT EXISTS {{database}}.{name} AS");
    let start = ddl.find(&head).expect("view in 0011");
    let stmt = &ddl[start..start + ddl[start..].find(';').expect("end of statement")];
    stmt.replace(" FINAL", "")
        .replace("_stream", "_nofinal")
        .replace("{database}", db)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn funnel_rows_load_once_and_the_views_see_the_newest_version() {
    let env = setup("funnels", &[], &clickhouse_url()).await;
    let topic = format!("{}.funnels", env.prefix);
    create_topics(
        &kafka_config(),
        &[TopicSpec {
            name: topic.clone(),
            partitions: 1,
            replication_factor: 1,
            compacted: false,
            keep_forever: false,
            purpose: "test",
        }],
    )
    .await
    .expect("create topic");
    // Keep every inserted row in the parts (the negative control below reads them).
    for t in ["funnel_progress", "experiment_progress"] {
        env.client()
            .query(&format!("SYSTEM STOP MERGES {}.{t}", env.database))
            .execute()
            .await
            .expect("stop merges");
    }

    let p = build_producer(&kafka_config()).unwrap();
    let mut records = 0u64;
    let mut put = async |key: String, v: Option<Vec<u8>>| {
        records += 1;
        send(&p, &topic, &key, v).await
    };
    let fkey = |person: &str| format!("funnel:ecommerce:{person}");
    let jv = |r: &FunnelRow| Some(serde_json::to_vec(r).unwrap());
    // Funnel: p1 reaches step 2, later step 4; p2 step 1 (version 2), then a stale
    // version 1 at step 5 arrives late and must lose; p3 step 3, then merged away; p4
    // never entered (level 0); p5 step 1 on android.
    let f_p1_old = put(fkey("p1"), jv(&funnel("p1", 2, "ios", 1, 0))).await;
    put(fkey("p2"), jv(&funnel("p2", 1, "ios", 2, 0))).await;
    put(fkey("p3"), jv(&funnel("p3", 3, "ios", 2, 0))).await;
    put(fkey("p4"), jv(&funnel("p4", 0, "", 1, 0))).await;
    let f_p1 = put(fkey("p1"), jv(&funnel("p1", 4, "ios", 3, 0))).await;
    put(fkey("p2"), jv(&funnel("p2", 5, "ios", 1, 0))).await;
    // The merged-away row, hand-written as the processor writes it.
    let gone = json!({
        "kind": "funnel", "funnel_id": "ecommerce", "person_id": "p3", "level": 3,
        "entry_at_ms": ENTRY_MS, "channel": "douyin", "campaign": "cny", "device": "ios",
        "experiment_id": "", "variant": "", "version": DELETED_VERSION, "deleted": 1
    });
    put(fkey("p3"), Some(serde_json::to_vec(&gone).unwrap())).await;
    put(fkey("p5"), jv(&funnel("p5", 1, "android", 1, 0))).await;
    let funnel_records = 8u64;
    put(fkey("p9"), None).await; // a tombstone
    let mut bad = serde_json::to_value(funnel("p8", 1, "ios", 1, 0)).unwrap();
    bad["kind"] = json!("journey");
    let garbage = serde_json::to_vec(&bad).unwrap();
    let bad_offset = put("journey:x:p8".into(), Some(garbage.clone())).await;

    // Experiment: control c00..c99, c00..c09 converted; treatment t00..t99, t00..t19
    // converted. c00..c04 first come unconverted (version 1), then converted (version 2);
    // c05..c09 come converted (version 2), then a stale unconverted version 1. tm is
    // exposed and converted, then merged away.
    let xkey = |person: &str| format!("experiment:{EXP}:{person}");
    let xv = |r: &ExperimentRow| Some(serde_json::to_vec(r).unwrap());
    for i in 0..5 {
        let c = format!("c{i:02}");
        put(xkey(&c), xv(&exposure(&c, "control", false, 1))).await;
    }
    for i in 0..100 {
        let c = format!("c{i:02}");
        let v = if i < 10 { 2 } else { 1 };
        put(xkey(&c), xv(&exposure(&c, "control", i < 10, v))).await;
        let t = format!("t{i:02}");
        put(xkey(&t), xv(&exposure(&t, "treatment", i < 20, 1))).await;
    }
    for i in 5..10 {
        let c = format!("c{i:02}");
        put(xkey(&c), xv(&exposure(&c, "control", false, 1))).await;
    }
    put(xkey("tm"), xv(&exposure("tm", "treatment", true, 1))).await;
    let mut tm = exposure("tm", "treatment", true, DELETED_VERSION);
    tm.deleted = 1;
    let last = put(xkey("tm"), xv(&tm)).await;
    let experiment_records = 5 + 200 + 5 + 2;
    assert_eq!(records, funnel_records + 2 + experiment_records);
    assert_eq!(last + 1, records as i64);

    let listed = format!(
        "topics = [\"{}\", \"{topic}\"]\n",
        env.topic(zt_model::Source::Erp)
    );
    let write_config = |group: &str| {
        env.write_config(120);
        let text = std::fs::read_to_string(&env.config).unwrap();
        let text = text
            .replace(
                "[kafka.consumer]\n",
                "[kafka.consumer]\nauto_offset_reset = \"earliest\"\n",
            )
            .replace(
                &format!("group_id = \"{}\"", env.group),
                &format!("group_id = \"{group}\""),
            );
        std::fs::write(&env.config, format!("{text}{listed}")).unwrap();
    };
    let mut runs = 0;
    for group in [env.group.clone(), format!("{}-again", env.group)] {
        runs += 1;
        write_config(&group);
        let mut sink = env.spawn_sink(runs, &[]);
        wait_for(
            "the funnels topic committed",
            Duration::from_secs(90),
            async || committed(&group, &topic) == Some(last + 1),
        )
        .await;
        let metrics = env.admin("/metrics").map(|(_, b)| b).unwrap_or_default();
        signal(&sink, "TERM");
        assert!(
            wait_exit(&mut sink, Duration::from_secs(30)).is_some_and(|s| s.success()),
            "sink run {runs} did not stop cleanly:\n{}",
            env.log(runs)
        );
        // The tombstone is counted for funnel_progress; on the second run every row is
        // skipped as well, ClickHouse already holding it.
        let skipped = |t: &str| metric(&metrics, "zt_sink_rows_skipped_total", t);
        let again = if runs == 2 { 1.0 } else { 0.0 };
        assert_eq!(
            skipped("funnel_progress"),
            1.0 + funnel_records as f64 * again,
            "{metrics}"
        );
        assert_eq!(
            skipped("experiment_progress"),
            experiment_records as f64 * again,
            "{metrics}"
        );
        assert_eq!(
            metric(&metrics, "zt_sink_dead_lettered_total", "unmappable"),
            1.0,
            "{metrics}"
        );
        // Without FINAL: one row per record with a value, nothing twice.
        assert_eq!(
            count(&env, "SELECT count() FROM funnel_progress").await,
            funnel_records,
            "run {runs}"
        );
        assert_eq!(
            count(&env, "SELECT count() FROM experiment_progress").await,
            experiment_records,
            "run {runs}"
        );
    }

    // funnel_progress under FINAL equals the expectation.
    let got: Vec<FunnelOut> = env
        .client()
        .query(
            "SELECT person_id, level, entry_at_ms, device, version, deleted \
             FROM funnel_progress FINAL ORDER BY person_id",
        )
        .fetch_all()
        .await
        .unwrap();
    let want = |person: &str, level: u8, device: &str, version: u64, deleted: u8| FunnelOut {
        person_id: person.into(),
        level,
        entry_at_ms: if level == 0 { 0 } else { ENTRY_MS },
        device: device.into(),
        version,
        deleted,
    };
    assert_eq!(
        got,
        vec![
            want("p1", 4, "ios", 3, 0),
            want("p2", 1, "ios", 2, 0),
            want("p3", 3, "ios", DELETED_VERSION, 1),
            want("p4", 0, "", 1, 0),
            want("p5", 1, "android", 1, 0),
        ]
    );
    let p1_offset: i64 = env
        .client()
        .query("SELECT _offset FROM funnel_progress FINAL WHERE person_id = 'p1'")
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(p1_offset, f_p1);
    assert!(f_p1_old < f_p1);

    // experiment_progress under FINAL: 201 persons, tm deleted; 10 + 20 converted.
    let sums = |sql: &'static str| {
        let c = env.client();
        async move {
            c.query(sql)
                .fetch_all::<(String, u64, u64, u64)>()
                .await
                .unwrap()
        }
    };
    assert_eq!(
        sums(
            "SELECT variant, count(), sum(converted), sum(deleted) \
             FROM experiment_progress FINAL GROUP BY variant ORDER BY variant"
        )
        .await,
        vec![
            ("control".to_owned(), 100, 10, 0),
            ("treatment".to_owned(), 101, 21, 1),
        ]
    );

    // kpi_funnel_stream: ios entered 2 (p1 at 4, p2 at 1; p3 merged away), android 1.
    let steps: Vec<StepOut> = env
        .client()
        .query(
            "SELECT toString(day) AS day, device, step, persons, entered, conversion_from_step1 \
             FROM kpi_funnel_stream WHERE funnel_id = 'ecommerce' ORDER BY device, step",
        )
        .fetch_all()
        .await
        .unwrap();
    let step = |device: &str, step: u8, persons: u64, entered: u64| StepOut {
        day: "2024-01-05".into(),
        device: device.into(),
        step,
        persons,
        entered,
        conversion_from_step1: persons as f64 / entered as f64,
    };
    let want_steps = vec![
        step("android", 1, 1, 1),
        step("ios", 1, 2, 2),
        step("ios", 2, 1, 2),
        step("ios", 3, 1, 2),
        step("ios", 4, 1, 2),
    ];
    assert_eq!(steps, want_steps);

    // kpi_ab_test_stream: control 10/100, treatment 20/100.
    let ab = |view: &str| {
        let c = env.client();
        let sql =
            format!("SELECT {AB_COLUMNS} FROM {view} WHERE experiment_id = ? ORDER BY variant");
        async move { c.query(&sql).bind(EXP).fetch_all::<AbOut>().await.unwrap() }
    };
    let rows = ab("kpi_ab_test_stream").await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    let (c, t) = (&rows[0], &rows[1]);
    assert_eq!(
        (c.variant.as_str(), c.exposed, c.converted, c.is_control),
        ("control", 100, 10, 1)
    );
    assert_eq!((c.uplift_abs, c.p_value, c.z_score), (None, None, None));
    assert_eq!(
        (t.variant.as_str(), t.exposed, t.converted, t.is_control),
        ("treatment", 100, 20, 0)
    );
    assert_eq!(t.control_variant, "control");
    let (d, rel, lo, hi, z, pv) = two_proportions(10.0, 100.0, 20.0, 100.0);
    // By hand: se = sqrt(.2*.8/100 + .1*.9/100) = 0.05, CI 0.1 -+ 0.0979982; pooled .15,
    // z = 0.1 / sqrt(.15*.85*.02) = 1.9802951, p = 0.0476704: significant at 5 %.
    assert!((d - 0.1).abs() < 1e-12 && (rel - 1.0).abs() < 1e-12);
    assert!((lo - 0.0020018).abs() < 1e-7 && (hi - 0.1979982).abs() < 1e-7);
    assert!((z - 1.980_295_1).abs() < 1e-6 && (pv - 0.047_670_4).abs() < 1e-6);
    close(t.uplift_abs, d, "uplift_abs");
    close(t.uplift_rel, rel, "uplift_rel");
    close(t.ci_low, lo, "ci_low");
    close(t.ci_high, hi, "ci_high");
    close(t.z_score, z, "z_score");
    close(t.p_value, pv, "p_value");
    assert_eq!(t.significant, Some(1));
    // SRM: 100 against 100, chi2 = 0, p = 1: not flagged.
    for r in [c, t] {
        assert_eq!(r.total_exposed, 200);
        assert!(r.srm_chi2.abs() < 1e-12);
        close(r.srm_p_value, 1.0, "srm_p_value");
        assert_eq!(r.srm_mismatch, Some(0));
    }

    // Negative control: the same views without FINAL. Merges are stopped, so every
    // superseded row is still there and the numbers move (control 110 exposed, treatment
    // 101 and 21 converted with tm's first row, p1's step 2 and p2's stale step 5 counted).
    assert_eq!(
        sums(
            "SELECT variant, count(), sum(converted), sum(deleted) \
             FROM experiment_progress GROUP BY variant ORDER BY variant"
        )
        .await,
        vec![
            ("control".to_owned(), 110, 10, 0),
            ("treatment".to_owned(), 102, 22, 1),
        ]
    );
    for view in [
        "kpi_experiment_conversions_stream",
        "kpi_ab_test_stream",
        "kpi_funnel_stream",
    ] {
        env.client()
            .query(&without_final(view, &env.database))
            .execute()
            .await
            .unwrap_or_else(|e| panic!("{view} without FINAL: {e}"));
    }
    let naive = ab("kpi_ab_test_nofinal").await;
    assert_eq!(
        naive
            .iter()
            .map(|r| (r.variant.as_str(), r.exposed, r.converted))
            .collect::<Vec<_>>(),
        vec![("control", 110, 10), ("treatment", 101, 21)]
    );
    assert_ne!(naive[1].p_value, t.p_value);
    let naive_steps: Vec<StepOut> = env
        .client()
        .query(
            "SELECT toString(day) AS day, device, step, persons, entered, conversion_from_step1 \
             FROM kpi_funnel_nofinal WHERE funnel_id = 'ecommerce' ORDER BY device, step",
        )
        .fetch_all()
        .await
        .unwrap();
    assert_ne!(naive_steps, want_steps);

    // Neither the tombstone nor the dead-lettered record is in a table.
    assert_eq!(
        count(
            &env,
            "SELECT count() FROM funnel_progress WHERE person_id IN ('p8', 'p9')"
        )
        .await,
        0
    );

    // The dead letter names the field.
    let c: StreamConsumer = build_consumer(
        &kafka_config(),
        &ConsumerOptions {
            group_id: unique("zt-it-dlq-reader"),
            auto_commit: false,
        },
    )
    .unwrap();
    c.subscribe(&[env.dlq().as_str()]).unwrap();
    let m = tokio::time::timeout(Duration::from_secs(30), c.recv())
        .await
        .expect("a dead letter arrives")
        .unwrap();
    let dl = zt_model::decode::<DeadLetter>(m.payload().unwrap()).unwrap();
    assert_eq!(dl.reason, "unmappable");
    assert_eq!(dl.stage, "sink");
    assert_eq!(dl.origin_topic.as_deref(), Some(topic.as_str()));
    assert_eq!(dl.origin_offset, Some(bad_offset));
    assert_eq!(dl.original, garbage);
    assert!(
        dl.message.starts_with("kind:"),
        "names the field: {}",
        dl.message
    );
    drop_database(&env).await;
}
