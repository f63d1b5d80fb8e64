//! The confirmation gate: whether a caller's answer to "shall I cancel it?" is a clear yes.
//!
//! A destructive action goes ahead only on a yes a false one cannot pass: the intent stage's
//! `affirm` at a strict confidence, or the proposed action itself asked for again ("haan ji,
//! cancel kar dijiye"), with a yes word in it, and nothing else in the same turn — no question,
//! no hedge or deferral ("ek minute", "hold on", "pehle ghar pe pooch loon"), no negation, no
//! other request, no half sentence, nothing long. Anything else is not a yes: the proposal
//! stays open and the bot asks again. A false yes is the worst mistake the product can make, so
//! the rules only ever remove yeses; `data/confirm/` holds the answers they are tested on.

use crate::vocab::{AgentName, Intent};

/// Confidence of `affirm` below which it never confirms. Calibrated on `data/confirm/` (the
/// test `the_affirm_threshold_is_calibrated_on_the_test_sets`): no not-quite-yes gets through
/// the gate at any threshold from 0.5 up; from 0.5 to 0.9 the gate accepts the same, most clear
/// yeses; 0.9 is the highest of those, so the fewest not-quite-yes reach the word rules as an
/// `affirm`. (The model's own affirm floor, chosen by `caly intent train` on left-out batches,
/// already turns a less sure yes into another label.)
pub const MIN_AFFIRM_CONFIDENCE: f32 = 0.9;
/// Confidence of `deny` from which it drops the proposal (a missed no only asks again).
pub const MIN_DENY_CONFIDENCE: f32 = 0.8;
/// Longest clear yes, in words: a long answer carries something besides the yes.
const MAX_WORDS: usize = 8;

/// What the caller's answer to a proposed action is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// A clear yes: go ahead.
    Yes,
    /// A clear no: drop the proposal.
    No,
    /// Neither: keep the proposal, ask again.
    Unclear,
}

/// Words that say yes (romanised and Devanagari).
const YES: &[&str] = &[
    "haan",
    "haa",
    "ha",
    "han",
    "hanji",
    "haanji",
    "ji",
    "jee",
    "yes",
    "yeah",
    "yep",
    "yup",
    "ok",
    "okay",
    "theek",
    "thik",
    "sahi",
    "bilkul",
    "zaroor",
    "jaroor",
    "zarur",
    "sure",
    "absolutely",
    "definitely",
    "course",
    "confirm",
    "correct",
    "alright",
    "ahead",
    "karo",
    "kijiye",
    "dijiye",
    "do",
    "please",
    "हाँ",
    "हां",
    "जी",
    "ठीक",
    "बिल्कुल",
    "बिलकुल",
    "ज़रूर",
    "जरूर",
    "करो",
    "दीजिए",
    "दो",
    "सही",
];

/// Yes words that are also how a request is put ("kar do", "please cancel it"): they say yes
/// only when the intent stage heard an `affirm`.
const ASKING: &[&str] = &[
    "karo",
    "kijiye",
    "dijiye",
    "do",
    "please",
    "करो",
    "दीजिए",
    "दो",
];

/// Words that make an answer something other than a plain yes: questions, hedges and
/// deferrals, greetings, sarcasm markers, other topics, and negations.
const NOT_A_YES: &[&str] = &[
    // questions
    "kya",
    "kyu",
    "kyun",
    "kyon",
    "kaise",
    "kab",
    "kaun",
    "kaunsa",
    "kaunsi",
    "kitna",
    "kitne",
    "kitni",
    "kahan",
    "what",
    "why",
    "how",
    "when",
    "which",
    "who",
    "where",
    "really",
    "pakka",
    "sach",
    "repeat",
    "phir",
    "dobara",
    "again",
    "samjha",
    "samjhi",
    "sorry",
    "matlab",
    "mean",
    // hedges, deferrals, waiting
    "wait",
    "hold",
    "minute",
    "min",
    "second",
    "sec",
    "moment",
    "ruko",
    "rukiye",
    "ruk",
    "zara",
    "thoda",
    "pehle",
    "first",
    "baad",
    "later",
    "kal",
    "tomorrow",
    "soch",
    "sochke",
    "sochta",
    "sochti",
    "sochkar",
    "think",
    "maybe",
    "shayad",
    "perhaps",
    "probably",
    "but",
    "par",
    "lekin",
    "magar",
    "actually",
    "hmm",
    "hm",
    "umm",
    "um",
    "uh",
    "achha",
    "acha",
    "accha",
    "dekhte",
    "dekhta",
    "check",
    "pooch",
    "poochh",
    "ask",
    "whatever",
    "care",
    "not",
    // greetings and line trouble
    "hello",
    "helo",
    "hi",
    "hey",
    "namaste",
    "namaskar",
    "morning",
    "bolo",
    "boliye",
    "sunaiye",
    "sunao",
    "awaaz",
    "aawaz",
    "network",
    "cut",
    // sarcasm and complaints
    "jaise",
    "like",
    "obviously",
    "because",
    "amazing",
    "great",
    "hamesha",
    "always",
    // other requests and topics
    "refund",
    "paisa",
    "paise",
    "money",
    "charge",
    "charges",
    "status",
    "details",
    "exchange",
    "replacement",
    "person",
    "insaan",
    "agent",
    "human",
    "keep",
    "call",
    "doosra",
    "doosre",
    "dusra",
    "galat",
    "wrong",
    "wala",
    "wale",
    "baat",
    "raha",
    "rahi",
    "rahe",
    // negations
    "nahi",
    "nahin",
    "nai",
    "na",
    "mat",
    "no",
    "nope",
    "don't",
    "dont",
    "never",
    "rehne",
    // Devanagari
    "क्या",
    "क्यों",
    "कैसे",
    "कब",
    "कौन",
    "कितना",
    "कितने",
    "फिर",
    "समझा",
    "हेलो",
    "नमस्ते",
    "बोलिए",
    "रुकिए",
    "रुको",
    "मिनट",
    "बाद",
    "कल",
    "पहले",
    "लेकिन",
    "पर",
    "शायद",
    "सोच",
    "सोचकर",
    "पक्का",
    "इंसान",
    "रिफंड",
    "पैसे",
    "चार्ज",
    "जानकारी",
    "एक्सचेंज",
    "नहीं",
    "मत",
    "ना",
    "लूँ",
    "पूछ",
];

/// Words a sentence does not end on when it is finished ("haan to…", "theek hai par…").
const CONNECTORS: &[&str] = &[
    "to", "toh", "wo", "woh", "so", "i", "and", "aur", "ki", "ke", "ko", "se", "ye", "yeh",
];

fn words(text: &str) -> Vec<String> {
    text.to_lowercase()
        .split(|c: char| {
            c.is_whitespace() || matches!(c, ',' | '.' | '!' | '…' | ';' | ':' | '-' | '"' | '।')
        })
        .filter(|w| !w.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Judges the caller's answer to `proposed` from what the intent stage made of it.
pub fn judge(text: &str, intent: Intent, confidence: f32, proposed: AgentName) -> Answer {
    judge_at(text, intent, confidence, proposed, MIN_AFFIRM_CONFIDENCE)
}

/// [`judge`] with the intent stage's `affirm` taken from `min_confidence` up (the calibration
/// sweeps it).
fn judge_at(
    text: &str,
    intent: Intent,
    confidence: f32,
    proposed: AgentName,
    min_confidence: f32,
) -> Answer {
    if intent == Intent::Deny && confidence >= MIN_DENY_CONFIDENCE && !text.contains('?') {
        return Answer::No;
    }
    let affirmed = intent == Intent::Affirm && confidence >= min_confidence;
    let repeated = AgentName::for_intent(intent) == Some(proposed);
    if !(affirmed || repeated) || text.contains('?') {
        return Answer::Unclear;
    }
    let w = words(text);
    if w.is_empty() || w.len() > MAX_WORDS {
        return Answer::Unclear;
    }
    if w.iter().any(|x| NOT_A_YES.contains(&x.as_str())) {
        return Answer::Unclear;
    }
    if w.last().is_some_and(|x| CONNECTORS.contains(&x.as_str())) {
        return Answer::Unclear;
    }
    // Asking for the action again is a yes only with a yes in it: "cancel kar do" is how a
    // caller asks for a cancellation in the first place, "haan ji, cancel kar dijiye" answers.
    let yes =
        |x: &&String| YES.contains(&x.as_str()) && (affirmed || !ASKING.contains(&x.as_str()));
    if !w.iter().any(|x| yes(&x)) {
        return Answer::Unclear;
    }
    Answer::Yes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::intent::Classifier;

    fn lines(text: &str) -> Vec<&str> {
        text.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect()
    }

    /// The action an answer names, if it names one; otherwise the one it is taken to answer.
    fn proposal(intent: Intent) -> AgentName {
        match AgentName::for_intent(intent) {
            Some(
                a @ (AgentName::CancelOrder | AgentName::ReturnRequest | AgentName::AddressChange),
            ) => a,
            _ => AgentName::CancelOrder,
        }
    }

    #[test]
    fn no_answer_that_is_not_quite_a_yes_confirms_anything() {
        let classifier = Classifier::builtin().unwrap_or_else(|e| panic!("{e}"));
        let not_yes = lines(include_str!("../../data/confirm/not_yes.txt"));
        assert!(not_yes.len() >= 150, "{} answers", not_yes.len());
        let mut passed = Vec::new();
        for text in &not_yes {
            let p = classifier.classify(text);
            for proposed in [
                AgentName::CancelOrder,
                AgentName::ReturnRequest,
                AgentName::AddressChange,
            ] {
                if judge(text, p.intent, p.confidence, proposed) == Answer::Yes {
                    passed.push((*text, proposed));
                }
            }
        }
        assert!(passed.is_empty(), "false yeses: {passed:?}");
    }

    #[test]
    fn clear_yeses_are_accepted() {
        let classifier = Classifier::builtin().unwrap_or_else(|e| panic!("{e}"));
        let yes = lines(include_str!("../../data/confirm/yes.txt"));
        assert!(yes.len() >= 100, "{} answers", yes.len());
        let refused: Vec<&str> = yes
            .iter()
            .copied()
            .filter(|text| {
                let p = classifier.classify(text);
                judge(text, p.intent, p.confidence, proposal(p.intent)) != Answer::Yes
            })
            .collect();
        let accepted = yes.len() - refused.len();
        eprintln!(
            "clear yeses accepted: {accepted} of {}; refused: {refused:?}",
            yes.len()
        );
        // Refusing a yes costs a repeated question, not a wrong cancellation; still, most
        // plain yeses must get through. The README reports the exact figure.
        assert!(
            accepted * 100 >= yes.len() * 80,
            "{accepted} of {}: {refused:?}",
            yes.len()
        );
    }

    /// The calibration of [`MIN_AFFIRM_CONFIDENCE`]. For each threshold: how many clear yeses
    /// and not-quite-yes answers the intent stage's `affirm` alone lets through (their
    /// difference is its separation), and how many of each the whole gate passes. The
    /// threshold is chosen in three steps: the gate passes no not-quite-yes (safety); of
    /// those, the ones that accept the most clear yeses (a refused yes costs a repeated
    /// question); of those, the highest, so the fewest not-quite-yes reach the word rules as an
    /// `affirm` (the word rules are the second line, not the only one). `--nocapture` prints
    /// the table (the README quotes it).
    #[test]
    fn the_affirm_threshold_is_calibrated_on_the_test_sets() {
        let classifier = Classifier::builtin().unwrap_or_else(|e| panic!("{e}"));
        let classify = |text: &'static str| {
            lines(text)
                .into_iter()
                .map(|t| (t, classifier.classify(t)))
                .collect::<Vec<_>>()
        };
        let not_yes = classify(include_str!("../../data/confirm/not_yes.txt"));
        let yes = classify(include_str!("../../data/confirm/yes.txt"));
        let affirms = |set: &[(&str, crate::intent::Prediction)], at: f32| {
            set.iter()
                .filter(|(_, p)| p.intent == Intent::Affirm && p.confidence >= at)
                .count()
        };
        // (threshold, false yeses through the gate, clear yeses through it, separation)
        let mut table = Vec::new();
        for at in (10..=19).map(|i| i as f32 * 0.05) {
            let false_yes = not_yes
                .iter()
                .filter(|(t, p)| {
                    [
                        AgentName::CancelOrder,
                        AgentName::ReturnRequest,
                        AgentName::AddressChange,
                    ]
                    .into_iter()
                    .any(|a| judge_at(t, p.intent, p.confidence, a, at) == Answer::Yes)
                })
                .count();
            let accepted = yes
                .iter()
                .filter(|(t, p)| {
                    judge_at(t, p.intent, p.confidence, proposal(p.intent), at) == Answer::Yes
                })
                .count();
            let separation = affirms(&yes, at) as i64 - affirms(&not_yes, at) as i64;
            eprintln!(
                "threshold {at:.2}: affirm alone passes {} of {} clear yeses and {} of {} not-quite-yes; the gate confirms {false_yes} not-quite-yes and accepts {accepted} clear yeses",
                affirms(&yes, at),
                yes.len(),
                affirms(&not_yes, at),
                not_yes.len()
            );
            table.push((at, false_yes, accepted, separation));
        }
        let safe = || table.iter().filter(|(_, false_yes, _, _)| *false_yes == 0);
        let most = safe().map(|(_, _, accepted, _)| *accepted).max();
        let chosen = safe()
            .filter(|(_, _, accepted, _)| Some(*accepted) == most)
            .map(|(at, _, _, _)| *at)
            .next_back();
        assert_eq!(
            chosen.map(|c| (c * 100.0).round() as i64),
            Some((MIN_AFFIRM_CONFIDENCE * 100.0).round() as i64),
            "{table:?}"
        );
    }

    #[test]
    fn a_clear_no_drops_the_proposal_and_a_yes_for_another_action_does_not_confirm() {
        assert_eq!(
            judge("bilkul nahi", Intent::Deny, 0.95, AgentName::CancelOrder),
            Answer::No
        );
        assert_eq!(
            judge(
                "haan return kar do",
                Intent::ReturnRequest,
                0.9,
                AgentName::CancelOrder
            ),
            Answer::Unclear
        );
        // The caller's request itself, heard after the bot proposed the action, is no yes.
        assert_eq!(
            judge(
                "order 1001 cancel kar do",
                Intent::CancelOrder,
                0.95,
                AgentName::CancelOrder
            ),
            Answer::Unclear
        );
        assert_eq!(
            judge(
                "haan ji, cancel kar dijiye",
                Intent::CancelOrder,
                0.9,
                AgentName::CancelOrder
            ),
            Answer::Yes
        );
        assert_eq!(
            judge(
                "haan",
                Intent::Affirm,
                MIN_AFFIRM_CONFIDENCE - 0.05,
                AgentName::CancelOrder
            ),
            Answer::Unclear
        );
    }
}
