//! Deterministic signals (mono PCM16): the Realtime simulator's voice, the tone bot's tones,
//! `caly simulate`'s generated caller, and test inputs.

use std::f32::consts::PI;
use std::sync::{Arc, LazyLock, Mutex, PoisonError};

/// A sine at `hz`, `seconds` long, at `amplitude` (0–1 of full scale).
pub fn sine(rate: u32, hz: f32, seconds: f32, amplitude: f32) -> Vec<i16> {
    let n = (rate as f32 * seconds) as usize;
    (0..n)
        .map(|i| {
            let x = (2.0 * PI * hz * i as f32 / rate as f32).sin() * amplitude;
            (x * 32767.0) as i16
        })
        .collect()
}

/// `seconds` of digital silence.
pub fn silence(rate: u32, seconds: f32) -> Vec<i16> {
    vec![0; (rate as f32 * seconds) as usize]
}

/// White noise at `amplitude` from a fixed seed (a 64-bit LCG: same seed, same noise).
pub fn noise(rate: u32, seconds: f32, amplitude: f32, seed: u64) -> Vec<i16> {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
    let n = (rate as f32 * seconds) as usize;
    (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let u = ((state >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0;
            (u * amplitude * 32767.0) as i16
        })
        .collect()
}

/// A voiced, speech-like signal: a 120 Hz glottal buzz through three vowel formants,
/// with a syllable-rate (4 Hz) envelope. Not speech, but band-limited like it.
///
/// Both the buzz and the envelope repeat every 250 ms, so at rates divisible by 4 one period is
/// made once per process (about 40 sines a sample) and tiled: the load generator's simulated
/// callers and model speak this for every reply of every call.
pub fn vowels(rate: u32, seconds: f32) -> Vec<i16> {
    let n = (rate as f32 * seconds) as usize;
    if rate == 0 || !rate.is_multiple_of(4) {
        return vowel_samples(rate, 0..n);
    }
    let period = vowel_period(rate);
    period.iter().copied().cycle().take(n).collect()
}

/// Rates whose vowel period is kept; past this, a period is made for each call.
const MAX_VOWEL_PERIODS: usize = 8;

fn vowel_period(rate: u32) -> Arc<[i16]> {
    /// Each rate's period.
    type Periods = Vec<(u32, Arc<[i16]>)>;
    static PERIODS: LazyLock<Mutex<Periods>> = LazyLock::new(Mutex::default);
    let mut periods = PERIODS.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some((_, period)) = periods.iter().find(|(r, _)| *r == rate) {
        return Arc::clone(period);
    }
    let period: Arc<[i16]> = vowel_samples(rate, 0..rate as usize / 4).into();
    if periods.len() < MAX_VOWEL_PERIODS {
        periods.push((rate, Arc::clone(&period)));
    }
    period
}

/// Samples `range` of the vowel signal at `rate`.
fn vowel_samples(rate: u32, range: std::ops::Range<usize>) -> Vec<i16> {
    let nyquist = rate as f32 / 2.0;
    let formants = [(700.0, 1.0), (1220.0, 0.5), (2600.0, 0.25)];
    // Each harmonic's pitch and weight (its formant gain over its number).
    let harmonics: Vec<(f32, f32)> = (1..40)
        .map(|h| (120.0 * h as f32, h))
        .take_while(|(f, _)| *f < nyquist * 0.9)
        .map(|(f, h)| {
            let gain: f32 = formants
                .iter()
                .map(|(c, g)| g / (1.0 + ((f - c) / 150.0).powi(2)))
                .sum();
            (f, gain / h as f32)
        })
        .collect();
    range
        .map(|i| {
            let t = i as f32 / rate as f32;
            let x: f32 = harmonics
                .iter()
                .map(|(f, w)| w * (2.0 * PI * f * t).sin())
                .sum();
            let envelope = 0.55 + 0.45 * (2.0 * PI * 4.0 * t).sin();
            (x * envelope * 0.35 * 32767.0).clamp(-32767.0, 32767.0) as i16
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tiling the shared period gives the signal computed sample by sample, to a step.
    #[test]
    fn vowels_tiled_from_one_period_match_the_signal_itself() {
        for rate in [8000, 16000, 24000] {
            let n = rate as usize * 3 / 4 + 123;
            let tiled = vowels(rate, n as f32 / rate as f32);
            let direct = vowel_samples(rate, 0..tiled.len());
            assert_eq!(tiled.len(), direct.len());
            let worst = tiled
                .iter()
                .zip(&direct)
                .map(|(a, b)| (i32::from(*a) - i32::from(*b)).abs())
                .max();
            assert!(worst <= Some(2), "{rate} Hz: {worst:?}");
        }
    }
}
