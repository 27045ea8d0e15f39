//! The append-only audit log (SPEC section 7): every order action, admin action and
//! authentication failure, as hash-chained JSON lines written by a thread of its own.
//! Entries say who (account or service name, never a token or an address), what,
//! when, the outcome and the request id.
//!
//! An action that must be audited reserves its queue slot before it runs; if the
//! queue is full or the writer has failed, the action is refused (503
//! `AUDIT_UNAVAILABLE`) rather than done unrecorded, and `/health` and `/metrics` say
//! why (the write error, e.g. a full disk). Authentication failures are aggregated per
//! source address ([`failures`]), recorded when there is room and counted when there
//! is not.

pub mod chain;
pub mod failures;
pub mod http;
mod writer;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use stocksblitz_engine::agent::spawn_thread;

use axum::http::StatusCode;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::config::audit::AuditConfig;
use crate::foundation::ApiError;

/// Who acted.
#[derive(Debug, Clone, Serialize)]
pub struct Actor {
    /// "account", "service" or "anonymous".
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl Actor {
    pub fn anonymous() -> Self {
        Actor {
            kind: "anonymous",
            name: None,
        }
    }
}

/// One audited event, before it is numbered and chained.
#[derive(Debug, Clone)]
pub struct Entry {
    pub action: &'static str,
    pub actor: Actor,
    pub request_id: String,
    /// "ok", or the error code the caller got.
    pub outcome: String,
    pub status: u16,
    pub details: Value,
    pub at_ns: i64,
}

impl Entry {
    /// The line's text (without its hash member).
    fn body(&self, seq: u64, prev: &str) -> String {
        let ts = chrono::DateTime::from_timestamp_nanos(self.at_ns).to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
        serde_json::json!({
            "seq": seq,
            "ts": ts,
            "action": self.action,
            "actor": self.actor,
            "request_id": self.request_id,
            "outcome": self.outcome,
            "status": self.status,
            "details": self.details,
            "prev": prev,
        })
        .to_string()
    }
}

#[derive(Default)]
pub struct AuditStats {
    pub written: AtomicU64,
    /// Authentication failures not recorded because the queue was full.
    pub dropped: AtomicU64,
    /// Entries lost when a write failed and the log was shut down before it could retry.
    pub lost: AtomicU64,
    /// Failed write attempts (each is retried).
    pub write_errors: AtomicU64,
    /// Actions refused because the log could not take them.
    pub refused: AtomicU64,
    pub failed: AtomicBool,
    /// Authentication failures seen (aggregated or not).
    pub auth_failures: AtomicU64,
    /// Why the log cannot be written, once it cannot.
    pub error: Mutex<Option<String>>,
}

impl AuditStats {
    /// The write error that stopped the log, if any.
    pub fn error(&self) -> Option<String> {
        self.error.lock().clone()
    }
}

pub struct AuditLog {
    shared: Arc<Shared>,
    pub stats: Arc<AuditStats>,
}

struct Shared {
    tx: mpsc::Sender<Entry>,
    stats: Arc<AuditStats>,
    failures: Mutex<failures::Aggregator>,
}

impl Shared {
    fn send(&self, entry: Entry) {
        if self.tx.try_send(entry).is_err() {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn flush_failures(&self, all: bool) {
        let lines = self.failures.lock().flush(stocksblitz_engine::UnixNanos::now().0, all);
        for e in lines {
            self.send(e);
        }
    }
}

/// A reserved slot: the action may go ahead and will be recorded.
pub struct Permit(mpsc::OwnedPermit<Entry>);

impl Permit {
    pub fn record(self, entry: Entry) {
        self.0.send(entry);
    }
}

fn unavailable(why: &str) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "AUDIT_UNAVAILABLE",
        format!("the audit log cannot record this action ({why}): nothing was done; retry shortly"),
    )
}

impl AuditLog {
    /// Opens the log and starts its writer thread.
    pub fn start(c: &AuditConfig) -> Result<Self, String> {
        Self::start_at(
            &c.path,
            c.fsync,
            c.queue_capacity as usize,
            failures::Aggregator::new(c.auth_failure_interval_secs, c.auth_failure_sources as usize),
        )
    }

    pub fn start_at(path: &Path, fsync: bool, capacity: usize, agg: failures::Aggregator) -> Result<Self, String> {
        let (file, tail) = writer::open(path)?;
        let (tx, rx) = mpsc::channel(capacity);
        let stats = Arc::new(AuditStats::default());
        let s = Arc::clone(&stats);
        // Blocks on its channel; ends when every sender has gone.
        spawn_thread("audit", None, move || {
            writer::run(file, tail, fsync, rx, s, Duration::from_secs(1))
        })
        .map_err(|e| format!("starting the audit thread: {e}"))?;
        let shared = Arc::new(Shared {
            tx,
            stats: Arc::clone(&stats),
            failures: Mutex::new(agg),
        });
        // Closes aggregation windows as they end; stops when the log is dropped.
        let weak: Weak<Shared> = Arc::downgrade(&shared);
        spawn_thread("audit-agg", None, move || loop {
            std::thread::sleep(Duration::from_millis(250));
            match weak.upgrade() {
                Some(s) => s.flush_failures(false),
                None => return,
            }
        })
        .map_err(|e| format!("starting the audit aggregation thread: {e}"))?;
        Ok(Self { shared, stats })
    }

    /// Reserves a slot for an action about to run.
    pub fn reserve(&self) -> Result<Permit, ApiError> {
        if self.stats.failed.load(Ordering::Acquire) {
            self.stats.refused.fetch_add(1, Ordering::Relaxed);
            let why = self.stats.error().unwrap_or_else(|| "unknown error".into());
            return Err(unavailable(&format!("its file cannot be written: {why}")));
        }
        self.shared.tx.clone().try_reserve_owned().map(Permit).map_err(|_| {
            self.stats.refused.fetch_add(1, Ordering::Relaxed);
            unavailable("its queue is full")
        })
    }

    /// Records an event that has already happened (an anomaly).
    pub fn record(&self, entry: Entry) {
        self.shared.send(entry);
    }

    /// Records a failed authentication: the first from its source in an interval now,
    /// the repeats as one line with a count when the interval ends.
    /// Returns whether it was the first of its window (written now).
    pub fn auth_failure(&self, f: &failures::Failure) -> bool {
        self.stats.auth_failures.fetch_add(1, Ordering::Relaxed);
        let first = self.shared.failures.lock().failure(f);
        match first {
            Some(e) => {
                self.shared.send(e);
                true
            }
            None => false,
        }
    }

    /// Counts credentials from `source` refused unchecked (in its aggregated line).
    pub fn auth_refused(&self, source: &str) {
        self.shared
            .failures
            .lock()
            .refused(source, stocksblitz_engine::UnixNanos::now().0);
    }

    /// Writes every open aggregation window now (at shutdown).
    pub fn flush_failures(&self) {
        self.shared.flush_failures(true);
    }

    /// Why the log cannot be written (None: it can).
    pub fn failure(&self) -> Option<String> {
        if self.healthy() {
            None
        } else {
            Some(self.stats.error().unwrap_or_else(|| "unknown error".into()))
        }
    }

    pub fn healthy(&self) -> bool {
        !self.stats.failed.load(Ordering::Acquire)
    }
}

impl Drop for AuditLog {
    /// Open aggregation windows are written, not lost.
    fn drop(&mut self) {
        self.flush_failures();
    }
}
