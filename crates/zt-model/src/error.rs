//! Errors of the model crate. Decode and PII errors mean "this input is bad": callers send
//! it to the dead-letter topic. Schema errors mean the build itself is broken: stop.

/// Result with the model crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything the model crate can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A schema file does not parse or is inconsistent.
    #[error("schema {file}: {message}")]
    Schema {
        /// The `.avsc` file.
        file: String,
        /// What is wrong.
        message: String,
    },
    /// No schema with that full name is in the catalogue.
    #[error("unknown schema {0}")]
    UnknownSchema(String),
    /// A framed message names a schema id the catalogue does not hold.
    #[error("unknown schema id {0}")]
    UnknownSchemaId(u32),
    /// The bytes are not in the Confluent wire format.
    #[error("wire format: {0}")]
    Wire(&'static str),
    /// The Avro library refused to encode a value against its schema.
    #[error("avro encode of {record}")]
    Encode {
        /// The record's full name.
        record: &'static str,
        /// The library's error.
        #[source]
        source: Box<apache_avro::Error>,
    },
    /// The Avro body could not be read with the writer schema.
    #[error("avro decode")]
    Avro(#[source] Box<apache_avro::Error>),
    /// A decoded value does not have the shape of the model.
    #[error("{record}.{field}: {message}")]
    Decode {
        /// The record's full name.
        record: &'static str,
        /// The field at fault.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// A phone number or e-mail address that cannot be normalised. The message names the
    /// field and the reason, never the value.
    #[error("{field}: {reason}")]
    Pii {
        /// The input field, e.g. `phone`.
        field: String,
        /// Why it was refused.
        reason: &'static str,
    },
}

impl Error {
    pub(crate) fn decode(record: &'static str, field: &str, message: String) -> Self {
        Error::Decode {
            record,
            field: field.to_owned(),
            message,
        }
    }
}
