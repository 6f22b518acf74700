//! Property-based round trip of every event type through the Confluent wire format, and a
//! check that Avro schema resolution (an old writer version read by the current reader)
//! works through the catalogue.

use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use zt_model::catalogue::Catalogue;
use zt_model::wire::{self, decode_with, encode_with};
use zt_model::*;

fn text() -> impl Strategy<Value = String> {
    // ASCII, CJK and emoji, with the empty string among them.
    "[a-zA-Z0-9_.:-]{0,12}|[\\u{4e00}-\\u{9fa5}]{1,6}|\\PC{0,8}"
}

fn ostr() -> impl Strategy<Value = Option<String>> {
    option::of(text())
}

fn ts() -> impl Strategy<Value = i64> {
    prop_oneof![0i64..4_102_444_800_000, any::<i64>()]
}

fn identities() -> impl Strategy<Value = Identities> {
    (
        ostr(),
        ostr(),
        ostr(),
        ostr(),
        ostr(),
        ostr(),
        ostr(),
        ostr(),
    )
        .prop_map(|(a, b, c, d, e, f, g, h)| Identities {
            crm_customer_id: a,
            user_id: b,
            anonymous_id: c,
            phone_hash: d,
            email_hash: e,
            order_id: f,
            waybill_no: g,
            ticket_id: h,
        })
}

fn context() -> impl Strategy<Value = Context> {
    (
        (ostr(), ostr(), ostr(), ostr(), ostr(), ostr(), ostr()),
        any::<bool>(),
        vec(
            (text(), text()).prop_map(|(experiment_id, variant)| ExperimentAssignment {
                experiment_id,
                variant,
            }),
            0..3,
        ),
        (ostr(), ostr(), ostr(), ostr(), ostr()),
    )
        .prop_map(
            |((a, b, c, d, e, f, g), pd, experiments, (h, i, j, k, l))| Context {
                channel: a,
                campaign: b,
                utm_source: c,
                utm_medium: d,
                utm_campaign: e,
                utm_term: f,
                utm_content: g,
                private_domain: pd,
                experiments,
                device_type: h,
                os: i,
                app_version: j,
                locale: k,
                ip_country: l,
            },
        )
}

fn customer() -> impl Strategy<Value = CustomerPayload> {
    (
        (text(), option::of(ts()), ostr(), ostr(), ostr()),
        (option::of(any::<i64>()), option::of(any::<i64>())),
        vec(
            (text(), any::<bool>()).prop_map(|(purpose, granted)| Consent { purpose, granted }),
            0..3,
        ),
        (ostr(), option::of(any::<i32>()), ostr(), ostr()),
    )
        .prop_map(
            |((id, reg, ch, tier, prev), (pd, pb), consents, (g, by, p, c))| CustomerPayload {
                customer_id: id,
                registered_at: reg,
                registration_channel: ch,
                tier,
                previous_tier: prev,
                points_delta: pd,
                points_balance: pb,
                consents,
                gender: g,
                birth_year: by,
                province: p,
                city: c,
            },
        )
}

fn order_line() -> impl Strategy<Value = OrderLine> {
    (
        (any::<i32>(), text(), ostr(), ostr(), ostr()),
        (
            any::<i32>(),
            any::<i64>(),
            any::<i64>(),
            ostr(),
            any::<i32>(),
        ),
    )
        .prop_map(
            |((n, sku, pid, pname, cat), (q, price, disc, coupon, rq))| OrderLine {
                line_no: n,
                sku,
                product_id: pid,
                product_name: pname,
                category: cat,
                quantity: q,
                unit_price_minor: price,
                discount_minor: disc,
                coupon_code: coupon,
                refunded_quantity: rq,
            },
        )
}

fn order() -> impl Strategy<Value = OrderPayload> {
    (
        (text(), text(), "[A-Z]{3}"),
        (
            any::<i64>(),
            any::<i64>(),
            any::<i64>(),
            any::<i64>(),
            any::<i64>(),
        ),
        (ostr(), ostr(), vec(text(), 0..3), ostr()),
        vec(order_line(), 0..4),
    )
        .prop_map(
            |(
                (id, status, cur),
                (sub, disc, ship, total, refund),
                (rr, pm, coupons, store),
                lines,
            )| {
                OrderPayload {
                    order_id: id,
                    status,
                    currency: cur,
                    subtotal_minor: sub,
                    discount_minor: disc,
                    shipping_minor: ship,
                    total_minor: total,
                    refund_minor: refund,
                    refund_reason: rr,
                    payment_method: pm,
                    coupon_codes: coupons,
                    store_id: store,
                    lines,
                }
            },
        )
}

fn shipment() -> impl Strategy<Value = ShipmentPayload> {
    (
        (text(), ostr(), text(), text()),
        (ostr(), ostr(), ostr(), ostr(), option::of(ts())),
    )
        .prop_map(|((w, o, c, s), (ec, er, wh, dc, pa))| ShipmentPayload {
            waybill_no: w,
            order_id: o,
            carrier: c,
            status: s,
            exception_code: ec,
            exception_reason: er,
            warehouse: wh,
            destination_city: dc,
            promised_at: pa,
        })
}

fn tracking() -> impl Strategy<Value = TrackingPayload> {
    (
        (text(), ostr(), text(), text(), ostr(), ostr()),
        (
            ostr(),
            ostr(),
            ostr(),
            option::of(any::<i64>()),
            option::of(any::<i32>()),
        ),
        (
            option::of(any::<i64>()),
            ostr(),
            ostr(),
            ostr(),
            ostr(),
            ostr(),
        ),
        (ostr(), ostr()),
    )
        .prop_map(
            |(
                (kind, name, props, traits, prev, group),
                (pid, sku, cat, price, qty),
                (rev, cur, url, path, refr, title),
                (exp, var),
            )| {
                TrackingPayload {
                    kind,
                    name,
                    properties_json: props,
                    traits_json: traits,
                    previous_id: prev,
                    group_id: group,
                    product_id: pid,
                    sku,
                    category: cat,
                    price_minor: price,
                    quantity: qty,
                    revenue_minor: rev,
                    currency: cur,
                    page_url: url,
                    page_path: path,
                    page_referrer: refr,
                    page_title: title,
                    experiment_id: exp,
                    variant: var,
                }
            },
        )
}

fn ticket() -> impl Strategy<Value = TicketPayload> {
    (
        (text(), text(), ostr(), ostr(), ostr(), ostr()),
        (
            option::of(ts()),
            option::of(ts()),
            option::of(ts()),
            option::of(1i32..=5),
        ),
        (any::<bool>(), ostr()),
    )
        .prop_map(
            |((id, st, ch, cat, pr, ag), (o, f, r, csat), (c, cr))| TicketPayload {
                ticket_id: id,
                status: st,
                channel: ch,
                category: cat,
                priority: pr,
                agent_id: ag,
                opened_at: o,
                first_response_at: f,
                resolved_at: r,
                csat_score: csat,
                is_complaint: c,
                complaint_reason: cr,
            },
        )
}

fn ad_spend() -> impl Strategy<Value = AdSpendPayload> {
    (
        (text(), text(), ostr(), any::<i32>()),
        (any::<i64>(), "[A-Z]{3}", any::<i64>(), any::<i64>()),
    )
        .prop_map(
            |((ch, cid, cname, day), (spend, cur, imp, clk))| AdSpendPayload {
                channel: ch,
                campaign_id: cid,
                campaign_name: cname,
                day,
                spend_minor: spend,
                currency: cur,
                impressions: imp,
                clicks: clk,
            },
        )
}

fn payload_for(source: Source) -> BoxedStrategy<Payload> {
    match source {
        Source::Crm => customer().prop_map(Payload::Customer).boxed(),
        Source::Erp => order().prop_map(Payload::Order).boxed(),
        Source::Logistics => shipment().prop_map(Payload::Shipment).boxed(),
        Source::Tracking => tracking().prop_map(Payload::Tracking).boxed(),
        Source::Service => ticket().prop_map(Payload::Ticket).boxed(),
        Source::Marketing => ad_spend().prop_map(Payload::AdSpend).boxed(),
    }
}

/// Every (source, event type) pair of the model, each with its payload type.
fn event() -> impl Strategy<Value = Event> {
    let pairs: Vec<(Source, &'static str)> = Source::ALL
        .into_iter()
        .flat_map(|s| s.event_types().iter().map(move |t| (s, *t)))
        .collect();
    proptest::sample::select(pairs).prop_flat_map(|(source, event_type)| {
        (
            (text(), ostr(), ts(), option::of(ts()), ts(), ts()),
            identities(),
            context(),
            payload_for(source),
            // Null on the source topics, a resolved person on zt.events.resolved.
            ostr(),
        )
            .prop_map(
                move |((id, sid, occ, sent, recv, et), ids, ctx, payload, person_id)| Event {
                    event_id: id,
                    event_type: event_type.to_owned(),
                    source,
                    source_event_id: sid,
                    occurred_at: occ,
                    sent_at: sent,
                    received_at: recv,
                    event_time: et,
                    identities: ids,
                    context: ctx,
                    payload,
                    person_id,
                },
            )
    })
}

fn dead_letter() -> impl Strategy<Value = DeadLetter> {
    (
        (text(), text(), text(), text(), ostr(), text()),
        (vec(any::<u8>(), 0..64), ostr(), ts(), ts()),
        (ostr(), option::of(any::<i32>()), option::of(any::<i64>())),
    )
        .prop_map(
            |((id, stage, src, reason, field, msg), (orig, ct, r, f), (t, p, o))| DeadLetter {
                dlq_id: id,
                stage,
                source: src,
                reason,
                field,
                message: msg,
                original: orig,
                content_type: ct,
                received_at: r,
                failed_at: f,
                origin_topic: t,
                origin_partition: p,
                origin_offset: o,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn every_event_round_trips(ev in event()) {
        let bytes = encode(&ev).unwrap();
        prop_assert_eq!(bytes[0], wire::MAGIC);
        let id = Catalogue::builtin().latest("zt.Event").unwrap().id;
        prop_assert_eq!(&bytes[1..5], &id.to_be_bytes()[..]);
        let back: Event = decode(&bytes).unwrap();
        prop_assert_eq!(&back, &ev);
        // The direct reader agrees with apache-avro's own decoder.
        let schema = &Catalogue::builtin().latest("zt.Event").unwrap().schema;
        let mut body = &bytes[5..];
        let value = apache_avro::from_avro_datum(schema, &mut body, None).unwrap();
        prop_assert_eq!(&Event::from_avro(value).unwrap(), &ev);
        // Deterministic: the same event gives the same bytes.
        prop_assert_eq!(encode(&back).unwrap(), bytes.clone());
        // The fast writer agrees with apache-avro's validating writer byte for byte.
        let validated = wire::encode_validated(Catalogue::builtin(), &ev).unwrap();
        prop_assert_eq!(validated, bytes);
    }

    #[test]
    fn every_dead_letter_round_trips(d in dead_letter()) {
        let bytes = encode(&d).unwrap();
        prop_assert_eq!(&wire::encode_validated(Catalogue::builtin(), &d).unwrap(), &bytes);
        let back: DeadLetter = decode(&bytes).unwrap();
        prop_assert_eq!(back, d);
    }

    #[test]
    fn truncated_messages_are_errors_not_panics(ev in event(), cut in 0usize..200) {
        let bytes = encode(&ev).unwrap();
        let cut = cut.min(bytes.len().saturating_sub(1));
        prop_assert!(decode::<Event>(&bytes[..cut]).is_err());
    }

    #[test]
    fn arbitrary_bytes_never_panic(body in vec(any::<u8>(), 0..256)) {
        let id = Catalogue::builtin().latest("zt.Event").unwrap().id;
        let _ = decode::<Event>(&wire::frame(id, &body));
        let _ = decode::<Event>(&body);
    }
}

/// Every event type is covered by the generator above (so a new type cannot slip in untested).
#[test]
fn every_source_has_event_types() {
    let n: usize = Source::ALL.iter().map(|s| s.event_types().len()).sum();
    assert_eq!(n, 5 + 4 + 5 + 6 + 5 + 1);
}

/// An event written with an older version of the envelope (no `ip_country`, no
/// `refunded_quantity`) decodes with the current schema, the new fields taking defaults.
#[test]
fn old_writer_versions_resolve_to_the_current_model() {
    let current = include_str!("../../../schemas/avro/event.avsc");
    let mut old: serde_json::Value = serde_json::from_str(current).unwrap();
    // Drop Context.ip_country to make a plausible v1.
    let ctx = old["fields"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|f| f["name"] == "context")
        .unwrap();
    ctx["type"]["fields"]
        .as_array_mut()
        .unwrap()
        .retain(|f| f["name"] != "ip_country");
    let old_text = serde_json::to_string(&old).unwrap();
    let dlq = include_str!("../../../schemas/avro/dead_letter.avsc");
    let cat = Catalogue::from_files(&[
        (true, "event.v1.avsc", &old_text),
        (false, "event.avsc", current),
        (false, "dead_letter.avsc", dlq),
    ])
    .unwrap();
    let v1 = cat.versions("zt.Event").next().unwrap();
    assert_eq!(v1.version, 1);
    assert!(!v1.latest);

    // Write with v1 by hand: the current encoding minus ip_country.
    let ev = sample_event();
    let mut value = ev.to_avro();
    if let apache_avro::types::Value::Record(fields) = &mut value {
        for (name, v) in fields.iter_mut() {
            if name == "context"
                && let apache_avro::types::Value::Record(cf) = v
            {
                cf.retain(|(n, _)| n != "ip_country");
            }
        }
    }
    let body = apache_avro::to_avro_datum(&v1.schema, value).unwrap();
    let framed = wire::frame(v1.id, &body);
    let back: Event = decode_with(&cat, &framed).unwrap();
    let mut want = ev.clone();
    want.context.ip_country = None;
    assert_eq!(back, want);
    // And the current version still writes and reads itself.
    let again: Event = decode_with(&cat, &encode_with(&cat, &ev).unwrap()).unwrap();
    assert_eq!(again, ev);
}

fn sample_event() -> Event {
    Event {
        event_id: "e-1".into(),
        event_type: "order.paid".into(),
        source: Source::Erp,
        source_event_id: Some("erp-1".into()),
        occurred_at: 1_700_000_000_000,
        sent_at: None,
        received_at: 1_700_000_000_500,
        event_time: 1_700_000_000_000,
        identities: Identities {
            crm_customer_id: Some("C1".into()),
            order_id: Some("O1".into()),
            ..Default::default()
        },
        context: Context {
            channel: Some("tmall".into()),
            ip_country: Some("CN".into()),
            ..Default::default()
        },
        payload: Payload::Order(OrderPayload {
            order_id: "O1".into(),
            status: "paid".into(),
            currency: "CNY".into(),
            subtotal_minor: 100,
            total_minor: 100,
            ..Default::default()
        }),
        person_id: None,
    }
}
