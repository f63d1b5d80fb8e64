//! The learned half of the classifier: a multinomial logistic regression over hashed features
//! of the normalised tokens and of the lexicon's cues.
//!
//! Why this and not a crate: the model is a weight table and a softmax. The features are the
//! normaliser's output (one spelling for every script), so the part worth owning is which
//! features to take; the arithmetic is twenty lines. A crate such as `linfa-logistic` would
//! bring `ndarray` and a solver for a problem plain SGD solves in well under a second.
//!
//! Features of one utterance (each present feature counts once; the vector is scaled to unit
//! length):
//! - every word's normal form and its consonant skeleton;
//! - character 3- and 4-grams of every word, with word boundaries (`^kaha`, `ha$`): spellings
//!   nobody listed still share most of their pieces;
//! - every pair of neighbouring words (`cancel_mat`, `nahi_aya`): negation scope and word order;
//! - a number, spoken or written, as one `<num>` word plus its length class, never its digits;
//! - every lexicon cue found (`cancel`, `nahi aaya`, ...), by phrase and by intent, each marked
//!   negated or not by the rules' negation scope ("cancel mat karo, bas status batao"): the
//!   rules know which words matter and what a negation covers, the data decides how much;
//! - optionally (`--with-rules`), the rules' probability for each intent as dense inputs. Off
//!   in the shipped model: they made it lean on the rules' mistakes (held-out accuracy fell).
//!
//! The weights live in a compact little-endian file (`data/intent/model.bin`) that
//! `caly intent train` writes and the binary embeds.

use super::INTENTS;
use super::normalize::{Token, TokenKind};
use super::numbers::Span;

/// Intents.
pub(crate) const CLASSES: usize = INTENTS.len();
/// Dense inputs: the rules' probability per intent.
pub(crate) const DENSE: usize = CLASSES;
const MAGIC: &[u8; 8] = b"CALYINT2";

/// A lexicon cue found in an utterance: its intent, whether a negation covers it, its phrase.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Cue {
    pub(crate) intent: u8,
    pub(crate) negated: bool,
    pub(crate) phrase: u32,
}

/// Sparse features of one utterance: (bucket, value), buckets unique.
#[derive(Debug, Default, Clone)]
pub(crate) struct Features {
    pub(crate) sparse: Vec<(u32, f32)>,
    pub(crate) dense: [f32; DENSE],
}

/// FNV-1a over a tag and some byte strings (a separator between them).
fn hash(tag: u8, parts: &[&[u8]]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    let mut eat = |b: u8| {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    };
    eat(tag);
    for p in parts {
        for &b in *p {
            eat(b);
        }
        eat(0xff);
    }
    h
}

/// The features of a tokenised utterance, into `out` (its buffers reused).
pub(crate) fn features(
    tokens: &[Token],
    spans: &[Span],
    rules: &[f32; CLASSES],
    cues: &[Cue],
    bits: u32,
    out: &mut Features,
) {
    out.sparse.clear();
    let mask = (1u32 << bits) - 1;
    let mut push = |h: u32| out.sparse.push((h & mask, 1.0));
    push(hash(b'B', &[]));
    let mut words: Vec<&[u8]> = Vec::with_capacity(tokens.len());
    let mut i = 0;
    while i < tokens.len() {
        if let Some(s) = spans.iter().find(|s| s.start == i && s.end > i) {
            let class: &[u8] = match s.digits.len() {
                0..=3 => b"short",
                4..=5 => b"id",
                6 => b"pin",
                7..=9 => b"long",
                10 => b"phone",
                _ => b"longer",
            };
            push(hash(b'N', &[class]));
            words.push(b"<num>");
            i = s.end.max(i + 1);
            continue;
        }
        let t = &tokens[i];
        match t.kind {
            TokenKind::Word => {
                let w = t.norm.as_bytes();
                push(hash(b'w', &[w]));
                if t.skel.len() >= 3 {
                    push(hash(b's', &[t.skel.as_bytes()]));
                }
                let mut padded = Vec::with_capacity(w.len() + 2);
                padded.push(b'^');
                padded.extend_from_slice(w);
                padded.push(b'$');
                for n in [3usize, 4] {
                    for g in padded.windows(n) {
                        push(hash(b'0' + n as u8, &[g]));
                    }
                }
                words.push(w);
            }
            TokenKind::Number => {
                push(hash(b'N', &[b"digits"]));
                words.push(b"<num>");
            }
            TokenKind::Boundary => {
                if t.norm == "?" {
                    push(hash(b'q', &[]));
                }
                words.push(b"|");
            }
            TokenKind::Symbol => words.push(b"<sym>"),
        }
        i += 1;
    }
    for pair in words.windows(2) {
        if pair[0] != b"|" && pair[1] != b"|" {
            push(hash(b'b', &[pair[0], pair[1]]));
        }
    }
    if let (Some(first), Some(last)) = (words.first(), words.last()) {
        push(hash(b'F', &[first]));
        push(hash(b'L', &[last]));
    }
    for c in cues {
        let neg = [u8::from(c.negated)];
        push(hash(b'c', &[&[c.intent], &neg]));
        push(hash(b'p', &[&c.phrase.to_le_bytes(), &neg]));
    }
    out.sparse.sort_unstable_by_key(|f| f.0);
    out.sparse.dedup_by_key(|f| f.0);
    let norm = 1.0 / (out.sparse.len() as f32).sqrt();
    for f in &mut out.sparse {
        f.1 = norm;
    }
    out.dense = *rules;
}

/// Trained weights.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Model {
    /// log2 of the number of hash buckets.
    pub(crate) bits: u32,
    /// `buckets × CLASSES`, row-major.
    pub(crate) sparse: Vec<f32>,
    /// `DENSE × CLASSES`.
    pub(crate) dense: Vec<f32>,
    pub(crate) bias: [f32; CLASSES],
    /// Softmax temperature, fitted on held-back batches.
    pub(crate) temperature: f32,
    /// Below this probability a top `affirm` is not trusted and the next label answers
    /// (a wrong yes can confirm a cancellation); chosen on held-back batches.
    pub(crate) min_affirm: f32,
    /// Whether the lexicon's cues (with their negation) are inputs.
    pub(crate) cues: bool,
}

impl Model {
    /// An untrained model.
    pub(crate) fn zeros(bits: u32) -> Model {
        Model {
            bits,
            sparse: vec![0.0; (1usize << bits) * CLASSES],
            dense: vec![0.0; DENSE * CLASSES],
            bias: [0.0; CLASSES],
            temperature: 1.0,
            min_affirm: 0.0,
            cues: false,
        }
    }

    /// Whether the rules' probabilities carry any weight (if not, they need not be computed).
    pub(crate) fn uses_rules(&self) -> bool {
        self.dense.iter().any(|w| *w != 0.0)
    }

    /// Raw scores (logits before the temperature).
    pub(crate) fn logits(&self, x: &Features) -> [f32; CLASSES] {
        let mut z = self.bias;
        for &(f, v) in &x.sparse {
            let row = &self.sparse[f as usize * CLASSES..(f as usize + 1) * CLASSES];
            for (zc, w) in z.iter_mut().zip(row) {
                *zc += w * v;
            }
        }
        for (d, &v) in x.dense.iter().enumerate() {
            if v != 0.0 {
                let row = &self.dense[d * CLASSES..(d + 1) * CLASSES];
                for (zc, w) in z.iter_mut().zip(row) {
                    *zc += w * v;
                }
            }
        }
        z
    }

    /// Probabilities at the fitted temperature.
    pub(crate) fn probabilities(&self, x: &Features) -> [f32; CLASSES] {
        softmax(&self.logits(x), self.temperature)
    }

    /// The file form: magic, bits, temperature, affirm floor, then every weight as f32,
    /// little-endian.
    /// Weights of buckets no training utterance touched are zero and are run-length coded.
    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 << 20);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.bits.to_le_bytes());
        out.extend_from_slice(&self.temperature.to_le_bytes());
        out.extend_from_slice(&self.min_affirm.to_le_bytes());
        out.extend_from_slice(&u32::from(self.cues).to_le_bytes());
        for w in self.bias.iter().chain(&self.dense) {
            out.extend_from_slice(&w.to_le_bytes());
        }
        // Rows: a u32 count of empty rows to skip, then one row, until the end.
        let rows = self.sparse.chunks(CLASSES);
        let mut skipped = 0u32;
        for row in rows {
            if row.iter().all(|w| *w == 0.0) {
                skipped += 1;
                continue;
            }
            out.extend_from_slice(&skipped.to_le_bytes());
            skipped = 0;
            for w in row {
                out.extend_from_slice(&w.to_le_bytes());
            }
        }
        out.extend_from_slice(&skipped.to_le_bytes());
        out
    }

    /// Reads [`Model::to_bytes`]' form back, refusing anything malformed.
    pub(crate) fn from_bytes(bytes: &[u8]) -> Result<Model, String> {
        let mut r = Reader { bytes, at: 0 };
        if r.take(MAGIC.len())? != MAGIC {
            return Err("not a Caly intent model (bad magic)".into());
        }
        let bits = r.u32()?;
        if !(8..=22).contains(&bits) {
            return Err(format!("hash bits {bits} out of range 8..=22"));
        }
        let mut m = Model::zeros(bits);
        m.temperature = r.f32()?;
        if !(m.temperature.is_finite() && m.temperature > 0.0) {
            return Err("temperature must be positive".into());
        }
        m.min_affirm = r.f32()?;
        if !(0.0..=1.0).contains(&m.min_affirm) {
            return Err("the affirm floor must be a probability".into());
        }
        m.cues = match r.u32()? {
            0 => false,
            1 => true,
            n => return Err(format!("unknown feature flags {n}")),
        };
        for b in &mut m.bias {
            *b = r.f32()?;
        }
        for d in &mut m.dense {
            *d = r.f32()?;
        }
        let rows = 1usize << bits;
        let mut row = 0usize;
        loop {
            row += r.u32()? as usize;
            if row == rows && r.at == bytes.len() {
                break;
            }
            if row >= rows {
                return Err("weight rows past the end of the table".into());
            }
            for c in 0..CLASSES {
                m.sparse[row * CLASSES + c] = r.f32()?;
            }
            row += 1;
        }
        if m.sparse
            .iter()
            .chain(&m.dense)
            .chain(&m.bias)
            .any(|w| !w.is_finite())
        {
            return Err("a weight is not a finite number".into());
        }
        Ok(m)
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        let end = self.at.checked_add(n).filter(|e| *e <= self.bytes.len());
        let end = end.ok_or("the model file is cut short")?;
        let s = &self.bytes[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u32(&mut self) -> Result<u32, String> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn f32(&mut self) -> Result<f32, String> {
        Ok(f32::from_bits(self.u32()?))
    }
}

/// The intents from most to least probable, except that a top `affirm` below `min_affirm`
/// goes behind the next one: an unsure yes is not a yes (it can confirm a cancellation).
pub(crate) fn ranking(p: &[f32; CLASSES], min_affirm: f32) -> [usize; CLASSES] {
    let mut order: [usize; CLASSES] = std::array::from_fn(|i| i);
    order.sort_by(|&a, &b| p[b].total_cmp(&p[a]));
    if INTENTS[order[0]] == super::Intent::Affirm && p[order[0]] < min_affirm {
        order.swap(0, 1);
    }
    order
}

/// Softmax of `z / t`.
pub(crate) fn softmax(z: &[f32; CLASSES], t: f32) -> [f32; CLASSES] {
    let t = t.max(0.01);
    let max = z.iter().copied().fold(f32::MIN, f32::max);
    let mut p = [0f32; CLASSES];
    let mut sum = 0.0;
    for (pc, zc) in p.iter_mut().zip(z) {
        *pc = ((zc - max) / t).exp();
        sum += *pc;
    }
    for pc in &mut p {
        *pc /= sum;
    }
    p
}

/// How training runs.
#[derive(Debug, Clone, Copy)]
pub struct TrainConfig {
    /// Hash buckets = 2^bits.
    pub bits: u32,
    /// Passes over the data.
    pub epochs: usize,
    /// Initial learning rate.
    pub rate: f32,
    /// L2 penalty per update.
    pub l2: f32,
    /// Shuffling seed.
    pub seed: u64,
    /// Whether the rules' probabilities are inputs. Off by default: with them the model leans
    /// on the rules' mistakes (held-out 92.6% against 95.3% without; `scripts/intent_variants.sh`).
    pub rules: bool,
    /// Whether the lexicon's cues, negated or not, are inputs. On by default: the model learns
    /// how far to trust each cue and each negation (left-out-batch accuracy 94.5% → 94.9%,
    /// held-out affirm precision 95.8% → 100% at the same accuracy).
    pub cues: bool,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            bits: 16,
            epochs: 40,
            rate: 0.5,
            l2: 1e-4,
            seed: 14,
            rules: false,
            cues: true,
        }
    }
}

/// SplitMix64: a deterministic shuffle needs no more.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// Fits the weights by stochastic gradient descent on the log-loss (same seed, same data:
/// same bytes). The temperature stays 1; [`fit_temperature`] sets it.
pub(crate) fn train(data: &[(Features, usize)], cfg: &TrainConfig) -> Model {
    let mut m = Model::zeros(cfg.bits);
    let mut order: Vec<usize> = (0..data.len()).collect();
    let mut rng = Rng(cfg.seed);
    let mut step = 0usize;
    for _ in 0..cfg.epochs {
        for i in (1..order.len()).rev() {
            let j = (rng.next() % (i as u64 + 1)) as usize;
            order.swap(i, j);
        }
        for &k in &order {
            let (x, y) = &data[k];
            let rate = cfg.rate / (1.0 + step as f32 * 1e-4);
            step += 1;
            let p = softmax(&m.logits(x), 1.0);
            let mut g = p;
            g[*y] -= 1.0;
            let shrink = 1.0 - rate * cfg.l2;
            for &(f, v) in &x.sparse {
                let row = &mut m.sparse[f as usize * CLASSES..(f as usize + 1) * CLASSES];
                for (w, gc) in row.iter_mut().zip(&g) {
                    *w = *w * shrink - rate * gc * v;
                }
            }
            for (d, &v) in x.dense.iter().enumerate() {
                let row = &mut m.dense[d * CLASSES..(d + 1) * CLASSES];
                for (w, gc) in row.iter_mut().zip(&g) {
                    *w = *w * shrink - rate * gc * v;
                }
            }
            for (b, gc) in m.bias.iter_mut().zip(&g) {
                *b -= rate * gc;
            }
        }
    }
    m
}

/// The temperature (0.2–5.0, steps of 0.05) with the best log-likelihood of the labels, given
/// the logits of utterances the weights were not trained on.
pub(crate) fn fit_temperature(logits: &[([f32; CLASSES], usize)]) -> f32 {
    let mut best = (f64::MIN, 1.0f32);
    for ti in 4..=100 {
        let t = ti as f32 * 0.05;
        let ll: f64 = logits
            .iter()
            .map(|(z, y)| f64::from(softmax(z, t)[*y].max(1e-7)).ln())
            .sum();
        if ll > best.0 {
            best = (ll, t);
        }
    }
    best.1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn x(buckets: &[u32]) -> Features {
        let v = 1.0 / (buckets.len() as f32).sqrt();
        Features {
            sparse: buckets.iter().map(|b| (*b, v)).collect(),
            dense: [0.0; DENSE],
        }
    }

    #[test]
    fn training_separates_what_the_features_separate_and_is_deterministic() {
        let data: Vec<(Features, usize)> = (0..60)
            .map(|i| (x(&[i % 3, 10 + i % 7]), (i % 3) as usize))
            .collect();
        let cfg = TrainConfig {
            bits: 8,
            epochs: 20,
            ..TrainConfig::default()
        };
        let m = train(&data, &cfg);
        for (f, y) in &data {
            let p = m.probabilities(f);
            let best = (0..CLASSES).max_by(|a, b| p[*a].total_cmp(&p[*b])).unwrap();
            assert_eq!(best, *y);
        }
        assert_eq!(m, train(&data, &cfg));
        let other = train(&data, &TrainConfig { seed: 7, ..cfg });
        assert_ne!(m.sparse, other.sparse, "the seed orders the updates");
    }

    #[test]
    fn the_file_form_round_trips_and_malformed_files_are_refused() {
        let mut m = Model::zeros(8);
        m.sparse[5 * CLASSES + 2] = 1.5;
        m.sparse[200 * CLASSES] = -0.25;
        m.dense[3] = 0.5;
        m.bias[11] = -1.0;
        m.temperature = 0.8;
        let bytes = m.to_bytes();
        assert_eq!(Model::from_bytes(&bytes).unwrap(), m);
        for cut in [0, 7, 12, bytes.len() - 1] {
            assert!(Model::from_bytes(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut bad = bytes.clone();
        bad[0] = b'X';
        assert!(Model::from_bytes(&bad).is_err());
        let mut extra = bytes.clone();
        extra.extend_from_slice(&[0, 0, 0, 0]);
        assert!(Model::from_bytes(&extra).is_err());
    }

    #[test]
    fn the_temperature_fit_cools_an_overconfident_model() {
        // Logits that are always sure, and right only half the time.
        let logits: Vec<([f32; CLASSES], usize)> = (0..100)
            .map(|i| {
                let mut z = [0.0; CLASSES];
                z[0] = 10.0;
                (z, if i % 2 == 0 { 0 } else { 1 })
            })
            .collect();
        assert!(fit_temperature(&logits) > 2.0);
    }
}
