//! The admin HTTP server every long-running process runs, apart from any public API:
//!
//! - `GET /metrics`: Prometheus text exposition (version 0.0.4);
//! - `GET /livez`: 200 `ok` while the process is live, 503 with the reason otherwise;
//! - `GET /readyz`: 200 `ready` when every readiness check passes, 503 with a JSON object
//!   of the failing checks otherwise.

use std::net::SocketAddr;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::health::Health;
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;

/// `[admin]`: where the admin server listens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Listen address for `/metrics`, `/livez`, `/readyz`. Default `0.0.0.0:9464`; port 0
    /// picks a free port.
    pub listen: SocketAddr,
}

#[derive(Clone)]
struct AppState {
    metrics: Metrics,
    health: Health,
}

/// A running admin server.
#[derive(Debug)]
pub struct AdminServer {
    /// The bound address (useful with port 0).
    pub addr: SocketAddr,
    /// Completes when the server has stopped after shutdown.
    pub task: JoinHandle<std::io::Result<()>>,
}

/// Builds the admin router.
pub fn router(metrics: Metrics, health: Health) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .with_state(AppState { metrics, health })
}

/// Binds and serves until `shutdown` fires.
pub async fn serve(
    cfg: &AdminConfig,
    metrics: Metrics,
    health: Health,
    shutdown: Shutdown,
) -> std::io::Result<AdminServer> {
    let listener = TcpListener::bind(cfg.listen).await?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "admin server listening");
    let app = router(metrics, health);
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.wait().await })
            .await
    });
    Ok(AdminServer { addr, task })
}

async fn metrics_handler(State(s): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.metrics.render(),
    )
        .into_response()
}

async fn livez(State(s): State<AppState>) -> Response {
    match s.health.live() {
        Ok(()) => (StatusCode::OK, "ok").into_response(),
        Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, reason).into_response(),
    }
}

async fn readyz(State(s): State<AppState>) -> Response {
    match s.health.ready() {
        Ok(()) => (StatusCode::OK, "ready").into_response(),
        Err(failing) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({ "ready": false, "failing": failing })),
        )
            .into_response(),
    }
}
