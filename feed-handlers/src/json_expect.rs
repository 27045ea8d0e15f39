//! A schema-ordered JSON reader: the fast path for frames laid out exactly as a venue
//! sends them.
//!
//! Venues serialize each message type with the same keys in the same order and no
//! whitespace. A general scanner still has to dispatch on every byte and every key;
//! this reader instead checks the expected bytes (`{"e":"trade","E":`) with a slice
//! compare and reads each value with the one routine its type needs. It validates
//! everything it reads: a frame it accepts is valid JSON with exactly the expected
//! shape. Anything else (another key order, whitespace, an escape, a fraction where an
//! integer belongs) returns `None`, and the caller falls back to the general scanner
//! in [`crate::json_scan`], which then reports the error precisely. Both paths produce
//! identical results for a frame both accept (tested per venue).

use stocksblitz_engine::fixed::digits_u64;

use crate::json_scan::string_stop;

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

    /// `["a","b",...]` with exactly `N` strings and no whitespace.
    #[inline]
    pub fn strings<const N: usize>(&mut self) -> Option<[&'a [u8]; N]> {
        let mut items: [&'a [u8]; N] = [&[]; N];
        for (k, slot) in items.iter_mut().enumerate() {
            self.lit(if k == 0 { b"[\"" } else { b",\"" })?;
            *slot = self.str()?;
        }
        self.lit(b"]")?;
        Some(items)
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

    /// An array of arrays of strings (`[["1.5","2"],...]`, venue levels), bracket- and
    /// string-matched with no whitespace; returns its span, brackets included. The
    /// items' contents are validated by whoever walks them.
    pub fn string_arrays(&mut self) -> Option<&'a [u8]> {
        let start = self.pos;
        self.lit(b"[")?;
        if self.lit(b"]").is_some() {
            return self.buf.get(start..self.pos);
        }
        loop {
            self.lit(b"[\"")?;
            self.str()?;
            while self.lit(b",\"").is_some() {
                self.str()?;
            }
            self.lit(b"]")?;
            if self.lit(b",").is_none() {
                break;
            }
        }
        self.lit(b"]")?;
        self.buf.get(start..self.pos)
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
        assert_eq!(e.string_arrays(), Some(&br#"[["1","2"],["3","4"]]"#[..]));
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
        fn arrays(s: &[u8]) -> Option<&[u8]> {
            Expect::new(s).string_arrays()
        }
        for bad in [
            &br#"[["1","2"]"#[..],
            br#"[["1",2]]"#,
            br#"[["1"],]"#,
            br#"[ ["1"]]"#,
            br#"[[]]"#,
        ] {
            assert_eq!(arrays(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
        assert_eq!(arrays(b"[]"), Some(&b"[]"[..]));
    }

    proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut e = Expect::new(&bytes);
            let _ = e.uint();
            let _ = Expect::new(&bytes).str();
            let _ = Expect::new(&bytes).string_arrays();
            let _ = Expect::new(&bytes).bool();
        }

        /// Integers read the way `str::parse` reads canonical JSON integers.
        #[test]
        fn integers_match_std(v in any::<u64>()) {
            prop_assert_eq!(Expect::new(v.to_string().as_bytes()).uint(), Some(v));
        }
    }
}
