//! Without guards, the graph's persons are exactly the connected components of "appear in
//! the same event", computed here by an independent breadth-first search, for any event
//! order. A negative control shows the comparison catches a wrong partition.

use std::collections::{BTreeSet, HashMap, VecDeque};

use proptest::prelude::*;
use zt_identity::{GraphConfig, IdKind, Identifier, IdentityGraph};

fn kind(i: u8) -> IdKind {
    IdKind::ALL[(i % 8) as usize]
}

fn events() -> impl Strategy<Value = Vec<Vec<Identifier>>> {
    prop::collection::vec(
        prop::collection::vec(
            (0u8..8, 0u8..12).prop_map(|(k, v)| Identifier {
                kind: kind(k),
                value: format!("v{v}"),
            }),
            1..4,
        ),
        0..40,
    )
}

/// Connected components by BFS: the oracle.
fn components(events: &[Vec<Identifier>]) -> BTreeSet<BTreeSet<Identifier>> {
    let mut adj: HashMap<Identifier, Vec<Identifier>> = HashMap::new();
    for e in events {
        for a in e {
            adj.entry(a.clone()).or_default();
            for b in e {
                if a != b {
                    adj.get_mut(a).unwrap().push(b.clone());
                }
            }
        }
    }
    let mut seen = BTreeSet::new();
    let mut out = BTreeSet::new();
    for start in adj.keys() {
        if seen.contains(start) {
            continue;
        }
        let mut comp = BTreeSet::new();
        let mut q = VecDeque::from([start.clone()]);
        while let Some(n) = q.pop_front() {
            if !seen.insert(n.clone()) {
                continue;
            }
            comp.insert(n.clone());
            q.extend(adj[&n].iter().cloned());
        }
        out.insert(comp);
    }
    out
}

fn partition(events: &[Vec<Identifier>]) -> BTreeSet<BTreeSet<Identifier>> {
    let cfg = GraphConfig {
        exclusive: vec![],
        max_per_person: Default::default(),
        ..GraphConfig::default()
    };
    let mut g = IdentityGraph::new(cfg);
    for e in events {
        g.resolve(e);
    }
    let all: BTreeSet<Identifier> = events.iter().flatten().cloned().collect();
    let mut by_person: HashMap<String, BTreeSet<Identifier>> = HashMap::new();
    for id in all {
        let p = g.person_of(&id).expect("every identifier has a person");
        by_person.entry(p).or_default().insert(id);
    }
    by_person.into_values().collect()
}

proptest! {
    /// The links emitted, applied in order with last-write-wins (what the compacted links
    /// topic keeps), name every identifier's final person, with the default guards on.
    #[test]
    fn emitted_links_converge_to_the_graph(evs in events()) {
        let mut g = IdentityGraph::new(GraphConfig::default());
        let mut table: HashMap<Identifier, String> = HashMap::new();
        for e in &evs {
            for (id, p) in g.resolve(e).links {
                table.insert(id, p);
            }
        }
        for id in evs.iter().flatten() {
            prop_assert_eq!(table.get(id).cloned(), g.person_of(id), "{}", id);
        }
    }

    #[test]
    fn persons_are_connected_components(evs in events()) {
        prop_assert_eq!(partition(&evs), components(&evs));
        let mut reversed = evs.clone();
        reversed.reverse();
        prop_assert_eq!(partition(&reversed), components(&evs), "order does not matter");
    }
}

#[test]
fn negative_control_a_dropped_link_is_caught() {
    let id = |k: IdKind, v: &str| Identifier {
        kind: k,
        value: v.into(),
    };
    let evs = vec![
        vec![id(IdKind::UserId, "u"), id(IdKind::AnonymousId, "a")],
        vec![id(IdKind::AnonymousId, "a"), id(IdKind::OrderId, "o")],
    ];
    let mut missing_link = evs.clone();
    missing_link[1].truncate(1);
    assert_ne!(partition(&missing_link), components(&evs));
}
