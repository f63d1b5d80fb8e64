//! Understanding the caller: Hindi, Hinglish and English transcripts → intent + entities.
//!
//! [`Classifier::classify`] takes one utterance as ASR writes it (Devanagari, romanized Hindi,
//! English, or all three at once, no punctuation, loose spelling) through:
//! 1. [`normalize`]: tokens in one comparable form whatever the script;
//! 2. [`lexicon`]: cue phrases matched, longest first, with negation scope;
//! 3. scores per intent → probabilities (softmax, fitted temperature) → the primary intent,
//!    `unknown` below `min_confidence`, ranked alternatives;
//! 4. [`numbers`] and [`entities`]: spoken and written numbers → order id, phone, pincode,
//!    amount.
//!
//! Everything an engineer tunes lives in `data/intent/*.toml`, compiled in by default and
//! replaceable at run time ([`Classifier::from_dir`]).

pub mod cli;
pub mod entities;
pub(crate) mod lexicon;
pub(crate) mod model;
pub(crate) mod normalize;
pub(crate) mod numbers;

use std::path::Path;
use std::sync::{Arc, LazyLock};

use serde::{Deserialize, Serialize};

use entities::EntityRules;

pub use crate::vocab::{Alternative, Entities, INTENTS, Intent};
use lexicon::{Lexicon, WordPat};
pub use model::TrainConfig;
use model::{Features, Model};
use normalize::{Token, TokenKind, tokenize};
use numbers::NumberWords;

/// What the caller meant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    /// The primary intent.
    pub intent: Intent,
    /// Probability that it is right, 0..1.
    pub confidence: f32,
    /// Order id, phone, pincode, amount.
    pub entities: Entities,
    /// The next most likely intents (probability ≥ 0.05), best first.
    pub alternatives: Vec<Alternative>,
}

/// The compiled intent classifier.
#[derive(Debug, Clone)]
pub struct Classifier {
    lexicon: Lexicon,
    numbers: NumberWords,
    entities: EntityRules,
    /// The learned half; `None`: the cue rules decide alone.
    model: Option<Arc<Model>>,
}

/// The data files compiled into the binary.
pub const LEXICON: &str = include_str!("../../data/intent/lexicon.toml");
/// Number words.
pub const NUMBERS: &str = include_str!("../../data/intent/numbers.toml");
/// Entity rules.
pub const ENTITIES: &str = include_str!("../../data/intent/entities.toml");
/// The trained weights (`caly intent train`).
pub const MODEL: &[u8] = include_bytes!("../../data/intent/model.bin");

static BUILTIN: LazyLock<Result<Arc<Classifier>, String>> = LazyLock::new(|| {
    let c = Classifier::parse(LEXICON, NUMBERS, ENTITIES)?;
    c.with_model(MODEL).map(Arc::new)
});

/// A cue found in an utterance.
#[derive(Debug, Clone, Copy)]
struct Hit {
    start: usize,
    end: usize,
    phrase: u32,
    negated: bool,
    dead: bool,
}

/// Scores before the softmax, and what went into them.
#[derive(Debug, Clone, Default)]
pub struct Scores {
    /// One per intent.
    pub score: [f32; INTENTS.len()],
    /// Cue phrases that counted, as written in the lexicon (for `--explain`).
    pub cues: Vec<(Intent, String, bool)>,
}

impl Classifier {
    /// The classifier built from the data files shipped in `data/intent/`.
    pub fn builtin() -> Result<Arc<Classifier>, String> {
        BUILTIN.clone()
    }

    /// Compiles the three data files.
    pub fn parse(lexicon: &str, numbers: &str, entities: &str) -> Result<Classifier, String> {
        let lexicon = Lexicon::parse(lexicon).map_err(|e| format!("lexicon.toml: {e}"))?;
        let numbers = NumberWords::parse(numbers).map_err(|e| format!("numbers.toml: {e}"))?;
        let entities = EntityRules::parse(entities, &lexicon.aliases)
            .map_err(|e| format!("entities.toml: {e}"))?;
        Ok(Classifier {
            lexicon,
            numbers,
            entities,
            model: None,
        })
    }

    /// The same rules with trained weights (`model.bin`'s bytes); empty bytes: rules alone.
    pub fn with_model(mut self, bytes: &[u8]) -> Result<Classifier, String> {
        self.model = if bytes.is_empty() {
            None
        } else {
            Some(Arc::new(
                Model::from_bytes(bytes).map_err(|e| format!("model.bin: {e}"))?,
            ))
        };
        Ok(self)
    }

    /// The rules alone, without the trained weights.
    pub fn rules_only(&self) -> Classifier {
        Classifier {
            model: None,
            ..self.clone()
        }
    }

    /// Whether trained weights take part.
    pub fn has_model(&self) -> bool {
        self.model.is_some()
    }

    /// Loads `lexicon.toml`, `numbers.toml` and `entities.toml` from a directory, and
    /// `model.bin` if it is there (without it the rules decide alone).
    pub fn from_dir(dir: &Path) -> Result<Classifier, String> {
        let c = Classifier::rules_from_dir(dir)?;
        match std::fs::read(dir.join("model.bin")) {
            Ok(bytes) => c.with_model(&bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(c),
            Err(e) => Err(format!("{}: {e}", dir.join("model.bin").display())),
        }
    }

    /// Loads the three rule files from a directory, without any weights (what training
    /// starts from).
    pub fn rules_from_dir(dir: &Path) -> Result<Classifier, String> {
        let read = |name: &str| {
            std::fs::read_to_string(dir.join(name))
                .map_err(|e| format!("{}: {e}", dir.join(name).display()))
        };
        Classifier::parse(
            &read("lexicon.toml")?,
            &read("numbers.toml")?,
            &read("entities.toml")?,
        )
    }

    /// The calibration in use: (temperature, unknown bias, min confidence).
    pub fn calibration(&self) -> (f32, f32, f32) {
        let s = &self.lexicon.scoring;
        (s.temperature, s.unknown_bias, s.min_confidence)
    }

    /// Replaces the calibration (what `caly intent --fit` searches over).
    pub fn set_calibration(&mut self, temperature: f32, unknown_bias: f32, min_confidence: f32) {
        let s = &mut self.lexicon.scoring;
        s.temperature = temperature;
        s.unknown_bias = unknown_bias;
        s.min_confidence = min_confidence;
    }

    fn tokens(&self, text: &str) -> Vec<Token> {
        tokenize(text)
            .into_iter()
            .map(|t| self.lexicon.alias(t))
            .collect()
    }

    /// Classifies one utterance.
    pub fn classify(&self, text: &str) -> Prediction {
        let tokens = self.tokens(text);
        let spans = numbers::find(&self.numbers, &tokens);
        let entities = self.entities.extract(&tokens, &spans);
        match &self.model {
            None => self.decide(&self.score_tokens(&tokens, false).score, entities),
            Some(model) => {
                let mut x = Features::default();
                self.model_input(
                    &tokens,
                    &spans,
                    model.bits,
                    model.uses_rules(),
                    model.cues,
                    &mut x,
                );
                ranked(&model.probabilities(&x), entities, model.min_affirm)
            }
        }
    }

    /// The model's inputs for one utterance, at `bits` hash bits, with the rules'
    /// probabilities and the lexicon's cues if asked for (what training sees).
    pub(crate) fn features(&self, text: &str, bits: u32, rules: bool, cues: bool) -> Features {
        let tokens = self.tokens(text);
        let spans = numbers::find(&self.numbers, &tokens);
        let mut x = Features::default();
        self.model_input(&tokens, &spans, bits, rules, cues, &mut x);
        x
    }

    /// One place for what the model reads, in classification and in training alike; the cues
    /// are found once for both the rules' probabilities and the cue features.
    fn model_input(
        &self,
        tokens: &[Token],
        spans: &[numbers::Span],
        bits: u32,
        rules: bool,
        cues: bool,
        out: &mut Features,
    ) {
        let hits = if rules || cues {
            self.cue_hits(tokens)
        } else {
            Vec::new()
        };
        let p = if rules {
            self.probabilities(&self.score_hits(&hits, false).score)
        } else {
            [0.0; INTENTS.len()]
        };
        let cues: Vec<model::Cue> = if cues {
            hits.iter()
                .filter(|h| !h.dead)
                .map(|h| model::Cue {
                    intent: self.lexicon.phrases[h.phrase as usize].intent as u8,
                    negated: h.negated,
                    phrase: h.phrase,
                })
                .collect()
        } else {
            Vec::new()
        };
        model::features(tokens, spans, &p, &cues, bits, out);
    }

    /// The raw scores of one utterance, with the cues that made them.
    pub fn explain(&self, text: &str) -> Scores {
        let tokens = self.tokens(text);
        self.score_tokens(&tokens, true)
    }

    /// Probabilities from scores, at the lexicon's temperature.
    pub fn probabilities(&self, score: &[f32; INTENTS.len()]) -> [f32; INTENTS.len()] {
        let t = self.lexicon.scoring.temperature.max(0.01);
        let max = score.iter().copied().fold(f32::MIN, f32::max);
        let mut p = [0f32; INTENTS.len()];
        let mut sum = 0.0;
        for (i, s) in score.iter().enumerate() {
            p[i] = ((s - max) / t).exp();
            sum += p[i];
        }
        for x in &mut p {
            *x /= sum;
        }
        p
    }

    fn decide(&self, score: &[f32; INTENTS.len()], entities: Entities) -> Prediction {
        let p = self.probabilities(score);
        let rank = &self.lexicon.rank;
        let mut order: Vec<usize> = (0..INTENTS.len()).collect();
        order.sort_by(|&a, &b| score[b].total_cmp(&score[a]).then(rank[a].cmp(&rank[b])));
        let best = order[0];
        let (intent, confidence) = if p[best] < self.lexicon.scoring.min_confidence {
            // Too unsure: say so. The chance that "unknown" is right here is what the top
            // label leaves.
            (Intent::Unknown, 1.0 - p[best])
        } else {
            (INTENTS[best], p[best])
        };
        let alternatives = order
            .iter()
            .filter(|&&i| INTENTS[i] != intent && p[i] >= 0.05)
            .take(3)
            .map(|&i| Alternative {
                intent: INTENTS[i],
                confidence: p[i],
            })
            .collect();
        Prediction {
            intent,
            confidence,
            entities,
            alternatives,
        }
    }

    /// The lexicon's cues found in an utterance, negated where a negation's scope covers them.
    fn cue_hits(&self, tokens: &[Token]) -> Vec<Hit> {
        let lx = &self.lexicon;
        let mut hits: Vec<Hit> = Vec::with_capacity(8);
        let mut candidates = Vec::with_capacity(16);
        let mut i = 0;
        while i < tokens.len() {
            lx.candidates(&tokens[i], &mut candidates);
            let mut best: Option<(usize, f32, u32)> = None;
            for &id in &candidates {
                let phrase = &lx.phrases[id as usize];
                if let Some(end) = match_at(&phrase.words, tokens, i) {
                    let better = match best {
                        None => true,
                        Some((e, w, _)) => end > e || (end == e && phrase.weight > w),
                    };
                    if better {
                        best = Some((end, phrase.weight, id));
                    }
                }
            }
            match best {
                Some((end, _, id)) => {
                    hits.push(Hit {
                        start: i,
                        end,
                        phrase: id,
                        negated: false,
                        dead: false,
                    });
                    i = end;
                }
                None => i += 1,
            }
        }
        self.negate(tokens, &mut hits);
        hits
    }

    fn score_tokens(&self, tokens: &[Token], explain: bool) -> Scores {
        self.score_hits(&self.cue_hits(tokens), explain)
    }

    /// The rules' scores from the cues found.
    fn score_hits(&self, hits: &[Hit], explain: bool) -> Scores {
        let lx = &self.lexicon;
        let mut out = Scores::default();
        let mut negated = 0.0;
        let mut generic: Vec<(Intent, f32)> = Vec::new();
        for h in hits.iter().filter(|h| !h.dead) {
            let phrase = &lx.phrases[h.phrase as usize];
            if h.negated {
                negated += phrase.weight;
            } else if phrase.generic {
                generic.push((phrase.intent, phrase.weight));
            } else {
                out.score[phrase.intent as usize] += phrase.weight;
            }
            if explain {
                out.cues
                    .push((phrase.intent, phrase.text.clone(), h.negated));
            }
        }
        // "Refund kab tak aayega": the question is about the refund.
        let topic = INTENTS
            .iter()
            .filter(|i| i.is_request() && out.score[**i as usize] >= lx.scoring.strong)
            .max_by(|a, b| {
                out.score[**a as usize]
                    .total_cmp(&out.score[**b as usize])
                    .then(lx.rank[**b as usize].cmp(&lx.rank[**a as usize]))
            })
            .copied();
        for (own, weight) in generic {
            out.score[topic.unwrap_or(own) as usize] += weight;
        }
        // One intent per utterance, the request: a hello, a thanks or a "haan" next to a clear
        // request counts for half, a product aside for three quarters.
        let top_request = INTENTS
            .iter()
            .filter(|i| i.is_request())
            .map(|i| out.score[*i as usize])
            .fold(0.0, f32::max);
        if top_request >= lx.scoring.strong {
            for i in INTENTS.iter().filter(|i| !i.is_request()) {
                out.score[*i as usize] *= if *i == Intent::Unknown { 0.75 } else { 0.5 };
            }
        }
        out.score[Intent::Unknown as usize] += lx.scoring.unknown_bias;
        // A refused action on its own is a refusal ("don't cancel it"); next to another
        // request it is only a redirection ("cancel mat karo, bas status batao").
        let any_request = INTENTS
            .iter()
            .any(|i| i.is_request() && out.score[*i as usize] > 0.0);
        if negated > 0.0 && !any_request {
            out.score[Intent::Deny as usize] += negated;
        }
        out
    }

    /// Marks action cues in a negation's scope, and uses up the negating words.
    fn negate(&self, tokens: &[Token], hits: &mut [Hit]) {
        let lx = &self.lexicon;
        for k in 0..hits.len() {
            let phrase = &lx.phrases[hits[k].phrase as usize];
            if phrase.context || !lx.negatable[phrase.intent as usize] {
                continue;
            }
            let mut negator = None;
            // After: "cancel mat karo", "return nahi karna".
            let mut j = hits[k].end;
            let mut skipped = 0;
            while let Some(t) = tokens.get(j) {
                if t.kind != TokenKind::Word {
                    break;
                }
                if lx.neg_after.contains(&t.norm) {
                    negator = Some(j);
                    break;
                }
                if !lx.neg_light.contains(&t.norm) || skipped == 3 {
                    break;
                }
                skipped += 1;
                j += 1;
            }
            // Before: "don't cancel", "no need to return".
            if negator.is_none() {
                let mut j = hits[k].start;
                let mut skipped = 0;
                while j > 0 {
                    let t = &tokens[j - 1];
                    if t.kind != TokenKind::Word {
                        break;
                    }
                    if lx.neg_before.contains(&t.norm) {
                        negator = Some(j - 1);
                        break;
                    }
                    if !lx.neg_before_light.contains(&t.norm) || skipped == 3 {
                        break;
                    }
                    skipped += 1;
                    j -= 1;
                }
            }
            if let Some(at) = negator {
                hits[k].negated = true;
                for h in hits.iter_mut() {
                    if h.start <= at && at < h.end {
                        h.dead = true;
                    }
                }
                hits[k].dead = false;
            }
        }
    }
}

/// The most probable intent (a top `affirm` below `min_affirm` gives way to the next), with
/// the others from probability 0.05 as alternatives.
fn ranked(p: &[f32; INTENTS.len()], entities: Entities, min_affirm: f32) -> Prediction {
    // An unsure yes gives way to the next label and stays an alternative.
    let order = model::ranking(p, min_affirm);
    let best = order[0];
    let alternatives = order[1..]
        .iter()
        .filter(|&&i| p[i] >= 0.05)
        .take(3)
        .map(|&i| Alternative {
            intent: INTENTS[i],
            confidence: p[i],
        })
        .collect();
    Prediction {
        intent: INTENTS[best],
        confidence: p[best],
        entities,
        alternatives,
    }
}

/// Where a phrase matched at `start` ends, if it does.
fn match_at(words: &[WordPat], tokens: &[Token], start: usize) -> Option<usize> {
    let mut i = start;
    for (k, w) in words.iter().enumerate() {
        if *w == WordPat::Any {
            // One to three words, the fewest that let the rest match.
            for skip in 1..=3 {
                if i + skip > tokens.len() {
                    return None;
                }
                if tokens[i..i + skip]
                    .iter()
                    .any(|t| t.kind != TokenKind::Word)
                {
                    return None;
                }
                if let Some(end) = match_at(&words[k + 1..], tokens, i + skip) {
                    return Some(end);
                }
            }
            return None;
        }
        if !w.matches(tokens.get(i)?) {
            return None;
        }
        i += 1;
    }
    Some(i)
}

#[cfg(test)]
mod tests;
