//! Golden bytes: the Rust encoder must produce, byte for byte, the Confluent wire message
//! that an independent implementation (fastavro, `tests/py/golden.py`) produced from the
//! fixture `tests/golden/order_paid.json`.
//!
//! The event is written here as a struct literal rather than parsed from the JSON, so the
//! two sides share only the schema file and the Avro specification. When this fails after
//! a deliberate change to the schema or the fixture, regenerate the hex with
//! `python tests/py/golden.py write`, update the literal, and review both diffs.

use zt_model::{
    Catalogue, Context, Event, ExperimentAssignment, Identities, OrderLine, OrderPayload, Payload,
    Source, decode, encode,
};

/// Lowercase hex, one line, written by `tests/py/golden.py write`.
const GOLDEN_HEX: &str = include_str!("golden/order_paid.hex");

fn golden_bytes() -> Vec<u8> {
    hex::decode(GOLDEN_HEX.trim()).expect("order_paid.hex is hex")
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
fn control_changing_an_amount_changes_the_bytes() {
    let mut ev = order_paid();
    let Payload::Order(order) = &mut ev.payload else {
        unreachable!("order_paid carries an order payload")
    };
    order.lines[0].unit_price_minor += 1;
    assert_ne!(encode(&ev).unwrap(), golden_bytes());
}
