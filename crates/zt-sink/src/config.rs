//! The `[clickhouse]` and `[sink]` configuration sections.

use serde::{Deserialize, Serialize};
use zt_runtime::Secret;

use crate::error::{Error, Result};

/// ClickHouse parses an HTTP insert into blocks of `max_insert_block_size` rows (default
/// 1,048,576); a batch above that could be split between two parts in the middle of one
/// record's rows, which the per-record resume assumes never happens.
pub const MAX_BATCH_ROWS: u32 = 1_000_000;

/// `[clickhouse]`: the server the sink, `zt migrate` and the query layer use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClickHouseConfig {
    /// HTTP URL of the server. Default `http://127.0.0.1:8123`.
    pub url: String,
    /// Database holding zhongtai's tables and views (created by `zt migrate`). Default
    /// `zhongtai`.
    pub database: String,
    /// User. Default `default`.
    pub user: String,
    /// Password (secret). Default empty.
    pub password: Secret,
    /// Cluster name from the servers' `remote_servers`, or empty for a single server.
    /// When set, `zt migrate` renders the cluster variants (ON CLUSTER, Replicated*MergeTree,
    /// Distributed) and the sink inserts with `insert_distributed_sync=1`. Default empty.
    #[serde(default)]
    pub cluster: String,
}

fn config_err(key: &str, reason: impl Into<String>) -> Error {
    Error::Config {
        key: key.to_owned(),
        reason: reason.into(),
    }
}

/// True for a name usable unquoted in DDL: letters, digits, `_` (and `-` for clusters).
pub(crate) fn is_plain_name(s: &str, allow_dash: bool) -> bool {
    !s.is_empty()
        && s.len() <= 200
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || (allow_dash && c == '-'))
}

impl ClickHouseConfig {
    /// Checks the URL and names.
    pub fn validate(&self) -> Result<()> {
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            return Err(config_err(
                "clickhouse.url",
                "must start with http:// or https://",
            ));
        }
        if !is_plain_name(&self.database, false) {
            return Err(config_err(
                "clickhouse.database",
                "must be letters, digits or _",
            ));
        }
        if !self.cluster.is_empty() && !is_plain_name(&self.cluster, true) {
            return Err(config_err(
                "clickhouse.cluster",
                "must be letters, digits, _ or -",
            ));
        }
        Ok(())
    }

    /// A client for the configured server, bound to the configured database.
    ///
    /// Schema validation is off: Debian's ClickHouse 18.16 rejects the setting the
    /// `clickhouse` crate's validation sends (INFRA.md); row types and tables are kept in
    /// step by the sink's integration tests instead.
    pub fn client(&self) -> clickhouse::Client {
        self.server_client().with_database(&self.database)
    }

    /// A client for the server without a default database (to create it).
    pub fn server_client(&self) -> clickhouse::Client {
        let mut c = clickhouse::Client::default()
            .with_url(&self.url)
            .with_user(&self.user)
            .with_validation(false);
        if !self.password.is_empty() {
            c = c.with_password(self.password.expose());
        }
        c
    }
}

/// `[sink]`: the ClickHouse sink (`zt sink`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    /// Consumer group of the sink. Default `zt-sink`.
    pub group_id: String,
    /// Topics to consume. Empty (the default) means the six source topics
    /// `<prefix>.events.<source>`. Every topic must carry `zt.Event` records.
    pub topics: Vec<String>,
    /// Flush when one table's pending rows, every partition together, reach this many (a
    /// flush inserts every partition's pending records, one INSERT per table, so this is
    /// the largest INSERT). Larger batches insert faster and replay more after a crash.
    /// At most 1,000,000. Default 100000.
    pub batch_max_rows: u32,
    /// Flush when the pending rows of every table and partition reach this many bytes
    /// (RowBinary size, before compression): the bound on the memory batches take.
    /// Default 67108864 (64 MiB).
    pub batch_max_bytes: u64,
    /// Flush when the oldest pending record (of any partition) waited this long, in
    /// milliseconds: the sink's added latency when traffic is low. Default 1000.
    pub batch_max_age_ms: u64,
    /// First wait after a failed insert, commit or dead-letter send, in milliseconds;
    /// doubled after each failure up to `retry_max_backoff_ms`. Default 100.
    pub retry_initial_backoff_ms: u64,
    /// Longest wait between retries, in milliseconds. Default 10000.
    pub retry_max_backoff_ms: u64,
    /// An insert that has not ended after this many milliseconds is abandoned and
    /// retried. Keep it well below `kafka.consumer.max_poll_interval_ms`. Default 60000.
    pub insert_timeout_ms: u64,
    /// How often the consumer lag per partition is refreshed (librdkafka statistics),
    /// in milliseconds; 0 turns the lag metric off. Default 5000.
    pub lag_interval_ms: u64,
    /// Events (records of an events topic) whose `event_id` the sink stored from the same
    /// partition within this many records before are not stored again: an upstream
    /// replay (the identity processor re-sending after a crash or a rebalance, a client
    /// retry ingest no longer remembers) repeats an event at a new offset. Per partition;
    /// seeded from ClickHouse when a partition starts. 0 turns it off. Default 10000.
    pub dedup_window_records: u32,
}

impl SinkConfig {
    /// Only the live output version of a processor may be loaded (docs/operations.md,
    /// "Backfill"): another version's rows would mix with it in the same tables. Refuses a
    /// `sink.topics` entry that names another version than `[topics]` does.
    pub fn check_output_versions(&self, topics: &zt_kafka::TopicsConfig) -> Result<()> {
        for t in &self.topics {
            if let Some((output, v)) = topics.output_version_of(t) {
                let live = topics.live_version(output);
                if v != live {
                    return Err(config_err(
                        "sink.topics",
                        format!(
                            "`{t}` is version {v} of the {output} output, but \
                             topics.{output}_version = {live}: list version {live}'s topic instead"
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Checks sizes and times.
    pub fn validate(&self) -> Result<()> {
        if self.group_id.trim().is_empty() {
            return Err(config_err("sink.group_id", "must not be empty"));
        }
        if self.batch_max_rows == 0 || self.batch_max_rows > MAX_BATCH_ROWS {
            return Err(config_err(
                "sink.batch_max_rows",
                format!("must be 1 to {MAX_BATCH_ROWS}"),
            ));
        }
        if self.batch_max_bytes == 0 {
            return Err(config_err("sink.batch_max_bytes", "must be > 0"));
        }
        if self.batch_max_age_ms == 0 {
            return Err(config_err("sink.batch_max_age_ms", "must be > 0"));
        }
        if self.retry_initial_backoff_ms == 0
            || self.retry_max_backoff_ms < self.retry_initial_backoff_ms
        {
            return Err(config_err(
                "sink.retry_max_backoff_ms",
                "must be >= sink.retry_initial_backoff_ms > 0",
            ));
        }
        if self.insert_timeout_ms == 0 {
            return Err(config_err("sink.insert_timeout_ms", "must be > 0"));
        }
        if self.topics.iter().any(|t| t.trim().is_empty()) {
            return Err(config_err("sink.topics", "names must not be empty"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ch() -> ClickHouseConfig {
        ClickHouseConfig {
            url: "http://127.0.0.1:8123".into(),
            database: "zhongtai".into(),
            user: "default".into(),
            password: Secret::default(),
            cluster: String::new(),
        }
    }

    #[test]
    fn clickhouse_values_are_checked() {
        ch().validate().unwrap();
        let mut c = ch();
        c.url = "127.0.0.1:8123".into();
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("clickhouse.url")
        );
        let mut c = ch();
        c.database = "zt; DROP".into();
        assert!(c.validate().is_err());
        let mut c = ch();
        c.cluster = "prod-cluster_1".into();
        c.validate().unwrap();
        c.cluster = "a'b".into();
        assert!(c.validate().is_err());
    }
}
