//! zhongtai's ClickHouse side:
//!
//! - [`migrate`]: `zt migrate`, the versioned DDL of `schemas/clickhouse/` applied in order
//!   and recorded with checksums, with single-server and cluster renderings;
//! - [`sink`]: `zt sink`, canonical events from Kafka into ClickHouse tables, effectively
//!   once (the module documentation states what goes on the wire and the guarantee);
//! - [`rows`]: the table rows and the event-to-rows mapping;
//! - [`config`]: the `[clickhouse]` and `[sink]` configuration sections;
//! - [`metrics`]: the `zt_sink_*` Prometheus metrics;
//! - [`failpoint`]: test-only crash points and the resume switch of the crash tests.

pub mod config;
pub mod error;
pub mod failpoint;
pub mod metrics;
pub mod migrate;
pub mod processed;
pub mod rowbinary;
pub mod rows;
pub mod sink;

pub use config::{ClickHouseConfig, SinkConfig};
pub use error::{Error, Result};
pub use sink::{SinkParams, TABLES};

use zt_runtime::{AdminConfig, Health, Metrics, Shutdown};

/// `zt sink` as a process: the admin server (`/metrics`, `/livez`, `/readyz`), graceful
/// shutdown on SIGINT/SIGTERM, and the sink until it stops.
pub async fn serve(admin: &AdminConfig, params: SinkParams) -> Result<()> {
    let shutdown = Shutdown::install().map_err(|source| Error::Io {
        path: "signal handlers".into(),
        source,
    })?;
    let metrics = Metrics::new("sink");
    let health = Health::new();
    let server = zt_runtime::admin::serve(admin, metrics.clone(), health.clone(), shutdown.clone())
        .await
        .map_err(|source| Error::Io {
            path: format!("admin listen {}", admin.listen),
            source,
        })?;
    let out = sink::run(params, metrics.registry(), &health, shutdown.clone()).await;
    if let Err(e) = &out {
        health.mark_dead(&format!("sink stopped: {e}"));
    }
    shutdown.trigger();
    let _ = server.task.await;
    out
}

/// `zt migrate`: prints the plan with `dry_run`, else applies it and prints what it did.
pub async fn migrate_command(
    cfg: &ClickHouseConfig,
    opts: &migrate::MigrateOptions,
    dry_run: bool,
) -> Result<String> {
    let plan = migrate::plan(cfg, opts).await?;
    if dry_run {
        return Ok(migrate::describe(&plan));
    }
    let done = migrate::apply(cfg, &plan).await?;
    let mut out = String::new();
    for f in &plan.applied {
        out.push_str(&format!("already applied  {}\n", f.name));
    }
    for f in &done {
        out.push_str(&format!("applied          {f}\n"));
    }
    if done.is_empty() {
        out.push_str("nothing to apply\n");
    }
    Ok(out)
}
