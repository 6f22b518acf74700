//! zhongtai's operator tools.
//!
//! - [`replay`]: `zt replay dlq list|run`: lists the dead letters on `<prefix>.dlq` by
//!   source, reason and day, and re-submits the selected ones of stage `ingest` through the
//!   current normalisers ([`zt_ingest::replay::Replayer`]) after a configuration fix.
//!   Events that now normalise are published to `<prefix>.events.<source>` exactly as
//!   ingest publishes them; items that still fail for another reason get a new dead
//!   letter; each replayed dead letter gets a marker on the compacted
//!   `<prefix>.dlq.replays`, written after the broker acknowledged its records, so a second
//!   run does not publish it again.
//! - [`backfill`]: `zt replay backfill run|finish`: rebuilds the profiles or funnels
//!   processor's output from its inputs as a new output version (new topics, new consumer
//!   group, fresh state) next to the live one, then, after the operator switched the
//!   configuration to it, deletes the other versions' rows from ClickHouse.
//! - [`erase`]: `zt erase`: erasure of persons and identifiers (PIPL / GDPR,
//!   docs/erasure.md): resolves them through the identity graph in ClickHouse, puts them
//!   on the suppression list `<prefix>.suppressions`, deletes their rows from every
//!   ClickHouse table (mutations, waited for), writes tombstones on the compacted topics
//!   keyed by person or identifier, and one audit record on `<prefix>.erasures` (counts
//!   and a digest only).
//! - [`progress`]: a plain progress bar on stderr.
//!
//! Nothing here prints personal data: reports carry dead-letter ids, sources, reasons,
//! fields, ingest's messages (which never contain input values), erasure ids and counts.

pub mod backfill;
pub mod erase;
pub mod progress;
pub mod replay;
mod topic;

pub use replay::{
    Filter, ListReport, Marker, Outcome, ReplayParams, RunOptions, RunReport, list, parse_time, run,
};
