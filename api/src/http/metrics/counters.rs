//! The HTTP layer's own counters: requests and latencies per route, error responses by
//! code, and the accept loop's connection counters. Separate from the rendering in
//! [`super`] so the shared state can hold them without importing the handlers.

use std::collections::BTreeMap;

use parking_lot::Mutex;

/// Upper bounds (seconds) of the request latency histogram.
pub(crate) const BUCKETS: [f64; 14] = [
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

#[derive(Default)]
pub(crate) struct RouteStats {
    pub(crate) by_status: BTreeMap<u16, u64>,
    pub(crate) buckets: [u64; BUCKETS.len()],
    pub(crate) count: u64,
    pub(crate) sum_secs: f64,
}

/// Request counts and latencies per (route template, method), and error responses by
/// their stable code.
#[derive(Default)]
pub struct HttpMetrics {
    pub(crate) routes: Mutex<BTreeMap<(String, String), RouteStats>>,
    pub(crate) errors: Mutex<BTreeMap<(&'static str, u16), u64>>,
    /// Connection-level counters of the accept loop.
    pub connections: std::sync::Arc<crate::http::conn::ConnStats>,
}

impl HttpMetrics {
    /// Counts an error response (called where error bodies are rendered).
    pub fn error(&self, code: &'static str, status: u16) {
        *self.errors.lock().entry((code, status)).or_default() += 1;
    }

    pub(crate) fn record(&self, route: String, method: String, status: u16, secs: f64) {
        let mut routes = self.routes.lock();
        let r = routes.entry((route, method)).or_default();
        *r.by_status.entry(status).or_default() += 1;
        r.count += 1;
        r.sum_secs += secs;
        for (b, le) in r.buckets.iter_mut().zip(BUCKETS) {
            if secs <= le {
                *b += 1;
            }
        }
    }
}
