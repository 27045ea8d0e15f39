//! One OS thread per feed, pinned to its core, pushing into its own input ring.
//!
//! The thread runs until the shared stop flag is set. Pacing for the synthetic feed is
//! by wall clock: events are due every `1/rate` seconds; after a stall it catches up at
//! most one second's worth and then re-anchors, rather than bursting without bound.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use stocksblitz_engine::affinity::pin_current_thread;
use stocksblitz_engine::idle::{IdleConfig, Idler};
use stocksblitz_engine::ring::{RingProducer, RingStats};
use stocksblitz_engine::{Tick, UnixNanos};

use crate::stats::{FeedState, FeedStats};
use crate::synthetic::{SyntheticMarket, TickBuf};

/// A running feed thread.
pub struct FeedHandle {
    pub name: String,
    pub kind: &'static str,
    pub stats: Arc<FeedStats>,
    pub ring: Arc<RingStats>,
    join: JoinHandle<()>,
}

impl FeedHandle {
    pub fn new(
        name: String,
        kind: &'static str,
        stats: Arc<FeedStats>,
        ring: Arc<RingStats>,
        join: JoinHandle<()>,
    ) -> Self {
        Self {
            name,
            kind,
            stats,
            ring,
            join,
        }
    }

    /// Waits for the thread to finish (after the stop flag was set).
    pub fn join(self) {
        if self.join.join().is_err() {
            tracing::error!(feed = %self.name, "feed thread panicked");
        }
    }

    pub fn is_finished(&self) -> bool {
        self.join.is_finished()
    }
}

/// Pins the calling feed thread to `core` (if configured), logging a failure: the
/// feed still runs, unpinned, and the operator sees why.
pub(crate) fn pin_feed_thread(core: Option<usize>, feed: &str) {
    if let Some(core) = core {
        if let Err(e) = pin_current_thread(core) {
            tracing::error!(feed = %feed, core, error = %e, "could not pin feed thread");
        }
    }
}

/// Pushes a tick, counting it; the ring counts drops itself.
#[inline]
fn emit(ring: &mut RingProducer<Tick>, stats: &FeedStats, t: Tick) {
    stats.ticks.inc();
    ring.push(t);
}

/// Starts a synthetic feed thread.
pub fn spawn_synthetic(
    name: String,
    core: Option<usize>,
    idle: IdleConfig,
    rate_per_sec: u64,
    mut market: SyntheticMarket,
    mut ring: RingProducer<Tick>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<FeedHandle> {
    let stats = Arc::new(FeedStats::default());
    let ring_stats = Arc::clone(ring.stats());
    let thread_stats = Arc::clone(&stats);
    let thread_name = format!("feed-{name}");
    let log_name = name.clone();
    let join = std::thread::Builder::new().name(thread_name).spawn(move || {
        let stats = thread_stats;
        pin_feed_thread(core, &log_name);
        stats.running.set(1);
        stats.set_state(FeedState::Connected, None, UnixNanos::now());
        tracing::info!(feed = %log_name, kind = "synthetic", rate_per_sec, "feed started");
        let now = UnixNanos::now();
        for i in 0..market.len() {
            market.snapshot(i, now, |t| emit(&mut ring, &stats, t));
        }
        let interval = (UnixNanos::NANOS_PER_SEC / rate_per_sec.max(1) as i64).max(1);
        let mut due = now;
        let mut idler = Idler::new(idle);
        let mut buf = TickBuf::default();
        while !stop.load(Ordering::Relaxed) {
            let now = UnixNanos::now();
            if now < due {
                idler.idle();
                continue;
            }
            idler.reset();
            market.step(now, &mut buf);
            stats.messages.inc();
            for t in buf.as_slice() {
                emit(&mut ring, &stats, *t);
            }
            due = due.saturating_add_nanos(interval);
            if now.0 - due.0 > UnixNanos::NANOS_PER_SEC {
                due = now;
            }
        }
        stats.running.set(0);
        stats.set_state(FeedState::Stopped, None, UnixNanos::now());
        tracing::info!(feed = %log_name, "feed stopped");
    })?;
    Ok(FeedHandle {
        name,
        kind: "synthetic",
        stats,
        ring: ring_stats,
        join,
    })
}
