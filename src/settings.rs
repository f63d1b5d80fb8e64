//! Process settings, from flags and the environment (DESIGN.md §12). Pipeline shape lives in
//! TOML; how the process runs lives here.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// How `caly serve` runs.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// The pipeline every incoming call runs.
    #[arg(long, env = "CALY_PIPELINE", default_value = "pipelines/default.toml")]
    pub pipeline: PathBuf,
    /// Port to listen on (Railway sets `PORT`).
    #[arg(long, env = "PORT", default_value_t = 8080)]
    pub port: u16,
    /// Address to bind.
    #[arg(long, env = "BIND", default_value_t = IpAddr::V4(Ipv4Addr::UNSPECIFIED))]
    pub bind: IpAddr,
    /// `user:password` Exotel must send as Basic auth on the stream upgrade; unset = open.
    #[arg(long, env = "CALY_STREAM_AUTH", hide_env_values = true)]
    pub stream_auth: Option<String>,
    /// Most calls streaming at once; beyond it new streams are refused (503).
    #[arg(long, env = "CALY_MAX_CALLS", default_value_t = 2000)]
    pub max_calls: usize,
    /// End a call when no media has arrived for this many milliseconds.
    #[arg(long, env = "CALY_IDLE_TIMEOUT_MS", default_value_t = 15_000)]
    pub idle_timeout_ms: u64,
    /// End a call after this many seconds (Exotel's own stream limit is 60 minutes).
    #[arg(long, env = "CALY_MAX_CALL_SECS", default_value_t = 3600)]
    pub max_call_secs: u64,
    /// On SIGTERM, let calls finish for up to this many seconds before ending them.
    #[arg(long, env = "CALY_DRAIN_GRACE_SECS", default_value_t = 30)]
    pub drain_grace_secs: u64,
    /// Call records: `sqlite://FILE` (created on first run) or `postgres://…`.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "sqlite://caly.db",
        hide_env_values = true
    )]
    pub database_url: String,
    /// Secret Exotel callbacks must carry as `?token=`; unset = webhooks refused.
    #[arg(long, env = "CALY_WEBHOOK_TOKEN", hide_env_values = true)]
    pub webhook_token: Option<String>,
    /// REST requests per second each API key may make (bursts up to twice that).
    #[arg(long, env = "CALY_API_RATE_PER_SEC", default_value_t = 20)]
    pub api_rate_per_sec: u32,
    /// Seconds a connection has to send a request's headers, on a new connection and between
    /// keep-alive requests alike (an idle keep-alive connection is closed after this).
    #[arg(long, env = "CALY_HTTP_HEADER_TIMEOUT_SECS", default_value_t = 10)]
    pub http_header_timeout_secs: u64,
    /// Seconds to answer one HTTP request, its body included (not a WebSocket once upgraded).
    #[arg(long, env = "CALY_HTTP_REQUEST_TIMEOUT_SECS", default_value_t = 30)]
    pub http_request_timeout_secs: u64,
    /// Most HTTP connections open at once, WebSockets included; beyond it a connection is
    /// answered 503 and closed. Keep it above `CALY_MAX_CALLS`.
    #[arg(long, env = "CALY_MAX_CONNECTIONS", default_value_t = 4096)]
    pub max_connections: usize,
    /// Erase the personal data of calls older than this many days (transcripts, numbers,
    /// entities, action wording, callback payloads), in small batches in the background;
    /// unset = keep.
    #[arg(long, env = "CALY_RETENTION_DAYS", value_parser = clap::value_parser!(u64).range(1..=36_500))]
    pub retention_days: Option<u64>,
    /// Without Shopify settings, and with the Realtime simulator (no `OPENAI_API_KEY`), agents
    /// act on a built-in, clearly labelled demo store (seeded orders in every state); with this
    /// flag they tell callers the store is not connected. A real model never gets the demo
    /// store: real callers must not hear about orders that do not exist.
    #[arg(long, env = "CALY_NO_DEMO_STORE")]
    pub no_demo_store: bool,
    /// The model price table (TOML, `data/prices.toml`'s format) calls are costed with;
    /// unset: the built-in list prices.
    #[arg(long, env = "CALY_PRICES")]
    pub prices: Option<PathBuf>,
}

impl ServeArgs {
    /// Settings for a test or tool: `pipeline`, 127.0.0.1 on a free port, defaults otherwise.
    pub fn local(pipeline: PathBuf) -> ServeArgs {
        ServeArgs {
            pipeline,
            port: 0,
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            stream_auth: None,
            max_calls: 2000,
            idle_timeout_ms: 15_000,
            max_call_secs: 3600,
            drain_grace_secs: 30,
            database_url: temp_sqlite_url(),
            webhook_token: None,
            api_rate_per_sec: 20,
            http_header_timeout_secs: 10,
            http_request_timeout_secs: 30,
            max_connections: 4096,
            retention_days: None,
            no_demo_store: false,
            prices: None,
        }
    }

    /// `api_rate_per_sec` as a governor quota (at least 1 per second).
    pub fn api_quota(&self) -> governor::Quota {
        use std::num::NonZeroU32;
        let rate = NonZeroU32::new(self.api_rate_per_sec).unwrap_or(NonZeroU32::MIN);
        let burst =
            NonZeroU32::new(self.api_rate_per_sec.saturating_mul(2)).unwrap_or(NonZeroU32::MIN);
        governor::Quota::per_second(rate).allow_burst(burst)
    }

    /// The socket address to listen on.
    pub fn listen(&self) -> SocketAddr {
        SocketAddr::new(self.bind, self.port)
    }

    /// `idle_timeout_ms` as a duration.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms)
    }

    /// `max_call_secs` as a duration.
    pub fn max_call(&self) -> Duration {
        Duration::from_secs(self.max_call_secs)
    }

    /// The HTTP server's connection limits.
    pub fn http_limits(&self) -> crate::http::HttpLimits {
        crate::http::HttpLimits {
            header_timeout: Duration::from_secs(self.http_header_timeout_secs.max(1)),
            request_timeout: Duration::from_secs(self.http_request_timeout_secs.max(1)),
            max_connections: self.max_connections.max(1),
        }
    }

    /// `retention_days` as a duration.
    pub fn retention(&self) -> Option<Duration> {
        self.retention_days
            .map(|days| Duration::from_secs(days.saturating_mul(86_400)))
    }

    /// `drain_grace_secs` as a duration.
    pub fn drain_grace(&self) -> Duration {
        Duration::from_secs(self.drain_grace_secs)
    }
}

/// A fresh SQLite file under the temp directory (for tests and tools that do not say where).
pub fn temp_sqlite_url() -> String {
    let path = std::env::temp_dir().join(format!("caly-{}.db", uuid::Uuid::now_v7().simple()));
    format!("sqlite://{}", path.display())
}
