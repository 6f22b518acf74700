//! The Confluent wire format: one magic byte `0`, the schema id as a 4-byte big-endian
//! integer, then the Avro binary body (no container header, no fingerprint). Any Confluent
//! deserializer, and ClickHouse's `AvroConfluent` input format, reads it given a registry
//! that serves the catalogue's schemas by id.
//!
//! Decoding looks the writer schema up by id in the [`Catalogue`] and resolves it against
//! the current version, so records written by older versions decode into today's model.

use std::io::Read;

use apache_avro::types::Value;

use crate::avro::AvroRecord;
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

    /// Reads a body written with the current schema version straight into the type, when
    /// the type has such a reader and `schema` is the one it was written for; `None`
    /// otherwise (the caller goes through an Avro `Value`).
    fn read_direct(_schema: &SchemaEntry, _input: &mut &[u8]) -> Option<Result<Self>> {
        None
    }
}

impl TopLevel for Event {
    const FULL_NAME: &'static str = "zt.Event";

    fn read_direct(schema: &SchemaEntry, input: &mut &[u8]) -> Option<Result<Self>> {
        event_reader_fits(schema).then(|| read_event(input))
    }
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
    let mut out = Vec::with_capacity(512);
    encode_append_with(cat, value, &mut out)?;
    Ok(out)
}

/// [`encode`] onto the end of `out` (a caller can encode many records into one buffer, and
/// hand each range on). On an error `out` may hold part of a record: cut it back to its
/// length before the call.
pub fn encode_append<T: TopLevel>(value: &T, out: &mut Vec<u8>) -> Result<()> {
    encode_append_with(Catalogue::builtin(), value, out)
}

fn encode_append_with<T: TopLevel>(cat: &Catalogue, value: &T, out: &mut Vec<u8>) -> Result<()> {
    let entry = cat.latest(T::FULL_NAME)?;
    out.push(MAGIC);
    out.extend_from_slice(&entry.id.to_be_bytes());
    value.write_avro(out);
    Ok(())
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
    if writer.id == reader.id {
        let mut rest = body;
        if let Some(r) = T::read_direct(reader, &mut rest) {
            let v = r?;
            if !rest.is_empty() {
                return Err(Error::Wire("trailing bytes after the Avro body"));
            }
            return Ok(v);
        }
    }
    let value = decode_value(writer, reader, body)?;
    T::from_avro(value)
}

// ---- direct reader for zt.Event --------------------------------------------------------

/// SHA-256 of the Parsing Canonical Form of the `zt.Event` schema [`read_event`] reads
/// (version 2, `person_id` last).
/// A new schema version changes it: [`read_event`] is then not used (decoding goes through
/// `Value` and stays correct, only slower) and the test `direct_event_reader_fits_the_
/// current_schema` fails until the reader follows the new version.
const EVENT_READER_SCHEMA: &str =
    "111f7d7a64b106dfe500bd96d16f5791c0c94fd30ddf1c7162622a12c645e7b6";

fn canonical_sha256(schema: &apache_avro::Schema) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(schema.canonical_form().as_bytes()))
}

/// True when `entry` is the schema [`read_event`] was written for. Computed once per
/// schema id of the built-in catalogue; other catalogues check every time (tests only).
fn event_reader_fits(entry: &SchemaEntry) -> bool {
    use std::sync::OnceLock;
    static BUILTIN: OnceLock<Option<u32>> = OnceLock::new();
    let builtin = BUILTIN.get_or_init(|| {
        Catalogue::builtin()
            .latest("zt.Event")
            .ok()
            .filter(|e| canonical_sha256(&e.schema) == EVENT_READER_SCHEMA)
            .map(|e| e.id)
    });
    let cat = Catalogue::builtin();
    match cat.by_id(entry.id) {
        Ok(b) if std::ptr::eq(b, entry) => *builtin == Some(entry.id),
        _ => canonical_sha256(&entry.schema) == EVENT_READER_SCHEMA,
    }
}

/// A cursor over an Avro body, reading the types of the catalogue's schemas.
struct Cur<'a, 'b> {
    input: &'b mut &'a [u8],
    record: &'static str,
}

impl Cur<'_, '_> {
    fn long(&mut self) -> Result<i64> {
        read_long(self.input)
    }

    fn int(&mut self) -> Result<i32> {
        read_int(self.input)
    }

    fn boolean(&mut self) -> Result<bool> {
        let Some((&b, rest)) = self.input.split_first() else {
            return Err(TRUNCATED);
        };
        *self.input = rest;
        match b {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(Error::Wire("boolean byte is not 0 or 1")),
        }
    }

    fn string(&mut self) -> Result<String> {
        std::str::from_utf8(read_bytes(self.input)?)
            .map(str::to_owned)
            .map_err(|_| Error::Wire("string is not UTF-8"))
    }

    /// `["null", T]`.
    fn opt<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<Option<T>> {
        match read_long(self.input)? {
            0 => Ok(None),
            1 => f(self).map(Some),
            _ => Err(Error::Wire("union index out of range")),
        }
    }

    fn opt_string(&mut self) -> Result<Option<String>> {
        self.opt(|c| c.string())
    }

    fn opt_long(&mut self) -> Result<Option<i64>> {
        self.opt(|c| c.long())
    }

    fn opt_int(&mut self) -> Result<Option<i32>> {
        self.opt(|c| c.int())
    }

    fn array<T>(&mut self, mut f: impl FnMut(&mut Self) -> Result<T>) -> Result<Vec<T>> {
        let mut items = Vec::new();
        loop {
            let mut n = read_long(self.input)?;
            if n == 0 {
                return Ok(items);
            }
            if n < 0 {
                // A negative count is followed by the block's size in bytes.
                read_long(self.input)?;
                n = n.checked_neg().ok_or(Error::Wire("bad block count"))?;
            }
            // Every item of these schemas takes at least one byte: bound the count by
            // the input before reserving anything.
            if n as u64 > self.input.len() as u64 {
                return Err(TRUNCATED);
            }
            items.reserve(n as usize);
            for _ in 0..n {
                items.push(f(self)?);
            }
        }
    }

    fn source(&mut self) -> Result<crate::event::Source> {
        let name = self.string()?;
        name.parse().map_err(|e: crate::event::UnknownSource| {
            Error::decode(self.record, "source", e.to_string())
        })
    }
}

/// Reads a `zt.Event` body of the current schema version (field order of
/// `schemas/avro/event.avsc`) straight into the model: no `Value` tree, no field-name
/// strings, no boxed unions.
fn read_event(input: &mut &[u8]) -> Result<Event> {
    use crate::event::*;
    let mut c = Cur {
        input,
        record: "zt.Event",
    };
    let event_id = c.string()?;
    let event_type = c.string()?;
    let source = c.source()?;
    let source_event_id = c.opt_string()?;
    let occurred_at = c.long()?;
    let sent_at = c.opt_long()?;
    let received_at = c.long()?;
    let event_time = c.long()?;
    let identities = Identities {
        crm_customer_id: c.opt_string()?,
        user_id: c.opt_string()?,
        anonymous_id: c.opt_string()?,
        phone_hash: c.opt_string()?,
        email_hash: c.opt_string()?,
        order_id: c.opt_string()?,
        waybill_no: c.opt_string()?,
        ticket_id: c.opt_string()?,
    };
    let context = Context {
        channel: c.opt_string()?,
        campaign: c.opt_string()?,
        utm_source: c.opt_string()?,
        utm_medium: c.opt_string()?,
        utm_campaign: c.opt_string()?,
        utm_term: c.opt_string()?,
        utm_content: c.opt_string()?,
        private_domain: c.boolean()?,
        experiments: c.array(|c| {
            Ok(ExperimentAssignment {
                experiment_id: c.string()?,
                variant: c.string()?,
            })
        })?,
        device_type: c.opt_string()?,
        os: c.opt_string()?,
        app_version: c.opt_string()?,
        locale: c.opt_string()?,
        ip_country: c.opt_string()?,
    };
    let payload = match read_long(c.input)? {
        0 => Payload::Customer(CustomerPayload {
            customer_id: c.string()?,
            registered_at: c.opt_long()?,
            registration_channel: c.opt_string()?,
            tier: c.opt_string()?,
            previous_tier: c.opt_string()?,
            points_delta: c.opt_long()?,
            points_balance: c.opt_long()?,
            consents: c.array(|c| {
                Ok(Consent {
                    purpose: c.string()?,
                    granted: c.boolean()?,
                })
            })?,
            gender: c.opt_string()?,
            birth_year: c.opt_int()?,
            province: c.opt_string()?,
            city: c.opt_string()?,
        }),
        1 => Payload::Order(OrderPayload {
            order_id: c.string()?,
            status: c.string()?,
            currency: c.string()?,
            subtotal_minor: c.long()?,
            discount_minor: c.long()?,
            shipping_minor: c.long()?,
            total_minor: c.long()?,
            refund_minor: c.long()?,
            refund_reason: c.opt_string()?,
            payment_method: c.opt_string()?,
            coupon_codes: c.array(|c| c.string())?,
            store_id: c.opt_string()?,
            lines: c.array(|c| {
                Ok(OrderLine {
                    line_no: c.int()?,
                    sku: c.string()?,
                    product_id: c.opt_string()?,
                    product_name: c.opt_string()?,
                    category: c.opt_string()?,
                    quantity: c.int()?,
                    unit_price_minor: c.long()?,
                    discount_minor: c.long()?,
                    coupon_code: c.opt_string()?,
                    refunded_quantity: c.int()?,
                })
            })?,
        }),
        2 => Payload::Shipment(ShipmentPayload {
            waybill_no: c.string()?,
            order_id: c.opt_string()?,
            carrier: c.string()?,
            status: c.string()?,
            exception_code: c.opt_string()?,
            exception_reason: c.opt_string()?,
            warehouse: c.opt_string()?,
            destination_city: c.opt_string()?,
            promised_at: c.opt_long()?,
        }),
        3 => Payload::Tracking(TrackingPayload {
            kind: c.string()?,
            name: c.opt_string()?,
            properties_json: c.string()?,
            traits_json: c.string()?,
            previous_id: c.opt_string()?,
            group_id: c.opt_string()?,
            product_id: c.opt_string()?,
            sku: c.opt_string()?,
            category: c.opt_string()?,
            price_minor: c.opt_long()?,
            quantity: c.opt_int()?,
            revenue_minor: c.opt_long()?,
            currency: c.opt_string()?,
            page_url: c.opt_string()?,
            page_path: c.opt_string()?,
            page_referrer: c.opt_string()?,
            page_title: c.opt_string()?,
            experiment_id: c.opt_string()?,
            variant: c.opt_string()?,
        }),
        4 => Payload::Ticket(TicketPayload {
            ticket_id: c.string()?,
            status: c.string()?,
            channel: c.opt_string()?,
            category: c.opt_string()?,
            priority: c.opt_string()?,
            agent_id: c.opt_string()?,
            opened_at: c.opt_long()?,
            first_response_at: c.opt_long()?,
            resolved_at: c.opt_long()?,
            csat_score: c.opt_int()?,
            is_complaint: c.boolean()?,
            complaint_reason: c.opt_string()?,
        }),
        5 => Payload::AdSpend(AdSpendPayload {
            channel: c.string()?,
            campaign_id: c.string()?,
            campaign_name: c.opt_string()?,
            day: c.int()?,
            spend_minor: c.long()?,
            currency: c.string()?,
            impressions: c.long()?,
            clicks: c.long()?,
        }),
        _ => return Err(Error::Wire("union index out of range")),
    };
    let person_id = c.opt_string()?;
    Ok(Event {
        event_id,
        event_type,
        source,
        source_event_id,
        occurred_at,
        sent_at,
        received_at,
        event_time,
        identities,
        context,
        payload,
        person_id,
    })
}

/// Decodes a body written with `writer` into a value shaped like `reader`.
pub fn decode_value(writer: &SchemaEntry, reader: &SchemaEntry, body: &[u8]) -> Result<Value> {
    let mut input = StrictReader { rest: body };
    let value = if writer.id == reader.id {
        // The common case: written with the current version. Read it directly; apache-avro
        // would rebuild the schema's name table on every call (about 10 µs per event).
        read_value(&writer.schema, &mut input.rest)?
    } else {
        // Schema resolution is apache-avro's, whose decoder reserves an array's declared
        // item count before reading the items: a 510-byte v1 event whose array claimed
        // tens of millions of items made it allocate 2.3 GB (found by `make fuzz`, target
        // wire_decode; kept in fuzz/regressions/wire_decode). Walk the body with the
        // bounded reader first.
        let mut check: &[u8] = body;
        read_value(&writer.schema, &mut check)?;
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
        let Some((&b, rest)) = input.split_first() else {
            return Err(TRUNCATED);
        };
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
            let Some((&b, rest)) = input.split_first() else {
                return Err(TRUNCATED);
            };
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
    use crate::avro::write_value;

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
    fn direct_event_reader_fits_the_current_schema() {
        let e = Catalogue::builtin().latest("zt.Event").unwrap();
        assert_eq!(
            canonical_sha256(&e.schema),
            EVENT_READER_SCHEMA,
            "zt.Event changed: update wire::read_event to the new field order, then this hash"
        );
        assert!(event_reader_fits(e));
    }

    fn sample(person_id: Option<&str>) -> Event {
        use crate::event::*;
        Event {
            event_id: "erp:1".into(),
            event_type: "order.paid".into(),
            source: Source::Erp,
            source_event_id: Some("1".into()),
            occurred_at: 1_750_000_000_000,
            sent_at: Some(1_750_000_000_100),
            received_at: 1_750_000_000_200,
            event_time: 1_750_000_000_100,
            identities: Identities {
                crm_customer_id: Some("C1".into()),
                ..Default::default()
            },
            context: Context {
                channel: Some("tmall".into()),
                ..Default::default()
            },
            payload: Payload::Order(OrderPayload {
                order_id: "O1".into(),
                status: "paid".into(),
                currency: "CNY".into(),
                total_minor: 100,
                ..Default::default()
            }),
            person_id: person_id.map(str::to_owned),
        }
    }

    /// The version of `zt.Event` before `person_id`: `history/event.v1.avsc`.
    fn event_v1() -> &'static SchemaEntry {
        let v1 = Catalogue::builtin().versions("zt.Event").next().unwrap();
        assert_eq!((v1.file.as_str(), v1.version), ("history/event.v1.avsc", 1));
        v1
    }

    /// A body as a v1 writer wrote it: the current value without `person_id`.
    fn v1_body(ev: &Event) -> Vec<u8> {
        let Value::Record(mut fields) = ev.to_avro() else {
            unreachable!("an event is a record")
        };
        assert_eq!(fields.pop().map(|(k, _)| k).as_deref(), Some("person_id"));
        let value = Value::Record(fields);
        let mut body = Vec::new();
        write_value(&value, &mut body).unwrap();
        // The fast writer and apache-avro's validating one agree on the v1 schema too.
        assert_eq!(
            apache_avro::to_avro_datum(&event_v1().schema, value).unwrap(),
            body
        );
        body
    }

    #[test]
    fn v1_keeps_the_id_already_on_the_topics() {
        // Every zt.Event written before person_id carries this id (docs/wire-format.md);
        // the history file must keep exactly that schema.
        assert_eq!(event_v1().id, 925_107_643);
        assert!(!event_v1().latest);
        assert_ne!(
            Catalogue::builtin().latest("zt.Event").unwrap().id,
            925_107_643
        );
    }

    #[test]
    fn v1_bytes_decode_with_person_id_none() {
        let ev = sample(None);
        let framed = frame(event_v1().id, &v1_body(&ev));
        assert_eq!(decode::<Event>(&framed).unwrap(), ev);
        // A v1 record of an event that has a person id cannot carry it: still None.
        let resolved = sample(Some("p_0a1b2c3d"));
        let framed = frame(event_v1().id, &v1_body(&resolved));
        let back = decode::<Event>(&framed).unwrap();
        assert_eq!(back.person_id, None);
        assert_eq!(back, ev);
    }

    #[test]
    fn v1_bytes_cut_short_or_padded_are_errors() {
        let body = v1_body(&sample(None));
        let id = event_v1().id;
        assert!(decode::<Event>(&frame(id, &body[..body.len() - 1])).is_err());
        let mut long = body.clone();
        long.push(0);
        assert!(matches!(
            decode::<Event>(&frame(id, &long)),
            Err(Error::Wire(_))
        ));
    }

    #[test]
    fn person_id_round_trips_through_every_reader() {
        let cat = Catalogue::builtin();
        let latest = cat.latest("zt.Event").unwrap();
        for person_id in [Some("p_0a1b2c3d"), Some(""), Some("p_人"), None] {
            let ev = sample(person_id);
            let bytes = encode(&ev).unwrap();
            assert_eq!(bytes, encode_validated(cat, &ev).unwrap());
            // The direct reader (decode's path for the current version)...
            assert_eq!(decode::<Event>(&bytes).unwrap(), ev);
            let mut body = &bytes[HEADER_LEN..];
            assert_eq!(read_event(&mut body).unwrap(), ev);
            assert!(body.is_empty());
            // ...the Value reader...
            let value = decode_value(latest, latest, &bytes[HEADER_LEN..]).unwrap();
            assert_eq!(Event::from_avro(value).unwrap(), ev);
            // ...and apache-avro's own decoder.
            let mut body = &bytes[HEADER_LEN..];
            let value = apache_avro::from_avro_datum(&latest.schema, &mut body, None).unwrap();
            assert_eq!(Event::from_avro(value).unwrap(), ev);
        }
    }

    #[test]
    fn person_id_is_the_last_field_on_the_wire() {
        let with = encode(&sample(Some("p_0a1b2c3d"))).unwrap();
        let without = encode(&sample(None)).unwrap();
        // Union branch 1, length 10 (zig-zag 20), the UTF-8 bytes.
        assert_eq!(&with[with.len() - 12..], b"\x02\x14p_0a1b2c3d");
        assert_eq!(without.last(), Some(&0));
        assert_eq!(&with[..with.len() - 12], &without[..without.len() - 1]);
        // A current-version body without the person_id union is one field short.
        assert!(decode::<Event>(&without[..without.len() - 1]).is_err());
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
