//! OHLCV bars (1 s and 1 m) built from trades.
//!
//! A bar covers `[start, start + interval)` of event time (exchange time when the venue
//! sends it, else receive time). It closes when the wall clock passes its end plus a
//! short grace, so a tick that is a little late still lands in its bar; one that arrives
//! after the close but belongs to the last closed bar revises it (consumers get a
//! `Revised` bar and replace theirs). Anything older is counted as late and dropped.

use crate::fixed::{Price, Qty};
use crate::time::UnixNanos;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[repr(u8)]
pub enum BarInterval {
    OneSecond = 0,
    OneMinute = 1,
}

impl BarInterval {
    pub const ALL: [BarInterval; 2] = [BarInterval::OneSecond, BarInterval::OneMinute];

    pub const fn nanos(self) -> i64 {
        match self {
            BarInterval::OneSecond => UnixNanos::NANOS_PER_SEC,
            BarInterval::OneMinute => 60 * UnixNanos::NANOS_PER_SEC,
        }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            BarInterval::OneSecond => "1s",
            BarInterval::OneMinute => "1m",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "1s" => Some(BarInterval::OneSecond),
            "1m" => Some(BarInterval::OneMinute),
            _ => None,
        }
    }

    pub const fn index(self) -> usize {
        self as usize
    }
}

/// Where a bar is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[repr(u8)]
pub enum BarState {
    /// Still forming: a progress update.
    Open = 0,
    /// Final unless a late trade revises it.
    Closed = 1,
    /// A closed bar changed by a late trade: replaces the earlier `Closed` one.
    Revised = 2,
}

impl BarState {
    pub const fn as_str(self) -> &'static str {
        match self {
            BarState::Open => "open",
            BarState::Closed => "closed",
            BarState::Revised => "revised",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Bar {
    pub interval: BarInterval,
    pub start: UnixNanos,
    pub open: Price,
    pub high: Price,
    pub low: Price,
    pub close: Price,
    pub volume: Qty,
    pub trades: u32,
}

impl Bar {
    fn new(interval: BarInterval, start: UnixNanos, price: Price, qty: Qty) -> Self {
        Self {
            interval,
            start,
            open: price,
            high: price,
            low: price,
            close: price,
            volume: qty,
            trades: 1,
        }
    }

    fn add(&mut self, price: Price, qty: Qty) {
        self.high = self.high.max(price);
        self.low = self.low.min(price);
        self.close = price;
        self.volume = Qty(self.volume.0.saturating_add(qty.0));
        self.trades = self.trades.saturating_add(1);
    }

    #[inline]
    pub const fn end(&self) -> UnixNanos {
        UnixNanos(self.start.0.saturating_add(self.interval.nanos()))
    }

    #[inline]
    fn contains(&self, t: UnixNanos) -> bool {
        t >= self.start && t < self.end()
    }
}

/// What a trade or the timer did to the bars.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BarEvent {
    None,
    /// The forming bar was closed (by time, or by a trade in a later window).
    Closed(Bar),
    /// The last closed bar was revised by a late trade.
    Revised(Bar),
    /// A trade too old for any bar still revisable: dropped.
    Late,
}

/// Builds one interval's bars for one instrument.
#[derive(Debug, Clone)]
pub struct BarBuilder {
    interval: BarInterval,
    grace_ns: i64,
    current: Option<Bar>,
    last_closed: Option<Bar>,
    /// The forming bar changed since the last progress update.
    dirty: bool,
}

impl BarBuilder {
    pub fn new(interval: BarInterval, grace_ns: i64) -> Self {
        Self {
            interval,
            grace_ns,
            current: None,
            last_closed: None,
            dirty: false,
        }
    }

    pub fn current(&self) -> Option<Bar> {
        self.current
    }

    pub fn last_closed(&self) -> Option<Bar> {
        self.last_closed
    }

    pub fn on_trade(&mut self, t: UnixNanos, price: Price, qty: Qty) -> BarEvent {
        let start = t.floor_to(self.interval.nanos());
        match self.current {
            Some(ref mut c) if c.contains(t) => {
                c.add(price, qty);
                self.dirty = true;
                BarEvent::None
            }
            Some(c) if t >= c.end() => {
                self.last_closed = Some(c);
                self.current = Some(Bar::new(self.interval, start, price, qty));
                self.dirty = true;
                BarEvent::Closed(c)
            }
            _ => match self.last_closed {
                Some(ref mut l) if l.contains(t) => {
                    l.add(price, qty);
                    BarEvent::Revised(*l)
                }
                Some(l) if t < l.end() => BarEvent::Late,
                _ if self.current.is_some() => BarEvent::Late,
                _ => {
                    self.current = Some(Bar::new(self.interval, start, price, qty));
                    self.dirty = true;
                    BarEvent::None
                }
            },
        }
    }

    /// Closes the forming bar once `now` is past its end plus the grace.
    pub fn on_timer(&mut self, now: UnixNanos) -> BarEvent {
        match self.current {
            Some(c) if now.0 >= c.end().0.saturating_add(self.grace_ns) => {
                self.current = None;
                self.last_closed = Some(c);
                self.dirty = false;
                BarEvent::Closed(c)
            }
            _ => BarEvent::None,
        }
    }

    /// The forming bar, if it changed since the last call.
    pub fn take_progress(&mut self) -> Option<Bar> {
        if std::mem::take(&mut self.dirty) {
            self.current
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = UnixNanos::NANOS_PER_SEC;

    #[test]
    fn builds_ohlcv_and_closes_after_grace() {
        let mut b = BarBuilder::new(BarInterval::OneSecond, S / 4);
        assert_eq!(b.on_trade(UnixNanos(10 * S), Price(100), Qty(1)), BarEvent::None);
        assert_eq!(b.on_trade(UnixNanos(10 * S + 1), Price(105), Qty(2)), BarEvent::None);
        assert_eq!(b.on_trade(UnixNanos(10 * S + 2), Price(95), Qty(3)), BarEvent::None);
        assert_eq!(b.on_trade(UnixNanos(11 * S - 1), Price(101), Qty(4)), BarEvent::None);
        assert!(b.take_progress().is_some());
        assert!(b.take_progress().is_none());
        assert_eq!(b.on_timer(UnixNanos(11 * S + S / 4 - 1)), BarEvent::None);
        let BarEvent::Closed(bar) = b.on_timer(UnixNanos(11 * S + S / 4)) else {
            panic!("bar should close after the grace");
        };
        assert_eq!(
            (bar.start, bar.open, bar.high, bar.low, bar.close, bar.volume, bar.trades),
            (
                UnixNanos(10 * S),
                Price(100),
                Price(105),
                Price(95),
                Price(101),
                Qty(10),
                4
            )
        );
    }

    #[test]
    fn trade_in_next_window_closes_and_late_trade_revises() {
        let mut b = BarBuilder::new(BarInterval::OneSecond, S / 4);
        b.on_trade(UnixNanos(10 * S), Price(100), Qty(1));
        let BarEvent::Closed(first) = b.on_trade(UnixNanos(11 * S), Price(110), Qty(1)) else {
            panic!("next-window trade closes the bar");
        };
        assert_eq!(first.close, Price(100));
        let BarEvent::Revised(rev) = b.on_trade(UnixNanos(10 * S + 5), Price(90), Qty(2)) else {
            panic!("a late trade for the last closed bar revises it");
        };
        assert_eq!(
            (rev.low, rev.volume, rev.trades, rev.close),
            (Price(90), Qty(3), 2, Price(90))
        );
        assert_eq!(b.on_trade(UnixNanos(9 * S), Price(90), Qty(1)), BarEvent::Late);
        assert_eq!(b.current().map(|c| c.start), Some(UnixNanos(11 * S)));
    }

    #[test]
    fn after_timer_close_a_late_trade_still_revises() {
        let mut b = BarBuilder::new(BarInterval::OneMinute, S);
        b.on_trade(UnixNanos(60 * S), Price(1), Qty(1));
        assert!(matches!(b.on_timer(UnixNanos(121 * S)), BarEvent::Closed(_)));
        assert!(matches!(
            b.on_trade(UnixNanos(119 * S), Price(2), Qty(1)),
            BarEvent::Revised(_)
        ));
        assert_eq!(b.on_trade(UnixNanos(59 * S), Price(2), Qty(1)), BarEvent::Late);
        assert_eq!(b.on_trade(UnixNanos(125 * S), Price(3), Qty(1)), BarEvent::None);
    }
}
