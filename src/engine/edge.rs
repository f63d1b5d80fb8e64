//! The edges of a running pipeline: the typed ends of a ring ([`EdgeWriter`], [`EdgeReader`]),
//! a task's merged inputs ([`Inlet`]), and the control lane ([`ControlRx`], [`Peers`]).

use std::future::poll_fn;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::mpsc;

use crate::engine::format::{AudioFormat, Format};
use crate::engine::frame::{AudioChunk, Control, Frame, Packet};
use crate::engine::ring::{Item, Mark, RingConfig, RingCounts, RingReader, RingWriter, ring};

/// The producing end of one edge, typed by the edge's format.
pub enum EdgeWriter {
    /// Decoded audio.
    Samples(RingWriter<i16>),
    /// Encoded audio.
    Bytes(RingWriter<u8>),
    /// Text or events.
    Frames(RingWriter<u8>),
}

impl EdgeWriter {
    fn mark(frame: Frame<'_>) -> Option<Mark> {
        match frame {
            Frame::Text(t) => Some(Mark::Text(Box::new(t.clone()))),
            Frame::Event(e) => Some(Mark::Event(Box::new(e.clone()))),
            Frame::Audio(_) | Frame::Packet(_) => None,
        }
    }

    /// Offers a frame without waiting (the ring's policy applies).
    pub fn push_frame(&mut self, frame: Frame<'_>) {
        match (self, frame) {
            (EdgeWriter::Samples(w), Frame::Audio(a)) => w.push_data(a.samples),
            (EdgeWriter::Bytes(w), Frame::Packet(p)) => w.push_data(p.bytes),
            (EdgeWriter::Samples(w), f) => push_mark_of(w, f),
            (EdgeWriter::Bytes(w), f) | (EdgeWriter::Frames(w), f) => push_mark_of(w, f),
        }
    }

    /// Offers a frame and waits until it is in the ring, whatever the policy.
    pub async fn send_frame(&mut self, frame: Frame<'_>) {
        match (self, frame) {
            (EdgeWriter::Samples(w), Frame::Audio(a)) => w.send_data(a.samples).await,
            (EdgeWriter::Bytes(w), Frame::Packet(p)) => w.send_data(p.bytes).await,
            (EdgeWriter::Samples(w), f) => send_mark_of(w, f).await,
            (EdgeWriter::Bytes(w), f) | (EdgeWriter::Frames(w), f) => send_mark_of(w, f).await,
        }
    }

    /// Whether [`flush`](Self::flush) has waiting to do.
    pub fn needs_flush(&self) -> bool {
        match self {
            EdgeWriter::Samples(w) => w.needs_flush(),
            EdgeWriter::Bytes(w) | EdgeWriter::Frames(w) => w.needs_flush(),
        }
    }

    /// Waits while a `block` ring is full; moves stashed data forward otherwise.
    pub async fn flush(&mut self) {
        match self {
            EdgeWriter::Samples(w) => w.flush().await,
            EdgeWriter::Bytes(w) | EdgeWriter::Frames(w) => w.flush().await,
        }
    }

    /// Ends the stream after what was pushed.
    pub async fn close(self) {
        match self {
            EdgeWriter::Samples(w) => w.close().await,
            EdgeWriter::Bytes(w) | EdgeWriter::Frames(w) => w.close().await,
        }
    }

    /// The ring's counters.
    pub fn counts(&self) -> RingCounts {
        match self {
            EdgeWriter::Samples(w) => w.counts(),
            EdgeWriter::Bytes(w) | EdgeWriter::Frames(w) => w.counts(),
        }
    }
}

fn push_mark_of<S: Copy + Default + Send + 'static>(w: &mut RingWriter<S>, frame: Frame<'_>) {
    match EdgeWriter::mark(frame) {
        Some(m) => w.push_mark(m),
        None => debug_assert!(false, "frame does not match the edge's negotiated format"),
    }
}

async fn send_mark_of<S: Copy + Default + Send + 'static>(w: &mut RingWriter<S>, frame: Frame<'_>) {
    if let Some(m) = EdgeWriter::mark(frame) {
        w.send_mark(m).await;
    }
}

/// The consuming end of one edge.
pub enum EdgeReader {
    /// Decoded audio at a format (for pts).
    Samples(RingReader<i16>, AudioFormat),
    /// Encoded audio.
    Bytes(RingReader<u8>),
    /// Text or events.
    Frames(RingReader<u8>),
}

impl EdgeReader {
    pub(crate) fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        match self {
            EdgeReader::Samples(r, _) => r.poll_ready(cx),
            EdgeReader::Bytes(r) | EdgeReader::Frames(r) => r.poll_ready(cx),
        }
    }

    pub(crate) fn is_finished(&mut self) -> bool {
        match self {
            EdgeReader::Samples(r, _) => r.is_finished(),
            EdgeReader::Bytes(r) | EdgeReader::Frames(r) => r.is_finished(),
        }
    }

    pub(crate) fn has_item(&mut self) -> bool {
        match self {
            EdgeReader::Samples(r, _) => r.has_item(),
            EdgeReader::Bytes(r) | EdgeReader::Frames(r) => r.has_item(),
        }
    }

    pub(crate) fn try_next(&mut self) -> Option<Frame<'_>> {
        match self {
            EdgeReader::Samples(r, format) => {
                let format = *format;
                r.try_next().map(|item| match item {
                    Item::Data { pos, data } => Frame::Audio(AudioChunk {
                        pts: format.duration_of(pos),
                        samples: data,
                    }),
                    Item::Text(t) => Frame::Text(t),
                    Item::Event(e) => Frame::Event(e),
                })
            }
            EdgeReader::Bytes(r) | EdgeReader::Frames(r) => r.try_next().map(|item| match item {
                Item::Data { data, .. } => Frame::Packet(Packet { bytes: data }),
                Item::Text(t) => Frame::Text(t),
                Item::Event(e) => Frame::Event(e),
            }),
        }
    }
}

/// Creates a ring typed for `format`.
pub(crate) fn edge_ring(
    config: RingConfig,
    format: Format,
    label: Arc<str>,
) -> (EdgeWriter, EdgeReader) {
    match format {
        Format::Audio(a) => {
            let (w, r) = ring::<i16>(config, label);
            (EdgeWriter::Samples(w), EdgeReader::Samples(r, a))
        }
        Format::Encoded(_) => {
            let (w, r) = ring::<u8>(config, label);
            (EdgeWriter::Bytes(w), EdgeReader::Bytes(r))
        }
        Format::Text | Format::Events => {
            let mut config = config;
            config.capacity = 0;
            let (w, r) = ring::<u8>(config, label);
            (EdgeWriter::Frames(w), EdgeReader::Frames(r))
        }
    }
}

struct InletPort {
    reader: EdgeReader,
    target: usize,
    finished: bool,
}

/// The merged inputs of one task: every incoming ring, each tagged with where its frames go
/// (a node of a fused task, or an input index of a task stage).
#[derive(Default)]
pub struct Inlet {
    ports: Vec<InletPort>,
    next: usize,
}

impl Inlet {
    pub(crate) fn add(&mut self, reader: EdgeReader, target: usize) {
        self.ports.push(InletPort {
            reader,
            target,
            finished: false,
        });
    }

    /// Ready when an item is available (`true`) or every input has ended (`false`).
    pub fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<bool> {
        let mut open = false;
        for p in self.ports.iter_mut().filter(|p| !p.finished) {
            if p.reader.poll_ready(cx).is_ready() {
                if p.reader.is_finished() {
                    p.finished = true;
                } else {
                    return Poll::Ready(true);
                }
            } else {
                open = true;
            }
        }
        if open {
            Poll::Pending
        } else {
            Poll::Ready(false)
        }
    }

    /// Waits until an item is available (`true`) or every input has ended (`false`).
    pub async fn ready(&mut self) -> bool {
        poll_fn(|cx| self.poll_ready(cx)).await
    }

    /// Takes an available item, rotating fairly over the inputs: `(target, frame)`.
    pub fn try_next(&mut self) -> Option<(usize, Frame<'_>)> {
        let n = self.ports.len();
        let start = self.next;
        let i = (0..n)
            .map(|k| (start + k) % n)
            .find(|&i| !self.ports[i].finished && self.ports[i].reader.has_item())?;
        self.next = (i + 1) % n.max(1);
        let p = &mut self.ports[i];
        let target = p.target;
        p.reader.try_next().map(|f| (target, f))
    }

    /// Waits for the next item; `None` once every input has ended. For task stages the target
    /// is the input index, in `inputs` order.
    pub async fn next(&mut self) -> Option<(usize, Frame<'_>)> {
        if !self.ready().await {
            return None;
        }
        self.try_next()
    }
}

/// A control message for one node of a task.
pub(crate) struct Addressed {
    pub(crate) node: usize,
    pub(crate) control: Control,
}

/// The control lane of a [`TaskStage`].
pub struct ControlRx(pub(crate) mpsc::Receiver<Addressed>);

impl ControlRx {
    /// The next control message; `None` once the pipeline is gone.
    pub async fn recv(&mut self) -> Option<Control> {
        self.0.recv().await.map(|a| a.control)
    }
}

/// Lets a task stage send control messages to other stages of its call (the `agent` stage
/// answers through the `realtime` stage). It holds weak senders, so it never keeps a stage's
/// lane open, and it is filled once every stage of the call is built.
#[derive(Clone, Default)]
pub struct Peers(pub(crate) Arc<std::sync::OnceLock<Vec<Peer>>>);

pub(crate) struct Peer {
    pub(crate) id: Arc<str>,
    pub(crate) kind: &'static str,
    pub(crate) tx: mpsc::WeakSender<Addressed>,
    pub(crate) node: usize,
}

impl Peers {
    fn deliver(peer: &Peer, control: Control) -> Result<(), ControlError> {
        let Some(tx) = peer.tx.upgrade() else {
            return Err(ControlError::Ended(peer.id.to_string()));
        };
        tx.try_send(Addressed {
            node: peer.node,
            control,
        })
        .map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => ControlError::Full(peer.id.to_string()),
            mpsc::error::TrySendError::Closed(_) => ControlError::Ended(peer.id.to_string()),
        })
    }

    /// Sends to the stage with this id, never waiting.
    pub fn send(&self, stage: &str, control: Control) -> Result<(), ControlError> {
        let peer = self
            .0
            .get()
            .and_then(|p| p.iter().find(|p| &*p.id == stage))
            .ok_or_else(|| ControlError::UnknownStage(stage.to_owned()))?;
        Peers::deliver(peer, control)
    }

    /// Sends to every stage of this kind; how many took it.
    pub fn send_to_kind(&self, kind: &str, control: &Control) -> usize {
        self.0.get().map_or(0, |peers| {
            peers
                .iter()
                .filter(|p| p.kind == kind)
                .filter(|p| Peers::deliver(p, control.clone()).is_ok())
                .count()
        })
    }
}

/// Why a control message was not delivered.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ControlError {
    /// No stage has that id.
    #[error("no stage `{0}` in this pipeline")]
    UnknownStage(String),
    /// The stage's control lane is full; the message was dropped.
    #[error("control lane of `{0}` is full")]
    Full(String),
    /// The stage's task has ended.
    #[error("stage `{0}` has ended")]
    Ended(String),
}
