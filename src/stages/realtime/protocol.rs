//! OpenAI Realtime (GA) wire messages over WebSocket, one type per message.
//!
//! GA only: `session.type = "realtime"`, `audio.input` / `audio.output`, the
//! `response.output_audio.*` names. Nothing from the retired beta interface.
//! Facts: PROTOCOLS.md §3; <https://developers.openai.com/api/docs/guides/realtime-websocket>;
//! openai-python `src/openai/types/realtime/*.py`.
//!
//! Client events are strict (`deny_unknown_fields`): the offline simulator parses what the client
//! sends with these same types and answers anything else with an `error`, so a client bug
//! shows up in tests. Server events are read leniently: unknown fields are ignored and unknown
//! event types are skipped. Audio deltas, the only hot path, are read with a borrowed payload.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

use crate::codec::ULAW_TO_LINEAR;
use serde_json::Value;

/// Events the client sends (PROTOCOLS.md §3.5).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", deny_unknown_fields)]
pub enum ClientEvent {
    /// Configures the session (§3.3).
    #[serde(rename = "session.update")]
    SessionUpdate {
        /// The fields to change.
        session: Box<Session>,
    },
    /// Caller audio, base64 in the session's input format.
    #[serde(rename = "input_audio_buffer.append")]
    InputAudioBufferAppend {
        /// Base64 audio.
        audio: String,
    },
    /// Adds an item (context restore, tool results).
    #[serde(rename = "conversation.item.create")]
    ConversationItemCreate {
        /// The item.
        item: Item,
    },
    /// Cuts an assistant item to what the caller heard (§3.9).
    #[serde(rename = "conversation.item.truncate")]
    ConversationItemTruncate {
        /// The assistant item.
        item_id: String,
        /// Always 0 for audio.
        content_index: u32,
        /// Milliseconds of the item the caller heard.
        audio_end_ms: u64,
    },
    /// Asks for a response.
    #[serde(rename = "response.create")]
    ResponseCreate {
        /// Overrides for this response.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        response: Option<Value>,
    },
    /// Cancels the response in progress.
    #[serde(rename = "response.cancel")]
    ResponseCancel {
        /// Which response.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        response_id: Option<String>,
    },
}

/// GA session configuration (`RealtimeSessionCreateRequest`); only fields present change.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Session {
    /// Always `"realtime"`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The model (cannot change after connect; sent for the record).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// System instructions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instructions: Option<String>,
    /// `["audio"]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_modalities: Option<Vec<String>>,
    /// Input and output audio.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio: Option<SessionAudio>,
    /// Function tools.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<Tool>>,
    /// `"auto"`, `"none"`, `"required"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<String>,
    /// 1–4096 or `"inf"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_tokens: Option<Value>,
    /// `"auto"` or `"disabled"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truncation: Option<String>,
    /// Reasoning settings (`gpt-realtime-2` family only, §3.14).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning: Option<Reasoning>,
    /// Several tool calls in one response (`gpt-realtime-2` family only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallel_tool_calls: Option<bool>,
}

/// `session.reasoning` (SDK `RealtimeReasoningParam`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reasoning {
    /// How much the model thinks before it answers.
    pub effort: ReasoningEffort,
}

/// `session.reasoning.effort`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReasoningEffort {
    /// Least thought, quickest answer.
    Minimal,
    /// The default: quick answers for phone callers.
    Low,
    /// More thought.
    Medium,
    /// Much more.
    High,
    /// The most.
    Xhigh,
}

/// `session.audio`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionAudio {
    /// Caller audio.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<AudioInput>,
    /// Bot audio.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<AudioOutput>,
}

/// `session.audio.input`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AudioInput {
    /// `audio/pcm` at 24 kHz, or `audio/pcmu`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<AudioFormat>,
    /// `{"type": "near_field"}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub noise_reduction: Option<Value>,
    /// Transcription of the caller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transcription: Option<Transcription>,
    /// Turn detection (`null` turns it off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub turn_detection: Option<TurnDetection>,
}

/// `session.audio.output`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AudioOutput {
    /// `audio/pcm` at 24 kHz, or `audio/pcmu`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<AudioFormat>,
    /// Voice name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voice: Option<String>,
    /// 0.25–1.5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speed: Option<f32>,
}

/// An audio format (§3.7).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AudioFormat {
    /// `audio/pcm`, `audio/pcmu` or `audio/pcma`.
    #[serde(rename = "type")]
    pub kind: String,
    /// 24000 for `audio/pcm`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<u32>,
}

impl AudioFormat {
    /// PCM16 at 24 kHz.
    pub fn pcm() -> AudioFormat {
        AudioFormat {
            kind: "audio/pcm".into(),
            rate: Some(24000),
        }
    }

    /// G.711 μ-law at 8 kHz.
    pub fn pcmu() -> AudioFormat {
        AudioFormat {
            kind: "audio/pcmu".into(),
            rate: None,
        }
    }

}

/// `session.audio.input.transcription`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Transcription {
    /// e.g. `gpt-transcribe`.
    pub model: String,
    /// ISO-639-1, e.g. `hi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    /// Several possible ISO-639-1 languages, e.g. `["hi", "en"]` (`gpt-transcribe`,
    /// `gpt-live-transcribe`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub languages: Option<Vec<String>>,
    /// Words to guide recognition (`gpt-transcribe`, `gpt-live-transcribe`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keywords: Option<Vec<String>>,
    /// Hints for the recogniser.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
}

/// `session.audio.input.turn_detection` (§3.8).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TurnDetection {
    /// `server_vad` or `semantic_vad`.
    #[serde(rename = "type")]
    pub kind: String,
    /// 0–1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f32>,
    /// Audio kept before speech, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix_padding_ms: Option<u32>,
    /// Silence that ends a turn, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub silence_duration_ms: Option<u32>,
    /// Answer on its own at the end of a turn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_response: Option<bool>,
    /// Cancel the response on its own when the caller speaks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interrupt_response: Option<bool>,
    /// `semantic_vad` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eagerness: Option<String>,
}

/// A function tool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tool {
    /// `"function"`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Its name.
    pub name: String,
    /// What it does, for the model.
    pub description: String,
    /// JSON Schema of its arguments, shared with the graph (the same for every call).
    pub parameters: Arc<Value>,
}

/// A conversation item the client creates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", deny_unknown_fields)]
pub enum Item {
    /// A message.
    #[serde(rename = "message")]
    Message {
        /// `user`, `assistant` or `system`.
        role: String,
        /// Its content.
        content: Vec<Content>,
    },
    /// A tool's result.
    #[serde(rename = "function_call_output")]
    FunctionCallOutput {
        /// The call it answers.
        call_id: String,
        /// The result, as JSON text.
        output: String,
    },
}

/// One piece of a message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", deny_unknown_fields)]
pub enum Content {
    /// User or system text.
    #[serde(rename = "input_text")]
    InputText {
        /// The text.
        text: String,
    },
    /// Assistant text (assistant audio cannot be injected).
    #[serde(rename = "output_text")]
    OutputText {
        /// The text.
        text: String,
    },
}

/// The `type` of a server event, read before anything else.
#[derive(Debug, Deserialize)]
pub struct Peek<'a> {
    /// The event type.
    #[serde(rename = "type", borrow)]
    pub kind: std::borrow::Cow<'a, str>,
}

/// `response.output_audio.delta`, read with the payload borrowed (§3.6).
#[derive(Debug, Serialize, Deserialize)]
pub struct AudioDelta<'a> {
    /// The response.
    #[serde(borrow)]
    pub response_id: std::borrow::Cow<'a, str>,
    /// The assistant item.
    #[serde(borrow)]
    pub item_id: std::borrow::Cow<'a, str>,
    /// Base64 audio in the session's output format.
    #[serde(borrow)]
    pub delta: std::borrow::Cow<'a, str>,
}

/// `input_audio_buffer.append` for `bytes` of audio in the session's input format, as the text
/// to send. `b64` is scratch kept between calls; the returned text is the one allocation (the
/// socket takes ownership of it).
pub fn append_text(bytes: &[u8], b64: &mut String) -> String {
    const HEAD: &str = r#"{"type":"input_audio_buffer.append","audio":""#;
    b64.clear();
    STANDARD.encode_string(bytes, b64);
    let mut text = String::with_capacity(HEAD.len() + b64.len() + 2);
    text.push_str(HEAD);
    text.push_str(b64);
    text.push_str("\"}");
    text
}

/// Decodes an audio delta's base64 payload into PCM: G.711 μ-law when `pcmu`, otherwise
/// pcm16 little-endian (an odd trailing byte is dropped). `scratch` and `pcm` are reused.
pub fn decode_audio(
    delta: &str,
    pcmu: bool,
    scratch: &mut Vec<u8>,
    pcm: &mut Vec<i16>,
) -> Result<(), base64::DecodeError> {
    scratch.clear();
    STANDARD.decode_vec(delta.as_bytes(), scratch)?;
    pcm.clear();
    if pcmu {
        pcm.extend(scratch.iter().map(|b| ULAW_TO_LINEAR[usize::from(*b)]));
    } else {
        pcm.extend(
            scratch
                .chunks_exact(2)
                .map(|b| i16::from_le_bytes([b[0], b[1]])),
        );
    }
    Ok(())
}

/// Server events other than audio deltas (§3.6); unknown types are `Other`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum ServerEvent {
    /// First event of a connection.
    #[serde(rename = "session.created")]
    SessionCreated {
        /// The default configuration.
        #[serde(default)]
        session: Value,
    },
    /// `session.update` applied.
    #[serde(rename = "session.updated")]
    SessionUpdated {
        /// The configuration now.
        #[serde(default)]
        session: Value,
    },
    /// Something went wrong; usually recoverable (§3.12).
    #[serde(rename = "error")]
    Error {
        /// What.
        error: ErrorBody,
    },
    /// Server VAD heard speech start.
    #[serde(rename = "input_audio_buffer.speech_started")]
    SpeechStarted {
        /// Ms into the session's audio.
        #[serde(default)]
        audio_start_ms: u64,
        /// The user item.
        #[serde(default)]
        item_id: String,
    },
    /// Server VAD heard speech stop.
    #[serde(rename = "input_audio_buffer.speech_stopped")]
    SpeechStopped {
        /// Ms into the session's audio.
        #[serde(default)]
        audio_end_ms: u64,
        /// The user item.
        #[serde(default)]
        item_id: String,
    },
    /// Caller transcript, partial.
    #[serde(rename = "conversation.item.input_audio_transcription.delta")]
    InputTranscriptDelta {
        /// The user item.
        item_id: String,
        /// New text.
        delta: String,
    },
    /// Caller transcript, final.
    #[serde(rename = "conversation.item.input_audio_transcription.completed")]
    InputTranscriptCompleted {
        /// The user item.
        item_id: String,
        /// The text.
        transcript: String,
    },
    /// A response began.
    #[serde(rename = "response.created")]
    ResponseCreated {
        /// The response.
        response: ResponseInfo,
    },
    /// An output item began (assistant message or function call).
    #[serde(rename = "response.output_item.added")]
    OutputItemAdded {
        /// The response.
        #[serde(default)]
        response_id: String,
        /// The item.
        item: OutputItem,
    },
    /// The item's audio is complete.
    #[serde(rename = "response.output_audio.done")]
    AudioDone {
        /// The response.
        #[serde(default)]
        response_id: String,
        /// The item.
        #[serde(default)]
        item_id: String,
    },
    /// Bot transcript, partial.
    #[serde(rename = "response.output_audio_transcript.delta")]
    OutputTranscriptDelta {
        /// The response.
        #[serde(default)]
        response_id: String,
        /// The item.
        #[serde(default)]
        item_id: String,
        /// New text.
        delta: String,
    },
    /// Bot transcript, final.
    #[serde(rename = "response.output_audio_transcript.done")]
    OutputTranscriptDone {
        /// The response.
        #[serde(default)]
        response_id: String,
        /// The item.
        #[serde(default)]
        item_id: String,
        /// The text.
        transcript: String,
    },
    /// A function call's arguments are complete (§3.10).
    #[serde(rename = "response.function_call_arguments.done")]
    FunctionCallArgumentsDone {
        /// The call.
        call_id: String,
        /// The item.
        #[serde(default)]
        item_id: String,
        /// The function.
        name: String,
        /// JSON text.
        arguments: String,
    },
    /// A response ended (always sent).
    #[serde(rename = "response.done")]
    ResponseDone {
        /// The response.
        response: ResponseInfo,
    },
    /// A truncate was applied.
    #[serde(rename = "conversation.item.truncated")]
    ItemTruncated {
        /// The item.
        item_id: String,
        /// Where it was cut.
        audio_end_ms: u64,
    },
    /// Any other event (`rate_limits.updated`, `conversation.item.added`, …): skipped.
    #[serde(other)]
    Other,
}

/// `error.error`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// e.g. `invalid_request_error`.
    #[serde(rename = "type", default)]
    pub kind: String,
    /// e.g. `session_expired`.
    #[serde(default)]
    pub code: Option<String>,
    /// Human-readable.
    #[serde(default)]
    pub message: String,
}

impl ErrorBody {
    /// Errors after which the session cannot go on and reconnecting cannot help (§3.12).
    pub fn is_fatal(&self) -> bool {
        matches!(
            self.code.as_deref(),
            Some(
                "invalid_api_key"
                    | "insufficient_quota"
                    | "beta_api_shape_disabled"
                    | "model_not_found"
                    | "account_deactivated"
                    | "policy_violation"
            )
        ) || self.kind == "authentication_error"
            || self.kind == "permission_error"
    }

    /// Errors that end this socket but not the call: reconnect.
    pub fn ends_socket(&self) -> bool {
        matches!(self.code.as_deref(), Some("session_expired"))
    }
}

/// `response` in `response.created` / `response.done`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ResponseInfo {
    /// Its id.
    #[serde(default)]
    pub id: String,
    /// `in_progress`, `completed`, `cancelled`, `failed`, `incomplete`.
    #[serde(default)]
    pub status: String,
    /// Why it ended so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_details: Option<Value>,
    /// Token use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

/// Token use of a response.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// All tokens.
    #[serde(default)]
    pub total_tokens: u64,
    /// Input tokens.
    #[serde(default)]
    pub input_tokens: u64,
    /// Output tokens.
    #[serde(default)]
    pub output_tokens: u64,
    /// Input by kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_token_details: Option<InputTokenDetails>,
    /// Output by kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_token_details: Option<TokenKinds>,
}

/// `usage.input_token_details`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputTokenDetails {
    /// Text tokens, cached ones included.
    #[serde(default)]
    pub text_tokens: u64,
    /// Audio tokens, cached ones included.
    #[serde(default)]
    pub audio_tokens: u64,
    /// Image tokens.
    #[serde(default)]
    pub image_tokens: u64,
    /// Cached tokens, all kinds.
    #[serde(default)]
    pub cached_tokens: u64,
    /// Cached tokens by kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_tokens_details: Option<TokenKinds>,
}

/// Tokens by kind (`output_token_details`, `cached_tokens_details`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenKinds {
    /// Text tokens.
    #[serde(default)]
    pub text_tokens: u64,
    /// Audio tokens.
    #[serde(default)]
    pub audio_tokens: u64,
}

impl Usage {
    /// The tokens by kind. Without details the split is unknown and everything counts as text
    /// (so a cost from it is a lower bound); cached tokens without their own split are taken
    /// from text first, then audio.
    pub fn by_kind(&self) -> crate::engine::frame::TokenUse {
        let (text_in, audio_in, cached, cached_kinds) = match &self.input_token_details {
            Some(d) => (d.text_tokens, d.audio_tokens, d.cached_tokens, d.cached_tokens_details.clone()),
            None => (self.input_tokens, 0, 0, None),
        };
        let (text_in_cached, audio_in_cached) = match cached_kinds {
            Some(k) => (k.text_tokens.min(text_in), k.audio_tokens.min(audio_in)),
            None => {
                let text = cached.min(text_in);
                (text, (cached - text).min(audio_in))
            }
        };
        let (text_out, audio_out) = match &self.output_token_details {
            Some(d) => (d.text_tokens, d.audio_tokens),
            None => (self.output_tokens, 0),
        };
        crate::engine::frame::TokenUse {
            text_in,
            text_in_cached,
            audio_in,
            audio_in_cached,
            text_out,
            audio_out,
        }
    }
}

/// `item` in `response.output_item.added`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OutputItem {
    /// Its id.
    #[serde(default)]
    pub id: String,
    /// `message` or `function_call`.
    #[serde(rename = "type", default)]
    pub kind: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_events_serialize_in_the_ga_shape() {
        let e = ClientEvent::ConversationItemTruncate {
            item_id: "item_1".into(),
            content_index: 0,
            audio_end_ms: 1840,
        };
        assert_eq!(
            serde_json::to_value(&e).unwrap(),
            serde_json::json!({"type":"conversation.item.truncate","item_id":"item_1","content_index":0,"audio_end_ms":1840})
        );
        let e = ClientEvent::ResponseCancel { response_id: None };
        assert_eq!(serde_json::to_string(&e).unwrap(), r#"{"type":"response.cancel"}"#);
    }

    #[test]
    fn append_text_is_a_valid_append_event_carrying_the_audio() {
        let bytes: Vec<u8> = (0..=255u8).cycle().take(961).collect();
        let mut b64 = String::new();
        let text = append_text(&bytes, &mut b64);
        let ClientEvent::InputAudioBufferAppend { audio } =
            serde_json::from_str::<ClientEvent>(&text).unwrap()
        else {
            panic!("not an append: {text}");
        };
        assert_eq!(STANDARD.decode(audio).unwrap(), bytes);
    }

    #[test]
    fn audio_deltas_decode_as_pcm16_or_mulaw_and_bad_base64_is_an_error() {
        let (mut scratch, mut pcm) = (Vec::new(), Vec::new());
        let samples = [0i16, 1000, -1000, i16::MAX, i16::MIN];
        let bytes: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
        decode_audio(&STANDARD.encode(&bytes), false, &mut scratch, &mut pcm).unwrap();
        assert_eq!(pcm, samples);
        let ulaw: Vec<u8> = samples.iter().map(|s| crate::codec::linear_to_ulaw(*s)).collect();
        decode_audio(&STANDARD.encode(&ulaw), true, &mut scratch, &mut pcm).unwrap();
        let expected: Vec<i16> = ulaw.iter().map(|b| ULAW_TO_LINEAR[usize::from(*b)]).collect();
        assert_eq!(pcm, expected);
        assert!(pcm[1] > 900 && pcm[2] < -900, "μ-law decodes near the original: {pcm:?}");
        assert!(decode_audio("not base64!", false, &mut scratch, &mut pcm).is_err());
    }

    #[test]
    fn client_events_are_strict() {
        let beta = r#"{"type":"session.update","session":{"type":"realtime","modalities":["audio"]}}"#;
        assert!(serde_json::from_str::<ClientEvent>(beta).is_err(), "beta field refused");
        let extra = r#"{"type":"input_audio_buffer.append","audio":"AA==","surprise":1}"#;
        assert!(serde_json::from_str::<ClientEvent>(extra).is_err());
        let ok = r#"{"type":"input_audio_buffer.append","audio":"AA=="}"#;
        assert!(serde_json::from_str::<ClientEvent>(ok).is_ok());
    }

    #[test]
    fn server_events_are_lenient_and_unknown_types_are_other() {
        let e: ServerEvent = serde_json::from_str(
            r#"{"type":"response.done","event_id":"e1","response":{"id":"r1","status":"cancelled","new_field":1}}"#,
        )
        .unwrap();
        assert!(matches!(e, ServerEvent::ResponseDone { ref response } if response.status == "cancelled"));
        let e: ServerEvent = serde_json::from_str(r#"{"type":"rate_limits.updated","rate_limits":[]}"#).unwrap();
        assert_eq!(e, ServerEvent::Other);
        let d: AudioDelta<'_> = serde_json::from_str(
            r#"{"type":"response.output_audio.delta","response_id":"r","item_id":"i","output_index":0,"content_index":0,"delta":"AAA="}"#,
        )
        .unwrap();
        assert!(matches!(d.delta, std::borrow::Cow::Borrowed("AAA=")));
    }

    #[test]
    fn fatal_errors_are_told_apart_from_recoverable_ones() {
        let e = |code: &str| ErrorBody { kind: "invalid_request_error".into(), code: Some(code.into()), message: String::new() };
        assert!(e("insufficient_quota").is_fatal());
        assert!(e("invalid_api_key").is_fatal());
        assert!(!e("response_cancel_not_active").is_fatal());
        assert!(!e("session_expired").is_fatal());
        assert!(e("session_expired").ends_socket());
    }

    #[test]
    fn usage_is_split_by_kind_with_or_without_the_details() {
        let detailed: Usage = serde_json::from_str(
            r#"{"total_tokens":1750,"input_tokens":1500,"output_tokens":250,
                "input_token_details":{"text_tokens":1000,"audio_tokens":500,"cached_tokens":600,
                    "cached_tokens_details":{"text_tokens":400,"audio_tokens":200}},
                "output_token_details":{"text_tokens":50,"audio_tokens":200}}"#,
        )
        .unwrap();
        let k = detailed.by_kind();
        assert_eq!(
            (k.text_in, k.text_in_cached, k.audio_in, k.audio_in_cached, k.text_out, k.audio_out),
            (1000, 400, 500, 200, 50, 200)
        );
        // Cached without its split: text first, then audio, never more than there was.
        let unsplit: Usage = serde_json::from_str(
            r#"{"input_tokens":300,"output_tokens":10,
                "input_token_details":{"text_tokens":100,"audio_tokens":200,"cached_tokens":250}}"#,
        )
        .unwrap();
        let k = unsplit.by_kind();
        assert_eq!((k.text_in_cached, k.audio_in_cached, k.text_out), (100, 150, 10));
        // No details at all: everything is text.
        let bare: Usage =
            serde_json::from_str(r#"{"total_tokens":40,"input_tokens":30,"output_tokens":10}"#)
                .unwrap();
        let k = bare.by_kind();
        assert_eq!((k.text_in, k.audio_in, k.text_out, k.audio_out), (30, 0, 10, 0));
    }
}
