//! The voice model behind `vad`: earshot's network (its trained weights, vendored in
//! `data/vad/`), run on features computed at the call's own rate.
//!
//! earshot listens at 16 kHz: 48 ms Hann windows every 16 ms, a 1024-point FFT (bins 15.625 Hz
//! apart), 40 triangular mel bands, log energies over three frames, then a small convolutional
//! front and two minimal GRU layers. The same bins exist at every rate if the window and the FFT
//! keep their length in time, so here the features are computed at the rate the audio arrives
//! at (a 512-point FFT at 8 kHz, 1536 at 24 kHz), with no resampler in front: at 16 kHz they are
//! earshot's own (up to the FFT's rounding), and elsewhere the 16 kHz pre-emphasis and level are
//! applied to each bin. At 8 kHz the bands above 4 kHz, which the audio cannot carry, hold what
//! a 16 kHz PCM16 stream of the same audio holds there: its rounding noise.
//!
//! What is the same for every call — the weights, each rate's FFT plan, window and bin gains —
//! is built once per process and shared; a call holds only its sample history, the last three
//! frames' features and the 128 values of the network's state (about 6 KiB at 8 kHz).
//!
//! The layers are written so that the compiler can vectorise them: a convolution's sum runs over
//! input channels in earshot's order for all sixteen output channels at once (the same float
//! additions, so the same result), the max pool is taken before the pointwise scale (a monotone
//! map, so again the same result), and the GRU's integer dot products are exact in any order.
//! The tests compare every score with earshot's own detector on the same audio.

use std::sync::{Arc, LazyLock};

use realfft::num_complex::Complex;
use realfft::{RealFftPlanner, RealToComplex};
use wide::{i16x8, i32x4};

use crate::codec::round_to_i16;


/// The rate earshot's geometry is defined at.
const REFERENCE_RATE: u32 = 16000;
/// Window, hop and FFT length at the reference rate (48, 16 and 64 ms).
const REFERENCE_WINDOW: usize = 768;
const REFERENCE_HOP: usize = 256;
const REFERENCE_FFT: usize = 1024;
/// Bins 0..=8 kHz at the reference rate.
const BINS: usize = REFERENCE_FFT / 2 + 1;
const MELS: usize = 40;
/// Frames of features the network sees at once.
const CONTEXT: usize = 3;
const PRE_EMPHASIS: f64 = 0.97;
/// Power of a bin at PCM16 scale → power at full scale 1.0.
const POWER_SCALE: f32 = 1.0 / (32768.0 * 32768.0);
/// Variance of the rounding noise of PCM16 samples (uniform over one step).
const ROUNDING_NOISE: f64 = 1.0 / 12.0;
/// The mel filterbank: triangles between these FFT bins (of the 1024-point FFT at 16 kHz),
/// band `m` rising from `MEL_EDGES[m]` to its peak at `MEL_EDGES[m + 1]` and falling to zero at
/// `MEL_EDGES[m + 2]` — earshot 1.2.2's bank (about 70 Hz to 7.6 kHz).
const MEL_EDGES: [usize; MELS + 2] = [
    4, 7, 10, 13, 17, 21, 25, 29, 33, 38, 43, 48, 54, 60, 66, 73, 80, 87, 95, 103, 112, 122, 132,
    142, 153, 165, 178, 191, 205, 220, 236, 253, 270, 289, 309, 330, 353, 376, 402, 428, 456, 486,
];

/// The filterbank's triangles tile the bins: between two neighbouring edges one band rises from
/// 0 to 1 while the one before falls from 1 to 0, so a band's energy is the rising part of its
/// first segment plus the rest of its second. `RISE[k]` is how far bin `k` is up its segment.
static RISE: LazyLock<[f32; BINS]> = LazyLock::new(|| {
    let mut rise = [0.0; BINS];
    for e in MEL_EDGES.windows(2) {
        let (lo, hi) = (e[0], e[1]);
        for (k, r) in rise.iter_mut().enumerate().take(hi).skip(lo) {
            *r = (k - lo) as f32 / (hi - lo) as f32;
        }
    }
    rise
});

/// earshot 1.2.2's trained weights (MIT OR Apache-2.0; `data/vad/README.md`).
const WEIGHT_BYTES: &[u8] = include_bytes!("../../../data/vad/earshot-1.2.2-weights.bin");
/// 705 floats and 18,560 16-bit values: the build fails if the file is not exactly that.
const WEIGHT_LEN: usize = 705 * 4 + (128 * 80 + 128 * 64 + 128) * 2;
const _: () = assert!(WEIGHT_BYTES.len() == WEIGHT_LEN);

/// The network's weights, read once from [`WEIGHT_BYTES`].
struct Weights {
    norm: [f32; MELS],
    k1: [f32; 9],
    w1: [f32; 16],
    b1: [f32; 16],
    /// Depthwise kernel of layer 2, `[tap][channel]`.
    k2: [[f32; 16]; 3],
    /// Pointwise weights of layer 2, `[input channel][output channel]`.
    w2: [[f32; 16]; 16],
    b2: [f32; 16],
    k3: [[f32; 16]; 3],
    w3: [[f32; 16]; 16],
    gru1: Box<[[i16; 80]; 128]>,
    gru2: Box<[[i16; 64]; 128]>,
    out: [i16; 128],
}

/// Reads little-endian values off the front of a byte slice.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn f32s<const N: usize>(&mut self) -> [f32; N] {
        let mut v = [0.0; N];
        for x in &mut v {
            let (head, rest) = self.0.split_at(4);
            *x = f32::from_le_bytes([head[0], head[1], head[2], head[3]]);
            self.0 = rest;
        }
        v
    }

    fn i16s<const N: usize>(&mut self) -> [i16; N] {
        let mut v = [0; N];
        for x in &mut v {
            let (head, rest) = self.0.split_at(2);
            *x = i16::from_le_bytes([head[0], head[1]]);
            self.0 = rest;
        }
        v
    }
}

fn transpose<const R: usize, const C: usize>(m: [[f32; C]; R]) -> [[f32; R]; C] {
    let mut t = [[0.0; R]; C];
    for (r, row) in m.iter().enumerate() {
        for (c, v) in row.iter().enumerate() {
            t[c][r] = *v;
        }
    }
    t
}

static WEIGHTS: LazyLock<Weights> = LazyLock::new(|| {
    // The file's length is checked when the crate builds, so the reads below cannot run past
    // its end.
    let mut r = Reader(WEIGHT_BYTES);
    let norm = r.f32s();
    let k1 = r.f32s();
    let w1 = r.f32s();
    let b1 = r.f32s();
    let k2 = r.f32s::<48>();
    let w2 = r.f32s::<256>();
    let b2 = r.f32s();
    let k3 = r.f32s::<48>();
    let w3 = r.f32s::<256>();
    // Kernels are stored `[channel][tap]` and pointwise weights `[output][input]`; both are
    // turned so that the inner loops run over channels.
    let taps = |flat: &[f32; 48]| transpose::<16, 3>(std::array::from_fn(|c| [flat[3 * c], flat[3 * c + 1], flat[3 * c + 2]]));
    let matrix = |flat: &[f32; 256]| transpose::<16, 16>(std::array::from_fn(|o| std::array::from_fn(|i| flat[16 * o + i])));
    let mut gru1 = Box::new([[0; 80]; 128]);
    for row in gru1.iter_mut() {
        *row = r.i16s();
    }
    let mut gru2 = Box::new([[0; 64]; 128]);
    for row in gru2.iter_mut() {
        *row = r.i16s();
    }
    let out = r.i16s();
    Weights {
        norm,
        k1,
        w1,
        b1,
        k2: taps(&k2),
        w2: matrix(&w2),
        b2,
        k3: taps(&k3),
        w3: matrix(&w3),
        gru1,
        gru2,
        out,
    }
});

/// What is the same for every call at one rate: the FFT plan, the window and each bin's gain.
struct Analysis {
    rate: u32,
    hop: usize,
    fft: Arc<dyn RealToComplex<f32>>,
    window: Vec<f32>,
    /// Per bin the rate carries: (16 kHz level / this rate's level)², the 16 kHz pre-emphasis
    /// over this rate's, and PCM16 scale → full scale, in one factor.
    gain: Vec<f32>,
    /// The power of the bins this rate cannot carry: PCM16 rounding noise at 16 kHz.
    floor: Vec<f32>,
    /// Filterbank segments (between two edges) that hold a bin this rate carries: the rest
    /// hold only the floor, and so do the bands made of them.
    live_segments: usize,
    /// The log energy of each band made of floor alone (the others are computed per window).
    quiet_bands: [f32; MELS],
}

/// A filterbank segment's power, whole and weighted by the rise (see [`RISE`]).
fn segment(power: &[f32], s: usize) -> (f32, f32) {
    let (lo, hi) = (MEL_EDGES[s], MEL_EDGES[s + 1]);
    let mut whole = 0.0f32;
    let mut rising = 0.0f32;
    for (p, r) in power[lo..hi].iter().zip(&RISE[lo..hi]) {
        whole += p;
        rising += p * r;
    }
    (whole, rising)
}

/// A band's log energy from its two segments: the first's rising part, the second's falling.
fn band_log(first: (f32, f32), second: (f32, f32)) -> f32 {
    (first.1 + (second.0 - second.1) + 1e-20).ln()
}

/// |1 − a·e^(−j2πf/rate)|², the pre-emphasis filter's power response.
fn pre_emphasis_power(f: f64, rate: f64) -> f64 {
    let w = std::f64::consts::TAU * f / rate;
    1.0 + PRE_EMPHASIS * PRE_EMPHASIS - 2.0 * PRE_EMPHASIS * w.cos()
}

impl Analysis {
    fn new(rate: u32) -> Analysis {
        let scale = |n: usize| n * rate as usize / REFERENCE_RATE as usize;
        let (length, hop, size) = (scale(REFERENCE_WINDOW), scale(REFERENCE_HOP), scale(REFERENCE_FFT));
        let fft = RealFftPlanner::<f32>::new().plan_fft_forward(size);
        // A periodic Hann window, as earshot's.
        let window = (0..length)
            .map(|n| (0.5 - 0.5 * (std::f64::consts::TAU * n as f64 / length as f64).cos()) as f32)
            .collect();
        let carried = (size / 2 + 1).min(BINS);
        let bin_hz = |k: usize| k as f64 * f64::from(REFERENCE_RATE) / REFERENCE_FFT as f64;
        let level = (f64::from(REFERENCE_RATE) / f64::from(rate)).powi(2);
        let gain = (0..carried)
            .map(|k| {
                let (f, r) = (bin_hz(k), f64::from(rate));
                let emphasis = if rate == REFERENCE_RATE {
                    1.0
                } else {
                    pre_emphasis_power(f, f64::from(REFERENCE_RATE)) / pre_emphasis_power(f, r)
                };
                (level * emphasis) as f32 * POWER_SCALE
            })
            .collect();
        // White noise of variance σ² through the 16 kHz pre-emphasis and window: σ²·Σw²·|H(f)|².
        let window_energy = REFERENCE_WINDOW as f64 * 3.0 / 8.0;
        let floor: Vec<f32> = (carried..BINS)
            .map(|k| {
                let power = ROUNDING_NOISE * window_energy * pre_emphasis_power(bin_hz(k), f64::from(REFERENCE_RATE));
                power as f32 * POWER_SCALE
            })
            .collect();
        let live_segments = MEL_EDGES[..MELS + 1].iter().filter(|e| **e < carried).count();
        let mut quiet = vec![0.0; BINS];
        quiet[carried..].copy_from_slice(&floor);
        let mut quiet_bands = [0.0; MELS];
        for (m, band) in quiet_bands.iter_mut().enumerate().skip(live_segments) {
            *band = band_log(segment(&quiet, m), segment(&quiet, m + 1));
        }
        Analysis {
            rate,
            hop,
            fft,
            window,
            gain,
            floor,
            live_segments,
            quiet_bands,
        }
    }

    /// The shared analysis for `rate` (one of [`RATES`]).
    fn of(rate: u32) -> Option<&'static Analysis> {
        static ANALYSES: LazyLock<Vec<Analysis>> = LazyLock::new(|| RATES.iter().map(|r| Analysis::new(*r)).collect());
        ANALYSES.iter().find(|a| a.rate == rate)
    }
}

/// Rates the model listens at (the FFT keeps 64 ms at each).
pub(crate) const RATES: &[u32] = &[8000, 16000, 24000, 48000];

/// One call's voice model: scores each hop of audio (16 ms) as voice, 0–1.
pub(crate) struct VoiceModel {
    analysis: &'static Analysis,
    /// The last window of pre-emphasised samples, oldest first.
    history: Vec<f32>,
    previous: f32,
    fft_in: Vec<f32>,
    spectrum: Vec<Complex<f32>>,
    scratch: Vec<Complex<f32>>,
    /// Band powers of every bin up to 8 kHz; the bins the rate cannot carry keep their floor.
    power: Vec<f32>,
    /// Log mel energies of the last [`CONTEXT`] frames, oldest first.
    features: [f32; MELS * CONTEXT],
    state: [i16; 128],
}

impl VoiceModel {
    /// A model listening at `rate`, or `None` for a rate not in [`RATES`].
    pub(crate) fn new(rate: u32) -> Option<VoiceModel> {
        let analysis = Analysis::of(rate)?;
        LazyLock::force(&WEIGHTS);
        let mut power = vec![0.0; BINS];
        power[analysis.gain.len()..].copy_from_slice(&analysis.floor);
        Some(VoiceModel {
            analysis,
            history: vec![0.0; analysis.window.len()],
            previous: 0.0,
            fft_in: analysis.fft.make_input_vec(),
            spectrum: analysis.fft.make_output_vec(),
            scratch: analysis.fft.make_scratch_vec(),
            power,
            features: [0.0; MELS * CONTEXT],
            state: [0; 128],
        })
    }

    /// Samples per hop (16 ms at the model's rate).
    pub(crate) fn hop(&self) -> usize {
        self.analysis.hop
    }

    /// The voice score of the next hop of audio (exactly [`Self::hop`] samples; other lengths
    /// score 0 and change nothing).
    pub(crate) fn score(&mut self, samples: &[i16]) -> f32 {
        let hop = self.analysis.hop;
        if samples.len() != hop {
            return 0.0;
        }
        self.history.copy_within(hop.., 0);
        let keep = self.history.len() - hop;
        let a = PRE_EMPHASIS as f32;
        let tail = &mut self.history[keep..];
        tail[0] = f32::from(samples[0]) - a * self.previous;
        for (slot, pair) in tail[1..].iter_mut().zip(samples.windows(2)) {
            *slot = f32::from(pair[1]) - a * f32::from(pair[0]);
        }
        self.previous = f32::from(samples[hop - 1]);
        self.extract_features();
        predict(&WEIGHTS, &self.features, &mut self.state)
    }

    fn extract_features(&mut self) {
        let a = self.analysis;
        for ((d, x), w) in self.fft_in.iter_mut().zip(&self.history).zip(&a.window) {
            *d = x * w;
        }
        self.fft_in[a.window.len()..].fill(0.0);
        // The buffers were made by this plan, so their lengths always match and this cannot fail.
        let _ = a
            .fft
            .process_with_scratch(&mut self.fft_in, &mut self.spectrum, &mut self.scratch);
        // Bins past the last band's edge are never read.
        let used = a.gain.len().min(MEL_EDGES[MELS + 1]);
        for ((p, c), g) in self.power[..used].iter_mut().zip(&self.spectrum).zip(&a.gain) {
            *p = (c.re * c.re + c.im * c.im) * g;
        }
        self.features.copy_within(MELS.., 0);
        let frame = &mut self.features[MELS * (CONTEXT - 1)..];
        let live = a.live_segments;
        let mut segments = [(0.0f32, 0.0f32); MELS + 1];
        for (s, seg) in segments.iter_mut().enumerate().take(live) {
            *seg = segment(&self.power, s);
        }
        frame.copy_from_slice(&a.quiet_bands);
        for (m, band) in frame.iter_mut().enumerate().take(live) {
            *band = band_log(segments[m], segments[m + 1]);
        }
        let mean_square = frame.iter().map(|x| x * x).sum::<f32>() / MELS as f32;
        let inverse_rms = mean_square.sqrt().recip();
        for (x, n) in frame.iter_mut().zip(&WEIGHTS.norm) {
            *x = n * *x * inverse_rms;
        }
    }
}

/// The network: three frames of normalised log mel energies → a voice score, updating `state`.
/// Activations are kept `[position][channel]`, with a zero column on each side where the next
/// layer's convolution pads.
fn predict(w: &Weights, features: &[f32; MELS * CONTEXT], state: &mut [i16; 128]) -> f32 {
    // Layer 1: a 3×3 depthwise convolution over the three frames (one row of 38), a pointwise
    // scale and bias into 16 channels, a max pool (3 wide, stride 2) and a ReLU.
    let mut row = [0.0f32; 38];
    for (x, r) in row.iter_mut().enumerate() {
        let mut sum = 0.0;
        for kh in 0..3 {
            for kw in 0..3 {
                sum += features[kh * MELS + x + kw] * w.k1[kh * 3 + kw];
            }
        }
        *r = sum;
    }
    let mut l1 = [[0.0f32; 16]; 18 + 1];
    for (q, column) in l1[1..].iter_mut().enumerate() {
        let window = &row[2 * q..2 * q + 3];
        let high = window[0].max(window[1]).max(window[2]);
        let low = window[0].min(window[1]).min(window[2]);
        for ((v, scale), bias) in column.iter_mut().zip(&w.w1).zip(&w.b1) {
            // The pool of a monotone map is the map of the pool's max (its min, for a negative
            // scale; either, for zero): the same value as scaling every element first.
            let pooled = if *scale > 0.0 { high } else { low };
            *v = (pooled * scale + bias).max(0.0);
        }
    }
    // Layer 2: 18 → 9 per channel (3 wide, stride 2, padded by one), 16 × 16 pointwise, ReLU.
    let mut l2 = [[0.0f32; 16]; 9 + 2];
    for (x, column) in l2[1..10].iter_mut().enumerate() {
        let mixed = pointwise(&depthwise(&l1, &w.k2, x), &w.w2);
        for ((v, m), b) in column.iter_mut().zip(&mixed).zip(&w.b2) {
            *v = (m + b).max(0.0);
        }
    }
    // Layer 3: 9 → 5, 16 × 16 pointwise with no bias, quantised to Q15 for the GRU.
    let mut l3 = [0i16; 80];
    for (x, out) in l3.chunks_exact_mut(16).enumerate() {
        let mixed = pointwise(&depthwise(&l2, &w.k3, x), &w.w3);
        for (o, m) in out.iter_mut().zip(&mixed) {
            // Ties go to even where earshot rounds them away from zero: a sum exactly halfway
            // between two steps, which sums of trained weights all but never are.
            *o = round_to_i16(m * 32768.0);
        }
    }
    let (h1, h2) = state.split_at_mut(64);
    min_gru(&l3, h1, &w.gru1);
    min_gru(h1, h2, &w.gru2);
    let logit = dot(state, &w.out);
    1.0 / (1.0 + (-(logit as f32 / 16_777_216.0)).exp())
}

/// Output column `x` of a 3-wide, stride-2 depthwise convolution over columns padded with zeros
/// (input column `i` at `padded[i + 1]`), the taps added in order as earshot does.
fn depthwise<const N: usize>(padded: &[[f32; 16]; N], kernel: &[[f32; 16]; 3], x: usize) -> [f32; 16] {
    let mut out = [0.0f32; 16];
    for (tap, k) in kernel.iter().enumerate() {
        for ((o, v), k) in out.iter_mut().zip(&padded[2 * x + tap]).zip(k) {
            *o += v * k;
        }
    }
    out
}

/// 16 → 16 channels: each output's sum runs over the inputs in order, all outputs at once.
fn pointwise(input: &[f32; 16], transposed: &[[f32; 16]; 16]) -> [f32; 16] {
    let mut acc = [0.0f32; 16];
    for (v, column) in input.iter().zip(transposed) {
        for (a, w) in acc.iter_mut().zip(column) {
            *a += v * w;
        }
    }
    acc
}

/// Σ x·w in Q15 × Q9 = Q24, wrapping as earshot's release build does.
/// Eight products at a time, summed in pairs into four lanes (`pmaddwd` on x86-64, through
/// `wide`'s safe wrappers): integer sums, so the same result as one product at a time. The
/// lengths here are all multiples of eight.
fn dot(x: &[i16], w: &[i16]) -> i32 {
    let eight = |s: &[i16]| i16x8::new(std::array::from_fn(|i| s[i]));
    let mut lanes = i32x4::ZERO;
    for (a, b) in x.chunks_exact(8).zip(w.chunks_exact(8)) {
        lanes += eight(a).dot(eight(b));
    }
    lanes.reduce_add()
}

/// A minimal GRU layer: 128 dot products of the input (64 candidates, 64 gates), then each
/// state value moves toward its candidate by its gate.
fn min_gru<const IN: usize>(input: &[i16], h: &mut [i16], weights: &[[i16; IN]; 128]) {
    let mut z = [0i32; 128];
    for (z, row) in z.iter_mut().zip(weights) {
        *z = dot(input, row);
    }
    for (i, h) in h.iter_mut().enumerate() {
        // The gate is ×4, then clamped to [0, 1] in Q24.
        let g = i64::from(z[64 + i].wrapping_shl(2).clamp(0, 16_777_215));
        let y = (16_777_215 - g) * (i64::from(*h) << 9) + g * i64::from(z[i]);
        *h = (y >> 33).clamp(-32768, 32767) as i16;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::signal;

    /// At 16 kHz the features are earshot's and so is every score, to the FFT's rounding.
    #[test]
    fn at_16_khz_every_score_is_earshots() {
        let mut audio = signal::silence(16000, 0.3);
        audio.extend(signal::vowels(16000, 1.5));
        audio.extend(signal::noise(16000, 1.0, 0.05, 5));
        audio.extend(signal::vowels(16000, 1.0));
        let mut ours = VoiceModel::new(16000).unwrap_or_else(|| panic!("16 kHz"));
        let mut reference = earshot::Detector::default_boxed();
        let mut worst = 0.0f32;
        for hop in audio.chunks_exact(256) {
            let (a, b) = (ours.score(hop), reference.predict_i16(hop));
            worst = worst.max((a - b).abs());
        }
        println!("largest difference from earshot at 16 kHz: {worst:e}");
        assert!(worst < 1e-3, "largest difference {worst}");
    }

    /// Scores at `rate` by our model and, on the same audio resampled to 16 kHz (rubato, as the
    /// `resample` stage does), by earshot's detector: (windows, windows where both agree on
    /// voice at 0.5, mean |difference|).
    fn against_earshot(rate: u32, audio: &[i16]) -> (usize, usize, f32) {
        let mut ours = VoiceModel::new(rate).unwrap_or_else(|| panic!("{rate} Hz"));
        let scores: Vec<f32> = audio.chunks_exact(ours.hop()).map(|hop| ours.score(hop)).collect();
        let mut at_16k = Vec::new();
        if rate == REFERENCE_RATE {
            at_16k.extend_from_slice(audio);
        } else {
            let mut resampler = crate::stages::resample::StreamResampler::new(rate, REFERENCE_RATE).unwrap_or_else(|e| panic!("{e}"));
            let delay = resampler.delay_samples();
            let mut keep = |_: u64, chunk: &[i16]| {
                at_16k.extend_from_slice(chunk);
                Ok::<(), crate::engine::stage::StageError>(())
            };
            resampler.push(audio, &mut keep).unwrap_or_else(|e| panic!("{e}"));
            resampler.flush(&mut keep).unwrap_or_else(|e| panic!("{e}"));
            at_16k.drain(..delay);
        }
        let mut reference = earshot::Detector::default_boxed();
        let theirs: Vec<f32> = at_16k.chunks_exact(256).map(|hop| reference.predict_i16(hop)).collect();
        let n = scores.len().min(theirs.len());
        let agree = scores.iter().zip(&theirs).filter(|(a, b)| (**a >= 0.5) == (**b >= 0.5)).count();
        let mean = scores.iter().zip(&theirs).map(|(a, b)| (a - b).abs()).sum::<f32>() / n as f32;
        (n, agree, mean)
    }

    /// At 8, 24 and 48 kHz the model hears speech, noise and silence as earshot hears the same
    /// audio at 16 kHz: the voice decision agrees on almost every window.
    #[test]
    fn at_other_rates_the_scores_follow_earshots_at_16_khz() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/audio");
        let wav = |name: &str| crate::devtools::wav::read_wav_mono(&dir.join(name)).unwrap_or_else(|e| panic!("{e}"));
        let (_, speech_8k) = wav("speech_en_hi_8k.wav");
        let (_, noisy_16k) = wav("speech_en_hi_noisy_16k.wav");
        let (_, overlap_8k) = wav("overlap_speech_hi_en_8k.wav");
        let up = |audio: &[i16], from: u32, to: u32| {
            let mut out = Vec::new();
            let mut r = crate::stages::resample::StreamResampler::new(from, to).unwrap_or_else(|e| panic!("{e}"));
            let delay = r.delay_samples();
            let mut keep = |_: u64, chunk: &[i16]| {
                out.extend_from_slice(chunk);
                Ok::<(), crate::engine::stage::StageError>(())
            };
            r.push(audio, &mut keep).unwrap_or_else(|e| panic!("{e}"));
            r.flush(&mut keep).unwrap_or_else(|e| panic!("{e}"));
            out.drain(..delay);
            out
        };
        let noisy_8k = up(&noisy_16k, 16000, 8000);
        // White noise scores near the threshold at any rate (the energy gate, not the model,
        // keeps it from being speech), so its bar is lower.
        let cases = [
            ("speech 8k", 8000, speech_8k.clone(), 0.98),
            ("overlap 8k", 8000, overlap_8k, 0.98),
            ("noisy speech 8k", 8000, noisy_8k, 0.98),
            ("speech 24k", 24000, up(&speech_8k, 8000, 24000), 0.98),
            ("noisy speech 24k", 24000, up(&noisy_16k, 16000, 24000), 0.98),
            ("noisy speech 48k", 48000, up(&noisy_16k, 16000, 48000), 0.98),
            ("white noise 8k", 8000, signal::noise(8000, 3.0, 0.05, 9), 0.95),
        ];
        for (name, rate, audio, bar) in cases {
            let (n, agree, mean) = against_earshot(rate, &audio);
            let share = agree as f64 / n as f64;
            println!("{name}: {agree}/{n} windows agree ({:.1}%), mean |Δscore| {mean:.3}", share * 100.0);
            assert!(share >= bar && mean < 0.03, "{name}: {agree}/{n}, mean {mean}");
        }
    }
}
