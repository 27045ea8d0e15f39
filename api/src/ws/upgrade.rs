//! `GET /api/v1/stream`: the WebSocket upgrade. Here, beside the session it starts,
//! rather than in the router, so the OpenAPI document can name it without importing
//! the router.
//!
//! axum's `WebSocketUpgrade` checks the request (its rejections are the answers to a
//! bad upgrade, unchanged), but the connection is then taken over here: the session
//! runs on [`super::socket::WebSocket`], which sends long messages in fragments so a
//! connection's write buffer stays small.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::header::{CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, UPGRADE};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use hyper::upgrade::OnUpgrade;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use super::protocol::MAX_CLIENT_MESSAGE_BYTES;
use super::session;
use super::socket::WebSocket;
use crate::auth::Caller;
use crate::http::conn::ConnLink;
use crate::state::AppState;

/// Initial read buffer of a WebSocket (see [`stream`]).
const READ_BUFFER_BYTES: usize = 1024;

/// A valid WebSocket upgrade request: what the session needs of it once axum's
/// extractor has checked it (method, `Connection`, `Upgrade`, version, key).
pub struct Upgrade {
    on_upgrade: OnUpgrade,
    key: HeaderValue,
}

impl<S: Send + Sync> FromRequestParts<S> for Upgrade {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        // Taken before axum's extractor removes it (a clone shares the one upgrade).
        let on_upgrade = parts.extensions.get::<OnUpgrade>().cloned();
        let key = parts.headers.get(SEC_WEBSOCKET_KEY).cloned();
        let checked = WebSocketUpgrade::from_request_parts(parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        drop(checked);
        match (on_upgrade, key) {
            (Some(on_upgrade), Some(key)) => Ok(Self { on_upgrade, key }),
            // axum's extractor refuses both cases first.
            _ => Err(StatusCode::UPGRADE_REQUIRED.into_response()),
        }
    }
}

impl Upgrade {
    /// The 101 answer; `session` runs on the upgraded connection once hyper hands it
    /// over (as axum's `on_upgrade` would).
    pub fn on_upgrade<F, Fut>(self, config: WebSocketConfig, session: F) -> Response
    where
        F: FnOnce(WebSocket) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let Ok(accept) = HeaderValue::from_str(&derive_accept_key(self.key.as_bytes())) else {
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        };
        let on_upgrade = self.on_upgrade;
        tokio::spawn(async move {
            if let Ok(upgraded) = on_upgrade.await {
                session(WebSocket::new(upgraded, config).await).await;
            }
        });
        (
            StatusCode::SWITCHING_PROTOCOLS,
            [
                (CONNECTION, HeaderValue::from_static("upgrade")),
                (UPGRADE, HeaderValue::from_static("websocket")),
                (SEC_WEBSOCKET_ACCEPT, accept),
            ],
        )
            .into_response()
    }
}

/// Credentials on the upgrade (a bearer token, or a signed request) authenticate the
/// connection up front; bad ones were refused before upgrading. Without any, clients
/// may send an `auth` op.
#[utoipa::path(
    get,
    path = "/stream",
    tag = "market",
    summary = "WebSocket stream (upgrade)",
    responses((status = 101, description = "WebSocket stream (upgrade)")),
)]
pub async fn stream(
    State(app): State<AppState>,
    caller: Option<Extension<Caller>>,
    link: Option<Extension<ConnLink>>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    ws: Upgrade,
) -> Response {
    let peer = peer.map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |p| p.0 .0.ip());
    let principal = match caller.map(|c| c.0) {
        None | Some(Caller::Anonymous(_)) => None,
        Some(c) => match crate::auth::principal(app.desk.orders.as_deref(), &c) {
            Ok(p) => Some(p),
            // A valid token for market data only (no order entry here).
            Err(e) if e.code == "ORDER_ENTRY_DISABLED" => None,
            Err(e) => return e.into_response(),
        },
    };
    // tungstenite zero-fills its whole read buffer before every read attempt, and a
    // session polls its socket each time it wakes: at the default 128 KiB that memset
    // was half the fan-out's CPU, and the buffer most of a connection's memory. It is
    // allocated up front and kept: client messages are small (a subscribe is ~100
    // bytes), so 1 KiB; a longer one still arrives whole (the buffer reserves a
    // frame's full length once its header is read). The write buffer: see
    // `super::socket`.
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_BYTES)
        .max_message_size(Some(MAX_CLIENT_MESSAGE_BYTES))
        .max_frame_size(Some(MAX_CLIENT_MESSAGE_BYTES));
    ws.on_upgrade(config, move |socket| {
        session::run(socket, app, principal, peer, link.map(|l| l.0))
    })
}
