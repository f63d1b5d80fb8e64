//! The fused front half per 20 ms chunk, from an Exotel JSON message to 24 kHz audio for the
//! model: parse JSON, decode base64, decode pcm16le, vad at 8 kHz, resample 8k→24k, discard.
//! `cargo bench --bench front_half`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::time::Duration;

use caly::engine::frame::{Frame, Packet};
use caly::engine::pipeline::{FusedChain, PipelineOptions};
use caly::engine::registry::CompileOptions;
use caly::engine::spec::PipelineSpec;
use caly::testing::{exotel_media_messages, read_wav_mono};
use caly::transport::exotel::wire::{Inbound, decode_payload};
use criterion::{Criterion, criterion_group, criterion_main};

fn messages() -> Vec<String> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/audio/speech_en_hi_8k.wav"
    );
    let (_, speech) = read_wav_mono(path.as_ref()).unwrap();
    exotel_media_messages(&speech, 160, "MZ1")
}

fn chain(text: &str) -> FusedChain {
    let spec = PipelineSpec::parse(text, "bench").unwrap();
    let graph = caly::engine::graph::Graph::compile(
        &spec,
        &caly::testing::registry(),
        &CompileOptions {
            source_rate: Some(8000),
        },
    )
    .unwrap();
    FusedChain::new(&graph, PipelineOptions::default()).unwrap()
}

fn run(c: &mut Criterion, id: &str, text: &str) {
    let messages = messages();
    let mut chain = chain(text);
    let mut buf = Vec::new();
    let mut i = 0;
    c.benchmark_group("front_half").bench_function(id, |b| {
        b.iter(|| {
            let m = Inbound::parse(black_box(&messages[i % messages.len()])).unwrap();
            i += 1;
            let media = m.media.unwrap();
            let audio = decode_payload(&media.payload, &mut buf).unwrap();
            chain.push(Frame::Packet(Packet { bytes: audio })).unwrap();
        })
    });
}

fn front_half(c: &mut Criterion) {
    let shipped = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/pipelines/front_half.toml"
    ))
    .unwrap();
    run(c, "exotel_json_8k_vad_to_24k", &shipped);
    // The pcmu route to the Realtime API: no resampling at all, VAD at 8 kHz, μ-law out.
    run(
        c,
        "exotel_json_8k_vad_to_pcmu",
        r#"
[pipeline]
name = "pcmu"
[stages.caller]
kind = "call_audio"
[stages.decode]
kind = "decode"
[stages.vad]
kind = "vad"
[stages.encode]
kind = "encode"
encoding = "mulaw"
[stages.sink]
kind = "blackhole"
"#,
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_millis(500));
    targets = front_half
}
criterion_main!(benches);
