//! Funnel and experiment state of one person, and the rows computed from it.
//!
//! **Funnel level** follows ClickHouse's `windowFunnel(window)(timestamp, cond1, ...)`
//! exactly (the algorithm of its aggregate function): the step events of the person, sorted
//! by (time, step), are scanned once; a step-1 event (re)starts a chain at its time, an
//! event of step *k* > 1 continues the chain that reached step *k − 1* if it is within
//! `window_ms` of that chain's start; the level is the deepest step any chain reached. An
//! event matching several steps counts for each. The person's breakdown (entry day,
//! channel, campaign, device) is the one of the event that started the deepest chain.
//!
//! **Experiments**: the first exposure by event time wins (an `Experiment Viewed` track call
//! or an assignment in the event's context); the person converted when a conversion event
//! (`order.paid` by default) happened at or after that exposure.
//!
//! The state is a set of step events keyed by event id plus first-exposure registers, so
//! applying an event twice or in any order gives the same state, and two persons' states
//! join by union: the same effectively-once argument as the profiles
//! ([`crate::profile`]). Rows are published per person (one per funnel, one per experiment)
//! with a version that grows with every write ([`crate::runtime::VersionClock`]), so late
//! and out-of-order events replace a person's row and ClickHouse (ReplacingMergeTree,
//! FINAL) converges to the exact batch answer.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use zt_model::{Event, Payload};

/// Version of the row of a person merged into another: above any live version, so the
/// deletion always wins.
pub const DELETED_VERSION: u64 = 1 << 63;

/// One step of a funnel: the event type, and for track calls optionally the event name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepDef {
    /// Step name, for reports.
    pub name: String,
    /// Canonical event type (`track`, `order.paid`, `shipment.delivered`, ...).
    pub event_type: String,
    /// For `track`, `page` and `screen`: the event name (`Product Viewed`). Empty = any.
    #[serde(default)]
    pub track_name: String,
    /// Property filters: each key must be a top-level property of the tracking call (or a
    /// context field: `channel`, `campaign`, `device_type`, `source`) equal to the value
    /// (numbers and booleans compared as written in JSON). Empty = no filter.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub properties: BTreeMap<String, String>,
}

impl StepDef {
    /// True when `e` is this step.
    pub fn matches(&self, e: &Event) -> bool {
        if e.event_type != self.event_type {
            return false;
        }
        if !self.track_name.is_empty()
            && !matches!(&e.payload, Payload::Tracking(t) if t.name.as_deref() == Some(self.track_name.as_str()))
        {
            return false;
        }
        if self.properties.is_empty() {
            return true;
        }
        let props: Option<serde_json::Map<String, serde_json::Value>> = match &e.payload {
            Payload::Tracking(t) => serde_json::from_str(&t.properties_json).ok(),
            _ => None,
        };
        self.properties.iter().all(|(k, want)| {
            let c = &e.context;
            let context = match k.as_str() {
                "channel" => Some(c.channel.clone().unwrap_or_default()),
                "campaign" => Some(c.campaign.clone().unwrap_or_default()),
                "device_type" => Some(c.device_type.clone().unwrap_or_default()),
                "source" => Some(e.source.as_str().to_owned()),
                _ => None,
            };
            if let Some(v) = context {
                return v == *want;
            }
            match props.as_ref().and_then(|p| p.get(k)) {
                Some(serde_json::Value::String(v)) => v == want,
                Some(serde_json::Value::Number(n)) => n.to_string().as_str() == want.as_str(),
                Some(serde_json::Value::Bool(b)) => {
                    want.as_str() == if *b { "true" } else { "false" }
                }
                _ => false,
            }
        })
    }
}

/// A funnel: ordered steps within a conversion window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FunnelDef {
    /// Funnel id (letters, digits, `_`, `-`).
    pub id: String,
    /// Conversion window from the first step, in milliseconds.
    pub window_ms: i64,
    /// Steps in order (1 to 32).
    pub steps: Vec<StepDef>,
}

/// The default e-commerce funnel: Product Viewed → Product Added → Checkout Started →
/// order paid → shipment delivered, within 7 days.
pub fn default_funnel() -> FunnelDef {
    let track = |name: &str| StepDef {
        name: name.to_lowercase().replace(' ', "_"),
        event_type: "track".into(),
        track_name: name.into(),
        properties: BTreeMap::new(),
    };
    FunnelDef {
        id: "ecommerce".into(),
        window_ms: 7 * 86_400_000,
        steps: vec![
            track("Product Viewed"),
            track("Product Added"),
            track("Checkout Started"),
            StepDef {
                name: "order_paid".into(),
                event_type: "order.paid".into(),
                track_name: String::new(),
                properties: BTreeMap::new(),
            },
            StepDef {
                name: "shipment_delivered".into(),
                event_type: "shipment.delivered".into(),
                track_name: String::new(),
                properties: BTreeMap::new(),
            },
        ],
    }
}

/// A step event as kept in the state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepEvent {
    /// Event time (UTC ms).
    pub t: i64,
    /// Bit *i* set: matches step *i* of the funnel.
    pub mask: u32,
    /// Breakdown attributes of the event.
    pub channel: String,
    /// Campaign (or UTM campaign).
    pub campaign: String,
    /// Device type.
    pub device: String,
}

/// A stamped value: (event time, event id) orders writers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct First {
    /// Event time.
    pub at: i64,
    /// Event id.
    pub id: String,
    /// Value.
    pub v: String,
}

/// The funnel and experiment state of one person.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunnelState {
    /// The person.
    pub person_id: String,
    /// Set once merged into another person.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merged_into: Option<String>,
    /// Step events per funnel id, by event id.
    #[serde(default)]
    pub steps: BTreeMap<String, BTreeMap<String, StepEvent>>,
    /// First exposure per experiment: variant.
    #[serde(default)]
    pub exposures: BTreeMap<String, First>,
    /// Conversion events, by event id: time.
    #[serde(default)]
    pub conversions: BTreeMap<String, i64>,
    /// Persons merged into this one.
    #[serde(default)]
    pub absorbed: BTreeSet<String>,
    /// Version of the last write ([`crate::runtime::VersionClock`]); readers keep the
    /// highest. Not part of the facts.
    #[serde(default)]
    pub version: u64,
}

/// A person's progress in one funnel, as published on `zt.funnels`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunnelRow {
    /// Always `funnel`.
    pub kind: String,
    /// Funnel id.
    pub funnel_id: String,
    /// Person.
    pub person_id: String,
    /// Deepest step reached (0 to the number of steps).
    pub level: u8,
    /// Time of the event that started the deepest chain (UTC ms), 0 at level 0.
    pub entry_at_ms: i64,
    /// Channel, campaign and device of that event.
    pub channel: String,
    /// Campaign.
    pub campaign: String,
    /// Device type.
    pub device: String,
    /// The person's first experiment exposure (id and variant), empty when none.
    pub experiment_id: String,
    /// Variant.
    pub variant: String,
    /// Grows with the facts behind the row; [`DELETED_VERSION`] for a merged person.
    pub version: u64,
    /// 1 when the person was merged into another (the row no longer counts).
    pub deleted: u8,
}

/// A person's exposure to one experiment, as published on `zt.funnels`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExperimentRow {
    /// Always `experiment`.
    pub kind: String,
    /// Experiment id.
    pub experiment_id: String,
    /// Person.
    pub person_id: String,
    /// Variant of the first exposure.
    pub variant: String,
    /// Time of the first exposure (UTC ms).
    pub exposed_at_ms: i64,
    /// 1 when a conversion event happened at or after the exposure.
    pub converted: u8,
    /// Time of the first such conversion, 0 when none.
    pub converted_at_ms: i64,
    /// Grows with the facts behind the row; [`DELETED_VERSION`] for a merged person.
    pub version: u64,
    /// 1 when the person was merged into another.
    pub deleted: u8,
}

/// Exposures an event carries: `Experiment Viewed` track calls and context assignments.
fn exposures_of(e: &Event) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = e
        .context
        .experiments
        .iter()
        .map(|a| (a.experiment_id.clone(), a.variant.clone()))
        .collect();
    if let Payload::Tracking(t) = &e.payload
        && let (Some(x), Some(v)) = (&t.experiment_id, &t.variant)
    {
        out.push((x.clone(), v.clone()));
    }
    out
}

impl FunnelState {
    /// An empty state.
    pub fn new(person_id: &str) -> Self {
        FunnelState {
            person_id: person_id.to_owned(),
            ..Default::default()
        }
    }

    /// Applies one event. Returns true when the state changed.
    pub fn apply(&mut self, e: &Event, funnels: &[FunnelDef], conversion_type: &str) -> bool {
        let mut changed = false;
        for f in funnels {
            let mut mask = 0u32;
            for (i, s) in f.steps.iter().enumerate() {
                if s.matches(e) {
                    mask |= 1 << i;
                }
            }
            if mask != 0 {
                let c = &e.context;
                let ev = StepEvent {
                    t: e.event_time,
                    mask,
                    channel: c
                        .channel
                        .clone()
                        .or_else(|| c.utm_source.clone())
                        .unwrap_or_default(),
                    campaign: c
                        .campaign
                        .clone()
                        .or_else(|| c.utm_campaign.clone())
                        .unwrap_or_default(),
                    device: c.device_type.clone().unwrap_or_default(),
                };
                let m = self.steps.entry(f.id.clone()).or_default();
                if m.get(&e.event_id) != Some(&ev) {
                    m.insert(e.event_id.clone(), ev);
                    changed = true;
                }
            }
        }
        for (x, v) in exposures_of(e) {
            let new = First {
                at: e.event_time,
                id: e.event_id.clone(),
                v,
            };
            let better = self
                .exposures
                .get(&x)
                .is_none_or(|old| (new.at, &new.id) < (old.at, &old.id));
            if better {
                self.exposures.insert(x, new);
                changed = true;
            }
        }
        if e.event_type == conversion_type
            && self
                .conversions
                .insert(e.event_id.clone(), e.event_time)
                .is_none()
        {
            changed = true;
        }
        changed
    }

    /// Joins another person's state into this one.
    pub fn absorb(&mut self, other: &FunnelState) {
        if other.person_id != self.person_id {
            self.absorbed.insert(other.person_id.clone());
        }
        self.absorbed.extend(other.absorbed.iter().cloned());
        self.absorbed.remove(&self.person_id);
        for (f, evs) in &other.steps {
            let m = self.steps.entry(f.clone()).or_default();
            for (id, ev) in evs {
                m.insert(id.clone(), ev.clone());
            }
        }
        for (x, new) in &other.exposures {
            let better = self
                .exposures
                .get(x)
                .is_none_or(|old| (new.at, &new.id) < (old.at, &old.id));
            if better {
                self.exposures.insert(x.clone(), new.clone());
            }
        }
        for (id, t) in &other.conversions {
            self.conversions.insert(id.clone(), *t);
        }
    }

    fn row_version(&self) -> u64 {
        if self.merged_into.is_some() {
            DELETED_VERSION
        } else {
            self.version
        }
    }

    /// The person's first exposure over all experiments.
    fn first_exposure(&self) -> Option<(&String, &First)> {
        self.exposures
            .iter()
            .min_by_key(|(x, f)| (f.at, f.id.clone(), (*x).clone()))
    }

    /// The rows of this person: one per funnel and one per experiment exposed to.
    pub fn rows(&self, funnels: &[FunnelDef]) -> (Vec<FunnelRow>, Vec<ExperimentRow>) {
        let version = self.row_version();
        let deleted = u8::from(self.merged_into.is_some());
        let (xid, variant) = self
            .first_exposure()
            .map(|(x, f)| (x.clone(), f.v.clone()))
            .unwrap_or_default();
        let mut frows = Vec::new();
        for f in funnels {
            let (level, entry) = match self.steps.get(&f.id) {
                Some(evs) if deleted == 0 => level_of(f, evs),
                _ => (0, None),
            };
            frows.push(FunnelRow {
                kind: "funnel".into(),
                funnel_id: f.id.clone(),
                person_id: self.person_id.clone(),
                level,
                entry_at_ms: entry.map(|e| e.t).unwrap_or_default(),
                channel: entry.map(|e| e.channel.clone()).unwrap_or_default(),
                campaign: entry.map(|e| e.campaign.clone()).unwrap_or_default(),
                device: entry.map(|e| e.device.clone()).unwrap_or_default(),
                experiment_id: xid.clone(),
                variant: variant.clone(),
                version,
                deleted,
            });
        }
        let xrows = self
            .exposures
            .iter()
            .map(|(x, first)| {
                let conv = self
                    .conversions
                    .values()
                    .filter(|t| **t >= first.at)
                    .min()
                    .copied();
                ExperimentRow {
                    kind: "experiment".into(),
                    experiment_id: x.clone(),
                    person_id: self.person_id.clone(),
                    variant: first.v.clone(),
                    exposed_at_ms: first.at,
                    converted: u8::from(conv.is_some() && deleted == 0),
                    converted_at_ms: conv.unwrap_or_default(),
                    version,
                    deleted,
                }
            })
            .collect();
        (frows, xrows)
    }
}

/// `windowFunnel` over the step events: the level and the event that started the deepest
/// chain.
pub fn level_of<'a>(
    f: &FunnelDef,
    evs: &'a BTreeMap<String, StepEvent>,
) -> (u8, Option<&'a StepEvent>) {
    let n = f.steps.len();
    // (time, step, event id): ClickHouse sorts its (timestamp, step) list; the event id
    // only makes the order of equal pairs deterministic (it does not change the level).
    let mut list: Vec<(i64, usize, &String, &StepEvent)> = Vec::new();
    for (id, e) in evs {
        for step in 0..n {
            if e.mask & (1 << step) != 0 {
                list.push((e.t, step, id, e));
            }
        }
    }
    list.sort_by(|a, b| (a.0, a.1, a.2).cmp(&(b.0, b.1, b.2)));
    // chain[k]: start of the chain that reached step k (time, starting event).
    let mut chain: Vec<Option<(i64, &StepEvent)>> = vec![None; n];
    for (t, step, _, e) in list {
        if step == 0 {
            chain[0] = Some((t, e));
        } else if let Some((start, first)) = chain[step - 1]
            && t <= start + f.window_ms
        {
            chain[step] = Some((start, first));
            if step + 1 == n {
                return (n as u8, Some(first));
            }
        }
    }
    for k in (0..n).rev() {
        if let Some((_, first)) = chain[k] {
            return ((k + 1) as u8, Some(first));
        }
    }
    (0, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f() -> FunnelDef {
        FunnelDef {
            id: "f".into(),
            window_ms: 100,
            steps: ["a", "b", "c"]
                .iter()
                .map(|s| StepDef {
                    name: (*s).into(),
                    event_type: (*s).into(),
                    track_name: String::new(),
                    properties: BTreeMap::new(),
                })
                .collect(),
        }
    }

    fn evs(list: &[(&str, i64, u32, &str)]) -> BTreeMap<String, StepEvent> {
        list.iter()
            .map(|(id, t, mask, ch)| {
                (
                    (*id).to_owned(),
                    StepEvent {
                        t: *t,
                        mask: *mask,
                        channel: (*ch).into(),
                        campaign: String::new(),
                        device: String::new(),
                    },
                )
            })
            .collect()
    }

    #[test]
    fn property_filters() {
        use zt_model::{Context, Identities, Source, TrackingPayload};
        let step = StepDef {
            name: "big_add".into(),
            event_type: "track".into(),
            track_name: "Product Added".into(),
            properties: BTreeMap::from([
                ("category".into(), "shoes".into()),
                ("quantity".into(), "2".into()),
                ("channel".into(), "douyin".into()),
            ]),
        };
        let mk = |props: &str, channel: &str| Event {
            event_id: "e".into(),
            event_type: "track".into(),
            source: Source::Tracking,
            source_event_id: None,
            occurred_at: 0,
            sent_at: None,
            received_at: 0,
            event_time: 0,
            identities: Identities::default(),
            context: Context {
                channel: Some(channel.into()),
                ..Default::default()
            },
            payload: Payload::Tracking(TrackingPayload {
                name: Some("Product Added".into()),
                properties_json: props.into(),
                ..Default::default()
            }),
            person_id: None,
        };
        assert!(step.matches(&mk(r#"{"category":"shoes","quantity":2}"#, "douyin")));
        assert!(!step.matches(&mk(r#"{"category":"shoes","quantity":1}"#, "douyin")));
        assert!(!step.matches(&mk(r#"{"category":"shoes","quantity":2}"#, "baidu")));
        assert!(!step.matches(&mk(r#"{"quantity":2}"#, "douyin")));
        assert!(!step.matches(&mk("not json", "douyin")));
    }

    #[test]
    fn window_funnel_by_hand() {
        // a@0, b@50, c@150: c is outside the window of the chain started at 0 -> level 2.
        let e = evs(&[("1", 0, 1, "x"), ("2", 50, 2, "x"), ("3", 150, 4, "x")]);
        assert_eq!(level_of(&f(), &e).0, 2);
        // A later a@60 restarts the chain: b must come after it; here none -> still 2.
        let e = evs(&[
            ("1", 0, 1, "x"),
            ("2", 50, 2, "x"),
            ("4", 60, 1, "y"),
            ("3", 150, 4, "x"),
        ]);
        assert_eq!(level_of(&f(), &e).0, 2);
        // a@60, b@70, c@150 -> level 3, entry is the a@60 event (channel y).
        let e = evs(&[
            ("1", 0, 1, "x"),
            ("4", 60, 1, "y"),
            ("5", 70, 2, "y"),
            ("3", 150, 4, "x"),
        ]);
        let (level, entry) = level_of(&f(), &e);
        assert_eq!((level, entry.map(|e| e.channel.as_str())), (3, Some("y")));
        // b before a does not count.
        let e = evs(&[("2", 0, 2, "x"), ("1", 10, 1, "x")]);
        assert_eq!(level_of(&f(), &e).0, 1);
        // Nothing matching step 1 -> 0.
        let e = evs(&[("2", 0, 2, "x")]);
        assert_eq!(level_of(&f(), &e).0, 0);
        // Equal timestamps: a and b at the same ms count in step order.
        let e = evs(&[("1", 5, 1, "x"), ("2", 5, 2, "x")]);
        assert_eq!(level_of(&f(), &e).0, 2);
    }
}
