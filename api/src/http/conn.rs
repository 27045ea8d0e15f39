//! What the accept loop shares with the rest of the API about a connection: the
//! connection-level counters (`/metrics`) and the link a WebSocket session uses to reset
//! a connection whose client stopped reading. A leaf, so the router, TLS and metrics can
//! use it without importing the accept loop.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Connection-level counters (rendered by `/metrics`).
#[derive(Debug, Default)]
pub struct ConnStats {
    /// Connections open now (HTTP and WebSocket).
    pub open: AtomicU64,
    pub accepted: AtomicU64,
    /// Refused: `max_connections` reached.
    pub refused_total: AtomicU64,
    /// Refused: `max_connections_per_address` reached for the client's address.
    pub refused_per_address: AtomicU64,
    /// Closed: no complete request head within `header_read_timeout_ms`.
    pub header_timeout: AtomicU64,
    /// Closed: nothing moved for `idle_timeout_secs`.
    pub idle_timeout: AtomicU64,
    /// Answered 431 and closed: a head over `max_header_bytes`.
    pub header_too_large: AtomicU64,
    /// Closed: the TLS handshake failed or did not finish in time.
    pub tls_handshake_failed: AtomicU64,
    /// `accept` failed (for instance out of file descriptors).
    pub accept_errors: AtomicU64,
    pub tls_reloads: AtomicU64,
    pub tls_reload_errors: AtomicU64,
}

/// When a byte last moved on a connection, and whether to reset it when dropped.
pub(crate) struct Activity {
    epoch: Instant,
    last_ms: AtomicU64,
    pub(crate) reset: AtomicBool,
    /// A send buffer size (SO_SNDBUF) the session asked for, applied by the socket's
    /// owner on its next write (0: none pending).
    pub(crate) send_buffer: AtomicUsize,
}

impl Activity {
    pub(crate) fn new() -> Self {
        Self {
            epoch: Instant::now(),
            last_ms: AtomicU64::new(0),
            reset: AtomicBool::new(false),
            send_buffer: AtomicUsize::new(0),
        }
    }

    pub(crate) fn touch(&self) {
        self.last_ms
            .store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// When the connection turns idle if nothing moves before.
    pub(crate) fn idle_at(&self, idle: Duration) -> tokio::time::Instant {
        let last = self.epoch + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        tokio::time::Instant::from_std(last + idle)
    }
}

/// A handle on the connection a request came in on (a request extension): the
/// WebSocket session uses it to reset a connection whose client stopped reading, so
/// the kernel frees its buffers at once instead of retrying to deliver them.
#[derive(Clone)]
pub struct ConnLink(pub(crate) Arc<Activity>);

impl ConnLink {
    /// Closes with a reset (SO_LINGER 0) when the socket is dropped.
    pub fn reset_on_close(&self) {
        self.0.reset.store(true, Ordering::Relaxed);
    }

    /// Sets the socket's send buffer (SO_SNDBUF) to `bytes` before its next write.
    pub fn limit_send_buffer(&self, bytes: usize) {
        self.0.send_buffer.store(bytes, Ordering::Relaxed);
    }
}
