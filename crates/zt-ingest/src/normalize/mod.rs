//! Source normalisers: native records of each system and Segment-style tracking calls to
//! canonical [`Event`]s. Stateless per-event transforms; they never panic and return a
//! [`Rejection`] naming the field for bad input.

pub(crate) mod native;
pub(crate) mod segment;

use serde_json::Value;
use sha2::{Digest, Sha256};
use zt_model::{Event, Source};

use crate::error::Rejection;
use crate::fields::{Ctx, Record};

/// What every normaliser gets besides the record.
#[derive(Debug, Clone)]
pub struct Envelope<'a> {
    /// Ingest's receive time, epoch ms.
    pub received_at: i64,
    /// The record's bytes, from which an id is derived when the record has none.
    pub raw: &'a [u8],
    /// Channels that count as private-domain traffic.
    pub private_channels: &'a [String],
}

impl Envelope<'_> {
    /// The event id of a record without one: derived from the source and the record's
    /// bytes, so a retried request gets the same id.
    pub fn derived_id(&self, source: Source) -> String {
        derive_event_id(source, self.raw)
    }

    /// True when `channel` is a configured private-domain channel.
    pub fn is_private_channel(&self, channel: Option<&str>) -> bool {
        channel.is_some_and(|c| self.private_channels.iter().any(|p| p == c))
    }
}

/// The id of a record without one: `<source>-` and 32 hex digits of SHA-256 over the
/// source name and the record's bytes.
pub fn derive_event_id(source: Source, item: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(source.as_str().as_bytes());
    h.update(b"\n");
    h.update(item);
    let d = h.finalize();
    format!("{source}-{}", hex::encode(&d[..16]))
}

/// Normalises one parsed item of `source`. `segment_kind` is the call type implied by a
/// Segment endpoint (`/v1/track` → `track`), `None` for batch items and native records.
pub fn normalize(
    source: Source,
    value: Value,
    segment_kind: Option<&str>,
    ctx: &Ctx<'_>,
    env: Envelope<'_>,
) -> Result<Event, Rejection> {
    let rec = Record::new(value, "", ctx)?;
    match source {
        Source::Tracking => segment::normalize(rec, segment_kind, ctx, env),
        other => native::normalize(other, &rec, env),
    }
}
