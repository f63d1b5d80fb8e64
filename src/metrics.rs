//! The server's counters, per app (so tests running several apps in one process stay apart),
//! rendered at `GET /metrics` in the Prometheus text format by `prometheus-client`.
//! Labels are low-cardinality: outcomes, reasons, kinds and ring names fixed by the pipeline —
//! never a call id.

use std::sync::atomic::AtomicU64;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric as _};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// One label: `[("outcome", "completed")]`.
pub type Label = [(&'static str, &'static str); 1];
/// One label with a value known only at run time (a ring's name).
pub type DynLabel = [(&'static str, String); 1];

/// Agent runs ended, by agent and result: the run's status (`done`, `needs_confirmation`,
/// `failed`, …), or `timeout` / `panicked` for a run that could not answer itself and was
/// answered for. Handed to the `agent` stage through the pipeline's services.
#[derive(Clone, Default, Debug)]
pub struct AgentRuns(pub Family<[(&'static str, &'static str); 2], Counter>);

impl AgentRuns {
    /// Counts one run of `agent` that ended with `result`.
    pub fn count(&self, agent: &'static str, result: &'static str) {
        self.0
            .get_or_create(&[("agent", agent), ("result", result)])
            .inc();
    }

    /// Runs of `agent` that ended with `result` so far.
    pub fn get(&self, agent: &'static str, result: &'static str) -> u64 {
        self.0
            .get(&[("agent", agent), ("result", result)])
            .map_or(0, |c| c.get())
    }
}

/// Every metric the server exports.
pub struct Metrics {
    registry: Registry,
    /// Calls streaming now.
    pub calls_active: Gauge,
    /// Calls ended, by outcome ([`crate::call::CallEnd::label`]: `hangup`, `idle_timeout`,
    /// `max_duration`, `shutdown`, `socket_lost`, `failed`, `start_failed`, …).
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
    /// Caller speech over the bot that was neither a barge-in nor answered.
    pub backchannels: Counter,
    /// Signals a call's controller left unread past its lane's capacity (should stay 0).
    pub signals_dropped: Counter,
    /// Telemetry events a call's record missed because it fell behind the bus (should stay 0).
    pub record_lagged: Counter,
    /// Seconds from the VAD's decision to `clear` written to the socket.
    pub barge_in_reaction_seconds: Histogram,
    /// Seconds of audio dropped by full rings, by ring (`from -> to`).
    pub audio_dropped_seconds: Family<DynLabel, Counter<f64, AtomicU64>>,
    /// Bot chunks sent after Exotel's queue had run dry mid-reply: gaps the caller heard.
    pub playback_underruns: Counter,
    /// Agent runs ended, by agent and result.
    pub agent_runs: AgentRuns,
    /// Model tokens used, by kind (`text_in`, `text_in_cached`, `audio_in`, `audio_in_cached`,
    /// `text_out`, `audio_out`).
    pub model_tokens: Family<Label, Counter>,
    /// What those tokens cost, in dollars at the price table's rates.
    pub model_cost_usd: Counter<f64, AtomicU64>,
    /// Per turn: first bot audio from the model → first chunk written to Exotel (Caly's share).
    pub turn_engine_seconds: Histogram,
    /// Per turn: caller stopped → first bot audio from the model (the model's share).
    pub turn_model_seconds: Histogram,
    /// Per turn: caller stopped → first bot audio written to Exotel.
    pub voice_to_voice_sent_seconds: Histogram,
    /// Per turn: caller stopped → first bot audio confirmed played.
    pub voice_to_voice_played_seconds: Histogram,
    /// Frames handed to each stage, by stage name (fixed by the pipeline file).
    pub stage_frames: Family<DynLabel, Counter>,
    /// Per call and stage: mean seconds the stage spent on a frame (itself, not downstream).
    pub stage_frame_seconds: Family<DynLabel, Histogram, fn() -> Histogram>,
    /// Realtime sessions re-established after a drop, a stall or for renewal.
    pub realtime_reconnects: Counter,
    /// Errors the Realtime model reported, by kind (`fatal` ends the call, `recoverable`).
    pub realtime_errors: Family<Label, Counter>,
    /// Seconds one write-behind batch took to commit.
    pub store_flush_seconds: Histogram,
    /// Exotel webhooks, by kind and outcome (`applied`, `duplicate`, `refused`, `bad`,
    /// `unavailable`).
    pub webhooks: Family<[(&'static str, &'static str); 2], Counter>,
    /// HTTP connections open now (WebSockets included).
    pub http_connections: Gauge,
    /// HTTP connections refused at accept because the cap was reached.
    pub http_connections_refused: Counter,
    /// HTTP connections closed for taking too long to send a request's headers (or for
    /// sitting idle between requests), or a request for taking too long as a whole.
    pub http_timeouts: Family<Label, Counter>,
}

/// `VmRSS` of this process in bytes (Linux); `None` elsewhere.
pub fn resident_bytes() -> Option<i64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: i64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn stage_histogram() -> Histogram {
    // 0.5 µs … ~4 ms per frame.
    Histogram::new(exponential_buckets(0.000_000_5, 2.0, 14))
}

/// Values that live in other parts of the server (the Shopify client, the recorder, the
/// database pool), read at each scrape.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// The Shopify client, if configured.
    pub shopify: Option<std::sync::Arc<crate::commerce::shop::Shopify>>,
    /// The call-records queue.
    pub recorder: Option<crate::store::Recorder>,
    /// The call-records database.
    pub db: Option<crate::store::Store>,
}

impl Collector for Sources {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        use std::sync::atomic::Ordering::Relaxed;
        fn counter(
            encoder: &mut DescriptorEncoder,
            name: &str,
            help: &str,
            value: u64,
        ) -> Result<(), std::fmt::Error> {
            let metric = ConstCounter::new(value);
            metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
        }
        fn gauge(
            encoder: &mut DescriptorEncoder,
            name: &str,
            help: &str,
            value: i64,
        ) -> Result<(), std::fmt::Error> {
            let metric = ConstGauge::new(value);
            metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
        }
        if let Some(shop) = &self.shopify {
            let s = &shop.stats;
            let e = &mut encoder;
            counter(
                e,
                "shopify_requests",
                "HTTP requests sent to Shopify",
                s.requests.load(Relaxed),
            )?;
            counter(
                e,
                "shopify_retries",
                "Shopify requests retried",
                s.retries.load(Relaxed),
            )?;
            counter(
                e,
                "shopify_throttled",
                "Times Shopify throttled (THROTTLED or 429)",
                s.throttled.load(Relaxed),
            )?;
            counter(
                e,
                "shopify_short_circuited",
                "Operations refused by the open circuit breaker",
                s.short_circuited.load(Relaxed),
            )?;
            counter(
                e,
                "shopify_failed",
                "Shopify operations that ended in an error",
                s.failed.load(Relaxed),
            )?;
        }
        if let Some(rec) = &self.recorder {
            let s = rec.stats();
            let e = &mut encoder;
            gauge(
                e,
                "store_queue_depth",
                "Call records waiting to be written",
                rec.queued() as i64,
            )?;
            counter(
                e,
                "store_records_written",
                "Call records written",
                s.written.load(Relaxed),
            )?;
            counter(
                e,
                "store_records_dropped",
                "Call records dropped: the queue was full",
                s.dropped.load(Relaxed),
            )?;
            counter(
                e,
                "store_write_failures",
                "Batches that failed to write (and were retried)",
                s.failures.load(Relaxed),
            )?;
        }
        let e = &mut encoder;
        if let Some(rss) = resident_bytes() {
            gauge(
                e,
                "process_resident_memory_bytes",
                "Resident memory of the process",
                rss,
            )?;
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let tasks = rt.metrics().num_alive_tasks() as i64;
            gauge(
                e,
                "runtime_alive_tasks",
                "Tasks alive in the server's runtime",
                tasks,
            )?;
        }
        if let Some(db) = &self.db {
            let (size, idle) = db.pool_usage();
            let e = &mut encoder;
            gauge(
                e,
                "db_pool_connections",
                "Database connections open",
                i64::from(size),
            )?;
            gauge(
                e,
                "db_pool_idle",
                "Database connections open and idle",
                idle as i64,
            )?;
        }
        Ok(())
    }
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
        let backchannels = Counter::default();
        registry.register(
            "backchannels",
            "Caller speech over the bot that was neither a barge-in nor answered",
            backchannels.clone(),
        );
        let signals_dropped = Counter::default();
        registry.register(
            "signals_dropped",
            "Signals a call's controller left unread past its lane's capacity",
            signals_dropped.clone(),
        );
        let record_lagged = Counter::default();
        registry.register(
            "record_lagged",
            "Telemetry events a call's record missed by falling behind",
            record_lagged.clone(),
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
        let model_tokens = Family::<Label, Counter>::default();
        registry.register(
            "model_tokens",
            "Realtime model tokens used, by kind (cached input counted in its kind too)",
            model_tokens.clone(),
        );
        let model_cost_usd = Counter::<f64, AtomicU64>::default();
        registry.register(
            "model_cost_usd",
            "What the model's tokens cost, in US dollars at the price table's rates",
            model_cost_usd.clone(),
        );
        let agent_runs = AgentRuns::default();
        registry.register(
            "agent_runs",
            "Agent runs ended, by agent and result (timeout and panicked: answered for them)",
            agent_runs.0.clone(),
        );
        let turn_engine_seconds = Histogram::new(ENGINE_BUCKETS.iter().copied());
        registry.register(
            "turn_engine_seconds",
            "Per turn: first bot audio from the model to its first chunk written to Exotel (or ready, held only behind an earlier reply still playing)",
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
        let stage_frames = Family::<DynLabel, Counter>::default();
        registry.register(
            "stage_frames",
            "Frames handed to each stage",
            stage_frames.clone(),
        );
        let stage_frame_seconds =
            Family::<DynLabel, Histogram, fn() -> Histogram>::new_with_constructor(stage_histogram);
        registry.register(
            "stage_frame_seconds",
            "Per call and stage: mean time the stage spent on a frame",
            stage_frame_seconds.clone(),
        );
        let realtime_reconnects = Counter::default();
        registry.register(
            "realtime_reconnects",
            "Realtime sessions re-established",
            realtime_reconnects.clone(),
        );
        let realtime_errors = Family::<Label, Counter>::default();
        registry.register(
            "realtime_errors",
            "Errors reported by the Realtime model, by kind",
            realtime_errors.clone(),
        );
        // 0.1 ms … ~3 s.
        let store_flush_seconds = Histogram::new(exponential_buckets(0.0001, 2.0, 16));
        registry.register(
            "store_flush_seconds",
            "Time to commit one batch of call records",
            store_flush_seconds.clone(),
        );
        let webhooks = Family::<[(&'static str, &'static str); 2], Counter>::default();
        registry.register(
            "webhooks",
            "Exotel webhooks by kind and outcome",
            webhooks.clone(),
        );
        let http_connections = Gauge::default();
        registry.register(
            "http_connections",
            "HTTP connections open now, WebSockets included",
            http_connections.clone(),
        );
        let http_connections_refused = Counter::default();
        registry.register(
            "http_connections_refused",
            "HTTP connections refused at the connection cap",
            http_connections_refused.clone(),
        );
        let http_timeouts = Family::<Label, Counter>::default();
        registry.register(
            "http_timeouts",
            "HTTP connections or requests ended by a time limit, by limit (`headers`, `request`)",
            http_timeouts.clone(),
        );
        Metrics {
            registry,
            http_connections,
            http_connections_refused,
            http_timeouts,
            stage_frames,
            stage_frame_seconds,
            realtime_reconnects,
            realtime_errors,
            store_flush_seconds,
            webhooks,
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
            backchannels,
            signals_dropped,
            record_lagged,
            barge_in_reaction_seconds,
            audio_dropped_seconds,
            playback_underruns,
            agent_runs,
            model_tokens,
            model_cost_usd,
        }
    }

    /// Counts a response's tokens by kind.
    pub fn count_tokens(&self, usage: &crate::engine::frame::TokenUse) {
        for (kind, n) in usage.kinds() {
            if n > 0 {
                self.model_tokens.get_or_create(&[("kind", kind)]).inc_by(n);
            }
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

    /// Adds the values read at each scrape from other parts of the server.
    pub fn register_sources(&mut self, sources: Sources) {
        self.registry.register_collector(Box::new(sources));
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

#[cfg(test)]
mod sources_tests {
    use super::*;

    #[test]
    fn shopify_and_store_values_are_read_at_each_scrape() {
        let shop = crate::commerce::shop::Shopify::new(crate::commerce::shop::ShopifyConfig::new(
            "http://127.0.0.1:9/graphql",
            "token",
        ))
        .unwrap();
        let mut m = Metrics::new();
        m.register_sources(Sources {
            shopify: Some(std::sync::Arc::clone(&shop)),
            ..Default::default()
        });
        assert!(m.render().contains("caly_shopify_throttled_total 0"));
        shop.stats
            .throttled
            .fetch_add(3, std::sync::atomic::Ordering::Relaxed);
        let text = m.render();
        assert!(text.contains("caly_shopify_throttled_total 3"), "{text}");
        assert!(
            text.contains("# TYPE caly_shopify_requests counter"),
            "{text}"
        );
        assert!(
            !text.contains("caly_store_queue_depth"),
            "no recorder, no store metrics"
        );
    }
}
