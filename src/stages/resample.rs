//! `resample`: mono PCM16 at one rate → another, with rubato's FFT resampler.
//!
//! Streaming: the resampler keeps its state across chunks, so chunk boundaries leave no clicks
//! and one big chunk or many small ones give identical output. It works on fixed 20 ms input
//! windows (`FixedSync::Both`, exact sizes, 81 dB SNR, complete anti-aliasing) and adds
//! rubato's `output_delay()`: 10 ms at telephony rates, reported by `latency()`. On finish it
//! pads with silence until every input sample has come out: `round(in × ratio) + delay` samples.

use std::time::Duration;

use audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Resampler};
use serde::Deserialize;

use crate::codec::float_to_pcm16;
use crate::engine::format::{AudioFormat, Caps, Format};
use crate::engine::frame::{AudioChunk, Frame};
use crate::engine::registry::{CompileOptions, Invalid, NegotiateError, Negotiated, Role, StageKind};
use crate::engine::stage::{BuildCtx, BuildError, Output, Runnable, Stage, StageError};

/// Rates `resample` converts between.
pub const RESAMPLE_RATES: &[u32] = &[8000, 12000, 16000, 22050, 24000, 32000, 44100, 48000];

/// Parameters of `resample`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResampleSpec {
    /// Output sample rate in Hz.
    pub sample_rate: u32,
}

/// A streaming mono i16 resampler over rubato's FFT resampler, with preallocated buffers.
pub(crate) struct StreamResampler {
    inner: Fft<f32>,
    input: Vec<f32>,
    filled: usize,
    output: Vec<f32>,
    out_i16: Vec<i16>,
    ratio: f64,
    delay: usize,
    consumed: u64,
    produced: u64,
}

fn resampler_failed(e: impl std::fmt::Display) -> StageError {
    StageError::fatal(format!("resampler failed: {e}"))
}

impl StreamResampler {
    /// A resampler from `from` Hz to `to` Hz working on 20 ms input windows.
    pub(crate) fn new(from: u32, to: u32) -> Result<StreamResampler, String> {
        let chunk = (from as usize / 50).max(1);
        let inner = Fft::<f32>::new(from as usize, to as usize, chunk, 1, FixedSync::Both)
            .map_err(|e| format!("cannot resample {from} Hz to {to} Hz: {e}"))?;
        let input = vec![0.0; inner.input_frames_max()];
        let output = vec![0.0; inner.output_frames_max()];
        let out_i16 = vec![0; inner.output_frames_max()];
        let delay = inner.output_delay();
        Ok(StreamResampler {
            inner,
            input,
            filled: 0,
            output,
            out_i16,
            ratio: f64::from(to) / f64::from(from),
            delay,
            consumed: 0,
            produced: 0,
        })
    }

    /// Forgets all audio in flight (barge-in): the next sample starts a fresh stream.
    pub(crate) fn reset(&mut self) {
        self.inner.reset();
        self.filled = 0;
        self.consumed = 0;
        self.produced = 0;
    }

    /// Output samples by which every input sample is delayed.
    pub(crate) fn delay_samples(&self) -> usize {
        self.delay
    }

    /// Feeds samples; `emit(position, chunk)` receives every output window as it completes.
    pub(crate) fn push<E>(
        &mut self,
        mut samples: &[i16],
        emit: &mut impl FnMut(u64, &[i16]) -> Result<(), E>,
    ) -> Result<(), E>
    where
        E: From<StageError>,
    {
        self.consumed += samples.len() as u64;
        while !samples.is_empty() {
            let need = self.inner.input_frames_next();
            let take = (need - self.filled).min(samples.len());
            for (d, s) in self.input[self.filled..self.filled + take]
                .iter_mut()
                .zip(&samples[..take])
            {
                *d = f32::from(*s) / 32768.0;
            }
            self.filled += take;
            samples = &samples[take..];
            if self.filled == need {
                let n = self.run().map_err(E::from)?;
                self.emit_window(n, u64::MAX, emit)?;
            }
        }
        Ok(())
    }

    /// Pads with silence until every input sample's output has been emitted: in total
    /// `round(consumed × ratio) + delay` samples.
    pub(crate) fn flush<E>(
        &mut self,
        emit: &mut impl FnMut(u64, &[i16]) -> Result<(), E>,
    ) -> Result<(), E>
    where
        E: From<StageError>,
    {
        if self.consumed == 0 {
            return Ok(());
        }
        let target = (self.consumed as f64 * self.ratio).round() as u64 + self.delay as u64;
        while self.produced < target {
            let need = self.inner.input_frames_next();
            self.input[self.filled..need].fill(0.0);
            self.filled = need;
            let n = self.run().map_err(E::from)?;
            self.emit_window(n, target, emit)?;
        }
        Ok(())
    }

    /// One window through the resampler; the library failing mid-stream is fatal for the call.
    fn run(&mut self) -> Result<usize, StageError> {
        let need = self.filled;
        self.filled = 0;
        let out_len = self.inner.output_frames_next();
        let input = InterleavedSlice::new(&self.input[..need], 1, need)
            .map_err(resampler_failed)?;
        let mut output = InterleavedSlice::new_mut(&mut self.output[..out_len], 1, out_len)
            .map_err(resampler_failed)?;
        let (_, produced) = self
            .inner
            .process_into_buffer(&input, &mut output, None)
            .map_err(resampler_failed)?;
        for (d, s) in self.out_i16.iter_mut().zip(&self.output[..produced]) {
            *d = float_to_pcm16(*s);
        }
        Ok(produced)
    }

    fn emit_window<E>(
        &mut self,
        n: usize,
        limit: u64,
        emit: &mut impl FnMut(u64, &[i16]) -> Result<(), E>,
    ) -> Result<(), E> {
        let n = n.min(usize::try_from(limit.saturating_sub(self.produced)).unwrap_or(usize::MAX));
        if n == 0 {
            return Ok(());
        }
        let pos = self.produced;
        self.produced += n as u64;
        emit(pos, &self.out_i16[..n])
    }
}

/// Sample-rate conversion.
pub struct Resample {
    inner: Option<StreamResampler>,
    output: AudioFormat,
    latency: Duration,
}

impl StageKind for Resample {
    const NAME: &'static str = "resample";
    const SUMMARY: &'static str = "PCM16 from one sample rate to another (rubato FFT, streaming).";
    const EXAMPLE: &'static str = "sample_rate = 16000";
    const ROLE: Role = Role::Transform;
    type Spec = ResampleSpec;

    fn input_caps(_: &ResampleSpec) -> Caps {
        Caps::Audio {
            rates: RESAMPLE_RATES,
        }
    }

    fn validate(spec: &ResampleSpec) -> Vec<Invalid> {
        if RESAMPLE_RATES.contains(&spec.sample_rate) {
            Vec::new()
        } else {
            vec![Invalid {
                key: "sample_rate",
                message: format!("{} Hz is not one of {RESAMPLE_RATES:?}", spec.sample_rate),
            }]
        }
    }

    fn negotiate(
        spec: &ResampleSpec,
        inputs: &[Format],
        _: &CompileOptions,
    ) -> Result<Negotiated, NegotiateError> {
        let Some(Format::Audio(a)) = inputs.first() else {
            return Err("resample needs PCM16 audio".into());
        };
        let out = AudioFormat::pcm16(spec.sample_rate);
        let latency = if a.sample_rate == spec.sample_rate {
            Duration::ZERO
        } else {
            let r = StreamResampler::new(a.sample_rate, spec.sample_rate)?;
            out.duration_of(r.delay_samples() as u64)
        };
        Ok(Negotiated::out(Format::Audio(out)).with_latency(latency))
    }

    fn build(spec: &ResampleSpec, ctx: &BuildCtx<'_>) -> Result<Runnable, BuildError> {
        let Some(Format::Audio(a)) = ctx.input() else {
            return Err(ctx.error("resample built without a PCM16 input"));
        };
        let output = AudioFormat::pcm16(spec.sample_rate);
        let inner = if a.sample_rate == spec.sample_rate {
            None
        } else {
            Some(StreamResampler::new(a.sample_rate, spec.sample_rate).map_err(|e| ctx.error(e))?)
        };
        let latency = inner
            .as_ref()
            .map_or(Duration::ZERO, |r| output.duration_of(r.delay_samples() as u64));
        Ok(Runnable::Inline(Box::new(Resample {
            inner,
            output,
            latency,
        })))
    }
}

impl Stage for Resample {
    fn process(&mut self, frame: Frame<'_>, out: &mut Output<'_>) -> Result<(), StageError> {
        let (Frame::Audio(audio), Some(inner)) = (frame, self.inner.as_mut()) else {
            return out.push(frame);
        };
        let format = self.output;
        inner.push(audio.samples, &mut |pos, samples| {
            out.push(Frame::Audio(AudioChunk {
                pts: format.duration_of(pos),
                samples,
            }))
        })
    }

    fn finish(&mut self, out: &mut Output<'_>) -> Result<(), StageError> {
        let Some(inner) = self.inner.as_mut() else {
            return Ok(());
        };
        let format = self.output;
        inner.flush(&mut |pos, samples| {
            out.push(Frame::Audio(AudioChunk {
                pts: format.duration_of(pos),
                samples,
            }))
        })
    }

    fn latency(&self) -> Duration {
        self.latency
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{Harness, signal};

    const GRID: &[(u32, u32)] = &[(8000, 16000), (8000, 24000), (16000, 24000), (24000, 8000), (48000, 16000), (16000, 8000)];

    fn run(from: u32, to: u32, input: &[i16], window: usize) -> (Vec<i16>, Duration) {
        let mut h = Harness::new("resample", &format!("sample_rate = {to}"), &[Format::audio(from)]);
        for chunk in input.chunks(window.max(1)) {
            h.push_audio(chunk);
        }
        h.finish().unwrap();
        (h.audio(0), h.latency())
    }

    #[test]
    fn conserves_samples_as_input_times_ratio_plus_delay() {
        for &(from, to) in GRID {
            let input = signal::vowels(from, 0.73);
            let (out, latency) = run(from, to, &input, from as usize / 50);
            let delay = AudioFormat::pcm16(to).samples_in(latency);
            let expected = (input.len() as f64 * f64::from(to) / f64::from(from)).round() as usize + delay;
            assert_eq!(out.len(), expected, "{from}->{to}");
        }
    }

    #[test]
    fn one_big_chunk_and_many_small_ones_give_identical_output() {
        for &(from, to) in GRID {
            let input = signal::vowels(from, 0.5);
            let (big, _) = run(from, to, &input, input.len());
            for ms in [10, 20, 30] {
                let (small, _) = run(from, to, &input, from as usize * ms / 1000);
                assert_eq!(big, small, "{from}->{to} in {ms} ms windows");
            }
            let (odd, _) = run(from, to, &input, 37);
            assert_eq!(big, odd, "{from}->{to} in 37-sample windows");
        }
    }

    #[test]
    fn latency_is_where_an_impulse_comes_out() {
        for &(from, to) in GRID {
            let n = from as usize / 10; // impulse at 100 ms
            let mut input = vec![0i16; from as usize / 2];
            input[n] = 20000;
            let (out, latency) = run(from, to, &input, from as usize / 50);
            let peak = out
                .iter()
                .enumerate()
                .max_by_key(|(_, s)| s.unsigned_abs())
                .map(|(i, _)| i)
                .unwrap();
            let expected = (n as f64 * f64::from(to) / f64::from(from)).round() as i64
                + AudioFormat::pcm16(to).samples_in(latency) as i64;
            assert!(
                (peak as i64 - expected).abs() <= 1,
                "{from}->{to}: impulse at {peak}, latency() says {expected}"
            );
        }
    }

    /// Frequency and amplitude of a sine, by correlating with a sine and cosine at `hz`.
    fn tone_level_db(samples: &[i16], rate: u32, hz: f64) -> f64 {
        let (mut re, mut im) = (0.0, 0.0);
        for (i, s) in samples.iter().enumerate() {
            let ph = 2.0 * std::f64::consts::PI * hz * i as f64 / f64::from(rate);
            re += f64::from(*s) * ph.cos();
            im += f64::from(*s) * ph.sin();
        }
        let amp = 2.0 * (re * re + im * im).sqrt() / samples.len() as f64;
        20.0 * (amp / 32768.0).log10()
    }

    #[test]
    fn a_sine_keeps_its_frequency_and_amplitude() {
        for &(from, to) in GRID {
            let hz = f64::from(from.min(to)) * 0.3;
            let input = signal::sine(from, hz as f32, 1.0, 0.5);
            let (out, _) = run(from, to, &input, from as usize / 50);
            // Skip the delay and the padded tail: steady state only.
            let steady = &out[to as usize / 10..to as usize * 9 / 10];
            let at = tone_level_db(steady, to, hz);
            let expected = 20.0 * 0.5f64.log10();
            assert!((at - expected).abs() < 0.1, "{from}->{to}: {hz} Hz at {at:.2} dB, expected {expected:.2}");
            // And nothing else: the level half an octave away is far down.
            let off = tone_level_db(steady, to, hz * 1.41);
            assert!(off < expected - 60.0, "{from}->{to}: {off:.1} dB of spurious tone");
        }
    }

    #[test]
    fn tones_above_the_new_nyquist_are_removed_when_downsampling() {
        for &(from, to) in GRID.iter().filter(|(f, t)| f > t) {
            // An in-band tone of the input that cannot exist at the output rate.
            let hz = f64::from(to) * 0.75;
            let input = signal::sine(from, hz as f32, 1.0, 0.5);
            let (out, _) = run(from, to, &input, from as usize / 50);
            let steady = &out[to as usize / 10..to as usize * 9 / 10];
            // Where it would alias to.
            let alias = f64::from(to) - hz;
            let level = tone_level_db(steady, to, alias);
            assert!(level < -60.0, "{from}->{to}: {hz} Hz aliases to {alias} Hz at {level:.1} dB");
        }
    }

    #[test]
    fn equal_rates_pass_through_untouched() {
        let input = signal::vowels(16000, 0.1);
        let (out, latency) = run(16000, 16000, &input, 160);
        assert_eq!(out, input);
        assert_eq!(latency, Duration::ZERO);
    }
}
