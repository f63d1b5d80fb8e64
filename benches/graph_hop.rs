//! Graph-hop latency: one 20 ms chunk pushed into each of N concurrent pipelines
//! (transport → caller → ring → sink), timed until every sink has it. N = 1, 100, 1000.
//! `cargo bench --bench graph_hop`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use caly::engine::bus::BusKind;
use caly::engine::frame::{Frame, Packet};
use caly::engine::pipeline::{Pipeline, PipelineOptions};
use caly::engine::registry::CompileOptions;
use caly::engine::spec::PipelineSpec;
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};

const GRAPH: &str = r#"
[pipeline]
name = "hop"
[stages.caller]
kind = "call_audio"
[stages.decode]
kind = "decode"
[stages.sink]
kind = "blackhole"
announce = true
ring = { capacity_ms = 200, when_full = "drop_oldest" }
"#;

fn hop(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let spec = PipelineSpec::parse(GRAPH, "hop").unwrap();
    let graph = caly::engine::graph::Graph::compile(
        &spec,
        &caly::testing::registry(),
        &CompileOptions::default(),
    )
    .unwrap();
    let mut group = c.benchmark_group("graph_hop");
    group.sample_size(20);
    for n in [1usize, 100, 1000] {
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, &n| {
            let graph = Arc::clone(&graph);
            b.iter_custom(|iters| {
                let graph = Arc::clone(&graph);
                rt.block_on(async move {
                    let mut calls = Vec::with_capacity(n);
                    for _ in 0..n {
                        let mut p = Pipeline::start(Arc::clone(&graph), PipelineOptions::default())
                            .unwrap();
                        let source = p.take_source("caller").unwrap();
                        let bus = p.bus().subscribe();
                        calls.push((p, source, bus));
                    }
                    let chunk = vec![0u8; 320];
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let start = Instant::now();
                        for (_, source, _) in calls.iter_mut() {
                            source.push(Frame::Packet(Packet { bytes: &chunk }));
                        }
                        for (_, _, bus) in calls.iter_mut() {
                            loop {
                                if let Ok(e) = bus.recv().await
                                    && matches!(e.kind, BusKind::Consumed { .. })
                                {
                                    break;
                                }
                            }
                        }
                        total += start.elapsed();
                    }
                    total
                })
            })
        });
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_millis(500));
    targets = hop
}
criterion_main!(benches);
