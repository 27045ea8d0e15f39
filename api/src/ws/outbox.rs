//! A connection's pending private output: what the order fan-out hands a WebSocket
//! session, plus the connection-wide WebSocket counters.
//!
//! Public channels do not pass through here (they are shared per channel, see
//! [`super::hub`]). Private channels (orders, fills, positions, anomalies) are per
//! account and never dropped: a bounded FIFO per connection, and past the bound the
//! outbox is flagged so the session closes with 4008 instead of feeding a gap. The
//! order fan-out never waits for a client.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::Mutex;
use stocksblitz_engine::orders::OrderEvent;
use tokio::sync::Notify;

/// WebSocket counters, across connections.
#[derive(Debug, Default)]
pub struct WsStats {
    pub connections: AtomicU64,
    pub connections_total: AtomicU64,
    pub messages_sent: AtomicU64,
    /// Conflated (quotes, book) updates a connection never saw as such: folded into a
    /// newer state before it was ready to write (per connection).
    pub conflated: AtomicU64,
    /// Queued trade/bar messages a connection missed: it fell more than the channel's
    /// ring behind (per connection; reported to it as `missed`).
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
    /// The account's order events for its private channels: never dropped.
    private: VecDeque<OrderEvent>,
    /// The private queue filled up: the session must close the connection.
    private_overflow: bool,
}

/// Everything taken from an outbox in one go.
#[derive(Default)]
pub struct Drained {
    pub private: Vec<OrderEvent>,
    pub private_overflow: bool,
}

pub struct Outbox {
    pub id: u64,
    private_capacity: usize,
    state: Mutex<State>,
    notify: Notify,
    closed: AtomicBool,
}

impl Outbox {
    pub fn new(id: u64, private_capacity: usize) -> Self {
        Self {
            id,
            private_capacity: private_capacity.max(1),
            state: Mutex::new(State::default()),
            notify: Notify::new(),
            closed: AtomicBool::new(false),
        }
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

    /// Events this connection should have had were lost upstream (an API node's
    /// replica fell out of step with the engine): close it as an overflow would, so
    /// the client resyncs over REST instead of reading past a gap.
    pub fn break_private(&self) {
        self.state.lock().private_overflow = true;
        self.notify.notify_one();
    }

    pub fn drain(&self) -> Drained {
        let mut s = self.state.lock();
        Drained {
            private: s.private.drain(..).collect(),
            private_overflow: s.private_overflow,
        }
    }

    /// Completes when something was queued since the last wait.
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
    use stocksblitz_engine::UnixNanos;

    fn event(seq: u64) -> OrderEvent {
        OrderEvent {
            seq,
            request: 0,
            account: stocksblitz_engine::orders::AccountId(0),
            at: UnixNanos(0),
            last: true,
            data: stocksblitz_engine::orders::OrderEventData::Done { count: 0 },
        }
    }

    #[test]
    fn private_events_are_never_dropped_overflow_is_flagged() {
        let o = Outbox::new(1, 3);
        for s in 1..=3 {
            o.enqueue_private(event(s));
        }
        let d = o.drain();
        assert_eq!(d.private.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2, 3]);
        assert!(!d.private_overflow);
        for s in 4..=8 {
            o.enqueue_private(event(s));
        }
        let d = o.drain();
        assert_eq!(d.private.len(), 3, "kept in order up to the bound");
        assert!(d.private_overflow, "then the connection must be closed, not fed a gap");
    }

    proptest::proptest! {
        /// Whatever the order fan-out pushes at a connection that never drains, the
        /// outbox holds at most `private_capacity` events, in order, and flags the
        /// overflow exactly when more came.
        #[test]
        fn an_undrained_outbox_stays_bounded(private_capacity in 1usize..16, pushed in 0u64..64) {
            let o = Outbox::new(1, private_capacity);
            for s in 0..pushed {
                o.enqueue_private(event(s));
            }
            let d = o.drain();
            proptest::prop_assert_eq!(d.private.len() as u64, pushed.min(private_capacity as u64));
            proptest::prop_assert_eq!(d.private_overflow, pushed > private_capacity as u64);
            proptest::prop_assert!(d.private.windows(2).all(|w| w[0].seq < w[1].seq));
        }
    }
}
