//! `zt demo` end to end, checked against the generator's ground truth.
//!
//! The real `zt` binary runs a short demo on the local stack (tansu, ClickHouse 18.16):
//! it starts ingest, the three processors and the sink as child processes, posts a seeded
//! world over HTTP, waits for the pipeline to drain and prints the report. The test then
//! reads the KPI views of the run's database and compares them with the truth the
//! generator computed from the world it made (what every person did, which orders were
//! paid and refunded, which tickets were answered in time, who was exposed to which
//! variant and converted), not from anything the platform computed.
//!
//! Negative control: the same comparison against the truth of another seed must find
//! differences, so the comparison can fail.

mod sink_support;

use std::process::Command;

use clickhouse::Client;
use serde_json::Value;
use sink_support::zt_binary;
use zt_demo::scenario::{Params, Truth, generate};
use zt_demo::verify::against_truth;
use zt_integration_tests::{clickhouse_url, kafka_bootstrap, unique};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_kpis_match_the_generators_ground_truth() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = unique("zt_demo_it").replace(['-', '.'], "_");
    let truth_path = dir.path().join("truth.json");
    let html = dir.path().join("report.html");
    let out = Command::new(zt_binary())
        .args(["demo", "--no-stack", "--quiet", "--seed", "4242"])
        .args(["--persons", "300", "--days", "21", "--drain-timeout", "300"])
        // Paced: this test checks correctness, not speed, and shares two cores and the
        // SQLite broker with the rest of the suite. An overloaded broker that acknowledges
        // after `publish_timeout_ms` makes ingest answer 503 for records it may still have
        // written; the retry then publishes them again (docs/ingest.md, delivery).
        .args(["--rate", "1000"])
        .arg("--database")
        .arg(&db)
        .arg("--truth")
        .arg(&truth_path)
        .arg("--html")
        .arg(&html)
        .arg("--work-dir")
        .arg(dir.path())
        .env("ZT__KAFKA__BOOTSTRAP_SERVERS", kafka_bootstrap())
        .env("ZT__CLICKHOUSE__URL", clickhouse_url())
        .env("NO_COLOR", "1")
        .output()
        .expect("run zt demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "zt demo failed\n{stdout}\n{stderr}");
    for section in [
        "Funnel",
        "LTV/CAC",
        "Repurchase",
        "CSAT",
        "Experiments",
        "verdict",
    ] {
        assert!(
            stdout.contains(section),
            "the report lacks {section}:\n{stdout}"
        );
    }
    assert!(stderr.contains("0 rejected"), "{stderr}");
    let page = std::fs::read_to_string(&html).expect("the HTML report");
    assert!(
        page.contains("<svg") && !page.contains("<script src"),
        "self-contained HTML"
    );

    let doc: Value = serde_json::from_slice(&std::fs::read(&truth_path).expect("truth file"))
        .expect("truth JSON");
    let truth: Truth = serde_json::from_value(doc["truth"].clone()).expect("truth");
    let params: Params = serde_json::from_value(doc["params"].clone()).expect("params");
    assert!(truth.skewed_calls > 0 && truth.late_calls > 0 && truth.refunded_minor > 0);

    let ch = Client::default()
        .with_url(clickhouse_url())
        .with_database(&db)
        .with_validation(false);
    let diffs = against_truth(&ch, &truth).await.expect("reading the KPIs");
    assert!(
        diffs.is_empty(),
        "the KPIs differ from the ground truth:\n{}\n\ngroup events in the components' logs:\n{}",
        diffs.join("\n"),
        group_events(dir.path())
    );

    // Negative control: another seed's world over the same period differs.
    let other = generate(Params {
        seed: params.seed + 1,
        ..params
    })
    .truth;
    let diffs = against_truth(&ch, &other).await.expect("reading the KPIs");
    assert!(
        diffs.len() >= 5,
        "the comparison did not notice another seed's truth: {diffs:?}"
    );

    let _ = ch
        .query(&format!("DROP DATABASE IF EXISTS {db}"))
        .execute()
        .await;
}

/// The rebalance, re-join, restart and warning lines of every component log in `dir` (at
/// most 200), to tell a failure after a group event or a retry (a timed-out INSERT) from
/// one without.
fn group_events(dir: &std::path::Path) -> String {
    let mut out = Vec::new();
    let mut logs: Vec<_> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    logs.retain(|p| p.extension().is_some_and(|x| x == "log"));
    logs.sort();
    for log in logs {
        let name = log
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        for line in std::fs::read_to_string(&log).unwrap_or_default().lines() {
            if [
                "re-joining",
                "revoked",
                "assigned",
                "restarted",
                "ERROR",
                "WARN",
            ]
            .iter()
            .any(|k| line.contains(k))
            {
                out.push(format!("{name}: {line}"));
            }
        }
    }
    let skip = out.len().saturating_sub(200);
    out[skip..].join("\n")
}
