//! Entry points for the fuzz targets in `fuzz/` (`cargo fuzz run NAME`) and for the regression
//! test that replays every input kept in `fuzz/regressions/NAME/`. Each takes arbitrary bytes
//! and drives one parser of outside input the way the server does; the only failure is a
//! panic (or a sanitizer report).

use std::sync::{Arc, OnceLock};

use crate::engine::registry::CompileOptions;
use crate::intent::Classifier;

/// A fuzz target: arbitrary bytes in, a panic the only failure.
pub type Target = fn(&[u8]);

/// The fuzz targets, by name.
pub const TARGETS: &[(&str, Target)] = &[
    ("exotel_message", exotel_message),
    ("pipeline_toml", pipeline_toml),
    ("intent", intent),
    ("realtime_event", realtime_event),
];

fn text(data: &[u8]) -> Option<&str> {
    std::str::from_utf8(data).ok()
}

/// An Exotel AgentStream text frame: parsed, and its media payload decoded as the session does.
pub fn exotel_message(data: &[u8]) {
    let Some(text) = text(data) else {
        return;
    };
    let Ok(msg) = crate::transport::exotel::wire::Inbound::parse(text) else {
        return;
    };
    let _ = msg.stream_sid();
    if let Some(media) = msg.media.as_ref() {
        let mut buf = Vec::new();
        let _ = crate::transport::exotel::wire::decode_payload(&media.payload, &mut buf);
    }
}

/// A pipeline file: parsed and compiled against the built-in kinds at every Exotel rate.
pub fn pipeline_toml(data: &[u8]) {
    let Some(text) = text(data) else {
        return;
    };
    let Ok(spec) = crate::engine::spec::PipelineSpec::parse(text, "<fuzz>") else {
        return;
    };
    let registry = crate::call::registry();
    for rate in [None, Some(8000), Some(16000), Some(24000)] {
        let options = CompileOptions { source_rate: rate };
        if let Ok(graph) = crate::engine::graph::Graph::compile(&spec, &registry, &options) {
            let _ = graph.to_dot();
        }
    }
}

/// A caller utterance through the built-in classifier.
pub fn intent(data: &[u8]) {
    static CLASSIFIER: OnceLock<Option<Arc<Classifier>>> = OnceLock::new();
    let Some(text) = text(data) else {
        return;
    };
    if let Some(c) = CLASSIFIER.get_or_init(|| Classifier::builtin().ok()) {
        let p = c.classify(text);
        assert!(p.confidence.is_finite() && (0.0..=1.0).contains(&p.confidence));
    }
}

/// A Realtime server event, read as the stage reads it: the type peeked, an audio delta
/// parsed with its payload borrowed and decoded (μ-law and PCM16), anything else as a
/// `ServerEvent`.
pub fn realtime_event(data: &[u8]) {
    use crate::stages::realtime::protocol::{AudioDelta, Peek, ServerEvent, decode_audio};
    let Some(text) = text(data) else {
        return;
    };
    let Ok(peek) = serde_json::from_str::<Peek<'_>>(text) else {
        return;
    };
    if peek.kind == "response.output_audio.delta" {
        if let Ok(delta) = serde_json::from_str::<AudioDelta<'_>>(text) {
            let (mut scratch, mut pcm) = (Vec::new(), Vec::new());
            for pcmu in [false, true] {
                let _ = decode_audio(&delta.delta, pcmu, &mut scratch, &mut pcm);
            }
        }
        return;
    }
    if let Ok(ServerEvent::Error { error }) = serde_json::from_str::<ServerEvent>(text) {
        let _ = (error.is_fatal(), error.ends_socket());
    }
}
