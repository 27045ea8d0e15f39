//! The journal thread: takes the engine's steps and events off the order ring,
//! writes them as records in group commits, and only then hands them on to the API
//! (which acknowledges orders from the events). Under the `batch` policy an order is
//! acknowledged only after the fsync that covers it.
//!
//! The engine never waits for the disk: it writes to the ring, and its preallocated
//! backlog absorbs bursts. If the journal fails (I/O error, disk full, failed
//! fsync) it stops: nothing more is acknowledged, [`JournalStats::is_failed`] turns
//! on so the API rejects new orders, and the ring keeps being drained (and counted)
//! so the engine's market data path is unaffected.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::agent::{spawn_agent, Agent, AgentError, AgentSpec, ThreadHandle};
use crate::doorbell::Doorbell;
use crate::idle::IdleConfig;
use crate::orders::gateway::OrderOutput;
use crate::orders::StepAssembler;
use crate::ring::{RingConsumer, RingProducer};

use super::record::RecordRef;
use super::stats::JournalStats;
use super::writer::JournalWriter;

const BATCH: usize = 4096;
/// Commit once this much is batched, even if the ring still has more.
const MAX_BATCH_BYTES: usize = 4 << 20;

pub struct JournalThread {
    writer: JournalWriter,
    input: RingConsumer<OrderOutput>,
    output: RingProducer<OrderOutput>,
    stats: Arc<JournalStats>,
    steps: StepAssembler,
    /// Steps and events of records batched but not yet committed.
    pending: Vec<OrderOutput>,
}

impl JournalThread {
    pub fn new(
        writer: JournalWriter,
        input: RingConsumer<OrderOutput>,
        output: RingProducer<OrderOutput>,
        stats: Arc<JournalStats>,
    ) -> Self {
        stats.head.set(writer.next_seq().saturating_sub(1));
        Self {
            writer,
            input,
            output,
            stats,
            steps: StepAssembler::with_capacity(BATCH),
            pending: Vec::with_capacity(BATCH),
        }
    }

    /// Runs until `stop` is set and the ring is empty (stop it after the engine has
    /// stopped, so that everything the engine did is journaled). `wake`: the doorbell
    /// the engine rings when it hands the journal steps.
    pub fn spawn(self, idle: IdleConfig, stop: Arc<AtomicBool>, wake: &Doorbell) -> Result<ThreadHandle, AgentError> {
        let spec = AgentSpec::new("journal", idle, &stop).woken_by(wake);
        let agent = JournalAgent {
            journal: self,
            items: Vec::with_capacity(BATCH),
            stop,
        };
        spawn_agent(agent, spec)
    }

    /// Takes one batch off the ring, journals it and forwards what became durable.
    /// Returns the items taken. `items` is scratch space.
    pub fn pump(&mut self, items: &mut Vec<OrderOutput>, stop: &AtomicBool) -> usize {
        items.clear();
        let n = self.input.pop_batch(items, BATCH);
        if n > 0 {
            self.take(items, stop);
        }
        n
    }

    /// Journals ring items and forwards what became durable.
    pub fn take(&mut self, items: &[OrderOutput], stop: &AtomicBool) {
        for item in items {
            if self.stats.is_failed() {
                if matches!(item, OrderOutput::Event(_)) {
                    self.stats.discarded.inc();
                }
                continue;
            }
            if let Some((step, events)) = self.steps.push(item) {
                let rec = RecordRef::Step { step: &step, events };
                match self.writer.append(&rec) {
                    Ok(_) => {
                        self.stats.records.inc();
                        self.pending.push(OrderOutput::Step(step));
                        self.pending.extend(events.iter().map(|e| OrderOutput::Event(*e)));
                    }
                    Err(e) => self.failed(&e),
                }
            }
            if self.writer.batched() >= MAX_BATCH_BYTES {
                self.commit_and_forward(stop);
            }
        }
        self.commit_and_forward(stop);
    }

    fn commit_and_forward(&mut self, stop: &AtomicBool) {
        if self.stats.is_failed() {
            self.discard_pending();
            return;
        }
        let started = Instant::now();
        match self.writer.commit() {
            Ok(c) if c.bytes > 0 => {
                self.stats.commits.inc();
                self.stats.bytes.add(c.bytes as u64);
                if c.synced {
                    self.stats.fsyncs.inc();
                }
                self.stats.commit_took(started.elapsed().as_nanos() as u64);
                self.stats.head.set(self.writer.next_seq().saturating_sub(1));
            }
            Ok(_) => {}
            Err(e) => {
                self.failed(&e);
                self.discard_pending();
                return;
            }
        }
        self.forward(stop);
    }

    fn discard_pending(&mut self) {
        let events = self
            .pending
            .iter()
            .filter(|i| matches!(i, OrderOutput::Event(_)))
            .count();
        self.stats.discarded.add(events as u64);
        self.pending.clear();
    }

    /// Hands durable steps and events to the API, waiting while its ring is full (the API
    /// drains it; nothing here is on the engine's path).
    fn forward(&mut self, stop: &AtomicBool) {
        let mut spins = 0u32;
        let mut i = 0;
        while i < self.pending.len() {
            if self.output.free_slots() > 0 {
                if let Some(e) = self.pending.get(i) {
                    if self.output.push(*e) {
                        i += 1;
                        continue;
                    }
                }
            }
            if stop.load(Ordering::Acquire) && self.output.is_abandoned() {
                break;
            }
            if spins == 0 {
                // Full: the consumer must drain it, so wake it if it sleeps.
                self.output.wake_consumer();
            }
            spins += 1;
            if spins < 100 {
                std::hint::spin_loop();
            } else {
                std::thread::sleep(std::time::Duration::from_micros(50));
            }
        }
        let events = self
            .pending
            .iter()
            .take(i)
            .filter(|x| matches!(x, OrderOutput::Event(_)))
            .count();
        self.stats.forwarded.add(events as u64);
        self.pending.clear();
        self.output.wake_consumer();
    }

    fn idle_sync(&mut self) {
        if self.stats.is_failed() {
            return;
        }
        match self.writer.sync_if_due() {
            Ok(true) => self.stats.fsyncs.inc(),
            Ok(false) => {}
            Err(e) => self.failed(&e),
        }
    }

    /// The final fsync and the closing log line.
    fn close(&mut self) {
        if !self.stats.is_failed() {
            if let Err(e) = self.writer.sync() {
                self.stats.fail(e.to_string());
                tracing::error!(error = %e, "journal: final fsync failed");
            }
        }
        tracing::info!(
            records = self.writer.next_seq().saturating_sub(1),
            head = %super::format::hex(self.writer.last_hash()),
            "journal closed"
        );
    }

    fn failed(&mut self, e: &super::error::JournalError) {
        if !self.stats.is_failed() {
            tracing::error!(error = %e, "journal failed: order intake stops; nothing more is acknowledged");
        }
        self.stats.fail(e.to_string());
    }
}

/// The journal thread as an agent: a poll journals one batch; an empty poll runs the
/// interval fsync if it is due.
struct JournalAgent {
    journal: JournalThread,
    /// Scratch space for one batch.
    items: Vec<OrderOutput>,
    stop: Arc<AtomicBool>,
}

impl Agent for JournalAgent {
    fn name(&self) -> &str {
        "journal"
    }

    fn poll(&mut self) -> usize {
        let n = self.journal.pump(&mut self.items, &self.stop);
        if n == 0 {
            self.journal.idle_sync();
        }
        n
    }

    /// Only once the ring is empty: everything the engine did is journaled.
    fn ready_to_stop(&mut self) -> bool {
        self.journal.input.is_empty()
    }

    fn on_close(&mut self) {
        self.journal.close();
    }
}
