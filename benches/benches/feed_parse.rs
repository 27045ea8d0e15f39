//! Venue frame parsing, decimals included: the project's zero-allocation scanner and
//! binary decoder against typed `serde_json`, `simd-json` and `sonic-rs` (borrowed
//! `&str` fields, the usual choices), all producing the same fixed-point values from the
//! same frames. simd-json parses in place, so its rows include copying the frame into a
//! reusable buffer, as a handler that keeps the socket's buffer would have to.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde::Deserialize;
use stocksblitz_benches::{batched, interleaved, iters, keep, median_ratio, print_table, Case, Row};
use stocksblitz_engine::fixed::parse_decimal;
use stocksblitz_engine::{InstrumentId, Side, UnixNanos};
use stocksblitz_feed_handlers::binance::parse::{for_each_level, parse_frame, BinanceEvent};
use stocksblitz_feed_handlers::coinbase::parse::{for_each_change, parse_frame as parse_coinbase, CoinbaseEvent};
use stocksblitz_feed_handlers::kite::decode::encode;
use stocksblitz_feed_handlers::kite::KiteDecoder;
use stocksblitz_feed_handlers::rfc3339;
use stocksblitz_feed_handlers::symbols::{SymbolMap, VenueInstrument};

const MATCH: &str = r#"{"type":"match","trade_id":10,"sequence":50,"maker_order_id":"ac928c66-ca53-498f-9c13-a110027a60e8","taker_order_id":"132fb6ae-456b-4654-b4e0-d681ac05cea1","time":"2014-11-07T08:19:27.028459Z","product_id":"BTC-USD","size":"5.23512000","price":"400.23000000","side":"sell"}"#;
const L2UPDATE: &str = r#"{"type":"l2update","product_id":"BTC-USD","time":"2019-08-14T20:42:27.265Z","changes":[["buy","10101.80000000","0.16256700"],["sell","10102.55000000","0.00000000"]]}"#;

#[derive(Deserialize)]
#[allow(dead_code)]
struct SerdeMatch<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    trade_id: u64,
    sequence: u64,
    time: &'a str,
    product_id: &'a str,
    size: &'a str,
    price: &'a str,
    side: &'a str,
}

#[derive(Deserialize)]
#[allow(dead_code)]
struct SerdeL2<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    product_id: &'a str,
    time: &'a str,
    #[serde(borrow)]
    changes: Vec<[&'a str; 3]>,
}

const TRADE: &str = r#"{"stream":"btcusdt@trade","data":{"e":"trade","E":1700000000006,"s":"BTCUSDT","t":5000000001,"p":"65000.50000000","q":"0.01000000","T":1700000000005,"m":false,"M":true}}"#;

fn depth_frame() -> String {
    let lv = |base: f64| {
        (0..10)
            .map(|i| format!(r#"["{:.8}","{:.8}"]"#, base + i as f64 * 0.01, 0.5 + i as f64))
            .collect::<Vec<_>>()
            .join(",")
    };
    format!(
        r#"{{"stream":"btcusdt@depth@100ms","data":{{"e":"depthUpdate","E":1700000000000,"s":"BTCUSDT","U":157,"u":160,"b":[{}],"a":[{}]}}}}"#,
        lv(64990.0),
        lv(65000.0)
    )
}

#[derive(Deserialize)]
struct Combined<'a, T> {
    #[serde(borrow)]
    #[allow(dead_code)]
    stream: &'a str,
    data: T,
}

#[derive(Deserialize)]
#[allow(dead_code)]
struct SerdeTrade<'a> {
    e: &'a str,
    #[serde(rename = "E")]
    event_time: i64,
    s: &'a str,
    t: u64,
    p: &'a str,
    q: &'a str,
    #[serde(rename = "T")]
    trade_time: i64,
    m: bool,
}

#[derive(Deserialize)]
#[allow(dead_code)]
struct SerdeDepth<'a> {
    e: &'a str,
    #[serde(rename = "E")]
    event_time: i64,
    s: &'a str,
    #[serde(rename = "U")]
    first: u64,
    u: u64,
    #[serde(borrow)]
    b: Vec<[&'a str; 2]>,
    #[serde(borrow)]
    a: Vec<[&'a str; 2]>,
}

/// Reruns `cases` (ours first, then the baselines) interleaved in rounds; appends the
/// rows, ours noting its median per-round speed-up over the fastest baseline.
fn group(rows: &mut Vec<Row>, mut cases: Vec<Case<'_>>) {
    let (mut out, per_round) = interleaved(ROUNDS, &mut cases);
    let baselines: Vec<usize> = (1..out.len()).collect();
    if let Some(ours) = out.first_mut() {
        ours.note = format!(
            "{:.2}x the fastest baseline (median of {ROUNDS} interleaved rounds)",
            median_ratio(&per_round, 0, &baselines)
        );
    }
    rows.extend(out);
}

/// Rounds per group: each case runs a slice per round, all cases of a group in turn.
const ROUNDS: u64 = 25;

fn simd<'a, T: Deserialize<'a>>(buf: &'a mut Vec<u8>, frame: &[u8]) -> Option<T> {
    buf.clear();
    buf.extend_from_slice(frame);
    simd_json::serde::from_slice::<T>(buf).ok()
}

fn trade_out(c: Combined<SerdeTrade>) {
    keep((
        parse_decimal(c.data.p.as_bytes(), 8).ok(),
        parse_decimal(c.data.q.as_bytes(), 8).ok(),
        c.data.t,
    ));
}

fn depth_out(c: Combined<SerdeDepth>) {
    let mut sum = 0i64;
    for [p, q] in c.data.b.iter().chain(c.data.a.iter()) {
        let (p, q) = (
            parse_decimal(p.as_bytes(), 8).unwrap_or(0),
            parse_decimal(q.as_bytes(), 8).unwrap_or(0),
        );
        sum = sum.wrapping_add(p ^ q);
    }
    keep(sum);
}

fn match_out(m: SerdeMatch) {
    keep((
        parse_decimal(m.price.as_bytes(), 8).ok(),
        parse_decimal(m.size.as_bytes(), 8).ok(),
        m.trade_id,
        rfc3339::parse(m.time.as_bytes()),
    ));
}

fn l2_out(u: SerdeL2) {
    let mut sum = rfc3339::parse(u.time.as_bytes()).map_or(0, |t| t.0);
    for [_, p, q] in &u.changes {
        sum =
            sum.wrapping_add(parse_decimal(p.as_bytes(), 8).unwrap_or(0) ^ parse_decimal(q.as_bytes(), 8).unwrap_or(0));
    }
    keep(sum);
}

fn main() {
    let n = iters(5_000_000);
    let depth = depth_frame();
    let depth = depth.as_str();
    let mut rows = Vec::new();

    group(
        &mut rows,
        vec![
            Case::new("binance trade: stocksblitz scanner", n, 32, |_| {
                if let Ok(BinanceEvent::Trade(t)) = parse_frame(keep(TRADE).as_bytes()) {
                    keep((parse_decimal(t.price, 8).ok(), parse_decimal(t.qty, 8).ok(), t.id));
                }
            }),
            Case::new("binance trade: serde_json typed (baseline)", n, 32, |_| {
                if let Ok(c) = serde_json::from_str::<Combined<SerdeTrade>>(keep(TRADE)) {
                    trade_out(c);
                }
            }),
            Case::new("binance trade: sonic-rs typed (baseline)", n, 32, |_| {
                if let Ok(c) = sonic_rs::from_str::<Combined<SerdeTrade>>(keep(TRADE)) {
                    trade_out(c);
                }
            }),
            Case::new("binance trade: simd-json typed (baseline)", n, 32, {
                let mut buf = Vec::with_capacity(4096);
                move |_| {
                    if let Some(c) = simd::<Combined<SerdeTrade>>(&mut buf, keep(TRADE).as_bytes()) {
                        trade_out(c);
                    }
                }
            }),
        ],
    );

    let m = n / 4;
    group(
        &mut rows,
        vec![
            Case::new("binance depth 10+10: stocksblitz scanner", m, 16, |_| {
                if let Ok(BinanceEvent::Depth(d)) = parse_frame(keep(depth.as_bytes())) {
                    let mut sum = 0i64;
                    let _ = for_each_level(d.bids, Side::Buy, 8, 8, |_, p, q| sum = sum.wrapping_add(p.0 ^ q.0));
                    let _ = for_each_level(d.asks, Side::Sell, 8, 8, |_, p, q| sum = sum.wrapping_add(p.0 ^ q.0));
                    keep(sum);
                }
            }),
            Case::new("binance depth 10+10: serde_json typed (baseline)", m, 16, |_| {
                if let Ok(c) = serde_json::from_str::<Combined<SerdeDepth>>(keep(depth)) {
                    depth_out(c);
                }
            }),
            Case::new("binance depth 10+10: sonic-rs typed (baseline)", m, 16, |_| {
                if let Ok(c) = sonic_rs::from_str::<Combined<SerdeDepth>>(keep(depth)) {
                    depth_out(c);
                }
            }),
            Case::new("binance depth 10+10: simd-json typed (baseline)", m, 16, {
                let mut buf = Vec::with_capacity(4096);
                move |_| {
                    if let Some(c) = simd::<Combined<SerdeDepth>>(&mut buf, keep(depth.as_bytes())) {
                        depth_out(c);
                    }
                }
            }),
        ],
    );

    // Coinbase: decimals and the RFC 3339 time included on every row.
    group(
        &mut rows,
        vec![
            Case::new("coinbase match: stocksblitz scanner", n, 32, |_| {
                if let Ok(CoinbaseEvent::Match(m)) = parse_coinbase(keep(MATCH).as_bytes()) {
                    keep((
                        parse_decimal(m.price, 8).ok(),
                        parse_decimal(m.size, 8).ok(),
                        m.trade_id,
                        m.time,
                    ));
                }
            }),
            Case::new("coinbase match: serde_json typed (baseline)", n, 32, |_| {
                if let Ok(m) = serde_json::from_str::<SerdeMatch>(keep(MATCH)) {
                    match_out(m);
                }
            }),
            Case::new("coinbase match: sonic-rs typed (baseline)", n, 32, |_| {
                if let Ok(m) = sonic_rs::from_str::<SerdeMatch>(keep(MATCH)) {
                    match_out(m);
                }
            }),
            Case::new("coinbase match: simd-json typed (baseline)", n, 32, {
                let mut buf = Vec::with_capacity(4096);
                move |_| {
                    if let Some(m) = simd::<SerdeMatch>(&mut buf, keep(MATCH).as_bytes()) {
                        match_out(m);
                    }
                }
            }),
        ],
    );
    group(
        &mut rows,
        vec![
            Case::new("coinbase l2update (2 changes): stocksblitz scanner", n, 32, |_| {
                if let Ok(CoinbaseEvent::L2Update { changes, time, .. }) = parse_coinbase(keep(L2UPDATE).as_bytes()) {
                    let mut sum = time.0;
                    let _ = for_each_change(changes, None, 8, 8, |_, p, q| sum = sum.wrapping_add(p.0 ^ q.0));
                    keep(sum);
                }
            }),
            Case::new(
                "coinbase l2update (2 changes): serde_json typed (baseline)",
                n,
                32,
                |_| {
                    if let Ok(u) = serde_json::from_str::<SerdeL2>(keep(L2UPDATE)) {
                        l2_out(u);
                    }
                },
            ),
            Case::new(
                "coinbase l2update (2 changes): sonic-rs typed (baseline)",
                n,
                32,
                |_| {
                    if let Ok(u) = sonic_rs::from_str::<SerdeL2>(keep(L2UPDATE)) {
                        l2_out(u);
                    }
                },
            ),
            Case::new("coinbase l2update (2 changes): simd-json typed (baseline)", n, 32, {
                let mut buf = Vec::with_capacity(4096);
                move |_| {
                    if let Some(u) = simd::<SerdeL2>(&mut buf, keep(L2UPDATE).as_bytes()) {
                        l2_out(u);
                    }
                }
            }),
        ],
    );

    let mut tokens = SymbolMap::new();
    tokens.insert(
        738_561,
        VenueInstrument {
            id: InstrumentId(0),
            price_scale: 2,
            qty_scale: 0,
        },
    );
    let mut decoder = KiteDecoder::new(tokens, 1);
    let mut q = encode::Quote {
        token: 738_561,
        ltp: 245_005,
        volume: 1,
        ..encode::Quote::default()
    };
    for i in 0..5 {
        q.depth[i] = (100, 245_000 - 5 * i as i32, 3);
        q.depth[5 + i] = (100, 245_010 + 5 * i as i32, 3);
    }
    let frame = encode::frame(&[encode::full(&q)]);
    rows.push(batched("kite full packet (184 B, 10 depth levels)", n, 32, |_| {
        let mut count = 0u32;
        let _ = decoder.decode(keep(&frame), UnixNanos(1), &mut |_| count += 1);
        keep(count);
    }));
    print_table("venue frame parsing, fixed-point decimals included", &rows);
}
