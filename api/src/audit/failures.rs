//! Authentication failures, aggregated per source address so that anonymous callers
//! cannot grow the audit log without bound: the first failure from an address in an
//! interval is written at once (with its request id, route and code); the repeats in
//! that interval become one line with their count when it ends. At most
//! `auth_failure_sources` addresses are tracked per interval; failures from any
//! further address share one "other" line. So an interval adds at most about
//! 2 x (sources + 1) lines, whatever the callers do.

use std::collections::{BTreeMap, HashMap};

use super::{Actor, Entry};

/// What the caller knows about one failure.
#[derive(Debug, Clone)]
pub struct Failure {
    /// `ip:...` (IPv6: the /64), from `ratelimit::address_key`.
    pub source: String,
    pub request_id: String,
    pub route: String,
    pub code: &'static str,
    pub status: u16,
    pub at_ns: i64,
}

/// The source shared by failures from addresses past `auth_failure_sources`.
pub const OTHER: &str = "other";

struct Window {
    opened_ns: i64,
    first_request_id: String,
    /// Failures after the first, by code.
    repeats: BTreeMap<&'static str, u64>,
    /// Credentials refused unchecked (the address's failure budget was spent).
    refused: u64,
    last_route: String,
    status: u16,
}

impl Window {
    fn open(f: &Failure) -> Self {
        Self {
            opened_ns: f.at_ns,
            first_request_id: f.request_id.clone(),
            repeats: BTreeMap::new(),
            refused: 0,
            last_route: f.route.clone(),
            status: f.status,
        }
    }
}

/// The open windows. Not thread-safe by itself: the audit log keeps it in a mutex.
pub struct Aggregator {
    interval_ns: i64,
    max_sources: usize,
    windows: HashMap<String, Window>,
    other: Option<Window>,
}

fn first_line(f: &Failure, source: &str) -> Entry {
    Entry {
        action: "auth.failure",
        actor: Actor::anonymous(),
        request_id: f.request_id.clone(),
        outcome: f.code.to_owned(),
        status: f.status,
        details: serde_json::json!({ "route": f.route, "source": source, "count": 1 }),
        at_ns: f.at_ns,
    }
}

impl Aggregator {
    pub fn new(interval_secs: u64, max_sources: usize) -> Self {
        Self {
            interval_ns: (interval_secs.max(1) as i64).saturating_mul(1_000_000_000),
            max_sources: max_sources.max(1),
            windows: HashMap::new(),
            other: None,
        }
    }

    /// Counts a failure; returns the line to write now (the first of its window).
    pub fn failure(&mut self, f: &Failure) -> Option<Entry> {
        if !self.windows.contains_key(&f.source) {
            if self.windows.len() < self.max_sources {
                self.windows.insert(f.source.clone(), Window::open(f));
                return Some(first_line(f, &f.source));
            }
            if self.other.is_none() {
                self.other = Some(Window::open(f));
                return Some(first_line(f, OTHER));
            }
        }
        let window = self.windows.get_mut(&f.source).or(self.other.as_mut())?;
        *window.repeats.entry(f.code).or_insert(0) += 1;
        window.last_route.clone_from(&f.route);
        window.status = f.status;
        None
    }

    /// Counts credentials refused unchecked from `source` (no line of its own: they
    /// are in the window's aggregated line, opened now if the source has none).
    pub fn refused(&mut self, source: &str, at_ns: i64) {
        let open = || Window {
            opened_ns: at_ns,
            first_request_id: String::new(),
            repeats: BTreeMap::new(),
            refused: 0,
            last_route: String::new(),
            status: 429,
        };
        let w = if self.windows.contains_key(source) || self.windows.len() < self.max_sources {
            self.windows.entry(source.to_owned()).or_insert_with(open)
        } else {
            self.other.get_or_insert_with(open)
        };
        w.refused += 1;
    }

    /// Closes the windows older than the interval (all of them with `all`); returns the
    /// aggregated lines of those that saw repeats.
    pub fn flush(&mut self, now_ns: i64, all: bool) -> Vec<Entry> {
        let due = |w: &Window| all || now_ns.saturating_sub(w.opened_ns) >= self.interval_ns;
        let mut out = Vec::new();
        let interval_secs = self.interval_ns / 1_000_000_000;
        let mut close = |source: &str, w: Window| {
            let count: u64 = w.repeats.values().sum();
            if count == 0 && w.refused == 0 {
                return;
            }
            // The most frequent code is the outcome; all of them are in the details.
            let outcome = w
                .repeats
                .iter()
                .max_by_key(|(_, n)| **n)
                .map_or("RATE_LIMITED", |(c, _)| *c);
            out.push(Entry {
                action: "auth.failure",
                actor: Actor::anonymous(),
                request_id: w.first_request_id.clone(),
                outcome: outcome.to_owned(),
                status: w.status,
                details: serde_json::json!({
                    "source": source,
                    "count": count,
                    "codes": w.repeats,
                    "refused_unchecked": w.refused,
                    "interval_secs": interval_secs,
                    "last_route": w.last_route,
                    "repeats": true,
                }),
                at_ns: now_ns,
            });
        };
        let keys: Vec<String> = self
            .windows
            .iter()
            .filter(|(_, w)| due(w))
            .map(|(k, _)| k.clone())
            .collect();
        for k in keys {
            if let Some(w) = self.windows.remove(&k) {
                close(&k, w);
            }
        }
        if self.other.as_ref().is_some_and(due) {
            if let Some(w) = self.other.take() {
                close(OTHER, w);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn failure(source: u16, t_ms: i64) -> Failure {
        Failure {
            source: format!("ip:10.0.{}.{}", source / 256, source % 256),
            request_id: format!("req-{t_ms}"),
            route: "GET /api/v1/orders".into(),
            code: if t_ms % 2 == 0 { "UNAUTHORIZED" } else { "BAD_SIGNATURE" },
            status: 401,
            at_ns: t_ms * 1_000_000,
        }
    }

    proptest! {
        /// Any stream of failures from any addresses: every failure is counted exactly
        /// once (first lines count 1, aggregated lines their count), and no interval
        /// writes more than 2 x (sources + 1) lines.
        #[test]
        fn every_failure_counted_once_and_lines_bounded(
            max_sources in 1usize..20,
            events in proptest::collection::vec((0u16..60, 0i64..400), 1..800),
        ) {
            let interval_ms = 1_000;
            let mut a = Aggregator::new(1, max_sources);
            let mut now_ms = 0i64;
            let mut lines = Vec::new();
            let mut per_interval: HashMap<i64, usize> = HashMap::new();
            for (src, gap) in &events {
                now_ms += gap;
                for e in a.flush(now_ms * 1_000_000, false) {
                    *per_interval.entry(now_ms / interval_ms).or_default() += 1;
                    lines.push(e);
                }
                if let Some(e) = a.failure(&failure(*src, now_ms)) {
                    *per_interval.entry(now_ms / interval_ms).or_default() += 1;
                    lines.push(e);
                }
            }
            lines.extend(a.flush(now_ms * 1_000_000, true));
            let counted: u64 = lines.iter().map(|l| l.details["count"].as_u64().unwrap_or(0)).sum();
            prop_assert_eq!(counted, events.len() as u64);
            for (i, n) in per_interval {
                // Windows that close in interval i opened in i - 1 or i.
                prop_assert!(n <= 2 * 2 * (max_sources + 1), "interval {i}: {n} lines");
            }
        }
    }

    #[test]
    fn first_at_once_repeats_aggregated_other_addresses_shared() {
        let mut a = Aggregator::new(60, 2);
        assert!(a.failure(&failure(1, 0)).is_some());
        for t in 1..=100 {
            assert!(a.failure(&failure(1, t)).is_none());
        }
        a.refused("ip:10.0.0.1", 8_000_000);
        assert!(a.failure(&failure(2, 5)).is_some());
        // A third address: the shared line, then its repeats and a fourth's are counted.
        let other = a.failure(&failure(3, 6)).expect("first of others");
        assert_eq!(other.details["source"], OTHER);
        assert!(a.failure(&failure(4, 7)).is_none());
        assert!(a.flush(59_000_000_000, false).is_empty(), "the interval is not over");
        let lines = a.flush(61_000_000_000, false);
        assert_eq!(
            lines.len(),
            2,
            "address 1's repeats and the others' (address 2 had none)"
        );
        let one = lines
            .iter()
            .find(|l| l.details["source"] == "ip:10.0.0.1")
            .expect("address 1");
        assert_eq!(one.details["count"], 100);
        assert_eq!(one.details["refused_unchecked"], 1);
        assert_eq!(one.details["codes"]["UNAUTHORIZED"], 50);
        assert!(a.flush(120_000_000_000, true).is_empty());
    }
}
