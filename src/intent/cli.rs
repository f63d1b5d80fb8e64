//! `caly intent`: utterances in, one JSON object per line out; and `--fit`, which fits the
//! calibration on labelled data.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::model::{self, CLASSES, Features, Model, TrainConfig};
use super::{Classifier, Entities, INTENTS, Intent};

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
    /// `hi`, `hinglish` or `en` (`?` when not given).
    #[serde(default = "unknown_lang")]
    pub lang: String,
    /// The entities it holds.
    #[serde(default)]
    pub entities: Entities,
}

fn unknown_lang() -> String {
    "?".into()
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

/// A labelled JSONL file.
pub fn read_file(path: &Path) -> Result<Vec<Labelled>, String> {
    std::fs::read_to_string(path)
        .map_err(|e| e.to_string())
        .and_then(|t| read_labelled(&t))
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// The `.jsonl` files of a directory, sorted; none if it does not exist.
pub fn jsonl_in(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("{}: {e}", dir.display())),
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    files.sort();
    Ok(files)
}

/// What `caly intent train` trains on: `DATA/train.jsonl` and `DATA/corpus/*.jsonl`, each
/// file a batch, in name order. `DATA/heldout/` is never read here.
pub fn training_batches(data: &Path) -> Result<Vec<Batch>, String> {
    let mut files = vec![data.join("train.jsonl")];
    files.extend(jsonl_in(&data.join("corpus"))?);
    files
        .iter()
        .map(|f| {
            Ok(Batch {
                name: f.display().to_string(),
                rows: read_file(f)?,
            })
        })
        .collect()
}

/// One batch of training utterances (a file: batches are written apart, so a batch left out
/// is a fair stand-in for speech nobody wrote).
#[derive(Debug)]
pub struct Batch {
    /// Where it came from.
    pub name: String,
    /// Its utterances.
    pub rows: Vec<Labelled>,
}

/// What training produced, and how it did on batches it did not see.
#[derive(Debug)]
pub struct Trained {
    /// The weights, ready for [`Model::to_bytes`] via [`Trained::bytes`].
    model: Model,
    /// Out-of-batch accuracy: each batch scored by a model trained on the others.
    pub cross_accuracy: f64,
    /// The temperature fitted on those out-of-batch scores.
    pub temperature: f32,
    /// The affirm floor chosen on them, with the out-of-batch affirm precision and recall it
    /// gives.
    pub affirm: AffirmFloor,
    /// What every floor of the grid gives on them.
    pub affirm_grid: Vec<AffirmFloor>,
    /// Utterances trained on.
    pub n: usize,
}

impl Trained {
    /// The `model.bin` bytes.
    pub fn bytes(&self) -> Vec<u8> {
        self.model.to_bytes()
    }
}

/// Trains the weights on `batches` (rules from `rules`): each batch is left out once and
/// scored by a model trained on the rest, the temperature is fitted on those scores, and the
/// final model is trained on everything. Deterministic for one seed.
pub fn train(rules: &Classifier, batches: &[Batch], cfg: &TrainConfig) -> Trained {
    let rules = rules.rules_only();
    let data: Vec<Vec<(Features, usize)>> = batches
        .iter()
        .map(|b| {
            b.rows
                .iter()
                .map(|r| {
                    let x = rules.features(&r.text, cfg.bits, cfg.rules, cfg.cues);
                    (x, r.intent as usize)
                })
                .collect()
        })
        .collect();
    let mut held: Vec<([f32; CLASSES], usize)> = Vec::new();
    let mut right = 0usize;
    if data.len() > 1 {
        for out in 0..data.len() {
            let rest: Vec<(Features, usize)> = data
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != out)
                .flat_map(|(_, d)| d.iter().cloned())
                .collect();
            let m = model::train(&rest, cfg);
            for (x, y) in &data[out] {
                let z = m.logits(x);
                let best = (0..CLASSES).max_by(|a, b| z[*a].total_cmp(&z[*b]));
                right += usize::from(best == Some(*y));
                held.push((z, *y));
            }
        }
    }
    let all: Vec<(Features, usize)> = data.into_iter().flatten().collect();
    let mut m = model::train(&all, cfg);
    m.cues = cfg.cues;
    m.temperature = if held.is_empty() {
        1.0
    } else {
        model::fit_temperature(&held)
    };
    let affirm_grid = affirm_floors(&held, m.temperature);
    let affirm = choose_affirm_floor(&affirm_grid);
    m.min_affirm = affirm.floor;
    Trained {
        affirm,
        affirm_grid,
        temperature: m.temperature,
        model: m,
        cross_accuracy: right as f64 / held.len().max(1) as f64,
        n: all.len(),
    }
}

/// Out-of-batch affirm precision the floor must reach: a yes that is not one can confirm a
/// cancellation, so affirm is the label that must be right when it is said.
pub const AFFIRM_PRECISION: f64 = 0.98;

/// The affirm floor, and what it gives on the batches left out.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AffirmFloor {
    /// Below this probability a top affirm gives way to the next label.
    pub floor: f32,
    /// Out-of-batch affirm precision at the floor.
    pub precision: f64,
    /// Out-of-batch affirm recall at the floor.
    pub recall: f64,
}

/// Affirm precision and recall on out-of-batch scores for every floor from 0 to 0.95 in steps
/// of 0.05.
pub fn affirm_floors(held: &[([f32; CLASSES], usize)], temperature: f32) -> Vec<AffirmFloor> {
    let yes = Intent::Affirm as usize;
    let probs: Vec<([f32; CLASSES], usize)> = held
        .iter()
        .map(|(z, y)| (model::softmax(z, temperature), *y))
        .collect();
    let gold = probs.iter().filter(|(_, y)| *y == yes).count();
    let at = |floor: f32| {
        let (mut said, mut right) = (0usize, 0usize);
        for (p, y) in &probs {
            // The same ranking the classifier answers with.
            if model::ranking(p, floor)[0] == yes {
                said += 1;
                right += usize::from(*y == yes);
            }
        }
        AffirmFloor {
            floor,
            precision: if said == 0 {
                1.0
            } else {
                right as f64 / said as f64
            },
            recall: right as f64 / gold.max(1) as f64,
        }
    };
    (0..=19).map(|k| at(k as f32 * 0.05)).collect()
}

/// The lowest floor of `grid` that reaches [`AFFIRM_PRECISION`]; if none does, the most
/// precise.
pub fn choose_affirm_floor(grid: &[AffirmFloor]) -> AffirmFloor {
    grid.iter()
        .find(|f| f.precision >= AFFIRM_PRECISION)
        .or_else(|| {
            grid.iter()
                .max_by(|a, b| a.precision.total_cmp(&b.precision))
        })
        .copied()
        .unwrap_or(AffirmFloor {
            floor: 0.0,
            precision: 1.0,
            recall: 0.0,
        })
}

/// Scores of one labelled set: what `../shared/intents/score_intents.py` prints, plus the
/// expected calibration error.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// Utterances.
    pub n: usize,
    /// Share with the right intent.
    pub accuracy: f64,
    /// Mean F1 over the intents present in the data.
    pub macro_f1: f64,
    /// Per intent: (precision, recall, f1, support, predicted).
    pub per_intent: Vec<(Intent, f64, f64, f64, usize, usize)>,
    /// Per language tag: (tag, accuracy, n).
    pub per_lang: Vec<(String, f64, usize)>,
    /// Per entity type: (type, exact matches, gold, missed, wrong value, spurious).
    pub entities: Vec<(&'static str, usize, usize, usize, usize, usize)>,
    /// (gold, predicted, count), most frequent first.
    pub confusions: Vec<(Intent, Intent, usize)>,
    /// Mean confidence when right and when wrong.
    pub confidence: (f64, f64),
    /// Expected calibration error, 10 equal-width bins.
    pub ece: f64,
}

impl Report {
    /// Accuracy of one language tag, if the data has it.
    pub fn lang(&self, tag: &str) -> Option<f64> {
        self.per_lang.iter().find(|l| l.0 == tag).map(|l| l.1)
    }

    /// Exact-match accuracy of one entity type, if the data has it.
    pub fn entity(&self, kind: &str) -> Option<f64> {
        self.entities
            .iter()
            .find(|e| e.0 == kind && e.2 > 0)
            .map(|e| e.1 as f64 / e.2 as f64)
    }

    /// (precision, recall) of one intent.
    pub fn intent(&self, intent: Intent) -> (f64, f64) {
        self.per_intent
            .iter()
            .find(|r| r.0 == intent)
            .map_or((0.0, 0.0), |r| (r.1, r.2))
    }
}

fn entity_values(e: &Entities) -> [(&'static str, Option<&str>); 4] {
    [
        ("order_id", e.order_id.as_deref()),
        ("phone", e.phone.as_deref()),
        ("pincode", e.pincode.as_deref()),
        ("amount", e.amount.as_deref()),
    ]
}

/// Classifies every utterance of `data` and scores the answers.
pub fn report(classifier: &Classifier, data: &[Labelled]) -> Report {
    let preds: Vec<_> = data.iter().map(|d| classifier.classify(&d.text)).collect();
    let n = data.len().max(1);
    let ok: Vec<bool> = data
        .iter()
        .zip(&preds)
        .map(|(d, p)| d.intent == p.intent)
        .collect();
    let accuracy = ok.iter().filter(|o| **o).count() as f64 / n as f64;
    let mut per_intent = Vec::new();
    for lab in INTENTS {
        let tp = data
            .iter()
            .zip(&preds)
            .filter(|(d, p)| d.intent == lab && p.intent == lab)
            .count();
        let support = data.iter().filter(|d| d.intent == lab).count();
        let predicted = preds.iter().filter(|p| p.intent == lab).count();
        if support == 0 && predicted == 0 {
            continue;
        }
        let pr = if predicted > 0 {
            tp as f64 / predicted as f64
        } else {
            0.0
        };
        let rc = if support > 0 {
            tp as f64 / support as f64
        } else {
            0.0
        };
        let f1 = if pr + rc > 0.0 {
            2.0 * pr * rc / (pr + rc)
        } else {
            0.0
        };
        per_intent.push((lab, pr, rc, f1, support, predicted));
    }
    let present: Vec<_> = per_intent.iter().filter(|r| r.4 > 0).collect();
    let macro_f1 = present.iter().map(|r| r.3).sum::<f64>() / present.len().max(1) as f64;
    let mut langs: Vec<String> = ["hi", "en", "hinglish"]
        .iter()
        .map(|s| s.to_string())
        .filter(|l| data.iter().any(|d| &d.lang == l))
        .collect();
    for d in data {
        if !langs.contains(&d.lang) {
            langs.push(d.lang.clone());
        }
    }
    let per_lang = langs
        .into_iter()
        .map(|l| {
            let idx: Vec<usize> = (0..data.len()).filter(|i| data[*i].lang == l).collect();
            let right = idx.iter().filter(|i| ok[**i]).count();
            (l, right as f64 / idx.len().max(1) as f64, idx.len())
        })
        .collect();
    let mut entities = Vec::new();
    for k in 0..4 {
        let (mut exact, mut gold, mut missed, mut wrong, mut spurious) = (0, 0, 0, 0, 0);
        for (d, p) in data.iter().zip(&preds) {
            let (name, g) = entity_values(&d.entities)[k];
            let (_, v) = entity_values(&p.entities)[k];
            let _ = name;
            match (g, v) {
                (Some(g), Some(v)) if g == v => {
                    gold += 1;
                    exact += 1;
                }
                (Some(_), Some(_)) => {
                    gold += 1;
                    wrong += 1;
                }
                (Some(_), None) => {
                    gold += 1;
                    missed += 1;
                }
                (None, Some(_)) => spurious += 1,
                (None, None) => {}
            }
        }
        let name = entity_values(&Entities::default())[k].0;
        entities.push((name, exact, gold, missed, wrong, spurious));
    }
    let mut pairs: std::collections::BTreeMap<(usize, usize), usize> = Default::default();
    for (d, p) in data.iter().zip(&preds) {
        if d.intent != p.intent {
            *pairs
                .entry((d.intent as usize, p.intent as usize))
                .or_default() += 1;
        }
    }
    let mut confusions: Vec<(Intent, Intent, usize)> = pairs
        .into_iter()
        .map(|((g, p), c)| (INTENTS[g], INTENTS[p], c))
        .collect();
    confusions.sort_by_key(|c| std::cmp::Reverse(c.2));
    let mean = |want: bool| {
        let c: Vec<f64> = preds
            .iter()
            .zip(&ok)
            .filter(|(_, o)| **o == want)
            .map(|(p, _)| f64::from(p.confidence))
            .collect();
        c.iter().sum::<f64>() / c.len().max(1) as f64
    };
    let mut bins = [(0.0f64, 0.0f64); 10];
    for (p, o) in preds.iter().zip(&ok) {
        let b = ((f64::from(p.confidence) * 10.0) as usize).min(9);
        bins[b].0 += f64::from(p.confidence);
        bins[b].1 += f64::from(u8::from(*o));
    }
    let ece = bins.iter().map(|(c, a)| (c - a).abs()).sum::<f64>() / n as f64;
    Report {
        n: data.len(),
        accuracy,
        macro_f1,
        per_intent,
        per_lang,
        entities,
        confusions,
        confidence: (mean(true), mean(false)),
        ece,
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let right = (self.accuracy * self.n as f64).round();
        writeln!(f, "utterances: {}", self.n)?;
        writeln!(
            f,
            "intent accuracy : {:.4}  ({right}/{})",
            self.accuracy, self.n
        )?;
        writeln!(f, "macro-F1        : {:.4}", self.macro_f1)?;
        writeln!(f, "calibration     : ECE {:.4} (10 bins)", self.ece)?;
        writeln!(f)?;
        writeln!(
            f,
            "{:22} {:>6} {:>6} {:>6} {:>7} {:>9}",
            "intent", "prec", "recall", "f1", "support", "predicted"
        )?;
        for (lab, p, r, f1, s, pr) in &self.per_intent {
            writeln!(f, "{:22} {p:6.3} {r:6.3} {f1:6.3} {s:7} {pr:9}", lab.name())?;
        }
        writeln!(f, "\naccuracy per language:")?;
        for (l, a, n) in &self.per_lang {
            writeln!(f, "  {l:9} {a:.4}  (n={n})")?;
        }
        writeln!(
            f,
            "\nentities (exact string match; accuracy over utterances whose gold has the type):"
        )?;
        writeln!(
            f,
            "  {:9} {:>8} {:>5} {:>5} {:>6} {:>5} {:>8}",
            "type", "accuracy", "exact", "gold", "missed", "wrong", "spurious"
        )?;
        for (k, e, g, m, w, s) in &self.entities {
            let a = if *g > 0 {
                format!("{:.4}", *e as f64 / *g as f64)
            } else {
                "n/a".into()
            };
            writeln!(f, "  {k:9} {a:>8} {e:5} {g:5} {m:6} {w:5} {s:8}")?;
        }
        let errors: usize = self.confusions.iter().map(|c| c.2).sum();
        writeln!(
            f,
            "\ntop confusions (gold -> predicted), {errors} errors in all:"
        )?;
        if self.confusions.is_empty() {
            writeln!(f, "  none")?;
        }
        for (g, p, c) in self.confusions.iter().take(15) {
            writeln!(f, "  {c:4}  {} -> {}", g.name(), p.name())?;
        }
        writeln!(
            f,
            "\nconfidence: mean when correct {:.3}, when wrong {:.3}",
            self.confidence.0, self.confidence.1
        )
    }
}
