//! `caly serve`: compiles the pipeline (once per sample rate a call may ask for), binds the
//! listener first (so port 0 works in tests), serves the routes, and drains on shutdown: new
//! calls are refused, calls in progress get `drain_grace` to finish, then are ended cleanly.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::call::{CallConfig, CallReport, GraphSet};
use crate::commerce::agents::Reconciled;
use crate::commerce::ledger::Actions;
use crate::commerce::shop::Shopify;
use crate::engine::graph::{self};
use crate::engine::registry::CompileOptions;
use crate::http::AppState;
use crate::metrics::Metrics;
use crate::settings::ServeArgs;
use crate::stages::realtime::RealtimeEndpoint;
use crate::store::keys::{KeyUse, KeyUses};
use crate::store::{RecorderConfig, RecorderTask, Store};

/// Rates Exotel streams at (PROTOCOLS.md §1.2).
const EXOTEL_RATES: &[u32] = &[8000, 16000, 24000];
/// Most bot audio a call holds for playback.
const MAX_BOT_QUEUE: Duration = Duration::from_secs(120);
/// On shutdown, how long the recorder may keep retrying to write what calls left queued.
const RECORDER_SHUTDOWN: Duration = Duration::from_secs(30);
/// Client events (and `usage`s) the built-in Realtime simulator keeps for inspection.
const BUILTIN_SIMULATOR_LOG: usize = 256;
/// After the grace period, how long ended calls get to close.
const END_CALLS_TIMEOUT: Duration = Duration::from_secs(10);

/// A server that has bound its port and compiled its pipeline.
pub struct App {
    listener: TcpListener,
    state: AppState,
    grace: Duration,
    limits: crate::http::HttpLimits,
    writer: RecorderTask,
    /// Changes to orders left unsettled by an earlier process, to settle once serving.
    reconcile: Option<(Arc<Actions>, Arc<Shopify>)>,
    /// API key uses to write.
    key_uses: KeyUses,
    /// `CALY_RETENTION_DAYS`.
    retention: Option<Duration>,
    /// Where the live board relays to the other instances (PostgreSQL only).
    database_url: String,
}

impl App {
    /// Compiles the pipeline and binds the listener; outside services from the environment.
    pub async fn build(args: &ServeArgs) -> anyhow::Result<App> {
        App::build_with(args, crate::stages::services_from_env()).await
    }

    /// As [`App::build`], with the outside services given (tests point them at fakes). With
    /// no Realtime API key the built-in simulator is started, as in production.
    pub async fn build_with(
        args: &ServeArgs,
        services: crate::engine::stage::Services,
    ) -> anyhow::Result<App> {
        let registry = crate::call::registry();
        let graph = graph::load(&args.pipeline, &registry, &CompileOptions::default())
            .with_context(|| format!("pipeline {} does not compile", args.pipeline.display()))?;
        let mut graphs = GraphSet::default();
        for rate in EXOTEL_RATES {
            let options = CompileOptions {
                source_rate: Some(*rate),
            };
            if let Ok(g) = graph::load(&args.pipeline, &registry, &options) {
                graphs.insert(*rate, g);
            }
        }
        let db = Store::connect(&args.database_url).await.with_context(|| {
            format!(
                "cannot open the call records database {}",
                crate::store::redact_url(&args.database_url)
            )
        })?;
        db.migrate()
            .await
            .context("cannot apply the database migrations")?;
        tracing::info!(
            database = db.backend().label(),
            url = %crate::store::redact_url(&args.database_url),
            "Call records database ready."
        );
        let prices = match &args.prices {
            Some(path) => crate::call::cost::Prices::from_file(path)
                .map_err(|e| anyhow::anyhow!("the price table: {e}"))?,
            None => crate::call::cost::Prices::builtin().map_err(|e| anyhow::anyhow!(e))?,
        };
        tracing::info!(as_of = %prices.as_of, currency = %prices.currency, "Model price table loaded.");
        let mut metrics = Metrics::new();
        let (key_use, key_uses) = KeyUse::new();
        let (recorder, writer) = RecorderTask::start(
            db.clone(),
            RecorderConfig {
                flush_seconds: Some(metrics.store_flush_seconds.clone()),
                ..RecorderConfig::default()
            },
        );
        if args.webhook_token.is_none() {
            tracing::warn!(
                "CALY_WEBHOOK_TOKEN is not set: Exotel status and Passthru callbacks are refused."
            );
        }
        if args.max_connections <= args.max_calls {
            tracing::warn!(
                max_connections = args.max_connections,
                max_calls = args.max_calls,
                "CALY_MAX_CONNECTIONS is not above CALY_MAX_CALLS: REST and health checks can be refused while calls are at their cap."
            );
        }
        let listener = TcpListener::bind(args.listen())
            .await
            .with_context(|| format!("cannot listen on {}", args.listen()))?;
        if args.stream_auth.is_none() {
            tracing::warn!(
                "CALY_STREAM_AUTH is not set: anyone who finds the stream URL can connect."
            );
        }
        for warning in graph.warning_lines() {
            tracing::warn!("{warning}");
        }
        tracing::info!(
            pipeline = %graph.name,
            stages = graph.nodes().len(),
            tasks = graph.tasks().len(),
            rates = ?graphs.rates(),
            "Pipeline compiled."
        );
        let mut services = services;
        let uses_realtime = graph.nodes().iter().any(|n| n.kind.name == "realtime");
        let (realtime, simulator) = if !uses_realtime {
            ("unused", None)
        } else if let Some(endpoint) = services
            .get::<RealtimeEndpoint>()
            .filter(|e| e.api_key.is_some())
        {
            tracing::info!(url = %endpoint.url, "Realtime: OpenAI.");
            ("openai", None)
        } else {
            let sim = crate::devtools::realtime_sim::Simulator::start(
                crate::devtools::realtime_sim::SimulatorConfig {
                    log_capacity: BUILTIN_SIMULATOR_LOG,
                    ..Default::default()
                },
            )
            .await
            .context("cannot start the Realtime simulator")?;
            services.insert(RealtimeEndpoint {
                url: sim.url(),
                api_key: None,
                simulator: true,
            });
            tracing::warn!(
                url = %sim.url(),
                "OPENAI_API_KEY is not set: calls talk to the built-in Realtime SIMULATOR, not OpenAI. \
                 The bot answers with scripted lines and a synthetic voice."
            );
            ("simulator", Some(Arc::new(sim)))
        };
        // Every change to an order is claimed in the call-records database first (unless the
        // caller brought its own ledger).
        if services.get::<Arc<Actions>>().is_none() {
            services.insert::<Arc<Actions>>(Actions::new(Arc::new(db.clone())));
        }
        let has_agents = graph.nodes().iter().any(|n| n.kind.name == "agent");
        let mut demo_store = None;
        // Only offline (the simulator plays the model): a real caller must never hear about
        // orders that do not exist.
        let offline = simulator.is_some();
        if services.get::<Arc<Shopify>>().is_none() && has_agents && offline && !args.no_demo_store
        {
            let demo = crate::devtools::demo_store::DemoStore::start()
                .await
                .context("cannot start the demo store")?;
            let shop = Shopify::new(demo.config())
                .map_err(|e| anyhow::anyhow!("cannot reach the demo store: {e}"))?;
            services.insert::<Arc<Shopify>>(shop);
            tracing::warn!(
                url = %demo.url(),
                "SHOPIFY_STORE_DOMAIN / SHOPIFY_ACCESS_TOKEN are not set: agents act on the built-in DEMO STORE \
                 (seeded orders #1001-#1006 in every state), not a real shop. --no-demo-store turns it off."
            );
            demo_store = Some(Arc::new(demo));
        }
        let shop = services.get::<Arc<Shopify>>().cloned();
        let reconcile = services.get::<Arc<Actions>>().cloned().zip(shop.clone());
        let store = match &shop {
            Some(_) if demo_store.is_some() => "demo",
            Some(shop) => {
                tracing::info!(endpoint = %shop.endpoint(), "Store: Shopify.");
                "shopify"
            }
            None => {
                if has_agents {
                    tracing::warn!(
                        "SHOPIFY_STORE_DOMAIN / SHOPIFY_ACCESS_TOKEN are not set: agents will tell callers the store is not connected \
                         (the demo store runs only with the Realtime simulator, and not with --no-demo-store)."
                    );
                }
                "unconfigured"
            }
        };
        services.insert(metrics.agent_runs.clone());
        metrics.register_sources(crate::metrics::Sources {
            shopify: shop,
            recorder: Some(recorder.clone()),
            db: Some(db.clone()),
        });
        let calls_config = CallConfig {
            graphs: Arc::new(graphs),
            metrics: Arc::new(metrics),
            idle_timeout: args.idle_timeout(),
            max_duration: args.max_call(),
            max_bot_queue: MAX_BOT_QUEUE,
            end_calls: CancellationToken::new(),
            services: Arc::new(services),
            reports: None,
            recorder: Some(recorder.clone()),
            hand_offs: Arc::default(),
            prices: Arc::new(prices),
            live: Some(crate::call::LiveBoard::for_this_process()),
        };
        Ok(App {
            listener,
            state: AppState {
                graph,
                calls_config,
                draining: Arc::new(AtomicBool::new(false)),
                admission: Arc::new(Semaphore::new(args.max_calls)),
                max_calls: args.max_calls,
                calls: TaskTracker::new(),
                stream_auth: args.stream_auth.as_deref().map(Arc::from),
                realtime,
                store,
                simulator,
                demo_store,
                db,
                recorder,
                webhook_token: args.webhook_token.as_deref().map(Arc::from),
                limiter: crate::http::state::limiter(args.api_quota()),
                key_use: Arc::new(key_use),
                live_streams: Arc::new(Semaphore::new(crate::http::console::MAX_LIVE_STREAMS)),
            },
            grace: args.drain_grace(),
            limits: args.http_limits(),
            writer,
            reconcile,
            key_uses,
            retention: args.retention(),
            database_url: args.database_url.clone(),
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.listener.local_addr()?)
    }

    /// The shared state (tests read its counters).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Sends every call's report to the returned receiver (bounded: reports beyond its
    /// capacity are dropped, never waited on).
    pub fn reports(&mut self, capacity: usize) -> mpsc::Receiver<CallReport> {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        self.state.calls_config.reports = Some(tx);
        rx
    }

    /// Serves until `shutdown` resolves, then drains: refuse new calls, wait up to the grace
    /// period for calls in progress, end the rest cleanly, then stop.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let addr = self.local_addr()?;
        tracing::info!(%addr, "Listening.");
        let state = self.state.clone();
        let grace = self.grace;
        let drained = async move {
            shutdown.await;
            state.draining.store(true, Ordering::SeqCst);
            state.calls.close();
            tracing::info!(
                calls = state.calls.len(),
                grace_secs = grace.as_secs(),
                "Draining: refusing new calls, letting calls in progress finish."
            );
            if tokio::time::timeout(grace, state.calls.wait())
                .await
                .is_err()
            {
                tracing::warn!(
                    calls = state.calls.len(),
                    "Grace period over; ending the remaining calls."
                );
                state.calls_config.end_calls.cancel();
                let _ = tokio::time::timeout(END_CALLS_TIMEOUT, state.calls.wait()).await;
            }
            tracing::info!("Drained; shutting down.");
            // The console's live streams end with the server.
            if let Some(board) = &state.calls_config.live {
                board.close();
            }
        };
        // Changes an earlier process claimed and never settled (it died mid-change): each is
        // looked up on its order while the server already serves; ended with the server.
        let reconciling = self.reconcile.map(|(actions, shop)| {
            tokio::spawn(async move {
                match crate::commerce::agents::reconcile(&actions, &shop).await {
                    Ok(r) if r == Reconciled::default() => {}
                    Ok(r) => tracing::info!(
                        done = r.done,
                        failed = r.failed,
                        left = r.left,
                        "Reconciled changes to orders an earlier run left unsettled."
                    ),
                    Err(e) => tracing::error!(error = %e, "Could not reconcile unsettled changes to orders."),
                }
            })
        });
        // When keys were last used, and retention: owned here, ended with the server.
        let key_uses = tokio::spawn(self.state.db.clone().write_key_uses(self.key_uses));
        let retaining = self.retention.map(|keep| {
            tracing::info!(
                days = keep.as_secs() / 86_400,
                "Retention is on: older calls' personal data is erased."
            );
            tokio::spawn(self.state.db.clone().retain(keep))
        });
        // Live calls shared with the other instances on the same PostgreSQL database; ends when
        // the board closes.
        let relaying = self
            .state
            .calls_config
            .live
            .clone()
            .filter(|_| self.state.db.backend() == crate::store::Backend::Postgres)
            .map(|board| {
                tokio::spawn(crate::call::live::relay(
                    board,
                    self.state.db.clone(),
                    self.database_url.clone(),
                ))
            });
        let metrics = self.state.calls_config.metrics.clone();
        crate::http::server::serve(
            self.listener,
            crate::http::router(self.state),
            self.limits,
            metrics,
            drained,
        )
        .await;
        for task in [reconciling, retaining, relaying, Some(key_uses)]
            .into_iter()
            .flatten()
        {
            task.abort();
        }
        // Every call has ended: what they recorded is written before the process exits.
        let lost = self.writer.shutdown(RECORDER_SHUTDOWN).await;
        if lost == 0 {
            tracing::info!("Call records flushed.");
        }
        Ok(())
    }
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
