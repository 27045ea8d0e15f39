//! Order entry through API nodes over Redis Streams (SPEC sections 5-7; `[cluster]`).
//!
//! Redis is the distributed engine here, not something home-made: an API node
//! (`serve --role api`) forwards each order command to the engine node on the engine's
//! command stream, read by the engine through a consumer group; the engine publishes
//! its journaled order output (steps and events, in journal order) and each answer on
//! its output stream, which every API node reads to keep a replica of the order read
//! model and to feed its private WebSocket channels.
//!
//! The single node's guarantees hold through a node:
//! - nothing is acknowledged before the engine's journal has it: an answer is
//!   published only after the engine node's own request completed, and that happens
//!   once the journal made the step durable; on the output stream an answer comes
//!   after the output it caused, so an API node's read model has the order before the
//!   client hears of it (read your writes);
//! - at most once: every forwarded command carries an idempotency tag (the client's
//!   `Idempotency-Key`, or one made of the node's run and request id) that the engine
//!   journals; a command seen again (redelivered from the consumer group's pending
//!   list after an engine restart, or retried) is answered from the journaled answer,
//!   never applied twice; one that arrives after its deadline (the API node already
//!   answered ORDER_STATUS_UNKNOWN) is not applied at all;
//! - gapless or closed: an API node tracks the event sequence; a gap (trimmed or lost
//!   stream, Redis restarted, engine restarted past it) closes its private WebSocket
//!   channels with 4008 and resynchronizes the replica from a snapshot the engine
//!   writes on request; while it does, its order routes answer 503
//!   ORDERS_NOT_SYNCED.
//!
//! - [`wire`]: the messages and the stream reply format;
//! - [`engine_link`]: the engine node's side (commands in, output and answers out);
//! - [`api_link`]: the API node's side (commands out, replica in);
//! - [`stats`]: counters for `/metrics` and `/health`.

pub mod api_link;
pub mod engine_link;
pub mod stats;
pub mod wire;

pub use stats::ClusterStats;

/// The engine's command stream.
pub fn command_stream(engine: &str) -> String {
    format!("sbz:orders:{engine}:in")
}

/// The engine's output stream.
pub fn output_stream(engine: &str) -> String {
    format!("sbz:orders:{engine}:out")
}

/// The consumer group the engine reads its command stream through.
pub const GROUP: &str = "engine";

/// How long a requested snapshot stays in Redis.
pub const SNAPSHOT_TTL_MS: u64 = 120_000;

/// A snapshot's key.
pub fn snapshot_key(engine: &str, node: &str, request: u64) -> String {
    format!("sbz:orders:{engine}:snapshot:{node}:{request}")
}

/// A random number for this process's run (command tags must never repeat across
/// restarts of a node).
pub fn run_id() -> u64 {
    let mut b = [0u8; 8];
    if getrandom::fill(&mut b).is_err() {
        // No entropy source: the clock still differs between runs.
        return stocksblitz_engine::UnixNanos::now().0 as u64;
    }
    u64::from_le_bytes(b)
}

/// How long one blocking stream read waits for entries (the readers check their stop
/// flag between reads).
pub const BLOCK: std::time::Duration = std::time::Duration::from_millis(500);

/// Entries one stream read takes at most.
const READ_COUNT: u64 = 256;

/// `cmd` (`XREAD`, or `XREADGROUP GROUP g c`) completed as a blocking read of
/// `stream` after `from`.
pub fn blocking_read(mut cmd: redis::Cmd, stream: &str, from: &str) -> redis::Cmd {
    cmd.arg("COUNT")
        .arg(READ_COUNT)
        .arg("BLOCK")
        .arg(BLOCK.as_millis() as u64)
        .arg("STREAMS")
        .arg(stream)
        .arg(from);
    cmd
}

/// A dedicated connection for blocking reads (`XREAD ... BLOCK` would hold up every
/// other command on a shared multiplexed connection), answering within [`BLOCK`] plus
/// the configured timeout.
pub async fn blocking_connection(
    store: &crate::redis_store::RedisStore,
) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
    let timeout = std::time::Duration::from_millis(store.setup.timeout_ms);
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(BLOCK + timeout));
    store
        .client()
        .get_multiplexed_async_connection_with_config(&config)
        .await
}
