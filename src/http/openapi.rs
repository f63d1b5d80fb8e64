//! `GET /v1/openapi.json`: the REST API described from the handlers themselves (utoipa), so
//! the document cannot drift from the routes.

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use serde_json::{Value, json};

use super::params::Rule;
use super::rest;
use crate::store::keys::MAX_NAME;
use crate::store::read::{ActionRow, CallDetail, CallSummary, IntentRow, Kpis, Segment};

/// The document.
#[derive(OpenApi)]
#[openapi(
    info(title = "Caly", description = "Call records, transcripts, agent actions and KPIs."),
    paths(
        rest::list_calls,
        rest::get_call,
        rest::get_transcript,
        rest::list_actions,
        rest::get_kpis,
        rest::get_series,
        rest::erase_call,
        rest::list_keys,
        rest::create_key,
        rest::revoke_key,
        super::console::sign_in,
        super::console::get_session,
        super::console::sign_out,
        super::console::get_live
    ),
    components(schemas(
        CallSummary,
        CallDetail,
        Segment,
        IntentRow,
        ActionRow,
        Kpis,
        crate::store::read::SeriesBucket,
        crate::store::read::TurnRow,
        crate::store::read::CallEventRow,
        rest::Series,
        crate::engine::frame::TokenUse,
        rest::CallPage,
        rest::ActionPage,
        rest::Transcript,
        rest::NewKeyRequest,
        rest::NewKeyResponse,
        rest::KeyList,
        rest::Erased,
        crate::store::keys::KeyInfo,
        rest::ErrorBody,
        rest::ErrorDetail,
        super::console::SignIn,
        super::console::Session,
        crate::call::live::LiveCall,
        crate::call::live::LiveEvent,
        crate::call::live::Activity
    )),
    modifiers(&Bearer)
)]
pub(crate) struct ApiDoc;

struct Bearer;

impl Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        // The console's session: read routes only.
        components.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(utoipa::openapi::security::ApiKey::Cookie(
                utoipa::openapi::security::ApiKeyValue::new(super::console::COOKIE),
            )),
        );
    }
}

/// What each route needs beyond what the handlers' annotations say: `(method, path, scope,
/// takes input)`. Every authenticated route answers 401, 408, 429 and 503; one that takes a
/// parameter or body 400; a route past `read` 403; a body route 413.
const ROUTES: &[(&str, &str, &str, bool)] = &[
    ("get", "/v1/calls", "read", true),
    ("get", "/v1/calls/{id}", "read", true),
    ("delete", "/v1/calls/{id}", "write", true),
    ("get", "/v1/calls/{id}/transcript", "read", true),
    ("get", "/v1/actions", "read", true),
    ("get", "/v1/analytics/kpis", "read", true),
    ("get", "/v1/analytics/series", "read", true),
    ("get", "/v1/apikeys", "admin", false),
    ("post", "/v1/apikeys", "admin", true),
    ("delete", "/v1/apikeys/{id}", "admin", true),
    ("get", "/v1/console/session", "read", false),
    ("get", "/v1/console/live", "read", false),
];

fn error(description: &str) -> Value {
    json!({
        "description": description,
        "content": { "application/json": { "schema": { "$ref": "#/components/schemas/ErrorBody" } } },
    })
}

/// The document, refined: every parameter carries the rule its handler checks, every
/// operation lists every status it can answer, the key request body is exact, and the
/// Exotel routes are described. Built once.
pub(crate) fn document() -> &'static Value {
    static DOC: std::sync::OnceLock<Value> = std::sync::OnceLock::new();
    DOC.get_or_init(|| {
        let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_else(|_| json!({}));
        refine(&mut doc);
        doc
    })
}

fn refine(doc: &mut Value) {
    for &(method, path, scope, input) in ROUTES {
        let Some(op) = doc
            .pointer_mut(&format!("/paths/{}/{method}", path.replace('/', "~1")))
            .and_then(Value::as_object_mut)
        else {
            continue;
        };
        let mut parameters = Vec::new();
        if path.contains("{id}") {
            parameters.push(json!({
                "name": "id", "in": "path", "required": true,
                "description": "A call's UUID or Exotel CallSid, or a key's id.",
                "schema": Rule::Id.schema(),
            }));
        }
        if method == "get" {
            for (name, rule, description) in rest::query_rules(path) {
                parameters.push(json!({
                    "name": name, "in": "query", "required": false,
                    "description": description, "schema": rule.schema(),
                }));
            }
        }
        if parameters.is_empty() {
            op.remove("parameters");
        } else {
            op.insert("parameters".into(), Value::Array(parameters));
        }
        // Read routes also take the console's session cookie; routes that change things take
        // only a bearer key.
        let security = if scope == "read" {
            json!([{ "bearer": [scope] }, { "session": [] }])
        } else {
            json!([{ "bearer": [scope] }])
        };
        op.insert("security".into(), security);
        op.insert("x-required-scope".into(), Value::String(scope.to_owned()));
        let responses = op
            .entry("responses")
            .or_insert_with(|| json!({}))
            .as_object_mut();
        let Some(responses) = responses else {
            continue;
        };
        let mut add = |status: &str, what: Value| {
            responses.entry(status.to_owned()).or_insert(what);
        };
        add(
            "401",
            error("No key, or a key that is unknown, revoked or expired."),
        );
        add(
            "408",
            error("The request was not complete within the request timeout."),
        );
        let mut limited = error("Past the key's request rate.");
        limited["headers"] = json!({ "Retry-After": {
            "description": "Seconds to wait.", "schema": { "type": "integer", "minimum": 1 } } });
        add("429", limited);
        add("503", error("The call records database is unavailable."));
        if input {
            add(
                "400",
                error("A parameter or the body does not follow its schema."),
            );
        }
        if scope != "read" {
            add("403", error("The key's scope is below the route's."));
        }
        if path.contains("{id}") {
            add("404", error("No such call or key."));
        }
        if method == "post" {
            add("413", error("The body is over 16 KiB."));
        }
    }
    if let Some(schemas) = doc
        .pointer_mut("/components/schemas")
        .and_then(Value::as_object_mut)
    {
        schemas.insert(
            "NewKeyRequest".into(),
            json!({
                "type": "object",
                "additionalProperties": false,
                "required": ["name"],
                "properties": {
                    "name": crate::http::params::name_schema(MAX_NAME),
                    "scope": { "anyOf": [
                        { "type": "string", "enum": ["read", "write", "admin"] },
                        { "type": "null" },
                    ], "description": "`read` (default), `write` or `admin`." },
                    "expires_in_days": { "anyOf": [
                        { "type": "integer", "minimum": 1, "maximum": rest::MAX_KEY_DAYS },
                        { "type": "null" },
                    ], "description": "The key stops working this many days from now; unset: until revoked." },
                },
            }),
        );
    }
    // Signing in and out needs no credentials; signing in is a body route.
    if let Some(responses) = doc
        .pointer_mut("/paths/~1v1~1console~1session/post/responses")
        .and_then(Value::as_object_mut)
    {
        for (status, what) in [
            (
                "408",
                "The request was not complete within the request timeout.",
            ),
            ("413", "The body is over 1 KiB."),
            ("429", "Past the key's request rate."),
            ("503", "The call records database is unavailable."),
        ] {
            responses.entry(status).or_insert(error(what));
        }
    }
    for method in ["post", "delete"] {
        if let Some(op) = doc
            .pointer_mut(&format!("/paths/~1v1~1console~1session/{method}"))
            .and_then(Value::as_object_mut)
        {
            op.insert("security".into(), json!([]));
            if let Some(responses) = op.get_mut("responses").and_then(Value::as_object_mut) {
                responses
                    .entry("503")
                    .or_insert(error("The call records database is unavailable."));
                responses.entry("408").or_insert(error(
                    "The request was not complete within the request timeout.",
                ));
            }
        }
    }
    if let Some(paths) = doc.pointer_mut("/paths").and_then(Value::as_object_mut) {
        for (path, item) in exotel_routes() {
            paths.insert(path.into(), item);
        }
    }
}

/// The routes Exotel calls: its two callbacks (`?token=`) and the AgentStream WebSocket.
fn exotel_routes() -> Vec<(&'static str, Value)> {
    let token = json!({
        "name": "token", "in": "query", "required": true,
        "description": "The secret set as CALY_WEBHOOK_TOKEN.",
        "schema": { "type": "string", "minLength": 1 },
    });
    let applied = json!({
        "description": "Recorded (or a duplicate, recorded before).",
        "content": { "application/json": { "schema": {
            "type": "object", "required": ["status", "call_id"],
            "properties": {
                "status": { "type": "string", "enum": ["applied", "duplicate"] },
                "call_id": { "type": "string" },
            },
        } } },
    });
    let form = json!({
        "required": true,
        "content": {
            "application/x-www-form-urlencoded": { "schema": {
                "type": "object", "required": ["CallSid"],
                "properties": { "CallSid": { "type": "string" }, "Status": { "type": "string" } },
            } },
            "application/json": { "schema": {
                "type": "object", "required": ["CallSid"],
                "properties": { "CallSid": { "type": "string" }, "Status": { "type": "string" } },
            } },
        },
    });
    let hook = |summary: &str, extra: Option<(&str, Value)>| {
        let mut responses = json!({
            "200": applied,
            "400": error("No CallSid, or a body that is not form data or a JSON object."),
            "401": error("No ?token=."),
            "403": error("A wrong token, or webhooks are disabled (no CALY_WEBHOOK_TOKEN)."),
            "408": error("The request was not complete within the request timeout."),
            "413": error("The body is over the webhook limit."),
            "503": error("The call records database is unavailable."),
        });
        if let Some((status, what)) = extra {
            responses[status] = what;
        }
        json!({ "summary": summary, "tags": ["exotel"], "parameters": [token], "responses": responses })
    };
    let handed = (
        "302",
        json!({ "description": "The bot handed the call to a person: the flow's Connect applet comes next." }),
    );
    let mut status = hook("Exotel's call status callback.", None);
    status["requestBody"] = form.clone();
    let mut passthru_post = hook(
        "The Passthru applet after the Voicebot applet.",
        Some(handed.clone()),
    );
    passthru_post["requestBody"] = form;
    let stream = json!({
        "summary": "Exotel AgentStream: the call's audio both ways over a WebSocket (PROTOCOLS.md §1).",
        "tags": ["exotel"],
        "parameters": [{
            "name": "sample-rate", "in": "query", "required": false,
            "schema": { "type": "integer", "enum": [8000, 16000, 24000] },
        }],
        "responses": {
            "101": { "description": "Switching to the WebSocket; the call runs." },
            "400": error("Not a WebSocket upgrade, or a sample rate Caly does not take."),
            "401": error("CALY_STREAM_AUTH is set and the Basic credentials are missing or wrong."),
            "503": error("At CALY_MAX_CALLS, or shutting down."),
        },
    });
    vec![
        ("/v1/exotel/status", json!({ "post": status })),
        (
            "/v1/exotel/passthru",
            json!({ "get": hook("The Passthru applet after the Voicebot applet.", Some(handed)), "post": passthru_post }),
        ),
        ("/v1/exotel/stream", json!({ "get": stream })),
    ]
}

/// The route.
pub(crate) fn router() -> axum::Router<crate::http::state::AppState> {
    axum::Router::new().route("/v1/openapi.json", axum::routing::get(get_openapi))
}

/// `GET /v1/openapi.json`. Public: the document names no data.
pub(crate) async fn get_openapi() -> Json<Value> {
    Json(document().clone())
}
