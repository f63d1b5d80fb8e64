//! `GET /healthz` (the process answers) and `GET /readyz` (the pipeline compiled and the server
//! takes calls; 503 while draining; the database's state is reported).

use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::http::state::AppState;
use crate::stages::realtime::{Realtime, models};

/// How long `/readyz` waits for the database to answer.
const PING_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// The health routes.
pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(get_healthz))
        .route("/readyz", get(get_readyz))
}

async fn get_healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

async fn get_readyz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let draining = state.draining.load(Ordering::SeqCst);
    // Calls do not wait on the database (their records queue), so an outage is reported here
    // but does not make the server unready.
    let reachable = tokio::time::timeout(PING_TIMEOUT, state.db.ping())
        .await
        .unwrap_or(false);
    let stats = state.recorder.stats();
    let status = if draining {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    let body = json!({
        "status": if draining { "draining" } else { "ready" },
        "pipeline": {
            "name": state.graph.name,
            "stages": state.graph.nodes().len(),
            "tasks": state.graph.tasks().len(),
            "sample_rates": state.calls_config.graphs.rates(),
        },
        "calls": {
            "active": state.calls_config.metrics.calls_active.get(),
            "max": state.max_calls,
        },
        "realtime": state.realtime,
        "models": models(&state),
        "store": state.store,
        "database": {
            "backend": state.db.backend().label(),
            "reachable": reachable,
            "queued": state.recorder.queued(),
            "dropped": stats.dropped.load(Ordering::Relaxed),
            "failing": stats.failing.load(Ordering::Relaxed),
        },
        "draining": draining,
    });
    (status, Json(body))
}

/// The models the pipeline's `realtime` stages use, with the days left to a retired one.
fn models(state: &AppState) -> Vec<Value> {
    let today = models::today();
    state
        .graph
        .nodes()
        .iter()
        .filter_map(|n| n.spec_of::<Realtime>().map(|spec| (n, spec)))
        .flat_map(|(n, spec)| {
            spec.models().map(|(_, name, role)| {
                let (shutdown, days_left, replacement) = match models::standing(name, today) {
                    models::Standing::Current => (None, None, None),
                    models::Standing::Retiring {
                        on,
                        days,
                        replacement,
                    } => (Some(on.to_string()), Some(days), Some(replacement)),
                    models::Standing::Retired { on, replacement } => {
                        (Some(on.to_string()), Some(0), Some(replacement))
                    }
                };
                json!({
                    "stage": n.id.as_ref(),
                    "role": role.label(),
                    "model": name,
                    "shutdown": shutdown,
                    "days_left": days_left,
                    "replacement": replacement,
                })
            })
        })
        .collect()
}
