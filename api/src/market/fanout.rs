//! The fan-out thread: drains the engine's output ring into the mirror and tells the
//! WebSocket hub what changed.
//!
//! It is a plain OS thread (not a tokio task) because it polls a lock-free ring with an
//! idle strategy, like every other ring consumer. It takes the mirror's write lock once
//! per batch, never per event, and notifies subscribers after releasing it.
//!
//! Taps: the stores that want the market data too (the QuestDB sink, the Redis
//! publisher) get every event from here, through rings of their own, so the engine
//! publishes each event once whatever is configured. A full tap drops and counts (its
//! ring's counters); the fan-out never waits for a store.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use parking_lot::RwLock;
use stocksblitz_engine::counter::Counter;
use stocksblitz_engine::idle::{IdleConfig, Idler};
use stocksblitz_engine::ring::{RingConsumer, RingProducer};
use stocksblitz_engine::{DataQuality, EngineEvent, InstrumentId, InstrumentRegistry, UnixNanos};

use super::mirror::{Change, Mirror};
use crate::ws::hub::Hub;

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

pub fn spawn_fanout(
    market: Arc<Market>,
    hub: Arc<Hub>,
    mut ring: RingConsumer<EngineEvent>,
    mut taps: Vec<RingProducer<EngineEvent>>,
    idle: IdleConfig,
    stop: Arc<AtomicBool>,
) -> std::io::Result<(JoinHandle<()>, Arc<FanoutStats>)> {
    let stats = Arc::new(FanoutStats::default());
    let st = Arc::clone(&stats);
    let handle = std::thread::Builder::new().name("api-fanout".into()).spawn(move || {
        let mut idler = Idler::new(idle);
        let mut batch: Vec<EngineEvent> = Vec::with_capacity(BATCH);
        let mut changes: Vec<(InstrumentId, Change)> = Vec::with_capacity(BATCH);
        let mut transitions: Vec<Transition> = Vec::with_capacity(BATCH);
        while !stop.load(Ordering::Relaxed) {
            st.heartbeat_ns.set(UnixNanos::now().0 as u64);
            ring.pop_batch(&mut batch, BATCH);
            if batch.is_empty() {
                idler.idle();
                continue;
            }
            idler.reset();
            {
                let mut mirror = market.mirror.write();
                for ev in &batch {
                    let from = mirror.get(ev.instrument).map(|v| v.quality());
                    let c = mirror.apply(ev);
                    if c != Change::None {
                        changes.push((ev.instrument, c));
                    }
                    let to = mirror.get(ev.instrument).map(|v| v.quality());
                    if let (Some(from), Some(to)) = (from, to) {
                        if from != to {
                            transitions.push(Transition {
                                id: ev.instrument,
                                from,
                                to,
                            });
                        }
                    }
                }
            }
            hub.dispatch(&changes);
            // Off the engine's path and outside the lock: one line per transition.
            for t in transitions.drain(..) {
                log_transition(&market, t);
            }
            for tap in &mut taps {
                for ev in &batch {
                    tap.push(*ev);
                }
            }
            st.events.add(batch.len() as u64);
            st.batches.inc();
            batch.clear();
            changes.clear();
        }
    })?;
    Ok((handle, stats))
}
