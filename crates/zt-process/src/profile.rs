//! A person's profile state and the snapshot computed from it.
//!
//! The state is a *join-semilattice*: every fact is stored under the business key that
//! makes it unique (an order under its order id, a refund under the refunding event's id,
//! a ticket under its ticket id, a rating under its ticket), and every single-valued field
//! is a register ordered by `(event time, event id)`. Applying an event is therefore
//! idempotent (applying it twice changes nothing), commutative (arrival order does not
//! matter) and two states join by union ([`ProfileState::absorb`]). That is what makes the
//! profiles processor effectively-once without broker transactions: a replay after a crash
//! re-applies events that may already be in the state and nothing is counted twice, and a
//! merge of two persons is a join, which may also be repeated safely.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use zt_model::{Event, Payload};

use crate::config::RfmConfig;
use crate::records::ProfileSnapshot;

const DAY_MS: i64 = 86_400_000;

/// A value with the `(event time, event id)` stamp that wrote it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamped<T> {
    /// Event time, UTC ms.
    pub at: i64,
    /// Event id (breaks ties between events of the same millisecond).
    pub id: String,
    /// The value.
    pub v: T,
}

fn st<T>(e: &Event, v: T) -> Stamped<T> {
    Stamped {
        at: e.event_time,
        id: e.event_id.clone(),
        v,
    }
}

/// Keeps the latest stamped value (last writer wins, by event time).
fn set_last<T: Clone>(slot: &mut Option<Stamped<T>>, new: &Stamped<T>) {
    if slot
        .as_ref()
        .is_none_or(|old| (new.at, &new.id) > (old.at, &old.id))
    {
        *slot = Some(new.clone());
    }
}

/// Keeps the earliest stamped value (first writer wins, by event time).
fn set_first<T: Clone>(slot: &mut Option<Stamped<T>>, new: &Stamped<T>) {
    if slot
        .as_ref()
        .is_none_or(|old| (new.at, &new.id) < (old.at, &old.id))
    {
        *slot = Some(new.clone());
    }
}

fn join_last<T: Clone>(slot: &mut Option<Stamped<T>>, other: &Option<Stamped<T>>) {
    if let Some(o) = other {
        set_last(slot, o);
    }
}

fn join_first<T: Clone>(slot: &mut Option<Stamped<T>>, other: &Option<Stamped<T>>) {
    if let Some(o) = other {
        set_first(slot, o);
    }
}

fn min_opt(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

fn max_opt(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.max(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

/// What is known of one order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderFacts {
    /// The `order.paid` event: total (minor units) and currency.
    pub paid: Option<Stamped<(i64, String)>>,
    /// Refunds by the id of the `order.refunded` event that reported them (minor units).
    pub refunds: BTreeMap<String, i64>,
    /// The latest status reported by any order event.
    pub status: Option<Stamped<String>>,
}

/// What is known of one service ticket.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TicketFacts {
    /// The latest satisfaction rating (1 to 5).
    pub csat: Option<Stamped<i32>>,
    /// A complaint was filed on this ticket.
    pub complaint: bool,
}

/// The state of one person (or a redirect left behind by a merge).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProfileState {
    /// The person.
    pub person_id: String,
    /// Set once the identity graph merged this person into another; the state then stays
    /// empty and anything arriving for this person is forwarded there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merged_into: Option<String>,
    /// Person ids merged into this one.
    #[serde(default)]
    pub absorbed: BTreeSet<String>,
    /// Identifiers seen, by kind (`crm_customer_id`, `user_id`, ...).
    #[serde(default)]
    pub ids: BTreeMap<String, BTreeSet<String>>,
    /// Earliest and latest event time.
    pub first_seen: Option<i64>,
    /// Latest event time.
    pub last_seen: Option<i64>,
    /// First touch: the earliest event that names a channel or campaign.
    pub first_touch: Option<Stamped<(Option<String>, Option<String>)>>,
    /// Orders by order id.
    #[serde(default)]
    pub orders: BTreeMap<String, OrderFacts>,
    /// The latest shipment status.
    pub last_shipment: Option<Stamped<String>>,
    /// Tickets by ticket id.
    #[serde(default)]
    pub tickets: BTreeMap<String, TicketFacts>,
    /// Complaints filed without a ticket id, by event id.
    #[serde(default)]
    pub loose_complaints: BTreeSet<String>,
    /// Membership tier.
    pub tier: Option<Stamped<String>>,
    /// Points balance.
    pub points: Option<Stamped<i64>>,
    /// Consent by purpose.
    #[serde(default)]
    pub consents: BTreeMap<String, Stamped<bool>>,
    /// Province and city.
    pub region: Option<Stamped<(Option<String>, Option<String>)>>,
    /// Seen on a private-domain channel at least once.
    #[serde(default)]
    pub private_domain: bool,
    /// Version of the last write of this state ([`crate::runtime::VersionClock`]); readers
    /// keep the highest. Not part of the facts: applying and joining leave it alone.
    #[serde(default)]
    pub version: u64,
}

impl ProfileState {
    /// An empty state for `person_id`.
    pub fn new(person_id: &str) -> Self {
        ProfileState {
            person_id: person_id.to_owned(),
            ..Default::default()
        }
    }

    /// True when nothing is known (a new or redirected person).
    pub fn is_empty(&self) -> bool {
        let mut blank = ProfileState::new(&self.person_id);
        blank.version = self.version;
        blank.merged_into.clone_from(&self.merged_into);
        blank.absorbed.clone_from(&self.absorbed);
        *self == blank
    }

    /// Applies one event. Idempotent and order-independent.
    pub fn apply(&mut self, e: &Event) {
        let at = e.event_time;
        self.first_seen = min_opt(self.first_seen, Some(at));
        self.last_seen = max_opt(self.last_seen, Some(at));
        let i = &e.identities;
        for (kind, v) in [
            ("crm_customer_id", &i.crm_customer_id),
            ("user_id", &i.user_id),
            ("anonymous_id", &i.anonymous_id),
            ("phone_hash", &i.phone_hash),
            ("email_hash", &i.email_hash),
        ] {
            if let Some(v) = v.as_ref().filter(|v| !v.is_empty()) {
                self.ids.entry(kind.into()).or_default().insert(v.clone());
            }
        }
        let c = &e.context;
        let campaign = c.campaign.clone().or_else(|| c.utm_campaign.clone());
        let channel = c.channel.clone().or_else(|| c.utm_source.clone());
        if channel.is_some() || campaign.is_some() {
            set_first(&mut self.first_touch, &st(e, (channel, campaign)));
        }
        self.private_domain |= c.private_domain;
        match &e.payload {
            Payload::Order(o) => {
                let f = self.orders.entry(o.order_id.clone()).or_default();
                set_last(&mut f.status, &st(e, o.status.clone()));
                match e.event_type.as_str() {
                    "order.paid" => {
                        set_last(&mut f.paid, &st(e, (o.total_minor, o.currency.clone())))
                    }
                    "order.refunded" => {
                        f.refunds.insert(e.event_id.clone(), o.refund_minor);
                    }
                    _ => {}
                }
            }
            Payload::Shipment(s) => set_last(&mut self.last_shipment, &st(e, s.status.clone())),
            Payload::Ticket(t) if t.ticket_id.is_empty() => {
                if t.is_complaint || e.event_type == "complaint.filed" {
                    self.loose_complaints.insert(e.event_id.clone());
                }
            }
            Payload::Ticket(t) => {
                let f = self.tickets.entry(t.ticket_id.clone()).or_default();
                if let Some(score) = t.csat_score.filter(|s| (1..=5).contains(s)) {
                    set_last(&mut f.csat, &st(e, score));
                }
                if t.is_complaint || e.event_type == "complaint.filed" {
                    f.complaint = true;
                }
            }
            Payload::Customer(cu) => {
                if let Some(tier) = &cu.tier {
                    set_last(&mut self.tier, &st(e, tier.clone()));
                }
                if let Some(p) = cu.points_balance {
                    set_last(&mut self.points, &st(e, p));
                }
                for consent in &cu.consents {
                    let entry = self.consents.get(&consent.purpose).cloned();
                    let mut slot = entry;
                    set_last(&mut slot, &st(e, consent.granted));
                    if let Some(s) = slot {
                        self.consents.insert(consent.purpose.clone(), s);
                    }
                }
                if cu.province.is_some() || cu.city.is_some() {
                    set_last(
                        &mut self.region,
                        &st(e, (cu.province.clone(), cu.city.clone())),
                    );
                }
            }
            Payload::Tracking(_) | Payload::AdSpend(_) => {}
        }
    }

    /// Joins `other` (a person merged into this one) into this state. Idempotent,
    /// commutative and associative.
    pub fn absorb(&mut self, other: &ProfileState) {
        if other.person_id != self.person_id {
            self.absorbed.insert(other.person_id.clone());
        }
        self.absorbed.extend(other.absorbed.iter().cloned());
        self.absorbed.remove(&self.person_id);
        for (k, vs) in &other.ids {
            self.ids
                .entry(k.clone())
                .or_default()
                .extend(vs.iter().cloned());
        }
        self.first_seen = min_opt(self.first_seen, other.first_seen);
        self.last_seen = max_opt(self.last_seen, other.last_seen);
        join_first(&mut self.first_touch, &other.first_touch);
        for (id, o) in &other.orders {
            let f = self.orders.entry(id.clone()).or_default();
            join_last(&mut f.paid, &o.paid);
            join_last(&mut f.status, &o.status);
            for (eid, amount) in &o.refunds {
                f.refunds.insert(eid.clone(), *amount);
            }
        }
        join_last(&mut self.last_shipment, &other.last_shipment);
        for (id, t) in &other.tickets {
            let f = self.tickets.entry(id.clone()).or_default();
            join_last(&mut f.csat, &t.csat);
            f.complaint |= t.complaint;
        }
        self.loose_complaints
            .extend(other.loose_complaints.iter().cloned());
        join_last(&mut self.tier, &other.tier);
        join_last(&mut self.points, &other.points);
        for (purpose, s) in &other.consents {
            let mut slot = self.consents.get(purpose).cloned();
            set_last(&mut slot, s);
            if let Some(s) = slot {
                self.consents.insert(purpose.clone(), s);
            }
        }
        join_last(&mut self.region, &other.region);
        self.private_domain |= other.private_domain;
    }

    /// The snapshot published on `zt.profiles`.
    pub fn snapshot(&self, rfm: &RfmConfig) -> ProfileSnapshot {
        let first_of = |k: &str| {
            self.ids
                .get(k)
                .and_then(|s| s.iter().next().cloned())
                .unwrap_or_default()
        };
        let all_of = |k: &str| {
            self.ids
                .get(k)
                .map(|s| s.iter().cloned().collect())
                .unwrap_or_default()
        };
        // Paid orders in time order; money in the currency of the first paid order.
        let mut paid: Vec<(i64, &str, i64, &str, i64)> = self
            .orders
            .iter()
            .filter_map(|(id, f)| {
                f.paid.as_ref().map(|p| {
                    (
                        p.at,
                        id.as_str(),
                        p.v.0,
                        p.v.1.as_str(),
                        f.refunds.values().sum(),
                    )
                })
            })
            .collect();
        paid.sort();
        let currency = paid.first().map(|p| p.3.to_owned()).unwrap_or_default();
        let in_currency: Vec<_> = paid.iter().filter(|p| p.3 == currency).collect();
        let gmv: i64 = in_currency.iter().map(|p| p.2).sum();
        let refunded: i64 = in_currency.iter().map(|p| p.4).sum();
        let n = paid.len() as u32;
        let first_order = paid.first().map(|p| p.0);
        let last_order = paid.last().map(|p| p.0);
        let avg_days = match (first_order, last_order) {
            (Some(a), Some(b)) if n >= 2 => Some((b - a) as f64 / DAY_MS as f64 / f64::from(n - 1)),
            _ => None,
        };
        // The last order by any order event (also unpaid or cancelled ones).
        let last_any = self
            .orders
            .iter()
            .filter_map(|(id, f)| f.status.as_ref().map(|s| (s.at, &s.id, id, &s.v)))
            .max();
        let ratings: Vec<i32> = self
            .tickets
            .values()
            .filter_map(|t| t.csat.as_ref().map(|c| c.v))
            .collect();
        let csat_avg = (!ratings.is_empty())
            .then(|| f64::from(ratings.iter().sum::<i32>()) / ratings.len() as f64);
        let complaints =
            self.tickets.values().filter(|t| t.complaint).count() + self.loose_complaints.len();
        let net = gmv - refunded;
        let as_of = self.last_seen.unwrap_or_default();
        let scores = rfm.scores(last_order.map(|t| (as_of - t).max(0) / DAY_MS), n, net);
        let (granted, denied): (Vec<_>, Vec<_>) = self.consents.iter().partition(|(_, s)| s.v);
        let (touch_channel, touch_campaign) = self
            .first_touch
            .as_ref()
            .map(|s| s.v.clone())
            .unwrap_or_default();
        let (province, city) = self
            .region
            .as_ref()
            .map(|s| s.v.clone())
            .unwrap_or_default();
        ProfileSnapshot {
            version: self.version,
            person_id: self.person_id.clone(),
            merged_into: self.merged_into.clone().unwrap_or_default(),
            updated_at_ms: self.last_seen.unwrap_or_default(),
            crm_customer_id: first_of("crm_customer_id"),
            user_ids: all_of("user_id"),
            anonymous_ids: all_of("anonymous_id"),
            phone_hash: first_of("phone_hash"),
            email_hash: first_of("email_hash"),
            first_seen_at_ms: self.first_seen.unwrap_or_default(),
            last_seen_at_ms: self.last_seen.unwrap_or_default(),
            acquisition_channel: touch_channel.unwrap_or_default(),
            acquisition_campaign: touch_campaign.unwrap_or_default(),
            first_order_at_ms: first_order,
            last_order_at_ms: last_order,
            paid_orders: n,
            paid_total_minor: gmv,
            refunded_minor: refunded,
            net_ltv_minor: net,
            aov_minor: if n == 0 { 0 } else { gmv / i64::from(n) },
            currency,
            repurchase: n >= 2,
            avg_days_between_orders: avg_days,
            last_order_id: last_any.map(|l| l.2.clone()).unwrap_or_default(),
            last_order_status: last_any.map(|l| l.3.clone()).unwrap_or_default(),
            last_shipment_status: self
                .last_shipment
                .as_ref()
                .map(|s| s.v.clone())
                .unwrap_or_default(),
            tickets: self.tickets.len() as u32,
            complaints: complaints as u32,
            csat_ratings: ratings.len() as u32,
            csat_avg,
            tier: self.tier.as_ref().map(|s| s.v.clone()).unwrap_or_default(),
            points_balance: self.points.as_ref().map(|s| s.v),
            consents_granted: granted.into_iter().map(|(k, _)| k.clone()).collect(),
            consents_denied: denied.into_iter().map(|(k, _)| k.clone()).collect(),
            province: province.unwrap_or_default(),
            city: city.unwrap_or_default(),
            private_domain: self.private_domain,
            rfm_r: scores.r,
            rfm_f: scores.f,
            rfm_m: scores.m,
            rfm_segment: scores.segment.to_owned(),
            high_value: scores.segment == "important_value",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zt_model::{Identities, OrderPayload, Payload, Source};

    fn order(eid: &str, ty: &str, t: i64, id: &str, total: i64, refund: i64) -> Event {
        Event {
            event_id: eid.into(),
            event_type: ty.into(),
            source: Source::Erp,
            source_event_id: None,
            occurred_at: t,
            sent_at: None,
            received_at: t,
            event_time: t,
            identities: Identities {
                crm_customer_id: Some("C1".into()),
                order_id: Some(id.into()),
                ..Default::default()
            },
            context: Default::default(),
            payload: Payload::Order(OrderPayload {
                order_id: id.into(),
                status: ty.trim_start_matches("order.").into(),
                currency: "CNY".into(),
                total_minor: total,
                refund_minor: refund,
                ..Default::default()
            }),
            person_id: None,
        }
    }

    fn events() -> Vec<Event> {
        vec![
            order("e1", "order.created", 1_000, "o1", 10_000, 0),
            order("e2", "order.paid", 2_000, "o1", 10_000, 0),
            order("e3", "order.paid", 2_000 + 10 * DAY_MS, "o2", 30_000, 0),
            order(
                "e4",
                "order.refunded",
                3_000 + 10 * DAY_MS,
                "o2",
                30_000,
                5_000,
            ),
            order(
                "e5",
                "order.refunded",
                4_000 + 10 * DAY_MS,
                "o2",
                30_000,
                1_000,
            ),
        ]
    }

    #[test]
    fn orders_refunds_and_repurchase_by_hand() {
        let mut s = ProfileState::new("p");
        for e in events() {
            s.apply(&e);
        }
        let snap = s.snapshot(&RfmConfig::default());
        assert_eq!(snap.paid_orders, 2);
        assert_eq!(snap.paid_total_minor, 40_000);
        assert_eq!(snap.refunded_minor, 6_000);
        assert_eq!(snap.net_ltv_minor, 34_000);
        assert_eq!(snap.aov_minor, 20_000);
        assert!(snap.repurchase);
        assert_eq!(snap.avg_days_between_orders, Some(10.0));
        assert_eq!(snap.last_order_id, "o2");
        assert_eq!(snap.last_order_status, "refunded");
        assert_eq!(snap.crm_customer_id, "C1");
    }

    #[test]
    fn apply_is_idempotent_and_order_free() {
        let evs = events();
        let mut once = ProfileState::new("p");
        evs.iter().for_each(|e| once.apply(e));
        let mut twice = ProfileState::new("p");
        evs.iter().chain(evs.iter()).for_each(|e| twice.apply(e));
        assert_eq!(once, twice);
        let mut rev = ProfileState::new("p");
        evs.iter().rev().for_each(|e| rev.apply(e));
        assert_eq!(once, rev);
        // Negative control: a different refund is seen.
        let mut other = ProfileState::new("p");
        evs.iter().take(4).for_each(|e| other.apply(e));
        assert_ne!(once, other);
    }

    #[test]
    fn absorb_is_a_join() {
        let evs = events();
        let mut whole = ProfileState::new("p");
        evs.iter().for_each(|e| whole.apply(e));
        let mut a = ProfileState::new("p");
        let mut b = ProfileState::new("q");
        for (i, e) in evs.iter().enumerate() {
            if i % 2 == 0 { a.apply(e) } else { b.apply(e) }
        }
        a.absorb(&b);
        a.absorb(&b);
        let mut expected = whole.clone();
        expected.absorbed.insert("q".into());
        expected.version = a.version;
        assert_eq!(a, expected);
    }
}
