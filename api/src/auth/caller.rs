//! Who is calling, decided once per request before any handler runs: a service that
//! signed the request (HMAC), a bearer token's holder, or an anonymous address. The
//! answer is a [`Caller`] in the request's extensions; the rate limit of its tier is
//! applied here too. Credentials from an address that failed too often are refused
//! before they are checked; other refusals spend the address's failure budget and are
//! audited (repeats aggregated per address, see `audit::failures`).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, MatchedPath, OriginalUri, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::services::{operation_for, Services};
use super::{Access, Caller};
use crate::audit::failures::Failure;
use crate::config::Environment;
use crate::foundation::path::original_path;
use crate::foundation::ApiError;
use crate::foundation::RequestId;
use crate::ratelimit::{address_key, AddrKey, Bucket, LimitTier};

fn now_ms() -> i64 {
    stocksblitz_engine::UnixNanos::now().0 / 1_000_000
}

/// Records a refused authentication from `ip` (audited, repeats aggregated; spends
/// the address's failure budget) and returns the refusal.
pub fn auth_failure(access: &Access, ip: IpAddr, request_id: &str, route: &str, e: ApiError) -> ApiError {
    access.limiter.auth_failed(ip);
    let first = access.audit.auth_failure(&Failure {
        source: address_key(ip),
        request_id: request_id.to_owned(),
        route: route.to_owned(),
        code: e.code,
        status: e.status.as_u16(),
        at_ns: stocksblitz_engine::UnixNanos::now().0,
    });
    // One log line per address per interval too: stderr is not a flood target either.
    if first {
        tracing::info!(request_id, code = e.code, "authentication failed");
    } else {
        tracing::debug!(request_id, code = e.code, "authentication failed (repeat)");
    }
    e
}

/// Seconds until credentials from `ip` are checked again; `Some` refusal when its
/// failure budget is spent (counted in its aggregated audit line, not audited alone).
pub fn auth_refused(access: &Access, ip: IpAddr) -> Option<(ApiError, u64)> {
    let wait = access.limiter.auth_wait_secs(ip);
    (wait > 0).then(|| {
        access.audit.auth_refused(&address_key(ip));
        (access.limiter.auth_refusal(wait), wait)
    })
}

/// Anonymous market-data reads (no credentials needed, nothing changes).
fn public_read(req: &Request) -> bool {
    let path = req
        .extensions()
        .get::<OriginalUri>()
        .map_or_else(|| req.uri().path(), |o| o.0.path());
    public_path(req.method(), path)
}

/// [`public_read`] of a `method` on `path`, which may also be the route template the
/// path matched (every API route's first segment after `/api/v1/` is literal, so the
/// template's is the path's).
fn public_path(method: &axum::http::Method, path: &str) -> bool {
    if !matches!(method.as_str(), "GET" | "HEAD") {
        return false;
    }
    let Some(rest) = path.strip_prefix("/api/v1/") else {
        return false;
    };
    let first = rest.split('/').next().unwrap_or("");
    matches!(
        first,
        "instruments" | "quotes" | "book" | "trades" | "historical" | "market-status" | "openapi.json" | "stream"
    )
}

/// The tier of an anonymous caller: in development, market-data reads from loopback
/// get the loopback tier (a person refreshing by hand never meets a 429).
pub fn anonymous_tier(access: &Access, ip: IpAddr, public: bool) -> (Bucket, LimitTier) {
    let loopback =
        ip.is_loopback() || matches!(ip, IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()));
    if public && loopback && access.config.environment == Environment::Development && access.limiter.loopback_public() {
        (Bucket::Address(AddrKey::of(ip, true)), LimitTier::LoopbackPublic)
    } else {
        (Bucket::Address(AddrKey::of(ip, false)), LimitTier::Anonymous)
    }
}

async fn identify(access: &Access, req: Request, request_id: &str, ip: IpAddr) -> Result<(Caller, Request), ApiError> {
    // The route as audited, only built when credentials are checked (an anonymous
    // caller cannot fail here).
    let route = |req: &Request| format!("{} {}", req.method(), original_path(req));
    if Services::is_signed(req.headers()) {
        let route = route(&req);
        let fail = |e: ApiError| auth_failure(access, ip, request_id, &route, e);
        let Some(auth) = access.auth.as_ref() else {
            return Err(fail(not_configured()));
        };
        let (parts, body) = req.into_parts();
        let bytes = axum::body::to_bytes(body, access.config.max_body_bytes)
            .await
            .map_err(|_| ApiError::from_status(StatusCode::PAYLOAD_TOO_LARGE, ""))?;
        // The URI as sent (a nested router sees it without the /api/v1 prefix).
        let uri = parts
            .extensions
            .get::<OriginalUri>()
            .map_or_else(|| parts.uri.clone(), |o| o.0.clone());
        let pq = uri.path_and_query().map_or("/", |p| p.as_str());
        let service = auth
            .services
            .verify(&parts.headers, &parts.method, pq, &bytes, now_ms())
            .await
            .map_err(|e| fail(e.into_api()))?;
        let route = parts.extensions.get::<MatchedPath>().map(MatchedPath::as_str);
        let op = operation_for(&parts.method, route);
        if !op.is_some_and(|op| service.allows(op)) {
            let what = op.map_or("administration", |o| o.as_str());
            return Err(fail(ApiError::new(
                StatusCode::FORBIDDEN,
                "OPERATION_NOT_ALLOWED",
                format!(
                    "service {:?} may not do {what:?}: see its operations in [[auth.services]]",
                    service.name
                ),
            )));
        }
        return Ok((Caller::Service(service), Request::from_parts(parts, Body::from(bytes))));
    }
    if let Some(h) = req.headers().get(axum::http::header::AUTHORIZATION) {
        let route = route(&req);
        let fail = |e: ApiError| auth_failure(access, ip, request_id, &route, e);
        let Some(auth) = access.auth.as_ref() else {
            return Err(fail(not_configured()));
        };
        let claims = auth
            .tokens
            .verify_header(Some(h.to_str().unwrap_or("")))
            .map_err(|e| fail(ApiError::new(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", e.to_string())))?;
        return Ok((Caller::Token(Arc::new(claims)), req));
    }
    Ok((Caller::Anonymous(client_ip(&req)), req))
}

/// The peer address (the server is served with connect info).
fn client_ip(req: &Request) -> IpAddr {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip())
}

fn not_configured() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "AUTH_NOT_CONFIGURED",
        "this server has no [auth]: send the request without credentials",
    )
}

/// The caller check on every `/api/v1` route, around `run` (the rest of the stack):
/// identifies the caller, applies its rate limit, and audits writes
/// ([`crate::audit::http::around`]). Run by the hand-written layer
/// ([`super::caller_layer`]), which answers an anonymous read without it.
pub async fn handle<F, Fut>(access: &Access, req: Request, run: F) -> Response
where
    F: FnOnce(Request) -> Fut,
    Fut: std::future::Future<Output = Response>,
{
    let ip = client_ip(&req);
    let credentials = has_credentials(&req);
    // Only a request with credentials can fail identification and quote its id.
    let request_id = if credentials {
        req.extensions()
            .get::<RequestId>()
            .map(|r| r.0.clone())
            .unwrap_or_default()
    } else {
        String::new()
    };
    if credentials {
        // Checked before anything verifies or records them: a brute force costs us
        // a map lookup per attempt and adds nothing to the audit log.
        if let Some((e, wait)) = auth_refused(access, ip) {
            let mut resp = e.into_response();
            resp.headers_mut()
                .insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from(wait));
            return resp;
        }
    }
    let public = public_read(&req);
    let (caller, mut req) = match identify(access, req, &request_id, ip).await {
        Ok(v) => v,
        Err(e) => {
            // Failed attempts spend the address's anonymous budget (no brute force).
            let c = access
                .limiter
                .check(LimitTier::Anonymous, AddrKey::of(ip, false).into())
                .await;
            let mut resp = if c.decision.allowed { e } else { c.refusal() }.into_response();
            c.write_headers(resp.headers_mut());
            return resp;
        }
    };
    let limit = match &caller {
        Caller::Anonymous(ip) => Some(anonymous_tier(access, *ip, public)),
        c => c.limit(),
    };
    let checked = match limit {
        Some((bucket, tier)) => Some(access.limiter.check(tier, bucket.key()).await),
        None => None,
    };
    if let Some(c) = checked.filter(|c| !c.decision.allowed) {
        let mut resp = c.refusal().into_response();
        c.write_headers(resp.headers_mut());
        return resp;
    }
    req.extensions_mut().insert(caller);
    // The audit of writes runs here, inside the caller's identification.
    let mut resp = crate::audit::http::around(&access.audit, req, run).await;
    if let Some(c) = checked {
        c.write_headers(resp.headers_mut());
    }
    resp
}

/// Whether the request carries credentials (a signature or an `Authorization` header).
pub(crate) fn has_credentials(req: &Request) -> bool {
    // One pass over the request's headers (a handful) instead of five hashed lookups.
    req.headers()
        .keys()
        .any(|k| *k == axum::http::header::AUTHORIZATION || Services::is_signing_header(k))
}

/// What [`handle`] decides for an anonymous caller before the handler runs, when it
/// needs no await (no credentials, not an audited write, the buckets in process):
/// `Err` the refusal to answer with, `Ok` the caller to insert and the check whose
/// headers the response gets; `None` when [`handle`] must run.
pub(crate) fn anonymous_now(
    access: &Access,
    req: &Request,
) -> Option<Result<(Caller, crate::ratelimit::Checked), Response>> {
    if has_credentials(req) {
        return None;
    }
    let route = req.extensions().get::<MatchedPath>().map_or("", MatchedPath::as_str);
    if crate::audit::http::action(req.method(), route).is_some() {
        return None;
    }
    let ip = client_ip(req);
    // The matched route's template decides as the path would (see `public_path`).
    let (bucket, tier) = anonymous_tier(access, ip, public_path(req.method(), route));
    let c = access.limiter.check_local(tier, bucket.key())?;
    if !c.decision.allowed {
        let mut resp = c.refusal().into_response();
        c.write_headers(resp.headers_mut());
        return Some(Err(resp));
    }
    Some(Ok((Caller::Anonymous(ip), c)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every API route: its template is a public read exactly when a path it matches
    /// is (parameters filled in), for every method.
    #[test]
    fn templates_decide_as_their_paths() {
        let doc = crate::http::router::document();
        let mut seen = 0;
        for template in doc.paths.paths.keys().filter(|p| p.starts_with("/api/v1/")) {
            let path: String = template
                .split('/')
                .map(|seg| if seg.starts_with('{') { "X1" } else { seg })
                .collect::<Vec<_>>()
                .join("/");
            for m in [
                axum::http::Method::GET,
                axum::http::Method::HEAD,
                axum::http::Method::POST,
                axum::http::Method::DELETE,
            ] {
                assert_eq!(
                    public_path(&m, template),
                    public_path(&m, &path),
                    "{m} {template} / {path}"
                );
            }
            seen += 1;
        }
        assert!(public_path(&axum::http::Method::GET, "/api/v1/quotes/{symbol}"));
        assert!(seen > 10, "{seen} API routes");
    }
}
