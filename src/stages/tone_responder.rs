//! `tone_responder` (tool kind): a stand-in bot for load tests and the controller's tests. It answers each
//! caller turn (`SpeechStopped`) with `turn_ms` of a `turn_hz` tone and each DTMF key with
//! `dtmf_ms` of a `dtmf_hz` tone, then `ReplyEnded`, announcing each reply as a model would
//! (`ReplyAudioStarted`) so the call's latency ledger times it. Tones of different pitch let a load
//! generator tell a turn's reply from a DTMF probe's. Caller audio in is ignored; PCM16 at
//! `sample_rate` out. Adds no delay: a reply is emitted whole the moment its trigger arrives.

use std::sync::{Arc, LazyLock, Mutex, PoisonError};

use serde::Deserialize;

use crate::engine::bus::BusKind;
use crate::engine::format::{AudioFormat, Caps, Format};
use crate::engine::frame::{AudioChunk, Event, Frame};
use crate::engine::registry::{CompileOptions, Invalid, NegotiateError, Negotiated, Role, StageKind};
use crate::engine::stage::{BuildCtx, BuildError, Output, Runnable, Stage, StageError};
use crate::devtools::signal;

fn default_sample_rate() -> u32 {
    24000
}
fn default_turn_hz() -> f32 {
    440.0
}
fn default_turn_ms() -> u32 {
    1000
}
fn default_dtmf_hz() -> f32 {
    1000.0
}
fn default_dtmf_ms() -> u32 {
    200
}

/// Parameters of `tone_responder`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToneResponderSpec {
    /// Rate in Hz of the replies (24000, like the Realtime API's audio).
    #[serde(default = "default_sample_rate")]
    pub sample_rate: u32,
    /// Pitch in Hz of the reply to a caller turn.
    #[serde(default = "default_turn_hz")]
    pub turn_hz: f32,
    /// Length in ms of the reply to a caller turn (0: no reply).
    #[serde(default = "default_turn_ms")]
    pub turn_ms: u32,
    /// Pitch in Hz of the reply to a DTMF key.
    #[serde(default = "default_dtmf_hz")]
    pub dtmf_hz: f32,
    /// Length in ms of the reply to a DTMF key (0: no reply).
    #[serde(default = "default_dtmf_ms")]
    pub dtmf_ms: u32,
}

/// Answers turns and keys with tones.
pub struct ToneResponder {
    format: AudioFormat,
    turn: Arc<[i16]>,
    dtmf: Arc<[i16]>,
    produced: u64,
    replies: u64,
}

impl StageKind for ToneResponder {
    const NAME: &'static str = "tone_responder";
    const SUMMARY: &'static str = "Test bot: answers each caller turn and DTMF key with a tone.";
    const EXAMPLE: &'static str = "turn_ms = 300";
    const ROLE: Role = Role::Transform;
    const TOOL: bool = true;
    type Spec = ToneResponderSpec;

    fn input_caps(_: &ToneResponderSpec) -> Caps {
        Caps::Any
    }

    fn validate(spec: &ToneResponderSpec) -> Vec<Invalid> {
        let mut invalid = Vec::new();
        for (key, ms) in [("turn_ms", spec.turn_ms), ("dtmf_ms", spec.dtmf_ms)] {
            if ms > 60_000 {
                invalid.push(Invalid {
                    key,
                    message: "at most 60000 ms".into(),
                });
            }
        }
        if !(8000..=48000).contains(&spec.sample_rate) {
            invalid.push(Invalid {
                key: "sample_rate",
                message: "between 8000 and 48000 Hz".into(),
            });
        }
        invalid
    }

    fn negotiate(
        spec: &ToneResponderSpec,
        _: &[Format],
        _: &CompileOptions,
    ) -> Result<Negotiated, NegotiateError> {
        Ok(Negotiated::out(Format::audio(spec.sample_rate)))
    }

    fn build(spec: &ToneResponderSpec, _: &BuildCtx<'_>) -> Result<Runnable, BuildError> {
        let rate = spec.sample_rate;
        Ok(Runnable::Inline(Box::new(ToneResponder {
            format: AudioFormat::pcm16(rate),
            turn: shared_tone(rate, spec.turn_hz, spec.turn_ms),
            dtmf: shared_tone(rate, spec.dtmf_hz, spec.dtmf_ms),
            produced: 0,
            replies: 0,
        })))
    }
}

/// Distinct tones kept for sharing; past this, a call makes its own.
const MAX_SHARED_TONES: usize = 32;

/// A tone is the same for every call of a pipeline: it is made once per process and shared
/// (a second of 24 kHz audio is 47 KiB, which each call used to hold a copy of).
fn shared_tone(rate: u32, hz: f32, ms: u32) -> Arc<[i16]> {
    /// (rate, pitch's bits, length in ms) and the tone.
    type Tones = Vec<((u32, u32, u32), Arc<[i16]>)>;
    static TONES: LazyLock<Mutex<Tones>> = LazyLock::new(Mutex::default);
    let key = (rate, hz.to_bits(), ms);
    let mut tones = TONES.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some((_, tone)) = tones.iter().find(|(k, _)| *k == key) {
        return Arc::clone(tone);
    }
    let tone: Arc<[i16]> = signal::sine(rate, hz, ms as f32 / 1000.0, 0.3).into();
    if tones.len() < MAX_SHARED_TONES {
        tones.push((key, Arc::clone(&tone)));
    }
    tone
}

impl ToneResponder {
    fn reply(&mut self, dtmf: bool, out: &mut Output<'_>) -> Result<(), StageError> {
        let tone = Arc::clone(if dtmf { &self.dtmf } else { &self.turn });
        if tone.is_empty() {
            return Ok(());
        }
        let pts = self.format.duration_of(self.produced);
        self.produced += tone.len() as u64;
        self.replies += 1;
        // As a model's first audio of a response would be: the call's latency ledger times the
        // turn from here.
        out.publish(BusKind::Event(Event::ReplyAudioStarted {
            id: format!("tone-{}", self.replies),
        }));
        out.push(Frame::Audio(AudioChunk {
            pts,
            samples: &tone,
        }))?;
        out.push(Frame::Event(&Event::ReplyEnded))
    }
}

impl Stage for ToneResponder {
    fn process(&mut self, frame: Frame<'_>, out: &mut Output<'_>) -> Result<(), StageError> {
        match frame {
            Frame::Event(Event::SpeechStopped { .. }) => self.reply(false, out),
            Frame::Event(Event::Dtmf { .. }) => self.reply(true, out),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::testing::Harness;

    #[test]
    fn each_turn_and_key_gets_its_own_tone_then_reply_ended() {
        let mut h = Harness::new("tone_responder", "turn_ms = 100\ndtmf_ms = 40\nsample_rate = 8000", &[Format::audio(8000)]);
        h.push(Frame::Event(&Event::SpeechStopped {
            at: Duration::ZERO,
            speech: Duration::ZERO,
        }))
        .unwrap();
        h.push(Frame::Event(&Event::Dtmf { digit: '1' })).unwrap();
        h.push_audio(&[0; 160]);
        let chunks = h.audio_chunks(0);
        assert_eq!(chunks.iter().map(|(_, s)| s.len()).collect::<Vec<_>>(), [800, 320]);
        assert_eq!(h.events(), [Event::ReplyEnded, Event::ReplyEnded]);
    }

    #[test]
    fn a_tone_is_made_once_and_shared() {
        let a = shared_tone(8000, 431.0, 120);
        let b = shared_tone(8000, 431.0, 120);
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(a.len(), 960);
        assert!(!Arc::ptr_eq(&a, &shared_tone(8000, 432.0, 120)));
    }
}
