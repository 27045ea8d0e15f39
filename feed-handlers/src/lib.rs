//! StocksBlitz feed handlers: turn a venue's stream into normalized [`Tick`]s on the
//! feed's own pinned thread and push them into its SPSC input ring.
//!
//! Sources: the venue protocols ([`binance`], [`coinbase`], [`kite`]) over live
//! WebSockets ([`live`]), recorded captures ([`replay`]), the in-process
//! [`synthetic`] market, and the fault-injecting feed simulator ([`sim`]).
//!
//! [`Tick`]: stocksblitz_engine::Tick
#![cfg_attr(not(test), forbid(unsafe_code))]

pub mod backoff;
pub mod binance;
pub mod capture;
pub mod coinbase;
pub mod config;
pub mod inspect;
pub mod json_expect;
pub mod json_scan;
pub mod kite;
pub mod live;
#[cfg(test)]
mod mutation_testing;
pub mod normalize;
pub mod replay;
pub mod replay_feed;
pub mod rfc3339;
pub mod rng;
pub mod runner;
pub mod secrets;
pub mod sim;
pub mod stats;
pub mod symbols;
pub mod synthetic;
pub mod venue;

pub use config::{FeedConfig, FeedKind, SyntheticConfig};
pub use runner::{spawn_synthetic, FeedHandle};
pub use stats::{FeedState, FeedStats};
pub use synthetic::{SimSpec, SyntheticMarket, TickBuf};
