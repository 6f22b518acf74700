//! Normalisers for the native JSON records of the CRM, ERP, logistics, customer-service
//! and marketing systems. Field mapping tables and examples: `docs/sources/<source>.md`.
//!
//! Every native record shares the envelope fields `event_id` (optional; derived from the
//! record's bytes when absent), `type` (one of the source's event types), `occurred_at`,
//! `sent_at`, the identity fields `customer_id`, `user_id`, `anonymous_id`, `mobile`,
//! `email`, `order_id`, `waybill_no`, `ticket_id`, and the context fields `channel`,
//! `campaign`, `utm_*`, `private_domain`, `experiments`, `device_type`, `os`,
//! `app_version`, `locale`.

use zt_model::*;

use super::Envelope;
use crate::error::{Reason, Rejection};
use crate::fields::Record;

/// Normalises one native record of `source` (not tracking).
pub(crate) fn normalize(
    source: Source,
    rec: &Record<'_>,
    env: Envelope<'_>,
) -> Result<Event, Rejection> {
    let event_type = rec.str("type")?;
    if !source.event_types().contains(&event_type.as_str()) {
        return Err(Rejection::field(
            Reason::UnknownEventType,
            "type",
            format!(
                "is not an event type of {source}; expected one of {}",
                source.event_types().join(", ")
            ),
        ));
    }
    let status = event_type
        .split_once('.')
        .map(|(_, s)| s)
        .unwrap_or(&event_type)
        .to_owned();
    let mut identities = identities(rec)?;
    let mut context = context(rec)?;
    let payload = match source {
        Source::Crm => Payload::Customer(customer(rec, &mut identities)?),
        Source::Erp => Payload::Order(order(rec, status, &mut identities)?),
        Source::Logistics => Payload::Shipment(shipment(rec, status, &mut identities)?),
        Source::Service => {
            // In service records `channel` is the service channel, not acquisition.
            context.channel = rec.opt_str("acquisition_channel")?;
            Payload::Ticket(ticket(rec, &event_type, &mut identities)?)
        }
        Source::Marketing => Payload::AdSpend(ad_spend(rec)?),
        Source::Tracking => {
            return Err(Rejection::whole(
                Reason::UnknownSource,
                "tracking records use the Segment-compatible endpoints",
            ));
        }
    };
    context.private_domain =
        context.private_domain || env.is_private_channel(context.channel.as_deref());
    let occurred_at = rec.time("occurred_at")?;
    let sent_at = rec.opt_time("sent_at")?;
    let source_event_id = rec.opt_str("event_id")?;
    Ok(Event {
        event_id: match &source_event_id {
            Some(id) => id.clone(),
            None => env.derived_id(source),
        },
        event_type,
        source,
        source_event_id,
        occurred_at,
        sent_at,
        received_at: env.received_at,
        event_time: corrected_event_time(occurred_at, sent_at, env.received_at),
        identities,
        context,
        payload,
        person_id: None,
    })
}

/// Sets an identifier that the payload repeats: [`identities`] read it from the same
/// member already, so it is copied only when that left something else (an allocation and
/// a free per event saved).
fn set_id(id: &mut Option<String>, value: &str) {
    if id.as_deref() != Some(value) {
        *id = Some(value.to_owned());
    }
}

fn identities(rec: &Record<'_>) -> Result<Identities, Rejection> {
    Ok(Identities {
        crm_customer_id: rec.opt_str("customer_id")?,
        user_id: rec.opt_str("user_id")?,
        anonymous_id: rec.opt_str("anonymous_id")?,
        phone_hash: match rec.phone_hash("mobile")? {
            Some(h) => Some(h),
            None => rec.phone_hash("phone")?,
        },
        email_hash: rec.email_hash("email")?,
        order_id: rec.opt_str("order_id")?,
        waybill_no: rec.opt_str("waybill_no")?,
        ticket_id: rec.opt_str("ticket_id")?,
    })
}

fn context(rec: &Record<'_>) -> Result<Context, Rejection> {
    let mut experiments = Vec::new();
    for (i, v) in rec.elements("experiments")?.into_iter().enumerate() {
        let e = rec.nested("experiments", i, v)?;
        experiments.push(ExperimentAssignment {
            experiment_id: e.str("experiment_id")?,
            variant: e.str("variant")?,
        });
    }
    Ok(Context {
        channel: rec.opt_str("channel")?,
        campaign: rec.opt_str("campaign")?,
        utm_source: rec.opt_str("utm_source")?,
        utm_medium: rec.opt_str("utm_medium")?,
        utm_campaign: rec.opt_str("utm_campaign")?,
        utm_term: rec.opt_str("utm_term")?,
        utm_content: rec.opt_str("utm_content")?,
        private_domain: rec.opt_bool("private_domain")?.unwrap_or(false),
        experiments,
        device_type: rec.opt_str("device_type")?,
        os: rec.opt_str("os")?,
        app_version: rec.opt_str("app_version")?,
        locale: rec.opt_str("locale")?,
        ip_country: None,
    })
}

fn customer(rec: &Record<'_>, ids: &mut Identities) -> Result<CustomerPayload, Rejection> {
    let customer_id = rec.str("customer_id")?;
    set_id(&mut ids.crm_customer_id, &customer_id);
    let mut consents = Vec::new();
    for (i, v) in rec.elements("consents")?.into_iter().enumerate() {
        let c = rec.nested("consents", i, v)?;
        consents.push(Consent {
            purpose: c.str("purpose")?,
            granted: c.opt_bool("granted")?.ok_or_else(|| {
                Rejection::field(Reason::MissingField, c.path_of("granted"), "is required")
            })?,
        });
    }
    Ok(CustomerPayload {
        customer_id,
        registered_at: rec.opt_time("registered_at")?,
        registration_channel: rec.opt_str("registration_channel")?,
        tier: rec.opt_str("tier")?,
        previous_tier: rec.opt_str("previous_tier")?,
        points_delta: rec.opt_i64("points_delta")?,
        points_balance: rec.opt_i64("points_balance")?,
        consents,
        gender: rec.opt_str("gender")?,
        birth_year: rec.opt_i32("birth_year")?,
        province: rec.opt_str("province")?,
        city: rec.opt_str("city")?,
    })
}

fn order(
    rec: &Record<'_>,
    status: String,
    ids: &mut Identities,
) -> Result<OrderPayload, Rejection> {
    let order_id = rec.str("order_id")?;
    set_id(&mut ids.order_id, &order_id);
    let elements = rec.elements("lines")?;
    let mut lines = Vec::with_capacity(elements.len());
    for (i, v) in elements.into_iter().enumerate() {
        let l = rec.nested("lines", i, v)?;
        let quantity = l.i32("quantity")?;
        if quantity < 0 {
            return Err(l.invalid("quantity", "must not be negative"));
        }
        let refunded_quantity = l.opt_i32("refunded_quantity")?.unwrap_or(0);
        if !(0..=quantity).contains(&refunded_quantity) {
            return Err(l.invalid("refunded_quantity", "must be between 0 and quantity"));
        }
        lines.push(OrderLine {
            line_no: l.opt_i32("line_no")?.unwrap_or(i as i32 + 1),
            sku: l.str("sku")?,
            product_id: l.opt_str("product_id")?,
            product_name: l.opt_str("product_name")?,
            category: l.opt_str("category")?,
            quantity,
            unit_price_minor: l.amount("unit_price")?,
            discount_minor: l.amount_or_zero("discount")?,
            coupon_code: l.opt_str("coupon_code")?,
            refunded_quantity,
        });
    }
    let subtotal = match rec.opt_amount("subtotal")? {
        Some(v) => v,
        None => lines
            .iter()
            .map(|l| l.unit_price_minor.saturating_mul(i64::from(l.quantity)))
            .fold(0i64, i64::saturating_add),
    };
    let refund = rec.amount_or_zero("refund_amount")?;
    if refund < 0 {
        return Err(rec.invalid("refund_amount", "must not be negative"));
    }
    if status == "refunded" && refund == 0 {
        return Err(Rejection::field(
            Reason::MissingField,
            "refund_amount",
            "is required for order.refunded",
        ));
    }
    Ok(OrderPayload {
        order_id,
        status,
        currency: rec.opt_str("currency")?.unwrap_or_else(|| "CNY".into()),
        subtotal_minor: subtotal,
        discount_minor: rec.amount_or_zero("discount")?,
        shipping_minor: rec.amount_or_zero("shipping_fee")?,
        total_minor: rec.amount("total")?,
        refund_minor: refund,
        refund_reason: rec.opt_str("refund_reason")?,
        payment_method: rec.opt_str("payment_method")?,
        coupon_codes: rec.strings("coupon_codes")?,
        store_id: rec.opt_str("store_id")?,
        lines,
    })
}

fn shipment(
    rec: &Record<'_>,
    status: String,
    ids: &mut Identities,
) -> Result<ShipmentPayload, Rejection> {
    let waybill_no = rec.str("waybill_no")?;
    set_id(&mut ids.waybill_no, &waybill_no);
    if ids.phone_hash.is_none() {
        ids.phone_hash = rec.phone_hash("receiver_mobile")?;
    }
    Ok(ShipmentPayload {
        waybill_no,
        order_id: rec.opt_str("order_id")?,
        carrier: rec.str("carrier")?,
        status,
        exception_code: rec.opt_str("exception_code")?,
        exception_reason: rec.opt_str("exception_reason")?,
        warehouse: rec.opt_str("warehouse")?,
        destination_city: rec.opt_str("destination_city")?,
        promised_at: rec.opt_time("promised_at")?,
    })
}

fn ticket(
    rec: &Record<'_>,
    event_type: &str,
    ids: &mut Identities,
) -> Result<TicketPayload, Rejection> {
    let ticket_id = rec.str("ticket_id")?;
    set_id(&mut ids.ticket_id, &ticket_id);
    let csat = rec.opt_i32("csat_score")?;
    if let Some(s) = csat
        && !(1..=5).contains(&s)
    {
        return Err(rec.invalid("csat_score", "must be 1 to 5"));
    }
    if event_type == "ticket.rated" && csat.is_none() {
        return Err(Rejection::field(
            Reason::MissingField,
            "csat_score",
            "is required for ticket.rated",
        ));
    }
    let status = match event_type {
        "ticket.opened" => "opened",
        "ticket.first_response" => "first_response",
        "ticket.resolved" => "resolved",
        "ticket.rated" => "rated",
        _ => "complaint",
    };
    Ok(TicketPayload {
        ticket_id,
        status: status.into(),
        channel: rec.opt_str("channel")?,
        category: rec.opt_str("category")?,
        priority: rec.opt_str("priority")?,
        agent_id: rec.opt_str("agent_id")?,
        opened_at: rec.opt_time("opened_at")?,
        first_response_at: rec.opt_time("first_response_at")?,
        resolved_at: rec.opt_time("resolved_at")?,
        csat_score: csat,
        is_complaint: event_type == "complaint.filed"
            || rec.opt_bool("is_complaint")?.unwrap_or(false),
        complaint_reason: rec.opt_str("complaint_reason")?,
    })
}

fn ad_spend(rec: &Record<'_>) -> Result<AdSpendPayload, Rejection> {
    let spend = rec.amount("spend")?;
    if spend < 0 {
        return Err(rec.invalid("spend", "must not be negative"));
    }
    let non_negative = |name: &str| -> Result<i64, Rejection> {
        let v = rec.opt_i64(name)?.unwrap_or(0);
        if v < 0 {
            return Err(rec.invalid(name, "must not be negative"));
        }
        Ok(v)
    };
    Ok(AdSpendPayload {
        channel: rec.str("channel")?,
        campaign_id: rec.str("campaign_id")?,
        campaign_name: rec.opt_str("campaign_name")?,
        day: rec.day("day")?,
        spend_minor: spend,
        currency: rec.opt_str("currency")?.unwrap_or_else(|| "CNY".into()),
        impressions: non_negative("impressions")?,
        clicks: non_negative("clicks")?,
    })
}
