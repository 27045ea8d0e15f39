//! Trading sessions: when an instrument trades, in its exchange's own time zone.
//!
//! Written in config as one readable string so an operator sees the whole rule at once:
//! `"24x7"` (crypto) or `"Asia/Kolkata 09:15-15:30 mon-fri"` (NSE cash market).

use chrono::{Datelike, NaiveTime, TimeZone, Timelike, Weekday};
use chrono_tz::Tz;

use crate::time::UnixNanos;

/// When an instrument is in session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TradingSession {
    /// Always open (crypto spot).
    Always,
    /// Open from `open` (inclusive) to `close` (exclusive) local time on `days`.
    Daily {
        tz: Tz,
        open: NaiveTime,
        close: NaiveTime,
        /// Bit `n` set = open on `Weekday::num_days_from_monday() == n`.
        days: u8,
    },
}

/// Why a session string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    #[error(
        "expected \"24x7\" or \"<IANA time zone> HH:MM-HH:MM [day-day]\", e.g. \"Asia/Kolkata 09:15-15:30 mon-fri\""
    )]
    Shape,
    #[error("unknown time zone {0:?}: use an IANA name such as \"Asia/Kolkata\"")]
    TimeZone(String),
    #[error("bad time {0:?}: use 24-hour HH:MM")]
    Time(String),
    #[error("session closes at or before it opens: overnight sessions are not supported")]
    Empty,
    #[error("bad day range {0:?}: use e.g. \"mon-fri\" or \"sat\"")]
    Days(String),
}

fn parse_weekday(s: &str) -> Option<u8> {
    let day = match s {
        "mon" => Weekday::Mon,
        "tue" => Weekday::Tue,
        "wed" => Weekday::Wed,
        "thu" => Weekday::Thu,
        "fri" => Weekday::Fri,
        "sat" => Weekday::Sat,
        "sun" => Weekday::Sun,
        _ => return None,
    };
    u8::try_from(day.num_days_from_monday()).ok()
}

fn parse_days(s: &str) -> Result<u8, SessionError> {
    let bad = || SessionError::Days(s.to_owned());
    let (from, to) = match s.split_once('-') {
        Some((a, b)) => (parse_weekday(a).ok_or_else(bad)?, parse_weekday(b).ok_or_else(bad)?),
        None => {
            let d = parse_weekday(s).ok_or_else(bad)?;
            (d, d)
        }
    };
    if from > to {
        return Err(bad());
    }
    Ok((from..=to).fold(0u8, |m, d| m | (1 << d)))
}

fn parse_time(s: &str) -> Result<NaiveTime, SessionError> {
    NaiveTime::parse_from_str(s, "%H:%M").map_err(|_| SessionError::Time(s.to_owned()))
}

impl std::str::FromStr for TradingSession {
    type Err = SessionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("24x7") {
            return Ok(TradingSession::Always);
        }
        let mut parts = s.split_whitespace();
        let (Some(tz), Some(hours)) = (parts.next(), parts.next()) else {
            return Err(SessionError::Shape);
        };
        let days = match parts.next() {
            Some(d) => parse_days(&d.to_ascii_lowercase())?,
            None => parse_days("mon-fri")?,
        };
        if parts.next().is_some() {
            return Err(SessionError::Shape);
        }
        let tz: Tz = tz.parse().map_err(|_| SessionError::TimeZone(tz.to_owned()))?;
        let (open, close) = hours.split_once('-').ok_or(SessionError::Shape)?;
        let (open, close) = (parse_time(open)?, parse_time(close)?);
        if close <= open {
            return Err(SessionError::Empty);
        }
        Ok(TradingSession::Daily { tz, open, close, days })
    }
}

impl TradingSession {
    /// Whether the instrument is in session at `at`.
    pub fn is_open(&self, at: UnixNanos) -> bool {
        match self {
            TradingSession::Always => true,
            TradingSession::Daily { tz, open, close, days } => {
                let local = tz.timestamp_nanos(at.0);
                let day_bit = 1u8 << local.weekday().num_days_from_monday();
                let t = NaiveTime::from_hms_opt(local.hour(), local.minute(), local.second()).unwrap_or(NaiveTime::MIN);
                days & day_bit != 0 && t >= *open && t < *close
            }
        }
    }

    /// The trading day of `at` in the session's time zone (days since 1970-01-01 there;
    /// UTC days for 24x7 instruments).
    pub fn local_day(&self, at: UnixNanos) -> i64 {
        match self {
            TradingSession::Always => at.0.div_euclid(86_400 * UnixNanos::NANOS_PER_SEC),
            TradingSession::Daily { tz, .. } => {
                let local = tz.timestamp_nanos(at.0).naive_local();
                local.and_utc().timestamp().div_euclid(86_400)
            }
        }
    }

    /// The config form, for display.
    pub fn describe(&self) -> String {
        match self {
            TradingSession::Always => "24x7".to_owned(),
            TradingSession::Daily { tz, open, close, days } => {
                const NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
                let first = days.trailing_zeros() as usize;
                let last = 7 - days.leading_zeros() as usize;
                format!(
                    "{tz} {}-{} {}-{}",
                    open.format("%H:%M"),
                    close.format("%H:%M"),
                    NAMES.get(first).unwrap_or(&"mon"),
                    NAMES.get(last).unwrap_or(&"sun")
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ist(y: i32, m: u32, d: u32, hh: u32, mm: u32) -> UnixNanos {
        let t = chrono_tz::Asia::Kolkata
            .with_ymd_and_hms(y, m, d, hh, mm, 0)
            .single()
            .map(|t| t.timestamp_nanos_opt().unwrap_or(0))
            .unwrap_or(0);
        UnixNanos(t)
    }

    #[test]
    fn nse_session_edges() {
        let s: TradingSession = "Asia/Kolkata 09:15-15:30 mon-fri".parse().unwrap();
        // 2026-11-24 is a Tuesday.
        assert!(!s.is_open(ist(2026, 11, 24, 9, 14)));
        assert!(s.is_open(ist(2026, 11, 24, 9, 15)));
        assert!(s.is_open(ist(2026, 11, 24, 15, 29)));
        assert!(!s.is_open(ist(2026, 11, 24, 15, 30)));
        // Saturday.
        assert!(!s.is_open(ist(2026, 11, 28, 10, 0)));
        assert_eq!(s.describe(), "Asia/Kolkata 09:15-15:30 mon-fri");
    }

    #[test]
    fn always_open() {
        let s: TradingSession = "24x7".parse().unwrap();
        assert!(s.is_open(UnixNanos(0)));
        assert_eq!(s.describe(), "24x7");
    }

    #[test]
    fn rejects_bad_sessions() {
        assert_eq!("".parse::<TradingSession>(), Err(SessionError::Shape));
        assert!(matches!(
            "Mars/Base 09:00-10:00".parse::<TradingSession>(),
            Err(SessionError::TimeZone(_))
        ));
        assert!(matches!(
            "UTC 9-10".parse::<TradingSession>(),
            Err(SessionError::Time(_))
        ));
        assert_eq!("UTC 10:00-09:00".parse::<TradingSession>(), Err(SessionError::Empty));
        assert!(matches!(
            "UTC 09:00-10:00 fri-mon".parse::<TradingSession>(),
            Err(SessionError::Days(_))
        ));
        assert_eq!(
            "UTC 09:00-10:00 mon extra".parse::<TradingSession>(),
            Err(SessionError::Shape)
        );
    }
}
