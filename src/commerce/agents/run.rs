//! The seven agents: the order lookup, the two that read, and the change each of the four that
//! write asks for (made through the guarded path, `guard.rs`).

use serde_json::json;

use super::change::Change;
use super::{ActionStatus, AgentName, Args, Orchestrator, Outcome, rupees, store_failed};
use crate::commerce::shop::{MailingAddress, Order, Shopify, ShopifyError};
use crate::vocab::{e164, masked_phone};

/// What an order lookup gave.
enum Found {
    Order(Box<Order>),
    /// Tell the caller this (no order, ask for the number, pick one of several).
    Answer(Outcome),
}

fn day(ts: Option<&str>) -> Option<String> {
    // "2026-11-28T18:00:00Z" → "2026-11-28": the model says it in the caller's words.
    ts.map(|t| t.split('T').next().unwrap_or(t).to_string())
}

impl Orchestrator {
    pub(super) async fn run_inner(&self, agent: AgentName, args: Args) -> Outcome {
        if agent == AgentName::TalkToHuman {
            return Outcome::new(
                ActionStatus::Done,
                "Tell the caller you are connecting them to a person from the team now.",
            );
        }
        let Some(shop) = self.shop.clone() else {
            return store_failed(&ShopifyError::NotConfigured);
        };
        let order = match self.find_order(&shop, agent, &args).await {
            Found::Order(o) => *o,
            Found::Answer(a) => return a,
        };
        match agent {
            AgentName::OrderStatus => order_status(&order),
            AgentName::RefundStatus => refund_status(&order),
            AgentName::CancelOrder
            | AgentName::ReturnRequest
            | AgentName::AddressChange
            | AgentName::RescheduleDelivery => match self.change(agent, &order, &args) {
                Ok(change) => self.guarded(&shop, order, change, &args).await,
                Err(ask) => ask.on(&order.name),
            },
            AgentName::TalkToHuman => Outcome::new(ActionStatus::Done, ""),
        }
    }

    /// The order the caller means: the number given now, the number heard earlier in the
    /// call, or the caller's phone.
    async fn find_order(&self, shop: &Shopify, agent: AgentName, args: &Args) -> Found {
        let number = args
            .order_number
            .clone()
            .or_else(|| self.slots().order_number);
        if let Some(number) = number {
            return match shop.order_by_number(&number).await {
                Ok(Some(o)) => Found::Order(Box::new(o)),
                Ok(None) => Found::Answer(
                    Outcome::new(
                        ActionStatus::NeedsInfo,
                        format!(
                            "I could not find order {number}. Ask the caller to check the order number."
                        ),
                    )
                    .with(json!({ "searched": number })),
                ),
                Err(e) => Found::Answer(store_failed(&e)),
            };
        }
        let phone = self
            .slots()
            .phone
            .as_deref()
            .and_then(e164)
            .or_else(|| self.caller.clone());
        let Some(phone) = phone else {
            return Found::Answer(Outcome::new(
                ActionStatus::NeedsInfo,
                "Ask the caller for their order number.",
            ));
        };
        let customer = match shop.customer_by_phone(&phone).await {
            Ok(Some(c)) => c,
            Ok(None) => {
                return Found::Answer(Outcome::new(
                    ActionStatus::NeedsInfo,
                    format!(
                        "No orders are registered to the number ending {}. Ask the caller for their order number.",
                        masked_phone(&phone)
                    ),
                ));
            }
            Err(e) => return Found::Answer(store_failed(&e)),
        };
        let Some(latest) = customer.orders.first() else {
            return Found::Answer(Outcome::new(
                ActionStatus::NeedsInfo,
                "This caller has no orders yet. Ask for the order number.",
            ));
        };
        // Acting on a guess is not allowed: with several orders, a change needs the number.
        if crate::commerce::catalog::destructive(agent) && customer.orders.len() > 1 {
            let names: Vec<&str> = customer.orders.iter().map(|o| o.name.as_str()).collect();
            return Found::Answer(
                Outcome::new(
                    ActionStatus::NeedsInfo,
                    "The caller has several orders. Ask which order number this is about.",
                )
                .with(json!({ "recent_orders": names })),
            );
        }
        let name = latest.name.clone();
        match shop.order_by_number(&name).await {
            Ok(Some(o)) => Found::Order(Box::new(o)),
            Ok(None) => Found::Answer(Outcome::new(
                ActionStatus::NeedsInfo,
                "Ask the caller for their order number.",
            )),
            Err(e) => Found::Answer(store_failed(&e)),
        }
    }

    /// A new delivery address for `order`, from what the caller said now and earlier.
    fn new_address(&self, order: &Order, args: &Args) -> Option<MailingAddress> {
        let pincode = args.pincode.clone().or_else(|| self.slots().pincode);
        if args.address.is_none() && args.landmark.is_none() && pincode.is_none() {
            return None;
        }
        let old = order.shipping_address.clone().unwrap_or_default();
        Some(MailingAddress {
            address1: args.address.clone().or(old.address1.clone()),
            address2: args.landmark.clone().or(old.address2.clone()),
            city: args.city.clone().or(old.city.clone()),
            zip: pincode.or(old.zip.clone()),
            ..old
        })
    }

    /// The change a mutating agent asks for, or what to ask the caller first.
    fn change(&self, agent: AgentName, order: &Order, args: &Args) -> Result<Change, Box<Outcome>> {
        match agent {
            AgentName::CancelOrder => Ok(Change::Cancel),
            AgentName::ReturnRequest => Ok(Change::Return {
                reason: return_reason(args.reason.as_deref()).to_owned(),
                note: args
                    .reason
                    .clone()
                    .unwrap_or_else(|| "Requested on a call".into()),
            }),
            AgentName::AddressChange => match self.new_address(order, args) {
                Some(new) => Ok(Change::Address(Box::new(new))),
                // A shipped order is refused before the caller is asked for an address.
                None => Err(Box::new(
                    Change::Address(Box::default())
                        .precondition(order)
                        .unwrap_or_else(|| {
                            Outcome::new(
                                ActionStatus::NeedsInfo,
                                "Ask the caller for the new address, with the pincode.",
                            )
                        }),
                )),
            },
            AgentName::RescheduleDelivery => match args.preferred_date.clone() {
                Some(date) => Ok(Change::Reschedule {
                    line: format!("Caller asked for delivery on: {date} (call {})", self.call),
                    date,
                }),
                None => Err(Box::new(Outcome::new(
                    ActionStatus::NeedsInfo,
                    "Ask the caller which day suits them.",
                ))),
            },
            // Not a change: never reached (the read-only agents answer before).
            _ => Err(Box::new(Outcome::new(
                ActionStatus::Refused,
                "That is not a change to an order.",
            ))),
        }
    }
}

fn order_status(order: &Order) -> Outcome {
    let name = &order.name;
    if let Some(at) = order.cancelled_at.as_deref() {
        return Outcome::new(
            ActionStatus::Done,
            format!(
                "Order {name} was cancelled on {}.",
                day(Some(at)).unwrap_or_default()
            ),
        )
        .on(name)
        .with(json!({ "cancelled_at": at }));
    }
    let Some(f) = order.fulfillments.last() else {
        return Outcome::new(
            ActionStatus::Done,
            format!("Order {name} is confirmed and being packed; it has not shipped yet."),
        )
        .on(name)
        .with(json!({ "fulfillment_status": order.fulfillment_status }));
    };
    let tracking = f.tracking.first();
    let courier = tracking.and_then(|t| t.company.clone());
    let number = tracking.and_then(|t| t.number.clone());
    let details = json!({
        "shipment_status": f.display_status,
        "courier": courier,
        "tracking_number": number,
        "estimated_delivery": day(f.estimated_delivery_at.as_deref()),
        "delivered_on": day(f.delivered_at.as_deref()),
    });
    let message = match f.display_status.as_deref() {
        Some("DELIVERED") => format!(
            "Order {name} was delivered on {}.",
            day(f.delivered_at.as_deref()).unwrap_or_else(|| "its delivery date".into())
        ),
        Some("OUT_FOR_DELIVERY") => format!("Order {name} is out for delivery today."),
        Some("ATTEMPTED_DELIVERY") => {
            format!("The courier tried to deliver order {name} but could not; they will try again.")
        }
        Some("DELAYED") => format!("Order {name} is delayed in transit."),
        _ => format!(
            "Order {name} has shipped{}{}.",
            courier.map(|c| format!(" with {c}")).unwrap_or_default(),
            day(f.estimated_delivery_at.as_deref())
                .map(|d| format!(" and should arrive by {d}"))
                .unwrap_or_default()
        ),
    };
    Outcome::new(ActionStatus::Done, message)
        .on(name)
        .with(details)
}

fn refund_status(order: &Order) -> Outcome {
    let name = &order.name;
    let refunded = rupees(order, true);
    let total = rupees(order, false).unwrap_or_default();
    let message = match order.financial_status.as_deref() {
        Some("REFUNDED") => format!(
            "The refund of {} for order {name} has been issued to the original payment method. Banks take 5 to 7 working days to show it.",
            refunded.unwrap_or(total)
        ),
        Some("PARTIALLY_REFUNDED") => format!(
            "{} of {total} has been refunded for order {name}, to the original payment method.",
            refunded.unwrap_or_default()
        ),
        _ if order.cancelled_at.is_some() => {
            format!("Order {name} is cancelled and its refund is being processed.")
        }
        _ => format!(
            "There is no refund on order {name}: it is not cancelled and no return has been completed."
        ),
    };
    Outcome::new(ActionStatus::Done, message).on(name).with(
        json!({ "financial_status": order.financial_status, "refunded": rupees(order, true) }),
    )
}

/// Shopify's `ReturnReason` for what the caller said.
fn return_reason(said: Option<&str>) -> &'static str {
    let s = said.unwrap_or_default().to_lowercase();
    if s.contains("small") || s.contains("chhota") || s.contains("chota") || s.contains("tight") {
        "SIZE_TOO_SMALL"
    } else if s.contains("big") || s.contains("large") || s.contains("bada") || s.contains("loose")
    {
        "SIZE_TOO_LARGE"
    } else if s.contains("damage")
        || s.contains("broken")
        || s.contains("toot")
        || s.contains("defect")
        || s.contains("kharab")
    {
        "DEFECTIVE"
    } else if s.contains("wrong") || s.contains("galat") || s.contains("different") {
        "WRONG_ITEM"
    } else if s.contains("like")
        || s.contains("pasand")
        || s.contains("colour")
        || s.contains("color")
    {
        "STYLE"
    } else {
        "OTHER"
    }
}
