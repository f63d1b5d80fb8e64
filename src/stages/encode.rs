//! `encode`: mono PCM16 samples → pcm16le / μ-law / A-law bytes, or Opus packets.
//!
//! For return paths (bot audio to a phone line) and for sending `pcmu` to the Realtime API.
//! pcm16le and G.711 add no delay and take any chunk size. Opus collects `frame_ms` of audio per
//! packet, so it adds `frame_ms`; on finish the last partial frame is padded with silence.

use std::time::Duration;

use serde::Deserialize;

use crate::codec::{OPUS_RATES, OpusEncoder, linear_to_alaw, linear_to_ulaw};
use crate::engine::format::{AudioFormat, Caps, Encoding, Format};
use crate::engine::frame::{Frame, Packet};
use crate::engine::registry::{CompileOptions, Invalid, NegotiateError, Negotiated, Role, StageKind};
use crate::engine::stage::{BuildCtx, BuildError, Output, Runnable, Stage, StageError};
use crate::stages::decode::DECODE_RATES;

const DEFAULT_BITRATE: u32 = 24_000;
const DEFAULT_FRAME_MS: u32 = 20;
/// Largest Opus packet we produce.
const MAX_PACKET_BYTES: usize = 1500;
/// Bytes produced per output chunk for sample-aligned encodings.
const CHUNK_BYTES: usize = 2048;

fn default_bitrate() -> u32 {
    DEFAULT_BITRATE
}
fn default_frame_ms() -> u32 {
    DEFAULT_FRAME_MS
}

/// Parameters of `encode`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncodeSpec {
    /// `pcm16le`, `mulaw`, `alaw` or `opus`.
    pub encoding: Encoding,
    /// Opus only: bits per second (constant bitrate).
    #[serde(default = "default_bitrate")]
    pub bitrate: u32,
    /// Opus only: milliseconds per packet (10, 20, 40 or 60).
    #[serde(default = "default_frame_ms")]
    pub frame_ms: u32,
}

enum Codec {
    Pcm16le,
    Mulaw,
    Alaw,
    Opus {
        encoder: Box<OpusEncoder>,
        frame: Vec<i16>,
        filled: usize,
    },
}

/// PCM16 to encoded bytes.
pub struct Encode {
    codec: Codec,
    buf: Vec<u8>,
    latency: Duration,
}

impl StageKind for Encode {
    const NAME: &'static str = "encode";
    const SUMMARY: &'static str = "PCM16 samples to pcm16le / mulaw / alaw bytes or opus packets.";
    const EXAMPLE: &'static str = "encoding = \"mulaw\"";
    const ROLE: Role = Role::Transform;
    type Spec = EncodeSpec;

    fn input_caps(_: &EncodeSpec) -> Caps {
        Caps::Audio {
            rates: DECODE_RATES,
        }
    }

    fn validate(spec: &EncodeSpec) -> Vec<Invalid> {
        let mut invalid = Vec::new();
        if ![10, 20, 40, 60].contains(&spec.frame_ms) {
            invalid.push(Invalid {
                key: "frame_ms",
                message: "opus packets are 10, 20, 40 or 60 ms".into(),
            });
        }
        if !(6_000..=510_000).contains(&spec.bitrate) {
            invalid.push(Invalid {
                key: "bitrate",
                message: "opus bitrates are 6000 to 510000 bits per second".into(),
            });
        }
        invalid
    }

    fn negotiate(
        spec: &EncodeSpec,
        inputs: &[Format],
        _: &CompileOptions,
    ) -> Result<Negotiated, NegotiateError> {
        let Some(Format::Audio(a)) = inputs.first() else {
            return Err("encode needs PCM16 audio".into());
        };
        if spec.encoding == Encoding::Opus && !OPUS_RATES.contains(&a.sample_rate) {
            return Err(format!("opus cannot run at {} Hz", a.sample_rate).into());
        }
        let latency = if spec.encoding == Encoding::Opus {
            Duration::from_millis(u64::from(spec.frame_ms))
        } else {
            Duration::ZERO
        };
        Ok(Negotiated::out(Format::encoded(spec.encoding, a.sample_rate)).with_latency(latency))
    }

    fn build(spec: &EncodeSpec, ctx: &BuildCtx<'_>) -> Result<Runnable, BuildError> {
        let Some(Format::Audio(a)) = ctx.input() else {
            return Err(ctx.error("encode built without a PCM16 input"));
        };
        let (codec, latency) = match spec.encoding {
            Encoding::Pcm16le => (Codec::Pcm16le, Duration::ZERO),
            Encoding::Mulaw => (Codec::Mulaw, Duration::ZERO),
            Encoding::Alaw => (Codec::Alaw, Duration::ZERO),
            Encoding::Opus => {
                let encoder =
                    OpusEncoder::new(a.sample_rate, spec.bitrate).map_err(|e| ctx.error(e))?;
                let samples = AudioFormat::pcm16(a.sample_rate).samples_in_ms(spec.frame_ms);
                (
                    Codec::Opus {
                        encoder: Box::new(encoder),
                        frame: vec![0; samples],
                        filled: 0,
                    },
                    Duration::from_millis(u64::from(spec.frame_ms)),
                )
            }
        };
        Ok(Runnable::Inline(Box::new(Encode {
            codec,
            buf: vec![0; CHUNK_BYTES.max(MAX_PACKET_BYTES)],
            latency,
        })))
    }
}

impl Encode {
    fn encode_opus(&mut self, out: &mut Output<'_>) -> Result<(), StageError> {
        let Codec::Opus { encoder, frame, filled } = &mut self.codec else {
            return Ok(());
        };
        *filled = 0;
        let n = encoder
            .encode(frame, &mut self.buf[..MAX_PACKET_BYTES])
            .map_err(StageError::fatal)?;
        out.push(Frame::Packet(Packet {
            bytes: &self.buf[..n],
        }))
    }
}

impl Stage for Encode {
    fn process(&mut self, frame: Frame<'_>, out: &mut Output<'_>) -> Result<(), StageError> {
        let Frame::Audio(audio) = frame else {
            return out.push(frame);
        };
        match &mut self.codec {
            Codec::Pcm16le => {
                for chunk in audio.samples.chunks(self.buf.len() / 2) {
                    for (b, s) in self.buf.chunks_exact_mut(2).zip(chunk) {
                        b.copy_from_slice(&s.to_le_bytes());
                    }
                    out.push(Frame::Packet(Packet {
                        bytes: &self.buf[..chunk.len() * 2],
                    }))?;
                }
            }
            Codec::Mulaw | Codec::Alaw => {
                let encode = if matches!(self.codec, Codec::Mulaw) {
                    linear_to_ulaw
                } else {
                    linear_to_alaw
                };
                for chunk in audio.samples.chunks(self.buf.len()) {
                    for (b, s) in self.buf.iter_mut().zip(chunk) {
                        *b = encode(*s);
                    }
                    out.push(Frame::Packet(Packet {
                        bytes: &self.buf[..chunk.len()],
                    }))?;
                }
            }
            Codec::Opus { .. } => {
                let mut samples = audio.samples;
                while !samples.is_empty() {
                    let Codec::Opus { frame, filled, .. } = &mut self.codec else {
                        return Ok(());
                    };
                    let take = (frame.len() - *filled).min(samples.len());
                    frame[*filled..*filled + take].copy_from_slice(&samples[..take]);
                    *filled += take;
                    samples = &samples[take..];
                    if *filled == frame.len() {
                        self.encode_opus(out)?;
                    }
                }
            }
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut Output<'_>) -> Result<(), StageError> {
        if let Codec::Opus { frame, filled, .. } = &mut self.codec
            && *filled > 0
        {
            frame[*filled..].fill(0);
            self.encode_opus(out)?;
        }
        Ok(())
    }

    fn latency(&self) -> Duration {
        self.latency
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{OpusDecoder, ULAW_TO_LINEAR};
    use crate::testing::{Harness, signal};

    #[test]
    fn pcm16le_bytes_are_the_samples_little_endian() {
        let pcm = signal::vowels(16000, 0.2);
        let mut h = Harness::new("encode", "encoding = \"pcm16le\"", &[Format::audio(16000)]);
        h.push_audio(&pcm);
        h.finish().unwrap();
        let expected: Vec<u8> = pcm.iter().flat_map(|s| s.to_le_bytes()).collect();
        assert_eq!(h.bytes(0), expected);
    }

    #[test]
    fn mulaw_encodes_one_byte_per_sample_window_independently() {
        let pcm = signal::vowels(8000, 0.2);
        let mut one = Harness::new("encode", "encoding = \"mulaw\"", &[Format::audio(8000)]);
        one.push_audio(&pcm);
        let mut many = Harness::new("encode", "encoding = \"mulaw\"", &[Format::audio(8000)]);
        for c in pcm.chunks(37) {
            many.push_audio(c);
        }
        assert_eq!(one.bytes(0), many.bytes(0));
        assert_eq!(one.bytes(0).len(), pcm.len());
        let back: Vec<i16> = one.bytes(0).iter().map(|b| ULAW_TO_LINEAR[*b as usize]).collect();
        let err = back.iter().zip(&pcm).map(|(a, b)| (i32::from(*a) - i32::from(*b)).abs()).max().unwrap();
        assert!(err < 1100, "μ-law error {err}");
    }

    #[test]
    fn opus_makes_one_packet_per_frame_and_pads_the_last() {
        let rate = 16000;
        let pcm = signal::vowels(rate, 0.11); // 5.5 frames of 20 ms
        let mut h = Harness::new("encode", "encoding = \"opus\"", &[Format::audio(rate)]);
        h.push_audio(&pcm);
        h.finish().unwrap();
        let packets = h.packets(0);
        assert_eq!(packets.len(), 6);
        let mut d = OpusDecoder::new(rate).unwrap();
        let mut out = vec![0i16; 960];
        for p in &packets {
            assert_eq!(d.decode(p, &mut out).unwrap(), 320);
        }
        assert_eq!(h.latency(), Duration::from_millis(20));
    }
}
