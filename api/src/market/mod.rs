//! The API side of the market: a mirror of engine state and the thread that feeds it.

pub mod fanout;
pub mod mirror;

pub use fanout::{spawn_fanout, FanoutStats, Market};
pub use mirror::{Change, InstrumentView, Mirror, QuoteView, TradeView};
