//! Layered configuration with the `config` crate.
//!
//! Precedence, lowest first (each layer overrides the keys it sets):
//! 1. the embedded defaults, a TOML document that holds every key with its default value;
//! 2. the operator's TOML file, given with `--config FILE`;
//! 3. environment variables `ZT__SECTION__KEY=value` (double underscores separate levels,
//!    e.g. `ZT__KAFKA__BOOTSTRAP_SERVERS=broker:9092`). Values stay strings until the
//!    field's type asks for a number or a boolean, so a secret `0123` keeps its zero.
//!
//! Every struct is `deny_unknown_fields`, so a misspelt key in any layer, including an
//! environment variable, is an error; the error names the full key and the reason.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use config::{Config, Environment, File, FileFormat};
use serde::de::DeserializeOwned;

/// Prefix of the environment variables read as configuration.
pub const ENV_PREFIX: &str = "ZT";
/// Separator between levels in environment variable names.
pub const ENV_SEPARATOR: &str = "__";

/// Why a configuration could not be loaded. Messages name the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The `--config` file cannot be read or parsed.
    #[error("config file {path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A key has a value of the wrong type or range, or is unknown.
    #[error("config key `{key}`: {message}")]
    Invalid {
        /// Dotted key, e.g. `kafka.producer.linger_ms`.
        key: String,
        /// What is wrong.
        message: String,
    },
}

/// Loads `T` from the embedded `defaults`, the optional `file` and the process
/// environment.
pub fn load<T: DeserializeOwned>(defaults: &str, file: Option<&Path>) -> Result<T, ConfigError> {
    load_with_env(defaults, file, std::env::vars().collect())
}

/// [`load`] with an explicit environment (tests).
pub fn load_with_env<T: DeserializeOwned>(
    defaults: &str,
    file: Option<&Path>,
    env: HashMap<String, String>,
) -> Result<T, ConfigError> {
    let mut b = Config::builder().add_source(File::from_str(defaults, FileFormat::Toml));
    if let Some(path) = file {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        // Parse once here so a syntax error is reported against the file, not a key.
        text.parse::<toml::Table>().map_err(|e| ConfigError::File {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        b = b.add_source(File::from_str(&text, FileFormat::Toml));
    }
    let env: HashMap<String, String> = env
        .into_iter()
        .filter(|(k, _)| k.starts_with(&format!("{ENV_PREFIX}{ENV_SEPARATOR}")))
        .collect();
    b = b.add_source(
        Environment::with_prefix(ENV_PREFIX)
            .prefix_separator(ENV_SEPARATOR)
            .separator(ENV_SEPARATOR)
            .source(Some(env)),
    );
    let cfg = b.build().map_err(|e| ConfigError::Invalid {
        key: "<root>".into(),
        message: e.to_string(),
    })?;
    serde_path_to_error::deserialize(cfg).map_err(|e| {
        let path = e.path().to_string();
        let message = e.into_inner().to_string();
        ConfigError::Invalid {
            key: key_of(&path, &message),
            message: clean_message(&message),
        }
    })
}

/// The full dotted key of an error. Depending on the layer, an unknown field is reported
/// at its own path or at its parent's with the field named only in the message.
fn key_of(path: &str, message: &str) -> String {
    let parent = if path == "." { "" } else { path };
    if let Some(rest) = message.strip_prefix("unknown field `")
        && let Some(field) = rest.split('`').next()
    {
        if parent.is_empty() {
            return field.to_owned();
        }
        if parent.rsplit('.').next() == Some(field) {
            return parent.to_owned();
        }
        return format!("{parent}.{field}");
    }
    if parent.is_empty() {
        "<root>".to_owned()
    } else {
        parent.to_owned()
    }
}

/// The `config` crate appends ` for key ...` or ` in ...` origins; the key is reported
/// separately, and an origin could echo an environment value.
fn clean_message(message: &str) -> String {
    let m = message.split(" for key `").next().unwrap_or(message);
    m.split(" in Environment")
        .next()
        .unwrap_or(m)
        .trim()
        .to_owned()
}
