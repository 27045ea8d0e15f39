//! Price x quantity amounts to base-currency value, precomputed per instrument.
//!
//! Every order's notional, reserve and mark goes through `amount * rate / 10^(price
//! scale + qty scale)`, which in i128 is a software division (`__divti3`, ~60
//! instructions) and a runtime power of ten. For the usual instrument, quoted in the
//! base currency (rate 1.0), the rate and the power of ten cancel to one constant:
//! a multiplication when the value scale holds the amount's decimals, else a division
//! by a power of ten that fits i64 (one hardware instruction while the amount fits
//! i64). Other rates keep the general formula. The result is exactly the general
//! formula's (same truncation toward zero). Quantities convert to limit units the same
//! way (rate 1.0, the qty scale), so the risk checks need no runtime power of ten.

use super::risk::VALUE_SCALE;

/// How one instrument's amounts become value at [`VALUE_SCALE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToValue {
    /// Rate 1.0 and no more decimals than the value scale: `amount * factor`.
    Mul(i128),
    /// Rate 1.0 and more decimals: `amount / divisor` (a power of ten).
    Div(i64),
    /// Any other rate: `amount * rate / divisor`.
    General { rate: i128, divisor: i128 },
}

impl ToValue {
    /// For `rate` (base currency per unit of quote currency, at [`VALUE_SCALE`]) and
    /// amounts with `decimals` decimals (price scale + qty scale).
    pub fn new(rate: i128, decimals: u8) -> Self {
        let one = pow10(VALUE_SCALE);
        match (rate == one, decimals <= VALUE_SCALE) {
            (true, true) => Self::Mul(pow10(VALUE_SCALE - decimals)),
            (true, false) => match i64::try_from(pow10(decimals - VALUE_SCALE)) {
                Ok(d) => Self::Div(d),
                Err(_) => Self::General {
                    rate,
                    divisor: pow10(decimals),
                },
            },
            (false, _) => Self::General {
                rate,
                divisor: pow10(decimals),
            },
        }
    }

    /// `amount * rate / 10^decimals`, truncated toward zero. The multiplication (the
    /// usual instrument) is inlined into every caller; the forms that may divide stay
    /// out of line (their i128 division kept the whole function from being inlined,
    /// a call per notional, reserve and mark).
    #[inline(always)]
    pub fn of(self, amount: i128) -> i128 {
        match self {
            Self::Mul(f) => amount * f,
            _ => self.of_dividing(amount),
        }
    }

    #[inline(never)]
    fn of_dividing(self, amount: i128) -> i128 {
        match self {
            Self::Mul(f) => amount * f,
            Self::Div(d) => match i64::try_from(amount) {
                Ok(a) => i128::from(a / d),
                Err(_) => amount / i128::from(d),
            },
            Self::General { rate, divisor } => amount * rate / divisor,
        }
    }
}

/// `10^n` (n at most 36: i128's range).
pub(super) fn pow10(n: u8) -> i128 {
    10i128.pow(u32::from(n.min(36)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Exactly the general formula, for the base-currency rate and any other, at
        /// every scale an instrument can have, for amounts inside and outside i64.
        #[test]
        fn the_precomputed_form_is_the_general_formula(
            decimals in 0u8..=24,
            rate in prop_oneof![Just(100_000_000i128), 1i128..10_000_000_000],
            amount in prop_oneof![-(1i128 << 62)..(1i128 << 62), -(1i128 << 90)..(1i128 << 90)],
        ) {
            let general = amount * rate / pow10(decimals);
            prop_assert_eq!(ToValue::new(rate, decimals).of(amount), general);
        }

        /// Quantities to limit units (the qty scale to [`VALUE_SCALE`], rate 1.0) are
        /// exactly the per-call power-of-ten scaling the checks used before.
        #[test]
        fn qty_scaling_is_the_power_of_ten_formula(
            scale in 0u8..=24,
            qty in prop_oneof![0i128..(1i128 << 63), -(1i128 << 63)..0],
        ) {
            let per_call = if scale <= VALUE_SCALE {
                qty * pow10(VALUE_SCALE - scale)
            } else {
                qty / pow10(scale - VALUE_SCALE)
            };
            prop_assert_eq!(ToValue::new(pow10(VALUE_SCALE), scale).of(qty), per_call);
        }
    }
}
