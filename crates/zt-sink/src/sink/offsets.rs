//! The offsets of one partition a table already holds, as sorted disjoint runs: the
//! sink's resume state. Runs keep it small (a contiguous stretch of offsets is one pair).

/// A set of Kafka offsets stored as sorted, disjoint, inclusive runs.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct OffsetSet {
    runs: Vec<(i64, i64)>,
}

impl OffsetSet {
    /// True when `o` is in the set.
    pub fn contains(&self, o: i64) -> bool {
        // First run whose end is >= o.
        let i = self.runs.partition_point(|&(_, end)| end < o);
        self.runs.get(i).is_some_and(|&(start, _)| start <= o)
    }

    /// Adds `o`. Appending in increasing order is O(1).
    pub fn insert(&mut self, o: i64) {
        if let Some(last) = self.runs.last_mut() {
            if o == last.1.saturating_add(1) {
                last.1 = o;
                return;
            }
            if o > last.1 {
                self.runs.push((o, o));
                return;
            }
        } else {
            self.runs.push((o, o));
            return;
        }
        let i = self.runs.partition_point(|&(_, end)| end < o);
        if self.runs[i].0 <= o {
            return; // already in
        }
        let joins_prev = i > 0 && self.runs[i - 1].1.saturating_add(1) == o;
        let joins_next = self.runs[i].0 == o.saturating_add(1);
        match (joins_prev, joins_next) {
            (true, true) => {
                self.runs[i - 1].1 = self.runs[i].1;
                self.runs.remove(i);
            }
            (true, false) => self.runs[i - 1].1 = o,
            (false, true) => self.runs[i].0 = o,
            (false, false) => self.runs.insert(i, (o, o)),
        }
    }

    /// Forgets every offset below `o` (they are committed and will not be delivered
    /// again to this member).
    pub fn prune_below(&mut self, o: i64) {
        self.runs.retain(|&(_, end)| end >= o);
        if let Some(first) = self.runs.first_mut() {
            first.0 = first.0.max(o);
        }
    }

    /// Number of runs (memory use).
    pub fn runs(&self) -> usize {
        self.runs.len()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn behaves_like_a_set() {
        // Oracle: a BTreeSet fed the same pseudo-random offsets.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut set = OffsetSet::default();
        let mut oracle = BTreeSet::new();
        for _ in 0..5_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let o = (x % 400) as i64;
            set.insert(o);
            oracle.insert(o);
        }
        for o in -2..405 {
            assert_eq!(set.contains(o), oracle.contains(&o), "{o}");
        }
        set.prune_below(200);
        for o in 0..405 {
            assert_eq!(set.contains(o), o >= 200 && oracle.contains(&o), "{o}");
        }
    }

    #[test]
    fn contiguous_offsets_are_one_run() {
        let mut s = OffsetSet::default();
        for o in 10..1_000 {
            s.insert(o);
        }
        assert_eq!(s.runs(), 1);
        assert!(s.contains(10) && s.contains(999) && !s.contains(9) && !s.contains(1_000));
        s.insert(5);
        s.insert(7);
        s.insert(6);
        assert_eq!(s.runs(), 2);
        s.insert(8);
        s.insert(9);
        assert_eq!(s.runs(), 1);
    }
}
