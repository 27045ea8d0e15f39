//! Positions per account and instrument, with exact fixed-point P&L.
//!
//! Values are kept at "price scale + qty scale" (the product of two mantissas) in
//! `i128`, so average cost and realized P&L never round until they are displayed.
//! The average price is `cost / qty`; realized P&L is booked when a fill reduces the
//! position, against the proportional share of its cost.

use crate::fixed::{Price, Qty};
use crate::side::Side;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Position {
    /// Signed quantity (qty mantissa): long > 0, short < 0.
    pub qty: i64,
    /// Signed cost of the open quantity (price x qty mantissas), same sign as `qty`.
    pub cost: i128,
    /// Realized P&L (price x qty mantissas).
    pub realized: i128,
}

impl Position {
    /// Books a fill; returns the realized P&L it produced.
    pub fn apply(&mut self, side: Side, price: Price, qty: Qty) -> i128 {
        let q = match side {
            Side::Buy => qty.0,
            Side::Sell => -qty.0,
        };
        let price = i128::from(price.0);
        if self.qty == 0 || (self.qty > 0) == (q > 0) {
            self.qty += q;
            self.cost += i128::from(q) * price;
            return 0;
        }
        let open = i128::from(self.qty.unsigned_abs());
        let closing = i128::from(q.unsigned_abs()).min(open);
        let sign = if self.qty > 0 { 1 } else { -1 };
        let closed_cost = proportional_cost(self.cost, closing, open);
        let realized = sign * closing * price - closed_cost;
        self.realized += realized;
        self.cost -= closed_cost;
        self.qty -= (sign * closing) as i64;
        let rest = i128::from(q.unsigned_abs()) - closing;
        if rest > 0 {
            // The fill flipped the position: the remainder opens the other way.
            let rest_signed = if q > 0 { rest } else { -rest };
            self.qty = rest_signed as i64;
            self.cost = rest_signed * price;
        } else if self.qty == 0 {
            self.cost = 0;
        }
        realized
    }

    /// Unrealized P&L marked at `mark` (price x qty mantissas).
    pub fn unrealized(&self, mark: Price) -> i128 {
        i128::from(self.qty) * i128::from(mark.0) - self.cost
    }

    /// Average open price as a price mantissa (truncated), zero when flat.
    pub fn average_price(&self) -> Price {
        if self.qty == 0 {
            return Price(0);
        }
        Price((self.cost / i128::from(self.qty)) as i64)
    }
}

/// `cost * closing / open`, truncated toward zero, with `0 < closing <= open`.
///
/// The i128 division is a software routine (`__divti3`, ~60 instructions); when the
/// product and the divisor fit i64 (every realistic position: cost is price x qty
/// mantissas), one hardware division gives the same quotient, since both truncate
/// toward zero. `open` is positive, so the i64 division cannot overflow (`MIN / -1`
/// needs a divisor of -1). Outside i64 the exact i128 form runs.
#[inline]
fn proportional_cost(cost: i128, closing: i128, open: i128) -> i128 {
    let product = cost * closing;
    match (i64::try_from(product), i64::try_from(open)) {
        (Ok(p), Ok(o)) if o > 0 => i128::from(p / o),
        _ => product / open,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The i64 form is the i128 division, inside i64, at its edges and outside it.
        #[test]
        fn proportional_cost_is_the_i128_division(
            cost in prop_oneof![
                any::<i64>().prop_map(i128::from),
                Just(i128::from(i64::MAX)), Just(i128::from(i64::MIN)),
                -(1i128 << 100)..(1i128 << 100),
            ],
            open in prop_oneof![1i128..=1_000, 1i128..=i128::from(i64::MAX), Just(i128::from(i64::MAX)), Just(1i128 << 63)],
            frac in 0.0f64..=1.0,
        ) {
            let closing = ((open as f64 * frac) as i128).clamp(1, open);
            // The caller's product never overflows i128 (cost is price x qty, closing a qty).
            prop_assume!(cost.checked_mul(closing).is_some());
            prop_assert_eq!(proportional_cost(cost, closing, open), cost * closing / open);
        }
    }

    #[test]
    fn proportional_cost_at_the_i64_edges() {
        let max = i128::from(i64::MAX);
        let min = i128::from(i64::MIN);
        for (cost, closing, open) in [
            (max, 1, 1),
            (min, 1, 1),
            (min, 1, 2),
            (max, 3, 7),
            (min, 3, 7),
            (max + 1, 1, 1),
            (min - 1, 1, 1),
            (min, 1i128 << 63, 1i128 << 63),
            (-7, 1, 2),
            (7, 1, 2),
        ] {
            assert_eq!(
                proportional_cost(cost, closing, open),
                cost * closing / open,
                "{cost} {closing} {open}"
            );
        }
    }

    #[test]
    fn open_add_reduce_flip_close() {
        let mut p = Position::default();
        assert_eq!(p.apply(Side::Buy, Price(100), Qty(10)), 0);
        assert_eq!(p.apply(Side::Buy, Price(110), Qty(10)), 0);
        assert_eq!(p.average_price(), Price(105));
        assert_eq!(p.unrealized(Price(120)), 20 * 120 - 2100);
        assert_eq!(p.apply(Side::Sell, Price(120), Qty(5)), 5 * 15);
        assert_eq!(p.qty, 15);
        // Sell 25: closes 15 at +5 each, opens a 10 short at 110.
        assert_eq!(p.apply(Side::Sell, Price(110), Qty(25)), 15 * 5);
        assert_eq!((p.qty, p.cost), (-10, -1100));
        assert_eq!(p.unrealized(Price(100)), 100);
        assert_eq!(p.apply(Side::Buy, Price(90), Qty(10)), 200);
        assert_eq!(
            p,
            Position {
                qty: 0,
                cost: 0,
                realized: 75 + 75 + 200
            }
        );
    }
}
