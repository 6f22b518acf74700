//! The identity graph: a union-find over identifiers with guards.
//!
//! - **Links**: every event links all identifiers it carries. Linked identifiers are one
//!   person, also transitively and in any arrival order (a shipment that names an order
//!   and a phone before the order itself arrives ends in the same person once it does).
//! - **Guards**: two clusters that each hold a different value of an *exclusive* type
//!   (by default the CRM customer id and the user id) are never merged automatically; a
//!   merge that would put more than the configured number of identifiers of one type into
//!   a person (a phone shared by hundreds of devices) is refused, and the identifier that
//!   would have bridged them is marked shared and links nothing any more. Every refusal is
//!   reported.
//! - **Person ids**: a person's id is derived from its *anchor*, the identifier of the
//!   highest configured priority, earliest seen on ties: `p_` and the first 16 bytes of
//!   SHA-256 over `kind:value`, in hex. The same input in the same order gives the same
//!   ids. When a merge or a better identifier changes a person's anchor, the old id is
//!   reported as merged into the new one.
//! - **History**: every resolve is stamped with a version (the identity processor uses the
//!   edge's offset in the graph's log); the graph keeps when each identifier arrived and
//!   when each person id was replaced, so [`IdentityGraph::person_at`] answers as the
//!   graph did at any earlier version (a replay resolves as the first run did).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zt_model::Identities;

/// The kinds of identifier, in their default priority order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdKind {
    /// CRM customer id.
    CrmCustomerId,
    /// Logged-in user id.
    UserId,
    /// Salted phone hash.
    PhoneHash,
    /// Salted e-mail hash.
    EmailHash,
    /// Device or cookie id.
    AnonymousId,
    /// Order id (an order belongs to one customer).
    OrderId,
    /// Waybill number (a shipment belongs to one order).
    WaybillNo,
    /// Service ticket id.
    TicketId,
}

impl IdKind {
    /// Every kind, in default priority order.
    pub const ALL: [IdKind; 8] = [
        IdKind::CrmCustomerId,
        IdKind::UserId,
        IdKind::PhoneHash,
        IdKind::EmailHash,
        IdKind::AnonymousId,
        IdKind::OrderId,
        IdKind::WaybillNo,
        IdKind::TicketId,
    ];

    /// The wire name, as in the canonical `Identities` record.
    pub fn as_str(self) -> &'static str {
        match self {
            IdKind::CrmCustomerId => "crm_customer_id",
            IdKind::UserId => "user_id",
            IdKind::PhoneHash => "phone_hash",
            IdKind::EmailHash => "email_hash",
            IdKind::AnonymousId => "anonymous_id",
            IdKind::OrderId => "order_id",
            IdKind::WaybillNo => "waybill_no",
            IdKind::TicketId => "ticket_id",
        }
    }
}

/// One identifier.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Identifier {
    /// Its kind.
    pub kind: IdKind,
    /// Its value.
    pub value: String,
}

impl fmt::Display for Identifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind.as_str(), self.value)
    }
}

impl Identifier {
    /// The identifiers an event carries, in kind order.
    pub fn from_identities(ids: &Identities) -> Vec<Identifier> {
        let pairs = [
            (IdKind::CrmCustomerId, &ids.crm_customer_id),
            (IdKind::UserId, &ids.user_id),
            (IdKind::PhoneHash, &ids.phone_hash),
            (IdKind::EmailHash, &ids.email_hash),
            (IdKind::AnonymousId, &ids.anonymous_id),
            (IdKind::OrderId, &ids.order_id),
            (IdKind::WaybillNo, &ids.waybill_no),
            (IdKind::TicketId, &ids.ticket_id),
        ];
        pairs
            .into_iter()
            .filter_map(|(kind, v)| {
                v.as_ref()
                    .filter(|s| !s.is_empty())
                    .map(|value| Identifier {
                        kind,
                        value: value.clone(),
                    })
            })
            .collect()
    }
}

/// How the graph links and guards.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GraphConfig {
    /// Kinds of which a person holds at most one value: clusters with different values are
    /// never merged automatically. Default CRM customer id and user id.
    pub exclusive: Vec<IdKind>,
    /// Priority of kinds for a person's anchor, highest first. Kinds not listed rank last.
    pub priority: Vec<IdKind>,
    /// Most identifiers of a kind in one person, e.g. 50 devices; a merge beyond it is
    /// refused. Kinds not listed are unlimited.
    pub max_per_person: BTreeMap<IdKind, usize>,
}

impl Default for GraphConfig {
    fn default() -> Self {
        GraphConfig {
            exclusive: vec![IdKind::CrmCustomerId, IdKind::UserId],
            priority: IdKind::ALL.to_vec(),
            max_per_person: BTreeMap::from([
                (IdKind::AnonymousId, 50),
                (IdKind::PhoneHash, 5),
                (IdKind::EmailHash, 5),
            ]),
        }
    }
}

/// A person id replaced by another (two persons merged, or a better anchor arrived).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Merge {
    /// The id that no longer names a person.
    pub from: String,
    /// The id that now names it.
    pub into: String,
}

/// A link the guards refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    /// The identifier whose link was refused.
    pub identifier: Identifier,
    /// Why: `exclusive_conflict` or `limit:<kind>`.
    pub reason: String,
}

/// What one event did to the graph.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resolution {
    /// The version the resolve was stamped with.
    pub version: u64,
    /// The person the event belongs to (`None` for an event without identifiers).
    pub person_id: Option<String>,
    /// Identifiers whose person changed or that are new, with their person now: the
    /// records for the compacted links topic.
    pub links: Vec<(Identifier, String)>,
    /// Person ids replaced by this event.
    pub merges: Vec<Merge>,
    /// Links refused by the guards.
    pub refusals: Vec<Refusal>,
}

#[derive(Debug, Clone)]
struct Cluster {
    members: Vec<u32>,
    anchor: u32,
    person_id: String,
    exclusive: BTreeMap<IdKind, String>,
    counts: BTreeMap<IdKind, usize>,
}

/// The graph.
#[derive(Debug, Clone, Default)]
pub struct IdentityGraph {
    config: GraphConfig,
    index: HashMap<Identifier, u32>,
    nodes: Vec<Identifier>,
    parent: Vec<u32>,
    shared: BTreeSet<u32>,
    clusters: HashMap<u32, Cluster>,
    /// The version of the resolve that added each node (by node index).
    born: Vec<u64>,
    /// Every person id replaced so far: the old id, the id that replaced it and the
    /// version of the resolve that did. A person id is replaced at most once (its anchor
    /// is in a better-anchored person from then on), so each id has one entry.
    renamed: HashMap<String, (String, u64)>,
    /// The version [`IdentityGraph::resolve`] stamps next.
    next_version: u64,
}

/// The person id of an anchor identifier.
pub fn person_id_of(anchor: &Identifier) -> String {
    let d = Sha256::digest(anchor.to_string().as_bytes());
    format!("p_{}", hex::encode(&d[..16]))
}

impl IdentityGraph {
    /// An empty graph.
    pub fn new(config: GraphConfig) -> Self {
        IdentityGraph {
            config,
            ..Default::default()
        }
    }

    /// Identifiers held.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Persons held.
    pub fn persons(&self) -> usize {
        self.clusters.len()
    }

    fn rank(&self, kind: IdKind) -> usize {
        self.config
            .priority
            .iter()
            .position(|k| *k == kind)
            .unwrap_or(self.config.priority.len())
    }

    /// Better anchor: higher priority, then earlier seen (smaller node index).
    fn better(&self, a: u32, b: u32) -> u32 {
        let ka = (self.rank(self.nodes[a as usize].kind), a);
        let kb = (self.rank(self.nodes[b as usize].kind), b);
        if ka <= kb { a } else { b }
    }

    fn find(&mut self, mut n: u32) -> u32 {
        let mut root = n;
        while self.parent[root as usize] != root {
            root = self.parent[root as usize];
        }
        while self.parent[n as usize] != root {
            let next = self.parent[n as usize];
            self.parent[n as usize] = root;
            n = next;
        }
        root
    }

    /// The person an identifier belongs to, if known.
    pub fn person_of(&mut self, id: &Identifier) -> Option<String> {
        let n = *self.index.get(id)?;
        let r = self.find(n);
        self.clusters.get(&r).map(|c| c.person_id.clone())
    }

    fn node(&mut self, id: &Identifier, res: &mut Resolution) -> u32 {
        if let Some(&n) = self.index.get(id) {
            return n;
        }
        let n = self.nodes.len() as u32;
        self.nodes.push(id.clone());
        self.born.push(res.version);
        self.parent.push(n);
        self.index.insert(id.clone(), n);
        let person_id = person_id_of(id);
        let mut exclusive = BTreeMap::new();
        if self.config.exclusive.contains(&id.kind) {
            exclusive.insert(id.kind, id.value.clone());
        }
        self.clusters.insert(
            n,
            Cluster {
                members: vec![n],
                anchor: n,
                person_id: person_id.clone(),
                exclusive,
                counts: BTreeMap::from([(id.kind, 1)]),
            },
        );
        res.links.push((id.clone(), person_id));
        n
    }

    /// Why `a` and `b` may not merge, if they may not.
    fn guard(&self, a: &Cluster, b: &Cluster) -> Option<String> {
        for (kind, v) in &a.exclusive {
            if b.exclusive.get(kind).is_some_and(|w| w != v) {
                return Some("exclusive_conflict".into());
            }
        }
        for (kind, max) in &self.config.max_per_person {
            let n = a.counts.get(kind).unwrap_or(&0) + b.counts.get(kind).unwrap_or(&0);
            if n > *max {
                return Some(format!("limit:{}", kind.as_str()));
            }
        }
        None
    }

    /// Merges the clusters of roots `ra` and `rb`, or refuses with the reason.
    fn union(&mut self, ra: u32, rb: u32, res: &mut Resolution) -> Result<u32, String> {
        if ra == rb {
            return Ok(ra);
        }
        if let Some(reason) = self.guard(&self.clusters[&ra], &self.clusters[&rb]) {
            return Err(reason);
        }
        // Smaller cluster into larger: its members are the ones relinked.
        let (big, small) = if self.clusters[&ra].members.len() >= self.clusters[&rb].members.len() {
            (ra, rb)
        } else {
            (rb, ra)
        };
        let s = self.clusters.remove(&small).expect("root has a cluster");
        let anchor = self.better(self.clusters[&big].anchor, s.anchor);
        let new_pid = person_id_of(&self.nodes[anchor as usize]);
        self.parent[small as usize] = big;
        let old_big_pid;
        let big_members: Vec<u32>;
        {
            let b = self.clusters.get_mut(&big).expect("root has a cluster");
            old_big_pid = b.person_id.clone();
            for (k, v) in s.exclusive {
                b.exclusive.entry(k).or_insert(v);
            }
            for (k, n) in s.counts {
                *b.counts.entry(k).or_insert(0) += n;
            }
            b.members.extend(&s.members);
            b.anchor = anchor;
            b.person_id = new_pid.clone();
            big_members = b.members.clone();
        }
        for old in [&s.person_id, &old_big_pid] {
            if *old != new_pid && !res.merges.iter().any(|m| &m.from == old) {
                res.merges.push(Merge {
                    from: old.clone(),
                    into: new_pid.clone(),
                });
            }
        }
        // Relink the members whose person changed.
        let changed: Vec<u32> = if old_big_pid == new_pid {
            s.members
        } else {
            big_members
        };
        for m in changed {
            let id = self.nodes[m as usize].clone();
            res.links.retain(|(i, _)| i != &id);
            res.links.push((id, new_pid.clone()));
        }
        Ok(big)
    }

    /// Orders identifiers as [`IdentityGraph::resolve`] does: by priority, then value.
    fn ordered<'a>(&self, ids: &'a [Identifier]) -> Vec<&'a Identifier> {
        let mut ids: Vec<&Identifier> = ids.iter().collect();
        ids.sort_by_key(|i| (self.rank(i.kind), (*i).clone()));
        ids.dedup();
        ids
    }

    /// True when [`IdentityGraph::resolve`] of `ids` could not change the graph: every
    /// identifier is known and each one not marked shared is already in the cluster of the
    /// best one. (A pair a guard refused is reported as unsettled; resolving it again is
    /// harmless and refused again.)
    pub fn is_settled(&mut self, ids: &[Identifier]) -> bool {
        let ordered: Vec<Identifier> = self.ordered(ids).into_iter().cloned().collect();
        let Some(first) = ordered.first() else {
            return true;
        };
        let Some(&primary) = self.index.get(first) else {
            return false;
        };
        let root = self.find(primary);
        for id in &ordered[1..] {
            let Some(&n) = self.index.get(id) else {
                return false;
            };
            if !self.shared.contains(&n) && self.find(n) != root {
                return false;
            }
        }
        true
    }

    /// The person an event carrying `ids` belongs to: the person of its best identifier
    /// (None when it carries none or they are unknown).
    pub fn person_for(&mut self, ids: &[Identifier]) -> Option<String> {
        let first = self.ordered(ids).first().map(|i| (*i).clone())?;
        self.person_of(&first)
    }

    /// Identifiers marked shared (refused by a per-kind limit).
    pub fn shared_count(&self) -> usize {
        self.shared.len()
    }

    /// Links the identifiers of one event and says which person it belongs to; stamped
    /// with the version after the last one (see [`IdentityGraph::resolve_at`]).
    pub fn resolve(&mut self, ids: &[Identifier]) -> Resolution {
        let v = self.next_version;
        self.resolve_at(ids, v)
    }

    /// [`IdentityGraph::resolve`] stamped with `version` (the identity processor uses the
    /// edge's offset in the graph's log): what it changed is remembered with the version,
    /// so that [`IdentityGraph::person_at`] can answer for any earlier version. Versions
    /// must not decrease; a smaller one is raised to the last one.
    pub fn resolve_at(&mut self, ids: &[Identifier], version: u64) -> Resolution {
        let version = version.max(self.next_version.saturating_sub(1));
        self.next_version = version.saturating_add(1);
        let mut res = Resolution {
            version,
            ..Resolution::default()
        };
        self.resolve_into(ids, &mut res);
        for m in &res.merges {
            self.renamed
                .entry(m.from.clone())
                .or_insert_with(|| (m.into.clone(), version));
        }
        res
    }

    /// The person `id` belonged to once every resolve stamped `version` or lower was done,
    /// and none after: what [`IdentityGraph::person_of`] answered then. `None` when the
    /// identifier is unknown or arrived later. A person's id changes only when it is
    /// replaced (a merge or a better anchor), so this is the identifier's first person id
    /// followed along the replacements made up to `version`.
    pub fn person_at(&self, id: &Identifier, version: u64) -> Option<String> {
        let n = *self.index.get(id)?;
        if self.born[n as usize] > version {
            return None;
        }
        let mut person = person_id_of(id);
        while let Some((into, v)) = self.renamed.get(&person) {
            if *v > version {
                break;
            }
            person = into.clone();
        }
        Some(person)
    }

    /// [`IdentityGraph::person_for`] as it answered at `version` (see
    /// [`IdentityGraph::person_at`]).
    pub fn person_for_at(&self, ids: &[Identifier], version: u64) -> Option<String> {
        let first = self.ordered(ids).first().map(|i| (*i).clone())?;
        self.person_at(&first, version)
    }

    fn resolve_into(&mut self, ids: &[Identifier], res: &mut Resolution) {
        let mut ids: Vec<&Identifier> = ids.iter().collect();
        ids.sort_by_key(|i| (self.rank(i.kind), (*i).clone()));
        ids.dedup();
        let Some(first) = ids.first() else {
            return;
        };
        let primary = self.node(first, res);
        let mut root = self.find(primary);
        for id in ids.iter().skip(1) {
            let n = self.node(id, res);
            if self.shared.contains(&n) {
                continue;
            }
            let rn = self.find(n);
            match self.union(root, rn, res) {
                Ok(r) => root = r,
                Err(reason) => {
                    // The identifier that would bridge two persons links nothing more.
                    if reason.starts_with("limit:") {
                        self.shared.insert(n);
                    }
                    res.refusals.push(Refusal {
                        identifier: (*id).clone(),
                        reason,
                    });
                }
            }
        }
        let root = self.find(primary);
        res.person_id = self.clusters.get(&root).map(|c| c.person_id.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(kind: IdKind, v: &str) -> Identifier {
        Identifier {
            kind,
            value: v.into(),
        }
    }

    #[test]
    fn a_journey_across_sources_is_one_person() {
        use IdKind::*;
        let mut g = IdentityGraph::new(GraphConfig::default());
        // Anonymous browsing, then login, then an order by phone, a shipment by waybill
        // (naming the order), then a ticket naming the customer.
        let r1 = g.resolve(&[id(AnonymousId, "dev-1")]);
        assert_eq!(r1.person_id, Some(person_id_of(&id(AnonymousId, "dev-1"))));
        let r2 = g.resolve(&[id(UserId, "u-1"), id(AnonymousId, "dev-1")]);
        let p_user = person_id_of(&id(UserId, "u-1"));
        assert_eq!(r2.person_id.as_deref(), Some(p_user.as_str()));
        assert_eq!(
            r2.merges,
            vec![Merge {
                from: r1.person_id.clone().unwrap(),
                into: p_user.clone()
            }]
        );
        g.resolve(&[
            id(CrmCustomerId, "C1"),
            id(PhoneHash, "ph1"),
            id(OrderId, "O1"),
        ]);
        let r4 = g.resolve(&[id(UserId, "u-1"), id(PhoneHash, "ph1")]);
        let p = person_id_of(&id(CrmCustomerId, "C1"));
        assert_eq!(
            r4.person_id.as_deref(),
            Some(p.as_str()),
            "the CRM id anchors the person"
        );
        let r5 = g.resolve(&[id(WaybillNo, "W1"), id(OrderId, "O1")]);
        assert_eq!(r5.person_id.as_deref(), Some(p.as_str()));
        let r6 = g.resolve(&[id(TicketId, "T1"), id(CrmCustomerId, "C1")]);
        assert_eq!(r6.person_id.as_deref(), Some(p.as_str()));
        assert_eq!(g.persons(), 1);
        assert_eq!(g.person_of(&id(AnonymousId, "dev-1")), Some(p.clone()));
    }

    #[test]
    fn out_of_order_shipment_before_order() {
        use IdKind::*;
        let mut g = IdentityGraph::new(GraphConfig::default());
        let early = g.resolve(&[id(WaybillNo, "W9"), id(OrderId, "O9"), id(PhoneHash, "ph9")]);
        let late = g.resolve(&[id(OrderId, "O9"), id(CrmCustomerId, "C9")]);
        let p = person_id_of(&id(CrmCustomerId, "C9"));
        assert_eq!(late.person_id.as_deref(), Some(p.as_str()));
        assert_eq!(late.merges.len(), 1);
        assert_eq!(late.merges[0].from, early.person_id.unwrap());
        assert_eq!(g.person_of(&id(WaybillNo, "W9")), Some(p));
    }

    #[test]
    fn two_customers_are_never_merged() {
        use IdKind::*;
        let mut g = IdentityGraph::new(GraphConfig::default());
        g.resolve(&[id(CrmCustomerId, "C1"), id(PhoneHash, "family")]);
        let r = g.resolve(&[id(CrmCustomerId, "C2"), id(PhoneHash, "family")]);
        assert_eq!(r.person_id, Some(person_id_of(&id(CrmCustomerId, "C2"))));
        assert_eq!(r.refusals[0].reason, "exclusive_conflict");
        assert_eq!(g.persons(), 2);
        assert_eq!(
            g.person_of(&id(PhoneHash, "family")),
            Some(person_id_of(&id(CrmCustomerId, "C1")))
        );
    }

    #[test]
    fn a_shared_phone_stops_linking_at_the_limit() {
        use IdKind::*;
        let mut cfg = GraphConfig::default();
        cfg.max_per_person.insert(AnonymousId, 3);
        let mut g = IdentityGraph::new(cfg);
        let mut refused = 0;
        for d in 0..10 {
            let r = g.resolve(&[
                id(PhoneHash, "store-phone"),
                id(AnonymousId, &format!("dev-{d}")),
            ]);
            refused += r.refusals.len();
        }
        assert_eq!(refused, 7, "devices beyond the third are refused");
        // The phone's person holds three devices; the others are persons of their own.
        assert_eq!(g.persons(), 1 + 7);
    }

    /// `person_at(id, v)` equals what `person_of(id)` answered right after the resolve
    /// stamped `v`, for every identifier and every earlier version, over random events
    /// that merge, re-anchor and hit both guards.
    #[test]
    fn person_at_answers_as_the_graph_did_then() {
        use IdKind::*;
        let mut cfg = GraphConfig::default();
        cfg.max_per_person.insert(AnonymousId, 4);
        let mut g = IdentityGraph::new(cfg);
        let kinds = [CrmCustomerId, UserId, PhoneHash, AnonymousId, OrderId];
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        // (version, every identifier's person right after it)
        type Snapshot = (u64, Vec<(Identifier, Option<String>)>);
        let mut snapshots: Vec<Snapshot> = Vec::new();
        let mut all: Vec<Identifier> = Vec::new();
        let mut merges = 0;
        for step in 0..400u64 {
            let ids: Vec<Identifier> = (0..1 + next(3))
                .map(|_| {
                    let k = kinds[next(kinds.len() as u64) as usize];
                    id(k, &format!("{}", next(40)))
                })
                .collect();
            // Versions with gaps, as log offsets have (other records in between).
            let v = step * 3 + next(3);
            merges += g.resolve_at(&ids, v).merges.len();
            for i in ids {
                if !all.contains(&i) {
                    all.push(i);
                }
            }
            let snap = all.iter().map(|i| (i.clone(), g.person_of(i))).collect();
            snapshots.push((v, snap));
        }
        assert!(merges > 50, "the sequence must merge persons: {merges}");
        let mut differs = 0;
        for (v, snap) in &snapshots {
            for (i, then) in snap {
                assert_eq!(&g.person_at(i, *v), then, "{i} at version {v}");
                differs += usize::from(g.person_at(i, *v) != g.person_of(i));
            }
            // Identifiers that arrived later were unknown then.
            for later in all.iter().filter(|i| !snap.iter().any(|(s, _)| s == *i)) {
                assert_eq!(g.person_at(later, *v), None);
            }
        }
        assert!(
            differs > 100,
            "past answers must differ from today's: {differs}"
        );
    }

    #[test]
    fn same_input_same_ids() {
        use IdKind::*;
        let events = [
            vec![id(AnonymousId, "a"), id(OrderId, "o")],
            vec![id(UserId, "u"), id(AnonymousId, "a")],
            vec![id(CrmCustomerId, "c"), id(OrderId, "o")],
            vec![id(AnonymousId, "b")],
        ];
        let run = || {
            let mut g = IdentityGraph::new(GraphConfig::default());
            events
                .iter()
                .map(|e| g.resolve(e))
                .map(|r| (r.person_id, r.merges))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(), run());
    }
}
