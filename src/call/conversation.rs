//! Conversation control (sans-IO): when the caller's turn is answered, when a silent caller
//! is prompted and let go, what the keypad says. The controller feeds it what happened and
//! when; it answers what to do. Its settings are the pipeline file's `[conversation]` table.

use std::time::Duration;

use serde::Deserialize;
use tokio::time::Instant;

use crate::engine::registry::{Invalid, Section};

fn d_bot_tail_ms() -> u32 {
    400
}
fn d_idle_prompt_ms() -> u32 {
    8000
}
fn d_idle_max_prompts() -> u32 {
    2
}
fn d_keypad_pause_ms() -> u32 {
    3000
}
fn d_true() -> bool {
    true
}
fn d_filler_after_ms() -> u32 {
    700
}
fn d_hand_off_key() -> String {
    "0".into()
}

/// Longest keypad entry kept (an order number, a phone number, a pincode fit).
const MAX_KEYS: usize = 20;

/// `[conversation]`: how Caly runs the conversation on top of the pipeline.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConversationSpec {
    /// Caller speech that starts while the bot is talking with more than this much of its
    /// reply still to play, and that the VAD does not confirm as a barge-in, is a backchannel
    /// ("haan", "hmm"): the bot is neither cut off nor made to answer it. Speech starting in
    /// the last `bot_tail_ms` of the reply is an answer to it. Milliseconds.
    #[serde(default = "d_bot_tail_ms")]
    pub bot_tail_ms: u32,
    /// After the bot has finished speaking, how long a silent caller is given before the bot
    /// asks whether they are still there. Milliseconds; 0 turns prompting (and the release of
    /// silent callers) off.
    #[serde(default = "d_idle_prompt_ms")]
    pub idle_prompt_ms: u32,
    /// Unanswered prompts after which the bot says goodbye and ends the call (`caller_silent`).
    #[serde(default = "d_idle_max_prompts")]
    pub idle_max_prompts: u32,
    /// End the call (`completed_by_bot`) once the bot has answered the caller's goodbye.
    #[serde(default = "d_true")]
    pub hang_up_on_goodbye: bool,
    /// Keys typed on the keypad reach the model as the caller's turn, ended by `#` or a pause.
    #[serde(default = "d_true")]
    pub keypad: bool,
    /// The pause that ends a keypad entry, milliseconds.
    #[serde(default = "d_keypad_pause_ms")]
    pub keypad_pause_ms: u32,
    /// An entry of just this key hands the caller to a person (`""`: no key does).
    #[serde(default = "d_hand_off_key")]
    pub hand_off_key: String,
    /// When a tool (an agent on the store) has not answered within this long, the bot says
    /// one short holding line ("ek second, main check kar rahi hoon") — never a second one
    /// for the same call, never over the caller, never after the model's own preamble.
    /// Milliseconds; 0 turns it off.
    #[serde(default = "d_filler_after_ms")]
    pub filler_after_ms: u32,
}

impl Default for ConversationSpec {
    fn default() -> ConversationSpec {
        ConversationSpec {
            bot_tail_ms: d_bot_tail_ms(),
            idle_prompt_ms: d_idle_prompt_ms(),
            idle_max_prompts: d_idle_max_prompts(),
            hang_up_on_goodbye: true,
            keypad: true,
            keypad_pause_ms: d_keypad_pause_ms(),
            hand_off_key: d_hand_off_key(),
            filler_after_ms: d_filler_after_ms(),
        }
    }
}

impl Section for ConversationSpec {
    const NAME: &'static str = "conversation";

    fn validate(&self) -> Vec<Invalid> {
        let mut invalid = Vec::new();
        if self.idle_prompt_ms != 0 && self.idle_prompt_ms < 1000 {
            invalid.push(Invalid {
                key: "idle_prompt_ms",
                message:
                    "a silent caller needs at least 1000 ms before a prompt (0 turns prompting off)"
                        .into(),
            });
        }
        if self.idle_max_prompts > 10 {
            invalid.push(Invalid {
                key: "idle_max_prompts",
                message: "at most 10 prompts".into(),
            });
        }
        if !(500..=30_000).contains(&self.keypad_pause_ms) {
            invalid.push(Invalid {
                key: "keypad_pause_ms",
                message: "between 500 and 30000 ms".into(),
            });
        }
        if self.bot_tail_ms > 5000 {
            invalid.push(Invalid {
                key: "bot_tail_ms",
                message: "at most 5000 ms".into(),
            });
        }
        if self.filler_after_ms > 10_000 {
            invalid.push(Invalid {
                key: "filler_after_ms",
                message: "at most 10000 ms (0 turns the filler off)".into(),
            });
        }
        let key_ok = self.hand_off_key.is_empty()
            || (self.hand_off_key.chars().count() == 1
                && self
                    .hand_off_key
                    .chars()
                    .all(|c| c.is_ascii_digit() || c == '*'));
        if !key_ok {
            invalid.push(Invalid {
                key: "hand_off_key",
                message: "one key, 0-9 or *, or \"\" for none".into(),
            });
        }
        invalid
    }
}

/// What to do about a caller's turn that ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// A real turn: the model answers it.
    Answer,
    /// Speech over the bot that did not cut it off: no answer.
    Backchannel,
}

/// What the silent-caller clock says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Idle {
    /// Ask whether the caller is still there (the `n`th prompt, from 1).
    Prompt(u32),
    /// Say goodbye and end the call.
    GiveUp,
}

/// A finished keypad entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Keys {
    /// Digits for the model.
    Entry(String),
    /// The hand-off key alone.
    HandOff,
}

/// The caller's utterance in progress.
#[derive(Debug, Clone, Copy)]
struct Utterance {
    /// Every onset in it came while the bot had more than the tail left to say.
    over_bot: bool,
    /// The VAD confirmed it as a barge-in.
    barged: bool,
}

/// The conversation's state.
#[derive(Debug)]
pub(crate) struct Conversation {
    spec: ConversationSpec,
    utterance: Option<Utterance>,
    /// Since when neither side has said anything (the idle clock), if that is the case.
    quiet_since: Option<Instant>,
    /// Prompts since the caller last spoke.
    prompts: u32,
    keys: String,
    last_key: Option<Instant>,
    /// Backchannels heard (not answered).
    pub(crate) backchannels: u64,
    /// When the filler for the tool call in flight is due, if one is.
    filler_due: Option<Instant>,
    /// The model has spoken in its current response (a preamble before a tool call).
    response_spoke: bool,
}

impl Conversation {
    pub(crate) fn new(spec: ConversationSpec) -> Conversation {
        Conversation {
            spec,
            utterance: None,
            quiet_since: None,
            prompts: 0,
            keys: String::new(),
            last_key: None,
            backchannels: 0,
            filler_due: None,
            response_spoke: false,
        }
    }

    /// The settings.
    pub(crate) fn spec(&self) -> &ConversationSpec {
        &self.spec
    }

    /// The caller started speaking; `bot_left` is how much of the bot's reply is still to
    /// play, if it is playing.
    pub(crate) fn caller_started(&mut self, bot_left: Option<Duration>) {
        let tail = Duration::from_millis(u64::from(self.spec.bot_tail_ms));
        let over_bot = bot_left.is_some_and(|left| left > tail);
        let u = self.utterance.get_or_insert(Utterance {
            over_bot: true,
            barged: false,
        });
        // Any part said outside the bot's speech makes the whole turn one to answer.
        u.over_bot &= over_bot;
        self.quiet_since = None;
        self.prompts = 0;
    }

    /// The caller's speech cut the bot off.
    pub(crate) fn barged_in(&mut self) {
        if let Some(u) = self.utterance.as_mut() {
            u.barged = true;
        }
    }

    /// The model committed the caller's turn.
    pub(crate) fn caller_turn_ended(&mut self) -> Verdict {
        let verdict = match self.utterance.take() {
            Some(u) if u.over_bot && !u.barged => Verdict::Backchannel,
            _ => Verdict::Answer,
        };
        if verdict == Verdict::Backchannel {
            self.backchannels += 1;
        }
        verdict
    }

    /// Someone is talking, or the bot is about to: the idle clock stops.
    pub(crate) fn busy(&mut self) {
        self.quiet_since = None;
    }

    /// Nobody is talking: the idle clock runs from `now` unless it already does.
    pub(crate) fn quiet(&mut self, now: Instant) {
        if self.quiet_since.is_none() {
            self.quiet_since = Some(now);
        }
    }

    /// When the idle clock next says something.
    pub(crate) fn idle_due(&self) -> Option<Instant> {
        if self.spec.idle_prompt_ms == 0 {
            return None;
        }
        let after = Duration::from_millis(u64::from(self.spec.idle_prompt_ms));
        self.quiet_since.map(|since| since + after)
    }

    /// What to do at `now` about a silent caller, if anything. A prompt restarts the clock
    /// once it has been said (the controller reports the bot busy, then quiet).
    pub(crate) fn on_idle(&mut self, now: Instant) -> Option<Idle> {
        let due = self.idle_due()?;
        if now < due {
            return None;
        }
        self.quiet_since = None;
        if self.prompts < self.spec.idle_max_prompts {
            self.prompts += 1;
            Some(Idle::Prompt(self.prompts))
        } else {
            Some(Idle::GiveUp)
        }
    }

    /// The model started a response.
    pub(crate) fn response_started(&mut self) {
        self.response_spoke = false;
        // Whatever the model says now answers the tool call or replaces the filler.
        self.filler_due = None;
    }

    /// The model's audio started.
    pub(crate) fn model_spoke(&mut self) {
        self.response_spoke = true;
        self.filler_due = None;
    }

    /// The model called a tool at `now`: a filler is due unless it has already spoken a
    /// preamble in this response.
    pub(crate) fn tool_called(&mut self, now: Instant) {
        if self.spec.filler_after_ms == 0 || self.response_spoke || self.filler_due.is_some() {
            return;
        }
        self.filler_due = Some(now + Duration::from_millis(u64::from(self.spec.filler_after_ms)));
    }

    /// When the filler is due.
    pub(crate) fn filler_due(&self) -> Option<Instant> {
        self.filler_due
    }

    /// Whether to say the filler now: it is due, nobody is talking (`quiet`). Either way a due
    /// filler is used up: one chance per tool call.
    pub(crate) fn on_filler(&mut self, now: Instant, quiet: bool) -> bool {
        match self.filler_due {
            Some(due) if now >= due => {
                self.filler_due = None;
                quiet
            }
            _ => false,
        }
    }

    /// A key from the keypad.
    pub(crate) fn key(&mut self, digit: char, now: Instant) -> Option<Keys> {
        if !self.spec.keypad {
            return None;
        }
        self.quiet_since = None;
        self.prompts = 0;
        if digit == '#' {
            return self.finish_keys();
        }
        if self.keys.len() < MAX_KEYS {
            self.keys.push(digit);
        }
        self.last_key = Some(now);
        None
    }

    /// When a keypad entry in progress ends by the pause.
    pub(crate) fn keys_due(&self) -> Option<Instant> {
        let pause = Duration::from_millis(u64::from(self.spec.keypad_pause_ms));
        self.last_key.map(|at| at + pause)
    }

    /// The entry, if its pause has passed at `now`.
    pub(crate) fn on_keys_pause(&mut self, now: Instant) -> Option<Keys> {
        let due = self.keys_due()?;
        if now < due {
            return None;
        }
        self.finish_keys()
    }

    fn finish_keys(&mut self) -> Option<Keys> {
        self.last_key = None;
        let keys = std::mem::take(&mut self.keys);
        if keys.is_empty() {
            return None;
        }
        if !self.spec.hand_off_key.is_empty() && keys == self.spec.hand_off_key {
            return Some(Keys::HandOff);
        }
        Some(Keys::Entry(keys))
    }
}

/// What the model is told to say for a prompt to a silent caller.
pub(crate) const IDLE_PROMPT: &str = "The caller has said nothing for a while. Ask them, in one short \
     sentence in the language they have been using, whether they are still on the line.";
/// What the model is told to say before letting a silent caller go.
pub(crate) const IDLE_GOODBYE: &str = "The caller has still said nothing. Say one short, polite goodbye \
     in their language (they can call again); the call ends after it.";
/// What the model is told when the caller asks for a person by the keypad.
pub(crate) const HAND_OFF_LINE: &str = "The caller pressed the key for a person. Tell them in one short \
     sentence in their language that you are connecting them to someone from the team now.";

/// What the model is told to say while a tool is slow.
pub(crate) const FILLER: &str = "Looking this up in the store is taking a moment. Say only a very \
     short holding phrase in the caller's language, like \"ek second, main check kar rahi hoon\", \
     and nothing else; the answer follows.";

/// How the model hears a keypad entry.
pub(crate) fn keypad_text(keys: &str) -> String {
    format!("Caller typed on the keypad: {keys}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> Instant {
        // Instants relative to one base; paused time is not needed for pure arithmetic.
        base() + Duration::from_millis(ms)
    }

    fn base() -> Instant {
        static BASE: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        *BASE.get_or_init(Instant::now)
    }

    fn ms(n: u64) -> Option<Duration> {
        Some(Duration::from_millis(n))
    }

    #[test]
    fn speech_over_the_bot_that_does_not_barge_in_is_a_backchannel() {
        let mut c = Conversation::new(ConversationSpec::default());
        c.caller_started(ms(2000));
        assert_eq!(c.caller_turn_ended(), Verdict::Backchannel);
        assert_eq!(c.backchannels, 1);
    }

    #[test]
    fn a_barge_in_and_speech_outside_the_bot_are_answered() {
        let mut c = Conversation::new(ConversationSpec::default());
        c.caller_started(ms(2000));
        c.barged_in();
        assert_eq!(c.caller_turn_ended(), Verdict::Answer);
        c.caller_started(None);
        assert_eq!(c.caller_turn_ended(), Verdict::Answer);
        assert_eq!(c.backchannels, 0);
    }

    #[test]
    fn an_answer_overlapping_only_the_end_of_the_question_is_answered() {
        let mut c = Conversation::new(ConversationSpec::default());
        c.caller_started(ms(250));
        assert_eq!(c.caller_turn_ended(), Verdict::Answer);
    }

    #[test]
    fn a_backchannel_followed_by_speech_after_the_bot_is_one_turn_answered() {
        let mut c = Conversation::new(ConversationSpec::default());
        c.caller_started(ms(3000));
        c.caller_started(None);
        assert_eq!(c.caller_turn_ended(), Verdict::Answer);
    }

    #[test]
    fn a_silent_caller_is_prompted_then_let_go() {
        let mut c = Conversation::new(ConversationSpec::default());
        c.quiet(at(0));
        assert_eq!(c.on_idle(at(7999)), None);
        assert_eq!(c.on_idle(at(8000)), Some(Idle::Prompt(1)));
        assert_eq!(
            c.idle_due(),
            None,
            "the clock waits for the prompt to be said"
        );
        c.busy();
        c.quiet(at(10_000));
        assert_eq!(c.on_idle(at(18_000)), Some(Idle::Prompt(2)));
        c.quiet(at(20_000));
        assert_eq!(c.on_idle(at(28_000)), Some(Idle::GiveUp));
    }

    #[test]
    fn speech_resets_the_prompts() {
        let mut c = Conversation::new(ConversationSpec::default());
        c.quiet(at(0));
        assert_eq!(c.on_idle(at(8000)), Some(Idle::Prompt(1)));
        c.caller_started(None);
        let _ = c.caller_turn_ended();
        c.quiet(at(9000));
        assert_eq!(c.on_idle(at(17_000)), Some(Idle::Prompt(1)));
    }

    #[test]
    fn zero_turns_prompting_off() {
        let spec = ConversationSpec {
            idle_prompt_ms: 0,
            ..ConversationSpec::default()
        };
        let mut c = Conversation::new(spec);
        c.quiet(at(0));
        assert_eq!(c.idle_due(), None);
        assert_eq!(c.on_idle(at(1_000_000)), None);
    }

    #[test]
    fn keys_end_at_hash_or_the_pause_and_the_hand_off_key_alone_hands_off() {
        let mut c = Conversation::new(ConversationSpec::default());
        for k in "1001".chars() {
            assert_eq!(c.key(k, at(0)), None);
        }
        assert_eq!(c.key('#', at(100)), Some(Keys::Entry("1001".into())));
        assert_eq!(c.key('4', at(200)), None);
        assert_eq!(c.keys_due(), Some(at(3200)));
        assert_eq!(c.on_keys_pause(at(3199)), None);
        assert_eq!(c.on_keys_pause(at(3200)), Some(Keys::Entry("4".into())));
        assert_eq!(c.key('0', at(4000)), None);
        assert_eq!(c.key('#', at(4100)), Some(Keys::HandOff));
        assert_eq!(c.key('#', at(4200)), None, "an empty entry is nothing");
    }

    #[test]
    fn a_long_entry_is_bounded() {
        let mut c = Conversation::new(ConversationSpec::default());
        for _ in 0..100 {
            c.key('9', at(0));
        }
        assert_eq!(c.key('#', at(1)), Some(Keys::Entry("9".repeat(MAX_KEYS))));
    }

    #[test]
    fn a_slow_tool_gets_one_filler_unless_the_model_spoke_or_someone_talks() {
        let mut c = Conversation::new(ConversationSpec::default());
        c.response_started();
        c.tool_called(at(0));
        assert_eq!(c.filler_due(), Some(at(700)));
        assert!(!c.on_filler(at(699), true));
        assert!(c.on_filler(at(700), true));
        assert!(!c.on_filler(at(800), true), "one filler per tool call");
        // A preamble in the tool call's response: no filler.
        c.response_started();
        c.model_spoke();
        c.tool_called(at(1000));
        assert_eq!(c.filler_due(), None);
        // The caller talking when it is due: skipped, not postponed.
        c.response_started();
        c.tool_called(at(2000));
        assert!(!c.on_filler(at(2700), false));
        assert_eq!(c.filler_due(), None);
        // The answer came first.
        c.response_started();
        c.tool_called(at(3000));
        c.response_started();
        assert_eq!(c.filler_due(), None);
    }

    #[test]
    fn settings_outside_their_range_are_refused() {
        let spec = ConversationSpec {
            idle_prompt_ms: 10,
            hand_off_key: "00".into(),
            keypad_pause_ms: 1,
            ..ConversationSpec::default()
        };
        let keys: Vec<&str> = spec.validate().iter().map(|i| i.key).collect();
        assert_eq!(keys, ["idle_prompt_ms", "keypad_pause_ms", "hand_off_key"]);
        assert!(ConversationSpec::default().validate().is_empty());
    }
}
