//! Mapping between the Rust model and Avro [`Value`]s, written by hand so that every field
//! name, union branch and logical type on the wire is visible here and checked against the
//! schemas in `schemas/avro/` by the round-trip tests.
//!
//! Decoding is strict: a missing field, a wrong type or an unknown source names the record
//! and field in the error instead of defaulting silently.

use apache_avro::types::Value;

use crate::error::{Error, Result};
use crate::event::*;

/// A type with an Avro record representation.
///
/// A record lists its fields once, in schema order, in [`AvroRecord::emit`]; the same list
/// builds an Avro [`Value`] ([`AvroRecord::to_avro`], for apache-avro's validating writer
/// and the tests) and writes the binary body directly ([`AvroRecord::write_avro`], what
/// [`crate::encode`] sends: no value tree, no per-field allocation).
pub trait AvroRecord: Sized {
    /// Hands every field to `out`, in schema order, with its logical type.
    fn emit<F: Fields>(&self, out: &mut F);
    /// The record as an Avro value shaped like its schema.
    fn to_avro(&self) -> Value {
        let mut b = ValueFields(Vec::new());
        self.emit(&mut b);
        Value::Record(b.0)
    }
    /// Appends the record's Avro binary encoding to `out`: the same bytes as
    /// [`write_value`] of [`AvroRecord::to_avro`] (checked by the round-trip property
    /// tests against apache-avro's validating writer).
    fn write_avro(&self, out: &mut Vec<u8>) {
        self.emit(&mut BinaryFields(out));
    }
    /// The record from a value already resolved against the current schema.
    fn from_avro(value: Value) -> Result<Self>;
}

/// Where [`AvroRecord::emit`] puts a record's fields. `name` is the schema's field name;
/// an `opt_*` field is the union `["null", T]` (branch 0 null, branch 1 the value).
pub trait Fields {
    /// `string`.
    fn string(&mut self, name: &'static str, v: &str);
    /// `["null", "string"]`.
    fn opt_string(&mut self, name: &'static str, v: Option<&str>);
    /// `long`.
    fn long(&mut self, name: &'static str, v: i64);
    /// `["null", "long"]`.
    fn opt_long(&mut self, name: &'static str, v: Option<i64>);
    /// `int`.
    fn int(&mut self, name: &'static str, v: i32);
    /// `["null", "int"]`.
    fn opt_int(&mut self, name: &'static str, v: Option<i32>);
    /// `long` with logical type `timestamp-millis`.
    fn ts(&mut self, name: &'static str, v: i64);
    /// `["null", timestamp-millis]`.
    fn opt_ts(&mut self, name: &'static str, v: Option<i64>);
    /// `int` with logical type `date`.
    fn date(&mut self, name: &'static str, v: i32);
    /// `boolean`.
    fn boolean(&mut self, name: &'static str, v: bool);
    /// `bytes`.
    fn bytes(&mut self, name: &'static str, v: &[u8]);
    /// An array of strings.
    fn strings(&mut self, name: &'static str, v: &[String]);
    /// A nested record.
    fn record<R: AvroRecord>(&mut self, name: &'static str, v: &R);
    /// An array of records.
    fn records<R: AvroRecord>(&mut self, name: &'static str, v: &[R]);
    /// A union of records, branch `branch` taken.
    fn union_record<R: AvroRecord>(&mut self, name: &'static str, branch: i32, v: &R);
}

/// Builds the fields of a [`Value::Record`].
struct ValueFields(Vec<(String, Value)>);

impl ValueFields {
    fn put(&mut self, name: &str, v: Value) {
        self.0.push((name.to_owned(), v));
    }
}

fn opt<T>(v: Option<T>, f: impl FnOnce(T) -> Value) -> Value {
    match v {
        None => Value::Union(0, Box::new(Value::Null)),
        Some(x) => Value::Union(1, Box::new(f(x))),
    }
}

impl Fields for ValueFields {
    fn string(&mut self, name: &'static str, v: &str) {
        self.put(name, Value::String(v.to_owned()));
    }
    fn opt_string(&mut self, name: &'static str, v: Option<&str>) {
        self.put(name, opt(v, |x| Value::String(x.to_owned())));
    }
    fn long(&mut self, name: &'static str, v: i64) {
        self.put(name, Value::Long(v));
    }
    fn opt_long(&mut self, name: &'static str, v: Option<i64>) {
        self.put(name, opt(v, Value::Long));
    }
    fn int(&mut self, name: &'static str, v: i32) {
        self.put(name, Value::Int(v));
    }
    fn opt_int(&mut self, name: &'static str, v: Option<i32>) {
        self.put(name, opt(v, Value::Int));
    }
    fn ts(&mut self, name: &'static str, v: i64) {
        self.put(name, Value::TimestampMillis(v));
    }
    fn opt_ts(&mut self, name: &'static str, v: Option<i64>) {
        self.put(name, opt(v, Value::TimestampMillis));
    }
    fn date(&mut self, name: &'static str, v: i32) {
        self.put(name, Value::Date(v));
    }
    fn boolean(&mut self, name: &'static str, v: bool) {
        self.put(name, Value::Boolean(v));
    }
    fn bytes(&mut self, name: &'static str, v: &[u8]) {
        self.put(name, Value::Bytes(v.to_vec()));
    }
    fn strings(&mut self, name: &'static str, v: &[String]) {
        let items = v.iter().map(|x| Value::String(x.clone())).collect();
        self.put(name, Value::Array(items));
    }
    fn record<R: AvroRecord>(&mut self, name: &'static str, v: &R) {
        self.put(name, v.to_avro());
    }
    fn records<R: AvroRecord>(&mut self, name: &'static str, v: &[R]) {
        self.put(name, Value::Array(v.iter().map(R::to_avro).collect()));
    }
    fn union_record<R: AvroRecord>(&mut self, name: &'static str, branch: i32, v: &R) {
        self.put(name, Value::Union(branch as u32, Box::new(v.to_avro())));
    }
}

/// Writes the binary encoding straight into a buffer (Avro specification, "Binary
/// Encoding": zig-zag varints, length-prefixed strings and bytes, unions as the branch
/// index then the value, arrays as one block of items then a zero count).
struct BinaryFields<'a>(&'a mut Vec<u8>);

impl BinaryFields<'_> {
    fn str(&mut self, v: &[u8]) {
        zigzag(v.len() as i64, self.0);
        self.0.extend_from_slice(v);
    }
    fn block(&mut self, n: usize) {
        if n > 0 {
            zigzag(n as i64, self.0);
        }
    }
}

impl Fields for BinaryFields<'_> {
    fn string(&mut self, _: &'static str, v: &str) {
        self.str(v.as_bytes());
    }
    fn opt_string(&mut self, _: &'static str, v: Option<&str>) {
        match v {
            None => self.0.push(0),
            Some(x) => {
                self.0.push(2);
                self.str(x.as_bytes());
            }
        }
    }
    fn long(&mut self, _: &'static str, v: i64) {
        zigzag(v, self.0);
    }
    fn opt_long(&mut self, _: &'static str, v: Option<i64>) {
        match v {
            None => self.0.push(0),
            Some(x) => {
                self.0.push(2);
                zigzag(x, self.0);
            }
        }
    }
    fn int(&mut self, _: &'static str, v: i32) {
        zigzag(i64::from(v), self.0);
    }
    fn opt_int(&mut self, name: &'static str, v: Option<i32>) {
        self.opt_long(name, v.map(i64::from));
    }
    fn ts(&mut self, name: &'static str, v: i64) {
        self.long(name, v);
    }
    fn opt_ts(&mut self, name: &'static str, v: Option<i64>) {
        self.opt_long(name, v);
    }
    fn date(&mut self, name: &'static str, v: i32) {
        self.int(name, v);
    }
    fn boolean(&mut self, _: &'static str, v: bool) {
        self.0.push(u8::from(v));
    }
    fn bytes(&mut self, _: &'static str, v: &[u8]) {
        self.str(v);
    }
    fn strings(&mut self, _: &'static str, v: &[String]) {
        self.block(v.len());
        for x in v {
            self.str(x.as_bytes());
        }
        self.0.push(0);
    }
    fn record<R: AvroRecord>(&mut self, _: &'static str, v: &R) {
        v.emit(self);
    }
    fn records<R: AvroRecord>(&mut self, _: &'static str, v: &[R]) {
        self.block(v.len());
        for x in v {
            x.emit(self);
        }
        self.0.push(0);
    }
    fn union_record<R: AvroRecord>(&mut self, _: &'static str, branch: i32, v: &R) {
        zigzag(i64::from(branch), self.0);
        v.emit(self);
    }
}

// ---- binary encoding ------------------------------------------------------------------

/// Writes a value built by [`AvroRecord::to_avro`] in Avro binary encoding.
///
/// The values this module builds are already shaped like their schema (fields in schema
/// order, union branches chosen), so the body can be written without consulting the
/// schema. apache-avro's `to_avro_datum` re-resolves every named type of the schema and
/// validates the value on each call: 17 to 23 µs per event there against 2 to 4 µs here
/// (benches/benches/model.rs, measured on the 2-core CI machine). That the two agree is checked byte for byte by the
/// golden test (against fastavro) and by the round-trip property test, which decodes with
/// apache-avro against the schema.
pub fn write_value(value: &Value, out: &mut Vec<u8>) -> Result<()> {
    match value {
        Value::Null => {}
        Value::Boolean(b) => out.push(u8::from(*b)),
        Value::Int(i) | Value::Date(i) => zigzag(i64::from(*i), out),
        Value::Long(l) | Value::TimestampMillis(l) => zigzag(*l, out),
        Value::String(s) => {
            zigzag(s.len() as i64, out);
            out.extend_from_slice(s.as_bytes());
        }
        Value::Bytes(b) => {
            zigzag(b.len() as i64, out);
            out.extend_from_slice(b);
        }
        Value::Union(i, v) => {
            zigzag(i64::from(*i), out);
            write_value(v, out)?;
        }
        Value::Record(fields) => {
            for (_, v) in fields {
                write_value(v, out)?;
            }
        }
        Value::Array(items) => {
            if !items.is_empty() {
                zigzag(items.len() as i64, out);
                for v in items {
                    write_value(v, out)?;
                }
            }
            out.push(0);
        }
        other => {
            return Err(Error::decode(
                "value",
                "",
                format!("{} is not produced by the model", kind(other)),
            ));
        }
    }
    Ok(())
}

fn zigzag(n: i64, out: &mut Vec<u8>) {
    let mut z = ((n << 1) ^ (n >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

// ---- decoding helpers ----------------------------------------------------------------

/// Fields of one decoded record, taken out by name.
pub(crate) struct RecordIn {
    record: &'static str,
    fields: Vec<(String, Value)>,
}

impl RecordIn {
    pub(crate) fn new(record: &'static str, value: Value) -> Result<Self> {
        match unwrap_union(value) {
            Value::Record(fields) => Ok(RecordIn { record, fields }),
            other => Err(Error::decode(
                record,
                "",
                format!("expected a record, found {}", kind(&other)),
            )),
        }
    }

    fn err(&self, field: &str, msg: impl Into<String>) -> Error {
        Error::decode(self.record, field, msg.into())
    }

    fn take(&mut self, field: &str) -> Result<Value> {
        match self.fields.iter_mut().find(|(k, _)| k == field) {
            Some((_, v)) => Ok(std::mem::replace(v, Value::Null)),
            None => Err(self.err(field, "missing field")),
        }
    }

    /// `None` for null, the inner value otherwise.
    fn take_opt(&mut self, field: &str) -> Result<Option<Value>> {
        Ok(match unwrap_union(self.take(field)?) {
            Value::Null => None,
            v => Some(v),
        })
    }

    pub(crate) fn string(&mut self, field: &str) -> Result<String> {
        let v = unwrap_union(self.take(field)?);
        self.as_string(field, v)
    }

    fn as_string(&self, field: &str, v: Value) -> Result<String> {
        match v {
            Value::String(x) => Ok(x),
            other => Err(self.err(field, format!("expected string, found {}", kind(&other)))),
        }
    }

    pub(crate) fn opt_string(&mut self, field: &str) -> Result<Option<String>> {
        self.take_opt(field)?
            .map(|v| self.as_string(field, v))
            .transpose()
    }

    fn as_long(&self, field: &str, v: Value) -> Result<i64> {
        match v {
            Value::Long(x) | Value::TimestampMillis(x) => Ok(x),
            Value::Int(x) => Ok(i64::from(x)),
            other => Err(self.err(field, format!("expected long, found {}", kind(&other)))),
        }
    }

    pub(crate) fn long(&mut self, field: &str) -> Result<i64> {
        let v = unwrap_union(self.take(field)?);
        self.as_long(field, v)
    }

    pub(crate) fn opt_long(&mut self, field: &str) -> Result<Option<i64>> {
        self.take_opt(field)?
            .map(|v| self.as_long(field, v))
            .transpose()
    }

    fn as_int(&self, field: &str, v: Value) -> Result<i32> {
        match v {
            Value::Int(x) | Value::Date(x) => Ok(x),
            other => Err(self.err(field, format!("expected int, found {}", kind(&other)))),
        }
    }

    pub(crate) fn int(&mut self, field: &str) -> Result<i32> {
        let v = unwrap_union(self.take(field)?);
        self.as_int(field, v)
    }

    pub(crate) fn opt_int(&mut self, field: &str) -> Result<Option<i32>> {
        self.take_opt(field)?
            .map(|v| self.as_int(field, v))
            .transpose()
    }

    pub(crate) fn boolean(&mut self, field: &str) -> Result<bool> {
        match unwrap_union(self.take(field)?) {
            Value::Boolean(b) => Ok(b),
            other => Err(self.err(field, format!("expected boolean, found {}", kind(&other)))),
        }
    }

    pub(crate) fn bytes(&mut self, field: &str) -> Result<Vec<u8>> {
        match unwrap_union(self.take(field)?) {
            Value::Bytes(b) | Value::Fixed(_, b) => Ok(b),
            other => Err(self.err(field, format!("expected bytes, found {}", kind(&other)))),
        }
    }

    pub(crate) fn array<T>(
        &mut self,
        field: &str,
        mut f: impl FnMut(Value) -> Result<T>,
    ) -> Result<Vec<T>> {
        match unwrap_union(self.take(field)?) {
            Value::Array(items) => items.into_iter().map(&mut f).collect(),
            other => Err(self.err(field, format!("expected array, found {}", kind(&other)))),
        }
    }

    pub(crate) fn record<T: AvroRecord>(&mut self, field: &str) -> Result<T> {
        T::from_avro(self.take(field)?)
    }
}

fn unwrap_union(v: Value) -> Value {
    match v {
        Value::Union(_, inner) => *inner,
        v => v,
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Boolean(_) => "boolean",
        Value::Int(_) | Value::Date(_) => "int",
        Value::Long(_) | Value::TimestampMillis(_) => "long",
        Value::Float(_) => "float",
        Value::Double(_) => "double",
        Value::Bytes(_) | Value::Fixed(..) => "bytes",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Map(_) => "map",
        Value::Record(_) => "record",
        Value::Enum(..) => "enum",
        Value::Union(..) => "union",
        _ => "another type",
    }
}

// ---- the model -----------------------------------------------------------------------

#[cfg(test)]
/// Union branch index of each payload in `event.avsc`'s `payload` field.
pub(crate) const PAYLOAD_BRANCHES: [&str; 6] = [
    "zt.CustomerPayload",
    "zt.OrderPayload",
    "zt.ShipmentPayload",
    "zt.TrackingPayload",
    "zt.TicketPayload",
    "zt.AdSpendPayload",
];

impl AvroRecord for Event {
    fn emit<F: Fields>(&self, o: &mut F) {
        o.string("event_id", &self.event_id);
        o.string("event_type", &self.event_type);
        o.string("source", self.source.as_str());
        o.opt_string("source_event_id", self.source_event_id.as_deref());
        o.ts("occurred_at", self.occurred_at);
        o.opt_ts("sent_at", self.sent_at);
        o.ts("received_at", self.received_at);
        o.ts("event_time", self.event_time);
        o.record("identities", &self.identities);
        o.record("context", &self.context);
        match &self.payload {
            Payload::Customer(p) => o.union_record("payload", 0, p),
            Payload::Order(p) => o.union_record("payload", 1, p),
            Payload::Shipment(p) => o.union_record("payload", 2, p),
            Payload::Tracking(p) => o.union_record("payload", 3, p),
            Payload::Ticket(p) => o.union_record("payload", 4, p),
            Payload::AdSpend(p) => o.union_record("payload", 5, p),
        }
        o.opt_string("person_id", self.person_id.as_deref());
    }

    fn from_avro(value: Value) -> Result<Self> {
        let mut r = RecordIn::new("zt.Event", value)?;
        let source_name = r.string("source")?;
        let source = source_name
            .parse::<Source>()
            .map_err(|e| r.err("source", e.to_string()))?;
        let payload = match r.take("payload")? {
            Value::Union(i, inner) => match i {
                0 => Payload::Customer(CustomerPayload::from_avro(*inner)?),
                1 => Payload::Order(OrderPayload::from_avro(*inner)?),
                2 => Payload::Shipment(ShipmentPayload::from_avro(*inner)?),
                3 => Payload::Tracking(TrackingPayload::from_avro(*inner)?),
                4 => Payload::Ticket(TicketPayload::from_avro(*inner)?),
                5 => Payload::AdSpend(AdSpendPayload::from_avro(*inner)?),
                other => return Err(r.err("payload", format!("unknown union branch {other}"))),
            },
            other => {
                return Err(r.err("payload", format!("expected union, found {}", kind(&other))));
            }
        };
        Ok(Event {
            event_id: r.string("event_id")?,
            event_type: r.string("event_type")?,
            source,
            source_event_id: r.opt_string("source_event_id")?,
            occurred_at: r.long("occurred_at")?,
            sent_at: r.opt_long("sent_at")?,
            received_at: r.long("received_at")?,
            event_time: r.long("event_time")?,
            identities: r.record("identities")?,
            context: r.record("context")?,
            payload,
            person_id: r.opt_string("person_id")?,
        })
    }
}

impl AvroRecord for Identities {
    fn emit<F: Fields>(&self, o: &mut F) {
        o.opt_string("crm_customer_id", self.crm_customer_id.as_deref());
        o.opt_string("user_id", self.user_id.as_deref());
        o.opt_string("anonymous_id", self.anonymous_id.as_deref());
        o.opt_string("phone_hash", self.phone_hash.as_deref());
        o.opt_string("email_hash", self.email_hash.as_deref());
        o.opt_string("order_id", self.order_id.as_deref());
        o.opt_string("waybill_no", self.waybill_no.as_deref());
        o.opt_string("ticket_id", self.ticket_id.as_deref());
    }

    fn from_avro(value: Value) -> Result<Self> {
        let mut r = RecordIn::new("zt.Identities", value)?;
        Ok(Identities {
            crm_customer_id: r.opt_string("crm_customer_id")?,
            user_id: r.opt_string("user_id")?,
            anonymous_id: r.opt_string("anonymous_id")?,
            phone_hash: r.opt_string("phone_hash")?,
            email_hash: r.opt_string("email_hash")?,
            order_id: r.opt_string("order_id")?,
            waybill_no: r.opt_string("waybill_no")?,
            ticket_id: r.opt_string("ticket_id")?,
        })
    }
}

impl AvroRecord for ExperimentAssignment {
    fn emit<F: Fields>(&self, o: &mut F) {
        o.string("experiment_id", &self.experiment_id);
        o.string("variant", &self.variant);
    }

    fn from_avro(value: Value) -> Result<Self> {
        let mut r = RecordIn::new("zt.ExperimentAssignment", value)?;
        Ok(ExperimentAssignment {
            experiment_id: r.string("experiment_id")?,
            variant: r.string("variant")?,
        })
    }
}

impl AvroRecord for Context {
    fn emit<F: Fields>(&self, o: &mut F) {
        o.opt_string("channel", self.channel.as_deref());
        o.opt_string("campaign", self.campaign.as_deref());
        o.opt_string("utm_source", self.utm_source.as_deref());
        o.opt_string("utm_medium", self.utm_medium.as_deref());
        o.opt_string("utm_campaign", self.utm_campaign.as_deref());
        o.opt_string("utm_term", self.utm_term.as_deref());
        o.opt_string("utm_content", self.utm_content.as_deref());
        o.boolean("private_domain", self.private_domain);
        o.records("experiments", &self.experiments);
        o.opt_string("device_type", self.device_type.as_deref());
        o.opt_string("os", self.os.as_deref());
        o.opt_string("app_version", self.app_version.as_deref());
        o.opt_string("locale", self.locale.as_deref());
        o.opt_string("ip_country", self.ip_country.as_deref());
    }

    fn from_avro(value: Value) -> Result<Self> {
        let mut r = RecordIn::new("zt.Context", value)?;
        Ok(Context {
            channel: r.opt_string("channel")?,
            campaign: r.opt_string("campaign")?,
            utm_source: r.opt_string("utm_source")?,
            utm_medium: r.opt_string("utm_medium")?,
            utm_campaign: r.opt_string("utm_campaign")?,
            utm_term: r.opt_string("utm_term")?,
            utm_content: r.opt_string("utm_content")?,
            private_domain: r.boolean("private_domain")?,
            experiments: r.array("experiments", ExperimentAssignment::from_avro)?,
            device_type: r.opt_string("device_type")?,
            os: r.opt_string("os")?,
            app_version: r.opt_string("app_version")?,
            locale: r.opt_string("locale")?,
            ip_country: r.opt_string("ip_country")?,
        })
    }
}

impl AvroRecord for Consent {
    fn emit<F: Fields>(&self, o: &mut F) {
        o.string("purpose", &self.purpose);
        o.boolean("granted", self.granted);
    }

    fn from_avro(value: Value) -> Result<Self> {
        let mut r = RecordIn::new("zt.Consent", value)?;
        Ok(Consent {
            purpose: r.string("purpose")?,
            granted: r.boolean("granted")?,
        })
    }
}

impl AvroRecord for CustomerPayload {
    fn emit<F: Fields>(&self, o: &mut F) {
        o.string("customer_id", &self.customer_id);
        o.opt_ts("registered_at", self.registered_at);
        o.opt_string("registration_channel", self.registration_channel.as_deref());
        o.opt_string("tier", self.tier.as_deref());
        o.opt_string("previous_tier", self.previous_tier.as_deref());
        o.opt_long("points_delta", self.points_delta);
        o.opt_long("points_balance", self.points_balance);
        o.records("consents", &self.consents);
        o.opt_string("gender", self.gender.as_deref());
        o.opt_int("birth_year", self.birth_year);
        o.opt_string("province", self.province.as_deref());
        o.opt_string("city", self.city.as_deref());
    }

    fn from_avro(value: Value) -> Result<Self> {
        let mut r = RecordIn::new("zt.CustomerPayload", value)?;
        Ok(CustomerPayload {
            customer_id: r.string("customer_id")?,
            registered_at: r.opt_long("registered_at")?,
            registration_channel: r.opt_string("registration_channel")?,
            tier: r.opt_string("tier")?,
            previous_tier: r.opt_string("previous_tier")?,
            points_delta: r.opt_long("points_delta")?,
            points_balance: r.opt_long("points_balance")?,
            consents: r.array("consents", Consent::from_avro)?,
            gender: r.opt_string("gender")?,
            birth_year: r.opt_int("birth_year")?,
            province: r.opt_string("province")?,
            city: r.opt_string("city")?,
        })
    }
}

impl AvroRecord for OrderLine {
    fn emit<F: Fields>(&self, o: &mut F) {
        o.int("line_no", self.line_no);
        o.string("sku", &self.sku);
        o.opt_string("product_id", self.product_id.as_deref());
        o.opt_string("product_name", self.product_name.as_deref());
        o.opt_string("category", self.category.as_deref());
        o.int("quantity", self.quantity);
        o.long("unit_price_minor", self.unit_price_minor);
        o.long("discount_minor", self.discount_minor);
        o.opt_string("coupon_code", self.coupon_code.as_deref());
        o.int("refunded_quantity", self.refunded_quantity);
    }

    fn from_avro(value: Value) -> Result<Self> {
        let mut r = RecordIn::new("zt.OrderLine", value)?;
        Ok(OrderLine {
            line_no: r.int("line_no")?,
            sku: r.string("sku")?,
            product_id: r.opt_string("product_id")?,
            product_name: r.opt_string("product_name")?,
            category: r.opt_string("category")?,
            quantity: r.int("quantity")?,
            unit_price_minor: r.long("unit_price_minor")?,
            discount_minor: r.long("discount_minor")?,
            coupon_code: r.opt_string("coupon_code")?,
            refunded_quantity: r.int("refunded_quantity")?,
        })
    }
}

impl AvroRecord for OrderPayload {
    fn emit<F: Fields>(&self, o: &mut F) {
        o.string("order_id", &self.order_id);
        o.string("status", &self.status);
        o.string("currency", &self.currency);
        o.long("subtotal_minor", self.subtotal_minor);
        o.long("discount_minor", self.discount_minor);
        o.long("shipping_minor", self.shipping_minor);
        o.long("total_minor", self.total_minor);
        o.long("refund_minor", self.refund_minor);
        o.opt_string("refund_reason", self.refund_reason.as_deref());
        o.opt_string("payment_method", self.payment_method.as_deref());
        o.strings("coupon_codes", &self.coupon_codes);
        o.opt_string("store_id", self.store_id.as_deref());
        o.records("lines", &self.lines);
    }

    fn from_avro(value: Value) -> Result<Self> {
        let mut r = RecordIn::new("zt.OrderPayload", value)?;
        Ok(OrderPayload {
            order_id: r.string("order_id")?,
            status: r.string("status")?,
            currency: r.string("currency")?,
            subtotal_minor: r.long("subtotal_minor")?,
            discount_minor: r.long("discount_minor")?,
            shipping_minor: r.long("shipping_minor")?,
            total_minor: r.long("total_minor")?,
            refund_minor: r.long("refund_minor")?,
            refund_reason: r.opt_string("refund_reason")?,
            payment_method: r.opt_string("payment_method")?,
            coupon_codes: r.array("coupon_codes", |v| match unwrap_union(v) {
                Value::String(x) => Ok(x),
                other => Err(Error::decode(
                    "zt.OrderPayload",
                    "coupon_codes",
                    format!("expected string items, found {}", kind(&other)),
                )),
            })?,
            store_id: r.opt_string("store_id")?,
            lines: r.array("lines", OrderLine::from_avro)?,
        })
    }
}

impl AvroRecord for ShipmentPayload {
    fn emit<F: Fields>(&self, o: &mut F) {
        o.string("waybill_no", &self.waybill_no);
        o.opt_string("order_id", self.order_id.as_deref());
        o.string("carrier", &self.carrier);
        o.string("status", &self.status);
        o.opt_string("exception_code", self.exception_code.as_deref());
        o.opt_string("exception_reason", self.exception_reason.as_deref());
        o.opt_string("warehouse", self.warehouse.as_deref());
        o.opt_string("destination_city", self.destination_city.as_deref());
        o.opt_ts("promised_at", self.promised_at);
    }

    fn from_avro(value: Value) -> Result<Self> {
        let mut r = RecordIn::new("zt.ShipmentPayload", value)?;
        Ok(ShipmentPayload {
            waybill_no: r.string("waybill_no")?,
            order_id: r.opt_string("order_id")?,
            carrier: r.string("carrier")?,
            status: r.string("status")?,
            exception_code: r.opt_string("exception_code")?,
            exception_reason: r.opt_string("exception_reason")?,
            warehouse: r.opt_string("warehouse")?,
            destination_city: r.opt_string("destination_city")?,
            promised_at: r.opt_long("promised_at")?,
        })
    }
}

impl AvroRecord for TrackingPayload {
    fn emit<F: Fields>(&self, o: &mut F) {
        o.string("kind", &self.kind);
        o.opt_string("name", self.name.as_deref());
        o.string("properties_json", &self.properties_json);
        o.string("traits_json", &self.traits_json);
        o.opt_string("previous_id", self.previous_id.as_deref());
        o.opt_string("group_id", self.group_id.as_deref());
        o.opt_string("product_id", self.product_id.as_deref());
        o.opt_string("sku", self.sku.as_deref());
        o.opt_string("category", self.category.as_deref());
        o.opt_long("price_minor", self.price_minor);
        o.opt_int("quantity", self.quantity);
        o.opt_long("revenue_minor", self.revenue_minor);
        o.opt_string("currency", self.currency.as_deref());
        o.opt_string("page_url", self.page_url.as_deref());
        o.opt_string("page_path", self.page_path.as_deref());
        o.opt_string("page_referrer", self.page_referrer.as_deref());
        o.opt_string("page_title", self.page_title.as_deref());
        o.opt_string("experiment_id", self.experiment_id.as_deref());
        o.opt_string("variant", self.variant.as_deref());
    }

    fn from_avro(value: Value) -> Result<Self> {
        let mut r = RecordIn::new("zt.TrackingPayload", value)?;
        Ok(TrackingPayload {
            kind: r.string("kind")?,
            name: r.opt_string("name")?,
            properties_json: r.string("properties_json")?,
            traits_json: r.string("traits_json")?,
            previous_id: r.opt_string("previous_id")?,
            group_id: r.opt_string("group_id")?,
            product_id: r.opt_string("product_id")?,
            sku: r.opt_string("sku")?,
            category: r.opt_string("category")?,
            price_minor: r.opt_long("price_minor")?,
            quantity: r.opt_int("quantity")?,
            revenue_minor: r.opt_long("revenue_minor")?,
            currency: r.opt_string("currency")?,
            page_url: r.opt_string("page_url")?,
            page_path: r.opt_string("page_path")?,
            page_referrer: r.opt_string("page_referrer")?,
            page_title: r.opt_string("page_title")?,
            experiment_id: r.opt_string("experiment_id")?,
            variant: r.opt_string("variant")?,
        })
    }
}

impl AvroRecord for TicketPayload {
    fn emit<F: Fields>(&self, o: &mut F) {
        o.string("ticket_id", &self.ticket_id);
        o.string("status", &self.status);
        o.opt_string("channel", self.channel.as_deref());
        o.opt_string("category", self.category.as_deref());
        o.opt_string("priority", self.priority.as_deref());
        o.opt_string("agent_id", self.agent_id.as_deref());
        o.opt_ts("opened_at", self.opened_at);
        o.opt_ts("first_response_at", self.first_response_at);
        o.opt_ts("resolved_at", self.resolved_at);
        o.opt_int("csat_score", self.csat_score);
        o.boolean("is_complaint", self.is_complaint);
        o.opt_string("complaint_reason", self.complaint_reason.as_deref());
    }

    fn from_avro(value: Value) -> Result<Self> {
        let mut r = RecordIn::new("zt.TicketPayload", value)?;
        Ok(TicketPayload {
            ticket_id: r.string("ticket_id")?,
            status: r.string("status")?,
            channel: r.opt_string("channel")?,
            category: r.opt_string("category")?,
            priority: r.opt_string("priority")?,
            agent_id: r.opt_string("agent_id")?,
            opened_at: r.opt_long("opened_at")?,
            first_response_at: r.opt_long("first_response_at")?,
            resolved_at: r.opt_long("resolved_at")?,
            csat_score: r.opt_int("csat_score")?,
            is_complaint: r.boolean("is_complaint")?,
            complaint_reason: r.opt_string("complaint_reason")?,
        })
    }
}

impl AvroRecord for AdSpendPayload {
    fn emit<F: Fields>(&self, o: &mut F) {
        o.string("channel", &self.channel);
        o.string("campaign_id", &self.campaign_id);
        o.opt_string("campaign_name", self.campaign_name.as_deref());
        o.date("day", self.day);
        o.long("spend_minor", self.spend_minor);
        o.string("currency", &self.currency);
        o.long("impressions", self.impressions);
        o.long("clicks", self.clicks);
    }

    fn from_avro(value: Value) -> Result<Self> {
        let mut r = RecordIn::new("zt.AdSpendPayload", value)?;
        Ok(AdSpendPayload {
            channel: r.string("channel")?,
            campaign_id: r.string("campaign_id")?,
            campaign_name: r.opt_string("campaign_name")?,
            day: r.int("day")?,
            spend_minor: r.long("spend_minor")?,
            currency: r.string("currency")?,
            impressions: r.long("impressions")?,
            clicks: r.long("clicks")?,
        })
    }
}

impl AvroRecord for crate::dlq::DeadLetter {
    fn emit<F: Fields>(&self, o: &mut F) {
        o.string("dlq_id", &self.dlq_id);
        o.string("stage", &self.stage);
        o.string("source", &self.source);
        o.string("reason", &self.reason);
        o.opt_string("field", self.field.as_deref());
        o.string("message", &self.message);
        o.bytes("original", &self.original);
        o.opt_string("content_type", self.content_type.as_deref());
        o.ts("received_at", self.received_at);
        o.ts("failed_at", self.failed_at);
        o.opt_string("origin_topic", self.origin_topic.as_deref());
        o.opt_int("origin_partition", self.origin_partition);
        o.opt_long("origin_offset", self.origin_offset);
    }

    fn from_avro(value: Value) -> Result<Self> {
        let mut r = RecordIn::new("zt.DeadLetter", value)?;
        Ok(crate::dlq::DeadLetter {
            dlq_id: r.string("dlq_id")?,
            stage: r.string("stage")?,
            source: r.string("source")?,
            reason: r.string("reason")?,
            field: r.opt_string("field")?,
            message: r.string("message")?,
            original: r.bytes("original")?,
            content_type: r.opt_string("content_type")?,
            received_at: r.long("received_at")?,
            failed_at: r.long("failed_at")?,
            origin_topic: r.opt_string("origin_topic")?,
            origin_partition: r.opt_int("origin_partition")?,
            origin_offset: r.opt_long("origin_offset")?,
        })
    }
}
