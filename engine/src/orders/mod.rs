//! The order path, run inside the engine thread: order entry (shape validation in
//! `validate`, then pre-trade risk in [`risk`]), execution on the internal CLOB or the
//! paper venue, positions. See SPEC section 4.
//!
//! The API hands [`Command`]s in through a bounded lock-free queue; the
//! [`OrderManager`] answers with [`OrderEvent`]s that the engine publishes on a
//! dedicated output ring that never drops (the engine takes a command only when the
//! worst case of its events fits).

pub mod client_ids;
pub mod command;
pub mod context;
pub mod digest;
pub mod event;
pub mod execution;
pub mod gateway;
pub mod image;
pub mod manager;
pub mod pool;
pub mod position;
pub mod queue_book;
pub mod reject;
pub mod risk;
pub mod shard;
pub mod step;
pub mod store;
pub mod types;
mod validate;
pub mod value;

pub use command::{Command, CommandKind, IdemTag, KillScope, NewOrder};
pub use context::{DayClock, Depth, Mtm, StepContext, SweepEnd, SWEEP_LEVELS};
pub use event::{CancelReason, Fill, Liquidity, OrderEvent, OrderEventData, OrderEventKind};
pub use manager::{InstrumentRules, MarketRef, OrderCapacity, OrderManager};
pub use position::Position;
pub use reject::Reject;
pub use risk::{AccountRisk, RiskLimits, RiskLimitsConfig, SelfTradeMode, TradingState, VALUE_SCALE};
pub use shard::{fill_id, shard_of_fill, shard_of_order, ShardMismatch};
pub use step::{Input, Step, StepAssembler};
pub use types::{AccountId, ClientOrderId, Order, OrderId, OrderStatus, OrderType, Placement, TimeInForce, VenueKind};
