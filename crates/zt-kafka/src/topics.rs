//! The platform's topics (PLATFORM.md) and their creation through the Kafka admin API.
//!
//! Creation is idempotent: a topic that already exists is reported as such and left
//! unchanged (its partition count is not altered; growing partitions is an operator
//! decision because it moves keys between partitions).

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::types::RDKafkaErrorCode;
use zt_model::Source;

use crate::client::base_config;
use crate::config::{KafkaConfig, TopicsConfig};
use crate::error::{Error, Result};

/// One topic to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    /// Full name.
    pub name: String,
    /// Partition count.
    pub partitions: i32,
    /// Replication factor.
    pub replication_factor: i32,
    /// `cleanup.policy=compact` when true (latest value per key is kept forever).
    pub compacted: bool,
    /// `retention.ms=-1` when true: a log that is never deleted (the identity graph's).
    pub keep_forever: bool,
    /// What the topic carries.
    pub purpose: &'static str,
}

/// What `create_topics` did for one topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateOutcome {
    /// The topic was created.
    Created,
    /// It existed already and was left as it is.
    AlreadyExists,
}

pub(crate) fn platform_topic_names(t: &TopicsConfig) -> Vec<String> {
    platform_topics(t).into_iter().map(|s| s.name).collect()
}

/// Every topic of the platform, with sizes from `[topics]`.
pub fn platform_topics(t: &TopicsConfig) -> Vec<TopicSpec> {
    let mut out: Vec<(String, bool, &'static str)> = Source::ALL
        .into_iter()
        .map(|s| {
            (
                t.events(s),
                false,
                "canonical events of one source (zt.Event)",
            )
        })
        .collect();
    out.extend([
        (
            t.dlq(),
            false,
            "rejected inputs with reason and original bytes (zt.DeadLetter)",
        ),
        (
            t.dlq_replays(),
            true,
            "replay markers of dead letters, latest per dlq_id (zt replay dlq)",
        ),
        (
            t.suppressions(),
            true,
            "erased persons and identifiers by SHA-256, honoured by every component (zt erase)",
        ),
        (
            t.erasures(),
            false,
            "audit trail of erasures without personal data, kept forever (zt erase)",
        ),
        (
            t.identity_links(),
            true,
            "identity graph links, latest per identifier",
        ),
        (
            t.identity_merges(),
            false,
            "identity merges, one record per merge",
        ),
        (
            t.events_resolved(),
            false,
            "canonical events keyed by resolved person id",
        ),
        (t.profiles(), true, "profile snapshots, latest per person"),
        (t.funnels(), false, "funnel and experiment aggregates"),
        (
            t.identity_edges(),
            false,
            "identity graph log, one partition, kept forever (internal)",
        ),
        (
            t.profiles_state(),
            true,
            "profiles processor state, latest per person (internal changelog)",
        ),
        (
            t.profiles_transfers(),
            false,
            "profile state moved by merges (internal, co-partitioned with events.resolved)",
        ),
        (
            t.funnels_state(),
            true,
            "funnels processor state, latest per person (internal changelog)",
        ),
        (
            t.funnels_transfers(),
            false,
            "funnel state moved by merges (internal, co-partitioned with events.resolved)",
        ),
    ]);
    let edges = t.identity_edges();
    let erasures = t.erasures();
    out.into_iter()
        .map(|(name, compacted, purpose)| TopicSpec {
            partitions: if name == edges {
                1
            } else {
                t.partition_overrides
                    .get(&name)
                    .copied()
                    .unwrap_or(t.partitions)
            },
            replication_factor: t.replication_factor,
            keep_forever: name == edges || name == erasures,
            name,
            compacted,
            purpose,
        })
        .collect()
}

/// Creates the topics that do not exist yet.
pub async fn create_topics(
    cfg: &KafkaConfig,
    specs: &[TopicSpec],
) -> Result<Vec<(String, CreateOutcome)>> {
    let admin: AdminClient<DefaultClientContext> = base_config(cfg)?.create()?;
    let new: Vec<NewTopic<'_>> = specs
        .iter()
        .map(|s| {
            let t = NewTopic::new(
                &s.name,
                s.partitions,
                TopicReplication::Fixed(s.replication_factor),
            );
            let t = if s.compacted {
                t.set("cleanup.policy", "compact")
            } else {
                t
            };
            if s.keep_forever {
                t.set("retention.ms", "-1")
            } else {
                t
            }
        })
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin.create_topics(new.iter(), &opts).await?;
    let mut out = Vec::with_capacity(results.len());
    for r in results {
        match r {
            Ok(name) => out.push((name, CreateOutcome::Created)),
            Err((name, RDKafkaErrorCode::TopicAlreadyExists)) => {
                out.push((name, CreateOutcome::AlreadyExists))
            }
            Err((name, code)) => {
                return Err(Error::CreateTopic {
                    topic: name,
                    reason: code.to_string(),
                });
            }
        }
    }
    Ok(out)
}

/// Topic names and partition counts the broker reports (blocking; call from
/// `spawn_blocking` in async code).
pub fn list_topics(cfg: &KafkaConfig, timeout: Duration) -> Result<Vec<(String, usize)>> {
    let consumer: BaseConsumer = base_config(cfg)?.create()?;
    let md = consumer.fetch_metadata(None, timeout)?;
    let mut out: Vec<(String, usize)> = md
        .topics()
        .iter()
        .map(|t| (t.name().to_owned(), t.partitions().len()))
        .collect();
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn topics() -> TopicsConfig {
        TopicsConfig {
            prefix: "zt".into(),
            partitions: 4,
            replication_factor: 1,
            partition_overrides: BTreeMap::from([("zt.events.tracking".into(), 12)]),
            profiles_version: 1,
            funnels_version: 1,
        }
    }

    #[test]
    fn platform_topics_follow_the_design() {
        let t = platform_topics(&topics());
        let names: Vec<&str> = t.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "zt.events.crm",
                "zt.events.erp",
                "zt.events.logistics",
                "zt.events.tracking",
                "zt.events.service",
                "zt.events.marketing",
                "zt.dlq",
                "zt.dlq.replays",
                "zt.suppressions",
                "zt.erasures",
                "zt.identity.links",
                "zt.identity.merges",
                "zt.events.resolved",
                "zt.profiles",
                "zt.funnels",
                "zt.identity.edges",
                "zt.profiles.state",
                "zt.profiles.transfers",
                "zt.funnels.state",
                "zt.funnels.transfers",
            ]
        );
        let edges = t.iter().find(|s| s.name == "zt.identity.edges").unwrap();
        assert_eq!((edges.partitions, edges.keep_forever), (1, true));
        let compacted: Vec<&str> = t
            .iter()
            .filter(|s| s.compacted)
            .map(|s| s.name.as_str())
            .collect();
        assert_eq!(
            compacted,
            [
                "zt.dlq.replays",
                "zt.suppressions",
                "zt.identity.links",
                "zt.profiles",
                "zt.profiles.state",
                "zt.funnels.state"
            ]
        );
        assert_eq!(t[3].partitions, 12);
        assert_eq!(t[0].partitions, 4);
    }

    #[test]
    fn overrides_must_name_platform_topics() {
        let mut t = topics();
        t.validate().unwrap();
        t.partition_overrides.insert("zt.evnets.crm".into(), 2);
        let err = t.validate().unwrap_err().to_string();
        assert!(err.contains("zt.evnets.crm"), "{err}");
        let mut t = topics();
        t.prefix = "bad prefix".into();
        assert!(t.validate().is_err());
    }
}
