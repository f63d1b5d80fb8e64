//! The action ledger with every mutating agent against the fake store, on SQLite and (with
//! `TEST_DATABASE_URL`) PostgreSQL: a change is made once however often and by whomever it
//! is asked, two instances racing on one order make it once, an ambiguous failure is looked
//! up, a crash between the Shopify call and the row update is reconciled on restart. Every
//! test counts the mutations the store actually received.

use std::sync::Arc;
use std::time::Duration;

use caly::commerce::agents::{
    ActionStatus, AgentConfig, AgentName, Args, Orchestrator, Outcome, Reconciled, reconcile,
};
use caly::commerce::ledger::Actions;
use caly::commerce::shop::{Shopify, ShopifyConfig};
use caly::engine::stage::Services;
use caly::store::Store;
use caly::store::keys::Scope;
use caly::store::read::{ActionFilter, ActionRow};
use caly::testing::fake_shop::FakeShopify;
use caly::testing::within;
use serde_json::Value;

use crate::helpers::{TestDb, spawn_app_with, test_dbs, tone_bot};

/// The words that confirm a change in these tests.
const YES: &str = "haan ji, kar dijiye";

/// One mutating agent, asked for one change, and the Shopify mutation that makes it.
#[derive(Clone)]
struct Case {
    agent: AgentName,
    args: Args,
    mutation: &'static str,
}

fn on(order: &str) -> Args {
    Args {
        order_number: Some(order.into()),
        ..Args::default()
    }
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            agent: AgentName::CancelOrder,
            args: on("1001"),
            mutation: "OrderCancel",
        },
        Case {
            agent: AgentName::ReturnRequest,
            args: Args {
                reason: Some("size chhota hai".into()),
                ..on("1003")
            },
            mutation: "ReturnRequest",
        },
        Case {
            agent: AgentName::AddressChange,
            args: Args {
                address: Some("4 Park Street".into()),
                city: Some("Kolkata".into()),
                pincode: Some("700016".into()),
                ..on("1001")
            },
            mutation: "OrderUpdate",
        },
        Case {
            agent: AgentName::RescheduleDelivery,
            args: Args {
                preferred_date: Some("Saturday".into()),
                ..on("1002")
            },
            mutation: "OrderUpdate",
        },
    ]
}

async fn fake_store() -> (FakeShopify, Arc<Shopify>) {
    let fake = FakeShopify::start("shpat_t").await.unwrap();
    let mut config = ShopifyConfig::new(fake.url(), "shpat_t");
    config.backoff_initial = Duration::from_millis(20);
    (fake, Shopify::new(config).unwrap())
}

async fn open(db: &TestDb) -> Store {
    let store = Store::connect(&db.url).await.unwrap();
    store.migrate().await.unwrap();
    store
}

fn call(shop: &Arc<Shopify>, sid: &str, actions: &Arc<Actions>) -> Arc<Orchestrator> {
    let config = AgentConfig {
        confirm_wait: Duration::from_millis(50),
        job_polls: 0,
        ..AgentConfig::default()
    };
    Orchestrator::recorded(
        Some(Arc::clone(shop)),
        sid,
        &format!("record-{sid}"),
        None,
        config,
        Arc::clone(actions),
    )
}

/// Asks for the change, and says yes when asked.
async fn agreed(o: &Orchestrator, case: &Case) -> Outcome {
    let first = o.run(case.agent, case.args.clone()).await;
    if first.status != ActionStatus::NeedsConfirmation {
        return first;
    }
    assert!(o.affirmed(YES, None).is_some());
    o.run(case.agent, case.args.clone()).await
}

/// Requests of `operation` the store received, answered or not.
fn sent(fake: &FakeShopify, operation: &str) -> usize {
    fake.log()
        .iter()
        .filter(|r| r.operation == operation)
        .count()
}

/// The ledger's rows (changes, not answers) for `agent`.
async fn rows(store: &Store, agent: AgentName) -> Vec<ActionRow> {
    let filter = ActionFilter {
        action: Some(agent.name().into()),
        ..ActionFilter::default()
    };
    let page = store.list_actions(&filter, None, 100).await.unwrap();
    page.items
        .into_iter()
        .filter(|r| r.after.is_some())
        .collect()
}

fn destructive(agent: AgentName) -> bool {
    agent != AgentName::RescheduleDelivery
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_change_is_made_once_for_repeats_and_for_a_second_call() {
    for db in test_dbs().await {
        let store = open(&db).await;
        let actions = Actions::new(Arc::new(store.clone()));
        for case in cases() {
            let (fake, shop) = fake_store().await;
            let what = format!("{} {}", db.label, case.agent.name());
            let first = call(&shop, "CAfirst", &actions);
            let out = agreed(&first, &case).await;
            assert_eq!(out.status, ActionStatus::Done, "{what}: {out:?}");
            for _ in 0..2 {
                let again = first.run(case.agent, case.args.clone()).await;
                assert_eq!(
                    (again.status, &again.message),
                    (ActionStatus::Done, &out.message),
                    "{what}: the tool called again"
                );
            }
            // The caller phones back: the second call is told, nothing is redone.
            let second = call(&shop, "CAsecond", &actions);
            let told = second.run(case.agent, case.args.clone()).await;
            assert_eq!(told.status, ActionStatus::Done, "{what}: {told:?}");
            assert_eq!(sent(&fake, case.mutation), 1, "{what}: one mutation");
            // One row, filed under the first call, with its audit.
            let rows = rows(&store, case.agent).await;
            assert_eq!(rows.len(), 1, "{what}: {rows:?}");
            let row = &rows[0];
            assert_eq!(row.status, "done", "{what}");
            assert_eq!(row.call_id, "record-CAfirst", "{what}");
            assert_eq!(row.detail, out.message, "{what}");
            let expected_yes = destructive(case.agent).then(|| YES.to_owned());
            assert_eq!(row.confirmed_by, expected_yes, "{what}");
            let ids = row.shopify_ids.clone().unwrap_or_default();
            assert!(
                ids["order"]
                    .as_str()
                    .is_some_and(|id| id.starts_with("gid://shopify/Order/")),
                "{what}: {ids}"
            );
            assert!(row.before.is_some(), "{what}");
            // The store has the change once.
            match case.agent {
                AgentName::ReturnRequest => {
                    assert!(ids["return"].is_string(), "{what}: {ids}");
                }
                AgentName::RescheduleDelivery => {
                    let note = fake.order("#1002").unwrap()["note"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned();
                    assert_eq!(note.matches("Saturday").count(), 1, "{note}");
                }
                _ => {}
            }
            // A new ledger for the next case's orders (each case has a fresh store).
            clear_actions(&store).await;
        }
        store.close().await;
        db.drop_db().await;
    }
}

/// Empties the actions table between cases that reuse one database.
async fn clear_actions(store: &Store) {
    store.execute_admin("DELETE FROM actions").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_racing_on_one_order_make_one_change() {
    for db in test_dbs().await {
        for case in cases() {
            let (fake, shop) = fake_store().await;
            // Two servers on one database: nothing in memory is shared between them.
            let one = Actions::new(Arc::new(open(&db).await));
            let two = Actions::new(Arc::new(open(&db).await));
            let a = call(&shop, "CAone", &one);
            let b = call(&shop, "CAtwo", &two);
            for o in [&a, &b] {
                if destructive(case.agent) {
                    let asked = o.run(case.agent, case.args.clone()).await;
                    assert_eq!(asked.status, ActionStatus::NeedsConfirmation);
                    o.affirmed(YES, None);
                }
            }
            // Every answer from the store now takes a while: both runs are in flight at once.
            fake.faults(|f| f.delay = Duration::from_millis(300));
            let (x, y) = tokio::join!(
                a.run(case.agent, case.args.clone()),
                b.run(case.agent, case.args.clone())
            );
            let what = format!("{} {}: {x:?} / {y:?}", db.label, case.agent.name());
            assert_eq!(sent(&fake, case.mutation), 1, "{what}");
            let statuses = [x.status, y.status];
            assert!(statuses.contains(&ActionStatus::Done), "{what}");
            assert!(
                statuses
                    .iter()
                    .all(|s| matches!(s, ActionStatus::Done | ActionStatus::Pending)),
                "{what}"
            );
            let store = open(&db).await;
            let rows = rows(&store, case.agent).await;
            assert_eq!(rows.len(), 1, "{what}: {rows:?}");
            assert_eq!(rows[0].status, "done", "{what}");
            clear_actions(&store).await;
        }
        db.drop_db().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ambiguous_failure_is_looked_up_and_only_a_change_on_the_order_is_done() {
    let db = crate::helpers::sqlite_db();
    let store = open(&db).await;
    let actions = Actions::new(Arc::new(store.clone()));
    for case in cases() {
        let what = case.agent.name();
        // The store made the change and lost its answer: looked up, done, never resent.
        let (fake, shop) = fake_store().await;
        fake.faults(|f| f.apply_then_500_next = 1);
        let out = agreed(&call(&shop, "CAlost", &actions), &case).await;
        assert_eq!(out.status, ActionStatus::Done, "{what}: {out:?}");
        assert_eq!(sent(&fake, case.mutation), 1, "{what}");
        assert_eq!(rows(&store, case.agent).await[0].status, "done", "{what}");
        clear_actions(&store).await;

        // The store failed before making it: not done, and the claim is released, so the
        // caller asking again gets it made — once.
        let (fake, shop) = fake_store().await;
        fake.faults(|f| f.mutation_500_next = 1);
        let o = call(&shop, "CAfailed", &actions);
        let out = agreed(&o, &case).await;
        assert_eq!(out.status, ActionStatus::Failed, "{what}: {out:?}");
        assert_eq!(sent(&fake, case.mutation), 1, "{what}");
        assert_eq!(rows(&store, case.agent).await[0].status, "failed", "{what}");
        let out = agreed(&o, &case).await;
        assert_eq!(out.status, ActionStatus::Done, "{what}: {out:?}");
        assert_eq!(sent(&fake, case.mutation), 2, "{what}");
        assert_eq!(fake.succeeded(case.mutation), 1, "{what}");
        let statuses: Vec<String> = rows(&store, case.agent)
            .await
            .into_iter()
            .map(|r| r.status)
            .collect();
        assert_eq!(
            statuses,
            ["done", "failed"],
            "{what}: newest first, both kept"
        );
        clear_actions(&store).await;
    }
}

/// Starts the change, lets the store take the mutation (making it or not), and kills the run
/// before it hears back: the process died between the Shopify call and the row update.
async fn crash_mid_change(fake: &FakeShopify, o: Arc<Orchestrator>, case: &Case, applied: bool) {
    if destructive(case.agent) {
        let asked = o.run(case.agent, case.args.clone()).await;
        assert_eq!(asked.status, ActionStatus::NeedsConfirmation);
        o.affirmed(YES, None);
    }
    fake.faults(|f| f.stall_next_mutation = Some(applied));
    let (agent, args) = (case.agent, case.args.clone());
    let run = tokio::spawn(async move { o.run(agent, args).await });
    within(
        Duration::from_secs(10),
        "the mutation to reach the store",
        async {
            while fake.stalled() == 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        },
    )
    .await;
    run.abort();
    let _ = run.await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_cut_off_by_a_crash_is_reconciled_on_restart() {
    for db in test_dbs().await {
        for case in cases() {
            for applied in [true, false] {
                let what = format!("{} {} applied={applied}", db.label, case.agent.name());
                let (fake, shop) = fake_store().await;
                let before = Actions::new(Arc::new(open(&db).await));
                crash_mid_change(&fake, call(&shop, "CAcrash", &before), &case, applied).await;
                let store = open(&db).await;
                assert_eq!(
                    rows(&store, case.agent).await[0].status,
                    "pending",
                    "{what}"
                );
                // Restarted: rows older than the stale age are looked up on their orders.
                let after = Actions::with_stale(Arc::new(store.clone()), Duration::ZERO);
                let r = reconcile(&after, &shop).await.unwrap();
                let expected = Reconciled {
                    done: usize::from(applied),
                    failed: usize::from(!applied),
                    left: 0,
                };
                assert_eq!(r, expected, "{what}");
                let status = if applied { "done" } else { "failed" };
                assert_eq!(rows(&store, case.agent).await[0].status, status, "{what}");
                // The caller asks again: made now if it never was, never twice.
                let out = agreed(&call(&shop, "CAagain", &after), &case).await;
                assert_eq!(out.status, ActionStatus::Done, "{what}: {out:?}");
                assert_eq!(
                    sent(&fake, case.mutation),
                    if applied { 1 } else { 2 },
                    "{what}"
                );
                assert_eq!(
                    reconcile(&after, &shop).await.unwrap(),
                    Reconciled::default(),
                    "{what}: nothing left"
                );
                clear_actions(&store).await;
            }
        }
        db.drop_db().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_row_is_settled_by_the_next_attempt_on_its_order() {
    let db = crate::helpers::sqlite_db();
    let store = open(&db).await;
    let (fake, shop) = fake_store().await;
    let case = &cases()[0];
    crash_mid_change(
        &fake,
        call(&shop, "CAcrash", &Actions::new(Arc::new(store.clone()))),
        case,
        true,
    )
    .await;
    // The row is young, but the order already shows the cancellation: the look settles it.
    let live = Actions::new(Arc::new(store.clone()));
    let out = call(&shop, "CAnow", &live)
        .run(case.agent, case.args.clone())
        .await;
    assert_eq!(out.status, ActionStatus::Done, "{out:?}");
    assert_eq!(rows(&store, case.agent).await[0].status, "done");
    assert_eq!(sent(&fake, case.mutation), 1);

    // Not made, and still young: "being made right now", nothing sent.
    clear_actions(&store).await;
    let (fake, shop) = fake_store().await;
    crash_mid_change(&fake, call(&shop, "CAcrash2", &live), case, false).await;
    let out = agreed(&call(&shop, "CAsoon", &live), case).await;
    assert_eq!(out.status, ActionStatus::Pending, "{out:?}");
    assert_eq!(sent(&fake, case.mutation), 1);
    // Old enough to be abandoned: the next attempt finds the order unchanged and makes it.
    let later = Actions::with_stale(Arc::new(store.clone()), Duration::ZERO);
    let out = agreed(&call(&shop, "CAlater", &later), case).await;
    assert_eq!(out.status, ActionStatus::Done, "{out:?}");
    assert_eq!(fake.succeeded(case.mutation), 1);
    let statuses: Vec<String> = rows(&store, case.agent)
        .await
        .into_iter()
        .map(|r| r.status)
        .collect();
    assert_eq!(statuses, ["done", "failed"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_reconciles_at_start_up_and_shows_the_audit_over_rest() {
    for db in test_dbs().await {
        let store = open(&db).await;
        let (fake, shop) = fake_store().await;
        let before = Actions::new(Arc::new(store.clone()));
        // A return made and confirmed; a cancellation cut off by a crash after the store made it.
        let cases = cases();
        let out = agreed(&call(&shop, "CAreturn", &before), &cases[1]).await;
        assert_eq!(out.status, ActionStatus::Done);
        crash_mid_change(&fake, call(&shop, "CAcrash", &before), &cases[0], true).await;
        let key = store.create_api_key("audit", Scope::Read).await.unwrap();
        let services = Services::new()
            .with(Arc::clone(&shop))
            .with(Actions::with_stale(Arc::new(store.clone()), Duration::ZERO));
        let url = db.url.clone();
        let app = spawn_app_with(&tone_bot(400), |a| a.database_url = url, services).await;
        let http = reqwest::Client::new();
        let list = |agent: AgentName| {
            let request = http
                .get(format!(
                    "http://{}/v1/actions?action={}",
                    app.addr,
                    agent.name()
                ))
                .bearer_auth(&key.secret);
            async move {
                let body: Value = request.send().await.unwrap().json().await.unwrap();
                body
            }
        };
        within(
            Duration::from_secs(10),
            "the cancellation to be reconciled",
            async {
                while list(AgentName::CancelOrder).await["items"][0]["status"] != "done" {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        )
        .await;
        assert_eq!(sent(&fake, "OrderCancel"), 1, "{}", db.label);
        let body = list(AgentName::ReturnRequest).await;
        let row = &body["items"][0];
        assert_eq!(row["status"], "done", "{body}");
        assert_eq!(row["confirmed_by"], YES, "{body}");
        assert_eq!(row["after"]["return"], "SIZE_TOO_SMALL", "{body}");
        assert!(row["before"].is_object(), "{body}");
        assert!(row["shopify_ids"]["return"].is_string(), "{body}");
        assert!(row["shopify_ids"]["order"].is_string(), "{body}");
        drop(app);
        store.close().await;
        db.drop_db().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_calls_on_one_server_take_turns_on_an_order() {
    // One server: its calls about one order act one after the other, so the second finds the
    // first's change done (not "being made") and the store gets one mutation.
    let db = crate::helpers::sqlite_db();
    let store = open(&db).await;
    let actions = Actions::new(Arc::new(store.clone()));
    for case in cases() {
        let (fake, shop) = fake_store().await;
        let a = call(&shop, "CAone", &actions);
        let b = call(&shop, "CAtwo", &actions);
        for o in [&a, &b] {
            if destructive(case.agent) {
                assert_eq!(
                    o.run(case.agent, case.args.clone()).await.status,
                    ActionStatus::NeedsConfirmation
                );
                o.affirmed(YES, None);
            }
        }
        fake.faults(|f| f.delay = Duration::from_millis(300));
        let (x, y) = tokio::join!(
            a.run(case.agent, case.args.clone()),
            b.run(case.agent, case.args.clone())
        );
        let what = format!("{}: {x:?} / {y:?}", case.agent.name());
        assert_eq!(
            (x.status, y.status),
            (ActionStatus::Done, ActionStatus::Done),
            "{what}"
        );
        assert_eq!(sent(&fake, case.mutation), 1, "{what}");
        clear_actions(&store).await;
    }
}
