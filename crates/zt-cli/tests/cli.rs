//! The `zt` binary as a user runs it: help, version, config checking with redaction and
//! key-naming errors, and topic creation against the local broker.

use std::io::Write;
use std::process::{Command, Output};

fn zt(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_zt"));
    cmd.args(args);
    // Start from a clean slate: no ZT_* variables from the developer's shell.
    for (k, _) in std::env::vars() {
        if k.starts_with("ZT_") {
            cmd.env_remove(k);
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("zt runs")
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn help_lists_the_subcommands_and_version_prints() {
    let o = zt(&["--help"], &[]);
    assert!(o.status.success());
    let (out, _) = text(&o);
    for sub in ["config", "topics", "replay"] {
        assert!(out.contains(sub), "{out}");
    }
    let o = zt(&["topics", "--help"], &[]);
    let (out, _) = text(&o);
    assert!(out.contains("create") && out.contains("list"), "{out}");
    let o = zt(&["--version"], &[]);
    assert!(o.status.success());
    assert_eq!(
        text(&o).0.trim(),
        format!("zt {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn config_check_prints_effective_config_with_secrets_redacted() {
    let o = zt(
        &["config", "check"],
        &[
            ("ZT__PII__SALT", "s3cr3t-salt-value"),
            ("ZT__CLICKHOUSE__PASSWORD", "ch-password-value"),
            ("ZT__KAFKA__PRODUCER__LINGER_MS", "25"),
            ("ZT__KAFKA__OPTIONS__SASL_USERNAME", "zt-user"),
            ("ZT__KAFKA__OPTIONS__SASL_PASSWORD", "kafka-password-value"),
        ],
    );
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(
        out.contains("linger_ms = 25"),
        "env override applied: {out}"
    );
    assert!(!out.contains("s3cr3t-salt-value") && !err.contains("s3cr3t-salt-value"));
    assert!(!out.contains("ch-password-value") && !err.contains("ch-password-value"));
    assert!(out.contains("<redacted>"));
    assert!(out.contains("sasl_username = \"zt-user\""), "{out}");
    assert!(!out.contains("kafka-password-value") && !err.contains("kafka-password-value"));
    assert!(
        !err.contains("warning: pii.salt"),
        "a real salt gives no warning"
    );

    let o = zt(&["config", "check"], &[]);
    assert!(o.status.success());
    assert!(
        text(&o).1.contains("warning: pii.salt"),
        "the dev salt is flagged"
    );
}

#[test]
fn bad_config_exits_non_zero_naming_the_key() {
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (
            vec![("ZT__KAFKA__PRODUCER__LINGER_MS", "soon")],
            "kafka.producer.linger_ms",
        ),
        (
            vec![("ZT__KAFKA__PRODUCER__COMPRESSION", "brotli")],
            "kafka.producer.compression",
        ),
        (vec![("ZT__TOPICS__PARTITIONS", "0")], "topics.partitions"),
        (vec![("ZT__LOG__FORMAT", "xml")], "log.format"),
        (vec![("ZT__CLICKHOUSE__URL", "tcp://x")], "clickhouse.url"),
        (
            vec![("ZT__PII__DEFAULT_COUNTRY_CODE", "086")],
            "pii.default_country_code",
        ),
        (vec![("ZT__KAFKA__NOPE", "1")], "kafka.nope"),
    ];
    for (env, key) in cases {
        let o = zt(&["config", "check"], &env);
        assert_eq!(o.status.code(), Some(2), "{env:?}");
        let (_, err) = text(&o);
        assert!(err.contains(key), "{env:?}: {err}");
    }

    let mut f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    writeln!(f, "[kafka.options]\n\"enable.idempotence\" = \"false\"").unwrap();
    let o = zt(
        &["--config", f.path().to_str().unwrap(), "config", "check"],
        &[],
    );
    assert_eq!(o.status.code(), Some(2));
    let (_, err) = text(&o);
    assert!(
        err.contains("kafka.options.\"enable.idempotence\""),
        "{err}"
    );

    let o = zt(
        &["--config", "/nonexistent/zt.toml", "config", "check"],
        &[],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).1.contains("/nonexistent/zt.toml"));
}

#[test]
fn config_file_is_layered_between_defaults_and_env() {
    let mut f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    writeln!(f, "[topics]\nprefix = \"shop1\"\npartitions = 8").unwrap();
    let path = f.path().to_str().unwrap();
    let o = zt(
        &["--config", path, "config", "check"],
        &[("ZT__TOPICS__PARTITIONS", "6")],
    );
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(out.contains("prefix = \"shop1\""), "{out}");
    assert!(out.contains("partitions = 6"), "{out}");
    assert!(out.contains("replication_factor = 1"), "{out}");
}

/// Needs the local broker (`make test` starts it).
#[test]
fn topics_create_is_idempotent_against_the_broker() {
    let prefix = format!(
        "zt-cli-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis()
    );
    let bootstrap = std::env::var("ZT_TEST_KAFKA").unwrap_or_else(|_| "127.0.0.1:9092".to_owned());
    let env = [
        ("ZT__TOPICS__PREFIX", prefix.as_str()),
        ("ZT__TOPICS__PARTITIONS", "2"),
        ("ZT__KAFKA__BOOTSTRAP_SERVERS", bootstrap.as_str()),
        ("ZT__LOG__LEVEL", "warn"),
    ];
    let o = zt(&["topics", "create"], &env);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert_eq!(
        out.lines().filter(|l| l.contains(" created ")).count(),
        20,
        "{out}"
    );
    let o = zt(&["topics", "create"], &env);
    let (out, _) = text(&o);
    assert_eq!(
        out.lines().filter(|l| l.contains(" exists ")).count(),
        20,
        "{out}"
    );

    let o = zt(&["topics", "list"], &env);
    let (out, _) = text(&o);
    for t in ["events.crm", "dlq", "identity.links", "profiles", "funnels"] {
        let name = format!("{prefix}.{t} ");
        let line = out.lines().find(|l| l.starts_with(&name));
        assert!(
            line.is_some_and(|l| l.ends_with("partitions=2")),
            "{name}: {out}"
        );
    }
}
