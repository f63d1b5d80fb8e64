//! What the caller is told about the store itself: its failures in plain words, and an order's
//! amount as it is spoken. Shared by the agents that read (`run.rs`) and the changes
//! (`change.rs`), so neither depends on the other.

use serde_json::json;

use super::{ActionStatus, Outcome};
use crate::commerce::shop::{Order, ShopifyError};

/// A store error as the caller hears it, with its code for the model and the record.
pub(super) fn store_failed(e: &ShopifyError) -> Outcome {
    let message = match e {
        ShopifyError::NotConfigured => {
            "The store's order system is not connected, so I can't look at orders on this call."
        }
        ShopifyError::Unauthorized => {
            "The store's system refused our access right now. A person from the team will call you back."
        }
        ShopifyError::Rejected(_) => "The store did not accept that change.",
        _ => "I can't reach the store's system right now. Please try again in a few minutes.",
    };
    let status = if *e == ShopifyError::NotConfigured {
        ActionStatus::NotConfigured
    } else {
        ActionStatus::Failed
    };
    Outcome::new(status, message).with(json!({ "error": e.code(), "detail": e.to_string() }))
}

/// The order's total (or what was refunded) as spoken: "₹1299".
pub(super) fn rupees(order: &Order, refunded: bool) -> Option<String> {
    let m = if refunded {
        order.refunded.as_ref()
    } else {
        order.total.as_ref()
    }?;
    let amount: f64 = m.amount.parse().ok()?;
    let symbol = if m.currency_code == "INR" { "₹" } else { "" };
    Some(format!("{symbol}{}", amount.round() as u64))
}
