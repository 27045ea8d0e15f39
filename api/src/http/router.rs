//! All routes and the middleware stack.

use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::middleware;
use axum::routing::{get, post, put};
use axum::Router;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;

use super::{health, market, metrics, orders, request_id, security};
use crate::foundation::ApiError;
use crate::state::AppState;

async fn not_found() -> ApiError {
    ApiError::from_status(StatusCode::NOT_FOUND, "")
}

pub fn router(app: AppState) -> Router {
    let timeout = Duration::from_millis(app.config.request_timeout_ms);
    let max_body = app.config.max_body_bytes;
    let api = Router::new()
        .route("/instruments", get(market::instruments))
        .route("/quotes", get(market::quotes))
        .route("/quotes/{symbol}", get(market::quote))
        .route("/book/{symbol}", get(market::book))
        .route("/trades/{symbol}", get(market::trades))
        .route("/historical/{symbol}", get(market::historical))
        .route("/market-status", get(market::market_status))
        .route("/stream", get(crate::ws::upgrade::stream))
        .route("/openapi.json", get(crate::openapi::openapi_json))
        .route(
            "/orders",
            post(orders::place).get(orders::list_orders).delete(orders::mass_cancel),
        )
        .route("/orders/test", post(orders::test_order))
        .route(
            "/orders/{id}",
            get(orders::get_order)
                .patch(orders::replace_order)
                .delete(orders::cancel_order),
        )
        .route("/fills", get(orders::fills))
        .route("/positions", get(orders::positions))
        .route("/accounts/me/risk", get(orders::my_risk))
        .route("/anomalies", get(orders::anomalies))
        .route("/admin/kill-switch", post(orders::kill_switch))
        .route("/admin/risk-limits/{account}", put(orders::set_limits))
        .route("/admin/trading-state/{account}", put(orders::set_trading_state))
        .layer(middleware::from_fn_with_state(
            app.clone(),
            crate::audit::http::middleware,
        ))
        .layer(middleware::from_fn_with_state(
            app.clone(),
            crate::auth::caller::middleware,
        ));
    Router::new()
        .route("/", get(crate::dashboard::index))
        .route("/dashboard/app.js", get(crate::dashboard::app_js))
        .route("/dashboard/style.css", get(crate::dashboard::style))
        .route("/health", get(health::health))
        .route("/health/live", get(health::live))
        .route("/health/ready", get(health::ready))
        .route("/health/redis", get(health::redis))
        .route("/metrics", get(metrics::handler))
        .nest("/api/v1", api)
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(RequestBodyLimitLayer::new(max_body))
        .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, timeout))
        .layer(CatchPanicLayer::custom(request_id::panic_response))
        .layer(middleware::from_fn_with_state(app.clone(), metrics::middleware))
        .layer(security::cors(&app.config))
        .layer(middleware::from_fn_with_state(app.clone(), security::headers))
        .layer(middleware::from_fn_with_state(app.clone(), request_id::middleware))
        .with_state(app)
}
