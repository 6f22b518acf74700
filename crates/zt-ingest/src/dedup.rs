//! The deduplication window: event ids (per source) acknowledged within the last
//! `dedup_window_secs` are acknowledged again without being published twice.
//!
//! An id is remembered only after the broker acknowledged its event, so a failed publish
//! never hides a retry. The window lives in one ingest replica's memory and is bounded by
//! `dedup_max_entries` (oldest forgotten first); across replicas and restarts, the
//! downstream components deduplicate by `event_id`.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A bounded, time-windowed set of seen ids.
#[derive(Debug)]
pub struct DedupWindow {
    window: Duration,
    max_entries: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    seen: HashMap<String, Instant>,
    order: VecDeque<(Instant, String)>,
}

impl DedupWindow {
    /// A window of `window` holding at most `max_entries` ids. A zero window disables it.
    pub fn new(window: Duration, max_entries: usize) -> Self {
        DedupWindow {
            window,
            max_entries,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// True when `key` was recorded within the window.
    pub fn contains(&self, key: &str) -> bool {
        if self.window.is_zero() {
            return false;
        }
        let now = Instant::now();
        let mut g = self.lock();
        expire(&mut g, now, self.window);
        g.seen.contains_key(key)
    }

    /// Records `key` as published now.
    pub fn insert(&self, key: String) {
        if self.window.is_zero() || self.max_entries == 0 {
            return;
        }
        let now = Instant::now();
        let mut g = self.lock();
        expire(&mut g, now, self.window);
        if g.seen.insert(key.clone(), now).is_none() {
            g.order.push_back((now, key));
        }
        while g.seen.len() > self.max_entries {
            match g.order.pop_front() {
                Some((_, k)) => {
                    g.seen.remove(&k);
                }
                None => break,
            }
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
        assert!(!d.contains("a"));
        d.insert("a".into());
        assert!(d.contains("a"));
        d.insert("b".into());
        d.insert("c".into());
        assert!(!d.contains("a"), "oldest forgotten past the bound");
        assert!(d.contains("b") && d.contains("c"));
        assert_eq!(d.len(), 2);
    }

    #[test]
    fn forgets_after_window_and_can_be_disabled() {
        let d = DedupWindow::new(Duration::from_millis(20), 10);
        d.insert("a".into());
        std::thread::sleep(Duration::from_millis(30));
        assert!(!d.contains("a"));
        let off = DedupWindow::new(Duration::ZERO, 10);
        off.insert("a".into());
        assert!(!off.contains("a"));
    }
}
