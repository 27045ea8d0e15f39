//! The load client's reading of a server message: only the fields it counts, borrowed
//! from the text, no allocation.
//!
//! The fan-out bench's client shares the 2 cores with the server it measures, so what
//! it spends per message is taken from the server. A general JSON parser builds (or at
//! least validates) every value of every message, the whole order book included; a
//! client that only counts needs `type`, `channel`, `seq`, `missed`, `engine_ts_us`
//! and, inside `data`, `recv_ts_us`, `trade_id` and a trades snapshot's trade ids.
//! This scanner walks the top-level object and `data`, reads those fields, and skips
//! every other value by its brackets and strings without looking inside. It accepts
//! keys in any order and fields it does not know; what serde_json refused for the
//! fields it reads (a missing `type`, a wrong type, an escaped string where a borrowed
//! one is read, a truncated message, trailing text) it refuses too (pinned against
//! serde_json by the tests here). It is laxer only inside skipped values (it does not
//! check that they are valid JSON): a bench client's trade-off, not a validator.

/// The fields of a server message the load client counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Fields<'a> {
    pub kind: &'a str,
    pub channel: Option<&'a str>,
    pub seq: Option<u64>,
    pub missed: Option<u64>,
    pub engine_ts_us: Option<i64>,
    /// `data.recv_ts_us`.
    pub recv_ts_us: Option<i64>,
    /// `data.trade_id`.
    pub trade_id: Option<u64>,
    /// The largest `trade_id` in `data.trades` (a trades snapshot).
    pub newest_trade: Option<u64>,
}

/// The message is not one the client can count (not JSON, or a field of the wrong
/// type).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unreadable;

type R<T> = Result<T, Unreadable>;

/// Most containers a skipped value may nest (serde_json's recursion limit).
const MAX_DEPTH: usize = 128;

/// Bytes that end a run of plain string content: the quote, a backslash, control
/// characters (not allowed raw in a JSON string).
const STRING_STOP: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = 0;
    while c < 0x20 {
        t[c] = true;
        c += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t
};

/// Bytes that matter while skipping a container: strings and brackets.
const CONTAINER_STOP: [bool; 256] = {
    let mut t = [false; 256];
    t[b'"' as usize] = true;
    t[b'{' as usize] = true;
    t[b'[' as usize] = true;
    t[b'}' as usize] = true;
    t[b']' as usize] = true;
    t
};

struct Scan<'a> {
    text: &'a str,
    s: &'a [u8],
    i: usize,
}

impl<'a> Scan<'a> {
    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.s.get(self.i) {
            self.i += 1;
        }
    }

    fn peek(&mut self) -> R<u8> {
        self.ws();
        self.s.get(self.i).copied().ok_or(Unreadable)
    }

    fn eat(&mut self, c: u8) -> R<()> {
        if self.peek()? == c {
            self.i += 1;
            Ok(())
        } else {
            Err(Unreadable)
        }
    }

    /// A string's raw text (between the quotes) and whether it holds escapes.
    fn raw_string(&mut self) -> R<(&'a str, bool)> {
        self.eat(b'"')?;
        let start = self.i;
        let mut escaped = false;
        loop {
            // Plain bytes in a tight loop; the rest one by one.
            let rest = self.s.get(self.i..).unwrap_or_default();
            self.i += rest
                .iter()
                .position(|c| STRING_STOP[usize::from(*c)])
                .unwrap_or(rest.len());
            match self.s.get(self.i) {
                None => return Err(Unreadable),
                Some(b'"') => break,
                Some(b'\\') => {
                    escaped = true;
                    self.i += 2;
                }
                Some(_) => return Err(Unreadable),
            }
        }
        let raw = self.text.get(start..self.i).ok_or(Unreadable)?;
        self.i += 1;
        Ok((raw, escaped))
    }

    /// A string read as borrowed (an escaped one cannot be: refused, as serde_json
    /// refuses it for a `&str` field).
    fn borrowed(&mut self) -> R<&'a str> {
        match self.raw_string()? {
            (s, false) => Ok(s),
            (_, true) => Err(Unreadable),
        }
    }

    /// `null`: consumed, true.
    fn null(&mut self) -> R<bool> {
        if self.peek()? != b'n' {
            return Ok(false);
        }
        if self.s.get(self.i..self.i + 4) == Some(b"null") {
            self.i += 4;
            Ok(true)
        } else {
            Err(Unreadable)
        }
    }

    fn opt_str(&mut self) -> R<Option<&'a str>> {
        if self.null()? {
            return Ok(None);
        }
        self.borrowed().map(Some)
    }

    /// An integer (a fraction or an exponent is refused, as for an integer field).
    fn int(&mut self, signed: bool) -> R<(bool, u64)> {
        self.ws();
        let negative = signed && self.s.get(self.i) == Some(&b'-');
        if negative {
            self.i += 1;
        }
        let start = self.i;
        let mut v: u64 = 0;
        while let Some(d @ b'0'..=b'9') = self.s.get(self.i) {
            v = v
                .checked_mul(10)
                .and_then(|v| v.checked_add(u64::from(d - b'0')))
                .ok_or(Unreadable)?;
            self.i += 1;
        }
        let digits = self.i - start;
        // JSON has no leading zeros.
        if digits == 0 || (digits > 1 && self.s.get(start) == Some(&b'0')) {
            return Err(Unreadable);
        }
        if let Some(b'.' | b'e' | b'E') = self.s.get(self.i) {
            return Err(Unreadable);
        }
        Ok((negative, v))
    }

    fn opt_u64(&mut self) -> R<Option<u64>> {
        if self.null()? {
            return Ok(None);
        }
        Ok(Some(self.int(false)?.1))
    }

    fn opt_i64(&mut self) -> R<Option<i64>> {
        if self.null()? {
            return Ok(None);
        }
        let (negative, v) = self.int(true)?;
        let v = if negative {
            0i64.checked_sub_unsigned(v)
        } else {
            i64::try_from(v).ok()
        };
        v.map(Some).ok_or(Unreadable)
    }

    /// Skips one value of any kind without validating what is inside a container.
    fn skip(&mut self) -> R<()> {
        match self.peek()? {
            b'"' => self.raw_string().map(|_| ()),
            b'{' | b'[' => {
                // One tight loop over the bytes: only quotes (and a string's escapes)
                // and brackets matter.
                let s = self.s;
                let mut i = self.i;
                let mut depth = 0usize;
                while let Some(&c) = s.get(i) {
                    i += 1;
                    if !CONTAINER_STOP[usize::from(c)] {
                        continue;
                    }
                    match c {
                        b'"' => loop {
                            while s.get(i).is_some_and(|c| !STRING_STOP[usize::from(*c)]) {
                                i += 1;
                            }
                            match s.get(i) {
                                Some(b'"') => {
                                    i += 1;
                                    break;
                                }
                                Some(b'\\') => i += 2,
                                _ => return Err(Unreadable),
                            }
                        },
                        b'{' | b'[' => {
                            depth += 1;
                            if depth > MAX_DEPTH {
                                return Err(Unreadable);
                            }
                        }
                        _ => {
                            depth -= 1;
                            if depth == 0 {
                                self.i = i;
                                return Ok(());
                            }
                        }
                    }
                }
                Err(Unreadable)
            }
            _ => {
                let start = self.i;
                while let Some(b'0'..=b'9' | b'a'..=b'z' | b'A'..=b'Z' | b'+' | b'-' | b'.') = self.s.get(self.i) {
                    self.i += 1;
                }
                if self.i == start {
                    Err(Unreadable)
                } else {
                    Ok(())
                }
            }
        }
    }

    /// The members of an object, `on_member` called with each key (its value next).
    fn object(&mut self, mut on_member: impl FnMut(&mut Self, &'a str, bool) -> R<()>) -> R<()> {
        self.eat(b'{')?;
        if self.peek()? == b'}' {
            self.i += 1;
            return Ok(());
        }
        loop {
            let (key, escaped) = self.raw_string()?;
            self.eat(b':')?;
            on_member(self, key, escaped)?;
            match self.peek()? {
                b',' => self.i += 1,
                b'}' => {
                    self.i += 1;
                    return Ok(());
                }
                _ => return Err(Unreadable),
            }
        }
    }

    /// `data.trades`: null, or an array of objects each with an integer `trade_id`.
    fn trades(&mut self, f: &mut Fields<'a>) -> R<()> {
        if self.null()? {
            return Ok(());
        }
        self.eat(b'[')?;
        if self.peek()? == b']' {
            self.i += 1;
            return Ok(());
        }
        loop {
            let mut id = None;
            self.object(|p, key, escaped| {
                if !escaped && key == "trade_id" {
                    id = Some(p.int(false)?.1);
                    Ok(())
                } else {
                    p.skip()
                }
            })?;
            let id = id.ok_or(Unreadable)?;
            f.newest_trade = Some(f.newest_trade.map_or(id, |n| n.max(id)));
            match self.peek()? {
                b',' => self.i += 1,
                b']' => {
                    self.i += 1;
                    return Ok(());
                }
                _ => return Err(Unreadable),
            }
        }
    }

    fn data(&mut self, f: &mut Fields<'a>) -> R<()> {
        if self.null()? {
            return Ok(());
        }
        self.object(|p, key, escaped| match (escaped, key) {
            (false, "recv_ts_us") => p.opt_i64().map(|v| f.recv_ts_us = v),
            (false, "trade_id") => p.opt_u64().map(|v| f.trade_id = v),
            (false, "trades") => p.trades(f),
            _ => p.skip(),
        })
    }
}

/// Reads the counted fields of one server message.
pub fn scan(text: &str) -> Result<Fields<'_>, Unreadable> {
    let mut p = Scan {
        text,
        s: text.as_bytes(),
        i: 0,
    };
    let mut f = Fields::default();
    let mut kind = None;
    p.object(|p, key, escaped| match (escaped, key) {
        (false, "type") => p.borrowed().map(|k| kind = Some(k)),
        (false, "channel") => p.opt_str().map(|v| f.channel = v),
        (false, "seq") => p.opt_u64().map(|v| f.seq = v),
        (false, "missed") => p.opt_u64().map(|v| f.missed = v),
        (false, "engine_ts_us") => p.opt_i64().map(|v| f.engine_ts_us = v),
        (false, "data") => p.data(&mut f),
        _ => p.skip(),
    })?;
    p.ws();
    if p.i != p.s.len() {
        return Err(Unreadable);
    }
    f.kind = kind.ok_or(Unreadable)?;
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde::Deserialize;
    use serde_json::json;

    /// The client's previous reading of a message (serde_json, borrowed): the
    /// reference the scanner must agree with.
    #[derive(Deserialize)]
    struct Frame<'a> {
        #[serde(rename = "type")]
        kind: &'a str,
        #[serde(default)]
        channel: Option<&'a str>,
        #[serde(default)]
        seq: Option<u64>,
        #[serde(default)]
        missed: Option<u64>,
        #[serde(default)]
        engine_ts_us: Option<i64>,
        #[serde(default)]
        data: Option<FrameData>,
    }

    #[derive(Deserialize, Default)]
    struct FrameData {
        #[serde(default)]
        recv_ts_us: Option<i64>,
        #[serde(default)]
        trade_id: Option<u64>,
        #[serde(default)]
        trades: Option<Vec<TradeRef>>,
    }

    #[derive(Deserialize)]
    struct TradeRef {
        trade_id: u64,
    }

    fn reference(text: &str) -> Option<Fields<'_>> {
        let f = serde_json::from_str::<Frame<'_>>(text).ok()?;
        let d = f.data.unwrap_or_default();
        Some(Fields {
            kind: f.kind,
            channel: f.channel,
            seq: f.seq,
            missed: f.missed,
            engine_ts_us: f.engine_ts_us,
            recv_ts_us: d.recv_ts_us,
            trade_id: d.trade_id,
            newest_trade: d.trades.iter().flatten().map(|t| t.trade_id).max(),
        })
    }

    /// A value for a field: mostly its right type, sometimes a wrong one.
    fn value() -> impl Strategy<Value = serde_json::Value> {
        prop_oneof![
            12 => (0u64..u64::MAX).prop_map(|v| json!(v)),
            2 => (i64::MIN..0).prop_map(|v| json!(v)),
            3 => Just(json!(null)),
            1 => Just(json!(1.5)),
            1 => "[a-z.\\\\\"é]{0,8}".prop_map(|s| json!(s)),
            1 => Just(json!({"x": [1, {"y": "}"}]})),
            1 => Just(json!([[["1.0", "2"]], {}])),
            1 => Just(json!(true)),
        ]
    }

    fn message() -> impl Strategy<Value = String> {
        let keys = [
            "type",
            "channel",
            "seq",
            "missed",
            "engine_ts_us",
            "data",
            "id",
            "ts_us",
        ];
        let data_keys = ["recv_ts_us", "trade_id", "trades", "bids", "symbol"];
        (
            proptest::sample::subsequence(keys.to_vec(), 0..=keys.len()),
            proptest::sample::subsequence(data_keys.to_vec(), 0..=data_keys.len()),
            proptest::collection::vec(value(), 16),
            prop_oneof![
                Just("update"),
                Just("snapshot"),
                Just("heartbeat"),
                Just("sub\\u0073cribed")
            ],
            proptest::collection::vec(proptest::option::of(0u64..1_000_000), 0..4),
            0u8..4,
        )
            .prop_map(|(keys, data_keys, values, kind, trades, variant)| {
                let mut vals = values.into_iter().cycle();
                let mut data = serde_json::Map::new();
                for k in data_keys {
                    let v = if k == "trades" && variant != 0 {
                        json!(trades
                            .iter()
                            .map(|t| t.map_or(json!({"price": "1"}), |id| json!({"price": "1", "trade_id": id})))
                            .collect::<Vec<_>>())
                    } else {
                        vals.next().unwrap_or_default()
                    };
                    data.insert(k.to_owned(), v);
                }
                let mut parts = Vec::new();
                for k in keys {
                    let v = match k {
                        "type" if variant != 3 => format!("\"{kind}\""),
                        "data" if variant != 2 => serde_json::Value::Object(data.clone()).to_string(),
                        "channel" if variant == 1 => "\"trades.X\"".to_owned(),
                        _ => vals.next().unwrap_or_default().to_string(),
                    };
                    parts.push(format!("\"{k}\" : {v}"));
                }
                format!(" {{{}}}\n", parts.join(" ,"))
            })
    }

    proptest! {
        /// Whatever the keys, their order, their values' types and the fields around
        /// them, the scanner reads what serde_json reads and refuses what it refuses.
        #[test]
        fn the_scanner_agrees_with_serde_json(m in message()) {
            prop_assert_eq!(scan(&m).ok(), reference(&m), "{}", m);
        }

        /// Every truncation of a message is refused, as every one is by serde_json.
        #[test]
        fn a_truncated_message_is_refused(m in message(), cut in 0usize..1_000) {
            let end = m.trim_end().len().saturating_sub(1 + cut % m.len().max(1));
            if let Some(part) = m.get(..end) {
                prop_assert_eq!(scan(part).ok(), None, "{}", part);
                prop_assert!(reference(part).is_none());
            }
        }

        /// Text that is not an object (or not JSON) is refused.
        #[test]
        fn garbage_is_refused(g in "[^\"]{0,16}") {
            prop_assert_eq!(scan(&g).ok(), reference(&g), "{}", g);
        }
    }

    /// The server's own messages, read whole.
    #[test]
    fn reads_the_servers_messages() {
        let m = r#"{"type":"update","channel":"trades.BTCUSDT","seq":7,"missed":3,"engine_ts_us":1733500000123456,"data":{"symbol":"BTCUSDT","trade_id":42,"price":"1.5","recv_ts_us":-5}}"#;
        let f = scan(m).unwrap();
        assert_eq!(
            f,
            Fields {
                kind: "update",
                channel: Some("trades.BTCUSDT"),
                seq: Some(7),
                missed: Some(3),
                engine_ts_us: Some(1_733_500_000_123_456),
                recv_ts_us: Some(-5),
                trade_id: Some(42),
                newest_trade: None,
            }
        );
        let s = r#"{"type":"snapshot","channel":"trades.X","seq":1,"engine_ts_us":0,"data":{"symbol":"X","trades":[{"trade_id":9,"p":"]"},{"trade_id":12},{"trade_id":10}]}}"#;
        assert_eq!(scan(s).unwrap().newest_trade, Some(12));
        assert_eq!(scan(r#"{"type":"heartbeat","ts_us":5}"#).unwrap().kind, "heartbeat");
        assert_eq!(scan(r#"{"type":"x","seq":01}"#), Err(Unreadable));
        assert_eq!(scan(r#"{"type":"x"} {}"#), Err(Unreadable));
    }
}
