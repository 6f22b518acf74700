//! What the HTTP server and the replay of dead letters ([`crate::replay`]) share: the
//! per-source mappings, splitting a request body into items, the per-item checks and
//! normalisation, and the dead letters ingest writes. Keeping them in one place is what
//! makes a replay treat a kept body exactly as the endpoint treated it.

use std::borrow::Cow;
use std::collections::HashMap;

use serde_json::{Map, Value, value::RawValue};
use sha2::{Digest, Sha256};
use zt_model::pii::PiiHasher;
use zt_model::{DeadLetter, Event, Source};

use crate::config::{IngestConfig, Mapping};
use crate::error::{ConfigError, Reason, Rejection};
use crate::fields::{Ctx, Flat, TimeFormat};
use crate::normalize::segment_parts::{self, Parts};
use crate::normalize::{self, Envelope};
use crate::scan;

/// Media type of a kept JSON item or body.
pub const CONTENT_JSON: &str = "application/json";
/// Media type of a kept NDJSON body (a native request refused as a whole that was sent as
/// NDJSON), so that a replay splits it into lines again.
pub const CONTENT_NDJSON: &str = "application/x-ndjson";
/// Parameter of the media type of a single Segment call's dead letter naming the call
/// type of the endpoint it was posted to (`application/json; zt-call=track`): the body
/// need not say it, and a replay needs it.
pub const CALL_PARAM: &str = "zt-call";

/// Start of the message of a request refused for its body size. Such a body was kept cut
/// at `max_batch_bytes`, so a replay must not take it for the whole request.
pub const BODY_TOO_LARGE: &str = "request body is larger than";

/// The media type ingest records for a single Segment call of type `kind`.
pub fn call_content_type(kind: &str) -> String {
    format!("{CONTENT_JSON}; {CALL_PARAM}={kind}")
}

/// The call type recorded in a dead letter's media type, if any.
pub fn call_of_content_type(ct: &str) -> Option<&str> {
    ct.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        (k.trim() == CALL_PARAM).then(|| v.trim())
    })
}

/// Each source's mapping with its parsed time format, from `[ingest.sources]`.
pub(crate) fn source_mappings(
    cfg: &IngestConfig,
) -> Result<HashMap<Source, (Mapping, TimeFormat)>, ConfigError> {
    let mut mappings = HashMap::new();
    for source in Source::ALL {
        let mapping = cfg
            .sources
            .get(source.as_str())
            .map(|s| s.mapping.clone())
            .unwrap_or_default();
        let tf = TimeFormat::parse(&mapping.time_format, &mapping.time_zone).map_err(|reason| {
            ConfigError {
                key: format!("ingest.sources.{source}.mapping"),
                reason,
            }
        })?;
        mappings.insert(source, (mapping, tf));
    }
    Ok(mappings)
}

/// The normalisers' context for `source`.
pub(crate) fn ctx_for<'a>(
    mappings: &'a HashMap<Source, (Mapping, TimeFormat)>,
    hasher: &'a PiiHasher,
    source: Source,
) -> Ctx<'a> {
    let (mapping, tf) = &mappings[&source];
    Ctx {
        mapping,
        time_format: tf,
        hasher,
    }
}

/// One item of a request: its bytes and its parse result.
#[derive(Debug)]
pub(crate) struct Item<'a> {
    pub(crate) raw: &'a [u8],
    pub(crate) value: Result<Parsed<'a>, Rejection>,
}

/// A parsed item: a value tree, or an object read lazily from the request body
/// ([`Flat`]: native records, which are read field by field and never whole).
#[derive(Debug)]
pub(crate) enum Parsed<'a> {
    Tree(Value),
    Flat(Flat<'a>),
    /// A Segment call read in the scan of its body: its members, and what the scan read
    /// from its `context`, `properties` and `traits`
    /// ([`crate::normalize::segment_parts::read_body`]).
    Call(Flat<'a>, &'a Parts<'a>),
}

impl Parsed<'_> {
    /// The item as a value tree.
    pub(crate) fn into_value(self) -> Value {
        match self {
            Parsed::Tree(v) => v,
            Parsed::Flat(f) | Parsed::Call(f, _) => f.into_value(),
        }
    }
}

/// Parses one item: an object the scanner reads lazily, anything else (or broken JSON,
/// for its error) as a value tree. (Not serde_json's list of members: it passes on values
/// no value tree accepts, a lone surrogate escape, which the tree path refuses.)
pub(crate) fn parse_item(src: &[u8]) -> Result<Parsed<'_>, Rejection> {
    if let Ok(text) = std::str::from_utf8(src)
        && let Some(members) = crate::scan::object(text)
    {
        return Ok(Parsed::Flat(Flat::from_members(text, members)));
    }
    serde_json::from_slice(src)
        .map(Parsed::Tree)
        .map_err(|e| parse_error(&e))
}

/// One item with its own bytes (a Segment batch item, re-serialised after the batch-level
/// merge).
pub(crate) type OwnedItem = (Vec<u8>, Result<Value, Rejection>);

pub(crate) fn parse_error(e: &serde_json::Error) -> Rejection {
    Rejection::whole(
        Reason::MalformedJson,
        format!(
            "body is not valid JSON (line {}, column {})",
            e.line(),
            e.column()
        ),
    )
}

/// Whether a request's `Content-Type` announces NDJSON.
pub(crate) fn is_ndjson(content_type: &str) -> bool {
    content_type.contains("ndjson") || content_type.contains("jsonl")
}

/// Splits a native body into items: a JSON array, one JSON object, or NDJSON.
pub(crate) fn split_native(body: &[u8], ndjson: bool) -> Result<Vec<Item<'_>>, Rejection> {
    if ndjson {
        return Ok(body
            .split(|b| *b == b'\n')
            .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
            .map(|line| Item {
                raw: line,
                value: parse_item(line),
            })
            .collect());
    }
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    if first == Some(&b'[') {
        // One pass over the body when the scanner reads it; serde_json otherwise (which
        // then also words the error).
        if let Some(elements) = std::str::from_utf8(body).ok().and_then(crate::scan::array) {
            return Ok(elements
                .into_iter()
                .map(|(text, members)| Item {
                    raw: text.as_bytes(),
                    value: match members {
                        Some(m) => Ok(Parsed::Flat(Flat::from_members(text, m))),
                        None => parse_item(text.as_bytes()),
                    },
                })
                .collect());
        }
        let raws: Vec<&RawValue> = serde_json::from_slice(body).map_err(|e| parse_error(&e))?;
        Ok(raws
            .into_iter()
            .map(|r| Item {
                raw: r.get().as_bytes(),
                value: parse_item(r.get().as_bytes()),
            })
            .collect())
    } else {
        Ok(vec![Item {
            raw: body,
            value: Ok(parse_item(body)?),
        }])
    }
}

/// Merges batch-level `context` and `integrations` into an item (the item's keys win) and
/// gives it the batch's `sentAt` when it has none.
fn merge_batch_level(item: &mut Map<String, Value>, batch: &Map<String, Value>) {
    for field in ["context", "integrations"] {
        if let Some(Value::Object(outer)) = batch.get(field) {
            let entry = item
                .entry(field)
                .or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(inner) = entry {
                for (k, v) in outer {
                    inner.entry(k.clone()).or_insert_with(|| v.clone());
                }
            }
        }
    }
    if let Some(sent) = batch.get("sentAt")
        && !item.contains_key("sentAt")
    {
        item.insert("sentAt".into(), sent.clone());
    }
}

/// Splits a parsed Segment body into calls: the body itself for a single call (`single`),
/// else the items of its `batch` array merged with the batch-level fields. Items past
/// `max_batch_events` are rejected one by one (Segment accepts the request and drops
/// them). `Err` refuses the request as a whole.
pub(crate) fn split_segment(
    body: &[u8],
    value: Value,
    single: bool,
    max_batch_events: usize,
) -> Result<Vec<OwnedItem>, Rejection> {
    let mut owned: Vec<OwnedItem> = Vec::new();
    match (single, value) {
        (true, v @ Value::Object(_)) => owned.push((body.to_vec(), Ok(v))),
        (false, Value::Object(mut batch)) => {
            let items = match batch.remove("batch") {
                Some(Value::Array(items)) => items,
                _ => {
                    return Err(Rejection::field(
                        Reason::MissingField,
                        "batch",
                        "must be an array of calls",
                    ));
                }
            };
            for item in items {
                match item {
                    Value::Object(mut m) => {
                        merge_batch_level(&mut m, &batch);
                        let v = Value::Object(m);
                        owned.push((serde_json::to_vec(&v).unwrap_or_default(), Ok(v)));
                    }
                    other => {
                        let rej = Rejection::field(
                            Reason::WrongType,
                            "$",
                            "a batch item must be an object",
                        );
                        owned.push((serde_json::to_vec(&other).unwrap_or_default(), Err(rej)));
                    }
                }
            }
        }
        _ => {
            return Err(Rejection::field(
                Reason::WrongType,
                "$",
                "body must be a JSON object",
            ));
        }
    }
    for (i, (_, v)) in owned.iter_mut().enumerate() {
        if i >= max_batch_events {
            *v = Err(past_the_cap(max_batch_events));
        }
    }
    Ok(owned)
}

/// The rejection of a batch item past `max_batch_events`.
fn past_the_cap(max_batch_events: usize) -> Rejection {
    Rejection::whole(
        Reason::OversizeBatch,
        format!("a batch holds at most {max_batch_events} events"),
    )
}

/// A Segment call read without a value tree of the body ([`LazyBody`]): where its text
/// and members are, and, for an item past `max_batch_events`, its rejection.
pub(crate) struct LazyCall<'a> {
    /// The call's text in the body (its nested objects are looked up there).
    part: &'a str,
    /// Where the call's text as it is normalised is in [`LazyBody::texts`], for a batch
    /// item given the batch-level fields it lacked (`context`, `integrations`, `sentAt`)
    /// at its end; `None` when it is `part`.
    text: Option<std::ops::Range<usize>>,
    /// Where its members are in [`LazyBody::members`] (a single call's, and a batch item's
    /// with the batch-level ones it was given); `None` when they are the ones the scan of
    /// the body listed for `part`, so the call is not scanned a second time.
    members: Option<std::ops::Range<usize>>,
    /// Set for an item past `max_batch_events`.
    pub(crate) refused: Option<Rejection>,
    /// Where what the scan read from its `context`, `properties` and `traits` is in
    /// [`LazyBody::parts`], when the body was read with
    /// [`crate::normalize::segment_parts::read_body`].
    parts: Option<usize>,
}

/// A Segment body split without a value tree ([`split_segment_lazy`]): its calls, the
/// objects and arrays the scan listed, and, in one buffer each for the whole body, the
/// texts and members of the calls that were given batch-level fields. (A `String` and a
/// member list of their own per call were a tenth of a tracking request's time, as SDKs
/// send `sentAt` for the batch.)
pub(crate) struct LazyBody<'a> {
    /// The body's `writeKey`.
    pub(crate) key: Option<String>,
    /// The calls, in order.
    pub(crate) calls: Vec<LazyCall<'a>>,
    nested: scan::Nested<'a>,
    texts: String,
    members: scan::Members<'a>,
    pub(crate) parts: Vec<Parts<'a>>,
}

impl<'a> LazyBody<'a> {
    /// A call's text as it is normalised (for its dead letter, size check and derived
    /// id).
    pub(crate) fn raw<'c>(&'c self, call: &LazyCall<'a>) -> &'c str {
        match &call.text {
            Some(r) => &self.texts[r.clone()],
            None => call.part,
        }
    }

    /// A call as an item to normalise: its bytes, and the call read lazily from the
    /// members the scan listed, or its rejection.
    pub(crate) fn item<'c>(&'c self, call: &'c LazyCall<'a>) -> Item<'c> {
        let raw = self.raw(call);
        let members = match &call.members {
            Some(r) => Some(&self.members[r.clone()]),
            None => self.nested.object(call.part),
        };
        let value = match (&call.refused, members) {
            (Some(rej), _) => Err(rej.clone()),
            (None, Some(m)) => {
                let flat = Flat::from_listed(raw, scan::MemberList::listed(m));
                Ok(match call.parts.and_then(|i| self.parts.get(i)) {
                    Some(parts) => Parsed::Call(flat, parts),
                    None => Parsed::Flat(flat.with_nested(scan::View::of(&self.nested, call.part))),
                })
            }
            (None, None) => parse_item(raw.as_bytes()),
        };
        Item {
            raw: raw.as_bytes(),
            value,
        }
    }

    /// Every call as an item, in order.
    pub(crate) fn items(&self) -> impl Iterator<Item = Item<'_>> {
        self.calls.iter().map(|c| self.item(c))
    }
}

/// [`split_segment`] without a value tree of the body: the body read in one pass that also
/// reads what the normaliser needs from each call's objects
/// ([`segment_parts::read_body`]), else as [`split_segment_scanned`] reads it.
pub(crate) fn split_segment_lazy(
    body: &[u8],
    single: bool,
    max_batch_events: usize,
) -> Option<LazyBody<'_>> {
    let text = std::str::from_utf8(body).ok()?;
    split_segment_read(text, single, max_batch_events)
        .or_else(|| split_segment_scanned(text, single, max_batch_events))
}

/// [`split_segment_lazy`] with [`segment_parts::read_body`], `None` when it does not read
/// the body (or the tree path must decide). Each call's members are its own, followed by
/// the batch-level ones it was given, written into the room the reader left after them.
pub(crate) fn split_segment_read(
    text: &str,
    single: bool,
    max_batch_events: usize,
) -> Option<LazyBody<'_>> {
    let read = segment_parts::read_body(text, single)?;
    let key = write_key(&read.top);
    let mut members = read.members;
    let mut parts = read.parts;
    let mut calls = Vec::with_capacity(read.calls.len());
    if single {
        let (part, range) = read.calls.into_iter().next()?;
        calls.push(LazyCall {
            part,
            text: None,
            members: Some(range),
            refused: None,
            parts: Some(0),
        });
        return Some(LazyBody {
            key,
            calls,
            nested: scan::Nested::default(),
            texts: String::new(),
            members,
            parts,
        });
    }
    let (batch, batch_level) = batch_level(&read.top);
    let batch = batch?;
    let n = read.calls.len();
    let mut texts = String::new();
    // The batch-level members a call is given, written into the room the reader left
    // after its own (`segment_parts::BATCH_LEVEL_ROOM`).
    let mut given: scan::Members<'_> = Vec::with_capacity(segment_parts::BATCH_LEVEL_ROOM);
    for (i, ((part, range), p)) in read.calls.into_iter().zip(&mut parts).enumerate() {
        let own = &members[range.clone()];
        let own_context = own.iter().any(|(k, _)| k.as_ref() == "context");
        given.clear();
        let added = add_batch_level(
            part,
            own,
            &batch_level,
            (batch.len(), n - i),
            &mut texts,
            &mut given,
            false,
        )?;
        let (text, call_members) = match added {
            None => (None, range),
            Some((t, _)) => {
                let room = members.get_mut(range.end..range.end + given.len())?;
                for (slot, m) in room.iter_mut().zip(given.drain(..)) {
                    *slot = m;
                }
                (Some(t), range.start..range.end + room.len())
            }
        };
        // A call without a `context` of its own is given the batch's.
        if !own_context && let Some(c) = &read.batch_context {
            p.context = c.clone();
        }
        let refused = (i >= max_batch_events).then(|| past_the_cap(max_batch_events));
        calls.push(LazyCall {
            part,
            text,
            members: Some(call_members),
            refused,
            parts: Some(i),
        });
    }
    Some(LazyBody {
        key,
        calls,
        nested: scan::Nested::default(),
        texts,
        members,
        parts,
    })
}

/// [`split_segment`] without a value tree of the body: the body is scanned
/// ([`crate::scan`]) once, listing the members of every object in it, and each call is
/// read lazily later from what was listed ([`LazyBody::item`]). A batch item that lacks a
/// batch-level field gets the field's text added at its end, so its text is the call as it
/// is normalised (for its dead letter, size check and derived id). Also the body's
/// `writeKey`, and the objects and arrays nested in the body.
///
/// `None` whenever the tree path must decide: text the scanner does not read, no `batch`
/// array, an item that is not an object, or an item with its own `context` or
/// `integrations` beside the batch's (those are merged key by key).
pub(crate) fn split_segment_scanned(
    text: &str,
    single: bool,
    max_batch_events: usize,
) -> Option<LazyBody<'_>> {
    let (members, nested) = scan::object_nested(text)?;
    let key = write_key(&members);
    if single {
        let call = LazyCall {
            part: text,
            text: None,
            members: Some(0..members.len()),
            refused: None,
            parts: None,
        };
        return Some(LazyBody {
            key,
            calls: vec![call],
            nested,
            texts: String::new(),
            members,
            parts: Vec::new(),
        });
    }
    let (batch, batch_level) = batch_level(&members);
    let batch = batch?;
    let elements = nested.array(batch)?;
    let mut texts = String::new();
    let mut all_members: scan::Members<'_> = Vec::new();
    let mut calls = Vec::with_capacity(elements.len());
    for (i, &item) in elements.iter().enumerate() {
        let item_members = nested.object(item)?;
        let (text, members) = add_batch_level(
            item,
            item_members,
            &batch_level,
            (batch.len(), elements.len() - i),
            &mut texts,
            &mut all_members,
            true,
        )?
        .unzip();
        let refused = (i >= max_batch_events).then(|| past_the_cap(max_batch_events));
        calls.push(LazyCall {
            part: item,
            text,
            members,
            refused,
            parts: None,
        });
    }
    Some(LazyBody {
        key,
        calls,
        nested,
        texts,
        members: all_members,
        parts: Vec::new(),
    })
}

/// The batch-level fields of a Segment body (`context` and `integrations` when objects,
/// `sentAt`), each with its text when the body has it.
type BatchLevel<'a> = [(&'static str, Option<&'a str>); 3];

/// The text of the last member named `name` of a body whose members are `top`.
fn last<'a>(top: &[(Cow<'a, str>, &'a str)], name: &str) -> Option<&'a str> {
    top.iter()
        .rev()
        .find(|(k, _)| k.as_ref() == name)
        .map(|(_, v)| *v)
}

/// The `writeKey` of a body whose members are `top`.
fn write_key(top: &[(Cow<'_, str>, &str)]) -> Option<String> {
    last(top, "writeKey").and_then(|v| serde_json::from_str::<String>(v).ok())
}

/// The batch-level fields of a body whose members are `top` (the last of each name), and
/// its `batch`, `None` without one.
fn batch_level<'a>(top: &[(Cow<'a, str>, &'a str)]) -> (Option<&'a str>, BatchLevel<'a>) {
    let get = |name: &str| last(top, name);
    (
        get("batch").filter(|t| t.starts_with('[')),
        [
            ("context", get("context").filter(|t| t.starts_with('{'))),
            (
                "integrations",
                get("integrations").filter(|t| t.starts_with('{')),
            ),
            ("sentAt", get("sentAt")),
        ],
    )
}

/// Gives the batch item `item` (with members `item_members`) the batch-level fields it
/// lacks, at its end: its text onto `texts` and its members onto `members` (with
/// `copy_own`, its own members first, else only those added), with where each is;
/// `Some(None)` when it lacks none. `None` when the item has its own `context` or
/// `integrations` beside the batch's: those are merged key by key on the tree path.
/// `(batch_len, left)`: the length of the batch's text and how many items are left, to
/// reserve room for the rest of the batch at the first item given fields.
#[allow(clippy::type_complexity)]
fn add_batch_level<'a>(
    item: &'a str,
    item_members: &[(Cow<'a, str>, &'a str)],
    batch_level: &BatchLevel<'a>,
    (batch_len, left): (usize, usize),
    texts: &mut String,
    members: &mut scan::Members<'a>,
    copy_own: bool,
) -> Option<Option<(std::ops::Range<usize>, std::ops::Range<usize>)>> {
    // What an item given every batch-level field grows by: `,"name":value` each.
    let added_len: usize = batch_level
        .iter()
        .filter_map(|(name, value)| value.map(|v| name.len() + v.len() + 4))
        .sum();
    let (text_start, members_start) = (texts.len(), members.len());
    let mut added = 0;
    for &(name, value) in batch_level {
        let Some(value) = value else { continue };
        if item_members.iter().any(|(k, _)| k.as_ref() == name) {
            if name == "sentAt" {
                continue;
            }
            // Both have it: merged key by key on the tree path.
            return None;
        }
        if added == 0 {
            if texts.capacity() == 0 {
                // The rest of the batch, each item given every field, at most.
                texts.reserve(batch_len + left * added_len);
                if copy_own {
                    members.reserve(left * (item_members.len() + 3));
                }
            }
            // The item's text ends with its closing brace.
            texts.push_str(&item[..item.len() - 1]);
            if copy_own {
                members.extend_from_slice(item_members);
            }
        }
        if !item_members.is_empty() || added > 0 {
            texts.push(',');
        }
        texts.push('"');
        texts.push_str(name);
        texts.push_str("\":");
        texts.push_str(value);
        members.push((Cow::Borrowed(name), value));
        added += 1;
    }
    if added == 0 {
        return Some(None);
    }
    texts.push('}');
    Some(Some((
        text_start..texts.len(),
        members_start..members.len(),
    )))
}

/// The per-item checks and the normalisation of one item: its parse result, its size
/// (`max_event_bytes`), then the source's normaliser with `received_at` as the receive
/// time, written over `out` ([`normalize::normalize_parsed_into`]): the endpoints
/// normalise a request's items one after another into one event.
#[allow(clippy::too_many_arguments)]
pub(crate) fn normalize_item_into(
    cfg: &IngestConfig,
    ctx: &Ctx<'_>,
    source: Source,
    value: Result<Parsed<'_>, Rejection>,
    raw: &[u8],
    segment_kind: Option<&str>,
    received_at: i64,
    out: &mut Event,
) -> Result<(), Rejection> {
    match value {
        Err(rej) => Err(rej),
        Ok(_) if raw.len() > cfg.max_event_bytes => Err(Rejection::whole(
            Reason::OversizeEvent,
            format!("event is larger than {} bytes", cfg.max_event_bytes),
        )),
        Ok(v) => normalize::normalize_parsed_into(
            source,
            v,
            segment_kind,
            ctx,
            Envelope {
                received_at,
                raw,
                private_channels: &cfg.private_domain_channels,
            },
            out,
        ),
    }
}

/// The id of an ingest dead letter: 32 hex digits of SHA-256 over the stage, source,
/// reason and kept (redacted) bytes, so the same input refused for the same reason gets
/// the same id.
pub fn dlq_id(source: &str, reason: &str, original: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(b"ingest\n");
    h.update(source.as_bytes());
    h.update(b"\n");
    h.update(reason.as_bytes());
    h.update(b"\n");
    h.update(original);
    hex::encode(&h.finalize()[..16])
}

/// An ingest dead letter of already redacted bytes.
pub(crate) fn dead_letter(
    source: &str,
    r: &Rejection,
    original: Vec<u8>,
    content_type: String,
    received_at: i64,
    failed_at: i64,
) -> DeadLetter {
    DeadLetter {
        dlq_id: dlq_id(source, r.reason.as_str(), &original),
        stage: "ingest".into(),
        source: source.to_owned(),
        reason: r.reason.as_str().into(),
        field: r.field.clone(),
        message: r.message.clone(),
        original,
        content_type: Some(content_type),
        received_at,
        failed_at,
        origin_topic: None,
        origin_partition: None,
        origin_offset: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_types_round_trip_through_the_media_type() {
        let ct = call_content_type("track");
        assert_eq!(ct, "application/json; zt-call=track");
        assert_eq!(call_of_content_type(&ct), Some("track"));
        assert_eq!(call_of_content_type(CONTENT_JSON), None);
        assert_eq!(call_of_content_type(CONTENT_NDJSON), None);
    }

    #[test]
    fn native_bodies_split_as_the_endpoint_splits_them() {
        let items = split_native(br#"[{"a":1}, 2 ,{"b":[3]}]"#, false).unwrap();
        let raws: Vec<&[u8]> = items.iter().map(|i| i.raw).collect();
        assert_eq!(raws, [&br#"{"a":1}"#[..], b"2", br#"{"b":[3]}"#]);
        let one = split_native(br#" {"a":1} "#, false).unwrap();
        assert_eq!(one.len(), 1);
        let nd = split_native(b"{\"a\":1}\n\n  \n{broken\n{\"c\":2}\n", true).unwrap();
        assert_eq!(nd.len(), 3, "blank lines are not items");
        assert!(nd[0].value.is_ok() && nd[2].value.is_ok());
        assert_eq!(
            nd[1].value.as_ref().unwrap_err().reason,
            Reason::MalformedJson
        );
        let err = split_native(b"{\"a\":1}\n{\"c\":2}", false).unwrap_err();
        assert_eq!(err.reason, Reason::MalformedJson, "NDJSON sent as JSON");
    }

    #[test]
    fn segment_calls_read_lazily_normalise_as_the_value_tree_does() {
        let fixtures = [
            include_str!("../../../tests/fixtures/segment/track.json"),
            include_str!("../../../tests/fixtures/segment/identify.json"),
            include_str!("../../../tests/fixtures/segment/page.json"),
            include_str!("../../../tests/fixtures/segment/screen.json"),
            include_str!("../../../tests/fixtures/segment/alias.json"),
            include_str!("../../../tests/fixtures/segment/group.json"),
        ];
        for f in fixtures {
            assert!(
                crate::fuzzing::segment_agrees(f.as_bytes(), true, 2500),
                "{f}"
            );
        }
        // The documented batch merges its context into items that have their own: the
        // tree path's. Without the batch-level context and integrations it is read lazily.
        let batch = include_str!("../../../tests/fixtures/segment/batch.json");
        assert!(!crate::fuzzing::segment_agrees(
            batch.as_bytes(),
            false,
            2500
        ));
        let mut lean: Value = serde_json::from_str(batch).unwrap();
        let top = lean.as_object_mut().unwrap();
        assert!(top.remove("context").is_some() && top.remove("integrations").is_some());
        let lean = serde_json::to_vec_pretty(&lean).unwrap();
        assert!(crate::fuzzing::segment_agrees(&lean, false, 2500));
        assert!(
            crate::fuzzing::segment_agrees(&lean, false, 3),
            "past the cap"
        );
        let call = r#"{"type":"track","event":"A","userId":"u1","messageId":"m1"}"#;
        let lazily = [
            // Batch-level fields an item lacks are added to it; its own sentAt wins.
            format!(
                r#"{{"batch":[{call},{{"type":"track","event":"B","anonymousId":"a","sentAt":"2026-01-01T00:00:00Z"}},{{ }}],"context":{{"ip":"9","traits":{{"email":"A@b.cn"}}}},"integrations":{{"All":true}},"sentAt":"2026-01-01T00:00:01Z","writeKey":"k"}}"#
            ),
            // Only some batch-level fields; white space; a duplicate key in an item.
            format!(
                "{{ \"sentAt\" : null , \"batch\" : [ {call} , {{\"type\":\"page\",\"userId\":\"u\",\"userId\":\"v\"}} ] }}"
            ),
            // No batch-level fields; errors in items.
            format!(r#"{{"batch":[{call},{{"type":"track","userId":"u"}},{{"type":"nope"}}]}}"#),
            // Non-object batch-level context is not merged.
            format!(r#"{{"batch":[{call}],"context":"x"}}"#),
        ];
        for body in &lazily {
            assert!(
                crate::fuzzing::segment_agrees(body.as_bytes(), false, 2500),
                "{body}"
            );
        }
        // The tree path decides these (merges key by key, words the errors).
        let tree_only = [
            r#"{"batch":[{"type":"track","event":"A","userId":"u","context":{"ip":"1"}}],"context":{"locale":"zh"}}"#.to_owned(),
            format!(r#"{{"batch":[{call},7]}}"#),
            r#"{"batch":{}}"#.to_owned(),
            r#"{"batch":[{"a":1}"#.to_owned(),
            r#"{"nobatch":[]}"#.to_owned(),
        ];
        for body in &tree_only {
            assert!(
                split_segment_lazy(body.as_bytes(), false, 2500).is_none(),
                "{body}"
            );
        }
    }

    #[test]
    fn segment_batches_merge_and_cap() {
        let body = br#"{"batch":[{"type":"track","event":"A"},{"type":"track","sentAt":"x","context":{"ip":"1"}},7],"context":{"ip":"9","locale":"zh"},"sentAt":"s"}"#;
        let v: Value = serde_json::from_slice(body).unwrap();
        let items = split_segment(body, v.clone(), false, 2).unwrap();
        assert_eq!(items.len(), 3);
        let first: Value = serde_json::from_slice(&items[0].0).unwrap();
        assert_eq!(first["context"]["locale"], "zh");
        assert_eq!(first["sentAt"], "s");
        let second = items[1].1.as_ref().unwrap();
        assert_eq!(second["sentAt"], "x", "the item's own keys win");
        assert_eq!(second["context"]["ip"], "1");
        assert_eq!(
            items[2].1.as_ref().unwrap_err().reason,
            Reason::OversizeBatch,
            "past max_batch_events"
        );
        let single = split_segment(body, v, true, 2).unwrap();
        assert_eq!(single.len(), 1);
        assert_eq!(single[0].0, body.to_vec(), "a single call keeps the body");
        let no_batch = split_segment(b"{}", serde_json::json!({}), false, 2).unwrap_err();
        assert_eq!(
            (no_batch.reason, no_batch.field.as_deref()),
            (Reason::MissingField, Some("batch"))
        );
        let not_obj = split_segment(b"[]", serde_json::json!([]), true, 2).unwrap_err();
        assert_eq!(not_obj.reason, Reason::WrongType);
    }
}
