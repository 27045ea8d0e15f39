//! The instrument registry: every tradable thing, loaded from config at start-up.
//!
//! Each instrument gets a dense [`InstrumentId`] (its index), so the hot path indexes
//! arrays instead of hashing symbols. The registry is immutable after start-up and
//! shared read-only by every thread.

use std::collections::HashMap;

use serde::Deserialize;

use crate::fixed::{Price, Qty, MAX_SCALE};
use crate::ids::InstrumentId;
use crate::session::{SessionError, TradingSession};

/// What kind of thing trades.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InstrumentKind {
    Equity,
    CryptoSpot,
    Index,
}

impl InstrumentKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            InstrumentKind::Equity => "equity",
            InstrumentKind::CryptoSpot => "crypto_spot",
            InstrumentKind::Index => "index",
        }
    }
}

/// One `[[instruments]]` entry as written in config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstrumentConfig {
    /// Our symbol, unique, used in the API and channel names (`quotes.BTCUSDT`).
    pub symbol: String,
    /// Where it trades: `binance`, `coinbase`, `nse`, `synthetic`, ...
    pub venue: String,
    /// The venue's own name for it (`btcusdt`, `BTC-USD`, a Kite instrument token).
    pub venue_symbol: String,
    pub kind: InstrumentKind,
    /// ISO 4217 or asset code of the price currency (`INR`, `USDT`, `USD`).
    pub currency: String,
    /// Decimal places of prices (the fixed-point scale).
    pub price_decimals: u8,
    /// Decimal places of quantities.
    pub qty_decimals: u8,
    /// Minimum price increment, as a decimal string (`"0.05"`).
    pub tick_size: String,
    /// Minimum quantity increment, as a decimal string (`"1"`, `"0.00001"`).
    pub lot_size: String,
    /// `"24x7"` or `"<IANA tz> HH:MM-HH:MM [days]"`.
    pub session: String,
}

/// A validated instrument.
#[derive(Debug, Clone)]
pub struct Instrument {
    pub id: InstrumentId,
    pub symbol: String,
    pub venue: String,
    pub venue_symbol: String,
    pub kind: InstrumentKind,
    pub currency: String,
    pub price_scale: u8,
    pub qty_scale: u8,
    pub tick_size: Price,
    pub lot_size: Qty,
    pub session: TradingSession,
}

/// Why the instrument list was rejected: `key` names the config key to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct RegistryError {
    pub key: String,
    pub message: String,
}

/// All instruments, by dense id and by symbol.
#[derive(Debug, Clone, Default)]
pub struct InstrumentRegistry {
    instruments: Vec<Instrument>,
    by_symbol: HashMap<String, InstrumentId>,
}

fn invalid(key: String, message: impl Into<String>) -> RegistryError {
    RegistryError {
        key,
        message: message.into(),
    }
}

fn is_symbol_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '/')
}

impl Instrument {
    fn from_config(id: InstrumentId, i: usize, c: &InstrumentConfig) -> Result<Self, RegistryError> {
        let key = |field: &str| format!("instruments[{i}].{field}");
        if c.symbol.is_empty() || c.symbol.len() > 32 || !c.symbol.chars().all(is_symbol_char) {
            return Err(invalid(
                key("symbol"),
                format!(
                    "{:?} must be 1-32 characters of A-Z, a-z, 0-9, '-', '_' or '/'",
                    c.symbol
                ),
            ));
        }
        for (field, value) in [
            ("venue", &c.venue),
            ("venue_symbol", &c.venue_symbol),
            ("currency", &c.currency),
        ] {
            if value.trim().is_empty() {
                return Err(invalid(key(field), "must not be empty"));
            }
        }
        for (field, value) in [("price_decimals", c.price_decimals), ("qty_decimals", c.qty_decimals)] {
            if value > MAX_SCALE {
                return Err(invalid(
                    key(field),
                    format!("{value} is above the maximum of {MAX_SCALE}"),
                ));
            }
        }
        let tick_size = Price::parse_str(&c.tick_size, c.price_decimals)
            .map_err(|e| invalid(key("tick_size"), format!("bad decimal: {e}")))?;
        let lot_size = Qty::parse_str(&c.lot_size, c.qty_decimals)
            .map_err(|e| invalid(key("lot_size"), format!("bad decimal: {e}")))?;
        if tick_size.0 <= 0 {
            return Err(invalid(key("tick_size"), "must be greater than zero"));
        }
        if lot_size.0 <= 0 {
            return Err(invalid(key("lot_size"), "must be greater than zero"));
        }
        let session = c
            .session
            .parse()
            .map_err(|e: SessionError| invalid(key("session"), e.to_string()))?;
        Ok(Self {
            id,
            symbol: c.symbol.clone(),
            venue: c.venue.clone(),
            venue_symbol: c.venue_symbol.clone(),
            kind: c.kind,
            currency: c.currency.clone(),
            price_scale: c.price_decimals,
            qty_scale: c.qty_decimals,
            tick_size,
            lot_size,
            session,
        })
    }
}

impl InstrumentRegistry {
    /// Validates every entry and assigns ids in config order.
    pub fn from_config(configs: &[InstrumentConfig]) -> Result<Self, RegistryError> {
        if configs.is_empty() {
            return Err(invalid(
                "instruments".into(),
                "at least one [[instruments]] entry is required",
            ));
        }
        let max = u32::MAX as usize;
        if configs.len() > max {
            return Err(invalid("instruments".into(), "too many instruments"));
        }
        let mut reg = Self::default();
        for (i, c) in configs.iter().enumerate() {
            let id = InstrumentId(u32::try_from(i).map_err(|_| invalid("instruments".into(), "too many instruments"))?);
            let inst = Instrument::from_config(id, i, c)?;
            if reg.by_symbol.insert(inst.symbol.clone(), id).is_some() {
                return Err(invalid(
                    format!("instruments[{i}].symbol"),
                    format!("{:?} is defined twice: symbols must be unique", inst.symbol),
                ));
            }
            reg.instruments.push(inst);
        }
        Ok(reg)
    }

    pub fn len(&self) -> usize {
        self.instruments.len()
    }

    pub fn is_empty(&self) -> bool {
        self.instruments.is_empty()
    }

    pub fn get(&self, id: InstrumentId) -> Option<&Instrument> {
        self.instruments.get(id.index())
    }

    pub fn by_symbol(&self, symbol: &str) -> Option<&Instrument> {
        self.by_symbol.get(symbol).and_then(|&id| self.get(id))
    }

    pub fn iter(&self) -> impl Iterator<Item = &Instrument> {
        self.instruments.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(symbol: &str) -> InstrumentConfig {
        InstrumentConfig {
            symbol: symbol.into(),
            venue: "synthetic".into(),
            venue_symbol: symbol.to_lowercase(),
            kind: InstrumentKind::CryptoSpot,
            currency: "USDT".into(),
            price_decimals: 2,
            qty_decimals: 5,
            tick_size: "0.01".into(),
            lot_size: "0.00001".into(),
            session: "24x7".into(),
        }
    }

    #[test]
    fn assigns_dense_ids() {
        let reg = InstrumentRegistry::from_config(&[cfg("BTCUSDT"), cfg("ETHUSDT")]).unwrap();
        assert_eq!(reg.len(), 2);
        assert_eq!(reg.by_symbol("ETHUSDT").unwrap().id, InstrumentId(1));
        assert_eq!(reg.get(InstrumentId(0)).unwrap().tick_size, Price(1));
        assert_eq!(reg.get(InstrumentId(0)).unwrap().lot_size, Qty(1));
        assert!(reg.by_symbol("XRPUSDT").is_none());
    }

    #[test]
    fn rejects_with_the_key_to_fix() {
        let err = InstrumentRegistry::from_config(&[cfg("BTCUSDT"), cfg("BTCUSDT")]).unwrap_err();
        assert!(err.to_string().starts_with("instruments[1].symbol"), "{err}");

        let mut c = cfg("X");
        c.tick_size = "0.001".into();
        let err = InstrumentRegistry::from_config(&[c]).unwrap_err();
        assert!(err.to_string().starts_with("instruments[0].tick_size"), "{err}");

        let mut c = cfg("X");
        c.lot_size = "0".into();
        let err = InstrumentRegistry::from_config(&[c]).unwrap_err();
        assert!(err.to_string().contains("instruments[0].lot_size"), "{err}");

        let mut c = cfg("X");
        c.session = "Nowhere 09:00-10:00".into();
        let err = InstrumentRegistry::from_config(&[c]).unwrap_err();
        assert!(err.to_string().starts_with("instruments[0].session"), "{err}");

        let mut c = cfg("bad symbol");
        c.symbol = "bad symbol".into();
        assert!(InstrumentRegistry::from_config(&[c]).is_err());
        assert!(InstrumentRegistry::from_config(&[]).is_err());
    }
}
