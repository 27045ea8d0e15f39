//! Keeping a correct local Binance spot book: REST snapshot + buffered diff events.
//!
//! Binance's documented procedure ("How to manage a local order book correctly"):
//! buffer diff events from the stream; fetch a depth snapshot; if the snapshot is older
//! than the first buffered event (`lastUpdateId < U - 1` of the first), fetch again;
//! drop buffered events with `u <= lastUpdateId`; then apply the update procedure to
//! every buffered event and to every later one alike: an event whose `u` is at or below
//! the book's update id is old (a duplicate) and ignored; an event whose `U` is above
//! the book's update id + 1 means events were missed: the book is discarded and the
//! procedure starts again; otherwise its levels are applied (quantity 0 deletes) and the
//! book's update id becomes its `u`.
//!
//! Continuity is checked while buffering too, so the book never goes LIVE over a hole:
//! a buffered event that does not continue the previous one drops what was buffered
//! before it and raises the *floor*, the oldest snapshot that can still be used; a diff
//! rejected as malformed is a hole of its own (its ids are known, its levels are not),
//! so it raises the floor past itself. A snapshot below the floor is refetched.
//!
//! The buffer is allocated once with a fixed capacity; overflowing it while waiting for
//! a snapshot restarts the sync rather than growing. A diff is validated in full before
//! any of it is applied; its levels are staged in a fixed scratch buffer on the way, so
//! a diff is walked once (one with more than [`STAGED_LEVELS`] levels, twice).

use stocksblitz_engine::{BookFlags, Price, Qty, Side};

use super::parse::{for_each_level, DepthSnapshot, DepthUpdate, ParseError};

/// What the caller must do after an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncOutcome {
    /// Applied (or ignored as old); nothing to do.
    Ok,
    /// Buffered while waiting for a snapshot.
    Buffered,
    /// Fetch a (new) REST snapshot; the book is not valid until it is applied.
    NeedSnapshot,
    /// A sequence gap on a LIVE book: book discarded, fetch a snapshot. `expected` was
    /// the next id.
    Gap { expected: u64, got: u64 },
    /// A sequence gap among buffered events while a snapshot is already on its way:
    /// count it; that snapshot is refetched if it turns out older than the gap.
    BufferGap { expected: u64, got: u64 },
    /// A diff with readable ids but invalid levels: its changes are lost, so the book
    /// is not valid until a snapshot newer than it is applied. `fetch`: the book was
    /// LIVE, a snapshot must be requested (while syncing one is already on its way).
    Rejected {
        error: ParseError,
        expected: u64,
        fetch: bool,
    },
    /// An old diff (already in the book) with invalid levels: a counted error that
    /// changes nothing.
    Malformed(ParseError),
    /// The snapshot and buffered events were applied: the book is live.
    Synced,
}

#[derive(Debug, Clone, Copy)]
struct Buffered {
    first_id: u64,
    final_id: u64,
    side: Side,
    price: Price,
    qty: Qty,
    /// Last level of its event (where the book is consistent).
    last: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting for a snapshot; diff events are buffered.
    Syncing,
    /// Applying diffs; `last` is the last applied final update id.
    Live { last: u64 },
}

/// Levels of one live diff staged while it is validated (allocated once).
pub const STAGED_LEVELS: usize = 256;

/// Sync state for one symbol.
#[derive(Debug, Clone)]
pub struct DepthSync {
    state: State,
    buffer: Vec<Buffered>,
    /// While syncing: the final id of the newest event seen (buffered or lost), so the
    /// next one must continue from it.
    seen: Option<u64>,
    /// While syncing: the oldest usable snapshot id (everything up to it is lost).
    floor: u64,
    staged: Vec<(Side, Price, Qty)>,
    capacity: usize,
    price_scale: u8,
    qty_scale: u8,
}

/// Receives book deltas: side, price, absolute qty (0 = delete), flags, and the
/// update id of the event (or snapshot) the level came from.
pub trait DeltaSink {
    fn delta(&mut self, side: Side, price: Price, qty: Qty, flags: BookFlags, update_id: u64);
}

impl<F: FnMut(Side, Price, Qty, BookFlags, u64)> DeltaSink for F {
    fn delta(&mut self, side: Side, price: Price, qty: Qty, flags: BookFlags, update_id: u64) {
        self(side, price, qty, flags, update_id)
    }
}

impl DepthSync {
    /// `capacity`: most buffered levels while waiting for a snapshot.
    pub fn new(capacity: usize, price_scale: u8, qty_scale: u8) -> Self {
        Self {
            state: State::Syncing,
            buffer: Vec::with_capacity(capacity),
            seen: None,
            floor: 0,
            staged: Vec::with_capacity(STAGED_LEVELS),
            capacity,
            price_scale,
            qty_scale,
        }
    }

    pub fn is_live(&self) -> bool {
        matches!(self.state, State::Live { .. })
    }

    /// The last applied update id, when live.
    pub fn last_update_id(&self) -> Option<u64> {
        match self.state {
            State::Live { last } => Some(last),
            State::Syncing => None,
        }
    }

    /// Discards the book state and starts over (after a reconnect, say).
    pub fn reset(&mut self) {
        self.state = State::Syncing;
        self.buffer.clear();
        self.seen = None;
        self.floor = 0;
    }

    fn levels(&self, ev: &DepthUpdate<'_>, mut f: impl FnMut(Side, Price, Qty)) -> Result<(), ParseError> {
        for_each_level(ev.bids, Side::Buy, self.price_scale, self.qty_scale, &mut f)?;
        for_each_level(ev.asks, Side::Sell, self.price_scale, self.qty_scale, &mut f)
    }

    /// Applies an event's levels as one batch (END_OF_BATCH on the last).
    fn apply(&mut self, ev: &DepthUpdate<'_>, out: &mut impl DeltaSink) -> Result<(), ParseError> {
        // Validate the whole event before emitting anything, so a malformed level
        // never leaves half an event applied; stage the levels on the way.
        let (ps, qs) = (self.price_scale, self.qty_scale);
        let staged = &mut self.staged;
        staged.clear();
        let mut total = 0usize;
        let mut stage = |side, price, qty| {
            if staged.len() < STAGED_LEVELS {
                staged.push((side, price, qty));
            }
            total += 1;
        };
        for_each_level(ev.bids, Side::Buy, ps, qs, &mut stage)?;
        for_each_level(ev.asks, Side::Sell, ps, qs, &mut stage)?;
        let flags = |n: usize| {
            if n == total {
                BookFlags::END_OF_BATCH
            } else {
                BookFlags::NONE
            }
        };
        if total == self.staged.len() {
            for (k, &(side, price, qty)) in self.staged.iter().enumerate() {
                out.delta(side, price, qty, flags(k + 1), ev.final_id);
            }
            return Ok(());
        }
        // More levels than the stage holds: walk the (valid) event again.
        let mut n = 0usize;
        self.levels(ev, |side, price, qty| {
            n += 1;
            out.delta(side, price, qty, flags(n), ev.final_id);
        })
    }

    /// A diff event from the stream.
    pub fn on_diff(&mut self, ev: &DepthUpdate<'_>, out: &mut impl DeltaSink) -> SyncOutcome {
        match self.state {
            State::Live { last } => {
                if ev.final_id <= last {
                    return self.old(ev);
                }
                if ev.first_id > last + 1 {
                    self.reset();
                    // Starts the buffer afresh: cannot report another gap.
                    let _ = self.buffer_event(ev);
                    return SyncOutcome::Gap {
                        expected: last + 1,
                        got: ev.first_id,
                    };
                }
                match self.apply(ev, out) {
                    Ok(()) => {
                        self.state = State::Live { last: ev.final_id };
                        SyncOutcome::Ok
                    }
                    Err(error) => {
                        self.reset();
                        self.lost(ev);
                        SyncOutcome::Rejected {
                            error,
                            expected: last + 1,
                            fetch: true,
                        }
                    }
                }
            }
            State::Syncing => self.buffer_event(ev),
        }
    }

    /// An event already in the book (or buffered): ignored, but a malformed one is
    /// still reported.
    fn old(&self, ev: &DepthUpdate<'_>) -> SyncOutcome {
        match self.levels(ev, |_, _, _| {}) {
            Ok(()) => SyncOutcome::Ok,
            Err(e) => SyncOutcome::Malformed(e),
        }
    }

    /// `ev` cannot be applied: nothing buffered so far is usable, and a usable
    /// snapshot must include `ev`.
    fn lost(&mut self, ev: &DepthUpdate<'_>) {
        self.buffer.clear();
        self.floor = self.floor.max(ev.final_id);
        self.seen = Some(ev.final_id);
    }

    fn buffer_event(&mut self, ev: &DepthUpdate<'_>) -> SyncOutcome {
        let mut gap = None;
        match self.seen {
            Some(seen) if ev.final_id <= seen => return self.old(ev),
            Some(seen) if ev.first_id > seen + 1 => {
                // Events between were missed: what is buffered cannot be used.
                self.buffer.clear();
                self.floor = ev.first_id - 1;
                gap = Some(SyncOutcome::BufferGap {
                    expected: seen + 1,
                    got: ev.first_id,
                });
            }
            Some(_) => {}
            None => self.floor = self.floor.max(ev.first_id.saturating_sub(1)),
        }
        let mut total = 0usize;
        if let Err(error) = self.levels(ev, |_, _, _| total += 1) {
            let expected = self.seen.map_or(ev.first_id, |s| s + 1);
            self.lost(ev);
            return SyncOutcome::Rejected {
                error,
                expected,
                fetch: false,
            };
        }
        self.seen = Some(ev.final_id);
        if self.buffer.len() + total.max(1) > self.capacity {
            // Everything buffered is dropped: a usable snapshot must include `ev`.
            self.lost(ev);
            return SyncOutcome::NeedSnapshot;
        }
        if total == 0 {
            // Keep the ids: an empty event still advances the sequence.
            self.buffer.push(Buffered {
                first_id: ev.first_id,
                final_id: ev.final_id,
                side: Side::Buy,
                price: Price::ZERO,
                qty: Qty(-1),
                last: true,
            });
            return gap.unwrap_or(SyncOutcome::Buffered);
        }
        let mut n = 0usize;
        let (first_id, final_id) = (ev.first_id, ev.final_id);
        let (ps, qs) = (self.price_scale, self.qty_scale);
        let buffer = &mut self.buffer;
        let mut push = |side, price, qty| {
            n += 1;
            buffer.push(Buffered {
                first_id,
                final_id,
                side,
                price,
                qty,
                last: n == total,
            });
        };
        // Validated above: these walks cannot fail.
        let _ = for_each_level(ev.bids, Side::Buy, ps, qs, &mut push);
        let _ = for_each_level(ev.asks, Side::Sell, ps, qs, &mut push);
        gap.unwrap_or(SyncOutcome::Buffered)
    }

    /// A REST snapshot arrived. Emits the snapshot (`CLEAR`...`END_OF_BATCH`) and the
    /// buffered events that follow it, or asks for another snapshot.
    pub fn on_snapshot(
        &mut self,
        snap: &DepthSnapshot<'_>,
        out: &mut impl DeltaSink,
    ) -> Result<SyncOutcome, ParseError> {
        let id = snap.last_update_id;
        if id < self.floor {
            // Older than an event that was missed or could not be buffered.
            return Ok(SyncOutcome::NeedSnapshot);
        }
        // The update procedure over the buffered events, checked before anything is
        // emitted: each event newer than the book continues it (the first straddles
        // the snapshot's id). One entry per event carries `last`.
        let mut last = id;
        for b in self.buffer.iter().filter(|b| b.last) {
            if b.final_id <= last {
                continue;
            }
            if b.first_id > last + 1 {
                // Cannot happen while buffering checks continuity; never go live
                // over a hole all the same.
                self.buffer.clear();
                self.floor = self.seen.unwrap_or(id);
                return Ok(SyncOutcome::NeedSnapshot);
            }
            last = b.final_id;
        }
        // Validate the snapshot before touching the book.
        let (ps, qs) = (self.price_scale, self.qty_scale);
        let mut total = 0usize;
        for_each_level(snap.bids, Side::Buy, ps, qs, |_, _, _| total += 1)?;
        for_each_level(snap.asks, Side::Sell, ps, qs, |_, _, _| total += 1)?;
        let snapshot = BookFlags::SNAPSHOT;
        if total == 0 {
            out.delta(
                Side::Buy,
                Price::ZERO,
                Qty::ZERO,
                snapshot.with(BookFlags::CLEAR).with(BookFlags::END_OF_BATCH),
                id,
            );
        } else {
            let mut n = 0usize;
            let mut emit = |side, price, qty| {
                let mut flags = snapshot;
                if n == 0 {
                    flags = flags.with(BookFlags::CLEAR);
                }
                n += 1;
                if n == total {
                    flags = flags.with(BookFlags::END_OF_BATCH);
                }
                out.delta(side, price, qty, flags, id);
            };
            for_each_level(snap.bids, Side::Buy, ps, qs, &mut emit)?;
            for_each_level(snap.asks, Side::Sell, ps, qs, &mut emit)?;
        }
        // Buffered final ids increase strictly (older events are not buffered).
        for b in self.buffer.iter().filter(|b| b.final_id > id) {
            if b.qty.0 >= 0 {
                let flags = if b.last {
                    BookFlags::END_OF_BATCH
                } else {
                    BookFlags::NONE
                };
                out.delta(b.side, b.price, b.qty, flags, b.final_id);
            }
        }
        self.buffer.clear();
        self.seen = None;
        self.floor = 0;
        self.state = State::Live { last };
        Ok(SyncOutcome::Synced)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stocksblitz_engine::L2Book;

    fn diff(first: u64, last: u64, bids: &'static str, asks: &'static str) -> DepthUpdate<'static> {
        DepthUpdate {
            symbol: b"BTCUSDT",
            event_time: stocksblitz_engine::UnixNanos::UNKNOWN,
            first_id: first,
            final_id: last,
            bids: bids.as_bytes(),
            asks: asks.as_bytes(),
        }
    }

    fn snap(id: u64, bids: &'static str, asks: &'static str) -> DepthSnapshot<'static> {
        DepthSnapshot {
            last_update_id: id,
            bids: bids.as_bytes(),
            asks: asks.as_bytes(),
        }
    }

    struct Book(L2Book, usize);
    impl DeltaSink for Book {
        fn delta(&mut self, side: Side, price: Price, qty: Qty, flags: BookFlags, _: u64) {
            self.0.apply_flagged(side, price, qty, flags);
            self.1 += 1;
        }
    }

    fn book() -> Book {
        Book(L2Book::new(100), 0)
    }

    #[test]
    fn documented_procedure() {
        let mut s = DepthSync::new(1000, 2, 0);
        let mut b = book();
        // Buffered while no snapshot: 98-99 is older than the snapshot, 100-102 straddles.
        assert_eq!(
            s.on_diff(&diff(98, 99, r#"[["1.00","5"]]"#, "[]"), &mut b),
            SyncOutcome::Buffered
        );
        assert_eq!(
            s.on_diff(&diff(100, 102, r#"[["1.01","7"]]"#, "[]"), &mut b),
            SyncOutcome::Buffered
        );
        assert_eq!(
            s.on_diff(&diff(103, 103, "[]", r#"[["1.05","0"]]"#), &mut b),
            SyncOutcome::Buffered
        );
        let r = s
            .on_snapshot(
                &snap(100, r#"[["1.00","1"]]"#, r#"[["1.05","2"],["1.06","3"]]"#),
                &mut b,
            )
            .unwrap();
        assert_eq!(r, SyncOutcome::Synced);
        assert_eq!(s.last_update_id(), Some(103));
        // 98-99 was dropped (u <= lastUpdateId): 1.00 keeps the snapshot's qty.
        assert_eq!(
            b.0.bids().iter().map(|l| (l.price.0, l.qty.0)).collect::<Vec<_>>(),
            vec![(101, 7), (100, 1)]
        );
        assert_eq!(
            b.0.asks().iter().map(|l| l.price.0).collect::<Vec<_>>(),
            vec![106],
            "qty 0 deleted 1.05"
        );

        // In sequence: applied. Duplicate: ignored. Gap: reset.
        assert_eq!(
            s.on_diff(&diff(104, 104, r#"[["1.02","1"]]"#, "[]"), &mut b),
            SyncOutcome::Ok
        );
        assert_eq!(b.0.best_bid().map(|l| l.price.0), Some(102));
        let before = b.1;
        assert_eq!(
            s.on_diff(&diff(104, 104, r#"[["1.02","9"]]"#, "[]"), &mut b),
            SyncOutcome::Ok
        );
        assert_eq!(b.1, before, "duplicate not applied");
        assert_eq!(
            s.on_diff(&diff(107, 108, "[]", "[]"), &mut b),
            SyncOutcome::Gap {
                expected: 105,
                got: 107
            }
        );
        assert!(!s.is_live());
    }

    #[test]
    fn stale_snapshot_and_non_straddling_first_event_refetch() {
        let mut s = DepthSync::new(1000, 2, 0);
        let mut b = book();
        s.on_diff(&diff(200, 205, "[]", "[]"), &mut b);
        assert_eq!(
            s.on_snapshot(&snap(150, "[]", "[]"), &mut b).unwrap(),
            SyncOutcome::NeedSnapshot
        );
        assert_eq!(b.1, 0, "nothing applied from a stale snapshot");
        assert_eq!(
            s.on_snapshot(&snap(205, "[]", "[]"), &mut b).unwrap(),
            SyncOutcome::Synced
        );
        assert_eq!(s.last_update_id(), Some(205));
    }

    #[test]
    fn buffer_overflow_asks_for_a_snapshot() {
        let mut s = DepthSync::new(2, 2, 0);
        let mut b = book();
        s.on_diff(&diff(1, 1, r#"[["1.00","1"]]"#, "[]"), &mut b);
        assert_eq!(
            s.on_diff(&diff(2, 2, r#"[["1.00","1"],["1.01","1"]]"#, "[]"), &mut b),
            SyncOutcome::NeedSnapshot
        );
    }

    /// Diffs up to the stage's size are walked once, bigger ones twice: either way the
    /// whole diff is applied in order with END_OF_BATCH on its last level only, and a
    /// bad last level applies none of it.
    #[test]
    fn small_and_big_diffs_apply_whole() {
        for levels in [
            1,
            3,
            STAGED_LEVELS - 1,
            STAGED_LEVELS,
            STAGED_LEVELS + 1,
            3 * STAGED_LEVELS,
        ] {
            let mut s = DepthSync::new(100, 2, 0);
            s.on_snapshot(&snap(10, "[]", "[]"), &mut |_, _, _, _, _| {}).unwrap();
            let bids: Vec<String> = (0..levels)
                .map(|i| format!(r#"["{}.00","{}"]"#, 1000 - i, i + 1))
                .collect();
            let bids = format!("[{}]", bids.join(","));
            fn ev<'a>(id: u64, asks: &'a str, bids: &'a str) -> DepthUpdate<'a> {
                DepthUpdate {
                    symbol: b"BTCUSDT",
                    event_time: stocksblitz_engine::UnixNanos::UNKNOWN,
                    first_id: id,
                    final_id: id,
                    bids: bids.as_bytes(),
                    asks: asks.as_bytes(),
                }
            }
            let mut seen = Vec::new();
            let bad = ev(11, r#"[["2000.00","7"],["x","1"]]"#, &bids);
            assert!(matches!(
                s.on_diff(&bad, &mut |_, _, _, _, _| seen.push(())),
                SyncOutcome::Rejected {
                    expected: 11,
                    fetch: true,
                    ..
                }
            ));
            assert!(seen.is_empty(), "{levels} levels: nothing applied");
            assert!(!s.is_live(), "the lost diff takes the book out of LIVE");
            assert_eq!(
                s.on_snapshot(&snap(10, "[]", "[]"), &mut |_, _, _, _, _| {}).unwrap(),
                SyncOutcome::NeedSnapshot,
                "a snapshot without the lost diff is not usable"
            );
            s.on_snapshot(&snap(11, "[]", "[]"), &mut |_, _, _, _, _| {}).unwrap();
            let mut seen = Vec::new();
            let good = ev(12, r#"[["2000.00","7"]]"#, &bids);
            s.on_diff(&good, &mut |side, price, qty, flags: BookFlags, id| {
                seen.push((side, price, qty, flags, id))
            });
            assert_eq!(seen.len(), levels + 1);
            assert_eq!(
                seen.first().map(|d| (d.0, d.1, d.2)),
                Some((Side::Buy, Price(100_000), Qty(1)))
            );
            assert_eq!(
                seen.last().map(|d| (d.0, d.1, d.2, d.3)),
                Some((Side::Sell, Price(200_000), Qty(7), BookFlags::END_OF_BATCH))
            );
            let ends = seen.iter().filter(|d| d.3.contains(BookFlags::END_OF_BATCH)).count();
            assert_eq!(ends, 1, "{levels} levels");
            assert!(seen.iter().all(|d| d.4 == 12));
            assert_eq!(s.last_update_id(), Some(12));
        }
    }

    #[test]
    fn malformed_event_applies_nothing() {
        let mut s = DepthSync::new(100, 2, 0);
        let mut b = book();
        s.on_snapshot(&snap(10, r#"[["1.00","1"]]"#, "[]"), &mut b).unwrap();
        let n = b.1;
        assert!(matches!(
            s.on_diff(&diff(11, 11, r#"[["1.01","1"],["bad","1"]]"#, "[]"), &mut b),
            SyncOutcome::Rejected { .. }
        ));
        assert_eq!(b.1, n);
        assert_eq!(s.last_update_id(), None, "not LIVE without the rejected diff");
    }
}
