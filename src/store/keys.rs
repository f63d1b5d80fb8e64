//! API keys: `caly_<prefix>_<secret>`. Only the prefix (to find the row) and the SHA-256 of the
//! whole key are stored; the key is shown once, when created. Checking compares hashes in
//! constant time.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest as _, Sha256};
use sqlx::Row as _;
use subtle::ConstantTimeEq as _;

use super::{Store, StoreError, now_ms};

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
    let digest = Sha256::digest(key.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
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

impl Store {
    /// Creates a key; the returned secret is never stored.
    pub async fn create_api_key(&self, name: &str, scope: Scope) -> Result<NewKey, StoreError> {
        let id = uuid::Uuid::now_v7().to_string();
        let prefix = random_token(4);
        let secret = format!("caly_{prefix}_{}", random_token(24));
        self.count_query();
        sqlx::query(
            "INSERT INTO api_keys (id, name, scope, prefix, hash, created_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&id)
        .bind(name)
        .bind(scope.label())
        .bind(&prefix)
        .bind(hash(&secret))
        .bind(now_ms())
        .execute(self.pool())
        .await?;
        Ok(NewKey { id, secret })
    }

    /// The key, if it exists and has not been revoked.
    pub async fn check_api_key(&self, key: &str) -> Result<Option<ApiKey>, StoreError> {
        let Some(prefix) = prefix_of(key) else {
            return Ok(None);
        };
        self.count_query();
        let row = sqlx::query(
            "SELECT id, name, scope, hash FROM api_keys WHERE prefix = $1 AND revoked_at IS NULL",
        )
        .bind(prefix)
        .fetch_optional(self.pool())
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let stored: String = row.try_get("hash")?;
        if !bool::from(stored.as_bytes().ct_eq(hash(key).as_bytes())) {
            return Ok(None);
        }
        let scope: String = row.try_get("scope")?;
        Ok(Some(ApiKey {
            id: row.try_get("id")?,
            name: row.try_get("name")?,
            scope: scope.parse().unwrap_or(Scope::Read),
        }))
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
}
