//! A schema-ordered JSON reader: the fast path for frames laid out exactly as a venue
//! sends them.
//!
//! Venues serialize each message type with the same keys in the same order and no
//! whitespace. A general scanner still has to dispatch on every byte and every key;
//! this reader instead checks the expected bytes (`{"e":"trade","E":`) with a slice
//! compare and reads each value with the one routine its type needs. It validates
//! everything it reads: a frame it accepts is valid JSON with exactly the expected
//! shape, except for arrays of price levels, which it only locates (by their closing
//! `]]`, see [`Expect::levels`]) and leaves to the walk over them, which validates
//! every byte before anything is applied. Anything else (another key order,
//! whitespace, an escape, a fraction where an integer belongs) returns `None`, and the
//! caller falls back to the general scanner in [`crate::json_scan`], which then
//! reports the error precisely. Both paths produce identical results for a frame both
//! accept, or levels that fail their walk (tested per venue).

use stocksblitz_engine::fixed::{digits_u64, pow10};

use crate::json_scan::{double_close, string_stop};

/// Eight places as `(the first scale places, the rest)`; `None` past eight places.
/// Constant divisors, so no division instruction.
#[inline]
fn split_places(frac: u64, scale: u8) -> Option<(u64, u64)> {
    Some(match scale {
        8 => (frac, 0),
        7 => (frac / 10, frac % 10),
        6 => (frac / 100, frac % 100),
        5 => (frac / 1_000, frac % 1_000),
        4 => (frac / 10_000, frac % 10_000),
        3 => (frac / 100_000, frac % 100_000),
        2 => (frac / 1_000_000, frac % 1_000_000),
        1 => (frac / 10_000_000, frac % 10_000_000),
        0 => (0, frac),
        _ => return None,
    })
}

/// Reads a byte slice front to back against an expected layout.
pub struct Expect<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Expect<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    /// Starts at byte `pos` of `buf`.
    pub fn at(buf: &'a [u8], pos: usize) -> Self {
        Self { buf, pos }
    }

    /// Bytes consumed so far (from the start of the buffer).
    pub fn position(&self) -> usize {
        self.pos
    }

    /// The exact bytes `lit` next.
    #[inline]
    pub fn lit(&mut self, lit: &[u8]) -> Option<()> {
        let end = self.pos.checked_add(lit.len())?;
        (self.buf.get(self.pos..end)? == lit).then(|| self.pos = end)
    }

    /// The contents of a string whose opening quote was the last byte matched; consumes
    /// the closing quote. Strings with escapes are left to the general path.
    #[inline]
    pub fn str(&mut self) -> Option<&'a [u8]> {
        let rest = self.buf.get(self.pos..)?;
        let k = string_stop(rest)?;
        (rest.get(k)? == &b'"').then_some(())?;
        self.pos += k + 1;
        rest.get(..k)
    }

    /// The contents of a string holding a decimal with exactly eight places
    /// (`"64990.01000000"`: how Binance and Coinbase send prices and sizes), read in
    /// place at `scale` places; consumes the closing quote. The number's own digits
    /// find the string's end, so the string is read once. `None` for anything else,
    /// including a value that does not fit the scale: the caller then reads the
    /// string and parses it, which reports why. Agrees with `parse_decimal`.
    #[inline]
    pub fn decimal8(&mut self, scale: u8) -> Option<i64> {
        let start = self.pos;
        let mut int = 0u64;
        let mut at = start;
        while let Some(d) = self.buf.get(at).map(|b| b.wrapping_sub(b'0')).filter(|&d| d <= 9) {
            int = int * 10 + u64::from(d);
            at += 1;
            if at - start > 10 {
                return None;
            }
        }
        if at == start || self.buf.get(at) != Some(&b'.') {
            return None;
        }
        let frac = digits_u64(self.buf.get(at + 1..at + 9)?)?;
        (self.buf.get(at + 9)? == &b'"').then_some(())?;
        // At most 10 integer digits and 8 places: no overflow.
        let (kept, dropped) = split_places(frac, scale)?;
        if dropped != 0 {
            return None;
        }
        self.pos = at + 10;
        Some((int * pow10(scale)? as u64 + kept) as i64)
    }

    /// The tail of a level laid out as venues send it, `<price>","<qty>"]` after the
    /// price's opening quote, both eight-place decimals read in place (see
    /// [`Expect::decimal8`]).
    #[inline]
    pub fn price_qty(&mut self, price_scale: u8, qty_scale: u8) -> Option<(i64, i64)> {
        let price = self.decimal8(price_scale)?;
        self.lit(b",\"")?;
        let qty = self.decimal8(qty_scale)?;
        self.lit(b"]")?;
        Some((price, qty))
    }

    /// A JSON integer (no sign, no fraction, no leading zero) that fits a `u64`. The
    /// byte after it is left for the next `lit`, which rejects `.`, `e` and the like.
    #[inline]
    pub fn uint(&mut self) -> Option<u64> {
        let rest = self.buf.get(self.pos..)?;
        let n = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        let digits = rest.get(..n)?;
        if n == 0 || n > 1 && digits.first() == Some(&b'0') {
            return None;
        }
        // Up to 18 digits cannot overflow: eight at a time; longer ones checked.
        let v = match digits_u64(digits) {
            Some(v) => v,
            None => digits
                .iter()
                .try_fold(0u64, |acc, &b| acc.checked_mul(10)?.checked_add(u64::from(b - b'0')))?,
        };
        self.pos += n;
        Some(v)
    }

    /// `key` (the literal up to and including the value's opening quote), then a string.
    #[inline]
    pub fn key_str(&mut self, key: &[u8]) -> Option<&'a [u8]> {
        self.lit(key)?;
        self.str()
    }

    /// `key` then an unsigned integer.
    #[inline]
    pub fn key_uint(&mut self, key: &[u8]) -> Option<u64> {
        self.lit(key)?;
        self.uint()
    }

    /// A non-negative integer that fits an `i64` (venue timestamps).
    #[inline]
    pub fn int(&mut self) -> Option<i64> {
        self.uint().and_then(|v| i64::try_from(v).ok())
    }

    #[inline]
    pub fn bool(&mut self) -> Option<bool> {
        if self.lit(b"true").is_some() {
            Some(true)
        } else {
            self.lit(b"false").map(|()| false)
        }
    }

    /// An array of level arrays (`[["1.5","2"],...]`, or `[]`) located without reading
    /// its items: the span runs from the `[` at the cursor through the first `]]`.
    /// Whoever walks the levels validates them in full, and that walk fails whenever
    /// this span is not the bracket-matched one: a span that walks cleanly is a whole
    /// JSON array, so bracket matching ends where it ends; and a whole array of levels
    /// (strings holding sides and decimals) holds `]]` only at its end.
    #[inline]
    pub fn levels(&mut self) -> Option<&'a [u8]> {
        let start = self.pos;
        let rest = self.buf.get(start..)?;
        let len = if rest.starts_with(b"[]") {
            2
        } else if rest.starts_with(b"[[") {
            double_close(rest)? + 2
        } else {
            return None;
        };
        self.pos += len;
        rest.get(..len)
    }

    /// The whole input was consumed.
    #[inline]
    pub fn end(&self) -> Option<()> {
        (self.pos == self.buf.len()).then_some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use stocksblitz_engine::fixed::parse_decimal;

    #[test]
    fn reads_an_expected_layout() {
        let mut e = Expect::new(br#"{"a":"x1","n":1234,"b":true,"c":false,"l":[["1","2"],["3","4"]]}"#);
        e.lit(br#"{"a":""#).unwrap();
        assert_eq!(e.str(), Some(&b"x1"[..]));
        e.lit(br#","n":"#).unwrap();
        assert_eq!(e.uint(), Some(1234));
        e.lit(br#","b":"#).unwrap();
        assert_eq!(e.bool(), Some(true));
        e.lit(br#","c":"#).unwrap();
        assert_eq!(e.bool(), Some(false));
        e.lit(br#","l":"#).unwrap();
        assert_eq!(e.levels(), Some(&br#"[["1","2"],["3","4"]]"#[..]));
        e.lit(b"}").unwrap();
        assert_eq!(e.end(), Some(()));
    }

    #[test]
    fn refuses_anything_off_layout() {
        let int = |s: &[u8]| Expect::new(s).uint();
        assert_eq!(int(b"0"), Some(0));
        assert_eq!(int(b"01"), None, "leading zero");
        assert_eq!(int(b"-1"), None);
        assert_eq!(int(b""), None);
        assert_eq!(int(b"18446744073709551616"), None, "overflow");
        assert_eq!(Expect::new(b"9223372036854775808").int(), None);
        fn s(s: &[u8]) -> Option<&[u8]> {
            Expect::new(s).str()
        }
        assert_eq!(s(br#"ab"#), None, "unterminated");
        assert_eq!(s(br#"a\"b""#), None, "escape");
        assert_eq!(s(b"a\x01b\""), None, "control byte");
        fn levels(s: &[u8]) -> Option<&[u8]> {
            Expect::new(s).levels()
        }
        for bad in [&br#"[["1","2"]"#[..], br#"[ ["1"]]"#, br#"{}"#, br#"["#] {
            assert_eq!(levels(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
        assert_eq!(levels(b"[],"), Some(&b"[]"[..]));
        // Located, not validated: the walk over the levels rejects these.
        assert_eq!(levels(br#"[["1",2]],"#), Some(&br#"[["1",2]]"#[..]));
        assert_eq!(levels(br#"[["]]","1"]]"#), Some(&br#"[["]]"#[..]));
    }

    #[test]
    fn eight_place_decimals_in_place() {
        let d = |s: &[u8], scale| {
            let mut x = Expect::new(s);
            x.decimal8(scale).map(|v| (v, x.position()))
        };
        assert_eq!(d(br#"64990.01000000","#, 8), Some((6_499_001_000_000, 15)));
        assert_eq!(d(br#"64990.01000000","#, 2), Some((6_499_001, 15)));
        assert_eq!(d(br#"0.00001000"]"#, 5), Some((1, 11)));
        // Anything else is left to the general path.
        assert_eq!(d(br#"64990.01000000","#, 1), None, "too precise");
        assert_eq!(d(br#"1.0000000""#, 8), None, "seven places");
        assert_eq!(d(br#"1.000000000""#, 8), None, "nine places");
        assert_eq!(d(br#"-1.00000000""#, 8), None, "sign");
        assert_eq!(d(br#"1.00000000"#, 8), None, "unterminated");
        assert_eq!(d(br#"12345678901.00000000""#, 8), None, "long integer part");
        assert_eq!(d(br#"1.00000000""#, 9), None, "scale past eight");
    }

    proptest! {
        /// Whenever it reads a value, `parse_decimal` of the string reads the same.
        #[test]
        fn decimal8_agrees_with_parse_decimal(
            bytes in proptest::collection::vec(prop_oneof![
                12 => b'0'..=b'9', 2 => Just(b'.'), 2 => Just(b'"'), 1 => any::<u8>()], 0..24),
            scale in 0u8..=10,
        ) {
            let mut x = Expect::new(&bytes);
            if let Some(v) = x.decimal8(scale) {
                let end = x.position();
                prop_assert_eq!(bytes.get(end - 1), Some(&b'"'));
                prop_assert_eq!(parse_decimal(&bytes[..end - 1], scale), Ok(v));
            }
        }

        /// Every eight-place decimal the scale can hold is read in place, as
        /// `parse_decimal` reads it.
        #[test]
        fn decimal8_reads_every_eight_place_decimal(int in 0u64..10_000_000_000, frac in 0u64..100_000_000, scale in 0u8..=8) {
            let text = format!("{int}.{frac:08}");
            let framed = format!("{text}\"]");
            let mut x = Expect::new(framed.as_bytes());
            prop_assert_eq!(x.decimal8(scale), parse_decimal(text.as_bytes(), scale).ok());
        }

        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut e = Expect::new(&bytes);
            let _ = e.uint();
            let _ = Expect::new(&bytes).str();
            let _ = Expect::new(&bytes).levels();
            let _ = Expect::new(&bytes).decimal8(8);
            let _ = Expect::new(&bytes).bool();
        }

        /// Integers read the way `str::parse` reads canonical JSON integers.
        #[test]
        fn integers_match_std(v in any::<u64>()) {
            prop_assert_eq!(Expect::new(v.to_string().as_bytes()).uint(), Some(v));
        }
    }
}
