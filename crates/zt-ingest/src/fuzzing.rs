//! Entry points of the fuzz targets (`fuzz/`, `make fuzz`), also run by the regression
//! tests over every input kept in `fuzz/regressions/` and `fuzz/seeds/`. Each returns
//! normally for any input or panics with the property it found broken.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use zt_model::pii::PiiHasher;
use zt_model::{DeadLetter, Source, decode, encode};

use crate::config::{AmountUnit, IngestConfig, Mapping, SourceConfig};
use crate::items::{CONTENT_JSON, CONTENT_NDJSON, call_content_type};
use crate::redact::{redact, redact_ndjson};
use crate::replay::Replayer;

fn hasher() -> PiiHasher {
    PiiHasher::new(b"fuzz-salt", "86").expect("a valid hasher")
}

fn config(variant: bool) -> IngestConfig {
    let mut sources = BTreeMap::new();
    if variant {
        // A configured variant: renames, a pattern time format with a zone, yuan amounts.
        for s in Source::ALL {
            let mapping = Mapping::variant(
                &[("biz_time", "occurred_at"), ("order_no", "order_id")],
                "%Y-%m-%d %H:%M:%S",
                "+08:00",
                AmountUnit::Major,
            );
            sources.insert(
                s.as_str().to_owned(),
                SourceConfig {
                    mapping,
                    ..Default::default()
                },
            );
        }
    }
    IngestConfig {
        listen: "127.0.0.1:0".parse().expect("an address"),
        max_event_bytes: 32 * 1024,
        max_batch_bytes: 512_000,
        max_batch_events: 2500,
        dedup_window_secs: 0,
        dedup_max_entries: 1,
        dedup_restore_secs: 0,
        publish_timeout_ms: 1000,
        private_domain_channels: vec!["wecom".into()],
        sources,
    }
}

fn replayers() -> &'static [Replayer; 2] {
    static R: OnceLock<[Replayer; 2]> = OnceLock::new();
    R.get_or_init(|| {
        [false, true].map(|v| Replayer::new(&config(v), hasher()).expect("a valid config"))
    })
}

/// Normalises every call of a Segment body both ways: the lazy split and reader the
/// endpoint uses, and the value tree of the body (the first implementation, the oracle).
/// When the lazy split reads the body, the calls' bytes must hold the same JSON values as
/// the tree path's, and the events and rejections must be the same. Returns whether the
/// lazy split read the body.
pub fn segment_agrees(body: &[u8], single: bool, max: usize) -> bool {
    use crate::items::{Parsed, split_segment, split_segment_lazy};
    segment_read_agrees(body, single, max);
    let Some(lazy) = split_segment_lazy(body, single, max) else {
        return false;
    };
    let tree: serde_json::Value =
        serde_json::from_slice(body).expect("a body the scanner reads is JSON");
    assert_eq!(
        lazy.key.as_deref(),
        tree.get("writeKey").and_then(serde_json::Value::as_str),
        "writeKey"
    );
    let owned = split_segment(body, tree, single, max).expect("the tree path splits it too");
    assert_eq!(lazy.calls.len(), owned.len(), "calls");
    let cfg = config(false);
    let mappings = crate::items::source_mappings(&cfg).expect("a valid config");
    let h = hasher();
    let ctx = crate::items::ctx_for(&mappings, &h, Source::Tracking);
    let kind = single.then_some("track");
    // The endpoint normalises a body's calls one after another into one event, written
    // over by each: every call must come out of it as it does normalised alone.
    let mut reused = crate::normalize::segment::empty_event();
    for (call, (raw, value)) in lazy.calls.iter().zip(owned) {
        let lazy_value: serde_json::Value =
            serde_json::from_str(lazy.raw(call)).expect("a call's text is JSON");
        let tree_value: serde_json::Value = serde_json::from_slice(&raw).expect("JSON");
        assert_eq!(lazy_value, tree_value, "a call's bytes");
        // As the endpoint reads it: with the members the split listed.
        let item = lazy.item(call);
        let bytes = item.raw;
        // All read with the same bytes, so ids derived from them agree too.
        let env = || crate::normalize::Envelope {
            received_at: 1_750_000_000_000,
            raw: bytes,
            private_channels: &[],
        };
        let norm = |v: Result<Parsed<'_>, crate::error::Rejection>| {
            v.and_then(|v| {
                crate::normalize::normalize_parsed(Source::Tracking, v, kind, &ctx, env())
            })
        };
        let in_turn = lazy.item(call).value.and_then(|v| {
            crate::normalize::normalize_parsed_into(
                Source::Tracking,
                v,
                kind,
                &ctx,
                env(),
                &mut reused,
            )
        });
        let lazy = norm(item.value);
        assert_eq!(
            in_turn.map(|()| &reused),
            lazy.as_ref().map_err(Clone::clone),
            "a Segment call normalised into the event of the call before it and alone differ"
        );
        let reference = value.clone().and_then(|v| {
            let rec = crate::fields::Record::new(v, "", &ctx)?;
            crate::normalize::segment_reference::normalize(rec, kind, &ctx, env())
        });
        let tree = norm(value.map(Parsed::Tree));
        assert_eq!(
            json_texts_parsed(lazy),
            json_texts_parsed(reference.clone()),
            "the lazy reading of a Segment call and the reference normaliser differ"
        );
        assert_eq!(
            json_texts_parsed(tree),
            json_texts_parsed(reference),
            "the tree reading of a Segment call and the reference normaliser differ"
        );
    }
    true
}

/// When the one-pass reader of Segment bodies reads `body`
/// ([`crate::items::split_segment_read`]), the scan with look-ups
/// ([`crate::items::split_segment_scanned`]) reads it too, into the same calls (texts,
/// write key, refusals), and every call normalises to exactly the same event (the
/// properties' and traits' texts byte for byte) or the same rejection both ways. Returns
/// whether the reader read the body.
pub fn segment_read_agrees(body: &[u8], single: bool, max: usize) -> bool {
    use crate::items::{split_segment_read, split_segment_scanned};
    let Ok(text) = std::str::from_utf8(body) else {
        return false;
    };
    let Some(read) = split_segment_read(text, single, max) else {
        return false;
    };
    let scanned =
        split_segment_scanned(text, single, max).expect("what the reader reads, the scan reads");
    assert_eq!(read.key, scanned.key, "writeKey");
    assert_eq!(read.calls.len(), scanned.calls.len(), "calls");
    let cfg = config(false);
    let mappings = crate::items::source_mappings(&cfg).expect("a valid config");
    let h = hasher();
    let ctx = crate::items::ctx_for(&mappings, &h, Source::Tracking);
    let kind = single.then_some("track");
    for (a, b) in read.calls.iter().zip(&scanned.calls) {
        let (a, b) = (read.item(a), scanned.item(b));
        assert_eq!(a.raw, b.raw, "a call's bytes");
        let norm = |item: crate::items::Item<'_>| {
            let env = crate::normalize::Envelope {
                received_at: 1_750_000_000_000,
                raw: item.raw,
                private_channels: &[],
            };
            item.value.and_then(|v| {
                crate::normalize::normalize_parsed(Source::Tracking, v, kind, &ctx, env)
            })
        };
        assert_eq!(
            norm(a),
            norm(b),
            "a Segment call read in one pass and by look-ups differ"
        );
    }
    true
}

/// A normalised tracking event with its properties and traits texts parsed (their key
/// order and spacing are not part of the contract): each must be one JSON object.
pub fn json_texts_parsed(
    r: Result<zt_model::Event, crate::error::Rejection>,
) -> Result<(zt_model::Event, serde_json::Value, serde_json::Value), crate::error::Rejection> {
    let mut ev = r?;
    let (p, t) = match &mut ev.payload {
        zt_model::Payload::Tracking(t) => (
            std::mem::take(&mut t.properties_json),
            std::mem::take(&mut t.traits_json),
        ),
        _ => Default::default(),
    };
    let parse = |s: &str| -> serde_json::Value {
        if s.is_empty() {
            return serde_json::Value::Null;
        }
        let v: serde_json::Value =
            serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"));
        assert!(v.is_object(), "not a JSON object: {s}");
        v
    };
    Ok((ev, parse(&p), parse(&t)))
}

/// The body parsers and every normaliser: the first byte picks the source, the mapping
/// (documented or a configured variant) and how the body is framed (JSON, NDJSON, one
/// Segment call of a given type); the rest is the request body, split and normalised as
/// the endpoint does (through the dead-letter replayer, which shares its code). Properties:
/// no panic; every event a normaliser returns encodes to the wire format and decodes back
/// to itself; redaction of the body never panics either.
pub fn ingest_body(data: &[u8]) {
    let Some((&sel, body)) = data.split_first() else {
        return;
    };
    let source = Source::ALL[usize::from(sel % 6)];
    let variant = (sel / 6) % 2 == 1;
    let content_type = match (sel / 12) % 4 {
        0 => CONTENT_JSON.to_owned(),
        1 => CONTENT_NDJSON.to_owned(),
        2 => call_content_type("track"),
        _ => call_content_type("identify"),
    };
    let dl = DeadLetter {
        dlq_id: "fuzz".into(),
        stage: "ingest".into(),
        source: source.as_str().into(),
        // A whole refused request: the replayer splits the body like the endpoint.
        reason: "rate_limited".into(),
        field: None,
        message: String::new(),
        original: body.to_vec(),
        content_type: Some(content_type),
        received_at: 1_750_000_000_000,
        failed_at: 1_750_000_000_000,
        origin_topic: None,
        origin_partition: None,
        origin_offset: None,
    };
    let r = &replayers()[usize::from(variant)];
    if let Ok(items) = r.replay(&dl) {
        for item in items {
            if let Ok(ev) = item.result {
                let bytes = encode(&ev).expect("a normalised event must encode");
                let back = decode::<zt_model::Event>(&bytes).expect("and decode");
                assert_eq!(back, ev, "normalised event round trip");
            }
        }
    }
    // The endpoint reads native objects lazily, the replayer from value trees: both
    // must normalise every item alike.
    if source != Source::Tracking
        && let Ok(items) = crate::items::split_native(body, false)
    {
        let cfg = config(variant);
        let mappings = crate::items::source_mappings(&cfg).expect("a valid config");
        let h = hasher();
        let ctx = crate::items::ctx_for(&mappings, &h, source);
        for item in items {
            let Ok(parsed) = item.value else { continue };
            let env = || crate::normalize::Envelope {
                received_at: 1_750_000_000_000,
                raw: item.raw,
                private_channels: &[],
            };
            let tree = match std::str::from_utf8(item.raw)
                .ok()
                .and_then(|t| serde_json::from_str(t).ok())
            {
                Some(v) => crate::normalize::normalize(source, v, None, &ctx, env()),
                None => continue,
            };
            let lazy = crate::normalize::normalize_parsed(source, parsed, None, &ctx, env());
            assert_eq!(tree, lazy, "lazy and tree reading differ");
        }
    }
    if source == Source::Tracking {
        segment_agrees(body, (sel / 12) % 4 >= 2, 3);
    }
    if let Ok(text) = std::str::from_utf8(body) {
        scan_agrees(text);
    }
    let h = hasher();
    let renames = BTreeMap::from([("buyer_mobile".to_owned(), "mobile".to_owned())]);
    let _ = redact(body, &h, &renames, Some("fuzz-write-key"));
    let _ = redact_ndjson(body, &h, &renames, Some("fuzz-write-key"));
}

/// The one-pass scanner ([`crate::scan`]) answers only as serde_json does: whenever it
/// reads `src` as an array of elements (with their members) or as an object's members,
/// serde_json reads the same. (Where it declines, serde_json may still accept; the
/// callers then use serde_json.)
pub fn scan_agrees(src: &str) {
    use crate::scan::{Element, Members, array, object};
    use serde_json::value::RawValue;

    fn serde_object(src: &str) -> Option<Members<'_>> {
        if !src.trim_start().starts_with('{') {
            return None;
        }
        crate::fields::serde_members(src)
    }
    let serde_texts = || -> Option<Vec<&str>> {
        let raws: Vec<&RawValue> = serde_json::from_str(src).ok()?;
        Some(raws.into_iter().map(RawValue::get).collect())
    };
    if let Some(mine) = array(src) {
        let theirs: Option<Vec<Element<'_>>> =
            serde_texts().map(|texts| texts.into_iter().map(|t| (t, serde_object(t))).collect());
        assert_eq!(Some(mine), theirs, "scanned array differs: {src:?}");
    }
    if let Some(mine) = object(src) {
        assert_eq!(
            Some(mine),
            serde_object(src),
            "scanned object differs: {src:?}"
        );
    }
    nested_agrees(src);
}

/// The scan that lists nested objects and arrays ([`crate::scan::object_nested`]) reads
/// what the plain scan reads, and lists every object and array nested in the text as a
/// scan of that node's own text does, each found again by its text. Returns how many
/// nodes it listed.
pub fn nested_agrees(src: &str) -> usize {
    use crate::scan::{Node, array, object, object_nested};
    let Some((members, nested)) = object_nested(src) else {
        assert!(object(src).is_none(), "only the plain scan reads {src:?}");
        return 0;
    };
    assert_eq!(Some(&members), object(src).as_ref(), "top level of {src:?}");
    let mut n = 0;
    for (text, node) in nested.nodes() {
        match node {
            Node::Object(m) => assert_eq!(Some(m), object(text).as_deref(), "{text:?}"),
            Node::Array(els) => {
                let plain: Option<Vec<&str>> =
                    array(text).map(|v| v.into_iter().map(|(t, _)| t).collect());
                assert_eq!(Some(els), plain.as_deref(), "{text:?}");
            }
        }
        assert_eq!(nested.get(text), Some(node), "found by its text: {text:?}");
        n += 1;
    }
    // Every object and array but the whole is a node: count their opening brackets
    // outside strings.
    let (mut opened, mut in_string, mut escaped) = (0, false, false);
    for b in src.bytes() {
        match (in_string, escaped, b) {
            (true, true, _) => escaped = false,
            (true, false, b'\\') => escaped = true,
            (true, false, b'"') => in_string = false,
            (false, _, b'"') => in_string = true,
            (false, _, b'{' | b'[') => opened += 1,
            _ => {}
        }
    }
    assert_eq!(n + 1, opened, "nodes of {src:?}");
    n
}
