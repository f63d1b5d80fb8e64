//! Numbers spoken as words, in Hindi and English, turned into digits.
//!
//! Two ways of speaking a number are told apart by their shape:
//! - **read digit by digit or in pairs** — "ek do teen chaar", "बारह चौंतीस", "nineteen ninety
//!   nine", "double five": the groups are written one after another (`1234`, `1234`, `1999`,
//!   `55`);
//! - **said as a quantity** — "बारह सौ", "चार सौ निन्यानवे", "one thousand two hundred",
//!   "डेढ़ हज़ार": a value (`1200`, `499`, `1200`, `1500`).
//!
//! The words live in `data/intent/numbers.toml`.

use std::collections::HashMap;

use serde::Deserialize;

use super::normalize::{Token, TokenKind, light_word};

/// The number words, keyed by `light` form.
#[derive(Debug, Clone, Default)]
pub(crate) struct NumberWords {
    words: HashMap<String, Word>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Word {
    Unit { value: u64, weak: bool },
    InRun(u64),
    Multiplier { value: u64, weak: bool },
    Times(f64),
    Plus(f64),
    Repeat(usize),
    Joiner,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    units: HashMap<String, Vec<String>>,
    in_runs: HashMap<String, Vec<String>>,
    multipliers: HashMap<String, Vec<String>>,
    fractions: HashMap<String, Fraction>,
    repeat: HashMap<String, Vec<String>>,
    joiners: WordList,
    weak: WordList,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Fraction {
    times: Option<f64>,
    plus: Option<f64>,
    words: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WordList {
    words: Vec<String>,
}

impl NumberWords {
    /// Reads the TOML table (`data/intent/numbers.toml`'s format).
    pub(crate) fn parse(text: &str) -> Result<NumberWords, String> {
        let file: File = toml::from_str(text).map_err(|e| e.to_string())?;
        let weak: Vec<String> = file.weak.words.iter().map(|w| light_word(w)).collect();
        let is_weak = |w: &str| weak.iter().any(|x| x == w);
        let mut words = HashMap::new();
        let number = |k: &str| {
            k.parse::<u64>()
                .map_err(|_| format!("`{k}` is not a number"))
        };
        for (k, list) in &file.units {
            let value = number(k)?;
            for w in list {
                let l = light_word(w);
                words.insert(
                    l.clone(),
                    Word::Unit {
                        value,
                        weak: is_weak(&l),
                    },
                );
            }
        }
        for (k, list) in &file.multipliers {
            let value = number(k)?;
            for w in list {
                let l = light_word(w);
                words.insert(
                    l.clone(),
                    Word::Multiplier {
                        value,
                        weak: is_weak(&l),
                    },
                );
            }
        }
        for (k, list) in &file.in_runs {
            let value = number(k)?;
            for w in list {
                words.entry(light_word(w)).or_insert(Word::InRun(value));
            }
        }
        for f in file.fractions.values() {
            let word = match (f.times, f.plus) {
                (Some(t), None) => Word::Times(t),
                (None, Some(p)) => Word::Plus(p),
                _ => return Err("a fraction has exactly one of `times` and `plus`".into()),
            };
            for w in &f.words {
                words.insert(light_word(w), word);
            }
        }
        for (k, list) in &file.repeat {
            let n = number(k)? as usize;
            for w in list {
                words.insert(light_word(w), Word::Repeat(n));
            }
        }
        for w in &file.joiners.words {
            words.insert(light_word(w), Word::Joiner);
        }
        Ok(NumberWords { words })
    }

    fn word(&self, t: &Token) -> Option<Word> {
        if t.kind != TokenKind::Word {
            return None;
        }
        self.words.get(&t.light).copied()
    }
}

/// A number found in an utterance: tokens `start..end`, as digits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span {
    /// First token.
    pub start: usize,
    /// One past the last token.
    pub end: usize,
    /// The number, digits only.
    pub digits: String,
    /// Said as a quantity ("बारह सौ") rather than read out.
    pub quantity: bool,
    /// Spoken as words (not written as digits).
    pub words: bool,
    /// Read out digit by digit or in pairs ("ek do teen chaar", "बारह चौंतीस", "double
    /// five"): how an identifier is spoken, never a price.
    pub read_out: bool,
    /// Where the last group of a read-out run starts: its token and its offset in `digits`
    /// ("तीन शून्य आठ एक | पंद्रह तारीख": the date may take the last group alone).
    pub tail: Option<(usize, usize)>,
}

#[derive(Default)]
struct Group {
    total: u64,
    current: f64,
    quantity: bool,
}

impl Group {
    fn digits(&self) -> String {
        (self.total + self.current.round() as u64).to_string()
    }

    /// "twenty" + "three", "do sau" + "pachas", "hazaar" + "paanch": one value.
    fn extends_with(&self, n: u64) -> bool {
        let cur = self.current.round() as u64;
        if n >= 100 {
            return false;
        }
        if self.quantity {
            cur.is_multiple_of(100) || (cur % 100 >= 20 && cur.is_multiple_of(10) && n < 10)
        } else {
            (20..100).contains(&cur) && cur.is_multiple_of(10) && n < 10
        }
    }
}

/// Every number in `tokens`, in order.
pub(crate) fn find(words: &NumberWords, tokens: &[Token]) -> Vec<Span> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        if tokens[i].kind == TokenKind::Number
            || (tokens[i].kind == TokenKind::Symbol
                && tokens[i].roman == "+"
                && tokens
                    .get(i + 1)
                    .is_some_and(|t| t.kind == TokenKind::Number))
        {
            i = digit_run(words, tokens, i, &mut out);
        } else if words.word(&tokens[i]).is_some() {
            i = word_run(words, tokens, i, &mut out);
        } else {
            i += 1;
        }
    }
    out
}

/// Digits as written: "98230 14567" and "+91 98230 14567" are one phone number; "5 hazaar"
/// is 5000.
fn digit_run(words: &NumberWords, tokens: &[Token], start: usize, out: &mut Vec<Span>) -> usize {
    let mut i = start;
    if tokens[i].kind == TokenKind::Symbol {
        i += 1;
    }
    let mut parts: Vec<(usize, &str)> = Vec::new();
    while let Some(t) = tokens.get(i)
        && t.kind == TokenKind::Number
    {
        parts.push((i, t.roman.as_str()));
        i += 1;
    }
    let joined: String = parts.iter().map(|(_, d)| *d).collect();
    // Digits written one by one ("1 0 0 1", as ASR spells a number read out) are one number.
    let one_by_one = parts.len() >= 3 && parts.iter().all(|(_, d)| d.len() == 1);
    if parts.len() > 1 && (one_by_one || matches!(joined.len(), 6 | 10..=12)) {
        out.push(Span {
            start,
            end: i,
            digits: joined,
            quantity: false,
            words: false,
            read_out: one_by_one,
            tail: None,
        });
        return i;
    }
    // Each written number on its own; the last may be scaled by a multiplier word.
    for (k, (at, d)) in parts.iter().enumerate() {
        let mut end = at + 1;
        let mut digits = (*d).to_string();
        let mut quantity = false;
        if k + 1 == parts.len()
            && let Some(Word::Multiplier { value, .. }) =
                tokens.get(end).and_then(|t| words.word(t))
            && let Ok(n) = d.parse::<u64>()
        {
            digits = n.saturating_mul(value).to_string();
            quantity = true;
            end += 1;
        }
        out.push(Span {
            start: if k == 0 { start } else { *at },
            end,
            digits,
            quantity,
            words: false,
            read_out: false,
            tail: None,
        });
    }
    out.last().map_or(i, |s| s.end.max(i))
}

/// A run of number words.
fn word_run(words: &NumberWords, tokens: &[Token], start: usize, out: &mut Vec<Span>) -> usize {
    let mut groups: Vec<Group> = Vec::new();
    let mut group: Option<Group> = None;
    let mut times: Option<f64> = None;
    let mut plus: Option<f64> = None;
    let mut repeat: Option<usize> = None;
    let mut readout = String::new();
    let mut used = 0usize; // number words in the run
    let mut weak_only = true;
    let mut repeated = false;
    let mut tail = (start, 0);
    let mut i = start;
    let close = |group: &mut Option<Group>, readout: &mut String, groups: &mut Vec<Group>| {
        if let Some(g) = group.take() {
            readout.push_str(&g.digits());
            groups.push(g);
        }
    };
    while let Some(t) = tokens.get(i) {
        let Some(w) = words.word(t) else { break };
        match w {
            Word::Unit { value, weak } => {
                weak_only &= weak;
                if let Some(r) = repeat.take() {
                    close(&mut group, &mut readout, &mut groups);
                    tail = (i - 1, readout.len());
                    let d = value.to_string();
                    for _ in 0..r {
                        readout.push_str(&d);
                    }
                    groups.push(Group::default());
                } else if let Some(p) = plus.take() {
                    // "paune do", "saade teen": waits for its multiplier.
                    close(&mut group, &mut readout, &mut groups);
                    tail = (i - 1, readout.len());
                    group = Some(Group {
                        current: value as f64 + p,
                        ..Group::default()
                    });
                } else if group.as_ref().is_some_and(|g| g.extends_with(value)) {
                    if let Some(g) = group.as_mut() {
                        g.current += value as f64;
                    }
                } else {
                    close(&mut group, &mut readout, &mut groups);
                    tail = (i, readout.len());
                    group = Some(Group {
                        current: value as f64,
                        ..Group::default()
                    });
                }
            }
            Word::InRun(value) => {
                // "oh" is zero between other number words only.
                let next_is_number = tokens
                    .get(i + 1)
                    .is_some_and(|n| matches!(words.word(n), Some(Word::Unit { .. })));
                if used == 0 || !next_is_number {
                    break;
                }
                close(&mut group, &mut readout, &mut groups);
                tail = (i, readout.len());
                group = Some(Group {
                    current: value as f64,
                    ..Group::default()
                });
            }
            Word::Multiplier { value, weak } => {
                if weak && used == 0 {
                    break;
                }
                weak_only &= weak;
                let g = group.get_or_insert_with(|| Group {
                    current: 1.0,
                    ..Group::default()
                });
                if !g.quantity && g.current >= 100.0 {
                    // "nineteen ninety nine hundred" is not a thing; start afresh.
                    break;
                }
                let mut base = if g.current == 0.0 { 1.0 } else { g.current };
                if let Some(f) = times.take() {
                    base = if g.current == 0.0 || g.current == 1.0 {
                        f
                    } else {
                        base * f
                    };
                }
                if let Some(p) = plus.take() {
                    base += p;
                }
                if value == 100 {
                    g.current = base * 100.0;
                } else {
                    g.total += (base * value as f64).round() as u64;
                    g.current = 0.0;
                }
                g.quantity = true;
            }
            Word::Times(f) => {
                if group.as_ref().is_some_and(|g| !g.quantity) || times.is_some() {
                    close(&mut group, &mut readout, &mut groups);
                }
                times = Some(f);
                weak_only = false;
            }
            Word::Plus(p) => {
                plus = Some(p);
                weak_only = false;
            }
            Word::Repeat(r) => {
                let next_is_unit = tokens
                    .get(i + 1)
                    .is_some_and(|n| matches!(words.word(n), Some(Word::Unit { .. })));
                if !next_is_unit {
                    break;
                }
                repeat = Some(r);
                repeated = true;
                weak_only = false;
            }
            Word::Joiner => {
                let inside = group.as_ref().is_some_and(|g| g.quantity);
                let next_is_unit = tokens
                    .get(i + 1)
                    .is_some_and(|n| matches!(words.word(n), Some(Word::Unit { .. })));
                if !inside || !next_is_unit {
                    break;
                }
            }
        }
        used += 1;
        i += 1;
    }
    close(&mut group, &mut readout, &mut groups);
    let end = i.max(start + 1);
    // A lone weak word ("do" in "kar do", "ek" as "a") is not a number.
    if used == 0 || (weak_only && used == 1) || readout.is_empty() {
        return end;
    }
    let quantity = groups.iter().any(|g| g.quantity);
    let read_out = !quantity && (groups.len() > 1 || repeated);
    out.push(Span {
        start,
        end: start + used,
        tail: (read_out && tail.0 > start && tail.1 > 0).then_some(tail),
        digits: readout,
        quantity,
        words: true,
        read_out,
    });
    end
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::intent::normalize::tokenize;

    fn table() -> NumberWords {
        NumberWords::parse(include_str!("../../data/intent/numbers.toml")).unwrap()
    }

    fn numbers(text: &str) -> Vec<String> {
        find(&table(), &tokenize(text))
            .into_iter()
            .map(|s| s.digits)
            .collect()
    }

    #[test]
    fn digits_read_one_by_one_are_concatenated() {
        assert_eq!(numbers("ek do teen chaar"), ["1234"]);
        assert_eq!(numbers("order one one nine nine"), ["1199"]);
        assert_eq!(numbers("ऑर्डर नंबर एक शून्य आठ दो"), ["1082"]);
        assert_eq!(
            numbers("nau aath do teen zero ek chaar paanch chhe saat se"),
            ["9823014567"]
        );
        assert_eq!(numbers("दो दो छह शून्य एक छह"), ["226016"]);
        assert_eq!(numbers("nine oh two one"), ["9021"]);
    }

    #[test]
    fn pairs_are_read_as_pairs() {
        assert_eq!(numbers("बारह चौंतीस"), ["1234"]);
        assert_eq!(numbers("twenty three forty five"), ["2345"]);
        assert_eq!(numbers("nineteen ninety nine"), ["1999"]);
    }

    #[test]
    fn quantities_are_values_up_to_lakhs() {
        assert_eq!(numbers("बारह सौ रुपये"), ["1200"]);
        assert_eq!(numbers("चार सौ निन्यानवे रुपये"), ["499"]);
        assert_eq!(numbers("डेढ़ हज़ार"), ["1500"]);
        assert_eq!(numbers("dhai sau"), ["250"]);
        assert_eq!(numbers("sava sau"), ["125"]);
        assert_eq!(numbers("paune do sau"), ["175"]);
        assert_eq!(numbers("saade teen hazaar"), ["3500"]);
        assert_eq!(numbers("do hazaar paanch sau"), ["2500"]);
        assert_eq!(
            numbers("one thousand two hundred and ninety nine"),
            ["1299"]
        );
        assert_eq!(numbers("dedh lakh"), ["150000"]);
        assert_eq!(numbers("teen lakh pachas hazaar"), ["350000"]);
        assert_eq!(numbers("5 hazaar"), ["5000"]);
        assert_eq!(numbers("twelve hundred"), ["1200"]);
    }

    #[test]
    fn double_and_triple_repeat_a_digit() {
        assert_eq!(numbers("nine eight double five"), ["9855"]);
        assert_eq!(numbers("four triple zero"), ["4000"]);
    }

    #[test]
    fn digits_written_one_by_one_are_one_number() {
        assert_eq!(numbers("order number 1 0 0 1"), ["1001"]);
        assert_eq!(numbers("9 8 2 3 0 1 4 5 6 7"), ["9823014567"]);
        assert_eq!(numbers("2 ya 3 din"), ["2", "3"]);
    }

    #[test]
    fn written_digits_group_into_phones_and_pincodes() {
        assert_eq!(numbers("+91 98230 14567"), ["919823014567"]);
        assert_eq!(numbers("pin 400 703"), ["400703"]);
        assert_eq!(numbers("order 1234 aur 5"), ["1234", "5"]);
        assert_eq!(numbers("Rs 1,299"), ["1299"]);
    }

    #[test]
    fn weak_words_alone_are_not_numbers() {
        assert!(numbers("cancel kar do").is_empty());
        assert!(numbers("ek order cancel karna hai").is_empty());
        assert!(numbers("so where is it").is_empty());
        assert_eq!(numbers("mera pincode change kar do 400703"), ["400703"]);
    }
}
