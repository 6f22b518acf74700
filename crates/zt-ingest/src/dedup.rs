//! The deduplication window: event ids (per source) acknowledged within the last
//! `dedup_window_secs` are acknowledged again without being published twice.
//!
//! An id is remembered only after the broker acknowledged its event, so a failed publish
//! never hides a retry. The window lives in one ingest replica's memory and is bounded by
//! `dedup_max_entries` (oldest forgotten first).
//!
//! **Across restarts** ([`restore`]): before ingest accepts events it reads back the ids
//! of the events published in the last `dedup_restore_secs` (from each
//! `<prefix>.events.<source>` topic, by record timestamp, at most `dedup_max_entries`
//! records), so a client that retries a request whose answer a crash swallowed (the events
//! were acknowledged by the broker, the 200 never left) is deduplicated as if nothing had
//! happened. Found by the fault matrix (kill -9 of ingest mid-stream published 26 events
//! twice; docs/reliability.md). Two replicas behind one load balancer still do not see
//! each other's ids: a retry landing on the other replica can publish an event twice.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// An id in the window: 128 bits digested from the source and the event id
/// ([`DedupWindow::key`]), so that remembering an id allocates nothing and takes 16 bytes
/// instead of a `String` of the source and the id.
pub type Key = u128;

/// The most ids [`DedupWindow::new`] reserves room for up front (about 400 MiB of address
/// space); a larger window grows from there.
pub const RESERVED_MAX: usize = 4 << 20;

/// A bounded, time-windowed set of seen ids.
#[derive(Debug)]
pub struct DedupWindow {
    window: Duration,
    max_entries: usize,
    /// Two SipHash-1-3 keyings, random per process: a key's two halves.
    digests: (RandomState, RandomState),
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    seen: HashMap<Key, Instant, zt_runtime::digest::BuildDigestHasher>,
    order: VecDeque<(Instant, Key)>,
}

impl DedupWindow {
    /// A window of `window` holding at most `max_entries` ids. A zero window disables it.
    ///
    /// Room for `max_entries` ids (at most [`RESERVED_MAX`]) is reserved at once (address
    /// space: about 100 bytes per id, touched as ids arrive): a window that grew by doubling spent about a tenth of
    /// ingest's time rehashing and copying itself while it filled, and held the old and
    /// the new table at once at every step.
    pub fn new(window: Duration, max_entries: usize) -> Self {
        let room = if window.is_zero() {
            0
        } else {
            max_entries.min(RESERVED_MAX)
        };
        DedupWindow {
            window,
            max_entries,
            digests: (RandomState::new(), RandomState::new()),
            inner: Mutex::new(Inner {
                seen: HashMap::with_capacity_and_hasher(room, Default::default()),
                order: VecDeque::with_capacity(room),
            }),
        }
    }

    /// The key of event id `id` of `source`: two SipHash-1-3 digests of the pair under
    /// keys drawn at random when the window was made (so only this process's keys match,
    /// and restored ids are keyed by the same window). Two different pairs share a key
    /// with a probability of about 2^-128; the pair is hashed unambiguously (`str`
    /// hashing ends each string with a marker byte).
    pub fn key(&self, source: &str, id: &str) -> Key {
        let half = |s: &RandomState| s.hash_one((source, id));
        (u128::from(half(&self.digests.0)) << 64) | u128::from(half(&self.digests.1))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The window as of `now`, expired ids dropped; `None` when the window is off.
    fn current(&self, now: Instant) -> Option<std::sync::MutexGuard<'_, Inner>> {
        if self.window.is_zero() {
            return None;
        }
        let mut g = self.lock();
        expire(&mut g, now, self.window);
        Some(g)
    }

    /// True when `key` was recorded within the window.
    pub fn contains(&self, key: Key) -> bool {
        self.current(Instant::now())
            .is_some_and(|g| g.seen.contains_key(&key))
    }

    /// [`Self::contains`] as of `now` (one clock reading for a whole request).
    pub fn contains_at(&self, key: Key, now: Instant) -> bool {
        self.current(now).is_some_and(|g| g.seen.contains_key(&key))
    }

    /// Records `key` as published now.
    pub fn insert(&self, key: Key) {
        self.insert_all([key]);
    }

    /// Records every one of `keys` as published now, under one lock ([`Self::insert`] for
    /// a whole request).
    pub fn insert_all(&self, keys: impl IntoIterator<Item = Key>) {
        if self.max_entries == 0 {
            return;
        }
        let now = Instant::now();
        let Some(mut g) = self.current(now) else {
            return;
        };
        for key in keys {
            remember(&mut g, key, now, self.max_entries);
        }
    }

    /// Records `key` as published `age` ago (restored ids keep their place in the window;
    /// insert them oldest first).
    pub fn insert_aged(&self, key: Key, age: Duration) {
        if self.window.is_zero() || self.max_entries == 0 || age >= self.window {
            return;
        }
        let now = Instant::now().checked_sub(age).unwrap_or_else(Instant::now);
        if let Some(mut g) = self.current(now) {
            remember(&mut g, key, now, self.max_entries);
        }
    }

    /// Ids currently remembered.
    pub fn len(&self) -> usize {
        self.lock().seen.len()
    }

    /// True when nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// How many ids [`restore`] found and from how many records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Restored {
    /// Records read back.
    pub records: usize,
    /// Ids remembered (records that decoded, inside the window).
    pub ids: usize,
}

/// Reads back the ids of the events published on `topics` (source, topic) during the
/// last `since`, at most `max_records` records (the newest), and remembers them in
/// `window` with their age. Blocking; fails when the broker cannot be read within
/// `patience` (ingest then keeps answering 503 and tries again).
pub fn restore(
    kafka: &zt_kafka::KafkaConfig,
    topics: &[(zt_model::Source, String)],
    window: &DedupWindow,
    since: Duration,
    max_records: usize,
    patience: Duration,
) -> Result<Restored, zt_kafka::Error> {
    use rdkafka::consumer::Consumer;
    use rdkafka::{Message, Offset, TopicPartitionList};

    if since.is_zero() || window.window.is_zero() || max_records == 0 {
        return Ok(Restored::default());
    }
    let deadline = Instant::now() + patience;
    let left = || deadline.saturating_duration_since(Instant::now());
    let consumer = zt_kafka::client::range_reader(kafka, "zt-ingest-dedup-restore", 10)?;
    let now_ms = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis(),
    )
    .unwrap_or(i64::MAX);
    let from_ms = now_ms.saturating_sub(i64::try_from(since.as_millis()).unwrap_or(i64::MAX));
    // Where to start on every partition: the first record at or after `from_ms`, but no
    // more than the partition's share of `max_records` before its end.
    let mut parts: Vec<(zt_model::Source, String, i32, i64, i64)> = Vec::new();
    for (source, topic) in topics {
        let md = consumer.fetch_metadata(Some(topic), left())?;
        let n = md
            .topics()
            .iter()
            .find(|t| t.name() == topic)
            .map_or(0, |t| t.partitions().len() as i32);
        let mut tpl = TopicPartitionList::new();
        for p in 0..n {
            tpl.add_partition_offset(topic, p, Offset::Offset(from_ms))?;
        }
        if n == 0 {
            continue;
        }
        let starts = consumer.offsets_for_times(tpl, left())?;
        for e in starts.elements() {
            let (low, high) = consumer.fetch_watermarks(topic, e.partition(), left())?;
            let start = match e.offset() {
                Offset::Offset(o) => o.max(low),
                _ => high, // nothing at or after `from_ms`
            };
            if start < high {
                parts.push((*source, topic.clone(), e.partition(), start, high));
            }
        }
    }
    if parts.is_empty() {
        return Ok(Restored::default());
    }
    let share = (max_records / parts.len()).max(1) as i64;
    let sources: std::collections::HashMap<(String, i32), zt_model::Source> = parts
        .iter()
        .map(|(s, t, p, _, _)| ((t.clone(), *p), *s))
        .collect();
    let ranges: Vec<zt_kafka::client::Range> = parts
        .iter()
        .map(|(_, t, p, start, high)| (t.clone(), *p, (*start).max(high - share), *high))
        .collect();
    let mut found: Vec<(i64, Key)> = Vec::new();
    let mut records = 0usize;
    zt_kafka::client::read_ranges(&consumer, &ranges, left(), |m| {
        records += 1;
        let Some(source) = sources.get(&(m.topic().to_owned(), m.partition())) else {
            return;
        };
        if let Some(ev) = m
            .payload()
            .and_then(|b| zt_model::decode::<zt_model::Event>(b).ok())
        {
            let ts = m.timestamp().to_millis().unwrap_or(now_ms);
            found.push((ts, window.key(source.as_str(), &ev.event_id)));
        }
    })?;
    found.sort();
    let mut ids = 0usize;
    for (ts, key) in found {
        let age = Duration::from_millis(u64::try_from(now_ms - ts).unwrap_or(0));
        if age < window.window {
            window.insert_aged(key, age);
            ids += 1;
        }
    }
    Ok(Restored { records, ids })
}

/// Records `key` at `now`, forgetting the oldest ids beyond `max_entries`.
fn remember(g: &mut Inner, key: Key, now: Instant, max_entries: usize) {
    if g.seen.insert(key, now).is_none() {
        g.order.push_back((now, key));
    }
    while g.seen.len() > max_entries {
        match g.order.pop_front() {
            Some((_, k)) => {
                g.seen.remove(&k);
            }
            None => break,
        }
    }
}

fn expire(g: &mut Inner, now: Instant, window: Duration) {
    while let Some((t, _)) = g.order.front() {
        if now.duration_since(*t) < window {
            break;
        }
        if let Some((t, k)) = g.order.pop_front()
            && g.seen.get(&k) == Some(&t)
        {
            g.seen.remove(&k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_within_window_and_bound() {
        let d = DedupWindow::new(Duration::from_secs(60), 2);
        let k = |id| d.key("crm", id);
        assert!(!d.contains(k("a")));
        d.insert(k("a"));
        assert!(d.contains(k("a")));
        d.insert(k("b"));
        d.insert(k("c"));
        assert!(!d.contains(k("a")), "oldest forgotten past the bound");
        assert!(d.contains(k("b")) && d.contains(k("c")));
        assert_eq!(d.len(), 2);
    }

    #[test]
    fn keys_tell_sources_and_ids_apart() {
        let d = DedupWindow::new(Duration::from_secs(60), 10);
        assert_eq!(d.key("crm", "a"), d.key("crm", "a"));
        assert_ne!(
            d.key("crm", "a"),
            d.key("erp", "a"),
            "same id, another source"
        );
        assert_ne!(
            d.key("crm", "ab"),
            d.key("crma", "b"),
            "the pair, not the bytes"
        );
        assert_ne!(d.key("crm", "a"), d.key("crm", "b"));
        d.insert(d.key("crm", "a"));
        assert!(!d.contains(d.key("erp", "a")));
        // Another window (another process) keys the same pair otherwise.
        let other = DedupWindow::new(Duration::from_secs(60), 10);
        assert_ne!(d.key("crm", "a"), other.key("crm", "a"));
    }

    #[test]
    fn a_whole_request_is_checked_and_recorded_like_one_id_at_a_time() {
        let d = DedupWindow::new(Duration::from_secs(60), 3);
        let k = |id| d.key("crm", id);
        d.insert(k("a"));
        let now = Instant::now();
        let seen =
            |keys: &[Key]| -> Vec<bool> { keys.iter().map(|k| d.contains_at(*k, now)).collect() };
        assert_eq!(seen(&[k("a"), k("b"), k("c")]), [true, false, false]);
        d.insert_all([k("b"), k("c"), k("d")]);
        // Bounded as before: four ids recorded, the oldest ("a") forgotten.
        assert_eq!(
            seen(&[k("a"), k("b"), k("c"), k("d")]),
            [false, true, true, true]
        );
        assert_eq!(d.len(), 3);
        let off = DedupWindow::new(Duration::ZERO, 10);
        off.insert_all([off.key("crm", "a")]);
        assert!(!off.contains_at(off.key("crm", "a"), Instant::now()));
    }

    #[test]
    fn forgets_after_window_and_can_be_disabled() {
        let d = DedupWindow::new(Duration::from_millis(20), 10);
        d.insert(d.key("crm", "a"));
        std::thread::sleep(Duration::from_millis(30));
        assert!(!d.contains(d.key("crm", "a")));
        let off = DedupWindow::new(Duration::ZERO, 10);
        off.insert(off.key("crm", "a"));
        assert!(!off.contains(off.key("crm", "a")));
    }
}
