//! API keys: `caly_<prefix>_<secret>`. Only the prefix (to find the row) and the SHA-256 of the
//! whole key are stored; the key is shown once, when created. Checking compares hashes in
//! constant time.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest as _, Sha256};
use sqlx::Row as _;
use subtle::ConstantTimeEq as _;

use super::{Store, StoreError, now_ms};
use crate::vocab::sha256_hex;

/// What a key may do. Each scope includes the ones below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Read calls, transcripts, actions, KPIs.
    Read,
    /// Read, and change call records (erase a call).
    Write,
    /// Everything, including managing API keys.
    Admin,
}

impl Scope {
    /// `read`, `write` or `admin`.
    pub fn label(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
            Scope::Admin => "admin",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

impl FromStr for Scope {
    type Err = String;

    fn from_str(s: &str) -> Result<Scope, String> {
        match s {
            "read" => Ok(Scope::Read),
            "write" => Ok(Scope::Write),
            "admin" => Ok(Scope::Admin),
            other => Err(format!("unknown scope {other:?} (read, write or admin)")),
        }
    }
}

/// A key that checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    /// The key's id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// What it may do.
    pub scope: Scope,
}

/// A key just created: `secret` is the only copy.
#[derive(Debug, Clone)]
pub struct NewKey {
    /// The key's id.
    pub id: String,
    /// The whole key, to hand to the user once.
    pub secret: String,
}

/// Longest name a key may have.
pub const MAX_NAME: usize = 100;

fn hash(key: &str) -> String {
    sha256_hex(key, 32)
}

/// `bytes` random bytes as hex (at most 32): SHA-256 over two v4 UUIDs, which draw 244 bits
/// from the OS random source.
fn random_token(bytes: usize) -> String {
    let mut h = Sha256::new();
    h.update(uuid::Uuid::new_v4().as_bytes());
    h.update(uuid::Uuid::new_v4().as_bytes());
    h.finalize()
        .iter()
        .take(bytes.min(32))
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Splits `caly_<prefix>_<secret>` into its prefix, if it has that shape.
fn prefix_of(key: &str) -> Option<&str> {
    let rest = key.strip_prefix("caly_")?;
    let (prefix, secret) = rest.split_once('_')?;
    (prefix.len() == 8
        && prefix.bytes().all(|b| b.is_ascii_hexdigit())
        && secret.len() == 48
        && secret.bytes().all(|b| b.is_ascii_hexdigit()))
    .then_some(prefix)
}

/// A key as listed: never its secret or hash. Times are RFC 3339.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct KeyInfo {
    /// The key's id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// `read`, `write` or `admin`.
    pub scope: String,
    /// The first characters of the key (`caly_<prefix>_…`), to tell keys apart.
    pub prefix: String,
    /// When it was created.
    pub created_at: String,
    /// When it stops working, if it does.
    pub expires_at: Option<String>,
    /// When it was last used (to the minute).
    pub last_used_at: Option<String>,
    /// When it was revoked.
    pub revoked_at: Option<String>,
}

/// Most keys a listing returns (newest first).
pub const MAX_LISTED: i64 = 1_000;
/// A key's use is written at most this often.
pub const USE_RESOLUTION_MS: i64 = 60_000;
/// Most keys whose last write [`KeyUse`] remembers.
const MAX_TRACKED: usize = 10_000;
/// Most uses waiting to be written.
const USE_QUEUE: usize = 256;

/// Remembers when each key was last used, off the request path: a request notes its key
/// here (no I/O), at most once a minute per key a write is queued (bounded; a full queue
/// skips the write, the next request retries), and [`Store::write_key_uses`] writes them.
pub struct KeyUse {
    written: std::sync::Mutex<std::collections::HashMap<String, i64>>,
    queue: tokio::sync::mpsc::Sender<(String, i64)>,
}

/// What [`Store::write_key_uses`] drains.
pub type KeyUses = tokio::sync::mpsc::Receiver<(String, i64)>;

impl KeyUse {
    /// The tracker and the queue its writer drains.
    pub fn new() -> (KeyUse, KeyUses) {
        let (queue, rx) = tokio::sync::mpsc::channel(USE_QUEUE);
        let written = std::sync::Mutex::default();
        (KeyUse { written, queue }, rx)
    }

    /// Key `id` was used at `now_ms`.
    pub fn used(&self, id: &str, now_ms: i64) {
        let Ok(mut written) = self.written.lock() else {
            return;
        };
        if written
            .get(id)
            .is_some_and(|&at| now_ms - at < USE_RESOLUTION_MS)
        {
            return;
        }
        if written.len() >= MAX_TRACKED {
            written.retain(|_, at| now_ms - *at < USE_RESOLUTION_MS);
            if written.len() >= MAX_TRACKED {
                return;
            }
        }
        if self.queue.try_send((id.to_owned(), now_ms)).is_ok() {
            written.insert(id.to_owned(), now_ms);
        }
    }
}

/// A checked key from its row's `id`, `name` and `scope`.
fn api_key(row: &sqlx::any::AnyRow) -> Result<ApiKey, sqlx::Error> {
    let scope: String = row.try_get("scope")?;
    Ok(ApiKey {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        scope: scope.parse().unwrap_or(Scope::Read),
    })
}

fn key_info(row: &sqlx::any::AnyRow) -> Result<KeyInfo, sqlx::Error> {
    use super::read::rfc3339;
    let time = |name: &str| -> Result<Option<String>, sqlx::Error> {
        Ok(row.try_get::<Option<i64>, _>(name)?.map(rfc3339))
    };
    Ok(KeyInfo {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        scope: row.try_get("scope")?,
        prefix: row.try_get("prefix")?,
        created_at: rfc3339(row.try_get("created_at")?),
        expires_at: time("expires_at")?,
        last_used_at: time("last_used_at")?,
        revoked_at: time("revoked_at")?,
    })
}

impl Store {
    /// Creates a key that does not expire; the returned secret is never stored.
    pub async fn create_api_key(&self, name: &str, scope: Scope) -> Result<NewKey, StoreError> {
        self.create_api_key_expiring(name, scope, None).await
    }

    /// Creates a key that stops working at `expires_at` (epoch ms), if given.
    pub async fn create_api_key_expiring(
        &self,
        name: &str,
        scope: Scope,
        expires_at: Option<i64>,
    ) -> Result<NewKey, StoreError> {
        let id = uuid::Uuid::now_v7().to_string();
        let prefix = random_token(4);
        let secret = format!("caly_{prefix}_{}", random_token(24));
        self.count_query();
        sqlx::query(
            "INSERT INTO api_keys (id, name, scope, prefix, hash, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&id)
        .bind(name)
        .bind(scope.label())
        .bind(&prefix)
        .bind(hash(&secret))
        .bind(now_ms())
        .bind(expires_at)
        .execute(self.pool())
        .await?;
        Ok(NewKey { id, secret })
    }

    /// The key, if it exists, has not been revoked and has not expired.
    pub async fn check_api_key(&self, key: &str) -> Result<Option<ApiKey>, StoreError> {
        let Some(prefix) = prefix_of(key) else {
            return Ok(None);
        };
        self.count_query();
        let row = sqlx::query(
            "SELECT id, name, scope, hash FROM api_keys WHERE prefix = $1 AND revoked_at IS NULL \
             AND (expires_at IS NULL OR expires_at > $2)",
        )
        .bind(prefix)
        .bind(now_ms())
        .fetch_optional(self.pool())
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let stored: String = row.try_get("hash")?;
        if !bool::from(stored.as_bytes().ct_eq(hash(key).as_bytes())) {
            return Ok(None);
        }
        Ok(Some(api_key(&row)?))
    }

    /// Revokes a key; `false` if there was no such live key.
    pub async fn revoke_api_key(&self, id: &str) -> Result<bool, StoreError> {
        self.count_query();
        let done =
            sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
                .bind(now_ms())
                .bind(id)
                .execute(self.pool())
                .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Every key, newest first (at most [`MAX_LISTED`]), without secrets.
    pub async fn list_api_keys(&self) -> Result<Vec<KeyInfo>, StoreError> {
        self.count_query();
        let rows = sqlx::query(
            "SELECT id, name, scope, prefix, created_at, expires_at, last_used_at, revoked_at \
             FROM api_keys ORDER BY created_at DESC, id DESC LIMIT $1",
        )
        .bind(MAX_LISTED)
        .fetch_all(self.pool())
        .await?;
        Ok(rows.iter().map(key_info).collect::<Result<_, _>>()?)
    }

    /// Writes the uses [`KeyUse`] queues until every sender is gone (the owner may also
    /// abort it: a lost write is one minute of `last_used_at`).
    pub async fn write_key_uses(self, mut uses: KeyUses) {
        while let Some((id, at)) = uses.recv().await {
            let written = async {
                let (mut tx, _turn) = self.begin_write().await?;
                self.count_query();
                sqlx::query(
                    "UPDATE api_keys SET last_used_at = $1 WHERE id = $2 \
                     AND (last_used_at IS NULL OR last_used_at < $1)",
                )
                .bind(at)
                .bind(&id)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok::<_, StoreError>(())
            }
            .await;
            if let Err(e) = written {
                tracing::warn!(key_id = %id, error = %e, "Could not write when a key was last used.");
            }
        }
    }
}

/// How long a console session lasts (it ends sooner with its key).
pub const SESSION_TTL_MS: i64 = 12 * 3_600_000;
/// Most console sessions one key holds; signing in again ends the oldest beyond it.
pub const MAX_SESSIONS_PER_KEY: i64 = 20;

/// Whether `token` has the shape of a console session token (`cs_` and 48 hex digits).
fn is_session_token(token: &str) -> bool {
    token
        .strip_prefix("cs_")
        .is_some_and(|t| t.len() == 48 && t.bytes().all(|b| b.is_ascii_hexdigit()))
}

impl Store {
    /// Starts a console session for key `key_id` (already checked): a new random token for
    /// the browser's cookie (only its hash is stored) and when it expires (epoch ms), never
    /// after the key does. Expired sessions are dropped and the key keeps at most
    /// [`MAX_SESSIONS_PER_KEY`].
    pub async fn create_session(&self, key_id: &str) -> Result<(String, i64), StoreError> {
        let token = format!("cs_{}", random_token(24));
        let now = now_ms();
        let (mut tx, _turn) = self.begin_write().await?;
        self.count_query();
        let key_expiry: Option<i64> = sqlx::query("SELECT expires_at FROM api_keys WHERE id = $1")
            .bind(key_id)
            .fetch_optional(&mut *tx)
            .await?
            .map(|row| row.try_get::<Option<i64>, _>("expires_at"))
            .transpose()?
            .flatten();
        let expires = key_expiry.map_or(now + SESSION_TTL_MS, |k| k.min(now + SESSION_TTL_MS));
        sqlx::query("DELETE FROM console_sessions WHERE expires_at <= $1")
            .bind(now)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "DELETE FROM console_sessions WHERE key_id = $1 AND hash NOT IN \
             (SELECT hash FROM console_sessions WHERE key_id = $1 \
              ORDER BY created_at DESC, hash DESC LIMIT $2)",
        )
        .bind(key_id)
        .bind(MAX_SESSIONS_PER_KEY - 1)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO console_sessions (hash, key_id, created_at, expires_at) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(hash(&token))
        .bind(key_id)
        .bind(now)
        .bind(expires)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok((token, expires))
    }

    /// The key a console session acts as, if the session has not expired or ended and the key
    /// is still live.
    pub async fn check_session(&self, token: &str) -> Result<Option<ApiKey>, StoreError> {
        if !is_session_token(token) {
            return Ok(None);
        }
        let now = now_ms();
        self.count_query();
        let row = sqlx::query(
            "SELECT k.id, k.name, k.scope FROM console_sessions s JOIN api_keys k ON k.id = s.key_id \
             WHERE s.hash = $1 AND s.expires_at > $2 AND k.revoked_at IS NULL \
             AND (k.expires_at IS NULL OR k.expires_at > $2)",
        )
        .bind(hash(token))
        .bind(now)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.as_ref().map(api_key).transpose()?)
    }

    /// Ends a console session (sign-out); `false` if there was none.
    pub async fn end_session(&self, token: &str) -> Result<bool, StoreError> {
        if !is_session_token(token) {
            return Ok(false);
        }
        let (mut tx, _turn) = self.begin_write().await?;
        self.count_query();
        let done = sqlx::query("DELETE FROM console_sessions WHERE hash = $1")
            .bind(hash(token))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_well_formed_keys_have_a_prefix() {
        let key = format!("caly_{}_{}", random_token(4), random_token(24));
        assert!(prefix_of(&key).is_some(), "{key}");
        assert_eq!(prefix_of("caly_abc_def"), None);
        assert_eq!(prefix_of("Bearer x"), None);
        assert_eq!(
            prefix_of(&format!("caly_zzzzzzzz_{}", "a".repeat(48))),
            None
        );
        assert_ne!(random_token(24), random_token(24));
    }

    #[test]
    fn a_key_use_is_queued_at_most_once_a_minute_per_key() {
        let (uses, mut queued) = KeyUse::new();
        let t = 1_000_000;
        uses.used("a", t);
        uses.used("a", t + 1_000);
        uses.used("b", t + 2_000);
        uses.used("a", t + USE_RESOLUTION_MS - 1);
        uses.used("a", t + USE_RESOLUTION_MS);
        let mut got = Vec::new();
        while let Ok(u) = queued.try_recv() {
            got.push(u);
        }
        assert_eq!(
            got,
            [
                ("a".to_owned(), t),
                ("b".to_owned(), t + 2_000),
                ("a".to_owned(), t + USE_RESOLUTION_MS)
            ]
        );
        // A full queue drops the write and remembers nothing, so a later use retries.
        for i in 0..USE_QUEUE + 10 {
            uses.used(&format!("k{i}"), t);
        }
        assert!(queued.try_recv().is_ok());
        uses.used(&format!("k{}", USE_QUEUE + 5), t + 1);
        let mut last = None;
        while let Ok(u) = queued.try_recv() {
            last = Some(u);
        }
        assert_eq!(last, Some((format!("k{}", USE_QUEUE + 5), t + 1)));
    }
}
