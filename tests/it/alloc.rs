//! Zero heap allocations per 20 ms chunk through the fused front half in steady state: Exotel
//! JSON parsed, base64 decoded, then decode → resample 8k→24k → vad → sink, counted by a global
//! allocator that counts only on the thread under test.
#![allow(unsafe_code)] // a GlobalAlloc impl is unsafe by definition; it only forwards to System.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use caly::engine::frame::{Frame, Packet};
use caly::engine::pipeline::{FusedChain, PipelineOptions};
use caly::engine::registry::CompileOptions;
use caly::testing::{exotel_media_messages, read_wav_mono};
use caly::transport::exotel::wire::{Inbound, decode_payload};

use crate::helpers::repo;

struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
    static LIVE_BYTES: Cell<i64> = const { Cell::new(0) };
}

/// Every block carries a prefix whose last byte says whether a tracked thread allocated it,
/// so a block allocated on a runtime thread and freed on some other thread (sqlx's SQLite
/// workers free the arguments they are sent) still leaves the tracked total.
fn prefix(layout: Layout) -> usize {
    layout.align().max(8)
}

fn padded(layout: Layout) -> Layout {
    // The size grows by a multiple of the alignment, so this cannot fail for a valid layout.
    Layout::from_size_align(layout.size() + prefix(layout), layout.align()).unwrap_or(layout)
}

fn tracked_here() -> bool {
    TRACKED.try_with(Cell::get).unwrap_or(false)
}

/// Writes the flag and returns the pointer handed out.
///
/// # Safety
///
/// `base` is null or a block of `padded(layout)`.
unsafe fn mark(base: *mut u8, layout: Layout, tracked: bool) -> *mut u8 {
    if base.is_null() {
        return base;
    }
    let off = prefix(layout);
    // SAFETY: `base` has `off` bytes before the user's block.
    unsafe {
        *base.add(off - 1) = u8::from(tracked);
        base.add(off)
    }
}

/// The block's base and whether it was tracked.
///
/// # Safety
///
/// `ptr` came from this allocator with `layout`.
unsafe fn base_of(ptr: *mut u8, layout: Layout) -> (*mut u8, bool) {
    let off = prefix(layout);
    // SAFETY: the prefix precedes every block this allocator hands out.
    unsafe {
        let base = ptr.sub(off);
        (base, *base.add(off - 1) == 1)
    }
}

// SAFETY: forwards every call to the system allocator with a prefix added; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        let tracked = tracked_here();
        live(layout.size() as i64, tracked);
        // SAFETY: same contract as ours, on the padded layout.
        unsafe { mark(System.alloc(padded(layout)), layout, tracked) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `alloc` with `layout`.
        let (base, tracked) = unsafe { base_of(ptr, layout) };
        live(-(layout.size() as i64), tracked);
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(base, padded(layout)) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        let tracked = tracked_here();
        live(layout.size() as i64, tracked);
        // SAFETY: same contract as ours.
        unsafe { mark(System.alloc_zeroed(padded(layout)), layout, tracked) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: `ptr` came from this allocator with `layout`.
        let (base, tracked) = unsafe { base_of(ptr, layout) };
        live(new_size as i64 - layout.size() as i64, tracked);
        // SAFETY: same contract as ours; realloc keeps the prefix's bytes.
        let moved = unsafe { System.realloc(base, padded(layout), new_size + prefix(layout)) };
        if moved.is_null() {
            return moved;
        }
        // SAFETY: `moved` is a block of the new padded size.
        unsafe { moved.add(prefix(layout)) }
    }
}

fn count() {
    let _ = COUNTING.try_with(|on| {
        if on.get() {
            let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        }
    });
}

/// Heap bytes live right now that were allocated by threads of a [`tracked_runtime`], wherever
/// they are freed — other tests running in parallel do not count.
pub(crate) fn tracked_heap_bytes() -> i64 {
    TRACKED_LIVE.load(std::sync::atomic::Ordering::Relaxed)
}

/// A multi-threaded runtime whose threads (workers and blocking pool) count towards
/// [`tracked_heap_bytes`]. The thread that calls `block_on` must be marked with [`track_this_thread`].
pub(crate) fn tracked_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .on_thread_start(track_this_thread)
        .build()
        .unwrap()
}

/// Counts this thread's allocations in [`tracked_heap_bytes`].
pub(crate) fn track_this_thread() {
    TRACKED.with(|t| t.set(true));
}

static TRACKED_LIVE: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);

thread_local! {
    static TRACKED: Cell<bool> = const { Cell::new(false) };
}

/// Counts `delta` bytes: in the tracked total if the block was allocated on a tracked thread,
/// and in this thread's live bytes while counting.
fn live(delta: i64, tracked: bool) {
    if tracked {
        TRACKED_LIVE.fetch_add(delta, std::sync::atomic::Ordering::Relaxed);
    }
    let _ = COUNTING.try_with(|on| {
        if on.get() {
            let _ = LIVE_BYTES.try_with(|n| n.set(n.get() + delta));
        }
    });
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn counted<T>(f: impl FnOnce() -> T) -> (T, u64) {
    ALLOCATIONS.with(|n| n.set(0));
    LIVE_BYTES.with(|n| n.set(0));
    COUNTING.with(|on| on.set(true));
    let out = f();
    COUNTING.with(|on| on.set(false));
    (out, ALLOCATIONS.with(Cell::get))
}

#[test]
fn the_counter_sees_allocations() {
    let (v, n) = counted(|| vec![1u8; 100]);
    assert_eq!(v.len(), 100);
    assert!(n >= 1);
}

fn front_half() -> std::sync::Arc<caly::engine::graph::Graph> {
    caly::engine::graph::load(
        &repo("pipelines/front_half.toml"),
        &caly::testing::registry(),
        &CompileOptions {
            source_rate: Some(8000),
        },
    )
    .unwrap()
}

#[test]
fn the_fused_front_half_allocates_nothing_per_chunk_in_steady_state() {
    let graph = front_half();
    let mut chain = FusedChain::new(&graph, PipelineOptions::default()).unwrap();
    // Real speech, as Exotel would send it: 20 ms media messages.
    let (rate, speech) = read_wav_mono(&repo("fixtures/audio/speech_en_hi_8k.wav")).unwrap();
    assert_eq!(rate, 8000);
    let whole = speech.len() / 160 * 160;
    let messages = exotel_media_messages(&speech[..whole], 160, "MZ1");
    let mut buf = Vec::new();
    let mut feed = |chain: &mut FusedChain, m: &str| {
        let msg = Inbound::parse(m).unwrap();
        let media = msg.media.unwrap();
        let audio = decode_payload(&media.payload, &mut buf).unwrap();
        chain.push(Frame::Packet(Packet { bytes: audio })).unwrap();
    };
    let warm_up = 50; // 1 s: buffers reach their sizes
    for m in &messages[..warm_up] {
        feed(&mut chain, m);
    }
    let before = stats(&chain);
    let ((), allocations) = counted(|| {
        for m in &messages[warm_up..] {
            feed(&mut chain, m);
        }
    });
    let after = stats(&chain);
    let chunks = messages.len() - warm_up;
    assert_eq!(
        allocations, 0,
        "{allocations} allocations over {chunks} chunks of 20 ms"
    );
    // The work really happened, VAD events included: the sink saw every audio chunk the vad
    // passed on, plus the events.
    let vad_frames = after.0 - before.0;
    let sink_frames = after.1 - before.1;
    assert!(vad_frames >= chunks as u64, "vad saw {vad_frames} frames");
    assert!(
        sink_frames > vad_frames,
        "no VAD events during the counted run"
    );
}

fn stats(chain: &FusedChain) -> (u64, u64) {
    let s = chain.stats();
    let get = |id: &str| s.iter().find(|(n, _)| &**n == id).unwrap().1.frames_in;
    (get("vad"), get("sink"))
}

/// Heap held by one call's front half: 100 pipelines started and fed on this thread (a
/// current-thread runtime, so every task allocates here), bytes still live divided by 100.
#[test]
fn a_call_s_front_half_holds_well_under_a_mebibyte() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let graph = front_half();
    let calls = 100;
    let chunk = vec![0u8; 320];
    let (pipelines, _) = counted(|| {
        rt.block_on(async {
            let mut v = Vec::with_capacity(calls);
            for _ in 0..calls {
                let mut p = caly::engine::pipeline::Pipeline::start(
                    graph.clone(),
                    PipelineOptions::default(),
                )
                .unwrap();
                let mut s = p.take_source("caller").unwrap();
                for _ in 0..50 {
                    s.push(Frame::Packet(Packet { bytes: &chunk }));
                    tokio::task::yield_now().await;
                }
                v.push((p, s));
            }
            v
        })
    });
    let live = LIVE_BYTES.with(Cell::get);
    let per_call = live / calls as i64;
    println!(
        "heap per call (front half, 8 kHz → 24 kHz): {:.1} KiB",
        per_call as f64 / 1024.0
    );
    assert!(
        per_call > 16 * 1024,
        "the measurement saw the pipelines: {per_call} bytes"
    );
    assert!(per_call < 1024 * 1024, "{per_call} bytes per call");
    drop(pipelines);
}
