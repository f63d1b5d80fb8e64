//! Call records (DESIGN.md §8): one [`Store`] over sqlx's `AnyPool`, so the embedded SQLite
//! default and production PostgreSQL run the same code and the same SQL (`$n` placeholders,
//! times as epoch milliseconds, ids and JSON as text).
//!
//! - [`write`]: what the store is told (a call started, a transcript segment, an intent, an
//!   action, a turn's latency, the call ended; an Exotel webhook), each batch one transaction.
//! - [`read`]: what the REST API asks (calls by filter and cursor, one call with everything it
//!   has, actions, KPIs), each answer a fixed number of queries.
//! - [`recorder`]: the write-behind queue between a call and the database.
//! - [`actions`]: the action ledger (claims and settles changes to orders, before and after).
//! - [`keys`]: API keys, stored as SHA-256 hashes.

pub mod actions;
pub mod erase;
pub mod keys;
pub mod notify;
pub mod read;
pub mod recorder;
pub mod write;

pub use notify::listen;
pub use recorder::{Recorder, RecorderConfig, RecorderStats, RecorderTask};
pub use write::{Record, Webhook, WebhookKind, WebhookOutcome};

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sha2::{Digest as _, Sha256};
use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{AnyPool, Executor as _, SqlSafeStr as _};

/// How long a query may wait for a connection before the caller hears the database is down.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);
/// SQLite: how long a writer waits for another's lock.
const SQLITE_BUSY_TIMEOUT_MS: u32 = 5000;

/// Which database a [`Store`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The embedded default: one file, WAL mode.
    Sqlite,
    /// Production.
    Postgres,
}

impl Backend {
    /// `sqlite` or `postgres` (for `/readyz` and logs).
    pub fn label(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// What went wrong talking to the database. The message is for logs; HTTP answers never show
/// it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// `DATABASE_URL` names no database Caly can use.
    #[error("unsupported database URL (use sqlite://… or postgres://…): {0}")]
    BadUrl(String),
    /// The database refused or failed.
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    /// Migrations failed.
    #[error(transparent)]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// The call-records database.
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    pub(super) backend: Backend,
    queries: Arc<AtomicU64>,
    /// SQLite has one writer at a time: writers of this process queue here, in order,
    /// rather than spin in SQLite's busy handler (which is unfair and gives up after the
    /// busy timeout while a long batch commits).
    write_gate: Arc<tokio::sync::Mutex<()>>,
}

/// Niceness of the embedded database's worker threads (0 is every other thread's).
pub const SQLITE_THREAD_NICE: i32 = 10;

/// SQLite runs inside the server, a thread per connection, and its writes come in bursts (a
/// batch of records, a WAL checkpoint) of a few milliseconds. On a server with one or two
/// cores the kernel would hand those bursts the CPU in the middle of the calls' audio work:
/// measured at 400 busy calls on one core, that alone put Caly's share of a turn at p99 7.5–20
/// ms, against ≤ 2 ms with the writes kept off the core. At a lower priority the writes run
/// when the audio's threads are idle, which at any load the server keeps up with is most of
/// the time; nothing is dropped, a batch only lands a little later. Linux only (other systems
/// keep the default); found by their name, as sqlx names them.
fn lower_sqlite_threads() {
    #[cfg(target_os = "linux")]
    for tid in sqlite_threads() {
        let _ = rustix::process::setpriority_process(
            rustix::process::Pid::from_raw(tid),
            SQLITE_THREAD_NICE,
        );
    }
}

/// This process's SQLite worker threads (their thread ids), by the name sqlx gives them.
#[cfg(target_os = "linux")]
fn sqlite_threads() -> Vec<i32> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter(|task| {
            std::fs::read_to_string(task.path().join("comm"))
                .is_ok_and(|comm| comm.starts_with("sqlx-sqlite"))
        })
        .filter_map(|task| task.file_name().to_str()?.parse().ok())
        .collect()
}

impl Store {
    /// Connects (SQLite: the file is created on first use, WAL mode). The pool is lazy about
    /// nothing: this fails if the database cannot be reached now.
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        Store::connect_with(url, 10).await
    }

    /// As [`Store::connect`], with at most `max_connections` connections.
    pub async fn connect_with(url: &str, max_connections: u32) -> Result<Store, StoreError> {
        install_default_drivers();
        let (url, backend) = normalize_url(url)?;
        let options = AnyPoolOptions::new()
            .max_connections(max_connections.max(1))
            .acquire_timeout(ACQUIRE_TIMEOUT);
        let pool = match backend {
            Backend::Sqlite => {
                let pool = options
                    .after_connect(|conn, _| {
                        Box::pin(async move {
                            lower_sqlite_threads();
                            conn.execute("PRAGMA synchronous = NORMAL").await?;
                            // 16 MiB of page cache (the default is 2 MiB): indexes of a large
                            // call history stay in memory.
                            conn.execute("PRAGMA cache_size = -16384").await?;
                            conn.execute(sqlx::AssertSqlSafe(format!(
                                "PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}"
                            )))
                            .await?;
                            Ok(())
                        })
                    })
                    .connect(&url)
                    .await?;
                // WAL is a property of the file, set once. Switching needs a lock no busy
                // timeout waits for, so it is never done per connection (a connection opened
                // while another writes would fail with "database is locked").
                let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
                    .fetch_one(&pool)
                    .await?;
                if !mode.eq_ignore_ascii_case("wal") && !url.contains("memory") {
                    sqlx::query("PRAGMA journal_mode = WAL")
                        .execute(&pool)
                        .await?;
                }
                pool
            }
            Backend::Postgres => options.connect(&url).await?,
        };
        Ok(Store {
            pool,
            backend,
            queries: Arc::new(AtomicU64::new(0)),
            write_gate: Arc::new(tokio::sync::Mutex::new(())),
        })
    }

    /// Applies the migrations of this backend that have not run yet.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let sources: [(i64, &str, &'static str); 5] = match self.backend {
            Backend::Sqlite => [
                (
                    1,
                    "init",
                    include_str!("../../migrations/sqlite/0001_init.sql"),
                ),
                (
                    2,
                    "action_ledger",
                    include_str!("../../migrations/sqlite/0002_action_ledger.sql"),
                ),
                (
                    3,
                    "erasure_and_keys",
                    include_str!("../../migrations/sqlite/0003_erasure_and_keys.sql"),
                ),
                (
                    4,
                    "model_usage",
                    include_str!("../../migrations/sqlite/0004_model_usage.sql"),
                ),
                (
                    5,
                    "console",
                    include_str!("../../migrations/sqlite/0005_console.sql"),
                ),
            ],
            Backend::Postgres => [
                (
                    1,
                    "init",
                    include_str!("../../migrations/postgres/0001_init.sql"),
                ),
                (
                    2,
                    "action_ledger",
                    include_str!("../../migrations/postgres/0002_action_ledger.sql"),
                ),
                (
                    3,
                    "erasure_and_keys",
                    include_str!("../../migrations/postgres/0003_erasure_and_keys.sql"),
                ),
                (
                    4,
                    "model_usage",
                    include_str!("../../migrations/postgres/0004_model_usage.sql"),
                ),
                (
                    5,
                    "console",
                    include_str!("../../migrations/postgres/0005_console.sql"),
                ),
            ],
        };
        let migrations = sources
            .into_iter()
            .map(|(version, name, sql)| {
                Migration::new(
                    version,
                    name.into(),
                    MigrationType::Simple,
                    sql.into_sql_str(),
                    false,
                )
            })
            .collect();
        let migrator = Migrator::with_migrations(migrations);
        migrator.run(&self.pool).await?;
        Ok(())
    }

    /// Which database this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Queries issued so far by this store and its clones (tests prove reads do not grow with
    /// the data).
    pub fn queries(&self) -> u64 {
        self.queries.load(Ordering::Relaxed)
    }

    /// Whether the database answers now.
    pub async fn ping(&self) -> bool {
        self.count_query();
        sqlx::query("SELECT 1").execute(&self.pool).await.is_ok()
    }

    /// Connections open and idle, for metrics.
    pub fn pool_usage(&self) -> (u32, usize) {
        (self.pool.size(), self.pool.num_idle())
    }

    /// Closes every connection.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Runs one statement outside the call-records API (tests and benches only: create or drop
    /// a database, hold a lock). Not in a release build.
    #[cfg(any(test, feature = "test-util"))]
    pub async fn execute_admin(&self, sql: &str) -> Result<u64, StoreError> {
        self.count_query();
        let done = sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    /// Counts the rows of one of the store's tables (tests and tools).
    pub async fn count_rows(&self, table: &str) -> Result<i64, StoreError> {
        const TABLES: &[&str] = &[
            "calls",
            "transcript_segments",
            "turns",
            "intents",
            "actions",
            "webhook_events",
            "api_keys",
            "erasures",
            "console_sessions",
            "call_events",
        ];
        let Some(table) = TABLES.iter().find(|t| **t == table) else {
            return Err(StoreError::Db(sqlx::Error::Protocol(format!(
                "no table {table}"
            ))));
        };
        self.count_query();
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT COUNT(*) AS n FROM {table}"
        )))
        .fetch_one(&self.pool)
        .await?;
        Ok(sqlx::Row::try_get(&row, "n")?)
    }

    /// A transaction that writes, and (SQLite) this process's turn to write, held until the
    /// guard is dropped. SQLite's is `BEGIN IMMEDIATE`: it takes the write lock up front
    /// (another process's writer is waited for up to the busy timeout), where a deferred one
    /// could fail with "database is locked" when it upgrades while another writer commits.
    pub(crate) async fn begin_write(
        &self,
    ) -> Result<
        (
            sqlx::Transaction<'static, sqlx::Any>,
            Option<tokio::sync::OwnedMutexGuard<()>>,
        ),
        sqlx::Error,
    > {
        match self.backend {
            Backend::Sqlite => {
                let gate = Arc::clone(&self.write_gate).lock_owned().await;
                let tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
                Ok((tx, Some(gate)))
            }
            Backend::Postgres => Ok((self.pool.begin().await?, None)),
        }
    }

    pub(super) fn count_query(&self) {
        self.queries.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }
}

/// `sqlite://caly.db` → a URL that creates the file; `postgres://…` unchanged.
fn normalize_url(url: &str) -> Result<(String, Backend), StoreError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok((url.to_owned(), Backend::Postgres));
    }
    if let Some(rest) = url.strip_prefix("sqlite:") {
        let url = if rest.contains("mode=") || rest.contains(":memory:") {
            url.to_owned()
        } else if rest.contains('?') {
            format!("{url}&mode=rwc")
        } else {
            format!("{url}?mode=rwc")
        };
        return Ok((url, Backend::Sqlite));
    }
    Err(StoreError::BadUrl(redact_url(url)))
}

/// A database URL without its password, for messages.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &url[scheme + 3..at];
            let user = creds.split(':').next().unwrap_or("");
            format!("{}://{user}:***@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The call id for an Exotel CallSid: the same on every path that sees the call (the stream's
/// `start`, status callbacks, Passthru), so rows converge whatever arrives first.
pub fn call_id_for_sid(call_sid: &str) -> String {
    let digest = Sha256::digest(format!("exotel-call:{call_sid}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Uuid::new_v8(bytes).to_string()
}

/// A fresh call id for a stream that names no CallSid (time-ordered).
pub fn new_call_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_urls_create_the_file_and_other_schemes_are_refused() {
        assert_eq!(
            normalize_url("sqlite://caly.db").unwrap().0,
            "sqlite://caly.db?mode=rwc"
        );
        assert_eq!(
            normalize_url("sqlite://x.db?mode=ro").unwrap().0,
            "sqlite://x.db?mode=ro"
        );
        assert_eq!(
            normalize_url("postgres://u:p@h/db").unwrap().1,
            Backend::Postgres
        );
        let err = normalize_url("mysql://root:hunter2@h/db").unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    /// Every SQLite worker thread of an open store runs at the lower priority; this thread
    /// (and so the runtime's) does not.
    #[cfg(target_os = "linux")]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_embedded_database_s_threads_run_below_the_audio() {
        let dir = std::env::temp_dir().join(format!("caly-nice-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        let url = format!("sqlite://{}", dir.join("n.db").display());
        let store = Store::connect_with(&url, 3)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        // Open every connection the pool may hold.
        let held: Vec<_> = futures::future::join_all((0..3).map(|_| store.pool.acquire())).await;
        let niceness =
            |tid: i32| rustix::process::getpriority_process(rustix::process::Pid::from_raw(tid));
        let workers = sqlite_threads();
        for tid in &workers {
            assert_eq!(
                niceness(*tid).ok(),
                Some(SQLITE_THREAD_NICE),
                "thread {tid}"
            );
        }
        assert!(workers.len() >= 3, "{} worker threads", workers.len());
        assert_eq!(
            niceness(rustix::process::getpid().as_raw_nonzero().get()).ok(),
            Some(0)
        );
        drop(held);
        store.pool.close().await;
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_call_sid_always_maps_to_the_same_uuid() {
        let a = call_id_for_sid("80bfbec2d78bbbf10fb851f4fa165211");
        assert_eq!(a, call_id_for_sid("80bfbec2d78bbbf10fb851f4fa165211"));
        assert_ne!(a, call_id_for_sid("80bfbec2d78bbbf10fb851f4fa165212"));
        assert!(uuid::Uuid::parse_str(&a).is_ok());
    }
}
