//! The suppression list of erased persons and identifiers (`zt erase`,
//! docs/erasure.md).
//!
//! **On the wire**: `<prefix>.suppressions`, a compacted topic. One record per suppressed
//! identifier, keyed by [`key`]: `sha256:` and the hex SHA-256 of `<kind>:<value>`, where
//! kind is `person_id`, `crm_customer_id`, `user_id`, `anonymous_id`, `phone_hash` or
//! `email_hash` and the value is what the events carry (phones and e-mails already salted
//! hashes). The value is a small JSON object `{"erasure_id": "...", "at_ms": ...}`: the
//! topic holds no personal data. A tombstone (no value) lifts a suppression.
//!
//! **Who honours it**: ingest (events carrying a suppressed identifier are acknowledged
//! and not published), the dead-letter replayer, the identity processor (a suppressed
//! event is not resolved) and the sink (no row for a suppressed event, person, link or
//! profile), so neither a client's replay, a dead-letter replay nor a re-run of the
//! processors or the sink from old offsets brings an erased person back.
//!
//! [`Suppressions::follow`] reads the topic from the beginning to its end before it
//! returns (so a component starts knowing every erasure made before it started) and then
//! follows it on a thread of its own.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use sha2::{Digest, Sha256};
use zt_model::Event;

use crate::KafkaConfig;

/// The identifier kinds a suppression names.
pub const KINDS: [&str; 6] = [
    "person_id",
    "crm_customer_id",
    "user_id",
    "anonymous_id",
    "phone_hash",
    "email_hash",
];

/// The record key (and set member) of one suppressed identifier.
pub fn key(kind: &str, value: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let d = Sha256::new()
        .chain_update(kind.as_bytes())
        .chain_update(b":")
        .chain_update(value.as_bytes())
        .finalize();
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256:");
    for b in d {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
    out
}

/// The identifiers of an event, as (kind, value) pairs (`person_id` included when the
/// event is resolved).
pub fn event_identifiers(ev: &Event) -> Vec<(&'static str, &str)> {
    let ids = &ev.identities;
    let mut out = Vec::with_capacity(6);
    for (kind, v) in [
        ("crm_customer_id", &ids.crm_customer_id),
        ("user_id", &ids.user_id),
        ("anonymous_id", &ids.anonymous_id),
        ("phone_hash", &ids.phone_hash),
        ("email_hash", &ids.email_hash),
        ("person_id", &ev.person_id),
    ] {
        if let Some(v) = v.as_deref().filter(|v| !v.is_empty()) {
            out.push((kind, v));
        }
    }
    out
}

/// The set of suppressed keys; cheap to clone (shared).
#[derive(Debug, Clone, Default)]
pub struct Suppressions {
    set: Arc<RwLock<HashSet<String>>>,
    /// The set's size, kept beside it under its write lock: a check when nothing is
    /// suppressed (the common case) reads this and takes no lock. A read lock taken per
    /// event by the workers of two cores at once bounced the lock's cache line between them.
    len: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    following: Arc<AtomicBool>,
}

impl Suppressions {
    /// An empty list that follows nothing (tests, or a deployment without erasures).
    pub fn empty() -> Self {
        Self::default()
    }

    /// Adds a key (as the follower does for each record).
    pub fn insert(&self, key: String) {
        let mut set = self.set.write().unwrap_or_else(|p| p.into_inner());
        set.insert(key);
        self.len.store(set.len(), Ordering::Release);
    }

    fn remove(&self, key: &str) {
        let mut set = self.set.write().unwrap_or_else(|p| p.into_inner());
        set.remove(key);
        self.len.store(set.len(), Ordering::Release);
    }

    /// Suppressed keys known.
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }

    /// True when nothing is suppressed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True when `(kind, value)` is suppressed.
    pub fn contains(&self, kind: &str, value: &str) -> bool {
        if self.is_empty() {
            return false;
        }
        let set = self.set.read().unwrap_or_else(|p| p.into_inner());
        set.contains(&key(kind, value))
    }

    /// True when any identifier of `ev` (or its person) is suppressed.
    pub fn suppresses_event(&self, ev: &Event) -> bool {
        // Nothing erased (the common case): no lock, no identifier listed or hashed.
        if self.is_empty() {
            return false;
        }
        let set = self.set.read().unwrap_or_else(|p| p.into_inner());
        event_identifiers(ev)
            .into_iter()
            .any(|(k, v)| set.contains(&key(k, v)))
    }

    /// True when any of the `(kind, value)` pairs is suppressed.
    pub fn suppresses_any<'a>(&self, ids: impl IntoIterator<Item = (&'a str, &'a str)>) -> bool {
        if self.is_empty() {
            return false;
        }
        let set = self.set.read().unwrap_or_else(|p| p.into_inner());
        ids.into_iter().any(|(k, v)| set.contains(&key(k, v)))
    }

    /// Reads `topic` from the beginning to its end into this list (failing after
    /// `patience`), then keeps following it on a thread of its own until
    /// [`Suppressions::stop`].
    pub fn follow(
        &self,
        kafka: &KafkaConfig,
        topic: &str,
        patience: Duration,
    ) -> crate::Result<()> {
        let consumer = read_to_end(kafka, topic, self, patience)?;
        self.following.store(true, Ordering::Relaxed);
        let l = self.clone();
        std::thread::Builder::new()
            .name("zt-suppressions".into())
            .spawn(move || {
                while !l.stop.load(Ordering::Relaxed) {
                    match consumer.poll(Duration::from_millis(500)) {
                        Some(Ok(m)) => l.apply(m.key(), m.payload().is_some()),
                        Some(Err(e)) => {
                            tracing::warn!(error = %e, "reading the suppression list");
                            std::thread::sleep(Duration::from_millis(500));
                        }
                        None => {}
                    }
                }
            })
            .map_err(|e| {
                crate::Error::Client(rdkafka::error::KafkaError::Subscription(e.to_string()))
            })?;
        Ok(())
    }

    /// Reads `topic` once, from the beginning to its end (for one-shot commands).
    pub fn load(kafka: &KafkaConfig, topic: &str, patience: Duration) -> crate::Result<Self> {
        let list = Suppressions::default();
        read_to_end(kafka, topic, &list, patience)?;
        Ok(list)
    }

    /// True once [`Suppressions::follow`] has read the topic to its end.
    pub fn is_following(&self) -> bool {
        self.following.load(Ordering::Relaxed)
    }

    /// Stops the follower thread (it ends within half a second).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    fn apply(&self, key: Option<&[u8]>, present: bool) {
        let Some(k) = key.and_then(|k| std::str::from_utf8(k).ok()) else {
            return;
        };
        if present {
            self.insert(k.to_owned());
        } else {
            self.remove(k);
        }
    }
}

/// Assigns every partition of `topic` from the beginning and applies records until each
/// partition's high watermark (as of the start) is reached; returns the consumer, still
/// assigned, for following.
fn read_to_end(
    kafka: &KafkaConfig,
    topic: &str,
    list: &Suppressions,
    patience: Duration,
) -> crate::Result<BaseConsumer> {
    let deadline = Instant::now() + patience;
    let left = || deadline.saturating_duration_since(Instant::now());
    // It goes on following the topic: empty fetches may wait 100 ms.
    let consumer = crate::client::range_reader(kafka, "zt-suppressions-reader", 100)?;
    let n = crate::client::partition_count(&consumer, topic, left())?;
    if n == 0 {
        return Err(crate::Error::Config {
            key: "topics.prefix".into(),
            reason: format!("the suppression list topic {topic} does not exist (zt topics create)"),
        });
    }
    let mut ranges = Vec::new();
    for p in 0..n {
        let (low, high) = consumer.fetch_watermarks(topic, p, left())?;
        ranges.push((topic.to_owned(), p, low, high));
    }
    crate::client::read_ranges(&consumer, &ranges, left(), |m| {
        list.apply(m.key(), m.payload().is_some());
    })?;
    Ok(consumer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_hide_the_value_and_depend_on_the_kind() {
        let k = key("phone_hash", "abc");
        assert!(k.starts_with("sha256:") && k.len() == 71);
        assert!(!k.contains("abc"));
        assert_ne!(k, key("email_hash", "abc"));
        assert_eq!(k, key("phone_hash", "abc"));
        // The key stored in the topic: SHA-256 of "user_id:u1" (Python's hashlib).
        assert_eq!(
            key("user_id", "u1"),
            "sha256:90c5bc873dedef8054fdde931c44f9a1f33d5dbacf4bf01b4973de1f764f2a76"
        );
    }

    #[test]
    fn an_event_is_suppressed_by_any_of_its_identifiers() {
        let s = Suppressions::empty();
        let ids = [("user_id", "u1"), ("anonymous_id", "a1")];
        assert!(!s.suppresses_any(ids));
        s.insert(key("anonymous_id", "a1"));
        assert!(s.suppresses_any(ids));
        assert!(s.contains("anonymous_id", "a1"));
        assert!(!s.contains("user_id", "a1"), "the kind matters");
        assert!(!s.suppresses_any([("person_id", "p9")]));
        s.insert(key("person_id", "p9"));
        assert!(s.suppresses_any([("person_id", "p9")]));
        s.apply(Some(key("person_id", "p9").as_bytes()), false);
        assert!(
            !s.suppresses_any([("person_id", "p9")]),
            "a tombstone lifts it"
        );
        // The size read without the lock follows both.
        assert_eq!(s.len(), 1);
        s.apply(Some(key("anonymous_id", "a1").as_bytes()), false);
        assert!(s.is_empty() && !s.suppresses_any(ids));
    }
}
