//! Exotel AgentStream (Voicebot applet) messages, parsed tolerantly.
//!
//! Facts from PROTOCOLS.md §1.4: every message is a JSON text frame with an `event`
//! discriminator (`connected`, `start`, `media`, `dtmf`, `mark`, `stop`); `stream_sid` also
//! appears as `streamSid`; numbers appear as strings or integers; unknown fields are ignored.
//! Parsing a `media` message borrows its payload from the input and does not allocate, so a
//! 20 ms chunk goes from socket to pipeline without touching the heap.
//! <https://developer.exotel.com/docs/agentstream/websocket-protocol>

use std::borrow::Cow;
use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

/// One message from Exotel, before dispatch on `event`.
#[derive(Debug, Deserialize)]
pub struct Inbound<'a> {
    /// `connected`, `start`, `media`, `dtmf`, `mark`, `stop` (or anything else, skipped).
    #[serde(borrow)]
    pub event: Cow<'a, str>,
    /// Message counter (string or integer).
    #[serde(default, deserialize_with = "lenient_u64")]
    pub sequence_number: Option<u64>,
    /// Stream id at the top level (either spelling).
    #[serde(default, borrow, alias = "streamSid", deserialize_with = "borrowed")]
    pub stream_sid: Option<Cow<'a, str>>,
    /// `media` payload.
    #[serde(default, borrow)]
    pub media: Option<Media<'a>>,
    /// `start` metadata.
    #[serde(default)]
    pub start: Option<Start>,
    /// `dtmf` key press.
    #[serde(default)]
    pub dtmf: Option<Dtmf>,
    /// `mark` echo.
    #[serde(default)]
    pub mark: Option<MarkName>,
    /// `stop` details.
    #[serde(default)]
    pub stop: Option<Stop>,
}

/// `media`: caller audio.
#[derive(Debug, Deserialize)]
pub struct Media<'a> {
    /// Chunk index (string or integer).
    #[serde(default, deserialize_with = "lenient_u64")]
    pub chunk: Option<u64>,
    /// Documented as ms since stream start; not relied on (we count bytes).
    #[serde(default, deserialize_with = "lenient_u64")]
    pub timestamp: Option<u64>,
    /// Base64 PCM16LE mono.
    #[serde(borrow)]
    pub payload: Cow<'a, str>,
    /// `inbound` / `outbound` with the beta "both tracks" option.
    #[serde(default, borrow, deserialize_with = "borrowed")]
    pub track: Option<Cow<'a, str>>,
}

/// `start`: call metadata.
#[derive(Debug, Default, Deserialize)]
pub struct Start {
    /// Stream id (either spelling).
    #[serde(default, alias = "streamSid")]
    pub stream_sid: Option<String>,
    /// Exotel's call id (either spelling).
    #[serde(default, alias = "callSid")]
    pub call_sid: Option<String>,
    /// Exotel account.
    #[serde(default, alias = "accountSid")]
    pub account_sid: Option<String>,
    /// Caller number.
    #[serde(default)]
    pub from: Option<String>,
    /// Called number.
    #[serde(default)]
    pub to: Option<String>,
    /// Up to three key=value pairs from the applet URL.
    #[serde(default)]
    pub custom_parameters: BTreeMap<String, serde_json::Value>,
    /// Format as Exotel describes it (logged only: the URL's `sample-rate` is authoritative).
    #[serde(default)]
    pub media_format: Option<MediaFormat>,
}

/// `start.media_format`.
#[derive(Debug, Default, Deserialize)]
pub struct MediaFormat {
    /// `audio/x-raw`, `raw`, `linear16`…
    #[serde(default)]
    pub encoding: Option<String>,
    /// Rate in Hz (string or integer).
    #[serde(default, deserialize_with = "lenient_u64")]
    pub sample_rate: Option<u64>,
}

/// `dtmf`.
#[derive(Debug, Default, Deserialize)]
pub struct Dtmf {
    /// `0`-`9`, `*`, `#`.
    #[serde(default)]
    pub digit: Option<String>,
    /// Key-hold time in ms.
    #[serde(default, deserialize_with = "lenient_u64")]
    pub duration: Option<u64>,
}

/// `mark` echo.
#[derive(Debug, Default, Deserialize)]
pub struct MarkName {
    /// The name we sent.
    #[serde(default)]
    pub name: Option<String>,
}

/// `stop`.
#[derive(Debug, Default, Deserialize)]
pub struct Stop {
    /// `callended`, `stopped`, … (an open set).
    #[serde(default)]
    pub reason: Option<String>,
}

/// Why a message was skipped.
#[derive(Debug, thiserror::Error)]
pub enum InboundError {
    /// Not JSON, or not an object with an `event`.
    #[error("malformed message: {0}")]
    Malformed(#[from] serde_json::Error),
    /// A `media` message without a `media` object.
    #[error("media message without media")]
    MissingMedia,
    /// The payload is not valid base64.
    #[error("payload is not base64: {0}")]
    BadBase64(#[from] base64::DecodeSliceError),
}

impl<'a> Inbound<'a> {
    /// Parses one text frame.
    pub fn parse(text: &'a str) -> Result<Inbound<'a>, InboundError> {
        Ok(serde_json::from_str(text)?)
    }

    /// The stream id, from the top level or `start`.
    pub fn stream_sid(&self) -> Option<&str> {
        self.stream_sid
            .as_deref()
            .or_else(|| self.start.as_ref().and_then(|s| s.stream_sid.as_deref()))
    }
}

/// Writes an outbound `media` message (bot audio for the caller) into `out`, the payload encoded
/// in place: `{"event":"media","stream_sid":…,"media":{"payload":…}}` (PROTOCOLS.md §1.5).
/// `out` is reserved to the message's exact length, so a call's buffer is as big as its chunks
/// need and no bigger.
pub fn write_media(out: &mut String, stream_sid: &str, pcm: &[u8]) {
    const HEAD: &str = r#"{"event":"media","stream_sid":"#;
    const MIDDLE: &str = r#","media":{"payload":""#;
    const TAIL: &str = r#""}}"#;
    out.clear();
    // Base64 length, and the sid's worst case as a JSON string.
    let needed = HEAD.len()
        + stream_sid.len() * 6
        + 2
        + MIDDLE.len()
        + pcm.len().div_ceil(3) * 4
        + TAIL.len();
    out.reserve_exact(needed);
    out.push_str(HEAD);
    push_json_str(out, stream_sid);
    out.push_str(MIDDLE);
    STANDARD.encode_string(pcm, out);
    out.push_str(TAIL);
}

/// Writes an outbound `mark` message: Exotel echoes it once everything before it has played.
pub fn write_mark(out: &mut String, stream_sid: &str, name: &str) {
    out.clear();
    out.push_str(r#"{"event":"mark","stream_sid":"#);
    push_json_str(out, stream_sid);
    out.push_str(r#","mark":{"name":"#);
    push_json_str(out, name);
    out.push_str("}}");
}

/// Writes an outbound `clear` message: Exotel drops the audio it has not started playing.
pub fn write_clear(out: &mut String, stream_sid: &str) {
    out.clear();
    out.push_str(r#"{"event":"clear","stream_sid":"#);
    push_json_str(out, stream_sid);
    out.push('}');
}

/// Appends `s` as a JSON string literal (quotes and escapes via serde_json).
fn push_json_str(out: &mut String, s: &str) {
    match serde_json::to_string(s) {
        Ok(quoted) => out.push_str(&quoted),
        Err(_) => out.push_str("\"\""),
    }
}

/// Decodes a `media` payload into `buf` (resized as needed, so reuse one buffer per call: it
/// stops allocating once it has seen the largest payload). Returns the audio bytes.
pub fn decode_payload<'b>(payload: &str, buf: &'b mut Vec<u8>) -> Result<&'b [u8], InboundError> {
    let max = base64::decoded_len_estimate(payload.len());
    if buf.len() < max {
        buf.resize(max, 0);
    }
    let n = STANDARD.decode_slice(payload.as_bytes(), buf)?;
    Ok(&buf[..n])
}

/// An optional string borrowed from the input when it has no escapes. (serde borrows a bare
/// `Cow<str>` field but not one inside an `Option`; without this every media message would
/// allocate its stream id.)
fn borrowed<'de: 'a, 'a, D: Deserializer<'de>>(d: D) -> Result<Option<Cow<'a, str>>, D::Error> {
    #[derive(Deserialize)]
    struct Borrowed<'a>(#[serde(borrow)] Cow<'a, str>);
    Ok(Option::<Borrowed<'a>>::deserialize(d)?.map(|b| b.0))
}

/// Deserializes an unsigned number written as an integer, a float or a string; anything else
/// (or a string that is not a number) becomes `None` rather than an error.
fn lenient_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    struct Lenient;
    impl<'de> Visitor<'de> for Lenient {
        type Value = Option<u64>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a number or a numeric string")
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            Ok(Some(v))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            Ok(u64::try_from(v).ok())
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
            Ok((v.is_finite() && v >= 0.0).then_some(v as u64))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(v.trim().parse().ok())
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D2: Deserializer<'de>>(self, d: D2) -> Result<Self::Value, D2::Error> {
            d.deserialize_any(Lenient)
        }
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            while seq.next_element::<de::IgnoredAny>()?.is_some() {}
            Ok(None)
        }
        fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            while map
                .next_entry::<de::IgnoredAny, de::IgnoredAny>()?
                .is_some()
            {}
            Ok(None)
        }
    }
    d.deserialize_any(Lenient)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_is_read_with_either_spelling_and_numbers_as_strings() {
        let text = r#"{"event":"start","sequence_number":"1","streamSid":"MZ1",
            "start":{"callSid":"CA1","stream_sid":"MZ1","from":"+919876543210",
            "media_format":{"encoding":"audio/x-raw","sample_rate":"8000","bit_rate":"16"},
            "custom_parameters":{"order_hint":"1001"},"extra":{"nested":[1,2]}}}"#;
        let m = Inbound::parse(text).unwrap();
        assert_eq!(m.event, "start");
        assert_eq!(m.sequence_number, Some(1));
        assert_eq!(m.stream_sid(), Some("MZ1"));
        let start = m.start.unwrap();
        assert_eq!(start.call_sid.as_deref(), Some("CA1"));
        assert_eq!(start.media_format.unwrap().sample_rate, Some(8000));
        assert_eq!(start.custom_parameters["order_hint"], "1001");
    }

    #[test]
    fn media_borrows_its_payload_and_decodes() {
        let text = r#"{"event":"media","sequence_number":3,"stream_sid":"MZ1","media":{"chunk":"2","timestamp":200,"payload":"AAEAAQ=="}}"#;
        let m = Inbound::parse(text).unwrap();
        let media = m.media.unwrap();
        assert!(matches!(media.payload, Cow::Borrowed(_)));
        assert!(matches!(m.stream_sid, Some(Cow::Borrowed("MZ1"))));
        assert_eq!((media.chunk, media.timestamp), (Some(2), Some(200)));
        let mut buf = Vec::new();
        assert_eq!(
            decode_payload(&media.payload, &mut buf).unwrap(),
            [0, 1, 0, 1]
        );
    }

    #[test]
    fn outbound_messages_are_the_documented_json() {
        let mut out = String::new();
        write_media(&mut out, "MZ1", &[0, 1, 0, 1]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"event":"media","stream_sid":"MZ1","media":{"payload":"AAEAAQ=="}})
        );
        write_mark(&mut out, "MZ\"1", "caly-7");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"event":"mark","stream_sid":"MZ\"1","mark":{"name":"caly-7"}})
        );
        write_clear(&mut out, "MZ1");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v, serde_json::json!({"event":"clear","stream_sid":"MZ1"}));
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        for text in ["", "{", "[]", "null", r#"{"no_event":1}"#, r#"{"event":5}"#] {
            assert!(Inbound::parse(text).is_err(), "{text}");
        }
        let mut buf = Vec::new();
        assert!(decode_payload("not base64!", &mut buf).is_err());
        // Numbers that are not numbers are ignored, not fatal.
        let m = Inbound::parse(r#"{"event":"media","sequence_number":"x","media":{"payload":""}}"#)
            .unwrap();
        assert_eq!(m.sequence_number, None);
    }
}
