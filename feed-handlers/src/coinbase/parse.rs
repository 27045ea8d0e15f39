//! Coinbase Exchange WebSocket feed messages, parsed without allocation.
//!
//! Message shapes from Coinbase Exchange's "WebSocket channels" documentation:
//! `subscriptions`, `heartbeat` (`sequence`, `last_trade_id`), `ticker`, `snapshot`
//! and `l2update` (level2: absolute sizes, "0" deletes, `changes` as
//! `[side, price, size]`), `match`/`last_match` (`side` is the MAKER's side, so the
//! aggressor is the opposite), and `error`. Times are RFC 3339 strings.

use stocksblitz_engine::{Aggressor, FixedError, Price, Qty, Side, UnixNanos};

use crate::json_expect::Expect;
use crate::json_scan::{for_each_field_lazy, for_each_item, for_each_read, JsonError, Value};
pub use crate::normalize::ParseError;
use crate::rfc3339;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Match<'a> {
    pub product: &'a [u8],
    pub trade_id: u64,
    pub sequence: u64,
    pub price: &'a [u8],
    pub size: &'a [u8],
    /// The maker's side (`None` when the message has no `side`).
    pub maker_side: Option<Side>,
    pub time: UnixNanos,
    /// `last_match`: the most recent match, sent once on subscribe.
    pub last: bool,
}

impl Match<'_> {
    /// The taker hit the maker: its side is the opposite.
    pub fn aggressor(&self) -> Aggressor {
        match self.maker_side {
            Some(Side::Buy) => Aggressor::Sell,
            Some(Side::Sell) => Aggressor::Buy,
            None => Aggressor::Unknown,
        }
    }
}

/// A `ticker`. Only `product_id` is required: older tickers have no
/// `best_bid_size`/`best_ask_size`, and any field but the product may be absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticker<'a> {
    pub product: &'a [u8],
    /// `None`: no ordering check is possible for this ticker.
    pub sequence: Option<u64>,
    pub best_bid: Option<&'a [u8]>,
    pub best_bid_size: Option<&'a [u8]>,
    pub best_ask: Option<&'a [u8]>,
    pub best_ask_size: Option<&'a [u8]>,
    pub time: UnixNanos,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CoinbaseEvent<'a> {
    Subscriptions,
    /// `sequence` and `last_trade_id` are optional (a heartbeat without a trade id
    /// only says the connection is alive).
    Heartbeat {
        product: &'a [u8],
        sequence: Option<u64>,
        last_trade_id: Option<u64>,
        time: UnixNanos,
    },
    Ticker(Ticker<'a>),
    /// level2 snapshot: `bids`/`asks` spans of `[price, size]`.
    Snapshot {
        product: &'a [u8],
        bids: &'a [u8],
        asks: &'a [u8],
    },
    /// level2 update: `changes` span of `[side, price, size]`.
    L2Update {
        product: &'a [u8],
        time: UnixNanos,
        changes: &'a [u8],
    },
    Match(Match<'a>),
    /// A REST level2 book (`GET /products/{id}/book?level=2`) the handler fetched for
    /// an audit, wrapped as
    /// `{"type":"rest_book","product_id":..,"requested_ns":..,"data":<body>}`.
    RestBook {
        product: &'a [u8],
        /// When the handler sent the request.
        requested: UnixNanos,
        bids: &'a [u8],
        asks: &'a [u8],
    },
    Error {
        message: &'a [u8],
    },
    Other,
}

fn need<T>(v: Option<T>, name: &'static str) -> Result<T, ParseError> {
    v.ok_or(ParseError::Field(name))
}

fn side(s: Option<&[u8]>) -> Result<Side, ParseError> {
    match s {
        Some(b"buy") => Ok(Side::Buy),
        Some(b"sell") => Ok(Side::Sell),
        _ => Err(ParseError::Field("side")),
    }
}

fn time(s: Option<&[u8]>) -> UnixNanos {
    s.and_then(rfc3339::parse).unwrap_or(UnixNanos::UNKNOWN)
}

/// Parses one frame. Nested arrays (levels, changes) are only bracket-matched here and
/// fully validated by [`for_each_change`] when walked, before anything is applied.
pub fn parse_frame(frame: &[u8]) -> Result<CoinbaseEvent<'_>, ParseError> {
    match frame_in_order(frame) {
        Some(event) => Ok(event),
        None => parse_any_layout(frame),
    }
}

/// The hot messages (`match`, `last_match`, `l2update`) laid out exactly as Coinbase
/// serializes them (field order of its "WebSocket channels" documentation); `None`
/// for anything else. See [`crate::json_expect`].
fn frame_in_order(frame: &[u8]) -> Option<CoinbaseEvent<'_>> {
    let mut x = Expect::new(frame);
    let event = if x.lit(br#"{"type":"l2update","product_id":""#).is_some() {
        let product = x.str()?;
        let t = x.key_str(br#","time":""#)?;
        x.lit(br#","changes":"#)?;
        let changes = x.levels()?;
        CoinbaseEvent::L2Update {
            product,
            time: time(Some(t)),
            changes,
        }
    } else {
        let last = if x.lit(br#"{"type":"match","trade_id":"#).is_some() {
            false
        } else {
            x.lit(br#"{"type":"last_match","trade_id":"#)?;
            true
        };
        let trade_id = x.uint()?;
        let sequence = x.key_uint(br#","sequence":"#)?;
        x.key_str(br#","maker_order_id":""#)?;
        x.key_str(br#","taker_order_id":""#)?;
        let t = x.key_str(br#","time":""#)?;
        let product = x.key_str(br#","product_id":""#)?;
        let size = x.key_str(br#","size":""#)?;
        let price = x.key_str(br#","price":""#)?;
        x.lit(br#","side":""#)?;
        let maker_side = Some(side(x.str()).ok()?);
        CoinbaseEvent::Match(Match {
            product,
            trade_id,
            sequence,
            price,
            size,
            maker_side,
            time: time(Some(t)),
            last,
        })
    };
    x.lit(b"}")?;
    x.end()?;
    Some(event)
}

/// The general path: any key order, whitespace, escapes, unknown fields.
fn parse_any_layout(frame: &[u8]) -> Result<CoinbaseEvent<'_>, ParseError> {
    let (mut kind, mut product, mut seq, mut trade_id, mut last_trade_id) = (None, None, None, None, None);
    let (mut price, mut size, mut side_s, mut t, mut message) = (None, None, None, None, None);
    let (mut bb, mut bbs, mut ba, mut bas) = (None, None, None, None);
    let (mut bids, mut asks, mut changes, mut data, mut requested) = (None, None, None, None, None);
    for_each_field_lazy(frame, |k, v| {
        match (k, v) {
            (b"type", v) => kind = v.as_str(),
            (b"product_id", v) => product = v.as_str(),
            (b"sequence", v) => seq = v.as_u64(),
            (b"trade_id", v) => trade_id = v.as_u64(),
            (b"last_trade_id", v) => last_trade_id = v.as_u64(),
            (b"price", v) => price = v.as_str(),
            (b"size", v) => size = v.as_str(),
            (b"side", v) => side_s = v.as_str(),
            (b"time", v) => t = v.as_str(),
            (b"message", v) => message = v.as_str(),
            (b"best_bid", v) => bb = v.as_str(),
            (b"best_bid_size", v) => bbs = v.as_str(),
            (b"best_ask", v) => ba = v.as_str(),
            (b"best_ask_size", v) => bas = v.as_str(),
            (b"bids", Value::Array(s)) => bids = Some(s),
            (b"asks", Value::Array(s)) => asks = Some(s),
            (b"changes", Value::Array(s)) => changes = Some(s),
            (b"data", Value::Object(o)) => data = Some(o),
            (b"requested_ns", v) => requested = v.as_i64(),
            _ => {}
        }
        Ok(())
    })?;
    Ok(match need(kind, "type")? {
        b"subscriptions" => CoinbaseEvent::Subscriptions,
        b"heartbeat" => CoinbaseEvent::Heartbeat {
            product: need(product, "product_id")?,
            sequence: seq,
            last_trade_id,
            time: time(t),
        },
        b"ticker" => CoinbaseEvent::Ticker(Ticker {
            product: need(product, "product_id")?,
            sequence: seq,
            best_bid: bb,
            best_bid_size: bbs,
            best_ask: ba,
            best_ask_size: bas,
            time: time(t),
        }),
        b"snapshot" => CoinbaseEvent::Snapshot {
            product: need(product, "product_id")?,
            bids: need(bids, "bids")?,
            asks: need(asks, "asks")?,
        },
        b"l2update" => CoinbaseEvent::L2Update {
            product: need(product, "product_id")?,
            time: time(t),
            changes: need(changes, "changes")?,
        },
        k @ (b"match" | b"last_match") => CoinbaseEvent::Match(Match {
            product: need(product, "product_id")?,
            trade_id: need(trade_id, "trade_id")?,
            sequence: seq.unwrap_or(0),
            price: need(price, "price")?,
            size: need(size, "size")?,
            maker_side: side_s.map(|s| side(Some(s))).transpose()?,
            time: time(t),
            last: k == b"last_match",
        }),
        b"rest_book" => {
            let (mut b, mut a) = (None, None);
            crate::json_scan::for_each_member(need(data, "data")?, |k, v| {
                match (k, v) {
                    (b"bids", Value::Array(s)) => b = Some(s),
                    (b"asks", Value::Array(s)) => a = Some(s),
                    _ => {}
                }
                Ok(())
            })?;
            CoinbaseEvent::RestBook {
                product: need(product, "product_id")?,
                requested: UnixNanos(need(requested, "requested_ns")?),
                bids: need(b, "bids")?,
                asks: need(a, "asks")?,
            }
        }
        b"error" => CoinbaseEvent::Error {
            message: message.unwrap_or(b""),
        },
        _ => CoinbaseEvent::Other,
    })
}

fn decimal<T>(
    s: &[u8],
    scale: u8,
    field: &'static str,
    f: fn(&[u8], u8) -> Result<T, FixedError>,
) -> Result<T, ParseError> {
    f(s, scale).map_err(|source| ParseError::Decimal { field, source })
}

/// Walks level spans. For a snapshot side pass `Some(side)` (items are
/// `[price, size]`, or `[price, size, num_orders]` in REST books); for `changes` pass
/// `None` (items are `[side, price, size]`).
pub fn for_each_change(
    span: &[u8],
    fixed_side: Option<Side>,
    price_scale: u8,
    qty_scale: u8,
    mut f: impl FnMut(Side, Price, Qty),
) -> Result<(), ParseError> {
    if fixed_side.is_none() {
        // `changes`, the hot case: exactly three strings per item.
        // Read in one pass, decimals in place, when laid out as Coinbase sends them;
        // any other layout through the general reader, with the same result.
        let compact = |x: &mut Expect<'_>| {
            x.lit(b"[\"")?;
            let side = side(x.str()).ok()?;
            x.lit(b",\"")?;
            let (price, qty) = x.price_qty(price_scale, qty_scale)?;
            Some((side, Price(price), Qty(qty)))
        };
        let general = |[s, p, q]: [&[u8]; 3]| {
            Ok((
                side(Some(s))?,
                decimal(p, price_scale, "price", Price::parse)?,
                decimal(q, qty_scale, "size", Qty::parse)?,
            ))
        };
        return for_each_read::<3, _, ParseError>(span, compact, general, |(s, p, q)| f(s, p, q))
            .map_err(|_| ParseError::Field("level"))?;
    }
    let mut err = None;
    let fail = |e: ParseError, slot: &mut Option<ParseError>| {
        *slot = Some(e);
        JsonError::Unexpected(0)
    };
    for_each_item(span, |item| {
        let Value::Array(fields) = item else {
            return Err(fail(ParseError::Field("level"), &mut err));
        };
        let mut parts: [&[u8]; 3] = [b"", b"", b""];
        let mut n = 0;
        // REST books add a third element (order count, a number) after price and size.
        let strings = if fixed_side.is_some() { 2 } else { 3 };
        for_each_item(fields, |x| {
            match (x.as_str(), parts.get_mut(n)) {
                (Some(s), Some(slot)) if n < strings => *slot = s,
                (_, Some(_)) if n >= strings => {}
                _ => return Err(JsonError::Unexpected(0)),
            }
            n += 1;
            Ok(())
        })
        .map_err(|_| fail(ParseError::Field("level"), &mut err))?;
        let (s, p, q) = match (fixed_side, n) {
            (Some(s), 2 | 3) => (Ok(s), parts[0], parts[1]),
            (None, 3) => (side(Some(parts[0])), parts[1], parts[2]),
            _ => return Err(fail(ParseError::Field("level"), &mut err)),
        };
        let parsed = s.and_then(|s| {
            Ok((
                s,
                decimal(p, price_scale, "price", Price::parse)?,
                decimal(q, qty_scale, "size", Qty::parse)?,
            ))
        });
        match parsed {
            Ok((s, p, q)) => {
                f(s, p, q);
                Ok(())
            }
            Err(e) => Err(fail(e, &mut err)),
        }
    })
    .map_err(|e| err.unwrap_or(ParseError::Json(e)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mutation_testing::{edited, level_edits, paths_agree, serde_reference, structural_edits};
    use proptest::prelude::*;

    // Examples from Coinbase Exchange's WebSocket channel documentation.
    const HEARTBEAT: &str = r#"{"type":"heartbeat","sequence":90,"last_trade_id":20,"product_id":"BTC-USD","time":"2014-11-07T08:19:28.464459Z"}"#;
    const TICKER: &str = r#"{"type":"ticker","sequence":37475248783,"product_id":"ETH-USD","price":"1285.22","open_24h":"1310.79","volume_24h":"245532.79269678","low_24h":"1280.52","high_24h":"1313.8","volume_30d":"9788783.60117027","best_bid":"1285.04","best_bid_size":"0.46688654","best_ask":"1285.27","best_ask_size":"1.56637040","side":"buy","time":"2022-10-19T23:28:22.061769Z","trade_id":370843401,"last_size":"11.4396987"}"#;
    const SNAPSHOT: &str = r#"{"type":"snapshot","product_id":"BTC-USD","bids":[["10101.10","0.45054140"]],"asks":[["10102.55","0.57753524"]]}"#;
    const L2UPDATE: &str = r#"{"type":"l2update","product_id":"BTC-USD","time":"2019-08-14T20:42:27.265Z","changes":[["buy","10101.80000000","0.162567"]]}"#;
    const MATCH: &str = r#"{"type":"match","trade_id":10,"sequence":50,"maker_order_id":"ac928c66-ca53-498f-9c13-a110027a60e8","taker_order_id":"132fb6ae-456b-4654-b4e0-d681ac05cea1","time":"2014-11-07T08:19:27.028459Z","product_id":"BTC-USD","size":"5.23512","price":"400.23","side":"sell"}"#;

    #[test]
    fn documented_messages() {
        assert!(matches!(
            parse_frame(HEARTBEAT.as_bytes()).unwrap(),
            CoinbaseEvent::Heartbeat {
                sequence: Some(90),
                last_trade_id: Some(20),
                ..
            }
        ));
        let CoinbaseEvent::Ticker(t) = parse_frame(TICKER.as_bytes()).unwrap() else {
            panic!("ticker")
        };
        assert_eq!(
            (t.sequence, t.best_bid, t.best_ask_size),
            (Some(37_475_248_783), Some(&b"1285.04"[..]), Some(&b"1.56637040"[..]))
        );
        let CoinbaseEvent::Match(m) = parse_frame(MATCH.as_bytes()).unwrap() else {
            panic!("match")
        };
        assert_eq!(
            (m.trade_id, m.maker_side, m.aggressor()),
            (10, Some(Side::Sell), Aggressor::Buy)
        );
        assert_eq!(m.time, UnixNanos(1_415_348_367_028_459_000));
        assert!(matches!(
            parse_frame(br#"{"type":"subscriptions","channels":[]}"#).unwrap(),
            CoinbaseEvent::Subscriptions
        ));
        assert_eq!(
            parse_frame(br#"{"type":"error","message":"Failed to subscribe","reason":"x"}"#).unwrap(),
            CoinbaseEvent::Error {
                message: b"Failed to subscribe"
            }
        );
    }

    #[test]
    fn level2_snapshot_and_changes() {
        let CoinbaseEvent::Snapshot { bids, asks, .. } = parse_frame(SNAPSHOT.as_bytes()).unwrap() else {
            panic!("snap")
        };
        let mut v = Vec::new();
        for_each_change(bids, Some(Side::Buy), 2, 8, |s, p, q| v.push((s, p, q))).unwrap();
        for_each_change(asks, Some(Side::Sell), 2, 8, |s, p, q| v.push((s, p, q))).unwrap();
        assert_eq!(
            v,
            vec![
                (Side::Buy, Price(1_010_110), Qty(45_054_140)),
                (Side::Sell, Price(1_010_255), Qty(57_753_524))
            ]
        );
        let CoinbaseEvent::L2Update { changes, time, .. } = parse_frame(L2UPDATE.as_bytes()).unwrap() else {
            panic!("l2update")
        };
        assert_eq!(time, UnixNanos(1_565_815_347_265_000_000));
        let mut c = Vec::new();
        for_each_change(changes, None, 2, 8, |s, p, q| c.push((s, p, q))).unwrap();
        assert_eq!(c, vec![(Side::Buy, Price(1_010_180), Qty(16_256_700))]);
    }

    #[test]
    fn malformed() {
        for bad in [
            "",
            r#"{"product_id":"X"}"#,
            r#"{"type":"match","product_id":"X","trade_id":1,"price":"1","size":"1","side":"up"}"#,
            r#"{"type":"snapshot","product_id":"X","bids":"no","asks":[]}"#,
            &MATCH[..40],
        ] {
            assert!(parse_frame(bad.as_bytes()).is_err(), "{bad:?}");
        }
        for bad in [
            r#"[["buy","1"]]"#,
            r#"[["up","1","1"]]"#,
            r#"[["buy","1.001","1"]]"#,
            r#"[[1,2,3]]"#,
        ] {
            assert!(
                for_each_change(bad.as_bytes(), None, 2, 2, |_, _, _| {}).is_err(),
                "{bad}"
            );
        }
        assert_eq!(parse_frame(br#"{"type":"status"}"#).unwrap(), CoinbaseEvent::Other);
    }

    #[test]
    fn in_order_fast_path_agrees_with_the_general_path() {
        let last = MATCH.replace(r#""type":"match""#, r#""type":"last_match""#);
        let mut frames = crate::capture::text_frames(include_str!("../../tests/fixtures/coinbase.cap"));
        frames.extend([MATCH, L2UPDATE, TICKER, &last].map(|f| f.as_bytes().to_vec()));
        let mut fast = 0;
        for frame in &frames {
            if let Some(event) = frame_in_order(frame) {
                fast += 1;
                assert_eq!(Ok(event), parse_any_layout(frame), "{}", String::from_utf8_lossy(frame));
            }
        }
        assert!(fast >= 3, "the documented layouts take the fast path ({fast})");
        let bad_side = MATCH.replace(r#""side":"sell""#, r#""side":"short""#);
        assert_eq!(frame_in_order(bad_side.as_bytes()), None);
        assert_eq!(parse_frame(bad_side.as_bytes()), Err(ParseError::Field("side")));
    }

    proptest! {
        /// A frame with bytes changed either leaves the fast path (and the general path
        /// decides) or reads exactly as the general path reads it, except where the
        /// fast path located the changes by their `]]` rather than matching brackets:
        /// then walking those changes fails, and the general path fails too.
        #[test]
        fn mutated_frames_read_the_same_on_both_paths(which in 0usize..2, edits in structural_edits()) {
            let frame = edited([MATCH, L2UPDATE][which].as_bytes(), &edits);
            paths_agree(&frame, frame_in_order(&frame), parse_any_layout(&frame), |e| match e {
                CoinbaseEvent::L2Update { changes, .. } => for_each_change(changes, None, 2, 8, |_, _, _| {}).is_ok(),
                _ => true,
            })?;
        }

        /// `changes` with bytes changed read exactly as a general JSON parser and the
        /// slice decimal parser read them, whichever of our two readers each change takes.
        #[test]
        fn mutated_changes_read_as_a_general_parser_reads_them(edits in level_edits(b's'), ps in 0u8..=9, qs in 0u8..=9) {
            let changes = br#"[["buy","10101.80000000","0.16256700"],["sell","7","12.5"],["buy","0.00001000","3.00000000"]]"#;
            let span = edited(changes, &edits);
            let mut ours = Vec::new();
            let ours = for_each_change(&span, None, ps, qs, |s, p, q| ours.push((s, p, q))).map(|()| ours);
            let reference = serde_reference(&span, |[s, p, q]: &[String; 3]| {
                let side = match s.as_str() {
                    "buy" => Side::Buy,
                    "sell" => Side::Sell,
                    _ => return None,
                };
                Some((side, Price::parse_str(p, ps).ok()?, Qty::parse_str(q, qs).ok()?))
            });
            prop_assert_eq!(ours.ok(), reference, "{}", String::from_utf8_lossy(&span));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(CoinbaseEvent::L2Update { changes, .. }) = parse_frame(&bytes) {
                let _ = for_each_change(changes, None, 2, 8, |_, _, _| {});
            }
        }

        #[test]
        fn truncations_are_rejected(cut in 0usize..400) {
            for msg in [HEARTBEAT, TICKER, SNAPSHOT, L2UPDATE, MATCH] {
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

    /// What `e` reads as when the message lacks `key`: that field absent, the rest
    /// the same (fields the parser does not read change nothing).
    fn cleared<'a>(e: CoinbaseEvent<'a>, key: &str) -> CoinbaseEvent<'a> {
        match e {
            CoinbaseEvent::Heartbeat {
                product,
                sequence,
                last_trade_id,
                time,
            } => CoinbaseEvent::Heartbeat {
                product,
                sequence: sequence.filter(|_| key != "sequence"),
                last_trade_id: last_trade_id.filter(|_| key != "last_trade_id"),
                time: if key == "time" { UnixNanos::UNKNOWN } else { time },
            },
            CoinbaseEvent::Ticker(mut t) => {
                match key {
                    "sequence" => t.sequence = None,
                    "best_bid" => t.best_bid = None,
                    "best_bid_size" => t.best_bid_size = None,
                    "best_ask" => t.best_ask = None,
                    "best_ask_size" => t.best_ask_size = None,
                    "time" => t.time = UnixNanos::UNKNOWN,
                    _ => {}
                }
                CoinbaseEvent::Ticker(t)
            }
            CoinbaseEvent::L2Update { product, changes, .. } if key == "time" => CoinbaseEvent::L2Update {
                product,
                time: UnixNanos::UNKNOWN,
                changes,
            },
            CoinbaseEvent::Match(mut m) => {
                match key {
                    "sequence" => m.sequence = 0,
                    "time" => m.time = UnixNanos::UNKNOWN,
                    "side" => m.maker_side = None,
                    _ => {}
                }
                CoinbaseEvent::Match(m)
            }
            e => e,
        }
    }

    /// Issue 14 point 3: every message type with each field removed in turn. An
    /// optional field's absence is tolerated (the message reads the same with that
    /// field absent); a required one's is a counted error naming the field.
    #[test]
    fn each_optional_field_may_be_absent() {
        let last_match = MATCH.replace(r#""type":"match""#, r#""type":"last_match""#);
        let cases: [(&str, &[&str]); 6] = [
            (HEARTBEAT, &["type", "product_id"]),
            (TICKER, &["type", "product_id"]),
            (SNAPSHOT, &["type", "product_id", "bids", "asks"]),
            (L2UPDATE, &["type", "product_id", "changes"]),
            (MATCH, &["type", "trade_id", "product_id", "size", "price"]),
            (&last_match, &["type", "trade_id", "product_id", "size", "price"]),
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
                if required.contains(&key.as_str()) {
                    let name = if key == "type" { "type" } else { key.as_str() };
                    assert_eq!(got, Err(ParseError::Field(name_of(name))), "{text}");
                } else {
                    assert_eq!(got, Ok(cleared(full, &key)), "without {key}: {text}");
                }
            }
        }
        // Older tickers: no sizes at all, still a ticker.
        let old = without(&without(TICKER, "best_bid_size"), "best_ask_size");
        let Ok(CoinbaseEvent::Ticker(t)) = parse_frame(old.as_bytes()) else {
            panic!("{old}")
        };
        assert_eq!((t.best_bid_size, t.best_ask_size), (None, None));
        assert_eq!(t.best_bid, Some(&b"1285.04"[..]));
    }

    fn name_of(key: &str) -> &'static str {
        [
            "type",
            "product_id",
            "bids",
            "asks",
            "changes",
            "trade_id",
            "size",
            "price",
        ]
        .into_iter()
        .find(|k| *k == key)
        .unwrap_or("?")
    }
}
