//! Entities: which numbers in an utterance are an order id, a phone, a pincode or an amount.
//!
//! Every number (digits or words, see [`numbers`](super::numbers)) is judged by its shape and
//! the words around it, in this order: a **decoy** (a date, time, duration, size, house number
//! or count: nothing), an **amount** (rupees, or said as a quantity: "बारह सौ"), a **phone**
//! (10 digits from 6–9 after dropping +91, 91 or 0), a **pincode** (6 digits, with pin context
//! or in an utterance about addresses), an **order id** (order context, or 3+ digits with no
//! other reading). The rules' words live in `data/intent/entities.toml`.

use std::collections::HashMap;

use serde::Deserialize;

use super::normalize::{Token, TokenKind, norm_word, tokenize};
use super::numbers::Span;
pub use crate::vocab::Entities;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Around {
    #[serde(default)]
    before: Vec<String>,
    #[serde(default)]
    after: Vec<String>,
    #[serde(default)]
    soft_after: Vec<String>,
    #[serde(default)]
    address_words: Vec<String>,
    #[serde(default)]
    mentioned: Vec<String>,
    #[serde(default)]
    min_digits: Option<usize>,
    #[serde(default)]
    max_digits: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    decoy: Around,
    amount: Around,
    phone: Around,
    pincode: Around,
    order_id: Around,
}

/// A context word: normal form and skeleton (trusted when ≥ 3 letters).
#[derive(Debug, Clone)]
struct CtxWord {
    norm: String,
    skel: String,
}

type Phrase = Vec<CtxWord>;

#[derive(Debug, Clone, Default)]
struct Context {
    before: Vec<Phrase>,
    after: Vec<Phrase>,
    soft_after: Vec<Phrase>,
}

/// The compiled entity rules.
#[derive(Debug, Clone, Default)]
pub struct EntityRules {
    decoy: Context,
    amount: Context,
    phone: Context,
    pincode: Context,
    order: Context,
    address_words: Vec<Phrase>,
    order_words: Vec<Phrase>,
    min_order_digits: usize,
    max_order_digits: usize,
}

fn phrase(text: &str, aliases: &HashMap<String, String>) -> Phrase {
    text.split_whitespace()
        .map(|w| {
            if !w.chars().any(char::is_alphanumeric) {
                return CtxWord {
                    norm: w.to_string(),
                    skel: String::new(),
                };
            }
            let t = tokenize(w).into_iter().find(|t| t.kind == TokenKind::Word);
            let norm = t.as_ref().map_or_else(|| norm_word(w), |t| t.norm.clone());
            match aliases.get(&norm) {
                Some(c) => CtxWord {
                    skel: tokenize(c).pop().map(|t| t.skel).unwrap_or_default(),
                    norm: c.clone(),
                },
                None => CtxWord {
                    skel: t.map(|t| t.skel).unwrap_or_default(),
                    norm,
                },
            }
        })
        .collect()
}

impl EntityRules {
    /// Reads `data/intent/entities.toml`'s format; words are aliased like the lexicon's.
    pub fn parse(text: &str, aliases: &HashMap<String, String>) -> Result<EntityRules, String> {
        let f: File = toml::from_str(text).map_err(|e| e.to_string())?;
        let ctx = |a: &Around| Context {
            before: a.before.iter().map(|p| phrase(p, aliases)).collect(),
            after: a.after.iter().map(|p| phrase(p, aliases)).collect(),
            soft_after: a.soft_after.iter().map(|p| phrase(p, aliases)).collect(),
        };
        Ok(EntityRules {
            decoy: ctx(&f.decoy),
            amount: ctx(&f.amount),
            phone: ctx(&f.phone),
            pincode: ctx(&f.pincode),
            order: ctx(&f.order_id),
            address_words: f
                .pincode
                .address_words
                .iter()
                .map(|p| phrase(p, aliases))
                .collect(),
            order_words: f
                .order_id
                .mentioned
                .iter()
                .map(|p| phrase(p, aliases))
                .collect(),
            min_order_digits: f.order_id.min_digits.unwrap_or(3),
            max_order_digits: f.order_id.max_digits.unwrap_or(12),
        })
    }

    /// Judges every number span.
    pub fn extract(&self, tokens: &[Token], spans: &[Span]) -> Entities {
        let mut out = Entities::default();
        let mentions = |list: &[Phrase]| {
            (0..tokens.len()).any(|i| list.iter().any(|p| starts_at(tokens, i, p)))
        };
        let about_address = mentions(&self.address_words);
        let about_order = mentions(&self.order_words);
        for span in spans {
            let digits = span.digits.as_str();
            if self.decoy.ends_right_before(tokens, span.start)
                || self.decoy.starts_right_after(tokens, span.end)
            {
                continue;
            }
            if self.amount.ends_right_before(tokens, span.start)
                || self.amount.starts_right_after(tokens, span.end)
                || (span.quantity && span.words)
            {
                set(&mut out.amount, digits);
                continue;
            }
            let order_adjacent = self.order.ends_right_before(tokens, span.start);
            if !order_adjacent
                && self
                    .amount
                    .soft_after
                    .iter()
                    .any(|p| starts_at(tokens, span.end, p))
            {
                set(&mut out.amount, digits);
                continue;
            }
            if let Some(phone) = phone_shape(digits) {
                set(&mut out.phone, &phone);
                continue;
            }
            let order_context = self.order.near_before(tokens, span.start, 4)
                || self.order.starts_right_after(tokens, span.end);
            let pin_context = self.pincode.near_before(tokens, span.start, 4)
                || self.pincode.starts_right_after(tokens, span.end);
            if digits.len() == 6
                && !digits.starts_with('0')
                && (pin_context || (about_address && !order_context))
            {
                set(&mut out.pincode, digits);
                continue;
            }
            let n = digits.len();
            if n >= self.min_order_digits && n <= self.max_order_digits && !span.quantity {
                let phone_context = self.phone.near_before(tokens, span.start, 3);
                if order_context || (about_order && n >= 4 && !phone_context) {
                    set(&mut out.order_id, digits);
                }
            }
        }
        out
    }
}

fn set(slot: &mut Option<String>, value: &str) {
    if slot.is_none() {
        *slot = Some(value.to_string());
    }
}

/// A 10-digit Indian mobile number, after dropping +91 / 91 / 0.
fn phone_shape(digits: &str) -> Option<String> {
    let d = match digits.len() {
        12 if digits.starts_with("91") => &digits[2..],
        11 if digits.starts_with('0') => &digits[1..],
        10 => digits,
        _ => return None,
    };
    d.starts_with(['6', '7', '8', '9']).then(|| d.to_string())
}

fn token_is(t: &Token, w: &CtxWord) -> bool {
    match t.kind {
        TokenKind::Word => t.norm == w.norm || (t.skel_trusted() && t.skel == w.skel),
        TokenKind::Symbol => t.roman == w.norm,
        _ => false,
    }
}

fn starts_at(tokens: &[Token], i: usize, p: &Phrase) -> bool {
    p.iter()
        .enumerate()
        .all(|(k, w)| tokens.get(i + k).is_some_and(|t| token_is(t, w)))
}

impl Context {
    /// A phrase ends just before token `at`.
    fn ends_right_before(&self, tokens: &[Token], at: usize) -> bool {
        self.before
            .iter()
            .any(|p| at >= p.len() && starts_at(tokens, at - p.len(), p))
    }

    /// A phrase starts at token `at`.
    fn starts_right_after(&self, tokens: &[Token], at: usize) -> bool {
        self.after.iter().any(|p| starts_at(tokens, at, p))
    }

    /// A phrase ends within `window` words before `at` (no clause boundary in between).
    fn near_before(&self, tokens: &[Token], at: usize, window: usize) -> bool {
        let mut end = at;
        let mut seen = 0;
        while end > 0 && seen < window {
            if tokens[end - 1].kind == TokenKind::Boundary && tokens[end - 1].roman != "." {
                return false;
            }
            if self
                .before
                .iter()
                .any(|p| end >= p.len() && starts_at(tokens, end - p.len(), p))
            {
                return true;
            }
            end -= 1;
            seen += 1;
        }
        false
    }
}
