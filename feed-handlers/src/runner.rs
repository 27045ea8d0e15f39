//! One OS thread per feed, pinned to its core, pushing into its own input ring.
//!
//! The thread runs until the shared stop flag is set. Pacing for the synthetic feed is
//! by wall clock: events are due every `1/rate` seconds; after a stall it catches up at
//! most one second's worth and then re-anchors, rather than bursting without bound.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use stocksblitz_engine::agent::{spawn_agent, Agent, AgentSpec, ThreadHandle};
use stocksblitz_engine::idle::IdleConfig;
use stocksblitz_engine::ring::RingStats;
use stocksblitz_engine::tick_ring::TickProducer;
use stocksblitz_engine::{Tick, UnixNanos};

use crate::stats::{FeedState, FeedStats};
use crate::synthetic::{SyntheticMarket, TickBuf};

/// A running feed thread.
pub struct FeedHandle {
    pub name: String,
    pub kind: &'static str,
    pub stats: Arc<FeedStats>,
    pub ring: Arc<RingStats>,
    join: ThreadHandle,
}

impl FeedHandle {
    pub fn new(
        name: String,
        kind: &'static str,
        stats: Arc<FeedStats>,
        ring: Arc<RingStats>,
        join: ThreadHandle,
    ) -> Self {
        Self {
            name,
            kind,
            stats,
            ring,
            join,
        }
    }

    /// Waits for the thread to finish (after the stop flag was set); a panic is
    /// logged with the feed's name and the panic message.
    pub fn join(self) {
        if let Err(e) = self.join.join() {
            tracing::error!(feed = %self.name, error = %e, "feed thread panicked");
        }
    }

    pub fn is_finished(&self) -> bool {
        self.join.is_finished()
    }
}

/// Pushes a tick, counting it; the ring counts drops itself.
#[inline]
fn emit(ring: &mut TickProducer, stats: &FeedStats, t: Tick) {
    stats.ticks.inc();
    ring.push(t);
}

/// The synthetic feed as an agent: a poll emits one market step when it is due.
struct SyntheticFeed {
    name: String,
    rate_per_sec: u64,
    market: SyntheticMarket,
    ring: TickProducer,
    stats: Arc<FeedStats>,
    interval: i64,
    due: UnixNanos,
    buf: TickBuf,
}

impl Agent for SyntheticFeed {
    fn name(&self) -> &str {
        &self.name
    }

    fn on_start(&mut self) {
        let stats = &self.stats;
        stats.running.set(1);
        stats.set_state(FeedState::Connected, None, UnixNanos::now());
        tracing::info!(feed = %self.name, kind = "synthetic", rate_per_sec = self.rate_per_sec, "feed started");
        let now = UnixNanos::now();
        for i in 0..self.market.len() {
            let ring = &mut self.ring;
            self.market.snapshot(i, now, |t| emit(ring, stats, t));
        }
        self.ring.wake_consumer();
        self.interval = (UnixNanos::NANOS_PER_SEC / self.rate_per_sec.max(1) as i64).max(1);
        self.due = now;
    }

    fn poll(&mut self) -> usize {
        let now = UnixNanos::now();
        if now < self.due {
            return 0;
        }
        self.market.step(now, &mut self.buf);
        self.stats.messages.inc();
        for t in self.buf.as_slice() {
            emit(&mut self.ring, &self.stats, *t);
        }
        self.ring.wake_consumer();
        self.due = self.due.saturating_add_nanos(self.interval);
        if now.0 - self.due.0 > UnixNanos::NANOS_PER_SEC {
            self.due = now;
        }
        1
    }

    fn on_close(&mut self) {
        self.stats.running.set(0);
        self.stats.set_state(FeedState::Stopped, None, UnixNanos::now());
        tracing::info!(feed = %self.name, "feed stopped");
    }

    /// Until the next step is due: one wake-up a step, not a series of polls.
    fn idle_for(&self) -> Option<std::time::Duration> {
        let left = self.due.0.saturating_sub(UnixNanos::now().0);
        Some(std::time::Duration::from_nanos(u64::try_from(left).unwrap_or(0)))
    }
}

/// Starts a synthetic feed thread.
pub fn spawn_synthetic(
    name: String,
    core: Option<usize>,
    idle: IdleConfig,
    rate_per_sec: u64,
    market: SyntheticMarket,
    ring: TickProducer,
    stop: Arc<AtomicBool>,
) -> std::io::Result<FeedHandle> {
    let stats = Arc::new(FeedStats::default());
    let ring_stats = Arc::clone(ring.stats());
    let feed = SyntheticFeed {
        name: name.clone(),
        rate_per_sec,
        market,
        ring,
        stats: Arc::clone(&stats),
        interval: 1,
        due: UnixNanos(0),
        buf: TickBuf::default(),
    };
    let spec = AgentSpec::new(format!("feed-{name}"), idle, &stop).on_core(core);
    let join = spawn_agent(feed, spec).map_err(std::io::Error::other)?;
    Ok(FeedHandle {
        name,
        kind: "synthetic",
        stats,
        ring: ring_stats,
        join,
    })
}
