//! What the order service needs from wherever commands go (the engine in this process,
//! or engine nodes over Redis Streams: `crate::cluster::api_link`), and why a command
//! got no answer. A module of its own, below both the service and the routing between
//! engines, so neither imports the other.

use stocksblitz_engine::orders::{Command, OrderEvent};
use stocksblitz_engine::{InstrumentId, UnixNanos};

/// Why a command got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubmitError {
    /// The command queue is full: nothing was sent.
    Busy,
    /// No answer in time: the outcome is unknown.
    Timeout { request: u64 },
    /// The order journal has failed: intake is stopped, nothing was sent.
    JournalDown,
    /// (API node) Redis, which carries commands to the engine, is unreachable: nothing
    /// was sent.
    Unreachable,
    /// (API node) the engine saw this idempotency key with another body.
    KeyReused,
    /// (API node) the order replica is resynchronizing with the engine.
    NotSynced,
    /// (API node) no engine of the cluster takes orders for the instrument.
    NotRouted,
}

/// What a waiting request gets.
pub type Answer = Result<Vec<OrderEvent>, SubmitError>;

/// The engine node as an API node sees it (implemented over Redis Streams by
/// `crate::cluster::api_link`).
pub trait Forward: Send + Sync {
    /// Whether this node's order replica is in step with the engine.
    fn synced(&self) -> bool;
    /// Refuses up front what cannot be sent.
    fn ready(&self) -> Result<(), SubmitError>;
    /// The command with the tag the engine applies it under at most once.
    fn tagged(&self, cmd: Command) -> Command;
    /// Sends it. `Err(None)`: it may have been sent (the outcome is unknown);
    /// `Err(Some(_))`: it was not.
    fn send(&self, cmd: Command, deadline: UnixNanos) -> BoxFuture<'_, Result<(), Option<SubmitError>>>;
    /// The engine node's name (`cluster.engines`).
    fn name(&self) -> &str;
    /// Whether this engine takes orders for `instrument` (`None`: not known yet, the
    /// engine has not been heard from).
    fn owns(&self, instrument: InstrumentId) -> Option<bool>;
    /// The top 8 bits of this engine's order ids (`None`: not known yet).
    fn shard(&self) -> Option<u8>;
}

/// A boxed future (the forwarder is a trait object).
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;
