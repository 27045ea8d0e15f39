//! The sink's counters and state, read by /metrics and /health.

use parking_lot::Mutex;
use stocksblitz_engine::counter::Counter;

#[derive(Debug, Default)]
pub struct SinkStats {
    /// Rows taken in (market data and order events).
    pub rows_in: Counter,
    /// Rows the server accepted.
    pub rows_sent: Counter,
    pub batches: Counter,
    /// Failed sends (each is retried after a back-off).
    pub errors: Counter,
    /// Rows the ILP encoder refused (kept in `rejected.rows` in the spill directory).
    pub rejected: Counter,
    /// Rows written to spill files since start, and spill bytes on disk now.
    pub spilled_rows: Counter,
    pub spill_bytes: Counter,
    /// Rows waiting in memory now.
    pub memory_rows: Counter,
    /// Nanoseconds between now and the oldest row not yet stored (0 when caught up).
    pub lag_ns: Counter,
    /// 1 while the last send succeeded.
    pub connected: Counter,
    last_error: Mutex<Option<String>>,
}

impl SinkStats {
    pub fn set_error(&self, e: Option<String>) {
        *self.last_error.lock() = e;
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().clone()
    }
}
