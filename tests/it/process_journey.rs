//! A scripted customer journey across all six sources, through the real `zt process
//! identity` and `zt process profiles` binaries on the real broker, ends in one person
//! with exactly the profile written by hand below. The shipments are sent before the order
//! they belong to (out-of-order arrival), a rating names only its ticket, a refund only its
//! order; a second customer's event that carries the first customer's user id is refused
//! by the exclusive guard and both stay two persons.

mod process_support;

use std::collections::BTreeMap;
use std::time::Duration;

use process_support::*;
use zt_model::*;
use zt_process::records::{IdentityLink, IdentityMerge, ProfileSnapshot};

const DAY: i64 = 86_400_000;
const T0: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

fn ids() -> Identities {
    Identities::default()
}

fn some(s: &str) -> Option<String> {
    Some(s.to_owned())
}

fn order(id: &str, ty: &str, t: i64, ids: Identities, total: i64, refund: i64) -> Event {
    ev(
        id,
        ty,
        t,
        ids,
        Payload::Order(OrderPayload {
            order_id: ids_order(ty, id),
            status: ty.trim_start_matches("order.").into(),
            currency: "CNY".into(),
            total_minor: total,
            subtotal_minor: total,
            refund_minor: refund,
            ..Default::default()
        }),
    )
}

// The order id is carried in the event id prefix: "O-1:paid" -> "O-1".
fn ids_order(_ty: &str, event_id: &str) -> String {
    event_id.split(':').next().unwrap_or_default().to_owned()
}

fn journey() -> (Vec<Event>, Vec<Event>) {
    let tracking = |id: &str, t: i64, i: Identities, name: &str| {
        let mut e = ev(
            id,
            "track",
            t,
            i,
            Payload::Tracking(TrackingPayload {
                name: some(name),
                ..Default::default()
            }),
        );
        e.context.channel = some("douyin");
        e.context.campaign = some("spring-sale");
        e
    };
    let anon = Identities {
        anonymous_id: some("dev-1"),
        ..ids()
    };
    let mut page = tracking("trk-1", T0, anon.clone(), "Page Viewed");
    page.event_type = "page".into();
    let viewed = tracking("trk-2", T0 + 60_000, anon.clone(), "Product Viewed");
    let mut login = tracking(
        "trk-3",
        T0 + 120_000,
        Identities {
            user_id: some("u-1"),
            anonymous_id: some("dev-1"),
            ..ids()
        },
        "Signed In",
    );
    login.context.channel = some("wechat_mini_program");
    login.context.campaign = None;
    login.context.private_domain = true;
    let registered = ev(
        "crm-1",
        "customer.registered",
        T0 + 180_000,
        Identities {
            crm_customer_id: some("C-1"),
            user_id: some("u-1"),
            phone_hash: some("PH-1"),
            ..ids()
        },
        Payload::Customer(CustomerPayload {
            customer_id: "C-1".into(),
            tier: some("silver"),
            points_balance: Some(100),
            consents: vec![
                Consent {
                    purpose: "marketing".into(),
                    granted: true,
                },
                Consent {
                    purpose: "sms".into(),
                    granted: false,
                },
            ],
            province: some("Zhejiang"),
            city: some("Hangzhou"),
            ..Default::default()
        }),
    );
    // Ordered by phone: the order names only its phone (and itself).
    let paid1 = order(
        "O-1:paid",
        "order.paid",
        T0 + DAY,
        Identities {
            phone_hash: some("PH-1"),
            order_id: some("O-1"),
            ..ids()
        },
        29_900,
        0,
    );
    let shipment = |id: &str, ty: &str, t: i64, i: Identities, status: &str| {
        ev(
            id,
            ty,
            t,
            i,
            Payload::Shipment(ShipmentPayload {
                waybill_no: "W-1".into(),
                order_id: some("O-1"),
                carrier: "sf".into(),
                status: status.into(),
                ..Default::default()
            }),
        )
    };
    let created = shipment(
        "W-1:created",
        "shipment.created",
        T0 + DAY + 3_600_000,
        Identities {
            order_id: some("O-1"),
            waybill_no: some("W-1"),
            ..ids()
        },
        "created",
    );
    let delivered = shipment(
        "W-1:delivered",
        "shipment.delivered",
        T0 + 3 * DAY,
        Identities {
            waybill_no: some("W-1"),
            ..ids()
        },
        "delivered",
    );
    let ticket = |id: &str, ty: &str, t: i64, i: Identities, csat: Option<i32>| {
        ev(
            id,
            ty,
            t,
            i,
            Payload::Ticket(TicketPayload {
                ticket_id: "T-1".into(),
                status: ty.trim_start_matches("ticket.").into(),
                csat_score: csat,
                ..Default::default()
            }),
        )
    };
    let opened = ticket(
        "T-1:opened",
        "ticket.opened",
        T0 + 4 * DAY,
        Identities {
            crm_customer_id: some("C-1"),
            ticket_id: some("T-1"),
            ..ids()
        },
        None,
    );
    let rated = ticket(
        "T-1:rated",
        "ticket.rated",
        T0 + 4 * DAY + 7_200_000,
        Identities {
            ticket_id: some("T-1"),
            ..ids()
        },
        Some(4),
    );
    let spend = ev(
        "ads-1",
        "ad_spend.reported",
        T0,
        ids(),
        Payload::AdSpend(AdSpendPayload {
            channel: "douyin".into(),
            campaign_id: "spring-sale".into(),
            day: 20_454,
            spend_minor: 500_000,
            currency: "CNY".into(),
            impressions: 10_000,
            clicks: 300,
            ..Default::default()
        }),
    );
    let paid2 = order(
        "O-2:paid",
        "order.paid",
        T0 + 11 * DAY,
        Identities {
            crm_customer_id: some("C-1"),
            order_id: some("O-2"),
            ..ids()
        },
        10_100,
        0,
    );
    let refund2 = order(
        "O-2:refunded",
        "order.refunded",
        T0 + 12 * DAY,
        Identities {
            order_id: some("O-2"),
            ..ids()
        },
        10_100,
        2_000,
    );
    // Another customer whose event also names u-1: refused by the exclusive guard.
    let other = ev(
        "crm-2",
        "customer.registered",
        T0 + 5 * DAY,
        Identities {
            crm_customer_id: some("C-2"),
            ..ids()
        },
        Payload::Customer(CustomerPayload {
            customer_id: "C-2".into(),
            tier: some("gold"),
            ..Default::default()
        }),
    );
    let conflict = ev(
        "crm-3",
        "customer.updated",
        T0 + 5 * DAY + 1,
        Identities {
            crm_customer_id: some("C-2"),
            user_id: some("u-1"),
            ..ids()
        },
        Payload::Customer(CustomerPayload {
            customer_id: "C-2".into(),
            ..Default::default()
        }),
    );
    // First wave: the shipments before their order (out of order), then everything else.
    let first = vec![created, delivered];
    let rest = vec![
        page, viewed, login, registered, paid1, opened, rated, spend, paid2, refund2, other,
        conflict,
    ];
    (first, rest)
}

/// The profile of C-1, written by hand from the journey above.
fn expected(p: &str) -> ProfileSnapshot {
    ProfileSnapshot {
        // The write version is the processor's clock, not a fact: set from the record.
        version: 0,
        person_id: p.into(),
        merged_into: String::new(),
        updated_at_ms: T0 + 12 * DAY,
        crm_customer_id: "C-1".into(),
        user_ids: vec!["u-1".into()],
        anonymous_ids: vec!["dev-1".into()],
        phone_hash: "PH-1".into(),
        email_hash: String::new(),
        first_seen_at_ms: T0,
        last_seen_at_ms: T0 + 12 * DAY,
        acquisition_channel: "douyin".into(),
        acquisition_campaign: "spring-sale".into(),
        first_order_at_ms: Some(T0 + DAY),
        last_order_at_ms: Some(T0 + 11 * DAY),
        paid_orders: 2,
        paid_total_minor: 40_000,
        refunded_minor: 2_000,
        net_ltv_minor: 38_000,
        aov_minor: 20_000,
        currency: "CNY".into(),
        repurchase: true,
        avg_days_between_orders: Some(10.0),
        last_order_id: "O-2".into(),
        last_order_status: "refunded".into(),
        last_shipment_status: "delivered".into(),
        tickets: 1,
        complaints: 0,
        csat_ratings: 1,
        csat_avg: Some(4.0),
        tier: "silver".into(),
        points_balance: Some(100),
        consents_granted: vec!["marketing".into()],
        consents_denied: vec!["sms".into()],
        province: "Zhejiang".into(),
        city: "Hangzhou".into(),
        private_domain: true,
        // As of the last event: 1 day since the last paid order (r 5), 2 orders (f 2),
        // 38,000 fen net (m 2): high R and F, low M.
        rfm_r: 5,
        rfm_f: 2,
        rfm_m: 2,
        rfm_segment: "general_value".into(),
        high_value: false,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn journey_across_six_sources_ends_in_the_hand_written_profile() {
    let _heavy = HEAVY.lock().await;
    let database = zt_integration_tests::unique("zt_journey");
    let sink_group = format!("{database}-sink");
    // The sink part of the run: the processors' outputs into a database of its own.
    let extra = format!(
        "[clickhouse]\nurl = \"{}\"\ndatabase = \"{database}\"\n[sink]\ngroup_id = \"{sink_group}\"\nbatch_max_age_ms = 200\n",
        zt_integration_tests::clickhouse_url()
    );
    let env = setup_with("journey", 2, 3, &extra).await;
    let producer = producer();
    let (first, rest) = journey();
    env.produce(&producer, &first).await;
    let mut identity = env.spawn("identity", 0, &[]);
    let mut profiles = env.spawn("profiles", 0, &[]);
    // Let the shipments be resolved on their own first, then send the rest.
    tokio::time::sleep(Duration::from_secs(4)).await;
    env.produce(&producer, &rest).await;
    let drained = env.wait_drained(Duration::from_secs(90));
    signal(&identity, "TERM");
    signal(&profiles, "TERM");
    let si = wait_exit(&mut identity, Duration::from_secs(20));
    let sp = wait_exit(&mut profiles, Duration::from_secs(20));
    assert!(drained, "processors did not drain:\n{}", env.logs());
    assert!(
        si.is_some_and(|s| s.success()) && sp.is_some_and(|s| s.success()),
        "processors did not stop cleanly: {si:?} {sp:?}\n{}",
        env.logs()
    );

    let c1 = pid("crm_customer_id", "C-1");
    let c2 = pid("crm_customer_id", "C-2");
    let t = &env.topics;

    // Every resolved event names the right person; ad spend names none.
    let mut resolved = BTreeMap::new();
    for (_, _, key, v) in read_all(&t.events_resolved()) {
        let e: Event = decode(&v.expect("value")).expect("resolved event decodes");
        let person = e.person_id.clone().unwrap_or_default();
        assert!(key == person || (person.is_empty() && key == e.event_id));
        resolved.insert(e.event_id.clone(), person);
    }
    assert_eq!(resolved.len(), 14, "{resolved:?}");
    // An event resolved before the links that tie it to C-1 arrived (the topics are read
    // in no particular order across sources) names an earlier person, which a merge on
    // zt.identity.merges then continues as C-1.
    let merges: BTreeMap<String, IdentityMerge> = latest_json(&t.identity_merges());
    let fin = |p: &str| {
        let mut p = p.to_owned();
        for _ in 0..20 {
            match merges.get(&p) {
                Some(m) => p = m.into.clone(),
                None => break,
            }
        }
        p
    };
    for (id, person) in &resolved {
        let want = match id.as_str() {
            "ads-1" => "",
            "crm-2" | "crm-3" => c2.as_str(),
            _ => c1.as_str(),
        };
        assert_eq!(fin(person), want, "event {id}");
    }
    // The shipments came before their order: they cannot have named C-1 directly.
    assert_ne!(resolved["W-1:created"], c1);

    // Links: every identifier of C-1 ends at C-1; u-1 never moved to C-2.
    let links: BTreeMap<String, IdentityLink> = latest_json(&t.identity_links());
    for k in [
        "crm_customer_id:C-1",
        "user_id:u-1",
        "anonymous_id:dev-1",
        "phone_hash:PH-1",
        "order_id:O-1",
        "order_id:O-2",
        "waybill_no:W-1",
        "ticket_id:T-1",
    ] {
        assert_eq!(
            links.get(k).map(|l| l.person_id.as_str()),
            Some(c1.as_str()),
            "link {k}"
        );
    }
    assert_eq!(links["crm_customer_id:C-2"].person_id, c2);

    // Profiles: C-1 exactly as written by hand; C-2 apart; the shipment's early person
    // merged into C-1 (a redirect, not a second customer).
    let profiles_by_person: BTreeMap<String, ProfileSnapshot> = latest_json(&t.profiles());
    let got = profiles_by_person.get(&c1).expect("profile of C-1");
    assert!(got.version > 0);
    let mut want = expected(&c1);
    want.version = got.version;
    assert_eq!(*got, want);
    let p2 = &profiles_by_person[&c2];
    assert_eq!(
        (p2.tier.as_str(), p2.paid_orders, p2.user_ids.len()),
        ("gold", 0, 0)
    );
    let live: Vec<&ProfileSnapshot> = profiles_by_person
        .values()
        .filter(|p| p.merged_into.is_empty())
        .collect();
    assert_eq!(live.len(), 2, "live profiles: {live:#?}");
    for p in profiles_by_person
        .values()
        .filter(|p| !p.merged_into.is_empty())
    {
        assert_eq!(fin(&p.person_id), c1, "redirect chain of {}", p.person_id);
        assert_eq!((p.paid_orders, p.tickets, p.last_seen_at_ms), (0, 0, 0));
    }
    // Negative control: the same comparison notices a one-fen difference.
    let mut wrong = want.clone();
    wrong.refunded_minor += 1;
    assert_ne!(*got, wrong);

    // And on into ClickHouse: `zt migrate`, then `zt sink` over the resolved events, links,
    // merges and profiles.
    let sink_topics = [
        t.events_resolved(),
        t.identity_links(),
        t.identity_merges(),
        t.profiles(),
    ];
    let list = sink_topics
        .iter()
        .map(|s| format!("\"{s}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let migrate = std::process::Command::new(zt_binary())
        .args(["--config"])
        .arg(&env.config)
        .arg("migrate")
        .output()
        .expect("zt migrate");
    assert!(
        migrate.status.success(),
        "{}",
        String::from_utf8_lossy(&migrate.stderr)
    );
    let text = std::fs::read_to_string(&env.config).expect("config");
    let text = text.replacen("[sink]\n", &format!("[sink]\ntopics = [{list}]\n"), 1);
    std::fs::write(&env.config, text).expect("config");
    let mut sink = env.spawn_cmd("sink", 0, &["sink"], &[]);
    let loaded = wait_group(&sink_group, &sink_topics, Duration::from_secs(90));
    signal(&sink, "TERM");
    let _ = wait_exit(&mut sink, Duration::from_secs(20));
    assert!(loaded, "sink did not load:\n{}", env.logs());
    let ch = clickhouse::Client::default()
        .with_url(zt_integration_tests::clickhouse_url())
        .with_validation(false)
        .with_database(&database);
    let row: (u32, i64, i64, String, String, String, u8) = ch
        .query(
            "SELECT paid_orders, net_ltv_minor, refunded_minor, last_shipment_status, \
             rfm_segment, merged_into, repurchase FROM profiles FINAL WHERE person_id = ?",
        )
        .bind(&c1)
        .fetch_one()
        .await
        .expect("profile row of C-1");
    assert_eq!(
        row,
        (
            2,
            38_000,
            2_000,
            "delivered".into(),
            "general_value".into(),
            String::new(),
            1
        )
    );
    let person_of_crm: String = ch
        .query("SELECT person_id FROM identity_links FINAL WHERE id_type = 'crm_customer_id' AND id_value = 'C-1'")
        .fetch_one()
        .await
        .expect("link row");
    assert_eq!(person_of_crm, c1);
    // Every resolved event landed once, with the person the processor gave it.
    let (events, with_person): (u64, u64) = ch
        .query("SELECT count(), countIf(person_id != '') FROM events")
        .fetch_one()
        .await
        .expect("events");
    assert_eq!((events, with_person), (14, 13));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_phone_shared_by_many_devices_is_capped_by_the_device_limit() {
    let _heavy = HEAVY.lock().await;
    // At most 3 devices per person: a phone seen with 5 devices keeps 3, the other two
    // stay persons of their own (the guard refuses the link and marks them shared).
    let env = setup_with(
        "shared",
        2,
        10,
        "[identity.max_per_person]\nanonymous_id = 3\nphone_hash = 5\nemail_hash = 5\n",
    )
    .await;
    let events: Vec<Event> = (1..=5)
        .map(|n| {
            ev(
                &format!("s-{n}"),
                "track",
                T0 + n,
                Identities {
                    anonymous_id: some(&format!("dev-s{n}")),
                    phone_hash: some("PH-S"),
                    ..ids()
                },
                Payload::Tracking(TrackingPayload {
                    name: some("Product Viewed"),
                    ..Default::default()
                }),
            )
        })
        .collect();
    env.produce(&producer(), &events).await;
    let mut identity = env.spawn("identity", 0, &[]);
    let mut profiles = env.spawn("profiles", 0, &[]);
    let drained = env.wait_drained(Duration::from_secs(90));
    signal(&identity, "TERM");
    signal(&profiles, "TERM");
    let _ = wait_exit(&mut identity, Duration::from_secs(20));
    let _ = wait_exit(&mut profiles, Duration::from_secs(20));
    assert!(drained, "{}", env.logs());
    let links: BTreeMap<String, IdentityLink> = latest_json(&env.topics.identity_links());
    let phone = pid("phone_hash", "PH-S");
    let (with_phone, alone): (Vec<_>, Vec<_>) = (1..=5)
        .map(|n| {
            let dev = format!("dev-s{n}");
            let p = links[&format!("anonymous_id:{dev}")].person_id.clone();
            (dev, p)
        })
        .partition(|(_, p)| *p == phone);
    assert_eq!(with_phone.len(), 3, "{with_phone:?} {alone:?}");
    for (dev, p) in &alone {
        assert_eq!(*p, pid("anonymous_id", dev), "{dev} stays its own person");
    }
    // The phone's profile lists exactly its three devices.
    let profiles_by_person: BTreeMap<String, ProfileSnapshot> = latest_json(&env.topics.profiles());
    assert_eq!(profiles_by_person[&phone].anonymous_ids.len(), 3);
}
