//! StocksBlitz engine: the domain model and the hot loop.
//!
//! No async runtime and no I/O here: feed handlers (their own crate) push [`Tick`]s
//! into SPSC rings, the [`Engine`] thread owns all market state and publishes
//! [`EngineEvent`]s to bounded output rings that the API and sinks drain. See
//! `ARCHITECTURE.md` at the repository root for the map.
#![cfg_attr(not(test), forbid(unsafe_code))]

pub mod affinity;
pub mod agent;
pub mod anomaly;
pub mod bars;
pub mod book;
pub mod config;
pub mod counter;
pub mod doorbell;
pub mod engine;
pub mod event;
pub mod fixed;
pub mod idle;
pub mod ids;
pub mod instrument;
pub mod instrument_state;
pub mod journal;
pub mod orders;
pub mod publisher;
pub mod quality;
pub mod ring;
pub mod session;
pub mod side;
pub mod stack_vec;
pub mod stats;
pub mod surveillance;
pub mod tick;
pub mod tick_ring;
pub mod time;

pub use bars::{Bar, BarInterval, BarState};
pub use book::{L2Book, Level};
pub use config::EngineConfig;
pub use engine::{Engine, EngineHandles};
pub use event::{EngineEvent, EventData};
pub use fixed::{Decimal, FixedError, Price, Qty};
pub use ids::InstrumentId;
pub use instrument::{Instrument, InstrumentConfig, InstrumentRegistry};
pub use quality::DataQuality;
pub use side::{Aggressor, Side};
pub use tick::{BookFlags, FeedStatus, Tick, TickData};
pub use time::UnixNanos;
