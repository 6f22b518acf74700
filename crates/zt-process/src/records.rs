//! The records the processors write, as they go on the wire.
//!
//! Events stay Avro (`zt.Event`, Confluent framing) on `zt.events.resolved`. The identity
//! graph's and the profiles' own records are JSON objects (UTF-8, one object per Kafka
//! record), with the fields below; keys are UTF-8 strings.
//!
//! | topic | key | value |
//! |---|---|---|
//! | `zt.identity.edges` (1 partition, internal) | source position `topic/partition/offset` (a mark: `mark:` and its first span's) | [`EdgeRecord`] or [`ResolvedMark`] ([`LogEntry`]) |
//! | `zt.identity.links` (compacted) | `kind:value` | [`IdentityLink`] |
//! | `zt.identity.merges` | old person id | [`IdentityMerge`] |
//! | `zt.events.resolved` | person id (event id when the event names nobody) | `zt.Event` with `person_id` |
//! | `zt.profiles` (compacted) | person id | [`ProfileSnapshot`] |
//! | `zt.profiles.state` (compacted, internal) | person id | [`crate::profile::ProfileState`] |
//! | `zt.profiles.transfers` (internal) | receiving person id | [`TransferRecord`] |

use serde::{Deserialize, Serialize};
use zt_identity::Identifier;

use crate::profile::ProfileState;

/// One entry of the identity graph's log: the identifiers one input event carries, in the
/// order the resolver saw them. The graph is the fold of this log, in log order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EdgeRecord {
    /// Input position `topic/partition/offset` of the event.
    pub src: String,
    /// The event's identifiers.
    pub ids: Vec<Identifier>,
    /// The event's time (UTC ms), stamped on the links and merges it causes.
    pub at: i64,
}

/// An entry of the resolver's batch in the identity graph's log, appended (and
/// acknowledged) before the batch's resolved events are sent: the batch's events are
/// resolved as the graph stood at this entry's own offset. A replay of those input
/// positions (a crash or a rebalance before their commit) resolves them at the same offset
/// again, so that every copy of a resolved event names the same person and goes to the
/// same partition (`zt.events.resolved` is keyed by person id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResolvedMark {
    /// The input offsets of the batch, per input partition.
    pub resolved: Vec<Span>,
}

/// Input offsets `from..to` (end excluded) of one partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Span {
    /// Input topic.
    pub topic: String,
    /// Input partition.
    pub partition: i32,
    /// First offset.
    pub from: i64,
    /// One past the last offset.
    pub to: i64,
}

/// One entry of `zt.identity.edges`, told apart by its fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum LogEntry {
    /// The identifiers of an input event.
    Edge(EdgeRecord),
    /// A batch about to be sent.
    Mark(ResolvedMark),
}

/// An identifier's person. The latest `version` per identifier is the current one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityLink {
    /// Identifier kind (`crm_customer_id`, `user_id`, `anonymous_id`, `phone_hash`,
    /// `email_hash`, `order_id`, `waybill_no`, `ticket_id`).
    pub id_type: String,
    /// Identifier value (hashes for phones and e-mails; raw values never travel).
    pub id_value: String,
    /// The person.
    pub person_id: String,
    /// Offset in `zt.identity.edges` of the edge that set it: increases with every change.
    pub version: u64,
    /// Event time of the event that set it (UTC ms).
    pub linked_at_ms: i64,
}

/// One person merged into another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityMerge {
    /// The person id that ends.
    pub from: String,
    /// The person id it continues as.
    pub into: String,
    /// Offset in `zt.identity.edges` of the edge that merged them.
    pub version: u64,
    /// Event time of the event that merged them (UTC ms).
    pub merged_at_ms: i64,
}

/// State moved from one person to another by the profiles processor: a whole profile
/// after a merge, or a single late event's contribution for a person already merged away.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferRecord {
    /// The receiving person.
    pub into: String,
    /// The state to join into it.
    pub state: ProfileState,
}

/// A profile as published on `zt.profiles` and loaded into the `profiles` table. Money
/// in minor units (fen) of `currency`, the currency of the person's first paid order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct ProfileSnapshot {
    /// Grows with every snapshot of the person (see `runtime::VersionClock`): the highest
    /// version is the current profile.
    #[serde(default)]
    pub version: u64,
    pub person_id: String,
    /// Non-empty once the person was merged into another (the row is then a tombstone).
    pub merged_into: String,
    /// Latest event time in the profile (UTC ms).
    pub updated_at_ms: i64,
    pub crm_customer_id: String,
    pub user_ids: Vec<String>,
    pub anonymous_ids: Vec<String>,
    pub phone_hash: String,
    pub email_hash: String,
    pub first_seen_at_ms: i64,
    pub last_seen_at_ms: i64,
    /// First touch: channel and campaign of the earliest event that names one.
    pub acquisition_channel: String,
    pub acquisition_campaign: String,
    pub first_order_at_ms: Option<i64>,
    pub last_order_at_ms: Option<i64>,
    /// Paid orders.
    pub paid_orders: u32,
    /// GMV: paid order totals.
    pub paid_total_minor: i64,
    pub refunded_minor: i64,
    /// Net lifetime value: GMV minus refunds.
    pub net_ltv_minor: i64,
    /// Average order value: GMV / paid orders (integer division).
    pub aov_minor: i64,
    pub currency: String,
    /// Two or more paid orders.
    pub repurchase: bool,
    /// (last paid - first paid) / (paid orders - 1), in days.
    pub avg_days_between_orders: Option<f64>,
    pub last_order_id: String,
    pub last_order_status: String,
    pub last_shipment_status: String,
    pub tickets: u32,
    pub complaints: u32,
    pub csat_ratings: u32,
    pub csat_avg: Option<f64>,
    pub tier: String,
    pub points_balance: Option<i64>,
    pub consents_granted: Vec<String>,
    pub consents_denied: Vec<String>,
    pub province: String,
    pub city: String,
    pub private_domain: bool,
    pub rfm_r: u8,
    pub rfm_f: u8,
    pub rfm_m: u8,
    pub rfm_segment: String,
    /// RFM segment `important_value`.
    pub high_value: bool,
}
