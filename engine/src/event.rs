//! Engine output events: what the engine publishes to every consumer (API fan-out, and
//! later the journal and the persistence sinks) through its bounded output rings.
//!
//! Fixed-size and `Copy` like ticks. Every event carries the instrument's data-quality
//! state in-band and a per-instrument sequence number that increases by one per event,
//! so a consumer that misses events (its ring was full) sees the gap and waits for the
//! snapshot the engine sends it once there is room again.

use crate::bars::{Bar, BarState};
use crate::fixed::{Price, Qty};
use crate::ids::InstrumentId;
use crate::quality::DataQuality;
use crate::side::{Aggressor, Side};
use crate::tick::BookFlags;
use crate::time::UnixNanos;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum EventData {
    /// The best bid/offer changed. A side with zero quantity is empty.
    Quote {
        bid: Price,
        bid_qty: Qty,
        ask: Price,
        ask_qty: Qty,
    },
    Trade {
        price: Price,
        qty: Qty,
        trade_id: u64,
        aggressor: Aggressor,
    },
    /// A book level changed; qty 0 removed it. `flags` mark snapshots: `CLEAR` on the
    /// first event of a snapshot, `END_OF_BATCH` where the book is consistent again.
    Book {
        side: Side,
        price: Price,
        qty: Qty,
        flags: BookFlags,
    },
    Bar {
        bar: Bar,
        state: BarState,
    },
    /// The data-quality state changed from `previous` to the event's `quality`.
    Status {
        previous: DataQuality,
    },
    /// The venue reported its last trade (price, size; time in `exchange_ts`) without
    /// it being a new trade: the quote's last price, never a trade or bar.
    LastPrice {
        price: Price,
        qty: Qty,
    },
    /// The venue's day open/high/low and previous close (zero: not reported).
    DayStats {
        open: Price,
        high: Price,
        low: Price,
        close: Price,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EngineEvent {
    /// Per-instrument, +1 per event.
    pub seq: u64,
    pub instrument: InstrumentId,
    /// The instrument's data quality after this event.
    pub quality: DataQuality,
    pub exchange_ts: UnixNanos,
    pub recv_ts: UnixNanos,
    /// When the engine published the event (its clock at the start of the poll round
    /// that produced it; UNKNOWN when driven without a clock, as in tests): the start of
    /// the end-to-end latency a WebSocket client sees (`engine_ts_us`).
    pub engine_ts: UnixNanos,
    pub data: EventData,
}

const _: () = assert!(
    core::mem::size_of::<EngineEvent>() <= 128,
    "EngineEvent must fit two cache lines"
);

impl EngineEvent {
    pub const EMPTY: EngineEvent = EngineEvent {
        seq: 0,
        instrument: InstrumentId(0),
        quality: DataQuality::Syncing,
        exchange_ts: UnixNanos::UNKNOWN,
        recv_ts: UnixNanos(0),
        engine_ts: UnixNanos::UNKNOWN,
        data: EventData::Status {
            previous: DataQuality::Syncing,
        },
    };

    /// A book event that starts a snapshot (consumers clear their copy).
    pub fn is_snapshot_start(&self) -> bool {
        matches!(self.data, EventData::Book { flags, .. } if flags.contains(BookFlags::CLEAR))
    }
}
