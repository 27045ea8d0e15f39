//! A count over the last minute in 60 one-second buckets: O(1) per event (at most 60
//! bucket resets when time jumps), no allocation, exact to the second.

use crate::time::UnixNanos;

#[derive(Debug, Clone)]
pub struct MinuteWindow {
    buckets: [u32; 60],
    /// The second the newest bucket covers.
    head: i64,
    total: u32,
}

impl Default for MinuteWindow {
    fn default() -> Self {
        Self {
            buckets: [0; 60],
            head: i64::MIN,
            total: 0,
        }
    }
}

impl MinuteWindow {
    fn advance(&mut self, at: UnixNanos) {
        let sec = at.0.div_euclid(UnixNanos::NANOS_PER_SEC);
        if sec <= self.head {
            // Same second, or a time from the past: counted in the newest bucket.
            return;
        }
        let steps = if self.head == i64::MIN {
            60
        } else {
            (sec - self.head).min(60)
        };
        for i in 1..=steps {
            let idx = (self.head.wrapping_add(i)).rem_euclid(60) as usize;
            if let Some(b) = self.buckets.get_mut(idx) {
                self.total -= *b;
                *b = 0;
            }
        }
        if self.head == i64::MIN {
            self.buckets = [0; 60];
            self.total = 0;
        }
        self.head = sec;
    }

    /// Adds `n` at `at`; returns the count over the minute ending at `at`.
    pub fn add(&mut self, at: UnixNanos, n: u32) -> u32 {
        self.advance(at);
        if let Some(b) = self.buckets.get_mut(self.head.rem_euclid(60) as usize) {
            *b = b.saturating_add(n);
        }
        self.total = self.total.saturating_add(n);
        self.total
    }

    /// The count over the minute ending at `at`.
    pub fn count(&mut self, at: UnixNanos) -> u32 {
        self.advance(at);
        self.total
    }

    pub fn clear(&mut self) {
        *self = Self::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(secs: f64) -> UnixNanos {
        UnixNanos((secs * 1e9) as i64 + 1_700_000_000 * UnixNanos::NANOS_PER_SEC)
    }

    #[test]
    fn counts_the_last_sixty_seconds() {
        let mut w = MinuteWindow::default();
        for i in 0..30 {
            w.add(s(f64::from(i)), 1);
        }
        assert_eq!(w.count(s(29.5)), 30);
        // At 59.9 s every event is still inside; at 60.0 the first second has left.
        assert_eq!(w.count(s(59.9)), 30);
        assert_eq!(w.count(s(60.0)), 29);
        assert_eq!(w.count(s(75.0)), 14);
        assert_eq!(w.count(s(200.0)), 0);
        assert_eq!(w.add(s(200.5), 3), 3);
        // Out of order: counted now.
        assert_eq!(w.add(s(150.0), 1), 4);
    }
}
