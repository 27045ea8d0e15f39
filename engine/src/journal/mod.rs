//! The order journal: durability for everything the order path does (SPEC section 5).
//!
//! The engine hands each order-manager step (a command, or a quote, trade or timer
//! tick that changed something) and its events to the journal thread over an SPSC
//! ring. The thread appends them as checksummed, hash-chained records to segment
//! files, commits in groups under the fsync policy, and only then forwards the events
//! to the API, which acknowledges orders from them. Start-up replays the journal
//! through the same manager code to rebuild orders, books, positions and risk usage.
//!
//! - [`format`]: bytes on disk; [`record`]: what a record holds;
//! - [`reader`]: scanning, verification and the torn-tail rule;
//! - [`writer`]: appends, group commit, fsync policy, rotation;
//! - [`thread`]: the journal thread; [`recovery`]: snapshot + replay at start-up;
//! - [`snapshot`]: snapshot files; [`snapshotter`]: the thread that writes them from a
//!   shadow copy that follows the journal; [`retention`]: segments no kept snapshot
//!   needs, archived or deleted by that thread.

pub mod error;
pub mod format;
pub mod reader;
pub mod record;
pub mod recovery;
pub mod retention;
pub mod snapshot;
pub mod snapshotter;
pub mod stats;
pub mod tailer;
pub mod thread;
pub mod writer;

use std::path::Path;

pub use error::JournalError;
pub use format::GENESIS;
pub use reader::{scan, Tail, TornTail};
pub use record::{Record, RecordRef, RunStart, FORMAT_VERSION};
pub use recovery::{recover, Recovered};
pub use retention::{Retention, RetentionAction};
pub use snapshotter::Snapshotter;
pub use stats::JournalStats;
pub use tailer::JournalTailer;
pub use thread::JournalThread;
pub use writer::{FsyncPolicy, JournalWriter};

use crate::orders::store::OrderStore;
use crate::orders::OrderManager;

/// Recovers `manager` and `store` from the journal in `dir` (an empty journal if there
/// is none), starts the run (configured limits apply where the configuration changed
/// since the last run, see [`OrderManager::start_run`]; they are in
/// [`Recovered::reconfigured`]), then opens the journal for appending and records the
/// start of the run. The instruments `manager` owns when called
/// ([`OrderManager::set_owned`], `cluster.instruments`) are this run's: recorded
/// ([`Record::Owned`]) when they differ from the journal's.
pub fn open(
    dir: &Path,
    policy: FsyncPolicy,
    segment_bytes: u64,
    manager: &mut OrderManager,
    store: &mut OrderStore,
    run: &RunStart,
) -> Result<(JournalWriter, Recovered), JournalError> {
    let owned = manager.owned();
    let mut recovered = recover(dir, manager, store)?;
    let mut writer = JournalWriter::open(dir, &recovered.tail, policy, segment_bytes)?;
    recovered.reconfigured = manager.start_run(&run.limits);
    writer.append(&RecordRef::Start(run))?;
    if manager.owned() != owned {
        writer.append(&RecordRef::Owned(owned.as_deref()))?;
        manager.set_owned(owned.as_deref());
    }
    writer.commit()?;
    writer.sync()?;
    Ok((writer, recovered))
}
