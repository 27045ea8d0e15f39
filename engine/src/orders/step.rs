//! One step of the order manager: the input that drove it, the market it saw, and how
//! many events it produced.
//!
//! The manager is a deterministic state machine over these inputs. The journal
//! records every step that changed something (every command, and the quotes, trades
//! and timer ticks that produced events), with the instrument's market reference as
//! it was just before the step. Replaying the steps through the same code therefore
//! rebuilds the same orders, books, positions and risk usage, and must reproduce the
//! journaled events exactly (recovery checks that it does).

use crate::fixed::{Price, Qty};
use crate::ids::InstrumentId;
use crate::time::UnixNanos;

use super::command::Command;
use super::context::StepContext;
use super::event::OrderEvent;
use super::gateway::OrderOutput;
use super::manager::MarketRef;

/// What drove a step. Variant order is part of the journal format: append only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Input {
    Command(Command),
    Quote {
        instrument: InstrumentId,
        bid: Price,
        bid_qty: Qty,
        ask: Price,
        ask_qty: Qty,
        at: UnixNanos,
    },
    Trade {
        instrument: InstrumentId,
        price: Price,
        qty: Qty,
        trade_id: u64,
        at: UnixNanos,
    },
    Timer {
        at: UnixNanos,
    },
    /// Surveillance found an anomaly (its action is applied by the step).
    Anomaly(crate::anomaly::Anomaly),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Step {
    pub input: Input,
    /// The market reference of the instrument the step works on, as it was before
    /// the step (none for steps that touch no market: timers, admin commands).
    pub market: Option<(InstrumentId, MarketRef)>,
    /// Events the step produced (they follow it, in order).
    pub events: u32,
    /// What else the step decided with (depth, marks, day clock): see [`StepContext`].
    pub ctx: StepContext,
}

/// Puts steps back together from the ring's items (a step, then its events), which
/// may arrive split across batches.
#[derive(Debug, Default)]
pub struct StepAssembler {
    step: Option<Step>,
    events: Vec<OrderEvent>,
}

impl StepAssembler {
    pub fn with_capacity(events: usize) -> Self {
        Self {
            step: None,
            events: Vec::with_capacity(events),
        }
    }

    /// Takes one item; returns the step and its events when this item completed one.
    pub fn push(&mut self, item: &OrderOutput) -> Option<(Step, &[OrderEvent])> {
        match *item {
            OrderOutput::Step(step) => {
                self.step = Some(step);
                self.events.clear();
            }
            OrderOutput::Event(e) => self.events.push(e),
        }
        let step = self.step?;
        if self.events.len() < step.events as usize {
            return None;
        }
        self.step = None;
        Some((step, &self.events))
    }
}
