//! A fake Shopify GraphQL Admin API on 127.0.0.1, for tests and benches only (we cannot call a
//! real store from here): the demo store's catalogue ([`crate::devtools::demo_store`]: the
//! operations with PROTOCOLS.md §4.6's shapes, the cost bucket, the seeded orders) behind real
//! HTTP, with faults on demand: `THROTTLED` bodies, 429 with `Retry-After`, 500s, slow
//! answers. It records every operation so tests can count side effects (a cancel that happened
//! twice would show here). Never used by production code paths.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::Value;

use crate::devtools::demo_store::{
    Catalogue, authorised, endpoint, lock, operation_name, unauthorized,
};

/// Faults to inject; counts are consumed one per request.
#[derive(Debug, Clone, Default)]
pub struct FakeFaults {
    /// Answer this many requests with a `THROTTLED` error (HTTP 200).
    pub throttle_next: u32,
    /// Answer this many requests with HTTP 429 and `Retry-After`.
    pub status_429_next: u32,
    /// `Retry-After` seconds sent with a 429.
    pub retry_after_secs: f64,
    /// Answer this many requests with HTTP 500.
    pub status_500_next: u32,
    /// Answer every request with HTTP 500 while set.
    pub down: bool,
    /// Wait this long before answering.
    pub delay: Duration,
    /// Apply this many mutations and then answer each with HTTP 500, as a store that did the
    /// work and lost the answer (the client sees `Uncertain`).
    pub apply_then_500_next: u32,
    /// Answer this many mutations with HTTP 500 without applying them (queries unaffected).
    pub mutation_500_next: u32,
    /// Never answer the next mutation, as a store the caller's process dies waiting on:
    /// `Some(true)` applies it first, `Some(false)` never does. It is logged with status 0.
    pub stall_next_mutation: Option<bool>,
}

/// One operation received.
#[derive(Debug, Clone)]
pub struct Received {
    /// The operation name.
    pub operation: String,
    /// Its variables.
    pub variables: Value,
    /// The HTTP status answered.
    pub status: u16,
}

struct Shared {
    token: String,
    store: Mutex<Catalogue>,
    faults: Mutex<FakeFaults>,
    log: Mutex<Vec<Received>>,
    /// Requests whose handler was dropped before answering (the client gave up).
    abandoned: AtomicU64,
    /// Mutations held without an answer (`stall_next_mutation`).
    stalled: AtomicU64,
}

/// A running fake store; dropping it stops the server.
pub struct FakeShopify {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeShopify {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The seeded orders (the demo store's).
pub use crate::devtools::demo_store::seed_orders;

impl FakeShopify {
    /// Starts the fake with the seeded orders, accepting `token`.
    pub async fn start(token: &str) -> std::io::Result<FakeShopify> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            token: token.to_string(),
            store: Mutex::new(Catalogue::seeded()),
            faults: Mutex::new(FakeFaults {
                retry_after_secs: 0.2,
                ..FakeFaults::default()
            }),
            log: Mutex::new(Vec::new()),
            abandoned: AtomicU64::new(0),
            stalled: AtomicU64::new(0),
        });
        let app = Router::new()
            .route("/admin/api/{version}/graphql.json", post(graphql))
            .with_state(Arc::clone(&shared));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(FakeShopify { addr, shared, task })
    }

    /// The GraphQL endpoint.
    pub fn url(&self) -> String {
        endpoint(self.addr)
    }

    /// Changes the faults.
    pub fn faults(&self, change: impl FnOnce(&mut FakeFaults)) {
        change(&mut lock(&self.shared.faults));
    }

    /// Every operation received, in order.
    pub fn log(&self) -> Vec<Received> {
        lock(&self.shared.log).clone()
    }

    /// How many times an operation was answered with 200.
    pub fn succeeded(&self, operation: &str) -> usize {
        lock(&self.shared.log)
            .iter()
            .filter(|r| r.operation == operation && r.status == 200)
            .count()
    }

    /// Requests the client gave up on before the answer (dropped mid-flight).
    pub fn abandoned(&self) -> u64 {
        self.shared.abandoned.load(Ordering::SeqCst)
    }

    /// Mutations held without an answer so far (`stall_next_mutation`).
    pub fn stalled(&self) -> u64 {
        self.shared.stalled.load(Ordering::SeqCst)
    }

    /// The order named `name` as the store holds it now.
    pub fn order(&self, name: &str) -> Option<Value> {
        lock(&self.shared.store).order(name)
    }
}

/// Counts a request as abandoned unless it was answered.
struct Pending<'a> {
    shared: &'a Shared,
    answered: bool,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if !self.answered {
            self.shared.abandoned.fetch_add(1, Ordering::SeqCst);
        }
    }
}

async fn graphql(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: String) -> Response {
    let mut pending = Pending {
        shared: &shared,
        answered: false,
    };
    let request: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let query = request["query"].as_str().unwrap_or_default();
    let mutation = query.trim_start().starts_with("mutation");
    let faults = {
        let mut f = lock(&shared.faults);
        let now = f.clone();
        f.throttle_next = f.throttle_next.saturating_sub(1);
        f.status_429_next = f.status_429_next.saturating_sub(1);
        f.status_500_next = f.status_500_next.saturating_sub(1);
        if mutation {
            f.apply_then_500_next = f.apply_then_500_next.saturating_sub(1);
            f.mutation_500_next = f.mutation_500_next.saturating_sub(1);
            f.stall_next_mutation = None;
        }
        now
    };
    if !faults.delay.is_zero() {
        tokio::time::sleep(faults.delay).await;
    }
    let operation = operation_name(query).unwrap_or("<anonymous>").to_string();
    let variables = request["variables"].clone();
    if let Some(applied) = faults.stall_next_mutation.filter(|_| mutation) {
        if applied {
            let _ = answer(&shared, &faults, &headers, &operation, &variables);
        }
        lock(&shared.log).push(Received {
            operation: operation.clone(),
            variables: variables.clone(),
            status: 0,
        });
        shared.stalled.fetch_add(1, Ordering::SeqCst);
        // Held until the client goes away or the fake stops.
        std::future::pending::<()>().await;
    }
    let (status, response) = if mutation && faults.mutation_500_next > 0 {
        let failed = (StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error").into_response();
        (StatusCode::INTERNAL_SERVER_ERROR, failed)
    } else {
        answer(&shared, &faults, &headers, &operation, &variables)
    };
    let (status, response) =
        if mutation && faults.apply_then_500_next > 0 && status == StatusCode::OK {
            let lost = (StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error").into_response();
            (StatusCode::INTERNAL_SERVER_ERROR, lost)
        } else {
            (status, response)
        };
    lock(&shared.log).push(Received {
        operation,
        variables,
        status: status.as_u16(),
    });
    pending.answered = true;
    response
}

fn answer(
    shared: &Shared,
    faults: &FakeFaults,
    headers: &HeaderMap,
    operation: &str,
    vars: &Value,
) -> (StatusCode, Response) {
    if !authorised(headers, &shared.token) {
        return (StatusCode::UNAUTHORIZED, unauthorized());
    }
    if faults.down || faults.status_500_next > 0 {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            (StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error").into_response(),
        );
    }
    if faults.status_429_next > 0 {
        let mut r = (
            StatusCode::TOO_MANY_REQUESTS,
            "Exceeded 2 calls per second for api client.",
        )
            .into_response();
        if let Ok(v) = format!("{}", faults.retry_after_secs).parse() {
            r.headers_mut().insert("Retry-After", v);
        }
        return (StatusCode::TOO_MANY_REQUESTS, r);
    }
    let body = lock(&shared.store).answer(operation, vars, faults.throttle_next > 0);
    (StatusCode::OK, axum::Json(body).into_response())
}
