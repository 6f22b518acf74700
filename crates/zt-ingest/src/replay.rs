//! Replaying ingest dead letters through the current normalisers (`zt replay dlq`).
//!
//! A [`Replayer`] is built from the `[ingest]` configuration and the PII hasher exactly as
//! the server builds its per-source mappings, and takes a dead letter of stage `ingest`
//! back through the path of the endpoint that refused it:
//!
//! - an **item** (a rejected array element, NDJSON line, single object, Segment batch item
//!   after the batch-level merge, or single Segment call) is one item again;
//! - a **request refused as a whole** (`bad_key`, `wrong_source_key`, `rate_limited`,
//!   `malformed_json`, `oversize_batch`, and on the Segment endpoints a body without a
//!   `batch` array) holds the request body, which is split as the endpoint splits it: a
//!   JSON array, one object or NDJSON (ingest records `application/x-ndjson` for an NDJSON
//!   body) for the native sources; a Segment batch (an object with `batch`) or a single
//!   call (ingest records the endpoint's call type as `application/json; zt-call=<type>`)
//!   for tracking;
//! - every item gets the server's per-item checks (`max_event_bytes`, on the kept bytes)
//!   and its source's normaliser, with the dead letter's **original** `received_at` as the
//!   receive time, so Segment's clock-skew correction is not shifted by the replay delay.
//!
//! The kept bytes are redacted ([`crate::redact`]): `zt-hashed:` phones and e-mails
//! normalise to the same identity as the raw values did; `zt-redacted` values are what
//! they are (a phone that could not be normalised stays invalid). A record without its own
//! id gets an id derived from the kept bytes, which differs from the one ingest would have
//! derived from the bytes as sent.
//!
//! What cannot be replayed is refused with [`NotReplayable`]: dead letters of other
//! stages, of no source (`unknown_source`), bodies kept cut because they exceeded
//! `max_batch_bytes`, NDJSON bodies an older ingest kept as masked text, and single
//! Segment calls an older ingest kept without their call type when the body does not
//! state it either.

use std::collections::HashMap;

use serde::de::IgnoredAny;
use serde_json::Value;
use zt_model::pii::PiiHasher;
use zt_model::{DeadLetter, Event, Source};

use crate::config::{IngestConfig, Mapping};
use crate::error::{ConfigError, Reason, Rejection};
use crate::fields::TimeFormat;
use crate::items::{
    self, BODY_TOO_LARGE, CONTENT_JSON, OwnedItem, call_of_content_type, is_ndjson, parse_error,
    split_native, split_segment,
};
use crate::redact::{redact, redact_ndjson};

/// Reasons for which ingest keeps the whole request body rather than one item.
/// (`malformed_json` is also the reason of one NDJSON line, and `oversize_batch` of one
/// Segment batch item past `max_batch_events`; both are told apart below.)
const WHOLE_REQUEST_REASONS: &[&str] = &[
    "bad_key",
    "wrong_source_key",
    "rate_limited",
    "unknown_source",
    "malformed_json",
    "oversize_batch",
];

/// The Segment call types.
const CALL_TYPES: [&str; 6] = ["track", "identify", "page", "screen", "alias", "group"];

/// Why a dead letter cannot be replayed at all (it stays in the dead-letter topic as it
/// is). The message names no input values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NotReplayable(pub String);

/// One item of a replayed dead letter.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplayItem {
    /// 0-based position in the kept body, as `index` in ingest's responses.
    pub index: usize,
    /// The item's bytes, taken from the dead letter's (redacted) `original`; for a failure
    /// of the whole body, the whole body.
    pub raw: Vec<u8>,
    /// The media type a dead letter of these bytes carries.
    pub content_type: String,
    /// The canonical event, or why the item is still refused.
    pub result: Result<Event, Rejection>,
}

/// How a kept body splits.
enum Split {
    /// Refused as a whole again.
    Whole(Rejection),
    /// Items, with the Segment call type the endpoint implied and their media type.
    Items {
        items: Vec<OwnedItem>,
        kind: Option<String>,
        content_type: String,
    },
}

/// Re-submits dead letters through the current normalisers (see the module
/// documentation).
#[derive(Debug)]
pub struct Replayer {
    cfg: IngestConfig,
    hasher: PiiHasher,
    mappings: HashMap<Source, (Mapping, TimeFormat)>,
}

fn not(msg: impl Into<String>) -> NotReplayable {
    NotReplayable(msg.into())
}

fn is_json_document(body: &[u8]) -> bool {
    serde_json::from_slice::<IgnoredAny>(body).is_ok()
}

impl Replayer {
    /// A replayer for `[ingest]` (validated as the server validates it) hashing with
    /// `hasher` (from `[pii]`; it must be the salt ingest used, or `zt-hashed:` values and
    /// raw values resolve to different identities).
    pub fn new(cfg: &IngestConfig, hasher: PiiHasher) -> Result<Self, ConfigError> {
        cfg.validate()?;
        Ok(Replayer {
            mappings: items::source_mappings(cfg)?,
            cfg: cfg.clone(),
            hasher,
        })
    }

    /// Replays one dead letter: every item of its kept bytes, normalised now.
    pub fn replay(&self, dl: &DeadLetter) -> Result<Vec<ReplayItem>, NotReplayable> {
        if dl.stage != "ingest" {
            return Err(not(format!(
                "stage {}: only dead letters of stage ingest can be replayed",
                dl.stage
            )));
        }
        let source: Source = dl.source.parse().map_err(|_| {
            not(format!(
                "source {:?} is not a source ({}): there is no endpoint to replay it to",
                dl.source, dl.reason
            ))
        })?;
        let ct = dl.content_type.as_deref().unwrap_or(CONTENT_JSON);
        let body = dl.original.as_slice();
        if dl.message.starts_with(BODY_TOO_LARGE) && !is_json_document(body) {
            return Err(not(
                "the request body was larger than the limit when it was refused and was kept cut \
                 at max_batch_bytes; the rest of it is lost",
            ));
        }
        let split = if source == Source::Tracking {
            self.split_tracking(dl, ct, body)?
        } else {
            self.split_native(dl, ct, body)?
        };
        let (items, kind, content_type) = match split {
            Split::Whole(rej) => {
                return Ok(vec![ReplayItem {
                    index: 0,
                    raw: body.to_vec(),
                    content_type: ct.to_owned(),
                    result: Err(rej),
                }]);
            }
            Split::Items {
                items,
                kind,
                content_type,
            } => (items, kind, content_type),
        };
        let ctx = items::ctx_for(&self.mappings, &self.hasher, source);
        Ok(items
            .into_iter()
            .enumerate()
            .map(|(index, (raw, value))| {
                let mut ev = crate::normalize::segment::empty_event();
                let result = items::normalize_item_into(
                    &self.cfg,
                    &ctx,
                    source,
                    value.map(items::Parsed::Tree),
                    &raw,
                    kind.as_deref(),
                    dl.received_at,
                    &mut ev,
                )
                .map(|()| ev);
                ReplayItem {
                    index,
                    raw,
                    content_type: content_type.clone(),
                    result,
                }
            })
            .collect())
    }

    fn split_native(&self, dl: &DeadLetter, ct: &str, body: &[u8]) -> Result<Split, NotReplayable> {
        if !WHOLE_REQUEST_REASONS.contains(&dl.reason.as_str()) {
            // One item: an array element, an NDJSON line or a body of one object.
            let value = serde_json::from_slice(body).map_err(|e| parse_error(&e));
            return Ok(Split::Items {
                items: vec![(body.to_vec(), value)],
                kind: None,
                content_type: CONTENT_JSON.into(),
            });
        }
        // The request body. (A malformed NDJSON line, kept as an item, fails again as
        // malformed JSON either way.)
        let mut ndjson = is_ndjson(ct);
        if !ndjson && dl.reason != "malformed_json" && !is_json_document(body) {
            // Kept by an ingest that did not record NDJSON bodies yet: a body that passed
            // the JSON check without being one JSON document was NDJSON, and was kept as
            // masked text.
            if body.windows(3).any(|w| w == b"###") {
                return Err(not(
                    "an NDJSON body kept as masked text by an older ingest: digits and e-mails \
                     in it are lost",
                ));
            }
            ndjson = true;
        }
        let items = match split_native(body, ndjson) {
            Ok(items) => items,
            Err(rej) => return Ok(Split::Whole(rej)),
        };
        if items.len() > self.cfg.max_batch_events {
            return Ok(Split::Whole(Rejection::whole(
                Reason::OversizeBatch,
                format!("request has more than {} events", self.cfg.max_batch_events),
            )));
        }
        Ok(Split::Items {
            items: items
                .into_iter()
                .map(|i| (i.raw.to_vec(), i.value.map(items::Parsed::into_value)))
                .collect(),
            kind: None,
            content_type: CONTENT_JSON.into(),
        })
    }

    fn split_tracking(
        &self,
        dl: &DeadLetter,
        ct: &str,
        body: &[u8],
    ) -> Result<Split, NotReplayable> {
        let max = self.cfg.max_batch_events;
        let parsed: Result<Value, Rejection> =
            serde_json::from_slice(body).map_err(|e| parse_error(&e));
        // A single call: the endpoint's call type is in the media type.
        if let Some(kind) = call_of_content_type(ct) {
            if !CALL_TYPES.contains(&kind) {
                return Err(not(format!("unknown Segment call type {kind:?}")));
            }
            let value = match parsed {
                Ok(v) => v,
                Err(rej) => return Ok(Split::Whole(rej)),
            };
            return Ok(match split_segment(body, value, true, max) {
                Ok(items) => Split::Items {
                    items,
                    kind: Some(kind.to_owned()),
                    content_type: ct.to_owned(),
                },
                Err(rej) => Split::Whole(rej),
            });
        }
        let reason = dl.reason.as_str();
        let has_batch = matches!(&parsed, Ok(Value::Object(m)) if m.contains_key("batch"));
        let no_batch_array = reason == "missing_field" && dl.field.as_deref() == Some("batch");
        let refused_whole = matches!(
            reason,
            "bad_key" | "wrong_source_key" | "rate_limited" | "malformed_json"
        );
        if has_batch || no_batch_array || (refused_whole && parsed.is_err()) {
            // A `/v1/batch` body.
            let value = match parsed {
                Ok(v) => v,
                Err(rej) => return Ok(Split::Whole(rej)),
            };
            return Ok(match split_segment(body, value, false, max) {
                Ok(items) => Split::Items {
                    items,
                    kind: None,
                    content_type: CONTENT_JSON.into(),
                },
                Err(rej) => Split::Whole(rej),
            });
        }
        if refused_whole {
            // A single call refused as a whole by an ingest that did not record its call
            // type: only a body that states its type can be replayed.
            let typed = parsed
                .as_ref()
                .ok()
                .and_then(|v| v.get("type"))
                .and_then(Value::as_str)
                .is_some_and(|t| CALL_TYPES.contains(&t));
            if !typed {
                return Err(not(
                    "a single Segment call kept without its endpoint's call type (by an older \
                     ingest), and its body has no type",
                ));
            }
        }
        // A batch item (after the batch-level merge) that reads its type from itself.
        Ok(Split::Items {
            items: vec![(body.to_vec(), parsed)],
            kind: None,
            content_type: CONTENT_JSON.into(),
        })
    }

    /// The new dead letter of a replayed item that is still refused for another reason or
    /// field than `dl` (none when it normalised, or failed as before): stage `ingest`, the
    /// same source and original receive time, the item's bytes redacted again under the
    /// current mapping (a no-op unless the fix made a field a phone or e-mail that was kept
    /// as it was), and the id ingest gives that input with that reason.
    pub fn dead_letter_for(
        &self,
        dl: &DeadLetter,
        item: &ReplayItem,
        failed_at: i64,
    ) -> Option<DeadLetter> {
        let Err(rej) = &item.result else {
            return None;
        };
        if rej.reason.as_str() == dl.reason && rej.field == dl.field {
            return None;
        }
        let empty = Default::default();
        let renames = dl
            .source
            .parse::<Source>()
            .ok()
            .and_then(|s| self.mappings.get(&s))
            .map(|(m, _)| &m.renames)
            .unwrap_or(&empty);
        let kept = &item.raw[..item.raw.len().min(self.cfg.max_batch_bytes)];
        let original = if is_ndjson(&item.content_type) {
            redact_ndjson(kept, &self.hasher, renames, None)
        } else {
            redact(kept, &self.hasher, renames, None)
        };
        Some(items::dead_letter(
            &dl.source,
            rej,
            original,
            item.content_type.clone(),
            dl.received_at,
            failed_at,
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;
    use zt_model::{Payload, corrected_event_time};

    use super::*;
    use crate::config::{SourceConfig, tests_support};
    use crate::items::{CONTENT_NDJSON, call_content_type, dlq_id};

    fn hasher() -> PiiHasher {
        PiiHasher::new(b"salt", "86").unwrap()
    }

    fn cfg_with_erp_renames(renames: &[(&str, &str)]) -> IngestConfig {
        let mut cfg = tests_support::config();
        let mut sc = SourceConfig::default();
        sc.mapping.renames = renames
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        cfg.sources.insert("erp".into(), sc);
        cfg
    }

    /// A dead letter as ingest keeps it: the bytes redacted under `cfg`'s mapping.
    fn dl(source: &str, reason: &str, field: Option<&str>, raw: &[u8], ct: &str) -> DeadLetter {
        let original = if is_ndjson(ct) {
            redact_ndjson(raw, &hasher(), &BTreeMap::new(), None)
        } else {
            redact(raw, &hasher(), &BTreeMap::new(), None)
        };
        DeadLetter {
            dlq_id: dlq_id(source, reason, &original),
            stage: "ingest".into(),
            source: source.into(),
            reason: reason.into(),
            field: field.map(str::to_owned),
            message: "m".into(),
            original,
            content_type: Some(ct.into()),
            received_at: 1_767_578_400_000,
            failed_at: 1_767_578_400_100,
            origin_topic: None,
            origin_partition: None,
            origin_offset: None,
        }
    }

    fn order(id: &str, order_key: &str) -> Value {
        json!({"event_id": id, "type": "order.paid", "occurred_at": "2026-01-05T10:00:00+08:00",
               order_key: format!("SO-{id}"), "mobile": "138 1234 5678", "total": 100})
    }

    fn ids(items: &[ReplayItem]) -> Vec<Result<String, String>> {
        items
            .iter()
            .map(|i| match &i.result {
                Ok(e) => Ok(e.event_id.clone()),
                Err(r) => Err(format!("{}:{}", r.reason, r.field.as_deref().unwrap_or(""))),
            })
            .collect()
    }

    #[test]
    fn an_item_replays_after_the_mapping_is_fixed() {
        let raw = order("o-1", "order_no").to_string();
        let d = dl(
            "erp",
            "missing_field",
            Some("order_id"),
            raw.as_bytes(),
            CONTENT_JSON,
        );
        let before = Replayer::new(&cfg_with_erp_renames(&[]), hasher()).unwrap();
        let items = before.replay(&d).unwrap();
        assert_eq!(ids(&items), [Err("missing_field:order_id".into())]);
        assert_eq!(
            before.dead_letter_for(&d, &items[0], 5),
            None,
            "same reason"
        );

        let fixed =
            Replayer::new(&cfg_with_erp_renames(&[("order_no", "order_id")]), hasher()).unwrap();
        let items = fixed.replay(&d).unwrap();
        assert_eq!(ids(&items), [Ok("o-1".to_owned())]);
        let ev = items[0].result.as_ref().unwrap();
        assert_eq!(ev.received_at, d.received_at, "the original receive time");
        assert_eq!(
            ev.identities.phone_hash.as_deref(),
            Some(hasher().hash_normalized("+8613812345678").as_str()),
            "the zt-hashed phone resolves to the raw phone's identity"
        );
        assert_eq!(ev.identities.order_id.as_deref(), Some("SO-o-1"));
    }

    #[test]
    fn whole_request_bodies_split_like_the_endpoint() {
        let r = Replayer::new(&cfg_with_erp_renames(&[]), hasher()).unwrap();
        // A JSON array refused with 429: every item.
        let body = json!([order("a", "order_id"), order("b", "order_id"), {"type": "order.paid"}])
            .to_string();
        let d = dl("erp", "rate_limited", None, body.as_bytes(), CONTENT_JSON);
        assert_eq!(
            ids(&r.replay(&d).unwrap()),
            [
                Ok("a".to_owned()),
                Ok("b".to_owned()),
                Err("missing_field:order_id".into())
            ]
        );
        // NDJSON, recorded as such.
        let nd = format!("{}\n\n{}\n", order("c", "order_id"), order("d", "order_id"));
        let d = dl("erp", "bad_key", None, nd.as_bytes(), CONTENT_NDJSON);
        assert_eq!(
            ids(&r.replay(&d).unwrap()),
            [Ok("c".to_owned()), Ok("d".to_owned())]
        );
        // One object.
        let d = dl(
            "erp",
            "wrong_source_key",
            None,
            order("e", "order_id").to_string().as_bytes(),
            CONTENT_JSON,
        );
        assert_eq!(ids(&r.replay(&d).unwrap()), [Ok("e".to_owned())]);
        // A malformed body is malformed again, as a whole.
        let d = dl("erp", "malformed_json", None, b"[{\"type\":", CONTENT_JSON);
        let items = r.replay(&d).unwrap();
        assert_eq!(ids(&items), [Err("malformed_json:".into())]);
        assert_eq!(r.dead_letter_for(&d, &items[0], 5), None);
        // NDJSON sent as application/json was refused as malformed and still is.
        let d = dl("erp", "malformed_json", None, nd.as_bytes(), CONTENT_JSON);
        assert_eq!(ids(&r.replay(&d).unwrap()), [Err("malformed_json:".into())]);
        // Too many items for the current limit.
        let mut small = cfg_with_erp_renames(&[]);
        small.max_batch_events = 1;
        let d = dl("erp", "rate_limited", None, body.as_bytes(), CONTENT_JSON);
        let items = Replayer::new(&small, hasher()).unwrap().replay(&d).unwrap();
        assert_eq!(ids(&items), [Err("oversize_batch:".into())]);
        assert_eq!(items[0].raw, d.original, "the whole body");
    }

    #[test]
    fn item_dead_letters_stay_one_item() {
        let r = Replayer::new(&cfg_with_erp_renames(&[]), hasher()).unwrap();
        // An array element that is itself an array was refused as an item; it is not
        // a body of its own.
        let inner = json!([order("x", "order_id")]).to_string();
        let d = dl(
            "erp",
            "wrong_type",
            Some("$"),
            inner.as_bytes(),
            CONTENT_JSON,
        );
        assert_eq!(ids(&r.replay(&d).unwrap()), [Err("wrong_type:$".into())]);
        // An item over max_event_bytes still is.
        let mut small = cfg_with_erp_renames(&[]);
        small.max_event_bytes = 50;
        let raw = order("y", "order_id").to_string();
        let d = dl("erp", "oversize_event", None, raw.as_bytes(), CONTENT_JSON);
        let items = Replayer::new(&small, hasher()).unwrap().replay(&d).unwrap();
        assert_eq!(ids(&items), [Err("oversize_event:".into())]);
        // ... and fits once the limit is raised.
        assert_eq!(ids(&r.replay(&d).unwrap()), [Ok("y".to_owned())]);
    }

    #[test]
    fn a_changed_reason_gives_a_new_dead_letter_with_ingests_id() {
        let r =
            Replayer::new(&cfg_with_erp_renames(&[("order_no", "order_id")]), hasher()).unwrap();
        let mut rec = order("z", "order_no");
        rec["total"] = json!("abc");
        let d = dl(
            "erp",
            "missing_field",
            Some("order_id"),
            rec.to_string().as_bytes(),
            CONTENT_JSON,
        );
        let items = r.replay(&d).unwrap();
        assert_eq!(ids(&items), [Err("invalid_value:total".into())]);
        let new = r.dead_letter_for(&d, &items[0], 7).unwrap();
        assert_eq!(
            (
                new.stage.as_str(),
                new.reason.as_str(),
                new.field.as_deref()
            ),
            ("ingest", "invalid_value", Some("total"))
        );
        assert_eq!(new.original, d.original, "the same kept bytes");
        assert_eq!(new.dlq_id, dlq_id("erp", "invalid_value", &d.original));
        assert_ne!(new.dlq_id, d.dlq_id);
        assert_eq!((new.received_at, new.failed_at), (d.received_at, 7));
    }

    #[test]
    fn segment_bodies_calls_and_items() {
        let r = Replayer::new(&tests_support::config(), hasher()).unwrap();
        // A batch refused with 429, replayed three days later: the skew correction uses
        // the original receive time.
        let body = json!({"batch": [
            {"type": "track", "event": "Product Viewed", "userId": "u1", "messageId": "m1",
             "timestamp": "2026-01-05T01:59:00Z"},
            {"type": "identify", "userId": "u1", "messageId": "m2", "traits": {"email": "Li@Example.com"}},
            5
        ], "sentAt": "2026-01-05T01:59:30Z"})
        .to_string();
        let d = dl(
            "tracking",
            "rate_limited",
            None,
            body.as_bytes(),
            CONTENT_JSON,
        );
        let items = r.replay(&d).unwrap();
        assert_eq!(
            ids(&items),
            [
                Ok("m1".to_owned()),
                Ok("m2".to_owned()),
                Err("wrong_type:$".into())
            ]
        );
        let ev = items[0].result.as_ref().unwrap();
        assert_eq!(ev.received_at, d.received_at);
        assert_eq!(ev.sent_at, Some(1_767_578_370_000));
        assert_eq!(
            ev.event_time,
            corrected_event_time(1_767_578_340_000, Some(1_767_578_370_000), d.received_at)
        );
        assert_eq!(ev.event_time, 1_767_578_370_000);
        let who = items[1].result.as_ref().unwrap();
        assert_eq!(
            who.identities.email_hash.as_deref(),
            Some(hasher().hash_email("li@example.com", "e").unwrap().as_str())
        );

        // A single call of /v1/track whose body has no type: the endpoint's type is in the
        // media type.
        let call =
            json!({"event": "Order Completed", "userId": "u2", "messageId": "m3"}).to_string();
        let d = dl(
            "tracking",
            "bad_key",
            None,
            call.as_bytes(),
            &call_content_type("track"),
        );
        let items = r.replay(&d).unwrap();
        assert_eq!(ids(&items), [Ok("m3".to_owned())]);
        assert!(matches!(
            &items[0].result.as_ref().unwrap().payload,
            Payload::Tracking(t) if t.name.as_deref() == Some("Order Completed")
        ));
        // Without it (an older ingest), such a call cannot be replayed.
        let d = dl("tracking", "bad_key", None, call.as_bytes(), CONTENT_JSON);
        assert!(r.replay(&d).is_err());
        // A batch item refused on its own (no user) is one item, and fails the same way.
        let item = json!({"type": "track", "event": "X", "messageId": "m4"}).to_string();
        let d = dl(
            "tracking",
            "missing_field",
            Some("userId"),
            item.as_bytes(),
            CONTENT_JSON,
        );
        let items = r.replay(&d).unwrap();
        assert_eq!(items.len(), 1);
        assert_eq!(r.dead_letter_for(&d, &items[0], 1), None);
        // A batch body without a batch array is refused as before.
        let d = dl(
            "tracking",
            "missing_field",
            Some("batch"),
            b"{\"x\":1}",
            CONTENT_JSON,
        );
        assert_eq!(
            ids(&r.replay(&d).unwrap()),
            [Err("missing_field:batch".into())]
        );
    }

    #[test]
    fn what_cannot_be_replayed_is_refused() {
        let r = Replayer::new(&tests_support::config(), hasher()).unwrap();
        let mut d = dl("erp", "rate_limited", None, b"[]", CONTENT_JSON);
        d.stage = "sink".into();
        assert!(r.replay(&d).unwrap_err().0.contains("stage sink"));
        let d = dl("unknown", "unknown_source", None, b"[]", CONTENT_JSON);
        assert!(r.replay(&d).is_err());
        // A body kept cut at max_batch_bytes.
        let mut d = dl(
            "erp",
            "oversize_batch",
            None,
            b"[{\"type\":\"order.paid\",\"pad",
            CONTENT_JSON,
        );
        d.message = format!("{BODY_TOO_LARGE} 20000 bytes");
        assert!(r.replay(&d).unwrap_err().0.contains("cut"));
        // An NDJSON body an older ingest masked as text.
        let nd = format!(
            "{}\n{}",
            json!({"type": "order.paid", "order_id": "SO2026061800123"}),
            order("b", "order_id")
        );
        let mut d = dl("erp", "rate_limited", None, nd.as_bytes(), CONTENT_JSON);
        d.original = crate::redact::mask_text(nd.as_bytes());
        assert!(r.replay(&d).unwrap_err().0.contains("masked"));
    }
}
