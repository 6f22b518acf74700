//! Configuration precedence and error reporting, on a small settings type shaped like the
//! real one (nested sections, a secret, a passthrough map with dotted keys).

use std::collections::{BTreeMap, HashMap};
use std::io::Write;

use serde::{Deserialize, Serialize};
use zt_runtime::config::{ConfigError, load_with_env};
use zt_runtime::secret::{REDACTED, Secret};

#[derive(Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct Settings {
    kafka: Kafka,
    pii: Pii,
}

#[derive(Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct Kafka {
    bootstrap_servers: String,
    linger_ms: u32,
    idempotent: bool,
    options: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct Pii {
    salt: Secret,
}

const DEFAULTS: &str = r#"
[kafka]
bootstrap_servers = "127.0.0.1:9092"
linger_ms = 5
idempotent = true
[kafka.options]
[pii]
salt = "dev-salt"
"#;

fn file(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    f.write_all(text.as_bytes()).unwrap();
    f
}

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn defaults_then_file_then_env() {
    let s: Settings = load_with_env(DEFAULTS, None, env(&[])).unwrap();
    assert_eq!(s.kafka.bootstrap_servers, "127.0.0.1:9092");
    assert_eq!(s.kafka.linger_ms, 5);

    let f = file("[kafka]\nbootstrap_servers = \"file:9092\"\nlinger_ms = 50\n");
    let s: Settings = load_with_env(DEFAULTS, Some(f.path()), env(&[])).unwrap();
    assert_eq!(s.kafka.bootstrap_servers, "file:9092");
    assert_eq!(s.kafka.linger_ms, 50);
    assert!(
        s.kafka.idempotent,
        "keys the file does not set keep their default"
    );

    let s: Settings = load_with_env(
        DEFAULTS,
        Some(f.path()),
        env(&[
            ("ZT__KAFKA__LINGER_MS", "7"),
            ("ZT__KAFKA__IDEMPOTENT", "false"),
            ("ZT__PII__SALT", "0123456"),
            ("UNRELATED", "x"),
        ]),
    )
    .unwrap();
    assert_eq!(
        s.kafka.bootstrap_servers, "file:9092",
        "file beats defaults"
    );
    assert_eq!(s.kafka.linger_ms, 7, "env beats file");
    assert!(!s.kafka.idempotent);
    assert_eq!(
        s.pii.salt.expose(),
        "0123456",
        "numeric-looking env value kept verbatim"
    );
}

#[test]
fn dotted_passthrough_keys_survive_the_layers() {
    let f = file(
        "[kafka.options]\n\"socket.keepalive.enable\" = \"true\"\n\"queue.buffering.max.kbytes\" = \"2048\"\n",
    );
    let s: Settings = load_with_env(DEFAULTS, Some(f.path()), env(&[])).unwrap();
    assert_eq!(
        s.kafka
            .options
            .get("socket.keepalive.enable")
            .map(String::as_str),
        Some("true"),
        "{:?}",
        s.kafka.options
    );
    assert_eq!(s.kafka.options.len(), 2);
}

fn invalid(r: Result<Settings, ConfigError>) -> (String, String) {
    match r {
        Err(ConfigError::Invalid { key, message }) => (key, message),
        other => panic!("expected an invalid-key error, got {other:?}"),
    }
}

#[test]
fn bad_values_name_the_key() {
    let (key, msg) = invalid(load_with_env(
        DEFAULTS,
        None,
        env(&[("ZT__KAFKA__LINGER_MS", "soon")]),
    ));
    assert_eq!(key, "kafka.linger_ms");
    assert!(!msg.contains("soon") || msg.contains("invalid"), "{msg}");

    let f = file("[kafka]\nlinger_ms = -1\n");
    let (key, _) = invalid(load_with_env(DEFAULTS, Some(f.path()), env(&[])));
    assert_eq!(key, "kafka.linger_ms");
}

#[test]
fn unknown_keys_are_rejected_in_every_layer() {
    let f = file("[kafka]\nbootstrap_server = \"typo:9092\"\n");
    let (key, msg) = invalid(load_with_env(DEFAULTS, Some(f.path()), env(&[])));
    assert_eq!(key, "kafka.bootstrap_server");
    assert!(msg.contains("unknown field"), "{msg}");

    let (key, _) = invalid(load_with_env(
        DEFAULTS,
        None,
        env(&[("ZT__KAFAK__LINGER_MS", "1")]),
    ));
    assert_eq!(key, "kafak");
}

#[test]
fn unreadable_or_malformed_files_name_the_file() {
    let missing = std::path::Path::new("/nonexistent/zt.toml");
    match load_with_env::<Settings>(DEFAULTS, Some(missing), env(&[])) {
        Err(ConfigError::File { path, .. }) => assert_eq!(path, missing),
        other => panic!("{other:?}"),
    }
    let f = file("[kafka\nlinger_ms = 1\n");
    match load_with_env::<Settings>(DEFAULTS, Some(f.path()), env(&[])) {
        Err(e @ ConfigError::File { .. }) => {
            assert!(e.to_string().contains(".toml"), "{e}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn secrets_never_print() {
    let s: Settings = load_with_env(
        DEFAULTS,
        None,
        env(&[("ZT__PII__SALT", "very-secret-salt")]),
    )
    .unwrap();
    let shown = format!("{s:?} {}", toml::to_string(&s).unwrap());
    assert!(!shown.contains("very-secret-salt"), "{shown}");
    assert!(shown.contains(REDACTED));
}
