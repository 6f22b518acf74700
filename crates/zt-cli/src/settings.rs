//! The whole configuration of a zhongtai process, one section per concern. Every key and
//! its default is in `config/defaults.toml`, which is embedded in the binary.

use std::path::Path;

use serde::{Deserialize, Serialize};
use zt_ingest::IngestConfig;
use zt_kafka::{KafkaConfig, TopicsConfig};
use zt_model::pii::PiiHasher;
use zt_runtime::{AdminConfig, LogConfig, Secret};
pub use zt_sink::{ClickHouseConfig, SinkConfig};

/// The embedded defaults (the lowest configuration layer).
pub const DEFAULTS: &str = include_str!("../../../config/defaults.toml");

/// The salt of the defaults, for the local stack only.
const DEV_SALT: &str = "zhongtai-local-development-salt";

/// Everything a zhongtai process reads from configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// `[log]`
    pub log: LogConfig,
    /// `[admin]`
    pub admin: AdminConfig,
    /// `[kafka]`
    pub kafka: KafkaConfig,
    /// `[topics]`
    pub topics: TopicsConfig,
    /// `[clickhouse]` (defined by the sink crate, which owns the ClickHouse side)
    pub clickhouse: ClickHouseConfig,
    /// `[sink]`
    pub sink: SinkConfig,
    /// `[pii]`
    pub pii: PiiConfig,
    /// `[ingest]`
    pub ingest: IngestConfig,
    /// `[identity]`
    pub identity: zt_process::IdentityConfig,
    /// `[profiles]`
    pub profiles: zt_process::ProfilesConfig,
    /// `[funnels]`
    pub funnels: zt_process::FunnelsConfig,
}

/// `[pii]`: normalisation and hashing of phones and e-mails at the edge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PiiConfig {
    /// HMAC-SHA256 key (secret). Every deployment sets its own.
    pub salt: Secret,
    /// Country code for phone numbers written without one. Default `86`.
    pub default_country_code: String,
}

impl PiiConfig {
    /// True while the salt is the local-stack default.
    pub fn uses_dev_salt(&self) -> bool {
        self.salt.expose() == DEV_SALT
    }

    /// The hasher these settings describe.
    pub fn hasher(&self) -> anyhow::Result<PiiHasher> {
        Ok(PiiHasher::new(
            self.salt.expose().as_bytes(),
            &self.default_country_code,
        )?)
    }
}

impl Settings {
    /// Loads defaults, then `file`, then `ZT__*` environment variables, and validates.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Settings> {
        let s: Settings = zt_runtime::load(DEFAULTS, file)?;
        s.validate()?;
        Ok(s)
    }

    /// Cross-field and value checks the types cannot express. Errors name the key.
    pub fn validate(&self) -> anyhow::Result<()> {
        self.log.validate().map_err(anyhow::Error::msg)?;
        self.kafka.validate()?;
        self.topics.validate()?;
        self.pii.hasher()?;
        self.ingest.validate()?;
        self.clickhouse.validate()?;
        self.sink.validate()?;
        self.sink.check_output_versions(&self.topics)?;
        self.identity.validate()?;
        self.profiles.validate()?;
        self.funnels.validate()?;
        Ok(())
    }

    /// The effective configuration as TOML, secrets redacted.
    pub fn to_redacted_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sink_loads_only_the_live_output_version() {
        let mut s: Settings =
            zt_runtime::config::load_with_env(DEFAULTS, None, Default::default()).unwrap();
        s.sink.topics = vec!["zt.events.resolved".into(), "zt.profiles".into()];
        s.validate().unwrap();
        s.topics.profiles_version = 2;
        let e = s.validate().unwrap_err().to_string();
        assert!(
            e.contains("sink.topics") && e.contains("topics.profiles_version = 2"),
            "{e}"
        );
        s.sink.topics[1] = "zt.profiles.v2".into();
        s.validate().unwrap();
    }

    #[test]
    fn defaults_load_and_validate() {
        let s: Settings =
            zt_runtime::config::load_with_env(DEFAULTS, None, Default::default()).unwrap();
        s.validate().unwrap();
        assert!(s.pii.uses_dev_salt());
        assert_eq!(s.topics.events(zt_model::Source::Crm), "zt.events.crm");
        let shown = s.to_redacted_toml();
        assert!(!shown.contains(DEV_SALT), "{shown}");
    }
}
