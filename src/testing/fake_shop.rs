//! A fake Shopify GraphQL Admin API on 127.0.0.1, for tests and benches only (we cannot call a
//! real store from here). Real HTTP, the operations of [`super::ops`] with the shapes of
//! PROTOCOLS.md §4.6, a cost bucket reported in `extensions.cost` like Shopify's, seeded
//! orders, and faults on demand: `THROTTLED` bodies, 429 with `Retry-After`, 500s, slow
//! answers. It records every operation so tests can count side effects (a cancel that happened
//! twice would show here). Never used by production code paths.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

/// Faults to inject; counts are consumed one per request.
#[derive(Debug, Clone, Default)]
pub struct FakeFaults {
    /// Answer this many requests with a `THROTTLED` error (HTTP 200).
    pub throttle_next: u32,
    /// Answer this many requests with HTTP 429 and `Retry-After`.
    pub status_429_next: u32,
    /// `Retry-After` seconds sent with a 429.
    pub retry_after_secs: f64,
    /// Answer this many requests with HTTP 500.
    pub status_500_next: u32,
    /// Answer every request with HTTP 500 while set.
    pub down: bool,
    /// Wait this long before answering.
    pub delay: Duration,
    /// Apply this many mutations and then answer each with HTTP 500, as a store that did the
    /// work and lost the answer (the client sees `Uncertain`).
    pub apply_then_500_next: u32,
    /// Answer this many mutations with HTTP 500 without applying them (queries unaffected).
    pub mutation_500_next: u32,
    /// Never answer the next mutation, as a store the caller's process dies waiting on:
    /// `Some(true)` applies it first, `Some(false)` never does. It is logged with status 0.
    pub stall_next_mutation: Option<bool>,
}

/// One operation received.
#[derive(Debug, Clone)]
pub struct Received {
    /// The operation name.
    pub operation: String,
    /// Its variables.
    pub variables: Value,
    /// The HTTP status answered.
    pub status: u16,
}

struct Store {
    orders: Vec<Value>,
    /// phone (E.164) → customer id, name
    customers: HashMap<String, (String, String)>,
    jobs: HashMap<String, u32>,
    next_id: u64,
    bucket: f64,
    bucket_at: Instant,
}

struct Shared {
    token: String,
    store: Mutex<Store>,
    faults: Mutex<FakeFaults>,
    log: Mutex<Vec<Received>>,
    /// Requests whose handler was dropped before answering (the client gave up).
    abandoned: AtomicU64,
    /// Mutations held without an answer (`stall_next_mutation`).
    stalled: AtomicU64,
}

/// A running fake store; dropping it stops the server.
pub struct FakeShopify {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeShopify {
    fn drop(&mut self) {
        self.task.abort();
    }
}

const MAX_POINTS: f64 = 1000.0;
const RESTORE: f64 = 50.0;

/// The seeded orders: the phone +919876543210 belongs to Asha Rao, who placed all of them.
/// - `#1001` unfulfilled, paid (₹1,299): can be cancelled or re-addressed;
/// - `#1002` shipped, in transit with BlueDart, due 2026-11-28;
/// - `#1003` delivered on 2026-11-20: can be returned;
/// - `#1004` cancelled and refunded;
/// - `#1005` delivered, partly refunded.
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
    ]
}

impl FakeShopify {
    /// Starts the fake with the seeded orders, accepting `token`.
    pub async fn start(token: &str) -> std::io::Result<FakeShopify> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let mut customers = HashMap::new();
        customers.insert(
            "+919876543210".to_string(),
            (
                "gid://shopify/Customer/42".to_string(),
                "Asha Rao".to_string(),
            ),
        );
        let shared = Arc::new(Shared {
            token: token.to_string(),
            store: Mutex::new(Store {
                orders: seed_orders(),
                customers,
                jobs: HashMap::new(),
                next_id: 1,
                bucket: MAX_POINTS,
                bucket_at: Instant::now(),
            }),
            faults: Mutex::new(FakeFaults {
                retry_after_secs: 0.2,
                ..FakeFaults::default()
            }),
            log: Mutex::new(Vec::new()),
            abandoned: AtomicU64::new(0),
            stalled: AtomicU64::new(0),
        });
        let app = Router::new()
            .route("/admin/api/{version}/graphql.json", post(graphql))
            .with_state(Arc::clone(&shared));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(FakeShopify { addr, shared, task })
    }

    /// The GraphQL endpoint.
    pub fn url(&self) -> String {
        format!(
            "http://{}/admin/api/{}/graphql.json",
            self.addr,
            crate::commerce::shop::API_VERSION
        )
    }

    /// Changes the faults.
    pub fn faults(&self, change: impl FnOnce(&mut FakeFaults)) {
        change(&mut lock(&self.shared.faults));
    }

    /// Every operation received, in order.
    pub fn log(&self) -> Vec<Received> {
        lock(&self.shared.log).clone()
    }

    /// How many times an operation was answered with 200.
    pub fn succeeded(&self, operation: &str) -> usize {
        lock(&self.shared.log)
            .iter()
            .filter(|r| r.operation == operation && r.status == 200)
            .count()
    }

    /// Requests the client gave up on before the answer (dropped mid-flight).
    pub fn abandoned(&self) -> u64 {
        self.shared.abandoned.load(Ordering::SeqCst)
    }

    /// Mutations held without an answer so far (`stall_next_mutation`).
    pub fn stalled(&self) -> u64 {
        self.shared.stalled.load(Ordering::SeqCst)
    }

    /// The order named `name` as the store holds it now.
    pub fn order(&self, name: &str) -> Option<Value> {
        lock(&self.shared.store)
            .orders
            .iter()
            .find(|o| o["name"] == name)
            .cloned()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Counts a request as abandoned unless it was answered.
struct Pending<'a> {
    shared: &'a Shared,
    answered: bool,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if !self.answered {
            self.shared.abandoned.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// The operation name: the identifier after `query` / `mutation`.
fn operation_name(query: &str) -> Option<&str> {
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

async fn graphql(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: String) -> Response {
    let mut pending = Pending {
        shared: &shared,
        answered: false,
    };
    let request: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let query = request["query"].as_str().unwrap_or_default();
    let mutation = query.trim_start().starts_with("mutation");
    let faults = {
        let mut f = lock(&shared.faults);
        let now = f.clone();
        f.throttle_next = f.throttle_next.saturating_sub(1);
        f.status_429_next = f.status_429_next.saturating_sub(1);
        f.status_500_next = f.status_500_next.saturating_sub(1);
        if mutation {
            f.apply_then_500_next = f.apply_then_500_next.saturating_sub(1);
            f.mutation_500_next = f.mutation_500_next.saturating_sub(1);
            f.stall_next_mutation = None;
        }
        now
    };
    if !faults.delay.is_zero() {
        tokio::time::sleep(faults.delay).await;
    }
    let operation = operation_name(query).unwrap_or("<anonymous>").to_string();
    let variables = request["variables"].clone();
    if let Some(applied) = faults.stall_next_mutation.filter(|_| mutation) {
        if applied {
            let _ = answer(&shared, &faults, &headers, &operation, &variables);
        }
        lock(&shared.log).push(Received {
            operation: operation.clone(),
            variables: variables.clone(),
            status: 0,
        });
        shared.stalled.fetch_add(1, Ordering::SeqCst);
        // Held until the client goes away or the fake stops.
        std::future::pending::<()>().await;
    }
    let (status, response) = if mutation && faults.mutation_500_next > 0 {
        let failed = (StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error").into_response();
        (StatusCode::INTERNAL_SERVER_ERROR, failed)
    } else {
        answer(&shared, &faults, &headers, &operation, &variables)
    };
    let (status, response) =
        if mutation && faults.apply_then_500_next > 0 && status == StatusCode::OK {
            let lost = (StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error").into_response();
            (StatusCode::INTERNAL_SERVER_ERROR, lost)
        } else {
            (status, response)
        };
    lock(&shared.log).push(Received {
        operation,
        variables,
        status: status.as_u16(),
    });
    pending.answered = true;
    response
}

fn answer(
    shared: &Shared,
    faults: &FakeFaults,
    headers: &HeaderMap,
    operation: &str,
    vars: &Value,
) -> (StatusCode, Response) {
    let token = headers
        .get("X-Shopify-Access-Token")
        .and_then(|v| v.to_str().ok());
    if token != Some(shared.token.as_str()) {
        let body = json!({"errors": "[API] Invalid API key or access token (unrecognized login or wrong password)"});
        return (
            StatusCode::UNAUTHORIZED,
            (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response(),
        );
    }
    if faults.down || faults.status_500_next > 0 {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            (StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error").into_response(),
        );
    }
    if faults.status_429_next > 0 {
        let mut r = (
            StatusCode::TOO_MANY_REQUESTS,
            "Exceeded 2 calls per second for api client.",
        )
            .into_response();
        if let Ok(v) = format!("{}", faults.retry_after_secs).parse() {
            r.headers_mut().insert("Retry-After", v);
        }
        return (StatusCode::TOO_MANY_REQUESTS, r);
    }
    let mut store = lock(&shared.store);
    let elapsed = store.bucket_at.elapsed().as_secs_f64();
    store.bucket = (store.bucket + elapsed * RESTORE).min(MAX_POINTS);
    store.bucket_at = Instant::now();
    let cost = 10.0;
    let throttle = |available: f64, actual: Option<f64>| {
        json!({"cost": {"requestedQueryCost": cost, "actualQueryCost": actual,
            "throttleStatus": {"maximumAvailable": MAX_POINTS, "currentlyAvailable": available, "restoreRate": RESTORE}}})
    };
    if faults.throttle_next > 0 || store.bucket < cost {
        let body = json!({
            "errors": [{"message": "Throttled", "extensions": {"code": "THROTTLED", "documentation": "https://shopify.dev/api/usage/rate-limits"}}],
            "extensions": throttle(store.bucket.min(cost - 1.0).max(0.0), None),
        });
        return (StatusCode::OK, axum::Json(body).into_response());
    }
    store.bucket -= cost;
    let data = run(&mut store, operation, vars);
    let body = match data {
        Ok(data) => json!({"data": data, "extensions": throttle(store.bucket, Some(cost))}),
        Err(message) => {
            json!({"errors": [{"message": message}], "extensions": throttle(store.bucket, Some(cost))})
        }
    };
    (StatusCode::OK, axum::Json(body).into_response())
}

fn find<'a>(store: &'a mut Store, id: &str) -> Option<&'a mut Value> {
    store.orders.iter_mut().find(|o| o["id"] == id)
}

fn run(store: &mut Store, operation: &str, vars: &Value) -> Result<Value, String> {
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
}
