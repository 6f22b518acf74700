//! Errors of the processors.

/// A processor error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration value is invalid.
    #[error("invalid configuration {key}: {reason}")]
    Config {
        /// The key, as in the TOML file.
        key: String,
        /// Why.
        reason: String,
    },
    /// The broker or client failed.
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// Client construction or topic checks failed.
    #[error(transparent)]
    Client(#[from] zt_kafka::Error),
    /// A record of an internal topic could not be read.
    #[error("{topic} partition {partition} offset {offset}: {reason}")]
    Corrupt {
        /// Topic.
        topic: String,
        /// Partition.
        partition: i32,
        /// Offset.
        offset: i64,
        /// Why.
        reason: String,
    },
    /// A topic layout the processor cannot work with.
    #[error("topic layout: {0}")]
    Topics(String),
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
