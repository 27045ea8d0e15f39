//! One WebSocket connection: subscriptions, snapshots, sequencing, heartbeats.
//!
//! A single task per connection selects over the client's frames, its outbox and a
//! heartbeat timer. Messages are built from the mirror at send time, so a slow client
//! gets the newest state rather than a backlog. A client that sends nothing (not even a
//! pong to our pings) for `ws_idle_timeout_secs` is closed with 1001 (going away).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::SinkExt;
use serde::Serialize;
use stocksblitz_engine::{BarInterval, BarState, UnixNanos};

use super::channel::{ChannelKey, ChannelKind};
use super::outbox::{Drained, Outbox, Queued};
use super::protocol::{Ack, ClientMessage, DataMessage, ErrorBody, ErrorMessage, Heartbeat, MAX_CLIENT_MESSAGE_BYTES};
use crate::dto::{BarDto, BookDto, QuoteDto, TradeDto};
use crate::state::AppState;

/// Close code for a client that sent an oversized or non-text frame (RFC 6455: 1009 /
/// 1003); for an idle client 1001.
const CLOSE_GOING_AWAY: u16 = 1001;

struct Session {
    app: AppState,
    outbox: Arc<Outbox>,
    subs: HashSet<ChannelKey>,
    /// Next message number per channel.
    seqs: HashMap<ChannelKey, u64>,
    /// Conflated channels whose first message (the snapshot) is still to be sent.
    need_snapshot: HashSet<ChannelKey>,
    /// Queued items with an engine seq at or below this were in the snapshot.
    cutoff: HashMap<ChannelKey, u64>,
    out: Vec<String>,
}

fn to_text<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v)
        .unwrap_or_else(|_| r#"{"type":"error","error":{"code":"INTERNAL","message":"serialization failed"}}"#.into())
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

    fn next_seq(&mut self, key: ChannelKey) -> u64 {
        let s = self.seqs.entry(key).or_insert(0);
        *s += 1;
        *s
    }

    fn push_data<T: Serialize>(&mut self, key: ChannelKey, kind: &'static str, missed: Option<u64>, data: T) {
        let seq = self.next_seq(key);
        let channel = key.name(&self.app.market.registry);
        self.out.push(to_text(&DataMessage {
            kind,
            channel: &channel,
            seq,
            missed,
            data,
        }));
    }

    fn handle_text(&mut self, text: &str) {
        let msg: ClientMessage = match serde_json::from_str(text) {
            Ok(m) => m,
            Err(e) => {
                let m = format!(
                    "not a valid request: {e}; expected {{\"op\":\"subscribe\",\"channels\":[\"quotes.SYM\"]}}"
                );
                return self.error(None, "BAD_MESSAGE", &m);
            }
        };
        let id = msg.id.as_ref();
        match msg.op.as_str() {
            "subscribe" | "unsubscribe" => {
                if msg.channels.is_empty() {
                    return self.error(id, "BAD_MESSAGE", "\"channels\" must list at least one channel");
                }
                let registry = Arc::clone(&self.app.market.registry);
                let mut keys = Vec::with_capacity(msg.channels.len());
                for name in &msg.channels {
                    match ChannelKey::parse(name, &registry) {
                        Ok(k) => keys.push(k),
                        Err(e) => return self.error(id, e.code, &e.message),
                    }
                }
                if msg.op == "subscribe" {
                    let new: HashSet<_> = keys.iter().filter(|k| !self.subs.contains(k)).collect();
                    if self.subs.len() + new.len() > self.app.config.ws_max_subscriptions {
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
                        if self.subs.insert(k) {
                            self.subscribe(k);
                        }
                    }
                } else {
                    for k in keys {
                        if self.subs.remove(&k) {
                            self.app.hub.unsubscribe(k, self.outbox.id);
                            self.seqs.remove(&k);
                            self.need_snapshot.remove(&k);
                            self.cutoff.remove(&k);
                        }
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
            other => {
                let m = format!("unknown op {other:?}: use subscribe, unsubscribe or ping");
                self.error(id, "UNKNOWN_OP", &m)
            }
        }
    }

    /// Registers with the hub first, then snapshots, so nothing falls between.
    fn subscribe(&mut self, key: ChannelKey) {
        self.app.hub.subscribe(key, &self.outbox);
        self.seqs.insert(key, 0);
        if key.kind.is_conflated() {
            self.need_snapshot.insert(key);
            self.outbox.mark(key, &self.app.hub.stats);
            return;
        }
        let market = Arc::clone(&self.app.market);
        let Some(inst) = market.registry.get(key.instrument) else {
            return;
        };
        let mirror = market.mirror.read();
        let Some(view) = mirror.get(key.instrument) else { return };
        self.cutoff.insert(key, view.seq);
        match key.kind {
            ChannelKind::Trades => {
                let trades: Vec<_> = view.trades.iter().map(|t| TradeDto::new(inst, t)).collect();
                self.push_data(
                    key,
                    "snapshot",
                    None,
                    serde_json::json!({ "symbol": inst.symbol, "trades": trades }),
                );
            }
            _ => {
                let mut bars = Vec::new();
                for iv in BarInterval::ALL {
                    let s = view.bars(iv);
                    if let Some(b) = s.closed.back() {
                        bars.push(BarDto::new(inst, b, BarState::Closed));
                    }
                    if let Some(b) = &s.current {
                        bars.push(BarDto::new(inst, b, BarState::Open));
                    }
                }
                self.push_data(
                    key,
                    "snapshot",
                    None,
                    serde_json::json!({ "symbol": inst.symbol, "bars": bars }),
                );
            }
        }
    }

    /// Turns what the outbox collected into messages.
    fn render(&mut self, drained: Drained) {
        let market = Arc::clone(&self.app.market);
        let registry = &market.registry;
        let mirror = market.mirror.read();
        let depth = self.app.config.ws_book_depth;
        let mut dirty = drained.dirty;
        dirty.sort();
        for key in dirty {
            if !self.subs.contains(&key) {
                continue;
            }
            let (Some(inst), Some(view)) = (registry.get(key.instrument), mirror.get(key.instrument)) else {
                continue;
            };
            let kind = if self.need_snapshot.remove(&key) {
                "snapshot"
            } else {
                "update"
            };
            match key.kind {
                ChannelKind::Quotes => self.push_data(key, kind, None, QuoteDto::new(inst, view)),
                ChannelKind::Book => self.push_data(key, kind, None, BookDto::new(inst, view, depth)),
                _ => {}
            }
        }
        let mut missed = drained.missed;
        for item in drained.queue {
            let key = item.key();
            if !self.subs.contains(&key) {
                continue;
            }
            let Some(inst) = registry.get(key.instrument) else {
                continue;
            };
            let cutoff = self.cutoff.get(&key).copied().unwrap_or(0);
            let m = missed.remove(&key);
            match item {
                Queued::Trade(_, t) if t.seq > cutoff => self.push_data(key, "update", m, TradeDto::new(inst, &t)),
                Queued::Bar(_, b, state) => self.push_data(key, "update", m, BarDto::new(inst, &b, state)),
                Queued::Trade(..) => {}
            }
        }
    }

    fn unsubscribe_all(&mut self) {
        for k in self.subs.drain() {
            self.app.hub.unsubscribe(k, self.outbox.id);
        }
        self.outbox.close();
    }
}

/// Why a session ended, for logs.
enum End {
    ClientClosed,
    Idle,
    Protocol(&'static str),
    SendFailed,
}

async fn flush(socket: &mut WebSocket, out: &mut Vec<String>, app: &AppState) -> bool {
    if out.is_empty() {
        return true;
    }
    let n = out.len() as u64;
    for text in out.drain(..) {
        if socket.feed(Message::Text(Utf8Bytes::from(text))).await.is_err() {
            return false;
        }
    }
    app.hub.stats.messages_sent.fetch_add(n, Ordering::Relaxed);
    socket.flush().await.is_ok()
}

pub async fn run(mut socket: WebSocket, app: AppState) {
    let conn_id = app.next_connection_id();
    let stats = Arc::clone(&app.hub.stats);
    stats.connections.fetch_add(1, Ordering::Relaxed);
    stats.connections_total.fetch_add(1, Ordering::Relaxed);
    let outbox = Arc::new(Outbox::new(conn_id, app.config.ws_queue_capacity));
    let heartbeat_every = Duration::from_secs(app.config.ws_heartbeat_secs);
    let idle_timeout = Duration::from_secs(app.config.ws_idle_timeout_secs);
    let mut s = Session {
        app: app.clone(),
        outbox: Arc::clone(&outbox),
        subs: HashSet::new(),
        seqs: HashMap::new(),
        need_snapshot: HashSet::new(),
        cutoff: HashMap::new(),
        out: Vec::new(),
    };
    let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + heartbeat_every, heartbeat_every);
    let mut last_heard = Instant::now();
    tracing::debug!(conn = conn_id, "websocket connected");
    let end = loop {
        tokio::select! {
            frame = socket.recv() => {
                last_heard = Instant::now();
                match frame {
                    None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break End::ClientClosed,
                    Some(Ok(Message::Text(t))) => {
                        if t.len() > MAX_CLIENT_MESSAGE_BYTES {
                            break End::Protocol("message too large");
                        }
                        s.handle_text(t.as_str());
                    }
                    Some(Ok(Message::Binary(_))) => {
                        s.error(None, "BAD_MESSAGE", "binary frames are not supported: send JSON text frames");
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                }
            }
            _ = outbox.ready() => {
                let drained = outbox.drain();
                s.render(drained);
            }
            _ = heartbeat.tick() => {
                if last_heard.elapsed() > idle_timeout {
                    break End::Idle;
                }
                s.out.push(to_text(&Heartbeat { kind: "heartbeat", ts_us: UnixNanos::now().0 / 1_000 }));
                // A protocol-level ping too: its pong proves the client still reads.
                if !flush(&mut socket, &mut s.out, &app).await || socket.send(Message::Ping(Default::default())).await.is_err() {
                    break End::SendFailed;
                }
            }
        }
        if !flush(&mut socket, &mut s.out, &app).await {
            break End::SendFailed;
        }
    };
    s.unsubscribe_all();
    stats.connections.fetch_sub(1, Ordering::Relaxed);
    let (code, reason) = match end {
        End::ClientClosed | End::SendFailed => (None, "closed"),
        End::Idle => (Some(CLOSE_GOING_AWAY), "idle timeout"),
        End::Protocol(r) => (Some(1009), r),
    };
    if let Some(code) = code {
        let _ = socket
            .send(Message::Close(Some(CloseFrame {
                code,
                reason: Utf8Bytes::from(reason),
            })))
            .await;
    }
    tracing::debug!(conn = conn_id, reason, "websocket closed");
}
