//! The append-only audit log (SPEC section 7): every order action, admin action and
//! authentication failure, as hash-chained JSON lines written by a thread of its own.
//! Entries say who (account or service name, never a token or an address), what,
//! when, the outcome and the request id.
//!
//! An action that must be audited reserves its queue slot before it runs; if the
//! queue is full or the writer has failed, the action is refused (503
//! `AUDIT_UNAVAILABLE`) rather than done unrecorded. Authentication failures are
//! recorded when there is room and counted when there is not.

pub mod chain;
pub mod http;
mod writer;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use axum::http::StatusCode;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::config::audit::AuditConfig;
use crate::http::error::ApiError;

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
    /// Entries lost when a write failed.
    pub lost: AtomicU64,
    /// Actions refused because the log could not take them.
    pub refused: AtomicU64,
    pub failed: AtomicBool,
}

pub struct AuditLog {
    tx: mpsc::Sender<Entry>,
    pub stats: Arc<AuditStats>,
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
        Self::start_at(&c.path, c.fsync, c.queue_capacity as usize)
    }

    pub fn start_at(path: &Path, fsync: bool, capacity: usize) -> Result<Self, String> {
        let (file, tail) = writer::open(path)?;
        let (tx, rx) = mpsc::channel(capacity);
        let stats = Arc::new(AuditStats::default());
        let s = Arc::clone(&stats);
        std::thread::Builder::new()
            .name("audit".into())
            .spawn(move || writer::run(file, tail, fsync, rx, s))
            .map_err(|e| format!("starting the audit thread: {e}"))?;
        Ok(Self { tx, stats })
    }

    /// Reserves a slot for an action about to run.
    pub fn reserve(&self) -> Result<Permit, ApiError> {
        if self.stats.failed.load(Ordering::Acquire) {
            self.stats.refused.fetch_add(1, Ordering::Relaxed);
            return Err(unavailable("its file cannot be written"));
        }
        self.tx.clone().try_reserve_owned().map(Permit).map_err(|_| {
            self.stats.refused.fetch_add(1, Ordering::Relaxed);
            unavailable("its queue is full")
        })
    }

    /// Records an event that has already happened (an authentication failure).
    pub fn record(&self, entry: Entry) {
        if self.tx.try_send(entry).is_err() {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn healthy(&self) -> bool {
        !self.stats.failed.load(Ordering::Acquire)
    }
}
