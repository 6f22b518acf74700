//! `zt replay backfill run|finish` (docs/operations.md, "Backfill") on the whole pipeline.
//!
//! The real components run as child processes (`zt_demo::demo::Pipeline`) on fresh topics
//! and a fresh database. A seeded world goes in over HTTP in three parts; one customer is
//! erased after the first two. Then both processors' outputs are rebuilt as version 2,
//! the funnels with a changed definition (the one-step funnel `paid` instead of the
//! default `ecommerce`), the processors and the sink are switched to version 2, the third
//! part goes in, and `finish` removes version 1's rows. The oracles:
//!
//! - where the backfill starts: the records it reports having to process equal the
//!   broker's offsets (every record of `events.resolved` and `identity.merges` from the
//!   beginning; with `--from` a time between the first and second part, exactly the
//!   records after it; a run continuing an interrupted one, from the group's committed
//!   offsets);
//! - the rebuilt profiles equal a recomputation from the paid orders in ClickHouse
//!   (`zt_demo::verify::profiles_match_orders`), and the persons the `paid` funnel counts
//!   are exactly those with a paid order there;
//! - ClickHouse holds version 2 only (every row's `_topic`), the old funnel not at all;
//!   the control: before `finish` version 1's rows are there and the check fails;
//! - the erased person does not come back through the backfill.

mod sink_support;

use std::collections::BTreeSet;
use std::time::Duration;

use clickhouse::Client;
use serde_json::Value;
use sink_support::{run_zt as zt, start_pipeline};
use zt_demo::demo::stages;
use zt_demo::drain::wait_drained;
use zt_demo::scenario::{Params, generate};
use zt_demo::send::{SendOptions, send};
use zt_integration_tests::kafka_config;
use zt_kafka::{KafkaConfig, TopicsConfig};
use zt_model::Source;

/// Version 2 of the funnels: one funnel, `paid`, a person's first paid order.
const PAID_FUNNEL: &str = r#"
[[funnels.definitions]]
id = "paid"
window_ms = 86400000
[[funnels.definitions.steps]]
name = "order_paid"
event_type = "order.paid"
"#;

async fn strings(ch: &Client, sql: &str, col: &str) -> Vec<String> {
    zt_report::query_rows(ch, sql)
        .await
        .expect(sql)
        .iter()
        .map(|r| match &r[col] {
            Value::String(s) => s.clone(),
            v => v.to_string(),
        })
        .collect()
}

async fn number(ch: &Client, sql: &str) -> u64 {
    strings(ch, sql, "n").await[0].parse().expect(sql)
}

/// Records on the inputs a backfill reads from the beginning (transfers are its own).
fn input_records(kafka: &KafkaConfig, t: &TopicsConfig) -> i64 {
    [t.events_resolved(), t.identity_merges()]
        .iter()
        .map(|topic| {
            zt_demo::drain::watermarks(kafka, topic)
                .unwrap()
                .values()
                .map(|(_, h)| h)
                .sum::<i64>()
        })
        .sum()
}

/// Runs `zt replay backfill <args>` with `config`; its standard output, once it succeeded.
fn backfill(config: &std::path::Path, args: &[&str]) -> String {
    let mut all = vec!["replay", "backfill"];
    all.extend_from_slice(args);
    let out = zt(config, &all, &[]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "zt replay backfill {}: {stdout}\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// "... caught up: N input records ..." of `zt replay backfill run`.
fn reported_records(stdout: &str) -> i64 {
    stdout
        .split("caught up: ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no record count in {stdout}"))
}

/// Rows of the output tables not loaded from `funnels`/`profiles` topics of version 2.
async fn rows_of_other_versions(ch: &Client, prefix: &str) -> u64 {
    let mut n = 0;
    for (table, topic) in [
        ("profiles", format!("{prefix}.profiles.v2")),
        ("funnel_progress", format!("{prefix}.funnels.v2")),
        ("experiment_progress", format!("{prefix}.funnels.v2")),
    ] {
        n += number(
            ch,
            &format!("SELECT count() AS n FROM {table} WHERE _topic != '{topic}'"),
        )
        .await;
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfilled_version_replaces_the_live_one_and_keeps_erased_persons_out() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kafka = kafka_config();
    let (mut pipeline, config) = start_pipeline(dir.path(), "zt_backfill_it").await;
    let live_config = std::fs::read_to_string(&config).unwrap();
    let t = pipeline.topics.clone();
    let prefix = t.prefix.clone();
    let ch = pipeline.clickhouse.client();
    let world = generate(Params::new(41, 40, 14, pipeline.started_ms));
    let n = world.records.len();
    let parts = [
        &world.records[..n * 45 / 100],
        &world.records[n * 45 / 100..n * 90 / 100],
        &world.records[n * 90 / 100..],
    ];
    let opts = SendOptions {
        url: pipeline.ingest_url.clone(),
        keys: pipeline.keys.clone(),
        batch: 100,
        rate: Some(800.0),
        progress: false,
        record_acks: false,
        progress_counter: None,
    };
    let drain = |t: TopicsConfig| {
        let kafka = kafka.clone();
        async move {
            wait_drained(
                &kafka,
                &stages(&t),
                Duration::from_secs(240),
                Duration::from_secs(1),
                |_| {},
            )
            .await
            .expect("the pipeline drains");
        }
    };

    // Parts 1 and 2, with a moment between them for `--from`.
    let sent = send(parts[0], &opts).await.expect("send part 1");
    assert_eq!(sent.rejected, 0, "{:?}", sent.first_rejections);
    drain(t.clone()).await;
    let after_part1 = input_records(&kafka, &t);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let between = zt_demo::now_ms();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let sent = send(parts[1], &opts).await.expect("send part 2");
    assert_eq!(sent.rejected, 0, "{:?}", sent.first_rejections);
    drain(t.clone()).await;

    // Erase a customer with orders (by CRM customer id).
    let victim = world
        .records
        .iter()
        .filter(|r| r.source == Source::Erp)
        .filter_map(|r| r.body["customer_id"].as_str())
        .find(|c| {
            parts[..2].iter().any(|p| {
                p.iter()
                    .any(|r| r.source == Source::Crm && r.body["customer_id"] == *c)
            })
        })
        .expect("a registered customer with orders")
        .to_owned();
    let victim_persons = strings(
        &ch,
        &format!("SELECT DISTINCT person_id FROM identity_links FINAL WHERE id_value = '{victim}'"),
        "person_id",
    )
    .await;
    assert!(!victim_persons.is_empty(), "the victim has a person");
    let plist = victim_persons
        .iter()
        .map(|p| format!("'{p}'"))
        .collect::<Vec<_>>()
        .join(",");
    let victim_rows = |ch: Client| {
        let plist = plist.clone();
        async move {
            let mut n = 0;
            for table in ["profiles", "funnel_progress", "experiment_progress"] {
                n += number(
                    &ch,
                    &format!("SELECT count() AS n FROM {table} WHERE person_id IN ({plist})"),
                )
                .await;
            }
            n
        }
    };
    assert!(
        victim_rows(ch.clone()).await > 0,
        "control: the victim has rows before the erasure"
    );
    let out = zt(
        &config,
        &["erase", "--crm-customer-id", &victim, "--yes"],
        &[],
    );
    assert!(
        out.status.success(),
        "zt erase: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let all_inputs = input_records(&kafka, &t);

    // Version 2: the same configuration with the changed funnels.
    let v2_config = dir.path().join("zt-v2.toml");
    std::fs::write(&v2_config, format!("{live_config}\n{PAID_FUNNEL}")).unwrap();
    let refused = zt(
        &v2_config,
        &["replay", "backfill", "run", "funnels", "--version", "1"],
        &[],
    );
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && err.contains("topics.funnels_version"),
        "{err}"
    );
    let refused = zt(
        &v2_config,
        &["replay", "backfill", "run", "identity", "--version", "2"],
        &[],
    );
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && err.contains("cannot be backfilled"),
        "{err}"
    );
    for processor in ["funnels", "profiles"] {
        let stdout = backfill(&v2_config, &["run", processor, "--version", "2", "-q"]);
        assert_eq!(
            reported_records(&stdout),
            all_inputs,
            "backfill {processor} from the beginning reads every input record: {stdout}"
        );
        assert!(stdout.contains("started"), "{stdout}");
    }
    // From a time: exactly the records after it (a third version, never switched to).
    let from = between.to_string();
    let stdout = backfill(
        &v2_config,
        &["run", "funnels", "--version", "3", "--from", &from, "-q"],
    );
    assert_eq!(
        reported_records(&stdout),
        all_inputs - after_part1,
        "{stdout}"
    );
    // An interrupted backfill continues from its group's committed offsets (here committed
    // at half of each input partition, as a run stopped midway would have left them), and
    // `--from` no longer applies.
    let group = format!("{prefix}-profiles.v3");
    let mut half = 0i64;
    let mut tpl = rdkafka::TopicPartitionList::new();
    for topic in [t.events_resolved(), t.identity_merges()] {
        for (p, (_, high)) in zt_demo::drain::watermarks(&kafka, &topic).unwrap() {
            half += high / 2;
            tpl.add_partition_offset(&topic, p, rdkafka::Offset::Offset(high / 2))
                .unwrap();
        }
    }
    let committer: rdkafka::consumer::BaseConsumer = zt_kafka::client::base_config(&kafka)
        .unwrap()
        .set("group.id", &group)
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    rdkafka::consumer::Consumer::commit(&committer, &tpl, rdkafka::consumer::CommitMode::Sync)
        .expect("commit the midway offsets");
    let stdout = backfill(
        &v2_config,
        &[
            "run",
            "profiles",
            "--version",
            "3",
            "--from",
            "beginning",
            "-q",
        ],
    );
    assert!(stdout.contains("continued"), "{stdout}");
    assert_eq!(reported_records(&stdout), all_inputs - half, "{stdout}");

    // The switch: version 2 in the configuration of the processors and the sink.
    let switched = v2_config_text(&live_config, &prefix);
    std::fs::write(&config, switched).unwrap();
    for c in ["profiles", "funnels", "sink"] {
        pipeline.kill(c).expect("kill");
        pipeline.restart(c).expect("restart on version 2");
    }
    let sent = send(parts[2], &opts).await.expect("send part 3");
    assert_eq!(sent.rejected, 0, "{:?}", sent.first_rejections);
    let mut t2 = t.clone();
    t2.profiles_version = 2;
    t2.funnels_version = 2;
    drain(t2.clone()).await;

    // Control: version 1's rows are still there before `finish`.
    let old_rows = rows_of_other_versions(&ch, &prefix).await;
    assert!(old_rows > 0, "control: version 1's rows before finish");
    for processor in ["profiles", "funnels"] {
        let stdout = backfill(&config, &["finish", processor, "--version", "2"]);
        assert!(
            stdout.contains("rows of other versions deleted"),
            "{stdout}"
        );
    }
    assert_eq!(rows_of_other_versions(&ch, &prefix).await, 0);
    let funnels = strings(
        &ch,
        "SELECT DISTINCT funnel_id FROM funnel_progress",
        "funnel_id",
    )
    .await;
    assert_eq!(funnels, vec!["paid".to_owned()]);

    // The rebuilt profiles against the orders.
    let diffs = zt_demo::verify::profiles_match_orders(&ch).await.unwrap();
    assert!(diffs.is_empty(), "{diffs:#?}");
    // The persons the `paid` funnel counts: those with a paid order (per the profiles just
    // checked against the orders).
    let reached: BTreeSet<String> = strings(
        &ch,
        "SELECT person_id FROM funnel_progress FINAL WHERE deleted = 0 AND level >= 1",
        "person_id",
    )
    .await
    .into_iter()
    .collect();
    let paid: BTreeSet<String> = strings(
        &ch,
        "SELECT person_id FROM profiles FINAL WHERE merged_into = '' AND paid_orders > 0",
        "person_id",
    )
    .await
    .into_iter()
    .collect();
    assert!(!paid.is_empty());
    assert_eq!(reached, paid, "the paid funnel against the paid orders");

    // The erased person did not come back.
    assert_eq!(
        victim_rows(ch.clone()).await,
        0,
        "rows of the erased person"
    );
    pipeline.stop();
}

/// The live configuration switched to version 2 of both outputs: the versions under
/// `[topics]` and the sink's topic list.
fn v2_config_text(live: &str, prefix: &str) -> String {
    let mut text = live
        .replace(
            &format!("\"{prefix}.profiles\""),
            &format!("\"{prefix}.profiles.v2\""),
        )
        .replace(
            &format!("\"{prefix}.funnels\""),
            &format!("\"{prefix}.funnels.v2\""),
        )
        .replacen(
            "[topics]\n",
            "[topics]\nprofiles_version = 2\nfunnels_version = 2\n",
            1,
        );
    assert!(text.contains("profiles_version = 2") && text.contains(".funnels.v2\""));
    text.push_str(PAID_FUNNEL);
    text
}
