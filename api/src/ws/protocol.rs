//! The `/api/v1/stream` wire protocol (JSON text frames).
//!
//! Client to server:
//!   `{"op":"subscribe","channels":["quotes.BTCUSDT","book.BTCUSDT"],"id":"r1"}`
//!   `{"op":"unsubscribe","channels":["book.BTCUSDT"],"id":"r2"}`
//!   `{"op":"ping","id":"r3"}`
//!   `{"op":"auth","token":"<JWT>","id":"r4"}` (or send `Authorization: Bearer` on the
//!   upgrade request); needed for the private channels and order entry.
//!   `{"op":"order.new","id":"c1","idempotency_key":"k1","order":{...as POST /api/v1/orders...}}`
//!   (`idempotency_key` optional, shared with REST's `Idempotency-Key` per account),
//!   `{"op":"order.cancel","id":"c2","order_id":"123"}`,
//!   `{"op":"order.replace","id":"c3","order_id":"123","qty":"5","price":"100.05"}`.
//! Server to client:
//!   `{"type":"subscribed","id":"r1","channels":[...]}` / `"unsubscribed"` / `"pong"`
//!   `{"type":"snapshot","channel":"quotes.BTCUSDT","seq":1,"engine_ts_us":1733500000123456,"data":{...}}`
//!   on subscribe, `{"type":"update","channel":"quotes.BTCUSDT","seq":2,"engine_ts_us":...,"data":{...}}`
//!   after it; `seq` counts messages per channel on this connection, from 1, with no
//!   gaps. `engine_ts_us` (integer, on every snapshot and update, public and private):
//!   Unix microseconds when the engine published the newest event behind the message
//!   (a conflated quote or book: the newest update folded into it; a trade or bar: its
//!   own; a private update: the order event's time; a private snapshot: when it was
//!   read); 0 when no event is behind it yet (the empty snapshot of a channel with no
//!   data). Client receive time minus it is the end-to-end delivery latency.
//!   A trades/bars update may carry `"missed":N`: the N messages before it on that
//!   channel were skipped because the client read too slowly (each channel keeps its
//!   last `ws_queue_capacity` messages, shared by every connection; a connection that
//!   is behind gets at most the newest 64 per write and 10 ms of its pacing interval,
//!   none while its writes wait for it to read or it answers the server's probe pings
//!   `ws_max_client_lag_ms` later than its round trip, and none that waited over
//!   `ws_max_queue_lag_ms`); quotes and books
//!   are conflated to the latest state instead. Key order: `type`, `channel`, `seq`,
//!   `missed` (when present), `engine_ts_us`, `data`.
//!   `{"type":"heartbeat","ts_us":...}` every `ws_heartbeat_secs`.
//!   `{"type":"error","id":"r1","error":{"code":"UNKNOWN_SYMBOL","message":"..."}}`.
//!   `{"type":"authenticated","id":"r4","account":"alice","role":"trader"}`.
//!   `{"type":"order.ack","id":"c1","data":{"order":{...},"fills":[...],"cancelled":[...]}}`
//!   answers an order op (the same body as the REST route); refusals come as `error`
//!   with the same codes as REST.
//! Private channels (after auth): `orders` (every state change of the account's orders:
//! `{"event":"filled","reason":null,"order":{...}}`), `fills`, `positions`. Their snapshot
//! is the open orders / recent fills / positions; updates are never dropped or
//! conflated. A client that falls `ws_private_queue_capacity` messages behind is closed
//! with code 4008 ([`CLOSE_PRIVATE_OVERFLOW`]) and must resync over REST.
//! Close codes: 1001 idle (nothing heard for `ws_idle_timeout_secs`), 1009 a client
//! message or frame over [`MAX_CLIENT_MESSAGE_BYTES`], 4008 private overflow, 4009 a
//! client that does not read: a batch of writes did not complete within
//! `ws_write_timeout_ms` ([`CLOSE_SLOW_CONSUMER`]; reconnect and resubscribe).
//!
//! Every client message spends from the connection's bucket at its caller's tier
//! (`[rate_limits]`: anonymous, or the token's tier; signed services unlimited); past
//! it, an `error` with code `RATE_LIMITED`. A connection is closed with 4401
//! ([`CLOSE_TOKEN_EXPIRED`]) when its token expires (authenticate again on a new
//! connection, or send `auth` with a fresh token for the same account before then), and
//! with 4429 ([`CLOSE_POLICY`]) after `ws_auth_failures_per_connection` failed `auth`
//! messages or [`MAX_REFUSED_MESSAGES`] messages in a row past its rate limit.

use serde::{Deserialize, Serialize};

/// Close code for a connection whose private channels could not be delivered in full.
pub const CLOSE_PRIVATE_OVERFLOW: u16 = 4008;

/// Close code for a client that did not read what was sent within `ws_write_timeout_ms`.
pub const CLOSE_SLOW_CONSUMER: u16 = 4009;

/// Close code for a client message or frame over [`MAX_CLIENT_MESSAGE_BYTES`] (RFC 6455).
pub const CLOSE_MESSAGE_TOO_BIG: u16 = 1009;
/// Close code for a connection whose token expired.
pub const CLOSE_TOKEN_EXPIRED: u16 = 4401;

/// Close code for a connection that failed authentication too often, or kept sending
/// past its rate limit.
pub const CLOSE_POLICY: u16 = 4429;

/// Messages refused in a row by the rate limit before the connection is closed.
pub const MAX_REFUSED_MESSAGES: u32 = 50;

/// Largest accepted client frame.
pub const MAX_CLIENT_MESSAGE_BYTES: usize = 16 * 1024;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientMessage {
    pub op: String,
    #[serde(default)]
    pub channels: Vec<String>,
    /// Echoed in the reply so clients can match requests and answers.
    #[serde(default)]
    pub id: Option<serde_json::Value>,
    /// `auth`: the JWT.
    #[serde(default)]
    pub token: Option<String>,
    /// `order.new`: the order, as the REST body.
    #[serde(default)]
    pub order: Option<serde_json::Value>,
    /// `order.new`: as REST's `Idempotency-Key`.
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// `order.cancel` / `order.replace`.
    #[serde(default)]
    pub order_id: Option<String>,
    #[serde(default)]
    pub qty: Option<String>,
    #[serde(default)]
    pub price: Option<String>,
}

#[derive(Serialize)]
pub struct Ack<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<&'a serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channels: Option<&'a [String]>,
}

#[derive(Serialize)]
pub struct ErrorBody<'a> {
    pub code: &'a str,
    pub message: &'a str,
}

#[derive(Serialize)]
pub struct ErrorMessage<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<&'a serde_json::Value>,
    pub error: ErrorBody<'a>,
}

#[derive(Serialize)]
pub struct DataMessage<'a, T: Serialize> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub channel: &'a str,
    pub seq: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub missed: Option<u64>,
    /// When the engine published the (newest) event behind the message, Unix µs.
    pub engine_ts_us: i64,
    pub data: T,
}

#[derive(Serialize)]
pub struct Heartbeat {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub ts_us: i64,
}
