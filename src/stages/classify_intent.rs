//! `classify_intent`: the caller's transcript → `IntentDetected` events (Hindi, Hinglish,
//! English; see [`crate::intent`]).
//!
//! Every final caller segment is classified; with `partials = true`, partial hypotheses are too,
//! and reported once they are confident (acting early is then the consumer's choice: the
//! `agent` stage only acts on finals). Bot segments are ignored. Each detection goes out on the
//! `out` port and on the call's bus (for the store and metrics). Classification is a few
//! microseconds, so the stage is synchronous.

use std::path::PathBuf;
use std::sync::Arc;

use serde::Deserialize;

use crate::engine::format::{Caps, Format};
use crate::engine::frame::{Event, Frame, Speaker, TextChunk};
use crate::intent::{Classifier, Intent};
use crate::engine::bus::BusKind;
use crate::engine::registry::{CompileOptions, Invalid, NegotiateError, Negotiated, Role, StageKind};
use crate::engine::stage::{BuildCtx, BuildError, Output, Runnable, Stage, StageError};

fn d_min_confidence() -> f32 {
    0.6
}

/// Parameters of `classify_intent`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifyIntentSpec {
    /// Detections below this confidence are reported with `accepted = false` (never acted on).
    #[serde(default = "d_min_confidence")]
    pub min_confidence: f32,
    /// Also classify partial transcripts (reported once accepted and changed).
    #[serde(default)]
    pub partials: bool,
    /// A directory with `lexicon.toml`, `numbers.toml`, `entities.toml` to use instead of the
    /// built-in ones (relative to the working directory).
    pub data: Option<PathBuf>,
}

/// Classifies caller transcripts.
pub struct ClassifyIntent {
    classifier: Arc<Classifier>,
    min_confidence: f32,
    partials: bool,
    /// The intent last reported from partials of the current utterance.
    partial_reported: Option<Intent>,
}

impl StageKind for ClassifyIntent {
    const NAME: &'static str = "classify_intent";
    const SUMMARY: &'static str =
        "Caller transcripts → IntentDetected (intent, confidence, entities, alternatives).";
    const EXAMPLE: &'static str = "min_confidence = 0.6";
    const ROLE: Role = Role::Transform;
    type Spec = ClassifyIntentSpec;

    fn input_caps(_: &ClassifyIntentSpec) -> Caps {
        Caps::Text
    }

    fn validate(spec: &ClassifyIntentSpec) -> Vec<Invalid> {
        if (0.0..=1.0).contains(&spec.min_confidence) {
            Vec::new()
        } else {
            vec![Invalid {
                key: "min_confidence",
                message: "between 0 and 1".into(),
            }]
        }
    }

    fn negotiate(
        _: &ClassifyIntentSpec,
        _: &[Format],
        _: &CompileOptions,
    ) -> Result<Negotiated, NegotiateError> {
        Ok(Negotiated::out(Format::Events))
    }

    fn build(spec: &ClassifyIntentSpec, ctx: &BuildCtx<'_>) -> Result<Runnable, BuildError> {
        let classifier = match &spec.data {
            Some(dir) => Classifier::from_dir(dir).map(Arc::new),
            None => Classifier::builtin(),
        }
        .map_err(|e| ctx.error(e))?;
        Ok(Runnable::Inline(Box::new(ClassifyIntent {
            classifier,
            min_confidence: spec.min_confidence,
            partials: spec.partials,
            partial_reported: None,
        })))
    }
}

impl ClassifyIntent {
    fn classify(&mut self, t: &TextChunk, out: &mut Output<'_>) -> Result<(), StageError> {
        if t.text.trim().is_empty() {
            return Ok(());
        }
        let p = self.classifier.classify(&t.text);
        let accepted = p.confidence >= self.min_confidence && p.intent != Intent::Unknown;
        if !t.is_final {
            if !accepted || self.partial_reported == Some(p.intent) {
                return Ok(());
            }
            self.partial_reported = Some(p.intent);
        } else {
            self.partial_reported = None;
        }
        let event = Event::IntentDetected {
            intent: p.intent,
            confidence: p.confidence,
            entities: p.entities,
            alternatives: p.alternatives,
            text: t.text.clone(),
            is_final: t.is_final,
            accepted,
            turn: t.turn,
        };
        out.publish(BusKind::Event(event.clone()));
        out.push(Frame::Event(&event))
    }
}

impl Stage for ClassifyIntent {
    fn process(&mut self, frame: Frame<'_>, out: &mut Output<'_>) -> Result<(), StageError> {
        match frame {
            Frame::Text(t) if t.speaker == Speaker::Caller && (t.is_final || self.partials) => {
                self.classify(t, out)
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::testing::Harness;

    fn said(text: &str, speaker: Speaker, is_final: bool) -> TextChunk {
        TextChunk {
            pts: Duration::ZERO,
            text: text.into(),
            is_final,
            speaker,
            turn: None,
        }
    }

    fn detections(h: &Harness) -> Vec<(Intent, bool, bool, Option<String>)> {
        h.events()
            .into_iter()
            .filter_map(|e| match e {
                Event::IntentDetected {
                    intent,
                    accepted,
                    is_final,
                    entities,
                    ..
                } => Some((intent, accepted, is_final, entities.order_id)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn final_caller_segments_become_intents_and_the_bot_is_ignored() {
        let mut h = Harness::new("classify_intent", "", &[Format::Text]);
        let t = said("order 1001 cancel kar do", Speaker::Caller, true);
        h.push(Frame::Text(&t)).unwrap();
        let t = said("Aapka order cancel ho gaya", Speaker::Bot, true);
        h.push(Frame::Text(&t)).unwrap();
        let t = said("cancel", Speaker::Caller, false);
        h.push(Frame::Text(&t)).unwrap();
        let t = said("umm wo", Speaker::Caller, true);
        h.push(Frame::Text(&t)).unwrap();
        assert_eq!(
            detections(&h),
            [
                (Intent::CancelOrder, true, true, Some("1001".into())),
                (Intent::Unknown, false, true, None),
            ]
        );
    }

    #[test]
    fn an_intent_names_the_caller_turn_its_words_are_of() {
        let mut h = Harness::new("classify_intent", "", &[Format::Text]);
        let t = TextChunk {
            turn: Some(3),
            ..said("haan ji cancel kar do", Speaker::Caller, true)
        };
        h.push(Frame::Text(&t)).unwrap();
        let turns: Vec<Option<u64>> = h
            .events()
            .into_iter()
            .filter_map(|e| match e {
                Event::IntentDetected { turn, .. } => Some(turn),
                _ => None,
            })
            .collect();
        assert_eq!(turns, [Some(3)]);
    }

    #[test]
    fn confident_partials_are_reported_once_each() {
        let mut h = Harness::new("classify_intent", "partials = true", &[Format::Text]);
        for (text, fin) in [
            ("mera", false),
            ("mera order kahan", false),
            ("mera order kahan hai", false),
            ("mera order kahan hai bhai", true),
        ] {
            let t = said(text, Speaker::Caller, fin);
            h.push(Frame::Text(&t)).unwrap();
        }
        assert_eq!(
            detections(&h),
            [
                (Intent::OrderStatus, true, false, None),
                (Intent::OrderStatus, true, true, None),
            ]
        );
    }

    #[test]
    fn a_missing_data_directory_fails_the_build_with_its_path() {
        let spec: ClassifyIntentSpec = toml::from_str("data = \"/nonexistent/intent\"").unwrap();
        let ctx = BuildCtx {
            stage: "intent",
            inputs: &[Format::Text],
            outputs: &[],
            services: &crate::engine::stage::Services::new(),
            tools: &[],
            call: &crate::engine::stage::CallInfo::default(),
        };
        let err = ClassifyIntent::build(&spec, &ctx).err().unwrap();
        assert!(err.to_string().contains("/nonexistent/intent"), "{err}");
    }
}
