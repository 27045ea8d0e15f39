//! Sides of a book and of a trade.

/// A book side or an order side: `Buy` is the bid, `Sell` the ask.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[repr(u8)]
pub enum Side {
    Buy = 0,
    Sell = 1,
}

impl Side {
    pub const fn as_str(self) -> &'static str {
        match self {
            Side::Buy => "buy",
            Side::Sell => "sell",
        }
    }

    pub const fn opposite(self) -> Self {
        match self {
            Side::Buy => Side::Sell,
            Side::Sell => Side::Buy,
        }
    }
}

/// Which side initiated a trade. Some venues do not say (Kite LTP): `Unknown`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[repr(u8)]
pub enum Aggressor {
    Buy = 0,
    Sell = 1,
    Unknown = 2,
}

impl Aggressor {
    pub const fn as_str(self) -> &'static str {
        match self {
            Aggressor::Buy => "buy",
            Aggressor::Sell => "sell",
            Aggressor::Unknown => "unknown",
        }
    }
}
