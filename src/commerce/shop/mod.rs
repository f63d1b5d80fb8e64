//! The store: a Shopify GraphQL Admin API client built for a caller who is waiting on the line.
//!
//! Facts: PROTOCOLS.md §4. Every request carries `X-Shopify-Access-Token` and goes to a pinned
//! API version. The client keeps a mirror of the cost bucket from `extensions.cost`
//! and waits before a request the bucket cannot afford. It retries `THROTTLED` (HTTP 200 or
//! 429), 429 (`Retry-After`) and, for queries only, 5xx and network errors, with backoff and
//! jitter, all within a small time budget (a caller is waiting). A mutation that timed out or
//! got a 5xx is never resent blindly: it comes back as [`ShopifyError::Uncertain`], and the agent
//! re-reads the order before deciding. After repeated failures a circuit breaker answers
//! [`ShopifyError::Unavailable`] at once for a cool-down, so a dead store costs callers nothing.
//! Errors are typed so agents can give honest answers.

mod ops;

pub use ops::{
    Customer, CustomerOrder, Fulfillment, FulfillmentLineItem, Job, LineItem, MailingAddress,
    Money, Order, Tracking,
};

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The Admin API version every request pins (PROTOCOLS.md §4.2).
pub const API_VERSION: &str = "2026-07";

/// How to reach the store.
#[derive(Debug, Clone)]
pub struct ShopifyConfig {
    /// The GraphQL endpoint.
    pub endpoint: String,
    /// `X-Shopify-Access-Token`.
    pub access_token: String,
    /// Deadline of one HTTP request.
    pub request_timeout: Duration,
    /// Attempts per operation (first try included).
    pub max_attempts: u32,
    /// Most time spent waiting (throttle, `Retry-After`, backoff) within one operation.
    pub max_wait: Duration,
    /// Consecutive failures that open the circuit.
    pub breaker_failures: u32,
    /// How long an open circuit refuses before letting one request through.
    pub breaker_cooldown: Duration,
    /// First backoff delay (doubles per attempt, with jitter).
    pub backoff_initial: Duration,
}

impl ShopifyConfig {
    /// Defaults for an endpoint and token.
    pub fn new(endpoint: impl Into<String>, access_token: impl Into<String>) -> ShopifyConfig {
        ShopifyConfig {
            endpoint: endpoint.into(),
            access_token: access_token.into(),
            request_timeout: Duration::from_secs(4),
            max_attempts: 3,
            max_wait: Duration::from_secs(4),
            breaker_failures: 5,
            breaker_cooldown: Duration::from_secs(30),
            backoff_initial: Duration::from_millis(200),
        }
    }

    /// From `SHOPIFY_STORE_DOMAIN` and `SHOPIFY_ACCESS_TOKEN` (`SHOPIFY_API_URL` overrides the
    /// endpoint). `None` when the store is not configured.
    pub fn from_env() -> Option<ShopifyConfig> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        let token = var("SHOPIFY_ACCESS_TOKEN")?;
        let endpoint = match var("SHOPIFY_API_URL") {
            Some(url) => url,
            None => endpoint_for(&var("SHOPIFY_STORE_DOMAIN")?),
        };
        Some(ShopifyConfig::new(endpoint, token))
    }
}

/// `https://{shop}.myshopify.com/admin/api/{version}/graphql.json` from `shop`,
/// `shop.myshopify.com` or a full `https://…` domain.
pub fn endpoint_for(domain: &str) -> String {
    let d = domain
        .trim()
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_end_matches('/');
    let host = if d.contains('.') {
        d.to_string()
    } else {
        format!("{d}.myshopify.com")
    };
    format!("https://{host}/admin/api/{API_VERSION}/graphql.json")
}

/// Why a store operation did not give an answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShopifyError {
    /// No store is configured.
    #[error("the store is not configured")]
    NotConfigured,
    /// Shopify kept throttling us past the time budget.
    #[error("Shopify is throttling requests")]
    Throttled,
    /// Shopify or the network failed past the retry budget, or the circuit is open.
    #[error("Shopify is unavailable: {0}")]
    Unavailable(String),
    /// A query got no answer in time.
    #[error("Shopify did not answer in time")]
    Timeout,
    /// A mutation may or may not have happened (it timed out or got a 5xx): re-read first.
    #[error("the outcome of the change is unknown: {0}")]
    Uncertain(String),
    /// The access token was refused.
    #[error("Shopify refused the access token")]
    Unauthorized,
    /// Shopify refused the change (`userErrors`).
    #[error("Shopify refused: {0}")]
    Rejected(String),
    /// Shopify answered something we do not understand.
    #[error("unexpected answer from Shopify: {0}")]
    Protocol(String),
}

impl ShopifyError {
    /// A label for metrics and action records.
    pub fn code(&self) -> &'static str {
        match self {
            ShopifyError::NotConfigured => "not_configured",
            ShopifyError::Throttled => "throttled",
            ShopifyError::Unavailable(_) => "unavailable",
            ShopifyError::Timeout => "timeout",
            ShopifyError::Uncertain(_) => "uncertain",
            ShopifyError::Unauthorized => "unauthorized",
            ShopifyError::Rejected(_) => "rejected",
            ShopifyError::Protocol(_) => "protocol",
        }
    }
}

/// A GraphQL operation: its text, whether it changes anything, and its requested cost.
#[derive(Debug, Clone, Copy)]
pub struct Op {
    /// The operation name (as in the query text).
    pub name: &'static str,
    /// The query text.
    pub query: &'static str,
    /// A mutation (never resent after an ambiguous failure).
    pub mutation: bool,
    /// Requested cost in points (what the bucket is charged up front).
    pub cost: f64,
}

/// Counters of the client's traffic.
#[derive(Debug, Default)]
pub struct ShopifyStats {
    /// HTTP requests sent.
    pub requests: AtomicU64,
    /// Requests retried after throttling or a failure.
    pub retries: AtomicU64,
    /// Times Shopify throttled us (THROTTLED or 429).
    pub throttled: AtomicU64,
    /// Operations refused by the open circuit.
    pub short_circuited: AtomicU64,
    /// Operations that ended in an error.
    pub failed: AtomicU64,
}

#[derive(Debug)]
struct Bucket {
    available: f64,
    maximum: f64,
    restore_rate: f64,
    at: Instant,
}

impl Bucket {
    fn now(&self) -> f64 {
        (self.available + self.restore_rate * self.at.elapsed().as_secs_f64()).min(self.maximum)
    }

    /// How long until `cost` points are available.
    fn wait_for(&self, cost: f64) -> Duration {
        let missing = cost - self.now();
        if missing <= 0.0 || self.restore_rate <= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(missing / self.restore_rate)
        }
    }
}

#[derive(Debug, Default)]
struct Breaker {
    failures: u32,
    open_until: Option<Instant>,
}

/// A Shopify store.
#[derive(Debug)]
pub struct Shopify {
    config: ShopifyConfig,
    http: reqwest::Client,
    bucket: std::sync::Mutex<Bucket>,
    breaker: std::sync::Mutex<Breaker>,
    /// Traffic counters.
    pub stats: ShopifyStats,
}

enum Attempt {
    Done(Value),
    /// Try again after this long (counted against the wait budget).
    Again(Duration, ShopifyError),
    Fail(ShopifyError),
}

impl Shopify {
    /// A client for `config`.
    pub fn new(config: ShopifyConfig) -> Result<Arc<Shopify>, String> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .connect_timeout(config.request_timeout)
            .pool_idle_timeout(Duration::from_secs(60))
            .user_agent(concat!("caly/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the Shopify HTTP client: {e}"))?;
        Ok(Arc::new(Shopify {
            config,
            http,
            bucket: std::sync::Mutex::new(Bucket {
                // Until Shopify tells us, assume the standard plan's bucket (§4.4).
                available: 1000.0,
                maximum: 1000.0,
                restore_rate: 100.0,
                at: Instant::now(),
            }),
            breaker: std::sync::Mutex::new(Breaker::default()),
            stats: ShopifyStats::default(),
        }))
    }

    /// The endpoint in use.
    pub fn endpoint(&self) -> &str {
        &self.config.endpoint
    }

    /// Runs one operation with the retry rules above; the `data` object on success.
    pub async fn graphql(&self, op: Op, variables: Value) -> Result<Value, ShopifyError> {
        let result = self.run(op, &variables).await;
        if result.is_err() {
            self.stats.failed.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    async fn run(&self, op: Op, variables: &Value) -> Result<Value, ShopifyError> {
        if self.circuit_open() {
            self.stats.short_circuited.fetch_add(1, Ordering::Relaxed);
            return Err(ShopifyError::Unavailable(
                "too many recent failures; not trying for a while".into(),
            ));
        }
        let body = json!({ "query": op.query, "variables": variables, "operationName": op.name });
        let mut waited = Duration::ZERO;
        let mut last = ShopifyError::Unavailable("no attempt made".into());
        for attempt in 1..=self.config.max_attempts.max(1) {
            let pause = self.lock_bucket().wait_for(op.cost);
            if !pause.is_zero() {
                if waited + pause > self.config.max_wait {
                    return Err(ShopifyError::Throttled);
                }
                waited += pause;
                tokio::time::sleep(pause).await;
            }
            if attempt > 1 {
                self.stats.retries.fetch_add(1, Ordering::Relaxed);
            }
            self.stats.requests.fetch_add(1, Ordering::Relaxed);
            match self.attempt(op, &body, attempt).await {
                Attempt::Done(data) => {
                    self.record(true);
                    return Ok(data);
                }
                Attempt::Fail(e) => {
                    if matches!(
                        e,
                        ShopifyError::Unavailable(_)
                            | ShopifyError::Uncertain(_)
                            | ShopifyError::Timeout
                    ) {
                        self.record(false);
                    }
                    return Err(e);
                }
                Attempt::Again(pause, e) => {
                    last = e;
                    if attempt == self.config.max_attempts {
                        break;
                    }
                    if waited + pause > self.config.max_wait {
                        break;
                    }
                    waited += pause;
                    tokio::time::sleep(pause).await;
                }
            }
        }
        if matches!(last, ShopifyError::Unavailable(_) | ShopifyError::Timeout) {
            self.record(false);
        }
        Err(last)
    }

    async fn attempt(&self, op: Op, body: &Value, attempt: u32) -> Attempt {
        let backoff =
            crate::backoff::delay(self.config.backoff_initial, self.config.max_wait, attempt);
        let sent = self
            .http
            .post(&self.config.endpoint)
            .header("X-Shopify-Access-Token", &self.config.access_token)
            .timeout(self.config.request_timeout)
            .json(body)
            .send()
            .await;
        let response = match sent {
            Ok(r) => r,
            Err(e) if e.is_connect() => {
                // Nothing reached Shopify: safe to retry a mutation too.
                return Attempt::Again(
                    backoff,
                    ShopifyError::Unavailable(format!("cannot connect: {e}")),
                );
            }
            Err(e) if op.mutation => {
                let what = if e.is_timeout() {
                    "timed out"
                } else {
                    "connection failed"
                };
                return Attempt::Fail(ShopifyError::Uncertain(format!("{} {what}", op.name)));
            }
            Err(e) if e.is_timeout() => return Attempt::Again(backoff, ShopifyError::Timeout),
            Err(e) => {
                return Attempt::Again(backoff, ShopifyError::Unavailable(e.to_string()));
            }
        };
        let status = response.status();
        if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            self.stats.throttled.fetch_add(1, Ordering::Relaxed);
            let after = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<f64>().ok())
                .filter(|s| s.is_finite() && *s >= 0.0)
                .map_or(Duration::from_secs(1), Duration::from_secs_f64);
            return Attempt::Again(after, ShopifyError::Throttled);
        }
        if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
            return Attempt::Fail(ShopifyError::Unauthorized);
        }
        if status.is_server_error() {
            let e = format!("HTTP {}", status.as_u16());
            return if op.mutation {
                Attempt::Fail(ShopifyError::Uncertain(format!("{}: {e}", op.name)))
            } else {
                Attempt::Again(backoff, ShopifyError::Unavailable(e))
            };
        }
        if !status.is_success() {
            return Attempt::Fail(ShopifyError::Protocol(format!("HTTP {}", status.as_u16())));
        }
        let body: Value = match response.json().await {
            Ok(v) => v,
            Err(e) if op.mutation => {
                return Attempt::Fail(ShopifyError::Uncertain(format!("{}: {e}", op.name)));
            }
            Err(e) => return Attempt::Again(backoff, ShopifyError::Unavailable(e.to_string())),
        };
        self.observe_cost(&body);
        let errors = body.get("errors").and_then(Value::as_array);
        if errors.is_some_and(|es| {
            es.iter()
                .any(|e| e.pointer("/extensions/code").and_then(Value::as_str) == Some("THROTTLED"))
        }) {
            self.stats.throttled.fetch_add(1, Ordering::Relaxed);
            let pause = self
                .lock_bucket()
                .wait_for(op.cost)
                .max(Duration::from_millis(250));
            return Attempt::Again(pause, ShopifyError::Throttled);
        }
        match body.get("data") {
            Some(data) if !data.is_null() => Attempt::Done(data.clone()),
            _ => {
                let message = errors
                    .and_then(|es| es.first())
                    .and_then(|e| e.get("message"))
                    .and_then(Value::as_str)
                    .unwrap_or("no data")
                    .to_string();
                Attempt::Fail(ShopifyError::Protocol(message))
            }
        }
    }

    fn lock_bucket(&self) -> std::sync::MutexGuard<'_, Bucket> {
        self.bucket
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Mirrors `extensions.cost.throttleStatus` (§4.4).
    fn observe_cost(&self, body: &Value) {
        let Some(t) = body.pointer("/extensions/cost/throttleStatus") else {
            return;
        };
        let num = |k: &str| t.get(k).and_then(Value::as_f64);
        if let (Some(max), Some(now), Some(rate)) = (
            num("maximumAvailable"),
            num("currentlyAvailable"),
            num("restoreRate"),
        ) {
            let mut b = self.lock_bucket();
            *b = Bucket {
                available: now,
                maximum: max,
                restore_rate: rate,
                at: Instant::now(),
            };
        }
    }

    fn circuit_open(&self) -> bool {
        let mut b = self
            .breaker
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match b.open_until {
            Some(t) if Instant::now() < t => true,
            Some(_) => {
                // Half open: let this one through; a failure re-opens at once.
                b.open_until = None;
                b.failures = self.config.breaker_failures.saturating_sub(1);
                false
            }
            None => false,
        }
    }

    fn record(&self, ok: bool) {
        let mut b = self
            .breaker
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if ok {
            b.failures = 0;
            b.open_until = None;
        } else {
            b.failures += 1;
            if b.failures >= self.config.breaker_failures {
                b.open_until = Some(Instant::now() + self.config.breaker_cooldown);
                tracing::warn!(
                    failures = b.failures,
                    cooldown_s = self.config.breaker_cooldown.as_secs(),
                    "Shopify keeps failing; pausing requests."
                );
            }
        }
    }
}
