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

use std::borrow::Cow;

use serde_json::Value;
use serde_json::value::RawValue;
use zt_model::*;

use super::Envelope;
use crate::error::{Reason, Rejection};
use crate::fields::{Ctx, Object, Record, hash_identifier_into, parse_rfc3339_ms, plain_string};
use crate::scan;

use super::segment_parts::{Parts, context_object};

pub(super) const KINDS: [&str; 6] = ["track", "identify", "page", "screen", "alias", "group"];

/// Keys holding phones or e-mails; removed from properties and traits everywhere.
pub(super) const CONTACT_KEYS: &[&str] = &[
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
pub(super) const TRAIT_PII_KEYS: &[&str] = &[
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
pub(super) fn fold<R>(k: &str, keep_underscores: bool, f: impl FnOnce(&[u8]) -> R) -> R {
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

/// What a contact key holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Contact {
    Email,
    Phone,
}

/// The kind of contact key `k` is: `k` lowercased and without `-` and `_` is a contact
/// key without `_`; `email` (or `e_mail`, `E-Mail`, ...) holds an e-mail, the others a
/// phone. One fold of the key answers both.
pub(super) fn contact_kind(k: &str) -> Option<Contact> {
    // Every contact key starts with e, p, m or t once folded: most keys are told apart
    // by their first letter, without folding them.
    if let Some(&b) = k.as_bytes().iter().find(|b| **b != b'-' && **b != b'_')
        && b.is_ascii()
        && !matches!(b.to_ascii_lowercase(), b'e' | b'p' | b'm' | b't')
    {
        return None;
    }
    fold(k, false, |bare| {
        if bare == b"email" {
            Some(Contact::Email)
        } else if CONTACT_KEYS
            .iter()
            .any(|c| c.bytes().filter(|b| *b != b'_').eq(bare.iter().copied()))
        {
            Some(Contact::Phone)
        } else {
            None
        }
    })
}

/// True when `k` is a contact key ([`contact_kind`]).
pub(super) fn is_contact_key(k: &str) -> bool {
    contact_kind(k).is_some()
}

/// True when `k`, lowercased and without `-`, is one of the further personal keys of
/// traits.
pub(super) fn is_trait_pii_key(k: &str) -> bool {
    fold(k, true, |n| {
        TRAIT_PII_KEYS.iter().any(|t| t.as_bytes() == n)
    })
}

/// The string raw JSON `raw` holds, `None` for any other value.
fn string(raw: &str) -> Option<Cow<'_, str>> {
    if let Some(s) = plain_string(raw) {
        return Some(Cow::Borrowed(s));
    }
    if !raw.starts_with('"') {
        return None;
    }
    serde_json::from_str::<String>(raw).ok().map(Cow::Owned)
}

/// The number raw JSON `raw` holds, `None` for any other value.
fn number(raw: &str) -> Option<serde_json::Number> {
    match raw.as_bytes().first()? {
        b'-' | b'0'..=b'9' => serde_json::from_str(raw).ok(),
        _ => None,
    }
}

/// A scalar as text: a non-empty string, or a number as serde_json prints it.
fn scalar(raw: &str) -> Option<String> {
    scalar_text(raw).map(Cow::into_owned)
}

/// [`scalar`], borrowed when it is a string without escapes (a contact that is hashed,
/// not kept, needs no `String` of its own).
pub(super) fn scalar_text(raw: &str) -> Option<Cow<'_, str>> {
    if let Some(s) = string(raw) {
        return (!s.is_empty()).then_some(s);
    }
    number(raw).map(|n| Cow::Owned(n.to_string()))
}

/// The member `k` of `m` as text ([`scalar`]).
fn s_of(m: Option<&Object<'_>>, k: &str) -> Option<String> {
    scalar(m?.get(k)?)
}

/// The raw value `raw` as text ([`scalar_text`]), when there is one.
fn text_of(raw: Option<&str>) -> Option<Cow<'_, str>> {
    scalar_text(raw?)
}

fn money(raw: Option<&str>) -> Option<i64> {
    let raw = raw?;
    let x: f64 = match string(raw) {
        Some(s) => s.trim().parse().ok()?,
        None => number(raw)?.as_f64()?,
    };
    let minor = (x * 100.0).round();
    (minor.is_finite() && minor.abs() < 9.0e15).then_some(minor as i64)
}

fn int(raw: Option<&str>) -> Option<i32> {
    let raw = raw?;
    match string(raw) {
        Some(s) => s.trim().parse().ok(),
        None => number(raw)?.as_i64().and_then(|x| i32::try_from(x).ok()),
    }
}

/// The elements of the JSON array `raw`, each object element read as an [`Object`]
/// (from what the scan listed, when it did); `None` when `raw` is not an array.
fn elements<'t>(
    raw: &'t str,
    nested: Option<scan::View<'t, 't>>,
) -> Option<Vec<(&'t str, Option<Object<'t>>)>> {
    if !raw.starts_with('[') {
        return None;
    }
    let as_object = |el: &'t str| {
        el.starts_with('{')
            .then(|| Object::parse(el, nested))
            .flatten()
    };
    if let Some(items) = nested.as_ref().and_then(|n| n.array(raw)) {
        return Some(items.iter().map(|el| (*el, as_object(el))).collect());
    }
    if let Some(items) = scan::array(raw) {
        let object = |m: scan::Members<'t>| Object::of(Cow::Owned(m), None);
        return Some(
            items
                .into_iter()
                .map(|(el, m)| (el, m.map(object)))
                .collect(),
        );
    }
    let items: Vec<&RawValue> = serde_json::from_str(raw).ok()?;
    Some(
        items
            .into_iter()
            .map(|v| (v.get(), as_object(v.get())))
            .collect(),
    )
}

/// Writes `o` as compact JSON text without contact keys at any depth and, for `traits`,
/// without the further personal keys at its top level. Members keep their order and
/// their values' text; a repeated name is written once, with its last value (what a value
/// tree keeps).
fn write_stripped(o: &Object<'_>, traits: bool, out: &mut String) {
    out.push('{');
    let mut first = true;
    for (k, raw, last) in o.members() {
        if !last || is_contact_key(k) || (traits && is_trait_pii_key(k)) {
            continue;
        }
        if !first {
            out.push(',');
        }
        first = false;
        if k.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20) {
            out.push_str(&Value::from(k).to_string());
        } else {
            out.push('"');
            out.push_str(k);
            out.push('"');
        }
        out.push(':');
        write_value(raw, o.nested(), out);
    }
    out.push('}');
}

/// Writes the JSON value `raw` with contact keys removed from the objects in it.
fn write_value<'t>(raw: &'t str, nested: Option<scan::View<'t, 't>>, out: &mut String) {
    // `raw` is one valid JSON value (the scan or serde_json read it), so an object or an
    // array in it always reads; were one not to, it is written empty rather than as text
    // whose contact keys were not removed.
    match raw.as_bytes().first() {
        Some(b'{') => match Object::parse(raw, nested) {
            Some(o) => write_stripped(&o, false, out),
            None => out.push_str("{}"),
        },
        Some(b'[') => {
            out.push('[');
            let items = elements(raw, nested).unwrap_or_default();
            for (i, (el, object)) in items.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                match object {
                    Some(o) => write_stripped(&o, false, out),
                    None => write_value(el, nested, out),
                }
            }
            out.push(']');
        }
        _ => out.push_str(raw),
    }
}

/// The JSON object text of the call's member `name`: `None` when absent or null, a
/// rejection when it is not an object.
fn object_text<'a>(rec: &Record<'a>, name: &str) -> Result<Option<Cow<'a, str>>, Rejection> {
    match rec.text(name) {
        None => Ok(None),
        Some(t) if t.starts_with('{') => Ok(Some(t)),
        Some(_) => Err(rec.invalid(name, "must be an object")),
    }
}

/// The object of [`object_text`] (empty when absent), looked up in `nested` first.
fn object<'t>(text: Option<&'t str>, nested: Option<scan::View<'t, 't>>) -> Object<'t> {
    text.and_then(|t| Object::parse(t, nested))
        .unwrap_or_default()
}

/// An event of source `tracking` with every field empty: what [`normalize_into`] first
/// writes over.
pub(crate) fn empty_event() -> Event {
    Event {
        event_id: String::new(),
        event_type: String::new(),
        source: Source::Tracking,
        source_event_id: None,
        occurred_at: 0,
        sent_at: None,
        received_at: 0,
        event_time: 0,
        identities: Identities::default(),
        context: Context::default(),
        payload: Payload::Tracking(TrackingPayload::default()),
        person_id: None,
    }
}

/// Writes `v` over the string `slot` held, keeping its buffer.
fn set(slot: &mut String, v: &str) {
    slot.clear();
    slot.push_str(v);
}

/// Writes `v` over the optional string `slot` held, keeping its buffer when both are
/// present.
fn put(slot: &mut Option<String>, v: Option<&str>) {
    match (slot.as_mut(), v) {
        (Some(s), Some(v)) => set(s, v),
        (None, Some(v)) => *slot = Some(v.to_owned()),
        (_, None) => *slot = None,
    }
}

/// Normalises one Segment call, reading its `context`, `properties` and `traits` from
/// their JSON text (a lazily read call's text is borrowed from the request body), written
/// over `out`, keeping the buffers of its strings: ingest
/// normalises a request's calls one after another into one event (encoding each before
/// the next), so the calls after the first allocate next to nothing. (A call's some 20
/// strings, each allocated and freed, were a tenth of ingest's time under load, the
/// allocator's memory being cold there.) Every field of `out` is written on success; on a
/// rejection `out` holds a mix of this call and the last, and is only written over again.
pub(crate) fn normalize_into(
    rec: Record<'_>,
    endpoint_kind: Option<&str>,
    ctx: &Ctx<'_>,
    env: Envelope<'_>,
    out: &mut Event,
    read: Option<&Parts<'_>>,
) -> Result<(), Rejection> {
    let kind: Cow<'_, str> = match endpoint_kind {
        Some(k) => Cow::Borrowed(k),
        None => rec.str_text("type")?,
    };
    if !KINDS.contains(&kind.as_ref()) {
        return Err(Rejection::field(
            Reason::UnknownEventType,
            "type",
            "must be track, identify, page, screen, alias or group",
        ));
    }
    let message_id = rec.opt_text("messageId")?;
    if message_id.as_ref().is_some_and(|m| m.chars().count() > 100) {
        return Err(rec.invalid("messageId", "must be at most 100 characters"));
    }
    let user_id = rec.opt_text("userId")?;
    let anonymous_id = rec.opt_text("anonymousId")?;
    if user_id.is_none() && anonymous_id.is_none() {
        return Err(Rejection::field(
            Reason::MissingField,
            "userId",
            "userId or anonymousId is required",
        ));
    }
    let time = |name: &str| -> Result<Option<i64>, Rejection> {
        let Some(raw) = rec.text(name) else {
            return Ok(None);
        };
        match string(&raw) {
            Some(s) => parse_rfc3339_ms(&s)
                .map(Some)
                .ok_or_else(|| rec.invalid(name, "is not an ISO 8601 time with offset")),
            None => Err(rec.invalid(name, "must be an ISO 8601 string")),
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

    let context_text = object_text(&rec, "context")?;
    let properties_text = object_text(&rec, "properties")?;
    let traits_text = object_text(&rec, "traits")?;
    let nested = rec.scanned();
    // What is read from the three objects: as the scan of the body found it, else by
    // look-ups in them.
    let objects = read.is_none().then(|| {
        let context = object(context_text.as_deref(), nested);
        let context_traits = context_object(&context, "traits");
        let properties = object(properties_text.as_deref(), nested);
        let traits = object(traits_text.as_deref(), nested);
        (context, context_traits, properties, traits)
    });
    let looked_up = objects
        .as_ref()
        .map(|(c, ct, p, t)| Parts::read(c, ct.as_ref(), p, t));
    let Some(parts) = read.or(looked_up.as_ref()) else {
        // Never taken: one of the two is there.
        return Err(Rejection::whole(
            Reason::InvalidValue,
            "the call's objects were not read",
        ));
    };
    let (c, p) = (&parts.context, &parts.properties);

    // Identities: hash contact data before anything else touches it.
    // Group traits describe the group, not the caller: their contacts are not the user's.
    let own_traits = (kind != "group").then_some(&parts.traits);
    let (mut phone_src, mut email_src) = (None, None);
    for (m, prefix) in [
        (own_traits, "traits"),
        (Some(&c.traits), "context.traits"),
        (Some(&p.contacts), "properties"),
    ] {
        let Some(m) = m else { continue };
        if phone_src.is_none() {
            phone_src = m.phone.as_ref().map(|(k, v)| (prefix, *k, v));
        }
        if email_src.is_none() {
            email_src = m.email.as_ref().map(|(k, v)| (prefix, *k, v));
        }
    }
    // The field (`traits.email`) is formatted only for an error: hashing again with it
    // costs nothing in the common case, formatting it for every call did. The hashes are
    // written into the event's own strings.
    let hash = |found: Option<(&str, &str, &Cow<'_, str>)>,
                phone: bool,
                slot: &mut Option<String>|
     -> Result<(), Rejection> {
        let Some((prefix, k, v)) = found else {
            *slot = None;
            return Ok(());
        };
        let s = slot.get_or_insert_with(String::new);
        hash_identifier_into(ctx.hasher, v, phone, "", s)
            .or_else(|_| hash_identifier_into(ctx.hasher, v, phone, &format!("{prefix}.{k}"), s))
    };
    hash(phone_src, true, &mut out.identities.phone_hash)?;
    hash(email_src, false, &mut out.identities.email_hash)?;
    let traits_customer_id = parts.customer_id.and_then(scalar_text);

    let channel = text_of(c.channel)
        .or_else(|| text_of(p.channel))
        .or_else(|| text_of(c.campaign_source));
    let mut experiments = std::mem::take(&mut out.context.experiments);
    experiments.clear();
    if let Some(raw) = c.experiments {
        if let Some(items) = elements(raw, nested) {
            for (i, (_, m)) in items.into_iter().enumerate() {
                match (
                    s_of(m.as_ref(), "experiment_id"),
                    s_of(m.as_ref(), "variant"),
                ) {
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
        } else if let Some(m) = raw
            .starts_with('{')
            .then(|| Object::parse(raw, nested))
            .flatten()
        {
            // Experiment id to variant, in a value tree's (sorted) key order.
            let mut pairs: Vec<(&str, String)> = m
                .members()
                .filter(|(_, _, last)| *last)
                .filter_map(|(k, raw, _)| {
                    raw.starts_with('"')
                        .then(|| string(raw))
                        .flatten()
                        .map(|v| (k, v.into_owned()))
                })
                .collect();
            pairs.sort_by(|a, b| a.0.cmp(b.0));
            experiments.extend(pairs.into_iter().map(|(k, variant)| ExperimentAssignment {
                experiment_id: k.to_owned(),
                variant,
            }));
        }
    }

    let name = match kind.as_ref() {
        "track" => Some(rec.str_text("event")?),
        "page" | "screen" => rec.opt_text("name")?,
        _ => None,
    };
    let previous_id = rec.opt_text("previousId")?;
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
    let group_id = rec.opt_text("groupId")?;
    if kind == "group" && group_id.is_none() {
        return Err(Rejection::field(
            Reason::MissingField,
            "groupId",
            "is required for group",
        ));
    }

    let (experiment_id, variant) = if name.as_deref() == Some("Experiment Viewed") {
        let e = text_of(p.experiment_id);
        let v = text_of(p.variation_name).or_else(|| text_of(p.variation_id));
        if let (Some(e), Some(v)) = (&e, &v) {
            experiments.push(ExperimentAssignment {
                experiment_id: e.as_ref().to_owned(),
                variant: v.as_ref().to_owned(),
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
    let private_domain = c.private_domain == Some("true")
        || p.private_domain == Some("true")
        || env.is_private_channel(channel.as_deref());

    // Every field is written below; the patterns name each one (no `..`), so a field added
    // to the model and not written here does not compile.
    let Event {
        event_id,
        event_type,
        source,
        source_event_id,
        occurred_at: occurred_at_out,
        sent_at: sent_at_out,
        received_at,
        event_time: event_time_out,
        identities,
        context: context_out,
        payload,
        person_id,
    } = out;
    match &message_id {
        Some(m) => set(event_id, m),
        None => *event_id = env.derived_id(Source::Tracking),
    }
    set(event_type, &kind);
    *source = Source::Tracking;
    put(source_event_id, message_id.as_deref());
    *occurred_at_out = occurred_at;
    *sent_at_out = sent_at;
    *received_at = env.received_at;
    *event_time_out = event_time;
    *person_id = None;

    let Identities {
        crm_customer_id,
        user_id: user_id_out,
        anonymous_id: anonymous_id_out,
        // Written by `hash` above.
        phone_hash: _,
        email_hash: _,
        order_id,
        waybill_no,
        ticket_id,
    } = identities;
    put(crm_customer_id, traits_customer_id.as_deref());
    put(user_id_out, user_id.as_deref());
    put(anonymous_id_out, anonymous_id.as_deref());
    put(order_id, text_of(p.order_id).as_deref());
    *waybill_no = None;
    *ticket_id = None;

    let Context {
        channel: channel_out,
        campaign: campaign_out,
        utm_source,
        utm_medium,
        utm_campaign,
        utm_term,
        utm_content,
        private_domain: private_domain_out,
        experiments: experiments_out,
        device_type,
        os,
        app_version,
        locale,
        ip_country,
    } = context_out;
    put(channel_out, channel.as_deref());
    put(campaign_out, text_of(c.campaign_name).as_deref());
    put(utm_source, text_of(c.campaign_source).as_deref());
    put(utm_medium, text_of(c.campaign_medium).as_deref());
    put(utm_campaign, text_of(c.campaign_name).as_deref());
    put(utm_term, text_of(c.campaign_term).as_deref());
    put(utm_content, text_of(c.campaign_content).as_deref());
    *private_domain_out = private_domain;
    *experiments_out = experiments;
    put(device_type, text_of(c.device_type).as_deref());
    put(os, text_of(c.os_name).as_deref());
    put(app_version, text_of(c.app_version).as_deref());
    put(locale, text_of(c.locale).as_deref());
    *ip_country = None;

    // The payload's strings are written over in place (a payload of another kind is
    // replaced first).
    if !matches!(payload, Payload::Tracking(_)) {
        *payload = Payload::Tracking(TrackingPayload::default());
    }
    let Payload::Tracking(tp) = payload else {
        // Never taken: the payload was made a tracking payload just above.
        return Err(Rejection::whole(
            Reason::InvalidValue,
            "the event's payload is not a tracking payload",
        ));
    };
    let TrackingPayload {
        kind: kind_out,
        name: name_out,
        properties_json,
        traits_json,
        previous_id: previous_id_out,
        group_id: group_id_out,
        product_id,
        sku,
        category,
        price_minor,
        quantity,
        revenue_minor,
        currency,
        page_url,
        page_path,
        page_referrer,
        page_title,
        experiment_id: experiment_id_out,
        variant: variant_out,
    } = tp;
    set(kind_out, &kind);
    put(name_out, name.as_deref());
    // Written member by member without contact keys, or as they are when they have none
    // (and no repeated name or white space: [`Parts::properties_as_is`]).
    let written = |as_is: bool,
                   text: Option<&str>,
                   looked_up: Option<&Object<'_>>,
                   traits: bool,
                   out: &mut String| {
        out.clear();
        match (looked_up, as_is) {
            (Some(o), _) => write_stripped(o, traits, out),
            (None, true) => out.push_str(text.unwrap_or("{}")),
            (None, false) => write_stripped(&object(text, nested), traits, out),
        }
    };
    written(
        parts.properties_as_is,
        properties_text.as_deref(),
        objects.as_ref().map(|o| &o.2),
        false,
        properties_json,
    );
    written(
        parts.traits_as_is,
        traits_text.as_deref(),
        objects.as_ref().map(|o| &o.3),
        true,
        traits_json,
    );
    put(previous_id_out, previous_id.as_deref());
    put(group_id_out, group_id.as_deref());
    put(product_id, text_of(p.product_id).as_deref());
    put(sku, text_of(p.sku).as_deref());
    put(category, text_of(p.category).as_deref());
    *price_minor = money(p.price);
    *quantity = int(p.quantity);
    *revenue_minor = money(p.revenue.or(p.total));
    put(currency, text_of(p.currency).as_deref());
    let url = text_of(p.url).or_else(|| text_of(c.page_url));
    put(
        page_url,
        url.as_deref()
            .map(|u| u.split(['?', '#']).next().unwrap_or_default()),
    );
    put(
        page_path,
        text_of(p.path).or_else(|| text_of(c.page_path)).as_deref(),
    );
    put(
        page_referrer,
        text_of(p.referrer)
            .or_else(|| text_of(c.page_referrer))
            .as_deref(),
    );
    put(
        page_title,
        text_of(p.title)
            .or_else(|| text_of(c.page_title))
            .as_deref(),
    );
    put(experiment_id_out, experiment_id.as_deref());
    put(variant_out, variant.as_deref());
    Ok(())
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

    /// Calls that exercise every rule of the normaliser, read from their text, must
    /// normalise as the reference (value-tree) normaliser does: `segment_agrees` compares
    /// both, with the properties and traits texts compared as JSON values.
    #[test]
    fn calls_read_from_text_normalise_as_the_reference_does() {
        let base = r#""userId":"u1","messageId":"m","timestamp":"2026-01-01T00:00:00Z""#;
        let calls = [
            // Contact keys: the least key in string order wins; the last of a repeated
            // key counts, null included; numbers count.
            format!(
                r#"{{"type":"identify",{base},"traits":{{"phone":"13800138000","Mobile":"13900139000","email":"a@b.cn","E-Mail":"C@d.cn","name":"x","Address":"y","plan":"gold"}}}}"#
            ),
            format!(
                r#"{{"type":"identify",{base},"traits":{{"phone":"13800138000","phone":null,"tel":"13700137000","email":"","e_mail":"e@f.cn"}}}}"#
            ),
            format!(
                r#"{{"type":"identify",{base},"traits":{{"mobile":13812345678,"customer_id":12345,"first-name":"x","nested":{{"address":"kept","Phone":"gone"}}}}}}"#
            ),
            // Contacts in context.traits and properties, nested contacts removed at any
            // depth, escaped and odd names, repeated names written once.
            format!(
                r#"{{"type":"track","event":"Order Completed",{base},"context":{{"traits":{{"email":"t@u.cn"}},"ip":"1.2.3.4"}},"properties":{{"products":[{{"product_id":"P1","email":"x@y.cn","deep":{{"Tel":"1","k":[{{"mobile":"2"}},3,null,"s"]}}}},7,[{{"tel":"1"}}]],"a b":1,"q\"uote":"x","\u0065mail":"hidden@x.cn","line\nbreak":true,"dup":1,"dup":2,"empty":{{}},"none":[]}}}}"#
            ),
            format!(
                r#"{{"type":"track","event":"E",{base},"context":{{"traits":"not an object"}},"properties":{{"phone_number":"+86 138-0013-8000"}}}}"#
            ),
            // E-commerce fields as strings, exponents, fractions, out of range.
            format!(
                r#"{{"type":"track","event":"E",{base},"properties":{{"price":" 12.5 ","quantity":"3","total":1e2,"product_id":12345,"sku":1.50,"category":"","currency":"CN\u0059","order_id":-7}}}}"#
            ),
            format!(
                r#"{{"type":"track","event":"E",{base},"properties":{{"price":99.999,"quantity":1.5,"revenue":"x","total":5}}}}"#
            ),
            format!(
                r#"{{"type":"track","event":"E",{base},"properties":{{"price":-0,"quantity":99999999999,"revenue":1e300}}}}"#
            ),
            // Experiments: an object in key order (the last of a repeated id; strings
            // only), an array, a bad element, Experiment Viewed.
            format!(
                r#"{{"type":"track","event":"E",{base},"context":{{"experiments":{{"exp2":"b","exp1":"a","exp1":"c","exp3":5,"exp0":""}}}}}}"#
            ),
            format!(
                r#"{{"type":"track","event":"E",{base},"context":{{"experiments":[{{"experiment_id":"x","variant":"a"}},{{"experiment_id":7,"variant":"b"}}]}}}}"#
            ),
            format!(
                r#"{{"type":"track","event":"E",{base},"context":{{"experiments":[{{"experiment_id":"x","variant":"a"}},"bad"]}}}}"#
            ),
            format!(
                r#"{{"type":"track","event":"Experiment Viewed",{base},"properties":{{"experiment_id":"x","variation_id":3}}}}"#
            ),
            format!(
                r#"{{"type":"track","event":"Experiment Viewed",{base},"properties":{{"experiment_id":"x"}}}}"#
            ),
            // Channels and private domain, page fields, device, os, app, locale.
            format!(
                r#"{{"type":"page","name":"Home",{base},"context":{{"private_domain":"true","campaign":{{"source":"wecom","name":"n","medium":"m","term":"t","content":"c"}},"page":{{"url":"https://x.cn/y?q=1#h","path":"/y","referrer":"r","title":"T"}},"device":{{"type":"mobile"}},"os":{{"name":"iOS"}},"app":{{"version":"1.0"}},"locale":"zh-CN"}}}}"#
            ),
            format!(
                r#"{{"type":"screen",{base},"context":{{"channel":"app","private_domain":true}},"properties":{{"private_domain":false,"url":"a#b","channel":"x"}}}}"#
            ),
            // Group traits describe the group: removed, not hashed.
            format!(
                r#"{{"type":"group","groupId":"g1",{base},"traits":{{"email":"g@h.cn","name":"Acme","employees":35}}}}"#
            ),
            format!(r#"{{"type":"alias","previousId":"a1",{base}}}"#),
            // Wrong shapes: each names its field.
            format!(r#"{{"type":"track","event":"E",{base},"properties":[1]}}"#),
            format!(r#"{{"type":"track","event":"E",{base},"context":3}}"#),
            format!(r#"{{"type":"identify",{base},"traits":"x"}}"#),
            format!(r#"{{"type":"identify",{base},"traits":{{"phone":"12"}}}}"#),
            r#"{"type":"track","event":"E","userId":"u","timestamp":7}"#.to_owned(),
            r#"{"type":"track","event":"E","userId":"u","sentAt":"yesterday"}"#.to_owned(),
            // Null objects are absent; escapes in times; white space everywhere.
            r#"{ "type" : "track" , "event" : "E" , "userId" : "u" , "properties" : null , "context" : null , "traits" : null , "originalTimestamp" : "2026\u002d01-01T00:00:00+08:00" , "sentAt" : "2026-01-01T00:00:09Z" }"#.to_owned(),
            r#"{"type":"track","event":"E","userId":"u","properties":{ "a" : [ 1 , { "Email" : "x@y.cn" , "b" : { } } ] , "c" : "d" }}"#.to_owned(),
        ];
        for call in &calls {
            let body = format!(r#"{{"batch":[{call}]}}"#);
            assert!(
                crate::fuzzing::segment_agrees(body.as_bytes(), false, 2500),
                "read lazily: {call}"
            );
        }
        // All of them in one batch, both ways round: each call, accepted or refused, is
        // normalised into the event the one before it left (`normalize_into`).
        let mut in_turn: Vec<&str> = calls.iter().map(String::as_str).collect();
        for _ in 0..2 {
            let body = format!(r#"{{"batch":[{}]}}"#, in_turn.join(","));
            assert!(crate::fuzzing::segment_agrees(body.as_bytes(), false, 2500));
            in_turn.reverse();
        }
        // Deep nesting in properties.
        let deep = format!(
            r#"{{"type":"track","event":"E","userId":"u","properties":{{"a":{}1{}}}}}"#,
            r#"{"email":"x","b":["#.repeat(40),
            "]}".repeat(40)
        );
        assert!(crate::fuzzing::segment_agrees(deep.as_bytes(), true, 1));
        // A lone surrogate escape, which a value tree refuses (the body is malformed), is
        // left to the tree path rather than passed on as text.
        let lone = r#"{"type":"track","event":"E","userId":"u","properties":{"a":"\ud800"}}"#;
        assert!(!crate::fuzzing::segment_agrees(lone.as_bytes(), true, 1));
        assert!(serde_json::from_str::<Value>(lone).is_err());
    }

    /// The properties and traits texts: compact, in the call's member order, personal
    /// data removed at every depth, a repeated name once with its last value.
    #[test]
    fn properties_and_traits_keep_their_order_and_lose_personal_data() {
        let mapping = crate::config::Mapping::default();
        let tf = crate::fields::TimeFormat::parse("rfc3339", "+08:00").unwrap();
        let hasher = zt_model::pii::PiiHasher::new(b"salt", "86").unwrap();
        let ctx = Ctx {
            mapping: &mapping,
            time_format: &tf,
            hasher: &hasher,
        };
        let call = r#"{"type":"identify","userId":"u",
            "properties":{ "z" : 1, "dup":1, "a":{"Email":"x@y.cn","k":[1, {"tel":"2","v":"w\"\u00e9"}]}, "dup" : 2 },
            "traits":{"plan":"gold","First_Name":"x","e-mail":"x@y.cn","n\u0061me":"y","addr":{"name":"kept","phone":"13800138000"}}}"#;
        let env = Envelope {
            received_at: 0,
            raw: call.as_bytes(),
            private_channels: &[],
        };
        let ev = crate::normalize::normalize_json(Source::Tracking, call, None, &ctx, env).unwrap();
        let Payload::Tracking(t) = ev.payload else {
            panic!("a tracking payload")
        };
        assert_eq!(
            t.properties_json,
            r#"{"z":1,"a":{"k":[1,{"v":"w\"\u00e9"}]},"dup":2}"#
        );
        assert_eq!(t.traits_json, r#"{"plan":"gold","addr":{"name":"kept"}}"#);
        assert_eq!(
            ev.identities.email_hash,
            Some(hasher.hash_normalized("x@y.cn"))
        );
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
        assert!(
            CONTACT_KEYS
                .iter()
                .all(|c| matches!(c.as_bytes()[0], b'e' | b'p' | b'm' | b't')),
            "contact_kind's first-letter check"
        );
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
                contact_kind(k) == Some(Contact::Email),
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
