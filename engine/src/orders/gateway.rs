//! The order path's two ends at the engine thread: commands in through a bounded
//! lock-free MPMC queue (many API tasks push, the engine pops), steps and their events
//! out through an SPSC ring to the journal thread (which makes them durable before
//! anyone sees them).
//!
//! Order events are never dropped. When the ring is full, events wait in a backlog
//! (allocated once, sized for the worst step) and the engine stops taking commands
//! until the backlog has drained: back-pressure lands on the API's queue, whose
//! callers get a clear "engine busy" error, instead of anything being lost.
//!
//! Commands are taken from the queue one ahead of the one handed to the engine, so the
//! engine can start the next command's cache misses (`OrderManager::prefetch`) while
//! it handles the current one; order and exactly-once are unchanged (property test).

use std::collections::VecDeque;
use std::sync::Arc;

use crossbeam_queue::ArrayQueue;

use crate::counter::Counter;
use crate::doorbell::Doorbell;
use crate::ring::RingProducer;

use super::command::Command;
use super::event::OrderEvent;
use super::step::Step;

/// What the engine hands the journal: each step, followed by its events.
// A step carries its context (up to SWEEP_LEVELS depth levels) by value: the ring
// holds fixed-size `Copy` items, so boxing it is not an option.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum OrderOutput {
    Step(Step),
    Event(OrderEvent),
}

/// The API's handle: push commands; a full queue is the caller's error to report.
/// Clones share the queue.
#[derive(Clone)]
pub struct CommandQueue {
    queue: Arc<ArrayQueue<Command>>,
    /// The engine thread's doorbell, rung after each push.
    wake: Option<Doorbell>,
}

pub fn command_queue(capacity: usize) -> CommandQueue {
    CommandQueue {
        queue: Arc::new(ArrayQueue::new(capacity.max(1))),
        wake: None,
    }
}

impl CommandQueue {
    /// Wakes the engine through `bell` after each push (see [`Doorbell`]).
    pub fn waking(mut self, bell: &Doorbell) -> Self {
        self.wake = Some(bell.clone());
        self
    }

    /// Queues `cmd` for the engine; a full queue hands it back.
    // Handed back by value, as `ArrayQueue::push` does: boxing would allocate per command.
    #[allow(clippy::result_large_err)]
    pub fn push(&self, cmd: Command) -> Result<(), Command> {
        self.queue.push(cmd)?;
        if let Some(bell) = &self.wake {
            bell.ring();
        }
        Ok(())
    }

    /// The oldest command (the engine's side).
    pub fn pop(&self) -> Option<Command> {
        self.queue.pop()
    }

    /// Commands waiting.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

/// Counters for /metrics.
#[derive(Debug, Default)]
pub struct GatewayStats {
    pub commands: Counter,
    pub events: Counter,
    /// Events that waited in the backlog because the ring was full.
    pub backlogged: Counter,
    /// Current backlog length.
    pub backlog: Counter,
}

pub struct OrderGateway {
    commands: CommandQueue,
    /// The command after the one last returned, already taken from the queue.
    ahead: Option<Command>,
    out: RingProducer<OrderOutput>,
    backlog: VecDeque<OrderOutput>,
    stats: Arc<GatewayStats>,
}

impl OrderGateway {
    pub fn new(commands: CommandQueue, out: RingProducer<OrderOutput>, backlog: usize) -> Self {
        Self {
            commands,
            ahead: None,
            out,
            backlog: VecDeque::with_capacity(backlog),
            stats: Arc::new(GatewayStats::default()),
        }
    }

    pub fn stats(&self) -> &Arc<GatewayStats> {
        &self.stats
    }

    /// The event ring's counters.
    pub fn ring_stats(&self) -> &Arc<crate::ring::RingStats> {
        self.out.stats()
    }

    /// Rings the journal thread's doorbell if steps went out since the last call.
    #[inline]
    pub fn wake_consumer(&mut self) {
        self.out.wake_consumer();
    }

    /// The next command, unless events are still waiting to go out.
    pub fn next_command(&mut self) -> Option<Command> {
        if !self.flush_backlog() {
            return None;
        }
        let c = self.ahead.take().or_else(|| self.commands.pop())?;
        // Taken one ahead (the queue has no peek) so the engine can hint it.
        self.ahead = self.commands.pop();
        self.stats.commands.inc();
        Some(c)
    }

    /// The command after the one [`next_command`](Self::next_command) returned, if one
    /// was waiting (the queue has no peek, so it is taken one ahead and held here; for
    /// [`OrderManager::prefetch`]).
    ///
    /// [`OrderManager::prefetch`]: super::OrderManager::prefetch
    #[inline]
    pub fn peek_command(&self) -> Option<&Command> {
        self.ahead.as_ref()
    }

    /// Sends what the backlog holds; true when it is empty.
    pub fn flush_backlog(&mut self) -> bool {
        while let Some(e) = self.backlog.front().copied() {
            if self.out.free_slots() == 0 || !self.out.push(e) {
                break;
            }
            self.backlog.pop_front();
        }
        self.stats.backlog.set(self.backlog.len() as u64);
        self.backlog.is_empty()
    }

    /// Hands steps and their events to the ring, in order; whatever does not fit waits
    /// in the backlog.
    pub fn send(&mut self, steps: &[Step], events: &[OrderEvent]) {
        self.flush_backlog();
        let mut next = 0;
        for step in steps {
            self.push(OrderOutput::Step(*step));
            let end = next + step.events as usize;
            for e in events.get(next..end).unwrap_or(&[]) {
                self.stats.events.inc();
                self.push(OrderOutput::Event(*e));
            }
            next = end;
        }
        self.stats.backlog.set(self.backlog.len() as u64);
    }

    fn push(&mut self, item: OrderOutput) {
        if self.backlog.is_empty() && self.out.free_slots() > 0 && self.out.push(item) {
            return;
        }
        self.stats.backlogged.inc();
        self.backlog.push_back(item);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::orders::{AccountId, CommandKind};
    use crate::ring::ring;
    use crate::time::UnixNanos;
    use proptest::prelude::*;

    fn command(request: u64) -> Command {
        Command {
            request,
            account: AccountId(1),
            at: UnixNanos(0),
            kind: CommandKind::QueryRisk,
            idempotency: None,
        }
    }

    proptest! {
        /// Taking one command ahead (for the prefetch hint) neither loses, repeats nor
        /// reorders commands, whatever the interleaving of pushes and takes, and the
        /// peeked command is always the next one taken.
        #[test]
        fn commands_come_out_once_in_order_and_the_peek_is_the_next(
            ops in proptest::collection::vec(prop_oneof![(1usize..6).prop_map(Some), Just(None)], 1..200),
        ) {
            let queue = command_queue(4);
            let (out, _events) = ring("orders", 16);
            let mut gateway = OrderGateway::new(queue.clone(), out, 16);
            let (mut pushed, mut taken) = (Vec::new(), Vec::new());
            let mut next = 0u64;
            let mut peeked: Option<u64> = None;
            for op in ops {
                match op {
                    Some(n) => {
                        for _ in 0..n {
                            // A full queue refuses (the API reports it); nothing else.
                            if queue.push(command(next)).is_ok() {
                                pushed.push(next);
                            }
                            next += 1;
                        }
                    }
                    None => {
                        let got = gateway.next_command().map(|c| c.request);
                        if let (Some(p), Some(g)) = (peeked, got) {
                            prop_assert_eq!(p, g, "the peeked command was not the next one");
                        }
                        taken.extend(got);
                        peeked = gateway.peek_command().map(|c| c.request);
                    }
                }
            }
            while let Some(c) = gateway.next_command() {
                taken.push(c.request);
            }
            prop_assert_eq!(gateway.stats().commands.get(), taken.len() as u64);
            prop_assert_eq!(taken, pushed);
        }
    }
}
