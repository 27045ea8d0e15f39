//! Coinbase Exchange as the simulator serves it: a subscribe handshake, a level2
//! snapshot per product, then `l2update`, `match`, `ticker` and a `heartbeat` per
//! product every second; plus the REST level2 book the handler audits against.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use stocksblitz_engine::{Aggressor, Level, UnixNanos};

use crate::sim::faults::{take, Faults};
use crate::sim::market::{SimEvent, SimInstrument, VenueMarket};
use crate::sim::session::{serve, Send, SimClient};
use crate::sim::{MsgKind, Outgoing, Payload, Shared, VenueSim};

fn rfc3339(t: UnixNanos) -> String {
    let secs = t.0.div_euclid(1_000_000_000);
    let micros = t.0.rem_euclid(1_000_000_000) / 1_000;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil from days (Howard Hinnant).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{micros:06}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

fn levels(out: &mut String, inst: &SimInstrument, ls: impl Iterator<Item = Level>, orders: bool) {
    out.push('[');
    for (k, l) in ls.enumerate() {
        if k > 0 {
            out.push(',');
        }
        let (p, q) = (l.price.decimal(inst.price_scale), l.qty.decimal(inst.qty_scale));
        if orders {
            let _ = write!(out, "[\"{p}\",\"{q}\",1]");
        } else {
            let _ = write!(out, "[\"{p}\",\"{q}\"]");
        }
    }
    out.push(']');
}

fn ticker(m: &VenueMarket, index: usize, seq: u64, time: UnixNanos) -> Option<String> {
    let inst = m.instruments.get(index)?;
    let book = m.book(index)?;
    let (b, a) = (book.best_bid().unwrap_or_default(), book.best_ask().unwrap_or_default());
    let p = |v: stocksblitz_engine::Price| v.decimal(inst.price_scale);
    let q = |v: stocksblitz_engine::Qty| v.decimal(inst.qty_scale);
    Some(format!(
        r#"{{"type":"ticker","sequence":{seq},"product_id":"{}","price":"{}","best_bid":"{}","best_bid_size":"{}","best_ask":"{}","best_ask_size":"{}","time":"{}"}}"#,
        inst.venue_symbol,
        p(m.last_price(index)),
        p(b.price),
        q(b.qty),
        p(a.price),
        q(a.qty),
        rfc3339(time)
    ))
}

/// Renders a step's events: `l2update` per book change, `match` per trade, and a
/// `ticker` after each.
pub fn render(m: &VenueMarket, events: &[SimEvent]) -> Vec<Outgoing> {
    let mut out = Vec::new();
    for ev in events {
        match ev {
            SimEvent::Trade {
                index,
                trade_id,
                price,
                qty,
                aggressor,
                time,
            } => {
                let Some(inst) = m.instruments.get(*index) else {
                    continue;
                };
                // `side` is the maker's: the opposite of the aggressor.
                let maker = if *aggressor == Aggressor::Buy { "sell" } else { "buy" };
                out.push(Outgoing {
                    key: inst.venue_symbol.clone(),
                    payload: Payload::Text(format!(
                        r#"{{"type":"match","trade_id":{trade_id},"sequence":{trade_id},"maker_order_id":"m","taker_order_id":"t","time":"{}","product_id":"{}","size":"{}","price":"{}","side":"{maker}"}}"#,
                        rfc3339(*time),
                        inst.venue_symbol,
                        qty.decimal(inst.qty_scale),
                        price.decimal(inst.price_scale)
                    )),
                    kind: MsgKind::Trade,
                });
                if let Some(t) = ticker(m, *index, m.last_update_id(*index) + trade_id, *time) {
                    out.push(Outgoing {
                        key: inst.venue_symbol.clone(),
                        payload: Payload::Text(t),
                        kind: MsgKind::Other,
                    });
                }
            }
            SimEvent::Depth {
                index,
                levels: ls,
                time,
                ..
            } => {
                let Some(inst) = m.instruments.get(*index) else {
                    continue;
                };
                let mut text = format!(
                    r#"{{"type":"l2update","product_id":"{}","time":"{}","changes":["#,
                    inst.venue_symbol,
                    rfc3339(*time)
                );
                for (k, (side, price, qty)) in ls.iter().enumerate() {
                    if k > 0 {
                        text.push(',');
                    }
                    let _ = write!(
                        text,
                        "[\"{}\",\"{}\",\"{}\"]",
                        side.as_str(),
                        price.decimal(inst.price_scale),
                        qty.decimal(inst.qty_scale)
                    );
                }
                text.push_str("]}");
                out.push(Outgoing {
                    key: inst.venue_symbol.clone(),
                    payload: Payload::Text(text),
                    kind: MsgKind::Book,
                });
            }
        }
    }
    out
}

fn coinbase(s: &Shared) -> Option<Arc<VenueSim>> {
    s.venue("coinbase")
}

#[derive(Deserialize)]
pub(crate) struct BookQuery {
    level: Option<u8>,
}

/// `GET /products/{product_id}/book?level=2`.
pub(crate) async fn book(State(s): State<Shared>, Path(product): Path<String>, Query(q): Query<BookQuery>) -> Response {
    let Some(sim) = coinbase(&s) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if q.level != Some(2) {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(serde_json::json!({ "message": "only level=2 is simulated" })),
        )
            .into_response();
    }
    let m = sim.market.lock();
    let Some(i) = m.index_of(&product) else {
        return (
            StatusCode::NOT_FOUND,
            axum::Json(serde_json::json!({ "message": "NotFound" })),
        )
            .into_response();
    };
    let (Some(b), Some(inst)) = (m.book(i), m.instruments.get(i)) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let mut body = format!("{{\"sequence\":{},\"bids\":", m.last_update_id(i));
    levels(&mut body, inst, b.bids().iter().copied(), true);
    body.push_str(",\"asks\":");
    levels(&mut body, inst, b.asks().iter().copied(), true);
    body.push('}');
    ([(axum::http::header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// The WebSocket feed (`wss://ws-feed.exchange.coinbase.com`).
pub(crate) async fn stream(State(s): State<Shared>, ws: WebSocketUpgrade) -> Response {
    match coinbase(&s) {
        Some(sim) => ws.on_upgrade(move |socket| session(socket, sim)),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn send(socket: &mut WebSocket, text: &str) -> bool {
    socket.send(Message::Text(Utf8Bytes::from(text))).await.is_ok()
}

/// Waits for a valid subscribe message; answers errors as Coinbase does.
async fn subscription(socket: &mut WebSocket, sim: &VenueSim) -> Option<HashSet<String>> {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), socket.recv())
            .await
            .ok()??
            .ok()?;
        let Message::Text(t) = msg else { continue };
        let v: serde_json::Value = match serde_json::from_str(t.as_str()) {
            Ok(v) => v,
            Err(_) => {
                send(
                    socket,
                    r#"{"type":"error","message":"Failed to parse subscribe message","reason":"malformed JSON"}"#,
                )
                .await;
                continue;
            }
        };
        if v["type"] != "subscribe" {
            continue;
        }
        let products: Vec<String> = v["product_ids"]
            .as_array()
            .map(|a| a.iter().filter_map(|p| p.as_str().map(str::to_owned)).collect())
            .unwrap_or_default();
        let bad = {
            let m = sim.market.lock();
            products.iter().find(|p| m.index_of(p).is_none()).cloned()
        };
        if let Some(bad) = bad {
            let err = serde_json::json!({ "type": "error", "message": "Failed to subscribe", "reason": format!("{bad} is not a valid product") });
            send(socket, &err.to_string()).await;
            continue;
        }
        return Some(products.into_iter().collect());
    }
}

/// The handshake: a subscription, its acknowledgement, then a level2 snapshot per
/// product; the client's session then runs on the shared loop.
async fn session(mut socket: WebSocket, sim: Arc<VenueSim>) {
    let Some(products) = subscription(&mut socket, &sim).await else {
        return;
    };
    let ack = serde_json::json!({ "type": "subscriptions", "channels": [
        { "name": "level2_batch", "product_ids": products },
        { "name": "matches", "product_ids": products },
    ]});
    if !send(&mut socket, &ack.to_string()).await {
        return;
    }
    // Subscribe to the stream before snapshotting: level2 updates are absolute, so one
    // already in the snapshot and delivered again changes nothing.
    let rx = sim.tx.subscribe();
    let snapshots: Vec<String> = {
        let m = sim.market.lock();
        products
            .iter()
            .filter_map(|p| {
                let i = m.index_of(p)?;
                let (b, inst) = (m.book(i)?, m.instruments.get(i)?);
                let mut s = format!(r#"{{"type":"snapshot","product_id":"{p}","bids":"#);
                levels(&mut s, inst, b.bids().iter().copied(), false);
                s.push_str(",\"asks\":");
                levels(&mut s, inst, b.asks().iter().copied(), false);
                s.push('}');
                Some(s)
            })
            .collect()
    };
    for s in snapshots {
        if !send(&mut socket, &s).await {
            return;
        }
    }
    // The last trade each product has published on this socket (sent, or dropped by a
    // fault): what its heartbeats report. Reading the market's latest trade instead
    // would announce trades still queued for this socket, ahead of their matches.
    let last_trade: HashMap<String, u64> = {
        let m = sim.market.lock();
        products
            .iter()
            .filter_map(|p| Some((p.clone(), m.last_trade_id(m.index_of(p)?))))
            .collect()
    };
    let client = Client {
        products,
        last_trade,
        held: None,
        hb_seq: 0,
    };
    serve(socket, sim, rx, client).await;
}

/// One subscribed client. Coinbase gives no shutdown notice: the socket just closes
/// when due.
struct Client {
    products: HashSet<String>,
    last_trade: HashMap<String, u64>,
    /// An `l2update` held back by a reorder fault, sent after the next one.
    held: Option<String>,
    hb_seq: u64,
}

impl SimClient for Client {
    fn keepalive_every(&self) -> Duration {
        Duration::from_secs(1)
    }

    /// A `heartbeat` per product.
    fn keepalive(&mut self, out: &mut Vec<Send>) {
        self.hb_seq += 1;
        for p in &self.products {
            if let Some(last) = self.last_trade.get(p) {
                out.push(Send::Text(format!(
                    r#"{{"type":"heartbeat","sequence":{},"last_trade_id":{last},"product_id":"{p}","time":"{}"}}"#,
                    self.hb_seq,
                    rfc3339(UnixNanos::now())
                )));
            }
        }
    }

    /// Matches are numbered (`trade_id`): dropping one is a detectable gap. Reorder
    /// and duplicate act on `l2update`s.
    fn message(&mut self, msg: &Outgoing, f: &Faults, out: &mut Vec<Send>) {
        if !self.products.contains(&msg.key) {
            return;
        }
        let Payload::Text(text) = &msg.payload else { return };
        if take(&f.malformed) {
            out.push(Send::Text(r#"{"type":"l2update","product_id":"#.into()));
        }
        if take(&f.slow_frames) {
            out.push(Send::Pause(Duration::from_millis(f.slow_ms.load(Ordering::Relaxed))));
        }
        if msg.kind == MsgKind::Trade {
            if let (Some(id), Some(last)) = (match_trade_id(text), self.last_trade.get_mut(&msg.key)) {
                *last = id;
            }
            if take(&f.drop) {
                return;
            }
        }
        if msg.kind == MsgKind::Book {
            if take(&f.reorder) {
                self.held = Some(text.clone());
                return;
            }
            if take(&f.duplicate) {
                out.push(Send::Text(text.clone()));
            }
        }
        out.push(Send::Text(text.clone()));
        if msg.kind == MsgKind::Book {
            if let Some(h) = self.held.take() {
                out.push(Send::Text(h));
            }
        }
    }
}

/// The `trade_id` of a match rendered by this simulator.
fn match_trade_id(text: &str) -> Option<u64> {
    let rest = text.strip_prefix(r#"{"type":"match","trade_id":"#)?;
    let end = rest.find(|c: char| !c.is_ascii_digit())?;
    rest.get(..end)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_its_own_match_trade_ids() {
        let m = r#"{"type":"match","trade_id":42,"sequence":42,"product_id":"BTC-USD"}"#;
        assert_eq!(match_trade_id(m), Some(42));
        assert_eq!(match_trade_id(r#"{"type":"l2update"}"#), None);
    }

    #[test]
    fn formats_rfc3339_like_coinbase() {
        assert_eq!(rfc3339(UnixNanos(0)), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            rfc3339(UnixNanos(1_415_348_367_028_459_000)),
            "2014-11-07T08:19:27.028459Z"
        );
        let t = UnixNanos(1_709_164_800_123_456_000);
        assert_eq!(crate::rfc3339::parse(rfc3339(t).as_bytes()), Some(t));
    }

    mod client {
        use super::super::{match_trade_id, Client};
        use crate::sim::faults::Faults;
        use crate::sim::session::testing::{kind, run, sent_texts, text_steps, texts_for};
        use crate::sim::session::{Send, SimClient};
        use crate::sim::{MsgKind, Outgoing, Payload};
        use proptest::prelude::*;
        use std::collections::HashMap;
        use std::sync::atomic::Ordering;

        const KEYS: [&str; 2] = ["k0", "k2"];

        fn client() -> Client {
            Client {
                products: KEYS.iter().map(|k| (*k).to_owned()).collect(),
                last_trade: KEYS.iter().map(|k| ((*k).to_owned(), 0)).collect(),
                held: None,
                hb_seq: 0,
            }
        }

        /// `all` with the first `n` messages of `kind` transformed by `f`.
        fn with_first(
            steps: &[Vec<Outgoing>],
            kind: MsgKind,
            n: usize,
            f: impl Fn(&str) -> Vec<String>,
        ) -> Vec<String> {
            let hit: Vec<String> = texts_for(steps, &KEYS, Some(kind)).into_iter().take(n).collect();
            texts_for(steps, &KEYS, None)
                .into_iter()
                .flat_map(|t| if hit.contains(&t) { f(&t) } else { vec![t] })
                .collect()
        }

        proptest! {
            /// Without faults a client gets exactly its products' messages, in order.
            #[test]
            fn sends_the_subscribed_products(steps in text_steps()) {
                let sent = run(&mut client(), &steps, &Faults::default());
                prop_assert_eq!(sent_texts(&sent), texts_for(&steps, &KEYS, None));
                prop_assert!(sent.iter().flatten().all(|s| matches!(s, Send::Text(_))));
            }

            /// `drop` skips the next matches (Coinbase numbers those, not level2).
            #[test]
            fn drop_skips_matches(steps in text_steps(), n in 0usize..5) {
                let f = Faults::default();
                f.drop.store(n as u32, Ordering::Relaxed);
                let sent = sent_texts(&run(&mut client(), &steps, &f));
                prop_assert_eq!(sent, with_first(&steps, MsgKind::Trade, n, |_| vec![]));
            }

            /// `duplicate` sends the next `l2update`s twice.
            #[test]
            fn duplicate_repeats_updates(steps in text_steps(), n in 0usize..5) {
                let f = Faults::default();
                f.duplicate.store(n as u32, Ordering::Relaxed);
                let sent = sent_texts(&run(&mut client(), &steps, &f));
                prop_assert_eq!(sent, with_first(&steps, MsgKind::Book, n, |t| vec![t.into(), t.into()]));
            }

            /// `reorder` holds the next `l2update` back until the one after it is sent.
            #[test]
            fn reorder_swaps_two_updates(steps in text_steps()) {
                let f = Faults::default();
                f.reorder.store(1, Ordering::Relaxed);
                let sent = sent_texts(&run(&mut client(), &steps, &f));
                let books = texts_for(&steps, &KEYS, Some(MsgKind::Book));
                let all = texts_for(&steps, &KEYS, None);
                let expected: Vec<String> = match (books.first(), books.get(1)) {
                    (Some(first), Some(second)) => all
                        .iter()
                        .flat_map(|t| if t == first { vec![] } else if t == second { vec![second.clone(), first.clone()] } else { vec![t.clone()] })
                        .collect(),
                    (Some(first), None) => all.iter().filter(|t| *t != first).cloned().collect(),
                    _ => all,
                };
                prop_assert_eq!(sent, expected);
            }

            /// `malformed` puts a broken frame before the next messages and `slow` a
            /// pause; the messages themselves still go out.
            #[test]
            fn malformed_and_slow_come_before_messages(steps in text_steps(), n in 0usize..5) {
                let f = Faults::default();
                f.malformed.store(n as u32, Ordering::Relaxed);
                f.slow_frames.store(n as u32, Ordering::Relaxed);
                f.slow_ms.store(9, Ordering::Relaxed);
                let sent: Vec<Send> = run(&mut client(), &steps, &f).into_iter().flatten().collect();
                let mut expected = Vec::new();
                for (i, t) in texts_for(&steps, &KEYS, None).into_iter().enumerate() {
                    if i < n {
                        expected.push(Send::Text(r#"{"type":"l2update","product_id":"#.into()));
                        expected.push(Send::Pause(std::time::Duration::from_millis(9)));
                    }
                    expected.push(Send::Text(t));
                }
                prop_assert_eq!(sent, expected);
            }

            /// A product's heartbeat reports the last match published on this socket,
            /// sent or dropped by a fault, and the heartbeat sequence counts up.
            #[test]
            fn heartbeats_report_the_last_match(
                msgs in proptest::collection::vec((0u8..3, kind(), 1u64..1_000_000), 0..30),
                drops in 0u32..4,
            ) {
                let step: Vec<Outgoing> = msgs
                    .iter()
                    .map(|&(key, kind, id)| Outgoing {
                        key: format!("k{key}"),
                        payload: Payload::Text(if kind == MsgKind::Trade {
                            format!(r#"{{"type":"match","trade_id":{id},"sequence":{id},"product_id":"k{key}"}}"#)
                        } else {
                            format!(r#"{{"type":"l2update","n":{id}}}"#)
                        }),
                        kind,
                    })
                    .collect();
                let f = Faults::default();
                f.drop.store(drops, Ordering::Relaxed);
                let mut c = client();
                run(&mut c, std::slice::from_ref(&step), &f);
                let mut expected: HashMap<&str, u64> = KEYS.iter().map(|k| (*k, 0)).collect();
                for m in step.iter().filter(|m| m.kind == MsgKind::Trade) {
                    if let (Some(slot), Payload::Text(t)) = (expected.get_mut(m.key.as_str()), &m.payload) {
                        *slot = match_trade_id(t).unwrap_or(*slot);
                    }
                }
                for seq in 1..=2u64 {
                    let mut out = Vec::new();
                    c.keepalive(&mut out);
                    prop_assert_eq!(out.len(), KEYS.len());
                    for s in out {
                        let Send::Text(t) = s else { return Err(TestCaseError::fail("heartbeats are text")) };
                        let v: serde_json::Value = serde_json::from_str(&t).unwrap();
                        prop_assert_eq!(&v["type"], "heartbeat");
                        prop_assert_eq!(v["sequence"].as_u64(), Some(seq));
                        let product = v["product_id"].as_str().unwrap();
                        prop_assert_eq!(v["last_trade_id"].as_u64(), expected.get(product).copied());
                    }
                }
            }
        }

        #[test]
        fn no_shutdown_notice() {
            assert_eq!(client().shutdown_notice(), None);
            assert_eq!(client().keepalive_every(), std::time::Duration::from_secs(1));
        }
    }
}
