//! One WebSocket connection: subscriptions, snapshots, sequencing, heartbeats.
//!
//! A single task per connection selects over the client's frames, its public channels'
//! wake-ups ([`Reader`]), its private outbox and a heartbeat timer. Public messages
//! are the hub's shared payloads read at send time, so a slow client gets the newest
//! state rather than a backlog. A client that sends nothing (not even a
//! pong to our pings) for `ws_idle_timeout_secs` is closed with 1001 (going away). Every
//! batch of writes has `ws_write_timeout_ms` to reach the kernel: a client that stops
//! reading is closed with 4009 (and reset when not even the close frame can be sent), so
//! it never pins the session (and with it the idle check and the 4008 overflow close)
//! or the kernel's buffers for long. A frame or message over the size limit is answered
//! with close 1009.
//!
//! Order entry here has REST's guarantees: the same placement code (idempotency keys
//! included), the caller's tier limiting every message, the token's expiry re-checked
//! (4401 when it passes), and failed `auth` messages limited per address and per
//! connection (4429).

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes};
use axum::http::StatusCode;
use serde::Serialize;
use serde_json::Value;
use stocksblitz_engine::orders::{CommandKind, OrderEvent, OrderEventData, OrderEventKind};
use stocksblitz_engine::UnixNanos;
use tokio::sync::mpsc;

use super::channel::ChannelKey;
use super::lag::LagProbe;
use super::outbox::Outbox;
use super::pacing::Pacing;
use super::protocol::{
    Ack, ClientMessage, DataMessage, ErrorBody, ErrorMessage, Heartbeat, CLOSE_MESSAGE_TOO_BIG, CLOSE_POLICY,
    CLOSE_PRIVATE_OVERFLOW, CLOSE_SLOW_CONSUMER, CLOSE_TOKEN_EXPIRED, MAX_CLIENT_MESSAGE_BYTES, MAX_REFUSED_MESSAGES,
};
use super::reader::Reader;
use super::socket::WebSocket;
use crate::audit::Entry;
use crate::auth::{Principal, Role, Tier};
use crate::config::auth::Operation;
use crate::dto::micros;
use crate::foundation::ApiError;
use crate::http::conn::ConnLink;
use crate::orders::entry;
use crate::orders::json::{anomaly_json, anomaly_visible, events_json, fill_json, position_json, OrderJson};
use crate::ratelimit::gcra;
use crate::ratelimit::LimitTier;
use crate::state::AppState;

/// Close code for an idle client (RFC 6455 1001, going away).
const CLOSE_GOING_AWAY: u16 = 1001;

/// The 1009 close reason.
const TOO_BIG_REASON: &str = "message too large: at most 16384 bytes per message";
const _: () = assert!(MAX_CLIENT_MESSAGE_BYTES == 16_384, "update TOO_BIG_REASON");

/// How long a close frame may take to send, and the client's answer to arrive.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

struct Session {
    app: AppState,
    outbox: Arc<Outbox>,
    /// Public channels: where this connection is in each.
    reader: Reader,
    /// Messages for the next write, each one JSON text message: the reader's frames
    /// (slices of one buffer per collect) and our own messages (a `String` each,
    /// taken over without a copy).
    out: Vec<Bytes>,
    /// Who authenticated on this connection (private channels, order entry).
    principal: Option<Principal>,
    /// Subscribed private channels, their message numbers, and the order store's
    /// sequence their snapshot covered.
    private: [Option<PrivateSub>; 4],
    /// Answers of order ops, produced by their own tasks.
    replies: mpsc::Sender<Bytes>,
    conn_id: u64,
    /// The peer's address (failed `auth` messages spend its budget).
    peer: IpAddr,
    /// Failed `auth` messages on this connection.
    auth_failures: u32,
    /// The message bucket's TAT (GCRA) and the messages refused in a row.
    msg_tat: Option<i64>,
    refused_in_row: u32,
    /// Set by a message handler: end the session this way.
    close: Option<End>,
}

#[derive(Debug, Clone, Copy)]
struct PrivateSub {
    seq: u64,
    cutoff: u64,
}

/// The private channels, in `Session::private` order (`anomalies` is filtered per
/// caller: admins see all, others market-data anomalies and their own).
const PRIVATE: [&str; 4] = ["orders", "fills", "positions", "anomalies"];
const ANOMALIES: usize = 3;

fn private_index(name: &str) -> Option<usize> {
    PRIVATE.iter().position(|p| *p == name)
}

/// `v` as a JSON text message (the serialized `String`, taken over without a copy).
fn to_text<T: Serialize>(v: &T) -> Bytes {
    match serde_json::to_string(v) {
        Ok(s) => Bytes::from(s),
        Err(_) => {
            Bytes::from_static(br#"{"type":"error","error":{"code":"INTERNAL","message":"serialization failed"}}"#)
        }
    }
}

impl Session {
    fn error(&mut self, id: Option<&serde_json::Value>, code: &str, message: &str) {
        self.app.hub.stats.client_errors.fetch_add(1, Ordering::Relaxed);
        self.out.push(to_text(&ErrorMessage {
            kind: "error",
            id,
            error: ErrorBody { code, message },
        }));
    }

    fn handle_text(&mut self, text: &str) {
        let msg: ClientMessage = match serde_json::from_str(text) {
            Ok(m) => m,
            Err(e) => {
                // Garbage costs from the bucket like any message.
                if let Err(limited) = self.spend_message() {
                    return self.error(None, limited.code, &limited.message);
                }
                let m = format!(
                    "not a valid request: {e}; expected {{\"op\":\"subscribe\",\"channels\":[\"quotes.SYM\"]}}"
                );
                return self.error(None, "BAD_MESSAGE", &m);
            }
        };
        let id = msg.id.as_ref();
        if self.token_expired() {
            self.close = Some(End::TokenExpired);
            return;
        }
        if let Err(e) = self.spend_message() {
            return self.error(id, e.code, &e.message);
        }
        match msg.op.as_str() {
            "subscribe" | "unsubscribe" => {
                if msg.channels.is_empty() {
                    return self.error(id, "BAD_MESSAGE", "\"channels\" must list at least one channel");
                }
                let registry = Arc::clone(&self.app.desk.market.registry);
                let mut keys = Vec::with_capacity(msg.channels.len());
                let mut private = Vec::new();
                for name in &msg.channels {
                    if let Some(i) = private_index(name) {
                        if self.principal.is_none() {
                            return self.error(
                                id,
                                "UNAUTHORIZED",
                                "private channels need authentication: send {\"op\":\"auth\",\"token\":\"...\"} first",
                            );
                        }
                        private.push(i);
                        continue;
                    }
                    match ChannelKey::parse(name, &registry) {
                        Ok(k) => keys.push(k),
                        Err(e) => return self.error(id, e.code, &e.message),
                    }
                }
                if msg.op == "subscribe" {
                    let new: HashSet<_> = keys.iter().filter(|k| !self.reader.contains(k)).collect();
                    if self.reader.len() + new.len() > self.app.config.ws_max_subscriptions {
                        let m = format!(
                            "at most {} channels per connection: unsubscribe some first",
                            self.app.config.ws_max_subscriptions
                        );
                        return self.error(id, "TOO_MANY_SUBSCRIPTIONS", &m);
                    }
                    self.out.push(to_text(&Ack {
                        kind: "subscribed",
                        id,
                        channels: Some(&msg.channels),
                    }));
                    for k in keys {
                        self.reader.subscribe(k, &mut self.out);
                    }
                    for i in private {
                        self.subscribe_private(i);
                    }
                } else {
                    for i in private {
                        self.unsubscribe_private(i);
                    }
                    for k in &keys {
                        self.reader.unsubscribe(k);
                    }
                    self.out.push(to_text(&Ack {
                        kind: "unsubscribed",
                        id,
                        channels: Some(&msg.channels),
                    }));
                }
            }
            "ping" => self.out.push(to_text(&Ack {
                kind: "pong",
                id,
                channels: None,
            })),
            "auth" => self.auth(id, msg.token.as_deref()),
            "order.new" | "order.cancel" | "order.replace" => self.order_op(&msg),
            other => {
                let m = format!(
                    "unknown op {other:?}: use subscribe, unsubscribe, ping, auth, order.new, order.cancel or order.replace"
                );
                self.error(id, "UNKNOWN_OP", &m)
            }
        }
    }

    /// The tier this connection's messages are limited by (`None`: unlimited).
    fn tier(&self) -> Option<LimitTier> {
        match &self.principal {
            Some(p) => p.tier.map(|t| match t {
                Tier::Standard => LimitTier::Authenticated,
                Tier::Premium => LimitTier::Premium,
            }),
            None => Some(crate::auth::caller::anonymous_tier(&self.app.access, self.peer, true).1),
        }
    }

    /// Spends one message from the connection's bucket; past it, the refusal (and,
    /// [`MAX_REFUSED_MESSAGES`] refusals in a row, the end of the connection).
    fn spend_message(&mut self) -> Result<(), ApiError> {
        let Some(tier) = self.tier() else {
            return Ok(());
        };
        let rate = self.app.access.limiter.rate(tier);
        let now = UnixNanos::now().0 / 1_000;
        let (d, tat) = gcra::check(rate, self.msg_tat, now);
        // Stored on a refusal too (a clock that stepped back is clamped there).
        self.msg_tat = tat.or(self.msg_tat);
        if d.allowed {
            self.refused_in_row = 0;
            return Ok(());
        }
        self.refused_in_row += 1;
        if self.refused_in_row >= MAX_REFUSED_MESSAGES {
            self.close = Some(End::Policy("too many messages past the rate limit"));
        }
        Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "RATE_LIMITED",
            format!(
                "rate limit of {} messages per minute on this connection ({} tier) reached: retry after {} s",
                rate.limit,
                tier.as_str(),
                d.retry_after_secs
            ),
        ))
    }

    /// Whether the connection's token has expired (past the leeway).
    fn token_expired(&self) -> bool {
        let leeway = self.app.access.auth.as_ref().map_or(0, |a| a.tokens.leeway_secs());
        self.principal
            .as_ref()
            .is_some_and(|p| p.expired(crate::auth::jwt::now_secs(), leeway))
    }

    fn auth(&mut self, id: Option<&serde_json::Value>, token: Option<&str>) {
        let Some(token) = token else {
            return self.error(
                id,
                "BAD_MESSAGE",
                "\"token\" is required: {\"op\":\"auth\",\"token\":\"<JWT>\"}",
            );
        };
        if self.principal.as_ref().is_some_and(|p| p.service.is_some()) {
            return self.error(id, "ALREADY_AUTHENTICATED", "this connection is already authenticated");
        }
        // An address that failed too often is refused before the token is checked.
        if let Some((e, _)) = crate::auth::caller::auth_refused(&self.app.access, self.peer) {
            self.connection_auth_failed();
            return self.error(id, e.code, &e.message);
        }
        match crate::auth::authenticate(self.app.access.auth.as_deref(), self.app.desk.orders.as_deref(), token) {
            Ok(p) => {
                // A fresh token for the same account extends the connection's life.
                if let Some(current) = &self.principal {
                    if current.account != p.account {
                        return self.error(
                            id,
                            "ALREADY_AUTHENTICATED",
                            "this connection is authenticated for another account: open a new connection",
                        );
                    }
                }
                self.out.push(to_text(&serde_json::json!({
                    "type": "authenticated", "id": id, "account": p.name, "role": p.role.as_str(),
                    "expires_at": p.expires_at,
                })));
                let before = self.tier();
                self.principal = Some(p);
                // A new tier starts a bucket of its own (a refresh keeps the old one).
                if self.tier() != before {
                    self.msg_tat = None;
                    self.refused_in_row = 0;
                }
            }
            Err(e) => {
                let e =
                    crate::auth::caller::auth_failure(&self.app.access, self.peer, &self.request_id(id), "WS auth", e);
                self.connection_auth_failed();
                self.error(id, e.code, &e.message)
            }
        }
    }

    /// Counts a failed `auth` on this connection; enough of them end it.
    fn connection_auth_failed(&mut self) {
        self.auth_failures += 1;
        if self.auth_failures >= self.app.access.limiter.ws_auth_failures_per_connection {
            self.close = Some(End::Policy("too many failed auth attempts"));
        }
    }

    /// The audit log's request id of a message: the connection and the client's id.
    fn request_id(&self, id: Option<&serde_json::Value>) -> String {
        let mut tag = id.map_or_else(String::new, |v| match v {
            serde_json::Value::String(s) => s.clone(),
            v => v.to_string(),
        });
        tag.truncate(64);
        format!("ws-{}-{tag}", self.conn_id)
    }

    /// Runs an order op on its own task; the answer comes back through `replies`.
    fn order_op(&mut self, msg: &ClientMessage) {
        let id = msg.id.clone();
        let Some(p) = self.principal.clone() else {
            return self.error(
                id.as_ref(),
                "UNAUTHORIZED",
                "order entry needs authentication: send {\"op\":\"auth\",\"token\":\"...\"} first",
            );
        };
        if let Err(e) = p.require(Role::Trader) {
            return self.error(id.as_ref(), e.code, &e.message);
        }
        if msg.op == "order.new" {
            return self.order_new(msg, p);
        }
        let Some(raw) = msg.order_id.as_deref() else {
            return self.error(id.as_ref(), "BAD_MESSAGE", "\"order_id\" is required");
        };
        let command = entry::order_id(raw).and_then(|oid| {
            if msg.op == "order.cancel" {
                Ok((CommandKind::Cancel { order: oid }, Some(oid)))
            } else {
                entry::replace_command(&self.app.desk, &p, oid, msg.qty.as_deref(), msg.price.as_deref())
                    .map(|k| (k, Some(oid)))
            }
        });
        let (kind, target) = match command {
            Ok(c) => c,
            Err(e) => return self.error(id.as_ref(), e.code, &e.message),
        };
        let (op, action) = match msg.op.as_str() {
            "order.cancel" => (Operation::Cancel, "order.cancel"),
            _ => (Operation::Modify, "order.replace"),
        };
        let permit = match p.allow(op).and_then(|()| self.app.access.audit.reserve()) {
            Ok(permit) => permit,
            Err(e) => return self.error(id.as_ref(), e.code, &e.message),
        };
        let request_id = self.request_id(id.as_ref());
        let app = self.app.clone();
        let replies = self.replies.clone();
        tokio::spawn(async move {
            let result = entry::submit(&app.desk, &p, kind).await;
            permit.record(Entry {
                action,
                actor: p.actor(),
                request_id,
                outcome: result.as_ref().map_or_else(|e| e.code.to_owned(), |_| "ok".to_owned()),
                status: result.as_ref().map_or_else(|e| e.status.as_u16(), |_| 200),
                details: serde_json::json!({ "order_id": target.map(|o| o.0), "via": "websocket" }),
                at_ns: UnixNanos::now().0,
            });
            let text = match result {
                Ok(events) => to_text(&serde_json::json!({
                    "type": "order.ack",
                    "id": id,
                    "data": events_json(&events, &app.desk.market.registry, p.account, target),
                })),
                Err(e) => to_text(&ErrorMessage {
                    kind: "error",
                    id: id.as_ref(),
                    error: ErrorBody {
                        code: e.code,
                        message: &e.message,
                    },
                }),
            };
            let _ = replies.send(text).await;
        });
    }

    /// `order.new`: the same placement as `POST /api/v1/orders` (idempotency key and
    /// all), on its own task; audited as `order.place`.
    fn order_new(&mut self, msg: &ClientMessage, p: Principal) {
        let id = msg.id.clone();
        let Some(order) = msg.order.as_ref() else {
            return self.error(
                id.as_ref(),
                "BAD_MESSAGE",
                "\"order\" is required: the same object as POST /api/v1/orders",
            );
        };
        if !order.is_object() {
            return self.error(
                id.as_ref(),
                "INVALID_BODY",
                "\"order\" must be an object: the same as the body of POST /api/v1/orders",
            );
        }
        let body = order.to_string().into_bytes();
        let key = msg.idempotency_key.clone();
        if let Some(Err(e)) = key.as_deref().map(crate::http::orders::idempotency_key) {
            return self.error(id.as_ref(), e.code, &e.message);
        }
        let permit = match p.allow(Operation::Place).and_then(|()| self.app.access.audit.reserve()) {
            Ok(permit) => permit,
            Err(e) => return self.error(id.as_ref(), e.code, &e.message),
        };
        let request_id = self.request_id(id.as_ref());
        let app = self.app.clone();
        let replies = self.replies.clone();
        tokio::spawn(async move {
            let result = crate::http::orders::place_keyed(&app.desk, &p, key.as_deref(), &body).await;
            // A replayed refusal answers as the refusal it was.
            let result: Result<Value, (u16, String, String)> = match result {
                Ok((status, v)) if status.is_success() => Ok(v),
                Ok((status, v)) => Err((
                    status.as_u16(),
                    v["error"]["code"].as_str().unwrap_or("ERROR").to_owned(),
                    v["error"]["message"].as_str().unwrap_or("").to_owned(),
                )),
                Err(e) => Err((e.status.as_u16(), e.code.to_owned(), e.message)),
            };
            permit.record(Entry {
                action: "order.place",
                actor: p.actor(),
                request_id,
                outcome: result.as_ref().map_or_else(|e| e.1.clone(), |_| "ok".to_owned()),
                status: result.as_ref().map_or_else(|e| e.0, |_| 201),
                details: serde_json::json!({ "via": "websocket", "idempotency_key": key.is_some() }),
                at_ns: UnixNanos::now().0,
            });
            let text = match result {
                Ok(data) => to_text(&serde_json::json!({ "type": "order.ack", "id": id, "data": data })),
                Err((_, code, message)) => to_text(&ErrorMessage {
                    kind: "error",
                    id: id.as_ref(),
                    error: ErrorBody {
                        code: &code,
                        message: &message,
                    },
                }),
            };
            let _ = replies.send(text).await;
        });
    }

    /// Registers for the account's events, then snapshots from the order store; queued
    /// events the snapshot already covered are skipped by sequence. On an API node the
    /// replicas are read-locked before registering and their links hand events on
    /// under the write lock, so every event is in the snapshot or queued, never both
    /// (several engines' sequences cannot be cut at one number).
    fn subscribe_private(&mut self, i: usize) {
        let (Some(p), Some(svc)) = (self.principal.clone(), self.app.desk.orders.clone()) else {
            return;
        };
        if self.private.get(i).is_some_and(Option::is_some) {
            return;
        }
        let stores: Vec<_> = svc.stores().iter().map(|s| s.read()).collect();
        if i == ANOMALIES {
            self.app.hub.subscribe_anomalies(&self.outbox);
        } else {
            self.app.hub.subscribe_private(p.account, &self.outbox);
        }
        let registry = Arc::clone(&self.app.desk.market.registry);
        let cutoff = match stores.as_slice() {
            [one] => one.last_seq(),
            _ => 0,
        };
        let admin = p.role == Role::Admin;
        let data = match i {
            ANOMALIES => {
                let mut recent: Vec<_> = stores
                    .iter()
                    .flat_map(|s| s.anomalies(0).rev().take(100))
                    .filter(|(_, a)| anomaly_visible(a, p.account, admin))
                    .collect();
                recent.sort_by_key(|(seq, a)| std::cmp::Reverse((a.at, *seq)));
                recent.truncate(100);
                recent.reverse();
                let recent: Vec<_> = recent
                    .into_iter()
                    .map(|(seq, a)| anomaly_json(*seq, a, &svc.accounts, &registry))
                    .collect();
                serde_json::json!({ "anomalies": recent })
            }
            0 => {
                let mut open: Vec<_> = stores
                    .iter()
                    .flat_map(|s| s.orders(p.account, None))
                    .filter(|r| r.order.status.is_open())
                    .collect();
                if stores.len() > 1 {
                    open.sort_by_key(|r| std::cmp::Reverse((r.order.created, r.seq)));
                }
                let open: Vec<_> = open
                    .into_iter()
                    .filter_map(|r| {
                        registry
                            .get(r.order.instrument)
                            .map(|inst| serde_json::json!(OrderJson::new(&r.order, inst)))
                    })
                    .collect();
                serde_json::json!({ "orders": open })
            }
            1 => {
                let mut fills: Vec<_> = stores.iter().flat_map(|s| s.fills(p.account).take(100)).collect();
                if stores.len() > 1 {
                    fills.sort_by_key(|f| std::cmp::Reverse((f.at, f.id)));
                }
                let fills: Vec<_> = fills
                    .into_iter()
                    .take(100)
                    .filter_map(|f| registry.get(f.instrument).map(|inst| fill_json(f, inst)))
                    .collect();
                serde_json::json!({ "fills": fills })
            }
            _ => {
                let mirror = self.app.desk.market.mirror.read();
                let positions: Vec<_> = stores
                    .iter()
                    .flat_map(|s| s.positions(p.account))
                    .filter_map(|(iid, pos)| {
                        let inst = registry.get(iid)?;
                        Some(position_json(pos, inst, mirror.get(iid).and_then(|v| v.mark_price())))
                    })
                    .collect();
                serde_json::json!({ "positions": positions })
            }
        };
        drop(stores);
        if let Some(slot) = self.private.get_mut(i) {
            *slot = Some(PrivateSub { seq: 0, cutoff });
        }
        self.push_private(i, "snapshot", UnixNanos::now(), data);
    }

    fn unsubscribe_private(&mut self, i: usize) {
        if let Some(slot) = self.private.get_mut(i) {
            *slot = None;
        }
        if i == ANOMALIES {
            self.app.hub.unsubscribe_anomalies(self.outbox.id);
            return;
        }
        if self.private.iter().take(ANOMALIES).all(Option::is_none) {
            if let Some(p) = &self.principal {
                self.app.hub.unsubscribe_private(p.account, self.outbox.id);
            }
        }
    }

    /// A private channel message; `at`: when the engine published the event behind it
    /// (for a snapshot, when it was read).
    fn push_private(&mut self, i: usize, kind: &'static str, at: UnixNanos, data: serde_json::Value) {
        let Some(Some(sub)) = self.private.get_mut(i) else {
            return;
        };
        sub.seq += 1;
        let seq = sub.seq;
        self.out.push(to_text(&DataMessage {
            kind,
            channel: PRIVATE.get(i).copied().unwrap_or(""),
            seq,
            missed: None,
            engine_ts_us: micros(at).unwrap_or(0),
            data,
        }));
    }

    /// The account's order events as private channel updates, in engine order.
    fn render_private(&mut self, events: Vec<OrderEvent>) {
        let market = Arc::clone(&self.app.desk.market);
        for e in events {
            let (i, data) = match e.data {
                OrderEventData::Order { kind, order } => {
                    let Some(inst) = market.registry.get(order.instrument) else {
                        continue;
                    };
                    let reason = match kind {
                        OrderEventKind::Cancelled(r) => Some(r.as_str()),
                        _ => None,
                    };
                    (
                        0,
                        serde_json::json!({ "event": kind.as_str(), "reason": reason, "order": OrderJson::new(&order, inst) }),
                    )
                }
                OrderEventData::Fill(f) => {
                    let Some(inst) = market.registry.get(f.instrument) else {
                        continue;
                    };
                    (1, fill_json(&f, inst))
                }
                OrderEventData::Position { instrument, position } => {
                    let Some(inst) = market.registry.get(instrument) else {
                        continue;
                    };
                    let mark = market.mirror.read().get(instrument).and_then(|v| v.mark_price());
                    (2, position_json(&position, inst, mark))
                }
                OrderEventData::Anomaly(a) => {
                    let (Some(p), Some(svc)) = (&self.principal, &self.app.desk.orders) else {
                        continue;
                    };
                    if !anomaly_visible(&a, p.account, p.role == Role::Admin) {
                        continue;
                    }
                    (ANOMALIES, anomaly_json(e.seq, &a, &svc.accounts, &market.registry))
                }
                _ => continue,
            };
            let fresh = self
                .private
                .get(i)
                .and_then(|s| s.as_ref())
                .is_some_and(|s| e.seq > s.cutoff);
            if fresh {
                self.push_private(i, "update", e.at, data);
            }
        }
    }

    /// The public channels' pending messages, within the batch limit of a connection
    /// whose pacing interval is `interval`.
    fn collect_public(&mut self, interval: Duration) {
        self.reader.set_max_batch(max_batch(interval));
        self.reader.collect(&mut self.out);
    }

    fn unsubscribe_all(&mut self) {
        self.reader = public_reader(&self.app);
        if let Some(p) = &self.principal {
            self.app.hub.unsubscribe_private(p.account, self.outbox.id);
        }
        self.app.hub.unsubscribe_anomalies(self.outbox.id);
        self.outbox.close();
    }
}

/// Why a session ended.
enum End {
    ClientClosed,
    /// Private messages could not all be delivered: the client must resync over REST.
    PrivateOverflow,
    Idle,
    /// A client frame or message over [`MAX_CLIENT_MESSAGE_BYTES`].
    TooBig,
    /// A batch of writes did not reach the kernel within `ws_write_timeout_ms`: the
    /// client does not read (fast enough).
    SlowConsumer,
    SendFailed,
    /// The connection's token expired.
    TokenExpired,
    /// Too many failed `auth` messages, or messages past the rate limit.
    Policy(&'static str),
}

/// How a batch of writes ended.
enum Flushed {
    Done,
    Failed,
    /// The write deadline passed first.
    TimedOut,
}

/// A write that takes this long waited for the client to read (a write the socket
/// takes at once is tens of microseconds): the connection is congested until one
/// goes through quicker ([`Reader::set_congested`]).
const CONGESTED_AFTER: Duration = Duration::from_millis(2);

/// A write carries at most this many of a channel's queued messages (trades, bars)
/// per [`QUEUED_PER`] of the connection's pacing interval, and never fewer: 64 trades
/// are ~16 KiB, a quarter of the socket's send buffer at the default
/// `ws_send_buffer_bytes`, and more than a connection gets per 10 ms when it keeps up
/// (5,000 trades/s is 50). So a reader that keeps up loses nothing below 6,400
/// messages a second per channel, however long the shared interval (many connections
/// write less often: [`Pacing`]); one that fell behind gets the newest of its backlog
/// and a `missed` count, so its writes stay small and its quotes and books frequent
/// (a congested connection's longer back-off does not raise its limit).
const MAX_QUEUED_PER_WRITE: u64 = 64;
const QUEUED_PER: Duration = Duration::from_millis(10);

/// The batch limit of a connection whose pacing interval is `interval`.
fn max_batch(interval: Duration) -> u64 {
    let periods = interval.as_nanos() / QUEUED_PER.as_nanos();
    MAX_QUEUED_PER_WRITE.saturating_mul(u64::try_from(periods).unwrap_or(u64::MAX).max(1))
}

/// A connection's public channels, with the configured lag limit.
fn public_reader(app: &AppState) -> Reader {
    Reader::new(Arc::clone(&app.hub)).with_max_lag(Duration::from_millis(app.config.ws_max_queue_lag_ms))
}

/// Completes at `due` (never without one; the select guards it).
async fn sleep_until(due: Option<tokio::time::Instant>) {
    match due {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Messages a connection's pending list keeps room for between writes: a burst (a
/// backlog of trades) grows it, and it is not held at that size for the connection's
/// life.
const OUT_KEPT: usize = 64;

async fn write_all(socket: &mut WebSocket, out: &mut Vec<Bytes>, ping: Option<[u8; 8]>, app: &AppState) -> bool {
    let n = out.len() as u64;
    let written = socket.write_texts(out, ping).await.is_ok();
    out.shrink_to(OUT_KEPT);
    if written {
        app.hub.stats.messages_sent.fetch_add(n, Ordering::Relaxed);
    }
    written
}

/// Sends what is pending within `deadline`: a client that does not read cannot hold
/// the session (and so its outbox, idle check and overflow close) in a write.
async fn flush(socket: &mut WebSocket, out: &mut Vec<Bytes>, app: &AppState, deadline: Duration) -> Flushed {
    flush_probed(socket, out, None, app, deadline).await
}

/// [`flush`], with a lag probe's ping after the messages if one is due.
async fn flush_probed(
    socket: &mut WebSocket,
    out: &mut Vec<Bytes>,
    ping: Option<[u8; 8]>,
    app: &AppState,
    deadline: Duration,
) -> Flushed {
    if out.is_empty() && ping.is_none() {
        return Flushed::Done;
    }
    match tokio::time::timeout(deadline, write_all(socket, out, ping, app)).await {
        Ok(true) => Flushed::Done,
        Ok(false) => Flushed::Failed,
        Err(_) => Flushed::TimedOut,
    }
}

/// The heartbeat message and a protocol-level ping (its pong proves the client reads).
async fn heartbeat(socket: &mut WebSocket, out: &mut Vec<Bytes>, app: &AppState, deadline: Duration) -> Flushed {
    out.push(to_text(&Heartbeat {
        kind: "heartbeat",
        ts_us: UnixNanos::now().0 / 1_000,
    }));
    let both = async {
        write_all(socket, out, None, app).await && socket.send(Message::Ping(Default::default())).await.is_ok()
    };
    match tokio::time::timeout(deadline, both).await {
        Ok(true) => Flushed::Done,
        Ok(false) => Flushed::Failed,
        Err(_) => Flushed::TimedOut,
    }
}

/// A receive error caused by a frame or message over the size limit.
fn too_big(e: axum::Error) -> bool {
    e.into_inner()
        .downcast_ref::<tungstenite::Error>()
        .is_some_and(|e| matches!(e, tungstenite::Error::Capacity(_)))
}

pub async fn run(
    mut socket: WebSocket,
    app: AppState,
    principal: Option<Principal>,
    peer: IpAddr,
    link: Option<ConnLink>,
) {
    let conn_id = app.next_connection_id();
    let stats = Arc::clone(&app.hub.stats);
    stats.connections.fetch_add(1, Ordering::Relaxed);
    stats.connections_total.fetch_add(1, Ordering::Relaxed);
    let outbox = Arc::new(Outbox::new(conn_id, app.config.ws_private_queue_capacity));
    let (replies, mut replies_rx) = mpsc::channel::<Bytes>(256);
    let heartbeat_every = Duration::from_secs(app.config.ws_heartbeat_secs);
    let idle_timeout = Duration::from_secs(app.config.ws_idle_timeout_secs);
    let write_timeout = Duration::from_millis(app.config.ws_write_timeout_ms);
    let mut s = Session {
        app: app.clone(),
        outbox: Arc::clone(&outbox),
        reader: public_reader(&app),
        out: Vec::new(),
        principal,
        private: [None; 4],
        replies,
        conn_id,
        peer,
        auth_failures: 0,
        msg_tat: None,
        refused_in_row: 0,
        close: None,
    };
    if let (Some(link), n) = (&link, app.config.ws_send_buffer_bytes) {
        if n > 0 {
            link.limit_send_buffer(n);
        }
    }
    let pacing = Pacing::new(&app.config);
    // The last market-data write, and when the next one is due if a publication came
    // before the pacing interval was over.
    let mut last_public = Instant::now();
    let mut due: Option<tokio::time::Instant> = None;
    // Longer than the shared interval while the client does not keep up.
    let mut backoff = Duration::ZERO;
    let mut probe = LagProbe::new(Duration::from_millis(app.config.ws_max_client_lag_ms));
    // The last write had to wait for the kernel to take it.
    let mut slow_write = false;
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + heartbeat_every, heartbeat_every);
    let mut last_heard = Instant::now();
    tracing::debug!(conn = conn_id, "websocket connected");
    let end = loop {
        let mut flushed = None;
        // This write carries market data (only those carry a lag probe).
        let mut market = false;
        tokio::select! {
            frame = socket.recv() => {
                last_heard = Instant::now();
                match frame {
                    None | Some(Ok(Message::Close(_))) => break End::ClientClosed,
                    Some(Err(e)) => break if too_big(e) { End::TooBig } else { End::ClientClosed },
                    Some(Ok(Message::Text(t))) => {
                        if t.len() > MAX_CLIENT_MESSAGE_BYTES {
                            break End::TooBig;
                        }
                        s.handle_text(t.as_str());
                        if let Some(end) = s.close.take() {
                            let _ = flush(&mut socket, &mut s.out, &app, write_timeout).await;
                            break end;
                        }
                    }
                    Some(Ok(Message::Binary(_))) => {
                        s.error(None, "BAD_MESSAGE", "binary frames are not supported: send JSON text frames");
                    }
                    Some(Ok(Message::Pong(payload))) => probe.on_pong(&payload, last_heard),
                    Some(Ok(Message::Ping(_))) => {}
                }
            }
            _ = s.reader.ready(), if due.is_none() => {
                let interval = pacing.interval(stats.connections.load(Ordering::Relaxed));
                let at = last_public + interval.max(backoff);
                let now = Instant::now();
                if at <= now {
                    s.reader.set_congested(slow_write || probe.lagging(now));
                    s.collect_public(interval);
                    market = true;
                    last_public = now;
                } else {
                    due = Some(tokio::time::Instant::from_std(at));
                }
            }
            _ = sleep_until(due), if due.is_some() => {
                due = None;
                // What was published since the wake-up is collected now.
                s.reader.rearm();
                s.reader.set_congested(slow_write || probe.lagging(Instant::now()));
                s.collect_public(pacing.interval(stats.connections.load(Ordering::Relaxed)));
                market = true;
                last_public = Instant::now();
            }
            _ = outbox.ready() => {
                let drained = outbox.drain();
                let overflow = drained.private_overflow;
                s.render_private(drained.private);
                if overflow {
                    let _ = flush(&mut socket, &mut s.out, &app, write_timeout).await;
                    break End::PrivateOverflow;
                }
            }
            Some(text) = replies_rx.recv() => {
                s.out.push(text);
            }
            _ = ticker.tick() => {
                if last_heard.elapsed() > idle_timeout {
                    break End::Idle;
                }
                if s.token_expired() {
                    break End::TokenExpired;
                }
                flushed = Some(heartbeat(&mut socket, &mut s.out, &app, write_timeout).await);
            }
        }
        let (started, writing) = (Instant::now(), !s.out.is_empty());
        // A lag probe goes with a market-data write, or alone when a congested
        // connection had nothing to write (its queued messages skipped), so that its
        // answer can end the congestion.
        let ping = if market && (writing || slow_write || probe.lagging(started)) {
            probe.due(started)
        } else {
            None
        };
        let flushed = match flushed {
            Some(f) => f,
            None => flush_probed(&mut socket, &mut s.out, ping, &app, write_timeout).await,
        };
        if writing || ping.is_some() {
            slow_write = started.elapsed() >= CONGESTED_AFTER;
        } else if market {
            // Nothing to write: the write that waited is done; the next collect tries.
            slow_write = false;
        }
        if writing || market {
            // The last write waited for the kernel, or the client is behind in reading
            // what the kernel took (its answer to a probe is late).
            let congested = slow_write || probe.lagging(Instant::now());
            backoff = if congested {
                pacing.backoff(backoff, stats.connections.load(Ordering::Relaxed))
            } else {
                Duration::ZERO
            };
        }
        match flushed {
            Flushed::Done => {}
            Flushed::Failed => break End::SendFailed,
            Flushed::TimedOut => break End::SlowConsumer,
        }
    };
    s.unsubscribe_all();
    stats.connections.fetch_sub(1, Ordering::Relaxed);
    let (code, reason) = match end {
        End::ClientClosed | End::SendFailed => (None, "closed"),
        End::Idle => {
            stats.closed_idle.fetch_add(1, Ordering::Relaxed);
            (Some(CLOSE_GOING_AWAY), "idle timeout")
        }
        End::PrivateOverflow => {
            stats.closed_private_overflow.fetch_add(1, Ordering::Relaxed);
            (
                Some(CLOSE_PRIVATE_OVERFLOW),
                "private channel overflow: resync over REST",
            )
        }
        End::TooBig => {
            stats.closed_too_big.fetch_add(1, Ordering::Relaxed);
            (Some(CLOSE_MESSAGE_TOO_BIG), TOO_BIG_REASON)
        }
        End::SlowConsumer => {
            stats.closed_slow_consumer.fetch_add(1, Ordering::Relaxed);
            (
                Some(CLOSE_SLOW_CONSUMER),
                "slow consumer: not reading; reconnect and resync",
            )
        }
        End::TokenExpired => (
            Some(CLOSE_TOKEN_EXPIRED),
            "token expired: connect again with a new token",
        ),
        End::Policy(r) => (Some(CLOSE_POLICY), r),
    };
    if let Some(code) = code {
        let close = Message::Close(Some(CloseFrame {
            code,
            reason: Utf8Bytes::from(reason),
        }));
        let sent = tokio::time::timeout(write_timeout.min(CLOSE_WAIT), socket.send(close)).await;
        if !matches!(sent, Ok(Ok(()))) {
            // Not even the close frame fits: the client does not read. Reset the
            // connection so the kernel drops what it still buffers for it at once.
            if let Some(link) = &link {
                link.reset_on_close();
            }
        } else {
            // Wait (briefly) for the client's close: what it still sends is read, so
            // the close frame is not lost to a reset over unread data.
            let _ = tokio::time::timeout(CLOSE_WAIT, async {
                while let Some(Ok(m)) = socket.recv().await {
                    if matches!(m, Message::Close(_)) {
                        break;
                    }
                }
            })
            .await;
        }
    }
    tracing::debug!(conn = conn_id, reason, "websocket closed");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 64 queued messages per channel per 10 ms of pacing interval, never fewer:
    /// a reader that keeps up loses nothing below 6,400 a second, whatever its interval.
    #[test]
    fn the_batch_limit_grows_with_the_write_interval() {
        assert_eq!(max_batch(Duration::ZERO), 64);
        assert_eq!(max_batch(Duration::from_millis(19)), 64);
        assert_eq!(max_batch(Duration::from_millis(20)), 128);
        assert_eq!(max_batch(Duration::from_millis(50)), 320);
        assert_eq!(max_batch(Duration::MAX), u64::MAX);
    }
}
