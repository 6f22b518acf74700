//! The dead-letter record (`zt.DeadLetter`) written to `zt.dlq` for every rejected input.

use serde::{Deserialize, Serialize};

/// A rejected input with why, where and the original bytes, so it can be replayed after a
/// fix. `message` never contains personal data; `original` is the input item as received.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Deterministic id: the same input rejected for the same reason gives the same id.
    pub dlq_id: String,
    /// Component that rejected it: ingest, sink, identity, profiles, funnels.
    pub stage: String,
    /// Source the input belongs to, or `unknown`.
    pub source: String,
    /// Machine-readable reason, e.g. `missing_field`.
    pub reason: String,
    /// The field at fault as a JSON path, when there is one.
    pub field: Option<String>,
    /// Human-readable error without personal data.
    pub message: String,
    /// The original input item.
    pub original: Vec<u8>,
    /// Media type of `original`.
    pub content_type: Option<String>,
    /// When the input was received (ms).
    pub received_at: i64,
    /// When it was rejected (ms).
    pub failed_at: i64,
    /// For stages that consume Kafka: input topic, partition and offset.
    pub origin_topic: Option<String>,
    #[allow(missing_docs)]
    pub origin_partition: Option<i32>,
    #[allow(missing_docs)]
    pub origin_offset: Option<i64>,
}
