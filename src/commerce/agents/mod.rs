//! Agents: the store actions a caller can ask for, and the per-call orchestrator that runs them.
//!
//! An agent run takes a request (from a Realtime tool call or an accepted intent), finds the
//! order (the number the caller said, or the caller's phone through `customerByIdentifier`),
//! acts on the store, and returns an [`Outcome`]: a status and a sentence for the bot to speak.
//!
//! The [`Orchestrator`] holds what a call has established: slots (order number, phone,
//! pincode, amount heard so far) and the destructive action waiting for the caller's yes.
//! Every change to an order goes through one guarded path (`guard.rs`; each change declares
//! only what is its own in `change.rs`):
//! - **Confirmation.** Cancel, return and address change happen only after a clear yes
//!   ([`crate::commerce::confirm`]) from the caller that came after the action was proposed.
//!   The first request answers `needs_confirmation`; a later request for the same change runs
//!   once the yes has been heard (a run waits briefly for a yes that is still being
//!   transcribed). The words that confirmed it are kept on the action's row.
//! - **Never twice.** The change is claimed in the action ledger
//!   ([`crate::commerce::ledger`]) under action + order + change, before the store is touched:
//!   a retry, a reconnect, the caller phoning back or another instance finds the row and
//!   answers from it. Changes to one order are made one at a time in this process.
//! - **Honest outcomes.** Store errors become plain sentences ("I can't reach the store right
//!   now"); an ambiguous mutation is checked by re-reading the order, and only what the store
//!   has is said to be done.

mod change;
mod guard;
mod run;
mod say;

pub use guard::{RECONCILE_LIMIT, Reconciled, reconcile};
use say::{rupees, store_failed};

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;

use crate::commerce::ledger::Actions;
use crate::commerce::shop::Shopify;
pub use crate::vocab::{AGENTS, ActionStatus, AgentName};
use crate::vocab::{Entities, e164};

/// What a run found or did: the tool result the model reads, and the sentence to speak.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Outcome {
    /// How it ended.
    pub status: ActionStatus,
    /// What to tell the caller, in English (the model says it in the caller's language).
    pub message: String,
    /// The order concerned (`#1001`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order: Option<String>,
    /// Facts for the model (status, dates, tracking).
    #[serde(skip_serializing_if = "Value::is_null")]
    pub details: Value,
    /// The idempotency key of the side effect it concerns, as the run built it (with the
    /// change requested), for the record; never shown to the model.
    #[serde(skip)]
    pub key: Option<String>,
    /// The action-ledger row this outcome settled, when it made (or tried to make) a change:
    /// the row is the record, written before the store was touched.
    #[serde(skip)]
    pub ledger_row: Option<i64>,
}

impl Outcome {
    /// An outcome about no order in particular.
    pub fn new(status: ActionStatus, message: impl Into<String>) -> Outcome {
        Outcome {
            status,
            message: message.into(),
            order: None,
            details: Value::Null,
            key: None,
            ledger_row: None,
        }
    }

    fn on(mut self, order: &str) -> Outcome {
        self.order = Some(order.to_string());
        self
    }

    /// With facts for the model.
    pub fn with(mut self, details: Value) -> Outcome {
        self.details = details;
        self
    }

    fn keyed(mut self, key: &str) -> Outcome {
        self.key = Some(key.to_owned());
        self
    }

    fn in_ledger(mut self, row: i64) -> Outcome {
        self.ledger_row = Some(row);
        self
    }

    /// The JSON the model gets as the tool's output.
    pub fn to_tool_output(&self) -> String {
        serde_json::to_string(self)
            .unwrap_or_else(|_| format!("{{\"message\":{:?}}}", self.message))
    }
}

/// A request to run an agent.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Args {
    /// The order number the caller gave.
    pub order_number: Option<String>,
    /// Why (returns).
    pub reason: Option<String>,
    /// New address line (address change).
    pub address: Option<String>,
    /// City (address change).
    pub city: Option<String>,
    /// Pincode (address change).
    pub pincode: Option<String>,
    /// Landmark (address change).
    pub landmark: Option<String>,
    /// The day asked for (reschedule).
    pub preferred_date: Option<String>,
    /// Caller turns begun when this was asked for (not from the model's arguments): a yes to
    /// what it proposes must come from a later turn, so a transcript of the request itself
    /// that arrives late ("haan ji, cancel kar do") cannot confirm it.
    pub asked_in_turn: Option<u64>,
}

impl Args {
    /// From a tool call's JSON arguments (unknown keys ignored; bad JSON gives empty args).
    pub fn from_json(arguments: &str) -> Args {
        let v: Value = serde_json::from_str(arguments).unwrap_or(Value::Null);
        let s = |k: &str| {
            v.get(k)
                .and_then(|x| match x {
                    Value::String(s) => Some(s.trim().to_string()),
                    Value::Number(n) => Some(n.to_string()),
                    _ => None,
                })
                .filter(|s| !s.is_empty())
        };
        Args {
            order_number: s("order_number")
                .map(|o| o.chars().filter(char::is_ascii_alphanumeric).collect()),
            reason: s("reason"),
            address: s("address"),
            city: s("city"),
            pincode: s("pincode"),
            landmark: s("landmark"),
            preferred_date: s("preferred_date"),
            asked_in_turn: None,
        }
    }
}

/// What the caller has told us so far in this call.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Slots {
    /// Last order number heard.
    pub order_number: Option<String>,
    /// Last phone number heard.
    pub phone: Option<String>,
    /// Last pincode heard.
    pub pincode: Option<String>,
    /// Last amount heard.
    pub amount: Option<String>,
}

impl Slots {
    /// Takes in an utterance's entities.
    pub fn absorb(&mut self, e: &Entities) {
        for (slot, value) in [
            (&mut self.order_number, &e.order_id),
            (&mut self.phone, &e.phone),
            (&mut self.pincode, &e.pincode),
            (&mut self.amount, &e.amount),
        ] {
            if value.is_some() {
                slot.clone_from(value);
            }
        }
    }
}

/// Limits of the orchestrator.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Deadline of one run.
    pub run_timeout: Duration,
    /// How long a run waits for a yes that may still be on its way.
    pub confirm_wait: Duration,
    /// How long a proposed action waits for the caller's yes before it lapses.
    pub confirm_ttl: Duration,
    /// Polls of `orderCancel`'s job before saying it is in progress.
    pub job_polls: u32,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            run_timeout: Duration::from_secs(8),
            confirm_wait: Duration::from_millis(2500),
            confirm_ttl: Duration::from_secs(120),
            job_polls: 5,
        }
    }
}

/// The action waiting for the caller's yes.
#[derive(Debug, Clone)]
struct Proposed {
    key: String,
    agent: AgentName,
    args: Args,
    at: Instant,
    /// The caller's words that confirmed it, once they have.
    confirmed: Option<String>,
}

#[derive(Debug, Default)]
struct CallState {
    slots: Slots,
    proposed: Option<Proposed>,
}

/// One call's agents.
pub struct Orchestrator {
    shop: Option<Arc<Shopify>>,
    /// The provider's id of the call (for notes on the order and logs).
    call: String,
    /// The call's record id (what ledger rows are filed under).
    record_id: String,
    caller: Option<String>,
    config: AgentConfig,
    actions: Arc<Actions>,
    state: Mutex<CallState>,
    /// Woken when the caller says yes or no.
    answered: tokio::sync::Notify,
}

impl Orchestrator {
    /// Agents for one call, with a ledger of their own in memory (tools and tests).
    pub fn new(
        shop: Option<Arc<Shopify>>,
        call: &str,
        caller: Option<&str>,
        config: AgentConfig,
    ) -> Arc<Orchestrator> {
        Orchestrator::recorded(shop, call, call, caller, config, Actions::in_memory())
    }

    /// Agents for one call whose changes go through `actions` (the process's ledger), filed
    /// under the call's record `record_id`.
    pub fn recorded(
        shop: Option<Arc<Shopify>>,
        call: &str,
        record_id: &str,
        caller: Option<&str>,
        config: AgentConfig,
        actions: Arc<Actions>,
    ) -> Arc<Orchestrator> {
        Arc::new(Orchestrator {
            shop,
            call: call.to_string(),
            record_id: record_id.to_string(),
            caller: caller.and_then(e164),
            config,
            actions,
            state: Mutex::new(CallState::default()),
            answered: tokio::sync::Notify::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CallState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// What the call has established.
    pub fn slots(&self) -> Slots {
        self.lock().slots.clone()
    }

    /// Takes in a caller utterance's entities.
    pub fn heard(&self, entities: &Entities) {
        self.lock().slots.absorb(entities);
    }

    /// The destructive action waiting for the caller's yes, if one is and it is still fresh.
    pub fn proposed(&self) -> Option<AgentName> {
        let s = self.lock();
        let ttl = self.config.confirm_ttl;
        s.proposed
            .as_ref()
            .filter(|p| p.confirmed.is_none() && p.at.elapsed() <= ttl)
            .map(|p| p.agent)
    }

    /// The caller said yes (`said`, in caller turn `turn` when known): the proposed action
    /// (if any, still fresh, and proposed before that turn began) is confirmed by those words.
    /// Returns it, so an intent-driven call can run it now.
    pub fn affirmed(&self, said: &str, turn: Option<u64>) -> Option<(AgentName, Args)> {
        let mut s = self.lock();
        let ttl = self.config.confirm_ttl;
        let p = s.proposed.as_mut().filter(|p| p.at.elapsed() <= ttl)?;
        if let (Some(turn), Some(asked)) = (turn, p.args.asked_in_turn)
            && turn <= asked
        {
            // Said before the bot could have asked: the request itself, transcribed late.
            tracing::info!(
                turn,
                asked,
                "A yes from a turn begun before the proposal does not confirm it."
            );
            return None;
        }
        p.confirmed = Some(said.to_owned());
        let out = (p.agent, p.args.clone());
        drop(s);
        self.answered.notify_waiters();
        Some(out)
    }

    /// The caller said no: the proposed action is dropped. Returns it.
    pub fn denied(&self) -> Option<AgentName> {
        let p = self.lock().proposed.take();
        self.answered.notify_waiters();
        p.map(|p| p.agent)
    }

    /// The idempotency key of an action on an order.
    pub fn key(&self, agent: AgentName, order: &str, extra: Option<&str>) -> String {
        match extra {
            Some(x) => format!("{}:{}:{}:{}", self.call, agent.name(), order, x),
            None => format!("{}:{}:{}", self.call, agent.name(), order),
        }
    }

    /// Runs an agent within the run deadline.
    pub async fn run(&self, agent: AgentName, args: Args) -> Outcome {
        match tokio::time::timeout(self.config.run_timeout, self.run_inner(agent, args)).await {
            Ok(o) => o,
            Err(_) => Outcome::new(
                ActionStatus::Failed,
                "The store is taking too long to answer. Please try again in a few minutes.",
            )
            .with(serde_json::json!({ "error": "timeout" })),
        }
    }

    /// The words that confirmed the proposed action with `key`, once it has its yes; waits up
    /// to `confirm_wait` for one still being transcribed. Proposes it when nothing is proposed
    /// yet.
    async fn confirmed(&self, key: &str, agent: AgentName, args: &Args) -> Option<String> {
        let deadline = tokio::time::Instant::now() + self.config.confirm_wait;
        loop {
            let notified = self.answered.notified();
            {
                let mut s = self.lock();
                let ttl = self.config.confirm_ttl;
                match s.proposed.as_ref() {
                    Some(p) if p.key == key && p.at.elapsed() <= ttl => {
                        if let Some(words) = &p.confirmed {
                            return Some(words.clone());
                        }
                    }
                    _ => {
                        s.proposed = Some(Proposed {
                            key: key.to_string(),
                            agent,
                            args: args.clone(),
                            at: Instant::now(),
                            confirmed: None,
                        });
                        return None;
                    }
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return None;
            }
        }
    }

    /// The action with `key` is settled: it no longer waits for a yes.
    fn settled(&self, key: &str) {
        let mut s = self.lock();
        if s.proposed.as_ref().is_some_and(|p| p.key == key) {
            s.proposed = None;
        }
    }
}

#[cfg(test)]
mod tests;
