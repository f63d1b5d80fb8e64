//! The action ledger on the `actions` table (see [`crate::commerce::ledger`]): a change is
//! inserted as `pending` under its claim before the store is touched, and settled afterwards.
//! The claim is a unique column that is cleared when a row fails or is refused, so at most one
//! row per change is pending, uncertain or done — across calls, and across instances on one
//! PostgreSQL, because the database refuses the second insert.

use futures::future::BoxFuture;
use serde_json::Value;
use sqlx::Row as _;

use super::{Store, StoreError, now_ms};
use crate::commerce::ledger::{
    ActionLedger, Attempt, Claimed, Held, LedgerError, Unsettled, holds_claim,
};
use crate::vocab::{ActionStatus, AgentName};

/// Tries at taking a claim that is released while we look at it.
const CLAIM_TRIES: usize = 3;

/// The ledger's view of a database failure. A function, not a `From` impl: an impl of the
/// ledger's type here would make the ledger module depend on the store.
fn ledger_error(e: StoreError) -> LedgerError {
    LedgerError(e.to_string())
}

fn json_text(v: &Value) -> Option<String> {
    (!v.is_null()).then(|| v.to_string())
}

fn status_of(row: &sqlx::any::AnyRow) -> Result<ActionStatus, sqlx::Error> {
    let status: String = row.try_get("status")?;
    ActionStatus::from_name(&status)
        .ok_or_else(|| sqlx::Error::Protocol(format!("unknown action status {status}")))
}

impl Store {
    async fn claim_once(&self, a: &Attempt) -> Result<Option<i64>, sqlx::Error> {
        let (mut tx, _turn) = self.begin_write().await?;
        self.count_query();
        let at = now_ms();
        let id: Option<i64> = sqlx::query_scalar(
            "INSERT INTO actions (call_id, action, order_name, idem_key, claim, status, detail,
                 change_before, change_after, confirmed_by, shopify_ids, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, 'pending', $6, $7, $8, $9, $10, $11, $11)
             ON CONFLICT DO NOTHING
             RETURNING id",
        )
        .bind(&a.call_id)
        .bind(a.action.name())
        .bind(&a.order)
        .bind(format!("ledger:{}", uuid::Uuid::now_v7()))
        .bind(&a.claim)
        .bind("Being made on the store now.")
        .bind(json_text(&a.before))
        .bind(json_text(&a.after))
        .bind(&a.confirmed_by)
        .bind(json_text(&a.shopify_ids))
        .bind(at)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(id)
    }

    /// The row holding `claim`.
    async fn claim_holder(&self, claim: &str) -> Result<Option<Held>, StoreError> {
        self.count_query();
        let row = sqlx::query(
            "SELECT id, call_id, status, detail, created_at FROM actions WHERE claim = $1",
        )
        .bind(claim)
        .fetch_optional(self.pool())
        .await?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(Held {
            id: row.try_get("id")?,
            call_id: row.try_get("call_id")?,
            status: status_of(&row)?,
            detail: row.try_get("detail")?,
            created_ms: row.try_get("created_at")?,
        }))
    }

    /// Claims `attempt` (see [`ActionLedger::claim`]).
    async fn claim_action(&self, attempt: &Attempt) -> Result<Claimed, StoreError> {
        for _ in 0..CLAIM_TRIES {
            if let Some(id) = self.claim_once(attempt).await? {
                return Ok(Claimed::Ours(id));
            }
            // Someone holds it, unless it was released between the insert and this look.
            if let Some(held) = self.claim_holder(&attempt.claim).await? {
                return Ok(Claimed::Held(held));
            }
        }
        Err(StoreError::Db(sqlx::Error::Protocol(format!(
            "the claim {} kept changing hands",
            attempt.claim
        ))))
    }

    /// Settles row `id` (see [`ActionLedger::settle`]).
    async fn settle_action(
        &self,
        id: i64,
        status: ActionStatus,
        detail: &str,
        shopify_ids: &Value,
    ) -> Result<bool, StoreError> {
        let (mut tx, _turn) = self.begin_write().await?;
        self.count_query();
        let done = sqlx::query(
            "UPDATE actions SET status = $1, updated_at = $3,
                 claim = CASE WHEN $4 = 1 THEN claim ELSE NULL END,
                 shopify_ids = COALESCE($5, shopify_ids),
                 detail = CASE WHEN erased THEN $7 ELSE $2 END,
                 change_after = CASE WHEN erased THEN NULL ELSE change_after END
             FROM (SELECT EXISTS (SELECT 1 FROM calls c, actions a WHERE a.id = $6
                   AND c.id = a.call_id AND c.erased_at IS NOT NULL) AS erased) e
             WHERE id = $6 AND status IN ('pending', 'uncertain')",
        )
        .bind(status.name())
        .bind(detail)
        .bind(now_ms())
        .bind(i64::from(holds_claim(status)))
        .bind(json_text(shopify_ids))
        .bind(id)
        .bind(super::erase::ERASED_DETAIL)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    /// Rows still pending or uncertain claimed before `before_ms`, oldest first.
    async fn unsettled_actions(
        &self,
        before_ms: i64,
        limit: usize,
    ) -> Result<Vec<Unsettled>, StoreError> {
        self.count_query();
        let rows = sqlx::query(
            "SELECT id, action, order_name, change_after, status, created_at FROM actions
             WHERE status IN ('pending', 'uncertain') AND created_at < $1
             ORDER BY created_at, id LIMIT $2",
        )
        .bind(before_ms)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(self.pool())
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let action: String = row.try_get("action")?;
            let order: Option<String> = row.try_get("order_name")?;
            let after: Option<String> = row.try_get("change_after")?;
            let (Some(action), Some(order)) = (AgentName::from_name(&action), order) else {
                continue;
            };
            out.push(Unsettled {
                id: row.try_get("id")?,
                action,
                order,
                after: after
                    .and_then(|a| serde_json::from_str(&a).ok())
                    .unwrap_or(Value::Null),
                status: status_of(row)?,
                created_ms: row.try_get("created_at")?,
            });
        }
        Ok(out)
    }
}

impl ActionLedger for Store {
    fn claim<'a>(&'a self, attempt: &'a Attempt) -> BoxFuture<'a, Result<Claimed, LedgerError>> {
        Box::pin(async move { self.claim_action(attempt).await.map_err(ledger_error) })
    }

    fn held<'a>(&'a self, claim: &'a str) -> BoxFuture<'a, Result<Option<Held>, LedgerError>> {
        Box::pin(async move { self.claim_holder(claim).await.map_err(ledger_error) })
    }

    fn settle<'a>(
        &'a self,
        id: i64,
        status: ActionStatus,
        detail: &'a str,
        shopify_ids: &'a Value,
    ) -> BoxFuture<'a, Result<bool, LedgerError>> {
        Box::pin(async move {
            self.settle_action(id, status, detail, shopify_ids)
                .await
                .map_err(ledger_error)
        })
    }

    fn unsettled(
        &self,
        before_ms: i64,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<Unsettled>, LedgerError>> {
        Box::pin(async move {
            self.unsettled_actions(before_ms, limit)
                .await
                .map_err(ledger_error)
        })
    }
}
