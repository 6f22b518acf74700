//! Crash points for crash tests, **test-only**: an environment variable set to
//! `<point>:<n>` makes the process abort (`std::process::abort`, like `kill -9`: no
//! destructors, no flush, no commit) the n-th time (1-based) it reaches `<point>`.
//! `<point>:<n>@<suffix>` counts only the hits for a topic whose name ends with `<suffix>`
//! (for points that know the topic they work on).
//!
//! Each component names its variable and its points: `ZT_SINK_FAILPOINT`
//! (`zt_sink::failpoint`), `ZT_IDENTITY_FAILPOINT` (`zt_process::identity`). Unset (always
//! in production) a point costs one load of an initialised `OnceLock`.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// The crash points of one component, armed by one environment variable.
#[derive(Debug)]
pub struct Failpoint {
    env: &'static str,
    armed: OnceLock<Option<Armed>>,
    count: AtomicU64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Armed {
    point: String,
    nth: u64,
    topic_suffix: Option<String>,
}

impl Failpoint {
    /// The crash points armed by the variable `env`.
    pub const fn new(env: &'static str) -> Self {
        Failpoint {
            env,
            armed: OnceLock::new(),
            count: AtomicU64::new(0),
        }
    }

    /// The variable's name.
    pub fn env(&self) -> &'static str {
        self.env
    }

    /// Aborts the process if `point` is armed (without a topic) and reached for the n-th
    /// time.
    pub fn hit(&self, point: &str) {
        self.hit_on(point, None);
    }

    /// Is `point` the armed point (whatever its count)?
    pub fn is_armed(&self, point: &str) -> bool {
        self.armed().is_some_and(|a| a.point == point)
    }

    fn armed(&self) -> Option<&Armed> {
        self.armed
            .get_or_init(|| parse(&std::env::var(self.env).ok()?))
            .as_ref()
    }

    /// [`Failpoint::hit`] for a point that knows the topic it works on.
    pub fn hit_on(&self, point: &str, topic: Option<&str>) {
        let Some(a) = self.armed() else { return };
        if a.point != point {
            return;
        }
        if let Some(suffix) = &a.topic_suffix
            && !topic.is_some_and(|t| t.ends_with(suffix.as_str()))
        {
            return;
        }
        if self.count.fetch_add(1, Ordering::Relaxed) + 1 == a.nth {
            eprintln!("{}: aborting at {point}:{}", self.env, a.nth);
            std::process::abort();
        }
    }
}

fn parse(v: &str) -> Option<Armed> {
    let (point, rest) = v.split_once(':')?;
    let (n, topic_suffix) = match rest.split_once('@') {
        Some((n, t)) => (n, Some(t.to_owned())),
        None => (rest, None),
    };
    Some(Armed {
        point: point.to_owned(),
        nth: n.parse().ok()?,
        topic_suffix,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_point_the_count_and_an_optional_topic_suffix() {
        let a = |p: &str, n, t: Option<&str>| Armed {
            point: p.into(),
            nth: n,
            topic_suffix: t.map(Into::into),
        };
        assert_eq!(parse("before_commit:3"), Some(a("before_commit", 3, None)));
        assert_eq!(
            parse("before_commit:2@events.resolved"),
            Some(a("before_commit", 2, Some("events.resolved")))
        );
        assert_eq!(parse("before_commit"), None);
        assert_eq!(parse("before_commit:x"), None);
    }

    #[test]
    fn an_unarmed_point_returns() {
        static F: Failpoint = Failpoint::new("ZT_TEST_FAILPOINT_NEVER_SET");
        for _ in 0..3 {
            F.hit("after_send");
        }
        assert_eq!(F.env(), "ZT_TEST_FAILPOINT_NEVER_SET");
    }
}
