//! The journal thread's counters, read by /metrics and /health/ready.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use crate::counter::Counter;

#[derive(Debug, Default)]
pub struct JournalStats {
    pub records: Counter,
    pub bytes: Counter,
    pub commits: Counter,
    pub fsyncs: Counter,
    /// Total and worst nanoseconds spent in commits (write + fsync).
    pub commit_ns_total: Counter,
    pub commit_ns_max: Counter,
    /// Events handed on to the API after their records were durable.
    pub forwarded: Counter,
    /// Events never journaled because the journal had failed.
    pub discarded: Counter,
    /// Number of the last durable record.
    pub head: Counter,
    /// Snapshots written, the record the last one was taken at, and failures.
    pub snapshots: Counter,
    pub snapshot_record: Counter,
    pub snapshot_errors: Counter,
    /// Retention: segments archived or deleted, failed passes, and the first record
    /// the journal's directory still holds (1 until a segment was removed).
    pub segments_removed: Counter,
    pub retention_errors: Counter,
    pub first_record: Counter,
    /// The first record the QuestDB sink's order export has not stored for good yet
    /// (0: no export): retention keeps it and every later one. Set before the
    /// snapshot thread starts, then moved forward by the sink.
    pub export_hold: Counter,
    failed: AtomicBool,
    failure: OnceLock<String>,
}

impl JournalStats {
    /// The journal can no longer make anything durable: order intake must stop.
    pub fn fail(&self, why: String) {
        let _ = self.failure.set(why);
        self.failed.store(true, Ordering::Release);
    }

    pub fn is_failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    pub fn failure(&self) -> Option<&str> {
        self.failure.get().map(String::as_str)
    }

    pub(crate) fn commit_took(&self, ns: u64) {
        self.commit_ns_total.add(ns);
        if ns > self.commit_ns_max.get() {
            self.commit_ns_max.set(ns);
        }
    }
}
