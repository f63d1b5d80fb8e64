//! The one list of agents: what each does, the JSON Schema of its arguments (the Realtime
//! tool the model calls), and whether it changes an order (and so needs the caller's yes).
//! The `agent` stage offers the agents its TOML names from here, and the `realtime` stage
//! declares exactly those to the model; nothing else lists them.

use serde_json::{Value, json};

use crate::engine::stage::ToolSpec;
use crate::vocab::{AGENTS, AgentName};

/// One agent's entry.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Entry {
    /// Which agent.
    pub agent: AgentName,
    /// What it does, for the model (the tool's description).
    pub description: &'static str,
    /// Changes an order irreversibly enough to need the caller's yes first.
    pub destructive: bool,
    /// The JSON Schema of its arguments.
    parameters: fn() -> Value,
}

impl Entry {
    /// The tool the model may call for it.
    pub(crate) fn tool(&self) -> ToolSpec {
        ToolSpec {
            name: self.agent.name(),
            description: self.description,
            parameters: std::sync::Arc::new((self.parameters)()),
        }
    }
}

fn order_only() -> Value {
    json!({
        "type": "object",
        "properties": {
            "order_number": {"type": "string", "description": "The order number the caller gave, digits only, e.g. \"1001\"."}
        },
        "required": []
    })
}

fn return_args() -> Value {
    json!({
        "type": "object",
        "properties": {
            "order_number": {"type": "string"},
            "reason": {"type": "string", "description": "Why: wrong size, damaged, wrong item, did not like it."}
        },
        "required": []
    })
}

fn address_args() -> Value {
    json!({
        "type": "object",
        "properties": {
            "order_number": {"type": "string"},
            "address": {"type": "string", "description": "The new street address (house, street, area) as the caller said it."},
            "landmark": {"type": "string", "description": "A landmark, if the caller gave one."},
            "city": {"type": "string"},
            "pincode": {"type": "string", "description": "Six-digit Indian pincode."}
        },
        "required": []
    })
}

fn reschedule_args() -> Value {
    json!({
        "type": "object",
        "properties": {
            "order_number": {"type": "string"},
            "preferred_date": {"type": "string", "description": "The day the caller wants, as they said it."}
        },
        "required": []
    })
}

fn no_args() -> Value {
    json!({"type": "object", "properties": {}, "required": []})
}

/// Every agent, in [`AGENTS`] order.
static CATALOG: [Entry; 7] = [
    Entry {
        agent: AgentName::OrderStatus,
        description: "Look up where an order is: status, tracking and delivery date. Without an order number, the caller's phone is used.",
        destructive: false,
        parameters: order_only,
    },
    Entry {
        agent: AgentName::CancelOrder,
        description: "Cancel an order. Only after the caller has clearly said yes to cancelling.",
        destructive: true,
        parameters: order_only,
    },
    Entry {
        agent: AgentName::ReturnRequest,
        description: "Start a return or replacement for an order. Only after the caller has said yes.",
        destructive: true,
        parameters: return_args,
    },
    Entry {
        agent: AgentName::RefundStatus,
        description: "Find where the refund for an order stands.",
        destructive: false,
        parameters: order_only,
    },
    Entry {
        agent: AgentName::AddressChange,
        description: "Change the delivery address of an order. Only after the caller has said yes.",
        destructive: true,
        parameters: address_args,
    },
    Entry {
        agent: AgentName::RescheduleDelivery,
        description: "Ask for delivery on another day.",
        destructive: false,
        parameters: reschedule_args,
    },
    Entry {
        agent: AgentName::TalkToHuman,
        description: "Hand the call to a person.",
        destructive: false,
        parameters: no_args,
    },
];

/// The entry of `agent`.
pub(crate) fn entry(agent: AgentName) -> &'static Entry {
    // CATALOG is in AGENTS order (a test checks it), so the index always exists.
    let i = AGENTS.iter().position(|a| *a == agent).unwrap_or(0);
    &CATALOG[i]
}

/// Whether `agent` changes an order and needs the caller's yes.
pub(crate) fn destructive(agent: AgentName) -> bool {
    entry(agent).destructive
}

/// The names of every agent, for error messages.
pub(crate) fn names() -> String {
    AGENTS.map(AgentName::name).join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_catalog_lists_every_agent_once_in_order_with_an_object_schema() {
        assert_eq!(CATALOG.len(), AGENTS.len());
        for (entry, agent) in CATALOG.iter().zip(AGENTS) {
            assert_eq!(entry.agent, agent);
            let tool = entry.tool();
            assert_eq!(tool.name, agent.name());
            assert_eq!(tool.parameters["type"], "object", "{}", tool.name);
            assert!(!tool.description.is_empty());
        }
        let destructive: Vec<&str> = AGENTS
            .into_iter()
            .filter(|a| destructive(*a))
            .map(AgentName::name)
            .collect();
        assert_eq!(
            destructive,
            ["cancel_order", "return_request", "address_change"]
        );
    }
}
