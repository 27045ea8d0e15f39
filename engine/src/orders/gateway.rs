//! The order path's two ends at the engine thread: commands in through a bounded
//! lock-free MPMC queue (many API tasks push, the engine pops), steps and their events
//! out through an SPSC ring to the journal thread (which makes them durable before
//! anyone sees them).
//!
//! Order events are never dropped. When the ring is full, events wait in a backlog
//! (allocated once, sized for the worst step) and the engine stops taking commands
//! until the backlog has drained: back-pressure lands on the API's queue, whose
//! callers get a clear "engine busy" error, instead of anything being lost.

use std::collections::VecDeque;
use std::sync::Arc;

use crossbeam_queue::ArrayQueue;

use crate::counter::Counter;
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
pub type CommandQueue = Arc<ArrayQueue<Command>>;

pub fn command_queue(capacity: usize) -> CommandQueue {
    Arc::new(ArrayQueue::new(capacity.max(1)))
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
    out: RingProducer<OrderOutput>,
    backlog: VecDeque<OrderOutput>,
    stats: Arc<GatewayStats>,
}

impl OrderGateway {
    pub fn new(commands: CommandQueue, out: RingProducer<OrderOutput>, backlog: usize) -> Self {
        Self {
            commands,
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

    /// The next command, unless events are still waiting to go out.
    pub fn next_command(&mut self) -> Option<Command> {
        if !self.flush_backlog() {
            return None;
        }
        let c = self.commands.pop()?;
        self.stats.commands.inc();
        Some(c)
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
