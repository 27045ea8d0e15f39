//! What every venue normalizer shares: the frame it is given and what it asks of the
//! connection that feeds it.
//!
//! A normalizer turns one received frame into ticks (through a callback, so nothing is
//! collected or allocated) and tells the connection layer what it needs next. The same
//! normalizer serves the live handler, capture replay and the `stocksblitz feed` CLI, so
//! a bug is reproduced from a capture by the very code that hit it.

use stocksblitz_engine::{FeedStatus, FixedError, InstrumentId, Tick, TickData, UnixNanos};

use crate::json_scan::JsonError;

/// Why a JSON venue frame was rejected by its parser (the same reasons for every JSON
/// venue: the frame is not JSON, a field is missing, or a decimal does not fit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("invalid JSON: {0}")]
    Json(#[from] JsonError),
    #[error("field {0:?} missing or of the wrong type")]
    Field(&'static str),
    #[error("field {field:?}: {source}")]
    Decimal {
        field: &'static str,
        #[source]
        source: FixedError,
    },
}

/// A received WebSocket frame's payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameRef<'a> {
    Text(&'a [u8]),
    Binary(&'a [u8]),
}

impl FrameRef<'_> {
    pub fn len(&self) -> usize {
        match self {
            FrameRef::Text(b) | FrameRef::Binary(b) => b.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What the connection layer should do after a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    None,
    /// Fetch a fresh book snapshot for this instrument (after a gap or at start).
    Snapshot(InstrumentId),
    /// The venue announced it will close the connection: reconnect make-before-break.
    Reconnect,
}

/// A status tick for `id`.
pub fn status(id: InstrumentId, status: FeedStatus, detail: u64, recv: UnixNanos) -> Tick {
    Tick {
        exchange_ts: UnixNanos::UNKNOWN,
        recv_ts: recv,
        instrument: id,
        data: TickData::Status { status, detail },
    }
}
