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

fn armed() -> Option<&'static (String, u64)> {
    static ARMED: OnceLock<Option<(String, u64)>> = OnceLock::new();
    ARMED
        .get_or_init(|| {
            let v = std::env::var(ENV).ok()?;
            let (p, n) = v.split_once(':')?;
            Some((p.to_owned(), n.parse().ok()?))
        })
        .as_ref()
}

/// Aborts the process if `point` is armed and reached for the n-th time.
pub fn hit(point: Point) {
    static COUNT: AtomicU64 = AtomicU64::new(0);
    let Some((name, n)) = armed() else { return };
    if name == point.name() && COUNT.fetch_add(1, Ordering::Relaxed) + 1 == *n {
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
