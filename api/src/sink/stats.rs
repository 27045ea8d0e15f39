//! The sink's counters and state, read by /metrics and /health.
//!
//! Every row bound for the store is accounted for: rows emitted (market data as the
//! sink takes it from the engine's ring, order events as the sink reads them from the
//! journal) plus rows recovered from an earlier run's spill files equal rows stored +
//! refused + held (memory, spill files) + lost (only when a spill file cannot be
//! written: a full or failing disk). See [`SinkStats::unaccounted`]. Rows the engine
//! could not hand over (its ring to the sink was full) are counted apart
//! (`upstream_missed`): the engine never waits.

use parking_lot::Mutex;
use stocksblitz_engine::counter::Counter;

use super::row::Table;

#[derive(Debug, Default)]
pub struct SinkStats {
    /// Rows bound for the store, per table ([`Table::index`]).
    pub emitted: [Counter; 6],
    /// Rows the server accepted, per table.
    pub stored: [Counter; 6],
    /// Rows taken in by the sink (market data and order events).
    pub rows_in: Counter,
    /// Rows the server accepted (all tables).
    pub rows_sent: Counter,
    pub batches: Counter,
    /// Failed sends (each is retried after a back-off).
    pub errors: Counter,
    /// Rows the encoder or the server refused (kept in `rejected.rows` in the spill
    /// directory).
    pub rejected: Counter,
    /// Rows written to spill files since start.
    pub spilled_rows: Counter,
    /// Rows in spill files now (not yet loaded back), and their bytes on disk.
    pub spill_rows: Counter,
    pub spill_bytes: Counter,
    /// Rows found in spill files an earlier run left (counted by that run's emitted).
    pub recovered: Counter,
    /// Rows waiting in memory now (including the batch being sent).
    pub memory_rows: Counter,
    /// Market data events in the engine's ring to the sink, not yet taken.
    pub tap_rows: Counter,
    /// Rows lost: a spill file could not be written (disk full or failing), or the
    /// sink's thread was gone. Never expected; reported loudly.
    pub lost: Counter,
    /// Stored events (trades, quotes, closed bars) the engine could not hand over: its
    /// ring to the sink was full (the sink's tap thread starved of CPU for longer than
    /// `questdb.ring_capacity` rows last). Missing from `emitted` and from the store.
    /// Never expected; reported loudly.
    pub upstream_missed: Counter,
    /// The configured batch size: more rows than this waiting in memory means the sink
    /// is behind (catching up).
    pub batch_rows: Counter,
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

    pub fn emitted(&self, t: Table) -> u64 {
        self.emitted.get(t.index()).map_or(0, Counter::get)
    }

    pub fn stored(&self, t: Table) -> u64 {
        self.stored.get(t.index()).map_or(0, Counter::get)
    }

    /// Rows not yet stored: in the engine's ring to the sink, in memory and in spill
    /// files.
    pub fn pending(&self) -> u64 {
        self.tap_rows.get() + self.held()
    }

    /// Rows the sink took and has not stored yet: in memory and in spill files.
    pub fn held(&self) -> u64 {
        self.memory_rows.get() + self.spill_rows.get()
    }

    /// The sink is behind: rows wait in spill files, or more than two batches wait in
    /// memory.
    pub fn catching_up(&self) -> bool {
        self.spill_rows.get() > 0 || (self.batch_rows.get() > 0 && self.memory_rows.get() > 2 * self.batch_rows.get())
    }

    /// Healthy: connected (or nothing to send yet), not catching up, nothing lost
    /// (here, or rows the engine could not hand over).
    pub fn healthy(&self) -> bool {
        (self.connected.get() == 1 || self.rows_in.get() == 0)
            && !self.catching_up()
            && self.lost.get() == 0
            && self.upstream_missed.get() == 0
    }

    /// `emitted + recovered - (stored + refused + held + lost)`: 0 when every row is
    /// accounted for (read while the sink is quiet; counters move independently).
    pub fn unaccounted(&self) -> i128 {
        let emitted: u64 = self.emitted.iter().map(Counter::get).sum();
        let have = i128::from(emitted) + i128::from(self.recovered.get());
        have - i128::from(self.rows_sent.get())
            - i128::from(self.rejected.get())
            - i128::from(self.held())
            - i128::from(self.lost.get())
    }
}
