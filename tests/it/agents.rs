//! Agents against the fake store over real HTTP: each agent's happy path, throttling, outages,
//! idempotency, and runs cancelled with their call.

use std::sync::Arc;
use std::time::Duration;

use caly::commerce::agents::{ActionStatus, AgentConfig, AgentName, Args, Orchestrator};
use caly::commerce::shop::{Shopify, ShopifyConfig};
use caly::engine::bus::{Bus, BusKind};
use caly::engine::frame::Event;
use caly::engine::pipeline::{Outcome, Pipeline, PipelineOptions};
use caly::engine::registry::CompileOptions;
use caly::engine::stage::Services;
use caly::intent::entities::Entities;
use caly::stages::realtime::RealtimeEndpoint;
use caly::testing::fake_shop::FakeShopify;
use caly::testing::within;

use crate::helpers::compile_with;

async fn store() -> (FakeShopify, Arc<Shopify>) {
    let fake = FakeShopify::start("shpat_t").await.unwrap();
    let mut config = ShopifyConfig::new(fake.url(), "shpat_t");
    config.backoff_initial = Duration::from_millis(20);
    (fake, Shopify::new(config).unwrap())
}

fn agents(shop: &Arc<Shopify>, caller: Option<&str>) -> Arc<Orchestrator> {
    let config = AgentConfig {
        confirm_wait: Duration::from_millis(100),
        ..AgentConfig::default()
    };
    Orchestrator::new(Some(Arc::clone(shop)), "CAtest", caller, config)
}

fn order(n: &str) -> Args {
    Args {
        order_number: Some(n.into()),
        ..Args::default()
    }
}

#[tokio::test]
async fn order_status_reads_the_shipment_and_finds_orders_by_phone() {
    let (_fake, shop) = store().await;
    let o = agents(&shop, None);
    let out = o.run(AgentName::OrderStatus, order("1002")).await;
    assert_eq!(out.status, ActionStatus::Done);
    assert!(
        out.message.contains("BlueDart") && out.message.contains("2026-11-28"),
        "{}",
        out.message
    );
    let out = o.run(AgentName::OrderStatus, order("1003")).await;
    assert!(
        out.message.contains("delivered on 2026-11-20"),
        "{}",
        out.message
    );
    // No number: the caller's phone (as Exotel gives it) finds their latest order.
    let o = agents(&shop, Some("09876543210"));
    let out = o.run(AgentName::OrderStatus, Args::default()).await;
    assert_eq!(out.order.as_deref(), Some("#1005"), "{out:?}");
    // Unknown caller, no number: ask for it.
    let o = agents(&shop, Some("+919000000000"));
    let out = o.run(AgentName::OrderStatus, Args::default()).await;
    assert_eq!(out.status, ActionStatus::NeedsInfo);
    assert!(
        out.message.contains("…0000"),
        "only the last digits: {}",
        out.message
    );
    let out = o.run(AgentName::OrderStatus, order("4242")).await;
    assert_eq!(out.status, ActionStatus::NeedsInfo);
}

#[tokio::test]
async fn an_order_number_heard_earlier_serves_later_requests() {
    let (_fake, shop) = store().await;
    let o = agents(&shop, None);
    o.heard(&Entities {
        order_id: Some("1004".into()),
        ..Entities::default()
    });
    let out = o.run(AgentName::RefundStatus, Args::default()).await;
    assert_eq!(out.order.as_deref(), Some("#1004"));
    assert!(out.message.contains("₹799"), "{}", out.message);
    let out = o.run(AgentName::RefundStatus, order("1005")).await;
    assert!(out.message.contains("₹500 of ₹2499"), "{}", out.message);
}

#[tokio::test]
async fn destructive_agents_act_once_after_yes() {
    let (fake, shop) = store().await;
    let o = agents(&shop, None);
    // Cancel.
    let out = o.run(AgentName::CancelOrder, order("1001")).await;
    assert_eq!(out.status, ActionStatus::NeedsConfirmation);
    assert!(o.affirmed("haan ji", None).is_some());
    let out = o.run(AgentName::CancelOrder, order("1001")).await;
    assert_eq!(out.status, ActionStatus::Done, "{out:?}");
    let again = o.run(AgentName::CancelOrder, order("1001")).await;
    assert_eq!(
        (again.status, &again.message),
        (out.status, &out.message),
        "the first outcome, again"
    );
    assert_eq!(fake.succeeded("OrderCancel"), 1);
    // Cancelling what has shipped is refused before any question.
    let out = o.run(AgentName::CancelOrder, order("1002")).await;
    assert_eq!(out.status, ActionStatus::Refused);
    // Return of a delivered order.
    let args = Args {
        reason: Some("size chhota hai".into()),
        ..order("1003")
    };
    assert_eq!(
        o.run(AgentName::ReturnRequest, args.clone()).await.status,
        ActionStatus::NeedsConfirmation
    );
    o.affirmed("haan ji", None);
    let out = o.run(AgentName::ReturnRequest, args).await;
    assert_eq!(out.status, ActionStatus::Done, "{out:?}");
    let sent = fake
        .log()
        .into_iter()
        .find(|r| r.operation == "ReturnRequest")
        .unwrap();
    assert_eq!(
        sent.variables["input"]["returnLineItems"][0]["returnReason"],
        "SIZE_TOO_SMALL"
    );
    // Address change of an unshipped order (a fresh call: #1001 is cancelled in this one).
    let (fake, shop) = store().await;
    let o = agents(&shop, None);
    let args = Args {
        address: Some("4 Park Street".into()),
        city: Some("Kolkata".into()),
        pincode: Some("700016".into()),
        ..order("1001")
    };
    assert_eq!(
        o.run(AgentName::AddressChange, args.clone()).await.status,
        ActionStatus::NeedsConfirmation
    );
    o.affirmed("haan ji", None);
    let out = o.run(AgentName::AddressChange, args).await;
    assert_eq!(out.status, ActionStatus::Done, "{out:?}");
    assert_eq!(
        fake.order("#1001").unwrap()["shippingAddress"]["city"],
        "Kolkata"
    );
    assert_eq!(fake.succeeded("OrderUpdate"), 1);
}

#[tokio::test]
async fn reschedule_and_handover_need_no_yes() {
    let (fake, shop) = store().await;
    let o = agents(&shop, None);
    let args = Args {
        preferred_date: Some("Saturday".into()),
        ..order("1002")
    };
    let out = o.run(AgentName::RescheduleDelivery, args.clone()).await;
    assert_eq!(out.status, ActionStatus::Done, "{out:?}");
    let again = o.run(AgentName::RescheduleDelivery, args).await;
    assert_eq!((again.status, &again.message), (out.status, &out.message));
    assert_eq!(fake.succeeded("OrderUpdate"), 1, "noted once");
    assert!(
        fake.order("#1002").unwrap()["note"]
            .as_str()
            .unwrap()
            .contains("Saturday")
    );
    let out = o.run(AgentName::TalkToHuman, Args::default()).await;
    assert_eq!(out.status, ActionStatus::Done);
}

/// Requests of `operation` the fake store received, whatever it answered.
fn sent(fake: &FakeShopify, operation: &str) -> usize {
    fake.log()
        .iter()
        .filter(|r| r.operation == operation)
        .count()
}

#[tokio::test]
async fn an_uncertain_reschedule_is_looked_up_and_only_what_the_store_has_is_reported() {
    // The store wrote the note and lost its answer: looked up, reported done, never resent.
    let (fake, shop) = store().await;
    let o = agents(&shop, None);
    fake.faults(|f| f.apply_then_500_next = 1);
    let args = Args {
        preferred_date: Some("Sunday".into()),
        ..order("1002")
    };
    let out = o.run(AgentName::RescheduleDelivery, args.clone()).await;
    assert_eq!(out.status, ActionStatus::Done, "{out:?}");
    assert_eq!(sent(&fake, "OrderUpdate"), 1, "one mutation, not resent");
    let note = fake.order("#1002").unwrap()["note"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(note.matches("Sunday").count(), 1, "{note}");
    let again = o.run(AgentName::RescheduleDelivery, args).await;
    assert_eq!(
        (again.status, &again.message),
        (out.status, &out.message),
        "remembered"
    );
    assert_eq!(sent(&fake, "OrderUpdate"), 1);

    // The store failed before writing: an honest failure, nothing claimed.
    let (fake, shop) = store().await;
    let o = agents(&shop, None);
    fake.faults(|f| f.mutation_500_next = 1);
    let args = Args {
        preferred_date: Some("Monday".into()),
        ..order("1002")
    };
    let out = o.run(AgentName::RescheduleDelivery, args).await;
    assert_ne!(out.status, ActionStatus::Done, "{out:?}");
    assert_eq!(sent(&fake, "OrderUpdate"), 1, "one mutation, not resent");
    let note = fake.order("#1002").unwrap()["note"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(!note.contains("Monday"), "{note}");
}

#[tokio::test]
async fn an_uncertain_return_is_looked_up_and_a_second_call_is_told_the_return_is_open() {
    let (fake, shop) = store().await;
    let args = Args {
        reason: Some("wrong size".into()),
        ..order("1003")
    };
    // The store created the return and lost its answer.
    let first = agents(&shop, None);
    assert_eq!(
        first
            .run(AgentName::ReturnRequest, args.clone())
            .await
            .status,
        ActionStatus::NeedsConfirmation
    );
    first.affirmed("haan ji", None);
    fake.faults(|f| f.apply_then_500_next = 1);
    let out = first.run(AgentName::ReturnRequest, args.clone()).await;
    assert_eq!(out.status, ActionStatus::Done, "{out:?}");
    assert_eq!(sent(&fake, "ReturnRequest"), 1, "one mutation, not resent");
    // The caller phones back: another call's agents find the open return and make no second.
    let second = agents(&shop, None);
    let out = second.run(AgentName::ReturnRequest, args).await;
    assert_eq!(out.status, ActionStatus::Done, "{out:?}");
    assert!(
        out.message.contains("already has a return"),
        "{}",
        out.message
    );
    assert_eq!(sent(&fake, "ReturnRequest"), 1, "still one return");
}

#[tokio::test]
async fn two_different_address_changes_are_two_actions_with_their_own_keys() {
    let (fake, shop) = store().await;
    let o = agents(&shop, None);
    let mut keys = Vec::new();
    for (street, pincode) in [("4 Park Street", "700016"), ("12 MG Road", "560001")] {
        let args = Args {
            address: Some(street.into()),
            pincode: Some(pincode.into()),
            ..order("1001")
        };
        let asked = o.run(AgentName::AddressChange, args.clone()).await;
        assert_eq!(asked.status, ActionStatus::NeedsConfirmation);
        o.affirmed("haan ji", None);
        let out = o.run(AgentName::AddressChange, args).await;
        assert_eq!(out.status, ActionStatus::Done, "{out:?}");
        assert_eq!(
            asked.key, out.key,
            "the question and the change are one action"
        );
        keys.push(out.key.unwrap_or_default());
    }
    for key in &keys {
        assert!(key.contains("address_change:#1001:"), "{keys:?}");
        assert!(
            !["700016", "560001", "park", "mg road"]
                .iter()
                .any(|part| key.contains(part)),
            "a key holds no part of the address: {keys:?}"
        );
    }
    assert_ne!(keys[0], keys[1]);
    assert_eq!(fake.succeeded("OrderUpdate"), 2);
    // The key is for the record only: the model never sees it.
    let out = o
        .run(
            AgentName::AddressChange,
            Args {
                address: Some("12 MG Road".into()),
                pincode: Some("560001".into()),
                ..order("1001")
            },
        )
        .await;
    assert!(out.key.is_some());
    assert!(
        !out.to_tool_output().contains("CAtest:"),
        "{}",
        out.to_tool_output()
    );
}

#[tokio::test]
async fn throttling_and_429_are_retried_and_the_answer_still_comes() {
    let (fake, shop) = store().await;
    let o = agents(&shop, None);
    fake.faults(|f| {
        f.throttle_next = 1;
        f.status_429_next = 0;
    });
    assert_eq!(
        o.run(AgentName::OrderStatus, order("1002")).await.status,
        ActionStatus::Done
    );
    fake.faults(|f| {
        f.status_429_next = 2;
        f.retry_after_secs = 0.05;
    });
    assert_eq!(
        o.run(AgentName::OrderStatus, order("1002")).await.status,
        ActionStatus::Done
    );
}

#[tokio::test]
async fn an_outage_beyond_the_retry_budget_gives_an_honest_answer() {
    let (fake, shop) = store().await;
    let o = agents(&shop, None);
    fake.faults(|f| f.down = true);
    let out = o.run(AgentName::OrderStatus, order("1002")).await;
    assert_eq!(out.status, ActionStatus::Failed);
    assert!(
        out.message.contains("can't reach the store"),
        "{}",
        out.message
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_ending_mid_run_cancels_the_run() {
    let (fake, shop) = store().await;
    fake.faults(|f| f.delay = Duration::from_secs(3));
    let text = "[pipeline]\nname = \"agents\"\n[stages.said]\nkind = \"say_lines\"\nlines = [\"order 1002 kahan hai\"]\n[stages.intent]\nkind = \"classify_intent\"\n[stages.actions]\nkind = \"agent\"\nagents = [\"order_status\"]\nact_on_intents = true\n";
    let graph = compile_with(text, CompileOptions::default());
    let bus = Bus::new();
    let mut rx = bus.subscribe();
    let services = Services::new()
        .with(RealtimeEndpoint {
            url: String::new(),
            api_key: None,
            simulator: true,
        })
        .with(shop);
    let mut pipeline = Pipeline::start(
        graph,
        PipelineOptions {
            bus: Some(bus),
            services: Some(Arc::new(services)),
            ..PipelineOptions::default()
        },
    )
    .unwrap();
    // The lines end at once, so the call ends while the store is still answering.
    let outcome = within(
        Duration::from_secs(10),
        "the call to end",
        pipeline.finished(),
    )
    .await;
    assert_eq!(outcome, Outcome::Completed);
    assert!(
        fake.log().is_empty(),
        "the store had not answered when the call ended"
    );
    let mut intents = 0;
    while let Ok(e) = rx.try_recv() {
        match e.kind {
            BusKind::Event(Event::ActionTaken { .. }) => panic!("a cancelled run reported"),
            BusKind::Event(Event::IntentDetected { .. }) => intents += 1,
            _ => {}
        }
    }
    assert_eq!(intents, 1, "the run was started");
}
