//! The turn latency ledger: when the caller stopped, when the model's audio came, when its
//! first chunk went to the caller (and under which mark), when that mark came back. Sans-IO:
//! the controller feeds it instants and gets a [`TurnLatency`] when a turn closes.

use std::time::Duration;

use tokio::time::Instant;

use crate::engine::bus::TurnLatency;

/// The turn being timed.
#[derive(Debug, Default)]
pub(crate) struct Ledger {
    /// Speech was heard since the last stop: the next stop opens a turn.
    armed: bool,
    caller_stopped: Option<Instant>,
    model_audio: Option<Instant>,
    /// Bot audio has reached the playout queue since the model's audio arrived.
    queued: bool,
    /// When the turn's first chunk was formed and could have gone, had no earlier reply still
    /// been playing.
    ready: Option<Instant>,
    sent: Option<(Instant, String)>,
}

impl Ledger {
    /// A new ledger with no turn open.
    pub(crate) fn new() -> Ledger {
        Ledger::default()
    }

    /// Caly's VAD or the model heard the caller start speaking.
    pub(crate) fn speech_started(&mut self) {
        self.armed = true;
    }

    /// Caly's VAD or the model heard the caller stop at `at`. Both report the same stop: the
    /// first one after some speech opens the turn (closing the previous one, unplayed), the
    /// other is ignored. Returns the closed turn, if it got as far as sending audio.
    pub(crate) fn speech_stopped(&mut self, at: Instant) -> Option<TurnLatency> {
        if !self.armed {
            return None;
        }
        self.armed = false;
        let closed = self.close(None);
        self.caller_stopped = Some(at);
        closed
    }

    /// The model's first audio of a response arrived at `at`.
    pub(crate) fn model_audio(&mut self, at: Instant) {
        if self.caller_stopped.is_some() && self.model_audio.is_none() {
            self.model_audio = Some(at);
        }
    }

    /// The reply's first chunk is formed at `at` and goes as soon as the pacer lets it: the
    /// engine's share of the turn ends here. Whatever still plays before it (the tail of a
    /// reply the caller answered over) is the conversation's order, not processing, and counts
    /// in voice-to-voice only.
    pub(crate) fn ready(&mut self, at: Instant) {
        if self.awaits_ready() {
            self.ready = Some(at);
        }
    }

    /// The turn's audio is queued and neither formed into a chunk nor sent yet: the only time
    /// [`Self::ready`] has anything to record (the pacer need not be asked otherwise).
    pub(crate) fn awaits_ready(&self) -> bool {
        self.queued && self.ready.is_none() && self.sent.is_none()
    }

    /// Bot audio reached the playout queue: once the model's audio has arrived, this is the
    /// turn's (a chunk formed before it belongs to an earlier reply).
    pub(crate) fn audio_queued(&mut self) {
        if self.model_audio.is_some() {
            self.queued = true;
        }
    }

    /// A chunk of bot audio went out at `at` under `mark`: the first one after the model's
    /// audio is the turn's.
    pub(crate) fn sent(&mut self, at: Instant, mark: &str) {
        if self.model_audio.is_some() && self.sent.is_none() {
            self.sent = Some((at, mark.to_owned()));
        }
    }

    /// The provider echoed `mark` at `at`: if it is the turn's first chunk, the turn is
    /// complete.
    pub(crate) fn mark(&mut self, mark: &str, at: Instant) -> Option<TurnLatency> {
        if self.sent.as_ref().is_some_and(|(_, m)| m == mark) {
            self.close(Some(at))
        } else {
            None
        }
    }

    /// Closes the turn being timed, if it got as far as sending audio.
    pub(crate) fn close(&mut self, played: Option<Instant>) -> Option<TurnLatency> {
        let stopped = self.caller_stopped.take();
        let model = self.model_audio.take();
        let ready = self.ready.take();
        self.queued = false;
        let sent = self.sent.take();
        let (Some(stopped), Some(model), Some((sent, _))) = (stopped, model, sent) else {
            return None;
        };
        let ready = ready.map_or(sent, |r| r.min(sent));
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        Some(TurnLatency {
            model_ms: ms(model.saturating_duration_since(stopped)),
            engine_ms: ms(ready.saturating_duration_since(model)),
            voice_to_voice_sent_ms: ms(sent.saturating_duration_since(stopped)),
            voice_to_voice_played_ms: played.map(|p| ms(p.saturating_duration_since(stopped))),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    #[test]
    fn a_turn_is_timed_from_the_first_stop_to_the_played_mark() {
        let t0 = Instant::now();
        let mut l = Ledger::new();
        l.speech_started();
        assert_eq!(l.speech_stopped(at(t0, 1000)), None);
        // The model's own VAD reports the same stop later: ignored.
        assert_eq!(l.speech_stopped(at(t0, 1100)), None);
        l.model_audio(at(t0, 1500));
        l.sent(at(t0, 1502), "caly-1");
        l.sent(at(t0, 1700), "caly-2");
        assert_eq!(l.mark("caly-2", at(t0, 1800)), None, "not the turn's mark");
        let turn = l.mark("caly-1", at(t0, 1900)).expect("the turn closes");
        assert_eq!(turn.model_ms, 500.0);
        assert_eq!(turn.engine_ms, 2.0);
        assert_eq!(turn.voice_to_voice_sent_ms, 502.0);
        assert_eq!(turn.voice_to_voice_played_ms, Some(900.0));
        assert_eq!(l.close(None), None, "nothing left open");
    }

    #[test]
    fn a_turn_without_bot_audio_leaves_no_entry_and_the_next_speech_opens_a_new_one() {
        let t0 = Instant::now();
        let mut l = Ledger::new();
        // Model audio before any caller speech is a greeting, not a turn.
        l.model_audio(at(t0, 10));
        l.sent(at(t0, 12), "caly-1");
        assert_eq!(l.mark("caly-1", at(t0, 300)), None);
        l.speech_started();
        l.speech_stopped(at(t0, 1000));
        l.speech_started();
        // A second utterance before the bot answered: the first turn had no audio.
        assert_eq!(l.speech_stopped(at(t0, 3000)), None);
        l.model_audio(at(t0, 3400));
        l.sent(at(t0, 3401), "caly-2");
        // The call ends before the mark comes back: sent, not played.
        let turn = l.close(None).expect("sent counts");
        assert_eq!(turn.model_ms, 400.0);
        assert_eq!(turn.voice_to_voice_played_ms, None);
    }

    #[test]
    fn time_held_behind_an_earlier_reply_is_not_the_engine_s() {
        let t0 = Instant::now();
        let mut l = Ledger::new();
        l.speech_started();
        l.speech_stopped(at(t0, 0));
        l.model_audio(at(t0, 500));
        // A chunk of the earlier reply is formed before the turn's audio is queued: not it.
        assert!(!l.awaits_ready());
        l.ready(at(t0, 500));
        l.audio_queued();
        assert!(l.awaits_ready());
        l.ready(at(t0, 501));
        assert!(!l.awaits_ready(), "the first ready point stands");
        // The tail of the reply the caller answered over plays until 700.
        l.sent(at(t0, 700), "caly-9");
        let turn = l.close(None).expect("sent");
        assert_eq!(turn.engine_ms, 1.0);
        assert_eq!(turn.voice_to_voice_sent_ms, 700.0);
        // Without a ready point, the engine's share runs to the chunk sent.
        l.speech_started();
        l.speech_stopped(at(t0, 1000));
        l.model_audio(at(t0, 1400));
        l.sent(at(t0, 1403), "caly-10");
        assert_eq!(l.close(None).map(|t| t.engine_ms), Some(3.0));
    }

    #[test]
    fn a_new_stop_closes_the_unplayed_turn_before_it() {
        let t0 = Instant::now();
        let mut l = Ledger::new();
        l.speech_started();
        l.speech_stopped(at(t0, 0));
        l.model_audio(at(t0, 600));
        l.sent(at(t0, 601), "caly-1");
        l.speech_started();
        let closed = l
            .speech_stopped(at(t0, 2000))
            .expect("the answered turn closes");
        assert_eq!(closed.voice_to_voice_sent_ms, 601.0);
        assert_eq!(closed.voice_to_voice_played_ms, None);
    }
}
