//! Crash, restart and rebalance tests of `zt process identity` and `zt process profiles`
//! against a separate, simple reference implementation.
//!
//! The generator knows every person it made (ground truth): a CRM customer with a user
//! id and phone, devices tied to the user by identify calls, orders placed by phone,
//! refunds naming only their order, shipments naming their order and then only their
//! waybill, tickets opened by the customer and rated by ticket id alone. Events arrive
//! shuffled across six topics. The reference computes each person's expected figures by
//! counting the generated events; it shares no code with the processors.
//!
//! - `kill -9` of either processor at random moments between and during waves, then
//!   restart: the final profiles equal the reference.
//! - Two instances of each processor in one group, the second joining and the first
//!   leaving mid-stream (rebalances): equal to the reference.
//! - Negative control: the same crash with the profiles' restore switched off
//!   (`ZT_PROFILES_DISABLE_RESTORE=1`, test only) must be caught by the same comparison.

mod process_support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use process_support::*;
use zt_model::*;
use zt_process::records::ProfileSnapshot;

const T0: i64 = 1_767_225_600_000;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// What the reference expects of one person.
#[derive(Debug, Default, Clone, PartialEq)]
struct Expect {
    crm: String,
    paid_orders: u32,
    paid_total: i64,
    refunded: i64,
    tickets: u32,
    ratings: Vec<i32>,
    first_seen: i64,
    last_seen: i64,
    anonymous_ids: BTreeSet<String>,
    last_shipment: (i64, String),
}

fn some(s: String) -> Option<String> {
    Some(s)
}

/// Generates the traffic of `persons` people, shuffled; and the reference per person id.
fn generate(seed: u64, persons: u32) -> (Vec<Event>, BTreeMap<String, Expect>) {
    let mut rng = Rng(seed);
    let mut events = Vec::new();
    let mut expect = BTreeMap::new();
    let mut clock = T0;
    for k in 0..persons {
        let crm = format!("C{k}");
        let user = format!("U{k}");
        let phone = format!("PH{k}");
        let mut x = Expect {
            crm: crm.clone(),
            first_seen: i64::MAX,
            ..Default::default()
        };
        let mut push = |e: Event, x: &mut Expect| {
            x.first_seen = x.first_seen.min(e.event_time);
            x.last_seen = x.last_seen.max(e.event_time);
            events.push(e);
        };
        let mut tick = || {
            clock += 60_000;
            clock
        };
        let t = tick();
        push(
            ev(
                &format!("crm-{k}"),
                "customer.updated",
                t,
                Identities {
                    crm_customer_id: some(crm.clone()),
                    user_id: some(user.clone()),
                    phone_hash: some(phone.clone()),
                    ..Default::default()
                },
                Payload::Customer(CustomerPayload {
                    customer_id: crm.clone(),
                    tier: Some("silver".into()),
                    ..Default::default()
                }),
            ),
            &mut x,
        );
        for j in 0..1 + rng.below(3) {
            let anon = format!("A{k}-{j}");
            x.anonymous_ids.insert(anon.clone());
            let t = tick();
            push(
                ev(
                    &format!("idf-{k}-{j}"),
                    "identify",
                    t,
                    Identities {
                        user_id: some(user.clone()),
                        anonymous_id: some(anon.clone()),
                        ..Default::default()
                    },
                    Payload::Tracking(TrackingPayload {
                        kind: "identify".into(),
                        ..Default::default()
                    }),
                ),
                &mut x,
            );
            let t = tick();
            push(
                ev(
                    &format!("pg-{k}-{j}"),
                    "page",
                    t,
                    Identities {
                        anonymous_id: some(anon),
                        ..Default::default()
                    },
                    Payload::Tracking(TrackingPayload {
                        kind: "page".into(),
                        ..Default::default()
                    }),
                ),
                &mut x,
            );
        }
        for n in 0..rng.below(4) {
            let order = format!("O{k}-{n}");
            let total = 1_000 + rng.below(50_000) as i64;
            let mk = |id: String, ty: &str, t: i64, ids: Identities, refund: i64| {
                ev(
                    &id,
                    ty,
                    t,
                    ids,
                    Payload::Order(OrderPayload {
                        order_id: order.clone(),
                        status: ty.trim_start_matches("order.").into(),
                        currency: "CNY".into(),
                        total_minor: total,
                        refund_minor: refund,
                        ..Default::default()
                    }),
                )
            };
            let t = tick();
            push(
                mk(
                    format!("{order}:paid"),
                    "order.paid",
                    t,
                    Identities {
                        phone_hash: some(phone.clone()),
                        order_id: some(order.clone()),
                        ..Default::default()
                    },
                    0,
                ),
                &mut x,
            );
            x.paid_orders += 1;
            x.paid_total += total;
            if rng.below(3) == 0 {
                let refund = 1 + rng.below(total as u64) as i64;
                let t = tick();
                push(
                    mk(
                        format!("{order}:refund"),
                        "order.refunded",
                        t,
                        Identities {
                            order_id: some(order.clone()),
                            ..Default::default()
                        },
                        refund,
                    ),
                    &mut x,
                );
                x.refunded += refund;
            }
            let waybill = format!("W{k}-{n}");
            for (status, ids) in [
                (
                    "created",
                    Identities {
                        order_id: some(order.clone()),
                        waybill_no: some(waybill.clone()),
                        ..Default::default()
                    },
                ),
                (
                    "delivered",
                    Identities {
                        waybill_no: some(waybill.clone()),
                        ..Default::default()
                    },
                ),
            ] {
                let t = tick();
                push(
                    ev(
                        &format!("{waybill}:{status}"),
                        &format!("shipment.{status}"),
                        t,
                        ids,
                        Payload::Shipment(ShipmentPayload {
                            waybill_no: waybill.clone(),
                            order_id: some(order.clone()),
                            carrier: "sf".into(),
                            status: status.into(),
                            ..Default::default()
                        }),
                    ),
                    &mut x,
                );
                if t > x.last_shipment.0 {
                    x.last_shipment = (t, status.into());
                }
            }
        }
        for m in 0..rng.below(3) {
            let ticket = format!("T{k}-{m}");
            let csat = 1 + rng.below(5) as i32;
            for (ty, ids, score) in [
                (
                    "ticket.opened",
                    Identities {
                        crm_customer_id: some(crm.clone()),
                        ticket_id: some(ticket.clone()),
                        ..Default::default()
                    },
                    None,
                ),
                (
                    "ticket.rated",
                    Identities {
                        ticket_id: some(ticket.clone()),
                        ..Default::default()
                    },
                    Some(csat),
                ),
            ] {
                let t = tick();
                push(
                    ev(
                        &format!("{ticket}:{ty}"),
                        ty,
                        t,
                        ids,
                        Payload::Ticket(TicketPayload {
                            ticket_id: ticket.clone(),
                            status: ty.trim_start_matches("ticket.").into(),
                            csat_score: score,
                            ..Default::default()
                        }),
                    ),
                    &mut x,
                );
            }
            x.tickets += 1;
            x.ratings.push(csat);
        }
        expect.insert(pid("crm_customer_id", &crm), x);
    }
    // Shuffle (Fisher-Yates): arrival order unrelated to event time.
    for i in (1..events.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        events.swap(i, j);
    }
    (events, expect)
}

/// Differences between the published profiles and the reference; empty when equal.
fn compare(env: &Env, expect: &BTreeMap<String, Expect>) -> Vec<String> {
    let got: BTreeMap<String, ProfileSnapshot> = latest_json(&env.topics.profiles());
    let mut diffs = Vec::new();
    let live: Vec<&ProfileSnapshot> = got.values().filter(|p| p.merged_into.is_empty()).collect();
    if live.len() != expect.len() {
        diffs.push(format!(
            "{} live profiles, expected {}",
            live.len(),
            expect.len()
        ));
    }
    for (person, x) in expect {
        let Some(p) = got.get(person) else {
            diffs.push(format!("{person} ({}) has no profile", x.crm));
            continue;
        };
        let avg = (!x.ratings.is_empty())
            .then(|| f64::from(x.ratings.iter().sum::<i32>()) / x.ratings.len() as f64);
        let anon: BTreeSet<String> = p.anonymous_ids.iter().cloned().collect();
        let checks = [
            ("crm", p.crm_customer_id.clone(), x.crm.clone()),
            ("merged_into", p.merged_into.clone(), String::new()),
            (
                "paid_orders",
                p.paid_orders.to_string(),
                x.paid_orders.to_string(),
            ),
            (
                "paid_total",
                p.paid_total_minor.to_string(),
                x.paid_total.to_string(),
            ),
            (
                "refunded",
                p.refunded_minor.to_string(),
                x.refunded.to_string(),
            ),
            ("tickets", p.tickets.to_string(), x.tickets.to_string()),
            (
                "csat_ratings",
                p.csat_ratings.to_string(),
                x.ratings.len().to_string(),
            ),
            ("csat_avg", format!("{:?}", p.csat_avg), format!("{avg:?}")),
            (
                "first_seen",
                p.first_seen_at_ms.to_string(),
                x.first_seen.to_string(),
            ),
            (
                "last_seen",
                p.last_seen_at_ms.to_string(),
                x.last_seen.to_string(),
            ),
            (
                "anonymous_ids",
                format!("{anon:?}"),
                format!("{:?}", x.anonymous_ids),
            ),
            (
                "last_shipment",
                p.last_shipment_status.clone(),
                x.last_shipment.1.clone(),
            ),
        ];
        for (field, g, w) in checks {
            if g != w {
                diffs.push(format!("{} {field}: got {g}, expected {w}", x.crm));
            }
        }
    }
    diffs
}

const PERSONS: u32 = 120;

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_mid_stream_equals_the_reference() {
    let _heavy = HEAVY.lock().await;
    let env = setup("crash", 2, 40).await;
    let (events, expect) = generate(0x5eed_0001, PERSONS);
    let producer = producer();
    let mut rng = Rng(0xc0ffee);
    let mut identity = env.spawn("identity", 0, &[]);
    let mut profiles = env.spawn("profiles", 0, &[]);
    let waves: Vec<&[Event]> = events.chunks(events.len().div_ceil(4)).collect();
    for (i, wave) in waves.iter().enumerate() {
        let run = i + 1;
        env.produce(&producer, wave).await;
        tokio::time::sleep(Duration::from_millis(300 + rng.below(1_500))).await;
        // Kill one (alternating), at a random moment while it works through the wave.
        let (name, child) = if i % 2 == 0 {
            ("identity", &mut identity)
        } else {
            ("profiles", &mut profiles)
        };
        signal(child, "KILL");
        let _ = wait_exit(child, Duration::from_secs(10));
        // Restart after the dead member's session has expired (as a pod restart would):
        // tansu does not always rebalance a dead member's partitions to a member that
        // joined before the session expired.
        tokio::time::sleep(Duration::from_millis(6_500)).await;
        *child = env.spawn(name, run, &[]);
    }
    let drained = env.wait_drained(Duration::from_secs(120));
    signal(&identity, "TERM");
    signal(&profiles, "TERM");
    let _ = wait_exit(&mut identity, Duration::from_secs(20));
    let _ = wait_exit(&mut profiles, Duration::from_secs(20));
    assert!(drained, "not drained:\n{}", env.logs());
    let diffs = compare(&env, &expect);
    env.assert_no_differences(&diffs);
    // The restarted processors restored state rather than starting empty.
    let logs = env.logs();
    assert!(logs.contains("identity graph restored"), "{logs}");
    assert!(logs.contains("profiles restored"), "{logs}");
}

#[tokio::test(flavor = "multi_thread")]
async fn two_instances_with_rebalances_equal_the_reference() {
    let _heavy = HEAVY.lock().await;
    let env = setup("rebalance", 4, 40).await;
    let (events, expect) = generate(0x5eed_0002, PERSONS);
    let producer = producer();
    let thirds: Vec<&[Event]> = events.chunks(events.len().div_ceil(3)).collect();
    let mut ia = env.spawn("identity", 0, &[]);
    let mut pa = env.spawn("profiles", 0, &[]);
    env.produce(&producer, thirds[0]).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    // A second member of each group joins mid-stream...
    let mut ib = env.spawn("identity", 1, &[]);
    let mut pb = env.spawn("profiles", 1, &[]);
    env.produce(&producer, thirds[1]).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    // ...and the first leaves.
    signal(&ia, "TERM");
    signal(&pa, "TERM");
    let sa = wait_exit(&mut ia, Duration::from_secs(30));
    let sb = wait_exit(&mut pa, Duration::from_secs(30));
    env.produce(&producer, thirds[2]).await;
    let drained = env.wait_drained(Duration::from_secs(120));
    signal(&ib, "TERM");
    signal(&pb, "TERM");
    let _ = wait_exit(&mut ib, Duration::from_secs(20));
    let _ = wait_exit(&mut pb, Duration::from_secs(20));
    assert!(drained, "not drained:\n{}", env.logs());
    assert!(
        sa.is_some_and(|s| s.success()) && sb.is_some_and(|s| s.success()),
        "{}",
        env.logs()
    );
    // Both members of each group had partitions at some point.
    for (which, run) in [
        ("identity", 0),
        ("identity", 1),
        ("profiles", 0),
        ("profiles", 1),
    ] {
        assert!(
            env.log(which, run).contains("partitions assigned"),
            "{which} run {run} never got partitions:\n{}",
            env.logs()
        );
    }
    let diffs = compare(&env, &expect);
    env.assert_no_differences(&diffs);
}

#[tokio::test(flavor = "multi_thread")]
async fn negative_control_without_restore_the_oracle_finds_losses() {
    let _heavy = HEAVY.lock().await;
    let env = setup("norestore", 2, 40).await;
    let (events, expect) = generate(0x5eed_0003, 60);
    let producer = producer();
    let halves: Vec<&[Event]> = events.chunks(events.len().div_ceil(2)).collect();
    let mut identity = env.spawn("identity", 0, &[]);
    let mut profiles = env.spawn("profiles", 0, &[("ZT_PROFILES_DISABLE_RESTORE", "1")]);
    env.produce(&producer, halves[0]).await;
    assert!(env.wait_drained(Duration::from_secs(90)), "{}", env.logs());
    signal(&profiles, "KILL");
    let _ = wait_exit(&mut profiles, Duration::from_secs(10));
    // As in the kill test: restart after the dead member's session has expired.
    tokio::time::sleep(Duration::from_millis(6_500)).await;
    profiles = env.spawn("profiles", 1, &[("ZT_PROFILES_DISABLE_RESTORE", "1")]);
    env.produce(&producer, halves[1]).await;
    let drained = env.wait_drained(Duration::from_secs(90));
    signal(&identity, "TERM");
    signal(&profiles, "TERM");
    let _ = wait_exit(&mut identity, Duration::from_secs(20));
    let _ = wait_exit(&mut profiles, Duration::from_secs(20));
    assert!(drained, "{}", env.logs());
    assert!(env.logs().contains("state NOT restored"));
    let diffs = compare(&env, &expect);
    assert!(
        diffs.len() >= 5,
        "without restore the comparison should find lost state, found {diffs:?}"
    );
}
