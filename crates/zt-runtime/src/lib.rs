//! The process runtime every zhongtai component shares:
//!
//! - [`config`]: layered configuration (embedded defaults, then a TOML file, then
//!   `ZT__SECTION__KEY` environment variables), unknown keys rejected, errors naming the key;
//! - [`telemetry`]: `tracing` initialisation, text or JSON;
//! - [`metrics`]: the Prometheus registry;
//! - [`health`]: liveness and readiness state;
//! - [`admin`]: one small HTTP server per process for `/metrics`, `/livez`, `/readyz`;
//! - [`shutdown`]: SIGINT/SIGTERM to a cancellation token;
//! - [`failpoint`]: test-only crash points of the crash tests.

pub mod admin;
pub mod config;
pub mod digest;
pub mod failpoint;
pub mod health;
pub mod metrics;
pub mod secret;
pub mod shutdown;
pub mod telemetry;

pub use admin::{AdminConfig, AdminServer};
pub use config::{ConfigError, load};
pub use health::Health;
pub use metrics::Metrics;
pub use secret::Secret;
pub use shutdown::Shutdown;
pub use telemetry::LogConfig;
