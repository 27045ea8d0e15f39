//! All routes and the middleware stack.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::middleware;
use axum::response::IntoResponse;
use axum::response::Response;
use axum::routing::{get, post, put};
use axum::Extension;
use axum::Router;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;

use super::server::ConnLink;
use super::{health, market, metrics, orders, request_id, security};
use crate::auth::Caller;
use crate::foundation::ApiError;
use crate::state::AppState;
use crate::ws::protocol::MAX_CLIENT_MESSAGE_BYTES;
use crate::ws::session;

/// Credentials on the upgrade (a bearer token, or a signed request) authenticate the
/// connection up front; bad ones were refused before upgrading. Without any, clients
/// may send an `auth` op.
#[utoipa::path(
    get,
    path = "/api/v1/stream",
    tag = "market",
    summary = "WebSocket stream (upgrade)",
    responses((status = 101, description = "WebSocket stream (upgrade)")),
)]
pub async fn stream(
    State(app): State<AppState>,
    caller: Option<Extension<Caller>>,
    link: Option<Extension<ConnLink>>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    ws: WebSocketUpgrade,
) -> Response {
    let peer = peer.map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |p| p.0 .0.ip());
    let principal = match caller.map(|c| c.0) {
        None | Some(Caller::Anonymous(_)) => None,
        Some(c) => match crate::auth::principal(&app, &c) {
            Ok(p) => Some(p),
            // A valid token for market data only (no order entry here).
            Err(e) if e.code == "ORDER_ENTRY_DISABLED" => None,
            Err(e) => return e.into_response(),
        },
    };
    ws.max_message_size(MAX_CLIENT_MESSAGE_BYTES)
        .max_frame_size(MAX_CLIENT_MESSAGE_BYTES)
        .on_upgrade(move |socket| session::run(socket, app, principal, peer, link.map(|l| l.0)))
}

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
        .route("/stream", get(stream))
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
