//! `zt ingest` and `zt ingest hash-key`.

use zt_ingest::{IngestDeps, auth::hash_key};
use zt_runtime::{Health, Metrics, Shutdown};

use crate::settings::Settings;

/// Runs the ingest service until SIGINT/SIGTERM, with the admin server beside it.
pub async fn run(settings: &Settings) -> anyhow::Result<()> {
    if settings.pii.uses_dev_salt() {
        tracing::warn!("pii.salt is the local-development default; set ZT__PII__SALT");
    }
    if settings
        .ingest
        .sources
        .values()
        .all(|s| s.write_keys.is_empty())
    {
        tracing::warn!("no write keys configured: every request will be refused with 401");
    }
    let shutdown = Shutdown::install()?;
    let metrics = Metrics::new("ingest");
    let health = Health::new();
    let admin = zt_runtime::admin::serve(
        &settings.admin,
        metrics.clone(),
        health.clone(),
        shutdown.clone(),
    )
    .await?;
    let deps = IngestDeps {
        ingest: settings.ingest.clone(),
        kafka: settings.kafka.clone(),
        topics: settings.topics.clone(),
        hasher: settings.pii.hasher()?,
    };
    let running = zt_ingest::start(deps, &metrics, &health, shutdown.clone()).await?;
    eprintln!(
        "ingest listening on {} (admin on {})",
        running.addr, admin.addr
    );
    running.task.await?;
    admin.task.await??;
    Ok(())
}

/// Prints the digest to put in `write_keys`.
pub fn print_hash(key: &str) {
    println!("{}", hash_key(key));
}
