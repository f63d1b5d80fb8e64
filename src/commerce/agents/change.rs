//! The four changes an agent can make to an order, each declaring only what is its own: the
//! precondition, the question that asks for the caller's yes, the Shopify call, and how to tell
//! from the order afterwards whether the change is on it. Everything else — the key, the
//! ledger, per-order serialisation, the confirmation, the look after an ambiguous failure, the
//! record and the spoken outcome — is the one guarded path in `guard.rs`.

use serde_json::{Value, json};

use super::{ActionStatus, AgentName, Outcome, rupees};
use crate::commerce::shop::{MailingAddress, Order, Shopify, ShopifyError};
use crate::vocab::sha256_hex;

/// A change requested for an order.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Change {
    /// Cancel it (refund to the original payment method, restock).
    Cancel,
    /// Ask for a return of everything delivered.
    Return {
        /// Shopify's `ReturnReason`.
        reason: String,
        /// The caller's words.
        note: String,
    },
    /// Deliver to another address.
    Address(Box<MailingAddress>),
    /// Ask for delivery on another day (a line on the order's note: Shopify has no slots).
    Reschedule {
        /// The day asked for.
        date: String,
        /// The line written on the note.
        line: String,
    },
}

/// What a Shopify call gave when it succeeded.
pub(super) struct Applied {
    /// What to tell the caller.
    pub message: String,
    /// Ids Shopify gave (job, return), for the audit and the model.
    pub ids: Value,
}

/// Lower case, single spaces: two ways of writing one change are one claim.
fn norm(s: Option<&str>) -> String {
    s.unwrap_or_default()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

fn address_json(a: &MailingAddress) -> Value {
    json!({
        "address1": a.address1, "address2": a.address2, "city": a.city, "zip": a.zip,
    })
}

fn said(a: &MailingAddress) -> String {
    format!(
        "{}, {} {}",
        a.address1.as_deref().unwrap_or_default(),
        a.city.as_deref().unwrap_or_default(),
        a.zip.as_deref().unwrap_or_default()
    )
}

impl Change {
    /// The agent that makes it.
    pub(super) fn agent(&self) -> AgentName {
        match self {
            Change::Cancel => AgentName::CancelOrder,
            Change::Return { .. } => AgentName::ReturnRequest,
            Change::Address(_) => AgentName::AddressChange,
            Change::Reschedule { .. } => AgentName::RescheduleDelivery,
        }
    }

    /// What makes two requests the same change: the action, the order and the change asked
    /// for; never the call, so the caller phoning back finds what the first call did.
    pub(super) fn claim(&self, order: &str) -> String {
        let what = match self {
            // One cancellation and one open return per order, whatever was said.
            Change::Cancel | Change::Return { .. } => String::new(),
            // The address as a digest: the claim outlives an erasure of the call, so it must
            // not hold the caller's address.
            Change::Address(a) => {
                let text = format!(
                    "{}|{}|{}",
                    norm(a.address1.as_deref()),
                    norm(a.address2.as_deref()),
                    norm(a.zip.as_deref())
                );
                format!(":{}", sha256_hex(&text, 12))
            }
            Change::Reschedule { date, .. } => format!(":{}", norm(Some(date))),
        };
        format!("{}:{order}{what}", self.agent().name())
    }

    /// The change requested, for the ledger (and to rebuild it when reconciling).
    pub(super) fn after(&self) -> Value {
        match self {
            Change::Cancel => json!({ "cancelled": true }),
            Change::Return { reason, note } => json!({ "return": reason, "note": note }),
            Change::Address(a) => json!({ "shipping_address": address_json(a) }),
            Change::Reschedule { date, line } => json!({ "delivery_on": date, "note_line": line }),
        }
    }

    /// What the order had before, for the audit.
    pub(super) fn before(&self, order: &Order) -> Value {
        match self {
            Change::Cancel => json!({ "cancelled": order.cancelled_at.is_some(),
                "fulfillment_status": order.fulfillment_status }),
            Change::Return { .. } => json!({ "return_status": order.return_status }),
            Change::Address(_) => json!({
                "shipping_address": order.shipping_address.as_ref().map(address_json)
            }),
            Change::Reschedule { .. } => json!({ "note": order.note }),
        }
    }

    /// The change a ledger row records (`action` and its `after`), to reconcile it.
    pub(super) fn from_record(action: AgentName, after: &Value) -> Option<Change> {
        let text = |k: &str| after.get(k).and_then(Value::as_str).map(str::to_owned);
        match action {
            AgentName::CancelOrder => Some(Change::Cancel),
            AgentName::ReturnRequest => Some(Change::Return {
                reason: text("return")?,
                note: text("note").unwrap_or_default(),
            }),
            AgentName::AddressChange => {
                let a = after.get("shipping_address")?;
                let field = |k: &str| a.get(k).and_then(Value::as_str).map(str::to_owned);
                Some(Change::Address(Box::new(MailingAddress {
                    address1: field("address1"),
                    address2: field("address2"),
                    city: field("city"),
                    zip: field("zip"),
                    ..MailingAddress::default()
                })))
            }
            AgentName::RescheduleDelivery => Some(Change::Reschedule {
                date: text("delivery_on")?,
                line: text("note_line")?,
            }),
            _ => None,
        }
    }

    /// Whether the order, as the store has it now, carries the change.
    pub(super) fn happened(&self, order: &Order) -> bool {
        match self {
            Change::Cancel => order.cancelled_at.is_some(),
            Change::Return { .. } => order.has_return(),
            Change::Address(new) => order.shipping_address.as_ref().is_some_and(|now| {
                norm(now.zip.as_deref()) == norm(new.zip.as_deref())
                    && norm(now.address1.as_deref()) == norm(new.address1.as_deref())
            }),
            Change::Reschedule { line, .. } => order
                .note
                .as_deref()
                .is_some_and(|n| n.contains(line.as_str())),
        }
    }

    /// The answer when the order rules the change out, or already has it.
    pub(super) fn precondition(&self, order: &Order) -> Option<Outcome> {
        let name = &order.name;
        let (status, message) = match self {
            Change::Cancel if order.cancelled_at.is_some() => (
                ActionStatus::Done,
                format!("Order {name} is already cancelled."),
            ),
            Change::Cancel if !order.unshipped() => (
                ActionStatus::Refused,
                format!(
                    "Order {name} has already shipped, so it cannot be cancelled. A return can be started once it is delivered."
                ),
            ),
            Change::Return { .. } if order.has_return() => (
                ActionStatus::Done,
                format!(
                    "Order {name} already has a return requested; the store will arrange the pickup. There is no need to ask again."
                ),
            ),
            Change::Return { .. } if !order.delivered() => (
                ActionStatus::Refused,
                format!(
                    "Order {name} has not been delivered yet, so a return cannot be started. It can be cancelled if it has not shipped."
                ),
            ),
            Change::Address(_) if !order.unshipped() => (
                ActionStatus::Refused,
                format!("Order {name} has already shipped, so its address cannot be changed now."),
            ),
            Change::Reschedule { .. } if order.delivered() || order.cancelled_at.is_some() => (
                ActionStatus::Refused,
                format!("Order {name} is no longer on its way, so there is no delivery to move."),
            ),
            _ => return None,
        };
        Some(Outcome::new(status, message))
    }

    /// What the bot asks before a change that needs a yes.
    pub(super) fn question(&self, order: &Order) -> String {
        let name = &order.name;
        match self {
            Change::Cancel => format!(
                "Ask the caller to confirm: cancel order {name} ({})? Cancel only after a clear yes.",
                rupees(order, false).unwrap_or_default()
            ),
            Change::Return { .. } => format!(
                "Ask the caller to confirm: start a return for order {name}? Only after a clear yes."
            ),
            Change::Address(a) => format!(
                "Ask the caller to confirm the new address for order {name}: {}. Change it only after a clear yes.",
                said(a)
            ),
            Change::Reschedule { date, .. } => {
                format!("Ask the caller to confirm delivery of order {name} on {date}.")
            }
        }
    }

    /// What the caller hears once the store has the change.
    pub(super) fn done_message(&self, order: &Order) -> String {
        let name = &order.name;
        match self {
            Change::Cancel => format!("Order {name} is cancelled."),
            Change::Return { .. } => format!(
                "A return for order {name} has been requested. The store will approve it and arrange the pickup."
            ),
            Change::Address(a) => {
                format!("The delivery address of order {name} is now {}.", said(a))
            }
            Change::Reschedule { date, .. } => format!(
                "I've noted the request to deliver order {name} on {date}; the delivery team will follow it."
            ),
        }
    }

    /// What the caller hears when the store refused the change.
    pub(super) fn rejected_message(&self, order: &Order, why: &str) -> String {
        let name = &order.name;
        match self {
            Change::Cancel => format!("The store could not cancel order {name}: {why}."),
            Change::Return { .. } => {
                format!("The store could not start a return for order {name}: {why}.")
            }
            Change::Address(_) => {
                format!("The store could not change the address of order {name}: {why}.")
            }
            Change::Reschedule { .. } => {
                format!("The store could not note the delivery day for order {name}: {why}.")
            }
        }
    }

    /// Whether a success answer is read back before it is believed (Shopify has been seen to
    /// answer `orderUpdate` without changing the address).
    pub(super) fn read_back(&self) -> bool {
        matches!(self, Change::Address(_))
    }

    /// The Shopify call.
    pub(super) async fn apply(
        &self,
        shop: &Shopify,
        order: &Order,
        staff_note: &str,
        job_polls: u32,
    ) -> Result<Applied, ShopifyError> {
        match self {
            Change::Cancel => {
                let job = shop.cancel_order(&order.id, staff_note).await?;
                let mut done = job.done;
                for _ in 0..job_polls {
                    if done {
                        break;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                    done = shop.job_done(&job.id).await.unwrap_or(false);
                }
                let refund = rupees(order, false).unwrap_or_else(|| "the amount".into());
                let message = if done {
                    format!(
                        "Order {} is cancelled. The refund of {refund} goes back to the original payment method.",
                        order.name
                    )
                } else {
                    format!(
                        "The cancellation of order {} is being processed. The refund of {refund} follows once it completes.",
                        order.name
                    )
                };
                Ok(Applied {
                    message,
                    ids: json!({ "job": job.id, "completed": done }),
                })
            }
            Change::Return { reason, note } => {
                let id = shop.request_return(order, reason, note).await?;
                Ok(Applied {
                    message: self.done_message(order),
                    ids: json!({ "return": id }),
                })
            }
            Change::Address(new) => {
                let input = json!({
                    "id": order.id,
                    "shippingAddress": {
                        "firstName": new.first_name, "lastName": new.last_name,
                        "address1": new.address1, "address2": new.address2, "city": new.city,
                        "provinceCode": new.province_code, "zip": new.zip,
                        "countryCode": new.country_code_v2.clone().unwrap_or_else(|| "IN".into()),
                        "phone": new.phone,
                    }
                });
                shop.update_order(input).await?;
                Ok(Applied {
                    message: self.done_message(order),
                    ids: Value::Null,
                })
            }
            Change::Reschedule { line, .. } => {
                let note = match order.note.as_deref() {
                    Some(n) if !n.is_empty() => format!("{n}\n{line}"),
                    _ => line.clone(),
                };
                shop.update_order(json!({ "id": order.id, "note": note }))
                    .await?;
                Ok(Applied {
                    message: self.done_message(order),
                    ids: Value::Null,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_survives_the_ledger_and_its_claim_names_no_call() {
        let changes = [
            Change::Cancel,
            Change::Return {
                reason: "SIZE_TOO_SMALL".into(),
                note: "chhota hai".into(),
            },
            Change::Address(Box::new(MailingAddress {
                address1: Some("4  Park Street".into()),
                zip: Some("700016".into()),
                city: Some("Kolkata".into()),
                ..MailingAddress::default()
            })),
            Change::Reschedule {
                date: "Saturday".into(),
                line: "Caller asked for delivery on: Saturday".into(),
            },
        ];
        for c in changes {
            assert_eq!(
                Change::from_record(c.agent(), &c.after()).as_ref(),
                Some(&c),
                "{c:?}"
            );
            assert!(
                c.claim("#1001")
                    .starts_with(&format!("{}:#1001", c.agent().name()))
            );
        }
        let a = |street: &str| {
            Change::Address(Box::new(MailingAddress {
                address1: Some(street.into()),
                zip: Some("700016".into()),
                ..MailingAddress::default()
            }))
            .claim("#1001")
        };
        assert_eq!(
            a("4 Park Street"),
            a(" 4  park street "),
            "one change, written two ways"
        );
        assert_ne!(a("4 Park Street"), a("5 Park Street"), "two changes");
        assert!(
            !a("4 Park Street").contains("park") && !a("4 Park Street").contains("700016"),
            "the claim holds no part of the address: {}",
            a("4 Park Street")
        );
    }
}
