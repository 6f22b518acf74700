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
pub trait AvroRecord: Sized {
    /// The record as an Avro value shaped like its schema.
    fn to_avro(&self) -> Value;
    /// The record from a value already resolved against the current schema.
    fn from_avro(value: Value) -> Result<Self>;
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

// ---- encoding helpers ----------------------------------------------------------------

fn s(v: &str) -> Value {
    Value::String(v.to_owned())
}

fn ts(v: i64) -> Value {
    Value::TimestampMillis(v)
}

fn opt<T>(v: &Option<T>, f: impl FnOnce(&T) -> Value) -> Value {
    match v {
        None => Value::Union(0, Box::new(Value::Null)),
        Some(x) => Value::Union(1, Box::new(f(x))),
    }
}

fn opt_s(v: &Option<String>) -> Value {
    opt(v, |x| s(x))
}

fn opt_ts(v: &Option<i64>) -> Value {
    opt(v, |x| ts(*x))
}

fn opt_long(v: &Option<i64>) -> Value {
    opt(v, |x| Value::Long(*x))
}

fn opt_int(v: &Option<i32>) -> Value {
    opt(v, |x| Value::Int(*x))
}

fn record(fields: Vec<(&str, Value)>) -> Value {
    Value::Record(fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
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
    fn to_avro(&self) -> Value {
        let (branch, payload) = match &self.payload {
            Payload::Customer(p) => (0, p.to_avro()),
            Payload::Order(p) => (1, p.to_avro()),
            Payload::Shipment(p) => (2, p.to_avro()),
            Payload::Tracking(p) => (3, p.to_avro()),
            Payload::Ticket(p) => (4, p.to_avro()),
            Payload::AdSpend(p) => (5, p.to_avro()),
        };
        record(vec![
            ("event_id", s(&self.event_id)),
            ("event_type", s(&self.event_type)),
            ("source", s(self.source.as_str())),
            ("source_event_id", opt_s(&self.source_event_id)),
            ("occurred_at", ts(self.occurred_at)),
            ("sent_at", opt_ts(&self.sent_at)),
            ("received_at", ts(self.received_at)),
            ("event_time", ts(self.event_time)),
            ("identities", self.identities.to_avro()),
            ("context", self.context.to_avro()),
            ("payload", Value::Union(branch, Box::new(payload))),
            ("person_id", opt_s(&self.person_id)),
        ])
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
    fn to_avro(&self) -> Value {
        record(vec![
            ("crm_customer_id", opt_s(&self.crm_customer_id)),
            ("user_id", opt_s(&self.user_id)),
            ("anonymous_id", opt_s(&self.anonymous_id)),
            ("phone_hash", opt_s(&self.phone_hash)),
            ("email_hash", opt_s(&self.email_hash)),
            ("order_id", opt_s(&self.order_id)),
            ("waybill_no", opt_s(&self.waybill_no)),
            ("ticket_id", opt_s(&self.ticket_id)),
        ])
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
    fn to_avro(&self) -> Value {
        record(vec![
            ("experiment_id", s(&self.experiment_id)),
            ("variant", s(&self.variant)),
        ])
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
    fn to_avro(&self) -> Value {
        record(vec![
            ("channel", opt_s(&self.channel)),
            ("campaign", opt_s(&self.campaign)),
            ("utm_source", opt_s(&self.utm_source)),
            ("utm_medium", opt_s(&self.utm_medium)),
            ("utm_campaign", opt_s(&self.utm_campaign)),
            ("utm_term", opt_s(&self.utm_term)),
            ("utm_content", opt_s(&self.utm_content)),
            ("private_domain", Value::Boolean(self.private_domain)),
            (
                "experiments",
                Value::Array(self.experiments.iter().map(|e| e.to_avro()).collect()),
            ),
            ("device_type", opt_s(&self.device_type)),
            ("os", opt_s(&self.os)),
            ("app_version", opt_s(&self.app_version)),
            ("locale", opt_s(&self.locale)),
            ("ip_country", opt_s(&self.ip_country)),
        ])
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
    fn to_avro(&self) -> Value {
        record(vec![
            ("purpose", s(&self.purpose)),
            ("granted", Value::Boolean(self.granted)),
        ])
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
    fn to_avro(&self) -> Value {
        record(vec![
            ("customer_id", s(&self.customer_id)),
            ("registered_at", opt_ts(&self.registered_at)),
            ("registration_channel", opt_s(&self.registration_channel)),
            ("tier", opt_s(&self.tier)),
            ("previous_tier", opt_s(&self.previous_tier)),
            ("points_delta", opt_long(&self.points_delta)),
            ("points_balance", opt_long(&self.points_balance)),
            (
                "consents",
                Value::Array(self.consents.iter().map(|c| c.to_avro()).collect()),
            ),
            ("gender", opt_s(&self.gender)),
            ("birth_year", opt_int(&self.birth_year)),
            ("province", opt_s(&self.province)),
            ("city", opt_s(&self.city)),
        ])
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
    fn to_avro(&self) -> Value {
        record(vec![
            ("line_no", Value::Int(self.line_no)),
            ("sku", s(&self.sku)),
            ("product_id", opt_s(&self.product_id)),
            ("product_name", opt_s(&self.product_name)),
            ("category", opt_s(&self.category)),
            ("quantity", Value::Int(self.quantity)),
            ("unit_price_minor", Value::Long(self.unit_price_minor)),
            ("discount_minor", Value::Long(self.discount_minor)),
            ("coupon_code", opt_s(&self.coupon_code)),
            ("refunded_quantity", Value::Int(self.refunded_quantity)),
        ])
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
    fn to_avro(&self) -> Value {
        record(vec![
            ("order_id", s(&self.order_id)),
            ("status", s(&self.status)),
            ("currency", s(&self.currency)),
            ("subtotal_minor", Value::Long(self.subtotal_minor)),
            ("discount_minor", Value::Long(self.discount_minor)),
            ("shipping_minor", Value::Long(self.shipping_minor)),
            ("total_minor", Value::Long(self.total_minor)),
            ("refund_minor", Value::Long(self.refund_minor)),
            ("refund_reason", opt_s(&self.refund_reason)),
            ("payment_method", opt_s(&self.payment_method)),
            (
                "coupon_codes",
                Value::Array(self.coupon_codes.iter().map(|c| s(c)).collect()),
            ),
            ("store_id", opt_s(&self.store_id)),
            (
                "lines",
                Value::Array(self.lines.iter().map(|l| l.to_avro()).collect()),
            ),
        ])
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
    fn to_avro(&self) -> Value {
        record(vec![
            ("waybill_no", s(&self.waybill_no)),
            ("order_id", opt_s(&self.order_id)),
            ("carrier", s(&self.carrier)),
            ("status", s(&self.status)),
            ("exception_code", opt_s(&self.exception_code)),
            ("exception_reason", opt_s(&self.exception_reason)),
            ("warehouse", opt_s(&self.warehouse)),
            ("destination_city", opt_s(&self.destination_city)),
            ("promised_at", opt_ts(&self.promised_at)),
        ])
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
    fn to_avro(&self) -> Value {
        record(vec![
            ("kind", s(&self.kind)),
            ("name", opt_s(&self.name)),
            ("properties_json", s(&self.properties_json)),
            ("traits_json", s(&self.traits_json)),
            ("previous_id", opt_s(&self.previous_id)),
            ("group_id", opt_s(&self.group_id)),
            ("product_id", opt_s(&self.product_id)),
            ("sku", opt_s(&self.sku)),
            ("category", opt_s(&self.category)),
            ("price_minor", opt_long(&self.price_minor)),
            ("quantity", opt_int(&self.quantity)),
            ("revenue_minor", opt_long(&self.revenue_minor)),
            ("currency", opt_s(&self.currency)),
            ("page_url", opt_s(&self.page_url)),
            ("page_path", opt_s(&self.page_path)),
            ("page_referrer", opt_s(&self.page_referrer)),
            ("page_title", opt_s(&self.page_title)),
            ("experiment_id", opt_s(&self.experiment_id)),
            ("variant", opt_s(&self.variant)),
        ])
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
    fn to_avro(&self) -> Value {
        record(vec![
            ("ticket_id", s(&self.ticket_id)),
            ("status", s(&self.status)),
            ("channel", opt_s(&self.channel)),
            ("category", opt_s(&self.category)),
            ("priority", opt_s(&self.priority)),
            ("agent_id", opt_s(&self.agent_id)),
            ("opened_at", opt_ts(&self.opened_at)),
            ("first_response_at", opt_ts(&self.first_response_at)),
            ("resolved_at", opt_ts(&self.resolved_at)),
            ("csat_score", opt_int(&self.csat_score)),
            ("is_complaint", Value::Boolean(self.is_complaint)),
            ("complaint_reason", opt_s(&self.complaint_reason)),
        ])
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
    fn to_avro(&self) -> Value {
        record(vec![
            ("channel", s(&self.channel)),
            ("campaign_id", s(&self.campaign_id)),
            ("campaign_name", opt_s(&self.campaign_name)),
            ("day", Value::Date(self.day)),
            ("spend_minor", Value::Long(self.spend_minor)),
            ("currency", s(&self.currency)),
            ("impressions", Value::Long(self.impressions)),
            ("clicks", Value::Long(self.clicks)),
        ])
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
    fn to_avro(&self) -> Value {
        record(vec![
            ("dlq_id", s(&self.dlq_id)),
            ("stage", s(&self.stage)),
            ("source", s(&self.source)),
            ("reason", s(&self.reason)),
            ("field", opt_s(&self.field)),
            ("message", s(&self.message)),
            ("original", Value::Bytes(self.original.clone())),
            ("content_type", opt_s(&self.content_type)),
            ("received_at", ts(self.received_at)),
            ("failed_at", ts(self.failed_at)),
            ("origin_topic", opt_s(&self.origin_topic)),
            ("origin_partition", opt_int(&self.origin_partition)),
            ("origin_offset", opt_long(&self.origin_offset)),
        ])
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
