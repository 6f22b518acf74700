//! Errors of the sink and migration crate, classified by what the caller should do:
//! [`Error::is_retryable`] errors are retried with capped backoff (server or broker down,
//! timeouts); [`Error::is_rejection`] errors mean ClickHouse refused the data itself (the
//! rows go to the dead-letter topic); everything else stops the command.

/// Result with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything the sink and `zt migrate` can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration value is not acceptable. Names the key.
    #[error("config key `{key}`: {reason}")]
    Config {
        /// Dotted key.
        key: String,
        /// Why.
        reason: String,
    },
    /// ClickHouse could not be reached or answered with an error.
    #[error("clickhouse {operation} failed: {source}")]
    ClickHouse {
        /// What was attempted, e.g. `insert into events`.
        operation: String,
        /// The client's error (for server errors, the server's text).
        #[source]
        source: clickhouse::error::Error,
    },
    /// A Kafka client call failed.
    #[error("kafka {operation} failed")]
    Kafka {
        /// What was attempted.
        operation: &'static str,
        /// The client's error.
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// The Kafka crate refused to build a client.
    #[error("kafka client setup")]
    KafkaSetup(#[from] zt_kafka::Error),
    /// A dead letter could not be encoded (the model's schema is broken: stop).
    #[error("cannot encode dead letter")]
    Encode(#[source] zt_model::Error),
    /// A migration file is malformed (name, numbering, SQL that cannot be rendered).
    #[error("migration {file}: {reason}")]
    MigrationFile {
        /// The file name.
        file: String,
        /// What is wrong.
        reason: String,
    },
    /// An applied migration's file changed since it was applied.
    #[error(
        "migration {file} was applied with checksum {applied} but the file now has {current}; \
         applied migrations must not change: add a new file instead"
    )]
    ChecksumMismatch {
        /// The file name.
        file: String,
        /// Checksum recorded when it was applied.
        applied: String,
        /// Checksum of the file now.
        current: String,
    },
    /// The database records a migration version that no file has.
    #[error("database has migration {version} ({name}) applied, but no such file exists")]
    UnknownApplied {
        /// The version.
        version: u32,
        /// The recorded name.
        name: String,
    },
    /// Reading migration files from disk failed.
    #[error("reading {path}")]
    Io {
        /// The path.
        path: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The component was asked to stop while waiting.
    #[error("shutdown requested")]
    Shutdown,
}

/// ClickHouse error codes that mean "the data of this insert is unacceptable", as opposed
/// to "the server cannot take it now". Only these make the sink bisect a batch and
/// dead-letter rows; any other failure is retried, so a deployment problem (missing table,
/// wrong column) stalls the sink visibly instead of dead-lettering everything.
const REJECTION_CODES: &[u32] = &[
    6,   // CANNOT_PARSE_TEXT
    27,  // CANNOT_PARSE_INPUT_ASSERTION_FAILED
    38,  // CANNOT_PARSE_DATE
    41,  // CANNOT_PARSE_DATETIME
    53,  // TYPE_MISMATCH
    69,  // ARGUMENT_OUT_OF_BOUND
    70,  // CANNOT_CONVERT_TYPE
    72,  // CANNOT_PARSE_NUMBER
    117, // INCORRECT_DATA
    128, // TOO_LARGE_ARRAY_SIZE
    131, // TOO_LARGE_STRING_SIZE
    190, // SIZES_OF_ARRAYS_DOESNT_MATCH
    321, // VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE
    395, // FUNCTION_THROW_IF_VALUE_IS_NON_ZERO
    469, // VIOLATED_CONSTRAINT
    691, // UNKNOWN_ELEMENT_OF_ENUM
];

/// The `Code: N` of a ClickHouse server error text, if it has one.
pub fn server_error_code(text: &str) -> Option<u32> {
    let rest = &text[text.find("Code: ")? + 6..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

impl Error {
    /// True when retrying later may succeed (server or broker unavailable, timeouts).
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::ClickHouse { source, .. } => !is_rejection(source),
            Error::Kafka { .. } => true,
            _ => false,
        }
    }

    /// True when ClickHouse refused the inserted data itself.
    pub fn is_rejection(&self) -> bool {
        matches!(self, Error::ClickHouse { source, .. } if is_rejection(source))
    }

    pub(crate) fn ch(operation: impl Into<String>, source: clickhouse::error::Error) -> Self {
        Error::ClickHouse {
            operation: operation.into(),
            source,
        }
    }
}

fn is_rejection(e: &clickhouse::error::Error) -> bool {
    match e {
        clickhouse::error::Error::BadResponse(text) => {
            server_error_code(text).is_some_and(|c| REJECTION_CODES.contains(&c))
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_read_from_both_generations_of_error_text() {
        // 18.16
        let old = "Code: 395, e.displayText() = DB::Exception: Value passed to 'throwIf' function is non zero";
        assert_eq!(server_error_code(old), Some(395));
        // current releases
        let new = "Code: 60. DB::Exception: Table zt.nope does not exist. (UNKNOWN_TABLE)";
        assert_eq!(server_error_code(new), Some(60));
        assert_eq!(server_error_code("connection refused"), None);
    }

    #[test]
    fn rejections_and_retries_are_told_apart() {
        let rej = Error::ch(
            "insert",
            clickhouse::error::Error::BadResponse("Code: 395, e.displayText() = x".into()),
        );
        assert!(rej.is_rejection() && !rej.is_retryable());
        let missing = Error::ch(
            "insert",
            clickhouse::error::Error::BadResponse("Code: 60. DB::Exception: no table".into()),
        );
        assert!(!missing.is_rejection() && missing.is_retryable());
        let net = Error::ch("insert", clickhouse::error::Error::TimedOut);
        assert!(net.is_retryable());
        assert!(!Error::Shutdown.is_retryable());
    }
}
