//! `vad`: voice activity detection with earshot's model (its 40 KB of weights compiled in; see
//! [`model`]).
//!
//! PCM16 in, the same PCM16 out (untouched, no delay), plus events between the chunks:
//! `SpeechStarted` once speech has lasted `start_ms`, `SpeechConfirmed` once it has lasted
//! `min_barge_in_ms` (long enough to interrupt the bot: "haan", "hmm" are shorter), and
//! `SpeechStopped` once silence has lasted `stop_ms`. Events carry the onset and offset
//! themselves, not the moment they were decided. The model listens in 16 ms windows at the
//! rate the audio arrives at, with no resampler of its own (see [`model`]): put `vad` where the
//! audio is at its lowest rate (before a `resample` up to the Realtime API's 24 kHz) and it costs
//! least.

use std::time::Duration;

use serde::Deserialize;

use crate::engine::format::{AudioFormat, Caps, Format};
use crate::engine::frame::{Event, Frame};
use crate::engine::bus::BusKind;
use crate::engine::registry::{CompileOptions, Invalid, NegotiateError, Negotiated, Role, StageKind};
use crate::engine::stage::{BuildCtx, BuildError, Output, Runnable, Stage, StageError};

mod model;

use model::VoiceModel;

/// Rates `vad` listens at.
pub const VAD_RATES: &[u32] = model::RATES;
/// The model's window.
const WINDOW_MS: u32 = 16;

const DEFAULT_THRESHOLD: f32 = 0.5;
const DEFAULT_START_MS: u32 = 200;
const DEFAULT_STOP_MS: u32 = 600;
const DEFAULT_MIN_BARGE_IN_MS: u32 = 400;
const DEFAULT_MIN_SNR_DB: f32 = 3.0;
/// Windows of history (1.5 s) the noise floor is the quietest of: long enough to reach a pause
/// between words, short enough to follow a change of room within two seconds.
const FLOOR_WINDOWS: usize = 96;
/// Floor under the noise floor (−80 dBFS), so digital silence does not make any hiss "speech".
const MIN_FLOOR_RMS: f32 = 3.3;
/// Windows the model hears again before it resumes after a rest (192 ms: its own 48 ms context
/// and enough for its recurrent state to settle), so it decides as if it had never stopped.
const WARM_UP_WINDOWS: usize = 12;
/// Digital-silence windows (96 ms) that make a call's start "muted".
const SILENT_START_WINDOWS: usize = 6;
/// Spread of levels (6 dB) beyond which sound after a muted start is not steady noise.
const UNSTEADY_RATIO: f32 = 2.0;
/// Windows averaged into one noise-floor level.
const SMOOTH_WINDOWS: usize = 3;
/// Pre-emphasis coefficient (the usual speech front-end value, as earshot's own).
const PRE_EMPHASIS: f32 = 0.97;
/// Unvoiced windows tolerated inside a starting utterance before it is abandoned (48 ms): a
/// plosive or a short dip must not reset the start hysteresis.
const START_GAP_WINDOWS: u32 = 3;

fn default_threshold() -> f32 {
    DEFAULT_THRESHOLD
}
fn default_start_ms() -> u32 {
    DEFAULT_START_MS
}
fn default_stop_ms() -> u32 {
    DEFAULT_STOP_MS
}
fn default_min_barge_in_ms() -> u32 {
    DEFAULT_MIN_BARGE_IN_MS
}
fn default_min_snr_db() -> f32 {
    DEFAULT_MIN_SNR_DB
}

/// Parameters of `vad`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VadSpec {
    /// Score (0–1) at or above which a 16 ms window counts as voiced.
    #[serde(default = "default_threshold")]
    pub threshold: f32,
    /// Milliseconds of speech before `SpeechStarted` is reported.
    #[serde(default = "default_start_ms")]
    pub start_ms: u32,
    /// Milliseconds of silence before `SpeechStopped` is reported.
    #[serde(default = "default_stop_ms")]
    pub stop_ms: u32,
    /// Milliseconds of speech before `SpeechConfirmed`: shorter utterances ("haan", "hmm") are
    /// backchannels, not barge-in.
    #[serde(default = "default_min_barge_in_ms")]
    pub min_barge_in_ms: u32,
    /// Decibels a window must stand above the running noise floor (the quietest window of the
    /// last 1.5 s) to count as voiced: steady noise never does, whatever the model thinks of it.
    #[serde(default = "default_min_snr_db")]
    pub min_snr_db: f32,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    Quiet,
    Starting { onset: u64, voiced: u32, gap: u32 },
    Speaking { onset: u64, confirmed: bool },
    Stopping { onset: u64, offset: u64, silent: u32, confirmed: bool },
}

/// Voice activity detection.
pub struct Vad {
    spec: VadSpec,
    model: VoiceModel,
    rate: u32,
    /// The window being filled (16 ms at the input's rate).
    window: Vec<i16>,
    filled: usize,
    /// Samples seen so far.
    position: u64,
    state: State,
    events: [Option<Event>; 4],
    /// RMS of the last [`FLOOR_WINDOWS`] windows (a circular history).
    levels: [f32; FLOOR_WINDOWS],
    windows_seen: usize,
    /// `10^(min_snr_db / 20)`.
    snr_ratio: f32,
    /// Last analysis sample, for pre-emphasis.
    previous: f32,
    /// The last [`WARM_UP_WINDOWS`] windows, kept to warm the model up after a rest (a
    /// circular history, one window after another).
    before: Vec<i16>,
    /// Windows analysed so far.
    windows_total: usize,
    /// Windows since the model last ran.
    unheard: usize,
    /// Times the model ran.
    inferences: u64,
    /// Mean squares of the last [`SMOOTH_WINDOWS`] non-silent windows.
    recent: [f32; SMOOTH_WINDOWS],
    recent_seen: usize,
    /// Digital-silence windows in a row before any other level was heard (a call that
    /// starts muted).
    silent_start: usize,
}

impl StageKind for Vad {
    const NAME: &'static str = "vad";
    const SUMMARY: &'static str = "Voice activity: SpeechStarted / SpeechConfirmed / SpeechStopped.";
    const EXAMPLE: &'static str = "start_ms = 200\nstop_ms = 600\nmin_barge_in_ms = 400";
    const ROLE: Role = Role::Transform;
    type Spec = VadSpec;

    fn input_caps(_: &VadSpec) -> Caps {
        Caps::Audio { rates: VAD_RATES }
    }

    fn validate(spec: &VadSpec) -> Vec<Invalid> {
        let mut invalid = Vec::new();
        if !(0.0..=1.0).contains(&spec.threshold) {
            invalid.push(Invalid {
                key: "threshold",
                message: "a score between 0 and 1".into(),
            });
        }
        for (key, ms) in [
            ("start_ms", spec.start_ms),
            ("stop_ms", spec.stop_ms),
            ("min_barge_in_ms", spec.min_barge_in_ms),
        ] {
            if ms > 10_000 {
                invalid.push(Invalid {
                    key,
                    message: "at most 10000 ms".into(),
                });
            }
        }
        invalid
    }

    fn negotiate(_: &VadSpec, inputs: &[Format], _: &CompileOptions) -> Result<Negotiated, NegotiateError> {
        match inputs.first() {
            Some(f @ Format::Audio(_)) => Ok(Negotiated::out(*f)),
            other => Err(format!("vad needs PCM16 audio, got {other:?}").into()),
        }
    }

    fn build(spec: &VadSpec, ctx: &BuildCtx<'_>) -> Result<Runnable, BuildError> {
        let Some(Format::Audio(a)) = ctx.input() else {
            return Err(ctx.error("vad built without a PCM16 input"));
        };
        let vad = Vad::new(spec, a.sample_rate).map_err(|e| ctx.error(e))?;
        Ok(Runnable::Inline(Box::new(vad)))
    }
}

impl Vad {
    fn new(spec: &VadSpec, rate: u32) -> Result<Vad, String> {
        let model = VoiceModel::new(rate).ok_or_else(|| format!("vad cannot listen at {rate} Hz"))?;
        let hop = model.hop();
        Ok(Vad {
            spec: spec.clone(),
            model,
            rate,
            window: vec![0; hop],
            filled: 0,
            position: 0,
            state: State::Quiet,
            events: Default::default(),
            levels: [f32::INFINITY; FLOOR_WINDOWS],
            windows_seen: 0,
            snr_ratio: 10f32.powf(spec.min_snr_db / 20.0),
            previous: 0.0,
            recent: [0.0; SMOOTH_WINDOWS],
            recent_seen: 0,
            silent_start: 0,
            before: vec![0; hop * WARM_UP_WINDOWS],
            windows_total: 0,
            unheard: 0,
            inferences: 0,
        })
    }

    /// Whether this window is loud enough above the noise floor to be speech. Energy is taken
    /// after pre-emphasis (a first-order high-pass), which flattens the rumble of steady noise
    /// so that its windows sit within a few dB of each other while speech stands out.
    fn above_floor(&mut self) -> bool {
        let mut energy = 0.0f32;
        for s in &self.window {
            let x = f32::from(*s);
            let y = x - PRE_EMPHASIS * self.previous;
            self.previous = x;
            energy += y * y;
        }
        let mean_square = energy / self.window.len() as f32;
        let rms = mean_square.sqrt();
        // Digital silence (a muted line) is not noise: it must not pin the floor to zero and make
        // the steady noise that follows look like speech. The floor is the quietest *smoothed*
        // level (three windows, 48 ms), so one window that is half silence (a resampler's
        // start-up, a line coming unmuted) cannot pin it low either.
        if rms < MIN_FLOOR_RMS && self.windows_seen == 0 {
            self.silent_start += 1;
        }
        if rms >= MIN_FLOOR_RMS {
            self.recent[self.recent_seen % SMOOTH_WINDOWS] = mean_square;
            self.recent_seen += 1;
            if self.recent_seen >= SMOOTH_WINDOWS {
                let smoothed = (self.recent.iter().sum::<f32>() / SMOOTH_WINDOWS as f32).sqrt();
                self.levels[self.windows_seen % FLOOR_WINDOWS] = smoothed;
                self.windows_seen += 1;
            }
        }
        let seen = self.windows_seen.min(FLOOR_WINDOWS);
        let history = &self.levels[..seen];
        let floor = history.iter().copied().fold(f32::INFINITY, f32::min);
        // A call that starts muted has no floor to learn but its first sounds: judged against
        // themselves, the first words of a loud "hello?" would not be loud and would be found
        // late (a second and more). Until the history has filled once, a start that was
        // silent takes digital silence as the floor, but only for sound that is not steady
        // (levels spread over 6 dB: speech rising, not hiss), so noise after a muted start
        // is still judged against itself.
        if self.silent_start >= SILENT_START_WINDOWS && self.windows_seen < FLOOR_WINDOWS {
            let loudest = history.iter().copied().fold(0.0f32, f32::max);
            if floor.is_finite() && loudest >= floor * UNSTEADY_RATIO {
                return rms >= MIN_FLOOR_RMS * self.snr_ratio;
            }
        }
        floor.is_finite() && rms >= floor * self.snr_ratio
    }

    fn at(&self, sample: u64) -> Duration {
        AudioFormat::pcm16(self.rate).duration_of(sample)
    }

    fn ms_of(&self, samples: u64) -> u32 {
        (samples * 1000 / u64::from(self.rate)) as u32
    }

    fn queue(&mut self, event: Event) {
        if let Some(slot) = self.events.iter_mut().find(|e| e.is_none()) {
            *slot = Some(event);
        }
    }

    /// Feeds samples through 16 ms windows into the state machine.
    fn analyse(&mut self, mut samples: &[i16]) {
        let hop = self.window.len();
        while !samples.is_empty() {
            let take = (hop - self.filled).min(samples.len());
            self.window[self.filled..self.filled + take].copy_from_slice(&samples[..take]);
            self.filled += take;
            samples = &samples[take..];
            if self.filled == hop {
                self.filled = 0;
                let voiced = self.classify_window();
                let start = self.position;
                self.position += hop as u64;
                self.step(voiced, start);
            }
        }
    }

    /// Whether the window just filled is voiced: loud enough above the noise floor *and* scored
    /// as voice by the model. A window below the floor cannot be voiced whatever the model says,
    /// so the model is not run on it (it is most of the stage's cost, and a caller is silent
    /// most of a call: between turns, in the pauses between words and through the `stop_ms`
    /// that ends a turn). When it runs again it first hears the windows it missed (up to
    /// [`WARM_UP_WINDOWS`]), so after a short pause its context and state are exactly as if it
    /// had never stopped, and after a long one they have settled.
    fn classify_window(&mut self) -> bool {
        let loud = self.above_floor();
        let voiced = if loud {
            // Replay what the model missed, up to WARM_UP_WINDOWS, oldest first.
            let hop = self.window.len();
            let missed = self.unheard.min(WARM_UP_WINDOWS);
            for k in (1..=missed).rev() {
                let slot = (self.windows_total + WARM_UP_WINDOWS - k) % WARM_UP_WINDOWS;
                let _ = self.model.score(&self.before[slot * hop..(slot + 1) * hop]);
            }
            self.inferences += missed as u64 + 1;
            self.unheard = 0;
            self.model.score(&self.window) >= self.spec.threshold && loud
        } else {
            self.unheard += 1;
            false
        };
        let hop = self.window.len();
        let slot = self.windows_total % WARM_UP_WINDOWS;
        self.before[slot * hop..(slot + 1) * hop].copy_from_slice(&self.window);
        self.windows_total += 1;
        voiced
    }

    /// One 16 ms window starting at sample `t`.
    fn step(&mut self, voiced: bool, t: u64) {
        let end = t + self.window.len() as u64;
        let spec = &self.spec;
        self.state = match (self.state, voiced) {
            (State::Quiet, false) => State::Quiet,
            (State::Quiet, true) => State::Starting {
                onset: t,
                voiced: WINDOW_MS,
                gap: 0,
            },
            (State::Starting { onset, voiced, .. }, true) => State::Starting {
                onset,
                voiced: voiced + WINDOW_MS,
                gap: 0,
            },
            (State::Starting { gap, .. }, false) if gap + 1 >= START_GAP_WINDOWS => State::Quiet,
            (State::Starting { onset, voiced, gap }, false) => State::Starting {
                onset,
                voiced,
                gap: gap + 1,
            },
            (State::Speaking { onset, confirmed }, true) => State::Speaking { onset, confirmed },
            (State::Speaking { onset, confirmed }, false) => State::Stopping {
                onset,
                offset: t,
                silent: WINDOW_MS,
                confirmed,
            },
            (State::Stopping { onset, confirmed, .. }, true) => State::Speaking { onset, confirmed },
            (State::Stopping { onset, offset, silent, confirmed }, false) => State::Stopping {
                onset,
                offset,
                silent: silent + WINDOW_MS,
                confirmed,
            },
        };
        let (start_ms, stop_ms, barge_ms) = (spec.start_ms, spec.stop_ms, spec.min_barge_in_ms);
        if let State::Starting { onset, voiced, .. } = self.state
            && voiced >= start_ms
        {
            self.queue(Event::SpeechStarted { at: self.at(onset) });
            self.state = State::Speaking {
                onset,
                confirmed: false,
            };
        }
        if let State::Speaking {
            onset,
            confirmed: false,
        } = self.state
            && self.ms_of(end - onset) >= barge_ms
        {
            self.queue(Event::SpeechConfirmed { at: self.at(onset) });
            self.state = State::Speaking {
                onset,
                confirmed: true,
            };
        }
        if let State::Stopping {
            onset,
            offset,
            silent,
            ..
        } = self.state
            && silent >= stop_ms
        {
            self.queue(Event::SpeechStopped {
                at: self.at(offset),
                speech: self.at(offset).saturating_sub(self.at(onset)),
            });
            self.state = State::Quiet;
        }
    }

    fn emit_events(&mut self, out: &mut Output<'_>) -> Result<(), StageError> {
        for i in 0..self.events.len() {
            if let Some(event) = self.events[i].take() {
                // Published before it is pushed: whatever a stage downstream does about it
                // (a reply) comes after it on the bus and the signal lane.
                out.publish(BusKind::Event(event.clone()));
                out.push(Frame::Event(&event))?;
            }
        }
        Ok(())
    }
}

impl Stage for Vad {
    fn process(&mut self, frame: Frame<'_>, out: &mut Output<'_>) -> Result<(), StageError> {
        out.push(frame)?;
        let Frame::Audio(audio) = frame else {
            return Ok(());
        };
        self.analyse(audio.samples);
        self.emit_events(out)
    }

    fn finish(&mut self, out: &mut Output<'_>) -> Result<(), StageError> {
        // Every SpeechStarted gets its SpeechStopped, at the end of the stream if need be.
        let end = self.position;
        match self.state {
            State::Speaking { onset, .. } => self.queue(Event::SpeechStopped {
                at: self.at(end),
                speech: self.at(end).saturating_sub(self.at(onset)),
            }),
            State::Stopping { onset, offset, .. } => self.queue(Event::SpeechStopped {
                at: self.at(offset),
                speech: self.at(offset).saturating_sub(self.at(onset)),
            }),
            State::Quiet | State::Starting { .. } => {}
        }
        self.state = State::Quiet;
        self.emit_events(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{Harness, signal};

    fn vad16(start_ms: u32, stop_ms: u32, min_barge_in_ms: u32) -> Vad {
        let spec = VadSpec {
            threshold: DEFAULT_THRESHOLD,
            start_ms,
            stop_ms,
            min_barge_in_ms,
            min_snr_db: DEFAULT_MIN_SNR_DB,
        };
        Vad::new(&spec, 16000).unwrap()
    }

    fn events(rate: u32, params: &str, audio: &[i16]) -> Vec<Event> {
        let mut h = Harness::new("vad", params, &[Format::audio(rate)]);
        for chunk in audio.chunks(rate as usize / 50) {
            h.push_audio(chunk);
        }
        h.finish().unwrap();
        assert_eq!(h.audio(0), audio, "vad passes audio through untouched");
        h.events()
    }

    /// The first utterance after near-digital silence (a call's start: ±2 of dither, then a
    /// loud "hello?" with no line noise) is found on time, not once the noise floor has learnt
    /// the speech (it was 1.2 s late).
    #[test]
    fn the_first_utterance_after_digital_silence_is_found_on_time() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/audio/dither_then_speech_hi_8k.wav");
        let (rate, audio) = crate::devtools::wav::read_wav_mono(&path).unwrap_or_else(|e| panic!("{e}"));
        let onsets: Vec<Duration> = events(rate, "", &audio)
            .iter()
            .filter_map(|e| match e {
                Event::SpeechStarted { at } => Some(*at),
                _ => None,
            })
            .collect();
        let first = onsets.first().copied().unwrap_or(Duration::MAX);
        let truth = Duration::from_millis(800);
        assert!(
            first.abs_diff(truth) <= Duration::from_millis(100),
            "onset at {first:?}, speech starts at {truth:?}: {onsets:?}"
        );
    }

    #[test]
    fn steady_noise_after_a_muted_start_is_not_speech() {
        for rate in VAD_RATES {
            let mut audio = signal::silence(*rate, 1.0);
            audio.extend(signal::noise(*rate, 3.0, 0.05, 21));
            let e = events(*rate, "", &audio);
            assert!(e.is_empty(), "{rate} Hz: {e:?}");
        }
    }

    #[test]
    fn one_big_chunk_and_many_small_ones_give_the_same_events() {
        for rate in VAD_RATES {
            let mut audio = signal::silence(*rate, 0.5);
            audio.extend(signal::vowels(*rate, 1.0));
            audio.extend(signal::silence(*rate, 1.0));
            let run = |window: usize| {
                let mut h = Harness::new("vad", "", &[Format::audio(*rate)]);
                for chunk in audio.chunks(window) {
                    h.push_audio(chunk);
                }
                h.finish().unwrap();
                h.events()
            };
            let big = run(audio.len());
            assert_eq!(big.len(), 3, "{rate} Hz: {big:?}");
            assert_eq!(run(*rate as usize / 50), big, "{rate} Hz, 20 ms chunks");
            assert_eq!(run(37), big, "{rate} Hz, 37-sample chunks");
        }
    }

    #[test]
    fn vad_emits_nothing_for_digital_silence() {
        for rate in VAD_RATES {
            assert!(events(*rate, "", &vec![0; *rate as usize * 3]).is_empty(), "{rate} Hz");
        }
    }

    #[test]
    fn vad_emits_nothing_for_steady_noise() {
        for rate in [8000, 16000] {
            let noise = signal::noise(rate, 3.0, 0.05, 7);
            let e = events(rate, "", &noise);
            assert!(e.is_empty(), "{rate} Hz: {e:?}");
        }
    }

    #[test]
    fn the_model_rests_through_steady_noise_and_runs_through_speech() {
        let feed = |audio: &[i16]| {
            let mut vad = vad16(200, 600, 400);
            vad.analyse(audio);
            (vad.inferences, vad.windows_total as u64)
        };
        let (ran, windows) = feed(&signal::noise(16000, 3.0, 0.05, 11));
        assert!(ran * 10 < windows, "noise: model ran on {ran} of {windows} windows");
        let (ran, windows) = feed(&signal::vowels(16000, 3.0));
        assert!(ran * 10 > windows * 9, "voice: model ran on {ran} of {windows} windows");
    }

    #[test]
    fn a_state_machine_turns_windows_into_started_confirmed_stopped() {
        let mut vad = vad16(64, 96, 160);
        // 20 voiced windows (320 ms) from window 5, then silence.
        for w in 0..40u64 {
            vad.step((5..25).contains(&w), w * 256);
        }
        let got: Vec<Event> = vad.events.iter_mut().filter_map(Option::take).collect();
        let ms = |w: u64| Duration::from_millis(w * 16);
        assert_eq!(
            got,
            [
                Event::SpeechStarted { at: ms(5) },
                Event::SpeechConfirmed { at: ms(5) },
                Event::SpeechStopped { at: ms(25), speech: ms(20) },
            ]
        );
    }

    #[test]
    fn short_backchannels_start_speech_but_are_not_confirmed() {
        let mut vad = vad16(64, 96, 400);
        // "haan": 240 ms of voice.
        for w in 0..40u64 {
            vad.step((5..20).contains(&w), w * 256);
        }
        let got: Vec<Event> = vad.events.iter_mut().filter_map(Option::take).collect();
        assert_eq!(got.len(), 2);
        assert!(matches!(got[0], Event::SpeechStarted { .. }));
        assert!(matches!(got[1], Event::SpeechStopped { .. }));
    }

    #[test]
    fn a_short_dip_does_not_reset_the_start_hysteresis() {
        let mut vad = vad16(96, 96, 400);
        let voiced = [true, true, true, false, true, true, true];
        for (w, v) in voiced.iter().enumerate() {
            vad.step(*v, w as u64 * 256);
        }
        assert!(matches!(vad.state, State::Speaking { onset: 0, .. }), "{:?}", vad.state);
    }
}
