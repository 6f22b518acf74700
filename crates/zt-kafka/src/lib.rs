//! Kafka clients for zhongtai, built on rdkafka (librdkafka).
//!
//! - [`config`]: the `[kafka]` and `[topics]` sections, with a passthrough map of librdkafka
//!   options that refuses keys clashing with first-class settings;
//! - [`client`]: producers (idempotent, `acks=all`) and consumers that store an offset only
//!   when told (`enable.auto.offset.store=false`), so an offset is committed only after the
//!   work it covers is done (rdkafka's `at_least_once` example);
//! - [`topics`]: the platform's topics from PLATFORM.md and their creation through the
//!   admin API (idempotent: existing topics are left as they are).
//!
//! Delivery: a send completes only when the broker acknowledged the record from all
//! in-sync replicas; the idempotent producer makes librdkafka's internal retries
//! duplicate-free per partition.

pub mod client;
pub mod config;
pub mod error;
pub mod group;
pub mod suppress;
pub mod topics;

pub use client::{ConsumerOptions, build_consumer, build_producer};
pub use config::{KafkaConfig, TopicsConfig};
pub use error::{Error, Result};
pub use topics::{TopicSpec, create_topics, platform_topics};
