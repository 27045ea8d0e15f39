//! The OpenAPI 3.1 document at `/api/v1/openapi.json`, generated from the router's
//! registration of each handler (its `#[utoipa::path]`, see `http::router::document`)
//! and the `ToSchema` of the types the handlers read and answer with. This module has
//! its frame: info, tags, the error schema and the [`Contract`]: every operation also
//! documents the error body as its `default` response (any status a route can answer
//! with besides success), and the two ways to authenticate.

use std::sync::OnceLock;

use axum::http::header;
use axum::response::IntoResponse;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use crate::foundation::error::{ErrorDetail, ErrorResponse};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "StocksBlitz API",
        description = "Market data and order entry. Errors: {\"error\":{\"code\",\"message\",\"details\",\"request_id\"}}. \
Prices and quantities are decimal strings; times are microseconds since the Unix epoch. \
Authentication, signing and rate limits: docs/AUTH.md."
    ),
    components(schemas(ErrorResponse, ErrorDetail)),
    tags(
        (name = "market", description = "Market data, from the API's copy of engine state"),
        (name = "orders", description = "Order entry and the caller's orders, fills, positions and risk"),
        (name = "admin", description = "Kill switches, risk limits, trading state (admin role)"),
        (name = "ops", description = "Health and metrics"),
        (name = "ui", description = "The traders' dashboard (static, embedded)"),
    )
)]
pub struct ApiDoc;

/// Security schemes, and the error body as every operation's `default` response.
pub struct Contract;

impl Modify for Contract {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                Http::builder()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
        components.add_security_scheme(
            "hmac",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-Request-Signature",
                "HMAC-SHA256 request signature, sent with X-Service-Identity, X-Internal-API-Key and \
                 X-Request-Timestamp (docs/AUTH.md)",
            ))),
        );
        let error = ResponseBuilder::new()
            .description("An error: the code says what went wrong and the message what to fix")
            .content(
                "application/json",
                utoipa::openapi::ContentBuilder::new()
                    .schema(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
                        "ErrorResponse",
                    ))))
                    .build(),
            )
            .build();
        for item in doc.paths.paths.values_mut() {
            for op in [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.patch,
                &mut item.delete,
            ]
            .into_iter()
            .flatten()
            {
                op.responses
                    .responses
                    .insert("default".to_owned(), RefOr::T(error.clone()));
            }
        }
    }
}

static JSON: OnceLock<String> = OnceLock::new();

/// Serves `doc` (the router calls it once, at start-up, with the document of its routes;
/// it is the same for every router of the process).
pub fn install(doc: &utoipa::openapi::OpenApi) {
    JSON.get_or_init(|| doc.to_json().unwrap_or_else(|_| "{}".to_owned()));
}

/// The document as JSON (`{}` before the router is built: nothing is served then).
pub fn json() -> &'static str {
    JSON.get().map_or("{}", String::as_str)
}

#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "ops",
    summary = "This OpenAPI document",
    responses((status = 200, description = "OK", body = Object)),
)]
pub async fn openapi_json() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], json())
}
