//! What each route does besides answering: the audit action of a write and the
//! operation a signing service must be allowed (`[[auth.services]] operations`).
//!
//! Both are declared once, beside the handler, as extensions of its `#[utoipa::path]`:
//! `extensions(("x-audit-action" = json!("order.place")), ("x-signed-operation" =
//! json!("place")))` (`json!(null)`: no service may call it, e.g. administration).
//! They are read here from the OpenAPI document (itself built from the routes by the
//! router, which [`install`]s the table at start-up, before serving), into a table the
//! audit middleware and the signature check look routes up in, so a new route is
//! declared in one place and its clients see the same in the document.

use std::collections::HashMap;
use std::sync::OnceLock;

use axum::http::Method;
use utoipa::openapi::path::Operation as DocOperation;
use utoipa::openapi::OpenApi;

use crate::config::auth::Operation;

/// The extension naming a write route's audit action.
pub const AUDIT_ACTION: &str = "x-audit-action";
/// The extension naming the operation a signed request to the route needs (`null`:
/// none may).
pub const SIGNED_OPERATION: &str = "x-signed-operation";
/// The audit action of a write the router answers without a handler (a method a route
/// does not have) on a path that has audited routes.
pub const UNKNOWN_WRITE: &str = "unknown_write";

/// One operation's declarations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Declared {
    pub method: Method,
    pub audit: Option<String>,
    /// `None`: no signing service may call it.
    pub signed: Option<Operation>,
}

/// Every route's declarations, by route path as the router matches it (with `/api/v1`).
#[derive(Debug, Default)]
pub struct RouteTable {
    by_path: HashMap<String, Vec<Declared>>,
    /// Declarations that could not be read (a wrong value): the route is treated as
    /// refused to services and audited as an unknown write; a test keeps this empty.
    pub problems: Vec<String>,
    /// Whether any read (GET) route declares an audit action.
    reads_audited: bool,
}

fn is_read(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

impl RouteTable {
    /// Reads the declarations of every operation in `doc`.
    pub fn from_document(doc: &OpenApi) -> Self {
        let mut table = RouteTable::default();
        for (path, item) in &doc.paths.paths {
            let ops: [(Method, &Option<DocOperation>); 5] = [
                (Method::GET, &item.get),
                (Method::POST, &item.post),
                (Method::PUT, &item.put),
                (Method::PATCH, &item.patch),
                (Method::DELETE, &item.delete),
            ];
            for (method, op) in ops {
                let Some(op) = op else { continue };
                let ext = op.extensions.as_ref();
                let audit = match ext.and_then(|e| e.get(AUDIT_ACTION)) {
                    None => None,
                    Some(serde_json::Value::String(s)) => Some(s.clone()),
                    Some(other) => {
                        table
                            .problems
                            .push(format!("{method} {path}: {AUDIT_ACTION} must be a string, not {other}"));
                        Some(UNKNOWN_WRITE.to_owned())
                    }
                };
                let signed = match ext.and_then(|e| e.get(SIGNED_OPERATION)) {
                    // Undeclared: a read is a read; a write no service may do.
                    None => is_read(&method).then_some(Operation::Read),
                    Some(serde_json::Value::Null) => None,
                    Some(v) => match serde_json::from_value::<Operation>(v.clone()) {
                        Ok(op) => Some(op),
                        Err(e) => {
                            table
                                .problems
                                .push(format!("{method} {path}: {SIGNED_OPERATION} {v}: {e}"));
                            None
                        }
                    },
                };
                table.reads_audited |= is_read(&method) && audit.is_some();
                table
                    .by_path
                    .entry(path.clone())
                    .or_default()
                    .push(Declared { method, audit, signed });
            }
        }
        table
    }

    /// The declarations of `route` (a matched route path, as in the document).
    pub fn route(&self, route: &str) -> &[Declared] {
        self.by_path.get(route).map_or(&[], Vec::as_slice)
    }

    fn declared(&self, method: &Method, route: &str) -> Option<&Declared> {
        // The router answers HEAD with the GET handler.
        let method = if *method == Method::HEAD { &Method::GET } else { method };
        self.route(route).iter().find(|d| d.method == *method)
    }

    /// The audit action of a request to `route` (the matched path), `None` for reads.
    /// A write method the route does not have (answered 405) is audited as
    /// [`UNKNOWN_WRITE`] when the path has audited routes.
    pub fn audit_action(&self, method: &Method, route: &str) -> Option<&str> {
        // A read of a table without audited reads (every read, as declared today): no
        // lookup of the route (a string hash per API request).
        if is_read(method) && !self.reads_audited {
            return None;
        }
        if let Some(d) = self.declared(method, route) {
            return d.audit.as_deref();
        }
        let audited = self.route(route).iter().any(|d| d.audit.is_some());
        (!is_read(method) && audited).then_some(UNKNOWN_WRITE)
    }

    /// The operation a signing service needs for a request to `route` (the matched path;
    /// `None` when nothing matched), `None` when no service may make it. A method the
    /// route does not have (answered 405, or 404 without a route) needs `read` for a
    /// read when the path is not administration-only, and is refused otherwise.
    pub fn signed_operation(&self, method: &Method, route: Option<&str>) -> Option<Operation> {
        let Some(route) = route else {
            return is_read(method).then_some(Operation::Read);
        };
        if let Some(d) = self.declared(method, route) {
            return d.signed;
        }
        let declared = self.route(route);
        let admin_only = !declared.is_empty() && declared.iter().all(|d| d.signed.is_none());
        (is_read(method) && !admin_only).then_some(Operation::Read)
    }
}

static TABLE: OnceLock<RouteTable> = OnceLock::new();

/// Reads the routes' declarations from the document (the router calls it once, at
/// start-up; the document is the same for every router of the process, so later calls
/// change nothing) and returns them.
pub fn install(doc: &OpenApi) -> &'static RouteTable {
    TABLE.get_or_init(|| RouteTable::from_document(doc))
}

/// The installed table (empty before the router is built: nothing is served then).
pub fn table() -> &'static RouteTable {
    static EMPTY: OnceLock<RouteTable> = OnceLock::new();
    TABLE.get().unwrap_or_else(|| EMPTY.get_or_init(RouteTable::default))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(get_audit: Option<&str>) -> RouteTable {
        let mut get = serde_json::json!({"responses": {}});
        if let Some(a) = get_audit {
            get[AUDIT_ACTION] = serde_json::json!(a);
        }
        let doc: OpenApi = serde_json::from_value(serde_json::json!({
            "openapi": "3.1.0",
            "info": {"title": "t", "version": "1"},
            "paths": {
                "/api/v1/things": {
                    "get": get,
                    "post": {"responses": {}, AUDIT_ACTION: "thing.add"}
                }
            }
        }))
        .expect("document");
        RouteTable::from_document(&doc)
    }

    /// Reads skip the lookup only while no read declares an audit action: one that
    /// does is still audited (and writes always are).
    #[test]
    fn a_read_is_audited_only_when_a_read_declares_it() {
        let plain = table(None);
        assert!(plain.problems.is_empty(), "{:?}", plain.problems);
        assert_eq!(plain.audit_action(&Method::GET, "/api/v1/things"), None);
        assert_eq!(plain.audit_action(&Method::HEAD, "/api/v1/things"), None);
        assert_eq!(plain.audit_action(&Method::POST, "/api/v1/things"), Some("thing.add"));
        assert_eq!(plain.audit_action(&Method::PUT, "/api/v1/things"), Some(UNKNOWN_WRITE));
        let audited = table(Some("thing.read"));
        assert_eq!(audited.audit_action(&Method::GET, "/api/v1/things"), Some("thing.read"));
        assert_eq!(
            audited.audit_action(&Method::HEAD, "/api/v1/things"),
            Some("thing.read")
        );
        assert_eq!(audited.audit_action(&Method::GET, "/api/v1/other"), None);
    }
}
