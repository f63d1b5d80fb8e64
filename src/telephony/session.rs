//! One Exotel stream, end to end: the WebSocket session loop.
//!
//! Inbound messages feed the call's `call_audio` stage; the `call_playback` stage's output is
//! chunked, paced and marked back out ([`Outbound`]). A VAD `SpeechConfirmed` while the bot is
//! playing is a barge-in: `clear` goes out at once, queued bot audio is dropped and every
//! stage gets `Interrupt` with what the caller heard. The call ends on `stop`, on socket loss,
//! when media stops arriving (`idle_timeout`), at `max_duration`, when the pipeline ends, or
//! when the server shuts down; in every case the pipeline is drained and every task ended.
//! Bad input never ends a call: it is skipped, counted, and logged once per burst.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message};
use futures::{Sink, SinkExt, Stream, StreamExt};
use serde::Serialize;
use tokio::sync::broadcast;
use tokio::time::sleep_until;
use tokio_util::sync::CancellationToken;

use crate::frame::{Control, Event, Frame, Packet};
use crate::graph::Graph;
use crate::metrics::Metrics;
use crate::pipeline::{
    Bus, BusEvent, BusKind, Pipeline, PipelineOptions, SinkHandle, SourceHandle, TurnLatency,
};
use crate::store::{Record, Recorder};
use crate::telephony::call_log::CallLog;
use crate::telephony::exotel::{Inbound, decode_payload, write_clear, write_mark, write_media};
use crate::telephony::outbound::Outbound;

/// A text message larger than this is skipped unread (Exotel's own are a few KB).
pub const MAX_TEXT_BYTES: usize = 256 * 1024;
/// How long a socket write may take before the peer counts as gone.
const SEND_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a pipeline may take to drain at the end of a call.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// The compiled pipeline for each sample rate calls may ask for.
#[derive(Debug, Default)]
pub struct GraphSet {
    by_rate: HashMap<u32, Arc<Graph>>,
}

impl GraphSet {
    /// Adds the graph compiled for `rate`.
    pub fn insert(&mut self, rate: u32, graph: Arc<Graph>) {
        self.by_rate.insert(rate, graph);
    }

    /// The graph for `rate`, if calls at that rate are accepted.
    pub fn get(&self, rate: u32) -> Option<&Arc<Graph>> {
        self.by_rate.get(&rate)
    }

    /// The rates calls may ask for.
    pub fn rates(&self) -> Vec<u32> {
        let mut r: Vec<u32> = self.by_rate.keys().copied().collect();
        r.sort_unstable();
        r
    }
}

/// What every session of a server shares.
#[derive(Clone)]
pub struct SessionConfig {
    /// Compiled pipelines by rate.
    pub graphs: Arc<GraphSet>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// End the call when no media has arrived for this long.
    pub idle_timeout: Duration,
    /// End the call when it has lasted this long.
    pub max_duration: Duration,
    /// Most bot audio held for playback at once.
    pub max_bot_queue: Duration,
    /// Cancelled when the server wants every call ended now.
    pub end_calls: CancellationToken,
    /// Outside services the call's stages use.
    pub services: Arc<crate::stage::Services>,
    /// Where each call's report goes, if someone listens (tests, tools); never waited on.
    pub reports: Option<tokio::sync::mpsc::Sender<SessionReport>>,
    /// Where the call's record goes (transcript, intents, actions, latencies); never waited
    /// on.
    pub recorder: Option<Recorder>,
}

/// Why a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CallEnd {
    /// Exotel sent `stop` (the caller hung up or the flow moved on).
    Hangup,
    /// The socket closed or failed without a `stop`.
    SocketLost,
    /// No media for `idle_timeout`.
    IdleTimeout,
    /// The call reached `max_duration`.
    MaxDuration,
    /// The server ended it while shutting down.
    Shutdown,
    /// A stage ended the stream on purpose.
    PipelineEnded,
    /// A stage failed.
    PipelineFailed,
}

impl CallEnd {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            CallEnd::Hangup => "hangup",
            CallEnd::SocketLost => "socket_lost",
            CallEnd::IdleTimeout => "idle_timeout",
            CallEnd::MaxDuration => "max_duration",
            CallEnd::Shutdown => "shutdown",
            CallEnd::PipelineEnded => "pipeline_ended",
            CallEnd::PipelineFailed => "failed",
        }
    }
}

/// Kinds of bad input, skipped and counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BadInput {
    /// Not JSON, or JSON without an `event`.
    Malformed,
    /// A `media` payload that is not base64.
    BadBase64,
    /// A `media` payload with an odd number of bytes (not whole PCM16 samples).
    OddBytes,
    /// An event we do not know.
    UnknownEvent,
    /// A text message over [`MAX_TEXT_BYTES`].
    Oversized,
    /// A binary frame (Exotel sends text only).
    Binary,
    /// `media` (or `dtmf`) before `start`.
    BeforeStart,
    /// A `dtmf` without a valid digit.
    BadDtmf,
}

impl BadInput {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            BadInput::Malformed => "malformed",
            BadInput::BadBase64 => "bad_base64",
            BadInput::OddBytes => "odd_bytes",
            BadInput::UnknownEvent => "unknown_event",
            BadInput::Oversized => "oversized",
            BadInput::Binary => "binary",
            BadInput::BeforeStart => "before_start",
            BadInput::BadDtmf => "bad_dtmf",
        }
    }
}

/// What happened in one call.
#[derive(Debug, Clone, Serialize)]
pub struct SessionReport {
    /// Why it ended.
    pub end: CallEnd,
    /// Exotel's stream id.
    pub stream_sid: Option<String>,
    /// Exotel's call id.
    pub call_sid: Option<String>,
    /// The stream's sample rate.
    pub sample_rate: u32,
    /// `media` messages accepted.
    pub media_in: u64,
    /// Messages skipped, by kind.
    pub bad_input: HashMap<&'static str, u64>,
    /// `media` chunks sent.
    pub media_out: u64,
    /// Reaction time of each barge-in: VAD decision to `clear` written.
    pub barge_ins: Vec<Duration>,
    /// The latency ledger: one entry per turn the bot answered.
    pub turns: Vec<TurnLatency>,
    /// Bot audio dropped because the playback queue was full, in bytes.
    pub bot_audio_dropped: u64,
    /// Audio the pipeline's rings dropped for being full.
    pub audio_dropped: Duration,
    /// Bot chunks that went out after the caller's playback had run dry mid-reply.
    pub playback_underruns: u64,
    /// How long the session lasted.
    pub duration: Duration,
}

/// The call once `start` has arrived.
struct Call {
    pipeline: Pipeline,
    source: SourceHandle,
    outbound: Outbound,
    stream_sid: String,
    payload: Vec<u8>,
}

enum Wake {
    Shutdown,
    Bus(Option<BusEvent>),
    Socket(Option<Result<Message, axum::Error>>),
    Sink(bool),
    Pace,
    Idle,
    Max,
}

struct Session<'c, S> {
    socket: S,
    config: &'c SessionConfig,
    rate: u32,
    call: Option<Call>,
    bus: Option<broadcast::Receiver<BusEvent>>,
    sink: Option<SinkHandle>,
    report: SessionReport,
    /// Logging is quiet until a good message has arrived since the last bad one.
    bad_burst: bool,
    idle_deadline: Instant,
    text: String,
    b64: String,
    ledger: Ledger,
    /// Speech was heard since the last stop: the next stop opens a turn.
    ledger_armed: bool,
    /// What is being recorded about the call, once it has started.
    log: Option<CallLog>,
}

/// The turn being timed: when the caller stopped, when the model's audio came, when its
/// first chunk went to Exotel (and under which mark), when that mark came back.
#[derive(Default)]
struct Ledger {
    caller_stopped: Option<Instant>,
    model_audio: Option<Instant>,
    sent: Option<(Instant, String)>,
}

/// Runs one stream until it ends. `rate` is the stream's sample rate from the URL (checked by
/// the caller against [`GraphSet::rates`]).
pub async fn run_session<S>(socket: S, rate: u32, config: &SessionConfig) -> SessionReport
where
    S: Stream<Item = Result<Message, axum::Error>> + Sink<Message, Error = axum::Error> + Unpin,
{
    let started = Instant::now();
    let mut s = Session {
        socket,
        config,
        rate,
        call: None,
        bus: None,
        sink: None,
        report: SessionReport {
            end: CallEnd::SocketLost,
            stream_sid: None,
            call_sid: None,
            sample_rate: rate,
            media_in: 0,
            bad_input: HashMap::new(),
            media_out: 0,
            barge_ins: Vec::new(),
            turns: Vec::new(),
            bot_audio_dropped: 0,
            audio_dropped: Duration::ZERO,
            playback_underruns: 0,
            duration: Duration::ZERO,
        },
        bad_burst: false,
        idle_deadline: started + config.idle_timeout,
        text: String::new(),
        b64: String::new(),
        ledger: Ledger::default(),
        ledger_armed: false,
        log: None,
    };
    // Three timers, each registered once and moved only when its deadline does: a media
    // message only bumps `idle_deadline`, and the idle timer re-arms lazily when it fires early.
    let max_timer = sleep_until((started + config.max_duration).into());
    let idle_timer = sleep_until(s.idle_deadline.into());
    let pace_timer = sleep_until(started.into());
    tokio::pin!(max_timer, idle_timer, pace_timer);
    let mut pace_at: Option<Instant> = None;
    let end = loop {
        let pace = s
            .call
            .as_ref()
            .and_then(|c| c.outbound.wake_at(Instant::now()));
        if pace != pace_at {
            pace_at = pace;
            if let Some(at) = pace {
                pace_timer.as_mut().reset(at.into());
            }
        }
        let wake = tokio::select! {
            biased;
            () = config.end_calls.cancelled() => Wake::Shutdown,
            ev = next_bus(&mut s.bus) => Wake::Bus(ev),
            msg = s.socket.next() => Wake::Socket(msg),
            alive = sink_ready(&mut s.sink) => Wake::Sink(alive),
            () = &mut pace_timer, if pace_at.is_some() => Wake::Pace,
            () = &mut idle_timer => Wake::Idle,
            () = &mut max_timer => Wake::Max,
        };
        if matches!(wake, Wake::Pace) {
            pace_at = None;
        }
        if matches!(wake, Wake::Idle) && s.idle_deadline > Instant::now() {
            idle_timer.as_mut().reset(s.idle_deadline.into());
            continue;
        }
        let ended = match wake {
            Wake::Shutdown => Some(CallEnd::Shutdown),
            Wake::Idle => Some(CallEnd::IdleTimeout),
            Wake::Max => Some(CallEnd::MaxDuration),
            Wake::Bus(Some(event)) => s.on_bus(event).await,
            Wake::Bus(None) => {
                s.bus = None;
                None
            }
            Wake::Socket(None | Some(Err(_))) => Some(CallEnd::SocketLost),
            Wake::Socket(Some(Ok(message))) => s.on_message(message).await,
            Wake::Sink(alive) => {
                s.drain_sink(alive);
                None
            }
            Wake::Pace => None,
        };
        if let Some(end) = ended {
            break end;
        }
        if !s.pump_outbound().await {
            break CallEnd::SocketLost;
        }
    };
    s.finish(end, started).await
}

async fn next_bus(bus: &mut Option<broadcast::Receiver<BusEvent>>) -> Option<BusEvent> {
    let Some(rx) = bus.as_mut() else {
        return std::future::pending().await;
    };
    loop {
        match rx.recv().await {
            Ok(e) => return Some(e),
            Err(broadcast::error::RecvError::Lagged(_)) => continue,
            Err(broadcast::error::RecvError::Closed) => return None,
        }
    }
}

async fn sink_ready(sink: &mut Option<SinkHandle>) -> bool {
    match sink.as_mut() {
        Some(s) => s.ready().await,
        None => std::future::pending().await,
    }
}

impl<S> Session<'_, S>
where
    S: Stream<Item = Result<Message, axum::Error>> + Sink<Message, Error = axum::Error> + Unpin,
{
    fn bad(&mut self, kind: BadInput) {
        *self.report.bad_input.entry(kind.label()).or_default() += 1;
        Metrics::count(&self.config.metrics.bad_input, "kind", kind.label());
        if !self.bad_burst {
            self.bad_burst = true;
            tracing::warn!(kind = kind.label(), "Skipping bad input from Exotel.");
        }
    }

    fn good(&mut self) {
        self.bad_burst = false;
    }

    async fn send_text(&mut self) -> bool {
        let message = Message::Text(self.text.as_str().into());
        matches!(
            tokio::time::timeout(SEND_TIMEOUT, self.socket.send(message)).await,
            Ok(Ok(()))
        )
    }

    async fn on_message(&mut self, message: Message) -> Option<CallEnd> {
        let text = match message {
            Message::Text(t) => t,
            Message::Binary(_) => {
                self.bad(BadInput::Binary);
                return None;
            }
            Message::Close(_) => return Some(CallEnd::SocketLost),
            Message::Ping(_) | Message::Pong(_) => return None,
        };
        if text.len() > MAX_TEXT_BYTES {
            self.bad(BadInput::Oversized);
            return None;
        }
        let Ok(msg) = Inbound::parse(text.as_str()) else {
            self.bad(BadInput::Malformed);
            return None;
        };
        match msg.event.as_ref() {
            "media" => self.on_media(&msg),
            "start" => self.on_start(msg),
            "dtmf" => self.on_dtmf(&msg),
            "mark" => {
                self.good();
                let name = msg.mark.as_ref().and_then(|m| m.name.as_deref());
                if let (Some(call), Some(name)) = (self.call.as_mut(), name) {
                    call.outbound.on_mark(name, Instant::now());
                }
                if name.is_some() && self.ledger.sent.as_ref().map(|(_, m)| m.as_str()) == name {
                    self.close_turn(Some(Instant::now()));
                }
            }
            "connected" => self.good(),
            "stop" | "closed" => return Some(CallEnd::Hangup),
            _ => self.bad(BadInput::UnknownEvent),
        }
        None
    }

    fn on_media(&mut self, msg: &Inbound<'_>) {
        let Some(call) = self.call.as_mut() else {
            self.bad(BadInput::BeforeStart);
            return;
        };
        let Some(media) = msg.media.as_ref() else {
            self.bad(BadInput::Malformed);
            return;
        };
        // Bot audio on the caller's track (Exotel's "both tracks" option) is not the caller.
        if media.track.as_deref().is_some_and(|t| t != "inbound") {
            self.good();
            return;
        }
        let audio = match decode_payload(&media.payload, &mut call.payload) {
            Ok(audio) if audio.len() % 2 == 0 => audio,
            Ok(_) => {
                self.bad(BadInput::OddBytes);
                return;
            }
            Err(_) => {
                self.bad(BadInput::BadBase64);
                return;
            }
        };
        call.source.push(Frame::Packet(Packet { bytes: audio }));
        self.report.media_in += 1;
        self.config.metrics.media_in.inc();
        self.idle_deadline = Instant::now() + self.config.idle_timeout;
        self.good();
    }

    fn on_dtmf(&mut self, msg: &Inbound<'_>) {
        let Some(call) = self.call.as_mut() else {
            self.bad(BadInput::BeforeStart);
            return;
        };
        let digit = msg
            .dtmf
            .as_ref()
            .and_then(|d| d.digit.as_deref())
            .and_then(|d| d.trim_matches('"').chars().next())
            .filter(|c| c.is_ascii_digit() || *c == '*' || *c == '#');
        match digit {
            Some(digit) => {
                call.source.push(Frame::Event(&Event::Dtmf { digit }));
                self.good();
            }
            None => self.bad(BadInput::BadDtmf),
        }
    }

    fn on_start(&mut self, msg: Inbound<'_>) {
        if self.call.is_some() {
            // A second `start` changes nothing.
            return;
        }
        let start = msg.start.unwrap_or_default();
        let stream_sid = msg
            .stream_sid
            .map(|s| s.into_owned())
            .or(start.stream_sid)
            .unwrap_or_default();
        let Some(graph) = self.config.graphs.get(self.rate) else {
            return;
        };
        let bus = Bus::new();
        self.bus = Some(bus.subscribe());
        let call_id: Arc<str> = start
            .call_sid
            .as_deref()
            .unwrap_or(stream_sid.as_str())
            .into();
        let options = PipelineOptions {
            call_id: Some(Arc::clone(&call_id)),
            // Per-stage time, for `caly_stage_frame_seconds`: two clock reads per stage per
            // frame.
            profile: true,
            bus: Some(bus),
            services: Some(Arc::clone(&self.config.services)),
            caller: start.from.clone(),
        };
        let mut pipeline = match Pipeline::start(Arc::clone(graph), options) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(call = %call_id, error = %e, "Pipeline could not be built.");
                return;
            }
        };
        let Some((_, source)) = pipeline.take_first_source() else {
            tracing::error!(call = %call_id, "Pipeline has no source for the caller's audio.");
            return;
        };
        self.sink = pipeline.take_first_sink().map(|(_, s)| s);
        if let Some(mf) = start.media_format.as_ref()
            && mf.sample_rate.is_some_and(|r| r != u64::from(self.rate))
        {
            tracing::warn!(
                url_rate = self.rate,
                start_rate = mf.sample_rate,
                "Exotel's start names another rate; the URL's rate is used."
            );
        }
        let span = tracing::Span::current();
        span.record("call_sid", start.call_sid.as_deref().unwrap_or("-"));
        span.record("stream_sid", stream_sid.as_str());
        // The number is logged whole on purpose: the log formatter masks it (`logging`).
        tracing::info!(
            call = %call_id,
            stream = %stream_sid,
            rate = self.rate,
            from = start.from.as_deref().unwrap_or("-"),
            pipeline = %graph.name,
            "Call started."
        );
        if let Some(recorder) = &self.config.recorder {
            let id = start
                .call_sid
                .as_deref()
                .map_or_else(crate::store::new_call_id, crate::store::call_id_for_sid);
            recorder.record(Record::CallStarted {
                id: id.clone(),
                call_sid: start.call_sid.clone(),
                stream_sid: Some(stream_sid.clone()).filter(|s| !s.is_empty()),
                from: start
                    .from
                    .as_deref()
                    .and_then(crate::store::normalize_number),
                to: start.to.as_deref().and_then(crate::store::normalize_number),
                direction: None,
                pipeline: graph.name.clone(),
                at_ms: crate::store::now_ms(),
            });
            self.log = Some(CallLog::new(recorder.clone(), id, start.call_sid.clone()));
        }
        self.config.metrics.calls_active.inc();
        self.report.stream_sid = Some(stream_sid.clone());
        self.report.call_sid = start.call_sid;
        self.call = Some(Call {
            pipeline,
            source,
            outbound: Outbound::new(self.rate, self.config.max_bot_queue),
            stream_sid,
            payload: Vec::new(),
        });
        self.good();
    }

    async fn on_bus(&mut self, event: BusEvent) -> Option<CallEnd> {
        // The transport publishes the latency ledger itself and records it in `close_turn`.
        if let Some(log) = self.log.as_mut()
            && !matches!(event.kind, BusKind::Latency(_))
        {
            log.on_bus(&event.kind);
        }
        match event.kind {
            BusKind::Event(Event::SpeechConfirmed { .. }) => {
                self.barge_in(event.at).await;
                None
            }
            BusKind::Event(Event::SpeechStarted { .. } | Event::ModelSpeechStarted) => {
                self.ledger_armed = true;
                None
            }
            BusKind::Event(Event::SpeechStopped { .. } | Event::ModelSpeechStopped) => {
                // Caly's VAD and the model's both report the same stop: the first one after
                // some speech opens the turn, the other is ignored.
                if self.ledger_armed {
                    self.ledger_armed = false;
                    self.close_turn(None);
                    self.ledger.caller_stopped = Some(event.at);
                }
                None
            }
            BusKind::Event(Event::ReplyAudioStarted { .. }) => {
                if self.ledger.caller_stopped.is_some() && self.ledger.model_audio.is_none() {
                    self.ledger.model_audio = Some(event.at);
                }
                None
            }
            BusKind::Event(Event::ModelReconnected { .. }) => {
                self.config.metrics.realtime_reconnects.inc();
                None
            }
            BusKind::Event(Event::ModelError { code, .. }) => {
                let kind = if code == "fatal" {
                    "fatal"
                } else {
                    "recoverable"
                };
                Metrics::count(&self.config.metrics.realtime_errors, "kind", kind);
                None
            }
            BusKind::Failed { .. } => Some(CallEnd::PipelineFailed),
            BusKind::Ended { .. } => Some(CallEnd::PipelineEnded),
            _ => None,
        }
    }

    /// The caller spoke over the bot: `clear` first, then drop what is queued, then tell the
    /// stages (the realtime stage cancels and truncates to what was heard).
    async fn barge_in(&mut self, decided: Instant) {
        let now = Instant::now();
        let Some(call) = self.call.as_mut() else {
            return;
        };
        if !call.outbound.is_playing(now) {
            return;
        }
        let heard = call.outbound.heard(now);
        write_clear(&mut self.text, &call.stream_sid);
        if !self.send_text().await {
            return;
        }
        let reaction = decided.elapsed();
        let Some(call) = self.call.as_mut() else {
            return;
        };
        call.outbound.clear(Instant::now());
        if let Some(sink) = self.sink.as_mut() {
            sink.discard();
        }
        call.pipeline.control_all(&Control::Interrupt { heard });
        self.report.barge_ins.push(reaction);
        self.config.metrics.barge_ins.inc();
        self.config
            .metrics
            .barge_in_reaction_seconds
            .observe(reaction.as_secs_f64());
        tracing::info!(
            reaction_us = reaction.as_micros() as u64,
            heard_ms = heard.as_millis() as u64,
            "Barge-in: cleared the bot's audio."
        );
    }

    /// Writes the ledger entry of the turn being timed, if it got as far as sending audio.
    fn close_turn(&mut self, played: Option<Instant>) {
        let ledger = std::mem::take(&mut self.ledger);
        let (Some(stopped), Some(model), Some((sent, _))) =
            (ledger.caller_stopped, ledger.model_audio, ledger.sent)
        else {
            return;
        };
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let turn = TurnLatency {
            model_ms: ms(model.saturating_duration_since(stopped)),
            engine_ms: ms(sent.saturating_duration_since(model)),
            voice_to_voice_sent_ms: ms(sent.saturating_duration_since(stopped)),
            voice_to_voice_played_ms: played.map(|p| ms(p.saturating_duration_since(stopped))),
        };
        let m = &self.config.metrics;
        m.turn_engine_seconds.observe(turn.engine_ms / 1000.0);
        m.turn_model_seconds.observe(turn.model_ms / 1000.0);
        m.voice_to_voice_sent_seconds
            .observe(turn.voice_to_voice_sent_ms / 1000.0);
        if let Some(p) = turn.voice_to_voice_played_ms {
            m.voice_to_voice_played_seconds.observe(p / 1000.0);
        }
        if let Some(call) = self.call.as_ref() {
            call.pipeline.bus().publish(BusEvent {
                stage: Arc::from("transport"),
                kind: BusKind::Latency(turn),
                at: Instant::now(),
            });
        }
        if let Some(log) = self.log.as_mut() {
            log.on_bus(&BusKind::Latency(turn));
        }
        self.report.turns.push(turn);
    }

    fn drain_sink(&mut self, alive: bool) {
        let now = Instant::now();
        let (Some(sink), Some(call)) = (self.sink.as_mut(), self.call.as_mut()) else {
            return;
        };
        while let Some(frame) = sink.try_next() {
            match frame {
                Frame::Packet(p) => call.outbound.push(p.bytes, now),
                Frame::Event(Event::ReplyEnded) => call.outbound.reply_ended(),
                _ => {}
            }
        }
        if !alive {
            self.sink = None;
        }
    }

    /// Sends every chunk the pacer allows now, each followed by its mark. `false` if the
    /// socket is gone.
    async fn pump_outbound(&mut self) -> bool {
        loop {
            let Some(call) = self.call.as_mut() else {
                return true;
            };
            let Some(chunk) = call.outbound.next_chunk(Instant::now()) else {
                return true;
            };
            write_media(&mut self.text, &mut self.b64, &call.stream_sid, chunk.bytes);
            let mark = chunk.mark.to_owned();
            let sid = call.stream_sid.clone();
            if !self.send_text().await {
                return false;
            }
            if self.ledger.model_audio.is_some() && self.ledger.sent.is_none() {
                self.ledger.sent = Some((Instant::now(), mark.clone()));
            }
            write_mark(&mut self.text, &sid, &mark);
            if !self.send_text().await {
                return false;
            }
            self.report.media_out += 1;
            self.config.metrics.media_out.inc();
        }
    }

    /// Ends the call: stop feeding the pipeline, let it drain (bounded), end every task, and
    /// close the socket unless the peer already did.
    async fn finish(mut self, end: CallEnd, started: Instant) -> SessionReport {
        self.close_turn(None);
        // Nobody will play what is still coming out: let the pipeline drop it, not wait on us.
        self.sink = None;
        if let Some(call) = self.call.take() {
            let Call {
                mut pipeline,
                source,
                outbound,
                ..
            } = call;
            let _ = tokio::time::timeout(DRAIN_TIMEOUT, source.close()).await;
            let _ = tokio::time::timeout(DRAIN_TIMEOUT, pipeline.finished()).await;
            for (stage, counts) in pipeline.stats().stages {
                if counts.frames_in == 0 {
                    continue;
                }
                let label = [("stage", stage.to_string())];
                let m = &self.config.metrics;
                m.stage_frames
                    .get_or_create(&label)
                    .inc_by(counts.frames_in);
                m.stage_frame_seconds
                    .get_or_create(&label)
                    .observe(counts.busy_ns as f64 / counts.frames_in as f64 / 1e9);
            }
            for (ring, dropped) in pipeline.audio_dropped() {
                if !dropped.is_zero() {
                    self.config
                        .metrics
                        .audio_dropped_seconds
                        .get_or_create(&[("ring", ring.to_string())])
                        .inc_by(dropped.as_secs_f64());
                }
                self.report.audio_dropped += dropped;
            }
            self.report.bot_audio_dropped = outbound.dropped();
            self.report.playback_underruns = outbound.underruns();
            self.config
                .metrics
                .playback_underruns
                .inc_by(outbound.underruns());
            self.config.metrics.calls_active.dec();
            drop(pipeline);
        }
        // What the stages said while draining (a last transcript, an action) is still owed to
        // the record.
        if let (Some(bus), Some(log)) = (self.bus.as_mut(), self.log.as_mut()) {
            while let Ok(event) = bus.try_recv() {
                if !matches!(event.kind, BusKind::Latency(_)) {
                    log.on_bus(&event.kind);
                }
            }
        }
        self.bus = None;
        if !matches!(end, CallEnd::SocketLost | CallEnd::Hangup) {
            let code = if end == CallEnd::Shutdown { 1001 } else { 1000 };
            let frame = CloseFrame {
                code,
                reason: end.label().into(),
            };
            let _ =
                tokio::time::timeout(SEND_TIMEOUT, self.socket.send(Message::Close(Some(frame))))
                    .await;
        }
        let _ = tokio::time::timeout(SEND_TIMEOUT, self.socket.close()).await;
        Metrics::count(&self.config.metrics.calls_ended, "outcome", end.label());
        self.report.end = end;
        self.report.duration = started.elapsed();
        tracing::info!(
            call = self.report.call_sid.as_deref().unwrap_or("-"),
            outcome = end.label(),
            seconds = self.report.duration.as_secs_f64(),
            media_in = self.report.media_in,
            media_out = self.report.media_out,
            barge_ins = self.report.barge_ins.len(),
            "Call ended."
        );
        if let Some(log) = self.log.take() {
            log.end(&self.report);
        }
        self.report
    }
}
