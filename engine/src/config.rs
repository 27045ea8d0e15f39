//! `[engine]` configuration: ring sizes, book depth, timing, pinning, idle strategy.

use serde::Deserialize;

use crate::idle::IdleConfig;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineConfig {
    /// Core to pin the engine thread to; absent = not pinned.
    #[serde(default)]
    pub core: Option<usize>,
    /// Slots in each feed handler's input ring (one ring per feed; rounded up to a power
    /// of two, `stocksblitz_engine::tick_ring`).
    pub input_ring_capacity: usize,
    /// Slots in each consumer's output ring.
    pub output_ring_capacity: usize,
    /// Price levels kept per book side.
    pub book_max_levels: usize,
    /// An instrument with no data for this long becomes STALE (only in session, and only
    /// if a feed delivers it: out of session it is CLOSED, feedless ones are never STALE).
    pub stale_after_ms: u64,
    /// How long after its end a bar waits for late trades before it closes.
    pub bar_grace_ms: u64,
    /// How often a forming bar's progress is published.
    pub bar_progress_ms: u64,
    /// Ticks taken from one input ring before moving to the next (fairness).
    pub batch_limit: usize,
    pub idle: IdleConfig,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            core: None,
            input_ring_capacity: 65_536,
            output_ring_capacity: 65_536,
            book_max_levels: 200,
            stale_after_ms: 5_000,
            bar_grace_ms: 250,
            bar_progress_ms: 250,
            batch_limit: 256,
            idle: IdleConfig::default(),
        }
    }
}

impl EngineConfig {
    /// Checks values; on error returns the key (relative to `[engine]`) and why.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let err = |k: &str, m: &str| Err((k.to_owned(), m.to_owned()));
        if !(2..=1 << 24).contains(&self.input_ring_capacity) {
            return err("input_ring_capacity", "must be between 2 and 16777216");
        }
        if !(2..=1 << 24).contains(&self.output_ring_capacity) {
            return err("output_ring_capacity", "must be between 2 and 16777216");
        }
        if !(1..=100_000).contains(&self.book_max_levels) {
            return err("book_max_levels", "must be between 1 and 100000");
        }
        // A consumer that fell behind is resynced with a full book snapshot, which
        // must fit in its ring alongside live traffic.
        if self.output_ring_capacity < 4 * (2 * self.book_max_levels + 4) {
            return err(
                "output_ring_capacity",
                "must be at least 4 x (2 x book_max_levels + 4) so a book snapshot fits",
            );
        }
        if self.stale_after_ms == 0 {
            return err("stale_after_ms", "must be at least 1");
        }
        if self.bar_grace_ms >= 1_000 {
            return err("bar_grace_ms", "must be below 1000 (shorter than the 1s bar)");
        }
        if self.bar_progress_ms == 0 {
            return err("bar_progress_ms", "must be at least 1");
        }
        if !(1..=65_536).contains(&self.batch_limit) {
            return err("batch_limit", "must be between 1 and 65536");
        }
        if let Err((k, m)) = self.idle.validate() {
            return Err((format!("idle.{k}"), m.to_owned()));
        }
        Ok(())
    }
}
