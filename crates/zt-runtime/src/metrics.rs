//! The Prometheus registry of a process. Components register their own metrics (one
//! `metrics.rs` per crate) on the registry passed to them; names follow
//! `zt_<component>_<thing>_<unit>`, counters end in `_total`, and labels never carry user
//! ids, phones or e-mails.

use prometheus::{Encoder, IntGaugeVec, Opts, Registry, TextEncoder};

/// A process's metrics registry.
#[derive(Clone, Debug)]
pub struct Metrics {
    registry: Registry,
}

impl Metrics {
    /// A registry with `zt_build_info{version, component}` set to 1.
    pub fn new(component: &str) -> Self {
        let registry = Registry::new();
        let info = IntGaugeVec::new(
            Opts::new("zt_build_info", "build information; always 1"),
            &["version", "component"],
        )
        .expect("static metric definition");
        info.with_label_values(&[env!("CARGO_PKG_VERSION"), component])
            .set(1);
        registry
            .register(Box::new(info))
            .expect("first registration in a new registry");
        Metrics { registry }
    }

    /// The registry, to register component metrics on.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The Prometheus text exposition of every registered metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        // The text encoder only fails on a writer error; a Vec does not fail.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}
