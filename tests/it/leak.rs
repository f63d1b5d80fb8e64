//! The soak: 10,000 sequential short calls, then 500 at once, through one server (call records
//! on) leave its task count and heap where they started (measured: tokio's alive-task count of
//! the runtime, and the heap allocated by this runtime's threads and not yet freed, according
//! to the counting allocator), with the heap's slope per call reported.

use std::time::{Duration, Instant};

use caly::devtools::simulate::{ExotelClient, ServerMessage};
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
        while !app.state.calls.is_empty() || app.state.calls_config.metrics.calls_active.get() != 0
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    // And their records written: records still queued are heap, not a leak.
    let written = &app.state.recorder.stats().written;
    within(Duration::from_secs(10), "records to be written", async {
        loop {
            let before = written.load(std::sync::atomic::Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(50)).await;
            let after = written.load(std::sync::atomic::Ordering::Relaxed);
            if app.state.recorder.queued() == 0 && before == after {
                // A batch may still be collecting (up to its 1 s delay) or committing.
                tokio::time::sleep(Duration::from_millis(1100)).await;
                if written.load(std::sync::atomic::Ordering::Relaxed) == after
                    && app.state.recorder.queued() == 0
                {
                    return;
                }
            }
        }
    })
    .await;
}

/// Calls in the sequential phase (`CALY_SOAK_CALLS`, default 10,000).
fn soak_calls() -> usize {
    std::env::var("CALY_SOAK_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000)
}

async fn wait_for_baseline(metrics: &tokio::runtime::RuntimeMetrics, tasks: usize) -> usize {
    within(
        Duration::from_secs(10),
        "tasks to return to baseline",
        async {
            loop {
                let n = metrics.num_alive_tasks();
                if n <= tasks {
                    return n;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        },
    )
    .await
}

/// The soak: 10,000 sequential calls (heap sampled every 1,000 for the slope), then 500 at
/// once, through one server with call records on; afterwards the runtime's tasks and the heap
/// its threads allocated are back at the baseline.
#[test]
fn soak_sequential_and_concurrent_calls_leave_tasks_and_heap_at_baseline() {
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
        let n = soak_calls();
        let mut points = vec![(0.0, 0.0)];
        let started = Instant::now();
        for i in 0..n {
            short_call(&mut app, 1000 + i, &url, &silence).await;
            if (i + 1) % 1000 == 0 {
                settle(&app).await;
                let growth = (tracked_heap_bytes() - heap_before) as f64;
                points.push(((i + 1) as f64, growth));
            }
        }
        let took = started.elapsed();
        settle(&app).await;
        let tasks_after = wait_for_baseline(&metrics, tasks_before).await;
        let growth = tracked_heap_bytes() - heap_before;
        let per_call = caly::devtools::simulate::slope(&points);
        println!(
            "soak: {n} sequential calls in {:.1} s; alive tasks {tasks_before} -> {tasks_after}; \
             heap {:+} bytes; slope {per_call:+.3} bytes/call over {} samples",
            took.as_secs_f64(),
            growth,
            points.len()
        );
        assert!(tasks_after <= tasks_before);
        // Not one call's worth (≈200 KiB) is left behind, and nothing grows per call.
        assert!(
            growth < 64 * 1024,
            "heap grew by {growth} bytes over {n} calls"
        );
        assert!(per_call < 8.0, "heap grows {per_call} bytes per call");

        // 500 at once, four times. The first burst leaves some capacity behind (the runtime's
        // task slab, pools; ~54 KiB here) which the next ones reuse; a leak of even 100 bytes
        // per call would add 50 KiB per burst and break the second bound.
        let mut after_burst = Vec::new();
        for burst in 0..4 {
            let started = Instant::now();
            let mut clients = tokio::task::JoinSet::new();
            for i in 0..500 {
                let (url, silence) = (url.clone(), silence.clone());
                clients.spawn(async move {
                    let mut c = ExotelClient::connect(&url, None).await.unwrap();
                    c.start(
                        &format!("MZburst{burst}x{i}"),
                        &format!("CAburst{burst}x{i}"),
                        8000,
                    )
                    .await
                    .unwrap();
                    for _ in 0..3 {
                        c.media(&silence).await.unwrap();
                    }
                    c.stop().await.unwrap();
                    while let Some(m) = c.recv().await {
                        if matches!(m, ServerMessage::Close(_)) {
                            break;
                        }
                    }
                });
            }
            let mut peak_tasks = 0;
            while let Some(r) = clients.join_next().await {
                peak_tasks = peak_tasks.max(metrics.num_alive_tasks());
                r.unwrap();
            }
            for _ in 0..500 {
                assert_eq!(app.report().await.media_in, 3);
            }
            settle(&app).await;
            let took = started.elapsed();
            let tasks_after = wait_for_baseline(&metrics, tasks_before).await;
            let growth = tracked_heap_bytes() - heap_before;
            println!(
                "soak: 500 concurrent calls in {:.1} s; alive tasks peaked at {peak_tasks}, back \
                 to {tasks_after}; heap vs baseline {growth:+} bytes",
                took.as_secs_f64()
            );
            assert!(tasks_after <= tasks_before);
            after_burst.push(growth);
        }
        assert!(
            after_burst.iter().all(|g| *g < 192 * 1024),
            "heap after each burst of 500 vs baseline: {after_burst:?}"
        );
        assert!(
            after_burst[3] - after_burst[0] < 32 * 1024,
            "the heap kept growing from burst to burst: {after_burst:?}"
        );
        assert_eq!(
            caly::metrics::Metrics::get(
                &app.state.calls_config.metrics.calls_ended,
                "outcome",
                "hangup"
            ),
            (50 + n + 2000) as u64
        );
    });
}
