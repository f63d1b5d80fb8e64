//! The store actions the model may call, declared as Realtime function tools. Names are the
//! `agent` stage's agents (issue: intents and agents), so a tool call maps to an agent run.

use serde_json::{Value, json};

use super::protocol::Tool;

/// Every tool the realtime stage knows: (name, description, JSON Schema of its arguments).
pub fn catalog() -> Vec<(&'static str, &'static str, Value)> {
    let order = json!({
        "type": "object",
        "properties": {
            "order_number": {"type": "string", "description": "The order number the caller gave, digits only, e.g. \"1001\"."}
        },
        "required": []
    });
    vec![
        ("order_status", "Look up where an order is: status, tracking and delivery date. Without an order number, the caller's phone is used.", order.clone()),
        ("cancel_order", "Cancel an order. Only after the caller has clearly said yes to cancelling.", order.clone()),
        ("return_request", "Start a return or replacement for an order. Only after the caller has said yes.", json!({
            "type": "object",
            "properties": {
                "order_number": {"type": "string"},
                "reason": {"type": "string", "description": "Why: wrong size, damaged, wrong item, did not like it."}
            },
            "required": []
        })),
        ("refund_status", "Find where the refund for an order stands.", order.clone()),
        ("address_change", "Change the delivery address of an order. Only after the caller has said yes.", json!({
            "type": "object",
            "properties": {
                "order_number": {"type": "string"},
                "address": {"type": "string", "description": "The new street address (house, street, area) as the caller said it."},
                "landmark": {"type": "string", "description": "A landmark, if the caller gave one."},
                "city": {"type": "string"},
                "pincode": {"type": "string", "description": "Six-digit Indian pincode."}
            },
            "required": []
        })),
        ("reschedule_delivery", "Ask for delivery on another day.", json!({
            "type": "object",
            "properties": {
                "order_number": {"type": "string"},
                "preferred_date": {"type": "string", "description": "The day the caller wants, as they said it."}
            },
            "required": []
        })),
        ("talk_to_human", "Hand the call to a person.", json!({"type": "object", "properties": {}, "required": []})),
    ]
}

/// The Realtime tool declarations for `names` (unknown names are left out; the spec's
/// validation reports them).
pub fn declare(names: &[String]) -> Vec<Tool> {
    catalog()
        .into_iter()
        .filter(|(name, _, _)| names.iter().any(|n| n == name))
        .map(|(name, description, parameters)| Tool {
            kind: "function".into(),
            name: name.into(),
            description: description.into(),
            parameters,
        })
        .collect()
}

/// Whether a tool of that name exists.
pub fn known(name: &str) -> bool {
    catalog().iter().any(|(n, _, _)| *n == name)
}
