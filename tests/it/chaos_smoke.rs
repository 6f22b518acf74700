//! The fault matrix's smoke set (docs/reliability.md), in the normal test suite.
//!
//! The real `zt chaos` runs the whole pipeline (ingest, identity, profiles, funnels, sink
//! as child processes on fresh topics and a fresh database) three times, each time with
//! one component killed with `kill -9` half-way through the input and started again:
//! ingest, identity and the sink. Each run is checked against oracles that do not come
//! from the platform: the broker's offsets of the resolved topic (every record once in
//! ClickHouse), the ids ingest acknowledged (every event once, nothing else), a
//! recomputation of the profiles from the orders, and the generator's ground truth.
//!
//! The negative control runs the sink with its resume switched off and a crash between
//! an insert and its commit: the same checks must report the events stored twice.
//! The broker and ClickHouse faults run in `make chaos` only: they would stop the stack
//! under the other tests.

mod sink_support;

use std::process::Command;

use sink_support::zt_binary;
use zt_integration_tests::{clickhouse_url, kafka_bootstrap, unique};

#[test]
fn kill_9_of_ingest_identity_and_sink_keeps_exactly_once_and_the_control_is_caught() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = unique("zt_chaos_it").replace(['-', '.'], "_");
    let table = dir.path().join("results.md");
    let out = Command::new(zt_binary())
        .args(["chaos", "--smoke", "--negative-control", "--quiet"])
        .args([
            "--persons",
            "150",
            "--rate",
            "400",
            "--drain-timeout",
            "240",
        ])
        .arg("--database")
        .arg(&db)
        .arg("--work-dir")
        .arg(dir.path())
        .arg("--markdown")
        .arg(&table)
        .env("ZT__KAFKA__BOOTSTRAP_SERVERS", kafka_bootstrap())
        .env("ZT__CLICKHOUSE__URL", clickhouse_url())
        .env("NO_COLOR", "1")
        .output()
        .expect("run zt chaos");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "zt chaos failed\n{stdout}\n{stderr}");
    let table = std::fs::read_to_string(&table).expect("the results table");
    let rows: Vec<&str> = table
        .lines()
        .filter(|l| l.starts_with("| kill") || l.starts_with("| negative"))
        .collect();
    assert_eq!(rows.len(), 4, "{table}");
    for c in ["ingest", "identity", "sink"] {
        let row = rows
            .iter()
            .find(|r| r.starts_with(&format!("| kill -9 {c} at 50 %")))
            .unwrap_or_else(|| panic!("no row for {c}: {table}"));
        assert!(row.contains("exactly once, KPIs = truth"), "{c}: {row}");
        assert!(
            row.contains(&format!("{c} ×1")),
            "{c} was not restarted: {row}"
        );
    }
    // The control is caught by the exactly-once check itself (records stored twice), not
    // by something incidental such as a stalled pipeline.
    let control = rows.iter().find(|r| r.starts_with("| negative")).unwrap();
    assert!(
        control.contains("caught:") && control.contains("stored more than once"),
        "{control}"
    );
    let _ = Command::new("curl")
        .args(["-fsS", "--data-binary"])
        .arg(format!("DROP DATABASE IF EXISTS {db}"))
        .arg(clickhouse_url())
        .output();
}
