//! What a call comes to: why it ended ([`CallEnd`]) and what happened in it ([`CallReport`]).

use std::collections::HashMap;
use std::time::Duration;

use serde::Serialize;

use crate::engine::bus::TurnLatency;

/// Why a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CallEnd {
    /// The provider ended the stream (Exotel's `stop`: the caller hung up or the flow moved on).
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
    /// The pipeline could not be started for this stream (a stage failed to build).
    StartFailed,
    /// The conversation was done (the caller's goodbye, a stage's hang-up) and the bot's last
    /// words have played.
    CompletedByBot,
    /// The caller was handed to a person (the provider's flow connects them).
    HandedOff,
    /// The caller said nothing through every prompt; the bot said goodbye.
    CallerSilent,
}

impl CallEnd {
    /// Every end reason.
    pub const ALL: [CallEnd; 11] = [
        CallEnd::Hangup,
        CallEnd::SocketLost,
        CallEnd::IdleTimeout,
        CallEnd::MaxDuration,
        CallEnd::Shutdown,
        CallEnd::PipelineEnded,
        CallEnd::PipelineFailed,
        CallEnd::StartFailed,
        CallEnd::CompletedByBot,
        CallEnd::HandedOff,
        CallEnd::CallerSilent,
    ];

    /// The end reason with this label.
    pub fn from_label(label: &str) -> Option<CallEnd> {
        CallEnd::ALL.into_iter().find(|e| e.label() == label)
    }

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
            CallEnd::StartFailed => "start_failed",
            CallEnd::CompletedByBot => "completed_by_bot",
            CallEnd::HandedOff => "handed_off",
            CallEnd::CallerSilent => "caller_silent",
        }
    }
}

/// What happened in one call.
#[derive(Debug, Clone, Serialize)]
pub struct CallReport {
    /// Why it ended.
    pub end: CallEnd,
    /// The provider's stream id.
    pub stream_sid: Option<String>,
    /// The provider's call id.
    pub call_sid: Option<String>,
    /// The stream's sample rate.
    pub sample_rate: u32,
    /// `media` messages accepted.
    pub media_in: u64,
    /// Messages skipped, by kind.
    pub bad_input: HashMap<&'static str, u64>,
    /// `media` chunks sent.
    pub media_out: u64,
    /// Why a stage asked to hang up, when one did.
    pub hangup_reason: Option<String>,
    /// Signals lost because the controller had left too many unread (should stay 0).
    pub signals_dropped: u64,
    /// Telemetry events the call's record missed because it fell behind (should stay 0).
    pub record_lagged: u64,
    /// Caller speech over the bot that was neither a barge-in nor answered.
    pub backchannels: u64,
    /// Prompts to a silent caller.
    pub idle_prompts: u64,
    /// Keypad entries passed to the model.
    pub keypad_entries: u64,
    /// Holding lines said while a tool was slow.
    pub fillers: u64,
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
    /// The model's tokens over the call, by kind.
    pub usage: crate::engine::frame::TokenUse,
    /// What they cost, in dollars at the price table's rates (responses of a model the table
    /// does not know count their tokens only).
    pub cost_usd: f64,
}

impl CallReport {
    /// An empty report for a stream at `rate`.
    pub fn new(rate: u32) -> CallReport {
        CallReport {
            end: CallEnd::SocketLost,
            stream_sid: None,
            call_sid: None,
            sample_rate: rate,
            media_in: 0,
            bad_input: HashMap::new(),
            media_out: 0,
            hangup_reason: None,
            signals_dropped: 0,
            record_lagged: 0,
            backchannels: 0,
            idle_prompts: 0,
            keypad_entries: 0,
            fillers: 0,
            barge_ins: Vec::new(),
            turns: Vec::new(),
            bot_audio_dropped: 0,
            audio_dropped: Duration::ZERO,
            playback_underruns: 0,
            duration: Duration::ZERO,
            usage: crate::engine::frame::TokenUse::default(),
            cost_usd: 0.0,
        }
    }
}
