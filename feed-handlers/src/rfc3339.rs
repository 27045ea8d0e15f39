//! RFC 3339 timestamps ("2014-11-07T08:19:27.028459Z") to `UnixNanos`, without
//! allocation. Coinbase sends these; only UTC (`Z` or `+00:00`-style offsets) and up
//! to nine fractional digits are accepted.

use stocksblitz_engine::UnixNanos;

fn digits(s: &[u8], from: usize, n: usize) -> Option<i64> {
    let part = s.get(from..from + n)?;
    part.iter().try_fold(0i64, |acc, &b| {
        b.is_ascii_digit().then(|| acc * 10 + i64::from(b - b'0'))
    })
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`.
pub fn parse(s: &[u8]) -> Option<UnixNanos> {
    let (y, mo, d) = (digits(s, 0, 4)?, digits(s, 5, 2)?, digits(s, 8, 2)?);
    let (h, mi, se) = (digits(s, 11, 2)?, digits(s, 14, 2)?, digits(s, 17, 2)?);
    if s.get(4) != Some(&b'-') || s.get(7) != Some(&b'-') || !matches!(s.get(10), Some(b'T' | b't' | b' ')) {
        return None;
    }
    if s.get(13) != Some(&b':') || s.get(16) != Some(&b':') {
        return None;
    }
    if !(1..=12).contains(&mo) || d < 1 || d > days_in_month(y, mo) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let mut at = 19;
    let mut nanos = 0i64;
    if s.get(at) == Some(&b'.') {
        at += 1;
        let start = at;
        while let Some(b) = s.get(at).filter(|b| b.is_ascii_digit()) {
            if at - start < 9 {
                nanos = nanos * 10 + i64::from(b - b'0');
            }
            at += 1;
        }
        let n = at - start;
        if n == 0 {
            return None;
        }
        for _ in n..9 {
            nanos *= 10;
        }
    }
    let offset_secs = match s.get(at..)? {
        b"Z" | b"z" => 0,
        [sign @ (b'+' | b'-'), ..] if s.len() == at + 6 && s.get(at + 3) == Some(&b':') => {
            let secs = digits(s, at + 1, 2)? * 3600 + digits(s, at + 4, 2)? * 60;
            if *sign == b'+' {
                secs
            } else {
                -secs
            }
        }
        _ => return None,
    };
    let secs = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + se - offset_secs;
    Some(UnixNanos(
        secs.checked_mul(UnixNanos::NANOS_PER_SEC)?.checked_add(nanos)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_coinbase_times() {
        assert_eq!(parse(b"1970-01-01T00:00:00Z"), Some(UnixNanos(0)));
        assert_eq!(
            parse(b"2014-11-07T08:19:27.028459Z"),
            Some(UnixNanos(1_415_348_367_028_459_000))
        );
        assert_eq!(
            parse(b"2019-08-14T20:42:27.265Z"),
            Some(UnixNanos(1_565_815_347_265_000_000))
        );
        assert_eq!(
            parse(b"2024-02-29T00:00:00.123456789Z"),
            Some(UnixNanos(1_709_164_800_123_456_789))
        );
        assert_eq!(parse(b"2024-02-29T05:30:00+05:30"), parse(b"2024-02-29T00:00:00Z"));
    }

    #[test]
    fn rejects_bad_times() {
        for bad in [
            &b""[..],
            b"2014-11-07",
            b"2014-11-07T08:19:27",
            b"2014-13-07T08:19:27Z",
            b"2023-02-29T00:00:00Z",
            b"2014-11-07T24:00:00Z",
            b"2014-11-07T08:19:27.Z",
            b"2014-11-07T08:19:27.5ZZ",
            b"2014/11/07T08:19:27Z",
        ] {
            assert_eq!(parse(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }

    proptest! {
        #[test]
        fn agrees_with_chrono(secs in 0i64..4_000_000_000, nanos in 0u32..1_000_000_000) {
            let t = chrono::DateTime::from_timestamp(secs, nanos).unwrap();
            let text = t.format("%Y-%m-%dT%H:%M:%S%.fZ").to_string();
            prop_assert_eq!(parse(text.as_bytes()), Some(UnixNanos(secs * 1_000_000_000 + i64::from(nanos))));
        }

        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            let _ = parse(&bytes);
        }
    }
}
