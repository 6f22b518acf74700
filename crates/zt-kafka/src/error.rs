//! Errors of the Kafka crate.

/// Result with the Kafka crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong talking to Kafka. Configuration errors mean "fix the config and
/// restart"; client errors are usually transient (retry with backoff).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration value is not acceptable. Names the key.
    #[error("config key `{key}`: {reason}")]
    Config {
        /// The dotted key.
        key: String,
        /// Why.
        reason: String,
    },
    /// librdkafka reported an error.
    #[error("kafka client error")]
    Client(#[from] rdkafka::error::KafkaError),
    /// The broker refused to create a topic.
    #[error("creating topic {topic}: {reason}")]
    CreateTopic {
        /// The topic.
        topic: String,
        /// The broker's error.
        reason: String,
    },
}
