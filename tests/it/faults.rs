//! Faults during live calls, all at once: eight calls through the server (Realtime simulator,
//! agents on a fake Shopify, records in SQLite); between their first and second turns every
//! Realtime socket that speaks next is dropped, Shopify throttles and fails, and the database
//! is locked for 10 s; then the server gets SIGTERM (as Railway sends it) while every call is
//! still connected. Every call must end cleanly and every turn, transcript line and call end
//! must be in the database afterwards.

use std::sync::Arc;
use std::time::{Duration, Instant};

use caly::call::CallEnd;
use caly::devtools::simulate::{ExotelClient, ServerMessage};
use caly::testing::within;
use sqlx::{Connection as _, Executor as _};
use tokio::sync::Barrier;

use crate::helpers::{TempDir, repo, spawn_app_with, take_a_turn, utterance};

const CALLS: usize = 8;
const DB_OUTAGE: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_survive_realtime_drops_shopify_faults_a_database_outage_and_sigterm() {
    let dir = TempDir::new("faults");
    let db_url = format!("sqlite://{}", dir.0.join("caly.db").display());
    let shop = caly::testing::fake_shop::FakeShopify::start("shpat_test")
        .await
        .unwrap();
    let endpoint = caly::stages::realtime::RealtimeEndpoint::from_env();
    let has_key = endpoint.api_key.is_some();
    let services = caly::engine::stage::Services::new().with(endpoint).with(
        caly::commerce::shop::Shopify::new(caly::commerce::shop::ShopifyConfig::new(
            shop.url(),
            "shpat_test",
        ))
        .unwrap(),
    );
    if has_key {
        eprintln!("skipped: OPENAI_API_KEY is set, so the server would call OpenAI");
        return;
    }
    // The calls are to last until SIGTERM: the script's goodbye turn must not end one.
    let pipeline = std::fs::read_to_string(repo("pipelines/default.toml"))
        .unwrap()
        .replace("hang_up_on_goodbye = true", "hang_up_on_goodbye = false");
    assert!(pipeline.contains("hang_up_on_goodbye = false"));
    let url = db_url.clone();
    let mut app = spawn_app_with(
        &pipeline,
        |a| {
            a.database_url = url;
            a.drain_grace_secs = 1;
        },
        services,
    )
    .await;
    let sim = Arc::clone(app.state.simulator.as_ref().unwrap());
    let pcm: Arc<[i16]> = utterance().into();
    let between_turns = Arc::new(Barrier::new(CALLS + 1));
    let faults_set = Arc::new(Barrier::new(CALLS + 1));
    let mut clients = tokio::task::JoinSet::new();
    for i in 0..CALLS {
        let (ws, pcm) = (app.url("sample-rate=8000"), Arc::clone(&pcm));
        let (between_turns, faults_set) = (Arc::clone(&between_turns), Arc::clone(&faults_set));
        clients.spawn(async move {
            let mut c = ExotelClient::connect(&ws, None).await.unwrap();
            c.start(&format!("MZfault{i}"), &format!("CAfault{i}"), 8000)
                .await
                .unwrap();
            take_a_turn(&mut c, &pcm).await;
            between_turns.wait().await;
            faults_set.wait().await;
            take_a_turn(&mut c, &pcm).await;
            // Stay on the line until the server ends the call.
            within(
                Duration::from_secs(60),
                "the server to end the call",
                async {
                    loop {
                        match c.recv().await {
                            Some(ServerMessage::Mark(name)) => {
                                let _ = c.mark(&name).await;
                            }
                            Some(ServerMessage::Close(_)) | None => return,
                            Some(_) => {}
                        }
                    }
                },
            )
            .await;
        });
    }
    between_turns.wait().await;

    // The faults.
    let mut lock = sqlx::AnyConnection::connect(&format!("{db_url}?mode=rwc"))
        .await
        .unwrap();
    lock.execute("BEGIN EXCLUSIVE").await.unwrap();
    let locked_at = Instant::now();
    shop.faults(|f| {
        f.throttle_next = 3;
        f.status_429_next = 2;
        f.retry_after_secs = 0.2;
        f.status_500_next = 2;
    });
    let drops = 3;
    faults_set.wait().await;
    for _ in 0..drops {
        sim.faults(|f| f.drop_now = true);
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    // Second turns are being answered; SIGTERM once they are, while the calls are still up.
    let mut reports = Vec::new();
    let metrics = Arc::clone(&app.state.calls_config.metrics);
    within(Duration::from_secs(60), "second turns", async {
        loop {
            let text = metrics.render();
            let turns = caly::devtools::simulate::metric_sum(
                &text,
                "caly_voice_to_voice_sent_seconds_count",
            );
            if turns >= (2 * CALLS) as f64 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    app.begin_shutdown();
    let released = tokio::spawn(async move {
        tokio::time::sleep(DB_OUTAGE.saturating_sub(locked_at.elapsed())).await;
        lock.execute("COMMIT").await.unwrap();
        Instant::now()
    });
    for _ in 0..CALLS {
        reports.push(app.report().await);
    }
    while let Some(r) = clients.join_next().await {
        r.unwrap();
    }
    let stats = Arc::clone(app.state.recorder.stats());
    let reconnects = app.state.calls_config.metrics.realtime_reconnects.get();
    let shutdown_started = Instant::now();
    app.stopped().await.unwrap();
    let db_back = released.await.unwrap();
    let flushed_after = Instant::now().saturating_duration_since(db_back);

    // Every call ended cleanly, by the shutdown.
    for r in &reports {
        assert_eq!(r.end, CallEnd::Shutdown, "{r:?}");
        assert_eq!(r.turns.len(), 2, "{r:?}");
    }
    assert!(reconnects >= 1, "the dropped sockets were re-established");
    let shop_log = shop.log();
    assert!(!shop_log.is_empty(), "the agents reached the store");
    // Nothing lost: every call's end, turns and transcript are in the database.
    let store = caly::store::Store::connect(&db_url).await.unwrap();
    for r in &reports {
        let sid = r.call_sid.as_deref().unwrap();
        let d = store
            .call_detail(sid)
            .await
            .unwrap()
            .expect("call recorded");
        assert_eq!(d.call.end_reason.as_deref(), Some("shutdown"), "{sid}");
        assert_eq!(d.call.turns, 2, "{sid}");
        let bot = d.transcript.iter().filter(|s| s.speaker == "bot").count();
        let caller = d
            .transcript
            .iter()
            .filter(|s| s.speaker == "caller")
            .count();
        assert!(bot >= 2 && caller >= 2, "{sid}: {:?}", d.transcript);
    }
    assert_eq!(store.count_rows("turns").await.unwrap(), (2 * CALLS) as i64);
    assert_eq!(stats.dropped.load(std::sync::atomic::Ordering::Relaxed), 0);
    assert!(
        stats.failures.load(std::sync::atomic::Ordering::Relaxed) > 0,
        "the outage was felt"
    );
    println!(
        "faults: {CALLS} calls, {drops} Realtime drops -> {reconnects} reconnects, {} Shopify \
         requests under throttling/429/500, database locked {:.1} s; all calls ended by \
         SIGTERM with 2 turns each; records landed {:.2} s after the database came back \
         (shutdown took {:.1} s); 0 records dropped, {} failed writes retried",
        shop_log.len(),
        DB_OUTAGE.as_secs_f64(),
        flushed_after.as_secs_f64(),
        shutdown_started.elapsed().as_secs_f64(),
        stats.failures.load(std::sync::atomic::Ordering::Relaxed),
    );
    store.close().await;
}
