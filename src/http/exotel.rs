//! `GET /v1/exotel/stream`: where Exotel's Voicebot applet connects (PROTOCOLS.md §1.2).
//!
//! Before upgrading: Basic auth when `CALY_STREAM_AUTH` is set (constant-time compare), the
//! sample rate from `?sample-rate=` / `?sample_rate=` (8000 by default), and admission: while
//! draining, or with `max_calls` calls already streaming, the stream is refused with 503 and
//! counted, so the calls already up keep their latency. Exotel's 10 s handshake budget is never
//! spent waiting: the pipeline starts when `start` arrives, after the upgrade.
//! <https://developer.exotel.com/docs/agentstream/websocket-protocol>

use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use subtle::ConstantTimeEq;

use crate::call::run_call;
use crate::http::state::AppState;
use crate::metrics::Metrics;
use crate::transport::exotel::adapter::ExotelSocket;

/// Exotel's default rate when the URL names none.
const DEFAULT_RATE: u32 = 8000;
/// Largest WebSocket message accepted at all; larger ones close the socket. Messages between
/// `adapter::MAX_TEXT_BYTES` and this are skipped and counted without ending the call.
const MAX_MESSAGE_BYTES: usize = 2 * 1024 * 1024;
/// The socket's read buffer (see the upgrade).
const READ_BUFFER_BYTES: usize = 8 * 1024;

/// The stream route.
pub(crate) fn router() -> Router<AppState> {
    Router::new().route("/v1/exotel/stream", get(get_stream))
}

fn refuse(state: &AppState, status: StatusCode, reason: &'static str, message: &str) -> Response {
    Metrics::count(&state.calls_config.metrics.calls_refused, "reason", reason);
    let body = serde_json::json!({ "error": { "code": reason, "message": message } });
    let mut response = (status, axum::Json(body)).into_response();
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Basic realm=\"caly\""),
        );
    }
    response
}

/// The rate asked for in the query string: `sample-rate` or `sample_rate`.
pub(crate) fn rate_from_query(query: Option<&str>) -> Result<u32, String> {
    let pairs: Vec<(String, String)> = query
        .map(serde_urlencoded::from_str)
        .transpose()
        .map_err(|_| "the query string is not form-encoded".to_owned())?
        .unwrap_or_default();
    let Some((_, value)) = pairs
        .iter()
        .find(|(k, _)| k == "sample-rate" || k == "sample_rate")
    else {
        return Ok(DEFAULT_RATE);
    };
    value
        .trim()
        .parse()
        .map_err(|_| format!("sample rate {value:?} is not a number"))
}

/// Whether the request carries the expected `user:password` as Basic auth.
pub(crate) fn authorized(headers: &HeaderMap, expected: &str) -> bool {
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let Some(encoded) = value
        .strip_prefix("Basic ")
        .or_else(|| value.strip_prefix("basic "))
    else {
        return false;
    };
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
        return false;
    };
    decoded.ct_eq(expected.as_bytes()).into()
}

async fn get_stream(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    if let Some(expected) = state.stream_auth.as_deref()
        && !authorized(&headers, expected)
    {
        return refuse(
            &state,
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "stream credentials required",
        );
    }
    if state.draining.load(Ordering::SeqCst) {
        return refuse(
            &state,
            StatusCode::SERVICE_UNAVAILABLE,
            "draining",
            "server is shutting down",
        );
    }
    let rate = match rate_from_query(query.as_deref()) {
        Ok(rate) if state.calls_config.graphs.get(rate).is_some() => rate,
        Ok(rate) => {
            let message = format!(
                "sample rate {rate} Hz is not one of {:?}",
                state.calls_config.graphs.rates()
            );
            return refuse(&state, StatusCode::BAD_REQUEST, "bad_rate", &message);
        }
        Err(message) => return refuse(&state, StatusCode::BAD_REQUEST, "bad_rate", &message),
    };
    let Ok(permit) = state.admission.clone().try_acquire_owned() else {
        return refuse(
            &state,
            StatusCode::SERVICE_UNAVAILABLE,
            "at_capacity",
            "too many calls",
        );
    };
    let config = state.calls_config.clone();
    // The call counts as in progress from here, not from when the upgrade completes: a
    // shutdown that begins in between still waits for it.
    let in_progress = state.calls.token();
    upgrade
        .max_message_size(MAX_MESSAGE_BYTES)
        // Exotel's messages are a few KiB (100 ms of 8 kHz audio is 2.3 KiB of JSON, of 16 kHz
        // 4.4 KiB): read them in 8 KiB chunks, not tungstenite's 128 KiB (a bigger message
        // still grows the buffer as it needs).
        .read_buffer_size(READ_BUFFER_BYTES)
        .on_upgrade(move |socket| {
            // Everything the call does logs inside this span; `start` fills in the ids.
            let span = tracing::info_span!(
                "call",
                call_sid = tracing::field::Empty,
                stream_sid = tracing::field::Empty,
                rate
            );
            tracing::Instrument::instrument(
                async move {
                    let report = run_call(ExotelSocket::new(socket), rate, &config).await;
                    drop(permit);
                    if let Some(log) = config.reports.as_ref() {
                        let _ = log.try_send(report);
                    }
                    drop(in_progress);
                },
                span,
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_comes_from_either_spelling_and_defaults_to_8k() {
        assert_eq!(rate_from_query(None), Ok(8000));
        assert_eq!(rate_from_query(Some("sample-rate=16000")), Ok(16000));
        assert_eq!(rate_from_query(Some("x=1&sample_rate=24000")), Ok(24000));
        assert!(rate_from_query(Some("sample-rate=fast")).is_err());
        assert_eq!(rate_from_query(Some("%ZZ=1")), Ok(8000));
    }

    #[test]
    fn basic_auth_must_match_exactly() {
        let mut h = HeaderMap::new();
        assert!(!authorized(&h, "u:p"));
        let good = base64::engine::general_purpose::STANDARD.encode("u:p");
        h.insert(
            header::AUTHORIZATION,
            format!("Basic {good}").parse().unwrap(),
        );
        assert!(authorized(&h, "u:p"));
        assert!(!authorized(&h, "u:q"));
        h.insert(header::AUTHORIZATION, "Basic !!!".parse().unwrap());
        assert!(!authorized(&h, "u:p"));
        h.insert(header::AUTHORIZATION, "Bearer x".parse().unwrap());
        assert!(!authorized(&h, "u:p"));
    }
}
