//! Binance spot as the simulator serves it: combined streams over WebSocket and the
//! REST depth snapshot, with the ids and field names of the real API.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use stocksblitz_engine::fixed::{rescale, Decimal};
use stocksblitz_engine::{Aggressor, Level, Side};

use crate::sim::faults::{now_ms, take, Faults};
use crate::sim::market::{SimEvent, SimInstrument, VenueMarket};
use crate::sim::session::{serve, Send, SimClient};
use crate::sim::{MsgKind, Outgoing, Payload, Shared, VenueSim};

/// Decimals of every price and quantity string Binance spot sends.
pub const WIRE_DECIMALS: u8 = 8;

/// A value as Binance renders it: always eight decimals (`"65000.10000000"`,
/// `"0.01391500"`), whatever scale the instrument keeps (a scale above eight, which
/// Binance never sends, is rendered as is).
fn wire(mantissa: i64, scale: u8) -> Decimal {
    match rescale(mantissa, scale, WIRE_DECIMALS) {
        Ok(m) if scale <= WIRE_DECIMALS => Decimal::new(m, WIRE_DECIMALS),
        _ => Decimal::new(mantissa, scale),
    }
}

fn levels_json(out: &mut String, inst: &SimInstrument, levels: impl Iterator<Item = Level>) {
    out.push('[');
    for (k, l) in levels.enumerate() {
        if k > 0 {
            out.push(',');
        }
        let _ = write!(
            out,
            "[\"{}\",\"{}\"]",
            wire(l.price.0, inst.price_scale),
            wire(l.qty.0, inst.qty_scale)
        );
    }
    out.push(']');
}

/// Renders a step's events as combined-stream messages (plus `bookTicker`s).
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
                let sym = inst.venue_symbol.to_ascii_lowercase();
                let (ms, up) = (time.millis(), inst.venue_symbol.to_ascii_uppercase());
                // m: the buyer is the maker, i.e. the seller was the aggressor.
                let maker = *aggressor == Aggressor::Sell;
                let (p, q) = (wire(price.0, inst.price_scale), wire(qty.0, inst.qty_scale));
                out.push(Outgoing {
                    key: format!("{sym}@trade"),
                    payload: Payload::Text(format!(
                        r#"{{"stream":"{sym}@trade","data":{{"e":"trade","E":{ms},"s":"{up}","t":{trade_id},"p":"{p}","q":"{q}","T":{ms},"m":{maker},"M":true}}}}"#
                    )),
                    kind: MsgKind::Trade,
                });
                out.push(Outgoing {
                    key: format!("{sym}@aggTrade"),
                    payload: Payload::Text(format!(
                        r#"{{"stream":"{sym}@aggTrade","data":{{"e":"aggTrade","E":{ms},"s":"{up}","a":{trade_id},"p":"{p}","q":"{q}","f":{trade_id},"l":{trade_id},"T":{ms},"m":{maker},"M":true}}}}"#
                    )),
                    kind: MsgKind::Trade,
                });
            }
            SimEvent::Depth {
                index,
                first_id,
                last_id,
                levels,
                time,
            } => {
                let Some(inst) = m.instruments.get(*index) else {
                    continue;
                };
                let sym = inst.venue_symbol.to_ascii_lowercase();
                let up = inst.venue_symbol.to_ascii_uppercase();
                let pick = |side: Side| {
                    levels
                        .iter()
                        .filter(move |l| l.0 == side)
                        .map(|&(_, price, qty)| Level { price, qty })
                };
                let mut text = format!(
                    r#"{{"stream":"{sym}@depth@100ms","data":{{"e":"depthUpdate","E":{},"s":"{up}","U":{first_id},"u":{last_id},"b":"#,
                    time.millis()
                );
                levels_json(&mut text, inst, pick(Side::Buy));
                text.push_str(",\"a\":");
                levels_json(&mut text, inst, pick(Side::Sell));
                text.push_str("}}");
                out.push(Outgoing {
                    key: format!("{sym}@depth@100ms"),
                    payload: Payload::Text(text),
                    kind: MsgKind::Book,
                });
                if let Some(book) = m.book(*index) {
                    let (b, a) = (book.best_bid().unwrap_or_default(), book.best_ask().unwrap_or_default());
                    out.push(Outgoing {
                        key: format!("{sym}@bookTicker"),
                        payload: Payload::Text(format!(
                            r#"{{"stream":"{sym}@bookTicker","data":{{"u":{last_id},"s":"{up}","b":"{}","B":"{}","a":"{}","A":"{}"}}}}"#,
                            wire(b.price.0, inst.price_scale),
                            wire(b.qty.0, inst.qty_scale),
                            wire(a.price.0, inst.price_scale),
                            wire(a.qty.0, inst.qty_scale)
                        )),
                        kind: MsgKind::Other,
                    });
                }
            }
        }
    }
    out
}

fn binance(s: &Shared) -> Option<Arc<VenueSim>> {
    s.venue("binance")
}

#[derive(Deserialize)]
pub struct DepthQuery {
    symbol: Option<String>,
    limit: Option<usize>,
}

fn api_error(code: i32, msg: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(serde_json::json!({ "code": code, "msg": msg })),
    )
        .into_response()
}

/// `GET /api/v3/depth?symbol=BTCUSDT&limit=1000`.
pub(crate) async fn depth(State(s): State<Shared>, Query(q): Query<DepthQuery>) -> Response {
    let Some(sim) = binance(&s) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let Some(symbol) = q.symbol else {
        return api_error(
            -1102,
            "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.",
        );
    };
    let limit = q.limit.unwrap_or(100).clamp(1, 5000);
    let m = sim.market.lock();
    let Some(i) = m.index_of(&symbol) else {
        return api_error(-1121, "Invalid symbol.");
    };
    let (Some(book), Some(inst)) = (m.book(i), m.instruments.get(i)) else {
        return api_error(-1121, "Invalid symbol.");
    };
    let mut body = format!("{{\"lastUpdateId\":{},\"bids\":", m.last_update_id(i));
    levels_json(&mut body, inst, book.bids().iter().take(limit).copied());
    body.push_str(",\"asks\":");
    levels_json(&mut body, inst, book.asks().iter().take(limit).copied());
    body.push('}');
    ([(axum::http::header::CONTENT_TYPE, "application/json")], body).into_response()
}

#[derive(Deserialize)]
pub struct StreamQuery {
    streams: Option<String>,
}

/// `GET /stream?streams=btcusdt@trade/btcusdt@depth@100ms` (WebSocket).
pub(crate) async fn stream(State(s): State<Shared>, Query(q): Query<StreamQuery>, ws: WebSocketUpgrade) -> Response {
    let Some(sim) = binance(&s) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let streams: HashSet<String> = q
        .streams
        .unwrap_or_default()
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| s.to_ascii_lowercase())
        .collect();
    ws.on_upgrade(move |socket| {
        let rx = sim.tx.subscribe();
        serve(socket, sim, rx, Client { streams, held: None })
    })
}

/// One client of the combined streams: gets the streams it named in the URL.
struct Client {
    streams: HashSet<String>,
    /// A book diff held back by a reorder fault, sent after the next one.
    held: Option<String>,
}

impl SimClient for Client {
    fn shutdown_notice(&self) -> Option<String> {
        Some(format!(r#"{{"e":"serverShutdown","E":{}}}"#, now_ms()))
    }

    fn keepalive_every(&self) -> Duration {
        Duration::from_secs(3)
    }

    fn keepalive(&mut self, out: &mut Vec<Send>) {
        out.push(Send::Ping);
    }

    /// Drop, duplicate and reorder act on depth diffs, which Binance sequences.
    fn message(&mut self, msg: &Outgoing, f: &Faults, out: &mut Vec<Send>) {
        if !self.streams.contains(&msg.key) {
            return;
        }
        let Payload::Text(text) = &msg.payload else { return };
        if take(&f.malformed) {
            out.push(Send::Text(r#"{"stream":"x","data":{"e":"depthUpd"#.into()));
        }
        if take(&f.slow_frames) {
            out.push(Send::Pause(Duration::from_millis(f.slow_ms.load(Ordering::Relaxed))));
        }
        if msg.kind != MsgKind::Book {
            out.push(Send::Text(text.clone()));
            return;
        }
        if take(&f.drop) {
            return;
        }
        if take(&f.reorder) {
            self.held = Some(text.clone());
            return;
        }
        let twice = take(&f.duplicate);
        out.push(Send::Text(text.clone()));
        if twice {
            out.push(Send::Text(text.clone()));
        }
        if let Some(h) = self.held.take() {
            out.push(Send::Text(h));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic::SimSpec;
    use stocksblitz_engine::{InstrumentId, Price, Qty, UnixNanos};

    /// Binance sends every price and quantity with exactly eight decimals, whatever
    /// scale our instrument keeps: the simulator does the same.
    #[test]
    fn prices_and_quantities_go_out_with_eight_decimals() {
        for (price_scale, qty_scale) in [(2u8, 5u8), (8, 8)] {
            let inst = SimInstrument {
                symbol: "BTCUSDT".into(),
                venue_symbol: "btcusdt".into(),
                price_scale,
                qty_scale,
                spec: SimSpec {
                    id: InstrumentId(0),
                    tick_size: Price(10i64.pow(u32::from(price_scale) - 2)),
                    lot_size: Qty(10i64.pow(u32::from(qty_scale) - 5)),
                    start_price: Price(65_000 * 10i64.pow(u32::from(price_scale))),
                },
            };
            let mut m = VenueMarket::new(vec![inst], 3, 5);
            let mut texts = Vec::new();
            for step in 0..50 {
                let events = m.step(UnixNanos(1_700_000_000_000_000_000 + step * 1_000_000));
                for o in render(&m, &events) {
                    if let Payload::Text(t) = o.payload {
                        texts.push(t);
                    }
                }
            }
            assert!(texts.iter().any(|t| t.contains("@trade")), "some trades");
            assert!(texts.iter().any(|t| t.contains("depthUpdate")), "some diffs");
            for t in &texts {
                let v: serde_json::Value = serde_json::from_str(t).expect("json");
                let d = &v["data"];
                let mut decimals = Vec::new();
                for k in ["p", "q", "b", "B", "a", "A"] {
                    if let Some(s) = d[k].as_str() {
                        decimals.push(s.to_owned());
                    }
                }
                for k in ["b", "a"] {
                    for l in d[k].as_array().into_iter().flatten() {
                        decimals.extend(
                            l.as_array()
                                .into_iter()
                                .flatten()
                                .filter_map(|x| x.as_str().map(str::to_owned)),
                        );
                    }
                }
                for s in decimals {
                    assert_eq!(s.split('.').nth(1).map(str::len), Some(8), "{s} in {t}");
                }
            }
        }
    }

    mod client {
        use super::super::Client;
        use crate::sim::faults::Faults;
        use crate::sim::session::testing::{run, sent_texts, text_steps, texts_for};
        use crate::sim::session::{Send, SimClient};
        use crate::sim::{MsgKind, Outgoing};
        use proptest::prelude::*;
        use std::sync::atomic::Ordering;

        const KEYS: [&str; 2] = ["k0", "k2"];

        fn client() -> Client {
            Client {
                streams: KEYS.iter().map(|k| (*k).to_owned()).collect(),
                held: None,
            }
        }

        fn book_texts(steps: &[Vec<Outgoing>]) -> Vec<String> {
            texts_for(steps, &KEYS, Some(MsgKind::Book))
        }

        /// `all` with the first `n` of `books` transformed by `f`.
        fn with_first_books(
            all: &[String],
            books: &[String],
            n: usize,
            f: impl Fn(&str) -> Vec<String>,
        ) -> Vec<String> {
            let hit: Vec<&String> = books.iter().take(n).collect();
            all.iter()
                .flat_map(|t| if hit.contains(&t) { f(t) } else { vec![t.clone()] })
                .collect()
        }

        proptest! {
            /// Without faults a client gets exactly the streams it named, in order.
            #[test]
            fn sends_the_named_streams(steps in text_steps()) {
                let sent = run(&mut client(), &steps, &Faults::default());
                prop_assert_eq!(sent_texts(&sent), texts_for(&steps, &KEYS, None));
                prop_assert!(sent.iter().flatten().all(|s| matches!(s, Send::Text(_))));
            }

            /// `drop` skips the next depth diffs (a sequence gap), nothing else.
            #[test]
            fn drop_skips_diffs(steps in text_steps(), n in 0usize..5) {
                let f = Faults::default();
                f.drop.store(n as u32, Ordering::Relaxed);
                let sent = sent_texts(&run(&mut client(), &steps, &f));
                let all = texts_for(&steps, &KEYS, None);
                prop_assert_eq!(sent, with_first_books(&all, &book_texts(&steps), n, |_| vec![]));
            }

            /// `duplicate` sends the next depth diffs twice.
            #[test]
            fn duplicate_repeats_diffs(steps in text_steps(), n in 0usize..5) {
                let f = Faults::default();
                f.duplicate.store(n as u32, Ordering::Relaxed);
                let sent = sent_texts(&run(&mut client(), &steps, &f));
                let all = texts_for(&steps, &KEYS, None);
                prop_assert_eq!(sent, with_first_books(&all, &book_texts(&steps), n, |t| vec![t.into(), t.into()]));
            }

            /// `reorder` holds the next diff back until the one after it is sent.
            #[test]
            fn reorder_swaps_two_diffs(steps in text_steps()) {
                let f = Faults::default();
                f.reorder.store(1, Ordering::Relaxed);
                let sent = sent_texts(&run(&mut client(), &steps, &f));
                let books = book_texts(&steps);
                let all = texts_for(&steps, &KEYS, None);
                let expected = match (books.first(), books.get(1)) {
                    (Some(first), Some(second)) => with_first_books(&all, &books, 2, |t| {
                        if t == first { vec![] } else { vec![second.clone(), first.clone()] }
                    }),
                    // Held, and nothing came after it.
                    (Some(first), None) => all.iter().filter(|t| *t != first).cloned().collect(),
                    _ => all,
                };
                prop_assert_eq!(sent, expected);
            }

            /// `malformed` puts a broken frame before the next messages, whatever
            /// they are, and `slow` a pause; the messages themselves still go out.
            #[test]
            fn malformed_and_slow_come_before_messages(steps in text_steps(), n in 0usize..5) {
                let f = Faults::default();
                f.malformed.store(n as u32, Ordering::Relaxed);
                f.slow_frames.store(n as u32, Ordering::Relaxed);
                f.slow_ms.store(7, Ordering::Relaxed);
                let sent: Vec<Send> = run(&mut client(), &steps, &f).into_iter().flatten().collect();
                let all = texts_for(&steps, &KEYS, None);
                let mut expected = Vec::new();
                for (i, t) in all.iter().enumerate() {
                    if i < n {
                        expected.push(Send::Text(r#"{"stream":"x","data":{"e":"depthUpd"#.into()));
                        expected.push(Send::Pause(std::time::Duration::from_millis(7)));
                    }
                    expected.push(Send::Text(t.clone()));
                }
                prop_assert_eq!(sent, expected);
            }
        }

        /// A ping every 3 s; the shutdown notice is Binance's `serverShutdown`.
        #[test]
        fn keepalive_and_notice() {
            let mut c = client();
            assert_eq!(c.keepalive_every(), std::time::Duration::from_secs(3));
            let mut out = Vec::new();
            c.keepalive(&mut out);
            assert_eq!(out, [Send::Ping]);
            let notice = c.shutdown_notice().unwrap();
            let v: serde_json::Value = serde_json::from_str(&notice).unwrap();
            assert_eq!(v["e"], "serverShutdown");
            assert!(v["E"].as_u64().is_some_and(|ms| ms > 1_600_000_000_000));
        }
    }
}
