//! The snapshot thread: follows the journal's durable records into a shadow copy of
//! the order manager and the read model, and writes a snapshot every
//! `snapshot_every_records` records.
//!
//! It reads the segment files (the page cache, in practice) rather than being fed by
//! the journal thread, so snapshots never delay an acknowledgement and the engine
//! never waits for them. Replaying each step also re-checks, continuously, that the
//! journal reproduces the engine's events. A failed snapshot is logged and counted;
//! it costs replay time at the next start, never data. After each snapshot it applies
//! the journal's [`Retention`] (segments no kept snapshot needs); a failed pass is
//! logged and counted and retried after the next snapshot.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use crate::agent::{spawn_agent, Agent, AgentError, AgentSpec, ThreadHandle};
use crate::idle::IdleConfig;
use crate::orders::store::OrderStore;
use crate::orders::OrderManager;

use super::error::JournalError;
use super::recovery::{apply_record, Recovered, Replayed};
use super::retention::{self, Retention};
use super::snapshot;
use super::stats::JournalStats;
use super::tailer::JournalTailer;

pub struct Snapshotter {
    dir: PathBuf,
    manager: OrderManager,
    store: OrderStore,
    tailer: JournalTailer,
    every: u64,
    keep: usize,
    last_snapshot: u64,
    stats: Arc<JournalStats>,
    retention: Retention,
    /// Following the journal broke: no more snapshots this run.
    failed: bool,
}

impl Snapshotter {
    /// The idle strategy by default: a round every 100 ms.
    pub const DEFAULT_IDLE: IdleConfig = IdleConfig::parked(100_000, 100_000);

    /// Follows the journal from where recovery ended with copies of the recovered
    /// state. The count towards the next snapshot starts at the snapshot recovery
    /// used (the journal's start without one), not at the tail: a process restarted
    /// more often than every `every` records would otherwise never take one, and each
    /// start would replay everything since the last.
    pub fn new(
        dir: &Path,
        recovered: &Recovered,
        manager: OrderManager,
        store: OrderStore,
        every: u64,
        keep: usize,
        stats: Arc<JournalStats>,
    ) -> Self {
        match snapshot::remove_partial(dir) {
            Ok(0) => {}
            Ok(n) => tracing::warn!(files = n, "half-written snapshots (a crash or a full disk) deleted"),
            Err(e) => tracing::warn!(error = %e, "could not delete half-written snapshots"),
        }
        Self {
            dir: dir.to_path_buf(),
            manager,
            store,
            tailer: JournalTailer::at_tail(dir, &recovered.tail),
            every: every.max(1),
            keep,
            last_snapshot: recovered.snapshot.unwrap_or(0),
            stats,
            retention: Retention::default(),
            failed: false,
        }
    }

    /// Applies `retention` after every snapshot (the default keeps every segment). The
    /// journal's first record is counted in the stats now.
    pub fn with_retention(mut self, retention: Retention) -> Self {
        self.retention = retention;
        let first = super::reader::segments(&self.dir)
            .ok()
            .and_then(|s| s.first().map(|s| s.first_seq));
        self.stats.first_record.set(first.unwrap_or(1));
        self
    }

    /// Archives or deletes the segments no kept snapshot needs (see [`retention`]).
    pub fn apply_retention(&mut self) -> Result<retention::Trimmed, JournalError> {
        // The QuestDB sink's order export (a reader of the segment files) holds what it
        // has not stored yet.
        let hold = match self.stats.export_hold.get() {
            0 => u64::MAX,
            seq => seq,
        };
        let trimmed = retention::apply(&self.dir, &self.retention, hold)?;
        self.stats.segments_removed.add(trimmed.removed.len() as u64);
        self.stats.first_record.set(trimmed.first_kept);
        Ok(trimmed)
    }

    /// Applies the records up to `upto` (the durable head). Returns how many.
    pub fn catch_up(&mut self, upto: u64) -> Result<u64, JournalError> {
        let mut counts = Replayed::default();
        let (manager, store) = (&mut self.manager, &mut self.store);
        self.tailer.poll(upto, |seq, payload| {
            apply_record(manager, store, seq, payload, &mut counts)
        })
    }

    /// Writes a snapshot when enough records have passed since the last one. A write
    /// that fails (a full disk, say) is retried once another `every` records have
    /// passed: the journal is unaffected, and a start replays a little more meanwhile.
    pub fn snapshot_if_due(&mut self) -> Result<Option<PathBuf>, JournalError> {
        let (at, hash) = self.tailer.position();
        if at < self.last_snapshot.saturating_add(self.every) {
            return Ok(None);
        }
        let written = snapshot::write(&self.dir, at, &hash, &self.manager, &self.store, self.keep);
        self.last_snapshot = at;
        let path = written?;
        self.stats.snapshots.inc();
        self.stats.snapshot_record.set(at);
        match self.apply_retention() {
            Ok(t) if !t.removed.is_empty() => tracing::info!(
                segments = t.removed.len(),
                first_record = t.first_kept,
                action = ?self.retention.action,
                "journal retention: segments no kept snapshot needs removed"
            ),
            Ok(_) => {}
            Err(e) => {
                // Costs disk space, never data: retried after the next snapshot.
                self.stats.retention_errors.inc();
                tracing::error!(error = %e, "journal retention failed");
            }
        }
        Ok(Some(path))
    }

    /// Runs rounds (catch up with the durable head, snapshot if due) until `stop` is
    /// set, idling by `idle` between them.
    pub fn spawn(self, idle: IdleConfig, stop: Arc<AtomicBool>) -> Result<ThreadHandle, AgentError> {
        spawn_agent(self, AgentSpec::new("journal-snapshot", idle, &stop))
    }
}

impl Agent for Snapshotter {
    fn name(&self) -> &str {
        "journal-snapshot"
    }

    /// One round. It always takes everything up to the durable head, so there is never
    /// more to do at once: it returns 0 and the thread idles (sleeps its park slice)
    /// between rounds, which batches the journal's records into few reads.
    fn poll(&mut self) -> usize {
        if self.failed {
            return 0;
        }
        if let Err(e) = self.catch_up(self.stats.head.get()) {
            // Following the journal is broken: stop taking snapshots (start-up replays
            // more), say so loudly.
            self.stats.snapshot_errors.inc();
            tracing::error!(error = %e, "journal snapshots stopped");
            self.failed = true;
            return 0;
        }
        match self.snapshot_if_due() {
            Ok(Some(path)) => tracing::info!(snapshot = %path.display(), "journal snapshot written"),
            Ok(None) => {}
            Err(e) => {
                self.stats.snapshot_errors.inc();
                tracing::error!(error = %e, "journal snapshot not written; retrying after the next interval");
            }
        }
        0
    }
}
