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
            Err(e) => out.push(Send::Text(
                serde_json::json!({ "type": "error", "data": e }).to_string(),
            )),
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

    mod client {
        use super::super::Client;
        use crate::kite::decode::encode;
        use crate::sim::faults::Faults;
        use crate::sim::session::testing::{kind, run};
        use crate::sim::session::{Send, SimClient};
        use crate::sim::{Outgoing, Payload};
        use proptest::prelude::*;
        use std::sync::atomic::Ordering;

        const TOKENS: [&str; 2] = ["408065", "738561"];

        fn client() -> Client {
            Client {
                tokens: TOKENS.iter().map(|k| (*k).to_owned()).collect(),
                packets: Vec::new(),
            }
        }

        /// Steps of binary packets for three tokens (one not subscribed).
        fn steps() -> impl Strategy<Value = Vec<Vec<Outgoing>>> {
            let msg =
                (0usize..3, kind(), proptest::collection::vec(any::<u8>(), 1..12)).prop_map(|(t, kind, p)| Outgoing {
                    key: ["408065", "738561", "5633"][t].to_owned(),
                    payload: Payload::Binary(p),
                    kind,
                });
            proptest::collection::vec(proptest::collection::vec(msg, 0..5), 0..8)
        }

        /// The frame each step should produce for this client (`None`: nothing).
        fn frames(steps: &[Vec<Outgoing>]) -> Vec<Option<Vec<u8>>> {
            steps
                .iter()
                .map(|step| {
                    let packets: Vec<Vec<u8>> = step
                        .iter()
                        .filter(|m| TOKENS.contains(&m.key.as_str()))
                        .filter_map(|m| match &m.payload {
                            Payload::Binary(p) => Some(p.clone()),
                            Payload::Text(_) => None,
                        })
                        .collect();
                    (!packets.is_empty()).then(|| encode::frame(&packets))
                })
                .collect()
        }

        proptest! {
            /// A step goes out as one frame of the subscribed tokens' packets; a step
            /// with none sends nothing.
            #[test]
            fn one_frame_per_step(steps in steps()) {
                let sent = run(&mut client(), &steps, &Faults::default());
                let expected: Vec<Vec<Send>> = frames(&steps).into_iter().map(|f| f.map(Send::Binary).into_iter().collect()).collect();
                prop_assert_eq!(sent, expected);
            }

            /// Faults act on whole frames, each counter on the next frames that are
            /// sent: dropped, cut in half before the frame, paused before, or sent twice.
            #[test]
            fn faults_act_on_frames(steps in steps(), drop in 0usize..3, other in 0usize..3) {
                let f = Faults::default();
                f.drop.store(drop as u32, Ordering::Relaxed);
                f.malformed.store(other as u32, Ordering::Relaxed);
                f.duplicate.store(other as u32, Ordering::Relaxed);
                f.slow_frames.store(other as u32, Ordering::Relaxed);
                f.slow_ms.store(3, Ordering::Relaxed);
                let sent = run(&mut client(), &steps, &f);
                let mut expected = Vec::new();
                let mut nonempty = 0;
                for frame in frames(&steps) {
                    let mut out = Vec::new();
                    if let Some(frame) = frame {
                        // Counters are taken in order: drop first, the rest only for
                        // frames that are sent.
                        let index = nonempty;
                        nonempty += 1;
                        if index >= drop {
                            if index - drop < other {
                                out.push(Send::Pause(std::time::Duration::from_millis(3)));
                                out.push(Send::Binary(frame[..frame.len() / 2].to_vec()));
                                out.push(Send::Binary(frame.clone()));
                            }
                            out.push(Send::Binary(frame));
                        }
                    }
                    expected.push(out);
                }
                prop_assert_eq!(sent, expected);
            }
        }

        /// Kite's heartbeat is a 1-byte binary frame every second; no shutdown notice.
        #[test]
        fn heartbeat() {
            let mut c = client();
            assert_eq!(c.keepalive_every(), std::time::Duration::from_secs(1));
            let mut out = Vec::new();
            c.keepalive(&mut out);
            assert_eq!(out, [Send::Binary(vec![0])]);
            assert_eq!(c.shutdown_notice(), None);
        }
    }
}
