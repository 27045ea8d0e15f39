//! The level2 audit: a REST book compared with the local copy, aligned in time.
//!
//! Coinbase's level2 channel has no sequence numbers, so the handler checks the local
//! book now and then against `GET /products/{id}/book?level=2`. The two are read at
//! different moments: the REST book reflects the venue somewhere between the request
//! and the response, and the local book has applied every update received so far. In
//! a busy market their top levels almost never agree outright, and comparing them
//! naively would resubscribe on every audit.
//!
//! So the audit compares only what cannot have moved in between: levels that no
//! update touched since the request went out. The normalizer remembers the last
//! [`MovedLevels::CAPACITY`] changes per product (a fixed ring, no allocation per
//! update); an audit whose window the ring no longer covers, or that straddles a new
//! snapshot, is inconclusive rather than a mismatch. The handler also waits a moment
//! after the response before auditing, so updates the venue sent before answering have
//! arrived. Within the price range both top-N lists cover, an untouched level must have
//! the same size on both sides (absent is zero).

use stocksblitz_engine::{Level, Price, Side, UnixNanos};

/// One applied level2 change.
#[derive(Debug, Clone, Copy)]
struct Moved {
    recv: UnixNanos,
    side: Side,
    price: Price,
}

/// The most recent level2 changes of one product.
pub struct MovedLevels {
    ring: Vec<Moved>,
    /// Changes recorded since the last snapshot (the next slot is `count % CAPACITY`).
    count: usize,
    /// When the book was last rebuilt from a snapshot.
    rebuilt: UnixNanos,
}

/// What an audit concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Agree,
    Differ,
    /// The window since the request is not fully known (ring overrun, or the book was
    /// rebuilt meanwhile): neither agreement nor disagreement.
    Inconclusive,
}

impl MovedLevels {
    /// Changes remembered: at a few thousand changes a second, several seconds.
    pub const CAPACITY: usize = 16_384;

    pub fn new() -> Self {
        let empty = Moved {
            recv: UnixNanos(i64::MIN),
            side: Side::Buy,
            price: Price::ZERO,
        };
        Self {
            ring: vec![empty; Self::CAPACITY],
            count: 0,
            rebuilt: UnixNanos(i64::MIN),
        }
    }

    /// A snapshot rebuilt the book at `at`: earlier changes no longer matter.
    pub fn rebuilt(&mut self, at: UnixNanos) {
        self.count = 0;
        self.rebuilt = at;
    }

    /// An update changed `side` at `price`, received at `recv`.
    #[inline]
    pub fn record(&mut self, side: Side, price: Price, recv: UnixNanos) {
        if let Some(slot) = self.ring.get_mut(self.count % Self::CAPACITY) {
            *slot = Moved { recv, side, price };
        }
        self.count += 1;
    }

    /// The retained changes, newest first.
    fn newest_first(&self) -> impl Iterator<Item = &Moved> {
        let n = self.count.min(Self::CAPACITY);
        (1..=n).filter_map(move |back| self.ring.get((self.count - back) % Self::CAPACITY))
    }

    /// Whether every change received at or after `t` is still remembered, on a book
    /// that was not rebuilt after `t`.
    fn covers(&self, t: UnixNanos) -> bool {
        if self.rebuilt >= t {
            return false;
        }
        self.count <= Self::CAPACITY || self.newest_first().last().is_some_and(|oldest| oldest.recv < t)
    }

    fn moved_since(&self, t: UnixNanos, side: Side, price: Price) -> bool {
        self.newest_first()
            .take_while(|m| m.recv >= t)
            .any(|m| m.side == side && m.price == price)
    }

    /// Compares the top of a REST book (`rest[0]` bids, `rest[1]` asks, best first, at
    /// most `depth` each) with the local book's top `depth`, ignoring levels that moved
    /// since `requested`.
    pub fn compare(&self, local: [&[Level]; 2], rest: [&[Level]; 2], depth: usize, requested: UnixNanos) -> Verdict {
        if !self.covers(requested) {
            return Verdict::Inconclusive;
        }
        let sides = [(Side::Buy, 0usize), (Side::Sell, 1usize)];
        let differ = sides.iter().any(|&(side, k)| {
            let l = local.get(k).map_or(&[][..], |s| &s[..s.len().min(depth)]);
            let r = rest.get(k).map_or(&[][..], |s| &s[..s.len().min(depth)]);
            // `a` is at least as good as `b` on this side.
            let at_least = |a: Price, b: Price| if side == Side::Buy { a >= b } else { a <= b };
            // A full list covers prices down to its last level; a short one, all of them.
            let bound = |list: &[Level]| (list.len() >= depth).then(|| list.last().map(|x| x.price)).flatten();
            let in_range = |p: Price| [bound(l), bound(r)].into_iter().flatten().all(|b| at_least(p, b));
            let size = |list: &[Level], p: Price| list.iter().find(|x| x.price == p).map(|x| x.qty);
            l.iter().chain(r).any(|x| {
                in_range(x.price) && !self.moved_since(requested, side, x.price) && size(l, x.price) != size(r, x.price)
            })
        });
        if differ {
            Verdict::Differ
        } else {
            Verdict::Agree
        }
    }
}

impl Default for MovedLevels {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stocksblitz_engine::Qty;

    fn lv(p: i64, q: i64) -> Level {
        Level {
            price: Price(p),
            qty: Qty(q),
        }
    }

    const T0: UnixNanos = UnixNanos(1_000);

    #[test]
    fn untouched_levels_must_agree() {
        let m = MovedLevels::new();
        let bids = [lv(100, 1), lv(99, 2)];
        let asks = [lv(101, 3)];
        assert_eq!(m.compare([&bids, &asks], [&bids, &asks], 10, T0), Verdict::Agree);
        let wrong = [lv(100, 1), lv(99, 5)];
        assert_eq!(m.compare([&bids, &asks], [&wrong, &asks], 10, T0), Verdict::Differ);
        let missing = [lv(100, 1)];
        assert_eq!(m.compare([&bids, &asks], [&missing, &asks], 10, T0), Verdict::Differ);
    }

    #[test]
    fn levels_moved_after_the_request_are_not_compared() {
        let mut m = MovedLevels::new();
        m.record(Side::Buy, Price(99), UnixNanos(500)); // before the request: still compared
        m.record(Side::Buy, Price(100), UnixNanos(1_500)); // after: skipped
        m.record(Side::Sell, Price(102), UnixNanos(1_600)); // after, a new level: skipped
        let local_bids = [lv(100, 7), lv(99, 2)];
        let local_asks = [lv(101, 3), lv(102, 4)];
        let rest_bids = [lv(100, 1), lv(99, 2)];
        let rest_asks = [lv(101, 3)];
        assert_eq!(
            m.compare([&local_bids, &local_asks], [&rest_bids, &rest_asks], 10, T0),
            Verdict::Agree
        );
        let stale = [lv(100, 1), lv(99, 9)];
        assert_eq!(
            m.compare([&local_bids, &local_asks], [&stale, &rest_asks], 10, T0),
            Verdict::Differ,
            "99 did not move after the request"
        );
        // The same side only: a sell at 100 does not excuse the bid at 100.
        let mut other_side = MovedLevels::new();
        other_side.record(Side::Sell, Price(100), UnixNanos(1_500));
        assert_eq!(
            other_side.compare([&local_bids, &local_asks], [&rest_bids, &local_asks], 10, T0),
            Verdict::Differ
        );
    }

    #[test]
    fn only_the_range_both_lists_cover_is_compared() {
        let m = MovedLevels::new();
        // Depth 2: the local list reaches 99, the REST list only 100 (a level at 100.5
        // appeared there); 99 is beyond what REST shows, so it is not compared.
        let local = [lv(100, 1), lv(99, 2)];
        let rest = [lv(101, 1), lv(100, 1)];
        let v = m.compare([&local, &[]], [&rest, &[]], 2, T0);
        assert_eq!(v, Verdict::Differ, "101 is in range and only REST has it");
        let mut moved = MovedLevels::new();
        moved.record(Side::Buy, Price(101), UnixNanos(2_000));
        assert_eq!(moved.compare([&local, &[]], [&rest, &[]], 2, T0), Verdict::Agree);
    }

    #[test]
    fn an_unknown_window_is_inconclusive() {
        let mut m = MovedLevels::new();
        m.rebuilt(UnixNanos(2_000));
        let bids = [lv(100, 1)];
        let other = [lv(100, 2)];
        assert_eq!(
            m.compare([&bids, &[]], [&other, &[]], 10, T0),
            Verdict::Inconclusive,
            "rebuilt after the request"
        );
        let mut overrun = MovedLevels::new();
        for k in 0..=MovedLevels::CAPACITY as i64 {
            overrun.record(Side::Buy, Price(k), UnixNanos(1_000 + k));
        }
        assert_eq!(
            overrun.compare([&bids, &[]], [&other, &[]], 10, T0),
            Verdict::Inconclusive
        );
        assert_eq!(
            overrun.compare([&bids, &[]], [&other, &[]], 10, UnixNanos(5_000)),
            Verdict::Differ,
            "a later request is still covered"
        );
    }
}
