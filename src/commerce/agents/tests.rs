//! Orchestrator pieces that need no store.

use super::*;
use crate::vocab::Intent;

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
        assert_eq!(crate::commerce::catalog::entry(a).tool().name, a.name());
    }
    assert_eq!(AgentName::for_intent(Intent::Affirm), None);
}

/// A call's agents with no store, waiting briefly for a yes.
fn without_a_store() -> Arc<Orchestrator> {
    let config = AgentConfig {
        confirm_wait: Duration::from_millis(20),
        ..AgentConfig::default()
    };
    Orchestrator::new(None, "CA1", None, config)
}

#[tokio::test]
async fn a_yes_confirms_only_the_action_proposed_before_it() {
    let o = without_a_store();
    assert!(
        o.affirmed("haan", None).is_none(),
        "nothing proposed: a yes confirms nothing"
    );
    let key = o.key(AgentName::CancelOrder, "#1001", None);
    assert_eq!(
        o.confirmed(&key, AgentName::CancelOrder, &Args::default())
            .await,
        None
    );
    assert_eq!(
        o.affirmed("haan ji, kar dijiye", None).map(|(a, _)| a),
        Some(AgentName::CancelOrder)
    );
    assert_eq!(
        o.confirmed(&key, AgentName::CancelOrder, &Args::default())
            .await
            .as_deref(),
        Some("haan ji, kar dijiye"),
        "confirmed, by those words"
    );
    // Another action is a new proposal, not covered by that yes.
    let other = o.key(AgentName::CancelOrder, "#1002", None);
    assert_eq!(
        o.confirmed(&other, AgentName::CancelOrder, &Args::default())
            .await,
        None
    );
    assert_eq!(o.denied(), Some(AgentName::CancelOrder));
    assert!(o.affirmed("haan", None).is_none());
}

#[tokio::test]
async fn a_yes_from_the_turn_that_asked_for_the_action_does_not_confirm_it() {
    let o = without_a_store();
    let key = o.key(AgentName::CancelOrder, "#1001", None);
    // The model called the tool after the caller had begun 2 turns.
    let asked = Args {
        asked_in_turn: Some(2),
        ..Args::default()
    };
    assert_eq!(
        o.confirmed(&key, AgentName::CancelOrder, &asked).await,
        None
    );
    // The request itself ("haan ji, cancel kar do", turn 2), transcribed after the proposal.
    assert!(o.affirmed("haan ji, cancel kar do", Some(2)).is_none());
    assert!(o.affirmed("haan", Some(1)).is_none());
    assert_eq!(o.proposed(), Some(AgentName::CancelOrder), "still waiting");
    assert_eq!(
        o.confirmed(&key, AgentName::CancelOrder, &asked).await,
        None
    );
    // The answer to the bot's question is a later turn.
    assert!(o.affirmed("haan ji", Some(3)).is_some());
    assert_eq!(
        o.confirmed(&key, AgentName::CancelOrder, &asked)
            .await
            .as_deref(),
        Some("haan ji")
    );
}

#[tokio::test]
async fn without_a_store_agents_say_so() {
    let o = Orchestrator::new(None, "CA1", Some("+919876543210"), AgentConfig::default());
    let out = o.run(AgentName::OrderStatus, Args::default()).await;
    assert_eq!(out.status, ActionStatus::NotConfigured);
    assert!(out.message.contains("not connected"), "{}", out.message);
    let out = o.run(AgentName::TalkToHuman, Args::default()).await;
    assert_eq!(out.status, ActionStatus::Done);
}
