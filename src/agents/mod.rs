//! Agents: the store actions a caller can ask for, and the per-call orchestrator that runs them.
//!
//! An agent run takes a request (from a Realtime tool call or an accepted intent), finds the
//! order (the number the caller said, or the caller's phone through `customerByIdentifier`),
//! acts on the store, and returns an [`Outcome`]: a status and a sentence for the bot to speak.
//!
//! The [`Orchestrator`] holds what a call has established: slots (order number, phone,
//! pincode, amount heard so far), the destructive action waiting for the caller's yes, and the
//! actions already done. Its rules:
//! - **Confirmation.** Cancel, return and address change happen only after an `affirm` from the
//!   caller that came after the action was proposed. The first request answers
//!   `needs_confirmation`; a later request for the same action runs once the yes has been heard
//!   (a run waits briefly for a yes that is still being transcribed).
//! - **Idempotency.** Every side effect has a key: call + action + order. A key that is done
//!   answers its first outcome again without touching the store, so a retry, a reconnect of the
//!   Realtime socket or a repeated sentence can never cancel twice. Destructive runs of one call
//!   are serialised so two concurrent requests cannot both act.
//! - **Honest failures.** Store errors become plain sentences ("I can't reach the store right
//!   now"); an ambiguous mutation is checked by re-reading the order before anything is said.

mod run;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;

use crate::intent::Intent;
use crate::intent::entities::Entities;
use crate::shopify::Shopify;

/// The agents, one per store action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentName {
    /// Where an order is.
    OrderStatus,
    /// Cancel an order.
    CancelOrder,
    /// Return or replace.
    ReturnRequest,
    /// Where a refund is.
    RefundStatus,
    /// Change the delivery address.
    AddressChange,
    /// Deliver another day.
    RescheduleDelivery,
    /// Hand over to a person.
    TalkToHuman,
}

/// Every agent.
pub const AGENTS: [AgentName; 7] = [
    AgentName::OrderStatus,
    AgentName::CancelOrder,
    AgentName::ReturnRequest,
    AgentName::RefundStatus,
    AgentName::AddressChange,
    AgentName::RescheduleDelivery,
    AgentName::TalkToHuman,
];

impl AgentName {
    /// Its name (also the Realtime tool's name).
    pub fn name(self) -> &'static str {
        match self {
            AgentName::OrderStatus => "order_status",
            AgentName::CancelOrder => "cancel_order",
            AgentName::ReturnRequest => "return_request",
            AgentName::RefundStatus => "refund_status",
            AgentName::AddressChange => "address_change",
            AgentName::RescheduleDelivery => "reschedule_delivery",
            AgentName::TalkToHuman => "talk_to_human",
        }
    }

    /// The agent with this name.
    pub fn from_name(name: &str) -> Option<AgentName> {
        AGENTS.into_iter().find(|a| a.name() == name)
    }

    /// The agent serving an intent.
    pub fn for_intent(intent: Intent) -> Option<AgentName> {
        Some(match intent {
            Intent::OrderStatus => AgentName::OrderStatus,
            Intent::CancelOrder => AgentName::CancelOrder,
            Intent::ReturnRequest => AgentName::ReturnRequest,
            Intent::RefundStatus => AgentName::RefundStatus,
            Intent::AddressChange => AgentName::AddressChange,
            Intent::RescheduleDelivery => AgentName::RescheduleDelivery,
            Intent::TalkToHuman => AgentName::TalkToHuman,
            _ => return None,
        })
    }

    /// Changes the order irreversibly enough to need the caller's yes.
    pub fn destructive(self) -> bool {
        matches!(
            self,
            AgentName::CancelOrder | AgentName::ReturnRequest | AgentName::AddressChange
        )
    }
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Answered or acted.
    Done,
    /// Waiting for the caller's yes; the message says what to ask.
    NeedsConfirmation,
    /// Something is missing (the order number); the message says what to ask.
    NeedsInfo,
    /// Not possible for this order (already shipped, not delivered yet, …).
    Refused,
    /// The caller said no.
    Declined,
    /// The store could not be reached or refused.
    Failed,
    /// No store is configured.
    NotConfigured,
}

impl Status {
    /// Its label.
    pub fn name(self) -> &'static str {
        match self {
            Status::Done => "done",
            Status::NeedsConfirmation => "needs_confirmation",
            Status::NeedsInfo => "needs_info",
            Status::Refused => "refused",
            Status::Declined => "declined",
            Status::Failed => "failed",
            Status::NotConfigured => "not_configured",
        }
    }
}

/// What a run found or did: the tool result the model reads, and the sentence to speak.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Outcome {
    /// How it ended.
    pub status: Status,
    /// What to tell the caller, in English (the model says it in the caller's language).
    pub message: String,
    /// The order concerned (`#1001`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order: Option<String>,
    /// Facts for the model (status, dates, tracking).
    #[serde(skip_serializing_if = "Value::is_null")]
    pub details: Value,
}

impl Outcome {
    fn new(status: Status, message: impl Into<String>) -> Outcome {
        Outcome {
            status,
            message: message.into(),
            order: None,
            details: Value::Null,
        }
    }

    fn on(mut self, order: &str) -> Outcome {
        self.order = Some(order.to_string());
        self
    }

    fn with(mut self, details: Value) -> Outcome {
        self.details = details;
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
    confirmed: bool,
}

/// Most done actions remembered per call (each holds one outcome).
const DONE_CAP: usize = 64;

#[derive(Debug, Default)]
struct CallState {
    slots: Slots,
    proposed: Option<Proposed>,
    done: HashMap<String, Outcome>,
    done_order: VecDeque<String>,
}

/// One call's agents.
pub struct Orchestrator {
    shop: Option<Arc<Shopify>>,
    call: String,
    caller: Option<String>,
    config: AgentConfig,
    state: Mutex<CallState>,
    /// Woken when the caller says yes or no.
    answered: tokio::sync::Notify,
    /// Destructive runs of this call, one at a time.
    acting: tokio::sync::Mutex<()>,
}

impl Orchestrator {
    /// Agents for one call.
    pub fn new(
        shop: Option<Arc<Shopify>>,
        call: &str,
        caller: Option<&str>,
        config: AgentConfig,
    ) -> Arc<Orchestrator> {
        Arc::new(Orchestrator {
            shop,
            call: call.to_string(),
            caller: caller.and_then(e164),
            config,
            state: Mutex::new(CallState::default()),
            answered: tokio::sync::Notify::new(),
            acting: tokio::sync::Mutex::new(()),
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

    /// The caller said yes: the proposed action (if any, and still fresh) is confirmed.
    /// Returns it, so an intent-driven call can run it now.
    pub fn affirmed(&self) -> Option<(AgentName, Args)> {
        let mut s = self.lock();
        let ttl = self.config.confirm_ttl;
        let p = s.proposed.as_mut().filter(|p| p.at.elapsed() <= ttl)?;
        p.confirmed = true;
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
                Status::Failed,
                "The store is taking too long to answer. Please try again in a few minutes.",
            ),
        }
    }

    /// Whether the proposed action with `key` has its yes; waits up to `confirm_wait` for one
    /// still being transcribed. Proposes it when nothing is proposed yet.
    async fn confirmed(&self, key: &str, agent: AgentName, args: &Args) -> bool {
        let deadline = tokio::time::Instant::now() + self.config.confirm_wait;
        loop {
            let notified = self.answered.notified();
            {
                let mut s = self.lock();
                let ttl = self.config.confirm_ttl;
                match s.proposed.as_ref() {
                    Some(p) if p.key == key && p.at.elapsed() <= ttl => {
                        if p.confirmed {
                            return true;
                        }
                    }
                    _ => {
                        s.proposed = Some(Proposed {
                            key: key.to_string(),
                            agent,
                            args: args.clone(),
                            at: Instant::now(),
                            confirmed: false,
                        });
                        return false;
                    }
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return false;
            }
        }
    }

    fn remember(&self, key: &str, outcome: &Outcome) {
        let mut s = self.lock();
        if s.proposed.as_ref().is_some_and(|p| p.key == key) {
            s.proposed = None;
        }
        if s.done.insert(key.to_string(), outcome.clone()).is_none() {
            s.done_order.push_back(key.to_string());
        }
        while s.done_order.len() > DONE_CAP {
            if let Some(old) = s.done_order.pop_front() {
                s.done.remove(&old);
            }
        }
    }

    fn already(&self, key: &str) -> Option<Outcome> {
        self.lock().done.get(key).cloned()
    }
}

/// An Indian phone number in E.164 (`+91` and ten digits), from what a caller or Exotel gives.
pub fn e164(raw: &str) -> Option<String> {
    let digits: String = raw.chars().filter(char::is_ascii_digit).collect();
    let ten = match digits.len() {
        10 => digits.as_str(),
        11 if digits.starts_with('0') => &digits[1..],
        12 if digits.starts_with("91") => &digits[2..],
        _ => return None,
    };
    ten.starts_with(['6', '7', '8', '9'])
        .then(|| format!("+91{ten}"))
}

/// `…3210`: the last four digits, for speaking and logging.
pub fn masked_phone(phone: &str) -> String {
    let digits: String = phone.chars().filter(char::is_ascii_digit).collect();
    let tail = &digits[digits.len().saturating_sub(4)..];
    format!("…{tail}")
}

#[cfg(test)]
mod tests;
