//! The Confluent wire format: one magic byte `0`, the schema id as a 4-byte big-endian
//! integer, then the Avro binary body (no container header, no fingerprint). Any Confluent
//! deserializer, and ClickHouse's `AvroConfluent` input format, reads it given a registry
//! that serves the catalogue's schemas by id.
//!
//! Decoding looks the writer schema up by id in the [`Catalogue`] and resolves it against
//! the current version, so records written by older versions decode into today's model.

use std::io::Read;

use apache_avro::types::Value;

use crate::avro::{AvroRecord, write_value};
use crate::catalogue::{Catalogue, SchemaEntry};
use crate::dlq::DeadLetter;
use crate::error::{Error, Result};
use crate::event::Event;

/// The magic byte that starts every framed message.
pub const MAGIC: u8 = 0;
/// Length of the frame header: magic byte plus 4-byte schema id.
pub const HEADER_LEN: usize = 5;

/// A top-level record with its own schema file and topic.
pub trait TopLevel: AvroRecord {
    /// Full name of the record's schema, e.g. `zt.Event`.
    const FULL_NAME: &'static str;
}

impl TopLevel for Event {
    const FULL_NAME: &'static str = "zt.Event";
}

impl TopLevel for DeadLetter {
    const FULL_NAME: &'static str = "zt.DeadLetter";
}

/// Prepends the frame header to an Avro body.
pub fn frame(schema_id: u32, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.push(MAGIC);
    out.extend_from_slice(&schema_id.to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// Splits a framed message into schema id and Avro body.
pub fn unframe(bytes: &[u8]) -> Result<(u32, &[u8])> {
    if bytes.len() < HEADER_LEN {
        return Err(Error::Wire("message shorter than the 5-byte header"));
    }
    if bytes[0] != MAGIC {
        return Err(Error::Wire("first byte is not the magic byte 0"));
    }
    let id = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
    Ok((id, &bytes[HEADER_LEN..]))
}

/// Encodes `value` with the current version of its schema, framed.
pub fn encode<T: TopLevel>(value: &T) -> Result<Vec<u8>> {
    encode_with(Catalogue::builtin(), value)
}

/// [`encode`] against a given catalogue.
pub fn encode_with<T: TopLevel>(cat: &Catalogue, value: &T) -> Result<Vec<u8>> {
    let entry = cat.latest(T::FULL_NAME)?;
    let mut out = Vec::with_capacity(512);
    out.push(MAGIC);
    out.extend_from_slice(&entry.id.to_be_bytes());
    write_value(&value.to_avro(), &mut out)?;
    Ok(out)
}

/// [`encode_with`] through apache-avro's validating writer: slower, but it checks the value
/// against the schema. Tests use it as an oracle for [`encode`].
pub fn encode_validated<T: TopLevel>(cat: &Catalogue, value: &T) -> Result<Vec<u8>> {
    let entry = cat.latest(T::FULL_NAME)?;
    let body =
        apache_avro::to_avro_datum(&entry.schema, value.to_avro()).map_err(|e| Error::Encode {
            record: T::FULL_NAME,
            source: Box::new(e),
        })?;
    Ok(frame(entry.id, &body))
}

/// Decodes a framed message into `T`, resolving the writer's schema version against the
/// current one.
pub fn decode<T: TopLevel>(bytes: &[u8]) -> Result<T> {
    decode_with(Catalogue::builtin(), bytes)
}

/// [`decode`] against a given catalogue.
pub fn decode_with<T: TopLevel>(cat: &Catalogue, bytes: &[u8]) -> Result<T> {
    let (id, body) = unframe(bytes)?;
    let writer = cat.by_id(id)?;
    let reader = cat.latest(T::FULL_NAME)?;
    if writer.full_name != reader.full_name {
        return Err(Error::Wire("schema id belongs to another record type"));
    }
    let value = decode_value(writer, reader, body)?;
    T::from_avro(value)
}

/// Decodes a body written with `writer` into a value shaped like `reader`.
pub fn decode_value(writer: &SchemaEntry, reader: &SchemaEntry, body: &[u8]) -> Result<Value> {
    let mut input = StrictReader { rest: body };
    let value = if writer.id == reader.id {
        // The common case: written with the current version. Read it directly; apache-avro
        // would rebuild the schema's name table on every call (about 10 µs per event).
        read_value(&writer.schema, &mut input.rest)?
    } else {
        apache_avro::from_avro_datum(&writer.schema, &mut input, Some(&reader.schema))
            .map_err(|e| Error::Avro(Box::new(e)))?
    };
    if !input.rest.is_empty() {
        return Err(Error::Wire("trailing bytes after the Avro body"));
    }
    Ok(value)
}

const TRUNCATED: Error = Error::Wire("avro body ends early");

fn read_long(input: &mut &[u8]) -> Result<i64> {
    let mut z: u64 = 0;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = input.split_first().ok_or(TRUNCATED)?;
        *input = rest;
        z |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(((z >> 1) as i64) ^ -((z & 1) as i64));
        }
    }
    Err(Error::Wire("varint longer than 10 bytes"))
}

fn read_int(input: &mut &[u8]) -> Result<i32> {
    i32::try_from(read_long(input)?).map_err(|_| Error::Wire("int out of range"))
}

fn read_bytes<'a>(input: &mut &'a [u8]) -> Result<&'a [u8]> {
    let len = usize::try_from(read_long(input)?).map_err(|_| Error::Wire("negative length"))?;
    if len > input.len() {
        return Err(TRUNCATED);
    }
    let (b, rest) = input.split_at(len);
    *input = rest;
    Ok(b)
}

/// Reads one datum of `schema` (the subset of Avro the catalogue's schemas use) without
/// schema resolution. Lengths and counts are checked against the remaining input, so no
/// input makes it allocate more than the input's size or panic.
fn read_value(schema: &apache_avro::Schema, input: &mut &[u8]) -> Result<Value> {
    use apache_avro::Schema as S;
    Ok(match schema {
        S::Null => Value::Null,
        S::Boolean => {
            let (&b, rest) = input.split_first().ok_or(TRUNCATED)?;
            *input = rest;
            match b {
                0 => Value::Boolean(false),
                1 => Value::Boolean(true),
                _ => return Err(Error::Wire("boolean byte is not 0 or 1")),
            }
        }
        S::Int => Value::Int(read_int(input)?),
        S::Date => Value::Date(read_int(input)?),
        S::Long => Value::Long(read_long(input)?),
        S::TimestampMillis => Value::TimestampMillis(read_long(input)?),
        S::Bytes => Value::Bytes(read_bytes(input)?.to_vec()),
        S::String => Value::String(
            std::str::from_utf8(read_bytes(input)?)
                .map_err(|_| Error::Wire("string is not UTF-8"))?
                .to_owned(),
        ),
        S::Union(u) => {
            let i = read_long(input)?;
            let branch = usize::try_from(i)
                .ok()
                .and_then(|i| u.variants().get(i))
                .ok_or(Error::Wire("union index out of range"))?;
            Value::Union(i as u32, Box::new(read_value(branch, input)?))
        }
        S::Record(r) => Value::Record(
            r.fields
                .iter()
                .map(|f| Ok((f.name.clone(), read_value(&f.schema, input)?)))
                .collect::<Result<Vec<_>>>()?,
        ),
        S::Array(a) => {
            let mut items = Vec::new();
            loop {
                let mut n = read_long(input)?;
                if n == 0 {
                    break;
                }
                if n < 0 {
                    // A negative count is followed by the block's size in bytes.
                    read_long(input)?;
                    n = n.checked_neg().ok_or(Error::Wire("bad block count"))?;
                }
                // Every item takes at least one byte, except nulls: bound the count by the input.
                if n as u64 > input.len() as u64 + 1 {
                    return Err(TRUNCATED);
                }
                for _ in 0..n {
                    items.push(read_value(&a.items, input)?);
                }
            }
            Value::Array(items)
        }
        _ => {
            return Err(Error::Wire(
                "schema type not supported by the direct reader",
            ));
        }
    })
}

/// A reader whose read past the end fails with `InvalidData`, not `UnexpectedEof`:
/// apache-avro decodes an `UnexpectedEof` while reading a union index as the null branch,
/// so a message cut after its last non-null field would decode "successfully" with the
/// trailing optional fields null. Seen in this crate's truncation property test.
struct StrictReader<'a> {
    rest: &'a [u8],
}

impl Read for StrictReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if !buf.is_empty() && self.rest.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "avro body ends early",
            ));
        }
        self.rest.read(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every schema in the catalogue uses only types the direct reader handles, so a new
    /// schema with another type fails here rather than at run time.
    #[test]
    fn direct_reader_covers_every_catalogue_schema() {
        use apache_avro::Schema as S;
        fn check(s: &S, path: &str) {
            match s {
                S::Null
                | S::Boolean
                | S::Int
                | S::Date
                | S::Long
                | S::TimestampMillis
                | S::Bytes
                | S::String => {}
                S::Union(u) => u.variants().iter().for_each(|v| check(v, path)),
                S::Record(r) => r
                    .fields
                    .iter()
                    .for_each(|f| check(&f.schema, &format!("{path}.{}", f.name))),
                S::Array(a) => check(&a.items, path),
                other => panic!("{path}: {other:?} is not read by wire::read_value"),
            }
        }
        for e in Catalogue::builtin().entries() {
            check(&e.schema, &e.full_name);
        }
    }

    #[test]
    fn frame_and_unframe() {
        let f = frame(0x0102_0304, b"xy");
        assert_eq!(f, vec![0, 1, 2, 3, 4, b'x', b'y']);
        assert_eq!(unframe(&f).unwrap(), (0x0102_0304, &b"xy"[..]));
        assert!(matches!(unframe(&[0, 1, 2]), Err(Error::Wire(_))));
        assert!(matches!(unframe(&[1, 0, 0, 0, 0]), Err(Error::Wire(_))));
    }

    #[test]
    fn unknown_id_and_garbage_are_errors_not_panics() {
        assert!(matches!(
            decode::<Event>(&frame(7, b"")),
            Err(Error::UnknownSchemaId(7))
        ));
        let id = Catalogue::builtin().latest("zt.Event").unwrap().id;
        for body in [
            &b""[..],
            b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff",
            b"\x02abc",
        ] {
            assert!(decode::<Event>(&frame(id, body)).is_err());
        }
        let dlq = Catalogue::builtin().latest("zt.DeadLetter").unwrap().id;
        assert!(matches!(
            decode::<Event>(&frame(dlq, b"")),
            Err(Error::Wire(_))
        ));
    }
}
