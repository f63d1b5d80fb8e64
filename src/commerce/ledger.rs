//! The action ledger: the durable record every change to an order goes through before it is
//! made, so it can never be made twice — not by a retry in the same call, not by the caller
//! phoning back, not by another instance on the same database.
//!
//! A change is *claimed* under a key that names the action, the order and the change requested
//! (never the call): the row starts `pending` and is settled to `done`, `refused`, `failed` or
//! `uncertain`. While a row is `pending`, `uncertain` or `done` it holds its claim, so a second
//! attempt finds it and answers from it; `failed` and `refused` release the claim (nothing
//! happened, a later attempt may act). The call records database implements this trait (the
//! `actions` table); [`MemoryLedger`] serves tools and tests that run without one.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::Value;

use crate::vocab::{ActionStatus, AgentName};

/// A change about to be made, as the ledger records it before the store is touched.
#[derive(Debug, Clone, PartialEq)]
pub struct Attempt {
    /// What makes two attempts the same change: action + order + the change requested.
    pub claim: String,
    /// The call making it.
    pub call_id: String,
    /// The agent.
    pub action: AgentName,
    /// The order's name (`#1001`).
    pub order: String,
    /// What the order had before (for the audit), JSON.
    pub before: Value,
    /// The change requested, JSON; with `action` it is enough to tell later whether the change
    /// is on the order (reconciliation).
    pub after: Value,
    /// The caller's words that confirmed it, when it needed a yes.
    pub confirmed_by: Option<String>,
    /// Shopify ids known before acting (the order's).
    pub shopify_ids: Value,
}

/// A row that holds a claim.
#[derive(Debug, Clone, PartialEq)]
pub struct Held {
    /// Its id.
    pub id: i64,
    /// The call that made it.
    pub call_id: String,
    /// `pending`, `uncertain` or `done`.
    pub status: ActionStatus,
    /// What was said about it.
    pub detail: String,
    /// When it was claimed, epoch ms.
    pub created_ms: i64,
}

/// What a claim gave.
#[derive(Debug, Clone, PartialEq)]
pub enum Claimed {
    /// The row is ours (its id): act, then settle it.
    Ours(i64),
    /// Someone holds this change already.
    Held(Held),
}

/// A row not settled yet (pending or uncertain), for reconciliation.
#[derive(Debug, Clone, PartialEq)]
pub struct Unsettled {
    /// Its id.
    pub id: i64,
    /// The agent.
    pub action: AgentName,
    /// The order's name.
    pub order: String,
    /// The change requested, as claimed.
    pub after: Value,
    /// `pending` or `uncertain`.
    pub status: ActionStatus,
    /// When it was claimed, epoch ms.
    pub created_ms: i64,
}

/// The ledger could not be read or written: nothing may be changed on the store then.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("the action ledger is unavailable: {0}")]
pub struct LedgerError(pub String);

/// Where changes to orders are claimed and settled.
pub trait ActionLedger: Send + Sync {
    /// Records `attempt` as `pending` unless another row holds its claim (that row is given
    /// back instead).
    fn claim<'a>(&'a self, attempt: &'a Attempt) -> BoxFuture<'a, Result<Claimed, LedgerError>>;

    /// The row that holds `claim`, if one does.
    fn held<'a>(&'a self, claim: &'a str) -> BoxFuture<'a, Result<Option<Held>, LedgerError>>;

    /// Moves row `id` from `pending` or `uncertain` to `status` with `detail` (and Shopify ids
    /// learnt while acting, merged into the row's); `failed` and `refused` release the claim.
    /// False when the row had been settled already (someone else reconciled it).
    fn settle<'a>(
        &'a self,
        id: i64,
        status: ActionStatus,
        detail: &'a str,
        shopify_ids: &'a Value,
    ) -> BoxFuture<'a, Result<bool, LedgerError>>;

    /// Rows still `pending` or `uncertain` that were claimed before `before_ms`, oldest first.
    fn unsettled(
        &self,
        before_ms: i64,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<Unsettled>, LedgerError>>;
}

/// How long a pending row may be an attempt still under way (the longest a run may take, with
/// room); older, the run that claimed it has died, and the row is reconciled.
pub const STALE_AFTER: Duration = Duration::from_secs(90);

/// What every guarded change goes through: the ledger, and this process's one-at-a-time turn
/// per order (two calls about one order do not act on it at once). One per process.
pub struct Actions {
    ledger: Arc<dyn ActionLedger>,
    turns: Mutex<HashMap<String, Weak<tokio::sync::Mutex<()>>>>,
    stale: Duration,
}

/// Orders with a turn remembered before the dead ones are swept out.
const TURNS_SWEEP: usize = 256;

impl Actions {
    /// Over `ledger` (the call-records database in a server).
    pub fn new(ledger: Arc<dyn ActionLedger>) -> Arc<Actions> {
        Actions::with_stale(ledger, STALE_AFTER)
    }

    /// As [`Actions::new`], with pending rows counted as abandoned after `stale` (tests).
    pub fn with_stale(ledger: Arc<dyn ActionLedger>, stale: Duration) -> Arc<Actions> {
        Arc::new(Actions {
            ledger,
            turns: Mutex::new(HashMap::new()),
            stale,
        })
    }

    /// Over a [`MemoryLedger`] of its own (runs without a database).
    pub fn in_memory() -> Arc<Actions> {
        Actions::new(Arc::new(MemoryLedger::default()))
    }

    /// The ledger.
    pub fn ledger(&self) -> &dyn ActionLedger {
        self.ledger.as_ref()
    }

    /// After how long a pending row is abandoned.
    pub fn stale(&self) -> Duration {
        self.stale
    }

    /// Waits for this process's turn on `order`; the turn lasts as long as the guard.
    pub async fn order_turn(&self, order: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let mut turns = self
                .turns
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if turns.len() >= TURNS_SWEEP {
                turns.retain(|_, t| t.strong_count() > 0);
            }
            match turns.get(order).and_then(Weak::upgrade) {
                Some(lock) => lock,
                None => {
                    let lock = Arc::new(tokio::sync::Mutex::new(()));
                    turns.insert(order.to_owned(), Arc::downgrade(&lock));
                    lock
                }
            }
        };
        lock.lock_owned().await
    }
}

/// Milliseconds since the Unix epoch, now.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Whether a row in `status` keeps its claim.
pub fn holds_claim(status: ActionStatus) -> bool {
    matches!(
        status,
        ActionStatus::Pending | ActionStatus::Uncertain | ActionStatus::Done
    )
}

/// Most rows a [`MemoryLedger`] keeps; the oldest settled ones go first.
const MEMORY_ROWS: usize = 4096;

#[derive(Debug, Clone)]
struct MemoryRow {
    attempt: Attempt,
    status: ActionStatus,
    detail: String,
    created_ms: i64,
}

#[derive(Debug, Default)]
struct MemoryState {
    rows: HashMap<i64, MemoryRow>,
    order: VecDeque<i64>,
    claims: HashMap<String, i64>,
    next: i64,
}

/// A ledger in this process's memory, bounded: for `caly replay`, unit tests and any run
/// without a database. A server always uses its database.
#[derive(Debug, Default)]
pub struct MemoryLedger {
    state: Mutex<MemoryState>,
}

impl MemoryLedger {
    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn held_of(id: i64, row: &MemoryRow) -> Held {
    Held {
        id,
        call_id: row.attempt.call_id.clone(),
        status: row.status,
        detail: row.detail.clone(),
        created_ms: row.created_ms,
    }
}

impl ActionLedger for MemoryLedger {
    fn claim<'a>(&'a self, attempt: &'a Attempt) -> BoxFuture<'a, Result<Claimed, LedgerError>> {
        Box::pin(async move {
            let mut s = self.lock();
            if let Some(id) = s.claims.get(&attempt.claim).copied()
                && let Some(row) = s.rows.get(&id)
            {
                return Ok(Claimed::Held(held_of(id, row)));
            }
            s.next += 1;
            let id = s.next;
            s.claims.insert(attempt.claim.clone(), id);
            s.rows.insert(
                id,
                MemoryRow {
                    attempt: attempt.clone(),
                    status: ActionStatus::Pending,
                    detail: String::new(),
                    created_ms: now_ms(),
                },
            );
            s.order.push_back(id);
            while s.order.len() > MEMORY_ROWS {
                // The oldest row that is settled goes; unsettled ones are never forgotten.
                let Some(pos) = s.order.iter().position(|id| {
                    s.rows.get(id).is_none_or(|r| {
                        !matches!(r.status, ActionStatus::Pending | ActionStatus::Uncertain)
                    })
                }) else {
                    break;
                };
                if let Some(old) = s.order.remove(pos)
                    && let Some(row) = s.rows.remove(&old)
                    && s.claims.get(&row.attempt.claim) == Some(&old)
                {
                    s.claims.remove(&row.attempt.claim);
                }
            }
            Ok(Claimed::Ours(id))
        })
    }

    fn held<'a>(&'a self, claim: &'a str) -> BoxFuture<'a, Result<Option<Held>, LedgerError>> {
        Box::pin(async move {
            let s = self.lock();
            Ok(s.claims
                .get(claim)
                .and_then(|id| s.rows.get(id).map(|row| held_of(*id, row))))
        })
    }

    fn settle<'a>(
        &'a self,
        id: i64,
        status: ActionStatus,
        detail: &'a str,
        _shopify_ids: &'a Value,
    ) -> BoxFuture<'a, Result<bool, LedgerError>> {
        Box::pin(async move {
            let mut s = self.lock();
            let Some(row) = s.rows.get_mut(&id) else {
                return Ok(false);
            };
            if !matches!(row.status, ActionStatus::Pending | ActionStatus::Uncertain) {
                return Ok(false);
            }
            row.status = status;
            row.detail = detail.to_owned();
            let claim = row.attempt.claim.clone();
            if !holds_claim(status) && s.claims.get(&claim) == Some(&id) {
                s.claims.remove(&claim);
            }
            Ok(true)
        })
    }

    fn unsettled(
        &self,
        before_ms: i64,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<Unsettled>, LedgerError>> {
        Box::pin(async move {
            let s = self.lock();
            Ok(s.order
                .iter()
                .filter_map(|id| s.rows.get(id).map(|r| (*id, r)))
                .filter(|(_, r)| {
                    matches!(r.status, ActionStatus::Pending | ActionStatus::Uncertain)
                        && r.created_ms < before_ms
                })
                .take(limit)
                .map(|(id, r)| Unsettled {
                    id,
                    action: r.attempt.action,
                    order: r.attempt.order.clone(),
                    after: r.attempt.after.clone(),
                    status: r.status,
                    created_ms: r.created_ms,
                })
                .collect())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(claim: &str) -> Attempt {
        Attempt {
            claim: claim.into(),
            call_id: "CA1".into(),
            action: AgentName::CancelOrder,
            order: "#1001".into(),
            before: Value::Null,
            after: Value::Null,
            confirmed_by: None,
            shopify_ids: Value::Null,
        }
    }

    #[tokio::test]
    async fn a_claim_is_held_until_it_fails_and_done_holds_it_for_good() {
        let ledger = MemoryLedger::default();
        let Ok(Claimed::Ours(id)) = ledger.claim(&attempt("cancel_order:#1001")).await else {
            panic!("the first claim is ours")
        };
        let Ok(Claimed::Held(h)) = ledger.claim(&attempt("cancel_order:#1001")).await else {
            panic!("a second claim finds the first")
        };
        assert_eq!((h.id, h.status), (id, ActionStatus::Pending));
        assert_eq!(ledger.unsettled(i64::MAX, 10).await.unwrap().len(), 1);
        // A failure releases it: the next attempt may act.
        assert!(
            ledger
                .settle(id, ActionStatus::Failed, "down", &Value::Null)
                .await
                .unwrap()
        );
        assert!(
            !ledger
                .settle(id, ActionStatus::Done, "late", &Value::Null)
                .await
                .unwrap(),
            "settled once"
        );
        let Ok(Claimed::Ours(again)) = ledger.claim(&attempt("cancel_order:#1001")).await else {
            panic!("released")
        };
        assert!(
            ledger
                .settle(again, ActionStatus::Done, "cancelled", &Value::Null)
                .await
                .unwrap()
        );
        let held = ledger.held("cancel_order:#1001").await.unwrap().unwrap();
        assert_eq!(
            (held.status, held.detail.as_str()),
            (ActionStatus::Done, "cancelled")
        );
        assert!(ledger.unsettled(i64::MAX, 10).await.unwrap().is_empty());
    }
}
