//! Per-feed counters, written by the feed's thread, read by `/metrics`.

use stocksblitz_engine::counter::Counter;

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
}
