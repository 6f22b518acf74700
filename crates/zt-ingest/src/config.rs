//! The `[ingest]` configuration section.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};
use zt_model::Source;

use crate::error::ConfigError;

/// `[ingest]`: the HTTP front door.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestConfig {
    /// Address of the public API. Default `0.0.0.0:8080`.
    pub listen: SocketAddr,
    /// Largest accepted event (one item of a batch), bytes. Default 32768 (Segment's 32 KB).
    pub max_event_bytes: usize,
    /// Largest accepted request body, bytes. Default 512000 (Segment's 500 KB).
    pub max_batch_bytes: usize,
    /// Most events in one request. Default 2500 (Segment's batch limit).
    pub max_batch_events: usize,
    /// A repeated event id of the same source inside this window is acknowledged but not
    /// published again, seconds. Default 86400. 0 turns deduplication off.
    pub dedup_window_secs: u64,
    /// Most event ids remembered for deduplication; the oldest are forgotten first.
    /// Default 1000000 (about 100 MB).
    pub dedup_max_entries: usize,
    /// At start, the ids of the events published in this many last seconds are read back
    /// from the event topics into the dedup window (at most `dedup_max_entries` records),
    /// so a retry after a crash is still deduplicated; ingest answers 503 until that is
    /// done. Default 3600. 0 starts with an empty window.
    pub dedup_restore_secs: u64,
    /// How long a publish may wait for the broker's acknowledgement before the request
    /// fails with 503, milliseconds. Default 10000. Bounded by `kafka.producer.message_timeout_ms`.
    pub publish_timeout_ms: u64,
    /// Channels counted as private-domain traffic when an input does not say so itself.
    /// Default `["wechat_group", "wechat_oa", "wecom", "wechat_mini", "private_live"]`.
    pub private_domain_channels: Vec<String>,
    /// Per-source write keys, rate limits and field mappings, by source name
    /// (`crm`, `erp`, `logistics`, `tracking`, `service`, `marketing`).
    pub sources: BTreeMap<String, SourceConfig>,
}

/// `[ingest.sources.<source>]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SourceConfig {
    /// Accepted write keys, stored as SHA-256 hex digests of the key (never the key).
    /// `zt ingest hash-key KEY` prints the digest. Default none: the source accepts nothing.
    pub write_keys: Vec<WriteKey>,
    /// Events per second one key may publish; 0 = unlimited. Default 0.
    pub rate_limit_per_sec: u32,
    /// Burst above the rate, events. Default: one second's worth.
    pub rate_limit_burst: u32,
    /// How this deployment's variant of the system names and formats its fields.
    pub mapping: Mapping,
}

/// One write key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WriteKey {
    /// A name for the key, used in logs and metrics (not secret), e.g. `crm-prod`.
    pub id: String,
    /// Lower-case hex SHA-256 of the key.
    pub sha256: String,
}

/// Onboarding a variant of a system by configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Mapping {
    /// Renames applied to each record before normalisation: the variant's field name to
    /// the documented native name, e.g. `cust_no = "customer_id"`. Top-level fields and,
    /// for ERP, order-line fields. Default none.
    pub renames: BTreeMap<String, String>,
    /// How times are written: `rfc3339` (default), `unix_ms`, `unix_s`, or a pattern with
    /// `%Y %m %d %H %M %S` (and optional `.%f`), read in `time_zone`.
    pub time_format: String,
    /// UTC offset of times without one, e.g. `+08:00`. Default `+08:00`.
    pub time_zone: String,
    /// Unit of money amounts: `minor` (fen, integers; default) or `major` (yuan with up to
    /// two decimals, converted exactly).
    pub amount_unit: AmountUnit,
}

impl Default for Mapping {
    fn default() -> Self {
        Mapping {
            renames: BTreeMap::new(),
            time_format: "rfc3339".into(),
            time_zone: "+08:00".into(),
            amount_unit: AmountUnit::Minor,
        }
    }
}

impl Mapping {
    /// A variant's mapping: `renames` (variant name, documented name), times in
    /// `time_format` at `time_zone`, amounts in `amount_unit`.
    pub fn variant(
        renames: &[(&str, &str)],
        time_format: &str,
        time_zone: &str,
        amount_unit: AmountUnit,
    ) -> Mapping {
        Mapping {
            renames: renames
                .iter()
                .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
                .collect(),
            time_format: time_format.into(),
            time_zone: time_zone.into(),
            amount_unit,
        }
    }

    /// The ERP variant of docs/sources/erp.md (fixture `erp_variant.json`): renamed fields
    /// at both levels, local times without offset, amounts in yuan. `order_no` is renamed
    /// to `order_id` unless `with_order_no` is false (the docs' "before" case).
    pub fn erp_variant_example(with_order_no: bool) -> Mapping {
        let mut renames = vec![
            ("msg_id", "event_id"),
            ("biz_time", "occurred_at"),
            ("send_time", "sent_at"),
            ("cust_no", "customer_id"),
            ("buyer_mobile", "mobile"),
            ("shop_id", "store_id"),
            ("pay_type", "payment_method"),
            ("goods_amount", "subtotal"),
            ("discount_amount", "discount"),
            ("freight", "shipping_fee"),
            ("pay_amount", "total"),
            ("refund_amt", "refund_amount"),
            ("items", "lines"),
            ("sku_code", "sku"),
            ("qty", "quantity"),
            ("price", "unit_price"),
        ];
        if with_order_no {
            renames.push(("order_no", "order_id"));
        }
        Mapping::variant(&renames, "%Y-%m-%d %H:%M:%S", "+08:00", AmountUnit::Major)
    }
}

/// Unit of money amounts in the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AmountUnit {
    /// Integer minor units (fen).
    Minor,
    /// Major units (yuan) with up to two decimals.
    Major,
}

impl IngestConfig {
    /// Checks values; errors name the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |key: String, reason: &str| ConfigError {
            key,
            reason: reason.to_owned(),
        };
        if self.max_event_bytes == 0 || self.max_event_bytes > self.max_batch_bytes {
            return Err(err(
                "ingest.max_event_bytes".into(),
                "must be > 0 and at most ingest.max_batch_bytes",
            ));
        }
        if self.max_batch_events == 0 {
            return Err(err("ingest.max_batch_events".into(), "must be > 0"));
        }
        if self.dedup_max_entries > crate::dedup::MAX_ENTRIES {
            return Err(err(
                "ingest.dedup_max_entries".into(),
                "must be at most 268435456",
            ));
        }
        if self.publish_timeout_ms == 0 {
            return Err(err("ingest.publish_timeout_ms".into(), "must be > 0"));
        }
        for (name, src) in &self.sources {
            let key = |k: &str| format!("ingest.sources.{name}.{k}");
            if name.parse::<Source>().is_err() {
                return Err(err(
                    format!("ingest.sources.{name}"),
                    "is not a source: crm, erp, logistics, tracking, service or marketing",
                ));
            }
            for wk in &src.write_keys {
                if wk.sha256.len() != 64
                    || !wk
                        .sha256
                        .bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
                {
                    return Err(err(
                        key("write_keys"),
                        "sha256 must be 64 lower-case hex digits (zt ingest hash-key KEY)",
                    ));
                }
                if wk.id.is_empty() {
                    return Err(err(key("write_keys"), "every key needs an id"));
                }
            }
            crate::fields::TimeFormat::parse(&src.mapping.time_format, &src.mapping.time_zone)
                .map_err(|reason| err(key("mapping"), &reason))?;
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests_support {
    use super::*;

    /// The defaults of `config/defaults.toml`, without sources.
    pub(crate) fn config() -> IngestConfig {
        IngestConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            max_event_bytes: 32 * 1024,
            max_batch_bytes: 500 * 1024,
            max_batch_events: 2500,
            dedup_window_secs: 86_400,
            dedup_max_entries: 1_000_000,
            dedup_restore_secs: 3_600,
            publish_timeout_ms: 10_000,
            private_domain_channels: vec!["wechat_group".into(), "wecom".into()],
            sources: BTreeMap::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_dedup_window_beyond_its_index_is_refused_by_name() {
        let mut cfg = super::tests_support::config();
        cfg.dedup_max_entries = crate::dedup::MAX_ENTRIES;
        assert!(cfg.validate().is_ok());
        cfg.dedup_max_entries += 1;
        let e = cfg.validate().unwrap_err();
        assert_eq!(e.key, "ingest.dedup_max_entries");
    }
}
