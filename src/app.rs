//! `caly serve`: loads and compiles the pipeline, binds the listener first (so port 0 works in
//! tests), serves the HTTP routes, and shuts down gracefully on SIGTERM or Ctrl-C.
//!
//! Routes so far: `GET /healthz` (the process is up) and `GET /readyz` (the pipeline compiled
//! and the server is not draining). The Exotel transport, webhooks and REST API join here as
//! their issues land.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context as _;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::graph::{self, Graph};
use crate::registry::{CompileOptions, Registry};
use crate::settings::ServeArgs;

/// Shared state of the HTTP handlers.
#[derive(Clone)]
pub struct AppState {
    /// The compiled pipeline calls run (at its default source rate).
    pub graph: Arc<Graph>,
    /// Set once shutdown has begun.
    pub draining: Arc<AtomicBool>,
}

/// A server that has bound its port and compiled its pipeline.
pub struct App {
    listener: TcpListener,
    state: AppState,
}

impl App {
    /// Compiles the pipeline and binds the listener.
    pub async fn build(args: &ServeArgs) -> anyhow::Result<App> {
        let registry = Registry::with_builtin();
        let graph = graph::load(&args.pipeline, &registry, &CompileOptions::default())
            .with_context(|| format!("pipeline {} does not compile", args.pipeline.display()))?;
        let listener = TcpListener::bind(args.listen())
            .await
            .with_context(|| format!("cannot listen on {}", args.listen()))?;
        tracing::info!(
            pipeline = %graph.name,
            stages = graph.nodes().len(),
            tasks = graph.tasks().len(),
            "Pipeline compiled."
        );
        Ok(App {
            listener,
            state: AppState {
                graph,
                draining: Arc::new(AtomicBool::new(false)),
            },
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.listener.local_addr()?)
    }

    /// Serves until `shutdown` resolves, then drains.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let addr = self.local_addr()?;
        tracing::info!(%addr, "Listening.");
        let draining = Arc::clone(&self.state.draining);
        let router = router(self.state);
        axum::serve(self.listener, router)
            .with_graceful_shutdown(async move {
                shutdown.await;
                draining.store(true, Ordering::SeqCst);
                tracing::info!("Shutting down.");
            })
            .await
            .context("server failed")
    }
}

/// Every route, with its state.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(get_healthz))
        .route("/readyz", get(get_readyz))
        .with_state(state)
}

async fn get_healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

async fn get_readyz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let draining = state.draining.load(Ordering::SeqCst);
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
        },
        "draining": draining,
    });
    (status, Json(body))
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
