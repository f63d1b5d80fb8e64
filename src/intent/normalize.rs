//! One comparable form for Devanagari, romanized Hindi and English.
//!
//! A caller's words reach us as ASR text in any of three spellings of the same speech: "कहाँ",
//! "kahan", "kahaan". Every word is taken through three steps, and lexicon entries through the
//! same ones, so matching never depends on the script or the spelling:
//!
//! 1. **Romanize**: Devanagari is transliterated (inherent vowel, virama, matras, nukta,
//!    anusvara, word-final schwa dropped); Latin is lower-cased, apostrophes dropped.
//! 2. **`light`** — long vowels folded (`aa`→`a`, `ee`→`i`, `oo`→`u`), doubled letters folded,
//!    `w`→`v`, `z`→`j`, `q`→`k`, `ck`→`k`. Keeps aspiration, so *saat* (7) and *saath* (60) differ.
//! 3. **`norm`** — `light` with aspiration folded too (`th`→`t`, `kh`→`k`, `sh`→`s`, `ph`→`f`…):
//!    *theek*, *thik* and *ठीक* are all `tik`.
//!
//! **`skel`** — the consonant skeleton of `norm` (first letter kept, other vowels dropped, `c`
//! read as `s` before e/i/y and `k` elsewhere): *badalna* and *बदलना* (`badalana`) agree,
//! *order* and *ऑर्डर* (`ordar`) agree, *cancel* and *कैंसिल* agree. Skeletons are only
//! trusted when at least three letters long.

/// What a token is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// Letters (either script).
    Word,
    /// Digits (Devanagari digits and `1,299`-style separators folded to plain digits).
    Number,
    /// `₹`, `#`, `%`, `+`.
    Symbol,
    /// Punctuation that ends a clause: `,` `.` `?` `!` `।` `;`.
    Boundary,
}

/// One token of an utterance, in every form matching needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// What it is.
    pub kind: TokenKind,
    /// Romanized, lower case (digits for numbers, the symbol itself for symbols).
    pub roman: String,
    /// Long vowels and doubled letters folded; aspiration kept.
    pub light: String,
    /// `light` with aspiration folded.
    pub norm: String,
    /// Consonant skeleton of `norm`.
    pub skel: String,
    /// Whether it was written in Devanagari.
    pub devanagari: bool,
}

impl Token {
    fn word(roman: String, devanagari: bool) -> Token {
        let light = light(&roman);
        let norm = fold_aspirates(&light);
        let skel = skeleton(&norm);
        Token {
            kind: TokenKind::Word,
            roman,
            light,
            norm,
            skel,
            devanagari,
        }
    }

    fn other(kind: TokenKind, text: String) -> Token {
        Token {
            kind,
            light: text.clone(),
            norm: text.clone(),
            skel: text.clone(),
            roman: text,
            devanagari: false,
        }
    }

    /// Whether this token's skeleton is distinctive enough to match on: four letters, or three
    /// for Devanagari (whose vowels ASR spells least reliably). "please" and "policy" share
    /// `pls`; "bदलना" and "badalna" share `bdln`.
    pub fn skel_trusted(&self) -> bool {
        self.skel.len() >= 4 || (self.devanagari && self.skel.len() >= 3)
    }

    /// Whether this token is a word whose `norm` is `w` (a lexicon word already normalised).
    pub fn is(&self, w: &str) -> bool {
        self.kind == TokenKind::Word && self.norm == w
    }
}

/// Splits an utterance into tokens.
pub(crate) fn tokenize(text: &str) -> Vec<Token> {
    let mut out = Vec::with_capacity(16);
    let mut word = String::new();
    let mut deva = String::new();
    let mut digits = String::new();
    let chars: Vec<char> = text.chars().collect();
    let flush =
        |out: &mut Vec<Token>, word: &mut String, deva: &mut String, digits: &mut String| {
            if !word.is_empty() {
                out.push(Token::word(std::mem::take(word), false));
            }
            if !deva.is_empty() {
                let roman = romanize_devanagari(deva);
                deva.clear();
                if !roman.is_empty() {
                    out.push(Token::word(roman, true));
                }
            }
            if !digits.is_empty() {
                out.push(Token::other(TokenKind::Number, std::mem::take(digits)));
            }
        };
    for (i, &c) in chars.iter().enumerate() {
        if let Some(d) = devanagari_digit(c).or_else(|| c.is_ascii_digit().then_some(c)) {
            if !word.is_empty() || !deva.is_empty() {
                flush(&mut out, &mut word, &mut deva, &mut digits);
            }
            digits.push(d);
        } else if is_devanagari_letter(c) {
            if !word.is_empty() || !digits.is_empty() {
                flush(&mut out, &mut word, &mut deva, &mut digits);
            }
            deva.push(c);
        } else if c.is_alphabetic() {
            if !deva.is_empty() || !digits.is_empty() {
                flush(&mut out, &mut word, &mut deva, &mut digits);
            }
            word.extend(c.to_lowercase());
        } else if matches!(c, '\'' | '’' | '‘' | '`') && !word.is_empty() {
            // don't → dont
        } else if matches!(c, ',' | '.')
            && !digits.is_empty()
            && chars.get(i + 1).is_some_and(|n| n.is_ascii_digit())
        {
            // 1,299 → 1299 (a thousands separator; decimals are rare in speech and dropped too)
        } else if c == '\u{200c}' || c == '\u{200d}' {
            // zero-width (non-)joiners inside Devanagari words
        } else {
            flush(&mut out, &mut word, &mut deva, &mut digits);
            match c {
                ',' | '.' | '?' | '!' | '।' | '॥' | ';' | ':' => {
                    out.push(Token::other(TokenKind::Boundary, c.to_string()));
                }
                '₹' | '#' | '%' | '+' => out.push(Token::other(TokenKind::Symbol, c.to_string())),
                _ => {}
            }
        }
    }
    flush(&mut out, &mut word, &mut deva, &mut digits);
    out
}

/// Normalises one lexicon word (Latin or Devanagari) to its `norm` form.
pub(crate) fn norm_word(word: &str) -> String {
    let roman = romanize_word(word);
    fold_aspirates(&light(&roman))
}

/// Normalises one word to its `light` form (aspiration kept).
pub(crate) fn light_word(word: &str) -> String {
    light(&romanize_word(word))
}

fn romanize_word(word: &str) -> String {
    if word.chars().any(is_devanagari_letter) {
        romanize_devanagari(word)
    } else {
        word.chars()
            .flat_map(char::to_lowercase)
            .filter(|c| c.is_ascii_alphanumeric())
            .collect()
    }
}

fn devanagari_digit(c: char) -> Option<char> {
    let v = (c as u32).checked_sub(0x0966)?;
    (v < 10).then(|| char::from(b'0' + v as u8))
}

fn is_devanagari_letter(c: char) -> bool {
    matches!(c as u32, 0x0900..=0x0963 | 0x0970..=0x097F)
}

/// Consonants: their Latin spelling (inherent vowel not included).
fn consonant(c: char) -> Option<&'static str> {
    Some(match c {
        'क' => "k",
        'ख' => "kh",
        'ग' => "g",
        'घ' => "gh",
        'ङ' => "n",
        'च' => "ch",
        'छ' => "chh",
        'ज' => "j",
        'झ' => "jh",
        'ञ' => "n",
        'ट' => "t",
        'ठ' => "th",
        'ड' => "d",
        'ढ' => "dh",
        'ण' => "n",
        'त' => "t",
        'थ' => "th",
        'द' => "d",
        'ध' => "dh",
        'न' | '\u{0929}' => "n",
        'प' => "p",
        'फ' => "ph",
        'ब' => "b",
        'भ' => "bh",
        'म' => "m",
        'य' | '\u{095F}' => "y",
        'र' | '\u{0931}' => "r",
        'ल' | 'ळ' | '\u{0934}' => "l",
        'व' => "v",
        'श' | 'ष' => "sh",
        'स' => "s",
        'ह' => "h",
        '\u{0958}' => "k",
        '\u{0959}' => "kh",
        '\u{095A}' => "g",
        '\u{095B}' => "z",
        '\u{095C}' => "r",
        '\u{095D}' => "rh",
        '\u{095E}' => "f",
        _ => return None,
    })
}

/// Independent vowels.
fn vowel(c: char) -> Option<&'static str> {
    Some(match c {
        'अ' => "a",
        'आ' => "aa",
        'इ' => "i",
        'ई' => "ee",
        'उ' => "u",
        'ऊ' => "oo",
        'ऋ' => "ri",
        'ए' | 'ऍ' | 'ऎ' => "e",
        'ऐ' => "ai",
        'ओ' | 'ऑ' | 'ऒ' => "o",
        'औ' => "au",
        _ => return None,
    })
}

/// Dependent vowel signs (matras).
fn matra(c: char) -> Option<&'static str> {
    Some(match c {
        'ा' => "aa",
        'ि' => "i",
        'ी' => "ee",
        'ु' => "u",
        'ू' => "oo",
        'ृ' => "ri",
        'े' | 'ॅ' | 'ॆ' => "e",
        'ै' => "ai",
        'ो' | 'ॉ' | 'ॊ' => "o",
        'ौ' => "au",
        _ => return None,
    })
}

/// Transliterates a run of Devanagari letters. Word-final inherent vowels are dropped, as
/// Hindi speakers do ("ऑर्डर" → `ordar`, not `ordara`).
fn romanize_devanagari(word: &str) -> String {
    let chars: Vec<char> = word.chars().collect();
    let mut out = String::with_capacity(chars.len() * 2);
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if let Some(mut cons) = consonant(c) {
            let mut next = chars.get(i + 1).copied();
            if next == Some('\u{093C}') {
                // nukta after a plain consonant
                cons = match c {
                    'ड' => "r",
                    'ढ' => "rh",
                    'ज' => "z",
                    'फ' => "f",
                    'क' => "k",
                    _ => cons,
                };
                i += 1;
                next = chars.get(i + 1).copied();
            }
            out.push_str(cons);
            match next {
                Some('\u{094D}') => i += 1, // virama: no vowel
                Some(n) if matra(n).is_some() => {
                    out.push_str(matra(n).unwrap_or_default());
                    i += 1;
                }
                // Inherent vowel, unless this is the word's last letter.
                Some(n) if n == 'ं' || n == 'ँ' || n == 'ः' || consonant(n).is_some() => {
                    out.push('a')
                }
                Some(n) if vowel(n).is_some() => out.push('a'),
                _ => {
                    // Word end: a lone consonant keeps its vowel ("न" → na), longer words drop it.
                    if out.len() == cons.len() {
                        out.push('a');
                    }
                }
            }
        } else if let Some(v) = vowel(c) {
            out.push_str(v);
        } else if let Some(m) = matra(c) {
            out.push_str(m);
        } else if c == 'ं' || c == 'ँ' {
            // Anusvara before a labial is an m: नंबर → nambar.
            let labial = matches!(chars.get(i + 1), Some('प' | 'फ' | 'ब' | 'भ' | 'म'));
            out.push(if labial { 'm' } else { 'n' });
        } else if c == 'ः' {
            out.push('h');
        }
        i += 1;
    }
    out
}

fn is_vowel(b: u8) -> bool {
    matches!(b, b'a' | b'e' | b'i' | b'o' | b'u')
}

/// Long vowels and doubled letters folded, a few spelling variants unified.
fn light(roman: &str) -> String {
    let mut s: Vec<u8> = roman
        .bytes()
        .filter(u8::is_ascii_alphanumeric)
        .map(|b| match b {
            b'w' => b'v',
            b'z' => b'j',
            b'q' => b'k',
            b => b,
        })
        .collect();
    // ee → i, oo → u before doubled letters fold (which would make them e, o).
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        let (a, b) = (s[i], s.get(i + 1).copied());
        match (a, b) {
            (b'e', Some(b'e')) | (b'i', Some(b'i')) => {
                out.push(b'i');
                i += 2;
            }
            (b'o', Some(b'o')) | (b'u', Some(b'u')) => {
                out.push(b'u');
                i += 2;
            }
            (b'c', Some(b'k')) => {
                out.push(b'k');
                i += 2;
            }
            _ => {
                if out.last() != Some(&a) {
                    out.push(a);
                }
                i += 1;
            }
        }
    }
    s.clear();
    String::from_utf8(out).unwrap_or_default()
}

/// Aspirated consonants written with `h` folded to the plain consonant.
fn fold_aspirates(light: &str) -> String {
    let b = light.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if b.get(i + 1) == Some(&b'h')
            && matches!(
                c,
                b'k' | b'g' | b'c' | b'j' | b't' | b'd' | b'p' | b'b' | b's' | b'r'
            )
        {
            if c == b'c' {
                // ch stays ch (its own sound); chh → ch.
                out.extend_from_slice(b"ch");
                i += 2;
                if b.get(i) == Some(&b'h') {
                    i += 1;
                }
                continue;
            }
            out.push(if c == b'p' { b'f' } else { c });
            i += 2;
            continue;
        }
        if out.last() != Some(&c) {
            out.push(c);
        }
        i += 1;
    }
    String::from_utf8(out).unwrap_or_default()
}

/// The consonant skeleton of a `norm` form.
fn skeleton(norm: &str) -> String {
    let b = norm.as_bytes();
    let mut out = String::with_capacity(b.len());
    for (i, &c) in b.iter().enumerate() {
        let next = b.get(i + 1).copied();
        let mapped = match c {
            b'c' if next == Some(b'h') => Some('C'),
            b'h' if i > 0 && b[i - 1] == b'c' => None,
            b'c' if matches!(next, Some(b'e' | b'i' | b'y')) => Some('s'),
            b'c' => Some('k'),
            b'y' if i > 0 => None,
            c if i > 0 && is_vowel(c) => None,
            c => Some(char::from(c)),
        };
        if let Some(m) = mapped
            && !out.ends_with(m)
        {
            out.push(m);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(s: &str) -> String {
        norm_word(s)
    }
    fn skel(s: &str) -> String {
        tokenize(s)[0].skel.clone()
    }

    #[test]
    fn devanagari_is_romanized_with_final_schwa_dropped() {
        assert_eq!(romanize_devanagari("कहाँ"), "kahaan");
        assert_eq!(romanize_devanagari("नहीं"), "naheen");
        assert_eq!(romanize_devanagari("ऑर्डर"), "ordar");
        assert_eq!(romanize_devanagari("कैंसिल"), "kainsil");
        assert_eq!(romanize_devanagari("पैसा"), "paisaa");
        assert_eq!(romanize_devanagari("बड़ा"), "baraa");
        assert_eq!(romanize_devanagari("ज़रूर"), "zaroor");
        assert_eq!(romanize_devanagari("न"), "na");
        assert_eq!(romanize_devanagari("स्टेटस"), "stetas");
        assert_eq!(romanize_devanagari("नंबर"), "nambar");
    }

    #[test]
    fn both_scripts_and_spellings_reach_one_form() {
        assert_eq!(norm("कहाँ"), norm("kahaan"));
        assert_eq!(norm("kahan"), norm("kahaan"));
        assert_eq!(norm("ठीक"), norm("theek"));
        assert_eq!(norm("thik"), norm("theek"));
        assert_eq!(norm("नहीं"), norm("nahin"));
        assert_eq!(norm("वापस"), norm("wapas"));
        assert_eq!(norm("bhaiyya"), norm("bhaiya"));
        assert_eq!(norm("cancelled"), "canceled");
        assert_eq!(skel("ऑर्डर"), skel("order"));
        assert_eq!(skel("कैंसिल"), skel("cancel"));
        assert_eq!(skel("रिफंड"), skel("refund"));
        assert_eq!(skel("डिलीवरी"), skel("delivery"));
        assert_eq!(skel("बदलना"), skel("badalna"));
        assert_eq!(skel("स्टेटस"), skel("status"));
    }

    #[test]
    fn aspiration_is_kept_in_light_form_only() {
        assert_ne!(light_word("saat"), light_word("saath"));
        assert_eq!(light_word("सात"), light_word("saat"));
        assert_eq!(light_word("साठ"), light_word("saath"));
        assert_eq!(norm("saat"), norm("saath"));
    }

    #[test]
    fn tokens_split_scripts_digits_and_punctuation() {
        let t = tokenize("मेरा order #1,299 का, don't ₹499 १२३");
        let kinds: Vec<TokenKind> = t.iter().map(|t| t.kind).collect();
        use TokenKind::*;
        assert_eq!(
            kinds,
            [
                Word, Word, Symbol, Number, Word, Boundary, Word, Symbol, Number, Number
            ]
        );
        assert_eq!(t[3].roman, "1299");
        assert_eq!(t[6].roman, "dont");
        assert_eq!(t[9].roman, "123");
        assert!(t[0].devanagari);
        let t = tokenize("size M ki jagah L, 15th");
        assert_eq!(t.last().map(|t| t.roman.as_str()), Some("th"));
    }
}
