//! `Ring`: the bounded, lock-free SPSC queue that sits at every task boundary of a pipeline.
//!
//! Built on `ringbuf`'s shared SPSC ring, with async wake-ups through two [`AtomicWaker`]s.
//! A ring has two lanes that keep one order between them:
//!
//! - **data**: audio samples (`i16`) or encoded bytes (`u8`), stored flat, so pushing a 20 ms
//!   chunk is one `memcpy` and never allocates; positions count data units since the stream began;
//! - **marks**: text, events and packet boundaries, each tagged with the data position it follows.
//!
//! Frame-only edges (text, events) use the marks lane alone.
//!
//! When the ring is full, [`WhenFull`] decides:
//!
//! - `block`: what does not fit waits in the writer until [`RingWriter::flush`] has moved it in;
//!   the writer's task stops reading its own input meanwhile, which is how back-pressure travels up;
//! - `drop_newest`: what does not fit is dropped and counted;
//! - `drop_oldest`: the newest data always gets in. In a single-producer ring only the reader can
//!   remove items, so the writer keeps the overflow in a stash of the ring's capacity and raises a
//!   "skip until" position; the reader discards everything before it. The reader therefore sees
//!   exactly the newest `capacity` units, as a drop-oldest queue would, without any lock.
//!
//! Marks are never dropped under `block`; under the drop policies a mark that finds the marks lane
//! full is dropped and counted. Packet codecs (framed edges) drop whole packets, newest first.
//! Drops are logged once per burst and counted in [`RingStats`].

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};

use futures::task::AtomicWaker;
use ringbuf::traits::{Consumer, Observer, Producer, Split};
use ringbuf::{HeapCons, HeapProd, HeapRb};
use serde::{Deserialize, Serialize};

use crate::engine::frame::{Event, TextChunk};

/// What a full ring does with a new item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// Wait for room: lossless, slows the writer down (default for text and event edges).
    Block,
    /// Drop the oldest queued data so the newest gets in (default for audio edges).
    DropOldest,
    /// Drop what does not fit.
    DropNewest,
}

impl WhenFull {
    /// The TOML spelling.
    pub fn name(self) -> &'static str {
        match self {
            WhenFull::Block => "block",
            WhenFull::DropOldest => "drop_oldest",
            WhenFull::DropNewest => "drop_newest",
        }
    }
}

/// How big a ring is and what it does when full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingConfig {
    /// Capacity of the data lane in data units (samples or bytes); 0 for frame-only edges.
    pub capacity: usize,
    /// Capacity of the marks lane in frames.
    pub frame_capacity: usize,
    /// Policy when full.
    pub when_full: WhenFull,
    /// Whether each push is one packet whose boundaries must survive (Opus).
    pub framed: bool,
}

/// Counters of one ring. Data counters are in data units; frame counters in marks.
#[derive(Debug, Default)]
pub struct RingStats {
    pushed: AtomicU64,
    popped: AtomicU64,
    dropped: AtomicU64,
    discarded: AtomicU64,
    frames_pushed: AtomicU64,
    frames_popped: AtomicU64,
    frames_dropped: AtomicU64,
}

/// A snapshot of [`RingStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RingCounts {
    /// Data units offered to the ring.
    pub pushed: u64,
    /// Data units delivered to the reader.
    pub popped: u64,
    /// Data units dropped because the ring was full (by either drop policy).
    pub dropped: u64,
    /// Data units thrown away because nobody would read them: the reader had gone, or the
    /// writer's task was ended with data still waiting (the end of a call, not an overload).
    pub discarded: u64,
    /// Text, event and boundary marks offered.
    pub frames_pushed: u64,
    /// Marks delivered.
    pub frames_popped: u64,
    /// Marks dropped.
    pub frames_dropped: u64,
}

impl RingStats {
    /// Reads every counter.
    pub fn snapshot(&self) -> RingCounts {
        RingCounts {
            pushed: self.pushed.load(Ordering::Relaxed),
            popped: self.popped.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            discarded: self.discarded.load(Ordering::Relaxed),
            frames_pushed: self.frames_pushed.load(Ordering::Relaxed),
            frames_popped: self.frames_popped.load(Ordering::Relaxed),
            frames_dropped: self.frames_dropped.load(Ordering::Relaxed),
        }
    }
}

/// A non-audio item on the marks lane.
#[derive(Debug, Clone, PartialEq)]
pub enum Mark {
    /// A transcript segment (boxed, like the event: a ring holds its marks' slots for its
    /// whole life, and most of them are never more than a pointer's worth of use).
    Text(Box<TextChunk>),
    /// An event.
    Event(Box<Event>),
    /// End of one packet on a framed edge.
    Boundary,
}

#[derive(Debug)]
struct Marked {
    pos: u64,
    mark: Mark,
}

#[derive(Debug, Default)]
struct Shared {
    stats: RingStats,
    /// `drop_oldest`: the reader discards data before this position.
    skip_until: AtomicU64,
    /// The writer is finished: after the reader has drained what is queued, the stream has ended.
    closed: AtomicBool,
    reader_gone: AtomicBool,
    /// Woken when room frees up.
    writer_waker: AtomicWaker,
    /// Woken when items arrive or the writer closes.
    reader_waker: AtomicWaker,
}

/// The largest chunk a reader hands out at once, in data units.
const MAX_READ_CHUNK: usize = 8192;

/// Creates a ring. `label` names it in logs (usually `from -> to`).
pub fn ring<S: Copy + Default + Send + 'static>(
    config: RingConfig,
    label: Arc<str>,
) -> (RingWriter<S>, RingReader<S>) {
    let shared = Arc::new(Shared::default());
    let (data_prod, data_cons) = if config.capacity > 0 {
        let (p, c) = HeapRb::<S>::new(config.capacity).split();
        (Some(p), Some(c))
    } else {
        (None, None)
    };
    let (mark_prod, mark_cons) = HeapRb::<Marked>::new(config.frame_capacity.max(1)).split();
    // A framed edge cannot drop its oldest packets without splitting one: drop newest instead.
    let when_full = if config.framed && config.when_full == WhenFull::DropOldest {
        WhenFull::DropNewest
    } else {
        config.when_full
    };
    let writer = RingWriter {
        data: data_prod,
        marks: mark_prod,
        shared: Arc::clone(&shared),
        when_full,
        capacity: config.capacity,
        framed: config.framed,
        write_pos: 0,
        // `block`: grown the first time the ring is full (then kept for the call).
        pending: Vec::new(),
        pending_marks: VecDeque::new(),
        // `drop_oldest`: made the first time the ring overflows (most rings never do).
        stash: None,
        dropping: false,
        label,
    };
    let reader = RingReader {
        data: data_cons,
        marks: mark_cons,
        shared,
        read_pos: 0,
        // Grown to the largest read the call needs (most reads are one chunk, far below the
        // ring's capacity): a reader does not hold a second copy of its whole ring.
        buf: Vec::new(),
        max_read: config.capacity.clamp(1, MAX_READ_CHUNK),
        current: None,
        framed: config.framed,
    };
    (writer, reader)
}

/// The producing half of a ring.
pub struct RingWriter<S> {
    data: Option<HeapProd<S>>,
    marks: HeapProd<Marked>,
    shared: Arc<Shared>,
    when_full: WhenFull,
    capacity: usize,
    framed: bool,
    /// Data units that have entered the ring so far (the next unit's position).
    write_pos: u64,
    /// `block`: data that did not fit yet, in order.
    pending: Vec<S>,
    /// `block`: marks that did not fit yet, in order.
    pending_marks: VecDeque<Marked>,
    /// `drop_oldest`: the newest data that did not fit (at most `capacity`).
    /// Boxed: a ring keeps its indices a cache line apart, 384 bytes a writer would carry
    /// inline for a stash most rings never make.
    stash: Option<Box<HeapRb<S>>>,
    dropping: bool,
    label: Arc<str>,
}

impl<S: Copy + Default + Send + 'static> RingWriter<S> {
    /// The ring's counters.
    pub fn counts(&self) -> RingCounts {
        self.shared.stats.snapshot()
    }

    /// A reader of this ring's counters that outlives both ends being moved elsewhere.
    pub fn observer(&self) -> Box<dyn Fn() -> RingCounts + Send + Sync> {
        let shared = Arc::clone(&self.shared);
        Box::new(move || shared.stats.snapshot())
    }

    /// The effective policy (framed edges turn `drop_oldest` into `drop_newest`).
    pub fn when_full(&self) -> WhenFull {
        self.when_full
    }

    /// Whether the reader has gone away (its task ended).
    pub fn is_reader_gone(&self) -> bool {
        self.shared.reader_gone.load(Ordering::Acquire)
    }

    /// Whether [`flush`](Self::flush) has waiting to do (only under `block`).
    pub fn needs_flush(&self) -> bool {
        !self.pending.is_empty() || !self.pending_marks.is_empty()
    }

    fn stash_len(&self) -> usize {
        self.stash.as_ref().map_or(0, |s| s.occupied_len())
    }

    /// Offers data without waiting; the ring's policy decides what happens when it is full.
    pub fn push_data(&mut self, data: &[S]) {
        self.push_data_with(data, self.when_full);
    }

    fn push_data_with(&mut self, data: &[S], policy: WhenFull) {
        if data.is_empty() {
            return;
        }
        let stats = &self.shared.stats;
        stats.pushed.fetch_add(data.len() as u64, Ordering::Relaxed);
        if self.data.is_none() || self.shared.reader_gone.load(Ordering::Acquire) {
            // A frames-only ring cannot carry data; the graph compiler never wires one so.
            debug_assert!(self.data.is_some(), "data pushed into frames-only ring");
            stats
                .discarded
                .fetch_add(data.len() as u64, Ordering::Relaxed);
            return;
        }
        let mut dropped = 0usize;
        match policy {
            WhenFull::Block => {
                if let Some(prod) = self.data.as_mut()
                    && self.pending.is_empty()
                    && self.pending_marks.is_empty()
                {
                    let n = prod.push_slice(data);
                    self.write_pos += n as u64;
                    self.pending.extend_from_slice(&data[n..]);
                } else {
                    self.pending.extend_from_slice(data);
                }
            }
            WhenFull::DropNewest => {
                let Some(prod) = self.data.as_mut() else {
                    return;
                };
                if self.framed && (prod.vacant_len() < data.len() || self.marks.is_full()) {
                    dropped = data.len();
                } else {
                    let n = prod.push_slice(data);
                    self.write_pos += n as u64;
                    dropped = data.len() - n;
                }
            }
            WhenFull::DropOldest => {
                self.transfer_stash();
                let Some(prod) = self.data.as_mut() else {
                    return;
                };
                let stash_empty = self.stash.as_ref().is_none_or(|s| s.is_empty());
                let rest = if stash_empty {
                    let n = prod.push_slice(data);
                    self.write_pos += n as u64;
                    &data[n..]
                } else {
                    data
                };
                if !rest.is_empty() {
                    let capacity = self.capacity;
                    let stash = self
                        .stash
                        .get_or_insert_with(|| Box::new(HeapRb::<S>::new(capacity)));
                    let overflow =
                        (stash.occupied_len() + rest.len()).saturating_sub(self.capacity);
                    stash.push_slice_overwrite(rest);
                    dropped = overflow;
                }
                self.enforce_window();
                if !rest.is_empty() {
                    self.note_drop(rest.len());
                }
            }
        }
        if dropped > 0 {
            self.shared
                .stats
                .dropped
                .fetch_add(dropped as u64, Ordering::Relaxed);
            self.note_drop(dropped);
        } else if policy != WhenFull::DropOldest || self.stash_len() == 0 {
            self.dropping = false;
        }
        if self.framed && dropped == 0 {
            self.push_mark(Mark::Boundary);
        }
        self.shared.reader_waker.wake();
    }

    /// `drop_oldest`: only the newest `capacity - stash` units in the ring stay valid.
    fn enforce_window(&mut self) {
        let stash_len = self.stash_len();
        if stash_len == 0 {
            return;
        }
        let keep = self.capacity.saturating_sub(stash_len) as u64;
        let until = self.write_pos.saturating_sub(keep);
        self.shared.skip_until.fetch_max(until, Ordering::AcqRel);
    }

    /// `drop_oldest`: moves stashed data into the ring as room allows.
    fn transfer_stash(&mut self) -> bool {
        let (Some(stash), Some(prod)) = (self.stash.as_mut(), self.data.as_mut()) else {
            return true;
        };
        if stash.is_empty() {
            return true;
        }
        let (a, b) = stash.as_slices();
        let mut moved = prod.push_slice(a);
        if moved == a.len() {
            moved += prod.push_slice(b);
        }
        stash.skip(moved);
        self.write_pos += moved as u64;
        let empty = stash.is_empty();
        if moved > 0 {
            self.enforce_window();
            self.shared.reader_waker.wake();
        }
        empty
    }

    fn note_drop(&mut self, count: usize) {
        if !self.dropping {
            self.dropping = true;
            tracing::warn!(
                ring = %self.label,
                dropped = count,
                policy = self.when_full.name(),
                "Ring full, dropping audio until it drains."
            );
        }
    }

    /// Offers a text, event or boundary mark after the data pushed so far.
    pub fn push_mark(&mut self, mark: Mark) {
        let stats = &self.shared.stats;
        stats.frames_pushed.fetch_add(1, Ordering::Relaxed);
        if self.shared.reader_gone.load(Ordering::Acquire) {
            stats.frames_dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let marked = Marked {
            pos: self.write_pos + (self.pending.len() + self.stash_len()) as u64,
            mark,
        };
        if self.when_full == WhenFull::Block {
            if self.pending_marks.is_empty() {
                if let Err(m) = self.marks.try_push(marked) {
                    self.pending_marks.push_back(m);
                }
            } else {
                self.pending_marks.push_back(marked);
            }
        } else if self.marks.try_push(marked).is_err() {
            self.shared
                .stats
                .frames_dropped
                .fetch_add(1, Ordering::Relaxed);
            self.note_drop(1);
        }
        self.shared.reader_waker.wake();
    }

    /// Moves what waits in the writer into the ring as far as room allows, without waiting.
    /// Returns whether nothing is left waiting.
    pub fn try_flush(&mut self) -> bool {
        if !self.transfer_stash() {
            return false;
        }
        if let Some(prod) = self.data.as_mut()
            && !self.pending.is_empty()
        {
            let n = prod.push_slice(&self.pending);
            if n > 0 {
                self.pending.drain(..n);
                self.write_pos += n as u64;
                self.shared.reader_waker.wake();
            }
        }
        while let Some(m) = self.pending_marks.pop_front() {
            if let Err(m) = self.marks.try_push(m) {
                self.pending_marks.push_front(m);
                break;
            }
            self.shared.reader_waker.wake();
        }
        !self.needs_flush()
    }

    fn discard_waiting(&mut self) {
        let stats = &self.shared.stats;
        let data = self.pending.len() + self.stash_len();
        stats.discarded.fetch_add(data as u64, Ordering::Relaxed);
        stats
            .frames_dropped
            .fetch_add(self.pending_marks.len() as u64, Ordering::Relaxed);
        self.pending.clear();
        self.pending_marks.clear();
        if let Some(s) = self.stash.as_mut() {
            s.clear();
        }
    }

    /// Waits until everything waiting in the writer is in the ring (or the reader is gone, in
    /// which case it is dropped and counted). Under `drop_oldest` and `drop_newest` this never
    /// waits for room: it only moves the stash forward.
    pub async fn flush(&mut self) {
        if self.when_full != WhenFull::Block {
            self.try_flush();
            return;
        }
        self.drain().await;
    }

    /// Waits until nothing is left in the writer, whatever the policy.
    async fn drain(&mut self) {
        poll_fn(|cx| self.poll_drained(cx)).await;
    }

    fn poll_drained(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let done = |w: &mut Self| {
            if w.try_flush() && w.stash_len() == 0 {
                return true;
            }
            if w.is_reader_gone() {
                w.discard_waiting();
                return true;
            }
            false
        };
        if done(self) {
            return Poll::Ready(());
        }
        self.shared.writer_waker.register(cx.waker());
        if done(self) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// Offers data and waits until all of it is in the ring, whatever the policy: for lossless
    /// feeding such as `caly replay`, where the writer may run ahead of real time.
    pub async fn send_data(&mut self, data: &[S]) {
        self.drain().await;
        self.push_data_with(data, WhenFull::Block);
        self.drain().await;
    }

    /// Offers a mark and waits until it is in the ring.
    pub async fn send_mark(&mut self, mark: Mark) {
        self.drain().await;
        let policy = self.when_full;
        self.when_full = WhenFull::Block;
        self.push_mark(mark);
        self.when_full = policy;
        self.drain().await;
    }

    /// Ends the stream: waits until everything already offered is in the ring, then tells the
    /// reader that nothing follows.
    pub async fn close(mut self) {
        self.drain().await;
        self.shared.closed.store(true, Ordering::Release);
        self.shared.reader_waker.wake();
    }
}

impl<S> Drop for RingWriter<S> {
    fn drop(&mut self) {
        // Dropped without `close` (its task was aborted): what still waited here is discarded,
        // and counted as such.
        let stats = &self.shared.stats;
        let stash = self.stash.as_ref().map_or(0, |s| s.occupied_len());
        let data = (self.pending.len() + stash) as u64;
        stats.discarded.fetch_add(data, Ordering::Relaxed);
        let marks = self.pending_marks.len() as u64;
        stats.frames_dropped.fetch_add(marks, Ordering::Relaxed);
        self.shared.closed.store(true, Ordering::Release);
        self.shared.reader_waker.wake();
    }
}

/// One item handed out by a [`RingReader`].
#[derive(Debug)]
pub enum Item<'a, S> {
    /// A run of data and the position of its first unit.
    Data {
        /// Position of `data[0]` since the stream began (counting dropped units).
        pos: u64,
        /// The data.
        data: &'a [S],
    },
    /// A transcript segment.
    Text(&'a TextChunk),
    /// An event.
    Event(&'a Event),
}

enum Next {
    Mark,
    Data(usize),
    Finished,
    Empty,
}

/// The consuming half of a ring.
pub struct RingReader<S> {
    data: Option<HeapCons<S>>,
    marks: HeapCons<Marked>,
    shared: Arc<Shared>,
    read_pos: u64,
    /// Where a read is copied to; grown on demand up to `max_read`.
    buf: Vec<S>,
    /// The most units one read hands out.
    max_read: usize,
    current: Option<Mark>,
    framed: bool,
}

impl<S: Copy + Default + Send + 'static> RingReader<S> {
    /// The ring's counters.
    pub fn counts(&self) -> RingCounts {
        self.shared.stats.snapshot()
    }

    /// Data units discarded because they fell out of a `drop_oldest` window.
    fn skip_stale(&mut self) {
        let Some(cons) = self.data.as_mut() else {
            return;
        };
        let until = self.shared.skip_until.load(Ordering::Acquire);
        if self.read_pos >= until {
            return;
        }
        let want = usize::try_from(until - self.read_pos).unwrap_or(usize::MAX);
        let n = cons.skip(want.min(cons.occupied_len()));
        if n > 0 {
            self.read_pos += n as u64;
            self.shared
                .stats
                .dropped
                .fetch_add(n as u64, Ordering::Relaxed);
            self.shared.writer_waker.wake();
        }
    }

    fn classify(&mut self) -> Next {
        // Read `closed` before looking at the lanes: everything pushed before it is visible.
        let closed = self.shared.closed.load(Ordering::Acquire);
        self.skip_stale();
        // Boundaries already reached carry nothing to deliver.
        while let Some(m) = self.marks.first()
            && m.mark == Mark::Boundary
            && m.pos <= self.read_pos
        {
            self.marks.try_pop();
            self.shared
                .stats
                .frames_popped
                .fetch_add(1, Ordering::Relaxed);
        }
        let occupied = self.data.as_ref().map_or(0, |c| c.occupied_len());
        match self.marks.first() {
            Some(m) if m.pos <= self.read_pos => Next::Mark,
            Some(m) => {
                let until_mark = usize::try_from(m.pos - self.read_pos).unwrap_or(usize::MAX);
                if self.framed {
                    // One whole packet, or nothing until it has fully arrived.
                    if occupied >= until_mark {
                        Next::Data(until_mark.min(self.max_read))
                    } else {
                        Next::Empty
                    }
                } else if occupied > 0 {
                    Next::Data(occupied.min(until_mark).min(self.max_read))
                } else {
                    Next::Empty
                }
            }
            None if occupied > 0 && (!self.framed || closed) => {
                Next::Data(occupied.min(self.max_read))
            }
            None if closed && occupied == 0 => Next::Finished,
            None => Next::Empty,
        }
    }

    /// Waits until an item is available or the stream has ended.
    pub fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if !matches!(self.classify(), Next::Empty) {
            return Poll::Ready(());
        }
        self.shared.reader_waker.register(cx.waker());
        if matches!(self.classify(), Next::Empty) {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    }

    /// Whether an item can be taken now (then [`try_next`](Self::try_next) returns it).
    pub fn has_item(&mut self) -> bool {
        matches!(self.classify(), Next::Mark | Next::Data(_))
    }

    /// Whether the writer has finished and everything has been read.
    pub fn is_finished(&mut self) -> bool {
        matches!(self.classify(), Next::Finished)
    }

    /// Takes the next item if one is available now. `None` means nothing now (or, when
    /// [`is_finished`](Self::is_finished), nothing ever again).
    pub fn try_next(&mut self) -> Option<Item<'_, S>> {
        loop {
            match self.classify() {
                Next::Finished | Next::Empty => return None,
                Next::Mark => {
                    let marked = self.marks.try_pop()?;
                    self.shared
                        .stats
                        .frames_popped
                        .fetch_add(1, Ordering::Relaxed);
                    self.shared.writer_waker.wake();
                    if marked.mark == Mark::Boundary {
                        continue;
                    }
                    self.current = Some(marked.mark);
                    return match self.current.as_ref() {
                        Some(Mark::Text(t)) => Some(Item::Text(t)),
                        Some(Mark::Event(e)) => Some(Item::Event(e)),
                        _ => None,
                    };
                }
                Next::Data(n) => {
                    let cons = self.data.as_mut()?;
                    if self.buf.len() < n {
                        // Doubling (so a call's reads settle after a few) up to the limit.
                        let len = n.max(self.buf.len() * 2).min(self.max_read);
                        self.buf.reserve_exact(len - self.buf.len());
                        self.buf.resize(len, S::default());
                    }
                    let got = cons.pop_slice(&mut self.buf[..n]);
                    let pos = self.read_pos;
                    self.read_pos += got as u64;
                    self.shared
                        .stats
                        .popped
                        .fetch_add(got as u64, Ordering::Relaxed);
                    self.shared.writer_waker.wake();
                    return Some(Item::Data {
                        pos,
                        data: &self.buf[..got],
                    });
                }
            }
        }
    }

    /// Waits for the next item; `None` once the writer has closed and everything was read.
    pub async fn next(&mut self) -> Option<Item<'_, S>> {
        poll_fn(|cx| self.poll_ready(cx)).await;
        self.try_next()
    }
}

impl<S> Drop for RingReader<S> {
    fn drop(&mut self) {
        self.shared.reader_gone.store(true, Ordering::Release);
        self.shared.writer_waker.wake();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn cfg(capacity: usize, when_full: WhenFull) -> RingConfig {
        RingConfig {
            capacity,
            frame_capacity: 8,
            when_full,
            framed: false,
        }
    }

    fn drain_all(r: &mut RingReader<i16>) -> Vec<i16> {
        let mut out = Vec::new();
        while let Some(item) = r.try_next() {
            if let Item::Data { data, .. } = item {
                out.extend_from_slice(data);
            }
        }
        out
    }

    fn ramp(from: i16, n: usize) -> Vec<i16> {
        (0..n as i16).map(|i| from + i).collect()
    }

    #[test]
    fn a_writer_carries_no_stash_inline() {
        // A stash is cache-padded (384 bytes); every edge's writer lives for the whole call.
        assert!(
            std::mem::size_of::<RingWriter<i16>>() <= 256,
            "{} bytes",
            std::mem::size_of::<RingWriter<i16>>()
        );
    }

    #[test]
    fn a_reader_s_copy_buffer_grows_with_its_reads_not_with_the_ring() {
        // 1 s at 24 kHz, read 20 ms at a time: the reader holds one chunk, not a second ring.
        let (mut w, mut r) = ring::<i16>(cfg(24_000, WhenFull::Block), "t".into());
        let mut got = Vec::new();
        for k in 0..20 {
            w.push_data(&ramp(k * 480, 480));
            got.extend(drain_all(&mut r));
        }
        assert_eq!(got, ramp(0, 20 * 480));
        assert_eq!(r.buf.capacity(), 480);
        // A burst is read whole (up to the most one read hands out), the buffer grown for it.
        let burst: Vec<i16> = (0..20_000).map(|i| (i % 1000) as i16).collect();
        w.push_data(&burst);
        let Some(Item::Data { data, .. }) = r.try_next() else {
            panic!("the burst is there to read")
        };
        assert_eq!(data, &burst[..MAX_READ_CHUNK]);
        assert_eq!(r.buf.capacity(), MAX_READ_CHUNK);
        let mut rest = drain_all(&mut r);
        rest.splice(0..0, burst[..MAX_READ_CHUNK].iter().copied());
        assert_eq!(rest, burst);
        assert_eq!(r.buf.capacity(), MAX_READ_CHUNK);
    }

    #[test]
    fn drop_newest_keeps_the_first_capacity_units_and_counts_the_rest() {
        let (mut w, mut r) = ring::<i16>(cfg(100, WhenFull::DropNewest), "t".into());
        // 7 chunks of 20 into 100: the first 5 fit, 40 are dropped.
        for k in 0..7 {
            w.push_data(&ramp(k * 20, 20));
        }
        assert_eq!(drain_all(&mut r), ramp(0, 100));
        let c = w.counts();
        assert_eq!((c.pushed, c.popped, c.dropped), (140, 100, 40));
    }

    #[test]
    fn drop_oldest_keeps_exactly_the_newest_capacity_units() {
        for total_chunks in [6i16, 10, 13, 40] {
            let (mut w, mut r) = ring::<i16>(cfg(100, WhenFull::DropOldest), "t".into());
            for k in 0..total_chunks {
                w.push_data(&ramp(k * 20, 20));
            }
            let total = total_chunks as usize * 20;
            // Reader drains what is in the ring, then the writer moves its stash in.
            let mut got = drain_all(&mut r);
            assert!(w.try_flush());
            got.extend(drain_all(&mut r));
            let expected = ramp(total as i16 - 100, 100);
            assert_eq!(got, expected, "after {total} pushed");
            let c = w.counts();
            assert_eq!(c.pushed, total as u64);
            assert_eq!(c.popped, 100);
            assert_eq!(c.dropped, total as u64 - 100, "after {total} pushed");
        }
    }

    #[test]
    fn drop_oldest_with_a_keeping_up_reader_loses_nothing() {
        let (mut w, mut r) = ring::<i16>(cfg(100, WhenFull::DropOldest), "t".into());
        let mut got = Vec::new();
        for k in 0..50 {
            w.push_data(&ramp(k * 20, 20));
            got.extend(drain_all(&mut r));
        }
        assert_eq!(got, ramp(0, 1000));
        assert_eq!(w.counts().dropped, 0);
    }

    #[tokio::test]
    async fn block_holds_what_does_not_fit_until_the_reader_makes_room() {
        let (mut w, mut r) = ring::<i16>(cfg(100, WhenFull::Block), "t".into());
        for k in 0..7 {
            w.push_data(&ramp(k * 20, 20));
        }
        assert!(w.needs_flush());
        assert_eq!(w.counts().dropped, 0);
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            while let Some(item) = r.next().await {
                if let Item::Data { data, .. } = item {
                    got.extend_from_slice(data);
                }
            }
            got
        });
        w.flush().await;
        w.close().await;
        let got = reader.await.unwrap();
        assert_eq!(got, ramp(0, 140));
    }

    #[test]
    fn marks_arrive_between_the_data_they_were_pushed_between() {
        let (mut w, mut r) = ring::<i16>(cfg(100, WhenFull::Block), "t".into());
        w.push_data(&ramp(0, 30));
        w.push_mark(Mark::Event(Box::new(Event::SpeechStarted {
            at: Duration::from_millis(1),
        })));
        w.push_data(&ramp(30, 10));
        let mut seq = Vec::new();
        while let Some(item) = r.try_next() {
            match item {
                Item::Data { pos, data } => seq.push(format!("data {pos}+{}", data.len())),
                Item::Event(_) => seq.push("event".into()),
                Item::Text(_) => seq.push("text".into()),
            }
        }
        assert_eq!(seq, ["data 0+30", "event", "data 30+10"]);
    }

    #[test]
    fn framed_edges_deliver_whole_packets_and_drop_whole_packets() {
        let config = RingConfig {
            capacity: 10,
            frame_capacity: 8,
            when_full: WhenFull::DropOldest,
            framed: true,
        };
        let (mut w, mut r) = ring::<u8>(config, "t".into());
        assert_eq!(w.when_full(), WhenFull::DropNewest);
        w.push_data(&[1, 2, 3]);
        w.push_data(&[4, 5, 6, 7]);
        w.push_data(&[8, 9, 10, 11]); // does not fit: dropped whole
        let mut packets = Vec::new();
        while let Some(Item::Data { data, .. }) = r.try_next() {
            packets.push(data.to_vec());
        }
        assert_eq!(packets, vec![vec![1, 2, 3], vec![4, 5, 6, 7]]);
        assert_eq!(w.counts().dropped, 4);
    }

    #[tokio::test]
    async fn closing_ends_the_stream_after_everything_queued() {
        let (mut w, mut r) = ring::<i16>(cfg(64, WhenFull::DropOldest), "t".into());
        w.push_data(&ramp(0, 10));
        w.close().await;
        assert!(matches!(r.next().await, Some(Item::Data { .. })));
        assert!(r.next().await.is_none());
    }

    #[tokio::test]
    async fn a_gone_reader_never_blocks_the_writer() {
        let (mut w, r) = ring::<i16>(cfg(10, WhenFull::Block), "t".into());
        drop(r);
        w.push_data(&ramp(0, 50));
        w.flush().await;
        assert_eq!(w.counts().discarded, 50);
        assert_eq!(w.counts().dropped, 0);
    }

    #[tokio::test]
    async fn send_data_waits_instead_of_dropping() {
        let (mut w, mut r) = ring::<i16>(cfg(16, WhenFull::DropNewest), "t".into());
        let reader = tokio::spawn(async move {
            let mut n = 0;
            while let Some(item) = r.next().await {
                if let Item::Data { data, .. } = item {
                    n += data.len();
                }
            }
            n
        });
        for k in 0..20 {
            w.send_data(&ramp(k * 10, 10)).await;
        }
        w.close().await;
        assert_eq!(reader.await.unwrap(), 200);
    }
}
