//! The normalized tick: what every feed handler produces and the engine consumes.
//!
//! One `Copy` value of at most one 64-byte cache line, so a ring slot is a cache line
//! and a hand-off never touches the heap. Venue differences end in the feed handler:
//! the engine only ever sees these few shapes.

use crate::fixed::{Price, Qty};
use crate::ids::InstrumentId;
use crate::side::{Aggressor, Side};
use crate::time::UnixNanos;

/// Flags on a book delta.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[repr(transparent)]
pub struct BookFlags(pub u8);

impl BookFlags {
    pub const NONE: Self = Self(0);
    /// Clear both sides before applying this delta: the first delta of a snapshot.
    pub const CLEAR: Self = Self(1);
    /// This delta belongs to a snapshot rather than an incremental update.
    pub const SNAPSHOT: Self = Self(2);
    /// Last delta of a venue message: the book is consistent after it.
    pub const END_OF_BATCH: Self = Self(4);

    #[inline]
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    #[inline]
    pub const fn with(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }
}

/// Feed-level events the handler reports in-band, in order with the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FeedStatus {
    /// (Re)connecting or resyncing: data is not yet trustworthy.
    Syncing = 0,
    /// Synchronized: a snapshot was applied and updates are in sequence.
    Live = 1,
    /// A sequence gap was detected; a resync follows.
    Gap = 2,
    /// The connection is up but silent beyond the handler's stale threshold.
    Stale = 3,
    /// The venue halted the instrument.
    Halted = 4,
    /// The venue resumed the instrument after a halt.
    Resumed = 5,
}

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TickData {
    /// A trade printed. `trade_id` is the venue's id (Binance ids exceed 2^32), 0 if none.
    Trade {
        price: Price,
        qty: Qty,
        trade_id: u64,
        aggressor: Aggressor,
    },
    /// Best bid and offer. A side with zero quantity is empty.
    Quote {
        bid: Price,
        bid_qty: Qty,
        ask: Price,
        ask_qty: Qty,
    },
    /// One price level changed to an absolute quantity; zero deletes the level.
    BookDelta {
        side: Side,
        price: Price,
        qty: Qty,
        update_id: u64,
        flags: BookFlags,
    },
    /// A feed status change; `detail` is venue-specific (e.g. the expected sequence).
    Status { status: FeedStatus, detail: u64 },
    /// The venue's last trade as a snapshot-style message reports it (Kite quote/full
    /// packets): price and size of the last print, its time in `exchange_ts`. Not a
    /// new trade: it sets the quote's last price without entering trades or bars.
    LastPrice { price: Price, qty: Qty },
    /// The session's open/high/low and the previous close as the venue reports them
    /// (Kite quote/full/index packets). Zero means not reported.
    DayStats {
        open: Price,
        high: Price,
        low: Price,
        close: Price,
    },
}

/// A normalized market-data event for one instrument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tick {
    /// Venue time, or [`UnixNanos::UNKNOWN`] when the venue sends none.
    pub exchange_ts: UnixNanos,
    /// Local time the frame carrying this tick was received.
    pub recv_ts: UnixNanos,
    pub instrument: InstrumentId,
    pub data: TickData,
}

const _: () = assert!(core::mem::size_of::<Tick>() <= 64, "Tick must fit one cache line");

impl crate::stack_vec::Placeholder for Tick {
    const PLACEHOLDER: Self = Tick::EMPTY;
}

impl Tick {
    /// The time the event happened as best known: exchange time, else receive time.
    #[inline]
    pub const fn event_time(&self) -> UnixNanos {
        self.exchange_ts.or(self.recv_ts)
    }

    /// A placeholder value for pre-filling fixed arrays; never a real event.
    pub const EMPTY: Tick = Tick {
        exchange_ts: UnixNanos::UNKNOWN,
        recv_ts: UnixNanos(0),
        instrument: InstrumentId(0),
        data: TickData::Status {
            status: FeedStatus::Syncing,
            detail: 0,
        },
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tick_is_one_cache_line() {
        assert_eq!(core::mem::size_of::<Tick>(), 64);
    }

    #[test]
    fn flags_combine() {
        let f = BookFlags::CLEAR.with(BookFlags::SNAPSHOT);
        assert!(f.contains(BookFlags::CLEAR));
        assert!(f.contains(BookFlags::SNAPSHOT));
        assert!(!f.contains(BookFlags::END_OF_BATCH));
    }
}
