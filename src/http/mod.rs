//! The HTTP edges: every route, merged from one small router per resource.

pub mod error; // ApiError: a status and {"error": {"code", "message"}}
pub mod exotel; // GET /v1/exotel/stream: the AgentStream WebSocket
pub mod health; // GET /healthz, GET /readyz
pub mod metrics; // GET /metrics
pub mod openapi; // GET /v1/openapi.json, generated from the handlers
pub mod rest; // /v1 REST: calls, transcripts, actions, KPIs, API keys (Bearer, scoped, rate-limited)
pub mod webhooks; // POST /v1/exotel/status, GET|POST /v1/exotel/passthru (?token=)

use axum::Router;

use crate::app::AppState;

/// Every route, with its state.
pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(health::router())
        .merge(metrics::router())
        .merge(exotel::router())
        .merge(webhooks::router())
        .merge(rest::router())
        .with_state(state)
}
