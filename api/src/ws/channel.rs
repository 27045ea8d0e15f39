//! Channel names: `quotes.SYM`, `book.SYM`, `trades.SYM`, `bars.SYM`.

use stocksblitz_engine::{InstrumentId, InstrumentRegistry};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ChannelKind {
    /// Best bid/offer + last trade; conflated to the latest value.
    Quotes,
    /// Top-N depth; conflated to the latest book.
    Book,
    /// Every trade, queued (bounded).
    Trades,
    /// 1s and 1m bars, queued (bounded).
    Bars,
}

impl ChannelKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            ChannelKind::Quotes => "quotes",
            ChannelKind::Book => "book",
            ChannelKind::Trades => "trades",
            ChannelKind::Bars => "bars",
        }
    }

    /// Conflated channels deliver only the latest state to a slow reader.
    pub const fn is_conflated(self) -> bool {
        matches!(self, ChannelKind::Quotes | ChannelKind::Book)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelKey {
    pub kind: ChannelKind,
    pub instrument: InstrumentId,
}

/// Why a channel name was refused; `code` is the stable error code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelError {
    pub code: &'static str,
    pub message: String,
}

impl ChannelKey {
    pub fn parse(name: &str, registry: &InstrumentRegistry) -> Result<Self, ChannelError> {
        let Some((kind, symbol)) = name.split_once('.') else {
            return Err(ChannelError {
                code: "UNKNOWN_CHANNEL",
                message: format!("{name:?} is not a channel: use quotes.SYM, book.SYM, trades.SYM or bars.SYM"),
            });
        };
        let kind = match kind {
            "quotes" => ChannelKind::Quotes,
            "book" => ChannelKind::Book,
            "trades" => ChannelKind::Trades,
            "bars" => ChannelKind::Bars,
            _ => {
                return Err(ChannelError {
                    code: "UNKNOWN_CHANNEL",
                    message: format!("{kind:?} is not a channel type: use quotes, book, trades or bars"),
                })
            }
        };
        let Some(inst) = registry.by_symbol(symbol) else {
            return Err(ChannelError {
                code: "UNKNOWN_SYMBOL",
                message: format!("{symbol:?} is not a known symbol: see GET /api/v1/instruments"),
            });
        };
        Ok(Self {
            kind,
            instrument: inst.id,
        })
    }

    pub fn name(&self, registry: &InstrumentRegistry) -> String {
        let sym = registry.get(self.instrument).map(|i| i.symbol.as_str()).unwrap_or("?");
        format!("{}.{}", self.kind.as_str(), sym)
    }
}
