//! The Exotel transport's own per-message costs: `cargo bench --bench exotel`.
//! - inbound: one `media` message parsed and its base64 payload decoded (20 ms and 100 ms);
//! - outbound: bot audio queued, cut into a rule-sized chunk, and `media` + `mark` JSON written;
//! - barge-in: from the VAD's `SpeechConfirmed` published to `clear` serialized, queued audio
//!   dropped and `Interrupt` sent to every stage (the controller's path: the signal lane).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use caly::call::playout::Outbound;
use caly::engine::bus::{Bus, BusEvent, BusKind, SignalKind};
use caly::engine::frame::{Control, Event};
use caly::engine::pipeline::{Pipeline, PipelineOptions};
use caly::engine::registry::CompileOptions;
use caly::testing::{exotel_media_messages, signal};
use caly::transport::exotel::CHUNK_RULES;
use caly::transport::exotel::wire::{
    Inbound, decode_payload, write_clear, write_mark, write_media,
};
use criterion::{Criterion, criterion_group, criterion_main};

fn inbound(c: &mut Criterion) {
    let mut g = c.benchmark_group("exotel");
    for ms in [20usize, 100] {
        let pcm = signal::vowels(8000, ms as f32 / 1000.0);
        let msg = exotel_media_messages(&pcm, pcm.len(), "MZbench").remove(0);
        let mut buf = Vec::new();
        g.bench_function(format!("media_in_parse_base64/8k_{ms}ms"), |b| {
            b.iter(|| {
                let m = Inbound::parse(black_box(&msg)).unwrap();
                let media = m.media.unwrap();
                black_box(decode_payload(&media.payload, &mut buf).unwrap().len());
            })
        });
    }
}

fn outbound(c: &mut Criterion) {
    let mut g = c.benchmark_group("exotel");
    let bytes = vec![7u8; 3200];
    let mut out = Outbound::new(CHUNK_RULES, 8000, Duration::from_secs(120));
    let mut text = String::new();
    // Time moves on 200 ms per chunk, as it would with the caller hearing every chunk.
    let mut now = Instant::now();
    g.bench_function("chunk_out_media_and_mark_json/8k_200ms", |b| {
        b.iter(|| {
            out.push(black_box(&bytes), now);
            now += Duration::from_millis(200);
            let chunk = out.next_chunk(now).unwrap();
            write_media(&mut text, "MZbench", chunk.bytes);
            let mark = chunk.mark.len();
            write_mark(&mut text, "MZbench", "caly-1");
            black_box((text.len(), mark));
        })
    });
}

fn barge_in(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/pipelines/tone_bot.toml"
    ))
    .unwrap();
    let spec = caly::engine::spec::PipelineSpec::parse(&text, "tone_bot").unwrap();
    let graph = caly::engine::graph::Graph::compile(
        &spec,
        &caly::testing::registry(),
        &CompileOptions {
            source_rate: Some(8000),
        },
    )
    .unwrap();
    let _guard = rt.enter();
    let (bus, mut signals) = Bus::with_signals();
    let pipeline = Pipeline::start(
        Arc::clone(&graph),
        PipelineOptions {
            bus: Some(bus.clone()),
            ..PipelineOptions::default()
        },
    )
    .unwrap();
    let mut out = Outbound::new(CHUNK_RULES, 8000, Duration::from_secs(120));
    let mut text = String::new();
    let stage: Arc<str> = Arc::from("vad");
    let bot = vec![0u8; 16_000];
    c.benchmark_group("exotel")
        .bench_function("barge_in_decision_to_clear", |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let now = Instant::now();
                    out.push(&bot, now);
                    let _ = out.next_chunk(now);
                    let start = Instant::now();
                    bus.publish(BusEvent {
                        stage: Arc::clone(&stage),
                        kind: BusKind::Event(Event::SpeechConfirmed { at: Duration::ZERO }),
                        at: start.into_std(),
                    });
                    let signal = signals.try_recv().unwrap();
                    if matches!(&signal.kind, SignalKind::Event(e) if matches!(**e, Event::SpeechConfirmed { .. }))
                        && out.is_playing(start)
                    {
                        let heard = out.heard(start);
                        write_clear(&mut text, "MZbench");
                        black_box(text.len());
                        out.clear(start);
                        pipeline.control_all(&Control::Interrupt { heard });
                    }
                    total += start.elapsed();
                    // Let the stages take their Interrupt so the lanes never fill.
                    rt.block_on(tokio::task::yield_now());
                }
                total
            })
        });
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_millis(500));
    targets = inbound, outbound, barge_in
}
criterion_main!(benches);
