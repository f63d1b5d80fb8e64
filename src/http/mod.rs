//! The HTTP edges: every route, merged from one small router per resource.

pub mod exotel; // GET /v1/exotel/stream: the AgentStream WebSocket
pub mod health; // GET /healthz, GET /readyz
pub mod metrics; // GET /metrics

use axum::Router;

use crate::app::AppState;

/// Every route, with its state.
pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(health::router())
        .merge(metrics::router())
        .merge(exotel::router())
        .with_state(state)
}
