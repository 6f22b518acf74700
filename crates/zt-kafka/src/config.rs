//! The `[kafka]` and `[topics]` configuration sections.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize, Serializer};
use zt_model::Source;

use crate::error::{Error, Result};

/// `[kafka]`: how to reach the broker and tune the clients.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Comma-separated `host:port` bootstrap list. Default `127.0.0.1:9092` (the local
    /// stack); production deployments must set it.
    pub bootstrap_servers: String,
    /// `client.id` reported to the broker. Default `zhongtai`.
    pub client_id: String,
    /// Producer tuning.
    pub producer: ProducerConfig,
    /// Consumer tuning.
    pub consumer: ConsumerConfig,
    /// Extra librdkafka options passed through unchanged, e.g. `"security.protocol" =
    /// "SASL_SSL"`; `_` in a key reads as `.` so environment variables can set them
    /// (`ZT__KAFKA__OPTIONS__SASL_PASSWORD`). Keys that a first-class setting above or the
    /// clients' guarantees own (see [`RESERVED_OPTIONS`]) are refused. Values of keys containing `password` or
    /// `secret` are redacted when the configuration is printed. Default empty.
    #[serde(serialize_with = "redact_options")]
    pub options: BTreeMap<String, String>,
}

/// `[kafka.producer]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProducerConfig {
    /// `linger.ms`: how long to wait to fill a batch, in milliseconds. Higher means larger
    /// batches and more throughput at the cost of latency. Default 5.
    pub linger_ms: u32,
    /// `compression.type`: `none`, `gzip`, `snappy`, `lz4` or `zstd`. Default `lz4`.
    pub compression: String,
    /// `message.timeout.ms`: how long a record may wait for acknowledgement, including
    /// retries, before its send fails, in milliseconds. Default 30000.
    pub message_timeout_ms: u32,
    /// `batch.size`: the largest batch per partition, in bytes. Default 1000000.
    pub batch_size_bytes: u32,
}

/// `[kafka.consumer]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsumerConfig {
    /// `session.timeout.ms`: a member silent this long is removed from its group, in
    /// milliseconds. Lower means faster failover and faster first joins. Default 10000.
    pub session_timeout_ms: u32,
    /// `max.poll.interval.ms`: the longest gap between polls before the member leaves the
    /// group, in milliseconds. Default 300000.
    pub max_poll_interval_ms: u32,
    /// `auto.offset.reset` for a group without a committed offset: `earliest` or `latest`.
    /// Default `earliest`, so nothing published before a group's first start is skipped.
    pub auto_offset_reset: String,
    /// `auto.commit.interval.ms`: how often stored offsets are committed in the
    /// background, in milliseconds. Default 1000.
    pub auto_commit_interval_ms: u32,
}

/// librdkafka keys the passthrough map may not set, with the setting that owns each.
pub const RESERVED_OPTIONS: &[(&str, &str)] = &[
    ("bootstrap.servers", "kafka.bootstrap_servers"),
    ("metadata.broker.list", "kafka.bootstrap_servers"),
    ("client.id", "kafka.client_id"),
    ("linger.ms", "kafka.producer.linger_ms"),
    ("queue.buffering.max.ms", "kafka.producer.linger_ms"),
    ("compression.type", "kafka.producer.compression"),
    ("compression.codec", "kafka.producer.compression"),
    ("message.timeout.ms", "kafka.producer.message_timeout_ms"),
    ("delivery.timeout.ms", "kafka.producer.message_timeout_ms"),
    ("batch.size", "kafka.producer.batch_size_bytes"),
    ("session.timeout.ms", "kafka.consumer.session_timeout_ms"),
    (
        "max.poll.interval.ms",
        "kafka.consumer.max_poll_interval_ms",
    ),
    ("auto.offset.reset", "kafka.consumer.auto_offset_reset"),
    (
        "auto.commit.interval.ms",
        "kafka.consumer.auto_commit_interval_ms",
    ),
    ("enable.idempotence", "the idempotent producer (always on)"),
    ("acks", "the idempotent producer (always acks=all)"),
    (
        "request.required.acks",
        "the idempotent producer (always acks=all)",
    ),
    ("enable.auto.offset.store", "the consumer's offset handling"),
    ("enable.auto.commit", "the consumer's offset handling"),
    ("group.id", "each component's consumer group"),
];

/// The librdkafka name of a passthrough key. Environment variables cannot carry dots, so
/// `ZT__KAFKA__OPTIONS__SASL_PASSWORD` arrives as `sasl_password`: underscores are read as
/// dots (no librdkafka property has an underscore in its name).
pub fn librdkafka_key(key: &str) -> String {
    key.replace('_', ".")
}

fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    k.contains("password") || k.contains("secret") || k.ends_with(".key.pem")
}

fn redact_options<S: Serializer>(opts: &BTreeMap<String, String>, s: S) -> Result<S::Ok, S::Error> {
    let shown: BTreeMap<&str, &str> = opts
        .iter()
        .map(|(k, v)| {
            let v = if is_secret_key(k) {
                "<redacted>"
            } else {
                v.as_str()
            };
            (k.as_str(), v)
        })
        .collect();
    shown.serialize(s)
}

fn config_err(key: impl Into<String>, reason: impl Into<String>) -> Error {
    Error::Config {
        key: key.into(),
        reason: reason.into(),
    }
}

impl KafkaConfig {
    /// Checks values and the passthrough map.
    pub fn validate(&self) -> Result<()> {
        if self.bootstrap_servers.trim().is_empty() {
            return Err(config_err("kafka.bootstrap_servers", "must not be empty"));
        }
        for server in self.bootstrap_servers.split(',') {
            let server = server.trim();
            let port = server.rsplit_once(':').map(|(_, p)| p);
            if port.and_then(|p| p.parse::<u16>().ok()).is_none() {
                return Err(config_err(
                    "kafka.bootstrap_servers",
                    format!("{server:?} is not host:port"),
                ));
            }
        }
        const CODECS: [&str; 5] = ["none", "gzip", "snappy", "lz4", "zstd"];
        if !CODECS.contains(&self.producer.compression.as_str()) {
            return Err(config_err(
                "kafka.producer.compression",
                format!("must be one of {}", CODECS.join(", ")),
            ));
        }
        if !["earliest", "latest"].contains(&self.consumer.auto_offset_reset.as_str()) {
            return Err(config_err(
                "kafka.consumer.auto_offset_reset",
                "must be earliest or latest",
            ));
        }
        if self.producer.message_timeout_ms == 0 {
            return Err(config_err(
                "kafka.producer.message_timeout_ms",
                "must be > 0",
            ));
        }
        for key in self.options.keys() {
            let name = librdkafka_key(key);
            if let Some((_, owner)) = RESERVED_OPTIONS.iter().find(|(k, _)| *k == name) {
                return Err(config_err(
                    format!("kafka.options.\"{key}\""),
                    format!("clashes with a first-class setting; use {owner}"),
                ));
            }
        }
        Ok(())
    }
}

/// `[topics]`: names and sizes of the platform's topics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicsConfig {
    /// Prefix of every topic name: `<prefix>.events.crm`, `<prefix>.dlq`, ... Default `zt`.
    pub prefix: String,
    /// Partitions of each topic `zt topics create` creates. The unit of parallelism of
    /// every consumer group. Default 4.
    pub partitions: i32,
    /// Replication factor of created topics. Default 1 (the local stack); use 3 in
    /// production.
    pub replication_factor: i32,
    /// Partition counts for single topics, by full name, e.g. `"zt.events.tracking" = 12`.
    /// Default empty.
    pub partition_overrides: BTreeMap<String, i32>,
    /// Output version of the profiles processor (`zt replay backfill`, docs/operations.md):
    /// version 1 writes `<prefix>.profiles`, `.profiles.state` and `.profiles.transfers`
    /// under the consumer group `[profiles] group_id`; version N > 1 writes the same names
    /// with `.v<N>` appended, under the group `<group_id>.v<N>`, and the sink loads the
    /// version configured here. Default 1.
    #[serde(default = "first_version")]
    pub profiles_version: u32,
    /// Output version of the funnels processor, like `profiles_version`
    /// (`<prefix>.funnels`, `.funnels.state`, `.funnels.transfers`). Default 1.
    #[serde(default = "first_version")]
    pub funnels_version: u32,
}

fn first_version() -> u32 {
    1
}

/// `name` of output version `version`: unchanged for 1, `<name>.v<version>` after.
pub fn versioned(name: &str, version: u32) -> String {
    if version <= 1 {
        name.to_owned()
    } else {
        format!("{name}.v{version}")
    }
}

impl TopicsConfig {
    /// `<prefix>.events.<source>`: canonical events of one source.
    pub fn events(&self, source: Source) -> String {
        format!("{}.events.{}", self.prefix, source.as_str())
    }
    /// `<prefix>.dlq`: dead letters.
    pub fn dlq(&self) -> String {
        format!("{}.dlq", self.prefix)
    }
    /// `<prefix>.dlq.replays` (compacted): one marker per replayed dead letter, keyed by
    /// its `dlq_id` (`zt replay dlq`).
    pub fn dlq_replays(&self) -> String {
        format!("{}.dlq.replays", self.prefix)
    }
    /// `<prefix>.suppressions` (compacted): erased persons and identifiers, keyed by
    /// their SHA-256 (`zt erase`; [`crate::suppress`]).
    pub fn suppressions(&self) -> String {
        format!("{}.suppressions", self.prefix)
    }
    /// `<prefix>.erasures`: the audit trail of `zt erase`, one record per erasure, no
    /// personal data; kept forever.
    pub fn erasures(&self) -> String {
        format!("{}.erasures", self.prefix)
    }
    /// `<prefix>.identity.links` (compacted).
    pub fn identity_links(&self) -> String {
        format!("{}.identity.links", self.prefix)
    }
    /// `<prefix>.identity.merges`.
    pub fn identity_merges(&self) -> String {
        format!("{}.identity.merges", self.prefix)
    }
    /// `<prefix>.events.resolved`: events keyed by person id.
    pub fn events_resolved(&self) -> String {
        format!("{}.events.resolved", self.prefix)
    }
    /// `<prefix>.profiles` (compacted).
    pub fn profiles(&self) -> String {
        versioned(&format!("{}.profiles", self.prefix), self.profiles_version)
    }
    /// `<prefix>.identity.edges`: the identity graph's log (one partition, internal).
    pub fn identity_edges(&self) -> String {
        format!("{}.identity.edges", self.prefix)
    }
    /// `<prefix>.profiles.state` (compacted): the profiles processor's changelog.
    pub fn profiles_state(&self) -> String {
        versioned(
            &format!("{}.profiles.state", self.prefix),
            self.profiles_version,
        )
    }
    /// `<prefix>.profiles.transfers`: profile state moved by merges (internal).
    pub fn profiles_transfers(&self) -> String {
        versioned(
            &format!("{}.profiles.transfers", self.prefix),
            self.profiles_version,
        )
    }
    /// `<prefix>.funnels.state` (compacted): the funnels processor's changelog.
    pub fn funnels_state(&self) -> String {
        versioned(
            &format!("{}.funnels.state", self.prefix),
            self.funnels_version,
        )
    }
    /// `<prefix>.funnels.transfers`: funnel state moved by merges (internal).
    pub fn funnels_transfers(&self) -> String {
        versioned(
            &format!("{}.funnels.transfers", self.prefix),
            self.funnels_version,
        )
    }
    /// `<prefix>.funnels`.
    pub fn funnels(&self) -> String {
        versioned(&format!("{}.funnels", self.prefix), self.funnels_version)
    }

    /// When `name` is a topic of some output version of the profiles or funnels processor
    /// (`<prefix>.profiles`, `<prefix>.funnels.state.v3`, ...): the processor (`profiles`
    /// or `funnels`) and that version.
    pub fn output_version_of(&self, name: &str) -> Option<(&'static str, u32)> {
        let rest = name.strip_prefix(&self.prefix)?.strip_prefix('.')?;
        for output in ["profiles", "funnels"] {
            for suffix in ["", ".state", ".transfers"] {
                let base = format!("{output}{suffix}");
                if rest == base {
                    return Some((output, 1));
                }
                let v = rest
                    .strip_prefix(&base)
                    .and_then(|r| r.strip_prefix(".v"))
                    .and_then(|v| v.parse::<u32>().ok())
                    .filter(|v| *v > 1);
                if let Some(v) = v {
                    return Some((output, v));
                }
            }
        }
        None
    }

    /// The configured (live) output version of `output` (`profiles` or `funnels`).
    pub fn live_version(&self, output: &str) -> u32 {
        if output == "profiles" {
            self.profiles_version
        } else {
            self.funnels_version
        }
    }

    /// Checks names and sizes.
    pub fn validate(&self) -> Result<()> {
        let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
        if self.prefix.is_empty() || self.prefix.len() > 200 || !self.prefix.chars().all(ok_char) {
            return Err(config_err(
                "topics.prefix",
                "must be 1 to 200 characters of a-z, A-Z, 0-9, '.', '_' or '-'",
            ));
        }
        if self.partitions < 1 {
            return Err(config_err("topics.partitions", "must be at least 1"));
        }
        if self.replication_factor < 1 {
            return Err(config_err(
                "topics.replication_factor",
                "must be at least 1",
            ));
        }
        if self.profiles_version < 1 {
            return Err(config_err("topics.profiles_version", "must be at least 1"));
        }
        if self.funnels_version < 1 {
            return Err(config_err("topics.funnels_version", "must be at least 1"));
        }
        let known: Vec<String> = crate::topics::platform_topic_names(self);
        for (name, &n) in &self.partition_overrides {
            if !known.contains(name) {
                return Err(config_err(
                    format!("topics.partition_overrides.\"{name}\""),
                    "is not a platform topic",
                ));
            }
            if n < 1 {
                return Err(config_err(
                    format!("topics.partition_overrides.\"{name}\""),
                    "must be at least 1",
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kafka() -> KafkaConfig {
        KafkaConfig {
            bootstrap_servers: "127.0.0.1:9092".into(),
            client_id: "zt".into(),
            producer: ProducerConfig {
                linger_ms: 5,
                compression: "lz4".into(),
                message_timeout_ms: 30_000,
                batch_size_bytes: 1_000_000,
            },
            consumer: ConsumerConfig {
                session_timeout_ms: 6_000,
                max_poll_interval_ms: 300_000,
                auto_offset_reset: "earliest".into(),
                auto_commit_interval_ms: 1_000,
            },
            options: BTreeMap::new(),
        }
    }

    #[test]
    fn output_versions_name_their_topics() {
        let mut t: TopicsConfig = toml_topics();
        assert_eq!(t.profiles(), "zt.profiles");
        assert_eq!(t.funnels_state(), "zt.funnels.state");
        t.profiles_version = 2;
        t.funnels_version = 3;
        assert_eq!(t.profiles(), "zt.profiles.v2");
        assert_eq!(t.profiles_transfers(), "zt.profiles.transfers.v2");
        assert_eq!(t.funnels(), "zt.funnels.v3");
        assert_eq!(t.funnels_state(), "zt.funnels.state.v3");
        assert_eq!(t.events_resolved(), "zt.events.resolved");
        assert_eq!(t.output_version_of("zt.profiles"), Some(("profiles", 1)));
        assert_eq!(t.output_version_of("zt.profiles.v2"), Some(("profiles", 2)));
        assert_eq!(
            t.output_version_of("zt.funnels.transfers.v12"),
            Some(("funnels", 12))
        );
        assert_eq!(
            t.output_version_of("zt.funnels.state"),
            Some(("funnels", 1))
        );
        assert_eq!(t.output_version_of("zt.events.resolved"), None);
        assert_eq!(t.output_version_of("zt.profiles.v1"), None);
        assert_eq!(t.output_version_of("other.profiles"), None);
        assert_eq!(t.live_version("funnels"), 3);
        t.profiles_version = 0;
        let e = t.validate().unwrap_err().to_string();
        assert!(e.contains("topics.profiles_version"), "{e}");
    }

    fn toml_topics() -> TopicsConfig {
        // Without the version keys: an older configuration still reads, at version 1.
        serde_json::from_str(
            r#"{"prefix": "zt", "partitions": 4, "replication_factor": 1, "partition_overrides": {}}"#,
        )
        .unwrap()
    }

    #[test]
    fn passthrough_refuses_owned_keys() {
        let mut k = kafka();
        k.options
            .insert("socket.keepalive.enable".into(), "true".into());
        k.validate().unwrap();
        k.options.insert("acks".into(), "1".into());
        let err = k.validate().unwrap_err().to_string();
        assert!(err.contains("kafka.options.\"acks\""), "{err}");
        assert!(err.contains("acks=all"), "{err}");
    }

    #[test]
    fn underscored_keys_read_as_librdkafka_names() {
        assert_eq!(librdkafka_key("sasl_password"), "sasl.password");
        let mut k = kafka();
        k.options
            .insert("enable_idempotence".into(), "false".into());
        let err = k.validate().unwrap_err().to_string();
        assert!(err.contains("enable_idempotence"), "{err}");
    }

    #[test]
    fn bad_values_are_refused() {
        let mut k = kafka();
        k.bootstrap_servers = "broker-without-port".into();
        assert!(
            k.validate()
                .unwrap_err()
                .to_string()
                .contains("kafka.bootstrap_servers")
        );
        let mut k = kafka();
        k.producer.compression = "brotli".into();
        assert!(k.validate().is_err());
        let mut k = kafka();
        k.consumer.auto_offset_reset = "smallest".into();
        assert!(k.validate().is_err());
    }

    #[test]
    fn secrets_in_options_are_redacted_when_printed() {
        let mut k = kafka();
        k.options.insert("sasl.password".into(), "hunter2".into());
        k.options.insert("sasl.username".into(), "zt".into());
        let json = serde_json::to_string(&k).unwrap();
        assert!(!json.contains("hunter2"), "{json}");
        assert!(json.contains("\"sasl.username\":\"zt\""), "{json}");
    }
}
