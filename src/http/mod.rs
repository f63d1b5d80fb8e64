//! The HTTP edges: every route, merged from one small router per resource.

pub(crate) mod console; // /console pages, console sign-in/out, GET /v1/console/live (server-sent events)
pub(crate) mod error; // ApiError: a status and {"error": {"code", "message"}}
pub(crate) mod exotel; // GET /v1/exotel/stream: the AgentStream WebSocket
pub(crate) mod health; // GET /healthz, GET /readyz
pub(crate) mod metrics; // GET /metrics
pub(crate) mod openapi; // GET /v1/openapi.json, generated from the handlers and the parameter rules
pub(crate) mod params; // what each REST parameter may be: checked by handlers, described in the document
pub(crate) mod rest; // /v1 REST: calls, transcripts, actions, KPIs, API keys (Bearer, scoped, rate-limited)
pub(crate) mod server; // the accept loop: header/request timeouts, connection cap
pub(crate) mod state; // AppState: what every handler shares
pub(crate) mod webhooks; // POST /v1/exotel/status, GET|POST /v1/exotel/passthru (?token=)

use axum::Router;

pub use server::HttpLimits;
pub use state::AppState;

/// Every route, with its state.
pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(health::router())
        .merge(metrics::router())
        .merge(exotel::router())
        .merge(webhooks::router())
        .merge(rest::router())
        .merge(console::router())
        .merge(openapi::router())
        .with_state(state)
}
