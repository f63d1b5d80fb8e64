//! The demo store: a Shopify GraphQL Admin API on 127.0.0.1 with a seeded catalogue of orders
//! in every state (unshipped, in transit, delivered, cancelled and refunded, partly refunded,
//! returned). `caly serve` starts it when no Shopify settings are given (unless
//! `--no-demo-store`), announces it at start-up and on `/readyz` (`"store": "demo"`), and the
//! agents talk to it over real HTTP with the real client, exactly as they would to a shop: a
//! newcomer's first call looks up a real (demo) order. It is an offline stand-in, like the
//! Realtime simulator; nothing it holds is a real customer's. The operations and shapes are
//! PROTOCOLS.md §4.6's, with a cost bucket reported in `extensions.cost` like Shopify's.
//!
//! The tests' fake store wraps the same catalogue with faults and a request log.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

use crate::commerce::shop::{API_VERSION, ShopifyConfig};

/// The cost bucket's size, in points.
pub const MAX_POINTS: f64 = 1000.0;
/// Points restored per second.
pub const RESTORE: f64 = 50.0;
/// Points one operation costs.
const COST: f64 = 10.0;

/// What the store holds: orders, customers, cancellation jobs, the cost bucket.
#[derive(Debug)]
pub struct Catalogue {
    orders: Vec<Value>,
    /// phone (E.164) → customer id, name
    customers: HashMap<String, (String, String)>,
    jobs: HashMap<String, u32>,
    next_id: u64,
    bucket: f64,
    bucket_at: Instant,
}

impl Catalogue {
    /// The seeded orders and their customer.
    pub fn seeded() -> Catalogue {
        let mut customers = HashMap::new();
        customers.insert(
            "+919876543210".to_string(),
            (
                "gid://shopify/Customer/42".to_string(),
                "Asha Rao".to_string(),
            ),
        );
        customers.insert(
            "+919812345678".to_string(),
            (
                "gid://shopify/Customer/43".to_string(),
                "Vikram Singh".to_string(),
            ),
        );
        Catalogue {
            orders: seed_orders(),
            customers,
            jobs: HashMap::new(),
            next_id: 1,
            bucket: MAX_POINTS,
            bucket_at: Instant::now(),
        }
    }

    /// The order named `name` (`#1001`) as the store holds it now.
    pub fn order(&self, name: &str) -> Option<Value> {
        self.orders.iter().find(|o| o["name"] == name).cloned()
    }

    /// Answers one authorised operation as Shopify does: the cost bucket first (a
    /// `THROTTLED` error when it is empty, or when `throttle` says so), then the operation,
    /// each answer carrying `extensions.cost`.
    pub fn answer(&mut self, operation: &str, vars: &Value, throttle: bool) -> Value {
        let elapsed = self.bucket_at.elapsed().as_secs_f64();
        self.bucket = (self.bucket + elapsed * RESTORE).min(MAX_POINTS);
        self.bucket_at = Instant::now();
        let cost = |available: f64, actual: Option<f64>| {
            json!({"cost": {"requestedQueryCost": COST, "actualQueryCost": actual,
                "throttleStatus": {"maximumAvailable": MAX_POINTS, "currentlyAvailable": available, "restoreRate": RESTORE}}})
        };
        if throttle || self.bucket < COST {
            return json!({
                "errors": [{"message": "Throttled", "extensions": {"code": "THROTTLED", "documentation": "https://shopify.dev/api/usage/rate-limits"}}],
                "extensions": cost(self.bucket.clamp(0.0, COST - 1.0), None),
            });
        }
        self.bucket -= COST;
        match run(self, operation, vars) {
            Ok(data) => json!({"data": data, "extensions": cost(self.bucket, Some(COST))}),
            Err(message) => {
                json!({"errors": [{"message": message}], "extensions": cost(self.bucket, Some(COST))})
            }
        }
    }
}

/// The seeded orders: the phone +919876543210 belongs to Asha Rao, who placed all of them.
/// - `#1001` unfulfilled, paid (₹1,299): can be cancelled or re-addressed;
/// - `#1002` shipped, in transit with BlueDart, due 2026-11-28;
/// - `#1003` delivered on 2026-11-20: can be returned;
/// - `#1004` cancelled and refunded;
/// - `#1005` delivered, partly refunded;
/// - `#1006` (Vikram Singh, +919812345678, Lucknow) delivered, returned and refunded.
pub fn seed_orders() -> Vec<Value> {
    let address = json!({"firstName": "Asha", "lastName": "Rao", "address1": "12 MG Road",
        "address2": "Near SBI Bank", "city": "Bengaluru", "province": "Karnataka",
        "provinceCode": "KA", "zip": "560001", "country": "India", "countryCodeV2": "IN",
        "phone": "+919876543210"});
    let order = |n: u64, fin: &str, ful: &str, total: &str, fulfillments: Value| {
        json!({
            "id": format!("gid://shopify/Order/{}", 5_000 + n),
            "name": format!("#{n}"),
            "createdAt": "2026-11-18T10:00:00Z",
            "cancelledAt": null,
            "displayFinancialStatus": fin,
            "displayFulfillmentStatus": ful,
            "note": null,
            "totalPriceSet": {"shopMoney": {"amount": total, "currencyCode": "INR"}},
            "totalRefundedSet": {"shopMoney": {"amount": "0.00", "currencyCode": "INR"}},
            "shippingAddress": address,
            "lineItems": {"nodes": [{"id": format!("gid://shopify/LineItem/{}", 7_000 + n), "title": "Cotton Kurta", "quantity": 1}]},
            "fulfillments": fulfillments,
        })
    };
    let shipped = |n: u64, status: &str, delivered: Value| {
        json!([{
            "status": "SUCCESS", "displayStatus": status,
            "estimatedDeliveryAt": "2026-11-28T18:00:00Z", "deliveredAt": delivered,
            "trackingInfo": [{"company": "BlueDart", "number": format!("BD{n}XYZ"), "url": format!("https://track.example/BD{n}")}],
            "fulfillmentLineItems": {"nodes": [{"id": format!("gid://shopify/FulfillmentLineItem/{}", 9_000 + n), "quantity": 1}]},
        }])
    };
    let mut cancelled = order(1004, "REFUNDED", "UNFULFILLED", "799.00", json!([]));
    cancelled["cancelledAt"] = json!("2026-11-19T09:00:00Z");
    cancelled["totalRefundedSet"] =
        json!({"shopMoney": {"amount": "799.00", "currencyCode": "INR"}});
    let mut partial = order(
        1005,
        "PARTIALLY_REFUNDED",
        "FULFILLED",
        "2499.00",
        shipped(1005, "DELIVERED", json!("2026-11-21T12:00:00Z")),
    );
    partial["totalRefundedSet"] = json!({"shopMoney": {"amount": "500.00", "currencyCode": "INR"}});
    let mut returned = order(
        1006,
        "REFUNDED",
        "FULFILLED",
        "899.00",
        shipped(1006, "DELIVERED", json!("2026-11-19T11:00:00Z")),
    );
    returned["returnStatus"] = json!("RETURNED");
    returned["totalRefundedSet"] =
        json!({"shopMoney": {"amount": "899.00", "currencyCode": "INR"}});
    returned["lineItems"]["nodes"][0]["title"] = json!("Steel Water Bottle");
    returned["shippingAddress"] = json!({"firstName": "Vikram", "lastName": "Singh",
        "address1": "45 Hazratganj", "address2": "Opposite City Mall", "city": "Lucknow",
        "province": "Uttar Pradesh", "provinceCode": "UP", "zip": "226001", "country": "India",
        "countryCodeV2": "IN", "phone": "+919812345678"});
    vec![
        order(1001, "PAID", "UNFULFILLED", "1299.00", json!([])),
        order(
            1002,
            "PAID",
            "FULFILLED",
            "499.00",
            shipped(1002, "IN_TRANSIT", Value::Null),
        ),
        order(
            1003,
            "PAID",
            "FULFILLED",
            "1599.00",
            shipped(1003, "DELIVERED", json!("2026-11-20T15:00:00Z")),
        ),
        cancelled,
        partial,
        returned,
    ]
}

/// The operation name: the identifier after `query` / `mutation`.
pub fn operation_name(query: &str) -> Option<&str> {
    let rest = query
        .trim_start()
        .strip_prefix("query")
        .or_else(|| query.trim_start().strip_prefix("mutation"))?;
    let rest = rest.trim_start();
    let end = rest
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(rest.len());
    (end > 0).then(|| &rest[..end])
}

/// The refusal Shopify sends for a missing or wrong access token.
pub fn unauthorized() -> Response {
    let body = json!({"errors": "[API] Invalid API key or access token (unrecognized login or wrong password)"});
    (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response()
}

/// Whether the request carries `token` as `X-Shopify-Access-Token`.
pub fn authorised(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get("X-Shopify-Access-Token")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| {
            bool::from(subtle::ConstantTimeEq::ct_eq(
                t.as_bytes(),
                token.as_bytes(),
            ))
        })
}

struct Demo {
    token: String,
    catalogue: Mutex<Catalogue>,
}

/// A running demo store; dropping it stops the server.
#[derive(Debug)]
pub struct DemoStore {
    addr: SocketAddr,
    token: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for DemoStore {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl DemoStore {
    /// Starts the demo store on 127.0.0.1 (a free port) with the seeded catalogue and a fresh
    /// access token.
    pub async fn start() -> std::io::Result<DemoStore> {
        let token = format!("shpat_demo_{}", uuid::Uuid::new_v4().simple());
        DemoStore::start_on(0, token).await
    }

    /// Starts it on 127.0.0.1:`port` (0: a free one) with `token` as its access token: the
    /// load generator hosts one there for the server it loads (`caly simulate --store-port`).
    pub async fn start_on(port: u16, token: String) -> std::io::Result<DemoStore> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        let addr = listener.local_addr()?;
        let demo = Arc::new(Demo {
            token: token.clone(),
            catalogue: Mutex::new(Catalogue::seeded()),
        });
        let app = Router::new()
            .route("/admin/api/{version}/graphql.json", post(graphql))
            .with_state(demo);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(DemoStore { addr, token, task })
    }

    /// The GraphQL endpoint.
    pub fn url(&self) -> String {
        endpoint(self.addr)
    }

    /// The client settings that reach it.
    pub fn config(&self) -> ShopifyConfig {
        ShopifyConfig::new(self.url(), self.token.clone())
    }
}

/// The GraphQL endpoint of a store served at `addr` (the route both servers answer on).
pub fn endpoint(addr: SocketAddr) -> String {
    format!("http://{addr}/admin/api/{API_VERSION}/graphql.json")
}

/// The lock, whether or not a panicking holder poisoned it (the catalogue stays usable).
pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn graphql(State(demo): State<Arc<Demo>>, headers: HeaderMap, body: String) -> Response {
    if !authorised(&headers, &demo.token) {
        return unauthorized();
    }
    let Ok(request) = serde_json::from_str::<Value>(&body) else {
        let body = json!({"errors": [{"message": "Invalid JSON in request body"}]});
        return (StatusCode::BAD_REQUEST, axum::Json(body)).into_response();
    };
    let query = request["query"].as_str().unwrap_or_default();
    let operation = operation_name(query).unwrap_or("<anonymous>");
    let answer = lock(&demo.catalogue).answer(operation, &request["variables"], false);
    axum::Json(answer).into_response()
}

fn find<'a>(store: &'a mut Catalogue, id: &str) -> Option<&'a mut Value> {
    store.orders.iter_mut().find(|o| o["id"] == id)
}

fn run(store: &mut Catalogue, operation: &str, vars: &Value) -> Result<Value, String> {
    match operation {
        "OrderByName" => {
            let q = vars["q"].as_str().unwrap_or_default();
            let name = q.strip_prefix("name:").unwrap_or(q);
            // Shopify's name search matches "#1001" and "1001" alike.
            let wanted = format!("#{}", name.trim_start_matches('#'));
            let nodes: Vec<Value> = store
                .orders
                .iter()
                .filter(|o| o["name"] == wanted.as_str())
                .cloned()
                .collect();
            Ok(json!({"orders": {"nodes": nodes}}))
        }
        "CustomerByPhone" => {
            let phone = vars["p"].as_str().unwrap_or_default();
            let Some((id, name)) = store.customers.get(phone).cloned() else {
                return Ok(json!({"customerByIdentifier": null}));
            };
            let mut orders: Vec<Value> = store
                .orders
                .iter()
                .filter(|o| o["shippingAddress"]["phone"] == phone)
                .map(|o| json!({"id": o["id"], "name": o["name"], "displayFulfillmentStatus": o["displayFulfillmentStatus"]}))
                .collect();
            orders.reverse();
            orders.truncate(5);
            Ok(
                json!({"customerByIdentifier": {"id": id, "displayName": name, "orders": {"nodes": orders}}}),
            )
        }
        "OrderCancel" => {
            let id = vars["orderId"].as_str().unwrap_or_default().to_string();
            let job = format!("gid://shopify/Job/{}", store.next_id);
            store.next_id += 1;
            let Some(order) = find(store, &id) else {
                return Ok(
                    json!({"orderCancel": {"job": null, "orderCancelUserErrors": [{"field": ["orderId"], "message": "Order does not exist", "code": "NOT_FOUND"}]}}),
                );
            };
            if !order["cancelledAt"].is_null() {
                return Ok(
                    json!({"orderCancel": {"job": null, "orderCancelUserErrors": [{"field": ["orderId"], "message": "Order has already been cancelled", "code": "ORDER_ALREADY_CANCELLED"}]}}),
                );
            }
            if order["displayFulfillmentStatus"] != "UNFULFILLED" {
                return Ok(
                    json!({"orderCancel": {"job": null, "orderCancelUserErrors": [{"field": ["orderId"], "message": "Cannot cancel a fulfilled order", "code": "INVALID"}]}}),
                );
            }
            order["cancelledAt"] = json!("2026-11-25T10:00:00Z");
            order["displayFinancialStatus"] = json!("REFUNDED");
            order["totalRefundedSet"] = order["totalPriceSet"].clone();
            store.jobs.insert(job.clone(), 0);
            Ok(
                json!({"orderCancel": {"job": {"id": job, "done": false}, "orderCancelUserErrors": []}}),
            )
        }
        "JobStatus" => {
            let id = vars["id"].as_str().unwrap_or_default();
            match store.jobs.get_mut(id) {
                Some(polls) => {
                    *polls += 1;
                    Ok(json!({"job": {"id": id, "done": *polls >= 1}}))
                }
                None => Ok(json!({"job": null})),
            }
        }
        "ReturnRequest" => {
            let input = &vars["input"];
            let id = input["orderId"].as_str().unwrap_or_default().to_string();
            let items = input["returnLineItems"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let rid = format!("gid://shopify/Return/{}", store.next_id);
            store.next_id += 1;
            let Some(order) = find(store, &id) else {
                return Ok(
                    json!({"returnRequest": {"return": null, "userErrors": [{"field": ["orderId"], "message": "Order does not exist"}]}}),
                );
            };
            if order["displayFulfillmentStatus"] != "FULFILLED" || items.is_empty() {
                return Ok(
                    json!({"returnRequest": {"return": null, "userErrors": [{"field": ["returnLineItems"], "message": "Nothing returnable"}]}}),
                );
            }
            order["returnStatus"] = json!("RETURN_REQUESTED");
            Ok(
                json!({"returnRequest": {"return": {"id": rid, "status": "REQUESTED"}, "userErrors": []}}),
            )
        }
        "OrderUpdate" => {
            let input = &vars["input"];
            let id = input["id"].as_str().unwrap_or_default().to_string();
            let Some(order) = find(store, &id) else {
                return Ok(
                    json!({"orderUpdate": {"order": null, "userErrors": [{"field": ["id"], "message": "Order does not exist"}]}}),
                );
            };
            if let Some(address) = input.get("shippingAddress") {
                if order["displayFulfillmentStatus"] != "UNFULFILLED" {
                    return Ok(
                        json!({"orderUpdate": {"order": null, "userErrors": [{"field": ["shippingAddress"], "message": "Shipping address cannot be changed after fulfillment"}]}}),
                    );
                }
                for key in ["address1", "city", "zip", "countryCode"] {
                    if address
                        .get(key)
                        .and_then(Value::as_str)
                        .is_none_or(str::is_empty)
                    {
                        return Ok(
                            json!({"orderUpdate": {"order": null, "userErrors": [{"field": ["shippingAddress", key], "message": format!("{key} is required")}]}}),
                        );
                    }
                }
                let mut merged = address.clone();
                if let Some(c) = merged.get("countryCode").cloned() {
                    merged["countryCodeV2"] = c;
                }
                order["shippingAddress"] = merged;
            }
            if let Some(note) = input.get("note") {
                order["note"] = note.clone();
            }
            Ok(
                json!({"orderUpdate": {"order": {"id": order["id"], "note": order["note"], "shippingAddress": order["shippingAddress"]}, "userErrors": []}}),
            )
        }
        other => Err(format!("Field '{other}' doesn't exist on type 'QueryRoot'")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operation_names_are_read_from_the_query_text() {
        assert_eq!(
            operation_name("query OrderByName($q: String!) { x }"),
            Some("OrderByName")
        );
        assert_eq!(
            operation_name("  mutation OrderCancel($a: ID!) {}"),
            Some("OrderCancel")
        );
        assert_eq!(operation_name("{ shop { name } }"), None);
    }

    #[test]
    fn the_catalogue_has_an_order_in_every_state() {
        let c = Catalogue::seeded();
        let state = |name: &str| {
            let o = c.order(name).unwrap_or_else(|| panic!("{name}"));
            (
                o["displayFulfillmentStatus"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                o["displayFinancialStatus"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                !o["cancelledAt"].is_null(),
                o["returnStatus"].as_str().map(str::to_string),
            )
        };
        assert_eq!(state("#1001").0, "UNFULFILLED");
        assert_eq!(
            c.order("#1002").unwrap()["fulfillments"][0]["displayStatus"],
            "IN_TRANSIT"
        );
        assert_eq!(
            c.order("#1003").unwrap()["fulfillments"][0]["displayStatus"],
            "DELIVERED"
        );
        assert!(state("#1004").2, "cancelled");
        assert_eq!(state("#1005").1, "PARTIALLY_REFUNDED");
        assert_eq!(state("#1006").3.as_deref(), Some("RETURNED"));
        assert_eq!(state("#1006").1, "REFUNDED");
    }

    #[test]
    fn an_empty_bucket_throttles_like_shopify() {
        let mut c = Catalogue::seeded();
        c.bucket = 5.0;
        let answer = c.answer("OrderByName", &json!({"q": "name:#1001"}), false);
        assert_eq!(answer["errors"][0]["extensions"]["code"], "THROTTLED");
        c.bucket = MAX_POINTS;
        let answer = c.answer("OrderByName", &json!({"q": "name:#1001"}), false);
        assert_eq!(answer["data"]["orders"]["nodes"][0]["name"], "#1001");
    }
}
