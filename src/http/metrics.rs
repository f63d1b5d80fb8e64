//! `GET /metrics`: the Prometheus text exposition of [`crate::metrics::Metrics`].

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

use crate::http::state::AppState;

/// The metrics route.
pub(crate) fn router() -> Router<AppState> {
    Router::new().route("/metrics", get(get_metrics))
}

async fn get_metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.calls_config.metrics.render(),
    )
}
