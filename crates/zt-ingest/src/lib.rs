//! `zt ingest`: the HTTP front door that upstream systems publish to.
//!
//! - **Routes**: `POST /v1/sources/{source}/events` (native records of crm, erp,
//!   logistics, service and marketing: a JSON array, one object, or NDJSON), the
//!   Segment-compatible `POST /v1/track|identify|page|screen|alias|group|batch`, and the
//!   Confluent Schema Registry read endpoints (`/schemas/ids/{id}`, `/subjects`, ...). The
//!   whole API is described in `docs/openapi.yaml`.
//! - **On the wire**: each accepted item becomes one canonical `zt.Event` on
//!   `<prefix>.events.<source>` in the Confluent wire format, keyed by its most stable
//!   identifier; each rejected item (and each request refused as a whole) becomes one
//!   `zt.DeadLetter` on `<prefix>.dlq` with reason, field, source, time and the original
//!   bytes with phones and e-mails replaced by their salted hashes.
//! - **Delivery guarantee**: a 200 is sent only after the broker acknowledged every record
//!   of the request (idempotent producer, `acks=all`); otherwise 503 and the client retries.
//!   Event ids acknowledged within the dedup window are acknowledged again without being
//!   published twice, so a retry after a partial failure does not duplicate.
//! - **PII**: phones and e-mails are normalised and hashed before an event is built; raw
//!   values never reach Kafka, logs or metric labels.
//! - **Replay**: [`replay::Replayer`] re-submits a dead letter's kept bytes through the
//!   current normalisers exactly as the endpoint that refused them would (`zt replay dlq`).

pub mod auth;
pub mod config;
pub mod dedup;
pub mod error;
pub mod fields;
#[doc(hidden)]
pub mod fuzzing;
pub mod items;
pub mod metrics;
pub mod normalize;
pub mod publish;
pub mod redact;
pub mod registry;
pub mod replay;
pub mod scan;
pub mod server;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use zt_kafka::{KafkaConfig, TopicsConfig};
use zt_model::pii::PiiHasher;
use zt_runtime::health::ReadyHandle;
use zt_runtime::{Health, Metrics, Shutdown};

pub use config::IngestConfig;
use server::AppState;

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Configuration refused.
    #[error(transparent)]
    Config(#[from] error::ConfigError),
    /// The Kafka client could not be built.
    #[error("kafka client")]
    Kafka(#[from] zt_kafka::Error),
    /// Metrics registration failed.
    #[error("metrics registration")]
    Metrics(#[from] prometheus::Error),
    /// The listener could not bind.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Everything the service needs.
#[derive(Debug, Clone)]
pub struct IngestDeps {
    /// `[ingest]`.
    pub ingest: IngestConfig,
    /// `[kafka]`.
    pub kafka: KafkaConfig,
    /// `[topics]`.
    pub topics: TopicsConfig,
    /// The PII hasher from `[pii]`.
    pub hasher: PiiHasher,
}

/// A running ingest server.
#[derive(Debug)]
pub struct Running {
    /// The bound public address.
    pub addr: SocketAddr,
    /// Completes when the server stopped after shutdown.
    pub task: tokio::task::JoinHandle<()>,
}

/// Builds the shared state (producer, keys, windows, metrics).
pub fn build_state(deps: IngestDeps, metrics: &Metrics) -> Result<Arc<AppState>, Error> {
    deps.ingest.validate()?;
    let mappings = items::source_mappings(&deps.ingest)?;
    let mut pc = zt_kafka::client::producer_config(&deps.kafka)?;
    let timeout_ms = deps
        .ingest
        .publish_timeout_ms
        .min(u64::from(deps.kafka.producer.message_timeout_ms));
    pc.set("message.timeout.ms", timeout_ms.to_string());
    let m = metrics::IngestMetrics::new(metrics.registry())?;
    let publisher = publish::Publisher::new(
        pc,
        deps.topics.clone(),
        Duration::from_millis(timeout_ms),
        m.clone(),
    )
    .map_err(zt_kafka::Error::Client)?;
    Ok(Arc::new(AppState {
        keys: auth::KeyRing::new(&deps.ingest),
        limiter: auth::RateLimiter::default(),
        dedup: dedup::DedupWindow::new(
            Duration::from_secs(deps.ingest.dedup_window_secs),
            deps.ingest.dedup_max_entries,
        ),
        hasher: deps.hasher,
        mappings,
        publisher,
        metrics: m,
        broker_ready: AtomicBool::new(false),
        startup_loaded: AtomicBool::new(false),
        suppressions: zt_kafka::suppress::Suppressions::empty(),
        topics: deps.topics,
        cfg: deps.ingest,
    }))
}

/// Least time between two producer replacements.
pub(crate) const RECOVERY_INTERVAL: Duration = Duration::from_secs(5);

/// Probes the broker every few seconds and reports readiness; first loads the suppression
/// list and reads the dedup window back from the event topics (`dedup::restore`), retried
/// until it succeeds.
fn spawn_readiness(
    state: Arc<AppState>,
    kafka: KafkaConfig,
    ready: ReadyHandle,
    shutdown: Shutdown,
) {
    tokio::spawn(async move {
        loop {
            let st = state.clone();
            let ok =
                tokio::task::spawn_blocking(move || st.publisher.probe(Duration::from_secs(2)))
                    .await
                    .unwrap_or(false);
            state.broker_ready.store(ok, Ordering::Relaxed);
            if ok && !state.startup_loaded.load(Ordering::Relaxed) {
                ready.set_not_ready("loading the suppression list and the dedup window");
                restore_state(&state, &kafka).await;
            }
            if ok && state.startup_loaded.load(Ordering::Relaxed) {
                ready.set_ready();
            } else if ok {
                ready.set_not_ready("loading the suppression list and the dedup window");
            } else {
                ready.set_not_ready("broker does not answer");
                state.publisher.recover(RECOVERY_INTERVAL);
            }
            tokio::select! {
                _ = shutdown.wait() => break,
                _ = tokio::time::sleep(Duration::from_secs(3)) => {}
            }
        }
    });
}

/// Loads the suppression list (`zt erase`) and follows it, reads the dedup window back from
/// the event topics (`dedup::restore`) and marks both done; on failure ingest keeps
/// answering 503 and the readiness loop tries again.
async fn restore_state(state: &Arc<AppState>, kafka: &KafkaConfig) {
    let (st, k) = (state.clone(), kafka.clone());
    let r = tokio::task::spawn_blocking(move || {
        if !st.suppressions.is_following() {
            // Every erasure made before this start, then the ones that follow.
            st.suppressions
                .follow(&k, &st.topics.suppressions(), Duration::from_secs(60))?;
        }
        let topics: Vec<(zt_model::Source, String)> = zt_model::Source::ALL
            .into_iter()
            .map(|s| (s, st.topics.events(s)))
            .collect();
        let restored = if st.cfg.dedup_restore_secs == 0 {
            dedup::Restored::default()
        } else {
            dedup::restore(
                &k,
                &topics,
                &st.dedup,
                Duration::from_secs(st.cfg.dedup_restore_secs),
                st.cfg.dedup_max_entries,
                Duration::from_secs(60),
            )?
        };
        Ok::<_, zt_kafka::Error>((restored, st.suppressions.len()))
    })
    .await;
    match r {
        Ok(Ok((n, suppressed))) => {
            tracing::info!(
                records = n.records,
                ids = n.ids,
                seconds = state.cfg.dedup_restore_secs,
                suppressed,
                "dedup window read back from the event topics; suppression list loaded"
            );
            state.startup_loaded.store(true, Ordering::Relaxed);
        }
        Ok(Err(e)) => {
            state.metrics.errors.with_label_values(&["restore"]).inc();
            tracing::warn!(
                error = %e,
                "cannot load the suppression list or the dedup window yet; answering 503"
            );
        }
        Err(e) => tracing::error!(error = %e, "dedup restore task failed"),
    }
}

/// Binds the public API and serves until `shutdown`; in-flight requests finish first and
/// the producer is flushed.
pub async fn start(
    deps: IngestDeps,
    metrics: &Metrics,
    health: &Health,
    shutdown: Shutdown,
) -> Result<Running, Error> {
    // Registered first: until the checks exist `/readyz` has nothing to fail on, and the
    // start-up probe and dedup read-back below can take seconds.
    let ready = health.register("kafka");
    ready.set_not_ready(
        "starting: probing the broker, loading the suppression list and the dedup window",
    );
    let addr = deps.ingest.listen;
    let kafka = deps.kafka.clone();
    let state = build_state(deps, metrics)?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { addr, source })?;
    let addr = listener
        .local_addr()
        .map_err(|source| Error::Bind { addr, source })?;
    // Know the broker's state before the first request (the loop then re-checks it).
    let st = state.clone();
    let up = tokio::task::spawn_blocking(move || st.publisher.probe(Duration::from_secs(5)))
        .await
        .unwrap_or(false);
    state.broker_ready.store(up, Ordering::Relaxed);
    if up {
        restore_state(&state, &kafka).await;
    }
    spawn_readiness(state.clone(), kafka, ready, shutdown.clone());
    let app = server::router(state.clone());
    tracing::info!(%addr, "ingest listening");
    let task = tokio::spawn(async move {
        let stop = shutdown.clone();
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.wait().await })
            .await
        {
            tracing::error!(error = %e, "ingest server failed");
        }
        let st = state.clone();
        let _ =
            tokio::task::spawn_blocking(move || st.publisher.flush(Duration::from_secs(10))).await;
    });
    Ok(Running { addr, task })
}
