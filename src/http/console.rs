//! The operator console: its pages at `/console` (HTML, CSS and JavaScript embedded in the
//! binary, no framework; uPlot vendored for the charts) and the routes only it needs —
//! signing in and out, and the live calls as server-sent events. Everything else the console
//! shows comes from the REST API, with the same scopes and rate limits.
//!
//! Signing in trades an API key for a session: a random token in an `HttpOnly`,
//! `SameSite=Strict` cookie (never readable by the page's script, never sent by another
//! site), stored by the server only as its hash. A session reads only (see
//! [`super::rest::authorize`]) and ends at sign-out, after 12 hours, or with its key. The
//! pages never put a key in a URL: the key travels once, in the sign-in request's body.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures::{Stream, StreamExt as _};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use super::error::ApiError;
use super::rest::{admit, authorize};
use crate::call::live::{LiveBoard, LiveCall, LiveEvent};
use crate::http::state::AppState;
use crate::store::keys::Scope;
use crate::store::read::rfc3339;

/// The session cookie's name.
pub(crate) const COOKIE: &str = "caly_session";
/// Most live streams open at once on one instance.
pub(crate) const MAX_LIVE_STREAMS: usize = 64;
/// How often a live stream checks that its key or session still holds.
const RECHECK: Duration = Duration::from_secs(30);
/// Sign-in body limit.
const MAX_SIGN_IN: usize = 1024;

/// The console's files, embedded: `(name, content type, bytes)`.
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../console/app.js"),
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_bytes!("../../console/app.css"),
    ),
    (
        "uPlot.iife.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../console/vendor/uPlot.iife.min.js"),
    ),
    (
        "uPlot.min.css",
        "text/css; charset=utf-8",
        include_bytes!("../../console/vendor/uPlot.min.css"),
    ),
    (
        "uPlot.LICENSE",
        "text/plain; charset=utf-8",
        include_bytes!("../../console/vendor/uPlot.LICENSE"),
    ),
];
const INDEX: &str = include_str!("../../console/index.html");

/// The pages may load only their own files and talk only to their own origin.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The console's routes.
pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/console", get(get_index))
        .route(
            "/console/",
            get(|| async { Redirect::permanent("/console") }),
        )
        .route("/console/assets/{name}", get(get_asset))
        .route(
            "/v1/console/session",
            get(get_session).post(sign_in).delete(sign_out),
        )
        .route("/v1/console/live", get(get_live))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_SIGN_IN))
}

/// Headers every console page and file carries.
fn hardened(mut response: Response, content_type: &'static str) -> Response {
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

async fn get_index() -> Response {
    hardened(INDEX.into_response(), "text/html; charset=utf-8")
}

async fn get_asset(Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|(n, _, _)| *n == name) {
        Some((_, kind, bytes)) => hardened(Body::from(*bytes).into_response(), kind),
        None => ApiError::not_found("console file").into_response(),
    }
}

/// The session token from the request's `Cookie` header, if it has one.
pub(crate) fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            (name == COOKIE).then_some(value.trim())
        })
}

/// `Secure` when the request reached us over HTTPS (a proxy in front says so); plain HTTP on
/// a developer's machine keeps working.
fn secure(headers: &HeaderMap) -> &'static str {
    let https = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|p| p.eq_ignore_ascii_case("https"));
    if https { "; Secure" } else { "" }
}

/// `POST /v1/console/session` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SignIn {
    /// An API key (`caly_…`); any scope signs in, the session reads only.
    key: String,
}

/// Who is signed in.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Session {
    /// The key's id.
    pub key_id: String,
    /// The key's name.
    pub name: String,
    /// What it may do: `read` for a console session, the key's scope for a bearer key.
    pub scope: String,
    /// RFC 3339: when the session ends, if known.
    pub expires_at: Option<String>,
}

/// Signs in with an API key: sets the session cookie.
#[utoipa::path(post, path = "/v1/console/session", request_body = SignIn,
    responses((status = 201, body = Session), (status = 400, body = super::rest::ErrorBody),
              (status = 401, body = super::rest::ErrorBody)))]
pub(crate) async fn sign_in(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<SignIn>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(SignIn { key }) = body.map_err(|e| {
        ApiError::bad_request(format!(
            "The body must be {{\"key\": \"caly_…\"}}: {}",
            e.body_text().chars().take(200).collect::<String>()
        ))
    })?;
    let checked = state
        .db
        .check_api_key(key.trim())
        .await?
        .ok_or_else(|| ApiError::unauthorized("The API key is not valid."))?;
    let checked = admit(&state, checked, Scope::Read)?;
    let (token, expires) = state.db.create_session(&checked.id).await?;
    let max_age = ((expires - crate::store::now_ms()) / 1000).max(0);
    let cookie = format!(
        "{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{}",
        secure(&headers)
    );
    let session = Session {
        key_id: checked.id,
        name: checked.name,
        scope: Scope::Read.label().into(),
        expires_at: Some(rfc3339(expires)),
    };
    let mut response = (StatusCode::CREATED, Json(session)).into_response();
    let cookie = HeaderValue::from_str(&cookie)
        .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "cookie"))?;
    response.headers_mut().insert(header::SET_COOKIE, cookie);
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// Who is signed in (the session cookie or a bearer key).
#[utoipa::path(get, path = "/v1/console/session",
    security(("bearer" = ["read"]), ("session" = [])),
    responses((status = 200, body = Session), (status = 401, body = super::rest::ErrorBody)))]
pub(crate) async fn get_session(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Session>, ApiError> {
    // A session's key acts as `read` (`authorize` says so); a bearer key as its own scope.
    let key = authorize(&state, &headers, Scope::Read).await?;
    Ok(Json(Session {
        key_id: key.id,
        name: key.name,
        scope: key.scope.label().into(),
        expires_at: None,
    }))
}

/// Signs out: ends the session and clears the cookie.
#[utoipa::path(delete, path = "/v1/console/session",
    responses((status = 204, description = "Signed out (also when there was no session).")))]
pub(crate) async fn sign_out(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if let Some(token) = session_cookie(&headers) {
        state.db.end_session(token).await?;
    }
    let clear = format!(
        "{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{}",
        secure(&headers)
    );
    let mut response = StatusCode::NO_CONTENT.into_response();
    if let Ok(v) = HeaderValue::from_str(&clear) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(response)
}

/// The calls in progress, as server-sent events: first `snapshot` (every live call, a JSON
/// array of [`LiveCall`]), then `call` (one started or changed) and `ended` (one ended) as
/// they happen, on every instance sharing the database. A client that falls behind gets a
/// fresh `snapshot`. The stream ends when the server stops or the credentials stop holding.
#[utoipa::path(get, path = "/v1/console/live",
    security(("bearer" = ["read"]), ("session" = [])),
    responses((status = 200, description = "`text/event-stream`: `snapshot`, `call`, `ended` events.",
               content_type = "text/event-stream", body = String),
              (status = 401, body = super::rest::ErrorBody),
              (status = 503, body = super::rest::ErrorBody)))]
pub(crate) async fn get_live(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&state, &headers, Scope::Read).await?;
    let Some(board) = state.calls_config.live.clone() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "This server keeps no live view.",
        ));
    };
    let permit = Arc::clone(&state.live_streams)
        .try_acquire_owned()
        .map_err(|_| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                format!("At most {MAX_LIVE_STREAMS} live views at once; close one and retry."),
            )
        })?;
    let closed = board.closed();
    let revoked = async move {
        loop {
            tokio::time::sleep(RECHECK).await;
            if let Err(e) = authorize(&state, &headers, Scope::Read).await
                && e.status == StatusCode::UNAUTHORIZED
            {
                break;
            }
        }
    };
    let ended = async move {
        tokio::select! {
            () = closed.cancelled() => {}
            () = revoked => {}
        }
    };
    let stream = live_events(board)
        .take_until(Box::pin(ended))
        .map(move |event| {
            let _held = &permit;
            event
        });
    let mut response = Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

fn snapshot(board: &LiveBoard) -> SseEvent {
    let calls: Vec<LiveCall> = board.snapshot();
    SseEvent::default()
        .event("snapshot")
        .json_data(calls)
        .unwrap_or_else(|_| SseEvent::default().event("snapshot").data("[]"))
}

fn sse(event: &LiveEvent) -> SseEvent {
    let (name, data) = match event {
        LiveEvent::Call { call } => ("call", serde_json::to_string(call)),
        LiveEvent::Ended { .. } => ("ended", serde_json::to_string(event)),
    };
    SseEvent::default()
        .event(name)
        .data(data.unwrap_or_default())
}

/// The board's snapshot, then its changes (a new snapshot after falling behind).
fn live_events(board: Arc<LiveBoard>) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    // Subscribed before the snapshot is taken, so no change falls between the two.
    let rx = board.subscribe();
    let first = snapshot(&board);
    let changes = futures::stream::unfold((board, rx), |(board, mut rx)| async move {
        let event = match rx.recv().await {
            Ok(event) => sse(&event),
            Err(broadcast::error::RecvError::Lagged(_)) => {
                rx = rx.resubscribe();
                snapshot(&board)
            }
            Err(broadcast::error::RecvError::Closed) => return None,
        };
        Some((event, (board, rx)))
    });
    futures::stream::once(async move { first })
        .chain(changes)
        .map(Ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_cookie_is_found_among_others_and_nowhere_else() {
        let mut h = HeaderMap::new();
        assert_eq!(session_cookie(&h), None);
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; caly_session=cs_abc ; b=2"),
        );
        assert_eq!(session_cookie(&h), Some("cs_abc"));
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("xcaly_session=cs_abc"),
        );
        assert_eq!(session_cookie(&h), None);
    }

    #[test]
    fn every_console_file_is_served_with_its_type_and_the_page_names_only_its_own_files() {
        for (name, kind, bytes) in ASSETS {
            assert!(!bytes.is_empty(), "{name}");
            assert!(kind.starts_with("text/"), "{name}");
        }
        // Every file the page loads is one the server has, under /console/assets/.
        for part in INDEX.split("/console/assets/").skip(1) {
            let name = part.split('"').next().unwrap_or_default();
            assert!(
                ASSETS.iter().any(|(n, _, _)| *n == name),
                "index.html loads {name}, which is not embedded"
            );
        }
        assert!(!INDEX.contains("http://") && !INDEX.contains("https://"));
    }
}
