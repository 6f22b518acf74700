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
//! committed offsets did not move for `patience` either. The same, with three times the
//! patience, for the partitions a member does not hold while it holds some: tansu can
//! leave some partitions assigned to a member that is gone. On a broker that behaves, an
//! idle member of a group with more members than partitions sees the others commit and
//! never re-joins; a group that really is stuck gets a rebalance, which is harmless.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use rdkafka::consumer::{Consumer, ConsumerContext};
use rdkafka::{Offset, TopicPartitionList};

use crate::config::KafkaConfig;

/// Broker calls of one check wait at most this long.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// See the module documentation.
#[derive(Debug)]
pub struct IdleMemberWatch {
    patience: Duration,
    /// How many partitions the member holds, and since when.
    assignment: Option<(usize, Instant)>,
    /// The topics' partitions in all, and when that was read.
    partitions: Option<(usize, Instant)>,
    last_check: Option<Instant>,
    /// The group's committed offsets (summed) and since when they have not moved.
    committed: Option<(i64, Instant)>,
    /// Where to send [`nudge_coordinator`]'s requests when the watch fires.
    nudge: Option<Nudge>,
}

/// The target of [`nudge_coordinator`]: a plaintext broker address and the group.
#[derive(Debug, Clone)]
pub struct Nudge {
    addr: String,
    group: String,
}

impl Nudge {
    /// The first bootstrap server of `cfg` and `group`; `None` unless the connection is
    /// plaintext (the nudge speaks the Kafka protocol itself, without TLS or SASL).
    pub fn new(cfg: &KafkaConfig, group: &str) -> Option<Nudge> {
        let protocol = cfg
            .options
            .get("security.protocol")
            .map_or("plaintext", String::as_str);
        if !protocol.eq_ignore_ascii_case("plaintext") {
            return None;
        }
        let addr = cfg.bootstrap_servers.split(',').next()?.trim();
        let addr = addr
            .strip_prefix("PLAINTEXT://")
            .or_else(|| addr.strip_prefix("plaintext://"))
            .unwrap_or(addr);
        (!addr.is_empty()).then(|| Nudge {
            addr: addr.to_owned(),
            group: group.to_owned(),
        })
    }
}

/// LeaveGroup requests a nudge sends, and how far apart.
const NUDGES: u32 = 24;
const NUDGE_EVERY: Duration = Duration::from_millis(500);

/// Works around a coordinator wedged on a leader that is no longer a member (tansu 0.6,
/// seen after the broker stalled longer than a session timeout: docs/reliability.md).
///
/// tansu keeps a group's leader across re-joins without checking that the leader is still
/// a member; when the leader's session expired during a stall, every member that joins is
/// made a follower of that ghost, waits for an assignment that never comes, and the group
/// never forms again (`tansu-broker` 0.6.0, `coordinator/group/administrator.rs`: the
/// JoinGroup of a formed group copies the old leader over; only reloading the group from
/// storage drops a leader that is not a member, and a reload happens when a request finds
/// the group busy with another one). A member that sees its group stuck calls this right
/// after sending a fresh JoinGroup (which keeps tansu busy with the group for 3 s): for
/// the next 12 s a background thread sends, every 500 ms on its own connection,
/// LeaveGroup v3 for a member id that does not exist. One of them finds the group busy,
/// tansu reloads it, the ghost leader is gone, and the next JoinGroup makes its sender the
/// leader. On a broker that behaves the request only answers UNKNOWN_MEMBER_ID (or
/// NOT_COORDINATOR from a broker that is not the group's coordinator): no effect.
pub fn nudge_coordinator(target: &Nudge) {
    let target = target.clone();
    let member = format!(
        "zt-nudge-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros())
            .unwrap_or_default()
    );
    let spawned = std::thread::Builder::new()
        .name("zt-group-nudge".into())
        .spawn(move || {
            for i in 0..NUDGES {
                if let Err(e) = leave_group(&target.addr, &target.group, &member, i as i32) {
                    tracing::debug!(error = %e, "group nudge not sent");
                }
                std::thread::sleep(NUDGE_EVERY);
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the group nudge thread");
    }
}

/// A LeaveGroup v3 request frame (length-prefixed, request header v1) for one member.
pub fn leave_group_request(group: &str, member: &str, correlation_id: i32) -> Vec<u8> {
    fn string(out: &mut Vec<u8>, s: &str) {
        let b = &s.as_bytes()[..s.len().min(i16::MAX as usize)];
        out.extend_from_slice(&(b.len() as i16).to_be_bytes());
        out.extend_from_slice(b);
    }
    let mut body = Vec::new();
    body.extend_from_slice(&13i16.to_be_bytes()); // LeaveGroup
    body.extend_from_slice(&3i16.to_be_bytes()); // version 3: a members array
    body.extend_from_slice(&correlation_id.to_be_bytes());
    string(&mut body, "zt-group-nudge"); // client id
    string(&mut body, group);
    body.extend_from_slice(&1i32.to_be_bytes()); // one member
    string(&mut body, member);
    body.extend_from_slice(&(-1i16).to_be_bytes()); // group_instance_id: null
    let mut frame = (body.len() as i32).to_be_bytes().to_vec();
    frame.extend_from_slice(&body);
    frame
}

fn leave_group(addr: &str, group: &str, member: &str, correlation_id: i32) -> std::io::Result<()> {
    let timeout = Duration::from_secs(5);
    let to = addr
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::other("no address"))?;
    let mut s = TcpStream::connect_timeout(&to, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    s.write_all(&leave_group_request(group, member, correlation_id))?;
    let mut len = [0u8; 4];
    s.read_exact(&mut len)?;
    let n = i32::from_be_bytes(len).clamp(0, 1 << 20) as usize;
    let mut reply = vec![0u8; n];
    s.read_exact(&mut reply)
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
            assignment: None,
            partitions: None,
            last_check: None,
            committed: None,
            nudge: None,
        }
    }

    /// The watch also nudges the coordinator ([`nudge_coordinator`]) when it fires, and
    /// on [`IdleMemberWatch::nudge`].
    pub fn with_nudge(mut self, nudge: Option<Nudge>) -> Self {
        self.nudge = nudge;
        self
    }

    /// Nudges the coordinator if a target is set; call after sending a fresh JoinGroup.
    pub fn nudge(&self) {
        if let Some(n) = &self.nudge {
            nudge_coordinator(n);
        }
    }

    /// Call regularly (every few seconds at least). True when the member should re-join;
    /// the watch then starts over. Makes blocking broker calls (metadata, watermarks and
    /// the group's committed offsets: at most every `patience / 4` while the member holds
    /// no partition, every `patience / 2` otherwise).
    ///
    /// The group's progress is taken over the partitions this member does *not* hold:
    /// with none, that is every partition (a member handed nothing); with some, the rest
    /// (partitions a coordinator assigned to a member that is gone, seen on tansu after a
    /// stall). A member holding partitions waits three times the patience, so a live
    /// member that is merely slow to commit (a long state restore) is not disturbed.
    pub fn should_rejoin<C, K>(&mut self, consumer: &K, topics: &[String]) -> bool
    where
        C: ConsumerContext,
        K: Consumer<C>,
    {
        let held: BTreeSet<(String, i32)> = consumer
            .assignment()
            .map(|a| {
                a.elements()
                    .iter()
                    .map(|e| (e.topic().to_owned(), e.partition()))
                    .collect()
            })
            .unwrap_or_default();
        let every = if held.is_empty() {
            self.patience / 4
        } else {
            self.patience / 2
        };
        let due = self.last_check.is_none_or(|t| t.elapsed() >= every);
        let progress = if due {
            self.last_check = Some(Instant::now());
            // A member holding every partition has nobody to wait for: no broker calls
            // (the partition count is refreshed at most once a minute).
            let stale = self
                .partitions
                .is_none_or(|(_, at)| at.elapsed() >= Duration::from_secs(60));
            if stale {
                self.partitions = topics
                    .iter()
                    .map(|t| crate::client::partition_count(consumer, t, CALL_TIMEOUT))
                    .sum::<crate::Result<i32>>()
                    .ok()
                    .map(|n| (usize::try_from(n).unwrap_or(0), Instant::now()));
            }
            match self.partitions {
                Some((total, _)) if !held.is_empty() && held.len() >= total => {
                    Some(GroupProgress {
                        lag: 0,
                        committed: 0,
                    })
                }
                _ => group_progress_except(consumer, topics, &held).ok(),
            }
        } else {
            None
        };
        self.decide(held.len(), progress, Instant::now())
    }

    /// The decision, apart from the broker calls: `holds` partitions now, and the progress
    /// of the group's other partitions if it was checked.
    fn decide(&mut self, holds: usize, progress: Option<GroupProgress>, now: Instant) -> bool {
        match self.assignment {
            Some((h, _)) if h == holds => {}
            _ => {
                self.assignment = Some((holds, now));
                self.committed = None;
            }
        }
        let assigned_since = self.assignment.map_or(now, |(_, t)| t);
        let patience = if holds == 0 {
            self.patience
        } else {
            self.patience * 3
        };
        let Some(p) = progress else { return false };
        if p.lag <= 0 {
            self.committed = None;
            return false;
        }
        match self.committed {
            Some((c, since)) if c == p.committed => {
                if now.duration_since(since) >= patience
                    && now.duration_since(assigned_since) >= patience
                {
                    self.assignment = Some((holds, now));
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
    group_progress_except(consumer, topics, &BTreeSet::new())
}

/// Records on `topics` that consumer group `group` has not committed (a partition without
/// a committed offset counts from 0), through a consumer of its own. Blocking.
pub fn group_lag(cfg: &KafkaConfig, group: &str, topics: &[String]) -> crate::Result<u64> {
    let c: rdkafka::consumer::BaseConsumer = crate::client::base_config(cfg)?
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()?;
    let p = group_progress(&c, topics)?;
    Ok(u64::try_from(p.lag).unwrap_or(0))
}

/// [`group_progress`] over the partitions of `topics` other than `except`.
pub fn group_progress_except<C, K>(
    consumer: &K,
    topics: &[String],
    except: &BTreeSet<(String, i32)>,
) -> crate::Result<GroupProgress>
where
    C: ConsumerContext,
    K: Consumer<C>,
{
    let mut tpl = TopicPartitionList::new();
    let mut latest = TopicPartitionList::new();
    for t in topics {
        let n = crate::client::partition_count(consumer, t, CALL_TIMEOUT)?;
        for p in (0..n).filter(|p| !except.contains(&(t.clone(), *p))) {
            tpl.add_partition(t, p);
            // Timestamp -1: the latest offset, i.e. the high watermark.
            latest.add_partition_offset(t, p, Offset::End)?;
        }
    }
    let mut out = GroupProgress {
        lag: 0,
        committed: 0,
    };
    if tpl.count() == 0 {
        return Ok(out);
    }
    // One ListOffsets request for every partition (not one per partition): this runs on
    // the processing loop of members that hold partitions too.
    let mut highs = std::collections::HashMap::new();
    for e in consumer.offsets_for_times(latest, CALL_TIMEOUT)?.elements() {
        let Offset::Offset(high) = e.offset() else {
            // A partition the broker gave no end offset for (its error, or none).
            let code = e
                .error()
                .err()
                .and_then(|k| k.rdkafka_error_code())
                .unwrap_or(rdkafka::types::RDKafkaErrorCode::OffsetOutOfRange);
            return Err(rdkafka::error::KafkaError::OffsetFetch(code).into());
        };
        highs.insert((e.topic().to_owned(), e.partition()), high);
    }
    let got = consumer.committed_offsets(tpl, CALL_TIMEOUT)?;
    for e in got.elements() {
        let at = match e.offset() {
            Offset::Offset(o) => o,
            _ => 0,
        };
        let high = highs
            .get(&(e.topic().to_owned(), e.partition()))
            .copied()
            .unwrap_or(at);
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
    fn the_nudge_is_a_leave_group_v3_frame() {
        // Hand-worked: size, api key 13, version 3, correlation 7, client id
        // "zt-group-nudge" (14), group "g" (1), one member "m" (1), null instance id:
        // 8 + 16 + 3 + 4 + 3 + 2 = 36 bytes after the size.
        let mut want: Vec<u8> = vec![0, 0, 0, 36, 0, 13, 0, 3, 0, 0, 0, 7, 0, 14];
        want.extend_from_slice(b"zt-group-nudge");
        want.extend_from_slice(&[0, 1, b'g', 0, 0, 0, 1, 0, 1, b'm', 0xff, 0xff]);
        assert_eq!(leave_group_request("g", "m", 7), want);
    }

    #[test]
    fn the_nudge_speaks_plaintext_only() {
        let mut cfg: KafkaConfig = serde_json::from_value(serde_json::json!({
            "bootstrap_servers": "PLAINTEXT://b1:9092, b2:9092",
            "client_id": "c",
            "producer": {"linger_ms": 5, "compression": "lz4", "message_timeout_ms": 1000,
                         "batch_size_bytes": 1000},
            "consumer": {"session_timeout_ms": 10000, "max_poll_interval_ms": 30000,
                         "auto_offset_reset": "earliest", "auto_commit_interval_ms": 1000},
            "options": {}
        }))
        .unwrap();
        let n = Nudge::new(&cfg, "grp").expect("plaintext");
        assert_eq!((n.addr.as_str(), n.group.as_str()), ("b1:9092", "grp"));
        cfg.options
            .insert("security.protocol".into(), "SASL_SSL".into());
        assert!(Nudge::new(&cfg, "grp").is_none());
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
    fn a_member_with_partitions_rejoins_when_the_others_stand_still_three_times_as_long() {
        // It holds 3; the group's other partitions have records and nobody commits them
        // (assigned to a member that is gone).
        let t0 = Instant::now();
        let mut w = IdleMemberWatch::new(P);
        assert!(!w.decide(3, prog(50, 100), t0));
        assert!(!w.decide(3, prog(50, 100), t0 + P));
        assert!(!w.decide(3, prog(50, 100), t0 + P * 2));
        assert!(w.decide(3, prog(50, 100), t0 + P * 3), "stuck: re-join");
        // A changed assignment starts the clock over.
        assert!(!w.decide(6, prog(50, 100), t0 + P * 4));
        assert!(!w.decide(6, prog(50, 100), t0 + P * 6));
        assert!(w.decide(6, prog(50, 100), t0 + P * 7));
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
        // Holding partitions while the others' partitions move.
        let mut w = IdleMemberWatch::new(P);
        for i in 0..10u32 {
            assert!(!w.decide(3, prog(50, 100 + i64::from(i)), t0 + P * i));
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
