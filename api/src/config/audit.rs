//! `[audit]`: the append-only, hash-chained audit log of order actions, admin actions
//! and authentication failures.

use std::path::PathBuf;

use serde::Deserialize;

use super::error::range;
use super::error::ConfigError;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// The JSON-lines file (created if missing, appended to, never rewritten).
    pub path: PathBuf,
    /// fsync after each batch of lines (true), or leave it to the OS (false).
    pub fsync: bool,
    /// Entries waiting for the writer; when full, an action that must be audited is
    /// refused with 503 AUDIT_UNAVAILABLE rather than done unrecorded.
    pub queue_capacity: u64,
    /// Authentication failures per address are aggregated over this many seconds: the
    /// first is written at once, the repeats as one line with a count at the end.
    pub auth_failure_interval_secs: u64,
    /// Addresses tracked per interval; failures from any further address share one
    /// aggregated line (a bound on what unauthenticated callers can write).
    pub auth_failure_sources: u64,
}

pub fn check(c: &AuditConfig) -> Result<(), ConfigError> {
    if c.path.as_os_str().is_empty() {
        return Err(ConfigError::invalid("audit.path", "must not be empty"));
    }
    range("audit.queue_capacity", c.queue_capacity, 16, 10_000_000)?;
    range(
        "audit.auth_failure_interval_secs",
        c.auth_failure_interval_secs,
        1,
        86_400,
    )?;
    range("audit.auth_failure_sources", c.auth_failure_sources, 1, 1_000_000)
}
