//! zhongtai's demo tooling.
//!
//! - [`scenario`]: a seeded synthetic e-commerce world (six sources, personas, channels,
//!   campaigns with spend, an A/B experiment with a known true uplift, refunds, delivery
//!   exceptions, tickets, clock skew and late arrivals) and its ground truth;
//! - [`send`]: posts the world to `zt ingest` over HTTP with each source's write key,
//!   paced, with retries that ingest's deduplication makes safe, and a progress bar;
//! - [`drain`]: consumer-group lag from the broker, to know when the pipeline has caught up;
//! - [`demo`]: `zt demo`, everything on the local stack in one command.
//!
//! What goes on the wire is exactly what the upstream systems would send: native JSON
//! records to `/v1/sources/{source}/events` and Segment batches to `/v1/batch`; nothing
//! reaches Kafka or ClickHouse except through ingest.

pub mod chaos;
pub mod demo;
pub mod drain;
pub mod scenario;
pub mod send;
pub mod verify;

pub use demo::{DemoOptions, DemoOutcome};
pub use scenario::{Params, Scenario, Truth, generate};
pub use send::{SendOptions, SendReport};

/// The wall clock as UTC milliseconds since the epoch.
pub fn now_ms() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis(),
    )
    .unwrap_or(i64::MAX)
}
