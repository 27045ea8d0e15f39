//! Hands engine events to every consumer's bounded output ring, never waiting.
//!
//! Each consumer has its own ring and its own per-instrument sequence numbers. The
//! sequence is assigned whether or not the push succeeds, so a consumer that missed
//! events sees a gap. What a full ring means depends on the consumer
//! ([`OutputKind`]):
//! - a reader of current state (the API fan-out) takes every event; after a drop the
//!   instrument is marked for resync on that consumer: further events for it are
//!   suppressed (they would be superseded) until housekeeping finds room to send a
//!   full snapshot;
//! - a recorder (the store) takes only the events it keeps, straight from the engine
//!   so that no slower consumer stands between them; a snapshot cannot replace a lost
//!   trade, so a drop is only counted (the ring's `dropped`) and nothing is suppressed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::counter::Counter;
use crate::event::{EngineEvent, EventData};
use crate::ids::InstrumentId;
use crate::ring::{RingProducer, RingStats};

/// Counters for one output.
#[derive(Debug, Default)]
pub struct OutputStats {
    /// Events not pushed because the instrument was waiting for a resync snapshot.
    pub suppressed: Counter,
    /// Snapshots sent to this consumer.
    pub resyncs: Counter,
    /// Set by the consumer to ask for a full snapshot of every instrument (an API
    /// node joining through Redis needs the books it missed).
    resync_requested: AtomicBool,
}

impl OutputStats {
    pub fn request_resync(&self) {
        self.resync_requested.store(true, Ordering::Release);
    }
}

/// What an output takes, and what it does when its ring is full.
#[derive(Debug, Clone, Copy)]
pub enum OutputKind {
    /// Every event; a drop suppresses the instrument until a snapshot resyncs it.
    Conflated,
    /// Only the events `select` picks; a drop is counted, nothing is suppressed.
    Recorder(fn(&EventData) -> bool),
}

struct Output {
    ring: RingProducer<EngineEvent>,
    kind: OutputKind,
    /// Next sequence number per instrument.
    seq: Vec<u64>,
    /// Instruments waiting for a snapshot on this consumer.
    needs_resync: Vec<bool>,
    pending: usize,
    stats: Arc<OutputStats>,
}

/// All outputs of the engine.
pub struct Publisher {
    outputs: Vec<Output>,
}

impl Publisher {
    /// Conflated outputs, one per ring.
    pub fn new(rings: Vec<RingProducer<EngineEvent>>, instruments: usize) -> Self {
        let mut p = Self { outputs: Vec::new() };
        for ring in rings {
            p.add(ring, OutputKind::Conflated, instruments);
        }
        p
    }

    /// One more output (before anything is published).
    pub fn add(&mut self, ring: RingProducer<EngineEvent>, kind: OutputKind, instruments: usize) {
        self.outputs.push(Output {
            ring,
            kind,
            seq: vec![0; instruments],
            needs_resync: vec![false; instruments],
            pending: 0,
            stats: Arc::new(OutputStats::default()),
        });
    }

    /// Ring and output counters, one pair per consumer, for metrics.
    pub fn stats(&self) -> Vec<(Arc<RingStats>, Arc<OutputStats>)> {
        self.outputs
            .iter()
            .map(|o| (Arc::clone(o.ring.stats()), Arc::clone(&o.stats)))
            .collect()
    }

    /// Publishes `ev` (its `seq` is assigned per consumer). Returns how many consumers
    /// took it.
    #[inline]
    pub fn publish(&mut self, mut ev: EngineEvent) -> u64 {
        let i = ev.instrument.index();
        let mut delivered = 0;
        for o in &mut self.outputs {
            let conflated = match o.kind {
                OutputKind::Conflated => true,
                OutputKind::Recorder(select) if select(&ev.data) => false,
                OutputKind::Recorder(_) => continue,
            };
            let (Some(seq), Some(resync)) = (o.seq.get_mut(i), o.needs_resync.get_mut(i)) else {
                continue;
            };
            *seq += 1;
            ev.seq = *seq;
            if *resync {
                o.stats.suppressed.inc();
            } else if o.ring.push(ev) {
                delivered += 1;
            } else if conflated {
                *resync = true;
                o.pending += 1;
            }
        }
        delivered
    }

    /// Rings the doorbell of each consumer that got events since the last call.
    #[inline]
    pub fn wake_consumers(&mut self) {
        for o in &mut self.outputs {
            o.ring.wake_consumer();
        }
    }

    /// Whether any consumer waits for a snapshot (or asked for one).
    #[inline]
    pub fn resync_pending(&self) -> bool {
        self.outputs
            .iter()
            .any(|o| o.pending > 0 || o.stats.resync_requested.load(Ordering::Relaxed))
    }

    /// For each consumer with instruments waiting and at least `needed` free slots,
    /// calls `snapshot(instrument, push)` for one waiting instrument at a time; `push`
    /// sends one event to that consumer only. Returns snapshots sent.
    pub fn resync<F>(&mut self, needed: usize, mut snapshot: F) -> u64
    where
        F: FnMut(InstrumentId, &mut dyn FnMut(EngineEvent)),
    {
        let mut sent = 0;
        for o in &mut self.outputs {
            if matches!(o.kind, OutputKind::Recorder(_)) {
                continue;
            }
            if o.stats.resync_requested.swap(false, Ordering::AcqRel) {
                for flag in &mut o.needs_resync {
                    if !*flag {
                        *flag = true;
                        o.pending += 1;
                    }
                }
            }
            if o.pending == 0 {
                continue;
            }
            for i in 0..o.needs_resync.len() {
                if o.ring.free_slots() < needed {
                    break;
                }
                if !o.needs_resync.get(i).copied().unwrap_or(false) {
                    continue;
                }
                let Ok(id) = u32::try_from(i) else { continue };
                let (ring, seq) = (&mut o.ring, &mut o.seq);
                snapshot(InstrumentId(id), &mut |mut ev: EngineEvent| {
                    if let Some(s) = seq.get_mut(i) {
                        *s += 1;
                        ev.seq = *s;
                    }
                    ring.push(ev);
                });
                if let Some(flag) = o.needs_resync.get_mut(i) {
                    *flag = false;
                }
                o.pending -= 1;
                o.stats.resyncs.inc();
                sent += 1;
            }
        }
        sent
    }
}
