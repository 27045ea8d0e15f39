//! Audits every state-changing API request (order and admin actions): the slot is
//! reserved before the handler runs, the entry written with its outcome after. An
//! anonymous caller cannot act (every such route needs an account), so its refused
//! attempts are aggregated per address like authentication failures rather than
//! written one line each.

use axum::extract::{MatchedPath, Request};
use axum::http::Method;
use axum::response::{IntoResponse, Response};

use super::failures::Failure;
use super::{Actor, AuditLog, Entry};
use crate::auth::Caller;
use crate::foundation::ApiError;
use crate::foundation::RequestId;

/// The audited action of a request to `route` (the matched path), `None` for reads:
/// declared beside each handler ([`crate::auth::routes`]).
pub fn action(method: &Method, route: &str) -> Option<&'static str> {
    crate::auth::routes::table().audit_action(method, route)
}

/// The audit around `run` (the rest of the stack), for a caller already identified:
/// [`crate::auth::caller::handle`] calls it directly (one middleware, not two, on
/// every `/api/v1` route).
pub async fn around<F, Fut>(audit: &AuditLog, req: Request, run: F) -> Response
where
    F: FnOnce(Request) -> Fut,
    Fut: std::future::Future<Output = Response>,
{
    let route = req.extensions().get::<MatchedPath>().map_or("", MatchedPath::as_str);
    let Some(action) = action(req.method(), route) else {
        return run(req).await;
    };
    if let Some(Caller::Anonymous(ip)) = req.extensions().get::<Caller>().cloned() {
        let request_id = req
            .extensions()
            .get::<RequestId>()
            .map(|r| r.0.clone())
            .unwrap_or_default();
        let path = format!("{} {}", req.method(), crate::foundation::path::original_path(&req));
        let resp = run(req).await;
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
    let path = crate::foundation::path::original_path(&req);
    let resp = run(req).await;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The string matching the declarations replaced, kept to compare against.
    fn before(method: &Method, route: &str) -> Option<&'static str> {
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
                if m != "GET"
                    && m != "HEAD"
                    && m != "OPTIONS"
                    && (r.starts_with("/orders") || r.starts_with("/admin")) =>
            {
                "unknown_write"
            }
            _ => return None,
        })
    }

    const METHODS: [Method; 8] = [
        Method::GET,
        Method::HEAD,
        Method::OPTIONS,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
        Method::TRACE,
    ];

    /// Every write in the document (POST, PUT, PATCH, DELETE) declares its audit action,
    /// and no read does.
    #[test]
    fn every_write_route_declares_its_audit_action() {
        let table = crate::auth::routes::install(crate::http::router::document());
        assert!(table.problems.is_empty(), "{:?}", table.problems);
        let mut writes = 0;
        for (path, item) in &crate::http::router::document().paths.paths {
            for (m, op) in [
                (Method::GET, &item.get),
                (Method::POST, &item.post),
                (Method::PUT, &item.put),
                (Method::PATCH, &item.patch),
                (Method::DELETE, &item.delete),
            ] {
                let Some(op) = op else { continue };
                let ext = op.extensions.as_ref();
                let declared = ext.and_then(|e| e.get(crate::auth::routes::AUDIT_ACTION));
                let signed = ext.and_then(|e| e.get(crate::auth::routes::SIGNED_OPERATION));
                if m == Method::GET {
                    assert!(declared.is_none(), "GET {path} is a read but declares {declared:?}");
                    assert_eq!(action(&m, path), None);
                } else {
                    writes += 1;
                    let name = declared.and_then(|v| v.as_str());
                    assert!(
                        name.is_some_and(|n| n.contains('.')),
                        "{m} {path}: declare x-audit-action (e.g. \"order.place\") in its #[utoipa::path]"
                    );
                    assert!(
                        signed.is_some(),
                        "{m} {path}: declare x-signed-operation (null: none may)"
                    );
                    assert_eq!(action(&m, path), name, "{m} {path}");
                }
            }
        }
        assert!(writes >= 8, "{writes} write routes");
    }

    /// Every method on every documented route audits as the string matching did, the
    /// actions included.
    #[test]
    fn every_method_on_every_route_audits_as_before() {
        crate::auth::routes::install(crate::http::router::document());
        for path in crate::http::router::document().paths.paths.keys() {
            for m in &METHODS {
                assert_eq!(action(m, path), before(m, path), "{m} {path}");
            }
        }
    }
}
