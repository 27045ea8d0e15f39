//! Audits every state-changing API request (order and admin actions): the slot is
//! reserved before the handler runs, the entry written with its outcome after. An
//! anonymous caller cannot act (every such route needs an account), so its refused
//! attempts are aggregated per address like authentication failures rather than
//! written one line each.

use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::failures::Failure;
use super::{Actor, AuditLog, Entry};
use crate::auth::Caller;
use crate::foundation::ApiError;
use crate::foundation::RequestId;

/// The audited action of a route, `None` for reads.
pub fn action(method: &Method, route: &str) -> Option<&'static str> {
    let route = route.strip_prefix("/api/v1").unwrap_or(route);
    Some(match (method.as_str(), route) {
        ("POST", "/orders") => "order.place",
        ("POST", "/orders/test") => "order.test",
        ("PATCH", "/orders/{id}") => "order.replace",
        ("DELETE", "/orders/{id}") => "order.cancel",
        ("DELETE", "/orders") => "order.mass_cancel",
        ("POST", "/admin/kill-switch") => "admin.kill_switch",
        ("PUT", "/admin/risk-limits/{account}") => "admin.risk_limits",
        ("PUT", "/admin/trading-state/{account}") => "admin.trading_state",
        (m, r)
            if m != "GET" && m != "HEAD" && m != "OPTIONS" && (r.starts_with("/orders") || r.starts_with("/admin")) =>
        {
            "unknown_write"
        }
        _ => return None,
    })
}

pub async fn middleware(State(audit): State<Arc<AuditLog>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let Some(action) = action(req.method(), &route) else {
        return next.run(req).await;
    };
    if let Some(Caller::Anonymous(ip)) = req.extensions().get::<Caller>().cloned() {
        let request_id = req
            .extensions()
            .get::<RequestId>()
            .map(|r| r.0.clone())
            .unwrap_or_default();
        let path = format!("{} {}", req.method(), crate::auth::caller::original_path(&req));
        let resp = next.run(req).await;
        let code = resp.extensions().get::<ApiError>().map_or("ok", |e| e.code);
        audit.auth_failure(&Failure {
            source: crate::ratelimit::address_key(ip),
            request_id,
            route: path,
            code,
            status: resp.status().as_u16(),
            at_ns: stocksblitz_engine::UnixNanos::now().0,
        });
        return resp;
    }
    let permit = match audit.reserve() {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let actor = req
        .extensions()
        .get::<Caller>()
        .map_or_else(Actor::anonymous, Caller::actor);
    let request_id = req
        .extensions()
        .get::<RequestId>()
        .map(|r| r.0.clone())
        .unwrap_or_default();
    let path = crate::auth::caller::original_path(&req);
    let resp = next.run(req).await;
    let outcome = resp
        .extensions()
        .get::<ApiError>()
        .map_or_else(|| "ok".to_owned(), |e| e.code.to_owned());
    permit.record(Entry {
        action,
        actor,
        request_id,
        outcome,
        status: resp.status().as_u16(),
        details: serde_json::json!({ "path": path }),
        at_ns: stocksblitz_engine::UnixNanos::now().0,
    });
    resp
}
