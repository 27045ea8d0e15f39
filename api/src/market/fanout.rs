//! The fan-out thread: drains the engine's output ring into the mirror and tells the
//! WebSocket hub what changed.
//!
//! It is a plain OS thread (not a tokio task) because it polls a lock-free ring with an
//! idle strategy, like every other ring consumer. It takes the mirror's write lock once
//! per batch, never per event; then, under the read lock (readers are not held up),
//! hands the batch's changes to the WebSocket hub ([`Dispatcher`]): each changed public
//! channel encoded once and published, whatever the number of subscribers; and after
//! releasing it wakes each changed channel once.
//!
//! Taps: a store that wants conflated market data too (the Redis publisher) gets every
//! event from here through a ring of its own, and a full ring drops and counts (its
//! ring's counters): the fan-out never waits for a store. The QuestDB store is not a
//! tap: it keeps every trade, quote and closed bar, so it reads a recorder ring of its
//! own straight from the engine, and a fan-out that falls behind (its ring overflows
//! and the engine resyncs it with snapshots) costs the store nothing.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use parking_lot::RwLock;
use stocksblitz_engine::agent::{spawn_agent, Agent, AgentError, AgentSpec, ThreadHandle};
use stocksblitz_engine::counter::Counter;
use stocksblitz_engine::doorbell::Doorbell;
use stocksblitz_engine::idle::IdleConfig;
use stocksblitz_engine::ring::{RingConsumer, RingProducer};
use stocksblitz_engine::{DataQuality, EngineEvent, InstrumentId, InstrumentRegistry, UnixNanos};

use super::mirror::{Change, Mirror};
use crate::ws::hub::{Applied, Dispatcher, Hub};

/// Events taken from the ring per batch (one write lock each).
const BATCH: usize = 4096;

/// Shared read model plus the registry.
pub struct Market {
    pub registry: Arc<InstrumentRegistry>,
    pub mirror: RwLock<Mirror>,
    /// The configured feed delivering each instrument (by id); `None`: no feed (the
    /// internal venue's instruments, whose market data is their own book's).
    pub feed_of: Vec<Option<String>>,
}

impl Market {
    pub fn feed_of(&self, id: InstrumentId) -> Option<&str> {
        self.feed_of.get(id.index()).and_then(|f| f.as_deref())
    }
}

/// One data-quality transition the fan-out saw, logged after the batch.
#[derive(Debug, Clone, Copy)]
struct Transition {
    id: InstrumentId,
    from: DataQuality,
    to: DataQuality,
}

#[derive(Debug, Default)]
pub struct FanoutStats {
    pub events: Counter,
    pub batches: Counter,
    /// Wall-clock nanoseconds of the fan-out loop's last pass (liveness).
    pub heartbeat_ns: Counter,
}

/// Logs a data-quality transition as one structured line: which instrument, which
/// feed, from what to what, and what it means for readiness.
fn log_transition(market: &Market, t: Transition) {
    let symbol = market.registry.get(t.id).map_or("?", |i| i.symbol.as_str());
    let feed = market.feed_of(t.id).unwrap_or("none");
    let (from, to) = (t.from.as_str(), t.to.as_str());
    match t.to {
        DataQuality::Live | DataQuality::Closed => {
            tracing::info!(target: "stocksblitz::quality", symbol, feed, from, to, "data quality changed")
        }
        _ => tracing::warn!(target: "stocksblitz::quality", symbol, feed, from, to, "data quality changed"),
    }
}

/// The API fan-out as an agent: a poll takes one batch off the engine's output ring.
pub(crate) struct Fanout {
    market: Arc<Market>,
    hub: Dispatcher,
    ring: RingConsumer<EngineEvent>,
    /// Lossy rings of the stores that take every event (a full ring drops and counts).
    taps: Vec<RingProducer<EngineEvent>>,
    stats: Arc<FanoutStats>,
    batch: Vec<EngineEvent>,
    changes: Vec<Applied>,
    transitions: Vec<Transition>,
}

impl Agent for Fanout {
    fn name(&self) -> &str {
        "api-fanout"
    }

    fn poll(&mut self) -> usize {
        self.stats.heartbeat_ns.set(UnixNanos::now().0 as u64);
        self.ring.pop_batch(&mut self.batch, BATCH);
        if self.batch.is_empty() {
            return 0;
        }
        {
            let mut mirror = self.market.mirror.write();
            for ev in &self.batch {
                let from = mirror.get(ev.instrument).map(|v| v.quality());
                let c = mirror.apply(ev);
                let to = mirror.get(ev.instrument).map(|v| v.quality());
                if c != Change::None {
                    self.changes.push(Applied {
                        instrument: ev.instrument,
                        change: c,
                        quality_changed: from != to,
                        seq: ev.seq,
                        engine_ts: ev.engine_ts,
                    });
                }
                if let (Some(from), Some(to)) = (from, to) {
                    if from != to {
                        self.transitions.push(Transition {
                            id: ev.instrument,
                            from,
                            to,
                        });
                    }
                }
            }
        }
        self.hub.publish(&self.market.mirror.read(), &self.changes);
        self.hub.wake();
        // Off the engine's path and outside the lock: one line per transition.
        for t in self.transitions.drain(..) {
            log_transition(&self.market, t);
        }
        for tap in &mut self.taps {
            for ev in &self.batch {
                tap.push(*ev);
            }
        }
        let n = self.batch.len();
        self.stats.events.add(n as u64);
        self.stats.batches.inc();
        self.batch.clear();
        self.changes.clear();
        n
    }
}

/// The fan-out without its thread (`spawn_fanout` runs it; tests poll it by hand).
pub(crate) fn fanout(
    market: Arc<Market>,
    hub: Dispatcher,
    ring: RingConsumer<EngineEvent>,
    taps: Vec<RingProducer<EngineEvent>>,
    stats: Arc<FanoutStats>,
) -> Fanout {
    Fanout {
        market,
        hub,
        ring,
        taps,
        stats,
        batch: Vec::with_capacity(BATCH),
        changes: Vec::with_capacity(BATCH),
        transitions: Vec::with_capacity(BATCH),
    }
}

pub fn spawn_fanout(
    market: Arc<Market>,
    hub: Arc<Hub>,
    ring: RingConsumer<EngineEvent>,
    taps: Vec<RingProducer<EngineEvent>>,
    idle: IdleConfig,
    stop: Arc<AtomicBool>,
    wake: &Doorbell,
) -> Result<(ThreadHandle, Arc<FanoutStats>), AgentError> {
    let stats = Arc::new(FanoutStats::default());
    let dispatcher = Dispatcher::new(hub, Arc::clone(&market.registry));
    let agent = fanout(market, dispatcher, ring, taps, Arc::clone(&stats));
    let handle = spawn_agent(agent, AgentSpec::new("api-fanout", idle, &stop).woken_by(wake))?;
    Ok((handle, stats))
}
