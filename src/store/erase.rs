//! Erasure and retention (India's Digital Personal Data Protection Act 2023 gives callers the
//! right to erasure; a store keeps transcripts no longer than its policy). Erasing a call
//! removes what identifies or quotes the caller — its transcript, the caller's number (kept as
//! its last four digits), the Exotel custom field and recording link, intent entities, the
//! words and addresses in its actions, the payloads of its Exotel callbacks — and keeps the
//! counts and timings KPIs are made of. Each erasure is one short write transaction, recorded
//! in `erasures` (which call, why, who asked, when) without the data.

use sqlx::Row as _;

use super::{Store, StoreError, now_ms};
use crate::vocab::masked_phone;

/// What an action row says once its call is erased.
pub const ERASED_DETAIL: &str = "Erased.";
/// A call that started this recently and has not ended is still being recorded: erasing it
/// now would race the recorder, so it is refused until it ends (or this long has passed).
const IN_PROGRESS_MS: i64 = 2 * 3600 * 1000;
/// Most calls one `erase_phone` erases per batch.
const PHONE_BATCH: i64 = 100;

/// Why a call was erased.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EraseReason {
    /// `DELETE /v1/calls/{id}`.
    Request,
    /// `caly erase --phone`.
    Phone,
    /// Older than `CALY_RETENTION_DAYS`.
    Retention,
}

impl EraseReason {
    /// As recorded.
    pub fn label(self) -> &'static str {
        match self {
            EraseReason::Request => "request",
            EraseReason::Phone => "phone",
            EraseReason::Retention => "retention",
        }
    }
}

/// What erasing one call did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Erasure {
    /// Erased now.
    Erased {
        /// Caly's id of the call.
        call_id: String,
        /// Epoch ms.
        erased_at: i64,
    },
    /// It had been erased before; nothing changed.
    Already {
        /// Caly's id of the call.
        call_id: String,
        /// When it was, epoch ms.
        erased_at: i64,
    },
    /// The call is still going on.
    InProgress,
    /// No such call.
    NotFound,
}

impl Store {
    /// Erases the personal data of the call named by its id or CallSid.
    pub async fn erase_call(
        &self,
        id_or_sid: &str,
        reason: EraseReason,
        requested_by: &str,
    ) -> Result<Erasure, StoreError> {
        self.count_query();
        let row = sqlx::query(
            "SELECT id, erased_at, ended_at, started_at FROM calls WHERE id = $1 OR call_sid = $1 \
             ORDER BY started_at LIMIT 1",
        )
        .bind(id_or_sid)
        .fetch_optional(self.pool())
        .await?;
        let Some(row) = row else {
            return Ok(Erasure::NotFound);
        };
        let call_id: String = row.try_get("id")?;
        if let Some(erased_at) = row.try_get::<Option<i64>, _>("erased_at")? {
            return Ok(Erasure::Already { call_id, erased_at });
        }
        let ended: Option<i64> = row.try_get("ended_at")?;
        let started: i64 = row.try_get("started_at")?;
        if ended.is_none() && now_ms() - started < IN_PROGRESS_MS {
            return Ok(Erasure::InProgress);
        }
        let erased_at = self.erase_one(&call_id, reason, requested_by).await?;
        Ok(Erasure::Erased { call_id, erased_at })
    }

    /// Erases every call from `number` (any spelling; see
    /// [`crate::vocab::normalize_number`]); how many were erased. Calls still going on are
    /// left (their number is erased once they end and this is run again).
    pub async fn erase_phone(&self, number: &str, requested_by: &str) -> Result<u64, StoreError> {
        let Some(number) = crate::vocab::normalize_number(number) else {
            return Ok(0);
        };
        let mut erased = 0;
        loop {
            self.count_query();
            let ids: Vec<String> = sqlx::query_scalar(
                "SELECT id FROM calls WHERE from_number = $1 AND erased_at IS NULL \
                 AND (ended_at IS NOT NULL OR started_at < $2) ORDER BY started_at LIMIT $3",
            )
            .bind(&number)
            .bind(now_ms() - IN_PROGRESS_MS)
            .bind(PHONE_BATCH)
            .fetch_all(self.pool())
            .await?;
            if ids.is_empty() {
                return Ok(erased);
            }
            for id in &ids {
                self.erase_one(id, EraseReason::Phone, requested_by).await?;
                erased += 1;
            }
        }
    }

    /// One batch of retention: erases up to `batch` calls that started before `cutoff_ms`
    /// (and empties the payloads of Exotel callbacks received before it); how many calls.
    pub async fn purge_before(&self, cutoff_ms: i64, batch: i64) -> Result<u64, StoreError> {
        self.count_query();
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM calls WHERE erased_at IS NULL AND started_at < $1 \
             ORDER BY started_at LIMIT $2",
        )
        .bind(cutoff_ms)
        .bind(batch)
        .fetch_all(self.pool())
        .await?;
        for id in &ids {
            self.erase_one(id, EraseReason::Retention, "retention")
                .await?;
        }
        let (mut tx, _turn) = self.begin_write().await?;
        self.count_query();
        sqlx::query(
            "UPDATE webhook_events SET payload = '{}' WHERE id IN \
             (SELECT id FROM webhook_events WHERE received_at < $1 AND payload <> '{}' LIMIT $2)",
        )
        .bind(cutoff_ms)
        .bind(batch)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(u64::try_from(ids.len()).unwrap_or(u64::MAX))
    }

    /// Erases call `call_id` in one transaction; when.
    async fn erase_one(
        &self,
        call_id: &str,
        reason: EraseReason,
        requested_by: &str,
    ) -> Result<i64, StoreError> {
        let at = now_ms();
        let (mut tx, _turn) = self.begin_write().await?;
        self.count_query();
        let row = sqlx::query("SELECT from_number, call_sid FROM calls WHERE id = $1")
            .bind(call_id)
            .fetch_one(&mut *tx)
            .await?;
        let from: Option<String> = row.try_get("from_number")?;
        let call_sid: Option<String> = row.try_get("call_sid")?;
        sqlx::query(
            "UPDATE calls SET from_number = $1, custom_field = NULL, recording_url = NULL, \
             erased_at = $2, updated_at = $2 WHERE id = $3",
        )
        .bind(from.as_deref().map(masked_phone))
        .bind(at)
        .bind(call_id)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM transcript_segments WHERE call_id = $1")
            .bind(call_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE intents SET entities = '{}' WHERE call_id = $1")
            .bind(call_id)
            .execute(&mut *tx)
            .await?;
        // Keypad digits are the caller's words too.
        sqlx::query("UPDATE call_events SET detail = '' WHERE call_id = $1 AND kind = 'keypad'")
            .bind(call_id)
            .execute(&mut *tx)
            .await?;
        // A change not yet settled keeps what was asked for until reconciliation has looked
        // at the order; settling it then drops it (see `settle_action`).
        sqlx::query(
            "UPDATE actions SET detail = $1, change_before = NULL, confirmed_by = NULL, \
             change_after = CASE WHEN status IN ('pending', 'uncertain') THEN change_after \
             ELSE NULL END WHERE call_id = $2",
        )
        .bind(ERASED_DETAIL)
        .bind(call_id)
        .execute(&mut *tx)
        .await?;
        if let Some(sid) = &call_sid {
            sqlx::query("UPDATE webhook_events SET payload = '{}' WHERE call_sid = $1")
                .bind(sid)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(
            "INSERT INTO erasures (call_id, reason, requested_by, erased_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(call_id)
        .bind(reason.label())
        .bind(requested_by)
        .bind(at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.count_query();
        tracing::info!(call = %call_id, reason = reason.label(), by = %requested_by, "Erased a call's personal data.");
        Ok(at)
    }
}

/// How often retention looks for calls past the limit.
const RETENTION_EVERY: std::time::Duration = std::time::Duration::from_secs(600);
/// Calls erased per transaction batch by retention.
const RETENTION_BATCH: i64 = 100;
/// Pause between batches, so retention never holds the write path for long.
const RETENTION_PAUSE: std::time::Duration = std::time::Duration::from_millis(200);

impl Store {
    /// Runs retention until aborted: at start and every ten minutes, erases calls that
    /// started more than `keep` ago, a batch at a time with a pause between batches (each
    /// call is its own short transaction, so call records keep being written meanwhile).
    pub async fn retain(self, keep: std::time::Duration) {
        let keep_ms = i64::try_from(keep.as_millis()).unwrap_or(i64::MAX);
        let mut tick = tokio::time::interval(RETENTION_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let cutoff = now_ms().saturating_sub(keep_ms);
            let mut erased = 0;
            loop {
                match self.purge_before(cutoff, RETENTION_BATCH).await {
                    Ok(0) => break,
                    Ok(n) => {
                        erased += n;
                        tokio::time::sleep(RETENTION_PAUSE).await;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "Retention could not erase old calls; trying again later.");
                        break;
                    }
                }
            }
            if erased > 0 {
                tracing::info!(
                    calls = erased,
                    days = keep_ms / 86_400_000,
                    "Retention erased the personal data of old calls."
                );
            }
        }
    }
}
