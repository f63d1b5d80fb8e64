//! The intent lexicon (`data/intent/lexicon.toml`), compiled into phrase matchers.

use std::collections::HashMap;

use serde::Deserialize;

use super::normalize::{Token, TokenKind, norm_word, tokenize};
use super::{INTENTS, Intent};

/// How strongly a cue speaks for its intent.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Scoring {
    /// Weight of `strong` cues.
    pub strong: f32,
    /// Weight of `medium` cues.
    pub medium: f32,
    /// Weight of `weak` and `context` cues.
    pub weak: f32,
    /// Score of `unknown` before any cue.
    pub unknown_bias: f32,
    /// Softmax temperature.
    pub temperature: f32,
    /// Below this, the answer is `unknown`.
    pub min_confidence: f32,
    /// Tie order.
    pub priority: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Negation {
    after: Vec<String>,
    light: Vec<String>,
    before: Vec<String>,
    before_light: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Cues {
    #[serde(default)]
    negatable: bool,
    #[serde(default)]
    strong: Vec<String>,
    #[serde(default)]
    medium: Vec<String>,
    #[serde(default)]
    weak: Vec<String>,
    #[serde(default)]
    context: Vec<String>,
    #[serde(default)]
    generic: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    scoring: Scoring,
    aliases: HashMap<String, Vec<String>>,
    negation: Negation,
    intents: HashMap<String, Cues>,
}

/// One word of a phrase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum WordPat {
    /// `=word`: this normal form only.
    Exact(String),
    /// A word: normal form, skeleton (when distinctive) or one typo (when ≥ 6 letters).
    Word {
        /// Normal form.
        norm: String,
        /// Consonant skeleton.
        skel: String,
    },
    /// `word*`: any word starting with this normal form.
    Prefix(String),
    /// `_`: one to three words.
    Any,
}

impl WordPat {
    /// Whether `t` is this word.
    pub(crate) fn matches(&self, t: &Token) -> bool {
        if t.kind != TokenKind::Word {
            return false;
        }
        match self {
            WordPat::Exact(n) => t.norm == *n,
            WordPat::Word { norm, skel } => {
                t.norm == *norm
                    || (t.skel_trusted() && t.skel == *skel)
                    || (norm.len() >= 6 && t.norm.len() >= 5 && within_one_edit(&t.norm, norm))
            }
            WordPat::Prefix(p) => t.norm.starts_with(p.as_str()),
            WordPat::Any => true,
        }
    }
}

/// A cue phrase.
#[derive(Debug, Clone)]
pub(crate) struct Phrase {
    /// Its words.
    pub words: Vec<WordPat>,
    /// The intent it speaks for.
    pub intent: Intent,
    /// How strongly.
    pub weight: f32,
    /// Background only (never negated).
    pub context: bool,
    /// A question about any subject ("kab aayega", "status"): it counts for the request the
    /// utterance is about, and for its own intent only when there is none.
    pub generic: bool,
    /// As written in the lexicon.
    pub text: String,
}

/// The compiled lexicon.
#[derive(Debug, Clone)]
pub(crate) struct Lexicon {
    /// Weights and calibration.
    pub scoring: Scoring,
    /// Tie order: rank per intent (lower wins).
    pub rank: [u8; INTENTS.len()],
    /// Negatable intents.
    pub negatable: [bool; INTENTS.len()],
    /// All phrases.
    pub phrases: Vec<Phrase>,
    /// Phrases by the normal form of their first word.
    pub by_norm: HashMap<String, Vec<u32>>,
    /// Phrases by the skeleton of their first word (≥ 3 letters).
    pub by_skel: HashMap<String, Vec<u32>>,
    /// Phrases whose first word is a prefix, by that prefix.
    pub by_prefix: HashMap<String, Vec<u32>>,
    /// Phrases by one-letter deletions of their first word (≥ 6 letters), for typos.
    pub by_deletion: HashMap<String, Vec<u32>>,
    /// Spelling variant → canonical normal form.
    pub aliases: HashMap<String, String>,
    /// Every word the lexicon knows: a known word is never read as a typo of another.
    pub known: std::collections::HashSet<String>,
    /// Negating words after a cue.
    pub neg_after: Vec<String>,
    /// Words allowed between a cue and its negation.
    pub neg_light: Vec<String>,
    /// Negating words before a cue.
    pub neg_before: Vec<String>,
    /// Words allowed between a negation and its cue.
    pub neg_before_light: Vec<String>,
}

fn deletions(word: &str) -> impl Iterator<Item = String> + '_ {
    (0..word.len()).map(move |i| {
        let mut s = String::with_capacity(word.len() - 1);
        s.push_str(&word[..i]);
        s.push_str(&word[i + 1..]);
        s
    })
}

/// Damerau–Levenshtein distance ≤ 1 (ASCII normal forms).
pub(crate) fn within_one_edit(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a == b {
        return true;
    }
    let (la, lb) = (a.len(), b.len());
    if la.abs_diff(lb) > 1 {
        return false;
    }
    let p = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    if la == lb {
        // substitution, or transposition of p and p+1
        a[p + 1..] == b[p + 1..]
            || (p + 1 < la && a[p] == b[p + 1] && a[p + 1] == b[p] && a[p + 2..] == b[p + 2..])
    } else if la > lb {
        a[p + 1..] == b[p..]
    } else {
        a[p..] == b[p + 1..]
    }
}

impl Lexicon {
    /// Reads and compiles a lexicon file.
    pub(crate) fn parse(text: &str) -> Result<Lexicon, String> {
        let file: File = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut aliases = HashMap::new();
        for (canonical, variants) in &file.aliases {
            let c = norm_word(canonical);
            for v in variants {
                let n = norm_word(v);
                if n != c {
                    aliases.insert(n, c.clone());
                }
            }
        }
        let mut rank = [u8::MAX; INTENTS.len()];
        for (i, name) in file.scoring.priority.iter().enumerate() {
            let intent = Intent::from_name(name)
                .ok_or_else(|| format!("priority: `{name}` is not an intent"))?;
            rank[intent as usize] = i as u8;
        }
        let mut lexicon = Lexicon {
            rank,
            negatable: [false; INTENTS.len()],
            phrases: Vec::new(),
            by_norm: HashMap::new(),
            by_skel: HashMap::new(),
            by_prefix: HashMap::new(),
            by_deletion: HashMap::new(),
            neg_after: file
                .negation
                .after
                .iter()
                .map(|w| canon(&aliases, w))
                .collect(),
            neg_light: file
                .negation
                .light
                .iter()
                .map(|w| canon(&aliases, w))
                .collect(),
            neg_before: file
                .negation
                .before
                .iter()
                .map(|w| canon(&aliases, w))
                .collect(),
            neg_before_light: file
                .negation
                .before_light
                .iter()
                .map(|w| canon(&aliases, w))
                .collect(),
            known: aliases.values().cloned().collect(),
            aliases,
            scoring: file.scoring,
        };
        let mut names: Vec<&String> = file.intents.keys().collect();
        names.sort();
        for name in names {
            let cues = &file.intents[name];
            let intent =
                Intent::from_name(name).ok_or_else(|| format!("`{name}` is not an intent"))?;
            lexicon.negatable[intent as usize] = cues.negatable;
            let s = &lexicon.scoring;
            let groups = [
                (&cues.strong, s.strong, false, false),
                (&cues.medium, s.medium, false, false),
                (&cues.weak, s.weak, false, false),
                (&cues.context, s.weak, true, false),
                (&cues.generic, s.strong, false, true),
            ];
            let mut add = Vec::new();
            for (list, weight, context, generic) in groups {
                for text in list {
                    let words = lexicon.compile_phrase(text)?;
                    add.push(Phrase {
                        words,
                        intent,
                        weight,
                        context,
                        generic,
                        text: text.clone(),
                    });
                }
            }
            for p in add {
                lexicon.index(p);
            }
        }
        Ok(lexicon)
    }

    fn compile_phrase(&self, text: &str) -> Result<Vec<WordPat>, String> {
        let mut words = Vec::new();
        for w in text.split_whitespace() {
            let pat = if w == "_" {
                WordPat::Any
            } else if let Some(exact) = w.strip_prefix('=') {
                WordPat::Exact(canon(&self.aliases, exact))
            } else if let Some(prefix) = w.strip_suffix('*') {
                WordPat::Prefix(norm_word(prefix))
            } else {
                // A lexicon word may be written in Devanagari: tokenize it like speech.
                let toks = tokenize(w);
                let Some(t) = toks.into_iter().find(|t| t.kind == TokenKind::Word) else {
                    return Err(format!("`{text}`: `{w}` is not a word"));
                };
                let t = self.alias(t);
                WordPat::Word {
                    norm: t.norm,
                    skel: t.skel,
                }
            };
            words.push(pat);
        }
        match words.first() {
            None => Err(format!("`{text}` is empty")),
            Some(WordPat::Any) => Err(format!("`{text}` cannot start with `_`")),
            Some(_) => Ok(words),
        }
    }

    fn index(&mut self, phrase: Phrase) {
        let id = self.phrases.len() as u32;
        for w in &phrase.words {
            if let WordPat::Word { norm, .. } | WordPat::Exact(norm) = w {
                self.known.insert(norm.clone());
            }
        }
        match &phrase.words[0] {
            WordPat::Exact(n) => self.by_norm.entry(n.clone()).or_default().push(id),
            WordPat::Word { norm, skel } => {
                self.by_norm.entry(norm.clone()).or_default().push(id);
                if skel.len() >= 3 {
                    self.by_skel.entry(skel.clone()).or_default().push(id);
                }
                if norm.len() >= 6 {
                    for d in deletions(norm) {
                        let v = self.by_deletion.entry(d).or_default();
                        if !v.contains(&id) {
                            v.push(id);
                        }
                    }
                    self.by_deletion.entry(norm.clone()).or_default().push(id);
                }
            }
            WordPat::Prefix(p) => self.by_prefix.entry(p.clone()).or_default().push(id),
            WordPat::Any => {}
        }
        self.phrases.push(phrase);
    }

    /// Applies the alias table to a token (its normal form and skeleton).
    pub(crate) fn alias(&self, mut t: Token) -> Token {
        if t.kind == TokenKind::Word
            && let Some(c) = self.aliases.get(&t.norm)
        {
            t.norm = c.clone();
            t.skel = tokenize(c)
                .into_iter()
                .next()
                .map(|x| x.skel)
                .unwrap_or_default();
        }
        t
    }

    /// Candidate phrases starting at `t`.
    pub(crate) fn candidates(&self, t: &Token, out: &mut Vec<u32>) {
        out.clear();
        if t.kind != TokenKind::Word {
            return;
        }
        if let Some(v) = self.by_norm.get(&t.norm) {
            out.extend_from_slice(v);
        }
        if t.skel_trusted()
            && let Some(v) = self.by_skel.get(&t.skel)
        {
            out.extend_from_slice(v);
        }
        for end in 2..=t.norm.len() {
            if let Some(v) = self.by_prefix.get(&t.norm[..end]) {
                out.extend_from_slice(v);
            }
        }
        if out.is_empty() && t.norm.len() >= 5 && !self.known.contains(&t.norm) {
            if let Some(v) = self.by_deletion.get(&t.norm) {
                out.extend_from_slice(v);
            }
            for d in deletions(&t.norm) {
                if let Some(v) = self.by_deletion.get(&d) {
                    out.extend_from_slice(v);
                }
            }
        }
        out.sort_unstable();
        out.dedup();
    }
}

fn canon(aliases: &HashMap<String, String>, w: &str) -> String {
    let n = norm_word(w);
    aliases.get(&n).cloned().unwrap_or(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_edit_covers_typos_and_nothing_more() {
        assert!(within_one_edit("cancle", "cancel"));
        assert!(within_one_edit("rifund", "refund"));
        assert!(within_one_edit("refnd", "refund"));
        assert!(within_one_edit("reffund", "refund"));
        assert!(!within_one_edit("return", "refund"));
        assert!(!within_one_edit("cnacle", "cancel"));
    }

    #[test]
    fn the_shipped_lexicon_compiles_and_a_bad_one_is_refused() {
        let lexicon = Lexicon::parse(include_str!("../../data/intent/lexicon.toml")).unwrap();
        assert!(lexicon.phrases.len() > 300);
        let bad = include_str!("../../data/intent/lexicon.toml")
            .replace("[intents.deny]", "[intents.denial]");
        assert!(Lexicon::parse(&bad).unwrap_err().contains("denial"));
        let bad = include_str!("../../data/intent/lexicon.toml")
            .replace("[scoring]", "[scoring]\nsharpness = 2");
        assert!(Lexicon::parse(&bad).unwrap_err().contains("sharpness"));
    }
}
