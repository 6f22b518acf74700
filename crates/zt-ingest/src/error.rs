//! Why an input is refused. Every rejection names a machine-readable reason and, where
//! there is one, the field; messages never contain the input's values (they may be PII).

use std::fmt;

/// A configuration value that is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("config key `{key}`: {reason}")]
pub struct ConfigError {
    /// The dotted key.
    pub key: String,
    /// Why.
    pub reason: String,
}

/// Machine-readable rejection reasons, as they appear in responses, dead letters and the
/// `reason` label of `zt_ingest_events_rejected_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The body (or an NDJSON line) is not JSON.
    MalformedJson,
    /// A field has the wrong JSON type.
    WrongType,
    /// A required field is absent or null.
    MissingField,
    /// A field has the right type but an unacceptable value.
    InvalidValue,
    /// The event type is not one the source emits.
    UnknownEventType,
    /// One event is larger than `ingest.max_event_bytes`.
    OversizeEvent,
    /// The request is larger than `ingest.max_batch_bytes` or has more than
    /// `ingest.max_batch_events` events.
    OversizeBatch,
    /// The path names no source.
    UnknownSource,
    /// No write key, or one that no source knows.
    BadKey,
    /// A key of another source.
    WrongSourceKey,
    /// The key's rate limit is exhausted.
    RateLimited,
}

impl Reason {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::MalformedJson => "malformed_json",
            Reason::WrongType => "wrong_type",
            Reason::MissingField => "missing_field",
            Reason::InvalidValue => "invalid_value",
            Reason::UnknownEventType => "unknown_event_type",
            Reason::OversizeEvent => "oversize_event",
            Reason::OversizeBatch => "oversize_batch",
            Reason::UnknownSource => "unknown_source",
            Reason::BadKey => "bad_key",
            Reason::WrongSourceKey => "wrong_source_key",
            Reason::RateLimited => "rate_limited",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One refused input: reason, field (a JSON path such as `lines[1].quantity`) and a
/// message for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// Why.
    pub reason: Reason,
    /// The field at fault.
    pub field: Option<String>,
    /// Human-readable, without input values.
    pub message: String,
}

impl Rejection {
    /// A rejection about `field`.
    pub fn field(reason: Reason, field: impl Into<String>, message: impl Into<String>) -> Self {
        Rejection {
            reason,
            field: Some(field.into()),
            message: message.into(),
        }
    }

    /// A rejection of the whole input.
    pub fn whole(reason: Reason, message: impl Into<String>) -> Self {
        Rejection {
            reason,
            field: None,
            message: message.into(),
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.field {
            Some(field) => write!(f, "{}: {field}: {}", self.reason, self.message),
            None => write!(f, "{}: {}", self.reason, self.message),
        }
    }
}

impl std::error::Error for Rejection {}
