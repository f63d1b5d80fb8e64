//! The `realtime` stage's own costs: `cargo bench --bench realtime`.
//! - `append_json_base64`: 20 ms of caller audio (24 kHz pcm16, and 8 kHz μ-law) encoded as an
//!   `input_audio_buffer.append` event;
//! - `audio_delta_parse_decode`: one 100 ms `response.output_audio.delta` read (type peeked,
//!   payload borrowed) and its base64 decoded to PCM;
//! - `turn_*`: a reply asked for over a real loopback WebSocket to the Realtime simulator, through
//!   the stage, the resampler back to 8 kHz and `call_playback`, read where the transport would:
//!   `say_to_first_chunk` is the whole round trip (simulator included); `engine_share` is only
//!   Caly's part, from the first audio delta decoded to the first chunk at the playback outlet —
//!   the server ledger's `caly_turn_engine_seconds` without the transport.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use caly::devtools::realtime_sim::{ScriptTurn, Simulator, SimulatorConfig};
use caly::engine::bus::{Bus, BusKind};
use caly::engine::frame::{Control, Event};
use caly::engine::pipeline::{Pipeline, PipelineOptions, SinkHandle};
use caly::engine::registry::CompileOptions;
use caly::engine::stage::Services;
use caly::stages::realtime::RealtimeEndpoint;
use caly::stages::realtime::protocol::{AudioDelta, Peek, append_text, decode_audio};
use caly::testing::signal;
use criterion::{Criterion, criterion_group, criterion_main};
use tokio::sync::broadcast;

fn append(c: &mut Criterion) {
    let mut g = c.benchmark_group("realtime");
    let pcm16: Vec<u8> = signal::vowels(24_000, 0.02)
        .iter()
        .flat_map(|s| s.to_le_bytes())
        .collect();
    let ulaw = vec![0x55u8; 160];
    let mut b64 = String::new();
    for (name, bytes) in [("24k_pcm16_20ms", &pcm16), ("8k_mulaw_20ms", &ulaw)] {
        g.bench_function(format!("append_json_base64/{name}"), |b| {
            b.iter(|| black_box(append_text(black_box(bytes), &mut b64)))
        });
    }
}

fn delta(c: &mut Criterion) {
    let mut g = c.benchmark_group("realtime");
    let pcm16: Vec<u8> = signal::vowels(24_000, 0.1)
        .iter()
        .flat_map(|s| s.to_le_bytes())
        .collect();
    let message = serde_json::json!({
        "type": "response.output_audio.delta",
        "event_id": "event_bench",
        "response_id": "resp_bench",
        "item_id": "item_bench",
        "output_index": 0,
        "content_index": 0,
        "delta": STANDARD.encode(&pcm16),
    })
    .to_string();
    let (mut scratch, mut pcm) = (Vec::new(), Vec::new());
    g.bench_function("audio_delta_parse_decode/24k_pcm16_100ms", |b| {
        b.iter(|| {
            let text = black_box(message.as_str());
            let peek: Peek<'_> = serde_json::from_str(text).unwrap();
            assert_eq!(peek.kind, "response.output_audio.delta");
            let delta: AudioDelta<'_> = serde_json::from_str(text).unwrap();
            decode_audio(&delta.delta, false, &mut scratch, &mut pcm).unwrap();
            black_box(pcm.len())
        })
    });
}

const GRAPH: &str = r#"
[pipeline]
name = "realtime_bench"
[stages.caller]
kind = "call_audio"
[stages.decode]
kind = "decode"
[stages.resample]
kind = "resample"
sample_rate = 24000
[stages.voice]
kind = "realtime"
[stages.playback]
kind = "call_playback"
inputs = ["voice.audio"]
ring = { capacity_ms = 5000, when_full = "block" }
"#;

/// One reply: (say → first chunk at the outlet, first delta decoded → first chunk).
async fn one_turn(
    pipeline: &Pipeline,
    bus: &mut broadcast::Receiver<std::sync::Arc<caly::engine::bus::BusEvent>>,
    sink: &mut SinkHandle,
) -> (Duration, Duration) {
    let start = Instant::now();
    pipeline.control_all(&Control::Say("bench".into()));
    let mut model_audio = None;
    let mut first_chunk = None;
    let mut done = false;
    while first_chunk.is_none() || !done {
        tokio::select! {
            event = bus.recv() => match event {
                Ok(e) => match e.kind {
                    BusKind::Event(Event::ReplyAudioStarted { .. }) => model_audio = Some(e.at),
                    BusKind::Event(Event::ResponseDone { .. }) => done = true,
                    _ => {}
                },
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => panic!("bus closed: {e}"),
            },
            open = sink.ready() => {
                assert!(open, "playback ended");
                while sink.try_next().is_some() {
                    first_chunk.get_or_insert_with(Instant::now);
                }
            }
        }
    }
    // Drain the reply's tail so the next turn starts clean.
    while let Ok(open) = tokio::time::timeout(Duration::from_millis(30), sink.ready()).await {
        assert!(open, "playback ended");
        while sink.try_next().is_some() {}
    }
    let first_chunk = first_chunk.unwrap();
    let model_audio = model_audio.expect("ReplyAudioStarted on the bus");
    (
        first_chunk - start,
        first_chunk.saturating_duration_since(model_audio),
    )
}

fn turns(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let spec = caly::engine::spec::PipelineSpec::parse(GRAPH, "realtime_bench").unwrap();
    let graph = caly::engine::graph::Graph::compile(
        &spec,
        &caly::testing::registry(),
        &CompileOptions {
            source_rate: Some(8000),
        },
    )
    .unwrap();
    let _guard = rt.enter();
    let (_sim, pipeline, mut bus, mut sink) = rt.block_on(async {
        let config = SimulatorConfig {
            script: vec![ScriptTurn {
                user: "bench".into(),
                bot: "Ji, bataiye.".into(),
                bot_ms: 300,
                tool: None,
                more_tools: Vec::new(),
            }],
            ..SimulatorConfig::default()
        };
        let sim = Simulator::start(config).await.unwrap();
        let bus = Bus::new();
        let mut rx = bus.subscribe();
        let services = Services::new().with(RealtimeEndpoint {
            url: sim.url(),
            api_key: None,
            simulator: true,
        });
        let mut pipeline = Pipeline::start(
            graph,
            PipelineOptions {
                bus: Some(bus),
                services: Some(Arc::new(services)),
                ..PipelineOptions::default()
            },
        )
        .unwrap();
        let mut sink = pipeline.take_sink("playback").unwrap();
        // The first turn also waits for the session to be set up.
        let _ = one_turn(&pipeline, &mut rx, &mut sink).await;
        (sim, pipeline, rx, sink)
    });
    let mut g = c.benchmark_group("realtime");
    g.sample_size(30);
    for (name, engine_only) in [
        ("turn_say_to_first_chunk_loopback", false),
        ("turn_engine_share_delta_to_playback", true),
    ] {
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let (round_trip, engine) = one_turn(&pipeline, &mut bus, &mut sink).await;
                        total += if engine_only { engine } else { round_trip };
                    }
                    total
                })
            })
        });
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_millis(500));
    targets = append, delta, turns
}
criterion_main!(benches);
