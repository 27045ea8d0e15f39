//! All routes and the middleware stack. Each route is registered once, by its handler
//! (`routes!(handler, ...)`, one call per path): the handler's `#[utoipa::path]` gives
//! the method, the path (relative to `/api/v1` for the API's routes), the OpenAPI
//! operation and, for a write, its audit action and signed-request operation
//! ([`crate::auth::routes`]). The OpenAPI document is built from the same registration
//! ([`document`]).

use std::sync::OnceLock;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::middleware;
use axum::Router;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;
use utoipa::openapi::OpenApi;
use utoipa::Modify;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{edge, health, market, metrics, orders, request_id, security};
use crate::dashboard;
use crate::foundation::ApiError;
use crate::state::AppState;

async fn not_found() -> ApiError {
    ApiError::from_status(StatusCode::NOT_FOUND, "")
}

/// Every route with its handler and OpenAPI operation; `wrap_api` adds the layers of
/// the `/api/v1` routes (none when only the document is wanted).
pub fn routes(wrap_api: impl FnOnce(OpenApiRouter<AppState>) -> OpenApiRouter<AppState>) -> OpenApiRouter<AppState> {
    let api = OpenApiRouter::new()
        .routes(routes!(market::instruments))
        .routes(routes!(market::quotes))
        .routes(routes!(market::quote))
        .routes(routes!(market::book))
        .routes(routes!(market::trades))
        .routes(routes!(market::historical))
        .routes(routes!(market::market_status))
        .routes(routes!(crate::ws::upgrade::stream))
        .routes(routes!(crate::openapi::openapi_json))
        .routes(routes!(orders::place, orders::list_orders, orders::mass_cancel))
        .routes(routes!(orders::test_order))
        .routes(routes!(orders::get_order, orders::replace_order, orders::cancel_order))
        .routes(routes!(orders::fills))
        .routes(routes!(orders::positions))
        .routes(routes!(orders::my_risk))
        .routes(routes!(orders::anomalies))
        .routes(routes!(orders::kill_switch))
        .routes(routes!(orders::set_limits))
        .routes(routes!(orders::set_trading_state));
    OpenApiRouter::new()
        .routes(routes!(dashboard::index))
        .routes(routes!(dashboard::app_js))
        .routes(routes!(dashboard::style))
        .routes(routes!(health::health))
        .routes(routes!(health::live))
        .routes(routes!(health::ready))
        .routes(routes!(health::redis))
        .routes(routes!(metrics::handler))
        .nest("/api/v1", wrap_api(api))
}

/// The OpenAPI document: [`crate::openapi::ApiDoc`]'s info, tags and shared schemas,
/// every route's operation from [`routes`], and the [`crate::openapi::Contract`]
/// (built once).
pub fn document() -> &'static OpenApi {
    static DOC: OnceLock<OpenApi> = OnceLock::new();
    DOC.get_or_init(|| {
        let mut doc = <crate::openapi::ApiDoc as utoipa::OpenApi>::openapi();
        doc.merge(routes(|api| api).into_openapi());
        crate::openapi::Contract.modify(&mut doc);
        doc
    })
}

pub fn router(app: AppState) -> Router {
    let timeout = Duration::from_millis(app.config.request_timeout_ms);
    let max_body = app.config.max_body_bytes;
    // Before serving: the document at /api/v1/openapi.json, and the table of audit
    // actions and signed operations declared with the routes.
    let doc = document();
    crate::openapi::install(doc);
    crate::auth::routes::install(doc);
    let (routes, _) = routes(|api| {
        // Caller identification, rate limit and the audit of writes, in one layer.
        api.layer(middleware::from_fn_with_state(
            app.clone(),
            crate::auth::caller::middleware,
        ))
    })
    .split_for_parts();
    routes
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(RequestBodyLimitLayer::new(max_body))
        .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, timeout))
        .layer(CatchPanicLayer::custom(request_id::panic_response))
        .layer(metrics::layer::MetricsLayer(std::sync::Arc::clone(&app.http)))
        .layer(security::cors(&app.config))
        // Request id, security headers and the error shape (was two `from_fn`s).
        .layer(edge::EdgeLayer::new(std::sync::Arc::clone(&app.http), app.config.hsts))
        .with_state(app)
}
