//! The call controller: one call, from the provider's `start` to its end, over any
//! [`Transport`].
//!
//! Caller audio and keys feed the pipeline's source; the pipeline's bot audio is chunked,
//! paced and marked back out ([`Outbound`]). The controller steers by the pipeline's signal
//! lane (never by the lossy telemetry bus): a VAD `SpeechConfirmed` while the bot is playing
//! is a barge-in (`clear` at once, queued bot audio dropped, `Interrupt` with what the caller
//! heard to every stage); the VAD's and the model's turn events time each turn ([`Ledger`]); a
//! stage's `Hangup` ends the call once the bot's audio has played. A call ends on the
//! provider's `stop`, on socket loss, when media stops arriving (`idle_timeout`), at
//! `max_duration`, when a stage ends the stream or fails, when the pipeline cannot start, when
//! a stage hangs up, or when the server shuts down; in every case the pipeline is drained,
//! every task ended and the call's record written. Bad input never ends a call: it is skipped,
//! counted, and logged once per burst.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, mpsc};
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;

use crate::call::conversation::{
    Conversation, ConversationSpec, FILLER, HAND_OFF_LINE, IDLE_GOODBYE, IDLE_PROMPT, Idle, Keys,
    Verdict, keypad_text,
};
use crate::call::graphs::GraphSet;
use crate::call::handoffs::HandOffs;
use crate::call::ledger::Ledger;
use crate::call::live::{Activity, LiveBoard, Tracked};
use crate::call::playout::{ChunkRules, Outbound};
use crate::call::record::CallLog;
use crate::call::report::{CallEnd, CallReport};
use crate::call::transport::{Inbound, StreamStart, Transport};
use crate::engine::bus::{Bus, BusEvent, BusKind, Signal, SignalKind, Signals, TurnLatency};
use crate::engine::frame::{Control, Event, Frame, Packet};
use crate::engine::pipeline::{Outcome, Pipeline, PipelineOptions, SinkHandle, SourceHandle};
use crate::engine::stage::Services;
use crate::metrics::Metrics;
use crate::store::{Record, Recorder};

/// How long a pipeline may take to drain at the end of a call.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest a stage's hang-up waits for the bot's audio to finish playing.
const HANGUP_PLAYOUT_LIMIT: Duration = Duration::from_secs(30);
/// After a hang-up is asked for, how long the bot's last words have to start arriving.
const HANGUP_SETTLE: Duration = Duration::from_millis(300);
/// While a reply is still arriving from the pipeline, how often a hang-up looks again.
const HANGUP_POLL: Duration = Duration::from_millis(50);
/// How long a hang-up that waits for the bot's last reply (a goodbye, a hand-off line) waits
/// for that reply to start.
const REPLY_WAIT: Duration = Duration::from_secs(8);

/// What every call of a server shares.
#[derive(Clone)]
pub struct CallConfig {
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
    pub services: Arc<Services>,
    /// Where each call's report goes, if someone listens (tests, tools); never waited on.
    pub reports: Option<mpsc::Sender<CallReport>>,
    /// Where the call's record goes (transcript, intents, actions, latencies); never waited
    /// on.
    pub recorder: Option<Recorder>,
    /// Calls handed to a person, for the provider's flow to ask about (Exotel's Passthru).
    pub hand_offs: Arc<HandOffs>,
    /// What the model's tokens cost.
    pub prices: Arc<crate::call::cost::Prices>,
    /// Calls in progress, for the console; `None` keeps no board.
    pub live: Option<Arc<LiveBoard>>,
}

/// The call once the stream has started.
struct Live {
    pipeline: Pipeline,
    source: SourceHandle,
    outbound: Outbound,
}

enum Wake<'a> {
    Shutdown,
    Signal(Option<Signal>),
    Ending(Outcome),
    Inbound(Option<Inbound<'a>>),
    Bus(Option<Arc<BusEvent>>),
    Sink(bool),
    Pace,
    Hangup,
    Talk,
    Idle,
    Max,
}

/// Everything about the call except the transport, so the transport can be borrowed by what
/// it received while the state handles it.
struct State<'c> {
    config: &'c CallConfig,
    rate: u32,
    rules: ChunkRules,
    call: Option<Live>,
    sink: Option<SinkHandle>,
    signals: Option<Signals>,
    bus: Option<broadcast::Receiver<Arc<BusEvent>>>,
    report: CallReport,
    ledger: Ledger,
    /// What is being recorded about the call, once it has started.
    log: Option<CallLog>,
    /// Logging is quiet until a good message has arrived since the last bad one.
    bad_burst: bool,
    idle_deadline: Instant,
    /// A stage asked to hang up: the call ends once the bot's audio has played.
    hangup: Option<Hangup>,
    /// A reply has started arriving from the pipeline and has not ended yet.
    reply_open: bool,
    /// Who speaks when: turn-taking, the silent caller, the keypad.
    talk: Conversation,
    /// The model is producing a response.
    response_active: bool,
    /// The caller is speaking (by the VAD or the model).
    caller_talking: bool,
    /// The model has called a tool and not yet started the response that answers it.
    tool_running: bool,
    /// When the stream started (where timeline events are placed).
    stream_started: Option<Instant>,
    /// The call's entry on the live board.
    live: Option<Tracked>,
}

/// A hang-up waiting for the bot's last words to play.
#[derive(Debug, Clone, Copy)]
struct Hangup {
    asked: Instant,
    deadline: Instant,
    /// How the call will be recorded as ending.
    end: CallEnd,
    /// The bot still has to say its last reply (a goodbye, the hand-off line).
    wait_reply: bool,
    /// That reply has started.
    reply_seen: bool,
}

/// Runs one call until it ends. `rate` is the stream's sample rate (checked by the caller
/// against [`GraphSet::rates`]).
pub async fn run_call<T: Transport>(
    mut transport: T,
    rate: u32,
    config: &CallConfig,
) -> CallReport {
    let started = Instant::now();
    let mut st = State {
        config,
        rate,
        rules: transport.chunk_rules(),
        call: None,
        sink: None,
        signals: None,
        bus: None,
        report: CallReport::new(rate),
        ledger: Ledger::new(),
        log: None,
        bad_burst: false,
        idle_deadline: started + config.idle_timeout,
        hangup: None,
        reply_open: false,
        talk: Conversation::new(ConversationSpec::default()),
        response_active: false,
        caller_talking: false,
        tool_running: false,
        stream_started: None,
        live: None,
    };
    // Timers, each registered once and moved only when its deadline does: a media message
    // only bumps `idle_deadline`, and the idle timer re-arms lazily when it fires early.
    let max_timer = sleep_until(started + config.max_duration);
    let idle_timer = sleep_until(st.idle_deadline);
    let pace_timer = sleep_until(started);
    let hangup_timer = sleep_until(started);
    let talk_timer = sleep_until(started);
    tokio::pin!(max_timer, idle_timer, pace_timer, hangup_timer, talk_timer);
    let mut pace_at: Option<Instant> = None;
    let mut hangup_at: Option<Instant> = None;
    let mut talk_at: Option<Instant> = None;
    let end = loop {
        let now = Instant::now();
        let pace = st.call.as_ref().and_then(|c| c.outbound.wake_at(now));
        if pace != pace_at {
            pace_at = pace;
            if let Some(at) = pace {
                pace_timer.as_mut().reset(at);
            }
        }
        if let Some(hangup) = st.hangup {
            match st.hangup_wait(hangup, now) {
                None => break hangup.end,
                _ if now >= hangup.deadline => break hangup.end,
                Some(at) => {
                    let at = at.min(hangup.deadline);
                    if hangup_at != Some(at) {
                        hangup_at = Some(at);
                        hangup_timer.as_mut().reset(at);
                    }
                }
            }
        }
        let talk = st.talk_due(now);
        if talk != talk_at {
            talk_at = talk;
            if let Some(at) = talk {
                talk_timer.as_mut().reset(at);
            }
        }
        let wake = tokio::select! {
            biased;
            () = config.end_calls.cancelled() => Wake::Shutdown,
            signal = next_signal(&mut st.signals) => Wake::Signal(signal),
            outcome = ending(&mut st.call) => Wake::Ending(outcome),
            message = transport.recv() => Wake::Inbound(message),
            event = next_bus(&mut st.bus, &mut st.report.record_lagged) => Wake::Bus(event),
            alive = sink_ready(&mut st.sink) => Wake::Sink(alive),
            () = &mut pace_timer, if pace_at.is_some() => Wake::Pace,
            () = &mut hangup_timer, if hangup_at.is_some() => Wake::Hangup,
            () = &mut talk_timer, if talk_at.is_some() => Wake::Talk,
            () = &mut idle_timer => Wake::Idle,
            () = &mut max_timer => Wake::Max,
        };
        let ended = match wake {
            Wake::Shutdown => Some(CallEnd::Shutdown),
            Wake::Max => Some(CallEnd::MaxDuration),
            Wake::Idle if st.idle_deadline > Instant::now() => {
                idle_timer.as_mut().reset(st.idle_deadline);
                None
            }
            Wake::Idle => Some(CallEnd::IdleTimeout),
            Wake::Signal(Some(signal)) => st.on_signal(signal, &mut transport).await,
            Wake::Signal(None) => {
                st.signals = None;
                None
            }
            Wake::Ending(Outcome::Failed { .. }) => Some(CallEnd::PipelineFailed),
            Wake::Ending(_) => Some(CallEnd::PipelineEnded),
            Wake::Inbound(None) => Some(CallEnd::SocketLost),
            Wake::Inbound(Some(message)) => st.on_inbound(message),
            Wake::Bus(Some(event)) => {
                st.on_bus(&event);
                None
            }
            Wake::Bus(None) => {
                st.bus = None;
                None
            }
            Wake::Sink(alive) => {
                st.drain_sink(alive);
                None
            }
            Wake::Pace => {
                pace_at = None;
                None
            }
            Wake::Hangup => {
                hangup_at = None;
                None
            }
            Wake::Talk => {
                talk_at = None;
                st.on_talk_timer(Instant::now());
                None
            }
        };
        if let Some(end) = ended {
            break end;
        }
        if !st.pump_outbound(&mut transport).await {
            break CallEnd::SocketLost;
        }
        st.live_refresh(Instant::now());
    };
    st.finish(end, &mut transport, started).await
}

async fn next_signal(signals: &mut Option<Signals>) -> Option<Signal> {
    match signals.as_mut() {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn ending(call: &mut Option<Live>) -> Outcome {
    match call.as_mut() {
        Some(c) => c.pipeline.ending().await,
        None => std::future::pending().await,
    }
}

async fn next_bus(
    bus: &mut Option<broadcast::Receiver<Arc<BusEvent>>>,
    lagged: &mut u64,
) -> Option<Arc<BusEvent>> {
    let Some(rx) = bus.as_mut() else {
        return std::future::pending().await;
    };
    loop {
        match rx.recv().await {
            Ok(e) => return Some(e),
            Err(broadcast::error::RecvError::Lagged(n)) => *lagged += n,
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

impl State<'_> {
    fn bad(&mut self, kind: &'static str) {
        *self.report.bad_input.entry(kind).or_default() += 1;
        Metrics::count(&self.config.metrics.bad_input, "kind", kind);
        if !self.bad_burst {
            self.bad_burst = true;
            tracing::warn!(kind, "Skipping bad input from the provider.");
        }
    }

    fn good(&mut self) {
        self.bad_burst = false;
    }

    fn on_inbound(&mut self, message: Inbound<'_>) -> Option<CallEnd> {
        match message {
            Inbound::Media(audio) => {
                let Some(call) = self.call.as_mut() else {
                    self.bad("before_start");
                    return None;
                };
                call.source.push(Frame::Packet(Packet { bytes: audio }));
                self.report.media_in += 1;
                self.config.metrics.media_in.inc();
                self.idle_deadline = Instant::now() + self.config.idle_timeout;
                self.good();
            }
            Inbound::Dtmf(digit) => {
                let Some(call) = self.call.as_mut() else {
                    self.bad("before_start");
                    return None;
                };
                call.source.push(Frame::Event(&Event::Dtmf { digit }));
                self.good();
                if let Some(keys) = self.talk.key(digit, Instant::now()) {
                    self.on_keys(keys);
                }
            }
            Inbound::Mark(name) => {
                self.good();
                let now = Instant::now();
                if let Some(call) = self.call.as_mut() {
                    call.outbound.on_mark(name, now);
                }
                if let Some(turn) = self.ledger.mark(name, now) {
                    self.turn(turn);
                }
            }
            Inbound::Start(start) => return self.on_start(start),
            Inbound::Stop => return Some(CallEnd::Hangup),
            Inbound::Bad(kind) => self.bad(kind),
            Inbound::Other => self.good(),
        }
        None
    }

    /// Starts the call's pipeline. A stream whose pipeline cannot start is ended at once
    /// (there is no call to have): `Some(StartFailed)`.
    fn on_start(&mut self, start: StreamStart) -> Option<CallEnd> {
        if self.call.is_some() {
            // A second `start` changes nothing.
            return None;
        }
        self.good();
        let graph = self.config.graphs.get(self.rate)?.clone();
        let call_id: Arc<str> = start
            .call_sid
            .as_deref()
            .unwrap_or(start.stream_sid.as_str())
            .into();
        let span = tracing::Span::current();
        span.record("call_sid", start.call_sid.as_deref().unwrap_or("-"));
        span.record("stream_sid", start.stream_sid.as_str());
        self.report.stream_sid = Some(start.stream_sid.clone());
        self.report.call_sid.clone_from(&start.call_sid);
        let (bus, signals) = Bus::with_signals();
        let telemetry = bus.subscribe();
        // The record's id, decided before the pipeline starts so stages that write rows of
        // their own (the agents' ledger) file them under this call.
        let record_id = self.config.recorder.as_ref().map(|_| {
            start
                .call_sid
                .as_deref()
                .map_or_else(crate::store::new_call_id, crate::store::call_id_for_sid)
        });
        let options = PipelineOptions {
            record_id: record_id.as_deref().map(Arc::from),
            call_id: Some(Arc::clone(&call_id)),
            // Per-stage time, for `caly_stage_frame_seconds`: two clock reads per stage per
            // frame.
            profile: true,
            bus: Some(bus),
            services: Some(Arc::clone(&self.config.services)),
            caller: start.from.clone(),
        };
        let mut pipeline = match Pipeline::start(Arc::clone(&graph), options) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(call = %call_id, error = %e, "Pipeline could not be built; ending the stream.");
                return Some(CallEnd::StartFailed);
            }
        };
        let Some((_, source)) = pipeline.take_first_source() else {
            tracing::error!(call = %call_id, "Pipeline has no source for the caller's audio; ending the stream.");
            return Some(CallEnd::StartFailed);
        };
        self.sink = pipeline.take_first_sink().map(|(_, s)| s);
        self.signals = Some(signals);
        self.bus = Some(telemetry);
        if start.sample_rate.is_some_and(|r| r != u64::from(self.rate)) {
            tracing::warn!(
                url_rate = self.rate,
                start_rate = start.sample_rate,
                "The provider's start names another rate; the URL's rate is used."
            );
        }
        // The number is logged whole on purpose: the log formatter masks it (`logging`).
        tracing::info!(
            call = %call_id,
            stream = %start.stream_sid,
            rate = self.rate,
            from = start.from.as_deref().unwrap_or("-"),
            pipeline = %graph.name,
            "Call started."
        );
        if let (Some(recorder), Some(id)) = (&self.config.recorder, record_id) {
            recorder.record(Record::CallStarted {
                id: id.clone(),
                call_sid: start.call_sid.clone(),
                stream_sid: Some(start.stream_sid.clone()).filter(|s| !s.is_empty()),
                from: start
                    .from
                    .as_deref()
                    .and_then(crate::vocab::normalize_number),
                to: start.to.as_deref().and_then(crate::vocab::normalize_number),
                direction: None,
                pipeline: graph.name.clone(),
                at_ms: crate::store::now_ms(),
            });
            self.log = Some(CallLog::new(
                recorder.clone(),
                id.clone(),
                start.call_sid.clone(),
            ));
        }
        if let Some(board) = &self.config.live {
            let id = self
                .log
                .as_ref()
                .map_or_else(|| call_id.to_string(), |log| log.id().to_owned());
            self.live = Some(Tracked::start(
                Arc::clone(board),
                id,
                start.call_sid.clone(),
                start.from.as_deref(),
            ));
        }
        self.stream_started = Some(Instant::now());
        self.config.metrics.calls_active.inc();
        self.talk = Conversation::new(
            graph
                .section::<ConversationSpec>()
                .cloned()
                .unwrap_or_default(),
        );
        self.call = Some(Live {
            pipeline,
            source,
            outbound: Outbound::new(self.rules, self.rate, self.config.max_bot_queue),
        });
        None
    }

    /// What the call's record keeps from the telemetry lane.
    fn on_bus(&mut self, event: &BusEvent) {
        // The controller records the latency ledger itself, in `turn`.
        if let Some(log) = self.log.as_mut()
            && !matches!(event.kind, BusKind::Latency(_))
        {
            log.on_bus(&event.kind);
        }
    }

    async fn on_signal<T: Transport>(
        &mut self,
        signal: Signal,
        transport: &mut T,
    ) -> Option<CallEnd> {
        let at = Instant::from_std(signal.at);
        match signal.kind {
            SignalKind::Event(event) => match *event {
                Event::SpeechConfirmed { .. } => {
                    let cut_off = self.barge_in(at, transport).await;
                    if cut_off {
                        self.talk.barged_in();
                    }
                }
                Event::SpeechStarted { .. } | Event::ModelSpeechStarted => {
                    self.ledger.speech_started();
                    self.caller_talking = true;
                    let now = Instant::now();
                    let bot_left = self
                        .call
                        .as_ref()
                        .filter(|c| c.outbound.is_playing(now))
                        .map(|c| c.outbound.playing_until(now).saturating_duration_since(now));
                    self.talk.caller_started(bot_left);
                }
                ref stopped @ (Event::SpeechStopped { .. } | Event::ModelSpeechStopped) => {
                    self.caller_talking = false;
                    if let Some(turn) = self.ledger.speech_stopped(at) {
                        self.turn(turn);
                    }
                    // The model's turn detection commits the caller's turn.
                    if *stopped == Event::ModelSpeechStopped {
                        self.caller_turn_ended();
                    }
                }
                Event::ToolCall { ref name, .. } => {
                    self.talk.tool_called(Instant::now());
                    self.tool_running = true;
                    self.event("tool_call", name.clone());
                }
                Event::ResponseStarted { .. } => {
                    self.talk.response_started();
                    self.tool_running = false;
                    self.response_active = true;
                    if let Some(h) = self.hangup.as_mut() {
                        h.reply_seen = true;
                    }
                }
                Event::ResponseDone { model, usage, .. } => {
                    self.response_active = false;
                    self.count_usage(&model, &usage);
                }
                Event::IntentDetected {
                    intent: crate::vocab::Intent::Goodbye,
                    confidence,
                    accepted: true,
                    is_final: true,
                    ..
                } if self.talk.spec().hang_up_on_goodbye => {
                    if let Some(live) = self.live.as_mut() {
                        live.intent(crate::vocab::Intent::Goodbye.name(), confidence);
                    }
                    self.hang_up(
                        CallEnd::CompletedByBot,
                        "the caller said goodbye".into(),
                        true,
                        &signal.stage,
                    );
                }
                Event::ReplyAudioStarted { .. } => {
                    self.talk.model_spoke();
                    self.ledger.model_audio(at);
                }
                Event::IntentDetected {
                    intent,
                    confidence,
                    is_final: true,
                    ..
                } => {
                    if let Some(live) = self.live.as_mut() {
                        live.intent(intent.name(), confidence);
                    }
                }
                Event::ModelReconnected { .. } => {
                    self.config.metrics.realtime_reconnects.inc();
                }
                Event::ModelError { fatal, .. } => {
                    let kind = if fatal { "fatal" } else { "recoverable" };
                    Metrics::count(&self.config.metrics.realtime_errors, "kind", kind);
                }
                _ => {}
            },
            SignalKind::Hangup { reason } => {
                self.hang_up(CallEnd::CompletedByBot, reason, false, &signal.stage);
            }
            SignalKind::HandOff { reason } => {
                self.hang_up(CallEnd::HandedOff, reason, true, &signal.stage);
            }
        }
        None
    }

    /// Adds a response's tokens to the call, priced by the table, and to the server's counters.
    fn count_usage(&mut self, model: &str, usage: &crate::engine::frame::TokenUse) {
        if usage.is_empty() {
            return;
        }
        self.report.usage.add(usage);
        let m = &self.config.metrics;
        m.count_tokens(usage);
        match self.config.prices.cost(model, usage) {
            Some(cost) => {
                self.report.cost_usd += cost;
                m.model_cost_usd.inc_by(cost);
            }
            None => crate::call::cost::warn_unpriced(model),
        }
    }

    /// The call is to end as `end` once the bot's audio has played (and, with `wait_reply`,
    /// once the reply still to come has been said). The first such request wins.
    fn hang_up(&mut self, end: CallEnd, reason: String, wait_reply: bool, by: &str) {
        if self.hangup.is_some() {
            return;
        }
        tracing::info!(by, %reason, end = end.label(), "Ending the call once the bot's last words have played.");
        if end == CallEnd::HandedOff {
            if let Some(sid) = self.report.call_sid.as_deref() {
                self.config.hand_offs.insert(sid);
            }
            self.event("hand_off", reason.clone());
        }
        self.report.hangup_reason = Some(reason);
        let now = Instant::now();
        // A reply already under way is the one to wait for.
        let under_way = self.response_active || self.reply_open;
        self.hangup = Some(Hangup {
            asked: now,
            deadline: now + HANGUP_PLAYOUT_LIMIT,
            end,
            wait_reply,
            reply_seen: under_way,
        });
    }

    /// The model committed the caller's turn: answer it, unless it was a backchannel.
    fn caller_turn_ended(&mut self) {
        match self.talk.caller_turn_ended() {
            Verdict::Answer => {
                if let Some(call) = self.call.as_ref() {
                    call.pipeline.control_all(&Control::Respond);
                }
            }
            Verdict::Backchannel => {
                self.config.metrics.backchannels.inc();
                tracing::debug!("A backchannel over the bot: not answered.");
            }
        }
    }

    /// A keypad entry is complete.
    fn on_keys(&mut self, keys: Keys) {
        let Some(call) = self.call.as_ref() else {
            return;
        };
        match keys {
            Keys::Entry(digits) => {
                self.report.keypad_entries += 1;
                call.pipeline
                    .control_all(&Control::CallerText(keypad_text(&digits)));
                self.event("keypad", digits.to_string());
            }
            Keys::HandOff => {
                call.pipeline
                    .control_all(&Control::Say(HAND_OFF_LINE.into()));
                self.hang_up(
                    CallEnd::HandedOff,
                    "the caller pressed the key for a person".into(),
                    true,
                    "keypad",
                );
            }
        }
    }

    /// When the conversation's clock (a silent caller, a keypad pause) next needs a look.
    /// Moves the idle clock first: it runs only while nobody speaks or is about to.
    fn talk_due(&mut self, now: Instant) -> Option<Instant> {
        if self.call.is_none() || self.someone_talking(now) || self.hangup.is_some() {
            self.talk.busy();
        } else {
            self.talk.quiet(now);
        }
        [
            self.talk.idle_due(),
            self.talk.keys_due(),
            self.talk.filler_due(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// The caller is speaking, or the bot is: its audio playing, arriving, or being made.
    fn someone_talking(&self, now: Instant) -> bool {
        self.caller_talking
            || self.reply_open
            || self.response_active
            || self
                .call
                .as_ref()
                .is_some_and(|c| c.outbound.is_playing(now))
    }

    fn on_talk_timer(&mut self, now: Instant) {
        if let Some(keys) = self.talk.on_keys_pause(now) {
            self.on_keys(keys);
        }
        let quiet = !self.someone_talking(now);
        if self.talk.on_filler(now, quiet)
            && let Some(call) = self.call.as_ref()
        {
            tracing::debug!("A tool is slow: the bot says a filler.");
            self.report.fillers += 1;
            call.pipeline.control_all(&Control::Say(FILLER.into()));
            self.event("filler", FILLER.into());
        }
        let Some(idle) = self.talk.on_idle(now) else {
            return;
        };
        let Some(call) = self.call.as_ref() else {
            return;
        };
        match idle {
            Idle::Prompt(n) => {
                tracing::info!(
                    prompt = n,
                    "The caller is silent: asking whether they are still there."
                );
                self.report.idle_prompts += 1;
                call.pipeline.control_all(&Control::Say(IDLE_PROMPT.into()));
                self.event("idle_prompt", format!("prompt {n}"));
            }
            Idle::GiveUp => {
                call.pipeline
                    .control_all(&Control::Say(IDLE_GOODBYE.into()));
                self.hang_up(
                    CallEnd::CallerSilent,
                    "the caller stayed silent".into(),
                    true,
                    "controller",
                );
            }
        }
    }

    /// `None` once the hang-up can happen: the bot's last words have had time to start, have
    /// all arrived, and have played. Otherwise when to look again.
    fn hangup_wait(&self, hangup: Hangup, now: Instant) -> Option<Instant> {
        let call = self.call.as_ref()?;
        if hangup.wait_reply && !hangup.reply_seen {
            let give_up = hangup.asked + REPLY_WAIT;
            if now < give_up {
                return Some(give_up);
            }
        }
        if self.reply_open || self.response_active {
            return Some(now + HANGUP_POLL);
        }
        if call.outbound.is_playing(now) {
            return Some(call.outbound.playing_until(now));
        }
        let settled = hangup.asked + HANGUP_SETTLE;
        (now < settled).then_some(settled)
    }

    /// The caller spoke over the bot: `clear` first, then drop what is queued, then tell the
    /// stages (the realtime stage cancels and truncates to what was heard).
    /// `true` if the bot was playing and has been cut off.
    async fn barge_in<T: Transport>(&mut self, decided: Instant, transport: &mut T) -> bool {
        let now = Instant::now();
        let Some(call) = self.call.as_mut() else {
            return false;
        };
        if !call.outbound.is_playing(now) {
            return false;
        }
        let heard = call.outbound.heard(now);
        if transport.send_clear().await.is_err() {
            return false;
        }
        let reaction = decided.elapsed();
        let Some(call) = self.call.as_mut() else {
            return false;
        };
        call.outbound.clear(Instant::now());
        if let Some(sink) = self.sink.as_mut() {
            sink.discard();
        }
        self.reply_open = false;
        call.pipeline.control_all(&Control::Interrupt { heard });
        self.report.barge_ins.push(reaction);
        self.config.metrics.barge_ins.inc();
        if let Some(live) = self.live.as_mut() {
            live.barge_in();
        }
        self.event(
            "barge_in",
            format!(
                "the caller cut in after {} ms of the reply",
                heard.as_millis()
            ),
        );
        self.config
            .metrics
            .barge_in_reaction_seconds
            .observe(reaction.as_secs_f64());
        tracing::info!(
            reaction_us = reaction.as_micros() as u64,
            heard_ms = heard.as_millis() as u64,
            "Barge-in: cleared the bot's audio."
        );
        true
    }

    /// A turn of the ledger closed: metrics, the bus, the record, the report.
    fn turn(&mut self, turn: TurnLatency) {
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
                stage: Arc::from("controller"),
                kind: BusKind::Latency(turn),
                at: std::time::Instant::now(),
            });
        }
        if let Some(log) = self.log.as_mut() {
            log.on_bus(&BusKind::Latency(turn));
        }
        if let Some(live) = self.live.as_mut() {
            live.turn();
        }
        self.report.turns.push(turn);
    }

    /// Puts something on the call's timeline (the record's `events`).
    fn event(&mut self, kind: &'static str, detail: String) {
        let (Some(log), Some(started)) = (self.log.as_mut(), self.stream_started) else {
            return;
        };
        log.event(kind, started.elapsed(), detail);
    }

    /// What the call is doing now, for the live board (published only when it changed).
    fn live_refresh(&mut self, now: Instant) {
        if self.live.is_none() {
            return;
        }
        let bot = self.reply_open
            || self.response_active
            || self
                .call
                .as_ref()
                .is_some_and(|c| c.outbound.is_playing(now));
        let activity = if self.tool_running {
            Activity::ToolRunning
        } else if self.caller_talking {
            Activity::CallerSpeaking
        } else if bot {
            Activity::BotSpeaking
        } else {
            Activity::Listening
        };
        if let Some(live) = self.live.as_mut() {
            live.activity(activity);
            live.flush();
        }
    }

    fn drain_sink(&mut self, alive: bool) {
        let now = Instant::now();
        let (Some(sink), Some(call)) = (self.sink.as_mut(), self.call.as_mut()) else {
            return;
        };
        while let Some(frame) = sink.try_next() {
            match frame {
                Frame::Packet(p) => {
                    call.outbound.push(p.bytes, now);
                    self.ledger.audio_queued();
                    self.reply_open = true;
                }
                Frame::Event(Event::ReplyEnded) => {
                    call.outbound.reply_ended();
                    self.reply_open = false;
                }
                _ => {}
            }
        }
        if !alive {
            self.sink = None;
        }
    }

    /// Sends every chunk the pacer allows now, each followed by its mark. `false` if the
    /// transport is gone.
    async fn pump_outbound<T: Transport>(&mut self, transport: &mut T) -> bool {
        loop {
            let Some(call) = self.call.as_mut() else {
                return true;
            };
            let now = Instant::now();
            if self.ledger.awaits_ready() && call.outbound.newest_reply_ready(now) {
                self.ledger.ready(now);
            }
            let Some(chunk) = call.outbound.next_chunk(now) else {
                return true;
            };
            if transport.send_audio(chunk.bytes, chunk.mark).await.is_err() {
                return false;
            }
            self.ledger.sent(Instant::now(), chunk.mark);
            self.report.media_out += 1;
            self.config.metrics.media_out.inc();
        }
    }

    /// Ends the call: stop feeding the pipeline, let it drain (bounded), end every task,
    /// close the stream unless the peer already did, and write the record.
    async fn finish<T: Transport>(
        mut self,
        end: CallEnd,
        transport: &mut T,
        started: Instant,
    ) -> CallReport {
        if let Some(turn) = self.ledger.close(None) {
            self.turn(turn);
        }
        // Nobody will play what is still coming out: let the pipeline drop it, not wait on us.
        self.sink = None;
        if let Some(call) = self.call.take() {
            let Live {
                mut pipeline,
                source,
                outbound,
            } = call;
            let _ = tokio::time::timeout(DRAIN_TIMEOUT, source.close()).await;
            let _ = tokio::time::timeout(DRAIN_TIMEOUT, pipeline.finished()).await;
            self.report.signals_dropped = pipeline.bus().signals_dropped();
            let m = &self.config.metrics;
            for (stage, counts) in pipeline.stats().stages {
                if counts.frames_in == 0 {
                    continue;
                }
                let label = [("stage", stage.to_string())];
                m.stage_frames
                    .get_or_create(&label)
                    .inc_by(counts.frames_in);
                m.stage_frame_seconds
                    .get_or_create(&label)
                    .observe(counts.busy_ns as f64 / counts.frames_in as f64 / 1e9);
            }
            for (ring, dropped) in pipeline.audio_dropped() {
                if !dropped.is_zero() {
                    m.audio_dropped_seconds
                        .get_or_create(&[("ring", ring.to_string())])
                        .inc_by(dropped.as_secs_f64());
                }
                self.report.audio_dropped += dropped;
            }
            self.report.bot_audio_dropped = outbound.dropped();
            self.report.playback_underruns = outbound.underruns();
            m.playback_underruns.inc_by(outbound.underruns());
            m.calls_active.dec();
            drop(pipeline);
        }
        // What the stages said while draining (a last transcript, an action) is still owed to
        // the record.
        if let (Some(bus), Some(log)) = (self.bus.as_mut(), self.log.as_mut()) {
            loop {
                match bus.try_recv() {
                    Ok(event) if matches!(event.kind, BusKind::Latency(_)) => {}
                    Ok(event) => log.on_bus(&event.kind),
                    Err(broadcast::error::TryRecvError::Lagged(n)) => {
                        self.report.record_lagged += n;
                    }
                    Err(_) => break,
                }
            }
        }
        self.bus = None;
        self.signals = None;
        transport.close(end).await;
        let m = &self.config.metrics;
        Metrics::count(&m.calls_ended, "outcome", end.label());
        if self.report.record_lagged > 0 {
            m.record_lagged.inc_by(self.report.record_lagged);
        }
        if self.report.signals_dropped > 0 {
            m.signals_dropped.inc_by(self.report.signals_dropped);
        }
        self.report.end = end;
        self.report.backchannels = self.talk.backchannels;
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
        if let Some(live) = self.live.take() {
            live.end(end.label());
        }
        self.report
    }
}
