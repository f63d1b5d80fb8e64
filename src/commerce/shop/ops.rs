//! The operations a support agent needs (PROTOCOLS.md §4.6), typed.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{Op, Shopify, ShopifyError};

/// An amount in the shop's currency.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Money {
    /// Decimal string, e.g. `"1299.00"`.
    pub amount: String,
    /// e.g. `INR`.
    pub currency_code: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct MoneyBag {
    shop_money: Money,
}

#[derive(Debug, Clone, Deserialize)]
struct Nodes<T> {
    nodes: Vec<T>,
}

/// A postal address.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MailingAddress {
    /// First name.
    pub first_name: Option<String>,
    /// Last name.
    pub last_name: Option<String>,
    /// Street.
    pub address1: Option<String>,
    /// Flat, landmark.
    pub address2: Option<String>,
    /// City.
    pub city: Option<String>,
    /// State.
    pub province: Option<String>,
    /// State code (`KA`).
    pub province_code: Option<String>,
    /// PIN code.
    pub zip: Option<String>,
    /// Country.
    pub country: Option<String>,
    /// Country code (`IN`).
    pub country_code_v2: Option<String>,
    /// Phone.
    pub phone: Option<String>,
}

/// An item bought.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct LineItem {
    /// Its id.
    pub id: String,
    /// What it is.
    pub title: String,
    /// How many.
    pub quantity: u32,
}

/// Tracking of a shipment.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Tracking {
    /// Courier.
    pub company: Option<String>,
    /// Tracking number.
    pub number: Option<String>,
    /// Tracking page.
    pub url: Option<String>,
}

/// An item of a shipment (what a return refers to).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct FulfillmentLineItem {
    /// Its id.
    pub id: String,
    /// How many were shipped.
    pub quantity: u32,
}

/// A shipment.
#[derive(Debug, Clone, PartialEq)]
pub struct Fulfillment {
    /// `SUCCESS`, `CANCELLED`, …
    pub status: Option<String>,
    /// `IN_TRANSIT`, `OUT_FOR_DELIVERY`, `DELIVERED`, …
    pub display_status: Option<String>,
    /// Expected delivery.
    pub estimated_delivery_at: Option<String>,
    /// Delivered at.
    pub delivered_at: Option<String>,
    /// Tracking.
    pub tracking: Vec<Tracking>,
    /// Items shipped.
    pub items: Vec<FulfillmentLineItem>,
}

/// An order, as a support agent sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Order {
    /// `gid://shopify/Order/…`.
    pub id: String,
    /// `#1001`.
    pub name: String,
    /// Placed at.
    pub created_at: Option<String>,
    /// Cancelled at, if cancelled.
    pub cancelled_at: Option<String>,
    /// `PAID`, `REFUNDED`, `PARTIALLY_REFUNDED`, `PENDING`, …
    pub financial_status: Option<String>,
    /// `FULFILLED`, `UNFULFILLED`, `IN_PROGRESS`, …
    pub fulfillment_status: Option<String>,
    /// `returnStatus`: `NO_RETURN`, `RETURN_REQUESTED`, `IN_PROGRESS`, `INSPECTION_COMPLETE`,
    /// `RETURNED`, `RETURN_FAILED`.
    pub return_status: Option<String>,
    /// Total.
    pub total: Option<Money>,
    /// Refunded so far.
    pub refunded: Option<Money>,
    /// Staff note.
    pub note: Option<String>,
    /// Where it goes.
    pub shipping_address: Option<MailingAddress>,
    /// What was bought.
    pub line_items: Vec<LineItem>,
    /// Shipments.
    pub fulfillments: Vec<Fulfillment>,
}

impl Order {
    /// A return has been asked for or is under way (or done): a second one is not.
    pub fn has_return(&self) -> bool {
        matches!(
            self.return_status.as_deref(),
            Some("RETURN_REQUESTED" | "IN_PROGRESS" | "INSPECTION_COMPLETE" | "RETURNED")
        )
    }

    /// Whether nothing has shipped yet (cancel and address change are allowed).
    pub fn unshipped(&self) -> bool {
        self.cancelled_at.is_none()
            && matches!(
                self.fulfillment_status.as_deref(),
                None | Some(
                    "UNFULFILLED" | "PENDING_FULFILLMENT" | "OPEN" | "ON_HOLD" | "SCHEDULED"
                )
            )
            && self.fulfillments.is_empty()
    }

    /// Whether it was delivered.
    pub fn delivered(&self) -> bool {
        self.fulfillments
            .iter()
            .any(|f| f.display_status.as_deref() == Some("DELIVERED") || f.delivered_at.is_some())
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawFulfillment {
    status: Option<String>,
    display_status: Option<String>,
    estimated_delivery_at: Option<String>,
    delivered_at: Option<String>,
    #[serde(default)]
    tracking_info: Vec<Tracking>,
    fulfillment_line_items: Option<Nodes<FulfillmentLineItem>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawOrder {
    id: String,
    name: String,
    created_at: Option<String>,
    cancelled_at: Option<String>,
    display_financial_status: Option<String>,
    display_fulfillment_status: Option<String>,
    return_status: Option<String>,
    total_price_set: Option<MoneyBag>,
    total_refunded_set: Option<MoneyBag>,
    note: Option<String>,
    shipping_address: Option<MailingAddress>,
    line_items: Option<Nodes<LineItem>>,
    #[serde(default)]
    fulfillments: Vec<RawFulfillment>,
}

impl From<RawOrder> for Order {
    fn from(r: RawOrder) -> Order {
        Order {
            id: r.id,
            name: r.name,
            created_at: r.created_at,
            cancelled_at: r.cancelled_at,
            financial_status: r.display_financial_status,
            fulfillment_status: r.display_fulfillment_status,
            return_status: r.return_status,
            total: r.total_price_set.map(|m| m.shop_money),
            refunded: r.total_refunded_set.map(|m| m.shop_money),
            note: r.note,
            shipping_address: r.shipping_address,
            line_items: r.line_items.map(|n| n.nodes).unwrap_or_default(),
            fulfillments: r
                .fulfillments
                .into_iter()
                .map(|f| Fulfillment {
                    status: f.status,
                    display_status: f.display_status,
                    estimated_delivery_at: f.estimated_delivery_at,
                    delivered_at: f.delivered_at,
                    tracking: f.tracking_info,
                    items: f
                        .fulfillment_line_items
                        .map(|n| n.nodes)
                        .unwrap_or_default(),
                })
                .collect(),
        }
    }
}

/// One of a customer's recent orders.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CustomerOrder {
    /// Its id.
    pub id: String,
    /// `#1001`.
    pub name: String,
    /// Fulfilment status.
    pub display_fulfillment_status: Option<String>,
}

/// A customer found by phone.
#[derive(Debug, Clone, PartialEq)]
pub struct Customer {
    /// Its id.
    pub id: String,
    /// Name.
    pub display_name: Option<String>,
    /// Latest orders first.
    pub orders: Vec<CustomerOrder>,
}

/// An asynchronous job (`orderCancel` runs as one).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Job {
    /// Its id.
    pub id: String,
    /// Finished.
    pub done: bool,
}

/// `orders(query: "name:#1001")`.
pub(super) const ORDER_BY_NAME: Op = Op {
    name: "OrderByName",
    query: "query OrderByName($q: String!) {
  orders(first: 1, query: $q) {
    nodes {
      id name createdAt cancelledAt displayFinancialStatus displayFulfillmentStatus returnStatus note
      totalPriceSet { shopMoney { amount currencyCode } }
      totalRefundedSet { shopMoney { amount currencyCode } }
      shippingAddress { firstName lastName address1 address2 city province provinceCode zip country countryCodeV2 phone }
      lineItems(first: 20) { nodes { id title quantity } }
      fulfillments(first: 5) {
        status displayStatus estimatedDeliveryAt deliveredAt
        trackingInfo(first: 5) { company number url }
        fulfillmentLineItems(first: 20) { nodes { id quantity } }
      }
    }
  }
}",
    mutation: false,
    cost: 60.0,
};

/// `customerByIdentifier(identifier: { phoneNumber })`.
pub(super) const CUSTOMER_BY_PHONE: Op = Op {
    name: "CustomerByPhone",
    query: "query CustomerByPhone($p: String!) {
  customerByIdentifier(identifier: { phoneNumber: $p }) {
    id displayName
    orders(first: 5, sortKey: CREATED_AT, reverse: true) { nodes { id name displayFulfillmentStatus } }
  }
}",
    mutation: false,
    cost: 10.0,
};

/// `orderCancel` (asynchronous: returns a job).
pub(super) const ORDER_CANCEL: Op = Op {
    name: "OrderCancel",
    query: "mutation OrderCancel($orderId: ID!, $refundMethod: OrderCancelRefundMethodInput!, $restock: Boolean!, $reason: OrderCancelReason!, $notifyCustomer: Boolean, $staffNote: String) {
  orderCancel(orderId: $orderId, refundMethod: $refundMethod, restock: $restock, reason: $reason, notifyCustomer: $notifyCustomer, staffNote: $staffNote) {
    job { id done }
    orderCancelUserErrors { field message code }
  }
}",
    mutation: true,
    cost: 10.0,
};

/// `job(id)`.
pub(super) const JOB: Op = Op {
    name: "JobStatus",
    query: "query JobStatus($id: ID!) { job(id: $id) { id done } }",
    mutation: false,
    cost: 1.0,
};

/// `returnRequest` (a request the merchant approves).
pub(super) const RETURN_REQUEST: Op = Op {
    name: "ReturnRequest",
    query: "mutation ReturnRequest($input: ReturnRequestInput!) {
  returnRequest(input: $input) { return { id status } userErrors { field message } }
}",
    mutation: true,
    cost: 10.0,
};

/// `orderUpdate` (shipping address, note).
pub(super) const ORDER_UPDATE: Op = Op {
    name: "OrderUpdate",
    query: "mutation OrderUpdate($input: OrderInput!) {
  orderUpdate(input: $input) { order { id note shippingAddress { address1 address2 city zip } } userErrors { field message } }
}",
    mutation: true,
    cost: 10.0,
};

fn decode<T: serde::de::DeserializeOwned>(v: &Value, what: &str) -> Result<T, ShopifyError> {
    serde_json::from_value(v.clone()).map_err(|e| ShopifyError::Protocol(format!("{what}: {e}")))
}

fn user_errors(v: Option<&Value>) -> Option<String> {
    let list = v?.as_array()?;
    let messages: Vec<&str> = list
        .iter()
        .filter_map(|e| e.get("message").and_then(Value::as_str))
        .collect();
    (!messages.is_empty()).then(|| messages.join("; "))
}

impl Shopify {
    /// The order a caller calls "1001" (tries `name:#1001`, then `name:1001`).
    pub async fn order_by_number(&self, number: &str) -> Result<Option<Order>, ShopifyError> {
        let digits: String = number.chars().filter(char::is_ascii_alphanumeric).collect();
        if digits.is_empty() {
            return Ok(None);
        }
        for q in [format!("name:#{digits}"), format!("name:{digits}")] {
            let data = self.graphql(ORDER_BY_NAME, json!({ "q": q })).await?;
            let nodes = data
                .pointer("/orders/nodes")
                .cloned()
                .unwrap_or(Value::Null);
            let mut orders: Vec<RawOrder> = decode(&nodes, "orders")?;
            if let Some(o) = orders.pop() {
                return Ok(Some(o.into()));
            }
        }
        Ok(None)
    }

    /// The customer with this phone number (E.164) and their latest orders.
    pub async fn customer_by_phone(&self, phone: &str) -> Result<Option<Customer>, ShopifyError> {
        let data = self
            .graphql(CUSTOMER_BY_PHONE, json!({ "p": phone }))
            .await?;
        let Some(c) = data.get("customerByIdentifier").filter(|c| !c.is_null()) else {
            return Ok(None);
        };
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Raw {
            id: String,
            display_name: Option<String>,
            orders: Option<Nodes<CustomerOrder>>,
        }
        let raw: Raw = decode(c, "customer")?;
        Ok(Some(Customer {
            id: raw.id,
            display_name: raw.display_name,
            orders: raw.orders.map(|n| n.nodes).unwrap_or_default(),
        }))
    }

    /// Starts cancelling an order (refund to the original payment, restock, notify).
    pub async fn cancel_order(
        &self,
        order_id: &str,
        staff_note: &str,
    ) -> Result<Job, ShopifyError> {
        let vars = json!({
            "orderId": order_id,
            "refundMethod": { "originalPaymentMethodsRefund": true },
            "restock": true,
            "reason": "CUSTOMER",
            "notifyCustomer": true,
            "staffNote": staff_note,
        });
        let data = self.graphql(ORDER_CANCEL, vars).await?;
        let payload = data.get("orderCancel").cloned().unwrap_or(Value::Null);
        if let Some(e) = user_errors(payload.get("orderCancelUserErrors")) {
            return Err(ShopifyError::Rejected(e));
        }
        decode(payload.get("job").unwrap_or(&Value::Null), "job")
    }

    /// Whether a job has finished.
    pub async fn job_done(&self, job_id: &str) -> Result<bool, ShopifyError> {
        let data = self.graphql(JOB, json!({ "id": job_id })).await?;
        Ok(data
            .pointer("/job/done")
            .and_then(Value::as_bool)
            .unwrap_or(false))
    }

    /// Asks for a return of every shipped item of an order; the return's id.
    pub async fn request_return(
        &self,
        order: &Order,
        reason: &str,
        note: &str,
    ) -> Result<String, ShopifyError> {
        let items: Vec<Value> = order
            .fulfillments
            .iter()
            .flat_map(|f| &f.items)
            .map(|i| {
                json!({
                    "fulfillmentLineItemId": i.id,
                    "quantity": i.quantity,
                    "returnReason": reason,
                    "customerNote": note,
                })
            })
            .collect();
        if items.is_empty() {
            return Err(ShopifyError::Rejected(
                "nothing has shipped to return".into(),
            ));
        }
        let vars = json!({ "input": { "orderId": order.id, "returnLineItems": items } });
        let data = self.graphql(RETURN_REQUEST, vars).await?;
        let payload = data.get("returnRequest").cloned().unwrap_or(Value::Null);
        if let Some(e) = user_errors(payload.get("userErrors")) {
            return Err(ShopifyError::Rejected(e));
        }
        payload
            .pointer("/return/id")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| ShopifyError::Protocol("returnRequest gave no return".into()))
    }

    /// `orderUpdate` with `input` (`id` plus the fields to change).
    pub async fn update_order(&self, input: Value) -> Result<Value, ShopifyError> {
        let data = self
            .graphql(ORDER_UPDATE, json!({ "input": input }))
            .await?;
        let payload = data.get("orderUpdate").cloned().unwrap_or(Value::Null);
        if let Some(e) = user_errors(payload.get("userErrors")) {
            return Err(ShopifyError::Rejected(e));
        }
        Ok(payload.get("order").cloned().unwrap_or(Value::Null))
    }
}
