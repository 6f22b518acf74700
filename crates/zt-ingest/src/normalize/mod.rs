//! Source normalisers: native records of each system and Segment-style tracking calls to
//! canonical [`Event`]s. Stateless per-event transforms; they never panic and return a
//! [`Rejection`] naming the field for bad input.

pub(crate) mod native;
pub(crate) mod segment;
pub(crate) mod segment_parts;
#[doc(hidden)]
pub mod segment_reference;

use serde_json::Value;
use sha2::{Digest, Sha256};
use zt_model::{Event, Source};

use crate::error::Rejection;
use crate::fields::{Ctx, Record};

/// What every normaliser gets besides the record.
#[derive(Debug, Clone)]
pub struct Envelope<'a> {
    /// Ingest's receive time, epoch ms.
    pub received_at: i64,
    /// The record's bytes, from which an id is derived when the record has none.
    pub raw: &'a [u8],
    /// Channels that count as private-domain traffic.
    pub private_channels: &'a [String],
}

impl Envelope<'_> {
    /// The event id of a record without one: derived from the source and the record's
    /// bytes, so a retried request gets the same id.
    pub fn derived_id(&self, source: Source) -> String {
        derive_event_id(source, self.raw)
    }

    /// True when `channel` is a configured private-domain channel.
    pub fn is_private_channel(&self, channel: Option<&str>) -> bool {
        channel.is_some_and(|c| self.private_channels.iter().any(|p| p == c))
    }
}

/// The id of a record without one: `<source>-` and 32 hex digits of SHA-256 over the
/// source name and the record's bytes.
pub fn derive_event_id(source: Source, item: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(source.as_str().as_bytes());
    h.update(b"\n");
    h.update(item);
    let d = h.finalize();
    format!("{source}-{}", hex::encode(&d[..16]))
}

/// Normalises one parsed item of `source`. `segment_kind` is the call type implied by a
/// Segment endpoint (`/v1/track` → `track`), `None` for batch items and native records.
pub fn normalize(
    source: Source,
    value: Value,
    segment_kind: Option<&str>,
    ctx: &Ctx<'_>,
    env: Envelope<'_>,
) -> Result<Event, Rejection> {
    normalize_parsed(
        source,
        crate::items::Parsed::Tree(value),
        segment_kind,
        ctx,
        env,
    )
}

/// [`normalize`] of an item as ingest parsed it (an object read lazily, or a tree).
pub(crate) fn normalize_parsed(
    source: Source,
    value: crate::items::Parsed<'_>,
    segment_kind: Option<&str>,
    ctx: &Ctx<'_>,
    env: Envelope<'_>,
) -> Result<Event, Rejection> {
    let mut ev = segment::empty_event();
    normalize_parsed_into(source, value, segment_kind, ctx, env, &mut ev)?;
    Ok(ev)
}

/// [`normalize_parsed`] written over `out`: a tracking call keeps the buffers of the
/// event's strings ([`segment::normalize_into`]); a native record replaces the event.
/// On a rejection `out` is to be written over, not read.
pub(crate) fn normalize_parsed_into(
    source: Source,
    value: crate::items::Parsed<'_>,
    segment_kind: Option<&str>,
    ctx: &Ctx<'_>,
    env: Envelope<'_>,
    out: &mut Event,
) -> Result<(), Rejection> {
    let (rec, parts) = match value {
        crate::items::Parsed::Tree(v) => (Record::new(v, "", ctx)?, None),
        crate::items::Parsed::Flat(f) => (Record::from_flat(f, "", ctx), None),
        // What the scan of the body read from the call's objects, unless renames make
        // other members of the call its `context`, `properties` or `traits`.
        crate::items::Parsed::Call(f, parts) => (
            Record::from_flat(f, "", ctx),
            ctx.mapping.renames.is_empty().then_some(parts),
        ),
    };
    match source {
        Source::Tracking => segment::normalize_into(rec, segment_kind, ctx, env, out, parts),
        other => {
            *out = native::normalize(other, &rec, env)?;
            Ok(())
        }
    }
}

/// [`normalize`] of one JSON item given as text, read as ingest reads a request's items
/// (for benchmarks: the same path as the HTTP endpoints): a tracking call as the Segment
/// endpoints read one (the objects nested in it listed by the scan), another object
/// lazily, anything else as a value tree.
pub fn normalize_json(
    source: Source,
    json: &str,
    segment_kind: Option<&str>,
    ctx: &Ctx<'_>,
    env: Envelope<'_>,
) -> Result<Event, Rejection> {
    if source == Source::Tracking
        && let Some(lazy) = crate::items::split_segment_lazy(json.as_bytes(), true, 1)
        && let Some(item) = lazy.items().next()
    {
        let parsed = item.value?;
        return normalize_parsed(source, parsed, segment_kind, ctx, env);
    }
    let parsed = crate::items::parse_item(json.as_bytes())?;
    normalize_parsed(source, parsed, segment_kind, ctx, env)
}

/// The events of a Segment request body as the Segment endpoints read it (for
/// benchmarks: the endpoints' path without HTTP, rate limits, dedup and the producer):
/// the body scanned once into its calls ([`crate::items`]), each call read lazily and
/// normalised into one event written over from call to call, as the endpoints do, and
/// passed to `each` (or its rejection). `None` when the endpoint would read the body
/// through a value tree instead.
pub fn normalize_segment_body(
    body: &[u8],
    single: Option<&str>,
    ctx: &Ctx<'_>,
    received_at: i64,
    private_channels: &[String],
    mut each: impl FnMut(Result<&Event, Rejection>),
) -> Option<()> {
    let lazy = crate::items::split_segment_lazy(body, single.is_some(), usize::MAX)?;
    let mut ev = segment::empty_event();
    for item in lazy.items() {
        let env = Envelope {
            received_at,
            raw: item.raw,
            private_channels,
        };
        let done = item
            .value
            .and_then(|v| normalize_parsed_into(Source::Tracking, v, single, ctx, env, &mut ev));
        each(done.map(|()| &ev));
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Mapping;
    use crate::fields::{Flat, TimeFormat};
    use serde_json::value::RawValue;
    use zt_model::pii::PiiHasher;

    /// Normalises `json` through a value tree and through the lazy reader ingest uses for
    /// native records; both results must be the same, errors included.
    fn both_ways(source: Source, json: &str, mapping: &Mapping) {
        let tf = TimeFormat::parse(&mapping.time_format, &mapping.time_zone).unwrap();
        let hasher = PiiHasher::new(b"salt", "86").unwrap();
        let ctx = Ctx {
            mapping,
            time_format: &tf,
            hasher: &hasher,
        };
        let env = || Envelope {
            received_at: 1_767_232_800_000,
            raw: json.as_bytes(),
            private_channels: &[],
        };
        let tree = normalize(
            source,
            serde_json::from_str(json).unwrap(),
            None,
            &ctx,
            env(),
        );
        let flat = Flat::parse(json).expect("an object");
        let lazy = normalize_parsed(source, crate::items::Parsed::Flat(flat), None, &ctx, env());
        assert_eq!(tree, lazy, "{source}: {json}");
    }

    fn fixture_items(text: &str) -> Vec<&str> {
        let items: Vec<&RawValue> = serde_json::from_str(text).unwrap();
        items.into_iter().map(RawValue::get).collect()
    }

    #[test]
    fn the_lazy_reader_normalises_every_fixture_as_the_value_tree_does() {
        let documented = [
            (
                Source::Crm,
                include_str!("../../../../tests/fixtures/sources/crm.json"),
            ),
            (
                Source::Erp,
                include_str!("../../../../tests/fixtures/sources/erp.json"),
            ),
            (
                Source::Logistics,
                include_str!("../../../../tests/fixtures/sources/logistics.json"),
            ),
            (
                Source::Service,
                include_str!("../../../../tests/fixtures/sources/service.json"),
            ),
            (
                Source::Marketing,
                include_str!("../../../../tests/fixtures/sources/marketing.json"),
            ),
        ];
        let mut n = 0;
        for (source, text) in documented {
            for item in fixture_items(text) {
                both_ways(source, item, &Mapping::default());
                n += 1;
            }
        }
        // The ERP variant (docs/sources/erp.md): renames at both levels, local times,
        // amounts in yuan.
        let variant = Mapping::erp_variant_example(true);
        let text = include_str!("../../../../tests/fixtures/sources/erp_variant.json");
        for item in fixture_items(text) {
            both_ways(Source::Erp, item, &variant);
            n += 1;
        }
        assert!(n >= 20, "{n} fixture records");
    }

    #[test]
    fn errors_in_nested_records_name_the_element_by_its_path() {
        let mapping = Mapping::default();
        let tf = TimeFormat::parse("rfc3339", "+08:00").unwrap();
        let hasher = PiiHasher::new(b"salt", "86").unwrap();
        let ctx = Ctx {
            mapping: &mapping,
            time_format: &tf,
            hasher: &hasher,
        };
        let order = r#""type":"order.paid","occurred_at":"2026-01-01T10:00:00+08:00","order_id":"SO1","total":1"#;
        let line = r#"{"sku":"S1","quantity":1,"unit_price":1}"#;
        let crm = r#""type":"customer.registered","occurred_at":"2026-01-01T10:00:00+08:00","customer_id":"C1""#;
        let cases = [
            (
                Source::Erp,
                format!(
                    r#"{{{order},"lines":[{line},{{"sku":"S2","quantity":-1,"unit_price":1}}]}}"#
                ),
                "lines[1].quantity",
            ),
            (
                Source::Erp,
                format!(r#"{{{order},"lines":[{line},{line},7]}}"#),
                "lines[2]",
            ),
            (
                Source::Erp,
                format!(r#"{{{order},"lines":[{{"quantity":1,"unit_price":1}}]}}"#),
                "lines[0].sku",
            ),
            (
                Source::Crm,
                format!(r#"{{{crm},"consents":[{{"purpose":"sms"}}]}}"#),
                "consents[0].granted",
            ),
            (
                Source::Crm,
                format!(r#"{{{crm},"experiments":[{{"experiment_id":"x"}}]}}"#),
                "experiments[0].variant",
            ),
            (Source::Crm, format!(r#"{{{crm},"mobile":"12"}}"#), "mobile"),
        ];
        for (source, json, want) in &cases {
            let env = Envelope {
                received_at: 0,
                raw: json.as_bytes(),
                private_channels: &[],
            };
            let lazy = normalize_json(*source, json, None, &ctx, env.clone()).unwrap_err();
            let tree = normalize(
                *source,
                serde_json::from_str(json).unwrap(),
                None,
                &ctx,
                env,
            )
            .unwrap_err();
            assert_eq!(lazy.field.as_deref(), Some(*want), "{json}");
            assert_eq!(tree.field.as_deref(), Some(*want), "{json}");
        }
    }

    #[test]
    fn the_lazy_reader_keeps_the_value_trees_rules_for_odd_records() {
        let renames = Mapping {
            renames: [("cust_no".to_owned(), "customer_id".to_owned())].into(),
            ..Mapping::default()
        };
        let base = r#""event_id":"e1","type":"customer.registered","occurred_at":"2026-01-01T10:00:00+08:00""#;
        let cases = [
            // A repeated member: the last one is read.
            format!(r#"{{{base},"customer_id":"c1","customer_id":"c2"}}"#),
            // A renamed member replaces the documented one; the last of a repeated one wins.
            format!(r#"{{{base},"customer_id":"c0","cust_no":"c1","cust_no":"c2"}}"#),
            // Null counts as absent; escapes in names and values; numeric ids.
            format!(r#"{{{base},"customer_id":12,"tier":null,"ci\u0074y":"Hang\"zhou"}}"#),
            // Errors name the same field for the same reason.
            format!(r#"{{{base},"customer_id":["c1"]}}"#),
            format!(r#"{{{base},"customer_id":"c1","points_delta":"many"}}"#),
            format!(r#"{{{base},"customer_id":"c1","mobile":"12"}}"#),
            format!(r#"{{{base}}}"#),
        ];
        for case in &cases {
            both_ways(Source::Crm, case, &renames);
            both_ways(Source::Crm, case, &Mapping::default());
        }
        // Order lines (nested records read lazily) and the values read without serde_json:
        // escapes, negative, fractional and large numbers, wrong element types.
        let order = r#""event_id":"o1","type":"order.paid","occurred_at":"2026-01-01T10:00:00+08:00","order_id":"SO1","total":100"#;
        let line = r#""sku":"S\u002d1","quantity":2,"unit_price":50"#;
        let erp = [
            format!(r#"{{{order},"lines":[{{{line}}},{{{line},"sku":"S2","line_no":7}}]}}"#),
            format!(r#"{{{order},"lines":[{{{line}}}, 5]}}"#),
            format!(r#"{{{order},"lines":[null]}}"#),
            format!(r#"{{{order},"lines":"none"}}"#),
            format!(r#"{{{order},"lines":null,"discount":-0}}"#),
            format!(
                r#"{{{order},"lines":[ {{ "sku" : "S1" , "quantity" : 1e0 , "unit_price" : 5 }} ]}}"#
            ),
            format!(r#"{{{order},"lines":[{{{line},"quantity":-1}}]}}"#),
            format!(r#"{{{order},"lines":[{{{line},"unit_price":1.5}}]}}"#),
            format!(r#"{{{order},"lines":[{{{line},"unit_price":123456789012345678901}}]}}"#),
            format!(r#"{{{order},"lines":[{{{line},"unit_price":"99"}}]}}"#),
            format!(
                r#"{{{order},"shipping_fee":999999999999999999,"customer_id":"","currency":"C\"NY"}}"#
            ),
            format!(r#"{{{order},"experiments":[{{"experiment_id":"x","variant":"a"}},[]]}}"#),
        ];
        // A record of many members, a repeat among them.
        let many: String = (0..24).map(|i| format!(r#","x{i}":{i}"#)).collect();
        let erp = [
            erp.to_vec(),
            vec![format!(r#"{{{order}{many},"channel":"a","channel":"b"}}"#)],
        ]
        .concat();
        for case in &erp {
            both_ways(Source::Erp, case, &Mapping::default());
            both_ways(Source::Erp, case, &Mapping::erp_variant_example(true));
        }
        // Not an object: the tree's error, from the reader's fallback.
        assert!(Flat::parse("[1]").is_none() && Flat::parse(" 7").is_none());
        assert!(
            Flat::parse("{\"a\":").is_none(),
            "broken JSON is left to the full parse"
        );
    }
}
