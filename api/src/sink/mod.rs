//! The QuestDB sink (SPEC section 5): trades, quotes, bars, order events and fills into
//! a time-series store over ILP, off the hot path, losing nothing when the store is
//! slow or down.
//!
//! - [`row`]: what a stored row is; [`ilp`]: rows into ILP lines (tables, columns);
//! - [`ddl`]: table creation with DEDUP keys, and the start-up reachability check;
//! - [`spill`]: spill files; [`thread`]: the sink thread; [`stats`]: its counters.

pub mod ddl;
pub mod ilp;
pub mod row;
pub mod spill;
pub mod stats;
pub mod thread;

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::Context;
use stocksblitz_engine::journal::{JournalStats, JournalTailer};
use stocksblitz_engine::ring::RingConsumer;
use stocksblitz_engine::{EngineEvent, InstrumentRegistry};

pub use stats::SinkStats;
pub use thread::{OrderFeed, QuestDbSink};

use crate::config::questdb::{IlpAuth, QuestDbSetup};

/// The password or token the configuration names, from the environment.
fn secret(setup: &QuestDbSetup) -> anyhow::Result<Option<String>> {
    let var = match &setup.auth {
        IlpAuth::None => return Ok(None),
        IlpAuth::Basic { password_env, .. } => password_env,
        IlpAuth::Token { token_env } => token_env,
    };
    crate::foundation::secrets::from_env(var)
        .map(Some)
        .map_err(|e| anyhow::anyhow!("[questdb] credentials: {e}"))
}

/// Checks the server, creates the tables when asked, and starts the sink's threads.
/// `journal`: the order journal's directory and counters, when order events are
/// exported. `market`: the engine's ring to the sink (its recorder output).
pub fn start(
    setup: &QuestDbSetup,
    registry: &InstrumentRegistry,
    accounts: &[String],
    market: RingConsumer<EngineEvent>,
    journal: Option<(&Path, Arc<JournalStats>)>,
    stats: Arc<SinkStats>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<stocksblitz_engine::agent::ThreadHandle> {
    let secret = secret(setup)?;
    ddl::check_reachable(setup, secret.as_deref())
        .map_err(|e| anyhow::anyhow!("[questdb] is configured but unreachable at start-up: {e}"))?;
    if setup.create_tables {
        ddl::create_tables(setup, secret.as_deref()).map_err(|e| anyhow::anyhow!("[questdb] create_tables: {e}"))?;
    }
    let orders = match journal.filter(|_| setup.orders) {
        Some((dir, stats)) => {
            let saved = thread::saved_position(&setup.spill_dir);
            let tailer = match JournalTailer::after(dir, saved) {
                Ok(t) => t,
                Err(e) => {
                    // Safe to start over: the tables' DEDUP keys absorb the re-sent rows.
                    tracing::warn!(error = %e, "questdb sink: saved journal position unusable; exporting order events from the start");
                    JournalTailer::after(dir, None).context("reading the order journal for the questdb sink")?
                }
            };
            Some(OrderFeed::new(tailer, stats))
        }
        None => None,
    };
    let sink = QuestDbSink::new(
        setup.clone(),
        secret,
        ilp::Names::new(registry, accounts),
        Some(market),
        orders,
        stats,
    )
    .with_context(|| format!("opening the questdb spill directory {}", setup.spill_dir.display()))?;
    sink.spawn(stop).context("starting the questdb sink threads")
}
