//! A connection's pending output: what the fan-out thread hands a WebSocket session.
//!
//! Conflated channels (quotes, book) are a set of dirty keys: however many updates
//! arrive while the client is slow, it gets the latest state once. Queued channels
//! (trades, bars) are a bounded FIFO: when full, the oldest item is dropped and counted,
//! and the next message on that channel reports how many were missed. Either way the
//! fan-out thread never waits for a client.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::Mutex;
use stocksblitz_engine::{Bar, BarState};
use tokio::sync::Notify;

use super::channel::ChannelKey;
use stocksblitz_engine::orders::OrderEvent;

use crate::market::TradeView;

#[derive(Debug, Clone, Copy)]
pub enum Queued {
    Trade(ChannelKey, TradeView),
    Bar(ChannelKey, Bar, BarState),
}

impl Queued {
    pub fn key(&self) -> ChannelKey {
        match self {
            Queued::Trade(k, _) | Queued::Bar(k, _, _) => *k,
        }
    }
}

/// WebSocket counters, across connections.
#[derive(Debug, Default)]
pub struct WsStats {
    pub connections: AtomicU64,
    pub connections_total: AtomicU64,
    pub messages_sent: AtomicU64,
    /// Updates folded into a pending one for a slow client.
    pub conflated: AtomicU64,
    /// Queued trade/bar messages dropped for a slow client.
    pub dropped: AtomicU64,
    pub client_errors: AtomicU64,
    /// Closed with 4009: a write did not complete within `ws_write_timeout_ms`.
    pub closed_slow_consumer: AtomicU64,
    /// Closed with 4008: private messages could not all be queued.
    pub closed_private_overflow: AtomicU64,
    /// Closed with 1009: a client frame or message over the size limit.
    pub closed_too_big: AtomicU64,
    /// Closed with 1001: nothing heard for `ws_idle_timeout_secs`.
    pub closed_idle: AtomicU64,
}

#[derive(Default)]
struct State {
    dirty: HashSet<ChannelKey>,
    queue: VecDeque<Queued>,
    missed: HashMap<ChannelKey, u64>,
    /// The account's order events for its private channels: never dropped.
    private: VecDeque<OrderEvent>,
    /// The private queue filled up: the session must close the connection.
    private_overflow: bool,
}

/// Everything taken from an outbox in one go.
#[derive(Default)]
pub struct Drained {
    pub dirty: Vec<ChannelKey>,
    pub queue: Vec<Queued>,
    pub missed: HashMap<ChannelKey, u64>,
    pub private: Vec<OrderEvent>,
    pub private_overflow: bool,
}

pub struct Outbox {
    pub id: u64,
    capacity: usize,
    private_capacity: usize,
    state: Mutex<State>,
    notify: Notify,
    closed: AtomicBool,
}

impl Outbox {
    pub fn new(id: u64, capacity: usize, private_capacity: usize) -> Self {
        Self {
            id,
            capacity: capacity.max(1),
            private_capacity: private_capacity.max(1),
            state: Mutex::new(State::default()),
            notify: Notify::new(),
            closed: AtomicBool::new(false),
        }
    }

    /// A conflated channel changed.
    pub fn mark(&self, key: ChannelKey, stats: &WsStats) {
        if !self.state.lock().dirty.insert(key) {
            stats.conflated.fetch_add(1, Ordering::Relaxed);
        }
        self.notify.notify_one();
    }

    /// A queued channel has a new item.
    pub fn enqueue(&self, item: Queued, stats: &WsStats) {
        {
            let mut s = self.state.lock();
            if s.queue.len() >= self.capacity {
                if let Some(old) = s.queue.pop_front() {
                    *s.missed.entry(old.key()).or_default() += 1;
                    stats.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
            s.queue.push_back(item);
        }
        self.notify.notify_one();
    }

    /// An order event for this connection's account. Never dropped: past the bound the
    /// outbox is marked overflowed (and stops taking more), and the session closes.
    pub fn enqueue_private(&self, e: OrderEvent) {
        {
            let mut s = self.state.lock();
            if s.private_overflow {
                return;
            }
            if s.private.len() >= self.private_capacity {
                s.private_overflow = true;
            } else {
                s.private.push_back(e);
            }
        }
        self.notify.notify_one();
    }

    pub fn drain(&self) -> Drained {
        let mut s = self.state.lock();
        Drained {
            dirty: s.dirty.drain().collect(),
            queue: s.queue.drain(..).collect(),
            missed: std::mem::take(&mut s.missed),
            private: s.private.drain(..).collect(),
            private_overflow: s.private_overflow,
        }
    }

    /// Completes when something was marked or queued since the last wait.
    pub async fn ready(&self) {
        self.notify.notified().await;
    }

    pub fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ws::channel::ChannelKind;
    use stocksblitz_engine::{Aggressor, InstrumentId, Price, Qty, UnixNanos};

    fn key(kind: ChannelKind) -> ChannelKey {
        ChannelKey {
            kind,
            instrument: InstrumentId(0),
        }
    }

    fn trade(seq: u64) -> Queued {
        Queued::Trade(
            key(ChannelKind::Trades),
            TradeView {
                seq,
                price: Price(1),
                qty: Qty(1),
                trade_id: seq,
                aggressor: Aggressor::Buy,
                exchange_ts: UnixNanos::UNKNOWN,
                recv_ts: UnixNanos(0),
            },
        )
    }

    #[test]
    fn conflates_marks_and_bounds_the_queue() {
        let stats = WsStats::default();
        let o = Outbox::new(1, 2, 2);
        for _ in 0..5 {
            o.mark(key(ChannelKind::Quotes), &stats);
        }
        for s in 1..=5 {
            o.enqueue(trade(s), &stats);
        }
        let d = o.drain();
        assert_eq!(d.dirty, vec![key(ChannelKind::Quotes)]);
        assert_eq!(stats.conflated.load(Ordering::Relaxed), 4);
        let seqs: Vec<u64> = d
            .queue
            .iter()
            .map(|q| match q {
                Queued::Trade(_, t) => t.seq,
                Queued::Bar(..) => 0,
            })
            .collect();
        assert_eq!(seqs, vec![4, 5]);
        assert_eq!(d.missed.get(&key(ChannelKind::Trades)), Some(&3));
        assert!(o.drain().queue.is_empty());
    }

    #[test]
    fn private_events_are_never_dropped_overflow_is_flagged() {
        let o = Outbox::new(1, 2, 3);
        let e = |seq| stocksblitz_engine::orders::OrderEvent {
            seq,
            request: 0,
            account: stocksblitz_engine::orders::AccountId(0),
            at: UnixNanos(0),
            last: true,
            data: stocksblitz_engine::orders::OrderEventData::Done { count: 0 },
        };
        for s in 1..=3 {
            o.enqueue_private(e(s));
        }
        let d = o.drain();
        assert_eq!(d.private.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2, 3]);
        assert!(!d.private_overflow);
        for s in 4..=8 {
            o.enqueue_private(e(s));
        }
        let d = o.drain();
        assert_eq!(d.private.len(), 3, "kept in order up to the bound");
        assert!(d.private_overflow, "then the connection must be closed, not fed a gap");
    }

    proptest::proptest! {
        /// Whatever a fan-out pushes at a connection that never drains, the outbox holds
        /// at most one entry per marked channel, `capacity` queued items and
        /// `private_capacity` private events; every dropped item is counted and reported
        /// as missed, and private events are kept in order up to the overflow flag.
        #[test]
        fn an_undrained_outbox_stays_bounded(
            capacity in 1usize..16,
            private_capacity in 1usize..16,
            ops in proptest::collection::vec((0u8..3, 0u32..4), 0..400),
        ) {
            let stats = WsStats::default();
            let o = Outbox::new(1, capacity, private_capacity);
            let (mut queued, mut private, mut marked) = (0u64, 0u64, HashSet::new());
            for (i, (op, inst)) in ops.iter().enumerate() {
                let k = ChannelKey { kind: ChannelKind::Quotes, instrument: InstrumentId(*inst) };
                match op {
                    0 => { o.mark(k, &stats); marked.insert(k); }
                    1 => { o.enqueue(trade(i as u64), &stats); queued += 1; }
                    _ => {
                        o.enqueue_private(stocksblitz_engine::orders::OrderEvent {
                            seq: i as u64,
                            request: 0,
                            account: stocksblitz_engine::orders::AccountId(0),
                            at: UnixNanos(0),
                            last: true,
                            data: stocksblitz_engine::orders::OrderEventData::Done { count: 0 },
                        });
                        private += 1;
                    }
                }
            }
            let d = o.drain();
            proptest::prop_assert_eq!(d.dirty.len(), marked.len());
            proptest::prop_assert_eq!(d.queue.len() as u64, queued.min(capacity as u64));
            let dropped = queued - d.queue.len() as u64;
            proptest::prop_assert_eq!(stats.dropped.load(Ordering::Relaxed), dropped);
            proptest::prop_assert_eq!(d.missed.values().sum::<u64>(), dropped);
            proptest::prop_assert_eq!(d.private.len() as u64, private.min(private_capacity as u64));
            proptest::prop_assert_eq!(d.private_overflow, private > private_capacity as u64);
            proptest::prop_assert!(d.private.windows(2).all(|w| w[0].seq < w[1].seq));
        }
    }
}
