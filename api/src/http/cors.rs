//! CORS by hand for every request but a preflight, whose answer stays tower-http's
//! ([`super::security::cors`]). tower-http's `Cors` is cloned per request with its
//! configuration (two `Vec`s), builds a `HeaderMap` and joins its `Vary` value anew each
//! time; here the values are built once and a request only decides whether its
//! `Origin` is allowed. Same headers as tower-http's layer for the same configuration:
//! `Vary` appended, then `Access-Control-Allow-Origin` (when allowed) and
//! `Access-Control-Expose-Headers` set.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::http::{header, HeaderName, HeaderValue, Method};
use axum::response::Response;
use pin_project_lite::pin_project;
use tower::{Layer, Service};
use tower_http::cors::{Cors, CorsLayer};

/// Which origins may read: any (`*`), or those listed.
#[derive(Clone)]
pub enum Origins {
    Any,
    List(Arc<[HeaderValue]>),
}

/// The prebuilt values of a non-preflight answer, and tower-http's layer for
/// preflights.
pub struct Config {
    origins: Origins,
    vary: HeaderValue,
    expose: HeaderValue,
    preflight: CorsLayer,
}

/// tower-http's `Vary` on a CORS answer.
const VARY: &str = "origin, access-control-request-method, access-control-request-headers";
/// The headers the server exposes ([`super::security::tower_cors`]), joined.
const EXPOSE: &str = "x-request-id,ratelimit,ratelimit-policy,retry-after";

/// See the module doc.
#[derive(Clone)]
pub struct CorsEdgeLayer(Arc<Config>);

impl CorsEdgeLayer {
    /// `preflight` must be configured with the same origins, `Vary` (tower-http's
    /// default) and exposed headers (`expose`).
    pub fn new(origins: Origins, expose: &[HeaderName], preflight: CorsLayer) -> Self {
        const ANY: &str = "*";
        let join = |names: &[&str], sep: &str| names.join(sep);
        let vary = join(
            &[
                header::ORIGIN.as_str(),
                header::ACCESS_CONTROL_REQUEST_METHOD.as_str(),
                header::ACCESS_CONTROL_REQUEST_HEADERS.as_str(),
            ],
            ", ",
        );
        let expose: Vec<&str> = expose.iter().map(HeaderName::as_str).collect();
        // The server's values as constants (a clone is a copy, no reference count to
        // touch per response); any other configuration built here.
        let value = |s: String| match s.as_str() {
            VARY => HeaderValue::from_static(VARY),
            EXPOSE => HeaderValue::from_static(EXPOSE),
            _ => HeaderValue::from_str(&s).unwrap_or(HeaderValue::from_static(ANY)),
        };
        CorsEdgeLayer(Arc::new(Config {
            origins,
            vary: value(vary),
            expose: value(join(&expose, ",")),
            preflight,
        }))
    }
}

impl<S> Layer<S> for CorsEdgeLayer {
    type Service = CorsEdge<S>;
    fn layer(&self, inner: S) -> CorsEdge<S> {
        CorsEdge {
            inner,
            config: Arc::clone(&self.0),
        }
    }
}

#[derive(Clone)]
pub struct CorsEdge<S> {
    inner: S,
    config: Arc<Config>,
}

impl<S> Service<Request> for CorsEdge<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone,
{
    type Response = Response;
    type Error = Infallible;
    type Future = CorsFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        if req.method() == Method::OPTIONS {
            let mut cors: Cors<S> = self.config.preflight.layer(self.inner.clone());
            return CorsFuture::Preflight { fut: cors.call(req) };
        }
        const ANY: HeaderValue = HeaderValue::from_static("*");
        let allow = match &self.config.origins {
            Origins::Any => Some(ANY),
            Origins::List(list) => req.headers().get(header::ORIGIN).filter(|o| list.contains(o)).cloned(),
        };
        CorsFuture::Simple {
            fut: self.inner.call(req),
            allow,
            config: Arc::clone(&self.config),
        }
    }
}

pin_project! {
    /// The handler's future (its response gets the CORS headers), or tower-http's
    /// preflight answer.
    #[project = CorsProj]
    pub enum CorsFuture<F> {
        Simple { #[pin] fut: F, allow: Option<HeaderValue>, config: Arc<Config> },
        Preflight { #[pin] fut: tower_http::cors::ResponseFuture<F> },
    }
}

impl<F> Future for CorsFuture<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            CorsProj::Preflight { fut } => fut.poll(cx),
            CorsProj::Simple { fut, allow, config } => {
                let Ok(mut resp) = std::task::ready!(fut.poll(cx));
                let h = resp.headers_mut();
                // `Vary` may have other values: appended, as tower-http does.
                h.append(header::VARY, config.vary.clone());
                if let Some(origin) = allow.take() {
                    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
                }
                h.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, config.expose.clone());
                Poll::Ready(Ok(resp))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::routing::get;
    use axum::Router;
    use tower::ServiceExt;

    use super::*;

    fn app() -> Router {
        Router::new()
            .route("/plain", get(|| async { "ok" }).post(|| async { "posted" }))
            .route("/varies", get(|| async { ([(header::VARY, "accept-encoding")], "ok") }))
    }

    /// Status, then every header in order (repeats kept), then the body.
    async fn seen(app: Router, req: axum::http::Request<Body>) -> (u16, Vec<(String, String)>, Vec<u8>) {
        let resp = app.oneshot(req).await.expect("infallible");
        let status = resp.status().as_u16();
        let mut headers: Vec<(String, String)> = resp
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect();
        // Within one name the order is kept; across names it is not part of HTTP.
        headers.sort_by(|a, b| a.0.cmp(&b.0));
        let body = axum::body::to_bytes(resp.into_body(), 4096)
            .await
            .expect("body")
            .to_vec();
        (status, headers, body)
    }

    fn requests() -> Vec<axum::http::Request<Body>> {
        let r = axum::http::Request::builder;
        let mut out = Vec::new();
        for origin in [None, Some("https://a.example"), Some("https://evil.example")] {
            for (method, path) in [
                ("GET", "/plain"),
                ("POST", "/plain"),
                ("GET", "/varies"),
                ("GET", "/nowhere"),
            ] {
                let mut b = r().method(method).uri(path);
                if let Some(o) = origin {
                    b = b.header(header::ORIGIN, o);
                }
                out.push(b.body(Body::empty()).expect("request"));
            }
            let mut pre = r()
                .method("OPTIONS")
                .uri("/plain")
                .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
                .header(header::ACCESS_CONTROL_REQUEST_HEADERS, "authorization");
            if let Some(o) = origin {
                pre = pre.header(header::ORIGIN, o);
            }
            out.push(pre.body(Body::empty()).expect("request"));
        }
        out
    }

    /// For any origin configuration, every request (with an allowed, a foreign or no
    /// `Origin`; simple, preflight, unknown route, a handler with its own `Vary`) gets
    /// exactly tower-http's answer.
    #[tokio::test]
    async fn answers_as_tower_http_does() {
        let configs: [&[&str]; 4] = [
            &[],
            &["*"],
            &["https://a.example"],
            &["https://b.example", "https://a.example"],
        ];
        for allowed in configs {
            let allowed: Vec<String> = allowed.iter().map(|s| (*s).to_owned()).collect();
            let (origins, expose, layer) = crate::http::security::cors_for(&allowed);
            let ours = app().layer(CorsEdgeLayer::new(origins, &expose, layer.clone()));
            let theirs = app().layer(layer);
            for (a, b) in requests().into_iter().zip(requests()) {
                let what = format!(
                    "{allowed:?} {} {} {:?}",
                    a.method(),
                    a.uri(),
                    a.headers().get(header::ORIGIN)
                );
                assert_eq!(seen(ours.clone(), a).await, seen(theirs.clone(), b).await, "{what}");
            }
        }
    }
}
