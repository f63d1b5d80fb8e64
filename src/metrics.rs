//! The server's counters, per app (so tests running several apps in one process stay apart),
//! rendered at `GET /metrics` in the Prometheus text format by `prometheus-client`.
//! Labels are low-cardinality: outcomes, reasons, kinds and ring names fixed by the pipeline —
//! never a call id.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// One label: `[("outcome", "completed")]`.
pub type Label = [(&'static str, &'static str); 1];
/// One label with a value known only at run time (a ring's name).
pub type DynLabel = [(&'static str, String); 1];

/// Every metric the server exports.
pub struct Metrics {
    registry: Registry,
    /// Calls streaming now.
    pub calls_active: Gauge,
    /// Calls ended, by outcome (`completed`, `hangup`, `idle_timeout`, `max_duration`,
    /// `shutdown`, `socket_lost`, `failed`).
    pub calls_ended: Family<Label, Counter>,
    /// Streams refused before they started, by reason (`at_capacity`, `draining`,
    /// `unauthorized`, `bad_rate`).
    pub calls_refused: Family<Label, Counter>,
    /// Inbound messages skipped, by kind.
    pub bad_input: Family<Label, Counter>,
    /// Inbound `media` messages accepted.
    pub media_in: Counter,
    /// Outbound `media` chunks sent.
    pub media_out: Counter,
    /// Barge-ins (a `clear` sent because the caller spoke over the bot).
    pub barge_ins: Counter,
    /// Seconds from the VAD's decision to `clear` written to the socket.
    pub barge_in_reaction_seconds: Histogram,
    /// Seconds of audio dropped by full rings, by ring (`from -> to`).
    pub audio_dropped_seconds: Family<DynLabel, Counter<f64, AtomicU64>>,
    /// Bot chunks sent after Exotel's queue had run dry mid-reply: gaps the caller heard.
    pub playback_underruns: Counter,
    /// Per turn: first bot audio from the model → first chunk written to Exotel (Caly's share).
    pub turn_engine_seconds: Histogram,
    /// Per turn: caller stopped → first bot audio from the model (the model's share).
    pub turn_model_seconds: Histogram,
    /// Per turn: caller stopped → first bot audio written to Exotel.
    pub voice_to_voice_sent_seconds: Histogram,
    /// Per turn: caller stopped → first bot audio confirmed played.
    pub voice_to_voice_played_seconds: Histogram,
}

/// Bucket bounds for Caly's own share of a turn: fine around the 5 ms budget.
pub const ENGINE_BUCKETS: &[f64] = &[
    0.00025, 0.0005, 0.001, 0.002, 0.003, 0.004, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0,
];
/// Bucket bounds for whole-turn latencies (0.1 s … 10 s).
pub const TURN_BUCKETS: &[f64] = &[
    0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 5.0, 10.0,
];

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Registers everything.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("caly");
        let calls_active = Gauge::default();
        registry.register("calls_active", "Calls streaming now", calls_active.clone());
        let calls_ended = Family::<Label, Counter>::default();
        registry.register(
            "calls_ended",
            "Calls ended, by outcome",
            calls_ended.clone(),
        );
        let calls_refused = Family::<Label, Counter>::default();
        registry.register(
            "calls_refused",
            "Streams refused before they started, by reason",
            calls_refused.clone(),
        );
        let bad_input = Family::<Label, Counter>::default();
        registry.register(
            "bad_input",
            "Inbound messages skipped, by kind",
            bad_input.clone(),
        );
        let media_in = Counter::default();
        registry.register(
            "media_in",
            "Inbound media messages accepted",
            media_in.clone(),
        );
        let media_out = Counter::default();
        registry.register("media_out", "Outbound media chunks sent", media_out.clone());
        let barge_ins = Counter::default();
        registry.register(
            "barge_ins",
            "Barge-ins: clear sent over the bot",
            barge_ins.clone(),
        );
        // 0.1 ms … ~0.8 s.
        let barge_in_reaction_seconds = Histogram::new(exponential_buckets(0.0001, 2.0, 14));
        registry.register(
            "barge_in_reaction_seconds",
            "From the VAD's decision to clear written",
            barge_in_reaction_seconds.clone(),
        );
        let audio_dropped_seconds = Family::<DynLabel, Counter<f64, AtomicU64>>::default();
        registry.register(
            "audio_dropped_seconds",
            "Seconds of audio dropped by full rings",
            audio_dropped_seconds.clone(),
        );
        let playback_underruns = Counter::default();
        registry.register(
            "playback_underruns",
            "Bot chunks sent after the caller's playback ran dry mid-reply",
            playback_underruns.clone(),
        );
        let turn_engine_seconds = Histogram::new(ENGINE_BUCKETS.iter().copied());
        registry.register(
            "turn_engine_seconds",
            "Per turn: first bot audio from the model to its first chunk written to Exotel",
            turn_engine_seconds.clone(),
        );
        let turn_model_seconds = Histogram::new(TURN_BUCKETS.iter().copied());
        registry.register(
            "turn_model_seconds",
            "Per turn: caller stopped to first bot audio from the model",
            turn_model_seconds.clone(),
        );
        let voice_to_voice_sent_seconds = Histogram::new(TURN_BUCKETS.iter().copied());
        registry.register(
            "voice_to_voice_sent_seconds",
            "Per turn: caller stopped to first bot audio written to Exotel",
            voice_to_voice_sent_seconds.clone(),
        );
        let voice_to_voice_played_seconds = Histogram::new(TURN_BUCKETS.iter().copied());
        registry.register(
            "voice_to_voice_played_seconds",
            "Per turn: caller stopped to first bot audio confirmed played",
            voice_to_voice_played_seconds.clone(),
        );
        Metrics {
            registry,
            turn_engine_seconds,
            turn_model_seconds,
            voice_to_voice_sent_seconds,
            voice_to_voice_played_seconds,
            calls_active,
            calls_ended,
            calls_refused,
            bad_input,
            media_in,
            media_out,
            barge_ins,
            barge_in_reaction_seconds,
            audio_dropped_seconds,
            playback_underruns,
        }
    }

    /// A counter of a family by its one label value.
    pub fn count(family: &Family<Label, Counter>, key: &'static str, value: &'static str) {
        family.get_or_create(&[(key, value)]).inc();
    }

    /// The value of one labelled counter (0 if never touched).
    pub fn get(family: &Family<Label, Counter>, key: &'static str, value: &'static str) -> u64 {
        family.get(&[(key, value)]).map_or(0, |c| c.get())
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
