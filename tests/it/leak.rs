//! 2,000 sequential short calls through one server leave its task count and heap where they
//! started (measured: tokio's alive-task count of the runtime, and the heap this runtime's
//! threads hold according to the counting allocator).

use std::time::{Duration, Instant};

use caly::simulate::{ExotelClient, ServerMessage};
use caly::testing::{signal, within};

use crate::alloc::{track_this_thread, tracked_heap_bytes, tracked_runtime};
use crate::helpers::{TestApp, spawn_app, tone_bot};

async fn short_call(app: &mut TestApp, i: usize, url: &str, silence: &[i16]) {
    let mut c = ExotelClient::connect(url, None).await.unwrap();
    c.start(&format!("MZleak{i}"), &format!("CAleak{i}"), 8000)
        .await
        .unwrap();
    for _ in 0..3 {
        c.media(silence).await.unwrap();
    }
    c.dtmf('7').await.unwrap();
    c.stop().await.unwrap();
    // Exotel would close; wait for the server's side to be gone too.
    while let Some(m) = c.recv().await {
        if matches!(m, ServerMessage::Close(_)) {
            break;
        }
    }
    let report = app.report().await;
    assert_eq!(report.media_in, 3);
}

async fn settle(app: &TestApp) {
    within(Duration::from_secs(10), "calls to end", async {
        while !app.state.calls.is_empty() || app.state.session.metrics.calls_active.get() != 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}

#[test]
fn two_thousand_sequential_calls_leave_tasks_and_heap_at_baseline() {
    track_this_thread();
    let rt = tracked_runtime();
    let metrics = rt.metrics();
    rt.block_on(async {
        let mut app = spawn_app(&tone_bot(100), |_| {}).await;
        let url = app.url("sample-rate=8000");
        let silence = signal::silence(8000, 0.02);
        for i in 0..50 {
            short_call(&mut app, i, &url, &silence).await;
        }
        settle(&app).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let tasks_before = metrics.num_alive_tasks();
        let heap_before = tracked_heap_bytes();
        let started = Instant::now();
        for i in 0..2000 {
            short_call(&mut app, 1000 + i, &url, &silence).await;
        }
        let took = started.elapsed();
        settle(&app).await;
        let tasks_after = within(Duration::from_secs(5), "tasks to return to baseline", async {
            loop {
                let n = metrics.num_alive_tasks();
                if n <= tasks_before {
                    return n;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        let heap_after = tracked_heap_bytes();
        let growth = heap_after - heap_before;
        println!(
            "2000 calls in {:.1} s; alive tasks {tasks_before} -> {tasks_after}; heap {:.1} KiB -> {:.1} KiB ({:+} bytes)",
            took.as_secs_f64(),
            heap_before as f64 / 1024.0,
            heap_after as f64 / 1024.0,
            growth
        );
        assert!(tasks_after <= tasks_before);
        // Not one call's worth (≈200 KiB) is left behind, let alone 2,000.
        assert!(growth < 64 * 1024, "heap grew by {growth} bytes over 2000 calls");
        assert_eq!(
            caly::metrics::Metrics::get(&app.state.session.metrics.calls_ended, "outcome", "hangup"),
            2050
        );
    });
}
