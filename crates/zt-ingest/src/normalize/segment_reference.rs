//! The first implementation of the Segment normaliser, kept as the oracle of
//! [`super::segment`] (the fuzz target `ingest_body` and the unit tests compare them). It
//! reads a call from a `serde_json` value tree: `context`, `properties` and `traits` are
//! taken out as maps, stripped of personal data and serialised back (keys sorted), which
//! was about half of ingesting a `track` call. The normaliser ingest uses reads the same
//! objects from their text and must give the same events, but for the key order and
//! spacing of `properties_json` and `traits_json`.

use serde_json::{Map, Value};
use zt_model::*;

use super::Envelope;
use super::segment::{KINDS, TRAIT_PII_KEYS, fold, is_contact_key};
use crate::error::{Reason, Rejection};
use crate::fields::{Ctx, Record, hash_identifier, parse_rfc3339_ms};

/// Removes contact keys (recursively) and, for traits, further personal keys.
fn strip_pii(obj: &mut Map<String, Value>, traits: bool) {
    obj.retain(|k, _| {
        !(is_contact_key(k)
            || (traits
                && fold(k, true, |n| {
                    TRAIT_PII_KEYS.iter().any(|t| t.as_bytes() == n)
                })))
    });
    for v in obj.values_mut() {
        strip_value(v);
    }
}

fn strip_value(v: &mut Value) {
    match v {
        Value::Object(inner) => strip_pii(inner, false),
        Value::Array(items) => items.iter_mut().for_each(strip_value),
        _ => {}
    }
}

fn obj(v: Option<&Value>) -> Option<&Map<String, Value>> {
    v.and_then(Value::as_object)
}

fn s_of(m: Option<&Map<String, Value>>, k: &str) -> Option<String> {
    match m?.get(k)? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Finds the first contact value of one kind in `m` (top level only).
fn contact(m: Option<&Map<String, Value>>, phone: bool) -> Option<(String, String)> {
    let m = m?;
    m.iter().find_map(|(k, v)| {
        let is_email = fold(k, false, |bare| bare == b"email");
        let wanted = if phone {
            !is_email && is_contact_key(k)
        } else {
            is_email
        };
        match v {
            Value::String(s) if wanted && !s.is_empty() => Some((k.clone(), s.clone())),
            Value::Number(n) if wanted => Some((k.clone(), n.to_string())),
            _ => None,
        }
    })
}

fn money(v: Option<&Value>) -> Option<i64> {
    let x = match v? {
        Value::Number(n) => n.as_f64()?,
        Value::String(s) => s.trim().parse().ok()?,
        _ => return None,
    };
    let minor = (x * 100.0).round();
    (minor.is_finite() && minor.abs() < 9.0e15).then_some(minor as i64)
}

fn int(v: Option<&Value>) -> Option<i32> {
    match v? {
        Value::Number(n) => n.as_i64().and_then(|x| i32::try_from(x).ok()),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Normalises one Segment call read as a value tree.
pub fn normalize(
    mut rec: Record<'_>,
    endpoint_kind: Option<&str>,
    ctx: &Ctx<'_>,
    env: Envelope<'_>,
) -> Result<Event, Rejection> {
    let kind = match endpoint_kind {
        Some(k) => k.to_owned(),
        None => rec.str("type")?,
    };
    if !KINDS.contains(&kind.as_str()) {
        return Err(Rejection::field(
            Reason::UnknownEventType,
            "type",
            "must be track, identify, page, screen, alias or group",
        ));
    }
    let message_id = rec.opt_str("messageId")?;
    if message_id.as_ref().is_some_and(|m| m.chars().count() > 100) {
        return Err(rec.invalid("messageId", "must be at most 100 characters"));
    }
    let user_id = rec.opt_str("userId")?;
    let anonymous_id = rec.opt_str("anonymousId")?;
    if user_id.is_none() && anonymous_id.is_none() {
        return Err(Rejection::field(
            Reason::MissingField,
            "userId",
            "userId or anonymousId is required",
        ));
    }
    let time = |name: &str| -> Result<Option<i64>, Rejection> {
        match rec.raw(name).as_deref() {
            None => Ok(None),
            Some(Value::String(s)) => parse_rfc3339_ms(s)
                .map(Some)
                .ok_or_else(|| rec.invalid(name, "is not an ISO 8601 time with offset")),
            Some(_) => Err(rec.invalid(name, "must be an ISO 8601 string")),
        }
    };
    let sent_at = time("sentAt")?;
    let stated = match time("originalTimestamp")? {
        Some(t) => Some(t),
        None => time("timestamp")?,
    };
    // Without a stated time the receive time is the event time: there is no device clock
    // to correct.
    let (occurred_at, event_time) = match stated {
        Some(t) => (t, corrected_event_time(t, sent_at, env.received_at)),
        None => (env.received_at, env.received_at),
    };

    let context = rec.take("context").unwrap_or(Value::Null);
    let mut context = match context {
        Value::Object(m) => m,
        Value::Null => Map::new(),
        _ => return Err(rec.invalid("context", "must be an object")),
    };
    let mut properties = match rec.take("properties") {
        None => Map::new(),
        Some(Value::Object(m)) => m,
        Some(_) => return Err(rec.invalid("properties", "must be an object")),
    };
    let mut traits = match rec.take("traits") {
        None => Map::new(),
        Some(Value::Object(m)) => m,
        Some(_) => return Err(rec.invalid("traits", "must be an object")),
    };

    // Identities: hash contact data before anything else touches it.
    let ctx_traits = obj(context.get("traits"));
    // Group traits describe the group, not the caller: their contacts are not the user's.
    let own_traits = if kind == "group" { None } else { Some(&traits) };
    let phone_src = contact(own_traits, true)
        .map(|(k, v)| (format!("traits.{k}"), v))
        .or_else(|| contact(ctx_traits, true).map(|(k, v)| (format!("context.traits.{k}"), v)))
        .or_else(|| contact(Some(&properties), true).map(|(k, v)| (format!("properties.{k}"), v)));
    let email_src = contact(own_traits, false)
        .map(|(k, v)| (format!("traits.{k}"), v))
        .or_else(|| contact(ctx_traits, false).map(|(k, v)| (format!("context.traits.{k}"), v)))
        .or_else(|| contact(Some(&properties), false).map(|(k, v)| (format!("properties.{k}"), v)));
    let phone_hash = phone_src
        .map(|(f, v)| hash_identifier(ctx.hasher, &v, true, &f))
        .transpose()?;
    let email_hash = email_src
        .map(|(f, v)| hash_identifier(ctx.hasher, &v, false, &f))
        .transpose()?;
    let traits_customer_id = s_of(Some(&traits), "customer_id");
    strip_pii(&mut traits, true);
    strip_pii(&mut properties, false);
    context.remove("traits");
    context.remove("ip");

    let campaign = obj(context.get("campaign"));
    let page = obj(context.get("page"));
    let channel = s_of(Some(&context), "channel")
        .or_else(|| s_of(Some(&properties), "channel"))
        .or_else(|| s_of(campaign, "source"));
    let mut experiments = Vec::new();
    match context.get("experiments") {
        Some(Value::Array(items)) => {
            for (i, it) in items.iter().enumerate() {
                let m = it.as_object();
                match (s_of(m, "experiment_id"), s_of(m, "variant")) {
                    (Some(experiment_id), Some(variant)) => {
                        experiments.push(ExperimentAssignment {
                            experiment_id,
                            variant,
                        })
                    }
                    _ => {
                        return Err(Rejection::field(
                            Reason::MissingField,
                            format!("context.experiments[{i}]"),
                            "needs experiment_id and variant",
                        ));
                    }
                }
            }
        }
        Some(Value::Object(m)) => {
            for (k, v) in m {
                if let Value::String(variant) = v {
                    experiments.push(ExperimentAssignment {
                        experiment_id: k.clone(),
                        variant: variant.clone(),
                    });
                }
            }
        }
        _ => {}
    }

    let name = match kind.as_str() {
        "track" => Some(rec.str("event")?),
        "page" | "screen" => rec.opt_str("name")?,
        _ => None,
    };
    let previous_id = rec.opt_str("previousId")?;
    if kind == "alias" && (previous_id.is_none() || user_id.is_none()) {
        return Err(Rejection::field(
            Reason::MissingField,
            if previous_id.is_none() {
                "previousId"
            } else {
                "userId"
            },
            "alias needs previousId and userId",
        ));
    }
    let group_id = rec.opt_str("groupId")?;
    if kind == "group" && group_id.is_none() {
        return Err(Rejection::field(
            Reason::MissingField,
            "groupId",
            "is required for group",
        ));
    }

    let p = Some(&properties);
    let (experiment_id, variant) = if name.as_deref() == Some("Experiment Viewed") {
        let e = s_of(p, "experiment_id");
        let v = s_of(p, "variation_name").or_else(|| s_of(p, "variation_id"));
        if let (Some(e), Some(v)) = (&e, &v) {
            experiments.push(ExperimentAssignment {
                experiment_id: e.clone(),
                variant: v.clone(),
            });
        } else {
            return Err(Rejection::field(
                Reason::MissingField,
                "properties.experiment_id",
                "Experiment Viewed needs experiment_id and variation_name or variation_id",
            ));
        }
        (e, v)
    } else {
        (None, None)
    };
    let private_domain = matches!(context.get("private_domain"), Some(Value::Bool(true)))
        || matches!(properties.get("private_domain"), Some(Value::Bool(true)))
        || env.is_private_channel(channel.as_deref());

    let payload = TrackingPayload {
        kind: kind.clone(),
        name,
        properties_json: Value::Object(properties.clone()).to_string(),
        traits_json: Value::Object(traits).to_string(),
        previous_id,
        group_id,
        product_id: s_of(p, "product_id"),
        sku: s_of(p, "sku"),
        category: s_of(p, "category"),
        price_minor: money(properties.get("price")),
        quantity: int(properties.get("quantity")),
        revenue_minor: money(
            properties
                .get("revenue")
                .or_else(|| properties.get("total")),
        ),
        currency: s_of(p, "currency"),
        page_url: s_of(p, "url")
            .or_else(|| s_of(page, "url"))
            .map(|u| u.split(['?', '#']).next().unwrap_or_default().to_owned()),
        page_path: s_of(p, "path").or_else(|| s_of(page, "path")),
        page_referrer: s_of(p, "referrer").or_else(|| s_of(page, "referrer")),
        page_title: s_of(p, "title").or_else(|| s_of(page, "title")),
        experiment_id,
        variant,
    };
    Ok(Event {
        event_id: message_id
            .clone()
            .unwrap_or_else(|| env.derived_id(Source::Tracking)),
        event_type: kind,
        source: Source::Tracking,
        source_event_id: message_id,
        occurred_at,
        sent_at,
        received_at: env.received_at,
        event_time,
        identities: Identities {
            crm_customer_id: traits_customer_id,
            user_id,
            anonymous_id,
            phone_hash,
            email_hash,
            order_id: s_of(p, "order_id"),
            waybill_no: None,
            ticket_id: None,
        },
        context: Context {
            channel,
            campaign: s_of(campaign, "name"),
            utm_source: s_of(campaign, "source"),
            utm_medium: s_of(campaign, "medium"),
            utm_campaign: s_of(campaign, "name"),
            utm_term: s_of(campaign, "term"),
            utm_content: s_of(campaign, "content"),
            private_domain,
            experiments,
            device_type: s_of(obj(context.get("device")), "type"),
            os: s_of(obj(context.get("os")), "name"),
            app_version: s_of(obj(context.get("app")), "version"),
            locale: s_of(Some(&context), "locale"),
            ip_country: None,
        },
        payload: Payload::Tracking(payload),
        person_id: None,
    })
}
