//! The seven agents.

use serde_json::json;

use super::{AgentName, Args, Orchestrator, Outcome, Status, masked_phone};
use crate::shopify::{Order, Shopify, ShopifyError};

/// What an order lookup gave.
enum Found {
    Order(Box<Order>),
    /// Tell the caller this (no order, ask for the number, pick one of several).
    Answer(Outcome),
}

fn store_failed(e: &ShopifyError) -> Outcome {
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
        Status::NotConfigured
    } else {
        Status::Failed
    };
    Outcome::new(status, message).with(json!({ "error": e.code(), "detail": e.to_string() }))
}

fn rupees(order: &Order, refunded: bool) -> Option<String> {
    let m = if refunded {
        order.refunded.as_ref()
    } else {
        order.total.as_ref()
    }?;
    let amount: f64 = m.amount.parse().ok()?;
    let symbol = if m.currency_code == "INR" { "₹" } else { "" };
    Some(format!("{symbol}{}", amount.round() as u64))
}

fn day(ts: Option<&str>) -> Option<String> {
    // "2026-11-28T18:00:00Z" → "2026-11-28": the model says it in the caller's words.
    ts.map(|t| t.split('T').next().unwrap_or(t).to_string())
}

impl Orchestrator {
    pub(super) async fn run_inner(&self, agent: AgentName, args: Args) -> Outcome {
        if agent == AgentName::TalkToHuman {
            return Outcome::new(
                Status::Done,
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
            AgentName::CancelOrder => self.cancel(&shop, order, &args).await,
            AgentName::ReturnRequest => self.return_request(&shop, order, &args).await,
            AgentName::AddressChange => self.address_change(&shop, order, &args).await,
            AgentName::RescheduleDelivery => self.reschedule(&shop, order, &args).await,
            AgentName::TalkToHuman => Outcome::new(Status::Done, ""),
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
                        Status::NeedsInfo,
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
            .and_then(super::e164)
            .or_else(|| self.caller.clone());
        let Some(phone) = phone else {
            return Found::Answer(Outcome::new(
                Status::NeedsInfo,
                "Ask the caller for their order number.",
            ));
        };
        let customer = match shop.customer_by_phone(&phone).await {
            Ok(Some(c)) => c,
            Ok(None) => {
                return Found::Answer(Outcome::new(
                    Status::NeedsInfo,
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
                Status::NeedsInfo,
                "This caller has no orders yet. Ask for the order number.",
            ));
        };
        // Acting on a guess is not allowed: with several orders, a change needs the number.
        if agent.destructive() && customer.orders.len() > 1 {
            let names: Vec<&str> = customer.orders.iter().map(|o| o.name.as_str()).collect();
            return Found::Answer(
                Outcome::new(
                    Status::NeedsInfo,
                    "The caller has several orders. Ask which order number this is about.",
                )
                .with(json!({ "recent_orders": names })),
            );
        }
        let name = latest.name.clone();
        match shop.order_by_number(&name).await {
            Ok(Some(o)) => Found::Order(Box::new(o)),
            Ok(None) => Found::Answer(Outcome::new(
                Status::NeedsInfo,
                "Ask the caller for their order number.",
            )),
            Err(e) => Found::Answer(store_failed(&e)),
        }
    }

    async fn cancel(&self, shop: &Shopify, order: Order, args: &Args) -> Outcome {
        let key = self.key(AgentName::CancelOrder, &order.name, None);
        if let Some(done) = self.already(&key) {
            return done;
        }
        if order.cancelled_at.is_some() {
            return Outcome::new(
                Status::Done,
                format!("Order {} is already cancelled.", order.name),
            )
            .on(&order.name);
        }
        if !order.unshipped() {
            return Outcome::new(
                Status::Refused,
                format!(
                    "Order {} has already shipped, so it cannot be cancelled. A return can be started once it is delivered.",
                    order.name
                ),
            )
            .on(&order.name);
        }
        let _one_at_a_time = self.acting.lock().await;
        if let Some(done) = self.already(&key) {
            return done;
        }
        if !self.confirmed(&key, AgentName::CancelOrder, args).await {
            let amount = rupees(&order, false).unwrap_or_default();
            return Outcome::new(
                Status::NeedsConfirmation,
                format!(
                    "Ask the caller to confirm: cancel order {} ({amount})? Cancel only after a clear yes.",
                    order.name
                ),
            )
            .on(&order.name);
        }
        let note = format!("Cancelled by the voice agent on call {}", self.call);
        let outcome = match shop.cancel_order(&order.id, &note).await {
            Ok(job) => {
                let mut done = job.done;
                for _ in 0..self.config.job_polls {
                    if done {
                        break;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                    done = shop.job_done(&job.id).await.unwrap_or(false);
                }
                let refund = rupees(&order, false).unwrap_or_else(|| "the amount".into());
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
                Outcome::new(Status::Done, message)
                    .on(&order.name)
                    .with(json!({ "job": job.id, "completed": done }))
            }
            Err(ShopifyError::Uncertain(why)) => {
                // The first attempt may have worked: look before saying anything.
                match shop.order_by_number(&order.name).await {
                    Ok(Some(o)) if o.cancelled_at.is_some() => {
                        Outcome::new(Status::Done, format!("Order {} is cancelled.", order.name))
                            .on(&order.name)
                    }
                    _ => store_failed(&ShopifyError::Uncertain(why)).on(&order.name),
                }
            }
            Err(ShopifyError::Rejected(m)) => Outcome::new(
                Status::Refused,
                format!("The store could not cancel order {}: {m}.", order.name),
            )
            .on(&order.name),
            Err(e) => store_failed(&e).on(&order.name),
        };
        if outcome.status == Status::Done {
            self.remember(&key, &outcome);
        }
        outcome
    }

    async fn return_request(&self, shop: &Shopify, order: Order, args: &Args) -> Outcome {
        let key = self.key(AgentName::ReturnRequest, &order.name, None);
        if let Some(done) = self.already(&key) {
            return done;
        }
        if !order.delivered() {
            return Outcome::new(
                Status::Refused,
                format!(
                    "Order {} has not been delivered yet, so a return cannot be started. It can be cancelled if it has not shipped.",
                    order.name
                ),
            )
            .on(&order.name);
        }
        let _one_at_a_time = self.acting.lock().await;
        if let Some(done) = self.already(&key) {
            return done;
        }
        if !self.confirmed(&key, AgentName::ReturnRequest, args).await {
            return Outcome::new(
                Status::NeedsConfirmation,
                format!(
                    "Ask the caller to confirm: start a return for order {}? Only after a clear yes.",
                    order.name
                ),
            )
            .on(&order.name);
        }
        let reason = return_reason(args.reason.as_deref());
        let note = args
            .reason
            .clone()
            .unwrap_or_else(|| "Requested on a call".into());
        let outcome = match shop.request_return(&order, reason, &note).await {
            Ok(id) => Outcome::new(
                Status::Done,
                format!(
                    "A return for order {} has been requested. The store will approve it and arrange the pickup.",
                    order.name
                ),
            )
            .on(&order.name)
            .with(json!({ "return": id })),
            Err(ShopifyError::Rejected(m)) => Outcome::new(
                Status::Refused,
                format!("The store could not start a return for order {}: {m}.", order.name),
            )
            .on(&order.name),
            Err(e) => store_failed(&e).on(&order.name),
        };
        if outcome.status == Status::Done {
            self.remember(&key, &outcome);
        }
        outcome
    }

    async fn address_change(&self, shop: &Shopify, order: Order, args: &Args) -> Outcome {
        if !order.unshipped() {
            return Outcome::new(
                Status::Refused,
                format!(
                    "Order {} has already shipped, so its address cannot be changed now.",
                    order.name
                ),
            )
            .on(&order.name);
        }
        let pincode = args.pincode.clone().or_else(|| self.slots().pincode);
        if args.address.is_none() && args.landmark.is_none() && pincode.is_none() {
            return Outcome::new(
                Status::NeedsInfo,
                "Ask the caller for the new address, with the pincode.",
            )
            .on(&order.name);
        }
        let old = order.shipping_address.clone().unwrap_or_default();
        let new = crate::shopify::MailingAddress {
            address1: args.address.clone().or(old.address1.clone()),
            address2: args.landmark.clone().or(old.address2.clone()),
            city: args.city.clone().or(old.city.clone()),
            zip: pincode.or(old.zip.clone()),
            ..old.clone()
        };
        let extra = format!(
            "{}|{}|{}",
            new.address1.as_deref().unwrap_or_default(),
            new.address2.as_deref().unwrap_or_default(),
            new.zip.as_deref().unwrap_or_default()
        );
        let key = self.key(AgentName::AddressChange, &order.name, Some(&extra));
        if let Some(done) = self.already(&key) {
            return done;
        }
        let _one_at_a_time = self.acting.lock().await;
        if let Some(done) = self.already(&key) {
            return done;
        }
        let said = format!(
            "{}, {} {}",
            new.address1.as_deref().unwrap_or_default(),
            new.city.as_deref().unwrap_or_default(),
            new.zip.as_deref().unwrap_or_default()
        );
        if !self.confirmed(&key, AgentName::AddressChange, args).await {
            return Outcome::new(
                Status::NeedsConfirmation,
                format!(
                    "Ask the caller to confirm the new address for order {}: {said}. Change it only after a clear yes.",
                    order.name
                ),
            )
            .on(&order.name);
        }
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
        let outcome = match shop.update_order(input).await {
            Ok(_) | Err(ShopifyError::Uncertain(_)) => {
                // Read it back: Shopify has been seen to answer OK without changing it.
                match shop.order_by_number(&order.name).await {
                    Ok(Some(o))
                        if o.shipping_address.as_ref().and_then(|a| a.zip.as_ref()) == new.zip.as_ref()
                            && o.shipping_address.as_ref().and_then(|a| a.address1.as_ref())
                                == new.address1.as_ref() =>
                    {
                        Outcome::new(
                            Status::Done,
                            format!("The delivery address of order {} is now {said}.", order.name),
                        )
                        .on(&order.name)
                    }
                    Ok(_) => Outcome::new(
                        Status::Failed,
                        format!(
                            "The store did not take the new address for order {}. A person from the team will follow up.",
                            order.name
                        ),
                    )
                    .on(&order.name),
                    Err(e) => store_failed(&e).on(&order.name),
                }
            }
            Err(ShopifyError::Rejected(m)) => Outcome::new(
                Status::Refused,
                format!(
                    "The store could not change the address of order {}: {m}.",
                    order.name
                ),
            )
            .on(&order.name),
            Err(e) => store_failed(&e).on(&order.name),
        };
        if outcome.status == Status::Done {
            self.remember(&key, &outcome);
        }
        outcome
    }

    async fn reschedule(&self, shop: &Shopify, order: Order, args: &Args) -> Outcome {
        let Some(date) = args.preferred_date.clone() else {
            return Outcome::new(Status::NeedsInfo, "Ask the caller which day suits them.")
                .on(&order.name);
        };
        if order.delivered() || order.cancelled_at.is_some() {
            return Outcome::new(
                Status::Refused,
                format!(
                    "Order {} is no longer on its way, so there is no delivery to move.",
                    order.name
                ),
            )
            .on(&order.name);
        }
        let key = self.key(AgentName::RescheduleDelivery, &order.name, Some(&date));
        if let Some(done) = self.already(&key) {
            return done;
        }
        let _one_at_a_time = self.acting.lock().await;
        if let Some(done) = self.already(&key) {
            return done;
        }
        // Shopify has no delivery slots: the request goes on the order for the team and the
        // courier.
        let line = format!("Caller asked for delivery on: {date} (call {})", self.call);
        let note = match order.note.as_deref() {
            Some(n) if !n.is_empty() => format!("{n}\n{line}"),
            _ => line,
        };
        let outcome = match shop.update_order(json!({ "id": order.id, "note": note })).await {
            Ok(_) => Outcome::new(
                Status::Done,
                format!(
                    "I've noted the request to deliver order {} on {date}; the delivery team will follow it.",
                    order.name
                ),
            )
            .on(&order.name),
            Err(e) => store_failed(&e).on(&order.name),
        };
        if outcome.status == Status::Done {
            self.remember(&key, &outcome);
        }
        outcome
    }
}

fn order_status(order: &Order) -> Outcome {
    let name = &order.name;
    if let Some(at) = order.cancelled_at.as_deref() {
        return Outcome::new(
            Status::Done,
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
            Status::Done,
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
    Outcome::new(Status::Done, message).on(name).with(details)
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
    Outcome::new(Status::Done, message).on(name).with(
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
