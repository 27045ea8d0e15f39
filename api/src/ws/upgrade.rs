//! `GET /api/v1/stream`: the WebSocket upgrade. Here, beside the session it starts,
//! rather than in the router, so the OpenAPI document can name it without importing
//! the router.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, State};
use axum::response::{IntoResponse, Response};
use axum::Extension;

use super::protocol::MAX_CLIENT_MESSAGE_BYTES;
use super::session;
use crate::auth::Caller;
use crate::http::conn::ConnLink;
use crate::state::AppState;

/// Initial read buffer of a WebSocket (see [`stream`]).
const READ_BUFFER_BYTES: usize = 4 * 1024;
/// Buffered frames go to the socket from this size on (see [`stream`]).
const WRITE_BUFFER_BYTES: usize = 16 * 1024;

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
    ws: WebSocketUpgrade,
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
    // was half the fan-out's CPU, and the buffer most of a connection's memory. Client
    // messages are small; a longer one still arrives whole (the buffer reserves a
    // frame's full length once its header is read). The write buffer keeps the
    // largest size it ever reached: it goes to the socket from 16 KiB on, so it stays
    // near that instead of 128 KiB per connection.
    ws.read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(WRITE_BUFFER_BYTES)
        .max_message_size(MAX_CLIENT_MESSAGE_BYTES)
        .max_frame_size(MAX_CLIENT_MESSAGE_BYTES)
        .on_upgrade(move |socket| session::run(socket, app, principal, peer, link.map(|l| l.0)))
}
