//! `turn_model` (test kind): a stand-in for the Realtime stage as the call controller sees it.
//! Its own "turn detection" follows the VAD's events (`SpeechStarted`/`SpeechStopped` become
//! `ModelSpeechStarted`/`ModelSpeechStopped`); it answers only when asked — `Respond`, `Say`,
//! `CallerText` — with `reply_ms` of tone framed like a model's response (`ResponseStarted`,
//! `ReplyAudioStarted`, audio, `ReplyEnded`, `ResponseDone`). Every request is written to a
//! log named by `log`, read by the test with [`requests`]. With `goodbye_on_turn = N` the
//! caller's Nth turn is also heard as a goodbye (`IntentDetected`).

use std::collections::HashMap;
use std::sync::Mutex;

use serde::Deserialize;

use crate::devtools::signal;
use crate::engine::bus::BusKind;
use crate::engine::format::{AudioFormat, Caps, Format};
use crate::engine::frame::{AudioChunk, Control, Event, Frame};
use crate::engine::registry::{CompileOptions, NegotiateError, Negotiated, Role, StageKind};
use crate::engine::stage::{BuildCtx, BuildError, Output, Runnable, Stage, StageError};
use crate::vocab::{Entities, Intent};

fn default_reply_ms() -> u32 {
    1500
}

/// Parameters of `turn_model`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TurnModelSpec {
    /// Name of the log the requests go to.
    pub log: String,
    /// Length of every reply, ms.
    #[serde(default = "default_reply_ms")]
    pub reply_ms: u32,
    /// The caller's turn (from 1) that is also a goodbye.
    pub goodbye_on_turn: Option<u32>,
}

static LOGS: Mutex<Option<HashMap<String, Vec<String>>>> = Mutex::new(None);

/// The requests the stage named `log` has answered, in order: `respond`, `say: …`,
/// `text: …`.
pub fn requests(log: &str) -> Vec<String> {
    let logs = LOGS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    logs.as_ref()
        .and_then(|l| l.get(log))
        .cloned()
        .unwrap_or_default()
}

fn note(log: &str, what: String) {
    let mut logs = LOGS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    logs.get_or_insert_with(HashMap::new)
        .entry(log.to_owned())
        .or_default()
        .push(what);
}

/// Answers when asked.
pub struct TurnModel {
    log: String,
    format: AudioFormat,
    reply: Vec<i16>,
    produced: u64,
    replies: u64,
    turns: u32,
    goodbye_on_turn: Option<u32>,
}

impl StageKind for TurnModel {
    const NAME: &'static str = "turn_model";
    const SUMMARY: &'static str = "Test model: turn events from the VAD, replies only when asked.";
    const EXAMPLE: &'static str = "log = \"t\"";
    const ROLE: Role = Role::Transform;
    type Spec = TurnModelSpec;

    fn input_caps(_: &TurnModelSpec) -> Caps {
        Caps::Any
    }

    fn negotiate(
        _: &TurnModelSpec,
        _: &[Format],
        _: &CompileOptions,
    ) -> Result<Negotiated, NegotiateError> {
        Ok(Negotiated::out(Format::audio(24000)))
    }

    fn build(spec: &TurnModelSpec, _: &BuildCtx<'_>) -> Result<Runnable, BuildError> {
        Ok(Runnable::Inline(Box::new(TurnModel {
            log: spec.log.clone(),
            format: AudioFormat::pcm16(24000),
            reply: signal::sine(24000, 440.0, spec.reply_ms as f32 / 1000.0, 0.3),
            produced: 0,
            replies: 0,
            turns: 0,
            goodbye_on_turn: spec.goodbye_on_turn,
        })))
    }
}

impl TurnModel {
    fn reply(&mut self, what: String, out: &mut Output<'_>) -> Result<(), StageError> {
        note(&self.log, what);
        self.replies += 1;
        let id = format!("resp-{}", self.replies);
        out.publish(BusKind::Event(Event::ResponseStarted { id: id.clone() }));
        out.publish(BusKind::Event(Event::ReplyAudioStarted { id: id.clone() }));
        let pts = self.format.duration_of(self.produced);
        self.produced += self.reply.len() as u64;
        out.push(Frame::Audio(AudioChunk {
            pts,
            samples: &self.reply,
        }))?;
        out.push(Frame::Event(&Event::ReplyEnded))?;
        out.publish(BusKind::Event(Event::ResponseDone {
            id,
            status: "completed".into(),
            model: std::sync::Arc::from("test"),
            usage: crate::engine::frame::TokenUse::default(),
        }));
        Ok(())
    }
}

impl Stage for TurnModel {
    fn process(&mut self, frame: Frame<'_>, out: &mut Output<'_>) -> Result<(), StageError> {
        match frame {
            Frame::Event(Event::SpeechStarted { .. }) => {
                out.publish(BusKind::Event(Event::ModelSpeechStarted));
            }
            Frame::Event(Event::SpeechStopped { .. }) => {
                self.turns += 1;
                out.publish(BusKind::Event(Event::ModelSpeechStopped));
                if self.goodbye_on_turn == Some(self.turns) {
                    out.publish(BusKind::Event(Event::IntentDetected {
                        intent: Intent::Goodbye,
                        confidence: 0.95,
                        entities: Entities::default(),
                        alternatives: Vec::new(),
                        text: "theek hai, bye".into(),
                        is_final: true,
                        accepted: true,
                        turn: Some(u64::from(self.turns)),
                    }));
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn control(&mut self, control: &Control, out: &mut Output<'_>) -> Result<(), StageError> {
        match control {
            Control::Respond => self.reply("respond".into(), out),
            Control::Say(text) => self.reply(format!("say: {text}"), out),
            Control::CallerText(text) => self.reply(format!("text: {text}"), out),
            _ => Ok(()),
        }
    }
}
