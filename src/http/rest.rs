//! The REST API under `/v1` (DESIGN.md §12): calls, one call with everything recorded about it,
//! its transcript, actions, KPIs, and API key management. Every route wants
//! `Authorization: Bearer <key>` with a scope at least the route's (401 without a valid key,
//! 403 for a scope too small, 429 past the key's rate). Parameters are checked before any SQL
//! runs: a bad date, limit, cursor or filter is a 400 that says which.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::routing::{delete, get};
use axum::{Json, Router};
use governor::clock::{Clock as _, DefaultClock};
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::params::{Rule, name_admits, time_ms};
use crate::call::CallEnd;
use crate::http::state::AppState;
use crate::store::erase::{EraseReason, Erasure};
use crate::store::keys::{ApiKey, KeyInfo, MAX_NAME, Scope};
use crate::store::now_ms;
use crate::store::read::{
    ActionFilter, ActionRow, CallDetail, CallFilter, CallSummary, Cursor, Kpis, Segment, rfc3339,
};
use crate::vocab::{ACTION_STATUSES, AGENTS, INTENTS, normalize_number};

/// Largest REST request body.
pub(crate) const MAX_BODY: usize = 16 * 1024;
/// Page size when none is asked for.
pub(crate) const DEFAULT_LIMIT: i64 = 50;
/// KPIs default to this many days before `until`.
const KPI_DEFAULT_DAYS: i64 = 30;
/// The statuses a call row can have.
const CALL_STATUSES: &[&str] = &[
    "ringing",
    "in-progress",
    "completed",
    "failed",
    "busy",
    "no-answer",
    "canceled",
];

/// The REST routes.
pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/calls", get(list_calls))
        .route("/v1/calls/{id}", get(get_call).delete(erase_call))
        .route("/v1/calls/{id}/transcript", get(get_transcript))
        .route("/v1/actions", get(list_actions))
        .route("/v1/analytics/kpis", get(get_kpis))
        .route("/v1/analytics/series", get(get_series))
        .route("/v1/apikeys", get(list_keys).post(create_key))
        .route("/v1/apikeys/{id}", delete(revoke_key))
        .layer(DefaultBodyLimit::max(MAX_BODY))
}

/// Checks the caller's key, its scope and its rate: a bearer key, or else the console's
/// session cookie (a session reads only: it acts with at most `read` scope, so nothing a
/// browser sends on its own can change a record).
pub(crate) async fn authorize(
    state: &AppState,
    headers: &HeaderMap,
    needs: Scope,
) -> Result<ApiKey, ApiError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        let Some(token) = super::console::session_cookie(headers) else {
            return Err(ApiError::unauthorized(
                "Send an API key as `Authorization: Bearer <key>`.",
            ));
        };
        let mut key = state.db.check_session(token).await?.ok_or_else(|| {
            ApiError::unauthorized("The console session has ended; sign in again.")
        })?;
        key.scope = key.scope.min(Scope::Read);
        return admit(state, key, needs);
    };
    let token = value
        .to_str()
        .ok()
        .and_then(|v| {
            let (scheme, rest) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        })
        .ok_or_else(|| {
            ApiError::unauthorized("The Authorization header must be `Bearer <key>`.")
        })?;
    let key = state
        .db
        .check_api_key(token)
        .await?
        .ok_or_else(|| ApiError::unauthorized("The API key is not valid."))?;
    admit(state, key, needs)
}

/// A key that checked out, against the route's scope and the key's rate.
pub(crate) fn admit(state: &AppState, key: ApiKey, needs: Scope) -> Result<ApiKey, ApiError> {
    state.key_use.used(&key.id, now_ms());
    if key.scope < needs {
        return Err(ApiError::forbidden(format!(
            "This API key's scope is `{}`; the route needs `{}`.",
            key.scope, needs
        )));
    }
    let limiter = &state.limiter;
    if let Err(not_until) = limiter.check_key(&key.id) {
        let wait = not_until.wait_time_from(DefaultClock::default().now());
        return Err(ApiError::rate_limited(wait.as_secs() + 1));
    }
    // Keys are few, but keep the limiter's map from holding revoked ones forever.
    if limiter.len() > 10_000 {
        limiter.retain_recent();
    }
    Ok(key)
}

fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(t)| t).map_err(|e| {
        ApiError::bad_request(format!(
            "Bad query parameters: {}",
            e.body_text().chars().take(200).collect::<String>()
        ))
    })
}

/// The statuses a call row can have.
fn call_statuses() -> Rule {
    Rule::OneOf(CALL_STATUSES.to_vec())
}

/// Each route's query parameters, their rules and what they mean: what the handlers check
/// (through [`Checks`]) and what `openapi.json` says.
pub(crate) fn query_rules(route: &str) -> Vec<(&'static str, Rule, &'static str)> {
    match route {
        "/v1/calls" => vec![
            ("status", call_statuses(), "The call's status."),
            (
                "from",
                Rule::Phone,
                "Caller number, any spelling (098…, +91 98…, 98…).",
            ),
            ("to", Rule::Phone, "Number called, any spelling."),
            (
                "since",
                Rule::Time,
                "Started at or after: RFC 3339 or epoch ms.",
            ),
            ("until", Rule::Time, "Started before: RFC 3339 or epoch ms."),
            (
                "intent",
                Rule::OneOf(INTENTS.iter().map(|i| i.name()).collect()),
                "Has an accepted intent of this name.",
            ),
            (
                "end_reason",
                Rule::OneOf(CallEnd::ALL.iter().map(|e| e.label()).collect()),
                "Ended for this reason.",
            ),
            (
                "cursor",
                Rule::CallCursor,
                "The previous page's `next_cursor`.",
            ),
            ("limit", Rule::Limit, "Page size (default 50)."),
        ],
        "/v1/actions" => vec![
            ("call_id", Rule::Id, "Of this call (its UUID)."),
            (
                "action",
                Rule::OneOf(AGENTS.iter().map(|a| a.name()).collect()),
                "This agent.",
            ),
            (
                "status",
                Rule::OneOf(ACTION_STATUSES.iter().map(|a| a.name()).collect()),
                "This status.",
            ),
            (
                "since",
                Rule::Time,
                "Created at or after: RFC 3339 or epoch ms.",
            ),
            ("until", Rule::Time, "Created before: RFC 3339 or epoch ms."),
            (
                "cursor",
                Rule::ActionCursor,
                "The previous page's `next_cursor`.",
            ),
            ("limit", Rule::Limit, "Page size (default 50)."),
        ],
        "/v1/analytics/kpis" => vec![
            (
                "since",
                Rule::Time,
                "Start (inclusive): RFC 3339 or epoch ms; default 30 days before `until`.",
            ),
            (
                "until",
                Rule::Time,
                "End (exclusive): RFC 3339 or epoch ms; default now.",
            ),
        ],
        "/v1/analytics/series" => vec![
            (
                "since",
                Rule::Time,
                "Start (inclusive): RFC 3339 or epoch ms; default one bucket count before `until`.",
            ),
            (
                "until",
                Rule::Time,
                "End (exclusive): RFC 3339 or epoch ms; default now.",
            ),
            (
                "bucket",
                Rule::OneOf(vec!["hour", "day"]),
                "Bucket size (default `hour`); a range over 2000 buckets keeps its last 2000.",
            ),
        ],
        _ => Vec::new(),
    }
}

/// The rules of one route's query parameters.
struct Checks(Vec<(&'static str, Rule, &'static str)>);

impl Checks {
    fn of(route: &str) -> Checks {
        Checks(query_rules(route))
    }

    /// `value` of parameter `name`, checked.
    fn get<'v>(&self, name: &str, value: Option<&'v str>) -> Result<Option<&'v str>, ApiError> {
        let Some(value) = value else {
            return Ok(None);
        };
        match self.0.iter().find(|(n, _, _)| *n == name) {
            Some((_, rule, _)) => rule.check(name, value).map(Some),
            None => Err(ApiError::bad_request(format!(
                "Unknown parameter `{name}`."
            ))),
        }
    }

    fn owned(&self, name: &str, value: Option<&str>) -> Result<Option<String>, ApiError> {
        Ok(self.get(name, value)?.map(str::to_owned))
    }

    fn time(&self, name: &str, value: Option<&str>) -> Result<Option<i64>, ApiError> {
        time_ms(name, self.get(name, value)?)
    }

    /// `[since, until)` from `since` and `until`: `until` defaults to now, `since` to
    /// `default_ms` before `until`.
    fn range(
        &self,
        since: Option<&str>,
        until: Option<&str>,
        default_ms: i64,
    ) -> Result<(i64, i64), ApiError> {
        let until = self.time("until", until)?.unwrap_or_else(now_ms);
        let since = self
            .time("since", since)?
            .unwrap_or(until.saturating_sub(default_ms));
        Ok((since, until))
    }

    fn limit(&self, value: Option<&str>) -> Result<i64, ApiError> {
        Ok(self
            .get("limit", value)?
            .and_then(|l| l.parse().ok())
            .unwrap_or(DEFAULT_LIMIT))
    }

    fn cursor(&self, value: Option<&str>) -> Result<Option<Cursor>, ApiError> {
        match self.get("cursor", value)? {
            None => Ok(None),
            Some(c) => Cursor::decode(c)
                .map(Some)
                .ok_or_else(|| ApiError::bad_request("`cursor` is not one this API gave out.")),
        }
    }

    fn phone(&self, name: &str, value: Option<&str>) -> Result<Option<String>, ApiError> {
        match self.get(name, value)? {
            None => Ok(None),
            Some(v) => normalize_number(v)
                .map(Some)
                .ok_or_else(|| ApiError::bad_request(format!("`{name}` is not a phone number."))),
        }
    }
}

/// `GET /v1/calls` parameters.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct ListCallsParams {
    /// `in-progress`, `completed`, `failed`, `busy`, `no-answer`, `canceled`.
    status: Option<String>,
    /// Caller number (any spelling: 098…, +91 98…, 98…).
    from: Option<String>,
    /// Number called.
    to: Option<String>,
    /// Started at or after: RFC 3339 or epoch ms.
    since: Option<String>,
    /// Started before: RFC 3339 or epoch ms.
    until: Option<String>,
    /// Has an accepted intent of this name (`order_status`, `cancel_order`, …).
    intent: Option<String>,
    /// Ended for this reason: `hangup`, `completed_by_bot`, `handed_off`, `caller_silent`,
    /// `idle_timeout`, `max_duration`, `socket_lost`, `shutdown`, `pipeline_ended`, `failed`,
    /// `start_failed`.
    end_reason: Option<String>,
    /// From the previous page's `next_cursor`.
    cursor: Option<String>,
    /// Page size, 1–200 (default 50).
    limit: Option<String>,
}

/// A page of calls.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct CallPage {
    /// Newest first.
    pub items: Vec<CallSummary>,
    /// Pass as `cursor` for the next page; absent on the last.
    pub next_cursor: Option<String>,
}

/// A page of actions.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct ActionPage {
    /// Newest first.
    pub items: Vec<ActionRow>,
    /// Pass as `cursor` for the next page; absent on the last.
    pub next_cursor: Option<String>,
}

/// A call's transcript.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Transcript {
    /// The call's id.
    pub call_id: String,
    /// Final segments, in order.
    pub segments: Vec<Segment>,
}

/// An error body.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct ErrorBody {
    /// `{code, message}`.
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct ErrorDetail {
    /// `bad_request`, `unauthorized`, `forbidden`, `not_found`, `conflict`, `rate_limited`, `too_large`,
    /// `unavailable`.
    pub code: String,
    /// For a person.
    pub message: String,
}

/// Lists calls, newest first, filtered and keyset-paginated.
#[utoipa::path(get, path = "/v1/calls", 
    security(("bearer" = ["read"])),
    responses((status = 200, body = CallPage), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub(crate) async fn list_calls(
    State(state): State<AppState>,
    headers: HeaderMap,
    params: Result<Query<ListCallsParams>, QueryRejection>,
) -> Result<Json<CallPage>, ApiError> {
    authorize(&state, &headers, Scope::Read).await?;
    let p = query(params)?;
    let rules = Checks::of("/v1/calls");
    let filter = CallFilter {
        status: rules.owned("status", p.status.as_deref())?,
        end_reason: rules.owned("end_reason", p.end_reason.as_deref())?,
        from: rules.phone("from", p.from.as_deref())?,
        to: rules.phone("to", p.to.as_deref())?,
        since_ms: rules.time("since", p.since.as_deref())?,
        until_ms: rules.time("until", p.until.as_deref())?,
        intent: rules.owned("intent", p.intent.as_deref())?,
    };
    let limit = rules.limit(p.limit.as_deref())?;
    let cursor = rules.cursor(p.cursor.as_deref())?;
    let page = state.db.list_calls(&filter, cursor.as_ref(), limit).await?;
    Ok(Json(CallPage {
        items: page.items,
        next_cursor: page.next.map(|c| c.encode()),
    }))
}

/// An id from the path: a UUID, a CallSid or a key id (letters, digits, `-`, `_`).
fn checked_id(id: &str) -> Result<&str, ApiError> {
    Rule::Id.check("id", id)
}

/// One call (by UUID or Exotel CallSid) with its transcript, intents and actions.
#[utoipa::path(get, path = "/v1/calls/{id}",
    params(("id" = String, Path, description = "UUID or Exotel CallSid")),
    security(("bearer" = ["read"])),
    responses((status = 200, body = CallDetail), (status = 404, body = ErrorBody),
              (status = 401, body = ErrorBody)))]
pub(crate) async fn get_call(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<CallDetail>, ApiError> {
    authorize(&state, &headers, Scope::Read).await?;
    state
        .db
        .call_detail(checked_id(&id)?)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found("call"))
}

/// A call's final transcript, in order.
#[utoipa::path(get, path = "/v1/calls/{id}/transcript",
    params(("id" = String, Path, description = "UUID or Exotel CallSid")),
    security(("bearer" = ["read"])),
    responses((status = 200, body = Transcript), (status = 404, body = ErrorBody)))]
pub(crate) async fn get_transcript(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Transcript>, ApiError> {
    authorize(&state, &headers, Scope::Read).await?;
    let call = state
        .db
        .find_call(checked_id(&id)?)
        .await?
        .ok_or_else(|| ApiError::not_found("call"))?;
    let segments = state.db.transcript(&call.id).await?;
    Ok(Json(Transcript {
        call_id: call.id,
        segments,
    }))
}

/// `GET /v1/actions` parameters.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct ListActionsParams {
    /// Of this call (UUID).
    call_id: Option<String>,
    /// This agent (`cancel_order`, `order_status`, `talk_to_human`, …).
    action: Option<String>,
    /// This status (`done`, `failed`, …).
    status: Option<String>,
    /// Created at or after: RFC 3339 or epoch ms.
    since: Option<String>,
    /// Created before: RFC 3339 or epoch ms.
    until: Option<String>,
    /// From the previous page's `next_cursor`.
    cursor: Option<String>,
    /// Page size, 1–200 (default 50).
    limit: Option<String>,
}

/// Lists agent actions, newest first.
#[utoipa::path(get, path = "/v1/actions", 
    security(("bearer" = ["read"])),
    responses((status = 200, body = ActionPage), (status = 400, body = ErrorBody)))]
pub(crate) async fn list_actions(
    State(state): State<AppState>,
    headers: HeaderMap,
    params: Result<Query<ListActionsParams>, QueryRejection>,
) -> Result<Json<ActionPage>, ApiError> {
    authorize(&state, &headers, Scope::Read).await?;
    let p = query(params)?;
    let rules = Checks::of("/v1/actions");
    let filter = ActionFilter {
        call_id: rules.owned("call_id", p.call_id.as_deref())?,
        action: rules.owned("action", p.action.as_deref())?,
        status: rules.owned("status", p.status.as_deref())?,
        since_ms: rules.time("since", p.since.as_deref())?,
        until_ms: rules.time("until", p.until.as_deref())?,
    };
    let limit = rules.limit(p.limit.as_deref())?;
    let cursor = rules.cursor(p.cursor.as_deref())?;
    if cursor
        .as_ref()
        .is_some_and(|c| c.id.parse::<i64>().is_err())
    {
        return Err(ApiError::bad_request(
            "`cursor` is not one this API gave out.",
        ));
    }
    let page = state
        .db
        .list_actions(&filter, cursor.as_ref(), limit)
        .await?;
    Ok(Json(ActionPage {
        items: page.items,
        next_cursor: page.next.map(|c| c.encode()),
    }))
}

/// `GET /v1/analytics/kpis` parameters.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct KpiParams {
    /// Start (inclusive): RFC 3339 or epoch ms; default 30 days before `until`.
    since: Option<String>,
    /// End (exclusive): RFC 3339 or epoch ms; default now.
    until: Option<String>,
}

/// Call KPIs over a time range, computed in SQL.
#[utoipa::path(get, path = "/v1/analytics/kpis", 
    security(("bearer" = ["read"])),
    responses((status = 200, body = Kpis), (status = 400, body = ErrorBody)))]
pub(crate) async fn get_kpis(
    State(state): State<AppState>,
    headers: HeaderMap,
    params: Result<Query<KpiParams>, QueryRejection>,
) -> Result<Json<Kpis>, ApiError> {
    authorize(&state, &headers, Scope::Read).await?;
    let p = query(params)?;
    let rules = Checks::of("/v1/analytics/kpis");
    let (since, until) = rules.range(
        p.since.as_deref(),
        p.until.as_deref(),
        KPI_DEFAULT_DAYS * 86_400_000,
    )?;
    Ok(Json(state.db.kpis(since, until).await?))
}

/// `GET /v1/analytics/series` parameters.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct SeriesParams {
    /// Start (inclusive): RFC 3339 or epoch ms.
    since: Option<String>,
    /// End (exclusive): RFC 3339 or epoch ms; default now.
    until: Option<String>,
    /// `hour` (default) or `day`.
    bucket: Option<String>,
}

/// KPIs over time, bucket by bucket (what the console's charts draw).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Series {
    /// RFC 3339, inclusive.
    pub since: String,
    /// RFC 3339, exclusive.
    pub until: String,
    /// `hour` or `day`.
    pub bucket: String,
    /// Every bucket in the range, in order.
    pub buckets: Vec<crate::store::read::SeriesBucket>,
    /// The latency percentiles saw every turn of the range (false past 200,000 turns).
    pub v2v_complete: bool,
}

/// KPIs over a time range in hourly or daily buckets, computed in SQL.
#[utoipa::path(get, path = "/v1/analytics/series",
    security(("bearer" = ["read"])),
    responses((status = 200, body = Series), (status = 400, body = ErrorBody)))]
pub(crate) async fn get_series(
    State(state): State<AppState>,
    headers: HeaderMap,
    params: Result<Query<SeriesParams>, QueryRejection>,
) -> Result<Json<Series>, ApiError> {
    authorize(&state, &headers, Scope::Read).await?;
    let p = query(params)?;
    let rules = Checks::of("/v1/analytics/series");
    let bucket = rules
        .get("bucket", p.bucket.as_deref())?
        .unwrap_or("hour")
        .to_owned();
    let bucket_ms: i64 = if bucket == "day" {
        86_400_000
    } else {
        3_600_000
    };
    let buckets_by_default = if bucket == "day" { 30 } else { 24 };
    let (since, until) = rules.range(
        p.since.as_deref(),
        p.until.as_deref(),
        buckets_by_default * bucket_ms,
    )?;
    // A range longer than the buckets allowed keeps its most recent ones; an empty or
    // reversed range has none.
    let max_span = crate::store::read::MAX_BUCKETS * bucket_ms;
    let since = since.max(until.saturating_sub(max_span)).min(until);
    let (buckets, v2v_complete) = state.db.series(since, until, bucket_ms).await?;
    Ok(Json(Series {
        since: crate::store::read::rfc3339(since),
        until: crate::store::read::rfc3339(until),
        bucket,
        buckets,
        v2v_complete,
    }))
}

/// `POST /v1/apikeys` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewKeyRequest {
    /// Who or what uses the key.
    name: String,
    /// `read` (default), `write` or `admin`.
    #[serde(default)]
    scope: Option<String>,
    /// The key stops working this many days from now (1 to 3650); unset: until revoked.
    /// (A number, so `30.0` is taken as JSON Schema's `integer` takes it.)
    #[serde(default)]
    expires_in_days: Option<f64>,
}

/// Longest a key may be created for.
pub(crate) const MAX_KEY_DAYS: u32 = 3650;

/// A key just created: `key` is shown this once.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct NewKeyResponse {
    /// The key's id (to revoke it).
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its scope.
    pub scope: String,
    /// The key itself; it is not stored and cannot be shown again.
    pub key: String,
    /// RFC 3339, if it expires.
    pub expires_at: Option<String>,
}

/// Creates an API key (admin).
#[utoipa::path(post, path = "/v1/apikeys", request_body = NewKeyRequest,
    security(("bearer" = ["admin"])),
    responses((status = 201, body = NewKeyResponse), (status = 403, body = ErrorBody)))]
pub(crate) async fn create_key(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<NewKeyRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<NewKeyResponse>), ApiError> {
    authorize(&state, &headers, Scope::Admin).await?;
    let Json(req) = body.map_err(|e| match e {
        JsonRejection::BytesRejection(_) => ApiError::too_large(MAX_BODY),
        other => ApiError::bad_request(format!(
            "Bad body: {}",
            other.body_text().chars().take(200).collect::<String>()
        )),
    })?;
    if !name_admits(&req.name, MAX_NAME) {
        return Err(ApiError::bad_request(format!(
            "`name` must be 1 to {MAX_NAME} printable characters, not only spaces."
        )));
    }
    let name = req.name.trim();
    let scope: Scope = match req.scope.as_deref() {
        None => Scope::Read,
        Some(s) => s.parse().map_err(ApiError::bad_request)?,
    };
    let expires_at = match req.expires_in_days {
        None => None,
        Some(days) if days.fract() == 0.0 && (1.0..=f64::from(MAX_KEY_DAYS)).contains(&days) => {
            // Whole and in range: the cast is exact.
            #[allow(clippy::cast_possible_truncation)]
            let days = days as i64;
            Some(now_ms() + days * 86_400_000)
        }
        Some(_) => {
            return Err(ApiError::bad_request(format!(
                "`expires_in_days` must be a whole number from 1 to {MAX_KEY_DAYS}."
            )));
        }
    };
    let key = state
        .db
        .create_api_key_expiring(name, scope, expires_at)
        .await?;
    tracing::info!(key_id = %key.id, scope = %scope, "API key created over REST.");
    Ok((
        StatusCode::CREATED,
        Json(NewKeyResponse {
            id: key.id,
            name: name.to_owned(),
            scope: scope.to_string(),
            key: key.secret,
            expires_at: expires_at.map(rfc3339),
        }),
    ))
}

/// `GET /v1/apikeys`: every key, newest first, never a secret.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct KeyList {
    /// At most 1,000 keys.
    pub items: Vec<KeyInfo>,
}

/// Lists API keys (admin): names, scopes and times, never secrets.
#[utoipa::path(get, path = "/v1/apikeys",
    security(("bearer" = ["admin"])),
    responses((status = 200, body = KeyList), (status = 403, body = ErrorBody)))]
pub(crate) async fn list_keys(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<KeyList>, ApiError> {
    authorize(&state, &headers, Scope::Admin).await?;
    Ok(Json(KeyList {
        items: state.db.list_api_keys().await?,
    }))
}

/// What `DELETE /v1/calls/{id}` did.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Erased {
    /// Caly's id of the call.
    pub call_id: String,
    /// RFC 3339: when its personal data was erased.
    pub erased_at: String,
    /// `true` if it had been erased before this request.
    pub already: bool,
}

/// Erases a call's personal data (write): transcript, caller number (kept as its last four
/// digits), recording link, intent entities, the words in its actions and its Exotel
/// callbacks' payloads. Counts and timings stay, so KPIs still count the call; the erasure
/// itself is recorded (who, when). A call still in progress is refused (409).
#[utoipa::path(delete, path = "/v1/calls/{id}",
    params(("id" = String, Path, description = "UUID or Exotel CallSid")),
    security(("bearer" = ["write"])),
    responses((status = 200, body = Erased), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody)))]
pub(crate) async fn erase_call(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Erased>, ApiError> {
    let key = authorize(&state, &headers, Scope::Write).await?;
    let by = format!("apikey:{}", key.id);
    match state
        .db
        .erase_call(checked_id(&id)?, EraseReason::Request, &by)
        .await?
    {
        Erasure::Erased { call_id, erased_at } => Ok(Json(Erased {
            call_id,
            erased_at: rfc3339(erased_at),
            already: false,
        })),
        Erasure::Already { call_id, erased_at } => Ok(Json(Erased {
            call_id,
            erased_at: rfc3339(erased_at),
            already: true,
        })),
        Erasure::InProgress => Err(ApiError::conflict(
            "The call is still in progress; erase it once it has ended.",
        )),
        Erasure::NotFound => Err(ApiError::not_found("call")),
    }
}

/// Revokes an API key (admin).
#[utoipa::path(delete, path = "/v1/apikeys/{id}",
    params(("id" = String, Path, description = "The key's id")),
    security(("bearer" = ["admin"])),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub(crate) async fn revoke_key(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    authorize(&state, &headers, Scope::Admin).await?;
    if state.db.revoke_api_key(checked_id(&id)?).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("API key"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_route_checks_its_parameters_by_its_own_rules() {
        let calls = Checks::of("/v1/calls");
        assert_eq!(calls.limit(None).unwrap(), DEFAULT_LIMIT);
        assert_eq!(calls.limit(Some("7")).unwrap(), 7);
        assert!(calls.limit(Some("0")).is_err());
        assert_eq!(
            calls.time("since", Some("2025-11-25T10:00:00Z")).unwrap(),
            Some(1_764_064_800_000)
        );
        assert!(calls.get("status", Some("not_configured")).is_err());
        assert!(
            calls.get("status", Some("")).is_err(),
            "present means valid"
        );
        assert!(calls.get("intent", Some("order_status")).is_ok());
        assert!(calls.cursor(Some("garbage")).is_err());
        assert_eq!(
            calls
                .phone("from", Some("098765 43210"))
                .unwrap()
                .as_deref(),
            Some("+919876543210")
        );
        assert!(calls.get("nonesuch", Some("x")).is_err());
        let actions = Checks::of("/v1/actions");
        assert!(actions.get("status", Some("not_configured")).is_ok());
        assert!(actions.get("cursor", Some("1.0195e0c4")).is_err());
        assert!(actions.cursor(Some("1.42")).is_ok());
        assert!(checked_id("x' OR '1'='1").is_err());
    }
}
