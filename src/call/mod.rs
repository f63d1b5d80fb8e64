//! The call controller: everything about one call between the provider's transport and the
//! pipeline (DESIGN.md §13). It owns the conversation (when the bot's audio goes out, when it
//! stops, when the call ends) and the call's record; it knows no provider's wire format and no
//! stage kind.
//!
//! - [`controller`]: the select loop over a [`Transport`], steering by the pipeline's signals;
//! - [`transport`]: what a provider must offer ([`Transport`], [`Inbound`]);
//! - [`playout`]: bot audio chunked to the provider's rules, paced, marked (sans-IO);
//! - [`conversation`]: turn-taking, the silent caller, the keypad (sans-IO; `[conversation]`);
//! - [`handoffs`]: calls handed to a person, for the provider's flow to ask about;
//! - [`ledger`]: per-turn latency (sans-IO);
//! - [`live`]: calls in progress for the console, shared across instances on PostgreSQL;
//! - [`record`]: the call's record, off the telemetry bus into the store's recorder;
//! - [`report`]: why a call ended and what happened in it;
//! - [`cost`]: what a call's model use costs, from a per-model price table;
//! - [`graphs`]: the compiled pipeline per sample rate.

pub(crate) mod controller;
pub(crate) mod conversation;
pub mod cost;
pub(crate) mod graphs;
pub(crate) mod handoffs;
pub(crate) mod ledger;
pub mod live;
pub mod playout;
pub(crate) mod record;
pub(crate) mod report;
pub(crate) mod transport;

pub use controller::{CallConfig, run_call};
pub use conversation::ConversationSpec;
pub use graphs::GraphSet;
pub use handoffs::HandOffs;
pub use live::{LiveBoard, LiveCall, LiveEvent};
pub use report::{CallEnd, CallReport};
pub use transport::{Gone, Inbound, StreamStart, Transport};

/// Every stage kind and every section a production pipeline file may use.
pub fn registry() -> crate::engine::registry::Registry {
    let mut registry = crate::stages::registry();
    registry.add_section::<ConversationSpec>();
    registry
}

#[cfg(test)]
mod tests;
