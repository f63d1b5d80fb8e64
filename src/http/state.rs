//! [`AppState`]: what every HTTP handler shares. `app` builds it; nothing here imports `app`.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

use crate::call::CallConfig;
use crate::devtools::realtime_sim::Simulator;
use crate::engine::graph::Graph;
use crate::store::keys::KeyUse;
use crate::store::{Recorder, Store};

/// Shared state of the HTTP handlers.
#[derive(Clone)]
pub struct AppState {
    /// The pipeline compiled at its default rate (for `/readyz`).
    pub graph: Arc<Graph>,
    /// What every call shares.
    pub calls_config: CallConfig,
    /// Set once shutdown has begun: new calls are refused.
    pub draining: Arc<AtomicBool>,
    /// One permit per call that may stream at once.
    pub admission: Arc<Semaphore>,
    /// The configured maximum.
    pub max_calls: usize,
    /// Every call's session task.
    pub calls: TaskTracker,
    /// `user:password` for the stream upgrade, if required.
    pub stream_auth: Option<Arc<str>>,
    /// Which Realtime backend calls use: `openai`, `simulator`, or `unused`.
    pub realtime: &'static str,
    /// Which store agents act on: `shopify`, `demo` (the built-in demo store), or
    /// `unconfigured`.
    pub store: &'static str,
    /// The offline Realtime simulator, when there is no API key.
    pub simulator: Option<Arc<Simulator>>,
    /// The built-in demo store, when there are no Shopify settings.
    pub demo_store: Option<Arc<crate::devtools::demo_store::DemoStore>>,
    /// Call records.
    pub db: Store,
    /// The write-behind queue calls record into.
    pub recorder: Recorder,
    /// The secret Exotel callbacks carry as `?token=`; `None` = webhooks refused.
    pub webhook_token: Option<Arc<str>>,
    /// Per-API-key request rate.
    pub limiter: Arc<KeyLimiter>,
    /// When each API key was last used (written off the request path).
    pub key_use: Arc<KeyUse>,
    /// One permit per console live stream open at once.
    pub live_streams: Arc<Semaphore>,
}

/// Per-key request limiter.
pub(crate) type KeyLimiter = governor::DefaultKeyedRateLimiter<String>;

/// Builds the limiter for `quota`.
pub(crate) fn limiter(quota: governor::Quota) -> Arc<KeyLimiter> {
    Arc::new(governor::RateLimiter::keyed(quota))
}
