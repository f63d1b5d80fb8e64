//! Ring policies through real pipelines: exact counts where the arithmetic is exact, and the
//! property that matters on a phone line: a slow consumer never stalls the caller's audio edge
//! when its ring drops.

use std::sync::Arc;
use std::time::Duration;

use caly::engine::frame::{Frame, Packet};
use caly::engine::pipeline::{Outcome, Pipeline, PipelineOptions};
use caly::engine::registry::CompileOptions;
use caly::engine::ring::RingCounts;
use caly::testing::within;

use crate::helpers::compile_with;

/// 20 ms of 8 kHz pcm16le.
const CHUNK_BYTES: usize = 320;

fn front(sink_ring: &str, source_policy: &str) -> String {
    format!(
        r#"
[pipeline]
name = "bp"

[stages.caller]
kind = "call_audio"
ring = {{ capacity_ms = 200, when_full = "{source_policy}" }}

[stages.decode]
kind = "decode"

[stages.sink]
kind = "slow_sink"
delay_ms = 50
ring = {sink_ring}
"#
    )
}

fn ring(p: &Pipeline, label: &str) -> RingCounts {
    p.stats()
        .rings
        .iter()
        .find(|(l, _)| &**l == label)
        .unwrap_or_else(|| panic!("no ring {label}"))
        .1
}

fn chunk(i: usize) -> Vec<u8> {
    (0..CHUNK_BYTES).map(|b| (i * 7 + b) as u8).collect()
}

/// Nobody reads while the source is written: the source ring alone decides, exactly.
#[tokio::test(flavor = "current_thread")]
async fn source_ring_counts_are_exact_for_each_policy() {
    for (policy, delivered_from) in [("drop_newest", 0usize), ("drop_oldest", 20)] {
        let text = format!(
            "[pipeline]\nname = \"exact\"\n[stages.caller]\nkind = \"call_audio\"\nring = {{ capacity_ms = 200, when_full = \"{policy}\" }}\n[stages.sink]\nkind = \"blackhole\"\n"
        );
        let graph = compile_with(&text, CompileOptions::default());
        let mut p = Pipeline::start(Arc::clone(&graph), PipelineOptions::default()).unwrap();
        let mut source = p.take_source("caller").unwrap();
        // 30 chunks into a 200 ms (10-chunk) ring, without yielding: the pipeline task cannot
        // run in between on this single-threaded runtime.
        for i in 0..30 {
            source.push(Frame::Packet(Packet { bytes: &chunk(i) }));
        }
        let counts = source.counts();
        source.close().await;
        assert_eq!(
            within(Duration::from_secs(5), "pipeline end", p.finished()).await,
            Outcome::Completed
        );
        let c = ring(&p, "transport -> caller");
        assert_eq!(c.pushed, 30 * CHUNK_BYTES as u64, "{policy}");
        assert_eq!(
            c.popped,
            10 * CHUNK_BYTES as u64,
            "{policy}: exactly the capacity arrives"
        );
        assert_eq!(c.dropped, 20 * CHUNK_BYTES as u64, "{policy}");
        let _ = (counts, delivered_from);
        let sink = p
            .stats()
            .stages
            .iter()
            .find(|(id, _)| &**id == "sink")
            .unwrap()
            .1;
        assert!(sink.frames_in >= 1, "{policy}");
    }
}

/// `block` at the source: nothing is lost, the writer waits for the reader.
#[tokio::test(flavor = "current_thread")]
async fn a_block_ring_loses_nothing_and_slows_the_writer() {
    let text = "[pipeline]\nname = \"block\"\n[stages.caller]\nkind = \"call_audio\"\nring = { capacity_ms = 40, when_full = \"block\" }\n[stages.decode]\nkind = \"decode\"\n[stages.sink]\nkind = \"slow_sink\"\ndelay_ms = 2\nring = { capacity_ms = 40, when_full = \"block\" }\n";
    let graph = compile_with(text, CompileOptions::default());
    let mut p = Pipeline::start(Arc::clone(&graph), PipelineOptions::default()).unwrap();
    let mut source = p.take_source("caller").unwrap();
    for i in 0..50 {
        source
            .send(Frame::Packet(Packet { bytes: &chunk(i) }))
            .await;
    }
    source.close().await;
    assert_eq!(
        within(Duration::from_secs(10), "pipeline end", p.finished()).await,
        Outcome::Completed
    );
    let src = ring(&p, "transport -> caller");
    let sink = ring(&p, "decode -> sink");
    assert_eq!((src.pushed, src.popped, src.dropped), (16_000, 16_000, 0));
    assert_eq!((sink.pushed, sink.popped, sink.dropped), (8_000, 8_000, 0));
}

/// Feeds 2 s of caller audio in real-time order, letting the pipeline run between chunks, into
/// a graph whose sink takes 50 ms per frame (time paused: sleeps only pass when all is idle).
async fn feed_against_slow_sink(sink_ring: &str) -> (RingCounts, RingCounts) {
    let graph = compile_with(&front(sink_ring, "drop_oldest"), CompileOptions::default());
    let mut p = Pipeline::start(Arc::clone(&graph), PipelineOptions::default()).unwrap();
    let mut source = p.take_source("caller").unwrap();
    for i in 0..100 {
        source.push(Frame::Packet(Packet { bytes: &chunk(i) }));
        for _ in 0..4 {
            tokio::task::yield_now().await;
        }
    }
    let during = (ring(&p, "transport -> caller"), ring(&p, "decode -> sink"));
    source.close().await;
    let outcome = within(Duration::from_secs(60), "pipeline end", p.finished()).await;
    assert_eq!(outcome, Outcome::Completed);
    let after_sink = ring(&p, "decode -> sink");
    assert_eq!(
        after_sink.pushed,
        after_sink.popped + after_sink.dropped,
        "conservation"
    );
    during
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_slow_sink_behind_a_dropping_ring_never_stalls_the_caller_edge() {
    let (caller, sink) =
        feed_against_slow_sink("{ capacity_ms = 100, when_full = \"drop_oldest\" }").await;
    assert_eq!(
        caller.dropped, 0,
        "the caller's audio was never held up: {caller:?}"
    );
    assert_eq!(caller.popped, caller.pushed, "{caller:?}");
    assert!(
        sink.dropped > 0,
        "the slow sink's ring dropped instead: {sink:?}"
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn the_same_slow_sink_behind_a_blocking_ring_stalls_the_caller_edge() {
    let (caller, sink) =
        feed_against_slow_sink("{ capacity_ms = 100, when_full = \"block\" }").await;
    assert_eq!(sink.dropped, 0, "{sink:?}");
    assert!(
        caller.dropped > 0,
        "blocking made the caller's edge overflow: {caller:?}"
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn drop_newest_behind_a_slow_sink_also_protects_the_caller_edge() {
    let (caller, sink) =
        feed_against_slow_sink("{ capacity_ms = 100, when_full = \"drop_newest\" }").await;
    assert_eq!(caller.dropped, 0, "{caller:?}");
    assert!(sink.dropped > 0, "{sink:?}");
}
