//! The instruments the tests' and benches' registries are made of: a crypto spot pair
//! (2 price and 3 quantity decimals, tick 0.01, lot 0.001, around the clock) and NSE's
//! INFY (an equity in the Indian session), the two shapes every hand-built registry
//! used. Vary a field with struct update syntax
//! (`InstrumentConfig { qty_decimals: 5, ..crypto_spot("BTCUSDT", "binance") }`) and
//! build with `InstrumentRegistry::from_config`.

use stocksblitz_engine::instrument::InstrumentKind;
use stocksblitz_engine::InstrumentConfig;

/// A crypto spot pair quoted in USDT on `venue`, its venue symbol the lower-cased symbol.
pub fn crypto_spot(symbol: &str, venue: &str) -> InstrumentConfig {
    InstrumentConfig {
        symbol: symbol.into(),
        venue: venue.into(),
        venue_symbol: symbol.to_lowercase(),
        kind: InstrumentKind::CryptoSpot,
        currency: "USDT".into(),
        price_decimals: 2,
        qty_decimals: 3,
        tick_size: "0.01".into(),
        lot_size: "0.001".into(),
        session: "24x7".into(),
    }
}

/// NSE's INFY: an equity in rupees, tick 0.05, lot 5, traded 09:15-15:30 IST on weekdays.
pub fn infy() -> InstrumentConfig {
    InstrumentConfig {
        symbol: "INFY".into(),
        venue: "nse".into(),
        venue_symbol: "408065".into(),
        kind: InstrumentKind::Equity,
        currency: "INR".into(),
        price_decimals: 2,
        qty_decimals: 0,
        tick_size: "0.05".into(),
        lot_size: "5".into(),
        session: "Asia/Kolkata 09:15-15:30 mon-fri".into(),
    }
}

#[cfg(test)]
mod tests {
    use stocksblitz_engine::InstrumentRegistry;

    #[test]
    fn both_shapes_make_a_valid_registry() {
        let list = [
            super::crypto_spot("BTCUSDT", "binance"),
            super::crypto_spot("INT", "internal"),
            super::infy(),
        ];
        let r = InstrumentRegistry::from_config(&list).unwrap();
        assert_eq!(r.len(), 3);
    }
}
