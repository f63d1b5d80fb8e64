//! What an edge carries, negotiated once when a graph is compiled (GStreamer caps), never per frame.
//!
//! Pipeline audio is mono. Decoded audio is PCM16 samples in memory ([`Format::Audio`]); encoded
//! audio is bytes on the wire ([`Format::Encoded`]). Conversions between durations and sample
//! counts live here and nowhere else.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;

/// How encoded audio bytes are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// Linear PCM, 16-bit signed little-endian (what Exotel sends and expects).
    Pcm16le,
    /// G.711 μ-law, one byte per sample.
    Mulaw,
    /// G.711 A-law, one byte per sample.
    Alaw,
    /// Opus packets; each frame on the edge is one whole packet.
    Opus,
}

impl Encoding {
    /// Every encoding, for error messages and caps.
    pub const ALL: &'static [Encoding] = &[
        Encoding::Pcm16le,
        Encoding::Mulaw,
        Encoding::Alaw,
        Encoding::Opus,
    ];

    /// The TOML spelling.
    pub fn name(self) -> &'static str {
        match self {
            Encoding::Pcm16le => "pcm16le",
            Encoding::Mulaw => "mulaw",
            Encoding::Alaw => "alaw",
            Encoding::Opus => "opus",
        }
    }

    /// Bytes per sample for sample-aligned encodings; `None` for packet codecs.
    pub fn bytes_per_sample(self) -> Option<usize> {
        match self {
            Encoding::Pcm16le => Some(2),
            Encoding::Mulaw | Encoding::Alaw => Some(1),
            Encoding::Opus => None,
        }
    }

    /// Whether frame boundaries carry meaning (one packet per frame) and must survive a ring.
    pub fn is_framed(self) -> bool {
        self.bytes_per_sample().is_none()
    }
}

impl fmt::Display for Encoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Decoded mono PCM16 at a sample rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AudioFormat {
    /// Samples per second.
    pub sample_rate: u32,
}

impl AudioFormat {
    /// Mono PCM16 at `sample_rate` Hz.
    pub const fn pcm16(sample_rate: u32) -> Self {
        AudioFormat { sample_rate }
    }

    /// How many samples cover `duration` (rounded down).
    pub fn samples_in(self, duration: Duration) -> usize {
        (duration.as_nanos() * u128::from(self.sample_rate) / 1_000_000_000) as usize
    }

    /// How many samples cover `ms` milliseconds.
    pub fn samples_in_ms(self, ms: u32) -> usize {
        (u64::from(ms) * u64::from(self.sample_rate) / 1000) as usize
    }

    /// The duration of `samples` samples.
    pub fn duration_of(self, samples: u64) -> Duration {
        if self.sample_rate == 0 {
            return Duration::ZERO;
        }
        let nanos = u128::from(samples) * 1_000_000_000 / u128::from(self.sample_rate);
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }
}

/// Encoded mono audio at a sample rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EncodedFormat {
    /// Byte layout.
    pub encoding: Encoding,
    /// Samples per second of the audio inside.
    pub sample_rate: u32,
}

impl EncodedFormat {
    /// Bytes that carry `ms` milliseconds, for sample-aligned encodings; for packet codecs a
    /// generous bound (64 kB/s, above any Opus voice bitrate).
    pub fn bytes_in_ms(self, ms: u32) -> usize {
        match self.encoding.bytes_per_sample() {
            Some(bps) => AudioFormat::pcm16(self.sample_rate).samples_in_ms(ms) * bps,
            None => (u64::from(ms) * 64) as usize,
        }
    }

    /// The duration of `bytes` bytes for sample-aligned encodings (zero for packet codecs).
    pub fn duration_of_bytes(self, bytes: u64) -> Duration {
        match self.encoding.bytes_per_sample() {
            Some(bps) => AudioFormat::pcm16(self.sample_rate).duration_of(bytes / bps as u64),
            None => Duration::ZERO,
        }
    }
}

/// What one edge carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// Decoded PCM16 samples ([`crate::engine::frame::Frame::Audio`]), possibly with events between them.
    Audio(AudioFormat),
    /// Encoded audio bytes ([`crate::engine::frame::Frame::Packet`]).
    Encoded(EncodedFormat),
    /// Transcript text ([`crate::engine::frame::Frame::Text`]), possibly with events between.
    Text,
    /// Events only ([`crate::engine::frame::Frame::Event`]).
    Events,
}

impl Format {
    /// Decoded mono PCM16 at `sample_rate`.
    pub const fn audio(sample_rate: u32) -> Format {
        Format::Audio(AudioFormat::pcm16(sample_rate))
    }

    /// Encoded audio.
    pub const fn encoded(encoding: Encoding, sample_rate: u32) -> Format {
        Format::Encoded(EncodedFormat {
            encoding,
            sample_rate,
        })
    }

    /// Whether frames on this edge are timed audio (ring capacity is then in milliseconds).
    pub fn is_audio(&self) -> bool {
        matches!(self, Format::Audio(_) | Format::Encoded(_))
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Format::Audio(a) => write!(f, "pcm16 {} Hz", a.sample_rate),
            Format::Encoded(e) => write!(f, "{} {} Hz", e.encoding, e.sample_rate),
            Format::Text => f.write_str("text"),
            Format::Events => f.write_str("events"),
        }
    }
}

/// What a stage accepts on its inputs; the graph compiler checks every input edge against it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caps {
    /// Decoded PCM16 at one of these rates.
    Audio {
        /// Accepted sample rates in Hz.
        rates: &'static [u32],
    },
    /// Encoded audio in one of these encodings, at one of these rates.
    Encoded {
        /// Accepted encodings.
        encodings: &'static [Encoding],
        /// Accepted sample rates in Hz.
        rates: &'static [u32],
    },
    /// Text (transcripts), with events.
    Text,
    /// Events.
    Events,
    /// Anything (test sinks and pass-throughs).
    Any,
    /// Either of two caps.
    Either(&'static Caps, &'static Caps),
}

/// Telephony and wideband rates the audio stages are built and tested for.
pub const COMMON_RATES: &[u32] = &[8000, 16000, 24000, 48000];

impl Caps {
    /// Whether `format` is acceptable.
    pub fn accepts(&self, format: &Format) -> bool {
        match (self, format) {
            (Caps::Any, _) => true,
            (Caps::Audio { rates }, Format::Audio(a)) => rates.contains(&a.sample_rate),
            (Caps::Encoded { encodings, rates }, Format::Encoded(e)) => {
                encodings.contains(&e.encoding) && rates.contains(&e.sample_rate)
            }
            (Caps::Text, Format::Text | Format::Events) => true,
            (Caps::Events, Format::Events) => true,
            (Caps::Either(a, b), f) => a.accepts(f) || b.accepts(f),
            _ => false,
        }
    }

    /// One format per accepted combination, for compliance tests and `pipeline graph`.
    pub fn examples(&self) -> Vec<Format> {
        match self {
            Caps::Audio { rates } => rates.iter().map(|r| Format::audio(*r)).collect(),
            Caps::Encoded { encodings, rates } => encodings
                .iter()
                .flat_map(|e| rates.iter().map(move |r| Format::encoded(*e, *r)))
                .collect(),
            Caps::Text => vec![Format::Text],
            Caps::Events => vec![Format::Events],
            Caps::Any => vec![Format::audio(16000), Format::Text, Format::Events],
            Caps::Either(a, b) => a.examples().into_iter().chain(b.examples()).collect(),
        }
    }

    /// A format these caps reject, if there is one (compliance tests check it is refused).
    pub fn counter_example(&self) -> Option<Format> {
        match self {
            Caps::Audio { rates } => [8000, 11025, 16000, 22050, 24000, 44100, 48000, 96000]
                .into_iter()
                .find(|r| !rates.contains(r))
                .map(Format::audio),
            Caps::Encoded { .. } => Some(Format::Text),
            Caps::Text | Caps::Events => Some(Format::audio(8000)),
            Caps::Any => None,
            Caps::Either(..) => [Format::Text, Format::audio(11025), Format::Events]
                .into_iter()
                .find(|f| !self.accepts(f)),
        }
    }
}

impl fmt::Display for Caps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn rates(f: &mut fmt::Formatter<'_>, rates: &[u32]) -> fmt::Result {
            for (i, r) in rates.iter().enumerate() {
                if i > 0 {
                    f.write_str("/")?;
                }
                write!(f, "{}", r / 1000)?;
            }
            f.write_str(" kHz")
        }
        match self {
            Caps::Audio { rates: r } => {
                f.write_str("pcm16 at ")?;
                rates(f, r)
            }
            Caps::Encoded {
                encodings,
                rates: r,
            } => {
                for (i, e) in encodings.iter().enumerate() {
                    if i > 0 {
                        f.write_str("/")?;
                    }
                    f.write_str(e.name())?;
                }
                f.write_str(" at ")?;
                rates(f, r)
            }
            Caps::Text => f.write_str("text"),
            Caps::Events => f.write_str("events"),
            Caps::Any => f.write_str("anything"),
            Caps::Either(a, b) => write!(f, "{a} or {b}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sample_counts_round_trip_at_telephony_rates() {
        for rate in COMMON_RATES {
            let f = AudioFormat::pcm16(*rate);
            let n = f.samples_in(Duration::from_millis(20));
            assert_eq!(n as u32, rate / 50);
            assert_eq!(f.duration_of(n as u64), Duration::from_millis(20));
            assert_eq!(f.samples_in_ms(20), n);
        }
    }

    #[test]
    fn encoded_byte_budgets_follow_the_encoding() {
        let pcm = EncodedFormat {
            encoding: Encoding::Pcm16le,
            sample_rate: 8000,
        };
        assert_eq!(pcm.bytes_in_ms(20), 320);
        assert_eq!(pcm.duration_of_bytes(320), Duration::from_millis(20));
        let mulaw = EncodedFormat {
            encoding: Encoding::Mulaw,
            sample_rate: 8000,
        };
        assert_eq!(mulaw.bytes_in_ms(20), 160);
    }

    #[test]
    fn caps_accept_what_they_declare_and_reject_their_counter_example() {
        let all = [
            Caps::Audio {
                rates: &[8000, 16000],
            },
            Caps::Encoded {
                encodings: &[Encoding::Mulaw],
                rates: &[8000],
            },
            Caps::Text,
            Caps::Events,
        ];
        for caps in all {
            for f in caps.examples() {
                assert!(caps.accepts(&f), "{caps} should accept {f}");
            }
            let bad = caps.counter_example().expect("a rejected format");
            assert!(!caps.accepts(&bad), "{caps} should reject {bad}");
        }
        assert_eq!(
            Caps::Audio {
                rates: &[8000, 16000]
            }
            .to_string(),
            "pcm16 at 8/16 kHz"
        );
    }
}
