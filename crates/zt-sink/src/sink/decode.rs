//! The decode stage: received records are decoded (`zt_model::decode`, or the processors'
//! JSON records for the processed topics, [`crate::processed`]) and mapped to rows on a
//! thread of their own, in the order they were received.
//!
//! Decoding is the sink's main CPU cost. Done inline, it stopped while a flush's INSERTs
//! ran (the sink task does not poll the consumer while an insert is in flight, which is
//! what keeps rebalances safe), and ClickHouse sat idle while the task decoded. With this
//! stage, the records received before a flush are decoded while the flush's INSERTs run.
//! The consumer is still only ever polled by the sink task, never during an insert: this
//! thread only turns bytes into rows.
//!
//! Bounded by records (`batch_max_rows`, 1,000 to 1,000,000) and value bytes
//! (`batch_max_bytes`, 1 to 256 MiB) in flight, so a fast broker cannot make it buffer more
//! than about one batch ahead: enough for the next batch to fill while a flush's INSERTs
//! run.

use std::collections::HashMap;
use std::sync::mpsc;

use tokio::sync::mpsc as tmpsc;
use zt_kafka::suppress::Suppressions;
use zt_model::Event;

use super::context::PartKey;
use super::dlq::Reason;
use super::error_text;
use crate::config::SinkConfig;
use crate::error::{Error, Result};
use crate::processed::{RecordError, TopicKind, map_processed};
use crate::rows::{EncodedRows, Origin, map_event};

/// A received record, not yet decoded.
#[derive(Debug)]
pub(crate) struct Raw {
    pub(crate) key: PartKey,
    /// The assignment of the partition it was received under.
    pub(crate) epoch: u64,
    pub(crate) offset: i64,
    pub(crate) timestamp_ms: Option<i64>,
    /// The value (empty when the record has none).
    pub(crate) value: Vec<u8>,
    /// The record has no value (a tombstone).
    pub(crate) null: bool,
}

/// A record with its rows, or why it has none (it is dead-lettered).
#[derive(Debug)]
pub(crate) struct Decoded {
    pub(crate) raw: Raw,
    pub(crate) rows: std::result::Result<EncodedRows, (Reason, String)>,
    /// No rows on purpose, counted as skipped for this table (index into [`TABLES`]): a
    /// tombstone of a processed topic, or a record of an erased person or identifier
    /// (`zt erase`, the suppression list).
    pub(crate) tombstone: Option<usize>,
    /// The [`id_key`] of the event's id, for a record of an events topic that has rows
    /// (the sink's `dedup_window_records`), computed here rather than on the sink task.
    pub(crate) event_id: Option<u128>,
}

/// True when a processor's JSON record names an erased person or identifier: by
/// `person_id`, `from`, `into`, and a link's `id_type`/`id_value`.
fn processed_suppressed(value: &[u8], list: &Suppressions) -> bool {
    if list.is_empty() {
        return false;
    }
    let Ok(serde_json::Value::Object(o)) = serde_json::from_slice(value) else {
        return false;
    };
    let text = |k: &str| o.get(k).and_then(serde_json::Value::as_str);
    let persons = ["person_id", "from", "into"]
        .into_iter()
        .filter_map(|k| text(k).map(|v| ("person_id", v)));
    let link = match (text("id_type"), text("id_value")) {
        (Some(t), Some(v)) => zt_kafka::suppress::KINDS
            .iter()
            .find(|k| **k == t)
            .map(|k| (*k, v)),
        _ => None,
    };
    list.suppresses_any(persons.chain(link))
}

/// Decodes, maps and encodes one record of a topic of `kind`; a record that names an
/// erased person or identifier (the suppression list) gets no rows
/// ([`Decoded::tombstone`]). Events are decoded once.
pub(crate) fn decode(raw: Raw, kind: TopicKind, list: &Suppressions) -> Decoded {
    let origin = Origin {
        topic: raw.key.0.clone(),
        partition: raw.key.1,
        offset: raw.offset,
    };
    let skip = |raw: Raw| Decoded {
        raw,
        rows: Ok(EncodedRows::default()),
        tombstone: Some(kind.tables()[0]),
        event_id: None,
    };
    if kind != TopicKind::Events {
        if raw.null {
            // Compaction deletes: nothing to load (the table keeps the last snapshot; see
            // docs/sink.md).
            return skip(raw);
        }
        if processed_suppressed(&raw.value, list) {
            // An erased person's record: never loaded again (docs/erasure.md).
            return skip(raw);
        }
        let rows = match map_processed(kind, &raw.value, &origin) {
            Ok(rows) => rows
                .encode()
                .map_err(|e| (Reason::Unmappable, e.to_string())),
            Err(RecordError::Decode(m)) => Err((Reason::DecodeFailed, m)),
            Err(RecordError::Map(e)) => Err((Reason::Unmappable, e.to_string())),
        };
        return Decoded {
            raw,
            rows,
            tombstone: None,
            event_id: None,
        };
    }
    let (rows, event_id) = match zt_model::decode::<Event>(&raw.value) {
        Ok(ev) if list.suppresses_event(&ev) => return skip(raw),
        Ok(ev) => (
            map_event(&ev, &origin)
                .map_err(|e| (Reason::Unmappable, e.to_string()))
                .and_then(|rows| {
                    rows.encode()
                        .map_err(|e| (Reason::Unmappable, e.to_string()))
                }),
            Some(id_key(&ev.event_id)),
        ),
        Err(e) => (Err((Reason::DecodeFailed, error_text(&e))), None),
    };
    Decoded {
        raw,
        rows,
        tombstone: None,
        event_id,
    }
}

/// The 128-bit key of an event id in the sink's deduplication window: two SipHash-1-3
/// digests with fixed keys (the same in every run of the process; the window and its seed
/// are both built in one process). Two different ids share a key with a probability of
/// about 2^-128 per pair.
pub(crate) fn id_key(id: &str) -> u128 {
    use std::hash::{Hash, Hasher};
    let half = |salt: u8| {
        // `DefaultHasher::new` has fixed keys (unlike `RandomState`).
        let mut h = std::collections::hash_map::DefaultHasher::new();
        salt.hash(&mut h);
        id.hash(&mut h);
        h.finish()
    };
    (u128::from(half(0)) << 64) | u128::from(half(1))
}

/// The decode thread and its queues.
#[derive(Debug)]
pub(crate) struct Decoder {
    tx: mpsc::Sender<Raw>,
    rx: tmpsc::UnboundedReceiver<Decoded>,
    pending: usize,
    pending_bytes: usize,
    max_records: usize,
    max_bytes: usize,
}

impl Decoder {
    /// Starts the thread. It stops when the decoder is dropped.
    /// `kinds` names the consumed topics that are not events ([`TopicKind::Events`] is
    /// the default).
    pub(crate) fn start(
        cfg: &SinkConfig,
        kinds: HashMap<String, TopicKind>,
        suppressions: Suppressions,
    ) -> Result<Self> {
        let (tx, in_rx) = mpsc::channel::<Raw>();
        let (out_tx, rx) = tmpsc::unbounded_channel();
        std::thread::Builder::new()
            .name("zt-sink-decode".into())
            .spawn(move || {
                while let Ok(raw) = in_rx.recv() {
                    let kind = kinds
                        .get(raw.key.0.as_str())
                        .copied()
                        .unwrap_or(TopicKind::Events);
                    let d = decode(raw, kind, &suppressions);
                    if out_tx.send(d).is_err() {
                        break;
                    }
                }
            })
            .map_err(|source| Error::Io {
                path: "sink decode thread".into(),
                source,
            })?;
        Ok(Decoder {
            tx,
            rx,
            pending: 0,
            pending_bytes: 0,
            // About one batch ahead: enough for the next batch to fill during a flush.
            max_records: (cfg.batch_max_rows as usize).clamp(1_000, 1_000_000),
            max_bytes: usize::try_from(cfg.batch_max_bytes)
                .unwrap_or(usize::MAX)
                .clamp(1 << 20, 256 << 20),
        })
    }

    /// True when another record may be submitted.
    pub(crate) fn has_room(&self) -> bool {
        self.pending < self.max_records && self.pending_bytes < self.max_bytes
    }

    /// Records submitted and not yet taken back with [`Decoder::next`].
    pub(crate) fn pending(&self) -> usize {
        self.pending
    }

    /// Queues a record for decoding.
    pub(crate) fn submit(&mut self, raw: Raw) {
        self.pending += 1;
        self.pending_bytes += raw.value.len();
        // The thread only stops when `rx` is dropped or it panicked; `next` reports the
        // latter.
        let _ = self.tx.send(raw);
    }

    /// The next decoded record if one is ready.
    pub(crate) fn try_next(&mut self) -> Option<Decoded> {
        let d = self.rx.try_recv().ok()?;
        self.pending -= 1;
        self.pending_bytes -= d.raw.value.len();
        Some(d)
    }

    /// The next decoded record, in submission order. Cancel-safe.
    pub(crate) async fn next(&mut self) -> Result<Decoded> {
        match self.rx.recv().await {
            Some(d) => {
                self.pending -= 1;
                self.pending_bytes -= d.raw.value.len();
                Ok(d)
            }
            None => Err(Error::Io {
                path: "sink decode thread".into(),
                source: std::io::Error::other("the decode thread stopped"),
            }),
        }
    }
}
