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
    soft_before: Vec<String>,
    #[serde(default)]
    address_words: Vec<String>,
    #[serde(default)]
    named_after: Vec<String>,
    #[serde(default)]
    priced_by: Vec<String>,
    #[serde(default)]
    nouns: Vec<String>,
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
    soft_before: Vec<Phrase>,
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
    /// After a number said as a quantity, these still name it as the order.
    named_order_after: Vec<Phrase>,
    /// ka / wala: what ties a price to a thing.
    priced_by: Vec<Phrase>,
    /// The order itself, as the thing after ka / wala.
    order_nouns: Vec<Phrase>,
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
            soft_before: a.soft_before.iter().map(|p| phrase(p, aliases)).collect(),
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
            named_order_after: f
                .order_id
                .named_after
                .iter()
                .map(|p| phrase(p, aliases))
                .collect(),
            priced_by: f
                .amount
                .priced_by
                .iter()
                .map(|p| phrase(p, aliases))
                .collect(),
            order_nouns: f
                .order_id
                .nouns
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
        let about_address =
            (0..tokens.len()).any(|i| self.address_words.iter().any(|p| starts_at(tokens, i, p)));
        let mut floor = 0;
        for span in spans {
            let judged = match self.judge(tokens, span, floor, about_address) {
                // "तीन शून्य आठ एक पंद्रह तारीख": the date takes the last group only.
                Judged::Decoy => span.tail.map_or(Judged::Decoy, |(at, cut)| {
                    let head = Span {
                        end: at,
                        digits: span.digits[..cut].to_string(),
                        tail: None,
                        ..span.clone()
                    };
                    self.judge(tokens, &head, floor, about_address)
                }),
                j => j,
            };
            match judged {
                Judged::Amount(d) => set(&mut out.amount, &d),
                Judged::Phone(d) => set(&mut out.phone, &d),
                Judged::Pincode(d) => set(&mut out.pincode, &d),
                Judged::Order(d) => set(&mut out.order_id, &d),
                Judged::Decoy | Judged::Nothing => {}
            }
            floor = span.end;
        }
        out
    }

    /// What one number is. Context words before it count back to `floor` (the previous
    /// number's end) at most: a cue belongs to the number nearest it.
    fn judge(&self, tokens: &[Token], span: &Span, floor: usize, about_address: bool) -> Judged {
        let digits = span.digits.clone();
        let (start, end) = (span.start, span.end);
        // Units, times and dates after a number are the strongest reading; rupees next.
        if self.decoy.starts_right_after(tokens, end) {
            return Judged::Decoy;
        }
        if self.amount.starts_right_after(tokens, end) {
            return Judged::Amount(digits);
        }
        if self.decoy.ends_right_before(tokens, start) {
            return Judged::Decoy;
        }
        let order_adjacent = self.order.ends_right_before(tokens, start);
        if !order_adjacent && self.amount.near_before(tokens, start, 3, floor) {
            return Judged::Amount(digits);
        }
        let threshold = any_ends_at(&self.amount.soft_before, tokens, start);
        if threshold && digits.len() >= 3 && !span.read_out {
            return Judged::Amount(digits);
        }
        let pin_adjacent = self.pincode.ends_right_before(tokens, start);
        if pin_adjacent && digits.len() == 6 {
            return Judged::Pincode(digits);
        }
        if span.quantity && span.words {
            // "बारह सौ" is a price, unless it is named as the order ("चौदह सौ पचपन नंबर
            // वाला ऑर्डर", "ऑर्डर तेईस सौ पचहत्तर"); "do hazaar wala order" is a price.
            let named = order_adjacent || any_starts_at(&self.named_order_after, tokens, end);
            return if named && digits.len() >= self.min_order_digits {
                Judged::Order(digits)
            } else {
                Judged::Amount(digits)
            };
        }
        if !order_adjacent && !span.read_out {
            let soft = any_starts_at(&self.amount.soft_after, tokens, end);
            if soft || self.priced_thing_after(tokens, end) {
                return Judged::Amount(digits);
            }
        }
        if let Some(phone) = phone_shape(&digits) {
            return Judged::Phone(phone);
        }
        let order_context = self.order.near_before(tokens, start, 4, floor)
            || self.order.starts_right_after(tokens, end);
        let pin_context = self.pincode.near_before(tokens, start, 4, floor)
            || self.pincode.starts_right_after(tokens, end);
        if digits.len() == 6
            && !digits.starts_with('0')
            && (pin_context || (about_address && !order_context))
        {
            return Judged::Pincode(digits);
        }
        let n = digits.len();
        if n < self.min_order_digits || n > self.max_order_digits || span.quantity {
            return Judged::Nothing;
        }
        // With nothing else to say what it is, a number of four digits or more is the order
        // the caller is talking about: order ids are what callers read out on these calls.
        let phone_context = self.phone.near_before(tokens, start, 4, floor);
        if order_context || (n >= 4 && !phone_context) {
            Judged::Order(digits)
        } else {
            Judged::Nothing
        }
    }

    /// "549 ka charger", "1299 wala mixer", "2499 ka jo order": a number tied to a thing by
    /// ka/wala is its price; tied to the order itself ("7001 wala order") it is the order.
    fn priced_thing_after(&self, tokens: &[Token], at: usize) -> bool {
        self.priced_by.iter().any(|p| {
            starts_at(tokens, at, p)
                && tokens.get(at + p.len()).is_some_and(|t| {
                    t.kind == TokenKind::Word
                        && !any_starts_at(&self.order_nouns, tokens, at + p.len())
                })
        })
    }
}

/// What a number is.
enum Judged {
    Decoy,
    Nothing,
    Amount(String),
    Phone(String),
    Pincode(String),
    Order(String),
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

/// One of `list` starts at token `at`.
fn any_starts_at(list: &[Phrase], tokens: &[Token], at: usize) -> bool {
    list.iter().any(|p| starts_at(tokens, at, p))
}

/// One of `list` ends just before token `at`.
fn any_ends_at(list: &[Phrase], tokens: &[Token], at: usize) -> bool {
    list.iter()
        .any(|p| at >= p.len() && starts_at(tokens, at - p.len(), p))
}

impl Context {
    /// A `before` phrase ends just before token `at`.
    fn ends_right_before(&self, tokens: &[Token], at: usize) -> bool {
        any_ends_at(&self.before, tokens, at)
    }

    /// An `after` phrase starts at token `at`.
    fn starts_right_after(&self, tokens: &[Token], at: usize) -> bool {
        any_starts_at(&self.after, tokens, at)
    }

    /// A phrase ends within `window` words before `at`, after `floor` (no clause boundary in
    /// between).
    fn near_before(&self, tokens: &[Token], at: usize, window: usize, floor: usize) -> bool {
        let mut end = at;
        let mut seen = 0;
        while end > floor && seen < window {
            if tokens[end - 1].kind == TokenKind::Boundary && tokens[end - 1].roman != "." {
                return false;
            }
            if any_ends_at(&self.before, tokens, end) {
                return true;
            }
            end -= 1;
            seen += 1;
        }
        false
    }
}
