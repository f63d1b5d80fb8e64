//! The one guarded path every change to an order takes (`change.rs` says what each change is):
//!
//! 1. this process's turn on the order (two calls about one order act one after the other);
//! 2. the ledger: a row that already holds this change answers — done is said again, never
//!    redone; a pending one still under way is left to finish; an abandoned or uncertain one
//!    is settled by looking at the order (the order was read in this run);
//! 3. the precondition, then the caller's yes for a destructive change;
//! 4. the claim: a `pending` row under a key that names no call, refused by the database if
//!    anyone else (another call, another instance) claimed the same change meanwhile;
//! 5. the Shopify call; an answer that cannot be believed (ambiguous failure, or an address the
//!    store answered OK for) is checked by reading the order: only what the store has is done;
//! 6. the row is settled with what happened, and that is what the caller hears.
//!
//! A process that dies between 4 and 6 leaves `pending`: the next attempt on the order, or
//! [`reconcile`] at start-up, looks at the order and settles the row.

use serde_json::{Value, json};

use super::change::{Applied, Change};
use super::{ActionStatus, Args, Orchestrator, Outcome, store_failed};
use crate::commerce::ledger::{Actions, Attempt, Claimed, Held, LedgerError, now_ms};
use crate::commerce::shop::{Order, Shopify, ShopifyError};

/// Rows reconciled at start-up at most (the rest wait for their next attempt).
pub const RECONCILE_LIMIT: usize = 500;

fn ledger_down(e: &LedgerError) -> Outcome {
    tracing::error!(error = %e, "The action ledger is unavailable; no change is made.");
    Outcome::new(
        ActionStatus::Failed,
        "I can't make changes to orders right now because our records are unavailable. Please try again in a few minutes.",
    )
    .with(json!({ "error": "ledger_unavailable" }))
}

fn uncertain(order: &Order) -> Outcome {
    Outcome::new(
        ActionStatus::Uncertain,
        format!(
            "I could not confirm with the store whether the change to order {} went through. It will not be repeated; a person from the team will check and call back.",
            order.name
        ),
    )
    .with(json!({ "error": "uncertain" }))
}

/// `base`'s keys with `more`'s added.
fn merged(mut base: Value, more: &Value) -> Value {
    if let (Some(b), Some(m)) = (base.as_object_mut(), more.as_object()) {
        for (k, v) in m {
            b.insert(k.clone(), v.clone());
        }
    }
    base
}

impl Orchestrator {
    /// Makes `change` to `order` the guarded way (module docs).
    pub(super) async fn guarded(
        &self,
        shop: &Shopify,
        order: Order,
        change: Change,
        args: &Args,
    ) -> Outcome {
        let claim = change.claim(&order.name);
        // This call's name for it: its record of a question or an answer it gave.
        let key = format!("{}:{claim}", self.call);
        let outcome = self
            .guarded_steps(shop, &order, &change, &claim, &key, args)
            .await
            .unwrap_or_else(|e| ledger_down(&e));
        outcome.on(&order.name).keyed(&key)
    }

    /// The steps; an `Err` is the ledger failing before anything was changed.
    async fn guarded_steps(
        &self,
        shop: &Shopify,
        order: &Order,
        change: &Change,
        claim: &str,
        key: &str,
        args: &Args,
    ) -> Result<Outcome, LedgerError> {
        let _turn = self.actions.order_turn(&order.name).await;
        if let Some(held) = self.actions.ledger().held(claim).await?
            && let Some(answer) = self.answer_held(order, change, key, held).await?
        {
            return Ok(answer);
        }
        if let Some(answer) = change.precondition(order) {
            return Ok(answer);
        }
        let agent = change.agent();
        let confirmed_by = if crate::commerce::catalog::destructive(agent) {
            let Some(words) = self.confirmed(key, agent, args).await else {
                let ask = change.question(order);
                return Ok(Outcome::new(ActionStatus::NeedsConfirmation, ask));
            };
            Some(words)
        } else {
            None
        };
        let order_ids = json!({ "order": order.id });
        let attempt = Attempt {
            claim: claim.to_owned(),
            call_id: self.record_id.clone(),
            action: agent,
            order: order.name.clone(),
            before: change.before(order),
            after: change.after(),
            confirmed_by,
            shopify_ids: order_ids.clone(),
        };
        let id = match self.actions.ledger().claim(&attempt).await? {
            Claimed::Ours(id) => id,
            // Claimed by someone else since we looked (another call, another instance).
            Claimed::Held(held) => {
                let answer = self.answer_held(order, change, key, held).await?;
                return Ok(answer.unwrap_or_else(|| {
                    Outcome::new(
                        ActionStatus::Failed,
                        "Another request for this order was being handled at the same moment. Please ask again.",
                    )
                }));
            }
        };
        let note = format!("Changed by the voice agent on call {}", self.call);
        let (outcome, ids) = self.act(shop, order, change, &note).await;
        let ids = merged(order_ids, &ids);
        match self
            .actions
            .ledger()
            .settle(id, outcome.status, &outcome.message, &ids)
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(row = id, "The action row had been settled by someone else.")
            }
            Err(e) => tracing::error!(
                row = id,
                error = %e,
                "The change's row could not be settled; it stays pending and is reconciled from the order."
            ),
        }
        self.settled(key);
        Ok(outcome.in_ledger(id))
    }

    /// The answer for a change a row already holds (this call's `key` no longer waits for a
    /// yes once it is done), or `None` when the row turned out to be a change that never
    /// happened (it is settled as failed and the change may be made now).
    async fn answer_held(
        &self,
        order: &Order,
        change: &Change,
        key: &str,
        held: Held,
    ) -> Result<Option<Outcome>, LedgerError> {
        let already = json!({ "already_done": true });
        if held.status == ActionStatus::Done {
            self.settled(key);
            return Ok(Some(
                Outcome::new(ActionStatus::Done, held.detail).with(already),
            ));
        }
        // Pending or uncertain: the order, as read in this run, tells.
        if change.happened(order) {
            let message = change.done_message(order);
            self.actions
                .ledger()
                .settle(held.id, ActionStatus::Done, &message, &Value::Null)
                .await?;
            self.settled(key);
            return Ok(Some(
                Outcome::new(ActionStatus::Done, message).with(already),
            ));
        }
        let age = now_ms().saturating_sub(held.created_ms);
        let stale = i64::try_from(self.actions.stale().as_millis()).unwrap_or(i64::MAX);
        if held.status == ActionStatus::Pending && age < stale {
            return Ok(Some(Outcome::new(
                ActionStatus::Pending,
                format!(
                    "A change to order {} is being made right now by another request. It will not be made twice; the caller can ask about it again in a minute.",
                    order.name
                ),
            )));
        }
        self.actions
            .ledger()
            .settle(
                held.id,
                ActionStatus::Failed,
                "Not made: the order was checked and does not have the change.",
                &Value::Null,
            )
            .await?;
        Ok(None)
    }

    /// The Shopify call, and what it did: the outcome and the Shopify ids it gave.
    async fn act(
        &self,
        shop: &Shopify,
        order: &Order,
        change: &Change,
        note: &str,
    ) -> (Outcome, Value) {
        match change.apply(shop, order, note, self.config.job_polls).await {
            Ok(applied) if !change.read_back() => {
                let outcome =
                    Outcome::new(ActionStatus::Done, applied.message).with(applied.ids.clone());
                (outcome, applied.ids)
            }
            Ok(applied) => self.look(shop, order, change, Some(applied)).await,
            // It may have been made: look before saying anything.
            Err(ShopifyError::Uncertain(_)) => self.look(shop, order, change, None).await,
            Err(ShopifyError::Rejected(why)) => (
                Outcome::new(ActionStatus::Refused, change.rejected_message(order, &why)),
                Value::Null,
            ),
            Err(e) => (store_failed(&e), Value::Null),
        }
    }

    /// Reads the order back after an answer that cannot be believed.
    async fn look(
        &self,
        shop: &Shopify,
        order: &Order,
        change: &Change,
        applied: Option<Applied>,
    ) -> (Outcome, Value) {
        let (message, ids) = match applied {
            Some(a) => (a.message, a.ids),
            None => (change.done_message(order), Value::Null),
        };
        match shop.order_by_number(&order.name).await {
            Ok(Some(now)) if change.happened(&now) => {
                (Outcome::new(ActionStatus::Done, message).with(ids.clone()), ids)
            }
            Ok(Some(_)) => (
                Outcome::new(
                    ActionStatus::Failed,
                    format!(
                        "The store did not make the change to order {}. Nothing was changed; the caller may try again, or a person from the team can help.",
                        order.name
                    ),
                )
                .with(json!({ "error": "not_applied" })),
                Value::Null,
            ),
            Ok(None) | Err(_) => (uncertain(order), Value::Null),
        }
    }
}

/// What [`reconcile`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reconciled {
    /// Rows whose change was found on the order.
    pub done: usize,
    /// Rows whose change was not on the order.
    pub failed: usize,
    /// Rows left as they were (the store could not be asked).
    pub left: usize,
}

/// Settles rows left pending or uncertain by runs that died (claimed longer ago than the
/// ledger's stale age), by looking at each order: what is on the order is done, what is not
/// is failed (and its claim released).
pub async fn reconcile(actions: &Actions, shop: &Shopify) -> Result<Reconciled, LedgerError> {
    let stale = i64::try_from(actions.stale().as_millis()).unwrap_or(i64::MAX);
    let rows = actions
        .ledger()
        .unsettled(now_ms().saturating_sub(stale), RECONCILE_LIMIT)
        .await?;
    let mut out = Reconciled::default();
    for row in rows {
        let Some(change) = Change::from_record(row.action, &row.after) else {
            out.left += 1;
            continue;
        };
        let (status, detail) = match shop.order_by_number(&row.order).await {
            Ok(Some(order)) if change.happened(&order) => {
                (ActionStatus::Done, change.done_message(&order))
            }
            Ok(_) => (
                ActionStatus::Failed,
                "Not made: the order was checked after a restart and does not have the change."
                    .to_owned(),
            ),
            Err(_) => {
                out.left += 1;
                continue;
            }
        };
        if actions
            .ledger()
            .settle(row.id, status, &detail, &Value::Null)
            .await?
        {
            if status == ActionStatus::Done {
                out.done += 1;
            } else {
                out.failed += 1;
            }
        }
    }
    Ok(out)
}
