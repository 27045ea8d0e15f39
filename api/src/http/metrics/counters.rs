//! The HTTP layer's own counters: requests and latencies per route, error responses by
//! code, and the accept loop's connection counters. Separate from the rendering in
//! [`super`] so the shared state can hold them without importing the handlers.
//!
//! Counting a request takes no lock and allocates nothing: every (route template,
//! method) row exists from start-up (built from the router's registered routes, plus
//! one `unmatched` route for requests no route matched), found through a read-only
//! index by the matched path, and its counters are atomics. Error responses count in
//! a fixed table of atomics keyed by their `&'static str` code, claimed once per
//! (code, status).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use axum::http::Method;
use parking_lot::Mutex;

/// Upper bounds (seconds) of the request latency histogram.
pub(crate) const BUCKETS: [f64; 14] = [
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// [`BUCKETS`] in nanoseconds.
const BUCKETS_NS: [u64; 14] = [
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    5_000_000_000,
];

/// The route label of requests no route matched.
pub(crate) const UNMATCHED: &str = "unmatched";

/// Method labels, sorted (the rows render in (route, method) order). `OTHER`: any
/// extension method (one row, so made-up methods cannot grow the table).
pub(crate) const METHODS: [&str; 10] = [
    "CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "OTHER", "PATCH", "POST", "PUT", "TRACE",
];

fn method_index(m: &Method) -> usize {
    match *m {
        Method::CONNECT => 0,
        Method::DELETE => 1,
        Method::GET => 2,
        Method::HEAD => 3,
        Method::OPTIONS => 4,
        Method::PATCH => 6,
        Method::POST => 7,
        Method::PUT => 8,
        Method::TRACE => 9,
        _ => 5,
    }
}

/// Status codes a response can carry (`http::StatusCode` is 100..=999).
const STATUS_LO: u16 = 100;
const STATUS_SLOTS: usize = 900;

/// One (route, method) row. The per-status counters are allocated the first time the
/// row counts a request (once; most rows never do).
#[derive(Default)]
pub(crate) struct RouteStats {
    by_status: OnceLock<Box<[AtomicU64]>>,
    /// Non-cumulative: requests whose latency fell in bucket `i` (and no lower one).
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_ns: AtomicU64,
}

/// A consistent-enough reading of a row for the exposition.
pub(crate) struct RouteSnapshot {
    /// (status, requests), ascending, only statuses seen.
    pub(crate) by_status: Vec<(u16, u64)>,
    /// Cumulative, as Prometheus wants them.
    pub(crate) buckets: [u64; BUCKETS.len()],
    pub(crate) count: u64,
    pub(crate) sum_secs: f64,
}

impl RouteStats {
    fn record(&self, status: u16, nanos: u64) {
        let slots = self
            .by_status
            .get_or_init(|| (0..STATUS_SLOTS).map(|_| AtomicU64::new(0)).collect());
        let i = usize::from(status.saturating_sub(STATUS_LO)).min(STATUS_SLOTS - 1);
        if let Some(s) = slots.get(i) {
            s.fetch_add(1, Ordering::Relaxed);
        }
        self.sum_ns.fetch_add(nanos, Ordering::Relaxed);
        // The count first, the bucket with Release: a scrape that reads the buckets
        // (Acquire) before the count never sees more in the buckets than in the count.
        self.count.fetch_add(1, Ordering::Relaxed);
        if let Some(b) = BUCKETS_NS.iter().position(|&le| nanos <= le) {
            if let Some(slot) = self.buckets.get(b) {
                slot.fetch_add(1, Ordering::Release);
            }
        }
    }

    fn snapshot(&self) -> Option<RouteSnapshot> {
        let slots = self.by_status.get()?;
        let mut buckets = [0u64; BUCKETS.len()];
        let mut acc = 0u64;
        for (out, b) in buckets.iter_mut().zip(&self.buckets) {
            acc += b.load(Ordering::Acquire);
            *out = acc;
        }
        let count = self.count.load(Ordering::Relaxed);
        if count == 0 {
            return None;
        }
        let by_status = slots
            .iter()
            .enumerate()
            .filter_map(|(i, n)| {
                let n = n.load(Ordering::Relaxed);
                (n > 0).then_some((STATUS_LO + i as u16, n))
            })
            .collect();
        Some(RouteSnapshot {
            by_status,
            buckets,
            count,
            sum_secs: self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9,
        })
    }
}

/// Slots of the error table: (code, status) pairs counted without a lock.
const ERROR_SLOTS: usize = 256;

struct ErrorSlot {
    key: OnceLock<(&'static str, u16)>,
    n: AtomicU64,
}

fn error_hash(code: &str, status: u16) -> usize {
    // FNV-1a: no allocation, no state.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in code.bytes().chain(status.to_le_bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h as usize) % ERROR_SLOTS
}

/// Request counts and latencies per (route template, method), and error responses by
/// their stable code.
pub struct HttpMetrics {
    /// Route templates, sorted; `UNMATCHED` among them.
    routes: Vec<String>,
    /// Route template -> its position in `routes` (read-only after start-up).
    /// The routes are the server's own templates (no key a client chooses), so a
    /// fixed fast hasher: this lookup runs for every request.
    index: HashMap<String, usize, foldhash::fast::FixedState>,
    /// `routes.len() * METHODS.len()` rows, route-major.
    rows: Box<[RouteStats]>,
    errors: Box<[ErrorSlot]>,
    /// Only when all of `errors` is claimed (hundreds of distinct codes: never, in
    /// practice).
    errors_overflow: Mutex<BTreeMap<(&'static str, u16), u64>>,
    /// Connection-level counters of the accept loop.
    pub connections: std::sync::Arc<crate::http::conn::ConnStats>,
}

impl Default for HttpMetrics {
    /// No routes: every request counts as `unmatched` (tests of single layers).
    fn default() -> Self {
        Self::new(std::iter::empty::<String>())
    }
}

impl HttpMetrics {
    /// Rows for every route template in `routes` (as `MatchedPath` gives them), each
    /// with every method, and for `unmatched`.
    pub fn new<S: Into<String>>(routes: impl IntoIterator<Item = S>) -> Self {
        let mut routes: Vec<String> = routes.into_iter().map(Into::into).collect();
        routes.push(UNMATCHED.to_owned());
        routes.sort();
        routes.dedup();
        let index = routes.iter().enumerate().map(|(i, r)| (r.clone(), i)).collect();
        let rows = (0..routes.len() * METHODS.len())
            .map(|_| RouteStats::default())
            .collect();
        Self {
            routes,
            index,
            rows,
            errors: (0..ERROR_SLOTS)
                .map(|_| ErrorSlot {
                    key: OnceLock::new(),
                    n: AtomicU64::new(0),
                })
                .collect(),
            errors_overflow: Mutex::default(),
            connections: std::sync::Arc::default(),
        }
    }

    /// Rows for every route of the OpenAPI document `doc` (every route the router
    /// registers).
    pub fn for_document(doc: &utoipa::openapi::OpenApi) -> Self {
        Self::new(doc.paths.paths.keys().cloned())
    }

    /// Counts an error response (called where error bodies are rendered).
    pub fn error(&self, code: &'static str, status: u16) {
        let start = error_hash(code, status);
        for j in 0..ERROR_SLOTS {
            let Some(slot) = self.errors.get((start + j) % ERROR_SLOTS) else {
                break;
            };
            let key = match slot.key.get() {
                Some(k) => k,
                None => {
                    // Claim it; whoever won, the slot now has a key.
                    let _ = slot.key.set((code, status));
                    match slot.key.get() {
                        Some(k) => k,
                        None => continue,
                    }
                }
            };
            if key.0 == code && key.1 == status {
                slot.n.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        *self.errors_overflow.lock().entry((code, status)).or_default() += 1;
    }

    /// Error responses counted for (`code`, `status`).
    pub fn error_count(&self, code: &str, status: u16) -> u64 {
        self.errors_by_code()
            .into_iter()
            .find(|(c, s, _)| *c == code && *s == status)
            .map_or(0, |(_, _, n)| n)
    }

    /// (code, status, responses), sorted by code then status; only those counted.
    pub(crate) fn errors_by_code(&self) -> Vec<(&'static str, u16, u64)> {
        let mut all: BTreeMap<(&'static str, u16), u64> = self.errors_overflow.lock().clone();
        for slot in self.errors.iter() {
            if let Some(&k) = slot.key.get() {
                let n = slot.n.load(Ordering::Relaxed);
                if n > 0 {
                    *all.entry(k).or_default() += n;
                }
            }
        }
        all.into_iter().map(|((c, s), n)| (c, s, n)).collect()
    }

    /// Counts one request: `route` is the matched route template (`None`: no route
    /// matched, or one the router did not declare), `nanos` its latency.
    pub(crate) fn record(&self, route: Option<&str>, method: &Method, status: u16, nanos: u64) {
        let r = route
            .and_then(|r| self.index.get(r))
            .or_else(|| self.index.get(UNMATCHED))
            .copied()
            .unwrap_or(0);
        if let Some(row) = self.rows.get(r * METHODS.len() + method_index(method)) {
            row.record(status, nanos);
        }
    }

    /// ((route, method), reading) of every row that counted a request, in (route,
    /// method) order.
    pub(crate) fn routes(&self) -> Vec<((&str, &'static str), RouteSnapshot)> {
        let mut out = Vec::new();
        for (i, row) in self.rows.iter().enumerate() {
            if let Some(s) = row.snapshot() {
                let route = self.routes.get(i / METHODS.len()).map_or(UNMATCHED, String::as_str);
                let method = METHODS.get(i % METHODS.len()).copied().unwrap_or("OTHER");
                out.push(((route, method), s));
            }
        }
        out
    }

    /// Whether `route` has its own rows (else it counts as `unmatched`).
    pub fn knows_route(&self, route: &str) -> bool {
        self.index.contains_key(route)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use proptest::prelude::*;

    use super::*;

    /// A row as the old counters kept it: by status, cumulative buckets, count, sum.
    type OldRow = (BTreeMap<u16, u64>, [u64; BUCKETS.len()], u64, u64);

    /// The counters as they were: one map under one lock.
    #[derive(Default)]
    struct OneMap {
        routes: BTreeMap<(String, String), OldRow>,
    }

    impl OneMap {
        fn record(&mut self, route: String, method: String, status: u16, nanos: u64) {
            let r = self.routes.entry((route, method)).or_default();
            *r.0.entry(status).or_default() += 1;
            r.2 += 1;
            r.3 += nanos;
            for (b, le) in r.1.iter_mut().zip(BUCKETS_NS) {
                if nanos <= le {
                    *b += 1;
                }
            }
        }
    }

    const ROUTES: [&str; 4] = ["/api/v1/quotes/{symbol}", "/health", "/metrics", "/api/v1/orders"];

    fn method(i: u8) -> Method {
        match i {
            0 => Method::GET,
            1 => Method::POST,
            2 => Method::DELETE,
            3 => Method::PUT,
            4 => Method::PATCH,
            5 => Method::HEAD,
            6 => Method::OPTIONS,
            7 => Method::TRACE,
            8 => Method::CONNECT,
            _ => Method::from_bytes(b"BREW").unwrap(),
        }
    }

    proptest! {
        /// Any requests (declared and unknown routes, every method, any status and
        /// latency): the rows count exactly what one locked map counted, an unknown
        /// route as `unmatched` and an extension method as `OTHER`.
        #[test]
        fn atomics_count_exactly_what_the_locked_map_counted(
            reqs in proptest::collection::vec(
                (0usize..6, 0u8..10, 100u16..1000, prop_oneof![0u64..6_000_000_000, Just(100_000u64), Just(5_000_000_000u64), any::<u32>().prop_map(u64::from)]),
                0..300,
            ),
        ) {
            let m = HttpMetrics::new(ROUTES);
            let mut one = OneMap::default();
            for (r, meth, status, nanos) in reqs {
                let route = ROUTES.get(r).copied();
                let route = if r == 5 { Some("/not/declared") } else { route };
                let meth = method(meth);
                m.record(route, &meth, status, nanos);
                let label = route.filter(|r| ROUTES.contains(r)).unwrap_or(UNMATCHED);
                let mlabel = METHODS[method_index(&meth)];
                one.record(label.to_owned(), mlabel.to_owned(), status, nanos);
            }
            let got = m.routes();
            prop_assert_eq!(got.len(), one.routes.len());
            for (((route, meth), s), ((r2, m2), (by_status, buckets, count, sum))) in got.iter().zip(&one.routes) {
                prop_assert_eq!((*route, *meth), (r2.as_str(), m2.as_str()));
                prop_assert_eq!(&s.by_status, &by_status.iter().map(|(k, v)| (*k, *v)).collect::<Vec<_>>());
                prop_assert_eq!(&s.buckets, buckets);
                prop_assert_eq!(s.count, *count);
                prop_assert_eq!(s.sum_secs, *sum as f64 / 1e9);
            }
        }

        /// Any error codes and statuses, more pairs than the lock-free table holds:
        /// every pair counted exactly, listed in (code, status) order.
        #[test]
        fn errors_count_exactly_by_code_and_status(
            errs in proptest::collection::vec((0usize..400, prop_oneof![Just(400u16), Just(429), Just(500)]), 0..2_000),
        ) {
            // `&'static str` codes as the API has them (leaked once per distinct code).
            let codes: Vec<&'static str> = (0..400).map(|i| &*Box::leak(format!("CODE_{i}").into_boxed_str())).collect();
            let m = HttpMetrics::default();
            let mut one: BTreeMap<(&'static str, u16), u64> = BTreeMap::new();
            for (c, status) in errs {
                m.error(codes[c], status);
                *one.entry((codes[c], status)).or_default() += 1;
            }
            let want: Vec<_> = one.into_iter().map(|((c, s), n)| (c, s, n)).collect();
            prop_assert_eq!(m.errors_by_code(), want);
        }
    }

    /// Threads counting the same rows and codes at once lose nothing.
    #[test]
    fn concurrent_requests_are_all_counted() {
        let m = Arc::new(HttpMetrics::new(ROUTES));
        let threads: Vec<_> = (0..4u64)
            .map(|t| {
                let m = Arc::clone(&m);
                std::thread::spawn(move || {
                    for i in 0..10_000u64 {
                        m.record(
                            Some(ROUTES[(i % 2) as usize]),
                            &Method::GET,
                            200 + (i % 3) as u16,
                            t * 1_000 + i,
                        );
                        m.error("RATE_LIMITED", 429);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        let rows = m.routes();
        let total: u64 = rows.iter().map(|(_, s)| s.count).sum();
        assert_eq!(total, 40_000);
        for (_, s) in &rows {
            assert_eq!(s.by_status.iter().map(|(_, n)| n).sum::<u64>(), s.count);
            assert_eq!(s.buckets[BUCKETS.len() - 1], s.count, "all under 5 s");
        }
        let want_sum: u64 = (0..4u64)
            .map(|t| (0..10_000u64).map(|i| t * 1_000 + i).sum::<u64>())
            .sum();
        let sum: f64 = rows.iter().map(|(_, s)| s.sum_secs).sum();
        assert!((sum - want_sum as f64 / 1e9).abs() < 1e-9, "{sum}");
        assert_eq!(m.error_count("RATE_LIMITED", 429), 40_000);
    }

    /// Counting a request or an error allocates nothing once its row or code has been
    /// seen (a row's status table is allocated on its first request only).
    #[test]
    fn counting_does_not_allocate() {
        let m = HttpMetrics::new(ROUTES);
        m.record(Some(ROUTES[0]), &Method::GET, 200, 1);
        m.record(None, &Method::GET, 404, 1);
        m.error("NOT_FOUND", 404);
        let (_, n) = stocksblitz_testkit::alloc::count_allocations(|| {
            for i in 0..1_000u64 {
                m.record(Some(ROUTES[0]), &Method::GET, 200 + (i % 300) as u16, i * 1_000);
                m.record(Some("/no/such/route"), &Method::GET, 404, i);
                m.error("NOT_FOUND", 404);
            }
        });
        assert_eq!(n, 0);
    }

    /// The router's routes have their own rows, by the template `MatchedPath` gives
    /// (nested routes with their `/api/v1` prefix).
    #[test]
    fn rows_for_every_route_of_the_router() {
        let m = HttpMetrics::for_document(crate::http::router::document());
        for r in [
            "/api/v1/quotes/{symbol}",
            "/api/v1/orders",
            "/health",
            "/health/ready",
            "/metrics",
            UNMATCHED,
        ] {
            assert!(m.knows_route(r), "{r}");
        }
        assert!(!m.knows_route("/api/v1/quotes/BTCUSDT"));
    }
}
