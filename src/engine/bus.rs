//! What comes out of a running pipeline besides its sinks' frames, on two lanes:
//!
//! - **telemetry** ([`BusEvent`]): transcripts, stream events, actions, the latency ledger, for
//!   whoever listens (the call's record, `caly replay`, tests). A broadcast: a subscriber that
//!   falls behind misses events (and is told how many), so nothing that steers a call depends
//!   on it;
//! - **signals** ([`Signal`]): the few facts the call controller steers by (VAD decisions, the
//!   model's turn and reply events, a stage asking to hang up), on a dedicated lane with one
//!   consumer that polls it first. A pipeline's end or failure is not a signal: it is reported
//!   by [`crate::engine::pipeline::Pipeline::finished`], which cannot be missed either.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;
use tokio::sync::{broadcast, mpsc};

use crate::engine::frame::{Event, TextChunk};

/// Bus events a slow subscriber may fall behind by before it misses some. A few events arrive
/// per caller turn (VAD decisions, transcript pieces, a ledger), so this is minutes of a call.
/// Each slot holds a pointer to a shared event (about 40 bytes with tokio's bookkeeping), and
/// every slot is written when the channel is made, so all of them are resident for the call's
/// life: a slot holding the event itself (about 220 bytes) made this the largest part of a
/// call (224 KiB at 1,024 slots; README "Performance").
const BUS_CAPACITY: usize = 256;
/// Signals the controller may leave unread. It reads them before anything else, a few per
/// caller turn arrive, so reaching this means the controller has stalled: the excess is
/// dropped and counted ([`Bus::signals_dropped`]), never waited on by a stage.
const SIGNAL_CAPACITY: usize = 256;

/// Something that happened inside a call, for whoever listens (transport, store, replay).
#[derive(Debug, Clone, Serialize)]
pub struct BusEvent {
    /// The stage it came from.
    pub stage: Arc<str>,
    /// What happened.
    pub kind: BusKind,
    /// When it was published (a barge-in's reaction time is measured from here).
    #[serde(skip)]
    pub at: std::time::Instant,
}

/// What a [`BusEvent`] reports.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum BusKind {
    /// A stream event (VAD decisions, DTMF).
    Event(Event),
    /// A transcript segment.
    Text(TextChunk),
    /// A stage ended the stream cleanly; the call should end.
    Ended {
        /// Why.
        reason: String,
    },
    /// One turn's latency ledger, written by the transport once the turn's first bot audio has
    /// been sent (and, if Exotel echoed it, played).
    Latency(TurnLatency),
    /// A test sink consumed its `frames`-th frame (benches time a frame's trip with it).
    Consumed {
        /// Frames consumed so far.
        frames: u64,
    },
    /// A stage failed; the call has been ended.
    Failed {
        /// What went wrong.
        error: String,
    },
}

/// Where one turn's time went, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TurnLatency {
    /// Caller stopped speaking (first of Caly's VAD and the model's) → first bot audio from the
    /// model: the model's time, network included.
    pub model_ms: f64,
    /// First bot audio from the model → its first chunk written to Exotel (or formed and held
    /// only until an earlier reply's tail has played): Caly's own share.
    pub engine_ms: f64,
    /// Caller stopped speaking → first bot audio written to Exotel.
    pub voice_to_voice_sent_ms: f64,
    /// Caller stopped speaking → first bot audio confirmed played by Exotel's mark echo.
    pub voice_to_voice_played_ms: Option<f64>,
}

/// A fact the call controller steers by.
#[derive(Debug, Clone)]
pub struct Signal {
    /// The stage it came from.
    pub stage: Arc<str>,
    /// What it says.
    pub kind: SignalKind,
    /// When it was raised (a barge-in's reaction time is measured from here).
    pub at: std::time::Instant,
}

/// What a [`Signal`] says.
#[derive(Debug, Clone, PartialEq)]
pub enum SignalKind {
    /// A stream event that steers the call ([`Event::steers`]): published on the telemetry
    /// lane too. Boxed: the lane's queue keeps blocks of 32 signals for the whole call, and
    /// an event held inline made each slot 200 bytes.
    Event(Box<Event>),
    /// A stage asks for the call to end once what is queued for the caller has played.
    Hangup {
        /// Why (recorded with the call's end).
        reason: String,
    },
    /// A stage hands the caller to a person: the call ends, once what is queued for the
    /// caller has played, as handed off (the provider's flow connects the person).
    HandOff {
        /// Why (recorded with the call's end).
        reason: String,
    },
}

/// The receiving end of a pipeline's signal lane, owned by the call controller.
#[derive(Debug)]
pub struct Signals {
    rx: mpsc::Receiver<Signal>,
}

impl Signals {
    /// The next signal; `None` once every stage (and the bus) is gone.
    pub async fn recv(&mut self) -> Option<Signal> {
        self.rx.recv().await
    }

    /// A signal if one is waiting now.
    pub fn try_recv(&mut self) -> Option<Signal> {
        self.rx.try_recv().ok()
    }
}

/// The per-call outward lanes of a pipeline: telemetry (broadcast) and, when a controller
/// asked for them, signals.
#[derive(Debug, Clone)]
pub struct Bus {
    tx: broadcast::Sender<Arc<BusEvent>>,
    signals: Option<mpsc::Sender<Signal>>,
    signals_dropped: Arc<AtomicU64>,
}

impl Bus {
    /// A new bus with no subscribers yet and no signal lane (signals go nowhere).
    pub fn new() -> Bus {
        Bus {
            tx: broadcast::channel(BUS_CAPACITY).0,
            signals: None,
            signals_dropped: Arc::default(),
        }
    }

    /// A new bus with a signal lane, and its receiving end.
    pub fn with_signals() -> (Bus, Signals) {
        let (tx, rx) = mpsc::channel(SIGNAL_CAPACITY);
        let mut bus = Bus::new();
        bus.signals = Some(tx);
        (bus, Signals { rx })
    }

    /// Publishes an event; without subscribers it goes nowhere. An event that steers the call
    /// also goes on the signal lane.
    pub fn publish(&self, event: BusEvent) {
        if let BusKind::Event(e) = &event.kind
            && e.steers()
            && self.signals.is_some()
        {
            self.signal(Signal {
                stage: Arc::clone(&event.stage),
                kind: SignalKind::Event(Box::new(e.clone())),
                at: event.at,
            });
        }
        // Nobody listening (a bench, the fused front half alone): nothing to allocate.
        if self.tx.receiver_count() == 0 {
            return;
        }
        // One allocation per event, shared by every subscriber: events come a few per caller
        // turn, never per audio chunk.
        let _ = self.tx.send(Arc::new(event));
    }

    /// Raises a signal for the controller, never waiting.
    pub fn signal(&self, signal: Signal) {
        let Some(tx) = self.signals.as_ref() else {
            return;
        };
        if let Err(mpsc::error::TrySendError::Full(_)) = tx.try_send(signal) {
            self.signals_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Signals dropped because the controller had left [`SIGNAL_CAPACITY`] unread.
    pub fn signals_dropped(&self) -> u64 {
        self.signals_dropped.load(Ordering::Relaxed)
    }

    /// How many senders exist (every running stage holds one): a way to see tasks have ended.
    pub fn sender_count(&self) -> usize {
        self.tx.strong_count()
    }

    /// Subscribes to events published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<BusEvent>> {
        self.tx.subscribe()
    }
}

impl Default for Bus {
    fn default() -> Self {
        Bus::new()
    }
}
