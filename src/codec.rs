//! Audio codecs shared by the `decode` and `encode` stages: table-driven G.711 and Opus.
//!
//! Opus is pure-Rust `opus-rs` by default, so a fresh machine needs no system library; with the
//! `libopus` cargo feature it is the system libopus through `audiopus`. Both sides expose the
//! same small API, and a test decodes the same packets with both to show they agree.

/// A codec could not be created or could not handle a packet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// Opus only runs at 8, 12, 16, 24 or 48 kHz.
    #[error("opus cannot run at {rate} Hz (8/12/16/24/48 kHz only)")]
    RateUnsupported {
        /// The rate asked for.
        rate: u32,
    },
    /// Opus frames are 2.5 to 60 ms; this many samples is not one of those sizes.
    #[error("opus cannot encode a frame of {samples} samples at {rate} Hz")]
    FrameSizeUnsupported {
        /// The frame size asked for.
        samples: usize,
        /// The rate.
        rate: u32,
    },
    /// A packet could not be decoded (corrupt or not Opus).
    #[error("opus packet rejected: {0}")]
    Packet(String),
}

/// 1.5 × 2²³: adding it to a float of magnitude below 2²² leaves the nearest integer (ties to
/// even, the FPU's own rounding) in the low bits of the sum's mantissa.
const ROUNDER: f32 = 12_582_912.0;

/// `x` rounded to the nearest integer (ties to even, as libopus's `float2int` and C's `lrintf`)
/// and saturated to PCM16 (NaN gives −32768), in integer and float operations the compiler
/// vectorises: no library call, no branch, no float-to-int conversion.
// Not `clamp`: it passes NaN through, where `max` then `min` give a number.
#[allow(clippy::manual_clamp)]
pub fn round_to_i16(x: f32) -> i16 {
    let y = x.max(-32768.0).min(32767.0);
    ((y + ROUNDER).to_bits() as i32 - ROUNDER.to_bits() as i32) as i16
}

/// A full-scale float sample (±1.0) → PCM16: scaled, rounded to nearest, clipped.
pub fn float_to_pcm16(x: f32) -> i16 {
    round_to_i16(x * 32768.0)
}

/// Rates Opus runs at.
pub const OPUS_RATES: &[u32] = &[8000, 12000, 16000, 24000, 48000];

const fn ulaw_decode(code: u8) -> i16 {
    let u = !code;
    let mut t = (((u & 0x0F) as i32) << 3) + 0x84;
    t <<= (u >> 4) & 0x07;
    (if u & 0x80 != 0 { 0x84 - t } else { t - 0x84 }) as i16
}

const fn alaw_decode(code: u8) -> i16 {
    let a = code ^ 0x55;
    let mut t = ((a & 0x0F) as i32) << 4;
    let seg = (a >> 4) & 0x07;
    match seg {
        0 => t += 8,
        1 => t += 0x108,
        _ => {
            t += 0x108;
            t <<= seg - 1;
        }
    }
    (if a & 0x80 != 0 { t } else { -t }) as i16
}

const fn table(alaw: bool) -> [i16; 256] {
    let mut t = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = if alaw {
            alaw_decode(i as u8)
        } else {
            ulaw_decode(i as u8)
        };
        i += 1;
    }
    t
}

/// μ-law code → linear PCM16 (ITU-T G.711).
pub static ULAW_TO_LINEAR: [i16; 256] = table(false);
/// A-law code → linear PCM16 (ITU-T G.711).
pub static ALAW_TO_LINEAR: [i16; 256] = table(true);

/// Linear PCM16 → μ-law code (ITU-T G.711, with clipping).
pub fn linear_to_ulaw(sample: i16) -> u8 {
    const BIAS: i32 = 0x84;
    let pcm = i32::from(sample);
    let (magnitude, mask) = if pcm < 0 {
        (BIAS - pcm, 0x7F)
    } else {
        (pcm + BIAS, 0xFF)
    };
    // Segment ends are 0xFF, 0x1FF, … 0x7FFF: the segment is the bit length above bit 7.
    let seg = (32 - (magnitude >> 8).leading_zeros()) as i32;
    if seg >= 8 {
        return (0x7F ^ mask) as u8;
    }
    let code = (seg << 4) | ((magnitude >> (seg + 3)) & 0x0F);
    (code ^ mask) as u8
}

/// Linear PCM16 → A-law code (ITU-T G.711, with clipping).
pub fn linear_to_alaw(sample: i16) -> u8 {
    let pcm = i32::from(sample) >> 3;
    let (magnitude, mask) = if pcm >= 0 {
        (pcm, 0xD5)
    } else {
        (-pcm - 1, 0x55)
    };
    // Segment ends: 0x1F, 0x3F, 0x7F, … 0xFFF.
    let seg = (32 - (magnitude >> 5).leading_zeros()) as i32;
    if seg >= 8 {
        return (0x7F ^ mask) as u8;
    }
    let mut code = seg << 4;
    code |= if seg < 2 {
        (magnitude >> 1) & 0x0F
    } else {
        (magnitude >> seg) & 0x0F
    };
    (code ^ mask) as u8
}

/// The longest Opus packet duration (120 ms) in samples at `rate`: a decode buffer this big
/// holds any packet.
pub fn opus_max_samples(rate: u32) -> usize {
    rate as usize * 120 / 1000
}

fn check_opus_rate(rate: u32) -> Result<(), CodecError> {
    if OPUS_RATES.contains(&rate) {
        Ok(())
    } else {
        Err(CodecError::RateUnsupported { rate })
    }
}

#[cfg(not(feature = "libopus"))]
mod opus_impl {
    use super::{CodecError, check_opus_rate, opus_max_samples};

    /// Opus decoder (pure-Rust `opus-rs`).
    pub struct OpusDecoder {
        inner: opus_rs::OpusDecoder,
        scratch: Vec<f32>,
    }

    impl OpusDecoder {
        /// A mono decoder at `rate`.
        pub fn new(rate: u32) -> Result<Self, CodecError> {
            check_opus_rate(rate)?;
            let inner = opus_rs::OpusDecoder::new(rate as i32, 1)
                .map_err(|e| CodecError::Packet(e.to_owned()))?;
            Ok(OpusDecoder {
                inner,
                scratch: vec![0.0; opus_max_samples(rate)],
            })
        }

        /// Decodes one packet into `out` (at least [`opus_max_samples`] long), returning the
        /// samples written. An empty packet means a lost one: `out.len()` samples of concealment.
        pub fn decode(&mut self, packet: &[u8], out: &mut [i16]) -> Result<usize, CodecError> {
            let frame = out.len().min(self.scratch.len());
            let n = self
                .inner
                .decode(packet, frame, &mut self.scratch[..frame])
                .map_err(|e| CodecError::Packet(e.to_owned()))?;
            let n = n.min(frame);
            for (o, s) in out.iter_mut().zip(&self.scratch[..n]) {
                *o = super::float_to_pcm16(*s);
            }
            Ok(n)
        }
    }

    /// Opus encoder (pure-Rust `opus-rs`), VoIP mode.
    pub struct OpusEncoder {
        inner: opus_rs::OpusEncoder,
    }

    impl OpusEncoder {
        /// A mono VoIP encoder at `rate` and `bitrate` bits per second (constant bitrate: the
        /// pure-Rust encoder overshoots in VBR).
        pub fn new(rate: u32, bitrate: u32) -> Result<Self, CodecError> {
            check_opus_rate(rate)?;
            let mut inner = opus_rs::OpusEncoder::new(rate as i32, 1, opus_rs::Application::Voip)
                .map_err(|e| CodecError::Packet(e.to_owned()))?;
            inner.bitrate_bps = bitrate as i32;
            inner.use_cbr = true;
            Ok(OpusEncoder { inner })
        }

        /// Encodes one frame (`pcm.len()` samples: 2.5–60 ms), returning the packet length.
        pub fn encode(&mut self, pcm: &[i16], out: &mut [u8]) -> Result<usize, CodecError> {
            self.inner
                .encode_i16(pcm, pcm.len(), out)
                .map_err(|e| CodecError::Packet(e.to_owned()))
        }
    }
}

#[cfg(feature = "libopus")]
mod opus_impl {
    use audiopus::coder::{Decoder, Encoder};
    use audiopus::{Application, Bitrate, Channels, SampleRate};

    use super::{CodecError, check_opus_rate};

    fn rate_of(rate: u32) -> Result<SampleRate, CodecError> {
        check_opus_rate(rate)?;
        Ok(match rate {
            8000 => SampleRate::Hz8000,
            12000 => SampleRate::Hz12000,
            16000 => SampleRate::Hz16000,
            24000 => SampleRate::Hz24000,
            _ => SampleRate::Hz48000,
        })
    }

    /// Opus decoder (system libopus through `audiopus`).
    pub struct OpusDecoder {
        inner: Decoder,
    }

    impl OpusDecoder {
        /// A mono decoder at `rate`.
        pub fn new(rate: u32) -> Result<Self, CodecError> {
            let inner = Decoder::new(rate_of(rate)?, Channels::Mono)
                .map_err(|e| CodecError::Packet(e.to_string()))?;
            Ok(OpusDecoder { inner })
        }

        /// Decodes one packet into `out`, returning the samples written. An empty packet means a
        /// lost one: `out.len()` samples of concealment.
        pub fn decode(&mut self, packet: &[u8], out: &mut [i16]) -> Result<usize, CodecError> {
            let input = (!packet.is_empty()).then_some(packet);
            self.inner
                .decode(input, out, false)
                .map_err(|e| CodecError::Packet(e.to_string()))
        }
    }

    /// Opus encoder (system libopus through `audiopus`), VoIP mode.
    pub struct OpusEncoder {
        inner: Encoder,
    }

    impl OpusEncoder {
        /// A mono VoIP encoder at `rate` and `bitrate` bits per second.
        pub fn new(rate: u32, bitrate: u32) -> Result<Self, CodecError> {
            let mut inner = Encoder::new(rate_of(rate)?, Channels::Mono, Application::Voip)
                .map_err(|e| CodecError::Packet(e.to_string()))?;
            inner
                .set_bitrate(Bitrate::BitsPerSecond(bitrate as i32))
                .map_err(|e| CodecError::Packet(e.to_string()))?;
            Ok(OpusEncoder { inner })
        }

        /// Encodes one frame (`pcm.len()` samples: 2.5–60 ms), returning the packet length.
        pub fn encode(&mut self, pcm: &[i16], out: &mut [u8]) -> Result<usize, CodecError> {
            self.inner
                .encode(pcm, out)
                .map_err(|e| CodecError::Packet(e.to_string()))
        }
    }
}

pub use opus_impl::{OpusDecoder, OpusEncoder};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_to_pcm16_matches_the_library_rounding_then_a_clip() {
        let mut values = vec![
            -40000.0f32,
            -32768.6,
            -32768.5,
            -2.5,
            -1.5,
            -0.5,
            -0.49,
            0.0,
            0.49,
            0.5,
            1.5,
            2.5,
        ];
        values.extend([
            32767.4,
            32767.5,
            1e9,
            -1e9,
            f32::INFINITY,
            f32::NEG_INFINITY,
        ]);
        values.extend((-4000..4000).map(|i| i as f32 * 8.1237));
        for x in values {
            let want = x.round_ties_even().clamp(-32768.0, 32767.0) as i16;
            assert_eq!(round_to_i16(x), want, "{x}");
            let x = x / 32768.0;
            let want = (x * 32768.0).round_ties_even().clamp(-32768.0, 32767.0) as i16;
            assert_eq!(float_to_pcm16(x), want, "{x}");
        }
        assert_eq!(float_to_pcm16(1.0), 32767);
        assert_eq!(float_to_pcm16(-1.0), -32768);
        assert_eq!(float_to_pcm16(1.5 / 32768.0), 2);
        assert_eq!(float_to_pcm16(2.5 / 32768.0), 2);
        assert_eq!(round_to_i16(f32::NAN), -32768);
    }

    #[test]
    fn every_mulaw_code_survives_a_round_trip() {
        for code in 0..=255u8 {
            let linear = ULAW_TO_LINEAR[code as usize];
            // 0x7F is μ-law's negative zero: it decodes to 0, which encodes as positive zero.
            let expected = if code == 0x7F { 0xFF } else { code };
            assert_eq!(
                linear_to_ulaw(linear),
                expected,
                "code {code:#04x} -> {linear}"
            );
        }
    }

    #[test]
    fn every_alaw_code_survives_a_round_trip() {
        for code in 0..=255u8 {
            let linear = ALAW_TO_LINEAR[code as usize];
            assert_eq!(linear_to_alaw(linear), code, "code {code:#04x} -> {linear}");
        }
    }

    #[test]
    fn g711_quantisation_error_stays_within_its_segment_step() {
        for x in (i16::MIN..=i16::MAX).step_by(7) {
            let u = ULAW_TO_LINEAR[linear_to_ulaw(x) as usize];
            let a = ALAW_TO_LINEAR[linear_to_alaw(x) as usize];
            // The coarsest segment step is 1024 (μ-law) / 1024 (A-law) at full scale.
            let step = (i32::from(x).abs() / 16).max(16) + 16;
            assert!(
                (i32::from(u) - i32::from(x)).abs() <= step,
                "μ-law {x} -> {u}"
            );
            assert!(
                (i32::from(a) - i32::from(x)).abs() <= step,
                "A-law {x} -> {a}"
            );
        }
        assert_eq!(ULAW_TO_LINEAR[0xFF], 0);
        assert_eq!(ULAW_TO_LINEAR[0x00], -32124);
        assert_eq!(ALAW_TO_LINEAR[0xD5], 8);
        assert_eq!(ALAW_TO_LINEAR[0x2A], -32256);
    }

    fn speechlike(rate: u32, seconds: f32) -> Vec<i16> {
        crate::devtools::signal::vowels(rate, seconds)
    }

    #[test]
    fn opus_round_trip_keeps_the_signal() {
        for rate in [8000u32, 16000, 24000, 48000] {
            let frame = rate as usize / 50;
            let pcm = speechlike(rate, 1.0);
            let mut enc = OpusEncoder::new(rate, 32000).unwrap();
            let mut dec = OpusDecoder::new(rate).unwrap();
            let mut packet = vec![0u8; 1500];
            let mut out = vec![0i16; opus_max_samples(rate)];
            let mut decoded = Vec::new();
            for chunk in pcm.chunks_exact(frame) {
                let n = enc.encode(chunk, &mut packet).unwrap();
                let m = dec.decode(&packet[..n], &mut out).unwrap();
                assert_eq!(m, frame);
                decoded.extend_from_slice(&out[..m]);
            }
            // Compare energy after the codec's look-ahead: a lossy codec keeps the level.
            let e_in: f64 = pcm.iter().map(|s| f64::from(*s).powi(2)).sum();
            let e_out: f64 = decoded.iter().map(|s| f64::from(*s).powi(2)).sum();
            let ratio_db = 10.0 * (e_out / e_in).log10();
            assert!(
                ratio_db.abs() < 3.0,
                "{rate} Hz: level changed by {ratio_db:.1} dB"
            );
        }
    }

    #[test]
    fn a_lost_opus_packet_is_concealed_with_a_full_frame() {
        let mut dec = OpusDecoder::new(16000).unwrap();
        let mut enc = OpusEncoder::new(16000, 24000).unwrap();
        let pcm = speechlike(16000, 0.02);
        let mut packet = vec![0u8; 1500];
        let n = enc.encode(&pcm[..320], &mut packet).unwrap();
        let mut out = vec![0i16; 320];
        assert_eq!(dec.decode(&packet[..n], &mut out).unwrap(), 320);
        assert_eq!(dec.decode(&[], &mut out).unwrap(), 320);
    }

    #[test]
    fn opus_refuses_rates_it_cannot_run_at() {
        assert_eq!(
            OpusDecoder::new(44100).err(),
            Some(CodecError::RateUnsupported { rate: 44100 })
        );
    }

    /// The pure-Rust decoder, beside libopus when the feature is on.
    #[cfg(feature = "libopus")]
    fn pure_decode(rate: u32, packets: &[Vec<u8>], frame: usize) -> Vec<i16> {
        let mut d = opus_rs::OpusDecoder::new(rate as i32, 1).unwrap();
        let mut f = vec![0f32; frame];
        let mut out = Vec::new();
        for p in packets {
            let n = d.decode(p, frame, &mut f).unwrap();
            out.extend(
                f[..n]
                    .iter()
                    .map(|x| (x * 32768.0).round().clamp(-32768.0, 32767.0) as i16),
            );
        }
        out
    }

    /// With the `libopus` feature, the system libopus and the pure-Rust decoder decode the same
    /// packets (made by libopus) to within 1 LSB.
    #[cfg(feature = "libopus")]
    #[test]
    fn libopus_and_opus_rs_decode_the_same_packets_alike() {
        for rate in [8000u32, 16000, 24000, 48000] {
            let frame = rate as usize / 50;
            let pcm = speechlike(rate, 2.0);
            let mut enc = OpusEncoder::new(rate, 24000).unwrap();
            let mut packets = Vec::new();
            let mut buf = vec![0u8; 1500];
            for chunk in pcm.chunks_exact(frame) {
                let n = enc.encode(chunk, &mut buf).unwrap();
                packets.push(buf[..n].to_vec());
            }
            let mut lib = OpusDecoder::new(rate).unwrap();
            let mut out = vec![0i16; frame];
            let mut by_lib = Vec::new();
            for p in &packets {
                let n = lib.decode(p, &mut out).unwrap();
                by_lib.extend_from_slice(&out[..n]);
            }
            let by_rust = pure_decode(rate, &packets, frame);
            assert_eq!(by_lib.len(), by_rust.len());
            let worst = by_lib
                .iter()
                .zip(&by_rust)
                .map(|(a, b)| (i32::from(*a) - i32::from(*b)).abs())
                .max()
                .unwrap_or(0);
            assert!(
                worst <= 1,
                "{rate} Hz: decoders differ by up to {worst} LSB"
            );
        }
    }
}
