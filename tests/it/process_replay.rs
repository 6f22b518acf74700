//! A replay of `zt process identity` keeps every resolved event on its first person and
//! partition, also when the graph changed in between.
//!
//! The crash: identity aborts after the first batch's resolved events were acknowledged
//! and before its input offsets were committed (`ZT_IDENTITY_FAILPOINT=after_send:1`), so
//! the restarted processor sends that batch again. In between, the graph's log gains the
//! edges another resolver would append for a login on each device (user id + device id),
//! so every device's person is merged into its user's. `zt.events.resolved` is keyed by
//! person: a copy resolved with today's graph would go to the user's partition, past the
//! sink's per-partition deduplication.
//!
//! Oracle, by the documented person-id formula (docs/identity.md): the first batch's
//! events are keyed by their device's person, every copy alike; the later events (resolved
//! after the merges) by their user's. The negative control replays with today's graph
//! (`ZT_IDENTITY_DISABLE_AS_OF=1`, test only) and must be caught by the same check.

mod process_support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use process_support::*;
use rdkafka::producer::FutureRecord;
use zt_model::*;

const T0: i64 = 1_767_225_600_000;
const DEVICES: usize = 30;

fn device_events() -> Vec<Event> {
    (0..DEVICES)
        .map(|i| {
            ev(
                &format!("view-{i}"),
                "page",
                T0 + i as i64,
                Identities {
                    anonymous_id: Some(format!("dev-{i}")),
                    ..Default::default()
                },
                Payload::Tracking(TrackingPayload {
                    kind: "page".into(),
                    ..Default::default()
                }),
            )
        })
        .collect()
}

/// Every copy of each event in `zt.events.resolved`: (partition, key, person id).
fn copies(env: &Env) -> BTreeMap<String, Vec<(i32, String, String)>> {
    let mut out: BTreeMap<String, Vec<(i32, String, String)>> = BTreeMap::new();
    for (p, _, key, value) in read_all(&env.topics.events_resolved()) {
        let e: Event = decode(&value.expect("a resolved event has a value")).expect("Avro event");
        out.entry(e.event_id)
            .or_default()
            .push((p, key, e.person_id.unwrap_or_default()));
    }
    out
}

/// Differences from the oracle: `first` (the events of the crashed batch) keyed by their
/// device's person, the others by their user's, every copy alike.
fn check(
    got: &BTreeMap<String, Vec<(i32, String, String)>>,
    first: &BTreeSet<String>,
) -> Vec<String> {
    let mut diffs = Vec::new();
    for i in 0..DEVICES {
        let id = format!("view-{i}");
        let want = if first.contains(&id) {
            pid("anonymous_id", &format!("dev-{i}"))
        } else {
            pid("user_id", &format!("u-{i}"))
        };
        let Some(cs) = got.get(&id) else {
            diffs.push(format!("{id} missing"));
            continue;
        };
        for (p, key, person) in cs {
            if *key != want || *person != want || *p != cs[0].0 {
                diffs.push(format!(
                    "{id}: copy on partition {p} keyed {key} (person {person}), expected every copy keyed {want} on partition {}",
                    cs[0].0
                ));
            }
        }
    }
    diffs
}

/// Crash after the first batch is sent, merge every device into a user in the graph's log,
/// restart (with `envs`): the events' copies and the crashed batch.
async fn crash_merge_replay(
    test: &str,
    envs: &[(&str, &str)],
) -> (
    Env,
    BTreeMap<String, Vec<(i32, String, String)>>,
    BTreeSet<String>,
) {
    let env = setup(test, 2, 10).await;
    let producer = producer();
    env.produce(&producer, &device_events()).await;
    let mut crashed = env.spawn(
        "identity",
        0,
        &[(zt_process::identity::FAILPOINT_ENV, "after_send:1")],
    );
    let status = wait_exit(&mut crashed, Duration::from_secs(90));
    assert!(
        status.is_some_and(|s| !s.success())
            && env.log("identity", 0).contains("aborting at after_send:1"),
        "identity did not crash at its failpoint ({status:?}):\n{}",
        env.logs()
    );
    let first: BTreeSet<String> = copies(&env).into_keys().collect();
    assert!(
        !first.is_empty() && first.len() < DEVICES,
        "the crashed batch holds some of the events: {first:?}"
    );
    // What another resolver appends for a login on each device: the device's person is
    // merged into the user's (a user id ranks above a device id).
    for i in 0..DEVICES {
        let src = format!("zt-it-replay-login/0/{i}");
        let edge = serde_json::json!({
            "src": src,
            "ids": [
                {"kind": "user_id", "value": format!("u-{i}")},
                {"kind": "anonymous_id", "value": format!("dev-{i}")},
            ],
            "at": T0 + 1_000,
        });
        let value = serde_json::to_vec(&edge).expect("edge JSON");
        producer
            .send(
                FutureRecord::to(&env.topics.identity_edges())
                    .key(&src)
                    .payload(&value),
                Duration::from_secs(60),
            )
            .await
            .map_err(|(e, _)| e)
            .expect("edge appended");
    }
    // Restart after the dead member's session expired (as a pod restart would).
    tokio::time::sleep(Duration::from_millis(6_500)).await;
    let mut identity = env.spawn("identity", 1, envs);
    let inputs: Vec<String> = Source::ALL
        .into_iter()
        .map(|s| env.topics.events(s))
        .collect();
    let drained = wait_group(&env.identity_group, &inputs, Duration::from_secs(120));
    signal(&identity, "TERM");
    let _ = wait_exit(&mut identity, Duration::from_secs(20));
    assert!(
        drained,
        "identity did not commit every input:\n{}",
        env.logs()
    );
    let got = copies(&env);
    // The replay happened: the crashed batch was sent twice.
    for id in &first {
        assert!(
            got[id].len() >= 2,
            "{id} was not sent again: {:?}\n{}",
            got[id],
            env.logs()
        );
    }
    (env, got, first)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replay_after_a_merge_keeps_each_event_on_its_first_person() {
    let _heavy = HEAVY.lock().await;
    let (env, got, first) = crash_merge_replay("replay", &[]).await;
    let diffs = check(&got, &first);
    env.assert_no_differences(&diffs);
}

#[tokio::test(flavor = "multi_thread")]
async fn negative_control_a_replay_with_todays_graph_moves_events() {
    let _heavy = HEAVY.lock().await;
    let (_env, got, first) = crash_merge_replay(
        "replay-ctl",
        &[(zt_process::identity::DISABLE_AS_OF_ENV, "1")],
    )
    .await;
    let diffs = check(&got, &first);
    assert!(
        diffs.len() >= first.len(),
        "each replayed event of the crashed batch ({}) must be caught under another person, found {diffs:#?}",
        first.len()
    );
}
