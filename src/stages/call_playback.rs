//! `call_playback`: the bot's voice leaving the graph for the caller's phone line.
//!
//! PCM16 at any rate in; pcm16le at the call's rate out, through the outlet the transport
//! drains (`Pipeline::take_sink`). The transport chunks, paces and marks it for Exotel. Audio
//! at another rate than the call's is resampled here (rubato, streaming), adding its delay.
//! Events pass through so the transport sees `ReplyEnded` in order with the audio.
//! `Interrupt` forgets audio in flight.

use std::time::Duration;

use serde::Deserialize;

use crate::engine::format::{AudioFormat, Caps, Encoding, Format};
use crate::engine::frame::{Control, Event, Frame, Packet};
use crate::engine::registry::{CompileOptions, NegotiateError, Negotiated, Role, StageKind};
use crate::engine::stage::{BuildCtx, BuildError, Output, Runnable, Stage, StageError};
use crate::stages::resample::StreamResampler;
use crate::stages::resample::RESAMPLE_RATES;

const DEFAULT_SAMPLE_RATE: u32 = 8000;
/// Bytes converted per output frame.
const CHUNK_BYTES: usize = 4096;

fn default_sample_rate() -> u32 {
    DEFAULT_SAMPLE_RATE
}

/// Parameters of `call_playback`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallPlaybackSpec {
    /// The call's rate in Hz when the transport does not give one (it does: the stream's
    /// `?sample-rate=`).
    #[serde(default = "default_sample_rate")]
    pub sample_rate: u32,
}

/// Bot audio to the phone line.
pub struct CallPlayback {
    resampler: Option<StreamResampler>,
    bytes: Vec<u8>,
    latency: Duration,
}

impl StageKind for CallPlayback {
    const NAME: &'static str = "call_playback";
    const SUMMARY: &'static str = "Sink: bot audio to the caller, as pcm16le at the call's rate.";
    const EXAMPLE: &'static str = "sample_rate = 8000";
    const ROLE: Role = Role::Sink;
    type Spec = CallPlaybackSpec;

    fn input_caps(_: &CallPlaybackSpec) -> Caps {
        Caps::Audio {
            rates: RESAMPLE_RATES,
        }
    }

    fn negotiate(
        spec: &CallPlaybackSpec,
        inputs: &[Format],
        options: &CompileOptions,
    ) -> Result<Negotiated, NegotiateError> {
        let Some(Format::Audio(a)) = inputs.first() else {
            return Err("call_playback needs PCM16 audio".into());
        };
        let rate = options.source_rate.unwrap_or(spec.sample_rate);
        let output = AudioFormat::pcm16(rate);
        let latency = if a.sample_rate == rate {
            Duration::ZERO
        } else {
            let r = StreamResampler::new(a.sample_rate, rate)?;
            output.duration_of(r.delay_samples() as u64)
        };
        Ok(Negotiated::out(Format::encoded(Encoding::Pcm16le, rate)).with_latency(latency))
    }

    fn build(_: &CallPlaybackSpec, ctx: &BuildCtx<'_>) -> Result<Runnable, BuildError> {
        let (Some(Format::Audio(input)), Some(Format::Encoded(out))) =
            (ctx.input(), ctx.outputs.first().map(|p| p.format))
        else {
            return Err(ctx.error("call_playback built without its formats"));
        };
        let output = AudioFormat::pcm16(out.sample_rate);
        let resampler = if input.sample_rate == out.sample_rate {
            None
        } else {
            Some(StreamResampler::new(input.sample_rate, out.sample_rate).map_err(|e| ctx.error(e))?)
        };
        let latency = resampler
            .as_ref()
            .map_or(Duration::ZERO, |r| output.duration_of(r.delay_samples() as u64));
        Ok(Runnable::Inline(Box::new(CallPlayback {
            resampler,
            bytes: vec![0; CHUNK_BYTES],
            latency,
        })))
    }
}

/// Pushes samples out as little-endian bytes, in pieces that fit the buffer.
fn push_le(bytes: &mut [u8], samples: &[i16], out: &mut Output<'_>) -> Result<(), StageError> {
    for chunk in samples.chunks(bytes.len() / 2) {
        for (b, s) in bytes.chunks_exact_mut(2).zip(chunk) {
            b.copy_from_slice(&s.to_le_bytes());
        }
        out.push(Frame::Packet(Packet {
            bytes: &bytes[..chunk.len() * 2],
        }))?;
    }
    Ok(())
}

impl Stage for CallPlayback {
    fn process(&mut self, frame: Frame<'_>, out: &mut Output<'_>) -> Result<(), StageError> {
        if let Frame::Event(Event::ReplyEnded) = frame {
            // The reply is complete: what the resampler still holds belongs to it.
            let bytes = &mut self.bytes;
            if let Some(r) = self.resampler.as_mut() {
                r.flush(&mut |_, samples| push_le(bytes, samples, out))?;
                r.reset();
            }
            return out.push(frame);
        }
        let Frame::Audio(audio) = frame else {
            return out.push(frame);
        };
        let bytes = &mut self.bytes;
        match self.resampler.as_mut() {
            None => push_le(bytes, audio.samples, out),
            Some(r) => r.push(audio.samples, &mut |_, samples| push_le(bytes, samples, out)),
        }
    }

    fn control(&mut self, control: &Control, _: &mut Output<'_>) -> Result<(), StageError> {
        if let (Control::Interrupt { .. }, Some(r)) = (control, self.resampler.as_mut()) {
            r.reset();
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut Output<'_>) -> Result<(), StageError> {
        let bytes = &mut self.bytes;
        match self.resampler.as_mut() {
            None => Ok(()),
            Some(r) => r.flush(&mut |_, samples| push_le(bytes, samples, out)),
        }
    }

    fn latency(&self) -> Duration {
        self.latency
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{Harness, signal};

    #[test]
    fn bot_audio_leaves_as_little_endian_at_the_call_rate() {
        let pcm = signal::vowels(8000, 0.3);
        let mut h = Harness::new("call_playback", "sample_rate = 8000", &[Format::audio(8000)]);
        for c in pcm.chunks(77) {
            h.push_audio(c);
        }
        h.finish().unwrap();
        let expected: Vec<u8> = pcm.iter().flat_map(|s| s.to_le_bytes()).collect();
        assert_eq!(h.bytes(0), expected);
    }

    #[test]
    fn a_reply_s_end_flushes_the_resampler_so_the_whole_reply_goes_out() {
        let pcm = signal::vowels(24000, 0.2);
        let mut h = Harness::new("call_playback", "sample_rate = 8000", &[Format::audio(24000)]);
        h.push_audio(&pcm);
        h.push(Frame::Event(&Event::ReplyEnded)).unwrap();
        let delay = AudioFormat::pcm16(8000).samples_in(h.latency());
        assert_eq!(h.bytes(0).len(), (pcm.len() / 3 + delay) * 2);
        assert_eq!(h.events(), [Event::ReplyEnded]);
    }

    #[test]
    fn other_rates_are_resampled_to_the_call_rate() {
        let pcm = signal::vowels(24000, 0.5);
        let mut h = Harness::new("call_playback", "sample_rate = 8000", &[Format::audio(24000)]);
        h.push_audio(&pcm);
        h.finish().unwrap();
        let delay = AudioFormat::pcm16(8000).samples_in(h.latency());
        assert_eq!(h.bytes(0).len(), (pcm.len() / 3 + delay) * 2);
    }
}
