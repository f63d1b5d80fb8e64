//! Ring cost: a 20 ms chunk pushed and popped on one thread, and handed between two tokio
//! tasks with async wake-ups. `cargo bench --bench ring`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use caly::engine::ring::{Item, RingConfig, WhenFull, ring};
use criterion::{Criterion, criterion_group, criterion_main};

fn config(when_full: WhenFull) -> RingConfig {
    RingConfig {
        capacity: 4800, // 200 ms at 24 kHz
        frame_capacity: 64,
        when_full,
        framed: false,
    }
}

fn same_thread(c: &mut Criterion) {
    let chunk = vec![7i16; 480];
    let mut g = c.benchmark_group("ring");
    for policy in [WhenFull::Block, WhenFull::DropOldest, WhenFull::DropNewest] {
        let (mut w, mut r) = ring::<i16>(config(policy), Arc::from("bench"));
        g.bench_function(format!("push_pop_20ms_24k/{}", policy.name()), |b| {
            b.iter(|| {
                w.push_data(black_box(&chunk));
                let mut n = 0;
                while let Some(Item::Data { data, .. }) = r.try_next() {
                    n += data.len();
                }
                black_box(n);
            })
        });
    }
}

fn across_tasks(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    c.benchmark_group("ring")
        .bench_function("task_to_task_20ms_24k", |b| {
            b.iter_custom(|iters| {
                rt.block_on(async move {
                    let (mut w, mut r) = ring::<i16>(config(WhenFull::Block), Arc::from("bench"));
                    let (mut back_w, mut back_r) =
                        ring::<i16>(config(WhenFull::Block), Arc::from("back"));
                    // An echo task: every chunk goes back, so each iteration is one round trip.
                    let echo = tokio::spawn(async move {
                        let mut buf = vec![0i16; 480];
                        while let Some(item) = r.next().await {
                            if let Item::Data { data, .. } = item {
                                let n = data.len();
                                buf[..n].copy_from_slice(data);
                                back_w.send_data(&buf[..n]).await;
                            }
                        }
                    });
                    let chunk = vec![1i16; 480];
                    let start = Instant::now();
                    for _ in 0..iters {
                        w.send_data(&chunk).await;
                        let mut got = 0;
                        while got < chunk.len() {
                            if let Some(Item::Data { data, .. }) = back_r.next().await {
                                got += data.len();
                            }
                        }
                    }
                    let elapsed = start.elapsed();
                    w.close().await;
                    echo.await.unwrap();
                    // One round trip is two hops.
                    elapsed / 2
                })
            })
        });
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_millis(500));
    targets = same_thread, across_tasks
}
criterion_main!(benches);
