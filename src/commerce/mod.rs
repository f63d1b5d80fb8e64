//! Commerce: what the bot can do on the store. `agents` (the per-call orchestrator and the
//! actions), `catalog` (the one list of agents and their tool schemas), `confirm` (whether an
//! answer is a clear yes), `ledger` (where every change to an order is claimed and settled) and `shop` (the Shopify GraphQL Admin client).

pub mod agents;
pub(crate) mod catalog;
pub mod confirm;
pub mod ledger;
pub mod shop;
