//! What a polling thread does when its rings are empty.
//!
//! Busy-spinning gives the lowest wake-up latency but burns a core; parking frees the
//! core but costs a slow wake-up (about 200 us on these VMs). The default,
//! spin-then-park, spins briefly (catching the next tick of an active stream within
//! nanoseconds), then yields, then sleeps in short slices, so a 2-core machine still
//! has CPU for the API and the OS. Nobody ever wakes a sleeping thread: producers must
//! not make system calls, so sleepers time out and poll again.

use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IdleKind {
    /// Never give up the core. For isolated cores only.
    BusySpin,
    /// Spin, then `sched_yield` in a loop: fast, but the core shows 100% busy.
    SpinThenYield,
    /// Spin, yield a little, then sleep `park_micros` at a time.
    SpinThenPark,
}

/// `[*.idle]` config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdleConfig {
    pub strategy: IdleKind,
    /// Empty polls spent spinning before yielding.
    pub spin_iterations: u32,
    /// Empty polls spent yielding before sleeping (spin-then-park only).
    pub yield_iterations: u32,
    /// Sleep slice for spin-then-park, in microseconds.
    pub park_micros: u32,
}

impl Default for IdleConfig {
    fn default() -> Self {
        Self {
            strategy: IdleKind::SpinThenPark,
            spin_iterations: 2_000,
            yield_iterations: 50,
            park_micros: 50,
        }
    }
}

impl IdleConfig {
    /// Checks the numbers make sense; returns the offending key's name and why.
    pub fn validate(&self) -> Result<(), (&'static str, &'static str)> {
        if self.strategy == IdleKind::SpinThenPark && self.park_micros == 0 {
            return Err(("park_micros", "must be at least 1 for spin-then-park"));
        }
        if self.park_micros > 100_000 {
            return Err(("park_micros", "must be at most 100000 (100 ms) or ticks sit unread"));
        }
        Ok(())
    }
}

/// Per-thread idle state.
#[derive(Debug)]
pub struct Idler {
    config: IdleConfig,
    empty_polls: u32,
}

impl Idler {
    pub fn new(config: IdleConfig) -> Self {
        Self { config, empty_polls: 0 }
    }

    /// Call after a poll that found work.
    #[inline]
    pub fn reset(&mut self) {
        self.empty_polls = 0;
    }

    /// Call after a poll that found nothing.
    #[inline]
    pub fn idle(&mut self) {
        let n = self.empty_polls;
        self.empty_polls = n.saturating_add(1);
        let c = &self.config;
        match c.strategy {
            IdleKind::BusySpin => std::hint::spin_loop(),
            IdleKind::SpinThenYield if n < c.spin_iterations => std::hint::spin_loop(),
            IdleKind::SpinThenYield => std::thread::yield_now(),
            IdleKind::SpinThenPark if n < c.spin_iterations => std::hint::spin_loop(),
            IdleKind::SpinThenPark if n < c.spin_iterations.saturating_add(c.yield_iterations) => {
                std::thread::yield_now()
            }
            IdleKind::SpinThenPark => std::thread::park_timeout(Duration::from_micros(u64::from(c.park_micros))),
        }
    }
}
