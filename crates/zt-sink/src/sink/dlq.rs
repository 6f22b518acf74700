//! Dead letters of the sink: records that do not decode or map, and rows ClickHouse
//! rejects, go to the dead-letter topic as `zt.DeadLetter` with stage `sink`, the reason,
//! the error text, the original record bytes and the origin topic/partition/offset.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rdkafka::producer::{FutureProducer, FutureRecord};
use sha2::{Digest, Sha256};
use zt_model::DeadLetter;

use crate::error::{Error, Result};

/// Why a record was dead-lettered (the `reason` field and the metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Not a decodable `zt.Event` in the wire format.
    DecodeFailed,
    /// Decoded, but a value cannot be represented in the tables.
    Unmappable,
    /// ClickHouse refused the record's rows.
    ClickHouseRejected,
}

impl Reason {
    /// The machine-readable reason.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::DecodeFailed => "decode_failed",
            Reason::Unmappable => "unmappable",
            Reason::ClickHouseRejected => "clickhouse_rejected",
        }
    }
}

/// One record to dead-letter.
#[derive(Debug)]
pub(crate) struct Rejected<'a> {
    pub(crate) topic: &'a str,
    pub(crate) partition: i32,
    pub(crate) offset: i64,
    pub(crate) timestamp_ms: Option<i64>,
    pub(crate) value: &'a [u8],
    pub(crate) reason: Reason,
    /// The table whose insert refused it, for ClickHouse rejections.
    pub(crate) table: Option<&'a str>,
    pub(crate) message: String,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The source of a `<prefix>.events.<source>` topic, else `unknown`.
fn source_of(topic: &str) -> String {
    topic
        .rsplit_once(".events.")
        .map(|(_, s)| s)
        .filter(|s| s.parse::<zt_model::Source>().is_ok())
        .unwrap_or("unknown")
        .to_owned()
}

/// Builds the dead letter. `dlq_id` is derived from origin, reason and table, so a record
/// dead-lettered again after a crash (before its offset was committed) has the same id.
pub(crate) fn dead_letter(r: &Rejected<'_>) -> DeadLetter {
    let mut h = Sha256::new();
    for part in [
        "sink",
        r.topic,
        &r.partition.to_string(),
        &r.offset.to_string(),
        r.reason.as_str(),
        r.table.unwrap_or(""),
    ] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    let now = now_ms();
    DeadLetter {
        dlq_id: hex::encode(&h.finalize()[..16]),
        stage: "sink".into(),
        source: source_of(r.topic),
        reason: r.reason.as_str().into(),
        field: None,
        message: match r.table {
            Some(t) => format!("table {t}: {}", r.message),
            None => r.message.clone(),
        },
        original: r.value.to_vec(),
        content_type: Some("application/vnd.zt.event+avro".into()),
        received_at: r.timestamp_ms.unwrap_or(now),
        failed_at: now,
        origin_topic: Some(r.topic.to_owned()),
        origin_partition: Some(r.partition),
        origin_offset: Some(r.offset),
    }
}

/// Sends one dead letter and waits for the broker's acknowledgement.
pub(crate) async fn send(producer: &FutureProducer, topic: &str, dl: &DeadLetter) -> Result<()> {
    let bytes = zt_model::encode(dl).map_err(Error::Encode)?;
    producer
        .send(
            FutureRecord::to(topic).key(&dl.dlq_id).payload(&bytes),
            Duration::from_secs(30),
        )
        .await
        .map(|_| ())
        .map_err(|(source, _)| Error::Kafka {
            operation: "send dead letter",
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_letters_are_deterministic_and_decodable() {
        let r = Rejected {
            topic: "zt.events.erp",
            partition: 1,
            offset: 7,
            timestamp_ms: Some(5),
            value: b"\0abc",
            reason: Reason::ClickHouseRejected,
            table: Some("orders"),
            message: "Code: 395".into(),
        };
        let a = dead_letter(&r);
        let b = dead_letter(&r);
        assert_eq!(a.dlq_id, b.dlq_id);
        assert_eq!(a.source, "erp");
        assert_eq!(a.message, "table orders: Code: 395");
        assert_eq!(a.origin_offset, Some(7));
        let bytes = zt_model::encode(&a).unwrap();
        let back: DeadLetter = zt_model::decode(&bytes).unwrap();
        assert_eq!(back.original, b"\0abc");
        let other = dead_letter(&Rejected { offset: 8, ..r });
        assert_ne!(other.dlq_id, a.dlq_id);
        assert_eq!(source_of("x.events.nope"), "unknown");
    }
}
