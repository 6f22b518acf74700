//! Crash points for the crash tests, **test-only**: `ZT_SINK_FAILPOINT=<point>:<n>` makes
//! the process abort (`std::process::abort`, like `kill -9`: no destructors, no flush, no
//! commit) the n-th time (1-based) it reaches `<point>`:
//!
//! - `before_insert`: before an INSERT request starts;
//! - `mid_insert`: with half of an INSERT's rows sent and the request not ended;
//! - `after_insert`: right after an INSERT ended (between two tables of one batch, or
//!   before the commit);
//! - `before_commit`: after every insert of a batch ended, before its offsets are
//!   committed;
//! - `after_commit`: right after a commit.
//!
//! `<point>:<n>@<suffix>` counts only the hits for a topic whose name ends with
//! `<suffix>` (`before_commit` knows its partition's topic; the insert points know none):
//! the fault matrix's negative control crashes on a batch of `events.resolved`.
//!
//! Unset (always in production) it costs one relaxed atomic load per point.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// The crash points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Point {
    #[allow(missing_docs)]
    BeforeInsert,
    #[allow(missing_docs)]
    MidInsert,
    #[allow(missing_docs)]
    AfterInsert,
    #[allow(missing_docs)]
    BeforeCommit,
    #[allow(missing_docs)]
    AfterCommit,
}

impl Point {
    fn name(self) -> &'static str {
        match self {
            Point::BeforeInsert => "before_insert",
            Point::MidInsert => "mid_insert",
            Point::AfterInsert => "after_insert",
            Point::BeforeCommit => "before_commit",
            Point::AfterCommit => "after_commit",
        }
    }
}

/// Environment variable naming the crash point.
pub const ENV: &str = "ZT_SINK_FAILPOINT";

fn armed() -> Option<&'static (String, u64, Option<String>)> {
    static ARMED: OnceLock<Option<(String, u64, Option<String>)>> = OnceLock::new();
    ARMED
        .get_or_init(|| parse(&std::env::var(ENV).ok()?))
        .as_ref()
}

fn parse(v: &str) -> Option<(String, u64, Option<String>)> {
    let (p, rest) = v.split_once(':')?;
    let (n, topic) = match rest.split_once('@') {
        Some((n, t)) => (n, Some(t.to_owned())),
        None => (rest, None),
    };
    Some((p.to_owned(), n.parse().ok()?, topic))
}

/// Aborts the process if `point` is armed (without a topic) and reached for the n-th time.
pub fn hit(point: Point) {
    hit_on(point, None);
}

/// [`hit`] for a point that knows the topic it works on.
pub fn hit_on(point: Point, topic: Option<&str>) {
    static COUNT: AtomicU64 = AtomicU64::new(0);
    let Some((name, n, only)) = armed() else {
        return;
    };
    if name != point.name() {
        return;
    }
    if let Some(suffix) = only
        && !topic.is_some_and(|t| t.ends_with(suffix.as_str()))
    {
        return;
    }
    if COUNT.fetch_add(1, Ordering::Relaxed) + 1 == *n {
        eprintln!("{ENV}: aborting at {}:{n}", point.name());
        std::process::abort();
    }
}

/// Test-only negative control: `ZT_SINK_DISABLE_RESUME=1` turns the effectively-once
/// resume off (nothing already in ClickHouse is skipped), so a crash test run with it must
/// find duplicates. Never set it in production.
pub fn resume_disabled() -> bool {
    static OFF: OnceLock<bool> = OnceLock::new();
    *OFF.get_or_init(|| std::env::var("ZT_SINK_DISABLE_RESUME").as_deref() == Ok("1"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_point_the_count_and_an_optional_topic_suffix() {
        assert_eq!(
            super::parse("before_commit:3"),
            Some(("before_commit".into(), 3, None))
        );
        assert_eq!(
            super::parse("before_commit:2@events.resolved"),
            Some(("before_commit".into(), 2, Some("events.resolved".into())))
        );
        assert_eq!(super::parse("before_commit"), None);
        assert_eq!(super::parse("before_commit:x"), None);
    }
}
