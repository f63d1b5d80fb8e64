//! The Shopify client against the fake store over real HTTP: lookups, throttling, 429s, 5xx,
//! mutations that must not be resent, the circuit breaker, bad tokens, timeouts.

use std::sync::Arc;
use std::time::Duration;

use caly::commerce::shop::{Shopify, ShopifyConfig, ShopifyError};
use caly::testing::fake_shop::FakeShopify;

async fn store() -> (FakeShopify, Arc<Shopify>) {
    let fake = FakeShopify::start("shpat_test").await.unwrap();
    let mut config = ShopifyConfig::new(fake.url(), "shpat_test");
    config.backoff_initial = Duration::from_millis(20);
    config.request_timeout = Duration::from_millis(800);
    let client = Shopify::new(config).unwrap();
    (fake, client)
}

#[tokio::test]
async fn orders_are_found_by_number_and_customers_by_phone() {
    let (_fake, shop) = store().await;
    let order = shop.order_by_number("1002").await.unwrap().unwrap();
    assert_eq!(order.name, "#1002");
    assert_eq!(
        order.fulfillments[0].display_status.as_deref(),
        Some("IN_TRANSIT")
    );
    assert_eq!(
        order.fulfillments[0].tracking[0].company.as_deref(),
        Some("BlueDart")
    );
    assert!(!order.unshipped());
    assert!(shop.order_by_number("9999").await.unwrap().is_none());
    let customer = shop
        .customer_by_phone("+919876543210")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(customer.display_name.as_deref(), Some("Asha Rao"));
    assert_eq!(
        customer.orders.first().map(|o| o.name.as_str()),
        Some("#1005")
    );
    assert!(
        shop.customer_by_phone("+910000000000")
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn throttled_answers_and_429s_are_retried_and_succeed() {
    let (fake, shop) = store().await;
    fake.faults(|f| f.throttle_next = 2);
    assert!(shop.order_by_number("1001").await.unwrap().is_some());
    fake.faults(|f| {
        f.status_429_next = 1;
        f.retry_after_secs = 0.1;
    });
    assert!(shop.order_by_number("1001").await.unwrap().is_some());
    let statuses: Vec<u16> = fake.log().iter().map(|r| r.status).collect();
    assert_eq!(
        statuses,
        [200, 200, 200, 429, 200],
        "THROTTLED comes as 200"
    );
    assert_eq!(
        shop.stats
            .throttled
            .load(std::sync::atomic::Ordering::Relaxed),
        3
    );
}

#[tokio::test]
async fn server_errors_beyond_the_budget_are_an_honest_failure() {
    let (fake, shop) = store().await;
    fake.faults(|f| f.status_500_next = 1);
    assert!(
        shop.order_by_number("1001").await.unwrap().is_some(),
        "one 500 is retried"
    );
    fake.faults(|f| f.down = true);
    let err = shop.order_by_number("1001").await.unwrap_err();
    assert!(matches!(err, ShopifyError::Unavailable(_)), "{err:?}");
    assert_eq!(fake.log().iter().filter(|r| r.status == 500).count(), 1 + 3);
}

#[tokio::test]
async fn a_mutation_that_failed_ambiguously_is_not_resent() {
    let (fake, shop) = store().await;
    let order = shop.order_by_number("1001").await.unwrap().unwrap();
    fake.faults(|f| f.status_500_next = 1);
    let err = shop.cancel_order(&order.id, "test").await.unwrap_err();
    assert!(matches!(err, ShopifyError::Uncertain(_)), "{err:?}");
    let cancels = fake
        .log()
        .iter()
        .filter(|r| r.operation == "OrderCancel")
        .count();
    assert_eq!(cancels, 1, "sent once, never blindly again");
    // Throttling is different: nothing ran, so the mutation goes again.
    fake.faults(|f| f.throttle_next = 1);
    let job = shop.cancel_order(&order.id, "test").await.unwrap();
    assert!(shop.job_done(&job.id).await.unwrap());
    assert_eq!(fake.succeeded("OrderCancel"), 2);
    let again = shop.cancel_order(&order.id, "test").await.unwrap_err();
    assert!(
        matches!(again, ShopifyError::Rejected(ref m) if m.contains("already")),
        "{again:?}"
    );
}

#[tokio::test]
async fn the_breaker_opens_after_repeated_failures_and_closes_after_a_success() {
    let fake = FakeShopify::start("shpat_test").await.unwrap();
    let mut config = ShopifyConfig::new(fake.url(), "shpat_test");
    config.backoff_initial = Duration::from_millis(5);
    config.max_attempts = 1;
    config.breaker_failures = 3;
    config.breaker_cooldown = Duration::from_millis(300);
    let shop = Shopify::new(config).unwrap();
    fake.faults(|f| f.down = true);
    for _ in 0..3 {
        assert!(shop.order_by_number("1001").await.is_err());
    }
    let sent = fake.log().len();
    let err = shop.order_by_number("1001").await.unwrap_err();
    assert!(matches!(err, ShopifyError::Unavailable(ref m) if m.contains("recent failures")));
    assert_eq!(fake.log().len(), sent, "an open circuit sends nothing");
    fake.faults(|f| f.down = false);
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert!(shop.order_by_number("1001").await.unwrap().is_some());
    assert!(shop.order_by_number("1002").await.unwrap().is_some());
}

#[tokio::test]
async fn a_wrong_token_is_unauthorized_and_not_retried() {
    let fake = FakeShopify::start("shpat_right").await.unwrap();
    let shop = Shopify::new(ShopifyConfig::new(fake.url(), "shpat_wrong")).unwrap();
    assert_eq!(
        shop.order_by_number("1001").await.unwrap_err(),
        ShopifyError::Unauthorized
    );
    assert_eq!(fake.log().len(), 1);
}

#[tokio::test]
async fn a_slow_store_times_out_within_the_budget() {
    let (fake, shop) = store().await;
    fake.faults(|f| f.delay = Duration::from_secs(3));
    let err = shop.order_by_number("1001").await.unwrap_err();
    assert_eq!(err, ShopifyError::Timeout);
}

#[tokio::test]
async fn returns_and_address_updates_change_the_store() {
    let (fake, shop) = store().await;
    let delivered = shop.order_by_number("1003").await.unwrap().unwrap();
    assert!(delivered.delivered());
    let id = shop
        .request_return(&delivered, "SIZE_TOO_SMALL", "too small")
        .await
        .unwrap();
    assert!(id.starts_with("gid://shopify/Return/"));
    let open = shop.order_by_number("1001").await.unwrap().unwrap();
    let input = serde_json::json!({"id": open.id, "shippingAddress": {"address1": "4 Park Street",
        "city": "Kolkata", "zip": "700016", "countryCode": "IN"}});
    shop.update_order(input).await.unwrap();
    assert_eq!(
        fake.order("#1001").unwrap()["shippingAddress"]["zip"],
        "700016"
    );
    let shipped = shop.order_by_number("1002").await.unwrap().unwrap();
    let input = serde_json::json!({"id": shipped.id, "shippingAddress": {"address1": "x",
        "city": "y", "zip": "700016", "countryCode": "IN"}});
    assert!(matches!(
        shop.update_order(input).await.unwrap_err(),
        ShopifyError::Rejected(_)
    ));
}
