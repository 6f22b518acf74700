//! Segment-compatible tracking calls (`track`, `identify`, `page`, `screen`, `alias`,
//! `group`) to canonical events of source `tracking`, following Segment's spec:
//!
//! - `messageId` is the event id (at most 100 characters); without one, the id is derived
//!   from the call's bytes;
//! - `userId` or `anonymousId` is required (for `alias`: `userId` and `previousId`);
//!   `track` needs `event`, `group` needs `groupId`;
//! - `originalTimestamp` (else `timestamp`) is the event time, `sentAt` the send time; the
//!   corrected event time follows Segment's skew rule;
//! - `context.campaign` gives the UTM fields, `context.page` the page fields, and the
//!   custom `context.channel`, `context.private_domain` and `context.experiments` the
//!   zhongtai context;
//! - e-commerce properties of Segment's e-commerce spec (`product_id`, `sku`, `category`,
//!   `price`, `quantity`, `revenue`/`total`, `currency`, `order_id`, and `experiment_id`
//!   with `variation_name`/`variation_id` on `Experiment Viewed`) are lifted into typed
//!   fields; Segment amounts are major units (yuan) and are rounded to minor units;
//! - e-mails and phones in `traits`, `context.traits` and `properties` are hashed into the
//!   identities and removed, with names and addresses in traits, before anything is kept.

use serde_json::{Map, Value};
use zt_model::*;

use super::Envelope;
use crate::error::{Reason, Rejection};
use crate::fields::{Ctx, Record, hash_identifier, parse_rfc3339_ms};

const KINDS: [&str; 6] = ["track", "identify", "page", "screen", "alias", "group"];

/// Keys holding phones or e-mails; removed from properties and traits everywhere.
const CONTACT_KEYS: &[&str] = &[
    "email",
    "e_mail",
    "phone",
    "phone_number",
    "phonenumber",
    "mobile",
    "mobile_phone",
    "mobilephone",
    "tel",
    "telephone",
];
/// Further personal data removed from traits.
const TRAIT_PII_KEYS: &[&str] = &[
    "name",
    "first_name",
    "firstname",
    "last_name",
    "lastname",
    "address",
    "birthday",
    "id_card",
];

/// Longest key folded on the stack ([`fold`]); longer ones are folded into a `String`.
const FOLD_MAX: usize = 32;

/// Calls `f` with key `k` lowercased, without `-`, and also without `_` unless
/// `keep_underscores`. An ASCII key of up to [`FOLD_MAX`] bytes is folded on the stack:
/// every key of every tracking call's properties, context and traits is checked, and
/// folding each into new strings (one per contact key compared) was most of
/// normalising a `track` call.
fn fold<R>(k: &str, keep_underscores: bool, f: impl FnOnce(&[u8]) -> R) -> R {
    let mut buf = [0u8; FOLD_MAX];
    let mut n = 0;
    for b in k.bytes() {
        if !b.is_ascii() || n == FOLD_MAX {
            // Non-ASCII lowercasing (which can yield ASCII, or several characters).
            let folded: String = k
                .chars()
                .filter(|c| *c != '-')
                .flat_map(char::to_lowercase)
                .filter(|c| keep_underscores || *c != '_')
                .collect();
            return f(folded.as_bytes());
        }
        if b != b'-' && (keep_underscores || b != b'_') {
            buf[n] = b.to_ascii_lowercase();
            n += 1;
        }
    }
    f(&buf[..n])
}

/// True when `k`, lowercased and without `-` and `_`, is a contact key without `_`.
fn is_contact_key(k: &str) -> bool {
    fold(k, false, |bare| {
        CONTACT_KEYS
            .iter()
            .any(|c| c.bytes().filter(|b| *b != b'_').eq(bare.iter().copied()))
    })
}

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

/// Normalises one Segment call.
pub(crate) fn normalize(
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The first implementation (a folded `String` per key and two per contact key
    /// compared), kept as the oracle of [`fold`].
    fn reference_norm_key(k: &str) -> String {
        k.chars()
            .filter(|c| *c != '-')
            .flat_map(char::to_lowercase)
            .collect::<String>()
    }

    fn reference_is_contact_key(k: &str) -> bool {
        let n = reference_norm_key(k);
        CONTACT_KEYS
            .iter()
            .any(|c| n == *c || n.replace('_', "") == c.replace('_', ""))
    }

    #[test]
    fn keys_fold_as_the_reference_does() {
        let parts = [
            "", "e", "E", "mail", "-", "_", "Phone", "NUMBER", "mobile", "tel", "e-", "_mail",
            "ephone", "first", "name", "Last", "İ", "\u{212A}", "ß", "Ｅ", "x",
        ];
        let mut keys: Vec<String> = Vec::new();
        for a in parts {
            for b in parts {
                for c in parts {
                    keys.push(format!("{a}{b}{c}"));
                }
            }
        }
        // Past the stack buffer, with and without a contact key at the end.
        keys.push(format!("{}phone", "-".repeat(40)));
        keys.push(format!("{}Phone_Number", "a".repeat(40)));
        keys.push("-".repeat(FOLD_MAX + 1) + "tel");
        let (mut contacts, mut traits) = (0, 0);
        for k in &keys {
            let want = reference_is_contact_key(k);
            assert_eq!(is_contact_key(k), want, "{k:?}");
            contacts += usize::from(want);
            let n = reference_norm_key(k);
            let want_trait = TRAIT_PII_KEYS.contains(&n.as_str());
            let got_trait = fold(k, true, |f| {
                TRAIT_PII_KEYS.iter().any(|t| t.as_bytes() == f)
            });
            assert_eq!(got_trait, want_trait, "{k:?}");
            traits += usize::from(want_trait);
            assert_eq!(
                fold(k, false, |bare| bare == b"email"),
                n.replace('_', "") == "email",
                "{k:?}"
            );
        }
        assert!(
            contacts > 50 && traits > 10,
            "{contacts} contact, {traits} trait keys"
        );
    }
}
