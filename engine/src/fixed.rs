//! Fixed-point decimals: the only number representation on the hot path.
//!
//! Prices and quantities arrive from venues as decimal strings ("27123.45000000") or
//! scaled integers (Kite sends paise). Floats would make "is this on the tick grid?"
//! and "did this fill exceed the order?" inexact, so every value is an `i64` mantissa
//! with a per-instrument scale (number of decimal places) kept in the instrument
//! registry, not in the value: the value stays 8 bytes and `Copy`.
//!
//! Parsing is exact: digits beyond the scale are accepted only when they are zeros,
//! otherwise the value is rejected (`TooPrecise`) rather than silently rounded.

use core::fmt;

/// Largest supported scale: 10^18 still fits in an `i64`.
pub const MAX_SCALE: u8 = 18;

const POW10: [i64; 19] = [
    1,
    10,
    100,
    1_000,
    10_000,
    100_000,
    1_000_000,
    10_000_000,
    100_000_000,
    1_000_000_000,
    10_000_000_000,
    100_000_000_000,
    1_000_000_000_000,
    10_000_000_000_000,
    100_000_000_000_000,
    1_000_000_000_000_000,
    10_000_000_000_000_000,
    100_000_000_000_000_000,
    1_000_000_000_000_000_000,
];

/// 10^scale, or `None` when the scale is above [`MAX_SCALE`].
#[inline]
pub fn pow10(scale: u8) -> Option<i64> {
    POW10.get(scale as usize).copied()
}

/// Why a decimal string was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FixedError {
    #[error("empty number: expected digits such as \"12.50\"")]
    Empty,
    #[error("invalid character at byte {0}: expected digits, one '.', and an optional leading sign")]
    InvalidChar(usize),
    #[error("more than {scale} decimal places: the instrument's precision is {scale}")]
    TooPrecise { scale: u8 },
    #[error("number out of range for a 64-bit fixed-point value")]
    Overflow,
    #[error("scale {0} exceeds the maximum of 18 decimal places")]
    BadScale(u8),
}

/// The common case, fast: unsigned `int[.frac]` whose significant digits cannot
/// overflow (`int digits + scale <= 18`). `None` sends anything unusual (signs, bad
/// characters, no digits, long numbers) to the general path, which reports precisely.
#[inline]
fn parse_plain(s: &[u8], scale: u8) -> Option<Result<i64, FixedError>> {
    // The integer part in the same pass that finds the dot.
    let mut int_value = 0u64;
    let mut int_len = 0usize;
    while let Some(&b) = s.get(int_len) {
        let d = b.wrapping_sub(b'0');
        if d > 9 {
            break;
        }
        if int_len == 18 {
            return None;
        }
        int_value = int_value * 10 + u64::from(d);
        int_len += 1;
    }
    let frac = match s.get(int_len) {
        None => &[][..],
        Some(b'.') => s.get(int_len + 1..)?,
        Some(_) => return None,
    };
    if int_len == 0 && frac.is_empty() || int_len + scale as usize > 18 {
        return None;
    }
    let keep = frac.len().min(scale as usize);
    let frac_value = digits_u64(frac.get(..keep)?)?;
    for &b in frac.get(keep..)? {
        match b {
            b'0' => {}
            b'1'..=b'9' => return Some(Err(FixedError::TooPrecise { scale })),
            _ => return None,
        }
    }
    // int_len + scale <= 18 digits: no overflow anywhere below.
    let acc = int_value * *POW10.get(keep)? as u64 + frac_value;
    let unit = *POW10.get(scale as usize - keep)?;
    Some(Ok((acc * unit as u64) as i64))
}

/// The value of a run of at most 18 ASCII digits (empty is 0), `None` on any other
/// byte. Eight digits at a time (SWAR): venue decimals carry 8 fractional digits.
#[inline]
pub fn digits_u64(s: &[u8]) -> Option<u64> {
    if s.len() > 18 {
        return None;
    }
    let mut acc = 0u64;
    let mut chunks = s.chunks_exact(8);
    for chunk in &mut chunks {
        let word = u64::from_le_bytes(chunk.try_into().ok()?);
        acc = acc * 100_000_000 + eight_digits(word)?;
    }
    for &b in chunks.remainder() {
        let d = b.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        acc = acc * 10 + u64::from(d);
    }
    Some(acc)
}

/// Eight ASCII digits loaded little-endian (first digit in the low byte) to their
/// value, or `None` when any byte is not a digit.
#[inline]
fn eight_digits(word: u64) -> Option<u64> {
    const ZEROS: u64 = 0x3030_3030_3030_3030;
    // Every byte in 0x30..=0x39: high nibble 3, and adding 6 does not carry into it.
    if word & 0xF0F0_F0F0_F0F0_F0F0 != ZEROS
        || (word.wrapping_add(0x0606_0606_0606_0606) & 0xF0F0_F0F0_F0F0_F0F0) != ZEROS
    {
        return None;
    }
    let v = word - ZEROS;
    // Pairs, then quads, then the whole: each step multiplies the earlier (more
    // significant, lower-addressed) group by its weight and adds the later one.
    let v = (v * 10 + (v >> 8)) & 0x00FF_00FF_00FF_00FF;
    let v = (v * 100 + (v >> 16)) & 0x0000_FFFF_0000_FFFF;
    Some((v * 10_000 + (v >> 32)) & 0xFFFF_FFFF)
}

/// Parses an ASCII decimal (`[+-]digits[.digits]`, at least one digit) into a mantissa
/// at `scale` decimal places. No allocation, no floats.
pub fn parse_decimal(s: &[u8], scale: u8) -> Result<i64, FixedError> {
    if let Some(r) = parse_plain(s, scale) {
        return r;
    }
    let unit = pow10(scale).ok_or(FixedError::BadScale(scale))?;
    let (negative, start) = match s.first() {
        None => return Err(FixedError::Empty),
        Some(b'-') => (true, 1),
        Some(b'+') => (false, 1),
        Some(_) => (false, 0),
    };
    // Magnitude limit: |i64::MIN| for negatives, i64::MAX for positives.
    let limit: u64 = if negative { 1u64 << 63 } else { i64::MAX as u64 };
    let mut int_part: u64 = 0;
    let mut frac_part: u64 = 0;
    let mut frac_digits: u8 = 0;
    let mut digits = 0usize;
    let mut seen_dot = false;
    for (i, &b) in s.iter().enumerate().skip(start) {
        match b {
            b'0'..=b'9' => {
                digits += 1;
                let d = u64::from(b - b'0');
                if !seen_dot {
                    int_part = int_part
                        .checked_mul(10)
                        .and_then(|v| v.checked_add(d))
                        .ok_or(FixedError::Overflow)?;
                } else if frac_digits < scale {
                    frac_part = frac_part * 10 + d;
                    frac_digits += 1;
                } else if d != 0 {
                    return Err(FixedError::TooPrecise { scale });
                }
            }
            b'.' if !seen_dot => seen_dot = true,
            _ => return Err(FixedError::InvalidChar(i)),
        }
    }
    if digits == 0 {
        return Err(if s.len() > start {
            FixedError::InvalidChar(start)
        } else {
            FixedError::Empty
        });
    }
    // Pad the fraction to `scale` digits: "1.5" at scale 2 is 150.
    let frac_scaled = frac_part * pow10(scale - frac_digits).unwrap_or(1) as u64;
    let magnitude = int_part
        .checked_mul(unit as u64)
        .and_then(|v| v.checked_add(frac_scaled))
        .filter(|&v| v <= limit)
        .ok_or(FixedError::Overflow)?;
    Ok(if negative {
        // magnitude <= 2^63 here, so wrapping_neg of the u64 reinterpreted is exact.
        (magnitude as i64).wrapping_neg()
    } else {
        magnitude as i64
    })
}

/// Converts a mantissa from one scale to another, exactly. Fails when precision would be
/// lost (scaling down over non-zero digits) or the result overflows.
pub fn rescale(mantissa: i64, from: u8, to: u8) -> Result<i64, FixedError> {
    if from == to {
        return Ok(mantissa);
    }
    if to > from {
        let f = pow10(to - from).ok_or(FixedError::BadScale(to))?;
        mantissa.checked_mul(f).ok_or(FixedError::Overflow)
    } else {
        let f = pow10(from - to).ok_or(FixedError::BadScale(from))?;
        if mantissa % f != 0 {
            return Err(FixedError::TooPrecise { scale: to });
        }
        Ok(mantissa / f)
    }
}

/// A mantissa paired with its scale for display: `Decimal::new(12345, 2)` prints `123.45`.
/// Formatting writes straight to the formatter, no allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decimal {
    pub mantissa: i64,
    pub scale: u8,
}

impl Decimal {
    pub const fn new(mantissa: i64, scale: u8) -> Self {
        Self { mantissa, scale }
    }

    /// Lossy conversion for the API/persistence edge only.
    pub fn to_f64(self) -> f64 {
        self.mantissa as f64 / pow10(self.scale).unwrap_or(1) as f64
    }
}

impl fmt::Display for Decimal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let negative = self.mantissa < 0;
        let magnitude = self.mantissa.unsigned_abs();
        // u64 has at most 20 digits; scale at most 18; plus sign and dot.
        let mut buf = [0u8; 42];
        let mut pos = buf.len();
        let mut rest = magnitude;
        let scale = self.scale.min(MAX_SCALE) as usize;
        for _ in 0..scale {
            pos -= 1;
            buf[pos] = b'0' + (rest % 10) as u8;
            rest /= 10;
        }
        if scale > 0 {
            pos -= 1;
            buf[pos] = b'.';
        }
        loop {
            pos -= 1;
            buf[pos] = b'0' + (rest % 10) as u8;
            rest /= 10;
            if rest == 0 {
                break;
            }
        }
        if negative {
            pos -= 1;
            buf[pos] = b'-';
        }
        // Only ASCII digits, '.', and '-' were written.
        let text = core::str::from_utf8(&buf[pos..]).map_err(|_| fmt::Error)?;
        f.pad(text)
    }
}

macro_rules! fixed_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, serde::Serialize, serde::Deserialize)]
        #[repr(transparent)]
        pub struct $name(pub i64);

        impl $name {
            pub const ZERO: Self = Self(0);

            /// Parses a decimal string at the instrument's scale, exactly.
            #[inline]
            pub fn parse(s: &[u8], scale: u8) -> Result<Self, FixedError> {
                parse_decimal(s, scale).map(Self)
            }

            /// Parses a decimal `&str` at the instrument's scale, exactly.
            #[inline]
            pub fn parse_str(s: &str, scale: u8) -> Result<Self, FixedError> {
                Self::parse(s.as_bytes(), scale)
            }

            /// The value for display at `scale` decimal places.
            #[inline]
            pub const fn decimal(self, scale: u8) -> Decimal {
                Decimal::new(self.0, scale)
            }

            #[inline]
            pub const fn is_zero(self) -> bool {
                self.0 == 0
            }
        }
    };
}

fixed_newtype!(
    /// A price mantissa at the instrument's `price_decimals` scale.
    Price
);
fixed_newtype!(
    /// A quantity mantissa at the instrument's `qty_decimals` scale. Zero means "none"
    /// (an empty book side, a deleted level).
    Qty
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_exact_values() {
        assert_eq!(parse_decimal(b"123.45", 2), Ok(12345));
        assert_eq!(parse_decimal(b"123.4", 2), Ok(12340));
        assert_eq!(parse_decimal(b"123", 2), Ok(12300));
        assert_eq!(parse_decimal(b"0.00000001", 8), Ok(1));
        assert_eq!(parse_decimal(b"27123.45000000", 2), Ok(2712345));
        assert_eq!(parse_decimal(b"-1.5", 1), Ok(-15));
        assert_eq!(parse_decimal(b"+1.5", 1), Ok(15));
        assert_eq!(parse_decimal(b".5", 1), Ok(5));
        assert_eq!(parse_decimal(b"5.", 1), Ok(50));
        assert_eq!(parse_decimal(b"0", 0), Ok(0));
    }

    #[test]
    fn rejects_bad_input() {
        assert_eq!(parse_decimal(b"", 2), Err(FixedError::Empty));
        assert_eq!(parse_decimal(b"-", 2), Err(FixedError::Empty));
        assert_eq!(parse_decimal(b".", 2), Err(FixedError::InvalidChar(0)));
        assert_eq!(parse_decimal(b"1.2.3", 2), Err(FixedError::InvalidChar(3)));
        assert_eq!(parse_decimal(b"1e5", 2), Err(FixedError::InvalidChar(1)));
        assert_eq!(parse_decimal(b" 1", 2), Err(FixedError::InvalidChar(0)));
        assert_eq!(parse_decimal(b"1.234", 2), Err(FixedError::TooPrecise { scale: 2 }));
        assert_eq!(parse_decimal(b"1", 19), Err(FixedError::BadScale(19)));
        assert_eq!(parse_decimal(b"92233720368547758.08", 2), Err(FixedError::Overflow));
        assert_eq!(parse_decimal(b"99999999999999999999999", 0), Err(FixedError::Overflow));
    }

    #[test]
    fn extremes_round_trip() {
        assert_eq!(parse_decimal(b"9223372036854775807", 0), Ok(i64::MAX));
        assert_eq!(parse_decimal(b"-9223372036854775808", 0), Ok(i64::MIN));
        assert_eq!(parse_decimal(b"9223372036854775808", 0), Err(FixedError::Overflow));
        assert_eq!(Decimal::new(i64::MIN, 0).to_string(), "-9223372036854775808");
        assert_eq!(Decimal::new(i64::MIN, 18).to_string(), "-9.223372036854775808");
    }

    #[test]
    fn formats_at_scale() {
        assert_eq!(Decimal::new(12345, 2).to_string(), "123.45");
        assert_eq!(Decimal::new(5, 2).to_string(), "0.05");
        assert_eq!(Decimal::new(-5, 2).to_string(), "-0.05");
        assert_eq!(Decimal::new(0, 3).to_string(), "0.000");
        assert_eq!(Decimal::new(42, 0).to_string(), "42");
        assert_eq!(Decimal::new(0, 0).to_string(), "0");
        assert_eq!(Decimal::new(100, 2).to_string(), "1.00");
    }

    #[test]
    fn rescales_exactly() {
        assert_eq!(rescale(150, 2, 4), Ok(15000));
        assert_eq!(rescale(15000, 4, 2), Ok(150));
        assert_eq!(rescale(15001, 4, 2), Err(FixedError::TooPrecise { scale: 2 }));
        assert_eq!(rescale(i64::MAX, 0, 1), Err(FixedError::Overflow));
    }

    mod props {
        use super::super::*;
        use proptest::prelude::*;

        #[test]
        fn eight_digit_groups() {
            assert_eq!(digits_u64(b"12345678"), Some(12_345_678));
            assert_eq!(digits_u64(b"000000010"), Some(10));
            assert_eq!(digits_u64(b"987654321012345678"), Some(987_654_321_012_345_678));
            assert_eq!(digits_u64(b""), Some(0));
            for bad in [&b"1234567/"[..], b"1234567:", b"12 45678", b"\x00234567", b"123456789a"] {
                assert_eq!(digits_u64(bad), None, "{bad:?}");
            }
        }

        proptest! {
            #[test]
            fn digit_runs_match_a_plain_loop(s in "[0-9]{0,18}") {
                prop_assert_eq!(digits_u64(s.as_bytes()), Some(s.parse::<u64>().unwrap_or(0)));
            }

            #[test]
            fn any_byte_run_is_checked(bytes in proptest::collection::vec(any::<u8>(), 0..18)) {
                let all_digits = bytes.iter().all(u8::is_ascii_digit);
                prop_assert_eq!(digits_u64(&bytes).is_some(), all_digits);
            }

            /// Formatting then parsing gives back the same mantissa at any scale.
            #[test]
            fn format_parse_round_trip(m in any::<i64>(), scale in 0u8..=18) {
                let text = Decimal::new(m, scale).to_string();
                prop_assert_eq!(parse_decimal(text.as_bytes(), scale), Ok(m));
            }

            /// Trailing zeros beyond the scale never change the value; a non-zero digit
            /// beyond it is always rejected.
            #[test]
            fn extra_digits(m in -1_000_000_000i64..1_000_000_000, scale in 0u8..=8, zeros in 1usize..10, d in 1u8..=9) {
                let text = Decimal::new(m, scale).to_string();
                let dot = if scale == 0 { "." } else { "" };
                let padded = format!("{text}{dot}{}", "0".repeat(zeros));
                prop_assert_eq!(parse_decimal(padded.as_bytes(), scale), Ok(m));
                let bad = format!("{text}{dot}{}{d}", "0".repeat(zeros - 1));
                prop_assert_eq!(parse_decimal(bad.as_bytes(), scale), Err(FixedError::TooPrecise { scale }));
            }

            /// Arbitrary bytes never panic, and anything accepted re-formats to an
            /// equivalent number.
            #[test]
            fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..40), scale in 0u8..=20) {
                if let Ok(m) = parse_decimal(&bytes, scale) {
                    let again = Decimal::new(m, scale).to_string();
                    prop_assert_eq!(parse_decimal(again.as_bytes(), scale), Ok(m));
                }
            }

            /// Agrees with exact integer arithmetic on "int.frac" inputs.
            #[test]
            fn matches_integer_model(int in 0u64..10_000_000_000, frac in 0u64..100_000_000, neg in any::<bool>()) {
                let text = format!("{}{int}.{frac:08}", if neg { "-" } else { "" });
                let expected = (int as i64 * 100_000_000 + frac as i64) * if neg { -1 } else { 1 };
                prop_assert_eq!(parse_decimal(text.as_bytes(), 8), Ok(expected));
            }
        }
    }
}
