//! `caly intent`: utterances in, one JSON object per line out; and `--fit`, which fits the
//! calibration on labelled data.

use std::io::{BufRead, Write};

use serde::Deserialize;

use super::{Classifier, INTENTS, Intent};

/// Classifies every line of `input` (one utterance each) and writes one JSON object per line,
/// flushed as it goes. Blank lines get an `unknown` answer, so lines stay in step.
pub fn run_lines(
    classifier: &Classifier,
    input: impl BufRead,
    mut output: impl Write,
) -> std::io::Result<usize> {
    let mut n = 0;
    for line in input.lines() {
        let line = line?;
        let p = classifier.classify(line.trim());
        serde_json::to_writer(&mut output, &p)?;
        output.write_all(b"\n")?;
        output.flush()?;
        n += 1;
    }
    Ok(n)
}

/// One labelled utterance (`intents/dev.jsonl`'s format).
#[derive(Debug, Deserialize)]
pub struct Labelled {
    /// The utterance.
    pub text: String,
    /// Its intent.
    pub intent: Intent,
}

/// Reads labelled utterances, one JSON object per line.
pub fn read_labelled(text: &str) -> Result<Vec<Labelled>, String> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| serde_json::from_str(l).map_err(|e| format!("line {}: {e}", i + 1)))
        .collect()
}

/// What a fit found.
#[derive(Debug, Clone, PartialEq)]
pub struct Fit {
    /// Softmax temperature.
    pub temperature: f32,
    /// Score of `unknown` before any cue.
    pub unknown_bias: f32,
    /// Below this, `unknown`.
    pub min_confidence: f32,
    /// Mean log-likelihood of the labels at this setting.
    pub log_likelihood: f64,
    /// Accuracy at this setting.
    pub accuracy: f64,
    /// Expected calibration error (10 bins).
    pub ece: f64,
}

/// Accuracy and expected calibration error (10 equal-width confidence bins) on `data`.
pub fn evaluate(classifier: &Classifier, data: &[Labelled]) -> (f64, f64) {
    let mut bins = [(0.0f64, 0.0f64, 0usize); 10];
    let mut right = 0usize;
    for d in data {
        let p = classifier.classify(&d.text);
        let ok = p.intent == d.intent;
        right += usize::from(ok);
        let b = ((p.confidence as f64 * 10.0) as usize).min(9);
        bins[b].0 += p.confidence as f64;
        bins[b].1 += f64::from(u8::from(ok));
        bins[b].2 += 1;
    }
    let n = data.len().max(1) as f64;
    let ece = bins
        .iter()
        .filter(|b| b.2 > 0)
        .map(|(conf, acc, _)| (conf - acc).abs() / n)
        .sum::<f64>();
    (right as f64 / n, ece)
}

/// Grid search of temperature and unknown bias for the best log-likelihood of the labels, then
/// of the `unknown` threshold for the best accuracy (ties: the lower threshold).
pub fn fit(classifier: &Classifier, data: &[Labelled]) -> Fit {
    let mut c = classifier.clone();
    let scores: Vec<([f32; INTENTS.len()], Intent)> = data
        .iter()
        .map(|d| (classifier.explain(&d.text).score, d.intent))
        .collect();
    let (_, _, min_conf) = classifier.calibration();
    let unknown = Intent::Unknown as usize;
    let mut best: Option<(f64, f32, f32)> = None;
    for ti in 1..=40 {
        let t = ti as f32 * 0.1;
        for bi in 0..=40 {
            let bias = bi as f32 * 0.1;
            c.set_calibration(t, bias, min_conf);
            let ll: f64 = scores
                .iter()
                .map(|(s, gold)| {
                    let mut s = *s;
                    s[unknown] += bias - classifier.calibration().1;
                    let p = c.probabilities(&s);
                    f64::from(p[*gold as usize].max(1e-6)).ln()
                })
                .sum::<f64>()
                / scores.len().max(1) as f64;
            if best.is_none_or(|(b, _, _)| ll > b) {
                best = Some((ll, t, bias));
            }
        }
    }
    let (ll, t, bias) = best.unwrap_or((0.0, 1.0, 1.0));
    let mut chosen = (0.0f32, -1.0f64);
    for mi in 0..=10 {
        let m = mi as f32 * 0.05;
        c.set_calibration(t, bias, m);
        let (acc, _) = evaluate(&c, data);
        if acc > chosen.1 + 1e-9 {
            chosen = (m, acc);
        }
    }
    c.set_calibration(t, bias, chosen.0);
    let (accuracy, ece) = evaluate(&c, data);
    Fit {
        temperature: t,
        unknown_bias: bias,
        min_confidence: chosen.0,
        log_likelihood: ll,
        accuracy,
        ece,
    }
}
