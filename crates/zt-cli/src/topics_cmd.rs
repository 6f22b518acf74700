//! `zt topics create|list`.

use std::time::Duration;

use zt_kafka::topics::{CreateOutcome, list_topics};
use zt_kafka::{create_topics, platform_topics};

use crate::settings::Settings;

/// Creates every platform topic that does not exist yet and prints what it did.
pub async fn create(settings: &Settings) -> anyhow::Result<()> {
    let specs = platform_topics(&settings.topics);
    let results = create_topics(&settings.kafka, &specs).await?;
    for spec in &specs {
        let outcome = results
            .iter()
            .find(|(n, _)| n == &spec.name)
            .map(|(_, o)| *o);
        let what = match outcome {
            Some(CreateOutcome::Created) => "created",
            Some(CreateOutcome::AlreadyExists) => "exists",
            None => "not reported by the broker",
        };
        println!(
            "{:<24} {:<8} partitions={:<3} replication={} {}{}",
            spec.name,
            what,
            spec.partitions,
            spec.replication_factor,
            if spec.compacted { "compacted " } else { "" },
            spec.purpose
        );
    }
    Ok(())
}

/// Prints the topics the broker has, with partition counts.
pub async fn list(settings: &Settings) -> anyhow::Result<()> {
    let kafka = settings.kafka.clone();
    let topics =
        tokio::task::spawn_blocking(move || list_topics(&kafka, Duration::from_secs(10))).await??;
    for (name, partitions) in topics {
        println!("{name:<32} partitions={partitions}");
    }
    Ok(())
}
