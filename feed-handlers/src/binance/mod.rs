//! Binance spot: WebSocket streams and the REST depth snapshot.

pub mod depth_sync;
pub mod normalizer;
pub mod parse;

pub use parse::{parse_frame, parse_snapshot, ParseError, BinanceEvent, DepthSnapshot, DepthUpdate, TradeEvent};
