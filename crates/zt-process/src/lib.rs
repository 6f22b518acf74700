//! zhongtai's stream processors: `zt process identity` and `zt process profiles`.
//!
//! - [`identity`] resolves every canonical event to a person with a guarded union-find
//!   graph kept as a single-partition log, and re-publishes the events keyed by person on
//!   `zt.events.resolved`, with the graph's links and merges.
//! - [`profiles`] keeps one live profile per person from the resolved events and publishes
//!   a snapshot on every change to the compacted `zt.profiles`.
//! - [`funnels`] keeps every person's funnel progress (ClickHouse `windowFunnel`
//!   semantics, in event time, corrected by late events) and first experiment exposures,
//!   and publishes per-person rows on `zt.funnels`.
//!
//! What goes on the wire is listed in [`records`]; each processor's module documentation
//! states its delivery guarantee (effectively once, without broker transactions).

pub mod config;
pub mod error;
pub mod funnel;
pub mod funnels;
pub mod identity;
pub mod profile;
pub mod profiles;
pub mod records;
pub mod runtime;

pub use config::{FunnelsConfig, IdentityConfig, ProfilesConfig, RfmConfig};
pub use error::{Error, Result};
pub use funnels::FunnelsParams;
pub use identity::IdentityParams;
pub use profiles::ProfilesParams;

use zt_runtime::admin::AdminConfig;
use zt_runtime::health::Health;
use zt_runtime::metrics::Metrics;
use zt_runtime::shutdown::Shutdown;

/// Which processor to run.
#[derive(Debug, Clone)]
pub enum Which {
    /// `zt process identity`.
    Identity(IdentityParams),
    /// `zt process profiles`.
    Profiles(ProfilesParams),
    /// `zt process funnels`.
    Funnels(FunnelsParams),
}

/// Runs a processor with its admin server (`/metrics`, `/livez`, `/readyz`) until SIGINT
/// or SIGTERM.
pub async fn serve(admin: &AdminConfig, which: Which) -> anyhow::Result<()> {
    let shutdown = Shutdown::install()?;
    let name = match &which {
        Which::Identity(_) => "identity",
        Which::Profiles(_) => "profiles",
        Which::Funnels(_) => "funnels",
    };
    let metrics = Metrics::new(name);
    let health = Health::new();
    let server =
        zt_runtime::admin::serve(admin, metrics.clone(), health.clone(), shutdown.clone()).await?;
    let out = match which {
        Which::Identity(p) => identity::run(p, metrics.registry(), &health, shutdown.clone()).await,
        Which::Profiles(p) => profiles::run(p, metrics.registry(), &health, shutdown.clone()).await,
        Which::Funnels(p) => funnels::run(p, metrics.registry(), &health, shutdown.clone()).await,
    };
    if let Err(e) = &out {
        health.mark_dead(&format!("{name} stopped: {e}"));
    }
    shutdown.trigger();
    let _ = server.task.await;
    Ok(out?)
}
