//! Deterministic signals (mono PCM16): the Realtime simulator's voice, the tone bot's tones,
//! `caly simulate`'s generated caller, and test inputs.

use std::f32::consts::PI;

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
pub fn vowels(rate: u32, seconds: f32) -> Vec<i16> {
    let n = (rate as f32 * seconds) as usize;
    let nyquist = rate as f32 / 2.0;
    let formants = [(700.0, 1.0), (1220.0, 0.5), (2600.0, 0.25)];
    (0..n)
        .map(|i| {
            let t = i as f32 / rate as f32;
            let mut x = 0.0;
            for h in 1..40 {
                let f = 120.0 * h as f32;
                if f >= nyquist * 0.9 {
                    break;
                }
                let gain: f32 = formants
                    .iter()
                    .map(|(c, g)| g / (1.0 + ((f - c) / 150.0).powi(2)))
                    .sum();
                x += gain * (2.0 * PI * f * t).sin() / h as f32;
            }
            let envelope = 0.55 + 0.45 * (2.0 * PI * 4.0 * t).sin();
            (x * envelope * 0.35 * 32767.0).clamp(-32767.0, 32767.0) as i16
        })
        .collect()
}
