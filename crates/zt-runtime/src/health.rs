//! Liveness and readiness. A process is live while its event loop runs; it is ready when
//! every registered check reports ready (e.g. the broker answers, the consumer has its
//! assignment). `/readyz` lists what is not ready by name.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

/// Shared health state of a process.
#[derive(Clone, Debug, Default)]
pub struct Health {
    inner: Arc<RwLock<State>>,
}

#[derive(Debug, Default)]
struct State {
    checks: BTreeMap<String, Check>,
    dead: Option<String>,
}

#[derive(Debug, Clone)]
struct Check {
    ready: bool,
    detail: String,
}

/// A handle that sets one readiness check.
#[derive(Clone, Debug)]
pub struct ReadyHandle {
    health: Health,
    name: String,
}

impl Health {
    /// New state with no checks: ready and live.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a check, initially not ready.
    pub fn register(&self, name: &str) -> ReadyHandle {
        self.write().checks.insert(
            name.to_owned(),
            Check {
                ready: false,
                detail: "starting".into(),
            },
        );
        ReadyHandle {
            health: self.clone(),
            name: name.to_owned(),
        }
    }

    /// Marks the process as no longer live (a fatal internal error); `/livez` then fails so
    /// the orchestrator restarts it.
    pub fn mark_dead(&self, reason: &str) {
        self.write().dead = Some(reason.to_owned());
    }

    /// `Ok` when live, `Err(reason)` otherwise.
    pub fn live(&self) -> Result<(), String> {
        match &self.read().dead {
            None => Ok(()),
            Some(r) => Err(r.clone()),
        }
    }

    /// `Ok` when every check is ready, else the checks that are not, with their detail.
    /// Not ready while no check is registered yet: the admin server starts before the
    /// component registers its checks, and a process that has not said what it waits for
    /// is not ready (`{"process": "starting"}`).
    pub fn ready(&self) -> Result<(), BTreeMap<String, String>> {
        let state = self.read();
        if state.checks.is_empty() {
            return Err(BTreeMap::from([(
                "process".to_owned(),
                "starting".to_owned(),
            )]));
        }
        let not: BTreeMap<String, String> = state
            .checks
            .iter()
            .filter(|(_, c)| !c.ready)
            .map(|(n, c)| (n.clone(), c.detail.clone()))
            .collect();
        if not.is_empty() { Ok(()) } else { Err(not) }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }
}

impl ReadyHandle {
    /// Sets the check ready.
    pub fn set_ready(&self) {
        self.set(true, "ok");
    }

    /// Sets the check not ready, with a short reason (no secrets, no personal data).
    pub fn set_not_ready(&self, detail: &str) {
        self.set(false, detail);
    }

    fn set(&self, ready: bool, detail: &str) {
        if let Some(c) = self.health.write().checks.get_mut(&self.name) {
            c.ready = ready;
            c.detail = detail.to_owned();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_needs_every_check() {
        let h = Health::new();
        assert_eq!(
            h.ready().unwrap_err().get("process").map(String::as_str),
            Some("starting"),
            "no check registered yet: not ready"
        );
        let a = h.register("kafka");
        let b = h.register("clickhouse");
        assert_eq!(h.ready().unwrap_err().len(), 2);
        a.set_ready();
        b.set_not_ready("connection refused");
        assert_eq!(
            h.ready().unwrap_err().get("clickhouse").map(String::as_str),
            Some("connection refused")
        );
        b.set_ready();
        assert!(h.ready().is_ok());
        assert!(h.live().is_ok());
        h.mark_dead("consumer loop ended");
        assert_eq!(h.live().unwrap_err(), "consumer loop ended");
    }
}
