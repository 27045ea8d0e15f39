//! The traders' dashboard at `/`: one page of plain HTML, CSS and JavaScript embedded in
//! the binary (no CDN, no build step). It uses only the public REST API and WebSocket
//! stream, like any other client.

use axum::http::header;
use axum::response::IntoResponse;

const INDEX: &str = include_str!("index.html");
const APP_JS: &str = include_str!("app.js");
const STYLE: &str = include_str!("style.css");

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
}

#[utoipa::path(get, path = "/", tag = "ui", summary = "The traders' dashboard",
    responses((status = 200, description = "HTML", body = String, content_type = "text/html")))]
pub async fn index() -> impl IntoResponse {
    asset("text/html; charset=utf-8", INDEX)
}

#[utoipa::path(get, path = "/dashboard/app.js", tag = "ui", summary = "The dashboard's script",
    responses((status = 200, description = "JavaScript", body = String, content_type = "text/javascript")))]
pub async fn app_js() -> impl IntoResponse {
    asset("text/javascript; charset=utf-8", APP_JS)
}

#[utoipa::path(get, path = "/dashboard/style.css", tag = "ui", summary = "The dashboard's styles",
    responses((status = 200, description = "CSS", body = String, content_type = "text/css")))]
pub async fn style() -> impl IntoResponse {
    asset("text/css; charset=utf-8", STYLE)
}
