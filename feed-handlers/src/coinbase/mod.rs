//! Coinbase Exchange WebSocket feed.

pub mod audit;
pub mod normalizer;
pub mod parse;

pub use parse::{for_each_change, parse_frame, ParseError, CoinbaseEvent, Match, Ticker};
