//! Feeding recorded frames through the live parsers.
//!
//! Replay runs a capture through the same [`VenueNormalizer`] a live handler uses, at
//! the original pace, scaled, or as fast as possible. Tick receive times are either the
//! recorded ones (analysis, the CLI) or re-stamped to now (driving a live engine, whose
//! staleness checks compare against the wall clock).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use stocksblitz_engine::{Tick, UnixNanos};

use crate::capture::{Frame, Record};
use crate::normalize::{Action, FrameRef};
use crate::stats::FeedStats;
use crate::venue::{FrameError, VenueNormalizer};

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Speed {
    /// The recorded gaps between frames.
    Original,
    /// Recorded gaps divided by this factor (2.0 = twice as fast).
    Scaled(f64),
    /// No waiting.
    Max,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stamp {
    Recorded,
    Now,
}

/// What a replay saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplaySummary {
    pub frames: usize,
    pub ticks: usize,
    pub errors: usize,
    pub snapshot_requests: usize,
    pub reconnect_requests: usize,
}

/// How a replay is paced and stamped, and when it stops early.
#[derive(Clone, Copy)]
pub struct ReplayOptions<'a> {
    pub speed: Speed,
    pub stamp: Stamp,
    /// Checked before every frame.
    pub stop: Option<&'a AtomicBool>,
}

impl ReplayOptions<'_> {
    /// As fast as possible, recorded times, to the end: analysis and the CLI.
    pub const ANALYSIS: ReplayOptions<'static> = ReplayOptions {
        speed: Speed::Max,
        stamp: Stamp::Recorded,
        stop: None,
    };
}

impl std::str::FromStr for Speed {
    type Err = String;

    /// `original`, `max`, or a factor such as `2x` / `0.5x`.
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "original" | "1x" => Ok(Speed::Original),
            "max" => Ok(Speed::Max),
            other => match other.strip_suffix('x').and_then(|f| f.parse::<f64>().ok()) {
                Some(f) if f > 0.0 && f.is_finite() => Ok(Speed::Scaled(f)),
                _ => Err(format!("{s:?}: use \"original\", \"max\" or a factor such as \"2x\"")),
            },
        }
    }
}

/// Replays `records` in order. `on_error(index, error)` reports frames that failed.
pub fn replay(
    records: &[Record],
    normalizer: &mut VenueNormalizer,
    opts: ReplayOptions<'_>,
    stats: &FeedStats,
    mut out: impl FnMut(Tick),
    mut on_error: impl FnMut(usize, FrameError),
) -> ReplaySummary {
    let ReplayOptions { speed, stamp, stop } = opts;
    let mut summary = ReplaySummary::default();
    let start = Instant::now();
    let first = records.first().map_or(0, |r| r.recv_ts.0);
    for (i, r) in records.iter().enumerate() {
        if stop.is_some_and(|s| s.load(Ordering::Relaxed)) {
            break;
        }
        let offset = (r.recv_ts.0 - first).max(0) as f64;
        let due = match speed {
            Speed::Original => Some(offset),
            Speed::Scaled(f) if f > 0.0 => Some(offset / f),
            Speed::Scaled(_) | Speed::Max => None,
        };
        if let Some(ns) = due {
            let target = Duration::from_nanos(ns as u64);
            // Sleep in short slices so a stop request is seen promptly.
            while start.elapsed() < target && !stop.is_some_and(|s| s.load(Ordering::Relaxed)) {
                std::thread::sleep((target - start.elapsed()).min(Duration::from_millis(50)));
            }
        }
        let recv = match stamp {
            Stamp::Recorded => r.recv_ts,
            Stamp::Now => UnixNanos::now(),
        };
        let frame = match &r.frame {
            Frame::Text(t) => FrameRef::Text(t.as_bytes()),
            Frame::Binary(b) => FrameRef::Binary(b),
        };
        summary.frames += 1;
        stats.messages.inc();
        stats.bytes.add(frame.len() as u64);
        let mut ticks = 0;
        let result = normalizer.on_frame(frame, recv, stats, &mut |t| {
            ticks += 1;
            out(t)
        });
        summary.ticks += ticks;
        stats.ticks.add(ticks as u64);
        match result {
            Ok(Action::None) => {}
            Ok(Action::Snapshot(_)) => summary.snapshot_requests += 1,
            Ok(Action::Reconnect) => summary.reconnect_requests += 1,
            Err(e) => {
                summary.errors += 1;
                stats.parse_errors.inc();
                match e.then() {
                    Action::Snapshot(_) => summary.snapshot_requests += 1,
                    Action::Reconnect => summary.reconnect_requests += 1,
                    Action::None => {}
                }
                on_error(i, e);
            }
        }
    }
    summary
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn speeds_parse() {
        assert_eq!("original".parse(), Ok(Speed::Original));
        assert_eq!("max".parse(), Ok(Speed::Max));
        assert_eq!("2x".parse(), Ok(Speed::Scaled(2.0)));
        assert_eq!("0.5x".parse(), Ok(Speed::Scaled(0.5)));
        for bad in ["", "fast", "0x", "-1x", "x", "infx"] {
            assert!(bad.parse::<Speed>().is_err(), "{bad}");
        }
    }
}
