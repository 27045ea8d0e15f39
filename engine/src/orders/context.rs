//! What a step decided with besides its input and its instrument's market reference:
//! the visible depth a paper order swept, the commanding account's marked-to-market
//! figures, and the trading-day clock. The live manager fills these in from state that
//! is not journaled step by step (the engine's L2 books, other instruments' marks, the
//! configuration); the journal records them with the step, and replay uses the
//! recorded values, so recovery reproduces the same events even when the feed, the
//! other instruments or the configuration moved on.

use serde::{Deserialize, Serialize};

use crate::book::Level;
use crate::fixed::{Price, Qty};
use crate::ids::InstrumentId;
use crate::side::Side;

/// Most depth levels one paper order may take in one step. A sweep that needs more
/// cancels its remainder with [`super::CancelReason::DepthLimit`] (a limit order rests
/// it). Bounded so that a step stays `Copy` and fixed-size.
pub const SWEEP_LEVELS: usize = 16;

/// Why a captured depth ends where it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum SweepEnd {
    /// The visible book has no more levels.
    #[default]
    Book,
    /// The next level does not reach the order's limit price.
    Limit,
    /// The next level is beyond the price collar around the reference price.
    Collar,
    /// [`SWEEP_LEVELS`] levels were taken; the book has more.
    Levels,
}

/// The opposite side's visible levels an order may trade against, best first, all
/// within its limit and the collar. Slots past `len` are leftovers (see
/// [`Depth::clear`]): equality compares the levels in use.
#[derive(Debug, Clone, Copy)]
pub struct Depth {
    /// The instrument and the order side the levels were captured for.
    pub key: Option<(InstrumentId, Side)>,
    len: u8,
    levels: [(Price, Qty); SWEEP_LEVELS],
    pub end: SweepEnd,
}

impl Default for Depth {
    fn default() -> Self {
        Self::EMPTY
    }
}

impl PartialEq for Depth {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key && self.end == other.end && self.levels() == other.levels()
    }
}

impl Eq for Depth {}

impl Depth {
    pub const EMPTY: Depth = Depth {
        key: None,
        len: 0,
        levels: [(Price(0), Qty(0)); SWEEP_LEVELS],
        end: SweepEnd::Book,
    };

    pub fn new(instrument: InstrumentId, side: Side) -> Self {
        Self {
            key: Some((instrument, side)),
            ..Self::EMPTY
        }
    }

    /// Empties it in place: a few stores instead of copying [`Depth::EMPTY`]'s whole
    /// array (the order path resets it on every command).
    pub fn clear(&mut self) {
        self.key = None;
        self.len = 0;
        self.end = SweepEnd::Book;
    }

    /// Becomes a copy of `other` (equal to it, same bytes journaled), copying only the
    /// levels in use: an empty depth is a few stores, not 280 bytes.
    pub fn assign(&mut self, other: &Depth) {
        self.key = other.key;
        self.end = other.end;
        let n = usize::from(other.len).min(SWEEP_LEVELS);
        if let (Some(to), Some(from)) = (self.levels.get_mut(..n), other.levels.get(..n)) {
            to.copy_from_slice(from);
        }
        self.len = n as u8;
    }

    /// The levels, best first.
    pub fn levels(&self) -> &[(Price, Qty)] {
        self.levels.get(..usize::from(self.len)).unwrap_or(&[])
    }

    pub fn is_full(&self) -> bool {
        usize::from(self.len) >= SWEEP_LEVELS
    }

    /// Appends a level; false (and unchanged) when full.
    pub fn push(&mut self, price: Price, qty: Qty) -> bool {
        match self.levels.get_mut(usize::from(self.len)) {
            Some(slot) => {
                *slot = (price, qty);
                self.len += 1;
                true
            }
            None => false,
        }
    }

    /// Total quantity of the levels.
    pub fn total(&self) -> Qty {
        Qty(self.levels().iter().map(|l| l.1 .0).sum())
    }

    /// The visible book's levels as `Level`s would be given (tests, docs).
    pub fn from_levels(instrument: InstrumentId, side: Side, levels: &[Level]) -> Self {
        let mut d = Self::new(instrument, side);
        for l in levels {
            if !d.push(l.price, l.qty) {
                d.end = SweepEnd::Levels;
                break;
            }
        }
        d
    }
}

/// Journaled as the levels in use (not the whole fixed array).
#[derive(Serialize, Deserialize)]
struct DepthWire {
    key: Option<(InstrumentId, Side)>,
    levels: Vec<(Price, Qty)>,
    end: SweepEnd,
}

#[derive(Serialize)]
struct DepthWireRef<'a> {
    key: Option<(InstrumentId, Side)>,
    levels: &'a [(Price, Qty)],
    end: SweepEnd,
}

impl Serialize for Depth {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        DepthWireRef {
            key: self.key,
            levels: self.levels(),
            end: self.end,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Depth {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let w = DepthWire::deserialize(d)?;
        if w.levels.len() > SWEEP_LEVELS {
            return Err(serde::de::Error::custom(format!(
                "{} depth levels in a step, at most {SWEEP_LEVELS}",
                w.levels.len()
            )));
        }
        let mut depth = Depth {
            key: w.key,
            end: w.end,
            ..Depth::EMPTY
        };
        for (p, q) in w.levels {
            depth.push(p, q);
        }
        Ok(depth)
    }
}

/// One account's positions marked to their instruments' current reference prices,
/// in the base currency at [`super::VALUE_SCALE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Mtm {
    /// Unrealized P&L of the open positions (negative = open loss).
    pub unrealized: i128,
    /// Sum of |position qty x mark|: the positions' part of gross exposure.
    pub exposure: i128,
}

/// Where trading days start: what daily counters and DAY orders roll on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DayClock {
    /// Added to UTC to get the accounts' trading day (daily loss).
    pub offset_ns: i64,
    /// Time of day (UTC, nanoseconds after midnight) at which 24x7 instruments roll
    /// to the next trading day: their DAY orders expire then.
    pub roll_ns: i64,
}

impl DayClock {
    const DAY_NS: i64 = 86_400 * crate::time::UnixNanos::NANOS_PER_SEC;

    /// The accounts' trading day of `at` (days since the epoch).
    pub fn account_day(&self, at: i64) -> i64 {
        at.saturating_add(self.offset_ns).div_euclid(Self::DAY_NS)
    }

    /// The trading day of a 24x7 instrument at `at`: it starts at the roll time.
    pub fn day_24x7(&self, at: i64) -> i64 {
        at.saturating_sub(self.roll_ns).div_euclid(Self::DAY_NS)
    }
}

/// The context journaled with every step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct StepContext {
    /// Depth a command's paper order was checked and swept against (empty otherwise).
    pub depth: Depth,
    /// The commanding account's marks (commands only).
    pub mtm: Mtm,
    pub clock: DayClock,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// A depth cleared in place and refilled equals one built fresh with the same
        /// levels, whatever it held before (leftover slots past `len` never count),
        /// and journals the same bytes.
        #[test]
        fn a_cleared_depth_is_a_fresh_one(
            before in proptest::collection::vec((1i64..1_000, 1i64..1_000), 0..20),
            after in proptest::collection::vec((1i64..1_000, 1i64..1_000), 0..20),
        ) {
            let mut reused = Depth::new(InstrumentId(1), Side::Sell);
            for &(p, q) in &before {
                reused.push(Price(p), Qty(q));
            }
            reused.clear();
            prop_assert_eq!(reused, Depth::EMPTY);
            reused.key = Some((InstrumentId(2), Side::Buy));
            let mut fresh = Depth::new(InstrumentId(2), Side::Buy);
            for &(p, q) in &after {
                reused.push(Price(p), Qty(q));
                fresh.push(Price(p), Qty(q));
            }
            prop_assert_eq!(reused, fresh);
            prop_assert_eq!(postcard::to_allocvec(&reused).unwrap(), postcard::to_allocvec(&fresh).unwrap());
            // Assigned over any leftovers: equal to its source, same bytes.
            let mut assigned = Depth::from_levels(InstrumentId(3), Side::Sell, &[]);
            for &(p, q) in &before {
                assigned.push(Price(p), Qty(q));
            }
            assigned.assign(&fresh);
            prop_assert_eq!(assigned, fresh);
            prop_assert_eq!(postcard::to_allocvec(&assigned).unwrap(), postcard::to_allocvec(&fresh).unwrap());
        }
    }

    #[test]
    fn depth_round_trips_only_the_levels_in_use() {
        let mut d = Depth::new(InstrumentId(3), Side::Buy);
        d.push(Price(100), Qty(2));
        d.push(Price(101), Qty(5));
        d.end = SweepEnd::Collar;
        let bytes = postcard::to_stdvec(&d).expect("encode");
        assert!(bytes.len() < 16, "{} bytes", bytes.len());
        let back: Depth = postcard::from_bytes(&bytes).expect("decode");
        assert_eq!(back, d);
        assert_eq!(back.total(), Qty(7));
        let mut full = Depth::new(InstrumentId(0), Side::Sell);
        while full.push(Price(1), Qty(1)) {}
        assert!(full.is_full());
        assert_eq!(
            postcard::from_bytes::<Depth>(&postcard::to_stdvec(&full).expect("encode")).expect("decode"),
            full
        );
    }

    #[test]
    fn day_clock_rolls_at_the_configured_time() {
        let hour = 3_600 * crate::time::UnixNanos::NANOS_PER_SEC;
        let c = DayClock {
            offset_ns: 0,
            roll_ns: 8 * hour,
        };
        let midnight = 20_000 * DayClock::DAY_NS;
        assert_eq!(c.day_24x7(midnight + 8 * hour - 1), c.day_24x7(midnight));
        assert_eq!(c.day_24x7(midnight + 8 * hour), c.day_24x7(midnight) + 1);
        assert_eq!(
            DayClock::default().day_24x7(midnight - 1) + 1,
            DayClock::default().day_24x7(midnight)
        );
    }
}
