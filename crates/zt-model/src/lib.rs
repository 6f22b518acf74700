//! zhongtai's canonical event model.
//!
//! - [`event`]: the Rust types of the envelope and the per-domain payloads;
//! - [`avro`]: their mapping to Avro values, checked against `schemas/avro/`;
//! - [`catalogue`]: every schema of `schemas/avro/`, embedded, with a stable id;
//! - [`wire`]: the Confluent wire format (magic byte 0, 4-byte big-endian schema id, Avro
//!   body) used on every `zt.*` topic;
//! - [`pii`]: phone (E.164) and e-mail normalisation and salted HMAC-SHA256 hashing;
//! - [`dlq`]: the dead-letter record.
//!
//! The model carries no delivery semantics of its own; encoding is deterministic (the same
//! event always gives the same bytes), which the processors' deterministic output ids and
//! the golden-bytes test rely on.

pub mod avro;
pub mod catalogue;
pub mod dlq;
pub mod error;
pub mod event;
#[doc(hidden)]
pub mod fuzzing;
pub mod pii;
pub mod wire;

pub use avro::AvroRecord;
pub use catalogue::Catalogue;
pub use dlq::DeadLetter;
pub use error::{Error, Result};
pub use event::*;
pub use wire::{TopLevel, decode, encode, encode_append};

#[cfg(test)]
mod schema_shape_tests {
    use apache_avro::Schema;

    use crate::avro::PAYLOAD_BRANCHES;
    use crate::catalogue::Catalogue;

    /// The payload union's branch order is what `avro.rs` writes as the union index.
    #[test]
    fn payload_union_order_matches_the_schema() {
        let ev = Catalogue::builtin().latest("zt.Event").unwrap();
        let Schema::Record(r) = &ev.schema else {
            panic!("zt.Event is a record")
        };
        let field = r.fields.iter().find(|f| f.name == "payload").unwrap();
        let Schema::Union(u) = &field.schema else {
            panic!("payload is a union")
        };
        let names: Vec<String> = u
            .variants()
            .iter()
            .map(|v| match v {
                Schema::Record(r) => r.name.fullname(None),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(names, PAYLOAD_BRANCHES);
    }
}
