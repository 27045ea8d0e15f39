//! The fan-out thread: drains the engine's output ring into the mirror and tells the
//! WebSocket hub what changed.
//!
//! It is a plain OS thread (not a tokio task) because it polls a lock-free ring with an
//! idle strategy, like every other ring consumer. It takes the mirror's write lock once
//! per batch, never per event, and notifies subscribers after releasing it.
//!
//! Taps: the stores that want the market data too (the QuestDB sink, the Redis
//! publisher) get every event from here, through rings of their own, so the engine
//! publishes each event once whatever is configured. The fan-out never waits for a
//! store. A lossy tap (Redis: conflated market data) drops and counts on a full ring
//! (its ring's counters). A lossless tap (the QuestDB store: nothing is lost) gets only
//! the events it stores, counts them per table (the store's `emitted` rows), and keeps
//! what its ring has no room for in a backlog here, handed over in order as the ring
//! frees up: its consumer drains promptly (it never waits on the network), so the
//! backlog only grows while that thread is starved of CPU.
//!
//! The lossless tap also watches the engine's per-instrument sequence: a gap means the
//! engine's API output ring was full and events never reached the fan-out (the engine
//! never waits either); it is counted (`upstream_missed`) and reported, as the store
//! cannot have those rows.
//!
//! At stop, the fan-out drains the engine's ring until the engine has gone (so the
//! events it published last still reach the stores), then hands over its backlogs.

use std::collections::VecDeque;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::RwLock;
use stocksblitz_engine::agent::{spawn_agent, Agent, AgentError, AgentSpec, ThreadHandle};
use stocksblitz_engine::counter::Counter;
use stocksblitz_engine::idle::IdleConfig;
use stocksblitz_engine::ring::{RingConsumer, RingProducer};
use stocksblitz_engine::{DataQuality, EngineEvent, InstrumentId, InstrumentRegistry, UnixNanos};

use super::mirror::{Change, Mirror};
use crate::sink::row::Table;
use crate::sink::SinkStats;
use crate::ws::hub::Hub;

/// Events taken from the ring per batch (one write lock each).
const BATCH: usize = 4096;
/// At stop: how long the fan-out waits for the engine to go, and for its lossless taps
/// to take their backlogs.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// A store's ring off the fan-out.
pub struct Tap {
    ring: RingProducer<EngineEvent>,
    lossless: Option<Lossless>,
}

struct Lossless {
    /// Events the ring had no room for, oldest first.
    backlog: VecDeque<EngineEvent>,
    /// The last engine sequence seen per instrument: a gap is events the engine
    /// published that never reached the fan-out (its output ring was full).
    last_seq: Vec<u64>,
    stats: Arc<SinkStats>,
    /// Per-table counts of this batch (added to `stats.emitted` once per batch).
    counts: [u64; 6],
}

impl Tap {
    /// Every event; a full ring drops and counts.
    pub fn lossy(ring: RingProducer<EngineEvent>) -> Self {
        Self { ring, lossless: None }
    }

    /// The events the QuestDB store keeps ([`Table::of_market`]), none dropped while
    /// its consumer lives; counted in `stats.emitted`.
    pub fn lossless(ring: RingProducer<EngineEvent>, stats: Arc<SinkStats>) -> Self {
        Self {
            ring,
            lossless: Some(Lossless {
                backlog: VecDeque::new(),
                last_seq: Vec::new(),
                stats,
                counts: [0; 6],
            }),
        }
    }

    pub fn ring_stats(&self) -> &Arc<stocksblitz_engine::ring::RingStats> {
        self.ring.stats()
    }

    /// Hands over a batch of events.
    fn offer(&mut self, batch: &[EngineEvent]) {
        let Some(l) = self.lossless.as_mut() else {
            for ev in batch {
                self.ring.push(*ev);
            }
            return;
        };
        let (mut missed, mut lost) = (0, 0);
        // The store's thread is gone: nothing will ever take what is pushed.
        let gone = self.ring.is_abandoned();
        for ev in batch {
            let i = ev.instrument.index();
            if i >= l.last_seq.len() {
                l.last_seq.resize(i + 1, 0);
            }
            if let Some(last) = l.last_seq.get_mut(i) {
                missed += ev.seq.saturating_sub(*last + 1);
                *last = ev.seq;
            }
            let Some(table) = Table::of_market(ev) else { continue };
            if let Some(c) = l.counts.get_mut(table.index()) {
                *c += 1;
            }
            if gone {
                lost += 1;
            } else if l.backlog.is_empty() && self.ring.free_slots() > 0 {
                self.ring.push(*ev);
            } else {
                l.backlog.push_back(*ev);
            }
        }
        if lost > 0 {
            l.stats.lost.add(lost);
            tracing::error!(lost, "questdb sink: ROWS LOST: the sink's thread is gone");
        }
        if missed > 0 {
            l.stats.upstream_missed.add(missed);
            tracing::error!(
                missed,
                "api fan-out: events the engine published never arrived (its output ring was full); the store misses any rows among them"
            );
        }
        for (i, c) in l.counts.iter_mut().enumerate() {
            if *c > 0 {
                if let Some(e) = l.stats.emitted.get(i) {
                    e.add(*c);
                }
                *c = 0;
            }
        }
        self.flush();
    }

    /// Moves what the ring has room for out of the backlog. Returns the events left.
    fn flush(&mut self) -> usize {
        let Some(l) = self.lossless.as_mut() else { return 0 };
        if l.backlog.is_empty() {
            return 0;
        }
        if self.ring.is_abandoned() {
            // The store's thread is gone: nothing will ever take these.
            let n = l.backlog.len() as u64;
            l.backlog.clear();
            l.stats.lost.add(n);
            l.stats.tap_backlog.set(0);
            tracing::error!(lost = n, "questdb sink: ROWS LOST: the sink's thread is gone");
            return 0;
        }
        let room = self.ring.free_slots();
        for ev in l.backlog.drain(..room.min(l.backlog.len())) {
            self.ring.push(ev);
        }
        l.stats.tap_backlog.set(l.backlog.len() as u64);
        l.backlog.len()
    }
}

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
struct Fanout {
    market: Arc<Market>,
    hub: Arc<Hub>,
    ring: RingConsumer<EngineEvent>,
    taps: Vec<Tap>,
    stats: Arc<FanoutStats>,
    batch: Vec<EngineEvent>,
    changes: Vec<(InstrumentId, Change)>,
    transitions: Vec<Transition>,
    /// At stop: when the fan-out gives up waiting for the engine and its taps.
    deadline: Option<Instant>,
    lossless: bool,
}

impl Agent for Fanout {
    fn name(&self) -> &str {
        "api-fanout"
    }

    fn poll(&mut self) -> usize {
        self.stats.heartbeat_ns.set(UnixNanos::now().0 as u64);
        self.ring.pop_batch(&mut self.batch, BATCH);
        if self.batch.is_empty() {
            for tap in &mut self.taps {
                tap.flush();
            }
            return 0;
        }
        {
            let mut mirror = self.market.mirror.write();
            for ev in &self.batch {
                let from = mirror.get(ev.instrument).map(|v| v.quality());
                let c = mirror.apply(ev);
                if c != Change::None {
                    self.changes.push((ev.instrument, c));
                }
                let to = mirror.get(ev.instrument).map(|v| v.quality());
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
        self.hub.dispatch(&self.changes);
        // Off the engine's path and outside the lock: one line per transition.
        for t in self.transitions.drain(..) {
            log_transition(&self.market, t);
        }
        for tap in &mut self.taps {
            tap.offer(&self.batch);
        }
        let n = self.batch.len();
        self.stats.events.add(n as u64);
        self.stats.batches.inc();
        self.batch.clear();
        self.changes.clear();
        n
    }

    /// With a lossless tap: drain until the engine has gone, then hand over the
    /// backlogs.
    fn ready_to_stop(&mut self) -> bool {
        let until = *self.deadline.get_or_insert_with(|| Instant::now() + STOP_GRACE);
        let engine_gone = self.ring.is_abandoned() && self.ring.is_empty();
        if self.lossless && !engine_gone && Instant::now() < until {
            return false;
        }
        let mut left: usize = self.taps.iter_mut().map(Tap::flush).sum();
        while left > 0 && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(1));
            left = self.taps.iter_mut().map(Tap::flush).sum();
        }
        if left > 0 {
            tracing::error!(
                events = left,
                "api fan-out: a store's tap did not take its backlog at stop"
            );
        }
        true
    }
}

pub fn spawn_fanout(
    market: Arc<Market>,
    hub: Arc<Hub>,
    ring: RingConsumer<EngineEvent>,
    taps: Vec<Tap>,
    idle: IdleConfig,
    stop: Arc<AtomicBool>,
) -> Result<(ThreadHandle, Arc<FanoutStats>), AgentError> {
    let stats = Arc::new(FanoutStats::default());
    let lossless = taps.iter().any(|t| t.lossless.is_some());
    let agent = Fanout {
        market,
        hub,
        ring,
        taps,
        stats: Arc::clone(&stats),
        batch: Vec::with_capacity(BATCH),
        changes: Vec::with_capacity(BATCH),
        transitions: Vec::with_capacity(BATCH),
        deadline: None,
        lossless,
    };
    let handle = spawn_agent(agent, AgentSpec::new("api-fanout", idle, &stop))?;
    Ok((handle, stats))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use stocksblitz_engine::ring::ring;
    use stocksblitz_engine::{Aggressor, DataQuality, EventData, Price, Qty, Side};

    fn event(seq: u64, kind: u8) -> EngineEvent {
        let data = match kind {
            0 => EventData::Trade {
                price: Price(100),
                qty: Qty(1),
                trade_id: seq,
                aggressor: Aggressor::Buy,
            },
            1 => EventData::Quote {
                bid: Price(99),
                bid_qty: Qty(1),
                ask: Price(101),
                ask_qty: Qty(1),
            },
            _ => EventData::Book {
                side: Side::Buy,
                price: Price(99),
                qty: Qty(1),
                flags: Default::default(),
            },
        };
        EngineEvent {
            seq,
            instrument: InstrumentId(0),
            quality: DataQuality::Live,
            exchange_ts: UnixNanos(1),
            recv_ts: UnixNanos(1),
            data,
        }
    }

    proptest! {
        /// Whatever the ring's size and however slowly its consumer takes, a lossless
        /// tap hands over exactly the stored events, in order, none dropped, each
        /// counted once per table; the fan-out never waits (every offer returns).
        #[test]
        fn a_lossless_tap_hands_over_every_stored_event_in_order(
            capacity in 1usize..16,
            steps in proptest::collection::vec((proptest::collection::vec(0u8..3, 0..20), 0usize..20), 1..40),
        ) {
            let stats = Arc::new(SinkStats::default());
            let (p, mut c) = ring::<EngineEvent>("questdb", capacity);
            let mut tap = Tap::lossless(p, Arc::clone(&stats));
            let (mut seq, mut want, mut got) = (0u64, Vec::new(), Vec::new());
            for (kinds, pops) in &steps {
                let batch: Vec<EngineEvent> = kinds
                    .iter()
                    .map(|k| {
                        seq += 1;
                        event(seq, *k)
                    })
                    .collect();
                want.extend(batch.iter().filter(|e| Table::of_market(e).is_some()).map(|e| e.seq));
                tap.offer(&batch);
                for _ in 0..*pops {
                    if let Some(e) = c.pop() {
                        got.push(e.seq);
                    }
                }
                tap.flush();
            }
            loop {
                tap.flush();
                match c.pop() {
                    Some(e) => got.push(e.seq),
                    None if stats.tap_backlog.get() == 0 => break,
                    None => {}
                }
            }
            prop_assert_eq!(&got, &want);
            prop_assert_eq!(c.stats().dropped.get(), 0);
            let counted = stats.emitted(Table::Trades) + stats.emitted(Table::Quotes);
            prop_assert_eq!(counted, want.len() as u64);
            prop_assert_eq!(stats.lost.get(), 0);
        }
    }

    #[test]
    fn events_that_never_reached_the_fan_out_are_counted() {
        let stats = Arc::new(SinkStats::default());
        let (p, _c) = ring::<EngineEvent>("questdb", 64);
        let mut tap = Tap::lossless(p, Arc::clone(&stats));
        let mut other = event(1, 2);
        other.instrument = InstrumentId(3);
        tap.offer(&[event(1, 0), event(2, 2), other, event(5, 1)]);
        assert_eq!(stats.upstream_missed.get(), 2, "3 and 4 of instrument 0");
        let mut next = event(9, 2);
        next.instrument = InstrumentId(3);
        tap.offer(&[event(6, 0), next]);
        assert_eq!(stats.upstream_missed.get(), 9, "and 2..=8 of instrument 3");
        assert!(!stats.healthy());
    }

    #[test]
    fn a_backlog_its_consumer_will_never_take_is_counted_lost() {
        let stats = Arc::new(SinkStats::default());
        let (p, c) = ring::<EngineEvent>("questdb", 2);
        let mut tap = Tap::lossless(p, Arc::clone(&stats));
        tap.offer(&(1..=5).map(|s| event(s, 0)).collect::<Vec<_>>());
        assert_eq!(stats.tap_backlog.get(), 3);
        drop(c);
        tap.flush();
        assert_eq!((stats.lost.get(), stats.tap_backlog.get()), (3, 0));
        // And what comes after.
        tap.offer(&(6..=7).map(|s| event(s, 1)).collect::<Vec<_>>());
        assert_eq!(stats.lost.get(), 5);
        assert_eq!(stats.emitted(Table::Quotes), 2, "still counted as emitted");
    }

    #[test]
    fn a_lossy_tap_takes_every_event_and_drops_on_a_full_ring() {
        let (p, mut c) = ring::<EngineEvent>("redis", 2);
        let mut tap = Tap::lossy(p);
        tap.offer(&[event(1, 2), event(2, 0), event(3, 1)]);
        assert_eq!(c.pop().map(|e| e.seq), Some(1), "book deltas too");
        assert_eq!(c.pop().map(|e| e.seq), Some(2));
        assert!(c.pop().is_none());
        assert_eq!(c.stats().dropped.get(), 1);
    }
}
