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

use std::collections::VecDeque;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// An id in the window: 128 bits digested from the source and the event id
/// ([`DedupWindow::key`]), so that remembering an id allocates nothing and takes 16 bytes
/// instead of a `String` of the source and the id.
pub type Key = u128;

/// The most ids [`DedupWindow::new`] reserves room for in its list of ids up front (96
/// MiB of address space); a larger window's list grows from there. (Its index is sized for
/// `max_entries` at once: 16 bytes of address space an id, touched as ids arrive.)
pub const RESERVED_MAX: usize = 4 << 20;

/// The largest `dedup_max_entries` (an index of 2^29 slots, 4 GiB).
pub const MAX_ENTRIES: usize = 1 << 28;

/// A bounded, time-windowed set of seen ids.
///
/// Layout (a million ids do not fit the cache, so an id new to the window costs a memory
/// access wherever it goes):
/// - `order`: the ids in the order they were remembered, with the time, oldest first (24
///   bytes an id, written and read sequentially);
/// - `slots`: an open-addressing index into `order` (linear probing, at most half full,
///   8 bytes a slot). A slot holds 32 bits of the key (which also choose its home slot)
///   and the id's position in `order`; a match of those bits is confirmed against the
///   whole key in `order`. Looking an id up, remembering it and forgetting it each touch
///   one run of neighbouring slots.
///
/// It replaced `std`'s map of key to time (about 65 bytes an id, against about 40 here)
/// at no loss of speed (criterion `ingest_dedup_window`); what made ingest faster was
/// checking a whole request under one lock ([`DedupWindow::contains_each_at`]), not the
/// layout (docs/benchmarks.md, seventh session).
#[derive(Debug)]
pub struct DedupWindow {
    window: Duration,
    max_entries: usize,
    /// Two SipHash-1-3 keyings, random per process: a key's two halves.
    digests: (RandomState, foldhash::quality::RandomState),
    /// Times are kept as nanoseconds since `epoch` (a window before the window was made,
    /// so every remembered time, restored ones included, is after it).
    epoch: Instant,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// 0 is an empty slot; otherwise `(hash << 32) | position`, where `hash` is 32 bits of
    /// the key with the top bit set (so a slot is never 0) and `position` the low 32 bits
    /// of the id's position in the sequence of ids ever remembered.
    slots: Vec<u64>,
    /// The ids remembered, oldest first, with their time (ns since the epoch).
    order: VecDeque<(Key, u64)>,
    /// The position of `order`'s first id in the sequence of ids ever remembered.
    head: u64,
}

/// The 32 bits of `key` a slot keeps (top bit set) and whose low bits are its home slot.
fn slot_hash(key: Key) -> u32 {
    ((key >> 64) as u32) | 0x8000_0000
}

impl Inner {
    fn with_capacity(max_entries: usize) -> Inner {
        let slots = (max_entries.saturating_mul(2)).clamp(16, 2 * MAX_ENTRIES);
        Inner {
            // Zeroed memory from the allocator: untouched pages cost nothing.
            slots: vec![0; slots.next_power_of_two()],
            order: VecDeque::with_capacity(max_entries.min(RESERVED_MAX)),
            head: 0,
        }
    }

    fn mask(&self) -> usize {
        self.slots.len() - 1
    }

    fn home(&self, hash: u32) -> usize {
        hash as usize & self.mask()
    }

    /// The entry of `order` a slot points at.
    fn entry(&self, slot: u64) -> Option<&(Key, u64)> {
        let offset = (slot as u32).wrapping_sub(self.head as u32) as usize;
        self.order.get(offset)
    }

    /// The slot holding `key`, or the empty slot where it would go.
    fn probe(&self, key: Key) -> (usize, bool) {
        let hash = slot_hash(key);
        let mut i = self.home(hash);
        loop {
            let s = self.slots[i];
            if s == 0 {
                return (i, false);
            }
            if (s >> 32) as u32 == hash && self.entry(s).is_some_and(|(k, _)| *k == key) {
                return (i, true);
            }
            i = (i + 1) & self.mask();
        }
    }

    fn contains(&self, key: Key) -> bool {
        !self.slots.is_empty() && self.probe(key).1
    }

    /// Reads the home slot of every key, so that the cache misses of a batch of keys
    /// overlap (the loads do not depend on one another) before the probes that need them.
    fn touch(&self, keys: impl Iterator<Item = Key>) {
        if self.slots.is_empty() {
            return;
        }
        let mut any = 0u64;
        for key in keys {
            any ^= self.slots[self.home(slot_hash(key))];
        }
        std::hint::black_box(any);
    }

    /// Remembers `key` at `t` unless it is remembered already (then it keeps its first
    /// time), forgetting the oldest ids beyond `max_entries` first.
    fn remember(&mut self, key: Key, t: u64, max_entries: usize) {
        if self.slots.is_empty() {
            return;
        }
        let (mut i, found) = self.probe(key);
        if found {
            return;
        }
        if self.order.len() >= max_entries {
            while self.order.len() >= max_entries {
                if !self.forget_oldest() {
                    break;
                }
            }
            // Forgetting moves slots back: the empty slot found above may have moved.
            i = self.probe(key).0;
        }
        let position = self.head + self.order.len() as u64;
        self.slots[i] = (u64::from(slot_hash(key)) << 32) | u64::from(position as u32);
        self.order.push_back((key, t));
    }

    /// Forgets the oldest id; false when there is none.
    fn forget_oldest(&mut self) -> bool {
        let Some(&(key, _)) = self.order.front() else {
            return false;
        };
        let hash = slot_hash(key);
        let wanted = (u64::from(hash) << 32) | u64::from(self.head as u32);
        let mut i = self.home(hash);
        // The oldest id's slot is in its run: linear probing keeps every id between its
        // home slot and the next empty one.
        loop {
            let s = self.slots[i];
            if s == 0 {
                break;
            }
            if s == wanted {
                self.remove_slot(i);
                break;
            }
            i = (i + 1) & self.mask();
        }
        self.order.pop_front();
        self.head += 1;
        true
    }

    /// Empties slot `hole`, moving later slots of the run back so that every id stays
    /// reachable from its home slot without a gap (deletion without tombstones).
    fn remove_slot(&mut self, mut hole: usize) {
        let mask = self.mask();
        let mut j = hole;
        loop {
            j = (j + 1) & mask;
            let s = self.slots[j];
            if s == 0 {
                break;
            }
            let home = self.home((s >> 32) as u32);
            // The id at j may move back to the hole unless its home lies cyclically in
            // (hole, j].
            let stays = if hole <= j {
                hole < home && home <= j
            } else {
                hole < home || home <= j
            };
            if !stays {
                self.slots[hole] = s;
                hole = j;
            }
        }
        self.slots[hole] = 0;
    }

    /// Forgets the ids remembered at or before `cutoff`.
    fn expire(&mut self, cutoff: u64) {
        while self.order.front().is_some_and(|(_, t)| *t <= cutoff) {
            self.forget_oldest();
        }
    }
}

impl DedupWindow {
    /// A window of `window` holding at most `max_entries` ids (at most [`MAX_ENTRIES`]).
    /// A zero window disables it.
    ///
    /// The index is made for `max_entries` ids at once (zeroed address space, 16 bytes an
    /// id, touched as ids arrive), and room for the list of ids is reserved up to
    /// [`RESERVED_MAX`]: a window that grew by doubling spent about a tenth of ingest's
    /// time rehashing and copying itself while it filled.
    pub fn new(window: Duration, max_entries: usize) -> Self {
        let max_entries = max_entries.min(MAX_ENTRIES);
        let inner = if window.is_zero() || max_entries == 0 {
            Inner::default()
        } else {
            Inner::with_capacity(max_entries)
        };
        let now = Instant::now();
        DedupWindow {
            window,
            max_entries,
            digests: (
                RandomState::new(),
                foldhash::quality::RandomState::default(),
            ),
            epoch: now.checked_sub(window).unwrap_or(now),
            inner: Mutex::new(inner),
        }
    }

    /// The key of event id `id` of `source`: a SipHash-1-3 digest of the pair (the high
    /// half, which places the id in the index) and a foldhash digest (the low half), both
    /// under seeds drawn at random when the window was made (so only this process's keys
    /// match, and restored ids are keyed by the same window). Two different pairs share a
    /// key with a probability of about 2^-128 by chance, and of no more than 2^-64 for
    /// ids chosen to collide (SipHash is a keyed pseudo-random function; foldhash is
    /// fast, not made to resist that). The pair is hashed unambiguously (`str` hashing
    /// ends each string with a marker byte). (A second SipHash digest for the low half
    /// cost about 0.7 % of ingest's time.)
    pub fn key(&self, source: &str, id: &str) -> Key {
        let high = self.digests.0.hash_one((source, id));
        let low = self.digests.1.hash_one((source, id));
        (u128::from(high) << 64) | u128::from(low)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `at` in the window's time (ns since its epoch).
    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    /// The window as of `now`, expired ids dropped; `None` when the window is off.
    fn current(&self, now: Instant) -> Option<std::sync::MutexGuard<'_, Inner>> {
        if self.window.is_zero() || self.max_entries == 0 {
            return None;
        }
        let mut g = self.lock();
        let window = u64::try_from(self.window.as_nanos()).unwrap_or(u64::MAX);
        g.expire(self.nanos(now).saturating_sub(window));
        Some(g)
    }

    /// True when `key` was recorded within the window.
    pub fn contains(&self, key: Key) -> bool {
        self.contains_at(key, Instant::now())
    }

    /// [`Self::contains`] as of `now` (one clock reading for a whole request).
    pub fn contains_at(&self, key: Key, now: Instant) -> bool {
        self.current(now).is_some_and(|g| g.contains(key))
    }

    /// [`Self::contains_at`] of each of `keys` (a whole request), under one lock. The keys'
    /// home slots are read all together first, so that their cache misses overlap instead
    /// of following one another.
    pub fn contains_each_at(&self, keys: &[Key], now: Instant) -> Vec<bool> {
        let Some(g) = self.current(now) else {
            return vec![false; keys.len()];
        };
        g.touch(keys.iter().copied());
        keys.iter().map(|k| g.contains(*k)).collect()
    }

    /// Records `key` as published now.
    pub fn insert(&self, key: Key) {
        self.insert_all([key]);
    }

    /// Records every one of `keys` as published now, under one lock ([`Self::insert`] for
    /// a whole request). An id remembered already keeps its first time.
    pub fn insert_all(&self, keys: impl IntoIterator<Item = Key>) {
        let now = Instant::now();
        let Some(mut g) = self.current(now) else {
            return;
        };
        let t = self.nanos(now);
        let keys: Vec<Key> = keys.into_iter().collect();
        // The slots this will touch, read together first (see `contains_each_at`): the new
        // ids' and, in a full window, those of the oldest ids they push out.
        let leaving = (g.order.len() + keys.len()).saturating_sub(self.max_entries);
        let oldest: Vec<Key> = g.order.iter().take(leaving).map(|(k, _)| *k).collect();
        g.touch(keys.iter().chain(&oldest).copied());
        for key in keys {
            g.remember(key, t, self.max_entries);
        }
    }

    /// Records `key` as published `age` ago (restored ids keep their place in the window;
    /// insert them oldest first).
    pub fn insert_aged(&self, key: Key, age: Duration) {
        if age >= self.window {
            return;
        }
        let now = Instant::now();
        let at = now.checked_sub(age).unwrap_or(self.epoch);
        if let Some(mut g) = self.current(now) {
            let t = self.nanos(at);
            g.remember(key, t, self.max_entries);
        }
    }

    /// Ids currently remembered.
    pub fn len(&self) -> usize {
        self.lock().order.len()
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
        let seen = |keys: &[Key]| -> Vec<bool> {
            let each: Vec<bool> = keys.iter().map(|k| d.contains_at(*k, now)).collect();
            assert_eq!(d.contains_each_at(keys, now), each);
            each
        };
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
        assert_eq!(
            off.contains_each_at(&[off.key("crm", "a")], Instant::now()),
            [false]
        );
    }

    /// The index against a plain reference (a list in order and a set), over thousands of
    /// random operations on keys made to share home slots (runs of many ids, wrapping past
    /// the table's end), so that forgetting moves ids back inside runs: after every step
    /// each key is remembered exactly when the reference remembers it.
    #[test]
    fn the_index_agrees_with_a_reference_as_ids_come_and_go() {
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut draw = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for max in [1usize, 2, 3, 5, 8] {
            let mut inner = Inner::with_capacity(max);
            let slots = inner.slots.len() as u64;
            // 24 keys; homes among the last two and the first two slots.
            let pool: Vec<Key> = (0..24u64)
                .map(|i| {
                    let home = [slots - 2, slots - 1, 0, 1][(i % 4) as usize];
                    let hash = (draw() << 32) | (u64::from(0x8000_0000u32) | home);
                    (u128::from(hash) << 64) | u128::from(i)
                })
                .collect();
            let mut reference: VecDeque<(Key, u64)> = VecDeque::new();
            let mut t = 0u64;
            for step in 0..4000 {
                t += 1 + draw() % 3;
                if draw() % 4 == 0 {
                    let cutoff = t.saturating_sub(draw() % 40);
                    inner.expire(cutoff);
                    while reference.front().is_some_and(|(_, at)| *at <= cutoff) {
                        reference.pop_front();
                    }
                } else {
                    let key = pool[(draw() % pool.len() as u64) as usize];
                    inner.remember(key, t, max);
                    if !reference.iter().any(|(k, _)| *k == key) {
                        while reference.len() >= max {
                            reference.pop_front();
                        }
                        reference.push_back((key, t));
                    }
                }
                for key in &pool {
                    assert_eq!(
                        inner.contains(*key),
                        reference.iter().any(|(k, _)| k == key),
                        "max {max}, step {step}"
                    );
                }
                assert_eq!(inner.order, reference, "max {max}, step {step}");
                let used = inner.slots.iter().filter(|s| **s != 0).count();
                assert_eq!(used, reference.len(), "max {max}, step {step}: stale slots");
            }
        }
    }

    #[test]
    fn an_id_remembered_again_keeps_its_first_time() {
        let mut inner = Inner::with_capacity(10);
        inner.remember(7, 10, 10);
        inner.remember(7, 50, 10);
        assert_eq!(inner.order, [(7, 10)]);
        // Forgotten with the ids of time 10, although remembered again at 50.
        inner.expire(10);
        assert!(!inner.contains(7));
        assert!(inner.slots.iter().all(|s| *s == 0));
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
