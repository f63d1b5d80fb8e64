//! Orchestrator pieces that need no store.

use super::*;

#[test]
fn phones_become_e164_and_are_masked() {
    assert_eq!(e164("+91 98765 43210").as_deref(), Some("+919876543210"));
    assert_eq!(e164("09876543210").as_deref(), Some("+919876543210"));
    assert_eq!(e164("9876543210").as_deref(), Some("+919876543210"));
    assert_eq!(e164("12345"), None);
    assert_eq!(e164("5876543210"), None, "Indian mobiles start with 6-9");
    assert_eq!(masked_phone("+919876543210"), "…3210");
}

#[test]
fn tool_arguments_are_read_leniently() {
    let a = Args::from_json(r##"{"order_number": "#1001", "reason": "too small", "extra": 1}"##);
    assert_eq!(a.order_number.as_deref(), Some("1001"));
    assert_eq!(a.reason.as_deref(), Some("too small"));
    let a = Args::from_json(r#"{"order_number": 1002}"#);
    assert_eq!(a.order_number.as_deref(), Some("1002"));
    assert_eq!(Args::from_json("not json"), Args::default());
    assert_eq!(
        Args::from_json(r#"{"order_number": "  "}"#),
        Args::default()
    );
}

#[test]
fn slots_keep_the_latest_of_each_entity() {
    let mut s = Slots::default();
    s.absorb(&Entities {
        order_id: Some("1001".into()),
        ..Entities::default()
    });
    s.absorb(&Entities {
        pincode: Some("560001".into()),
        ..Entities::default()
    });
    assert_eq!(s.order_number.as_deref(), Some("1001"));
    assert_eq!(s.pincode.as_deref(), Some("560001"));
}

#[test]
fn agents_map_to_intents_and_tools_by_name() {
    for a in AGENTS {
        assert_eq!(AgentName::from_name(a.name()), Some(a));
        assert!(
            crate::stages::realtime_tools::known(a.name()),
            "{}",
            a.name()
        );
    }
    assert_eq!(AgentName::for_intent(Intent::Affirm), None);
    assert!(AgentName::CancelOrder.destructive() && !AgentName::OrderStatus.destructive());
}

#[tokio::test]
async fn a_yes_confirms_only_the_action_proposed_before_it() {
    let config = AgentConfig {
        confirm_wait: Duration::from_millis(50),
        ..AgentConfig::default()
    };
    let o = Orchestrator::new(None, "CA1", None, config);
    assert!(
        o.affirmed().is_none(),
        "nothing proposed: a yes confirms nothing"
    );
    let key = o.key(AgentName::CancelOrder, "#1001", None);
    assert!(
        !o.confirmed(&key, AgentName::CancelOrder, &Args::default())
            .await
    );
    assert_eq!(o.affirmed().map(|(a, _)| a), Some(AgentName::CancelOrder));
    assert!(
        o.confirmed(&key, AgentName::CancelOrder, &Args::default())
            .await
    );
    // Another action is a new proposal, not covered by that yes.
    let other = o.key(AgentName::CancelOrder, "#1002", None);
    assert!(
        !o.confirmed(&other, AgentName::CancelOrder, &Args::default())
            .await
    );
    assert_eq!(o.denied(), Some(AgentName::CancelOrder));
    assert!(o.affirmed().is_none());
}

#[tokio::test]
async fn without_a_store_agents_say_so() {
    let o = Orchestrator::new(None, "CA1", Some("+919876543210"), AgentConfig::default());
    let out = o.run(AgentName::OrderStatus, Args::default()).await;
    assert_eq!(out.status, Status::NotConfigured);
    assert!(out.message.contains("not connected"), "{}", out.message);
    let out = o.run(AgentName::TalkToHuman, Args::default()).await;
    assert_eq!(out.status, Status::Done);
}
