//! "Has the pipeline caught up?": a consumer group's lag over its input topics, from the
//! broker alone (high watermarks against the group's committed offsets).
//!
//! Every zhongtai component commits an input offset only after that input's effects are
//! durable (acknowledged outputs, or rows in ClickHouse), so a group with no lag has done
//! everything its inputs asked for, up to the moment of the check. Outputs of one stage are
//! the next stage's inputs, so [`wait_drained`] asks every stage, and asks twice in a row.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, Consumer};
use zt_kafka::KafkaConfig;

/// One consumer group and the topics it consumes.
#[derive(Debug, Clone)]
pub struct Stage {
    /// A name for messages (`identity`, `sink`, ...).
    pub name: String,
    /// The consumer group id.
    pub group: String,
    /// Its input topics.
    pub topics: Vec<String>,
}

/// Records on `topics` that `group` has not committed yet (a partition without a
/// committed offset counts from 0). Blocking.
pub fn group_lag(kafka: &KafkaConfig, group: &str, topics: &[String]) -> anyhow::Result<u64> {
    Ok(zt_kafka::group::group_lag(kafka, group, topics)?)
}

/// Low and high watermark of every partition of `topic`. Blocking.
pub fn watermarks(kafka: &KafkaConfig, topic: &str) -> anyhow::Result<BTreeMap<i32, (i64, i64)>> {
    let c: BaseConsumer = zt_kafka::client::base_config(kafka)?
        .create()
        .context("consumer for the watermarks")?;
    watermarks_with(&c, topic)
}

fn watermarks_with(c: &BaseConsumer, topic: &str) -> anyhow::Result<BTreeMap<i32, (i64, i64)>> {
    let timeout = Duration::from_secs(10);
    let n = zt_kafka::client::partition_count(c, topic, timeout)?;
    let mut out = BTreeMap::new();
    for p in 0..n {
        out.insert(p, c.fetch_watermarks(topic, p, timeout)?);
    }
    Ok(out)
}

/// Waits until every stage has no lag, twice in a row `interval` apart; fails after
/// `timeout` naming the stages that still lag. `on_poll` sees each round's lags.
pub async fn wait_drained(
    kafka: &KafkaConfig,
    stages: &[Stage],
    timeout: Duration,
    interval: Duration,
    mut on_poll: impl FnMut(&[(String, u64)]),
) -> anyhow::Result<()> {
    let until = Instant::now() + timeout;
    let mut streak = 0;
    loop {
        let kafka2 = kafka.clone();
        let stages2 = stages.to_vec();
        let lags = tokio::task::spawn_blocking(move || {
            stages2
                .iter()
                .map(|s| {
                    group_lag(&kafka2, &s.group, &s.topics)
                        .map(|l| (s.name.clone(), l))
                        .unwrap_or((s.name.clone(), u64::MAX))
                })
                .collect::<Vec<_>>()
        })
        .await?;
        on_poll(&lags);
        if lags.iter().all(|(_, l)| *l == 0) {
            streak += 1;
            if streak >= 2 {
                return Ok(());
            }
        } else {
            streak = 0;
        }
        if Instant::now() > until {
            let behind: Vec<String> = lags
                .iter()
                .filter(|(_, l)| *l > 0)
                .map(|(n, l)| {
                    if *l == u64::MAX {
                        format!("{n} (lag unknown: broker did not answer)")
                    } else {
                        format!("{n} ({l} records behind)")
                    }
                })
                .collect();
            anyhow::bail!(
                "the pipeline did not drain within {timeout:?}: {}",
                behind.join(", ")
            );
        }
        tokio::time::sleep(interval).await;
    }
}
