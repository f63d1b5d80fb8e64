//! Cost of each stage per 20 ms chunk, measured through the stage's own `process` with its
//! outputs discarded: `cargo bench --bench stages`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::time::Duration;

use caly::engine::format::{Encoding, Format};
use caly::engine::frame::OwnedFrame;
use caly::testing::{Harness, frames_for};
use criterion::{Criterion, criterion_group, criterion_main};

/// 2 s of input, cycled: the stage sees varied audio in steady state.
fn input(format: Format) -> Vec<OwnedFrame> {
    frames_for(format, Duration::from_secs(2))
}

fn bench(c: &mut Criterion, group: &str, id: &str, kind: &str, params: &str, format: Format) {
    let frames = input(format);
    let mut h = Harness::discarding(kind, params, &[format]);
    let mut i = 0;
    c.benchmark_group(group).bench_function(id, |b| {
        b.iter(|| {
            let f = &frames[i % frames.len()];
            i += 1;
            h.push(black_box(f.as_frame())).unwrap();
        })
    });
}

fn decode(c: &mut Criterion) {
    for (id, enc, rate) in [
        ("pcm16le/8k", Encoding::Pcm16le, 8000),
        ("mulaw/8k", Encoding::Mulaw, 8000),
        ("alaw/8k", Encoding::Alaw, 8000),
        ("opus/8k", Encoding::Opus, 8000),
        ("opus/16k", Encoding::Opus, 16000),
        ("opus/24k", Encoding::Opus, 24000),
        ("opus/48k", Encoding::Opus, 48000),
    ] {
        bench(c, "decode", id, "decode", "", Format::encoded(enc, rate));
    }
}

fn resample(c: &mut Criterion) {
    for (id, from, to) in [
        ("8k->16k", 8000, 16000),
        ("8k->24k", 8000, 24000),
        ("16k->24k", 16000, 24000),
        ("24k->8k", 24000, 8000),
        ("24k->16k", 24000, 16000),
    ] {
        bench(
            c,
            "resample",
            id,
            "resample",
            &format!("sample_rate = {to}"),
            Format::audio(from),
        );
    }
}

fn vad(c: &mut Criterion) {
    for rate in [8000, 16000, 24000, 48000] {
        bench(
            c,
            "vad",
            &format!("{}k", rate / 1000),
            "vad",
            "",
            Format::audio(rate),
        );
    }
}

fn encode(c: &mut Criterion) {
    for (id, enc, rate) in [
        ("pcm16le/24k", "pcm16le", 24000),
        ("mulaw/8k", "mulaw", 8000),
        ("opus/8k", "opus", 8000),
        ("opus/16k", "opus", 16000),
        ("opus/24k", "opus", 24000),
    ] {
        bench(
            c,
            "encode",
            id,
            "encode",
            &format!("encoding = \"{enc}\""),
            Format::audio(rate),
        );
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_millis(500));
    targets = decode, resample, vad, encode
}
criterion_main!(benches);
