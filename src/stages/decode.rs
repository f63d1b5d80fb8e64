//! `decode`: encoded audio → mono PCM16 samples.
//!
//! pcm16le, μ-law and A-law are table- or shift-driven and take any chunk size (an odd byte of
//! pcm16le waits for its partner in the next chunk). Opus decodes one packet per frame, with
//! `opus-rs` or, with the `libopus` feature, the system libopus. Adds no delay. Text and events
//! pass through unchanged.

use serde::Deserialize;

use crate::codec::{ALAW_TO_LINEAR, OpusDecoder, ULAW_TO_LINEAR, opus_max_samples};
use crate::engine::format::{AudioFormat, Caps, Encoding, Format};
use crate::engine::frame::{AudioChunk, Frame};
use crate::engine::registry::{CompileOptions, NegotiateError, Negotiated, Role, StageKind};
use crate::engine::stage::{BuildCtx, BuildError, Output, Runnable, Stage, StageError};

/// Rates `decode` takes (Opus runs at these; G.711 and PCM at any of them).
pub const DECODE_RATES: &[u32] = &[8000, 12000, 16000, 24000, 48000];
/// Samples decoded per output chunk for sample-aligned encodings.
const CHUNK_SAMPLES: usize = 1024;

/// Parameters of `decode` (none: the input format says everything).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecodeSpec {}

enum Codec {
    Pcm16le { carry: Option<u8> },
    Mulaw,
    Alaw,
    Opus(Box<OpusDecoder>),
}

/// Encoded bytes to PCM16.
pub struct Decode {
    codec: Codec,
    format: AudioFormat,
    buf: Vec<i16>,
    samples_out: u64,
}

impl StageKind for Decode {
    const NAME: &'static str = "decode";
    const SUMMARY: &'static str = "pcm16le / mulaw / alaw / opus bytes to PCM16 samples.";
    const EXAMPLE: &'static str = "";
    const ROLE: Role = Role::Transform;
    type Spec = DecodeSpec;

    fn input_caps(_: &DecodeSpec) -> Caps {
        Caps::Encoded {
            encodings: Encoding::ALL,
            rates: DECODE_RATES,
        }
    }

    fn negotiate(
        _: &DecodeSpec,
        inputs: &[Format],
        _: &CompileOptions,
    ) -> Result<Negotiated, NegotiateError> {
        match inputs.first() {
            Some(Format::Encoded(e)) => Ok(Negotiated::out(Format::audio(e.sample_rate))),
            other => Err(format!("decode needs encoded audio, got {other:?}").into()),
        }
    }

    fn build(_: &DecodeSpec, ctx: &BuildCtx<'_>) -> Result<Runnable, BuildError> {
        let Some(Format::Encoded(input)) = ctx.input() else {
            return Err(ctx.error("decode built without an encoded input"));
        };
        let (codec, buf_len) = match input.encoding {
            Encoding::Pcm16le => (Codec::Pcm16le { carry: None }, CHUNK_SAMPLES),
            Encoding::Mulaw => (Codec::Mulaw, CHUNK_SAMPLES),
            Encoding::Alaw => (Codec::Alaw, CHUNK_SAMPLES),
            Encoding::Opus => (
                Codec::Opus(Box::new(
                    OpusDecoder::new(input.sample_rate).map_err(|e| ctx.error(e))?,
                )),
                opus_max_samples(input.sample_rate),
            ),
        };
        Ok(Runnable::Inline(Box::new(Decode {
            codec,
            format: AudioFormat::pcm16(input.sample_rate),
            buf: vec![0; buf_len],
            samples_out: 0,
        })))
    }
}

impl Decode {
    fn emit(&mut self, n: usize, out: &mut Output<'_>) -> Result<(), StageError> {
        if n == 0 {
            return Ok(());
        }
        let pts = self.format.duration_of(self.samples_out);
        self.samples_out += n as u64;
        out.push(Frame::Audio(AudioChunk {
            pts,
            samples: &self.buf[..n],
        }))
    }
}

impl Stage for Decode {
    fn process(&mut self, frame: Frame<'_>, out: &mut Output<'_>) -> Result<(), StageError> {
        let Frame::Packet(packet) = frame else {
            return out.push(frame);
        };
        let mut bytes = packet.bytes;
        match &mut self.codec {
            Codec::Pcm16le { carry } => {
                if let Some(low) = carry.take() {
                    let Some((&high, rest)) = bytes.split_first() else {
                        *carry = Some(low);
                        return Ok(());
                    };
                    self.buf[0] = i16::from_le_bytes([low, high]);
                    bytes = rest;
                    self.emit(1, out)?;
                }
                let Codec::Pcm16le { carry } = &mut self.codec else {
                    return Ok(());
                };
                if bytes.len() % 2 == 1 {
                    *carry = bytes.last().copied();
                    bytes = &bytes[..bytes.len() - 1];
                }
                let per_chunk = self.buf.len() * 2;
                for chunk in bytes.chunks(per_chunk) {
                    let n = chunk.len() / 2;
                    for (s, b) in self.buf.iter_mut().zip(chunk.chunks_exact(2)) {
                        *s = i16::from_le_bytes([b[0], b[1]]);
                    }
                    self.emit(n, out)?;
                }
            }
            Codec::Mulaw | Codec::Alaw => {
                let table = if matches!(self.codec, Codec::Mulaw) {
                    &ULAW_TO_LINEAR
                } else {
                    &ALAW_TO_LINEAR
                };
                for chunk in bytes.chunks(self.buf.len()) {
                    for (s, b) in self.buf.iter_mut().zip(chunk) {
                        *s = table[*b as usize];
                    }
                    self.emit(chunk.len(), out)?;
                }
            }
            Codec::Opus(decoder) => {
                // An empty packet is a lost one: conceal 20 ms.
                let want = if bytes.is_empty() {
                    self.format.samples_in_ms(20)
                } else {
                    self.buf.len()
                };
                let n = decoder
                    .decode(bytes, &mut self.buf[..want])
                    .map_err(StageError::skip)?;
                self.emit(n, out)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{OpusEncoder, linear_to_alaw, linear_to_ulaw};
    use crate::engine::format::Encoding;
    use crate::testing::{Harness, signal};

    fn harness(encoding: Encoding, rate: u32) -> Harness {
        Harness::new("decode", "", &[Format::encoded(encoding, rate)])
    }

    #[test]
    fn pcm16le_decodes_any_chunking_to_the_same_samples() {
        let pcm = signal::vowels(8000, 0.5);
        let bytes: Vec<u8> = pcm.iter().flat_map(|s| s.to_le_bytes()).collect();
        let mut whole = harness(Encoding::Pcm16le, 8000);
        whole.push_packet(&bytes);
        whole.finish().unwrap();
        // Odd sizes split samples across chunks.
        let mut pieces = harness(Encoding::Pcm16le, 8000);
        for chunk in bytes.chunks(7) {
            pieces.push_packet(chunk);
        }
        pieces.finish().unwrap();
        assert_eq!(whole.audio(0), pcm);
        assert_eq!(pieces.audio(0), pcm);
    }

    #[test]
    fn g711_decodes_every_sample_it_is_given() {
        let pcm = signal::vowels(8000, 0.3);
        for (encoding, encode) in [
            (Encoding::Mulaw, linear_to_ulaw as fn(i16) -> u8),
            (Encoding::Alaw, linear_to_alaw),
        ] {
            let bytes: Vec<u8> = pcm.iter().map(|s| encode(*s)).collect();
            let mut h = harness(encoding, 8000);
            for chunk in bytes.chunks(333) {
                h.push_packet(chunk);
            }
            h.finish().unwrap();
            let out = h.audio(0);
            assert_eq!(out.len(), pcm.len(), "{encoding}: conservation");
            let table = if encoding == Encoding::Mulaw { &ULAW_TO_LINEAR } else { &ALAW_TO_LINEAR };
            for (i, (o, b)) in out.iter().zip(&bytes).enumerate() {
                assert_eq!(*o, table[*b as usize], "{encoding} sample {i}");
            }
        }
    }

    #[test]
    fn pts_counts_samples() {
        let mut h = harness(Encoding::Mulaw, 8000);
        h.push_packet(&[0xFF; 160]);
        h.push_packet(&[0xFF; 160]);
        let pts: Vec<_> = h.audio_chunks(0).iter().map(|(pts, _)| pts.as_millis()).collect();
        assert_eq!(pts, [0, 20]);
    }

    #[test]
    fn a_corrupt_opus_packet_is_skipped_and_the_stream_goes_on() {
        let rate = 16000;
        let pcm = signal::vowels(rate, 0.1);
        let mut enc = OpusEncoder::new(rate, 24000).unwrap();
        let mut h = harness(Encoding::Opus, rate);
        let mut packet = vec![0u8; 1500];
        let n = enc.encode(&pcm[..320], &mut packet).unwrap();
        h.push_packet(&packet[..n]);
        // A TOC byte announcing a frame count the packet does not have.
        assert!(h.push_packet_result(&[0xFF, 0xFF, 0xFF]).is_ok());
        h.push_packet(&packet[..n]);
        assert_eq!(h.skipped(), 1);
        assert_eq!(h.audio(0).len(), 640);
    }
}
