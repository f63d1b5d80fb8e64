//! `GET /v1/openapi.json`: the REST API described from the handlers themselves (utoipa), so
//! the document cannot drift from the routes.

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::rest;
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
        rest::erase_call,
        rest::list_keys,
        rest::create_key,
        rest::revoke_key
    ),
    components(schemas(
        CallSummary,
        CallDetail,
        Segment,
        IntentRow,
        ActionRow,
        Kpis,
        rest::CallPage,
        rest::ActionPage,
        rest::Transcript,
        rest::NewKeyRequest,
        rest::NewKeyResponse,
        rest::KeyList,
        rest::Erased,
        crate::store::keys::KeyInfo,
        rest::ErrorBody,
        rest::ErrorDetail
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
    }
}

/// The route.
pub(crate) fn router() -> axum::Router<crate::http::state::AppState> {
    axum::Router::new().route("/v1/openapi.json", axum::routing::get(get_openapi))
}

/// `GET /v1/openapi.json`. Public: the document names no data.
pub(crate) async fn get_openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
