//! The engine thread: polls every feed's input ring, updates instrument state, and
//! publishes events to the output rings. Single-threaded by design: all market state is
//! owned by this one thread, so nothing on the hot path takes a lock.
//!
//! Per tick the loop does no allocation, no locking and no system call; clock reads go
//! through the vDSO once per poll, not per tick.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::config::EngineConfig;
use crate::event::{EngineEvent, EventData};
use crate::idle::Idler;
use crate::ids::InstrumentId;
use crate::instrument::InstrumentRegistry;
use crate::instrument_state::{Emitted, InstrumentState};
use crate::orders::gateway::OrderGateway;
use crate::orders::{OrderManager, VenueKind};
use crate::publisher::{OutputKind, OutputStats, Publisher};
use crate::ring::{RingProducer, RingStats};
use crate::stats::EngineStats;
use crate::surveillance::Surveillance;
use crate::tick::{FeedStatus, Tick, TickData};
use crate::tick_ring::TickConsumer;
use crate::time::UnixNanos;

/// How often housekeeping (bar closes, staleness, resyncs) runs.
const HOUSEKEEPING_NS: i64 = UnixNanos::NANOS_PER_MILLI;

pub struct Engine {
    inputs: Vec<TickConsumer>,
    states: Vec<InstrumentState>,
    publisher: Publisher,
    stats: Arc<EngineStats>,
    emitted: Emitted,
    batch_limit: usize,
    stale_after_ns: i64,
    bar_progress_ns: i64,
    snapshot_len: usize,
    next_housekeeping: UnixNanos,
    /// The clock read once per `run` round, before polling: what published events carry
    /// as `engine_ts` (no clock read per tick). Set by [`Engine::set_clock`] when the
    /// engine is driven by hand.
    clock: UnixNanos,
    next_progress: UnixNanos,
    orders: Option<OrderPath>,
}

/// The order path when order entry is on: the manager, its queue and ring, and a
/// reusable buffer for the internal venue's market data.
struct OrderPath {
    manager: OrderManager,
    gateway: OrderGateway,
    scratch: Vec<Tick>,
    /// Surveillance, when configured: it watches the order path's events and the
    /// market events, and hands anomalies to the manager.
    surveillance: Option<Surveillance>,
}

/// Counters a metrics endpoint reads while the engine runs.
#[derive(Clone)]
pub struct EngineHandles {
    pub stats: Arc<EngineStats>,
    pub inputs: Vec<Arc<RingStats>>,
    pub outputs: Vec<(Arc<RingStats>, Arc<OutputStats>)>,
    /// The order path's counters and its event ring, when order entry is on.
    pub orders: Option<(Arc<crate::orders::gateway::GatewayStats>, Arc<RingStats>)>,
}

impl Engine {
    /// An engine for `instruments` instruments reading `inputs` and publishing to
    /// `outputs`. All per-instrument memory is allocated here.
    pub fn new(
        config: &EngineConfig,
        instruments: usize,
        inputs: Vec<TickConsumer>,
        outputs: Vec<RingProducer<EngineEvent>>,
    ) -> Self {
        let ms = |v: u64| {
            i64::try_from(v)
                .unwrap_or(i64::MAX)
                .saturating_mul(UnixNanos::NANOS_PER_MILLI)
        };
        let grace = ms(config.bar_grace_ms);
        let states = (0..instruments)
            .map(|i| InstrumentState::new(InstrumentId(i as u32), config.book_max_levels, grace))
            .collect();
        Self {
            inputs,
            states,
            publisher: Publisher::new(outputs, instruments),
            stats: Arc::new(EngineStats::default()),
            emitted: Emitted::default(),
            batch_limit: config.batch_limit.max(1),
            stale_after_ns: ms(config.stale_after_ms),
            bar_progress_ns: ms(config.bar_progress_ms),
            snapshot_len: InstrumentState::snapshot_len(config.book_max_levels),
            next_housekeeping: UnixNanos(i64::MIN),
            clock: UnixNanos::UNKNOWN,
            next_progress: UnixNanos(i64::MIN),
            orders: None,
        }
    }

    /// One more output ring, of `kind` (call before anything is published: before
    /// [`with_market`](Self::with_market)).
    pub fn with_output(mut self, ring: RingProducer<EngineEvent>, kind: OutputKind) -> Self {
        self.publisher.add(ring, kind, self.states.len());
        self
    }

    /// Applies each instrument's trading session (out of session its state is CLOSED,
    /// never LIVE or STALE) and marks the instruments no feed delivers (`fed` lacks
    /// them): silence never makes those STALE.
    pub fn with_market(mut self, registry: &InstrumentRegistry, fed: &[InstrumentId], now: UnixNanos) -> Self {
        for inst in registry.iter() {
            let id = inst.id;
            if let Some(st) = self.states.get_mut(id.index()) {
                st.set_session(inst.session.clone(), now, &mut self.emitted);
                if !fed.contains(&id) {
                    st.set_feedless(&mut self.emitted);
                }
            }
            self.flush(id, UnixNanos::UNKNOWN, now);
        }
        self
    }

    /// Turns order entry on. Internal-venue instruments have no feed: their market
    /// data is the engine's own, live from the start and never STALE for silence.
    pub fn with_orders(mut self, mut manager: OrderManager, gateway: OrderGateway, now: UnixNanos) -> Self {
        // A recovered manager's positions are marked again from its references, and
        // every instrument's data quality is the engine's (SYNCING until its feed is).
        manager.revalue_all();
        for state in &self.states {
            manager.set_quality(state.id, state.quality());
        }
        let internal: Vec<InstrumentId> = (0..self.states.len())
            .map(|i| InstrumentId(i as u32))
            .filter(|&id| manager.rules(id).is_some_and(|r| r.venue == VenueKind::Internal))
            .collect();
        self.orders = Some(OrderPath {
            manager,
            gateway,
            scratch: Vec::with_capacity(16_384),
            surveillance: None,
        });
        for id in internal {
            if let Some(st) = self.states.get_mut(id.index()) {
                st.set_feedless(&mut self.emitted);
            }
            self.flush(id, UnixNanos::UNKNOWN, now);
            self.process(&Tick {
                exchange_ts: UnixNanos::UNKNOWN,
                recv_ts: now,
                instrument: id,
                data: TickData::Status {
                    status: FeedStatus::Live,
                    detail: 0,
                },
            });
        }
        // A recovered manager may hold internal-venue orders: their book goes out now.
        self.after_orders();
        self
    }

    /// Turns surveillance on (after [`with_orders`](Self::with_orders): its actions are
    /// order-path steps).
    pub fn with_surveillance(mut self, mut surveillance: Surveillance) -> Self {
        surveillance.set_stale_after(self.stale_after_ns);
        if let Some(op) = self.orders.as_mut() {
            op.surveillance = Some(surveillance);
        }
        self
    }

    pub fn order_manager(&self) -> Option<&OrderManager> {
        self.orders.as_ref().map(|o| &o.manager)
    }

    /// Sends the order path's events and runs the internal venue's market data through
    /// the books, until a step produces nothing more.
    fn after_orders(&mut self) {
        loop {
            let Some(op) = self.orders.as_mut() else { return };
            op.gateway.send(op.manager.steps(), op.manager.events());
            if let Some(surv) = op.surveillance.as_mut() {
                surv.observe_orders(&op.manager, op.manager.events());
            }
            op.scratch.clear();
            op.scratch.extend_from_slice(op.manager.ticks());
            op.manager.clear();
            // Anomalies found so far become steps of their own (event + action).
            if let Some(surv) = op.surveillance.as_mut().filter(|s| s.has_pending()) {
                let manager = &mut op.manager;
                surv.take_pending(|a| manager.apply_anomaly(a));
            }
            // Their events (and any book ticks from cancels) go out on the next turn.
            let more = !op.manager.events().is_empty();
            if op.scratch.is_empty() && !more {
                return;
            }
            // Moved out and back: the buffer keeps its allocation.
            let ticks = std::mem::take(&mut op.scratch);
            for t in &ticks {
                self.process_market(t);
            }
            if let Some(op) = self.orders.as_mut() {
                op.scratch = ticks;
            }
        }
    }

    /// Takes up to `batch_limit` commands from the API.
    fn poll_orders(&mut self) -> usize {
        let mut n = 0;
        while n < self.batch_limit {
            let Some(op) = self.orders.as_mut() else { break };
            let Some(cmd) = op.gateway.next_command() else { break };
            if let Some(surv) = op.surveillance.as_mut() {
                surv.observe_command(&cmd);
            }
            // A paper order sweeps the instrument's visible book (the engine's L2).
            let book = match op.manager.depth_side(&cmd) {
                Some((instrument, side)) => self
                    .states
                    .get(instrument.index())
                    .map_or(&[][..], |s| s.book.side(side)),
                None => &[],
            };
            // Start the next command's likely cache misses now; they overlap this one.
            if let Some(next) = op.gateway.peek_command() {
                op.manager.prefetch(next);
            }
            op.manager.handle_with_depth(&cmd, book);
            self.after_orders();
            n += 1;
        }
        n
    }

    pub fn handles(&self) -> EngineHandles {
        EngineHandles {
            stats: Arc::clone(&self.stats),
            inputs: self.inputs.iter().map(|c| Arc::clone(c.stats())).collect(),
            outputs: self.publisher.stats(),
            orders: self
                .orders
                .as_ref()
                .map(|o| (Arc::clone(o.gateway.stats()), Arc::clone(o.gateway.ring_stats()))),
        }
    }

    pub fn state(&self, id: InstrumentId) -> Option<&InstrumentState> {
        self.states.get(id.index())
    }

    /// Publishes what the last transition emitted, stamped with the state's quality.
    #[inline]
    fn flush(&mut self, id: InstrumentId, exchange_ts: UnixNanos, recv_ts: UnixNanos) {
        let Some(state) = self.states.get(id.index()) else {
            return;
        };
        let quality = state.quality();
        if let Some(op) = self.orders.as_mut() {
            // The order path sees the market the engine publishes: quality, BBO and
            // trades.
            op.manager.set_quality(id, quality);
            for data in self.emitted.as_slice() {
                match *data {
                    EventData::Quote {
                        bid,
                        bid_qty,
                        ask,
                        ask_qty,
                    } => op.manager.on_quote(id, bid, bid_qty, ask, ask_qty, recv_ts),
                    EventData::Trade {
                        price, qty, trade_id, ..
                    } => op.manager.on_trade(id, price, qty, trade_id, recv_ts),
                    _ => {}
                }
            }
        }
        if let Some(surv) = self.orders.as_mut().and_then(|op| op.surveillance.as_mut()) {
            for data in self.emitted.as_slice() {
                surv.observe_market(id, quality, data, recv_ts);
            }
        }
        for data in self.emitted.as_slice() {
            let n = self.publisher.publish(EngineEvent {
                seq: 0,
                instrument: id,
                quality,
                exchange_ts,
                recv_ts,
                engine_ts: self.clock,
                data: *data,
            });
            self.stats.events.add(n);
        }
        self.emitted.clear();
    }

    /// Applies one tick and publishes its events (and any order events it causes).
    #[inline]
    pub fn process(&mut self, tick: &Tick) {
        self.process_market(tick);
        if self.orders.is_some() {
            self.after_orders();
        }
    }

    #[inline]
    fn process_market(&mut self, tick: &Tick) {
        self.stats.ticks.inc();
        let Some(state) = self.states.get_mut(tick.instrument.index()) else {
            self.stats.unknown_instrument.inc();
            return;
        };
        let outcome = state.on_tick(tick, &mut self.emitted);
        if outcome.book_discarded {
            self.stats.book_discarded.inc();
        }
        if outcome.invalid_delta {
            self.stats.invalid_deltas.inc();
        }
        if outcome.late_trade {
            self.stats.late_trades.inc();
        }
        self.flush(tick.instrument, tick.exchange_ts, tick.recv_ts);
    }

    /// Drains up to `batch_limit` ticks from each input ring. Returns ticks processed.
    pub fn poll(&mut self) -> usize {
        let mut n = 0;
        for i in 0..self.inputs.len() {
            for _ in 0..self.batch_limit {
                let Some(tick) = self.inputs.get_mut(i).and_then(TickConsumer::pop) else {
                    break;
                };
                self.process(&tick);
                n += 1;
            }
        }
        n + self.poll_orders()
    }

    /// Wakes the consumers (API fan-out, journal, ...) of whatever this round handed
    /// them, if they sleep: once per round, after its work.
    #[inline]
    pub fn wake_consumers(&mut self) {
        self.publisher.wake_consumers();
        if let Some(op) = self.orders.as_mut() {
            op.gateway.wake_consumer();
        }
    }

    /// The time events published from now on carry as `engine_ts` (what `run` does
    /// once per round).
    pub fn set_clock(&mut self, now: UnixNanos) {
        self.clock = now;
    }

    /// Time-driven work; cheap to call often, does real work once per millisecond.
    pub fn housekeeping(&mut self, now: UnixNanos) {
        if now < self.next_housekeeping {
            return;
        }
        self.next_housekeeping = now.saturating_add_nanos(HOUSEKEEPING_NS);
        self.stats.heartbeat_ns.set(now.0 as u64);
        let progress = now >= self.next_progress;
        if progress {
            self.next_progress = now.saturating_add_nanos(self.bar_progress_ns);
        }
        for i in 0..self.states.len() {
            let Some(state) = self.states.get_mut(i) else { continue };
            let id = state.id;
            state.on_timer(now, self.stale_after_ns, &mut self.emitted);
            if progress {
                state.on_progress(&mut self.emitted);
            }
            self.flush(id, UnixNanos::UNKNOWN, now);
        }
        if let Some(op) = self.orders.as_mut() {
            if let Some(surv) = &op.surveillance {
                let s = surv.stats;
                self.stats.anomalies.set(s.anomalies);
                self.stats.anomalies_suppressed.set(s.suppressed);
                self.stats.anomalies_dropped.set(s.dropped);
            }
            op.manager.on_timer(now);
            self.after_orders();
        }
        if self.publisher.resync_pending() {
            let states = &self.states;
            let sent = self.publisher.resync(self.snapshot_len, |id, push| {
                if let Some(s) = states.get(id.index()) {
                    let quality = s.quality();
                    s.snapshot(|data| {
                        push(EngineEvent {
                            seq: 0,
                            instrument: id,
                            quality,
                            exchange_ts: UnixNanos::UNKNOWN,
                            recv_ts: now,
                            engine_ts: now,
                            data,
                        })
                    });
                }
            });
            self.stats.resyncs.add(sent);
        }
    }

    /// Runs until `stop` is set: poll, housekeeping, idle when there was nothing to do.
    pub fn run(mut self, stop: &AtomicBool, mut idler: Idler) -> Self {
        while !stop.load(Ordering::Relaxed) {
            let now = UnixNanos::now();
            self.clock = now;
            let n = self.poll();
            self.housekeeping(now);
            self.wake_consumers();
            if n == 0 {
                idler.idle();
            } else {
                idler.reset();
            }
        }
        self
    }

    /// Events a consumer will get when it resyncs one instrument, for tests.
    pub fn snapshot_events(&self, id: InstrumentId) -> Vec<EventData> {
        let mut v = Vec::new();
        if let Some(s) = self.states.get(id.index()) {
            s.snapshot(|d| v.push(d));
        }
        v
    }
}
