//! A watchdog for a consumer-group member that holds no partitions while its group is
//! stuck.
//!
//! Seen on tansu 0.6 (the fault matrix, docs/reliability.md): a component killed with
//! `kill -9` and started again at once joins its group while the dead member's session is
//! still open, and is given an empty assignment. When the dead member's session expires
//! the coordinator should rebalance and hand its partitions to the new member; tansu does
//! not, so the group holds partitions that nobody reads and the pipeline stops until the
//! new member happens to re-join (minutes later, or never).
//!
//! [`IdleMemberWatch::should_rejoin`] says when to re-join (unsubscribe and subscribe
//! again, which sends a fresh JoinGroup): the member has held no partition for
//! `patience`, its topics have records the group has not committed, and the group's
//! committed offsets did not move for `patience` either. On a broker that behaves, an
//! idle member of a group with more members than partitions sees the others commit and
//! never re-joins; a group that really is stuck gets a rebalance, which is harmless.

use std::time::{Duration, Instant};

use rdkafka::consumer::{Consumer, ConsumerContext};
use rdkafka::{Offset, TopicPartitionList};

/// Broker calls of one check wait at most this long.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// See the module documentation.
#[derive(Debug)]
pub struct IdleMemberWatch {
    patience: Duration,
    idle_since: Option<Instant>,
    last_check: Option<Instant>,
    /// The group's committed offsets (summed) and since when they have not moved.
    committed: Option<(i64, Instant)>,
}

/// What one check of the group found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupProgress {
    /// Records on the topics the group has not committed.
    pub lag: i64,
    /// The sum of the group's committed offsets (moves when anyone commits).
    pub committed: i64,
}

impl IdleMemberWatch {
    /// A watch that asks for a re-join after `patience` without partitions and without
    /// progress of the group.
    pub fn new(patience: Duration) -> Self {
        IdleMemberWatch {
            patience,
            idle_since: None,
            last_check: None,
            committed: None,
        }
    }

    /// Call regularly (every few seconds at least). True when the member should re-join;
    /// the watch then starts over. Makes blocking broker calls (metadata, watermarks and
    /// the group's committed offsets: at most every `patience / 4`, and only while the
    /// member holds no partition).
    pub fn should_rejoin<C, K>(&mut self, consumer: &K, topics: &[String]) -> bool
    where
        C: ConsumerContext,
        K: Consumer<C>,
    {
        let holds = consumer.assignment().map(|a| a.count()).unwrap_or(0);
        let progress = if holds == 0 && self.check_due() {
            self.last_check = Some(Instant::now());
            group_progress(consumer, topics).ok()
        } else {
            None
        };
        self.decide(holds, progress, Instant::now())
    }

    fn check_due(&self) -> bool {
        self.last_check
            .is_none_or(|t| t.elapsed() >= self.patience / 4)
    }

    /// The decision, apart from the broker calls: `holds` partitions now, and the group's
    /// progress if it was checked.
    fn decide(&mut self, holds: usize, progress: Option<GroupProgress>, now: Instant) -> bool {
        if holds > 0 {
            self.idle_since = None;
            self.committed = None;
            return false;
        }
        let idle_since = *self.idle_since.get_or_insert(now);
        let Some(p) = progress else { return false };
        if p.lag <= 0 {
            self.committed = None;
            return false;
        }
        match self.committed {
            Some((c, since)) if c == p.committed => {
                if now.duration_since(since) >= self.patience
                    && now.duration_since(idle_since) >= self.patience
                {
                    self.idle_since = Some(now);
                    self.committed = None;
                    return true;
                }
                false
            }
            _ => {
                self.committed = Some((p.committed, now));
                false
            }
        }
    }
}

/// The group's lag and committed offsets over `topics`, from the broker.
pub fn group_progress<C, K>(consumer: &K, topics: &[String]) -> crate::Result<GroupProgress>
where
    C: ConsumerContext,
    K: Consumer<C>,
{
    let mut tpl = TopicPartitionList::new();
    let mut highs = Vec::new();
    for t in topics {
        let n = crate::client::partition_count(consumer, t, CALL_TIMEOUT)?;
        for p in 0..n {
            let (_, high) = consumer.fetch_watermarks(t, p, CALL_TIMEOUT)?;
            highs.push(high);
            tpl.add_partition(t, p);
        }
    }
    let got = consumer.committed_offsets(tpl, CALL_TIMEOUT)?;
    let mut out = GroupProgress {
        lag: 0,
        committed: 0,
    };
    for (e, high) in got.elements().iter().zip(highs) {
        let at = match e.offset() {
            Offset::Offset(o) => o,
            _ => 0,
        };
        out.committed += at;
        out.lag += (high - at).max(0);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: Duration = Duration::from_secs(20);

    fn prog(lag: i64, committed: i64) -> Option<GroupProgress> {
        Some(GroupProgress { lag, committed })
    }

    #[test]
    fn an_idle_member_of_a_stuck_group_rejoins_after_patience() {
        let t0 = Instant::now();
        let mut w = IdleMemberWatch::new(P);
        assert!(!w.decide(0, prog(50, 100), t0), "idle starts, first look");
        assert!(
            !w.decide(0, prog(50, 100), t0 + P / 2),
            "not stuck long enough"
        );
        assert!(w.decide(0, prog(50, 100), t0 + P), "stuck: re-join");
        // It starts over: the next re-join needs another full patience.
        assert!(!w.decide(0, prog(50, 100), t0 + P + P / 4));
        assert!(!w.decide(0, prog(50, 100), t0 + P + P / 2));
        assert!(w.decide(0, prog(50, 100), t0 + P * 2 + P / 4));
    }

    #[test]
    fn idle_and_stuck_both_for_the_whole_patience() {
        let t0 = Instant::now();
        let mut w = IdleMemberWatch::new(P);
        // Idle from t0; the group was moving until t0 + P / 2.
        w.decide(0, prog(50, 100), t0);
        w.decide(0, prog(50, 120), t0 + P / 2);
        assert!(
            !w.decide(0, prog(50, 120), t0 + P),
            "stuck only half the patience"
        );
        assert!(w.decide(0, prog(50, 120), t0 + P + P / 2));
    }

    #[test]
    fn no_rejoin_when_others_make_progress_or_nothing_is_left_or_it_holds_partitions() {
        let t0 = Instant::now();
        // Another member commits: the group moves, the idle member stays.
        let mut w = IdleMemberWatch::new(P);
        w.decide(0, None, t0);
        for i in 1..10u32 {
            assert!(!w.decide(0, prog(50, 100 + i64::from(i)), t0 + P * i));
        }
        // Nothing left to read.
        let mut w = IdleMemberWatch::new(P);
        w.decide(0, None, t0);
        for i in 1..10u32 {
            assert!(!w.decide(0, prog(0, 100), t0 + P * i));
        }
        // Holding partitions.
        let mut w = IdleMemberWatch::new(P);
        for i in 0..10u32 {
            assert!(!w.decide(3, prog(50, 100), t0 + P * i));
        }
        // Assigned meanwhile: the idle clock starts over.
        let mut w = IdleMemberWatch::new(P);
        w.decide(0, None, t0);
        w.decide(0, prog(50, 100), t0 + P);
        w.decide(2, None, t0 + P + P / 2);
        assert!(!w.decide(0, prog(50, 100), t0 + P * 2));
        assert!(!w.decide(0, prog(50, 100), t0 + P * 2 + P / 2));
    }
}
