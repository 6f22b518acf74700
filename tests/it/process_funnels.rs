//! `zt process funnels` against a batch recomputation in ClickHouse.
//!
//! Generated traffic: people browse anonymously and signed in (an identify call merges the
//! device's person into the user's), walk part of the e-commerce funnel in random order
//! and times over ten days (the window is seven), see an A/B experiment (sometimes twice,
//! in different variants: the first exposure wins) and pay orders. Events arrive shuffled;
//! a fifth of them are held back and sent after the rest was processed (late data).
//!
//! The oracle is ClickHouse's own `windowFunnel` over the same events, loaded by `zt sink`
//! from `zt.events.resolved`, grouped by the person the generator made (from the user or
//! device id, independently of the identity processor). The experiment oracle is computed
//! from the generator's list. A negative control runs the same comparison against
//! `windowFunnel` with a one-day window and must find differences; another kills the
//! processor mid-stream with its restore switched off and must find losses.

mod process_support;

use std::collections::BTreeMap;
use std::time::Duration;

use process_support::*;
use zt_model::*;
use zt_process::funnel::{ExperimentRow, FunnelRow};

const T0: i64 = 1_767_225_600_000;
const DAY: i64 = 86_400_000;
const WINDOW: i64 = 7 * DAY;

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

fn some(s: String) -> Option<String> {
    Some(s)
}

/// Expected experiment outcome per person k: (variant, converted).
type Expect = BTreeMap<u32, (String, bool)>;

fn generate(seed: u64, persons: u32) -> (Vec<Event>, Expect) {
    let mut rng = Rng(seed);
    let mut out = Vec::new();
    let mut expect = Expect::new();
    let mut n = 0u32;
    for k in 0..persons {
        let user = format!("U{k}");
        let anon = format!("A{k}");
        let mut next_id = || {
            n += 1;
            format!("e{n}")
        };
        // Whole seconds: ClickHouse 18.16's windowFunnel takes DateTime or UInt32 seconds.
        let when = |rng: &mut Rng| T0 + rng.below(10 * 86_400) as i64 * 1_000;
        let signed_in = Identities {
            user_id: some(user.clone()),
            ..Default::default()
        };
        let anonymous = Identities {
            anonymous_id: some(anon.clone()),
            ..Default::default()
        };
        // The identify call that ties the device to the user.
        let t = when(&mut rng);
        out.push(ev(
            &next_id(),
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
        ));
        for _ in 0..rng.below(8) {
            let t = when(&mut rng);
            let ids = if rng.below(2) == 0 {
                anonymous.clone()
            } else {
                signed_in.clone()
            };
            let e = match rng.below(5) {
                s @ 0..=2 => {
                    let name = ["Product Viewed", "Product Added", "Checkout Started"][s as usize];
                    let mut e = ev(
                        &next_id(),
                        "track",
                        t,
                        ids,
                        Payload::Tracking(TrackingPayload {
                            name: Some(name.into()),
                            ..Default::default()
                        }),
                    );
                    e.context.channel =
                        Some(["douyin", "wechat", "baidu"][rng.below(3) as usize].into());
                    e
                }
                3 => {
                    let id = next_id();
                    ev(
                        &id,
                        "order.paid",
                        t,
                        signed_in.clone(),
                        Payload::Order(OrderPayload {
                            order_id: format!("O-{id}"),
                            status: "paid".into(),
                            currency: "CNY".into(),
                            total_minor: 10_000,
                            ..Default::default()
                        }),
                    )
                }
                _ => {
                    let id = next_id();
                    ev(
                        &id,
                        "shipment.delivered",
                        t,
                        signed_in.clone(),
                        Payload::Shipment(ShipmentPayload {
                            waybill_no: format!("W-{id}"),
                            carrier: "sf".into(),
                            status: "delivered".into(),
                            ..Default::default()
                        }),
                    )
                }
            };
            out.push(e);
        }
        // Experiment exposures: none, one or two (the first by event time wins).
        let mut exposures = Vec::new();
        for _ in 0..rng.below(3) {
            let t = when(&mut rng);
            let variant = if rng.below(2) == 0 {
                "control"
            } else {
                "treatment"
            };
            exposures.push((t, variant));
            out.push(ev(
                &next_id(),
                "track",
                t,
                signed_in.clone(),
                Payload::Tracking(TrackingPayload {
                    name: Some("Experiment Viewed".into()),
                    experiment_id: Some("exp-1".into()),
                    variant: Some(variant.into()),
                    ..Default::default()
                }),
            ));
        }
        if let Some((t_exp, variant)) = exposures.iter().min().copied() {
            let converted = out.iter().any(|e| {
                e.event_type == "order.paid"
                    && e.identities.user_id.as_deref() == Some(user.as_str())
                    && e.event_time >= t_exp
            });
            expect.insert(k, (variant.to_owned(), converted));
        }
    }
    for i in (1..out.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        out.swap(i, j);
    }
    (out, expect)
}

/// The person the generator made, from the event's user or device id.
fn k_of(person: &str, links: &BTreeMap<String, u32>) -> Option<u32> {
    links.get(person).copied()
}

struct Run {
    env: Env,
    database: String,
}

async fn start(test: &str) -> Run {
    let database = zt_integration_tests::unique(&format!("zt_{test}"));
    let extra = format!(
        "[clickhouse]\nurl = \"{}\"\ndatabase = \"{database}\"\n[sink]\ngroup_id = \"{database}-sink\"\nbatch_max_age_ms = 200\n",
        zt_integration_tests::clickhouse_url()
    );
    let mut env = setup_with(test, 2, 50, &extra).await;
    env.with_profiles = false;
    env.with_funnels = true;
    Run { env, database }
}

impl Run {
    /// Loads zt.events.resolved into ClickHouse with the real sink and waits for it.
    fn load_events(&self) {
        let env = &self.env;
        let topic = env.topics.events_resolved();
        let text = std::fs::read_to_string(&env.config).expect("config");
        let text = text.replacen("[sink]\n", &format!("[sink]\ntopics = [\"{topic}\"]\n"), 1);
        std::fs::write(&env.config, text).expect("config");
        let migrate = std::process::Command::new(zt_binary())
            .arg("--config")
            .arg(&env.config)
            .arg("migrate")
            .output()
            .expect("zt migrate");
        assert!(
            migrate.status.success(),
            "{}",
            String::from_utf8_lossy(&migrate.stderr)
        );
        let mut sink = env.spawn_cmd("sink", 0, &["sink"], &[]);
        let loaded = wait_group(
            &format!("{}-sink", self.database),
            &[topic],
            Duration::from_secs(90),
        );
        signal(&sink, "TERM");
        let _ = wait_exit(&mut sink, Duration::from_secs(20));
        assert!(loaded, "sink did not load:\n{}", env.logs());
    }

    fn ch(&self) -> clickhouse::Client {
        clickhouse::Client::default()
            .with_url(zt_integration_tests::clickhouse_url())
            .with_validation(false)
            .with_database(&self.database)
    }

    /// windowFunnel per generated person, over the loaded events.
    async fn oracle(&self, window_ms: i64) -> BTreeMap<u32, u8> {
        let window_s = window_ms / 1_000;
        let rows: Vec<(String, u8)> = self
            .ch()
            .query(&format!(
                "SELECT k, toUInt8(windowFunnel({window_s})(toUInt32(intDiv(event_time_ms, 1000)), \
                   event_type = 'track' AND event_name = 'Product Viewed', \
                   event_type = 'track' AND event_name = 'Product Added', \
                   event_type = 'track' AND event_name = 'Checkout Started', \
                   event_type = 'order.paid', \
                   event_type = 'shipment.delivered')) AS level \
                 FROM (SELECT *, if(user_id != '', substring(user_id, 2), substring(anonymous_id, 2)) AS k \
                       FROM events WHERE user_id != '' OR anonymous_id != '') \
                 GROUP BY k"
            ))
            .fetch_all()
            .await
            .expect("windowFunnel");
        rows.into_iter()
            .map(|(k, level)| (k.parse().expect("k"), level))
            .collect()
    }
}

/// Waits up to `secs` for the processors to drain, then stops both; whether they drained.
fn drain_and_stop(
    env: &Env,
    identity: &mut std::process::Child,
    funnels: &mut std::process::Child,
    secs: u64,
) -> bool {
    let drained = env.wait_drained(Duration::from_secs(secs));
    for p in [&mut *identity, &mut *funnels] {
        signal(p, "TERM");
    }
    for p in [identity, funnels] {
        let _ = wait_exit(p, Duration::from_secs(20));
    }
    drained
}

/// The processor's rows, latest per key: funnel level and experiment row per person k.
fn stream_rows(env: &Env, persons: u32) -> (BTreeMap<u32, u8>, BTreeMap<u32, ExperimentRow>) {
    let by_person: BTreeMap<String, u32> = (0..persons)
        .flat_map(|k| {
            [
                (pid("user_id", &format!("U{k}")), k),
                (pid("anonymous_id", &format!("A{k}")), k),
            ]
        })
        .collect();
    let rows: BTreeMap<String, serde_json::Value> = latest_json(&env.topics.funnels());
    let mut levels = BTreeMap::new();
    let mut exps = BTreeMap::new();
    for (key, v) in rows {
        if key.starts_with("funnel:") {
            let r: FunnelRow = serde_json::from_value(v).expect("funnel row");
            if r.deleted == 1 {
                continue;
            }
            let k = k_of(&r.person_id, &by_person).expect("a generated person");
            assert!(
                levels.insert(k, r.level).is_none(),
                "two live funnel rows for person {k}"
            );
        } else {
            let r: ExperimentRow = serde_json::from_value(v).expect("experiment row");
            if r.deleted == 1 {
                continue;
            }
            let k = k_of(&r.person_id, &by_person).expect("a generated person");
            assert!(
                exps.insert(k, r).is_none(),
                "two live experiment rows for person {k}"
            );
        }
    }
    (levels, exps)
}

fn diff_levels(
    stream: &BTreeMap<u32, u8>,
    oracle: &BTreeMap<u32, u8>,
    persons: u32,
) -> Vec<String> {
    (0..persons)
        .filter_map(|k| {
            let s = stream.get(&k).copied().unwrap_or(0);
            let o = oracle.get(&k).copied().unwrap_or(0);
            (s != o).then(|| format!("person {k}: stream {s}, windowFunnel {o}"))
        })
        .collect()
}

const PERSONS: u32 = 80;

#[tokio::test(flavor = "multi_thread")]
async fn streaming_funnel_equals_window_funnel_with_shuffled_and_late_input() {
    let _heavy = HEAVY.lock().await;
    let run = start("funnels").await;
    let env = &run.env;
    let (events, expect) = generate(0xf00d_0001, PERSONS);
    let cut = events.len() * 4 / 5;
    let producer = producer();
    let mut identity = env.spawn("identity", 0, &[]);
    let mut funnels = env.spawn("funnels", 0, &[]);
    env.produce(&producer, &events[..cut]).await;
    assert!(env.wait_drained(Duration::from_secs(90)), "{}", env.logs());
    // The held-back fifth: late and out of order.
    env.produce(&producer, &events[cut..]).await;
    let drained = drain_and_stop(env, &mut identity, &mut funnels, 90);
    assert!(drained, "{}", env.logs());

    run.load_events();
    let oracle = run.oracle(WINDOW).await;
    let (levels, exps) = stream_rows(env, PERSONS);
    let diffs = diff_levels(&levels, &oracle, PERSONS);
    assert!(diffs.is_empty(), "{diffs:#?}");
    // The data is not trivial: several levels occur.
    let distinct: std::collections::BTreeSet<u8> = oracle.values().copied().collect();
    assert!(distinct.len() >= 4, "{oracle:?}");
    // Negative control: a one-day window gives a different answer for some persons.
    let narrow = run.oracle(DAY).await;
    assert!(!diff_levels(&levels, &narrow, PERSONS).is_empty());

    // Experiments: first exposure wins, conversion after it; equal to the generator's list.
    let got: BTreeMap<u32, (String, bool)> = exps
        .iter()
        .map(|(k, r)| (*k, (r.variant.clone(), r.converted == 1)))
        .collect();
    assert_eq!(got, expect);
    assert!(expect.values().any(|v| v.1) && expect.values().any(|v| !v.1));
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_mid_stream_equals_window_funnel_and_without_restore_it_does_not() {
    let _heavy = HEAVY.lock().await;
    for restore in [true, false] {
        let run = start(if restore { "fcrash" } else { "fnorestore" }).await;
        let env = &run.env;
        let (events, _) = generate(0xf00d_0002, PERSONS);
        let producer = producer();
        let envs: &[(&str, &str)] = if restore {
            &[]
        } else {
            &[("ZT_FUNNELS_DISABLE_RESTORE", "1")]
        };
        let mut identity = env.spawn("identity", 0, &[]);
        let mut funnels = env.spawn("funnels", 0, envs);
        let halves: Vec<&[Event]> = events.chunks(events.len().div_ceil(3)).collect();
        for (i, part) in halves.iter().enumerate() {
            env.produce(&producer, part).await;
            if i + 1 < halves.len() {
                if restore {
                    tokio::time::sleep(Duration::from_millis(700)).await;
                } else {
                    assert!(env.wait_drained(Duration::from_secs(90)), "{}", env.logs());
                }
                signal(&funnels, "KILL");
                let _ = wait_exit(&mut funnels, Duration::from_secs(10));
                tokio::time::sleep(Duration::from_millis(6_500)).await;
                funnels = env.spawn("funnels", i + 1, envs);
            }
        }
        let drained = drain_and_stop(env, &mut identity, &mut funnels, 120);
        assert!(drained, "{}", env.logs());
        run.load_events();
        let oracle = run.oracle(WINDOW).await;
        let (levels, _) = stream_rows(env, PERSONS);
        let diffs = diff_levels(&levels, &oracle, PERSONS);
        if restore {
            assert!(env.logs().contains("funnel state restored"));
            assert!(diffs.is_empty(), "{diffs:#?}\n{}", env.logs());
        } else {
            assert!(env.logs().contains("state NOT restored"));
            assert!(
                diffs.len() >= 3,
                "without restore the comparison should find losses, found {diffs:?}"
            );
        }
    }
}

/// A crash after a batch's rows were acknowledged and before its state was sent loses no
/// row: the restore finds the older state, the replay changes it again and sends the rows
/// again. Negative control: the order before the fix (state first, then a crash before the
/// rows) loses the rows of that batch for good, because the replay finds the state already
/// changed and sends nothing. Found by the fault matrix (`kill -9 funnels at 90 %`;
/// docs/reliability.md). Oracle: ClickHouse's `windowFunnel` over the events.
#[tokio::test(flavor = "multi_thread")]
async fn a_crash_between_rows_and_state_loses_nothing_and_state_first_would() {
    let _heavy = HEAVY.lock().await;
    const LATE: u32 = 12;
    for (point, fixed) in [("before_state:1", true), ("state_first:1", false)] {
        let run = start(if fixed { "fbeforestate" } else { "fstatefirst" }).await;
        let env = &run.env;
        let (events, _) = generate(0xf00d_0003, PERSONS + LATE);
        let index = |ev: &Event| {
            let id = &ev.identities;
            let s = id
                .user_id
                .as_deref()
                .or(id.anonymous_id.as_deref())
                .unwrap_or("");
            s[1..].parse::<u32>().expect("generated id")
        };
        let (early, mut late): (Vec<Event>, Vec<Event>) =
            events.into_iter().partition(|ev| index(ev) < PERSONS);
        // The last persons only ever signed in: no merge, so no transfer arrives after the
        // crash that would make the replay send a person's rows again anyway.
        late.retain(|ev| ev.identities.anonymous_id.is_none());
        let producer = producer();
        let mut identity = env.spawn("identity", 0, &[]);
        let mut funnels = env.spawn("funnels", 0, &[]);
        env.produce(&producer, &early).await;
        assert!(env.wait_drained(Duration::from_secs(90)), "{}", env.logs());
        signal(&funnels, "TERM");
        let _ = wait_exit(&mut funnels, Duration::from_secs(20));
        // The armed processor holds its partitions before the last persons' events arrive,
        // and its first batch (up to 10,000 records or 4 s) takes all of them: no later
        // event of these persons follows that would send their rows again.
        let armed = [
            ("ZT__FUNNELS__BATCH_MAX_RECORDS", "10000"),
            ("ZT__FUNNELS__BATCH_MAX_AGE_MS", "4000"),
            ("ZT_FUNNELS_FAILPOINT", point),
        ];
        funnels = env.spawn("funnels", 1, &armed);
        let until = std::time::Instant::now() + Duration::from_secs(60);
        while !env.log("funnels", 1).contains("funnel state restored")
            && std::time::Instant::now() < until
        {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        env.produce(&producer, &late).await;
        let crashed = wait_exit(&mut funnels, Duration::from_secs(60));
        assert!(
            crashed.is_some_and(|s| !s.success()),
            "the crash point {point} was not reached:\n{}",
            env.logs()
        );
        funnels = env.spawn("funnels", 2, &[]);
        let drained = drain_and_stop(env, &mut identity, &mut funnels, 90);
        assert!(drained, "{}", env.logs());

        run.load_events();
        let oracle = run.oracle(WINDOW).await;
        let (levels, _) = stream_rows(env, PERSONS + LATE);
        let diffs = diff_levels(&levels, &oracle, PERSONS + LATE);
        if fixed {
            assert!(diffs.is_empty(), "{diffs:#?}\n{}", env.logs());
        } else {
            assert!(
                !diffs.is_empty(),
                "state first and a crash before the rows should lose rows"
            );
        }
    }
}
