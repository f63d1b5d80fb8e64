//! Exotel's callbacks (PROTOCOLS.md §2.3–2.6): `POST /v1/exotel/status` (form-encoded or
//! JSON) and `GET|POST /v1/exotel/passthru` (query, form or JSON; stream metadata as nested
//! `Stream[...]` keys or as one JSON string in `Stream`). Exotel signs nothing, so each URL
//! carries `?token=` and it must match `CALY_WEBHOOK_TOKEN` (compared in constant time; unset
//! = refused). Field names are matched case-insensitively. Every event is kept raw in
//! `webhook_events` and applied to its call once: a retry answers 200 and changes nothing.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse as _, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use super::error::ApiError;
use crate::http::state::AppState;
use crate::store::write::is_terminal;
use crate::store::{Webhook, WebhookKind, WebhookOutcome, now_ms};
use crate::vocab::normalize_number;

/// Largest callback body accepted.
pub(crate) const MAX_BODY: usize = 64 * 1024;
/// Most fields one callback may carry.
const MAX_FIELDS: usize = 200;
/// Longest field name.
const MAX_KEY: usize = 100;
/// Longest field value.
const MAX_VALUE: usize = 4096;
/// Passthru's `EndTime` placeholder (PROTOCOLS.md §2.4).
const PLACEHOLDER_END: &str = "1970-01-01 05:30:00";

/// The webhook routes.
pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/exotel/status", post(post_status))
        .route("/v1/exotel/passthru", get(get_passthru).post(post_passthru))
        .layer(DefaultBodyLimit::max(MAX_BODY))
}

/// Callback fields with lower-cased names; nested objects become `parent[child]`.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct Fields(BTreeMap<String, String>);

impl Fields {
    /// Adds a field; a later value for the same name wins.
    fn insert(&mut self, key: &str, value: String) -> Result<(), ApiError> {
        if key.len() > MAX_KEY || value.len() > MAX_VALUE {
            return Err(ApiError::bad_request(format!(
                "Field names are limited to {MAX_KEY} bytes and values to {MAX_VALUE}."
            )));
        }
        let key = key.trim().to_ascii_lowercase();
        if key == "stream"
            && let Ok(Value::Object(map)) = serde_json::from_str::<Value>(&value)
        {
            return self.insert_json("stream", &Value::Object(map));
        }
        self.0.insert(key, value);
        if self.0.len() > MAX_FIELDS {
            return Err(ApiError::bad_request(format!(
                "A callback carries at most {MAX_FIELDS} fields."
            )));
        }
        Ok(())
    }

    fn insert_json(&mut self, key: &str, value: &Value) -> Result<(), ApiError> {
        match value {
            Value::Null => Ok(()),
            Value::String(s) => self.insert(key, s.clone()),
            Value::Bool(_) | Value::Number(_) | Value::Array(_) => {
                self.insert(key, value.to_string())
            }
            Value::Object(map) => {
                for (k, v) in map {
                    let name = if key.is_empty() {
                        k.clone()
                    } else {
                        format!("{key}[{k}]")
                    };
                    self.insert_json(&name, v)?;
                }
                Ok(())
            }
        }
    }

    /// Adds `a=b&c=d` pairs (query string or form body).
    pub(crate) fn add_form(&mut self, raw: &[u8]) -> Result<(), ApiError> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(raw)
            .map_err(|_| ApiError::bad_request("The body is not valid form data."))?;
        for (k, v) in pairs {
            self.insert(&k, v)?;
        }
        Ok(())
    }

    /// Adds a JSON object's fields.
    pub(crate) fn add_json(&mut self, raw: &[u8]) -> Result<(), ApiError> {
        let value: Value = serde_json::from_slice(raw)
            .map_err(|_| ApiError::bad_request("The body is not valid JSON."))?;
        if !value.is_object() {
            return Err(ApiError::bad_request("The JSON body must be an object."));
        }
        self.insert_json("", &value)
    }

    /// The first of `names` present with a value (not empty, not `null`), trimmed.
    pub(crate) fn get(&self, names: &[&str]) -> Option<&str> {
        names.iter().find_map(|n| {
            self.0
                .get(*n)
                .map(|v| v.trim())
                .filter(|v| !v.is_empty() && *v != "null" && *v != "None")
        })
    }

    /// Without the `token` field (never stored).
    fn remove_token(&mut self) -> Option<String> {
        self.0.remove("token")
    }

    fn to_json(&self) -> String {
        let mut map = serde_json::Map::new();
        for (k, v) in &self.0 {
            let v = if k == "digits" {
                v.trim_matches('"').to_owned()
            } else {
                v.clone()
            };
            map.insert(k.clone(), Value::String(v));
        }
        Value::Object(map).to_string()
    }
}

/// `YYYY-MM-DD HH:MM:SS` in IST (Exotel's format) or RFC 3339 → epoch ms.
pub(crate) fn exotel_time(text: &str) -> Option<i64> {
    use time::format_description::well_known::Rfc3339;
    use time::macros::format_description;
    if text == PLACEHOLDER_END {
        return None;
    }
    let at = time::PrimitiveDateTime::parse(
        text,
        format_description!("[year]-[month]-[day] [hour]:[minute]:[second]"),
    )
    .ok()
    .and_then(|t| Some(t.assume_offset(time::UtcOffset::from_hms(5, 30, 0).ok()?)))
    .or_else(|| time::OffsetDateTime::parse(text, &Rfc3339).ok())?;
    Some((at.unix_timestamp_nanos() / 1_000_000) as i64)
}

fn seconds(text: Option<&str>) -> Option<i64> {
    let s: f64 = text?.parse().ok()?;
    (s.is_finite() && (0.0..=1e7).contains(&s)).then_some(s.round() as i64)
}

/// Builds the event from a callback's fields.
pub(crate) fn parse_webhook(
    kind: WebhookKind,
    fields: &Fields,
    received_ms: i64,
) -> Result<Webhook, ApiError> {
    let call_sid = fields
        .get(&["callsid", "call_sid", "stream[callsid]"])
        .ok_or_else(|| ApiError::bad_request("CallSid is missing."))?;
    if call_sid.len() > 64
        || !call_sid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(ApiError::bad_request("CallSid is not a valid id."));
    }
    let event_type = fields
        .get(&["eventtype", "event_type"])
        .map(str::to_ascii_lowercase);
    let (status, terminal, dedupe_key) = match kind {
        WebhookKind::Status => {
            let reported = fields
                .get(&["status", "callstatus"])
                .map(str::to_ascii_lowercase);
            let (status, terminal) = match (event_type.as_deref(), reported) {
                (Some("answered"), _) => (Some("in-progress".to_owned()), false),
                (_, Some(s)) if is_terminal(&s) => (Some(s), true),
                (_, Some(s)) if s == "in-progress" || s == "ringing" => (Some(s), false),
                _ => (None, false),
            };
            let event = event_type.as_deref().unwrap_or("terminal");
            (status, terminal, format!("status:{call_sid}:{event}"))
        }
        WebhookKind::Passthru => {
            // Passthru runs inside the flow: the call goes on after it. Its stream metadata
            // is kept, its status is not the call's.
            let digest = Sha256::digest(fields.to_json().as_bytes());
            let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
            (None, false, format!("passthru:{call_sid}:{hex}"))
        }
    };
    let started_at_ms = fields
        .get(&["starttime", "start_time"])
        .and_then(exotel_time);
    let ended_at_ms = fields.get(&["endtime", "end_time"]).and_then(exotel_time);
    let duration_ms = match (started_at_ms, ended_at_ms) {
        (Some(s), Some(e)) if e >= s => Some(e - s),
        _ => seconds(fields.get(&["stream[duration]", "duration"])).map(|s| s * 1000),
    };
    Ok(Webhook {
        kind: Some(kind),
        call_sid: call_sid.to_owned(),
        dedupe_key,
        payload: fields.to_json(),
        status,
        terminal,
        from: fields.get(&["from", "callfrom"]).and_then(normalize_number),
        to: fields.get(&["to", "callto"]).and_then(normalize_number),
        direction: fields
            .get(&["direction"])
            .map(|d| d.chars().take(32).collect()),
        stream_sid: fields
            .get(&["streamsid", "stream_sid", "stream[streamsid]"])
            .map(|s| s.chars().take(64).collect()),
        started_at_ms,
        ended_at_ms,
        duration_ms,
        conversation_s: seconds(fields.get(&["conversationduration", "dialcallduration"])),
        recording_url: fields
            .get(&["recordingurl", "stream[recordingurl]"])
            .map(str::to_owned),
        custom_field: fields
            .get(&["customfield"])
            .map(|c| c.chars().take(128).collect()),
        received_ms,
    })
}

/// Checks `?token=` against the configured secret.
fn check_token(state: &AppState, given: Option<&str>) -> Result<(), ApiError> {
    let Some(expected) = state.webhook_token.as_deref() else {
        return Err(ApiError::forbidden(
            "Webhooks are disabled: the server has no CALY_WEBHOOK_TOKEN.",
        ));
    };
    let Some(given) = given.filter(|g| !g.is_empty()) else {
        return Err(ApiError::unauthorized("The ?token= parameter is missing."));
    };
    // Hashing first makes the comparison independent of the lengths too.
    let a = Sha256::digest(expected.as_bytes());
    let b = Sha256::digest(given.as_bytes());
    if bool::from(a[..].ct_eq(&b[..])) {
        Ok(())
    } else {
        Err(ApiError::forbidden("The webhook token is wrong."))
    }
}

async fn handle(
    state: AppState,
    kind: WebhookKind,
    query: Option<String>,
    headers: &HeaderMap,
    body: Option<Result<Bytes, BytesRejection>>,
) -> Result<Response, ApiError> {
    let result = apply(&state, kind, query, headers, body).await;
    let outcome = match &result {
        Ok((outcome, _)) => outcome.label(),
        Err(e) if e.status == axum::http::StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        Err(e) if e.status.as_u16() == 401 || e.status.as_u16() == 403 => "refused",
        Err(_) => "bad",
    };
    state
        .calls_config
        .metrics
        .webhooks
        .get_or_create(&[("kind", kind.label()), ("outcome", outcome)])
        .inc();
    let (outcome, call_sid) = result?;
    let body = Json(json!({
        "status": outcome.label(),
        "call_id": crate::store::call_id_for_sid(&call_sid),
    }));
    // Passthru after the Voicebot applet branches on the status: 302 for a call the bot
    // handed to a person (the flow's Connect applet), 200 otherwise (PROTOCOLS.md §2.4).
    if kind == WebhookKind::Passthru && handed_off(&state, &call_sid).await {
        return Ok((StatusCode::FOUND, body).into_response());
    }
    Ok(body.into_response())
}

/// This server's memory first (the flow asks the moment the stream closes, before the call's
/// record may be written), then the database (another instance took the call).
async fn handed_off(state: &AppState, call_sid: &str) -> bool {
    if state.calls_config.hand_offs.contains(call_sid) {
        return true;
    }
    match state.db.was_handed_off(call_sid).await {
        Ok(handed) => handed,
        Err(e) => {
            tracing::warn!(error = %e, "Cannot tell whether the call was handed off; answering 200.");
            false
        }
    }
}

async fn apply(
    state: &AppState,
    kind: WebhookKind,
    query: Option<String>,
    headers: &HeaderMap,
    body: Option<Result<Bytes, BytesRejection>>,
) -> Result<(WebhookOutcome, String), ApiError> {
    let mut fields = Fields::default();
    if let Some(q) = query.as_deref() {
        fields.add_form(q.as_bytes())?;
    }
    let token = fields.remove_token();
    check_token(state, token.as_deref())?;
    if let Some(body) = body {
        let body = body.map_err(|_| ApiError::too_large(MAX_BODY))?;
        let is_json = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.contains("json"))
            || body.trim_ascii_start().starts_with(b"{");
        if !body.trim_ascii().is_empty() {
            if is_json {
                fields.add_json(&body)?;
            } else {
                fields.add_form(&body)?;
            }
        }
        if fields.remove_token().is_some() {
            tracing::debug!("Ignored a token field in a webhook body.");
        }
    }
    let hook = parse_webhook(kind, &fields, now_ms())?;
    let outcome = state.db.apply_webhook(&hook).await?;
    tracing::info!(
        kind = kind.label(),
        call_sid = %hook.call_sid,
        status = hook.status.as_deref().unwrap_or("-"),
        outcome = outcome.label(),
        "Exotel webhook."
    );
    Ok((outcome, hook.call_sid))
}

async fn post_status(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    handle(state, WebhookKind::Status, query, &headers, Some(body)).await
}

async fn get_passthru(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    handle(state, WebhookKind::Passthru, query, &headers, None).await
}

async fn post_passthru(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    handle(state, WebhookKind::Passthru, query, &headers, Some(body)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(raw: &str) -> Fields {
        let mut f = Fields::default();
        f.add_form(raw.as_bytes()).unwrap();
        f
    }

    #[test]
    fn status_callbacks_parse_from_form_and_json_alike() {
        let f = form(
            "CallSid=80bf&EventType=terminal&Status=completed&From=09876543210&To=08041234567\
             &StartTime=2024-01-15+14%3A25%3A12&EndTime=2024-01-15+14%3A30%3A45\
             &ConversationDuration=320&RecordingUrl=https%3A%2F%2Fx%2Fr.mp3&CustomField=abc",
        );
        let a = parse_webhook(WebhookKind::Status, &f, 1).unwrap();
        let mut j = Fields::default();
        j.add_json(
            br#"{"CallSid":"80bf","EventType":"terminal","Status":"completed","From":"09876543210",
                "To":"08041234567","StartTime":"2024-01-15 14:25:12","EndTime":"2024-01-15 14:30:45",
                "ConversationDuration":320,"RecordingUrl":"https://x/r.mp3","CustomField":"abc",
                "Legs":[{"OnCallDuration":335}]}"#,
        )
        .unwrap();
        let b = parse_webhook(WebhookKind::Status, &j, 1).unwrap();
        for w in [&a, &b] {
            assert_eq!(w.status.as_deref(), Some("completed"));
            assert!(w.terminal);
            assert_eq!(w.from.as_deref(), Some("+919876543210"));
            assert_eq!(w.conversation_s, Some(320));
            assert_eq!(w.duration_ms, Some(333_000));
            assert_eq!(w.recording_url.as_deref(), Some("https://x/r.mp3"));
            assert_eq!(w.dedupe_key, "status:80bf:terminal");
            // 14:25:12 IST is 08:55:12 UTC.
            assert_eq!(w.started_at_ms, Some(1_705_308_912_000));
        }
    }

    #[test]
    fn answered_is_in_progress_and_not_terminal() {
        let w = parse_webhook(
            WebhookKind::Status,
            &form("callsid=x1&eventtype=answered&status=in-progress"),
            1,
        )
        .unwrap();
        assert_eq!(w.status.as_deref(), Some("in-progress"));
        assert!(!w.terminal);
        assert_eq!(w.dedupe_key, "status:x1:answered");
    }

    #[test]
    fn passthru_stream_metadata_comes_nested_or_as_a_json_string() {
        let nested = form(
            "CallSid=c9&Stream%5BStatus%5D=completed&Stream%5BDuration%5D=42\
             &Stream%5BRecordingUrl%5D=https%3A%2F%2Fr&Stream%5BStreamSID%5D=s1&digits=%221%22\
             &EndTime=1970-01-01+05%3A30%3A00",
        );
        let json = form(
            "CallSid=c9&Stream=%7B%22StreamSID%22%3A%22s1%22%2C%22Status%22%3A%22completed%22%2C\
             %22Duration%22%3A42%2C%22RecordingUrl%22%3A%22https%3A%2F%2Fr%22%7D",
        );
        for f in [&nested, &json] {
            let w = parse_webhook(WebhookKind::Passthru, f, 1).unwrap();
            assert_eq!(w.duration_ms, Some(42_000));
            assert_eq!(w.recording_url.as_deref(), Some("https://r"));
            assert_eq!(w.stream_sid.as_deref(), Some("s1"));
            assert_eq!(w.status, None);
            assert_eq!(w.ended_at_ms, None, "the EndTime placeholder is ignored");
        }
        let w = parse_webhook(WebhookKind::Passthru, &nested, 1).unwrap();
        assert!(w.payload.contains(r#""digits":"1""#), "{}", w.payload);
    }

    #[test]
    fn hostile_callbacks_are_refused() {
        for bad in [
            "",
            "From=1",
            "CallSid=a'%3B+DROP+TABLE+calls",
            "CallSid=%00",
        ] {
            let r = parse_webhook(WebhookKind::Status, &form(bad), 1);
            assert_eq!(
                r.unwrap_err().status,
                axum::http::StatusCode::BAD_REQUEST,
                "{bad}"
            );
        }
        let mut f = Fields::default();
        assert!(f.add_json(b"[1,2]").is_err());
        assert!(f.add_json(b"{nope").is_err());
        let many: String = (0..300).map(|i| format!("k{i}=v&")).collect();
        assert!(Fields::default().add_form(many.as_bytes()).is_err());
    }
}
