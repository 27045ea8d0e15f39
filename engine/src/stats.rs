//! Engine counters, written only by the engine thread, read by `/metrics`.

use crate::counter::Counter;

#[derive(Debug, Default)]
pub struct EngineStats {
    /// Ticks taken from input rings.
    pub ticks: Counter,
    /// Events handed to output rings (all consumers).
    pub events: Counter,
    /// Ticks naming an instrument id outside the registry.
    pub unknown_instrument: Counter,
    /// Book deltas with a negative quantity.
    pub invalid_deltas: Counter,
    /// Book levels discarded because a full side kept only better levels.
    pub book_discarded: Counter,
    /// Trades too late for any revisable bar.
    pub late_trades: Counter,
    /// Book snapshots sent to consumers that had fallen behind.
    pub resyncs: Counter,
    /// Wall-clock nanoseconds of the last housekeeping pass (liveness).
    pub heartbeat_ns: Counter,
    /// Surveillance: anomalies reported, findings inside a rule's cooldown, and
    /// anomalies dropped because too many arrived in one step.
    pub anomalies: Counter,
    pub anomalies_suppressed: Counter,
    pub anomalies_dropped: Counter,
}
