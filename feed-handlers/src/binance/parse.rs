//! Binance spot WebSocket messages, parsed without allocation.
//!
//! Handles combined-stream frames (`{"stream":"btcusdt@trade","data":{...}}`) and raw
//! single-stream payloads, for the `trade`, `aggTrade`, `bookTicker` and `depthUpdate`
//! events, plus `serverShutdown`. Field names follow Binance's "WebSocket Streams for
//! Binance" spot documentation. Prices and quantities are decimal strings and are
//! parsed straight into fixed point at the instrument's scale; ids are `u64` (trade
//! ids exceed 2^32). Depth levels stay as a borrowed span and are walked on demand.

use stocksblitz_engine::{Aggressor, Price, Qty, Side, UnixNanos};

use crate::json_expect::Expect;
use crate::json_scan::{for_each_field, for_each_field_lazy, for_each_member, for_each_read, JsonError, Value};
pub use crate::normalize::ParseError;

/// One decoded event. Symbols are Binance's (upper case, e.g. `BTCUSDT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinanceEvent<'a> {
    Trade(TradeEvent<'a>),
    AggTrade(TradeEvent<'a>),
    BookTicker {
        symbol: &'a [u8],
        /// `u`, the book update id; optional (not used).
        update_id: Option<u64>,
        bid: &'a [u8],
        bid_qty: &'a [u8],
        ask: &'a [u8],
        ask_qty: &'a [u8],
    },
    Depth(DepthUpdate<'a>),
    /// The server will close the connection soon: reconnect make-before-break.
    ServerShutdown {
        event_time: UnixNanos,
    },
    /// A subscription reply (`{"result":null,"id":1}`) or an event type we ignore.
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TradeEvent<'a> {
    pub symbol: &'a [u8],
    pub id: u64,
    pub price: &'a [u8],
    pub qty: &'a [u8],
    pub trade_time: UnixNanos,
    /// `m`: the buyer was the maker, so the seller was the aggressor (`None` when
    /// absent: the aggressor is unknown).
    pub buyer_is_maker: Option<bool>,
}

impl TradeEvent<'_> {
    pub fn aggressor(&self) -> Aggressor {
        match self.buyer_is_maker {
            Some(true) => Aggressor::Sell,
            Some(false) => Aggressor::Buy,
            None => Aggressor::Unknown,
        }
    }
}

/// A diff depth event: levels with absolute quantities, `0` deletes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DepthUpdate<'a> {
    pub symbol: &'a [u8],
    pub event_time: UnixNanos,
    /// `U`: first update id in the event.
    pub first_id: u64,
    /// `u`: final update id in the event.
    pub final_id: u64,
    pub bids: &'a [u8],
    pub asks: &'a [u8],
}

/// A REST depth snapshot (`GET /api/v3/depth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DepthSnapshot<'a> {
    pub last_update_id: u64,
    pub bids: &'a [u8],
    pub asks: &'a [u8],
}

#[inline]
fn need<T>(v: Option<T>, name: &'static str) -> Result<T, ParseError> {
    v.ok_or(ParseError::Field(name))
}

fn millis(v: Option<i64>) -> UnixNanos {
    v.map_or(UnixNanos::UNKNOWN, UnixNanos::from_millis)
}

/// Walks `[["price","qty"], ...]` calling `f(side, price, qty)` with fixed-point values.
/// Levels laid out as Binance sends them are read in one pass with the decimals parsed
/// in place; any other layout goes through the general reader, with the same result.
pub fn for_each_level(
    span: &[u8],
    side: Side,
    price_scale: u8,
    qty_scale: u8,
    mut f: impl FnMut(Side, Price, Qty),
) -> Result<(), ParseError> {
    let compact = |x: &mut Expect<'_>| {
        x.lit(b"[\"")?;
        let (price, qty) = x.price_qty(price_scale, qty_scale)?;
        Some((Price(price), Qty(qty)))
    };
    let general = |[p, q]: [&[u8]; 2]| {
        let price = Price::parse(p, price_scale).map_err(|source| ParseError::Decimal { field: "price", source })?;
        let qty = Qty::parse(q, qty_scale).map_err(|source| ParseError::Decimal { field: "qty", source })?;
        Ok((price, qty))
    };
    for_each_read::<2, _, _>(span, compact, general, |(price, qty)| f(side, price, qty)).map_err(|e| match e {
        JsonError::Unexpected(_) | JsonError::Eof | JsonError::Trailing(_) | JsonError::TooDeep => {
            ParseError::Field("level")
        }
    })?
}

/// Parses a payload object (the `data` of a combined frame, or a raw stream frame).
/// Depth level arrays are only bracket-matched here; `for_each_level` validates them
/// when the book sync walks them (before anything is applied).
fn payload(obj: &[u8]) -> Result<BinanceEvent<'_>, ParseError> {
    let mut e = None;
    let (mut sym, mut big_e, mut t_time) = (None, None, None);
    let (mut t, mut a, mut u, mut big_u) = (None, None, None, None);
    let (mut p, mut q, mut m) = (None, None, None);
    let (mut b, mut big_b, mut a_px, mut big_a) = (None, None, None, None);
    let (mut bids, mut asks) = (None, None);
    for_each_field_lazy(obj, |k, v| {
        // Binance's field names are single characters: dispatch on the byte (a jump
        // table) instead of comparing slices; longer names are not ours.
        let &[key] = k else { return Ok(()) };
        match key {
            b'e' => e = v.as_str(),
            b'E' => big_e = v.as_i64(),
            b'T' => t_time = v.as_i64(),
            b's' => sym = v.as_str(),
            b't' => t = v.as_u64(),
            b'a' => match v {
                Value::Array(s) => asks = Some(s),
                Value::Str(s) => a_px = Some(s),
                _ => a = v.as_u64(),
            },
            b'b' => match v {
                Value::Array(s) => bids = Some(s),
                _ => b = v.as_str(),
            },
            b'A' => big_a = v.as_str(),
            b'B' => big_b = v.as_str(),
            b'u' => u = v.as_u64(),
            b'U' => big_u = v.as_u64(),
            b'p' => p = v.as_str(),
            b'q' => q = v.as_str(),
            b'm' => m = v.as_bool(),
            _ => {}
        }
        Ok(())
    })?;
    let trade = |id: Option<u64>, id_name| -> Result<TradeEvent<'_>, ParseError> {
        Ok(TradeEvent {
            symbol: need(sym, "s")?,
            id: need(id, id_name)?,
            price: need(p, "p")?,
            qty: need(q, "q")?,
            trade_time: millis(t_time.or(big_e)),
            buyer_is_maker: m,
        })
    };
    match e {
        Some(b"trade") => Ok(BinanceEvent::Trade(trade(t, "t")?)),
        Some(b"aggTrade") => Ok(BinanceEvent::AggTrade(trade(a, "a")?)),
        Some(b"depthUpdate") => Ok(BinanceEvent::Depth(DepthUpdate {
            symbol: need(sym, "s")?,
            event_time: millis(big_e),
            first_id: need(big_u, "U")?,
            final_id: need(u, "u")?,
            bids: need(bids, "b")?,
            asks: need(asks, "a")?,
        })),
        Some(b"serverShutdown") => Ok(BinanceEvent::ServerShutdown {
            event_time: millis(big_e),
        }),
        Some(_) => Ok(BinanceEvent::Other),
        // bookTicker has no "e": a symbol with an update id or a price is one.
        None if sym.is_some() && (u.is_some() || b.is_some() || a_px.is_some()) => Ok(BinanceEvent::BookTicker {
            symbol: need(sym, "s")?,
            update_id: u,
            bid: need(b, "b")?,
            bid_qty: need(big_b, "B")?,
            ask: need(a_px, "a")?,
            ask_qty: need(big_a, "A")?,
        }),
        None => Ok(BinanceEvent::Other),
    }
}

/// The payload of a combined-stream frame laid out exactly as Binance sends it,
/// `{"stream":"<name>","data":{...}}`, located without walking it twice. `None` for
/// any other layout (the general path handles those).
fn combined_payload(frame: &[u8]) -> Option<&[u8]> {
    const PREFIX: &[u8] = b"{\"stream\":\"";
    const MIDDLE: &[u8] = b"\",\"data\":";
    let rest = frame.strip_prefix(PREFIX)?;
    // Stream names are plain ASCII: no escapes, no quotes.
    let end = rest.iter().position(|&b| b == b'"' || b == b'\\' || b < 0x20)?;
    let after = rest.get(end..)?.strip_prefix(MIDDLE)?;
    let payload = after.strip_suffix(b"}")?;
    payload.first().filter(|&&b| b == b'{').map(|_| payload)
}

/// The event at the cursor when it is laid out exactly as Binance serializes it (the
/// field order of the spot "WebSocket Streams" documentation); `None` for anything
/// else. See [`crate::json_expect`].
fn payload_in_order<'a>(x: &mut Expect<'a>) -> Option<BinanceEvent<'a>> {
    if x.lit(br#"{"e":"trade","E":"#).is_some() {
        x.int()?;
        let t = trade_in_order(x, br#","t":"#)?;
        x.lit(b"}")?;
        return Some(BinanceEvent::Trade(t));
    }
    if x.lit(br#"{"e":"depthUpdate","E":"#).is_some() {
        let event_time = millis(Some(x.int()?));
        let symbol = x.key_str(br#","s":""#)?;
        let first_id = x.key_uint(br#","U":"#)?;
        let final_id = x.key_uint(br#","u":"#)?;
        x.lit(br#","b":"#)?;
        let bids = x.levels()?;
        x.lit(br#","a":"#)?;
        let asks = x.levels()?;
        x.lit(b"}")?;
        return Some(BinanceEvent::Depth(DepthUpdate {
            symbol,
            event_time,
            first_id,
            final_id,
            bids,
            asks,
        }));
    }
    if x.lit(br#"{"u":"#).is_some() {
        let update_id = x.uint()?;
        let symbol = x.key_str(br#","s":""#)?;
        let bid = x.key_str(br#","b":""#)?;
        let bid_qty = x.key_str(br#","B":""#)?;
        let ask = x.key_str(br#","a":""#)?;
        let ask_qty = x.key_str(br#","A":""#)?;
        x.lit(b"}")?;
        return Some(BinanceEvent::BookTicker {
            symbol,
            update_id: Some(update_id),
            bid,
            bid_qty,
            ask,
            ask_qty,
        });
    }
    x.lit(br#"{"e":"aggTrade","E":"#)?;
    x.int()?;
    let t = trade_in_order(x, br#","a":"#)?;
    x.lit(b"}")?;
    Some(BinanceEvent::AggTrade(t))
}

/// `"s":..,<id>:..,"p":..,"q":..,["f":..,"l":..,]"T":..,"m":..,"M":..` of a trade or
/// aggregate trade (which adds the first and last trade ids).
fn trade_in_order<'a>(x: &mut Expect<'a>, id_key: &[u8]) -> Option<TradeEvent<'a>> {
    let symbol = x.key_str(br#","s":""#)?;
    x.lit(id_key)?;
    let id = x.uint()?;
    let price = x.key_str(br#","p":""#)?;
    let qty = x.key_str(br#","q":""#)?;
    if x.lit(br#","f":"#).is_some() {
        x.uint()?;
        x.key_uint(br#","l":"#)?;
    }
    x.lit(br#","T":"#)?;
    let trade_time = x.int()?;
    x.lit(br#","m":"#)?;
    let buyer_is_maker = x.bool()?;
    x.lit(br#","M":"#)?;
    x.bool()?;
    Some(TradeEvent {
        symbol,
        id,
        price,
        qty,
        trade_time: UnixNanos::from_millis(trade_time),
        buyer_is_maker: Some(buyer_is_maker),
    })
}

/// A whole frame, combined or raw, in Binance's own layout.
fn frame_in_order(frame: &[u8]) -> Option<BinanceEvent<'_>> {
    let mut x = Expect::new(frame);
    let combined = x.lit(br#"{"stream":""#).is_some();
    if combined {
        x.str()?;
        x.lit(br#","data":"#)?;
    }
    let event = payload_in_order(&mut x)?;
    if combined {
        x.lit(b"}")?;
    }
    x.end()?;
    Some(event)
}

/// Parses one text frame: combined (`{"stream":..,"data":{..}}`) or raw.
pub fn parse_frame(frame: &[u8]) -> Result<BinanceEvent<'_>, ParseError> {
    match frame_in_order(frame) {
        Some(event) => Ok(event),
        None => parse_any_layout(frame),
    }
}

/// The general path: any key order, whitespace, escapes, unknown fields.
fn parse_any_layout(frame: &[u8]) -> Result<BinanceEvent<'_>, ParseError> {
    if let Some(data) = combined_payload(frame) {
        // `payload` validates the object in full; the wrapper was matched exactly.
        return payload(data);
    }
    let mut data = None;
    let mut stream = false;
    for_each_field(frame, |k, v| {
        match (k, v) {
            (b"data", Value::Object(o)) => data = Some(o),
            (b"stream", _) => stream = true,
            _ => {}
        }
        Ok(())
    })?;
    match data {
        Some(d) if stream => payload(d),
        _ => payload(frame),
    }
}

/// Parses a REST depth snapshot body.
pub fn parse_snapshot(body: &[u8]) -> Result<DepthSnapshot<'_>, ParseError> {
    let (mut id, mut bids, mut asks) = (None, None, None);
    for_each_member(body, |k, v| {
        match (k, v) {
            (b"lastUpdateId", v) => id = v.as_u64(),
            (b"bids", Value::Array(s)) => bids = Some(s),
            (b"asks", Value::Array(s)) => asks = Some(s),
            _ => {}
        }
        Ok(())
    })?;
    Ok(DepthSnapshot {
        last_update_id: id.ok_or(ParseError::Field("lastUpdateId"))?,
        bids: bids.ok_or(ParseError::Field("bids"))?,
        asks: asks.ok_or(ParseError::Field("asks"))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mutation_testing::{edited, level_edits, paths_agree, serde_reference, structural_edits};
    use proptest::prelude::*;

    // Examples from Binance's spot "WebSocket Streams" documentation.
    const TRADE: &str = r#"{"e":"trade","E":1672515782136,"s":"BNBBTC","t":12345,"p":"0.001","q":"100","T":1672515782136,"m":true,"M":true}"#;
    const AGG: &str = r#"{"e":"aggTrade","E":1672515782136,"s":"BNBBTC","a":12345,"p":"0.001","q":"100","f":100,"l":105,"T":1672515782136,"m":true,"M":true}"#;
    const TICKER: &str =
        r#"{"u":400900217,"s":"BNBUSDT","b":"25.35190000","B":"31.21000000","a":"25.36520000","A":"40.66000000"}"#;
    const DEPTH: &str = r#"{"e":"depthUpdate","E":1672515782136,"s":"BNBBTC","U":157,"u":160,"b":[["0.0024","10"]],"a":[["0.0026","100"]]}"#;
    const SNAPSHOT: &str =
        r#"{"lastUpdateId":1027024,"bids":[["4.00000000","431.00000000"]],"asks":[["4.00000200","12.00000000"]]}"#;

    #[test]
    fn trade_and_agg_trade() {
        let BinanceEvent::Trade(t) = parse_frame(TRADE.as_bytes()).unwrap() else {
            panic!("trade")
        };
        assert_eq!(
            (t.symbol, t.id, t.price, t.qty),
            (&b"BNBBTC"[..], 12345, &b"0.001"[..], &b"100"[..])
        );
        assert_eq!(t.trade_time, UnixNanos::from_millis(1_672_515_782_136));
        assert_eq!(t.aggressor(), Aggressor::Sell, "buyer is maker: the seller hit the bid");
        let BinanceEvent::AggTrade(a) = parse_frame(AGG.as_bytes()).unwrap() else {
            panic!("agg")
        };
        assert_eq!(a.id, 12345);
        let big = TRADE.replace("12345", "5000000000123");
        let BinanceEvent::Trade(t) = parse_frame(big.as_bytes()).unwrap() else {
            panic!("trade")
        };
        assert_eq!(t.id, 5_000_000_000_123, "ids beyond 2^32");
    }

    #[test]
    fn combined_stream_wrapper() {
        let frame = format!(r#"{{"stream":"bnbusdt@bookTicker","data":{TICKER}}}"#);
        let BinanceEvent::BookTicker {
            symbol,
            update_id,
            bid,
            ask_qty,
            ..
        } = parse_frame(frame.as_bytes()).unwrap()
        else {
            panic!("bookTicker")
        };
        assert_eq!(
            (symbol, update_id, bid, ask_qty),
            (
                &b"BNBUSDT"[..],
                Some(400_900_217),
                &b"25.35190000"[..],
                &b"40.66000000"[..]
            )
        );
    }

    #[test]
    fn depth_update_levels() {
        let BinanceEvent::Depth(d) = parse_frame(DEPTH.as_bytes()).unwrap() else {
            panic!("depth")
        };
        assert_eq!((d.first_id, d.final_id), (157, 160));
        let mut levels = Vec::new();
        for_each_level(d.bids, Side::Buy, 4, 0, |s, p, q| levels.push((s, p, q))).unwrap();
        for_each_level(d.asks, Side::Sell, 4, 0, |s, p, q| levels.push((s, p, q))).unwrap();
        assert_eq!(
            levels,
            vec![(Side::Buy, Price(24), Qty(10)), (Side::Sell, Price(26), Qty(100))]
        );
        // Too precise for the instrument: a clear error, not rounding.
        assert!(matches!(
            for_each_level(d.bids, Side::Buy, 3, 0, |_, _, _| {}),
            Err(ParseError::Decimal { field: "price", .. })
        ));
    }

    #[test]
    fn snapshot_and_control_messages() {
        let s = parse_snapshot(SNAPSHOT.as_bytes()).unwrap();
        assert_eq!(s.last_update_id, 1_027_024);
        let mut n = 0;
        for_each_level(s.asks, Side::Sell, 8, 8, |_, p, q| {
            assert_eq!((p, q), (Price(400_000_200), Qty(1_200_000_000)));
            n += 1;
        })
        .unwrap();
        assert_eq!(n, 1);
        assert_eq!(parse_frame(br#"{"result":null,"id":1}"#).unwrap(), BinanceEvent::Other);
        assert!(matches!(
            parse_frame(br#"{"e":"serverShutdown","E":1700000000000}"#).unwrap(),
            BinanceEvent::ServerShutdown { .. }
        ));
    }

    #[test]
    fn malformed_frames() {
        for bad in [
            "",
            "{",
            r#"{"e":"trade"}"#,
            r#"{"e":"trade","s":"X","t":"abc","p":"1","q":"1","m":true}"#,
            r#"{"e":"depthUpdate","s":"X","U":1,"u":2,"b":"x","a":[]}"#,
            &TRADE[..TRADE.len() - 1],
        ] {
            assert!(parse_frame(bad.as_bytes()).is_err(), "{bad:?}");
        }
        for bad in [r#"[["1"]]"#, r#"[["1","2","3"]]"#, r#"[[1,2]]"#, r#"["1"]"#] {
            assert!(
                for_each_level(bad.as_bytes(), Side::Buy, 2, 2, |_, _, _| {}).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn in_order_fast_path_agrees_with_the_general_path() {
        let combined = format!(r#"{{"stream":"bnbbtc@depth","data":{DEPTH}}}"#);
        let mut fast = 0;
        let mut frames = crate::capture::text_frames(include_str!("../../tests/fixtures/binance.cap"));
        frames.extend([TRADE, AGG, TICKER, DEPTH, &combined].map(|f| f.as_bytes().to_vec()));
        for frame in &frames {
            if let Some(event) = frame_in_order(frame) {
                fast += 1;
                assert_eq!(Ok(event), parse_any_layout(frame), "{}", String::from_utf8_lossy(frame));
            }
        }
        assert!(fast >= 10, "the documented layouts take the fast path ({fast})");
        let spaced = TRADE.replace(",", ", ");
        assert_eq!(frame_in_order(spaced.as_bytes()), None, "whitespace: general path");
        assert_eq!(parse_frame(spaced.as_bytes()), parse_frame(TRADE.as_bytes()));
    }

    proptest! {
        /// A frame with bytes changed either leaves the fast path (and the general path
        /// decides) or reads exactly as the general path reads it, except where the
        /// fast path located a depth event's levels by their `]]` rather than matching
        /// brackets: then walking those levels fails, and the general path fails too.
        #[test]
        fn mutated_frames_read_the_same_on_both_paths(which in 0usize..5, edits in structural_edits()) {
            let levels = r#"[["0.0024","10"],["0.0023","1"]]"#;
            let deep = DEPTH.replace(r#"[["0.0024","10"]]"#, levels);
            let frame = edited([TRADE, AGG, TICKER, DEPTH, &deep][which].as_bytes(), &edits);
            paths_agree(&frame, frame_in_order(&frame), parse_any_layout(&frame), |e| match e {
                BinanceEvent::Depth(d) => {
                    for_each_level(d.bids, Side::Buy, 8, 8, |_, _, _| {}).is_ok()
                        && for_each_level(d.asks, Side::Sell, 8, 8, |_, _, _| {}).is_ok()
                }
                _ => true,
            })?;
        }

        /// Level arrays with bytes changed read exactly as a general JSON parser and
        /// the slice decimal parser read them, whichever of our two readers (compact
        /// in place, or general) each level takes.
        #[test]
        fn mutated_levels_read_as_a_general_parser_reads_them(edits in level_edits(b'-'), ps in 0u8..=9, qs in 0u8..=9) {
            let levels = br#"[["64990.01000000","0.50000000"],["7","12.5"],["0.00001000","3.00000000"]]"#;
            let span = edited(levels, &edits);
            let mut ours = Vec::new();
            let ours = for_each_level(&span, Side::Buy, ps, qs, |_, p, q| ours.push((p, q))).map(|()| ours);
            let reference = serde_reference(&span, |[p, q]: &[String; 2]| {
                Some((Price::parse_str(p, ps).ok()?, Qty::parse_str(q, qs).ok()?))
            });
            prop_assert_eq!(ours.ok(), reference, "{}", String::from_utf8_lossy(&span));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(BinanceEvent::Depth(d)) = parse_frame(&bytes) {
                let _ = for_each_level(d.bids, Side::Buy, 8, 8, |_, _, _| {});
            }
        }

        /// Every truncation of a valid frame is rejected, never misread.
        #[test]
        fn truncations_are_rejected(cut in 0usize..200) {
            for msg in [TRADE, AGG, TICKER, DEPTH] {
                if cut < msg.len() {
                    prop_assert!(parse_frame(&msg.as_bytes()[..cut]).is_err());
                }
            }
        }
    }

    fn without(msg: &str, key: &str) -> String {
        let mut v: serde_json::Value = serde_json::from_str(msg).expect("json");
        v.as_object_mut().and_then(|o| o.remove(key)).expect("key present");
        v.to_string()
    }

    /// What `e` reads as when the payload lacks `key`.
    fn cleared<'a>(e: BinanceEvent<'a>, key: &str) -> BinanceEvent<'a> {
        let trade = |mut t: TradeEvent<'a>| {
            match key {
                "m" => t.buyer_is_maker = None,
                // The trade time falls back to the event time.
                "T" => t.trade_time = UnixNanos::from_millis(1_672_515_782_136),
                _ => {}
            }
            t
        };
        match e {
            BinanceEvent::Trade(t) => BinanceEvent::Trade(trade(t)),
            BinanceEvent::AggTrade(t) => BinanceEvent::AggTrade(trade(t)),
            BinanceEvent::Depth(mut d) => {
                if key == "E" {
                    d.event_time = UnixNanos::UNKNOWN;
                }
                BinanceEvent::Depth(d)
            }
            BinanceEvent::BookTicker {
                symbol,
                update_id,
                bid,
                bid_qty,
                ask,
                ask_qty,
            } => BinanceEvent::BookTicker {
                symbol,
                update_id: update_id.filter(|_| key != "u"),
                bid,
                bid_qty,
                ask,
                ask_qty,
            },
            e => e,
        }
    }

    /// Issue 14 point 3: every message type with each field removed in turn. An
    /// optional field's absence is tolerated (the message reads the same with that
    /// field absent); a required one's is an error naming it.
    #[test]
    fn each_optional_field_may_be_absent() {
        let cases: [(&str, &[&str]); 4] = [
            (TRADE, &["e", "s", "t", "p", "q"]),
            (AGG, &["e", "s", "a", "p", "q"]),
            (TICKER, &["s", "b", "B", "a", "A"]),
            (DEPTH, &["e", "s", "U", "u", "b", "a"]),
        ];
        for (msg, required) in cases {
            let full = parse_frame(msg.as_bytes()).expect("full message");
            let keys: Vec<String> = serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(msg)
                .expect("object")
                .keys()
                .cloned()
                .collect();
            for key in keys {
                let text = without(msg, &key);
                let got = parse_frame(text.as_bytes());
                if key == "e" || (msg == TICKER && key == "s") {
                    // Without its type (or a ticker without its symbol) a payload is
                    // not one of ours: ignored, never misread.
                    assert!(matches!(got, Ok(BinanceEvent::Other) | Err(_)), "{text}: {got:?}");
                } else if required.contains(&key.as_str()) {
                    assert!(
                        matches!(got, Err(ParseError::Field(f)) if f == key),
                        "without {key}: {text}: {got:?}"
                    );
                } else {
                    assert_eq!(got, Ok(cleared(full, &key)), "without {key}: {text}");
                }
            }
        }
        let snap = parse_snapshot(SNAPSHOT.as_bytes()).expect("snapshot");
        assert_eq!(snap.last_update_id, 1_027_024);
        for key in ["lastUpdateId", "bids", "asks"] {
            let text = without(SNAPSHOT, key);
            assert_eq!(
                parse_snapshot(text.as_bytes()),
                Err(ParseError::Field(if key == "lastUpdateId" {
                    "lastUpdateId"
                } else if key == "bids" {
                    "bids"
                } else {
                    "asks"
                }))
            );
        }
    }
}
