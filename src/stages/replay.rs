//! `replay` (test kind): a source that plays a WAV file, or a generated tone, into the graph.
//!
//! PCM16 mono out at `sample_rate`, in `chunk_ms` chunks, as fast as the graph takes them
//! (lossless: it waits on full rings whatever their policy) or paced in real time. Stereo
//! files are downmixed. Runs in its own task; adds no delay.

use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use serde::Deserialize;

use crate::engine::format::{AudioFormat, Caps, Format};
use crate::engine::frame::{AudioChunk, Frame};
use crate::engine::registry::{CompileOptions, Invalid, NegotiateError, Negotiated, Role, StageKind};
use crate::engine::stage::{BuildCtx, BuildError, Runnable, StageError, TaskIo, TaskStage};
use crate::devtools::signal;
use crate::devtools::wav::read_wav_mono;

fn default_sample_rate() -> u32 {
    16000
}
fn default_chunk_ms() -> u32 {
    20
}
fn default_tone_hz() -> f32 {
    440.0
}
fn default_duration_ms() -> u32 {
    1000
}

/// Parameters of `replay`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplaySpec {
    /// A WAV file to play (any bit depth, mono or stereo, at `sample_rate`); without it, a tone.
    pub path: Option<String>,
    /// Sample rate in Hz of what is played.
    #[serde(default = "default_sample_rate")]
    pub sample_rate: u32,
    /// Milliseconds per chunk.
    #[serde(default = "default_chunk_ms")]
    pub chunk_ms: u32,
    /// Frequency in Hz of the generated tone (when there is no `path`).
    #[serde(default = "default_tone_hz")]
    pub tone_hz: f32,
    /// Length in milliseconds of the generated tone (when there is no `path`).
    #[serde(default = "default_duration_ms")]
    pub duration_ms: u32,
    /// Play in real time (one chunk per `chunk_ms`) instead of as fast as possible.
    #[serde(default)]
    pub paced: bool,
}

/// Plays audio into the graph.
pub struct Replay {
    samples: Vec<i16>,
    format: AudioFormat,
    chunk: usize,
    paced: bool,
}

impl StageKind for Replay {
    const NAME: &'static str = "replay";
    const SUMMARY: &'static str = "Test source: a WAV file or a tone, as fast as possible or paced.";
    const EXAMPLE: &'static str = "sample_rate = 16000\nduration_ms = 200";
    const ROLE: Role = Role::Source;
    const TASK: bool = true;
    const TOOL: bool = true;
    type Spec = ReplaySpec;

    fn input_caps(_: &ReplaySpec) -> Caps {
        Caps::Any
    }

    fn validate(spec: &ReplaySpec) -> Vec<Invalid> {
        let mut invalid = Vec::new();
        if !(1..=1000).contains(&spec.chunk_ms) {
            invalid.push(Invalid {
                key: "chunk_ms",
                message: "between 1 and 1000".into(),
            });
        }
        if !(8000..=48000).contains(&spec.sample_rate) {
            invalid.push(Invalid {
                key: "sample_rate",
                message: "between 8000 and 48000 Hz".into(),
            });
        }
        invalid
    }

    fn negotiate(spec: &ReplaySpec, _: &[Format], _: &CompileOptions) -> Result<Negotiated, NegotiateError> {
        Ok(Negotiated::out(Format::audio(spec.sample_rate)))
    }

    fn build(spec: &ReplaySpec, ctx: &BuildCtx<'_>) -> Result<Runnable, BuildError> {
        let format = AudioFormat::pcm16(spec.sample_rate);
        let samples = match &spec.path {
            Some(path) => {
                let (rate, samples) = read_wav_mono(path.as_ref()).map_err(|e| ctx.error(e))?;
                if rate != spec.sample_rate {
                    return Err(ctx.error(format!(
                        "{path} is {rate} Hz but the stage says sample_rate = {}",
                        spec.sample_rate
                    )));
                }
                samples
            }
            None => signal::sine(
                spec.sample_rate,
                spec.tone_hz,
                spec.duration_ms as f32 / 1000.0,
                0.3,
            ),
        };
        Ok(Runnable::Task(Box::new(Replay {
            samples,
            format,
            chunk: format.samples_in_ms(spec.chunk_ms).max(1),
            paced: spec.paced,
        })))
    }
}

impl TaskStage for Replay {
    fn run(self: Box<Self>, mut io: TaskIo) -> BoxFuture<'static, Result<(), StageError>> {
        async move {
            let period = self.format.duration_of(self.chunk as u64);
            let mut ticker = tokio::time::interval(period.max(Duration::from_millis(1)));
            for (i, chunk) in self.samples.chunks(self.chunk).enumerate() {
                if self.paced {
                    ticker.tick().await;
                }
                let pts = self.format.duration_of((i * self.chunk) as u64);
                io.output
                    .send(0, Frame::Audio(AudioChunk { pts, samples: chunk }))
                    .await?;
            }
            io.output.close().await;
            Ok(())
        }
        .boxed()
    }
}
