//! `call_audio`: the source the transport feeds with the caller's audio bytes.
//!
//! Encoded audio (pcm16le from Exotel) out, nothing in: the transport pushes frames through
//! [`crate::engine::pipeline::SourceHandle`]. The rate is the stream's, from Exotel's `?sample-rate=`,
//! given to the compiler per call ([`CompileOptions::source_rate`]); `sample_rate` here is the
//! default when none is given. Adds no delay.

use serde::Deserialize;

use crate::engine::format::{Caps, Encoding, Format};
use crate::engine::frame::Frame;
use crate::engine::registry::{CompileOptions, Invalid, NegotiateError, Negotiated, Role, StageKind};
use crate::engine::stage::{BuildCtx, BuildError, Output, Runnable, Stage, StageError};

const DEFAULT_SAMPLE_RATE: u32 = 8000;

fn default_encoding() -> Encoding {
    Encoding::Pcm16le
}
fn default_sample_rate() -> u32 {
    DEFAULT_SAMPLE_RATE
}
fn default_accept_rates() -> Vec<u32> {
    vec![8000, 16000, 24000]
}

/// Parameters of `call_audio`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallAudioSpec {
    /// How the caller's audio arrives: `pcm16le` (Exotel), `mulaw`, `alaw` or `opus`.
    #[serde(default = "default_encoding")]
    pub encoding: Encoding,
    /// Sample rate in Hz when the transport does not say (Exotel's default is 8000).
    #[serde(default = "default_sample_rate")]
    pub sample_rate: u32,
    /// Rates a call may ask for (Exotel: 8000, 16000, 24000); others are refused at call start.
    #[serde(default = "default_accept_rates")]
    pub accept_rates: Vec<u32>,
}

/// The caller's audio entering the graph.
pub struct CallAudio;

impl StageKind for CallAudio {
    const NAME: &'static str = "call_audio";
    const SUMMARY: &'static str = "Source: the caller's audio bytes as the transport receives them.";
    const EXAMPLE: &'static str = "encoding = \"pcm16le\"\nsample_rate = 8000";
    const ROLE: Role = Role::Source;
    type Spec = CallAudioSpec;

    fn input_caps(_: &CallAudioSpec) -> Caps {
        Caps::Any
    }

    fn validate(spec: &CallAudioSpec) -> Vec<Invalid> {
        let mut invalid = Vec::new();
        if !spec.accept_rates.contains(&spec.sample_rate) {
            invalid.push(Invalid {
                key: "sample_rate",
                message: format!(
                    "{} Hz is not one of accept_rates {:?}",
                    spec.sample_rate, spec.accept_rates
                ),
            });
        }
        if spec.accept_rates.iter().any(|r| !(8000..=48000).contains(r)) {
            invalid.push(Invalid {
                key: "accept_rates",
                message: "rates must be between 8000 and 48000 Hz".into(),
            });
        }
        invalid
    }

    fn negotiate(
        spec: &CallAudioSpec,
        _inputs: &[Format],
        options: &CompileOptions,
    ) -> Result<Negotiated, NegotiateError> {
        let rate = options.source_rate.unwrap_or(spec.sample_rate);
        if !spec.accept_rates.contains(&rate) {
            return Err(format!(
                "the call asked for {rate} Hz, which is not one of accept_rates {:?}",
                spec.accept_rates
            )
            .into());
        }
        Ok(Negotiated::out(Format::encoded(spec.encoding, rate)))
    }

    fn build(_: &CallAudioSpec, _: &BuildCtx<'_>) -> Result<Runnable, BuildError> {
        Ok(Runnable::Inline(Box::new(CallAudio)))
    }
}

impl Stage for CallAudio {
    fn process(&mut self, frame: Frame<'_>, out: &mut Output<'_>) -> Result<(), StageError> {
        out.push(frame)
    }
}
