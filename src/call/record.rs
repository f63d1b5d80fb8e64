//! What the controller records about a call: final transcript lines, final intents, agent
//! actions and the latency ledger, read off the call's bus and handed to the write-behind
//! recorder (never waited on), and the call's end, from its report.

use crate::call::report::CallReport;
use crate::engine::bus::BusKind;
use crate::engine::frame::{Event, Speaker};
use crate::store::{Record, Recorder};

/// The call's record in progress: its id and the next sequence number of each kind.
pub(crate) struct CallLog {
    recorder: Recorder,
    id: String,
    call_sid: Option<String>,
    segments: i64,
    intents: i64,
    turns: i64,
    events: i64,
}

/// Most timeline events a call records (a stuck keypad or a flapping caller cannot grow its
/// record without bound).
const MAX_EVENTS: i64 = 1_000;

impl CallLog {
    /// A call's log, once its stream has started.
    pub(crate) fn new(recorder: Recorder, id: String, call_sid: Option<String>) -> CallLog {
        CallLog {
            recorder,
            id,
            call_sid,
            segments: 0,
            intents: 0,
            turns: 0,
            events: 0,
        }
    }

    /// The call's record id.
    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    /// Something on the call's timeline, `at` into the call.
    pub(crate) fn event(&mut self, kind: &'static str, at: std::time::Duration, detail: String) {
        if self.events >= MAX_EVENTS {
            return;
        }
        self.events += 1;
        self.recorder.record(Record::CallEvent {
            call_id: self.id.clone(),
            seq: self.events - 1,
            kind,
            pts_ms: i64::try_from(at.as_millis()).unwrap_or(i64::MAX),
            detail,
            at_ms: crate::store::now_ms(),
        });
    }

    /// Turns what the pipeline published into a record, if it is one worth keeping.
    pub(crate) fn on_bus(&mut self, kind: &BusKind) {
        let at_ms = crate::store::now_ms();
        let record = match kind {
            BusKind::Text(chunk) if chunk.is_final && !chunk.text.trim().is_empty() => {
                tracing::debug!(speaker = ?chunk.speaker, text = %chunk.text, "Transcript.");
                self.segments += 1;
                Record::Segment {
                    call_id: self.id.clone(),
                    seq: self.segments - 1,
                    speaker: match chunk.speaker {
                        Speaker::Caller => "caller",
                        Speaker::Bot => "bot",
                    },
                    text: chunk.text.clone(),
                    pts_ms: chunk.pts.as_millis() as i64,
                    at_ms,
                }
            }
            BusKind::Event(Event::IntentDetected {
                intent,
                confidence,
                entities,
                is_final: true,
                accepted,
                ..
            }) => {
                tracing::info!(
                    intent = intent.name(),
                    confidence = f64::from(*confidence),
                    accepted = *accepted,
                    "Intent."
                );
                self.intents += 1;
                Record::Intent {
                    call_id: self.id.clone(),
                    seq: self.intents - 1,
                    intent: intent.name().to_owned(),
                    confidence: f64::from(*confidence),
                    entities: serde_json::to_string(entities).unwrap_or_else(|_| "{}".into()),
                    accepted: *accepted,
                    at_ms,
                }
            }
            BusKind::Event(Event::ActionTaken {
                action,
                order,
                key,
                status,
                detail,
                recorded,
            }) => {
                if *recorded {
                    tracing::info!(action = %action, status = %status, order = order.as_deref().unwrap_or("-"), "Agent action (in the ledger).");
                    return;
                }
                tracing::info!(action = %action, status = %status, order = order.as_deref().unwrap_or("-"), "Agent action.");
                Record::Action {
                    call_id: self.id.clone(),
                    action: action.clone(),
                    order: order.clone(),
                    key: key.clone(),
                    status: status.clone(),
                    detail: detail.clone(),
                    at_ms,
                }
            }
            BusKind::Latency(turn) => {
                self.turns += 1;
                Record::Turn {
                    call_id: self.id.clone(),
                    seq: self.turns - 1,
                    model_ms: turn.model_ms,
                    engine_ms: turn.engine_ms,
                    v2v_sent_ms: turn.voice_to_voice_sent_ms,
                    v2v_played_ms: turn.voice_to_voice_played_ms,
                    at_ms,
                }
            }
            _ => return,
        };
        self.recorder.record(record);
    }

    /// The call's final record, from its report.
    pub(crate) fn end(self, report: &CallReport) {
        let mut v2v: Vec<f64> = report
            .turns
            .iter()
            .map(|t| {
                t.voice_to_voice_played_ms
                    .unwrap_or(t.voice_to_voice_sent_ms)
            })
            .collect();
        v2v.sort_by(f64::total_cmp);
        self.recorder.record(Record::CallEnded {
            id: self.id,
            call_sid: self.call_sid,
            ended_at_ms: crate::store::now_ms(),
            duration_ms: report.duration.as_millis() as i64,
            end_reason: report.end.label().to_owned(),
            turns: report.turns.len() as i64,
            barge_ins: report.barge_ins.len() as i64,
            v2v_p50_ms: v2v.get(v2v.len() / 2).map(|v| v.round() as i64),
            v2v_max_ms: v2v.last().map(|v| v.round() as i64),
            usage: report.usage,
            cost_usd: report.cost_usd,
        });
    }
}
