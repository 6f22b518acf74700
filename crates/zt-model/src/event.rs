//! The canonical event: one envelope ([`Event`]) with a typed payload per domain
//! ([`Payload`]). Field meanings, units and defaults are those of `schemas/avro/event.avsc`;
//! the Avro mapping lives in [`crate::avro`].
//!
//! Times are UTC milliseconds since the Unix epoch. Money is integer minor units (fen for
//! CNY) next to an ISO 4217 currency code; floating point never carries money.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The upstream system family an event came from. On the wire it is the lower-case name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// Customer relationship management: customers, membership, consent.
    Crm,
    /// Enterprise resource planning: orders, order lines, refunds.
    Erp,
    /// Logistics providers and the warehouse: shipments.
    Logistics,
    /// Web, app and mini-program trackers (Segment-style calls).
    Tracking,
    /// Customer-service desk: tickets, ratings, complaints.
    Service,
    /// Ad platforms: spend, impressions, clicks.
    Marketing,
}

impl Source {
    /// Every source, in the order of PLATFORM.md.
    pub const ALL: [Source; 6] = [
        Source::Crm,
        Source::Erp,
        Source::Logistics,
        Source::Tracking,
        Source::Service,
        Source::Marketing,
    ];

    /// The wire name, e.g. `"crm"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Crm => "crm",
            Source::Erp => "erp",
            Source::Logistics => "logistics",
            Source::Tracking => "tracking",
            Source::Service => "service",
            Source::Marketing => "marketing",
        }
    }

    /// The canonical event types this source emits (tracking also emits free-form track
    /// event names under the `track` type; see [`TrackingPayload::name`]).
    pub fn event_types(self) -> &'static [&'static str] {
        match self {
            Source::Crm => &[
                "customer.registered",
                "customer.updated",
                "membership.tier_changed",
                "membership.points_changed",
                "consent.changed",
            ],
            Source::Erp => &[
                "order.created",
                "order.paid",
                "order.cancelled",
                "order.refunded",
            ],
            Source::Logistics => &[
                "shipment.created",
                "shipment.dispatched",
                "shipment.delivered",
                "shipment.exception",
                "shipment.returned",
            ],
            Source::Tracking => &["track", "identify", "page", "screen", "alias", "group"],
            Source::Service => &[
                "ticket.opened",
                "ticket.first_response",
                "ticket.resolved",
                "ticket.rated",
                "complaint.filed",
            ],
            Source::Marketing => &["ad_spend.reported"],
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error for a string that names no [`Source`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown source {0:?}: expected one of crm, erp, logistics, tracking, service, marketing")]
pub struct UnknownSource(pub String);

impl FromStr for Source {
    type Err = UnknownSource;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Source::ALL
            .into_iter()
            .find(|x| x.as_str() == s)
            .ok_or_else(|| UnknownSource(s.to_owned()))
    }
}

/// The canonical event envelope (`zt.Event`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Stable id and dedup key.
    pub event_id: String,
    /// Dotted type, e.g. `order.paid`; one of [`Source::event_types`].
    pub event_type: String,
    /// The system family the event came from.
    pub source: Source,
    /// The id the source system gave the record.
    pub source_event_id: Option<String>,
    /// Event time as stated by the source (ms).
    pub occurred_at: i64,
    /// Send time by the source's clock (ms), when known.
    pub sent_at: Option<i64>,
    /// Receive time by ingest's clock (ms).
    pub received_at: i64,
    /// Clock-skew corrected event time (ms); see [`corrected_event_time`].
    pub event_time: i64,
    /// Identifiers seen in the input.
    pub identities: Identities,
    /// Channel, campaign, device and experiment context.
    pub context: Context,
    /// The domain payload.
    pub payload: Payload,
    /// The person the identity processor resolved the event to: `None` on the source
    /// topics `zt.events.<source>` (ingest does not resolve), set on `zt.events.resolved`.
    /// Added in version 2 of `event.avsc`; records written with version 1 read as `None`.
    pub person_id: Option<String>,
}

/// `occurred_at` shifted by the skew between the sender's clock and ingest's clock:
/// `occurred_at + (received_at - sent_at)` when `sent_at` is known (Segment's rule), else
/// `occurred_at`. Saturates instead of overflowing on absurd inputs.
pub fn corrected_event_time(occurred_at: i64, sent_at: Option<i64>, received_at: i64) -> i64 {
    match sent_at {
        Some(sent) => occurred_at.saturating_add(received_at.saturating_sub(sent)),
        None => occurred_at,
    }
}

/// Identifiers as seen in the input. Phones and e-mails only as salted hashes
/// ([`crate::pii`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct Identities {
    pub crm_customer_id: Option<String>,
    pub user_id: Option<String>,
    pub anonymous_id: Option<String>,
    pub phone_hash: Option<String>,
    pub email_hash: Option<String>,
    pub order_id: Option<String>,
    pub waybill_no: Option<String>,
    pub ticket_id: Option<String>,
}

/// Where the event came from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct Context {
    pub channel: Option<String>,
    pub campaign: Option<String>,
    pub utm_source: Option<String>,
    pub utm_medium: Option<String>,
    pub utm_campaign: Option<String>,
    pub utm_term: Option<String>,
    pub utm_content: Option<String>,
    /// Traffic through a private-domain touchpoint (WeChat group, official account, ...).
    pub private_domain: bool,
    pub experiments: Vec<ExperimentAssignment>,
    pub device_type: Option<String>,
    pub os: Option<String>,
    pub app_version: Option<String>,
    pub locale: Option<String>,
    pub ip_country: Option<String>,
}

/// One experiment assignment carried by an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct ExperimentAssignment {
    pub experiment_id: String,
    pub variant: String,
}

/// The typed payload; one variant per domain. The variant order is the order of the Avro
/// union in `event.avsc` and must not change (new variants go at the end).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Payload {
    /// crm
    Customer(CustomerPayload),
    /// erp
    Order(OrderPayload),
    /// logistics
    Shipment(ShipmentPayload),
    /// tracking
    Tracking(TrackingPayload),
    /// service
    Ticket(TicketPayload),
    /// marketing
    AdSpend(AdSpendPayload),
}

impl Payload {
    /// The source whose events carry this payload.
    pub fn source(&self) -> Source {
        match self {
            Payload::Customer(_) => Source::Crm,
            Payload::Order(_) => Source::Erp,
            Payload::Shipment(_) => Source::Logistics,
            Payload::Tracking(_) => Source::Tracking,
            Payload::Ticket(_) => Source::Service,
            Payload::AdSpend(_) => Source::Marketing,
        }
    }
}

/// CRM customer, membership and consent changes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct CustomerPayload {
    pub customer_id: String,
    pub registered_at: Option<i64>,
    pub registration_channel: Option<String>,
    pub tier: Option<String>,
    pub previous_tier: Option<String>,
    pub points_delta: Option<i64>,
    pub points_balance: Option<i64>,
    pub consents: Vec<Consent>,
    pub gender: Option<String>,
    pub birth_year: Option<i32>,
    pub province: Option<String>,
    pub city: Option<String>,
}

/// A consent granted or withdrawn.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct Consent {
    pub purpose: String,
    pub granted: bool,
}

/// ERP order state changes; money in minor units of `currency`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct OrderPayload {
    pub order_id: String,
    /// created, paid, cancelled or refunded.
    pub status: String,
    pub currency: String,
    pub subtotal_minor: i64,
    pub discount_minor: i64,
    pub shipping_minor: i64,
    pub total_minor: i64,
    /// Amount refunded by this event (order.refunded).
    pub refund_minor: i64,
    pub refund_reason: Option<String>,
    pub payment_method: Option<String>,
    pub coupon_codes: Vec<String>,
    pub store_id: Option<String>,
    pub lines: Vec<OrderLine>,
}

/// One order line.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct OrderLine {
    pub line_no: i32,
    pub sku: String,
    pub product_id: Option<String>,
    pub product_name: Option<String>,
    pub category: Option<String>,
    pub quantity: i32,
    pub unit_price_minor: i64,
    pub discount_minor: i64,
    pub coupon_code: Option<String>,
    pub refunded_quantity: i32,
}

/// Logistics shipment state changes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct ShipmentPayload {
    pub waybill_no: String,
    pub order_id: Option<String>,
    pub carrier: String,
    /// created, dispatched, delivered, exception or returned.
    pub status: String,
    pub exception_code: Option<String>,
    pub exception_reason: Option<String>,
    pub warehouse: Option<String>,
    pub destination_city: Option<String>,
    pub promised_at: Option<i64>,
}

/// Segment-style tracking calls.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct TrackingPayload {
    /// track, identify, page, screen, alias or group.
    pub kind: String,
    /// Event name (track) or page/screen name.
    pub name: Option<String>,
    /// Properties as a JSON object text, PII removed.
    pub properties_json: String,
    /// Traits as a JSON object text, PII removed.
    pub traits_json: String,
    pub previous_id: Option<String>,
    pub group_id: Option<String>,
    pub product_id: Option<String>,
    pub sku: Option<String>,
    pub category: Option<String>,
    pub price_minor: Option<i64>,
    pub quantity: Option<i32>,
    pub revenue_minor: Option<i64>,
    pub currency: Option<String>,
    pub page_url: Option<String>,
    pub page_path: Option<String>,
    pub page_referrer: Option<String>,
    pub page_title: Option<String>,
    pub experiment_id: Option<String>,
    pub variant: Option<String>,
}

impl Default for TrackingPayload {
    fn default() -> Self {
        TrackingPayload {
            kind: "track".into(),
            name: None,
            properties_json: "{}".into(),
            traits_json: "{}".into(),
            previous_id: None,
            group_id: None,
            product_id: None,
            sku: None,
            category: None,
            price_minor: None,
            quantity: None,
            revenue_minor: None,
            currency: None,
            page_url: None,
            page_path: None,
            page_referrer: None,
            page_title: None,
            experiment_id: None,
            variant: None,
        }
    }
}

/// Customer-service ticket life cycle, ratings and complaints.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct TicketPayload {
    pub ticket_id: String,
    /// opened, first_response, resolved, rated or complaint.
    pub status: String,
    pub channel: Option<String>,
    pub category: Option<String>,
    pub priority: Option<String>,
    pub agent_id: Option<String>,
    pub opened_at: Option<i64>,
    pub first_response_at: Option<i64>,
    pub resolved_at: Option<i64>,
    /// 1 to 5.
    pub csat_score: Option<i32>,
    pub is_complaint: bool,
    pub complaint_reason: Option<String>,
}

/// Ad spend per channel, campaign and day.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct AdSpendPayload {
    pub channel: String,
    pub campaign_id: String,
    pub campaign_name: Option<String>,
    /// Days since 1970-01-01 (UTC).
    pub day: i32,
    pub spend_minor: i64,
    pub currency: String,
    pub impressions: i64,
    pub clicks: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_names_round_trip() {
        for s in Source::ALL {
            assert_eq!(s.as_str().parse::<Source>().unwrap(), s);
        }
        let err = "pos".parse::<Source>().unwrap_err();
        assert!(err.to_string().contains("\"pos\""));
    }

    #[test]
    fn skew_correction_follows_segment() {
        // Device clock 10 s behind: sent_at 10 s earlier than received_at.
        assert_eq!(corrected_event_time(1_000, Some(5_000), 15_000), 11_000);
        assert_eq!(corrected_event_time(1_000, None, 15_000), 1_000);
        assert_eq!(
            corrected_event_time(i64::MAX, Some(i64::MIN), i64::MAX),
            i64::MAX
        );
    }
}
