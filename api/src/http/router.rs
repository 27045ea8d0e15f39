//! All routes and the middleware stack. Each route is registered once, by its handler
//! (`routes!(handler, ...)`, one call per path): the handler's `#[utoipa::path]` gives
//! the method, the path (relative to `/api/v1` for the API's routes), the OpenAPI
//! operation and, for a write, its audit action and signed-request operation
//! ([`crate::auth::routes`]). The OpenAPI document is built from the same registration
//! ([`document`]).

use std::sync::OnceLock;
use std::time::Duration;

use axum::http::StatusCode;
use axum::Router;
use utoipa::openapi::OpenApi;
use utoipa::Modify;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouter};
use utoipa_axum::routes;

use super::{edge, guard, health, market, metrics, orders, security};
use crate::dashboard;
use crate::foundation::ApiError;
use crate::state::AppState;

async fn not_found() -> ApiError {
    ApiError::from_status(StatusCode::NOT_FOUND, "")
}

/// Where the API's routes live (their `#[utoipa::path]`s are relative to it).
const API: &str = "/api/v1";

/// The `/api/v1` routes, each with its handler and OpenAPI operation, at their paths
/// relative to [`API`].
fn api_routes() -> Vec<UtoipaMethodRouter<AppState>> {
    vec![
        routes!(market::instruments),
        routes!(market::quotes),
        routes!(market::quote),
        routes!(market::book),
        routes!(market::trades),
        routes!(market::historical),
        routes!(market::market_status),
        routes!(crate::ws::upgrade::stream),
        routes!(crate::openapi::openapi_json),
        routes!(orders::place, orders::list_orders, orders::mass_cancel),
        routes!(orders::test_order),
        routes!(orders::get_order, orders::replace_order, orders::cancel_order),
        routes!(orders::fills),
        routes!(orders::positions),
        routes!(orders::my_risk),
        routes!(orders::anomalies),
        routes!(orders::kill_switch),
        routes!(orders::set_limits),
        routes!(orders::set_trading_state),
    ]
}

/// The routes outside [`API`].
fn base_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(dashboard::index))
        .routes(routes!(dashboard::app_js))
        .routes(routes!(dashboard::style))
        .routes(routes!(health::health))
        .routes(routes!(health::live))
        .routes(routes!(health::ready))
        .routes(routes!(health::redis))
        .routes(routes!(metrics::handler))
}

/// Every route with its handler and OpenAPI operation, the API's nested at [`API`]
/// (the document's form); `wrap_api` adds the layers of the `/api/v1` routes.
pub fn routes(wrap_api: impl FnOnce(OpenApiRouter<AppState>) -> OpenApiRouter<AppState>) -> OpenApiRouter<AppState> {
    let api = api_routes()
        .into_iter()
        .fold(OpenApiRouter::new(), OpenApiRouter::routes);
    base_routes().nest(API, wrap_api(api))
}

/// The same routes as [`routes`], the API's registered at their full paths instead of
/// nested (what the server runs): a nested route strips its prefix from the URI per
/// request (a new URI, a `format!`) and is one more boxed route level. Handlers and
/// layers see the full path in `Uri` as they see it in `OriginalUri`; `MatchedPath` is
/// the same either way.
fn serving_routes(
    wrap_api: impl FnOnce(OpenApiRouter<AppState>) -> OpenApiRouter<AppState>,
) -> OpenApiRouter<AppState> {
    let api = api_routes()
        .into_iter()
        .map(full_path)
        .fold(OpenApiRouter::new(), OpenApiRouter::routes);
    base_routes().merge(wrap_api(api))
}

/// A route of [`api_routes`] at its full path (as axum's `nest` composes it).
fn full_path((schemas, mut paths, handler): UtoipaMethodRouter<AppState>) -> UtoipaMethodRouter<AppState> {
    paths.paths = std::mem::take(&mut paths.paths)
        .into_iter()
        .map(|(path, item)| {
            let full = if path.is_empty() || path == "/" {
                API.to_owned()
            } else {
                format!("{API}{path}")
            };
            (full, item)
        })
        .collect();
    (schemas, paths, handler)
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
    let (routes, _) = serving_routes(|api| api).split_for_parts();
    // One route layer, the whole stack (outermost first): every `Router::layer` call
    // wraps each route in another boxed service that is cloned, deeply, per request
    // and per level, and boxes its future.
    let stack = tower::ServiceBuilder::new()
        // Request id, security headers and the error shape (was two `from_fn`s).
        .layer(edge::EdgeLayer::new(std::sync::Arc::clone(&app.http), app.config.hsts))
        .layer(security::cors(&app.config))
        .layer(metrics::layer::MetricsLayer(std::sync::Arc::clone(&app.http)))
        // Panics, the request timeout and the body limit (was three tower-http layers
        // and axum's `DefaultBodyLimit`).
        .layer(guard::GuardLayer::new(timeout, max_body))
        // Caller identification, rate limit and the audit of writes on the API's routes
        // (by hand: an anonymous read is decided without a box; here rather than on the
        // API's routes alone, one boxed route level less per request).
        .layer(crate::auth::caller_layer::CallerLayer {
            access: app.access.clone(),
            under: "/api/v1/",
        });
    routes.fallback(not_found).layer(stack).with_state(app)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The server's routes are the document's: every path (the API's at their full
    /// paths) with the same methods.
    #[test]
    fn the_served_routes_are_the_documented_ones() {
        let paths = |r: OpenApiRouter<AppState>| {
            let doc = r.into_openapi();
            doc.paths
                .paths
                .iter()
                .map(|(p, item)| {
                    let methods = [
                        item.get.is_some(),
                        item.put.is_some(),
                        item.post.is_some(),
                        item.delete.is_some(),
                        item.patch.is_some(),
                    ];
                    (p.clone(), methods)
                })
                .collect::<Vec<_>>()
        };
        let documented = paths(routes(|api| api));
        let served = paths(serving_routes(|api| api));
        assert!(documented.iter().any(|(p, _)| p == "/api/v1/quotes/{symbol}"));
        assert_eq!(documented, served);
    }
}
