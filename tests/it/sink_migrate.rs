//! `zt migrate` against the live ClickHouse 18.16: applies every file in order, records
//! each with its checksum, is idempotent, and refuses to run when an applied file changed.

mod sink_support;

use std::collections::BTreeSet;

use clickhouse::Client;
use sink_support::*;
use zt_integration_tests::*;

fn migrate_dir(env: &Env, dir: &std::path::Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["migrate", "--dir", dir.to_str().expect("utf-8 path")];
    args.extend_from_slice(extra);
    env.zt(&args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_applies_records_and_guards_checksums() {
    let env = setup("migrate", &[], &clickhouse_url()).await; // runs `zt migrate` once
    let ch = env.client();

    // Every file is recorded once, with its SHA-256; the oracle reads the files itself.
    #[derive(Debug, serde::Deserialize, clickhouse::Row)]
    struct Rec {
        version: u32,
        name: String,
        checksum: String,
    }
    let recs = ch
        .query("SELECT version, name, checksum FROM schema_migrations ORDER BY version")
        .fetch_all::<Rec>()
        .await
        .unwrap();
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let ddl = repo.join("schemas/clickhouse");
    let mut files: Vec<String> = std::fs::read_dir(&ddl)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".sql") && n.as_bytes()[..4].iter().all(u8::is_ascii_digit))
        .collect();
    files.sort();
    assert_eq!(
        recs.iter().map(|r| r.name.clone()).collect::<Vec<_>>(),
        files
    );
    for r in &recs {
        let sum = std::process::Command::new("sha256sum")
            .arg(ddl.join(&r.name))
            .output()
            .unwrap();
        let sum = String::from_utf8_lossy(&sum.stdout);
        assert_eq!(
            sum.split_whitespace().next(),
            Some(r.checksum.as_str()),
            "{}",
            r.name
        );
        assert_eq!(r.version, r.name[..4].parse::<u32>().unwrap());
    }
    let tables: BTreeSet<String> = ch
        .query("SELECT name FROM system.tables WHERE database = currentDatabase()")
        .fetch_all::<String>()
        .await
        .unwrap()
        .into_iter()
        .collect();
    for t in [
        "events",
        "orders",
        "order_lines",
        "shipments",
        "tickets",
        "ad_spend",
        "customers",
        "identity_links",
        "profiles",
        "funnel_aggregates",
        "experiment_aggregates",
    ] {
        assert!(tables.contains(t), "{t} missing: {tables:?}");
    }

    // Idempotent: a second run applies nothing.
    let again = env.zt(&["migrate"]);
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stdout).contains("nothing to apply"));
    let n: u64 = ch
        .query("SELECT count() FROM schema_migrations")
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(n, recs.len() as u64);

    // A changed applied file is refused, naming the file; nothing is applied.
    let copy = tempfile::tempdir().unwrap();
    for f in &files {
        std::fs::copy(ddl.join(f), copy.path().join(f)).unwrap();
    }
    let out = migrate_dir(&env, copy.path(), &["--dry-run"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let first = copy.path().join(&files[0]);
    let mut text = std::fs::read_to_string(&first).unwrap();
    text.push_str("\n-- edited after it was applied\n");
    std::fs::write(&first, text).unwrap();
    let out = migrate_dir(&env, copy.path(), &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&files[0]) && err.contains("checksum"), "{err}");

    // A new file in the directory is applied, then recorded.
    std::fs::copy(ddl.join(&files[0]), &first).unwrap();
    std::fs::write(
        copy.path().join("0098_it_extra.sql"),
        "CREATE TABLE IF NOT EXISTS {database}.it_extra (a String) ENGINE = MergeTree() ORDER BY a;\n",
    )
    .unwrap();
    let plan = migrate_dir(&env, copy.path(), &["--dry-run"]);
    let plan = String::from_utf8_lossy(&plan.stdout);
    assert!(plan.contains("pending 0098_it_extra.sql"), "{plan}");
    let out = migrate_dir(&env, copy.path(), &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let n: u64 = ch.query("SELECT count() FROM system.tables WHERE database = currentDatabase() AND name = 'it_extra'")
        .fetch_one().await.unwrap();
    assert_eq!(n, 1);

    // The cluster rendering is offline: --dry-run on a fresh database prints it.
    let fresh = unique("zt_it_cluster");
    let out = std::process::Command::new(zt_binary())
        .args(["migrate", "--dry-run", "--cluster", "prod"])
        .env("ZT__CLICKHOUSE__DATABASE", &fresh)
        .env("ZT__CLICKHOUSE__URL", clickhouse_url())
        .output()
        .unwrap();
    let plan = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        plan.contains(&format!(
            "CREATE TABLE IF NOT EXISTS {fresh}.events_local ON CLUSTER 'prod'"
        )),
        "{plan}"
    );
    assert!(plan.contains(&format!(
        "Distributed('prod', '{fresh}', 'events_local', cityHash64(_topic, _partition))"
    )));
    let exists: u8 = Client::default()
        .with_url(clickhouse_url())
        .with_validation(false)
        .query("SELECT count() > 0 FROM system.databases WHERE name = ?")
        .bind(&fresh)
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(exists, 0, "--dry-run must not create anything");
    drop_database(&env).await;
}
