//! Zerodha Kite ticker as the simulator serves it: clients subscribe to instrument
//! tokens; every change is sent as a binary full-mode packet (LTP, cumulative volume,
//! OHLC, timestamps, 5-level depth) and a 1-byte heartbeat goes out every second.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use stocksblitz_engine::fixed::rescale;
use stocksblitz_engine::{Price, UnixNanos};
use tokio::sync::broadcast::error::RecvError;

use super::faults::{take, Lifecycle, SessionFaults};
use super::market::{SimEvent, VenueMarket};
use super::{MsgKind, Outgoing, Payload, Shared, VenueSim};
use crate::kite::decode::{encode, price_scale_of_token};
use crate::venue::Venue;

/// Full-mode packet for instrument `index`, or `None` if its token or prices do not fit
/// Kite's 32-bit fields.
fn packet(m: &VenueMarket, index: usize, now: UnixNanos) -> Option<Vec<u8>> {
    let inst = m.instruments.get(index)?;
    let token: u32 = inst.venue_symbol.parse().ok()?;
    let scale = price_scale_of_token(token);
    let px = |p: Price| -> Option<i32> { i32::try_from(rescale(p.0, inst.price_scale, scale).ok()?).ok() };
    let q = |v: i64| -> Option<u32> { u32::try_from(rescale(v, inst.qty_scale, 0).ok()?).ok() };
    let book = m.book(index)?;
    let secs = |t: UnixNanos| u32::try_from(t.known()?.0 / 1_000_000_000).ok();
    let (last_qty, last_time) = m.last_trade(index);
    let [open, high, low, close] = m.day(index);
    // As Kite sends it: the last trade's price, size and time (0 before any trade
    // today), the day's open/high/low and the previous close.
    let mut quote = encode::Quote {
        token,
        ltp: px(m.last_price(index))?,
        last_qty: q(last_qty.0)?,
        volume: q(m.volume(index))?,
        ohlc: [px(open)?, px(high)?, px(low)?, px(close)?],
        last_trade_time: secs(last_time).unwrap_or(0),
        exchange_time: secs(now)?,
        ..encode::Quote::default()
    };
    for (k, l) in book.bids().iter().take(5).enumerate() {
        quote.depth[k] = (q(l.qty.0)?, px(l.price)?, 1);
    }
    for (k, l) in book.asks().iter().take(5).enumerate() {
        quote.depth[5 + k] = (q(l.qty.0)?, px(l.price)?, 1);
    }
    Some(encode::full(&quote))
}

/// One full packet per instrument that changed in the step (keyed by token).
pub fn render(m: &VenueMarket, events: &[SimEvent]) -> Vec<Outgoing> {
    let mut changed: Vec<usize> = events
        .iter()
        .map(|e| match e {
            SimEvent::Trade { index, .. } | SimEvent::Depth { index, .. } => *index,
        })
        .collect();
    changed.sort_unstable();
    changed.dedup();
    let now = UnixNanos::now();
    changed
        .into_iter()
        .filter_map(|i| {
            let p = packet(m, i, now)?;
            Some(Outgoing {
                key: m.instruments.get(i)?.venue_symbol.clone(),
                payload: Payload::Binary(p),
                kind: MsgKind::Book,
            })
        })
        .collect()
}

fn kite(s: &Shared) -> Option<Arc<VenueSim>> {
    s.venues.iter().find(|v| v.venue == Venue::Kite).cloned()
}

/// The ticker WebSocket (`wss://ws.kite.trade?api_key=..&access_token=..`). An access
/// token on the refused list (the control API) gets HTTP 403, as Kite answers an
/// expired or invalid one.
pub(super) async fn stream(
    State(s): State<Shared>,
    Query(q): Query<std::collections::HashMap<String, String>>,
    ws: WebSocketUpgrade,
) -> Response {
    match kite(&s) {
        Some(sim) => {
            let token = q.get("access_token").map(String::as_str).unwrap_or("");
            if sim.refused_tokens.lock().contains(token) {
                return (
                    StatusCode::FORBIDDEN,
                    "TokenException: Incorrect `api_key` or `access_token`.",
                )
                    .into_response();
            }
            ws.on_upgrade(move |socket| session(socket, sim))
        }
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// Applies a client message (`{"a":"subscribe"|"unsubscribe"|"mode","v":...}`);
/// returns newly subscribed tokens, or an error text.
fn client_message(text: &str, tokens: &mut HashSet<String>) -> Result<Vec<String>, String> {
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("invalid message: {e}"))?;
    let list = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .map(|a| a.iter().filter_map(|t| t.as_u64().map(|t| t.to_string())).collect())
            .unwrap_or_default()
    };
    match v["a"].as_str() {
        Some("subscribe") => Ok(list(&v["v"]).into_iter().filter(|t| tokens.insert(t.clone())).collect()),
        Some("unsubscribe") => {
            for t in list(&v["v"]) {
                tokens.remove(&t);
            }
            Ok(Vec::new())
        }
        // Every subscription is served in full mode.
        Some("mode") => Ok(Vec::new()),
        _ => Err("unknown action: use subscribe, unsubscribe or mode".into()),
    }
}

async fn session(mut socket: WebSocket, sim: Arc<VenueSim>) {
    let mut rx = sim.tx.subscribe();
    let f = &sim.faults;
    let mut lifecycle = SessionFaults::new(f);
    let mut tokens: HashSet<String> = HashSet::new();
    let mut heartbeat = tokio::time::interval(Duration::from_secs(1));
    loop {
        match lifecycle.check(f) {
            Lifecycle::Serve => {}
            // Kite gives no notice: the socket just closes when due.
            Lifecycle::Announce => {}
            Lifecycle::Close => {
                let _ = socket.send(Message::Close(None)).await;
                return;
            }
            // Abrupt: no close frame.
            Lifecycle::Abort => return,
        }
        tokio::select! {
            batch = rx.recv() => {
                let batch = match batch {
                    Ok(b) => b,
                    Err(RecvError::Lagged(_)) | Err(RecvError::Closed) => return,
                };
                if f.silenced() {
                    continue;
                }
                let packets: Vec<Vec<u8>> = batch
                    .iter()
                    .filter(|m| tokens.contains(&m.key))
                    .filter_map(|m| match &m.payload {
                        Payload::Binary(p) => Some(p.clone()),
                        Payload::Text(_) => None,
                    })
                    .collect();
                if packets.is_empty() {
                    continue;
                }
                if take(&f.drop) {
                    continue;
                }
                if take(&f.slow_frames) {
                    tokio::time::sleep(Duration::from_millis(f.slow_ms.load(Ordering::Relaxed))).await;
                }
                let frame = encode::frame(&packets);
                if take(&f.malformed) {
                    let cut = frame.get(..frame.len() / 2).unwrap_or(&[]).to_vec();
                    if socket.send(Message::Binary(cut.into())).await.is_err() {
                        return;
                    }
                }
                let times = if take(&f.duplicate) { 2 } else { 1 };
                for _ in 0..times {
                    if socket.send(Message::Binary(frame.clone().into())).await.is_err() {
                        return;
                    }
                }
            }
            incoming = socket.recv() => match incoming {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(Message::Text(t))) => match client_message(t.as_str(), &mut tokens) {
                    Ok(new) if !new.is_empty() => {
                        // Current state of newly subscribed instruments, at once.
                        let packets: Vec<Vec<u8>> = {
                            let m = sim.market.lock();
                            new.iter().filter_map(|t| m.index_of(t).and_then(|i| packet(&m, i, UnixNanos::now()))).collect()
                        };
                        if !packets.is_empty() && socket.send(Message::Binary(encode::frame(&packets).into())).await.is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        let msg = serde_json::json!({ "type": "error", "data": e }).to_string();
                        if socket.send(Message::Text(Utf8Bytes::from(msg))).await.is_err() {
                            return;
                        }
                    }
                },
                Some(Ok(_)) => {}
            },
            _ = heartbeat.tick() => {
                if socket.send(Message::Binary(vec![0u8].into())).await.is_err() {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_messages() {
        let mut t = HashSet::new();
        assert_eq!(
            client_message(r#"{"a":"subscribe","v":[738561,408065]}"#, &mut t)
                .unwrap()
                .len(),
            2
        );
        assert!(
            client_message(r#"{"a":"subscribe","v":[738561]}"#, &mut t)
                .unwrap()
                .is_empty(),
            "already subscribed"
        );
        assert!(client_message(r#"{"a":"mode","v":["full",[738561]]}"#, &mut t).is_ok());
        client_message(r#"{"a":"unsubscribe","v":[408065]}"#, &mut t).unwrap();
        assert_eq!(t.len(), 1);
        assert!(client_message("{", &mut t).is_err());
        assert!(client_message(r#"{"a":"dance"}"#, &mut t).is_err());
    }
}
