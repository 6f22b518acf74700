//! Golden bytes: the Rust encoder must produce, byte for byte, the Confluent wire message
//! that an independent implementation (fastavro, `tests/py/golden.py`) produced from the
//! fixture `tests/golden/order_paid.json`.
//!
//! The event is written here as a struct literal rather than parsed from the JSON, so the
//! two sides share only the schema file and the Avro specification. When this fails after
//! a deliberate change to the schema or the fixture, regenerate the hex with
//! `python tests/py/golden.py write`, update the literal, and review both diffs.
//!
//! `tests/golden/order_paid.v1.hex` is the same event as fastavro writes it with the
//! superseded `schemas/avro/history/event.v1.avsc` (before `person_id`): it must decode
//! through schema resolution, with `person_id` `None`.

use zt_model::{
    Catalogue, Context, Event, ExperimentAssignment, Identities, OrderLine, OrderPayload, Payload,
    Source, decode, encode,
};

/// Lowercase hex, one line, written by `tests/py/golden.py write`.
const GOLDEN_HEX: &str = include_str!("golden/order_paid.hex");
/// The same event written with `history/event.v1.avsc`, by `tests/py/golden.py write`.
const GOLDEN_V1_HEX: &str = include_str!("golden/order_paid.v1.hex");

fn golden_bytes() -> Vec<u8> {
    hex::decode(GOLDEN_HEX.trim()).expect("order_paid.hex is hex")
}

fn golden_v1_bytes() -> Vec<u8> {
    hex::decode(GOLDEN_V1_HEX.trim()).expect("order_paid.v1.hex is hex")
}

fn s(v: &str) -> Option<String> {
    Some(v.to_owned())
}

/// The same `order.paid` event as `tests/golden/order_paid.json`.
fn order_paid() -> Event {
    Event {
        event_id: "erp:7c9e6679-7425-40de-944b-e07fc1f90ae7".into(),
        event_type: "order.paid".into(),
        source: Source::Erp,
        source_event_id: s("7c9e6679-7425-40de-944b-e07fc1f90ae7"),
        // 2025-06-18T12:34:56.789Z
        occurred_at: 1_750_250_096_789,
        sent_at: Some(1_750_250_098_001),
        // Ingest's clock is 523 ms behind the ERP's...
        received_at: 1_750_250_097_478,
        // ...so the corrected event time is 523 ms before occurred_at.
        event_time: 1_750_250_096_266,
        identities: Identities {
            crm_customer_id: s("C20230815001"),
            user_id: None,
            anonymous_id: None,
            phone_hash: s("a1399bf57167186965652eadf3288a6ab02951d3cc2decaa91c5865c28b0e3df"),
            email_hash: None,
            order_id: s("SO202506180001"),
            waybill_no: None,
            ticket_id: None,
        },
        context: Context {
            channel: s("tmall"),
            campaign: s("618-2025"),
            utm_source: s("tmall"),
            utm_medium: s("cpc"),
            utm_campaign: s("618_thermos"),
            utm_term: s("保温杯"),
            utm_content: None,
            private_domain: false,
            experiments: vec![ExperimentAssignment {
                experiment_id: "checkout_v2".into(),
                variant: "treatment".into(),
            }],
            device_type: s("mobile"),
            os: s("iOS"),
            app_version: None,
            locale: s("zh-CN"),
            ip_country: s("CN"),
        },
        // CNY in fen: 2 × 129.00 + 19.90 = 277.90, less 35.00 (15.00 promotion and the
        // 20.00 coupon, both on line 1), plus 8.00 shipping = 250.90.
        payload: Payload::Order(OrderPayload {
            order_id: "SO202506180001".into(),
            status: "paid".into(),
            currency: "CNY".into(),
            subtotal_minor: 27_790,
            discount_minor: 3_500,
            shipping_minor: 800,
            total_minor: 25_090,
            refund_minor: 0,
            refund_reason: None,
            payment_method: s("alipay"),
            coupon_codes: vec!["TM618-20OFF".into()],
            store_id: s("tmall-flagship-001"),
            lines: vec![
                OrderLine {
                    line_no: 1,
                    sku: "TB-500-WHT".into(),
                    product_id: s("P1001"),
                    product_name: s("保温杯 500ml"),
                    category: s("厨房用品"),
                    quantity: 2,
                    unit_price_minor: 12_900,
                    discount_minor: 3_500,
                    coupon_code: s("TM618-20OFF"),
                    refunded_quantity: 0,
                },
                OrderLine {
                    line_no: 2,
                    sku: "LID-STD".into(),
                    product_id: s("P1002"),
                    product_name: s("杯盖"),
                    category: None,
                    quantity: 1,
                    unit_price_minor: 1_990,
                    discount_minor: 0,
                    coupon_code: None,
                    refunded_quantity: 0,
                },
            ],
        }),
        // As the identity processor re-publishes it on zt.events.resolved.
        person_id: s("p_3f9a2c71e5b04d88"),
    }
}

#[test]
fn encoding_matches_the_golden_bytes() {
    let encoded = encode(&order_paid()).expect("encode");
    // Compare as hex so a mismatch shows where the two sides part.
    assert_eq!(hex::encode(&encoded), GOLDEN_HEX.trim());
}

#[test]
fn decoding_the_golden_bytes_gives_the_event() {
    let decoded = decode::<Event>(&golden_bytes()).expect("decode");
    assert_eq!(decoded, order_paid());
}

#[test]
fn header_is_magic_byte_and_catalogue_id() {
    let bytes = golden_bytes();
    assert_eq!(bytes[0], 0x00);
    let id = u32::from_be_bytes(bytes[1..5].try_into().unwrap());
    assert_eq!(id, Catalogue::builtin().latest("zt.Event").unwrap().id);
}

#[test]
fn v1_golden_bytes_decode_with_person_id_none() {
    let bytes = golden_v1_bytes();
    let cat = Catalogue::builtin();
    let id = u32::from_be_bytes(bytes[1..5].try_into().unwrap());
    let writer = cat.by_id(id).expect("the v1 id is in the catalogue");
    assert_eq!(
        (writer.file.as_str(), writer.version, writer.latest),
        ("history/event.v1.avsc", 1, false)
    );
    assert_ne!(id, cat.latest("zt.Event").unwrap().id);
    let decoded = decode::<Event>(&bytes).expect("decode v1");
    let want = Event {
        person_id: None,
        ..order_paid()
    };
    assert_eq!(decoded, want);
    // Re-encoding writes the current version: the golden bytes minus person_id.
    assert_eq!(
        hex::encode(encode(&decoded).unwrap()),
        hex::encode(encode(&want).unwrap())
    );
}

#[test]
fn control_person_id_is_in_the_golden_bytes() {
    let mut ev = order_paid();
    ev.person_id = None;
    let bytes = encode(&ev).unwrap();
    assert_ne!(bytes, golden_bytes());
    // Same header and body up to person_id: only the trailing union differs.
    let golden = golden_bytes();
    let tail = b"\x02$p_3f9a2c71e5b04d88";
    assert_eq!(&golden[golden.len() - tail.len()..], &tail[..]);
    assert_eq!(
        &golden[..golden.len() - tail.len()],
        &bytes[..bytes.len() - 1]
    );
    assert_eq!(bytes.last(), Some(&0));
}

#[test]
fn control_changing_an_amount_changes_the_bytes() {
    let mut ev = order_paid();
    let Payload::Order(order) = &mut ev.payload else {
        unreachable!("order_paid carries an order payload")
    };
    order.lines[0].unit_price_minor += 1;
    assert_ne!(encode(&ev).unwrap(), golden_bytes());
}
