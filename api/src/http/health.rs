//! `/health`, `/health/live`, `/health/ready`.
//!
//! Live: the process answers. Ready: the engine and fan-out loops are running (their
//! heartbeats are fresh), every feed thread is up and the order journal works; a load balancer sends traffic
//! only then. `/health` adds the detail an on-call engineer wants first.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use stocksblitz_engine::UnixNanos;

use crate::state::AppState;

/// A loop whose heartbeat is older than this is considered stalled.
const STALL_NS: i64 = 2 * UnixNanos::NANOS_PER_SEC;

fn age_ms(now: i64, heartbeat_ns: u64) -> Option<i64> {
    (heartbeat_ns != 0).then(|| (now - heartbeat_ns as i64) / UnixNanos::NANOS_PER_MILLI)
}

struct Check {
    ready: bool,
    reasons: Vec<String>,
    engine_age_ms: Option<i64>,
    fanout_age_ms: Option<i64>,
}

fn check(app: &AppState) -> Check {
    let now = UnixNanos::now().0;
    let engine_age_ms = age_ms(now, app.engine.stats.heartbeat_ns.get());
    let fanout_age_ms = age_ms(now, app.fanout.heartbeat_ns.get());
    let stall_ms = STALL_NS / UnixNanos::NANOS_PER_MILLI;
    let mut reasons = Vec::new();
    if engine_age_ms.is_none_or(|a| a >= stall_ms) {
        reasons.push(if app.api_node {
            "not subscribed to market data in redis".to_owned()
        } else {
            "engine loop is not running".to_owned()
        });
    }
    if fanout_age_ms.is_none_or(|a| a >= stall_ms) {
        reasons.push("API fan-out loop is not running".to_owned());
    }
    if let Some(j) = app.orders.as_ref().map(|o| o.journal()) {
        if j.is_failed() {
            reasons.push(format!(
                "order journal failed, order intake stopped: {}",
                j.failure().unwrap_or("unknown error")
            ));
        }
    }
    if let Some(why) = app.audit.failure() {
        reasons.push(format!(
            "audit log cannot be written ({why}): order and admin actions are refused with 503 AUDIT_UNAVAILABLE"
        ));
    }
    for f in &app.feeds {
        if f.stats.running.get() != 1 {
            reasons.push(format!("feed {} is not running", f.name));
        }
    }
    Check {
        ready: reasons.is_empty(),
        reasons,
        engine_age_ms,
        fanout_age_ms,
    }
}

#[utoipa::path(
    get,
    path = "/health/live",
    tag = "ops",
    summary = "Liveness",
    responses((status = 200, description = "OK", body = crate::openapi::schemas::Object)),
)]
pub async fn live() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

#[utoipa::path(
    get,
    path = "/health/ready",
    tag = "ops",
    summary = "Readiness",
    responses(
        (status = 200, description = "Ready", body = crate::openapi::schemas::Object),
        (status = 503, description = "Not ready, with the reasons", body = crate::openapi::schemas::Object),
    ),
)]
pub async fn ready(State(app): State<AppState>) -> Response {
    let c = check(&app);
    let stores = stores(&app);
    if c.ready {
        Json(json!({ "status": "ready", "stores": stores })).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "not_ready", "reasons": c.reasons, "stores": stores })),
        )
            .into_response()
    }
}

/// The external stores' state. A store that is down degrades the service but does
/// not make it unready: its rows wait (in memory, then spill files) and are retried.
fn stores(app: &AppState) -> serde_json::Value {
    let questdb = match &app.questdb {
        None => json!("not_configured"),
        Some(q) => json!({
            "status": if q.connected.get() == 1 || q.rows_in.get() == 0 { "ok" } else { "degraded" },
            "last_error": q.last_error(),
            "lag_seconds": q.lag_ns.get() as f64 / 1e9,
            "memory_rows": q.memory_rows.get(),
            "spill_bytes": q.spill_bytes.get(),
            "spilled_rows": q.spilled_rows.get(),
            "send_errors": q.errors.get(),
            "rows_sent": q.rows_sent.get(),
        }),
    };
    let redis = match &app.redis {
        None => json!("not_configured"),
        Some(r) => json!({
            "status": if r.stats.connected.get() == 1 { "ok" } else { "degraded" },
            "last_error": r.stats.last_error(),
            "errors": r.stats.errors.get(),
        }),
    };
    json!({ "questdb": questdb, "redis": redis })
}

/// `GET /health/redis`: connectivity, latency, memory and key counts by pattern.
#[utoipa::path(
    get,
    path = "/health/redis",
    tag = "ops",
    summary = "Redis connectivity, latency, memory and keys",
    responses(
        (status = 200, description = "OK", body = crate::openapi::schemas::Object),
        (status = 404, description = "Redis is not configured", body = crate::openapi::schemas::Object),
        (status = 503, description = "Redis is configured but down", body = crate::openapi::schemas::Object),
    ),
)]
pub async fn redis(State(app): State<AppState>) -> Response {
    match &app.redis {
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({ "status": "not_configured", "message": "[redis] is not configured on this server" })),
        )
            .into_response(),
        Some(r) => {
            let report = r.health().await;
            let code = if report["status"] == "ok" {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            (code, Json(report)).into_response()
        }
    }
}

#[utoipa::path(
    get,
    path = "/health",
    tag = "ops",
    summary = "Health summary",
    responses((status = 200, description = "OK", body = crate::openapi::schemas::Object)),
)]
pub async fn health(State(app): State<AppState>) -> Response {
    let c = check(&app);
    let mut qualities: BTreeMap<&'static str, u64> = BTreeMap::new();
    {
        let mirror = app.market.mirror.read();
        for v in &mirror.instruments {
            *qualities.entry(v.quality().as_str()).or_default() += 1;
        }
    }
    let all_live = qualities.keys().all(|q| *q == "LIVE");
    let stores_ok = app
        .questdb
        .as_ref()
        .is_none_or(|q| q.connected.get() == 1 || q.rows_in.get() == 0)
        && app.redis.as_ref().is_none_or(|r| r.stats.connected.get() == 1);
    let status = match (c.ready, all_live && stores_ok) {
        (false, _) => "down",
        (true, false) => "degraded",
        (true, true) => "ok",
    };
    let feeds: Vec<_> = app
        .feeds
        .iter()
        .map(|f| {
            json!({
                "name": f.name,
                "kind": f.kind,
                "running": f.stats.running.get() == 1,
                "ticks": f.stats.ticks.get(),
                "ring_dropped": f.ring.dropped.get(),
            })
        })
        .collect();
    let body = json!({
        "status": status,
        "reasons": c.reasons,
        "uptime_secs": app.started.elapsed().as_secs(),
        "engine": { "heartbeat_age_ms": c.engine_age_ms, "ticks": app.engine.stats.ticks.get() },
        "fanout": { "heartbeat_age_ms": c.fanout_age_ms, "events": app.fanout.events.get() },
        "feeds": feeds,
        "instruments_by_quality": qualities,
        "stores": stores(&app),
        "journal": app.orders.as_ref().map(|o| {
            let j = o.journal();
            json!({
                "status": if j.is_failed() { "failed" } else { "ok" },
                "error": j.failure(),
                "head_record": j.head.get(),
                "records": j.records.get(),
                "bytes": j.bytes.get(),
            })
        }),
        "audit": {
            "status": if app.audit.healthy() { "ok" } else { "failed" },
            "error": app.audit.failure(),
            "written": app.audit.stats.written.load(std::sync::atomic::Ordering::Relaxed),
            "refused": app.audit.stats.refused.load(std::sync::atomic::Ordering::Relaxed),
        },
    });
    let code = if c.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body)).into_response()
}
