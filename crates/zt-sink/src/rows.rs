//! Rows of the sink's tables (`schemas/clickhouse/0001`–`0006`; `0007`, `0008`, `0010`,
//! `0011` for the processed topics, mapped in [`crate::processed`]) and the mapping from one
//! canonical event to them. Field order and types follow the DDL column for column
//! (materialized columns are left out and computed by the server; `person_id`, whose
//! `DEFAULT ''` predates the event's `person_id`, is written: the event's resolved person,
//! '' when it has none); the sink's integration tests insert every row type into the real
//! tables.

use clickhouse::Row;
use serde::Serialize;
use zt_model::{Event, Payload};

pub use crate::processed::{
    ExperimentProgressRow, FunnelProgressRow, IdentityLinkRow, IdentityMergeRow, ProfileRow,
};

/// Where a record came from: every row carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// Kafka topic.
    pub topic: String,
    /// Kafka partition.
    pub partition: i32,
    /// Kafka offset.
    pub offset: i64,
}

/// A row of one of the sink's tables.
pub trait SinkRow: clickhouse::RowOwned + clickhouse::RowWrite + Send + Sync {
    /// The table the row goes to.
    const TABLE: &'static str;
    /// The Kafka offset of the record the row came from.
    fn offset(&self) -> i64;
    /// Approximate RowBinary size in bytes (strings plus fixed-width columns), for batch
    /// limits and the bytes metric.
    fn approx_bytes(&self) -> usize;
}

fn s(v: &Option<String>) -> String {
    v.clone().unwrap_or_default()
}

fn slen(parts: &[&str]) -> usize {
    parts.iter().map(|p| p.len() + 1).sum()
}

macro_rules! sink_row {
    ($ty:ident, $table:literal, fixed = $fixed:expr, strings = [$($f:ident),* $(,)?], arrays = [$($a:ident),* $(,)?]) => {
        impl SinkRow for $ty {
            const TABLE: &'static str = $table;
            fn offset(&self) -> i64 {
                self._offset
            }
            fn approx_bytes(&self) -> usize {
                let arrays: usize = 0 $(+ 1 + self.$a.iter().map(|x| x.len() + 1).sum::<usize>())*;
                $fixed + slen(&[$(self.$f.as_str()),*]) + arrays
            }
        }
    };
}

/// `events`: one row per event.
#[derive(Debug, Clone, PartialEq, Row, Serialize)]
#[allow(missing_docs)]
pub struct EventRow {
    pub event_id: String,
    pub event_type: String,
    pub source: String,
    pub source_event_id: String,
    pub occurred_at_ms: i64,
    pub sent_at_ms: Option<i64>,
    pub received_at_ms: i64,
    pub event_time_ms: i64,
    pub crm_customer_id: String,
    pub user_id: String,
    pub anonymous_id: String,
    pub phone_hash: String,
    pub email_hash: String,
    pub order_id: String,
    pub waybill_no: String,
    pub ticket_id: String,
    pub person_id: String,
    pub channel: String,
    pub campaign: String,
    pub utm_source: String,
    pub utm_medium: String,
    pub utm_campaign: String,
    pub utm_term: String,
    pub utm_content: String,
    pub private_domain: u8,
    pub experiment_ids: Vec<String>,
    pub experiment_variants: Vec<String>,
    pub device_type: String,
    pub os: String,
    pub app_version: String,
    pub locale: String,
    pub ip_country: String,
    pub event_name: String,
    pub amount_minor: i64,
    pub currency: String,
    pub properties_json: String,
    pub traits_json: String,
    pub _topic: String,
    pub _partition: i32,
    pub _offset: i64,
}
sink_row!(
    EventRow,
    "events",
    fixed = 62,
    strings = [
        event_id,
        event_type,
        source,
        source_event_id,
        crm_customer_id,
        user_id,
        anonymous_id,
        phone_hash,
        email_hash,
        order_id,
        waybill_no,
        ticket_id,
        person_id,
        channel,
        campaign,
        utm_source,
        utm_medium,
        utm_campaign,
        utm_term,
        utm_content,
        device_type,
        os,
        app_version,
        locale,
        ip_country,
        event_name,
        currency,
        properties_json,
        traits_json,
        _topic
    ],
    arrays = [experiment_ids, experiment_variants]
);

/// `orders`: one row per ERP event.
#[derive(Debug, Clone, PartialEq, Row, Serialize)]
#[allow(missing_docs)]
pub struct OrderRow {
    pub event_id: String,
    pub event_type: String,
    pub order_id: String,
    pub status: String,
    pub currency: String,
    pub subtotal_minor: i64,
    pub discount_minor: i64,
    pub shipping_minor: i64,
    pub total_minor: i64,
    pub refund_minor: i64,
    pub refund_reason: String,
    pub payment_method: String,
    pub coupon_codes: Vec<String>,
    pub store_id: String,
    pub line_count: u32,
    pub item_quantity: i64,
    pub crm_customer_id: String,
    pub user_id: String,
    pub anonymous_id: String,
    pub phone_hash: String,
    pub email_hash: String,
    pub person_id: String,
    pub channel: String,
    pub campaign: String,
    pub utm_source: String,
    pub utm_medium: String,
    pub utm_campaign: String,
    pub private_domain: u8,
    pub experiment_ids: Vec<String>,
    pub experiment_variants: Vec<String>,
    pub occurred_at_ms: i64,
    pub received_at_ms: i64,
    pub event_time_ms: i64,
    pub _topic: String,
    pub _partition: i32,
    pub _offset: i64,
}
sink_row!(
    OrderRow,
    "orders",
    fixed = 93,
    strings = [
        event_id,
        event_type,
        order_id,
        status,
        currency,
        refund_reason,
        payment_method,
        store_id,
        crm_customer_id,
        user_id,
        anonymous_id,
        phone_hash,
        email_hash,
        person_id,
        channel,
        campaign,
        utm_source,
        utm_medium,
        utm_campaign,
        _topic
    ],
    arrays = [coupon_codes, experiment_ids, experiment_variants]
);

/// `order_lines`: one row per line of an ERP event.
#[derive(Debug, Clone, PartialEq, Row, Serialize)]
#[allow(missing_docs)]
pub struct OrderLineRow {
    pub event_id: String,
    pub event_type: String,
    pub order_id: String,
    pub status: String,
    pub line_no: i32,
    pub sku: String,
    pub product_id: String,
    pub product_name: String,
    pub category: String,
    pub quantity: i32,
    pub unit_price_minor: i64,
    pub discount_minor: i64,
    pub coupon_code: String,
    pub refunded_quantity: i32,
    pub currency: String,
    pub crm_customer_id: String,
    pub person_id: String,
    pub channel: String,
    pub campaign: String,
    pub private_domain: u8,
    pub event_time_ms: i64,
    pub _topic: String,
    pub _partition: i32,
    pub _offset: i64,
}
sink_row!(
    OrderLineRow,
    "order_lines",
    fixed = 49,
    strings = [
        event_id,
        event_type,
        order_id,
        status,
        sku,
        product_id,
        product_name,
        category,
        coupon_code,
        currency,
        crm_customer_id,
        person_id,
        channel,
        campaign,
        _topic
    ],
    arrays = []
);

/// `shipments`: one row per logistics event.
#[derive(Debug, Clone, PartialEq, Row, Serialize)]
#[allow(missing_docs)]
pub struct ShipmentRow {
    pub event_id: String,
    pub event_type: String,
    pub waybill_no: String,
    pub order_id: String,
    pub carrier: String,
    pub status: String,
    pub exception_code: String,
    pub exception_reason: String,
    pub warehouse: String,
    pub destination_city: String,
    pub promised_at_ms: Option<i64>,
    pub crm_customer_id: String,
    pub person_id: String,
    pub channel: String,
    pub occurred_at_ms: i64,
    pub received_at_ms: i64,
    pub event_time_ms: i64,
    pub _topic: String,
    pub _partition: i32,
    pub _offset: i64,
}
sink_row!(
    ShipmentRow,
    "shipments",
    fixed = 45,
    strings = [
        event_id,
        event_type,
        waybill_no,
        order_id,
        carrier,
        status,
        exception_code,
        exception_reason,
        warehouse,
        destination_city,
        crm_customer_id,
        person_id,
        channel,
        _topic
    ],
    arrays = []
);

/// `tickets`: one row per service event.
#[derive(Debug, Clone, PartialEq, Row, Serialize)]
#[allow(missing_docs)]
pub struct TicketRow {
    pub event_id: String,
    pub event_type: String,
    pub ticket_id: String,
    pub status: String,
    pub service_channel: String,
    pub category: String,
    pub priority: String,
    pub agent_id: String,
    pub opened_at_ms: Option<i64>,
    pub first_response_at_ms: Option<i64>,
    pub resolved_at_ms: Option<i64>,
    pub csat_score: Option<i32>,
    pub is_complaint: u8,
    pub complaint_reason: String,
    pub crm_customer_id: String,
    pub user_id: String,
    pub person_id: String,
    pub order_id: String,
    pub channel: String,
    pub occurred_at_ms: i64,
    pub received_at_ms: i64,
    pub event_time_ms: i64,
    pub _topic: String,
    pub _partition: i32,
    pub _offset: i64,
}
sink_row!(
    TicketRow,
    "tickets",
    fixed = 73,
    strings = [
        event_id,
        event_type,
        ticket_id,
        status,
        service_channel,
        category,
        priority,
        agent_id,
        complaint_reason,
        crm_customer_id,
        user_id,
        person_id,
        order_id,
        channel,
        _topic
    ],
    arrays = []
);

/// `ad_spend`: one row per marketing event.
#[derive(Debug, Clone, PartialEq, Row, Serialize)]
#[allow(missing_docs)]
pub struct AdSpendRow {
    pub event_id: String,
    pub channel: String,
    pub campaign_id: String,
    pub campaign_name: String,
    /// Days since 1970-01-01 (ClickHouse `Date`).
    pub day: u16,
    pub spend_minor: i64,
    pub currency: String,
    pub impressions: i64,
    pub clicks: i64,
    pub occurred_at_ms: i64,
    pub received_at_ms: i64,
    pub event_time_ms: i64,
    pub _topic: String,
    pub _partition: i32,
    pub _offset: i64,
}
sink_row!(
    AdSpendRow,
    "ad_spend",
    fixed = 62,
    strings = [
        event_id,
        channel,
        campaign_id,
        campaign_name,
        currency,
        _topic
    ],
    arrays = []
);

/// `customers`: one row per CRM event.
#[derive(Debug, Clone, PartialEq, Row, Serialize)]
#[allow(missing_docs)]
pub struct CustomerRow {
    pub event_id: String,
    pub event_type: String,
    pub customer_id: String,
    pub registered_at_ms: Option<i64>,
    pub registration_channel: String,
    pub tier: String,
    pub previous_tier: String,
    pub points_delta: Option<i64>,
    pub points_balance: Option<i64>,
    pub consent_purposes: Vec<String>,
    pub consent_granted: Vec<u8>,
    pub gender: String,
    pub birth_year: Option<i32>,
    pub province: String,
    pub city: String,
    pub user_id: String,
    pub anonymous_id: String,
    pub phone_hash: String,
    pub email_hash: String,
    pub person_id: String,
    pub channel: String,
    pub campaign: String,
    pub private_domain: u8,
    pub occurred_at_ms: i64,
    pub received_at_ms: i64,
    pub event_time_ms: i64,
    pub _topic: String,
    pub _partition: i32,
    pub _offset: i64,
}

impl SinkRow for CustomerRow {
    const TABLE: &'static str = "customers";
    fn offset(&self) -> i64 {
        self._offset
    }
    fn approx_bytes(&self) -> usize {
        70 + self.consent_granted.len()
            + self
                .consent_purposes
                .iter()
                .map(|x| x.len() + 1)
                .sum::<usize>()
            + slen(&[
                &self.event_id,
                &self.event_type,
                &self.customer_id,
                &self.registration_channel,
                &self.tier,
                &self.previous_tier,
                &self.gender,
                &self.province,
                &self.city,
                &self.user_id,
                &self.anonymous_id,
                &self.phone_hash,
                &self.email_hash,
                &self.person_id,
                &self.channel,
                &self.campaign,
                &self._topic,
            ])
    }
}

sink_row!(
    IdentityLinkRow,
    "identity_links",
    fixed = 33,
    strings = [id_type, id_value, person_id, _topic],
    arrays = []
);
sink_row!(
    ProfileRow,
    "profiles",
    fixed = 120,
    strings = [
        person_id,
        crm_customer_id,
        phone_hash,
        email_hash,
        acquisition_channel,
        acquisition_campaign,
        currency,
        tier,
        province,
        city,
        traits_json,
        merged_into,
        last_order_id,
        last_order_status,
        last_shipment_status,
        rfm_segment,
        _topic
    ],
    arrays = [user_ids, anonymous_ids, consents_granted, consents_denied]
);
sink_row!(
    IdentityMergeRow,
    "identity_merges",
    fixed = 28,
    strings = [from_person, into_person, _topic],
    arrays = []
);
sink_row!(
    FunnelProgressRow,
    "funnel_progress",
    fixed = 42,
    strings = [
        funnel_id,
        person_id,
        channel,
        campaign,
        device,
        experiment_id,
        variant,
        _topic
    ],
    arrays = []
);
sink_row!(
    ExperimentProgressRow,
    "experiment_progress",
    fixed = 48,
    strings = [experiment_id, person_id, variant, _topic],
    arrays = []
);

/// Every row one record maps to.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Rows {
    /// Always exactly one.
    pub events: Vec<EventRow>,
    #[allow(missing_docs)]
    pub orders: Vec<OrderRow>,
    #[allow(missing_docs)]
    pub order_lines: Vec<OrderLineRow>,
    #[allow(missing_docs)]
    pub shipments: Vec<ShipmentRow>,
    #[allow(missing_docs)]
    pub tickets: Vec<TicketRow>,
    #[allow(missing_docs)]
    pub ad_spend: Vec<AdSpendRow>,
    #[allow(missing_docs)]
    pub customers: Vec<CustomerRow>,
    /// From `<prefix>.identity.links` ([`crate::processed`]).
    pub identity_links: Vec<IdentityLinkRow>,
    /// From `<prefix>.profiles`.
    pub profiles: Vec<ProfileRow>,
    /// From `<prefix>.identity.merges`.
    pub identity_merges: Vec<IdentityMergeRow>,
    /// From `<prefix>.funnels` (`"kind":"funnel"`).
    pub funnel_progress: Vec<FunnelProgressRow>,
    /// From `<prefix>.funnels` (`"kind":"experiment"`).
    pub experiment_progress: Vec<ExperimentProgressRow>,
}

impl Rows {
    /// Number of rows over all tables.
    pub fn len(&self) -> usize {
        self.events.len()
            + self.orders.len()
            + self.order_lines.len()
            + self.shipments.len()
            + self.tickets.len()
            + self.ad_spend.len()
            + self.customers.len()
            + self.identity_links.len()
            + self.profiles.len()
            + self.identity_merges.len()
            + self.funnel_progress.len()
            + self.experiment_progress.len()
    }

    /// True when there are no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Moves every row of `other` to the end of `self`.
    pub fn append(&mut self, mut other: Rows) {
        self.events.append(&mut other.events);
        self.orders.append(&mut other.orders);
        self.order_lines.append(&mut other.order_lines);
        self.shipments.append(&mut other.shipments);
        self.tickets.append(&mut other.tickets);
        self.ad_spend.append(&mut other.ad_spend);
        self.customers.append(&mut other.customers);
        self.identity_links.append(&mut other.identity_links);
        self.profiles.append(&mut other.profiles);
        self.identity_merges.append(&mut other.identity_merges);
        self.funnel_progress.append(&mut other.funnel_progress);
        self.experiment_progress
            .append(&mut other.experiment_progress);
    }

    /// Removes every row, keeping the allocations.
    pub fn clear(&mut self) {
        self.events.clear();
        self.orders.clear();
        self.order_lines.clear();
        self.shipments.clear();
        self.tickets.clear();
        self.ad_spend.clear();
        self.customers.clear();
        self.identity_links.clear();
        self.profiles.clear();
        self.identity_merges.clear();
        self.funnel_progress.clear();
        self.experiment_progress.clear();
    }

    /// Approximate bytes over all tables.
    pub fn approx_bytes(&self) -> usize {
        fn b<R: SinkRow>(v: &[R]) -> usize {
            v.iter().map(SinkRow::approx_bytes).sum()
        }
        b(&self.events)
            + b(&self.orders)
            + b(&self.order_lines)
            + b(&self.shipments)
            + b(&self.tickets)
            + b(&self.ad_spend)
            + b(&self.customers)
            + b(&self.identity_links)
            + b(&self.profiles)
            + b(&self.identity_merges)
            + b(&self.funnel_progress)
            + b(&self.experiment_progress)
    }
}

/// The column lists of the sink's tables, in [`crate::TABLES`] order.
pub const TABLE_COLUMNS: [&[&str]; 12] = [
    <EventRow as clickhouse::Row>::COLUMN_NAMES,
    <OrderRow as clickhouse::Row>::COLUMN_NAMES,
    <OrderLineRow as clickhouse::Row>::COLUMN_NAMES,
    <ShipmentRow as clickhouse::Row>::COLUMN_NAMES,
    <TicketRow as clickhouse::Row>::COLUMN_NAMES,
    <AdSpendRow as clickhouse::Row>::COLUMN_NAMES,
    <CustomerRow as clickhouse::Row>::COLUMN_NAMES,
    <IdentityLinkRow as clickhouse::Row>::COLUMN_NAMES,
    <ProfileRow as clickhouse::Row>::COLUMN_NAMES,
    <IdentityMergeRow as clickhouse::Row>::COLUMN_NAMES,
    <FunnelProgressRow as clickhouse::Row>::COLUMN_NAMES,
    <ExperimentProgressRow as clickhouse::Row>::COLUMN_NAMES,
];

/// Every row one record maps to, RowBinary-encoded, table after table in
/// [`crate::TABLES`] order.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct EncodedRows {
    /// The tables' rows, one table after the other.
    pub data: Vec<u8>,
    /// Per table: (rows, bytes).
    pub tables: [(u32, u32); 12],
}

impl EncodedRows {
    /// Rows over all tables.
    pub fn rows(&self) -> usize {
        self.tables.iter().map(|&(r, _)| r as usize).sum()
    }

    /// The bytes of table `t`.
    pub fn table(&self, t: usize) -> &[u8] {
        let start: usize = self.tables[..t].iter().map(|&(_, b)| b as usize).sum();
        &self.data[start..start + self.tables[t].1 as usize]
    }
}

impl Rows {
    /// The rows in RowBinary, as the sink sends them.
    pub fn encode(&self) -> Result<EncodedRows, crate::rowbinary::EncodeError> {
        fn put<R: Serialize>(
            rows: &[R],
            out: &mut EncodedRows,
            t: usize,
        ) -> Result<(), crate::rowbinary::EncodeError> {
            let start = out.data.len();
            for r in rows {
                crate::rowbinary::write_row(r, &mut out.data)?;
            }
            let n = |x: usize| u32::try_from(x).unwrap_or(u32::MAX);
            out.tables[t] = (n(rows.len()), n(out.data.len() - start));
            Ok(())
        }
        let mut out = EncodedRows {
            data: Vec::with_capacity(self.approx_bytes() + 64),
            tables: [(0, 0); 12],
        };
        put(&self.events, &mut out, 0)?;
        put(&self.orders, &mut out, 1)?;
        put(&self.order_lines, &mut out, 2)?;
        put(&self.shipments, &mut out, 3)?;
        put(&self.tickets, &mut out, 4)?;
        put(&self.ad_spend, &mut out, 5)?;
        put(&self.customers, &mut out, 6)?;
        put(&self.identity_links, &mut out, 7)?;
        put(&self.profiles, &mut out, 8)?;
        put(&self.identity_merges, &mut out, 9)?;
        put(&self.funnel_progress, &mut out, 10)?;
        put(&self.experiment_progress, &mut out, 11)?;
        Ok(out)
    }
}

/// Why an event cannot be mapped to rows (it goes to the dead-letter topic).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct MapError {
    /// The field at fault.
    pub field: &'static str,
    /// Why.
    pub reason: String,
}

/// The event's main amount and its currency, as documented for `events.amount_minor`.
fn amount(ev: &Event) -> (i64, String) {
    match &ev.payload {
        Payload::Order(o) if ev.event_type == "order.refunded" => {
            (o.refund_minor, o.currency.clone())
        }
        Payload::Order(o) => (o.total_minor, o.currency.clone()),
        Payload::Tracking(t) => {
            let a = t.revenue_minor.or_else(|| {
                t.price_minor
                    .zip(t.quantity)
                    .map(|(p, q)| p.saturating_mul(i64::from(q)))
            });
            match a {
                Some(a) => (a, s(&t.currency)),
                None => (0, String::new()),
            }
        }
        Payload::AdSpend(a) => (a.spend_minor, a.currency.clone()),
        _ => (0, String::new()),
    }
}

fn payload_json(p: &Payload) -> String {
    let v = match p {
        Payload::Customer(x) => serde_json::to_string(x),
        Payload::Order(x) => serde_json::to_string(x),
        Payload::Shipment(x) => serde_json::to_string(x),
        Payload::Tracking(x) => Ok(x.properties_json.clone()),
        Payload::Ticket(x) => serde_json::to_string(x),
        Payload::AdSpend(x) => serde_json::to_string(x),
    };
    v.unwrap_or_else(|_| "{}".to_owned())
}

/// Maps one event to the rows of every table it feeds.
pub fn map_event(ev: &Event, o: &Origin) -> Result<Rows, MapError> {
    let id = &ev.identities;
    // Set on zt.events.resolved by the identity processor; '' (the columns' default) for
    // events from the source topics.
    let person_id = s(&ev.person_id);
    let cx = &ev.context;
    let (amount_minor, currency) = amount(ev);
    let exp_ids: Vec<String> = cx
        .experiments
        .iter()
        .map(|e| e.experiment_id.clone())
        .collect();
    let exp_vars: Vec<String> = cx.experiments.iter().map(|e| e.variant.clone()).collect();
    let (event_name, traits_json) = match &ev.payload {
        Payload::Tracking(t) => (s(&t.name), t.traits_json.clone()),
        _ => (String::new(), "{}".to_owned()),
    };
    let mut rows = Rows {
        events: vec![EventRow {
            event_id: ev.event_id.clone(),
            event_type: ev.event_type.clone(),
            source: ev.source.as_str().to_owned(),
            source_event_id: s(&ev.source_event_id),
            occurred_at_ms: ev.occurred_at,
            sent_at_ms: ev.sent_at,
            received_at_ms: ev.received_at,
            event_time_ms: ev.event_time,
            crm_customer_id: s(&id.crm_customer_id),
            user_id: s(&id.user_id),
            anonymous_id: s(&id.anonymous_id),
            phone_hash: s(&id.phone_hash),
            email_hash: s(&id.email_hash),
            order_id: s(&id.order_id),
            waybill_no: s(&id.waybill_no),
            ticket_id: s(&id.ticket_id),
            person_id: person_id.clone(),
            channel: s(&cx.channel),
            campaign: s(&cx.campaign),
            utm_source: s(&cx.utm_source),
            utm_medium: s(&cx.utm_medium),
            utm_campaign: s(&cx.utm_campaign),
            utm_term: s(&cx.utm_term),
            utm_content: s(&cx.utm_content),
            private_domain: u8::from(cx.private_domain),
            experiment_ids: exp_ids.clone(),
            experiment_variants: exp_vars.clone(),
            device_type: s(&cx.device_type),
            os: s(&cx.os),
            app_version: s(&cx.app_version),
            locale: s(&cx.locale),
            ip_country: s(&cx.ip_country),
            event_name,
            amount_minor,
            currency,
            properties_json: payload_json(&ev.payload),
            traits_json,
            _topic: o.topic.clone(),
            _partition: o.partition,
            _offset: o.offset,
        }],
        ..Default::default()
    };
    match &ev.payload {
        Payload::Order(p) => {
            rows.orders.push(OrderRow {
                event_id: ev.event_id.clone(),
                event_type: ev.event_type.clone(),
                order_id: p.order_id.clone(),
                status: p.status.clone(),
                currency: p.currency.clone(),
                subtotal_minor: p.subtotal_minor,
                discount_minor: p.discount_minor,
                shipping_minor: p.shipping_minor,
                total_minor: p.total_minor,
                refund_minor: p.refund_minor,
                refund_reason: s(&p.refund_reason),
                payment_method: s(&p.payment_method),
                coupon_codes: p.coupon_codes.clone(),
                store_id: s(&p.store_id),
                line_count: u32::try_from(p.lines.len()).unwrap_or(u32::MAX),
                item_quantity: p.lines.iter().map(|l| i64::from(l.quantity)).sum(),
                crm_customer_id: s(&id.crm_customer_id),
                user_id: s(&id.user_id),
                anonymous_id: s(&id.anonymous_id),
                phone_hash: s(&id.phone_hash),
                email_hash: s(&id.email_hash),
                person_id: person_id.clone(),
                channel: s(&cx.channel),
                campaign: s(&cx.campaign),
                utm_source: s(&cx.utm_source),
                utm_medium: s(&cx.utm_medium),
                utm_campaign: s(&cx.utm_campaign),
                private_domain: u8::from(cx.private_domain),
                experiment_ids: exp_ids,
                experiment_variants: exp_vars,
                occurred_at_ms: ev.occurred_at,
                received_at_ms: ev.received_at,
                event_time_ms: ev.event_time,
                _topic: o.topic.clone(),
                _partition: o.partition,
                _offset: o.offset,
            });
            rows.order_lines
                .extend(p.lines.iter().map(|l| OrderLineRow {
                    event_id: ev.event_id.clone(),
                    event_type: ev.event_type.clone(),
                    order_id: p.order_id.clone(),
                    status: p.status.clone(),
                    line_no: l.line_no,
                    sku: l.sku.clone(),
                    product_id: s(&l.product_id),
                    product_name: s(&l.product_name),
                    category: s(&l.category),
                    quantity: l.quantity,
                    unit_price_minor: l.unit_price_minor,
                    discount_minor: l.discount_minor,
                    coupon_code: s(&l.coupon_code),
                    refunded_quantity: l.refunded_quantity,
                    currency: p.currency.clone(),
                    crm_customer_id: s(&id.crm_customer_id),
                    person_id: person_id.clone(),
                    channel: s(&cx.channel),
                    campaign: s(&cx.campaign),
                    private_domain: u8::from(cx.private_domain),
                    event_time_ms: ev.event_time,
                    _topic: o.topic.clone(),
                    _partition: o.partition,
                    _offset: o.offset,
                }));
        }
        Payload::Shipment(p) => rows.shipments.push(ShipmentRow {
            event_id: ev.event_id.clone(),
            event_type: ev.event_type.clone(),
            waybill_no: p.waybill_no.clone(),
            order_id: p
                .order_id
                .clone()
                .or_else(|| id.order_id.clone())
                .unwrap_or_default(),
            carrier: p.carrier.clone(),
            status: p.status.clone(),
            exception_code: s(&p.exception_code),
            exception_reason: s(&p.exception_reason),
            warehouse: s(&p.warehouse),
            destination_city: s(&p.destination_city),
            promised_at_ms: p.promised_at,
            crm_customer_id: s(&id.crm_customer_id),
            person_id: person_id.clone(),
            channel: s(&cx.channel),
            occurred_at_ms: ev.occurred_at,
            received_at_ms: ev.received_at,
            event_time_ms: ev.event_time,
            _topic: o.topic.clone(),
            _partition: o.partition,
            _offset: o.offset,
        }),
        Payload::Ticket(p) => rows.tickets.push(TicketRow {
            event_id: ev.event_id.clone(),
            event_type: ev.event_type.clone(),
            ticket_id: p.ticket_id.clone(),
            status: p.status.clone(),
            service_channel: s(&p.channel),
            category: s(&p.category),
            priority: s(&p.priority),
            agent_id: s(&p.agent_id),
            opened_at_ms: p.opened_at,
            first_response_at_ms: p.first_response_at,
            resolved_at_ms: p.resolved_at,
            csat_score: p.csat_score,
            is_complaint: u8::from(p.is_complaint),
            complaint_reason: s(&p.complaint_reason),
            crm_customer_id: s(&id.crm_customer_id),
            user_id: s(&id.user_id),
            person_id: person_id.clone(),
            order_id: s(&id.order_id),
            channel: s(&cx.channel),
            occurred_at_ms: ev.occurred_at,
            received_at_ms: ev.received_at,
            event_time_ms: ev.event_time,
            _topic: o.topic.clone(),
            _partition: o.partition,
            _offset: o.offset,
        }),
        Payload::AdSpend(p) => {
            let day = u16::try_from(p.day).map_err(|_| MapError {
                field: "payload.day",
                reason: format!(
                    "day {} is outside the ClickHouse Date range (1970-01-01 to 2149-06-06)",
                    p.day
                ),
            })?;
            rows.ad_spend.push(AdSpendRow {
                event_id: ev.event_id.clone(),
                channel: p.channel.clone(),
                campaign_id: p.campaign_id.clone(),
                campaign_name: s(&p.campaign_name),
                day,
                spend_minor: p.spend_minor,
                currency: p.currency.clone(),
                impressions: p.impressions,
                clicks: p.clicks,
                occurred_at_ms: ev.occurred_at,
                received_at_ms: ev.received_at,
                event_time_ms: ev.event_time,
                _topic: o.topic.clone(),
                _partition: o.partition,
                _offset: o.offset,
            })
        }
        Payload::Customer(p) => rows.customers.push(CustomerRow {
            event_id: ev.event_id.clone(),
            event_type: ev.event_type.clone(),
            customer_id: p.customer_id.clone(),
            registered_at_ms: p.registered_at,
            registration_channel: s(&p.registration_channel),
            tier: s(&p.tier),
            previous_tier: s(&p.previous_tier),
            points_delta: p.points_delta,
            points_balance: p.points_balance,
            consent_purposes: p.consents.iter().map(|c| c.purpose.clone()).collect(),
            consent_granted: p.consents.iter().map(|c| u8::from(c.granted)).collect(),
            gender: s(&p.gender),
            birth_year: p.birth_year,
            province: s(&p.province),
            city: s(&p.city),
            user_id: s(&id.user_id),
            anonymous_id: s(&id.anonymous_id),
            phone_hash: s(&id.phone_hash),
            email_hash: s(&id.email_hash),
            person_id: person_id.clone(),
            channel: s(&cx.channel),
            campaign: s(&cx.campaign),
            private_domain: u8::from(cx.private_domain),
            occurred_at_ms: ev.occurred_at,
            received_at_ms: ev.received_at,
            event_time_ms: ev.event_time,
            _topic: o.topic.clone(),
            _partition: o.partition,
            _offset: o.offset,
        }),
        Payload::Tracking(_) => {}
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use zt_model::*;

    fn origin() -> Origin {
        Origin {
            topic: "zt.events.erp".into(),
            partition: 2,
            offset: 41,
        }
    }

    fn base(payload: Payload, event_type: &str) -> Event {
        Event {
            event_id: "e1".into(),
            event_type: event_type.into(),
            source: payload.source(),
            source_event_id: None,
            occurred_at: 1_000,
            sent_at: Some(900),
            received_at: 1_100,
            event_time: 1_200,
            identities: Identities {
                crm_customer_id: Some("C1".into()),
                ..Default::default()
            },
            context: Context {
                channel: Some("douyin".into()),
                private_domain: true,
                experiments: vec![
                    ExperimentAssignment {
                        experiment_id: "x1".into(),
                        variant: "a".into(),
                    },
                    ExperimentAssignment {
                        experiment_id: "x2".into(),
                        variant: "b".into(),
                    },
                ],
                ..Default::default()
            },
            payload,
            person_id: None,
        }
    }

    #[test]
    fn an_order_feeds_events_orders_and_lines() {
        let ev = base(
            Payload::Order(OrderPayload {
                order_id: "O1".into(),
                status: "refunded".into(),
                currency: "CNY".into(),
                total_minor: 9_000,
                refund_minor: 3_000,
                lines: vec![
                    OrderLine {
                        line_no: 1,
                        sku: "A".into(),
                        quantity: 2,
                        ..Default::default()
                    },
                    OrderLine {
                        line_no: 2,
                        sku: "B".into(),
                        quantity: 3,
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }),
            "order.refunded",
        );
        let r = map_event(&ev, &origin()).unwrap();
        assert_eq!(r.len(), 4);
        let e = &r.events[0];
        assert_eq!((e.amount_minor, e.currency.as_str()), (3_000, "CNY"));
        assert_eq!(e.experiment_ids, ["x1", "x2"]);
        assert_eq!(e.experiment_variants, ["a", "b"]);
        assert_eq!(e.private_domain, 1);
        assert_eq!((e._partition, e._offset), (2, 41));
        assert!(e.properties_json.contains("\"order_id\":\"O1\""));
        assert_eq!(r.orders[0].item_quantity, 5);
        assert_eq!(r.orders[0].line_count, 2);
        assert!(
            r.order_lines
                .iter()
                .all(|l| l._offset == 41 && l.order_id == "O1")
        );
        assert!(r.approx_bytes() > 100);
    }

    #[test]
    fn person_id_goes_to_every_table_that_has_the_column() {
        let order = Payload::Order(OrderPayload {
            order_id: "O1".into(),
            lines: vec![OrderLine::default(), OrderLine::default()],
            ..Default::default()
        });
        let payloads = [
            (order, "order.paid"),
            (
                Payload::Shipment(ShipmentPayload::default()),
                "shipment.created",
            ),
            (Payload::Ticket(TicketPayload::default()), "ticket.opened"),
            (
                Payload::Customer(CustomerPayload::default()),
                "customer.updated",
            ),
            (Payload::Tracking(TrackingPayload::default()), "track"),
        ];
        for (payload, event_type) in payloads {
            let mut ev = base(payload, event_type);
            // From a source topic: no person yet, the columns' default.
            let r = map_event(&ev, &origin()).unwrap();
            let all = |r: &Rows| -> Vec<String> {
                let mut v: Vec<String> = r.events.iter().map(|x| x.person_id.clone()).collect();
                v.extend(r.orders.iter().map(|x| x.person_id.clone()));
                v.extend(r.order_lines.iter().map(|x| x.person_id.clone()));
                v.extend(r.shipments.iter().map(|x| x.person_id.clone()));
                v.extend(r.tickets.iter().map(|x| x.person_id.clone()));
                v.extend(r.customers.iter().map(|x| x.person_id.clone()));
                v
            };
            assert_eq!(all(&r), vec![String::new(); r.len()], "{event_type}");
            // From zt.events.resolved.
            ev.person_id = Some("p_0a1b2c3d".into());
            let r = map_event(&ev, &origin()).unwrap();
            assert_eq!(
                all(&r),
                vec!["p_0a1b2c3d".to_owned(); r.len()],
                "{event_type}"
            );
            let bytes = r.approx_bytes();
            ev.person_id = None;
            assert_eq!(
                map_event(&ev, &origin()).unwrap().approx_bytes() + 10 * r.len(),
                bytes
            );
        }
    }

    #[test]
    fn tracking_amount_and_name() {
        let ev = base(
            Payload::Tracking(TrackingPayload {
                name: Some("Product Added".into()),
                price_minor: Some(990),
                quantity: Some(3),
                currency: Some("CNY".into()),
                properties_json: r#"{"sku":"A"}"#.into(),
                ..Default::default()
            }),
            "track",
        );
        let r = map_event(&ev, &origin()).unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!(r.events[0].event_name, "Product Added");
        assert_eq!(r.events[0].amount_minor, 2_970);
        assert_eq!(r.events[0].properties_json, r#"{"sku":"A"}"#);
    }

    #[test]
    fn an_ad_spend_day_out_of_date_range_is_a_map_error() {
        let ev = base(
            Payload::AdSpend(AdSpendPayload {
                day: -1,
                ..Default::default()
            }),
            "ad_spend.reported",
        );
        assert_eq!(map_event(&ev, &origin()).unwrap_err().field, "payload.day");
        let ok = base(
            Payload::AdSpend(AdSpendPayload {
                day: 20_454,
                spend_minor: 5,
                currency: "CNY".into(),
                ..Default::default()
            }),
            "ad_spend.reported",
        );
        let r = map_event(&ok, &origin()).unwrap();
        assert_eq!(r.ad_spend[0].day, 20_454);
        assert_eq!(r.events[0].amount_minor, 5);
    }
}
