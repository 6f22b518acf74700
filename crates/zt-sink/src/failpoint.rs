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
//! The mechanism is [`zt_runtime::failpoint`]; unset (always in production) a point costs
//! one load of an initialised `OnceLock`.

use std::sync::OnceLock;

use zt_runtime::failpoint::Failpoint;

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

static FAIL: Failpoint = Failpoint::new(ENV);

/// Aborts the process if `point` is armed (without a topic) and reached for the n-th time.
pub fn hit(point: Point) {
    FAIL.hit(point.name());
}

/// Is `point` the armed point?
pub fn is_armed(point: Point) -> bool {
    FAIL.is_armed(point.name())
}

/// [`hit`] for a point that knows the topic it works on.
pub fn hit_on(point: Point, topic: Option<&str>) {
    FAIL.hit_on(point.name(), topic);
}

/// Test-only negative control: `ZT_SINK_DISABLE_RESUME=1` turns the effectively-once
/// resume off (nothing already in ClickHouse is skipped), so a crash test run with it must
/// find duplicates. Never set it in production.
pub fn resume_disabled() -> bool {
    static OFF: OnceLock<bool> = OnceLock::new();
    *OFF.get_or_init(|| std::env::var("ZT_SINK_DISABLE_RESUME").as_deref() == Ok("1"))
}
