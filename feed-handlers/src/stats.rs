//! Per-feed counters and connection state, written by the feed's thread, read by
//! `/metrics` and `/health`.
//!
//! The counters are single-writer atomics touched per message. The state (connected,
//! disconnected, refused credentials, ...) with its reason and the time it began
//! changes only when the connection does, off the per-message path: it is what tells
//! an operator *why* a feed delivers nothing and since when.

use parking_lot::Mutex;
use stocksblitz_engine::counter::Counter;
use stocksblitz_engine::UnixNanos;

/// Where a feed's connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FeedState {
    /// Started, not connected yet.
    Starting = 0,
    /// Connected: frames can arrive (in-process feeds are connected while they run).
    Connected = 1,
    /// Not connected (a connection failed or ended); reconnecting with backoff.
    Disconnected = 2,
    /// The venue refused the credentials (HTTP 401/403); retried with backoff, each
    /// attempt with the credentials re-read from the environment or their file.
    Unauthorized = 3,
    /// The feed thread ended.
    Stopped = 4,
}

impl FeedState {
    pub const ALL: [FeedState; 5] = [
        FeedState::Starting,
        FeedState::Connected,
        FeedState::Disconnected,
        FeedState::Unauthorized,
        FeedState::Stopped,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            FeedState::Starting => "starting",
            FeedState::Connected => "connected",
            FeedState::Disconnected => "disconnected",
            FeedState::Unauthorized => "unauthorized",
            FeedState::Stopped => "stopped",
        }
    }

    const fn from_u64(v: u64) -> Self {
        match v {
            1 => FeedState::Connected,
            2 => FeedState::Disconnected,
            3 => FeedState::Unauthorized,
            4 => FeedState::Stopped,
            _ => FeedState::Starting,
        }
    }
}

#[derive(Debug, Default)]
pub struct FeedStats {
    /// Venue messages (frames) handled.
    pub messages: Counter,
    /// Bytes received from the venue.
    pub bytes: Counter,
    /// Ticks produced (pushed or dropped).
    pub ticks: Counter,
    /// Messages that failed to parse (skipped, the feed goes on).
    pub parse_errors: Counter,
    /// Sequence gaps detected.
    pub gaps: Counter,
    /// Book resyncs started.
    pub resyncs: Counter,
    /// Reconnects.
    pub reconnects: Counter,
    /// 1 while the feed thread runs.
    pub running: Counter,
    /// Connection attempts the venue refused for their credentials (HTTP 401/403).
    pub auth_failures: Counter,
    /// [`FeedState`] as a number.
    state: Counter,
    /// Wall-clock nanoseconds when the current state began (0 = process start).
    state_since_ns: Counter,
    /// Why the feed is in its state, when it is not connected.
    reason: Mutex<Option<String>>,
}

impl FeedStats {
    pub fn state(&self) -> FeedState {
        FeedState::from_u64(self.state.get())
    }

    /// When the current state began; `None` if it has held since the feed was created.
    pub fn state_since(&self) -> Option<UnixNanos> {
        let ns = self.state_since_ns.get();
        (ns != 0).then(|| UnixNanos(i64::try_from(ns).unwrap_or(i64::MAX)))
    }

    /// Why the feed is in its state (connection error, refusal), if it said.
    pub fn reason(&self) -> Option<String> {
        self.reason.lock().clone()
    }

    /// Moves to `state` with `reason` at `now`. The start time moves only when the state
    /// changes (a failing reconnect stays disconnected since the first failure); the
    /// reason is always the latest. Returns whether the state changed, so the caller
    /// logs each transition once. Called by the feed's own thread only.
    pub fn set_state(&self, state: FeedState, reason: Option<String>, now: UnixNanos) -> bool {
        *self.reason.lock() = reason;
        let changed = self.state() != state;
        if changed || self.state_since_ns.get() == 0 {
            self.state_since_ns.set(u64::try_from(now.0).unwrap_or(0));
            self.state.set(state as u64);
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_keeps_its_start_and_takes_the_latest_reason() {
        let s = FeedStats::default();
        assert_eq!(
            (s.state(), s.state_since(), s.reason()),
            (FeedState::Starting, None, None)
        );
        assert!(s.set_state(FeedState::Disconnected, Some("refused".into()), UnixNanos(10)));
        assert!(!s.set_state(FeedState::Disconnected, Some("timeout".into()), UnixNanos(20)));
        assert_eq!(s.state_since(), Some(UnixNanos(10)));
        assert_eq!(s.reason().as_deref(), Some("timeout"));
        assert!(s.set_state(FeedState::Connected, None, UnixNanos(30)));
        assert_eq!(
            (s.state(), s.state_since(), s.reason()),
            (FeedState::Connected, Some(UnixNanos(30)), None)
        );
        for st in FeedState::ALL {
            s.set_state(st, None, UnixNanos(40));
            assert_eq!(s.state(), st);
        }
    }
}
