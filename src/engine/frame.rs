//! What moves on an edge ([`Frame`]) and what travels beside it ([`Control`]).
//!
//! A [`Frame`] borrows its payload: inside a fused task a stage hands the next stage a slice of
//! its own buffer, so a 20 ms chunk crosses decode → resample → vad without a copy or an
//! allocation. Rings copy audio into preallocated storage and keep text and events as
//! [`OwnedFrame`]s. The end of a stream is not a frame value: a ring reports it as the end of
//! its items and the runner calls [`crate::engine::stage::Stage::finish`].

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

/// One item on an edge, borrowed for the duration of a `process` call.
#[derive(Debug, Clone, Copy)]
pub enum Frame<'a> {
    /// Decoded mono PCM16 samples.
    Audio(AudioChunk<'a>),
    /// Encoded audio bytes (one whole packet on framed encodings such as Opus).
    Packet(Packet<'a>),
    /// A transcript segment.
    Text(&'a TextChunk),
    /// A fact about the stream.
    Event(&'a Event),
}

/// A run of decoded samples.
#[derive(Debug, Clone, Copy)]
pub struct AudioChunk<'a> {
    /// Position of the first sample since the stream started, derived from sample counts.
    pub pts: Duration,
    /// Mono PCM16 samples.
    pub samples: &'a [i16],
}

/// A run of encoded bytes.
#[derive(Debug, Clone, Copy)]
pub struct Packet<'a> {
    /// The bytes.
    pub bytes: &'a [u8],
}

/// Who said it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Speaker {
    /// The person on the phone.
    Caller,
    /// The voice agent.
    Bot,
}

/// A transcript segment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TextChunk {
    /// Where the segment starts in the call.
    pub pts: Duration,
    /// The words.
    pub text: String,
    /// `false` for a partial hypothesis that a later chunk replaces.
    pub is_final: bool,
    /// Who spoke.
    pub speaker: Speaker,
    /// The caller's turn it is of, counted from 1 in the order the caller began speaking
    /// (from the model's speech detection), when the source knows it.
    pub turn: Option<u64>,
}

/// Past-tense facts about a stream. Timestamps are stream positions derived from sample counts.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// Speech began at `at` (reported once it has lasted the VAD's `start_ms`).
    SpeechStarted {
        /// Onset of the speech.
        at: Duration,
    },
    /// The current speech has lasted `min_barge_in_ms`: long enough to interrupt the bot, so
    /// it is not a backchannel such as "haan" or "hmm".
    SpeechConfirmed {
        /// Onset of the speech.
        at: Duration,
    },
    /// Speech ended at `at` (reported once silence has lasted the VAD's `stop_ms`).
    SpeechStopped {
        /// Offset of the speech.
        at: Duration,
        /// How long the speech lasted.
        speech: Duration,
    },
    /// The bot's reply has been produced in full (its audio may still be playing).
    ReplyEnded,
    /// The model asked for a tool (an agent) to run.
    ToolCall {
        /// The model's id for the call; the result must carry it.
        call_id: String,
        /// The tool (agent) name.
        name: String,
        /// Arguments, as JSON text.
        arguments: String,
        /// Caller turns begun when the model made the call (so an answer to what the call
        /// leads the bot to ask comes from a later turn), when known.
        turns_begun: Option<u64>,
    },
    /// The model's own voice activity detection heard the caller start.
    ModelSpeechStarted,
    /// The model's own voice activity detection heard the caller stop.
    ModelSpeechStopped,
    /// The model began a response.
    ResponseStarted {
        /// Its id.
        id: String,
    },
    /// The first audio of a response arrived from the model.
    ReplyAudioStarted {
        /// The response.
        id: String,
    },
    /// A response ended: `completed`, `cancelled`, `failed` or `incomplete`.
    ResponseDone {
        /// Its id.
        id: String,
        /// How it ended.
        status: String,
        /// The model that made it (what its tokens are priced at).
        model: Arc<str>,
        /// The tokens it used, as the model reported them.
        usage: TokenUse,
    },
    /// The model reported an error (recoverable ones included).
    ModelError {
        /// Its code, e.g. `session_expired`.
        code: String,
        /// Its message.
        message: String,
        /// The call cannot go on with this model (bad key, no quota, reconnects exhausted).
        fatal: bool,
    },
    /// The connection to the model was re-established (after a drop or to renew the session).
    ModelReconnected {
        /// Consecutive attempts it took.
        attempts: u32,
    },
    /// The caller pressed a key.
    Dtmf {
        /// `0`-`9`, `*` or `#`.
        digit: char,
    },
    /// What a caller's utterance meant (`classify_intent`).
    IntentDetected {
        /// The primary intent.
        intent: crate::vocab::Intent,
        /// Probability that it is right.
        confidence: f32,
        /// Order id, phone, pincode, amount.
        entities: crate::vocab::Entities,
        /// Runners-up, best first.
        alternatives: Vec<crate::vocab::Alternative>,
        /// The utterance.
        text: String,
        /// From a final transcript (not a partial hypothesis).
        is_final: bool,
        /// Confident enough to act on (`min_confidence`).
        accepted: bool,
        /// The caller's turn the utterance is of (see [`TextChunk::turn`]), when known.
        turn: Option<u64>,
    },
    /// An agent acted, or tried to (`agent`): one per side effect or lookup.
    ActionTaken {
        /// The agent (`cancel_order`, `order_status`, …).
        action: String,
        /// The order it concerned, if any (its name, e.g. `#1001`).
        order: Option<String>,
        /// Idempotency key: call + action + order.
        key: String,
        /// `done`, `needs_confirmation`, `needs_info`, `refused`, `failed`, `not_configured`.
        status: String,
        /// What happened, in a sentence.
        detail: String,
        /// Already on the call's record (the stage wrote it itself, as the agents' ledger
        /// does before touching the store); the recorder leaves it alone.
        recorded: bool,
    },
}

impl Event {
    /// Whether the call controller steers by it (barge-in, turn-taking, the latency ledger),
    /// so it also travels on the pipeline's signal lane.
    pub fn steers(&self) -> bool {
        matches!(
            self,
            Event::SpeechStarted { .. }
                | Event::SpeechConfirmed { .. }
                | Event::SpeechStopped { .. }
                | Event::ModelSpeechStarted
                | Event::ModelSpeechStopped
                | Event::ResponseStarted { .. }
                | Event::ReplyAudioStarted { .. }
                | Event::ResponseDone { .. }
                | Event::ModelReconnected { .. }
                | Event::ModelError { .. }
                | Event::IntentDetected { is_final: true, .. }
                | Event::ToolCall { .. }
        )
    }
}

/// Tokens a model response used, by kind, as Realtime reports them in `response.done`
/// (`cached_*` are the part of the input served from the prompt cache, priced lower).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct TokenUse {
    /// Text input tokens, cached ones included.
    pub text_in: u64,
    /// Of those, cached.
    pub text_in_cached: u64,
    /// Audio input tokens, cached ones included.
    pub audio_in: u64,
    /// Of those, cached.
    pub audio_in_cached: u64,
    /// Text output tokens.
    pub text_out: u64,
    /// Audio output tokens.
    pub audio_out: u64,
}

impl TokenUse {
    /// Adds another response's tokens (saturating).
    pub fn add(&mut self, other: &TokenUse) {
        self.text_in = self.text_in.saturating_add(other.text_in);
        self.text_in_cached = self.text_in_cached.saturating_add(other.text_in_cached);
        self.audio_in = self.audio_in.saturating_add(other.audio_in);
        self.audio_in_cached = self.audio_in_cached.saturating_add(other.audio_in_cached);
        self.text_out = self.text_out.saturating_add(other.text_out);
        self.audio_out = self.audio_out.saturating_add(other.audio_out);
    }

    /// Whether nothing was used.
    pub fn is_empty(&self) -> bool {
        *self == TokenUse::default()
    }

    /// The counts by kind, named as the metrics label them (and the call records' columns,
    /// `{kind}_tokens`), in field order.
    pub fn kinds(&self) -> [(&'static str, u64); 6] {
        [
            ("text_in", self.text_in),
            ("text_in_cached", self.text_in_cached),
            ("audio_in", self.audio_in),
            ("audio_in_cached", self.audio_in_cached),
            ("text_out", self.text_out),
            ("audio_out", self.audio_out),
        ]
    }
}

/// An owned frame, as kept in a ring or captured by a test.
#[derive(Debug, Clone, PartialEq)]
pub enum OwnedFrame {
    /// Decoded samples.
    Audio {
        /// Position of the first sample.
        pts: Duration,
        /// The samples.
        samples: Vec<i16>,
    },
    /// Encoded bytes.
    Packet(Vec<u8>),
    /// A transcript segment.
    Text(TextChunk),
    /// A fact about the stream.
    Event(Event),
}

impl OwnedFrame {
    /// Copies a borrowed frame.
    pub fn from_frame(frame: Frame<'_>) -> OwnedFrame {
        match frame {
            Frame::Audio(a) => OwnedFrame::Audio {
                pts: a.pts,
                samples: a.samples.to_vec(),
            },
            Frame::Packet(p) => OwnedFrame::Packet(p.bytes.to_vec()),
            Frame::Text(t) => OwnedFrame::Text(t.clone()),
            Frame::Event(e) => OwnedFrame::Event(e.clone()),
        }
    }

    /// Borrows it back as a frame.
    pub fn as_frame(&self) -> Frame<'_> {
        match self {
            OwnedFrame::Audio { pts, samples } => Frame::Audio(AudioChunk { pts: *pts, samples }),
            OwnedFrame::Packet(bytes) => Frame::Packet(Packet { bytes }),
            OwnedFrame::Text(t) => Frame::Text(t),
            OwnedFrame::Event(e) => Frame::Event(e),
        }
    }
}

/// Out-of-band messages addressed to a stage. They travel on the pipeline's control lane and
/// are handled before any queued frame (pipecat's `SystemFrame`), never queued behind audio.
/// A stage that wants the call ended does not send a control message: it raises
/// [`crate::engine::bus::SignalKind::Hangup`] for the call controller.
#[derive(Debug, Clone, PartialEq)]
pub enum Control {
    /// The caller barged in: drop what is queued for playback, cancel what is being generated.
    Interrupt {
        /// How much of the bot's current reply the caller has heard (from Exotel's mark echoes),
        /// so the model's own record can be cut there.
        heard: Duration,
    },
    /// Speak this text to the caller (agent results, prompts for a missing slot).
    Say(String),
    /// The caller's turn is over and is to be answered: the call controller decides when the
    /// model speaks (a backchannel over the bot gets none).
    Respond,
    /// Something the caller said other than by voice (keys typed on the keypad), to be taken
    /// as their turn and answered.
    CallerText(String),
    /// A tool (agent) finished: give the model its result so it can speak it.
    ToolResult {
        /// The model's id for the call.
        call_id: String,
        /// The result, as JSON text.
        output: String,
    },
}
