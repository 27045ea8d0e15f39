//! Zerodha Kite ticker as the simulator serves it: clients subscribe to instrument
//! tokens; every change is sent as a binary full-mode packet (LTP, cumulative volume,
//! OHLC, timestamps, 5-level depth) and a 1-byte heartbeat goes out every second.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use stocksblitz_engine::fixed::rescale;
use stocksblitz_engine::{Price, UnixNanos};

use crate::kite::decode::{encode, price_scale_of_token};
use crate::sim::faults::{take, Faults};
use crate::sim::market::{SimEvent, VenueMarket};
use crate::sim::session::{serve, Send, SimClient};
use crate::sim::{MsgKind, Outgoing, Payload, Shared, VenueSim};

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
    s.venue("kite")
}

/// The ticker WebSocket (`wss://ws.kite.trade?api_key=..&access_token=..`). An access
/// token on the refused list (the control API) gets HTTP 403, as Kite answers an
/// expired or invalid one.
pub(crate) async fn stream(
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
            ws.on_upgrade(move |socket| {
                let rx = sim.tx.subscribe();
                serve(socket, sim, rx, Client::default())
            })
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

/// One client: the tokens it subscribed to, and this step's packets for them. Kite
/// gives no shutdown notice: the socket just closes when due.
#[derive(Default)]
struct Client {
    tokens: HashSet<String>,
    packets: Vec<Vec<u8>>,
}

impl SimClient for Client {
    fn keepalive_every(&self) -> Duration {
        Duration::from_secs(1)
    }

    /// Kite's heartbeat: a 1-byte binary frame.
    fn keepalive(&mut self, out: &mut Vec<Send>) {
        out.push(Send::Binary(vec![0u8]));
    }

    fn message(&mut self, msg: &Outgoing, _: &Faults, _: &mut Vec<Send>) {
        if let (true, Payload::Binary(p)) = (self.tokens.contains(&msg.key), &msg.payload) {
            self.packets.push(p.clone());
        }
    }

    /// A step goes out as one frame of packets; faults act on whole frames.
    fn end_of_step(&mut self, f: &Faults, out: &mut Vec<Send>) {
        let packets = std::mem::take(&mut self.packets);
        if packets.is_empty() || take(&f.drop) {
            return;
        }
        if take(&f.slow_frames) {
            out.push(Send::Pause(Duration::from_millis(f.slow_ms.load(Ordering::Relaxed))));
        }
        let frame = encode::frame(&packets);
        if take(&f.malformed) {
            out.push(Send::Binary(frame.get(..frame.len() / 2).unwrap_or(&[]).to_vec()));
        }
        if take(&f.duplicate) {
            out.push(Send::Binary(frame.clone()));
        }
        out.push(Send::Binary(frame));
    }

    /// Subscriptions: newly subscribed instruments get their current state at once.
    fn incoming(&mut self, text: &str, sim: &VenueSim, out: &mut Vec<Send>) {
        match client_message(text, &mut self.tokens) {
            Ok(new) if !new.is_empty() => {
                let packets: Vec<Vec<u8>> = {
                    let m = sim.market.lock();
                    new.iter()
                        .filter_map(|t| m.index_of(t).and_then(|i| packet(&m, i, UnixNanos::now())))
                        .collect()
                };
                if !packets.is_empty() {
                    out.push(Send::Binary(encode::frame(&packets)));
                }
            }
            Ok(_) => {}
            Err(e) => out.push(Send::Text(serde_json::json!({ "type": "error", "data": e }).to_string())),
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
